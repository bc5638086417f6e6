"""The lattice codec (codec id 3, spec codecs/lattice.md): parameter block, streams, the
bit-exact decoded value, the encoder (scales, weights, row scales, padding) and the CLI."""

import json

import numpy as np
import pytest

from pvqcodec.cli import main
from pvqcodec.codecs import codec_by_id, codec_by_name
from pvqcodec.codecs.lattice import e8p, stages
from pvqcodec.coding import RawCoding
from pvqcodec.errors import InputError, ParamsInvalid, PayloadCorrupt
from pvqcodec.safetensors_io import SafetensorsSource

from helpers import write_weights

CODEC = codec_by_name("lattice")
LLOYD_MAX = {3: 0.03454, 4: 0.009497}


def roundtrip(x, options, weighting=None):
    """Encode, pack, unpack and decode like a file would; returns (decoded, rate, encoded)."""
    rows, cols = x.shape
    enc = CODEC.encode(np.asarray(x, np.float64), options, weighting)
    specs = CODEC.streams(enc.params, rows, cols, "float32")
    assert len(specs) == len(enc.streams)
    payloads = [RawCoding.encode(s, sp) for s, sp in zip(enc.streams, specs)]
    raw = CODEC.build_params(enc.params)
    params = CODEC.parse_params(raw, rows, cols, "float32")
    y = CODEC.decode(params, rows, cols, "float32", [RawCoding.decode(p, sp) for p, sp in zip(payloads, specs)])
    rate = 8 * (sum(p.size for p in payloads) + len(raw)) / x.size
    return y, rate, enc


# ---- parameter block and streams -------------------------------------------------------------


def test_registry_entry():
    assert codec_by_id(3) is CODEC and CODEC.name == "lattice" and CODEC.quantizes


@pytest.mark.parametrize("k,rows", [(1, False), (2, True), (3, False), (3, True)])
def test_params_round_trip(k, rows):
    p = {"stages": k, "row_scales": rows, "scales": np.array([1.5, -0.25, 3e-7][:k], np.float32)}
    raw = CODEC.build_params(p)
    assert len(raw) == 2 + 4 * k
    assert raw[0] == k and raw[1] == (1 if rows else 0)
    q = CODEC.parse_params(raw, 4, 16, "float32")
    assert q["stages"] == k and q["row_scales"] == rows and np.array_equal(q["scales"], p["scales"])


@pytest.mark.parametrize("raw,needle", [
    (bytes([0, 0]), "stages 0"),
    (bytes([4, 0]) + bytes(16), "stages 4"),
    (bytes([1, 2]) + np.float32(1).tobytes(), "reserved"),
    (bytes([1, 0x80]) + np.float32(1).tobytes(), "reserved"),
    (bytes([2, 0]) + np.float32(1).tobytes() + np.float32(np.nan).tobytes(), "scale 2"),
    (bytes([1, 0]) + np.float32(np.inf).tobytes(), "scale 1"),
    (bytes([2, 0]) + np.float32(1).tobytes(), "parse"),  # one scale short
    (bytes([1, 0]) + np.float32(1).tobytes() + b"\0", "bytes"),  # a byte over
    (b"", "parse"),
])
def test_params_rejected(raw, needle):
    with pytest.raises(ParamsInvalid, match=needle):
        CODEC.parse_params(raw, 2, 8, "float32")


def test_streams():
    p = {"stages": 3, "row_scales": True, "scales": np.ones(3, np.float32)}
    specs = CODEC.streams(p, 5, 17, "bfloat16")  # 3 groups per row, the last padded by 7
    assert [(s.name, s.count, s.width) for s in specs] == [
        ("row_scales", 5, 16), ("patterns", 15, 8), ("signs", 15, 8), ("stage2", 15, 8), ("stage3", 15, 8)]
    p = {"stages": 1, "row_scales": False, "scales": np.ones(1, np.float32)}
    assert [s.name for s in CODEC.streams(p, 1, 8, "float32")] == ["patterns", "signs"]


# ---- the decoded value (spec 6.4.6) ----------------------------------------------------------------


