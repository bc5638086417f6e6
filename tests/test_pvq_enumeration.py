"""Tests of the PVQ codebook enumeration (pvqcodec.codecs.pvq.enumeration).

Run this file directly (python tests/test_pvq_enumeration.py) for a throughput report.
"""

import itertools
import math
import pathlib
import random
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvqcodec.codecs.pvq import enumeration as E
from pvqcodec.codecs.pvq.enumeration import (
    count_table,
    decode_indices,
    encode_indices,
    index_bits,
    max_k_for_bits,
    n_limbs,
    pvq_count,
)
from pvqcodec.errors import FormatError, PayloadCorrupt

MASK64 = (1 << 64) - 1

# N(n, t) for n, t <= 6: the table printed in spec/codecs/pvq-enumeration.md
SPEC_TABLE = [
    [1, 0, 0, 0, 0, 0, 0],
    [1, 2, 2, 2, 2, 2, 2],
    [1, 4, 8, 12, 16, 20, 24],
    [1, 6, 18, 38, 66, 102, 146],
    [1, 8, 32, 88, 192, 360, 608],
    [1, 10, 50, 170, 450, 1002, 1970],
    [1, 12, 72, 292, 912, 2364, 5336],
]

# the worked example of the spec: d = 3, k = 2, index -> vector
SPEC_EXAMPLE_3_2 = [
    (0, 0, 2), (0, 0, -2), (0, 1, 1), (0, 1, -1), (0, -1, 1), (0, -1, -1),
    (0, 2, 0), (0, -2, 0), (1, 0, 1), (1, 0, -1), (1, 1, 0), (1, -1, 0),
    (-1, 0, 1), (-1, 0, -1), (-1, 1, 0), (-1, -1, 0), (2, 0, 0), (-2, 0, 0),
]  # fmt: skip


# --------------------------------------------------------------------------------------
# Independent reference: plain Python ints, straight from the spec's pseudocode
# --------------------------------------------------------------------------------------


class RefPVQ:
    """Python-int reference of N and of the enumeration (no numpy, no numba)."""

    def __init__(self, d, k):
        self.d, self.k = d, k
        # N[n][t] by the recurrence
        N = [[0] * (k + 1) for _ in range(d + 1)]
        for n in range(d + 1):
            N[n][0] = 1
        for n in range(1, d + 1):
            for t in range(1, k + 1):
                N[n][t] = N[n - 1][t] + N[n][t - 1] + N[n - 1][t - 1]
        self.N = N

    def decode(self, b):
        d, N = self.d, self.N
        if not 0 <= b < N[d][self.k]:
            raise ValueError("index out of range")
        y = []
        krem = self.k
        for i in range(d):
            r = d - i - 1
            if b < N[r][krem]:
                y.append(0)
                continue
            b -= N[r][krem]
            j = 1
            while True:
                c = N[r][krem - j]
                if b < c:
                    y.append(j)
                    break
                if b < 2 * c:
                    y.append(-j)
                    b -= c
                    break
                b -= 2 * c
                j += 1
            krem -= j
        assert krem == 0 and b == 0
        return y

    def encode(self, y):
        N = self.N
        assert sum(abs(v) for v in y) == self.k
        b = 0
        krem = self.k
        for i, v in enumerate(y):
            a = abs(v)
            if a == 0:
                continue
            r = self.d - i - 1
            b += N[r][krem] + 2 * sum(N[r][krem - j] for j in range(1, a))
            if v < 0:
                b += N[r][krem - a]
            krem -= a
        return b


def to_limbs(values, L):
    return np.array([[(v >> (64 * l)) & MASK64 for l in range(L)] for v in values], dtype=np.uint64)


def from_limbs(arr):
    out = []
    for row in np.asarray(arr):
        v = 0
        for l in range(len(row) - 1, -1, -1):
            v = (v << 64) | int(row[l])
        out.append(v)
    return out


def random_vector(rng, d, k):
    """A random point of S(d, k) (pulses dropped uniformly on coordinates, random signs)."""
    y = [0] * d
    for _ in range(k):
        y[rng.randrange(d)] += 1
    return [-v if rng.random() < 0.5 else v for v in y]


