"""`pvqcodec calibrate`: second moments H = E[x x^T] of every linear layer's input.

A causal language model is loaded from a local Hugging Face directory (config,
safetensors weights, tokenizer; nothing is downloaded), the calibration text is cut into
windows of ``ctx`` tokens and run through it, and a forward pre-hook on every linear layer
(torch.nn.Linear, and transformers' Conv1D of GPT-2, whose weight is stored transposed)
adds the layer's input rows to float64 sums of x x^T and x.

Layers that read the same tensor share one sum (q/k/v read one normalized hidden state,
gate/up another): within a forward pass a tensor is recognised by its storage, shape and
strides, and every input is kept alive until the pass ends so that no two live inputs can
share storage. The first weight that reads an input in execution order names it. Only
weights stored in the model's safetensors files are kept (a tied lm_head is not stored).

With ``fisher_tokens`` (``--fisher-tokens``), the first windows covering that many tokens also
run backward from the summed next-token cross-entropy, and a backward hook on every kept layer
adds up the squares of the gradient at its output: F = E[(d loss / d y_i)^2] over tokens and
output channels, one number per weight (the empirical Fisher of the layer's output, averaged).
F times a layer's output error tr(E H E^T) is the second-order estimate of the loss it adds, which
the bit allocator can weigh tensors by (`--allocate-weight`).

Transformers is needed only here: `pip install "pvqcodec[calib]"`.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass


from ..errors import InputError
from .hessians import write_hessians

__all__ = ["CalibrationResult", "calibrate", "token_windows"]


@dataclass
class CalibrationResult:
    moments: dict  # key -> (sum x x^T float64 [n, n], sum x float64 [n], count)
    weights: dict  # weight name -> key
    tokens: int
    seconds: float
    fisher: dict = None  # weight name -> E[(d loss / d y)^2] (with fisher_tokens), else None
    fisher_tokens: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def _import_transformers():
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise InputError(f"pvqcodec calibrate needs torch and transformers ({exc.name} is missing): "
                         f'pip install "pvqcodec[calib]"') from None
    return torch, transformers


def token_windows(ids: list[int], ctx: int, max_tokens: int | None, bos: int | None) -> list[list[int]]:
    """Cut ``ids`` into windows of ``ctx`` tokens (each starting with ``bos`` if given) until
    ``max_tokens`` tokens are used; a shorter last window is kept if it has at least 2 tokens."""
    if ctx < 2:
        raise InputError(f"--ctx must be at least 2, got {ctx}")
    step = ctx - (bos is not None)
    out, used = [], 0
    for start in range(0, len(ids), step):
        window = ([bos] if bos is not None else []) + ids[start : start + step]
        if max_tokens is not None:
            window = window[: max_tokens - used]
        if len(window) < 2:
            break
        out.append(window)
        used += len(window)
        if max_tokens is not None and used >= max_tokens:
            break
    return out


def load_model(model_dir: str, device: str, dtype: str = "float32"):
    """(model, tokenizer) from a local Hugging Face directory, in eval mode on ``device``."""
    torch, transformers = _import_transformers()
    if not os.path.isdir(model_dir):
        raise InputError(f"{model_dir}: not a directory (a Hugging Face model directory is needed)")
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        raise InputError(f"{model_dir}: no config.json (a Hugging Face model directory is needed)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: torch sees no CUDA device")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True,
                                                                  dtype=getattr(torch, dtype))
    except (OSError, ValueError, KeyError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{model_dir}: cannot load a causal language model and its tokenizer: {msg}") from None
    return model.to(device).eval(), tok


def _stored_weight_names(model_dir: str) -> set[str] | None:
    from ..safetensors_io import SafetensorsSource

    try:
        with SafetensorsSource.open(model_dir) as src:
            return set(src.names)
    except InputError:
        return None  # e.g. only pytorch_model.bin: keep every hooked layer


def _linear_modules(model):
    """[(weight name, module, in_features)] for every hookable linear layer, in definition order."""
    torch, _ = _import_transformers()
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - very old or very new transformers
        Conv1D = ()
    out = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            out.append((f"{name}.weight", mod, mod.in_features))
        elif Conv1D and isinstance(mod, Conv1D):
            out.append((f"{name}.weight", mod, mod.weight.shape[0]))
    return out


def calibrate(model, windows: list[list[int]], *, stored_names: set[str] | None = None, progress: bool = True,
              model_label: str = "model", fisher_tokens: int = 0) -> CalibrationResult:
    """Run ``windows`` of token ids through ``model`` and accumulate the inputs' second moments
    (and, over the first windows covering ``fisher_tokens`` tokens, the layers' output Fisher)."""
    torch, _ = _import_transformers()
    from tqdm import tqdm

    mods = _linear_modules(model)
    if stored_names is not None:
        mods = [m for m in mods if m[0] in stored_names]
    if not mods:
        raise InputError(f"{model_label}: found no linear layer to hook (torch.nn.Linear or transformers Conv1D "
                         f"whose weight is stored in the model's safetensors files); this model cannot be calibrated")
    device = next(model.parameters()).device
    key_of: dict[str, str] = {}  # weight name -> input key, fixed on first sight
    sums: dict[str, list] = {}  # key -> [sum x x^T, sum x, count] (float64 on device)
    live: dict[tuple, tuple[str, object]] = {}  # this pass: tensor identity -> (key, tensor kept alive)

    def hook_for(wname: str, n: int):
        def hook(module, args, kwargs=None):
            x = args[0] if args else next(iter(kwargs.values()))
            ident = (x.data_ptr(), tuple(x.shape), tuple(x.stride()), x.dtype)
            if ident in live:
                key = live[ident][0]
                if key_of.setdefault(wname, key) != key:
                    raise InputError(f"{model_label}: {wname} shares its input with {key} in one pass but not "
                                     f"in another; cannot calibrate this model")
                return None
            key = key_of.setdefault(wname, wname)
            if key != wname:
                raise InputError(f"{model_label}: {wname} shared its input with {key} in an earlier pass but not "
                                 f"in this one; cannot calibrate this model")
            live[ident] = (key, x)
            if x.shape[-1] != n:
                raise InputError(f"{model_label}: {wname} got inputs of width {x.shape[-1]}, expected {n}")
            rows = x.detach().reshape(-1, n).to(torch.float64)
            acc = sums.get(key)
            if acc is None:
                acc = sums[key] = [torch.zeros((n, n), dtype=torch.float64, device=device),
                                   torch.zeros(n, dtype=torch.float64, device=device), 0]
            acc[0].addmm_(rows.T, rows)
            acc[1].add_(rows.sum(0))
            acc[2] += rows.shape[0]
            return None

        return hook

    grads: dict[str, list] = {}  # weight name -> [sum of (d loss / d y)^2, output values seen]

    def grad_hook_for(wname: str):
        def hook(module, grad_input, grad_output):
            g = grad_output[0]
            if g is not None:
                acc = grads.setdefault(wname, [0.0, 0])
                acc[0] += float(g.detach().to(torch.float64).square().sum())
                acc[1] += g.numel()
        return hook

    handles = [m.register_forward_pre_hook(hook_for(w, n), with_kwargs=True) for w, m, n in mods]
    total = sum(len(w) for w in windows)
    fisher_windows, used = 0, 0
    while fisher_tokens > 0 and fisher_windows < len(windows) and used < fisher_tokens:
        used += len(windows[fisher_windows])
        fisher_windows += 1
    if fisher_windows:
        handles += [m.register_full_backward_hook(grad_hook_for(w)) for w, m, _ in mods]
    was_trainable = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)  # gradients of the activations only
    t0 = time.perf_counter()
    try:
        with tqdm(total=total, unit="tok", unit_scale=True, desc="calibrate", disable=not progress or None,
                  file=sys.stderr) as bar:
            for i, window in enumerate(windows):
                live.clear()
                ids = torch.tensor([window], dtype=torch.long, device=device)
                if i < fisher_windows:
                    # backward from the summed next-token loss; the input embeddings carry the graph
                    emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
                    logits = model(inputs_embeds=emb, use_cache=False).logits
                    loss = torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, 1:], reduction="sum")
                    loss.backward()
                else:
                    with torch.no_grad():
                        model(input_ids=ids, use_cache=False)
                live.clear()
                bar.update(len(window))
                bar.set_postfix_str(f"{bar.n / max(time.perf_counter() - t0, 1e-9):.0f} tok/s", refresh=False)
    finally:
        for h in handles:
            h.remove()
        for p, t in zip(model.parameters(), was_trainable):
            p.requires_grad_(t)
        live.clear()
    seconds = time.perf_counter() - t0
    missing = [w for w, _, _ in mods if w not in key_of]
    if missing:
        raise InputError(f"{model_label}: {len(missing)} linear layers never ran (e.g. {missing[0]}); "
                         f"cannot calibrate this model")
    moments = {k: (s[0].cpu().numpy(), s[1].cpu().numpy(), int(s[2])) for k, s in sums.items()}
    fisher = None
    if fisher_windows:
        never = [w for w, _, _ in mods if w not in grads]
        if never:
            raise InputError(f"{model_label}: no gradient reached {never[0]} (and {len(never) - 1} more); "
                             f"cannot measure output sensitivities of this model")
        fisher = {w: g[0] / g[1] for w, g in grads.items()}
    return CalibrationResult(moments, dict(key_of), total, seconds, fisher, used)


