"""Rate-distortion-optimized E8 quantization with ideal entropy coding (informative).

E8 = D8 u (D8 + 1/2), D8 = integer vectors of even sum (Conway and Sloane, SPLAG ch. 20).
A point is coded as its **class** (the sorted absolute values of its coordinates, the
orbit of the point under coordinate permutations and the sign changes that keep it in
E8) and its index within the class's orbit. For a source invariant under signed
permutations (i.i.d. Gaussian) the points of one orbit are equally likely, so the ideal
rate of a point p is

    bits(p) = -log2 P(class(p)) + log2 |orbit(p)|,
    |orbit| = 8! / prod(mult!) * (2^(nonzero coordinates) for D8, 2^7 for D8 + 1/2).

The encoder picks, for x' = x / scale, the point minimizing ||x' - p||^2 + lam * bits(p)
among the nearest point and its 240 neighbours (p + a minimal vector), descending from
the best one found while that improves; class probabilities are re-estimated between
passes (the entropy-constrained Lloyd iteration on a fixed lattice).

The class model stores one probability per class, and the number of classes grows fast
with the rate (about 110 classes at 2 bits, 1,500 at 3 bits and 21,000 at 4 bits among
2^17 Gaussian 8-vectors). The **coordinate model** (model="coord") instead codes the
doubled coordinates c_i = 2 p_i (all even or all odd: the parity is the coset): c_0 .. c_6
with a table per coset, and c_7 with a table per coset restricted to the residue mod 4
that the even coordinate sum imposes (the lattice's parity check saves about 1 bit):

    bits(p) = -log2 P(k) + sum_{i<7} -log2 P_k(c_i) - log2 (P7_k(c_7) / P7_k(c_7's class mod 4)),
    k = c_0 mod 2 (the coset).
"""

import math

import numpy as np
from numba import njit


def minimal_vectors() -> np.ndarray:
    """The 240 vectors of norm 2: 112 permutations of (+-1, +-1, 0^6) and 128 of (+-1/2)^8
    with an even number of minus signs. float64 (240, 8)."""
    out = []
    for a in range(8):
        for b in range(a + 1, 8):
            for sa in (-1, 1):
                for sb in (-1, 1):
                    v = np.zeros(8)
                    v[a], v[b] = sa, sb
                    out.append(v)
    for m in range(256):
        neg = [(m >> k) & 1 for k in range(8)]
        if sum(neg) % 2 == 0:
            out.append(np.array([-0.5 if n else 0.5 for n in neg]))
    return np.array(out)


MINVEC = minimal_vectors()
LOG2_FACT = np.array([math.log2(math.factorial(k)) for k in range(9)])
LOG2_8FACT = math.log2(math.factorial(8))


@njit(cache=True, nogil=True)
def _nearest_dn(x, out):
    """Nearest point of D8 to x (round, then fix the parity at the worst-rounded coordinate)."""
    s = 0
    worst = 0
    wd = -1.0
    for k in range(8):
        r = math.floor(x[k] + 0.5)
        out[k] = r
        s += int(r)
        d = abs(x[k] - r)
        if d > wd:
            wd = d
            worst = k
    if s & 1:
        if x[worst] > out[worst]:
            out[worst] += 1.0
        else:
            out[worst] -= 1.0


@njit(cache=True, nogil=True)
def nearest_e8(x, out, tmp, xs):
    _nearest_dn(x, out)
    for k in range(8):
        xs[k] = x[k] - 0.5
    _nearest_dn(xs, tmp)
    d0 = 0.0
    d1 = 0.0
    for k in range(8):
        d0 += (x[k] - out[k]) ** 2
        d1 += (x[k] - tmp[k] - 0.5) ** 2
    if d1 < d0:
        for k in range(8):
            out[k] = tmp[k] + 0.5


