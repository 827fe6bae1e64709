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


def make_backend(options: BackendOptions) -> Backend:
    """Factory for the ``mlflow`` scheme (imports mlflow on first use)."""
    from .backend import MlflowBackend

    return MlflowBackend(options)


@hookimpl
def aipm_register_backends(register: Callable[[str, BackendFactory], None]) -> None:
    """Register ``mlflow:`` (``mlflow:RUN_ID`` references, ``mlflow:EXPERIMENT`` targets)."""
    register("mlflow", make_backend)
