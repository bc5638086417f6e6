"""BlockLDLQ (pvqcodec/quantize/ldlq.py): the algebra against brute force on tiny
problems with a toy grid quantizer, damping and its fallback, the checks on H, and
Hessian-aware rounding through each codec and the CLI."""

import itertools

import numpy as np
import pytest

from pvqcodec.codecs import BlockQuantizer, Encoded, codec_by_name
from pvqcodec.quantize.ldlq import (FactorizationFailed, block_ldl, block_ldlq, coordinate_descent, damped_cholesky,
                                    decoded, encode_with_hessian, rotate_hessian)
from pvqcodec.quantize.proxy import HessianInvalid, check_hessian, proxy_error


class GridQuantizer(BlockQuantizer):
    """Toy codec: values on the integer grid -R..R. metric None: nearest per value;
    metric = list of g x g matrices: exact nearest point of each block in that metric
    (brute force over the grid^g). Records the targets X it was asked for."""

    def __init__(self, g, R=3, metric=None):
        self.width, self.R, self.metric = g, R, metric
        self.grid = np.array(list(itertools.product(range(-R, R + 1), repeat=g)), np.float64)
        self.targets = {}

    def quantize(self, k, X, weight=None):
        self.targets[k] = X.copy()
        if self.metric is None:
            Q = np.clip(np.rint(X), -self.R, self.R)
        else:
            M = self.metric[k]
            d = X[:, None, :] - self.grid[None, :, :]
            cost = np.einsum("rpi,ij,rpj->rp", d, M, d)
            Q = self.grid[np.argmin(cost, axis=1)]
        return Q, [Q.copy()]

    def finish(self, codes, scales=None):
        return Encoded({}, [np.concatenate([c[0] for c in codes], axis=1)])


def correlated_h(n, rng, decay=1.0, tokens=None):
    """H = E[x x^T] of inputs with a decaying spectrum in a random basis."""
    Qm, _ = np.linalg.qr(rng.standard_normal((n, n)))
    ev = 1.0 / (1.0 + np.arange(n)) ** decay
    if tokens:
        X = rng.standard_normal((tokens, n)) @ (Qm * np.sqrt(ev)).T
        return X.T @ X / tokens
    return (Qm * ev) @ Qm.T


def ldl(H, g, damp=0.0):
    C, Hd, _, _ = damped_cholesky(H, damp)
    L, ddiag, Dblocks = block_ldl(C, g)
    return Hd, L, ddiag, Dblocks


def test_block_ldl_reconstructs_h():
    rng = np.random.default_rng(0)
    H = correlated_h(24, rng, tokens=200)
    Hd, L, _, Dblocks = ldl(H, 8, 0.01)
    D = np.zeros_like(Hd)
    for k, Dk in enumerate(Dblocks):
        D[8 * k : 8 * k + 8, 8 * k : 8 * k + 8] = Dk
    assert np.allclose(L @ D @ L.T, Hd, atol=1e-10)
    for k in range(3):  # unit block-lower-triangular
        assert np.allclose(L[8 * k : 8 * k + 8, 8 * k : 8 * k + 8], np.eye(8))
        assert np.all(L[: 8 * k, 8 * k : 8 * k + 8] == 0)


@pytest.mark.parametrize("g", [1, 2, 3])
def test_ldlq_error_identity(g):
    """tr(E H E^T) = sum_k (X_k - Q_k) D_k (X_k - Q_k)^T, X_k the fed-forward targets."""
    rng = np.random.default_rng(g)
    n = 7  # a narrower last block when g does not divide n
    H = correlated_h(n, rng, tokens=40)
    Hd, L, _, Dblocks = ldl(H, g, 0.01)
    W = rng.normal(0, 2, (5, n))
    q = GridQuantizer(g)
    Q, _ = block_ldlq(W, L, q)
    terms = sum(np.einsum("ri,ij,rj->", q.targets[k] - Q[:, s : s + g], Dblocks[k], q.targets[k] - Q[:, s : s + g])
                for k, s in enumerate(range(0, n, g)))
    assert proxy_error(W - Q, Hd) == pytest.approx(terms, rel=1e-10)


