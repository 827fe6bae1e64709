"""Read a local W&B run directory (``wandb/offline-run-…`` or ``wandb/run-…``) from its files.

Offline runs have no ``wandb-summary.json`` (wandb-core writes it only when syncing), so
config, history, summary, alerts, files and table references come from the run's
``.wandb`` transaction log, parsed as ``wandb.proto.wandb_internal_pb2.Record``; table
contents come from the JSON files under ``files/media/table/``. A truncated or corrupt log
yields every intact record before the damage plus an :class:`AipmWarning`.

A run that ``aipm sync`` continued after its process was killed has *resumed segments*:
offline runs with the same id that wandb wrote under ``resumed-ID-MS/`` beside the run
directory (a run directory cannot be appended to), listed in order in the run's
:data:`SEGMENTS_FILE`. :func:`read_whole_run` reads the run with its segments merged.
"""

from __future__ import annotations

import glob
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

from aipm_tracking.errors import AipmWarning, DataError, RunNotFoundError

from .leveldb import LogScan, read_records

#: In a run directory that ``aipm sync`` continued: ``{"segments": ["resumed-ID-MS", …]}``,
#: the folders (relative to the run directory's parent, in the order they were written)
#: whose ``wandb/`` holds a resumed segment of the run.
SEGMENTS_FILE = "aipm-segments.json"


@dataclass
class LocalRun:
    """Everything read from one local run directory."""

    run_dir: str
    log_path: str
    run_id: str = ""
    entity: str = ""
    project: str = ""
    display_name: str = ""
    tags: list[str] = field(default_factory=list)
    job_type: str = ""
    start_time: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    record_types: dict[str, int] = field(default_factory=dict)
    exit_code: int | None = None
    finished: bool = False
    scan: LogScan | None = None
    #: the run directories of its resumed segments merged in, oldest first
    segments: list[str] = field(default_factory=list)

    @property
    def files_dir(self) -> str:
        return os.path.join(self.run_dir, "files")

    def find_file(self, rel: str) -> str | None:
        """``files/REL`` of the newest segment (else the run itself) that holds it."""
        for d in [*reversed(self.segments), self.run_dir]:
            path = os.path.join(d, "files", rel)
            if os.path.isfile(path):
                return path
        return None

    def table_dir(self, ref: dict[str, Any]) -> str:
        """The run directory whose ``files/`` holds the table ``ref`` names (a table logged
        by a resumed segment lies in that segment's directory)."""
        rel = str(ref.get("path") or "")
        for d in reversed(self.segments):
            if rel and os.path.isfile(os.path.join(d, "files", rel)):
                return d
        return self.run_dir

    @property
    def status(self) -> str:
        if self.exit_code is None:
            return "incomplete"
        return "finished" if self.exit_code == 0 else "failed"


def find_log(path: str) -> tuple[str, str]:
    """``path`` (a run dir, its ``.wandb`` file or a ``wandb/`` dir with ``latest-run``)
    -> ``(run_dir, log_path)``. ``RunNotFoundError`` when there is no ``.wandb`` file."""
    p = os.path.abspath(os.path.expanduser(path))
    if os.path.isfile(p) and p.endswith(".wandb"):
        return os.path.dirname(p), p
    if os.path.isdir(p):
        for cand in (p, os.path.join(p, "latest-run")):
            logs = sorted(glob.glob(os.path.join(glob.escape(cand), "run-*.wandb")))
            if logs:
                return os.path.realpath(cand), os.path.realpath(logs[-1])
    raise RunNotFoundError(f"no W&B run log (run-*.wandb) found at '{path}'")


def is_local_run(path: str) -> bool:
    try:
        find_log(path)
    except RunNotFoundError:
        return False
    return True


def has_exit_record(run_dir: str) -> bool:
    """True once the run's log holds an ``exit`` record (the run's end was written)."""
    from wandb.proto import wandb_internal_pb2 as pb

    try:
        _, log_path = find_log(run_dir)
        with open(log_path, "rb") as fh:
            data = fh.read()
    except (RunNotFoundError, OSError):
        return False
    tail: list[bytes] = []
    for payload in read_records(data, LogScan(path=log_path)):  # framing only: cheap
        tail.append(payload)
        if len(tail) > 16:
            del tail[0]
    rec = pb.Record()  # type: ignore[attr-defined]
    for payload in reversed(tail):  # the exit record is among the last few
        try:
            rec.ParseFromString(payload)
        except Exception:  # noqa: BLE001
            return False
        if rec.WhichOneof("record_type") == "exit":
            return True
    return False