def brute_force_set(d, k):
    return {
        y
        for y in itertools.product(range(-k, k + 1), repeat=d)
        if sum(abs(v) for v in y) == k
    }


# --------------------------------------------------------------------------------------
# Counts
# --------------------------------------------------------------------------------------


def test_spec_table():
    for n in range(7):
        for t in range(7):
            assert pvq_count(n, t) == SPEC_TABLE[n][t]


SPEC_DOC = pathlib.Path(__file__).resolve().parents[1] / "spec" / "codecs" / "pvq-enumeration.md"


@pytest.mark.skipif(not SPEC_DOC.exists(), reason="spec text not present")
def test_spec_document_tables():
    text = SPEC_DOC.read_text()
    rows = re.findall(r"^\| (\d) \| ((?:\d+ \| ){6}\d+) \|$", text, flags=re.M)
    assert [int(n) for n, _ in rows] == list(range(7))
    assert [[int(v) for v in vals.split(" | ")] for _, vals in rows] == SPEC_TABLE
    big = re.findall(r"^\| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$", text, flags=re.M)
    assert len(big) >= 4
    for d, k, N, bits in big:
        assert pvq_count(int(d), int(k)) == int(N) and index_bits(int(d), int(k)) == int(bits)
    example = re.findall(r"\| (\d+) \| \(([-\d, ]+)\) ", text)
    example += re.findall(r"\| (\d+) \| \(([-\d, ]+)\) \|$", text, flags=re.M)
    got = {int(i): tuple(int(v) for v in y.split(", ")) for i, y in example}
    assert got == dict(enumerate(SPEC_EXAMPLE_3_2))


def test_closed_form_recurrence_and_table_agree():
    ref = RefPVQ(40, 40)
    for n in range(41):
        for t in range(41):
            closed = (
                1
                if t == 0
                else sum(
                    2**i * math.comb(n, i) * math.comb(t - 1, i - 1)
                    for i in range(1, min(n, t) + 1)
                )
            )
            assert closed == ref.N[n][t] == pvq_count(n, t)
    for d, k in [(5, 5), (32, 20), (32, 22), (64, 52), (64, 199), (128, 300)]:
        T = count_table(d, k)
        ref = RefPVQ(d, k)
        assert T.dtype == np.uint64 and T.shape[:2] == (d + 1, k + 1)
        got = from_limbs(T.reshape(-1, T.shape[2]))
        want = [ref.N[n][t] for n in range(d + 1) for t in range(k + 1)]
        assert got == want


def test_count_table_cached_and_read_only():
    T = count_table(32, 20)
    assert T is count_table(32, 20)
    assert not T.flags.writeable
    with pytest.raises(ValueError):
        T[0, 0, 0] = 5


