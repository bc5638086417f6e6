"""Bit allocation: a rate per tensor so that the quantized tensors average `target` bits
per weight and the sum of their relative proxy losses is least (or, weighted by output
sensitivity, the sum of their estimated loss increases: see `tensor_weight`).

Each tensor t has measured rate-distortion points (bits_t(r), D_t(r)) at the codec's
rates r: bits_t the tensor's coded size (payloads and parameter blocks), D_t the relative
proxy loss tr(E H E^T) / tr(W H W^T) (H = I without a Hessian: the relative squared
error), measured by encoding a sample of the tensor's rows (rows of the transformed
matrix are alike, and the proxy is a sum over rows). Minimizing sum_t D_t subject to
sum_t bits_t <= budget is a Lagrangian problem: for a multiplier lambda each tensor takes
the point minimizing D_t + lambda bits_t, which lies on the lower convex hull of its
points. Raising the rates of all tensors along their hulls in order of decreasing slope
-dD/dbits until the budget is spent traces those solutions (Shoham and Gersho 1988);
what is left of the budget then goes to the best single upgrades that still fit, and for
a codec that takes any rate (pvq) to one tensor at a rate between its grid points.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

SAMPLE_ROWS = 256  # rows of the transformed matrix encoded per RD point (a multiple of 16: trellis tiles)
GRID_STEP = 0.5  # rate grid of codecs that take any rate
GRID_SPAN = 1.5  # the grid covers target +- this
HEADER_BITS = 8 * 64  # reserve for a tensor's parameter blocks when its rate is interpolated


@dataclass
class RDPoint:
    rate: float  # the bits per weight option passed to the codec
    bits: float  # predicted coded size of the whole tensor, in bits
    distortion: float  # relative proxy loss


def candidate_rates(codec, target: float) -> list:
    """The codec's discrete rates, or a grid around the target for a codec that takes any."""
    rates = getattr(codec, "rates", None)
    if rates:
        return [float(r) for r in rates]
    lo = max(GRID_STEP, math.floor(target / GRID_STEP) * GRID_STEP - GRID_SPAN)
    hi = math.ceil(target / GRID_STEP) * GRID_STEP + GRID_SPAN
    grid = {round(lo + GRID_STEP * i, 6) for i in range(int(round((hi - lo) / GRID_STEP)) + 1)}
    return sorted(grid | {float(target)})


def needs_allocation(codec, target: float) -> bool:
    """A fractional target with a codec of discrete rates cannot be met tensor by tensor."""
    rates = getattr(codec, "rates", None)
    return bool(rates) and float(target) not in [float(r) for r in rates]


def sample_rows(rows: int, n: int = SAMPLE_ROWS) -> np.ndarray:
    if rows <= n:
        return np.arange(rows)
    return np.unique(np.linspace(0, rows - 1, n).round().astype(np.int64))


