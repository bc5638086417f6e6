"""Exactness of the float32 <-> float16/bfloat16 conversions and the dtype name tables."""

import math
import struct
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvqcodec import dtypes
from pvqcodec.errors import InputError

# --- reference bfloat16 rounding, in exact rational arithmetic ------------------------------


def _f32_value(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def _bf16_magnitude(b: int) -> Fraction:
    """Exact value of a non-negative, non-NaN bf16 pattern; inf counts as 2**128 (next binade)."""
    if b == 0x7F80:
        return Fraction(2) ** 128
    return Fraction(_f32_value(b << 16))


def _ref_f32_to_bf16(bits: int) -> int:
    """Round-to-nearest-even of the f32 pattern `bits` to bf16, computed from exact values."""
    sign = bits & 0x80000000
    mag = bits & 0x7FFFFFFF
    if mag > 0x7F800000:  # NaN
        return (sign >> 16) | 0x7FC0
    if mag == 0x7F800000:
        return (sign >> 16) | 0x7F80
    x = Fraction(_f32_value(mag))
    lo = mag >> 16  # truncation: the bf16 at or below x
    hi = lo + 1
    d_lo = x - _bf16_magnitude(lo)
    d_hi = _bf16_magnitude(hi) - x
    assert d_lo >= 0 and d_hi > 0
    if d_lo < d_hi:
        r = lo
    elif d_hi < d_lo:
        r = hi
    else:
        r = lo if lo % 2 == 0 else hi
    return (sign >> 16) | r


def _bits_to_f32(bits) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint32).view(np.float32)


# --- bfloat16 ---------------------------------------------------------------------------------


def test_bf16_exhaustive_round_trip():
    patterns = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    f = dtypes.bf16_bits_to_f32(patterns)
    assert f.dtype == np.float32
    # widening is exactly a shift by 16
    assert np.array_equal(f.view(np.uint32), patterns.astype(np.uint32) << 16)
    back = dtypes.f32_to_bf16_bits(f)
    assert back.dtype == np.uint16
    is_nan = ((patterns & 0x7F80) == 0x7F80) & ((patterns & 0x007F) != 0)
    assert np.array_equal(back[~is_nan], patterns[~is_nan])
    # NaNs become the quiet NaN with their sign kept
    expected_nan = (patterns[is_nan] & 0x8000) | 0x7FC0
    assert np.array_equal(back[is_nan], expected_nan)
    assert is_nan.sum() == 2 * 127


@pytest.mark.parametrize(
    "f32_bits, bf16_bits",
    [
        (0x3F808000, 0x3F80),  # tie, even below: stays
        (0x3F818000, 0x3F82),  # tie, odd below: rounds up
        (0x3F808001, 0x3F81),  # just above the tie
        (0x3F807FFF, 0x3F80),  # just below the tie
        (0xBF818000, 0xBF82),  # negative tie rounds away (magnitude to even)
        (0x7F7FFFFF, 0x7F80),  # largest finite f32 overflows to +inf
        (0xFF7FFFFF, 0xFF80),  # and to -inf
        (0x7F7F7FFF, 0x7F7F),  # largest value that rounds to the largest finite bf16
        (0x7F7F8000, 0x7F80),  # tie at the top: to even = inf
        (0x7F800000, 0x7F80),  # +inf
        (0xFF800000, 0xFF80),  # -inf
        (0x00000000, 0x0000),
        (0x80000000, 0x8000),  # -0 keeps its sign
        (0x00008000, 0x0000),  # subnormal tie to even (zero)
        (0x00018000, 0x0002),  # subnormal tie to even (up)
        (0x007FFFFF, 0x0080),  # largest subnormal rounds to the smallest normal
        (0x7F800001, 0x7FC0),  # signalling NaN -> quiet NaN
        (0xFFC00001, 0xFFC0),  # negative NaN keeps its sign
        (0x7FFFFFFF, 0x7FC0),  # NaN whose +0x7FFF would overflow
        (0xFFFFFFFF, 0xFFC0),
    ],
)
def test_bf16_rounding_cases(f32_bits, bf16_bits):
    got = dtypes.f32_to_bf16_bits(_bits_to_f32([f32_bits]))
    assert int(got[0]) == bf16_bits, hex(int(got[0]))
    assert _ref_f32_to_bf16(f32_bits) == bf16_bits


