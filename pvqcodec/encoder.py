"""The reference encoder's pipeline (DESIGN: weight files -> policy -> matrix view ->
transform -> codec -> streams -> payload coding -> container)."""

import re
import time
import zlib
from dataclasses import dataclass, field, replace

import numpy as np

from . import dtypes
from .codecs import codec_by_name
from .coding.select import ENTROPY_CHOICES, code_stream
from .decoder import decode_payloads
from .container.writer import TensorToWrite
from .errors import InputError
from .transforms import TRANSFORMS_BY_NAME

_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


@dataclass
class EncodeOptions:
    codec: str = "pvq"
    bits: float = 2.0
    keep: str = None  # regex: tensors stored raw
    exclude: str = None  # regex: tensors left out of the file
    seed: int = 0
    transform: str = "rht"
    rht_block: str = "auto"  # "auto", "full" or an integer block order
    codec_options: dict = field(default_factory=dict)
    entropy: str = "auto"  # payload coding policy: auto, rans or none (pvqcodec/coding/select.py)
    bits_per_tensor: dict = None  # name -> bits, overriding `bits` (the bit allocator's choice)
    damp: float = 0.01  # Hessian-aware rounding: damping, times H's mean diagonal
    ldlq_passes: int = 2  # Hessian-aware rounding: passes of block coordinate descent after BlockLDLQ
    device: str = "cpu"  # where the codec's search runs: cpu, or cuda (codecs with `encode_devices`); same output
    allocate_weight: str = "auto"  # bit allocation: weigh tensors by proxy, fisher, or auto (fisher if the H file has it)


@dataclass
class TensorReport:
    name: str
    shape: tuple
    dtype: str
    codec: str
    numel: int
    coded_bytes: int  # payloads plus parameter blocks
    raw_coded_bytes: int = 0  # the same with every payload in the raw coding (before entropy coding)
    sqnr_db: float = None  # None for raw tensors (exact)
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.coded_bytes / self.numel if self.numel else 0.0

    @property
    def raw_bits_per_weight(self) -> float:
        return 8 * self.raw_coded_bytes / self.numel if self.numel else 0.0


def tensor_seed(seed: int, name: str) -> int:
    """The per-tensor RHT seed (encoder policy; the decoder reads it from the file)."""
    return (seed * _GOLDEN + zlib.crc32(name.encode())) & _MASK64


def matrix_view(shape) -> tuple:
    """rows x cols of a tensor: all leading dimensions by the last (rank 0: 1 x 1)."""
    if len(shape) == 0:
        return 1, 1
    cols = int(shape[-1])
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    return rows, cols


def quantizes(name: str, shape, options: EncodeOptions) -> bool:
    return len(shape) >= 2 and not (options.keep and re.search(options.keep, name))


def rht_blocks(rows: int, cols: int, rht_block: str) -> tuple:
    from .transforms import hadamard

    def pick(n):
        if rht_block == "auto":
            return hadamard.default_block(n)
        if rht_block == "full":
            if not hadamard.is_valid_block(n):
                raise InputError(f"--rht-block full: no Hadamard matrix of order {n} in the spec's table; use auto")
            return n
        b = int(rht_block)
        if n % b or not hadamard.is_valid_block(b):
            # A side the block does not divide falls back to the automatic choice.
            return hadamard.default_block(n)
        return b

    return pick(rows), pick(cols)


def transformed_matrix(name: str, stored: np.ndarray, dtype: str, options: EncodeOptions):
    """(W, W', transform, its parameters) of a tensor that is quantized: the matrix view in
    float64 and its transform, the codec's input."""
    rows, cols = matrix_view(tuple(stored.shape))
    transform = TRANSFORMS_BY_NAME[options.transform]
    tparams = {}
    if transform.name == "rht":
        rb, cb = rht_blocks(rows, cols, options.rht_block)
        tparams = {"seed": tensor_seed(options.seed, name), "row_block": rb, "col_block": cb}
    w = dtypes.to_float32(np.asarray(stored), dtype).reshape(rows, cols).astype(np.float64)
    if not np.all(np.isfinite(w)):
        raise InputError(f"tensor {name!r} holds NaN or infinite values; keep it raw with --keep")
    return w, transform.forward(w, tparams), transform, tparams


