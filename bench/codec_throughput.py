"""Encode and decode throughput of every codec on one core, in weights per second.

One rows x cols float32 tensor (Gaussian, RMS 0.02: the scale of real weights) is encoded by
`encode_tensor` with each codec's CLI defaults (RHT, `--entropy auto`) at 2, 3 and 4 bits, the
way `pvqcodec encode` does it per tensor (transform, codec search, payload coding and the
reference decode behind the reported SQNR), written to a .pvqc file, then decoded to float32 by
the Python reference decoder and by the C reference decoder (cffi binding; "n/a" where the C
decoder does not know the codec), and the two outputs are compared bit for bit. Codecs come
from the registry: a new codec is measured as soon as it is registered.

Everything runs on one core: NUMBA_NUM_THREADS=1 and one BLAS thread are set before numpy and
numba load. Each rate is reported as weights per second of wall time and of the process's CPU
time: on a machine shared with other jobs, wall time is a lower bound and CPU time the closer
estimate of a quiet core. Decode: best of --repeat after a warm-up (Numba compilation and the
payload CRCs are not timed); encode: one run after a warm-up on a small tensor.

    python bench/codec_throughput.py --json thr.json --markdown thr.md     # 1024 x 4096, every codec
    python bench/codec_throughput.py --codec ecsq --json thr.json --update
    python bench/codec_throughput.py --from-json thr.json
"""

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, before numpy and numba load

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from rd_gaussian import encode_options, record_key, sorted_records, write_text  # noqa: E402

from pvqcodec.api import PvqcFile  # noqa: E402
from pvqcodec.codecs import all_codecs, codec_by_name  # noqa: E402
from pvqcodec.container.writer import write_pvqc  # noqa: E402
from pvqcodec.encoder import encode_tensor  # noqa: E402

RATES = (2.0, 3.0, 4.0)