def test_bf16_random_against_exact_reference():
    rng = np.random.default_rng(1234)
    bits = rng.integers(0, 2**32, size=20000, dtype=np.uint64).astype(np.uint32)
    # make sure ties and near-ties are well represented
    bits[:4000] = (bits[:4000] & 0xFFFF0000) | 0x8000
    bits[4000:6000] = (bits[4000:6000] & 0xFFFF0000) | 0x7FFF
    bits[6000:8000] = (bits[6000:8000] & 0xFFFF0000) | 0x8001
    got = dtypes.f32_to_bf16_bits(bits.view(np.float32))
    ref = np.array([_ref_f32_to_bf16(int(b)) for b in bits], dtype=np.uint16)
    assert np.array_equal(got, ref)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_bf16_hypothesis(bits):
    got = dtypes.f32_to_bf16_bits(_bits_to_f32([bits]))
    assert int(got[0]) == _ref_f32_to_bf16(bits)


def test_bf16_shapes_and_scalars():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    b = dtypes.f32_to_bf16_bits(x)
    assert b.shape == (2, 3, 4) and b.dtype == np.uint16
    assert dtypes.bf16_bits_to_f32(b).shape == (2, 3, 4)
    s = dtypes.f32_to_bf16_bits(np.float32(1.0))
    assert isinstance(s, np.ndarray) and s.shape == () and int(s) == 0x3F80
    s = dtypes.f32_to_bf16_bits(np.float32(np.nan))
    assert isinstance(s, np.ndarray) and s.shape == () and int(s) == 0x7FC0
    for name in dtypes.FLOAT_NAMES:
        stored = dtypes.from_float32(np.float32(1.5), name)
        assert isinstance(stored, np.ndarray) and stored.shape == ()
        f = dtypes.to_float32(stored, name)
        assert isinstance(f, np.ndarray) and f.shape == () and f.dtype == np.float32 and float(f) == 1.5
        assert f.flags.writeable
    assert float(dtypes.bf16_bits_to_f32(np.uint16(0x4049))) == 3.140625
    # int16 views of the bits are accepted
    assert dtypes.bf16_bits_to_f32(np.array([-16512], dtype=np.int16))[0] == -1.0  # 0xBF80
    with pytest.raises(TypeError):
        dtypes.bf16_bits_to_f32(np.array([1.0], dtype=np.float16))


def test_bf16_inf_nan_widen():
    f = dtypes.bf16_bits_to_f32(np.array([0x7F80, 0xFF80, 0x7FC0, 0xFFC1], dtype=np.uint16))
    assert f[0] == np.inf and f[1] == -np.inf
    assert np.isnan(f[2]) and np.isnan(f[3]) and np.signbit(f[3])


# --- float16 ----------------------------------------------------------------------------------


def test_f16_rounding_and_overflow():
    x = np.array([65504, 65519.99, 65520, 1e6, -1e6, np.inf, -np.inf, 2.0**-24, 2.0**-25, 2.0**-25 * 1.5],
                 dtype=np.float32)
    h = dtypes.f32_to_f16(x)
    assert h.dtype == np.float16
    assert h[0] == 65504 and h[1] == 65504
    assert h[2] == np.inf and h[3] == np.inf and h[4] == -np.inf
    assert h[5] == np.inf and h[6] == -np.inf
    assert h[7] == np.float16(2.0**-24)
    assert h[8] == 0  # exact tie between 0 and the smallest subnormal: to even
    assert h[9] == np.float16(2.0**-24)
    assert np.isnan(dtypes.f32_to_f16(np.float32(np.nan)))


def test_f16_exhaustive_round_trip():
    patterns = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    h = patterns.view(np.float16)
    f = dtypes.to_float32(h, "float16")
    back = dtypes.from_float32(f, "float16").view(np.uint16)
    finite = ~np.isnan(h)
    assert np.array_equal(back[finite], patterns[finite])
    assert np.isnan(back[~finite].view(np.float16)).all()