def test_ldlq_exact_on_block_diagonal_h():
    """With H block-diagonal in blocks of g and a block quantizer exact in each block's
    metric, BlockLDLQ finds the global optimum (brute force over every grid point)."""
    rng = np.random.default_rng(3)
    g, n, R = 2, 4, 2
    H = np.zeros((n, n))
    for s in range(0, n, g):
        A = rng.standard_normal((g, g))
        H[s : s + g, s : s + g] = A @ A.T + 0.1 * np.eye(g)
    Hd, L, _, Dblocks = ldl(H, g)
    assert np.allclose(L, np.eye(n))
    W = rng.normal(0, 1.5, (6, n))
    Q, _ = block_ldlq(W, L, GridQuantizer(g, R, Dblocks))
    grid = np.array(list(itertools.product(range(-R, R + 1), repeat=n)), np.float64)
    for r in range(W.shape[0]):
        d = W[r] - grid
        best = np.min(np.einsum("pi,ij,pj->p", d, Hd, d))
        mine = (W[r] - Q[r]) @ Hd @ (W[r] - Q[r])
        assert mine == pytest.approx(best, rel=1e-12, abs=1e-12)


def test_ldlq_against_brute_force_and_nearest():
    """Scalar rounding (g = 1) of inputs off the grid: LDLQ's proxy error is about
    tr(D)/12 per row against tr(H)/12 for nearest rounding (QuIP, theorem 1), so LDLQ wins
    with a correlated H; and it never beats the brute-force optimum."""
    rng = np.random.default_rng(4)
    n, rows = 6, 400
    H = correlated_h(n, rng, decay=1.5)
    Hd, L, ddiag, _ = ldl(H, 1)
    W = rng.uniform(-2.5, 2.5, (rows, n))
    Q, _ = block_ldlq(W, L, GridQuantizer(1, R=8))
    near = np.rint(W)
    p_ldlq, p_near = proxy_error(W - Q, Hd), proxy_error(W - near, Hd)
    assert ddiag.sum() < 0.75 * np.trace(Hd)
    assert p_ldlq < p_near
    assert p_ldlq / rows == pytest.approx(ddiag.sum() / 12, rel=0.1)
    assert p_near / rows == pytest.approx(np.trace(Hd) / 12, rel=0.1)
    grid = np.array(list(itertools.product(range(-3, 4), repeat=n)), np.float64)
    for r in range(8):  # brute force on a few rows (W near the middle of the grid)
        w = rng.uniform(-1.5, 1.5, n)
        q, _ = block_ldlq(w[None], L, GridQuantizer(1, R=3))
        d = w - grid
        best = np.min(np.einsum("pi,ij,pj->p", d, Hd, d))
        assert (w - q[0]) @ Hd @ (w - q[0]) >= best - 1e-12


def test_coordinate_descent_never_increases():
    rng = np.random.default_rng(5)
    n = 8
    H = correlated_h(n, rng, decay=2.0)
    Hd, L, _, Dblocks = ldl(H, 2, 0.01)
    W = rng.normal(0, 1.5, (30, n))
    q = GridQuantizer(2, 3)
    Q, codes = block_ldlq(W, L, q)
    before = proxy_error(W - Q, Hd)
    Q2, codes2, hist = coordinate_descent(W, Q.copy(), codes, Hd, q, 5, weighted=False)
    after = proxy_error(W - Q2, Hd)
    assert after <= before + 1e-12
    assert all(h >= -1e-12 for h in hist)
    assert np.array_equal(np.concatenate([c[0] for c in codes2], axis=1), Q2)  # codes follow the kept values


# ---- damping, fallback and the checks on H -----------------------------------------------------


def test_singular_h_is_retried_with_more_damping():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((3, 10))
    H = X.T @ X  # rank 3
    C, Hd, d, tries = damped_cholesky(H, 0.0, "t")
    assert tries > 1 and d > 0
    assert np.allclose(C @ C.T, Hd)


def test_indefinite_h_fails_with_the_tensor_name():
    H = np.array([[1.0, 1e9], [1e9, 1.0]])
    with pytest.raises(FactorizationFailed, match="'layer.w'"):
        damped_cholesky(H, 0.01, "layer.w")
    C, Hd, d, tries = damped_cholesky(np.array([[1.0, 3.0], [3.0, 1.0]]), 0.01, "t")  # needs d > 2
    assert d > 2 and tries > 1


@pytest.mark.parametrize("H, match", [
    (np.eye(5), "shape \\[5, 5\\] but the tensor has 4"),
    (np.ones(3), "3 entries but the tensor has 4"),
    (np.diag([1.0, np.nan, 1.0, 1.0]), "NaN"),
    (np.diag([1.0, -1.0, 1.0, 1.0]), "negative diagonal"),
    (np.zeros((4, 4)), "H is zero"),
    (np.diag([1.0, 0.0, 0.0, 0.0]), "3 of 4 input channels"),
])
def test_bad_h_is_a_clear_error(H, match):
    with pytest.raises(HessianInvalid, match=match) as exc:
        check_hessian(H, 4, "model.layers.3.mlp.down_proj.weight")
    assert "model.layers.3.mlp.down_proj.weight" in str(exc.value)


