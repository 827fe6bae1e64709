"""The Tracker's local spool: what it logged, on disk first, so a crash loses little.

One spool per run, ``<spool_dir>/<spool_id>.spool``: an append-only file of records, one
per line, each ``<crc32 as 8 hex digits> <compact JSON>\\n``. The CRC covers the JSON bytes,
so a record torn by a kill (no newline, or a checksum that does not match) is detected and
dropped on reading. Records::

    {"t": "header", "v": 1, "spool_id", "backend": {"scheme", "target", "store",
     "mlflow_uri"}, "record": RunRecord.to_dict(), "created": epoch}
    {"t": "points", "p": [[key, value, step, timestamp], ...]}   # <= RECORD_MAX_POINTS
    {"t": "finish", "status": "finished", "record": RunRecord.to_dict()}

A flush writes one ``points`` record or, for a larger backlog, several of at most
``RECORD_MAX_POINTS`` points each, written one after the other: the spool grows steadily
while a backlog is spooled, and a kill loses at most the record being built and what was
not yet drained (spools written before the cap may hold much larger records: they are read
the same way).

Beside it, ``<spool_id>.state`` (JSON, replaced atomically) says how far the backend has
acknowledged: ``{"ref", "acked", "inflight", "durable", "finished"}``. ``acked`` is the
byte offset up to which every record is delivered; ``[acked, inflight)`` is a batch that was
being sent when the writer died and may or may not have arrived (or a record larger than one
``log_points`` call, part of which was sent): replay checks those points against the
backend's ``read_history`` (where it has one) and sends only the missing ones, so a replay
never duplicates a point on such a backend (at-least-once for the rest). A replay reads the
spool once, record by record, and sends at most ``REPLAY_CHUNK`` points per ``log_points``
call, so its memory does not grow with the spool's size (only with its largest record).
``durable`` is the offset up to which the backend keeps the points even if the process is
killed: ``acked`` itself, except for a backend whose ``acks_are_durable`` is False (W&B,
whose core writes its log in blocks): there it stays behind until the run is finished, the
spool is not compacted past it, and a replay checks ``[durable, acked)`` against the
backend's history by key and step.

The writer holds an exclusive ``flock`` on its spool while alive; :func:`replay_spool`
skips a locked spool (a live Tracker delivers its own), so ``aipm sync`` can run any time.
Nothing here imports a heavy module.
"""

from __future__ import annotations

import json
import os
import time
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import AipmWarning, StoreError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from .backends.base import Backend, BackendOptions
    from .schema import RunRecord

try:  # POSIX only; elsewhere spools are not locked (sync may then race a live Tracker)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

SPOOL_VERSION = 1
SPOOL_SUFFIX = ".spool"
STATE_SUFFIX = ".state"
#: Points per ``log_points`` call when replaying a backlog (at most).
REPLAY_CHUNK = 5000
#: Points per ``points`` record (at most): a backlog is spooled as several records. (5,000
#: made the sender deliver in small transactions beside a fast loop: ``log`` cost 1.0-1.5 us
#: instead of 0.7 us while the thread delivered; 50,000 is about 0.3 s of spooling.)
RECORD_MAX_POINTS = 50_000


def default_spool_dir(store: str | os.PathLike[str] | None = None) -> Path:
    """``$AIPM_SPOOL_DIR``, else ``<store>/spool`` (store: argument, ``$AIPM_STORE``, ``./.aipm``)."""
    env = os.environ.get("AIPM_SPOOL_DIR")
    if env:
        return Path(env)
    base = store or os.environ.get("AIPM_STORE") or ".aipm"
    return Path(base) / "spool"


def encode_record(rec: dict[str, Any]) -> bytes:
    """One framed record: ``b"%08x <json>\\n"`` (NaN/inf kept as JSON extensions)."""
    payload = json.dumps(rec, separators=(",", ":")).encode("utf-8")
    return b"%08x " % zlib.crc32(payload) + payload + b"\n"


