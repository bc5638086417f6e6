"""The C decoder's ecsq codec (codec id 5, spec codecs/ecsq.md, 6.6): the same float32 bits
as the Python decoder on encoder output (several rates and offset counts, raw and rans
payloads, chunk sizes, source dtypes, both transforms), on hand-built streams that reach
every corner of 6.6.3 / 6.6.4 (every one of the 65,536 symbols, n = 0, magnitudes above n,
t = 0 giving -0.0, a subnormal step, 65,535 offsets), in row ranges and every output dtype;
the same error names for each params_invalid rule of 6.6.1, for values that overflow (7.3),
and on damaged files."""

import os
import struct
import sys

import numpy as np
import pytest

from test_c_decoder import CDIR, build
from test_c_decoder_errors import _sanitizer_works, c_decode, corruptions, python_decode, run_check, write_cases
from test_c_decoder_rans import assert_c_equals_python, needs_make, rans_payload_modes

cdecoder = pytest.importorskip("pvqcodec.cdecoder")
sys.path.insert(0, CDIR)
from fuzz_seeds import recode, seed_bytes  # noqa: E402

from pvqcodec.api import PvqcFile  # noqa: E402
from pvqcodec.codecs.ecsq import decode_ecsq_values  # noqa: E402
from pvqcodec.coding import StreamSpec  # noqa: E402
from pvqcodec.coding.rans import RansCoding  # noqa: E402
from pvqcodec.container.reader import Container  # noqa: E402
from pvqcodec.container.writer import TensorToWrite, to_bytes  # noqa: E402
from pvqcodec.errors import FormatError  # noqa: E402

TENSORS = [("w", (32, 64), "float32"), ("v", (24, 40), "bfloat16"), ("h", (5, 48), "float16")]

CONFIGS = [
    ("rht_2bit", dict(bits=2.0)),
    ("rht_4bit", dict(bits=4.0)),
    ("identity_8bit", dict(bits=8.0, transform="identity")),
    ("raw_coding_3bit", dict(bits=3.0, entropy="none")),
]


@pytest.fixture(scope="module")
def files():
    return {label: seed_bytes(TENSORS, dict(opts, codec="ecsq", entropy=opts.get("entropy", "auto")))
            for label, opts in CONFIGS}


@pytest.mark.parametrize("label", [c[0] for c in CONFIGS])
def test_c_equals_python(files, label):
    data = files[label]
    want = "raw" if label.startswith("raw") else "rans"
    assert all((m is None) == (want == "raw") for _, m in rans_payload_modes(data)), rans_payload_modes(data)
    assert_c_equals_python(data)
    # table mode in small chunks (partial last chunks, row ranges inside one chunk), uniform mode
    for S, mode in [(7, "auto"), (100, "table"), (33, "uniform")]:
        recoded = recode(data, S, mode)
        assert all(m is not None for _, m in rans_payload_modes(recoded))
        assert_c_equals_python(recoded)


def test_offset_counts_and_codings_are_covered(files):
    counts = {rec.codec_params["offsets"].size for data in files.values() for rec in Container.from_bytes(data).tensors}
    assert min(counts) <= 3 and max(counts) >= 10, counts


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


# ---- hand-built tensors: the corners the encoder does not write --------------------------


def ecsq_params(step, offsets=(), flags=0, reserved=0, count=None) -> bytes:
    n = len(offsets) if count is None else count
    return struct.pack("<fBBH", step, flags, reserved, n) + np.asarray(offsets, "<f4").tobytes()


def ecsq_file(symbols, rows, cols, params: bytes, coding="raw", transform=None, chunk=4096) -> bytes:
    """One float32 tensor "w" of codec 5 with the given indices (identity transform unless
    `transform` = (seed, row_block, col_block) for the RHT)."""
    sym = np.asarray(symbols, np.uint16).reshape(-1)
    spec = StreamSpec("indices", rows * cols, 16)
    if coding == "raw":
        payload = (0, np.frombuffer(sym.astype("<u2").tobytes(), np.uint8))
    else:
        payload = (RansCoding.id, RansCoding.encode(sym, spec, mode=coding, chunk_symbols=chunk))
    tid, tparams = (0, b"") if transform is None else (1, struct.pack("<QII", *transform))
    entry = TensorToWrite("w", "float32", (rows, cols), rows, cols, tid, tparams, 5, params, [payload])
    return to_bytes({}, [entry])


ALL_SYMBOLS = np.arange(65536, dtype=np.uint16)
OFFSETS = [0.25, -0.5, 1.0, 3.0, 0.0078125, -1e-3, 2.5]  # off(3) = 1.0 ... off(m >= 7) = 2.5


