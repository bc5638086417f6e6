"""The C decoder's eclattice codec (codec id 7, spec codecs/eclattice.md, 6.8): the same
float32 bits as the Python decoder on encoder output (2, 3 and 4 bits, odd column counts,
raw and rans payloads, small chunks, source dtypes, both transforms, row ranges, every
output dtype), and as the spec's arithmetic written out here on hand-built groups that
reach every symbol of every stream (coordinates up to 131,074); column strips that resume
the row walks; the same error names for each params_invalid rule of 6.8.1, each
payload_corrupt rule of 6.8.3, and on damaged files; pvqdec and the sanitizer builds."""

import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from test_c_decoder import CDIR, build
from test_c_decoder_ectcq import hand_file, payload_modes, raw_bits
from test_c_decoder_errors import _sanitizer_works, c_decode, corruptions, python_decode, run_check, write_cases
from test_c_decoder_rans import assert_c_equals_python, needs_make

cdecoder = pytest.importorskip("pvqcodec.cdecoder")
sys.path.insert(0, CDIR)
from fuzz_seeds import recode, seed_bytes  # noqa: E402

from pvqcodec.api import PvqcFile  # noqa: E402
from pvqcodec.container.writer import TensorToWrite, to_bytes  # noqa: E402
from pvqcodec.errors import FormatError  # noqa: E402

# The first tensors are not on the handle when assert_c_equals_python decodes their row ranges.
TENSORS = [("h", (24, 203), "float16"), ("w", (16, 64), "float32"), ("v", (5, 37), "bfloat16")]

CONFIGS = [
    ("rht_2bit", dict(bits=2.0)),
    ("rht_3bit", dict(bits=3.0, rht_block="8")),  # row blocks of 8
    ("identity_4bit", dict(bits=4.0, transform="identity")),
    ("raw_coding_2bit", dict(bits=2.0, entropy="none")),
]


@pytest.fixture(scope="module")
def files():
    return {label: seed_bytes(TENSORS, dict(opts, codec="eclattice", entropy=opts.get("entropy", "auto")))
            for label, opts in CONFIGS}


