"""Per-example eval table -> AI-PM metrics (DESIGN §3-§4), vectorised with numpy.

:func:`evaluate` reads a DataFrame, a pyarrow Table or a .csv/.parquet/.jsonl path, checks the
rows, and feeds clean numpy columns to an :class:`~aipm_tracking.accumulate.EvalAccumulator`.
Small tables are evaluated in memory (exact percentiles and AURC up to the limits documented in
:mod:`aipm_tracking.accumulate`; the per-example table is kept). Parquet files with more than
``tables.CHUNKED_MIN_ROWS`` rows and CSV/JSONL files over ``tables.CHUNKED_MIN_BYTES`` are
streamed in chunks of ``tables.DEFAULT_CHUNK_ROWS`` with bounded memory; then no per-example
table is kept (``examples`` is None), and beyond ``STREAM_EXACT_ROWS`` (200k) rows latency
percentiles come from the 0.5%-relative-error sketch and AURC / thresholds from the fine
confidence histogram (peak RSS for a 20M-row Parquet file: ~0.6 GB, see
``benchmarks/evaluate_memory.py``). Duplicate ``example_id`` detection in streaming mode
reads the id column first: strictly increasing integer ids (in CSV/JSONL, where ids are text:
ids written as plain decimal integers, ``7`` but not ``007``) are confirmed with nothing held;
other ids are collected (8 bytes per row) and sorted once.

Bad rows (DESIGN §3) raise one :class:`DataError` line listing every problem with counts and a
few example ids, unless ``drop_bad_rows=True``: then they are dropped and listed in
``details["data_issues"]`` and ``EvalResult.issues`` (when every row is bad, that is still a
DataError: nothing is left to evaluate). Checked: null/NaN ``label``,
``prediction``, ``example_id``, ``fallback``; NaN, infinite or out-of-[0, 1] ``confidence``;
NaN, infinite or negative ``latency_ms``, ``cost_usd``, ``input_tokens``, ``output_tokens``;
non-boolean ``fallback``/``overridden``; duplicate ``example_id`` (the first occurrence is kept).
``overridden`` may be null (override_rate is over non-null rows). Wrong column types are a
DataError naming the column: a date/time in any numeric column, a duration in any numeric
column but ``latency_ms`` (a duration there is converted to milliseconds), a boolean
``confidence``, ``latency_ms``, ``cost_usd`` or token count; nested values (JSON objects or
lists, Parquet struct/list columns) in ``example_id``, ``label``, ``prediction`` or ``slice``;
bytes there (a Parquet ``binary`` column, a CSV value that is not UTF-8) are decoded as UTF-8
and are a DataError when they are not valid UTF-8. ``n_examples`` is the number of rows
evaluated (after dropping bad rows); token counts alone are usable only with ``pricing``.
CSV/JSONL ids and slices are read as text (see :mod:`aipm_tracking.tables`).

``correct`` is ``prediction == label``; when one of the two columns is numeric and the other is
text, both are compared as strings. **Pricing**: with a :class:`~aipm_tracking.pricing.Pricing`
and ``input_tokens``/``output_tokens`` columns (a missing one counts as 0), ``cost_usd`` is
derived, *unless* the table already has a ``cost_usd`` column, which then wins
(``details["cost_source"]`` says ``"column"`` or ``"pricing"``). **Column map**: a mapped
column that is not in the table is an error naming the file and column, unless the table
already has the canonical column (then the entry is a no-op, so one guardrails ``column_map``
can serve runs that already use canonical names).

AURC and the risk-coverage curve sort examples by confidence, descending; tied confidences
form one group (expected risk over the orders inside a group), see
:mod:`aipm_tracking.selective`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from . import tables
from .accumulate import FINE_BINS, EvalAccumulator
from .errors import AipmWarning, ColumnTypeChanged, DataError, UsageError
from .pricing import Pricing
from .schema import DataIssue, EvalResult, MetricValue
from .selective import aurc, recommend_from_groups, recommend_threshold

__all__ = ["evaluate", "ece_mce", "brier", "aurc", "reliability_bins", "FINE_BINS"]

_N_EXAMPLES = 5
#: Streaming keeps exact latency/AURC arrays only up to this many rows (per slice too).
STREAM_EXACT_ROWS = 200_000


# -- pure kernels (reused by stats) ----------------------------------------------------------
def reliability_bins(correct: Any, confidence: Any, n_bins: int = 15
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin (count, correct count, confidence sum); bin = min(floor(conf*n_bins), n_bins-1)."""
    conf = np.asarray(confidence, dtype=np.float64)
    corr = np.asarray(correct, dtype=np.float64)
    b = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    return (np.bincount(b, minlength=n_bins), np.bincount(b, weights=corr, minlength=n_bins),
            np.bincount(b, weights=conf, minlength=n_bins))


