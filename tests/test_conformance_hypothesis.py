"""Property suites of the conformance work (conformance/README.md):

(a) differential: generated tensors and options are encoded, then decoded by every decoder
    present (the Python reference through its API and its CLI; the C decoder through its cffi
    binding and its `pvqdec` program when they are built), and every decoder must give
    bit-identical float32 values. Directories of random *valid* PVQ symbols (any shape index
    below N(D, K), any gain, any finite row scale), which the encoder never emits, go
    through the same comparison.
(b) round trips of the lossless layers not covered elsewhere: the raw payload coding of
    streams of any width 0..1024 against a big-integer reference, and the container's
    writer against the generator's independent serializer (RawFile) on directories with
    PVQ entries. (Bit packing: tests/test_bits.py; enumeration: tests/test_pvq_enumeration.py;
    raw-tensor containers: tests/test_container.py.)
(c) robustness: valid vectors, truncated or mutated (blindly, or with every checksum
    repaired so the deeper checks are reached), must give the Python decoder a FormatError
    or a correct decode, never another exception; and the C decoder's `pvqdec`, run in a
    subprocess with a timeout, must exit 0 or 1 with an error name, never crash or hang,
    and agree with the Python decoder (the same values, or the same first error).

Profiles (tests/conftest.py): `ci` is fast; `HYPOTHESIS_PROFILE=thorough python -m pytest
tests/test_conformance*.py` runs far more examples.
"""

import functools
import json
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, note, settings, strategies as st

from pvqcodec import cli
from pvqcodec.codecs import all_codecs
from pvqcodec.codecs.pvq import enumeration
from pvqcodec.coding import RawCoding, StreamSpec
from pvqcodec.container import format as fmt
from pvqcodec.container.reader import Container
from pvqcodec.container.writer import TensorToWrite, to_bytes
from pvqcodec.decoder import decode_float32
from pvqcodec.errors import FormatError, InputError, PayloadCorrupt, all_format_errors
from pvqcodec.transforms import hadamard

from helpers import load_conformance  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conformance"
ERROR_NAMES = {c for c in all_format_errors() if c != "format_error"}
C_TIMEOUT = 30  # seconds one pvqdec run may take (a hang otherwise)


runner = load_conformance("run")
generate = load_conformance("generate")


# =========================================================================================
# The decoders
# =========================================================================================


# The codecs of format version 1.0: every decoder must implement them. A decoder of 1.0 may
# reject the codecs added later (trellis, lattice) as codec_unknown, so the C legs compare
# only the codecs the build implements (probed on one committed vector per codec).
REQUIRED_CODECS = {"raw", "pvq"}


def vector_codecs(name: str) -> set:
    exp = json.loads((CONF / "vectors" / name / "expected.json").read_text(encoding="utf-8"))
    return {t["codec"] for t in exp["tensors"].values()}


def probe_codecs(accepts) -> set:
    """The registered codecs a decoder implements; accepts(path) -> None (decoded) or its error name."""
    found = set()
    for codec in all_codecs():
        name = next((n for n in sorted(p.name for p in (CONF / "vectors").iterdir())
                     if vector_codecs(n) <= {codec.name, "raw"} and codec.name in vector_codecs(n)), None)
        if name is None:  # no vectors yet (test_conformance_vectors.py says so): not probed, not compared
            continue
        err = accepts(CONF / "vectors" / name / "input.pvqc")
        if err is None:
            found.add(codec.name)
        else:
            assert err == "codec_unknown", f"a C decoder rejects vectors/{name} with {err}"
    assert REQUIRED_CODECS <= found, f"a C decoder lacks codecs of format 1.0: {sorted(REQUIRED_CODECS - found)}"
    return found


class CProgram:
    def __init__(self, path):
        self.path = path
        self.codecs = probe_codecs(self._accepts)

    def _accepts(self, vector):
        with tempfile.TemporaryDirectory() as tmp:
            code, err, _ = run_pvqdec(self.path, vector.read_bytes(), Path(tmp))
        return None if code == 0 else next((n for n in ERROR_NAMES if runner.error_name_in(err, n)), err)


