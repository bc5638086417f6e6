"""The ectcq codec end to end on i.i.d. N(0, 1): coded rate from the real payloads, MSE,
distance to D(R), encode and decode time (issue 10; bench/RESULTS.md, "ECTCQ codec").

    PYTHONPATH=. NUMBA_CACHE_DIR=.numba_cache python bench/ectcq_codec.py [--rows 256] [--cols 4096]
        [--bits 2,3,4] [--states 256] [--chunks 262144,1048576] [--threads N]

For each rate the codec's own encoder runs (rate control included); the coded size is the
parameter block plus the three payloads as the reference encoder codes them (`auto`
policy), with the codec's rans chunk size or the ones given by --chunks (the encoder's
rate control then aims at that chunk size's coded size too). "MSE at R" scales the MSE to
a coded rate of exactly R by the 6.02 dB/bit slope.
"""

import argparse
import math
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--bits", default="2,3,4")
    ap.add_argument("--states", type=int, default=256)
    ap.add_argument("--chunks", default=None, help="rans chunk sizes to compare (default: the codec's)")
    ap.add_argument("--threads", type=int, default=None, help="Numba threads (default: all cores)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    import numba

    if args.threads:
        numba.set_num_threads(args.threads)
    from pvqcodec.codecs import codec_by_name
    from pvqcodec.codecs.ectcq.encoder import coded_size

    codec = codec_by_name("ectcq")
    default_chunk = codec.rans_chunk_symbols
    chunks = [int(c) for c in args.chunks.split(",")] if args.chunks else [default_chunk]
    x = np.random.default_rng(args.seed).standard_normal((args.rows, args.cols))
    n = x.size
    # warm the JIT outside the timings
    codec.encode(x[:2, :64], {"bits": 2, "state_bits": args.states.bit_length() - 1})
    print(f"N(0,1) {args.rows} x {args.cols} = {n} values, {args.states} states, threads {numba.get_num_threads()}")
    print("| bits | rans chunk | coded bits/weight | MSE | dB from D(coded) | MSE at R | target | encode s (trials) | decode s | decode Mweights/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    targets = {2.0: 0.066, 3.0: 0.0167, 4.0: 0.00418}
    try:
        for b in (float(v) for v in args.bits.split(",")):
            for chunk in chunks:
                codec.rans_chunk_symbols = chunk
                t0 = time.perf_counter()
                enc = codec.encode(x, {"bits": b, "state_bits": args.states.bit_length() - 1})
                te = time.perf_counter() - t0
                params = codec.parse_params(codec.build_params(enc.params), args.rows, args.cols, "float32")
                t0 = time.perf_counter()
                y = codec.decode(params, args.rows, args.cols, "float32", enc.streams)
                td = time.perf_counter() - t0
                r = 8 * coded_size(enc, args.rows, args.cols) / n
                mse = float(np.mean((x - y) ** 2))
                db = 10 * math.log10(mse / 2.0 ** (-2 * r))
                at_r = mse * 2.0 ** (2 * (r - b))
                tgt = targets.get(b)
                verdict = "" if tgt is None else (f"<= {tgt}: {'met' if mse <= tgt and r <= b else 'missed'}")
                print(f"| {b:g} | {chunk} | {r:.5f} | {mse:.4g} | {db:.3f} | {at_r:.4g} | {verdict} | {te:.1f} ({enc.info['trials']}) | {td:.2f} "
                      f"| {n / td / 1e6:.1f} |", flush=True)
    finally:
        codec.rans_chunk_symbols = default_chunk


if __name__ == "__main__":
    main()
