"""CUDA kernels of the lattice codec (gpu_decoder/lattice*.cu) against the reference decoder.
The table test runs anywhere; the rest needs a CUDA device and is skipped without one.
Decoded tensors must be bit-identical (outputs poisoned with NaN first); the fused product is
checked by relative error against float64."""

from pathlib import Path

import numpy as np
import pytest

import gpu_decoder as g
from pvqcodec.codecs.lattice import LatticeCodec, e8p, stages
from pvqcodec.coding import RawCoding

try:
    import torch

    HAVE_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover - torch is optional
    torch = None
    HAVE_CUDA = False

cuda = pytest.mark.skipif(not HAVE_CUDA, reason="CUDA is not available")
ROOT = Path(__file__).resolve().parents[1]


def test_packed_tables_reproduce_codebook_and_stage_table():
    t = g.lattice_tables_np().astype(np.int64)
    assert t.shape == (768,)
    w = np.arange(1 << 16)
    ts = t[w >> 8] ^ t[256 + (w & 255)]
    pts = np.stack([(ts >> q) & 7 for q in g.LATTICE_TPOS], 1) - 3.5 + np.where(ts & 2, -0.25, 0.25)[:, None]
    assert np.array_equal(pts, e8p.e8p_codebook().astype(np.float64))
    k = np.stack([(t[512:] >> q) & 15 for q in g.LATTICE_KPOS], 1)
    assert np.array_equal((k - 4) * 0.5 + np.asarray(g.LATTICE_D512) / 512, stages.STAGE_U.astype(np.float64))


def test_gemv_tables_reproduce_codebook_in_float16():
    """T', S' of the fused product (lattice.cuh, e8p_point_h2_rot): every codeword's point, built
    as the kernel builds it (4-bit field | float16 exponent, then one float16 addition), equals the
    codebook; the decode tables and K are carried unchanged."""
    t = g.lattice_gemv_tables_np()
    assert t.shape == (1536,)
    assert np.array_equal(t[:768], g.lattice_tables_np()) and np.array_equal(t[1280:], t[512:768])
    assert np.array_equal(g.lattice_gemv_points_np(t), e8p.e8p_codebook())
    bad = t.copy()
    bad[1024 + 5] ^= 1 << 17  # flip one parity bit of S'[5]: its points move by 1/2
    assert not np.array_equal(g.lattice_gemv_points_np(bad), e8p.e8p_codebook())


def _case(rng, rows, cols, k, row_scales):
    codec = LatticeCodec()
    scales = (rng.standard_normal(k) * np.array([1.0, 0.5, 0.25])[:k]).astype(np.float32)
    params = {"stages": k, "row_scales": bool(row_scales), "scales": scales}
    specs = codec.streams(params, rows, cols, "float16")
    syms = []
    for sp in specs:
        if sp.name == "row_scales":
            syms.append(rng.uniform(0.25, 4.0, rows).astype(np.float16).view(np.uint16))
        else:
            syms.append(rng.integers(0, 256, sp.count).astype(np.uint8))
    payloads = [RawCoding.encode(s, sp) for s, sp in zip(syms, specs)]
    streams = [RawCoding.decode(p, sp) for p, sp in zip(payloads, specs)]
    return params, payloads, streams, specs


def _dev(payloads):
    return [torch.from_numpy(np.ascontiguousarray(p)).to("cuda") for p in payloads]


@cuda
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("row_scales", [False, True])
def test_decode_bit_exact(k, row_scales):
    rng = np.random.default_rng(10 * k + row_scales)
    for rows, cols in ((1, 8), (7, 13), (33, 100), (64, 1024), (5, 1)):
        params, payloads, streams, _ = _case(rng, rows, cols, k, row_scales)
        ref = np.ascontiguousarray(LatticeCodec().decode(params, rows, cols, "float32", streams), np.float32)
        for dt in (torch.float32, torch.float16, torch.bfloat16):
            out = torch.full((rows, cols), float("nan"), dtype=dt, device="cuda")
            got = g.lattice_decode(_dev(payloads), params, rows, cols, out=out).cpu()
            want = torch.from_numpy(ref).to(dt)
            bits = torch.int32 if dt == torch.float32 else torch.int16
            assert torch.equal(got.view(bits), want.view(bits)), (rows, cols, dt)


