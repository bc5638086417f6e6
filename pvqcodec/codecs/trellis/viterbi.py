"""The Viterbi encoder of the bitshift trellis (informative: the spec fixes only what
a decoder reads; any encoder that emits bit strings is conforming).

Trellis (L, kv): 2^L states; state j can follow state i iff the top L - kv bits of j
equal the low L - kv bits of i (kv = k * V new bits per step). Each step emits the
V code values of its state; a path's cost is the (weighted) squared error
sum_t sum_v w[t, v] * (x[t, v] - code_v(s_t))^2.

Predecessors of j are i = (a << (L - kv)) | (j >> kv) for a in 0 .. 2^kv - 1: they
depend on j only through its group g = j >> kv. So one step costs O(2^L), not
O(2^L * 2^kv):

    m[g]       = min over a of cost[(a << (L - kv)) | g]          (2^(L - kv) groups)
    back[t, g] = the minimizing a
    cost'[j]   = m[j >> kv] + err_t(j)

Memory per worker: two cost arrays and the code table (2^L values each, float32:
768 KiB at L = 16, V = 1, so it stays in L2), and the back pointers, S * 2^(L - kv)
bytes, written once and read once (streamed).

Tail-biting (the bit string is a circle, spec 6.3.3): the first state's top L - kv
bits must equal the last state's low L - kv bits (the "overlap"). QTIP's
Algorithm 4, two passes: (1) run an unconstrained Viterbi on the sequence rotated
by S/2 steps and read the overlap at the seam (the top L - kv bits of the state at
original step 0); (2) run the Viterbi on the original sequence with the first state
restricted to that overlap in its top bits and the last state to that overlap in
its low bits. The result is always a valid tail-biting path; it is the best path
with that overlap. `seam` sets the first pass's context, in steps on each side of
the seam (default S/2, QTIP's rotation; more than S/2 goes around the circle again,
which helps a little at L = 16). `exact` mode instead tries every overlap
(2^(L - kv) passes: for small trellises, tests and diagnostics), and `free` mode
drops the constraint (not a tail-biting path: its cost is only a lower bound).
"""

import numba
import numpy as np

MODE_TWO_PASS = 0
MODE_EXACT = 1
MODE_FREE = 2
MODES = {"two-pass": MODE_TWO_PASS, "exact": MODE_EXACT, "free": MODE_FREE}


@numba.njit(cache=True)
def _min_step(cost, m, bt, sh, G, A):
    """m[g] = min over a of cost[(a << sh) + g], bt[g] = the first minimizing a."""
    c0 = cost[0:G]
    for g in range(G):
        m[g] = c0[g]
        bt[g] = 0
    for a in range(1, A):
        base = a << sh
        ca = cost[base : base + G]  # a contiguous slice: the loop vectorizes
        ua = np.uint8(a)
        for g in range(G):
            c = ca[g]
            mg = m[g]
            lt = c < mg
            m[g] = c if lt else mg
            bt[g] = ua if lt else bt[g]


@numba.njit(cache=True)
def _expand1(m, x0, w0, l0, out, kv, G, A):
    """V = 1: out[g * A + b] = m[g] + w0 * (x0 - l0[g * A + b])^2. Short inner loops are
    written out so that LLVM vectorizes them."""
    if kv == 1:
        for g in range(G):
            mg = m[g]
            j = 2 * g
            d = x0 - l0[j]
            out[j] = mg + w0 * d * d
            d = x0 - l0[j + 1]
            out[j + 1] = mg + w0 * d * d
    elif kv == 2:
        for g in range(G):
            mg = m[g]
            j = 4 * g
            d = x0 - l0[j]
            out[j] = mg + w0 * d * d
            d = x0 - l0[j + 1]
            out[j + 1] = mg + w0 * d * d
            d = x0 - l0[j + 2]
            out[j + 2] = mg + w0 * d * d
            d = x0 - l0[j + 3]
            out[j + 3] = mg + w0 * d * d
    elif kv == 3:
        for g in range(G):
            mg = m[g]
            for b in range(8):
                d = x0 - l0[8 * g + b]
                out[8 * g + b] = mg + w0 * d * d
    else:
        for g in range(G):
            mg = m[g]
            o = out[g * A : (g + 1) * A]
            lg = l0[g * A : (g + 1) * A]
            for b in range(A):
                d = x0 - lg[b]
                o[b] = mg + w0 * d * d


