"""CUDA kernels of gpu_decoder/ against the reference decoders (run on a CUDA machine; all
skipped without one). Decoded tensors must be bit-identical; fused products are checked by
relative error against float64. Outputs are poisoned with NaN before each run."""

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("CUDA is not available", allow_module_level=True)

import gpu_decoder as g  # noqa: E402
from pvqcodec.coding import RawCoding, StreamSpec  # noqa: E402
from pvqcodec.codecs.pvq import PVQCodec, enumeration  # noqa: E402
from pvqcodec.transforms import hadamard, rht  # noqa: E402

trellis_mod = importlib.import_module("pvqcodec.codecs.trellis")
from pvqcodec.codecs.trellis import codes as tcodes  # noqa: E402

DEV = torch.device("cuda")
ROOT = Path(__file__).resolve().parents[1]


def nan_like(shape, dtype=torch.float32):
    return torch.full(shape, float("nan"), dtype=dtype, device=DEV)


def to_dev(a):
    return torch.from_numpy(np.ascontiguousarray(a)).to(DEV)


@pytest.mark.parametrize("m,n,br,bc", [(48, 40, 24, 20), (256, 576, 256, 576), (1536, 192, 192, 12), (12, 28, 12, 28),
                                       (3584, 1024, 3584, 1024), (100, 7, 4, 1), (4096, 4096, 512, 4096)])
def test_inverse_rht_bit_exact(m, n, br, bc):
    rng = np.random.default_rng(m * 7 + n)
    wp = (rng.standard_normal((m, n)) * np.exp(rng.uniform(-20, 5, (m, n)))).astype(np.float32)
    seed = int(rng.integers(0, 2**63)) * 2 + 1
    ref = rht.inverse_2d(wp, seed, br, bc)
    got = g.inverse_rht_2d(to_dev(wp), seed, br, bc).cpu().numpy()
    assert got.tobytes() == ref.tobytes()
    for dt, conv in ((torch.float16, np.float16), (torch.bfloat16, None)):
        got16 = g.inverse_rht_2d(to_dev(wp), seed, br, bc, out_dtype=dt).cpu()
        want = torch.from_numpy(ref).to(dt)
        assert torch.equal(got16.view(torch.int16), want.view(torch.int16))


def test_forward_rht_inverts():
    rng = np.random.default_rng(3)
    for b in (1, 12, 256, 3584, 1792):
        x = rng.standard_normal((3, b * 2)).astype(np.float32)
        y = g.rht_side(to_dev(x), b, 99, 1, True)
        ref = rht.forward_axis(x.astype(np.float64), 1, b, 99, 1)
        assert np.abs(y.cpu().numpy() - ref).max() < 1e-4 * np.abs(ref).max()
        back = g.rht_side(y, b, 99, 1, False).cpu().numpy()
        assert np.abs(back - x).max() < 1e-4 * np.abs(x).max()


