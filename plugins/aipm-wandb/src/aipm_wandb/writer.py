"""Writing to W&B with the real SDK: runs, review tables, plots, comparisons and alerts.

``wandb.init`` respects ``WANDB_MODE`` (``offline`` writes a run directory that
``wandb sync`` uploads later) unless ``BackendOptions.extra["mode"]`` says otherwise.
Runs are created with ``reinit="create_new"`` so a user's own active run is untouched.
A copied run's series (:func:`log_history`) go as the Tracker streams them: one
``run.log(row, step=s)`` per step, steps in increasing order, with the row's time.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aipm_tracking.errors import BackendError, DataError
from aipm_tracking.fsutil import atomic_write

from .convert import (
    COMPARISON_JSON,
    EXAMPLES_PARQUET,
    RUN_JSON,
    parse_project,
    record_config,
    record_json,
    record_summary,
    record_tags,
)
from .offline import SEGMENTS_FILE
from .scrub import error_line, remember_url, scrub_message

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from aipm_tracking.schema import Comparison, MetricPoint, RunRecord

EXAMPLES_KEY = "aipm/examples"
#: Beside an offline run's ``.wandb`` log: where the run goes (``ENTITY/PROJECT``) and its
#: name, written when a streaming run starts, so ``aipm sync`` can reopen a run that was
#: killed before wandb-core wrote its first block (the log then names no project).
TARGET_FILE = "aipm-target.json"
#: Beside an offline copy's ``.wandb`` log (``aipm push``/``pull``): the run it copies and
#: where it went, written once the copy is complete, so pushing the same run again finds it.
COPY_FILE = "aipm-copy.json"
#: The columns of the ``aipm/guardrails`` table (the fields of ``details["guardrails"]``).
GUARDRAIL_COLUMNS = ["metric", "threshold", "value", "verdict", "severity", "reason"]


def _wandb() -> Any:
    """The wandb module, typed loosely (its stubs are narrower than what it accepts)."""
    import importlib

    return importlib.import_module("wandb")


def _settings(wandb: Any, extra: Mapping[str, Any] | None = None) -> Any:
    """Quiet, lean run settings. The server URL is read now (wandb keeps the first one it
    saw in this process in its global settings)."""
    kw: dict[str, Any] = {}
    url = (extra or {}).get("base_url") or os.environ.get("WANDB_BASE_URL")
    if url:
        kw["base_url"] = url
        remember_url(url)  # its credentials are masked in every later message
    return wandb.Settings(silent=True, console="off", save_code=False, disable_git=True,
                          x_disable_stats=True, x_disable_meta=True,
                          disable_job_creation=True, **kw)


def init_run(target: str | None, *, name: str, job_type: str, config: dict[str, Any],
             tags: list[str], mode: str | None = None, run_dir: str | None = None,
             run_id: str | None = None) -> Any:
    """Start a W&B run under ``ENTITY/PROJECT`` (``target``); BackendError on failure."""
    wandb = _wandb()

    entity, project = parse_project(target)
    # wandb reads WANDB_MODE / WANDB_DIR once per process (its global settings); read them
    # at each call so a changed environment is respected
    kw: dict[str, Any] = {}
    mode = mode or os.environ.get("WANDB_MODE") or None
    if mode == "disabled":
        from aipm_tracking.errors import UsageError

        raise UsageError("WANDB_MODE=disabled: W&B would store nothing; unset it or use "
                         "WANDB_MODE=offline")
    run_dir = run_dir or os.environ.get("WANDB_DIR") or None
    if mode:
        kw["mode"] = mode
    if run_dir:
        os.makedirs(run_dir, exist_ok=True)
        kw["dir"] = run_dir
    if run_id:
        kw["id"] = run_id
        kw["resume"] = "allow"
    try:
        return wandb.init(entity=entity, project=project, name=name, job_type=job_type,
                          config=config, tags=tags, reinit="create_new",
                          settings=_settings(wandb), **kw)
    except Exception as e:  # noqa: BLE001 - wandb raises many types (UsageError, CommError)
        msg = error_line(e)
        hint = ""
        if "api_key" in msg.lower() or "login" in msg.lower():
            hint = " (set WANDB_API_KEY, run `wandb login`, or set WANDB_MODE=offline)"
        raise BackendError(scrub_message(
            f"W&B could not start a run in '{target}': {msg}{hint}")) from None


def is_offline(run: Any) -> bool:
    mode = str(getattr(run.settings, "mode", "") or "")
    return mode in ("offline", "dryrun") or bool(getattr(run, "offline", False))


def run_ref(run: Any) -> str:
    """``wandb:ENTITY/PROJECT/ID`` online; ``wandb:RUN_DIR`` (a readable local path) offline."""
    if is_offline(run):
        return "wandb:" + os.path.dirname(os.path.abspath(run.dir))
    return f"wandb:{run.entity}/{run.project}/{run.id}"


def finish(run: Any, exit_code: int = 0, timeout_s: float = 60.0) -> None:
    """``run.finish`` and, offline, wait until wandb-core has written the run's exit record.

    wandb-core writes the ``.wandb`` log asynchronously: ``finish`` can return before the
    last records reach the file, so an immediate read-back would miss them.
    """
    import time

    offline = is_offline(run)
    run_dir = os.path.dirname(os.path.abspath(run.dir))
    run.finish(exit_code=exit_code)
    if not offline:
        return
    from .offline import has_exit_record

    deadline = time.monotonic() + timeout_s
    while not has_exit_record(run_dir):
        if time.monotonic() > deadline:
            import warnings

            from aipm_tracking.errors import AipmWarning

            warnings.warn(f"W&B run log in '{run_dir}' has no exit record after "
                          f"{timeout_s:.0f}s", AipmWarning, stacklevel=2)
            return
        time.sleep(0.02)


def save_file(run: Any, rel: str, data: bytes) -> None:
    """Write ``data`` to ``run.dir/rel`` atomically and register it for upload now."""
    path = os.path.join(run.dir, rel)
    atomic_write(path, data, make_dirs=True)
    run.save(path, base_path=run.dir, policy="now")


def _changed_column(examples: pd.DataFrame, baseline: pd.DataFrame | None) -> pd.DataFrame:
    """Add ``baseline_correct``, ``changed_outcome`` and ``change`` (fixed/broken/same)."""
    import numpy as np
    import pandas as pd

    if (baseline is None or "example_id" not in examples.columns
            or "example_id" not in baseline.columns or "correct" not in examples.columns
            or "correct" not in baseline.columns):
        return examples
    base = pd.Series(baseline["correct"].to_numpy(dtype=bool),
                     index=baseline["example_id"].astype(str).to_numpy())
    base = base[~base.index.duplicated(keep="first")]
    key = examples["example_id"].astype(str)
    b = key.map(base)
    known = b.notna().to_numpy()
    b_ok = b.fillna(False).to_numpy(dtype=bool)
    c_ok = examples["correct"].to_numpy(dtype=bool)
    change = np.where(~known, "not in baseline",
                      np.where(b_ok == c_ok, "same", np.where(c_ok, "fixed", "broken")))
    out = examples.copy()
    out["baseline_correct"] = pd.array(np.where(known, b_ok, False), dtype="boolean")
    out.loc[~known, "baseline_correct"] = pd.NA
    out["changed_outcome"] = pd.array(known & (b_ok != c_ok), dtype="boolean")
    out.loc[~known, "changed_outcome"] = pd.NA
    out["change"] = change
    return out


def _table(wandb: Any, df: pd.DataFrame) -> Any:
    import pandas as pd

    clean = df.astype(object).where(pd.notna(df), None)
    return wandb.Table(columns=[str(c) for c in df.columns], data=clean.values.tolist())


def split_parts(n_rows: int, max_rows: int) -> list[tuple[int, int]]:
    """Row ranges ``[(start, stop)]`` of at most ``max_rows`` rows covering all ``n_rows``."""
    if max_rows <= 0:
        raise ValueError("max_rows must be positive")
    return [(i, min(i + max_rows, n_rows)) for i in range(0, n_rows, max_rows)] or [(0, 0)]


def log_examples(run: Any, examples: pd.DataFrame, baseline: pd.DataFrame | None,
                 row_time: Mapping[str, float] | None = None) -> int:
    """Log the per-example table, split into parts of ``wandb.Table.MAX_ROWS``; return #parts.

    One part: key ``aipm/examples``; several: ``aipm/examples_part001`` … (never truncated).
    ``row_time``: ``{"_timestamp": t}`` keeps the time of the history row they join.
    """
    wandb = _wandb()

    t = dict(row_time or {})
    df = _changed_column(examples, baseline)
    ranges = split_parts(len(df), int(wandb.Table.MAX_ROWS))
    if len(ranges) == 1:
        run.log({EXAMPLES_KEY: _table(wandb, df), **t}, commit=False)
    else:
        width = max(3, len(str(len(ranges))))
        for i, (a, b) in enumerate(ranges, 1):
            run.log({f"{EXAMPLES_KEY}_part{i:0{width}d}": _table(wandb, df.iloc[a:b]), **t},
                    commit=False)
    run.summary["aipm/examples_rows"] = len(df)
    run.summary["aipm/examples_parts"] = len(ranges)
    return len(ranges)


def guardrail_rows(details: Mapping[str, Any]) -> list[list[Any]]:
    """Rows (:data:`GUARDRAIL_COLUMNS`: metric, threshold, value, verdict, severity, reason)
    from ``details["guardrails"]`` if present; a field a row lacks is ``""``."""
    raw = details.get("guardrails") or details.get("guardrail_results") or []
    rows = []
    if isinstance(raw, list):
        for g in raw:
            if isinstance(g, dict) and "metric" in g:
                value = g.get("value", g.get("candidate"))
                rows.append([str(g["metric"]), str(g.get("threshold", "")),
                             None if value is None else float(value), str(g.get("verdict", "")),
                             str(g.get("severity") or ""), str(g.get("reason") or "")])
    return rows


def log_review(run: Any, record: RunRecord, baseline: pd.DataFrame | None,
               row_time: float | None = None) -> None:
    """Summary, per-example table, guardrail table, confusion matrix, reliability diagram.

    They join the current history row (the last step of a run with series); ``row_time``
    keeps that row's time (wandb stamps each ``log`` call with the time of the call)."""
    wandb = _wandb()

    t = {} if row_time is None else {"_timestamp": float(row_time)}
    details = record.details or {}
    if record.examples is not None:
        log_examples(run, record.examples, baseline, t)
    rows = guardrail_rows(details)
    if rows:
        run.log({"aipm/guardrails": wandb.Table(columns=GUARDRAIL_COLUMNS, data=rows), **t},
                commit=False)
    conf = details.get("confusion")
    if isinstance(conf, dict) and conf.get("labels") and conf.get("matrix"):
        labels = [str(x) for x in conf["labels"]]
        matrix = conf["matrix"]
        data = [[labels[i], labels[j], int(matrix[i][j])]
                for i in range(len(labels)) for j in range(len(labels))]
        # the table and Vega spec wandb.plot.confusion_matrix builds, from precomputed counts
        run.log({"aipm/confusion_matrix": wandb.plot.plot_table(
            "wandb/confusion_matrix/v1",
            wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=data),
            {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
            {"title": "Confusion matrix"}), **t}, commit=False)
    rel = details.get("reliability")
    if isinstance(rel, dict) and rel.get("count"):
        acc, conf_b = rel.get("accuracy") or [], rel.get("confidence") or []
        pts = [[i, conf_b[i], acc[i], int(rel["count"][i])]
               for i in range(len(rel["count"]))
               if i < len(acc) and i < len(conf_b) and acc[i] is not None
               and conf_b[i] is not None]
        if pts:
            tbl = wandb.Table(columns=["bin", "confidence", "accuracy", "count"], data=pts)
            run.log({"aipm/reliability": wandb.plot.line(
                tbl, "confidence", "accuracy", title="Reliability diagram"), **t},
                commit=False)
    run.log(t, commit=True)
    for k, v in record_summary(record).items():
        run.summary[k] = v
    if record.guardrails_hash:
        run.summary["aipm/guardrails_hash"] = record.guardrails_hash


