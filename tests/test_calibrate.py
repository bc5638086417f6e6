"""`pvqcodec calibrate` on a tiny randomly initialised Llama built here (no download):
H = E[x x^T], the mean and the count of every linear layer's input against a direct
computation, shared inputs (q/k/v, gate/up) stored once, and clear errors."""

import json
from collections import defaultdict

import numpy as np
import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

from pvqcodec.cli import main
from pvqcodec.errors import InputError
from pvqcodec.quantize.calibrate import calibrate, token_windows
from pvqcodec.quantize.hessians import load_hessians

TEXT = " ".join(
    "the codec turns weights into symbols and the decoder turns symbols back into weights "
    "a layer reads its input and the second moment of that input weighs the rounding error "
    f"of every column {i} times over".split()[j % 33] for i in range(3) for j in range(400))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_llama")
    words = sorted(set(TEXT.split()))
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", *words])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>",
                                                unk_token="<unk>")
    fast.save_pretrained(d)
    cfg = transformers.LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # random norms, so that inputs are not just normalised embeddings
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    model.save_pretrained(d)
    (d / "calib.txt").write_text(TEXT)
    return d, model, fast


def direct_moments(model, windows):
    """Every linear layer's inputs, recorded by wrapping its forward (not by hooks)."""
    rec = defaultdict(list)
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            def fwd(x, _orig=mod.forward, _name=name):
                rec[_name + ".weight"].append(x.detach().reshape(-1, x.shape[-1]).double().numpy())
                return _orig(x)
            mod.forward = fwd
    with torch.no_grad():
        for w in windows:
            model(input_ids=torch.tensor([w]), use_cache=False)
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            del mod.forward
    return {n: np.concatenate(xs) for n, xs in rec.items()}


def test_calibrate_cli_matches_direct_computation(tiny_model, tmp_path):
    d, model, tok = tiny_model
    out = tmp_path / "h.safetensors"
    assert main(["calibrate", str(d), "--text", str(d / "calib.txt"), "--ctx", "24", "--tokens", "200",
                 "--out", str(out), "-q"]) == 0
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    windows = token_windows(ids, 24, 200, tok.bos_token_id)
    assert sum(map(len, windows)) == 200 and all(w[0] == tok.bos_token_id for w in windows)
    xs = direct_moments(model, windows)
    h = load_hessians(out)
    assert h.info["tokens"] == 200 and h.info["ctx"] == 24
    assert set(h.weight_names()) == set(xs)  # every linear layer, lm_head included (not tied here)
    for layer in range(2):
        p = f"model.layers.{layer}."
        for sub in ("q", "k", "v"):
            assert h.weights[p + f"self_attn.{sub}_proj.weight"] == p + "self_attn.q_proj.weight"
        assert h.weights[p + "self_attn.o_proj.weight"] == p + "self_attn.o_proj.weight"
        assert h.weights[p + "mlp.up_proj.weight"] == p + "mlp.gate_proj.weight"
        assert h.weights[p + "mlp.down_proj.weight"] == p + "mlp.down_proj.weight"
    assert len(h.keys()) == 2 * 4 + 1
    for name, x in xs.items():
        got, count = h.get(name)
        assert count == x.shape[0] == 200
        np.testing.assert_allclose(got, x.T @ x / count, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(h.mean(name), x.mean(0), rtol=1e-9, atol=1e-12)
        assert np.array_equal(got, got.T)
    meta = json.loads(h._src.metadata["pvqcodec.hessians"])
    assert meta["format"] == 1 and meta["model"] == d.name


def test_tied_lm_head_is_not_kept(tiny_model):
    d, model, tok = tiny_model
    windows = token_windows(tok(TEXT, add_special_tokens=False)["input_ids"], 16, 32, tok.bos_token_id)
    stored = {n for n, _ in model.named_parameters() if n != "lm_head.weight"}
    res = calibrate(model, windows, stored_names=stored, progress=False)
    assert "lm_head.weight" not in res.weights and len(res.weights) == 14 and res.tokens == 32


def direct_fisher(model, windows):
    """Every linear layer's mean squared output gradient of the summed next-token loss, from
    outputs kept with retain_grad (not by backward hooks)."""
    outs = defaultdict(list)

    def keep(name):
        def hook(module, args, y):
            y.retain_grad()
            outs[name].append(y)
        return hook

    handles = [mod.register_forward_hook(keep(name + ".weight"))
               for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)]
    acc = defaultdict(lambda: [0.0, 0])
    try:
        for w in windows:
            outs.clear()
            ids = torch.tensor([w])
            emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
            logits = model(inputs_embeds=emb, use_cache=False).logits
            torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum").backward()
            for n, ys in outs.items():
                for y in ys:
                    acc[n][0] += float(y.grad.double().square().sum())
                    acc[n][1] += y.numel()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    return {n: a[0] / a[1] for n, a in acc.items()}