def _decode_line(line: bytes) -> dict[str, Any] | None:
    """A framed line (with its newline) -> record, or None when its checksum fails."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    payload = line[9:-1]
    try:
        crc = int(line[:8], 16)
    except ValueError:
        return None
    if zlib.crc32(payload) != crc:
        return None
    try:
        rec = json.loads(payload)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


# -- state ---------------------------------------------------------------------------------

@dataclass
class SpoolState:
    """How far a spool is delivered (``<spool_id>.state``)."""

    ref: str | None = None
    acked: int = 0
    inflight: int = 0
    finished: bool = False
    durable: int = -1  # -1: as ``acked`` (a state file from before the field)

    def __post_init__(self) -> None:
        if self.durable < 0:
            self.durable = self.acked

    def to_dict(self) -> dict[str, Any]:
        return {"v": SPOOL_VERSION, "ref": self.ref, "acked": self.acked,
                "inflight": self.inflight, "durable": self.durable,
                "finished": self.finished}

    @classmethod
    def load(cls, path: Path) -> SpoolState:
        """The saved state (a fresh one when there is none); StoreError "state file ... is
        unreadable" when it is not valid JSON of the shape :meth:`to_dict` writes."""
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as e:
            raise StoreError(f"state file {path} is unreadable: {e}") from None
        if not isinstance(d, dict):
            raise StoreError(f"state file {path} is unreadable: a JSON "
                             f"{type(d).__name__}, not an object")
        ref = d.get("ref")
        if ref is not None and not isinstance(ref, str):
            raise StoreError(f"state file {path} is unreadable: 'ref' holds a "
                             f"{type(ref).__name__}, not a string")

        def offset(key: str, default: int) -> int:
            v = d.get(key)
            if v is None:
                return default
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise StoreError(f"state file {path} is unreadable: '{key}' is {v!r}, "
                                 f"not a byte offset")
            return v

        acked = offset("acked", 0)
        return cls(ref=ref, acked=acked, inflight=offset("inflight", 0),
                   finished=bool(d.get("finished")), durable=offset("durable", acked))

    def save(self, path: Path) -> None:
        """Atomic replace (temp file + ``os.replace``)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()), encoding="utf-8")
        os.replace(tmp, path)


# -- writer --------------------------------------------------------------------------------

class SpoolWriter:
    """Append-only writer of one run's spool; used by the Tracker's background thread only.

    ``fsync_every_s`` bounds how long written records may sit in the OS cache (what a power
    loss could cost; a killed process loses only what was not yet written).
    """

    def __init__(self, directory: str | os.PathLike[str], spool_id: str,
                 header: dict[str, Any], *, fsync_every_s: float = 1.0) -> None:
        from .refs import validate_run_id

        validate_run_id(spool_id, "spool id")
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"{self.dir}: cannot create spool directory ({e})") from None
        self.path = self.dir / f"{spool_id}{SPOOL_SUFFIX}"
        self.state_path = self.dir / f"{spool_id}{STATE_SUFFIX}"
        self.fsync_every_s = fsync_every_s
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_BINARY", 0)
        try:
            self._fd = os.open(self.path, flags, 0o600)
        except FileExistsError:
            raise StoreError(f"{self.path}: spool already exists") from None
        except OSError as e:
            raise StoreError(f"{self.path}: cannot create spool ({e})") from None
        if fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.offset = 0
        self._dirty = False
        self._last_fsync = time.monotonic()
        self._header = encode_record({"t": "header", "v": SPOOL_VERSION, "spool_id": spool_id,
                                      "created": time.time(), **header})
        self._write(self._header)
        self.state = SpoolState(acked=self.offset, inflight=self.offset)
        self.save_state()
        self.sync(force=True)

    def append(self, rec: dict[str, Any]) -> tuple[int, int]:
        """Write one record; return its (start, end) byte offsets."""
        return self._write(encode_record(rec))

    def _write(self, data: bytes) -> tuple[int, int]:
        start = self.offset
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.offset = start + len(data)
        self._dirty = True
        return start, self.offset

    def append_points(self, points: Sequence[Sequence[Any]]) -> tuple[int, int]:
        """``points`` records for a flush: ``[(key, value, step, timestamp), ...]``, at most
        ``RECORD_MAX_POINTS`` per record; returns the (start, end) offsets of them all."""
        # json writes tuples (MetricPoint is a NamedTuple) as arrays: no per-point copy
        pts = points if isinstance(points, list) else list(points)
        start = end = self.offset
        for i in range(0, len(pts), RECORD_MAX_POINTS):
            part = pts if len(pts) <= RECORD_MAX_POINTS else pts[i:i + RECORD_MAX_POINTS]
            end = self.append({"t": "points", "p": part})[1]
        if not pts:
            start, end = self.append({"t": "points", "p": pts})
        return start, end

    def sync(self, force: bool = False) -> None:
        """fsync when ``fsync_every_s`` has passed since the last one (or ``force``)."""
        if not self._dirty:
            return
        now = time.monotonic()
        if force or now - self._last_fsync >= self.fsync_every_s:
            os.fsync(self._fd)
            self._dirty = False
            self._last_fsync = now

    def save_state(self) -> None:
        self.state.save(self.state_path)

    def compact(self, max_bytes: int) -> bool:
        """When everything is delivered and the file passed ``max_bytes``, start it afresh
        (header only), so a long healthy run keeps a small spool. The new file is locked
        before it replaces the old one: ``aipm sync`` never sees it unlocked."""
        if (self.offset <= max_bytes or self.state.acked != self.offset
                or self.state.durable != self.offset):
            return False
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
                     | getattr(os, "O_BINARY", 0), 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, self._header)
            os.fsync(fd)
            os.replace(tmp, self.path)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        old, self._fd = self._fd, fd
        os.close(old)
        self.offset = len(self._header)
        self._dirty = False
        self.state.acked = self.state.inflight = self.state.durable = self.offset
        self.save_state()
        return True

    def close(self, *, remove: bool = False) -> None:
        """fsync, release the lock; ``remove`` deletes spool and state (all delivered)."""
        if self._fd < 0:
            return
        try:
            self.sync(force=True)
        finally:
            os.close(self._fd)  # releases the flock
            self._fd = -1
        if remove:
            for p in (self.path, self.state_path):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass


# -- reader --------------------------------------------------------------------------------

@dataclass
class SpoolReader:
    """Reads a spool's records; counts a torn tail and corrupted records instead of failing."""

    path: Path
    torn: bool = False  # the last record was cut short (dropped)
    corrupt: int = 0  # complete lines whose checksum failed (dropped)
    end: int = 0  # offset after the last good record read

    def header(self) -> dict[str, Any]:
        for _s, _e, rec in self.records(0):
            if rec.get("t") == "header":
                return rec
            break
        raise StoreError(f"{self.path}: not an aipm spool (no valid header record)")

    def records(self, start: int = 0) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """Yield ``(start, end, record)`` from byte offset ``start`` on."""
        self.torn, self.corrupt = False, 0
        with open(self.path, "rb") as f:
            f.seek(start)
            pos = start
            self.end = start
            for line in f:
                end = pos + len(line)
                if not line.endswith(b"\n"):
                    self.torn = True  # a kill mid-write: dropped
                    break
                rec = _decode_line(line)
                if rec is None:
                    self.corrupt += 1
                else:
                    yield pos, end, rec
                    self.end = end
                pos = end


