"""The randomized Hadamard transform (spec/transforms.md 5.3, pvqcodec.transforms.rht)."""

import hashlib
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvqcodec.errors import ParamsInvalid
from pvqcodec.transforms import rht
from pvqcodec.transforms.hadamard import base_matrix, factor_block, hadamard
from pvqcodec.transforms.rht import (
    block_scale,
    forward_2d,
    forward_axis,
    inverse_2d,
    inverse_axis,
    signs,
    validate_params,
)

M64 = (1 << 64) - 1

# --- reference implementations with plain Python ints / np.float32 scalars ------------------


def ref_sign(seed, side, i):
    """The spec's sign(seed, side, i), with Python ints."""
    z = (seed + (2 * i + side + 1) * 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    z ^= z >> 31
    return -1 if (z >> 63) & 1 else 1


def ref_inverse_vector(y, b, seed, side):
    """The spec's four inverse steps, literally, on np.float32 scalars (each op rounds to float32)."""
    n = len(y)
    h, q = factor_block(b)
    e = q.bit_length() - 1
    H = base_matrix(h) if h > 1 else None
    c = np.float32(1.0 / math.sqrt(float(b)))
    out = []
    for k in range(n // b):
        v = [np.float32(y[k * b + i]) for i in range(b)]
        # step 1: Sylvester butterflies on each length-q sub-vector
        for ih in range(h):
            for t in range(e):
                s = 1 << t
                for i2 in range(q):
                    if i2 & s == 0:
                        a = v[ih * q + i2]
                        bb = v[ih * q + i2 + s]
                        v[ih * q + i2] = a + bb
                        v[ih * q + i2 + s] = a - bb
        # step 2: dense part with H_h transposed, sequential from j = 0
        if h > 1:
            z = [None] * b
            for i2 in range(q):
                w = [v[j * q + i2] for j in range(h)]
                for ih in range(h):
                    acc = w[0] if H[0][ih] == 1 else -w[0]
                    for j in range(1, h):
                        if H[j][ih] == 1:
                            acc = acc + w[j]
                        else:
                            acc = acc - w[j]
                    z[ih * q + i2] = acc
            v = z
        # steps 3 and 4: scale, then sign
        for i in range(b):
            x = v[i] * c
            if ref_sign(seed, side, k * b + i) < 0:
                x = -x
            out.append(x)
    for x in out:
        assert type(x) is np.float32
    return np.array(out, dtype=np.float32)


def ref_inverse_2d(Wp, seed, rb, cb):
    m, n = Wp.shape
    X = np.empty_like(Wp)
    for j in range(n):
        X[:, j] = ref_inverse_vector(Wp[:, j], rb, seed, 0)
    Y = np.empty_like(X)
    for i in range(m):
        Y[i, :] = ref_inverse_vector(X[i, :], cb, seed, 1)
    return Y


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def wild_float32(rng, shape):
    """float32 values over a wide dynamic range, with zeros of both signs."""
    x = rng.standard_normal(shape) * np.exp2(rng.integers(-30, 30, size=shape))
    x = x.astype(np.float32)
    flat = x.reshape(-1)
    flat[rng.integers(0, flat.size, size=max(1, flat.size // 20))] = 0.0
    flat[rng.integers(0, flat.size, size=max(1, flat.size // 20))] = -0.0
    return x


# --- signs ----------------------------------------------------------------------------------

PINNED_SIGNS = {
    (0, 0): "-+++++--++---+--",
    (0, 1): "+-+--------+-+-+",
    (12345, 0): "++-+++----+++++-",
    (12345, 1): "++++-+-+-++++++-",
}


@pytest.mark.parametrize("seed,side", list(PINNED_SIGNS))
def test_signs_pinned(seed, side):
    got = "".join("+" if v > 0 else "-" for v in signs(seed, side, 16))
    assert got == PINNED_SIGNS[(seed, side)]
    assert got == "".join("+" if ref_sign(seed, side, i) > 0 else "-" for i in range(16))


def test_signs_are_splitmix64_outputs():
    # sign(seed, side, i) is the top bit of SplitMix64 output number 2*i + side for that seed;
    # the well-known first outputs of SplitMix64 seeded with 0:
    first = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F, 0xF88BB8A8724C81EC]
    for k, u in enumerate(first):
        assert signs(0, k % 2, 1, start=k // 2)[0] == (-1.0 if u >> 63 else 1.0)
    u = rht.mix64(np.array([(k + 1) * 0x9E3779B97F4A7C15 & M64 for k in range(4)], dtype=np.uint64))
    assert [int(v) for v in u] == first


@pytest.mark.parametrize("seed", [0, 1, 12345, 0xFFFFFFFFFFFFFFFF, 0x8000000000000000, 0x0123456789ABCDEF])
def test_signs_match_python_int_reference(seed):
    for side in (0, 1):
        s = signs(seed, side, 300)
        assert s.dtype == np.float32 and s.shape == (300,)
        assert s.tolist() == [float(ref_sign(seed, side, i)) for i in range(300)]
        # random access: any window equals the slice of the full vector
        assert np.array_equal(signs(seed, side, 50, start=123), s[123:173])
    big = signs(seed, 1, 3, start=10**12)
    assert big.tolist() == [float(ref_sign(seed, 1, 10**12 + i)) for i in range(3)]


def test_signs_balanced():
    s = signs(7, 0, 1 << 16)
    assert abs(float(s.sum())) < 4 * 256  # ~N(0, 2^16): 4 sigma


@pytest.mark.parametrize(
    "args",
    [(-1, 0, 4), (1 << 64, 0, 4), (0, 2, 4), (0, -1, 4), (0, 0, -1), (1.5, 0, 4), (0, 0, 4.0)],
)
def test_signs_bad_arguments(args):
    with pytest.raises(ValueError):
        signs(*args)


# --- scale ----------------------------------------------------------------------------------


def test_block_scale():
    assert block_scale(1) == np.float32(1.0)
    assert block_scale(4) == np.float32(0.5)
    assert block_scale(4096) == np.float32(1 / 64)
    for b in [2, 12, 20, 28, 36, 512, 576, 1792]:
        c = block_scale(b)
        assert isinstance(c, np.float32)
        assert c == np.float32(1.0 / math.sqrt(b))
    assert bits(np.array([block_scale(2)]))[0] == 0x3F3504F3
    assert bits(np.array([block_scale(12)]))[0] == 0x3E93CD3A
    assert bits(np.array([block_scale(28)]))[0] == 0x3E41848F
    assert bits(np.array([block_scale(36)]))[0] == 0x3E2AAAAB


# --- forward --------------------------------------------------------------------------------


def dense_forward(x, b, seed, side):
    """c_b H_b (s_k * x_k) for every block, with the dense matrix (float64)."""
    n = x.shape[0]
    H = hadamard(b).astype(np.float64)
    s = np.array([ref_sign(seed, side, i) for i in range(n)], dtype=np.float64)
    c = float(block_scale(b))
    y = np.empty_like(x)
    for k in range(n // b):
        sl = slice(k * b, (k + 1) * b)
        y[sl] = c * (H @ (s[sl, None] * x[sl]))
    return y


@pytest.mark.parametrize("b", [1, 2, 8, 12, 20, 24, 28, 36, 64, 72, 128, 576])
def test_forward_matches_dense_definition(b):
    rng = np.random.default_rng(b)
    x = rng.standard_normal((3 * b, 5))
    want = dense_forward(x, b, 99, 0)
    assert np.allclose(forward_axis(x, 0, b, 99, 0), want, rtol=1e-12, atol=1e-12)
    assert np.allclose(forward_axis(x.T, 1, b, 99, 0), want.T, rtol=1e-12, atol=1e-12)
    assert np.allclose(forward_axis(x[:, 0], 0, b, 99, 0), want[:, 0], rtol=1e-12, atol=1e-12)


def test_forward_axis_3d():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 24, 3))
    y = forward_axis(x, 1, 12, 5, 1)
    for i in range(2):
        assert np.allclose(y[i], dense_forward(x[i], 12, 5, 1))


def test_forward_2d_is_two_sided():
    rng = np.random.default_rng(4)
    W = rng.standard_normal((24, 40))
    A = np.kron(np.eye(2), hadamard(12)) * float(block_scale(12)) * signs(9, 0, 24)[None, :]
    B = np.kron(np.eye(1), hadamard(40)) * float(block_scale(40)) * signs(9, 1, 40)[None, :]
    assert np.allclose(forward_2d(W, 9, 12, 40), A @ W @ B.T, atol=1e-12)


# --- inverse: bit-exact against the scalar reference ----------------------------------------


@pytest.mark.parametrize(
    "b,nblocks",
    [(1, 5), (2, 3), (8, 2), (64, 1), (12, 3), (24, 2), (48, 1), (20, 2), (40, 1), (28, 2), (56, 1), (36, 2), (72, 1)],
)
def test_inverse_vector_bit_exact(b, nblocks):
    rng = np.random.default_rng(1000 + b)
    y = wild_float32(rng, (b * nblocks,))
    for seed, side in [(0, 0), (12345, 1)]:
        got = inverse_axis(y, 0, b, seed, side)
        want = ref_inverse_vector(y, b, seed, side)
        assert np.array_equal(bits(got), bits(want))


@pytest.mark.parametrize("shape,rb,cb", [((24, 40), 12, 20), ((28, 36), 28, 36), ((16, 72), 8, 36), ((56, 12), 28, 1)])
def test_inverse_2d_bit_exact(shape, rb, cb):
    rng = np.random.default_rng(sum(shape))
    Wp = wild_float32(rng, shape)
    got = inverse_2d(Wp, 12345, rb, cb)
    want = ref_inverse_2d(Wp, 12345, rb, cb)
    assert got.dtype == np.float32 and got.shape == shape
    assert np.array_equal(bits(got), bits(want))


@pytest.mark.parametrize("chunk", [1, 7, 64, 300, 5000])
def test_inverse_chunking_bit_exact(monkeypatch, chunk):
    # small chunk sizes exercise partial chunks (fewer vectors / blocks in the last chunk)
    monkeypatch.setattr(rht, "_CHUNK", chunk)
    rng = np.random.default_rng(chunk)
    Wp = wild_float32(rng, (36, 52))
    got = inverse_2d(Wp, 77, 12, 4)
    want = ref_inverse_2d(Wp, 77, 12, 4)
    assert np.array_equal(bits(got), bits(want))


@pytest.mark.parametrize("chunk", [1, 7, 64, 300, 5000])
def test_forward_chunking(monkeypatch, chunk):
    monkeypatch.setattr(rht, "_CHUNK", chunk)
    rng = np.random.default_rng(chunk)
    x = rng.standard_normal((72, 13))
    want = dense_forward(x, 24, 5, 0)
    assert np.allclose(forward_axis(x, 0, 24, 5, 0), want, rtol=1e-12, atol=1e-12)
    assert np.allclose(forward_axis(x.T.copy(), 1, 24, 5, 0), want.T, rtol=1e-12, atol=1e-12)


def test_inverse_axis_layouts_agree():
    # axis 0, axis 1, a non-contiguous view and a 3-D array all give the same bits
    rng = np.random.default_rng(5)
    y = wild_float32(rng, (576, 40))
    a0 = inverse_axis(y, 0, 576, 3, 0)
    a1 = inverse_axis(np.ascontiguousarray(y.T), 1, 576, 3, 0)
    assert np.array_equal(bits(a0), bits(a1.T))
    aT = inverse_axis(y.T, 1, 576, 3, 0)  # transposed view
    assert np.array_equal(bits(a0), bits(aT.T))
    a3 = inverse_axis(np.stack([y, y]), 1, 576, 3, 0)
    assert np.array_equal(bits(a3[1]), bits(a0))
    a3b = inverse_axis(np.stack([y.T, y.T]), 2, 576, 3, 0)
    assert np.array_equal(bits(a3b[0]), bits(a0.T))
    assert np.array_equal(bits(inverse_axis(y, -2, 576, 3, 0)), bits(a0))


def test_inverse_large_blocks_columns_match_reference():
    # a 1536 x 64 matrix (block 1536 = 12 * 128), checked on a few columns against the reference
    rng = np.random.default_rng(6)
    y = wild_float32(rng, (1536, 64))
    got = inverse_axis(y, 0, 1536, 2024, 0)
    for j in (0, 31, 63):
        assert np.array_equal(bits(got[:, j]), bits(ref_inverse_vector(y[:, j], 1536, 2024, 0)))


def test_inverse_worked_example_b4():
    # spec 5.3.7, example 1: y = (1, 2, 3, 4), b = 4, seed 0, side 1
    y = np.array([1, 2, 3, 4], dtype=np.float32)
    got = inverse_axis(y, 0, 4, 0, 1)
    assert bits(got).tolist() == [0x40A00000, 0x3F800000, 0xC0000000, 0x80000000]  # 5, 1, -2, -0


WORKED_B12 = [
    0xC02F83B5, 0x3F015393, 0xBE13CD3A, 0x3F13CD3A, 0x3E5DB3D7, 0xBE13CD3A,
    0x3F015393, 0x3D93CD3A, 0xBEB8C088, 0xBF4B3A30, 0x3EDDB3D7, 0x3F5DB3D7,
]  # fmt: skip


def test_inverse_worked_example_b12():
    # spec 5.3.7, example 2: y_i = float32(i + 1) / 8, b = 12, seed 12345, side 0
    y = (np.arange(1, 13, dtype=np.float32) / np.float32(8)).astype(np.float32)
    got = inverse_axis(y, 0, 12, 12345, 0)
    assert bits(got).tolist() == WORKED_B12
    assert np.array_equal(bits(got), bits(ref_inverse_vector(y, 12, 12345, 0)))


def test_inverse_worked_example_rounding_order():
    # spec 5.3.7, example 3: y = (1, 2^-24 x 11), b = 12, seed 0, side 0. The sums before
    # scaling depend on the order of the additions (exactly they would be 1 + 2^-24 for i_h >= 1).
    y = np.array([1.0] + [2.0**-24] * 11, dtype=np.float32)
    got = inverse_axis(y, 0, 12, 0, 0)
    assert bits(got).tolist() == [
        0xBE93CD34, 0x3E93CD3A, 0x3E93CD39, 0x3E93CD3A, 0x3E93CD39, 0x3E93CD39,
        0xBE93CD38, 0xBE93CD39, 0x3E93CD39, 0x3E93CD3A, 0xBE93CD39, 0xBE93CD3A,
    ]  # fmt: skip
    assert np.array_equal(bits(got), bits(ref_inverse_vector(y, 12, 0, 0)))


CHECK_2D = "adbdd6a7dc2daf556847d67b8b801aa5cd39e9889e3410088363cc20222df7ec"


def test_inverse_2d_check_value():
    # spec 5.3.7, example 3: the 48 x 40 matrix Wp[i][j] = ((7 i + 3 j) mod 23 - 11) / 4,
    # seed 0x0123456789ABCDEF, row block 24, column block 20; SHA-256 of the result
    # (float32, little-endian, row-major).
    i, j = np.meshgrid(np.arange(48), np.arange(40), indexing="ij")
    Wp = (((7 * i + 3 * j) % 23 - 11) / 4).astype(np.float32)
    got = inverse_2d(Wp, 0x0123456789ABCDEF, 24, 20)
    want = ref_inverse_2d(Wp, 0x0123456789ABCDEF, 24, 20)
    assert np.array_equal(bits(got), bits(want))
    assert hashlib.sha256(got.astype("<f4").tobytes()).hexdigest() == CHECK_2D


# --- round trip -----------------------------------------------------------------------------


@pytest.mark.parametrize("b,m,n", [(1, 5, 7), (2, 4, 6), (12, 24, 36), (20, 40, 20), (64, 128, 64), (576, 576, 1152)])
def test_roundtrip(b, m, n):
    rng = np.random.default_rng(b)
    W = rng.standard_normal((m, n))
    Wp = forward_2d(W, 31337, b, b)
    back = inverse_2d(Wp.astype(np.float32), 31337, b, b)
    assert back.dtype == np.float32 and back.shape == (m, n)
    assert np.linalg.norm(back - W) / np.linalg.norm(W) < 1e-6
    # the transform is orthonormal up to the float32 rounding of c_b
    assert abs(np.linalg.norm(Wp) / np.linalg.norm(W) - 1) < 1e-6


@pytest.mark.parametrize("rb,cb", [(1, 576), (576, 1), (12, 20), (64, 36)])
def test_roundtrip_mixed_blocks(rb, cb):
    rng = np.random.default_rng(rb * 1000 + cb)
    W = rng.standard_normal((rb * 2, cb * 2))
    back = inverse_2d(forward_2d(W, 1, rb, cb).astype(np.float32), 1, rb, cb)
    assert np.linalg.norm(back - W) / np.linalg.norm(W) < 1e-6


@settings(max_examples=25, deadline=None)
@given(
    b=st.sampled_from([1, 2, 4, 12, 20, 24, 28, 36, 40, 48]),
    nblocks=st.integers(1, 3),
    seed=st.integers(0, M64),
    side=st.integers(0, 1),
    data_seed=st.integers(0, 2**32 - 1),
)
def test_forward_orthogonal_property(b, nblocks, seed, side, data_seed):
    x = np.random.default_rng(data_seed).standard_normal((b * nblocks, 2))
    y = forward_axis(x, 0, b, seed, side)
    scale = float(block_scale(b)) * math.sqrt(b)  # 1 up to float32 rounding of c_b
    assert np.allclose(np.linalg.norm(y, axis=0), scale * np.linalg.norm(x, axis=0), rtol=1e-12)
    back = inverse_axis(y.astype(np.float32), 0, b, seed, side)
    assert np.allclose(back, x, rtol=1e-5, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(
    b=st.sampled_from([1, 2, 8, 12, 20, 24, 28, 36]),
    nblocks=st.integers(1, 2),
    seed=st.integers(0, M64),
    data_seed=st.integers(0, 2**32 - 1),
)
def test_inverse_bit_exact_property(b, nblocks, seed, data_seed):
    y = wild_float32(np.random.default_rng(data_seed), (b * nblocks,))
    got = inverse_axis(y, 0, b, seed, 1)
    assert np.array_equal(bits(got), bits(ref_inverse_vector(y, b, seed, 1)))


# --- parameters -----------------------------------------------------------------------------


def test_validate_params_accepts():
    validate_params(4096, 4096, 512, 512)
    validate_params(4096, 14336, 512, 1792)
    validate_params(12, 7, 12, 1)
    validate_params(65536, 65536 * 2, 65536, 65536)


@pytest.mark.parametrize(
    "m,n,rb,cb",
    [
        (12, 12, 6, 12),  # 6 is not a valid block order
        (12, 12, 12, 3),  # 3 is not a valid block order
        (11008, 16, 11008, 16),  # 43 * 256 is not constructible
        (24, 24, 16, 24),  # 16 does not divide 24
        (24, 24, 24, 48),  # 48 does not divide 24
        (131072, 8, 131072, 8),  # beyond 65536
        (8, 3 * 32768, 8, 98304),  # 98304 = 12 * 8192 > 65536
        (12, 12, 0, 12),
        (12, 12, 12, -4),
        (12, 12, 12.0, 12),
    ],
)
def test_validate_params_rejects(m, n, rb, cb):
    with pytest.raises(ParamsInvalid):
        validate_params(m, n, rb, cb)


def test_2d_functions_raise_params_invalid():
    W = np.zeros((24, 24), dtype=np.float32)
    with pytest.raises(ParamsInvalid):
        inverse_2d(W, 0, 16, 24)
    with pytest.raises(ParamsInvalid):
        forward_2d(W.astype(np.float64), 0, 24, 6)


def test_bad_arguments_value_error():
    y = np.zeros((24, 24), dtype=np.float32)
    with pytest.raises(ValueError):
        inverse_axis(y.astype(np.float64), 0, 12, 0, 0)  # float32 only
    with pytest.raises(ValueError):
        inverse_2d(y.astype(np.float64), 0, 12, 12)
    with pytest.raises(ValueError):
        inverse_2d(y[0], 0, 12, 12)  # not 2-D
    with pytest.raises(ValueError):
        inverse_axis(y, 2, 12, 0, 0)  # no axis 2
    with pytest.raises(ValueError):
        inverse_axis(y, 0, 16, 0, 0)  # 16 does not divide 24
    with pytest.raises(ValueError):
        forward_axis(y, 0, 6, 0, 0)  # invalid block
    with pytest.raises(ValueError):
        forward_axis(y, 0, 12, -1, 0)  # bad seed
    with pytest.raises(ValueError):
        inverse_axis(y, 0, 12, 0, 3)  # bad side
    with pytest.raises(ValueError):
        block_scale(0)
    with pytest.raises(ValueError):
        validate_params(0, 12, 1, 12)
