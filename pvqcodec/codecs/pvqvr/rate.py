"""The coded size of a pvqvr tensor, predicted from symbol counts (encoder side).

The rate control needs the size the `rans` coding will give each stream (spec 4.3)
before anything is coded: table mode costs each symbol its self-information under the
quantized frequency table, uniform mode costs a symbol of bound N exactly
log2(n_top) + s bits (spec 4.3.3) plus at most 0.0001 bit, and both add a header,
a chunk offset table and 32 lane states per chunk. The encoder (`--entropy auto`)
keeps the raw coding where rans does not save 1 percent; so does this model.
Counts may be fractional (a sample's histogram scaled to the tensor).
"""

import math

import numpy as np

from ...coding import rans
from ..pvq import enumeration

# Upper bounds of what the model leaves out, per symbol and per chunk: the even()
# operation's excess (4.3.3) and the flushed states' partly used high bits.
UNIFORM_EXCESS_BITS = 0.0001
TABLE_EXCESS_BITS = 0.003
AUTO_SAVING = 0.99  # rans is used where it is at most 99 percent of the raw size


def pvq_count0(d: int, k: int) -> int:
    """N(D, K) with N(D, 0) = 1 (spec 6.5.1)."""
    return 1 if k == 0 else enumeration.pvq_count(d, k)


def index_bits0(d: int, k: int) -> int:
    return 0 if k == 0 else enumeration.index_bits(d, k)


def uniform_symbol_bits(n: int) -> float:
    """Bits the uniform mode spends on a symbol of bound n (spec 4.3.3), without the excess."""
    b = (n - 1).bit_length()
    if b <= 8:
        return math.log2(n) if n > 1 else 0.0
    s = b - 8
    n_top = ((n - 1) >> s) + 1
    return math.log2(n_top) + s


def shape_bits(d: int, k_values) -> np.ndarray:
    """The uniform-mode cost of a shape for each pulse count of the table."""
    return np.array([uniform_symbol_bits(pvq_count0(d, k)) + (UNIFORM_EXCESS_BITS if k else 0.0)
                     for k in k_values])


def _chunks(count: int) -> int:
    return -(-count // rans.DEFAULT_CHUNK_SYMBOLS)


def _rans_frame_bits(count: int, alphabet: int) -> float:
    """Header, frequency table, offsets and lane states of a rans payload."""
    chunks = _chunks(count)
    head = rans.align8(rans.HEADER_SIZE + 2 * alphabet) + 8 * chunks
    return 8.0 * head + chunks * 32 * 32


def table_mode_bits(counts: np.ndarray) -> float:
    """Predicted size in bits of a table-mode payload with these (possibly scaled) counts."""
    counts = np.asarray(counts, np.float64)
    total = float(counts.sum())
    if total == 0:
        return 8.0 * rans.HEADER_SIZE
    alphabet = int(np.flatnonzero(counts > 0)[-1]) + 1
    icounts = np.maximum(np.rint(counts[:alphabet]), (counts[:alphabet] > 0).astype(np.float64)).astype(np.int64)
    p = rans.DEFAULT_PRECISION  # the encoder may choose a larger P only where it is smaller
    freq = rans.quantize_frequencies(icounts, p)
    nz = counts[:alphabet] > 0
    ideal = float(np.sum(counts[:alphabet][nz] * (p - np.log2(freq[nz]))))
    return ideal + TABLE_EXCESS_BITS * total + _rans_frame_bits(int(round(total)), alphabet)


def uniform_mode_bits(sum_bits: float, count: int) -> float:
    return sum_bits + _rans_frame_bits(count, 0)


def auto_bits(raw_bits: float, coded_bits: float) -> float:
    """The size `--entropy auto` gives a stream: rans only where it saves 1 percent."""
    return coded_bits if coded_bits <= AUTO_SAVING * raw_bits else raw_bits


def params_bytes(k_count: int, gain_bits: int) -> int:
    return 5 + 2 * k_count + 4 * (1 << gain_bits)


class SizeModel:
    """Bits of a tensor (rows x cols, group size d) for a given table and gain width, as a
    function of the pulse-index and gain-index histograms (spec 6.5.3's four streams)."""

    TRANSFORM_PARAMS_BITS = 8 * 16  # the rht parameter block, counted in the file's rate

    def __init__(self, rows: int, cols: int, d: int, k_values, gain_bits: int):
        self.groups = rows * (-(-cols // d))
        self.k_values = list(k_values)
        self.gain_bits = gain_bits
        self.shape_cost = shape_bits(d, self.k_values)
        self.pulse_bits = (len(self.k_values) - 1).bit_length()
        self.shape_width = index_bits0(d, self.k_values[-1])
        self.fixed = 8.0 * params_bytes(len(self.k_values), gain_bits) + self.TRANSFORM_PARAMS_BITS + 16.0 * rows

    def bits(self, pulse_hist: np.ndarray, gain_hist: np.ndarray) -> float:
        g = self.groups
        gains = auto_bits(g * self.gain_bits, table_mode_bits(gain_hist)) if self.gain_bits else 0.0
        pulses = auto_bits(g * self.pulse_bits, table_mode_bits(pulse_hist)) if self.pulse_bits else 0.0
        shapes = auto_bits(g * self.shape_width,
                           uniform_mode_bits(float(np.dot(pulse_hist, self.shape_cost)), g)) if self.shape_width else 0.0
        return self.fixed + gains + pulses + shapes
