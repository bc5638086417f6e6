"""Rate-distortion of every codec on i.i.d. N(0, 1) data, beside D(R), Lloyd-Max and ECSQ.

Each configuration encodes one rows x 4096 float32 matrix of Gaussian samples through the
encoder's own pipeline (`encode_tensor`, the function `pvqcodec encode` calls per tensor) with
the identity transform (the data is already incoherent) and the codec's command-line options:
its CLI defaults plus the settings listed in CONFIGS. The codecs come from the registry: a
codec without a CONFIGS entry runs its CLI defaults at every rate it accepts, so a new codec
joins the table (and the plot) by being registered; a CONFIGS entry adds better settings.

Columns:
  coded bits/w  the rate: every payload in the coding the codec is designed for, plus the codec's
                and transform's parameter blocks, per weight. Fixed-rate codecs (FIXED_RATE):
                the raw coding (their nominal rate, what a GPU holds); entropy-coded codecs: the
                payloads as the encoder writes them (`--entropy auto`, the CLI default).
  file bits/w   the whole one-tensor .pvqc file of that tensor as `pvqcodec encode` writes it
                (`--entropy auto`: header, directory and 64-byte alignment included, without the
                CLI's few hundred bytes of metadata; a fixed-rate codec's payload may be
                rans-coded there where that saves 1 percent)
  MSE           mean squared error of the reference decoder's float32 values
  dB            10 log10(MSE / D(R)) at the coded rate: the distance from the bound D(R) = 2^-2R
  dB file       the same at the file rate
  MSE at file rate = --bits   the MSE moved to a file of exactly --bits bits per weight along the
                high-rate slope of D(R), 6.02 dB per bit (the issue's targets are at a file rate)

The headline rates (2, 3, 4 bits) use all --samples (2^20 by default); the half rates (1.5,
2.5, 3.5) use the first --half-samples (2^20 by default too: every codec so far encodes 2^20
samples in seconds to a minute and a half), and a configuration with a `samples` cap (a slow
encoder) its first rows only: the table's "samples" column says which. One draw (--seed) for
every row.

    python bench/rd_gaussian.py --json rd.json --markdown rd.md --plot docs/rd_gaussian.png
    python bench/rd_gaussian.py --codec ecsq --json rd.json --update      # add/replace rows in rd.json
    python bench/rd_gaussian.py --from-json rd.json --markdown rd.md --plot docs/rd_gaussian.png
    python bench/rd_gaussian.py --quick                                   # a smoke run, 2^16 samples
    python bench/rd_gaussian.py --sweep --codec pvq                       # a codec's design grid (SWEEPS)

--from-json renders tables and the plot from saved results without encoding anything.
"""

import argparse
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pvqcodec.atomic import atomic_output  # noqa: E402
from pvqcodec.cli import build_parser  # noqa: E402
from pvqcodec.codecs import all_codecs, codec_by_name  # noqa: E402
from pvqcodec.container.writer import write_stream  # noqa: E402
from pvqcodec.encoder import EncodeOptions, encode_tensor  # noqa: E402

RATES = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
HEADLINE = (2.0, 3.0, 4.0)
LLOYD_MAX = {1: 0.3634, 2: 0.1175, 3: 0.03454, 4: 0.009497}  # Gaussian, fixed rate (REFERENCE.md)
ECSQ_HIGH_RATE_DB = 10 * math.log10(math.pi * math.e / 6)  # 1.53 dB: uniform quantizer + ideal entropy coding
FIXED_RATE = ("pvq", "trellis", "lattice")  # their rate is the raw coding's; every other codec is entropy-coded


@dataclass
class Config:
    label: str
    args: list = field(default_factory=list)  # `pvqcodec encode` options beyond --codec and --bits
    samples: int = None  # cap on the samples this configuration uses (slow encoders)
    real: bool = True  # also run on real weights (bench/rd_real.py)


# codec -> the configurations beyond the CLI defaults (which every codec runs first): the best
# measured settings of each codec (bench/RESULTS.md), not a sweep.
CONFIGS = {
    "pvq": [Config("D=64", ["--group-size", "64"])],
    # L = 16's CPU search costs about 100 s per 2^20 weights on one loaded core: Gaussian only
    # (real weights: `--device cuda`, bench/gpu_viterbi.py).
    "trellis": [Config("1MAD L=16", ["--trellis-L", "16"], real=False)],
    "pvqvr": [Config("D=64", ["--group-size", "64"])],
}

