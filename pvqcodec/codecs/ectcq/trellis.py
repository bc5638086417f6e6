"""Ungerboeck's trellises for one-dimensional TCQ (spec codecs/ectcq.md 6.7.2, 6.7.4, 6.7.5).

The scalar grid j * step (j any integer) is split into four subsets D_d, d = j mod 4,
and two unions A_0 = D_0 u D_2 (j even), A_1 = D_1 u D_3 (j odd). Each trellis state
allows exactly one union; its two branches choose between the union's two subsets, and
the subset bit z1 = (j mod 4) div 2 decides the next state.

The trellis is the systematic feedback encoder of Ungerboeck's parity-check polynomials
(h0, h1) (Ungerboeck 1987, Part II, table I, one-dimensional signals) in observer form,
with the union bit z0 = j mod 2 and the subset bit z1 related by h0(D) z0(D) = h1(D) z1(D)
over GF(2). With v = deg h0 state bits w_1..w_v (w_k = bit k-1 of the state number):

    z0 = w_1                                  (the union is the state's low bit)
    w_k <- w_(k+1) xor (h1_k and z1) xor (h0_k and z0),   k = 1..v,  w_(v+1) = 0
"""

import functools

import numpy as np

# (h0, h1) in octal, Ungerboeck's one-dimensional (amplitude) codes by state bits v.
# The format allows v = 3..8 (6.7.1); v = 2 is kept for experiments.
UNGERBOECK_1D = {
    2: (0o5, 0o2),
    3: (0o13, 0o04),
    4: (0o23, 0o04),
    5: (0o45, 0o10),
    6: (0o103, 0o024),
    7: (0o235, 0o126),
    8: (0o515, 0o362),
}
STATE_BITS = range(3, 9)  # the format's state_bits (6.7.1)


@functools.lru_cache(maxsize=None)
def _tables(v: int) -> tuple:
    h0, h1 = UNGERBOECK_1D[v]
    n = 1 << v
    nxt = np.zeros((n, 2), np.int64)
    union = np.zeros(n, np.int64)
    for s in range(n):
        z0 = s & 1
        union[s] = z0
        for z1 in (0, 1):
            t = 0
            for k in range(1, v + 1):
                wk1 = (s >> k) & 1 if k < v else 0  # w_(k+1) is bit k of s
                bit = wk1 ^ (((h1 >> k) & 1) & z1) ^ (((h0 >> k) & 1) & z0)
                t |= bit << (k - 1)
            nxt[s, z1] = t
    nxt.setflags(write=False)
    union.setflags(write=False)
    return nxt, union


def trellis_tables(v: int) -> tuple:
    """(next_state[s, z1], union[s]) of the 2^v-state trellis, int64 arrays (read-only)."""
    return _tables(v)


@functools.lru_cache(maxsize=None)
def predecessors(v: int) -> tuple:
    """(pred[t, 2], subset[t, 2]): the two states leading to state t and the subset
    d = 2 z1 + u of each of those branches (int64, read-only); the form the Viterbi's
    add-compare-select step reads."""
    nxt, union = _tables(v)
    n = nxt.shape[0]
    pred = np.full((n, 2), -1, np.int64)
    sub = np.zeros((n, 2), np.int64)
    fill = np.zeros(n, np.int64)
    for s in range(n):
        for z1 in (0, 1):
            t = nxt[s, z1]
            pred[t, fill[t]] = s
            sub[t, fill[t]] = 2 * z1 + union[s]
            fill[t] += 1
    assert np.all(fill == 2)
    pred.setflags(write=False)
    sub.setflags(write=False)
    return pred, sub


def union_symbol(j: np.ndarray) -> np.ndarray:
    """Grid index j -> its union symbol (6.7.5): s = j - 1 for j > 0, -j for j <= 0, so
    A_0's 0, 2, -2, 4, ... and A_1's 1, -1, 3, -3, ... both map to 0, 1, 2, 3, ..."""
    j = np.asarray(j, np.int64)
    return np.where(j > 0, j - 1, -j)


def symbol_grid_index(s: np.ndarray, union: np.ndarray) -> np.ndarray:
    """The inverse of union_symbol (6.7.5): j = s + 1 if s + u is odd, else -s."""
    s = np.asarray(s, np.int64)
    u = np.asarray(union, np.int64)
    return np.where(((s + u) & 1) == 1, s + 1, -s)
