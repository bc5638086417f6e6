"""Codec id 1, `pvq`: pyramid vector quantization with gain and shape (spec codecs/pvq.md).

Each row of the transformed matrix W' (rows x cols) is cut into groups of D
consecutive values (the last group of a row padded with zeros). A group is
coded as a gain index into the tensor's stored gain table and a shape: an
integer vector y with sum |y_i| = K, enumerated to an index in [0, N(D, K)).
Each row has a float16 scale. Decoded value (spec section "Decoded value"):

    x_i = ((float(scale_r) * G[q]) / sqrt(float(sum y_j^2))) * float(y_i)

in float32, each operation rounded to nearest.
"""

import math

import numpy as np
from construct import Bytes, Int8ul, Int16ul, Struct

from ...coding import Bounds, StreamSpec
from ...errors import InputError, ParamsInvalid
from ...params import parse_exact
from .. import BlockQuantizer, Codec, Encoded, register
from ..rows import decode_row_scales, group_view
from . import enumeration, gain
from .search import pvq_search

MAX_GROUP_SIZE = 256
MAX_PULSES = 4096
MAX_GAIN_BITS = 8
MAX_INDEX_BITS = 1024
DEFAULT_GROUP_SIZE = 32
SAMPLE_GROUPS = 4096  # groups used to choose the gain/shape bit split


