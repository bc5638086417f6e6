"""Rate-distortion Viterbi search of entropy-constrained TCQ (encoder, informative: spec
codecs/ectcq.md 6.7.7).

Each row is one trellis path from a given start state (0 for a whole row) with a free
end. The branch cost of value x with weight w through subset d is

    min over grid points j of D_d near x:  w * (x - y(j))^2 + lam * len_u(s(j))

where u = d & 1, s(j) is the union symbol (6.7.5), y(j) = sign(j) * rec[|j|] the
reconstruction (rec per magnitude: what the format stores, 6.7.6) and len_u the code
lengths in bits of union u's symbols. The candidates are the subset's nearest grid point
and its neighbours 4 steps either side (|j| <= jmax): enough while lam is below the
distortion of moving two steps. The add-compare-select step reads each state's two
predecessors (trellis.predecessors), so its inner loop is branch-free gathers.
"""

import math

import numpy as np
from numba import njit, prange

from .trellis import predecessors

INF = 1e300
JMAX = 32767  # |j| limit of the reference encoder: union symbols stay below 32768


@njit(cache=True, nogil=True)
def _branch(x, w, step, d, rec, lens, lam, jmax):
    """(cost, grid index) of the best point of subset d for x."""
    u = d & 1
    nrec = rec.size
    nsym = lens.shape[1]
    jn = 4 * int(math.floor((x / step - d) / 4.0 + 0.5)) + d
    bc = INF
    bj = jn
    for k in range(-1, 2):
        j = jn + 4 * k
        if j > jmax or j < -jmax:
            continue
        m = j if j >= 0 else -j
        if m < nrec:
            r = rec[m]
        else:
            r = rec[nrec - 1] + (m - nrec + 1) * step
        y = r if j >= 0 else -r
        s = j - 1 if j > 0 else -j
        ln = lens[u, s] if s < nsym else lens[u, nsym - 1] + 4.0  # beyond the tables: dearer than their tail
        e = x - y
        c = w * e * e + lam * ln
        if c < bc:
            bc = c
            bj = j
    return bc, bj


@njit(cache=True, nogil=True)
def _viterbi_row(x, w, step, rec, lens, lam, pred, sub, start, jmax, out_j, dec, bj, cost, new):
    """One path; out_j receives its grid indices. Returns (cost, end state)."""
    n = x.size
    ns = pred.shape[0]
    for t in range(ns):
        cost[t] = INF
    cost[start] = 0.0
    bc = np.empty(4)
    for i in range(n):
        for d in range(4):
            c, j = _branch(x[i], w[i], step, d, rec, lens, lam, jmax)
            bc[d] = c
            bj[i, d] = j
        for t in range(ns):
            c0 = cost[pred[t, 0]] + bc[sub[t, 0]]
            c1 = cost[pred[t, 1]] + bc[sub[t, 1]]
            if c1 < c0:  # ties keep the first predecessor: deterministic
                new[t] = c1
                dec[i, t] = 1
            else:
                new[t] = c0
                dec[i, t] = 0
        cost, new = new, cost
    best = 0
    for t in range(1, ns):
        if cost[t] < cost[best]:
            best = t
    total = cost[best]
    s = best
    for i in range(n - 1, -1, -1):
        k = dec[i, s]
        out_j[i] = bj[i, sub[s, k]]
        s = pred[s, k]
    return total, best


@njit(cache=True, parallel=True)
def _viterbi_rows(x, w, step, rec, lens, lam, pred, sub, starts, jmax, out_j, costs, ends):
    rows, n = x.shape
    ns = pred.shape[0]
    for r in prange(rows):
        dec = np.empty((n, ns), np.uint8)
        bj = np.empty((n, 4), np.int32)
        cost = np.empty(ns)
        new = np.empty(ns)
        c, e = _viterbi_row(x[r], w[r], step, rec, lens, lam, pred, sub, starts[r], jmax, out_j[r], dec, bj, cost, new)
        costs[r] = c
        ends[r] = e


def viterbi_rows(x, w, step: float, rec, lens, lam: float, v: int, start_states=None, jmax: int = JMAX):
    """The rate-distortion-optimal trellis paths of the rows of x (rows, n), float64.

    w: weights (rows, n); rec: reconstruction per magnitude |j| (rec[0] = 0; magnitudes
    beyond the table continue its last entry in steps of `step`); lens: (2, nsym) code
    lengths in bits per union and union symbol; lam: the rate multiplier; start_states:
    the state each row starts in (default 0, a whole row). Returns (j int32 (rows, n),
    cost float64 (rows,), end state int64 (rows,))."""
    x = np.ascontiguousarray(x, np.float64)
    w = np.ascontiguousarray(np.broadcast_to(w, x.shape), np.float64)
    rows, n = x.shape
    pred, sub = predecessors(v)
    starts = np.zeros(rows, np.int64) if start_states is None else np.ascontiguousarray(start_states, np.int64)
    if starts.shape != (rows,) or np.any((starts < 0) | (starts >= (1 << v))):
        raise ValueError(f"start_states must be {rows} states in 0..{(1 << v) - 1}")
    j = np.empty((rows, n), np.int32)
    costs = np.empty(rows)
    ends = np.empty(rows, np.int64)
    _viterbi_rows(x, w, float(step), np.ascontiguousarray(rec, np.float64), np.ascontiguousarray(lens, np.float64),
                  float(lam), pred, sub, starts, int(jmax), j, costs, ends)
    return j, costs, ends


@njit(cache=True)
def _walk(j, nxt, starts, ends):
    """Follows each row's grid indices through the trellis; returns the first (row, col)
    whose index is not in its state's union as row * n + col, or -1."""
    rows, n = j.shape
    for r in range(rows):
        s = starts[r]
        for i in range(n):
            g = j[r, i]
            if (g & 1) != (s & 1):
                return r * n + i
            s = nxt[s, (g >> 1) & 1]
        ends[r] = s
    return -1


def walk_states(j, v: int, start_states=None) -> np.ndarray:
    """The end state of each row's path of grid indices j (rows, n); ValueError if a
    grid index is not in its state's union (not a trellis path)."""
    from .trellis import trellis_tables

    j = np.ascontiguousarray(j, np.int64)
    rows, n = j.shape
    nxt, _ = trellis_tables(v)
    starts = np.zeros(rows, np.int64) if start_states is None else np.ascontiguousarray(start_states, np.int64)
    ends = np.empty(rows, np.int64)
    bad = _walk(j, nxt, starts, ends)
    if bad >= 0:
        raise ValueError(f"grid index at row {bad // max(n, 1)}, column {bad % max(n, 1)} is not in its state's union")
    return ends
