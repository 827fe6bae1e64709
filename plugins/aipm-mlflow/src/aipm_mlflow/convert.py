"""MLflow runs <-> :class:`~aipm_tracking.schema.RunRecord` (summary level, no artifacts).

Runs written by aipm carry ``aipm.*`` tags, their keys are decoded back to aipm names
(:mod:`aipm_mlflow.keys`; ``aipm.key_format`` says which encoding); runs written by plain MLflow
code are read as they are: their metrics renamed through ``metric_map`` (foreign name ->
canonical), params as config (secret-looking ones redacted, DESIGN §8b), ``mlflow.runName`` as
name, the first dataset input as dataset.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from aipm_tracking.redact import redact_config
from aipm_tracking.schema import DatasetInfo, MetricValue, ModelInfo, RunRecord

from .keys import (
    KEY_FORMAT,
    KEY_FORMAT_V2,
    MAX_TAG_VALUE_LENGTH,
    from_legacy_key,
    from_mlflow_key,
    from_mlflow_key_v2,
    legacy_to_mlflow_key,
    to_mlflow_key,
    to_mlflow_key_v2,
)

SCHEME = "mlflow"
#: Tag keys aipm writes (and reads back).
TAG_SCHEMA = "aipm.schema"
TAG_STATUS = "aipm.status"
TAG_SOURCE = "aipm.source_id"
TAG_RUN_ID = "aipm.run_id"
TAG_MODEL = "aipm.model"
TAG_MODEL_VERSION = "aipm.model_version"
TAG_GUARDRAILS = "aipm.guardrails_hash"
TAG_DATASET = "aipm.dataset"  # JSON of DatasetInfo
TAG_EXAMPLES = "aipm.examples_artifact"
TAG_LOGGED_MODEL = "aipm.logged_model_id"
TAG_KIND = "aipm.kind"
TAG_RECORD = "aipm.record"  # artifact path of the full RunRecord JSON, once written
TAG_KEY_FORMAT = "aipm.key_format"  # keys encoded by keys.to_mlflow_key (absent: older plugin)
#: On a run written with its series (a copied run's history): how many points were copied.
TAG_HISTORY = "aipm.history_points"
#: MLflow keys of summary metrics that have no series (JSON lists; ``.2``, ``.3`` ... when
#: one tag value cannot hold them all): one point each, which is not a series.
TAG_SUMMARY_KEYS = "aipm.summary_keys"
RUN_JSON = "aipm/run.json"
EXAMPLES_PARQUET = "aipm/examples.parquet"

_STATUS = {"RUNNING": "running", "SCHEDULED": "running", "FINISHED": "finished",
           "FAILED": "failed", "KILLED": "killed"}
TO_MLFLOW_STATUS = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED",
                    "incomplete": "FAILED"}


def ms_to_iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc).isoformat()


def iso_to_ms(text: str | None) -> int | None:
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def status_of(run: Any) -> str:
    """aipm status of an MLflow run (``incomplete`` when an aipm push did not finish)."""
    if run.data.tags.get(TAG_STATUS) == "incomplete":
        return "incomplete"
    return _STATUS.get(str(run.info.status), str(run.info.status).lower())


def is_aipm_run(run: Any) -> bool:
    return TAG_SCHEMA in run.data.tags


def _same(key: str) -> str:
    return key


def _same_key(name: str, what: str = "metric") -> str:
    return name


#: What a key encoder is called with: ``encode(name, what)`` (``what`` names the kind of key
#: in errors: ``metric``, ``config``, ``tag``).
Encoder = Callable[..., str]

_DECODERS: dict[str, Callable[[str], str]] = {KEY_FORMAT: from_mlflow_key,
                                              KEY_FORMAT_V2: from_mlflow_key_v2}
_ENCODERS: dict[str, Encoder] = {KEY_FORMAT: to_mlflow_key, KEY_FORMAT_V2: to_mlflow_key_v2}
#: Key format of runs written by plugins older than ``aipm.key_format``.
LEGACY = "legacy"


def run_key_format(tags: Mapping[str, str]) -> str | None:
    """Key format of a run with these tags: ``"3"``/``"2"``, :data:`LEGACY` (an aipm run of an
    older plugin), or None (not written by aipm: keys are read as they are)."""
    fmt = tags.get(TAG_KEY_FORMAT)
    if fmt in _DECODERS:
        return fmt
    if TAG_SCHEMA in tags:
        return LEGACY
    return None


def key_decoder(tags: Mapping[str, str]) -> Callable[[str], str]:
    """MLflow metric key -> aipm name for a run with these tags: decode only what aipm
    encoded."""
    fmt = run_key_format(tags)
    if fmt is None:
        return _same
    return _DECODERS.get(fmt, from_legacy_key)


def name_decoder(tags: Mapping[str, str]) -> Callable[[str], str]:
    """Param / tag key -> aipm name: older plugins encoded only metric names as slices, so
    their param and tag keys are read as they are."""
    return _DECODERS.get(run_key_format(tags) or "", _same)


def key_encoder(tags: Mapping[str, str]) -> Encoder:
    """aipm name -> the MLflow key it has in a run with these tags (to read its history)."""
    fmt = run_key_format(tags)
    if fmt is None:
        return _same_key
    return _ENCODERS.get(fmt, legacy_to_mlflow_key)


def write_encoder(fmt: str | None) -> Encoder:
    """The encoder that writes more keys into a run of key format ``fmt`` (its own, so a run
    keeps one encoding; runs not written by aipm get the current one)."""
    if fmt == LEGACY:
        return legacy_to_mlflow_key
    return _ENCODERS.get(fmt or KEY_FORMAT, to_mlflow_key)


def summary_keys_tags(keys: list[str], max_len: int = MAX_TAG_VALUE_LENGTH
                      ) -> list[tuple[str, str]]:
    """Tags listing ``keys`` (:data:`TAG_SUMMARY_KEYS`, then ``.2``, ``.3`` ...), each
    value a JSON list of at most ``max_len`` characters."""
    out: list[tuple[str, str]] = []
    chunk: list[str] = []
    for key in keys:
        if chunk and len(json.dumps([*chunk, key])) > max_len:
            out.append((TAG_SUMMARY_KEYS if not out else f"{TAG_SUMMARY_KEYS}.{len(out) + 1}",
                        json.dumps(chunk)))
            chunk = []
        chunk.append(key)
    if chunk:
        out.append((TAG_SUMMARY_KEYS if not out else f"{TAG_SUMMARY_KEYS}.{len(out) + 1}",
                    json.dumps(chunk)))
    return out


def summary_only_keys(tags: Mapping[str, str]) -> set[str]:
    """MLflow keys a run's :data:`TAG_SUMMARY_KEYS` tags list (unreadable values: none)."""
    out: set[str] = set()
    for k, v in tags.items():
        if k == TAG_SUMMARY_KEYS or k.startswith(TAG_SUMMARY_KEYS + "."):
            try:
                keys = json.loads(v)
            except ValueError:
                continue
            if isinstance(keys, list):
                out.update(str(x) for x in keys)
    return out


