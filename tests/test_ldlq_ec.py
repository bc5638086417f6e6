"""BlockLDLQ for the entropy-coded codecs (issues 9 and 10; pvqcodec/quantize/ldlq_rate.py):
the rate rule under Hessian-aware rounding, the rate term, the column-order reversal of
forward quantizers, and --hessians end to end through the CLI."""

import numpy as np
import pytest

from pvqcodec.codecs import BlockQuantizer, Encoded, codec_by_name
from pvqcodec.quantize.ldlq import block_ldlq, blocks_of, coordinate_descent, decoded, encode_with_hessian
from pvqcodec.quantize.ldlq_rate import (RATE_TOLERANCE, ReversedColumns, RateControlledQuantizer, best_fit,
                                         next_knob)
from pvqcodec.quantize.proxy import proxy_error

# (codec, bits, options): every entropy-coded codec with a block quantizer
EC_CASES = [
    ("ecsq", 2.0, {}),
    ("ecsq", 4.0, {}),
    ("pvqvr", 2.0, {"group_size": 16}),
    ("pvqvr", 3.0, {"group_size": 16, "ldlq_pulses": "fixed"}),
    ("ectcq", 2.0, {"state_bits": 3}),
    ("eclattice", 2.0, {}),
]


def correlated_h(n, rng, decay=1.0, tokens=None):
    """H = E[x x^T] of inputs with a decaying spectrum in a random basis."""
    Qm, _ = np.linalg.qr(rng.standard_normal((n, n)))
    ev = 1.0 / (1.0 + np.arange(n)) ** decay
    X = rng.standard_normal((tokens or 4 * n, n)) @ (Qm * np.sqrt(ev)).T
    return X.T @ X / X.shape[0]


@pytest.mark.parametrize("name, bits, opts", EC_CASES)
def test_ldlq_meets_the_rate_rule_and_beats_data_free(name, bits, opts):
    rng = np.random.default_rng(1)
    rows, cols = 64, 200  # 200: a partial last block for pvqvr's groups of 16
    H = correlated_h(cols, rng)
    W = rng.standard_normal((rows, cols))
    codec = codec_by_name(name)
    enc, info = encode_with_hessian(codec, W, {"bits": bits, **opts}, H, passes=1)
    target = info["bytes_target"]
    assert info["chosen"] == "ldlq"
    assert min((1 - RATE_TOLERANCE) * target, info["bytes_free"]) <= info["bytes_ldlq"] <= target
    assert info["bytes_free"] <= target
    q = codec.block_quantizer(W, {"bits": bits, **opts}, codec.encode(W, {"bits": bits, **opts}))
    assert q.coded_bytes(enc) == info["bytes_ldlq"]  # the size counted is the kept encoding's
    Q = decoded(codec, enc, rows, cols)
    assert proxy_error(W - Q, H) / proxy_error(W, H) == pytest.approx(info["proxy_ldlq"], rel=1e-9)
    assert info["proxy_ldlq"] < 0.7 * info["proxy_free"]


@pytest.mark.parametrize("name, bits, opts", [EC_CASES[0], EC_CASES[2], EC_CASES[4], EC_CASES[5]])
def test_identity_h_is_not_worse_than_data_free(name, bits, opts):
    """With H = I, BlockLDLQ is plain rounding in the data-free metric: at the same rate
    rule its proxy (the MSE) may differ from the data-free encoder's only slightly."""
    rng = np.random.default_rng(2)
    W = rng.standard_normal((64, 256))
    codec = codec_by_name(name)
    _, info = encode_with_hessian(codec, W, {"bits": bits, **opts}, np.eye(256))
    assert info["proxy_ldlq"] <= 1.03 * info["proxy_free"]  # within 0.13 dB
    # a block-diagonal H (blocks of the quantizer's width): no feedback between blocks either
    g = codec.block_quantizer(W, {"bits": bits, **opts}, codec.encode(W, {"bits": bits, **opts})).width
    Hb = np.zeros((256, 256))
    for s, e in blocks_of(256, g):
        A = rng.standard_normal((e - s, e - s))
        Hb[s:e, s:e] = A @ A.T / (e - s) + np.eye(e - s)
    _, info = encode_with_hessian(codec, W, {"bits": bits, **opts}, Hb)
    assert info["proxy_ldlq"] <= 1.03 * info["proxy_free"]


