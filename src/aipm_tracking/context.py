"""State shared by CLI commands (global options), kept free of heavy imports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .backends.base import BackendOptions


@dataclass
class CliState:
    """Global ``aipm`` options, passed to commands as ``ctx.obj``."""

    store: str | None = None
    mlflow_uri: str | None = None
    quiet: bool = False

    def backend_options(self, metric_map: dict[str, str] | None = None) -> BackendOptions:
        from .backends.base import BackendOptions

        return BackendOptions(store=self.store, mlflow_uri=self.mlflow_uri,
                              metric_map=dict(metric_map or {}), quiet=self.quiet)
