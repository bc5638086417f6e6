"""Entropy-constrained uniform scalar quantization with a dead zone (encoder, informative).

Index m = |q| >= 0 of a value x with step `step` is chosen to minimize

    w * (|x| - r[m])^2 + lam * len(symbol(q))

over the nearest magnitude and up to two smaller ones (a larger one is never cheaper in
rate and is farther), where r[m] = (m - off[m]) * step are the reconstruction values
(centroids) and len the code lengths in bits of the zigzag symbol. Alternating this
choice with the update of the centroids and of the symbol probabilities is the
entropy-constrained Lloyd iteration (Chou, Lookabaugh and Gray 1989) restricted to a
uniform grid: the rate term widens the dead zone and pulls values towards cheaper
indices.
"""

import math

import numpy as np
from numba import njit

MAX_MAG = 32767  # |q| limit: symbols stay below 65535 (zigzag, 16 bits)
CANDIDATES_BELOW = 2


def zigzag(q: np.ndarray) -> np.ndarray:
    """Signed index -> symbol: 0, +1, -1, +2, -2, ... -> 0, 1, 2, 3, 4, ..."""
    q = np.asarray(q, np.int64)
    return np.where(q > 0, 2 * q - 1, -2 * q).astype(np.int64)


@njit(cache=True, nogil=True)
def _assign(x, w, step, recon, lens, lam, out_sym):
    """out_sym[i] = the RD-best symbol of x[i]; returns the weighted distortion sum."""
    nrec = recon.size
    nlen = lens.size
    big = lens.max() + 1.0  # a symbol beyond the table: priced like an unused one
    dist = 0.0
    for i in range(x.size):
        v = x[i]
        a = abs(v)
        m0 = int(math.floor(a / step + 0.5))
        if m0 > MAX_MAG:
            m0 = MAX_MAG
        best = 1e300
        bm = 0
        bd = 0.0
        lo = m0 - CANDIDATES_BELOW
        if lo < 0:
            lo = 0
        for m in range(lo, m0 + 1):
            if m < nrec:
                r = recon[m]
            else:
                r = recon[nrec - 1] + (m - nrec + 1) * step
            d = (a - r) * (a - r) * w[i]
            if m == 0:
                s = 0
            elif v > 0:
                s = 2 * m - 1
            else:
                s = 2 * m
            ln = lens[s] if s < nlen else big
            c = d + lam * ln
            if c < best:
                best = c
                bm = s
                bd = d
        out_sym[i] = bm
        dist += bd
    return dist


def magnitudes(sym: np.ndarray) -> np.ndarray:
    return (np.asarray(sym, np.int64) + 1) // 2


def centroids(x, w, sym, nmag: int, step: float) -> np.ndarray:
    """Weighted mean |x| of each magnitude 0..nmag-1 (the grid value where a magnitude is unused)."""
    m = magnitudes(sym)
    num = np.bincount(m, weights=np.abs(x) * w, minlength=nmag)[:nmag]
    den = np.bincount(m, weights=w, minlength=nmag)[:nmag]
    grid = np.arange(nmag) * step
    r = np.where(den > 0, num / np.where(den > 0, den, 1.0), grid)
    r[0] = 0.0
    return r


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """-log2 of the empirical probabilities; an unused symbol costs one bit more than the
    dearest used one (it would get the smallest frequency of the table)."""
    tot = counts.sum()
    p = counts / max(tot, 1)
    with np.errstate(divide="ignore"):
        lens = np.where(counts > 0, -np.log2(np.where(counts > 0, p, 1.0)), 0.0)
    lens[counts == 0] = (lens.max() if lens.size else 0.0) + 1.0
    return lens


def ecsq_quantize(x, w, step, lam, iters=6, recon=None):
    """The entropy-constrained Lloyd iteration at a fixed step and lambda.
    Returns (symbols int64, recon float64 per magnitude, code lengths per symbol)."""
    x = np.ascontiguousarray(x, np.float64)
    w = np.ascontiguousarray(w, np.float64)
    nmag = min(MAX_MAG, int(np.max(np.abs(x)) / step + 0.5) if x.size else 0) + 2
    if recon is None:
        recon = np.arange(nmag) * step
    lens = np.zeros(2 * nmag)  # first pass: every symbol equally cheap (the nearest point)
    sym = np.empty(x.size, np.int64)
    for _ in range(iters):
        _assign(x, w, step, recon, lens, lam, sym)
        counts = np.bincount(sym, minlength=2 * nmag).astype(np.float64)
        lens = code_lengths(counts)
        recon = centroids(x, w, sym, nmag, step)
    return sym, recon, lens


def entropy_bits(sym) -> float:
    """Order-0 empirical entropy of the symbols in bits (the ideal coded size)."""
    c = np.bincount(np.asarray(sym, np.int64)).astype(np.float64)
    c = c[c > 0]
    n = c.sum()
    return float(-(c * np.log2(c / n)).sum())
