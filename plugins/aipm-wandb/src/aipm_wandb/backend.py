"""The ``wandb:`` backend: W&B servers (``ENTITY/PROJECT/RUN_ID``) and local run dirs (``PATH``).

A locator naming an existing path is a local run directory (``wandb/offline-run-…``,
``wandb/run-…``, its ``.wandb`` file, or a ``wandb/`` folder with ``latest-run``); one of the
shape ``ENTITY/PROJECT/RUN_ID`` is a run on the server at ``$WANDB_BASE_URL``.
Targets are ``ENTITY/PROJECT``. ``BackendOptions.extra`` keys used here: ``mode``
(``offline``/``online``, default: wandb's own ``WANDB_MODE``), ``dir`` (where wandb writes
run directories), ``baseline`` (a RunRecord: adds changed-outcome columns to the
per-example table), ``examples_table`` (the summary key of a foreign run's per-example
table), ``base_url``, ``per_page``, ``retry_max``, ``retry_wait_min_s``,
``retry_wait_max_s``, ``timeout_s``.
"""

from __future__ import annotations

import io
import json
import math
import os
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aipm_tracking.backends.base import BackendOptions, BaseBackend
from aipm_tracking.errors import (
    AipmWarning,
    DataError,
    InvalidReferenceError,
    RunNotFoundError,
    UsageError,
)
from aipm_tracking.schema import Comparison, MetricPoint, RunRecord

from . import convert
from .filters import RunFilter
from .offline import LocalRun, find_log, read_table_file, read_whole_run
from .scrub import scrub_message

#: W&B run states -> aipm statuses (``schema.RUN_STATUSES``); any other is ``incomplete``.
_STATES = {"finished": "finished", "running": "running", "crashed": "failed",
           "failed": "failed", "killed": "killed"}


def wandb_status(state: Any) -> str:
    """The aipm status of a W&B run state (``crashed`` -> ``failed``, ``pending`` ->
    ``incomplete`` ...): the same for ``runs show`` and ``runs list``."""
    return _STATES.get(str(state or ""), "incomplete")


@dataclass
class _Stream:
    """What this process sent to one streaming run (``log_points``)."""

    #: W&B's current step: it drops a point at a lower step (None: not read from the run yet)
    step: int | None = None
    #: per key, the last value W&B holds (what its summary shows)
    delivered: dict[str, float] = field(default_factory=dict)
    #: per key, the last value in logging order and whether W&B dropped it
    last_seen: dict[str, tuple[float, bool]] = field(default_factory=dict)
    dropped: int = 0
    warned: int = 0
    warned_keys: set[frozenset[str]] = field(default_factory=set)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _some(items: Sequence[Any], n: int = 10) -> str:
    shown = ", ".join(str(x) for x in items[:n])
    return shown + (f", … ({len(items)} in all)" if len(items) > n else "")


def _points_from_rows(rows: Sequence[dict[str, Any]],
                      keys: Sequence[str] | None) -> list[MetricPoint]:
    wanted = set(keys) if keys else None
    pts: list[MetricPoint] = []
    for i, row in enumerate(rows):
        step = row.get("_step", i)
        ts = row.get("_timestamp") or 0.0
        for k, v in row.items():
            if k.startswith("_") or (wanted is not None and k not in wanted):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            pts.append(MetricPoint(k, float(v), int(step), float(ts)))
    pts.sort(key=lambda p: (p.step, p.key))
    return pts


