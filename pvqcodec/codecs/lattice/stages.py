"""Refinement stages (spec codecs/lattice.md, section 6.4.5) and the encoder's search.

A tensor coded with k stages (k = 1, 2, 3 for 2, 3, 4 bits per weight) decodes each group
of 8 values, in units of the first stage's scale, to

    c + U[l_2] / 2 + U[l_3] / 4        (the terms present for k = 1, 2, 3)

with c an E8P point (section 6.4.4) and l_j an 8-bit label. In the reference encoder the
stage scales are s_1, s_1/2, s_1/4 (nested) and the later stages refine the E8 lattice:

Stage table. E8 / 2E8 has 256 cosets. With the generator matrix GEN (rows g_0..g_7, det 1,
as in Conway & Sloane's SPLAG, ch. 4), the coset of lambda = sum_j k_j g_j is labelled
l = sum_j (k_j mod 2) 2^j. With the shift a = (1, 2, 4, ..., 128) / 512, t_l is the point
of least norm of the shifted coset lambda_l + a + 2E8 (lambda_l = sum_j bit_j(l) g_j); it
is unique: a tie would need p . r = 2 for some root r and p in E8 + a, but r . a is never
an integer (|a_i +- a_j| and |sum +-a_i / 2| lie strictly between 0 and 1). So t_l lies
strictly inside the Voronoi cell 2V(E8), and {t_l / 2} meets every coset of E8 in E8/2
once. U[l] = t_l - m, m = mean of the t_l: centring removes the bias that the tie-free
choice leaves (the t_l cluster on the -a side of the cell's facets).

Nested coding. With F = 2^K (x - 1/4 - (a - m)(1 - 2^-K)) rounded to the nearest E8 point
(K = k - 1), peeling F = 2 F' + (t_l - a) for l = label(F), K times, leaves C in E8, and
the codeword c = C + 1/4 decodes, with the peeled labels, to exactly the nearest point
of the fine lattice E8 / 2^K + const: the code is that lattice inside the region covered
by the 2^16 E8P cells (Conway & Sloane's nested "Voronoi codes", 1983). If C + 1/4 is
not an E8P point (the input lies outside that region: overload), the encoder moves the
input toward the nearest E8P point until the peeled point is valid, then descends over the
fine-lattice neighbours (the 240 roots and 2160 norm-4 vectors of E8) while the
distance drops and the point stays valid. With weights, the same descent runs in the
weighted metric from the unweighted solution.
"""

from __future__ import annotations

import itertools

import numba
import numpy as np

from . import e8p

__all__ = ["GEN2", "STAGE_SHIFT512", "STAGE_T512", "STAGE_U", "STAGE_U_NUM", "U_DENOM", "label",
           "lattice_search", "reconstruct_units"]

#: Generator matrix of E8, doubled (row j = 2 g_j).
GEN2 = np.array(
    [
        [4, 0, 0, 0, 0, 0, 0, 0],
        [-2, 2, 0, 0, 0, 0, 0, 0],
        [0, -2, 2, 0, 0, 0, 0, 0],
        [0, 0, -2, 2, 0, 0, 0, 0],
        [0, 0, 0, -2, 2, 0, 0, 0],
        [0, 0, 0, 0, -2, 2, 0, 0],
        [0, 0, 0, 0, 0, -2, 2, 0],
        [1, 1, 1, 1, 1, 1, 1, 1],
    ],
    dtype=np.int64,
)
# k = F GEN^-1 = z M8 / 8 for z = 2F; M8 = 4 GEN^-1 is an integer matrix.
_M8 = np.rint(4 * np.linalg.inv(GEN2 / 2.0)).astype(np.int64)
assert (GEN2 @ _M8 == 8 * np.eye(8, dtype=np.int64)).all()

#: The stage shift a, in units of 1/512.
STAGE_SHIFT512 = np.array([1, 2, 4, 8, 16, 32, 64, 128], dtype=np.int64)
U_DENOM = 131072  # 2^17: U[l] = STAGE_U_NUM[l] / U_DENOM


def label(z) -> np.ndarray:
    """Coset label(s) in E8 / 2E8 of E8 point(s) given in doubled coordinates."""
    z = np.asarray(z, dtype=np.int64)
    acc = z @ _M8
    if (acc % 8).any():
        raise ValueError("not a point of E8")
    k = acc // 8
    return ((k & 1) << np.arange(8)).sum(-1)


def _nearest_e8_np(p) -> np.ndarray:
    z = np.empty(8, np.int64)
    e8p._nearest_e8_doubled(np.asarray(p, np.float64), z)
    return z