def write_record(run: Any, record: RunRecord, baseline: pd.DataFrame | None,
                 row_time: float | None = None) -> None:
    """Everything of ``record`` into the open ``run``; ``aipm/run.json`` last, as the mark
    of a complete write (a run without it is read from what W&B itself holds).
    ``row_time``: the time of the history row the review tables join (see
    :func:`log_review`)."""
    doc = record_json(record)
    doc["ref"] = run_ref(run)
    doc["run_id"] = run.id
    run_json = json.dumps(doc, allow_nan=False).encode()  # fails early on bad values
    if record.examples is not None:
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pa.Table.from_pandas(record.examples, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as e:
            raise DataError(f"per-example table cannot be stored as Parquet: {e}") from None
        buf = io.BytesIO()
        pq.write_table(table, buf)
        save_file(run, EXAMPLES_PARQUET, buf.getvalue())
    log_review(run, record, baseline, row_time)
    save_file(run, RUN_JSON, run_json)


def new_record_run(record: RunRecord, target: str | None, extra: Mapping[str, Any]) -> Any:
    return init_run(target, name=record.name, job_type="aipm-eval",
                    config=record_config(record), tags=record_tags(record),
                    mode=extra.get("mode"), run_dir=extra.get("dir"))


def save_target(run: Any, target: str | None, name: str) -> None:
    """Offline: write :data:`TARGET_FILE` beside the run's log (at once, not buffered)."""
    if not is_offline(run) or not target:
        return
    run_dir = os.path.dirname(os.path.abspath(run.dir))
    doc = {"target": target.strip().strip("/"), "name": name, "run_id": run.id}
    atomic_write(os.path.join(run_dir, TARGET_FILE), json.dumps(doc).encode())


def read_target(run_dir: str) -> dict[str, str]:
    """What :func:`save_target` wrote for ``run_dir`` (``{}`` when absent or unreadable)."""
    try:
        with open(os.path.join(run_dir, TARGET_FILE), encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: v for k, v in doc.items() if isinstance(k, str) and isinstance(v, str)}


def resume_run(ref: str, extra: Mapping[str, Any]) -> Any:
    """Reopen the run behind ``ref`` in this process (``aipm sync`` replaying a spool).

    ``wandb:ENTITY/PROJECT/ID`` resumes the server run (``resume="allow"``). A local
    run directory cannot be appended to in place: a new offline run with the same id (a
    resumed segment) is written under ``resumed-ID-MS/`` beside it, which ``wandb sync``
    uploads into the same W&B run, and recorded in the run's :data:`SEGMENTS_FILE` before
    wandb starts it, so reading the run directory (the ref the user holds) merges it
    (:func:`aipm_wandb.offline.read_whole_run`). Its ``ENTITY/PROJECT`` comes from the
    run's log (or an earlier segment), else (a run killed before wandb-core wrote
    anything) from :data:`TARGET_FILE`, written when the run started.
    """
    import time

    from .convert import parse_run_path
    from .offline import add_segment, read_whole_run

    loc = ref.split(":", 1)[1] if ref.startswith("wandb:") else ref
    path = os.path.expanduser(loc)
    if os.path.exists(path):
        lr = read_whole_run(path)
        side = read_target(lr.run_dir)
        if lr.project:
            target = f"{lr.entity}/{lr.project}" if lr.entity else lr.project
        else:
            target = side.get("target", "")
        if not target:
            from aipm_tracking.errors import InvalidReferenceError

            raise InvalidReferenceError(
                f"cannot reopen W&B run '{ref}': its log names no project (the process "
                f"ended before wandb wrote it) and '{TARGET_FILE}' is missing beside it; "
                f"`wandb sync --project P --entity E {lr.run_dir}` uploads it")
        # beside the original, never in it (same id + same second = same directory name)
        parent = os.path.join(os.path.dirname(lr.run_dir),
                              f"resumed-{lr.run_id}-{time.time_ns() // 1_000_000}")
        import warnings

        from aipm_tracking.errors import AipmWarning

        try:  # recorded first: a segment the run does not name would never be read with it
            add_segment(lr.run_dir, parent)
        except (OSError, ValueError) as err:
            raise BackendError(f"cannot record a resumed segment of W&B run '{lr.run_dir}' "
                               f"in its '{SEGMENTS_FILE}': {err}") from None
        warnings.warn(f"W&B run directory '{lr.run_dir}' cannot be appended to; the rest of "
                      f"the run goes to a new offline run with the same id under '{parent}' "
                      f"(read with the run through its reference; `wandb sync` both)",
                      AipmWarning, stacklevel=3)
        return init_run(target, name=lr.display_name or side.get("name") or lr.run_id,
                        job_type="aipm-eval",
                        config={}, tags=[], mode="offline", run_dir=parent, run_id=lr.run_id)
    parts = parse_run_path(loc)
    if parts is None:
        from aipm_tracking.errors import InvalidReferenceError

        raise InvalidReferenceError(f"cannot reopen W&B run '{ref}': not a run directory "
                                    f"or ENTITY/PROJECT/RUN_ID")
    e, p, r = parts
    return init_run(f"{e}/{p}", name=r, job_type="aipm-eval", config={}, tags=[],
                    mode=extra.get("mode"), run_dir=extra.get("dir"), run_id=r)


def comparison_rows(cmp: Comparison) -> list[list[Any]]:
    return [[r.metric, r.slice, r.direction, r.baseline, r.candidate, r.delta, r.delta_rel,
             None if r.ci is None else r.ci[0], None if r.ci is None else r.ci[1],
             r.p_value, r.test, r.threshold, r.severity, r.verdict, r.reason]
            for r in cmp.metrics]


def row_label(metric: str, slice_: str | None) -> str:
    """A comparison row's name: ``metric`` with its slice, once. A per-slice guardrail's
    row already names it (``accuracy[slice=de]``, slice ``slice=de``); a row whose metric
    does not is given ``[slice]``."""
    if not slice_ or metric.endswith(f"[{slice_}]"):
        return metric
    return f"{metric}[{slice_}]"


COMPARISON_COLUMNS = ["metric", "slice", "direction", "baseline", "candidate", "delta",
                      "delta_rel", "ci_low", "ci_high", "p_value", "test", "threshold",
                      "severity", "verdict", "reason"]


def write_comparison(cmp: Comparison, target: str | None, extra: Mapping[str, Any]) -> str:
    """A run holding the comparison table, the JSON and, when it blocks, a W&B alert."""
    import math

    wandb = _wandb()

    b, c = cmp.baseline, cmp.candidate
    name = f"compare {b.name} vs {c.name}"[:128]
    config = {"aipm": {"schema": "aipm.comparison/1", "baseline": b.ref, "candidate": c.ref,
                       "gate": cmp.gate, "alpha": cmp.alpha,
                       "guardrails_name": cmp.guardrails_name,
                       "guardrails_hash": cmp.guardrails_hash}}
    run = init_run(target, name=name, job_type="aipm-compare", config=config,
                   tags=["aipm", "aipm-compare"], mode=extra.get("mode"),
                   run_dir=extra.get("dir"))
    try:
        ref = run_ref(run)
        save_file(run, COMPARISON_JSON, cmp.to_json().encode())

        def clean(v: Any) -> Any:
            return None if isinstance(v, float) and not math.isfinite(v) else v

        rows = [[clean(v) for v in row] for row in comparison_rows(cmp)]
        run.log({"aipm/comparison": wandb.Table(columns=COMPARISON_COLUMNS, data=rows)})
        run.summary["aipm/verdict"] = cmp.verdict
        run.summary["aipm/exit_code"] = cmp.exit_code
        if cmp.exit_code == 1:
            blocking = [r for r in cmp.metrics if r.blocking]
            lines = [f"{row_label(r.metric, r.slice)}: {r.verdict} "
                     f"({r.baseline} -> {r.candidate}; {r.reason})" for r in blocking]
            run.alert(title=f"aipm: {c.name} blocked against {b.name}"[:200],
                      text="\n".join(lines)[:4000] or "a guardrail blocks",
                      level=wandb.AlertLevel.ERROR)
    except BaseException:
        finish(run, 1)
        raise
    finish(run, 0)
    return ref


def log_history(run: Any, history: Sequence[MetricPoint]
                ) -> tuple[list[MetricPoint], float | None]:
    """A copied run's series into the open ``run``, as :meth:`WandbBackend.log_points`
    streams them: points grouped by step, one ``run.log(row, step=s)`` per step in
    increasing order, values as they are (NaN, ±inf), the row's ``_timestamp`` the latest
    time of its points (W&B keeps one time per step). Returns the points W&B cannot hold
    (a negative step), which are not sent, and the last row's time (for
    :func:`write_record`: that row stays open until then)."""
    rows: dict[int, dict[str, Any]] = defaultdict(dict)
    dropped: list[MetricPoint] = []
    for p in history:
        step = int(p.step)
        if step < 0:
            dropped.append(p)
            continue
        row = rows[step]
        row[str(p.key)] = float(p.value)
        ts = float(p.timestamp)
        if ts > row.get("_timestamp", float("-inf")):
            row["_timestamp"] = ts
    last: float | None = None
    for step in sorted(rows):
        row = rows.pop(step)
        last = row["_timestamp"]
        run.log(row, step=step)
    return dropped, last


def save_copy(run: Any, source_ref: str, target: str | None) -> None:
    """Offline: write :data:`COPY_FILE` beside the finished copy's log (a server run is
    found by its ``aipm-source`` tag instead)."""
    if not is_offline(run):
        return
    run_dir = os.path.dirname(os.path.abspath(run.dir))
    doc = {"source_ref": source_ref, "target": (target or "").strip().strip("/"),
           "run_id": run.id}
    atomic_write(os.path.join(run_dir, COPY_FILE), json.dumps(doc).encode())


def run_mode(extra: Mapping[str, Any]) -> str:
    """The mode ``wandb.init`` will run in: ``extra["mode"]``, ``WANDB_MODE``, else wandb's
    own settings (its settings files; ``online`` by default)."""
    mode = extra.get("mode") or os.environ.get("WANDB_MODE")
    if not mode:
        try:
            from wandb.sdk import wandb_setup

            mode = str(wandb_setup.singleton().settings.mode or "online")
        except Exception:  # noqa: BLE001 - wandb decides at init; assume its default
            mode = "online"
    return str(mode)


def wandb_dirs(extra: Mapping[str, Any]) -> list[str]:
    """Where ``wandb.init`` puts run directories (``DIR/wandb`` or ``DIR/.wandb``, DIR =
    ``extra["dir"]``, ``WANDB_DIR`` or the working directory)."""
    root = os.path.abspath(os.path.expanduser(
        extra.get("dir") or os.environ.get("WANDB_DIR") or os.getcwd()))
    return [os.path.join(root, "wandb"), os.path.join(root, ".wandb")]


def find_offline_copy(extra: Mapping[str, Any], source_ref: str,
                      target: str | None) -> str | None:
    """``wandb:RUN_DIR`` of a complete offline copy of ``source_ref`` for ``target`` (its
    :data:`COPY_FILE` and ``aipm/run.json`` there), newest first; None when there is none."""
    import glob

    want = (target or "").strip().strip("/")
    found: list[tuple[float, str]] = []
    for wdir in wandb_dirs(extra):
        for marker in glob.glob(os.path.join(glob.escape(wdir), "*run-*", COPY_FILE)):
            run_dir = os.path.dirname(marker)
            try:
                with open(marker, encoding="utf-8") as fh:
                    doc = json.load(fh)
                mtime = os.path.getmtime(marker)
            except (OSError, ValueError):
                continue
            if (isinstance(doc, dict) and doc.get("source_ref") == source_ref
                    and doc.get("target") == want
                    and os.path.isfile(os.path.join(run_dir, "files", RUN_JSON))):
                found.append((mtime, run_dir))
    if not found:
        return None
    return "wandb:" + max(found)[1]