def groups_per_row(cols: int, d: int) -> int:
    return -(-cols // d)


@register
class PVQCodec(Codec):
    id = 1
    name = "pvq"
    params_struct = Struct(
        "group_size" / Int16ul,
        "pulses" / Int16ul,
        "gain_bits" / Int8ul,
        "gain_table" / Bytes(lambda ctx: 4 << ctx.gain_bits if ctx.gain_bits <= MAX_GAIN_BITS else 0),
    )

    # ---- format ------------------------------------------------------------------------

    def parse_params(self, raw, rows, cols, dtype):
        p = parse_exact(self.params_struct, raw, "pvq codec")
        d, k, gb = p["group_size"], p["pulses"], p["gain_bits"]
        if not 1 <= d <= MAX_GROUP_SIZE:
            raise ParamsInvalid(f"pvq group_size {d} outside 1..{MAX_GROUP_SIZE}")
        if not 1 <= k <= MAX_PULSES:
            raise ParamsInvalid(f"pvq pulses {k} outside 1..{MAX_PULSES}")
        if gb > MAX_GAIN_BITS:
            raise ParamsInvalid(f"pvq gain_bits {gb} exceeds {MAX_GAIN_BITS}")
        if enumeration.index_bits(d, k) > MAX_INDEX_BITS:
            raise ParamsInvalid(f"pvq index of N({d}, {k}) needs more than {MAX_INDEX_BITS} bits")
        table = np.frombuffer(p["gain_table"], dtype="<f4").astype(np.float32)
        if not np.all(np.isfinite(table)):
            raise ParamsInvalid("pvq gain_table holds a non-finite value")
        p["gain_table"] = table
        return p

    def build_params(self, params):
        return self.params_struct.build(
            dict(
                group_size=params["group_size"],
                pulses=params["pulses"],
                gain_bits=params["gain_bits"],
                gain_table=np.asarray(params["gain_table"], "<f4").tobytes(),
            )
        )

    def streams(self, params, rows, cols, dtype):
        d, k = params["group_size"], params["pulses"]
        groups = rows * groups_per_row(cols, d)
        return [
            StreamSpec("row_scales", rows, 16),
            StreamSpec("gains", groups, params["gain_bits"]),
            StreamSpec("shapes", groups, enumeration.index_bits(d, k)),
        ]

    def stream_bounds(self, params, rows, cols, dtype, position, earlier_streams):
        # codecs/pvq.md: every shape index is below N(D, K), a constant bound.
        if position == 2:
            return Bounds((enumeration.pvq_count(params["group_size"], params["pulses"]),), None)
        return None

    def describe(self, params):
        d, k = params["group_size"], params["pulses"]
        return {
            "name": self.name,
            "group_size": d,
            "pulses": k,
            "gain_bits": params["gain_bits"],
            "shape_bits": enumeration.index_bits(d, k),
            "log2_N": round(math.log2(enumeration.pvq_count(d, k)), 3),
        }

    # ---- decoder (spec: "PVQ decoding") ---------------------------------------------------

    def decode(self, params, rows, cols, dtype, streams):
        d, k = params["group_size"], params["pulses"]
        gpr = groups_per_row(cols, d)
        scales = decode_row_scales(streams[0], "pvq")
        gains = decode_pvq_gains(streams[1], params["gain_table"], rows * gpr)
        shapes = np.asarray(streams[2], np.uint64).reshape(rows * gpr, enumeration.n_limbs(d, k))
        y = enumeration.decode_indices(shapes, d, k)
        return decode_pvq_values(scales, gains, y, rows, cols, d)

    # ---- encoder -------------------------------------------------------------------------

    @classmethod
    def add_cli_arguments(cls, group):
        group.add_argument("--group-size", type=int, default=DEFAULT_GROUP_SIZE, metavar="D",
                           help=f"pvq: weights per group, 1..{MAX_GROUP_SIZE} (default {DEFAULT_GROUP_SIZE})")
        group.add_argument("--gain-bits", type=int, default=None, metavar="B",
                           help="pvq: bits per group gain, 0..8 (default: chosen per tensor by measured MSE)")
        group.add_argument("--gain-quantizer", choices=gain.GAIN_QUANTIZERS, default="empirical",
                           help="pvq: design of the gain levels (default empirical)")

    @classmethod
    def options_from_args(cls, args):
        return {"group_size": args.group_size, "gain_bits": args.gain_bits, "gain_quantizer": args.gain_quantizer}

    def encode(self, wp, options, weighting=None):
        return encode_pvq(wp, options, weighting)

    def block_quantizer(self, wp, options, free):
        return PVQBlockQuantizer(wp, free)


# ---- decode arithmetic: the one place in Python --------------------------------------------


def decode_pvq_gains(sym: np.ndarray, table: np.ndarray, groups: int) -> np.ndarray:
    if table.size == 1:
        return np.full(groups, table[0], np.float32)
    return table[np.asarray(sym, np.int64)]


def decode_pvq_values(scales, gains, y, rows, cols, d) -> np.ndarray:
    """float32: ((scale_r * G[q]) / sqrt(sum y^2)) * y_i, each op rounded (no FMA)."""
    gpr = groups_per_row(cols, d)
    sumsq = np.einsum("gi,gi->g", y, y, dtype=np.int64)  # exact integers
    norm = np.sqrt(sumsq.astype(np.float32))
    a = np.repeat(scales, gpr) * gains
    c = a / norm
    x = c[:, None] * y.astype(np.float32)
    return x.reshape(rows, gpr * d)[:, :cols]


# ---- encoder ---------------------------------------------------------------------------------


def choose_rate(bits: float, rows: int, cols: int, d: int, gain_bits: int):
    """(pulses K, shape_bits) meeting the tensor's budget of floor(bits * rows * cols) bits,
    side information (row scales, gain table) included; K = 0 if impossible."""
    groups = rows * groups_per_row(cols, d)
    side = 16 * rows + 32 * (1 << gain_bits)
    per_group = (math.floor(bits * rows * cols) - side) // groups
    k = enumeration.max_k_for_bits(d, min(per_group - gain_bits, MAX_INDEX_BITS))
    return min(k, MAX_PULSES)


def optimal_gains(x, yf, w=None):
    """The gain g minimizing sum w (x - g y/|y|)^2 for each group (normalized units)."""
    if w is None:
        return np.einsum("gi,gi->g", x, yf) / np.sqrt(np.einsum("gi,gi->g", yf, yf))
    # Weighted optimum: |y| (x.Wy) / (y.Wy).
    ny = np.sqrt(np.einsum("gi,gi->g", yf, yf))
    den = np.einsum("gi,gi,gi->g", w, yf, yf)
    return np.where(den > 0, ny * np.einsum("gi,gi,gi->g", w, x, yf) / np.where(den > 0, den, 1), 0.0)


def _quantize_groups(x, w, k, gb, kind, n, sample_weight):
    """Search shapes, design gains; returns (y, levels, q, weighted squared error) in normalized units."""
    d = x.shape[1]
    y = pvq_search(x, k, w)
    yf = y.astype(np.float64)
    gstar = optimal_gains(x, yf, w)
    levels = gain.design_levels(kind, gb, d, n, gstar, sample_weight)
    q = gain.nearest_level(gstar, levels)
    recon = (levels[q] / np.sqrt(np.einsum("gi,gi->g", yf, yf)))[:, None] * yf
    err = (x - recon) ** 2
    if w is not None:
        err = err * w
    err = err.sum(1)
    if sample_weight is not None:
        err = err * sample_weight
    return y, levels, q, float(err.sum())


def normalize_groups(wp: np.ndarray, d: int, weighting=None):
    """Row scales and normalized groups (also used by the pvqvr codec).

    Returns (sigma, scales16, x, w, group_weight): the tensor RMS, the float16 row scales
    s_r = rms(row r) / sigma, the groups of W' / (s_r sigma) (zero for rows of scale 0),
    the weighting cut into groups (None without one; padding weight 1) and each group's
    error weight s_r^2 (normalized squared error times s_r^2 sigma^2 is the real one)."""
    rows, cols = wp.shape
    gpr = groups_per_row(cols, d)
    sigma = float(np.sqrt(np.mean(wp * wp))) if wp.size else 0.0
    row_rms = np.sqrt(np.mean(wp * wp, axis=1))
    rel = row_rms / sigma if sigma > 0 else np.zeros(rows)
    scales16 = np.minimum(rel, 65504.0).astype(np.float16)
    scales = scales16.astype(np.float32).astype(np.float64)
    unit = scales * sigma  # per-row normalizer: decoded value = scale_r * G / |y| * y
    safe = np.where(unit > 0, unit, 1.0)
    x = group_view(wp / safe[:, None], d)
    x[np.repeat(unit == 0, gpr)] = 0.0
    w = None if weighting is None else group_view(np.broadcast_to(np.asarray(weighting, np.float64), wp.shape), d, fill=1.0)
    group_weight = np.repeat(scales * scales, gpr)
    return sigma, scales16, x, w, group_weight


def encode_pvq(wp: np.ndarray, options: dict, weighting=None) -> Encoded:
    wp = np.asarray(wp, np.float64)
    rows, cols = wp.shape
    bits = float(options["bits"])
    d = min(int(options.get("group_size") or DEFAULT_GROUP_SIZE), cols)
    kind = options.get("gain_quantizer") or "empirical"
    if not 1 <= d <= MAX_GROUP_SIZE:
        raise InputError(f"--group-size must be in 1..{MAX_GROUP_SIZE}, got {d}")
    sigma, scales16, x, w, group_weight = normalize_groups(wp, d, weighting)

    # The rate split: try each gain width, keep the one with the least error on a sample.
    if options.get("gain_bits") is not None:
        candidates = [int(options["gain_bits"])]
        if not 0 <= candidates[0] <= MAX_GAIN_BITS:
            raise InputError(f"--gain-bits must be in 0..{MAX_GAIN_BITS}, got {candidates[0]}")
    else:
        candidates = list(range(0, MAX_GAIN_BITS + 1))
    rated = [(gb, choose_rate(bits, rows, cols, d, gb)) for gb in candidates]
    rated = [(gb, k) for gb, k in rated if k >= 1]
    if not rated:
        # Too small a budget for the side information: fall back to the plain per-group
        # budget (the tensor will exceed the target rate; the summary reports it).
        for gb in candidates:
            k = enumeration.max_k_for_bits(d, math.floor(bits * d) - gb)
            if k >= 1:
                rated = [(gb, k)]
                break
    if not rated:
        raise InputError(f"{bits} bits per weight is too few for pvq with group size {d}")
    if len(rated) > 1:
        n_groups = x.shape[0]
        step = max(1, n_groups // SAMPLE_GROUPS)
        sl = slice(0, n_groups, step)
        xs, ws, gw = x[sl], (None if w is None else w[sl]), group_weight[sl]
        scored = [(_quantize_groups(xs, ws, k, gb, kind, cols, gw)[3], gb, k) for gb, k in rated]
        _, gb, k = min(scored)
    else:
        gb, k = rated[0]

    y, levels, q, _ = _quantize_groups(x, w, k, gb, kind, cols, group_weight)
    table = (levels * sigma).astype(np.float32)
    params = {"group_size": d, "pulses": k, "gain_bits": gb, "gain_table": table}
    streams = [
        scales16.view(np.uint16),
        q.astype(np.uint16 if gb > 8 else np.uint8),
        enumeration.encode_indices(y, k),
    ]
    return Encoded(params, streams, {"group_size": d, "pulses": k, "gain_bits": gb})


class PVQBlockQuantizer(BlockQuantizer):
    """Blocks of one group per row (width D), with the row scales, K, gain width and gain
    table of a data-free encoding fixed; each block runs the same pulse search and takes
    the stored gain nearest to the group's optimal one."""

    def __init__(self, wp, free: Encoded):
        p = free.params
        self.d, self.k, self.gb = p["group_size"], p["pulses"], p["gain_bits"]
        self.table = np.asarray(p["gain_table"], np.float32)
        self.scales16 = np.asarray(free.streams[0], np.uint16).view(np.float16)
        self.rows = wp.shape[0]
        sigma = float(np.sqrt(np.mean(wp * wp))) if wp.size else 0.0
        self.unit = self.scales16.astype(np.float32).astype(np.float64) * sigma
        self.sigma = sigma
        self.width = self.d

    def quantize(self, k, X, weight=None):
        rows, w = X.shape
        d = self.d
        x = np.zeros((rows, d))
        live = self.unit > 0
        x[live, :w] = X[live] / self.unit[live, None]
        wt = None
        if weight is not None:
            wt = np.ones((rows, d))
            wt[:, :w] = np.asarray(weight, np.float64)[None, :]
        y = pvq_search(x, self.k, wt)
        gstar = optimal_gains(x, y.astype(np.float64), wt)
        q = gain.nearest_level(gstar * self.sigma, self.table.astype(np.float64))
        gains = decode_pvq_gains(q, self.table, rows)
        Q = decode_pvq_values(self.scales16.astype(np.float32), gains, y, rows, w, d)
        return np.asarray(Q, np.float64), [q, y]

    def finish(self, codes, scales=None):
        q = np.stack([c[0] for c in codes], axis=1).reshape(-1)
        y = np.stack([c[1] for c in codes], axis=1).reshape(-1, self.d)
        params = {"group_size": self.d, "pulses": self.k, "gain_bits": self.gb, "gain_table": self.table}
        streams = [self.scales16.view(np.uint16), q.astype(np.uint16 if self.gb > 8 else np.uint8),
                   enumeration.encode_indices(y, self.k)]
        return Encoded(params, streams, {"group_size": self.d, "pulses": self.k, "gain_bits": self.gb})