def _build_stage_table():
    t512 = np.empty((256, 8), np.int64)
    for l in range(256):
        lam2 = sum((GEN2[j] for j in range(8) if (l >> j) & 1), np.zeros(8, np.int64))
        p = lam2 / 2.0 + STAGE_SHIFT512 / 512.0  # exact dyadic values
        q2 = _nearest_e8_np(p / 2.0)  # nearest point of E8 to p/2, doubled
        t = p - q2  # p - 2 * (q2 / 2)
        t512[l] = np.rint(t * 512).astype(np.int64)
    return t512


#: t_l in units of 1/512 (row l).
STAGE_T512 = _build_stage_table()
#: t_l - a, doubled coordinates (points of E8 in coset l).
_LAM2 = (STAGE_T512 - STAGE_SHIFT512) // 256
assert ((STAGE_T512 - STAGE_SHIFT512) % 256 == 0).all()
assert (label(_LAM2) == np.arange(256)).all()
#: U[l] * 2^17: t_l minus the mean of the t_l, exactly.
STAGE_U_NUM = 256 * STAGE_T512 - STAGE_T512.sum(0)
#: The stage table U (float32, exact).
STAGE_U = (STAGE_U_NUM / U_DENOM).astype(np.float32)
assert (STAGE_U.astype(np.float64) * U_DENOM == STAGE_U_NUM).all()
for _a in (STAGE_T512, _LAM2, STAGE_U_NUM, STAGE_U):
    _a.flags.writeable = False


