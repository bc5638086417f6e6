"""The GPU ectcq decoder (gpu_decoder/ectcq.cu, spec 6.7) against the Python reference decoder.

Every decode test runs twice: on CUDA (skipped without a device), and on the CPU with
`EmulatedKernels`, a literal numpy model of the kernel (the lanes of a warp are the rows,
stepped column by column with the kernel's operations, clipping and error bits) driven by the
real host wrapper `gpu_decoder.ectcq_decode` (row-count checks, prefix sums, stream views,
error messages). The CPU runs check the wrapper and the kernel's arithmetic identities here;
the CUDA runs check the kernel itself: W' and W bit-identical in float32 / float16 / bfloat16
(outputs poisoned first), every corruption rejected where the reference rejects it, encoded
files (rans and raw), the committed conformance vectors `ectcq_*`, QuantizedLinear."""

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gpu_decoder as g  # noqa: E402
from pvqcodec.cli import main  # noqa: E402
from pvqcodec.codecs import codec_by_id  # noqa: E402
from pvqcodec.codecs.ectcq.trellis import UNGERBOECK_1D, symbol_grid_index, trellis_tables  # noqa: E402
from pvqcodec.container.reader import Container  # noqa: E402
from pvqcodec.errors import PayloadCorrupt  # noqa: E402
from pvqcodec.safetensors_io import write_safetensors  # noqa: E402
from pvqcodec.torch import QuantizedLinear, load_pvqc_into  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
cuda_only = pytest.mark.skipif(not CUDA, reason="CUDA is not available")
CODEC = codec_by_id(6)
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


# ---- the kernel's model (ectcq.cu, step for step) ------------------------------------------------