@pytest.mark.parametrize("params, label", [
    (ecsq_params(0.75, OFFSETS), "7 offsets, magnitudes above 7 share the last"),
    (ecsq_params(0.1), "n = 0: every offset 0"),
    (ecsq_params(1.0, [1.0, 2.0, 3.0]), "off(m) = m for m <= 3: t = 0, a = +0.0, negatives -0.0"),
    (ecsq_params(1e-45, [0.5]), "a subnormal step"),
    (ecsq_params(1e30, [-1e8, 0.3]), "large finite values"),
    (ecsq_params(0.01, np.linspace(-0.5, 0.5, 65535, dtype=np.float32)), "the most offsets, 65535"),
], ids=["7 offsets", "n=0", "t=0", "subnormal step", "large", "65535 offsets"])
def test_every_symbol_decodes_as_in_python(params, label):
    data = ecsq_file(ALL_SYMBOLS, 256, 256, params)
    rec = Container.from_bytes(data).tensors[0]
    want = decode_ecsq_values(ALL_SYMBOLS, rec.codec_params["step"], rec.codec_params["offsets"])
    assert np.all(np.isfinite(want)), label
    assert python_decode(data)[1]["w"].tobytes() == want.tobytes()
    assert_c_equals_python(data)
    # uniform mode over 2^16 in chunks of 1000 (65536 distinct symbols do not fit a table)
    assert_c_equals_python(ecsq_file(ALL_SYMBOLS, 256, 256, params, coding="uniform", chunk=1000))


def test_signed_zero_and_sign_bit():
    """s = 0 is +0.0 whatever the offsets; t = 0 gives +0.0 for odd s and -0.0 for even s."""
    data = ecsq_file([0, 1, 2, 3, 4, 5, 6, 0], 2, 4, ecsq_params(2.0, [1.0, 2.0, 2.5]))
    with cdecoder.CDecoder.from_bytes(data) as f:
        bits = f.decode("w").view(np.uint32).reshape(-1)
    assert [hex(b) for b in bits] == ["0x0", "0x0", "0x80000000", "0x0", "0x80000000", "0x3f800000",
                                      "0xbf800000", "0x0"]


def test_rht_and_table_mode_on_hand_built_streams():
    rng = np.random.default_rng(3)
    q = np.clip(np.round(rng.laplace(0, 4, 48 * 64)), -300, 300).astype(np.int64)
    sym = np.where(q > 0, 2 * q - 1, -2 * q)
    params = ecsq_params(0.05, [0.1, 0.05, 0.02])
    for coding, chunk in [("table", 500), ("table", 4096), ("raw", 0)]:
        assert_c_equals_python(ecsq_file(sym, 48, 64, params, coding=coding, chunk=chunk))
        assert_c_equals_python(ecsq_file(sym, 48, 64, params, coding=coding, chunk=chunk, transform=(77, 16, 64)))


# ---- errors ---------------------------------------------------------------------------------

INVALID_PARAMS = [
    ("step 0", ecsq_params(0.0, [0.1])),
    ("step -0", ecsq_params(-0.0, [0.1])),
    ("step -1", ecsq_params(-1.0, [0.1])),
    ("step nan", ecsq_params(float("nan"), [0.1])),
    ("step -inf", ecsq_params(float("-inf"), [0.1])),
    ("step +inf", ecsq_params(float("inf"), [0.1])),
    ("flags 1", ecsq_params(1.0, [0.1], flags=1)),
    ("flags 0x80", ecsq_params(1.0, [0.1], flags=0x80)),
    ("reserved 1", ecsq_params(1.0, [0.1], reserved=1)),
    ("offset nan", ecsq_params(1.0, [0.1, float("nan")])),
    ("offset inf", ecsq_params(1.0, [float("inf"), 0.1])),
    ("count over block", ecsq_params(1.0, [0.1, 0.2], count=3)),
    ("count under block", ecsq_params(1.0, [0.1, 0.2], count=1)),
    ("count 65535, 2 offsets", ecsq_params(1.0, [0.1, 0.2], count=65535)),
    ("block of 7 bytes", ecsq_params(1.0)[:7]),
    ("empty block", b""),
    ("one byte left over", ecsq_params(1.0, [0.1]) + b"\x00"),
    ("nan step and flags 1", ecsq_params(float("nan"), [0.1], flags=1)),
]


