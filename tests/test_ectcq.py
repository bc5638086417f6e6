"""The ectcq codec's trellis and encoder search (pvqcodec/codecs/ectcq, spec codecs/ectcq.md
6.7.4, 6.7.5, 6.7.7): Ungerboeck's trellises against the spec's tables, the union
symbols, the rate-distortion Viterbi search against exhaustive search, and the measured
gain of more states."""

import itertools
import math

import numpy as np
import pytest

from pvqcodec.codecs.ectcq.quantizer import conditional_entropy_bits, ectcq_quantize, truncate_offsets
from pvqcodec.codecs.ectcq.trellis import UNGERBOECK_1D, predecessors, symbol_grid_index, trellis_tables, union_symbol
from pvqcodec.codecs.ectcq.viterbi import viterbi_rows, walk_states


@pytest.mark.parametrize("v", sorted(UNGERBOECK_1D))
def test_trellis_is_ungerboecks(v):
    """Two distinct successors per state, two predecessors per state, both in one union, and
    the union bit is the state's low bit."""
    nxt, union = trellis_tables(v)
    n = 1 << v
    assert nxt.shape == (n, 2) and np.all(nxt[:, 0] != nxt[:, 1])
    assert np.bincount(nxt.ravel(), minlength=n).tolist() == [2] * n
    for t in range(n):
        preds = [s for s in range(n) for z in (0, 1) if nxt[s, z] == t]
        assert len({int(union[s]) for s in preds}) == 1
    assert union.tolist() == [s & 1 for s in range(n)]
    pred, sub = predecessors(v)
    for t in range(n):
        for k in range(2):
            s, d = int(pred[t, k]), int(sub[t, k])
            assert d & 1 == s & 1 and nxt[s, d >> 1] == t


def test_trellis_tables_of_the_spec():
    """Spec 6.7.4: the 8-state table in full and the check values of the larger ones."""
    nxt, _ = trellis_tables(3)
    assert nxt[:, 0].tolist() == [0, 5, 1, 4, 2, 7, 3, 6]
    assert nxt[:, 1].tolist() == [2, 7, 3, 6, 0, 5, 1, 4]
    check = {4: [(0, 2), (9, 11), (1, 3), (8, 10), (14, 12)],
             5: [(0, 4), (18, 22), (1, 5), (19, 23), (29, 25)],
             6: [(0, 10), (33, 43), (1, 11), (32, 42), (62, 52)],
             7: [(0, 43), (78, 101), (1, 42), (79, 100), (113, 90)],
             8: [(0, 121), (166, 223), (1, 120), (167, 222), (217, 160)]}
    for v, rows in check.items():
        nxt, _ = trellis_tables(v)
        got = [tuple(int(a) for a in nxt[s]) for s in (0, 1, 2, 3, (1 << v) - 1)]
        assert got == rows, v


def test_union_symbols():
    """Spec 6.7.5: s = j - 1 for j > 0, -j for j <= 0; the inverse by the parity of s + u."""
    assert union_symbol(np.array([0, 2, -2, 4, -4, 6])).tolist() == [0, 1, 2, 3, 4, 5]
    assert union_symbol(np.array([1, -1, 3, -3, 5])).tolist() == [0, 1, 2, 3, 4]
    j = np.arange(-40000, 40001)
    assert np.array_equal(symbol_grid_index(union_symbol(j), j & 1), j)
    s = np.arange(65536)
    assert symbol_grid_index(s, np.zeros_like(s)).max() == 65536
    assert symbol_grid_index(s, np.ones_like(s)).min() == -65535


def brute_force_cost(x, step, rec, lens, lam, v, start=0):
    """Every path (2^n subset choices) and, per step, every grid point of the subset in
    -30..30: the minimum of sum (x - y)^2 + lam len."""
    nxt, union = trellis_tables(v)
    nsym = lens.shape[1]

    def point_cost(val, d):
        best = math.inf
        for j in range(-30, 31):
            if j % 4 != d:
                continue
            m = abs(j)
            y = rec[m] if j >= 0 else -rec[m]
            s = j - 1 if j > 0 else -j
            ln = lens[j & 1, s] if s < nsym else lens[j & 1, nsym - 1] + 4.0
            best = min(best, (val - y) ** 2 + lam * ln)
        return best

    best = math.inf
    for bits in itertools.product((0, 1), repeat=len(x)):
        s, c = start, 0.0
        for val, z1 in zip(x, bits):
            c += point_cost(val, 2 * z1 + int(union[s]))
            s = int(nxt[s, z1])
        best = min(best, c)
    return best


