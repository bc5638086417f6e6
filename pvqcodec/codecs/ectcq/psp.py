"""Per-survivor processing for BlockLDLQ's ECTCQ blocks (encoder, informative; ldlq.py).

Inside a block of g columns BlockLDLQ's loss is (X - Q) D (X - Q)^T per row, D the
block's g x g LDL metric. Writing D = M diag(delta) M^T with M unit upper-triangular
(columns in trellis order), the loss is sum_c delta_c (t_c - Q_c)^2 with the targets

    t_c = X_c + sum_{c' < c} (X_c' - Q_c') M[c', c],

i.e. scalar LDLQ inside the block: each column's target depends on the choices before
it. A Viterbi search cannot carry one such history, but every survivor path can carry
its own (per-survivor processing, as in decision-feedback Viterbi equalizers): each state
keeps the feedback its survivor's errors add to the block's later columns, and its
branches are priced against its own targets. The search then runs on over the lookahead
columns (fixed targets, no feedback of this block) and commits the block's part of the
best path. Work per block column: states x (2 branches + g feedback updates).
"""

import numpy as np
from numba import njit, prange

from .viterbi import INF, _branch


def upper_ldl(D: np.ndarray):
    """(M, delta) with D = M diag(delta) M^T, M unit upper-triangular (D positive definite)."""
    P = D[::-1, ::-1]
    C = np.linalg.cholesky(P)
    d = np.diagonal(C).copy()
    Lr = C / d[None, :]
    return np.ascontiguousarray(Lr[::-1, ::-1]), np.ascontiguousarray((d * d)[::-1])


@njit(cache=True, nogil=True)
def _psp_row(x, delta, M, xa, wa, step, rec, lens, lam, pred, sub, start, jmax, out_j, jsel, dec, cost, new, acc,
             nacc):
    g = x.size
    na = xa.size
    n = g + na
    ns = pred.shape[0]
    for t in range(ns):
        cost[t] = INF
        for c in range(g):
            acc[t, c] = 0.0
    cost[start] = 0.0
    for i in range(n):
        for t in range(ns):
            best = INF
            bk = 0
            bjj = 0
            for k in range(2):
                p = pred[t, k]
                if cost[p] >= INF:
                    continue
                d = sub[t, k]
                if i < g:
                    c, j = _branch(x[i] + acc[p, i], delta[i], step, d, rec, lens, lam, jmax)
                else:
                    c, j = _branch(xa[i - g], wa[i - g], step, d, rec, lens, lam, jmax)
                c += cost[p]
                if c < best:  # ties keep the first predecessor: deterministic
                    best = c
                    bk = k
                    bjj = j
            new[t] = best
            dec[i, t] = bk
            jsel[i, t] = bjj
            if i < g - 1:
                p = pred[t, bk]
                m = bjj if bjj >= 0 else -bjj
                if m < rec.size:
                    r = rec[m]
                else:
                    r = rec[rec.size - 1] + (m - rec.size + 1) * step
                e = x[i] - (r if bjj >= 0 else -r)  # X - Q: BlockLDLQ's target, not the fed-back one
                for c in range(i + 1, g):
                    nacc[t, c] = acc[p, c] + e * M[i, c]
        for t in range(ns):
            cost[t] = new[t]
        if i < g - 1:
            for t in range(ns):
                for c in range(i + 1, g):
                    acc[t, c] = nacc[t, c]
    s = 0
    for t in range(1, ns):
        if cost[t] < cost[s]:
            s = t
    for i in range(n - 1, -1, -1):
        if i < g:
            out_j[i] = jsel[i, s]
        s = pred[s, dec[i, s]]


@njit(cache=True, parallel=True)
def _psp_rows(x, delta, M, xa, wa, step, rec, lens, lam, pred, sub, starts, jmax, out_j):
    rows, g = x.shape
    n = g + xa.shape[1]
    ns = pred.shape[0]
    for r in prange(rows):
        jsel = np.empty((n, ns), np.int32)
        dec = np.empty((n, ns), np.uint8)
        cost = np.empty(ns)
        new = np.empty(ns)
        acc = np.empty((ns, g))
        nacc = np.empty((ns, g))
        _psp_row(x[r], delta, M, xa[r], wa, step, rec, lens, lam, pred, sub, starts[r], jmax, out_j[r], jsel, dec,
                 cost, new, acc, nacc)


def psp_block(x, D, xa, wa, step, rec, lens, lam, v, starts, jmax):
    """Grid indices (rows, g) int32 of one block: targets x (rows, g) with the block metric D
    (g x g, columns in trellis order), then the lookahead's targets xa (rows, a) with
    per-column weights wa (a,), every row from its start state."""
    from .trellis import predecessors

    M, delta = upper_ldl(np.asarray(D, np.float64))
    pred, sub = predecessors(v)
    x = np.ascontiguousarray(x, np.float64)
    out = np.empty(x.shape, np.int32)
    _psp_rows(x, delta, M, np.ascontiguousarray(xa, np.float64), np.ascontiguousarray(wa, np.float64), float(step),
              np.ascontiguousarray(rec, np.float64), np.ascontiguousarray(lens, np.float64), float(lam), pred, sub,
              np.ascontiguousarray(starts, np.int64), int(jmax), out)
    return out
