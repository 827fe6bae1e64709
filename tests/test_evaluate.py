"""evaluate(): every DESIGN §4 metric cross-checked against independent implementations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aipm_tracking.errors import DataError, UsageError
from aipm_tracking.evaluation import aurc, brier, ece_mce, evaluate
from aipm_tracking.pricing import Pricing


def make_df(n: int = 4000, k: int = 4, seed: int = 0, slices: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    conf = rng.random(n)
    pred = np.where(rng.random(n) < conf, y, (y + 1 + rng.integers(0, k - 1, n)) % k)
    df = pd.DataFrame({
        "example_id": np.arange(n) * 7 + 3,
        "label": y, "prediction": pred, "confidence": conf,
        "latency_ms": rng.lognormal(4, 0.6, n),
        "cost_usd": rng.random(n) * 1e-3,
        "overridden": np.where(rng.random(n) < 0.1, None, rng.random(n) < 0.05),
    })
    if slices:
        df["slice"] = rng.choice(["de", "en", "fr"], n, p=[0.2, 0.5, 0.3])
    return df


def test_metrics_match_sklearn_numpy_statsmodels() -> None:
    from sklearn.metrics import accuracy_score, brier_score_loss, confusion_matrix
    from statsmodels.stats.proportion import proportion_confint

    df = make_df()
    res = evaluate(df, fallback_threshold=0.3)
    m = res.metrics
    y, p, c = df["label"].to_numpy(), df["prediction"].to_numpy(), df["confidence"].to_numpy()
    correct = y == p
    assert m["n_examples"] == len(df)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p), abs=1e-12)
    fb = c < 0.3
    assert m["fallback_rate"] == pytest.approx(fb.mean())
    assert m["selective_accuracy"] == pytest.approx(accuracy_score(y[~fb], p[~fb]))
    ov = df["overridden"].dropna().astype(bool)
    assert m["override_rate"] == pytest.approx(ov.mean())
    assert m["brier"] == pytest.approx(brier_score_loss(correct, c), rel=1e-9)
    lat = df["latency_ms"].to_numpy()
    for q in (50, 95, 99):
        assert m[f"latency_ms_p{q}"] == pytest.approx(np.percentile(lat, q), rel=1e-12)
    assert m["latency_ms_mean"] == pytest.approx(lat.mean())
    assert m["cost_per_query_usd"] == pytest.approx(df["cost_usd"].mean())
    assert m["cost_total_usd"] == pytest.approx(df["cost_usd"].sum())
    cm = confusion_matrix(y, p, labels=sorted(set(y) | set(p)))
    assert res.details["confusion"]["labels"] == [str(v) for v in sorted(set(y) | set(p))]
    assert np.array_equal(np.array(res.details["confusion"]["matrix"]), cm)
    lo, hi = proportion_confint(correct.sum(), len(df), alpha=0.05, method="wilson")
    assert res.stats["accuracy"].ci == pytest.approx((lo, hi), rel=1e-9)
    assert res.stats["accuracy"].n == len(df)
    assert res.stats["override_rate"].n == len(ov)
    assert res.stats["latency_ms_p95"].n == len(df)


def test_ece_and_reliability_match_torchmetrics_and_sklearn() -> None:
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.functional.classification")
    from sklearn.calibration import calibration_curve

    df = make_df(n=20000, seed=3)
    res = evaluate(df)
    correct = (df["label"] == df["prediction"]).to_numpy()
    conf = df["confidence"].to_numpy()
    # continuous random confidences: no value sits on a bin edge, where conventions differ
    t_ece = tm.binary_calibration_error(torch.tensor(conf), torch.tensor(correct.astype(int)),
                                        n_bins=15, norm="l1")
    t_mce = tm.binary_calibration_error(torch.tensor(conf), torch.tensor(correct.astype(int)),
                                        n_bins=15, norm="max")
    assert res.metrics["ece"] == pytest.approx(float(t_ece), abs=1e-6)
    assert res.metrics["mce"] == pytest.approx(float(t_mce), abs=1e-6)
    assert ece_mce(correct, conf) == pytest.approx((float(t_ece), float(t_mce)), abs=1e-6)
    prob_true, prob_pred = calibration_curve(correct, conf, n_bins=15)
    rel = res.details["reliability"]
    assert rel["n_bins"] == 15 and sum(rel["count"]) == len(df)
    accs = [a for a in rel["accuracy"] if a is not None]
    confs = [c for c in rel["confidence"] if c is not None]
    assert np.allclose(accs, prob_true) and np.allclose(confs, prob_pred)


def test_ece_bin_rule_at_edges() -> None:
    # bin = min(floor(conf*15), 14): conf = 1.0 goes to the last bin, 1/15 to bin 1
    conf = np.array([1.0, 1.0, 1 / 15, 0.0])
    correct = np.array([True, False, True, False])
    df = pd.DataFrame({"label": [1, 1, 1, 1], "prediction": np.where(correct, 1, 0),
                       "confidence": conf})
    rel = evaluate(df).details["reliability"]
    assert rel["count"][14] == 2 and rel["count"][1] == 1 and rel["count"][0] == 1
    ece = (2 * abs(0.5 - 1.0) + abs(1 - 1 / 15) + abs(0 - 0)) / 4
    assert evaluate(df).metrics["ece"] == pytest.approx(ece)


def test_aurc_no_ties_equals_textbook_definition() -> None:
    df = make_df(n=3000, seed=5)
    res = evaluate(df)
    conf = df["confidence"].to_numpy()
    err = (df["label"] != df["prediction"]).to_numpy()
    order = np.argsort(-conf)
    textbook = np.mean(np.cumsum(err[order]) / np.arange(1, len(df) + 1))
    assert res.metrics["aurc"] == pytest.approx(textbook, rel=1e-9)
    assert aurc(~err, conf) == pytest.approx(textbook, rel=1e-9)
    rc = res.details["risk_coverage"]
    assert len(rc["coverage"]) <= 201 and rc["coverage"][-1] == pytest.approx(1.0)
    assert rc["risk"][-1] == pytest.approx(err.mean())


def test_brier_kernel() -> None:
    from sklearn.metrics import brier_score_loss

    rng = np.random.default_rng(1)
    c, y = rng.random(500), rng.random(500) < 0.6
    assert brier(y, c) == pytest.approx(brier_score_loss(y, c))


def test_latency_percentiles_equal_numpy_exactly() -> None:
    m = evaluate(pd.DataFrame({"latency_ms": [12.0, 16.0, 18.0]})).metrics
    assert m["latency_ms_p95"] == np.percentile([12.0, 16.0, 18.0], 95)  # 17.8, bit for bit
    assert m["latency_ms_p99"] == np.percentile([12.0, 16.0, 18.0], 99)


@pytest.mark.parametrize("seed", range(6))
def test_latency_percentiles_random_tables_equal_numpy_exactly(seed: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(seed)
    for n in (1, 2, 3, 7, 100, 1001, int(rng.integers(2, 5000))):
        x = {0: rng.lognormal(4, 1.2, n), 1: rng.exponential(300, n),
             2: rng.integers(0, 50, n).astype(float), 3: rng.random(n) * 1e-3,
             4: np.round(rng.normal(500, 80, n).clip(0), 1), 5: rng.pareto(1.5, n) * 100}[seed]
        m = evaluate(pd.DataFrame({"latency_ms": x})).metrics
        for q in (50, 95, 99):
            assert m[f"latency_ms_p{q}"] == np.percentile(x, q), (n, q)
    p = tmp_path / "lat.parquet"  # streamed, still exact below STREAM_EXACT_ROWS
    pd.DataFrame({"latency_ms": x}).to_parquet(p)
    m = evaluate(p, chunk_rows=97).metrics
    for q in (50, 95, 99):
        assert m[f"latency_ms_p{q}"] == np.percentile(x, q)


def test_absent_inputs_are_not_produced() -> None:
    df = make_df(n=200).drop(columns=["latency_ms", "cost_usd", "overridden"])
    m = evaluate(df).metrics
    assert "latency_ms_p95" not in m and "cost_per_query_usd" not in m
    assert "override_rate" not in m and "accuracy" in m
    only_conf = pd.DataFrame({"confidence": [0.2, 0.9, 0.7]})
    m2 = evaluate(only_conf).metrics
    assert m2["fallback_rate"] == pytest.approx(1 / 3)
    assert "accuracy" not in m2 and "ece" not in m2


def test_examples_table_has_correct_and_fallback() -> None:
    df = make_df(n=100, slices=False)
    res = evaluate(df, fallback_threshold=0.4)
    ex = res.examples
    assert ex is not None and len(ex) == 100
    assert (ex["correct"].to_numpy() == (df["label"] == df["prediction"]).to_numpy()).all()
    assert (ex["fallback"].to_numpy() == (df["confidence"] < 0.4).to_numpy()).all()
    assert list(ex.columns[:3]) == ["example_id", "label", "prediction"]
    assert res.details["fallback_threshold"] == 0.4
    assert evaluate(df, keep_examples=False).examples is None


def test_fallback_column_wins_over_threshold() -> None:
    df = make_df(n=100, slices=False)
    df["fallback"] = np.arange(100) % 4 == 0
    res = evaluate(df, fallback_threshold=0.99)
    assert res.metrics["fallback_rate"] == pytest.approx(0.25)
    assert res.examples is not None and res.examples["fallback"].sum() == 25


@pytest.mark.parametrize("column,value,problem", [
    ("confidence", np.nan, "NaN"),
    ("confidence", 1.5, "outside [0, 1]"),
    ("confidence", -0.1, "outside [0, 1]"),
    ("latency_ms", -3.0, "negative"),
    ("cost_usd", -1e-4, "negative"),
    ("example_id", "dup", "duplicate"),
    ("label", None, "null"),
    ("latency_ms", np.inf, "infinite"),
    ("overridden", "maybe", "not boolean"),
])
def test_bad_rows_raise_with_counts_and_ids(column: str, value: object, problem: str) -> None:
    df = make_df(n=50, slices=False)
    rows = [5, 9, 12]
    if value == "dup":
        df.loc[rows, "example_id"] = df.loc[0, "example_id"]
        ids = df.loc[rows, "example_id"].tolist()
    else:
        df.loc[rows, column] = value
        ids = df.loc[rows, "example_id"].tolist()
    with pytest.raises(DataError) as ei:
        evaluate(df)
    msg = str(ei.value)
    assert f"column '{column}': 3 row(s) {problem}" in msg
    assert "\n" not in msg and str(ids[0]) in msg
    res = evaluate(df, drop_bad_rows=True)
    assert res.n_examples == 47
    assert res.issues[0].count == 3 and res.issues[0].problem == problem
    assert res.details["data_issues"][0]["column"] == column


def test_bad_rows_without_ids_use_row_numbers_and_list_every_problem() -> None:
    df = make_df(n=30, slices=False).drop(columns=["example_id"])
    df.loc[[3, 4], "confidence"] = np.nan
    df.loc[[7], "latency_ms"] = -1.0
    with pytest.raises(DataError, match=r"<dataframe>: column 'confidence': 2 row\(s\) NaN "
                                        r"\(e\.g\. 3, 4\); column 'latency_ms': 1 row\(s\) "
                                        r"negative \(e\.g\. 7\)"):
        evaluate(df)


def test_unusable_table_and_missing_mapped_column() -> None:
    with pytest.raises(DataError, match="no usable columns"):
        evaluate(pd.DataFrame({"foo": [1, 2]}))
    with pytest.raises(DataError, match="column 'pred' .* not found"):
        evaluate(make_df(n=10).drop(columns=["prediction"]), column_map={"pred": "prediction"})
    # a map whose canonical column is already there is a no-op (a guardrails map on clean data)
    assert evaluate(make_df(n=10), column_map={"pred": "prediction"}).metrics["accuracy"] >= 0
    with pytest.raises(DataError, match="'prediction' is missing"):
        evaluate(pd.DataFrame({"label": [1, 2]}))
    with pytest.raises(DataError, match="not numeric"):
        evaluate(pd.DataFrame({"confidence": ["a", "b"]}))


def test_column_map_renames() -> None:
    df = make_df(n=100, slices=False).rename(columns={"prediction": "pred", "confidence": "p"})
    res = evaluate(df, column_map={"pred": "prediction", "p": "confidence"})
    ref = evaluate(make_df(n=100, slices=False))
    assert res.metrics == ref.metrics


def test_string_labels_and_mixed_types() -> None:
    df = pd.DataFrame({"label": ["cat", "dog", "dog", "bird"],
                       "prediction": ["cat", "cat", "dog", "bird"], "confidence": [.9, .6, .8, .7]})
    res = evaluate(df)
    assert res.metrics["accuracy"] == pytest.approx(0.75)
    conf = res.details["confusion"]
    assert conf["labels"] == ["bird", "cat", "dog"]
    assert conf["matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    mixed = pd.DataFrame({"label": [1, 2, 3], "prediction": ["1", "2", "4"]})
    assert evaluate(mixed).metrics["accuracy"] == pytest.approx(2 / 3)


def test_edge_cases_all_correct_single_class_constant_confidence() -> None:
    df = pd.DataFrame({"label": [1] * 20, "prediction": [1] * 20, "confidence": [0.7] * 20})
    res = evaluate(df)
    m = res.metrics
    assert m["accuracy"] == 1.0 and m["aurc"] == 0.0
    assert m["ece"] == pytest.approx(0.3) and m["mce"] == pytest.approx(0.3)
    assert res.details["confusion"] == {"labels": ["1"], "matrix": [[20]]}
    rc = res.details["risk_coverage"]
    assert rc["coverage"] == [1.0] and rc["threshold"] == [0.7]  # one tie group, one point
    all_fb = evaluate(df, fallback_threshold=0.9).metrics
    assert all_fb["fallback_rate"] == 1.0 and "selective_accuracy" not in all_fb


def test_slices_match_subset_evaluation() -> None:
    df = make_df(n=3000, seed=2)
    res = evaluate(df, fallback_threshold=0.3)
    assert res.details["slices"]["column"] == "slice"
    assert res.details["slices"]["values"] == df["slice"].value_counts().to_dict()
    for s in ("de", "en", "fr"):
        sub = evaluate(df[df["slice"] == s].drop(columns=["slice"]), fallback_threshold=0.3)
        for name in ("accuracy", "fallback_rate", "selective_accuracy", "ece", "brier", "aurc",
                     "latency_ms_p95", "cost_per_query_usd", "override_rate", "mce"):
            assert res.metrics[f"{name}[slice={s}]"] == pytest.approx(sub.metrics[name], rel=1e-9)
        assert res.stats[f"accuracy[slice={s}]"].ci is not None


def test_empty_slice_categories_and_null_slices() -> None:
    df = make_df(n=300, seed=4)
    df["slice"] = pd.Categorical(df["slice"], categories=["de", "en", "fr", "unused"])
    df.loc[:9, "slice"] = None
    res = evaluate(df)
    assert "accuracy[slice=unused]" not in res.metrics
    assert res.details["slices"]["missing"] == 10
    assert sum(res.details["slices"]["values"].values()) == 290


def test_traffic_mix_reweights() -> None:
    df = make_df(n=3000, seed=6)
    mix = {"de": 0.5, "en": 0.3, "fr": 0.2}
    res = evaluate(df, traffic_mix=mix, fallback_threshold=0.3)
    m = res.metrics
    manual = sum(w * m[f"accuracy[slice={s}]"] for s, w in mix.items())
    assert m["accuracy[mix=traffic]"] == pytest.approx(manual)
    lat = sum(w * m[f"latency_ms_mean[slice={s}]"] for s, w in mix.items())
    assert m["latency_ms_mean[mix=traffic]"] == pytest.approx(lat)
    # selective accuracy: accuracy among answered queries under the production mix
    ans = {s: (df[(df.slice == s)].confidence >= 0.3).mean() for s in mix}
    sel = sum(mix[s] * ans[s] * m[f"selective_accuracy[slice={s}]"] for s in mix) / sum(
        mix[s] * ans[s] for s in mix)
    assert m["selective_accuracy[mix=traffic]"] == pytest.approx(sel)
    assert res.details["traffic_mix"] == mix
    with pytest.raises(DataError, match="xx"):
        evaluate(df, traffic_mix={"de": 0.5, "xx": 0.5})
    with pytest.raises(UsageError, match="sum to 1"):
        evaluate(df, traffic_mix={"de": 0.5, "en": 0.2})


def test_pricing_derives_cost_unless_column_present() -> None:
    df = make_df(n=100, slices=False).drop(columns=["cost_usd"])
    df["input_tokens"] = np.arange(100) * 10
    df["output_tokens"] = 50
    pr = Pricing(input_per_1m_tokens=0.5, output_per_1m_tokens=1.5)
    res = evaluate(df, pricing=pr)
    expected = (df["input_tokens"] * 0.5 + df["output_tokens"] * 1.5) / 1e6
    assert res.metrics["cost_per_query_usd"] == pytest.approx(expected.mean())
    assert res.details["cost_source"] == "pricing"
    assert res.examples is not None and "cost_usd" in res.examples.columns
    df["cost_usd"] = 1.0
    res2 = evaluate(df, pricing=pr)
    assert res2.metrics["cost_per_query_usd"] == 1.0 and res2.details["cost_source"] == "column"
    df.loc[[1, 2], "input_tokens"] = -5
    with pytest.raises(DataError, match="input_tokens.*2 row"):
        evaluate(df, pricing=pr)


def test_threshold_recommendation_in_details() -> None:
    df = make_df(n=2000, seed=8)
    res = evaluate(df, max_risk=0.2)
    rec = res.details["threshold_recommendation"]
    assert rec["found"] and rec["risk_upper"] <= 0.2
    assert rec["exact"] is True


def test_pyarrow_table_input() -> None:
    import pyarrow as pa

    df = make_df(n=200, slices=False)
    assert evaluate(pa.Table.from_pandas(df)).metrics == evaluate(df).metrics


def test_details_are_json_and_follow_conventions() -> None:
    import json

    df = make_df(n=1500, seed=11)
    df.loc[df.index[:300], "confidence"] = 0.97  # an empty-ish reliability bin pattern + ties
    res = evaluate(df, traffic_mix={"de": 0.2, "en": 0.5, "fr": 0.3}, drop_bad_rows=True)
    d = json.loads(json.dumps(res.details, allow_nan=False))
    assert set(d) >= {"reliability", "confusion", "risk_coverage", "latency_quantiles",
                      "slices", "fallback_threshold", "data_issues", "traffic_mix"}
    assert len(d["reliability"]["count"]) == 15
    assert len(d["latency_quantiles"]["q"]) == 101 and d["latency_quantiles"]["q"][95] == 0.95
    assert d["latency_quantiles"]["value"][50] == pytest.approx(res.metrics["latency_ms_p50"])
    rc = d["risk_coverage"]
    assert len(rc["coverage"]) == len(rc["risk"]) == len(rc["threshold"]) <= 201
    assert all(a >= b for a, b in zip(rc["threshold"], rc["threshold"][1:], strict=False))
    assert d["data_issues"] == []
    assert "accuracy[mix=traffic]" in res.metrics and "n_examples[slice=de]" in res.metrics


def test_int_label_float_prediction_is_one_class_and_empty_table_errors() -> None:
    df = pd.DataFrame({"label": [1, 2, 2], "prediction": [1.0, 2.0, 1.0]})
    res = evaluate(df)
    assert res.details["confusion"] == {"labels": ["1", "2"], "matrix": [[1, 0], [1, 1]]}
    with pytest.raises(DataError, match="no rows"):
        evaluate(df.iloc[:0])
    cols = pd.DataFrame({0: [1, 2], 1: [1, 3]})
    cols_before = list(cols.columns)
    with pytest.raises(DataError):
        evaluate(cols)
    assert list(cols.columns) == cols_before  # the caller's frame is not renamed
