"""Cost of the spec 7.3 step 3 check (QuantizedLinear.check_finite) on the GPU: once per layer
at load, for a lattice 2-bit layer (random payloads, every byte a valid symbol) with the RHT
blocks the encoder picks by default. Prints a table; needs CUDA.

    python bench/finite_check_bench.py [--rows 8192 --cols 28672]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvqcodec.torch import QuantizedLinear  # noqa: E402
from pvqcodec.transforms import hadamard  # noqa: E402


def lattice_module(rows, cols, bits=2, seed=0):
    rng = np.random.default_rng(seed)
    k = bits - 1
    ng = rows * -(-cols // 8)
    payloads = [rng.integers(0, 256, ng, dtype=np.uint8) for _ in range(k + 1)]
    params = {"stages": k, "row_scales": False, "scales": np.array([0.01, 0.005, 0.0025][:k], np.float32)}
    tp = {"seed": 1234, "row_block": hadamard.default_block(rows), "col_block": hadamard.default_block(cols)}
    q = QuantizedLinear(cols, rows, codec_id=3, codec_params=params, transform_id=1, transform_params=tp,
                        payloads=payloads, streams=[None] * len(payloads), codings=[0] * len(payloads),
                        dtype=torch.float16, source_dtype="float16")
    return q.cuda()


def seconds(fn, reps=5):
    ts = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--cols", type=int, default=28672)
    a = ap.parse_args()
    q = lattice_module(a.rows, a.cols)
    x = torch.randn(1, a.cols, device="cuda", dtype=torch.float16)
    q(x)  # builds the kernels, checks once

    def check():
        q._finite_checked = False
        q.check_finite()

    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    check()
    extra = torch.cuda.max_memory_allocated() - base
    t_check = seconds(check)
    t_fwd = seconds(lambda: q(x), reps=20)
    t_w = seconds(lambda: q.dense_weight(torch.float16))
    tp = q.transform_params
    print(f"{torch.cuda.get_device_name(0)}, lattice 2-bit {a.rows}x{a.cols}, "
          f"rht blocks {tp['row_block']}x{tp['col_block']}")
    print("| what | time (ms) |")
    print("|---|---|")
    print(f"| check_finite (once per layer at load) | {t_check * 1e3:.2f} |")
    print(f"| dense_weight float16 (W' + inverse RHT + check) | {t_w * 1e3:.2f} |")
    print(f"| forward, batch 1 (fused; eager incl. launch overhead) | {t_fwd * 1e3:.3f} |")
    print(f"peak extra GPU memory of check_finite: {extra / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
