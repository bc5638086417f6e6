"""The trellis encoder's Viterbi search on the GPU (gpu_decoder/trellis_viterbi.cu, `encode --device
cuda`) against the Numba encoder (viterbi.py): the same states and the same float32 costs, bit for
bit, for every code, k = 1..4 and L from k*V to 16 (the shared- and the global-memory kernels),
with ties, zero weights, both tail-biting modes and other seams; and the GPU encoder writes the same
file as the CPU encoder. Those need CUDA; the errors of `--device cuda` are checked anywhere."""

import numpy as np
import pytest

from pvqcodec.cli import main
from pvqcodec.codecs.trellis import codes, encode_trellis
from pvqcodec.codecs.trellis.gpu_viterbi import viterbi_encode_gpu
from pvqcodec.codecs.trellis.viterbi import viterbi_encode
from pvqcodec.errors import InputError

try:
    import torch

    HAS_CUDA = torch.cuda.is_available()
except ImportError:
    HAS_CUDA = False
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="CUDA is not available")

# (code, L, k): every code and k; L = k*V (no overlap: one free pass), L = k*V + 1 (fewer groups
# than a thread takes), small and default L, and L = 16 (k = 1 with V = 1 keeps m in global memory)
CASES = [
    (0, 1, 1), (0, 8, 1), (0, 8, 2), (0, 10, 3), (0, 12, 2), (0, 12, 4), (0, 5, 4), (0, 4, 4),
    (0, 16, 1), (0, 16, 2), (0, 16, 3), (0, 16, 4),
    (1, 2, 1), (1, 12, 1), (1, 12, 3), (1, 16, 1), (1, 16, 2), (1, 16, 4),
    (2, 2, 1), (2, 8, 1), (2, 12, 2), (2, 10, 3), (2, 9, 4), (2, 8, 4), (2, 16, 1), (2, 16, 2), (2, 16, 4),
]


