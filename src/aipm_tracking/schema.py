"""The records that cross module boundaries: runs, metric values, eval results, points.

Everything here is a plain dataclass with a lossless JSON round trip (``to_dict`` /
``from_dict``). The per-example table (a pandas DataFrame) travels beside a record but is
never part of its JSON: backends store it as Parquet (or an artifact) on their own.
This module imports nothing heavy; pandas appears only in type annotations.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd

RUN_SCHEMA = "aipm.run/1"

#: Run status values (``RunRecord.status``).
RUN_STATUSES = ("running", "finished", "failed", "killed", "incomplete")


def utc_now() -> str:
    """Current time as an ISO-8601 UTC string with microseconds (``...+00:00``)."""
    return datetime.now(timezone.utc).isoformat()


def _num(x: float | None) -> float | None:
    """JSON-safe float: NaN/inf become None (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# -- from_dict input checks ---------------------------------------------------------------

def _bad(key: str, value: Any, expected: str) -> NoReturn:
    from .errors import DataError

    raise DataError(f"{key} holds a {_kind(value)}, expected {expected}")


def _kind(value: Any) -> str:
    return {dict: "JSON object", list: "JSON array", str: "string", bool: "boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


def _mapping(d: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``d[key]`` as a mapping (missing/null -> empty); DataError naming the key else."""
    v = d.get(key)
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        _bad(key, v, "a JSON object")
    return v


def _number(v: Any, key: str) -> float:
    """A JSON number (null -> NaN, as ``to_dict`` writes NaN/inf); DataError else."""
    if v is None:
        return float("nan")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        _bad(key, v, "a number or null")
    return float(v)


def _integer(v: Any, key: str) -> int | None:
    """A whole JSON number (``3`` or ``3.0``) or null; DataError else."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) \
            or (isinstance(v, float) and not v.is_integer()):
        _bad(key, v, "an integer or null")
    return int(v)


def _text(d: Mapping[str, Any], key: str, prefix: str = "") -> str | None:
    """``d[key]`` as text: strings as they are, numbers written out, null -> None; a JSON
    object/array (or a boolean) is a DataError naming the key."""
    v = d.get(key)
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    _bad(prefix + key, v, "a string")


@dataclass(frozen=True)
class ModelInfo:
    """Which model produced a run."""

    name: str
    version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelInfo:
        return cls(name=str(d.get("name") or ""), version=str(d.get("version") or ""))


@dataclass(frozen=True)
class DatasetInfo:
    """The eval set a run was measured on. ``digest`` fingerprints its content."""

    name: str | None = None
    version: str | None = None
    size: int | None = None
    digest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "size": self.size, "digest": self.digest}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> DatasetInfo:
        d = d or {}
        size = d.get("size")
        return cls(
            name=d.get("name"),
            version=d.get("version"),
            size=int(size) if size is not None else None,
            digest=d.get("digest"),
        )

    @classmethod
    def parse(cls, spec: str | None) -> DatasetInfo:
        """``"NAME@VERSION"`` (version optional) -> DatasetInfo."""
        if not spec:
            return cls()
        name, _, version = spec.partition("@")
        return cls(name=name or None, version=version or None)


@dataclass(frozen=True)
class MetricValue:
    """One metric of a run: its value, optionally a confidence interval and the n behind it."""

    value: float
    ci: tuple[float, float] | None = None
    n: int | None = None

    def to_stats(self) -> dict[str, Any] | None:
        if self.ci is None and self.n is None:
            return None
        out: dict[str, Any] = {}
        if self.ci is not None:
            out["ci"] = [_num(self.ci[0]), _num(self.ci[1])]
        if self.n is not None:
            out["n"] = int(self.n)
        return out


class MetricPoint(NamedTuple):
    """One logged point of a series (training loss at a step ...)."""

    key: str
    value: float
    step: int
    timestamp: float  # seconds since the epoch


@dataclass
class RunRecord:
    """A run, whatever backend holds it.

    ``metrics`` are summary values (one per name); ``details`` holds JSON-able analyses
    (``reliability``, ``confusion``, ``risk_coverage``, ``data_issues`` ...); ``examples`` is
    the optional per-example table with canonical columns (DESIGN §3).
    """

    run_id: str
    name: str
    model: ModelInfo
    dataset: DatasetInfo = field(default_factory=DatasetInfo)
    metrics: dict[str, MetricValue] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    guardrails_hash: str | None = None
    created_at: str = field(default_factory=utc_now)
    finished_at: str | None = None
    status: str = "finished"
    ref: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    examples: pd.DataFrame | None = field(default=None, repr=False, compare=False)
    #: The backend holds a per-example table for this run, even if it was not loaded.
    examples_stored: bool = field(default=False, compare=False)

    # -- convenience -----------------------------------------------------------------
    def metric(self, name: str) -> float | None:
        mv = self.metrics.get(name)
        return None if mv is None else mv.value

    @property
    def has_examples(self) -> bool:
        return self.examples is not None or self.examples_stored

    # -- JSON ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict; the per-example table is left out (``has_examples`` says if any)."""
        stats = {k: s for k, mv in self.metrics.items() if (s := mv.to_stats()) is not None}
        return {
            "schema": RUN_SCHEMA,
            "ref": self.ref,
            "run_id": self.run_id,
            "name": self.name,
            "model": self.model.to_dict(),
            "dataset": self.dataset.to_dict(),
            "metrics": {k: _num(mv.value) for k, mv in self.metrics.items()},
            "metric_stats": stats,
            "guardrails_hash": self.guardrails_hash,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "status": self.status,
            "config": self.config,
            "tags": self.tags,
            "details": self.details,
            "has_examples": self.has_examples,
        }

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, **kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        """A record from its JSON dict; :class:`~aipm_tracking.errors.DataError` naming the
        key when ``d`` does not have a run record's shape (never a raw TypeError)."""
        if not isinstance(d, Mapping):
            _bad("the run record", d, "a JSON object")
        schema = d.get("schema", RUN_SCHEMA)
        if not str(schema).startswith("aipm.run/"):
            from .errors import DataError

            raise DataError(f"not an aipm run record (schema {schema!r})")
        if "run_id" not in d:  # an empty one is fine: a record written before its id
            from .errors import DataError

            raise DataError("run record has no 'run_id'")
        run_id = _text(d, "run_id") or ""
        stats = _mapping(d, "metric_stats")
        metrics: dict[str, MetricValue] = {}
        for k, v in _mapping(d, "metrics").items():
            s = stats.get(k)
            if s is None:
                s = {}
            elif not isinstance(s, Mapping):
                _bad(f"metric_stats.{k}", s, "an object")
            ci = s.get("ci")
            if ci is not None and not (isinstance(ci, (list, tuple)) and len(ci) == 2):
                _bad(f"metric_stats.{k}.ci", ci, "a [low, high] pair")
            n = _integer(s.get("n"), f"metric_stats.{k}.n")
            metrics[str(k)] = MetricValue(
                value=_number(v, f"metrics.{k}"),
                ci=(_number(ci[0], f"metric_stats.{k}.ci"),
                    _number(ci[1], f"metric_stats.{k}.ci")) if ci else None,
                n=n,
            )
        model = _mapping(d, "model")
        dataset = _mapping(d, "dataset")
        size = _integer(dataset.get("size"), "dataset.size")
        tags = _mapping(d, "tags")
        for k, v in tags.items():
            if isinstance(v, (Mapping, list, tuple)):
                _bad(f"tags.{k}", v, "a string")
        return cls(
            run_id=run_id,
            name=_text(d, "name") or run_id,
            model=ModelInfo(name=_text(model, "name", "model.") or "",
                            version=_text(model, "version", "model.") or ""),
            dataset=DatasetInfo(name=_text(dataset, "name", "dataset."),
                                version=_text(dataset, "version", "dataset."),
                                size=size,
                                digest=_text(dataset, "digest", "dataset.")),
            metrics=metrics,
            config=dict(_mapping(d, "config")),
            tags={str(k): str(v) for k, v in tags.items()},
            guardrails_hash=_text(d, "guardrails_hash"),
            created_at=_text(d, "created_at") or utc_now(),
            finished_at=_text(d, "finished_at"),
            status=_text(d, "status") or "finished",
            ref=_text(d, "ref"),
            details=dict(_mapping(d, "details")),
            examples_stored=bool(d.get("has_examples", False)),
        )

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        return cls.from_dict(json.loads(text))


@dataclass
class DataIssue:
    """A class of bad rows found in an eval table (reported, never silently dropped)."""

    column: str
    problem: str  # e.g. "NaN", "outside [0, 1]", "negative", "duplicate"
    count: int
    examples: list[Any] = field(default_factory=list)  # a few example_ids (or row numbers)

    def describe(self) -> str:
        ex = ", ".join(map(str, self.examples[:5]))
        return f"column '{self.column}': {self.count} row(s) {self.problem} (e.g. {ex})"

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "problem": self.problem, "count": self.count,
                "examples": [str(e) for e in self.examples]}


@dataclass
class EvalResult:
    """What :func:`aipm_tracking.evaluate` returns.

    ``metrics`` is ``{name: float}`` (the contract); ``stats`` adds CI and n where known;
    ``details`` holds JSON-able analyses (reliability bins, confusion matrix, risk-coverage);
    ``examples`` is the canonicalised per-example table (or None when not kept).
    """

    metrics: dict[str, float]
    n_examples: int
    fallback_threshold: float
    stats: dict[str, MetricValue] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    issues: list[DataIssue] = field(default_factory=list)
    examples: pd.DataFrame | None = field(default=None, repr=False, compare=False)
    source: str | None = None  # file path or description

    def metric_values(self) -> dict[str, MetricValue]:
        """Metrics as :class:`MetricValue` (with CI/n where ``stats`` has them)."""
        return {k: self.stats.get(k, MetricValue(v)) for k, v in self.metrics.items()}


# -- comparisons -------------------------------------------------------------------------

COMPARISON_SCHEMA = "aipm.comparison/1"

#: Per-guardrail verdicts (DESIGN §6).
VERDICTS = ("pass", "improved", "regression", "breach", "warn", "inconclusive")
BLOCKING_VERDICTS = ("regression", "breach")


@dataclass
class RunSummary:
    """The identity of one side of a comparison (the ``baseline`` / ``candidate`` JSON)."""

    ref: str | None
    name: str
    model: ModelInfo
    dataset: DatasetInfo
    guardrails_hash: str | None = None
    n_examples: int | None = None
    created_at: str | None = None

    @classmethod
    def of(cls, rec: RunRecord) -> RunSummary:
        n = rec.metric("n_examples")
        return cls(ref=rec.ref, name=rec.name, model=rec.model, dataset=rec.dataset,
                   guardrails_hash=rec.guardrails_hash,
                   n_examples=int(n) if n is not None and math.isfinite(n) else None,
                   created_at=rec.created_at)

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "name": self.name, "model": self.model.to_dict(),
                "dataset": self.dataset.to_dict(), "guardrails_hash": self.guardrails_hash,
                "n_examples": self.n_examples, "created_at": self.created_at}


