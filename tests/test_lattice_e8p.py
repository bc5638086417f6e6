"""The E8P codebook and the stage table of the lattice codec (spec codecs/lattice.md 6.4.4,
6.4.5), each rebuilt here a second way from the spec's wording, and the exact
nearest-point searches against brute force."""

import hashlib
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pvqcodec.codecs.lattice import e8p, stages

CODEBOOK = e8p.e8p_codebook().astype(np.float64)


def in_e8(v) -> np.ndarray:
    """Rows of v that lie in E8 = D8 u (D8 + 1/2)."""
    z = 2 * np.asarray(v, np.float64)
    zi = np.rint(z)
    integral = np.all(z == zi, axis=-1)
    zi = zi.astype(np.int64)
    same_parity = np.all(zi % 2 == zi[..., :1] % 2, axis=-1)
    even_sum = (zi.sum(-1) // 2) % 2 == 0  # sum of v even (for half-integers: an even integer)
    return integral & same_parity & even_sum


# ---- the 256 patterns -----------------------------------------------------------------------------


def test_patterns_are_the_abs_values_of_d8_hat_points():
    """Spec 6.4.4.2, rebuilt from the points of D8 + 1/2 rather than from absolute values."""
    vals = np.array([-5, -3, -1, 1, 3, 5], np.int8)  # doubled; 7/2 alone has square 12.25 > 10
    idx = np.indices((6,) * 8, dtype=np.int8).reshape(8, -1).T
    z = vals[idx]
    pts = z[((z.astype(np.int64).sum(1) // 2) % 2 == 0) & ((z.astype(np.int64) ** 2).sum(1) <= 40)]
    assert len(pts) == 227 * 128
    pats = np.unique(np.abs(pts), axis=0)  # np.unique sorts rows lexicographically
    assert (pats == e8p.PATTERNS2[:227]).all()
    norms = (pats.astype(np.int64) ** 2).sum(1) // 4
    assert [int((norms == n).sum()) for n in (2, 4, 6, 8, 10)] == [1, 8, 28, 64, 126]
    n12 = np.array([p for p in itertools.product((1, 3), repeat=8) if sum(np.square(p)) == 48], np.int8)
    assert len(n12) == 56
    assert (np.unique(n12, axis=0)[:29] == e8p.PATTERNS2[227:]).all()
    assert ((e8p.PATTERNS2[227:] == 1).sum(1) == 3).all()
    assert len(np.unique(e8p.PATTERNS2, axis=0)) == 256
    # the spec's digest of the table (256 x 8 signed bytes 2a, row-major)
    assert hashlib.sha256(e8p.PATTERNS2.astype(np.int8).tobytes()).hexdigest() == (
        "775342789c2306901695eba0ec4a1f736140a207dc3c59521b169ddaad242bee")
    assert list(e8p.PATTERNS2[226]) == [5, 3, 1, 1, 1, 1, 1, 1]


def test_codebook_has_65536_distinct_points_of_e8_plus_quarter():
    assert len(np.unique(CODEBOOK, axis=0)) == 65536
    assert in_e8(CODEBOOK - 0.25).all()
    assert (CODEBOOK * 4 == np.rint(CODEBOOK * 4)).all()


def test_codebook_norms_follow_from_the_construction():
    w = np.arange(65536)
    a, b = w >> 8, w & 0xFF
    p = np.array([bin(int(x)).count("1") & 1 for x in range(256)])[b]
    shift = np.where(p == 1, -0.25, 0.25)
    v = CODEBOOK - shift[:, None]  # the D8^ point before the shift
    assert in_e8(v).all() and (np.abs(v) * 2 % 2 == 1).all()  # half-odd coordinates: D8^
    assert (np.abs(v) * 2 == e8p.PATTERNS2[a]).all()  # |v| is the pattern
    n_pat = (e8p.PATTERNS2.astype(np.int64) ** 2).sum(1) / 4
    assert np.array_equal((v * v).sum(1), n_pat[a])
    # |v + sigma 1|^2 = |v|^2 + 2 sigma sum(v) + 1/2
    assert np.array_equal((CODEBOOK**2).sum(1), n_pat[a] + 2 * shift * v.sum(1) + 0.5)
    counts = {n: int((n_pat == n).sum()) for n in (2, 4, 6, 8, 10, 12)}
    assert counts == {2: 1, 4: 8, 6: 28, 8: 64, 10: 126, 12: 29}
    sq = (CODEBOOK**2).sum(1)
    assert sq.min() == 0.5 and sq.max() == 16.5
    # each pattern carries its 128 sign choices with both shifts
    assert all(len(np.unique(CODEBOOK[w[a == k]], axis=0)) == 256 for k in (0, 1, 100, 226, 227, 255))


def test_codeword_layout_step_by_step():
    """Spec 6.4.4.3-4 followed literally, in pure Python, for every codeword."""
    pats = [[int(x) / 2 for x in row] for row in e8p.PATTERNS2]
    for w in range(0, 65536, 7):
        a, b = w >> 8, w & 0xFF
        p = bin(b).count("1") % 2
        m = b ^ p
        base = list(pats[a])
        if sum(base) % 2 == 1:
            base[7] = -base[7]
        pt = [(-x if (m >> i) & 1 else x) + (-0.25 if p else 0.25) for i, x in enumerate(base)]
        assert pt == CODEBOOK[w].tolist(), hex(w)


@pytest.mark.parametrize("w,point", [
    (0x0000, [0.75] * 8),
    (0x0001, [0.25] * 8),
    (0x0101, [0.25] * 7 + [-1.75]),
    (0xE2A5, [-2.25, 1.75, -0.25, 0.75, 0.75, -0.25, 0.75, 0.75]),
    (0xE3FF, [-0.25, -0.25, -0.25, -1.25, -1.25, -1.25, -1.25, 1.75]),
])
def test_worked_examples(w, point):
    assert CODEBOOK[w].tolist() == point
    assert e8p.e8p_nearest(np.array([point]))[0] == w


# ---- nearest point ---------------------------------------------------------------------------------


def test_encode_decode_round_trip_exhaustive():
    w = np.arange(65536)
    assert (e8p.e8p_nearest(CODEBOOK) == w).all()
    rng = np.random.default_rng(1)
    W = rng.uniform(0.05, 5.0, CODEBOOK.shape)
    assert (e8p.e8p_nearest(CODEBOOK, W) == w).all()


def brute(X, W=None):
    """Weighted squared distances from every row of X to all 65,536 points."""
    W = np.ones_like(X) if W is None else W
    d = (W * X * X).sum(1)[:, None] - 2 * (W * X) @ CODEBOOK.T + W @ (CODEBOOK**2).T
    return d.argmin(1), d.min(1), d


def check_nearest(X, W=None):
    got = e8p.e8p_nearest(X, W).astype(np.int64)
    best, dmin, d = brute(X, W)
    dgot = d[np.arange(len(X)), got]
    assert np.allclose(dgot, dmin, rtol=1e-10, atol=1e-10)
    # the index too, wherever the nearest point is unique
    second = np.partition(d, 1, axis=1)[:, 1]
    unique = second - dmin > 1e-9
    assert (got[unique] == best[unique]).all()


@given(arrays(np.float64, (12, 8), elements=st.floats(-1, 1, allow_nan=False)), st.floats(0.05, 6.0))
def test_nearest_equals_brute_force(X, scale):
    check_nearest(X * scale)


@given(arrays(np.float64, (12, 8), elements=st.floats(-1, 1, allow_nan=False)), st.floats(0.05, 6.0),
       arrays(np.float64, (12, 8), elements=st.floats(0.0, 10.0, allow_nan=False)))
def test_weighted_nearest_equals_brute_force(X, scale, W):
    check_nearest(X * scale, W)


def test_nearest_on_gaussian_batch():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((300, 8)) * 1.03
    check_nearest(X)
    check_nearest(X, rng.uniform(0.01, 3.0, X.shape))
    # unit weights are the plain metric
    assert (e8p.e8p_nearest(X, np.ones_like(X)) == e8p.e8p_nearest(X)).all()


# ---- the stage table --------------------------------------------------------------------------------


def e8_points(maxnorm):
    """All points of E8 with |v|^2 <= maxnorm (doubled coordinates), by brute force."""
    r = int(np.floor(2 * np.sqrt(maxnorm)))
    out = []
    for par in (0, 1):
        vals = np.array([v for v in range(-r, r + 1) if v % 2 == par])
        idx = np.indices((len(vals),) * 8).reshape(8, -1).T
        z = vals[idx]
        keep = ((z * z).sum(1) <= 4 * maxnorm) & (z.sum(1) % 4 == 0)
        out.append(z[keep])
    return np.concatenate(out)


def test_generator_and_labels():
    G = stages.GEN2 / 2.0
    assert round(abs(np.linalg.det(G)), 12) == 1.0
    assert in_e8(G).all()
    pts = e8_points(4.0)
    assert len(pts) == 1 + 240 + 2160
    k = np.linalg.solve(G.T, (pts / 2.0).T).T  # coordinates in the basis g_j
    assert np.allclose(k, np.rint(k))
    lab = ((np.rint(k).astype(np.int64) & 1) << np.arange(8)).sum(1)
    assert (stages.label(pts) == lab).all()
    from pvqcodec.codecs.lattice.stages import _M8, _label
    assert all(_label(z, _M8) == l for z, l in zip(pts[::7], lab[::7]))


def test_stage_table_rule():
    """Spec 6.4.5: t_l is the unique least-norm point of lambda_l + a + 2E8; U = t - mean."""
    a = stages.STAGE_SHIFT512 / 512.0
    t = stages.STAGE_T512 / 512.0
    lam = t - a
    assert in_e8(lam).all()
    assert (stages.label(np.rint(2 * lam).astype(np.int64)) == np.arange(256)).all()
    # strictly least norm in its coset: |t - 2q| > |t| for every q != 0 of E8 up to norm 4
    q = e8_points(4.0) / 2.0
    q = q[(q * q).sum(1) > 0]
    d = ((t[:, None, :] - 2 * q[None]) ** 2).sum(2) - (t * t).sum(1)[:, None]
    assert d.min() > 1e-6
    # tie-free by the shift: r . a is never an integer for a root r
    roots = q[np.isclose((q * q).sum(1), 2)]
    assert len(roots) == 240
    ra = roots @ a
    assert np.abs(ra - np.rint(ra)).min() > 0
    m = t.mean(0)
    assert (m * 131072 == [256, -5632, -10240, -13312, -14336, -12288, -5120, -76800]).all()
    assert np.array_equal(stages.STAGE_U.astype(np.float64), t - m)
    assert stages.STAGE_U.astype(np.float64).sum(0).tolist() == [0.0] * 8
    assert hashlib.sha256(stages.STAGE_U_NUM.astype("<i4").tobytes()).hexdigest() == (
        "bb0e07e8b5760e7305bbc0cd58d39ba6200da8856bf0dbeaeceda86ef691162c")
    assert stages.STAGE_T512[1].tolist() == [1, 2, 4, 8, 16, 32, 64, -896]
    assert stages.STAGE_U_NUM[255].tolist() == [65536, -59392, -54272, -50176, -47104, -45056, 87040, 44032]


@pytest.mark.parametrize("k", [2, 3])
def test_nested_round_trip_every_e8p_codeword(k):
    """Decode (c, labels) at unit scale and search again: the same codes, for all 65,536
    codewords with random labels (the decoded point is a point of the fine lattice inside
    the coded region, which the search finds exactly)."""
    rng = np.random.default_rng(k)
    cw = np.arange(65536, dtype=np.uint16)
    lab = rng.integers(0, 256, (65536, k - 1)).astype(np.uint8)
    x = stages.reconstruct_units(cw, lab)
    cw2, lab2, over = stages.lattice_search(x, k)
    assert (cw2 == cw).all() and (lab2 == lab).all() and not over.any()


@pytest.mark.parametrize("k", [2, 3])
def test_overload_start_point_is_always_valid(k):
    """The overload search starts from the fine point nearest to an E8P point c; for every
    one of the 65,536 codewords it peels back to c itself (so the start is valid)."""
    from pvqcodec.codecs.lattice.stages import _LAM2, _M8, _decompose
    off, scale = stages.offset_units(k), 2.0 ** (k - 1)
    z, tmp, lab = np.empty(8, np.int64), np.empty(8, np.int64), np.zeros(3, np.int64)
    got = np.empty(65536, np.int64)
    for w in range(65536):
        e8p._nearest_e8_doubled(scale * (CODEBOOK[w] - off), z)
        got[w] = _decompose(z, k - 1, _LAM2, _M8, e8p.PATTERN_OF_KEY, e8p.BASE_ODD, tmp, lab)
    assert (got == np.arange(65536)).all()


def test_nested_search_is_the_nearest_fine_point_inside_the_region():
    """Without overload, the search's point is the nearest point of the fine lattice, so no
    other code within the candidates of brute force does better (spot check on 3 bits)."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 8)) * 0.6
    cw, lab, over = stages.lattice_search(X, 2)
    assert not over.all()
    rec = stages.reconstruct_units(cw, lab)
    d = ((X - rec) ** 2).sum(1)
    # brute force over all 256 labels for the 40 E8P codewords nearest to each x
    U = stages.STAGE_U.astype(np.float64)
    for i in np.flatnonzero(~over)[:40]:
        near = np.argsort(((CODEBOOK - X[i]) ** 2).sum(1))[:40]
        cand = CODEBOOK[near][:, None, :] + U[None] / 2
        assert ((cand - X[i]) ** 2).sum(2).min() >= d[i] - 1e-12


def test_search_is_deterministic_and_parallel_safe():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((5000, 8)) * 1.1
    W = rng.uniform(0.1, 2.0, X.shape)
    for k in (1, 2, 3):
        a = stages.lattice_search(X, k, parallel=True)
        b = stages.lattice_search(X, k, parallel=False)
        assert all(np.array_equal(p, q) for p, q in zip(a, b))
        a = stages.lattice_search(X, k, W, parallel=True)
        b = stages.lattice_search(X, k, W, parallel=False)
        assert all(np.array_equal(p, q) for p, q in zip(a, b))


@pytest.mark.parametrize("k", [2, 3])
def test_weighted_search_lowers_the_weighted_error(k):
    rng = np.random.default_rng(10 + k)
    X = rng.standard_normal((3000, 8)) * 1.1
    W = rng.uniform(0.05, 5.0, X.shape) ** 2
    plain = stages.reconstruct_units(*stages.lattice_search(X, k)[:2])
    weighted = stages.reconstruct_units(*stages.lattice_search(X, k, W)[:2])
    ew = lambda r: float((W * (X - r) ** 2).sum())  # noqa: E731
    assert ew(weighted) < 0.97 * ew(plain)
    # zero weight frees a value entirely: the other seven are coded as well as possible
    W0 = np.ones_like(X)
    W0[:, 5:] = 0.0
    part = stages.reconstruct_units(*stages.lattice_search(X, k, W0)[:2])
    assert ((X - part)[:, :5] ** 2).sum() < ((X - plain)[:, :5] ** 2).sum()
