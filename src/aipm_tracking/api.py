"""The Python API (DESIGN §7b): evaluate, log, load_run, compare, push, pull.

The CLI commands are thin wrappers over these functions. Sources (a DataFrame, an eval
file, a run reference) become :class:`RunRecord`; comparisons go through
:func:`aipm_tracking.comparator.compare_runs`. Heavy modules load inside the functions.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backends.base import BackendOptions
from .errors import AipmWarning, DataError, UsageError
from .redact import redact_config
from .refs import RUN_ID_RE, RunRef, parse_ref, parse_target
from .schema import DatasetInfo, EvalResult, MetricPoint, ModelInfo, RunRecord

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .guardrails import Guardrails
    from .schema import Comparison

def _options(options: BackendOptions | None = None, *, store: str | None = None,
             mlflow_uri: str | None = None,
             metric_map: Mapping[str, str] | None = None) -> BackendOptions:
    if options is None:
        options = BackendOptions(store=store, mlflow_uri=mlflow_uri)
    if metric_map:
        merged = {**dict(metric_map), **dict(options.metric_map)}
        options = BackendOptions(store=options.store, mlflow_uri=options.mlflow_uri,
                                 metric_map=merged, quiet=options.quiet, extra=options.extra)
    return options


def load_guardrails(guardrails: Any) -> Guardrails | None:
    """A path, a dict or a Guardrails -> Guardrails (None stays None)."""
    if guardrails is None:
        return None
    from .guardrails import Guardrails
    from .guardrails import load_guardrails as _load

    if isinstance(guardrails, Guardrails):
        return guardrails
    return _load(guardrails)


def parse_mapping(pairs: Any, what: str = "--map") -> dict[str, str]:
    """``["a=b", "c=d"]`` or ``"a=b,c=d"`` or a dict -> ``{"a": "b", "c": "d"}``."""
    if not pairs:
        return {}
    if isinstance(pairs, Mapping):
        return {str(k): str(v) for k, v in pairs.items()}
    items = pairs.split(",") if isinstance(pairs, str) else [
        p for item in pairs for p in str(item).split(",")]
    out: dict[str, str] = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise UsageError(f"{what}: expected NAME=VALUE, got {item!r}")
        out[key.strip()] = val.strip()
    return out


def parse_traffic_mix(spec: Any) -> dict[str, float] | None:
    """``"de=0.3,en=0.7"`` (or a dict) -> ``{"de": 0.3, "en": 0.7}``."""
    if not spec:
        return None
    raw = parse_mapping(spec, "--traffic-mix")
    try:
        return {k: float(v) for k, v in raw.items()}
    except ValueError as e:
        raise UsageError(f"--traffic-mix: weights must be numbers ({e})") from None


def evaluate(table: Any, *, fallback_threshold: float = 0.5,
             column_map: Mapping[str, str] | None = None, **kwargs: Any) -> EvalResult:
    """Per-example table (DataFrame, CSV/Parquet/JSONL path) -> :class:`EvalResult`."""
    from .evaluation import evaluate as _evaluate

    return _evaluate(table, fallback_threshold=fallback_threshold,
                     column_map=dict(column_map or {}) or None, **kwargs)


def _eval_kwargs(g: Guardrails | None, fallback_threshold: float | None,
                 column_map: Mapping[str, str] | None,
                 traffic_mix: Mapping[str, float] | None) -> dict[str, Any]:
    cmap = dict(getattr(g, "column_map", None) or {})
    cmap.update(column_map or {})
    thr = fallback_threshold
    if thr is None:
        thr = getattr(g, "fallback_threshold", None)
    kw: dict[str, Any] = {"fallback_threshold": 0.5 if thr is None else float(thr),
                          "column_map": cmap or None}
    mix = traffic_mix if traffic_mix is not None else getattr(g, "traffic_mix", None)
    if mix:
        kw["traffic_mix"] = dict(mix)
    pricing = getattr(g, "pricing", None)
    if pricing is not None:
        kw["pricing"] = pricing
    return kw


def _digest(examples: pd.DataFrame | None) -> str | None:
    """A content fingerprint of the eval set: ids and labels (what defines 'the same set')."""
    if examples is None or len(examples) == 0:
        return None
    import pandas as pd

    cols = [c for c in ("example_id", "label") if c in examples.columns] or list(examples.columns)
    frame = examples[cols]
    try:
        text = frame.astype(str)
    except UnicodeDecodeError:  # bytes that are not UTF-8 (evaluate() decodes or rejects them;
        # an EvalResult built by other code may still hold some): hash them, never crash
        text = frame.map(lambda v: v.decode("utf-8", "backslashreplace")
                         if isinstance(v, (bytes, bytearray)) else v).astype(str)
    h = pd.util.hash_pandas_object(text, index=False).to_numpy()
    return hashlib.sha256(h.tobytes()).hexdigest()[:16]


def record_from_eval(res: EvalResult, *, model: str, model_version: str = "",
                     run_name: str | None = None, dataset: str | DatasetInfo | None = None,
                     guardrails: Guardrails | None = None,
                     config: Mapping[str, Any] | None = None,
                     tags: Mapping[str, str] | None = None) -> RunRecord:
    """Wrap an :class:`EvalResult` in a :class:`RunRecord` ready for a backend."""
    ds = dataset if isinstance(dataset, DatasetInfo) else DatasetInfo.parse(dataset)
    ds = DatasetInfo(name=ds.name, version=ds.version, size=res.n_examples,
                     digest=ds.digest or _digest(res.examples))
    cfg: dict[str, Any] = {"fallback_threshold": res.fallback_threshold}
    cfg.update(config or {})
    name = run_name or f"{model}-{model_version}".strip("-")
    details = dict(res.details)
    if guardrails is not None:
        from .guardrails import bound_checks

        details["guardrails"] = bound_checks(guardrails, res.metrics)
    return RunRecord(
        run_id="", name=name, model=ModelInfo(model, str(model_version)), dataset=ds,
        metrics=res.metric_values(), config=redact_config(cfg),
        tags={str(k): str(v) for k, v in (tags or {}).items()},
        guardrails_hash=getattr(guardrails, "hash", None), details=details,
        examples=res.examples, status="finished",
    )


def log(table_or_result: Any, *, model: str, model_version: str = "",
        run_name: str | None = None, dataset: str | DatasetInfo | None = None,
        to: str = "local", guardrails: Any = None,
        config: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None,
        column_map: Mapping[str, str] | None = None, fallback_threshold: float | None = None,
        drop_bad_rows: bool = False, options: BackendOptions | None = None,
        store: str | None = None, mlflow_uri: str | None = None) -> str:
    """Evaluate (unless given an EvalResult), store the run, return its reference."""
    from .plugins import emit, get_backend

    if not model:
        raise UsageError("a model name is required (--model)")
    g = load_guardrails(guardrails)
    if isinstance(table_or_result, EvalResult):
        res = table_or_result
    else:
        res = evaluate(table_or_result, drop_bad_rows=drop_bad_rows,
                       **_eval_kwargs(g, fallback_threshold, column_map, None))
    rec = record_from_eval(res, model=model, model_version=model_version, run_name=run_name,
                           dataset=dataset, guardrails=g, config=config, tags=tags)
    scheme, target = parse_target(to)
    backend = get_backend(scheme, _options(options, store=store, mlflow_uri=mlflow_uri))
    ref = backend.write_run(rec, target)
    rec.ref = ref
    emit("aipm_run_logged", record=rec, ref=ref)
    return ref


def _apply_metric_map(rec: RunRecord, metric_map: Mapping[str, str]) -> RunRecord:
    if not metric_map:
        return rec
    for foreign, canonical in metric_map.items():
        if foreign in rec.metrics and canonical not in rec.metrics:
            rec.metrics[canonical] = rec.metrics.pop(foreign)
    return rec


def load_run(source: Any, *, options: BackendOptions | None = None, guardrails: Any = None,
             column_map: Mapping[str, str] | None = None,
             fallback_threshold: float | None = None,
             traffic_mix: Mapping[str, float] | None = None,
             with_examples: bool = True, store: str | None = None,
             mlflow_uri: str | None = None) -> RunRecord:
    """A reference, a RunRecord, a DataFrame or an eval-file path -> :class:`RunRecord`.

    Eval files and DataFrames are evaluated on the fly with the guardrails' threshold,
    column map, traffic mix and pricing; runs from backends are read through its metric map.
    """
    if isinstance(source, RunRecord):
        return source
    g = load_guardrails(guardrails)
    metric_map = dict(getattr(g, "metric_map", None) or {})
    if isinstance(source, EvalResult):
        return record_from_eval(source, model="eval", guardrails=g)
    if not isinstance(source, (str, os.PathLike)):
        if type(source).__name__ in ("DataFrame", "Table"):
            res = evaluate(source, **_eval_kwargs(g, fallback_threshold, column_map, traffic_mix))
            rec = record_from_eval(res, model="dataframe", guardrails=g)
            rec.ref = "<dataframe>"
            return rec
        raise UsageError(f"cannot load a run from {type(source).__name__}")
    text = os.fspath(source)
    ref: RunRef = parse_ref(text)
    if ref.scheme == "file":
        path = Path(ref.locator)
        if not path.is_file():
            raise DataError(f"{path}: no such eval file")
        res = evaluate(str(path), **_eval_kwargs(g, fallback_threshold, column_map, traffic_mix))
        rec = record_from_eval(res, model=path.stem, run_name=path.name, guardrails=g)
        rec.ref = str(path)
        rec.run_id = path.stem
        return rec
    from .plugins import get_backend

    opts = _options(options, store=store, mlflow_uri=mlflow_uri, metric_map=metric_map)
    rec = get_backend(ref.scheme, opts).read_run(ref.locator, with_examples=with_examples)
    if rec.ref is None:
        rec.ref = str(ref)
    kw = _eval_kwargs(g, fallback_threshold, column_map, traffic_mix)
    _canonical_examples(rec, kw["column_map"], kw["fallback_threshold"])
    if kw.get("traffic_mix"):
        _mix_metrics(rec, kw)
    return _apply_metric_map(rec, metric_map)


#: The suffix of the metrics re-weighted to a traffic mix (DESIGN §4).
_MIX = "[mix=traffic]"


def _mix_metrics(rec: RunRecord, kw: Mapping[str, Any]) -> None:
    """A stored run under the traffic mix in effect (``--traffic-mix`` or the guardrails'):
    its ``[mix=traffic]`` metrics recomputed from its per-example table, as an eval file's
    would be. Without a table the mix cannot be applied: a warning says so, and stored mix
    metrics (of the mix at log time, maybe another) are left out."""
    stored = [k for k in rec.metrics if k.endswith(_MIX)]
    for k in stored:
        del rec.metrics[k]
    if rec.examples is None:
        warnings.warn(f"run {rec.ref or rec.name} has no per-example table: the traffic mix "
                      f"cannot be applied to it, and it has no {_MIX} metrics here",
                      AipmWarning, stacklevel=3)
        return
    res = evaluate(rec.examples, traffic_mix=kw["traffic_mix"],
                   fallback_threshold=kw["fallback_threshold"], pricing=kw.get("pricing"))
    rec.metrics.update({k: v for k, v in res.metric_values().items() if k.endswith(_MIX)})


def _canonical_examples(rec: RunRecord, column_map: Mapping[str, str] | None,
                        fallback_threshold: float) -> None:
    """A backend run's per-example table in canonical form, as an eval file's would be:
    columns renamed by ``column_map`` (the guardrails file's ``column_map:`` and ``--map``,
    DESIGN §3), and ``correct`` / ``fallback`` derived when the table lacks them (tables
    logged by other code), so runs by other code pair on their examples."""
    if rec.examples is None:
        return
    df = rec.examples
    if not all(isinstance(c, str) for c in df.columns):
        df = df.rename(columns=str)
    if column_map:  # a stored run need not have every mapped column: map those it has
        from .tables import check_column_map

        present = {k: v for k, v in column_map.items() if k in df.columns}
        renames = check_column_map(list(df.columns), present,
                                   f"per-example table of {rec.ref or rec.name}")
        if renames:
            df = df.rename(columns=renames)
    cols = set(df.columns)
    if "correct" not in cols and {"label", "prediction"} <= cols:
        a, b = df["label"].to_numpy(), df["prediction"].to_numpy()
        if (a.dtype.kind in "iufb") != (b.dtype.kind in "iufb"):  # as evaluate() compares
            a, b = df["label"].astype(str).to_numpy(), df["prediction"].astype(str).to_numpy()
        df = df.assign(correct=a == b)
    if "fallback" not in cols and "confidence" in cols:
        import pandas as pd

        conf = pd.to_numeric(df["confidence"], errors="coerce")
        df = df.assign(fallback=conf < fallback_threshold)
    rec.examples = df


def compare(baseline: Any, candidate: Any, guardrails: Any = None, gate: str = "confirmed", *,
            allow_missing: bool = False, options: BackendOptions | None = None,
            column_map: Mapping[str, str] | None = None,
            traffic_mix: Mapping[str, float] | None = None,
            reference_sample: Any = None, queries_per_day: float | None = None,
            seed: int = 0, n_boot: int = 1000) -> Comparison:
    """Compare two runs (references, RunRecords, DataFrames or eval files) -> Comparison."""
    from .comparator import compare_runs
    from .plugins import emit

    if gate not in ("confirmed", "point", "strict"):
        raise UsageError(f"unknown gate {gate!r} (confirmed, point or strict)")
    g = load_guardrails(guardrails)
    kw: dict[str, Any] = {"options": options, "guardrails": g, "column_map": column_map,
                          "traffic_mix": traffic_mix}
    base = load_run(baseline, **kw)
    cand = load_run(candidate, **kw)
    ref_sample = None
    if reference_sample is not None:
        ref_sample = load_run(reference_sample, **kw).examples
    cmp = compare_runs(base, cand, g, gate=gate, allow_missing=allow_missing, seed=seed,
                       n_boot=n_boot, queries_per_day=queries_per_day,
                       reference_sample=ref_sample)
    emit("aipm_comparison_done", comparison=cmp)
    return cmp


def _source_history(ref: str, opts: BackendOptions) -> list[MetricPoint]:
    """The logged series of the run at ``ref`` (empty for an eval file, or a backend that
    keeps none: one whose ``read_history`` is not implemented)."""
    from .errors import BackendNotImplementedError
    from .plugins import get_backend

    parsed = parse_ref(ref)
    if parsed.scheme == "file":
        return []
    try:
        return list(get_backend(parsed.scheme, opts).read_history(parsed.locator))
    except BackendNotImplementedError:
        return []


def push(ref: str, to: str, *, options: BackendOptions | None = None) -> str:
    """Copy a run to another backend; return the copy's reference.

    The copy has the run's record (summary, config, tags, details), its per-example table
    and its logged series (``read_history``: every point's key, step and value, and its
    time where the destination keeps one), written by the destination's ``write_run`` in
    one write (:func:`~aipm_tracking.backends.base.write_run_copy`). It is tagged
    ``aipm.source_ref`` = the run's reference: pushing the same run to the same destination
    again returns the complete copy already there instead of writing another (a copy is a
    snapshot of the run when it was first copied).
    """
    from .backends.base import SOURCE_TAG, write_run_copy
    from .plugins import emit, get_backend

    opts = _options(options)
    rec = load_run(ref, options=opts)
    if rec.ref and rec.ref.startswith("<"):
        raise UsageError(f"cannot push {ref!r}: not a stored run")
    scheme, target = parse_target(to)
    dest = get_backend(scheme, opts)  # an unknown destination fails before reading history
    history = _source_history(ref, opts)
    if not RUN_ID_RE.match(rec.run_id or ""):
        rec.run_id = ""  # the destination generates one
    src = rec.ref
    if src:
        rec.tags = {**rec.tags, SOURCE_TAG: src}
    new_ref = write_run_copy(dest, rec, target, history)
    rec.ref = new_ref
    emit("aipm_run_logged", record=rec, ref=new_ref)
    return new_ref


def pull(ref: str, *, options: BackendOptions | None = None) -> str:
    """Copy a run (record, per-example table, logged series) from any backend into the
    embedded store; return its ``local:`` reference. Pulling it again returns that copy."""
    return push(ref, "local", options=options)