@dataclass
class MetricComparison:
    """One guardrail row of a comparison (one JSON ``metrics`` entry)."""

    metric: str
    direction: str
    baseline: float | None
    candidate: float | None
    delta: float | None
    delta_rel: float | None
    ci: tuple[float, float] | None
    p_value: float | None
    test: str | None  # "mcnemar-exact", "t-paired", "bootstrap-paired", "point", ...
    severity: str  # "block" | "warn"
    verdict: str
    reason: str
    threshold: str = ""  # human-readable guardrail, e.g. "min 0.9, max_regression 0.01"
    slice: str | None = None  # e.g. "slice=de" for per-slice guardrails
    n: int | None = None  # examples behind the test (paired count where paired)

    @property
    def blocking(self) -> bool:
        return self.severity == "block" and self.verdict in BLOCKING_VERDICTS

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "direction": self.direction,
            "baseline": _num(self.baseline), "candidate": _num(self.candidate),
            "delta": _num(self.delta), "delta_rel": _num(self.delta_rel),
            "ci": [_num(self.ci[0]), _num(self.ci[1])] if self.ci else None,
            "p_value": _num(self.p_value), "test": self.test, "severity": self.severity,
            "verdict": self.verdict, "reason": self.reason, "threshold": self.threshold,
            "slice": self.slice, "n": self.n,
        }