def _gather(a: np.ndarray, idx: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """a[idx] where ok, else 0 (never reads outside a)."""
    out = np.zeros(idx.shape, np.int64)
    if a.size:
        out[ok] = a[idx[ok]]
    return out


def _ecsq_value(m, negative, offsets, step):
    """ecsq.cuh's ecsq_value: (float32(m) - off(m)) * step, sign bit flipped if negative; +0.0 for m = 0."""
    n = offsets.size
    off = offsets[np.clip(m, 1, n) - 1] if n else np.zeros(m.shape, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        a = (m.astype(np.float32) - off) * np.float32(step)
    x = np.where(negative, -a, a).astype(np.float32)
    x[m == 0] = np.float32(0.0)
    return x, (m != 0) & ~np.isfinite(a)


class EmulatedKernels:
    """The extension's ectcq_decode as numpy, lane = row, with the kernel's exact operations."""

    @staticmethod
    def ectcq_decode(row_a0, start0, a0, a1, a0_count, rows, cols, h0, h1, offsets, step, pf, out, err):
        # the extension's argument checks (ectcq.cu)
        assert row_a0.dtype == start0.dtype == torch.int64 and row_a0.numel() >= rows and start0.numel() >= rows
        assert a0.dtype == a1.dtype == torch.int16 and a0.numel() >= a0_count and a1.numel() >= rows * cols - a0_count
        assert offsets.dtype == torch.float32 and err.dtype == torch.int32 and out.numel() == rows * cols
        assert 0 <= pf <= 4096 and isinstance(step, float)
        n0, p0 = row_a0.numpy().astype(np.int64), start0.numpy().astype(np.int64)
        A0 = a0.numpy().view(np.uint16).astype(np.int64)
        A1 = a1.numpy().view(np.uint16).astype(np.int64)
        n_a1 = rows * cols - a0_count
        p1 = np.arange(rows, dtype=np.int64) * cols - p0
        corrupt = (n0 > cols) | (p1 < 0)
        live = ~corrupt
        lim0 = np.where(live, np.maximum(np.minimum(a0_count - p0, n0), 0), 0)
        lim1 = np.where(live, np.maximum(np.minimum(n_a1 - p1, cols - n0), 0), 0)
        q0, q1 = np.where(lim0 > 0, p0, 0), np.where(lim1 > 0, p1, 0)
        k0, k1 = np.zeros(rows, np.int64), np.zeros(rows, np.int64)
        w0, w1 = _gather(A0, q0, lim0 > 0), _gather(A1, q1, lim1 > 0)
        st = np.zeros(rows, np.int64)
        h0s, h1s = h0 >> 1, h1 >> 1
        offs = offsets.numpy()
        vals = np.zeros((rows, cols), np.float32)
        bad = np.zeros(rows, bool)
        for i in range(cols):
            u = st & 1
            k, lim, s = np.where(u == 1, k1, k0), np.where(u == 1, lim1, lim0), np.where(u == 1, w1, w0)
            over = live & (k >= lim)
            corrupt |= over
            live &= ~over
            more = live & (k + 1 < lim)
            if pf:  # the prefetched symbol is one of the row's own (inside its stream)
                fetch = live & (k + pf < lim)
                assert np.all(np.where(u == 1, q1 + k + pf < A1.size, q0 + k + pf < A0.size)[fetch])
            nxt = np.where(u == 1, _gather(A1, q1 + k + 1, more & (u == 1)), _gather(A0, q0 + k + 1, more & (u == 0)))
            w1 = np.where(live & (u == 1), nxt, w1)
            w0 = np.where(live & (u == 0), nxt, w0)
            k1 += live & (u == 1)
            k0 += live & (u == 0)
            pos = (s ^ u) & 1
            x, b = _ecsq_value(s + pos, pos == 0, offs, step)
            bad |= live & b
            vals[:, i] = np.where(live, x, np.float32(0.0))
            z1 = (s ^ (s >> 1)) & 1
            st = np.where(live, (st >> 1) ^ np.where(z1 == 1, h1s, 0) ^ np.where(u == 1, h0s, 0), st)
        out.view(rows, cols).copy_(torch.from_numpy(vals).to(out.dtype))
        err |= int(corrupt.any()) * 2 | int(bad.any())


BACKENDS = ["emulated", pytest.param("cuda", marks=cuda_only)]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """(device, kernels) for gpu_decoder.ectcq_decode."""
    return ("cpu", EmulatedKernels) if request.param == "emulated" else ("cuda", None)


def _poisoned(shape, dtype, dev):
    return torch.full(shape, float("nan"), dtype=dtype, device=dev)


def _bits(t) -> bytes:
    return t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()


def _ref_bits(x: np.ndarray, dtype) -> bytes:
    """The float32 reference rounded to nearest even to `dtype` (torch's CPU conversion)."""
    return _bits(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(dtype))


def _sym_tensor(a, dev, raw: bool):
    """A 16-bit stream as the wrapper takes it: a raw payload (uint8 bytes) or int16 symbols."""
    a = np.asarray(a, np.int64).astype("<u2")
    t = torch.from_numpy(a.view(np.uint8).copy() if raw else a.view(np.int16).copy())
    return t.to(dev)


def _gpu(streams, params, rows, cols, backend, dtype=torch.float32, raw=False, prefetch=None):
    dev, kernels = backend
    row_a0, a0, a1 = streams
    args = [np.asarray(row_a0, np.int64), _sym_tensor(a0, dev, raw), _sym_tensor(a1, dev, raw)]
    out = _poisoned((rows, cols), dtype, dev)
    got = g.ectcq_decode(args, params, rows, cols, out=out, kernels=kernels, prefetch=prefetch)
    assert got.data_ptr() == out.data_ptr()
    return got


# ---- synthetic streams ----------------------------------------------------------------------------


def _random_symbols(rng, n):
    """Mostly small symbols, with the corners 0, 1, 2, 65534, 65535 and some over the whole range."""
    s = np.minimum(rng.geometric(0.3, n) - 1, 65535)
    wide = rng.random(n) < 0.05
    s[wide] = rng.integers(0, 1 << 16, int(wide.sum()))
    s[: min(n, 5)] = [0, 1, 2, 65534, 65535][: min(n, 5)]
    return s


def synthetic(rng, rows, cols, v):
    """Valid streams: every row walks the trellis from state 0 with random symbols."""
    nxt, _ = trellis_tables(v)
    sym = _random_symbols(rng, rows * cols).reshape(rows, cols)
    row_a0, a0, a1 = np.zeros(rows, np.int64), [], []
    for r in range(rows):
        st = 0
        for i in range(cols):
            u = st & 1
            s = int(sym[r, i])
            (a1 if u else a0).append(s)
            row_a0[r] += 1 - u
            j = int(symbol_grid_index(np.array([s]), np.array([u]))[0])
            st = int(nxt[st, (j & 3) >> 1])
    return row_a0, np.array(a0, np.int64), np.array(a1, np.int64)


def _params(v, a0_count, offsets, step=0.0123457):
    return {"step": np.float32(step), "state_bits": v, "a0_count": int(a0_count), "offsets": offsets}


def _reference(streams, params, rows, cols):
    return CODEC.decode(params, rows, cols, "float32", list(streams))


# ---- CPU-only: the kernel's identities ------------------------------------------------------------


def test_step_identities_match_the_python_trellis():
    """ectcq.cu's branch-free step: z1 = bit 0 xor bit 1 of s, |j| = s + ((s xor u) & 1),
    negative iff (s xor u) even and j != 0, next = (S >> 1) ^ (z1 ? h1 >> 1 : 0) ^ (u ? h0 >> 1 : 0)."""
    s = np.arange(1 << 16)
    for u in (0, 1):
        j = symbol_grid_index(s, np.full(s.shape, u))
        pos = (s ^ u) & 1
        assert np.array_equal((j & 3) >> 1, (s ^ (s >> 1)) & 1)
        assert np.array_equal(np.abs(j), s + pos)
        assert np.array_equal(j < 0, (pos == 0) & (s != 0))
    for v, (h0, h1) in UNGERBOECK_1D.items():
        nxt, union = trellis_tables(v)
        st = np.arange(1 << v)
        assert np.array_equal(union, st & 1)
        for z1 in (0, 1):
            assert np.array_equal(nxt[:, z1], (st >> 1) ^ (z1 * (h1 >> 1)) ^ ((st & 1) * (h0 >> 1))), v


# ---- both backends ------------------------------------------------------------------------------


def test_spec_worked_example(backend):
    """Spec 6.7.6's example: v = 3, step 0.5, no offsets, one row of 5."""
    params = _params(3, 2, np.zeros(0, np.float32), step=0.5)
    got = _gpu(([2], [1, 0], [3, 0, 4]), params, 1, 5, backend)
    assert got.cpu().numpy().tolist() == [[1.0, 0.0, -1.5, 0.5, 2.5]]
    assert got.cpu().numpy().view(np.uint32)[0, 1] == 0  # +0.0
    with pytest.raises(PayloadCorrupt):
        _gpu(([3], [1, 0, 2], [3, 0]), _params(3, 3, np.zeros(0, np.float32), step=0.5), 1, 5, backend)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("v,rows,cols,noff", [(3, 37, 101, 0), (8, 33, 64, 3), (5, 1, 1, 1), (8, 70, 45, 300)],
                         ids=["v3-37x101-n0", "v8-33x64-n3", "v5-1x1", "v8-70x45-n300"])
def test_synthetic_bit_identical(backend, dtype, v, rows, cols, noff):
    rng = np.random.default_rng(v * 1000 + rows)
    streams = synthetic(rng, rows, cols, v)
    offsets = (rng.standard_normal(noff) * 0.3).astype(np.float32)
    if noff == 3:
        offsets[0] = 1.0  # off(1) = 1: t = 0, so -0.0 where j = -1
    params = _params(v, streams[0].sum(), offsets)
    ref = _reference(streams, params, rows, cols)
    for raw in (False, True):
        got = _gpu(streams, params, rows, cols, backend, dtype, raw=raw)
        assert _bits(got) == _ref_bits(ref, dtype), (raw, dtype)
    if dtype == torch.float32:  # the L1 prefetch distance changes nothing but speed
        for pf in (0, 1, 16, 64):
            assert _bits(_gpu(streams, params, rows, cols, backend, prefetch=pf)) == _ref_bits(ref, dtype), pf


def _outcome(fn):
    try:
        return fn()
    except PayloadCorrupt:
        return "payload_corrupt"


def test_corruptions_agree_with_the_reference(backend):
    """Row counts off by one (sum kept or not), above cols, and random symbol changes: the GPU
    decoder rejects exactly what the reference rejects and otherwise gives its values."""
    rng = np.random.default_rng(5)
    rows, cols, v = 12, 40, 4
    row_a0, a0, a1 = synthetic(rng, rows, cols, v)
    offsets = np.array([0.1, 0.2], np.float32)
    cases = []
    r0 = row_a0.copy()
    r0[3] += 1
    r0[4] -= 1
    cases.append(("moved count", (r0, a0, a1), row_a0.sum()))
    r0 = row_a0.copy()
    r0[0] += 1
    cases.append(("sum too large", (r0, a0, a1), row_a0.sum()))
    cases.append(("a0_count too small", (row_a0, a0[:-1], np.concatenate([a1, [7]])), row_a0.sum() - 1))
    r0 = row_a0.copy()
    r0[-1] = cols + 1
    cases.append(("count above cols", (r0, a0, a1), row_a0.sum()))
    for t in range(20):  # a symbol whose subset bit flips moves the rest of its row's path
        b0, b1 = a0.copy(), a1.copy()
        tgt = b0 if t % 2 else b1
        tgt[rng.integers(tgt.size)] ^= 1 + 2 * (t % 3 == 0)
        cases.append((f"symbol {t}", (row_a0, b0, b1), row_a0.sum()))
    n_corrupt = 0
    for name, streams, a0_count in cases:
        params = _params(v, a0_count, offsets)
        want = _outcome(lambda: _reference(streams, params, rows, cols))
        got = _outcome(lambda: _gpu(streams, params, rows, cols, backend))
        if isinstance(want, str):
            n_corrupt += 1
            assert got == want, name
        else:
            assert not isinstance(got, str) and _bits(got) == _ref_bits(want, torch.float32), name
    assert n_corrupt >= 8  # the four count cases and several symbol changes


def test_not_finite_is_payload_corrupt(backend):
    params = _params(3, 1, np.zeros(0, np.float32), step=3e38)
    # state 0 (A_0): s = 5 -> j = 6; the next state's union decides where the rest comes from
    streams = synthetic(np.random.default_rng(0), 1, 1, 3)
    assert streams[0].tolist() == [1]
    streams = (streams[0], np.array([5]), streams[2])
    with pytest.raises(PayloadCorrupt, match="not finite"):
        _gpu(streams, params, 1, 1, backend)
    ok = (streams[0], np.array([0]), streams[2])
    assert _gpu(ok, params, 1, 1, backend).cpu().numpy().tolist() == [[0.0]]


# ---- encoded files --------------------------------------------------------------------------------

# (bits, transform, entropy, shapes): RHT on shapes it factors; odd shapes (partial warps and
# tiles) with the identity.
CONFIGS = [(2, "rht", "rans", {"a.weight": (96, 160), "b.weight": (64, 128)}),
           (3, "identity", "rans", {"a.weight": (40, 131), "b.weight": (33, 77)}),
           (4, "identity", "none", {"a.weight": (40, 131), "b.weight": (33, 77)})]


@pytest.fixture(scope="module", params=CONFIGS, ids=lambda c: f"{c[0]}b-{c[1]}-{c[2]}")
def encoded(request, tmp_path_factory):
    bits, transform, entropy, shapes = request.param
    d = tmp_path_factory.mktemp("ectcq")
    rng = np.random.default_rng(bits)
    arrays = {k: (rng.standard_normal(s) * 0.02).astype(np.float32) for k, s in shapes.items()}
    write_safetensors(d / "in.safetensors", [(k, "F32", v.shape, (lambda v=v: v)) for k, v in arrays.items()])
    out = d / "m.pvqc"
    assert main(["encode", str(d / "in.safetensors"), str(out), "--codec", "ectcq", "--bits", str(bits),
                 "--ectcq-states", "16", "--transform", transform, "--entropy", entropy, "-q"]) == 0
    return out, entropy, shapes


def _layers(path, shapes):
    c = Container.open(path)
    try:
        return {name: QuantizedLinear.from_container(c, name, dtype=torch.float32) for name in shapes}
    finally:
        c.close()


def test_encoded_storage_streams_emulated(encoded):
    """QuantizedLinear._storage_streams on the CPU (rans streams by the reference decoder) and the
    wrapper with the emulated kernel give the reference W'."""
    path, entropy, shapes = encoded
    for name, q in _layers(path, shapes).items():
        assert q.codec_id == 6
        assert (1 in q.codings) == (entropy == "rans"), q.codings
        streams = q._storage_streams(g)
        assert isinstance(streams[0], np.ndarray) and streams[1].dtype == torch.int16
        got = g.ectcq_decode(streams, q.codec_params, q.out_features, q.in_features, kernels=EmulatedKernels)
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
        assert q.codings == codings  # payloads kept as stored (rans stays rans)


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
    """The committed vectors `ectcq_*` (present once the lead regenerates conformance/)."""
    from pvqcodec.decoder import decode_matrix

    files = sorted((ROOT / "conformance" / "vectors").glob("ectcq_*/input.pvqc"))
    if not files:
        pytest.skip("no committed ectcq_* conformance vectors yet")
    n = 0
    for f in files:
        c = Container.open(f)
        try:
            for rec in c.tensors:
                if rec.codec_id != 6 or len(rec.shape) != 2 or (rec.rows, rec.cols) != tuple(rec.shape):
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
