"""The C decoder rejects damaged files with the same error name as the Python decoder
(the spec's check order makes the first error well defined), and its sanitizer builds
run over valid and damaged files without a report."""

import os
import re
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from pvqcodec.container.reader import Container
from pvqcodec.decoder import decode_float32
from pvqcodec.errors import FormatError

from test_c_decoder import CDIR, build

cdecoder = pytest.importorskip("pvqcodec.cdecoder")
sys.path.insert(0, CDIR)
from fuzz_seeds import seed_bytes, write_seeds  # noqa: E402

# A raw tensor of every dtype, PVQ with one-limb and multi-limb indices, RHT and identity.
TENSORS = [
    ("norm", (8,), "float32"),
    ("h", (3,), "float16"),
    ("w", (6, 12), "bfloat16"),
    ("m", (2, 64), "float32"),
]


@pytest.fixture(scope="module")
def base_files():
    a = seed_bytes(TENSORS, dict(bits=2.0, codec_options={"group_size": 12}))
    b = seed_bytes([("m", (2, 64), "float32"), ("g", (4, 8), "float16")],
                   dict(bits=4.0, codec_options={"group_size": 64}))
    c = seed_bytes([("i", (2, 16), "float32")], dict(bits=2.0, transform="identity", codec_options={"group_size": 8}))
    d = seed_bytes([("t", (20, 18), "float32")],
                   dict(codec="trellis", bits=2.0, codec_options={"trellis_L": 8, "row_scales": True}))
    e = seed_bytes([("l", (3, 12), "float16")], dict(codec="lattice", bits=4.0, codec_options={"row_scales": "on"}))
    return [a, b, c, d, e]


def walk(data: bytes):
    """Offsets of the header block's fields: (field name, offset, size) in file order."""
    fields = []
    (hsize,) = struct.unpack_from("<I", data, 16)
    pos = 32

    def take(name, size):
        nonlocal pos
        fields.append((name, pos, size))
        pos += size
        return data[pos - size:pos]

    (n_meta,) = struct.unpack("<I", take("metadata_count", 4))
    for _ in range(n_meta):
        (kl,) = struct.unpack("<H", take("key_len", 2))
        take("key", kl)
        (vl,) = struct.unpack("<I", take("value_len", 4))
        take("value", vl)
    (n_t,) = struct.unpack("<I", take("tensor_count", 4))
    payloads = []
    for _ in range(n_t):
        (nl,) = struct.unpack("<H", take("name_len", 2))
        take("name", nl)
        take("dtype", 1)
        rank = take("rank", 1)[0]
        take("shape", 8 * rank)
        take("rows", 8)
        take("cols", 8)
        take("transform_id", 1)
        (tl,) = struct.unpack("<H", take("transform_params_len", 2))
        take("transform_params", tl)
        take("codec_id", 1)
        (cl,) = struct.unpack("<I", take("codec_params_len", 4))
        take("codec_params", cl)
        npay = take("payload_count", 1)[0]
        for _ in range(npay):
            take("coding", 1)
            off = struct.unpack("<Q", take("offset", 8))[0]
            ln = struct.unpack("<Q", take("length", 8))[0]
            crc_at = pos
            take("crc", 4)
            payloads.append((off, ln, crc_at))
    assert pos == 32 + hsize
    return fields, payloads


def fix_header_crc(data: bytearray) -> bytearray:
    (hsize,) = struct.unpack_from("<I", data, 16)
    struct.pack_into("<I", data, 20, zlib.crc32(bytes(data[32:32 + hsize])) & 0xFFFFFFFF)
    return data