def spec_decode(params, rows, cols, streams):
    """Section 6.4.6 written out with scalar float32 arithmetic, one value at a time."""
    f32 = np.float32
    k = params["stages"]
    pos = 1 if params["row_scales"] else 0
    r = streams[0].view(np.float16) if params["row_scales"] else None
    gpr = -(-cols // 8)
    out = np.zeros((rows, cols), np.float32)
    pats = e8p.PATTERNS2.astype(int)
    for row in range(rows):
        for c in range(gpr):
            g = row * gpr + c
            a, b = int(streams[pos][g]), int(streams[pos + 1][g])
            p = bin(b).count("1") % 2
            m = b ^ p
            base = [x / 2 for x in pats[a]]
            if sum(base) % 2 == 1:
                base[7] = -base[7]
            for i in range(8):
                col = 8 * c + i
                point = f32((-base[i] if (m >> i) & 1 else base[i]) + (-0.25 if p else 0.25))
                v = f32(point * params["scales"][0])
                for j in range(1, k):
                    v = f32(v + f32(stages.STAGE_U[int(streams[pos + 1 + j][g]), i] * params["scales"][j]))
                if r is not None:
                    v = f32(v * f32(r[row]))
                if col < cols:
                    out[row, col] = v
    return out


@pytest.mark.parametrize("k,rows_on", [(1, False), (2, True), (3, False), (3, True)])
def test_decode_is_the_spec_arithmetic(k, rows_on):
    rng = np.random.default_rng(k)
    rows, cols = 3, 13
    groups = rows * 2
    params = {"stages": k, "row_scales": rows_on,
              "scales": rng.uniform(0.1, 3.0, k).astype(np.float32) * np.float32([1, -1, 1][:k])}
    streams = [rng.uniform(0.2, 4, rows).astype(np.float16).view(np.uint16)] if rows_on else []
    streams += [rng.integers(0, 256, groups).astype(np.uint8) for _ in range(k + 1)]
    got = CODEC.decode(params, rows, cols, "float32", streams)
    assert got.dtype == np.float32 and got.shape == (rows, cols)
    assert got.tobytes() == spec_decode(params, rows, cols, streams).tobytes()


def test_worked_examples_of_the_spec():
    """Spec 6.4.7: one group, three stages; exact with dyadic scales, then bit patterns."""
    streams = [np.array([0xE2], np.uint8), np.array([0xA5], np.uint8),
               np.array([0x02], np.uint8), np.array([0xFF], np.uint8)]
    params = {"stages": 3, "row_scales": False, "scales": np.array([1.125, 0.5625, 0.28125], np.float32)}
    got = CODEC.decode(params, 1, 8, "float32", streams)[0]
    assert got.tolist() == [-117 / 64, 2673 / 2048, -1431 / 4096, 3285 / 4096, 1683 / 2048, -297 / 1024,
                            4599 / 4096, 5769 / 4096]
    scales = np.array([0x3F917F34, 0x3F12CDF0, 0x3E95EB4D], np.uint32).view(np.float32)
    params = {"stages": 3, "row_scales": True, "scales": scales}
    got = CODEC.decode(params, 1, 8, "float32", [np.array([0x3B33], np.uint16)] + streams)[0]
    assert [hex(v) for v in got.view(np.uint32)] == [
        "0xbfd3ae28", "0x3f96e422", "0xbea416c2", "0x3f3a0ed7", "0x3f3ebc3d", "0xbe880662", "0x3f836f39", "0x3fa4bf7d"]


def test_corrupt_row_scale():
    params = {"stages": 1, "row_scales": True, "scales": np.ones(1, np.float32)}
    streams = [np.array([0x3C00, 0x7C00], np.uint16), np.zeros(2, np.uint8), np.zeros(2, np.uint8)]
    with pytest.raises(PayloadCorrupt, match="row 1"):
        CODEC.decode(params, 2, 8, "float32", streams)


# ---- the encoder ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gaussian():
    return np.random.default_rng(0).standard_normal((64, 4096))


@pytest.mark.parametrize("bits,bound", [(2, 0.0925), (3, LLOYD_MAX[3] * 10 ** -0.1), (4, LLOYD_MAX[4] * 10 ** -0.1)])
def test_gaussian_mse(gaussian, bits, bound):
    """2 bits: E8P's optimum (about 0.0914, sampling noise allowed); 3 and 4 bits: at least
    1 dB below the Lloyd-Max scalar quantizer (0.0274 and 0.00755)."""
    y, rate, enc = roundtrip(gaussian, {"bits": bits})
    mse = float(np.mean((y - gaussian) ** 2))
    assert mse < bound, mse
    assert bits < rate < bits + 0.001
    assert enc.info["stages"] == bits - 1 and not enc.info["row_scales"]


def test_scale_search_finds_the_minimum(gaussian):
    """The chosen first-stage scale beats 5 % more or less (for fixed nested scales)."""
    x = gaussian[:16].reshape(-1, 8)
    for k in (1, 2, 3):
        s = CODEC.encode(gaussian[:16], {"bits": k + 1}).info["scale"] * float(np.sqrt(np.mean(gaussian[:16] ** 2)))

        def err(s):
            cw, lab, _ = stages.lattice_search(x / s, k)
            return float(np.mean((x - s * stages.reconstruct_units(cw, lab)) ** 2))

        assert err(s) <= min(err(s * 0.95), err(s * 1.05))


def test_decoder_round_trip_of_codes():
    """Codes -> decoded tensor -> search at the tensor's nested scales -> the same codes."""
    rng = np.random.default_rng(7)
    rows, cols = 32, 64
    for k in (1, 2, 3):
        s1 = np.float32(0.8125)
        params = {"stages": k, "row_scales": False, "scales": np.array([s1 / 2**j for j in range(k)], np.float32)}
        streams = [rng.integers(0, 256, rows * 8).astype(np.uint8) for _ in range(k + 1)]
        y = CODEC.decode(params, rows, cols, "float32", streams)
        cw, lab, _ = stages.lattice_search(y.astype(np.float64).reshape(-1, 8) / float(s1), k)
        assert (cw >> 8 == streams[0]).all() and (cw & 0xFF == streams[1]).all()
        assert all((lab[:, j] == streams[2 + j]).all() for j in range(k - 1))


def test_weighting_lowers_the_weighted_error():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((32, 256))
    w = rng.uniform(0.05, 4.0, x.shape) ** 2
    for bits in (2, 3, 4):
        y0 = roundtrip(x, {"bits": bits})[0]
        y1 = roundtrip(x, {"bits": bits}, w)[0]
        assert np.sum(w * (y1 - x) ** 2) < 0.95 * np.sum(w * (y0 - x) ** 2)
    with pytest.raises(InputError, match="non-negative"):
        CODEC.encode(x, {"bits": 2}, -w)


def test_row_scales_when_they_pay():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 512)) * np.exp(rng.uniform(-2, 2, (64, 1)))
    y_auto, rate_auto, enc = roundtrip(x, {"bits": 3})
    assert enc.params["row_scales"] and enc.info["row_scales"]
    y_off, rate_off, enc_off = roundtrip(x, {"bits": 3, "row_scales": "off"})
    assert not enc_off.params["row_scales"]
    assert np.mean((y_auto - x) ** 2) < 0.5 * np.mean((y_off - x) ** 2)
    assert rate_auto == pytest.approx(rate_off + 16 / 512)
    # i.i.d. rows: not worth 16 bits a row
    assert not roundtrip(rng.standard_normal((64, 512)), {"bits": 3})[2].params["row_scales"]
    y_on, _, enc_on = roundtrip(rng.standard_normal((8, 64)), {"bits": 2, "row_scales": "on"})
    assert enc_on.params["row_scales"]


