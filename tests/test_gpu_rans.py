"""The GPU rans decoder (gpu_decoder/rans.cu, spec 4.3) against the reference decoder
(pvqcodec.coding.rans). The decode-table test runs anywhere; the rest needs a CUDA device and
is skipped without one. Symbols and packed outputs must be identical to the reference (outputs
poisoned before each run), and the GPU must reject exactly the payloads the reference rejects."""

import numpy as np
import pytest

import gpu_decoder as g
from pvqcodec import bits
from pvqcodec.coding import Bounds, RawCoding, StreamSpec
from pvqcodec.coding.rans import RansCoding, parse_rans_header
from pvqcodec.errors import PayloadCorrupt

try:
    import torch

    HAVE_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover - torch is optional
    torch = None
    HAVE_CUDA = False

cuda = pytest.mark.skipif(not HAVE_CUDA, reason="CUDA is not available")
POISON = 0xA5


def _gaussian_symbols(rng, n, width, spread):
    """Symbols of a quantized Gaussian clipped to the width's range (a skewed alphabet)."""
    top = (1 << width) - 1
    return np.clip(np.round(rng.standard_normal(n) * spread + top / 2), 0, top).astype(np.int64)


@pytest.mark.parametrize("precision,alphabet", [(1, 2), (5, 7), (12, 16), (12, 256), (13, 16), (15, 3000)])
def test_table_entries_decode_every_slot(precision, alphabet):
    rng = np.random.default_rng(precision)
    counts = rng.integers(0, 50, alphabet)
    counts[rng.integers(0, alphabet)] += 1
    from pvqcodec.coding.rans import quantize_frequencies

    freq = quantize_frequencies(counts, precision)
    e, sym = g.rans_table_entries(freq, precision)
    cum = np.concatenate([[0], np.cumsum(freq)[:-1]])
    slot = np.arange(1 << precision)
    e = e.astype(np.int64)
    if sym is None:
        s, f, b = e & 0xFF, ((e >> 8) & 0xFFF) + 1, e >> 20
    else:
        s, f, b = sym.astype(np.int64), (e & 0xFFFF) + 1, e >> 16
    assert np.array_equal(f, freq[s])
    assert np.array_equal(b, slot - cum[s])
    assert np.all((cum[s] <= slot) & (slot < cum[s] + freq[s]))


def _dev(a):
    return torch.from_numpy(np.ascontiguousarray(a)).cuda()


