"""Run the pvqc conformance vectors through a decoder program.

    python conformance/run.py                                   # the Python reference decoder
    python conformance/run.py --decoder "ref_decoder_c/pvqdec {input} {output}"
    python conformance/run.py --decoder "./mydec {input} {output}" --report report.json

The decoder is any program with the command-line contract of `pvqdec` (README.md in this
folder): `DECODER INPUT.pvqc OUTPUT.safetensors`.

* On a valid file it exits 0 and writes a safetensors file holding every tensor of the
  .pvqc file under its name and shape: quantized tensors as F32, raw tensors as F32 or in
  their source dtype (F16, BF16). The runner widens F16 and BF16 to float32 exactly (bit
  operations: NaN payloads are kept, not quieted) and compares the SHA-256 of each
  tensor's float32 values, little-endian, row-major, with `expected.json`.
* On an invalid file it exits with a non-zero status (not killed by a signal), writes
  the spec's error name (spec/pvqc.md section 9, e.g. `checksum_mismatch`) somewhere in
  its standard error, and leaves no output file behind.

A run that exceeds the timeout is a failure (a hang). The runner prints a table, writes a
JSON report with --report, and exits 1 if any vector failed (2 for bad usage). A decoder
that implements only some codecs is run with --codecs: the vectors needing other codecs
are skipped and counted as skipped, never as passed.

This file uses only the Python standard library, so it runs wherever Python 3.8+ does.
"""

from __future__ import annotations

import argparse
import array
import concurrent.futures
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

DEFAULT_DECODER = shlex.join([sys.executable, "-m", "pvqcodec", "decode", "--dtype", "float32", "-q",
                              "{input}", "{output}"])
DEFAULT_TIMEOUT = 60.0

# Exit statuses a shell reports for a child killed by a signal (128 + the signal's number):
# a decoder run through a wrapper script that crashes shows up as one of these.
CRASH_SIGNALS = ("SIGSEGV", "SIGABRT", "SIGBUS", "SIGFPE", "SIGILL", "SIGKILL", "SIGSYS", "SIGTRAP")
CRASH_STATUSES = {128 + int(getattr(signal, s)): s for s in CRASH_SIGNALS if hasattr(signal, s)}

SAFETENSORS_DTYPES = {"F32": 4, "F16": 2, "BF16": 2}
SOURCE_TO_SAFETENSORS = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
MAX_OUTPUT_HEADER = 100 * 1024 * 1024


# =========================================================================================
# Hashing: float32 values, little-endian, row-major
# =========================================================================================


def _f16_to_f32_bits(h: int) -> int:
    """The float32 bit pattern of a float16 bit pattern, exactly (IEEE widening that keeps
    NaN payloads: the 10-bit payload moves to the top of the 23-bit one, quiet bit as is)."""
    sign = (h >> 15) << 31
    exp = (h >> 10) & 0x1F
    man = h & 0x3FF
    if exp == 0x1F:
        return sign | 0x7F800000 | (man << 13)
    if exp == 0:
        if man == 0:
            return sign
        e = 113  # the exponent of 2^-14 is 127 - 14; normalize the subnormal
        while not man & 0x400:
            man <<= 1
            e -= 1
        return sign | (e << 23) | ((man & 0x3FF) << 13)
    return sign | ((exp + 112) << 23) | (man << 13)


_F16_TABLE = None


def _u16_array(data: bytes) -> array.array:
    a = array.array("H")
    a.frombytes(data)
    if sys.byteorder == "big":
        a.byteswap()
    return a


def _u32_bytes(a: array.array) -> bytes:
    if sys.byteorder == "big":
        a = array.array("I", a)
        a.byteswap()
    return a.tobytes()


def widen_to_float32(data: bytes, dtype: str) -> bytes:
    """Little-endian float32 bytes of little-endian `data` in `dtype` (F32/F16/BF16 or
    float32/float16/bfloat16), exactly."""
    global _F16_TABLE
    dtype = SOURCE_TO_SAFETENSORS.get(dtype, dtype)
    data = bytes(data)
    if dtype == "F32":
        return data
    if array.array("I").itemsize != 4:  # pragma: no cover - every platform Python runs on today
        raise RuntimeError("array('I') is not 32 bits on this platform")
    if dtype == "BF16":
        return _u32_bytes(array.array("I", (h << 16 for h in _u16_array(data))))
    if dtype == "F16":
        if _F16_TABLE is None:
            _F16_TABLE = array.array("I", (_f16_to_f32_bits(h) for h in range(65536)))
        table = _F16_TABLE
        return _u32_bytes(array.array("I", (table[h] for h in _u16_array(data))))
    raise ValueError(f"cannot widen dtype {dtype}")


