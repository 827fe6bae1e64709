"""Names and batch limits, checked against MLflow's own validators (not our rules)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from aipm_mlflow.keys import (
    MAX_BATCH_BYTES,
    flatten_config,
    from_mlflow_key,
    kv_batches,
    to_mlflow_key,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from aipm_tracking.errors import BackendError


def _mlflow_accepts(key: str) -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_metric_name

    try:
        _validate_metric_name(key)
    except MlflowException:
        return False
    return len(key) <= 250


@pytest.mark.parametrize("name,key", [
    ("accuracy", "accuracy"),
    ("accuracy[slice=de]", "accuracy/slice:de"),
    ("latency_ms_p95[slice=en-US]", "latency_ms_p95/slice:en-US"),
    ("train/loss", "train/loss"),
])
def test_slice_names_round_trip(name: str, key: str) -> None:
    assert to_mlflow_key(name) == key
    assert _mlflow_accepts(key)
    assert from_mlflow_key(key) == name


@given(st.text(min_size=1, max_size=300))
@settings(max_examples=300, deadline=None)
def test_every_written_key_is_accepted_by_mlflow(name: str) -> None:
    try:
        key = to_mlflow_key(name)
    except BackendError as e:
        assert repr(name)[:20] in str(e) or "MLflow" in str(e)
        return
    assert _mlflow_accepts(key), (name, key)


def test_too_long_key_is_an_error_naming_it() -> None:
    with pytest.raises(BackendError, match="is 300 characters; MLflow allows 250"):
        to_mlflow_key("m" * 300, "config")


def test_kv_batches_respect_counts_and_size_and_keep_everything() -> None:
    params = [(f"p{i}", "x" * 5000) for i in range(250)]
    tags = [(f"t{i}", "y" * 7000) for i in range(130)]
    batches = list(kv_batches(params, tags))
    assert [p for ps, _ in batches for p in ps] == params
    assert [t for _, ts in batches for t in ts] == tags
    for ps, ts in batches:
        assert len(ps) <= 100 and len(ts) <= 100
        assert sum(len(k) + len(v) for k, v in ps + ts) <= MAX_BATCH_BYTES


def test_flatten_config() -> None:
    flat = flatten_config({"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2], "f": None, "g": True})
    assert flat == {"a.b": "1", "a.c.d": "x", "e": "[1, 2]", "f": "null", "g": "true"}


def test_plugin_import_does_not_import_mlflow() -> None:
    code = ("import sys, aipm_mlflow.plugin, aipm_tracking.plugins as p; "
            "assert 'mlflow' in p.backend_schemes(); "
            "assert 'mlflow' not in sys.modules, 'mlflow imported at plugin load'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