def test_ecsq_rate_term_matches_the_lagrangian_rule():
    """Each value takes, among the nearest magnitude and the two below it (the data-free
    rule's candidates), the symbol of least w (|x| - r)^2 + lambda len(s), w the column
    weight passed in and r the decoder's value (brute force over the candidates)."""
    from pvqcodec.codecs.ecsq import decode_ecsq_values

    rng = np.random.default_rng(3)
    W = rng.standard_normal((32, 64))
    codec = codec_by_name("ecsq")
    q = codec.block_quantizer(W, {"bits": 2.0}, codec.encode(W, {"bits": 2.0}))
    X = rng.normal(0, 1.3, (200, 1))
    for w in (0.37, 1.0, 3.0):
        Q, code = q.quantize(0, X, np.array([w]))
        sym = np.asarray(code[0], np.int64)[:, 0]
        assert np.array_equal(Q[:, 0], decode_ecsq_values(sym.astype(np.uint16), q.step, q.offsets))
        price = lambda s: q.lens[s] if s < q.lens.size else q.lens.max() + 1  # noqa: E731
        zeros = 0
        for x, s in zip(X[:, 0], sym):
            m0 = int(np.floor(abs(x) / q.step + 0.5))
            cands = [0 if m == 0 else (2 * m - 1 if x > 0 else 2 * m) for m in range(max(0, m0 - 2), m0 + 1)]
            vals = decode_ecsq_values(np.array(cands, np.uint16), q.step, q.offsets).astype(np.float64)
            costs = [w * (x - v) ** 2 + q.lam * price(c) for c, v in zip(cands, vals)]
            assert s in cands
            assert w * (x - vals[cands.index(s)]) ** 2 + q.lam * price(s) == pytest.approx(min(costs), abs=1e-12)
            zeros += s == 0
        if w == 0.37:
            zeros_light = zeros
    assert zeros_light > zeros  # a lighter weight means a wider dead zone


def test_coordinate_descent_with_a_rate_term_never_raises_the_lagrangian():
    rng = np.random.default_rng(4)
    n = 48
    H = correlated_h(n, rng, decay=1.5)
    W = rng.standard_normal((40, n))
    codec = codec_by_name("ecsq")
    q = codec.block_quantizer(W, {"bits": 3.0}, codec.encode(W, {"bits": 3.0}))
    from pvqcodec.quantize.ldlq import block_ldl, damped_cholesky

    C, Hd, _, _ = damped_cholesky(H, 0.01)
    L, ddiag, _ = block_ldl(C, 1)
    Q, codes = block_ldlq(W, L, q, ddiag)

    def lagrangian(Q, codes):
        return proxy_error(W - Q, Hd) + sum(q.unit_rates(k, c).sum() for k, c in enumerate(codes))

    before = lagrangian(Q, codes)
    Q2, codes2, _ = coordinate_descent(W, Q.copy(), list(codes), Hd, q, 3, weighted=True)
    assert lagrangian(Q2, codes2) <= before + 1e-9
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(codes, codes2))  # it did change something


# ---- forward quantizers: the column reversal ---------------------------------------------------


class OrderRecorder(RateControlledQuantizer):
    """Toy forward quantizer: rounds to the integer grid, records the original columns and
    block indices it sees, and checks they come in column order 0, 1, ..."""

    forward = True
    supports_passes = False

    def __init__(self, g, n):
        self.width, self.n = g, n
        self.seen, self.blocks, self.weights = [], [], []
        self.target_bytes = 1.0

    def quantize(self, k, X, weight=None):
        # a marker in each value: W[r, c] = 1000 r + c, so X's columns reveal their index
        self.seen.append(np.rint(X[0] % 1000).astype(int).tolist() if self.n < 1000 else [])
        self.blocks.append(k)
        self.weights.append(None if weight is None else np.asarray(weight).copy())
        return np.rint(X), [np.rint(X)]

    def finish(self, codes, scales=None):
        return Encoded({}, [np.concatenate([c[0] for c in codes], axis=1)])

    def coded_bytes(self, enc):
        return 1

    def knob(self):
        return None

    def retune(self, knob, codes, targets, weights):
        raise AssertionError("no knob, no retune")