@njit(cache=True, nogil=True)
def class_key(p, buf):
    """Sorted |2 p_k| packed 7 bits each (largest first) into an int64; also returns
    log2 |orbit|."""
    for k in range(8):
        buf[k] = int(abs(2.0 * p[k]) + 0.5)
    # insertion sort, descending
    for a in range(1, 8):
        v = buf[a]
        b = a - 1
        while b >= 0 and buf[b] < v:
            buf[b + 1] = buf[b]
            b -= 1
        buf[b + 1] = v
    key = 0
    for k in range(8):
        key = key * 128 + min(buf[k], 127)
    # orbit size
    lg = LOG2_8FACT
    run = 1
    for k in range(1, 9):
        if k < 8 and buf[k] == buf[k - 1]:
            run += 1
        else:
            lg -= LOG2_FACT[run]
            run = 1
    if buf[0] & 1:  # half-integer coset: all odd
        lg += 7.0
    else:
        nz = 0
        for k in range(8):
            if buf[k] != 0:
                nz += 1
        lg += nz
    return key, lg



@njit(cache=True, nogil=True)
def _bits(key, lg, keys, lens, unseen):
    i = np.searchsorted(keys, key)
    if i < keys.size and keys[i] == key:
        return lens[i] + lg
    return unseen + lg


COFF = 128  # c_i + COFF indexes the coordinate tables (|c_i| < 128)


@njit(cache=True, nogil=True)
def _bits_coord(p, clens, l7):
    c0 = int(math.floor(2.0 * p[0] + 0.5))
    k = c0 & 1
    b = l7[k, 0]  # the coset's code length (l7[k, 0]: c_7 = -COFF never occurs)
    for i in range(7):
        c = int(math.floor(2.0 * p[i] + 0.5)) + COFF
        if c < 1 or c >= 2 * COFF:
            return 1e9
        b += clens[k, c]
    c = int(math.floor(2.0 * p[7] + 0.5)) + COFF
    if c < 1 or c >= 2 * COFF:
        return 1e9
    return b + l7[k, c]


@njit(cache=True, nogil=True)
def _point_bits(p, buf, model, keys, lens, unseen, clens, l7):
    """(rate bits, class key, log2 orbit) of point p under the model (0 class, 1 coordinate)."""
    key, lg = class_key(p, buf)
    if model == 0:
        return _bits(key, lg, keys, lens, unseen), key, lg
    return _bits_coord(p, clens, l7), key, lg


@njit(cache=True)
def rd_quantize_e8(x, lam, keys, lens, unseen, minvec, descend, out_p, out_key, out_lg,
                   model=0, clens=np.zeros((2, 256)), l7=np.zeros((2, 256)), out_bits=np.zeros(0),
                   w=np.zeros((0, 8))):
    """x: (n, 8) already divided by the scale. Writes the chosen points, their class keys
    and log2 orbit sizes; returns the total squared error. w: (n, 8) per-weight weights of
    the distortion (the weighting hook), or empty for none; the search starts from the
    Euclidean nearest point either way."""
    n = x.shape[0]
    p = np.empty(8)
    q = np.empty(8)
    tmp = np.empty(8)
    xs = np.empty(8)
    buf = np.empty(8, np.int64)
    best_p = np.empty(8)
    err = 0.0
    wi = np.ones(8)
    weighted = w.shape[0] > 0
    for i in range(n):
        if weighted:
            for k in range(8):
                wi[k] = w[i, k]
        nearest_e8(x[i], p, tmp, xs)
        bits, key, lg = _point_bits(p, buf, model, keys, lens, unseen, clens, l7)
        d = 0.0
        for k in range(8):
            d += wi[k] * (x[i, k] - p[k]) ** 2
        best = d + lam * bits if lam > 0 else d
        bk, blg, bd, bb = key, lg, d, bits
        for k in range(8):
            best_p[k] = p[k]
        if lam > 0:
            for _ in range(descend):
                improved = False
                for k in range(8):
                    p[k] = best_p[k]
                for m in range(minvec.shape[0]):
                    d = 0.0
                    for k in range(8):
                        q[k] = p[k] + minvec[m, k]
                        d += wi[k] * (x[i, k] - q[k]) ** 2
                    if d >= best:
                        continue
                    bits, key, lg = _point_bits(q, buf, model, keys, lens, unseen, clens, l7)
                    c = d + lam * bits
                    if c < best:
                        best = c
                        bk, blg, bd, bb = key, lg, d, bits
                        for k in range(8):
                            best_p[k] = q[k]
                        improved = True
                if not improved:
                    break
        for k in range(8):
            out_p[i, k] = best_p[k]
        out_key[i] = bk
        out_lg[i] = blg
        if out_bits.size:
            out_bits[i] = bb
        err += bd
    return err