@dataclass
class Comparison:
    """The outcome of ``compare``: rows, warnings and the overall verdict / exit code."""

    baseline: RunSummary
    candidate: RunSummary
    metrics: list[MetricComparison]
    warnings: list[str] = field(default_factory=list)
    gate: str = "confirmed"
    alpha: float = 0.05
    allow_missing: bool = False
    guardrails_name: str | None = None
    guardrails_hash: str | None = None
    #: JSON-able extras (pairing info, drift, cost projection ...), under ``details``.
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 nothing blocks; 1 a blocking regression/breach; 3 inconclusive (fail closed)."""
        if any(r.blocking for r in self.metrics):
            return 1
        if not self.allow_missing and any(r.verdict == "inconclusive" for r in self.metrics):
            return 3
        return 0

    @property
    def verdict(self) -> str:
        return {0: "pass", 1: "fail", 3: "inconclusive"}[self.exit_code]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": COMPARISON_SCHEMA,
            "baseline": self.baseline.to_dict(),
            "candidate": self.candidate.to_dict(),
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "gate": self.gate,
            "alpha": self.alpha,
            "guardrails": {"name": self.guardrails_name, "hash": self.guardrails_hash},
            "metrics": [r.to_dict() for r in self.metrics],
            "warnings": list(self.warnings),
            "details": self.details,
        }

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, **kw)