@pytest.mark.parametrize("n, g", [(12, 4), (13, 4), (5, 8), (7, 1)])
def test_forward_quantizer_sees_columns_in_order(n, g):
    rows = 3
    W = 1000.0 * np.arange(rows)[:, None] + np.arange(n)[None, :]
    q = OrderRecorder(g, n)
    runner = ReversedColumns(q, n)
    blocks = blocks_of(n, g, end_aligned=True)
    Wr = np.ascontiguousarray(W[:, ::-1])
    Q, codes = block_ldlq(Wr, np.eye(n), runner, np.arange(n, dtype=float)[::-1].copy(), blocks=blocks)
    # identity L: X = W exactly; the quantizer saw original columns 0..n-1 in order, in the
    # original blocks (the narrow one last), with block indices 0, 1, ... and matching weights
    assert [c for blk in q.seen for c in blk] == list(range(n))
    assert q.seen == [list(range(s, e)) for s, e in blocks_of(n, g)]
    assert q.blocks == list(range(len(blocks_of(n, g))))
    assert all(np.array_equal(w, np.arange(s, e)) for w, (s, e) in zip(q.weights, blocks_of(n, g)))
    assert np.array_equal(Q[:, ::-1], W)
    assert np.array_equal(runner.finish(codes).streams[0], W)  # codes back in original order


def test_forward_driver_runs_ldlq_on_the_reversed_problem(monkeypatch):
    """Through encode_with_hessian: the forward quantizer gets its blocks in column order
    (the narrow one last), with feedback (X differs from W), and no coordinate descent."""
    import pvqcodec.quantize.ldlq as ldlq
    from pvqcodec.coding import StreamSpec

    class ToyCodec:
        name = "toy"

        def encode(self, wp, options):
            return Encoded({}, [np.rint(wp)])

        def block_quantizer(self, wp, options, free):
            self.q = OrderRecorder(4, wp.shape[1])
            return self.q

        def streams(self, params, rows, cols, dtype):
            return [StreamSpec("v", rows * cols, 16)]

    monkeypatch.setattr(ldlq, "decoded", lambda codec, enc, rows, cols, dtype="float32":
                        np.asarray(enc.streams[0], np.float64))
    rng = np.random.default_rng(5)
    n = 14
    W = rng.uniform(-3, 3, (5, n))
    codec = ToyCodec()
    enc, info = encode_with_hessian(codec, W, {"bits": 1}, correlated_h(n, rng), passes=3)
    assert codec.q.blocks == [0, 1, 2, 3]
    assert [len(c) for c in codec.q.seen] == [4, 4, 4, 2]
    assert info["cd_passes"] == 0 and info["trials"] == 1  # supports_passes False; no knob
    assert np.asarray(enc.streams[0]).shape == (5, n) if info["chosen"] == "ldlq" else True


def test_ectcq_one_block_is_the_data_free_last_pass():
    """ectcq with one block per row and H = I: the block's Viterbi search is the data-free
    encoder's last Lloyd pass, so it finds the same grid indices."""
    from pvqcodec.codecs.ectcq import decode_ectcq_grid

    rng = np.random.default_rng(7)
    W = rng.standard_normal((16, 96))
    codec = codec_by_name("ectcq")
    opts = {"bits": 2.0, "state_bits": 3}
    free = codec.encode(W, opts)
    q = codec.block_quantizer(W, {**opts, "ldlq_width": 96}, free)
    Q, code = q.quantize(0, W, np.ones(96))
    p = free.params
    assert np.array_equal(code[0], decode_ectcq_grid(*free.streams[:3], p["a0_count"], p["state_bits"], 16, 96))


@pytest.mark.parametrize("lookahead", [0, 8])
def test_ectcq_blocks_continue_each_rows_path(lookahead):
    """Blocks rounded one after the other chain every row's trellis state: the finished
    encoding is a valid path from state 0 in every row and decodes to the blocks' values."""
    rng = np.random.default_rng(8)
    W = rng.standard_normal((12, 70))
    codec = codec_by_name("ectcq")
    opts = {"bits": 3.0, "state_bits": 4, "ldlq_width": 16, "ldlq_lookahead": lookahead}
    q = codec.block_quantizer(W, opts, codec.encode(W, opts))
    Qs, codes = [], []
    for k, (s, e) in enumerate(blocks_of(70, 16)):
        Qk, ck = q.quantize(k, W[:, s:e] + rng.normal(0, 0.1, (12, e - s)), rng.uniform(0.5, 2, e - s))
        Qs.append(Qk)
        codes.append(ck)
    enc = q.finish(codes)
    assert np.array_equal(decoded(codec, enc, 12, 70), np.concatenate(Qs, axis=1))


