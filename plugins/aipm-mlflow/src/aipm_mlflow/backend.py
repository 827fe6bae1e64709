"""The ``mlflow`` backend: push, pull, list and stream aipm runs through ``MlflowClient``.

Layout of a run written by aipm (experiment = the push target):

* tags ``aipm.schema``, ``aipm.status`` (``incomplete`` until the push is done, then
  ``complete``, set after the run is ended), ``aipm.key_format`` (how aipm names became MLflow
  keys, :mod:`aipm_mlflow.keys`), ``aipm.source_id`` (identifies the pushed record, so a retry finishes the
  same run instead of creating another), ``aipm.model`` / ``aipm.model_version``,
  ``aipm.guardrails_hash``, ``aipm.dataset``; the user's tags; ``mlflow.runName``;
* params = the (redacted, flattened) config; metrics = the summary metrics at step 0, linked
  to a LoggedModel and the dataset where MLflow has them;
* a run written with its series (``aipm push``/``pull`` of a run a Tracker logged:
  ``write_run(..., history=points)``): every point as it was logged (key, step, value,
  time in ms), in ``log_batch`` calls of 1,000 points; a summary metric that has a series is
  not logged again (MLflow's latest value of the key is the series' last point, as for a run
  the Tracker streamed); one without a series (an eval metric, say) is logged once at the
  series' last step, and tags ``aipm.summary_keys`` list those keys, so ``read_history``
  leaves them out (they are not series); tag ``aipm.history_points`` counts the points;
* artifacts ``aipm/run.json`` (the full RunRecord: pull is lossless), ``aipm/examples.parquet``
  (the per-example table), ``aipm/details/*.json`` (reliability bins, confusion matrix ...),
  ``aipm/examples_table.json`` (``log_table``, for the MLflow UI);
* the dataset as an MLflow dataset input (``mlflow.data.from_pandas``) with its digest.

A copied run (tag ``aipm.source_ref``) pushed again to the same experiment returns the
complete copy there (found by ``aipm.source_id``), except a copy without series written
before series were copied (no ``aipm.history_points``) when the run has some: then a new,
complete copy is written.

Everything that can be checked before writing (keys, value sizes, the Parquet table) is
checked before the run is created, so a bad input creates nothing. Writes go through
``log_batch`` in chunks within MLflow's limits (:mod:`aipm_mlflow.keys`); tags naming an
artifact (``aipm.record``, ``aipm.examples_artifact``) are written once it is uploaded; every
failure is one :class:`BackendError` line (:mod:`aipm_mlflow.connect`).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aipm_tracking.backends.base import BackendOptions, BaseBackend
from aipm_tracking.errors import (
    AipmError,
    AipmWarning,
    BackendError,
    DataError,
    RunNotFoundError,
    StoreError,
)
from aipm_tracking.redact import redact_config
from aipm_tracking.refs import validate_run_id
from aipm_tracking.schema import Comparison, MetricPoint, RunRecord

from . import convert as cv
from .connect import (
    configure_http,
    extra,
    guard,
    quiet_store_logs,
    resolve_endpoint,
    sqlite_file,
)
from .keys import (
    KEY_FORMAT,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VALUE_LENGTH,
    MAX_TAG_VALUE_LENGTH,
    chunked,
    flatten_config,
    kv_batches,
    to_mlflow_key,
)

DEFAULT_EXPERIMENT = "aipm"
DEFAULT_COMPARISON_EXPERIMENT = "aipm-comparisons"
UI_TABLE_MAX_ROWS = 20_000  # rows in the log_table copy for the UI (all rows in Parquet)
SCHEMA_SAMPLE_ROWS = 2_000
LIST_PAGE_SIZE = 1000
_SAFE_SOURCE = re.compile(r"^[A-Za-z0-9_.:/@=+-]{1,200}$")
_SAFE_ARTIFACT = re.compile(r"^[A-Za-z0-9_.\-/ ]{1,300}$")


def _warn(msg: str) -> None:
    warnings.warn(msg, AipmWarning, stacklevel=3)


@dataclass
class _Plan:
    """What a run's write will send, built (and checked) before anything is written."""

    params: list[tuple[str, str]]
    tags: list[tuple[str, str]]
    metric_keys: dict[str, str]  # aipm name -> MLflow key
    run_doc: dict[str, Any]  # aipm/run.json, without its ref
    tmp: tempfile.TemporaryDirectory[str]  # aipm/ details, overflow values, examples.parquet
    series_keys: dict[str, str] = field(default_factory=dict)  # series name -> MLflow key

    @property
    def root(self) -> Path:
        return Path(self.tmp.name) / "aipm"

    def close(self) -> None:
        self.tmp.cleanup()


