"""Thin adapters from training frameworks to :class:`aipm_tracking.Tracker`.

Each adapter imports its framework only when its class is first used::

    from aipm_tracking.integrations import AipmTrainerCallback    # Hugging Face transformers
    from aipm_tracking.integrations import AipmLightningCallback  # PyTorch Lightning
    from aipm_tracking.integrations import AipmKerasCallback      # Keras 3

Every adapter takes either ``tracker=`` (a Tracker you own and finish) or the Tracker's
keyword arguments (``to=``, ``run_name=``, ``model=`` ...): then it creates the Tracker when
training starts (on the framework's rank, only rank 0 writes).

As W&B's own integrations do, the run is not finished when training ends, so an evaluation
after training (``trainer.evaluate()``, ``trainer.validate()``) logs into the same run. It is
finished when the process exits, or when you call the adapter's ``finish()``. Its status is
``failed`` when training raised (even if your code caught the exception: the adapter sees
that training started and did not end), else ``finished``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_LAZY = {
    "AipmTrainerCallback": "transformers",
    "AipmLightningCallback": "lightning",
    "AipmKerasCallback": "keras",
}

__all__ = ["AipmTrainerCallback", "AipmLightningCallback", "AipmKerasCallback"]

if TYPE_CHECKING:  # pragma: no cover
    from .keras import AipmKerasCallback
    from .lightning import AipmLightningCallback
    from .transformers import AipmTrainerCallback


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'aipm_tracking.integrations' has no attribute {name!r}")
    return getattr(import_module(f".{mod}", __name__), name)
