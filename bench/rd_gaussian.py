"""Rate-distortion on i.i.d. N(0, 1) data: every codec beside D(R) and Lloyd-Max.

Each configuration encodes one (rows x cols) matrix of Gaussian samples directly
in the codec's domain (the data is already incoherent; no transform), decodes it
with the reference decoder and reports:
  bits/w   the exact rate: payload bytes (raw coding) plus the codec's parameter
           block, per weight
  MSE      mean squared error of the decoded float32 values
  dB       10 log10(MSE / D(R)) at the achieved rate R: distance from the bound
  vs LM    10 log10(MSE / Lloyd-Max(R)) for integer rates: < 0 beats scalar Lloyd-Max

    python bench/rd_gaussian.py                 # every codec, the default grid
    python bench/rd_gaussian.py --codec pvq --samples 1048576
    python bench/rd_gaussian.py --quick         # a small grid for a smoke test

A codec joins the table by adding its grid to CONFIGS below.
"""

import argparse
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pvqcodec.codecs import codec_by_name  # noqa: E402
from pvqcodec.coding import RawCoding  # noqa: E402

LLOYD_MAX = {1: 0.3634, 2: 0.1175, 3: 0.03454, 4: 0.009497}  # Gaussian, fixed rate (REFERENCE.md)

# codec name -> list of (label, options). Options go to the codec's encoder with "bits".
CONFIGS = {
    "pvq": [
        (f"D={d} {gq}", {"bits": b, "group_size": d, "gain_quantizer": gq})
        for b in (2, 3, 4)
        for d in (8, 16, 32, 64, 128)
        for gq in ("empirical", "beta-lloyd", "beta-quantile")
    ],
    "lattice": [(f"E8P+{b - 2} stages", {"bits": b}) for b in (2, 3, 4)],
    # L = 16 is slow on a CPU: its rows use the first 2^18 samples ("samples" caps a row's data).
    "trellis": [
        (f"{code} L={L}", {"bits": b, "code": code, "trellis_L": L, **({"samples": 1 << 18} if L == 16 else {})})
        for b in (2, 3, 4)
        for code in ("1mad", "3inst", "hyb")
        for L in (8, 12, 16)
    ],
}
QUICK = {
    "pvq": [(f"D={d} empirical", {"bits": b, "group_size": d}) for b in (2, 3) for d in (8, 32)],
    "lattice": [(f"E8P+{b - 2} stages", {"bits": b}) for b in (2, 3, 4)],
    "trellis": [(f"{code} L={L}", {"bits": 2, "code": code, "trellis_L": L, "samples": 1 << 16})
                for code in ("1mad", "3inst", "hyb") for L in (8, 12)],
}


def d_of_r(r: float) -> float:
    return 2.0 ** (-2.0 * r)


def run_one(codec, x: np.ndarray, options: dict):
    rows, cols = x.shape
    t0 = time.perf_counter()
    enc = codec.encode(x.astype(np.float64), options)
    t1 = time.perf_counter()
    specs = codec.streams(enc.params, rows, cols, "float32")
    payloads = [RawCoding.encode(s, spec) for s, spec in zip(enc.streams, specs)]
    params_raw = codec.build_params(enc.params)
    t2 = time.perf_counter()
    parsed = codec.parse_params(params_raw, rows, cols, "float32")
    y = codec.decode(parsed, rows, cols, "float32", [RawCoding.decode(p, s) for p, s in zip(payloads, specs)])
    t3 = time.perf_counter()
    nbits = 8 * (sum(p.size for p in payloads) + len(params_raw))
    rate = nbits / x.size
    mse = float(np.mean((y.astype(np.float64) - x) ** 2))
    return dict(rate=rate, mse=mse, enc_s=t1 - t0, dec_s=t3 - t2, info=enc.info)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--codec", action="append", help="codec(s) to run (default: all in CONFIGS)")
    ap.add_argument("--samples", type=int, default=1 << 20)
    ap.add_argument("--cols", type=int, default=4096, help="row length of the test matrix")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--filter", help="substring a label must contain")
    args = ap.parse_args(argv)
    configs = QUICK if args.quick else CONFIGS
    names = args.codec or list(configs)
    rows = max(1, args.samples // args.cols)
    x = np.random.default_rng(args.seed).standard_normal((rows, args.cols))
    print(f"# i.i.d. N(0,1), {rows} x {args.cols} = {x.size} samples, seed {args.seed}")
    print("| codec | setting | bits/w | MSE | dB from D(R) | vs Lloyd-Max dB | settings chosen | encode Mw/s | decode Mw/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        codec = codec_by_name(name)
        for label, opts in configs.get(name, []):
            if args.filter and args.filter not in label:
                continue
            opts = dict(opts)
            cap = opts.pop("samples", None)  # a configuration may use only the first `cap` samples
            xs = x[: max(1, cap // args.cols)] if cap else x
            r = run_one(codec, xs, opts)
            db = 10 * math.log10(r["mse"] / d_of_r(r["rate"]))
            nominal = round(opts["bits"])
            vs = (f"{10 * math.log10(r['mse'] / LLOYD_MAX[nominal]):+.2f}"
                  if nominal in LLOYD_MAX and abs(opts["bits"] - nominal) < 1e-9 else "")
            chosen = " ".join(f"{k}={v}" for k, v in r["info"].items())
            print(f"| {name} | {label} @ {opts['bits']} | {r['rate']:.4f} | {r['mse']:.5f} | {db:+.2f} | {vs} | "
                  f"{chosen} | {xs.size / r['enc_s'] / 1e6:.2f} | {xs.size / r['dec_s'] / 1e6:.2f} |", flush=True)
    print()
    print("References: D(R) = 2^-2R: 0.0625 / 0.015625 / 0.0039 at 2 / 3 / 4 bits; "
          "Lloyd-Max 0.1175 / 0.03454 / 0.009497.")


if __name__ == "__main__":
    main()
