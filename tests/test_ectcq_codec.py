"""The ectcq codec (spec codecs/ectcq.md, section 6.7): parameter block, streams, the decoded
values against an independent decoder written from the spec text, the corrupt-payload
rules, the encoder's rate control, weighting and determinism, and the CLI."""

import json
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvqcodec.cli import main
from pvqcodec.codecs import codec_by_id, codec_by_name
from pvqcodec.codecs.ectcq import decode_ectcq_grid
from pvqcodec.codecs.ectcq.encoder import coded_size, encoded_from_grid
from pvqcodec.codecs.ectcq.quantizer import ectcq_lloyd
from pvqcodec.errors import InputError, ParamsInvalid, PayloadCorrupt

from helpers import write_weights

CODEC = codec_by_name("ectcq")


def block(step=0.5, state_bits=3, flags=0, a0_count=0, offsets=(), offset_count=None):
    n = len(offsets) if offset_count is None else offset_count
    return struct.pack("<fBBHQ", step, state_bits, flags, n, a0_count) + struct.pack(f"<{len(offsets)}f", *offsets)


def decode(params_raw, rows, cols, streams):
    p = CODEC.parse_params(params_raw, rows, cols, "float32")
    return CODEC.decode(p, rows, cols, "float32", streams)


def test_registered_as_id_6_since_1_2():
    assert codec_by_id(6) is CODEC and CODEC.name == "ectcq" and CODEC.quantizes and CODEC.since_minor == 2


# ---- parameter block and streams (6.7.1, 6.7.3) ------------------------------------------------------


def test_params_round_trip_and_layout():
    p = {"step": np.float32(0.75), "state_bits": 8, "a0_count": 70000, "offsets": np.array([0.25, -0.5], np.float32)}
    raw = CODEC.build_params(p)
    assert raw == block(0.75, 8, 0, 70000, (0.25, -0.5)) and len(raw) == 16 + 4 * 2
    assert raw[8:16] == (70000).to_bytes(8, "little")  # a0_count at offset 8, offsets from 16
    q = CODEC.parse_params(raw, 300, 400, "float32")
    assert (float(q["step"]), q["state_bits"], q["a0_count"], q["offsets"].tolist()) == (0.75, 8, 70000, [0.25, -0.5])


@pytest.mark.parametrize("raw,needle", [
    (block(0.0), "step"),
    (block(-0.0), "step"),
    (block(-1.0), "step"),
    (block(float("inf")), "step"),
    (block(float("nan")), "step"),
    (block(1.0, state_bits=2), "state_bits"),
    (block(1.0, state_bits=9), "state_bits"),
    (block(1.0, flags=1), "flags"),
    (block(1.0, a0_count=13), "a0_count"),
    (block(1.0, offsets=(0.1, float("nan"))), "offset 1"),
    (block(1.0, offsets=(float("-inf"),)), "offset 0"),
    (block(1.0, offsets=(0.1,)) + b"\0", "parameter block"),
    (block(1.0, offsets=(0.1,), offset_count=2), "parameter block"),
    (b"\0" * 15, "parameter block"),
])
def test_params_rejections(raw, needle):
    with pytest.raises(ParamsInvalid, match=needle):
        CODEC.parse_params(raw, 3, 4, "float32")


def test_params_checked_in_table_order():
    with pytest.raises(ParamsInvalid, match="step"):
        CODEC.parse_params(block(0.0, state_bits=99, flags=1), 1, 1, "float32")
    with pytest.raises(ParamsInvalid, match="state_bits"):
        CODEC.parse_params(block(1.0, state_bits=99, flags=1, a0_count=5), 1, 1, "float32")


@pytest.mark.parametrize("cols,width", [(1, 1), (2, 2), (4095, 12), (4096, 13), (65535, 16), (65536, 17)])
def test_streams(cols, width):
    n0 = min(5, 3 * cols)
    p = CODEC.parse_params(block(1.0, a0_count=n0), 3, cols, "float32")
    specs = CODEC.streams(p, 3, cols, "float32")
    assert [(s.name, s.count, s.width) for s in specs] == [("row_a0", 3, width), ("a0", n0, 16), ("a1", 3 * cols - n0, 16)]
    assert CODEC.stream_bounds(p, 3, cols, "float32", 0, []).values == (cols + 1,)
    assert CODEC.stream_bounds(p, 3, cols, "float32", 1, []) is None
    assert cols + 1 <= 1 << width


