"""The eclattice reference encoder (informative, spec 6.8.7): entropy-constrained E8 point
choice (quantizer.py) and a search of half_scale for the coded size that --bits asks.

Building blocks (also for Hessian-aware rounding, which fixes half_scale and the tables):
  groups_of(wp, weighting)            -> (x8 (G, 8), w8 (G, 8)): groups, padding weight 0
  quantize_groups / quantize_points   (quantizer.py): points at a fixed scale and tables
  encoded_from_points(c, hs, rows, cols) -> Encoded with the eight streams and params
  coded_size(enc, rows, cols)         -> bytes of the parameter block and payloads
"""

import math

import numpy as np

from ...coding.select import code_stream
from ...errors import InputError
from .. import Encoded
from ..coded_rate import target_bits as coded_target_bits
from . import GROUP, EclatticeCodec, groups_per_row
from .quantizer import group_symbols, quantize_groups

LAMBDA_RATIO = 0.12  # lambda = LAMBDA_RATIO * scale^2, scale = 2 half_scale (bench/RESULTS.md)
# Lloyd passes: 3 at the first scale trial (the first without the rate term), 1 at each later
# trial from the nearest trial's tables; 5 and 2 change the MSE by under 0.1 percent (RESULTS.md).
LLOYD_ITERS = 3
WARM_ITERS = 1
RATE_TOL = 0.01  # the coded size must be within 1 percent under the target
RATE_AIM = 0.0025  # the search aims at 0.25 percent under the target
MAX_SEARCH = 12
SCALE0 = 0.49  # half_scale / RMS at 2 bits is about 0.49 (halving per extra bit), N(0, 1)
HALF_SCALE_FLOOR = 32760.0  # half_scale >= max|x| / this keeps every |c_i| <= C_MAX


def target_bits(bits) -> float:
    return coded_target_bits("eclattice", bits)


def groups_of(wp: np.ndarray, weighting=None) -> tuple:
    """(x8, w8): the rows of wp cut into groups of 8, (G, 8) zero-padded, and their weights:
    (G_r, 8) when every row has the same ones (no weighting: 1; a weighting of shape (cols,)
    or (1, cols)), else (G, 8); 0 on padding. quantize_points repeats (G_r, 8) over the rows."""
    rows, cols = wp.shape
    gr = groups_per_row(cols)
    x = np.zeros((rows, gr * GROUP))
    x[:, :cols] = wp
    if weighting is None:
        wt = np.ones((1, cols))
    else:
        wt = np.asarray(weighting, np.float64)
        wt = wt.reshape(1, -1) if wt.ndim == 1 else wt
        if wt.ndim != 2:
            raise InputError(f"eclattice: a weighting of shape {wt.shape} does not fit {rows} x {cols}")
        try:
            wt = np.broadcast_to(wt, (1 if wt.shape[0] == 1 else rows, cols))
        except ValueError:
            raise InputError(f"eclattice: a weighting of shape {wt.shape} does not fit {rows} x {cols}") from None
        if not np.all(np.isfinite(wt) & (wt >= 0)):
            raise InputError("eclattice: the weighting must be finite and non-negative")
    w = np.zeros((wt.shape[0], gr * GROUP))
    w[:, :cols] = wt
    return x.reshape(-1, GROUP), w.reshape(-1, GROUP)


def encoded_from_points(c: np.ndarray, half_scale, rows: int, cols: int, info: dict = None) -> Encoded:
    """The Encoded tensor of doubled-coordinate points c (G, 8), groups in row order."""
    first, mid_int, mid_half, last_res0, last_res2, last_half, is_int, res0 = group_symbols(c)
    gr = groups_per_row(cols)
    row_int = is_int.reshape(rows, gr).sum(axis=1).astype(np.uint64)
    row_res0 = (is_int & res0).reshape(rows, gr).sum(axis=1).astype(np.uint64)
    streams = [row_int, row_res0] + [s.reshape(-1).astype(np.uint16)
                                     for s in (first, mid_int, mid_half, last_res0, last_res2, last_half)]
    params = {"half_scale": np.float32(half_scale), "int_groups": int(is_int.sum()),
              "int_res0_groups": int((is_int & res0).sum())}
    return Encoded(params, streams, dict(info or {}))


