"""Enumeration of the pyramid vector quantizer codebook S(d, k).

S(d, k) is the set of integer vectors y in Z^d with sum |y_i| = k. Its size is
N(d, k) (Fischer 1986), given by the recurrence

    N(n, 0) = 1,  N(0, t > 0) = 0,
    N(n, t) = N(n-1, t) + N(n, t-1) + N(n-1, t-1),

or the closed form N(n, t) = sum_{i=1..min(n,t)} 2^i C(n, i) C(t-1, i-1).

`decode_indices` and `encode_indices` implement the bijection between S(d, k)
and [0, N(d, k)) defined normatively in spec/codecs/pvq-enumeration.md. Indices
can exceed 64 bits, so each index is held as L little-endian uint64 limbs
(limb 0 least significant), L = n_limbs(d, k). The numba kernels do the limb
arithmetic (add/sub with carries computed by comparisons); when every count
fits in one uint64 (e.g. d = 32 at about 2 bits per weight) a plain-integer
fast path is used.
"""

from __future__ import annotations

import functools
import math
import operator

import numba
import numpy as np

from pvqcodec.errors import PayloadCorrupt

__all__ = [
    "MAX_D",
    "MAX_K",
    "MAX_INDEX_BITS",
    "pvq_count",
    "index_bits",
    "n_limbs",
    "count_table",
    "max_k_for_bits",
    "encode_indices",
    "decode_indices",
]

#: Limits enforced by the spec (a stream outside them is rejected).
MAX_D = 256
MAX_K = 4096
MAX_INDEX_BITS = 1024

_U0 = np.uint64(0)
_U1 = np.uint64(1)


# --------------------------------------------------------------------------------------
# Exact counts (Python ints) and parameter validation
# --------------------------------------------------------------------------------------


def _as_int(x, name: str) -> int:
    try:
        return operator.index(x)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {x!r}") from None


@functools.lru_cache(maxsize=4096)
def _count(n: int, t: int) -> int:
    if t == 0:
        return 1
    if n == 0:
        return 0
    return sum(
        (1 << i) * math.comb(n, i) * math.comb(t - 1, i - 1) for i in range(1, min(n, t) + 1)
    )


def pvq_count(d: int, k: int) -> int:
    """N(d, k): the number of integer vectors of dimension d with L1 norm k (exact int).

    Defined for all d >= 0, k >= 0 (N(d, 0) = 1, N(0, k > 0) = 0); the codec's limits
    are checked by the other functions, not here.
    """
    d = _as_int(d, "d")
    k = _as_int(k, "k")
    if d < 0 or k < 0:
        raise ValueError(f"pvq_count needs d >= 0 and k >= 0, got d={d}, k={k}")
    return _count(d, k)


def _check_dk(d, k) -> tuple[int, int]:
    d = _as_int(d, "d")
    k = _as_int(k, "k")
    if not 1 <= d <= MAX_D:
        raise ValueError(f"PVQ dimension d={d} is outside 1..{MAX_D}")
    if not 1 <= k <= MAX_K:
        raise ValueError(f"PVQ pulse count k={k} is outside 1..{MAX_K}")
    return d, k


def _bits_of_count(n: int) -> int:
    # ceil(log2 n) for n >= 1 (0 when n == 1)
    return (n - 1).bit_length()


def index_bits(d: int, k: int) -> int:
    """ceil(log2 N(d, k)): the width of an index, in bits (0 when N == 1).

    Checks 1 <= d <= 256 and 1 <= k <= 4096 but not the 1024-bit limit (so it can be
    used to test that limit).
    """
    d, k = _check_dk(d, k)
    return _bits_of_count(_count(d, k))


def _check_all(d, k) -> tuple[int, int, int]:
    d, k = _check_dk(d, k)
    bits = _bits_of_count(_count(d, k))
    if bits > MAX_INDEX_BITS:
        raise ValueError(
            f"PVQ index for d={d}, k={k} needs {bits} bits, more than the limit {MAX_INDEX_BITS}"
        )
    return d, k, bits


