"""Codec id 7, `eclattice`: entropy-coded E8 lattice (spec codecs/eclattice.md, section 6.8).

Groups of 8 values of a row of W' are points of E8 times `2 half_scale`, stored as doubled
coordinates c (all even: integer coset; all odd: half-integer coset; sum = 0 mod 4) in
eight streams: two bounded row-count streams (6.8.3), then zigzag symbols of c_0, of
c_1..c_6 per coset, and of c_7 per residue class mod 4 (which the lattice's parity check
fixes). Decoded value (6.8.5): x_i = float32(c_i) * half_scale.

The encoder (informative, quantizer.py and encoder.py) chooses points by distortion +
lambda x code length under the streams' tables and searches half_scale for --bits.
"""

import numpy as np
from construct import Array, Float32l, Int8ul, Int64ul, Struct

from ...coding import Bounds, StreamSpec
from ...errors import PayloadCorrupt, ParamsInvalid
from ...params import parse_exact
from .. import Codec, register

GROUP = 8
POSITION_ROW_INT, POSITION_ROW_INT_RES0 = 0, 1
STREAM_NAMES = ("row_int", "row_int_res0", "first", "mid_int", "mid_half", "last_res0", "last_res2", "last_half")


def groups_per_row(cols: int) -> int:
    return -(-cols // GROUP)


def row_count_width(cols: int) -> int:
    """w_r: the number of bits of G_r (spec 6.8.3)."""
    return int(groups_per_row(cols)).bit_length()


@register
class EclatticeCodec(Codec):
    id = 7
    name = "eclattice"
    since_minor = 2
    rans_chunk_symbols = 262144  # 2^18: lane states cost 0.004 bits/weight at 2 bits (bench/RESULTS.md)
    params_struct = Struct(
        "half_scale" / Float32l,
        "flags" / Int8ul,
        "reserved" / Array(3, Int8ul),
        "int_groups" / Int64ul,
        "int_res0_groups" / Int64ul,
    )

    # ---- format (spec 6.8.1, 6.8.3) -----------------------------------------------------------

    def parse_params(self, raw, rows, cols, dtype):
        p = parse_exact(self.params_struct, raw, "eclattice codec")
        hs = np.float32(p["half_scale"])
        if not (np.isfinite(hs) and hs > 0):
            raise ParamsInvalid(f"eclattice half_scale {float(hs)!r} is not a finite value > 0")
        if p["flags"]:
            raise ParamsInvalid(f"eclattice flags 0x{p['flags']:02x}: no flag is defined, must be 0")
        if any(p["reserved"]):
            raise ParamsInvalid(f"eclattice reserved bytes {bytes(p['reserved']).hex()} must be 0")
        g = rows * groups_per_row(cols)
        if p["int_groups"] > g:
            raise ParamsInvalid(f"eclattice int_groups {p['int_groups']} exceeds the tensor's {g} groups")
        if p["int_res0_groups"] > p["int_groups"]:
            raise ParamsInvalid(f"eclattice int_res0_groups {p['int_res0_groups']} exceeds "
                                f"int_groups {p['int_groups']}")
        return {"half_scale": hs, "int_groups": int(p["int_groups"]), "int_res0_groups": int(p["int_res0_groups"])}

    def build_params(self, params):
        return self.params_struct.build(dict(half_scale=float(np.float32(params["half_scale"])), flags=0,
                                             reserved=[0, 0, 0], int_groups=int(params["int_groups"]),
                                             int_res0_groups=int(params["int_res0_groups"])))

    def streams(self, params, rows, cols, dtype):
        g = rows * groups_per_row(cols)
        ni, n0 = params["int_groups"], params["int_res0_groups"]
        wr = row_count_width(cols)
        counts = (rows, rows, g, 6 * ni, 6 * (g - ni), n0, ni - n0, g - ni)
        widths = (wr, wr) + (16,) * 6
        return [StreamSpec(n, c, w) for n, c, w in zip(STREAM_NAMES, counts, widths)]

    def stream_bounds(self, params, rows, cols, dtype, position, earlier_streams):
        """row_int, row_int_res0: G_r + 1 (6.8.3); the coordinate streams are unbounded."""
        if position in (POSITION_ROW_INT, POSITION_ROW_INT_RES0):
            return Bounds((groups_per_row(cols) + 1,))
        return None

    def describe(self, params):
        return {"name": self.name, "half_scale": float(params["half_scale"]), "int_groups": params["int_groups"],
                "int_res0_groups": params["int_res0_groups"]}

    # ---- decoder (spec 6.8.3 - 6.8.5) ---------------------------------------------------------

    def decode(self, params, rows, cols, dtype, streams):
        c = decode_eclattice_points(params, rows, cols, streams)
        return decode_eclattice_values(c, params["half_scale"], rows, cols)

    # ---- encoder ----------------------------------------------------------------------------------

    def encode(self, wp, options, weighting=None):
        from .encoder import encode_eclattice

        return encode_eclattice(wp, options, weighting)

    def block_quantizer(self, wp, options, free):
        from .ldlq import EclatticeBlockQuantizer  # Hessian-aware rounding (issue 9; helper ldlq-ec)

        return EclatticeBlockQuantizer(wp, options, free)


# ---- decode arithmetic: the one place in Python -----------------------------------------------


def unzigzag(s) -> np.ndarray:
    """Spec 6.8.3: 0, 1, 2, 3, 4, .. -> 0, +1, -1, +2, -2, .. (int64)."""
    s = np.asarray(s, np.int64)
    return np.where(s & 1, (s + 1) >> 1, -(s >> 1))


def check_eclattice_row_counts(params, rows, cols, row_int, row_res0) -> None:
    """Spec 6.8.3 check 1 (and the bounds G_r + 1 of streams 0 and 1)."""
    gr = groups_per_row(cols)
    for name, v in (("row_int", row_int), ("row_int_res0", row_res0)):
        if v.size and int(v.max()) > gr:
            r = int(np.argmax(v > gr))
            raise PayloadCorrupt(f"eclattice {name} of row {r} is {int(v[r])}, above the row's {gr} groups")
    if int(row_int.sum()) != params["int_groups"]:
        raise PayloadCorrupt(f"eclattice row_int sums to {int(row_int.sum())}, int_groups is {params['int_groups']}")
    if int(row_res0.sum()) != params["int_res0_groups"]:
        raise PayloadCorrupt(f"eclattice row_int_res0 sums to {int(row_res0.sum())}, "
                             f"int_res0_groups is {params['int_res0_groups']}")
    bad = np.flatnonzero(row_res0 > row_int)
    if bad.size:
        r = int(bad[0])
        raise PayloadCorrupt(f"eclattice row {r}: {int(row_res0[r])} residue-0 groups "
                             f"but {int(row_int[r])} integer groups")


def decode_eclattice_points(params, rows, cols, streams) -> np.ndarray:
    """Spec 6.8.3 checks and 6.8.4: the doubled coordinates c (G, 8) int64 of every group."""
    gr = groups_per_row(cols)
    g = rows * gr
    row_int = np.asarray(streams[0], np.int64).reshape(rows)
    row_res0 = np.asarray(streams[1], np.int64).reshape(rows)
    check_eclattice_row_counts(params, rows, cols, row_int, row_res0)
    c = np.empty((g, GROUP), np.int64)
    # 1. c_0 and the coset; check 2
    c[:, 0] = unzigzag(streams[2])
    is_int = (c[:, 0] & 1) == 0
    got = is_int.reshape(rows, gr).sum(axis=1)
    bad = np.flatnonzero(got != row_int)
    if bad.size:
        r = int(bad[0])
        raise PayloadCorrupt(f"eclattice row {r}: {int(got[r])} groups with an even c_0, "
                             f"row_int says {int(row_int[r])}")
    # 2. c_1 .. c_6 (streams consumed in group order: boolean masks keep that order)
    c[is_int, 1:7] = 2 * unzigzag(streams[3]).reshape(-1, 6)
    c[~is_int, 1:7] = 2 * unzigzag(streams[4]).reshape(-1, 6) + 1
    # 3. the residue of c_7; check 3
    r = (-c[:, :7].sum(axis=1)) & 3  # exact: |sum| < 2^20; & 3 is the residue mod 4 of a negative too
    res0 = r == 0
    got = res0.reshape(rows, gr).sum(axis=1)
    bad = np.flatnonzero(got != row_res0)
    if bad.size:
        q = int(bad[0])
        raise PayloadCorrupt(f"eclattice row {q}: {int(got[q])} integer groups of residue 0, "
                             f"row_int_res0 says {int(row_res0[q])}")
    # 4. c_7
    c[res0, 7] = 4 * unzigzag(streams[5])
    c[r == 2, 7] = 4 * unzigzag(streams[6]) + 2
    half = ~is_int
    v = 4 * unzigzag(streams[7]) + 1
    c[half, 7] = np.where(r[half] == 1, v, -v)
    return c


def decode_eclattice_values(c, half_scale, rows, cols) -> np.ndarray:
    """Spec 6.8.5: x_i = float32(c_i) * half_scale (one float32 multiplication), padding dropped."""
    x = c.astype(np.float32) * np.float32(half_scale)
    return np.ascontiguousarray(x.reshape(rows, -1)[:, :cols])
