"""The C decoder's rans coding (spec 1.1, coding-rans.md section 4.3): the same symbols and
float32 bits as the Python decoder in table and uniform mode (bounded PVQ shapes, one-limb
and multi-limb), whole tensors and row ranges decoded from a subset of chunks, the pvqdec
command, the same error names on damaged rans payloads, sanitizer builds, and the C-side
round trips of selftest.c."""

import os
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from pvqcodec.cli import main
from pvqcodec.container.reader import Container
from pvqcodec.decoder import decode_float32
from pvqcodec.dtypes import f32_to_bf16_bits
from pvqcodec.safetensors_io import SafetensorsSource

from helpers import write_weights
from test_c_decoder import CDIR, SMALL_SHAPES, build
from test_c_decoder_errors import (_sanitizer_works, c_decode, fix_header_crc, python_decode, run_check,
                                   same_values, walk, write_cases)

cdecoder = pytest.importorskip("pvqcodec.cdecoder")
sys.path.insert(0, CDIR)
from fuzz_seeds import recode, seed_bytes  # noqa: E402

needs_make = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                                reason="needs make and a C compiler")

TENSORS = [("w", (32, 64), "float32"), ("n", (7,), "float16"), ("v", (48, 32), "bfloat16")]

# (label, encode options): PVQ with one-limb (D = 8) and multi-limb (D = 64: 200+ bits)
# shape indices, the identity transform, trellis with row scales, lattice with 3 stages.
CODECS = [
    ("pvq_d8", dict(bits=2.0, codec_options={"group_size": 8})),
    ("pvq_d64_wide", dict(bits=4.0, codec_options={"group_size": 64})),
    ("pvq_d16_identity", dict(bits=3.0, transform="identity", codec_options={"group_size": 16})),
    ("trellis_rows", dict(codec="trellis", bits=2.0, codec_options={"trellis_L": 8, "row_scales": True})),
    ("lattice_4bit", dict(codec="lattice", bits=4.0, codec_options={"row_scales": "on"})),
]

# (chunk_symbols, mode) of fuzz_seeds.recode: one symbol per chunk, chunks that end inside
# a step of 32, whole steps; table mode where it applies, uniform mode everywhere.
RECODINGS = [(1, "auto"), (7, "uniform"), (33, "auto"), (64, "uniform"), (100, "table")]


@pytest.fixture(scope="module")
def base_files():
    return {label: seed_bytes(TENSORS, opts) for label, opts in CODECS}


def rans_payload_modes(data: bytes):
    """(stream name, mode) of every payload (mode None for raw payloads)."""
    c = Container.from_bytes(data)
    return [(p.stream.name, int(c.payload(rec, i, True)[0]) if p.coding == 1 else None)
            for rec in c.tensors for i, p in enumerate(rec.payloads)]


