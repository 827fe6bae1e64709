"""The metric registry: canonical names, direction, unit, kind and a one-line doc.

A metric's direction comes from here or from the guardrails file, never from its name.
Plugins add metrics through the ``aipm_register_metrics(register)`` hook; the host
(:func:`aipm_tracking.plugins.metric_registry`) owns name collisions.
Per-slice names (``accuracy[slice=de]``) resolve to their base metric.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from .errors import PluginError

Direction = Literal["higher", "lower", "info"]
#: How a metric is tested against another run (chooses the statistic):
#: ``rate`` = mean of a per-example binary outcome (exact McNemar when paired);
#: ``mean`` / ``quantile`` / ``calibration`` / ``curve`` = paired bootstrap;
#: ``count`` and ``logged`` = point comparison only.
Kind = Literal["rate", "mean", "quantile", "calibration", "curve", "count", "logged"]

_SLICE_RE = re.compile(r"^(?P<base>[^\[\]]+)\[(?P<slice>[^\[\]]+)\]$")


@dataclass(frozen=True)
class MetricDef:
    """A metric known to aipm."""

    name: str
    direction: Direction
    unit: str
    doc: str
    kind: Kind = "logged"
    source: str = "aipm"  # which plugin registered it


BUILTIN_METRICS: tuple[MetricDef, ...] = (
    MetricDef("n_examples", "info", "rows", "Rows evaluated.", "count"),
    MetricDef("accuracy", "higher", "fraction", "mean(prediction == label).", "rate"),
    MetricDef("fallback_rate", "lower", "fraction",
              "mean(fallback); fallback = confidence < fallback_threshold when no column.", "rate"),
    MetricDef("selective_accuracy", "higher", "fraction",
              "Accuracy over rows with fallback == False.", "rate"),
    MetricDef("override_rate", "lower", "fraction",
              "mean(overridden) over rows where it is not null.", "rate"),
    MetricDef("ece", "lower", "fraction",
              "Expected calibration error: sum over 15 equal-width bins of (n_b/N)*|acc_b - conf_b|.",
              "calibration"),
    MetricDef("mce", "lower", "fraction",
              "Maximum calibration error: max over non-empty bins of |acc_b - conf_b|.", "calibration"),
    MetricDef("brier", "lower", "score", "mean((confidence - correct)^2).", "calibration"),
    MetricDef("latency_ms_p50", "lower", "ms", "Median latency (numpy linear percentile).", "quantile"),
    MetricDef("latency_ms_p95", "lower", "ms", "95th percentile latency (numpy linear).", "quantile"),
    MetricDef("latency_ms_p99", "lower", "ms", "99th percentile latency (numpy linear).", "quantile"),
    MetricDef("latency_ms_mean", "lower", "ms", "Mean latency.", "mean"),
    MetricDef("cost_per_query_usd", "lower", "USD", "mean(cost_usd).", "mean"),
    MetricDef("cost_total_usd", "info", "USD", "sum(cost_usd).", "count"),
    MetricDef("aurc", "lower", "fraction",
              "Area under the risk-coverage curve (sorted by confidence, descending).", "curve"),
    MetricDef("psi_confidence", "lower", "index",
              "Population stability index of confidence, candidate vs baseline eval set.", "logged"),
    MetricDef("psi_prediction", "lower", "index",
              "Population stability index of the prediction mix, candidate vs baseline.", "logged"),
    MetricDef("psi_slice", "lower", "index",
              "Population stability index of the slice mix, candidate vs baseline.", "logged"),
    # Product metrics that are logged, not computed.
    MetricDef("dau", "higher", "users", "Daily active users (logged).", "logged"),
    MetricDef("retention_d7", "higher", "fraction", "Day-7 retention (logged).", "logged"),
    MetricDef("csat", "higher", "score", "Customer satisfaction (logged).", "logged"),
)


def split_slice(name: str) -> tuple[str, str | None]:
    """``"accuracy[slice=de]"`` -> ``("accuracy", "slice=de")``; plain names -> ``(name, None)``."""
    m = _SLICE_RE.match(name)
    if not m:
        return name, None
    return m.group("base"), m.group("slice")


def slice_metric_name(base: str, slice_key: str) -> str:
    """``("accuracy", "slice=de")`` -> ``"accuracy[slice=de]"``."""
    return f"{base}[{slice_key}]"


class MetricRegistry:
    """Name -> :class:`MetricDef`. Registering a name twice from different sources is an error."""

    def __init__(self, defs: tuple[MetricDef, ...] | list[MetricDef] = ()) -> None:
        self._defs: dict[str, MetricDef] = {}
        for d in defs:
            self.register(d)

    def register(self, d: MetricDef) -> None:
        if d.direction not in ("higher", "lower", "info"):
            raise PluginError(f"metric {d.name!r} from {d.source}: bad direction {d.direction!r}")
        old = self._defs.get(d.name)
        if old is not None and old != d:
            raise PluginError(
                f"metric {d.name!r} registered twice (by {old.source} and {d.source})"
            )
        self._defs[d.name] = d

    def get(self, name: str) -> MetricDef | None:
        """The definition of ``name`` or of its base metric for per-slice names."""
        d = self._defs.get(name)
        if d is None:
            base, sl = split_slice(name)
            if sl is not None:
                d = self._defs.get(base)
        return d

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[MetricDef]:
        return iter(self._defs.values())

    def __len__(self) -> int:
        return len(self._defs)


def default_registry() -> MetricRegistry:
    """The built-in metrics only (no plugins). Use ``plugins.metric_registry()`` for all."""
    return MetricRegistry(BUILTIN_METRICS)
