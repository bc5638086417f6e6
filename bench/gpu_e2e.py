"""End-to-end check of QuantizedLinear on the GPU (issue 6): a Llama-architecture model
(transformers' LlamaForCausalLM, random weights) whose Linear layers hold trellis payloads
(random codewords: every bit string is a valid trellis code, so these are random weights of
the codec), run at batch 1 against (a) the dequantized model (the same weights decoded to
float16 into nn.Linear) for logits and (b) float16 for tokens per second.

    python bench/gpu_e2e.py [--layers 8] [--tokens 64]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvqcodec.coding import StreamSpec  # noqa: E402
from pvqcodec.torch import QuantizedLinear  # noqa: E402
from pvqcodec.transforms import hadamard  # noqa: E402


def quantize_model(model, k, code, rng, dtype):
    n = 0
    for name, mod in list(model.named_modules()):
        if not isinstance(mod, nn.Linear) or name.endswith("lm_head"):
            continue
        rows, cols = mod.out_features, mod.in_features
        ntiles = -(-rows // 16) * -(-cols // 16)
        words = rng.integers(0, 2**32, ntiles * 8 * k, dtype=np.uint64).astype(np.uint32)
        params = {"code": code, "L": 16, "k": k, "row_scales": 0, "scale": np.float32(0.02 / 1.0)}
        tp = {"seed": int(rng.integers(0, 2**63)), "row_block": hadamard.default_block(rows),
              "col_block": hadamard.default_block(cols)}
        q = QuantizedLinear(cols, rows, codec_id=2, codec_params=params, transform_id=1, transform_params=tp,
                            payloads=[words.view(np.uint8)], streams=[StreamSpec("trellis", words.size, 32)],
                            codings=[0], bias=None, dtype=dtype).to(mod.weight.device)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, q)
        n += 1
    return n


def dequantize_copy(qmodel, dense_model):
    for name, mod in qmodel.named_modules():
        if isinstance(mod, QuantizedLinear):
            with torch.no_grad():
                dense_model.get_submodule(name).weight.copy_(mod.dense_weight(torch.float16))


@torch.no_grad()
def generate(model, ids, n):
    out = model(input_ids=ids, use_cache=True)
    past = out.past_key_values
    tok = out.logits[:, -1:].argmax(-1)
    torch.cuda.synchronize()
    t0 = time.time()
    for _ in range(n):
        out = model(input_ids=tok, past_key_values=past, use_cache=True)
        past = out.past_key_values
        tok = out.logits[:, -1:].argmax(-1)
    torch.cuda.synchronize()
    return n / (time.time() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--k", type=int, default=2)
    args = ap.parse_args()
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=args.layers, num_attention_heads=32,
                      num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048)
    dev = torch.device("cuda")
    base = LlamaForCausalLM(cfg).to(dev, torch.float16).eval()
    qmodel = LlamaForCausalLM(cfg).to(dev, torch.float16).eval()
    qmodel.load_state_dict(base.state_dict())
    rng = np.random.default_rng(0)
    nq = quantize_model(qmodel, args.k, 2, rng, torch.float16)
    dequantize_copy(qmodel, base)  # base now holds the dequantized weights (float16)
    ids = torch.randint(0, cfg.vocab_size, (1, 32), device=dev)
    with torch.no_grad():
        lq = qmodel(input_ids=ids).logits.float()
        ld = base(input_ids=ids).logits.float()
    rel = ((lq - ld).norm() / ld.norm()).item()
    agree = (lq.argmax(-1) == ld.argmax(-1)).float().mean().item()
    generate(base, ids, 8)  # warm-up: handles, kernels, allocator
    generate(qmodel, ids, 8)
    tps_fp16 = max(generate(base, ids, args.tokens) for _ in range(2))
    tps_q = max(generate(qmodel, ids, args.tokens) for _ in range(2))
    res = {"model": f"LlamaForCausalLM random weights, hidden 2048, inter 5632, {args.layers} layers, vocab 32000",
           "quantized_linears": nq, "trellis": f"hyb L=16 k={args.k}", "logits_rel_err_vs_dequantized": rel,
           "argmax_agreement": agree, "tokens_per_s_fp16": tps_fp16, "tokens_per_s_quantized": tps_q,
           "gpu": torch.cuda.get_device_name(0)}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
