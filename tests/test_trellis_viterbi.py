"""The trellis bit string and the Viterbi encoder: state extraction and packing round trips,
tail-biting, and optimality against brute force over every path of small trellises."""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvqcodec.codecs.trellis.bitstream import is_tail_biting, states_to_words, words_to_states
from pvqcodec.codecs.trellis.viterbi import viterbi_encode


# ---- the bit string (spec 6.3.3), computed independently bit by bit ---------------------------


def bits_of_words(words):
    """Bit i of the string: bit 31 - (i mod 32) of word i div 32."""
    return [(int(words[i // 32]) >> (31 - i % 32)) & 1 for i in range(32 * len(words))]


def states_by_definition(words, L, kv):
    b = bits_of_words(words)
    n = len(b)
    out = []
    for t in range(n // kv):
        s = 0
        for i in range(L):
            s = (s << 1) | b[(t * kv + i) % n]
        out.append(s)
    return out


@given(st.integers(1, 8), st.integers(0, 15), st.integers(1, 3), st.data())
def test_states_follow_the_definition(kv, extra, n_words, data):
    L = min(16, kv + extra)
    words = data.draw(st.lists(st.integers(0, 2**32 - 1), min_size=n_words * kv, max_size=n_words * kv))
    w = np.array(words, np.uint32)[None, :]
    got = words_to_states(w, L, kv)
    assert got.shape == (1, 32 * len(words) // kv)
    assert got[0].tolist() == states_by_definition(words, L, kv)


@given(st.integers(1, 8), st.integers(0, 15), st.integers(1, 4), st.data())
def test_words_states_words_round_trip(kv, extra, n_words, data):
    """Every bit string is a valid tail-biting path, and packing its states gives it back."""
    L = min(16, kv + extra)
    words = np.array(data.draw(st.lists(st.integers(0, 2**32 - 1), min_size=n_words * kv, max_size=n_words * kv)),
                     np.uint32).reshape(1, -1)
    s = words_to_states(words, L, kv)
    assert is_tail_biting(s[0], L, kv)
    assert np.array_equal(states_to_words(s, L, kv), words)


@given(st.integers(1, 8), st.integers(0, 15), st.integers(1, 3), st.data())
def test_states_words_states_round_trip(kv, extra, n_words, data):
    """A consistent circular path, built from random new bits, survives packing."""
    L = min(16, kv + extra)
    S = 32 * n_words
    new = data.draw(st.lists(st.integers(0, 2**kv - 1), min_size=S, max_size=S))
    # the string is the top kv bits of each state: concatenate the chunks
    bits = [(v >> (kv - 1 - i)) & 1 for v in new for i in range(kv)]
    n = len(bits)
    states = []
    for t in range(S):
        s = 0
        for i in range(L):
            s = (s << 1) | bits[(t * kv + i) % n]
        states.append(s)
    arr = np.array([states], np.uint32)
    assert is_tail_biting(arr[0], L, kv)
    words = states_to_words(arr, L, kv)
    assert np.array_equal(words_to_states(words, L, kv), arr)


def test_tail_biting_detects_a_broken_seam():
    L, kv = 6, 2
    s = words_to_states(np.array([[0x12345678, 0x9ABCDEF0]], np.uint32), L, kv)[0].astype(np.int64)
    assert is_tail_biting(s, L, kv)
    bad = s.copy()
    bad[0] ^= 1 << (L - 1)  # the first state's top bit no longer matches the last state's low bits
    assert not is_tail_biting(bad, L, kv)


# ---- brute force ------------------------------------------------------------------------------------


def path_cost(states, x, w, lut):
    V = x.shape[1]
    return sum(float(w[t, v]) * (float(x[t, v]) - float(lut[v, s])) ** 2
               for t, s in enumerate(states) for v in range(V))


def all_linear_paths(L, kv, S):
    """Every path with a free first state: 2^L * 2^(kv (S - 1))."""
    mask = (1 << L) - 1
    for s0 in range(1 << L):
        for news in itertools.product(range(1 << kv), repeat=S - 1):
            p = [s0]
            for b in news:
                p.append(((p[-1] << kv) | b) & mask)
            yield p


def all_tail_biting_paths(L, kv, S):
    """Every circular bit string of S * kv bits, as its state sequence."""
    n = S * kv
    for v in range(1 << n):
        bits = [(v >> (n - 1 - i)) & 1 for i in range(n)]
        p = []
        for t in range(S):
            s = 0
            for i in range(L):
                s = (s << 1) | bits[(t * kv + i) % n]
            p.append(s)
        yield p


CASES = [  # (L, k, V, S): small enough for brute force
    (3, 1, 1, 6),
    (4, 1, 1, 8),
    (4, 2, 1, 5),
    (5, 1, 1, 7),
    (4, 1, 2, 5),
    (6, 2, 1, 4),
    (3, 3, 1, 4),
    (4, 2, 2, 3),
]


def _problem(L, V, S, seed, weighted):
    rng = np.random.default_rng(seed)
    lut = rng.standard_normal((V, 1 << L))
    x = rng.standard_normal((S, V))
    w = rng.uniform(0.0, 2.0, (S, V)) if weighted else np.ones((S, V))
    if weighted:
        w[rng.random((S, V)) < 0.2] = 0.0  # zero weights: padding
    return lut, x, w


@pytest.mark.parametrize("L,k,V,S", CASES)
@pytest.mark.parametrize("weighted", [False, True])
def test_free_viterbi_is_optimal(L, k, V, S, weighted):
    kv = k * V
    for seed in range(3):
        lut, x, w = _problem(L, V, S, seed, weighted)
        states, cost = viterbi_encode(x[None], w[None], lut, L, kv, mode="free", dtype=np.float64)
        best = min(path_cost(p, x, w, lut) for p in all_linear_paths(L, kv, S))
        got = path_cost(states[0].tolist(), x, w, lut)
        assert got == pytest.approx(best, rel=1e-12, abs=1e-12)
        assert float(cost[0]) == pytest.approx(got, rel=1e-12, abs=1e-12)
        # a valid path
        s = states[0]
        assert np.all((s[:-1] & ((1 << (L - kv)) - 1)) == (s[1:] >> kv))


@pytest.mark.parametrize("L,k,V,S", CASES)
@pytest.mark.parametrize("weighted", [False, True])
def test_tail_biting_viterbi(L, k, V, S, weighted):
    """exact mode: the best tail-biting path; two-pass mode: a tail-biting path that is
    the best among those with its own overlap, and never better than exact."""
    kv = k * V
    for seed in range(3):
        lut, x, w = _problem(L, V, S, seed + 10, weighted)
        paths = list(all_tail_biting_paths(L, kv, S))
        costs = [path_cost(p, x, w, lut) for p in paths]
        best = min(costs)

        ex, ex_cost = viterbi_encode(x[None], w[None], lut, L, kv, mode="exact", dtype=np.float64)
        assert is_tail_biting(ex[0], L, kv)
        assert path_cost(ex[0].tolist(), x, w, lut) == pytest.approx(best, rel=1e-12, abs=1e-12)

        tp, tp_cost = viterbi_encode(x[None], w[None], lut, L, kv, mode="two-pass", dtype=np.float64)
        assert is_tail_biting(tp[0], L, kv)
        got = path_cost(tp[0].tolist(), x, w, lut)
        assert got >= best - 1e-12
        assert float(tp_cost[0]) == pytest.approx(got, rel=1e-12, abs=1e-12)
        ov = int(tp[0][0]) >> kv
        same = min(c for p, c in zip(paths, costs) if p[0] >> kv == ov)
        assert got == pytest.approx(same, rel=1e-12, abs=1e-12)


def test_two_pass_finds_the_optimum_on_long_sequences():
    """On sequences much longer than the trellis memory the two-pass overlap is the best
    one (QTIP Table 2): compare with trying every overlap."""
    rng = np.random.default_rng(7)
    L, kv, S = 6, 2, 64
    lut = rng.standard_normal((1, 1 << L))
    x = rng.standard_normal((20, S, 1))
    _, c2 = viterbi_encode(x, np.ones_like(x), lut, L, kv, mode="two-pass", dtype=np.float64)
    _, ce = viterbi_encode(x, np.ones_like(x), lut, L, kv, mode="exact", dtype=np.float64)
    assert np.all(c2 >= ce - 1e-12)
    assert np.sum(c2) <= np.sum(ce) * 1.002


def test_parallel_workers_agree_and_float32_close():
    rng = np.random.default_rng(3)
    L, kv = 8, 2
    lut = rng.standard_normal((1, 1 << L))
    x = rng.standard_normal((7, 32, 1))
    s1, c1 = viterbi_encode(x, np.ones_like(x), lut, L, kv, dtype=np.float64, workers=1)
    s2, c2 = viterbi_encode(x, np.ones_like(x), lut, L, kv, dtype=np.float64, workers=3)
    assert np.array_equal(s1, s2) and np.array_equal(c1, c2)
    s3, c3 = viterbi_encode(x, np.ones_like(x), lut, L, kv)  # float32 costs
    assert np.allclose(c3, c1, rtol=1e-5)


def test_bad_trellis_arguments():
    lut = np.zeros((1, 16))
    with pytest.raises(ValueError):
        viterbi_encode(np.zeros((1, 4, 1)), np.ones((1, 4, 1)), lut, 4, 5)  # kV > L
    with pytest.raises(ValueError):
        viterbi_encode(np.zeros((1, 4, 1)), np.ones((1, 4, 1)), np.zeros((1, 8)), 4, 2)  # table size
