"""RunRecord <-> W&B shapes (config, summary, tags, files), without importing wandb.

An aipm-written W&B run carries:

* config: the record's config with secrets redacted, plus ``aipm`` = {schema, run_id,
  name, model, dataset, guardrails_hash, created_at, tags};
* summary: each metric under its canonical name (``accuracy``, ``accuracy[slice=de]``);
* tags: ``aipm``, ``model=NAME``, ``guardrails=HASH`` (W&B tags are short strings) and, on a
  copy (``aipm push``/``pull``), ``aipm-source=DIGEST`` of the run it was copied from;
* files: ``aipm/run.json`` (the full RunRecord JSON, so pulling is lossless) and
  ``aipm/examples.parquet`` (the per-example table).

Runs written by plain wandb code have none of that: their numeric summary values become
metrics, renamed through ``metric_map`` (foreign name -> canonical).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from aipm_tracking.errors import InvalidReferenceError
from aipm_tracking.redact import redact_config
from aipm_tracking.schema import DatasetInfo, MetricValue, ModelInfo, RunRecord

RUN_JSON = "aipm/run.json"
EXAMPLES_PARQUET = "aipm/examples.parquet"
COMPARISON_JSON = "aipm/comparison.json"
CONFIG_KEY = "aipm"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_WANDB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def parse_project(target: str | None) -> tuple[str | None, str]:
    """``ENTITY/PROJECT`` or ``PROJECT`` -> (entity or None, project), validated."""
    if not target:
        raise InvalidReferenceError(
            "a W&B destination needs a project: use --to wandb:ENTITY/PROJECT")
    parts = target.strip().strip("/").split("/")
    if len(parts) > 2 or not all(_NAME_RE.match(p) for p in parts):
        raise InvalidReferenceError(
            f"invalid W&B destination {target!r}: expected ENTITY/PROJECT "
            "(letters, digits, '_', '-', '.')")
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def parse_run_path(locator: str) -> tuple[str, str, str] | None:
    """``ENTITY/PROJECT/RUN_ID`` -> its parts, or None when it is not of that shape."""
    parts = locator.strip().split("/")
    if len(parts) != 3:
        return None
    e, p, r = parts
    if not (_NAME_RE.match(e) and _NAME_RE.match(p) and _WANDB_ID_RE.match(r)):
        return None
    return e, p, r


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def record_config(record: RunRecord) -> dict[str, Any]:
    """W&B config for ``record``: redacted user config plus the ``aipm`` identity block."""
    cfg = redact_config(dict(record.config))
    cfg[CONFIG_KEY] = {
        "schema": "aipm.run/1",
        "run_id": record.run_id,
        "name": record.name,
        "model": record.model.to_dict(),
        "dataset": record.dataset.to_dict(),
        "guardrails_hash": record.guardrails_hash,
        "created_at": record.created_at,
        "tags": dict(record.tags),
    }
    return cfg


def record_summary(record: RunRecord) -> dict[str, float]:
    """Summary values: every finite metric under its canonical name."""
    out: dict[str, float] = {}
    for k, mv in record.metrics.items():
        v = _finite(mv.value)
        if v is not None:
            out[k] = v
    return out


#: The record tag a copied run carries (``aipm push``/``pull``): the run it was copied from.
SOURCE_REF = "aipm.source_ref"


def source_tag(source_ref: str) -> str:
    """The W&B tag of a copy of run ``source_ref`` (W&B tags are short: a digest), which a
    repeated push looks the copy up by (``tags $in``)."""
    return "aipm-source=" + hashlib.sha256(source_ref.encode()).hexdigest()[:20]


def record_tags(record: RunRecord) -> list[str]:
    tags = ["aipm"]
    if record.model.name:
        tags.append(f"model={record.model.name}"[:64])
    if record.guardrails_hash:
        tags.append(f"guardrails={record.guardrails_hash}"[:64])
    src = record.tags.get(SOURCE_REF)
    if src:
        tags.append(source_tag(str(src)))
    return tags


def copy_source(config: Mapping[str, Any]) -> str | None:
    """The ``aipm.source_ref`` of a run written by aipm, from its config's ``aipm`` block."""
    block = config.get(CONFIG_KEY)
    tags = block.get("tags") if isinstance(block, Mapping) else None
    src = tags.get(SOURCE_REF) if isinstance(tags, Mapping) else None
    return str(src) if src else None