def test_dead_channels_are_repaired():
    H = np.diag([2.0, 0.0, 4.0, 6.0])
    H[2, 3] = H[3, 2] = 1.0
    Hc, info = check_hessian(H, 4, "t")
    assert info["dead_channels"] == 1
    assert Hc[1, 1] == 4.0 and np.all(Hc[1, [0, 2, 3]] == 0)
    np.linalg.cholesky(Hc)
    Hc, info = check_hessian(np.array([1.0, 2.0, 3.0, 0.0]), 4, "t")  # an imatrix diagonal
    assert info["dead_channels"] == 1 and np.allclose(Hc, np.diag([1.0, 2.0, 3.0, 2.0]))


def test_rotated_h_keeps_the_proxy():
    """tr(E H E^T) = tr(E' H' E'^T) with E' = A E B^T, H' = B H B^T (the RHT is orthogonal)."""
    from pvqcodec.transforms import TRANSFORMS_BY_NAME

    rng = np.random.default_rng(7)
    t = TRANSFORMS_BY_NAME["rht"]
    tp = {"seed": 11, "row_block": 8, "col_block": 16}
    H = correlated_h(32, rng, tokens=100)
    E = rng.standard_normal((8, 32))
    Hp = rotate_hessian(H, t, tp)
    assert proxy_error(t.forward(E, tp), Hp) == pytest.approx(proxy_error(E, H), rel=1e-6)


# ---- through the codecs ---------------------------------------------------------------------------


CODEC_CASES = [
    ("pvq", 2.0, {"group_size": 16}),
    ("pvq", 3.0, {}),
    ("lattice", 2.0, {}),
    ("lattice", 3.0, {}),
    ("trellis", 2.0, {"trellis_L": 8}),
]


@pytest.mark.parametrize("name, bits, opts", CODEC_CASES)
def test_codec_ldlq_beats_data_free(name, bits, opts):
    rng = np.random.default_rng(8)
    rows, cols = 32, 72  # 72: a partial last block for every codec
    H = correlated_h(cols, rng, decay=1.0, tokens=400)
    W = rng.standard_normal((rows, cols))
    codec = codec_by_name(name)
    enc, info = encode_with_hessian(codec, W, {"bits": bits, **opts}, H, passes=1)
    # the streams fit the codec's layout and decode to what the proxy was measured on
    specs = codec.streams(enc.params, rows, cols, "float32")
    assert [np.asarray(s).shape[0] for s in enc.streams] == [s.count for s in specs]
    Q = decoded(codec, enc, rows, cols)
    assert proxy_error(W - Q, H) / proxy_error(W, H) == pytest.approx(info["proxy_ldlq"], rel=1e-9)
    assert info["chosen"] == "ldlq"
    assert info["proxy_ldlq"] < 0.85 * info["proxy_free"]
    free = codec.encode(W, {"bits": bits, **opts})
    assert info["proxy_free"] == pytest.approx(proxy_error(W - decoded(codec, free, rows, cols), H)
                                               / proxy_error(W, H), rel=1e-9)


def test_encode_with_hessian_keeps_data_free_when_it_is_better():
    """A nearly diagonal H in a domain where LDLQ's fixed parameters lose: the result
    is never worse than data-free rounding under the proxy."""
    rng = np.random.default_rng(9)
    W = rng.standard_normal((16, 32))
    H = np.diag(rng.uniform(0.5, 1.5, 32))
    codec = codec_by_name("lattice")
    enc, info = encode_with_hessian(codec, W, {"bits": 2.0}, H)
    Q = decoded(codec, enc, 16, 32)
    assert proxy_error(W - Q, H) / proxy_error(W, H) == pytest.approx(min(info["proxy_free"], info["proxy_ldlq"]))


# ---- the CLI ----------------------------------------------------------------------------------------