@pytest.fixture(scope="module")
def pvqdec(tmp_path_factory):
    """The C decoder's command-line program, built from ref_decoder_c/ into a temporary
    folder (or $PVQDEC), with the codecs it implements; None when it cannot be built here."""
    env = os.environ.get("PVQDEC")
    if env:
        assert os.access(env, os.X_OK), f"PVQDEC={env} is not an executable"
        return CProgram(env)
    src = ROOT / "ref_decoder_c"
    if not (src / "Makefile").is_file() or shutil.which("make") is None \
            or shutil.which(os.environ.get("CC", "cc")) is None:
        return None  # nothing to build with: the C legs are skipped
    build = tmp_path_factory.mktemp("pvqdec")
    r = subprocess.run(["make", "-s", "-C", str(src), f"BUILD={build}", "cli"], capture_output=True, text=True,
                       timeout=300)
    if r.returncode != 0:
        pytest.fail(f"ref_decoder_c does not build:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    path = build / "pvqdec"
    return CProgram(str(path)) if path.is_file() else None


def _c_binding():
    try:
        from pvqcodec import cdecoder
    except ImportError:
        return None
    return cdecoder if cdecoder.available() else None


C_BINDING = _c_binding()


def _binding_accepts(vector):
    try:
        with C_BINDING.CDecoder.open(vector) as f:
            for n in f.names:
                f.decode(n, "float32")
    except FormatError as exc:
        return exc.code
    return None


@functools.lru_cache(maxsize=None)
def c_binding_codecs() -> frozenset:
    return frozenset(probe_codecs(_binding_accepts)) if C_BINDING is not None else frozenset()


def hashes_python_api(data: bytes) -> dict:
    with Container.from_bytes(data) as c:
        return {rec.name: runner.sha256_float32(decode_float32(c, rec)) for rec in c.tensors}


def hashes_python_cli(data: bytes, tmp: Path) -> dict:
    src, dst = tmp / "in.pvqc", tmp / "py.safetensors"
    src.write_bytes(data)
    assert cli.main(["decode", "--dtype", "float32", "-q", str(src), str(dst)]) == 0
    return hashes_of_output(dst)


def hashes_of_output(path: Path) -> dict:
    return {n: runner.sha256_float32(runner.widen_to_float32(b, dt)) for n, (dt, _, b) in
            runner.read_safetensors(path).items()}


def hashes_c_binding(data: bytes) -> dict:
    with C_BINDING.CDecoder.from_bytes(data) as f:
        return {n: runner.sha256_float32(f.decode(n, "float32")) for n in f.names}


def run_pvqdec(exe: str, data: bytes, tmp: Path):
    """(exit status, stderr, output hashes or None); a crash or a hang fails the test."""
    src, dst = tmp / "c_in.pvqc", tmp / "c.safetensors"
    src.write_bytes(data)
    if dst.exists():
        dst.unlink()
    try:
        r = subprocess.run([exe, str(src), str(dst)], capture_output=True, timeout=C_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pvqdec hung (more than {C_TIMEOUT} s)")
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode >= 0, f"pvqdec killed by signal {-r.returncode}: {err}"
    assert r.returncode in (0, 1), f"pvqdec exit status {r.returncode}: {err}"
    if r.returncode == 0:
        return 0, err, hashes_of_output(dst)
    assert not dst.exists(), "pvqdec left an output file after an error"
    return 1, err, None


def file_codecs(data: bytes) -> set:
    with Container.from_bytes(data) as c:
        return {rec.codec.name for rec in c.tensors}


def all_decoders(data: bytes, prog) -> dict:
    """{decoder: {tensor: sha256}} for every decoder available that implements the file's codecs."""
    codecs = file_codecs(data)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = {"python-api": hashes_python_api(data), "python-cli": hashes_python_cli(data, tmp)}
        if C_BINDING is not None and codecs <= c_binding_codecs():
            out["c-cffi"] = hashes_c_binding(data)
        if prog is not None and codecs <= prog.codecs:
            code, err, hashes = run_pvqdec(prog.path, data, tmp)
            assert code == 0, f"pvqdec rejects a valid file: {err}"
            out["c-pvqdec"] = hashes
    return out


def assert_identical(results: dict):
    ref = results["python-api"]
    for name, got in results.items():
        assert got == ref, f"{name} differs from the Python reference: " + \
            ", ".join(t for t in ref if got.get(t) != ref[t])


def test_c_decoders_are_present(pvqdec):
    """Visible in the test report when the C legs of the differential suites cannot run."""
    if pvqdec is None and C_BINDING is None:
        pytest.skip("no C decoder built here: only the Python legs of the differential suites run")
    # the fixtures have probed them: each implements at least the codecs of format 1.0
    for codecs in ([pvqdec.codecs] if pvqdec else []) + ([c_binding_codecs()] if C_BINDING else []):
        assert REQUIRED_CODECS <= codecs


# =========================================================================================
# (a) differential: encoder output
# =========================================================================================

QUANT_CODECS = sorted(c.name for c in all_codecs() if c.quantizes)


@st.composite
def encode_setups(draw):
    codec = draw(st.sampled_from(QUANT_CODECS))
    rows = draw(st.integers(1, 12))
    cols = draw(st.integers(1, 72))
    rates = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0] if codec == "pvq" else [2.0, 3.0, 4.0]
    args = ["--bits", repr(draw(st.sampled_from(rates)))]
    if codec == "pvq":
        g = draw(st.sampled_from([None, 1, 3, 8, 16, 32, 64]))
        if g is not None:
            args += ["--group-size", str(g)]
        gb = draw(st.sampled_from([None, 0, 1, 3, 8]))
        if gb is not None:
            args += ["--gain-bits", str(gb)]
    args += ["--entropy", draw(st.sampled_from(["none", "auto", "rans"]))]  # raw and rANS payloads
    transform = draw(st.sampled_from(["rht", "identity"]))
    args += ["--transform", transform]
    if transform == "rht":
        args += ["--rht-block", draw(st.sampled_from(["auto", "1", "4", "12", "20", "full"]))]
        if args[-1] == "full":
            assume(hadamard.is_valid_block(rows) and hadamard.is_valid_block(cols))
    dtype = draw(st.sampled_from(["float32", "float16", "bfloat16"]))
    # "rows" and "outliers" reach 1000 and 300 times the scale: stay inside float16's range
    scale = draw(st.sampled_from([1.0, 1e-3] + ([] if dtype == "float16" else [100.0])))
    spec = generate.TensorSpec("w", (rows, cols), dtype, scale=scale,
                               fill=draw(st.sampled_from(["normal", "outliers", "rows", "zeros"])))
    raw = generate.TensorSpec("bias", (draw(st.integers(0, 9)),), draw(st.sampled_from(["float32", "float16", "bfloat16"])))
    return codec, args, [spec, raw], draw(st.integers(0, 2**32 - 1))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(setup=encode_setups())
def test_differential_encoded_tensors(setup, pvqdec):
    codec, args, specs, seed = setup
    note(f"{codec} {args} {specs}")
    try:
        data, _ = generate.encode_case(generate.ValidCase("h", "", specs, codec=codec, args=tuple(args), seed=seed))
    except InputError:  # options this codec does not offer (a rate, a group size): not a decoder question
        assume(False)
    assert_identical(all_decoders(data, pvqdec))


# =========================================================================================
# (a) differential + (b) container round trip: random valid PVQ directories
# =========================================================================================

F16_FINITE = st.integers(0, 0xFFFF).filter(lambda h: (h & 0x7C00) != 0x7C00)


@st.composite
def pvq_tensor(draw, name):
    rows, cols = draw(st.integers(1, 6)), draw(st.integers(1, 40))
    d = draw(st.sampled_from([1, 2, 3, 5, 8, 13, 32, 64]))
    k = draw(st.sampled_from([1, 2, 7, 20, 60, 300, 4096]))
    assume(enumeration.index_bits(d, k) <= 1024)
    gb = draw(st.integers(0, 8))
    table = draw(st.lists(st.floats(-1e4, 1e4, width=32), min_size=1 << gb, max_size=1 << gb))
    dtype = draw(st.sampled_from(["float32", "float16", "bfloat16"]))
    if draw(st.booleans()):
        tid, tparams = 0, b""
    else:
        rb = draw(st.sampled_from([b for b in range(1, rows + 1) if rows % b == 0 and hadamard.is_valid_block(b)]))
        cb = draw(st.sampled_from([b for b in range(1, cols + 1) if cols % b == 0 and hadamard.is_valid_block(b)]))
        tid, tparams = 1, struct.pack("<QII", draw(st.integers(0, 2**64 - 1)), rb, cb)
    groups = rows * -(-cols // d)
    n = enumeration.pvq_count(d, k)
    scales = draw(st.lists(F16_FINITE, min_size=rows, max_size=rows))
    gains = draw(st.lists(st.integers(0, (1 << gb) - 1), min_size=groups, max_size=groups))
    # shape indices across the whole range, the extremes included
    idx = draw(st.lists(st.one_of(st.integers(0, n - 1), st.sampled_from([0, 1, n - 2, n - 1])),
                        min_size=groups, max_size=groups))
    params = generate.pvq_params_bytes(d, k, gb, table)
    ib = enumeration.index_bits(d, k)
    streams = [(16, scales), (gb, gains), (ib, idx)]
    payloads = [(0, np.frombuffer(pack_reference(vals, w), np.uint8)) for w, vals in streams]
    shape = (rows, cols) if draw(st.booleans()) or rows == 1 else (rows, 1, cols)
    return TensorToWrite(name, dtype, shape, rows, cols, tid, tparams, 1, params, payloads), streams


def pack_reference(values, width) -> bytes:
    """Spec 4.2 with one big integer: symbol i occupies bits i*width .. i*width+width-1."""
    big = 0
    for i, v in enumerate(values):
        big |= int(v) << (i * width)
    return big.to_bytes((len(values) * width + 7) // 8, "little")


@st.composite
def pvq_directories(draw):
    n = draw(st.integers(1, 3))
    tensors, streams = [], []
    for i in range(n):
        if draw(st.integers(0, 3)) == 0:
            dtype = draw(st.sampled_from(["float32", "float16", "bfloat16"]))
            numel = draw(st.integers(0, 6))
            data = np.frombuffer(draw(st.binary(min_size=numel * fmt.DTYPE_SIZES[dtype],
                                                max_size=numel * fmt.DTYPE_SIZES[dtype])), np.uint8)
            tensors.append(TensorToWrite(f"raw{i}", dtype, (numel,), 1, numel, 0, b"", 0, b"", [(0, data)]))
            streams.append(None)
        else:
            t, s = draw(pvq_tensor(f"pvq{i}"))
            tensors.append(t)
            streams.append(s)
    meta = draw(st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=12), max_size=3))
    return meta, tensors, streams


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(directory=pvq_directories())
def test_container_round_trip_and_differential_on_pvq_directories(directory, pvqdec):
    meta, tensors, streams = directory
    data = to_bytes(meta, tensors)
    # (b) the writer and the independent serializer agree byte for byte
    rf = generate.RawFile(
        [(k.encode(), v.encode()) for k, v in meta.items()],
        [generate.RawTensor(t.name.encode(), fmt.DTYPE_IDS[t.dtype], list(t.shape), t.rows, t.cols, t.transform_id,
                            t.transform_params, t.codec_id, t.codec_params,
                            [generate.RawPayload(c, p.tobytes()) for c, p in t.payloads]) for t in tensors])
    assert rf.to_bytes() == data
    assert generate.RawFile.parse(data).to_bytes() == data
    # the reader recovers every field and every symbol
    with Container.from_bytes(data) as c:
        assert c.metadata == meta
        for t, rec, s in zip(tensors, c.tensors, streams):
            assert (rec.name, rec.dtype, rec.shape, rec.rows, rec.cols) == (t.name, t.dtype, t.shape, t.rows, t.cols)
            assert rec.transform.build_params(rec.transform_params) == t.transform_params
            assert rec.codec.build_params(rec.codec_params) == t.codec_params
            if s is None:
                continue
            for i, (width, values) in enumerate(s):
                sym = RawCoding.decode(c.payload(rec, i), rec.payloads[i].stream)
                assert rec.payloads[i].stream.width == width
                assert symbols_as_ints(sym) == [int(v) for v in values]
    # (a) every decoder gives the same bits on symbols the encoder would never choose
    assert_identical(all_decoders(data, pvqdec))


def symbols_as_ints(sym) -> list:
    sym = np.asarray(sym)
    if sym.ndim == 1:
        return [int(v) for v in sym]
    return [sum(int(v) << (64 * l) for l, v in enumerate(row)) for row in sym]


# =========================================================================================
# (b) the raw coding of any stream
# =========================================================================================


@given(width=st.one_of(st.integers(0, 130), st.sampled_from([255, 256, 257, 511, 512, 700, 1023, 1024])),
       data=st.data())
def test_raw_coding_round_trip_any_width(width, data):
    count = data.draw(st.integers(0, 24))
    values = data.draw(st.lists(st.integers(0, (1 << width) - 1), min_size=count, max_size=count))
    spec = StreamSpec("s", count, width)
    limbs = max(1, -(-width // 64))
    arr = np.array([[(v >> (64 * l)) & (2**64 - 1) for l in range(limbs)] for v in values], np.uint64).reshape(
        count, limbs)
    buf = RawCoding.encode(arr if limbs > 1 else arr[:, 0], spec)
    assert buf.tobytes() == pack_reference(values, width)
    assert buf.size == RawCoding.expected_length(spec)
    back = RawCoding.decode(buf, spec)
    assert symbols_as_ints(back) == values
    if width <= 64:
        assert back.ndim == 1 and back.dtype.itemsize * 8 >= width
    # the padding bits of the last byte must be zero
    used = count * width % 8
    if used:
        bad = buf.copy()
        bad[-1] |= 1 << data.draw(st.integers(used, 7))
        with pytest.raises(PayloadCorrupt):
            RawCoding.decode(bad, spec)
    # and the length must be exact (the container checks it first; the coding refuses too)
    with pytest.raises(PayloadCorrupt):
        RawCoding.decode(np.concatenate([buf, np.zeros(1, np.uint8)]), spec)


# =========================================================================================
# (c) robustness: truncated and mutated valid files
# =========================================================================================

SEED_VECTORS = sorted(p.name for p in (CONF / "vectors").iterdir()
                      if (p / "input.pvqc").is_file() and (p / "input.pvqc").stat().st_size <= 4096)
INTERESTING = sorted({0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 63, 64, 65, 127, 128, 255, 256, 1023, 1024, 1025,
                      4095, 4096, 4097, 65535, 65536, 65537, 2**31 - 1, 2**31, 2**32 - 1, 2**40, 2**40 + 1, 2**48,
                      2**48 + 1, 2**50 + 1, 2**62, 2**63, 2**64 - 1})


def interesting(bits: int, old: int):
    cands = [v for v in INTERESTING if v < 1 << bits] + [max(0, old - 1), min((1 << bits) - 1, old + 1)]
    return st.one_of(st.sampled_from(cands), st.integers(0, (1 << bits) - 1))


@st.composite
def mutated_files(draw):
    """(file bytes, the seed vector's name, repaired): repaired mutations recompute every CRC,
    offset and size, so they reach the checks behind the checksums."""
    name = draw(st.sampled_from(SEED_VECTORS))
    base = (CONF / "vectors" / name / "input.pvqc").read_bytes()
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "file_header",
                                 "directory", "params", "payload", "metadata"]))
    data = bytearray(base)
    if kind == "truncate":
        return bytes(data[:draw(st.integers(0, len(data) - 1))]), name, False
    if kind == "flip":
        for _ in range(draw(st.integers(1, 3))):
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        return bytes(data), name, False
    if kind == "insert":
        at = draw(st.integers(0, len(data)))
        return bytes(data[:at] + draw(st.binary(min_size=1, max_size=9)) + data[at:]), name, False
    if kind == "delete":
        at = draw(st.integers(0, len(data) - 1))
        return bytes(data[:at] + data[at + draw(st.integers(1, 9)):]), name, False
    if kind == "file_header":
        off, size = draw(st.sampled_from([(8, 2), (10, 2), (12, 4), (16, 4), (20, 4), (24, 8)]))
        old = int.from_bytes(data[off:off + size], "little")
        data[off:off + size] = draw(interesting(8 * size, old)).to_bytes(size, "little")
        return bytes(data), name, False
    rf = generate.RawFile.parse(base)
    if kind == "metadata":
        op = draw(st.sampled_from(["key", "value", "count", "add"]))
        if op == "add" or not rf.metadata:
            rf.metadata.append((draw(st.binary(max_size=6)), draw(st.binary(max_size=6))))
        elif op == "count":
            rf.metadata_count = draw(interesting(32, len(rf.metadata)))
        else:
            i = draw(st.integers(0, len(rf.metadata) - 1))
            k, v = rf.metadata[i][:2]
            if op == "key":
                rf.metadata[i] = (k, v, draw(interesting(16, len(k))), None)
            else:
                rf.metadata[i] = (k, v, None, draw(interesting(32, len(v))))
        return rf.to_bytes(), name, True
    assume(rf.tensors)
    t = draw(st.sampled_from(rf.tensors))
    if kind == "directory":
        field, bits = draw(st.sampled_from([("dtype", 8), ("rank", 8), ("rows", 64), ("cols", 64),
                                            ("transform_id", 8), ("codec_id", 8), ("name_len", 16),
                                            ("payload_count", 8), ("shape", 64), ("coding", 8), ("length", 64),
                                            ("crc", 32), ("declared_offset", 64)]))
        if field == "shape":
            assume(t.shape)
            i = draw(st.integers(0, len(t.shape) - 1))
            t.shape[i] = draw(interesting(64, t.shape[i]))
        elif field in ("coding", "length", "crc", "declared_offset"):
            assume(t.payloads)
            p = draw(st.sampled_from(t.payloads))
            setattr(p, field, draw(interesting(bits, len(p.data) if field == "length" else 0)))
        else:
            setattr(t, field, draw(interesting(bits, getattr(t, field) or 0)))
        return rf.to_bytes(), name, True
    if kind == "params":
        which = draw(st.sampled_from(["codec_params", "transform_params"]))
        raw = bytearray(getattr(t, which))
        op = draw(st.sampled_from(["set", "cut", "grow"]))
        if op == "set" and raw:
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] = draw(st.integers(0, 255))
        elif op == "cut" and raw:
            raw = raw[:draw(st.integers(0, len(raw) - 1))]
        else:
            raw += draw(st.binary(min_size=1, max_size=4))
        setattr(t, which, bytes(raw))
        return rf.to_bytes(), name, True
    # kind == "payload": change the content, keep its CRC right
    assume(any(p.data for p in t.payloads))
    p = draw(st.sampled_from([p for p in t.payloads if p.data]))
    b = bytearray(p.data)
    for _ in range(draw(st.integers(1, 3))):
        b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
    p.data = bytes(b)
    return rf.to_bytes(), name, True