def iter_points(records: Iterator[tuple[int, int, dict[str, Any]]]
                ) -> Iterator[tuple[int, int, list[list[Any]]]]:
    for s, e, rec in records:
        if rec.get("t") == "points":
            yield s, e, rec.get("p") or []


# -- delivery (Tracker recovery and ``aipm sync``) ----------------------------------------

def _locator(ref: str) -> str:
    return ref.split(":", 1)[1] if ":" in ref else ref


def _point_key(key: str, step: Any, ts: Any) -> tuple[str, int, int]:
    return (str(key), int(step), int(round(float(ts) * 1000)))


def _is_there(seen: set[tuple[str, int, int]], key: Any, step: Any, ts: Any) -> bool:
    """Same key and step, timestamps within 1 ms (MLflow keeps whole milliseconds)."""
    k, s, ms = _point_key(key, step, ts)
    return any((k, s, ms + d) in seen for d in (0, -1, 1))


def _history_chunks(backend: Backend, ref: str) -> Iterator[Sequence[Sequence[Any]]]:
    """The run's points as ``(key, value, step, timestamp)`` sequences, in lists: streamed
    where the backend can (``iter_history``), else its ``read_history`` list."""
    stream = getattr(backend, "iter_history", None)
    if callable(stream):
        yield from stream(_locator(ref), None)
    else:
        yield backend.read_history(_locator(ref), None)


