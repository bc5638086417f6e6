"""llama.cpp importance matrices (legacy .dat and GGUF), read as diagonal Hessians, and the
H file that `pvqcodec calibrate` writes: round trips, name mapping, and clear errors."""

import json
import struct

import numpy as np
import pytest

from pvqcodec.quantize.hessians import (
    HessianFileError,
    load_hessians,
    load_imatrix,
    open_importance,
    write_hessians,
)
from pvqcodec.quantize.imatrix import gguf_to_hf_name, hf_to_gguf_name
from pvqcodec.safetensors_io import write_safetensors

# ---- writers for the two llama.cpp formats (written from the format description) ----------


def legacy_bytes(entries, trailer=("calib.txt", 7)):
    """entries: [(name, ncall, mean values)]; values stored as mean * ncall, as llama.cpp does."""
    out = struct.pack("<i", len(entries))
    for name, ncall, mean in entries:
        raw = name.encode()
        vals = np.asarray(mean, dtype=np.float32) * np.float32(max(ncall, 1) if ncall else 1)
        out += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, len(mean)) + vals.astype("<f4").tobytes()
    if trailer is not None:
        ds = trailer[0].encode()
        out += struct.pack("<ii", trailer[1], len(ds)) + ds
    return out


def _gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_bytes(entries, alignment=32, general_type="imatrix"):
    """entries: [(name, sums [n_mat, n], counts [n_mat])] as GGUF in_sum2/counts tensors."""
    tensors = []
    for name, sums, counts in entries:
        sums = np.asarray(sums, dtype="<f4").reshape(len(counts), -1)
        tensors.append((name + ".in_sum2", [sums.shape[1], sums.shape[0]], sums.tobytes()))
        tensors.append((name + ".counts", [1, len(counts)], np.asarray(counts, dtype="<f4").tobytes()))
    kvs = [("general.type", 8, _gstr(general_type)),
           ("imatrix.datasets", 9, struct.pack("<IQ", 8, 1) + _gstr("calib.txt")),
           ("imatrix.chunk_count", 4, struct.pack("<I", 3)),
           ("imatrix.chunk_size", 4, struct.pack("<I", 512))]
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for key, t, val in kvs:
        head += _gstr(key) + struct.pack("<I", t) + val
    offset, data = 0, b""
    for name, dims, raw in tensors:
        head += _gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        head += struct.pack("<IQ", 0, offset)
        pad = b"\0" * (-len(raw) % alignment)
        data += raw + pad
        offset += len(raw) + len(pad)
    head += b"\0" * (-len(head) % alignment)
    return head + data


# ---- name mapping --------------------------------------------------------------------------


@pytest.mark.parametrize("gguf,hf", [
    ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"),
    ("blk.11.attn_output.weight", "model.layers.11.self_attn.o_proj.weight"),
    ("blk.3.ffn_gate.weight", "model.layers.3.mlp.gate_proj.weight"),
    ("blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj.weight"),
    ("output.weight", "lm_head.weight"),
])
def test_name_mapping_both_ways(gguf, hf):
    assert gguf_to_hf_name(gguf) == hf
    assert hf_to_gguf_name(hf) == (gguf, None)


def test_name_mapping_experts_and_unknown():
    assert gguf_to_hf_name("blk.2.ffn_up_exps.weight", 5) == "model.layers.2.mlp.experts.5.up_proj.weight"
    assert hf_to_gguf_name("model.layers.2.mlp.experts.5.up_proj.weight") == ("blk.2.ffn_up_exps.weight", 5)
    assert gguf_to_hf_name("blk.0.attn_qkv.weight") is None
    assert hf_to_gguf_name("model.norm.weight") is None


# ---- legacy .dat -----------------------------------------------------------------------------


