"""Synthetic, realistic eval sets for ``aipm demo`` and examples (vectorised numpy).

A support bot routes tickets to 10 intents for users in three languages. Version 2 is a
little better overall but worse for German users and slower in the tail: the kind of
trade-off a single accuracy number hides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

INTENTS = np.array(["billing", "refund", "login", "shipping", "cancel", "upgrade", "bug",
                    "feedback", "privacy", "other"])
SLICES = np.array(["en", "de", "fr"])

DEMO_GUARDRAILS = """\
# Success criteria fixed before training (aipm demo).
version: 1
name: support-bot-release
fallback_threshold: 0.6          # below this confidence the bot hands over to a human
alpha: 0.05
metrics:
  accuracy:           {min: 0.80, max_regression: 0.01}
  latency_ms_p95:     {max: 1500, max_regression: "10%"}
  cost_per_query_usd: {max: 0.004}
  override_rate:      {max: 0.08, severity: warn}
  ece:                {max: 0.08}
slices:
  "slice=de": {accuracy: {min: 0.80, max_regression: 0.02}}
"""


@dataclass(frozen=True)
class _Profile:
    acc: tuple[float, float, float]  # accuracy for en, de, fr users
    lat: float  # median latency, ms
    cost: float  # mean cost per query, USD
    override: float  # base human-override rate


_PROFILES = {
    1: _Profile(acc=(0.86, 0.85, 0.84), lat=420.0, cost=0.0021, override=0.05),
    2: _Profile(acc=(0.905, 0.78, 0.87), lat=470.0, cost=0.0017, override=0.045),
}


def make_eval_set(version: int, n: int = 6000, seed: int = 7) -> pd.DataFrame:
    """Per-example results of model ``version`` (1 or 2) on the same ``n`` examples."""
    import pandas as pd

    prof = _PROFILES[version]
    base = np.random.default_rng(seed)  # shared: the eval set itself
    slice_idx = base.choice(3, size=n, p=[0.6, 0.25, 0.15])
    label_idx = base.integers(0, len(INTENTS), n)
    difficulty = base.random(n)  # shared per example: makes outcomes correlated (paired)
    rng = np.random.default_rng(seed * 1000 + version)
    p_correct = np.asarray(prof.acc)[slice_idx]
    # same example difficulty for both versions, plus a little version-specific noise
    u = np.clip(0.85 * difficulty + 0.15 * rng.random(n), 0, 1)
    correct = u < p_correct
    wrong = (label_idx + rng.integers(1, len(INTENTS), n)) % len(INTENTS)
    pred_idx = np.where(correct, label_idx, wrong)
    confidence = np.where(correct, rng.beta(14, 0.8, n), rng.beta(2.6, 2.4, n))
    latency = rng.lognormal(np.log(prof.lat), 0.38 + 0.06 * (version - 1), n)
    cost = np.clip(rng.normal(prof.cost, prof.cost * 0.25, n), 0.0, None)
    overridden = rng.random(n) < np.where(correct, prof.override * 0.5,
                                          prof.override * 2.5)
    return pd.DataFrame({
        "example_id": np.char.add("ex-", np.arange(n).astype(str)),
        "label": INTENTS[label_idx],
        "prediction": INTENTS[pred_idx],
        "confidence": np.round(confidence, 4),
        "latency_ms": np.round(latency, 1),
        "cost_usd": np.round(cost, 6),
        "overridden": overridden,
        "slice": SLICES[slice_idx],
    })
