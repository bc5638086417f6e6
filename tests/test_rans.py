"""The rans coding (spec coding-rans.md): round trips, every rejection rule, and the
operation order cross-checked against an independent decoder written from the spec."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from pvqcodec import bits
from pvqcodec.coding import Bounds, StreamSpec, coding_by_id
from pvqcodec.coding.rans import (RansCoding, build_rans_header, parse_rans_header, quantize_frequencies,
                                  symbol_operations)
from pvqcodec.errors import PayloadCorrupt
from test_rans_reference import Reject, ref_decode

R = RansCoding


def limb_rows(values, width):
    L = bits.n_limbs(width)
    return np.array([[(v >> (64 * i)) & (2**64 - 1) for i in range(L)] for v in values], np.uint64).reshape(-1, L)


def as_ints(sym, width):
    a = np.asarray(sym)
    if a.ndim == 1:
        return [int(v) for v in a]
    return [sum(int(r[i]) << (64 * i) for i in range(a.shape[1])) for r in a]


def spec_of(count, width, bounds=None):
    if not bounds:
        return StreamSpec("s", count, width)
    vals = sorted(set(bounds))
    if len(vals) == 1:
        return StreamSpec("s", count, width, Bounds((vals[0],), None))
    pos = {v: i for i, v in enumerate(vals)}
    return StreamSpec("s", count, width, Bounds(tuple(vals), np.array([pos[b] for b in bounds], np.uint16)))


def both_decoders(buf, spec, bounds=None):
    """Decode with the Numba decoder and the reference; they must agree on acceptance and symbols."""
    try:
        ours = as_ints(R.decode(buf, spec), spec.width)
    except PayloadCorrupt:
        ours = "reject"
    try:
        ref = ref_decode(buf.tobytes(), spec.count, spec.width, bounds)
    except Reject:
        ref = "reject"
    assert ours == ref
    return ours


def test_registered():
    assert coding_by_id(1) is RansCoding and RansCoding.name == "rans"


# ---- round trips ----------------------------------------------------------------------------


@st.composite
def table_streams(draw):
    width = draw(st.integers(0, 16))
    count = draw(st.integers(0, 300))
    hi = min(2**width, draw(st.sampled_from([1, 2, 3, 16, 200, 2**16])))
    kind = draw(st.sampled_from(["uniform", "skewed", "single", "one_rare"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        sym = rng.integers(0, hi, count)
    elif kind == "skewed":
        sym = np.minimum(rng.geometric(0.3, count) - 1, hi - 1)
    elif kind == "single":
        sym = np.full(count, rng.integers(0, hi))
    else:  # a symbol of frequency 1 among a common one
        sym = np.zeros(count, np.int64)
        if count:
            sym[rng.integers(0, count)] = hi - 1
    S = draw(st.sampled_from([1, 5, 32, 33, 64, 100, 65536]))
    P = draw(st.sampled_from([None, 12, 15, 8]))
    return width, sym.astype(np.int64), S, P


@given(table_streams())
def test_table_round_trip(case):
    width, sym, S, P = case
    spec = spec_of(sym.size, width)
    distinct = np.unique(sym).size
    if P is not None and distinct > 2**P:
        with pytest.raises(ValueError):
            R.encode(sym, spec, mode="table", precision=P, chunk_symbols=S)
        return
    buf = R.encode(sym, spec, mode="table", precision=P, chunk_symbols=S)
    out = R.decode(buf, spec)
    assert out.dtype == bits.unpack(np.zeros(bits.packed_size(0, width), np.uint8), 0, width).dtype
    assert as_ints(out, width) == [int(v) for v in sym]
    head = parse_rans_header(buf, spec)
    assert head.alphabet == (int(sym.max()) + 1 if sym.size else 1)  # clamped to the largest symbol + 1
    assert head.chunk_count == -(-sym.size // S)


@st.composite
def uniform_streams(draw):
    width = draw(st.sampled_from([0, 1, 2, 7, 8, 9, 15, 16, 17, 24, 63, 64, 65, 100, 128, 129, 200, 1024]))
    count = draw(st.integers(0, 120))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    how = draw(st.sampled_from(["none", "one", "pow2", "mixed"]))

    def rand_below(n):
        return int.from_bytes(rng.bytes((n.bit_length() + 7) // 8 + 8), "little") % n

    def rand_bound():
        b = int(rng.integers(0, width + 1))
        return max(1, min(2**width, (1 << b) - int(rng.integers(0, 3)) if b else 1))

    if how == "none":
        bounds = None
        vals = [rand_below(2**width) for _ in range(count)]
    else:
        if how == "one":
            one = rand_bound()
            bl = [one] * count
        elif how == "pow2":
            one = 2 ** int(rng.integers(0, width + 1))
            bl = [one] * count
        else:
            pool = [rand_bound() for _ in range(4)] + [1]
            bl = [pool[int(rng.integers(0, len(pool)))] for _ in range(count)]
        bounds = bl
        vals = [rand_below(n) if rng.random() < 0.7 else n - 1 for n in bl]
    S = draw(st.sampled_from([1, 31, 32, 50, 65536]))
    return width, vals, bounds, S


@given(uniform_streams())
def test_uniform_round_trip_and_reference(case):
    width, vals, bounds, S = case
    spec = spec_of(len(vals), width, bounds)
    sym = limb_rows(vals, width)
    if width <= 64:
        sym = sym[:, 0]
    buf = R.encode(sym, spec, mode="uniform", chunk_symbols=S)
    assert as_ints(R.decode(buf, spec), width) == vals
    if len(vals) <= 64:
        assert ref_decode(buf.tobytes(), len(vals), width, bounds) == vals


@given(table_streams())
def test_table_mode_matches_reference(case):
    width, sym, S, P = case
    sym = sym[:96]
    spec = spec_of(sym.size, width)
    buf = R.encode(sym, spec, mode="table", precision=None, chunk_symbols=S)
    assert ref_decode(buf.tobytes(), sym.size, width) == [int(v) for v in sym]


def test_wide_bounds_above_2_64_and_costs():
    rng = np.random.default_rng(3)
    for N in [3**70 + 12345, 2**100, 2**100 + 1, 2**129 - 1, 2**64, 2**64 + 1]:
        width = (N - 1).bit_length()
        vals = [int.from_bytes(rng.bytes(40), "little") % N for _ in range(3000)] + [N - 1, 0]
        spec = StreamSpec("s", len(vals), width, Bounds((N,), None))
        buf = R.encode(limb_rows(vals, width), spec, mode="uniform")
        assert as_ints(R.decode(buf, spec), width) == vals
        # log2 N + 0.012 bits per symbol, plus the header, one chunk offset and 32 lane states
        budget = len(vals) * (np.log2(float(N)) + 0.012) + 8 * (16 + 8) + 1024
        assert 8 * buf.size <= budget + 16


def test_uniform_costs_log2_n_not_width():
    # A bound just above a power of two: raw spends the full width, uniform about log2 N.
    N = 2**40 + 1
    rng = np.random.default_rng(0)
    vals = rng.integers(0, 2**40, 65536).astype(np.uint64)
    spec = StreamSpec("s", vals.size, 41, Bounds((N,), None))
    buf = R.encode(vals, spec, mode="uniform")
    per_symbol = (8 * buf.size - 1024 - 8 * 24) / vals.size
    assert 40.0 <= per_symbol <= 40.0 + 0.012
    assert np.array_equal(R.decode(buf, spec), vals)


def test_symbol_operations_follow_the_spec_table():
    assert symbol_operations(1) == (0, 0, 0, -1)
    assert symbol_operations(2) == (1, 0, 2, 1)  # raw(1)
    assert symbol_operations(3) == (1, 0, 3, -1)  # even(3)
    assert symbol_operations(256) == (1, 0, 256, 8)  # raw(8)
    assert symbol_operations(257) == (2, 1, 129, -1)  # even(129), raw(1)
    assert symbol_operations(2**16) == (2, 8, 256, 8)  # raw(8), raw(8)
    assert symbol_operations(2**25) == (3, 17, 256, 8)  # raw(8), raw(1), raw(16)
    assert symbol_operations(3 * 2**30) == (3, 24, 192, -1)  # even(192), raw(8), raw(16)


def test_decode_chunks_gives_the_chunks_symbols():
    rng = np.random.default_rng(5)
    sym = rng.integers(0, 7, 1000)
    spec = StreamSpec("s", sym.size, 3)
    buf = R.encode(sym, spec, chunk_symbols=96)
    for first, n in [(0, 1), (3, 2), (10, 1), (0, 11), (5, 0)]:
        assert np.array_equal(R.decode_chunks(buf, spec, first, n), sym[96 * first:96 * (first + n)])
    with pytest.raises(ValueError):
        R.decode_chunks(buf, spec, 10, 2)
    N = 3**50
    vals = [int.from_bytes(rng.bytes(16), "little") % N for _ in range(300)]
    spec = StreamSpec("s", 300, 80, Bounds((N,), None))
    buf = R.encode(limb_rows(vals, 80), spec, mode="uniform", chunk_symbols=64)
    assert as_ints(R.decode_chunks(buf, spec, 2, 3), 80) == vals[128:300]


def test_per_symbol_bound_index():
    vals_b = [(5, 7), (0, 1), (2**70 - 1, 2**70), (300, 301), (0, 1), (6, 7)] * 40
    bounds = [b for _, b in vals_b]
    spec = spec_of(len(bounds), 70, bounds)
    buf = R.encode(limb_rows([v for v, _ in vals_b], 70), spec, mode="uniform", chunk_symbols=100)
    assert both_decoders(buf, spec, bounds) == [v for v, _ in vals_b]


def test_encoder_refuses_symbols_outside_the_mode():
    with pytest.raises(ValueError):
        R.encode(np.array([5]), StreamSpec("s", 1, 3, Bounds((5,), None)), mode="uniform")
    with pytest.raises(ValueError):
        R.encode(np.array([8]), StreamSpec("s", 1, 3), mode="table")
    with pytest.raises(ValueError):
        R.encode(np.arange(20), StreamSpec("s", 20, 8), mode="table", precision=4)


def test_quantized_frequencies():
    for counts, P in [([5, 0, 1, 1000], 12), ([1] * 4096, 12), ([1] * 3000 + [10**6], 12), ([7], 1), ([0, 3], 5)]:
        f = quantize_frequencies(np.array(counts), P)
        assert f.sum() == 2**P
        assert np.all((f >= 1) == (np.array(counts) > 0))


def test_deterministic():
    rng = np.random.default_rng(9)
    sym = rng.integers(0, 13, 5000)
    spec = StreamSpec("s", sym.size, 4)
    assert R.encode(sym, spec).tobytes() == R.encode(sym.copy(), spec).tobytes()


# ---- rejections (each rule of section 4.3, in a payload crafted to break only it) -----------


def table_payload(count=100, width=4, S=64, P=12):
    sym = (np.arange(count) * 7) % 11
    spec = StreamSpec("s", count, width)
    return bytearray(R.encode(sym, spec, precision=P, chunk_symbols=S).tobytes()), spec


def set_u(b, off, n, v):
    b[off:off + n] = int(v).to_bytes(n, "little")


def rejects(b, spec, bounds=None):
    buf = np.frombuffer(bytes(b), np.uint8)
    with pytest.raises(PayloadCorrupt):
        R.decode(buf, spec)
    with pytest.raises(Reject):
        ref_decode(bytes(b), spec.count, spec.width, bounds)


def accepts(b, spec):
    return R.decode(np.frombuffer(bytes(b), np.uint8), spec)


def degenerate_payload(count=40, extra_words=0):
    """Table mode with one symbol of frequency 2^P: the states never move and no word is read."""
    spec = StreamSpec("s", count, 2)
    freq = [0, 0, 4096]
    C = 1
    ends = [64 + extra_words]
    b = bytearray(build_rans_header(0, 12, 65536, C, freq, ends))
    for _ in range(32):
        b += (0).to_bytes(2, "little") + (1).to_bytes(2, "little")  # state 2^16
    b += bytes(2 * extra_words)
    return b, spec


def test_degenerate_payload_is_valid():
    b, spec = degenerate_payload()
    assert list(accepts(b, spec)) == [2] * 40
    assert ref_decode(bytes(b), 40, 2) == [2] * 40


def test_reject_short_header():
    b, spec = table_payload()
    rejects(b[:15], spec)


@pytest.mark.parametrize("mode", [2, 255])
def test_reject_unknown_mode(mode):
    b, spec = table_payload()
    b[0] = mode
    rejects(b, spec)


@pytest.mark.parametrize("mode,precision", [(0, 0), (0, 16), (1, 12)])
def test_reject_precision(mode, precision):
    b, spec = table_payload()
    b[0], b[1] = mode, precision
    rejects(b, spec)


def test_reject_reserved():
    b, spec = table_payload()
    set_u(b, 2, 2, 1)
    rejects(b, spec)


def test_reject_chunk_symbols_zero():
    b, spec = table_payload()
    set_u(b, 4, 4, 0)
    rejects(b, spec)


@pytest.mark.parametrize("delta", [-1, 1])
def test_reject_chunk_count(delta):
    b, spec = table_payload()
    set_u(b, 8, 4, 2 + delta)
    rejects(b, spec)


def test_reject_alphabet():
    b, spec = table_payload(width=4)
    set_u(b, 12, 4, 0)  # table mode needs at least 1
    rejects(b, spec)
    b, spec = table_payload(width=4)
    rejects(b, StreamSpec("s", spec.count, 3))  # alphabet 11 > 2^3
    # Uniform mode needs alphabet 0.
    sp = StreamSpec("s", 10, 8)
    u = bytearray(R.encode(np.arange(10), sp, mode="uniform").tobytes())
    set_u(u, 12, 4, 1)
    rejects(u, sp)
    # Table mode: at most 65536 entries even on a wide stream.
    w = bytearray(build_rans_header(0, 15, 65536, 1, [0] * 65536 + [32768], [64]) + bytes(128))
    rejects(w, StreamSpec("s", 1, 20))


def test_reject_frequencies():
    b, spec = table_payload()
    set_u(b, 16, 2, int.from_bytes(b[16:18], "little") + 1)  # sum is 2^P + 1
    rejects(b, spec)
    d, spec = degenerate_payload()
    set_u(d, 20, 2, 4097)  # one entry above 2^P (and the sum off)
    rejects(d, spec)
    d, spec = degenerate_payload()
    set_u(d, 20, 2, 4095)
    rejects(d, spec)


def test_reject_padding():
    d, spec = degenerate_payload()  # A = 3: 22 bytes of header and table, padded to 24
    d[23] = 1
    rejects(d, spec)


def test_reject_truncated_tables():
    b, spec = table_payload()
    rejects(b[:20], spec)  # inside the frequency table
    T = 16 + 2 * 11
    T += (-T) % 8
    rejects(b[:T + 12], spec)  # inside the chunk offset table


def test_reject_chunk_offsets():
    b, spec = table_payload(count=100, S=64)
    T = 40
    e0, e1 = int.from_bytes(b[T:T + 8], "little"), int.from_bytes(b[T + 8:T + 16], "little")
    c = bytearray(b)
    set_u(c, T, 8, e1 + 1)  # decreasing
    rejects(c, spec)
    c = bytearray(b)
    set_u(c, T, 8, 63)  # first chunk under 64 words
    rejects(c, spec)
    c = bytearray(b)
    set_u(c, T, 8, e1 - 63)  # second chunk under 64 words
    rejects(c, spec)
    assert e0 >= 64


def test_reject_length():
    b, spec = table_payload()
    rejects(b + bytes(2), spec)
    rejects(b[:-2], spec)
    rejects(b + bytes(1), spec)


def test_reject_initial_state():
    d, spec = degenerate_payload()
    T = 24 + 8
    set_u(d, T + 4 * 5 + 2, 2, 0)  # lane 5's high word: state below 2^16
    rejects(d, spec)


def test_reject_final_state():
    d, spec = degenerate_payload()
    T = 24 + 8
    set_u(d, T + 4 * 7, 2, 1)  # lane 7 starts (and so ends) at 2^16 + 1
    rejects(d, spec)


def test_reject_words_left_over():
    d, spec = degenerate_payload(extra_words=1)
    rejects(d, spec)


def test_reject_refill_past_end():
    # Uniform, width 16 unbounded: raw(8) then raw(8); a state of 2^16 refills at once.
    spec = StreamSpec("s", 1, 16)
    b = bytearray(build_rans_header(1, 0, 65536, 1, None, [64]))
    for _ in range(32):
        b += (0).to_bytes(2, "little") + (1).to_bytes(2, "little")
    rejects(b, spec)


def test_reject_symbol_at_or_above_bound():
    # Bounds 257 and 258 share their operations (even(129), raw(1)): 257 codes under one, not the other.
    good = StreamSpec("s", 3, 9, Bounds((258,), None))
    buf = R.encode(np.array([1, 257, 4]), good, mode="uniform")
    bad = StreamSpec("s", 3, 9, Bounds((257,), None))
    rejects(bytearray(buf.tobytes()), bad, [257] * 3)
    # Wide: N = 2^100 + 2 vs 2^100 + 1, symbol 2^100 + 1.
    N = 2**100 + 2
    good = StreamSpec("s", 2, 101, Bounds((N,), None))
    buf = R.encode(limb_rows([N - 1, 3], 101), good, mode="uniform")
    bad = StreamSpec("s", 2, 101, Bounds((N - 1,), None))
    rejects(bytearray(buf.tobytes()), bad, [N - 1] * 2)


def test_mutated_payloads_agree_with_reference():
    """Random byte edits: the Numba decoder and the spec-text decoder accept the same
    payloads and give the same symbols."""
    rng = np.random.default_rng(11)
    cases = []
    sym = rng.integers(0, 5, 70)
    sp = StreamSpec("s", 70, 3)
    cases.append((R.encode(sym, sp, chunk_symbols=40, precision=6), sp, None))
    bl = [int(v) for v in rng.integers(1, 300, 50)]
    sp = spec_of(50, 9, bl)
    cases.append((R.encode(np.array([int(rng.integers(0, n)) for n in bl]), sp, mode="uniform", chunk_symbols=33),
                  sp, bl))
    agreed_accept = 0
    for buf, sp, bl in cases:
        for _ in range(150):
            b = bytearray(buf.tobytes())
            for _ in range(int(rng.integers(1, 3))):
                pos = int(rng.integers(0, len(b)))
                b[pos] ^= 1 << int(rng.integers(0, 8))
            got = both_decoders(np.frombuffer(bytes(b), np.uint8), sp, bl)
            agreed_accept += got != "reject"
    assert agreed_accept > 0  # some edits (in word streams) still decode, to different symbols


# ---- the committed conformance vectors against the spec-text decoder ------------------------

CONF = __import__("pathlib").Path(__file__).resolve().parent.parent / "conformance"


def rans_payloads(data: bytes):
    """(payload bytes, StreamSpec with bounds, bounds as a list or None) of every rans payload of a
    file, bounds from the codec and the streams before it (as the decoder computes them)."""
    from dataclasses import replace

    from pvqcodec.container.reader import Container
    from pvqcodec.decoder import decode_payloads

    out = []
    with Container.from_bytes(data) as c:
        for rec in c.tensors:
            bufs = [c.payload(rec, i) for i in range(len(rec.payloads))]
            for i, p in enumerate(rec.payloads):
                if p.coding != RansCoding.id:
                    continue
                try:
                    earlier = decode_payloads(rec.codec, rec.codec_params, rec.rows, rec.cols, rec.dtype,
                                              [(q.coding, b, q.stream) for q, b in zip(rec.payloads[:i], bufs[:i])])
                except PayloadCorrupt:  # an invalid vector's broken payload comes earlier
                    continue
                bounds = rec.codec.stream_bounds(rec.codec_params, rec.rows, rec.cols, rec.dtype, i, earlier)
                blist = None
                if bounds is not None:
                    idx = np.zeros(p.stream.count, np.int64) if bounds.index is None else bounds.index
                    blist = [bounds.values[int(j)] for j in idx]
                out.append((bufs[i], replace(p.stream, bounds=bounds), blist))
    return out


def test_valid_rans_vectors_agree_with_reference():
    names = sorted(d.name for d in (CONF / "vectors").iterdir() if d.name.startswith("rans_"))
    assert len(names) >= 6
    seen = set()
    for name in names:
        for buf, spec, blist in rans_payloads((CONF / "vectors" / name / "input.pvqc").read_bytes()):
            ours = as_ints(R.decode(buf, spec), spec.width)
            assert ours == ref_decode(buf.tobytes(), spec.count, spec.width, blist), (name, spec.name)
            seen.add(("table", "uniform")[int(buf[0])] if buf.size else None)
    assert seen == {"table", "uniform"}


def test_invalid_rans_vectors_rejected_by_reference():
    import json

    manifest = json.loads((CONF / "invalid" / "MANIFEST.json").read_text(encoding="utf-8"))["files"]
    names = sorted(n for n in manifest if n.startswith("rans_"))
    assert len(names) >= 20
    for name in names:
        assert manifest[name]["error"] == "payload_corrupt"
        verdicts = []
        for buf, spec, blist in rans_payloads((CONF / "invalid" / name).read_bytes()):
            try:
                ref_decode(buf.tobytes(), spec.count, spec.width, blist)
                verdicts.append("ok")
            except Reject:
                verdicts.append("reject")
        assert verdicts.count("reject") == 1, (name, verdicts)