def test_legacy_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    q = rng.random(16).astype(np.float32) + 0.1
    down = rng.random(32).astype(np.float32) + 0.1
    p = tmp_path / "imatrix.dat"
    p.write_bytes(legacy_bytes([("blk.0.attn_q.weight", 4, q), ("blk.0.ffn_down.weight", 4, down)]))
    src = open_importance(p)
    assert src.diagonal_only and src.kind == "imatrix-legacy"
    diag, count = src.get("model.layers.0.self_attn.q_proj.weight")
    assert count == 4 and diag.dtype == np.float64
    np.testing.assert_allclose(diag, q, rtol=1e-6)  # stored mean * ncall, read back / ncall
    np.testing.assert_allclose(src.get("blk.0.ffn_down.weight")[0], down, rtol=1e-6)  # GGUF name works too
    assert src.get("model.layers.0.self_attn.k_proj.weight") is None  # nothing stored for it
    assert src.imatrix.datasets == ["calib.txt"] and src.imatrix.chunk_count == 7


@pytest.mark.parametrize("tail", [b"", struct.pack("<i", 9)])  # no trailer; the call count alone (older versions)
def test_legacy_short_trailers(tmp_path, tail):
    p = tmp_path / "old.dat"
    p.write_bytes(legacy_bytes([("blk.1.attn_k.weight", 2, [1.0, 2.0])], trailer=None) + tail)
    src = load_imatrix(p)
    diag, count = src.get("model.layers.1.self_attn.k_proj.weight")
    np.testing.assert_allclose(diag, [1.0, 2.0])
    assert count == 2 and src.imatrix.chunk_count == (9 if tail else None)


@pytest.mark.parametrize("damage,message", [
    (lambda b: b[:-3], "trailing bytes|truncated|dataset"),
    (lambda b: b[:20], "truncated|does not fit"),
    (lambda b: struct.pack("<i", 0) + b[4:], "entry count"),
    (lambda b: b + b"xx", "trailing bytes"),
])
def test_legacy_damaged(tmp_path, damage, message):
    p = tmp_path / "bad.dat"
    p.write_bytes(damage(legacy_bytes([("blk.0.attn_q.weight", 1, [1.0, 2.0, 3.0])])))
    with pytest.raises(HessianFileError, match=message) as exc:
        open_importance(p)
    assert str(p) in str(exc.value)


def test_legacy_nan_is_rejected(tmp_path):
    p = tmp_path / "nan.dat"
    p.write_bytes(legacy_bytes([("blk.0.attn_q.weight", 1, [1.0, np.nan])]))
    with pytest.raises(HessianFileError, match="blk.0.attn_q.weight.*NaN"):
        load_imatrix(p)


# ---- GGUF imatrix ----------------------------------------------------------------------------


def test_gguf_round_trip_dense_and_experts(tmp_path):
    rng = np.random.default_rng(1)
    s_q = rng.random((1, 8)) * 100
    s_e = rng.random((3, 4)) * 50
    p = tmp_path / "imatrix.gguf"
    p.write_bytes(gguf_bytes([("blk.0.attn_q.weight", s_q, [25]),
                              ("blk.1.ffn_gate_exps.weight", s_e, [10, 0, 5])]))
    src = open_importance(p)
    assert src.diagonal_only and src.kind == "imatrix-gguf"
    diag, count = src.get("model.layers.0.self_attn.q_proj.weight")
    assert count == 25
    np.testing.assert_allclose(diag, s_q[0].astype(np.float32) / 25, rtol=1e-6)
    d2, c2 = src.get("model.layers.1.mlp.experts.2.gate_proj.weight")
    assert c2 == 5
    np.testing.assert_allclose(d2, s_e[2].astype(np.float32) / 5, rtol=1e-6)
    assert src.get("model.layers.1.mlp.experts.1.gate_proj.weight") is None  # count 0: no information
    assert src.get("model.layers.1.mlp.experts.3.gate_proj.weight") is None  # no such expert
    assert src.imatrix.datasets == ["calib.txt"] and src.imatrix.chunk_count == 3


