"""Rate-distortion choice of each group's pulse count (encoder side, spec 6.5.6).

For every group and every pulse count K of the table the shape search gives y; the
distortion with a quantized gain q is, for weights w (1 without a weighting),

    sum w (x - (q / |y|) y)^2 = resid + curv * (q - g*)^2,
    g* = |y| (x.Wy) / (y.Wy),  resid = x.Wx - (x.Wy)^2 / (y.Wy),  curv = (y.Wy) / (y.y),

so three numbers per (group, K) hold everything the choice needs, whatever the gain
table. A group with K = 0 decodes to zeros: its distortion is x.Wx.
"""

import math
from dataclasses import dataclass

import numpy as np

from ..pvq import gain, optimal_gains
from ..pvq.search import pvq_search


@dataclass
class Candidates:
    """Per group (rows) and per entry of the table (columns)."""

    gstar: np.ndarray  # optimal gain, normalized units
    resid: np.ndarray  # distortion at the optimal gain
    curv: np.ndarray  # distortion per squared gain error


CANDIDATE_REFINE_PASSES = 0  # the final shapes get the search's full refinement


def candidate_stats(x: np.ndarray, w, k_values, refine_passes=CANDIDATE_REFINE_PASSES) -> Candidates:
    """Search every group at every K of the table (the pvq search, projection and greedy
    pulses: its refinement passes lower the error by about 1 percent at every K alike, so
    the choice of K does without them) and keep the statistics."""
    G = x.shape[0]
    n = len(k_values)
    gstar = np.zeros((G, n), np.float64)
    resid = np.zeros((G, n), np.float64)
    curv = np.zeros((G, n), np.float64)
    xwx = np.einsum("gi,gi->g", x, x) if w is None else np.einsum("gi,gi,gi->g", w, x, x)
    for j, k in enumerate(k_values):
        if k == 0:
            resid[:, j] = xwx
            continue
        y = pvq_search(x, k, w, refine_passes=refine_passes)
        gstar[:, j], resid[:, j], curv[:, j] = shape_stats(x, w, y)
    return Candidates(gstar, resid, curv)


def shape_stats(x: np.ndarray, w, y: np.ndarray):
    """(g*, resid, curv) of groups x with shapes y (each with at least one pulse)."""
    yf = y.astype(np.float64)
    gstar = optimal_gains(x, yf, w)
    yy = np.einsum("gi,gi->g", yf, yf)
    if w is None:
        xwx, curv = np.einsum("gi,gi->g", x, x), np.ones_like(yy)
    else:
        xwx, curv = np.einsum("gi,gi,gi->g", w, x, x), np.einsum("gi,gi,gi->g", w, yf, yf) / yy
    return gstar, np.maximum(xwx - curv * gstar * gstar, 0.0), curv  # curv g*^2 = (x.Wy)^2 / (y.Wy)


def quantized(c: Candidates, levels: np.ndarray, k_values):
    """(gain index, distortion) per group and entry with the gain table `levels`."""
    q = gain.nearest_level(c.gstar, levels)
    dist = c.resid + c.curv * (levels[q] - c.gstar) ** 2
    zero = np.asarray(k_values) == 0
    q[:, zero] = 0
    return q, dist


def choose(cost_d: np.ndarray, rate: np.ndarray, lam: float) -> np.ndarray:
    """Per group, the entry minimizing distortion + lam * bits (ties to the smaller K)."""
    return np.argmin(cost_d + lam * rate[None, :], axis=1)


def histograms(choice, q, n_k, n_q, scale):
    g = np.arange(choice.size)
    pulse_hist = np.bincount(choice, minlength=n_k) * scale
    gain_hist = np.bincount(q[g, choice], minlength=n_q) * scale
    return pulse_hist, gain_hist


def bisect_lambda(cost_d, rate, q, model, budget, scale, guess=None, iters=32):
    """The smallest lambda (most bits) whose choice's predicted size fits `budget` bits.

    Returns (choice, bits, lambda). When even the cheapest choice (every group at the
    table's smallest K) does not fit, returns that choice and its size, over the budget.
    `guess` (the previous pass's lambda) narrows the search."""
    n_k, n_q = cost_d.shape[1], 1 << model.gain_bits

    def size(choice):
        return model.bits(*histograms(choice, q, n_k, n_q, scale))

    lo_choice = choose(cost_d, rate, 0.0)
    lo_bits = size(lo_choice)
    if lo_bits <= budget:
        return lo_choice, lo_bits, 0.0
    lo, hi = 1e-9, 1e9  # normalized distortion per group per bit: about 0.01 to 1 in practice
    if guess:
        for factor in (4.0, 64.0):  # a bracket around the guess, widened once if it misses
            a, b = max(lo, guess / factor), min(hi, guess * factor)
            if size(choose(cost_d, rate, a)) > budget and size(choose(cost_d, rate, b)) <= budget:
                lo, hi, iters = a, b, 12 if factor == 4.0 else 18
                break
    hi_choice = choose(cost_d, rate, hi)
    hi_bits = size(hi_choice)
    if hi_bits > budget:
        return hi_choice, hi_bits, hi
    for _ in range(iters):
        mid = math.sqrt(lo * hi)
        c = choose(cost_d, rate, mid)
        b = size(c)
        if b <= budget:
            hi, hi_choice, hi_bits = mid, c, b
        else:
            lo = mid
    return hi_choice, hi_bits, hi
