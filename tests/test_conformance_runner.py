"""conformance/run.py end to end: it passes the reference CLI on a subset of the vectors and
fails decoders that are wrong in each way the contract forbids (wrong values, wrong dtype or
shape, accepting invalid files, no error name, output left behind, crashes, hangs)."""

import json
import shlex
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import load_conformance  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conformance"


runner = load_conformance("run")

# A few vectors of each kind: a quantized tensor, raw special values (F16 output widened by
# the runner), a file with no tensors, a checksum error in the last tensor, a payload error.
SUBSET_VALID = ["pvq_odd_shape", "raw_float16_special_values", "no_tensors"]
SUBSET_INVALID = ["payload_byte_flipped_last_tensor", "pvq_index_eq_N", "magic_text_mode"]
SUBSET = "^(" + "|".join(SUBSET_VALID + SUBSET_INVALID) + ")$"


def fake(tmp_path, name, body):
    """A decoder program: a Python script run with this interpreter."""
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return shlex.join([sys.executable, str(path)]) + " {input} {output}"


def by_name(report):
    return {r["name"]: r for r in report["results"]}


def test_reference_cli_passes_subset(tmp_path, capsys):
    out = tmp_path / "report.json"
    code = runner.main(["--only", SUBSET, "--jobs", "2", "--report", str(out), "--timeout", "120"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(out.read_text())
    assert report["summary"] == {"total": 6, "passed": 6, "failed": 0, "skipped": 0, "valid": 3, "invalid": 3}
    from pvqcodec.container import format as fmt

    assert report["spec_version"] == [f"{fmt.VERSION_MAJOR}.{fmt.VERSION_MINOR}"]
    r = by_name(report)
    assert r["payload_byte_flipped_last_tensor"]["detail"] == "rejected: checksum_mismatch"
    assert all(t["ok"] for t in r["raw_float16_special_values"]["tensors"].values())
    assert "6 of 6 passed" in printed


# A wrong decoder built on the reference: decode, then change what the contract cares about.
WRAPPED = """
    import sys
    import numpy as np
    from pvqcodec.api import PvqcFile
    from pvqcodec.errors import FormatError
    from pvqcodec.safetensors_io import write_safetensors

    MODE = {mode!r}
    src, dst = sys.argv[1], sys.argv[2]
    try:
        f = PvqcFile(src)
        arrays = {{n: f.decode(n) for n in f.names}}
    except FormatError as exc:
        if MODE == "leave_output":
            open(dst, "wb").write(b"partial")
        print(f"fake: error [{{exc.code if MODE != 'no_name' else 'bad'}}]: {{exc}}", file=sys.stderr)
        sys.exit(1)
    entries = []
    for i, (n, a) in enumerate(arrays.items()):
        a = np.array(a, np.float32)
        if MODE == "one_bit" and i == 0 and a.size:
            a.reshape(-1).view(np.uint32)[a.size // 2] ^= 1
        if MODE == "float16":
            entries.append((n, "F16", a.shape, lambda a=a: a.astype(np.float16)))
            continue
        shape = a.shape
        if MODE == "flat":
            shape = (a.size,)
        entries.append((n, "F32", shape, lambda a=a: a.reshape(-1)))
    if MODE == "extra":
        entries.append(("extra", "F32", (1,), lambda: np.zeros(1, np.float32)))
    write_safetensors(dst, entries)
"""


@pytest.mark.parametrize("mode, expect", [
    ("one_bit", "float32 values differ"),
    ("float16", "dtype F16, expected F32"),
    ("flat", "shape"),
    ("extra", "unexpected tensor 'extra'"),
])
def test_wrong_values_dtype_shape_or_tensors_fail(tmp_path, mode, expect):
    dec = fake(tmp_path, mode, WRAPPED.format(mode=mode))
    report = runner.run_suite(CONF, dec, timeout=120, jobs=1, only="^pvq_odd_shape$")
    (r,) = report["results"]
    assert not r["ok"] and expect in r["detail"], r
    assert report["summary"]["failed"] == 1


@pytest.mark.parametrize("mode, expect", [
    ("no_name", "without naming payload_corrupt"),
    ("leave_output", "left files behind: output.safetensors"),
])
def test_rejections_must_name_the_error_and_leave_nothing(tmp_path, mode, expect):
    dec = fake(tmp_path, mode, WRAPPED.format(mode=mode))
    report = runner.run_suite(CONF, dec, timeout=120, jobs=1, only="^pvq_index_eq_N$")
    (r,) = report["results"]
    assert not r["ok"] and expect in r["detail"], r


def test_decoder_that_accepts_everything_fails(tmp_path, capsys):
    dec = fake(tmp_path, "accept", """
        import sys
        open(sys.argv[2], "wb").write((2).to_bytes(8, "little") + b"{}")
    """)
    report_path = tmp_path / "r.json"
    code = runner.main(["--decoder", dec, "--only", SUBSET, "--report", str(report_path)])
    assert code == 1
    r = by_name(json.loads(report_path.read_text()))
    for name in SUBSET_INVALID:
        assert not r[name]["ok"] and "accepted a file it must reject" in r[name]["detail"]
    assert not r["pvq_odd_shape"]["ok"] and "missing" in r["pvq_odd_shape"]["detail"]
    assert r["no_tensors"]["ok"]  # an empty safetensors file is the right answer there
    assert "FAIL" in capsys.readouterr().out


def test_hang_is_a_timeout_failure(tmp_path):
    dec = fake(tmp_path, "hang", """
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a child too
        time.sleep(60)
    """)
    report = runner.run_suite(CONF, dec, timeout=1.5, jobs=2, only="^(pvq_odd_shape|magic_text_mode)$")
    assert report["summary"]["failed"] == 2
    for r in report["results"]:
        assert "timed out after 1.5 s" in r["detail"] and r["seconds"] < 30


def test_crash_is_a_failure_even_on_invalid_files(tmp_path):
    dec = fake(tmp_path, "crash", """
        import os, signal, sys
        sys.stderr.write("fake: error [magic_invalid]\\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGSEGV)
    """)
    report = runner.run_suite(CONF, dec, timeout=30, only="^magic_text_mode$")
    (r,) = report["results"]
    assert not r["ok"] and r["detail"] == "crashed (SIGSEGV)"
    # the same crash behind a shell wrapper shows as exit status 139
    sh = f"sh -c '{shlex.join([sys.executable, str(tmp_path / 'crash.py')])} \"$0\" \"$1\"' {{input}} {{output}}"
    (r,) = runner.run_suite(CONF, sh, timeout=30, only="^magic_text_mode$")["results"]
    assert not r["ok"] and r["detail"].startswith("crashed (SIGSEGV"), r


def test_missing_program_and_usage_errors(tmp_path, capsys):
    report = runner.run_suite(CONF, str(tmp_path / "nope") + " {input} {output}", only="^no_tensors$")
    (r,) = report["results"]
    assert not r["ok"] and "cannot start the decoder" in r["detail"]
    with pytest.raises(SystemExit) as info:
        runner.main(["--decoder", "cat {input}"])
    assert info.value.code == 2
    assert runner.main(["--only", "^no_such_vector$"]) == 2
    capsys.readouterr()
    assert runner.main(["--list", "--kind", "invalid", "--only", "^flags_"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed == ["invalid  flags_bit0  [reserved_nonzero]", "invalid  flags_bit31  [reserved_nonzero]"]


def test_error_name_must_be_a_whole_word():
    assert runner.error_name_in("pvqdec: error [checksum_mismatch]: x", "checksum_mismatch")
    assert runner.error_name_in("checksum_mismatch", "checksum_mismatch")
    assert not runner.error_name_in("error [checksum_mismatch_v2]", "checksum_mismatch")
    assert not runner.error_name_in("header_crc_checksum_mismatch", "checksum_mismatch")


def test_output_reader_rejects_malformed_safetensors(tmp_path):
    p = tmp_path / "o.safetensors"
    cases = {
        b"\x01": "too short",
        (100).to_bytes(8, "little") + b"{}": "does not fit",
        (2).to_bytes(8, "little") + b"[]": "not a JSON object",
        (3).to_bytes(8, "little") + b"{x}": "not JSON",
    }
    hdr = json.dumps({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}).encode()
    cases[len(hdr).to_bytes(8, "little") + hdr + b"\0" * 4] = "4 bytes for 2 elements"
    hdr = json.dumps({"t": {"dtype": "I8", "shape": [1], "data_offsets": [0, 1]}}).encode()
    cases[len(hdr).to_bytes(8, "little") + hdr + b"\0"] = "dtype I8"
    hdr = json.dumps({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}}).encode()
    cases[len(hdr).to_bytes(8, "little") + hdr + b"\0" * 4] = "outside the data"
    for data, msg in cases.items():
        p.write_bytes(data)
        with pytest.raises(runner.OutputError, match=msg):
            runner.read_safetensors(p)
    hdr = json.dumps({"__metadata__": {"a": "b"}, "t": {"dtype": "BF16", "shape": [], "data_offsets": [0, 2]}}).encode()
    p.write_bytes(len(hdr).to_bytes(8, "little") + hdr + b"\x80\x3f")
    assert runner.read_safetensors(p) == {"t": ("BF16", [], b"\x80\x3f")}


def test_c_reference_decoder_passes_the_whole_suite(tmp_path):
    """ref_decoder_c's pvqdec (built into a temporary folder) against every vector."""
    import os
    import shutil
    import subprocess

    src = ROOT / "ref_decoder_c"
    if not (src / "Makefile").is_file() or shutil.which("make") is None \
            or shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("ref_decoder_c/Makefile, make or a C compiler is missing: the C decoder cannot be built here")
    r = subprocess.run(["make", "-s", "-C", str(src), f"BUILD={tmp_path}", "cli"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    dec = shlex.join([str(tmp_path / "pvqdec")]) + " {input} {output}"
    # A decoder of format 1.0 implements raw and pvq and may reject later codecs (trellis,
    # lattice) as codec_unknown: find out which it implements, then hold it to all of those.
    full = runner.run_suite(CONF, dec, timeout=60, jobs=2, kind="valid")
    codecs = {"raw", "pvq"}
    for r in full["results"]:
        exp = json.loads((CONF / "vectors" / r["name"] / "expected.json").read_text(encoding="utf-8"))
        used = {t["codec"] for t in exp["tensors"].values()}
        if r["ok"]:
            codecs |= used
        else:
            assert "error [codec_unknown]" in r["detail"] and not used <= {"raw", "pvq"}, r
    report = runner.run_suite(CONF, dec, timeout=60, jobs=2, codecs=codecs)
    s = report["summary"]
    assert s["failed"] == 0, runner.format_table(report, verbose=True)
    assert s["total"] == len(runner.collect(CONF)) and s["passed"] >= 137


def test_codecs_option_skips_and_counts(tmp_path, capsys):
    dec = fake(tmp_path, "never", """
        import sys
        sys.exit(3)
    """)
    report_path = tmp_path / "r.json"
    code = runner.main(["--decoder", dec, "--codecs", "raw", "--only", "^(raw_float32|pvq_odd_shape|pvq_index_eq_N|"
                        "magic_text_mode)$", "--report", str(report_path)])
    assert code == 1
    report = json.loads(report_path.read_text())
    r = by_name(report)
    assert r["pvq_odd_shape"].get("skipped") and r["pvq_index_eq_N"].get("skipped")
    assert not r["raw_float32"]["ok"] and not r["magic_text_mode"]["ok"]  # needs no codec: runs
    assert report["summary"] == {"total": 4, "passed": 0, "failed": 2, "skipped": 2, "valid": 2, "invalid": 2}
    assert report["codecs"] == ["raw"]
    assert "2 skipped (codecs not in --codecs)" in capsys.readouterr().out
