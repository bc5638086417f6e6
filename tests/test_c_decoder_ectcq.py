"""The C decoder's ectcq codec (codec id 6, spec codecs/ectcq.md, 6.7): the same float32 bits
as the Python decoder on encoder output (2, 3 and 4 bits, 8 to 256 states, raw and rans
payloads, small chunks, source dtypes, both transforms, row ranges, every output dtype), on
hand-built walks that reach every union symbol (magnitudes up to 65,536, every offset
count), the spec's worked example, column strips that resume the row walks; the same
error names for each params_invalid rule of 6.7.1, each payload_corrupt rule of 6.7.3 /
6.7.6, and on damaged files; pvqdec and the sanitizer builds on all of them."""

import os
import struct
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from test_c_decoder import CDIR, build
from test_c_decoder_errors import _sanitizer_works, c_decode, corruptions, python_decode, run_check, write_cases
from test_c_decoder_rans import assert_c_equals_python, needs_make

cdecoder = pytest.importorskip("pvqcodec.cdecoder")
sys.path.insert(0, CDIR)
from fuzz_seeds import recode, seed_bytes  # noqa: E402

from pvqcodec.api import PvqcFile  # noqa: E402
from pvqcodec.codecs import codec_by_id  # noqa: E402
from pvqcodec.coding import RawCoding  # noqa: E402
from pvqcodec.coding.rans import RansCoding  # noqa: E402
from pvqcodec.container.reader import Container  # noqa: E402
from pvqcodec.container.writer import TensorToWrite, to_bytes  # noqa: E402
from pvqcodec.errors import FormatError  # noqa: E402

# The first tensors are not on the handle when assert_c_equals_python decodes their row ranges:
# with more than 64 columns, partial rans streams and column strips meet.
TENSORS = [("h", (24, 200), "float16"), ("w", (16, 64), "float32"), ("v", (5, 37), "bfloat16")]

CONFIGS = [
    ("rht_2bit_v8", dict(bits=2.0)),
    ("rht_3bit_v3", dict(bits=3.0, rht_block="8", codec_options={"state_bits": 3})),  # row blocks of 8
    ("identity_4bit_v5", dict(bits=4.0, transform="identity", codec_options={"state_bits": 5})),
    ("raw_coding_2bit_v4", dict(bits=2.0, entropy="none", codec_options={"state_bits": 4})),
]


def encode(opts) -> bytes:
    return seed_bytes(TENSORS, dict(opts, codec="ectcq", entropy=opts.get("entropy", "auto")))


@pytest.fixture(scope="module")
def files():
    return {label: encode(opts) for label, opts in CONFIGS}


def payload_modes(data: bytes) -> set:
    c = Container.from_bytes(data)
    return {p.coding for rec in c.tensors for p in rec.payloads}


@pytest.mark.parametrize("label", [c[0] for c in CONFIGS])
def test_c_equals_python(files, label):
    data = files[label]
    # --entropy auto codes each payload the cheaper way: rans for (almost) all here
    assert payload_modes(data) == {0} if label.startswith("raw") else 1 in payload_modes(data), label
    states = {rec.codec_params["state_bits"] for rec in Container.from_bytes(data).tensors}
    assert states == {dict(CONFIGS)[label].get("codec_options", {}).get("state_bits", 8)}
    assert_c_equals_python(data)
    # many small chunks (row ranges decode only the chunks of their rows), both modes
    for S, mode in [(7, "auto"), ((100, 13, 29), "table"), (33, "uniform")]:
        assert_c_equals_python(recode(data, S, mode))


def test_every_output_dtype(files, tmp_path):
    for label, data in files.items():
        path = tmp_path / f"{label}.pvqc"
        path.write_bytes(data)
        with PvqcFile(str(path)) as f:
            for name in f.names:
                for dt in (None, "float32", "float16", "bfloat16"):
                    py = f.decode_stored(name, dt)
                    c = f.decode_stored(name, dt, decoder="c")
                    assert c.dtype == py.dtype and c.tobytes() == py.tobytes(), (label, name, dt)


