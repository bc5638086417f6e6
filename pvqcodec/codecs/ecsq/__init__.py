"""Codec id 5, `ecsq`: entropy-coded uniform scalar quantization with a dead zone and
stored reconstruction offsets (spec codecs/ecsq.md, section 6.6).

One stream, `indices`: the zigzag symbol s of each value of W' in row-major order,
meant for the rans coding's table mode. Decoded value (spec 6.6.4), float32 with each
operation rounded to nearest:

    m = (s + 1) div 2,  negative = s != 0 and s even
    x = +0.0                                   (m = 0)
    x = +-((float32(m) - off(m)) * step)       (off(m) = offsets[min(m, n) - 1], 0 if n = 0)

The encoder (informative, quantizer.py) runs the entropy-constrained Lloyd iteration on
the uniform grid and searches the step so that the coded size meets --bits.
"""

import math

import numpy as np
from construct import Float32l, Int8ul, Int16ul, PrefixedArray, Struct

from ...coding import StreamSpec
from ...errors import InputError, ParamsInvalid
from ...params import parse_exact
from .. import Codec, Encoded, register
from ..coded_rate import target_bits as coded_target_bits
from .quantizer import MAX_MAG, ecsq_quantize, magnitudes

MAX_OFFSETS = 65535
# lambda = LAMBDA_RATIO * step^2; on N(0, 1) at 2 to 4 bits any ratio from 0.08 to 0.25
# gives the same error within 0.005 dB (bench/RESULTS.md).
LAMBDA_RATIO = 0.12
LLOYD_ITERS = 5
RATE_TOL = 0.001  # the search stops at a size within 0.1 percent below the target
MAX_SEARCH = 14
STEP_RMS = 4.14  # step / RMS at R bits is about 4.14 * 2^-R (measured on N(0, 1) at 2 to 4 bits)


@register
class EcsqCodec(Codec):
    id = 5
    name = "ecsq"
    since_minor = 1
    rans_chunk_symbols = 262144  # 2^18: lane states 0.004 bits/weight (0.0156 at 2^16), for storage
    params_struct = Struct(
        "step" / Float32l,
        "flags" / Int8ul,
        "reserved" / Int8ul,
        "offsets" / PrefixedArray(Int16ul, Float32l),
    )

    # ---- format (spec 6.6.1, 6.6.2) -----------------------------------------------------------

    def parse_params(self, raw, rows, cols, dtype):
        p = parse_exact(self.params_struct, raw, "ecsq codec")
        step = np.float32(p["step"])
        if not (np.isfinite(step) and step > 0):
            raise ParamsInvalid(f"ecsq step {float(step)!r} is not a finite value > 0")
        if p["flags"]:
            raise ParamsInvalid(f"ecsq flags 0x{p['flags']:02x}: no flag is defined, must be 0")
        if p["reserved"]:
            raise ParamsInvalid(f"ecsq reserved byte 0x{p['reserved']:02x} must be 0")
        offsets = np.array(p["offsets"], np.float32)
        if not np.all(np.isfinite(offsets)):
            raise ParamsInvalid(f"ecsq offset {int(np.flatnonzero(~np.isfinite(offsets))[0])} is not finite")
        return {"step": step, "offsets": offsets}

    def build_params(self, params):
        offsets = np.asarray(params["offsets"], np.float32)
        if offsets.size > MAX_OFFSETS:
            raise ValueError(f"ecsq: at most {MAX_OFFSETS} offsets")
        return self.params_struct.build(dict(step=float(np.float32(params["step"])), flags=0, reserved=0,
                                             offsets=[float(v) for v in offsets]))

    def streams(self, params, rows, cols, dtype):
        return [StreamSpec("indices", rows * cols, 16)]

    def describe(self, params):
        return {"name": self.name, "step": float(params["step"]), "offset_count": int(params["offsets"].size)}

    # ---- decoder (spec 6.6.3, 6.6.4) ----------------------------------------------------------

    def decode(self, params, rows, cols, dtype, streams):
        x = decode_ecsq_values(streams[0], params["step"], params["offsets"])
        return x.reshape(rows, cols)

    # ---- encoder ----------------------------------------------------------------------------------

    def encode(self, wp, options, weighting=None):
        return encode_ecsq(wp, options, weighting)

    def block_quantizer(self, wp, options, free):
        from .ldlq import EcsqBlockQuantizer  # Hessian-aware rounding (issue 9)

        return EcsqBlockQuantizer(wp, options, free)


# ---- decode arithmetic: the one place in Python -----------------------------------------------


def decode_ecsq_symbols(sym) -> tuple:
    """Spec 6.6.3: (magnitudes int64, negative bool) of 16-bit symbols."""
    s = np.asarray(sym, np.int64)
    return (s + 1) >> 1, (s != 0) & ((s & 1) == 0)


