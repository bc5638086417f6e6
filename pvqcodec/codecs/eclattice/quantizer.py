"""Entropy-constrained E8 quantization in doubled coordinates (encoder, informative; spec 6.8.7).

A group y (8 values divided by half_scale) is quantized to a point c of 2 E8: integer
vectors all even or all odd with coordinate sum = 0 mod 4 (doubled coordinates c = 2 p of
E8 = D8 u (D8 + 1/2)). The point minimizes

    sum_i w_i (y_i - c_i)^2 + lam * bits(c)

where bits(c) is the code length of the group's symbols in the codec's streams 2..7 under
the current tables (`Tables`). The search starts from the nearest point (Conway and
Sloane's decoder, per coset) and moves to the best of its 240 neighbours c + v (v a
doubled minimal vector: permutations of (+-2, +-2, 0^6), and (+-1)^8 with an even number
of minus signs) while the cost falls, up to `descend` times. The distortion change of a
neighbour is computed from the current error e = c - y in O(1) per neighbour:

    type 1 (v = s_a 2 e_a + s_b 2 e_b):  sum over a, b of w (4 + 4 s e)
    type 2 (v = sum s_k e_k):            sum_k w_k + sum_k s_k 2 w_k e_k

Alternating the choice with table re-estimation (`tables_from_points`) is the
entropy-constrained Lloyd iteration on a fixed lattice (`quantize_groups`).
"""

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

C_MAX = 32767  # the largest |c_i| the encoder writes (c_0's symbol must fit 16 bits)
N_TABLES = 6  # first, mid_int, mid_half, last_res0, last_res2, last_half


def zigzag(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.int64)
    return np.where(v > 0, 2 * v - 1, -2 * v).astype(np.int64)


def _type2_signs() -> np.ndarray:
    """The 128 sign vectors (+-1)^8 with an even number of minus signs, int64 (128, 8)."""
    out = []
    for m in range(256):
        neg = [(m >> k) & 1 for k in range(8)]
        if sum(neg) % 2 == 0:
            out.append([-1 if n else 1 for n in neg])
    return np.array(out, np.int64)


SIGNS2 = _type2_signs()


@njit(cache=True, nogil=True)
def _zz(v):
    return 2 * v - 1 if v > 0 else -2 * v


@njit(cache=True, nogil=True)
def _len(lens, tab, s):
    """Code length of symbol s in table tab (lens: (N_TABLES, L), last column = unseen price)."""
    L = lens.shape[1] - 1
    if s < L:
        return lens[tab, s]
    return lens[tab, L]


@njit(cache=True, nogil=True)
def coord_bits(lens, i, v, k):
    """Code length of coordinate i (0 .. 6) of value v in coset k (spec 6.8.3: `first`,
    `mid_int`, `mid_half`); 1e30 beyond C_MAX."""
    if v > C_MAX or v < -C_MAX:
        return 1e30
    if i == 0:
        return _len(lens, 0, _zz(v))
    if k == 0:
        return _len(lens, 1, _zz(v >> 1))
    return _len(lens, 2, _zz((v - 1) >> 1))


@njit(cache=True, nogil=True)
def last_bits(lens, v, r):
    """Code length of c_7 = v of residue r (spec 6.8.4 step 4); 1e30 beyond C_MAX."""
    if v > C_MAX or v < -C_MAX:
        return 1e30
    if r == 0:
        return _len(lens, 3, _zz(v >> 2))
    if r == 2:
        return _len(lens, 4, _zz((v - 2) >> 2))
    if r == 1:
        return _len(lens, 5, _zz((v - 1) >> 2))
    return _len(lens, 5, _zz((-v - 1) >> 2))


@njit(cache=True, nogil=True)
def point_bits(c, lens):
    """Code length in bits of a point's symbols (spec 6.8.3/6.8.4); 1e30 beyond C_MAX."""
    k = c[0] & 1
    b = 0.0
    ssum = 0
    for i in range(7):
        ssum += c[i]
        b += coord_bits(lens, i, c[i], k)
    return b + last_bits(lens, c[7], (-ssum) & 3)


@njit(cache=True, nogil=True)
def _nearest_coset(y, odd, out):
    """Nearest point to y among vectors of one parity class with coordinate sum = 0 mod 4
    (doubled D8 or doubled D8 + 1/2): round to the class, then fix the sum at the
    worst-rounded coordinate (Conway and Sloane)."""
    s = 0
    worst = 0
    wd = -1.0
    for i in range(8):
        if odd:
            r = 2 * int(math.floor((y[i] - 1.0) / 2.0 + 0.5)) + 1
        else:
            r = 2 * int(math.floor(y[i] / 2.0 + 0.5))
        out[i] = r
        s += r
        d = abs(y[i] - r)
        if d > wd:
            wd = d
            worst = i
    if s & 3:
        if y[worst] > out[worst]:
            out[worst] += 2
        else:
            out[worst] -= 2


