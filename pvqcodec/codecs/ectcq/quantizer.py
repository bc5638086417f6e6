"""The entropy-constrained Lloyd iteration of ECTCQ at a fixed step and lambda (encoder,
informative: spec codecs/ectcq.md 6.7.7).

Tables (`EctcqTables`): a reconstruction value per grid magnitude |j| (what the format
stores, as offsets) and a code length per union and union symbol (what the rans table
mode will charge). One pass: the Viterbi search of every row under the tables, then the
tables' update from the chosen grid indices: centroids (the weighted mean of
sign(j) * x over the values of each magnitude) and code lengths (-log2 of each union's
empirical symbol frequencies; an unused symbol costs one bit more than the dearest used
one). Alternating the two is the entropy-constrained Lloyd iteration (Chou, Lookabaugh
and Gray 1989; for TCQ Fischer and Wang 1992). The offsets are cut where one more stops
paying its 32 bits (truncate_offsets): at high rates the grid is the centroid and a
table of thousands of offsets would cost bits per weight.
"""

from dataclasses import dataclass

import numpy as np

from ..ecsq.quantizer import code_lengths
from .trellis import union_symbol
from .viterbi import JMAX, viterbi_rows

TABLE_MARGIN = 8  # magnitudes beyond max|x| / step that the tables cover (candidates reach |x|/step + 6)


@dataclass
class EctcqTables:
    """The quantizer's state between passes, independent of the data it came from."""

    step: float
    rec: np.ndarray  # float64, reconstruction value per magnitude 0 .. nrec-1 (rec[0] = 0)
    lens: np.ndarray  # float64 (2, nrec): code length in bits per union and union symbol

    def offsets(self, mmax: int) -> np.ndarray:
        """The stored offsets off(m) = m - r_m / step for m = 1 .. mmax, float32 (6.7.1)."""
        m = np.arange(1, mmax + 1, dtype=np.float64)
        r = self.rec[1 : mmax + 1]
        if r.size < mmax:
            r = np.concatenate([r, m[r.size :] * self.step])
        return (m - r / self.step).astype(np.float32)

    def at_step(self, step: float, nrec: int) -> "EctcqTables":
        """The same tables at another step: offsets kept, magnitudes cut or extended to nrec."""
        m = np.arange(nrec, dtype=np.float64)
        off = np.zeros(nrec)
        k = min(nrec, self.rec.size)
        off[1:k] = m[1:k] - self.rec[1:k] / self.step
        lens = np.empty((2, nrec))
        for u in range(2):
            lens[u, :k] = self.lens[u, :k]
            lens[u, k:] = self.lens[u, :k].max() + 1.0 if k else 0.0
        return EctcqTables(step, (m - off) * step, lens)


def table_size(x: np.ndarray, step: float) -> int:
    """Magnitudes 0 .. nrec-1 the tables cover for data x at this step."""
    top = float(np.max(np.abs(x))) if x.size else 0.0
    return min(JMAX, int(top / step) + TABLE_MARGIN) + 1


def initial_tables(step: float, nrec: int) -> EctcqTables:
    """The grid itself and free symbols: the first pass is plain TCQ (nearest path)."""
    return EctcqTables(step, np.arange(nrec, dtype=np.float64) * step, np.zeros((2, nrec)))


OFFSET_BITS = 32  # a stored offset is a float32


def truncate_offsets(off: np.ndarray, weight: np.ndarray, step: float, lam: float) -> np.ndarray:
    """The offsets off[1..M] (off[0] unused) cut to the count n that minimizes the added
    distortion sum_{m > n} weight_m ((off_m - off_n) step)^2 (magnitudes above n share
    off_n; n = 0: all 0) plus lam * 32 bits per stored offset, as a full-length array."""
    o = np.asarray(off, np.float64)[1:]
    s = np.asarray(weight, np.float64)[1:]
    if o.size == 0:
        return np.asarray(off, np.float64).copy()
    p0 = np.concatenate([[0.0], np.cumsum(s)])
    p1 = np.concatenate([[0.0], np.cumsum(s * o)])
    p2 = np.concatenate([[0.0], np.cumsum(s * o * o)])
    c = np.concatenate([[0.0], o])  # the shared offset when n are kept
    a0, a1, a2 = p0[-1] - p0, p1[-1] - p1, p2[-1] - p2  # sums over m > n, n = 0 .. M
    dist = np.maximum(a2 - 2 * c * a1 + c * c * a0, 0.0) * step * step
    n = int(np.argmin(dist + lam * OFFSET_BITS * np.arange(o.size + 1)))
    out = np.asarray(off, np.float64).copy()
    out[n + 1 :] = c[n]
    return out


