"""The pvqvr reference encoder (spec 6.5.6, informative): pulse counts chosen per group by
rate-distortion optimization, lambda found by bisection on the predicted coded size."""

import math

import numpy as np

from ...coding import rans
from ...errors import InputError
from .. import Encoded
from ..pvq import enumeration, gain, normalize_groups
from ..pvq.search import pvq_search
from . import rate, rd

DEFAULT_GROUP_SIZE = 32
DEFAULT_K_COUNT = 8
DEFAULT_K_SPAN = 24.0  # bits per group either side of the fixed-rate shape cost
MAX_K = 4096
RATE_MARGIN = 0.002  # aim this far under the target: the size model's error is far smaller
PASSES = 3  # choose K, then redesign the gain table and the pulse costs, three times
SAMPLE_GROUPS = 4096  # groups used to choose gain_bits
GAIN_BITS_CANDIDATES = tuple(range(0, 9))


def k_table(d: int, center_bits: float, span: float, count: int, zero: bool) -> list:
    """Up to `count` pulse counts whose shape costs are spread evenly over
    center_bits +- span (the nearest K to each target cost; duplicates merged)."""
    targets = np.linspace(center_bits - span, center_bits + span, count - (1 if zero else 0))
    ks = {0} if zero else set()
    for t in targets:
        ks.add(_k_nearest_cost(d, float(t)))
    return sorted(ks)[:256]


def _k_nearest_cost(d: int, bits: float) -> int:
    lo, hi = 1, MAX_K  # first K with cost >= bits, by bisection (cost increases with K)
    cost = lambda k: rate.uniform_symbol_bits(enumeration.pvq_count(d, k))  # noqa: E731
    if cost(hi) < bits:
        return _cap_k(d, hi)
    while lo < hi:
        mid = (lo + hi) // 2
        if cost(mid) >= bits:
            hi = mid
        else:
            lo = mid + 1
    k = lo if lo == 1 or abs(cost(lo) - bits) <= abs(cost(lo - 1) - bits) else lo - 1
    return _cap_k(d, k)


def _cap_k(d: int, k: int) -> int:
    return min(k, enumeration.max_k_for_bits(d, enumeration.MAX_INDEX_BITS))


def _levels(gstar, weight, gb, d, n):
    return gain.design_levels("empirical", gb, d, n, gstar, weight)


def _pulse_costs(choice, n_k):
    """Bits of each pulse index under the table-mode frequencies of this choice."""
    counts = np.bincount(choice, minlength=n_k).astype(np.int64)
    p = rans.DEFAULT_PRECISION
    f = rans.quantize_frequencies(counts, p)
    return p - np.log2(np.maximum(f, 1))


