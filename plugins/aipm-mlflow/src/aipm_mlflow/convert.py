"""MLflow runs <-> :class:`~aipm_tracking.schema.RunRecord` (summary level, no artifacts).

Runs written by aipm carry ``aipm.*`` tags, their keys are decoded back to aipm names
(:mod:`aipm_mlflow.keys`; ``aipm.key_format`` says which encoding); runs written by plain MLflow
code are read as they are: their metrics renamed through ``metric_map`` (foreign name ->
canonical), params as config (secret-looking ones redacted, DESIGN §8b), ``mlflow.runName`` as
name, the first dataset input as dataset.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from aipm_tracking.redact import redact_config
from aipm_tracking.schema import DatasetInfo, MetricValue, ModelInfo, RunRecord

from .keys import (
    KEY_FORMAT,
    from_legacy_key,
    from_mlflow_key,
    legacy_to_mlflow_key,
    to_mlflow_key,
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


def key_decoder(tags: Mapping[str, str]) -> Callable[[str], str]:
    """MLflow key -> aipm name for a run with these tags: decode only what aipm encoded."""
    if tags.get(TAG_KEY_FORMAT) == KEY_FORMAT:
        return from_mlflow_key
    if TAG_SCHEMA in tags:  # written by an older version of the plugin
        return from_legacy_key
    return _same


def key_encoder(tags: Mapping[str, str]) -> Callable[[str], str]:
    """aipm name -> the MLflow key it has in a run with these tags (to read its history)."""
    if tags.get(TAG_KEY_FORMAT) == KEY_FORMAT:
        return to_mlflow_key
    if TAG_SCHEMA in tags:
        return legacy_to_mlflow_key
    return _same


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


def map_metrics(raw: Mapping[str, float], metric_map: Mapping[str, str],
                decode: Callable[[str], str] = _same) -> dict[str, MetricValue]:
    """MLflow metric keys -> canonical names (``decode``: see :func:`key_decoder`);
    ``metric_map`` entries win over plain names."""
    out: dict[str, MetricValue] = {}
    mapped: set[str] = set()
    for key, value in raw.items():
        if key in metric_map:
            canon = metric_map[key]
            out[canon] = MetricValue(float(value))
            mapped.add(canon)
    for key, value in raw.items():
        if key in metric_map:
            continue
        canon = decode(key)
        if canon not in mapped:
            out[canon] = MetricValue(float(value))
    return out


def run_to_record(run: Any, metric_map: Mapping[str, str] | None = None) -> RunRecord:
    """Summary :class:`RunRecord` of an MLflow run (from ``get_run`` / ``search_runs``)."""
    info, data = run.info, run.data
    tags: dict[str, str] = dict(data.tags)
    params: dict[str, str] = dict(data.params)
    decode = key_decoder(tags)
    name = tags.get("mlflow.runName") or getattr(info, "run_name", None) or info.run_id
    user_tags = {decode(k): v for k, v in tags.items()
                 if not k.startswith(("mlflow.", "aipm.")) or k == "aipm.source_ref"}
    return RunRecord(
        run_id=info.run_id,
        name=str(name),
        model=_model_of(tags, params, str(name)),
        dataset=_dataset_of(run, tags),
        metrics=map_metrics(data.metrics, metric_map or {}, decode),
        config=redact_config({decode(k): v for k, v in params.items()}),
        tags=user_tags,
        guardrails_hash=tags.get(TAG_GUARDRAILS) or None,
        created_at=ms_to_iso(info.start_time) or "",
        finished_at=ms_to_iso(info.end_time),
        status=status_of(run),
        ref=f"{SCHEME}:{info.run_id}",
    )