def python_outcome(data: bytes):
    """('ok', hashes) or ('error', code); any other exception propagates (a bug)."""
    try:
        return "ok", hashes_python_api(data)
    except FormatError as exc:
        assert exc.code in ERROR_NAMES, exc.code
        return "error", exc.code


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated_files())
def test_python_decoder_robust_to_mutations(case):
    data, name, repaired = case
    kind, result = python_outcome(data)
    if kind == "ok" and not repaired:
        # nothing a blind mutation can change is accepted except what does not affect values
        exp = json.loads((CONF / "vectors" / name / "expected.json").read_text(encoding="utf-8"))
        assert result == {t: v["sha256"] for t, v in exp["tensors"].items()}


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated_files())
def test_c_decoder_cli_robust_to_mutations(case, pvqdec):
    if pvqdec is None:
        pytest.skip("pvqdec is not built here (ref_decoder_c/Makefile missing or no make)")
    data, name, repaired = case
    assume(vector_codecs(name) <= pvqdec.codecs)  # a codec this build does not implement
    py_kind, py_result = python_outcome(data)
    with tempfile.TemporaryDirectory() as tmp:
        code, err, hashes = run_pvqdec(pvqdec.path, data, Path(tmp))
    if code == 0:
        assert py_kind == "ok", f"pvqdec accepts a file the Python decoder rejects with {py_result}"
        assert hashes == py_result, "pvqdec and the Python decoder decode the file differently"
    else:
        names = [n for n in ERROR_NAMES if runner.error_name_in(err, n)]
        assert names, f"pvqdec rejected the file without naming a spec error: {err}"
        assert py_kind == "error", f"pvqdec rejects a file the Python decoder accepts: {err}"
        # both follow the spec's check order, so the first error is the same
        assert py_result in names, f"pvqdec says {names}, the Python decoder {py_result}: {err}"
