"""torch integration: `QuantizedLinear` (a drop-in for `nn.Linear` that keeps the .pvqc
payloads compressed in memory) and `load_pvqc_into(model, path)`.

Importing this module imports torch; `import pvqcodec` does not.

On a CUDA device the payloads stay compressed in GPU memory and the kernels of
`gpu_decoder/` (compiled on first use, see its docstring) run:

- trellis (k <= 4), batch up to `FUSED_MAX_BATCH` rows: the fused decode + product, with the
  incoherence transform applied to the activations: y = A^T (W' (B x)) (spec 5.3.5: W = A^T W' B);
- lattice, batch up to `LATTICE_FUSED_MAX_BATCH` rows: the fused decode + tensor-core product
  (activations B x rounded to float16 for the products, float32 accumulation), read from the
  payload bytes re-laid out in tiles on the device once per layer (`LATTICE_TILED`). The tiles
  replace the stream payloads on the device (one copy); the other paths, `state_dict()` and
  moves to another device get the streams back from them;
- otherwise (PVQ, ecsq; larger batches): W' is decoded into a buffer shared by all layers and
  torch's matrix product runs on it, between the same two activation transforms;
- ectcq and eclattice (storage codecs, `DENSE_AT_LOAD`): the GPU kernels decode the dense weight
  once (`load_pvqc_into` does it at load time, else the first forward), straight from the stored
  payloads, rans-coded or raw; the module keeps that weight, in its dtype, and the payloads;
- codecs without a GPU kernel: the dense weight is decoded once by the reference decoder
  and kept on the device.

Entropy-coded payloads (the `rans` coding, spec 4.3) are decoded once, on the device, into
the raw coding's fixed-rate layout when a module first meets a CUDA device
(`to_fixed_rate`; `load_pvqc_into` does it at load time): the kernels read fixed-rate
payloads only.

On the CPU every call decodes the dense weight with the reference decoder (slow, exact).
`dense_weight()` gives the decoded weight: bit-identical to `pvqcodec`'s decoder on both
devices (the GPU path runs the bit-exact kernels).
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

import torch
from torch import nn
from torch.nn import functional as F

from ..coding import RawCoding, coding_by_id
from ..codecs import codec_by_id
from ..container.reader import Container
from ..transforms import transform_by_id

__all__ = ["QuantizedLinear", "load_pvqc_into", "gpu_kernels", "FUSED_MAX_BATCH", "LATTICE_FUSED_MAX_BATCH",
           "DENSE_AT_LOAD"]

PVQ_ID, TRELLIS_ID, LATTICE_ID, ECSQ_ID, ECTCQ_ID, ECLATTICE_ID = 1, 2, 3, 5, 6, 7
#: storage codecs: their rows (ectcq's trellis walk) or groups (eclattice's prefix sums) decode at
#: well under the fused kernels' speed, so CUDA modules decode the dense weight once and keep it.
DENSE_AT_LOAD = (ECTCQ_ID, ECLATTICE_ID)
RHT_ID = 1
FUSED_MAX_BATCH = 16  # fused trellis product up to this many rows (chosen by bench/gpu_bench.py)
FUSED_MAX_K = 4
LATTICE_FUSED_MAX_BATCH = 16  # fused lattice product up to this many rows (chosen by bench/gpu_bench.py)
#: fused lattice product from the payload bytes re-laid out in tiles on the device at the first
#: CUDA forward (gpu_decoder.lattice_tile; the file format is unchanged), where the zero padding
#: stays small: 1.02-1.23x faster than the stream layout (bench/RESULTS.md), in the same memory,
#: since the tiles replace the streams on the device (gpu_decoder.lattice_untile gives them back
#: to the decode path for larger batches, state_dict() and device moves). PVQCODEC_LATTICE_TILED=0
#: (or this flag) keeps the stream layout.
LATTICE_TILED = os.environ.get("PVQCODEC_LATTICE_TILED", "1") != "0"

_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def gpu_kernels():
    """The `gpu_decoder` package (its kernels build on first use). It lives beside `pvqcodec/`
    in the source tree."""
    try:
        return importlib.import_module("gpu_decoder")
    except ImportError:
        root = str(Path(__file__).resolve().parents[2])
        if root not in sys.path:
            sys.path.insert(0, root)
        return importlib.import_module("gpu_decoder")


_BUFFERS: dict = {}


def _shared_buffer(numel: int, dtype, device) -> torch.Tensor:
    """One growing scratch buffer per (device, dtype) for decoded W' of the unfused path."""
    key = (str(device), dtype)
    buf = _BUFFERS.get(key)
    if buf is None or buf.numel() < numel:
        buf = torch.empty(numel, dtype=dtype, device=device)
        _BUFFERS[key] = buf
    return buf[:numel]


