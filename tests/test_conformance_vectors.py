"""The committed conformance vectors (conformance/): the Python reference decoder gives every
valid vector's hashes and every invalid vector's error, and the encoder has not drifted:
regenerating the set reproduces the committed files byte for byte.

If a test here fails after a deliberate change of the encoder or the format, regenerate
the vectors with `python conformance/generate.py` (and bump the spec's version if the
format changed); otherwise the change broke compatibility.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from pvqcodec import errors
from pvqcodec.codecs import all_codecs
from pvqcodec.container import format as fmt
from pvqcodec.container.reader import Container
from pvqcodec.decoder import decode_float32

from helpers import load_conformance  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conformance"


runner = load_conformance("run")
generate = load_conformance("generate")

VALID = sorted(p.name for p in (CONF / "vectors").iterdir() if p.is_dir())
MANIFEST = json.loads((CONF / "invalid" / "MANIFEST.json").read_text(encoding="utf-8"))
INVALID = sorted(MANIFEST["files"])
SPEC_VERSION = f"{fmt.VERSION_MAJOR}.{fmt.VERSION_MINOR}"


@pytest.fixture(scope="module")
def regenerated():
    """The whole set built again in memory from generate.py's cases and seeds."""
    valid, invalid = generate.build_all()
    return {name: (data, exp) for name, data, exp in valid}, {c.name + ".pvqc": c for c in invalid}


# ---- the set's shape --------------------------------------------------------------------------


