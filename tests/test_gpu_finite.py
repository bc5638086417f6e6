"""Spec 7.3 step 3 on the torch paths: a quantized tensor whose decoded float32 W is not all
finite is payload_corrupt, in dense_weight, in the fused / decode-then-product forward paths
(checked once per layer by QuantizedLinear.check_finite) and at load; valid files still load
and match the reference decoder bit for bit."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers import CONFORMANCE, load_conformance  # noqa: E402
from pvqcodec.codecs import codec_by_id  # noqa: E402
from pvqcodec.container.reader import Container  # noqa: E402
from pvqcodec.decoder import decode_matrix, decode_stored  # noqa: E402
from pvqcodec.errors import PayloadCorrupt  # noqa: E402
from pvqcodec.torch import QuantizedLinear, load_pvqc_into  # noqa: E402

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
FLT_MAX = float(np.finfo(np.float32).max)


def vector(name):
    return CONFORMANCE / "vectors" / name / "input.pvqc"


def patched(tmp_path, name, params, tensor_name="w"):
    """A conformance vector with codec parameters of its one tensor replaced (and the tensor
    renamed); payloads unchanged, sizes and CRCs recomputed by RawFile."""
    src = vector(name)
    with Container.open(src) as c:
        rec = c.tensor(c.names[0])
        raw = codec_by_id(rec.codec_id).build_params(dict(rec.codec_params, **params))
    rf = load_conformance("generate").RawFile.parse(src.read_bytes())
    rf.tensors[0].codec_params = raw
    rf.tensors[0].name = tensor_name.encode()
    out = tmp_path / f"{name}_{tensor_name}.pvqc"
    out.write_bytes(rf.to_bytes())
    return out


def reference_error(path):
    """The reference decoder's payload_corrupt message for the file's tensor (it must raise)."""
    with Container.open(path) as c:
        with pytest.raises(PayloadCorrupt) as e:
            decode_matrix(c, c.tensor(c.names[0]))
    return str(e.value)


def module(path, device):
    with Container.open(path) as c:
        return QuantizedLinear.from_container(c, c.names[0]).to(device)


class One(torch.nn.Module):
    def __init__(self, rows, cols):
        super().__init__()
        self.lin = torch.nn.Linear(cols, rows, bias=False)


# lattice row scales are float16 (at most 65504); a stage scale of 1e37 or 3e38 overflows W or W'
CORRUPT = [
    ("lattice_row_scales_2bit", {"scales": np.array([3e38], np.float32)}),  # W' already infinite
    ("lattice_row_scales_2bit", {"scales": np.array([1e37], np.float32)}),  # W' finite, W not
    ("pvq_d8_2bit", {"gain_table": np.array([3e38], np.float32)}),  # a gain table entry of 3e38
]


@pytest.mark.parametrize("name,params", CORRUPT)
def test_cpu_dense_weight_rejects_non_finite(tmp_path, name, params):
    path = patched(tmp_path, name, params)
    msg = reference_error(path)
    with pytest.raises(PayloadCorrupt) as e:
        module(path, "cpu").dense_weight(torch.float32)
    assert str(e.value) == msg
    # the file loads by name into a model on the CPU (the CUDA test relies on it); the error comes at use
    path = patched(tmp_path, name, params, tensor_name="lin.weight")
    q = module(path, "cpu")
    model = One(q.out_features, q.in_features)
    assert load_pvqc_into(model, path)["quantized"] == ["lin.weight"]
    with pytest.raises(PayloadCorrupt, match="'lin.weight'"):
        model.lin(torch.zeros(1, model.lin.in_features))


@needs_cuda
@pytest.mark.parametrize("name,params", CORRUPT)
@pytest.mark.parametrize("batch", [1, 40])  # fused product (lattice) and decode-then-product
def test_gpu_rejects_non_finite(tmp_path, name, params, batch):
    path = patched(tmp_path, name, params)
    msg = reference_error(path)  # names the first non-finite value and its row
    with pytest.raises(PayloadCorrupt) as e:
        module(path, "cuda").dense_weight(torch.float16)
    assert str(e.value) == msg
    q = module(path, "cuda")
    x = torch.randn(batch, q.in_features, device="cuda", dtype=q.dtype)
    with pytest.raises(PayloadCorrupt) as e:
        q(x)
    assert str(e.value) == msg
    path = patched(tmp_path, name, params, tensor_name="lin.weight")
    msg = reference_error(path)
    with pytest.raises(PayloadCorrupt) as e:
        load_pvqc_into(One(q.out_features, q.in_features).cuda(), path)
    assert str(e.value) == msg


@needs_cuda
def test_gpu_w_prime_finite_but_w_not_goes_through_the_exact_check(tmp_path):
    path = patched(tmp_path, *CORRUPT[1])
    assert np.isfinite(module(path, "cpu").reference_transformed()).all()
    q = module(path, "cuda")
    assert bool(torch.isfinite(q.gpu_transformed()).all())  # only the inverse transform overflows
    with pytest.raises(PayloadCorrupt, match="row"):
        q.check_finite()


@needs_cuda
def test_gpu_bound_failing_but_finite_layer_loads_exactly(tmp_path):
    """max|W'| above FLT_MAX / (2 b_r b_c) but W finite: the exact fallback accepts it."""
    path = patched(tmp_path, "lattice_row_scales_2bit", {"scales": np.array([3e35], np.float32)})
    q = module(path, "cuda")
    tp = q.transform_params
    assert float(q.gpu_transformed().abs().max()) > FLT_MAX / (2 * tp["row_block"] * tp["col_block"])
    q.check_finite()
    with Container.open(path) as c:
        ref = decode_matrix(c, c.tensor("w"))
    assert np.isfinite(ref).all()
    assert q.dense_weight(torch.float32).cpu().numpy().tobytes() == ref.tobytes()
    y = q(torch.randn(3, q.in_features, device="cuda"))
    assert y.shape == (3, q.out_features)


VALID = ["lattice_2bit", "lattice_row_scales_4bit", "lattice_identity", "pvq_d8_2bit", "pvq_rht_block_576",
         "pvq_identity", "pvq_row_scales", "trellis_2bit", "trellis_row_scales", "trellis_identity"]


@needs_cuda
@pytest.mark.parametrize("name", VALID)
def test_gpu_valid_vectors_load_and_match_bit_for_bit(name):
    path = vector(name)
    with Container.open(path) as c:
        rec = c.tensor(c.names[0])
        f32 = decode_matrix(c, rec)
        f16 = decode_stored(c, rec, "float16")
        bf16 = decode_stored(c, rec, "bfloat16")
    q = module(path, "cuda")
    q.check_finite()
    assert q.dense_weight(torch.float32).cpu().numpy().tobytes() == np.ascontiguousarray(f32, np.float32).tobytes()
    assert q.dense_weight(torch.float16).cpu().numpy().tobytes() == np.ascontiguousarray(f16).tobytes()
    got = q.dense_weight(torch.bfloat16).view(torch.int16).cpu().numpy()
    assert got.tobytes() == np.ascontiguousarray(bf16).tobytes()
    y = q(torch.randn(2, q.in_features, device="cuda", dtype=q.dtype))
    assert bool(torch.isfinite(y).all())