def sequences(rng, code, L, n, ties=False):
    """n tiles of Gaussian values at the scale the encoder searches at, with weights: ones, a few
    zeros (as padding has) and a few other values. ties: values on a coarse grid, so that many
    paths cost the same and the tie-breaking shows."""
    V = codes.CODE_V[code]
    S = 256 // V
    x = rng.standard_normal((n, S, V)) * codes.code_rms(code, L) * 0.9
    if ties:
        step = 8.0 if code == codes.CODE_1MAD else 0.25
        x = np.round(x / step) * step
    w = np.ones((n, S, V))
    w[:, rng.integers(0, S, 20)] = 0.0
    w[0, : S // 2] = rng.uniform(0.1, 3.0, (S // 2, V))
    return x.astype(np.float32), w.astype(np.float32)


def assert_same(got, want):
    st_g, c_g = got
    st_w, c_w = want
    assert np.array_equal(st_g, st_w), f"states differ in {np.sum(np.any(st_g != st_w, axis=1))} tiles"
    assert c_g.astype(np.float32).tobytes() == c_w.astype(np.float32).tobytes()


@needs_cuda
@pytest.mark.parametrize("code,L,k", CASES)
def test_same_states_and_costs_as_numba(code, L, k):
    rng = np.random.default_rng(1000 * code + 10 * L + k)
    kv = k * codes.CODE_V[code]
    if L < kv:
        pytest.skip("L below k*V")
    n = 5 if L == 16 else 24
    lut = codes.code_lut(code, L)
    for ties in (False, True):
        x, w = sequences(rng, code, L, n, ties)
        assert_same(viterbi_encode_gpu(x, w, code, L, k), viterbi_encode(x, w, lut, L, kv))


@needs_cuda
@pytest.mark.parametrize("code,L,k,seam", [(0, 12, 2, 256), (0, 12, 2, 40), (0, 10, 3, 1), (0, 16, 2, 256),
                                           (2, 12, 2, 128), (2, 12, 2, 7), (1, 8, 4, 300)])
def test_same_result_for_other_seams(code, L, k, seam):
    rng = np.random.default_rng(seam + L)
    x, w = sequences(rng, code, L, 4 if L == 16 else 16)
    kv = k * codes.CODE_V[code]
    assert_same(viterbi_encode_gpu(x, w, code, L, k, seam=seam),
                viterbi_encode(x, w, codes.code_lut(code, L), L, kv, seam=seam))


@needs_cuda
@pytest.mark.parametrize("code,L,k", [(0, 12, 2), (1, 16, 3), (2, 12, 1)])
def test_same_result_free_mode(code, L, k):
    rng = np.random.default_rng(7)
    x, w = sequences(rng, code, L, 4 if L == 16 else 16, ties=True)
    kv = k * codes.CODE_V[code]
    assert_same(viterbi_encode_gpu(x, w, code, L, k, mode="free"),
                viterbi_encode(x, w, codes.code_lut(code, L), L, kv, mode="free"))


@needs_cuda
def test_block_sizes_give_the_same_result():
    """The block size only changes which thread does what."""
    import gpu_decoder as g

    rng = np.random.default_rng(3)
    x, w = sequences(rng, 0, 14, 40)
    xt, wt = torch.from_numpy(x.reshape(40, 256)).cuda(), torch.from_numpy(w.reshape(40, 256)).cuda()
    ref = [t.cpu() for t in g.trellis_viterbi(xt, wt, 0, 14, 2, 128)]
    for threads in (32, 96, 256, 1024):
        got = [t.cpu() for t in g.trellis_viterbi(xt, wt, 0, 14, 2, 128, threads=threads)]
        assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


@needs_cuda
def test_many_tiles_more_than_one_round_of_blocks():
    """More tiles than resident blocks: every block takes several tiles."""
    rng = np.random.default_rng(11)
    x, w = sequences(rng, 0, 8, 20000)
    lut = codes.code_lut(0, 8)
    st, c = viterbi_encode_gpu(x, w, 0, 8, 2)
    sub = rng.choice(20000, 300, replace=False)
    ref = viterbi_encode(x[sub], w[sub], lut, 8, 2)
    assert_same((st[sub], c[sub]), ref)


@needs_cuda
@pytest.mark.parametrize("row_scales", [False, True])
def test_codec_streams_equal_cpu(row_scales):
    """The codec's encoder with device="cuda" emits the same parameters and streams: a matrix
    with padding at the right and bottom, a weighting, and row scales on and off."""
    rng = np.random.default_rng(5)
    wp = rng.standard_normal((100, 300)) * np.exp(rng.normal(0, 0.3, (100, 1)))
    weighting = rng.uniform(0.2, 2.0, 300)
    opts = {"bits": 2, "code": "1mad", "trellis_L": 12, "row_scales": row_scales}
    cpu = encode_trellis(wp, {**opts, "device": "cpu"}, weighting)
    gpu = encode_trellis(wp, {**opts, "device": "cuda"}, weighting)
    for key in ("code", "L", "k", "row_scales"):
        assert cpu.params[key] == gpu.params[key]
    assert np.float32(cpu.params["scale"]).tobytes() == np.float32(gpu.params["scale"]).tobytes()
    assert len(cpu.streams) == len(gpu.streams)
    for a, b in zip(cpu.streams, gpu.streams):
        assert np.array_equal(a, b)


def test_codec_rejects_exact_mode_on_cuda():
    with pytest.raises(InputError, match="cpu only"):
        encode_trellis(np.ones((16, 16)), {"bits": 2, "trellis_L": 8, "tail_biting": "exact", "device": "cuda"})
    with pytest.raises(InputError, match="device"):
        encode_trellis(np.ones((16, 16)), {"bits": 2, "trellis_L": 8, "device": "tpu"})


@needs_cuda
def test_cli_writes_the_same_file_and_it_decodes(tmp_path):
    """`pvqcodec encode --device cuda` writes the CPU encoder's file byte for byte (two tensors, one
    with padding), and the Python reference decoder decodes it to the expected error."""
    from safetensors.numpy import save_file

    from pvqcodec.api import PvqcFile

    rng = np.random.default_rng(9)
    tensors = {"a.weight": rng.standard_normal((256, 512)).astype(np.float16),
               "b.weight": rng.standard_normal((40, 200)).astype(np.float32)}
    src = tmp_path / "in.safetensors"
    save_file(tensors, str(src))
    args = ["encode", str(src), None, "--codec", "trellis", "--bits", "2", "--trellis-L", "12", "-q"]
    for dev in ("cpu", "cuda"):
        args[2] = str(tmp_path / f"{dev}.pvqc")
        assert main(args + ["--device", dev]) == 0
    assert (tmp_path / "cpu.pvqc").read_bytes() == (tmp_path / "cuda.pvqc").read_bytes()
    with PvqcFile(str(tmp_path / "cuda.pvqc")) as f:
        for name, t in tensors.items():
            ref = t.astype(np.float64)
            got = np.asarray(f.decode_stored(name, "float32"), np.float64)
            nmse = np.mean((got - ref) ** 2) / np.mean(ref**2)
            assert 0.05 < nmse < 0.09  # L = 12, k = 2 on Gaussian data: about 0.075


def _weights_file(tmp_path):
    from safetensors.numpy import save_file

    src = tmp_path / "in.safetensors"
    save_file({"w": np.random.default_rng(2).standard_normal((32, 64)).astype(np.float32)}, str(src))
    return src


@pytest.mark.skipif(HAS_CUDA, reason="checks the error where CUDA is missing")
def test_cli_device_cuda_without_cuda_is_one_line_error(tmp_path, capsys):
    src = _weights_file(tmp_path)
    out = tmp_path / "o.pvqc"
    assert main(["encode", str(src), str(out), "--codec", "trellis", "--device", "cuda", "-q"]) == 1
    err = capsys.readouterr().err
    assert "--device cuda" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_device_cuda_with_a_cpu_only_codec(tmp_path, capsys):
    src = _weights_file(tmp_path)
    assert main(["encode", str(src), str(tmp_path / "o.pvqc"), "--codec", "pvq", "--device", "cuda", "-q"]) == 1
    err = capsys.readouterr().err
    assert "cpu only" in err and "Traceback" not in err