# --sweep: the design grids of the earlier sections of bench/RESULTS.md (issues 2, 3, 4), at 2, 3
# and 4 bits, in place of CONFIGS.
SWEEPS = {
    "pvq": [Config(f"D={d} {gq}", ["--group-size", str(d), "--gain-quantizer", gq])
            for d in (8, 16, 32, 64, 128) for gq in ("empirical", "beta-lloyd", "beta-quantile")],
    "lattice": [Config("default")],
    # L = 16 is slow on a CPU: its rows use the first 2^18 samples.
    "trellis": [Config(f"{code} L={L}", ["--code", code, "--trellis-L", str(L)], samples=1 << 18 if L == 16 else None)
                for code in ("1mad", "3inst", "hyb") for L in (8, 12, 16)],
}


def d_of_r(r: float) -> float:
    return 2.0 ** (-2.0 * r)


def db_from_bound(mse: float, rate: float) -> float:
    return 10 * math.log10(mse / d_of_r(rate))


def configs_of(codec, default_only=False, real=False) -> list:
    out = [Config("default")]
    if not default_only:
        out += [c for c in CONFIGS.get(codec.name, []) if c.real or not real]
    return out


def rates_of(codec, rates) -> list:
    return [r for r in rates if codec.rates is None or r in codec.rates]


def encode_options(codec_name: str, bits: float, args: list, transform: str = "identity") -> EncodeOptions:
    """EncodeOptions exactly as `pvqcodec encode --codec NAME --bits B ARGS` builds them."""
    a = build_parser().parse_args(["encode", "in.safetensors", "out.pvqc", "--codec", codec_name,
                                   "--bits", repr(bits), "--transform", transform, *args])
    return EncodeOptions(codec=a.codec, bits=a.bits, seed=a.seed, transform=a.transform, rht_block=a.rht_block,
                         codec_options=codec_by_name(a.codec).options_from_args(a), entropy=a.entropy)


def run_one(codec_name: str, config: Config, bits: float, x: np.ndarray) -> dict:
    options = encode_options(codec_name, bits, config.args)
    t0 = time.perf_counter()
    entry, rep = encode_tensor("w", x, "float32", options)
    seconds = time.perf_counter() - t0
    file_bytes = write_stream(io.BytesIO(), {}, [entry])
    n = x.size
    coded = rep.raw_coded_bytes if codec_name in FIXED_RATE else rep.coded_bytes
    mse = rep.info["mse"]
    rate, file_rate = 8 * coded / n, 8 * file_bytes / n
    return dict(codec=codec_name, label=config.label, args=config.args, bits=bits, samples=n,
                coded_bpw=rate, file_bpw=file_rate, raw_bpw=rep.raw_bits_per_weight, mse=mse,
                db=db_from_bound(mse, rate), db_file=db_from_bound(mse, file_rate), encode_s=seconds,
                info={k: v for k, v in rep.info.items() if k not in ("mse",)})


def mse_at(r: dict, rate: float) -> float:
    """The MSE moved from `rate` to exactly --bits along the high-rate slope (6.02 dB per bit)."""
    return r["mse"] * 2.0 ** (2.0 * (rate - r["bits"]))


def record_key(r: dict) -> tuple:
    return (r["codec"], r["label"], float(r["bits"]))


# ---- tables ----------------------------------------------------------------------------------


def codec_order(records) -> list:
    ids = {c.name: c.id for c in all_codecs()}
    return sorted({r["codec"] for r in records}, key=lambda n: (ids.get(n, 99), n))


def sorted_records(records) -> list:
    order = {n: i for i, n in enumerate(codec_order(records))}
    labels = {}
    for r in records:  # keep each codec's configurations in first-seen order, "default" first
        labels.setdefault(r["codec"], [])
        if r["label"] not in labels[r["codec"]]:
            labels[r["codec"]].append(r["label"])
    for v in labels.values():
        v.sort(key=lambda lab: lab != "default")
    return sorted(records, key=lambda r: (order[r["codec"]], labels[r["codec"]].index(r["label"]), r["bits"]))


def full_table(records) -> str:
    lines = ["| codec | setting | --bits | samples | coded bits/w | file bits/w | MSE | dB from D(R) | dB at file rate | "
             "MSE at file rate = --bits | vs Lloyd-Max dB | encode s | chosen |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted_records(records):
        nominal = round(r["bits"])
        vs = (f"{10 * math.log10(r['mse'] / LLOYD_MAX[nominal]):+.2f}"
              if nominal in LLOYD_MAX and r["bits"] == nominal else "")
        setting = r["label"] + (f" (`{' '.join(r['args'])}`)" if r["args"] else "")
        chosen = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r["info"].items()
                           if k not in ("codings", "bits_target", "coded_bits") and not isinstance(v, (dict, list)))
        lines.append(f"| {r['codec']} | {setting} | {r['bits']:g} | 2^{int(math.log2(r['samples']))} | "
                     f"{r['coded_bpw']:.4f} | {r['file_bpw']:.4f} | {r['mse']:.5f} | {r['db']:+.3f} | "
                     f"{r['db_file']:+.3f} | {mse_at(r, r['file_bpw']):.5f} | {vs} | {r['encode_s']:.1f} | {chosen} |")
    return "\n".join(lines)