def _already_there(backend: Backend, ref: str, wanted: set[tuple[str, int]] | None = None
                   ) -> set[tuple[str, int, int]] | None:
    """(key, step, ms) of points the backend holds (None when it cannot say); only those
    whose (key, step) is in ``wanted`` when given (memory: the points in doubt, not the
    whole run)."""
    out: set[tuple[str, int, int]] = set()
    try:
        for chunk in _history_chunks(backend, ref):
            for p in chunk:
                k, s = str(p[0]), int(p[2])
                if wanted is None or (k, s) in wanted:
                    out.add((k, s, int(round(float(p[3]) * 1000))))
    except Exception:  # noqa: BLE001 - no history: fall back to at-least-once
        return None
    return out


_PLAIN_POINT = (str, float, int, float)


def _metric_points(pts: Sequence[Any]) -> list[Any]:
    """Spooled ``[key, value, step, timestamp]`` lists -> MetricPoints (one C-speed pass
    when every point has the types the Tracker writes, else converted point by point)."""
    from .schema import MetricPoint

    try:
        plain = {(type(k), type(v), type(st), type(ts)) for k, v, st, ts in pts} <= {
            _PLAIN_POINT}
    except (TypeError, ValueError):
        plain = False
    if plain:
        return list(map(MetricPoint._make, pts))
    return [MetricPoint(str(k), float(v), int(st), float(ts)) for k, v, st, ts in pts]


def _note_last(last: dict[str, float], pts: Sequence[Any]) -> None:
    """Each key's last value among ``pts`` (spooled points) into ``last``."""
    try:
        tail = {pt[0]: pt[1] for pt in pts}
    except (TypeError, IndexError, KeyError):
        tail = None
    if tail is not None and all(type(k) is str for k in tail) and all(
            type(v) is float for v in tail.values()):
        last.update(tail)  # (the common case: what the Tracker writes)
        return
    for pt in pts:
        if isinstance(pt, list) and len(pt) >= 2 and isinstance(pt[1], float | int):
            last[str(pt[0])] = float(pt[1])


def acks_are_durable(backend: Any) -> bool:
    """Whether ``log_points`` returning means the points survive a kill (module docstring)."""
    return bool(getattr(backend, "acks_are_durable", True))