def segment_dirs(run_dir: str) -> list[str]:
    """The run directories of ``run_dir``'s resumed segments (:data:`SEGMENTS_FILE`), in
    the order they were written; an entry whose run directory is missing (a sync killed
    before wandb created it) or that points outside the run's ``wandb/`` folder is left
    out."""
    parent = os.path.dirname(os.path.abspath(run_dir))
    try:
        with open(os.path.join(run_dir, SEGMENTS_FILE), encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return []
    entries = doc.get("segments") if isinstance(doc, dict) else None
    out: list[str] = []
    for rel in entries if isinstance(entries, list) else []:
        if not isinstance(rel, str) or not rel or os.path.isabs(rel):
            continue
        base = os.path.realpath(os.path.join(parent, rel))
        if os.path.dirname(base) != os.path.realpath(parent):
            continue  # only folders beside the run directory
        for wdir in (os.path.join(base, "wandb"), os.path.join(base, ".wandb")):
            runs = sorted(d for d in glob.glob(os.path.join(glob.escape(wdir), "*run-*"))
                          if os.path.isdir(d) and not os.path.islink(d))
            if runs:
                out.append(runs[-1])
                break
    return out


def add_segment(run_dir: str, folder: str) -> None:
    """Record ``folder`` (beside ``run_dir``) as the next resumed segment of the run."""
    from aipm_tracking.fsutil import atomic_write

    path = os.path.join(run_dir, SEGMENTS_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        doc = {}
    entries = doc.get("segments") if isinstance(doc, dict) else None
    entries = [e for e in entries if isinstance(e, str)] if isinstance(entries, list) else []
    entries.append(os.path.relpath(folder, os.path.dirname(os.path.abspath(run_dir))))
    atomic_write(path, json.dumps({"segments": entries}).encode())


def read_whole_run(path: str) -> LocalRun:
    """:func:`read_local_run` with the run's resumed segments (:func:`segment_dirs`) merged
    in order: their history rows after the run's (a step already there is updated, not
    repeated), summary, config, alerts and files on top, and the run's end (exit code) is
    the last segment's."""
    out = read_local_run(path)
    for seg_dir in segment_dirs(out.run_dir):
        try:
            seg = read_local_run(seg_dir)
        except (RunNotFoundError, DataError) as e:
            warnings.warn(f"resumed segment '{seg_dir}' of W&B run '{out.run_dir}' is "
                          f"unreadable ({e}); the run is read without it", AipmWarning,
                          stacklevel=2)
            continue
        _merge(out, seg)
    return out


def _merge(out: LocalRun, seg: LocalRun) -> None:
    out.segments.append(seg.run_dir)
    out.run_id = out.run_id or seg.run_id
    out.entity = out.entity or seg.entity
    out.project = out.project or seg.project
    out.display_name = out.display_name or seg.display_name
    out.tags = out.tags or seg.tags
    out.job_type = out.job_type or seg.job_type
    if out.start_time is None:
        out.start_time = seg.start_time
    out.config.update(seg.config)
    by_step = {row["_step"]: row for row in out.history if "_step" in row}
    for row in seg.history:
        old = by_step.get(row.get("_step")) if "_step" in row else None
        if old is not None:
            old.update(row)
        else:
            out.history.append(row)
            if "_step" in row:
                by_step[row["_step"]] = row
    out.summary.update(seg.summary)
    out.alerts.extend(seg.alerts)
    out.files.extend(seg.files)
    out.artifacts.extend(seg.artifacts)
    for k, n in seg.record_types.items():
        out.record_types[k] = out.record_types.get(k, 0) + n
    out.exit_code, out.finished = seg.exit_code, seg.finished


def _set_path(d: dict[str, Any], path: list[str], value: Any) -> None:
    for k in path[:-1]:
        nxt = d.get(k)
        if not isinstance(nxt, dict):
            nxt = d[k] = {}
        d = nxt
    d[path[-1]] = value


def _del_path(d: dict[str, Any], path: list[str]) -> None:
    for k in path[:-1]:
        d = d.get(k)  # type: ignore[assignment]
        if not isinstance(d, dict):
            return
    d.pop(path[-1], None)


def _item_path(item: Any) -> list[str]:
    return list(item.nested_key) if len(item.nested_key) else [item.key]


def _json(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        # wandb writes NaN/Infinity as bare words, which json.loads accepts; anything else
        # is kept as text rather than dropped
        return text


def read_local_run(path: str) -> LocalRun:
    """Parse the run directory at ``path``. Warns (AipmWarning) when the log is damaged."""
    import mmap

    from wandb.proto import wandb_internal_pb2 as pb

    run_dir, log_path = find_log(path)
    scan = LogScan(path=log_path)
    out = LocalRun(run_dir=run_dir, log_path=log_path, scan=scan)
    try:
        with open(log_path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            # mapped, not read: a long run's log can be large; chunks are copied one by one
            data: Any = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except OSError as e:
        raise DataError(f"cannot read W&B run log '{log_path}': {e.strerror}") from e
    try:
        for payload in read_records(data, scan):
            rec = pb.Record()  # type: ignore[attr-defined]
            try:
                rec.ParseFromString(payload)
            except Exception:  # noqa: BLE001 - protobuf DecodeError: stop like a bad CRC
                scan.problem = f"record {scan.records} is not a valid Record protobuf"
                break
            kind = rec.WhichOneof("record_type")
            if kind is None:
                continue
            out.record_types[kind] = out.record_types.get(kind, 0) + 1
            _apply(out, kind, getattr(rec, kind))
    finally:
        if isinstance(data, mmap.mmap):
            data.close()
    if scan.problem:
        warnings.warn(
            f"W&B run log '{log_path}' is damaged at byte {scan.offset} ({scan.problem}); "
            f"read the {scan.records} intact record(s) before it", AipmWarning, stacklevel=2)
    if not out.run_id:
        base = os.path.basename(log_path)
        out.run_id = base[len("run-"):-len(".wandb")]
    return out


def _apply(out: LocalRun, kind: str, r: Any) -> None:
    if kind == "run":
        out.run_id = r.run_id or out.run_id
        out.entity, out.project = r.entity, r.project
        out.display_name = r.display_name or out.display_name
        out.tags = list(r.tags)
        out.job_type = r.job_type
        if r.HasField("start_time"):
            out.start_time = r.start_time.seconds + r.start_time.nanos / 1e9
        for item in r.config.update:
            _set_path(out.config, _item_path(item), _json(item.value_json))
        for item in r.summary.update:
            _set_path(out.summary, _item_path(item), _json(item.value_json))
    elif kind == "config":
        for item in r.update:
            _set_path(out.config, _item_path(item), _json(item.value_json))
        for item in r.remove:
            _del_path(out.config, _item_path(item))
    elif kind == "summary":
        for item in r.update:
            _set_path(out.summary, _item_path(item), _json(item.value_json))
        for item in r.remove:
            _del_path(out.summary, _item_path(item))
    elif kind == "history":
        row: dict[str, Any] = {}
        for item in r.item:
            _set_path(row, _item_path(item), _json(item.value_json))
        if "_step" not in row and r.HasField("step"):
            row["_step"] = r.step.num
        out.history.append(row)
        for k, v in row.items():  # summary = last logged value unless set explicitly later
            if not k.startswith("_"):
                out.summary[k] = v
    elif kind == "alert":
        out.alerts.append({"title": r.title, "text": r.text, "level": r.level})
    elif kind == "files":
        out.files.extend(f.path for f in r.files)
    elif kind == "artifact":
        out.artifacts.append({"name": r.name, "type": r.type,
                              "entries": [e.path for e in r.manifest.contents]})
    elif kind == "exit":
        out.exit_code = int(r.exit_code)
    elif kind == "final":
        out.finished = True


def read_table_file(run_dir: str, ref: dict[str, Any]) -> Any:
    """A ``{"_type": "table-file", "path": …}`` summary value -> DataFrame (from files/)."""

    rel = str(ref.get("path") or "")
    files_dir = os.path.realpath(os.path.join(run_dir, "files"))
    full = os.path.realpath(os.path.join(files_dir, rel))
    if not rel or not full.startswith(files_dir + os.sep):
        raise DataError(f"table reference {rel!r} points outside the run's files/ directory")
    try:
        with open(full, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read W&B table file '{full}': {e}") from e
    return table_json_to_frame(doc, full)


def table_json_to_frame(doc: dict[str, Any], where: str) -> Any:
    import pandas as pd

    cols, data = doc.get("columns"), doc.get("data")
    if not isinstance(cols, list) or not isinstance(data, list):
        raise DataError(f"W&B table '{where}' has no 'columns'/'data' lists")
    return pd.DataFrame(data, columns=[str(c) for c in cols])
