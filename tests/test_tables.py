"""Reading eval files (CSV, Parquet, JSONL), streaming, accumulators and their merge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aipm_tracking import tables
from aipm_tracking.accumulate import (
    SKETCH_ALPHA,
    SKETCH_BUCKETS,
    EvalAccumulator,
    exact_quantiles,
    sketch_quantiles,
    sketch_update,
)
from aipm_tracking.errors import DataError
from aipm_tracking.evaluation import evaluate


def make_df(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n)
    conf = np.round(rng.random(n), 3)  # ties on purpose
    pred = np.where(rng.random(n) < conf, y, (y + 1) % 5)
    return pd.DataFrame({
        "example_id": rng.permutation(n), "label": y, "prediction": pred, "confidence": conf,
        "latency_ms": rng.lognormal(4, 0.7, n), "cost_usd": rng.random(n) * 1e-3,
        "overridden": rng.random(n) < 0.05, "slice": rng.choice(["a", "b"], n),
    })


def write(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        df.to_parquet(path)
    else:
        df.to_json(path, orient="records", lines=True)
    return path


def assert_same(a: dict[str, float], b: dict[str, float], rel: float = 1e-9) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=rel, abs=1e-12), k


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_files_match_dataframe(tmp_path: Path, suffix: str) -> None:
    df = make_df()
    ref = evaluate(df)
    path = write(df, tmp_path / f"eval{suffix}")
    res = evaluate(path)
    assert_same(res.metrics, ref.metrics)
    assert res.source == str(path)
    assert res.details["confusion"] == ref.details["confusion"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_streaming_matches_in_memory(tmp_path: Path, suffix: str) -> None:
    df = make_df(n=5000, seed=1)
    ref = evaluate(df)
    path = write(df, tmp_path / f"eval{suffix}")
    res = evaluate(path, chunk_rows=700)  # force streaming in small chunks
    assert res.examples is None
    assert_same(res.metrics, ref.metrics)
    r1, r2 = res.details["reliability"], ref.details["reliability"]
    assert r1["count"] == r2["count"]
    assert np.allclose(np.array(r1["confidence"], float), np.array(r2["confidence"], float))
    assert res.details["latency_quantiles"]["exact"] is True


def test_streaming_with_column_map_and_bad_rows(tmp_path: Path) -> None:
    df = make_df(n=2000, seed=2).rename(columns={"prediction": "pred"})
    df.loc[[10, 1500], "confidence"] = 1.7
    df.loc[1900, "example_id"] = df.loc[3, "example_id"]
    path = write(df, tmp_path / "eval.parquet")
    with pytest.raises(DataError) as ei:
        evaluate(path, column_map={"pred": "prediction"}, chunk_rows=300)
    msg = str(ei.value)
    assert msg.startswith(str(path))
    assert "column 'confidence': 2 row(s) outside [0, 1]" in msg
    assert "column 'example_id': 1 row(s) duplicate" in msg
    res = evaluate(path, column_map={"pred": "prediction"}, chunk_rows=300, drop_bad_rows=True)
    clean = df.drop(index=[10, 1500, 1900]).rename(columns={"pred": "prediction"})
    assert res.n_examples == 1997
    assert_same(res.metrics, evaluate(clean).metrics)
    with pytest.raises(DataError, match="column 'nope'"):
        evaluate(path, column_map={"nope": "prediction"}, chunk_rows=300)


def test_streaming_duplicate_ids_sequential_and_strings(tmp_path: Path) -> None:
    df = make_df(n=1200, seed=9)
    df["example_id"] = np.arange(1200)
    path = write(df, tmp_path / "seq.parquet")
    assert evaluate(path, chunk_rows=250).n_examples == 1200  # monotone fast path
    df.loc[1100, "example_id"] = 5  # a repeat far from its first occurrence, another chunk
    write(df, path)
    with pytest.raises(DataError, match=r"'example_id': 1 row\(s\) duplicate \(e\.g\. 5\)"):
        evaluate(path, chunk_rows=250)
    df["example_id"] = [f"q{i}" for i in range(1200)]
    df.loc[700, "example_id"] = "q3"
    write(df, path)
    with pytest.raises(DataError, match="duplicate"):
        evaluate(path, chunk_rows=250)


def _late_change(df: pd.DataFrame, col: str, value: object) -> pd.DataFrame:
    """``df`` with ``col`` holding ``value`` in its last 5 rows only (past the first block);
    a string value gets the row number appended (ids stay distinct)."""
    out = df.astype({col: object})
    at = out.index[-5:]
    out.loc[at, col] = [f"{value}{i}" for i in at] if isinstance(value, str) else value
    return out


@pytest.mark.parametrize(("suffix", "col", "value"), [
    (".csv", "latency_ms", 12.5),  # int64 in the first block, then a float
    (".csv", "label", "other"),  # int64, then a string (as is every value, whole-file)
    (".csv", "example_id", "q-"),
    (".csv", "overridden", "maybe"),  # bool, then a string: a bad row, named
    (".jsonl", "latency_ms", 12.5),  # pyarrow's JSON error names no column
    (".jsonl", "label", 0.5),  # the second int column to widen (latency_ms first)
])
def test_streaming_widens_a_type_that_changes_after_the_first_block(
        tmp_path: Path, suffix: str, col: str, value: object) -> None:
    """CSV/JSONL types are inferred from the first block (1 MiB) when streaming; the whole-file
    reader types a column from all of it. A later value that does not fit the first block's
    type used to stop a streamed evaluation ("CSV conversion error to int64")."""
    n = 60_000  # > 1 MiB of text: several blocks
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"example_id": np.arange(n), "label": rng.integers(0, 3, n),
                       "prediction": rng.integers(0, 3, n), "confidence": rng.random(n),
                       "latency_ms": rng.integers(5, 400, n), "overridden": rng.random(n) < 0.1})
    path = write(_late_change(df, col, value), tmp_path / f"eval{suffix}")
    assert path.stat().st_size > 2 << 20
    if col == "overridden":
        for kw in ({}, {"chunk_rows": 2000}):
            with pytest.raises(DataError, match="'overridden'.*5 row"):
                evaluate(path, **kw)
        return
    whole = evaluate(path)  # the whole-file reader: the reference
    if col == "latency_ms":
        assert whole.metrics["latency_ms_p99"] == pytest.approx(
            np.percentile(np.r_[df["latency_ms"].to_numpy()[:-5], [value] * 5], 99))
    res = evaluate(path, chunk_rows=2000)
    assert_same(res.metrics, whole.metrics)
    assert res.details["confusion"] == whole.details["confusion"]


def test_streaming_jsonl_field_first_seen_late_is_one_clear_line(tmp_path: Path) -> None:
    import json

    n = 40_000
    path = tmp_path / "late.jsonl"
    with path.open("w") as f:  # rows without the key, as many JSONL writers leave it out
        for i in range(n):
            row = {"example_id": i, "label": i % 3, "prediction": i % 2}
            f.write(json.dumps({**row, "slice": "late"} if i >= n - 10 else row) + "\n")
    assert path.stat().st_size > 1 << 20
    assert evaluate(path).metrics["n_examples"] == n  # the whole-file reader takes it
    with pytest.raises(DataError, match=r"late\.jsonl: a field that is not in the first rows"):
        evaluate(path, chunk_rows=1000)


def test_confusion_names_a_class_the_same_in_every_chunk(tmp_path: Path) -> None:
    """Float labels against int predictions: a chunk whose labels are all integral named
    class 1 "1", a chunk holding 0.5 named it "1.0": one class counted as two."""
    y = np.array([0.0, 1.0, 2.0, 1.0] * 50 + [0.5, 1.0, 0.0, 2.0])
    pred = np.array([0, 1, 2, 2] * 50 + [0, 1, 0, 1])
    path = write(pd.DataFrame({"label": y, "prediction": pred}), tmp_path / "f.parquet")
    for kw in ({}, {"chunk_rows": 40}):  # the last chunk alone holds 0.5
        conf = evaluate(path, **kw).details["confusion"]
        assert conf["labels"] == ["0", "0.5", "1", "2"]
        want = pd.crosstab(pd.Categorical(y, [0, 0.5, 1, 2]),
                           pd.Categorical(pred.astype(float), [0, 0.5, 1, 2]), dropna=False)
        assert np.array_equal(np.array(conf["matrix"]), want.to_numpy())


def test_truncated_parquet_and_garbage_files(tmp_path: Path) -> None:
    path = write(make_df(n=500), tmp_path / "eval.parquet")
    data = path.read_bytes()
    bad = tmp_path / "trunc.parquet"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="trunc.parquet"):
        evaluate(bad)
    with pytest.raises(DataError, match="trunc.parquet"):
        evaluate(bad, chunk_rows=100)
    js = tmp_path / "bad.jsonl"
    js.write_text('{"label": 1, "prediction": 1}\n{"label": 2, "predic\n')
    with pytest.raises(DataError, match="bad.jsonl"):
        evaluate(js)
    csv = tmp_path / "bad.csv"
    csv.write_text('label,prediction\n1,2\n3,4,5,6\n')
    with pytest.raises(DataError, match="bad.csv"):
        evaluate(csv)
    with pytest.raises(DataError, match="unknown eval file type"):
        evaluate(tmp_path / "eval.xlsx")
    with pytest.raises(DataError, match="no such eval file"):
        evaluate(tmp_path / "missing.csv")


def test_should_stream_thresholds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(make_df(n=300), tmp_path / "e.parquet")
    assert not tables.should_stream(str(path))
    monkeypatch.setattr(tables, "CHUNKED_MIN_ROWS", 100)
    assert tables.should_stream(str(path))
    res = evaluate(path)  # automatically streamed now
    assert res.examples is None and res.n_examples == 300


def test_iter_chunks_bounded(tmp_path: Path) -> None:
    path = write(make_df(n=2500), tmp_path / "e.parquet")
    sizes = [len(c) for c in tables.iter_chunks(path, chunk_rows=1000)]
    assert sizes == [1000, 1000, 500]
    only = next(tables.iter_chunks(path, {"label": "truth"}, columns=["truth"]))
    assert list(only.columns) == ["truth"]


# -- accumulators ------------------------------------------------------------------------------
def _cols(df: pd.DataFrame) -> dict[str, np.ndarray]:
    return {"label": df["label"].to_numpy(), "prediction": df["prediction"].to_numpy(),
            "correct": (df["label"] == df["prediction"]).to_numpy(),
            "confidence": df["confidence"].to_numpy(),
            "fallback": (df["confidence"] < 0.5).to_numpy(),
            "overridden": df["overridden"].to_numpy(dtype=float),
            "latency_ms": df["latency_ms"].to_numpy(), "cost_usd": df["cost_usd"].to_numpy(),
            "slice": df["slice"].to_numpy()}


def test_accumulator_merge_equals_single_pass() -> None:
    df = make_df(n=6000, seed=3)
    whole = EvalAccumulator()
    whole.update(_cols(df))
    parts = [EvalAccumulator() for _ in range(3)]
    for acc, chunk in zip(parts, np.array_split(np.arange(len(df)), 3), strict=True):
        acc.update(_cols(df.iloc[chunk]))
    # ship two of them through to_state/from_state, as across ranks
    merged = EvalAccumulator.from_state(parts[0].to_state())
    merged.merge(EvalAccumulator.from_state(parts[1].to_state())).merge(parts[2])
    a, b = whole.result(), merged.result()
    assert_same(a.metrics, b.metrics)
    assert a.details["confusion"] == b.details["confusion"]
    assert a.details["risk_coverage"] == b.details["risk_coverage"]


def test_accumulator_sketch_mode_error_bound() -> None:
    rng = np.random.default_rng(4)
    df = make_df(n=30000, seed=4)
    df["latency_ms"] = np.concatenate([rng.lognormal(3, 1.2, 29000), np.zeros(500),
                                       rng.pareto(1.5, 500) * 1000])
    acc = EvalAccumulator(exact_rows=1000)  # forces the sketch after the first chunk
    for chunk in np.array_split(np.arange(len(df)), 10):
        acc.update(_cols(df.iloc[chunk]))
    res = acc.result()
    assert res.details["latency_quantiles"]["exact"] is False
    lat = df["latency_ms"].to_numpy()
    exact = np.percentile(lat, np.arange(101))
    got = np.array(res.details["latency_quantiles"]["value"])
    assert np.all(np.abs(got - exact) <= SKETCH_ALPHA * np.abs(exact) + 1e-12)
    for q in (50, 95, 99):
        e = np.percentile(lat, q)
        assert abs(res.metrics[f"latency_ms_p{q}"] - e) <= SKETCH_ALPHA * e


@pytest.mark.parametrize("dist", ["lognormal", "zeros", "negative", "heavy", "constant", "ties"])
def test_exact_quantiles_match_numpy(dist: str) -> None:
    rng = np.random.default_rng(5)
    n = 300_001
    x = {"lognormal": rng.lognormal(3, 0.5, n),
         "zeros": np.where(rng.random(n) < 0.3, 0.0, rng.exponential(5, n)),
         "negative": rng.normal(0, 10, n),
         "heavy": rng.pareto(0.8, n) * 1e6,
         "constant": np.full(n, 4.2),
         "ties": rng.integers(0, 7, n).astype(float)}[dist]
    q = np.concatenate([np.arange(101) / 100, [0.5, 0.95, 0.99, 0.999]])
    assert np.allclose(exact_quantiles(x, q), np.percentile(x, 100 * q), rtol=1e-12, atol=0)


def test_sketch_relative_error_bound() -> None:
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.lognormal(0, 3, 50000), rng.exponential(1e4, 5000)])
    counts = np.zeros(SKETCH_BUCKETS, dtype=np.int64)
    for part in np.array_split(x, 7):
        sketch_update(counts, part)
    q = np.linspace(0, 1, 201)
    got = sketch_quantiles(counts, q)
    exact = np.percentile(x, 100 * q)
    assert np.all(np.abs(got - exact) <= SKETCH_ALPHA * exact)


def test_histogram_aurc_close_to_exact() -> None:
    from aipm_tracking.accumulate import FINE_BINS
    from aipm_tracking.selective import Groups, aurc, aurc_from_groups

    rng = np.random.default_rng(7)
    conf = rng.beta(5, 2, 200_000)
    correct = rng.random(conf.size) < conf
    fine = np.minimum((conf * FINE_BINS).astype(np.int64), FINE_BINS - 1)
    n = np.bincount(fine, minlength=FINE_BINS)
    err = np.bincount(fine, weights=~correct, minlength=FINE_BINS).astype(np.int64)
    nz = np.flatnonzero(n)[::-1]
    approx = aurc_from_groups(Groups(nz / FINE_BINS, n[nz], err[nz]))
    assert approx == pytest.approx(aurc(correct, conf), abs=2e-4)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=1, max_value=400), st.lists(st.integers(1, 399), max_size=4),
       st.integers(0, 10_000))
def test_merge_any_split_equals_single_pass(n: int, cuts: list[int], seed: int) -> None:
    df = make_df(n=n, seed=seed)
    whole = EvalAccumulator()
    whole.update(_cols(df))
    bounds = sorted({0, n, *[c for c in cuts if c < n]})
    merged = EvalAccumulator()
    for a, b in zip(bounds, bounds[1:], strict=False):
        part = EvalAccumulator()
        part.update(_cols(df.iloc[a:b]))
        merged.merge(EvalAccumulator.from_state(part.to_state()))
    r1, r2 = whole.result(), merged.result()
    assert_same(r1.metrics, r2.metrics, rel=1e-9)
    assert r1.details["confusion"] == r2.details["confusion"]


def test_streamed_threshold_recommendation_on_grid(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from aipm_tracking import evaluation as ev
    from aipm_tracking.selective import recommend_threshold, wilson_upper

    monkeypatch.setattr(ev, "STREAM_EXACT_ROWS", 500)  # force the histogram path
    rng = np.random.default_rng(12)
    df = make_df(n=20000, seed=12)
    df["confidence"] = rng.random(len(df))
    df["prediction"] = np.where(rng.random(len(df)) < df["confidence"], df["label"],
                                (df["label"] + 1) % 5)
    path = write(df, tmp_path / "e.parquet")
    res = evaluate(path, chunk_rows=3000, max_risk=0.1)
    rec = res.details["threshold_recommendation"]
    assert rec["found"] and rec["exact"] is False
    assert res.details["risk_coverage"]["exact"] is False
    conf, correct = df["confidence"].to_numpy(), (df["label"] == df["prediction"]).to_numpy()
    ans = conf >= rec["threshold"]
    assert int(ans.sum()) == rec["n_answered"]  # the claim holds on the raw rows
    assert float(wilson_upper((~correct[ans]).sum(), ans.sum())) <= 0.1
    exact = recommend_threshold(correct, conf, 0.1)
    assert exact.coverage - 0.002 <= rec["coverage"] <= exact.coverage
    from aipm_tracking.selective import aurc

    assert res.metrics["aurc"] == pytest.approx(aurc(correct, conf), abs=1e-4)


def test_slice_column_option_streamed_and_in_memory(tmp_path: Path) -> None:
    df = make_df(n=900, seed=13).rename(columns={"slice": "lang"})
    path = write(df, tmp_path / "e.parquet")
    a = evaluate(df, slice_column="lang")
    b = evaluate(path, slice_column="lang", chunk_rows=200)
    assert "accuracy[slice=a]" in a.metrics
    assert_same(a.metrics, b.metrics)
    assert "accuracy[slice=a]" not in evaluate(path, chunk_rows=200).metrics
