"""Hessian-aware rounding (issue 9): proxy error of data-free rounding vs BlockLDLQ vs
BlockLDLQ + block coordinate descent, per codec and rate, and the encode time.

Synthetic layers: W (rows x n) i.i.d. Gaussian; H = X^T X / T from T = 4n inputs with
a power-law spectrum (eigenvalue i proportional to (1 + i)^-alpha in a random basis), the
shape of real LLM Hessians' spectra; both go through the encoder's RHT as in
`pvqcodec encode`. With --hessians H.safetensors --model model.safetensors, real layers
instead (every weight that has an H, or those matching --match).

    python bench/ldlq.py --n 512 1024 --rows 256 --codecs pvq lattice trellis --bits 2 3 4 --passes 0 2 10

The entropy-coded codecs (ecsq, pvqvr, ectcq, eclattice) run `encode_with_hessian` itself,
whose rate search meets the data-free encoding's rate rule (pvqcodec/quantize/ldlq_rate.py);
their rows show the coded bytes against the target. `--identity` uses H = I: the cost of
rounding block by block against the data-free encoder at the same rate.

    python bench/ldlq.py --n 1024 --rows 256 --codecs ecsq pvqvr ectcq eclattice --bits 2 3 4 --passes 0 2
    python bench/ldlq.py --n 1024 --rows 256 --codecs ecsq pvqvr ectcq eclattice --bits 2 --passes 0 --identity
"""

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pvqcodec.codecs import codec_by_name  # noqa: E402
from pvqcodec.quantize.ldlq import (block_ldl, block_ldlq, coordinate_descent, damped_cholesky, decoded,  # noqa: E402
                                    encode_with_hessian, refit_scales)
from pvqcodec.quantize.ldlq_rate import RateControlledQuantizer  # noqa: E402
from pvqcodec.quantize.proxy import check_hessian, proxy_error  # noqa: E402
from pvqcodec.transforms import TRANSFORMS_BY_NAME  # noqa: E402
from pvqcodec.quantize.ldlq import rotate_hessian  # noqa: E402

CODEC_OPTIONS = {"pvq": {}, "lattice": {}, "trellis": {"trellis_L": 12}}


def synthetic(rows, n, alpha, seed):
    rng = np.random.default_rng(seed)
    Qm, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s = (1.0 + np.arange(n)) ** (-alpha / 2)
    X = rng.standard_normal((4 * n, n)) @ (Qm * s).T
    return rng.standard_normal((rows, n)), X.T @ X / X.shape[0]


def rotated(W, H, seed=0):
    from pvqcodec.encoder import rht_blocks

    t = TRANSFORMS_BY_NAME["rht"]
    rb, cb = rht_blocks(*W.shape, "auto")
    tp = {"seed": seed, "row_block": rb, "col_block": cb}
    return t.forward(W, tp), rotate_hessian(H, t, tp)


def run_rate_controlled(codec, opts, wp, Hp, passes_list, damp):
    """An entropy-coded codec: encode_with_hessian's whole rate search per CD setting.
    Rows: (method, relative proxy, seconds, coded bytes, target bytes)."""
    out = []
    for passes in sorted(passes_list):
        t0 = time.perf_counter()
        enc, info = encode_with_hessian(codec, wp, opts, Hp, damp=damp, passes=passes)
        sec = time.perf_counter() - t0
        if not out:
            out.append(("data-free", info["proxy_free"], info["seconds_free"], info["bytes_free"],
                        info["bytes_target"]))
        if passes and not info["cd_passes"]:
            continue  # the codec does no coordinate descent
        name = "LDLQ" + (f" + {passes} CD" if passes else "") + f" ({info['trials']} trials)"
        out.append((name, info["proxy_ldlq"], sec, info["bytes_ldlq"], info["bytes_target"]))
    return out


