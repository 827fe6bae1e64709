"""Key formats against a real MLflow SQLite store: format 3 writes names MLflow takes as they
are (a ``:`` is escaped only where a key would read as a slice), runs of format 2 and of older
plugins are read as before and continued in their own encoding, reserved ``aipm.*`` tags stay
the plugin's, and filters name metrics by their aipm names."""

from __future__ import annotations

import random
import time
import warnings

import pytest
from aipm_mlflow.backend import mlflow_filter
from aipm_mlflow.keys import ESC, from_mlflow_key, is_valid_key, to_mlflow_key, to_mlflow_key_v2
from mlflow_helpers import backend

from aipm_tracking.errors import AipmWarning, BackendError
from aipm_tracking.schema import DatasetInfo, MetricPoint, MetricValue, ModelInfo, RunRecord

T0 = 1_700_000_000_000


def _client(uri: str):  # noqa: ANN202
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _record(name: str, metrics: dict[str, float], config: dict[str, str] | None = None,
            tags: dict[str, str] | None = None, run_id: str = "") -> RunRecord:
    return RunRecord(run_id=run_id, name=name, model=ModelInfo("m", "1"),
                     dataset=DatasetInfo(name="d"),
                     metrics={k: MetricValue(v) for k, v in metrics.items()},
                     config=dict(config or {}), tags=dict(tags or {}),
                     created_at="2024-01-01T00:00:00Z", status="finished")


def _keys(uri: str, ref: str) -> set[str]:
    return set(_client(uri).get_run(ref.split(":")[-1]).data.metrics)


# -- names MLflow takes as they are stay as they are ------------------------------------
LONG_COLONS = "eval:" * 45 + "acc"  # 228 characters; format 2 made it 404


@pytest.mark.parametrize("name", [LONG_COLONS, "eval:acc", "x:a/b:c", "dup:colon::x", "a/:b",
                                  "train/loss", "a b"])
def test_mlflow_legal_names_that_are_no_slice_key_are_written_unchanged(name: str) -> None:
    assert to_mlflow_key(name) == name and from_mlflow_key(name) == name


def test_colons_are_escaped_only_where_a_key_would_read_as_a_slice() -> None:
    assert to_mlflow_key("val/f1:macro") == f"val/f1{ESC}3a{ESC}macro"
    assert to_mlflow_key("a:b[s=x]") == f"a{ESC}3a{ESC}b/s:x"
    assert to_mlflow_key("acc[slice=a/b:c]") == "acc/slice:a/b:c"
    for name in ("val/f1:macro", "a:b[s=x]", "acc[slice=a/b:c]", "a/b:c:d", "a[b=c:d]"):
        assert from_mlflow_key(to_mlflow_key(name)) == name


def test_a_long_name_with_colons_is_pushed_and_streamed(sqlite_uri: str) -> None:
    be = backend(sqlite_uri)
    ref = be.write_run(_record("colons", {LONG_COLONS: 0.5, "loss": 1.0}), "fmt3-push")
    assert _keys(sqlite_uri, ref) == {LONG_COLONS, "loss"}
    assert set(next(iter(be.list_runs("fmt3-push"))).metrics) == {LONG_COLONS, "loss"}
    ref = be.start_run(_record("colons-s", {}), "fmt3-stream")
    with warnings.catch_warnings():
        warnings.simplefilter("error", AipmWarning)
        be.log_points(ref, [MetricPoint(LONG_COLONS, 0.5, 0, 1.0)])
        be.finish_run(ref, "finished", _record("colons-s", {LONG_COLONS: 0.5}))
    run = _client(sqlite_uri).get_run(ref.split(":")[1])
    assert run.info.status == "FINISHED" and run.data.tags["aipm.status"] == "complete"
    assert run.data.tags["aipm.key_format"] == "3"
    assert [(p.key, p.value) for p in be.read_history(ref)] == [(LONG_COLONS, 0.5)]


