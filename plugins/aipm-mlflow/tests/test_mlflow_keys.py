"""Names and batch limits, checked against MLflow's own validators (not our rules)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from aipm_mlflow.keys import (
    MAX_BATCH_BYTES,
    flatten_config,
    from_legacy_key,
    from_mlflow_key,
    kv_batches,
    legacy_to_mlflow_key,
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


@pytest.mark.parametrize("name,key", [
    ("loss@train", "loss\u01c040\u01c0train"),
    ("val/f1:macro", "val/f1\u01c03a\u01c0macro"),
    ("accuracy[slice=en+de]", "accuracy/slice:en\u01c02b\u01c0de"),
    ("accuracy[slice=münchen]", "accuracy/slice:münchen"),
    ("a b/東京", "a b/東京"),
])
def test_odd_names_get_readable_reversible_keys(name: str, key: str) -> None:
    assert to_mlflow_key(name) == key and _mlflow_accepts(key)
    assert from_mlflow_key(key) == name


_ODD = st.text(alphabet=st.sampled_from(list("ab/:@[]=. _-\u01c0%ü東\t") + ["😀"]),
               min_size=1, max_size=40)


@given(st.one_of(_ODD, st.text(min_size=1, max_size=60),
                 st.builds(lambda b, d, v: f"{b}[{d}={v}]", _ODD,
                           st.sampled_from(["slice", "lang", "x_1"]), _ODD)))
@settings(max_examples=800, deadline=None)
def test_keys_are_injective_and_decode_exactly(name: str) -> None:
    """Every name maps to a key MLflow takes, and back to itself (so two names never share
    a key); keys aipm cannot have written are read as they are."""
    try:
        key = to_mlflow_key(name)
    except BackendError:
        return
    assert _mlflow_accepts(key), (name, key)
    assert from_mlflow_key(key) == name


def test_keys_aipm_did_not_write_are_not_decoded() -> None:
    for key in ("loss\u01c05f\u01c0train", "a\u01c0zz\u01c0", "a/b\u01c0:c", "x/1d:v",
                "val/f1:macro\u01c0"):
        assert from_mlflow_key(key) == key
    assert from_mlflow_key("a/b:c:d") == "a[b=c:d]"  # format 3: a slice value keeps its ":"
    assert legacy_to_mlflow_key("loss@train") == "loss_train"
    assert from_legacy_key("val/f1:macro") == "val[f1=macro]"


def test_flatten_config_refuses_names_that_meet() -> None:
    with pytest.raises(BackendError, match="config key 'a.b' appears twice"):
        flatten_config({"a": {"b": 1}, "a.b": 2})
    with pytest.raises(BackendError, match="config key 'a.b' appears twice"):
        flatten_config({"a.b": 2, "a": {"b": 1}})