@njit(cache=True, nogil=True)
def nearest_2e8(y, out, tmp):
    _nearest_coset(y, False, out)
    _nearest_coset(y, True, tmp)
    d0 = 0.0
    d1 = 0.0
    for i in range(8):
        d0 += (y[i] - out[i]) ** 2
        d1 += (y[i] - tmp[i]) ** 2
    if d1 < d0:
        for i in range(8):
            out[i] = tmp[i]


@njit(cache=True, nogil=True)
def _quantize(x, h, w, lam, lens, descend, signs2, out):
    """out[g] = the chosen point of group g for y = x[g] / h, with weights w[g mod len(w)];
    returns the weighted squared error in units of y."""
    n = x.shape[0]
    nw = w.shape[0]
    yg = np.empty(8)
    wg = np.empty(8)
    c = np.empty(8, np.int64)
    tmp = np.empty(8, np.int64)
    q = np.empty(8, np.int64)
    e = np.empty(8)
    g2 = np.empty(8)
    cb = np.empty(8)  # current code length of each coordinate (7: c_7 with its residue)
    nb = np.empty((8, 2))  # the same after a move by -2 / +2 (7: with the flipped residue)
    err = 0.0
    # a lower bound on any point's bits: a neighbour whose distortion alone, plus lam times
    # this bound, exceeds the best cost cannot win (prunes most table look-ups)
    L = lens.shape[1]
    lb = lens[0, :L].min() + 6.0 * min(lens[1, :L].min(), lens[2, :L].min()) + min(
        lens[3, :L].min(), lens[4, :L].min(), lens[5, :L].min())
    slack = lam * lb
    for g in range(n):
        for i in range(8):
            yg[i] = x[g, i] / h
            wg[i] = w[g % nw, i]
        nearest_2e8(yg, c, tmp)
        d = 0.0
        for i in range(8):
            e[i] = c[i] - yg[i]
            d += wg[i] * e[i] * e[i]
        cost = d + lam * point_bits(c, lens) if lam > 0 else d
        if lam > 0:
            for _ in range(descend):
                best = cost
                bkind = -1
                ba = 0
                bb = 0
                wsum = 0.0
                for i in range(8):
                    wsum += wg[i]
                    g2[i] = 2.0 * wg[i] * e[i]
                # Type 1 keeps the coset; moving c_a (a < 7) by +-2 flips the residue of c_7
                # unless a second such move cancels it: the rate of c + v is the current
                # rate with one or two coordinates (or c_7 and its residue) re-priced.
                k = c[0] & 1
                ssum = 0
                base = 0.0
                for i in range(7):
                    ssum += c[i]
                    cb[i] = coord_bits(lens, i, c[i], k)
                    base += cb[i]
                    nb[i, 0] = coord_bits(lens, i, c[i] - 2, k)
                    nb[i, 1] = coord_bits(lens, i, c[i] + 2, k)
                r = (-ssum) & 3
                cb[7] = last_bits(lens, c[7], r)
                base += cb[7]
                nb[7, 0] = last_bits(lens, c[7] - 2, (r + 2) & 3)
                nb[7, 1] = last_bits(lens, c[7] + 2, (r + 2) & 3)
                for a in range(8):
                    for sa in (-1, 1):
                        da = wg[a] * (4.0 + 4.0 * sa * e[a])
                        for b in range(a + 1, 8):
                            for sb in (-1, 1):
                                nd = d + da + wg[b] * (4.0 + 4.0 * sb * e[b])
                                if nd + slack >= best:
                                    continue
                                nc = nd + lam * (base - cb[a] + nb[a, (sa + 1) // 2] - cb[b] + nb[b, (sb + 1) // 2])
                                if nc < best:
                                    best = nc
                                    bkind = 1
                                    ba = a * 2 + (sa + 1) // 2
                                    bb = b * 2 + (sb + 1) // 2
                # type 2: (+-1)^8, even number of minus signs
                for m in range(signs2.shape[0]):
                    nd = d + wsum
                    for i in range(8):
                        nd += signs2[m, i] * g2[i]
                    if nd + slack >= best:
                        continue
                    for i in range(8):
                        q[i] = c[i] + signs2[m, i]
                    nc = nd + lam * point_bits(q, lens)
                    if nc < best:
                        best = nc
                        bkind = 2
                        ba = m
                if bkind < 0:
                    break
                if bkind == 1:
                    c[ba // 2] += 2 * (2 * (ba % 2) - 1)
                    c[bb // 2] += 2 * (2 * (bb % 2) - 1)
                else:
                    for i in range(8):
                        c[i] += signs2[ba, i]
                d = 0.0
                for i in range(8):
                    e[i] = c[i] - yg[i]
                    d += wg[i] * e[i] * e[i]
                cost = best
        for i in range(8):
            out[g, i] = c[i]
        err += d
    return err


@dataclass
class Tables:
    """Code lengths in bits of the six coordinate tables (streams 2..7), shape (6, L + 1):
    lens[t, s] for symbols s < L, lens[t, L] the price of any symbol not in the tables."""

    lens: np.ndarray

    @staticmethod
    def flat() -> "Tables":
        """Every symbol equally cheap: the first pass is the nearest point."""
        return Tables(np.zeros((N_TABLES, 2)))


def group_symbols(c: np.ndarray) -> tuple:
    """The symbols of points c (n, 8) int64, per stream 2..7 (spec 6.8.3), plus the integer
    mask and the residue-0 mask of the integer groups: (first, mid_int (n_i, 6),
    mid_half, last_res0, last_res2, last_half, is_int, res0 among all groups)."""
    c = np.asarray(c, np.int64)
    is_int = (c[:, 0] & 1) == 0
    r = (-c[:, :7].sum(axis=1)) & 3
    c7 = c[:, 7]
    first = zigzag(c[:, 0])
    mid_int = zigzag(c[is_int, 1:7] >> 1)
    mid_half = zigzag((c[~is_int, 1:7] - 1) >> 1)
    last_res0 = zigzag(c7[r == 0] >> 2)
    last_res2 = zigzag((c7[r == 2] - 2) >> 2)
    half = ~is_int
    cp = np.where(r[half] == 1, c7[half], -c7[half])
    last_half = zigzag((cp - 1) >> 2)
    return first, mid_int, mid_half, last_res0, last_res2, last_half, is_int, r == 0


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """-log2 of relative frequencies; unused symbols (and the last slot, the price of any
    symbol beyond the table) cost one bit more than the dearest used one."""
    tot = counts.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        lens = np.where(counts > 0, -np.log2(counts / max(tot, 1.0)), 0.0)
    used = counts > 0
    dear = (lens[used].max() if used.any() else 0.0) + 1.0
    lens[~used] = dear
    return lens


def tables_from_points(c: np.ndarray, weights: np.ndarray = None) -> Tables:
    """Tables from chosen points (the empirical frequencies of their symbols)."""
    parts = group_symbols(c)[:6]
    L = 2 + max(int(p.max()) if p.size else 0 for p in parts)
    lens = np.zeros((N_TABLES, L + 1))
    for t, p in enumerate(parts):
        cnt = np.bincount(p.ravel(), minlength=L + 1).astype(np.float64)
        cnt[L] = 0.0
        lens[t] = code_lengths(cnt)
    return Tables(lens)


def quantize_points(y: np.ndarray, w: np.ndarray, lam: float, tables: Tables, descend: int = 4,
                    scale: float = 1.0) -> tuple:
    """One pass: the RD-best point of each group y / scale (y (n, 8); scale: half_scale, so
    that the division happens in the search, without a copy) under fixed tables and lam (per
    bit, in units of doubled coordinates squared). w: the weights, (n, 8), or (m, 8) with m
    dividing n, whose rows repeat (group g takes row g mod m: (G_r, 8) gives every row of a
    tensor the same column weights), or anything broadcastable to (8,).
    Returns (c (n, 8) int64, weighted squared error in units of y / scale)."""
    y = np.ascontiguousarray(y, np.float64)
    w = np.asarray(w, np.float64)
    if w.ndim < 2 or w.shape[0] == 1:
        w = np.broadcast_to(w, (1, 8))
    if w.shape[1:] != (8,) or (y.shape[0] and y.shape[0] % w.shape[0]):
        raise ValueError(f"weights of shape {w.shape} do not fit groups of shape {y.shape}")
    out = np.empty(y.shape, np.int64)
    err = _quantize(y, float(scale), np.ascontiguousarray(w), float(lam),
                    np.ascontiguousarray(tables.lens, np.float64), int(descend), SIGNS2, out)
    return out, err


def quantize_groups(y: np.ndarray, w: np.ndarray, lam: float, iters: int = 3, tables: Tables = None,
                    descend: int = 4, scale: float = 1.0) -> tuple:
    """The entropy-constrained Lloyd iteration at a fixed scale: `iters` passes of
    quantize_points alternating with tables_from_points; without starting tables the first
    pass is the nearest point. Returns (c, tables of the final points, error)."""
    if tables is None:
        c, err = quantize_points(y, w, 0.0, Tables.flat(), descend, scale)
        tables = tables_from_points(c)
        passes = iters - 1
    else:
        if iters < 1:
            raise ValueError("quantize_groups with starting tables needs iters >= 1")
        passes = iters
    for _ in range(passes):
        c, err = quantize_points(y, w, lam, tables, descend, scale)
        tables = tables_from_points(c)
    return c, tables, err
