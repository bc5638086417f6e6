"""The GPU eclattice decoder (gpu_decoder/eclattice.cu, spec 6.8) against the Python reference decoder.

As tests/test_gpu_ectcq.py: every decode test runs on CUDA (skipped without a device) and on
the CPU with `EmulatedKernels`, a literal numpy model of the three passes' kernels (thread =
group) driven by the real host wrapper `gpu_decoder.eclattice_decode` (check 1 on the host,
the prefix sums and checks 2 and 3 in torch, error bits and messages). CUDA runs: W' and W
bit-identical in float32 / float16 / bfloat16 (outputs poisoned first), columns not a multiple
of 8 (padding), every corruption rejected where the reference rejects it, encoded files (rans
and raw), the committed conformance vectors `eclattice_*`, QuantizedLinear."""

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gpu_decoder as g  # noqa: E402
from pvqcodec.cli import main  # noqa: E402
from pvqcodec.codecs import codec_by_id  # noqa: E402
from pvqcodec.codecs.eclattice import groups_per_row, unzigzag  # noqa: E402
from pvqcodec.container.reader import Container  # noqa: E402
from pvqcodec.errors import PayloadCorrupt  # noqa: E402
from pvqcodec.safetensors_io import write_safetensors  # noqa: E402
from pvqcodec.torch import QuantizedLinear, load_pvqc_into  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
cuda_only = pytest.mark.skipif(not CUDA, reason="CUDA is not available")
CODEC = codec_by_id(7)
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


# ---- the kernels' model (eclattice.cu, thread = group) ---------------------------------------------


def _unz(s):
    """eclattice.cu's unzigzag: odd s -> (s + 1) / 2, even s -> -(s / 2)."""
    s = np.asarray(s, np.int64)
    return np.where(s & 1, (s + 1) >> 1, -(s >> 1))


def _sym(t) -> np.ndarray:
    return t.numpy().view(np.uint16).astype(np.int64)


def _gather(a, idx, ok):
    out = np.zeros(idx.shape, np.int64)
    if a.size:
        out[ok] = a[idx[ok]]
    return out


def _group_head(st, G, n_int, int_before):
    """group_head for every group: (c (G, 8) with c_0..c_6, k, r, ok)."""
    first, mid_int, mid_half = _sym(st[0]), _sym(st[1]), _sym(st[2])
    g = np.arange(G, dtype=np.int64)
    ib = int_before.numpy()
    c = np.zeros((G, 8), np.int64)
    c[:, 0] = _unz(first)
    k = c[:, 0] & 1
    idx = np.where(k == 1, g - ib, ib)
    ok = idx < np.where(k == 1, G - n_int, n_int)
    s = c[:, 0].copy()
    for i in range(1, 7):
        mi = _gather(mid_int, 6 * idx + i - 1, ok & (k == 0))
        mh = _gather(mid_half, 6 * idx + i - 1, ok & (k == 1))
        c[:, i] = 2 * _unz(np.where(k == 1, mh, mi)) + k
        s += c[:, i]
    return c, k, -s & 3, ok


def _check_args(streams, G, tensors):
    """The extension's argument checks (eclattice.cu): int16 streams, flags and positions per group."""
    assert all(t.dtype == torch.int16 and t.is_contiguous() for t in streams)
    assert streams[0].numel() >= G
    for name, (t, dtype) in tensors.items():
        assert t.dtype == dtype and t.is_contiguous() and t.numel() >= (1 if name == "err" else G), name