def test_upper_ldl_factors_the_block_metric():
    from pvqcodec.codecs.ectcq.psp import upper_ldl

    rng = np.random.default_rng(9)
    A = rng.standard_normal((6, 6))
    D = A @ A.T + 0.5 * np.eye(6)
    M, delta = upper_ldl(D)
    assert np.allclose(np.tril(M, -1), 0) and np.allclose(np.diagonal(M), 1)
    assert np.all(delta > 0) and np.allclose(M @ np.diag(delta) @ M.T, D)


def test_psp_with_a_diagonal_metric_is_the_plain_viterbi():
    """Without correlation inside the block there is no feedback to carry: per-survivor
    processing finds the plain rate-distortion Viterbi path (lookahead included)."""
    from pvqcodec.codecs.ectcq.psp import psp_block
    from pvqcodec.codecs.ectcq.quantizer import initial_tables
    from pvqcodec.codecs.ectcq.viterbi import JMAX, viterbi_rows

    rng = np.random.default_rng(10)
    x, xa = rng.normal(0, 2, (20, 12)), rng.normal(0, 2, (20, 5))
    d, wa = rng.uniform(0.3, 2.0, 12), rng.uniform(0.3, 2.0, 5)
    t = initial_tables(0.5, 40)
    lens = rng.uniform(1, 6, (2, 40))
    starts = rng.integers(0, 16, 20)
    j = psp_block(x, np.diag(d), xa, wa, 0.5, t.rec, lens, 0.05, 4, starts, JMAX)
    ref, _, _ = viterbi_rows(np.concatenate([x, xa], 1), np.broadcast_to(np.concatenate([d, wa]), (20, 17)), 0.5,
                             t.rec, lens, 0.05, 4, starts)
    assert np.array_equal(j, ref[:, :12])


def test_ectcq_psp_blocks_form_valid_paths():
    """Blocks rounded with a full block metric (per-survivor processing) chain every row's
    state: the finished encoding decodes to the blocks' values."""
    rng = np.random.default_rng(11)
    W = rng.standard_normal((10, 40))
    codec = codec_by_name("ectcq")
    opts = {"bits": 2.0, "state_bits": 3, "ldlq_width": 16, "ldlq_lookahead": 8, "ldlq_psp": True}
    q = codec.block_quantizer(W, opts, codec.encode(W, opts))
    Qs, codes = [], []
    for k, (s, e) in enumerate(blocks_of(40, 16)):
        A = rng.standard_normal((e - s, e - s))
        ahead = (W[:, e : e + 8], np.ones(min(8, 40 - e)))
        Qk, ck = q.quantize(k, W[:, s:e], np.ones(e - s), ahead=ahead, metric=A @ A.T + np.eye(e - s))
        Qs.append(Qk)
        codes.append(ck)
    assert np.array_equal(decoded(codec, q.finish(codes), 10, 40), np.concatenate(Qs, axis=1))


# ---- the rate search's pieces ------------------------------------------------------------------


def test_next_knob_and_best_fit():
    assert next_knob([(0.0, 996.0)], 1000.0, -100.0) is None  # inside the window
    k = next_knob([(0.0, 1100.0)], 1000.0, -100.0)  # too big: the knob grows (coarser)
    assert k == pytest.approx(1.0)  # (995 - 1100) / -100 = 1.05, capped at one unit
    k = next_knob([(0.0, 1100.0), (0.5, 1050.0)], 1000.0, -80.0)  # measured slope -100 per unit
    assert k == pytest.approx(0.5 + (995 - 1050) / -100.0)
    k = next_knob([(0.0, 1100.0), (0.5, 1090.0)], 1000.0, -200.0)  # measured -20: 10x off, the default
    assert k == pytest.approx(0.5 + (995 - 1090) / -200.0)
    k = next_knob([(0.0, 900.0), (0.5, 950.0)], 1000.0, -200.0)  # positive slope: the default
    assert k == pytest.approx(0.5 + (995 - 950) / -200.0)
    # a bracket: between the closest sizes either side of the aim, whatever the order
    k = next_knob([(0.0, 900.0), (-1.0, 1200.0), (-0.6, 1030.0), (-0.2, 960.0)], 1000.0, -200.0)
    assert k == pytest.approx(-0.2 + (995 - 960) * (-0.6 + 0.2) / (1030 - 960))
    # the last two above the aim: the end below that stayed put weighs half (Illinois)
    k = next_knob([(0.0, 900.0), (-0.2, 960.0), (-1.0, 1200.0), (-0.6, 1030.0)], 1000.0, -200.0)
    assert k == pytest.approx(-0.2 + (995 - 960) / 2 * (-0.6 + 0.2) / ((1030 - 995) + (995 - 960) / 2))
    assert next_knob([(0.0, 992.0)], 1000.0, -100.0) is not None  # 0.8 % under at the first trial: try again
    assert next_knob([(0.0, 1100.0), (0.6, 992.0)], 1000.0, -100.0) is None  # later trials: the rate rule is met
    assert next_knob([(0.0, 1100.0), (0.6, 989.0)], 1000.0, -100.0) is not None  # 1.1 % under: not met
    assert best_fit([(0, 1001.0), (1, 990.0), (2, 995.0)], 1000.0) == 2
    assert best_fit([(0, 1001.0)], 1000.0) is None


