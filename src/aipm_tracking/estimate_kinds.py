"""Per-metric estimators behind :func:`aipm_tracking.estimate.estimate_deltas`.

One function per metric family (rates, selective accuracy, calibration, means, percentiles,
AURC) plus traffic-mix combinations; the module docstring of :mod:`aipm_tracking.estimate`
says which test each family gets. Everything here works on aligned numpy columns from
``estimate._Sides`` and returns :class:`~aipm_tracking.estimate.DeltaEstimate`.

Means (``brier``, ``latency_ms_mean``, ``cost_per_query_usd``, and their traffic-mix
combinations) are not bootstrapped: :func:`aipm_tracking.stats.mean_test` gives Student's t
on the per-row differences (test ``t-paired``) or Welch's t (``welch-unpaired``; under a
traffic mix, the weighted sum of per-slice means with Welch-Satterthwaite degrees of
freedom), the interval extended on the skewed side (Hall's transformation). A percentile
bootstrap of the mean under-covers on small skewed samples (95% intervals covered 86-88% of
paired lognormal cost deltas at n=50); the t-based interval is analytic (any Holm level, a
p-value that agrees with it) and costs one pass over the rows.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np

from .calibration_bias import N_BINS, bias_bounded, plugin_bias_bounds
from .estimate import DeltaEstimate, _f, _rng, _Sides, point_estimate
from .resample import (
    AurcKernel,
    CalibrationKernel,
    Kernel,
    QuantileKernel,
    RatioKernel,
    _cells,
    _draw,
    kernel_deltas,
)
from .stats import (
    bootstrap_p_value,
    mcnemar_exact,
    mean_test,
    newcombe_interval,
    percentile_interval,
    tango_interval,
    two_proportion_pvalue,
)

_PERCENTILES = (0.5, 0.95, 0.99)
_NEEDS = {"rate": ("{col}",), "selective": ("correct", "fallback"),
          "calibration": ("correct", "confidence"), "mean": ("{col}",),
          "quantile": ("{col}",), "aurc": ("correct", "confidence")}


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _unusable(sides: _Sides, name: str, why: str) -> DeltaEstimate:
    est = point_estimate(sides.base.metric(name), sides.cand.metric(name), why)
    est.inconclusive = True
    return est


def _boot(b: Any, c: Any, deltas: np.ndarray, test: str, n: int, reason: str
          ) -> DeltaEstimate:
    bv, cv = _f(b), _f(c)
    if bv is None or cv is None:
        return DeltaEstimate(bv, cv, None, test="point", n=n,
                             reason=_join(reason, "metric undefined on these rows"))
    d = np.asarray(deltas, dtype=np.float64)
    return DeltaEstimate(bv, cv, cv - bv, bootstrap_p_value(d), test, n, reason,
                         ci_fn=partial(percentile_interval, d))


def _mean(b: Any, c: Any, parts: list[tuple[float, np.ndarray]], paired: bool, n: int,
          reason: str) -> DeltaEstimate:
    """A mean delta (or a weighted sum of per-slice mean deltas) by :func:`stats.mean_test`:
    ``parts`` are ``(weight, values)`` of independent samples (paired: the per-row
    differences; unpaired: the candidate's rows with ``+w``, the baseline's with ``-w``)."""
    bv, cv = _f(b), _f(c)
    if bv is None or cv is None:
        return DeltaEstimate(bv, cv, None, test="point", n=n,
                             reason=_join(reason, "metric undefined on these rows"))
    if any(x.size < 2 for _, x in parts):
        return DeltaEstimate(bv, cv, cv - bv, test="point", n=n,
                             reason=_join(reason, "fewer than 2 rows: no interval"))
    mt = mean_test(parts)
    return DeltaEstimate(bv, cv, cv - bv, mt.p_value, "t-paired" if paired else "welch-unpaired",
                         n, reason, ci_fn=mt.ci)


def _columns(sides: _Sides, family: str, col: str, mask_b: np.ndarray | None,
             mask_c: np.ndarray | None) -> tuple[list[np.ndarray], list[np.ndarray], str] | str:
    """The family's columns per side, rows restricted to the slice and (for the value
    columns) to rows known on both sides when paired. Returns an error string if missing."""
    names = [n.format(col=col) for n in _NEEDS[family]]
    out: list[list[np.ndarray]] = [[], []]
    for i, side in enumerate(("b", "c")):
        for nm in names:
            a = sides.col(side, nm)
            if a is None:
                return _missing_column(sides, side, nm)
            out[i].append(a)
    paired = sides.mode == "paired"
    nullable = family == "rate" and col == "overridden"
    keep: list[np.ndarray] = []
    for i, mask in enumerate((mask_b, mask_c)):
        k = np.ones(out[i][0].size, bool) if mask is None else mask.copy()
        if not nullable:
            for nm, a in zip(names, out[i], strict=True):
                if sides.has_nan("bc"[i], nm, a):
                    k &= ~np.isnan(a)
        keep.append(k)
    note = ""
    if paired:
        both = keep[0] & keep[1]
        dropped = int(np.count_nonzero(keep[0] | keep[1])) - int(np.count_nonzero(both))
        if dropped:
            note = f"{dropped} rows without {names[-1]} on one run left out"
        keep = [both, both]
    sel = [out[i] if bool(keep[i].all()) else [a[keep[i]] for a in out[i]] for i in (0, 1)]
    return (sel[0], sel[1], note)


#: Columns derived from the user's columns (evaluate / ``_Sides.col``) -> what they need.
_DERIVED = {"correct": ("label", "prediction"), "brier": ("label", "prediction", "confidence"),
            "fallback": ("confidence",)}


def _missing_column(sides: _Sides, side: str, col: str) -> str:
    """Why column ``col`` is unavailable, named by the columns a user writes (``label``,
    ``prediction``, ``confidence``), not by a derived one such as ``correct``."""
    who = "baseline" if side == "b" else "candidate"
    df = sides.base.examples if side == "b" else sides.cand.examples
    have = set() if df is None else {str(c) for c in df.columns}
    needs = _DERIVED.get(col)
    if needs is None:
        return f"column '{col}' missing in the {who}'s per-example table"
    if col == "brier" and "correct" in have:
        needs = ("confidence",)
    lacking = [c for c in needs if c not in have] or list(needs)
    names = " and ".join(f"'{c}'" for c in lacking)
    why = {"correct": "correctness needs 'label' and 'prediction', or a 'correct' column",
           "brier": "the Brier score needs 'confidence' and correctness ('label' and "
                    "'prediction', or 'correct')",
           "fallback": "fallback needs a 'fallback' column or 'confidence'"}[col]
    return (f"column{'s' if len(lacking) > 1 else ''} {names} missing in the {who}'s "
            f"per-example table ({why}; rename columns with --map or column_map)")


# -- families --------------------------------------------------------------------------------

def _rate(sides: _Sides, name: str, b: list[np.ndarray], c: list[np.ndarray], reason: str,
          seed: int, n_boot: int) -> DeltaEstimate:
    (yb,), (yc,) = b, c
    kb, kc = ~np.isnan(yb), ~np.isnan(yc)
    if sides.mode == "paired":
        if not np.array_equal(kb, kc):
            rb, rc, deltas = kernel_deltas(RatioKernel(), (yb, kb), (yc, kc), paired=True,
                                           n_boot=n_boot, rng=_rng(seed, name))
            return _boot(rb[0], rc[0], deltas[:, 0], "bootstrap-paired", int(yb.size),
                         _join(reason, "known on different rows in the two runs"))
        vb, vc = yb[kb] > 0.5, yc[kc] > 0.5
        n = int(vb.size)
        if n == 0:
            return _unusable(sides, name, _join(reason, "no rows to compare"))
        n10 = int(np.count_nonzero(vc & ~vb))
        n01 = int(np.count_nonzero(vb & ~vc))
        pb, pc = float(np.count_nonzero(vb)) / n, float(np.count_nonzero(vc)) / n
        return DeltaEstimate(pb, pc, pc - pb, float(mcnemar_exact(n01, n10)), "mcnemar-exact", n,
                             _join(reason, f"{n10 + n01} discordant pairs of {n}"),
                             ci_fn=partial(_tango, n10, n01, n))
    vb, vc = yb[kb], yc[kc]
    nb, nc = int(vb.size), int(vc.size)
    if nb == 0 or nc == 0:
        return _unusable(sides, name, _join(reason, "no rows to compare"))
    xb, xc = float(vb.sum()), float(vc.sum())
    return DeltaEstimate(xb / nb, xc / nc, xc / nc - xb / nb,
                         float(two_proportion_pvalue(xc, nc, xb, nb)), "wilson-unpaired", nb + nc,
                         reason, ci_fn=partial(_newcombe, xc, nc, xb, nb))


def _tango(n10: int, n01: int, n: int, level: float) -> tuple[float, float]:
    return tango_interval(n10, n01, n, level)


def _newcombe(xc: float, nc: int, xb: float, nb: int, level: float) -> tuple[float, float]:
    lo, hi = newcombe_interval(xc, nc, xb, nb, 1.0 - level)
    return (float(lo), float(hi))


def _selective(sides: _Sides, name: str, b: list[np.ndarray], c: list[np.ndarray],
               reason: str, seed: int, n_boot: int) -> DeltaEstimate:
    (cb, fb), (cc, fc) = b, c
    ab, ac = fb < 0.5, fc < 0.5
    if sides.mode == "paired":
        rb, rc, deltas = kernel_deltas(RatioKernel(), (cb, ab), (cc, ac), paired=True,
                                       n_boot=n_boot, rng=_rng(seed, name))
        return _boot(rb[0], rc[0], deltas[:, 0], "bootstrap-paired", int(cb.size), reason)
    return _rate(sides, name, [np.where(ab, cb, np.nan)], [np.where(ac, cc, np.nan)], reason,
                 seed, n_boot)


def _kernel(sides: _Sides, name: str, cache_key: Any, kernel: Kernel, b: list[np.ndarray],
            c: list[np.ndarray], seed: int, n_boot: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    key = ("kernel", cache_key)
    if key not in sides.cache:
        sides.cache[key] = kernel_deltas(kernel, tuple(b), tuple(c),
                                         paired=sides.mode == "paired", n_boot=n_boot,
                                         rng=_rng(seed, str(cache_key)))
    return sides.cache[key]  # type: ignore[no-any-return]


def _bootstrapped(sides: _Sides, name: str, family: str, col: str, extra: float,
                  key: str | None, b: list[np.ndarray], c: list[np.ndarray], reason: str,
                  seed: int, n_boot: int) -> DeltaEstimate:
    paired = sides.mode == "paired"
    test = "bootstrap-paired" if paired else "bootstrap-unpaired"
    n = int(b[0].size) if paired else int(b[0].size + c[0].size)
    if b[0].size == 0 or c[0].size == 0:
        return _unusable(sides, name, _join(reason, "no rows to compare"))
    if family == "mean":
        parts = [(1.0, c[0] - b[0])] if paired else [(1.0, c[0]), (-1.0, b[0])]
        return _mean(b[0].mean(), c[0].mean(), parts, paired, n, reason)
    j = 0
    kernel: Kernel
    if family == "calibration":
        j = int(extra)
        rb, rc, deltas = _kernel(sides, name, (family, col, key), CalibrationKernel(), b, c,
                                 seed, n_boot)
        widen = sides.cache.get(("calibration-bias", col, key))
        if widen is None:
            widen = sides.cache[("calibration-bias", col, key)] = _bias_widening(b, c, paired)
        below, above = widen[j]
        bv, cv = _f(rb[j]), _f(rc[j])
        if bv is None or cv is None:
            return DeltaEstimate(bv, cv, None, test="point", n=n,
                                 reason=_join(reason, "metric undefined on these rows"))
        p, ci = bias_bounded(deltas[:, j], cv - bv, below, above)
        return DeltaEstimate(bv, cv, cv - bv, p, test, n, reason, ci_fn=ci)
    if family == "quantile":  # all percentiles of the column share one resample
        kernel, j = QuantileKernel(_PERCENTILES), _PERCENTILES.index(extra)
    else:
        kernel = AurcKernel()
    rb, rc, deltas = _kernel(sides, name, (family, col, key), kernel, b, c, seed, n_boot)
    return _boot(rb[j], rc[j], deltas[:, j], test, n, reason)


def _bias_widening(bcols: list[np.ndarray], ccols: list[np.ndarray], paired: bool
                   ) -> list[tuple[float, float]]:
    """``[(below, above)]`` for ECE and MCE: how far the delta's interval is widened for the
    plug-in estimator's bias (:mod:`aipm_tracking.calibration_bias`)."""
    (yb, pb), (yc, pc) = bcols, ccols
    state_b = np.minimum((pb * N_BINS).astype(np.int64), N_BINS - 1)
    if paired:
        state_c = np.minimum((pc * N_BINS).astype(np.int64), N_BINS - 1)
        if np.array_equal(state_b, state_c) and np.array_equal(yb > 0.5, yc > 0.5):
            # the same bin and outcome on every row: the noise is shared, so the two biases
            # differ only through the bins' mean confidences (E|g + e| - |g| is 2-Lipschitz)
            shift = np.abs(np.bincount(state_b, weights=pc - pb, minlength=N_BINS))
            cnt = np.maximum(np.bincount(state_b, minlength=N_BINS), 1)
            ece, mce = 2.0 * float(shift.sum() / pb.size), 2.0 * float((shift / cnt).max())
            return [(ece, ece), (mce, mce)]
    bb, bc = plugin_bias_bounds(yb, pb), plugin_bias_bounds(yc, pc)
    return [(bc[0], bb[0]), (bc[1], bb[1])]


