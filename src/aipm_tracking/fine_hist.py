"""The fine confidence histogram of an :class:`~aipm_tracking.accumulate.EvalAccumulator`.

Per fine confidence bin (``FINE_BINS`` = 15 x 4096 of them, so ``fine >> 12`` is the ECE bin
of DESIGN §4): rows by correctness, their confidence sums and cost sums. It is sparse (the
occupied bins only, 48 bytes each) up to ``SPARSE_BINS`` bins and dense (2.5 MB) beyond, so a
per-slice accumulator holds memory in proportion to its rows; both forms hold the same
values and give the same results, bit for bit.
"""

from __future__ import annotations

import numpy as np

from .selective import Groups

N_BINS = 15
_SUB = 4096                      # fine bins per reliability bin (a power of two)
FINE_BINS = N_BINS * _SUB        # 61,440: conf*15*4096 is exact, so fine >> 12 == ECE bin
#: the fine histogram stays sparse up to this many occupied bins (48 bytes each, dense: 40 bytes
#: for each of the FINE_BINS) and takes chunks of at most this many rows sparsely (a sort);
#: beyond, dense
SPARSE_BINS = FINE_BINS // 2
_EMPTY = np.empty(0, dtype=np.int64)


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sorted union of two sorted int arrays of distinct values (``np.union1d`` without its
    hash-based ``np.unique``, which was 30x slower on a few thousand values, measured)."""
    if not a.size or not b.size:
        return b if not a.size else a
    c = np.concatenate((a, b))
    c.sort()
    keep = np.empty(c.size, dtype=bool)
    keep[0] = True
    np.not_equal(c[1:], c[:-1], out=keep[1:])
    return c[keep]


class FineHist:
    """Per fine confidence bin: rows by correctness (``n[:, correct]``), their confidence sums
    (``conf[:, correct]``) and cost sums (``cost``).

    Sparse while small: row ``i`` of the arrays is fine bin ``bins[i]`` (sorted, occupied bins
    only). Dense (``bins`` is None; row ``i`` is fine bin ``i``) once it would hold more than
    ``SPARSE_BINS`` bins or takes a chunk of more than ``SPARSE_BINS`` rows. Every bin's sums
    are added in the same order in both forms (a bin absent from one side adds exactly 0), so
    both hold the same values.
    """

    def __init__(self) -> None:
        self.bins: np.ndarray | None = _EMPTY
        self.n = np.zeros((0, 2), dtype=np.int64)
        self.conf = np.zeros((0, 2))
        self.cost = np.zeros(0)

    def densify(self) -> None:
        if self.bins is None:
            return
        n, conf, cost = (np.zeros((FINE_BINS, 2), dtype=np.int64), np.zeros((FINE_BINS, 2)),
                         np.zeros(FINE_BINS))
        n[self.bins], conf[self.bins], cost[self.bins] = self.n, self.conf, self.cost
        self.bins, self.n, self.conf, self.cost = None, n, conf, cost

    def add_bins(self, bins: np.ndarray, n: np.ndarray, conf: np.ndarray,
                 cost: np.ndarray) -> None:
        """Add the sums of the (sorted, distinct) fine bins ``bins``."""
        if self.bins is not None and not self.bins.size and bins.size <= SPARSE_BINS:
            self.bins, self.n, self.conf, self.cost = bins, n.copy(), conf.copy(), cost.copy()
            return
        if self.bins is not None:
            occupied = _union(self.bins, bins)
            if occupied.size > SPARSE_BINS:
                self.densify()
            else:
                if occupied.size > self.bins.size:
                    k, at = occupied.size, np.searchsorted(occupied, self.bins)
                    n_, conf_, cost_ = (np.zeros((k, 2), dtype=np.int64), np.zeros((k, 2)),
                                        np.zeros(k))
                    n_[at], conf_[at], cost_[at] = self.n, self.conf, self.cost
                    self.bins, self.n, self.conf, self.cost = occupied, n_, conf_, cost_
                bins = np.searchsorted(self.bins, bins)
        self.n[bins] += n
        self.conf[bins] += conf
        self.cost[bins] += cost

    def add_rows(self, idx: np.ndarray, ci: np.ndarray, conf: np.ndarray,
                 cost: np.ndarray | None) -> None:
        """Add rows: fine bin ``idx`` (int64; overwritten), correct ``ci`` (0/1), confidence,
        cost (None: not kept)."""
        if self.bins is not None and idx.size <= SPARSE_BINS:
            bins, inv = np.unique(idx, return_inverse=True)
            k = bins.size
            key = inv * 2 + ci
            self.add_bins(bins, np.bincount(key, minlength=2 * k).reshape(k, 2),
                          np.bincount(key, weights=conf, minlength=2 * k).reshape(k, 2),
                          np.zeros(k) if cost is None else
                          np.bincount(inv, weights=cost, minlength=k))
            return
        self.densify()
        if cost is not None:
            self.cost += np.bincount(idx, weights=cost, minlength=FINE_BINS)
        idx <<= 1
        idx |= ci  # (fine bin, correct) in one index: one count pass, one weighted pass
        self.n += np.bincount(idx, minlength=2 * FINE_BINS).reshape(FINE_BINS, 2)
        self.conf += np.bincount(idx, weights=conf, minlength=2 * FINE_BINS).reshape(FINE_BINS, 2)

    def merge(self, other: FineHist) -> None:
        if other.bins is not None:
            self.add_bins(other.bins, other.n, other.conf, other.cost)
            return
        self.densify()
        self.n += other.n
        self.cost += other.cost
        self.conf += other.conf

    def reliability(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows, correct rows and confidence sums per reliability bin (``N_BINS`` each)."""
        if self.bins is None:
            return (self.n.sum(axis=1).reshape(N_BINS, _SUB).sum(axis=1),
                    self.n[:, 1].reshape(N_BINS, _SUB).sum(axis=1),
                    self.conf.sum(axis=1).reshape(N_BINS, _SUB).sum(axis=1))
        rel = self.bins // _SUB
        cnt, acc = np.zeros(N_BINS, dtype=np.int64), np.zeros(N_BINS, dtype=np.int64)
        np.add.at(cnt, rel, self.n.sum(axis=1))
        np.add.at(acc, rel, self.n[:, 1])
        # float sums: spread out as the dense sums, whose pairwise order of additions depends
        # on where the occupied bins lie, so that both forms give the same values
        conf = np.zeros(FINE_BINS)
        conf[self.bins] = self.conf.sum(axis=1)
        return cnt, acc, conf.reshape(N_BINS, _SUB).sum(axis=1)

    def groups(self, with_cost: bool) -> Groups:
        """Occupied fine bins as tie groups, highest confidence first."""
        if self.bins is None:
            nz = np.flatnonzero(self.n.sum(axis=1))[::-1]
            n, cost = self.n[nz], self.cost[nz]
        else:  # every sparse bin is occupied
            nz, n, cost = self.bins[::-1], self.n[::-1], self.cost[::-1]
        return Groups(nz / FINE_BINS, n.sum(axis=1), n[:, 0], cost if with_cost else None)

    def state(self) -> dict[str, np.ndarray]:
        st = {"fine": self.n, "fine_conf": self.conf, "fine_cost": self.cost}
        if self.bins is not None:
            st["fine_bins"] = self.bins
        return st

    @classmethod
    def from_state(cls, st: dict[str, np.ndarray]) -> FineHist:
        h = cls()
        h.bins = np.array(st["fine_bins"], dtype=np.int64) if "fine_bins" in st else None
        h.n = np.array(st["fine"], dtype=np.int64)
        h.conf = np.array(st["fine_conf"], dtype=np.float64)
        h.cost = np.array(st["fine_cost"], dtype=np.float64)
        return h