def _check(buf, spec, fused=True, speculative=None):
    """GPU symbols and packed layout equal the reference's, outputs poisoned first."""
    ref = RansCoding.decode(buf, spec)
    plan = g.rans_plan(buf, spec, torch.device("cuda"))
    assert plan.gpu, plan.reason
    n, w = spec.count, spec.width
    sym_dtype = torch.uint8 if w <= 8 else torch.int16
    out_s = torch.full((n,), POISON, dtype=sym_dtype, device="cuda")
    out_p = torch.full((-(-4 * plan.packed_words() // 16) * 16,), POISON, dtype=torch.uint8, device="cuda")
    packed, syms = g.rans_decode(_dev(buf), spec, plan, symbols=True, out_packed=out_p, out_symbols=out_s,
                                 fused_pack=fused, speculative=speculative)
    got = syms.cpu().numpy().view(np.uint8 if w <= 8 else np.uint16)
    assert np.array_equal(got, ref.astype(got.dtype)), spec
    raw = RawCoding.encode(ref, spec)
    assert packed.numel() == bits.packed_size(n, w)
    assert np.array_equal(packed.cpu().numpy(), raw), spec
    return ref


@cuda
@pytest.mark.parametrize("width,spread,precision,n,S", [
    (4, 2.0, 12, 100_000, 65536),   # packed entries, multi-chunk, count % 32 != 0
    (4, 2.0, 12, 4096, 4096),       # one chunk, a whole number of steps
    (3, 1.0, 5, 5_001, 1000),       # low precision; chunks not on 32-bit words of the layout (atomic path)
    (1, 0.3, 1, 1_000, 96),         # precision 1
    (8, 30.0, 12, 70_001, 8192),    # byte symbols (packed layout = symbol array)
    (10, 100.0, 15, 50_017, 16384),  # wide entries (alphabet > 256, precision 15)
    (16, 600.0, 14, 40_000, 9999),  # 16-bit symbols, thousands of distinct values
    (6, 4.0, 13, 33, 33),           # precision 13 (wide entries), one partial step
])
@pytest.mark.parametrize("speculative", [True, False])
def test_table_mode_matches_reference(width, spread, precision, n, S, speculative):
    rng = np.random.default_rng(width * 1000 + n)
    spec = StreamSpec("s", n, width)
    sym = _gaussian_symbols(rng, n, width, spread)
    buf = RansCoding.encode(sym, spec, mode="table", precision=precision, chunk_symbols=S)
    assert np.array_equal(_check(buf, spec, speculative=speculative), sym)
    if width not in (8, 16):
        _check(buf, spec, fused=False, speculative=speculative)


@cuda
@pytest.mark.parametrize("width", [0, 2, 5])
def test_single_symbol_alphabet(width):
    spec = StreamSpec("s", 3_000, width)
    sym = np.zeros(3_000, np.int64)
    buf = RansCoding.encode(sym, spec, mode="table", precision=12, chunk_symbols=1024)
    assert parse_rans_header(buf, spec).alphabet == 1
    _check(buf, spec)


@cuda
@pytest.mark.parametrize("width,bound,n,S", [
    (4, None, 10_007, 4096),     # raw(4)
    (12, None, 20_000, 65536),   # raw(8) then raw(4)
    (16, None, 9_999, 2000),     # raw(8) then raw(8); chunks aligned (16 * 2000 % 32 == 0)
    (5, 21, 5_000, 999),         # even(21); unaligned chunks
    (13, 5000, 30_001, 8192),    # even(n_top) then raw(5)
    (16, 65536, 1_000, 1000),
    (16, 40000, 3_000, 1024),    # even(157) then raw(8)
    (7, 1, 700, 64),             # N = 1: no operation at all
    (9, 257, 2_000, 512),        # n_top = 129 after s = 1
])
def test_uniform_mode_matches_reference(width, bound, n, S):
    rng = np.random.default_rng(n)
    N = bound or 1 << width
    spec = StreamSpec("s", n, width, Bounds((N,)) if bound else None)
    sym = rng.integers(0, N, n)
    buf = RansCoding.encode(sym, spec, mode="uniform", chunk_symbols=S)
    assert np.array_equal(_check(buf, spec), sym)


@cuda
def test_uniform_wide_and_indexed_bounds_fall_back_to_the_reference():
    rng = np.random.default_rng(3)
    spec = StreamSpec("shapes", 500, 40, Bounds((10 ** 11,)))
    sym = rng.integers(0, 10 ** 11, 500).astype(np.uint64)
    buf = RansCoding.encode(sym, spec, mode="uniform", chunk_symbols=128)
    assert not g.rans_plan(buf, spec, torch.device("cuda")).gpu
    raw = g.rans_to_raw(_dev(buf), spec)
    assert raw.is_cuda and np.array_equal(raw.cpu().numpy(), RawCoding.encode(sym, spec))
    idx = rng.integers(0, 2, 500).astype(np.uint8)
    spec2 = StreamSpec("s", 500, 8, Bounds((200, 7), idx))
    sym2 = np.where(idx == 0, rng.integers(0, 200, 500), rng.integers(0, 7, 500))
    buf2 = RansCoding.encode(sym2, spec2, mode="uniform", chunk_symbols=100)
    assert not g.rans_plan(buf2, spec2, torch.device("cuda")).gpu
    assert np.array_equal(g.rans_to_raw(_dev(buf2), spec2).cpu().numpy(), RawCoding.encode(sym2, spec2))


def _same_verdict(buf, spec, speculative=None):
    """The GPU accepts exactly what the reference accepts, with the same symbols."""
    try:
        ref = RansCoding.decode(buf, spec)
    except PayloadCorrupt:
        ref = None
    try:
        plan = g.rans_plan(buf, spec, torch.device("cuda"))
        _, got = g.rans_decode(_dev(buf), spec, plan, symbols=True, speculative=speculative)
        got = got.cpu().numpy().view(np.uint8 if spec.width <= 8 else np.uint16)
    except PayloadCorrupt:
        got = None
    assert (ref is None) == (got is None), "GPU and reference disagree on rejecting the payload"
    if ref is not None:
        assert np.array_equal(got, ref.astype(got.dtype))
    return ref is None


def _words(buf, spec, chunk):
    h = parse_rans_header(buf, spec)
    start = 0 if chunk == 0 else int(h.chunk_end[chunk - 1])
    return h, h.data_offset + 2 * start, h.data_offset + 2 * int(h.chunk_end[chunk])


@cuda
@pytest.mark.parametrize("mode,speculative", [("table", True), ("table", False), ("uniform", None)])
def test_corrupt_payloads_rejected_like_the_reference(mode, speculative):
    rng = np.random.default_rng(7)
    spec = StreamSpec("s", 9_000, 5, Bounds((29,)) if mode == "uniform" else None)
    sym = _gaussian_symbols(rng, 9_000, 5, 3.0) % 29
    buf = RansCoding.encode(sym, spec, mode=mode, precision=12, chunk_symbols=2048)
    assert not _same_verdict(buf, spec, speculative)
    h, lo, hi = _words(buf, spec, 1)
    # an initial state below 2^16 (lane 3's high word zeroed)
    bad = buf.copy()
    bad[lo + 4 * 3 + 2: lo + 4 * 3 + 4] = 0
    assert _same_verdict(bad, spec, speculative)
    # exhaustion: chunk 1 loses its last 40 words to chunk 2 (lengths still add up)
    bad = buf.copy()
    T = h.data_offset - 8 * h.chunk_count
    ce = bad[T:T + 8 * h.chunk_count].view("<u8")
    ce[1] -= 40
    assert _same_verdict(bad, spec, speculative)
    # words left over / a wrong final state: chunk 1 takes 3 words of chunk 2
    bad = buf.copy()
    bad[T:T + 8 * h.chunk_count].view("<u8")[1] += 3
    assert _same_verdict(bad, spec, speculative)
    # random damage to the word streams: each verdict (and every accepted decode) must agree
    rejected = 0
    for trial in range(40):
        bad = buf.copy()
        for _ in range(1 + trial % 3):
            pos = int(rng.integers(h.data_offset, bad.size))
            bad[pos] ^= np.uint8(1 << int(rng.integers(0, 8)))
        rejected += _same_verdict(bad, spec, speculative)
    # Both modes reject most damage (rANS is a bijection: other words mean other states), table mode
    # nearly all; uniform mode over a flat bound is close to a mixed-radix number, where a flipped
    # bit often changes a digit (a symbol) without reaching the final state (25 of these 40).
    assert rejected >= (30 if mode == "table" else 20)


@cuda
def test_uniform_symbol_above_its_bound_rejected():
    # Bounds 258 and 257 have the same operations (even(129) then raw(1)), so the symbol 257,
    # coded under 258, decodes under 257 to a symbol at its bound: both decoders must reject.
    rng = np.random.default_rng(5)
    sym = rng.integers(0, 257, 3_000)
    sym[1234] = 257
    buf = RansCoding.encode(sym, StreamSpec("s", 3_000, 9, Bounds((258,))), mode="uniform", chunk_symbols=1024)
    assert _same_verdict(buf, StreamSpec("s", 3_000, 9, Bounds((257,))))
    sym[1234] = 256
    buf = RansCoding.encode(sym, StreamSpec("s", 3_000, 9, Bounds((258,))), mode="uniform", chunk_symbols=1024)
    assert not _same_verdict(buf, StreamSpec("s", 3_000, 9, Bounds((257,))))


@cuda
def test_quantized_linear_decodes_rans_payloads_once_at_load(tmp_path):
    from pvqcodec.cli import main
    from pvqcodec.api import PvqcFile
    from pvqcodec.safetensors_io import write_safetensors
    from pvqcodec.torch import QuantizedLinear, load_pvqc_into

    rng = np.random.default_rng(0)
    w = {"a.weight": rng.standard_normal((256, 512)).astype(np.float32),
         "b.weight": rng.standard_normal((128, 256)).astype(np.float32)}
    write_safetensors(tmp_path / "in.safetensors", [(k, "F32", v.shape, (lambda v=v: v)) for k, v in w.items()])
    for codec in ("trellis", "lattice", "pvq"):
        out = tmp_path / f"{codec}.pvqc"
        assert main(["encode", str(tmp_path / "in.safetensors"), str(out), "--codec", codec, "--bits", "2",
                     "--entropy", "rans", "-q"]) == 0
        model = torch.nn.Sequential()
        model.add_module("a", torch.nn.Linear(512, 256, bias=False))
        model.add_module("b", torch.nn.Linear(256, 128, bias=False))
        model = model.cuda()
        load_pvqc_into(model, out)
        with PvqcFile(out) as f:
            for name in ("a", "b"):
                q = getattr(model, name)
                assert isinstance(q, QuantizedLinear)
                assert all(c == 0 for c in q.codings), (codec, name)  # decoded at load time
                ref = f.decode(f"{name}.weight")
                got = q.dense_weight(torch.float32).cpu().numpy()
                assert got.tobytes() == np.ascontiguousarray(ref, np.float32).tobytes(), (codec, name)
        with PvqcFile(out) as f:  # the file really held rans payloads
            assert any(p.coding == 1 for p in f._c.tensor("a.weight").payloads), codec