@pytest.mark.parametrize("seed", range(5))
def test_viterbi_matches_exhaustive_search(seed):
    """The Viterbi's cost equals the minimum over all paths (n = 6, 8 states), from state 0
    and from another start state; its path is a trellis path."""
    rng = np.random.default_rng(seed)
    n, step, lam, v = 6, 0.6, 0.05 + 0.1 * seed, 3
    x = rng.standard_normal((2, n)) * 1.3
    nsym = 31
    lens = rng.uniform(0.5, 6.0, (2, nsym))
    rec = np.arange(nsym) * step * rng.uniform(0.85, 1.0, nsym)  # centroids pulled towards 0
    rec[0] = 0.0
    starts = np.array([0, 5])
    j, cost, ends = viterbi_rows(x, np.ones_like(x), step, rec, lens, lam, v, start_states=starts)
    for r in range(2):
        assert cost[r] == pytest.approx(brute_force_cost(x[r], step, rec, lens, lam, v, int(starts[r])), abs=1e-9)
    assert np.array_equal(walk_states(j, v, starts), ends)
    y = np.where(j < 0, -1, 1) * rec[np.abs(j)]
    s = np.where(j > 0, j - 1, -j)
    again = ((x - y) ** 2 + lam * lens[j & 1, s]).sum(axis=1)
    assert np.allclose(again, cost)


def test_walk_rejects_a_non_path():
    with pytest.raises(ValueError, match="union"):
        walk_states(np.array([[0, 0, 1]]), 3)  # state 0 -> 0 -> 0: union A_0, j = 1 is odd


def gap_db(v, x):
    r = ectcq_quantize(x, np.ones_like(x), 0.66, 0.1 * 0.66**2, v=v, iters=4)
    rate = conditional_entropy_bits(r["counts"]) / x.size
    mse = float(np.mean((x - r["y"]) ** 2))
    return 10 * math.log10(mse / 2.0 ** (-2 * rate)), rate


def test_more_states_come_closer_to_the_bound():
    """At about 2 bits on N(0, 1): 8 states about 0.45 dB from D(R), 256 states about 0.2 dB
    (bench/RESULTS.md); entropy-coded scalar quantization is 1.5 dB away."""
    x = np.random.default_rng(9).standard_normal((8, 4096))
    g8, r8 = gap_db(3, x)
    g256, r256 = gap_db(8, x)
    assert 1.6 < r8 < 2.4 and 1.6 < r256 < 2.4
    assert g8 < 0.6
    assert g256 < g8 - 0.12


def test_weighting_moves_error_to_light_values():
    """The weighting hook: the first half of each row weighted 20 times more gets a smaller
    error than without a weighting, and a smaller share of the error (same step and lambda)."""
    x = np.random.default_rng(13).standard_normal((4, 2048))
    w = np.ones_like(x)
    w[:, :1024] = 20.0
    step, lam = 0.69, 0.1 * 0.69**2
    y0 = ectcq_quantize(x, np.ones_like(x), step, lam, v=3, iters=4)["y"]
    y1 = ectcq_quantize(x, w, step, lam, v=3, iters=4)["y"]
    e0, e1 = (x - y0) ** 2, (x - y1) ** 2
    assert e1[:, :1024].mean() < 0.95 * e0[:, :1024].mean()
    share0 = e0[:, :1024].mean() / e0[:, 1024:].mean()
    share1 = e1[:, :1024].mean() / e1[:, 1024:].mean()
    assert share1 < 0.95 * share0


@pytest.mark.parametrize("seed", range(4))
def test_offset_truncation_is_the_exhaustive_optimum(seed):
    """truncate_offsets keeps the count n of offsets minimizing the distortion of sharing
    off_n above n (0 for n = 0) plus lam * 32 bits per offset: checked against every n."""
    rng = np.random.default_rng(seed)
    M = 12
    off = np.concatenate([[0.0], rng.uniform(-0.2, 0.6, M)])
    weight = np.concatenate([[5.0], rng.uniform(0, 50, M) * np.exp(-np.arange(M) / 3)])
    step, lam = 0.5, [0.0005, 0.01, 0.2, 10.0][seed]

    def cost(n):
        c = off[n] if n else 0.0
        return sum(weight[m] * ((off[m] - c) * step) ** 2 for m in range(n + 1, M + 1)) + lam * 32 * n

    best = min(range(M + 1), key=lambda n: (round(cost(n), 12), n))
    got = truncate_offsets(off, weight, step, lam)
    shared = off[best] if best else 0.0
    assert np.allclose(got[: best + 1], off[: best + 1]) and np.all(got[best + 1 :] == shared)