def sha256_float32(values) -> str:
    """SHA-256 (hex) of float32 values: little-endian bytes, or a numpy array (row-major)."""
    if not isinstance(values, (bytes, bytearray, memoryview)):
        values = values.astype("<f4").tobytes(order="C")
    return hashlib.sha256(values).hexdigest()


# =========================================================================================
# Reading the decoder's output
# =========================================================================================


class OutputError(Exception):
    pass


def read_safetensors(path: Path) -> dict:
    """{name: (dtype, shape, data bytes)} of a safetensors file, with its structure checked."""
    raw = Path(path).read_bytes()
    if len(raw) < 8:
        raise OutputError(f"output is {len(raw)} bytes, too short for a safetensors file")
    n = int.from_bytes(raw[:8], "little")
    if n > MAX_OUTPUT_HEADER or 8 + n > len(raw):
        raise OutputError(f"output's safetensors header size {n} does not fit the file ({len(raw)} bytes)")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise OutputError(f"output's safetensors header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise OutputError("output's safetensors header is not a JSON object")
    data = raw[8 + n:]
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise OutputError(f"output tensor {name!r}: malformed entry {entry!r}") from None
        if dtype not in SAFETENSORS_DTYPES:
            raise OutputError(f"output tensor {name!r} has dtype {dtype}; expected F32, F16 or BF16")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise OutputError(f"output tensor {name!r}: bad shape {shape!r}")
        numel = 1
        for d in shape:
            numel *= d
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= len(data)):
            raise OutputError(f"output tensor {name!r}: data_offsets {[start, end]} outside the data ({len(data)} bytes)")
        if end - start != numel * SAFETENSORS_DTYPES[dtype]:
            raise OutputError(f"output tensor {name!r}: {end - start} bytes for {numel} elements of {dtype}")
        out[name] = (dtype, shape, data[start:end])
    return out


# =========================================================================================
# Running the decoder
# =========================================================================================


def decoder_command(template: str, input_path: Path, output_path: Path) -> list:
    tokens = shlex.split(template)
    return [t.replace("{input}", str(input_path)).replace("{output}", str(output_path)) for t in tokens]


def run_decoder(template: str, input_path: Path, output_path: Path, timeout: float) -> dict:
    """Run the decoder once: {returncode, stderr, seconds, timed_out, signal}."""
    cmd = decoder_command(template, input_path, output_path)
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
    except OSError as exc:
        return {"returncode": None, "stderr": f"cannot start the decoder: {exc}", "seconds": 0.0,
                "timed_out": False, "signal": None, "start_error": True}
    timed_out = False
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the decoder and anything it started
        except (ProcessLookupError, PermissionError):
            proc.kill()
        _, err = proc.communicate()
    rc = proc.returncode
    sig = None
    if not timed_out:
        if rc is not None and rc < 0:
            sig = _signal_name(-rc)
        elif rc in CRASH_STATUSES:
            sig = CRASH_STATUSES[rc] + " (exit status %d)" % rc
    return {"returncode": rc, "stderr": err.decode("utf-8", "replace"), "seconds": round(time.monotonic() - t0, 3),
            "timed_out": timed_out, "signal": sig, "start_error": False}


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _tail(text: str, n: int = 600) -> str:
    text = text.strip()
    return text if len(text) <= n else "..." + text[-n:]


def _failure_of_run(r: dict, timeout: float):
    if r.get("start_error"):
        return r["stderr"]
    if r["timed_out"]:
        return f"timed out after {timeout:g} s (a hang)"
    if r["signal"]:
        return f"crashed ({r['signal']})"
    return None


