"""Entropy-coded E8 research code (pvqcodec/codecs/eclattice): the minimal vectors, the
nearest-point search against exhaustive search, class keys and orbit sizes against
brute-force enumeration, and the gain of rate-distortion-optimized point choice."""

import itertools
import math

import numpy as np
import pytest

from pvqcodec.codecs.eclattice.e8rd import MINVEC, class_key, e8_rd, nearest_e8


def in_e8(p):
    p = np.asarray(p, np.float64)
    twice = 2 * p
    if not np.allclose(twice, np.round(twice)):
        return False
    t = np.round(twice).astype(np.int64)
    all_int = np.all(t % 2 == 0)
    all_half = np.all(t % 2 == 1)
    return bool((all_int or all_half) and round(p.sum()) % 2 == 0 and np.isclose(p.sum(), round(p.sum())))


def test_minimal_vectors():
    assert MINVEC.shape == (240, 8)
    assert np.allclose((MINVEC**2).sum(axis=1), 2.0)
    assert all(in_e8(v) for v in MINVEC)
    assert len({tuple(v) for v in MINVEC}) == 240


def test_nearest_point_against_exhaustive_search():
    rng = np.random.default_rng(3)
    out, tmp, xs = np.empty(8), np.empty(8), np.empty(8)
    offs = np.array(list(itertools.product((-1, 0, 1), repeat=8)), np.float64)
    for _ in range(60):
        x = rng.standard_normal(8) * 2.5
        nearest_e8(x, out, tmp, xs)
        assert in_e8(out)
        best = math.inf
        for base in (np.round(x), np.floor(x) + 0.5):
            cand = base + offs
            ok = np.isclose(np.mod(cand.sum(axis=1), 2.0), 0.0)
            best = min(best, float(((cand[ok] - x) ** 2).sum(axis=1).min()))
        assert float(((out - x) ** 2).sum()) == pytest.approx(best, abs=1e-12)


def orbit_size_brute(p):
    a = np.abs(np.asarray(p, np.float64))
    perms = set(itertools.permutations(a.tolist()))
    signed = set()
    for m in range(256):
        v = np.array([-c if (m >> k) & 1 else c for k, c in enumerate(a)])
        if in_e8(v):
            signed.add(tuple(v.tolist()))
    return len(perms) * len(signed)


@pytest.mark.parametrize("p", [
    [0] * 8, [1, 1, 0, 0, 0, 0, 0, 0], [0.5] * 8, [1.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, -0.5],
    [2, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0], [2, 1, 1, 0, 0, 0, 0, 0], [3, 1, 0, 0, 0, 0, 0, 0],
    [2.5, 1.5, 0.5, 0.5, 0.5, 0.5, 0.5, -0.5], [1, 2, 3, 4, 5, 6, 7, 8],
])
def test_class_key_and_orbit_size(p):
    p = np.array(p, np.float64)
    assert in_e8(p)
    buf = np.empty(8, np.int64)
    key, lg = class_key(p, buf)
    assert 2.0**lg == pytest.approx(orbit_size_brute(p), rel=1e-9)
    # the key is the class: a signed permutation inside E8 has the same key
    q = -p[::-1].copy()
    q[0] = -q[0] if (p == p.round()).all() else q[0]
    if in_e8(q):
        assert class_key(q, buf)[0] == key


def test_rd_choice_beats_nearest_point_at_equal_rate():
    """Nearest point with ideal entropy: about 1.2 dB from D(R) at 2 bits; the RD choice
    (lambda = 0.12 scale^2) about 0.87 dB (bench/RESULTS.md)."""
    x = np.random.default_rng(4).standard_normal((1 << 14, 8))

    def gap(scale, c):
        _, rate, mse, _ = e8_rd(x, scale, c * scale * scale, iters=4)
        return 10 * math.log10(mse / 2.0 ** (-2 * rate)), rate

    g0, r0 = gap(1.07, 0.0)
    g1, r1 = gap(0.98, 0.12)
    assert 1.9 < r0 < 2.1 and 1.9 < r1 < 2.1
    assert 1.0 < g0 < 1.4
    assert g1 < g0 - 0.2


def test_coordinate_model_rate_is_the_empirical_conditional_entropy():
    """The coordinate model's rate: H(coset) + c_0..c_6 under one table per coset + c_7 given
    its coset and its residue mod 4 (which the even coordinate sum fixes)."""
    x = np.random.default_rng(6).standard_normal((1 << 13, 8))
    scale = 0.98
    y, rate, mse, _ = e8_rd(x, scale, 0.12 * scale * scale, iters=3, model="coord")
    c = np.rint(2 * y / scale).astype(np.int64)
    assert all(in_e8(p / 2) for p in c[:200])
    # the parity check: the residue of c_7 mod 4 follows from the other coordinates
    k = c[:, 0] & 1
    s7 = c[:, :7].sum(axis=1)
    want_res = np.where(k == 0, np.where((s7 // 2) % 2 == 0, 0, 2), (-s7) % 4)
    assert np.array_equal(c[:, 7] % 4, want_res)

    def bits(values):
        _, cnt = np.unique(values, return_counts=True)
        return float(-(cnt * np.log2(cnt / cnt.sum())).sum())

    total = bits(k)
    for kk in (0, 1):
        total += bits(c[k == kk, :7].ravel())
        for r in range(4):
            sel = (k == kk) & (c[:, 7] % 4 == r)
            if sel.any():
                total += bits(c[sel, 7])
    assert rate * 8 * x.shape[0] == pytest.approx(total, rel=1e-9)
    assert 1.9 < rate < 2.1 and 10 * math.log10(mse / 2.0 ** (-2 * rate)) < 1.0


def test_weighting_moves_error_to_light_coordinates():
    """The weighting hook: coordinates 0..3 weighted 20 times more get a smaller error than
    without a weighting, coordinates 4..7 a larger one (same scale and lambda)."""
    x = np.random.default_rng(12).standard_normal((1 << 12, 8))
    w = np.ones(8)
    w[:4] = 20.0
    y0, _, _, _ = e8_rd(x, 0.98, 0.12 * 0.98**2, iters=3, model="coord")
    y1, _, _, _ = e8_rd(x, 0.98, 0.12 * 0.98**2, iters=3, model="coord", weight=w)
    e0 = ((x - y0) ** 2).mean(axis=0)
    e1 = ((x - y1) ** 2).mean(axis=0)
    assert e1[:4].mean() < 0.95 * e0[:4].mean()
    assert e1[4:].mean() > e0[4:].mean()
