"""The reference encoder's pipeline (DESIGN: weight files -> policy -> matrix view ->
transform -> codec -> streams -> payload coding -> container)."""

import re
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

from . import dtypes
from .codecs import codec_by_name
from .coding import CODINGS_BY_NAME
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


@dataclass
class TensorReport:
    name: str
    shape: tuple
    dtype: str
    codec: str
    numel: int
    coded_bytes: int  # payloads plus parameter blocks
    sqnr_db: float = None  # None for raw tensors (exact)
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.coded_bytes / self.numel if self.numel else 0.0


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


def encode_tensor(name: str, stored: np.ndarray, dtype: str, options: EncodeOptions, weighting=None):
    """Encode one tensor given in its storage dtype. Returns (TensorToWrite, TensorReport)."""
    t0 = time.perf_counter()
    shape = tuple(stored.shape)
    rows, cols = matrix_view(shape)
    raw_coding = CODINGS_BY_NAME["raw"]
    if not quantizes(name, shape, options):
        codec = codec_by_name("raw")
        enc = codec.encode_stored(stored)
        transform, tparams = TRANSFORMS_BY_NAME["identity"], {}
    else:
        codec = codec_by_name(options.codec)
        transform = TRANSFORMS_BY_NAME[options.transform]
        tparams = {}
        if transform.name == "rht":
            rb, cb = rht_blocks(rows, cols, options.rht_block)
            tparams = {"seed": tensor_seed(options.seed, name), "row_block": rb, "col_block": cb}
        w = dtypes.to_float32(np.asarray(stored), dtype).reshape(rows, cols).astype(np.float64)
        if not np.all(np.isfinite(w)):
            raise InputError(f"tensor {name!r} holds NaN or infinite values; keep it raw with --keep")
        wp = transform.forward(w, tparams)
        enc = codec.encode(wp, {"bits": options.bits, **options.codec_options}, weighting)
    specs = codec.streams(enc.params, rows, cols, dtype)
    payloads = [(raw_coding.id, raw_coding.encode(s, spec)) for s, spec in zip(enc.streams, specs)]
    entry = TensorToWrite(name, dtype, shape, rows, cols, transform.id, transform.build_params(tparams),
                          codec.id, codec.build_params(enc.params), payloads)
    coded = sum(p.size for _, p in payloads) + len(entry.transform_params) + len(entry.codec_params)
    report = TensorReport(name, shape, dtype, codec.name, rows * cols, coded, info=dict(enc.info))
    if codec.quantizes:
        # Decode through the reference decoder's own arithmetic: the SQNR is of what users get.
        values = codec.decode(codec.parse_params(entry.codec_params, rows, cols, dtype), rows, cols, dtype,
                              [raw_coding.decode(p, spec) for (_, p), spec in zip(payloads, specs)])
        back = transform.inverse(np.ascontiguousarray(values, np.float32), tparams).astype(np.float64)
        err = float(np.sum((back - w) ** 2))
        sig = float(np.sum(w * w))
        report.sqnr_db = float("inf") if err == 0 else 10 * np.log10(sig / err) if sig > 0 else float("-inf")
        report.info["mse"] = err / w.size
    report.seconds = time.perf_counter() - t0
    return entry, report