@cuda
def test_decode_rejects_non_finite_row_scale():
    from pvqcodec.errors import PayloadCorrupt

    rng = np.random.default_rng(3)
    params, payloads, _, specs = _case(rng, 4, 16, 2, True)
    rs = np.full(4, 0x3C00, np.uint16)
    rs[2] = 0x7C00  # +inf
    payloads[0] = RawCoding.encode(rs, specs[0])
    with pytest.raises(PayloadCorrupt):
        g.lattice_decode(_dev(payloads), params, 4, 16)


@cuda
@pytest.mark.parametrize("k", [1, 2, 3])
def test_fused_product_relative_error(k):
    rng = np.random.default_rng(100 + k)
    for rows, cols, m, rs in ((40, 56, 1, False), (256, 1000, 3, True), (300, 4096, 16, False), (48, 2048, 5, True),
                              (129, 1536, 9, False), (16, 8, 2, False)):
        params, payloads, streams, _ = _case(rng, rows, cols, k, rs)
        wp = LatticeCodec().decode(params, rows, cols, "float32", streams).astype(np.float64)
        x = rng.standard_normal((m, cols)).astype(np.float32)
        xd = torch.from_numpy(x).to("cuda")
        for kb in (None, 1):
            got = g.lattice_gemv(_dev(payloads), params, rows, cols, xd, kb=kb).cpu().numpy().astype(np.float64)
            assert np.isfinite(got).all()
            ref = x.astype(np.float64) @ wp.T
            rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
            assert rel < 2e-3, (rows, cols, m, rel)
            # with the activations rounded to float16 as the kernel takes them, only the float32
            # accumulation differs
            ref_h = x.astype(np.float16).astype(np.float64) @ wp.T
            rel_h = np.linalg.norm(got - ref_h) / np.linalg.norm(ref_h)
            assert rel_h < 2e-5, (rows, cols, m, kb, rel_h)