@pytest.fixture(scope="module")
def selftest(tmp_path_factory):
    return build("selftest", str(tmp_path_factory.mktemp("selftest")))


@needs_make
def test_column_strips_resume_the_row_walks(files, selftest, tmp_path):
    """selftest's strips mode: W' in column strips of 1 to 100 columns (left to right:
    each strip resumes the walks; right to left: each walks its rows from column 0)
    equals W' in whole rows, for every tensor of the files."""
    paths = []
    for label, data in files.items():
        paths.append(tmp_path / f"{label}.pvqc")
        paths[-1].write_bytes(data)
    r = subprocess.run([selftest, "strips", *map(str, paths)], capture_output=True, text=True)
    lines = r.stdout.split("\n")
    assert r.returncode == 0, r.stdout
    assert sum(line.endswith(" ok") for line in lines) == len(paths) * len(TENSORS), r.stdout


# ---- hand-built tensors: walks the encoder does not write ------------------------------------


def ectcq_params(step, v=3, offsets=(), a0_count=0, flags=0, count=None) -> bytes:
    n = len(offsets) if count is None else count
    return struct.pack("<fBBHQ", step, v, flags, n, a0_count) + np.asarray(offsets, "<f4").tobytes()


def hand_file(codec_id, params: bytes, streams, rows, cols, coding="raw", transform=None, chunk=4096,
              shape=None) -> bytes:
    """One float32 tensor "w" of the codec with these streams (identity transform unless
    `transform` = (seed, row_block, col_block)); coding "raw", "table" or "uniform" (the
    bounded streams in uniform mode when coding is "table")."""
    codec = codec_by_id(codec_id)
    p = codec.parse_params(params, rows, cols, "float32")
    specs = codec.streams(p, rows, cols, "float32")
    payloads = []
    for pos, (spec, sym) in enumerate(zip(specs, streams)):
        sym = np.asarray(sym, np.uint64)
        assert sym.size == spec.count, (spec.name, sym.size, spec.count)
        if coding == "raw":
            payloads.append((RawCoding.id, RawCoding.encode(sym, spec)))
            continue
        bounds = codec.stream_bounds(p, rows, cols, "float32", pos, streams[:pos])
        mode = "uniform" if bounds is not None or coding == "uniform" or spec.width > 16 else "table"
        payloads.append((RansCoding.id, RansCoding.encode(sym, replace(spec, bounds=bounds), mode=mode,
                                                          chunk_symbols=chunk)))
    tid, tparams = (0, b"") if transform is None else (1, struct.pack("<QII", *transform))
    entry = TensorToWrite("w", "float32", shape or (rows, cols), rows, cols, tid, tparams, codec_id, params, payloads)
    return to_bytes({}, [entry])


def next_state(v, S, z1):
    """6.7.4 written out bit by bit, as the spec states it."""
    h0, h1 = {3: (0o13, 0o04), 4: (0o23, 0o04), 5: (0o45, 0o10), 6: (0o103, 0o024), 7: (0o235, 0o126),
              8: (0o515, 0o362)}[v]
    u = S & 1
    out = 0
    for k in range(1, v + 1):
        w_next = (S >> k) & 1 if k < v else 0  # w_(k+1) = bit k of S
        out |= (w_next ^ (((h1 >> k) & 1) & z1) ^ (((h0 >> k) & 1) & u)) << (k - 1)
    return out


