"""Floating-point storage types of LLM weights, and the exact conversions between them.

pvqcodec names the three weight types it encodes and decodes ``"float32"``,
``"float16"`` and ``"bfloat16"``; safetensors spells them ``"F32"``, ``"F16"`` and
``"BF16"``. The codec works in float32; these functions move a tensor between its
storage type and float32.

numpy has no bfloat16, so a bfloat16 tensor is carried as its ``np.uint16`` bit
patterns. Widening bfloat16 to float32 is exact (a 16-bit left shift). Narrowing
float32 to bfloat16 rounds to nearest, ties to even, with overflow to infinity, and
maps every NaN to the quiet NaN ``0x7FC0`` with the input's sign bit. Narrowing to
float16 is IEEE round-to-nearest-even (numpy's cast), with overflow to infinity.

All functions are vectorized and accept arrays of any shape (0-d included).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

__all__ = [
    "FLOAT_NAMES",
    "SAFETENSORS_NAMES",
    "SafetensorsDType",
    "SAFETENSORS_DTYPES",
    "safetensors_dtype",
    "dtype_name",
    "itemsize",
    "numpy_dtype",
    "storage_dtype",
    "normalize_dtype_name",
    "bf16_bits_to_f32",
    "f32_to_bf16_bits",
    "f32_to_f16",
    "to_float32",
    "from_float32",
]


@dataclass(frozen=True)
class SafetensorsDType:
    """One safetensors dtype: its string, item size in bytes, numpy storage dtype, our name."""

    code: str  # the safetensors string, e.g. "BF16"
    itemsize: int  # bytes per element
    numpy: np.dtype  # how its raw bytes are viewed (little-endian); BF16 and F8 as unsigned bits
    name: str | None  # our float name ("float32", "float16", "bfloat16") or None


def _st(code: str, size: int, np_dtype: str, name: str | None = None) -> SafetensorsDType:
    dt = np.dtype(np_dtype)
    assert dt.itemsize == size
    return SafetensorsDType(code, size, dt, name)


#: Every byte-aligned safetensors dtype this package can read, keyed by its safetensors string.
SAFETENSORS_DTYPES: dict[str, SafetensorsDType] = {
    d.code: d
    for d in (
        _st("F64", 8, "<f8"),
        _st("F32", 4, "<f4", "float32"),
        _st("F16", 2, "<f2", "float16"),
        _st("BF16", 2, "<u2", "bfloat16"),
        _st("I64", 8, "<i8"),
        _st("I32", 4, "<i4"),
        _st("I16", 2, "<i2"),
        _st("I8", 1, "i1"),
        _st("U64", 8, "<u8"),
        _st("U32", 4, "<u4"),
        _st("U16", 2, "<u2"),
        _st("U8", 1, "u1"),
        _st("BOOL", 1, "?"),
        _st("F8_E4M3", 1, "u1"),
        _st("F8_E5M2", 1, "u1"),
        _st("F8_E8M0", 1, "u1"),
        _st("C64", 8, "<c8"),
    )
}

#: Our float names, in order of width.
FLOAT_NAMES = ("float32", "float16", "bfloat16")

#: Our float name -> safetensors string ("bfloat16" -> "BF16").
SAFETENSORS_NAMES: dict[str, str] = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
_NAME_TO_ST = SAFETENSORS_NAMES
_ST_TO_NAME = {v: k for k, v in _NAME_TO_ST.items()}

# Spellings accepted by normalize_dtype_name (case-insensitive).
_ALIASES = {
    "float32": "float32", "f32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "f16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}


def _unknown_name(name) -> InputError:
    return InputError(f"unknown dtype {name!r} (expected one of: {', '.join(FLOAT_NAMES)})")


def normalize_dtype_name(name: str) -> str:
    """Our name for a user-given float type: accepts "bf16", "fp16", "F32", "float32", ...

    Raises InputError for anything that is not float32, float16 or bfloat16.
    """
    if not isinstance(name, str) or name.lower() not in _ALIASES:
        raise _unknown_name(name)
    return _ALIASES[name.lower()]


def safetensors_dtype(name: str) -> str:
    """The safetensors string of one of our names: "bfloat16" -> "BF16".

    A safetensors string that is already valid ("BF16", "I64", ...) is returned unchanged.
    """
    if name in _NAME_TO_ST:
        return _NAME_TO_ST[name]
    if name in SAFETENSORS_DTYPES:
        return name
    raise _unknown_name(name)


def dtype_name(st_dtype: str) -> str | None:
    """Our name for a safetensors dtype string ("BF16" -> "bfloat16"); None for other dtypes."""
    return _ST_TO_NAME.get(st_dtype)


def itemsize(st_dtype: str) -> int:
    """Bytes per element of a safetensors dtype string; KeyError-free: InputError if unknown."""
    try:
        return SAFETENSORS_DTYPES[st_dtype].itemsize
    except (KeyError, TypeError):
        raise InputError(f"unknown safetensors dtype {st_dtype!r}") from None


def numpy_dtype(st_dtype: str) -> np.dtype:
    """The numpy dtype a tensor of this safetensors dtype is read as (BF16 -> uint16 bits)."""
    try:
        return SAFETENSORS_DTYPES[st_dtype].numpy
    except (KeyError, TypeError):
        raise InputError(f"unknown safetensors dtype {st_dtype!r}") from None


def storage_dtype(name: str) -> np.dtype:
    """The numpy dtype of the storage array for one of our names (bfloat16 -> uint16)."""
    if name not in _NAME_TO_ST:
        raise _unknown_name(name)
    return np.dtype(SAFETENSORS_DTYPES[_NAME_TO_ST[name]].numpy.newbyteorder("="))


# --- conversions ---------------------------------------------------------------------------


def bf16_bits_to_f32(bits) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32, exactly (the bits shifted left by 16)."""
    b = np.asarray(bits)
    if b.dtype.itemsize != 2 or b.dtype.kind not in "ui":
        raise TypeError(f"bfloat16 bits must be a 16-bit integer array, got {b.dtype}")
    wide = b.astype(np.uint16, copy=False).astype(np.uint32)
    np.left_shift(wide, np.uint32(16), out=wide)  # in place: stays an array even when 0-d
    return wide.view(np.float32)