# -- traffic mix -----------------------------------------------------------------------------

def _mix(sides: _Sides, name: str, family: str, col: str, mix: dict[str, float] | None,
         seed: int, n_boot: int) -> DeltaEstimate:
    b_sum, c_sum = sides.base.metric(name), sides.cand.metric(name)
    if not mix:
        return point_estimate(b_sum, c_sum, "no traffic mix given (point values from the runs)")
    if family not in ("rate", "selective", "mean"):
        return point_estimate(b_sum, c_sum, "no interval for a traffic-mix-weighted "
                                            f"{family} metric (point values from the runs)")
    w = {str(k): float(v) for k, v in mix.items() if float(v) > 0}
    total = sum(w.values())
    paired = sides.mode == "paired"
    rng = _rng(seed, name)
    acc_b: list[Any] = []
    acc_c: list[Any] = []
    mean_parts: list[tuple[float, np.ndarray]] = []  # (weight, values) per independent sample
    n_rows = 0
    for s, ws in sorted(w.items()):
        mb = sides.slice_mask("b", f"slice={s}")
        mc = mb if paired else sides.slice_mask("c", f"slice={s}")
        if mb is None or mc is None:
            return _unusable(sides, name, "traffic mix needs a 'slice' column on both runs")
        got = _columns(sides, family, col, mb, mc)
        if isinstance(got, str):
            return _unusable(sides, name, got)
        b, c, _ = got
        if b[0].size == 0 or c[0].size == 0:
            return _unusable(sides, name, f"traffic mix: no rows with slice={s}")
        n_rows += int(b[0].size) if paired else int(b[0].size + c[0].size)
        ws /= total
        if family == "mean":
            acc_b.append(ws * b[0].mean())
            acc_c.append(ws * c[0].mean())
            mean_parts += [(ws, c[0] - b[0])] if paired else [(ws, c[0]), (-ws, b[0])]
            continue
        if family == "selective":
            ob, ib = b[0], b[1] < 0.5
            oc, ic = c[0], c[1] < 0.5
        else:
            ob, ib, oc, ic = b[0], ~np.isnan(b[0]), c[0], ~np.isnan(c[0])
        parts = _ratio_parts(ob, ib, oc, ic, paired, n_boot, rng)
        for acc, (num, den, num0, den0), n_s in ((acc_b, parts[0], ob.size),
                                                 (acc_c, parts[1], oc.size)):
            acc.append((ws / n_s, num, den, num0, den0))
    reason = "stratified by slice, weighted to the traffic mix"
    test = "bootstrap-paired" if paired else "bootstrap-unpaired"
    if family == "mean":
        return _mean(sum(acc_b), sum(acc_c), mean_parts, paired, n_rows, reason)
    vals = []
    for acc in (acc_b, acc_c):
        num = sum(k * x for k, x, _, _, _ in acc)
        den = sum(k * x for k, _, x, _, _ in acc)
        num0 = sum(k * x for k, _, _, x, _ in acc)
        den0 = sum(k * x for k, _, _, _, x in acc)
        with np.errstate(invalid="ignore", divide="ignore"):
            vals.append((num / den, num0 / den0 if den0 else math.nan))
    return _boot(vals[0][1], vals[1][1], vals[1][0] - vals[0][0], test, n_rows, reason)