class QuantizedLinear(nn.Module):
    """y = x W^T + b with W held as the .pvqc payloads of one tensor (matrix view out x in)."""

    def __init__(self, in_features: int, out_features: int, *, codec_id: int, codec_params: dict,
                 transform_id: int, transform_params: dict, payloads: list, streams: list, codings: list,
                 bias=None, dtype=torch.float16, source_dtype: str = "float16"):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.codec_id, self.codec_params = int(codec_id), dict(codec_params)
        self.transform_id, self.transform_params = int(transform_id), dict(transform_params)
        self.streams, self.codings = list(streams), list(codings)
        self.dtype, self.source_dtype = dtype, source_dtype
        self.n_payloads = len(payloads)
        for i, p in enumerate(payloads):
            self.register_buffer(f"payload{i}", torch.from_numpy(np.array(p, dtype=np.uint8, copy=True)), persistent=True)
        if bias is not None:
            self.bias = nn.Parameter(torch.as_tensor(bias).detach().clone().to(dtype), requires_grad=False)
        else:
            self.register_parameter("bias", None)
        self._dense_cache = None  # codecs without a GPU kernel: (device, dtype, tensor)
        self._rows_checked = False  # lattice: row scales checked finite once on the device
        self._tiled = None  # lattice: the stream payloads in the fused kernel's tiles (they replace them)
        self._tile_unfit = False  # lattice: the tiles' padding would exceed LATTICE_TILE_MAX_PAD
        self._finite_checked = False  # spec 7.3 step 3: W checked finite once (check_finite)
        self.name = "weight"  # the tensor's name in the file, for error messages

    # ---- construction ------------------------------------------------------------------------

    @classmethod
    def from_container(cls, container: Container, name: str, bias=None, dtype=None):
        rec = container.tensor(name)
        if len(rec.shape) != 2 or (rec.rows, rec.cols) != tuple(rec.shape):
            raise ValueError(f"{name}: QuantizedLinear needs a 2-D tensor with its default matrix view")
        payloads = [np.asarray(container.payload(rec, i)) for i in range(len(rec.payloads))]
        out_f, in_f = rec.shape
        q = cls(in_f, out_f, codec_id=rec.codec_id, codec_params=rec.codec_params, transform_id=rec.transform_id,
                transform_params=rec.transform_params, payloads=payloads, streams=[p.stream for p in rec.payloads],
                codings=[p.coding for p in rec.payloads], bias=bias,
                dtype=dtype or _TORCH_DTYPES.get(rec.dtype, torch.float16), source_dtype=rec.dtype)
        q.name = rec.name
        return q

    def extra_repr(self) -> str:
        codec = codec_by_id(self.codec_id)
        nbytes = sum(getattr(self, f"payload{i}").numel() for i in range(self.n_payloads))
        if self._tiled is not None:
            nbytes += len(self._lattice_streams()) * self.out_features * -(-self.in_features // 8)
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"codec={codec.name}, bits_per_weight={8 * nbytes / (self.in_features * self.out_features):.3f}")

    # ---- decoding ------------------------------------------------------------------------------

    def _payloads(self):
        """The payloads in stream order (a lattice module's tiled streams as temporaries)."""
        ps = [getattr(self, f"payload{i}") for i in range(self.n_payloads)]
        for i, p in self._untiled().items():
            ps[i] = p
        return ps

    # ---- the lattice tiles: one copy of the payload on the device ---------------------------------

    def _lattice_streams(self) -> list:
        """Positions of the lattice streams (patterns, signs, stage 2, stage 3) among the payloads."""
        pos = 1 if self.codec_params["row_scales"] else 0
        return list(range(pos, pos + int(self.codec_params["stages"]) + 1))

    def _untiled(self) -> dict:
        """Payload position -> stream, from the tiles (empty without them)."""
        if self._tiled is None:
            return {}
        streams = gpu_kernels().lattice_untile(self._tiled, self.out_features, self.in_features,
                                               int(self.codec_params["stages"]))
        return dict(zip(self._lattice_streams(), streams))

    def _untile(self) -> None:
        """Put the stream payloads back from the tiles (before a move, a load, ...)."""
        for i, p in self._untiled().items():
            setattr(self, f"payload{i}", p)
        self._tiled = None
        self._lattice_prep = None

    def _apply(self, fn, *args, **kwargs):
        self._untile()  # the buffers move (or convert) as streams; the next CUDA forward tiles again
        self._tile_unfit = False
        return super()._apply(fn, *args, **kwargs)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for i, p in self._untiled().items():  # the file's streams, not the device layout
            destination[prefix + f"payload{i}"] = p

    def _load_from_state_dict(self, *args, **kwargs):
        self._untile()
        super()._load_from_state_dict(*args, **kwargs)

    def _reference_streams(self):
        from ..decoder import decode_payloads

        payloads = [(c, p.cpu().numpy(), s) for c, p, s in zip(self.codings, self._payloads(), self.streams)]
        return decode_payloads(codec_by_id(self.codec_id), self.codec_params, self.out_features, self.in_features,
                               self.source_dtype, payloads)

    def to_fixed_rate(self) -> None:
        """Decode every entropy-coded payload (spec 4.3) into the raw coding (4.2), in place and
        once: on a CUDA device by the GPU decoder (gpu_decoder.rans_to_raw: every table-mode
        stream up to width 16 and every uniform-mode stream, PVQ shape indices and per-symbol
        bounds included; the reference decoder only for table mode above width 16, more than
        65,536 distinct bounds or chunks of 2^30 words), elsewhere by the reference decoder. A
        stream's bounds come from the codec, as in the reference decoder. The storage codecs
        (DENSE_AT_LOAD) keep their payloads as they are: their GPU decoders read rans payloads."""
        if all(c == 0 for c in self.codings) or self.codec_id in DENSE_AT_LOAD:
            return
        codec = codec_by_id(self.codec_id)
        rows, cols = self.out_features, self.in_features
        earlier = _EarlierStreams(self)
        for i, (c, spec) in enumerate(zip(self.codings, self.streams)):
            if c == 0:
                continue
            bounds = codec.stream_bounds(self.codec_params, rows, cols, self.source_dtype, i, earlier)
            spec = replace(spec, bounds=bounds) if bounds is not None else spec
            p = getattr(self, f"payload{i}")
            if p.device.type == "cuda":
                raw = gpu_kernels().rans_to_raw(p, spec)
            else:
                sym = coding_by_id(c).decode(p.numpy(), spec)
                raw = torch.from_numpy(np.ascontiguousarray(RawCoding.encode(sym, spec)))
            setattr(self, f"payload{i}", raw)
            self.codings[i] = 0

    def reference_transformed(self) -> np.ndarray:
        """W' (float32 numpy) by the reference decoder."""
        codec = codec_by_id(self.codec_id)
        return codec.decode(self.codec_params, self.out_features, self.in_features, self.source_dtype,
                            self._reference_streams())

    def reference_dense(self) -> np.ndarray:
        """W (float32 numpy) by the reference decoder: W' then the inverse transform."""
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is payload_corrupt (7.3), checked by callers
            wp = np.ascontiguousarray(self.reference_transformed(), np.float32)
            return transform_by_id(self.transform_id).inverse(wp, self.transform_params)

    def _gpu_supported(self) -> bool:
        if self.codec_id in DENSE_AT_LOAD:
            return True
        return all(c == 0 for c in self.codings) and self.codec_id in (PVQ_ID, TRELLIS_ID, LATTICE_ID, ECSQ_ID)

    def _storage_streams(self, g) -> list:
        """The streams of an ectcq / eclattice tensor as their GPU decoders take them: the row
        counts decoded on the host (`rows` integers per stream), the 16-bit symbol streams on
        the device (rans payloads by the GPU rans decoder, raw payloads as they lie)."""
        codec = codec_by_id(self.codec_id)
        rows, cols = self.out_features, self.in_features
        host = g.ECTCQ_HOST_STREAMS if self.codec_id == ECTCQ_ID else g.ECLATTICE_HOST_STREAMS
        out = []
        for i, (c, spec, p) in enumerate(zip(self.codings, self.streams, self._payloads())):
            bounds = codec.stream_bounds(self.codec_params, rows, cols, self.source_dtype, i, [])
            spec = replace(spec, bounds=bounds) if bounds is not None else spec
            out.append(g.stream_host_ints(p, c, spec) if i in host else g.stream_symbols16(p, c, spec))
        return out

    def _rht(self) -> bool:
        return self.transform_id == RHT_ID

    def gpu_transformed(self, out_dtype=torch.float32) -> torch.Tensor:
        """W' decoded by the GPU kernels (bit-exact with the reference in float32)."""
        g = gpu_kernels()
        rows, cols = self.out_features, self.in_features
        if self.codec_id == TRELLIS_ID:
            return g.trellis_decode(self._payloads(), self.codec_params, rows, cols, out_dtype=out_dtype)
        if self.codec_id == LATTICE_ID:
            return g.lattice_decode(self._payloads(), self.codec_params, rows, cols, out_dtype=out_dtype)
        if self.codec_id == ECSQ_ID:
            return g.ecsq_decode(self._payloads(), self.codec_params, rows, cols, out_dtype=out_dtype)
        if self.codec_id == ECTCQ_ID:
            return g.ectcq_decode(self._storage_streams(g), self.codec_params, rows, cols, out_dtype=out_dtype)
        if self.codec_id == ECLATTICE_ID:
            return g.eclattice_decode(self._storage_streams(g), self.codec_params, rows, cols, out_dtype=out_dtype)
        wp = g.pvq_decode(self._payloads(), self.codec_params, rows, cols)
        return wp if out_dtype == torch.float32 else wp.to(out_dtype)

    def dense_weight(self, dtype=None) -> torch.Tensor:
        """The decoded weight W (out x in) on this module's device, in `dtype` (default: the
        module's), rounded to nearest even from the spec's float32 values."""
        dtype = dtype or self.dtype
        dev = self.payload0.device
        if dev.type == "cuda":
            self.to_fixed_rate()
        if dev.type == "cuda" and self._gpu_supported():
            w = self._gpu_inverse(self.gpu_transformed(torch.float32))
            if w is not None:
                # spec 7.3 step 3 on the float32 W, then round it (10.3: to nearest even, as
                # dtypes.from_float32; torch's casts round the same way)
                _check_finite_rows(w, self.name)
                self._finite_checked = True
                return w.to(dtype)
        w = self.reference_dense()
        if codec_by_id(self.codec_id).quantizes:
            _check_finite_rows(w, self.name)
        return torch.from_numpy(w).to(device=dev, dtype=dtype)

    def _gpu_inverse(self, wp: torch.Tensor):
        """W (float32) from W' by the bit-exact GPU inverse transform (W' itself for the identity);
        None where a block exceeds the kernel's shared-memory limit."""
        if not self._rht():
            return wp
        tp = self.transform_params
        g = gpu_kernels()
        h = g._block_consts(int(tp["row_block"]))[0], g._block_consts(int(tp["col_block"]))[0]
        if tp["row_block"] <= g.max_block(h[0]) and tp["col_block"] <= g.max_block(h[1]):
            return g.inverse_rht_2d(wp, tp["seed"], tp["row_block"], tp["col_block"], out_dtype=torch.float32)
        return None

    def check_finite(self) -> None:
        """Spec 7.3 step 3 for the CUDA paths that never materialize W (the fused products and
        decode-then-product in the activations' dtype): once per layer, from W' in float32.

        Exact sufficient condition: the inverse RHT (spec 5.3.6) makes each value of W from
        signed sums (Hadamard entries +-1) of at most b_r * b_c values of W', scaled by c_br,
        c_bc <= 1 (c_1 = 1, c_b = 1/sqrt(b) rounded, < 1 for b >= 2) and signs +-1; no step
        multiplies by more than 1. Every operation rounds to nearest: a rounded sum of n terms
        is at most (1 + 2^-24)^n times the sum of their magnitudes, and a product by c <= 1 or
        +-1 never grows a magnitude (rounding is monotone). A value of W sees fewer than
        b_r + b_c + 2 <= 131,074 roundings, a factor below 1.01. So max|W'| <= FLT_MAX /
        (2 b_r b_c) (the factor 2 also covers rounding the bound to float32) gives |W| <
        FLT_MAX: W is finite. The row side mixes rows only within a row block, so a row block
        that fails the bound is inverse-transformed exactly on its own (its local signs
        differ only by whole-row sign flips, which are exact) and checked."""
        dev = self.payload0.device
        if self._finite_checked or dev.type != "cuda" or not codec_by_id(self.codec_id).quantizes:
            return
        if self.codec_id in DENSE_AT_LOAD:  # decoded (and checked) once, kept
            self._cached_dense(self.dtype, dev)
            return
        self.to_fixed_rate()
        if not self._gpu_supported():
            self.dense_weight()  # decodes and checks the dense weight
            return
        wp = self.gpu_transformed(torch.float32)
        rows, cols = wp.shape
        rb = int(self.transform_params["row_block"]) if self._rht() else rows
        bound = _FLT_MAX / (2 * rb * int(self.transform_params["col_block"])) if self._rht() else _FLT_MAX
        lo, hi = torch.aminmax(wp.view(rows // rb, rb * cols), dim=1)
        ok = (hi <= bound) & (-lo <= bound)  # False for a NaN or an infinity
        for blk in torch.nonzero(~ok).reshape(-1).tolist():
            r0 = blk * rb
            w = self._gpu_inverse(wp[r0:r0 + rb].contiguous())
            if w is None:
                w = self.reference_dense()[r0:r0 + rb]
            _check_finite_rows(w, self.name, r0)
        self._finite_checked = True

    # ---- forward ---------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        if x.device.type == "cuda":
            self.to_fixed_rate()
        if x.device.type != "cuda":
            y = F.linear(x2, self.dense_weight(x.dtype).to(x.device), None)
        elif not self._gpu_supported() or self.codec_id in DENSE_AT_LOAD:
            y = F.linear(x2, self._cached_dense(x.dtype, x.device), None)
        else:
            y = self._forward_cuda(x2)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*shape[:-1], self.out_features)

    def _cached_dense(self, dtype, device) -> torch.Tensor:
        """The dense weight in `dtype` on `device`, decoded once and kept (codecs without a GPU
        kernel, and the storage codecs DENSE_AT_LOAD)."""
        c = self._dense_cache
        if c is None or c[0] != device or c[1] != dtype:
            c = (device, dtype, self.dense_weight(dtype).to(device))
            self._dense_cache = c
            self._finite_checked = True  # dense_weight checked W (spec 7.3 step 3)
        return c[2]

    def _forward_cuda(self, x2: torch.Tensor) -> torch.Tensor:
        g = gpu_kernels()
        tp = self.transform_params
        rows, cols, m = self.out_features, self.in_features, x2.shape[0]
        rht = self._rht()
        fused = (self.codec_id == TRELLIS_ID and self.codec_params["k"] <= FUSED_MAX_K and m <= FUSED_MAX_BATCH)
        if self.codec_id == LATTICE_ID and not self._rows_checked:
            self._check_lattice_rows()
        if not self._finite_checked:
            self.check_finite()
        if self.codec_id == LATTICE_ID and m <= LATTICE_FUSED_MAX_BATCH:
            xt = g.rht_side(x2, tp["col_block"], tp["seed"], 1, True, out_dtype=torch.float16) if rht else x2.half()
            tiled = self._lattice_tiled(g)  # first: it empties the stream buffers the arguments would hold
            yt = g.lattice_gemv(None, None, rows, cols, xt, prepared=self._lattice_args(g), tiled=tiled)
        elif fused:
            xt = g.rht_side(x2, tp["col_block"], tp["seed"], 1, True, out_dtype=torch.float32) if rht else x2.float()
            yt = g.trellis_gemv(self._payloads(), self.codec_params, rows, cols, xt)
        else:
            buf = _shared_buffer(rows * cols, x2.dtype, x2.device).view(rows, cols)
            if self.codec_id == TRELLIS_ID:
                wt = g.trellis_decode(self._payloads(), self.codec_params, rows, cols, out=buf)
            elif self.codec_id == LATTICE_ID:
                prep = None if self._tiled is not None else self._lattice_args(g)  # tiled: untiled for this call
                wt = g.lattice_decode(self._payloads(), self.codec_params, rows, cols, out=buf, check=False,
                                      prepared=prep)
            elif self.codec_id == ECSQ_ID:
                # values checked finite once (check_finite): no device sync here
                wt, _ = g.ecsq_decode(self._payloads(), self.codec_params, rows, cols, out=buf, check=False)
            else:
                buf.copy_(g.pvq_decode(self._payloads(), self.codec_params, rows, cols))
                wt = buf
            xt = g.rht_side(x2, tp["col_block"], tp["seed"], 1, True, out_dtype=x2.dtype) if rht else x2
            yt = xt @ wt.t()
        if rht:
            return g.rht_side(yt, tp["row_block"], tp["seed"], 0, False, out_dtype=x2.dtype)
        return yt.to(x2.dtype)

    def _lattice_args(self, g) -> tuple:
        """The lattice kernels' arguments, prepared once per placement of the payloads (with the
        tiles, empty streams: the tiled product reads only the scales and tables from them)."""
        raw = [getattr(self, f"payload{i}") for i in range(self.n_payloads)]
        key = tuple(p.data_ptr() for p in raw) + (str(raw[-1].device), self._tiled is not None)
        c = getattr(self, "_lattice_prep", None)
        if c is None or c[0] != key:
            c = (key, g.lattice_prepare(raw if self._tiled is not None else self._payloads(), self.codec_params))
            self._lattice_prep = c
        return c[1]

    def _lattice_tiled(self, g):
        """The payload bytes in the fused kernel's tile order (None where LATTICE_TILED is off
        or the zero padding would exceed LATTICE_TILE_MAX_PAD). Built once per placement; the
        stream buffers are then emptied, so the device holds one copy."""
        if not LATTICE_TILED or self._tile_unfit:
            return None
        if self._tiled is None:
            rows, cols, k = self.out_features, self.in_features, int(self.codec_params["stages"])
            ng = rows * -(-cols // 8) * (k + 1)
            if g.lattice_tile_bytes(rows, cols, k) > ng * (1 + g.LATTICE_TILE_MAX_PAD):
                self._tile_unfit = True
                return None
            tiled = g.lattice_tile(g.lattice_prepare(self._payloads(), self.codec_params), rows, cols)
            for i in self._lattice_streams():
                p = getattr(self, f"payload{i}")
                setattr(self, f"payload{i}", torch.empty(0, dtype=p.dtype, device=p.device))
            self._tiled = tiled
            self._lattice_prep = None
        return self._tiled

    def _check_lattice_rows(self) -> None:
        """Spec 6.4.3: a non-finite row scale is payload_corrupt (checked once, on the device)."""
        from ..errors import PayloadCorrupt

        if self.codec_params["row_scales"]:
            h = self.payload0.view(torch.int16)
            if bool(((h & 0x7C00) == 0x7C00).any()):
                raise PayloadCorrupt("lattice row scale is not finite")
        self._rows_checked = True


_FLT_MAX = float(np.finfo(np.float32).max)


def _check_finite_rows(w, name: str, row0: int = 0) -> None:
    """Spec 7.3 step 3 (as pvqcodec.decoder.check_finite): every value of a quantized tensor's
    decoded float32 W is finite. `w` holds rows row0.. of W (torch or numpy)."""
    from ..errors import PayloadCorrupt

    bad = ~(torch.isfinite(w) if isinstance(w, torch.Tensor) else torch.from_numpy(np.isfinite(w)))
    if bool(bad.any()):
        cols = w.shape[1]
        i = int(torch.nonzero(bad.reshape(-1))[0]) + row0 * cols
        raise PayloadCorrupt(f"tensor {name!r}: decoded value {i} (row {i // cols}) is not finite")


class _EarlierStreams:
    """The decoded streams of a QuantizedLinear by position, decoded on first use (for codecs
    whose bounds depend on earlier streams); positions before the one being converted are raw."""

    def __init__(self, q: QuantizedLinear):
        self.q = q

    def __getitem__(self, k: int):
        if self.q.codings[k] != 0:
            raise RuntimeError("stream bounds asked for a later stream")
        return RawCoding.decode(getattr(self.q, f"payload{k}").cpu().numpy(), self.q.streams[k])


def _decode_tensor(container: Container, name: str) -> np.ndarray:
    from ..decoder import decode_float32, decode_stored

    rec = container.tensor(name)
    if not rec.codec.quantizes and rec.dtype == "bfloat16":
        return decode_float32(container, rec)
    if not rec.codec.quantizes:
        return decode_stored(container, rec)
    return decode_float32(container, rec)


def load_pvqc_into(model: nn.Module, path, dtype=None, strict: bool = False) -> dict:
    """Load the tensors of a .pvqc file into `model` by name. Every `nn.Linear` whose
    `<name>.weight` is a quantized 2-D tensor becomes a `QuantizedLinear` (its bias from the
    file if there, else the module's own); every other parameter or buffer found in the file
    gets its decoded values. Returns {"quantized": [...], "loaded": [...], "missing": [...]};
    strict=True raises KeyError if a parameter of the model is not in the file."""
    report = {"quantized": [], "loaded": [], "missing": []}
    container = Container.open(path)
    try:
        names = set(container.names)
        done = set()
        for mod_name, mod in list(model.named_modules()):
            if not isinstance(mod, nn.Linear):
                continue
            wname = f"{mod_name}.weight" if mod_name else "weight"
            if wname not in names:
                continue
            rec = container.tensor(wname)
            if not rec.codec.quantizes or len(rec.shape) != 2 or (rec.rows, rec.cols) != tuple(rec.shape):
                continue
            if tuple(rec.shape) != (mod.out_features, mod.in_features):
                raise ValueError(f"{wname}: file shape {rec.shape} != module {(mod.out_features, mod.in_features)}")
            bname = f"{mod_name}.bias" if mod_name else "bias"
            bias = None
            if mod.bias is not None:
                bias = torch.from_numpy(np.array(_decode_tensor(container, bname))) if bname in names else mod.bias.detach()
                done.add(bname)
            dev = mod.weight.device
            q = QuantizedLinear.from_container(container, wname, bias=bias, dtype=dtype or mod.weight.dtype).to(dev)
            if dev.type == "cuda":
                q.to_fixed_rate()  # entropy-coded payloads decoded once, here
                q.check_finite()  # spec 7.3 step 3, once, here (DENSE_AT_LOAD: the dense weight, decoded)
            _set_submodule(model, mod_name, q)
            done.add(wname)
            report["quantized"].append(wname)
        for pname, t in list(model.named_parameters()) + list(model.named_buffers()):
            if pname in done or pname.rsplit(".", 1)[-1].startswith("payload"):
                continue
            if pname not in names:
                report["missing"].append(pname)
                continue
            vals = torch.from_numpy(np.array(_decode_tensor(container, pname)))
            with torch.no_grad():
                t.copy_(vals.reshape(t.shape).to(t.dtype))
            report["loaded"].append(pname)
    finally:
        container.close()
    if strict and report["missing"]:
        raise KeyError(f"not in the file: {', '.join(report['missing'])}")
    return report


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
