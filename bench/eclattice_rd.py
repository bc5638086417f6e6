"""The eclattice codec end to end on i.i.d. N(0, 1) (issue 10): MSE against the rate from the
file's size, through `pvqcodec encode` / `decode`, one float32 tensor of 2^log2n values
(--cols columns, default 1024), identity transform.

Columns: the coded rate of the tensor (parameter block and payloads, what --bits targets),
the whole file's rate (container header and directory added), the MSE of the decoded
file, the MSE corrected to exactly R coded bits by the 6.02 dB/bit slope, its distance to
D(R) = 2^-2R, the ecsq codec's MSE at the same coded rate (bench/RESULTS.md, 2^18-symbol
chunks) and the issue's target; encode and decode times (one process, the machine's load
included). Usage:

    PYTHONPATH=. python bench/eclattice_rd.py [--log2n 20] [--cols 1024] [--rates 2,3,4] [--seed 1]
    PYTHONPATH=. python bench/eclattice_rd.py --chunks [--log2n 24] [--cols 4096] [--rates 2,4]

--chunks: the coded rate of the same points (3 Lloyd passes at a fixed half_scale near the
rate) with rans chunks of 2^16, 2^17, 2^18 and 2^20 symbols, and the decode time at 2^18.
"""

import argparse
import math
import os
import tempfile
import time

import numpy as np

from pvqcodec.cli import main as cli
from pvqcodec.container.reader import Container
from pvqcodec.safetensors_io import SafetensorsSource, write_safetensors

ECSQ_CODED = {2.0: 0.0893, 3.0: 0.02233, 4.0: 0.00563}  # ecsq at coded R, S = 2^18 (bench/RESULTS.md)
TARGET = {2.0: 0.080}  # the target for the lattice codec at 2.0 bits


def run(x: np.ndarray, bits: float, cols: int) -> dict:
    a = x.reshape(-1, cols).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        src, out, dec = (os.path.join(d, f) for f in ("in.safetensors", "out.pvqc", "dec.safetensors"))
        write_safetensors(src, [("w", "F32", a.shape, lambda: a)])
        t = time.perf_counter()
        assert cli(["encode", src, out, "--codec", "eclattice", "--bits", repr(bits), "--transform", "identity",
                    "-q"]) == 0
        t_enc = time.perf_counter() - t
        size = os.path.getsize(out)
        with Container.open(out) as c:
            (rec,) = c.tensors
            coded = rec.coded_bytes  # payloads + parameter blocks (identity: the codec's 24 bytes)
        t = time.perf_counter()
        assert cli(["decode", out, dec, "-q"]) == 0
        t_dec = time.perf_counter() - t
        with SafetensorsSource.open(dec) as b:
            y = b.read_float32("w").astype(np.float64)
    mse = float(np.mean((a - y) ** 2))
    n = x.size
    return {"coded": 8 * coded / n, "file": 8 * size / n, "mse": mse, "enc": t_enc, "dec": t_dec}


def chunk_sweep(x: np.ndarray, bits: float, cols: int) -> None:
    from dataclasses import replace

    from pvqcodec.codecs import codec_by_name
    from pvqcodec.codecs.eclattice.encoder import LAMBDA_RATIO, encoded_from_points, groups_of
    from pvqcodec.codecs.eclattice.quantizer import quantize_groups
    from pvqcodec.coding import coding_by_id
    from pvqcodec.coding.select import code_stream

    codec = codec_by_name("eclattice")
    w = x.reshape(-1, cols)
    rows = w.shape[0]
    hs = {2.0: 0.4979, 3.0: 0.2587, 4.0: 0.131}[bits]  # near the rate-controlled scales of N(0, 1)
    x8, w8 = groups_of(w)
    t = time.perf_counter()
    c, _, _ = quantize_groups(x8 / hs, w8, 4 * LAMBDA_RATIO, iters=3)
    enc = encoded_from_points(c, hs, rows, cols)
    print(f"{bits:.0f} bits, {rows} x {cols}, half_scale {hs}: 3 passes {time.perf_counter() - t:.1f} s", flush=True)
    specs = codec.streams(enc.params, rows, cols, "float32")
    for s in (1 << 16, 1 << 17, 1 << 18, 1 << 20):
        size, coded = 24, []
        for pos, (sym, spec) in enumerate(zip(enc.streams, specs)):
            spec = replace(spec, bounds=codec.stream_bounds(enc.params, rows, cols, "float32", pos, []))
            cs = code_stream(sym, spec, "auto", s)
            coded.append((cs, spec))
            size += cs.payload.size
        line = f"  chunks of 2^{s.bit_length() - 1}: {8 * size / w.size:.4f} bits/weight"
        if s == codec.rans_chunk_symbols:
            t = time.perf_counter()
            streams = [coding_by_id(cs.coding).decode(cs.payload, spec) for cs, spec in coded]
            t1 = time.perf_counter() - t
            p = codec.parse_params(codec.build_params(enc.params), rows, cols, "float32")
            t = time.perf_counter()
            codec.decode(p, rows, cols, "float32", streams)
            line += f"; decode: payloads {t1:.2f} s, points and values {time.perf_counter() - t:.2f} s"
        print(line, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--log2n", type=int, default=20)
    ap.add_argument("--rates", default="2,3,4")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cols", type=int, default=1024)
    ap.add_argument("--chunks", action="store_true", help="the chunk-size sweep instead of the file runs")
    a = ap.parse_args()
    x = np.random.default_rng(a.seed).standard_normal(1 << a.log2n)
    if a.chunks:
        for r in [float(v) for v in a.rates.split(",")]:
            chunk_sweep(x, r, a.cols)
        return
    print(f"n = 2^{a.log2n}, {a.cols} columns, identity transform")
    print(f"{'R':>4} {'coded b/w':>9} {'file b/w':>8} {'MSE':>8} {'MSE@R':>8} {'dB D(R)':>7} {'ecsq@R':>8} "
          f"{'target':>7} {'enc s':>6} {'dec s':>6}")
    for r in [float(v) for v in a.rates.split(",")]:
        b = run(x, r, a.cols)
        at_r = b["mse"] * 2 ** (2 * (b["coded"] - r))
        db = 10 * math.log10(at_r / 2 ** (-2 * r))
        tgt = TARGET.get(r, ECSQ_CODED.get(r, float("nan")))
        print(f"{r:4.1f} {b['coded']:9.4f} {b['file']:8.4f} {b['mse']:8.5f} {at_r:8.5f} {db:7.3f} "
              f"{ECSQ_CODED.get(r, float('nan')):8.5f} {tgt:7.5f} {b['enc']:6.1f} {b['dec']:6.2f}", flush=True)


if __name__ == "__main__":
    main()
