"""The computed codes of the trellis codec (spec codecs/trellis.md, section 6.3.6).

A code maps an L-bit trellis state s (0 <= s < 2^L, L <= 16) to V code values,
exactly defined in float32. Each code is QTIP's (Tseng et al., NeurIPS 2024,
arXiv 2406.11235, section 3.1 and appendix), with the arithmetic mod 2^32 on
the state taken as an unsigned 32-bit integer:

  1MAD  (V = 1)  x = (34038481 * s + 76625530) mod 2^32
                 c = float32(byte0(x) + byte1(x) + byte2(x) + byte3(x) - 510)
                 an integer in [-510, 510]. QTIP divides by 147.800537109375
                 (the standard deviation of a sum of four uniform bytes); here
                 the divisor is folded into the tensor's scale, so decoding is a
                 single multiply.
  3INST (V = 1)  x = (89226354 * s + 64248484) mod 2^32
                 r = (x AND 0x8FFF8FFF) XOR 0x3B603B60
                 c = float32(float16(f16(r >> 16) + f16(r AND 0xFFFF)))
                 where f16(u) reads u as an IEEE binary16 bit pattern. Both halves
                 have exponents in [-3, 0], so their float32 sum is exact and the
                 one rounding is to binary16 (round to nearest, ties to even):
                 QTIP's half-precision add.
  HYB   (V = 2)  x = (s * s + s) mod 2^32
                 i = (x >> 6) AND 511               (Q = 9 bits: 6..14)
                 c0 = T[i][0], negated if bit 15 of x is set
                 c1 = T[i][1]
                 with T the spec's 512 x 2 float16 table (hyb_table.py).
                 QTIP's code negates the first element (its paper says the
                 second); we follow the code.

The functions here are the decoder's arithmetic (numpy, vectorized over an
array of states) and are also used to build the encoder's lookup tables.
"""

import numpy as np

from .hyb_table import HYB_TABLE_BITS

CODE_1MAD = 0
CODE_3INST = 1
CODE_HYB = 2
CODE_NAMES = {CODE_1MAD: "1mad", CODE_3INST: "3inst", CODE_HYB: "hyb"}
CODE_IDS = {v: k for k, v in CODE_NAMES.items()}
CODE_V = {CODE_1MAD: 1, CODE_3INST: 1, CODE_HYB: 2}  # values per trellis step

MASK32 = 0xFFFFFFFF
MAD_MUL, MAD_ADD, MAD_CENTER = 34038481, 76625530, 510
MAD_STD = 147.800537109375  # informative: std of the byte sum, folded into the scale
INST_MUL, INST_ADD = 89226354, 64248484
INST_MASK, INST_XOR = 0x8FFF8FFF, 0x3B603B60
HYB_Q = 9
HYB_SHIFT = 15 - HYB_Q  # 6
HYB_SIGN_BIT = 15


def hyb_table() -> np.ndarray:
    """The HYB table T as float32 (512 x 2), widened exactly from its float16 bit patterns."""
    return np.asarray(HYB_TABLE_BITS, np.uint16).reshape(1 << HYB_Q, 2).view(np.float16).astype(np.float32)


def _u32(states) -> np.ndarray:
    return np.asarray(states, np.uint64) & np.uint64(MASK32)


def code_1mad(states) -> np.ndarray:
    """(n, 1) float32: the centred byte sum of one LCG step."""
    x = (_u32(states) * np.uint64(MAD_MUL) + np.uint64(MAD_ADD)) & np.uint64(MASK32)
    b = np.uint64(0xFF)
    s = (x & b) + ((x >> np.uint64(8)) & b) + ((x >> np.uint64(16)) & b) + (x >> np.uint64(24))
    return (s.astype(np.int64) - MAD_CENTER).astype(np.float32)[:, None]


def code_3inst(states) -> np.ndarray:
    """(n, 1) float32: the binary16 sum of two masked halves of one LCG step."""
    x = (_u32(states) * np.uint64(INST_MUL) + np.uint64(INST_ADD)) & np.uint64(MASK32)
    r = (x & np.uint64(INST_MASK)) ^ np.uint64(INST_XOR)
    hi = (r >> np.uint64(16)).astype(np.uint16).view(np.float16).astype(np.float32)
    lo = (r & np.uint64(0xFFFF)).astype(np.uint16).view(np.float16).astype(np.float32)
    return (hi + lo).astype(np.float16).astype(np.float32)[:, None]  # exact sum, one rounding


def code_hyb(states, table=None) -> np.ndarray:
    """(n, 2) float32: a hashed row of the table, its first element's sign from bit 15."""
    t = hyb_table() if table is None else np.asarray(table, np.float32)
    x = (_u32(states) * _u32(states) + _u32(states)) & np.uint64(MASK32)
    idx = ((x >> np.uint64(HYB_SHIFT)) & np.uint64((1 << HYB_Q) - 1)).astype(np.int64)
    neg = ((x >> np.uint64(HYB_SIGN_BIT)) & np.uint64(1)).astype(bool)
    out = t[idx].copy()
    out[neg, 0] = -out[neg, 0]
    return out


def code_values(code: int, states, table=None) -> np.ndarray:
    """(n, V) float32 code values of an array of states."""
    if code == CODE_1MAD:
        return code_1mad(states)
    if code == CODE_3INST:
        return code_3inst(states)
    if code == CODE_HYB:
        return code_hyb(states, table)
    raise ValueError(f"unknown trellis code {code}")


def code_lut(code: int, L: int, table=None) -> np.ndarray:
    """(V, 2^L) float32: the code values of every state, the encoder's and decoder's table."""
    return np.ascontiguousarray(code_values(code, np.arange(1 << L, dtype=np.uint64), table).T)


def code_rms(code: int, L: int, table=None) -> float:
    """RMS of the code values over all 2^L states (uniformly weighted), in float64."""
    lut = code_lut(code, L, table).astype(np.float64)
    return float(np.sqrt(np.mean(lut * lut)))