def test_tile_layout_matches_kernel_order():
    """lattice_tile (torch, any device) puts byte (stream s, row r, group G) where the tiled
    kernel's lane reads it, and zero padding elsewhere."""
    if torch is None:
        pytest.skip("torch is not installed")
    rng = np.random.default_rng(5)
    for rows, cols, k in ((16, 512, 1), (33, 1000, 3), (7, 8, 2)):
        gr = -(-cols // 8)
        st = [rng.integers(1, 256, rows * gr).astype(np.uint8) for _ in range(k + 1)]
        dev = [torch.from_numpy(a) for a in st] + [torch.empty(0, dtype=torch.uint8)] * (3 - k)
        prep = (dev[0], dev[1], dev[2], dev[3], None, None, k)
        t = g.lattice_tile(prep, rows, cols).numpy()
        nch = -(-gr // 64)
        assert t.size == g.lattice_tile_bytes(rows, cols, k) == -(-rows // 16) * nch * (k + 1) * 1024
        r, G = np.meshgrid(np.arange(rows), np.arange(gr), indexing="ij")
        rt, rr, c, w = r // 16, r % 16, G // 64, G % 64
        lane = (rr % 8) * 4 + w // 16
        seen = np.zeros(t.size, bool)
        for s in range(k + 1):
            off = ((rt * nch + c) * (k + 1) + s) * 1024 + (rr // 8) * 512 + lane * 16 + w % 16
            assert np.array_equal(t[off.ravel()], st[s]), (rows, cols, k, s)
            seen[off.ravel()] = True
        assert not t[~seen].any()


def test_untile_inverts_tile():
    if torch is None:
        pytest.skip("torch is not installed")
    rng = np.random.default_rng(6)
    for rows, cols, k in ((16, 512, 1), (33, 1000, 3), (7, 8, 2), (130, 4104, 2)):
        gr = -(-cols // 8)
        st = [torch.from_numpy(rng.integers(0, 256, rows * gr).astype(np.uint8)) for _ in range(k + 1)]
        e = torch.empty(0, dtype=torch.uint8)
        t = g.lattice_tile((st[0], st[1], st[2] if k >= 2 else e, st[3] if k >= 3 else e, None, None, k), rows, cols)
        back = g.lattice_untile(t, rows, cols, k)
        assert len(back) == k + 1 and all(torch.equal(a, b) for a, b in zip(st, back))
    with pytest.raises(ValueError):
        g.lattice_untile(t[:-1], rows, cols, k)


def test_quantized_linear_tiles_replace_streams():
    """With the tiles (built on the first CUDA forward; here by hand, on the CPU) the module holds
    one copy of the payload: the stream buffers are emptied, and every reader of the streams
    (state_dict, the decoders, a move to another device, load_state_dict) gets them back."""
    if torch is None:
        pytest.skip("torch is not installed")
    rng = np.random.default_rng(22)
    rows, cols = 48, 1024
    for k, rs in ((1, False), (3, True)):
        q = _quantized_linear(rng, rows, cols, k, rs, rng.standard_normal(rows).astype(np.float32))
        orig = [p.clone() for p in q._payloads()]
        ref = q.reference_transformed()
        tiled = q._lattice_tiled(g)
        assert tiled is not None and tiled.numel() == g.lattice_tile_bytes(rows, cols, k)
        pos = q._lattice_streams()
        assert pos == list(range(int(rs), int(rs) + k + 1))
        assert all(getattr(q, f"payload{i}").numel() == 0 for i in pos)
        assert "bits_per_weight=" in repr(q) and f"{8 * sum(p.numel() for p in orig) / (rows * cols):.3f}" in repr(q)
        sd = q.state_dict()
        assert all(torch.equal(sd[f"payload{i}"], orig[i]) for i in range(q.n_payloads))
        assert np.array_equal(q.reference_transformed(), ref)
        q2 = _quantized_linear(np.random.default_rng(1), rows, cols, k, rs, np.zeros(rows, np.float32))
        q2._lattice_tiled(g)
        q2.load_state_dict(sd)  # into a tiled module: untiled first, then loaded
        assert q2._tiled is None and all(torch.equal(a, b) for a, b in zip(q2._payloads(), orig))
        q.to(torch.float32)  # any _apply puts the streams back first
        assert q._tiled is None and all(torch.equal(a, b) for a, b in zip(q._payloads(), orig))


@cuda
@pytest.mark.parametrize("k", [1, 2, 3])
def test_fused_product_tiled_layout(k):
    rng = np.random.default_rng(200 + k)
    for rows, cols, m, rs in ((40, 56, 1, False), (256, 1000, 3, True), (300, 4096, 16, False), (48, 2048, 5, True),
                              (129, 1536, 9, False), (16, 8, 2, False), (272, 5120, 4, True)):
        params, payloads, streams, _ = _case(rng, rows, cols, k, rs)
        wp = LatticeCodec().decode(params, rows, cols, "float32", streams).astype(np.float64)
        x = rng.standard_normal((m, cols)).astype(np.float32)
        xd = torch.from_numpy(x).to("cuda")
        prep = g.lattice_prepare(_dev(payloads), params)
        tiled = g.lattice_tile(prep, rows, cols)
        ref = x.astype(np.float64) @ wp.T
        ref_h = x.astype(np.float16).astype(np.float64) @ wp.T
        for kb in (None, 1, 3):
            got = g.lattice_gemv(None, params, rows, cols, xd, kb=kb, prepared=prep, tiled=tiled)
            got = got.cpu().numpy().astype(np.float64)
            assert got.shape == (m, rows) and np.isfinite(got).all()
            assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 2e-3, (rows, cols, m, kb)
            rel_h = np.linalg.norm(got - ref_h) / np.linalg.norm(ref_h)
            assert rel_h < 2e-5, (rows, cols, m, kb, rel_h)
            old = g.lattice_gemv(None, params, rows, cols, xd, kb=kb, prepared=prep).cpu().numpy().astype(np.float64)
            assert np.abs(got - old).max() <= 1e-5 * np.abs(ref_h).max(), (rows, cols, m, kb)
        # the tuning variants (bench/gpu_bench.py --variant-sweep) compute the same product
        if k != 2 and m <= 8:
            for v in range(1, 14):
                if v in (7, 8, 11, 13):  # timing diagnostics (loads only / decode only)
                    continue
                yv = g.lattice_gemv(None, params, rows, cols, xd, kb=kb, prepared=prep, tiled=tiled, variant=v)
                yv = yv.cpu().numpy().astype(np.float64)
                assert np.abs(yv - got).max() <= 1e-5 * np.abs(ref_h).max(), (rows, cols, m, kb, v)
    with pytest.raises(RuntimeError):  # a tiled buffer of the wrong size
        g.lattice_gemv(None, params, rows, cols, xd, prepared=prep, tiled=tiled[:-16])


def _quantized_linear(rng, rows, cols, k, row_scales, bias):
    from pvqcodec.torch import QuantizedLinear
    from pvqcodec.transforms import hadamard

    params, payloads, _, specs = _case(rng, rows, cols, k, row_scales)
    tp = {"seed": 987654321, "row_block": hadamard.default_block(rows), "col_block": hadamard.default_block(cols)}
    return QuantizedLinear(cols, rows, codec_id=3, codec_params=params, transform_id=1, transform_params=tp,
                           payloads=payloads, streams=specs, codings=[0] * len(specs),
                           bias=torch.from_numpy(bias), dtype=torch.float16)


@cuda
def test_quantized_linear_lattice_cuda_matches_reference():
    rng = np.random.default_rng(21)
    rows, cols = 576, 1536
    for k, rs in ((1, False), (3, True)):
        bias = rng.standard_normal(rows).astype(np.float32)
        q = _quantized_linear(rng, rows, cols, k, rs, bias)
        ref_w = q.reference_dense()
        orig = [p.clone() for p in q._payloads()]
        qc = q.to("cuda")
        qc(torch.randn(1, cols, dtype=torch.float16, device="cuda"))
        if __import__("pvqcodec.torch", fromlist=["x"]).LATTICE_TILED:  # 576 x 1536: no padding, tiled path taken
            assert qc._tiled is not None  # one copy: the tiles replaced the streams
            assert all(getattr(qc, f"payload{i}").numel() == 0 for i in qc._lattice_streams())
            sd = qc.state_dict()
            assert all(torch.equal(sd[f"payload{i}"].cpu(), orig[i]) for i in range(qc.n_payloads))
        assert qc.gpu_transformed(torch.float32).cpu().numpy().tobytes() == \
            np.ascontiguousarray(q.reference_transformed(), np.float32).tobytes()
        w16 = qc.dense_weight(torch.float16).cpu()
        assert torch.equal(w16.view(torch.int16), torch.from_numpy(ref_w).half().view(torch.int16))
        for m in (1, 4, 16, 17, 40):
            x = torch.randn(m, cols, dtype=torch.float16)
            ref = x.double() @ torch.from_numpy(ref_w).double().T + torch.from_numpy(bias).half().double()
            y = qc(x.to("cuda")).double().cpu()
            rel = ((y - ref).norm() / ref.norm()).item()
            assert rel < 5e-3, (k, m, rel)


@cuda
def test_quantized_linear_rejects_non_finite_row_scale():
    from pvqcodec.errors import PayloadCorrupt

    rng = np.random.default_rng(8)
    q = _quantized_linear(rng, 64, 256, 2, True, np.zeros(64, np.float32))
    p = q.payload0.numpy().view(np.uint16)
    p[5] = 0xFC00  # -inf
    qc = q.to("cuda")
    with pytest.raises(PayloadCorrupt):
        qc(torch.randn(1, 256, dtype=torch.float16, device="cuda"))


@cuda
def test_lattice_conformance_vectors_bit_exact():
    from pvqcodec.container.reader import Container
    from pvqcodec.decoder import decode_matrix
    from pvqcodec.torch import QuantizedLinear

    n = 0
    for f in sorted((ROOT / "conformance" / "vectors").glob("lattice_*/input.pvqc")):
        c = Container.open(f)
        try:
            for rec in c.tensors:
                if rec.codec_id != 3 or len(rec.shape) != 2 or (rec.rows, rec.cols) != tuple(rec.shape):
                    continue
                q = QuantizedLinear.from_container(c, rec.name, dtype=torch.float32)
                ref_t = np.ascontiguousarray(q.reference_transformed(), np.float32)
                qc = q.to("cuda")
                assert qc.gpu_transformed(torch.float32).cpu().numpy().tobytes() == ref_t.tobytes(), (f, rec.name)
                ref = decode_matrix(c, rec)
                got = qc.dense_weight(torch.float32).cpu().numpy()
                assert got.tobytes() == ref.tobytes(), (f, rec.name)
                n += 1
        finally:
            c.close()
    assert n > 0
