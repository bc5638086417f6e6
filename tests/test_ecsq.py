"""The ecsq codec (spec codecs/ecsq.md, section 6.6): parameter block, the decoded value
against an independent scalar decoder written from the spec, the encoder's rate control
and weighting, and the CLI round trip."""

import json
import struct

import numpy as np
import pytest

from pvqcodec.cli import main
from pvqcodec.codecs import codec_by_id, codec_by_name
from pvqcodec.codecs.ecsq import coded_size, decode_ecsq_values
from pvqcodec.codecs.ecsq.quantizer import zigzag
from pvqcodec.errors import InputError, ParamsInvalid
from pvqcodec.safetensors_io import SafetensorsSource

from helpers import write_weights

CODEC = codec_by_name("ecsq")


def block(step=0.5, flags=0, reserved=0, offsets=()):
    return struct.pack("<fBBH", step, flags, reserved, len(offsets)) + struct.pack(f"<{len(offsets)}f", *offsets)


def test_registered_as_id_5():
    assert codec_by_id(5) is CODEC and CODEC.name == "ecsq" and CODEC.quantizes


# ---- parameter block (6.6.1) -------------------------------------------------------------------


def test_params_round_trip_and_layout():
    p = {"step": np.float32(0.75), "offsets": np.array([0.25, -0.5, 0.125], np.float32)}
    raw = CODEC.build_params(p)
    assert raw == block(0.75, offsets=(0.25, -0.5, 0.125))
    assert len(raw) == 8 + 4 * 3
    q = CODEC.parse_params(raw, 3, 4, "float32")
    assert float(q["step"]) == 0.75 and q["offsets"].tolist() == [0.25, -0.5, 0.125]
    assert CODEC.parse_params(block(2.0), 1, 1, "float16")["offsets"].size == 0


@pytest.mark.parametrize("raw,needle", [
    (block(0.0), "step"),
    (block(-1.0), "step"),
    (block(float("inf")), "step"),
    (block(float("nan")), "step"),
    (block(1.0, flags=1), "flags"),
    (block(1.0, reserved=2), "reserved"),
    (block(1.0, offsets=(0.1, float("nan"))), "offset 1"),
    (block(1.0, offsets=(0.1,)) + b"\0", "parameter block"),
    (block(1.0, offsets=(0.1, 0.2))[:-2], "parameter block"),
    (b"\0" * 5, "parameter block"),
])
def test_params_rejections(raw, needle):
    with pytest.raises(ParamsInvalid, match=needle):
        CODEC.parse_params(raw, 2, 2, "float32")


def test_one_stream_of_16_bit_symbols():
    (spec,) = CODEC.streams({"step": np.float32(1), "offsets": np.zeros(0, np.float32)}, 7, 9, "bfloat16")
    assert (spec.name, spec.count, spec.width, spec.bounds) == ("indices", 63, 16, None)


# ---- decoded value (6.6.3, 6.6.4): an independent decoder, one value at a time -----------------------


def f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]  # round a Python float to float32


def spec_value(s, step, offsets):
    """Spec 6.6.3 / 6.6.4 with Python floats rounded to float32 after each operation
    (each exact result of two float32 operands is representable in a double, so one
    rounding to float32 is the float32 operation)."""
    m = (s + 1) // 2
    negative = s != 0 and s % 2 == 0
    if m == 0:
        return 0.0
    off = offsets[min(m, len(offsets)) - 1] if offsets else 0.0
    t = f32(float(m) - off)
    a = f32(t * step)
    return -a if negative else a


@pytest.mark.parametrize("step,offsets", [
    (0.3, ()),
    (1.0825, (0.137, 0.081, 0.0612)),
    (3.1e-5, (0.31,) * 5 + (-0.2,)),
    (7.0e30, (1e-3, 2.5)),
])
def test_decoded_values_bit_exact(step, offsets):
    step = f32(step)
    offsets = tuple(f32(o) for o in offsets)
    rng = np.random.default_rng(7)
    sym = np.concatenate([np.arange(0, 40), [65535, 65534, 65533, 32768, 32767], rng.integers(0, 65536, 400)])
    got = decode_ecsq_values(sym.astype(np.uint16), np.float32(step), np.array(offsets, np.float32))
    want = np.array([spec_value(int(s), step, offsets) for s in sym], np.float32)
    assert got.dtype == np.float32
    assert got.view(np.uint32).tolist() == want.view(np.uint32).tolist()  # +0.0 too, never -0.0


def test_symbol_table_of_the_spec():
    q = np.array([0, 1, -1, 2, -2, 3, 32767, -32767])
    assert zigzag(q).tolist() == [0, 1, 2, 3, 4, 5, 65533, 65534]
    vals = decode_ecsq_values(np.array([0, 1, 2, 3, 4, 5, 65535], np.uint16), np.float32(1), np.zeros(0, np.float32))
    assert vals.tolist() == [0.0, 1.0, -1.0, 2.0, -2.0, 3.0, 32768.0]