class _Delivery:
    """The state machine of :func:`deliver_backlog`, fed one ``points`` record at a time
    (so :func:`replay_spool` reads the spool once). Sends at most ``chunk`` points per
    ``log_points`` call: whole records when they fit, else a record in several calls, with
    ``inflight`` covering it until its last point is acknowledged (a kill in between leaves
    it in doubt: the next replay checks it against the backend's history)."""

    def __init__(self, path: Path, state: SpoolState, backend: Backend, *, save: Any,
                 chunk: int, recheck_unsaved: bool) -> None:
        assert state.ref is not None
        self.path, self.state, self.backend, self.save = path, state, backend, save
        self.chunk = max(1, int(chunk))
        self.durable = acks_are_durable(backend)
        self.gap_end = state.acked if recheck_unsaved and state.durable < state.acked else -1
        self.start = state.durable if self.gap_end >= 0 else state.acked
        self.doubtful_end = max(state.inflight, state.acked)
        self.batch: list[Any] = []
        self.closed_end = self.start  # end of the last record wholly in batch (or sent)
        self.sent = 0
        self.seen: set[tuple[str, int, int]] | None = None
        self.seen_steps: set[tuple[str, int]] = set()

    def _load_seen(self) -> None:
        """What the backend holds of the points in doubt (read once, when first needed)."""
        wanted: set[tuple[str, int]] = set()
        for s, _e, pts in iter_points(SpoolReader(self.path).records(self.start)):
            if s >= self.doubtful_end:
                break
            for p in pts:
                try:
                    wanted.add((str(p[0]), int(p[2])))
                except (TypeError, ValueError, IndexError):
                    continue
        self.seen = _already_there(self.backend, self.state.ref or "", wanted) or set()
        self.seen_steps = {(k, st) for k, st, _ms in self.seen}

    def _send(self, open_end: int | None = None, last: bool = False) -> None:
        """Send the batch; ``open_end``: the end of a record only part of which is in it.
        The state is saved before each call (the acknowledgement of the previous call goes
        with it: a kill in between only makes that call's points checked again) and, when
        ``last``, after the final one."""
        state, save = self.state, self.save
        doubt = max(open_end if open_end is not None else self.closed_end, state.acked)
        if self.batch:
            state.inflight = doubt
            if save:
                save(state)
            self.backend.log_points(state.ref or "", self.batch)
            self.sent += len(self.batch)
        state.acked = max(self.closed_end, state.acked)
        state.inflight = doubt if open_end is not None else state.acked
        if self.durable:
            state.durable = state.acked
        if save and (last or not self.batch):
            save(state)
        self.batch = []

    def feed(self, s: int, e: int, pts: list[Any]) -> None:
        """One ``points`` record, ``[s, e)`` in the spool (records come in file order)."""
        if s < self.doubtful_end:
            if self.seen is None:
                self._load_seen()
            if s < self.gap_end:  # the backend's timestamps need not be ours: key and step
                steps = self.seen_steps
                pts = [p for p in pts if (str(p[0]), int(p[2])) not in steps]
            else:  # (a key and step it does not hold at all: no timestamp to compare)
                seen, steps = self.seen or set(), self.seen_steps
                pts = [p for p in pts if (str(p[0]), int(p[2])) not in steps
                       or not _is_there(seen, p[0], p[2], p[3])]
        room = self.chunk - len(self.batch)
        if self.batch and len(pts) > room:
            self._send()  # whole records per call where they fit
            room = self.chunk
        n = len(pts)
        i = 0
        while n - i > room:  # a record larger than a call: in parts, held in doubt
            self.batch.extend(_metric_points(pts[i:i + room]))
            i += room
            self._send(open_end=e)
            room = self.chunk
        self.batch.extend(_metric_points(pts[i:] if i else pts))
        self.closed_end = e
        if len(self.batch) >= self.chunk:
            self._send()

    def close(self, end: int | None = None) -> int:
        """Send the rest (``end``: acknowledge up to there, past dropped records)."""
        if end is not None:
            self.closed_end = max(self.closed_end, end)
        self._send(last=True)
        return self.sent