def record_json(record: RunRecord) -> dict[str, Any]:
    """The record's full JSON with the config redacted (what goes into ``aipm/run.json``)."""
    d = record.to_dict()
    d["config"] = redact_config(d.get("config") or {})
    return d


def iso_time(ts: float | str | None) -> str | None:
    if ts is None or ts == "":
        return None
    if isinstance(ts, (int, float)):
        return datetime.fromtimestamp(float(ts), timezone.utc).isoformat()
    text = str(ts)
    if re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?$", text):
        text += "+00:00"  # W&B's createdAt carries no zone: it is UTC
    return text


def record_from_wandb(*, run_id: str, ref: str, display_name: str, config: Mapping[str, Any],
                      summary: Mapping[str, Any], metric_map: Mapping[str, str],
                      created_at: str | None, status: str,
                      run_json: Mapping[str, Any] | None = None) -> RunRecord:
    """Build a RunRecord from what W&B holds.

    With ``run_json`` (an aipm-written run's ``aipm/run.json``) the record is restored
    exactly; else from the ``aipm`` config block when present, else as a foreign run:
    numeric summary values (not ``_``-prefixed) become metrics, renamed via ``metric_map``.
    """
    if run_json:
        rec = RunRecord.from_dict(dict(run_json))
        rec.run_id, rec.ref = run_id, ref
        return rec
    cfg = {k: v for k, v in config.items() if k not in ("_wandb", CONFIG_KEY)}
    block = config.get(CONFIG_KEY)
    metrics: dict[str, MetricValue] = {}
    for k, v in summary.items():
        if k.startswith("_") or k.startswith("aipm/"):  # W&B internals, our bookkeeping
            continue
        fv = _finite(v)
        if fv is None:
            continue
        metrics[metric_map.get(k, k)] = MetricValue(fv)
    # a canonical name that was logged directly wins over a mapped foreign one
    for k, v in summary.items():
        fv = _finite(v)
        if fv is not None and k in metric_map.values():
            metrics[k] = MetricValue(fv)
    if isinstance(block, dict):
        model = ModelInfo.from_dict(block.get("model") or {})
        dataset = DatasetInfo.from_dict(block.get("dataset"))
        tags = {str(k): str(v) for k, v in (block.get("tags") or {}).items()}
        return RunRecord(run_id=run_id, name=str(block.get("name") or display_name or run_id),
                         model=model, dataset=dataset, metrics=metrics, config=cfg, tags=tags,
                         guardrails_hash=block.get("guardrails_hash"),
                         created_at=block.get("created_at") or created_at or "",
                         status=status, ref=ref)
    model_name = next((str(cfg[k]) for k in ("model", "model_name", "model_name_or_path")
                       if isinstance(cfg.get(k), (str, int, float)) and cfg.get(k) != ""),
                      display_name or run_id)
    version = cfg.get("model_version")
    rec = RunRecord(run_id=run_id, name=display_name or run_id,
                    model=ModelInfo(model_name, "" if version is None else str(version)),
                    metrics=metrics, config=redact_config(cfg), status=status, ref=ref,
                    tags={"wandb.source": "foreign"})
    if created_at:
        rec.created_at = created_at
    return rec


def table_refs(summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Summary keys whose value is a logged table (``{"_type": "table-file", …}``)."""
    return {k: v for k, v in summary.items()
            if isinstance(v, dict) and v.get("_type") == "table-file"}


def _part_no(key: str) -> int:
    m = re.search(r"_part(\d+)$", key)
    return int(m.group(1)) if m else 0


def examples_table_keys(summary: Mapping[str, Any], wanted: str | None) -> list[str]:
    """Which logged tables hold the per-example data, in order (parts of a split table)."""
    refs = table_refs(summary)
    if wanted:
        return sorted((k for k in refs if re.fullmatch(re.escape(wanted) + r"(_part\d+)?", k)),
                      key=_part_no)
    for base in ("aipm/examples", "examples", "eval_examples", "predictions"):
        parts = sorted((k for k in refs if re.fullmatch(re.escape(base) + r"(_part\d+)?", k)),
                       key=_part_no)
        if parts:
            return parts
    return []