def random_walks(rng, rows, cols, v, draw):
    """Streams of rows that are valid trellis walks: the symbol of each step from draw(n);
    returns (row_a0, a0, a1, j) with j the grid indices (6.7.5)."""
    row_a0, a0, a1, js = [], [], [], []
    for _ in range(rows):
        S, n0, row_j = 0, 0, []
        for s in draw(cols):
            s = int(s)
            u = S & 1
            (a1 if u else a0).append(s)
            n0 += u == 0
            j = s + 1 if (s + u) % 2 == 1 else -s
            row_j.append(j)
            S = next_state(v, S, (j % 4) // 2)
        row_a0.append(n0)
        js.append(row_j)
    return (np.array(row_a0, np.uint64), np.array(a0, np.uint64), np.array(a1, np.uint64),
            np.array(js, np.int64).reshape(rows, cols))


@needs_make
def test_trellis_tables_match_the_spec_rule(selftest):
    """selftest prints next(S, 0), next(S, 1) of every state for v = 3 .. 8: the spec's rule
    bit by bit (and its check values for v = 3)."""
    out = subprocess.run([selftest], check=True, capture_output=True, text=True).stdout
    lines = {int(line.split()[1]): line.split()[2:] for line in out.split("\n") if line.startswith("ectcq_next ")}
    assert sorted(lines) == [3, 4, 5, 6, 7, 8]
    for v, pairs in lines.items():
        assert pairs == [f"{next_state(v, S, 0)},{next_state(v, S, 1)}" for S in range(1 << v)], v
    assert lines[3] == ["0,2", "5,7", "1,3", "4,6", "2,0", "7,5", "3,1", "6,4"]


def test_worked_example():
    """6.7.6: v = 3, step 0.5, row_a0 = [2], a0 = [1, 0], a1 = [3, 0, 4] -> 1.0, +0.0, -1.5,
    0.5, 2.5; with row_a0 = [3], a0 = [1, 0, 2], a1 = [3, 0]: payload_corrupt."""
    data = hand_file(6, ectcq_params(0.5, 3, a0_count=2), [[2], [1, 0], [3, 0, 4]], 1, 5)
    with cdecoder.CDecoder.from_bytes(data) as f:
        bits = f.decode("w").view(np.uint32).reshape(-1)
    want = np.array([1.0, 0.0, -1.5, 0.5, 2.5], np.float32).view(np.uint32)
    assert bits.tolist() == want.tolist()
    assert_c_equals_python(data)
    bad = hand_file(6, ectcq_params(0.5, 3, a0_count=3), [[3], [1, 0, 2], [3, 0]], 1, 5)
    assert python_decode(bad)[0] == c_decode(bad)[0] == "payload_corrupt"


OFFSETS = [0.25, -0.5, 1.0, 3.0, 0.0078125, -1e-3, 2.5]


@pytest.mark.parametrize("v, params_kw", [
    (3, dict(step=0.75, offsets=OFFSETS)),
    (8, dict(step=0.1)),
    (5, dict(step=1e-45, offsets=[0.5])),
    (8, dict(step=0.01, offsets=np.linspace(-0.5, 0.5, 65535, dtype=np.float32))),
], ids=["7 offsets", "n=0", "subnormal step", "65535 offsets"])
def test_random_walks_over_every_symbol(v, params_kw):
    """Walks whose symbols cover 0 .. 65535 (so |j| reaches 65,536 in A_0), decoded by both
    decoders, raw and rans-coded (uniform over 2^16: the symbols do not fit a table), with the
    identity and the RHT, as whole tensors and row ranges."""
    rng = np.random.default_rng(v)
    rows, cols = 64, 1024
    perm = rng.permutation(65536)
    it = iter(np.concatenate([perm, rng.integers(0, 65536, rows * cols - 65536)]))
    row_a0, a0, a1, j = random_walks(rng, rows, cols, v, lambda n: [next(it) for _ in range(n)])
    assert j.max() == 65536 or j.min() == -65535
    params = ectcq_params(a0_count=a0.size, v=v, **params_kw)
    for coding, transform in [("raw", None), ("uniform", None), ("raw", (9, 16, 256))]:
        data = hand_file(6, params, [row_a0, a0, a1], rows, cols, coding=coding, chunk=3000, transform=transform)
        assert python_decode(data)[0] is None
        assert_c_equals_python(data)


def test_small_symbols_in_table_mode_with_the_rht():
    rng = np.random.default_rng(11)
    row_a0, a0, a1, _ = random_walks(rng, 24, 96, 8, lambda n: np.minimum(rng.geometric(0.3, n) - 1, 300))
    params = ectcq_params(0.05, 8, [0.1, 0.05, 0.02], a0_count=a0.size)
    for chunk in (50, 4096):
        assert_c_equals_python(hand_file(6, params, [row_a0, a0, a1], 24, 96, coding="table", chunk=chunk))
        assert_c_equals_python(hand_file(6, params, [row_a0, a0, a1], 24, 96, coding="table", chunk=chunk,
                                         transform=(3, 8, 32)))


# ---- errors ---------------------------------------------------------------------------------

# A valid 2 x 4 tensor: rows [0, 1, 0, 1] and [1, 1, 1, 1] as symbols, v = 3.
_ROW_A0, _A0, _A1, _ = random_walks(None, 2, 4, 3, lambda n: [1] * n)

INVALID_PARAMS = [
    ("step 0", ectcq_params(0.0, a0_count=_A0.size)),
    ("step -0", ectcq_params(-0.0, a0_count=_A0.size)),
    ("step -1", ectcq_params(-1.0, a0_count=_A0.size)),
    ("step nan", ectcq_params(float("nan"), a0_count=_A0.size)),
    ("step +inf", ectcq_params(float("inf"), a0_count=_A0.size)),
    ("state_bits 0", ectcq_params(1.0, 0, a0_count=_A0.size)),
    ("state_bits 2", ectcq_params(1.0, 2, a0_count=_A0.size)),
    ("state_bits 9", ectcq_params(1.0, 9, a0_count=_A0.size)),
    ("state_bits 255", ectcq_params(1.0, 255, a0_count=_A0.size)),
    ("flags 1", ectcq_params(1.0, flags=1, a0_count=_A0.size)),
    ("flags 0x80", ectcq_params(1.0, flags=0x80, a0_count=_A0.size)),
    ("a0_count 9 > 8", ectcq_params(1.0, a0_count=9)),
    ("a0_count 2^64 - 1", ectcq_params(1.0, a0_count=2**64 - 1)),
    ("offset nan", ectcq_params(1.0, offsets=[0.1, float("nan")], a0_count=_A0.size)),
    ("offset -inf", ectcq_params(1.0, offsets=[float("-inf")], a0_count=_A0.size)),
    ("count over block", ectcq_params(1.0, offsets=[0.1, 0.2], count=3, a0_count=_A0.size)),
    ("count under block", ectcq_params(1.0, offsets=[0.1, 0.2], count=1, a0_count=_A0.size)),
    ("block of 15 bytes", ectcq_params(1.0, a0_count=_A0.size)[:15]),
    ("empty block", b""),
    ("one byte left over", ectcq_params(1.0, a0_count=_A0.size) + b"\x00"),
    ("nan step and state_bits 9", ectcq_params(float("nan"), 9, a0_count=_A0.size)),
    ("state_bits 9 and a0_count 9", ectcq_params(1.0, 9, a0_count=9)),
]


def raw_bits(sym, width) -> np.ndarray:
    """The raw coding (4.2) written out: bit b of symbol i is bit i * width + b, LSB first."""
    sym = np.asarray(sym, np.uint64)
    bits = np.zeros(sym.size * width, np.uint8)
    for b in range(width):
        bits[b::width] = (sym >> np.uint64(b)) & np.uint64(1)
    return np.packbits(bits, bitorder="little")


def raw_file_with_params(params: bytes, rows=2, cols=4, streams=(_ROW_A0, _A0, _A1)) -> bytes:
    """The streams raw-coded at the widths of a valid block (the params are not parsed):
    row_a0 at the number of bits of cols, a0 and a1 at 16."""
    widths = (int(cols).bit_length(), 16, 16)
    payloads = [(0, raw_bits(sym, w)) for sym, w in zip(streams, widths)]
    entry = TensorToWrite("w", "float32", (rows, cols), rows, cols, 0, b"", 6, params, payloads)
    return to_bytes({}, [entry])


@pytest.mark.parametrize("label, params", INVALID_PARAMS, ids=[c[0] for c in INVALID_PARAMS])
def test_params_invalid_in_both(label, params):
    data = raw_file_with_params(params)
    assert python_decode(data)[0] == c_decode(data)[0] == "params_invalid", label


def test_valid_corner_params_in_both():
    for params in (ectcq_params(1e-45, 8, a0_count=_A0.size), ectcq_params(3.4028234e38, 3, [0.0], a0_count=_A0.size),
                   ectcq_params(1.0, 6, [-3.4e38, 3.4e38], a0_count=_A0.size)):
        data = raw_file_with_params(params)
        assert c_decode(data)[0] == python_decode(data)[0], params
    assert python_decode(raw_file_with_params(ectcq_params(1.0, 3, a0_count=_A0.size)))[0] is None


def test_row_a0_width_is_the_number_of_bits_of_cols():
    """6.7.3: row_a0 is count_bits(cols) wide: a raw payload of another length is
    payload_layout_invalid in both decoders."""
    for cols in (1, 2, 3, 4, 7, 8, 255, 256):
        row_a0, a0, a1, _ = random_walks(None, 3, cols, 3, lambda n: [0] * n)
        params = ectcq_params(1.0, 3, a0_count=a0.size)
        good = raw_file_with_params(params, 3, cols, (row_a0, a0, a1))
        assert python_decode(good)[0] is None and c_decode(good)[0] is None, cols
        entry = TensorToWrite("w", "float32", (3, cols), 3, cols, 0, b"", 6, params,
                              [(0, raw_bits(row_a0, 32)), (0, raw_bits(a0, 16)), (0, raw_bits(a1, 16))])
        wide = to_bytes({}, [entry])
        assert python_decode(wide)[0] == c_decode(wide)[0] == "payload_layout_invalid", cols


def corrupt_cases():
    """(label, row_a0, a0, a1) of a 6 x 10 tensor (v = 3) that break one payload_corrupt rule
    each: the bound of row_a0, its sum, a row's walk."""
    rng = np.random.default_rng(5)
    row_a0, a0, a1, _ = random_walks(rng, 6, 10, 3, lambda n: rng.integers(0, 9, n))
    row_a0 = row_a0.astype(np.int64)
    out = []
    r = row_a0.copy()
    r[2] = 11  # above cols (the 4-bit stream holds it): the stream's bound, checked before the sum
    out.append(("row_a0 above cols", r))
    up = int(np.flatnonzero(row_a0 < 10)[0])
    down = int(np.flatnonzero((row_a0 > 0) & (np.arange(6) != up))[0])
    r = row_a0.copy()
    r[up] += 1
    r[down] -= 1
    out.append(("two rows take other counts, same sum", r))
    r = row_a0.copy()
    r[up] += 1
    out.append(("sum above a0_count", r))
    r = row_a0.copy()
    r[down] -= 1
    out.append(("sum below a0_count", r))
    return [(label, r.astype(np.uint64), a0, a1) for label, r in out]


@pytest.mark.parametrize("coding", ["raw", "table"])
def test_payload_corrupt_rules_in_both(coding):
    for label, row_a0, a0, a1 in corrupt_cases():
        params = ectcq_params(0.5, 3, a0_count=a0.size)
        if coding == "raw":
            data = raw_file_with_params(params, 6, 10, (row_a0, a0, a1))
        elif int(row_a0.max()) <= 10:  # uniform mode cannot code a symbol above its bound
            data = hand_file(6, params, [row_a0, a0, a1], 6, 10, coding=coding, chunk=7)
        else:
            continue
        assert python_decode(data)[0] == c_decode(data)[0] == "payload_corrupt", label


def test_walks_with_one_symbol_changed_are_valid_or_corrupt_in_both():
    """Every single-symbol change of a valid tensor: either both decoders decode it to the
    same bits, or both call it payload_corrupt (the row's union counts no longer match)."""
    rng = np.random.default_rng(8)
    row_a0, a0, a1, _ = random_walks(rng, 4, 12, 4, lambda n: rng.integers(0, 6, n))
    params = ectcq_params(0.5, 4, [0.1, 0.2], a0_count=a0.size)
    seen = set()
    for which in (1, 2):
        for i in range(len(a0) if which == 1 else len(a1)):
            for delta in (1, 2, 3):
                s = [row_a0, a0.copy(), a1.copy()]
                s[which][i] = (int(s[which][i]) + delta) % 65536
                data = raw_file_with_params(params, 4, 12, s)
                py = python_decode(data)
                c = c_decode(data)
                assert py[0] == c[0], (which, i, delta, py[0], c[0])
                if py[0] is None:
                    assert py[1]["w"].tobytes() == c[1]["w"].tobytes()
                seen.add(py[0])
    assert seen == {None, "payload_corrupt"}


def test_overflow_is_payload_corrupt():
    """7.3: (65536 - 0.5) * 1e35 overflows; row ranges without the value decode."""
    rows, cols = 4, 8
    draws = iter([0] * (2 * cols) + [65535] + [0] * (2 * cols - 1))
    row_a0, a0, a1, j = random_walks(None, rows, cols, 3, lambda n: [next(draws) for _ in range(n)])
    params = ectcq_params(1e35, 3, [0.5], a0_count=a0.size)
    for coding in ("raw", "table"):
        data = hand_file(6, params, [row_a0, a0, a1], rows, cols, coding=coding)
        assert python_decode(data)[0] == c_decode(data)[0] == "payload_corrupt"
        with cdecoder.CDecoder.from_bytes(data) as f:
            assert f.decode_rows("w", 0, 2).tobytes() == np.zeros((2, cols), np.float32).tobytes()
            with pytest.raises(FormatError) as exc:
                f.decode_rows("w", 2, 3)
            assert exc.value.code == "payload_corrupt"


def test_damaged_files_give_the_same_error_names(files):
    cases = corruptions(files["raw_coding_2bit_v4"])[::4] + corruptions(files["rht_3bit_v3"])[1::6]
    cases += corruptions(recode(files["identity_4bit_v5"], 50, "table"))[::6]
    mismatches = []
    for label, data in cases:
        py, c = python_decode(data)[0], c_decode(data)[0]
        if py != c:
            mismatches.append((label, py, c))
    assert not mismatches, mismatches[:10]
    assert len(cases) > 150


@needs_make
def test_pvqdec_and_sanitizer_builds(files, tmp_path):
    """pvqdec --check names the Python decoder's errors on hand-built, invalid and damaged
    ectcq files; the ASan and UBSan builds report nothing on them."""
    rng = np.random.default_rng(1)
    row_a0, a0, a1, _ = random_walks(rng, 8, 300, 8, lambda n: rng.integers(0, 65536, n))
    corner = [hand_file(6, ectcq_params(0.75, 8, OFFSETS, a0_count=a0.size), [row_a0, a0, a1], 8, 300,
                        coding="uniform", chunk=777, transform=(4, 8, 4))]
    corner += [raw_file_with_params(params) for _, params in INVALID_PARAMS]
    corner += [raw_file_with_params(ectcq_params(0.5, 3, a0_count=a0.size), 6, 10, (r, a0, a1))
               for _, r, a0, a1 in corrupt_cases()]
    cases = [(f"corner {i}", d) for i, d in enumerate(corner)]
    cases += list(files.items())
    cases += corruptions(recode(files["rht_2bit_v8"], 64, "table"))[::4]
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
