"""Hadamard matrices of the block orders the RHT uses (spec/transforms.md, 5.3.2-5.3.3).

A block order b is either a power of two (H_b is the Sylvester matrix S_b) or
b = h * q with q a power of two and h a *base order* from Paley's
constructions (odd part > 1, h <= 256): H_b = H_h (x) S_q (Kronecker product).
The factorization is canonical: the smallest base order h = o * 2^j (o the odd
part of b) that exists in the base table is used, so every decoder builds the
same matrix.

All matrices are np.int8 with entries +1/-1. Cached arrays are read-only.
"""

from functools import lru_cache

import numpy as np

MAX_BASE_ORDER = 256  # base orders h <= 256
MAX_BLOCK = 65536  # block orders 1 <= b <= 65536
DEFAULT_BLOCK_MAX = 4096  # encoder policy: blocks <= 4096 (informative)


def _as_int(x, what: str) -> int:
    """x as a Python int; ValueError for bools, floats and other non-integers."""
    if isinstance(x, (bool, np.bool_)):
        raise ValueError(f"{what} must be an integer, got {x!r}")
    try:
        return int(x.__index__())
    except (AttributeError, TypeError):
        raise ValueError(f"{what} must be an integer, got {x!r}") from None


def _is_prime(p: int) -> bool:
    if p < 2:
        return False
    if p % 2 == 0:
        return p == 2
    d = 3
    while d * d <= p:
        if p % d == 0:
            return False
        d += 2
    return True


def _odd_part(b: int):
    """(o, v) with b = o * 2^v and o odd (b >= 1)."""
    v = (b & -b).bit_length() - 1
    return b >> v, v


def chi_table(p) -> np.ndarray:
    """The quadratic character mod an odd prime p, as np.int8 of length p.

    chi[0] = 0; chi[a] = +1 if a is a nonzero square mod p, else -1.
    """
    p = _as_int(p, "p")
    if p < 3 or not _is_prime(p):
        raise ValueError(f"chi_table needs an odd prime, got {p}")
    chi = np.full(p, -1, dtype=np.int8)
    chi[0] = 0
    a = np.arange(1, p, dtype=np.int64)
    chi[(a * a) % p] = 1
    return chi


@lru_cache(maxsize=None)
def _base_table() -> tuple:
    table = {}
    # Paley I first: it wins when both constructions give the same order.
    for p in range(3, MAX_BASE_ORDER):
        if _is_prime(p) and p % 4 == 3:
            h = p + 1
            if h <= MAX_BASE_ORDER and _odd_part(h)[0] > 1:
                table.setdefault(h, ("paley1", p))
    for p in range(5, MAX_BASE_ORDER):
        if _is_prime(p) and p % 4 == 1:
            h = 2 * (p + 1)
            if h <= MAX_BASE_ORDER and _odd_part(h)[0] > 1:
                table.setdefault(h, ("paley2", p))
    return tuple((h, c, p) for h, (c, p) in sorted(table.items()))


@lru_cache(maxsize=None)
def _base_dict() -> dict:
    return {h: (c, p) for h, c, p in _base_table()}


def base_orders() -> list:
    """The base table: a sorted list of (h, construction, p), construction "paley1" or "paley2"."""
    return list(_base_table())


def _paley1(p: int) -> np.ndarray:
    chi = chi_table(p).astype(np.int64)
    h = p + 1
    H = np.empty((h, h), dtype=np.int8)
    H[0, :] = 1
    H[1:, 0] = -1
    i = np.arange(p)
    H[1:, 1:] = chi[(i[None, :] - i[:, None]) % p]  # chi((j - i) mod p)
    H[np.arange(1, h), np.arange(1, h)] = 1
    return H