def test_layout_and_size():
    for name in VALID:
        d = CONF / "vectors" / name
        assert sorted(p.name for p in d.iterdir()) == ["expected.json", "input.pvqc"], name
    on_disk = sorted(p.name for p in (CONF / "invalid").iterdir() if p.suffix == ".pvqc")
    assert on_disk == INVALID
    total = sum(p.stat().st_size for p in CONF.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert total < 2_000_000, f"the conformance folder holds {total:,} bytes"
    assert len(VALID) >= 40 and len(INVALID) >= 90


def test_every_rejection_condition_has_a_vector():
    codes = {c for c in errors.all_format_errors() if c != "format_error"}
    used = {e["error"] for e in MANIFEST["files"].values()}
    assert used <= codes, used - codes
    assert used == codes, f"no invalid vector for {sorted(codes - used)}"
    assert MANIFEST["spec_version"] == SPEC_VERSION
    for name, e in MANIFEST["files"].items():
        assert e["section"] and e["description"], name


def test_every_registered_codec_has_vectors():
    """A codec added to the registry needs vectors: run conformance/generate.py."""
    used = set()
    for name in VALID:
        exp = json.loads((CONF / "vectors" / name / "expected.json").read_text(encoding="utf-8"))
        assert exp["spec_version"] == SPEC_VERSION
        used |= {t["codec"] for t in exp["tensors"].values()}
    registered = {c.name for c in all_codecs()}
    assert used == registered, f"codecs without vectors: {sorted(registered - used)}"


# ---- the Python reference decoder against the committed files ----------------------------------


@pytest.mark.parametrize("name", VALID)
def test_valid_vector_decodes_to_its_hashes(name):
    d = CONF / "vectors" / name
    exp = json.loads((d / "expected.json").read_text(encoding="utf-8"))
    with Container.open(d / "input.pvqc") as c:
        assert c.names == list(exp["tensors"])
        for rec in c.tensors:
            want = exp["tensors"][rec.name]
            values = decode_float32(c, rec)
            assert values.dtype == np.float32
            assert list(values.shape) == want["shape"]
            assert rec.dtype == want["dtype"] and rec.codec.name == want["codec"]
            assert runner.sha256_float32(values) == want["sha256"], f"{name}/{rec.name}"


@pytest.mark.parametrize("name", INVALID)
def test_invalid_vector_gives_its_error(name):
    want = MANIFEST["files"][name]["error"]
    with pytest.raises(errors.FormatError) as info:
        with Container.open(CONF / "invalid" / name) as c:
            for rec in c.tensors:
                decode_float32(c, rec)
    assert info.value.code == want, f"{name}: {info.value}"


# ---- encoder drift ----------------------------------------------------------------------------


def test_no_encoder_drift(regenerated):
    valid, invalid = regenerated
    assert sorted(valid) == VALID, "the cases in generate.py and the committed vectors differ: regenerate"
    assert sorted(invalid) == INVALID, "the invalid cases in generate.py and the committed files differ: regenerate"
    for name in VALID:
        data, exp = valid[name]
        d = CONF / "vectors" / name
        assert data == (d / "input.pvqc").read_bytes(), f"vectors/{name}/input.pvqc: the encoder's bytes changed"
        committed = json.loads((d / "expected.json").read_text(encoding="utf-8"))
        assert committed["spec_version"] == exp["spec_version"]
        assert committed["generator"] == exp["generator"], name
        for t, want in exp["tensors"].items():
            got = committed["tensors"][t]
            assert {k: got[k] for k in ("sha256", "shape", "dtype", "codec")} == \
                   {k: want[k] for k in ("sha256", "shape", "dtype", "codec")}, f"{name}/{t}"
    for name, case in invalid.items():
        assert case.data == (CONF / "invalid" / name).read_bytes(), f"invalid/{name} changed"
        assert MANIFEST["files"][name]["error"] == case.error, name


def test_generator_check_mode_reports_drift(tmp_path, regenerated):
    """`generate.py --check` compares trees file by file: a changed byte is found."""
    valid, invalid = regenerated
    generate.write_all(tmp_path, [(n, d, e) for n, (d, e) in valid.items()], list(invalid.values()))
    assert generate.compare_trees(tmp_path, CONF) == []
    victim = tmp_path / "vectors" / VALID[0] / "input.pvqc"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1
    victim.write_bytes(bytes(data))
    (tmp_path / "invalid" / INVALID[0]).unlink()
    diffs = generate.compare_trees(tmp_path, CONF)
    assert any(VALID[0] in d and "differs" in d for d in diffs)
    assert any(INVALID[0] in d and "only in" in d for d in diffs)


# ---- the generator's independent serializer and the runner's hashing rules ---------------------


@pytest.mark.parametrize("name", VALID)
def test_rawfile_reproduces_the_writer(name):
    """RawFile (plain struct, no construct) rebuilds every valid file byte for byte."""
    data = (CONF / "vectors" / name / "input.pvqc").read_bytes()
    assert generate.RawFile.parse(data).to_bytes() == data


def test_widening_is_exact_for_every_float16_and_bfloat16():
    h = np.arange(65536, dtype=np.uint16)
    wide16 = np.frombuffer(runner.widen_to_float32(h.astype("<u2").tobytes(), "F16"), "<u4")
    ref16 = h.view(np.float16).astype(np.float32).view(np.uint32)
    finite = (h & 0x7C00) != 0x7C00
    assert np.array_equal(wide16[finite], ref16[finite])
    # Infinities and NaNs: sign, all-ones exponent, the payload moved up by 13 bits, never quieted.
    special = ~finite
    expect = ((h[special].astype(np.uint32) & 0x8000) << 16) | 0x7F800000 | ((h[special].astype(np.uint32) & 0x3FF) << 13)
    assert np.array_equal(wide16[special], expect)
    widebf = np.frombuffer(runner.widen_to_float32(h.astype("<u2").tobytes(), "BF16"), "<u4")
    assert np.array_equal(widebf, h.astype(np.uint32) << 16)
    raw = np.arange(10, dtype="<f4").tobytes()
    assert runner.widen_to_float32(raw, "float32") == raw


def test_sha256_is_of_row_major_little_endian_float32():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    import hashlib

    assert runner.sha256_float32(a) == hashlib.sha256(a.astype("<f4").tobytes()).hexdigest()
    assert runner.sha256_float32(np.asfortranarray(a)) == runner.sha256_float32(a)
    assert runner.sha256_float32(a.astype(">f4")) == runner.sha256_float32(a)