def test_f16_random_against_reference():
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**32, size=5000, dtype=np.uint64).astype(np.uint32)
    f = bits.view(np.float32)
    f = f[np.isfinite(f)]
    got = dtypes.f32_to_f16(f)
    for v, h in zip(f.tolist(), got.tolist()):
        # Python's struct 'e' format rounds to nearest even; it raises on overflow
        try:
            ref = struct.unpack("<e", struct.pack("<e", v))[0]
        except OverflowError:
            ref = math.copysign(math.inf, v)
        assert h == ref or (math.isinf(ref) and math.isinf(h) and (h > 0) == (ref > 0)), (v, h, ref)


# --- to_float32 / from_float32 -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["float32", "float16", "bfloat16"])
def test_to_from_float32(name):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    stored = dtypes.from_float32(x, name)
    assert stored.dtype == dtypes.storage_dtype(name)
    assert stored.shape == x.shape
    f = dtypes.to_float32(stored, name)
    assert f.dtype == np.float32 and f.shape == x.shape
    assert not np.shares_memory(f, stored)
    # converting back is exact (the value is representable)
    assert np.array_equal(dtypes.from_float32(f, name).view(np.uint8), stored.view(np.uint8))
    if name == "float32":
        assert np.array_equal(f, x)


def test_to_float32_rejects_wrong_storage():
    with pytest.raises(TypeError):
        dtypes.to_float32(np.zeros(3, np.float16), "float32")
    with pytest.raises(TypeError):
        dtypes.to_float32(np.zeros(3, np.float32), "float16")
    with pytest.raises(TypeError):
        dtypes.to_float32(np.zeros(3, np.float32), "bfloat16")
    with pytest.raises(InputError):
        dtypes.to_float32(np.zeros(3, np.float32), "float8")
    with pytest.raises(InputError):
        dtypes.from_float32(np.zeros(3, np.float32), "int8")


# --- names ------------------------------------------------------------------------------------


def test_names():
    assert dtypes.SAFETENSORS_NAMES == {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
    assert dtypes.safetensors_dtype("float32") == "F32"
    assert dtypes.safetensors_dtype("float16") == "F16"
    assert dtypes.safetensors_dtype("bfloat16") == "BF16"
    assert dtypes.safetensors_dtype("I64") == "I64"
    assert dtypes.dtype_name("F32") == "float32"
    assert dtypes.dtype_name("F16") == "float16"
    assert dtypes.dtype_name("BF16") == "bfloat16"
    assert dtypes.dtype_name("F64") is None and dtypes.dtype_name("U8") is None
    assert dtypes.dtype_name("nonsense") is None
    for code, size in {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                       "U8": 1, "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}.items():
        assert dtypes.itemsize(code) == size
        assert dtypes.numpy_dtype(code).itemsize == size
    assert dtypes.numpy_dtype("BF16") == np.uint16
    assert dtypes.numpy_dtype("BOOL") == np.bool_
    with pytest.raises(InputError):
        dtypes.itemsize("F4")
    with pytest.raises(InputError):
        dtypes.safetensors_dtype("float8")
    assert dtypes.normalize_dtype_name("BF16") == "bfloat16"
    assert dtypes.normalize_dtype_name("fp16") == "float16"
    assert dtypes.normalize_dtype_name("F32") == "float32"
    with pytest.raises(InputError, match="unknown dtype"):
        dtypes.normalize_dtype_name("int4")


def test_float16_widening_is_exact_on_all_patterns_and_keeps_signalling_nans():
    from pvqcodec.dtypes import f16_bits_to_f32

    pats = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    got = f16_bits_to_f32(pats).view(np.uint32)
    for p, g in ((0x7C01, 0x7F802000), (0xFD23, 0xFFA46000), (0x7E00, 0x7FC00000), (0x0001, 0x33800000),
                 (0x8000, 0x80000000), (0x3C00, 0x3F800000), (0xFC00, 0xFF800000), (0x03FF, 0x387FC000)):
        assert got[p] == g, hex(p)
    finite = (pats & 0x7C00) != 0x7C00
    assert np.array_equal(got[finite].view(np.float32), pats[finite].view(np.float16).astype(np.float32))
