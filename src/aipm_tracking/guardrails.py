"""The guardrails file (DESIGN §5): YAML -> validated :class:`Guardrails`, and its hash.

Success criteria are fixed before training and stored (as a hash) with every run logged
under them. This module loads them with ``yaml.safe_load`` only, validates every key and
value, and reports problems as one :class:`~aipm_tracking.errors.ConfigError` line naming
the file, the line and the key::

    g.yaml:7: metrics.latency_ms_p95.max_regression: "10 %" is not a number or a
    percentage like "10%"

Line numbers come from the safe composer (``yaml.compose`` with ``SafeLoader``), values
from ``yaml.safe_load``. :func:`spec_hash` hashes the *normalized* spec (defaults filled,
directions resolved, percentages parsed, traffic weights summing to 1), so reordering keys,
comments or formatting never change it, while any change of a threshold does.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import ConfigError
from .metrics import slice_metric_name, split_slice
from .pricing import Pricing

if TYPE_CHECKING:  # pragma: no cover
    from .metrics import MetricRegistry

SPEC_VERSION = 1
DEFAULT_FALLBACK_THRESHOLD = 0.5
DEFAULT_ALPHA = 0.05
SEVERITIES = ("block", "warn")
DIRECTIONS = ("higher", "lower")

TOP_KEYS = ("version", "name", "fallback_threshold", "alpha", "column_map", "metric_map",
            "metrics", "slices", "traffic_mix", "pricing")
METRIC_KEYS = ("min", "max", "max_regression", "severity", "direction")
PRICING_KEYS = ("input_per_1m_tokens", "output_per_1m_tokens")

_PERCENT_RE = re.compile(r"^(?:\d+(?:\.\d*)?|\.\d+)%$")
_SLICE_KEY_RE = re.compile(r"^[^=\[\]\s][^=\[\]]*=[^=\[\]]+$")


# -- the model -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Margin:
    """An allowed worsening: absolute (``0.01``) or relative to |baseline| (``"10%"``)."""

    value: float
    relative: bool = False

    def allowed(self, baseline: float) -> float:
        """The margin in the metric's units, given the baseline value."""
        return self.value * abs(baseline) if self.relative else self.value

    def __str__(self) -> str:
        if self.relative:
            return f"{_fmt(self.value * 100)}%"
        return _fmt(self.value)

    def to_spec(self) -> str | float:
        return str(self) if self.relative else self.value


@dataclass(frozen=True)
class Guardrail:
    """One criterion on one metric (per-slice metrics are named ``accuracy[slice=de]``)."""

    metric: str
    direction: str  # "higher" | "lower"
    min: float | None = None
    max: float | None = None
    max_regression: Margin | None = None
    severity: str = "block"
    slice: str | None = None
    line: int | None = field(default=None, compare=False)

    @property
    def base_metric(self) -> str:
        return split_slice(self.metric)[0]

    def describe(self) -> str:
        """Human form: ``"min 0.9 · max_regression 1%"`` (``"compare only"`` when empty)."""
        parts = []
        if self.min is not None:
            parts.append(f"min {_fmt(self.min)}")
        if self.max is not None:
            parts.append(f"max {_fmt(self.max)}")
        if self.max_regression is not None:
            parts.append(f"max_regression {self.max_regression}")
        return " · ".join(parts) or "compare only"

    def breached_bound(self, value: float) -> str | None:
        """``"below min X"`` / ``"above max X"`` when ``value`` crosses an absolute bound;
        ``None`` otherwise. Ties pass: ``1e-9 + 1e-9·max(|value|, |bound|)`` of slack (the
        comparator's tolerance)."""
        if self.min is not None and value < self.min - _TIE * (1 + max(abs(value), abs(self.min))):
            return f"below min {_fmt(self.min)}"
        if self.max is not None and value > self.max + _TIE * (1 + max(abs(value), abs(self.max))):
            return f"above max {_fmt(self.max)}"
        return None

    def to_spec(self) -> dict[str, Any]:
        """Normalized dict (every key present) used by the hash."""
        return {"direction": self.direction, "min": self.min, "max": self.max,
                "max_regression": None if self.max_regression is None else
                {"value": self.max_regression.value, "relative": self.max_regression.relative},
                "severity": self.severity}


