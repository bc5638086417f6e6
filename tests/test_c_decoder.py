"""The C reference decoder (ref_decoder_c/): built warning-free, bit-exact with the Python
decoder on every dtype, group size and rate, row ranges, the spec's check values, the
pvqdec command and the cffi binding."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pvqcodec.api import PvqcFile
from pvqcodec.cli import main
from pvqcodec.codecs.pvq.enumeration import pvq_count
from pvqcodec.safetensors_io import SafetensorsSource

from helpers import ODD_SHAPES, write_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CDIR = os.path.join(ROOT, "ref_decoder_c")
WERROR = ["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-ffp-contract=off"]

cdecoder = pytest.importorskip("pvqcodec.cdecoder")
needs_make = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                                reason="needs make and a C compiler")

# Smaller versions of helpers.ODD_SHAPES (same odd structure) for the rate/group-size grid.
SMALL_SHAPES = [
    ("a.weight", (192, 576), "F32"),
    ("b.weight", (576, 192), "F16"),
    ("c.weight", (3, 5), "BF16"),
    ("norm.weight", (576,), "F32"),
    ("bias16", (7,), "F16"),
    ("e3.weight", (4, 6, 32), "F32"),
]

# Odd shapes small enough for the trellis encoder (a Viterbi search per 16 x 16 tile).
TINY_SHAPES = [
    ("a.weight", (40, 72), "F32"),
    ("b.weight", (24, 30), "F16"),
    ("c.weight", (3, 5), "BF16"),
    ("norm.weight", (72,), "F32"),
]

# (label, shapes, encode arguments): PVQ at several group sizes and rates, one-limb and
# multi-limb shape indices (D=64 at 4 bits: 200+ bits; D=128), Paley and Sylvester blocks.
CONFIGS = [
    ("odd_d32_2bit", ODD_SHAPES, ["--bits", "2"]),
    ("d8_2.5bit", SMALL_SHAPES, ["--bits", "2.5", "--group-size", "8"]),
    ("d64_4bit", SMALL_SHAPES, ["--bits", "4", "--group-size", "64"]),
    ("d128_3bit", SMALL_SHAPES, ["--bits", "3", "--group-size", "128"]),
    ("d16_identity", SMALL_SHAPES, ["--bits", "2", "--group-size", "16", "--transform", "identity"]),
    ("d12_full_blocks", [("p.weight", (24, 36), "F32"), ("q.weight", (20, 28), "BF16")],
     ["--bits", "3", "--group-size", "12", "--rht-block", "full"]),
    # the trellis codec: every code, k = 1..4, partial tiles (odd shapes), row scales
    ("trellis_1mad_k2", SMALL_SHAPES, ["--codec", "trellis", "--bits", "2", "--trellis-L", "8"]),
    ("trellis_3inst_k3_rows", TINY_SHAPES, ["--codec", "trellis", "--bits", "3", "--trellis-L", "10", "--code", "3inst",
                                            "--trellis-row-scales"]),
    ("trellis_hyb_L16", TINY_SHAPES, ["--codec", "trellis", "--bits", "2", "--trellis-L", "16", "--code", "hyb"]),
    ("trellis_hyb_k1_identity", TINY_SHAPES, ["--codec", "trellis", "--bits", "1", "--trellis-L", "6", "--code", "hyb",
                                              "--transform", "identity"]),
    # the lattice codec: 1, 2 and 3 stages, with and without row scales
    ("lattice_2bit", SMALL_SHAPES, ["--codec", "lattice", "--bits", "2"]),
    ("lattice_3bit_rows", TINY_SHAPES, ["--codec", "lattice", "--bits", "3", "--lattice-row-scales", "on"]),
    ("lattice_4bit_identity", TINY_SHAPES, ["--codec", "lattice", "--bits", "4", "--transform", "identity"]),
]


def build(target, build_dir):
    """Run the Makefile's target into build_dir; returns the built file's path."""
    subprocess.run(["make", "-s", "-C", CDIR, f"BUILD={build_dir}", target], check=True,
                   capture_output=True, text=True)
    names = {"cli": "pvqdec", "asan": "pvqdec-asan", "ubsan": "pvqdec-ubsan", "selftest": "pvqc-selftest",
             "oomtest": "pvqc-oomtest", "fuzz": "fuzz_pvqc"}
    return os.path.join(build_dir, names[target])


@pytest.fixture(scope="module")
def pvqdec(tmp_path_factory):
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("needs make and a C compiler")
    return build("cli", str(tmp_path_factory.mktemp("cbuild")))


@pytest.fixture(scope="module", params=CONFIGS, ids=[c[0] for c in CONFIGS])
def encoded(request, tmp_path_factory):
    label, shapes, args = request.param
    d = tmp_path_factory.mktemp(label)
    src = d / "in.safetensors"
    write_weights(src, spec=shapes, seed=len(label))
    out = d / "out.pvqc"
    assert main(["encode", str(src), str(out), "-q", *args]) == 0
    return out


# ---- build ---------------------------------------------------------------------------------


@needs_make
def test_compiles_warning_free_with_werror(tmp_path):
    for src in ("pvqc.c", "pvqdec.c", "selftest.c", "rans_bench.c"):
        for opt in ("-O0", "-O2"):
            r = subprocess.run(["cc", *WERROR, opt, "-c", os.path.join(CDIR, src), "-o", str(tmp_path / "x.o")],
                               capture_output=True, text=True)
            assert r.returncode == 0, (src, opt, r.stderr)
            assert r.stderr == "", r.stderr
    if shutil.which("clang"):
        r = subprocess.run(["clang", *WERROR, "-O2", "-c", os.path.join(CDIR, "pvqc.c"), "-o", str(tmp_path / "y.o")],
                           capture_output=True, text=True)
        assert r.returncode == 0 and r.stderr == "", r.stderr


def test_binding_is_built_and_names_match_python_errors():
    from pvqcodec.errors import all_format_errors

    assert cdecoder.available()
    names = {cdecoder.error_name(c) for c in range(1, 15)}
    assert names == set(all_format_errors()) - {"format_error"}


# ---- the spec's check values through the decoder's own functions ---------------------------------


@needs_make
def test_spec_check_values(tmp_path):
    out = subprocess.run([build("selftest", str(tmp_path))], check=True, capture_output=True, text=True).stdout
    rows = {}
    for line in out.splitlines():
        key, _, rest = line.partition(" ")
        rows.setdefault(key, []).append(rest)
    # transforms.md 5.3.2: SHA-256 of every base matrix in table order
    assert hashlib.sha256(bytes.fromhex(rows["base_table"][0])).hexdigest() == \
        "560b349b275b03a398179d60f14f32b122db6326b976fd1789469f6f7d1478b1"
    # 5.3.4 the first 16 signs
    assert rows["signs"] == ["0 0 -+++++--++---+--", "0 1 +-+--------+-+-+",
                             "12345 0 ++-+++----+++++-", "12345 1 ++++-+-+-++++++-"]
    # 5.3.5 c_b
    scale = dict(r.split() for r in rows["scale"])
    assert scale == {"1": "3f800000", "2": "3f3504f3", "4": "3f000000", "12": "3e93cd3a", "20": "3e64f92e",
                     "28": "3e41848f", "36": "3e2aaaab", "512": "3d3504f3", "576": "3d2aaaab", "1792": "3cc1848f",
                     "4096": "3c800000", "65536": "3b800000"}
    # 5.3.3 factorizations
    fac = {r.split()[0]: r.split()[1:] for r in rows["factor"]}
    assert fac["576"] == ["36", "16"] and fac["24"] == ["12", "2"] and fac["104"] == ["104", "1"]
    assert fac["28672"] == ["28", "1024"] and fac["11008"] == ["invalid"] and fac["98304"] == ["invalid"]
    # 5.3.6 example 4: the inverse RHT of a 48 x 40 matrix
    if sys.byteorder == "little":
        assert hashlib.sha256(bytes.fromhex(rows["example4"][0])).hexdigest() == \
            "adbdd6a7dc2daf556847d67b8b801aa5cd39e9889e3410088363cc20222df7ec"
    # 6.2.4 N(d, k): closed form and recurrence table agree with each other and with Python
    for r in rows["count"]:
        parts = r.split()
        d, k = int(parts[0]), int(parts[1])
        if parts[2] == "beyond":
            assert (pvq_count(d, k) - 1).bit_length() > 1024
            continue
        bits, closed, table = int(parts[2]), int(parts[3], 16), int(parts[4], 16)
        assert closed == table == pvq_count(d, k), (d, k)
        assert bits == (pvq_count(d, k) - 1).bit_length()
    # pvq-enumeration.md section 7: the d = 3, k = 2 table; 18 and 19 rejected
    spec = ["0 0 2", "0 0 -2", "0 1 1", "0 1 -1", "0 -1 1", "0 -1 -1", "0 2 0", "0 -2 0", "1 0 1", "1 0 -1",
            "1 1 0", "1 -1 0", "-1 0 1", "-1 0 -1", "-1 1 0", "-1 -1 0", "2 0 0", "-2 0 0"]
    assert rows["enum"] == [f"{i} {v}" for i, v in enumerate(spec)] + ["18 rejected", "19 rejected"]

    # trellis.md 6.3.A: the HYB table; 6.3.8: code values of some states and the one-tile example
    if sys.byteorder == "little":
        assert hashlib.sha256(bytes.fromhex(rows["hyb_table"][0])).hexdigest() == \
            "8864cdd85d1a112c2e732b5fffa11f652706ca3e1da4caa8cca6a87a0beffcc0"
    f32 = lambda h: float(np.frombuffer(bytes.fromhex(h)[::-1], "<f4")[0])  # noqa: E731 (big-endian hex)
    codes = {r.split()[0]: [f32(x) for x in r.split()[1:]] for r in rows["codes"]}
    assert codes["0000"] == [-185, 0.76806640625, 0.0, -0.044219970703125]
    assert codes["00b5"] == [-110, -0.1748046875, -0.70361328125, -0.228271484375]
    assert codes["1234"] == [224, -2.19921875, 0.54931640625, -0.70068359375]
    assert codes["beef"] == [97, 3.146484375, 1.560546875, -0.0380859375]
    assert np.signbit(np.float32(codes["8000"][2])) and codes["8000"][:2] == [224, -0.498046875]
    tile = np.frombuffer(bytes.fromhex(rows["trellis_1mad_tile"][0]), "<u4")
    assert [f"{tile[i]:08X}" for i in (0, 1, 2, 255)] == ["BE5696E5", "BE0385C6", "4001CAC0", "BF5D82FD"]
    assert np.frombuffer(bytes.fromhex(rows["trellis_hyb_row0"][0]), "<f4").tolist() == \
        [0.54931640625, -0.70068359375, 2.05078125, 0.826171875]
    # lattice.md 6.4.4.2 and 6.4.5 check values, 6.4.7 worked examples
    assert hashlib.sha256(bytes.fromhex(rows["lattice_pat"][0])).hexdigest() == \
        "775342789c2306901695eba0ec4a1f736140a207dc3c59521b169ddaad242bee"
    if sys.byteorder == "little":
        assert hashlib.sha256(bytes.fromhex(rows["lattice_u"][0])).hexdigest() == \
            "bb0e07e8b5760e7305bbc0cd58d39ba6200da8856bf0dbeaeceda86ef691162c"
    assert rows["e8p"] == ["0000 3 3 3 3 3 3 3 3", "0001 1 1 1 1 1 1 1 1", "0101 1 1 1 1 1 1 1 -7",
                           "e2a5 -9 7 -1 3 3 -1 3 3", "e3ff -1 -1 -1 -5 -5 -5 -5 7"]
    assert rows["lattice_group"] == ["bfd3ae28 3f96e422 bea416c2 3f3a0ed7 3f3ebc3d be880662 3f836f39 3fa4bf7d"]


# ---- bit-exactness ---------------------------------------------------------------------------


def test_c_equals_python_float32_bits(encoded):
    with PvqcFile(encoded) as f:
        for name in f.names:
            py = f.decode(name)
            c = f.decode(name, decoder="c")
            assert c.dtype == np.float32 and c.shape == py.shape, name
            assert c.tobytes() == py.tobytes(), name


def test_c_equals_python_in_every_output_dtype(encoded):
    with PvqcFile(encoded) as f:
        for name in f.names:
            for dt in (None, "float32", "float16", "bfloat16"):
                py = f.decode_stored(name, dt)
                c = f.decode_stored(name, dt, decoder="c")
                assert c.dtype == py.dtype and c.tobytes() == py.tobytes(), (name, dt)


def test_row_ranges_equal_slices_of_the_full_decode(encoded):
    rng = np.random.default_rng(1)
    with cdecoder.CDecoder.open(encoded) as f:
        for name in f.names:
            info = f.info(name)
            rows = info["rows"]
            full = f.decode(name).reshape(rows, info["cols"])
            ranges = {(0, rows), (0, 0), (rows - 1, rows), (rows // 2, rows // 2 + 1)}
            for _ in range(4):
                a, b = sorted(int(x) for x in rng.integers(0, rows + 1, 2))
                ranges.add((a, b))
            for a, b in sorted(ranges):
                part = f.decode_rows(name, a, b)
                assert part.tobytes() == full[a:b].tobytes(), (name, a, b)
                bf = f.decode_rows(name, a, b, "bfloat16")
                from pvqcodec.dtypes import f32_to_bf16_bits

                assert bf.tobytes() == f32_to_bf16_bits(full[a:b]).tobytes(), (name, a, b)


def test_pvqdec_cli_writes_the_same_float32_values(encoded, pvqdec, tmp_path):
    out = tmp_path / "c.safetensors"
    r = subprocess.run([pvqdec, str(encoded), str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with PvqcFile(encoded) as f, SafetensorsSource.open(out) as s:
        assert s.names == f.names
        for name in f.names:
            assert s.info(name).dtype == "F32"
            assert s.read(name).tobytes() == f.decode(name).tobytes(), name


# ---- the pvqdec command ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    src = d / "in.safetensors"
    write_weights(src, spec=SMALL_SHAPES, seed=3, metadata={"format": "pt"})
    out = d / "out.pvqc"
    assert main(["encode", str(src), str(out), "-q", "--bits", "2"]) == 0
    return out


def test_pvqdec_source_dtype_and_raw_dir(small_file, pvqdec, tmp_path):
    st = tmp_path / "src.safetensors"
    raw = tmp_path / "raw"
    raw.mkdir()
    r = subprocess.run([pvqdec, "--dtype", "source", "--raw", str(raw), str(small_file), str(st)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    py = tmp_path / "py.safetensors"
    assert main(["decode", str(small_file), str(py), "-q"]) == 0
    with SafetensorsSource.open(st) as a, SafetensorsSource.open(py) as b, PvqcFile(small_file) as f:
        assert a.names == b.names
        for n in a.names:
            assert a.info(n).dtype == b.info(n).dtype and a.info(n).shape == b.info(n).shape, n
            assert a.read(n).tobytes() == b.read(n).tobytes(), n
            assert (raw / f"{n}.bin").read_bytes() == b.read(n).tobytes(), n
    assert not [p for p in os.listdir(tmp_path) if "tmp" in p]


def test_pvqdec_list_and_check(small_file, pvqdec):
    r = subprocess.run([pvqdec, "--list", str(small_file)], capture_output=True, text=True)
    assert r.returncode == 0
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("pvqc version 1.0, 6 tensors")
    assert lines[1].split("\t")[:5] == ["a.weight", "float32", "[192, 576]", "192x576", "rht"]
    r = subprocess.run([pvqdec, "--check", str(small_file)], capture_output=True, text=True)
    assert r.returncode == 0 and "OK (6 tensors decoded)" in r.stdout


def test_pvqdec_errors(small_file, pvqdec, tmp_path):
    bad = tmp_path / "bad.pvqc"
    data = bytearray(small_file.read_bytes())
    data[0] ^= 0xFF
    bad.write_bytes(bytes(data))
    out = tmp_path / "o.safetensors"
    r = subprocess.run([pvqdec, str(bad), str(out)], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.startswith("pvqdec: error [magic_invalid]: ") and r.stderr.count("\n") == 1
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if "tmp" in p]
    r = subprocess.run([pvqdec, str(tmp_path / "missing.pvqc"), str(out)], capture_output=True, text=True)
    assert r.returncode == 1 and "[io_error]" in r.stderr
    r = subprocess.run([pvqdec, str(small_file)], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr


# ---- the Python API and the pvqcodec command ------------------------------------------------------


def test_cli_decode_and_verify_with_the_c_decoder(small_file, tmp_path, capsys):
    a, b = tmp_path / "c.safetensors", tmp_path / "p.safetensors"
    assert main(["decode", str(small_file), str(a), "-q", "--decoder", "c", "--dtype", "bfloat16"]) == 0
    assert main(["decode", str(small_file), str(b), "-q", "--decoder", "python", "--dtype", "bfloat16"]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert main(["verify", str(small_file), "--decoder", "c"]) == 0
    data = bytearray(small_file.read_bytes())
    data[-1] ^= 0x01  # last payload byte: its CRC no longer matches
    bad = tmp_path / "bad.pvqc"
    bad.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["verify", str(bad), "--decoder", "c"]) == 1
    err = capsys.readouterr().err
    assert "[checksum_mismatch]" in err and "Traceback" not in err


def test_c_decoder_metadata_info_and_errors(small_file):
    with cdecoder.CDecoder.open(small_file) as f, PvqcFile(small_file) as p:
        assert f.names == p.names
        assert f.metadata == p.metadata
        assert json.loads(f.metadata["safetensors.metadata"]) == {"format": "pt"}
        info = f.info("a.weight")
        assert (info["rows"], info["cols"], info["codec"], info["transform"]) == (192, 576, "pvq", "rht")
        from pvqcodec.errors import InputError

        with pytest.raises(InputError):
            f.decode("nope")
        with pytest.raises(ValueError):
            f.decode_rows("a.weight", 5, 3)
        with pytest.raises(ValueError):
            f.decode_rows("a.weight", 0, 193)
    with pytest.raises(ValueError):
        f.decode("a.weight")  # closed


def test_missing_extension_raises_an_import_error(monkeypatch, small_file, tmp_path, capsys):
    monkeypatch.setattr(cdecoder, "_lib", None)
    with pytest.raises(ImportError) as exc:
        cdecoder.CDecoder.from_bytes(small_file.read_bytes())
    assert isinstance(exc.value, cdecoder.CDecoderUnavailable) and "C decoder is not built" in str(exc.value)
    assert main(["decode", str(small_file), str(tmp_path / "x.safetensors"), "-q", "--decoder", "c"]) == 1
    err = capsys.readouterr().err
    assert "C decoder is not built" in err and "Traceback" not in err
    assert not (tmp_path / "x.safetensors").exists()
