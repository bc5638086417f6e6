"""Encoder and decoder throughput of the trellis codec (informative; results in bench/RESULTS.md).

    python -m pvqcodec.codecs.trellis.throughput                  # L = 8, 12, 16, every code, k = 2
    python -m pvqcodec.codecs.trellis.throughput --L 12 --k 2 3 4 --code hyb

Encodes a matrix of N(0, 1) samples with the codec's encoder (tail-biting Viterbi on all
cores that Numba uses, scale fit, packing) and decodes it with the reference decoder,
timing each after a warm-up call (so Numba's compilation is not counted). The sample
count adapts to L so that each measurement takes a few seconds.
"""

import argparse
import time

import numba
import numpy as np

from ...coding import RawCoding
from .. import codec_by_name
from . import codes


def measure(code: str, L: int, k: int, samples: int, cols: int = 4096, seed: int = 0):
    codec = codec_by_name("trellis")
    rows = max(1, samples // cols)
    x = np.random.default_rng(seed).standard_normal((rows, cols))
    opts = {"bits": k, "code": code, "trellis_L": L}
    codec.encode(x[:16, :256], opts)  # warm-up: compile / load the cache
    t0 = time.perf_counter()
    enc = codec.encode(x, opts)
    t1 = time.perf_counter()
    specs = codec.streams(enc.params, rows, cols, "float32")
    payloads = [RawCoding.encode(s, sp) for s, sp in zip(enc.streams, specs)]
    streams = [RawCoding.decode(p, sp) for p, sp in zip(payloads, specs)]
    p = codec.parse_params(codec.build_params(enc.params), rows, cols, "float32")
    codec.decode(p, rows, cols, "float32", streams)  # warm-up
    t2 = time.perf_counter()
    y = codec.decode(p, rows, cols, "float32", streams)
    t3 = time.perf_counter()
    mse = float(np.mean((y - x) ** 2))
    return x.size, x.size / (t1 - t0), x.size / (t3 - t2), mse


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--L", type=int, nargs="+", default=[8, 12, 16])
    ap.add_argument("--k", type=int, nargs="+", default=[2])
    ap.add_argument("--code", nargs="+", default=sorted(codes.CODE_IDS), choices=sorted(codes.CODE_IDS))
    ap.add_argument("--seconds", type=float, default=4.0, help="rough time per encoder measurement")
    args = ap.parse_args(argv)
    print(f"# Numba threads: {numba.get_num_threads()}")
    print("| code | L | k | samples | encode w/s | decode w/s | MSE |")
    print("|---|---|---|---|---|---|---|")
    for L in args.L:
        for k in args.k:
            for code in args.code:
                if k * codes.CODE_V[codes.CODE_IDS[code]] > L:
                    continue
                # a first guess of the speed (weights per second), then enough samples for ~`seconds`
                guess = 3e7 / 2 ** (L - 8) * numba.get_num_threads() / 2
                samples = int(min(1 << 22, max(1 << 16, guess * args.seconds)))
                n, enc, dec, mse = measure(code, L, k, samples)
                print(f"| {code} | {L} | {k} | {n} | {enc:,.0f} | {dec:,.0f} | {mse:.5f} |", flush=True)


if __name__ == "__main__":
    main()
