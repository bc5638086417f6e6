"""Fixed-width bit packing (spec section 4.2, "raw coding").

A stream of `count` symbols of `width` bits is packed LSB-first: bit j of
symbol i (j = 0 is its least significant bit) is bit number p = i*width + j of
the stream, and stream bit p is bit (p mod 8) of byte p div 8. The stream
occupies ceil(count*width / 8) bytes; the unused high bits of the last byte
are zero (a decoder rejects them otherwise). For widths 8, 16, 32 and 64 this
is simply the little-endian array of the symbols.

Symbols wider than 64 bits (PVQ shape indices) are carried as rows of
little-endian uint64 limbs: shape (count, limbs), limb 0 least significant.
"""

import numba
import numpy as np

from .errors import PayloadCorrupt

_NATIVE = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}


def packed_size(count: int, width: int) -> int:
    """Bytes of a raw stream of `count` symbols of `width` bits."""
    return (count * width + 7) // 8


def n_limbs(width: int) -> int:
    return max(1, (width + 63) // 64)


@numba.njit(cache=True)
def _pack(sym, width, out):
    count, limbs = sym.shape
    for i in range(count):
        p = i * width
        for l in range(limbs):
            nbits = min(64, width - 64 * l)
            v = sym[i, l]
            while nbits > 0:
                byte = p >> 3
                off = p & 7
                take = min(8 - off, nbits)
                mask = (np.uint64(1) << np.uint64(take)) - np.uint64(1)
                out[byte] |= np.uint8((v & mask) << np.uint64(off))
                v = v >> np.uint64(take)
                p += take
                nbits -= take


@numba.njit(cache=True)
def _unpack(buf, count, width, limbs, out):
    for i in range(count):
        p = i * width
        for l in range(limbs):
            nbits = min(64, width - 64 * l)
            v = np.uint64(0)
            shift = 0
            while nbits > 0:
                byte = p >> 3
                off = p & 7
                take = min(8 - off, nbits)
                mask = (np.uint64(1) << np.uint64(take)) - np.uint64(1)
                v |= ((np.uint64(buf[byte]) >> np.uint64(off)) & mask) << np.uint64(shift)
                shift += take
                p += take
                nbits -= take
            out[i, l] = v


def pack(symbols: np.ndarray, width: int) -> np.ndarray:
    """Pack symbols (shape (count,) or (count, limbs)) into a uint8 array."""
    if not 0 <= width <= 4096:
        raise ValueError(f"symbol width {width} out of range")
    sym = np.asarray(symbols)
    count = sym.shape[0]
    if width in _NATIVE and sym.ndim == 1:
        native = _NATIVE[width]
        if sym.dtype != native:
            if sym.size and int(sym.max()) >> width:
                raise ValueError(f"symbol does not fit in {width} bits")
            sym = sym.astype(native)
        return np.ascontiguousarray(sym).astype(sym.dtype.newbyteorder("<"), copy=False).view(np.uint8).copy()
    limbs = n_limbs(width)
    sym2 = (sym if sym.ndim == 2 else sym.reshape(count, 1)).astype(np.uint64, copy=False)
    if sym2.shape[1] != limbs:
        if sym2.shape[1] > limbs and np.any(sym2[:, limbs:]):
            raise ValueError(f"symbol does not fit in {width} bits")
        pad = np.zeros((count, limbs), np.uint64)
        k = min(limbs, sym2.shape[1])
        pad[:, :k] = sym2[:, :k]
        sym2 = pad
    top = width - 64 * (limbs - 1)
    if top < 64 and count and np.any(sym2[:, limbs - 1] >> np.uint64(top)):
        raise ValueError(f"symbol does not fit in {width} bits")
    out = np.zeros(packed_size(count, width), np.uint8)
    if count and width:
        _pack(np.ascontiguousarray(sym2), width, out)
    return out


def unpack(buf: np.ndarray, count: int, width: int) -> np.ndarray:
    """Inverse of `pack`: returns (count,) of the narrowest native dtype for
    widths <= 64, or (count, limbs) uint64 for wider symbols.

    Raises PayloadCorrupt if the buffer's size is not exactly
    packed_size(count, width) or its padding bits are not zero."""
    buf = np.frombuffer(buf, np.uint8) if not isinstance(buf, np.ndarray) else buf
    need = packed_size(count, width)
    if buf.size != need:
        raise PayloadCorrupt(f"raw stream is {buf.size} bytes, expected {need} for {count} symbols of {width} bits")
    if width in _NATIVE:
        return np.frombuffer(buf, dtype=np.dtype(_NATIVE[width]).newbyteorder("<"), count=count).astype(_NATIVE[width], copy=False)
    used = count * width % 8
    if used and buf[-1] >> used:
        raise PayloadCorrupt("raw stream has non-zero padding bits in its last byte")
    limbs = n_limbs(width)
    out = np.zeros((count, limbs), np.uint64)
    if count and width:
        _unpack(np.ascontiguousarray(buf), count, width, limbs, out)
    if width <= 64:
        out = out[:, 0]
        if width <= 8:
            out = out.astype(np.uint8)
        elif width <= 16:
            out = out.astype(np.uint16)
        elif width <= 32:
            out = out.astype(np.uint32)
    return out