def coord_tables(p):
    """Code lengths of the coordinate model from chosen points p (n, 8): (clens, l7), each
    (2 cosets, 256) with unseen values priced at 30 bits."""
    c = np.rint(2 * p).astype(np.int64)
    k = c[:, 0] & 1
    idx = c + COFF
    if idx.min() < 1 or idx.max() >= 2 * COFF:
        raise ValueError("a coordinate beyond the model's range")
    cnt = np.zeros((2, 2 * COFF))
    np.add.at(cnt, (np.repeat(k, 7), idx[:, :7].ravel()), 1.0)
    c7 = np.zeros((2, 2 * COFF))
    np.add.at(c7, (k, idx[:, 7]), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        clens = np.where(cnt > 0, -np.log2(cnt / cnt.sum(axis=1, keepdims=True)), 30.0)
        # c_7 within its residue class mod 4 (c_7 + COFF has the residue of c_7: COFF = 0 mod 4)
        res = np.arange(2 * COFF) % 4
        cls_tot = np.stack([np.bincount(res, weights=c7[j], minlength=4)[res] for j in range(2)])
        l7 = np.where(c7 > 0, -np.log2(c7 / np.where(cls_tot > 0, cls_tot, 1.0)), 30.0)
    kc = np.bincount(k, minlength=2).astype(np.float64)
    with np.errstate(divide="ignore"):
        l7[:, 0] = np.where(kc > 0, -np.log2(kc / kc.sum()), 30.0)  # the coset (see _bits_coord)
    return clens, l7


def e8_rd(x8, scale, lam, iters=5, descend=4, model="class", weight=None):
    """Entropy-constrained quantization of (n, 8) vectors at a scale and lambda (lambda in
    units of the unscaled squared error per bit). Returns (points * scale, rate bits/dim,
    mse, class keys). model: "class" or "coord" (module docstring); weight: optional (n, 8)
    per-weight weights of the distortion."""
    xs = np.ascontiguousarray(x8 / scale, np.float64)
    n = xs.shape[0]
    p = np.empty_like(xs)
    key = np.empty(n, np.int64)
    lg = np.empty(n)
    bits = np.empty(n)
    keys = np.zeros(0, np.int64)
    lens = np.zeros(0)
    clens = np.zeros((2, 2 * COFF))
    l7 = np.zeros((2, 2 * COFF))
    m = 0 if model == "class" else 1
    lam_s = lam / (scale * scale)
    wt = np.zeros((0, 8)) if weight is None else np.ascontiguousarray(np.broadcast_to(weight, xs.shape), np.float64)
    for it in range(iters):
        rd_quantize_e8(xs, lam_s if it else 0.0, keys, lens, 30.0, MINVEC, descend, p, key, lg, m, clens, l7, bits,
                       wt)
        keys, counts = np.unique(key, return_counts=True)
        lens = -np.log2(counts / n)
        if m:
            clens, l7 = coord_tables(p)
    if m == 0:
        total = float(np.sum(lens[np.searchsorted(keys, key)])) + float(lg.sum())
    else:
        c = np.rint(2 * p).astype(np.int64) + COFF
        k = (c[:, 0] - COFF) & 1
        total = float(l7[k, 0].sum() + clens[k[:, None], c[:, :7]].sum() + l7[k, c[:, 7]].sum())
    y = p * scale
    return y, total / (8 * n), float(np.mean((x8 - y) ** 2)), key
