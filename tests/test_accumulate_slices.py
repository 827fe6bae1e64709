"""Per-slice accumulators: state that grows with the slice's rows, values checked independently.

A slice's fine confidence histogram is sparse while small and dense once large
(``fine_hist.SPARSE_BINS``); the latency sketch exists only once latencies are sketched.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from aipm_tracking import fine_hist
from aipm_tracking.accumulate import FINE_BINS, EvalAccumulator
from aipm_tracking.evaluation import evaluate


def sliced_table(seed: int = 0, n_small: int = 300, big_rows: int = 48_000) -> pd.DataFrame:
    """``n_small`` slices of 5-60 rows, one of 1 row, one whose confidences are all 1.0 (the
    last fine bin, all tied) and one slice ``big`` large enough to be dense."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 61, n_small)
    names = np.concatenate([np.repeat([f"s{i:03d}" for i in range(n_small)], sizes),
                            ["one"], np.full(30, "sure"), np.full(big_rows, "big")])
    rng.shuffle(names)
    n = names.size
    y = rng.integers(0, 4, n)
    conf = np.where(names == "sure", 1.0, rng.random(n))
    pred = np.where(rng.random(n) < conf, y, (y + 1) % 4)
    return pd.DataFrame({
        "example_id": np.arange(n), "label": y, "prediction": pred, "confidence": conf,
        "latency_ms": rng.lognormal(4, 0.6, n), "cost_usd": rng.random(n) * 1e-3,
        "overridden": rng.random(n) < 0.05, "slice": names})


def cols_of(df: pd.DataFrame, threshold: float = 0.5) -> dict[str, np.ndarray]:
    return {"label": df["label"].to_numpy(), "prediction": df["prediction"].to_numpy(),
            "correct": (df["label"] == df["prediction"]).to_numpy(),
            "confidence": df["confidence"].to_numpy(),
            "fallback": (df["confidence"] < threshold).to_numpy(),
            "overridden": df["overridden"].to_numpy(dtype=float),
            "latency_ms": df["latency_ms"].to_numpy(), "cost_usd": df["cost_usd"].to_numpy(),
            "slice": df["slice"].to_numpy()}


def reference(d: pd.DataFrame, threshold: float = 0.5) -> dict[str, float]:
    """Every metric of one slice, from its rows, with sklearn / numpy and DESIGN §4."""
    from sklearn.metrics import accuracy_score, brier_score_loss

    y, p, c = d["label"].to_numpy(), d["prediction"].to_numpy(), d["confidence"].to_numpy()
    lat, cost = d["latency_ms"].to_numpy(), d["cost_usd"].to_numpy()
    correct = y == p
    n = len(d)
    b = np.minimum(np.floor(c * 15).astype(int), 14)  # DESIGN §4 reliability bin
    gaps = {k: abs(correct[b == k].mean() - c[b == k].mean()) for k in np.unique(b)}
    if np.unique(c).size == n:  # no ties: the risk-coverage curve point by point
        order = np.argsort(-c)
        aurc = float(np.mean(np.cumsum(~correct[order]) / np.arange(1, n + 1)))
    else:
        assert np.unique(c).size == 1  # one tie group: every coverage has its error rate
        aurc = float(1 - correct.mean())
    fb = c < threshold
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    ref = {"n_examples": n, "accuracy": accuracy_score(y, p), "fallback_rate": fb.mean(),
           "override_rate": d["overridden"].mean(),
           "brier": brier_score_loss(correct.astype(int), c, pos_label=1),
           "ece": sum(np.count_nonzero(b == k) / n * g for k, g in gaps.items()),
           "mce": max(gaps.values()), "aurc": aurc,
           "latency_ms_p50": p50, "latency_ms_p95": p95, "latency_ms_p99": p99,
           "latency_ms_mean": lat.mean(), "cost_per_query_usd": cost.mean(),
           "cost_total_usd": cost.sum()}
    if (~fb).any():
        ref["selective_accuracy"] = accuracy_score(y[~fb], p[~fb])
    return ref


def held_bytes(acc: EvalAccumulator) -> int:
    return sum(v.nbytes for v in acc.to_state().values())


def test_many_small_slices_hold_state_that_grows_with_their_rows() -> None:
    # 600 slices of 50 rows: each used to hold 2.5 MB of fine histograms (1.5 GB here)
    rng = np.random.default_rng(1)
    n = 600 * 50
    y = rng.integers(0, 4, n)
    conf = rng.random(n)
    df = pd.DataFrame({"label": y, "prediction": np.where(rng.random(n) < conf, y, 0),
                       "confidence": conf, "latency_ms": rng.lognormal(4, 0.6, n),
                       "cost_usd": rng.random(n) * 1e-3, "overridden": rng.random(n) < 0.05,
                       "slice": rng.permutation(np.repeat([f"c{i}" for i in range(600)], 50))})
    warm = EvalAccumulator()  # imports (scipy.special, stats) before tracing
    warm.update(cols_of(df.iloc[:100]))
    warm.result()
    tracemalloc.start()
    try:
        acc = EvalAccumulator()
        acc.update(cols_of(df))
        held, peak = tracemalloc.get_traced_memory()
        res = acc.result()
        _, peak_result = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(acc.slices) == 600
    # the rows themselves (kept exactly: latency 8 B, correct+confidence+cost 17 B) and a
    # sparse histogram of at most 50 bins each: a few KB per slice, not 2.5 MB
    assert sum(held_bytes(s) for s in acc.slices.values()) < 600 * 8_000
    assert held < 16 * 2**20, held  # measured 6.6 MB (2.5 MB: the top level's histogram)
    assert peak < 32 * 2**20, peak
    assert peak_result < 32 * 2**20, peak_result
    assert all(s.hist.bins is not None and s.sketch is None for s in acc.slices.values())
    assert res.details["slices"]["values"] == dict.fromkeys(acc.slices, 50)