def test_output_fisher_matches_direct_computation(tiny_model, tmp_path):
    """calibrate --fisher-tokens: E[(d loss / d y)^2] per linear layer over the first windows
    covering N tokens, stored in the H file's metadata; the H part is unchanged by it."""
    d, model, tok = tiny_model
    out, plain = tmp_path / "hf.safetensors", tmp_path / "h.safetensors"
    args = ["calibrate", str(d), "--text", str(d / "calib.txt"), "--ctx", "24", "--tokens", "96", "-q"]
    assert main(args + ["--fisher-tokens", "40", "--out", str(out)]) == 0
    assert main(args + ["--out", str(plain)]) == 0
    windows = token_windows(tok(TEXT, add_special_tokens=False)["input_ids"], 24, 96, tok.bos_token_id)
    want = direct_fisher(model, windows[:2])  # 40 tokens: the first two windows of 24
    h, h0 = load_hessians(out), load_hessians(plain)
    assert h.info["fisher_tokens"] == 48 and h0.output_fisher("lm_head.weight") is None
    assert set(h.info["output_fisher"]) == set(want)
    for name, f in want.items():
        assert f > 0 and h.output_fisher(name) == pytest.approx(f, rel=1e-6), name
        np.testing.assert_allclose(h.get(name)[0], h0.get(name)[0], rtol=1e-6, atol=1e-9)
    assert main(args + ["--fisher-tokens", "-1", "--out", str(out)]) == 1
    flags = [p.requires_grad for p in model.parameters()]
    res = calibrate(model, windows[:2], progress=False, fisher_tokens=10)  # one window: 24 tokens
    assert res.fisher_tokens == 24 and set(res.fisher) == set(want)
    assert [p.requires_grad for p in model.parameters()] == flags and all(p.grad is None for p in model.parameters())


def test_model_without_linear_layers_is_a_clear_error(tiny_model):
    _, model, _ = tiny_model
    with pytest.raises(InputError, match="no linear layer to hook.*cannot be calibrated"):
        calibrate(model, [[1, 3, 4]], stored_names=set(), progress=False)


def test_token_windows():
    assert token_windows(list(range(10)), 4, None, 99) == [[99, 0, 1, 2], [99, 3, 4, 5], [99, 6, 7, 8], [99, 9]]
    assert token_windows(list(range(10)), 4, 6, None) == [[0, 1, 2, 3], [4, 5]]
    assert token_windows(list(range(9)), 4, None, 99) == [[99, 0, 1, 2], [99, 3, 4, 5], [99, 6, 7, 8]]
    with pytest.raises(InputError, match="--ctx"):
        token_windows([1, 2], 1, None, None)


def test_cli_errors(tiny_model, tmp_path, capsys):
    d, _, _ = tiny_model
    out = str(tmp_path / "h.safetensors")
    assert main(["calibrate", str(tmp_path), "--text", str(d / "calib.txt"), "--out", out]) == 1
    assert "no config.json" in capsys.readouterr().err
    assert main(["calibrate", str(d), "--text", str(tmp_path / "missing.txt"), "--out", out]) == 1
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("")
    assert main(["calibrate", str(d), "--text", str(tmp_path / "empty.txt"), "--out", out, "--ctx", "8"]) == 1
    assert "too little text" in capsys.readouterr().err
    assert main(["calibrate", str(d), "--text", str(d / "calib.txt"), "--out", out, "--device", "tpu"]) == 1
    assert "--device" in capsys.readouterr().err
