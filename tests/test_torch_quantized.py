"""pvqcodec.torch on the CPU (runs in CI): QuantizedLinear against the dense decoded matrix,
load_pvqc_into on a small model, and `import pvqcodec` staying free of torch."""

import importlib
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pvqcodec.api import PvqcFile  # noqa: E402
from pvqcodec.cli import main  # noqa: E402
from pvqcodec.coding import StreamSpec  # noqa: E402
from pvqcodec.safetensors_io import write_safetensors  # noqa: E402
from pvqcodec.torch import QuantizedLinear, load_pvqc_into  # noqa: E402
from pvqcodec.transforms import hadamard  # noqa: E402


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up = torch.nn.Linear(96, 160, bias=True)
        self.norm = torch.nn.LayerNorm(160)
        self.down = torch.nn.Linear(160, 96, bias=False)

    def forward(self, x):
        return self.down(torch.relu(self.norm(self.up(x))))


def test_import_pvqcodec_does_not_import_torch():
    code = "import sys, pvqcodec, pvqcodec.api, pvqcodec.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.fixture(scope="module")
def encoded_tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    model = Tiny()
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    write_safetensors(d / "in.safetensors", [(k, "F32", v.shape, (lambda v=v: v)) for k, v in sd.items()])
    out = d / "tiny.pvqc"
    assert main(["encode", str(d / "in.safetensors"), str(out), "--codec", "pvq", "--bits", "3", "-q"]) == 0
    return out, sd


def test_load_pvqc_into_replaces_linears_and_matches_dense(encoded_tiny):
    path, sd = encoded_tiny
    model = Tiny()
    report = load_pvqc_into(model, path)
    assert sorted(report["quantized"]) == ["down.weight", "up.weight"]
    assert "norm.weight" in report["loaded"] and not report["missing"]
    assert isinstance(model.up, QuantizedLinear) and isinstance(model.down, QuantizedLinear)
    with PvqcFile(path) as f:
        w_up, w_down = f.decode("up.weight"), f.decode("down.weight")
        b_up = f.decode("up.bias")
    # the dense weight of the CPU path is the reference decoder's, bit for bit
    assert model.up.dense_weight(torch.float32).numpy().tobytes() == np.ascontiguousarray(w_up).tobytes()
    x = torch.randn(5, 96)
    ref = torch.nn.functional.linear(x.double(), torch.from_numpy(w_up).double(), torch.from_numpy(b_up).double())
    y = model.up(x)
    assert torch.allclose(y.double(), ref, rtol=1e-5, atol=1e-5)
    # the whole model: same function as the model holding the decoded weights
    dense = Tiny()
    with torch.no_grad():
        dense.up.weight.copy_(torch.from_numpy(w_up))
        dense.up.bias.copy_(torch.from_numpy(b_up))
        dense.down.weight.copy_(torch.from_numpy(w_down))
        dense.norm.weight.copy_(torch.from_numpy(sd["norm.weight"]))
        dense.norm.bias.copy_(torch.from_numpy(sd["norm.bias"]))
    xb = torch.randn(2, 3, 96)
    assert torch.allclose(model(xb), dense(xb), rtol=1e-4, atol=1e-5)
    # and the quantization is real: close to, but not equal to, the original weights
    err = np.linalg.norm(w_up - sd["up.weight"]) / np.linalg.norm(sd["up.weight"])
    assert 0 < err < 0.3


def test_trellis_quantized_linear_cpu_matches_reference_decoder():
    trellis = importlib.import_module("pvqcodec.codecs.trellis")
    rng = np.random.default_rng(2)
    rows, cols, k = 48, 40, 2
    words = rng.integers(0, 2**32, 3 * 3 * 8 * k, dtype=np.uint64).astype(np.uint32)
    params = {"code": 0, "L": 16, "k": k, "row_scales": 0, "scale": np.float32(0.003)}
    tp = {"seed": 77, "row_block": hadamard.default_block(rows), "col_block": hadamard.default_block(cols)}
    q = QuantizedLinear(cols, rows, codec_id=2, codec_params=params, transform_id=1, transform_params=tp,
                        payloads=[words.view(np.uint8)], streams=[StreamSpec("trellis", words.size, 32)], codings=[0],
                        dtype=torch.float32)
    from pvqcodec.transforms import rht

    wp = trellis.TrellisCodec().decode(params, rows, cols, "float32", [words])
    w = rht.inverse_2d(np.ascontiguousarray(wp, np.float32), 77, tp["row_block"], tp["col_block"])
    assert q.dense_weight().numpy().tobytes() == w.tobytes()
    x = torch.randn(7, cols)
    ref = x.double() @ torch.from_numpy(w).double().T
    assert torch.allclose(q(x).double(), ref, rtol=1e-5, atol=1e-6)
    # state_dict round trip keeps the payload bytes (the compressed form)
    q2 = QuantizedLinear(cols, rows, codec_id=2, codec_params=params, transform_id=1, transform_params=tp,
                         payloads=[np.zeros(words.size * 4, np.uint8)], streams=[StreamSpec("trellis", words.size, 32)],
                         codings=[0], dtype=torch.float32)
    q2.load_state_dict(q.state_dict())
    assert torch.equal(q2(x), q(x))


def test_gpu_path_skips_cleanly_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present: tests/test_gpu_decoder.py covers the GPU path")
    from pvqcodec.torch import gpu_kernels

    with pytest.raises(RuntimeError, match="CUDA"):
        gpu_kernels().load()
