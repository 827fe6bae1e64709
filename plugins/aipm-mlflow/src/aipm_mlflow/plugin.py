"""Entry point of the plugin: registers the ``mlflow`` backend scheme.

Nothing heavy is imported here: mlflow (2-4 s to import) is loaded by the factory, only
when an ``mlflow:`` reference or destination is used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aipm_tracking import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from aipm_tracking.backends.base import Backend, BackendFactory, BackendOptions


def _require_sdk() -> None:
    """A plugin installed without its SDK (``pip install --no-deps``): one clear line."""
    from importlib.util import find_spec

    from aipm_tracking.errors import UsageError

    if find_spec("mlflow") is None:
        raise UsageError("the mlflow: backend needs the mlflow package: "
                         "pip install 'mlflow>=3.17,<4'")


def make_backend(options: BackendOptions) -> Backend:
    """Factory for the ``mlflow`` scheme (imports mlflow on first use)."""
    _require_sdk()
    from .backend import MlflowBackend

    return MlflowBackend(options)


@hookimpl
def aipm_register_backends(register: Callable[[str, BackendFactory], None]) -> None:
    """Register ``mlflow:`` (``mlflow:RUN_ID`` references, ``mlflow:EXPERIMENT`` targets)."""
    register("mlflow", make_backend)
