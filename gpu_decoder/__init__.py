"""pvqcodec's CUDA kernels: build on first use, cached, and thin torch wrappers.

The kernels (this folder's .cu files) compile with `torch.utils.cpp_extension.load` the
first time they are needed, into a cache directory keyed by a hash of the sources, the
torch version, the CUDA version and the GPU architecture:
`$PVQCODEC_GPU_CACHE` or `~/.cache/pvqcodec/gpu/<hash>/`. A later process loads the built
module from there without compiling. Building needs the CUDA toolkit (nvcc) of the major
version torch was built with, and ninja.

All kernels are compiled with `-fmad=false`; the bit-exact ones (the inverse RHT of spec
5.3.6, the PVQ decoded value of 6.2.5, the trellis decoded value, the lattice decoded value
of 6.4.6, the ecsq decoded value of 6.6.4, shared by ectcq's 6.7.6, and eclattice's of 6.8.5)
use the correctly rounded intrinsics too. The fused products use explicit FMAs (or float16
tensor-core products, lattice) and are not bit-exact.

The rans payload coding (spec 4.3, `rans.cu`) is decoded with integer arithmetic into the
raw coding's packed layout, identical to the reference decoder; `pvqcodec.torch` runs it once
at load time, and the kernels above read the raw payloads it produces.

Nothing here is imported by `import pvqcodec`; `pvqcodec.torch` uses it on CUDA tensors.
"""

from __future__ import annotations

import hashlib
import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SOURCES = ["bindings.cpp", "rht.cu", "pvq.cu", "trellis_decode.cu", "trellis_gemv.cu", "lattice_decode.cu",
           "lattice_gemv.cu", "rans.cu", "trellis_viterbi.cu", "ecsq.cu", "ectcq.cu", "eclattice.cu"]
HEADERS = ["common.cuh", "trellis.cuh", "lattice.cuh", "ecsq.cuh"]
CUDA_FLAGS = ["-O3", "-fmad=false", "--expt-relaxed-constexpr", "-lineinfo"]
_lock = threading.Lock()
_module = None


