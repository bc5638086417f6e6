"""Rate-distortion Viterbi search of entropy-constrained TCQ (encoder, informative).

Each row is one trellis sequence starting in state 0 (free end). The branch cost of
value x with weight w through subset d is

    min over grid points j of D_d near x:  w * (x - rec_u[s(j)])^2 + lam * len_u[s(j)]

(u = d & 1, s(j) the union symbol, rec_u the reconstruction table of union u and len_u
its code lengths in bits). The candidates are the subset's nearest grid point and its
neighbours 4 steps either side, which covers every point the rate term can make best
while lam is below the distortion of moving two steps. The entropy-constrained Lloyd
iteration (Fischer and Wang 1992) alternates this search with the re-estimation of
rec_u (centroids) and len_u (empirical probabilities).
"""

import math

import numpy as np
from numba import njit, prange

INF = 1e300


@njit(cache=True, nogil=True)
def _usym(j):
    t = j >> 1
    if (j & 1) == 0:
        return 2 * t - 1 if t > 0 else -2 * t
    return 2 * t if t >= 0 else -2 * t - 1


@njit(cache=True, nogil=True)
def _branch(x, w, step, d, rec, lens, nsym, lam):
    """(cost, grid index) of the best point of subset d for x."""
    u = d & 1
    jn = 4 * int(math.floor((x / step - d) / 4.0 + 0.5)) + d
    bc = INF
    bj = jn
    for k in range(-1, 2):
        j = jn + 4 * k
        s = _usym(j)
        if s < nsym:
            r = rec[u, s]
            ln = lens[u, s]
        else:
            r = j * step
            ln = lens[u, nsym - 1] + 4.0  # beyond the tables: priced above their tail
        e = x - r
        c = w * e * e + lam * ln
        if c < bc:
            bc = c
            bj = j
    return bc, bj


@njit(cache=True, parallel=True)
def viterbi_rows(x, w, step, rec, lens, lam, nxt, union, out_j):
    """x, w: (rows, n). out_j: (rows, n) int64 grid indices of the best path. Returns the
    total cost per row."""
    rows, n = x.shape
    ns = nxt.shape[0]
    nsym = rec.shape[1]
    total = np.empty(rows)
    for r in prange(rows):
        cost = np.full(ns, INF)
        cost[0] = 0.0
        new = np.empty(ns)
        pred = np.empty((n, ns), np.int32)
        bj_step = np.empty((n, 4), np.int64)
        bc = np.empty(4)
        for i in range(n):
            for d in range(4):
                c, j = _branch(x[r, i], w[r, i], step, d, rec, lens, nsym, lam)
                bc[d] = c
                bj_step[i, d] = j
            for t in range(ns):
                new[t] = INF
            for s in range(ns):
                cs = cost[s]
                if cs >= INF:
                    continue
                u = union[s]
                for z1 in range(2):
                    t = nxt[s, z1]
                    c = cs + bc[2 * z1 + u]
                    if c < new[t]:
                        new[t] = c
                        pred[i, t] = s
            for t in range(ns):
                cost[t] = new[t]
        best = 0
        for t in range(ns):
            if cost[t] < cost[best]:
                best = t
        total[r] = cost[best]
        s = best
        for i in range(n - 1, -1, -1):
            p = pred[i, s]
            # the branch p -> s: its subset is 2 * z1 + union[p] with nxt[p, z1] == s
            z1 = 0 if nxt[p, 0] == s else 1
            out_j[r, i] = bj_step[i, 2 * z1 + union[p]]
            s = p
    return total


@njit(cache=True)
def walk_unions(j, nxt, union):
    """The union of each step of each row's path given its grid indices (state 0 first)."""
    rows, n = j.shape
    out = np.empty((rows, n), np.int64)
    for r in range(rows):
        s = 0
        for i in range(n):
            u = union[s]
            out[r, i] = u
            d = j[r, i] & 3
            s = nxt[s, d >> 1]
    return out
