"""Codec id 4, `pvqvr`: PVQ with a pulse count per group (spec codecs/pvqvr.md, 6.5).

Each group of D values of a row has a gain index, a pulse index p_g selecting its pulse
count K_g = k_values[p_g] from the parameter block's table, and a shape index below
N(D, K_g) (the PVQ enumeration; K_g = 0 is the all-zero group). The shapes stream is
bounded by N(D, K_g), so the rans coding's uniform mode spends log2 N(D, K_g) bits on a
group: exact fractional rates, and the encoder chooses each K_g by rate-distortion
optimization. Decoded values are those of the pvq codec (6.2.5), +0.0 where K_g = 0.
"""

import math

import numpy as np
from construct import Array, Bytes, Int8ul, Int16ul, Struct

from ...coding import Bounds, StreamSpec
from ...errors import ParamsInvalid, PayloadCorrupt
from ...params import parse_exact
from .. import Codec, register
from ..pvq import decode_pvq_gains, decode_pvq_values, enumeration, groups_per_row
from ..rows import decode_row_scales
from . import encoder, rate

MAX_GROUP_SIZE = 256
MAX_K_COUNT = 256
MAX_PULSES = 4096
MAX_GAIN_BITS = 8
MAX_INDEX_BITS = 1024
POSITION_PULSES = 2
POSITION_SHAPES = 3


def pulse_bits(k_count: int) -> int:
    return (k_count - 1).bit_length()


@register
class PVQVRCodec(Codec):
    id = 4
    name = "pvqvr"
    since_minor = 1  # added in format 1.1 (a file using it has version_minor >= 1, spec 2.1)
    params_struct = Struct(
        "group_size" / Int16ul,
        "k_count" / Int16ul,
        "k_values" / Array(lambda ctx: ctx.k_count if ctx.k_count <= MAX_K_COUNT else 0, Int16ul),
        "gain_bits" / Int8ul,
        "gain_table" / Bytes(lambda ctx: 4 << ctx.gain_bits if ctx.gain_bits <= MAX_GAIN_BITS else 0),
    )

    # ---- format (6.5.1, 6.5.3) -----------------------------------------------------------

    def parse_params(self, raw, rows, cols, dtype):
        p = parse_exact(self.params_struct, raw, "pvqvr codec")
        d, kc, gb = p["group_size"], p["k_count"], p["gain_bits"]
        kv = [int(k) for k in p["k_values"]]
        if not 1 <= d <= MAX_GROUP_SIZE:
            raise ParamsInvalid(f"pvqvr group_size {d} outside 1..{MAX_GROUP_SIZE}")
        if not 1 <= kc <= MAX_K_COUNT:
            raise ParamsInvalid(f"pvqvr k_count {kc} outside 1..{MAX_K_COUNT}")
        if any(k > MAX_PULSES for k in kv):
            raise ParamsInvalid(f"pvqvr k_values hold a pulse count above {MAX_PULSES}")
        if any(b <= a for a, b in zip(kv, kv[1:])):
            raise ParamsInvalid("pvqvr k_values are not strictly increasing")
        if kv[-1] and enumeration.index_bits(d, kv[-1]) > MAX_INDEX_BITS:
            raise ParamsInvalid(f"pvqvr index of N({d}, {kv[-1]}) needs more than {MAX_INDEX_BITS} bits")
        if gb > MAX_GAIN_BITS:
            raise ParamsInvalid(f"pvqvr gain_bits {gb} exceeds {MAX_GAIN_BITS}")
        table = np.frombuffer(p["gain_table"], dtype="<f4").astype(np.float32)
        if not np.all(np.isfinite(table)):
            raise ParamsInvalid("pvqvr gain_table holds a non-finite value")
        p["k_values"] = kv
        p["gain_table"] = table
        return p

    def build_params(self, params):
        kv = [int(k) for k in params["k_values"]]
        return self.params_struct.build(
            dict(
                group_size=params["group_size"],
                k_count=len(kv),
                k_values=kv,
                gain_bits=params["gain_bits"],
                gain_table=np.asarray(params["gain_table"], "<f4").tobytes(),
            )
        )

    def streams(self, params, rows, cols, dtype):
        d, kv = params["group_size"], params["k_values"]
        groups = rows * groups_per_row(cols, d)
        return [
            StreamSpec("row_scales", rows, 16),
            StreamSpec("gains", groups, params["gain_bits"]),
            StreamSpec("pulses", groups, pulse_bits(len(kv))),
            StreamSpec("shapes", groups, rate.index_bits0(d, kv[-1])),
        ]

    def stream_bounds(self, params, rows, cols, dtype, position, earlier_streams):
        """`pulses`: k_count; `shapes`: N(D, K_g) with K_g = k_values[p_g] (6.5.3)."""
        kv = params["k_values"]
        if position == POSITION_PULSES:
            return Bounds((len(kv),))
        if position == POSITION_SHAPES:
            p = decode_pvqvr_pulses(earlier_streams[POSITION_PULSES], len(kv))
            d = params["group_size"]
            return Bounds(tuple(rate.pvq_count0(d, k) for k in kv), p.astype(np.uint8 if len(kv) <= 256 else np.uint16))
        return None

    def describe(self, params):
        d, kv = params["group_size"], params["k_values"]
        return {
            "name": self.name,
            "group_size": d,
            "k_values": list(kv),
            "gain_bits": params["gain_bits"],
            "shape_bits": rate.index_bits0(d, kv[-1]),
            "log2_N": [round(math.log2(rate.pvq_count0(d, k)), 3) for k in kv],
        }

    # ---- decoder (6.5.4, 6.5.5) ------------------------------------------------------------

    def decode(self, params, rows, cols, dtype, streams):
        d, kv = params["group_size"], params["k_values"]
        groups = rows * groups_per_row(cols, d)
        scales = decode_row_scales(streams[0], "pvqvr")
        gains = decode_pvq_gains(streams[1], params["gain_table"], groups)
        p = decode_pvqvr_pulses(streams[2], len(kv))
        y = decode_pvqvr_shapes(streams[3], d, kv, p)
        with np.errstate(divide="ignore", invalid="ignore"):  # K_g = 0 groups: 0/0, replaced below
            x = decode_pvq_values(scales, gains, y, rows, cols, d)
        zero = np.asarray(kv)[p] == 0
        if zero.any():
            gpr = groups_per_row(cols, d)
            mask = np.repeat(zero.reshape(rows, gpr), d, axis=1)[:, :cols]
            x[mask] = np.float32(0.0)
        return x

    # ---- encoder (6.5.6, informative) ------------------------------------------------------

    @classmethod
    def add_cli_arguments(cls, group):
        # --group-size and --gain-bits are the pvq codec's options; pvqvr reads them too.
        group.add_argument("--vr-k-count", type=int, default=None, metavar="N",
                           help=f"pvqvr: pulse counts in the per-group table, 1..{MAX_K_COUNT} (default "
                                f"{encoder.DEFAULT_K_COUNT}, or one K where that measures better: small tensors)")
        group.add_argument("--vr-k-span", type=float, default=None, metavar="BITS",
                           help="pvqvr: the table's shape costs span the fixed-rate cost +- BITS per group "
                                f"(default {encoder.DEFAULT_K_SPAN:g})")
        group.add_argument("--vr-k-values", type=int, nargs="+", default=None, metavar="K",
                           help="pvqvr: the table of pulse counts itself (distinct, 0..4096; overrides the two above)")
        group.add_argument("--vr-zero-groups", action="store_true",
                           help="pvqvr: allow K = 0 (all-zero groups) in the table")
        group.add_argument("--vr-fixed", action="store_true",
                           help="pvqvr: one pulse count for every group (fixed K at the exact fractional rate)")

    @classmethod
    def options_from_args(cls, args):
        return {
            "group_size": getattr(args, "group_size", None),
            "gain_bits": getattr(args, "gain_bits", None),
            "k_count": args.vr_k_count,
            "k_span": args.vr_k_span,
            "k_values": args.vr_k_values,
            "zero_groups": args.vr_zero_groups,
            "fixed": args.vr_fixed,
        }

    def encode(self, wp, options, weighting=None):
        return encoder.encode_pvqvr(wp, options, weighting)

    def block_quantizer(self, wp, options, free):
        from .ldlq import PVQVRBlockQuantizer  # Hessian-aware rounding (issue 9)

        return PVQVRBlockQuantizer(wp, options, free)


