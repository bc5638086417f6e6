"""The trellis codec (spec codecs/trellis.md): parameter block, streams, the reference decoder
against an independent decoder written from the spec, the encoder, and the CLI round trip."""

import json
import struct

import numpy as np
import pytest

from pvqcodec.cli import main
from pvqcodec.codecs import codec_by_id, codec_by_name
from pvqcodec.codecs.trellis import TILE, matrix_to_tiles, tiles_to_matrix
from pvqcodec.codecs.trellis.bitstream import words_to_states
from pvqcodec.coding import RawCoding
from pvqcodec.errors import InputError, ParamsInvalid, PayloadCorrupt
from pvqcodec.safetensors_io import SafetensorsSource

from helpers import write_weights
from test_trellis_codes import py_1mad, py_3inst, py_hyb

CODEC = codec_by_name("trellis")
V_OF = {0: 1, 1: 1, 2: 2}


def params(code=0, L=12, k=2, row_scales=0, scale=0.5):
    return {"code": code, "L": L, "k": k, "row_scales": row_scales, "scale": np.float32(scale)}


def test_registered_as_id_2():
    assert codec_by_id(2) is CODEC and CODEC.name == "trellis"


# ---- parameter block (6.3.1) ---------------------------------------------------------------------


def test_params_round_trip_and_layout():
    p = params(code=2, L=16, k=3, row_scales=1, scale=-1.25)
    raw = CODEC.build_params(p)
    assert raw == bytes([2, 16, 3, 1]) + struct.pack("<f", -1.25)
    q = CODEC.parse_params(raw, 5, 7, "float32")
    assert (q["code"], q["L"], q["k"], q["row_scales"], float(q["scale"])) == (2, 16, 3, True, -1.25)


@pytest.mark.parametrize("raw,needle", [
    (bytes([3, 12, 2, 0]) + struct.pack("<f", 1.0), "code 3"),
    (bytes([0, 12, 0, 0]) + struct.pack("<f", 1.0), "k 0"),
    (bytes([0, 16, 9, 0]) + struct.pack("<f", 1.0), "k 9"),
    (bytes([0, 17, 2, 0]) + struct.pack("<f", 1.0), "L 17"),
    (bytes([0, 1, 2, 0]) + struct.pack("<f", 1.0), "L 1"),
    (bytes([2, 5, 3, 0]) + struct.pack("<f", 1.0), "L 5"),  # HYB: k V = 6 > L
    (bytes([0, 12, 2, 2]) + struct.pack("<f", 1.0), "reserved"),
    (bytes([0, 12, 2, 0x81]) + struct.pack("<f", 1.0), "reserved"),
    (bytes([0, 12, 2, 0]) + struct.pack("<f", float("nan")), "not finite"),
    (bytes([0, 12, 2, 0]) + struct.pack("<f", float("inf")), "not finite"),
    (bytes([0, 12, 2, 0]) + struct.pack("<f", 1.0) + b"\0", "parameter block"),
    (bytes([0, 12, 2]), "parameter block"),
])
def test_params_rejected(raw, needle):
    with pytest.raises(ParamsInvalid) as e:
        CODEC.parse_params(raw, 16, 16, "float32")
    assert needle in str(e.value)


