"""GPU ecsq decode (gpu_decoder/ecsq.cu, spec 6.6.4) after the GPU rans decoder (issue 10).

Data: one 8192 x 8192 tensor of ecsq symbols: zigzag indices of round(v / step) for v ~ N(0, 1),
step = 4.14 * 2^-3 (the 3-bit step of spec 6.6.5; entropy about 3 bits), a 32-entry offset table;
coded by the reference encoder in rans table mode, 2^18-symbol chunks (the ecsq codec's chunking).
The output is checked bit for bit against the Python reference decoder (float16).

Times: CUDA events, median of 20 runs, no host sync between the two kernels (errors checked
after the timing): rans payload -> uint16 symbols -> W' in float16 / float32, and the ecsq kernel
alone from symbols. GB/s counts the bytes of decoded output (2 per weight in float16).

    python bench/gpu_ecsq.py [--rows 8192 --cols 8192]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gpu_decoder as g  # noqa: E402
from pvqcodec.codecs.ecsq import decode_ecsq_values  # noqa: E402
from pvqcodec.coding import StreamSpec  # noqa: E402
from pvqcodec.coding.rans import RansCoding  # noqa: E402


def _time(fn, reps=20):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / 1e3)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--cols", type=int, default=8192)
    args = ap.parse_args()
    rows, cols = args.rows, args.cols
    n = rows * cols
    rng = np.random.default_rng(0)
    step = np.float32(4.14 * 2.0 ** -3)
    q = np.round(rng.standard_normal(n, dtype=np.float32) / step).astype(np.int64)
    sym = np.where(q > 0, 2 * q - 1, -2 * q)
    offsets = (0.08 + 0.01 * np.arange(32)).astype(np.float32)
    params = {"step": step, "offsets": offsets}
    spec = StreamSpec("indices", n, 16)
    payload = RansCoding.encode(sym, spec, mode="table", precision=None, chunk_symbols=1 << 18)
    p = torch.from_numpy(np.ascontiguousarray(payload)).cuda()
    plan = g.rans_plan(p, spec)
    s_buf = torch.empty(n, dtype=torch.int16, device="cuda")
    out16 = torch.empty((rows, cols), dtype=torch.float16, device="cuda")
    out32 = torch.empty((rows, cols), dtype=torch.float32, device="cuda")
    errs = []

    def full(out):
        _, s, e = g.rans_decode(p, spec, plan, packed=False, symbols=True, out_symbols=s_buf, check=False)
        _, e2 = g.ecsq_decode([s], params, rows, cols, out=out, check=False)
        errs.extend([e, e2])

    t16 = _time(lambda: full(out16))
    t32 = _time(lambda: full(out32))
    tk = _time(lambda: g.ecsq_decode([s_buf], params, rows, cols, out=out16, check=False))
    assert not any(int(e.item()) for e in errs), "a decode reported an error"
    full(out16)
    ref = torch.from_numpy(decode_ecsq_values(sym, step, offsets).reshape(rows, cols)).to(torch.float16)
    assert torch.equal(out16.cpu().view(torch.int16), ref.view(torch.int16)), "float16 output differs from the reference"
    bpw = 8 * payload.size / n
    print(f"{torch.cuda.get_device_name()} | {rows}x{cols} ecsq, rans {bpw:.3f} bits/weight")
    print("| path | ms | GB/s of output |")
    print("|---|---|---|")
    print(f"| rans + ecsq -> float16 | {t16 * 1e3:.3f} | {2 * n / t16 / 1e9:.1f} |")
    print(f"| rans + ecsq -> float32 | {t32 * 1e3:.3f} | {4 * n / t32 / 1e9:.1f} |")
    print(f"| ecsq kernel alone (symbols -> float16) | {tk * 1e3:.3f} | {2 * n / tk / 1e9:.1f} |")


if __name__ == "__main__":
    main()