def _paley2(p: int) -> np.ndarray:
    chi = chi_table(p).astype(np.int64)
    n = p + 1
    C = np.empty((n, n), dtype=np.int64)
    C[0, 0] = 0
    C[0, 1:] = 1
    C[1:, 0] = 1
    i = np.arange(p)
    C[1:, 1:] = chi[(i[None, :] - i[:, None]) % p]  # 0 on the diagonal
    M0 = np.array([[1, -1], [-1, -1]], dtype=np.int64)
    M1 = np.array([[1, 1], [1, -1]], dtype=np.int64)
    H = np.kron(C, M1)  # H[2i+r][2j+c] = C[i][j] * M1[r][c]
    for k in range(n):  # diagonal 2x2 blocks: M0 (C[i][i] = 0 there)
        H[2 * k:2 * k + 2, 2 * k:2 * k + 2] = M0
    return H.astype(np.int8)


@lru_cache(maxsize=None)
def base_matrix(h) -> np.ndarray:
    """The Hadamard matrix H_h of a base order h (np.int8, h x h, read-only)."""
    h = _as_int(h, "h")
    entry = _base_dict().get(h)
    if entry is None:
        raise ValueError(f"{h} is not a base order (see base_orders())")
    construction, p = entry
    H = _paley1(p) if construction == "paley1" else _paley2(p)
    H.setflags(write=False)
    return H


@lru_cache(maxsize=32)
def _sylvester_cached(e: int) -> np.ndarray:
    n = 1 << e
    i = np.arange(n, dtype=np.uint32)
    a = i[:, None] & i[None, :]
    # parity of popcount(a)
    par = np.zeros_like(a)
    while True:
        nz = a != 0
        if not nz.any():
            break
        par ^= a & 1
        a >>= 1
    S = (1 - 2 * par.astype(np.int16)).astype(np.int8)
    S.setflags(write=False)
    return S


def sylvester(e) -> np.ndarray:
    """The Sylvester matrix S_{2^e}: S[i][j] = (-1)^popcount(i AND j) (np.int8, read-only)."""
    e = _as_int(e, "e")
    if e < 0 or e > 16:
        raise ValueError(f"sylvester: exponent must be in 0..16, got {e}")
    return _sylvester_cached(e)


def factor_block(b):
    """The canonical factorization of a block order: (h, q) with b = h * q, or None.

    h = 1 for powers of two (H_b = S_b); otherwise h is the smallest base
    order o * 2^j (o = odd part of b, j <= v2(b)) and q = b / h, a power of two.
    None if b is not a valid block order (no such h, or b > 65536).
    ValueError if b is not a positive integer.
    """
    b = _as_int(b, "block order")
    if b < 1:
        raise ValueError(f"block order must be >= 1, got {b}")
    if b > MAX_BLOCK:
        return None
    o, v = _odd_part(b)
    if o == 1:
        return (1, b)
    base = _base_dict()
    for j in range(v + 1):
        h = o << j
        if h > MAX_BASE_ORDER:
            break
        if h in base:
            return (h, b // h)
    return None


def is_valid_block(b) -> bool:
    """True if b is a valid block order (1 <= b <= 65536 and factor_block(b) is not None)."""
    try:
        b = _as_int(b, "block order")
    except ValueError:
        return False
    return b >= 1 and factor_block(b) is not None


def hadamard(b) -> np.ndarray:
    """The dense H_b = H_h (x) S_q of a valid block order (np.int8, b x b). For tests and small b."""
    f = factor_block(b)
    if f is None:
        raise ValueError(f"{b} is not a valid block order")
    h, q = f
    S = sylvester(q.bit_length() - 1)
    if h == 1:
        return S.copy()
    return np.kron(base_matrix(h), S).astype(np.int8)


def default_block(n) -> int:
    """The encoder's default block for a side of length n (informative policy).

    Among the valid blocks b <= 4096 dividing n: if 8 divides n and some such b
    >= 128 divides n / 8, the largest of those (so tensor-parallel shards of
    1, 2, 4 or 8 never cut a block); otherwise the largest valid b dividing n
    (1, signs only, if nothing else).
    """
    n = _as_int(n, "length")
    if n < 1:
        raise ValueError(f"length must be >= 1, got {n}")
    cands = [b for b in range(1, min(n, DEFAULT_BLOCK_MAX) + 1) if n % b == 0 and is_valid_block(b)]
    if n % 8 == 0:
        shard = n // 8
        tp = [b for b in cands if b >= 128 and shard % b == 0]
        if tp:
            return max(tp)
    return max(cands)  # 1 is always a candidate