def update_tables(x, w, j, step: float, nrec: int, lam: float = None) -> EctcqTables:
    """Centroids per magnitude and code lengths per union from the chosen grid indices.
    With lam, the offsets beyond the count that pays for itself are shared (truncate_offsets)."""
    jj = np.asarray(j, np.int64).ravel()
    xv = np.asarray(x, np.float64).ravel()
    wv = np.asarray(w, np.float64).ravel()
    m = np.abs(jj)
    sgn = np.where(jj < 0, -1.0, 1.0)
    num = np.bincount(m, weights=wv * xv * sgn, minlength=nrec)[:nrec]
    den = np.bincount(m, weights=wv, minlength=nrec)[:nrec]
    grid = np.arange(nrec) * step
    rec = np.where(den > 0, num / np.where(den > 0, den, 1.0), grid)
    rec[0] = 0.0
    if lam is not None:
        used = np.flatnonzero(den > 0)
        top = int(used[-1]) if used.size else 0
        mags = np.arange(top + 1, dtype=np.float64)
        off = truncate_offsets(mags - rec[: top + 1] / step, den[: top + 1], step, lam)
        rec[: top + 1] = (mags - off) * step
        rec[top + 1 :] = (np.arange(top + 1, nrec) - off[top]) * step  # unused: share the last offset
    key = (jj & 1) * nrec + np.minimum(union_symbol(jj), nrec - 1)
    counts = np.bincount(key, minlength=2 * nrec).reshape(2, nrec).astype(np.float64)
    lens = np.stack([code_lengths(counts[0]), code_lengths(counts[1])])
    return EctcqTables(step, rec, lens)


def ectcq_lloyd(x, w, step: float, lam: float, v: int, passes: int, tables: EctcqTables = None):
    """`passes` passes of the entropy-constrained Lloyd iteration on the rows of x (rows, n)
    at a fixed step and lambda, from `tables` (rescaled to this step) or from the grid.
    Returns (j int32 (rows, n) of the last search, the tables updated from it)."""
    nrec = table_size(x, step)
    tables = initial_tables(step, nrec) if tables is None else tables.at_step(step, nrec)
    j = None
    for _ in range(passes):
        j, _, _ = viterbi_rows(x, w, step, tables.rec, tables.lens, lam, v)
        tables = update_tables(x, w, j, step, nrec, lam)
    return j, tables


def conditional_entropy_bits(counts) -> float:
    """Sum over unions of the order-0 entropy of that union's symbols (bits, in total), from
    symbol counts (2, nsym)."""
    tot = 0.0
    for c in np.asarray(counts, np.float64):
        c = c[c > 0]
        if c.size:
            tot += float(-(c * np.log2(c / c.sum())).sum())
    return tot


def ectcq_quantize(x, w, step, lam, v=3, iters=8):
    """The research interface of bench/ec_rd.py: the Lloyd iteration's result as a dict of
    grid indices j, unions, union symbols, symbol counts (2, nsym), the tables and the
    reconstruction y."""
    j, t = ectcq_lloyd(x, w, step, lam, v, iters)
    jj = j.astype(np.int64)
    u = jj & 1
    sym = union_symbol(jj)
    nrec = t.rec.size
    counts = np.bincount((u * nrec + np.minimum(sym, nrec - 1)).ravel(), minlength=2 * nrec).reshape(2, nrec)
    y = np.where(jj < 0, -1.0, 1.0) * t.rec[np.minimum(np.abs(jj), nrec - 1)]
    return dict(j=jj, unions=u, symbols=sym, counts=counts.astype(np.float64), tables=t, y=y)
