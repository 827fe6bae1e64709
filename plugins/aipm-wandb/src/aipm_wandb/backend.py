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
from typing import Any

from aipm_tracking.backends.base import BackendOptions, BaseBackend
from aipm_tracking.errors import AipmWarning, DataError, InvalidReferenceError, UsageError
from aipm_tracking.schema import Comparison, MetricPoint, RunRecord

from . import convert
from .offline import LocalRun, find_log, read_local_run, read_table_file


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

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options or BackendOptions()
        self.extra = dict(self.options.extra or {})
        self._live: dict[str, Any] = {}  # ref -> open wandb run (streaming)
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
        lr = read_local_run(path)
        ref = f"wandb:{lr.run_dir}"
        run_json = None
        rj = os.path.join(lr.files_dir, convert.RUN_JSON)
        if os.path.isfile(rj):
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
        if with_examples:
            rec.examples = self._local_examples(lr)
        return rec

    def _local_examples(self, lr: LocalRun) -> Any:
        pq_path = os.path.join(lr.files_dir, convert.EXAMPLES_PARQUET)
        if os.path.isfile(pq_path):
            import pandas as pd

            try:
                return pd.read_parquet(pq_path)
            except Exception as e:  # noqa: BLE001 - pyarrow raises several types
                raise DataError(f"cannot read '{pq_path}': {e}") from None
        keys = convert.examples_table_keys(lr.summary, self.extra.get("examples_table"))
        if not keys:
            return None
        import pandas as pd

        frames = [read_table_file(lr.run_dir, lr.summary[k]) for k in keys]
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
        state = str(getattr(run, "state", "") or "")
        status = {"finished": "finished", "running": "running", "crashed": "failed",
                  "failed": "failed", "killed": "killed"}.get(state, "incomplete")
        rec = convert.record_from_wandb(
            run_id=r, ref=f"wandb:{e}/{p}/{r}", display_name=str(run.name or r),
            config=dict(run.config or {}), summary=summary,
            metric_map=self.options.metric_map,
            created_at=convert.iso_time(getattr(run, "created_at", None)), status=status,
            run_json=run_json)
        if status != "finished" and rec.status in ("finished", "running"):
            rec.status = status
        if with_examples:
            if convert.EXAMPLES_PARQUET in files:
                import pandas as pd

                data = remote.download(run, convert.EXAMPLES_PARQUET)
                if data is not None:
                    rec.examples = pd.read_parquet(io.BytesIO(data))
            else:
                keys = convert.examples_table_keys(summary, self.extra.get("examples_table"))
                if keys:
                    import pandas as pd

                    try:
                        frames = [remote.read_table(run, k, summary[k]) for k in keys]
                    except DataError as err:
                        warnings.warn(f"{err}; the run is read without per-example data",
                                      AipmWarning, stacklevel=2)
                    else:
                        rec.examples = (pd.concat(frames, ignore_index=True)
                                        if len(frames) > 1 else frames[0])
        return rec

    def list_runs(self, target: str | None = None, *, filter: str | None = None,
                  limit: int | None = None) -> Iterator[RunRecord]:
        """Runs of ``ENTITY/PROJECT`` (newest first, paged), or of a local ``wandb/`` dir.

        ``filter``: a W&B MongoDB-style JSON filter (``{"state": "finished"}``) or a regular
        expression on the display name.
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 0):
            raise UsageError(f"limit must be a non-negative integer, got {limit!r}")
        if target and os.path.isdir(os.path.expanduser(target)):
            return self._list_local(os.path.expanduser(target), filter, limit)
        return self._list_remote(target, filter, limit)

    def _list_local(self, folder: str, filter: str | None,
                    limit: int | None) -> Iterator[RunRecord]:
        import glob
        import re

        dirs = [d for d in glob.glob(os.path.join(glob.escape(folder), "*run-*"))
                if os.path.isdir(d) and not os.path.islink(d)]
        recs = []
        for d in dirs:
            try:
                recs.append(self._read_local(d, with_examples=False))
            except DataError:
                continue
        if filter:
            try:
                pat = re.compile(filter)
            except re.error as e:
                raise UsageError(f"--filter for local W&B runs is a regular expression on "
                                 f"the run name: {e}") from None
            recs = [r for r in recs if pat.search(r.name)]
        recs.sort(key=lambda r: r.created_at or "", reverse=True)
        return iter(recs[:limit] if limit is not None else recs)

    def _list_remote(self, target: str | None, filter: str | None,
                     limit: int | None) -> Iterator[RunRecord]:
        from . import remote

        entity, project = convert.parse_project(target)
        if entity is None:
            raise InvalidReferenceError("listing W&B runs needs ENTITY/PROJECT")
        filters: dict[str, Any] | None = None
        if filter:
            text = filter.strip()
            if text.startswith("{"):
                try:
                    filters = json.loads(text)
                except ValueError as e:
                    raise UsageError(f"W&B filter is not valid JSON: {e}") from None
            else:
                filters = {"display_name": {"$regex": text}}
        per_page = int(self.extra.get("per_page", 50))
        api = self._api_()
        for run in remote.iter_runs(api, f"{entity}/{project}", filters=filters,
                                    per_page=per_page, limit=limit, quiet=self.options.quiet):
            state = str(getattr(run, "state", "") or "")
            yield convert.record_from_wandb(
                run_id=run.id, ref=f"wandb:{entity}/{project}/{run.id}",
                display_name=str(run.name or run.id), config=dict(run.config or {}),
                summary=dict(run.summary_metrics or {}), metric_map=self.options.metric_map,
                created_at=convert.iso_time(getattr(run, "created_at", None)),
                status="finished" if state == "finished" else (state or "incomplete"))

    def read_history(self, locator: str, keys: Sequence[str] | None = None) -> list[MetricPoint]:
        local = self._local_path(locator)
        if local is not None:
            return _points_from_rows(read_local_run(local).history, keys)
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
                warnings.warn(f"baseline '{name}' named by run '{record.name}' could not be "
                              f"loaded ({e}); the changed-outcome column is left out",
                              AipmWarning, stacklevel=3)
        return None

    def write_run(self, record: RunRecord, target: str | None = None) -> str:
        from . import writer

        convert.parse_project(target)  # validate before starting anything
        run = writer.new_record_run(record, target, self.extra)
        try:
            writer.write_record(run, record, self._baseline_examples(record))
            ref = writer.run_ref(run)
        except BaseException:
            writer.finish(run, 1)
            raise
        writer.finish(run, 0)
        return ref

    def start_run(self, record: RunRecord, target: str | None = None) -> str:
        from . import writer

        convert.parse_project(target)
        run = writer.new_record_run(record, target, self.extra)
        ref = writer.run_ref(run)
        self._live[ref] = run
        return ref

    def _live_run(self, ref: str) -> Any:
        key = ref if ref.startswith("wandb:") else f"wandb:{ref}"
        run = self._live.get(key)
        if run is None:  # a run started by another process (aipm sync replays a spool)
            from . import writer

            run = self._live[key] = writer.resume_run(key, self.extra)
        return run

    def log_points(self, ref: str, points: Sequence[MetricPoint]) -> None:
        """One ``run.log`` per step: points grouped by step, steps in increasing order."""
        run = self._live_run(ref)
        by_step: dict[int, dict[str, float]] = defaultdict(dict)
        for p in points:
            v = float(p.value)
            by_step[int(p.step)][str(p.key)] = v if math.isfinite(v) else float("nan")
        for step in sorted(by_step):
            run.log(by_step[step], step=step)

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
        key = ref if ref.startswith("wandb:") else f"wandb:{ref}"
        try:
            if record is not None:
                writer.write_record(run, record, self._baseline_examples(record))
        finally:
            writer.finish(run, 0 if status == "finished" else 1)
            self._live.pop(key, None)

    def write_comparison(self, comparison: Comparison, target: str | None = None) -> str:
        from . import writer

        convert.parse_project(target)
        return writer.write_comparison(comparison, target, self.extra)


__all__ = ["WandbBackend", "find_log"]
