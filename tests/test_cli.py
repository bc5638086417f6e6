"""The command line as a user runs it: round trips and every bad-input case of the issue.
Each bad input must give one clear line on stderr, a non-zero exit, no traceback and
no output file."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pvqcodec.cli import main
from pvqcodec.container.reader import Container
from pvqcodec.safetensors_io import SafetensorsSource, write_safetensors

from helpers import ODD_SHAPES, rebuild, write_weights


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    d = tmp_path_factory.mktemp("enc")
    src = d / "in.safetensors"
    arrays = write_weights(src, metadata={"format": "pt"})
    out = d / "out.pvqc"
    assert main(["encode", str(src), str(out), "--bits", "2", "-q"]) == 0
    return src, out, arrays


def run(args, capsys):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_clean_error(code, err, *needles):
    assert code == 1
    assert "Traceback" not in err
    lines = [l for l in err.strip().splitlines() if l.startswith("pvqcodec:")]
    assert lines, err
    for n in needles:
        assert n in err, (n, err)


# ---- round trip -------------------------------------------------------------------------


def test_round_trip_odd_shapes(encoded, tmp_path, capsys):
    src, out, arrays = encoded
    dec = tmp_path / "dec.safetensors"
    code, stdout, _ = run(["decode", out, dec], capsys)
    assert code == 0
    with SafetensorsSource.open(src) as a, SafetensorsSource.open(dec) as b:
        assert a.names == b.names
        assert b.metadata == {"format": "pt"}
        for n in a.names:
            ia, ib = a.info(n), b.info(n)
            assert ia.shape == ib.shape and ia.dtype == ib.dtype, n
            x, y = a.read_float32(n), b.read_float32(n)
            if len(ia.shape) < 2:  # raw: bit-identical
                assert a.read(n).tobytes() == b.read(n).tobytes()
            else:
                sqnr = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((x - y).astype(np.float64) ** 2))
                # 2 bits per weight on Gaussian data: ~9.9 dB; tiny tensors pay for side information
                assert sqnr > (9.0 if x.size > 100_000 else 5.0), (n, sqnr)


def test_decode_dtype_option_and_raw_tensors_keep_theirs(encoded, tmp_path, capsys):
    _, out, _ = encoded
    dec = tmp_path / "bf.safetensors"
    assert run(["decode", out, dec, "--dtype", "bfloat16", "-q"], capsys)[0] == 0
    with SafetensorsSource.open(dec) as b:
        assert b.info("a.weight").dtype == "BF16"
        assert b.info("norm.weight").dtype == "F32"
        assert b.info("bias16").dtype == "F16"


def test_decode_matches_api_float32_bits(encoded, tmp_path, capsys):
    import pvqcodec

    _, out, _ = encoded
    dec = tmp_path / "f32.safetensors"
    assert run(["decode", out, dec, "--dtype", "float32", "-q"], capsys)[0] == 0
    with pvqcodec.open(out) as f, SafetensorsSource.open(dec) as b:
        for n in f.names:
            assert f.decode(n).tobytes() == b.read_float32(n).tobytes()


def test_encoding_is_deterministic(encoded, tmp_path, capsys):
    src, out, _ = encoded
    again = tmp_path / "again.pvqc"
    assert run(["encode", src, again, "--bits", "2", "-q"], capsys)[0] == 0
    assert again.read_bytes() == out.read_bytes()


def test_summary_and_info(encoded, tmp_path, capsys):
    src, _, _ = encoded
    code, stdout, _ = run(["encode", src, tmp_path / "x.pvqc", "--bits", "3", "--group-size", "16",
                           "--keep", "^b\\."], capsys)
    assert code == 0
    assert "SQNR dB" in stdout and "whole file" in stdout and "bits per weight" in stdout
    line = [l for l in stdout.splitlines() if l.startswith("b.weight")][0]
    assert "raw" in line
    code, stdout, _ = run(["info", tmp_path / "x.pvqc", "--json"], capsys)
    doc = json.loads(stdout)
    a = [t for t in doc["tensors"] if t["name"] == "a.weight"][0]
    assert a["codec"]["name"] == "pvq" and a["codec"]["group_size"] == 16
    assert a["transform"]["name"] == "rht"
    assert a["bits_per_weight"] <= 3.0
    code, stdout, _ = run(["info", tmp_path / "x.pvqc"], capsys)
    assert code == 0 and "a.weight" in stdout


def test_fractional_rate_reported_exactly(encoded, tmp_path, capsys):
    src, _, _ = encoded
    out = tmp_path / "f.pvqc"
    assert run(["encode", src, out, "--bits", "2.25", "-q"], capsys)[0] == 0
    with Container.open(out) as c:
        rec = c.tensor("a.weight")
        bpw = 8 * rec.coded_bytes / rec.numel
    assert 2.0 < bpw <= 2.25


def test_verify_ok(encoded, capsys):
    code, stdout, _ = run(["verify", encoded[1]], capsys)
    assert code == 0 and "OK" in stdout


def test_sharded_directory_input(tmp_path, capsys):
    spec1 = [("m.layers.0.w", (64, 64), "F32")]
    spec2 = [("m.layers.1.w", (64, 64), "F16")]
    write_weights(tmp_path / "model-00001-of-00002.safetensors", spec1, seed=1)
    write_weights(tmp_path / "model-00002-of-00002.safetensors", spec2, seed=2)
    index = {"metadata": {}, "weight_map": {"m.layers.0.w": "model-00001-of-00002.safetensors",
                                            "m.layers.1.w": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    out = tmp_path / "sharded.pvqc"
    assert run(["encode", tmp_path, out, "-q"], capsys)[0] == 0
    with Container.open(out) as c:
        assert c.names == ["m.layers.0.w", "m.layers.1.w"]


# ---- bad input: each case of the issue ---------------------------------------------------


def test_missing_input(tmp_path, capsys):
    code, _, err = run(["encode", tmp_path / "nope.safetensors", tmp_path / "o.pvqc"], capsys)
    assert_clean_error(code, err, "nope.safetensors")
    for cmd in ("decode", "info", "verify"):
        args = [cmd, tmp_path / "nope.pvqc"] + ([tmp_path / "o.safetensors"] if cmd == "decode" else [])
        code, _, err = run(args, capsys)
        assert_clean_error(code, err, "nope.pvqc")
    assert not (tmp_path / "o.pvqc").exists()


def test_not_a_safetensors_file(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"this is not a weight file at all" * 10)
    code, _, err = run(["encode", bad, tmp_path / "o.pvqc"], capsys)
    assert_clean_error(code, err, "bad.safetensors")
    assert not (tmp_path / "o.pvqc").exists()


@pytest.mark.parametrize("cmd", ["info", "verify", "decode"])
def test_truncated_pvqc(encoded, tmp_path, capsys, cmd):
    data = encoded[1].read_bytes()
    for cut in (10, 100, len(data) // 2, len(data) - 1):
        bad = tmp_path / "trunc.pvqc"
        bad.write_bytes(data[:cut])
        args = [cmd, bad] + ([tmp_path / "o.safetensors"] if cmd == "decode" else [])
        code, _, err = run(args, capsys)
        assert_clean_error(code, err, "trunc")
        assert not (tmp_path / "o.safetensors").exists()


def test_wrong_magic(encoded, tmp_path, capsys):
    data = bytearray(encoded[1].read_bytes())
    data[:4] = b"GGUF"
    bad = tmp_path / "m.pvqc"
    bad.write_bytes(bytes(data))
    code, _, err = run(["info", bad], capsys)
    assert_clean_error(code, err, "magic")


def test_newer_major_version(encoded, tmp_path, capsys):
    bad = tmp_path / "v.pvqc"
    bad.write_bytes(rebuild(encoded[1].read_bytes(), mutate_header=lambda h: h.update(version_major=2)))
    code, _, err = run(["decode", bad, tmp_path / "o.safetensors"], capsys)
    assert_clean_error(code, err, "version 2.0", "1.x")


def test_unknown_codec_and_coding(encoded, tmp_path, capsys):
    data = encoded[1].read_bytes()

    def codec(block):
        block.tensors[0].codec_id = 77

    def coding(block):
        block.tensors[0].payloads[0].coding = 9

    for mut, needle in ((codec, "codec id 77"), (coding, "coding id 9")):
        bad = tmp_path / "u.pvqc"
        bad.write_bytes(rebuild(data, mut))
        code, _, err = run(["verify", bad], capsys)
        assert_clean_error(code, err, needle)


def test_checksum_mismatch_names_tensor(encoded, tmp_path, capsys):
    data = bytearray(encoded[1].read_bytes())
    with Container.open(encoded[1]) as c:
        rec = c.tensor("b.weight")
        off = rec.payloads[2].offset + 5
    data[off] ^= 0x10
    bad = tmp_path / "crc.pvqc"
    bad.write_bytes(bytes(data))
    code, _, err = run(["verify", bad], capsys)
    assert_clean_error(code, err, "b.weight", "CRC")
    out = tmp_path / "o.safetensors"
    code, _, err = run(["decode", bad, out], capsys)
    assert_clean_error(code, err, "b.weight")
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    # The header's own checksum.
    data2 = bytearray(encoded[1].read_bytes())
    data2[50] ^= 1
    bad.write_bytes(bytes(data2))
    code, _, err = run(["info", bad], capsys)
    assert_clean_error(code, err, "CRC")


def test_zero_size_tensor(tmp_path, capsys):
    src = tmp_path / "z.safetensors"
    write_safetensors(src, [("empty", "F32", (0, 4), lambda: np.zeros((0, 4), np.float32))])
    code, _, err = run(["encode", src, tmp_path / "o.pvqc"], capsys)
    assert_clean_error(code, err, "empty", "no elements")
    assert not (tmp_path / "o.pvqc").exists()


def test_non_float_tensor(tmp_path, capsys):
    src = tmp_path / "i.safetensors"
    write_safetensors(src, [("ids", "I64", (3,), lambda: np.arange(3, dtype=np.int64)),
                            ("w", "F32", (4, 4), lambda: np.ones((4, 4), np.float32))])
    code, _, err = run(["encode", src, tmp_path / "o.pvqc"], capsys)
    assert_clean_error(code, err, "ids", "I64", "--exclude")
    assert run(["encode", src, tmp_path / "o.pvqc", "--exclude", "^ids$", "-q"], capsys)[0] == 0


def test_unwritable_output(encoded, tmp_path, capsys):
    src, out, _ = encoded
    code, _, err = run(["encode", src, tmp_path / "no" / "such" / "dir" / "o.pvqc"], capsys)
    assert_clean_error(code, err, "cannot write")
    code, _, err = run(["decode", out, tmp_path / "missing" / "o.safetensors"], capsys)
    assert_clean_error(code, err, "cannot write")


def test_bad_options(encoded, tmp_path, capsys):
    src = encoded[0]
    for args, needle in ((["--bits", "0"], "--bits"), (["--keep", "("], "--keep"),
                         (["--group-size", "1000"], "group"), (["--gain-bits", "12"], "gain-bits"),
                         (["--rht-block", "x"], "--rht-block")):
        code, _, err = run(["encode", src, tmp_path / "o.pvqc", *args], capsys)
        assert_clean_error(code, err, needle)
    assert not (tmp_path / "o.pvqc").exists()


def test_console_script_exit_codes(encoded, tmp_path):
    """The installed entry point, as a user runs it."""
    ok = subprocess.run([sys.executable, "-m", "pvqcodec", "verify", str(encoded[1])], capture_output=True, text=True)
    assert ok.returncode == 0
    bad = subprocess.run([sys.executable, "-m", "pvqcodec", "info", str(tmp_path / "none.pvqc")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1
    usage = subprocess.run([sys.executable, "-m", "pvqcodec", "encode"], capture_output=True, text=True)
    assert usage.returncode == 2