def test_padding_zero_rows_and_zero_tensor():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 13))
    x[2] = 0.0
    for bits in (2, 3, 4):
        y, rate, _ = roundtrip(x, {"bits": bits})
        assert y.shape == (6, 13)
        assert rate >= bits * 16 / 13  # two groups per row: the padding counts
        assert np.mean((y - x) ** 2) < 0.5 * np.mean(x**2)
        z, _, enc = roundtrip(np.zeros((3, 5)), {"bits": bits})
        assert not z.any() and not enc.params["scales"].any()


def test_bad_rate():
    with pytest.raises(InputError, match="2, 3 or 4"):
        CODEC.encode(np.ones((2, 8)), {"bits": 2.5})


# ---- command line ---------------------------------------------------------------------------------------

SHAPES = [("a.weight", (64, 203), "F32"), ("b.weight", (96, 64), "F16"), ("c.weight", (3, 5), "BF16"),
          ("norm.weight", (64,), "F32")]


@pytest.mark.parametrize("bits,sqnr", [(2, 9.5), (3, 14.5), (4, 20.0)])
def test_cli_round_trip(tmp_path, capsys, bits, sqnr):
    src = tmp_path / "in.safetensors"
    write_weights(src, SHAPES, seed=bits)
    out = tmp_path / "out.pvqc"
    assert main(["encode", str(src), str(out), "--codec", "lattice", "--bits", str(bits), "-q"]) == 0
    dec = tmp_path / "dec.safetensors"
    assert main(["decode", str(out), str(dec), "-q"]) == 0
    with SafetensorsSource.open(src) as a, SafetensorsSource.open(dec) as b:
        for n in a.names:
            x, y = a.read_float32(n).astype(np.float64), b.read_float32(n).astype(np.float64)
            if n == "norm.weight":
                assert a.read(n).tobytes() == b.read(n).tobytes()
            elif x.size > 1000:
                assert 10 * np.log10(np.sum(x * x) / np.sum((x - y) ** 2)) > sqnr, n
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    t = {t["name"]: t for t in doc["tensors"]}
    assert t["a.weight"]["codec"]["name"] == "lattice" and t["a.weight"]["codec"]["stages"] == bits - 1
    # 203 columns: 26 groups of 8 a row, the padding counted; so are the parameter blocks
    # (transform 16 bytes, codec 2 + 4 x stages bytes: under 0.02 bits per weight here)
    assert bits * 208 / 203 <= t["a.weight"]["bits_per_weight"] < bits * 208 / 203 + 0.02
    assert main(["verify", str(out)]) == 0


def test_cli_rejects_other_rates(tmp_path, capsys):
    """A fractional --bits is an average that the bit allocator meets (tests/test_allocate.py);
    one below the lowest rate is an error."""
    src = tmp_path / "in.safetensors"
    write_weights(src, SHAPES[:1])
    code = main(["encode", str(src), str(tmp_path / "o.pvqc"), "--codec", "lattice", "--bits", "1.5"])
    err = capsys.readouterr().err
    assert code == 1 and "lowest rates" in err and "Traceback" not in err
    assert not (tmp_path / "o.pvqc").exists()