class WandbBackend(BaseBackend):
    """Weights & Biases, through the real SDK (writes) and public API / run files (reads)."""

    scheme = "wandb"
    #: wandb-core writes the run log in 32 KiB blocks (and uploads from it), with no way to
    #: flush it: points ``log_points`` sent may be lost if the process is killed, so the
    #: Tracker's spool keeps them until the run is finished (aipm_tracking.spool).
    acks_are_durable = False

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options or BackendOptions()
        self.extra = dict(self.options.extra or {})
        self._live: dict[str, Any] = {}  # ref -> open wandb run (streaming)
        self._streams: dict[str, _Stream] = {}  # ref -> what log_points sent to it
        self._api: Any = None

    # -- locators --------------------------------------------------------------------
    @staticmethod
    def _local_path(locator: str) -> str | None:
        path = os.path.expanduser(locator)
        return path if os.path.exists(path) else None

    def _remote_path(self, locator: str) -> tuple[str, str, str]:
        parts = convert.parse_run_path(locator)
        if parts is None:
            raise InvalidReferenceError(
                f"W&B reference 'wandb:{locator}' is neither an existing run directory nor "
                f"ENTITY/PROJECT/RUN_ID")
        return parts

    def _api_(self) -> Any:
        if self._api is None:
            from .remote import make_api

            self._api = make_api(self.extra)
        return self._api

    # -- reading ---------------------------------------------------------------------
    def read_run(self, locator: str, *, with_examples: bool = True) -> RunRecord:
        local = self._local_path(locator)
        if local is not None:
            return self._read_local(local, with_examples)
        return self._read_remote(self._remote_path(locator), with_examples)

    def _read_local(self, path: str, with_examples: bool) -> RunRecord:
        lr = read_whole_run(path)  # with the segments `aipm sync` resumed it in
        ref = f"wandb:{lr.run_dir}"
        run_json = None
        rj = lr.find_file(convert.RUN_JSON)
        if rj is not None:
            try:
                with open(rj, encoding="utf-8") as fh:
                    run_json = json.load(fh)
            except (OSError, ValueError) as e:
                warnings.warn(f"'{rj}' is unreadable ({e}); reading the run from its log",
                              AipmWarning, stacklevel=2)
        created = convert.iso_time(lr.start_time)
        rec = convert.record_from_wandb(
            run_id=lr.run_id, ref=ref, display_name=lr.display_name, config=lr.config,
            summary=lr.summary, metric_map=self.options.metric_map, created_at=created,
            status=lr.status, run_json=run_json)
        if lr.status != "finished" and rec.status in ("finished", "running"):
            rec.status = lr.status  # the log's end wins: failed, killed mid-way ...
        # what read_run loads (aipm/examples.parquet, else a logged examples/predictions
        # table), told from the run's files and summary without reading the table
        rec.examples_stored = self._has_local_examples(lr)
        if with_examples:
            rec.examples = self._local_examples(lr)
        return rec

    def _has_local_examples(self, lr: LocalRun) -> bool:
        return (lr.find_file(convert.EXAMPLES_PARQUET) is not None
                or bool(convert.examples_table_keys(lr.summary, self.extra.get("examples_table"))))

    def _local_examples(self, lr: LocalRun) -> Any:
        pq_path = lr.find_file(convert.EXAMPLES_PARQUET)
        if pq_path is not None:
            import pandas as pd

            try:
                return pd.read_parquet(pq_path)
            except Exception as e:  # noqa: BLE001 - pyarrow raises several types
                raise DataError(f"cannot read '{pq_path}': {e}") from None
        keys = convert.examples_table_keys(lr.summary, self.extra.get("examples_table"))
        if not keys:
            return None
        import pandas as pd

        frames = [read_table_file(lr.table_dir(lr.summary[k]), lr.summary[k]) for k in keys]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def _read_remote(self, path: tuple[str, str, str], with_examples: bool) -> RunRecord:
        from . import remote

        e, p, r = path
        api = self._api_()
        run = remote.get_run(api, f"{e}/{p}/{r}")
        files = remote.run_files(run)
        raw = remote.download(run, convert.RUN_JSON) if convert.RUN_JSON in files else None
        run_json = None
        if raw is not None:
            try:
                run_json = json.loads(raw)
            except ValueError:
                warnings.warn(f"W&B run '{e}/{p}/{r}' has an unreadable {convert.RUN_JSON}",
                              AipmWarning, stacklevel=2)
        summary = dict(run.summary_metrics or {})
        status = wandb_status(getattr(run, "state", ""))
        rec = convert.record_from_wandb(
            run_id=r, ref=f"wandb:{e}/{p}/{r}", display_name=str(run.name or r),
            config=dict(run.config or {}), summary=summary,
            metric_map=self.options.metric_map,
            created_at=convert.iso_time(getattr(run, "created_at", None)), status=status,
            run_json=run_json)
        if status != "finished" and rec.status in ("finished", "running"):
            rec.status = status
        keys = convert.examples_table_keys(summary, self.extra.get("examples_table"))
        # what the branch below loads, told from the file list and the summary
        rec.examples_stored = convert.EXAMPLES_PARQUET in files or bool(keys)
        if with_examples:
            if convert.EXAMPLES_PARQUET in files:
                import pandas as pd

                data = remote.download(run, convert.EXAMPLES_PARQUET)
                if data is not None:
                    rec.examples = pd.read_parquet(io.BytesIO(data))
                rec.examples_stored = data is not None
            elif keys:
                import pandas as pd

                try:
                    frames = [remote.read_table(run, k, summary[k]) for k in keys]
                except DataError as err:
                    warnings.warn(f"{err}; the run is read without per-example data",
                                  AipmWarning, stacklevel=2)
                    rec.examples_stored = False
                else:
                    rec.examples = (pd.concat(frames, ignore_index=True)
                                    if len(frames) > 1 else frames[0])
        return rec

    def list_runs(self, target: str | None = None, *, filter: str | None = None,
                  limit: int | None = None) -> Iterator[RunRecord]:
        """Runs of ``ENTITY/PROJECT`` (newest first, paged), of a local ``wandb/`` folder, or
        the one run of a local run directory (or its ``.wandb`` file).

        ``filter``: the core's ``FIELD OP VALUE`` clauses joined by ``and``
        (``metrics.accuracy > 0.9 and model = "bot"``), evaluated on each run's RunRecord
        exactly as the embedded store evaluates them (:mod:`aipm_wandb.filters`); on a
        server, the clauses W&B can apply are also sent with the request. Kept from before:
        one word (no spaces) with none of ``= ! < >`` is a regular expression on the run
        name, and text starting with ``{`` a W&B MongoDB-style JSON filter (server only).
        Anything else the core cannot read is a UsageError.
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 0):
            raise UsageError(f"limit must be a non-negative integer, got {limit!r}")
        flt = RunFilter(filter)  # a filter it cannot read fails here, before any request
        if target and os.path.exists(os.path.expanduser(target)):
            return self._list_local(os.path.expanduser(target), flt, limit)
        return self._list_remote(target, flt, limit)

    def _list_local(self, path: str, flt: RunFilter, limit: int | None) -> Iterator[RunRecord]:
        import glob

        if flt.mongo is not None:
            raise UsageError("a JSON (MongoDB-style) filter is applied by a W&B server; for "
                             "local run directories use FIELD OP VALUE, e.g. "
                             "'metrics.accuracy > 0.9 and model = \"bot\"'")
        if os.path.isfile(path) or glob.glob(os.path.join(glob.escape(path), "run-*.wandb")):
            # one run: its directory (latest-run, offline-run-…, run-…) or its .wandb log
            recs = [self._read_local(path, with_examples=False)]
        else:  # a wandb/ folder: every run directory in it
            recs = []
            for d in glob.glob(os.path.join(glob.escape(path), "*run-*")):
                if (not os.path.isdir(d) or os.path.islink(d)
                        or os.path.basename(d).startswith("resumed-")):
                    continue  # a resumed segment is read with its run, not on its own
                try:
                    recs.append(self._read_local(d, with_examples=False))
                except (DataError, RunNotFoundError):  # unreadable, or no run log (yet)
                    continue
        try:
            recs = [r for r in recs if flt.matches(r)]
        finally:
            flt.close()
        recs.sort(key=lambda r: r.created_at or "", reverse=True)
        return iter(recs[:limit] if limit is not None else recs)

    def _list_remote(self, target: str | None, flt: RunFilter,
                     limit: int | None) -> Iterator[RunRecord]:
        entity, project = convert.parse_project(target)
        if entity is None:
            raise InvalidReferenceError("listing W&B runs needs ENTITY/PROJECT")
        return self._iter_remote(entity, project, flt, limit)

    def _iter_remote(self, entity: str, project: str, flt: RunFilter,
                     limit: int | None) -> Iterator[RunRecord]:
        from . import remote

        per_page = int(self.extra.get("per_page", 50))
        api = self._api_()
        table_key = self.extra.get("examples_table")
        # an expression is checked on each run here: the limit counts the runs that pass
        runs = remote.iter_runs(api, f"{entity}/{project}",
                                filters=flt.server_filters(self.options.metric_map),
                                per_page=per_page,
                                limit=None if flt.is_expression else limit,
                                quiet=self.options.quiet)
        n = 0
        try:
            for run in runs:
                if limit is not None and n >= limit:
                    break
                status = wandb_status(getattr(run, "state", ""))
                summary = dict(run.summary_metrics or {})
                rec = convert.record_from_wandb(
                    run_id=run.id, ref=f"wandb:{entity}/{project}/{run.id}",
                    display_name=str(run.name or run.id), config=dict(run.config or {}),
                    summary=summary, metric_map=self.options.metric_map,
                    created_at=convert.iso_time(getattr(run, "created_at", None)),
                    status=status)
                if status != "finished" and rec.status in ("finished", "running"):
                    rec.status = status  # as _read_remote: the server's state wins
                # a logged per-example table (or aipm's row count) in the summary: what
                # read_run would load, told without listing or downloading the run's files
                rec.examples_stored = (bool(convert.examples_table_keys(summary, table_key))
                                       or bool(summary.get("aipm/examples_rows")))
                if flt.is_expression and not flt.matches(rec):
                    continue
                n += 1
                yield rec
        finally:
            runs.close()
            flt.close()

    def read_history(self, locator: str, keys: Sequence[str] | None = None) -> list[MetricPoint]:
        local = self._local_path(locator)
        if local is not None:
            return _points_from_rows(read_whole_run(local).history, keys)
        from . import remote

        e, p, r = self._remote_path(locator)
        run = remote.get_run(self._api_(), f"{e}/{p}/{r}")
        return _points_from_rows(remote.scan_history(run), keys)

    # -- writing ---------------------------------------------------------------------
    def _baseline_examples(self, record: RunRecord) -> Any:
        base = self.extra.get("baseline")
        if isinstance(base, RunRecord):
            return base.examples
        name = (record.details or {}).get("baseline_ref") or (record.config or {}).get(
            "baseline")
        if isinstance(name, str) and name:
            try:
                from aipm_tracking.api import load_run

                return load_run(name).examples
            except Exception as e:  # noqa: BLE001 - a missing baseline must not block a push
                warnings.warn(scrub_message(
                    f"baseline '{name}' named by run '{record.name}' could not be loaded "
                    f"({e}); the changed-outcome column is left out"), AipmWarning,
                    stacklevel=3)
        return None

    def write_run(self, record: RunRecord, target: str | None = None, *,
                  history: Sequence[MetricPoint] | None = None) -> str:
        """Write a whole run (one W&B run, finished); return its reference.

        ``history``: the run's series points, logged first as the Tracker streams them (one
        ``run.log`` per step, with the step's time; a negative step, which W&B cannot
        hold, is left out with a warning), then the record as :meth:`finish_run` writes it.
        A record tagged ``aipm.source_ref`` (``aipm push``/``pull``) whose complete copy is
        already in ``target`` returns that copy instead of writing another: offline, a run
        directory where new runs go with its ``aipm-copy.json`` naming the source and
        ``target``; online, a finished run tagged ``aipm-source=DIGEST`` that names the
        source and holds ``aipm/run.json``.
        """
        from . import writer

        entity, project = convert.parse_project(target)  # validate before starting anything
        source = str(record.tags.get(convert.SOURCE_REF) or "")
        if source:
            found = self._find_copy(source, target, entity, project)
            if found is not None:
                return found
        run = writer.new_record_run(record, target, self.extra)
        try:
            ref = writer.run_ref(run)
            row_time = None
            if history:
                dropped, row_time = writer.log_history(run, history)
                if dropped:
                    keys = sorted({str(p.key) for p in dropped})
                    warnings.warn(
                        f"W&B run {ref}: {len(dropped)} point(s) of {_some(keys)} at negative "
                        f"step(s) not copied: W&B keeps no step below 0", AipmWarning,
                        stacklevel=2)
            writer.write_record(run, record, self._baseline_examples(record), row_time)
        except BaseException:
            writer.finish(run, 1)
            raise
        writer.finish(run, 0)
        if source:
            try:
                writer.save_copy(run, source, target)
            except OSError as e:
                warnings.warn(f"could not write '{writer.COPY_FILE}' for W&B run {ref} ({e}); "
                              f"pushing {source} again writes another copy", AipmWarning,
                              stacklevel=2)
        return ref

    def _find_copy(self, source: str, target: str | None, entity: str | None,
                   project: str) -> str | None:
        """A complete copy of run ``source`` in ``target`` (see :meth:`write_run`)."""
        from . import writer

        mode = writer.run_mode(self.extra)
        if mode in ("offline", "dryrun"):
            return writer.find_offline_copy(self.extra, source, target)
        if mode == "disabled":  # wandb.init refuses it, with the reason
            return None
        from . import remote

        path = f"{entity}/{project}" if entity else project
        return remote.find_copy(self._api_(), path, source, convert.source_tag(source),
                                convert.RUN_JSON)

    def start_run(self, record: RunRecord, target: str | None = None) -> str:
        from . import writer

        convert.parse_project(target)
        run = writer.new_record_run(record, target, self.extra)
        ref = writer.run_ref(run)
        try:  # offline: the run's target, in case wandb-core never writes a block
            writer.save_target(run, target, record.name)
        except Exception as e:  # noqa: BLE001 - only needed to resume a killed run
            warnings.warn(f"could not write '{writer.TARGET_FILE}' for W&B run {ref} ({e}); "
                          f"if this process is killed early, `aipm sync` cannot reopen the run",
                          AipmWarning, stacklevel=2)
        self._live[ref] = run
        self._streams[ref] = _Stream()
        return ref

    @staticmethod
    def _key(ref: str) -> str:
        return ref if ref.startswith("wandb:") else f"wandb:{ref}"

    def _live_run(self, ref: str) -> Any:
        key = self._key(ref)
        run = self._live.get(key)
        if run is None:  # a run started by another process (aipm sync replays a spool)
            from . import writer

            run = self._live[key] = writer.resume_run(key, self.extra)
        return run

    def log_points(self, ref: str, points: Sequence[MetricPoint]) -> None:
        """One ``run.log`` per step: points grouped by step, steps in increasing order.

        Values go as they are: NaN and ±inf included (W&B stores both). W&B drops a point
        whose step is below the run's current step (a step logged before, or a negative
        one) with a warning that the quiet settings silence; such points are not sent: an
        ``AipmWarning`` names them (once per run and key set, with counts) and
        :meth:`finish_run` keeps their values out of the run's summary.
        """
        run = self._live_run(ref)
        key = self._key(ref)
        st = self._streams.setdefault(key, _Stream())
        if st.step is None:  # a resumed run continues at the step it reached
            st.step = max(0, int(getattr(run, "starting_step", 0) or 0))
        floor = st.step
        by_step: dict[int, dict[str, float]] = defaultdict(dict)
        late: list[MetricPoint] = []
        for p in points:
            k, v, s = str(p.key), float(p.value), int(p.step)
            if s < floor:
                late.append(p)
                st.last_seen[k] = (v, True)
            else:
                by_step[s][k] = v
                st.last_seen[k] = (v, False)
        for step in sorted(by_step):
            run.log(by_step[step], step=step)
            st.step = step  # the same step again still merges into this row
            st.delivered.update(by_step[step])
        if late:
            self._warn_late(key, st, late, floor)

    @staticmethod
    def _warn_late(ref: str, st: _Stream, late: Sequence[MetricPoint], floor: int) -> None:
        st.dropped += len(late)
        keys = frozenset(str(p.key) for p in late)
        if keys in st.warned_keys:
            return
        st.warned_keys.add(keys)
        st.warned += len(late)
        steps = sorted({int(p.step) for p in late})
        warnings.warn(
            f"W&B run {ref}: {len(late)} point(s) of {_some(sorted(keys))} at step(s) "
            f"{_some(steps)} not logged: W&B keeps only steps at or above the run's current "
            f"step ({floor}), never a negative one, and drops the rest; they are left out of "
            f"the run's summary too (further drops of these keys are counted, not repeated)",
            AipmWarning, stacklevel=3)

    @staticmethod
    def _summary_consistent(st: _Stream, record: RunRecord) -> RunRecord:
        """``record`` with each metric whose last logged value W&B dropped set to the last
        value W&B holds for that key (left out when it holds none): the summary never
        shows a value that is missing from the run's history."""
        import dataclasses

        from aipm_tracking.schema import MetricValue

        metrics = dict(record.metrics)
        changed = False
        for k, (v, dropped) in st.last_seen.items():
            mv = metrics.get(k)
            if not dropped or mv is None or not _same(float(mv.value), v):
                continue
            changed = True
            if k in st.delivered:
                metrics[k] = MetricValue(st.delivered[k])
            else:
                del metrics[k]
        return dataclasses.replace(record, metrics=metrics) if changed else record

    def alert(self, ref: str, title: str, text: str) -> None:
        """``run.alert`` on a streaming run (the Tracker's guardrail breach mid-training)."""
        from . import writer

        run = self._live_run(ref)
        run.alert(title=title[:200], text=text[:4000] or title[:200],
                  level=writer._wandb().AlertLevel.WARN)

    def finish_run(self, ref: str, status: str = "finished",
                   record: RunRecord | None = None) -> None:
        from . import writer

        run = self._live_run(ref)
        key = self._key(ref)
        st = self._streams.get(key)
        try:
            if st is not None and st.dropped > st.warned:
                warnings.warn(f"W&B run {key}: {st.dropped} point(s) in all were not logged "
                              f"(steps below the run's current step)", AipmWarning,
                              stacklevel=2)
            if record is not None:
                if st is not None:
                    record = self._summary_consistent(st, record)
                writer.write_record(run, record, self._baseline_examples(record))
        finally:
            writer.finish(run, 0 if status == "finished" else 1)
            self._live.pop(key, None)
            self._streams.pop(key, None)

    def write_comparison(self, comparison: Comparison, target: str | None = None) -> str:
        from . import writer

        convert.parse_project(target)
        return writer.write_comparison(comparison, target, self.extra)


__all__ = ["WandbBackend", "find_log"]
