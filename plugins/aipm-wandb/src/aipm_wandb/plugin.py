"""Entry point (group ``aipm_tracking``, name ``wandb``): registers the ``wandb:`` scheme.

Registration imports nothing heavy; the factory imports the backend (and wandb) on use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aipm_tracking.hookspecs import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from aipm_tracking.backends.base import BackendOptions


def _require_sdk() -> None:
    """A plugin installed without its SDK (``pip install --no-deps``): one clear line."""
    from importlib.util import find_spec

    from aipm_tracking.errors import UsageError

    if find_spec("wandb") is None:
        from . import SUPPORTED_WANDB

        raise UsageError("the wandb: backend needs the wandb package: "
                         f"pip install 'wandb{SUPPORTED_WANDB}'")


def _factory(options: BackendOptions) -> Any:
    _require_sdk()
    from .backend import WandbBackend

    return WandbBackend(options)


@hookimpl
def aipm_register_backends(register: Callable[[str, Any], None]) -> None:
    """Register the ``wandb`` scheme."""
    register("wandb", _factory)
