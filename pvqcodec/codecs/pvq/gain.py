"""Gain quantizer design for PVQ (encoder side; the decoder only reads the stored table).

Normalized gain. For a group of D weights in a row of n weights, with the
row's RMS r, let t = ||x_g|| / r. After a randomized Hadamard transform the
weights behave like i.i.d. Gaussians, and ||x_g||^2 / ||x_row||^2 follows
Beta(D/2, (n-D)/2) ("Pyramid Vector Quantization for LLMs", 2024), so
t^2 = n * B with B ~ Beta(D/2, (n-D)/2); as n grows t tends to a chi
distribution with D degrees of freedom. The encoder reconstructs each group
with the gain nearest to its optimal gain (x.y)/||y|| for the chosen shape y.

Three designs of the 2^b levels, measured in bench/rd_gaussian.py:
- "beta-quantile": the paper's: levels at the quantiles (i + 1/2) / 2^b of t.
- "beta-lloyd": Lloyd-Max (MSE-optimal fixed-rate) levels for the density of t.
- "empirical": Lloyd-Max on the tensor's own optimal gains (1-D k-means,
  weighted, started from beta-lloyd). The table is stored in the file, so the
  decoder needs nothing else. This is the default: it measured best.
"""

import functools
import math

import numpy as np

GAIN_QUANTIZERS = ("empirical", "beta-lloyd", "beta-quantile")
_GRID = 8192


def _t_density(d: int, n: int):
    """Grid and normalized probability masses of t = sqrt(n * Beta(d/2, (n-d)/2))."""
    if n <= d:  # one group is the whole row: t = sqrt(n) exactly
        return np.array([math.sqrt(n)]), np.array([1.0])
    a, b = d / 2.0, (n - d) / 2.0
    # Support of B up to far in its tail: mean d/n, sd ~ sqrt(2d)/n.
    hi = min(1.0, (d + 12.0 * math.sqrt(2.0 * d) + 40.0) / n)
    u = (np.arange(_GRID) + 0.5) / _GRID * hi
    logpdf = (a - 1) * np.log(u) + (b - 1) * np.log1p(-np.minimum(u, 1 - 1e-16)) - (
        math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    )
    w = np.exp(logpdf - logpdf.max())
    w /= w.sum()
    return np.sqrt(n * u), w


def beta_quantile_levels(bits: int, d: int, n: int) -> np.ndarray:
    t, w = _t_density(d, n)
    cdf = np.cumsum(w)
    q = (np.arange(1 << bits) + 0.5) / (1 << bits)
    idx = np.minimum(np.searchsorted(cdf, q), t.size - 1)
    return t[idx]


def _lloyd(x: np.ndarray, w: np.ndarray, levels: np.ndarray, iters: int) -> np.ndarray:
    """Weighted 1-D Lloyd-Max on sorted samples x with weights w."""
    levels = np.sort(levels.astype(np.float64))
    cw = np.concatenate([[0.0], np.cumsum(w)])
    cwx = np.concatenate([[0.0], np.cumsum(w * x)])
    for _ in range(iters):
        edges = (levels[1:] + levels[:-1]) / 2
        cut = np.concatenate([[0], np.searchsorted(x, edges), [x.size]])
        mass = cw[cut[1:]] - cw[cut[:-1]]
        moment = cwx[cut[1:]] - cwx[cut[:-1]]
        new = np.where(mass > 0, moment / np.where(mass > 0, mass, 1), levels)
        if np.allclose(new, levels, rtol=0, atol=1e-12):
            levels = new
            break
        levels = np.sort(new)
    return levels


def beta_lloyd_levels(bits: int, d: int, n: int) -> np.ndarray:
    return _beta_lloyd_levels(bits, d, n).copy()


@functools.lru_cache(maxsize=256)
def _beta_lloyd_levels(bits: int, d: int, n: int) -> np.ndarray:
    # Cached: 300 Lloyd iterations on an 8192-point grid, asked for again and again by
    # encoders that redesign a table several times (pvqvr's rate-distortion passes).
    t, w = _t_density(d, n)
    return _lloyd(t, w, beta_quantile_levels(bits, d, n), 300)


def design_levels(kind: str, bits: int, d: int, n: int, gains=None, weights=None) -> np.ndarray:
    """The 2^bits gain levels (normalized units, ascending) of the named design."""
    if kind == "beta-quantile":
        return beta_quantile_levels(bits, d, n)
    if kind == "beta-lloyd":
        return beta_lloyd_levels(bits, d, n)
    if kind == "empirical":
        start = beta_lloyd_levels(bits, d, n)
        if gains is None or gains.size == 0:
            return start
        order = np.argsort(gains, kind="stable")
        x = np.asarray(gains, np.float64)[order]
        w = np.ones_like(x) if weights is None else np.asarray(weights, np.float64)[order]
        if w.sum() <= 0:
            return start
        # Start from the data's own weighted quantiles blended with the Beta levels, so
        # that levels start inside the data's range even when the Beta model is off.
        cw = np.cumsum(w) / w.sum()
        q = (np.arange(1 << bits) + 0.5) / (1 << bits)
        data_q = x[np.minimum(np.searchsorted(cw, q), x.size - 1)]
        best = None
        for init in (start, data_q):
            lv = _lloyd(x, w, init, 60)
            err = _weighted_error(x, w, lv)
            if best is None or err < best[0]:
                best = (err, lv)
        return best[1]
    raise ValueError(f"unknown gain quantizer {kind!r}; choose from {', '.join(GAIN_QUANTIZERS)}")


def _weighted_error(x, w, levels):
    return float(np.sum(w * (x - levels[nearest_level(x, levels)]) ** 2))


def nearest_level(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Index of the nearest level (ties to the lower), levels ascending."""
    levels = np.asarray(levels, np.float64)
    if levels.size == 1:
        return np.zeros(np.shape(values), np.int64)
    edges = (levels[1:] + levels[:-1]) / 2
    return np.searchsorted(edges, values, side="left")