def ece_mce(correct: Any, confidence: Any, n_bins: int = 15) -> tuple[float, float]:
    """Expected and maximum calibration error over ``n_bins`` equal-width bins (DESIGN §4)."""
    cnt, acc, cs = reliability_bins(correct, confidence, n_bins)
    n = cnt.sum()
    if n == 0:
        return float("nan"), float("nan")
    nz = cnt > 0
    return float(np.abs(acc - cs).sum() / n), float((np.abs(acc[nz] - cs[nz]) / cnt[nz]).max())


def brier(correct: Any, confidence: Any) -> float:
    """mean((confidence - correct)^2)."""
    d = np.asarray(confidence, dtype=np.float64) - np.asarray(correct, dtype=np.float64)
    return float(np.dot(d, d) / d.size) if d.size else float("nan")


# -- column preparation ----------------------------------------------------------------------
class _Issues:
    """Bad-row bookkeeping across chunks: (column, problem) -> count + a few example ids."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, str], list[Any]] = {}

    def add(self, column: str, problem: str, mask: np.ndarray, ids: np.ndarray | int) -> None:
        """``ids``: the chunk's example ids, or the chunk's first row number."""
        k = int(np.count_nonzero(mask))
        if not k:
            return
        entry = self.found.setdefault((column, problem), [0, []])
        entry[0] += k
        if len(entry[1]) < _N_EXAMPLES:
            rows = np.flatnonzero(mask)[: _N_EXAMPLES - len(entry[1])]
            entry[1].extend((rows + ids).tolist() if isinstance(ids, int) else ids[rows].tolist())

    def issues(self) -> list[DataIssue]:
        return [DataIssue(c, p, n, ex) for (c, p), (n, ex) in self.found.items()]


#: object columns: what pandas infers -> the dtype kind they are treated as
_INFERRED_KIND = {"boolean": "b", "timedelta": "m", "timedelta64": "m", "datetime": "M",
                  "datetime64": "M", "date": "M"}


def _numeric(s: Any, col: str, src: str) -> np.ndarray:
    """A numeric column as float64 (NaN for nulls). ``latency_ms`` may be a duration (numpy
    timedelta64, Arrow/Parquet ``duration``): it is converted to milliseconds. Any other
    duration, any date/time, and any boolean column is a DataError (read as ticks, epochs
    or 0/1 they would give numbers in the wrong unit; a true/false ``confidence`` read as
    1.0/0.0 would fake a calibration, DESIGN §3: a float in [0, 1])."""
    import pandas as pd

    kind = s.dtype.kind
    if kind == "O":  # Python objects: timedelta/datetime/bool values are caught the same way
        kind = _INFERRED_KIND.get(pd.api.types.infer_dtype(s, skipna=True), kind)
    if kind == "m":
        if col != "latency_ms":
            raise DataError(f"{src}: column '{col}' is a duration, not a number")
        td = s.to_numpy() if s.dtype.kind == "m" else None
        if td is None or td.dtype.kind != "m":
            td = pd.to_timedelta(s).to_numpy()
        with np.errstate(invalid="ignore"):
            return np.asarray(td / np.timedelta64(1, "ms"), dtype=np.float64)  # NaT -> NaN
    if kind == "M":
        raise DataError(f"{src}: column '{col}' is a date/time, not a number")
    if kind == "b":
        raise DataError(f"{src}: column '{col}' is boolean, not a number")
    if s.dtype.kind not in "fiub" and not pd.api.types.is_numeric_dtype(s.dtype):
        try:
            return pd.to_numeric(s).to_numpy(dtype=np.float64, na_value=np.nan)
        except (ValueError, TypeError):
            raise DataError(f"{src}: column '{col}' is not numeric") from None
    return s.to_numpy(dtype=np.float64, na_value=np.nan)


_TRUE = {"true", "t", "yes", "y", "1", "1.0"}
_FALSE = {"false", "f", "no", "n", "0", "0.0"}


#: Columns whose values are compared, hashed or named (never nested; text as ``str``).
_VALUE_COLUMNS = ("example_id", "label", "prediction", "slice")
#: What ``infer_dtype`` says of object columns that hold nothing nested and no bytes.
_PLAIN_INFERRED = frozenset({"string", "integer", "floating", "mixed-integer-float", "decimal",
                             "boolean", "empty", "complex", "categorical", "datetime",
                             "datetime64", "date", "timedelta", "timedelta64", "time",
                             "period", "interval"})
_NESTED = (dict, list, tuple, set, frozenset, np.ndarray)
_BYTES = (bytes, bytearray, memoryview)


def _plain_values(df: Any, src: str) -> Any:
    """Reject nested values in ``example_id``/``label``/``prediction``/``slice`` (unhashable
    or ambiguous when compared) and decode bytes there as UTF-8; the frame, with decoded
    columns replaced (the caller's frame is never changed). Only object columns are looked
    at (Arrow strings and numbers cost nothing)."""
    import pandas as pd

    for c in _VALUE_COLUMNS:
        if c not in df.columns or df[c].dtype.kind != "O":
            continue
        s = df[c]
        if pd.api.types.infer_dtype(s, skipna=True) in _PLAIN_INFERRED:
            continue
        vals = s.to_numpy(dtype=object)
        if any(isinstance(v, _NESTED) for v in vals):
            raise DataError(f"{src}: column '{c}' holds nested values (objects/lists)")
        if not any(isinstance(v, _BYTES) for v in vals):
            continue
        out = np.empty(vals.size, dtype=object)
        for i, v in enumerate(vals):
            if isinstance(v, _BYTES):
                try:
                    v = bytes(v).decode("utf-8")
                except UnicodeDecodeError:
                    text = src.lower().endswith((*tables.CSV_SUFFIXES, *tables.JSONL_SUFFIXES))
                    raise DataError(f"{src}: column '{c}' is not valid UTF-8 (e.g. "
                                    f"{bytes(v)[:40]!r})"
                                    + ("; save the file as UTF-8" if text else "")) from None
            out[i] = v
        df = df.assign(**{c: pd.Series(out, index=s.index, dtype=object)})
    return df


def _boolean(s: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (value as float 0/1/NaN, null mask, not-boolean mask)."""
    import pandas as pd

    if s.dtype == bool:  # no nulls possible: keep it boolean (the accumulator accepts both)
        v = s.to_numpy()
        z = np.zeros(v.size, dtype=bool)
        return v, z, z
    null = pd.isna(s).to_numpy()
    if pd.api.types.is_numeric_dtype(s.dtype) or str(s.dtype) == "boolean":
        v = s.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~null & (v != 0) & (v != 1)
        return np.where(bad, np.nan, v), null, bad
    low = s.astype(str).str.strip().str.lower()
    t, f = low.isin(_TRUE).to_numpy(), low.isin(_FALSE).to_numpy()
    v = np.where(t, 1.0, np.where(f, 0.0, np.nan))
    return v, null, ~null & ~t & ~f


def _null(s: Any) -> np.ndarray | None:
    import pandas as pd

    if s.dtype.kind in "iub":
        return None
    m = pd.isna(s).to_numpy()
    return m if m.any() else None


def _prepare(df: Any, src: str, issues: _Issues, *, fallback_threshold: float,
             pricing: Pricing | None, row_offset: int, dup: np.ndarray | None,
             drop: bool) -> tuple[dict[str, np.ndarray], np.ndarray | None, dict[str, str]]:
    """DataFrame chunk -> (clean columns, kept-row mask or None, notes). Records bad rows."""
    cols: dict[str, np.ndarray] = {}
    notes: dict[str, str] = {}
    bad: list[tuple[str, str, np.ndarray]] = []
    n = len(df)
    has = set(df.columns)
    ids: np.ndarray | int = row_offset
    if "example_id" in has:
        ids = df["example_id"].to_numpy()
        if (m := _null(df["example_id"])) is not None:
            bad.append(("example_id", "null", m))
    if dup is not None:
        bad.append(("example_id", "duplicate", dup))
    if "label" in has and "prediction" in has:
        lab, pred = df["label"], df["prediction"]
        for c, s in (("label", lab), ("prediction", pred)):
            if (m := _null(s)) is not None:
                bad.append((c, "null", m))
        a, b = lab.to_numpy(), pred.to_numpy()
        if (a.dtype.kind in "iufb") != (b.dtype.kind in "iufb"):
            a, b = lab.astype(str).to_numpy(), pred.astype(str).to_numpy()
        cols["label"], cols["prediction"] = a, b
        cols["correct"] = np.asarray(a == b, dtype=bool)
    for c in ("confidence", "latency_ms", "cost_usd", "input_tokens", "output_tokens"):
        if c not in has:
            continue
        v = _numeric(df[c], c, src)
        lo, hi = (v.min(), v.max()) if v.size else (0.0, 0.0)
        cap = 1.0 if c == "confidence" else np.inf
        if not (lo >= 0 and hi <= cap and (c == "confidence" or hi < np.inf)):
            nan = np.isnan(v)
            bad.append((c, "NaN", nan))
            if c == "confidence":
                bad.append((c, "outside [0, 1]", ~nan & ((v < 0) | (v > 1))))
            else:
                bad.append((c, "negative", v < 0))
                bad.append((c, "infinite", np.isposinf(v)))
        cols[c] = v
    for c in ("fallback", "overridden"):
        if c in has:
            v, null, nb = _boolean(df[c])
            if c == "fallback":
                bad.append((c, "null", null))
            bad.append((c, "not boolean", nb))
            cols[c] = v
    if "fallback" in cols:
        cols["fallback"] = cols["fallback"] == 1.0
    elif "confidence" in cols:
        cols["fallback"] = cols["confidence"] < fallback_threshold
    if "slice" in has:  # keep pandas' array (Arrow strings stay compact; factorized later)
        cols["slice"] = df["slice"].array
    inp, out = cols.pop("input_tokens", None), cols.pop("output_tokens", None)
    if "cost_usd" in cols:
        notes["cost_source"] = "column"
    elif pricing is not None and (inp is not None or out is not None):
        z = np.zeros(n)
        cols["cost_usd"] = pricing.cost(z if inp is None else inp, z if out is None else out)
        notes["cost_source"] = "pricing"
    keep = None
    any_bad = [(c, p, m) for c, p, m in bad if m.any()]
    for c, p, m in any_bad:
        issues.add(c, p, m, ids)
    if any_bad and drop:
        keep = ~np.logical_or.reduce([m for _, _, m in any_bad])
        cols = {k: v[keep] for k, v in cols.items()}
    return cols, keep, notes


def _raise_or_record(issues: _Issues, src: str, drop: bool) -> list[DataIssue]:
    found = issues.issues()
    if found and not drop:
        raise DataError(f"{src}: " + "; ".join(i.describe() for i in found)
                        + " (fix the rows, or drop them with --drop-bad-rows / "
                        "drop_bad_rows=True)")
    return found


def _all_dropped(issues: _Issues, src: str) -> DataError:
    """Every row was bad and dropped: nothing is left to evaluate."""
    return DataError(f"{src}: every row is bad: "
                     + "; ".join(i.describe() for i in issues.issues()))


def _duplicates(ids: Any) -> np.ndarray | None:
    """Boolean mask of later occurrences of an id, or None when there are none (fast path for
    strictly increasing integer ids)."""
    import pandas as pd

    a = np.asarray(ids)
    if a.size < 2:
        return None
    if a.dtype.kind in "iu":
        if bool((a[1:] > a[:-1]).all()):
            return None
        srt = np.sort(a)  # cheaper than hashing; the mask is only built when needed
        if not bool((srt[1:] == srt[:-1]).any()):
            return None
    d = pd.Series(a).duplicated(keep="first").to_numpy()
    return d if d.any() else None


# -- traffic mix -----------------------------------------------------------------------------
def check_traffic_mix(mix: Mapping[str, Any]) -> dict[str, float]:
    """``{slice: weight}`` -> float weights; a weight that is not a finite number (``nan``,
    ``inf``, text) is a UsageError naming the slice."""
    out: dict[str, float] = {}
    for k, v in mix.items():
        try:
            w = float(v)
        except (TypeError, ValueError):
            w = float("nan")
        if isinstance(v, bool) or not np.isfinite(w):
            raise UsageError(f"traffic mix: weight for '{k}' is not a finite number")
        out[str(k)] = w
    return out


def _apply_mix(acc: EvalAccumulator, res: EvalResult, mix: Mapping[str, float], src: str) -> None:
    mix = check_traffic_mix(mix)
    if any(w < 0 for w in mix.values()) or abs(sum(mix.values()) - 1.0) > 1e-3:
        raise UsageError(f"traffic mix {mix}: weights must be >= 0 and sum to 1 "
                         f"(they sum to {sum(mix.values()):.4g})")
    if not acc.slices:
        raise DataError(f"{src}: a traffic mix needs a 'slice' column")
    missing = [k for k, w in mix.items() if w > 0 and k not in acc.slices]
    if missing:
        raise DataError(f"{src}: traffic mix slice(s) {', '.join(missing)} not in the data "
                        f"(slices: {', '.join(sorted(acc.slices)[:20])})")
    parts = {k: acc.slices[k].ratio_parts() for k, w in mix.items() if w > 0}
    names = set.intersection(*(set(p) for p in parts.values())) if parts else set()
    for name in sorted(names):
        num = sum(mix[k] * p[name][0] / acc.slices[k].s["n"] for k, p in parts.items())
        den = sum(mix[k] * p[name][1] / acc.slices[k].s["n"] for k, p in parts.items())
        if den > 0:
            res.metrics[f"{name}[mix=traffic]"] = num / den
            res.stats[f"{name}[mix=traffic]"] = MetricValue(num / den)
    res.details["traffic_mix"] = mix


# -- evaluate --------------------------------------------------------------------------------
def _finish(acc: EvalAccumulator, src: str, found: list[DataIssue], notes: dict[str, str],
            traffic_mix: Mapping[str, float] | None, max_risk: float | None = None,
            risk_alpha: float = 0.05) -> EvalResult:
    res = acc.result()
    if max_risk is not None and {"correct", "confidence"} <= acc.has:
        g, exact = acc.selection_groups()
        rec = recommend_from_groups(g, max_risk, risk_alpha, exact=exact)
        res.details["threshold_recommendation"] = rec.to_dict()
    res.source = src
    res.issues = found
    res.details["data_issues"] = [i.to_dict() for i in found]
    res.details.update(notes)
    if traffic_mix:
        _apply_mix(acc, res, traffic_mix, src)
    return res


_TOKENS = {"input_tokens", "output_tokens"}


def _usable(columns: Iterable[str], src: str, pricing: Pricing | None) -> None:
    """At least one column gives a metric. Token counts give one (cost) only with pricing."""
    has = set(columns)
    other = has & {"confidence", "latency_ms", "cost_usd", "overridden", "fallback"}
    if pricing is not None:
        other |= has & _TOKENS
    if {"label", "prediction"} <= has:
        return
    if other:
        for a, b in (("label", "prediction"), ("prediction", "label")):
            if a in has:  # most likely a column named otherwise: say what is not measured
                import warnings

                warnings.warn(f"{src}: column '{a}' without '{b}': no accuracy, calibration "
                              f"or AURC (rename a column with --map or column_map)",
                              AipmWarning, stacklevel=4)
        return
    for a, b in (("label", "prediction"), ("prediction", "label")):
        if a in has:
            raise DataError(f"{src}: column '{b}' is missing (needed with '{a}' for accuracy)")
    tokens = ("; token counts give cost_usd only with pricing (pricing=..., or a guardrails "
              "file with pricing:)" if has & _TOKENS else "")
    raise DataError(f"{src}: no usable columns (need label+prediction, confidence, "
                    f"latency_ms, cost_usd, overridden, fallback, or input_tokens/output_tokens "
                    f"with pricing; got {', '.join(sorted(map(str, has))[:20]) or 'none'})"
                    f"{tokens}")


def _in_memory(df: Any, src: str, *, fallback_threshold: float, pricing: Pricing | None,
               drop: bool, keep_examples: bool, traffic_mix: Mapping[str, float] | None,
               slice_column: str, max_risk: float | None, risk_alpha: float) -> EvalResult:
    if slice_column != "slice" and slice_column in df.columns:
        if "slice" in df.columns:
            raise DataError(f"{src}: both 'slice' and slice column '{slice_column}' exist")
        df = df.rename(columns={slice_column: "slice"})
    _usable(df.columns, src, pricing)
    if len(df) == 0:
        raise DataError(f"{src}: the table has no rows")
    df = _plain_values(df, src)
    issues = _Issues()
    dup = _duplicates(df["example_id"].to_numpy()) if "example_id" in df.columns else None
    cols, keep, notes = _prepare(df, src, issues, fallback_threshold=fallback_threshold,
                                 pricing=pricing, row_offset=0, dup=dup, drop=drop)
    found = _raise_or_record(issues, src, drop)
    if keep is not None and not keep.any():
        raise _all_dropped(issues, src)
    acc = EvalAccumulator(fallback_threshold, exact_rows=None, cost_by_confidence=False)
    acc.update(cols)
    res = _finish(acc, src, found, notes, traffic_mix)
    if max_risk is not None and "correct" in cols and "confidence" in cols:
        rec = recommend_threshold(cols["correct"], cols["confidence"], max_risk, risk_alpha,
                                  cols.get("cost_usd"))
        res.details["threshold_recommendation"] = rec.to_dict()
    if keep_examples:
        ex = df if keep is None else df[keep]
        extra: dict[str, np.ndarray] = {k: cols[k] for k in ("correct", "fallback") if k in cols}
        if notes.get("cost_source") == "pricing":
            extra["cost_usd"] = cols["cost_usd"]
        if "latency_ms" in cols and df["latency_ms"].dtype.kind not in "iuf":
            extra["latency_ms"] = cols["latency_ms"]  # a duration, now in milliseconds
        ex = ex.assign(**extra)
        order = [c for c in tables.CANONICAL_COLUMNS if c in ex.columns]
        res.examples = ex[order + [c for c in ex.columns if c not in order]]
    return res


#: A text id that reads back as the same integer (no sign, no leading zero, fits in int64).
_PLAIN_INT = r"0|[1-9][0-9]{0,17}"


def _streamed_duplicates(path: str, cmap: Mapping[str, str], chunk_rows: int,
                         types: Mapping[str, str]) -> np.ndarray | None:
    """Duplicate-id mask for a streamed file. A first pass over the id column checks that
    integer ids are strictly increasing (nothing kept in memory; text ids count when every
    one is a plain decimal integer, which maps one-to-one to its value); otherwise a second
    pass collects the ids (64-bit hashes for non-integers; a collision between two different
    ids has probability ~n^2/2^65) and finds later occurrences by sorting."""
    import pandas as pd

    def plain_ints(s: Any) -> np.ndarray:
        if s.dtype.kind in "iu" or not pd.api.types.is_string_dtype(s.dtype):
            return s.to_numpy()
        ok = s.str.fullmatch(_PLAIN_INT)
        if not bool(ok.fillna(False).all()):
            return s.to_numpy()
        return s.astype(np.int64).to_numpy()

    last = None
    monotone = True
    for c in tables.iter_chunks(path, cmap, chunk_rows=chunk_rows, columns=["example_id"],
                                types=types):
        a = plain_ints(_plain_values(c, path)["example_id"])
        if a.dtype.kind not in "iu" or (a.size and (
                (last is not None and a[0] <= last) or not bool((a[1:] > a[:-1]).all()))):
            monotone = False
            break
        if a.size:
            last = a[-1]
    if monotone:
        return None

    def as_int(s: Any) -> np.ndarray:
        if s.dtype.kind in "iu":
            return s.to_numpy(dtype=np.int64)
        s = _plain_values(s.to_frame("example_id"), path)["example_id"]
        return pd.util.hash_array(s.astype(str).to_numpy()).view(np.int64)

    chunks = tables.iter_chunks(path, cmap, chunk_rows=chunk_rows, columns=["example_id"],
                                types=types)
    rows = tables.file_rows(path)
    if rows is not None:  # Parquet: fill one array, no list + concatenate copy
        ids = np.empty(rows, dtype=np.int64)
        at = 0
        for c in chunks:
            ids[at:at + len(c)] = as_int(c["example_id"])
            at += len(c)
    else:
        ids = np.concatenate([as_int(c["example_id"]) for c in chunks])
    srt = np.sort(ids)
    if not bool((srt[1:] == srt[:-1]).any()):
        return None
    del srt  # duplicates exist (rare): find which rows, first occurrence kept
    order = np.argsort(ids, kind="stable")
    srt = ids[order]
    del ids
    later = np.flatnonzero(srt[1:] == srt[:-1]) + 1
    dup = np.zeros(srt.size, dtype=bool)
    dup[order[later]] = True  # stable sort: the first occurrence comes first
    return dup


def _streamed(path: str, column_map: Mapping[str, str] | None, **kw: Any) -> EvalResult:
    """Evaluate a file chunk by chunk. A CSV/JSONL column whose type (inferred from the first
    block) a later block does not fit is widened as the whole-file reader would (int to float,
    anything to string), and the evaluation starts over: at most twice per column."""
    types: dict[str, str] = {}
    while True:
        try:
            return _streamed_once(path, column_map, types=types, **kw)
        except ColumnTypeChanged as e:
            if types.get(e.column) == e.widen:  # no progress: report it
                raise DataError(str(e)) from None
            types[e.column] = e.widen


def _streamed_once(path: str, column_map: Mapping[str, str] | None, *, types: dict[str, str],
                   fallback_threshold: float, pricing: Pricing | None, drop: bool,
                   chunk_rows: int, traffic_mix: Mapping[str, float] | None,
                   slice_column: str, max_risk: float | None, risk_alpha: float) -> EvalResult:
    cmap = dict(column_map or {})
    src_cols = tables.file_columns(path)
    renames = tables.check_column_map(src_cols, cmap, path)
    final = [renames.get(c, c) for c in src_cols]
    if slice_column != "slice" and slice_column in final:  # as in memory: use it as 'slice'
        if "slice" in final:
            raise DataError(f"{path}: both 'slice' and slice column '{slice_column}' exist")
        cmap[src_cols[final.index(slice_column)]] = "slice"
        renames = tables.check_column_map(src_cols, cmap, path)
        final = [renames.get(c, c) for c in src_cols]
    _usable(final, path, pricing)
    dup_all = None
    if "example_id" in final:
        dup_all = _streamed_duplicates(path, cmap, chunk_rows, types)
    issues = _Issues()
    acc = EvalAccumulator(fallback_threshold, exact_rows=STREAM_EXACT_ROWS,
                          aurc_exact_rows=STREAM_EXACT_ROWS)
    notes: dict[str, str] = {}
    offset = kept = 0
    for df in tables.iter_chunks(path, cmap, chunk_rows=chunk_rows, types=types):
        df = _plain_values(df, path)
        n = len(df)
        dup = None if dup_all is None else dup_all[offset:offset + n]
        cols, keep, nt = _prepare(df, path, issues, fallback_threshold=fallback_threshold,
                                  pricing=pricing, row_offset=offset, dup=dup, drop=drop)
        notes.update(nt)
        offset += n
        kept += n if keep is None else int(np.count_nonzero(keep))
        if not issues.found or drop:
            acc.update(cols)
    found = _raise_or_record(issues, path, drop)
    if offset == 0:
        raise DataError(f"{path}: the table has no rows")
    if kept == 0:
        raise _all_dropped(issues, path)
    return _finish(acc, path, found, notes, traffic_mix, max_risk, risk_alpha)


def evaluate(table: Any, *, fallback_threshold: float = 0.5,
             column_map: Mapping[str, str] | None = None, slice_column: str = "slice",
             traffic_mix: Mapping[str, float] | None = None, pricing: Pricing | None = None,
             drop_bad_rows: bool = False, keep_examples: bool = True,
             chunk_rows: int | None = None, max_risk: float | None = None,
             risk_alpha: float = 0.05) -> EvalResult:
    """Per-example table -> :class:`EvalResult` with every DESIGN §4 metric its columns allow.

    ``table``: a pandas DataFrame, a pyarrow Table, or a path to .csv/.parquet/.jsonl.
    ``column_map``: ``{their_column: canonical}``. ``slice_column``: the column whose values
    give per-slice metrics ``accuracy[slice=VALUE]`` (default ``slice``). ``traffic_mix``:
    ``{slice_value: weight}`` summing to 1; rate and mean metrics are reweighted to it and
    published as ``<metric>[mix=traffic]``: per slice ``s`` with ``n_s`` rows, a ratio
    metric ``num/den`` becomes ``sum_s w_s num_s/n_s / sum_s w_s den_s/n_s`` (plain rates
    reduce to ``sum_s w_s rate_s``). ``pricing``: derive ``cost_usd`` from token counts.
    ``drop_bad_rows``: drop and report bad rows instead of raising. ``keep_examples``: keep the
    per-example table (never in streaming mode). ``chunk_rows``: force streaming of a file with
    this chunk size (default: automatic, see the module docstring). ``max_risk``: also put
    a fallback-threshold recommendation (:mod:`aipm_tracking.selective`: Learn-then-Test over
    the thresholds, exact binomial tests, the selective risk of the returned threshold above
    ``max_risk`` with probability at most ``risk_alpha``) in
    ``details["threshold_recommendation"]``; exact in
    memory, on the 1/61,440 confidence grid when streaming.
    """
    if not 0.0 <= float(fallback_threshold) <= 1.0:
        raise UsageError(f"fallback_threshold must be in [0, 1], got {fallback_threshold}")
    if traffic_mix:
        check_traffic_mix(traffic_mix)  # before reading: a bad --traffic-mix is a usage error
    if pricing is not None and not isinstance(pricing, Pricing):
        pricing = Pricing(**dict(pricing))
    if isinstance(table, (str, os.PathLike)):
        path = os.fspath(table)
        tables.file_format(path)
        if chunk_rows is not None or tables.should_stream(path):
            return _streamed(path, column_map, fallback_threshold=fallback_threshold,
                             pricing=pricing, drop=drop_bad_rows,
                             chunk_rows=chunk_rows or tables.DEFAULT_CHUNK_ROWS,
                             traffic_mix=traffic_mix, slice_column=slice_column,
                             max_risk=max_risk, risk_alpha=risk_alpha)
    df, src = tables.load_table(table, column_map, text_columns=(
        (slice_column,) if slice_column != "slice" else ()))
    return _in_memory(df, src, fallback_threshold=float(fallback_threshold), pricing=pricing,
                      drop=drop_bad_rows, keep_examples=keep_examples,
                      traffic_mix=traffic_mix, slice_column=slice_column,
                      max_risk=max_risk, risk_alpha=risk_alpha)