@numba.njit(cache=True)
def _expand2(m, x0, x1, w0, w1, l0, l1, out, kv, G, A):
    """V = 2 (kv even): out[j] = m[j >> kv] + w0 (x0 - l0[j])^2 + w1 (x1 - l1[j])^2."""
    if kv == 2:
        for g in range(G):
            mg = m[g]
            for b in range(4):
                j = 4 * g + b
                d0 = x0 - l0[j]
                d1 = x1 - l1[j]
                out[j] = mg + (w0 * d0 * d0 + w1 * d1 * d1)
    else:
        for g in range(G):
            mg = m[g]
            o = out[g * A : (g + 1) * A]
            la = l0[g * A : (g + 1) * A]
            lb = l1[g * A : (g + 1) * A]
            for b in range(A):
                d0 = x0 - la[b]
                d1 = x1 - lb[b]
                o[b] = mg + (w0 * d0 * d0 + w1 * d1 * d1)


@numba.njit(cache=True)
def _viterbi_pass(x, w, lut, L, kv, start_ov, end_ov, cost, newcost, m, back, path):
    """One Viterbi pass over S = x.shape[0] steps. start_ov >= 0 restricts the first
    state's top L - kv bits to start_ov; end_ov >= 0 restricts the last state's low
    L - kv bits to end_ov. Writes the best path's states to path[:S] and returns its
    cost (inf if no path satisfies the restrictions)."""
    S, V = x.shape
    ns = 1 << L
    sh = L - kv
    G = 1 << sh
    A = 1 << kv
    inf = np.inf
    # step 0: the error of each state (m = 0 for every group)
    for g in range(G):
        m[g] = 0.0
    if V == 1:
        _expand1(m, x[0, 0], w[0, 0], lut[0], cost, kv, G, A)
    else:
        _expand2(m, x[0, 0], x[0, 1], w[0, 0], w[0, 1], lut[0], lut[1], cost, kv, G, A)
    if start_ov >= 0:
        keep0 = start_ov << kv
        for j in range(ns):
            if j < keep0 or j >= keep0 + A:
                cost[j] = inf
    for t in range(1, S):
        _min_step(cost, m, back[t], sh, G, A)
        if V == 1:
            _expand1(m, x[t, 0], w[t, 0], lut[0], newcost, kv, G, A)
        else:
            _expand2(m, x[t, 0], x[t, 1], w[t, 0], w[t, 1], lut[0], lut[1], newcost, kv, G, A)
        tmp = cost
        cost = newcost
        newcost = tmp
    best = inf
    bj = -1
    if end_ov >= 0:
        for a in range(A):
            j = (a << sh) | end_ov
            if cost[j] < best:
                best = cost[j]
                bj = j
    else:
        for j in range(ns):
            if cost[j] < best:
                best = cost[j]
                bj = j
    if bj < 0:
        for t in range(S):
            path[t] = 0
        return inf
    path[S - 1] = bj
    for t in range(S - 1, 0, -1):
        g = path[t] >> kv
        path[t - 1] = (np.int64(back[t, g]) << sh) | g
    return best