# ---- encoder ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits,mse_max", [(2.0, 0.0935), (3.0, 0.0236), (2.5, 0.047)])
def test_rate_control_meets_the_coded_target(bits, mse_max):
    """The file's bytes for the tensor (parameter block + rans payload) are within 1 percent
    of bits * n / 8, and the error is near ECSQ's (0.0889 at 2 bits, 0.0222 at 3 bits; the
    chunk states of 2^17 weights add 0.016 bit)."""
    rows, cols = 128, 1024
    x = np.random.default_rng(11).standard_normal((rows, cols))
    enc = CODEC.encode(x, {"bits": bits})
    params = CODEC.parse_params(CODEC.build_params(enc.params), rows, cols, "float32")
    size = coded_size(enc.streams[0], params, CODEC, rows, cols)
    assert abs(8 * size / x.size - bits) <= 0.01 * bits
    assert abs(enc.info["coded_bits"] - 8 * size / x.size) < 1e-12
    y = CODEC.decode(params, rows, cols, "float32", enc.streams)
    mse = float(np.mean((x - y) ** 2))
    assert mse < mse_max
    assert mse > 2.0 ** (-2 * bits)  # sanity: never below the rate-distortion bound


def test_encoder_is_deterministic_and_scale_invariant():
    x = np.random.default_rng(2).standard_normal((64, 512))
    a = CODEC.encode(x, {"bits": 3})
    b = CODEC.encode(x, {"bits": 3})
    c = CODEC.encode(x * 4.0, {"bits": 3})  # a power of two: the same symbols, step times 4
    assert np.array_equal(a.streams[0], b.streams[0]) and a.params["step"] == b.params["step"]
    assert np.array_equal(a.streams[0], c.streams[0]) and float(c.params["step"]) == 4 * float(a.params["step"])


def test_weighting_moves_error_to_unweighted_columns():
    """One step for all values: the weighting acts through the rate term only (a weight w
    divides lambda), so heavily weighted values round nearer and light ones pay for it."""
    rows, cols = 64, 1024
    x = np.random.default_rng(4).standard_normal((rows, cols))
    w = np.ones((1, cols))
    w[0, : cols // 2] = 30.0
    enc = CODEC.encode(x, {"bits": 2}, weighting=w)
    plain = CODEC.encode(x, {"bits": 2})
    p = CODEC.parse_params(CODEC.build_params(enc.params), rows, cols, "float32")
    pp = CODEC.parse_params(CODEC.build_params(plain.params), rows, cols, "float32")
    e = (x - CODEC.decode(p, rows, cols, "float32", enc.streams)) ** 2
    e0 = (x - CODEC.decode(pp, rows, cols, "float32", plain.streams)) ** 2
    assert e[:, : cols // 2].mean() < 0.99 * e0[:, : cols // 2].mean()
    assert e[:, cols // 2 :].mean() > e0[:, cols // 2 :].mean()


def test_tensor_too_small_for_its_target_keeps_the_predicted_step():
    """7 x 37 at 2 bits: 65 bytes, less than the rans header and lane states; the encoder
    keeps quantizing at the step the rate predicts instead of rounding everything to 0."""
    x = np.random.default_rng(8).standard_normal((7, 37))
    enc = CODEC.encode(x, {"bits": 2})
    p = CODEC.parse_params(CODEC.build_params(enc.params), 7, 37, "float32")
    y = CODEC.decode(p, 7, 37, "float32", enc.streams)
    assert float(np.mean((x - y) ** 2)) < 0.15 * float(np.mean(x * x))
    assert enc.info["coded_bits"] > 2


def test_zero_tensor_and_bad_options():
    enc = CODEC.encode(np.zeros((3, 5)), {"bits": 2})
    p = CODEC.parse_params(CODEC.build_params(enc.params), 3, 5, "float32")
    assert np.all(CODEC.decode(p, 3, 5, "float32", enc.streams) == 0)
    for bad in ("x", 0.1, 13, None):
        with pytest.raises(InputError):
            CODEC.encode(np.ones((2, 2)), {"bits": bad})
    with pytest.raises(InputError):
        CODEC.encode(np.ones((2, 2)), {"bits": 2}, weighting=-np.ones((2, 2)))


# ---- the command line ----------------------------------------------------------------------------------

SHAPES = [("a.weight", (96, 512), "F32"), ("b.weight", (33, 17), "BF16"), ("norm", (17,), "F16")]


def test_cli_round_trip(tmp_path, capsys):
    src = tmp_path / "in.safetensors"
    arrays = write_weights(src, SHAPES)
    out = tmp_path / "out.pvqc"
    args = ["encode", str(src), str(out), "--codec", "ecsq", "--bits", "3", "-q"]
    assert main(args) == 0
    again = tmp_path / "again.pvqc"
    assert main(args[:2] + [str(again)] + args[3:]) == 0
    assert out.read_bytes() == again.read_bytes()  # deterministic
    assert main(["info", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    t = {x["name"]: x for x in doc["tensors"]}
    assert t["a.weight"]["codec"]["name"] == "ecsq"
    assert t["a.weight"]["payloads"][0]["stream"] == "indices"
    assert main(["verify", str(out)]) == 0
    dec = tmp_path / "dec.safetensors"
    assert main(["decode", str(out), str(dec), "-q"]) == 0
    with SafetensorsSource.open(dec) as b, SafetensorsSource.open(src) as a:
        x = np.asarray(a.read_float32("a.weight"), np.float64)
        y = b.read_float32("a.weight").astype(np.float64)
        assert 10 * np.log10(np.sum(x**2) / np.sum((x - y) ** 2)) > 15.0  # 3 bits: about 16.5 dB
        assert b.read("norm").tobytes() == arrays["norm"].tobytes()