# ---- decoded value (6.7.4 to 6.7.6): an independent decoder from the spec text -------------------------


def f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]


def spec_next_state(S, z1, v):
    h0, h1 = {3: (0o13, 0o04), 4: (0o23, 0o04), 5: (0o45, 0o10), 6: (0o103, 0o024), 7: (0o235, 0o126),
              8: (0o515, 0o362)}[v]
    u = S % 2
    w = [None] + [(S >> (k - 1)) & 1 for k in range(1, v + 1)] + [0]  # w[1..v], w[v+1] = 0
    out = 0
    for k in range(1, v + 1):
        bit = w[k + 1] ^ (((h1 >> k) & 1) & z1) ^ (((h0 >> k) & 1) & u)
        out |= bit << (k - 1)
    return out


def spec_decode(step, v, offsets, row_a0, a0, a1, rows, cols):
    """Spec 6.7.3 to 6.7.6 one value at a time, float32 by rounding after each operation.
    Returns the float32 bit patterns (rows x cols) or the string 'payload_corrupt'."""
    if any(c > cols for c in row_a0) or sum(row_a0) != len(a0):
        return "payload_corrupt"
    out = np.zeros((rows, cols), np.float32)
    for r in range(rows):
        start0 = sum(row_a0[:r])
        start1 = r * cols - start0
        S, k0, k1 = 0, 0, 0
        for i in range(cols):
            u = S % 2
            if u == 0:
                if k0 == row_a0[r]:
                    return "payload_corrupt"
                s = a0[start0 + k0]
                k0 += 1
            else:
                if k1 == cols - row_a0[r]:
                    return "payload_corrupt"
                s = a1[start1 + k1]
                k1 += 1
            j = s + 1 if (s + u) % 2 == 1 else -s
            m, negative = abs(j), j < 0
            if m == 0:
                x = 0.0
            else:
                off = offsets[min(m, len(offsets)) - 1] if offsets else 0.0
                a = f32(f32(float(m) - off) * step)
                x = -a if negative else a
            out[r, i] = x
            S = spec_next_state(S, (j % 4) // 2, v)
    return out.view(np.uint32)


def random_streams(rng, rows, cols, v, spread):
    """Valid streams of random union symbols: each row walked through the trellis."""
    from pvqcodec.codecs.ectcq.trellis import symbol_grid_index, trellis_tables

    nxt, _ = trellis_tables(v)
    row_a0, a0, a1 = [], [], []
    for _ in range(rows):
        S, n0 = 0, 0
        for _ in range(cols):
            u = S & 1
            s = int(rng.integers(0, spread)) if rng.random() < 0.97 else int(rng.integers(0, 65536))
            (a0 if u == 0 else a1).append(s)
            n0 += u == 0
            j = int(symbol_grid_index(np.array([s]), np.array([u]))[0])
            S = int(nxt[S, (j >> 1) & 1])
        row_a0.append(n0)
    return row_a0, a0, a1


@pytest.mark.parametrize("v,step,offsets", [
    (3, 0.3, ()),
    (8, 0.5948, (0.21, 0.137, 0.081, 0.0612)),
    (5, 3.1e-5, (0.31,) * 5 + (-0.2,)),
    (6, 7.0e30, (1e-3, 2.5)),
    (4, 1.0, (1.0,)),  # magnitude 1 decodes to +-0.0
])
def test_decoded_values_bit_exact(v, step, offsets):
    rng = np.random.default_rng(v)
    rows, cols = 5, 37
    step = f32(step)
    offsets = tuple(f32(o) for o in offsets)
    row_a0, a0, a1 = random_streams(rng, rows, cols, v, 12)
    raw = block(step, v, 0, len(a0), offsets)
    streams = [np.array(row_a0, np.uint32), np.array(a0, np.uint16), np.array(a1, np.uint16)]
    with np.errstate(over="ignore"):
        got = decode(raw, rows, cols, streams)
    want = spec_decode(step, v, offsets, row_a0, a0, a1, rows, cols)
    assert got.dtype == np.float32
    assert got.view(np.uint32).tolist() == want.tolist()


def test_worked_example_of_the_spec():
    raw = block(0.5, 3, 0, 2)
    got = decode(raw, 1, 5, [np.array([2], np.uint32), np.array([1, 0], np.uint16), np.array([3, 0, 4], np.uint16)])
    assert got.tolist() == [[1.0, 0.0, -1.5, 0.5, 2.5]]
    assert got.view(np.uint32)[0, 1] == 0  # +0.0
    with pytest.raises(PayloadCorrupt, match="row 0 takes more than its 2 A_1 symbols"):
        decode(block(0.5, 3, 0, 3), 1, 5, [np.array([3], np.uint32), np.array([1, 0, 2], np.uint16),
                                            np.array([3, 0], np.uint16)])


def test_corrupt_row_counts():
    rng = np.random.default_rng(3)
    rows, cols = 4, 16
    row_a0, a0, a1 = random_streams(rng, rows, cols, 3, 6)
    st = lambda r: [np.array(r, np.uint32), np.array(a0, np.uint16), np.array(a1, np.uint16)]  # noqa: E731
    raw = block(1.0, 3, 0, len(a0))
    decode(raw, rows, cols, st(row_a0))  # valid
    with pytest.raises(PayloadCorrupt, match="sums to"):  # row_a0's sum is not a0_count
        decode(raw, rows, cols, st([row_a0[0] + 1] + row_a0[1:]))
    # one A_0 value moved from row 1 to row 2: the sum holds, row 1 runs out of A_0 symbols
    moved = list(row_a0)
    moved[1] -= 1
    moved[2] += 1
    with pytest.raises(PayloadCorrupt, match="row 1 takes more than its"):
        decode(raw, rows, cols, st(moved))
    with pytest.raises(PayloadCorrupt, match="row_a0 of row 0"):  # above the bound cols + 1
        decode(block(1.0, 3, 0, cols + 1), rows, cols, st([cols + 1, 0, 0, 0]))


def test_walk_is_per_row():
    """decode_ectcq_grid of a row depends on that row's symbols only."""
    rng = np.random.default_rng(5)
    row_a0, a0, a1 = random_streams(rng, 3, 20, 8, 9)
    j = decode_ectcq_grid(np.array(row_a0), np.array(a0, np.uint16), np.array(a1, np.uint16), len(a0), 8, 3, 20)
    one = decode_ectcq_grid(np.array(row_a0[1:2]), np.array(a0[row_a0[0]:row_a0[0] + row_a0[1]], np.uint16),
                            np.array(a1[20 - row_a0[0]:40 - row_a0[0] - row_a0[1]], np.uint16), row_a0[1], 8, 1, 20)
    assert np.array_equal(j[1:2], one)


@given(rows=st.integers(1, 4), cols=st.integers(1, 70), v=st.integers(3, 8), spread=st.sampled_from([1, 3, 40, 32767]),
       seed=st.integers(0, 2**32 - 1), coding=st.sampled_from(["raw", "auto", "rans"]))
def test_streams_round_trip_losslessly(rows, cols, v, spread, seed, coding):
    """Any trellis path -> Encoded -> payloads in any coding -> streams -> the same grid
    indices (the lossless part of the codec)."""
    from dataclasses import replace

    from pvqcodec.codecs.ectcq.quantizer import EctcqTables
    from pvqcodec.coding import coding_by_id
    from pvqcodec.coding.select import code_stream
    from pvqcodec.codecs.ectcq.trellis import symbol_grid_index, trellis_tables

    rng = np.random.default_rng(seed)
    nxt, _ = trellis_tables(v)
    j = np.empty((rows, cols), np.int64)
    for r in range(rows):
        S = 0
        for i in range(cols):
            s = int(rng.integers(0, spread))
            g = int(symbol_grid_index(np.array([s]), np.array([S & 1]))[0])  # |g| <= 32767: the encoder's limit
            j[r, i] = g
            S = int(nxt[S, (g >> 1) & 1])
    enc = encoded_from_grid(j, 0.5, EctcqTables(0.5, np.zeros(1), np.zeros((2, 1))), v)
    p = CODEC.parse_params(CODEC.build_params(enc.params), rows, cols, "float32")
    streams = []
    for pos, (sym, spec) in enumerate(zip(enc.streams, CODEC.streams(p, rows, cols, "float32"))):
        spec = replace(spec, bounds=CODEC.stream_bounds(p, rows, cols, "float32", pos, streams))
        coded = code_stream(sym, spec, {"raw": "none"}.get(coding, coding), 64)
        streams.append(coding_by_id(coded.coding).decode(coded.payload, spec))
    assert np.array_equal(decode_ectcq_grid(*streams, p["a0_count"], v, rows, cols), j)


# ---- encoder (6.7.7) ----------------------------------------------------------------------------------


def encode_decode(x, opts, weighting=None):
    rows, cols = x.shape
    enc = CODEC.encode(x, opts, weighting)
    y = decode(CODEC.build_params(enc.params), rows, cols, enc.streams)
    return enc, y


@pytest.mark.parametrize("bits,mse_max", [(2.0, 0.072), (3.0, 0.0182)])
def test_rate_control_meets_the_coded_target(bits, mse_max):
    """Parameter block and payloads within 1 percent under bits * n / 8; the error near
    256-state ECTCQ's (0.066 / 0.0165 at 2^20 values; this tensor's 2^16 values pay more
    for lane states and tables)."""
    rows, cols = 64, 1024
    x = np.random.default_rng(11).standard_normal((rows, cols))
    enc, y = encode_decode(x, {"bits": bits})
    size = coded_size(enc, rows, cols)
    assert 0.99 * bits <= 8 * size / x.size <= bits
    assert enc.info["coded_bits"] == 8 * size / x.size
    mse = float(np.mean((x - y) ** 2))
    assert 2.0 ** (-2 * bits) < mse < mse_max


def test_encoder_is_deterministic_and_scale_invariant():
    x = np.random.default_rng(2).standard_normal((16, 512))
    a = CODEC.encode(x, {"bits": 3, "state_bits": 4})
    b = CODEC.encode(x, {"bits": 3, "state_bits": 4})
    c = CODEC.encode(x * 4.0, {"bits": 3, "state_bits": 4})  # a power of two: the same symbols, step times 4
    assert CODEC.build_params(a.params) == CODEC.build_params(b.params)
    assert all(np.array_equal(s, t) for s, t in zip(a.streams, b.streams))
    assert all(np.array_equal(s, t) for s, t in zip(a.streams, c.streams))
    assert float(c.params["step"]) == 4 * float(a.params["step"])


def test_state_bits_option_and_fewer_states_are_worse():
    x = np.random.default_rng(6).standard_normal((32, 1024))
    e8, y8 = encode_decode(x, {"bits": 2, "state_bits": 3})
    e256, y256 = encode_decode(x, {"bits": 2})
    assert e8.params["state_bits"] == 3 and e256.params["state_bits"] == 8
    assert np.mean((x - y256) ** 2) < 0.98 * np.mean((x - y8) ** 2)
    with pytest.raises(InputError, match="state bits"):
        CODEC.encode(x, {"bits": 2, "state_bits": 9})


def test_weighting_moves_error_to_unweighted_columns():
    """The weighting acts through the Viterbi's choice of path (and the rate term): with
    every other column weighted 30 times more, the path spends the trellis's freedom on
    the heavy columns (measured: 0.41 times the unweighted error there, 4.7 times on the
    light ones; halves of a row, too far apart to trade, move by about 2 percent)."""
    rows, cols = 16, 1024
    x = np.random.default_rng(4).standard_normal((rows, cols))
    w = np.ones((1, cols))
    w[0, ::2] = 30.0
    _, y = encode_decode(x, {"bits": 2, "state_bits": 4}, weighting=w)
    _, y0 = encode_decode(x, {"bits": 2, "state_bits": 4})
    e, e0 = (x - y) ** 2, (x - y0) ** 2
    assert e[:, ::2].mean() < 0.6 * e0[:, ::2].mean()
    assert e[:, 1::2].mean() > 2.0 * e0[:, 1::2].mean()
    with pytest.raises(InputError, match="weighting"):
        CODEC.encode(x, {"bits": 2}, weighting=-np.ones((rows, cols)))


def test_zero_tensor_zero_rows_and_bad_options():
    enc, y = encode_decode(np.zeros((3, 5)), {"bits": 2})
    assert y.view(np.uint32).tolist() == [[0] * 5] * 3 and enc.params["a0_count"] == 15  # +0.0, all in state 0
    x = np.random.default_rng(1).standard_normal((6, 256))
    x[2] = 0.0
    _, y = encode_decode(x, {"bits": 3, "state_bits": 3})
    assert np.abs(y[2]).max() < 0.2 and np.mean((x - y) ** 2) < 0.05
    for bad in ("x", 0.1, 13, None):
        with pytest.raises(InputError):
            CODEC.encode(np.ones((2, 2)), {"bits": bad})


def test_building_blocks_for_block_rounding():
    """Grid indices chosen with fixed tables give the same Encoded and values as the decoder
    reads back; a non-path is refused."""
    x = np.random.default_rng(7).standard_normal((8, 128))
    j, tables = ectcq_lloyd(x, np.ones_like(x), 0.5, 0.025, 5, 2)
    enc = encoded_from_grid(j, 0.5, tables, 5)
    assert enc.params["a0_count"] == int(((j & 1) == 0).sum())
    back = decode_ectcq_grid(*enc.streams, enc.params["a0_count"], 5, 8, 128)
    assert np.array_equal(back, j)
    bad = j.copy()
    bad[0, 0] += 1  # state 0 takes an even index
    with pytest.raises(ValueError):
        encoded_from_grid(bad, 0.5, tables, 5)


# ---- the command line -------------------------------------------------------------------------------

SHAPES = [("a.weight", (48, 256), "F32"), ("b.weight", (5, 33), "BF16"), ("norm", (17,), "F16")]


def test_cli_round_trip(tmp_path, capsys):
    src = tmp_path / "in.safetensors"
    write_weights(src, SHAPES)
    out = tmp_path / "out.pvqc"
    args = ["encode", str(src), str(out), "--codec", "ectcq", "--bits", "3", "--ectcq-states", "16", "-q"]
    assert main(args) == 0
    again = tmp_path / "again.pvqc"
    assert main(args[:2] + [str(again)] + args[3:]) == 0
    assert out.read_bytes() == again.read_bytes()  # deterministic
    assert main(["info", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    t = {x["name"]: x for x in doc["tensors"]}
    assert t["a.weight"]["codec"]["name"] == "ectcq" and t["a.weight"]["codec"]["states"] == 16
    assert [p["stream"] for p in t["a.weight"]["payloads"]] == ["row_a0", "a0", "a1"]
    assert doc["version"] == "1.2"  # the file uses codec 6, defined since 1.2
    assert main(["verify", str(out)]) == 0
    assert main(["decode", str(out), str(tmp_path / "dec.safetensors")]) == 0
    raw = tmp_path / "raw.pvqc"
    assert main(["encode", str(src), str(raw), "--codec", "ectcq", "--bits", "3", "--entropy", "none", "-q"]) == 0
    assert main(["verify", str(raw)]) == 0
    capsys.readouterr()
    assert main(["encode", str(src), str(tmp_path / "x.pvqc"), "--codec", "ectcq", "--ectcq-states", "12", "-q"]) != 0
    err = capsys.readouterr().err
    assert "--ectcq-states" in err and "Traceback" not in err