def _dataset_of(run: Any, tags: Mapping[str, str]) -> DatasetInfo:
    raw = tags.get(TAG_DATASET)
    if raw:
        try:
            return DatasetInfo.from_dict(json.loads(raw))
        except (ValueError, TypeError):
            pass
    inputs = getattr(getattr(run, "inputs", None), "dataset_inputs", None) or []
    if not inputs:
        return DatasetInfo()
    ds = inputs[0].dataset
    size = None
    try:
        size = int(json.loads(ds.profile or "{}").get("num_rows"))
    except (ValueError, TypeError, AttributeError):
        size = None
    return DatasetInfo(name=ds.name or None, size=size, digest=ds.digest or None)


def _model_of(tags: Mapping[str, str], params: Mapping[str, str], name: str) -> ModelInfo:
    model = tags.get(TAG_MODEL) or params.get("model_name") or params.get("model") \
        or tags.get("model") or name
    version = tags.get(TAG_MODEL_VERSION) or params.get("model_version") \
        or tags.get("model_version") or ""
    return ModelInfo(str(model), str(version))


def metric_value(value: Any) -> float:
    """A metric value as MLflow returns it, with ±inf restored: MLflow's stores clamp ±inf to
    ±1.7976931348623157e308 (the largest double), which no real metric reaches."""
    v = float(value)
    return math.copysign(math.inf, v) if abs(v) == sys.float_info.max else v


def map_metrics(raw: Mapping[str, float], metric_map: Mapping[str, str],
                decode: Callable[[str], str] = _same) -> dict[str, MetricValue]:
    """MLflow metric keys -> canonical names (``decode``: see :func:`key_decoder`);
    ``metric_map`` entries win over plain names."""
    out: dict[str, MetricValue] = {}
    mapped: set[str] = set()
    for key, value in raw.items():
        if key in metric_map:
            canon = metric_map[key]
            out[canon] = MetricValue(metric_value(value))
            mapped.add(canon)
    for key, value in raw.items():
        if key in metric_map:
            continue
        canon = decode(key)
        if canon not in mapped:
            out[canon] = MetricValue(metric_value(value))
    return out


def restore_infinities(rec: RunRecord, run: Any) -> None:
    """``aipm/run.json`` is strict JSON (±inf written as null): take ±inf back from the run's
    MLflow metrics, where a null stands for one."""
    raw = map_metrics(run.data.metrics, {}, key_decoder(dict(run.data.tags)))
    for k, mv in list(rec.metrics.items()):
        if math.isnan(mv.value) and k in raw and math.isinf(raw[k].value):
            rec.metrics[k] = dataclasses.replace(mv, value=raw[k].value)


def run_to_record(run: Any, metric_map: Mapping[str, str] | None = None) -> RunRecord:
    """Summary :class:`RunRecord` of an MLflow run (from ``get_run`` / ``search_runs``)."""
    info, data = run.info, run.data
    tags: dict[str, str] = dict(data.tags)
    params: dict[str, str] = dict(data.params)
    decode, decode_name = key_decoder(tags), name_decoder(tags)
    name = tags.get("mlflow.runName") or getattr(info, "run_name", None) or info.run_id
    user_tags = {decode_name(k): v for k, v in tags.items()
                 if not k.startswith(("mlflow.", "aipm.")) or k == "aipm.source_ref"}
    return RunRecord(
        run_id=info.run_id,
        name=str(name),
        model=_model_of(tags, params, str(name)),
        dataset=_dataset_of(run, tags),
        metrics=map_metrics(data.metrics, metric_map or {}, decode),
        config=redact_config({decode_name(k): v for k, v in params.items()}),
        tags=user_tags,
        guardrails_hash=tags.get(TAG_GUARDRAILS) or None,
        created_at=ms_to_iso(info.start_time) or "",
        finished_at=ms_to_iso(info.end_time),
        status=status_of(run),
        ref=f"{SCHEME}:{info.run_id}",
        examples_stored=bool(tags.get(TAG_EXAMPLES)),  # set once the table is uploaded
    )
