"""evaluate(): input types and row accounting (token-only tables, durations, datetimes, bools,
mixed numeric label kinds in the confusion matrix, Brier precision, all rows dropped) and the
`--drop-bad-rows` option of `aipm thresholds`."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_cli

from aipm_tracking.accumulate import EvalAccumulator
from aipm_tracking.errors import DataError
from aipm_tracking.evaluation import evaluate
from aipm_tracking.pricing import Pricing

NUMERIC = ("confidence", "latency_ms", "cost_usd", "input_tokens", "output_tokens")
PRICING = Pricing(input_per_1m_tokens=0.5, output_per_1m_tokens=1.5)


def _write_csv(tmp_path: Path, df: pd.DataFrame, name: str = "t.csv") -> Path:
    p = tmp_path / name
    df.to_csv(p, index=False)
    return p


# -- BUG 1: token columns ---------------------------------------------------------------------
@pytest.mark.parametrize("cols", [["input_tokens"], ["output_tokens"],
                                  ["input_tokens", "output_tokens"]])
def test_tokens_only_without_pricing_is_unusable(tmp_path: Path, cols: list[str]) -> None:
    df = pd.DataFrame({c: [100, 200, 300] for c in cols})
    with pytest.raises(DataError, match="no usable columns.*only with pricing"):
        evaluate(df)
    p = _write_csv(tmp_path, df)
    for kw in ({}, {"chunk_rows": 2}):  # in memory and streamed
        with pytest.raises(DataError, match=f"^{p}: no usable columns"):
            evaluate(p, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("cols", [["input_tokens"], ["output_tokens"],
                                  ["input_tokens", "output_tokens"]])
def test_tokens_only_with_pricing_count_every_row(tmp_path: Path, cols: list[str]) -> None:
    rng = np.random.default_rng(1)
    df = pd.DataFrame({c: rng.integers(0, 5000, 7) for c in cols})
    inp = df["input_tokens"].to_numpy(float) if "input_tokens" in df else np.zeros(7)
    out = df["output_tokens"].to_numpy(float) if "output_tokens" in df else np.zeros(7)
    cost = (inp * 0.5 + out * 1.5) / 1e6
    p = _write_csv(tmp_path, df)
    for src, kw in ((df, {}), (p, {}), (p, {"chunk_rows": 3})):
        res = evaluate(src, pricing=PRICING, **kw)  # type: ignore[arg-type]
        assert res.metrics["n_examples"] == 7 and res.n_examples == 7
        assert res.metrics["cost_total_usd"] == pytest.approx(cost.sum(), rel=1e-12, abs=0)
        assert res.metrics["cost_per_query_usd"] == pytest.approx(cost.mean(), rel=1e-12, abs=0)
        assert res.details["cost_source"] == "pricing"


def test_n_examples_is_rows_evaluated_after_dropping(tmp_path: Path) -> None:
    df = pd.DataFrame({"example_id": range(6), "latency_ms": [1.0, -1, 3, np.nan, 5, 6],
                       "input_tokens": [1, 2, 3, 4, 5, 6]})
    p = _write_csv(tmp_path, df)
    for src, kw in ((df, {}), (p, {"chunk_rows": 4})):
        res = evaluate(src, pricing=PRICING, drop_bad_rows=True, **kw)  # type: ignore[arg-type]
        assert res.metrics["n_examples"] == 4
        assert res.metrics["latency_ms_mean"] == pytest.approx(np.mean([1.0, 3, 5, 6]))


def test_cli_log_tokens_only_without_pricing_fails(tmp_path: Path, store: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("example_id,input_tokens\n1,100\n2,200\n3,300\n")
    r = run_cli("log", str(p), "--model", "m")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"aipm: error: {p}: no usable columns")
    assert json.loads(run_cli("runs", "list", "--format", "json").stdout or "[]") == []


# -- BUG 2: durations, datetimes, booleans ------------------------------------------------------
def _latency_table(values: Any) -> pd.DataFrame:
    return pd.DataFrame({"latency_ms": values})


@pytest.mark.parametrize("make", [
    lambda ms: pd.to_timedelta(ms, unit="ms"),
    lambda ms: pd.Series(pd.to_timedelta(ms, unit="ms")).astype("timedelta64[us]"),
    lambda ms: pd.Series(pd.to_timedelta(ms, unit="ms")).astype("timedelta64[s]")
    if all(float(m) % 1000 == 0 for m in ms) else pd.to_timedelta(ms, unit="ms"),
    lambda ms: pd.array(np.round(np.asarray(ms) * 1000).astype(np.int64),
                        dtype=pd.ArrowDtype(pa.duration("us"))),
    lambda ms: pd.Series([dt.timedelta(milliseconds=float(m)) for m in ms], dtype=object),
])
def test_timedelta_latency_is_milliseconds(make: Any) -> None:
    ms = np.array([12.0, 16.0, 18.0, 250.5, 1000.0, 3.25])
    res = evaluate(_latency_table(make(ms)))
    m = res.metrics
    assert m["n_examples"] == len(ms)
    assert m["latency_ms_mean"] == pytest.approx(ms.mean(), rel=1e-12, abs=0)
    for q in (50, 95, 99):
        assert m[f"latency_ms_p{q}"] == pytest.approx(np.percentile(ms, q), rel=1e-12, abs=0)
    # the kept per-example table has milliseconds too (compare reads latency from it)
    assert res.examples is not None
    assert res.examples["latency_ms"].dtype == np.float64
    np.testing.assert_allclose(res.examples["latency_ms"].to_numpy(), ms, rtol=1e-12)


@pytest.mark.parametrize("unit", ["us", "ns", "ms"])
def test_parquet_duration_latency(tmp_path: Path, unit: str) -> None:
    rng = np.random.default_rng(5)
    ms = np.round(rng.lognormal(4, 0.5, 500), 3)
    per_ms = {"ms": 1, "us": 1000, "ns": 1_000_000}[unit]
    ticks = np.round(ms * per_ms).astype(np.int64)
    p = tmp_path / "lat.parquet"
    pq.write_table(pa.table({"example_id": np.arange(500),
                             "latency_ms": pa.array(ticks, pa.duration(unit))}), p)
    expect = ticks / per_ms
    for kw in ({}, {"chunk_rows": 64}):  # in memory and streamed
        res = evaluate(p, **kw)  # type: ignore[arg-type]
        assert res.metrics["latency_ms_mean"] == pytest.approx(expect.mean(), rel=1e-12, abs=0)
        assert res.metrics["latency_ms_p95"] == pytest.approx(np.percentile(expect, 95),
                                                              rel=1e-12, abs=0)
        assert res.metrics["n_examples"] == 500


def test_parquet_duration_with_null_is_a_bad_row(tmp_path: Path) -> None:
    p = tmp_path / "lat.parquet"
    pq.write_table(pa.table({"example_id": [1, 2, 3],
                             "latency_ms": pa.array([100_000, None, 300_000],
                                                    pa.duration("us"))}), p)
    with pytest.raises(DataError, match=r"column 'latency_ms': 1 row\(s\) NaN \(e\.g\. 2\)"):
        evaluate(p)
    res = evaluate(p, drop_bad_rows=True)
    assert res.metrics["latency_ms_mean"] == 200.0 and res.metrics["n_examples"] == 2


@pytest.mark.parametrize("col", [c for c in NUMERIC if c != "latency_ms"])
def test_duration_in_other_numeric_columns_is_an_error(tmp_path: Path, col: str) -> None:
    df = pd.DataFrame({"label": [1, 0], "prediction": [1, 1],
                       col: pd.to_timedelta([1, 2], unit="ms")})
    with pytest.raises(DataError, match=f"^<dataframe>: column '{col}' is a duration, not a number"):
        evaluate(df, pricing=PRICING)
    p = tmp_path / "d.parquet"
    df.to_parquet(p)
    for kw in ({}, {"chunk_rows": 1}):
        with pytest.raises(DataError, match=f"^{p}: column '{col}' is a duration, not a number"):
            evaluate(p, pricing=PRICING, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("col", NUMERIC)
def test_datetime_in_numeric_columns_is_an_error(tmp_path: Path, col: str) -> None:
    stamps = pd.to_datetime(["2020-01-01", "2020-01-02"])
    for values in (stamps, stamps.tz_localize("UTC"),
                   pd.Series([dt.datetime(2020, 1, 1), dt.datetime(2020, 1, 2)], dtype=object)):
        df = pd.DataFrame({"label": [1, 0], "prediction": [1, 1], col: values})
        with pytest.raises(DataError, match=f"column '{col}' is a date/time, not a number"):
            evaluate(df, pricing=PRICING)
    p = tmp_path / "ts.parquet"
    pq.write_table(pa.table({"label": [1, 0], "prediction": [1, 1],
                             col: pa.array([1, 2], pa.timestamp("ms"))}), p)
    with pytest.raises(DataError, match=f"^{p}: column '{col}' is a date/time, not a number"):
        evaluate(p, pricing=PRICING)


@pytest.mark.parametrize("col", ["latency_ms", "cost_usd", "input_tokens", "output_tokens"])
def test_boolean_in_measured_columns_is_an_error(tmp_path: Path, col: str) -> None:
    for values in ([True, False], pd.array([True, False], dtype="boolean"),
                   pd.array([True, False], dtype=pd.ArrowDtype(pa.bool_())),
                   pd.Series([True, False], dtype=object)):
        df = pd.DataFrame({"label": [1, 0], "prediction": [1, 1], col: values})
        with pytest.raises(DataError, match=f"column '{col}' is boolean, not a number"):
            evaluate(df, pricing=PRICING)
    p = tmp_path / "b.parquet"
    pq.write_table(pa.table({"label": [1, 0], "prediction": [1, 1], col: [True, False]}), p)
    with pytest.raises(DataError, match=f"^{p}: column '{col}' is boolean, not a number"):
        evaluate(p, pricing=PRICING)


def test_boolean_confidence_is_an_error() -> None:
    # DESIGN §3: confidence is a float in [0, 1]; true/false read as 1.0/0.0 faked a perfect
    # calibration (was accepted; see tests/test_input_audit.py for the files)
    y, pred = np.array([1, 0, 1, 1]), np.array([1, 1, 1, 0])
    conf = np.array([True, False, True, True])
    with pytest.raises(DataError, match="column 'confidence' is boolean, not a number"):
        evaluate(pd.DataFrame({"label": y, "prediction": pred, "confidence": conf}))


# -- BUG 3: confusion matrix with mixed numeric kinds -------------------------------------------
def _canonical(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fa, fb = a.astype(np.float64), b.astype(np.float64)
    both = np.concatenate([fa, fb])
    if np.all(np.isfinite(both)) and np.all(both == np.floor(both)):
        return fa.astype(np.int64), fb.astype(np.int64)
    return fa, fb


@pytest.mark.parametrize("label,pred", [
    ([True, False, True], [1, 0, 0]),
    ([1, 2, 3], [1.0, 2.0, 3.5]),
    ([True, False, True, False], [1.0, 0.0, 0.5, 0.0]),
    (np.array([3, 1, 2, 2], dtype=np.uint8), [3.0, 1.0, 2.5, 7.0]),
    (pd.array([True, False, True], dtype="boolean"), [1, 1, 1]),
    ([0, 1, 1, 0, 1], np.array([False, True, False, False, True])),
    (np.array([0.1, 0.5, 2.0], dtype=np.float32), [0.1, 0.5, 2.0]),
])
def test_confusion_diagonal_equals_correct_rows(label: Any, pred: Any) -> None:
    from sklearn.metrics import confusion_matrix

    df = pd.DataFrame({"label": label, "prediction": pred})
    res = evaluate(df)
    a, b = df["label"].to_numpy(), df["prediction"].to_numpy()
    n_correct = int(np.count_nonzero(a == b))
    assert res.metrics["accuracy"] * len(df) == pytest.approx(n_correct)
    conf = res.details["confusion"]
    mat = np.array(conf["matrix"])
    assert int(np.trace(mat)) == n_correct
    assert int(mat.sum()) == len(df)
    ca, cb = _canonical(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    classes = sorted(set(ca.tolist()) | set(cb.tolist()))
    # one name per class, in numeric order; an integral value is named as an integer ("1"),
    # so that a class has one name whichever other values a chunk holds
    assert conf["labels"] == [str(int(v)) if float(v).is_integer() else str(v)
                              for v in classes]
    # sklearn wants class codes (it refuses non-integral floats as "continuous")
    code = {v: i for i, v in enumerate(classes)}
    ref = confusion_matrix([code[v] for v in ca.tolist()], [code[v] for v in cb.tolist()],
                           labels=range(len(classes)))
    assert np.array_equal(mat, ref)


def test_confusion_merge_keeps_one_class_per_value() -> None:
    # bool labels in one shard, int labels in the other: True and 1 are the same row/column
    a = EvalAccumulator()
    a.update({"label": np.array([True, False]), "prediction": np.array([1, 1]),
              "correct": np.array([True, False])})
    b = EvalAccumulator.from_state(a.to_state())
    b.update({"label": np.array([1, 0]), "prediction": np.array([1.0, 0.0]),
              "correct": np.array([True, True])})
    conf = b.result().details["confusion"]
    assert conf["labels"] == ["0", "1"]
    assert conf["matrix"] == [[1, 1], [0, 2]]


# -- NOTE 5: Brier precision ------------------------------------------------------------------
def test_brier_small_table_matches_sklearn() -> None:
    from sklearn.metrics import brier_score_loss

    conf = np.array([0.9, 0.4, 0.8, 0.7])
    correct = np.array([1, 0, 1, 1])
    df = pd.DataFrame({"label": correct, "prediction": np.ones(4, int), "confidence": conf})
    got, ref = evaluate(df).metrics["brier"], brier_score_loss(correct, conf)
    assert got == pytest.approx(ref, rel=1e-12, abs=0)
    # a direct sum of squares is within a few ulp (the expanded form gave 0.07499999999999984)
    assert abs(got - ref) <= 4 * np.spacing(ref) and abs(got - 0.075) <= 4 * np.spacing(0.075)


def test_brier_near_perfect_million_rows_matches_sklearn(tmp_path: Path) -> None:
    from sklearn.metrics import brier_score_loss

    n = 1_000_000
    rng = np.random.default_rng(7)
    conf = 1 - rng.random(n) * 1e-6
    df = pd.DataFrame({"label": np.zeros(n, np.int8), "prediction": np.zeros(n, np.int8),
                       "confidence": conf})
    ref = brier_score_loss(np.ones(n, int), conf)
    assert evaluate(df).metrics["brier"] == pytest.approx(ref, rel=1e-12, abs=0)
    p = tmp_path / "b.parquet"
    df.to_parquet(p)
    streamed = evaluate(p, chunk_rows=100_000).metrics["brier"]
    assert streamed == pytest.approx(ref, rel=1e-12, abs=0)


def test_brier_through_merged_shards_matches_sklearn() -> None:
    from sklearn.metrics import brier_score_loss

    rng = np.random.default_rng(11)
    n = 30_000
    conf = rng.random(n)
    correct = rng.random(n) < conf
    shards = np.array_split(np.arange(n), 5)
    accs = []
    for idx in shards:
        acc = EvalAccumulator()
        acc.update({"correct": correct[idx], "confidence": conf[idx]})
        accs.append(acc)
    merged = EvalAccumulator.from_state(accs[0].to_state())
    for acc in accs[1:]:
        merged.merge(EvalAccumulator.from_state(acc.to_state()))
    assert merged.result().metrics["brier"] == pytest.approx(brier_score_loss(correct, conf),
                                                             rel=1e-12, abs=0)


# -- NOTE 6: every row dropped ----------------------------------------------------------------
def test_dropping_every_row_is_an_error(tmp_path: Path) -> None:
    df = pd.DataFrame({"label": [1, 0], "prediction": [1, 1], "confidence": [np.nan, 1.5]})
    with pytest.raises(DataError, match=r"^<dataframe>: every row is bad: column 'confidence'"):
        evaluate(df, drop_bad_rows=True)
    p = _write_csv(tmp_path, df, "b.csv")
    for kw in ({}, {"chunk_rows": 1}):
        with pytest.raises(DataError, match=f"^{p}: every row is bad: .*NaN.*outside"):
            evaluate(p, drop_bad_rows=True, **kw)  # type: ignore[arg-type]
    # one good row is enough
    df.loc[2] = [1, 1, 0.5]
    assert evaluate(df, drop_bad_rows=True).metrics["n_examples"] == 1


def test_cli_log_dropping_every_row_fails_and_stores_nothing(tmp_path: Path, store: Path) -> None:
    p = tmp_path / "b.csv"
    p.write_text("label,prediction,confidence\n1,1,NaN\n0,1,1.5\n")
    r = run_cli("log", str(p), "--model", "m", "--drop-bad-rows")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"{p}: every row is bad" in r.stderr
    assert json.loads(run_cli("runs", "list", "--format", "json").stdout or "[]") == []


# -- NOTE 7: the bad-rows hint and `aipm thresholds --drop-bad-rows` ----------------------------
def _bad_rows_file(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    rng = np.random.default_rng(3)
    n = 400
    conf = rng.random(n)
    y = rng.integers(0, 2, n)
    pred = np.where(rng.random(n) < conf, y, 1 - y)
    df = pd.DataFrame({"example_id": np.arange(n), "label": y, "prediction": pred,
                       "confidence": conf})
    bad = df.copy()
    bad.loc[[5, 17], "confidence"] = [np.nan, 1.7]
    p = tmp_path / "bad.csv"
    bad.to_csv(p, index=False)
    return p, df.drop(index=[5, 17])


def test_bad_rows_message_names_cli_and_python_options(tmp_path: Path) -> None:
    p, _ = _bad_rows_file(tmp_path)
    with pytest.raises(DataError) as e:
        evaluate(p)
    assert str(e.value).endswith(
        "(fix the rows, or drop them with --drop-bad-rows / drop_bad_rows=True)")


def test_cli_thresholds_drop_bad_rows(tmp_path: Path) -> None:
    from aipm_tracking.selective import recommend_threshold

    p, clean = _bad_rows_file(tmp_path)
    r = run_cli("thresholds", str(p), "--max-risk", "0.3")
    assert r.returncode == 2 and "--drop-bad-rows" in r.stderr
    r = run_cli("thresholds", str(p), "--max-risk", "0.3", "--drop-bad-rows", "--format", "json")
    assert r.returncode in (0, 1), r.stderr
    got = json.loads(r.stdout)
    assert got["n"] == len(clean) == 398
    assert "dropped bad rows" in r.stderr and "column 'confidence'" in r.stderr
    want = recommend_threshold((clean["label"] == clean["prediction"]).to_numpy(),
                               clean["confidence"].to_numpy(), 0.3, 0.05).to_dict()
    assert got["threshold"] == pytest.approx(want["threshold"])
    assert got["n_answered"] == want["n_answered"]


def test_label_without_prediction_warns_and_still_measures_the_rest() -> None:
    import warnings

    from aipm_tracking.errors import AipmWarning

    df = pd.DataFrame({"label": [1, 0, 1], "pred": [1, 1, 1], "latency_ms": [10.0, 20.0, 30.0]})
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = evaluate(df)
    msgs = [str(x.message) for x in w if issubclass(x.category, AipmWarning)]
    assert len(msgs) == 1 and "column 'label' without 'prediction'" in msgs[0]
    assert "accuracy" not in res.metrics
    assert res.metrics["latency_ms_mean"] == pytest.approx(np.mean([10.0, 20.0, 30.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # both columns: no warning
        evaluate(df.rename(columns={"pred": "prediction"}))
