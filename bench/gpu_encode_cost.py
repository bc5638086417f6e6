"""Whole-model trellis encode time with the Viterbi search on the GPU (`encode --device cuda`),
data-free and Hessian-aware, at the shapes of the model in bench/real_model.py.

The real model and its H file do not travel to the device machine (over its 64 MB limit), so
this writes a model of the same shapes (SmolLM2-135M: 30 layers of q/k/v/o 576 x 576 / 192 x
576, gate/up 1536 x 576, down 576 x 1536; 106.2 M weights) with Gaussian weights, and an H
file of the same structure (one H per distinct input, q/k/v and gate/up sharing) from
correlated Gaussian activations. Encode time depends on the shapes, the codec options and H's
size, not on the values, so the times stand for the real model's.

    python bench/gpu_encode_cost.py [--layers 30] [--bits 2] [--devices cuda cpu] [--trellis-L 12] [--out DIR]

Prints a table: device, rounding, wall time of `pvqcodec encode`, weights per second.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pvqcodec.quantize.hessians import write_hessians  # noqa: E402
from pvqcodec.safetensors_io import write_safetensors  # noqa: E402

HIDDEN, INTER, KV = 576, 1536, 192
PROJ = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (KV, HIDDEN), "self_attn.v_proj": (KV, HIDDEN),
        "self_attn.o_proj": (HIDDEN, HIDDEN), "mlp.gate_proj": (INTER, HIDDEN), "mlp.up_proj": (INTER, HIDDEN),
        "mlp.down_proj": (HIDDEN, INTER)}
INPUT_OF = {"self_attn.q_proj": "self_attn.q_proj", "self_attn.k_proj": "self_attn.q_proj",
            "self_attn.v_proj": "self_attn.q_proj", "self_attn.o_proj": "self_attn.o_proj",
            "mlp.gate_proj": "mlp.gate_proj", "mlp.up_proj": "mlp.gate_proj", "mlp.down_proj": "mlp.down_proj"}


def write_model(path: Path, layers: int, rng) -> int:
    entries, n = [], 0
    for i in range(layers):
        for p, (r, c) in PROJ.items():
            entries.append((f"model.layers.{i}.{p}.weight", "F32", (r, c),
                            lambda r=r, c=c: (rng.standard_normal((r, c)) * 0.02).astype(np.float32)))
            n += r * c
    write_safetensors(path, entries)
    return n


def write_h(path: Path, layers: int, rng, tokens: int = 2048) -> None:
    moments, weights = {}, {}
    for i in range(layers):
        for p in PROJ:
            key = f"model.layers.{i}.{INPUT_OF[p]}.weight"
            weights[f"model.layers.{i}.{p}.weight"] = key
            if key not in moments:
                n = PROJ[INPUT_OF[p]][1]
                x = rng.standard_normal((tokens, n)) @ (np.eye(n) + 0.1 * rng.standard_normal((n, n)))
                moments[key] = (x.T @ x, x.sum(0), tokens)
    write_hessians(path, moments, weights, tokens=tokens, ctx=512, model="random-smollm2-shapes")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--bits", default="2")
    ap.add_argument("--devices", nargs="+", default=["cuda"])
    ap.add_argument("--trellis-L", default="12")
    ap.add_argument("--timeout", type=float, default=420.0, help="seconds per encode at most")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = write_model(tmp / "m.safetensors", args.layers, rng)
        write_h(tmp / "h.safetensors", args.layers, rng)
        for dev in args.devices:
            for rounding in ("data-free", "hessian-aware"):
                cmd = [sys.executable, "-m", "pvqcodec", "encode", str(tmp / "m.safetensors"), str(tmp / "o.pvqc"),
                       "--codec", "trellis", "--bits", args.bits, "--trellis-L", args.trellis_L, "--device", dev, "-q"]
                if rounding == "hessian-aware":
                    cmd += ["--hessians", str(tmp / "h.safetensors")]
                t0 = time.perf_counter()
                try:
                    r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                    ok, err = r.returncode == 0, r.stderr.strip()[-300:]
                except subprocess.TimeoutExpired:
                    ok, err = False, f"timed out after {args.timeout:.0f} s"
                s = time.perf_counter() - t0
                row = {"device": dev, "rounding": rounding, "weights": n, "bits": args.bits, "L": args.trellis_L,
                       "seconds": round(s, 1), "ok": ok, "weights_per_s": round(n / s) if ok else None,
                       **({} if ok else {"error": err})}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"\n| device | rounding | weights | wall s | M weights/s |\n|---|---|---|---|---|")
    for r in rows:
        rate = f"{r['weights_per_s'] / 1e6:.2f}" if r["ok"] else r.get("error", "failed")
        print(f"| {r['device']} | {r['rounding']} | {r['weights']:,} | {r['seconds']} | {rate} |")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        Path(args.out, "gpu_encode_cost.json").write_text(json.dumps(rows, indent=1))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