def _pvq_case(rng, rows, cols, d, k, gb):
    groups = rows * -(-cols // d)
    # random pulse vectors: K pulses dropped on random positions with random signs
    y = np.zeros((groups, d), np.int64)
    pos = rng.integers(0, d, (groups, k))
    for j in range(k):
        np.add.at(y, (np.arange(groups), pos[:, j]), 1)
    y *= rng.choice([-1, 1], (groups, d))
    idx = enumeration.encode_indices(y, k)
    ib = enumeration.index_bits(d, k)
    table = np.sort(rng.uniform(0.1, 3.0, 1 << gb)).astype(np.float32)
    params = {"group_size": d, "pulses": k, "gain_bits": gb, "gain_table": table}
    scales = rng.uniform(0.2, 2.0, rows).astype(np.float16).view(np.uint16)
    gains = rng.integers(0, 1 << gb, groups).astype(np.uint8)
    streams = [scales, gains, idx]
    specs = [StreamSpec("row_scales", rows, 16), StreamSpec("gains", groups, gb), StreamSpec("shapes", groups, ib)]
    payloads = [RawCoding.encode(s, sp) for s, sp in zip(streams, specs)]
    dec_streams = [RawCoding.decode(p, sp) for p, sp in zip(payloads, specs)]
    return params, payloads, dec_streams


@pytest.mark.parametrize("rows,cols,d,k,gb", [(5, 40, 8, 6, 3), (7, 70, 32, 22, 4), (9, 64, 32, 23, 0),
                                              (4, 130, 64, 52, 8), (3, 256, 64, 199, 5), (2, 300, 256, 300, 2),
                                              (6, 33, 1, 9, 1)])
def test_pvq_decode_bit_exact(rows, cols, d, k, gb):
    rng = np.random.default_rng(rows * 1000 + d)
    params, payloads, streams = _pvq_case(rng, rows, cols, d, k, gb)
    ref = PVQCodec().decode(params, rows, cols, "float32", streams)
    out = nan_like((rows, cols))
    got = g.pvq_decode([to_dev(p) for p in payloads], params, rows, cols, out=out).cpu().numpy()
    assert got.tobytes() == np.ascontiguousarray(ref, np.float32).tobytes()


def test_pvq_decode_rejects_index_out_of_range():
    from pvqcodec.errors import PayloadCorrupt

    rng = np.random.default_rng(5)
    rows, cols, d, k = 2, 16, 8, 6
    params, payloads, _ = _pvq_case(rng, rows, cols, d, k, 2)
    groups = rows * 2
    bad = np.full(groups, enumeration.pvq_count(d, k), np.uint64)  # N(8, 6) itself
    payloads[2] = RawCoding.encode(bad, StreamSpec("shapes", groups, enumeration.index_bits(d, k)))
    with pytest.raises(PayloadCorrupt):
        g.pvq_decode([to_dev(p) for p in payloads], params, rows, cols)


def _trellis_case(rng, rows, cols, code, L, k, row_scales):
    ti, tj = -(-rows // 16), -(-cols // 16)
    words = rng.integers(0, 2**32, ti * tj * 8 * k, dtype=np.uint64).astype(np.uint32)
    params = {"code": code, "L": L, "k": k, "row_scales": int(row_scales), "scale": np.float32(rng.uniform(0.001, 0.1))}
    payloads = [words.view(np.uint8)]
    streams = [words]
    if row_scales:
        h = rng.uniform(0.5, 2.0, rows).astype(np.float16).view(np.uint16)
        payloads.append(h.view(np.uint8))
        streams.append(h)
    return params, payloads, streams


TRELLIS_CASES = [(code, L, k) for code in (0, 1, 2) for L, k in ((16, 2), (12, 3), (16, 4), (8, 1), (16, 8))
                 if k * tcodes.CODE_V[code] <= L]


@pytest.mark.parametrize("code,L,k", TRELLIS_CASES)
def test_trellis_decode_bit_exact(code, L, k):
    rng = np.random.default_rng(code * 100 + L * 10 + k)
    for rows, cols, rs in ((40, 56, False), (16, 16, True), (33, 100, True)):
        params, payloads, streams = _trellis_case(rng, rows, cols, code, L, k, rs)
        ref = trellis_mod.TrellisCodec().decode(params, rows, cols, "float32", streams)
        out = nan_like((rows, cols))
        got = g.trellis_decode([to_dev(p) for p in payloads], params, rows, cols, out=out).cpu().numpy()
        assert got.tobytes() == np.ascontiguousarray(ref, np.float32).tobytes()


@pytest.mark.parametrize("code,L,k", [c for c in TRELLIS_CASES if c[2] <= 4])
def test_trellis_gemv_relative_error(code, L, k):
    rng = np.random.default_rng(7 + code + k)
    for rows, cols, m, rs in ((40, 56, 1, False), (256, 1000, 3, True), (512, 4096, 16, False), (48, 2048, 5, False)):
        params, payloads, streams = _trellis_case(rng, rows, cols, code, L, k, rs)
        wp = trellis_mod.TrellisCodec().decode(params, rows, cols, "float32", streams).astype(np.float64)
        x = rng.standard_normal((m, cols)).astype(np.float32)
        ref = x.astype(np.float64) @ wp.T
        got = g.trellis_gemv([to_dev(p) for p in payloads], params, rows, cols, to_dev(x)).cpu().numpy()
        assert np.isfinite(got).all()
        rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
        assert rel < 1e-5, rel
        # a split with fewer tile columns per block gives the same result up to rounding
        got2 = g.trellis_gemv([to_dev(p) for p in payloads], params, rows, cols, to_dev(x), jr=1).cpu().numpy()
        assert np.linalg.norm(got2 - ref) / np.linalg.norm(ref) < 1e-5


def test_quantized_linear_cuda_matches_reference():
    from pvqcodec.torch import QuantizedLinear

    rng = np.random.default_rng(11)
    rows, cols = 576, 1536
    seed, br, bc = 1234567, hadamard.default_block(rows), hadamard.default_block(cols)
    tp = {"seed": seed, "row_block": br, "col_block": bc}
    for codec_id in (1, 2):
        if codec_id == 2:
            params, payloads, _ = _trellis_case(rng, rows, cols, 2, 16, 2, False)
            specs = [StreamSpec("trellis", len(payloads[0]) // 4, 32)]
        else:
            params, payloads, _ = _pvq_case(rng, rows, cols, 32, 23, 4)
            specs = [StreamSpec("row_scales", rows, 16), StreamSpec("gains", rows * 48, 4),
                     StreamSpec("shapes", rows * 48, enumeration.index_bits(32, 23))]
        bias = rng.standard_normal(rows).astype(np.float32)
        q = QuantizedLinear(cols, rows, codec_id=codec_id, codec_params=params, transform_id=1, transform_params=tp,
                            payloads=payloads, streams=specs, codings=[0] * len(specs), bias=torch.from_numpy(bias),
                            dtype=torch.float16)
        ref_w = q.reference_dense()
        qc = q.to(DEV)
        w16 = qc.dense_weight(torch.float16).cpu()
        assert torch.equal(w16.view(torch.int16), torch.from_numpy(ref_w).half().view(torch.int16))
        for m in (1, 4, 16, 40):
            x = torch.randn(m, cols, dtype=torch.float16)
            ref = x.double() @ torch.from_numpy(ref_w).double().T + torch.from_numpy(bias).half().double()
            y = qc(x.to(DEV)).double().cpu()
            rel = ((y - ref).norm() / ref.norm()).item()
            assert rel < 5e-3, (codec_id, m, rel)


def test_conformance_vectors_bit_exact():
    from pvqcodec.container.reader import Container
    from pvqcodec.decoder import decode_matrix
    from pvqcodec.torch import QuantizedLinear

    n = 0
    for f in sorted((ROOT / "conformance" / "vectors").glob("*/input.pvqc")):
        c = Container.open(f)
        try:
            for rec in c.tensors:
                if rec.codec_id not in (1, 2) or len(rec.shape) != 2 or (rec.rows, rec.cols) != tuple(rec.shape):
                    continue
                ref = decode_matrix(c, rec)
                q = QuantizedLinear.from_container(c, rec.name, dtype=torch.float32).to(DEV)
                got = q.dense_weight(torch.float32).cpu().numpy()
                assert got.tobytes() == ref.tobytes(), (f, rec.name)
                n += 1
        finally:
            c.close()
    assert n > 0
