"""Entry point (group ``aipm_tracking``, name ``wandb``): registers the ``wandb:`` scheme.

Registration imports nothing heavy; the factory imports the backend (and wandb) on use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aipm_tracking.hookspecs import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from aipm_tracking.backends.base import BackendOptions


def _factory(options: BackendOptions) -> Any:
    from .backend import WandbBackend

    return WandbBackend(options)


@hookimpl
def aipm_register_backends(register: Callable[[str, Any], None]) -> None:
    """Register the ``wandb`` scheme."""
    register("wandb", _factory)
