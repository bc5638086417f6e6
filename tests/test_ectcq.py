"""Entropy-constrained TCQ research code (pvqcodec/codecs/ectcq): Ungerboeck's trellises,
the union symbols, the rate-distortion Viterbi search against exhaustive search, and the
measured gain of more states."""

import itertools
import math

import numpy as np
import pytest

from pvqcodec.codecs.ectcq.quantizer import conditional_entropy_bits, ectcq_quantize
from pvqcodec.codecs.ectcq.trellis import UNGERBOECK_1D, symbol_grid_index, trellis_tables, union_symbol
from pvqcodec.codecs.ectcq.viterbi import viterbi_rows, walk_unions


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


def test_union_symbols():
    j = np.arange(-9, 10)
    s = union_symbol(j)
    assert dict(zip(j.tolist(), s.tolist()))[0] == 0
    assert [int(union_symbol(np.array([k]))[0]) for k in (1, -1, 3, -3)] == [0, 1, 2, 3]
    assert [int(union_symbol(np.array([k]))[0]) for k in (0, 2, -2, 4, -4)] == [0, 1, 2, 3, 4]
    assert np.array_equal(symbol_grid_index(s, j & 1), j)


def brute_force_cost(x, step, rec, lens, lam, nxt, union):
    """Exhaustive search over every path (2^n) and, per step, every grid point in -30..30."""
    nsym = rec.shape[1]

    def point_cost(v, d):
        best = math.inf
        for j in range(-30, 31):
            if j % 4 != d:
                continue
            s = int(union_symbol(np.array([j]))[0])
            u = j & 1
            r, ln = (rec[u, s], lens[u, s]) if s < nsym else (j * step, lens[u, nsym - 1] + 4.0)
            best = min(best, (v - r) ** 2 + lam * ln)
        return best

    best = math.inf
    for bits in itertools.product((0, 1), repeat=len(x)):
        s, c = 0, 0.0
        for v, z1 in zip(x, bits):
            c += point_cost(v, 2 * z1 + int(union[s]))
            s = int(nxt[s, z1])
        best = min(best, c)
    return best


@pytest.mark.parametrize("seed", range(4))
def test_viterbi_matches_exhaustive_search(seed):
    rng = np.random.default_rng(seed)
    n, step, lam = 7, 0.6, 0.05
    x = rng.standard_normal((1, n)) * 1.3
    nxt, union = trellis_tables(3)
    nsym = 12
    lens = rng.uniform(0.5, 6.0, (2, nsym))
    jgrid = np.stack([symbol_grid_index(np.arange(nsym), np.full(nsym, u)) for u in (0, 1)])
    rec = jgrid * step * rng.uniform(0.85, 1.0, (2, nsym))  # centroids pulled towards 0
    out = np.empty((1, n), np.int64)
    cost = viterbi_rows(x, np.ones_like(x), step, rec, lens, lam, nxt, union, out)
    assert cost[0] == pytest.approx(brute_force_cost(x[0], step, rec, lens, lam, nxt, union), abs=1e-9)
    # the path is a trellis path: every grid index lies in its state's union
    u = walk_unions(out, nxt, union)
    assert np.array_equal(out & 1, u)


def gap_db(v, x):
    r = ectcq_quantize(x, np.ones_like(x), 0.66, 0.12 * 0.66**2, v=v, iters=6)
    rate = conditional_entropy_bits(r["counts"]) / x.size
    mse = float(np.mean((x - r["y"]) ** 2))
    return 10 * math.log10(mse / 2.0 ** (-2 * rate)), rate


def test_more_states_come_closer_to_the_bound():
    """At about 2 bits on N(0, 1): 8 states about 0.45 dB from D(R), 256 states about 0.2 dB
    (bench/RESULTS.md); entropy-coded scalar quantization is 1.5 dB away."""
    x = np.random.default_rng(9).standard_normal((8, 4096))
    g8, r8 = gap_db(3, x)
    g256, r256 = gap_db(8, x)
    assert 1.8 < r8 < 2.2 and 1.8 < r256 < 2.2
    assert g8 < 0.6
    assert g256 < g8 - 0.12


def test_weighting_moves_error_to_light_values():
    """The weighting hook: the first half of each row weighted 20 times more gets a smaller
    error than without a weighting, and a smaller share of the error (same step and lambda;
    the rate is not held fixed: the weighted run spends more)."""
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
