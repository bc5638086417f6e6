"""The trellis codes' arithmetic (spec codecs/trellis.md 6.3.6) against an independent
implementation in plain Python integers and struct's binary16, over every 16-bit state,
and the spec's worked example."""

import hashlib
import struct

import numpy as np
import pytest

from pvqcodec.codecs.trellis import codes, design
from pvqcodec.codecs.trellis.hyb_table import HYB_TABLE_BITS

M32 = 0xFFFFFFFF


def f16(bits: int) -> float:
    return struct.unpack("<e", struct.pack("<H", bits))[0]


def to_f16(value: float) -> float:
    """Round a double to binary16, nearest even (struct's packing is correctly rounded)."""
    return struct.unpack("<e", struct.pack("<e", value))[0]


def py_1mad(s: int) -> float:
    x = (34038481 * s + 76625530) & M32
    return float((x & 255) + ((x >> 8) & 255) + ((x >> 16) & 255) + (x >> 24) - 510)


def py_3inst(s: int) -> float:
    x = (89226354 * s + 64248484) & M32
    r = (x & 0x8FFF8FFF) ^ 0x3B603B60
    return to_f16(f16(r >> 16) + f16(r & 0xFFFF))  # the double sum is exact


def py_hyb(s: int):
    x = (s * s + s) & M32
    i = (x >> 6) & 511
    b0, b1 = HYB_TABLE_BITS[2 * i], HYB_TABLE_BITS[2 * i + 1]
    if (x >> 15) & 1:
        b0 ^= 0x8000  # negation flips the sign bit (0 becomes -0)
    return f16(b0), f16(b1)


ALL = np.arange(1 << 16)


def same_bits(a, b):
    return np.array_equal(np.asarray(a, np.float32).view(np.uint32), np.asarray(b, np.float32).view(np.uint32))


def test_1mad_every_state():
    got = codes.code_1mad(ALL)
    assert got.shape == (1 << 16, 1) and got.dtype == np.float32
    assert same_bits(got[:, 0], [py_1mad(int(s)) for s in ALL])


def test_3inst_every_state():
    got = codes.code_3inst(ALL)
    assert got.shape == (1 << 16, 1) and got.dtype == np.float32
    assert same_bits(got[:, 0], [py_3inst(int(s)) for s in ALL])


def test_hyb_every_state():
    got = codes.code_hyb(ALL)
    assert got.shape == (1 << 16, 2) and got.dtype == np.float32
    ref = np.array([py_hyb(int(s)) for s in ALL], np.float32)
    assert same_bits(got, ref)


def test_3inst_sum_is_exact_in_float32():
    """The spec's claim: both halves have exponents in [-3, 0], so their float32 sum is exact
    and the only rounding is to binary16."""
    x = (ALL.astype(np.uint64) * np.uint64(89226354) + np.uint64(64248484)) & np.uint64(M32)
    r = (x & np.uint64(0x8FFF8FFF)) ^ np.uint64(0x3B603B60)
    hi = (r >> np.uint64(16)).astype(np.uint16).view(np.float16)
    lo = (r & np.uint64(0xFFFF)).astype(np.uint16).view(np.float16)
    for h in (hi, lo):
        a = np.abs(h.astype(np.float64))
        assert a.min() >= 0.125 and a.max() < 2.0
    assert np.array_equal(hi.astype(np.float32) + lo.astype(np.float32), hi.astype(np.float64) + lo.astype(np.float64))


# The spec's worked example (6.3.8): state -> (1MAD c, 3INST c bits, HYB c0 bits, c1 bits)
WORKED = [
    (0x0000, -185, 0x3A25, 0x0000, 0xA9A9),
    (0x0001, -124, 0xBB5B, 0x0000, 0xA9A9),
    (0x00B5, -110, 0xB198, 0xB9A1, 0xB34E),
    (0x1234, 224, 0xC066, 0x3865, 0xB99B),
    (0x8000, 224, 0xB7F8, 0x8000, 0xA9A9),
    (0xBEEF, 97, 0x424B, 0x3E3E, 0xA8E0),
    (0xFFFF, 61, 0xB110, 0x0000, 0xA9A9),
]


@pytest.mark.parametrize("s,mad,inst,h0,h1", WORKED)
def test_worked_example(s, mad, inst, h0, h1):
    assert codes.code_1mad([s])[0, 0] == mad
    assert np.float32(codes.code_3inst([s])[0, 0]).astype(np.float16).view(np.uint16) == inst
    c = codes.code_hyb([s])[0].astype(np.float16).view(np.uint16)
    assert (int(c[0]), int(c[1])) == (h0, h1)


def test_code_statistics_match_qtip():
    """QTIP (and REFERENCE.md): 1MAD has 908 distinct values with std 1.0001 after its
    divisor; 3INST 10598 distinct values with RMS 1.24371; HYB's rows are used by exactly
    128 states each at L = 16, and its table has RMS 1."""
    mad = codes.code_lut(codes.CODE_1MAD, 16)[0].astype(np.float64)
    assert len(np.unique(mad)) == 908
    assert np.std(mad / codes.MAD_STD) == pytest.approx(1.0001, abs=1e-4)
    inst = codes.code_lut(codes.CODE_3INST, 16)[0].astype(np.float64)
    assert len(np.unique(inst)) == 10598
    assert np.sqrt(np.mean(inst**2)) == pytest.approx(1.24371, abs=1e-5)
    s = ALL.astype(np.uint64)
    x = (s * s + s) & np.uint64(M32)
    rows = (x >> np.uint64(6)) & np.uint64(511)
    assert np.all(np.bincount(rows.astype(np.int64), minlength=512) == 128)
    assert codes.code_rms(codes.CODE_HYB, 16) == pytest.approx(1.0, abs=1e-4)


def test_hyb_table_is_the_spec_table():
    """The table's bytes match the SHA-256 of spec appendix A, its values are finite,
    and design.py regenerates it exactly."""
    raw = np.asarray(HYB_TABLE_BITS, "<u2").tobytes()
    assert len(HYB_TABLE_BITS) == 1024
    assert hashlib.sha256(raw).hexdigest() == "8864cdd85d1a112c2e732b5fffa11f652706ca3e1da4caa8cca6a87a0beffcc0"
    t = codes.hyb_table()
    assert t.shape == (512, 2) and np.all(np.isfinite(t))
    assert np.array_equal(design.sunflower().astype(np.float16).view(np.uint16).reshape(-1),
                          np.asarray(HYB_TABLE_BITS, np.uint16))


def test_code_lut_and_values_agree():
    for code in codes.CODE_NAMES:
        for L in (4, 9, 16):
            lut = codes.code_lut(code, L)
            assert lut.shape == (codes.CODE_V[code], 1 << L)
            s = np.array([0, 1, (1 << L) - 1, (1 << L) // 3])
            assert same_bits(lut[:, s].T, codes.code_values(code, s))
    with pytest.raises(ValueError):
        codes.code_values(7, [0])
