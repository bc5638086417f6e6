"""Codec id 6, `ectcq`: entropy-constrained trellis-coded quantization (spec
codecs/ectcq.md, section 6.7, since 1.2).

Each row of W' is one path through Ungerboeck's 2^v-state trellis from state 0: the
state's union (its low bit) says whether the next grid index j is even (A_0) or odd
(A_1), and j's subset bit (j mod 4) div 2 picks the next state. Three streams:
`row_a0` (each row's number of A_0 values, in count_bits = the bit length of cols, bounded
by cols + 1), `a0` and `a1`
(the union symbols s = j - 1 for j > 0, -j for j <= 0, of each union's values, 16 bits,
for the rans table mode). Decoded value: that of the ecsq codec (6.6.4) for |j| and the
sign of j.

The encoder (informative, encoder.py) runs the entropy-constrained Lloyd iteration around
a rate-distortion Viterbi search and searches the step for the coded --bits.
"""

import numpy as np
from construct import Array, Float32l, Int8ul, Int16ul, Int64ul, Struct, this
from numba import njit, prange

from ...coding import Bounds, StreamSpec
from ...errors import InputError, ParamsInvalid, PayloadCorrupt
from ...params import parse_exact
from .. import Codec, register
from ..ecsq import decode_ecsq_values
from .trellis import STATE_BITS, trellis_tables

MAX_OFFSETS = 65535
VALUE_BLOCK = 1 << 16  # values per block of the decoder's float arithmetic (4 to 6 times faster than whole tensors)
POSITION_ROW_A0 = 0


@register
class EctcqCodec(Codec):
    id = 6
    name = "ectcq"
    since_minor = 2
    # 2^20 symbols per rans chunk: 32 lane states cost 0.001 bit per symbol; the 2-bit
    # target (0.066) leaves under 0.008 bit per weight for all the coding stores (6.7.7).
    rans_chunk_symbols = 1 << 20
    params_struct = Struct(
        "step" / Float32l,
        "state_bits" / Int8ul,
        "flags" / Int8ul,
        "offset_count" / Int16ul,
        "a0_count" / Int64ul,
        "offsets" / Array(this.offset_count, Float32l),
    )

    # ---- format (spec 6.7.1, 6.7.3) -------------------------------------------------------------

    def parse_params(self, raw, rows, cols, dtype):
        p = parse_exact(self.params_struct, raw, "ectcq codec")
        step = np.float32(p["step"])
        if not (np.isfinite(step) and step > 0):
            raise ParamsInvalid(f"ectcq step {float(step)!r} is not a finite value > 0")
        v = int(p["state_bits"])
        if v not in STATE_BITS:
            raise ParamsInvalid(f"ectcq state_bits {v} outside {STATE_BITS.start}..{STATE_BITS.stop - 1}")
        if p["flags"]:
            raise ParamsInvalid(f"ectcq flags 0x{p['flags']:02x}: no flag is defined, must be 0")
        a0 = int(p["a0_count"])
        if a0 > rows * cols:
            raise ParamsInvalid(f"ectcq a0_count {a0} exceeds rows * cols = {rows * cols}")
        offsets = np.array(p["offsets"], np.float32)
        if not np.all(np.isfinite(offsets)):
            raise ParamsInvalid(f"ectcq offset {int(np.flatnonzero(~np.isfinite(offsets))[0])} is not finite")
        return {"step": step, "state_bits": v, "a0_count": a0, "offsets": offsets}

    def build_params(self, params):
        offsets = np.asarray(params["offsets"], np.float32)
        if offsets.size > MAX_OFFSETS:
            raise ValueError(f"ectcq: at most {MAX_OFFSETS} offsets")
        return self.params_struct.build(dict(step=float(np.float32(params["step"])), state_bits=int(params["state_bits"]),
                                             flags=0, offset_count=int(offsets.size), a0_count=int(params["a0_count"]),
                                             offsets=[float(v) for v in offsets]))

    def streams(self, params, rows, cols, dtype):
        a0 = int(params["a0_count"])
        return [StreamSpec("row_a0", rows, count_bits(cols)), StreamSpec("a0", a0, 16), StreamSpec("a1", rows * cols - a0, 16)]

    def stream_bounds(self, params, rows, cols, dtype, position, earlier_streams):
        """`row_a0`: every bound is cols + 1 (6.7.3)."""
        return Bounds((cols + 1,)) if position == POSITION_ROW_A0 else None

    def describe(self, params):
        return {"name": self.name, "states": 1 << int(params["state_bits"]), "step": float(params["step"]),
                "offset_count": int(params["offsets"].size), "a0_count": int(params["a0_count"])}

    # ---- decoder (spec 6.7.3 to 6.7.6) ----------------------------------------------------------

    def decode(self, params, rows, cols, dtype, streams):
        j = decode_ectcq_grid(streams[0], streams[1], streams[2], params["a0_count"], params["state_bits"], rows, cols)
        out = np.empty((rows, cols), np.float32)
        flat_j, flat_out = j.reshape(-1), out.reshape(-1)
        for a in range(0, flat_j.size, VALUE_BLOCK):  # blocks: the temporaries stay in the cache
            g = flat_j[a : a + VALUE_BLOCK]
            # ecsq's symbols (6.6.3) of the same magnitudes and signs, for its decoded value (6.6.4)
            zz = 2 * g
            zz -= g > 0
            np.abs(zz, out=zz)
            flat_out[a : a + VALUE_BLOCK] = decode_ecsq_values(zz, params["step"], params["offsets"])
        return out

    # ---- encoder (informative, 6.7.7) -----------------------------------------------------------

    @classmethod
    def add_cli_arguments(cls, group):
        group.add_argument("--ectcq-states", type=int, default=None, metavar="N",
                           help="ectcq: trellis states, a power of two in 8..256 (default 256: the most accurate; "
                                "fewer states encode faster)")

    @classmethod
    def options_from_args(cls, args):
        n = getattr(args, "ectcq_states", None)
        if n is None:
            return {}
        if n < 8 or n > 256 or n & (n - 1):
            raise InputError(f"--ectcq-states must be a power of two in 8..256, got {n}")
        return {"state_bits": n.bit_length() - 1}

    def encode(self, wp, options, weighting=None):
        from .encoder import encode_ectcq

        return encode_ectcq(wp, options, weighting)

    def block_quantizer(self, wp, options, free):
        from .ldlq import EctcqBlockQuantizer  # Hessian-aware rounding (issue 9; helper ldlq-ec)

        return EctcqBlockQuantizer(wp, options, free)


