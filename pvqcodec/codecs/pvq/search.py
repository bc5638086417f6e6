"""Pulse search: the point of S(d, k) closest in angle to each row of X.

For a row x (and optional positive weights w) `pvq_search` looks for y in Z^d with
sum |y_i| = k that maximizes the weighted cosine objective

    J(y) = (sum_i w_i x_i y_i)^2 / (sum_i w_i y_i^2)        (w = 1 when not given).

The search works on magnitudes (the signs of y are those of x; a zero x_i gets '+'):

1. Projection (as in Opus/CELT): u = |x| / max|x|, y_i = floor(u_i (k - 1) / sum u), which
   places at most k - 1 pulses. (By Cauchy-Schwarz the unconstrained optimum of J is
   y proportional to x, for any positive w.)
2. Greedy: the remaining pulses are placed one at a time on the coordinate that makes
   J largest; candidates are compared by cross-multiplication, without division.
3. Refinement: for each coordinate i holding a pulse, the best single-pulse move i -> j
   is applied if it increases J; this pass over i is repeated until a pass moves
   nothing or `refine_passes` passes have run.

Rows are independent, so the parallel version (numba prange over chunks of rows) gives
bit-identical results to the serial one whatever the thread count.
"""

from __future__ import annotations

import operator

import numba
import numpy as np

__all__ = ["pvq_search", "pvq_objective", "DEFAULT_REFINE_PASSES"]

#: Default cap on refinement passes (each pass is O(d^2) per row).
DEFAULT_REFINE_PASSES = 4

_MAX_K = 2**30
_CHUNK = 256  # rows per parallel work item


@numba.njit(cache=True)
def _search_row(x, w, has_w, k, passes, y, u, ww, a):
    """Search one row x (length d) into y (int32, length d); u, ww, a are scratch."""
    d = x.shape[0]
    m = 0.0
    for i in range(d):
        v = abs(np.float64(x[i]))
        u[i] = v
        if v > m:
            m = v
    for i in range(d):
        y[i] = 0
    if k == 0:
        return
    if not m > 0.0:
        # x == 0: every y has J = 0; put all pulses on coordinate 0 (sign +).
        y[0] = k
        return
    wm = 0.0
    if has_w:
        for i in range(d):
            v = np.float64(w[i])
            if v > wm:
                wm = v
    # Normalize |x| to max 1 and w to max 1 (J is scale-invariant in both): keeps every
    # product below finite bounds and tiny/denormal inputs away from 0/0 or inf.
    su = 0.0
    for i in range(d):
        ui = u[i] / m
        u[i] = ui
        su += ui
        wi = np.float64(w[i]) / wm if has_w else 1.0
        ww[i] = wi
        a[i] = wi * ui

    # 1. projection: at most k - 1 pulses
    placed = 0
    if k > 1:
        scale = (k - 1) / su
        for i in range(d):
            p = np.int64(np.floor(u[i] * scale))
            y[i] = p
            placed += p
        if placed > k:  # cannot happen in exact arithmetic; stay safe
            for i in range(d):
                y[i] = 0
            placed = 0
    S = 0.0
    E = 0.0
    for i in range(d):
        yi = np.float64(y[i])
        S += a[i] * yi
        E += ww[i] * yi * yi

    # 2. greedy: one pulse at a time, maximize (S + a_j)^2 / (E + w_j (2 y_j + 1))
    for _ in range(k - placed):
        best = 0
        bn = -1.0
        bd = 1.0
        for j in range(d):
            sn = S + a[j]
            n = sn * sn
            dd = E + ww[j] * (2.0 * y[j] + 1.0)
            if n * bd > bn * dd:
                best = j
                bn = n
                bd = dd
        S += a[best]
        E += ww[best] * (2.0 * y[best] + 1.0)
        y[best] += 1

    # 3. refinement: single-pulse moves i -> j that increase J
    for _ in range(passes):
        # recompute S, E exactly so rounding does not drift over passes
        S = 0.0
        E = 0.0
        for i in range(d):
            yi = np.float64(y[i])
            S += a[i] * yi
            E += ww[i] * yi * yi
        moved = False
        for i in range(d):
            if y[i] == 0:
                continue
            S0 = S - a[i]
            E0 = E - ww[i] * (2.0 * y[i] - 1.0)
            best = -1
            bn = S * S  # the current objective is the bar to beat
            bd = E
            for j in range(d):
                if j == i:
                    continue
                sn = S0 + a[j]
                n = sn * sn
                dd = E0 + ww[j] * (2.0 * y[j] + 1.0)
                if n * bd > bn * dd:
                    best = j
                    bn = n
                    bd = dd
            if best >= 0:
                S = S0 + a[best]
                E = E0 + ww[best] * (2.0 * y[best] + 1.0)
                y[i] -= 1
                y[best] += 1
                moved = True
        if not moved:
            break

    for i in range(d):
        if x[i] < 0:
            y[i] = -y[i]