def run_rd(c, gw, k_values, model, budget, scale, d, n, passes=PASSES):
    """The RD passes (spec 6.5.6). Returns (choice, q, levels, distortion, predicted bits)."""
    kv = np.asarray(k_values)
    n_k = kv.size
    nonzero = np.flatnonzero(kv > 0)
    if nonzero.size == 0:
        choice = np.zeros(c.gstar.shape[0], np.int64)
        levels = np.zeros(1 << model.gain_bits)
        q, dist = rd.quantized(c, levels, kv)
        return choice, q[:, 0], levels, float(np.dot(dist[:, 0], gw)), model.bits(
            *rd.histograms(choice, q, n_k, levels.size, scale))
    # First gain table: from the optimal gains at the middle of the table.
    mid = nonzero[nonzero.size // 2]
    levels = _levels(c.gstar[:, mid], gw, model.gain_bits, d, n)
    pcost = np.full(n_k, math.log2(n_k) if n_k > 1 else 0.0) if model.pulse_bits else np.zeros(n_k)
    lam = None
    for p in range(passes):
        q, dist = rd.quantized(c, levels, kv)
        cost_d = dist * gw[:, None]
        choice, bits, lam = rd.bisect_lambda(cost_d, model.shape_cost + pcost, q, model, budget, scale, lam)
        if p == passes - 1:
            break
        if model.pulse_bits:
            pcost = _pulse_costs(choice, n_k)
        g = np.arange(choice.size)
        sel = kv[choice] > 0
        if sel.any():
            levels = _levels(c.gstar[g[sel], choice[sel]], gw[sel], model.gain_bits, d, n)
    g = np.arange(choice.size)
    return choice, q[g, choice], levels, float(cost_d[g, choice].sum()), bits


def _fixed_k(rows, cols, d, gb, budget, gain_hist):
    """Largest K whose single-entry table fits the budget (exact fractional rate, fixed K)."""
    def bits(k):
        m = rate.SizeModel(rows, cols, d, [k], gb)
        return m.bits(np.array([float(m.groups)]), gain_hist)

    lo, hi = 1, _cap_k(d, MAX_K)
    if bits(1) > budget:
        return 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if bits(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _modes(options) -> list:
    """The table designs to try: the given table, one fixed K, a spread table of the given
    size or span, or (default) whichever of a spread table and one fixed K gives the least
    error (one K wins on small tensors, where the pulse indices' side information weighs)."""
    if options.get("k_values"):
        return ["given"]
    if options.get("fixed"):
        return ["fixed"]
    return ["spread"] if options.get("k_count") or options.get("k_span") else ["spread", "fixed"]


def _table_for(options, mode, rows, cols, d, budget, gb):
    """The pulse-count table: given, fixed (one K: sized for this gain width), or spread
    around the fixed-rate shape cost (the same for every gain width, so the searches are
    shared)."""
    if mode == "given":
        return sorted(int(k) for k in options["k_values"])
    if mode == "fixed":
        m = rate.SizeModel(rows, cols, d, [1], gb)
        return [_fixed_k(rows, cols, d, gb, budget, np.full(1 << gb, m.groups / (1 << gb)))]
    count = int(options.get("k_count") or DEFAULT_K_COUNT)
    ref_gb = 4
    m = rate.SizeModel(rows, cols, d, range(count), ref_gb)
    per_group = (budget - m.fixed) / m.groups
    span = float(options.get("k_span") or DEFAULT_K_SPAN)
    center = per_group - ref_gb - 0.5 * math.log2(max(count, 2))
    return k_table(d, center, span, count, bool(options.get("zero_groups")))


def _plan(x, w, gw, options, mode, gb, rows, cols, d, budget, scale, cache):
    """(k_values, choice, q, levels, distortion, bits) for one design and gain width on groups x."""
    kv = _table_for(options, mode, rows, cols, d, budget, gb)
    for attempt in range(2):
        key = tuple(kv)
        if key not in cache:
            cache[key] = rd.candidate_stats(x, w, kv)
        model = rate.SizeModel(rows, cols, d, kv, gb)
        choice, q, levels, dist, bits = run_rd(cache[key], gw, kv, model, budget, scale, d, cols)
        if mode != "fixed" or attempt:
            break
        # Fixed K: the gain histogram is now known; take the largest K that still fits.
        k1 = _fixed_k(rows, cols, d, gb, budget, np.bincount(q, minlength=1 << gb) * scale)
        if k1 == kv[0]:
            break
        kv = [k1]
    return kv, choice, q, levels, dist, bits


def _check_options(options, d):
    if not 1 <= d <= 256:
        raise InputError(f"--group-size must be in 1..256, got {d}")
    if options.get("gain_bits") is not None and not 0 <= int(options["gain_bits"]) <= 8:
        raise InputError(f"--gain-bits must be in 0..8, got {options['gain_bits']}")
    kv = options.get("k_values")
    if kv:
        kv = [int(k) for k in kv]
        if len(set(kv)) != len(kv) or not 1 <= len(kv) <= 256 or min(kv) < 0 or max(kv) > MAX_K:
            raise InputError("--vr-k-values must be 1 to 256 distinct pulse counts in 0..4096")
        if max(kv) and enumeration.index_bits(d, max(kv)) > enumeration.MAX_INDEX_BITS:
            raise InputError(f"pulse count {max(kv)} at group size {d} needs more than 1024 index bits")
    count = options.get("k_count")
    if count is not None and not 1 <= int(count) <= 256:
        raise InputError(f"--vr-k-count must be in 1..256, got {count}")


def encode_pvqvr(wp: np.ndarray, options: dict, weighting=None) -> Encoded:
    wp = np.asarray(wp, np.float64)
    rows, cols = wp.shape
    d = min(int(options.get("group_size") or DEFAULT_GROUP_SIZE), cols)
    _check_options(options, d)
    budget = math.floor(float(options["bits"]) * rows * cols) * (1 - RATE_MARGIN)
    sigma, scales16, x, w, gw = normalize_groups(wp, d, weighting)
    G = x.shape[0]

    cache = {}  # candidate statistics by table, shared when the sample is every group
    gains = [int(options["gain_bits"])] if options.get("gain_bits") is not None else GAIN_BITS_CANDIDATES
    plans = [(mode, b) for mode in _modes(options) for b in gains]
    step = max(1, G // SAMPLE_GROUPS)
    if len(plans) > 1:
        # The table design and gain width with the least error on a sample, within budget.
        sl = slice(0, G, step)
        xs, ws, gws = x[sl], (None if w is None else w[sl]), gw[sl]
        scale = G / xs.shape[0]
        scored = []
        for i, (mode, b) in enumerate(plans):
            *_, dist, bits = _plan(xs, ws, gws, options, mode, b, rows, cols, d, budget, scale, cache)
            scored.append((bits > budget, dist, i))
        mode, gb = plans[min(scored)[2]]
    else:
        mode, gb = plans[0]
    if step > 1:
        cache = {}
    kv, choice, q, levels, dist, bits = _plan(x, w, gw, options, mode, gb, rows, cols, d, budget, 1.0, cache)

    kv_arr = np.asarray(kv)
    k_max = kv[-1]
    limbs = enumeration.n_limbs(d, k_max) if k_max else 1
    shapes = np.zeros((G, limbs), np.uint64)
    for j, k in enumerate(kv):
        idx = np.flatnonzero(choice == j)
        if k == 0 or idx.size == 0:
            continue
        wi = None if w is None else w[idx]
        y = pvq_search(x[idx], k, wi)
        shapes[idx, : enumeration.n_limbs(d, k)] = enumeration.encode_indices(y, k)
        q[idx] = gain.nearest_level(rd.shape_stats(x[idx], wi, y)[0], levels)  # the refined shape's gain
    q = np.where(kv_arr[choice] > 0, q, 0)
    table = (np.asarray(levels) * sigma).astype(np.float32)
    params = {"group_size": d, "k_values": [int(k) for k in kv], "gain_bits": gb, "gain_table": table}
    streams = [
        scales16.view(np.uint16),
        q.astype(np.uint8),
        choice.astype(np.uint8 if len(kv) <= 256 else np.uint16),
        shapes,
    ]
    info = {"group_size": d, "gain_bits": gb, "table": mode, "k_values": f"{kv[0]}..{k_max} ({len(kv)})",
            "mean_pulses": round(float(kv_arr[choice].mean()), 2), "predicted_bpw": round(bits / (rows * cols), 4)}
    return Encoded(params, streams, info)