def error_name_in(stderr: str, name: str) -> bool:
    """The error name appears in stderr as a whole word (letters, digits and _ around it do not count)."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", stderr) is not None


# =========================================================================================
# Checking one vector
# =========================================================================================


def _not_implemented(needed, codecs) -> list:
    return sorted(set(needed) - set(codecs)) if codecs is not None else []


def check_valid(vector_dir: Path, template: str, timeout: float, codecs=None) -> dict:
    expected = json.loads((vector_dir / "expected.json").read_text(encoding="utf-8"))
    res = {"kind": "valid", "name": vector_dir.name, "ok": False, "detail": "", "tensors": {}}
    missing = _not_implemented((t["codec"] for t in expected["tensors"].values()), codecs)
    if missing:
        return {**res, "ok": True, "skipped": True, "detail": f"skipped: codec {', '.join(missing)} not in --codecs"}
    tmp = Path(tempfile.mkdtemp(prefix="pvqc-conf-"))
    try:
        out = tmp / "output.safetensors"
        r = run_decoder(template, vector_dir / "input.pvqc", out, timeout)
        res.update(returncode=r["returncode"], seconds=r["seconds"], stderr_tail=_tail(r["stderr"]))
        bad = _failure_of_run(r, timeout)
        if bad:
            res["detail"] = bad
            return res
        if r["returncode"] != 0:
            res["detail"] = f"rejected a valid file (exit status {r['returncode']}): {_tail(r['stderr'], 200)}"
            return res
        if not out.is_file():
            res["detail"] = "exit status 0 but no output file"
            return res
        try:
            got = read_safetensors(out)
        except OutputError as exc:
            res["detail"] = str(exc)
            return res
        problems = []
        want = expected["tensors"]
        for name in sorted(set(got) - set(want)):
            problems.append(f"unexpected tensor {name!r}")
        for name, w in want.items():
            t = {"expected_sha256": w["sha256"]}
            res["tensors"][name] = t
            if name not in got:
                t["ok"] = False
                problems.append(f"tensor {name!r} missing")
                continue
            dtype, shape, data = got[name]
            allowed = {"F32"} | ({SOURCE_TO_SAFETENSORS[w["dtype"]]} if w.get("codec") == "raw" else set())
            if dtype not in allowed:
                t["ok"] = False
                problems.append(f"tensor {name!r}: dtype {dtype}, expected {' or '.join(sorted(allowed))}")
                continue
            if shape != w["shape"]:
                t["ok"] = False
                problems.append(f"tensor {name!r}: shape {shape}, expected {w['shape']}")
                continue
            digest = sha256_float32(widen_to_float32(data, dtype))
            t["sha256"] = digest
            t["ok"] = digest == w["sha256"]
            if not t["ok"]:
                problems.append(f"tensor {name!r}: float32 values differ (sha256 {digest[:16]}..., "
                                f"expected {w['sha256'][:16]}...)")
        res["ok"] = not problems
        res["detail"] = "; ".join(problems) if problems else f"{len(want)} tensors match"
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_invalid(path: Path, entry: dict, template: str, timeout: float, codecs=None) -> dict:
    err = entry["error"]
    res = {"kind": "invalid", "name": path.stem, "ok": False, "detail": "", "expected_error": err,
           "section": entry.get("section")}
    missing = _not_implemented(entry.get("codecs", []), codecs)
    if missing:
        return {**res, "ok": True, "skipped": True, "detail": f"skipped: codec {', '.join(missing)} not in --codecs"}
    tmp = Path(tempfile.mkdtemp(prefix="pvqc-conf-"))
    try:
        out = tmp / "output.safetensors"
        r = run_decoder(template, path, out, timeout)
        res.update(returncode=r["returncode"], seconds=r["seconds"], stderr_tail=_tail(r["stderr"]))
        bad = _failure_of_run(r, timeout)
        left = sorted(p.name for p in tmp.iterdir())
        if bad:
            res["detail"] = bad
        elif r["returncode"] == 0:
            res["detail"] = f"accepted a file it must reject with {err}"
        elif not error_name_in(r["stderr"], err):
            res["detail"] = f"rejected (exit status {r['returncode']}) without naming {err}: {_tail(r['stderr'], 200)}"
        elif left:
            res["detail"] = f"rejected with {err} but left files behind: {', '.join(left)}"
        else:
            res["ok"] = True
            res["detail"] = f"rejected: {err}"
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# =========================================================================================
# The suite
# =========================================================================================


def collect(root: Path, only: str = None, kind: str = "all") -> list:
    """[(kind, name, callable args)] of the vectors under root (vectors/ and invalid/)."""
    jobs = []
    pattern = re.compile(only) if only else None
    if kind in ("all", "valid"):
        for d in sorted((root / "vectors").iterdir()) if (root / "vectors").is_dir() else []:
            if (d / "input.pvqc").is_file() and (not pattern or pattern.search(d.name)):
                jobs.append(("valid", d.name, d))
    if kind in ("all", "invalid"):
        man_path = root / "invalid" / "MANIFEST.json"
        if man_path.is_file():
            man = json.loads(man_path.read_text(encoding="utf-8"))
            for fname, entry in sorted(man["files"].items()):
                name = fname[:-5] if fname.endswith(".pvqc") else fname
                if not pattern or pattern.search(name):
                    jobs.append(("invalid", name, (root / "invalid" / fname, entry)))
    return jobs


def run_suite(root: Path, template: str, timeout: float = DEFAULT_TIMEOUT, jobs: int = 1, only: str = None,
              kind: str = "all", progress=None, codecs=None) -> dict:
    """Run the vectors; `codecs` (a set of codec names, None for all) limits the run to the
    vectors whose tensors use only those codecs: the others are reported as skipped."""
    todo = collect(Path(root), only, kind)
    results = []

    def one(job):
        k, name, arg = job
        if k == "valid":
            return check_valid(arg, template, timeout, codecs)
        return check_invalid(arg[0], arg[1], template, timeout, codecs)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for res in pool.map(one, todo):
            results.append(res)
            if progress:
                progress(res)
    spec_versions = set()
    man_path = Path(root) / "invalid" / "MANIFEST.json"
    if man_path.is_file():
        spec_versions.add(json.loads(man_path.read_text(encoding="utf-8")).get("spec_version"))
    for k, _, arg in todo:
        if k == "valid":
            spec_versions.add(json.loads((arg / "expected.json").read_text(encoding="utf-8")).get("spec_version"))
    failed = [r for r in results if not r["ok"]]
    skipped = [r for r in results if r.get("skipped")]
    return {
        "decoder": template,
        "vectors": str(root),
        "spec_version": sorted(v for v in spec_versions if v),
        "codecs": sorted(codecs) if codecs is not None else "all",
        "timeout_s": timeout,
        "summary": {"total": len(results), "passed": len(results) - len(failed) - len(skipped),
                    "failed": len(failed), "skipped": len(skipped),
                    "valid": sum(r["kind"] == "valid" for r in results),
                    "invalid": sum(r["kind"] == "invalid" for r in results)},
        "results": results,
    }


def format_table(report: dict, verbose: bool = False) -> str:
    rows = [("result", "kind", "vector", "detail")]
    for r in report["results"]:
        rows.append(("SKIP" if r.get("skipped") else "PASS" if r["ok"] else "FAIL", r["kind"], r["name"], r["detail"]))
    w = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:<{w[0]}}  {b:<{w[1]}}  {c:<{w[2]}}  {d}" for a, b, c, d in rows]
    if verbose:
        for r in report["results"]:
            if not r["ok"] and r.get("stderr_tail"):
                lines.append(f"--- {r['kind']}/{r['name']} stderr:\n{r['stderr_tail']}")
    s = report["summary"]
    skipped = f", {s['skipped']} skipped (codecs not in --codecs)" if s["skipped"] else ""
    lines.append(f"{s['passed']} of {s['total']} passed ({s['valid']} valid, {s['invalid']} invalid vectors); "
                 f"{s['failed']} failed{skipped}. Decoder: {report['decoder']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Run the pvqc conformance vectors through a decoder program (see conformance/README.md).")
    ap.add_argument("--decoder", default=DEFAULT_DECODER,
                    help="the decoder's command line with {input} and {output} (default: the Python reference, "
                         "python -m pvqcodec decode --dtype float32 -q {input} {output})")
    ap.add_argument("--vectors", type=Path, default=HERE, help="the folder holding vectors/ and invalid/ (default: here)")
    ap.add_argument("--only", metavar="REGEX", help="run only the vectors whose name matches REGEX")
    ap.add_argument("--kind", choices=["all", "valid", "invalid"], default="all", help="which set to run (default all)")
    ap.add_argument("--codecs", metavar="NAMES",
                    help="comma-separated codecs the decoder implements (e.g. raw,pvq); vectors that need others "
                         "are skipped and reported as such (default: all; a conforming decoder implements every "
                         "codec of the spec version it claims)")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                    help=f"seconds a decoder run may take; longer is a failure (default {DEFAULT_TIMEOUT:g})")
    ap.add_argument("--jobs", "-j", type=int, default=min(4, os.cpu_count() or 1), help="decoder runs at a time")
    ap.add_argument("--report", type=Path, metavar="FILE", help="write the results as JSON to FILE")
    ap.add_argument("--list", action="store_true", help="list the vectors and exit")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the stderr of failing runs")
    args = ap.parse_args(argv)

    tokens = shlex.split(args.decoder)
    if not any("{input}" in t for t in tokens) or not any("{output}" in t for t in tokens):
        ap.error("--decoder must contain {input} and {output}")
    if args.timeout <= 0:
        ap.error("--timeout must be positive")
    if args.list:
        for k, name, arg in collect(args.vectors, args.only, args.kind):
            print(f"{k:<8} {name}" + (f"  [{arg[1]['error']}]" if k == "invalid" else ""))
        return 0
    if not collect(args.vectors, args.only, args.kind):
        print(f"no vectors under {args.vectors}" + (f" matching {args.only!r}" if args.only else ""), file=sys.stderr)
        return 2
    codecs = None if args.codecs is None else {c.strip() for c in args.codecs.split(",") if c.strip()}
    report = run_suite(args.vectors, args.decoder, args.timeout, args.jobs, args.only, args.kind, codecs=codecs)
    print(format_table(report, args.verbose))
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0 if report["summary"]["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