_ALPHA = list("ab/:._- [ ]=@\\") + [ESC, "0", "1", "f", "é", "\u0301", "x", "\x00", "\t",
                                     "ß", "٣", "İ", "A", "B", "\u200b", "😀"]


def _random_name(rnd: random.Random) -> str:
    def text(lo: int, hi: int) -> str:
        return "".join(rnd.choice(_ALPHA) for _ in range(rnd.randint(lo, hi)))

    if rnd.random() < 0.3:
        val = text(0, 5).replace("]", "").replace("[", "")
        return f"{text(1, 5)}[{rnd.choice(['slice', 'lang', 'a.b'])}={val}]"
    return text(1, 10)


def test_random_names_round_trip_exactly_through_a_real_store(sqlite_uri: str) -> None:
    """The reviewer's store check, smaller: random odd names as metrics, config and tags,
    read back through list_runs, read_run and read_history."""
    rnd = random.Random(3)
    be = backend(sqlite_uri, quiet=True)
    for trial in range(4):
        metrics: dict[str, float] = {}
        config: dict[str, str] = {}
        tags: dict[str, str] = {}
        for kind, n in (("metric", 150), ("config", 40), ("tag", 25)):
            for _ in range(n):
                name = _random_name(rnd)
                if (kind == "config" and "." in name) or (  # "." joins nested config
                        kind == "tag" and name.startswith(("mlflow.", "aipm."))):
                    continue
                try:
                    assert is_valid_key(to_mlflow_key(name))
                except BackendError:
                    continue
                if kind == "metric":
                    metrics[name] = rnd.random()
                elif kind == "config":
                    config[name] = str(rnd.random())
                else:
                    tags[name] = "v"
        ref = be.write_run(_record(f"t{trial}", metrics, config, tags), "fmt3-random")
        listed = next(r for r in be.list_runs("fmt3-random") if r.run_id == ref.split(":")[1])
        assert set(listed.metrics) == set(metrics)
        assert set(listed.config) == set(config)
        assert set(listed.tags) == set(tags)
        assert set(be.read_run(ref, with_examples=False).metrics) == set(metrics)
        assert {p.key for p in be.read_history(ref)} == set(metrics)
        some = list(metrics)[:20]
        assert {p.key for p in be.read_history(ref, some)} == set(some)


# -- format 2 runs: read as before, continued in format 2 -------------------------------
def _format2_run(uri: str, exp: str, status: str = "running", source: str = "aipm:v2") -> str:
    from mlflow.entities import Metric, Param, RunTag

    c = _client(uri)
    exp_id = c.create_experiment(exp)
    run = c.create_run(exp_id, run_name="v2", tags={
        "aipm.schema": "aipm.run/1", "aipm.key_format": "2", "aipm.status": status,
        "aipm.source_id": source})
    rid = run.info.run_id
    c.log_batch(rid, metrics=[Metric(to_mlflow_key_v2("eval:acc"), 0.1, T0, 0),
                              Metric(to_mlflow_key_v2("acc[lang=zh/tw]"), 0.2, T0, 0)],
                params=[Param(to_mlflow_key_v2("env:eu", "config"), "x")],
                tags=[RunTag(to_mlflow_key_v2("team:a", "tag"), "v")])
    return rid