def _neighbours2() -> np.ndarray:
    """The 2400 E8 vectors of norm 2 and 4, doubled, sorted by norm."""
    ints = np.array(list(itertools.product(range(-2, 3), repeat=8)), np.int64) * 2
    halves = np.array(list(itertools.product((-3, -1, 1, 3), repeat=8)), np.int64)
    cand = np.concatenate([ints[(ints.sum(1) // 2) % 2 == 0], halves[(halves.sum(1) // 2) % 2 == 0]])
    n = (cand * cand).sum(1)  # 4 |v|^2
    out = cand[(n == 8) | (n == 16)]
    out = out[np.argsort((out * out).sum(1), kind="stable")]
    assert len(out) == 2400
    return out


_NB2 = _neighbours2()


def offset_units(k: int) -> np.ndarray:
    """The constant 1/4 + (a - m)(1 - 2^-(k-1)) that the encoder subtracts (coarse units)."""
    kk = k - 1
    a = STAGE_SHIFT512 / 512.0
    m = STAGE_T512.sum(0) / (256 * 512.0)
    return 0.25 + (a - m) * (1.0 - 2.0**-kk)


# ---- numba kernels -------------------------------------------------------------------------------


@numba.njit(cache=True)
def _label(z, m8):
    """Coset label of the E8 point z (doubled coordinates): bit j = k_j mod 2 for
    k = z M8 / 8. M8's columns are suffix sums (column 0: 2 on rows 0..6, -14 on row 7;
    column j = 1..6: 4 on rows j..6, -(28 - 4j) on row 7; column 7: 8 on row 7), so
    8 k_0 = 2 S_0 - 14 z_7, 8 k_j = 4 S_j - (28 - 4j) z_7 with S_j = z_j + ... + z_6,
    and k_7 = z_7. (m8 is kept as an argument for the generic form.)"""
    z7 = z[7]
    suf = 0
    lab = 0
    for j in range(6, 0, -1):
        suf += z[j]
        lab |= (((4 * suf - (28 - 4 * j) * z7) >> 3) & 1) << j
    suf += z[0]
    lab |= ((2 * suf - 14 * z7) >> 3) & 1
    lab |= (z7 & 1) << 7
    return lab


@numba.njit(cache=True)
def _decompose(z, kk, lam2, m8, pok, base_odd, tmp, labels):
    """Peel kk stage labels off the fine point z (doubled E8 coordinates). labels[j - 1]
    gets stage j + 1's label. Returns the E8P codeword of the remainder, or -1."""
    for i in range(8):
        tmp[i] = z[i]
    for j in range(kk, 0, -1):
        lab = _label(tmp, m8)
        labels[j - 1] = lab
        for i in range(8):
            tmp[i] = (tmp[i] - lam2[lab, i]) >> 1
    return e8p._index_of_doubled(tmp, pok, base_odd)


@numba.njit(cache=True)
def _descend_pass(u, w, has_w, z, dist, kk, lam2, m8, pok, base_odd, nb2, n0, n1, tmp, labels, zn, e):
    """One pass over the neighbours nb2[n0:n1]: take every move that lowers the (weighted)
    distance to u and keeps the point valid. Returns the new distance."""
    for n in range(n0, n1):
        dd = 0.0
        for i in range(8):
            dl = 0.5 * nb2[n, i]
            wi = w[i] if has_w else 1.0
            dd += wi * dl * (dl - 2.0 * e[i])
        if dd < -1e-12 * (1.0 + dist):
            for i in range(8):
                zn[i] = z[i] + nb2[n, i]
            if _decompose(zn, kk, lam2, m8, pok, base_odd, tmp, labels) >= 0:
                for i in range(8):
                    z[i] = zn[i]
                    e[i] = u[i] - 0.5 * z[i]
                dist += dd
    return dist


@numba.njit(cache=True)
def _move_bounds(e, w, has_w, srt):
    """Upper bounds of max v . e~ over the 240 roots v and over the 2160 norm-4 vectors,
    where e~ = e (or w e / min w with weights). A pass can only find a move when its
    bound exceeds |v|^2 / 2 (1 for roots, 2 for norm 4), since a move v lowers the
    distance iff 2 sum w_i v_i e_i > sum w_i v_i^2 >= min(w) |v|^2."""
    wmin = np.inf
    if has_w:
        for i in range(8):
            wmin = min(wmin, w[i])
        if not wmin > 0.0:
            return np.inf, np.inf
    tot = 0.0
    for i in range(8):
        a = abs(e[i]) * (w[i] / wmin if has_w else 1.0)
        srt[i] = a
        tot += a
    srt.sort()  # ascending
    b_root = max(srt[7] + srt[6], 0.5 * tot)
    top4 = srt[7] + srt[6] + srt[5] + srt[4]
    b_n4 = max(2.0 * srt[7], max(top4, 1.5 * srt[7] + 0.5 * (tot - srt[7])))
    return b_root, b_n4


@numba.njit(cache=True)
def _descend(u, w, has_w, z, kk, lam2, m8, pok, base_odd, nb2, tmp, labels, zn, e, srt, maxit):
    """Move the valid fine point z to neighbours while the (weighted) distance to u drops
    and the point stays valid: passes over the 240 roots until none helps, then one pass
    over the 2160 norm-4 vectors; repeated while that pass moves the point. Passes that
    cannot move (`_move_bounds`) are skipped."""
    dist = 0.0
    for i in range(8):
        e[i] = u[i] - 0.5 * z[i]
        wi = w[i] if has_w else 1.0
        dist += wi * e[i] * e[i]
    for _ in range(maxit):
        for _ in range(maxit):
            b_root, b_n4 = _move_bounds(e, w, has_w, srt)
            if b_root <= 1.0:
                break
            d2 = _descend_pass(u, w, has_w, z, dist, kk, lam2, m8, pok, base_odd, nb2, 0, 240, tmp, labels, zn, e)
            moved = d2 < dist
            dist = d2
            if not moved:
                break
        b_root, b_n4 = _move_bounds(e, w, has_w, srt)
        if b_n4 <= 2.0:
            break
        d2 = _descend_pass(u, w, has_w, z, dist, kk, lam2, m8, pok, base_odd, nb2, 240, nb2.shape[0], tmp, labels,
                           zn, e)
        moved = d2 < dist
        dist = d2
        if not moved:
            break


SHRINK_STEPS = 5  # bisection steps
DESCENT_MAXIT = 64


@numba.njit(cache=True)
def _search_rows(X, W, has_w, kk, off, out_cw, out_lab, out_over, g0, g1,
                 lam2, m8, nb2, pat, pat_norm, base_odd, types, type_norm, type_odd, pok):
    z = np.empty(8, np.int64)
    zt = np.empty(8, np.int64)
    zn = np.empty(8, np.int64)
    tmp = np.empty(8, np.int64)
    labels = np.zeros(3, np.int64)
    u = np.empty(8)
    ua = np.empty(8)
    e = np.empty(8)
    cpt = np.empty(8)
    srt = np.empty(8)
    sf = np.empty(e8p.SCRATCH)
    si = np.empty(e8p.SCRATCH, np.int64)
    scale = 2.0**kk
    for g in range(g0, g1):
        x = X[g]
        out_over[g] = 0
        if kk == 0:
            if has_w:
                out_cw[g] = e8p._nearest_weighted(x, W[g], pat, base_odd, sf, si)
            else:
                out_cw[g] = e8p._nearest_unweighted(x, pat, pat_norm, base_odd, types, type_norm, type_odd, pok, z,
                                                    sf, si)
            continue
        for i in range(8):
            u[i] = scale * (x[i] - off[i])
        e8p._nearest_e8_doubled(u, z)
        cw = _decompose(z, kk, lam2, m8, pok, base_odd, tmp, labels)
        if cw < 0:
            out_over[g] = 1
            # Overload: start from the valid point nearest to x on the segment from the
            # nearest E8P point c* to x (bisection), then descend. The fine point nearest
            # to c* itself peels back to c* (checked for all 65,536 codewords by the tests).
            cst = e8p._nearest_unweighted(x, pat, pat_norm, base_odd, types, type_norm, type_odd, pok, zt, sf, si)
            e8p._point_of_codeword(cst, pat, base_odd, cpt)
            for i in range(8):
                ua[i] = scale * (cpt[i] - off[i])
            e8p._nearest_e8_doubled(ua, z)
            lo = 0.0
            hi = 1.0
            for _ in range(SHRINK_STEPS):
                al = 0.5 * (lo + hi)
                for i in range(8):
                    ua[i] = scale * (cpt[i] + al * (x[i] - cpt[i]) - off[i])
                e8p._nearest_e8_doubled(ua, zt)
                if _decompose(zt, kk, lam2, m8, pok, base_odd, tmp, labels) >= 0:
                    lo = al
                    for i in range(8):
                        z[i] = zt[i]
                else:
                    hi = al
        if cw < 0 or has_w:
            _descend(u, W[g], has_w, z, kk, lam2, m8, pok, base_odd, nb2, tmp, labels, zn, e, srt, DESCENT_MAXIT)
            cw = _decompose(z, kk, lam2, m8, pok, base_odd, tmp, labels)
        out_cw[g] = cw
        for j in range(kk):
            out_lab[g, j] = labels[j]


@numba.njit(cache=True)
def _search_serial(X, W, has_w, kk, off, out_cw, out_lab, out_over,
                   lam2, m8, nb2, pat, pat_norm, base_odd, types, type_norm, type_odd, pok):
    _search_rows(X, W, has_w, kk, off, out_cw, out_lab, out_over, 0, X.shape[0],
                 lam2, m8, nb2, pat, pat_norm, base_odd, types, type_norm, type_odd, pok)


@numba.njit(cache=True, parallel=True)
def _search_parallel(X, W, has_w, kk, off, out_cw, out_lab, out_over, chunk,
                     lam2, m8, nb2, pat, pat_norm, base_odd, types, type_norm, type_odd, pok):
    n = X.shape[0]
    nchunks = (n + chunk - 1) // chunk
    for c in numba.prange(nchunks):
        g0 = c * chunk
        g1 = min(n, g0 + chunk)
        _search_rows(X, W, has_w, kk, off, out_cw, out_lab, out_over, g0, g1,
                     lam2, m8, nb2, pat, pat_norm, base_odd, types, type_norm, type_odd, pok)


_CHUNK = 1024


def lattice_search(X, stages: int, W=None, parallel: bool = True):
    """Codes of the groups X ((n, 8) float64, in units of the first stage's scale, nested
    stage scales 1, 1/2, 1/4). Returns (codewords uint16 (n,), labels uint8 (n, stages-1),
    overloaded bool (n,)). W: None or non-negative weights of X's shape. The result does
    not depend on `parallel` (groups are independent)."""
    if stages not in (1, 2, 3):
        raise ValueError(f"stages must be 1, 2 or 3, got {stages}")
    X = np.ascontiguousarray(X, dtype=np.float64).reshape(-1, 8)
    n = X.shape[0]
    has_w = W is not None
    Wa = np.ascontiguousarray(W, dtype=np.float64).reshape(-1, 8) if has_w else np.ones((1, 8))
    kk = stages - 1
    cw = np.empty(n, np.int64)
    lab = np.zeros((n, max(kk, 1)), np.int64)
    over = np.zeros(n, np.uint8)
    off = offset_units(stages) if kk else np.zeros(8)
    args = (_LAM2, _M8, _NB2) + e8p.tables()
    if parallel and n > _CHUNK:
        _search_parallel(X, Wa, has_w, kk, off, cw, lab, over, _CHUNK, *args)
    else:
        _search_serial(X, Wa, has_w, kk, off, cw, lab, over, *args)
    if n and cw.min() < 0:  # every path ends on a valid point; this would be a bug
        raise RuntimeError("lattice search produced an invalid point")
    return cw.astype(np.uint16), lab[:, :kk].astype(np.uint8), over.astype(bool)


def reconstruct_units(codewords, labels) -> np.ndarray:
    """float64 (n, 8): c + U[l_2]/2 + U[l_3]/4 (exact) for codes from `lattice_search`."""
    pat, sgn = e8p.split_codewords(codewords)
    v = e8p.e8p_points(pat, sgn).astype(np.float64)
    for j in range(labels.shape[1]):
        v += STAGE_U[labels[:, j]].astype(np.float64) * 0.5 ** (j + 1)
    return v
