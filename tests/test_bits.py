import numpy as np
import pytest
from hypothesis import given, strategies as st

from pvqcodec import bits
from pvqcodec.errors import PayloadCorrupt


@given(width=st.integers(0, 300), count=st.integers(0, 40), seed=st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(width, count, seed):
    rng = np.random.default_rng(seed)
    limbs = bits.n_limbs(width)
    sym = rng.integers(0, 2**64, size=(count, limbs), dtype=np.uint64, endpoint=False)
    top = width - 64 * (limbs - 1)
    if top < 64:
        sym[:, limbs - 1] &= np.uint64((1 << top) - 1) if top > 0 else np.uint64(0)
    if limbs == 1:
        sym = sym[:, 0]
    buf = bits.pack(sym, width)
    assert buf.size == bits.packed_size(count, width)
    back = bits.unpack(buf, count, width)
    assert np.array_equal(np.asarray(back, np.uint64).reshape(np.shape(sym)), sym)


def test_lsb_first_layout_matches_python_integers():
    # Symbol i occupies bits i*w .. i*w+w-1 of one little-endian integer.
    rng = np.random.default_rng(1)
    for width in (1, 3, 5, 12, 60, 64, 65, 130):
        count = 17
        vals = [int(rng.integers(0, 2**63)) * 2 + 1 for _ in range(count)]
        vals = [v % (1 << width) for v in vals]
        big = sum(v << (i * width) for i, v in enumerate(vals))
        expect = big.to_bytes(bits.packed_size(count, width), "little")
        limbs = bits.n_limbs(width)
        arr = np.array([[(v >> (64 * l)) & (2**64 - 1) for l in range(limbs)] for v in vals], np.uint64)
        if limbs == 1:
            arr = arr[:, 0]
        assert bits.pack(arr, width).tobytes() == expect


def test_rejects_wrong_length_and_padding():
    buf = bits.pack(np.array([5, 6, 7], np.uint64), 3)
    with pytest.raises(PayloadCorrupt):
        bits.unpack(buf[:-1], 3, 3)
    bad = buf.copy()
    bad[-1] |= 0x80  # bit 7 of the last byte is padding for 9 bits
    with pytest.raises(PayloadCorrupt):
        bits.unpack(bad, 3, 3)


def test_pack_rejects_oversized_symbols():
    with pytest.raises(ValueError):
        bits.pack(np.array([8], np.uint64), 3)
    with pytest.raises(ValueError):
        bits.pack(np.array([[0, 1]], np.uint64), 64)