def test_runs_written_with_format_2_are_read_and_continued_in_format_2(sqlite_uri: str) -> None:
    rid = _format2_run(sqlite_uri, "fmt2")
    be = backend(sqlite_uri)
    [rec] = list(be.list_runs("fmt2"))
    assert set(rec.metrics) == {"eval:acc", "acc[lang=zh/tw]"}
    assert rec.config == {"env:eu": "x"} and rec.tags == {"team:a": "v"}
    be.log_points(f"mlflow:{rid}", [MetricPoint("eval:acc", 0.3, 1, time.time()),
                                    MetricPoint("acc[lang=zh/tw]", 0.4, 1, time.time())])
    be.finish_run(f"mlflow:{rid}", "finished",
                  _record("v2", {"eval:acc": 0.3, "acc[lang=zh/tw]": 0.4, "new:one": 1.0}))
    keys = _keys(sqlite_uri, rid)
    assert keys == {to_mlflow_key_v2(n) for n in ("eval:acc", "acc[lang=zh/tw]", "new:one")}
    assert _client(sqlite_uri).get_run(rid).data.tags["aipm.key_format"] == "2"
    hist = backend(sqlite_uri).read_history(f"mlflow:{rid}")
    assert sorted((p.key, p.step) for p in hist) == [
        ("acc[lang=zh/tw]", 0), ("acc[lang=zh/tw]", 1), ("eval:acc", 0), ("eval:acc", 1),
        ("new:one", 0)]


# -- runs of older plugins ---------------------------------------------------------------
def _legacy_run(uri: str, exp: str, status: str, source: str) -> str:
    """A run as the plugin before aipm.key_format wrote it (same keys, same tags)."""
    from mlflow.entities import Metric, Param, RunTag

    c = _client(uri)
    exp_id = c.create_experiment(exp)
    run = c.create_run(exp_id, run_name="old", tags={
        "aipm.schema": "aipm.run/1", "aipm.status": status, "aipm.source_id": source})
    rid = run.info.run_id
    c.log_batch(rid, metrics=[Metric("loss_train", 1.0, T0, 0), Metric("val/f1:macro", 0.2, T0, 0),
                              Metric("acc/slice:de", 0.5, T0, 0)],
                params=[Param("env/region:eu", "x"), Param("lr", "0.1")],
                tags=[RunTag("team/owner:x", "v")])
    return rid


def test_old_runs_list_and_show_agree_on_config_and_tag_names(sqlite_uri: str) -> None:
    rid = _legacy_run(sqlite_uri, "legacy-names", "complete", "aipm:old1")
    be = backend(sqlite_uri)
    [listed] = list(be.list_runs("legacy-names"))
    shown = be.read_run(rid, with_examples=False)
    assert listed.config == shown.config == {"env/region:eu": "x", "lr": "0.1"}
    assert listed.tags == shown.tags == {"team/owner:x": "v"}
    # metric keys are still read as the old plugin meant them
    assert set(listed.metrics) == {"loss_train", "val[f1=macro]", "acc[slice=de]"}


def test_an_old_streamed_run_continued_after_an_upgrade_keeps_its_encoding(
        sqlite_uri: str) -> None:
    rid = _legacy_run(sqlite_uri, "legacy-resume", "running", "aipm:old2")
    ref = f"mlflow:{rid}"
    be = backend(sqlite_uri)
    be.log_points(ref, [MetricPoint("loss@train", 0.5, 1, time.time()),
                        MetricPoint("val/f1:macro", 0.4, 1, time.time())])
    be.finish_run(ref, "finished", _record("old", {"loss@train": 0.5, "val/f1:macro": 0.4},
                                           {"lr": "0.1", "env/region:eu": "x"},
                                           {"team/owner:x": "v"}))
    run = _client(sqlite_uri).get_run(rid)
    assert set(run.data.metrics) == {"loss_train", "val/f1:macro", "acc/slice:de"}
    assert set(run.data.params) == {"env/region:eu", "lr"}
    assert "aipm.key_format" not in run.data.tags and "team/owner:x" in run.data.tags
    assert run.info.status == "FINISHED" and run.data.tags["aipm.status"] == "complete"
    hist = be.read_history(ref)
    assert sorted((p.key, p.step) for p in hist) == [
        ("acc[slice=de]", 0), ("loss_train", 0), ("loss_train", 1),
        ("val[f1=macro]", 0), ("val[f1=macro]", 1)]


