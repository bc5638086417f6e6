import numpy as np

from pvqcodec.checksum import crc32


def _crc32_reference(data: bytes) -> int:
    """Spec section 2.3, written out bit by bit."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_check_value():
    assert crc32(b"123456789") == 0xCBF43926
    assert crc32(b"") == 0


def test_matches_bitwise_reference_and_numpy_input():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, 1000, dtype=np.uint8)
    assert crc32(data) == _crc32_reference(data.tobytes()) == crc32(data.tobytes())
