"""Decode throughput of the C reference decoder's rans coding (spec 4.3), one core.

Streams of symbols are encoded by the Python reference encoder (pvqcodec.coding.rans,
default chunks of 65,536 symbols) and decoded by `rans_bench` (ref_decoder_c/rans_bench.c,
built with the Makefile's -O2: the library's own header checks and chunk loops, output
in the raw coding's bit string that the codecs read) for at least --seconds of processor
time each. Table mode: i.i.d. symbols of 2-, 4- and 8-bit alphabets from a discretized
Gaussian, stored as 8-bit symbols, P = 12. Uniform mode: PVQ shape indices drawn uniformly
below N(D, K) (the `shapes` stream of codecs/pvq.md, bounded by N(D, K)), one to several
operations per symbol, with indices wider than 64 bits for D = 64.

    python bench/rans_c_throughput.py            # 4M table symbols, 1M shapes per case
    python bench/rans_c_throughput.py --quick    # a smoke run
"""

import argparse
import os
import platform
import random
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from pvqcodec.codecs.pvq.enumeration import pvq_count  # noqa: E402
from pvqcodec.coding import Bounds, StreamSpec  # noqa: E402
from pvqcodec.coding.rans import RansCoding  # noqa: E402

CDIR = os.path.join(os.path.dirname(HERE), "ref_decoder_c")


def gaussian_symbols(n, alphabet_bits, rng):
    """Discretized Gaussian over 2^bits levels (sigma = a quarter of the range)."""
    a = 1 << alphabet_bits
    x = np.round(rng.standard_normal(n) * (a / 8) + (a - 1) / 2)
    return np.clip(x, 0, a - 1).astype(np.uint8)


def shape_symbols(n, d, k, seed):
    """n indices uniform in [0, N(d, k)), as uint64 limb rows when wider than 64 bits."""
    N = pvq_count(d, k)
    width = (N - 1).bit_length()
    r = random.Random(seed)
    vals = [r.randrange(N) for _ in range(n)]
    if width <= 64:
        return np.array(vals, np.uint64), width, N
    limbs = (width + 63) // 64
    rows = np.zeros((n, limbs), np.uint64)
    for li in range(limbs):
        rows[:, li] = np.array([(v >> (64 * li)) & (2**64 - 1) for v in vals], np.uint64)
    return rows, width, N


def run_bench(exe, payload, count, width, bound, seconds, tmp):
    path = os.path.join(tmp, "payload.bin")
    payload.tofile(path)
    args = [exe, path, str(count), str(width), format(bound, "x") if bound else "-", str(seconds)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout.split()
    return float(out[1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small streams, short timings")
    ap.add_argument("--seconds", type=float, default=None, help="processor time per measurement (default 2)")
    args = ap.parse_args(argv)
    n_table = 1 << 18 if args.quick else 1 << 22
    n_shape = 1 << 15 if args.quick else 1 << 20
    seconds = args.seconds or (0.3 if args.quick else 2.0)
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["make", "-s", "-C", CDIR, f"BUILD={tmp}", "ransbench"], check=True)
        exe = os.path.join(tmp, "rans_bench")
        for bits in (2, 4, 8):
            sym = gaussian_symbols(n_table, bits, rng)
            spec = StreamSpec("bench", n_table, 8)
            payload = RansCoding.encode(sym, spec, mode="table", precision=12)
            rate = run_bench(exe, payload, n_table, 8, None, seconds, tmp)
            rows.append((f"table, {bits}-bit alphabet (P = 12)", n_table, 8 * payload.size / n_table, rate))
        for d, k in ((8, 4), (32, 16), (64, 160)):
            sym, width, N = shape_symbols(n_shape, d, k, seed=d)
            spec = StreamSpec("shapes", n_shape, width, Bounds((N,)))
            payload = RansCoding.encode(sym, spec, mode="uniform")
            rate = run_bench(exe, payload, n_shape, width, N, seconds, tmp)
            nops = 1 + -(-max(0, width - 8) // 16)
            rows.append((f"uniform, PVQ shapes D={d} K={k} (log2 N = {np.log2(float(N)):.2f}, {nops} ops)", n_shape,
                         8 * payload.size / n_shape, rate))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, one core, "
          f"processor time; {'quick' if args.quick else 'full'} run")
    print(f"{'stream':<62} {'symbols':>9} {'bits/sym':>9} {'Msym/s':>8} {'Mbit/s':>8}")
    for label, n, bps, rate in rows:
        print(f"{label:<62} {n:>9} {bps:>9.3f} {rate / 1e6:>8.1f} {rate * bps / 1e6:>8.0f}")


if __name__ == "__main__":
    main()
