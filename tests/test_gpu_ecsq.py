"""The GPU ecsq decoder (gpu_decoder/ecsq.cu, spec 6.6.4) against the Python reference decoder:
W' and the dense weight W bit-identical in float32, float16 and bfloat16 (outputs poisoned
before each run), from the rans decoder's symbols and from raw payloads; QuantizedLinear on
CUDA. Skipped without a CUDA device."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

if not torch.cuda.is_available():
    pytest.skip("CUDA is not available", allow_module_level=True)

import gpu_decoder as g  # noqa: E402
from pvqcodec.cli import main  # noqa: E402
from pvqcodec.codecs.ecsq import decode_ecsq_values  # noqa: E402
from pvqcodec.container.reader import Container  # noqa: E402
from pvqcodec.errors import PayloadCorrupt  # noqa: E402
from pvqcodec.safetensors_io import write_safetensors  # noqa: E402
from pvqcodec.torch import QuantizedLinear, load_pvqc_into  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = {"a.weight": (96, 160), "b.weight": (64, 128)}
# (bits, transform, entropy): rans table mode and the raw coding, identity and RHT
CONFIGS = [(2, "rht", "rans"), (3, "identity", "rans"), (4, "rht", "none")]


def _poisoned(shape, dtype):
    return torch.full(shape, float("nan"), dtype=dtype, device="cuda")


def _bits(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()


def _ref_bits(x: np.ndarray, dtype) -> bytes:
    """The float32 reference rounded to nearest even to `dtype` (torch's CPU conversion)."""
    return _bits(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(dtype))


@pytest.fixture(scope="module", params=CONFIGS, ids=lambda c: f"{c[0]}b-{c[1]}-{c[2]}")
def encoded(request, tmp_path_factory):
    bits, transform, entropy = request.param
    d = tmp_path_factory.mktemp("ecsq")
    rng = np.random.default_rng(bits)
    arrays = {k: (rng.standard_normal(s) * 0.02).astype(np.float32) for k, s in SHAPES.items()}
    write_safetensors(d / "in.safetensors", [(k, "F32", v.shape, (lambda v=v: v)) for k, v in arrays.items()])
    out = d / "m.pvqc"
    assert main(["encode", str(d / "in.safetensors"), str(out), "--codec", "ecsq", "--bits", str(bits),
                 "--transform", transform, "--entropy", entropy, "-q"]) == 0
    return out, entropy


def _layers(path):
    c = Container.open(path)
    try:
        return {name: QuantizedLinear.from_container(c, name, dtype=torch.float32) for name in SHAPES}
    finally:
        c.close()


def test_wprime_from_rans_symbols_and_raw_bit_identical(encoded):
    path, entropy = encoded
    for name, q in _layers(path).items():
        assert q.codec_id == 5
        assert q.codings[0] == (1 if entropy == "rans" else 0), q.codings
        rows, cols = q.out_features, q.in_features
        ref = q.reference_transformed()
        p = q.payload0.cuda()
        if entropy == "rans":  # the rans decoder's symbols, fed straight to the ecsq kernel
            _, sym = g.rans_decode(p, q.streams[0], symbols=True, packed=False)
            src = [sym]
        else:
            src = [p]
        for dt in DTYPES:
            out = _poisoned((rows, cols), dt)
            got = g.ecsq_decode(src, q.codec_params, rows, cols, out=out)
            assert got.data_ptr() == out.data_ptr()
            assert _bits(got) == _ref_bits(ref, dt), (name, dt)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dense_weight_bit_identical(encoded, dtype):
    path, _ = encoded
    for name, q in _layers(path).items():
        q = q.cuda()
        q.to_fixed_rate()  # rans payloads -> raw, on the GPU
        assert q._gpu_supported()
        wp = q.gpu_transformed(dtype)
        assert _bits(wp) == _ref_bits(q.reference_transformed(), dtype), (name, dtype)
        w = q.dense_weight(dtype)
        assert w.is_cuda and w.dtype == dtype
        assert _bits(w) == _ref_bits(q.reference_dense(), dtype), (name, dtype)


def _synthetic(rng, n):
    """Every corner symbol (0, 1, 2, 65534, 65535) plus random ones over the whole range."""
    s = rng.integers(0, 1 << 16, n, dtype=np.int64)
    s[:6] = [0, 1, 2, 3, 65534, 65535]
    return s


@pytest.mark.parametrize("offsets", [
    np.zeros(0, np.float32),                                   # n = 0: every offset 0
    np.array([1.0, 0.3, -0.25], np.float32),                   # off(1) = 1: t = 0, so -0.0 for s = 2
    np.random.default_rng(7).standard_normal(300).astype(np.float32) * 0.3,
], ids=["n0", "n3", "n300"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_synthetic_symbols_bit_identical(offsets, dtype):
    rng = np.random.default_rng(offsets.size)
    rows, cols = 37, 1001
    sym = _synthetic(rng, rows * cols)
    params = {"step": np.float32(0.0123457), "offsets": offsets}
    ref = decode_ecsq_values(sym, params["step"], offsets).reshape(rows, cols)
    raw = torch.from_numpy(sym.astype("<u2").view(np.uint8)).cuda()
    out = _poisoned((rows, cols), dtype)
    got = g.ecsq_decode([raw], params, rows, cols, out=out)
    assert _bits(got) == _ref_bits(ref, dtype)
    if dtype == torch.float32 and offsets.size == 3:  # the signed zeros are the spec's
        w = got.cpu().numpy().reshape(-1).view(np.uint32)
        assert w[0] == 0x00000000 and w[2] == 0x80000000


def test_misaligned_raw_payload():
    rng = np.random.default_rng(1)
    sym = _synthetic(rng, 500)
    params = {"step": np.float32(0.5), "offsets": np.array([0.1, 0.2], np.float32)}
    buf = torch.zeros(1 + 1000, dtype=torch.uint8, device="cuda")
    buf[1:] = torch.from_numpy(sym.astype("<u2").view(np.uint8)).cuda()
    got = g.ecsq_decode([buf[1:]], params, 20, 25)
    assert _bits(got) == _ref_bits(decode_ecsq_values(sym, params["step"], params["offsets"]).reshape(20, 25),
                                   torch.float32)


def test_not_finite_is_payload_corrupt():
    params = {"step": np.float32(3e38), "offsets": np.zeros(0, np.float32)}
    sym = torch.from_numpy(np.array([0, 1, 6], "<u2").view(np.uint8)).cuda()  # m = 3: 9e38 overflows
    with pytest.raises(PayloadCorrupt):
        g.ecsq_decode([sym], params, 1, 3)
    ok = torch.from_numpy(np.array([0, 1, 2], "<u2").view(np.uint8)).cuda()
    assert torch.isfinite(g.ecsq_decode([ok], params, 1, 3)).all()


class Two(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(160, 96, bias=False)
        self.b = torch.nn.Linear(128, 64, bias=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_load_pvqc_into_cuda_forward(encoded, dtype):
    path, _ = encoded
    model = Two().cuda().to(dtype)
    report = load_pvqc_into(model, path)
    assert sorted(report["quantized"]) == ["a.weight", "b.weight"]
    ref_layers = _layers(path)
    for name in ("a", "b"):
        q = getattr(model, name)
        assert isinstance(q, QuantizedLinear) and all(c == 0 for c in q.codings) and q._gpu_supported()
        ref_w = ref_layers[f"{name}.weight"].reference_dense()
        assert _bits(q.dense_weight(dtype)) == _ref_bits(ref_w, dtype)
        x = torch.randn(9, q.in_features, device="cuda", dtype=dtype)
        y = q(x)
        want = torch.nn.functional.linear(x.double(), torch.from_numpy(ref_w).double().cuda())
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        scale = want.abs().max().item()
        assert y.dtype == dtype and (y.double() - want).abs().max().item() <= tol * max(scale, 1e-3) * 4