def coded_size(enc: Encoded, rows: int, cols: int) -> int:
    """Bytes of the parameter block and payloads as `--entropy auto` writes them."""
    from dataclasses import replace

    codec = EclatticeCodec()
    specs = codec.streams(enc.params, rows, cols, "float32")
    size = len(codec.build_params(enc.params))
    for pos, (s, spec) in enumerate(zip(enc.streams, specs)):
        bounds = codec.stream_bounds(enc.params, rows, cols, "float32", pos, enc.streams[:pos])
        size += code_stream(s, replace(spec, bounds=bounds), "auto", codec.rans_chunk_symbols).payload.size
    return size


def encode_eclattice(wp, options, weighting=None) -> Encoded:
    """Options: bits (coded bits per weight, everything counted); for experiments
    lambda_ratio, lloyd_iters, warm_iters."""
    wp = np.asarray(wp, np.float64)
    rows, cols = wp.shape
    bits = target_bits(options["bits"])
    ratio = float(options.get("lambda_ratio", LAMBDA_RATIO))
    iters = int(options.get("lloyd_iters", LLOYD_ITERS))
    warm = int(options.get("warm_iters", WARM_ITERS))
    x8, w8 = groups_of(wp, weighting)
    lam = 4.0 * ratio  # per bit, in doubled-coordinate units: lambda / half_scale^2
    rms = math.sqrt(float(np.mean(wp * wp))) if wp.size else 0.0
    if rms == 0.0:
        c = np.zeros(x8.shape, np.int64)
        return encoded_from_points(c, 1.0, rows, cols, {"half_scale": 1.0, "coded_bits": None})
    target = bits * rows * cols / 8
    tried = []  # [log half_scale, size, Encoded or None, tables]

    def trial(ls):
        hs32 = np.float32(math.exp(ls))
        # start from the tables of the nearest scale tried: at low rates the Lloyd iteration's
        # outcome depends on its start, and a far scale's tables would make the size jump
        near = min(tried, key=lambda t: abs(t[0] - ls))[3] if tried else None
        c, tables, _ = quantize_groups(x8, w8, lam, iters=iters if near is None else warm, tables=near,
                                       scale=float(hs32))
        enc = encoded_from_points(c, hs32, rows, cols)
        tried.append([ls, coded_size(enc, rows, cols), enc, tables])
        # keep the streams only of the first trial and of the largest size within the target
        fits = [t for t in tried if t[1] <= target]
        best = max(fits, key=lambda t: (t[1], -t[0])) if fits else None
        for t in tried[1:]:
            if t is not best:
                t[2] = None

    # A safeguarded secant search on log(half_scale) for a size in [(1 - RATE_TOL) target,
    # target], aiming at RATE_AIM under it: the size falls by about n/8 bytes per doubling of
    # the scale (the default slope, taken where a measured one is flatter than a quarter of
    # it); once trials bracket the target, regula falsi between the nearest two, bisecting
    # where it would land near an end.
    aim = target * (1 - RATE_AIM)
    default_slope = -rows * cols / 8 / math.log(2)
    ls_min = math.log(float(np.max(np.abs(wp))) / HALF_SCALE_FLOOR)
    ls = max(math.log(rms * SCALE0 * 2.0 ** (2.0 - bits)), ls_min)
    for _ in range(MAX_SEARCH):
        trial(ls)
        size = tried[-1][1]
        if (1 - RATE_TOL) * target <= size <= target:
            break
        big = [t for t in tried if t[1] > target]  # scale too small
        small = [t for t in tried if t[1] < (1 - RATE_TOL) * target]  # scale too large
        if big and small:
            (l0, z0), (l1, z1) = max((t[0], t[1]) for t in big), min((t[0], t[1]) for t in small)
            if l1 > l0:
                ls = l0 + (l1 - l0) * (z0 - aim) / (z0 - z1)
                if not l0 + 0.1 * (l1 - l0) < ls < l1 - 0.1 * (l1 - l0):
                    ls = (l0 + l1) / 2
                continue
        slope = default_slope
        if len(tried) > 1:
            (l0, z0), (l1, z1) = tried[-2][:2], tried[-1][:2]
            if l1 != l0 and (z1 - z0) / (l1 - l0) < 0.25 * default_slope:
                slope = (z1 - z0) / (l1 - l0)
        ls = max(ls_min, ls + max(-2.0, min(2.0, (aim - size) / slope)))
    # The largest size within the target; a tensor too small for it keeps the first trial.
    fits = [t for t in tried if t[1] <= target]
    _, size, enc, _ = max(fits, key=lambda t: (t[1], -t[0])) if fits else tried[0]
    hs = float(enc.params["half_scale"])
    enc.info.update({"half_scale": hs, "coded_bits": 8 * size / (rows * cols), "lambda_ratio": ratio,
                     "trials": len(tried)})
    return enc
