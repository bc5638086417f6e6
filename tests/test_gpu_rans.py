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


def _limb_rows(values, width):
    """Python ints as (count, n_limbs(width)) uint64 rows (the reference's wide symbols)."""
    nl = bits.n_limbs(width)
    m = (1 << 64) - 1
    return np.array([[(v >> (64 * k)) & m for k in range(nl)] for v in values], np.uint64).reshape(len(values), nl)


def _random_below(rng, bounds):
    return [int.from_bytes(rng.bytes(1 + N.bit_length() // 8 + 8), "little") % N for N in bounds]


def _check_wide(buf, spec):
    """The descriptor kernel's packed layout equals RawCoding.encode of the reference's symbols."""
    ref = RansCoding.decode(buf, spec)
    plan = g.rans_plan(buf, spec, torch.device("cuda"))
    assert plan.gpu and plan.wide, plan.reason
    out_p = torch.full((-(-4 * plan.packed_words() // 16) * 16,), POISON, dtype=torch.uint8, device="cuda")
    packed, _ = g.rans_decode(_dev(buf), spec, plan, out_packed=out_p)
    assert packed.numel() == bits.packed_size(spec.count, spec.width)
    assert np.array_equal(packed.cpu().numpy(), RawCoding.encode(ref, spec)), spec
    raw = g.rans_to_raw(_dev(buf), spec)
    assert raw.is_cuda and np.array_equal(raw.cpu().numpy(), RawCoding.encode(ref, spec))
    return ref


def _pvq_count(d, k):
    from pvqcodec.codecs.pvq.enumeration import pvq_count

    return pvq_count(d, k)


@cuda
@pytest.mark.parametrize("bound,width,n,S", [
    ("pvq32_16", None, 10_007, 4096),    # ~53 bits: even(n_top) then 3 pieces; chunks share words
    ("pvq64_160", None, 3_001, 1024),    # ~237 bits: 15 pieces, 8 limbs
    (1 << 40, 40, 5_000, 999),           # exactly 2^k: raw(8) then raw(16) raw(16)
    (1 << 40, 45, 2_000, 640),           # 2^k below 2^width
    (1, 30, 700, 64),                    # N = 1: no operation, zeros
    (None, 17, 4_001, 1000),             # no bounds: 2^width
    (None, 64, 1_000, 96),
    (None, 1024, 300, 64),               # the widest PVQ shape index
    ((1 << 20) + 3, 21, 33, 33),         # one partial step
])
def test_uniform_wide_bounds_match_reference(bound, width, n, S):
    rng = np.random.default_rng(n)
    if isinstance(bound, str):
        d, k = map(int, bound[3:].split("_"))
        bound = _pvq_count(d, k)
    if width is None:
        width = (bound - 1).bit_length()
    N = bound or 1 << width
    spec = StreamSpec("shapes", n, width, Bounds((N,)) if bound else None)
    vals = _random_below(rng, [N] * n)
    vals[: min(n, 40)] = [N - 1] * min(n, 40)  # the largest symbol: every piece equal to N - 1's
    sym = _limb_rows(vals, width)
    buf = RansCoding.encode(sym, spec, mode="uniform", chunk_symbols=S)
    assert np.array_equal(_check_wide(buf, spec).reshape(n, -1)[:, 0], sym[:, 0])


@cuda
@pytest.mark.parametrize("width,values,n,S", [
    (8, (200, 7), 5_000, 100),                        # narrow per-symbol bounds (unaligned chunks)
    (16, (65536, 1000, 1, 3), 20_000, 8192),
    (60, (_pvq_count(16, 12), 1 << 59, 1, 2, 300, (1 << 60) - 1), 30_001, 4096),
    (237, (_pvq_count(64, 160), _pvq_count(64, 3), 1 << 200, 5), 2_000, 512),
])
def test_uniform_per_symbol_bounds_match_reference(width, values, n, S):
    rng = np.random.default_rng(width)
    idx = rng.integers(0, len(values), n).astype(np.uint8 if len(values) < 256 else np.uint16)
    spec = StreamSpec("shapes", n, width, Bounds(values, idx))
    vals = _random_below(rng, [values[i] for i in idx])
    buf = RansCoding.encode(_limb_rows(vals, width), spec, mode="uniform", chunk_symbols=S)
    _check_wide(buf, spec)


@cuda
def test_table_mode_above_width_16_falls_back_to_the_reference():
    rng = np.random.default_rng(3)
    spec = StreamSpec("s", 500, 20)
    sym = rng.integers(0, 50, 500)
    buf = RansCoding.encode(sym, spec, mode="table", precision=12, chunk_symbols=128)
    assert not g.rans_plan(buf, spec, torch.device("cuda")).gpu
    raw = g.rans_to_raw(_dev(buf), spec)
    assert raw.is_cuda and np.array_equal(raw.cpu().numpy(), RawCoding.encode(sym, spec))


def _same_verdict_wide(buf, spec):
    """The descriptor kernel accepts exactly what the reference accepts, with the same layout."""
    try:
        ref = RawCoding.encode(RansCoding.decode(buf, spec), spec)
    except PayloadCorrupt:
        ref = None
    try:
        got = g.rans_decode(_dev(buf), spec)[0].cpu().numpy()
    except PayloadCorrupt:
        got = None
    assert (ref is None) == (got is None), "GPU and reference disagree on rejecting the payload"
    if ref is not None:
        assert np.array_equal(got, ref)
    return ref is None


@cuda
@pytest.mark.parametrize("indexed", [False, True])
def test_wide_corrupt_payloads_rejected_like_the_reference(indexed):
    rng = np.random.default_rng(11)
    n, width = 6_000, 53
    N = _pvq_count(32, 16)
    values = (N, 1 << 40, 77) if indexed else (N,)
    idx = rng.integers(0, 3, n).astype(np.uint8) if indexed else None
    spec = StreamSpec("shapes", n, width, Bounds(values, idx))
    vals = _random_below(rng, [values[i] for i in idx] if indexed else [N] * n)
    buf = RansCoding.encode(_limb_rows(vals, width), spec, mode="uniform", chunk_symbols=2048)
    assert not _same_verdict_wide(buf, spec)
    h, lo, hi = _words(buf, spec, 1)
    bad = buf.copy()
    bad[lo + 4 * 3 + 2: lo + 4 * 3 + 4] = 0
    assert _same_verdict_wide(bad, spec)
    T = h.data_offset - 8 * h.chunk_count
    bad = buf.copy()
    bad[T:T + 8 * h.chunk_count].view("<u8")[1] -= 40
    assert _same_verdict_wide(bad, spec)
    bad = buf.copy()
    bad[T:T + 8 * h.chunk_count].view("<u8")[1] += 3
    assert _same_verdict_wide(bad, spec)
    for trial in range(30):
        bad = buf.copy()
        for _ in range(1 + trial % 3):
            pos = int(rng.integers(h.data_offset, bad.size))
            bad[pos] ^= np.uint8(1 << int(rng.integers(0, 8)))
        _same_verdict_wide(bad, spec)  # uniform mode over a near-full range rejects few of these


@cuda
@pytest.mark.parametrize("bound,delta", [((1 << 52) + 12345, 7), (_pvq_count(64, 160), 3), ((5 << 30) + 100, 1)])
def test_wide_symbol_above_its_bound_rejected(bound, delta):
    # Bound N and N + delta have the same operations, so a symbol in [N, N + delta) coded under
    # N + delta decodes under N to a symbol at or above its bound, found only in the low pieces.
    N2 = bound + delta
    width = (N2 - 1).bit_length()
    from pvqcodec.coding.rans import symbol_operations

    assert symbol_operations(N2) == symbol_operations(bound)
    for v, rejected in ((bound, True), (N2 - 1, True), (bound - 1, False)):
        rng = np.random.default_rng(v % 1000)
        vals = _random_below(rng, [bound] * 3_000)
        vals[1234] = v
        buf = RansCoding.encode(_limb_rows(vals, width), StreamSpec("s", 3_000, width, Bounds((N2,))),
                                mode="uniform", chunk_symbols=1024)
        assert _same_verdict_wide(buf, StreamSpec("s", 3_000, width, Bounds((bound,)))) == rejected
        idx = np.zeros(3_000, np.uint8)
        idx[1234] = 1
        spec = StreamSpec("s", 3_000, width, Bounds((N2, bound), idx))
        assert _same_verdict_wide(buf, spec) == rejected


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
def test_quantized_linear_decodes_rans_payloads_once_at_load(tmp_path, monkeypatch):
    from pvqcodec.cli import main
    from pvqcodec.api import PvqcFile
    from pvqcodec.safetensors_io import write_safetensors
    from pvqcodec.torch import QuantizedLinear, load_pvqc_into

    rng = np.random.default_rng(0)
    w = {"a.weight": rng.standard_normal((256, 512)).astype(np.float32),
         "b.weight": rng.standard_normal((128, 256)).astype(np.float32)}
    write_safetensors(tmp_path / "in.safetensors", [(k, "F32", v.shape, (lambda v=v: v)) for k, v in w.items()])
    for codec in ("trellis", "lattice", "pvq", "pvqvr"):  # pvq / pvqvr: wide and per-symbol bounds
        out = tmp_path / f"{codec}.pvqc"
        assert main(["encode", str(tmp_path / "in.safetensors"), str(out), "--codec", codec, "--bits", "2",
                     "--entropy", "rans", "-q"]) == 0
        model = torch.nn.Sequential()
        model.add_module("a", torch.nn.Linear(512, 256, bias=False))
        model.add_module("b", torch.nn.Linear(256, 128, bias=False))
        model = model.cuda()
        with monkeypatch.context() as m:  # every stream on the GPU: the reference decoder is not called
            def no_reference(*a, **k):
                raise AssertionError("rans stream decoded by the reference decoder at load time")

            m.setattr(RansCoding, "decode", staticmethod(no_reference))
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