@dataclass(frozen=True)
class Guardrails:
    """A validated guardrails file. ``hash`` is the first 16 hex chars of :func:`spec_hash`."""

    guardrails: tuple[Guardrail, ...]
    name: str | None = None
    version: int = SPEC_VERSION
    fallback_threshold: float = DEFAULT_FALLBACK_THRESHOLD
    alpha: float = DEFAULT_ALPHA
    column_map: Mapping[str, str] = field(default_factory=dict)
    metric_map: Mapping[str, str] = field(default_factory=dict)
    traffic_mix: Mapping[str, float] = field(default_factory=dict)
    pricing: Pricing | None = None
    hash: str = ""
    source: str | None = field(default=None, compare=False)

    def __hash__(self) -> int:
        return hash(self.hash)

    def get(self, metric: str) -> Guardrail | None:
        for g in self.guardrails:
            if g.metric == metric:
                return g
        return None

    @property
    def metric_names(self) -> list[str]:
        return [g.metric for g in self.guardrails]

    def to_spec(self) -> dict[str, Any]:
        """The normalized spec (what the hash covers; ``name`` is a label and is left out)."""
        metrics = {g.metric: g.to_spec() for g in self.guardrails if g.slice is None}
        slices: dict[str, dict[str, Any]] = {}
        for g in self.guardrails:
            if g.slice is not None:
                slices.setdefault(g.slice, {})[g.base_metric] = g.to_spec()
        return {
            "version": self.version,
            "fallback_threshold": self.fallback_threshold,
            "alpha": self.alpha,
            "column_map": dict(self.column_map),
            "metric_map": dict(self.metric_map),
            "metrics": metrics,
            "slices": slices,
            "traffic_mix": dict(self.traffic_mix),
            "pricing": None if self.pricing is None else self.pricing.to_dict(),
        }