def n_limbs(d: int, k: int) -> int:
    """Number of uint64 limbs of an index: max(1, ceil(index_bits(d, k) / 64))."""
    _, _, bits = _check_all(d, k)
    return max(1, -(-bits // 64))


def _table_limbs(d: int, k: int) -> int:
    # limbs needed to hold N(d, k) itself (one more than n_limbs only when N == 2^(64 L))
    return max(1, -(-_count(d, k).bit_length() // 64))


def max_k_for_bits(d: int, bits: int) -> int:
    """Largest k in 1..4096 with index_bits(d, k) <= bits, or 0 if there is none.

    Any integer `bits` is accepted (a negative budget gives 0). For d = 1, N(1, k) = 2 for
    every k >= 1, so the answer is capped at the spec's limit 4096.
    """
    d = _as_int(d, "d")
    bits = _as_int(bits, "bits")
    if not 1 <= d <= MAX_D:
        raise ValueError(f"PVQ dimension d={d} is outside 1..{MAX_D}")
    if bits < 1:
        return 0  # N(d, k) >= 2 for d, k >= 1
    # N(d, k) is strictly increasing in k for d >= 1, so index_bits is non-decreasing.
    if _bits_of_count(_count(d, 1)) > bits:
        return 0
    lo, hi = 1, MAX_K  # invariant: index_bits(d, lo) <= bits
    if _bits_of_count(_count(d, hi)) <= bits:
        return hi
    while hi - lo > 1:  # index_bits(d, hi) > bits
        mid = (lo + hi) // 2
        if _bits_of_count(_count(d, mid)) <= bits:
            lo = mid
        else:
            hi = mid
    return lo


# --------------------------------------------------------------------------------------
# Count table
# --------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _build_table(d, k, nl):
    T = np.zeros((d + 1, k + 1, nl), dtype=np.uint64)
    for n in range(d + 1):
        T[n, 0, 0] = _U1
    for n in range(1, d + 1):
        for t in range(1, k + 1):
            carry = _U0
            for l in range(nl):
                a = T[n - 1, t, l]
                b = T[n, t - 1, l]
                c = T[n - 1, t - 1, l]
                s = a + b
                c1 = s < a
                s2 = s + c
                c2 = s2 < s
                s3 = s2 + carry
                c3 = s3 < s2
                T[n, t, l] = s3
                carry = np.uint64(c1) + np.uint64(c2) + np.uint64(c3)
            if carry != _U0:
                return T, False
    return T, True


def _int_from_limbs(v) -> int:
    out = 0
    for l in range(len(v) - 1, -1, -1):
        out = (out << 64) | int(v[l])
    return out


@functools.lru_cache(maxsize=16)
def _table(d: int, k: int) -> np.ndarray:
    nl = _table_limbs(d, k)
    T, ok = _build_table(d, k, nl)
    if not ok or _int_from_limbs(T[d, k]) != _count(d, k):
        raise AssertionError(f"PVQ count table for d={d}, k={k} is wrong (internal error)")
    T.setflags(write=False)
    return T


def count_table(d: int, k: int) -> np.ndarray:
    """N(n, t) for 0 <= n <= d, 0 <= t <= k as a read-only uint64 array (d+1, k+1, L').

    Limb 0 is the least significant; L' is the number of limbs of N(d, k) itself (equal
    to n_limbs(d, k) except when N(d, k) is exactly 2^(64 L)). The array is cached:
    repeated calls return the same object.
    """
    d, k, _ = _check_all(d, k)
    return _table(d, k)


@functools.lru_cache(maxsize=16)
def _table1(d: int, k: int) -> np.ndarray:
    # single-limb fast-path view of the table, contiguous (d+1, k+1)
    t = np.ascontiguousarray(_table(d, k)[:, :, 0])
    t.setflags(write=False)
    return t


# --------------------------------------------------------------------------------------
# numba kernels: one limb
# --------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _decode1(I, T, d, k, Y):
    """Decode single-limb indices; returns the first bad group or -1."""
    G = I.shape[0]
    nmax = T[d, k]
    for g in range(G):
        b = I[g, 0]
        if b >= nmax:
            return g
        krem = k
        for i in range(d):
            if krem == 0:
                for q in range(i, d):
                    Y[g, q] = 0
                break
            r = d - i - 1
            z = T[r, krem]
            if b < z:
                Y[g, i] = 0
                continue
            b -= z
            j = 1
            while True:
                c = T[r, krem - j]
                if b < c:
                    Y[g, i] = j
                    break
                b -= c
                if b < c:
                    Y[g, i] = -j
                    break
                b -= c
                j += 1
            krem -= j
    return -1


@numba.njit(cache=True)
def _encode1(Y, T, d, k, I):
    """Encode into single-limb indices; returns the first row with sum|y| != k or -1."""
    G = Y.shape[0]
    for g in range(G):
        s = 0
        for i in range(d):
            v = np.int64(Y[g, i])
            s += v if v >= 0 else -v
        if s != k:
            return g
        b = _U0
        krem = k
        for i in range(d):
            v = np.int64(Y[g, i])
            if v == 0:
                continue
            a = v if v > 0 else -v
            r = d - i - 1
            b += T[r, krem]
            for j in range(1, a):
                c = T[r, krem - j]
                b += c
                b += c
            if v < 0:
                b += T[r, krem - a]
            krem -= a
        I[g, 0] = b
    return -1


# --------------------------------------------------------------------------------------
# numba kernels: several limbs
# --------------------------------------------------------------------------------------


@numba.njit(cache=True, inline="always")
def _lt(b, T, r, t, nl):
    """b < T[r, t] (both nl limbs)."""
    for l in range(nl - 1, -1, -1):
        x = b[l]
        y = T[r, t, l]
        if x != y:
            return x < y
    return False


@numba.njit(cache=True, inline="always")
def _sub(b, T, r, t, nl):
    """b -= T[r, t] (caller guarantees b >= T[r, t])."""
    borrow = _U0
    for l in range(nl):
        x = b[l]
        y = T[r, t, l]
        s = x - y
        b1 = x < y
        s2 = s - borrow
        b2 = s < borrow
        b[l] = s2
        borrow = np.uint64(b1 or b2)


@numba.njit(cache=True, inline="always")
def _add(b, T, r, t, nl):
    """b += T[r, t] (no overflow: the sum is < N(d, k))."""
    carry = _U0
    for l in range(nl):
        x = b[l]
        s = x + T[r, t, l]
        c1 = s < x
        s2 = s + carry
        c2 = s2 < s
        b[l] = s2
        carry = np.uint64(c1 or c2)


@numba.njit(cache=True, inline="always")
def _top(T, r, t, nl):
    """Number of significant limbs of T[r, t] (at least 1)."""
    for l in range(nl - 1, 0, -1):
        if T[r, t, l] != _U0:
            return l + 1
    return 1


@numba.njit(cache=True)
def _decodem(I, T, d, k, Y):
    """Decode multi-limb indices; returns the first bad group or -1."""
    G = I.shape[0]
    L = I.shape[1]
    nl = T.shape[2]
    b = np.zeros(nl, dtype=np.uint64)
    for g in range(G):
        for l in range(L):
            b[l] = I[g, l]
        for l in range(L, nl):
            b[l] = _U0
        if not _lt(b, T, d, k, nl):
            return g
        krem = k
        # b < N(d - i, krem) holds at the start of position i; only the limbs of that
        # bound can be non-zero, so the arithmetic runs over `m` limbs.
        m = _top(T, d, k, nl)
        for i in range(d):
            if krem == 0:
                for q in range(i, d):
                    Y[g, q] = 0
                break
            r = d - i - 1
            if _lt(b, T, r, krem, m):
                Y[g, i] = 0
                m = _top(T, r, krem, m)
                continue
            _sub(b, T, r, krem, m)
            j = 1
            while True:
                if _lt(b, T, r, krem - j, m):
                    Y[g, i] = j
                    break
                _sub(b, T, r, krem - j, m)
                if _lt(b, T, r, krem - j, m):
                    Y[g, i] = -j
                    break
                _sub(b, T, r, krem - j, m)
                j += 1
            m = _top(T, r, krem - j, m)
            krem -= j
    return -1


@numba.njit(cache=True)
def _encodem(Y, T, d, k, I):
    """Encode into multi-limb indices; returns the first row with sum|y| != k or -1."""
    G = Y.shape[0]
    L = I.shape[1]
    nl = T.shape[2]
    b = np.zeros(nl, dtype=np.uint64)
    for g in range(G):
        s = 0
        for i in range(d):
            v = np.int64(Y[g, i])
            s += v if v >= 0 else -v
        if s != k:
            return g
        for l in range(nl):
            b[l] = _U0
        krem = k
        for i in range(d):
            v = np.int64(Y[g, i])
            if v == 0:
                continue
            a = v if v > 0 else -v
            r = d - i - 1
            _add(b, T, r, krem, nl)
            for j in range(1, a):
                _add(b, T, r, krem - j, nl)
                _add(b, T, r, krem - j, nl)
            if v < 0:
                _add(b, T, r, krem - a, nl)
            krem -= a
        for l in range(L):
            I[g, l] = b[l]
    return -1


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def encode_indices(Y: np.ndarray, k: int) -> np.ndarray:
    """Indices of the rows of Y (int, shape (G, d)), each of which must have sum|y| == k.

    Returns uint64 (G, L), L = n_limbs(d, k), limb 0 least significant.
    Raises ValueError for bad parameters or a row whose L1 norm is not k.
    """
    Y = np.asarray(Y)
    if Y.ndim != 2:
        raise ValueError(f"Y must be 2-D (groups, d), got shape {Y.shape}")
    if Y.dtype.kind not in "iu":
        raise ValueError(f"Y must be an integer array, got dtype {Y.dtype}")
    if Y.dtype != np.int32:
        if Y.size and (Y.min() < -(2**31) + 1 or Y.max() > 2**31 - 1):
            raise ValueError("Y has entries outside the int32 range")
        Y = Y.astype(np.int32)
    Y = np.ascontiguousarray(Y)
    G, d = Y.shape
    d, k, _ = _check_all(d, k)
    L = n_limbs(d, k)
    I = np.empty((G, L), dtype=np.uint64)
    if G == 0:
        return I
    T = _table(d, k)
    if T.shape[2] == 1:
        bad = _encode1(Y, _table1(d, k), d, k, I)
    else:
        bad = _encodem(Y, T, d, k, I)
    if bad >= 0:
        s = int(np.abs(Y[bad].astype(np.int64)).sum())
        raise ValueError(f"row {bad} of Y has sum |y| = {s}, expected k = {k}")
    return I


def decode_indices(I: np.ndarray, d: int, k: int) -> np.ndarray:
    """Vectors of S(d, k) for indices I (uint64, shape (G, L), L = n_limbs(d, k)).

    Returns int32 (G, d). Raises PayloadCorrupt if an index is >= N(d, k) (naming the
    first such group); ValueError for bad parameters or a wrongly shaped I.
    """
    d, k, _ = _check_all(d, k)
    L = n_limbs(d, k)
    I = np.asarray(I)
    if I.ndim != 2 or I.shape[1] != L:
        raise ValueError(f"I must have shape (groups, {L}) for d={d}, k={k}, got {I.shape}")
    if I.dtype != np.uint64:
        raise ValueError(f"I must be uint64, got dtype {I.dtype}")
    I = np.ascontiguousarray(I)
    G = I.shape[0]
    Y = np.empty((G, d), dtype=np.int32)
    if G == 0:
        return Y
    T = _table(d, k)
    if T.shape[2] == 1:
        bad = _decode1(I, _table1(d, k), d, k, Y)
    else:
        bad = _decodem(I, T, d, k, Y)
    if bad >= 0:
        raise PayloadCorrupt(f"PVQ index of group {bad} is >= N({d}, {k})")
    return Y