def test_an_interrupted_push_of_an_older_plugin_is_finished_in_its_encoding(
        sqlite_uri: str) -> None:
    rid = _legacy_run(sqlite_uri, "legacy-push", "incomplete", "aipm:old3")
    be = backend(sqlite_uri)
    ref = be.write_run(_record("old", {"loss@train": 1.0, "val/f1:macro": 0.2, "x:y": 3.0},
                               {"env/region:eu": "x"}, run_id="old3"), "legacy-push")
    assert ref == f"mlflow:{rid}"
    run = _client(sqlite_uri).get_run(rid)
    assert set(run.data.metrics) == {"loss_train", "val/f1:macro", "acc/slice:de", "x:y"}
    assert "aipm.key_format" not in run.data.tags
    assert run.data.tags["aipm.status"] == "complete"


# -- reserved tags -----------------------------------------------------------------------
def test_user_tags_cannot_overwrite_aipm_tags(sqlite_uri: str) -> None:
    tags = {"aipm.key_format": "1", "aipm.status": "bogus", "aipm.schema": "x",
            "aipm.source_ref": "src:1", "team": "a"}
    be = backend(sqlite_uri)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref = be.write_run(_record("reserved", {"val/f1:macro": 1.0}, tags=tags), "reserved")
    mine = [str(w.message) for w in caught if issubclass(w.category, AipmWarning)]
    assert len(mine) == 1 and "aipm.key_format" in mine[0] and "reserved" in mine[0]
    run = _client(sqlite_uri).get_run(ref.split(":")[1])
    assert run.data.tags["aipm.key_format"] == "3"
    assert run.data.tags["aipm.status"] == "complete"
    assert run.data.tags["aipm.schema"] == "aipm.run/1"
    [listed] = list(be.list_runs("reserved"))
    assert listed.tags == {"aipm.source_ref": "src:1", "team": "a"}
    assert set(listed.metrics) == {"val/f1:macro"}

    ref = be.start_run(_record("reserved-s", {}, tags=tags), "reserved")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        be.finish_run(ref, "finished", _record("reserved-s", {"a": 1.0}, tags=tags))
    assert not [w for w in caught if issubclass(w.category, AipmWarning)]  # said at start
    run = _client(sqlite_uri).get_run(ref.split(":")[1])
    assert run.data.tags["aipm.key_format"] == "3"
    assert run.data.tags["aipm.status"] == "complete"


# -- filters -----------------------------------------------------------------------------
def test_filters_translate_every_metric_name() -> None:
    assert mlflow_filter("metrics.loss@train > 1") == f"metrics.`loss{ESC}40{ESC}train` > 1"
    assert mlflow_filter("metrics.`val/f1:macro` < 2") == f"metrics.`val/f1{ESC}3a{ESC}macro` < 2"
    assert mlflow_filter('metrics."a b" = 1') == "metrics.`a b` = 1"
    assert mlflow_filter("metrics.accuracy[slice=de]>0.9") == "metrics.`accuracy/slice:de`>0.9"
    assert mlflow_filter("metrics.accuracy > 0 and tags.mlflow.runName = 'x'") == \
        "metrics.accuracy > 0 and tags.mlflow.runName = 'x'"
    assert mlflow_filter("metrics.`acc[lang=zh/tw]` > 0") == "metrics.`acc/lang:zh/tw` > 0"


def test_filters_on_odd_metric_names_find_their_runs(sqlite_uri: str) -> None:
    be = backend(sqlite_uri)
    be.write_run(_record("hi", {"loss@train": 2.0, "val/f1:macro": 0.9}), "filters")
    be.write_run(_record("lo", {"loss@train": 0.5, "val/f1:macro": 0.1}), "filters")
    assert [r.name for r in be.list_runs("filters", filter="metrics.loss@train > 1")] == ["hi"]
    assert [r.name for r in be.list_runs("filters", filter="metrics.`val/f1:macro` < 0.5")] \
        == ["lo"]
