"""Hadamard matrices of the RHT (spec/transforms.md 5.3.2-5.3.4, pvqcodec.transforms.hadamard)."""

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvqcodec.transforms.hadamard import (
    MAX_BLOCK,
    base_matrix,
    base_orders,
    chi_table,
    default_block,
    factor_block,
    hadamard,
    is_valid_block,
    sylvester,
)


def _prime(p):
    return p >= 2 and all(p % d for d in range(2, int(p**0.5) + 1))


def _odd(b):
    while b % 2 == 0:
        b //= 2
    return b


# --- quadratic character --------------------------------------------------------------------


@pytest.mark.parametrize("p", [3, 5, 7, 11, 13, 17, 19, 23, 101, 103, 251])
def test_chi_matches_euler_criterion(p):
    chi = chi_table(p)
    assert chi.dtype == np.int8 and chi.shape == (p,)
    assert chi[0] == 0
    for a in range(1, p):
        e = pow(a, (p - 1) // 2, p)  # Euler: 1 for squares, p - 1 for non-squares
        assert chi[a] == (1 if e == 1 else -1)
    assert (chi[1:] == 1).sum() == (p - 1) // 2


def test_chi_small_literal():
    # squares mod 11: 1, 3, 4, 5, 9
    assert chi_table(11).tolist() == [0, 1, -1, 1, 1, 1, -1, -1, -1, 1, -1]


@pytest.mark.parametrize("p", [1, 2, 4, 9, 15, -3])
def test_chi_rejects_non_odd_primes(p):
    with pytest.raises(ValueError):
        chi_table(p)


# --- the base table -------------------------------------------------------------------------


def test_base_table_is_the_rule():
    expect = {}
    for p in range(3, 256):
        if _prime(p) and p % 4 == 3 and p + 1 <= 256 and _odd(p + 1) > 1:
            expect.setdefault(p + 1, ("paley1", p))
    for p in range(3, 256):
        if _prime(p) and p % 4 == 1 and 2 * (p + 1) <= 256 and _odd(2 * (p + 1)) > 1:
            expect.setdefault(2 * (p + 1), ("paley2", p))
    table = base_orders()
    assert table == sorted(table)
    assert {h: (c, p) for h, c, p in table} == expect
    assert len(table) == 33
    assert [h for h, _, _ in table] == [
        12, 20, 24, 28, 36, 44, 48, 60, 68, 72, 76, 80, 84, 104, 108, 124, 132,
        140, 148, 152, 164, 168, 180, 192, 196, 200, 204, 212, 220, 224, 228, 240, 252,
    ]  # fmt: skip


def test_paley1_preferred_over_paley2():
    table = {h: (c, p) for h, c, p in base_orders()}
    assert table[12] == ("paley1", 11)  # also Paley II with p = 5
    assert table[60] == ("paley1", 59)  # also Paley II with p = 29
    assert table[28] == ("paley2", 13)
    assert table[36] == ("paley2", 17)
    assert table[104] == ("paley1", 103)


@pytest.mark.parametrize("h", [h for h, _, _ in base_orders()])
def test_base_matrix_is_hadamard(h):
    H = base_matrix(h)
    assert H.dtype == np.int8 and H.shape == (h, h)
    assert set(np.unique(H).tolist()) == {-1, 1}
    H64 = H.astype(np.int64)
    assert np.array_equal(H64 @ H64.T, h * np.eye(h, dtype=np.int64))


@pytest.mark.parametrize("h", [h for h, c, _ in base_orders() if c == "paley1"])
def test_paley1_is_identity_plus_skew(h):
    S = base_matrix(h).astype(np.int64) - np.eye(h, dtype=np.int64)
    assert np.array_equal(S, -S.T)


def test_paley1_definition_literal():
    # H_12 (Paley I, p = 11): row 0 all ones, column 0 below it -1, H[i][j] = chi(j - i) off the diagonal
    H = base_matrix(12)
    chi = chi_table(11)
    assert (H[0] == 1).all() and (H[1:, 0] == -1).all()
    for i in range(1, 12):
        for j in range(1, 12):
            assert H[i, j] == (1 if i == j else chi[(j - i) % 11])
    assert "".join("+" if v > 0 else "-" for v in H[1]) == "-++-+++---+-"


def test_paley2_definition_literal():
    # H_28 (Paley II, p = 13) from the conference matrix C of order 14
    H = base_matrix(28).astype(int)
    chi = chi_table(13).astype(int)
    M0 = [[1, -1], [-1, -1]]
    M1 = [[1, 1], [1, -1]]
    for i in range(14):
        for j in range(14):
            if i == j:
                c = 0
            elif i == 0 or j == 0:
                c = 1
            else:
                c = chi[(j - i) % 13]
            for r in range(2):
                for cc in range(2):
                    want = M0[r][cc] if i == j else c * M1[r][cc]
                    assert H[2 * i + r, 2 * j + cc] == want


def test_base_table_digest():
    # SHA-256 of every base matrix, in table order, row-major, +1 -> 0x01 and -1 -> 0xFF
    # (the check value printed in spec/transforms.md 5.3.2)
    m = hashlib.sha256()
    for h, _, _ in base_orders():
        m.update(base_matrix(h).tobytes())
    assert m.hexdigest() == "560b349b275b03a398179d60f14f32b122db6326b976fd1789469f6f7d1478b1"


def test_base_matrix_cached_and_read_only():
    assert base_matrix(12) is base_matrix(12)
    with pytest.raises(ValueError):
        base_matrix(12)[0, 0] = 1


@pytest.mark.parametrize("h", [1, 2, 4, 8, 16, 52, 100, 256, 0, -12])
def test_base_matrix_rejects_non_base_orders(h):
    with pytest.raises(ValueError):
        base_matrix(h)


# --- Sylvester ------------------------------------------------------------------------------


def test_sylvester_definition():
    assert sylvester(0).tolist() == [[1]]
    assert sylvester(1).tolist() == [[1, 1], [1, -1]]
    for e in range(6):
        S = sylvester(e)
        n = 1 << e
        for i in range(n):
            for j in range(n):
                assert S[i, j] == (-1) ** bin(i & j).count("1")
        S64 = S.astype(np.int64)
        assert np.array_equal(S64 @ S64.T, n * np.eye(n, dtype=np.int64))
    with pytest.raises(ValueError):
        sylvester(-1)


# --- factorization of block orders ----------------------------------------------------------

FACTOR_EXAMPLES = [
    (1, (1, 1)),
    (2, (1, 2)),
    (256, (1, 256)),
    (65536, (1, 65536)),
    (12, (12, 1)),
    (24, (12, 2)),
    (192, (12, 16)),
    (576, (36, 16)),
    (768, (12, 64)),
    (1536, (12, 128)),
    (3072, (12, 256)),
    (14336, (28, 512)),
    (28672, (28, 1024)),
    (104, (104, 1)),
    (1792, (28, 64)),
    (40, (20, 2)),
    (72, (36, 2)),
    (11008, None),
    (3, None),
    (6, None),
    (52, None),
    (131072, None),
    (12 * 8192, None),  # 98304 > 65536
]


@pytest.mark.parametrize("b,want", FACTOR_EXAMPLES)
def test_factor_block_examples(b, want):
    assert factor_block(b) == want
    assert is_valid_block(b) == (want is not None)


def test_factor_block_takes_smallest_base_order():
    # 48 = 3 * 16: base orders 12 and 48 both fit; the smallest (12) is used
    assert factor_block(48) == (12, 4)
    # 96 = 3 * 32: 12 (not 24 or 48)
    assert factor_block(96) == (12, 8)
    # 11008 = 43 * 256: only 172 and 344 fit the odd part and neither is a base order
    assert factor_block(172) is None
    assert max(b for b in range(1, 11009) if 11008 % b == 0 and is_valid_block(b)) == 256


def test_factor_block_exhaustive_rule():
    table = {h for h, _, _ in base_orders()}
    for b in range(1, 4097):
        o = _odd(b)
        if o == 1:
            want = (1, b)
        else:
            cands = [h for h in table if b % h == 0 and _odd(h) == o]
            want = (min(cands), b // min(cands)) if cands else None
        assert factor_block(b) == want, b


@pytest.mark.parametrize("b", [0, -4])
def test_factor_block_rejects_nonpositive(b):
    with pytest.raises(ValueError):
        factor_block(b)
    assert not is_valid_block(b)


def test_is_valid_block_non_integers():
    assert not is_valid_block(12.0)
    assert not is_valid_block("12")
    assert not is_valid_block(True)
    assert is_valid_block(np.int64(12))
    assert MAX_BLOCK == 65536


@pytest.mark.parametrize("b", [1, 2, 12, 20, 24, 28, 36, 40, 104, 192, 576, 1536])
def test_dense_hadamard_orthogonal(b):
    H = hadamard(b)
    assert H.dtype == np.int8 and H.shape == (b, b)
    H64 = H.astype(np.int64)
    assert np.array_equal(H64 @ H64.T, b * np.eye(b, dtype=np.int64))


def test_dense_hadamard_is_kronecker():
    H = hadamard(24).astype(int)
    B = base_matrix(12).astype(int)
    S = sylvester(1).astype(int)
    for i in range(24):
        for j in range(24):
            assert H[i, j] == B[i // 2, j // 2] * S[i % 2, j % 2]
    with pytest.raises(ValueError):
        hadamard(6)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([2, 4, 8, 12, 20, 24, 28, 36, 40, 44, 48, 56, 72, 96, 104, 120, 144]))
def test_hadamard_orthogonal_property(b):
    H = hadamard(b).astype(np.int64)
    assert np.array_equal(H.T @ H, b * np.eye(b, dtype=np.int64))


# --- the encoder's default block ------------------------------------------------------------


@pytest.mark.parametrize(
    "n,want",
    [
        (4096, 512),
        (14336, 1792),
        (28672, 3584),
        (11008, 256),
        (576, 576),
        (1536, 192),
        (3, 1),
        (5, 1),
        (6, 2),
        (1, 1),
        (12, 12),
        (8192, 1024),
        (5120, 640),
        (1024, 128),
        (768, 768),
    ],
)
def test_default_block_examples(n, want):
    b = default_block(n)
    assert b == want
    assert is_valid_block(b) and n % b == 0 and b <= 4096


def test_default_block_rejects_bad_length():
    with pytest.raises(ValueError):
        default_block(0)