@pytest.mark.parametrize("label, params", INVALID_PARAMS, ids=[c[0] for c in INVALID_PARAMS])
def test_params_invalid_in_both(label, params):
    data = ecsq_file([1, 2, 3, 4], 2, 2, params)
    assert python_decode(data)[0] == c_decode(data)[0] == "params_invalid", label


def test_valid_corner_params_in_both():
    for params in (ecsq_params(1e-45), ecsq_params(3.4028234e38, [0.0]), ecsq_params(1.0, [-3.4e38, 3.4e38])):
        data = ecsq_file([0, 0, 0, 0], 2, 2, params)
        assert python_decode(data)[0] is None and c_decode(data)[0] is None


@pytest.mark.parametrize("params, sym", [
    (ecsq_params(1e35, [0.5]), 65535),            # (32768 - 0.5) * 1e35 = +inf, negated: 65534 -> -inf
    (ecsq_params(3.4028234e38, [0.0]), 3),        # 2 * FLT_MAX
    (ecsq_params(2.0, [-3.4e38]), 1),             # (1 + 3.4e38) * 2
], ids=["step 1e35", "step FLT_MAX", "offset -3.4e38"])
def test_overflow_is_payload_corrupt_in_the_rows_it_reaches(params, sym):
    """7.3: a decoded value that is not finite is payload_corrupt; a row range is checked on
    its own rows (row 2 holds the value)."""
    symbols = np.zeros((4, 8), np.uint16)
    symbols[2, 5] = sym
    for coding in ("raw", "table"):
        data = ecsq_file(symbols, 4, 8, params, coding=coding)
        assert python_decode(data)[0] == c_decode(data)[0] == "payload_corrupt"
        rec = Container.from_bytes(data).tensors[0]
        with np.errstate(over="ignore"):
            want = decode_ecsq_values(symbols, rec.codec_params["step"], rec.codec_params["offsets"]).reshape(4, 8)
        with cdecoder.CDecoder.from_bytes(data) as f:
            assert f.decode_rows("w", 0, 2).tobytes() == want[:2].tobytes()
            assert f.decode_rows("w", 3, 4).tobytes() == want[3:].tobytes()
            with pytest.raises(FormatError) as exc:
                f.decode_rows("w", 2, 3)
            assert exc.value.code == "payload_corrupt"
        # with the RHT the infinity spreads over its block: still payload_corrupt
        data = ecsq_file(symbols, 4, 8, params, coding=coding, transform=(5, 4, 8))
        assert python_decode(data)[0] == c_decode(data)[0] == "payload_corrupt"


def test_damaged_files_give_the_same_error_names(files):
    cases = corruptions(files["raw_coding_3bit"]) + corruptions(files["rht_2bit"])
    cases += corruptions(recode(files["identity_8bit"], 50, "table"))
    mismatches = []
    for label, data in cases:
        py, c = python_decode(data)[0], c_decode(data)[0]
        if py != c:
            mismatches.append((label, py, c))
    assert not mismatches, mismatches[:10]
    assert len(cases) > 500


@needs_make
def test_pvqdec_and_sanitizer_builds(files, tmp_path):
    """pvqdec --check names the Python decoder's errors on the corner files and damaged ecsq
    files; the ASan and UBSan builds report nothing on them."""
    corner = [ecsq_file(ALL_SYMBOLS, 256, 256, ecsq_params(0.75, OFFSETS)),
              ecsq_file(ALL_SYMBOLS, 256, 256, ecsq_params(1e30, [-1e8, 0.3]), coding="uniform", chunk=1000),
              ecsq_file(ALL_SYMBOLS, 256, 256, ecsq_params(1e35, [0.5]), coding="uniform", chunk=777)]
    corner += [ecsq_file([1, 2, 3, 4], 2, 2, params) for _, params in INVALID_PARAMS]
    cases = [(f"corner {i}", d) for i, d in enumerate(corner)]
    cases += [(label, data) for label, data in files.items()]
    cases += corruptions(recode(files["rht_4bit"], 64, "table"))[::4]
    paths = write_cases(tmp_path, cases)
    r, result = run_check(build("cli", str(tmp_path)), paths)
    for (label, data), p in zip(cases, paths):
        assert result[str(p)] == python_decode(data)[0], label
    assert result[str(paths[2])] == "payload_corrupt" and result[str(paths[0])] is None
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:exitcode=99",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=99")
    for kind, flag in (("asan", "-fsanitize=address"), ("ubsan", "-fsanitize=undefined")):
        if not _sanitizer_works(flag, tmp_path):
            continue
        r, result = run_check(build(kind, str(tmp_path)), paths, env=env)
        assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr[-3000:]
        assert len(result) == len(paths)
