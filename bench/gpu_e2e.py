"""End-to-end check of QuantizedLinear on the GPU (issue 6): a Llama-architecture model
(transformers' LlamaForCausalLM, random weights) whose Linear layers hold trellis or lattice
payloads (random codewords: every bit string is a valid trellis code and every byte a valid
lattice symbol, so these are random weights of the codec), run at batch 1 against (a) the
dequantized model (the same weights decoded to float16 into nn.Linear) for logits and (b)
float16 for tokens per second, in eager mode and replayed from a CUDA graph (one graph per
decoding step over a static KV cache, so that Python and launch overheads vanish and the
kernels' own time shows).

    python bench/gpu_e2e.py [--layers 8] [--tokens 64] [--codec trellis|lattice] [--k 2] [--no-graph]
            [--hidden 4096 --inter 11008 --heads 32 --kv-heads 32]     # Llama-2-7B's layer shapes
"""

import argparse
import json
import os
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


def trellis_payload(rows, cols, k, rng):
    ntiles = -(-rows // 16) * -(-cols // 16)
    words = rng.integers(0, 2**32, ntiles * 8 * k, dtype=np.uint64).astype(np.uint32)
    params = {"code": 2, "L": 16, "k": k, "row_scales": 0, "scale": np.float32(0.02 / 1.0)}  # HYB
    return 2, params, [words.view(np.uint8)], [StreamSpec("trellis", words.size, 32)]


def lattice_payload(rows, cols, k, rng):
    from pvqcodec.codecs import codec_by_name

    stages = k - 1
    params = {"stages": stages, "row_scales": False,
              "scales": np.array([0.02, 0.01, 0.005][:stages], np.float32) * 0.6}
    specs = codec_by_name("lattice").streams(params, rows, cols, "float16")
    return 3, params, [rng.integers(0, 256, s.count, dtype=np.uint8) for s in specs], specs


def quantize_model(model, k, codec, rng, dtype):
    n = 0
    make = {"trellis": trellis_payload, "lattice": lattice_payload}[codec]
    for name, mod in list(model.named_modules()):
        if not isinstance(mod, nn.Linear) or name.endswith("lm_head"):
            continue
        rows, cols = mod.out_features, mod.in_features
        codec_id, params, payloads, specs = make(rows, cols, k, rng)
        tp = {"seed": int(rng.integers(0, 2**63)), "row_block": hadamard.default_block(rows),
              "col_block": hadamard.default_block(cols)}
        q = QuantizedLinear(cols, rows, codec_id=codec_id, codec_params=params, transform_id=1, transform_params=tp,
                            payloads=payloads, streams=specs, codings=[0] * len(specs), bias=None,
                            dtype=dtype).to(mod.weight.device)
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


@torch.no_grad()
def generate_graph(model, cfg, ids, n):
    """Tokens/s of greedy decoding with each step replayed from one CUDA graph: a static
    KV cache (transformers' StaticCache) and static token/position tensors, so the captured
    step reads its inputs from the same memory every time."""
    from transformers import StaticCache

    dev = ids.device
    cache = StaticCache(config=cfg, max_cache_len=ids.shape[1] + n + 8)
    out = model(input_ids=ids, past_key_values=cache, cache_position=torch.arange(ids.shape[1], device=dev),
                use_cache=True)
    tok = out.logits[:, -1:].argmax(-1)
    pos = torch.tensor([ids.shape[1]], device=dev)

    def step():
        logits = model(input_ids=tok, past_key_values=cache, cache_position=pos, use_cache=True).logits
        return logits[:, -1:].argmax(-1)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        nxt = step()
    torch.cuda.synchronize()
    t0 = time.time()
    for _ in range(n):
        graph.replay()
        tok.copy_(nxt)
        pos.add_(1)
    torch.cuda.synchronize()
    return n / (time.time() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--k", type=int, default=2, help="bits per weight (trellis k; lattice 2, 3 or 4)")
    ap.add_argument("--codec", choices=["trellis", "lattice"], default="trellis")
    ap.add_argument("--no-graph", action="store_true", help="eager mode only")
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--inter", type=int, default=5632)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=4)
    args = ap.parse_args()
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=args.hidden, intermediate_size=args.inter, num_hidden_layers=args.layers,
                      num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, vocab_size=32000,
                      max_position_embeddings=2048)
    dev = torch.device("cuda")
    base = LlamaForCausalLM(cfg).to(dev, torch.float16).eval()
    qmodel = LlamaForCausalLM(cfg).to(dev, torch.float16).eval()
    qmodel.load_state_dict(base.state_dict())
    rng = np.random.default_rng(0)
    nq = quantize_model(qmodel, args.k, args.codec, rng, torch.float16)
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
    res = {"model": f"LlamaForCausalLM random weights, hidden {args.hidden}, inter {args.inter}, heads {args.heads}/"
                    f"{args.kv_heads}, {args.layers} layers, vocab 32000",
           "lattice_tiled": os.environ.get("PVQCODEC_LATTICE_TILED", "1"),
           "quantized_linears": nq, "codec": args.codec, "bits": args.k,
           "logits_rel_err_vs_dequantized": rel, "argmax_agreement": agree,
           "eager_tokens_per_s_fp16": tps_fp16, "eager_tokens_per_s_quantized": tps_q,
           "gpu": torch.cuda.get_device_name(0)}
    if not args.no_graph:
        try:
            res["graph_tokens_per_s_fp16"] = max(generate_graph(base, cfg, ids, args.tokens) for _ in range(2))
            res["graph_tokens_per_s_quantized"] = max(generate_graph(qmodel, cfg, ids, args.tokens) for _ in range(2))
            res["graph_speedup"] = res["graph_tokens_per_s_quantized"] / res["graph_tokens_per_s_fp16"]
        except Exception as e:  # report, keep the eager figures
            res["graph_error"] = f"{type(e).__name__}: {e}"[:500]
    print(json.dumps(res))


if __name__ == "__main__":
    main()