def test_index_bits_and_limbs():
    assert index_bits(1, 1) == 1  # N = 2
    assert index_bits(3, 2) == 5  # N = 18
    assert index_bits(2, 4) == 4  # N = 16, a power of two: 4 bits suffice
    assert index_bits(32, 20) == 60
    assert index_bits(32, 22) == 64
    assert index_bits(64, 199) == 256
    for d, k in [(1, 1), (8, 6), (32, 20), (32, 22), (32, 23), (64, 52), (64, 199), (128, 300)]:
        bits = index_bits(d, k)
        N = pvq_count(d, k)
        assert 2 ** (bits - 1) < N <= 2**bits
        assert n_limbs(d, k) == max(1, -(-bits // 64))
        assert count_table(d, k).shape[2] >= n_limbs(d, k)
    assert n_limbs(32, 22) == 1 and n_limbs(32, 23) == 2 and n_limbs(64, 199) == 4


def test_max_k_for_bits():
    assert max_k_for_bits(32, 64) == 22
    assert max_k_for_bits(64, 256) == 199
    assert max_k_for_bits(1, 0) == 0  # N(1, 1) = 2 needs one bit
    assert max_k_for_bits(1, 1) == E.MAX_K  # N(1, k) = 2 for every k
    assert max_k_for_bits(256, 0) == 0
    assert max_k_for_bits(32, -5) == 0  # a negative budget is simply too small
    with pytest.raises(ValueError):
        max_k_for_bits(0, 10)
    for d in [1, 2, 3, 7, 32, 64, 255]:
        for bits in [1, 2, 5, 17, 60, 64, 128, 300, 1024]:
            kk = max_k_for_bits(d, bits)
            if kk == 0:
                assert index_bits(d, 1) > bits
                continue
            assert index_bits(d, kk) <= bits
            assert kk == E.MAX_K or index_bits(d, kk + 1) > bits


def test_limits():
    for d, k in [(0, 1), (257, 1), (1, 0), (1, 4097), (-1, 3)]:
        with pytest.raises(ValueError):
            index_bits(d, k)
        with pytest.raises(ValueError):
            decode_indices(np.zeros((1, 1), np.uint64), d, k)
    assert index_bits(256, 4096) > 1024
    assert index_bits(256, 760) <= 1024 < index_bits(256, 761)
    for f in (n_limbs, count_table):
        with pytest.raises(ValueError):
            f(256, 761)
    with pytest.raises(ValueError):
        decode_indices(np.zeros((1, 17), np.uint64), 256, 761)
    with pytest.raises(ValueError):
        encode_indices(np.zeros((1, 256), np.int32), 761)
    with pytest.raises(ValueError):
        pvq_count(-1, 0)
    with pytest.raises(ValueError):
        index_bits(3.0, 2)
    assert n_limbs(256, 760) == 16  # the largest index fits 16 limbs
    assert n_limbs(1, 4096) == 1


# --------------------------------------------------------------------------------------
# Bijection
# --------------------------------------------------------------------------------------


def test_spec_worked_example():
    I = np.arange(18, dtype=np.uint64)[:, None]
    Y = decode_indices(I, 3, 2)
    assert [tuple(int(v) for v in y) for y in Y] == SPEC_EXAMPLE_3_2
    assert encode_indices(np.array(SPEC_EXAMPLE_3_2, np.int32), 2)[:, 0].tolist() == list(range(18))


@pytest.mark.parametrize("d", [1, 2, 3, 4, 5])
def test_exhaustive_bijection(d):
    for k in range(1, 6):
        N = pvq_count(d, k)
        I = np.arange(N, dtype=np.uint64)[:, None]
        Y = decode_indices(I, d, k)
        assert Y.dtype == np.int32 and Y.shape == (N, d)
        assert (np.abs(Y).sum(axis=1) == k).all()
        vecs = [tuple(int(v) for v in y) for y in Y]
        assert len(set(vecs)) == N
        assert set(vecs) == brute_force_set(d, k)
        assert np.array_equal(encode_indices(Y, k), I)
        ref = RefPVQ(d, k)
        assert [ref.decode(b) for b in range(N)] == [list(v) for v in vecs]


def test_order_is_lexicographic_like_spec():
    # The enumeration orders by the first coordinate: 0, then +1, -1, +2, -2, ...
    d, k = 4, 3
    Y = decode_indices(np.arange(pvq_count(d, k), dtype=np.uint64)[:, None], d, k)
    key = [(0 if v == 0 else 2 * abs(v) - (v > 0)) for v in Y[:, 0]]
    assert key == sorted(key)


REF_CASES = [(8, 6), (32, 20), (32, 22), (64, 52), (64, 199), (128, 300)]


def _check_against_reference(d, k, indices, vectors):
    ref = RefPVQ(d, k) if (d, k) not in _REF_CACHE else _REF_CACHE[(d, k)]
    _REF_CACHE[(d, k)] = ref
    L = n_limbs(d, k)
    if indices:
        Y = decode_indices(to_limbs(indices, L), d, k)
        assert Y.tolist() == [ref.decode(b) for b in indices]
        assert from_limbs(encode_indices(Y, k)) == indices
    if vectors:
        Yv = np.array(vectors, dtype=np.int32)
        got = from_limbs(encode_indices(Yv, k))
        assert got == [ref.encode(y) for y in vectors]
        assert decode_indices(to_limbs(got, L), d, k).tolist() == vectors


_REF_CACHE = {}


@pytest.mark.parametrize("d,k", REF_CASES)
def test_matches_reference_random(d, k):
    rng = random.Random(1000 * d + k)
    N = pvq_count(d, k)
    special = [0, 1, N - 1, N - 2, N // 2]
    special += [min(N - 1, (1 << (64 * l)) + o) for l in range(1, n_limbs(d, k)) for o in (-1, 0, 1)]
    indices = special + [rng.randrange(N) for _ in range(200)]
    vectors = [random_vector(rng, d, k) for _ in range(200)]
    vectors.append([k] + [0] * (d - 1))
    vectors.append([0] * (d - 1) + [-k])
    _check_against_reference(d, k, indices, vectors)


@pytest.mark.parametrize("d,k", REF_CASES)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_matches_reference_hypothesis(d, k, data):
    N = pvq_count(d, k)
    indices = data.draw(st.lists(st.integers(0, N - 1), min_size=1, max_size=8))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    vectors = [random_vector(rng, d, k) for _ in range(4)]
    _check_against_reference(d, k, indices, vectors)


@pytest.mark.parametrize("d,k", [(8, 6), (32, 20), (32, 22)])
def test_single_limb_fast_path_matches_generic_kernel(d, k):
    rng = random.Random(7)
    N = pvq_count(d, k)
    I = to_limbs([rng.randrange(N) for _ in range(500)] + [N - 1], 1)
    T = count_table(d, k)
    assert T.shape[2] == 1
    Y1 = np.empty((I.shape[0], d), np.int32)
    Ym = np.empty_like(Y1)
    assert E._decode1(I, np.ascontiguousarray(T[:, :, 0]), d, k, Y1) == -1
    assert E._decodem(I, T, d, k, Ym) == -1
    assert np.array_equal(Y1, Ym)
    Jm = np.empty_like(I)
    assert E._encodem(Ym, T, d, k, Jm) == -1
    assert np.array_equal(Jm, I)


@pytest.mark.parametrize("d,k", [(8, 6), (32, 22), (64, 199)])
def test_table_with_extra_limb(d, k):
    # N(d, k) = 2^(64 L) would need a table with one limb more than the index; no (d, k)
    # within the limits hits it, so exercise that kernel path with a padded table.
    L = n_limbs(d, k)
    T, ok = E._build_table(d, k, L + 1)
    assert ok and not T[:, :, L].any()
    rng = random.Random(3)
    N = pvq_count(d, k)
    vals = [rng.randrange(N) for _ in range(100)] + [N - 1, 0]
    I = to_limbs(vals, L)
    Y = np.empty((len(vals), d), np.int32)
    assert E._decodem(I, T, d, k, Y) == -1
    assert np.array_equal(Y, decode_indices(I, d, k))
    J = np.empty_like(I)
    assert E._encodem(Y, T, d, k, J) == -1
    assert np.array_equal(J, I)
    bad = to_limbs([0, N], L)
    assert E._decodem(bad, T, d, k, np.empty((2, d), np.int32)) == 1


# --------------------------------------------------------------------------------------
# Rejection and argument checks
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("d,k", [(3, 2), (32, 20), (32, 22), (64, 52), (64, 199), (128, 300)])
def test_index_out_of_range_rejected(d, k):
    N = pvq_count(d, k)
    L = n_limbs(d, k)
    for bad in [N, N + 1, (1 << (64 * L)) - 1]:
        if bad >= 1 << (64 * L):
            continue
        I = to_limbs([0, N - 1, bad, 0], L)
        with pytest.raises(PayloadCorrupt, match=rf"group 2 is >= N\({d}, {k}\)"):
            decode_indices(I, d, k)
    # every limb at its maximum
    I = np.full((1, L), MASK64, dtype=np.uint64)
    with pytest.raises(PayloadCorrupt):
        decode_indices(I, d, k)
    # top limb alone too large (multi-limb)
    if L > 1:
        I = np.zeros((3, L), dtype=np.uint64)
        I[1, L - 1] = MASK64
        with pytest.raises(PayloadCorrupt, match="group 1 "):
            decode_indices(I, d, k)


def test_reject_names_first_bad_group():
    d, k = 32, 20
    N = pvq_count(d, k)
    I = to_limbs([5] * 40, 1)
    I[17, 0] = N
    I[30, 0] = MASK64
    with pytest.raises(PayloadCorrupt) as ei:
        decode_indices(I, d, k)
    assert str(ei.value) == "PVQ index of group 17 is >= N(32, 20)"
    assert isinstance(ei.value, FormatError) and ei.value.code == "payload_corrupt"


def test_encode_rejects_wrong_norm():
    Y = np.zeros((3, 4), np.int32)
    Y[:, 0] = 3
    Y[1, 1] = -1
    with pytest.raises(ValueError, match="row 1"):
        encode_indices(Y, 3)
    with pytest.raises(ValueError):
        encode_indices(np.zeros((2, 4), np.int32), 3)
    Y = np.zeros((1, 64), np.int32)
    Y[0, 0] = 198
    with pytest.raises(ValueError, match="row 0"):
        encode_indices(Y, 199)
    Y[0, 5] = -2**31  # |y| does not overflow the norm check
    with pytest.raises(ValueError):
        encode_indices(Y, 199)


def test_shapes_and_dtypes():
    assert decode_indices(np.zeros((0, 1), np.uint64), 32, 20).shape == (0, 32)
    assert encode_indices(np.zeros((0, 32), np.int32), 20).shape == (0, 1)
    assert encode_indices(np.zeros((0, 64), np.int32), 199).shape == (0, 4)
    with pytest.raises(ValueError):
        decode_indices(np.zeros((2, 2), np.uint64), 32, 20)  # wrong limb count
    with pytest.raises(ValueError):
        decode_indices(np.zeros((2, 1), np.int64), 32, 20)  # wrong dtype
    with pytest.raises(ValueError):
        decode_indices(np.zeros(2, np.uint64), 32, 20)
    with pytest.raises(ValueError):
        encode_indices(np.zeros((2, 3), np.float32), 1)
    # other integer dtypes and non-contiguous inputs are accepted
    Y = np.zeros((2, 8), np.int64)
    Y[:, 3] = [-6, 6]
    I = encode_indices(Y, 6)
    assert np.array_equal(decode_indices(I, 8, 6), Y)
    # read-only inputs (e.g. np.frombuffer over a file) work too
    I.setflags(write=False)
    Y.setflags(write=False)
    assert np.array_equal(decode_indices(I, 8, 6), Y)
    assert np.array_equal(encode_indices(Y, 6), I)
    Ync = np.zeros((2, 16), np.int32)[:, ::2]
    Ync[:, 0] = 6
    assert np.array_equal(decode_indices(encode_indices(Ync, 6), 8, 6), Ync)


# --------------------------------------------------------------------------------------
# Timing (not a test): python tests/test_pvq_enumeration.py
# --------------------------------------------------------------------------------------

if __name__ == "__main__":
    import time

    import numba

    numba.set_num_threads(1)
    print("one thread; best of 5 runs; random indices uniform in [0, N)")
    for d, k, G in [(32, 20, 200_000), (32, 22, 200_000), (64, 52, 50_000), (64, 199, 30_000)]:
        rng = random.Random(0)
        N = pvq_count(d, k)
        I = to_limbs([rng.randrange(N) for _ in range(G)], n_limbs(d, k))
        Y = decode_indices(I[:10], d, k)  # compile / load cache
        encode_indices(Y, k)
        td = te = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            Y = decode_indices(I, d, k)
            td = min(td, time.perf_counter() - t0)
            t0 = time.perf_counter()
            J = encode_indices(Y, k)
            te = min(te, time.perf_counter() - t0)
        assert np.array_equal(I, J)
        print(
            f"d={d:3d} k={k:3d} bits={index_bits(d, k):3d} limbs={n_limbs(d, k)}: "
            f"decode {G * d / td / 1e6:6.1f} M weights/s ({G / td / 1e3:6.0f} k groups/s), "
            f"encode {G * d / te / 1e6:6.1f} M weights/s ({G / te / 1e3:6.0f} k groups/s)"
        )