def test_params_limits_accepted():
    for code, L, k in ((0, 1, 1), (0, 16, 8), (2, 16, 8), (1, 16, 16 // 2)):
        raw = bytes([code, L, k, 0]) + struct.pack("<f", 1.0)
        CODEC.parse_params(raw, 1, 1, "float32")


# ---- streams and tiles (6.3.2, 6.3.4) -----------------------------------------------------------


@pytest.mark.parametrize("rows,cols,k,rs,words", [
    (16, 16, 2, 0, 16), (17, 16, 2, 0, 32), (3, 5, 1, 0, 8), (33, 40, 4, 1, 9 * 32),
])
def test_streams(rows, cols, k, rs, words):
    specs = CODEC.streams(params(k=k, row_scales=rs), rows, cols, "float16")
    assert (specs[0].name, specs[0].count, specs[0].width) == ("trellis", words, 32)
    if rs:
        assert (specs[1].name, specs[1].count, specs[1].width) == ("row_scales", rows, 16)
    else:
        assert len(specs) == 1


def test_tile_order():
    rows, cols = 20, 35  # 2 x 3 tiles
    m = np.arange(rows * cols, dtype=np.float64).reshape(rows, cols)
    t = matrix_to_tiles(m, fill=-1)
    assert t.shape == (6, TILE)
    # tile (I, J) = number 3 I + J; its value n sits at row 16 I + n // 16, column 16 J + n % 16
    for tile in range(6):
        I, J = divmod(tile, 3)
        for n in (0, 1, 17, 255):
            r, c = 16 * I + n // 16, 16 * J + n % 16
            assert t[tile, n] == (m[r, c] if r < rows and c < cols else -1)
    assert np.array_equal(tiles_to_matrix(t, rows, cols), m)


# ---- the decoder against one written from the spec ----------------------------------------------


def spec_decode(words, code, L, k, rows, cols, scale, row_scales=None):
    """Section 6.3 step by step in plain Python: bits, states, code values, placement, scale."""
    V = V_OF[code]
    kv = k * V
    tj = -(-cols // 16)
    out = np.zeros((rows, cols), np.float32)
    W = 8 * k
    for tile in range(len(words) // W):
        w = words[tile * W:(tile + 1) * W]
        bits = [(int(w[i // 32]) >> (31 - i % 32)) & 1 for i in range(32 * W)]
        N = len(bits)
        for t in range(TILE // V):
            s = 0
            for i in range(L):
                s = (s << 1) | bits[(t * kv + i) % N]
            vals = [py_1mad(s)] if code == 0 else [py_3inst(s)] if code == 1 else list(py_hyb(s))
            for v, c in enumerate(vals):
                n = t * V + v
                r, col = 16 * (tile // tj) + n // 16, 16 * (tile % tj) + n % 16
                if r < rows and col < cols:
                    a = np.float32(scale) if row_scales is None else np.float32(row_scales[r]) * np.float32(scale)
                    out[r, col] = np.float32(c) * a
    return out


@pytest.mark.parametrize("code,L,k", [(0, 12, 2), (1, 16, 1), (2, 16, 2), (2, 9, 4), (0, 5, 3), (1, 8, 4)])
def test_decoder_matches_the_spec(code, L, k):
    rng = np.random.default_rng(code * 100 + L + k)
    rows, cols = 20, 35
    n_words = 6 * 8 * k
    words = rng.integers(0, 2**32, n_words, dtype=np.uint64).astype(np.uint32)
    p = params(code=code, L=L, k=k, scale=0.37)
    got = CODEC.decode(p, rows, cols, "float32", [words])
    ref = spec_decode(words, code, L, k, rows, cols, 0.37)
    assert got.dtype == np.float32 and got.shape == (rows, cols)
    assert np.array_equal(got.view(np.uint32), ref.view(np.uint32))
    # with row scales: a_r = f32(h_r) * scale, then c * a_r
    h = rng.uniform(0.5, 2, rows).astype(np.float16)
    p2 = params(code=code, L=L, k=k, scale=0.37, row_scales=1)
    got2 = CODEC.decode(p2, rows, cols, "float32", [words, h.view(np.uint16)])
    ref2 = spec_decode(words, code, L, k, rows, cols, 0.37, h.astype(np.float32))
    assert np.array_equal(got2.view(np.uint32), ref2.view(np.uint32))


def test_last_state_wraps_to_the_first_bits():
    """Tail-biting: the last step's state is the last kV bits followed by the first L - kV."""
    words = np.zeros(16, np.uint32)  # one tile, k = 2, 1MAD (V = 1): 512 bits, 256 steps
    words[0] = 0xABC00000  # first 12 bits: 1010 1011 1100
    words[15] = 0x00000003  # last 2 bits: 11
    s = words_to_states(words.reshape(1, -1), 12, 2)[0]
    assert s[0] == 0xABC and s[255] == (0b11 << 10) | (0xABC >> 2)
    y = CODEC.decode(params(code=0, L=12, k=2, scale=1.0), 16, 16, "float32", [words])
    assert y[15, 15] == py_1mad(int(s[255])) and y[0, 0] == py_1mad(0xABC)


def test_non_finite_row_scale_rejected():
    words = np.zeros(16, np.uint32)
    h = np.ones(16, np.float16)
    h[3] = np.inf
    with pytest.raises(PayloadCorrupt, match="row 3"):
        CODEC.decode(params(row_scales=1), 16, 16, "float32", [words, h.view(np.uint16)])


# ---- the encoder -------------------------------------------------------------------------------------


def round_trip(wp, opts, weighting=None):
    rows, cols = wp.shape
    enc = CODEC.encode(wp, opts, weighting)
    specs = CODEC.streams(enc.params, rows, cols, "float32")
    payloads = [RawCoding.encode(s, sp) for s, sp in zip(enc.streams, specs)]
    p = CODEC.parse_params(CODEC.build_params(enc.params), rows, cols, "float32")
    y = CODEC.decode(p, rows, cols, "float32", [RawCoding.decode(b, sp) for b, sp in zip(payloads, specs)])
    return enc, y, payloads


@pytest.mark.parametrize("code,k,limit", [("1mad", 2, 0.095), ("3inst", 2, 0.10), ("hyb", 2, 0.12),
                                          ("1mad", 1, 0.32), ("3inst", 3, 0.030), ("1mad", 4, 0.0085)])
def test_gaussian_quality_at_L8(code, k, limit):
    """L = 8 (fast) already beats Lloyd-Max (0.3634, 0.1175, 0.0345, 0.0095)."""
    x = np.random.default_rng(1).standard_normal((64, 256))
    enc, y, payloads = round_trip(x, {"bits": k, "code": code, "trellis_L": 8})
    mse = float(np.mean((y - x) ** 2))
    assert mse < limit, mse
    assert 8 * sum(p.size for p in payloads) == k * x.size  # exactly k bits per weight


def test_decoded_values_are_the_encoder_path():
    """The words carry exactly the states the Viterbi chose (tail-biting holds), and the
    scale is the least-squares one for them."""
    x = np.random.default_rng(2).standard_normal((32, 48))
    enc, y, _ = round_trip(x, {"bits": 2, "code": "3inst", "trellis_L": 10})
    c = y.astype(np.float64) / float(enc.params["scale"])
    a = np.sum(c * x) / np.sum(c * c)
    assert a == pytest.approx(float(enc.params["scale"]), rel=1e-6)


def test_padding_and_odd_shapes():
    x = np.random.default_rng(3).standard_normal((5, 37))
    enc, y, payloads = round_trip(x, {"bits": 3, "code": "hyb", "trellis_L": 8})
    assert y.shape == (5, 37)
    assert payloads[0].size == 3 * 256 * 3 // 8  # 1 x 3 tiles of 256 weights at 3 bits
    assert np.mean((y - x) ** 2) < 0.1


def test_weighting_is_honoured():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((32, 64))
    w = np.where(rng.random(x.shape) < 0.5, 10.0, 0.1)
    _, y0, _ = round_trip(x, {"bits": 2, "code": "1mad", "trellis_L": 8})
    _, y1, _ = round_trip(x, {"bits": 2, "code": "1mad", "trellis_L": 8}, weighting=w)
    e0 = float(np.sum(w * (y0 - x) ** 2))
    e1 = float(np.sum(w * (y1 - x) ** 2))
    assert e1 < 0.8 * e0


def test_row_scales_follow_row_norms():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((32, 64)) * np.exp(rng.standard_normal(32))[:, None]
    opts = {"bits": 2, "code": "1mad", "trellis_L": 8}
    _, y0, _ = round_trip(x, opts)
    enc, y1, payloads = round_trip(x, {**opts, "row_scales": True})
    assert len(payloads) == 2 and enc.params["row_scales"]
    assert np.sum((y1 - x) ** 2) < 0.5 * np.sum((y0 - x) ** 2)


def test_zero_matrix():
    enc, y, _ = round_trip(np.zeros((3, 20)), {"bits": 2, "trellis_L": 8})
    assert np.all(y == 0)


@pytest.mark.parametrize("opts,needle", [
    ({"bits": 2.5}, "integer"), ({"bits": 0}, "integer"), ({"bits": 5}, "integer"),
    ({"bits": 2, "code": "foo"}, "--code"), ({"bits": 4, "code": "hyb", "trellis_L": 7}, "--trellis-L"),
    ({"bits": 2, "trellis_L": 17}, "--trellis-L"),
])
def test_bad_options(opts, needle):
    with pytest.raises(InputError, match=needle):
        CODEC.encode(np.ones((4, 4)), opts)


# ---- the command line ------------------------------------------------------------------------------


SHAPES = [("a.weight", (40, 96), "F32"), ("b.weight", (33, 17), "BF16"), ("norm", (17,), "F16")]


def test_cli_round_trip(tmp_path, capsys):
    src = tmp_path / "in.safetensors"
    arrays = write_weights(src, SHAPES)
    out = tmp_path / "out.pvqc"
    args = ["encode", src, out, "--codec", "trellis", "--bits", "3", "--trellis-L", "8", "--code", "1mad", "-q"]
    assert main([str(a) for a in args]) == 0
    again = tmp_path / "again.pvqc"
    assert main([str(a) for a in args[:2]] + [str(again)] + [str(a) for a in args[3:]]) == 0
    assert out.read_bytes() == again.read_bytes()  # deterministic

    assert main(["info", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    t = {x["name"]: x for x in doc["tensors"]}
    cd = t["a.weight"]["codec"]
    assert (cd["name"], cd["code"], cd["L"], cd["k"], cd["V"], cd["tile"]) == ("trellis", "1mad", 8, 3, 1, "16x16")
    assert t["a.weight"]["payloads"][0]["stream"] == "trellis"
    assert main(["info", str(out)]) == 0
    assert "trellis(code=1mad, L=8, k=3" in capsys.readouterr().out
    assert main(["verify", str(out)]) == 0

    dec = tmp_path / "dec.safetensors"
    assert main(["decode", str(out), str(dec), "-q"]) == 0
    with SafetensorsSource.open(dec) as b:
        for n in ("a.weight", "b.weight"):
            y = b.read_float32(n).astype(np.float64)
            x = np.asarray(SafetensorsSource.open(src).read_float32(n), np.float64)
            assert 10 * np.log10(np.sum(x**2) / np.sum((x - y) ** 2)) > 10.0, n
        assert b.read("norm").tobytes() == arrays["norm"].tobytes()


def test_cli_rejects_fractional_bits(tmp_path, capsys):
    """A fractional --bits is an average that the bit allocator meets (tests/test_allocate.py);
    one below the lowest rate is an error."""
    src = tmp_path / "in.safetensors"
    write_weights(src, SHAPES)
    code = main(["encode", str(src), str(tmp_path / "o.pvqc"), "--codec", "trellis", "--bits", "0.5"])
    err = capsys.readouterr().err
    assert code == 1 and "lowest rates" in err and "Traceback" not in err
    assert not (tmp_path / "o.pvqc").exists()


def test_spec_worked_tile_example():
    """Spec 6.3.8: one 16 x 16 tile, the words 12345678 9ABCDEF0 0F1E2D3C 4B5A6978 four times."""
    words = np.array([0x12345678, 0x9ABCDEF0, 0x0F1E2D3C, 0x4B5A6978] * 4, np.uint32)
    assert np.float32(0.00676).view(np.uint32) == 0x3BDD82FD
    y = CODEC.decode(params(code=0, L=12, k=2, scale=0.00676), 16, 16, "float32", [words])
    got = [int(y[t // 16, t % 16].view(np.uint32)) for t in (0, 1, 2, 255)]
    assert got == [0xBE5696E5, 0xBE0385C6, 0x4001CAC0, 0xBF5D82FD]
    s = words_to_states(words.reshape(1, -1), 12, 2)[0]
    assert [int(v) for v in s[[0, 1, 2, 255]]] == [0x123, 0x48D, 0x234, 0x048]
    s16 = words_to_states(words.reshape(1, -1), 16, 4)[0]
    assert [int(v) for v in s16[[0, 1, 127]]] == [0x1234, 0x2345, 0x8123]
    y2 = CODEC.decode(params(code=2, L=16, k=2, scale=1.0), 16, 16, "float32", [words])
    assert y2[0, :4].tolist() == [0.54931640625, -0.70068359375, 2.05078125, 0.826171875]


def test_bands_do_not_change_results(monkeypatch):
    """The encoder and decoder work on bands of tile rows; one tile row at a time gives
    the same bytes and values."""
    import pvqcodec.codecs.trellis as tr

    x = np.random.default_rng(9).standard_normal((50, 70))
    w = np.random.default_rng(10).uniform(0.5, 2.0, x.shape)
    opts = {"bits": 2, "code": "3inst", "trellis_L": 8, "row_scales": True}
    enc0, y0, p0 = round_trip(x, opts, weighting=w)
    monkeypatch.setattr(tr, "ENCODE_BAND_WEIGHTS", 1)
    monkeypatch.setattr(tr, "DECODE_BAND_WEIGHTS", 1)
    enc1, y1, p1 = round_trip(x, opts, weighting=w)
    assert all(np.array_equal(a, b) for a, b in zip(p0, p1))
    assert np.array_equal(y0.view(np.uint32), y1.view(np.uint32))