def run_calibrate(model_dir: str, text_path: str, out: str, *, tokens: int | None, ctx: int, device: str,
                  progress: bool = True, fisher_tokens: int = 0) -> CalibrationResult:
    """The `pvqcodec calibrate` command without its argument parsing."""
    from ..atomic import check_writable

    if tokens is not None and tokens < 2:
        raise InputError(f"--tokens must be at least 2, got {tokens}")
    if fisher_tokens < 0:
        raise InputError(f"--fisher-tokens must be at least 0, got {fisher_tokens}")
    check_writable(out)
    try:
        with open(text_path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise InputError(f"no such file: {text_path}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{text_path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"cannot read {text_path}: {exc.strerror or exc}") from None
    model, tok = load_model(model_dir, device)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    windows = token_windows(ids, ctx, tokens, tok.bos_token_id)
    if not windows:
        raise InputError(f"{text_path}: too little text ({len(ids)} tokens) for a calibration window")
    res = calibrate(model, windows, stored_names=_stored_weight_names(model_dir), progress=progress,
                    model_label=model_dir, fisher_tokens=fisher_tokens)
    write_hessians(out, res.moments, res.weights, tokens=res.tokens, ctx=ctx,
                   model=os.path.basename(os.path.normpath(model_dir)), fisher=res.fisher,
                   fisher_tokens=res.fisher_tokens)
    return res