@pytest.fixture()
def toy_model(tmp_path):
    import torch
    from safetensors.torch import save_file

    from pvqcodec.quantize.hessians import write_hessians

    rng = np.random.default_rng(10)
    tensors = {
        "model.layers.0.q_proj.weight": torch.tensor(rng.standard_normal((32, 64)) * 0.05, dtype=torch.float16),
        "model.layers.0.k_proj.weight": torch.tensor(rng.standard_normal((16, 64)) * 0.05, dtype=torch.float16),
        "model.layers.0.down_proj.weight": torch.tensor(rng.standard_normal((64, 128)) * 0.05, dtype=torch.float16),
        "model.norm.weight": torch.ones(64, dtype=torch.float16),
    }
    save_file(tensors, str(tmp_path / "model.safetensors"))

    def moments(n, seed):
        X = np.random.default_rng(seed).standard_normal((500, n)) @ correlated_h(n, rng, decay=1.0)
        return X.T @ X, X.sum(0), X.shape[0]

    write_hessians(tmp_path / "H.safetensors",
                   {"model.layers.0.q_proj.weight": moments(64, 1), "model.layers.0.down_proj.weight": moments(128, 2)},
                   {"model.layers.0.q_proj.weight": "model.layers.0.q_proj.weight",
                    "model.layers.0.k_proj.weight": "model.layers.0.q_proj.weight",
                    "model.layers.0.down_proj.weight": "model.layers.0.down_proj.weight"},
                   tokens=500, ctx=10, model="toy")
    return tmp_path


def test_cli_hessians_end_to_end(toy_model, capsys):
    from pvqcodec.api import PvqcFile
    from pvqcodec.cli import main

    out = toy_model / "out.pvqc"
    rc = main(["encode", str(toy_model / "model.safetensors"), str(out), "--codec", "lattice", "--bits", "2",
               "--hessians", str(toy_model / "H.safetensors"), "--ldlq-passes", "1"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "proxy free" in text and "proxy H" in text
    line = next(l for l in text.splitlines() if l.startswith("model.layers.0.down_proj.weight"))
    free, ldlq = (float(v) for v in line.split()[-3:-1])
    assert ldlq < free
    with PvqcFile(str(out)) as f:
        assert not f.verify(decode=True)


def test_cli_hessians_errors(toy_model, tmp_path, capsys):
    from pvqcodec.cli import main
    from pvqcodec.quantize.hessians import write_hessians

    out = tmp_path / "x.pvqc"
    other = tmp_path / "other.safetensors"
    write_hessians(other, {"a.weight": (np.eye(64), np.zeros(64), 1)}, {"a.weight": "a.weight"}, tokens=1, ctx=1,
                   model="other")
    assert main(["encode", str(toy_model / "model.safetensors"), str(out), "--hessians", str(other)]) == 1
    assert "no tensor of" in capsys.readouterr().err
    wrong = tmp_path / "wrong.safetensors"  # right name, wrong size
    write_hessians(wrong, {"model.layers.0.q_proj.weight": (np.eye(32), np.zeros(32), 1)},
                   {"model.layers.0.q_proj.weight": "model.layers.0.q_proj.weight"}, tokens=1, ctx=1, model="x")
    assert main(["encode", str(toy_model / "model.safetensors"), str(out), "--hessians", str(wrong)]) == 1
    err = capsys.readouterr().err
    assert "model.layers.0.q_proj.weight" in err and "64 input columns" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # nothing half-written
    assert main(["encode", str(toy_model / "model.safetensors"), str(out), "--hessians",
                 str(toy_model / "H.safetensors"), "--damp", "-1"]) == 1


def test_cli_with_a_llama_cpp_imatrix(tmp_path, capsys):
    """A diagonal importance (legacy imatrix .dat, GGUF names) through the same path: after
    the RHT its H is a full matrix, so BlockLDLQ still feeds errors forward."""
    import struct

    import torch
    from safetensors.torch import save_file

    from pvqcodec.cli import main

    rng = np.random.default_rng(11)
    save_file({"model.layers.0.self_attn.q_proj.weight": torch.tensor(rng.standard_normal((32, 64)), dtype=torch.float32),
               "model.layers.0.mlp.down_proj.weight": torch.tensor(rng.standard_normal((64, 128)), dtype=torch.float32)},
              str(tmp_path / "m.safetensors"))
    entries = {"blk.0.attn_q.weight": rng.uniform(0.01, 4.0, 64) ** 3, "blk.0.ffn_down.weight": rng.uniform(0.01, 4.0, 128) ** 3}
    blob = struct.pack("<i", len(entries))
    for name, v in entries.items():
        blob += struct.pack("<i", len(name)) + name.encode() + struct.pack("<ii", 10, v.size)
        blob += (v * 10).astype("<f4").tobytes()
    (tmp_path / "imatrix.dat").write_bytes(blob)
    rc = main(["encode", str(tmp_path / "m.safetensors"), str(tmp_path / "o.pvqc"), "--codec", "pvq", "--bits", "3",
               "--hessians", str(tmp_path / "imatrix.dat")])
    assert rc == 0
    lines = [l.split() for l in capsys.readouterr().out.splitlines() if l.startswith("model.layers.0")]
    assert len(lines) == 2
    for p in lines:
        assert p[-1] == "ldlq" and float(p[-2]) < float(p[-3])
