"""Encoder and decoder throughput of the full pipeline, one core (weights per second).

    NUMBA_NUM_THREADS=1 python bench/throughput.py [--rows 4096 --cols 4096] [--codec pvq --bits 2 --group-size 32]

encode: `encode_tensor` as the CLI calls it (float16 source -> RHT forward in float64 -> codec
encoder -> raw packing -> the reference decode it runs to report SQNR), excluding file I/O.
decode: a written .pvqc decoded by the Python reference decoder (CRC, unpacking, codec decode,
inverse RHT) to float32; and the codec decode alone (without the inverse transform).
Run with NUMBA_NUM_THREADS=1 for one-core figures; the first call compiles (a warm-up run
is made and not timed).
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pvqcodec.codecs import codec_by_name  # noqa: E402
from pvqcodec.container.reader import Container  # noqa: E402
from pvqcodec.container.writer import write_pvqc  # noqa: E402
from pvqcodec.decoder import decode_float32, decode_streams  # noqa: E402
from pvqcodec.encoder import EncodeOptions, encode_tensor  # noqa: E402


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--codec", default="pvq")
    ap.add_argument("--bits", type=float, default=2.0)
    ap.add_argument("--group-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((args.rows, args.cols)) * 0.02).astype(np.float16)
    opts = EncodeOptions(codec=args.codec, bits=args.bits, codec_options={"group_size": args.group_size}
                         if args.codec == "pvq" else {})
    small = w[:64, :256].copy()
    encode_tensor("warmup", small, "float16", opts)  # compile
    t_enc, (entry, rep) = best_of(lambda: encode_tensor("w", w, "float16", opts), args.repeat)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.pvqc")
        write_pvqc(path, {}, [entry])
        with Container.open(path) as c:
            rec = c.tensor("w")
            decode_float32(c, rec)  # warm
            t_dec, _ = best_of(lambda: decode_float32(c, rec), args.repeat)
            streams = decode_streams(c, rec)
            t_codec, _ = best_of(lambda: rec.codec.decode(rec.codec_params, rec.rows, rec.cols, rec.dtype, streams),
                                 args.repeat)
    n = w.size
    threads = os.environ.get("NUMBA_NUM_THREADS", "all")
    print(f"# {args.codec} --bits {args.bits} --group-size {args.group_size}, {args.rows} x {args.cols} float16, "
          f"NUMBA_NUM_THREADS={threads}, best of {args.repeat}")
    print("| stage | seconds | M weights/s |")
    print("|---|---|---|")
    print(f"| encode (RHT + codec + SQNR check) | {t_enc:.3f} | {n / t_enc / 1e6:.2f} |")
    print(f"| decode, full (CRC + unpack + codec + inverse RHT) | {t_dec:.3f} | {n / t_dec / 1e6:.2f} |")
    print(f"| decode, codec only | {t_codec:.3f} | {n / t_codec / 1e6:.2f} |")
    print(f"achieved {rep.bits_per_weight:.4f} bits per weight, SQNR {rep.sqnr_db:.2f} dB")


if __name__ == "__main__":
    main()