# ---- decode steps: the one place in Python ----------------------------------------------------


def decode_pvqvr_pulses(sym, k_count: int) -> np.ndarray:
    """Pulse indices p_g as int64; p_g >= k_count is corrupt (6.5.3)."""
    p = np.asarray(sym).astype(np.int64, copy=False)
    bad = np.flatnonzero(p >= k_count)
    if bad.size:
        raise PayloadCorrupt(f"pvqvr pulse index of group {int(bad[0])} is {int(p[bad[0]])} >= k_count {k_count}")
    return p


def decode_pvqvr_shapes(sym, d: int, k_values, p: np.ndarray) -> np.ndarray:
    """Shapes y (int32, groups x d) from the shape indices (6.5.4); b_g >= N(D, K_g) is corrupt."""
    groups = p.size
    idx = np.asarray(sym, np.uint64).reshape(groups, -1)
    y = np.zeros((groups, d), np.int32)
    for j in np.unique(p):
        k = int(k_values[j])
        sel = np.flatnonzero(p == j)
        limbs = enumeration.n_limbs(d, k) if k else 0
        high = np.flatnonzero(np.any(idx[sel, limbs:] != 0, axis=1)) if limbs < idx.shape[1] else []
        if len(high):
            g = int(sel[high[0]])
            raise PayloadCorrupt(f"pvqvr shape index of group {g} is >= N({d}, {k})")
        if k == 0:
            continue
        try:
            y[sel] = enumeration.decode_indices(np.ascontiguousarray(idx[sel, :limbs]), d, k)
        except PayloadCorrupt:
            n = rate.pvq_count0(d, k)
            g = next(int(g) for g in sel if _limbs_int(idx[g]) >= n)
            raise PayloadCorrupt(f"pvqvr shape index of group {g} is >= N({d}, {k})") from None
    return y


def _limbs_int(row) -> int:
    return sum(int(v) << (64 * i) for i, v in enumerate(row))