def timed(fn):
    """(wall seconds, CPU seconds, result) of one call."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def best_of(fn, repeat):
    fn()  # warm-up: Numba cache load, page faults, the CRC check of each payload
    runs = [timed(fn)[:2] for _ in range(repeat)]
    return min(r[0] for r in runs), min(r[1] for r in runs)


def c_decoder_ready() -> bool:
    from pvqcodec import cdecoder

    return cdecoder.available()


def measure(codec_name, bits, w, repeat, use_c, workdir) -> dict:
    options = encode_options(codec_name, bits, [], transform="rht")
    encode_tensor("warmup", w[:64], "float32", options)  # compile outside the timing
    enc_wall, enc_cpu, (entry, rep) = timed(lambda: encode_tensor("w", w, "float32", options))
    path = os.path.join(workdir, "t.pvqc")
    write_pvqc(path, {}, [entry])
    n = w.size
    out = dict(codec=codec_name, label="default", args=[], bits=bits, rows=w.shape[0], cols=w.shape[1],
               file_bpw=8 * os.path.getsize(path) / n, sqnr=rep.sqnr_db, encode_wall=n / enc_wall,
               encode_cpu=n / enc_cpu, py_wall=None, py_cpu=None, c_wall=None, c_cpu=None, same=None, c_error=None,
               load=None)
    with PvqcFile(path) as f:
        py = f.decode("w")
        out["py_wall"], out["py_cpu"] = (n / t for t in best_of(lambda: f.decode("w"), repeat))
        if use_c:
            try:
                c = f.decode("w", decoder="c")
            except Exception as exc:  # the C decoder may not know a codec yet: reported, not fatal
                out["c_error"] = f"{type(exc).__name__}: {exc}"
            else:
                out["same"] = py.tobytes() == c.tobytes()
                out["c_wall"], out["c_cpu"] = (n / t for t in best_of(lambda: f.decode("w", decoder="c"), repeat))
    out["load"] = round(os.getloadavg()[0], 1)  # other jobs on the machine: wall-clock rates depend on it
    return out


def mw(v) -> str:
    return "n/a" if v is None else f"{v / 1e6:.2f}"


def table(records) -> str:
    lines = ["| codec | --bits | file bits/w | SQNR dB | encode Mw/s (wall / CPU) | Python decode Mw/s (wall / CPU) | "
             "C decode Mw/s (wall / CPU) | C = Python | load average |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted_records(records):
        same = "n/a" if r["same"] is None else ("yes" if r["same"] else "NO")
        lines.append(f"| {r['codec']} | {r['bits']:g} | {r['file_bpw']:.4f} | {r['sqnr']:.2f} | "
                     f"{mw(r['encode_wall'])} / {mw(r['encode_cpu'])} | {mw(r['py_wall'])} / {mw(r['py_cpu'])} | "
                     f"{mw(r['c_wall'])} / {mw(r['c_cpu'])} | {same} | {r.get('load', '')} |")
    return "\n".join(lines)


def render(meta: dict, records: list) -> dict:
    """The markdown texts: head (what was measured), full (the table; also as summary), all."""
    head = (f"{meta['rows']} x {meta['cols']} float32 (Gaussian, RMS 0.02), RHT, CLI defaults; one core "
            f"(NUMBA_NUM_THREADS=1, one BLAS thread); decode best of {meta['repeat']} after a warm-up; the last "
            "column is the machine's 1-minute load average when the row was measured (on 2 cores: above 1, other "
            "jobs shared this one's core and the wall-clock rates are lower bounds)")
    full = table(records)
    return dict(head=head, summary=full, full=full, all=head + "\n\n" + full)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--codec", action="append", choices=[c.name for c in all_codecs() if c.quantizes], help="codec(s) to run (default: every quantizing codec registered)")
    ap.add_argument("--bits", type=float, nargs="+", default=list(RATES))
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3, help="decode runs (the best is reported)")
    ap.add_argument("--no-c", action="store_true", help="the Python decoder only")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--update", action="store_true", help="with --json: merge into the file's existing results")
    ap.add_argument("--from-json", metavar="PATH", nargs="+", help="render saved results; measure nothing")
    ap.add_argument("--markdown", metavar="PATH")
    args = ap.parse_args(argv)
    for path in args.from_json or []:
        if not os.path.isfile(path):
            ap.error(f"--from-json {path}: no such file")

    if args.from_json:
        records, meta = {}, None
        for p in args.from_json:
            with open(p) as f:
                d = json.load(f)
            meta = meta or d["meta"]
            records.update({record_key(r): r for r in d["records"]})
    else:
        records = {}
        if args.update and args.json and os.path.exists(args.json):
            with open(args.json) as f:
                records = {record_key(r): r for r in json.load(f)["records"]}
        use_c = not args.no_c and c_decoder_ready()
        if not args.no_c and not use_c:
            print("the C decoder is not built (python ref_decoder_c/build_cffi.py): Python decoder only",
                  file=sys.stderr)
        w = (np.random.default_rng(0).standard_normal((args.rows, args.cols)) * 0.02).astype(np.float32)
        load = os.getloadavg()[0]
        meta = dict(rows=args.rows, cols=args.cols, repeat=args.repeat, machine=platform.processor() or platform.machine(),
                    cpus=os.cpu_count(), python=platform.python_version(), numpy=np.__version__,
                    load_at_start=round(load, 2), command="python " + " ".join(sys.argv))
        codecs = [codec_by_name(n) for n in args.codec] if args.codec else [c for c in all_codecs() if c.quantizes]
        jobs = [(c.name, b) for c in codecs for b in args.bits if c.rates is None or b in c.rates]
        from tqdm import tqdm

        with tempfile.TemporaryDirectory() as workdir:
            for name, b in tqdm(jobs, desc="codec_throughput", unit="codec-rate", file=sys.stderr):
                r = measure(name, b, w, args.repeat, use_c, workdir)
                records[record_key(r)] = r
                tqdm.write(f"{name:10s} {b:3.1f} bits: encode {mw(r['encode_cpu'])} Mw/s CPU, decode Python "
                           f"{mw(r['py_cpu'])}, C {mw(r['c_cpu'])} Mw/s CPU, C = Python {r['same']}"
                           + (f" ({r['c_error']})" if r["c_error"] else ""), file=sys.stderr)
        meta["load_at_end"] = round(os.getloadavg()[0], 2)
        if args.json:
            write_text(args.json, json.dumps({"meta": meta, "records": sorted_records(list(records.values()))},
                                             indent=1) + "\n")
    text = render(meta, list(records.values()))
    print(text["all"])
    if args.markdown:
        write_text(args.markdown, text["all"] + "\n")


if __name__ == "__main__":
    main()