def run_case(codec_name, bits, wp, Hp, passes_list, weighted_list, damp=0.01, extra=None):
    """Rows of results: (method, relative proxy, seconds[, coded bytes, target bytes])."""
    codec = codec_by_name(codec_name)
    opts = {"bits": bits, **CODEC_OPTIONS.get(codec_name, {}), **(extra or {})}
    rows, n = wp.shape
    energy = proxy_error(wp, Hp)
    t0 = time.perf_counter()
    free = codec.encode(wp, opts)
    t_free = time.perf_counter() - t0
    q = codec.block_quantizer(wp, opts, free)
    if isinstance(q, RateControlledQuantizer):
        return run_rate_controlled(codec, opts, wp, Hp, passes_list, damp)
    out = [("data-free", proxy_error(wp - decoded(codec, free, rows, n), Hp) / energy, t_free)]
    t0 = time.perf_counter()
    C, Hd, _, _ = damped_cholesky(Hp, damp)
    L, ddiag, _ = block_ldl(C, q.width)
    t_fact = time.perf_counter() - t0
    for weighted in weighted_list:
        t0 = time.perf_counter()
        Q, codes = block_ldlq(wp, L, q, ddiag if weighted else None)
        t_ldlq = time.perf_counter() - t0 + t_fact
        done = 0
        for passes in sorted(passes_list):
            t1 = time.perf_counter()
            if passes > done:
                Q, codes, _ = coordinate_descent(wp, Q, codes, Hd, q, passes - done, weighted)
                t_ldlq += time.perf_counter() - t1
                done = passes
            t2 = time.perf_counter()
            enc = q.finish(codes, refit_scales(wp, Hp, q, codes))
            t_fin = time.perf_counter() - t2
            p = proxy_error(wp - decoded(codec, enc, rows, n), Hp) / energy
            name = "LDLQ" + (" diag-D" if weighted else "") + (f" + {passes} CD" if passes else "")
            out.append((name, p, t_free + t_ldlq + t_fin))
    return out


def real_layers(model, hessians, match, max_layers):
    from pvqcodec.quantize.hessians import open_importance
    from pvqcodec.safetensors_io import SafetensorsSource
    from pvqcodec import dtypes

    src = SafetensorsSource.open(model)
    hs = open_importance(hessians)
    names = [n for n in src.names if n in set(hs.weight_names()) and (not match or re.search(match, n))]
    for name in names[:max_layers]:
        info = src.info(name)
        W = dtypes.to_float32(np.asarray(src.read(name)), info.dtype_name).astype(np.float64)
        W = W.reshape(-1, W.shape[-1])
        H, _ = hs.get(name)
        Hc, _ = check_hessian(H, W.shape[1], name)
        yield name, W, Hc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--codecs", nargs="+", default=["pvq", "lattice", "trellis"])
    ap.add_argument("--bits", type=float, nargs="+", default=[2, 3, 4])
    ap.add_argument("--passes", type=int, nargs="+", default=[0, 2, 10])
    ap.add_argument("--weighted", choices=["no", "yes", "both"], default="both")
    ap.add_argument("--model", help="a safetensors file or directory (real layers)")
    ap.add_argument("--hessians", help="its H file (pvqcodec calibrate) or imatrix")
    ap.add_argument("--match", help="regex on weight names (real layers)")
    ap.add_argument("--max-layers", type=int, default=4)
    ap.add_argument("--damp", type=float, nargs="+", default=[0.01], help="damping values to compare")
    ap.add_argument("--identity", action="store_true",
                    help="H = I (the cost of block rounding against the data-free encoder at equal rate)")
    ap.add_argument("--options", default="{}", help="JSON codec options for every codec (experiments)")
    args = ap.parse_args()
    extra = json.loads(args.options)
    weighted = {"no": [False], "yes": [True], "both": [False, True]}[args.weighted]

    if args.model:
        cases = [(name, *rotated(W, H)) for name, W, H in real_layers(args.model, args.hessians, args.match,
                                                                     args.max_layers)]
    else:
        cases = []
        for n in args.n:
            W, H = synthetic(args.rows, n, args.alpha, n)
            if args.identity:
                cases.append((f"synthetic {args.rows}x{n}, H = I", *rotated(W, np.eye(n))))
            else:
                cases.append((f"synthetic {args.rows}x{n} alpha {args.alpha:g}", *rotated(W, H)))
    print("| layer | codec | bits | damp | method | proxy tr(EHE')/tr(WHW') | vs data-free dB | encode s | "
          "coded bytes / target |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, wp, Hp in cases:
        for codec in args.codecs:
            for bits in args.bits:
                for damp in args.damp:
                    res = run_case(codec, bits, wp, Hp, args.passes, weighted, damp, extra)
                    base = res[0][1]
                    for method, p, sec, *size in res:
                        db = 10 * np.log10(p / base) if p > 0 and base > 0 else float("nan")
                        sz = f"{size[0]} / {size[1]:.0f}" if size else "-"
                        print(f"| {label} | {codec} | {bits:g} | {damp:g} | {method} | {p:.4g} | {db:+.2f} | "
                              f"{sec:.2f} | {sz} |", flush=True)


if __name__ == "__main__":
    main()