def decode_ecsq_values(sym, step, offsets) -> np.ndarray:
    """Spec 6.6.4, float32, each operation rounded: t = f32(m) - off(m); a = t * step;
    x = -a if negative; x = +0.0 where m = 0."""
    m, neg = decode_ecsq_symbols(sym)
    offsets = np.asarray(offsets, np.float32)
    if offsets.size:
        off = offsets[np.clip(m, 1, offsets.size) - 1]
    else:
        off = np.zeros(m.shape, np.float32)
    t = m.astype(np.float32) - off
    a = t * np.float32(step)
    x = np.where(neg, -a, a)
    x[m == 0] = np.float32(0.0)
    return x.astype(np.float32, copy=False)


# ---- encoder (informative, spec 6.6.5) ---------------------------------------------------------


def target_bits(bits) -> float:
    return coded_target_bits("ecsq", bits)


def offsets_from_centroids(rec: np.ndarray, sym: np.ndarray, step: float) -> np.ndarray:
    """off(m) = m - r_m / step for m = 1 .. the largest magnitude used, float32."""
    mmax = int(magnitudes(sym).max()) if sym.size else 0
    m = np.arange(1, mmax + 1, dtype=np.float64)
    r = rec[1 : mmax + 1] if rec.size > mmax else np.concatenate([rec[1:], m[rec.size - 1:] * step])
    return (m - r / step).astype(np.float32)


def coded_size(symbols: np.ndarray, params: dict, codec: Codec, rows: int, cols: int) -> int:
    """Bytes of the tensor's parameter block and payload as the reference encoder writes them."""
    from ...coding.select import code_stream

    spec = codec.streams(params, rows, cols, "float32")[0]
    return len(codec.build_params(params)) + code_stream(symbols, spec, "auto", codec.rans_chunk_symbols).payload.size


def encode_ecsq(wp, options, weighting=None) -> Encoded:
    """Options: bits (coded bits per weight, tables and chunk states included); for
    experiments lambda_ratio (lambda / step^2) and lloyd_iters."""
    wp = np.asarray(wp, np.float64)
    rows, cols = wp.shape
    bits = target_bits(options["bits"])
    ratio = float(options.get("lambda_ratio", LAMBDA_RATIO))
    iters = int(options.get("lloyd_iters", LLOYD_ITERS))
    x = wp.reshape(-1)
    if weighting is None:
        w = np.ones_like(x)
    else:
        w = np.ascontiguousarray(np.broadcast_to(np.asarray(weighting, np.float64), wp.shape)).reshape(-1)
        if not np.all(np.isfinite(w) & (w >= 0)):
            raise InputError("ecsq: the weighting must be finite and non-negative")
    codec = EcsqCodec()
    rms = math.sqrt(float(np.mean(x * x))) if x.size else 0.0
    if rms == 0.0:
        params = {"step": np.float32(1.0), "offsets": np.zeros(0, np.float32)}
        return Encoded(params, [np.zeros(x.size, np.uint16)], {"step": 1.0, "coded_bits": None})
    target = bits * x.size / 8

    def trial(step):
        step32 = np.float32(step)
        s = float(step32)
        sym, rec, _ = ecsq_quantize(x, w, s, ratio * s * s, iters=iters)
        sym16 = sym.astype(np.uint16)
        params = {"step": step32, "offsets": offsets_from_centroids(rec, sym, s)}
        return coded_size(sym16, params, codec, rows, cols), params, sym16

    # Secant search on log(step) for a size in [(1 - RATE_TOL) target, target], aiming at the
    # middle; the size falls by about n/8 bytes per doubling of the step.
    aim = target * (1 - RATE_TOL / 2)
    default_slope = -x.size / 8 / math.log(2)
    tried = []
    ls = math.log(rms * STEP_RMS * 2.0 ** -bits)
    # a magnitude above MAX_MAG cannot be written: never go below the step that reaches it
    ls_min = math.log(float(np.max(np.abs(x))) / MAX_MAG)
    for _ in range(MAX_SEARCH):
        size, params, sym16 = trial(math.exp(ls))
        tried.append((ls, size, params, sym16))
        if (1 - RATE_TOL) * target <= size <= target:
            break
        slope = default_slope
        if len(tried) > 1:
            (l0, z0, _, _), (l1, z1, _, _) = tried[-2], tried[-1]
            if l1 != l0 and (z1 - z0) / (l1 - l0) < 0:
                slope = (z1 - z0) / (l1 - l0)
        ls = max(ls_min, ls + max(-2.0, min(2.0, (aim - size) / slope)))
    # The largest size within the target. A tensor too small for it (the rans header and
    # lane states alone take 160 bytes) keeps the first step, the one the target rate
    # predicts: a coarser step would only shrink the offsets table, at any cost in error.
    fits = [t for t in tried if t[1] <= target]
    _, size, params, sym16 = max(fits, key=lambda t: (t[1], -t[0])) if fits else tried[0]
    info = {"step": float(params["step"]), "coded_bits": 8 * size / x.size, "lambda_ratio": ratio}
    return Encoded(params, [sym16], info)