def f32_to_bf16_bits(x) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest, ties to even.

    Finite values that round past the largest bfloat16 become +-inf; infinities stay
    infinities; every NaN becomes the quiet NaN 0x7FC0 with its sign bit kept.
    Non-float32 input is first cast to float32 (so float64 input is rounded twice).
    """
    f = np.asarray(x)
    if f.dtype != np.float32:
        f = f.astype(np.float32)
    u = f.view(np.uint32)
    # u <= 0xFF800000 for every non-NaN, so u + 0x8000 cannot overflow 32 bits.
    rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    out = np.asarray(rounded).astype(np.uint16)  # np.asarray: 0-d ufunc results are scalars
    nan = np.isnan(f)
    if nan.any():
        sign = np.asarray(u >> np.uint32(16)).astype(np.uint16) & np.uint16(0x8000)
        out = np.asarray(np.where(nan, sign | np.uint16(0x7FC0), out), dtype=np.uint16)
    return out


def f32_to_f16(x) -> np.ndarray:
    """float32 -> float16 with IEEE round to nearest even; overflow gives +-inf (no warning)."""
    f = np.asarray(x)
    if f.dtype != np.float32:
        f = f.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        return f.astype(np.float16)


def to_float32(array, dtype_name: str) -> np.ndarray:
    """A storage array of one of our float types -> a new float32 array (always a copy).

    ``array`` is float32 for "float32", float16 for "float16", and uint16 bits for "bfloat16".
    """
    a = np.asarray(array)
    if dtype_name == "bfloat16":
        return bf16_bits_to_f32(a)
    if dtype_name == "float32":
        if a.dtype.kind != "f" or a.dtype.itemsize != 4:
            raise TypeError(f"float32 storage must be a float32 array, got {a.dtype}")
        return a.astype(np.float32)
    if dtype_name == "float16":
        if a.dtype.kind != "f" or a.dtype.itemsize != 2:
            raise TypeError(f"float16 storage must be a float16 array, got {a.dtype}")
        return f16_bits_to_f32(a.view(np.uint16))
    raise _unknown_name(dtype_name)


def f16_bits_to_f32(u16) -> np.ndarray:
    """Exact float16 -> float32 on bit patterns (spec 3.4): NaN payloads kept, signalling
    NaNs not quieted (hardware conversions may quiet them, so this does not use one)."""
    u = np.asarray(u16, np.uint16).astype(np.uint32)
    sign = (u & 0x8000) << 16
    exp = (u >> 10) & 0x1F
    man = u & 0x3FF
    normal = sign | ((exp + 112) << 23) | (man << 13)
    special = sign | 0x7F800000 | (man << 13)
    sub = (man.astype(np.float32) * np.float32(2.0**-24)).view(np.uint32) | sign
    bits = np.where(exp == 31, special, np.where(exp == 0, sub, normal))
    return bits.astype(np.uint32).view(np.float32)


def from_float32(f32, dtype_name: str) -> np.ndarray:
    """float32 -> the storage array of one of our float types (float32, float16 or uint16 bits)."""
    if dtype_name == "float32":
        return np.array(f32, dtype=np.float32)
    if dtype_name == "float16":
        return f32_to_f16(f32)
    if dtype_name == "bfloat16":
        return f32_to_bf16_bits(f32)
    raise _unknown_name(dtype_name)