def encode_tensor(name: str, stored: np.ndarray, dtype: str, options: EncodeOptions, weighting=None, hessian=None):
    """Encode one tensor given in its storage dtype. Returns (TensorToWrite, TensorReport).
    hessian: None, or the second moment of the layer's inputs (cols x cols, or its
    diagonal), for Hessian-aware rounding (pvqcodec.quantize.ldlq)."""
    t0 = time.perf_counter()
    shape = tuple(stored.shape)
    rows, cols = matrix_view(shape)
    if options.entropy not in ENTROPY_CHOICES:
        raise InputError(f"entropy coding must be one of {', '.join(ENTROPY_CHOICES)}, got {options.entropy!r}")
    if not quantizes(name, shape, options):
        codec = codec_by_name("raw")
        enc = codec.encode_stored(stored)
        transform, tparams = TRANSFORMS_BY_NAME["identity"], {}
    else:
        codec = codec_by_name(options.codec)
        w, wp, transform, tparams = transformed_matrix(name, stored, dtype, options)
        bits = (options.bits_per_tensor or {}).get(name, options.bits)
        copts = {"bits": bits, **options.codec_options, "device": options.device}
        if hessian is not None:
            from .quantize.ldlq import encode_with_hessian, prepare_hessian

            hp, hinfo = prepare_hessian(hessian, cols, name, transform, tparams)
            enc, linfo = encode_with_hessian(codec, wp, copts, hp, name=name, damp=options.damp,
                                             passes=options.ldlq_passes, dtype=dtype)
            hessian_info = {**hinfo, **linfo}
        else:
            enc = codec.encode(wp, copts, weighting)
    specs = codec.streams(enc.params, rows, cols, dtype)
    cparams_bytes = codec.build_params(enc.params)
    cparams = codec.parse_params(cparams_bytes, rows, cols, dtype)  # as the decoder will see them
    coded_streams = []
    for position, (s, spec) in enumerate(zip(enc.streams, specs)):
        bounds = codec.stream_bounds(cparams, rows, cols, dtype, position, enc.streams[:position])
        coded_streams.append(code_stream(s, replace(spec, bounds=bounds), options.entropy,
                                         codec.rans_chunk_symbols))
    payloads = [(c.coding, c.payload) for c in coded_streams]
    entry = TensorToWrite(name, dtype, shape, rows, cols, transform.id, transform.build_params(tparams),
                          codec.id, cparams_bytes, payloads)
    side = len(entry.transform_params) + len(entry.codec_params)
    coded = sum(p.size for _, p in payloads) + side
    raw_coded = sum(c.raw_bytes for c in coded_streams) + side
    report = TensorReport(name, shape, dtype, codec.name, rows * cols, coded, raw_coded, info=dict(enc.info))
    report.info["codings"] = [c.mode or "raw" for c in coded_streams]
    if codec.quantizes:
        report.info["bits_target"] = bits
        if hessian is not None:
            report.info["hessian"] = hessian_info
    if codec.quantizes:
        # Decode the payloads written, through the reference decoder's own code: the SQNR
        # is of what users get, and every entropy-coded payload is checked on the way.
        values = codec.decode(cparams, rows, cols, dtype,
                              decode_payloads(codec, cparams, rows, cols, dtype,
                                              ((c, p, spec) for (c, p), spec in zip(payloads, specs))))
        back = transform.inverse(np.ascontiguousarray(values, np.float32), tparams).astype(np.float64)
        err = float(np.sum((back - w) ** 2))
        sig = float(np.sum(w * w))
        report.sqnr_db = float("inf") if err == 0 else 10 * np.log10(sig / err) if sig > 0 else float("-inf")
        report.info["mse"] = err / w.size
    report.seconds = time.perf_counter() - t0
    return entry, report