def _ratio_parts(ob: np.ndarray, ib: np.ndarray, oc: np.ndarray, ic: np.ndarray, paired: bool,
                 n_boot: int, rng: np.random.Generator) -> list[tuple[Any, Any, float, float]]:
    """Per side: (numerator*, denominator*, numerator, denominator) of a ratio in a stratum."""
    k = RatioKernel()
    pb, pc = k.prepare(ob, ib), k.prepare(oc, ic)
    out = []
    if paired:
        occ, cnt, _ = _cells(pb.states * 3 + pc.states, 9, None)
        m = _draw(rng, cnt, n_boot)
        for st in (occ // 3, occ % 3):
            num, den = k.parts(m, st)
            n0, d0 = k.parts(cnt[None], st)
            out.append((num, den, float(n0[0]), float(d0[0])))
    else:
        for p in (pb, pc):
            occ, cnt, _ = _cells(p.states, 3, None)
            m = _draw(rng, cnt, n_boot)
            num, den = k.parts(m, occ)
            n0, d0 = k.parts(cnt[None], occ)
            out.append((num, den, float(n0[0]), float(d0[0])))
    return out


# -- entry point -----------------------------------------------------------------------------

def estimate_one(sides: _Sides, name: str, base: str, key: str | None,
                 spec: tuple[str, str, float], *, seed: int, n_boot: int,
                 mix: dict[str, float] | None) -> DeltaEstimate:
    """The estimate of one example-based metric (``sides.mode`` is paired or unpaired)."""
    family, col, extra = spec
    if key is not None and key.startswith("mix="):
        return _mix(sides, name, family, col, mix, seed, n_boot)
    mask_b = mask_c = None
    if key is not None:
        if "=" not in key:
            return _unusable(sides, name, f"cannot read slice {key!r} (expected column=value)")
        mask_b = sides.slice_mask("b", key)
        mask_c = mask_b if sides.mode == "paired" else sides.slice_mask("c", key)
        if mask_b is None or mask_c is None:
            return _unusable(sides, name, f"no column '{key.partition('=')[0]}' for slice {key}")
        if not mask_b.any() or not mask_c.any():
            where = "the matched examples" if sides.mode == "paired" else "one of the runs"
            return _unusable(sides, name, f"no rows with {key} in {where}")
    got = _columns(sides, family, col, mask_b, mask_c)
    if isinstance(got, str):
        return _unusable(sides, name, got)
    b, c, note = got
    reason = _join(sides.note, note)
    if family == "rate":
        return _rate(sides, name, b, c, reason, seed, n_boot)
    if family == "selective":
        return _selective(sides, name, b, c, reason, seed, n_boot)
    return _bootstrapped(sides, name, family, col, extra, key, b, c, reason, seed, n_boot)
