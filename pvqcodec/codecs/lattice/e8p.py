"""The E8P codebook (spec codecs/lattice.md, section 6.4.4): 2^16 points of E8 + 1/4.

Definitions (QuIP#: Tseng et al., ICML 2024, arXiv 2402.04396;
lattices as in Conway & Sloane, SPLAG, chapter 4):

    D8   = { v in Z^8 : sum v even }
    D8^  = D8 + (1/2, ..., 1/2): half-odd coordinates, even sum
    E8   = D8 u D8^

A *pattern* is a vector of absolute values a in {1/2, 3/2, 5/2}^8. PATTERNS2 holds the
256 patterns doubled (odd integers 2a):

    0 .. 226    every a in {1/2, 3/2, 5/2}^8 with |a|^2 <= 10, ascending lexicographic
                order (|a|^2 = 2, 4, 6, 8, 10: 1, 8, 28, 64, 126 patterns);
    227 .. 255  the first 29, in ascending lexicographic order, of the 56 vectors of
                {1/2, 3/2}^8 with |a|^2 = 12 (three 1/2 and five 3/2).

The *base* of pattern a is a with its last coordinate negated when sum(a) is odd, so
that every base lies in D8^. A 16-bit codeword w = (a << 8) | b decodes to

    p = popcount(b) mod 2;  m = b XOR p
    point_i = (-1)^(bit i of m) * base_i + (1/4 if p == 0 else -1/4)

m has an even number of set bits, so the signs keep the sum even (the point minus
its shift is in D8^); D8^ + 1/4 and D8^ - 1/4 = D8 + 1/4 are the two cosets of E8 + 1/4.
All 65,536 points are distinct; 4 * point is an integer vector.

Nearest point (informative, exact). For a shift sigma in {+1/4, -1/4} put y = x - sigma,
u = |y|. Among the points with absolute values a (pattern) the closest to y takes
v_i = sign(y_i) a_i, which maximizes sum y_i v_i = sum u_i a_i; the sum of v is even iff
(#{y_i < 0} + sum a) is even (each flip changes the parity, 2 a_i being odd). If it is
odd, one sign must flip: the cheapest is the coordinate with the least u_i a_i, costing
2 min_i u_i a_i. So per pattern and shift

    |y - v|^2 = |y|^2 + |a|^2 - 2 (sum_i u_i a_i - [odd] 2 min_i u_i a_i).

With diagonal weights w the same holds with u_i a_i -> w_i u_i a_i and |a|^2 ->
sum w_i a_i^2 (`_nearest_weighted`, 256 patterns x 2 shifts). Without weights, the 227
patterns of norm <= 10 are all permutations of 7 multisets ("types"); by the
rearrangement inequality the best permutation of a type pairs the sorted u with the
sorted a, and the parity flip then falls on the smallest u paired with the smallest a
(an exchange argument: for every other choice of the flipped coordinate the sorted
order loses at least as much). So `_nearest_unweighted` sorts u once per shift and
scores 7 types plus the 29 norm-12 patterns one by one, instead of 256 patterns.
It first tries the nearest point of the whole lattice E8 + 1/4: when that point is a
codeword, it is the nearest codeword.
"""

from __future__ import annotations

import itertools

import numba
import numpy as np

__all__ = [
    "PATTERNS2",
    "BASE2",
    "BASE_ODD",
    "N_FULL",
    "e8p_points",
    "e8p_codebook",
    "e8p_nearest",
    "split_codewords",
]

N_FULL = 227  # patterns of squared norm <= 10
N_NORM12 = 29  # patterns of squared norm 12


def _build_patterns() -> np.ndarray:
    full = [p for p in itertools.product((1, 3, 5), repeat=8) if sum(v * v for v in p) <= 40]
    n12 = [p for p in itertools.product((1, 3), repeat=8) if sum(v * v for v in p) == 48]
    assert len(full) == N_FULL and len(n12) == 56
    return np.array(full + n12[:N_NORM12], dtype=np.int8)  # product() is already lexicographic