def deliver_backlog(path: Path, state: SpoolState, backend: Backend, *,
                    save: Any = None, upto: int | None = None,
                    chunk: int = REPLAY_CHUNK, recheck_unsaved: bool = False) -> int:
    """Send every point record from ``state.acked`` (to ``upto``) to ``state.ref``.

    Points in ``[acked, inflight)`` are checked against the backend's history first. With
    ``recheck_unsaved`` (a replay after the writer died), so are those in
    ``[durable, acked)``, by key and step: sent, but maybe never kept by the backend. At
    most ``chunk`` points go in one ``log_points`` call. The state advances (and
    ``save(state)`` runs) after each acknowledged chunk. Returns the number of points sent.
    Exceptions from the backend propagate (the caller retries).
    """
    d = _Delivery(path, state, backend, save=save, chunk=chunk,
                  recheck_unsaved=recheck_unsaved)
    reader = SpoolReader(path)
    for s, e, pts in iter_points(reader.records(d.start)):
        if upto is not None and s >= upto:
            break
        d.feed(s, e, pts)
    return d.close(reader.end if upto is None else None)


@dataclass
class SyncResult:
    """What :func:`replay_spool` did with one spool."""

    spool: str
    ref: str | None = None
    points: int = 0
    status: str = ""  # "synced", "skipped", "failed", "empty"
    reason: str = ""
    torn: bool = False
    corrupt: int = 0
    run_status: str | None = None  # the status recorded with finish_run

    def to_dict(self) -> dict[str, Any]:
        return {"spool": self.spool, "ref": self.ref, "points": self.points,
                "status": self.status, "reason": self.reason, "torn": self.torn,
                "corrupt": self.corrupt, "run_status": self.run_status}


def _lock(path: Path) -> tuple[int | None, str]:
    """Open and lock a spool (non-blocking) -> (fd, "") or (None, why it is skipped).

    The lock must be on the file the path names *now*: a live Tracker that compacts its
    spool replaces the file (and drops its lock on the old one), and a sync that finished
    first unlinks it; a lock won on such a stale file is given back."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None, "gone (delivered meanwhile by another sync or its Tracker)"
    if fcntl is None:  # pragma: no cover
        return fd, ""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None, "in use by a live Tracker"
    try:
        now = os.stat(path)
    except FileNotFoundError:
        os.close(fd)
        return None, "gone (delivered meanwhile by another sync or its Tracker)"
    held = os.fstat(fd)
    if (held.st_dev, held.st_ino) != (now.st_dev, now.st_ino):
        os.close(fd)
        return None, "in use by a live Tracker (its spool was just compacted)"
    return fd, ""


def backend_for(header: dict[str, Any], options: BackendOptions | None = None, *,
                mlflow_uri: str | None = None) -> Backend:
    """The backend a spool's header names; ``options`` fill what the header leaves out;
    ``mlflow_uri`` (``aipm sync --mlflow-uri``) replaces the recorded one (a moved server)."""
    from .backends.base import BackendOptions
    from .plugins import get_backend

    b = header.get("backend") or {}
    scheme = b.get("scheme")
    if not isinstance(scheme, str) or not scheme:
        raise StoreError("spool header names no backend scheme")
    opts = BackendOptions(store=b.get("store") or (options.store if options else None),
                          mlflow_uri=mlflow_uri or b.get("mlflow_uri")
                          or (options.mlflow_uri if options else None))
    return get_backend(scheme, opts)


def _killed_record(header: dict[str, Any], last: Mapping[str, float]) -> RunRecord | None:
    """The summary a Tracker killed before ``finish`` would have written: its start record
    with each series' last logged value (no eval: that is only known at finish)."""
    import dataclasses

    from .schema import MetricValue, RunRecord

    if not last or not header.get("record"):
        return None
    start = RunRecord.from_dict(header["record"])
    return dataclasses.replace(start, metrics={k: MetricValue(v) for k, v in last.items()},
                               status="killed")