class EmulatedKernels:
    """The extension's eclattice_cosets / eclattice_residues / eclattice_decode as numpy."""

    @staticmethod
    def eclattice_cosets(first, G, is_int):
        _check_args([first], G, {"is_int": (is_int, torch.uint8)})
        is_int.copy_(torch.from_numpy(((_unz(_sym(first)) & 1) == 0).astype(np.uint8)))

    @staticmethod
    def eclattice_residues(streams, G, n_int, n_res0, int_before, is_res0, err):
        _check_args(streams, G, {"int_before": (int_before, torch.int32), "is_res0": (is_res0, torch.uint8),
                                 "err": (err, torch.int32)})
        _, k, r, ok = _group_head(streams, G, n_int, int_before)
        is_res0.copy_(torch.from_numpy((ok & (k == 0) & (r == 0)).astype(np.uint8)))
        err |= int((~ok).any()) * 2

    @staticmethod
    def eclattice_decode(streams, rows, cols, n_int, n_res0, int_before, res0_before, half_scale, out, err):
        gr = -(-cols // 8)
        G = rows * gr
        _check_args(streams, G, {"int_before": (int_before, torch.int32), "res0_before": (res0_before, torch.int32),
                                 "err": (err, torch.int32)})
        assert out.is_contiguous() and out.numel() == rows * cols
        c, k, r, ok = _group_head(streams, G, n_int, int_before)
        g = np.arange(G, dtype=np.int64)
        ib, rb = int_before.numpy(), res0_before.numpy()
        idx = np.where(r == 0, rb, np.where(r == 2, ib - rb, g - ib))
        n = np.where(r == 0, n_res0, np.where(r == 2, n_int - n_res0, G - n_int))
        ok &= idx < n
        last = np.where(r == 0, _gather(_sym(streams[3]), idx, ok & (r == 0)),
                        np.where(r == 2, _gather(_sym(streams[4]), idx, ok & (r == 2)),
                                 _gather(_sym(streams[5]), idx, ok & ((r & 1) == 1))))
        t = 4 * _unz(last) + np.where(r == 3, 1, r)
        c[:, 7] = np.where(r == 3, -t, t)
        with np.errstate(over="ignore"):
            v = c.astype(np.float32) * np.float32(half_scale)
        v[~ok] = 0.0
        v = v.reshape(rows, gr * 8)[:, :cols]
        out.copy_(torch.from_numpy(np.ascontiguousarray(v)).to(out.dtype))
        err |= int((~ok).any()) * 2 | int((~np.isfinite(v)).any())


BACKENDS = ["emulated", pytest.param("cuda", marks=cuda_only)]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return ("cpu", EmulatedKernels) if request.param == "emulated" else ("cuda", None)


def _bits(t) -> bytes:
    return t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()


def _ref_bits(x: np.ndarray, dtype) -> bytes:
    return _bits(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(dtype))


def _sym_tensor(a, dev, raw: bool):
    a = np.asarray(a, np.int64).astype("<u2")
    return torch.from_numpy(a.view(np.uint8).copy() if raw else a.view(np.int16).copy()).to(dev)


def _gpu(streams, params, rows, cols, backend, dtype=torch.float32, raw=False):
    dev, kernels = backend
    args = [np.asarray(streams[0], np.int64), np.asarray(streams[1], np.int64)]
    args += [_sym_tensor(s, dev, raw) for s in streams[2:]]
    out = torch.full((rows, cols), float("nan"), dtype=dtype, device=dev)
    got = g.eclattice_decode(args, params, rows, cols, out=out, kernels=kernels)
    assert got.data_ptr() == out.data_ptr()
    return got


def _reference(streams, params, rows, cols):
    return CODEC.decode(params, rows, cols, "float32", [np.asarray(s, np.int64) for s in streams])


# ---- synthetic streams ----------------------------------------------------------------------------


def _random_symbols(rng, n):
    s = np.minimum(rng.geometric(0.35, n) - 1, 65535)
    wide = rng.random(n) < 0.05
    s[wide] = rng.integers(0, 1 << 16, int(wide.sum()))
    s[: min(n, 5)] = [0, 1, 2, 65534, 65535][: min(n, 5)]
    return s


def synthetic(rng, rows, cols):
    """Valid streams (every symbol combination that passes the row-count checks is valid,
    6.8.4): random symbols, the row counts and class streams made to match them."""
    gr = groups_per_row(cols)
    G = rows * gr
    first = _random_symbols(rng, G)
    c0 = unzigzag(first)
    is_int = (c0 & 1) == 0
    mid = _random_symbols(rng, 6 * G).reshape(G, 6)
    csum = c0 + (2 * unzigzag(mid) + (~is_int)[:, None]).sum(1)
    r = -csum & 3
    last = _random_symbols(rng, G)
    streams = [is_int.reshape(rows, gr).sum(1), (r == 0).reshape(rows, gr).sum(1), first,
               mid[is_int].reshape(-1), mid[~is_int].reshape(-1), last[r == 0], last[r == 2], last[r % 2 == 1]]
    params = {"half_scale": np.float32(0.0123457), "int_groups": int(is_int.sum()),
              "int_res0_groups": int((r == 0).sum())}
    return streams, params


# ---- both backends ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rows,cols", [(37, 101), (33, 64), (1, 1), (70, 13)])
def test_synthetic_bit_identical(backend, dtype, rows, cols):
    rng = np.random.default_rng(rows * 1000 + cols)
    streams, params = synthetic(rng, rows, cols)
    ref = _reference(streams, params, rows, cols)
    for raw in (False, True):
        got = _gpu(streams, params, rows, cols, backend, dtype, raw=raw)
        assert _bits(got) == _ref_bits(ref, dtype), (raw, dtype)


def _outcome(fn):
    try:
        return fn()
    except PayloadCorrupt:
        return "payload_corrupt"


def test_corruptions_agree_with_the_reference(backend):
    """Each check of 6.8.3 broken on purpose (sums, Z_r > I_r, bounds, a row's cosets or residues
    moved to another row), and random symbol changes: the GPU decoder rejects exactly what the
    reference rejects and otherwise gives its values."""
    rng = np.random.default_rng(11)
    rows, cols = 9, 45
    gr = groups_per_row(cols)
    streams, params = synthetic(rng, rows, cols)
    cases = []

    def with_counts(name, ri=None, rz=None, **p):
        s = list(streams)
        s[0] = streams[0] if ri is None else ri
        s[1] = streams[1] if rz is None else rz
        cases.append((name, s, {**params, **p}))

    ri, rz = np.asarray(streams[0]).copy(), np.asarray(streams[1]).copy()
    a = ri.copy()
    a[0] += 1
    a[1] -= 1
    with_counts("check 2: integer groups moved between rows", ri=a)
    b = rz.copy()
    b[0] += 1
    b[2] -= 1
    with_counts("check 3: residue-0 groups moved between rows", rz=b)
    a = ri.copy()
    a[3] += 1
    with_counts("check 1: row_int sum", ri=a)
    b = rz.copy()
    b[0] = ri[0] + 1
    with_counts("check 1: Z_r > I_r (and the sum)", rz=b, int_res0_groups=int(b.sum()))
    a = ri.copy()
    a[-1] = gr + 1
    with_counts("bound of row_int", ri=a, int_groups=int(a.sum()))
    for t in range(24):  # first: the coset may flip; mid: the residue may flip; last: values only
        s = [np.asarray(x).copy() for x in streams]
        pos = 2 + t % 6
        if s[pos].size:
            s[pos][rng.integers(s[pos].size)] ^= 1 + (t // 6) % 2
        cases.append((f"symbol {t} in stream {pos}", s, params))
    n_corrupt = 0
    for name, s, p in cases:
        want = _outcome(lambda: _reference(s, p, rows, cols))
        try:
            got = _outcome(lambda: _gpu(s, p, rows, cols, backend))
        except ValueError:  # stream lengths that no longer match the header: the wrapper refuses them
            assert want == "payload_corrupt", name
            n_corrupt += 1
            continue
        if isinstance(want, str):
            n_corrupt += 1
            assert got == want, name
        else:
            assert not isinstance(got, str) and _bits(got) == _ref_bits(want, torch.float32), name
    assert n_corrupt >= 8


def test_not_finite_is_payload_corrupt(backend):
    streams = [[1], [1], [0], [1] * 6, [], [3], [], []]  # c = (0, 2 x 6, 8): sum 12, r = 0
    params = {"half_scale": np.float32(3e38), "int_groups": 1, "int_res0_groups": 1}
    with pytest.raises(PayloadCorrupt, match="not finite"):
        _gpu(streams, params, 1, 8, backend)
    zero = [[1], [1], [0], [0] * 6, [], [0], [], []]
    assert _gpu(zero, params, 1, 8, backend).cpu().numpy().view(np.uint32).tolist() == [[0] * 8]  # +0.0


# ---- encoded files --------------------------------------------------------------------------------

CONFIGS = [(2, "rht", "rans", {"a.weight": (96, 160), "b.weight": (64, 128)}),
           (3, "identity", "rans", {"a.weight": (40, 131), "b.weight": (33, 77)}),
           (4, "identity", "none", {"a.weight": (40, 131), "b.weight": (33, 77)})]


@pytest.fixture(scope="module", params=CONFIGS, ids=lambda c: f"{c[0]}b-{c[1]}-{c[2]}")
def encoded(request, tmp_path_factory):
    bits, transform, entropy, shapes = request.param
    d = tmp_path_factory.mktemp("eclattice")
    rng = np.random.default_rng(bits)
    arrays = {k: (rng.standard_normal(s) * 0.02).astype(np.float32) for k, s in shapes.items()}
    write_safetensors(d / "in.safetensors", [(k, "F32", v.shape, (lambda v=v: v)) for k, v in arrays.items()])
    out = d / "m.pvqc"
    assert main(["encode", str(d / "in.safetensors"), str(out), "--codec", "eclattice", "--bits", str(bits),
                 "--transform", transform, "--entropy", entropy, "-q"]) == 0
    return out, entropy, shapes


def _layers(path, shapes):
    c = Container.open(path)
    try:
        return {name: QuantizedLinear.from_container(c, name, dtype=torch.float32) for name in shapes}
    finally:
        c.close()


def test_encoded_storage_streams_emulated(encoded):
    path, entropy, shapes = encoded
    for name, q in _layers(path, shapes).items():
        assert q.codec_id == 7
        assert (1 in q.codings) == (entropy == "rans"), q.codings
        streams = q._storage_streams(g)
        assert isinstance(streams[0], np.ndarray) and isinstance(streams[1], np.ndarray)
        assert all(s.dtype == torch.int16 for s in streams[2:])
        got = g.eclattice_decode(streams, q.codec_params, q.out_features, q.in_features, kernels=EmulatedKernels)
        assert _bits(got) == _ref_bits(q.reference_transformed(), torch.float32), name


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_encoded_dense_weight_bit_identical(encoded, dtype):
    path, entropy, shapes = encoded
    for name, q in _layers(path, shapes).items():
        q = q.cuda()
        codings = list(q.codings)
        assert q._gpu_supported()
        assert _bits(q.gpu_transformed(dtype)) == _ref_bits(q.reference_transformed(), dtype), (name, dtype)
        w = q.dense_weight(dtype)
        assert w.is_cuda and w.dtype == dtype
        assert _bits(w) == _ref_bits(q.reference_dense(), dtype), (name, dtype)
        assert q.codings == codings


class Two(torch.nn.Module):
    def __init__(self, shapes):
        super().__init__()
        (ra, ca), (rb, cb) = shapes["a.weight"], shapes["b.weight"]
        self.a = torch.nn.Linear(ca, ra, bias=False)
        self.b = torch.nn.Linear(cb, rb, bias=False)


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_load_pvqc_into_cuda_forward(encoded, dtype):
    path, _, shapes = encoded
    model = Two(shapes).cuda().to(dtype)
    report = load_pvqc_into(model, path)
    assert sorted(report["quantized"]) == ["a.weight", "b.weight"]
    ref_layers = _layers(path, shapes)
    for name in ("a", "b"):
        q = getattr(model, name)
        assert isinstance(q, QuantizedLinear) and q._dense_cache is not None  # decoded at load
        ref_w = ref_layers[f"{name}.weight"].reference_dense()
        assert _bits(q._dense_cache[2]) == _ref_bits(ref_w, dtype)
        x = torch.randn(9, q.in_features, device="cuda", dtype=dtype)
        y = q(x)
        want = torch.nn.functional.linear(x.double(), torch.from_numpy(ref_w).double().cuda())
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        scale = want.abs().max().item()
        assert y.dtype == dtype and (y.double() - want).abs().max().item() <= tol * max(scale, 1e-3) * 4


@cuda_only
def test_conformance_vectors_bit_exact():
    """The committed vectors `eclattice_*` (present once the lead regenerates conformance/)."""
    from pvqcodec.decoder import decode_matrix

    files = sorted((ROOT / "conformance" / "vectors").glob("eclattice_*/input.pvqc"))
    if not files:
        pytest.skip("no committed eclattice_* conformance vectors yet")
    n = 0
    for f in files:
        c = Container.open(f)
        try:
            for rec in c.tensors:
                if rec.codec_id != 7 or len(rec.shape) != 2 or (rec.rows, rec.cols) != tuple(rec.shape):
                    continue
                q = QuantizedLinear.from_container(c, rec.name, dtype=torch.float32)
                ref_t = np.ascontiguousarray(q.reference_transformed(), np.float32)
                qc = q.to("cuda")
                assert _bits(qc.gpu_transformed(torch.float32)) == ref_t.tobytes(), (f, rec.name)
                assert _bits(qc.dense_weight(torch.float32)) == decode_matrix(c, rec).tobytes(), (f, rec.name)
                n += 1
        finally:
            c.close()
    assert n > 0
