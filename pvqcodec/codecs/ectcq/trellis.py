"""Ungerboeck's trellises for one-dimensional TCQ (Marcellin and Fischer 1990).

The scalar grid j * step (j any integer) is split into four subsets D_d, d = j mod 4,
and two unions A_0 = D_0 u D_2 (j even), A_1 = D_1 u D_3 (j odd). Each trellis state
allows exactly one union; its two branches choose between the union's two subsets, and
the subset chosen decides the next state.

The trellis is the systematic feedback encoder of Ungerboeck's parity-check polynomials
(h0, h1) (Ungerboeck 1987, Part II, table I, one-dimensional signals) in observer form,
with the union bit z0 = d & 1 and the subset bit z1 = d >> 1 related by
h0(D) z0(D) = h1(D) z1(D) over GF(2). With v = deg h0 state bits w_1..w_v:

    z0 = w_1                                  (the union is a function of the state)
    w_k <- w_(k+1) xor (h1_k and z1) xor (h0_k and z0),   k = 1..v,  w_(v+1) = 0

State bit w_k is bit k-1 of the state number.
"""

import numpy as np

# (h0, h1) in octal, Ungerboeck's one-dimensional (amplitude) codes by state bits v.
UNGERBOECK_1D = {
    2: (0o5, 0o2),
    3: (0o13, 0o04),
    4: (0o23, 0o04),
    5: (0o45, 0o10),
    6: (0o103, 0o024),
    7: (0o235, 0o126),
    8: (0o515, 0o362),
}


def trellis_tables(v: int) -> tuple:
    """(next_state[s, z1], union[s]) of the 2^v-state trellis, int64 arrays."""
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
    return nxt, union


def union_symbol(j: np.ndarray) -> np.ndarray:
    """Grid index j -> its symbol within its union: A_0 (j = 2t): zigzag(t) = 0, 1, 2, ...
    for t = 0, 1, -1, 2, ...; A_1 (j = 2t + 1): 2t for t >= 0, -2t - 1 for t < 0, so
    +1, -1, +3, -3, ... map to 0, 1, 2, 3, ..."""
    j = np.asarray(j, np.int64)
    t = j >> 1  # floor division
    even = (j & 1) == 0
    s_even = np.where(t > 0, 2 * t - 1, -2 * t)
    s_odd = np.where(t >= 0, 2 * t, -2 * t - 1)
    return np.where(even, s_even, s_odd)


def symbol_grid_index(s: np.ndarray, union: np.ndarray) -> np.ndarray:
    """The inverse of union_symbol: symbol s of union u -> grid index j."""
    s = np.asarray(s, np.int64)
    u = np.asarray(union, np.int64)
    t_even = np.where(s & 1, (s + 1) >> 1, -(s >> 1))
    t_odd = np.where(s & 1, -((s + 1) >> 1), s >> 1)
    return np.where(u == 0, 2 * t_even, 2 * t_odd + 1)