@pytest.mark.parametrize("label", [c[0] for c in CONFIGS])
def test_c_equals_python(files, label):
    data = files[label]
    assert payload_modes(data) == {0} if label.startswith("raw") else 1 in payload_modes(data), label
    assert_c_equals_python(data)
    for S, mode in [(5, "auto"), ((100, 13, 29, 3), "table"), (33, "uniform")]:
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
    """selftest's strips mode (see test_c_decoder_ectcq): strips of 1 to 100 columns, most
    of them not on group boundaries, equal whole rows."""
    paths = []
    for label, data in files.items():
        paths.append(tmp_path / f"{label}.pvqc")
        paths[-1].write_bytes(data)
    r = subprocess.run([selftest, "strips", *map(str, paths)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    assert sum(line.endswith(" ok") for line in r.stdout.split("\n")) == len(paths) * len(TENSORS), r.stdout


# ---- hand-built groups: the spec's arithmetic written out -------------------------------------


def eclattice_params(half_scale, int_groups, res0_groups, flags=0, reserved=(0, 0, 0)) -> bytes:
    return struct.pack("<fB3BQQ", half_scale, flags, *reserved, int_groups, res0_groups)


def unzigzag(s: int) -> int:
    return (s + 1) // 2 if s & 1 else -(s // 2)


def groups_from_symbols(rng, rows, cols, draw):
    """Random groups built symbol by symbol (6.8.4: any symbols make a valid group), each
    symbol from draw(). Returns (streams, c) with c the doubled coordinates (G, 8)."""
    gr = -(-cols // 8)
    row_int, row_res0, first, mid_int, mid_half, last0, last2, lasth, cs = [], [], [], [], [], [], [], [], []
    for _ in range(rows):
        n_i = n_0 = 0
        for _ in range(gr):
            s0 = draw()
            c = [unzigzag(s0)]
            k = c[0] % 2
            mid = [draw() for _ in range(6)]
            c += [2 * unzigzag(s) + k for s in mid]
            r = (-sum(c)) % 4
            s7 = draw()
            q = 4 * unzigzag(s7)
            c.append({0: q, 2: q + 2, 1: q + 1, 3: -(q + 1)}[r])
            first.append(s0)
            (mid_half if k else mid_int).extend(mid)
            {0: last0, 2: last2, 1: lasth, 3: lasth}[r].append(s7)
            n_i += k == 0
            n_0 += r == 0
            assert sum(c) % 4 == 0 and len({x % 2 for x in c}) == 1  # an E8 point, doubled
            cs.append(c)
        row_int.append(n_i)
        row_res0.append(n_0)
    streams = [np.array(x, np.uint64) for x in (row_int, row_res0, first, mid_int, mid_half, last0, last2, lasth)]
    return streams, np.array(cs, np.int64)


def expected_values(c, half_scale, rows, cols):
    """6.8.5: x_i = float32(c_i) * half_scale, padding discarded."""
    with np.errstate(over="ignore"):  # an overflow is what some tests look for
        x = c.astype(np.float32) * np.float32(half_scale)
    return x.reshape(rows, -1)[:, :cols]


@pytest.mark.parametrize("rows, cols, half_scale, spread", [
    (64, 1024, 0.01, "full"),
    (8, 1021, 1e-40, "full"),
    (40, 13, 0.37, "small"),
    (3, 1, 2.5e-3, "small"),
], ids=["1024 cols, every symbol", "1021 cols, subnormal scale", "13 cols", "1 col"])
def test_hand_built_groups(rows, cols, half_scale, spread):
    """Both decoders give the spec's values (computed here), raw and rans-coded, with the
    identity and (where the shape allows) the RHT, whole and in row ranges."""
    rng = np.random.default_rng(cols)
    if spread == "full":  # every 16-bit symbol in turn, then random ones
        extremes = [65535] * 8 + [65534] * 8  # c_0 = 32768, c_i = 65536, c_7 = 131072; then the odd coset
        pool = iter(np.concatenate([extremes, rng.permutation(65536), rng.integers(0, 65536, 1 << 17)]).tolist())
        draw = lambda: next(pool)  # noqa: E731
    else:
        draw = lambda: int(min(rng.geometric(0.35) - 1, 40))  # noqa: E731
    streams, c = groups_from_symbols(rng, rows, cols, draw)
    if spread == "full":
        assert np.abs(c).max() >= 131000 and np.abs(c[:, 0]).max() == 32768
    params = eclattice_params(half_scale, len(streams[5]) + len(streams[6]), len(streams[5]))
    want = expected_values(c, half_scale, rows, cols)
    codings = [("raw", None), ("table", None)] if spread == "small" else [("raw", None), ("uniform", None)]
    if rows % 8 == 0 and cols % 4 == 0:
        codings.append((codings[1][0], (5, 8, 4)))
    for coding, transform in codings:
        data = hand_file(7, params, streams, rows, cols, coding=coding, chunk=1000, transform=transform)
        err, out = python_decode(data)
        assert err is None
        if transform is None:
            assert out["w"].tobytes() == want.tobytes()
        assert_c_equals_python(data)


def test_signed_zero_and_coordinates():
    """c_i = 0 gives +0.0; the first group of the stream table in 6.8.4's order."""
    # one group: c_0 = 0 (s 0), c_1..c_6 = 0, 2, -2, 4, -4, 0 (s 0, 1, 2, 3, 4, 0): sum 0 -> r 0, c_7 = 4 (s 1)
    streams = [[1], [1], [0], [0, 1, 2, 3, 4, 0], [], [1], [], []]
    data = hand_file(7, eclattice_params(0.5, 1, 1), streams, 1, 8)
    with cdecoder.CDecoder.from_bytes(data) as f:
        got = f.decode("w").reshape(-1)
    assert got.view(np.uint32).tolist() == np.array([0, 0, 1, -1, 2, -2, 0, 2], np.float32).view(np.uint32).tolist()
    assert_c_equals_python(data)
    # half-integer: c_0 = 1 (s 1), c_1..c_6 = 1 each (s 0): sum 7 -> r = 1, c_7 = 4 * 0 + 1 = 1 (s 0): sum 8
    streams = [[0], [0], [1], [], [0] * 6, [], [], [0]]
    data = hand_file(7, eclattice_params(0.5, 0, 0), streams, 1, 8)
    with cdecoder.CDecoder.from_bytes(data) as f:
        assert f.decode("w").reshape(-1).tolist() == [0.5] * 8
    assert_c_equals_python(data)


# ---- errors ---------------------------------------------------------------------------------

_STREAMS, _ = groups_from_symbols(None, 2, 16, iter([1, 0, 0, 0, 0, 0, 0, 2] * 8).__next__)
_NI, _N0 = len(_STREAMS[5]) + len(_STREAMS[6]), len(_STREAMS[5])

INVALID_PARAMS = [
    ("half_scale 0", eclattice_params(0.0, _NI, _N0)),
    ("half_scale -0", eclattice_params(-0.0, _NI, _N0)),
    ("half_scale -1", eclattice_params(-1.0, _NI, _N0)),
    ("half_scale nan", eclattice_params(float("nan"), _NI, _N0)),
    ("half_scale inf", eclattice_params(float("inf"), _NI, _N0)),
    ("flags 1", eclattice_params(1.0, _NI, _N0, flags=1)),
    ("reserved 0", eclattice_params(1.0, _NI, _N0, reserved=(1, 0, 0))),
    ("reserved 2", eclattice_params(1.0, _NI, _N0, reserved=(0, 0, 0x80))),
    ("int_groups 5 > G = 4", eclattice_params(1.0, 5, 0)),
    ("int_groups 2^64 - 1", eclattice_params(1.0, 2**64 - 1, 0)),
    ("int_res0_groups > int_groups", eclattice_params(1.0, 2, 3)),
    ("block of 23 bytes", eclattice_params(1.0, _NI, _N0)[:23]),
    ("block of 25 bytes", eclattice_params(1.0, _NI, _N0) + b"\x00"),
    ("empty block", b""),
    ("nan and flags 1", eclattice_params(float("nan"), _NI, _N0, flags=1)),
]


def raw_file_with_params(params: bytes, rows=2, cols=16, streams=_STREAMS) -> bytes:
    """The streams raw-coded at their widths (the params are not parsed)."""
    w = (-(-cols // 8)).bit_length()
    payloads = [(0, raw_bits(sym, w if i < 2 else 16)) for i, sym in enumerate(streams)]
    entry = TensorToWrite("w", "float32", (rows, cols), rows, cols, 0, b"", 7, params, payloads)
    return to_bytes({}, [entry])


def test_valid_file_of_the_error_cases():
    data = raw_file_with_params(eclattice_params(1.0, _NI, _N0))
    assert python_decode(data)[0] is None and c_decode(data)[0] is None
    assert_c_equals_python(data)


@pytest.mark.parametrize("label, params", INVALID_PARAMS, ids=[c[0] for c in INVALID_PARAMS])
def test_params_invalid_in_both(label, params):
    data = raw_file_with_params(params)
    assert python_decode(data)[0] == c_decode(data)[0] == "params_invalid", label


def corrupt_cases():
    """(label, streams, n_i, n_0) of a 6 x 20 tensor (G_r = 3, row counts of 2 bits) that
    break one payload_corrupt rule of 6.8.3 each."""
    rng = np.random.default_rng(2)
    streams, _ = groups_from_symbols(rng, 6, 20, lambda: int(rng.integers(0, 7)))
    n_i, n_0 = len(streams[5]) + len(streams[6]), len(streams[5])
    I, Z = streams[0].astype(np.int64), streams[1].astype(np.int64)
    out = []

    def case(label, I2, Z2, first=None, mid=None):
        s = [x.copy() for x in streams]
        s[0], s[1] = np.asarray(I2, np.uint64), np.asarray(Z2, np.uint64)
        if first is not None:
            s[2] = first
        if mid is not None:
            s[3] = mid
        out.append((label, s, n_i, n_0))

    up = int(np.flatnonzero(I < 3)[0])
    down = int(np.flatnonzero((I > Z) & (np.arange(6) != up))[0])
    I2 = I.copy()
    I2[up] += 1
    I2[down] -= 1
    case("row_int: two rows swap a count, same sum", I2, Z)
    I2 = I.copy()
    I2[up] += 1
    case("row_int sum above int_groups", I2, Z)
    z = int(np.flatnonzero(Z > 0)[0])
    Z2 = Z.copy()
    Z2[z] -= 1
    case("row_int_res0 sum below int_res0_groups", I, Z2)
    iz = int(np.flatnonzero(I > Z)[0])
    jz = int(np.flatnonzero((Z > 0) & (np.arange(6) != iz))[0])
    Z2 = Z.copy()
    Z2[iz] += 1
    Z2[jz] -= 1
    case("residue-0 counts move between rows", I, Z2)
    full = int(np.flatnonzero(I == Z)[0]) if np.any((I == Z) & (I < 3)) else None
    if full is not None:
        I2, Z2 = I.copy(), Z.copy()
        Z2[full] += 1
        zz = int(np.flatnonzero((Z2 > 0) & (np.arange(6) != full))[0])
        Z2[zz] -= 1
        case("Z_r > I_r", I2, Z2)
    # a first symbol whose coset changes: row counts no longer match the groups
    f2 = streams[2].copy()
    f2[0] ^= 1  # c_0 changes by an odd amount
    case("a group's coset changes", I, Z, first=f2)
    # a middle symbol of an integer group flips the residue
    m2 = streams[3].copy()
    m2[0] = m2[0] + 1 if m2[0] % 2 == 0 else m2[0] - 1  # c_1 changes by 2 mod 4
    case("a group's residue changes", I, Z, mid=m2)
    return out


@pytest.mark.parametrize("coding", ["raw", "table"])
def test_payload_corrupt_rules_in_both(coding):
    cases = corrupt_cases()
    assert len(cases) >= 6
    for label, streams, n_i, n_0 in cases:
        params = eclattice_params(0.25, n_i, n_0)
        if coding == "raw":
            data = raw_file_with_params(params, 6, 20, streams)
        else:
            data = hand_file(7, params, streams, 6, 20, coding=coding, chunk=5)
        assert python_decode(data)[0] == c_decode(data)[0] == "payload_corrupt", label


def test_row_count_above_its_bound_in_both():
    """A 2-bit row_int symbol of 3 is G_r + 1 for 2 groups per row (cols 16): its bound."""
    s = [x.copy() for x in _STREAMS]
    s[0] = np.array([3, _NI - 3 if _NI >= 3 else 0], np.uint64)
    data = raw_file_with_params(eclattice_params(1.0, _NI, _N0), streams=s)
    assert python_decode(data)[0] == c_decode(data)[0] == "payload_corrupt"
    s = [x.copy() for x in _STREAMS]
    s[1] = np.array([3, 0], np.uint64)
    data = raw_file_with_params(eclattice_params(1.0, _NI, _N0), streams=s)
    assert python_decode(data)[0] == c_decode(data)[0] == "payload_corrupt"


def test_symbol_changes_are_valid_or_corrupt_in_both():
    """Every small change of one symbol of streams 0 to 4 of a valid tensor: both decoders
    decode it to the same bits or both call it payload_corrupt."""
    rng = np.random.default_rng(4)
    streams, _ = groups_from_symbols(rng, 3, 24, lambda: int(rng.integers(0, 5)))
    params = eclattice_params(0.5, len(streams[5]) + len(streams[6]), len(streams[5]))
    seen = set()
    for which in range(5):
        for i in range(len(streams[which])):
            for delta in (1, 2):
                s = [x.copy() for x in streams]
                s[which][i] = (int(s[which][i]) + delta) % (4 if which < 2 else 65536)
                data = raw_file_with_params(params, 3, 24, s)
                py, c = python_decode(data), c_decode(data)
                assert py[0] == c[0], (which, i, delta, py[0], c[0])
                if py[0] is None:
                    assert py[1]["w"].tobytes() == c[1]["w"].tobytes()
                seen.add(py[0])
    assert seen == {None, "payload_corrupt"}


def test_overflow_is_payload_corrupt():
    """7.3: 131074 * 3e33 overflows float32; the rows without it decode."""
    rows, cols = 3, 8
    syms = iter([0] * 16 + [0, 0, 0, 0, 0, 0, 0, 65535])
    streams, c = groups_from_symbols(None, rows, cols, lambda: next(syms))
    params = eclattice_params(3e33, len(streams[5]) + len(streams[6]), len(streams[5]))
    for coding in ("raw", "table"):
        data = hand_file(7, params, streams, rows, cols, coding=coding)
        assert python_decode(data)[0] == c_decode(data)[0] == "payload_corrupt"
        with cdecoder.CDecoder.from_bytes(data) as f:
            assert f.decode_rows("w", 0, 2).tobytes() == expected_values(c, 3e33, rows, cols)[:2].tobytes()
            with pytest.raises(FormatError) as exc:
                f.decode_rows("w", 2, 3)
            assert exc.value.code == "payload_corrupt"


def test_damaged_files_give_the_same_error_names(files):
    cases = corruptions(files["raw_coding_2bit"])[::2] + corruptions(files["rht_3bit"])[1::3]
    cases += corruptions(recode(files["identity_4bit"], 50, "table"))[::3]
    mismatches = []
    for label, data in cases:
        py, c = python_decode(data)[0], c_decode(data)[0]
        if py != c:
            mismatches.append((label, py, c))
    assert not mismatches, mismatches[:10]
    assert len(cases) > 300


@needs_make
def test_pvqdec_and_sanitizer_builds(files, tmp_path):
    """pvqdec --check names the Python decoder's errors on hand-built, invalid and damaged
    eclattice files; the ASan and UBSan builds report nothing on them."""
    rng = np.random.default_rng(1)
    streams, _ = groups_from_symbols(rng, 8, 203, lambda: int(rng.integers(0, 65536)))
    corner = [hand_file(7, eclattice_params(0.01, len(streams[5]) + len(streams[6]), len(streams[5])), streams, 8, 203,
                        coding="uniform", chunk=777)]
    corner += [raw_file_with_params(params) for _, params in INVALID_PARAMS]
    corner += [raw_file_with_params(eclattice_params(0.25, n_i, n_0), 6, 20, s) for _, s, n_i, n_0 in corrupt_cases()]
    cases = [(f"corner {i}", d) for i, d in enumerate(corner)]
    cases += list(files.items())
    cases += corruptions(recode(files["rht_2bit"], 64, "table"))[::4]
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