#: The 256 patterns, doubled: odd integers 2a in {1, 3, 5}.
PATTERNS2 = _build_patterns()
PATTERNS2.flags.writeable = False
#: 1 where sum(a) is odd (the base then has its last coordinate negated).
BASE_ODD = ((PATTERNS2.astype(np.int64).sum(1) // 2) % 2).astype(np.uint8)
BASE_ODD.flags.writeable = False
#: The bases, doubled: patterns with the last coordinate negated where BASE_ODD.
BASE2 = PATTERNS2.copy()
BASE2[BASE_ODD == 1, 7] *= -1
BASE2.flags.writeable = False

# popcount of a byte
_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def split_codewords(codewords) -> tuple:
    """(pattern index, sign byte) of 16-bit codewords: bits 15..8 and 7..0."""
    w = np.asarray(codewords).astype(np.uint16)
    return (w >> 8).astype(np.uint8), (w & 0xFF).astype(np.uint8)


def e8p_points(patterns, signs) -> np.ndarray:
    """The E8P points (float32, shape (n, 8)) of codewords given as pattern index and
    sign byte (spec 6.4.4.4). Exact: every coordinate is a multiple of 1/4."""
    a = np.asarray(patterns, dtype=np.int64)
    b = np.asarray(signs, dtype=np.int64)
    p = _POPCOUNT8[b].astype(np.int64) & 1
    m = b ^ p
    neg = (m[:, None] >> np.arange(8)) & 1
    q = 2 * BASE2[a].astype(np.int64) * (1 - 2 * neg) + (1 - 2 * p)[:, None]  # 4 * point
    return q.astype(np.float32) / np.float32(4)


def e8p_codebook() -> np.ndarray:
    """All 65,536 points in codeword order (row w = point of codeword w), float32."""
    w = np.arange(1 << 16)
    return e8p_points(w >> 8, w & 0xFF)


# ---- tables for the search ------------------------------------------------------------------

# Pattern lookup: key = sum_i ((2a_i - 1) / 2) * 3^(7 - i) over 2a_i in {1, 3, 5}; -1 if absent.
_KEY_POW = 3 ** np.arange(7, -1, -1)
PATTERN_OF_KEY = np.full(3**8, -1, dtype=np.int16)
PATTERN_OF_KEY[((PATTERNS2.astype(np.int64) - 1) // 2) @ _KEY_POW] = np.arange(256)

_PAT = PATTERNS2.astype(np.float64) / 2  # absolute values a
_PAT_NORM = (_PAT * _PAT).sum(1)


def _build_types():
    seen = []
    for a in range(N_FULL):
        t = tuple(sorted(PATTERNS2[a].tolist(), reverse=True))
        if t not in seen:
            seen.append(t)
    types2 = np.array(seen, dtype=np.int64)
    return types2.astype(np.float64) / 2, ((types2.sum(1) // 2) % 2).astype(np.int64)


_TYPES, _TYPE_ODD = _build_types()  # 7 multisets, each sorted descending
_TYPE_NORM = (_TYPES * _TYPES).sum(1)
assert len(_TYPES) == 7


@numba.njit(cache=True)
def _index_of_doubled(z, pattern_of_key, base_odd):
    """Codeword of the point c = z/2 + 1/4 (z: doubled coordinates of a point of E8),
    or -1 if c is not in E8P."""
    odd = (z[0] & 1) == 1  # z odd: z/2 in D8^, shift +1/4; even: z/2 + 1/2 in D8^, shift -1/4
    key = 0
    for i in range(8):
        v2 = z[i] if odd else z[i] + 1  # doubled coordinate of v in D8^
        av = v2 if v2 > 0 else -v2
        if av > 5:
            return -1
        key = key * 3 + (av - 1) // 2
    a = np.int64(pattern_of_key[key])
    if a < 0:
        return -1
    mask = 0
    for i in range(8):
        v2 = z[i] if odd else z[i] + 1
        neg = v2 < 0
        if i == 7 and base_odd[a] == 1:
            neg = not neg
        if neg:
            mask |= 1 << i
    return (a << 8) | (mask if odd else mask ^ 1)


@numba.njit(cache=True)
def _point_of_codeword(w, pat, base_odd, out):
    """The E8P point of codeword w (float64, written to out); pat holds the absolute values."""
    a = w >> 8
    b = w & 0xFF
    p = 0
    for i in range(8):
        p += (b >> i) & 1
    p &= 1
    m = b ^ p
    for i in range(8):
        v = pat[a, i]
        if i == 7 and base_odd[a] == 1:
            v = -v
        if (m >> i) & 1:
            v = -v
        out[i] = v + (-0.25 if p else 0.25)


@numba.njit(cache=True)
def _nearest_e8_doubled(u, z):
    """Nearest point of E8 to u (Conway & Sloane's decoder: the nearer of the nearest D8
    and D8 + 1/2 points), written to z in doubled coordinates (int64). Returns the
    squared distance. Ties go to the D8 candidate and to rounding up."""
    best = np.inf
    best_h = 0
    best_wi = -1
    for h in range(2):
        off = 0.5 * h
        s = 0
        worst = -1.0
        wi = 0
        d = 0.0
        for i in range(8):
            v = u[i] - off
            r = np.floor(v + 0.5)
            s += np.int64(r)
            e = abs(v - r)
            d += e * e
            if e > worst:
                worst = e
                wi = i
        if (s & 1) == 1:  # D8 needs an even sum: move the worst-rounded coordinate
            d += (1.0 - worst) * (1.0 - worst) - worst * worst
        else:
            wi = -1
        if d < best:
            best = d
            best_h = h
            best_wi = wi
    off = 0.5 * best_h
    for i in range(8):
        v = u[i] - off
        r = np.floor(v + 0.5)
        if i == best_wi:
            r = r + 1.0 if v >= r else r - 1.0
        z[i] = np.int64(2.0 * r) + best_h
    return best


@numba.njit(cache=True)
def _codeword_from_signs(a, neg, flip, shift_minus, base_odd):
    mask = 0
    for i in range(8):
        n = neg[i] != 0
        if i == flip:
            n = not n
        if i == 7 and base_odd[a] == 1:
            n = not n
        if n:
            mask |= 1 << i
    return (a << 8) | (mask ^ 1 if shift_minus else mask)


SCRATCH = 32  # length of the float and int scratch arrays the kernels take


@numba.njit(cache=True)
def _nearest_unweighted(x, pat, pat_norm, base_odd, types, type_norm, type_odd, pattern_of_key, z, sf, si):
    """Codeword of the E8P point nearest to x (float64[8]). z: int64[8], sf: float64[32],
    si: int64[32] scratch."""
    # Fast path: the nearest point of E8 + 1/4, if it is a codeword.
    u = sf[0:8]
    for i in range(8):
        u[i] = x[i] - 0.25
    _nearest_e8_doubled(u, z)
    w = _index_of_doubled(z, pattern_of_key, base_odd)
    if w >= 0:
        return w

    y = sf[8:16]
    ay = sf[16:24]
    order = si[0:8]
    best_order = si[8:16]
    neg = si[16:24]
    best = np.inf
    best_kind = -1  # 0..6: a type, 7: a norm-12 pattern
    best_pat = 0
    best_flip = -1
    best_sh = 0
    for sh in range(2):
        sig = 0.25 if sh == 0 else -0.25
        nneg = 0
        yy = 0.0
        for i in range(8):
            y[i] = x[i] - sig
            ay[i] = abs(y[i])
            yy += y[i] * y[i]
            if y[i] < 0:
                nneg += 1
        # insertion sort of the indices by ay descending
        for i in range(8):
            order[i] = i
        for i in range(1, 8):
            j = i
            while j > 0 and ay[order[j - 1]] < ay[order[j]]:
                t = order[j - 1]
                order[j - 1] = order[j]
                order[j] = t
                j -= 1
        for t in range(types.shape[0]):
            s = 0.0
            for k in range(8):
                s += ay[order[k]] * types[t, k]
            odd = ((nneg + type_odd[t]) & 1) == 1
            if odd:
                s -= 2.0 * ay[order[7]] * types[t, 7]
            d = yy + type_norm[t] - 2.0 * s
            if d < best:
                best = d
                best_kind = t
                best_sh = sh
                best_flip = order[7] if odd else -1
                for k in range(8):
                    best_order[k] = order[k]
        for a in range(227, 256):
            s = 0.0
            mn = np.inf
            mi = 0
            for i in range(8):
                t2 = ay[i] * pat[a, i]
                s += t2
                if t2 < mn:
                    mn = t2
                    mi = i
            odd = ((nneg + base_odd[a]) & 1) == 1
            if odd:
                s -= 2.0 * mn
            d = yy + pat_norm[a] - 2.0 * s
            if d < best:
                best = d
                best_kind = 7
                best_pat = a
                best_sh = sh
                best_flip = mi if odd else -1

    sig = 0.25 if best_sh == 0 else -0.25
    for i in range(8):
        neg[i] = 1 if x[i] - sig < 0 else 0
    if best_kind < 7:
        # place the type's sorted values on the sorted coordinates, then look the pattern up
        absd = si[24:32]
        for k in range(8):
            absd[best_order[k]] = np.int64(2.0 * types[best_kind, k])
        key = 0
        for i in range(8):
            key = key * 3 + (absd[i] - 1) // 2
        best_pat = np.int64(pattern_of_key[key])
    return _codeword_from_signs(best_pat, neg, best_flip, best_sh == 1, base_odd)


@numba.njit(cache=True)
def _nearest_weighted(x, w, pat, base_odd, sf, si):
    """Codeword of the E8P point nearest to x in the metric sum_i w_i (x_i - c_i)^2
    (w_i >= 0); all 256 patterns, closed form signs per pattern and shift."""
    y = sf[0:8]
    wu = sf[8:16]
    neg = si[0:8]
    best = np.inf
    best_pat = 0
    best_flip = -1
    best_sh = 0
    for sh in range(2):
        sig = 0.25 if sh == 0 else -0.25
        nneg = 0
        wyy = 0.0
        for i in range(8):
            y[i] = x[i] - sig
            wu[i] = w[i] * abs(y[i])
            wyy += w[i] * y[i] * y[i]
            if y[i] < 0:
                nneg += 1
        for a in range(256):
            s = 0.0
            e = 0.0
            mn = np.inf
            mi = 0
            for i in range(8):
                t = wu[i] * pat[a, i]
                s += t
                e += w[i] * pat[a, i] * pat[a, i]
                if t < mn:
                    mn = t
                    mi = i
            odd = ((nneg + base_odd[a]) & 1) == 1
            if odd:
                s -= 2.0 * mn
            d = wyy + e - 2.0 * s
            if d < best:
                best = d
                best_pat = a
                best_sh = sh
                best_flip = mi if odd else -1
    sig = 0.25 if best_sh == 0 else -0.25
    for i in range(8):
        neg[i] = 1 if x[i] - sig < 0 else 0
    return _codeword_from_signs(best_pat, neg, best_flip, best_sh == 1, base_odd)


@numba.njit(cache=True)
def _nearest_rows(X, W, has_w, out, g0, g1, pat, pat_norm, base_odd, types, type_norm, type_odd, pok):
    z = np.empty(8, np.int64)
    sf = np.empty(SCRATCH)
    si = np.empty(SCRATCH, np.int64)
    for g in range(g0, g1):
        if has_w:
            out[g] = _nearest_weighted(X[g], W[g], pat, base_odd, sf, si)
        else:
            out[g] = _nearest_unweighted(X[g], pat, pat_norm, base_odd, types, type_norm, type_odd, pok, z, sf, si)


def tables():
    """The arrays the numba kernels take (in their argument order)."""
    return _PAT, _PAT_NORM, BASE_ODD, _TYPES, _TYPE_NORM, _TYPE_ODD, PATTERN_OF_KEY


def e8p_nearest(X, W=None) -> np.ndarray:
    """Codewords (uint16) of the E8P points nearest to the rows of X ((n, 8), finite), in
    the plain or (with W, non-negative, same shape) the diagonally weighted squared
    distance. Exact; ties (measure zero) go to the first candidate found."""
    X = np.ascontiguousarray(X, dtype=np.float64).reshape(-1, 8)
    has_w = W is not None
    Wa = np.ascontiguousarray(W, dtype=np.float64).reshape(-1, 8) if has_w else np.ones((1, 8))
    out = np.empty(X.shape[0], np.int64)
    _nearest_rows(X, Wa, has_w, out, 0, X.shape[0], *tables())
    return out.astype(np.uint16)