def summary_table(records) -> str:
    """One row per configuration, one column per rate: MSE (dB from D(R) at the coded rate)."""
    rates = sorted({r["bits"] for r in records})
    by = {record_key(r): r for r in records}
    head = "| codec | setting | " + " | ".join(f"{b:g} bits" for b in rates) + " |"
    lines = [head, "|---|---|" + "---|" * len(rates),
             "| D(R) bound | | " + " | ".join(f"{d_of_r(b):.4f}" for b in rates) + " |",
             "| Lloyd-Max scalar | | " + " | ".join(
                 f"{LLOYD_MAX[int(b)]:.4f} ({db_from_bound(LLOYD_MAX[int(b)], b):+.2f})" if b in LLOYD_MAX else ""
                 for b in rates) + " |",
             "| ECSQ, high rate | | " + " | ".join(f"{d_of_r(b) * 10 ** (ECSQ_HIGH_RATE_DB / 10):.4f} (+1.53)"
                                                   for b in rates) + " |"]
    seen = []
    for r in sorted_records(records):
        if (r["codec"], r["label"]) in seen:
            continue
        seen.append((r["codec"], r["label"]))
        cells = []
        for b in rates:
            q = by.get((r["codec"], r["label"], b))
            cells.append(f"{q['mse']:.4f} ({q['db']:+.2f})" if q else "")
        lines.append(f"| {r['codec']} | {r['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def samples_note(records) -> str:
    """How many samples the rows used, in words: "2^20 samples per point", or the exceptions."""
    counts = sorted({r["samples"] for r in records}, reverse=True)
    note = f"2^{int(math.log2(counts[0]))} samples per point"
    for c in counts[1:]:
        which = sorted({f"{r['codec']} {r['label']} {r['bits']:g}" for r in records if r["samples"] == c})
        note += f"; 2^{int(math.log2(c))} for " + ", ".join(which)
    return note


# ---- the plot --------------------------------------------------------------------------------


def plot(records, path: str, title: str, xlabel: str = "bits per weight (coded size, parameters included)",
         ylabel: str = "MSE above D(R), dB (lower is better)") -> None:
    """One line per codec configuration through its (coded_bpw, db) points, with D(R), the ECSQ
    high-rate line and Lloyd-Max's points (Gaussian references) drawn under them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.6), dpi=120)
    ax.axhline(0.0, color="black", lw=1.2, label="D(R) = 2^-2R")
    ax.axhline(ECSQ_HIGH_RATE_DB, color="gray", lw=1.0, ls=":", label="ECSQ, high rate (+1.53 dB)")
    lm = sorted(LLOYD_MAX)
    ax.plot(lm, [db_from_bound(LLOYD_MAX[b], b) for b in lm], "k^--", lw=0.8, ms=6, mfc="white",
            label="Lloyd-Max scalar (fixed rate)")
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(codec_order(records)):
        labels = []
        for r in sorted_records(records):
            if r["codec"] == name and r["label"] not in labels:
                labels.append(r["label"])
        for j, label in enumerate(labels):
            pts = sorted((r["coded_bpw"], r["db"]) for r in records if r["codec"] == name and r["label"] == label)
            kind = "fixed rate" if name in FIXED_RATE else "entropy-coded"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=cmap(i % 10), ls="-" if j == 0 else "--",
                    marker="o" if name in FIXED_RATE else "s", ms=4.5, lw=1.6 if j == 0 else 1.1,
                    label=f"{name} {label} ({kind})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0.9, 4.2)
    ax.set_ylim(-0.2, max(4.0, ax.get_ylim()[1]))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fmt = os.path.splitext(path)[1].lstrip(".") or "png"
    with atomic_output(path) as f:
        fig.savefig(f, format=fmt)
    plt.close(fig)


def render(meta: dict, records: list) -> dict:
    """The markdown texts: head (what was measured), summary (MSE per rate), full (every row), all."""
    head = f"i.i.d. N(0, 1), seed {meta['seed']}, rows of {meta['cols']}: {samples_note(records)}"
    summary = "MSE (in brackets dB from D(R) at the coded rate):\n\n" + summary_table(records)
    full = full_table(records)
    return dict(head=head, summary=summary, full=full, all=head + "\n\n" + summary + "\n\n" + full)


# ---- main ------------------------------------------------------------------------------------


def load_json(paths) -> dict:
    out = {}
    for p in paths:
        with open(p) as f:
            for r in json.load(f)["records"]:
                out[record_key(r)] = r
    return out


def write_text(path: str, text: str) -> None:
    with atomic_output(path) as f:
        f.write(text.encode())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--codec", action="append", choices=[c.name for c in all_codecs() if c.quantizes], help="codec(s) to run (default: every quantizing codec registered)")
    ap.add_argument("--bits", type=float, nargs="+", default=list(RATES), help="target rates (default 1.5 .. 4)")
    ap.add_argument("--samples", type=int, default=1 << 20, help="samples at the headline rates 2 / 3 / 4")
    ap.add_argument("--half-samples", type=int, default=1 << 20, help="samples at the other rates (1.5, 2.5, 3.5)")
    ap.add_argument("--cols", type=int, default=4096, help="row length of the test matrix")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--defaults-only", action="store_true", help="each codec's CLI defaults only")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2^16 samples, 2 and 3 bits, defaults")
    ap.add_argument("--sweep", action="store_true",
                    help="the design grids of pvq, trellis and lattice (SWEEPS) at 2, 3 and 4 bits instead")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    ap.add_argument("--update", action="store_true", help="with --json: merge into the file's existing results")
    ap.add_argument("--from-json", metavar="PATH", nargs="+", help="render saved results; encode nothing")
    ap.add_argument("--markdown", metavar="PATH", help="write the summary and full tables as markdown")
    ap.add_argument("--plot", metavar="PATH", help="draw the rate-distortion plot (PNG; needs matplotlib)")
    args = ap.parse_args(argv)
    for path in args.from_json or []:
        if not os.path.isfile(path):
            ap.error(f"--from-json {path}: no such file")

    if args.from_json:
        records = load_json(args.from_json)
        with open(args.from_json[0]) as f:
            meta = json.load(f)["meta"]
    else:
        if args.quick:
            args.samples = args.half_samples = 1 << 16
            args.bits, args.defaults_only = [2.0, 3.0], True
        rows = max(1, args.samples // args.cols)
        x = np.random.default_rng(args.seed).standard_normal((rows, args.cols)).astype(np.float32)
        codecs = [codec_by_name(n) for n in args.codec] if args.codec else [c for c in all_codecs() if c.quantizes]
        if args.sweep:
            codecs = [c for c in codecs if c.name in SWEEPS]
            jobs = [(c.name, cfg, b) for c in codecs for cfg in SWEEPS[c.name] for b in rates_of(c, HEADLINE)]
        else:
            jobs = [(c.name, cfg, b) for c in codecs for cfg in configs_of(c, args.defaults_only)
                    for b in rates_of(c, args.bits)]
        records = load_json([args.json]) if args.update and args.json and os.path.exists(args.json) else {}
        meta = dict(seed=args.seed, samples=args.samples, half_samples=args.half_samples, cols=args.cols,
                    command="python " + " ".join(sys.argv))
        from tqdm import tqdm

        for name, cfg, b in tqdm(jobs, desc="rd_gaussian", unit="encode", file=sys.stderr):
            cap = args.samples if b in HEADLINE else args.half_samples
            if cfg.samples:
                cap = min(cap, cfg.samples)
            xs = x[: max(1, cap // args.cols)]
            r = run_one(name, cfg, b, xs)
            records[record_key(r)] = r
            tqdm.write(f"{name:10s} {cfg.label:12s} {b:4.1f} bits: coded {r['coded_bpw']:.4f}, file {r['file_bpw']:.4f} "
                       f"bits/w, MSE {r['mse']:.5f}, {r['db']:+.3f} dB from D(R), {r['encode_s']:.1f} s",
                       file=sys.stderr)
        if args.json:
            payload = {"meta": meta, "records": sorted_records(list(records.values()))}
            write_text(args.json, json.dumps(payload, indent=1, default=lambda v: v.item() if hasattr(v, "item")
                                             else str(v)) + "\n")
    records = list(records.values())
    text = render(meta, records)
    print(text["all"])
    if args.markdown:
        write_text(args.markdown, text["all"] + "\n")
    if args.plot:
        plot(records, args.plot, f"Rate-distortion on i.i.d. N(0, 1) (seed {meta['seed']}, {samples_note(records)})")


if __name__ == "__main__":
    main()
