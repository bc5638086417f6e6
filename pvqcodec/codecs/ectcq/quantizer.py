"""The entropy-constrained Lloyd iteration of ECTCQ at a fixed step and lambda (informative)."""

import numpy as np

from .trellis import symbol_grid_index, trellis_tables, union_symbol
from .viterbi import viterbi_rows, walk_unions


def _lengths(counts):
    tot = counts.sum(axis=1, keepdims=True)
    p = counts / np.maximum(tot, 1)
    with np.errstate(divide="ignore"):
        return np.where(counts > 0, -np.log2(np.where(counts > 0, p, 1.0)), 30.0)


def ectcq_quantize(x, w, step, lam, v=3, iters=8, nsym=None):
    """x, w: (rows, n) float64. Returns dict with j (grid indices), unions, symbols,
    rec (2, nsym) centroids, the union symbol counts and the reconstruction y."""
    x = np.ascontiguousarray(x, np.float64)
    w = np.ascontiguousarray(w, np.float64)
    nxt, union = trellis_tables(v)
    if nsym is None:
        nsym = 2 * int(np.max(np.abs(x)) / step + 8) + 4
    jgrid = np.empty((2, nsym), np.int64)
    s = np.arange(nsym)
    jgrid[0] = symbol_grid_index(s, np.zeros(nsym, np.int64))
    jgrid[1] = symbol_grid_index(s, np.ones(nsym, np.int64))
    rec = jgrid * step
    lens = np.zeros((2, nsym))
    j = np.empty(x.shape, np.int64)
    for it in range(iters):
        viterbi_rows(x, w, step, rec, lens, lam if it else 0.0, nxt, union, j)
        u = walk_unions(j, nxt, union)
        sym = union_symbol(j)
        key = u * nsym + np.minimum(sym, nsym - 1)
        counts = np.bincount(key.ravel(), minlength=2 * nsym).reshape(2, nsym).astype(np.float64)
        num = np.bincount(key.ravel(), weights=(x * w).ravel(), minlength=2 * nsym).reshape(2, nsym)
        den = np.bincount(key.ravel(), weights=w.ravel(), minlength=2 * nsym).reshape(2, nsym)
        rec = np.where(den > 0, num / np.where(den > 0, den, 1), jgrid * step)
        lens = _lengths(counts)
    y = rec[u, np.minimum(sym, nsym - 1)]
    return dict(j=j, unions=u, symbols=sym, rec=rec, counts=counts, y=y)


def conditional_entropy_bits(counts) -> float:
    """Sum over unions of the order-0 entropy of that union's symbols (bits, in total)."""
    tot = 0.0
    for c in counts:
        c = c[c > 0]
        if c.size:
            tot += float(-(c * np.log2(c / c.sum())).sum())
    return tot
