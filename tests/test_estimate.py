"""estimate_deltas: pairing, tests per metric family, slices, traffic mix, edge cases.

Numbers are cross-checked against statsmodels / scipy and against the runs' own metrics as
computed by ``evaluate`` (an independent code path: streaming accumulators, not the
bootstrap kernels used here)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import confint_proportions_2indep

from aipm_tracking.estimate import SUMMARY_ONLY, estimate_deltas
from aipm_tracking.evaluation import evaluate
from aipm_tracking.schema import MetricValue, ModelInfo, RunRecord

ALL = ["accuracy", "fallback_rate", "override_rate", "selective_accuracy", "ece", "mce",
       "brier", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "latency_ms_mean",
       "cost_per_query_usd", "aurc"]


def table(n: int, seed: int, *, acc: float = 0.8, lat_shift: float = 0.0,
          base: pd.DataFrame | None = None, flip: float = 0.1) -> pd.DataFrame:
    """A per-example table; with ``base`` the rows are the same examples (ids, labels,
    slices) and a fraction ``flip`` of the outcomes change (a paired candidate)."""
    rng = np.random.default_rng(seed)
    if base is None:
        label = rng.integers(0, 3, n)
        conf = rng.beta(5, 2, n)
        correct = rng.random(n) < acc
        lat = rng.lognormal(5, 0.5, n)
        df = pd.DataFrame({"example_id": [f"q{i}" for i in range(n)], "label": label,
                           "slice": rng.choice(["de", "en", "fr"], n, p=[0.3, 0.5, 0.2])})
    else:
        df = base[["example_id", "label", "slice"]].copy()
        label = df["label"].to_numpy()
        old = base["prediction"].to_numpy() == label
        ch = rng.random(n) < flip
        correct = np.where(ch, rng.random(n) < acc, old)
        conf = np.clip(base["confidence"].to_numpy() + rng.normal(0, 0.05, n), 0, 1)
        lat = base["latency_ms"].to_numpy() * np.exp(lat_shift + rng.normal(0, 0.1, n))
    df["prediction"] = np.where(correct, label, (label + 1) % 3)
    df["confidence"] = conf
    df["latency_ms"] = lat
    df["cost_usd"] = rng.gamma(2.0, 0.001, n)
    df["overridden"] = rng.random(n) < 0.05
    return df


def record(df: pd.DataFrame | None, *, mix: dict[str, float] | None = None,
           thr: float = 0.5) -> RunRecord:
    """A RunRecord as ``aipm log`` makes it: evaluate the table, keep its examples."""
    if df is None:
        return RunRecord(run_id="s", name="s", model=ModelInfo("m"),
                         metrics={"accuracy": MetricValue(0.8)})
    res = evaluate(df, fallback_threshold=thr, traffic_mix=mix)
    return RunRecord(run_id="r", name="r", model=ModelInfo("m"), metrics=res.metric_values(),
                     details=res.details, examples=res.examples)


@pytest.fixture(scope="module")
def pair() -> tuple[pd.DataFrame, pd.DataFrame]:
    b = table(3000, 1)
    return b, table(3000, 2, base=b, acc=0.75, lat_shift=0.05)


def crosstab(b: np.ndarray, c: np.ndarray) -> tuple[int, int]:
    return int(np.sum(c & ~b)), int(np.sum(b & ~c))


# -- paired ----------------------------------------------------------------------------------

def test_paired_values_equal_evaluate_and_tests_match_statsmodels(pair) -> None:  # type: ignore[no-untyped-def]
    b, c = pair
    rb, rc = record(b), record(c)
    ests, info = estimate_deltas(rb, rc, ALL, n_boot=500, seed=0)
    assert info.paired and info.matched == 3000 and info.baseline_only == 0
    for m in ALL:
        e = ests[m]
        assert e.baseline == pytest.approx(rb.metric(m), rel=1e-9, abs=1e-12), m
        assert e.candidate == pytest.approx(rc.metric(m), rel=1e-9, abs=1e-12), m
        assert e.delta == pytest.approx(e.candidate - e.baseline)
        assert not e.inconclusive and e.n == 3000
        lo, hi = e.ci_at(0.95)
        lo99, hi99 = e.ci_at(0.99)
        assert lo99 <= lo <= hi <= hi99
        assert 0.0 <= e.p_value <= 1.0
    cb, cc = rb.examples["correct"].to_numpy(), rc.examples["correct"].to_numpy()
    n10, n01 = crosstab(cb, cc)
    ref = mcnemar([[0, n01], [n10, 0]], exact=True).pvalue
    assert ests["accuracy"].test == "mcnemar-exact"
    assert ests["accuracy"].p_value == pytest.approx(ref, rel=1e-12)
    for m in ("ece", "latency_ms_p95", "aurc", "selective_accuracy"):
        assert ests[m].test == "bootstrap-paired"
    for m in ("brier", "latency_ms_mean", "cost_per_query_usd"):  # tests/test_mean_intervals.py
        assert ests[m].test == "t-paired"


def test_latency_mean_interval_close_to_scipy_paired_bootstrap(pair) -> None:  # type: ignore[no-untyped-def]
    b, c = pair
    e = estimate_deltas(record(b), record(c), ["latency_ms_mean"], n_boot=2000)[0][
        "latency_ms_mean"]
    xb, xc = b["latency_ms"].to_numpy(), c["latency_ms"].to_numpy()
    ref = sps.bootstrap((xb, xc), lambda x, y, axis=-1: y.mean(axis=axis) - x.mean(axis=axis),
                        paired=True, n_resamples=2000, method="percentile",
                        random_state=np.random.default_rng(3)).confidence_interval
    lo, hi = e.ci_at(0.95)
    width = ref.high - ref.low
    assert lo == pytest.approx(ref.low, abs=0.1 * width)
    assert hi == pytest.approx(ref.high, abs=0.1 * width)


def test_identical_runs() -> None:
    df = table(500, 3)
    r = record(df)
    ests, _ = estimate_deltas(r, record(df.copy()), ALL, n_boot=300)
    for m in ALL:
        e = ests[m]
        assert e.delta == 0.0, m
        assert e.p_value == 1.0, m
        lo, hi = e.ci_at(0.95)
        assert lo <= 0.0 <= hi, m
    # no discordant pairs: Tango's interval is +-z^2/(n+z^2), not zero width
    z2 = sps.norm.ppf(0.975) ** 2
    assert ests["accuracy"].ci_at(0.95)[1] == pytest.approx(z2 / (500 + z2))


def test_all_correct_and_constant_confidence() -> None:
    df = table(400, 4)
    df["prediction"] = df["label"]
    df["confidence"] = 0.9
    d2 = df.copy()
    d2["latency_ms"] *= 1.2
    ests, _ = estimate_deltas(record(df), record(d2), ALL, n_boot=300)
    assert ests["accuracy"].baseline == 1.0 and ests["accuracy"].p_value == 1.0
    assert ests["ece"].baseline == pytest.approx(0.1) and ests["ece"].delta == 0.0
    assert ests["aurc"].baseline == 0.0 and ests["aurc"].ci_at(0.9) == (0.0, 0.0)
    assert ests["latency_ms_p50"].p_value < 0.01 and ests["latency_ms_p50"].delta > 0


def test_zero_baseline_rate() -> None:
    df = table(300, 5)
    df["overridden"] = False
    d2 = df.copy()
    d2.loc[:29, "overridden"] = True
    e = estimate_deltas(record(df), record(d2), ["override_rate"])[0]["override_rate"]
    assert e.baseline == 0.0 and e.delta == pytest.approx(0.1)
    assert e.p_value == pytest.approx(2 * 0.5 ** 30)
    assert e.ci_at(0.95)[0] > 0


def test_confirmed_regression_needs_enough_examples() -> None:
    """A 0.5-point accuracy drop is significant on 100k paired examples, not on 200."""
    for n, significant in ((100_000, True), (200, False)):
        rng = np.random.default_rng(6)
        cb = rng.random(n) < 0.9
        cc = cb.copy()
        # 3% discordant pairs, net -0.5 points: 1.75% lose, 1.25% gain
        lose = rng.choice(np.flatnonzero(cb), int(0.0175 * n), replace=False)
        gain = rng.choice(np.flatnonzero(~cb), int(0.0125 * n), replace=False)
        cc[lose], cc[gain] = False, True
        recs = []
        for corr in (cb, cc):
            df = pd.DataFrame({"example_id": np.arange(n), "label": 1,
                               "prediction": np.where(corr, 1, 0)})
            recs.append(record(df))
        e = estimate_deltas(recs[0], recs[1], ["accuracy"])[0]["accuracy"]
        assert e.delta == pytest.approx(-0.005, abs=0.003)
        lo, hi = e.ci_at(0.95)
        assert (hi < 0) == significant
        assert (e.p_value < 0.05) == significant


def test_override_nulls() -> None:
    b = table(400, 7)
    b["overridden"] = b["overridden"].astype(object)
    b.loc[:49, "overridden"] = None
    c = b.copy()
    c["overridden"] = np.where(np.arange(400) % 7 == 0, True, False)
    c["overridden"] = c["overridden"].astype(object)
    c.loc[:49, "overridden"] = None
    e = estimate_deltas(record(b), record(c), ["override_rate"])[0]["override_rate"]
    assert e.test == "mcnemar-exact" and e.n == 350  # rows known in both runs
    c.loc[:99, "overridden"] = None  # nulls on different rows: ratio bootstrap
    e = estimate_deltas(record(b), record(c), ["override_rate"])[0]["override_rate"]
    assert e.test == "bootstrap-paired" and "different rows" in e.reason


# -- pairing ---------------------------------------------------------------------------------

def test_shuffled_rows_pair_by_id(pair) -> None:  # type: ignore[no-untyped-def]
    b, c = pair
    rb, rc = record(b), record(c)
    shuffled = RunRecord(run_id="x", name="x", model=ModelInfo("m"),
                         examples=rc.examples.sample(frac=1.0, random_state=0))
    names = ["accuracy", "ece", "latency_ms_p95", "aurc", "brier", "accuracy[slice=de]"]
    a, _ = estimate_deltas(rb, rc, names, n_boot=300)
    s, info = estimate_deltas(rb, shuffled, names, n_boot=300)
    assert info.paired and info.matched == 3000
    for m in names:
        assert s[m].delta == pytest.approx(a[m].delta, rel=1e-9, abs=1e-12), m
        assert s[m].p_value == pytest.approx(a[m].p_value, abs=0.02), m
    # integer ids in another order too
    ib = rb.examples.assign(example_id=np.arange(3000))
    ic = rc.examples.assign(example_id=np.arange(3000)).iloc[::-1]
    r1 = RunRecord(run_id="a", name="a", model=ModelInfo("m"), examples=ib)
    r2 = RunRecord(run_id="b", name="b", model=ModelInfo("m"), examples=ic)
    assert estimate_deltas(r1, r2, ["accuracy"])[0]["accuracy"].delta == pytest.approx(
        a["accuracy"].delta)


def test_ids_of_different_types_pair_as_text() -> None:
    """Ids read as integers from one file and as text from another still pair."""
    b = table(200, 12)
    b["example_id"] = np.arange(200)
    c = b.copy()
    c["example_id"] = [str(i) for i in range(200)]
    c = c.iloc[::-1]
    ests, info = estimate_deltas(record(b), record(c), ["accuracy"])
    assert info.paired and info.matched == 200
    assert ests["accuracy"].delta == 0.0 and ests["accuracy"].p_value == 1.0


@pytest.mark.parametrize("collide", ["baseline", "candidate"])
def test_hash_collisions_fall_back_to_exact_id_matching(collide: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """64-bit id hashes never decide a match alone (forced collisions here)."""
    from aipm_tracking import estimate

    b = table(300, 13)
    c = b.sample(frac=1.0, random_state=2)
    c.loc[c.index[:30], "prediction"] = (c["label"][:30] + 1) % 3
    calls: list[int] = []

    def keys(a: np.ndarray) -> np.ndarray:
        calls.append(1)
        if (len(calls) == 1) == (collide == "baseline"):
            return np.zeros(a.size, np.uint64)  # every id hashes alike
        return np.arange(a.size, dtype=np.uint64)

    monkeypatch.setattr(estimate, "_id_keys", keys)
    ests, info = estimate_deltas(record(b), record(c), ["accuracy"])
    assert info.paired and info.matched == 300 and len(calls) == 2
    rb, rc = record(b), record(c.sort_index())
    assert ests["accuracy"].delta == pytest.approx(rc.metric("accuracy") - rb.metric("accuracy"))
    n10, n01 = crosstab(rb.examples["correct"].to_numpy(), rc.examples["correct"].to_numpy())
    assert ests["accuracy"].p_value == pytest.approx(mcnemar_exact_ref(n10, n01))


def mcnemar_exact_ref(n10: int, n01: int) -> float:
    return float(mcnemar([[0, n01], [n10, 0]], exact=True).pvalue)


def test_mismatched_eval_sets_are_inconclusive(pair) -> None:  # type: ignore[no-untyped-def]
    b, c = pair
    rb = record(b.iloc[:1000])
    rc = record(c.iloc[188:1188])
    ests, info = estimate_deltas(rb, rc, ["accuracy", "latency_ms_p95", "n_examples"])
    assert not info.paired and info.matched == 812 and info.baseline_only == 188
    assert info.reason == ("eval sets differ: 812 of 1000 baseline examples matched "
                           "(812 of 1000 candidate examples)")
    assert ests["accuracy"].inconclusive and ests["accuracy"].reason == info.reason
    assert ests["accuracy"].ci_at(0.95) is None
    assert not ests["n_examples"].inconclusive  # summary metric: point comparison
    few, info = estimate_deltas(record(b.iloc[:20]), record(c.iloc[:20]), ["accuracy"])
    assert few["accuracy"].inconclusive and "only 20 examples matched" in info.reason


def test_partial_match_pairs_the_subset(pair) -> None:  # type: ignore[no-untyped-def]
    b, c = pair
    rb, rc = record(b.iloc[:1000]), record(c.iloc[40:1000])
    e = estimate_deltas(rb, rc, ["accuracy"])[0]["accuracy"]
    sub_b = rb.examples["correct"].to_numpy()[40:]
    assert e.baseline == pytest.approx(sub_b.mean()) and e.n == 960
    assert e.baseline != pytest.approx(rb.metric("accuracy"))
    assert "paired on the 960 matched examples" in e.reason


def test_label_mismatch_and_duplicates(pair) -> None:  # type: ignore[no-untyped-def]
    b, c = pair
    c2 = c.copy()
    c2.loc[:99, "label"] = (c2.loc[:99, "label"] + 1) % 3
    ests, info = estimate_deltas(record(b), record(c2), ["accuracy"])
    assert ests["accuracy"].inconclusive
    assert info.reason == "eval sets differ: labels differ on 100 of 3000 matched examples"
    dup = RunRecord(run_id="d", name="d", model=ModelInfo("m"),
                    examples=record(c).examples.assign(example_id=lambda d: d["example_id"]
                                                       .where(d.index != 5, "q0"))
                    .iloc[::-1])
    ests, info = estimate_deltas(record(b), dup, ["accuracy"])
    assert ests["accuracy"].inconclusive and "duplicate example_id" in info.reason


def test_unpaired_without_example_id(pair) -> None:  # type: ignore[no-untyped-def]
    b, c = pair
    rb, rc = record(b), record(c.drop(columns="example_id"))
    ests, info = estimate_deltas(rb, rc, ["accuracy", "latency_ms_p95", "brier"], n_boot=300)
    assert not info.paired and "no example_id in the candidate's table" in info.reason
    e = ests["accuracy"]
    assert e.test == "wilson-unpaired" and e.n == 6000
    kb, kc = int(rb.examples["correct"].sum()), int(rc.examples["correct"].sum())
    lo, hi = confint_proportions_2indep(kc, 3000, kb, 3000, method="newcomb", compare="diff")
    assert e.ci_at(0.95) == pytest.approx((lo, hi), abs=1e-10)
    assert ests["latency_ms_p95"].test == "bootstrap-unpaired"
    assert ests["brier"].delta == pytest.approx(rc.metric("brier") - rb.metric("brier"))


def test_summary_only_runs(pair) -> None:  # type: ignore[no-untyped-def]
    b, _ = pair
    s = record(None)
    ests, info = estimate_deltas(s, record(b), ["accuracy", "ece"])
    assert not info.paired and info.reason.startswith(SUMMARY_ONLY)
    assert ests["accuracy"].test == "point" and ests["accuracy"].ci_at(0.95) is None
    assert ests["accuracy"].delta == pytest.approx(record(b).metric("accuracy") - 0.8)
    assert ests["ece"].baseline is None and ests["ece"].delta is None


# -- slices and mix --------------------------------------------------------------------------

def test_slices(pair) -> None:  # type: ignore[no-untyped-def]
    b, c = pair
    rb, rc = record(b), record(c)
    ests, _ = estimate_deltas(rb, rc, ["accuracy[slice=de]", "latency_ms_p50[slice=fr]",
                                       "accuracy[slice=xx]", "accuracy[lang=de]"], n_boot=300)
    m = b["slice"].to_numpy() == "de"
    cb, cc = rb.examples["correct"].to_numpy()[m], rc.examples["correct"].to_numpy()[m]
    e = ests["accuracy[slice=de]"]
    assert e.baseline == pytest.approx(cb.mean()) and e.n == m.sum()
    n10, n01 = crosstab(cb, cc)
    assert e.p_value == pytest.approx(mcnemar([[0, n01], [n10, 0]], exact=True).pvalue)
    fr = b["slice"].to_numpy() == "fr"
    assert ests["latency_ms_p50[slice=fr]"].baseline == pytest.approx(
        np.median(b["latency_ms"].to_numpy()[fr]))
    empty = ests["accuracy[slice=xx]"]
    assert empty.inconclusive and "no rows with slice=xx" in empty.reason
    assert ests["accuracy[lang=de]"].inconclusive


def test_traffic_mix_matches_evaluate(pair) -> None:  # type: ignore[no-untyped-def]
    b, c = pair
    mix = {"de": 0.6, "en": 0.3, "fr": 0.1}
    rb, rc = record(b, mix=mix), record(c, mix=mix)
    names = ["accuracy[mix=traffic]", "override_rate[mix=traffic]",
             "selective_accuracy[mix=traffic]", "latency_ms_mean[mix=traffic]",
             "latency_ms_p95[mix=traffic]"]
    ests, _ = estimate_deltas(rb, rc, names, n_boot=400)
    for m in names[:4]:
        e = ests[m]
        assert e.baseline == pytest.approx(rb.metric(m), rel=1e-9), m
        assert e.candidate == pytest.approx(rc.metric(m), rel=1e-9), m
        assert "traffic mix" in e.reason and e.ci_at(0.95) is not None
    # stratified bootstrap: the mix-weighted accuracy's SE follows the per-slice variances
    acc = ests["accuracy[mix=traffic]"]
    se = (acc.ci_at(0.95)[1] - acc.ci_at(0.95)[0]) / (2 * 1.96)
    d = rc.examples["correct"].to_numpy().astype(float) - rb.examples["correct"].to_numpy()
    sl = b["slice"].to_numpy()
    ref = math.sqrt(sum(w * w * d[sl == s].var() / np.sum(sl == s) for s, w in mix.items()))
    assert se == pytest.approx(ref, rel=0.2)
    pct = ests["latency_ms_p95[mix=traffic]"]
    assert pct.test == "point" and pct.ci_at(0.95) is None
    # unpaired (no ids on the candidate): the same values, independent stratified bootstraps
    ru = record(c.drop(columns="example_id"), mix=mix)
    un, _ = estimate_deltas(rb, ru, names[:2], n_boot=400)
    for m in names[:2]:
        assert un[m].test == "bootstrap-unpaired"
        assert un[m].candidate == pytest.approx(rc.metric(m), rel=1e-9)
        lo, hi = un[m].ci_at(0.95)
        assert lo < un[m].delta < hi


def test_reproducible_seed_independent_of_metric_order(pair) -> None:  # type: ignore[no-untyped-def]
    b, c = pair
    rb, rc = record(b), record(c)
    a, _ = estimate_deltas(rb, rc, ["ece", "latency_ms_p99"], seed=7, n_boot=300)
    z, _ = estimate_deltas(rb, rc, ["latency_ms_p99", "ece"], seed=7, n_boot=300)
    o, _ = estimate_deltas(rb, rc, ["latency_ms_p99", "ece"], seed=8, n_boot=300)
    assert a["ece"].ci_at(0.9) == z["ece"].ci_at(0.9)
    assert a["latency_ms_p99"].ci_at(0.9) == z["latency_ms_p99"].ci_at(0.9)
    assert o["ece"].ci_at(0.9) != a["ece"].ci_at(0.9)


# -- property: swapping the runs -------------------------------------------------------------

@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(40, 400), acc=st.floats(0.3, 0.95))
def test_swapping_runs_negates_delta_and_mirrors_ci(seed: int, n: int, acc: float) -> None:
    b = table(n, seed)
    c = table(n, seed + 1, base=b, acc=acc, flip=0.3, lat_shift=0.1)
    rb, rc = record(b), record(c)
    names = ["accuracy", "fallback_rate", "override_rate", "latency_ms_mean", "ece"]
    fwd, _ = estimate_deltas(rb, rc, names, n_boot=2000, seed=seed)
    bwd, _ = estimate_deltas(rc, rb, names, n_boot=2000, seed=seed)
    for m in names:
        f, r = fwd[m], bwd[m]
        assert r.delta == pytest.approx(-f.delta, abs=1e-12), m
        (flo, fhi), (rlo, rhi) = f.ci_at(0.9), r.ci_at(0.9)
        if f.test == "mcnemar-exact":  # analytic: exact mirror
            assert r.p_value == pytest.approx(f.p_value)
            assert (rlo, rhi) == pytest.approx((-fhi, -flo), abs=1e-9)
        else:  # resampled: mirrored up to Monte Carlo error
            tol = 0.15 * (fhi - flo) + 1e-12
            assert rlo == pytest.approx(-fhi, abs=tol) and rhi == pytest.approx(-flo, abs=tol)