class MlflowBackend(BaseBackend):
    """aipm runs in an MLflow tracking store (SQLite, a tracking server, or any SQL store)."""

    scheme = "mlflow"

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options or BackendOptions()
        self.endpoint = resolve_endpoint(self.options)
        configure_http(self.options)
        quiet_store_logs()
        self._client: Any = None  # made on first use: making it creates a SQLite store
        self._keys: dict[tuple[str, str], str] = {}  # (key format, name) -> MLflow key
        self._formats: dict[str, str] = {}  # run id -> the key format its keys are written in
        self._unwritable: set[tuple[str, str]] = set()  # (run id, name) dropped with a warning
        self._warned: set[str] = set()
        self._experiments: dict[str, str] = {}

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` (created on first use)."""
        if self._client is None:
            with guard(self.endpoint, "connect"):
                from mlflow.tracking import MlflowClient

                self._client = MlflowClient(tracking_uri=self.endpoint.uri)
        return self._client

    @client.setter
    def client(self, value: Any) -> None:
        self._client = value

    # -- helpers ---------------------------------------------------------------------
    def _guard(self, op: str) -> Any:
        return guard(self.endpoint, op)

    def _must_exist(self) -> None:
        """Reading never creates a store: a SQLite file that is not there is an error (MLflow
        would create an empty database, in the current directory by default)."""
        path = sqlite_file(self.endpoint.uri)
        if path is not None and not os.path.exists(path):
            raise StoreError(f"no MLflow store at {os.path.abspath(path)} (give --mlflow-uri "
                             f"or set MLFLOW_TRACKING_URI)")

    def _run_id(self, locator: str) -> str:
        loc = locator.strip()
        for prefix in ("mlflow:", "runs:/"):
            if loc.startswith(prefix):
                loc = loc[len(prefix):]
        loc = loc.strip("/")
        return validate_run_id(loc, "MLflow run id")

    def _key(self, name: str, fmt: str = KEY_FORMAT) -> str:
        key = self._keys.get((fmt, name))
        if key is None:
            key = self._keys[(fmt, name)] = cv.write_encoder(fmt)(name)
        return key

    def _run_format(self, run_id: str, tags: dict[str, str] | None = None) -> str:
        """Key format to write run ``run_id`` in: its own (``aipm.key_format``, or
        :data:`~aipm_mlflow.convert.LEGACY` for a run of an older plugin), so a run continued
        after an upgrade keeps one encoding. Read once per run."""
        fmt = self._formats.get(run_id)
        if fmt is not None:
            return fmt
        if tags is None:
            tags = dict(self._get_run(run_id).data.tags)
        found = cv.run_key_format(tags)
        if found is None:  # not an aipm run (yet): the current format, said by its tag
            found = KEY_FORMAT
            self._log_batch(run_id, tags=[(cv.TAG_KEY_FORMAT, KEY_FORMAT)], op="tag key format")
        self._formats[run_id] = found
        return found

    def _warn_once(self, msg: str) -> None:
        if msg not in self._warned:
            self._warned.add(msg)
            _warn(msg)

    def _experiment_id(self, name: str | None, *, create: bool = True) -> str:
        """Id of the experiment ``name`` (created when absent and ``create``)."""
        name = (name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT).strip()
        if name in self._experiments:
            return self._experiments[name]
        with self._guard(f"get experiment '{name}'"):
            exp = self.client.get_experiment_by_name(name)
        if exp is None:
            if not create:
                raise RunNotFoundError(f"no MLflow experiment '{name}' at {self.endpoint.safe}")
            location = None
            db = self.endpoint.sqlite_path
            if db:  # keep a SQLite store's artifacts beside its database, not in ./mlruns
                safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:100] or "experiment"
                location = Path(os.path.abspath(db)).parent.joinpath(
                    "mlartifacts", safe).as_uri()
            try:
                with self._guard(f"create experiment '{name}'"):
                    exp_id = self.client.create_experiment(name, artifact_location=location)
            except BackendError:
                with self._guard(f"get experiment '{name}'"):  # created concurrently
                    exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            if exp.lifecycle_stage == "deleted":
                raise BackendError(f"MLflow experiment '{name}' is deleted; restore it "
                                   f"('mlflow experiments restore') or pick another name")
            exp_id = exp.experiment_id
        self._experiments[name] = str(exp_id)
        return str(exp_id)

    @staticmethod
    def _source_id(record: RunRecord) -> str:
        """What identifies a pushed record across retries (its source reference)."""
        src = record.tags.get("aipm.source_ref") or record.ref or (
            f"aipm:{record.run_id}" if record.run_id else "")
        if not src:
            body = record.to_json(sort_keys=True)
            return "sha256:" + hashlib.sha256(body.encode()).hexdigest()[:32]
        if not _SAFE_SOURCE.match(src):
            return "sha256:" + hashlib.sha256(src.encode()).hexdigest()[:32]
        return src

    def _find_by_source(self, exp_id: str, source_id: str,
                        need_history: bool = False) -> Any | None:
        """The run written for ``source_id``: a complete one first, else an unfinished one
        (a push to finish). ``need_history``: a complete run without series points, written
        before series were copied, does not count (a new copy is written)."""
        flt = f"tags.`{cv.TAG_SOURCE}` = '{source_id}'"
        with self._guard("search runs"):
            runs = self.client.search_runs([exp_id], filter_string=flt, max_results=10,
                                           order_by=["attributes.start_time DESC"])
        for run in runs:
            tags = run.data.tags
            if tags.get(cv.TAG_STATUS) == "complete" and (
                    not need_history or cv.TAG_HISTORY in tags):
                return run
        for run in runs:
            if run.data.tags.get(cv.TAG_STATUS) != "complete":
                return run
        return None

    def _log_batch(self, run_id: str, metrics: Sequence[Any] = (),
                   params: Sequence[tuple[str, str]] = (),
                   tags: Sequence[tuple[str, str]] = (), op: str = "log_batch") -> None:
        from mlflow.entities import Param, RunTag

        with self._guard(op):
            self.client.log_batch(run_id, metrics=list(metrics),
                                  params=[Param(k, v) for k, v in params],
                                  tags=[RunTag(k, v) for k, v in tags], synchronous=True)

    # -- run contents ----------------------------------------------------------------
    def _record_tags(self, record: RunRecord, overflow: dict[str, str],
                     fmt: str = KEY_FORMAT) -> list[tuple[str, str]]:
        tags: dict[str, str] = {}
        encode = cv.write_encoder(fmt)
        reserved = sorted(str(k) for k in record.tags
                          if str(k).startswith("aipm.") and k != "aipm.source_ref")
        if reserved:  # aipm.status, aipm.key_format ... are the plugin's: never overwritten
            self._warn_once(f"tags {reserved} are not written to MLflow: tags named aipm.* "
                            f"are reserved for aipm's own (except aipm.source_ref)")
        for k, v in record.tags.items():
            if str(k).startswith("mlflow."):  # MLflow's system tags are MLflow's to set
                continue
            if str(k) in reserved:
                continue
            key = encode(str(k), "tag")
            if len(str(v)) > MAX_TAG_VALUE_LENGTH:
                overflow[f"tags/{key}.txt"] = str(v)
                _warn(f"tag '{k}' is {len(str(v))} characters (MLflow allows "
                      f"{MAX_TAG_VALUE_LENGTH}); stored as artifact aipm/tags/{key}.txt")
                continue
            tags[key] = str(v)
        tags.update({
            cv.TAG_SCHEMA: "aipm.run/1",
            cv.TAG_MODEL: record.model.name,
            cv.TAG_MODEL_VERSION: record.model.version,
            cv.TAG_DATASET: json.dumps(record.dataset.to_dict()),
            "mlflow.runName": record.name,
        })
        if record.run_id:
            tags[cv.TAG_RUN_ID] = record.run_id
        if record.guardrails_hash:
            tags[cv.TAG_GUARDRAILS] = record.guardrails_hash
        if fmt != cv.LEGACY:
            tags[cv.TAG_KEY_FORMAT] = fmt
        return list(tags.items())

    def _params(self, config: dict[str, Any], overflow: dict[str, str],
                fmt: str = KEY_FORMAT) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []  # keys are distinct: flatten_config and keys are 1:1
        encode = cv.write_encoder(fmt)
        for k, v in flatten_config(redact_config(config)).items():
            key = encode(k, "config")
            if len(v) > MAX_PARAM_VALUE_LENGTH:
                overflow[f"params/{key}.txt"] = v
                _warn(f"config value '{k}' is {len(v)} characters (MLflow params allow "
                      f"{MAX_PARAM_VALUE_LENGTH}); stored whole as artifact aipm/params/{key}.txt"
                      f" instead of a param")
                continue
            out.append((key, v))
        return out

    def _logged_model(self, exp_id: str, run_id: str, record: RunRecord,
                      resumed: bool) -> str | None:
        """A LoggedModel for the run's model (MLflow 3), reused when a push is retried."""
        if not record.model.name or not hasattr(self.client, "create_logged_model"):
            return None
        if resumed:
            with self._guard("search logged models"):
                found = self.client.search_logged_models(
                    experiment_ids=[exp_id], filter_string=f"source_run_id = '{run_id}'",
                    max_results=1)
            if found:
                return str(found[0].model_id)
        name = re.sub(r"[/:.%\"']", "-", record.model.name) or "model"
        with self._guard("create logged model"):
            lm = self.client.create_logged_model(
                exp_id, name=name, source_run_id=run_id, model_type="aipm-eval",
                tags={cv.TAG_MODEL: record.model.name,
                      cv.TAG_MODEL_VERSION: record.model.version or ""})
            self.client.finalize_logged_model(lm.model_id, "READY")
        return str(lm.model_id)

    def _dataset(self, run_id: str, record: RunRecord) -> tuple[str | None, str | None]:
        """Log the eval set as an MLflow dataset input; return (name, digest) for metrics."""
        if record.examples is None:
            return None, None
        from mlflow.data.pandas_dataset import from_pandas
        from mlflow.entities import DatasetInput, InputTag

        digest = record.dataset.digest[:36] if record.dataset.digest else None
        name = record.dataset.name or "eval"
        with self._guard("log dataset"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = from_pandas(record.examples, name=name, digest=digest)
            _sample_schema(ds, record.examples)
            entity = ds._to_mlflow_entity()
            self.client.log_inputs(run_id, datasets=[DatasetInput(
                entity, tags=[InputTag("mlflow.data.context", "eval")])])
        return name, ds.digest

    def _plan(self, record: RunRecord, fmt: str = KEY_FORMAT,
              streamed: str | None = None,
              history: Sequence[MetricPoint] | None = None) -> _Plan:
        """Keys (in key format ``fmt``), params, tags and the artifact files of ``record``
        (and the keys of ``history``'s series): every error a bad input can cause (a key
        MLflow cannot take, two names for one key, a table Parquet cannot hold) is raised
        here, before the run exists.

        ``streamed``: the id of the streamed run being finished; a metric whose key MLflow
        cannot take is then left out of the summary with a warning (``log_points`` dropped
        its points already; ``aipm/run.json`` keeps it) instead of blocking the finish."""
        overflow: dict[str, str] = {}
        params = self._params(record.config, overflow, fmt)
        tags = self._record_tags(record, overflow, fmt)
        metric_keys: dict[str, str] = {}
        for k in record.metrics:
            try:
                metric_keys[k] = self._key(str(k), fmt)
            except BackendError as e:
                if streamed is None:
                    raise
                if (streamed, str(k)) not in self._unwritable:
                    self._unwritable.add((streamed, str(k)))
                    _warn(f"{e}; it is left out of the MLflow summary")
        series_keys = {name: self._key(str(name), fmt)
                       for name in dict.fromkeys(p.key for p in history or ())}
        doc = record.to_dict()
        doc["config"] = redact_config(record.config)
        try:
            json.dumps(doc, allow_nan=False, default=str)
        except ValueError as e:
            raise DataError(f"run record cannot be stored as JSON: {e}") from e
        tmp = tempfile.TemporaryDirectory(prefix="aipm-mlflow-")
        try:
            root = Path(tmp.name) / "aipm"
            (root / "details").mkdir(parents=True)
            for key, value in record.details.items():
                safe = re.sub(r"[^A-Za-z0-9_.-]", "_", str(key))
                (root / "details" / f"{safe}.json").write_text(
                    json.dumps(value, default=str))
            for rel, text in overflow.items():
                p = root / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text, encoding="utf-8")
            if record.examples is not None:
                try:
                    record.examples.to_parquet(root / "examples.parquet", index=False)
                except Exception as e:  # noqa: BLE001 - pyarrow's many type errors
                    raise DataError(f"per-example table cannot be written as Parquet: {e}") from e
        except BaseException:
            tmp.cleanup()
            raise
        return _Plan(params, tags, metric_keys, doc, tmp, series_keys)

    def _artifacts(self, run_id: str, record: RunRecord, plan: _Plan, ref: str) -> None:
        """run.json, examples.parquet, details/*.json (+ overflow values), one upload call."""
        doc = dict(plan.run_doc, ref=ref)
        (plan.root / "run.json").write_text(json.dumps(doc, allow_nan=False, default=str))
        with self._guard("upload artifacts"):
            self.client.log_artifacts(run_id, str(plan.root), "aipm")
        if record.examples is not None:
            self._ui_table(run_id, record)

    def _ui_table(self, run_id: str, record: RunRecord) -> None:
        """``log_table`` copy for MLflow's UI: the first ``mlflow_ui_table_max_rows`` rows
        (default 20,000; MLflow serialises it row by row); the tag says when it is a head."""
        assert record.examples is not None
        df = record.examples
        cap = int(extra(self.options, "mlflow_ui_table_max_rows", UI_TABLE_MAX_ROWS))
        if cap <= 0:
            return
        if len(df) > cap:
            df = df.head(cap)
            self._log_batch(run_id, tags=[("aipm.ui_table_rows",
                                           f"first {cap} of {len(record.examples)}")])
        with self._guard("log_table"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.client.log_table(run_id, data=df, artifact_file="aipm/examples_table.json")

    def _write_body(self, exp_id: str, run_id: str, record: RunRecord, plan: _Plan,
                    resumed: bool, logged_params: dict[str, str] | None = None,
                    series: frozenset[str] = frozenset(),
                    history: Sequence[MetricPoint] = ()) -> None:
        """Everything but the run itself. ``series``: metric keys already streamed (their
        latest point is the summary; logging it again at step 0 would pollute the history).
        ``history``: the series points to write (keys in ``plan.series_keys``); the summary
        metrics without a series are then logged at the last step and listed in tags."""
        params = plan.params
        if logged_params:  # MLflow params are write-once: keep the first, say so
            for k, v in params:
                if k in logged_params and logged_params[k] != v:
                    _warn(f"config '{k}' changed during the run ({logged_params[k]!r} -> {v!r});"
                          f" MLflow keeps the first value, {cv.RUN_JSON} has the final one")
            params = [(k, v) for k, v in params if k not in logged_params]
        ts = cv.iso_to_ms(record.finished_at) or cv.iso_to_ms(record.created_at) \
            or int(time.time() * 1000)
        for ps, tg in kv_batches(params, plan.tags):
            self._log_batch(run_id, params=ps, tags=tg, op="log params/tags")
        model_id = self._logged_model(exp_id, run_id, record, resumed)
        ds_name, ds_digest = self._dataset(run_id, record)
        from mlflow.entities import Metric

        step = 0
        history_tags: list[tuple[str, str]] = []
        if history:
            step = self._log_history(run_id, history, plan.series_keys)
            series = series | frozenset(plan.series_keys.values())
            history_tags = [(cv.TAG_HISTORY, str(len(history)))]
            history_tags += cv.summary_keys_tags(
                [key for key in plan.metric_keys.values() if key not in series])
        metrics = [Metric(key, float(record.metrics[k].value), ts, step, model_id=model_id,
                          dataset_name=ds_name, dataset_digest=ds_digest)
                   for k, key in plan.metric_keys.items() if key not in series]
        for chunk in chunked(metrics, MAX_METRICS_PER_BATCH):
            self._log_batch(run_id, metrics=chunk, op="log metrics")
        self._artifacts(run_id, record, plan, f"{cv.SCHEME}:{run_id}")
        # tags that name artifacts: only now that the artifacts are there
        extra_tags = [*history_tags, (cv.TAG_RECORD, cv.RUN_JSON)]
        if record.examples is not None:
            extra_tags.append((cv.TAG_EXAMPLES, cv.EXAMPLES_PARQUET))
        if model_id:
            extra_tags.append((cv.TAG_LOGGED_MODEL, model_id))
        for _, tg in kv_batches([], extra_tags):
            self._log_batch(run_id, tags=tg)

    def _log_history(self, run_id: str, history: Sequence[MetricPoint],
                     keys: dict[str, str]) -> int:
        """Write series points as they were logged (``ceil(len / 1000)`` ``log_batch``
        calls, built a batch at a time); return the last step. A retried push writes them
        again: MLflow's SQL stores skip a point they hold (same key, step, time, value)."""
        from mlflow.entities import Metric

        last = 0
        batch: list[Any] = []
        with self._guard("log series"):
            for i, p in enumerate(history):
                step = int(p.step)
                last = step if i == 0 else max(last, step)
                batch.append(Metric(keys[p.key], float(p.value), int(p.timestamp * 1000), step))
                if len(batch) == MAX_METRICS_PER_BATCH:
                    self.client.log_batch(run_id, metrics=batch, synchronous=True)
                    batch = []
            if batch:
                self.client.log_batch(run_id, metrics=batch, synchronous=True)
        return last

    def _end(self, run_id: str, record: RunRecord) -> None:
        status = cv.TO_MLFLOW_STATUS.get(record.status)
        if status:
            end = cv.iso_to_ms(record.finished_at) or int(time.time() * 1000)
            with self._guard("end run"):
                self.client.set_terminated(run_id, status=status, end_time=end)

    def _complete(self, run_id: str, record: RunRecord) -> None:
        """End the run, then tag it complete: ``complete`` is only ever on an ended run, so
        a push that fails in between stays ``incomplete`` and a retry finishes it."""
        self._end(run_id, record)
        self._log_batch(run_id, tags=[(cv.TAG_STATUS, "complete")], op="mark run complete")

    def _create_run(self, exp_id: str, record: RunRecord, source_id: str,
                    status_tag: str, **more_tags: str) -> str:
        tags = {cv.TAG_STATUS: status_tag, cv.TAG_SOURCE: source_id,
                cv.TAG_SCHEMA: "aipm.run/1", cv.TAG_KEY_FORMAT: KEY_FORMAT, **more_tags}
        with self._guard("create run"):
            run = self.client.create_run(exp_id, start_time=cv.iso_to_ms(record.created_at),
                                         tags=tags, run_name=record.name or None)
        self._formats[str(run.info.run_id)] = KEY_FORMAT
        return str(run.info.run_id)

    # -- Backend protocol: whole runs ------------------------------------------------
    def write_run(self, record: RunRecord, target: str | None = None, *,
                  history: Sequence[MetricPoint] | None = None) -> str:
        """Push a run; a retry of an interrupted push finishes that run (no duplicate), and
        a run pushed before returns its complete copy.

        ``history``: the run's series points, written with it (see the module doc). A bad
        input (a key MLflow cannot take, a table Parquet cannot hold) is an error before
        anything is created."""
        history = history or ()
        plan = self._plan(record, history=history)
        try:
            exp_id = self._experiment_id(target)
            source_id = self._source_id(record)
            existing = self._find_by_source(exp_id, source_id, need_history=bool(history))
            if existing is not None and existing.data.tags.get(cv.TAG_STATUS) == "complete":
                if existing.info.status == "RUNNING":  # tagged by an older plugin, never ended
                    self._end(existing.info.run_id, record)
                return f"{cv.SCHEME}:{existing.info.run_id}"
            resumed = existing is not None
            if existing is not None:  # finish it in its own key format
                run_id = str(existing.info.run_id)
                fmt = self._run_format(run_id, dict(existing.data.tags))
                if fmt != KEY_FORMAT:
                    plan.close()
                    plan = self._plan(record, fmt, history=history)
            else:
                run_id = self._create_run(exp_id, record, source_id, "incomplete")
            try:
                self._write_body(exp_id, run_id, record, plan, resumed, history=history)
                self._complete(run_id, record)
            except AipmError as e:  # same class (exit code), with what to do next
                raise type(e)(f"{e} -- run mlflow:{run_id} is left tagged "
                              f"aipm.status=incomplete; push again to finish it") from e
        finally:
            plan.close()
        return f"{cv.SCHEME}:{run_id}"

    def _get_run(self, run_id: str) -> Any:
        self._must_exist()
        with self._guard(f"get run {run_id}"):
            return self.client.get_run(run_id)

    def _download(self, run_id: str, path: str, dst: str) -> str:
        with self._guard(f"download artifact {path}"):
            return str(self.client.download_artifacts(run_id, path, dst_path=dst))

    def _examples_path(self, run: Any) -> str | None:
        tag = run.data.tags.get(cv.TAG_EXAMPLES) or extra(self.options, "examples_artifact")
        if tag:
            if not _SAFE_ARTIFACT.match(tag) or ".." in tag.split("/") or tag.startswith("/"):
                raise DataError(f"artifact path {tag!r} (tag {cv.TAG_EXAMPLES}) is not allowed")
            return str(tag)
        with self._guard("list artifacts"):
            names = {a.path for a in self.client.list_artifacts(run.info.run_id, "aipm")}
        return cv.EXAMPLES_PARQUET if cv.EXAMPLES_PARQUET in names else None

    def _read_examples(self, run_id: str, path: str, tmp: str) -> Any:
        import pandas as pd

        local = self._download(run_id, path, tmp)
        low = path.lower()
        try:
            if low.endswith((".parquet", ".pq")):
                return pd.read_parquet(local)
            if low.endswith(".csv"):
                return pd.read_csv(local)
            if low.endswith((".jsonl", ".ndjson")):
                return pd.read_json(local, lines=True)
            if low.endswith(".json"):  # an MLflow table: {"columns": [...], "data": [...]}
                with open(local, encoding="utf-8") as f:
                    obj = json.load(f)
                return pd.DataFrame(obj["data"], columns=obj["columns"])
        except Exception as e:  # noqa: BLE001
            raise DataError(f"per-example artifact '{path}' of MLflow run {run_id} "
                            f"cannot be read: {e}") from e
        raise DataError(f"per-example artifact '{path}': unknown format "
                        f"(expected .parquet, .csv, .jsonl or an MLflow table .json)")

    def _artifact_exists(self, run_id: str, path: str) -> bool:
        parent = posixpath.dirname(path)
        with self._guard("list artifacts"):
            names = {a.path for a in self.client.list_artifacts(run_id, parent or None)}
        return path in names

    def _read_examples_or_warn(self, run_id: str, path: str, tmp: str) -> Any:
        """The per-example table, or None with a warning when the artifact is not there
        (a push interrupted before its upload): compare then uses the point gate."""
        try:
            return self._read_examples(run_id, path, tmp)
        except (BackendError, RunNotFoundError):  # the download failed (not the parsing)
            try:
                exists = self._artifact_exists(run_id, path)
            except AipmError:
                exists = True  # cannot tell: report the download failure
            if exists:
                raise
        _warn(f"MLflow run {run_id} names per-example artifact '{path}' but it is not there "
              f"(an interrupted push?); read without per-example data")
        return None

    def read_run(self, locator: str, *, with_examples: bool = True) -> RunRecord:
        """Pull a run: aipm runs from ``aipm/run.json``; other runs through ``metric_map``."""
        run_id = self._run_id(locator)
        run = self._get_run(run_id)
        ref = f"{cv.SCHEME}:{run_id}"
        with tempfile.TemporaryDirectory(prefix="aipm-mlflow-") as tmp:
            rec: RunRecord | None = None
            if run.data.tags.get(cv.TAG_RECORD) == cv.RUN_JSON:
                local = self._download(run_id, cv.RUN_JSON, tmp)
                try:
                    rec = RunRecord.from_json(Path(local).read_text(encoding="utf-8"))
                except (ValueError, KeyError, TypeError) as e:
                    raise DataError(f"{cv.RUN_JSON} of MLflow run {run_id} is unreadable: "
                                    f"{e}") from e
            if rec is None:
                rec = cv.run_to_record(run, self.options.metric_map)
            else:
                cv.restore_infinities(rec, run)
                if run.data.tags.get(cv.TAG_STATUS) == "incomplete":
                    rec.status = "incomplete"
            rec.run_id, rec.ref = run_id, ref
            if with_examples:
                path = self._examples_path(run)
                if path:
                    rec.examples = self._read_examples_or_warn(run_id, path, tmp)
        if rec.status == "incomplete":
            _warn(f"MLflow run {run_id} is an unfinished aipm push (aipm.status=incomplete)")
        return rec

    def list_runs(self, target: str | None = None, *, filter: str | None = None,
                  limit: int | None = None) -> Iterator[RunRecord]:
        """Runs of experiment ``target`` (all experiments if None), newest first, paged."""
        self._must_exist()
        if target:
            exp_ids = [self._experiment_id(target, create=False)]
        else:
            with self._guard("search experiments"):
                exp_ids = [e.experiment_id for e in self.client.search_experiments()]
        return self._iter_runs(exp_ids, mlflow_filter(filter or ""), limit)

    def _iter_runs(self, exp_ids: list[str], flt: str, limit: int | None) -> Iterator[RunRecord]:
        progress = _Progress(enabled=not self.options.quiet)
        token: str | None = None
        n = 0
        try:
            while True:
                page_size = LIST_PAGE_SIZE if limit is None else min(LIST_PAGE_SIZE, limit - n)
                if page_size <= 0:
                    return
                with self._guard(f"search runs (filter {flt!r})" if flt else "search runs"):
                    page = self.client.search_runs(
                        exp_ids, filter_string=flt, max_results=page_size,
                        order_by=["attributes.start_time DESC"], page_token=token)
                for run in page:
                    yield cv.run_to_record(run, self.options.metric_map)
                    n += 1
                progress.update(n)
                token = page.token
                if not token or not len(page):
                    return
        finally:
            progress.close()

    # -- streaming (the Tracker) -----------------------------------------------------
    def start_run(self, record: RunRecord, target: str | None = None) -> str:
        """Create a run for streaming (``aipm.status=running``); return ``mlflow:ID``."""
        overflow: dict[str, str] = {}
        params = self._params(record.config, overflow)  # bad keys: an error before the run
        tags = self._record_tags(record, overflow)
        exp_id = self._experiment_id(target)
        source_id = self._source_id(record)
        existing = self._find_by_source(exp_id, source_id) if (
            record.run_id or record.ref) else None
        if existing is not None:
            return f"{cv.SCHEME}:{existing.info.run_id}"
        run_id = self._create_run(exp_id, record, source_id, "running",
                                  **{"aipm.streaming": "1"})
        for ps, tg in kv_batches(params, tags):
            self._log_batch(run_id, params=ps, tags=tg, op="log params/tags")
        return f"{cv.SCHEME}:{run_id}"

    def log_points(self, ref: str, points: Sequence[MetricPoint]) -> None:
        """Write points with ``ceil(len / 1000)`` ``log_batch`` calls (MLflow's limit)."""
        if not points:
            return
        from mlflow.entities import Metric

        run_id = self._run_id(ref)
        fmt = self._run_format(run_id)
        key = self._keys.get
        metrics = []
        for p in points:
            k = key((fmt, p.key))
            if k is None:
                try:
                    k = self._key(p.key, fmt)
                except BackendError as e:  # would block every later batch: drop, say so
                    if (run_id, p.key) not in self._unwritable:
                        self._unwritable.add((run_id, p.key))
                        _warn(f"{e}; its points are not sent to MLflow")
                    continue
            metrics.append(Metric(k, float(p.value), int(p.timestamp * 1000), int(p.step)))
        with self._guard("log points"):
            for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
                self.client.log_batch(run_id, metrics=metrics[i:i + MAX_METRICS_PER_BATCH],
                                      synchronous=True)

    def finish_run(self, ref: str, status: str = "finished",
                   record: RunRecord | None = None) -> None:
        """End a streamed run; with ``record``, also store its summary, details and table."""
        run_id = self._run_id(ref)
        if record is not None:
            plan = self._plan(record, self._run_format(run_id), streamed=run_id)
            try:
                run = self._get_run(run_id)
                self._write_body(run.info.experiment_id, run_id, record, plan, resumed=True,
                                 logged_params=dict(run.data.params),
                                 series=frozenset(run.data.metrics))
            finally:
                plan.close()
        with self._guard("end run"):  # ended first: "complete" only ever marks an ended run
            self.client.set_terminated(run_id, status=cv.TO_MLFLOW_STATUS.get(status, "FINISHED"))
        self._log_batch(run_id, tags=[(cv.TAG_STATUS, "complete")], op="mark run complete")

    def read_history(self, locator: str, keys: Sequence[str] | None = None) -> list[MetricPoint]:
        """Every logged point of the run's series (MLflow pages each key's history); the
        summary metrics a copied run lists in ``aipm.summary_keys`` are not series."""
        run_id = self._run_id(locator)
        run = self._get_run(run_id)
        tags = run.data.tags
        summary_only = cv.summary_only_keys(tags)  # one summary point each: not series
        if keys is None:
            decode = cv.key_decoder(tags)
            pairs = [(decode(k), k) for k in run.data.metrics if k not in summary_only]
        else:
            encode = cv.key_encoder(tags)
            pairs = []
            for name in keys:
                try:
                    key = encode(name)
                except BackendError:  # no such key can exist in MLflow
                    continue
                if key not in summary_only:
                    pairs.append((name, key))
        out: list[MetricPoint] = []
        for name, mkey in pairs:
            with self._guard(f"get metric history '{name}'"):
                hist = self.client.get_metric_history(run_id, mkey)
            out.extend(MetricPoint(name, cv.metric_value(m.value), int(m.step),
                                   m.timestamp / 1000.0)
                       for m in hist)
        out.sort(key=lambda p: (p.step, p.key, p.timestamp))
        return out

    # -- comparisons -----------------------------------------------------------------
    def write_comparison(self, comparison: Comparison, target: str | None = None) -> str:
        """A small run holding the verdict (tags, counts) and ``aipm/comparison.json``."""
        from mlflow.entities import Metric

        exp_id = self._experiment_id(target or DEFAULT_COMPARISON_EXPERIMENT)
        b, c = comparison.baseline, comparison.candidate
        name = f"compare {b.name} -> {c.name}"
        tags = {cv.TAG_STATUS: "incomplete", cv.TAG_KIND: "comparison",
                "aipm.verdict": comparison.verdict, "aipm.gate": comparison.gate,
                "aipm.baseline_ref": str(b.ref or b.name)[:MAX_TAG_VALUE_LENGTH],
                "aipm.candidate_ref": str(c.ref or c.name)[:MAX_TAG_VALUE_LENGTH]}
        if comparison.guardrails_hash:
            tags[cv.TAG_GUARDRAILS] = comparison.guardrails_hash
        with self._guard("create comparison run"):
            run_id = str(self.client.create_run(exp_id, tags=tags, run_name=name).info.run_id)
        now = int(time.time() * 1000)
        counts: dict[str, int] = {}
        for row in comparison.metrics:
            counts[row.verdict] = counts.get(row.verdict, 0) + 1
        metrics = [Metric("exit_code", float(comparison.exit_code), now, 0),
                   Metric("n_blocking", float(sum(r.blocking for r in comparison.metrics)), now, 0)]
        metrics += [Metric(f"n_{v}", float(n), now, 0) for v, n in sorted(counts.items())]
        self._log_batch(run_id, metrics=metrics, op="log comparison metrics")
        with self._guard("upload comparison"):
            self.client.log_dict(run_id, comparison.to_dict(), "aipm/comparison.json")
        self._log_batch(run_id, tags=[(cv.TAG_STATUS, "complete")], op="mark run complete")
        with self._guard("end run"):
            self.client.set_terminated(run_id, status="FINISHED")
        return f"{cv.SCHEME}:{run_id}"


#: ``metrics.NAME``: backquoted, double-quoted, or bare (up to a space, an operator or a
#: quote; a bare name may end in a ``[dim=value]`` slice).
_FILTER_NAME = re.compile(
    r"\b(metrics|params|tags)\."
    r"(?:`(?P<bq>[^`]+)`|\"(?P<dq>[^\"]+)\"|"
    r"(?P<bare>[^\s`'\"=<>!(),\[\]]+(?:\[[^\]\s]+\])?))")
_WHAT = {"metrics": "metric", "params": "config", "tags": "tag"}


def _filter_key(m: re.Match[str]) -> str:
    name = m["bq"] or m["dq"] or m["bare"]
    try:
        key = to_mlflow_key(name, _WHAT[m[1]])
    except BackendError:  # no run can have such a key: let MLflow say what it thinks
        return m[0]
    if m["bare"] is not None and key == name:
        return m[0]
    return f"{m[1]}.`{key}`"


def mlflow_filter(text: str) -> str:
    """Let filters name aipm metrics (and config / tag names): every ``metrics.NAME``,
    backquoted or not, is translated to the MLflow key aipm writes for it, e.g.
    ``metrics.accuracy[slice=de] > 0.9`` -> ``metrics.`accuracy/slice:de` > 0.9`` and
    ``metrics.loss@train < 1`` -> ``metrics.`lossǀ40ǀtrain` < 1``; everything else is
    MLflow's own syntax.

    The key is the one of the current key format (3, the runs this version writes). For a
    name whose key differs between formats, runs written with another one are not matched
    by it: format-2 runs for a name with ``:`` (``eval:acc``) or a ``/`` in a slice value
    (``acc[lang=zh/tw]``), runs of older plugins for any name they wrote with ``_``
    (``loss@train`` was ``loss_train``: filter on that key to find them). Names MLflow
    takes as they are (``accuracy``, ``train/loss``, ``accuracy[slice=de]``) have one key
    in every format."""
    return _FILTER_NAME.sub(_filter_key, text)


def _sample_schema(ds: Any, df: Any) -> None:
    """Give an MLflow PandasDataset the schema of its first rows: MLflow infers it value by
    value in Python (seconds for 100k string rows) and uses it only for display."""
    if len(df) <= SCHEMA_SAMPLE_ROWS:
        return
    try:
        from mlflow.types.utils import _infer_schema

        ds.__dict__["schema"] = _infer_schema(df.head(SCHEMA_SAMPLE_ROWS))
    except Exception:  # noqa: BLE001 - MLflow infers it itself then
        ds.__dict__.pop("schema", None)


class _Progress:
    """A rich spinner + count on stderr while listing, only when stderr is a terminal."""

    def __init__(self, enabled: bool) -> None:
        self._p: Any = None
        self._task: Any = None
        if not (enabled and sys.stderr.isatty()):
            return
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn

        self._p = Progress(SpinnerColumn(), TextColumn("listing MLflow runs: {task.completed}"),
                           console=Console(stderr=True), transient=True)
        self._task = self._p.add_task("list", total=None)
        self._p.start()

    def update(self, n: int) -> None:
        if self._p is not None:
            self._p.update(self._task, completed=n)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None