def count_bits(cols: int) -> int:
    """The width of row_a0 (6.7.3): the number of bits of cols, so cols + 1 <= 2^width."""
    return int(cols).bit_length()


# ---- decode arithmetic: the one place in Python -------------------------------------------------


def decode_ectcq_row_a0(row_a0, a0_count: int, cols: int) -> np.ndarray:
    """Spec 6.7.3: the row counts as int64, each at most cols (the stream's bound, which the
    raw coding does not check), summing to a0_count."""
    n0 = np.asarray(row_a0).astype(np.int64, copy=False)
    bad = np.flatnonzero(n0 > cols)
    if bad.size:
        raise PayloadCorrupt(f"ectcq row_a0 of row {int(bad[0])} is {int(n0[bad[0]])} > cols {cols}")
    total = int(n0.sum())  # at most rows * cols <= 2^48: no overflow
    if total != a0_count:
        raise PayloadCorrupt(f"ectcq row_a0 sums to {total}, a0_count is {a0_count}")
    return n0


@njit(cache=True, parallel=True)
def _walk_rows(n0, start0, a0, a1, nxt, cols, out_j, status):
    """Spec 6.7.6 for every row: out_j[r, i] = the grid index; status[r] = -1, or the
    2 * column + union at which row r needs one more symbol of that union than it has."""
    rows = n0.size
    for r in prange(rows):
        s = 0
        k0 = 0
        k1 = 0
        lim0 = n0[r]
        lim1 = cols - n0[r]
        b0 = start0[r]
        b1 = r * cols - start0[r]
        status[r] = -1
        for i in range(cols):
            u = s & 1
            if u == 0:
                if k0 == lim0:
                    status[r] = 2 * i
                    break
                sym = np.int64(a0[b0 + k0])
                k0 += 1
            else:
                if k1 == lim1:
                    status[r] = 2 * i + 1
                    break
                sym = np.int64(a1[b1 + k1])
                k1 += 1
            j = sym + 1 if ((sym + u) & 1) == 1 else -sym  # 6.7.5
            out_j[r, i] = j
            s = nxt[s, (j >> 1) & 1]  # z1 = (j mod 4) div 2, two's complement


def decode_ectcq_grid(row_a0, a0, a1, a0_count: int, state_bits: int, rows: int, cols: int) -> np.ndarray:
    """Spec 6.7.3 to 6.7.6: the grid index j (int32, rows x cols) of every value, rows
    walked through the trellis independently; PayloadCorrupt names the first bad row."""
    n0 = decode_ectcq_row_a0(row_a0, a0_count, cols)
    start0 = np.concatenate([[0], np.cumsum(n0)[:-1]]).astype(np.int64)
    nxt, _ = trellis_tables(state_bits)
    out = np.empty((rows, cols), np.int32)  # |j| <= 65536
    status = np.empty(rows, np.int64)
    _walk_rows(n0, start0, np.asarray(a0), np.asarray(a1), nxt, cols, out, status)
    bad = np.flatnonzero(status >= 0)
    if bad.size:
        r = int(bad[0])
        col, u = divmod(int(status[r]), 2)
        have = int(n0[r]) if u == 0 else cols - int(n0[r])
        raise PayloadCorrupt(f"ectcq row {r} takes more than its {have} A_{u} symbols (row_a0 = {int(n0[r])}) "
                             f"at column {col}")
    return out