def spec_hash(spec: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of a normalized spec (sorted keys, no spaces)."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_TIE = 1e-9  # relative and absolute slack under which a value ties with a bound


def _fmt(x: float) -> str:
    return f"{x:g}" if abs(x) >= 1e-4 or x == 0 else f"{x:.3g}"


# -- line numbers from the safe composer -----------------------------------------------------

Path_ = tuple[str, ...]


class _Lines:
    """``path -> 1-based line`` for every mapping key and value in a YAML document."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[Path_, int] = {}

    @classmethod
    def of_text(cls, text: str, file: str) -> _Lines:
        out = cls(file)
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as e:
            raise _yaml_error(e, file) from None
        if node is not None:
            out._walk(node, ())
        return out

    def _walk(self, node: yaml.Node, path: Path_) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for k, v in node.value:
                key = str(k.value)
                line = k.start_mark.line + 1
                if key in seen:
                    raise ConfigError(f"{self.file}:{line}: {_dotted(path + (key,))}: duplicate "
                                      f"key (first on line {seen[key]})")
                seen[key] = line
                self.lines[path + (key,)] = line
                self._walk(v, path + (key,))

    def line(self, path: Path_) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def error(self, path: Path_, msg: str) -> ConfigError:
        line = self.line(path)
        where = f"{self.file}:{line}" if line is not None else self.file
        return ConfigError(f"{where}: {_dotted(path)}: {msg}" if path else f"{where}: {msg}")


def _yaml_error(e: yaml.YAMLError, file: str) -> ConfigError:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    line = f"{mark.line + 1}:" if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    problem = " ".join(str(problem).split())
    return ConfigError(f"{file}:{line} malformed YAML: {problem}")


def _dotted(path: Path_) -> str:
    return ".".join(path)


# -- validation helpers -----------------------------------------------------------------------

def _show(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _did_you_mean(name: str, choices: Any, cutoff: float) -> str | None:
    """The closest of ``choices`` to ``name`` (difflib ratio >= ``cutoff``), or None."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=cutoff)
    return close[0] if close else None


def _check_keys(d: Mapping[str, Any], allowed: tuple[str, ...], path: Path_, lines: _Lines,
                what: str) -> None:
    for k in d:
        if not isinstance(k, str):
            raise lines.error(path, f"key {k!r} must be a string")
        if k not in allowed:
            close = _did_you_mean(k, allowed, 0.6)
            hint = f"; did you mean '{close}'?" if close else f" (known: {', '.join(allowed)})"
            raise lines.error(path + (k,), f"unknown {what} key{hint}")


def _mapping(v: Any, path: Path_, lines: _Lines, what: str = "a mapping") -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise lines.error(path, f"{_show(v)} must be {what}")
    return v


def _number(v: Any, path: Path_, lines: _Lines, *, lo: float | None = None,
            hi: float | None = None, lo_open: bool = False) -> float:
    if not _is_number(v):
        raise lines.error(path, f"{_show(v)} is not a number")
    x = float(v)
    if lo is not None and (x < lo or (lo_open and x == lo)):
        raise lines.error(path, f"{_show(v)} must be {'>' if lo_open else '>='} {_fmt(lo)}")
    if hi is not None and x > hi:
        raise lines.error(path, f"{_show(v)} must be <= {_fmt(hi)}")
    return x


def parse_margin(v: Any, path: Path_ = ("max_regression",), lines: _Lines | None = None) -> Margin:
    """``0.01`` -> absolute margin; ``"10%"`` -> relative (0.10 of |baseline|)."""
    lines = lines or _Lines("<guardrails>")
    if _is_number(v):
        if v < 0:
            raise lines.error(path, f"{_show(v)} must be >= 0 (an allowed worsening)")
        return Margin(float(v), relative=False)
    if isinstance(v, str) and _PERCENT_RE.match(v.strip()) and v == v.strip():
        return Margin(float(v[:-1]) / 100.0, relative=True)
    raise lines.error(path, f'{_show(v)} is not a number or a percentage like "10%"')


def _str_map(v: Any, path: Path_, lines: _Lines) -> dict[str, str]:
    d = _mapping(v, path, lines, "a mapping of names to names")
    out: dict[str, str] = {}
    for k, val in d.items():
        if not isinstance(k, str) or not k:
            raise lines.error(path, f"key {k!r} must be a non-empty string")
        if not isinstance(val, str) or not val:
            raise lines.error(path + (k,), f"{_show(val)} must be a non-empty string")
        out[k] = val
    return out


def _guardrail(metric: str, spec: Any, path: Path_, lines: _Lines, registry: MetricRegistry,
               slice_key: str | None) -> Guardrail:
    spec = _mapping(spec, path, lines, "a mapping like {min: 0.9, max_regression: 0.01}")
    _check_keys(spec, METRIC_KEYS, path, lines, "guardrail")
    lo = _number(spec["min"], path + ("min",), lines) if spec.get("min") is not None else None
    hi = _number(spec["max"], path + ("max",), lines) if spec.get("max") is not None else None
    if lo is not None and hi is not None and lo > hi:
        raise lines.error(path + ("min",), f"min {_fmt(lo)} is greater than max {_fmt(hi)}")
    margin = (parse_margin(spec["max_regression"], path + ("max_regression",), lines)
              if spec.get("max_regression") is not None else None)
    severity = spec.get("severity", "block")
    if severity not in SEVERITIES:
        raise lines.error(path + ("severity",),
                          f"{_show(severity)} must be one of: {', '.join(SEVERITIES)}")
    declared = spec.get("direction")
    if declared is not None and declared not in DIRECTIONS:
        raise lines.error(path + ("direction",),
                          f"{_show(declared)} must be one of: {', '.join(DIRECTIONS)}")
    known = registry.get(metric)
    reg_dir = known.direction if known is not None else None
    if reg_dir in DIRECTIONS and declared is not None and declared != reg_dir:
        raise lines.error(path + ("direction",),
                          f"{_show(declared)} contradicts the metric registry "
                          f"('{split_slice(metric)[0]}' is {reg_dir}-is-better)")
    direction = declared or (reg_dir if reg_dir in DIRECTIONS else None)
    if direction is None:
        base = split_slice(metric)[0]
        if known is not None:  # a registered metric with no direction (info, e.g. a count)
            raise lines.error(path, "is an info metric (no direction in the registry): a "
                                    "guardrail on it needs direction: higher or lower "
                                    "(min/max alone are not enough)")
        close = _did_you_mean(base, (d.name for d in registry if d.name != base), _METRIC_CUTOFF)
        hint = f"did you mean '{close}'? otherwise " if close else ""
        raise lines.error(path, f"is not a known metric: {hint}declare direction: higher or lower")
    full = slice_metric_name(metric, slice_key) if slice_key else metric
    return Guardrail(metric=full, direction=direction, min=lo, max=hi, max_regression=margin,
                     severity=severity, slice=slice_key or split_slice(metric)[1],
                     line=lines.line(path))


#: A metric name this close (difflib ratio) to a known one, and not known itself, is a typo.
_METRIC_CUTOFF = 0.75


def _check_column_map(cmap: Mapping[str, str], lines: _Lines) -> None:
    """A ``column_map`` target that is a typo of a canonical column (``confidnce``) is an
    error; other names are accepted (a plugin may read columns of its own)."""
    from .tables import near_miss_column

    for theirs, target in cmap.items():
        close = near_miss_column(target)
        if close is not None:
            raise lines.error(("column_map", theirs), f"{_show(target)} is not a column aipm "
                              f"knows; did you mean '{close}'?")


def _check_metric_map(mmap: Mapping[str, str], lines: _Lines, registry: MetricRegistry,
                      rails: list[Guardrail]) -> None:
    """A ``metric_map`` target must be a metric name (``name`` or ``name[column=value]``).
    A name that is neither registered nor guarded in this file but close to one that is
    (``acuracy``) is a typo and an error; other names are accepted (a foreign metric kept
    under a name of your choice is shown for information)."""
    known = {d.name for d in registry} | {g.base_metric for g in rails}
    for foreign, target in mmap.items():
        base, sl = split_slice(target)
        if ("[" in target or "]" in target) and sl is None:
            raise lines.error(("metric_map", foreign), f"{_show(target)}: malformed per-slice "
                              "name (expected 'metric[column=value]')")
        if sl is not None:
            _check_slice_key(sl, ("metric_map", foreign), lines)
        if base in known:
            continue
        close = _did_you_mean(base, known, _METRIC_CUTOFF)
        if close is not None:
            raise lines.error(("metric_map", foreign), f"{_show(target)} is not a known "
                              f"metric; did you mean '{close}'?")


def _metric_block(v: Any, path: Path_, lines: _Lines, registry: MetricRegistry,
                  slice_key: str | None) -> list[Guardrail]:
    d = _mapping(v, path, lines, "a mapping of metric names to guardrails")
    out = []
    for name, spec in d.items():
        if not isinstance(name, str) or not name.strip():
            raise lines.error(path, f"metric name {name!r} must be a non-empty string")
        base, sl = split_slice(name)
        if "[" in name and sl is None:
            raise lines.error(path + (name,), "malformed per-slice name (expected "
                              "'metric[column=value]')")
        if sl is not None:
            if slice_key is not None:
                raise lines.error(path + (name,), "a per-slice name inside slices: is not allowed")
            _check_slice_key(sl, path + (name,), lines)
        out.append(_guardrail(name, spec, path + (name,), lines, registry, slice_key))
    return out


def _check_slice_key(key: Any, path: Path_, lines: _Lines) -> None:
    if not isinstance(key, str) or not _SLICE_KEY_RE.match(key):
        raise lines.error(path, f"slice key {_show(key)} is not of the form column=value "
                          '(e.g. "slice=de")')


# -- loading ----------------------------------------------------------------------------------

def _from_dict(raw: Any, lines: _Lines, registry: MetricRegistry, source: str | None) -> Guardrails:
    if raw is None:
        raise ConfigError(f"{lines.file}: empty guardrails file (expected at least 'version: 1')")
    if not isinstance(raw, dict):
        raise lines.error((), f"top level must be a mapping, not {type(raw).__name__}")
    _check_keys(raw, TOP_KEYS, (), lines, "top-level")
    version = raw.get("version")
    if version is None:
        raise ConfigError(f"{lines.file}:1: version: missing (add 'version: 1')")
    if isinstance(version, bool) or version != SPEC_VERSION:
        raise lines.error(("version",), f"{_show(version)} is not supported (expected 1)")
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise lines.error(("name",), f"{_show(name)} must be a string")
    ft = raw.get("fallback_threshold")
    fallback = (DEFAULT_FALLBACK_THRESHOLD if ft is None
                else _number(ft, ("fallback_threshold",), lines, lo=0.0, hi=1.0))
    a = raw.get("alpha")
    alpha = DEFAULT_ALPHA if a is None else _number(a, ("alpha",), lines, lo=0.0, hi=0.5,
                                                    lo_open=True)
    column_map = _str_map(raw.get("column_map"), ("column_map",), lines)
    metric_map = _str_map(raw.get("metric_map"), ("metric_map",), lines)
    rails = _metric_block(raw.get("metrics"), ("metrics",), lines, registry, None)
    slices = _mapping(raw.get("slices"), ("slices",), lines,
                      'a mapping like {"slice=de": {accuracy: {min: 0.85}}}')
    for key, block in slices.items():
        _check_slice_key(key, ("slices", str(key)), lines)
        rails.extend(_metric_block(block, ("slices", key), lines, registry, key))
    _check_column_map(column_map, lines)
    _check_metric_map(metric_map, lines, registry, rails)
    seen: dict[str, Guardrail] = {}
    for g in rails:
        if g.metric in seen:
            raise ConfigError(f"{lines.file}:{g.line}: {g.metric}: guardrail given twice "
                              f"(also on line {seen[g.metric].line})")
        seen[g.metric] = g
    mix_raw = _mapping(raw.get("traffic_mix"), ("traffic_mix",), lines,
                       "a mapping of slice values to weights, like {de: 0.3, en: 0.7}")
    mix: dict[str, float] = {}
    for k, w in mix_raw.items():
        mix[str(k)] = _number(w, ("traffic_mix", str(k)), lines, lo=0.0)
    if mix:
        total = sum(mix.values())
        if total <= 0:
            raise lines.error(("traffic_mix",), "weights must not all be zero")
        mix = {k: w / total for k, w in sorted(mix.items())}
    pricing = None
    if raw.get("pricing") is not None:
        p = _mapping(raw["pricing"], ("pricing",), lines,
                     "a mapping like {input_per_1m_tokens: 0.5, output_per_1m_tokens: 1.5}")
        _check_keys(p, PRICING_KEYS, ("pricing",), lines, "pricing")
        vals = {k: _number(p[k], ("pricing", k), lines, lo=0.0) for k in PRICING_KEYS if k in p}
        pricing = Pricing(**vals)
    spec = Guardrails(guardrails=tuple(rails), name=name, version=SPEC_VERSION,
                      fallback_threshold=fallback, alpha=alpha, column_map=column_map,
                      metric_map=metric_map, traffic_mix=mix, pricing=pricing, source=source)
    return _with_hash(spec)


def _with_hash(g: Guardrails) -> Guardrails:
    from dataclasses import replace

    return replace(g, hash=spec_hash(g.to_spec())[:16])


def parse_guardrails(text: str, file: str = "<guardrails>", registry: MetricRegistry | None = None,
                     ) -> Guardrails:
    """Parse and validate guardrails YAML text (``file`` is only used in messages). A document
    nested deeper than Python's recursion limit is a ConfigError ("nesting too deep")."""
    reg = _registry(registry)
    try:
        lines = _Lines.of_text(text, file)
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:  # e.g. a !!python tag the safe constructor refuses
            raise _yaml_error(e, file) from None
        return _from_dict(raw, lines, reg, source=file)
    except RecursionError:
        raise ConfigError(f"{file}: nesting too deep") from None


def load_guardrails(source: str | Path | Mapping[str, Any] | Guardrails,
                    registry: MetricRegistry | None = None) -> Guardrails:
    """A path (``str``/``Path``), an already-parsed dict, or a :class:`Guardrails` -> Guardrails."""
    if isinstance(source, Guardrails):
        return source
    if isinstance(source, Mapping):
        reg = _registry(registry)
        try:
            return _from_dict(dict(source), _Lines("<guardrails dict>"), reg, None)
        except RecursionError:
            raise ConfigError("<guardrails dict>: nesting too deep") from None
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: guardrails file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read guardrails file: {e}") from None
    return parse_guardrails(text, str(path), registry)


def _registry(registry: MetricRegistry | None) -> MetricRegistry:
    if registry is not None:
        return registry
    from .plugins import metric_registry

    return metric_registry()


# -- the starter file ---------------------------------------------------------------------------

STARTER = """\
# aipm guardrails: success criteria fixed *before* training (see docs/guardrails.md).
# Validate with: aipm guardrails validate {filename}
version: 1
name: my-model-release

# Confidence below this counts as a fallback (used when the eval set has no 'fallback' column).
fallback_threshold: 0.5
# Significance level for the confirmed gate, Holm-corrected across the tested metrics.
alpha: 0.05

# Rename your eval-table columns to aipm's canonical ones (theirs: canonical).
# column_map: {{pred: prediction, gold: label}}
# Metric names in runs logged by other code (W&B, MLflow) -> canonical names.
# metric_map: {{"val/acc": accuracy}}

metrics:
  # min/max: absolute bounds on the candidate. max_regression: allowed worsening against
  # the baseline, absolute (0.01) or relative to |baseline| ("10%").
  # severity: block (default, fails CI) or warn (reported, never fails).
  accuracy:           {{min: 0.80, max_regression: 0.01}}
  fallback_rate:      {{max: 0.20, max_regression: 0.02}}
  ece:                {{max: 0.10, severity: warn}}
  # latency_ms_p95:   {{max: 800, max_regression: "10%"}}
  # cost_per_query_usd: {{max: 0.002}}
  # override_rate:    {{max: 0.05, severity: warn}}
  # my_custom_score:  {{direction: higher, min: 0.7}}   # unknown metrics need a direction
  # psi_confidence:   {{max: 0.2}}                      # drift between the two eval sets

# Per-slice guardrails (the eval set's 'slice' column): key is column=value.
# slices:
#   "slice=de": {{accuracy: {{min: 0.75}}}}

# Production traffic mix over slice values (weights are normalized to sum to 1).
# traffic_mix: {{de: 0.3, en: 0.7}}

# LLM pricing: per-example input_tokens/output_tokens -> cost_usd.
# pricing: {{input_per_1m_tokens: 0.50, output_per_1m_tokens: 1.50}}
"""


def starter_text(filename: str = "guardrails.yaml") -> str:
    """A commented starter guardrails file (it validates as is)."""
    return STARTER.format(filename=filename)


def bound_checks(g: Guardrails, metrics: Mapping[str, float]) -> list[dict[str, Any]]:
    """One run against the absolute bounds of ``g`` (no baseline needed): per guardrail
    ``{metric, threshold, value, verdict, reason}`` with verdict ``pass``, ``breach``,
    ``inconclusive`` (metric missing or not finite) or ``n/a`` (only ``max_regression``,
    which needs a baseline: ``aipm compare``). Stored with a run logged under guardrails
    (``details["guardrails"]``) and shown by the backends' review tables."""
    rows = []
    for rail in g.guardrails:
        raw = metrics.get(rail.metric)
        value = float(raw) if isinstance(raw, (int, float)) else None
        row: dict[str, Any] = {"metric": rail.metric, "threshold": rail.describe(),
                               "value": value, "severity": rail.severity}
        if rail.min is None and rail.max is None:
            row.update(verdict="n/a", reason="max_regression needs a baseline (aipm compare)")
        elif value is None or not math.isfinite(value):
            row.update(verdict="inconclusive", reason="metric missing from the run")
        else:
            bound = rail.breached_bound(value)
            row.update(verdict="breach" if bound else "pass", reason=bound or "within bounds")
        rows.append(row)
    return rows