@numba.njit(cache=True)
def _encode_tile(x, w, lut, L, kv, mode, seam, xr, wr, cost, newcost, m, back, path, path2, out):
    """Encode one sequence (x, w: S x V). Writes the states to out[:S]; returns the cost."""
    S = x.shape[0]
    sh = L - kv
    gmask = (1 << sh) - 1
    if mode == MODE_FREE or sh == 0:
        c = _viterbi_pass(x, w, lut, L, kv, -1, -1, cost, newcost, m, back, path)
        for t in range(S):
            out[t] = path[t]
        return c
    if mode == MODE_TWO_PASS:
        # pass 1: a free Viterbi over the steps -h .. h-1 around the seam (original step 0
        # sits at index h of the window); h = S/2 is QTIP's full rotation
        h = seam
        n1 = 2 * h
        for t in range(n1):
            src = (t - h) % S
            for v in range(x.shape[1]):
                xr[t, v] = x[src, v]
                wr[t, v] = w[src, v]
        _viterbi_pass(xr[:n1], wr[:n1], lut, L, kv, -1, -1, cost, newcost, m, back, path)
        ov = path[h] >> kv  # top L - kv bits of the state at original step 0
        c = _viterbi_pass(x, w, lut, L, kv, ov, ov, cost, newcost, m, back, path)
        for t in range(S):
            out[t] = path[t]
        return c
    # MODE_EXACT: every overlap
    best = np.inf
    for ov in range(gmask + 1):
        c = _viterbi_pass(x, w, lut, L, kv, ov, ov, cost, newcost, m, back, path2)
        if c < best:
            best = c
            for t in range(S):
                out[t] = path2[t]
    return best


@numba.njit(cache=True, parallel=True)
def _encode_tiles(x, w, lut, L, kv, mode, seam, states, costs, nworkers):
    """x, w: (n, S, V); states: (n, S) int64 out; costs: (n,) out. Tiles are dealt to
    `nworkers` workers, each with its own buffers (allocated once)."""
    n, S, V = x.shape
    ns = 1 << L
    G = 1 << (L - kv)
    for wk in numba.prange(nworkers):
        cost = np.empty(ns, x.dtype)
        newcost = np.empty(ns, x.dtype)
        m = np.empty(G, x.dtype)
        back = np.empty((max(S, 2 * seam), G), np.uint8)
        path = np.empty(max(S, 2 * seam), np.int64)
        path2 = np.empty(S, np.int64)
        xr = np.empty((max(S, 2 * seam), V), x.dtype)
        wr = np.empty((max(S, 2 * seam), V), x.dtype)
        out = np.empty(S, np.int64)
        for i in range(wk, n, nworkers):
            costs[i] = _encode_tile(x[i], w[i], lut, L, kv, mode, seam, xr, wr, cost, newcost, m, back, path,
                                    path2, out)
            for t in range(S):
                states[i, t] = out[t]


def viterbi_encode(x: np.ndarray, w: np.ndarray, lut: np.ndarray, L: int, kv: int, mode: str = "two-pass",
                   dtype=np.float32, workers: int = None, seam: int = None):
    """Encode sequences x (n, S, V) with per-value weights w (same shape) against the code
    table lut (V, 2^L). Returns (states (n, S) int64, costs (n,) in `dtype`)."""
    if not 1 <= kv <= min(8, L) or L > 24:
        raise ValueError(f"trellis encoder needs 1 <= kV <= min(8, L) and L <= 24, got L={L}, kV={kv}")
    x = np.ascontiguousarray(x, dtype)
    w = np.ascontiguousarray(np.broadcast_to(w, x.shape), dtype)
    lut = np.ascontiguousarray(lut, dtype)
    n, S, V = x.shape
    if lut.shape != (V, 1 << L):
        raise ValueError(f"code table shape {lut.shape}, expected {(V, 1 << L)}")
    states = np.zeros((n, S), np.int64)
    costs = np.zeros(n, dtype)
    seam = S // 2 if seam is None else max(1, int(seam))
    if n:
        nw = max(1, min(n, workers or numba.get_num_threads()))
        _encode_tiles(x, w, lut, L, kv, MODES[mode], seam, states, costs, nw)
    return states, costs