@numba.njit(cache=True)
def _search_rows(X, W, has_w, k, passes, Y, g0, g1):
    d = X.shape[1]
    u = np.empty(d, dtype=np.float64)
    ww = np.empty(d, dtype=np.float64)
    a = np.empty(d, dtype=np.float64)
    for g in range(g0, g1):
        _search_row(X[g], W[g if has_w else 0], has_w, k, passes, Y[g], u, ww, a)


@numba.njit(cache=True)
def _search_serial(X, W, has_w, k, passes, Y):
    _search_rows(X, W, has_w, k, passes, Y, 0, X.shape[0])


@numba.njit(cache=True, parallel=True)
def _search_parallel(X, W, has_w, k, passes, Y, chunk):
    G = X.shape[0]
    nchunks = (G + chunk - 1) // chunk
    for c in numba.prange(nchunks):
        g0 = c * chunk
        g1 = min(G, g0 + chunk)
        _search_rows(X, W, has_w, k, passes, Y, g0, g1)


def pvq_search(
    X: np.ndarray,
    k: int,
    weights: np.ndarray | None = None,
    *,
    refine_passes: int = DEFAULT_REFINE_PASSES,
    parallel: bool = True,
) -> np.ndarray:
    """Pulse vectors y (int32, shape (G, d)) with sum|y| == k per row, signs as in X.

    X: float32 or float64 (G, d), finite. weights: None or positive finite (G, d)
    (converted to float32). refine_passes: cap on refinement passes (0 = projection and
    greedy only). parallel: spread rows over numba threads; the result is identical
    to the serial one.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (groups, d), got shape {X.shape}")
    if X.dtype not in (np.float32, np.float64):
        if X.dtype.kind not in "fiu":
            raise ValueError(f"X must be a real array, got dtype {X.dtype}")
        X = X.astype(np.float64)
    X = np.ascontiguousarray(X)
    G, d = X.shape
    if d < 1:
        raise ValueError("X must have at least one column")
    k = operator.index(k)
    if not 0 <= k <= _MAX_K:
        raise ValueError(f"k={k} is outside 0..{_MAX_K}")
    refine_passes = operator.index(refine_passes)
    if refine_passes < 0:
        raise ValueError("refine_passes must be >= 0")
    if not np.isfinite(X).all():
        raise ValueError("X has non-finite values")
    if weights is None:
        has_w = False
        W = np.ones((1, d), dtype=np.float32)
    else:
        W = np.ascontiguousarray(np.asarray(weights, dtype=np.float32))
        if W.shape != X.shape:
            raise ValueError(f"weights must have the shape of X {X.shape}, got {W.shape}")
        if not (np.isfinite(W).all() and (W > 0).all()):
            raise ValueError("weights must be positive and finite (as float32)")
        has_w = True
    Y = np.empty((G, d), dtype=np.int32)
    if G == 0:
        return Y
    if parallel and G > _CHUNK and numba.get_num_threads() > 1:
        _search_parallel(X, W, has_w, k, refine_passes, Y, _CHUNK)
    else:
        _search_serial(X, W, has_w, k, refine_passes, Y)
    return Y


def pvq_objective(X: np.ndarray, Y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-row objective (sum w x y)^2 / (sum w y^2) in float64 (a reference, not fast)."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    w = np.ones_like(X) if weights is None else np.asarray(weights, dtype=np.float64)
    num = (w * X * Y).sum(axis=1) ** 2
    den = (w * Y * Y).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