def test_gguf_errors(tmp_path):
    good = gguf_bytes([("blk.0.attn_q.weight", np.ones((1, 4)), [2])])
    p = tmp_path / "x.gguf"
    p.write_bytes(good[:-30])  # into the last tensor's data, not only its padding
    with pytest.raises(HessianFileError, match="misaligned or past the end"):
        open_importance(p)
    p.write_bytes(gguf_bytes([("blk.0.attn_q.weight", np.ones((1, 4)), [2])], general_type="llama"))
    with pytest.raises(HessianFileError, match="not 'imatrix'"):
        open_importance(p)
    p.write_bytes(gguf_bytes([("blk.0.attn_q.weight", -np.ones((1, 4)), [2])]))
    with pytest.raises(HessianFileError, match="negative"):
        open_importance(p)
    p.write_bytes(good[:4] + struct.pack("<I", 1) + good[8:])
    with pytest.raises(HessianFileError, match="version 1"):
        open_importance(p)


# ---- the H file ------------------------------------------------------------------------------


def _moments(rng, n, count):
    x = rng.standard_normal((count, n))
    return x.T @ x, x.sum(0), count, x


def test_hessian_file_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    a, b = _moments(rng, 6, 50), _moments(rng, 4, 50)
    weights = {"l.q.weight": "l.q.weight", "l.k.weight": "l.q.weight", "l.down.weight": "l.down.weight"}
    p = tmp_path / "h.safetensors"
    write_hessians(p, {"l.q.weight": a[:3], "l.down.weight": b[:3]}, weights, tokens=50, ctx=16, model="toy")
    src = open_importance(p)
    assert not src.diagonal_only and src.kind == "hessians"
    h, count = src.get("l.k.weight")
    assert count == 50
    np.testing.assert_allclose(h, a[3].T @ a[3] / 50, rtol=1e-12)
    np.testing.assert_allclose(src.mean("l.q.weight"), a[3].mean(0), rtol=1e-12)
    assert src.get("l.v.weight") is None
    assert src.info["tokens"] == 50 and src.info["ctx"] == 16 and src.info["model"] == "toy"


def _raw_h_file(path, tensors, weights, fmt=1):
    meta = {"pvqcodec.hessians": json.dumps({"format": fmt, "weights": weights, "tokens": 1, "ctx": 1, "model": "m"})}
    write_safetensors(path, [(n, dt, a.shape, lambda a=a: a) for n, (dt, a) in tensors.items()], meta)


def test_hessian_file_errors(tmp_path):
    p = tmp_path / "h.safetensors"
    good = {"H:w": ("F64", np.eye(3)), "mu:w": ("F64", np.zeros(3)), "count:w": ("I64", np.array([5]))}
    _raw_h_file(p, good, {"w": "w"}, fmt=2)
    with pytest.raises(HessianFileError, match="format 2"):
        load_hessians(p)
    _raw_h_file(p, {k: v for k, v in good.items() if k != "mu:w"}, {"w": "w"})
    with pytest.raises(HessianFileError, match="mu:w.*missing"):
        load_hessians(p)
    _raw_h_file(p, {**good, "H:w": ("F64", np.ones((3, 2)))}, {"w": "w"})
    with pytest.raises(HessianFileError, match=r"H:w.*F64 \[n, n\]"):
        load_hessians(p)
    _raw_h_file(p, {**good, "count:w": ("I64", np.array([0]))}, {"w": "w"})
    with pytest.raises(HessianFileError, match="not positive"):
        load_hessians(p)
    bad = np.eye(3)
    bad[0, 1] = np.inf
    _raw_h_file(p, {**good, "H:w": ("F64", bad)}, {"w": "w"})
    src = load_hessians(p)  # values are checked when read
    with pytest.raises(HessianFileError, match="H:w.*NaN or Inf"):
        src.get("w")
    asym = np.eye(3)
    asym[0, 1] = 0.5
    _raw_h_file(p, {**good, "H:w": ("F64", asym)}, {"w": "w"})
    with pytest.raises(HessianFileError, match="not symmetric"):
        load_hessians(p).get("w")
    write_safetensors(p, [("x", "F32", (2,), lambda: np.zeros(2, np.float32))])
    with pytest.raises(HessianFileError, match="not a Hessian file"):
        open_importance(p)