def assert_c_equals_python(data: bytes):
    c = Container.from_bytes(data)
    py = {rec.name: decode_float32(c, rec) for rec in c.tensors}
    with cdecoder.CDecoder.from_bytes(data) as f:
        for rec in c.tensors:
            assert f.decode(rec.name).tobytes() == py[rec.name].tobytes(), rec.name
        # Every tensor is now checked and the handle keeps only the last one's decoded
        # streams: row ranges of the others decode just the chunks that hold their rows.
        for rec in c.tensors:
            full = py[rec.name].reshape(rec.rows, rec.cols)
            for a, b in {(0, 1), (3, 17), (rec.rows - 1, rec.rows), (5, 6), (0, rec.rows), (rec.rows // 2, rec.rows)}:
                if 0 <= a < b <= rec.rows:
                    assert f.decode_rows(rec.name, a, b).tobytes() == full[a:b].tobytes(), (rec.name, a, b)
                    bf = f.decode_rows(rec.name, a, b, "bfloat16")
                    assert bf.tobytes() == f32_to_bf16_bits(full[a:b]).tobytes(), (rec.name, a, b)


@pytest.mark.parametrize("label", [c[0] for c in CODECS])
def test_recoded_files_decode_as_in_python(base_files, label):
    modes_seen = set()
    for S, mode in RECODINGS:
        data = recode(base_files[label], S, mode)
        modes_seen |= {m for _, m in rans_payload_modes(data)}
        assert_c_equals_python(data)
    assert modes_seen == {0, 1}, modes_seen  # both modes were decoded


def test_encoder_choice_of_codings_decodes_as_in_python(tmp_path):
    """Files as `pvqcodec encode --entropy rans|auto` writes them, through the binding and pvqdec."""
    src = tmp_path / "in.safetensors"
    write_weights(src, spec=SMALL_SHAPES, seed=5)
    if shutil.which("make") is not None and shutil.which("cc") is not None:
        pvqdec = build("cli", str(tmp_path))
    else:
        pvqdec = None
    for i, (entropy, args) in enumerate((("auto", ["--bits", "2", "--group-size", "8"]),
                                         ("rans", ["--bits", "4", "--group-size", "64"]),
                                         ("rans", ["--codec", "lattice", "--bits", "3"]))):
        out = tmp_path / f"{i}_{entropy}.pvqc"
        assert main(["encode", str(src), str(out), "-q", "--entropy", entropy, *args]) == 0
        data = out.read_bytes()
        assert any(m is not None for _, m in rans_payload_modes(data))
        assert_c_equals_python(data)
        if pvqdec:
            st = tmp_path / "c.safetensors"
            r = subprocess.run([pvqdec, str(out), str(st)], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            c = Container.from_bytes(data)
            with SafetensorsSource.open(st) as s:
                for rec in c.tensors:
                    assert s.read(rec.name).tobytes() == decode_float32(c, rec).tobytes(), rec.name
            r = subprocess.run([pvqdec, "--list", str(out)], capture_output=True, text=True)
            assert r.returncode == 0 and r.stdout.startswith("pvqc version 1.1,"), r.stdout[:80]


# ---- damaged rans payloads -----------------------------------------------------------------------


def rans_corruptions(data: bytes, rng):
    """(label, bytes) with one byte of a rans payload changed and every CRC fixed: every byte
    of the header, frequency table (if short), padding, chunk offsets and the first chunk's
    first states, and bytes spread over the states and word streams."""
    out = []
    _, payloads = walk(data)
    c = Container.from_bytes(data)
    for k, ((off, ln, crc_at), p) in enumerate(zip(payloads, [p for rec in c.tensors for p in rec.payloads])):
        if p.coding != 1 or ln == 0:
            continue
        A, C = struct.unpack_from("<I", data, off + 12)[0], struct.unpack_from("<I", data, off + 8)[0]
        T = (16 + 2 * A + 7) // 8 * 8
        head = min(ln, T + 8 * C + 24)
        where = set(range(head)) if A <= 64 else set(range(16)) | set(range(T, head))
        where |= {int(x) for x in rng.integers(head, ln, size=min(8, ln - head))} if ln > head else set()
        for i in sorted(where):
            for x in (0x01, 0xFF):
                d = bytearray(data)
                d[off + i] ^= x
                struct.pack_into("<I", d, crc_at, zlib.crc32(bytes(d[off:off + ln])) & 0xFFFFFFFF)
                out.append((f"payload {k} ({p.stream.name}) byte {i} ^ {x:#x}", bytes(fix_header_crc(d))))
    return out


@pytest.fixture(scope="module")
def damaged(base_files):
    rng = np.random.default_rng(8)
    files = [recode(base_files["pvq_d8"], 33, "auto"), recode(base_files["pvq_d64_wide"], 16, "uniform"),
             recode(base_files["lattice_4bit"], 40, "auto"), recode(base_files["trellis_rows"], 64, "uniform")]
    return [(f"file {i}: {label}", d) for i, f in enumerate(files) for label, d in rans_corruptions(f, rng)]


def test_damaged_rans_payloads_give_the_same_error_names(damaged):
    mismatches, seen = [], {}
    for label, data in damaged:
        (py, py_out), (c, c_out) = python_decode(data), c_decode(data)
        assert py is None or not py.startswith("python raised"), (label, py)
        if py != c:
            mismatches.append((label, py, c))
        elif py is None:  # a change the coder never reads (or a still valid table): the same values
            assert py_out.keys() == c_out.keys(), label
            for name in py_out:
                assert same_values(py_out[name], c_out[name]), (label, name)
        seen[c] = seen.get(c, 0) + 1
    assert not mismatches, mismatches[:10]
    assert seen.get("payload_corrupt", 0) > len(damaged) // 2, seen


@needs_make
def test_pvqdec_and_sanitizer_builds_on_damaged_rans_payloads(damaged, tmp_path):
    """pvqdec --check names the same errors; the ASan and UBSan builds report nothing."""
    cases = damaged[::3]
    paths = write_cases(tmp_path, cases)
    r, result = run_check(build("cli", str(tmp_path)), paths)
    for (label, data), p in zip(cases, paths):
        assert result[str(p)] == python_decode(data)[0], label
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:exitcode=99",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=99")
    for kind, flag in (("asan", "-fsanitize=address"), ("ubsan", "-fsanitize=undefined")):
        if not _sanitizer_works(flag, tmp_path):
            continue
        r, result = run_check(build(kind, str(tmp_path)), paths, env=env)
        assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr[-3000:]
        assert len(result) == len(paths)


# ---- each rejection rule of 4.3, made on purpose ----------------------------------------------------


def _payload_of(data: bytes, k: int):
    _, payloads = walk(data)
    return payloads[k]


def _replace_payload(data: bytes, k: int, new: bytes) -> bytes:
    """The file with payload k replaced by `new` (same length), CRCs fixed."""
    off, ln, crc_at = _payload_of(data, k)
    assert len(new) == ln
    d = bytearray(data)
    d[off:off + ln] = new
    struct.pack_into("<I", d, crc_at, zlib.crc32(new) & 0xFFFFFFFF)
    return bytes(fix_header_crc(d))


def test_every_rejection_rule_is_payload_corrupt_in_both_decoders(base_files):
    files = {0: recode(base_files["pvq_d8"], 40, "table"), 1: recode(base_files["pvq_d8"], 40, "uniform")}
    k_table = next(i for i, (n, m) in enumerate(rans_payload_modes(files[0])) if n == "gains" and m == 0)
    k_shapes = next(i for i, (n, m) in enumerate(rans_payload_modes(files[1])) if n == "shapes" and m == 1)

    def payload(k):
        data = files[0] if k == k_table else files[1]
        off, ln, _ = _payload_of(data, k)
        return bytearray(data[off:off + ln])

    def field(buf, at, fmt, value):
        b = bytearray(buf)
        struct.pack_into(fmt, b, at, value)
        return bytes(b)

    tb, sh = payload(k_table), payload(k_shapes)
    A = struct.unpack_from("<I", tb, 12)[0]
    T = (16 + 2 * A + 7) // 8 * 8
    C = struct.unpack_from("<I", sh, 8)[0]
    Ts = 16 + 8 * C  # uniform mode: no table
    cases = {
        "mode 2": (k_table, field(tb, 0, "<B", 2)),
        "table precision 0": (k_table, field(tb, 1, "<B", 0)),
        "table precision 16": (k_table, field(tb, 1, "<B", 16)),
        "uniform precision 1": (k_shapes, field(sh, 1, "<B", 1)),
        "reserved": (k_table, field(tb, 2, "<H", 1)),
        "chunk_symbols 0": (k_table, field(tb, 4, "<I", 0)),
        "chunk_count + 1": (k_table, field(tb, 8, "<I", struct.unpack_from("<I", tb, 8)[0] + 1)),
        "uniform alphabet 1": (k_shapes, field(sh, 12, "<I", 1)),
        "freq over 2^P": (k_table, field(tb, 16, "<H", 0xFFFF)),
        "freq sum": (k_table, field(tb, 16, "<H", struct.unpack_from("<H", tb, 16)[0] ^ 1)),
        "chunk_end decreasing": (k_shapes, field(sh, 16, "<Q", 2**63)),
        "chunk under 64 words": (k_shapes, field(sh, 16, "<Q", 63)),
        "initial state below 2^16": (k_shapes, field(sh, Ts + 2, "<H", 0)),
        "initial state changed": (k_shapes, field(sh, Ts, "<H", struct.unpack_from("<H", sh, Ts)[0] ^ 0x8000)),
    }
    if T > 16 + 2 * A:
        cases["padding"] = (k_table, field(tb, T - 1, "<B", 1))
    assert k_table != k_shapes
    for label, (k, new) in cases.items():
        bad = _replace_payload(files[0] if k == k_table else files[1], k, new)
        py, c = python_decode(bad)[0], c_decode(bad)[0]
        assert py == c == "payload_corrupt", (label, py, c)


def test_refills_past_the_end_and_words_left_over(base_files):
    """Moving the boundary between chunks 0 and 1 by one word leaves one chunk a word short
    (its last refill runs past its end) and the other with a word left over."""
    data = recode(base_files["pvq_d8"], 32, "uniform")
    k = next(i for i, (n, m) in enumerate(rans_payload_modes(data)) if n == "shapes")
    off, ln, _ = _payload_of(data, k)
    p = bytearray(data[off:off + ln])
    C = struct.unpack_from("<I", p, 8)[0]
    assert C >= 2
    end0 = struct.unpack_from("<Q", p, 16)[0]
    assert c_decode(data)[0] is None
    for moved in (end0 - 1, end0 + 1):  # chunk 0 one word short (a refill past its end), one word long
        struct.pack_into("<Q", p, 16, moved)
        bad = _replace_payload(data, k, bytes(p))
        assert python_decode(bad)[0] == c_decode(bad)[0] == "payload_corrupt", moved


# ---- the C-side unit test -----------------------------------------------------------------------


@needs_make
def test_selftest_rans_round_trips(tmp_path):
    """selftest.c encodes with an encoder written from 4.3.5 and decodes with the library's
    functions: table mode (2- to 16-bit alphabets, one symbol of frequency 2^P, width 0 and
    30), uniform mode (every kind of bound: b = 0, even(n), raw(b), n_top = 256, wide PVQ
    bounds of 237 and 995 bits), whole and a subset of chunks; symbols >= N rejected."""
    out = subprocess.run([build("selftest", str(tmp_path))], check=True, capture_output=True, text=True).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("rans ")]
    assert len(rows) == 32, rows
    rejected = {r[1] for r in rows if r[2] == "rejected"}
    assert rejected == {"uniform_pvq_64_160_symbol_N", "uniform_pvq_256_700_symbol_N", "uniform_N257_symbol_257"}
    assert all(r[2] == "ok" for r in rows if r[1] not in rejected), [r for r in rows if r[2] not in ("ok", "rejected")]
    assert {"uniform_pvq_64_160_237bits", "uniform_pvq_256_700_995bits", "table_w16_p15", "uniform_N1",
            "uniform_empty"} <= {r[1] for r in rows}