def replay_spool(path: str | os.PathLike[str], *, options: BackendOptions | None = None,
                 backend: Backend | None = None, keep: bool = False,
                 mlflow_uri: str | None = None) -> SyncResult:
    """Deliver what a dead Tracker spooled: start the run if it never started, send the
    unacknowledged points, record the final status (``killed`` when the Tracker never
    finished). Idempotent: running it twice sends nothing the second time. A spool held
    by a live Tracker is skipped. Delivered spools are deleted unless ``keep``.
    """
    from .schema import RunRecord

    p = Path(path)
    res = SyncResult(spool=str(p))
    fd, why = _lock(p)
    if fd is None:
        res.status, res.reason = "skipped", why
        return res
    try:
        state_path = p.with_suffix(STATE_SUFFIX)
        state = SpoolState.load(state_path)
        reader = SpoolReader(p)
        header = reader.header()
        res.ref = state.ref
        if state.finished:
            res.status, res.reason = "synced", "already delivered"
        else:
            be = backend or backend_for(header, options, mlflow_uri=mlflow_uri)
            if state.ref is None:
                start_rec = RunRecord.from_dict(header["record"])
                state.ref = be.start_run(start_rec, (header.get("backend") or {}).get("target"))
                state.save(state_path)
                res.ref = state.ref
            # one pass: each record is decoded once, its points delivered (from the first
            # one not yet acknowledged) and the last value of each key noted on the way
            delivery = _Delivery(p, state, be, save=lambda s: s.save(state_path),
                                 chunk=REPLAY_CHUNK, recheck_unsaved=True)
            finish: dict[str, Any] | None = None
            last: dict[str, float] = {}  # each key's last logged value: a killed run's summary
            try:
                for r_start, r_end, rec in reader.records(0):
                    kind = rec.get("t")
                    if kind == "finish":
                        finish = rec
                    elif kind == "points":
                        pts = rec.get("p") or []
                        _note_last(last, pts)
                        if r_start >= delivery.start:
                            delivery.feed(r_start, r_end, pts)
            finally:
                res.torn, res.corrupt = reader.torn, reader.corrupt
            res.points = delivery.close(reader.end)
            if finish is not None:
                status = str(finish.get("status") or "finished")
                final = RunRecord.from_dict(finish["record"]) if finish.get("record") else None
            else:
                status, final = "killed", _killed_record(header, last)
            if final is not None:
                final.ref = state.ref
            be.finish_run(state.ref, status, final)
            state.finished = True
            state.durable = state.acked
            state.save(state_path)
            res.status, res.run_status = "synced", status
    except Exception as e:  # noqa: BLE001 - one bad spool must not stop the others
        res.status, res.reason = "failed", f"{type(e).__name__}: {e}"
        return res
    finally:
        os.close(fd)
    if not keep:
        for q in (p, p.with_suffix(STATE_SUFFIX)):
            try:
                q.unlink()
            except FileNotFoundError:
                pass
    return res


def list_spools(directory: str | os.PathLike[str]) -> list[Path]:
    d = Path(directory)
    if not d.exists():
        return []
    if not d.is_dir():
        raise UsageError(f"{d}: not a directory")
    return sorted(d.glob(f"*{SPOOL_SUFFIX}"))


def replay_all(directory: str | os.PathLike[str], *, options: BackendOptions | None = None,
               keep: bool = False, exclude: Sequence[Path] = (),
               mlflow_uri: str | None = None) -> list[SyncResult]:
    """:func:`replay_spool` for every spool in ``directory`` (``exclude``: paths to skip)."""
    out: list[SyncResult] = []
    skip = {Path(x).resolve() for x in exclude}
    for p in list_spools(directory):
        if p.resolve() in skip:
            continue
        out.append(replay_spool(p, options=options, keep=keep, mlflow_uri=mlflow_uri))
    return out


def warn_results(results: Sequence[SyncResult]) -> None:
    for r in results:
        if r.status == "failed":
            warnings.warn(f"could not replay spool {r.spool}: {r.reason} "
                          f"(run 'aipm sync' later)", AipmWarning, stacklevel=3)


__all__ = ["SpoolWriter", "SpoolReader", "SpoolState", "SyncResult", "default_spool_dir",
           "deliver_backlog", "replay_spool", "replay_all", "encode_record"]