def corruptions(data: bytes):
    """(label, bytes) for truncations, flipped bytes in every header field (with and without
    a fixed CRC), bad ids, payload damage with and without fixed CRCs, trailing bytes."""
    out = []
    n = len(data)
    for cut in sorted(set(range(0, 40)) | set(range(40, n, 7)) | {n - 1}):
        out.append((f"truncate {cut}", data[:cut]))
    out.append(("append 1", data + b"\0"))
    out.append(("append 64", data + b"\0" * 64))
    for i in range(32):
        for x in (0x01, 0x80, 0xFF):
            d = bytearray(data)
            d[i] ^= x
            out.append((f"file header byte {i} ^ {x:#x}", bytes(d)))
    fields, payloads = walk(data)
    for name, off, size in fields:
        for j in range(size):
            for x in (0x01, 0x40, 0xFF):
                d = bytearray(data)
                d[off + j] ^= x
                out.append((f"{name} byte {j} ^ {x:#x}, crc fixed", bytes(fix_header_crc(d))))
    d = bytearray(data)
    d[40] ^= 1
    out.append(("header byte, crc not fixed", bytes(d)))
    # ids one by one: an unknown transform, codec, coding; a reserved codec id
    for name, value in (("transform_id", 7), ("codec_id", 2), ("codec_id", 3), ("codec_id", 4), ("coding", 1),
                        ("dtype", 4)):
        for fname, off, _ in fields:
            if fname == name:
                d = bytearray(data)
                d[off] = value
                out.append((f"{name} = {value}", bytes(fix_header_crc(d))))
                break
    for k, (off, ln, crc_at) in enumerate(payloads):
        if ln == 0:
            continue
        for where in sorted({0, ln // 2, ln - 1}):
            for x in (0x01, 0x80, 0xFF):
                d = bytearray(data)
                d[off + where] ^= x
                out.append((f"payload {k} byte {where} ^ {x:#x}", bytes(d)))
                struct.pack_into("<I", d, crc_at, zlib.crc32(bytes(d[off:off + ln])) & 0xFFFFFFFF)
                out.append((f"payload {k} byte {where} ^ {x:#x}, crc fixed", bytes(fix_header_crc(d))))
        if k == 0 and off > 32:  # padding before the first payload
            hend = 32 + struct.unpack_from("<I", data, 16)[0]
            if off > hend:
                d = bytearray(data)
                d[hend] = 1
                out.append(("non-zero padding", bytes(d)))
    return out


def python_decode(data: bytes):
    """The Python decoder over the whole file: (first error's code or None, decoded tensors)."""
    out = {}
    try:
        c = Container.from_bytes(data)
        for rec in c.tensors:
            with np.errstate(all="ignore"):  # damaged scales may overflow: the values are compared
                out[rec.name] = decode_float32(c, rec)
    except FormatError as exc:
        return exc.code, out
    except Exception as exc:  # a bug in the Python decoder: reported by the test
        return f"python raised {type(exc).__name__}: {exc}", out
    return None, out


def python_error(data: bytes):
    return python_decode(data)[0]


def c_decode(data: bytes):
    out = {}
    try:
        with cdecoder.CDecoder.from_bytes(data) as f:
            for name in f.names:
                out[name] = f.decode(name)
    except FormatError as exc:
        return exc.code, out
    return None, out


def c_error(data: bytes):
    return c_decode(data)[0]


def same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical, except that NaN bit patterns are not specified (spec 5.3.6)."""
    na, nb = np.isnan(a), np.isnan(b)
    return a.shape == b.shape and np.array_equal(na, nb) and a[~na].tobytes() == b[~nb].tobytes()


@pytest.fixture(scope="module")
def cases(base_files):
    out = []
    for i, data in enumerate(base_files):
        out += [(f"file {i}: {label}", d) for label, d in corruptions(data)]
    return out


def test_same_error_names_as_python(cases):
    mismatches, python_bugs, seen = [], [], set()
    for label, data in cases:
        (py, py_out), (c, c_out) = python_decode(data), c_decode(data)
        if py is not None and py.startswith("python raised"):
            python_bugs.append((label, py, c))
            assert c is not None, label  # the C decoder still rejects the file
            continue
        if py != c:
            mismatches.append((label, py, c))
        elif py is None:  # a damaged file that is still valid: the same values
            assert py_out.keys() == c_out.keys(), label
            for name in py_out:
                assert same_values(py_out[name], c_out[name]), (label, name)
        seen.add(c)
    assert not mismatches, mismatches[:10]
    # the corruptions reach most of the rejection list (and some files stay valid)
    assert {None, "file_truncated", "magic_invalid", "version_unsupported", "reserved_nonzero",
            "file_size_mismatch", "limit_exceeded", "checksum_mismatch", "header_corrupt", "transform_unknown",
            "codec_unknown", "params_invalid", "coding_unknown", "payload_layout_invalid",
            "payload_corrupt"} <= seen, seen
    assert not python_bugs, python_bugs[:5]


def run_check(exe, paths, env=None):
    """pvqdec --check over many files in one process: {path: error name or None}."""
    r = subprocess.run([exe, "--check", *map(str, paths)], capture_output=True, text=True, env=env)
    assert r.returncode in (0, 1), (r.returncode, r.stderr[-3000:])
    result = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^(.*\.pvqc): OK \(", line)
        if m:
            result[m.group(1)] = None
    for line in r.stderr.splitlines():
        m = re.match(r"^pvqdec: error \[(\w+)\]: (.*?\.pvqc): ", line)
        assert m, line
        result[m.group(2)] = m.group(1)
    return r, result


def write_cases(d, cases):
    paths = []
    for i, (_, data) in enumerate(cases):
        p = d / f"case{i:05d}.pvqc"
        p.write_bytes(data)
        paths.append(p)
    return paths


def test_pvqdec_reports_the_same_names(cases, tmp_path_factory):
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("needs make and a C compiler")
    d = tmp_path_factory.mktemp("cli")
    exe = build("cli", str(d))
    paths = write_cases(d, cases)
    r, result = run_check(exe, paths)
    assert r.returncode == 1
    for (label, data), p in zip(cases, paths):
        assert result[str(p)] == python_error(data), (label, result[str(p)])


def _sanitizer_works(flag, tmp_path):
    src = tmp_path / "t.c"
    src.write_text("int main(void) { return 0; }\n")
    r = subprocess.run(["cc", flag, str(src), "-o", str(tmp_path / "t")], capture_output=True)
    if r.returncode != 0:
        return False
    return subprocess.run([str(tmp_path / "t")], capture_output=True).returncode == 0


@pytest.mark.parametrize("kind", ["asan", "ubsan"])
def test_sanitizer_builds_run_clean(kind, cases, tmp_path_factory):
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("needs make and a C compiler")
    d = tmp_path_factory.mktemp(kind)
    if not _sanitizer_works("-fsanitize=address" if kind == "asan" else "-fsanitize=undefined", d):
        pytest.skip(f"the C compiler has no working {kind}")
    exe = build(kind, str(d))
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:exitcode=99",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=99")
    seeds = write_seeds(str(d / "seeds"))
    # every valid seed and every damaged file, in one process
    r, result = run_check(exe, seeds + write_cases(d, cases), env=env)
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr[-3000:]
    assert all(result[p] is None for p in seeds) and len(result) == len(seeds) + len(cases)
    # every output path on the seeds: safetensors in each dtype mode, raw .bin files
    for p in seeds:
        for mode in ("float32", "source", "bfloat16", "float16"):
            args = ["--dtype", mode, p, str(d / "o.safetensors")] + (["--raw", str(d)] if mode == "source" else [])
            r = subprocess.run([exe, *args], capture_output=True, text=True, env=env)
            assert r.returncode == 0, (p, mode, r.returncode, r.stderr[-3000:])
            assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr[-3000:]


def test_every_allocation_failure_is_reported_and_leaks_nothing(tmp_path):
    """An allocator that refuses its n-th call, for every n: each call returns OK or
    out_of_memory, nothing leaks (AddressSanitizer) and the handle frees everything."""
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("needs make and a C compiler")
    if not _sanitizer_works("-fsanitize=address", tmp_path):
        pytest.skip("the C compiler has no working AddressSanitizer")
    exe = build("oomtest", str(tmp_path))
    seeds = write_seeds(str(tmp_path / "seeds"))
    r = subprocess.run([exe, *seeds], capture_output=True, text=True,
                       env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1:exitcode=99"))
    assert r.returncode == 0 and "Sanitizer" not in r.stderr, r.stderr[-3000:]
    runs = int(r.stdout.split()[-2])
    assert runs > 10 * len(seeds)


def test_fuzz_smoke(tmp_path):
    """30 s of libFuzzer over the seeds (only where clang is installed; CI has none)."""
    if shutil.which("clang") is None or shutil.which("make") is None:
        pytest.skip("needs clang (libFuzzer)")
    exe = build("fuzz", str(tmp_path))
    seeds = tmp_path / "seeds"
    write_seeds(str(seeds))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    r = subprocess.run([exe, "-max_total_time=30", "-max_len=4096", "-timeout=10", "-rss_limit_mb=2048",
                        f"-artifact_prefix={tmp_path}/", str(corpus), str(seeds)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Done" in r.stderr and not [p for p in os.listdir(tmp_path) if p.startswith(("crash-", "leak-", "oom-"))]


def test_rht_on_an_empty_matrix_is_params_invalid():
    """An empty tensor with the RHT: spec 3.3 (a quantized tensor needs elements; the raw
    codec needs the identity transform) makes it params_invalid, checked before the RHT's
    parameter block, whose blocks cannot divide an empty side sensibly."""
    from pvqcodec.container.writer import TensorToWrite, to_bytes

    for codec_id in (0, 1):
        params = b"" if codec_id == 0 else struct.pack("<HHB", 8, 2, 0) + struct.pack("<f", 1.0)
        t = TensorToWrite("z", "float16", (0,), 1, 0, 1, struct.pack("<QII", 0, 1, 1), codec_id, params,
                          [(0, np.zeros(0, np.uint8))] * (1 if codec_id == 0 else 3))
        data = to_bytes({}, [t])
        with pytest.raises(FormatError) as exc:
            cdecoder.CDecoder.from_bytes(data)
        assert exc.value.code == "params_invalid" == python_error(data)