def cache_root() -> Path:
    env = os.environ.get("PVQCODEC_GPU_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "pvqcodec" / "gpu"


def _arch(torch) -> str:
    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


def build_key(torch) -> str:
    h = hashlib.sha256()
    for name in SOURCES + HEADERS:
        h.update(name.encode())
        h.update((HERE / name).read_bytes())
    h.update(" ".join(CUDA_FLAGS).encode())
    h.update(f"{torch.__version__}|{torch.version.cuda}|{_arch(torch)}".encode())
    return h.hexdigest()[:16]


def load(verbose: bool = False):
    """The compiled extension (built on first use, then loaded from the cache)."""
    global _module
    if _module is not None:
        return _module
    with _lock:
        if _module is not None:
            return _module
        import torch
        from torch.utils import cpp_extension

        if not torch.cuda.is_available():
            raise RuntimeError("pvqcodec GPU kernels need a CUDA device (torch.cuda.is_available() is False)")
        key = build_key(torch)
        build_dir = cache_root() / key
        build_dir.mkdir(parents=True, exist_ok=True)
        arch = _arch(torch)
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", arch)
        _module = cpp_extension.load(
            name=f"pvqc_gpu_{key}",
            sources=[str(HERE / s) for s in SOURCES],
            extra_cflags=["-O2"],
            extra_cuda_cflags=CUDA_FLAGS + [f"-gencode=arch=compute_{arch.replace('.', '')},code=sm_{arch.replace('.', '')}"],
            build_directory=str(build_dir),
            verbose=verbose,
        )
        return _module


# ---- the RHT of one side (spec 5.3) ---------------------------------------------------------


@lru_cache(maxsize=64)
def _block_consts(b: int):
    from pvqcodec.transforms import hadamard, rht

    h, q = hadamard.factor_block(b) if b > 1 else (1, 1)
    H = hadamard.base_matrix(h).copy() if h > 1 else np.zeros(1, np.int8)
    return h, q, H, float(rht.block_scale(b))


_H_DEVICE = {}


def _h_tensor(h, H, device):
    import torch

    key = (h, str(device))
    t = _H_DEVICE.get(key)
    if t is None:
        t = torch.from_numpy(np.ascontiguousarray(H, np.int8).reshape(-1)).to(device)
        _H_DEVICE[key] = t
    return t


def max_block(h: int) -> int:
    """Largest block the shared-memory kernel takes (227 KB of shared memory per block)."""
    return (227 * 1024) // (4 * (2 if h > 1 else 1))


def seed_bits(seed: int) -> int:
    """The uint64 seed as the int64 with the same bits (what the kernels take)."""
    seed = int(seed) & ((1 << 64) - 1)
    return seed - (1 << 64) if seed >= 1 << 63 else seed


def rht_side(x, block: int, seed: int, side: int, forward: bool, out_dtype=None, out=None):
    """Every row of x (V x N, CUDA) through the side transform of `block` (signs of `side`):
    forward y = c_b H_b (s * x) per block, or the spec's bit-exact inverse (5.3.6)."""
    import torch

    mod = load()
    x = x.contiguous()
    h, q, H, cb = _block_consts(int(block))
    if block > max_block(h):
        raise ValueError(f"RHT block {block} exceeds the GPU kernel's shared-memory limit")
    if out is None:
        out = torch.empty(x.shape, dtype=out_dtype or x.dtype, device=x.device)
    mod.rht_side(x, out, int(block), h, q, _h_tensor(h, H, x.device), seed_bits(seed), int(side), bool(forward), cb)
    return out


def inverse_rht_2d(wp, seed: int, row_block: int, col_block: int, out_dtype=None):
    """W = A^T W' B, bit-exact in float32 (the row side first, then the column side);
    the last pass writes `out_dtype` (rounded to nearest even from the float32 result)."""
    import torch

    t = wp.t().contiguous()
    rht_side(t, row_block, seed, 0, False, out=t)
    x = t.t().contiguous()
    return rht_side(x, col_block, seed, 1, False, out_dtype=out_dtype or torch.float32)


# ---- PVQ (spec 6.2) --------------------------------------------------------------------------

PVQ_LIMBS = (1, 2, 3, 4, 6, 8, 12, 17)
_NTAB = {}


def pvq_count_table(d: int, k: int, device):
    import torch

    from pvqcodec.codecs.pvq import enumeration

    key = (d, k, str(device))
    t = _NTAB.get(key)
    if t is None:
        T = enumeration.count_table(d, k)
        limbs = next(l for l in PVQ_LIMBS if l >= T.shape[2])
        pad = np.zeros((d + 1, k + 1, limbs), np.uint64)
        pad[:, :, : T.shape[2]] = T
        t = torch.from_numpy(pad.view(np.int64)).to(device)
        _NTAB[key] = t
    return t


def pvq_decode(payloads, params: dict, rows: int, cols: int, out=None):
    """W' (float32, rows x cols) from the three raw payloads (uint8 CUDA tensors) in stream
    order (row_scales, gains, shapes). Raises PayloadCorrupt as the reference decoder does."""
    import torch

    from pvqcodec.codecs.pvq import enumeration
    from pvqcodec.errors import PayloadCorrupt

    mod = load()
    scales, gains, shapes = payloads
    d, k, gb = params["group_size"], params["pulses"], params["gain_bits"]
    dev = shapes.device
    gtab = torch.as_tensor(np.asarray(params["gain_table"], np.float32), device=dev)
    if out is None:
        out = torch.empty((rows, cols), dtype=torch.float32, device=dev)
    err = torch.zeros(1, dtype=torch.int32, device=dev)
    mod.pvq_decode(shapes, gains, scales, gtab, pvq_count_table(d, k, dev), d, k, enumeration.index_bits(d, k), gb,
                   rows, cols, out, err)
    e = int(err.item())
    if e & 2:
        raise PayloadCorrupt("pvq row scale is not finite")
    if e & 1:
        raise PayloadCorrupt(f"pvq shape index >= N({d}, {k})")
    return out


# ---- trellis (codec id 2) ----------------------------------------------------------------------

_HYB = {}


def _hyb(device):
    import torch

    from pvqcodec.codecs.trellis import codes

    t = _HYB.get(str(device))
    if t is None:
        t = torch.from_numpy(np.ascontiguousarray(codes.hyb_table(), np.float32)).to(device)
        _HYB[str(device)] = t
    return t


def _as_words(p):
    import torch

    return p.view(torch.int32) if p.dtype == torch.uint8 else p


def trellis_decode(payloads, params: dict, rows: int, cols: int, out_dtype=None, out=None):
    """W' (rows x cols) from the trellis payloads (uint8 CUDA tensors): bit-exact in float32."""
    import torch

    from pvqcodec.errors import PayloadCorrupt

    mod = load()
    words = _as_words(payloads[0])
    rs = payloads[1].view(torch.int16) if params["row_scales"] else torch.empty(0, dtype=torch.int16, device=words.device)
    if out is None:
        out = torch.empty((rows, cols), dtype=out_dtype or torch.float32, device=words.device)
    err = torch.zeros(1, dtype=torch.int32, device=words.device)
    mod.trellis_decode(words, rs, params["code"], params["L"], params["k"], float(params["scale"]), rows, cols,
                       _hyb(words.device), out, err)
    if params["row_scales"] and int(err.item()):
        raise PayloadCorrupt("trellis row scale is not finite")
    return out


def gemv_split(rows: int, cols: int, mt: int, sms: int = 132) -> int:
    """Tile columns per block of the fused product: the x slice fits 32 KB of shared memory,
    and there are at least 4 blocks per multiprocessor where the matrix allows."""
    ti, tj = -(-rows // 16), -(-cols // 16)
    jr = max(1, min(tj, 512 // mt))
    want = 4 * sms
    if ti * -(-tj // jr) < want:
        splits = -(-want // ti)
        jr = max(16, -(-tj // splits))
    return min(jr, tj)


def trellis_gemv(payloads, params: dict, rows: int, cols: int, x, jr: int = None):
    """y' = x' W'^T (float32, m x rows) for x' float32 (m x cols), m <= 16, fused."""
    import torch

    mod = load()
    words = _as_words(payloads[0])
    rs = payloads[1].view(torch.int16) if params["row_scales"] else torch.empty(0, dtype=torch.int16, device=words.device)
    m = x.shape[0]
    mt = 1 if m <= 1 else 2 if m <= 2 else 4 if m <= 4 else 8 if m <= 8 else 16
    y = torch.zeros((m, rows), dtype=torch.float32, device=x.device)
    mod.trellis_gemv(words, rs, params["code"], params["L"], params["k"], float(params["scale"]), rows, cols,
                     _hyb(words.device), x.contiguous(), y, jr or gemv_split(rows, cols, mt))
    return y


def trellis_viterbi(x, w, code: int, L: int, k: int, seam: int, two_pass: bool = True, threads: int = 0):
    """The trellis encoder's Viterbi search (pvqcodec/codecs/trellis/viterbi.py) on every tile:
    x, w float32 CUDA (tiles, 256), each tile's values and weights in sequence order. Returns
    (states int32 (tiles, 256 / V), costs float32 (tiles,)): those of the Numba encoder.
    two_pass: QTIP's tail-biting passes, `seam` steps each side of the seam; else one free pass.
    threads: most threads per block (0: the kernel's default; for tuning)."""
    import torch

    mod = load()
    n, V = x.shape[0], 2 if int(code) == 2 else 1
    states = torch.empty((n, 256 // V), dtype=torch.int32, device=x.device)
    costs = torch.empty(n, dtype=torch.float32, device=x.device)
    mod.trellis_viterbi(x.contiguous(), w.contiguous(), int(code), int(L), int(k), int(seam), bool(two_pass),
                        _hyb(x.device), states, costs, int(threads))
    return states, costs


# ---- lattice (codec id 3, spec codecs/lattice.md) -----------------------------------------------

# Field offsets of the packed tables (gpu_decoder/lattice.cuh).
LATTICE_TPOS = (2, 18, 5, 21, 8, 24, 11, 27)
LATTICE_KPOS = (0, 16, 4, 20, 8, 24, 12, 28)
#: d = a - m of spec 6.4.5, times 512 (U[l] = k_l + d with k_l in E8); lattice.cuh has a copy.
LATTICE_D512 = (0, 24, 44, 60, 72, 80, 84, 428)


@lru_cache(maxsize=1)
def lattice_tables_np() -> np.ndarray:
    """The three packed 256-entry tables T, S, K of lattice.cuh (uint32, 768 values), built
    from the Python codec's pattern table and stage table, with checks that they encode them."""
    from pvqcodec.codecs.lattice import e8p, stages

    base2 = e8p.BASE2.astype(np.int64)  # doubled signed bases, odd in -5..5
    T = np.zeros(256, np.uint64)
    for i, pos in enumerate(LATTICE_TPOS):
        T |= ((base2[:, i] + 7) // 2).astype(np.uint64) << np.uint64(pos)
    b = np.arange(256)
    p = np.array([bin(v).count("1") & 1 for v in b])
    m = b ^ p
    S = (p.astype(np.uint64) << np.uint64(1)) | (p.astype(np.uint64) << np.uint64(17))
    for i, pos in enumerate(LATTICE_TPOS):
        S |= (((m >> i) & 1) * 7).astype(np.uint64) << np.uint64(pos)
    u512 = stages.STAGE_U.astype(np.float64) * 512
    d = np.asarray(LATTICE_D512, np.float64)
    k2 = (u512 - d) / 256  # 2 k_l
    if not (np.all(k2 == np.round(k2)) and k2.min() >= -4 and k2.max() <= 11):
        raise AssertionError("stage table: U - d is not a half-integer vector of the expected range")
    K = np.zeros(256, np.uint64)
    for i, pos in enumerate(LATTICE_KPOS):
        K |= (k2[:, i].astype(np.int64) + 4).astype(np.uint64) << np.uint64(pos)
    out = np.concatenate([T, S, K]).astype(np.uint32)
    # the tables reproduce the codebook and U exactly
    w = np.arange(1 << 16)
    ts = out[w >> 8].astype(np.int64) ^ out[256 + (w & 255)].astype(np.int64)
    pts = np.stack([((ts >> q) & 7) for q in LATTICE_TPOS], 1) - 3.5 + np.where(ts & 2, -0.25, 0.25)[:, None]
    if not np.array_equal(pts.astype(np.float32), e8p.e8p_codebook()):
        raise AssertionError("lattice tables T, S do not reproduce the E8P codebook")
    kk = np.stack([((out[512:].astype(np.int64) >> q) & 15) for q in LATTICE_KPOS], 1)
    if not np.array_equal(((kk - 4) * 0.5 + d / 512).astype(np.float32), stages.STAGE_U):
        raise AssertionError("lattice table K does not reproduce U")
    return out


_LAT = {}


def _lattice_tabs(device):
    import torch

    t = _LAT.get(str(device))
    if t is None:
        t = torch.from_numpy(lattice_tables_np().view(np.int32).copy()).to(device)
        _LAT[str(device)] = t
    return t


_EMPTY = {}


def _empty(dtype, device):
    import torch

    key = (dtype, str(device))
    t = _EMPTY.get(key)
    if t is None:
        t = _EMPTY[key] = torch.empty(0, dtype=dtype, device=device)
    return t


def lattice_prepare(payloads, params: dict) -> tuple:
    """The kernels' arguments for one tensor: (patterns, signs, stage2, stage3, row scales as
    int16, tables, stages, s1, s2, s3); absent streams are empty tensors. Prepare once per layer:
    the fused product is short enough for Python overhead to show."""
    import torch

    pos = 0
    dev = payloads[-1].device
    if params["row_scales"]:
        rs = payloads[0].view(torch.int16)
        pos = 1
    else:
        rs = _empty(torch.int16, dev)
    k = int(params["stages"])
    pat, sgn = payloads[pos], payloads[pos + 1]
    l2 = payloads[pos + 2] if k >= 2 else _empty(torch.uint8, dev)
    l3 = payloads[pos + 3] if k >= 3 else _empty(torch.uint8, dev)
    sc = [float(np.float32(v)) for v in np.asarray(params["scales"], np.float32)] + [0.0] * (3 - k)
    return (pat, sgn, l2, l3, rs, _lattice_tabs(dev), k, sc[0], sc[1], sc[2])


def lattice_decode(payloads, params: dict, rows: int, cols: int, out_dtype=None, out=None, check: bool = True,
                   prepared=None):
    """W' (rows x cols) from the lattice payloads (uint8 CUDA tensors in stream order):
    bit-exact with `LatticeCodec.decode` in float32; float16 / bfloat16 round that value.
    Raises PayloadCorrupt for a non-finite row scale (check=False skips the device sync)."""
    import torch

    from pvqcodec.errors import PayloadCorrupt

    mod = load()
    a = prepared or lattice_prepare(payloads, params)
    dev = a[0].device
    if out is None:
        out = torch.empty((rows, cols), dtype=out_dtype or torch.float32, device=dev)
    err = torch.zeros(1, dtype=torch.int32, device=dev)
    mod.lattice_decode(*a, rows, cols, out, err)
    if check and params["row_scales"] and int(err.item()):
        raise PayloadCorrupt("lattice row scale is not finite")
    return out


#: Field positions of the fused product's E8P tables T', S' (lattice.cuh, rpos).
LATTICE_RPOS = (1, 17, 5, 21, 9, 25, 13, 29)


def _rotl32(v, s: int):
    v = v.astype(np.uint64)
    return ((v << np.uint64(s)) | (v >> np.uint64((32 - s) % 32))) & np.uint64(0xFFFFFFFF)


@lru_cache(maxsize=1)
def lattice_gemv_tables_np() -> np.ndarray:
    """The fused product's tables (uint32, 1536 values): the decode tables T, S, K of
    `lattice_tables_np`, then T', S', K of lattice.cuh (e8p_point_h2_rot): 4-bit fields
    f_i = 2 w_i + (1 - p) at LATTICE_RPOS. Checked here by emulating the kernel's float16
    conversion (mask | exponent, then one float16 addition) over all 65,536 codewords."""
    from pvqcodec.codecs.lattice import e8p

    old = lattice_tables_np()
    w = np.stack([(old[:256].astype(np.int64) >> q) & 7 for q in LATTICE_TPOS], 1)  # (256, 8), 1..6
    b = np.arange(256)
    p = np.array([bin(v).count("1") & 1 for v in b])
    m = b ^ p
    T = np.zeros(256, np.uint64)
    S = np.zeros(256, np.uint64)
    for i, pos in enumerate(LATTICE_RPOS):
        T |= _rotl32(2 * w[:, i], pos)
        S |= _rotl32(14 * ((m >> i) & 1) + (1 - p), pos)
    new = np.concatenate([old, T.astype(np.uint32), S.astype(np.uint32), old[512:]]).astype(np.uint32)
    if not np.array_equal(lattice_gemv_points_np(new), e8p.e8p_codebook()):
        raise AssertionError("lattice gemv tables T', S' do not reproduce the E8P codebook")
    return new


def lattice_gemv_points_np(tabs: np.ndarray) -> np.ndarray:
    """The 65,536 E8P points (float32, codeword order) as e8p_point_h2_rot computes them from
    the tables T', S' in `tabs` (lattice_gemv_tables_np layout), float16 arithmetic emulated."""
    cw = np.arange(1 << 16)
    ts = tabs[768 + (cw >> 8)].astype(np.uint64) ^ tabs[1024 + (cw & 255)].astype(np.uint64)
    tb = _rotl32(ts, 24)  # rotate right by 8
    out = np.empty((cw.size, 8), np.float32)
    for k, (word, mask, expo, c) in enumerate(((ts, 0x1E, 0x5C00, -259.75), (ts, 0x1E0, 0x4C00, -19.75),
                                                (tb, 0x1E, 0x5C00, -259.75), (tb, 0x1E0, 0x4C00, -19.75))):
        for hi in (0, 1):
            half = ((word >> np.uint64(16 * hi)) & np.uint64(0xFFFF)).astype(np.uint16)
            h = ((half & np.uint16(mask)) | np.uint16(expo)).view(np.float16)
            out[:, 2 * k + hi] = (h + np.float16(c)).astype(np.float32)  # one float16 addition, as HADD2
    return out


_LAT_GEMV = {}


def _lattice_gemv_tabs(device):
    import torch

    t = _LAT_GEMV.get(str(device))
    if t is None:
        t = torch.from_numpy(lattice_gemv_tables_np().view(np.int32).copy()).to(device)
        _LAT_GEMV[str(device)] = t
    return t


def lattice_gemv(payloads, params: dict, rows: int, cols: int, x, kb: int = 0, prepared=None, tiled=None,
                 variant: int = 0):
    """y' = x' W'^T (float32, m x rows) for x' (m x cols, m <= 16; used as float16), fused:
    tensor-core products on float16 fragments decoded in registers. kb: chunks of 512 columns
    per block (0: chosen by the extension). tiled: the payload bytes in the kernel's order
    (`lattice_tile`), read instead of the streams. variant: a tuning variant of the tiled kernel
    (bench/gpu_bench.py --variant-sweep; 0 is the kernel QuantizedLinear uses)."""
    a = prepared or lattice_prepare(payloads, params)
    tabs = _lattice_gemv_tabs(a[5].device)
    if tiled is not None:
        return load().lattice_gemv_tiled(tiled, a[4], tabs, a[6], a[7], a[8], a[9], rows, cols, x,
                                         int(kb or 0) | (int(variant) << 16))
    return load().lattice_gemv(a[0], a[1], a[2], a[3], a[4], tabs, a[6], a[7], a[8], a[9], rows, cols, x, int(kb or 0))


#: QuantizedLinear uses the tiled layout where its zero padding adds at most this fraction.
LATTICE_TILE_MAX_PAD = 0.125


def lattice_tile_bytes(rows: int, cols: int, stages: int) -> int:
    """Size of the tiled layout: 16-row x 512-column tiles, every stream, zero-padded."""
    gr = -(-cols // 8)
    return -(-rows // 16) * -(-gr // 64) * (stages + 1) * 1024


def lattice_tile(prepared, rows: int, cols: int):
    """The payload bytes of a prepared lattice tensor re-laid out (on its device, once per layer;
    the file format is unchanged) in the order the fused kernel reads them: for each 16-row tile
    and 512-column chunk, every stream's bytes of that block in one contiguous run, each lane's
    16 bytes together (lattice_gemv.cu, load_words_tiled). Rows and groups are zero-padded to
    whole tiles."""
    import torch

    pat, sgn, l2, l3 = prepared[:4]
    k = int(prepared[6])
    gr = -(-cols // 8)
    nch, r16 = -(-gr // 64), -(-rows // 16)
    streams = [pat, sgn, l2, l3][: k + 1]
    buf = torch.zeros((k + 1, r16 * 16, nch * 64), dtype=torch.uint8, device=pat.device)
    for i, s in enumerate(streams):
        buf[i, :rows, :gr] = s.reshape(rows, gr)
    # (stream, tile, half, g, chunk, t, j) -> (tile, chunk, stream, half, g, t, j); lane = 4 g + t
    t = buf.view(k + 1, r16, 2, 8, nch, 4, 16).permute(1, 4, 0, 2, 3, 5, 6).contiguous().view(-1)
    assert t.numel() == lattice_tile_bytes(rows, cols, k)
    return t


def lattice_untile(tiled, rows: int, cols: int, stages: int) -> list:
    """The stream payloads (patterns, signs, stage 2, stage 3: `stages` + 1 uint8 tensors of
    rows * ceil(cols / 8) bytes, on tiled's device) back from `lattice_tile`'s layout."""
    k = int(stages)
    gr = -(-cols // 8)
    nch, r16 = -(-gr // 64), -(-rows // 16)
    if tiled.numel() != lattice_tile_bytes(rows, cols, k):
        raise ValueError("lattice_untile: tiled payload length")
    # inverse of lattice_tile's permutation: (tile, chunk, stream, half, g, t, j) -> (stream, tile, half, g, chunk, t, j)
    buf = tiled.view(r16, nch, k + 1, 2, 8, 4, 16).permute(2, 0, 3, 4, 1, 5, 6).reshape(k + 1, r16 * 16, nch * 64)
    return [buf[i, :rows, :gr].contiguous().view(-1) for i in range(k + 1)]


# ---- ECSQ (codec id 5, spec 6.6) -----------------------------------------------------------------

_ECSQ_OFFSETS = {}


def _ecsq_offsets(offsets, device):
    """The offsets table (float32) on the device, kept per distinct table and device."""
    import torch

    a = np.ascontiguousarray(np.asarray(offsets, np.float32))
    key = (a.tobytes(), str(device))
    t = _ECSQ_OFFSETS.get(key)
    if t is None:
        if len(_ECSQ_OFFSETS) > 256:
            _ECSQ_OFFSETS.clear()
        t = torch.from_numpy(a.copy()).to(device)
        _ECSQ_OFFSETS[key] = t
    return t


def ecsq_symbols(p, count: int):
    """The `indices` stream as int16 (uint16 bits) from its raw payload (uint8: width 16 is the
    little-endian uint16 array of spec 4.2) or from rans_decode's symbols (int16, as is)."""
    import torch

    if p.dtype == torch.int16:
        return p[:count]
    p = p[: 2 * count]
    if p.storage_offset() % 2 or p.data_ptr() % 2:
        p = p.clone()
    return p.view(torch.int16)


def ecsq_decode(payloads, params: dict, rows: int, cols: int, out_dtype=None, out=None, check: bool = True):
    """W' (rows x cols) from the `indices` stream (its raw payload, uint8, or the rans decoder's
    int16 symbols), bit-exact in float32 (6.6.4) and rounded to nearest even to float16 /
    bfloat16. Raises PayloadCorrupt for a value that is not finite (7.3); check=False returns
    (out, err) instead, without a device sync."""
    import torch

    from pvqcodec.errors import PayloadCorrupt

    n = rows * cols
    sym = ecsq_symbols(payloads[0], n)
    if sym.numel() != n:
        raise ValueError(f"ecsq: {sym.numel()} symbols for a {rows} x {cols} tensor")
    dev = sym.device
    if out is None:
        out = torch.empty((rows, cols), dtype=out_dtype or torch.float32, device=dev)
    err = torch.zeros(1, dtype=torch.int32, device=dev)
    load().ecsq_decode(sym, _ecsq_offsets(params["offsets"], dev), float(np.float32(params["step"])), out, err)
    if not check:
        return out, err
    if int(err.item()):
        raise PayloadCorrupt("ecsq decoded value is not finite")
    return out


# ---- ectcq and eclattice (codec ids 6 and 7, spec 6.7 and 6.8) ----------------------------------

#: Streams of these codecs decoded on the host (row counts: `rows` integers each, whose checks the
#: spec makes before any value); the others are 16-bit symbol streams decoded on the device.
ECTCQ_HOST_STREAMS = (0,)
ECLATTICE_HOST_STREAMS = (0, 1)


def stream_symbols16(payload, coding: int, spec):
    """A 16-bit stream's symbols as int16 (uint16 bits) on the payload's device: a raw payload
    as it lies (4.2: the little-endian uint16 array), a rans payload decoded by the GPU rans
    decoder (the reference decoder where the GPU one does not take the stream)."""
    if spec.width != 16:
        raise ValueError(f"stream {spec.name!r}: width {spec.width}, not 16")
    if spec.count == 0:  # nothing to decode on the device; the reference still checks the payload
        stream_host_ints(payload, coding, spec)
    return _symbols(payload if coding == 0 or spec.count == 0 else rans_to_raw(payload, spec), spec.count, spec.name)


def stream_host_ints(payload, coding: int, spec) -> np.ndarray:
    """A small stream (row counts) decoded on the host by the reference coding, as int64
    (the spec's bounds in `spec` are checked by the coding where it uses them)."""
    from pvqcodec.coding import coding_by_id

    buf = payload.cpu().numpy() if hasattr(payload, "cpu") else np.asarray(payload, np.uint8)
    return np.asarray(coding_by_id(coding).decode(np.ascontiguousarray(buf, np.uint8), spec)).astype(np.int64)


def _host_counts(v, rows: int) -> np.ndarray:
    a = v.cpu().numpy() if hasattr(v, "cpu") else np.asarray(v)
    a = np.asarray(a).astype(np.int64).reshape(-1)
    if a.size != rows:
        raise ValueError(f"{a.size} row counts for {rows} rows")
    return a


def _symbols(p, count: int, name: str):
    """int16 symbols from a raw 16-bit payload (uint8) or from int16 symbols (ecsq_symbols)."""
    if count == 0:
        import torch

        return _empty(torch.int16, p.device)
    s = ecsq_symbols(p, count)
    if s.numel() != count:
        raise ValueError(f"stream {name!r}: {s.numel()} symbols, expected {count}")
    return s


def _raise_err(e: int, messages) -> None:
    from pvqcodec.errors import PayloadCorrupt

    for bit, msg in messages:
        if e & bit:
            raise PayloadCorrupt(msg)


#: ectcq.cu's L1 prefetch distance in symbols (0: off); bench/gpu_ec.py --ectcq-prefetch sweeps it.
ECTCQ_PREFETCH = 32

ECTCQ_ERRORS = ((2, "ectcq: a row takes more symbols of a union than its row_a0 count gives"),
                (1, "ectcq decoded value is not finite"))


def ectcq_decode(streams, params: dict, rows: int, cols: int, out_dtype=None, out=None, check: bool = True,
                 kernels=None, prefetch: int = None):
    """W' (rows x cols) of an ectcq tensor (spec 6.7), bit-exact in float32 (6.7.6, 6.6.4) and
    rounded to nearest even to float16 / bfloat16. streams = [row_a0, a0, a1]: row_a0 the
    decoded row counts (host or device integers; checked on the host first, 6.7.3, and their
    prefix sums taken there: `rows` integers), a0 and a1 CUDA tensors, each a raw payload
    (uint8) or the rans decoder's int16 symbols. One thread walks each row (ectcq.cu says why).
    Raises PayloadCorrupt as the reference decoder does; check=False returns (out, err) without
    a device sync (the host checks of the row counts still raise). kernels: the extension (default)
    or a stand-in with its functions (the tests' CPU emulation of the kernels). prefetch: the
    kernel's L1 prefetch distance (default ECTCQ_PREFETCH; any value gives the same output)."""
    import torch

    from pvqcodec.codecs.ectcq import decode_ectcq_row_a0
    from pvqcodec.codecs.ectcq.trellis import UNGERBOECK_1D

    a0_count = int(params["a0_count"])
    if not 0 <= a0_count <= rows * cols or cols >= 1 << 30:
        raise ValueError(f"ectcq: a0_count {a0_count} or cols {cols} out of the GPU decoder's range")
    n0 = decode_ectcq_row_a0(_host_counts(streams[0], rows), a0_count, cols)
    a0 = _symbols(streams[1], a0_count, "a0")
    a1 = _symbols(streams[2], rows * cols - a0_count, "a1")
    dev = a0.device
    start0 = np.zeros(rows, np.int64)
    np.cumsum(n0[:-1], out=start0[1:])
    n0_t = torch.from_numpy(n0).to(dev)
    start0_t = torch.from_numpy(start0).to(dev)
    if out is None:
        out = torch.empty((rows, cols), dtype=out_dtype or torch.float32, device=dev)
    err = torch.zeros(1, dtype=torch.int32, device=dev)
    h0, h1 = UNGERBOECK_1D[int(params["state_bits"])]
    (kernels or load()).ectcq_decode(n0_t, start0_t, a0, a1, a0_count, rows, cols, h0, h1,
                        _ecsq_offsets(params["offsets"], dev), float(np.float32(params["step"])),
                        ECTCQ_PREFETCH if prefetch is None else int(prefetch), out, err)
    if not check:
        return out, err
    _raise_err(int(err.item()), ECTCQ_ERRORS)
    return out


ECLATTICE_ERRORS = ((4, "eclattice: a row's number of groups with an even c_0 is not its row_int"),
                    (8, "eclattice: a row's number of integer groups of residue 0 is not its row_int_res0"),
                    (2, "eclattice: a group's symbols lie past the end of their stream"),
                    (1, "eclattice decoded value is not finite"))


def eclattice_decode(streams, params: dict, rows: int, cols: int, out_dtype=None, out=None, check: bool = True,
                     kernels=None):
    """W' (rows x cols) of an eclattice tensor (spec 6.8), bit-exact in float32 (6.8.5) and
    rounded to nearest even to float16 / bfloat16. streams: the codec's eight in payload order,
    row_int and row_int_res0 as decoded row counts (host or device integers; check 1 of 6.8.3
    runs on the host), the six coordinate streams as CUDA tensors (raw uint8 payloads or int16
    symbols). Three passes over all groups with prefix sums between them (eclattice.cu says why);
    checks 2 and 3 compare per-row sums on the device. Raises PayloadCorrupt as the reference
    decoder does; check=False returns (out, err) without a device sync. kernels: as ectcq_decode."""
    import torch

    from pvqcodec.codecs.eclattice import check_eclattice_row_counts, groups_per_row

    gr = groups_per_row(cols)
    G = rows * gr
    n_i, n_0 = int(params["int_groups"]), int(params["int_res0_groups"])
    if not (0 <= n_0 <= n_i <= G < 1 << 31) or cols >= 1 << 30:
        raise ValueError(f"eclattice: group counts {G}, {n_i}, {n_0} or cols {cols} out of the GPU decoder's range")
    row_int, row_res0 = _host_counts(streams[0], rows), _host_counts(streams[1], rows)
    check_eclattice_row_counts(params, rows, cols, row_int, row_res0)  # 6.8.3 check 1
    counts = (G, 6 * n_i, 6 * (G - n_i), n_0, n_i - n_0, G - n_i)
    names = ("first", "mid_int", "mid_half", "last_res0", "last_res2", "last_half")
    syms = [_symbols(p, n, name) for p, n, name in zip(streams[2:], counts, names)]
    dev = syms[0].device
    mod = kernels or load()
    if out is None:
        out = torch.empty((rows, cols), dtype=out_dtype or torch.float32, device=dev)
    err = torch.zeros(1, dtype=torch.int32, device=dev)
    is_int = torch.empty(G, dtype=torch.uint8, device=dev)
    mod.eclattice_cosets(syms[0], G, is_int)
    int_before = torch.cumsum(is_int, 0, dtype=torch.int32).sub_(is_int)
    # check 2: each row's groups with an even c_0
    bad = is_int.view(rows, gr).sum(1) != torch.from_numpy(row_int).to(dev)
    err.bitwise_or_(bad.any().to(torch.int32) * 4)
    is_res0 = torch.empty(G, dtype=torch.uint8, device=dev)
    mod.eclattice_residues(syms, G, n_i, n_0, int_before, is_res0, err)
    res0_before = torch.cumsum(is_res0, 0, dtype=torch.int32).sub_(is_res0)
    # check 3: each row's integer groups of residue 0
    bad = is_res0.view(rows, gr).sum(1) != torch.from_numpy(row_res0).to(dev)
    err.bitwise_or_(bad.any().to(torch.int32) * 8)
    mod.eclattice_decode(syms, rows, cols, n_i, n_0, int_before, res0_before, float(np.float32(params["half_scale"])),
                         out, err)
    if not check:
        return out, err
    _raise_err(int(err.item()), ECLATTICE_ERRORS)
    return out


# ---- the rans payload coding (spec 4.3, coding-rans.md) ---------------------------------------

#: Table mode and single-bound uniform mode up to this width run the fast kernels (symbols as
#: uint8 / uint16); uniform mode wider than this (PVQ shape indices) or with per-symbol bounds
#: runs the descriptor kernel (packed output only). Table mode wider than this, a per-symbol
#: index over more than 65,536 bounds and chunks of 2^30 words or more go to the reference decoder.
RANS_GPU_MAX_WIDTH = 16
#: Table mode with P <= 12 and A <= 256: True runs the variant that fetches the next step's table
#: entry by shuffle (rans.cu, TABLE_SPEC). Off: measured 11-15 % slower on the H100 (bench/RESULTS.md).
RANS_SPECULATIVE = False
RANS_ERRORS = ((1, "a lane's initial state is below 2^16"), (2, "a refill runs past the end of a chunk's words"),
               (4, "a lane is not back at state 2^16 after a chunk's last symbol"),
               (8, "words are left over after a chunk's last symbol"), (16, "a symbol is at or above its bound"))


class RansPlan:
    """What the GPU decoder needs of one rans payload, from its host-side header (spec 4.3.1,
    checked by the reference parser): the decode table on the device (table mode), the bound
    (uniform mode, one bound up to 2^16 at width <= 16) or the bound descriptors and per-symbol
    index (`wide`: any other uniform stream). `gpu` is False, with `reason`, where the stream
    needs the reference decoder (table mode above width 16, more than 65,536 distinct per-symbol
    bounds, a chunk of 2^30 words or more)."""

    def __init__(self, header, spec, device):
        import torch

        from pvqcodec.coding import rans

        self.header, self.spec = header, spec
        h = header
        self.table, self.tsym = _empty(torch.int32, device), _empty(torch.int16, device)
        self.bound = 0
        self.reason = ""
        per_symbol = spec.bounds is not None and spec.bounds.index is not None
        self.wide = h.mode == rans.MODE_UNIFORM and (spec.width > RANS_GPU_MAX_WIDTH or per_symbol)
        words = np.diff(np.concatenate([[0], h.chunk_end.astype(np.int64)])) if h.chunk_count else np.zeros(0)
        if h.mode == rans.MODE_TABLE and spec.width > RANS_GPU_MAX_WIDTH:
            self.reason = f"table mode at width {spec.width} above {RANS_GPU_MAX_WIDTH}"
        elif per_symbol and h.mode == rans.MODE_UNIFORM and len(spec.bounds.values) > 1 << 16:
            self.reason = f"{len(spec.bounds.values)} distinct per-symbol bounds (above 65,536)"
        elif words.size and int(words.max()) >= 1 << 30:
            self.reason = "a chunk of 2^30 words or more"
        self.gpu = not self.reason
        if not self.gpu:
            return
        if self.wide:
            desc, index = rans_uniform_descriptors(spec)
            self.table = torch.from_numpy(desc.view(np.int32)).to(device)
            if index is not None:
                self.tsym = torch.from_numpy(index.view(np.int16)).to(device)
        elif h.mode == rans.MODE_TABLE:
            e, sym = rans_table_entries(h.freq, h.precision)
            self.table = torch.from_numpy(e.view(np.int32)).to(device)
            if sym is not None:
                self.tsym = torch.from_numpy(sym.view(np.int16)).to(device)
        else:
            self.bound = int(spec.bounds.values[0]) if spec.bounds is not None else 1 << spec.width
        w = spec.width
        # Chunks start on whole 32-bit words of the packed layout: plain stores, else atomicOr.
        self.aligned = h.chunk_count <= 1 or (h.chunk_symbols * w) % 32 == 0

    def packed_words(self) -> int:
        """32-bit words the kernel may write: whole steps of 32 symbols."""
        return -(-self.spec.count // 32) * self.spec.width


def rans_table_entries(freq: np.ndarray, precision: int):
    """The slot table of table mode (4.3.2) as the kernel reads it (rans.cu): one uint32 per
    slot, symbol | (f - 1) << 8 | (slot - c) << 20 where P <= 12 and A <= 256 (second value
    None), else (f - 1) | (slot - c) << 16 with the symbols in a uint16 table."""
    freq = np.asarray(freq, np.int64)
    sym = np.repeat(np.arange(freq.size, dtype=np.int64), freq)
    cum = np.concatenate([[0], np.cumsum(freq)[:-1]])
    f1 = freq[sym] - 1
    bias = np.arange(1 << precision, dtype=np.int64) - cum[sym]
    if precision <= 12 and freq.size <= 256:
        return (sym | (f1 << 8) | (bias << 20)).astype(np.uint32), None
    return (f1 | (bias << 16)).astype(np.uint32), sym.astype(np.uint16)


def rans_uniform_descriptors(spec):
    """Uniform mode's bound descriptors (4.3.3) as the descriptor kernel reads them (rans.cu,
    DESC): per distinct bound N, uint32 nops, k0 (raw(k0), or -1 for even(n_top)), s, q, r,
    r (q + 1), floor(2^32 / q) + 1, floor(2^32 / (q + 1)) + 1, n_top - 1, then N - 1 as
    ceil(width / 32) limbs; and the per-symbol index as uint16 (None for a single bound).
    ValueError for bounds outside 1 .. 2^width or an index that does not fit them."""
    from pvqcodec.coding import rans

    plan = rans.uniform_plan(spec)  # checks the bounds and the index
    nl = max(1, -(-spec.width // 32))
    values = (1 << spec.width,) if spec.bounds is None else spec.bounds.values
    rows = []
    for N, nops, s, ntop, topk in zip(values, plan.nops, plan.low, plan.ntop, plan.topk):
        nops, s, ntop, topk = int(nops), int(s), int(ntop), int(topk)
        q = r = thr = mq = mq1 = 0
        if nops and topk < 0:
            q, r = divmod(65536, ntop)
            thr, mq, mq1 = r * (q + 1), (1 << 32) // q + 1, (1 << 32) // (q + 1) + 1
        limbs = [((N - 1) >> (32 * k)) & 0xFFFFFFFF for k in range(nl)]
        rows.append([nops, topk & 0xFFFFFFFF, s, q, r, thr, mq, mq1, max(ntop - 1, 0)] + limbs)
    desc = np.ascontiguousarray(np.array(rows, np.uint64).astype(np.uint32).reshape(-1))
    index = None
    if spec.bounds is not None and spec.bounds.index is not None:
        index = np.ascontiguousarray(plan.index, np.uint16)
    return desc, index


def rans_header_host(payload) -> np.ndarray:
    """A host array as long as the payload that holds its header and chunk offset table (4.3.1)
    and zeros after them: enough for the reference header parser, which reads nothing beyond
    (a CUDA payload is copied only that far)."""
    from pvqcodec.coding import rans

    if not hasattr(payload, "is_cuda"):
        return np.asarray(payload, np.uint8)
    n = payload.numel()
    head = payload[: min(n, rans.HEADER_SIZE)].cpu().numpy()
    if head.size < rans.HEADER_SIZE:
        return head
    A, C = int(head[12:16].view("<u4")[0]), int(head[8:12].view("<u4")[0])
    m = min(n, rans.align8(rans.HEADER_SIZE + 2 * A) + 8 * C)
    buf = np.zeros(n, np.uint8)
    buf[:m] = payload[:m].cpu().numpy()
    return buf


def rans_plan(payload, spec, device=None) -> RansPlan:
    """Parse and check the header of a rans payload (host numpy bytes or a CUDA tensor) for
    the stream `spec` (with its bounds); PayloadCorrupt on any header rejection of 4.3.1."""
    from pvqcodec.coding import rans

    header = rans.parse_rans_header(rans_header_host(payload), spec)
    return RansPlan(header, spec, device if device is not None else payload.device)


def rans_decode(payload, spec, plan: RansPlan = None, *, packed=True, symbols=False, out_packed=None,
                out_symbols=None, fused_pack: bool = True, check: bool = True, speculative: bool = None):
    """Decode a rans payload (uint8 CUDA tensor, 16-byte aligned) on the GPU. Returns
    (packed, symbols): the raw coding's layout of the stream (4.2: `packed_size(count, width)`
    bytes, a view of a slightly longer buffer) and the symbols as uint8 (width <= 8) or int16
    holding uint16 bits; each None where not asked for (for widths 8 and 16 they share memory).
    out_packed / out_symbols: buffers to decode into (at least `4 * plan.packed_words()` bytes /
    `count` elements). fused_pack=False writes the symbols first and packs them in a second
    kernel. Raises PayloadCorrupt on any rejection of section 4.3; check=False leaves that to
    `rans_check(err)` (no device sync), returning (packed, symbols, err). speculative: the table
    mode kernel variant (default RANS_SPECULATIVE)."""
    import torch

    from pvqcodec import bits

    mod = load()
    plan = plan or rans_plan(payload, spec)
    if not plan.gpu:
        raise ValueError(f"stream {spec.name!r}: the GPU rans decoder does not take {plan.reason}")
    h, w, n = plan.header, spec.width, spec.count
    dev = payload.device
    if plan.wide:
        return _rans_decode_wide(mod, payload, spec, plan, packed, symbols, out_packed, check)
    nbytes = bits.packed_size(n, w)
    native = w in (8, 16)
    sym_dtype = torch.uint8 if w <= 8 else torch.int16
    want_sym = symbols or (packed and native) or (packed and not fused_pack)
    sym_t = None
    if want_sym:
        sym_t = out_symbols if out_symbols is not None else torch.empty(n, dtype=sym_dtype, device=dev)
    pk = None
    if packed and not native and w:
        pk = out_packed if out_packed is not None else torch.empty(-(-4 * plan.packed_words() // 16) * 16,
                                                                   dtype=torch.uint8, device=dev)
        if not plan.aligned and fused_pack:
            pk.zero_()
    err = torch.zeros(1, dtype=torch.int32, device=dev)
    T = h.data_offset - 8 * h.chunk_count
    kern_pk = pk if (pk is not None and fused_pack) else _empty(torch.uint8, dev)
    mod.rans_decode(payload, T, h.data_offset, n, h.chunk_symbols, h.chunk_count, h.mode, h.precision, plan.table,
                    plan.tsym, plan.bound, w, kern_pk, sym_t if sym_t is not None else _empty(sym_dtype, dev),
                    bool(plan.aligned), RANS_SPECULATIVE if speculative is None else bool(speculative), err)
    if pk is not None and not fused_pack:
        mod.rans_pack(sym_t, n, w, pk)
    if not packed:
        out_p = None
    elif native:
        out_p = sym_t.view(torch.uint8)[:nbytes]
    elif w == 0:
        out_p = _empty(torch.uint8, dev)
    else:
        out_p = pk[:nbytes]
    out_s = sym_t if symbols else None
    if not check:
        return out_p, out_s, err
    rans_check(err, spec)
    return out_p, out_s


def _rans_decode_wide(mod, payload, spec, plan, packed, symbols, out_packed, check):
    """rans_decode for the descriptor kernel (RansPlan.wide): packed output only, or-ed into a
    zeroed buffer."""
    import torch

    from pvqcodec import bits

    if symbols:
        raise ValueError(f"stream {spec.name!r}: no symbol array for width {spec.width} or per-symbol bounds")
    h, dev = plan.header, payload.device
    pk = out_packed if out_packed is not None else torch.empty(-(-4 * plan.packed_words() // 16) * 16,
                                                               dtype=torch.uint8, device=dev)
    pk.zero_()
    err = torch.zeros(1, dtype=torch.int32, device=dev)
    T = h.data_offset - 8 * h.chunk_count
    mod.rans_decode(payload, T, h.data_offset, spec.count, h.chunk_symbols, h.chunk_count, h.mode, h.precision,
                    plan.table, plan.tsym, 0, spec.width, pk, _empty(torch.uint8, dev), False, False, err)
    out_p = pk[: bits.packed_size(spec.count, spec.width)] if packed else None
    if not check:
        return out_p, None, err
    rans_check(err, spec)
    return out_p, None


def rans_check(err, spec) -> None:
    """Raise PayloadCorrupt for the error bits the decoder left in `err` (syncs the device)."""
    from pvqcodec.errors import PayloadCorrupt

    e = int(err.item())
    if e:
        what = "; ".join(m for b, m in RANS_ERRORS if e & b)
        raise PayloadCorrupt(f"rans payload of stream {spec.name!r}: {what}")


def rans_to_raw(payload, spec, host=None):
    """The raw payload (4.2) of a rans-coded stream on the payload's device: decoded on the GPU
    where the stream allows (RansPlan.gpu), else by the reference decoder from the host bytes
    (`host`, or a copy of the payload). Used once at load time; the fused kernels read raw payloads."""
    import torch

    from pvqcodec.coding import RawCoding, rans

    plan = rans_plan(payload if host is None else host, spec, payload.device)
    if plan.gpu and payload.is_cuda:
        if payload.data_ptr() % 16:
            payload = payload.clone()
        return rans_decode(payload, spec, plan)[0]
    buf = np.asarray(host if host is not None else payload.cpu().numpy(), np.uint8)
    raw = RawCoding.encode(rans.RansCoding.decode(buf, spec), spec)
    return torch.from_numpy(np.ascontiguousarray(raw)).to(payload.device)