def test_over_rate_ldlq_is_not_kept():
    """A rate-controlled result that no trial fits within the target is never chosen."""
    rng = np.random.default_rng(6)
    W = rng.standard_normal((32, 64))
    codec = codec_by_name("ecsq")

    class Tight(type(codec)):
        def block_quantizer(self, wp, options, free):
            q = super().block_quantizer(wp, options, free)
            q.target_bytes = 10.0  # nothing fits
            return q

    enc, info = encode_with_hessian(Tight(), W, {"bits": 2.0}, correlated_h(64, rng))
    assert info["chosen"] == "free" and info["proxy_ldlq"] == float("inf")
    assert enc.params["step"] == codec.encode(W, {"bits": 2.0}).params["step"]


# ---- the CLI ----------------------------------------------------------------------------------------


@pytest.fixture()
def toy_model(tmp_path):
    import torch
    from safetensors.torch import save_file

    from pvqcodec.quantize.hessians import write_hessians

    rng = np.random.default_rng(10)
    tensors = {
        "model.layers.0.q_proj.weight": torch.tensor(rng.standard_normal((64, 128)) * 0.05, dtype=torch.float16),
        "model.layers.0.down_proj.weight": torch.tensor(rng.standard_normal((48, 256)) * 0.05, dtype=torch.float16),
    }
    save_file(tensors, str(tmp_path / "model.safetensors"))

    def moments(n, seed):
        X = np.random.default_rng(seed).standard_normal((600, n)) @ correlated_h(n, rng)
        return X.T @ X, X.sum(0), X.shape[0]

    names = list(tensors)
    write_hessians(tmp_path / "H.safetensors", {n: moments(t.shape[1], i) for i, (n, t) in enumerate(tensors.items())},
                   {n: n for n in names}, tokens=600, ctx=10, model="toy")
    return tmp_path


@pytest.mark.parametrize("codec, bits, side", [("ecsq", "3", 16), ("pvqvr", "2", 0), ("ectcq", "2", 16),
                                               ("eclattice", "2", 16)])
def test_cli_hessians_end_to_end(toy_model, capsys, codec, bits, side):
    """`pvqcodec encode --hessians` with an entropy-coded codec: the file decodes, each
    tensor meets the rate rule (`side`: bytes of the transform's parameters, which the
    ecsq rate does not count and the summary does), and the kept result has the lower proxy."""
    from pvqcodec.api import PvqcFile
    from pvqcodec.cli import main

    out = toy_model / "out.pvqc"
    rc = main(["encode", str(toy_model / "model.safetensors"), str(out), "--codec", codec, "--bits", bits,
               "--hessians", str(toy_model / "H.safetensors"), "--ldlq-passes", "1"])
    assert rc == 0
    text = capsys.readouterr().out
    lines = [l.split() for l in text.splitlines() if l.startswith("model.layers.0")]
    assert len(lines) == 2
    for p in lines:
        numel = int(np.prod([int(v) for v in p[1].split("x")]))
        coded = float(p[4]) * numel / 8 - side
        assert coded <= float(bits) * numel / 8 + 1  # the lower side: test_ldlq_meets_the_rate_rule...
        assert p[-1] == "ldlq" and float(p[-2]) < float(p[-3])
    with PvqcFile(str(out)) as f:
        assert not f.verify(decode=True)


def test_block_quantizer_base_is_untouched():
    assert issubclass(RateControlledQuantizer, BlockQuantizer)