@pytest.mark.parametrize("mode", ["memory", "streamed"])
def test_every_slice_metric_matches_its_rows(mode: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[EvalAccumulator] = []
    result = EvalAccumulator.result
    monkeypatch.setattr(EvalAccumulator, "result", lambda self: seen.append(self) or result(self))
    df = sliced_table(seed=2)
    if mode == "memory":  # 'big' takes its 48,000 rows at once: dense from the start
        res = evaluate(df, keep_examples=False)
    else:  # 'big' takes ~4,500 rows a chunk and turns dense past SPARSE_BINS occupied bins
        path = tmp_path / "e.parquet"
        df.to_parquet(path, index=False)
        res = evaluate(path, chunk_rows=6_000)
    (acc,) = seen
    assert [k for k, s in acc.slices.items() if s.hist.bins is None] == ["big"]
    groups = dict(tuple(df.groupby("slice")))
    assert res.details["slices"]["values"] == {k: len(v) for k, v in groups.items()}
    for name, d in groups.items():
        ref = reference(d)
        got = {k.split("[")[0]: v for k, v in res.metrics.items() if k.endswith(f"[slice={name}]")}
        assert set(got) == set(ref), name
        for k, v in ref.items():
            assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-15), (name, k)


def _assert_identical(a: Any, b: Any) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]) or (np.isnan(a[k]) and np.isnan(b[k])), k


def test_sparse_and_dense_histograms_give_the_same_values(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """Bit for bit, also where AURC and thresholds come from the histogram (slices past
    ``aurc_exact_rows``), through chunks, merges and to_state/from_state."""
    from aipm_tracking.selective import Groups, aurc_from_groups

    df = sliced_table(seed=3, n_small=40, big_rows=9_000)
    parts = np.array_split(np.arange(len(df)), 7)

    def run() -> tuple[EvalAccumulator, Any]:
        accs = []
        for i in range(0, 7, 2):  # shards of up to two chunks, as across ranks
            acc = EvalAccumulator(exact_rows=40, aurc_exact_rows=40)
            for j in range(i, min(i + 2, 7)):
                acc.update(cols_of(df.iloc[parts[j]]))
            accs.append(acc)
        merged = EvalAccumulator.from_state(accs[0].to_state())
        for acc in accs[1:]:
            merged.merge(EvalAccumulator.from_state(acc.to_state()))
        return merged, merged.result()

    sparse_acc, sparse = run()  # the default limit: everything sparse here
    assert sparse_acc.hist.bins is not None
    assert all(s.hist.bins is not None for s in sparse_acc.slices.values())
    small = [s for k, s in sparse_acc.slices.items() if k != "big"]
    assert any(s.sel_exact is None and s.sketch is not None for s in small)
    monkeypatch.setattr(fine_hist, "SPARSE_BINS", 2_000)  # the top level and 'big' turn dense
    mixed_acc, mixed = run()
    assert mixed_acc.hist.bins is None and mixed_acc.slices["big"].hist.bins is None
    assert all(s.hist.bins is not None for k, s in mixed_acc.slices.items() if k != "big")
    monkeypatch.setattr(fine_hist, "SPARSE_BINS", 0)  # all dense, as before sparse ones
    dense_acc, dense = run()
    assert all(s.hist.bins is None for s in dense_acc.slices.values())
    for other in (mixed, dense):
        _assert_identical(sparse.metrics, other.metrics)
        assert sparse.details["reliability"] == other.details["reliability"]
        assert sparse.details["risk_coverage"] == other.details["risk_coverage"]
    for name, d in df.groupby("slice"):  # histogram AURC: the fine bins' tie groups
        sub = sparse_acc.slices[str(name)]
        g, exact = sub.selection_groups()
        if exact:
            continue
        c = d["confidence"].to_numpy()
        fine = np.minimum((c * FINE_BINS).astype(np.int64), FINE_BINS - 1)
        cnt = np.bincount(fine, minlength=FINE_BINS)
        err = np.bincount(fine, weights=(d["label"] != d["prediction"]).to_numpy(),
                          minlength=FINE_BINS).astype(np.int64)
        nz = np.flatnonzero(cnt)[::-1]
        want = Groups(nz / FINE_BINS, cnt[nz], err[nz])
        assert np.array_equal(g.threshold, want.threshold) and np.array_equal(g.n, want.n)
        assert np.array_equal(g.err, want.err)
        assert sparse.metrics[f"aurc[slice={name}]"] == aurc_from_groups(want)


def test_sparse_state_round_trips_and_dense_state_still_loads() -> None:
    df = sliced_table(seed=4, n_small=20, big_rows=0)
    acc = EvalAccumulator()
    acc.update(cols_of(df))
    st = acc.to_state()
    assert "fine_bins" in st and "sketch" not in st
    assert st["fine"].shape[0] <= len(df)
    back = EvalAccumulator.from_state(st)
    _assert_identical(back.result().metrics, acc.result().metrics)
    acc.hist.densify()  # the dense form (as a state from before sparse histograms)
    for s in acc.slices.values():
        s.hist.densify()
    st = acc.to_state()
    assert "fine_bins" not in st and st["fine"].shape == (FINE_BINS, 2)
    _assert_identical(EvalAccumulator.from_state(st).result().metrics, back.result().metrics)