def coded_bits(codec, enc, rows: int, cols: int, dtype: str, side_bytes: int = 0) -> int:
    """Bits of a tensor of rows x cols with the parameters of `enc` (raw coding)."""
    specs = codec.streams(enc.params, rows, cols, dtype)
    payload = sum(-(-s.count * s.width // 8) for s in specs)
    return 8 * (payload + len(codec.build_params(enc.params)) + side_bytes)


def measure_points(codec, wp: np.ndarray, rates, codec_options: dict, dtype: str, Hp=None, *, damp=0.01,
                   passes=0, name="?") -> list:
    """RD points of the transformed matrix wp at each rate, measured on a row sample."""
    from .ldlq import decoded, encode_with_hessian
    from .proxy import relative_proxy

    rows, cols = wp.shape
    ws = np.ascontiguousarray(wp[sample_rows(rows)])
    pts = []
    cache = {}  # one factorization of H for every rate
    for r in rates:
        opts = {**codec_options, "bits": r}
        try:
            if Hp is not None:
                enc, info = encode_with_hessian(codec, ws, opts, Hp, name=name, damp=damp, passes=passes,
                                                dtype=dtype, cache=cache)
                dist = min(info["proxy_ldlq"], info["proxy_free"])
            else:
                enc = codec.encode(ws, opts)
                q = decoded(codec, enc, ws.shape[0], cols, dtype)
                dist = relative_proxy(ws, q, np.ones(cols))
        except InputError:
            continue  # a rate this tensor cannot take (too few bits for its side information)
        bits = max(coded_bits(codec, enc, rows, cols, dtype, 20), r * rows * cols + HEADER_BITS)
        pts.append(RDPoint(float(r), float(bits), float(dist)))
    if not pts:
        raise InputError(f"tensor {name!r}: no rate of the {codec.name} codec fits it")
    return pts


def _hull(points: list) -> list:
    """Indices of the lower convex hull of (bits, distortion), bits ascending, distortion
    strictly descending."""
    order = sorted(range(len(points)), key=lambda i: (points[i].bits, points[i].distortion))
    pareto = []
    for i in order:
        if not pareto or points[i].distortion < points[pareto[-1]].distortion:
            pareto.append(i)
    hull = []
    for i in pareto:
        while len(hull) >= 2:
            a, b = points[hull[-2]], points[hull[-1]]
            c = points[i]
            # b is above the segment a-c: drop it
            if (b.distortion - a.distortion) * (c.bits - a.bits) >= (c.distortion - a.distortion) * (b.bits - a.bits):
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def allocate(points: list, budget_bits: float) -> list:
    """Index of the chosen point of each tensor: sum of bits <= budget_bits and the sum of
    distortions least: the better of the Lagrangian path (`lagrangian`) and an exact
    knapsack over sizes rounded up to 1/DP_UNITS of the budget (`knapsack`: it matters
    when there are few tensors, where the Lagrangian's leftover is coarse). InputError if
    even the lowest rates exceed the budget."""
    total = lambda c: sum(points[t][i].distortion for t, i in enumerate(c))  # noqa: E731
    fits = lambda c: c is not None and sum(points[t][i].bits for t, i in enumerate(c)) <= budget_bits  # noqa: E731
    found = [c for c in (lagrangian(points, budget_bits), knapsack(points, budget_bits, math.ceil),
                         knapsack(points, budget_bits, round)) if fits(c)]
    return min(found, key=total)


DP_UNITS = 4096


def knapsack(points: list, budget_bits: float, rounding=math.ceil):
    """Exact minimum of the summed distortion with each size rounded (up: the choice fits
    the real budget too; to nearest: it finds combinations that spend the budget exactly,
    and the caller checks that they fit) to a multiple of budget / DP_UNITS; None if none
    fits."""
    unit = budget_bits / DP_UNITS
    inf = np.inf
    best = np.full(DP_UNITS + 1, inf)  # best[u]: least distortion using at most u units
    best[:] = 0.0
    back = []
    for pts in points:
        cost = [int(rounding(p.bits / unit - 1e-9)) for p in pts]
        new = np.full(DP_UNITS + 1, inf)
        arg = np.full(DP_UNITS + 1, -1, np.int16)
        for i, (c, p) in enumerate(zip(cost, pts)):
            if c > DP_UNITS:
                continue
            cand = np.full(DP_UNITS + 1, inf)
            cand[c:] = best[: DP_UNITS + 1 - c] + p.distortion
            better = cand < new
            new[better] = cand[better]
            arg[better] = i
        best = new
        back.append(arg)
    if not np.isfinite(best[DP_UNITS]):
        return None
    choice = [0] * len(points)
    u = DP_UNITS
    for t in range(len(points) - 1, -1, -1):
        i = int(back[t][u])
        choice[t] = i
        u -= int(rounding(points[t][i].bits / unit - 1e-9))
    return choice


def lagrangian(points: list, budget_bits: float) -> list:
    """Rates raised along the tensors' lower convex hulls in order of decreasing slope
    while they fit, then the best single upgrades that still fit."""
    hulls = [_hull(p) for p in points]
    choice = [h[0] for h in hulls]
    used = sum(points[t][c].bits for t, c in enumerate(choice))
    if used > budget_bits:
        raise InputError(f"the target is below the lowest rates available: at least "
                         f"{used / budget_bits:.3f} times the budget is needed")
    pos = [0] * len(points)
    heap = []

    def push(t):
        h = hulls[t]
        if pos[t] + 1 < len(h):
            a, b = points[t][h[pos[t]]], points[t][h[pos[t] + 1]]
            heapq.heappush(heap, (-(a.distortion - b.distortion) / (b.bits - a.bits), t))

    for t in range(len(points)):
        push(t)
    while heap:
        _, t = heapq.heappop(heap)
        h = hulls[t]
        a, b = points[t][h[pos[t]]], points[t][h[pos[t] + 1]]
        if used + b.bits - a.bits <= budget_bits:
            used += b.bits - a.bits
            pos[t] += 1
            choice[t] = h[pos[t]]
            push(t)
        # else: this tensor's later hull steps need this one first; it stays here
    # What is left: the single upgrades (any point, hull or not) that fit, best first.
    while True:
        best = None
        for t, pts in enumerate(points):
            cur = pts[choice[t]]
            for i, p in enumerate(pts):
                extra = p.bits - cur.bits
                gain = cur.distortion - p.distortion
                if gain > 0 and used + extra <= budget_bits and (best is None or gain > best[0]):
                    best = (gain, t, i, extra)
        if best is None:
            break
        _, t, i, extra = best
        choice[t] = i
        used += extra
    return choice


def interpolated_rate(points: list, choice: list, numels: list, budget_bits: float):
    """For a codec that takes any rate: (tensor, rate) spending the budget left after
    `allocate` on the tensor whose next grid point has the steepest slope, at a rate
    between its chosen and next point; None if nothing is worth it."""
    used = sum(points[t][c].bits for t, c in enumerate(choice))
    left = budget_bits - used - HEADER_BITS
    best = None
    for t, pts in enumerate(points):
        cur = pts[choice[t]]
        for p in pts:
            if p.rate > cur.rate and p.distortion < cur.distortion:
                slope = (cur.distortion - p.distortion) / (p.bits - cur.bits)
                if best is None or slope > best[0]:
                    best = (slope, t, cur, p)
    if best is None or left <= 0:
        return None
    _, t, cur, nxt = best
    rate = cur.rate + min(left / numels[t], nxt.rate - cur.rate)
    rate = math.floor(rate * 1e4) / 1e4
    return (t, rate) if rate > cur.rate else None


@dataclass
class Plan:
    """The allocator's result: per quantized tensor its RD points, the chosen point and
    the rate passed to the codec; budget in bits."""

    names: list
    numels: list
    points: list
    choice: list
    rates: dict  # name -> bits per weight
    budget: float
    weighting: str = "proxy"  # what the distortions sum: "proxy" (relative) or "fisher" (loss estimate)

    def downgrade(self, over_bits: float):
        """The tensor to move one point down after the budget was missed by over_bits: the
        smallest loss of distortion per bit saved. Returns (name, new rate) or None."""
        best = None
        for t, pts in enumerate(self.points):
            cur_rate = self.rates[self.names[t]]
            cur = min(pts, key=lambda p: abs(p.rate - cur_rate))
            for i, p in enumerate(pts):
                if p.rate < cur_rate and p.bits < cur.bits:
                    cost = (p.distortion - cur.distortion) / (cur.bits - p.bits)
                    if best is None or cost < best[0]:
                        best = (cost, t, i)
        if best is None:
            return None
        _, t, i = best
        self.choice[t] = i
        self.rates[self.names[t]] = self.points[t][i].rate
        return self.names[t], self.points[t][i].rate


def allocation_weighting(options, hessians, names: list) -> str:
    """"fisher" where the tensors are weighed by output sensitivity, else "proxy":
    options.allocate_weight is proxy, fisher (an error unless the H file has an H and a
    sensitivity for every quantized tensor), or auto (fisher exactly when it has them)."""
    mode = getattr(options, "allocate_weight", "auto") or "auto"
    if mode not in ("auto", "proxy", "fisher"):
        raise InputError(f"--allocate-weight must be auto, proxy or fisher, got {mode!r}")
    if mode == "proxy" or hessians is None:
        if mode == "fisher":
            raise InputError("--allocate-weight fisher needs --hessians with output sensitivities "
                             "(pvqcodec calibrate --fisher-tokens N)")
        return "proxy"
    known = set(hessians.weight_names())
    lacking = [n for n in names if n not in known or hessians.output_fisher(n) is None]
    have = bool(names) and not lacking  # one unit for every tensor, or none
    if mode == "fisher" and not have:
        raise InputError(f"--allocate-weight fisher: {hessians.path} has no H or no output sensitivity for "
                         f"{lacking[0]!r} (calibrate with --fisher-tokens N)")
    return "fisher" if have else "proxy"


def tensor_weight(fisher: float, w: np.ndarray, H: np.ndarray) -> float:
    """The factor turning a tensor's relative proxy D = tr(E H E^T) / tr(W H W^T) into the
    second-order estimate of the loss it adds, F tr(E H E^T) (F: the output's mean squared loss
    gradient; errors spread evenly over the outputs by the transform, so a mean suffices)."""
    w = np.asarray(w, np.float64)
    return float(fisher) * float(np.einsum("ij,jk,ik->", w, np.asarray(H, np.float64), w))


def plan_rates(src, names: list, options, hessians=None, progress=None) -> Plan:
    """Measure every quantized tensor's RD points and allocate `options.bits` on average.
    src: a SafetensorsSource; hessians: a HessianSource or None; progress(weights) is
    called after each tensor."""
    from ..codecs import codec_by_name
    from ..encoder import matrix_view, quantizes, transformed_matrix
    from .ldlq import prepare_hessian

    codec = codec_by_name(options.codec)
    target = float(options.bits)
    rates = candidate_rates(codec, target)
    weighting = allocation_weighting(options, hessians, [n for n in names if quantizes(n, tuple(src.info(n).shape), options)])
    plan_names, numels, points = [], [], []
    for n in names:
        info = src.info(n)
        if not quantizes(n, tuple(info.shape), options):
            continue
        stored = src.read(n)
        w, wp, transform, tparams = transformed_matrix(n, stored, info.dtype_name, options)
        Hp = None
        got = hessians.get(n) if hessians is not None else None
        if got is not None:
            Hp, _ = prepare_hessian(got[0], wp.shape[1], n, transform, tparams)
        # Without coordinate descent: it lowers every rate's proxy by a similar 0.05-0.5 dB
        # (bench/RESULTS.md), so the choice hardly depends on it, and it doubles the time.
        pts = measure_points(codec, wp, rates, options.codec_options, info.dtype_name, Hp,
                             damp=options.damp, passes=0, name=n)
        if weighting == "fisher":
            s = tensor_weight(hessians.output_fisher(n), w, got[0])
            pts = [RDPoint(p.rate, p.bits, p.distortion * s) for p in pts]
        points.append(pts)
        plan_names.append(n)
        numels.append(int(np.prod(matrix_view(tuple(info.shape)))))
        if progress:
            progress(info.numel)
    if not plan_names:
        return Plan([], [], [], [], {}, 0.0)
    budget = target * sum(numels)
    least = sum(min(p.bits for p in pts) for pts in points)
    if least > budget:
        raise InputError(f"--bits {target:g} is below the {codec.name} codec's lowest rates: these tensors need at "
                         f"least {least / sum(numels):.4f} bits per weight")
    choice = allocate(points, budget)
    chosen = {n: points[t][choice[t]].rate for t, n in enumerate(plan_names)}
    if not getattr(codec, "rates", None):
        extra = interpolated_rate(points, choice, numels, budget)
        if extra is not None:
            chosen[plan_names[extra[0]]] = extra[1]
    return Plan(plan_names, numels, points, choice, chosen, budget, weighting)
