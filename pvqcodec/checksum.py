"""Payload and header checksums: CRC-32 (spec section 2.3).

The algorithm is the CRC-32 of ISO 3309 / ITU-T V.42 as used by zlib, gzip and
PNG: reflected polynomial 0xEDB88320, initial value 0xFFFFFFFF, final XOR
0xFFFFFFFF. A C decoder implements it in about 15 lines with a 256-entry
table; Python uses zlib's C implementation. Check value: crc32(b"123456789")
== 0xCBF43926.
"""

import zlib

import numpy as np


def crc32(data) -> int:
    """CRC-32 of a bytes-like object or a C-contiguous numpy array."""
    if isinstance(data, np.ndarray):
        data = memoryview(np.ascontiguousarray(data)).cast("B")
    return zlib.crc32(data) & 0xFFFFFFFF
