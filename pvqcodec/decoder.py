"""The reference decoder's pipeline (spec section 7.3): payload -> streams -> codec -> inverse transform."""

from dataclasses import replace

import numpy as np

from . import dtypes
from .codecs.raw import RawCodec
from .coding import coding_by_id
from .container.reader import Container, TensorRecord
from .errors import PayloadCorrupt


def decode_streams(container: Container, rec: TensorRecord, verify: bool = True) -> list:
    """Every payload of the tensor, checksum-verified and decoded by its coding (7.3 step 1)."""
    payloads = ((p.coding, container.payload(rec, i, verify), p.stream) for i, p in enumerate(rec.payloads))
    return decode_payloads(rec.codec, rec.codec_params, rec.rows, rec.cols, rec.dtype, payloads)


def decode_payloads(codec, params: dict, rows: int, cols: int, dtype: str, payloads) -> list:
    """Streams from (coding id, payload bytes, StreamSpec) in payload order. A bounded
    stream's bounds (section 4) come from the codec and the streams decoded before it."""
    streams = []
    for position, (coding, buf, spec) in enumerate(payloads):
        bounds = codec.stream_bounds(params, rows, cols, dtype, position, streams)
        if bounds is not None:
            spec = replace(spec, bounds=bounds)
        streams.append(coding_by_id(coding).decode(buf, spec))
    return streams


def decode_matrix(container: Container, rec: TensorRecord, verify: bool = True) -> np.ndarray:
    """The tensor's matrix view (rows x cols) in float32, bit-exact per the spec."""
    streams = decode_streams(container, rec, verify)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is caught by check_finite
        values = rec.codec.decode(rec.codec_params, rec.rows, rec.cols, rec.dtype, streams)
        w = rec.transform.inverse(np.ascontiguousarray(values, np.float32), rec.transform_params)
    check_finite(rec, w)
    return w


def check_finite(rec: TensorRecord, w: np.ndarray) -> None:
    """Spec 7.3 step 3: a quantized tensor whose decoded values are not all finite is corrupt.
    (Non-finite values could come only from overflowing scales; NaN bit patterns are not
    portable, so they are rejected rather than passed on.)"""
    if rec.codec.quantizes and not np.isfinite(w).all():
        bad = int(np.flatnonzero(~np.isfinite(w.reshape(-1)))[0])
        raise PayloadCorrupt(f"tensor {rec.name!r}: decoded value {bad} (row {bad // rec.cols}) is not finite")


def decode_float32(container: Container, rec: TensorRecord, verify: bool = True) -> np.ndarray:
    return decode_matrix(container, rec, verify).reshape(rec.shape)


def decode_stored(container: Container, rec: TensorRecord, dtype: str = None, verify: bool = True) -> np.ndarray:
    """The tensor in a storage dtype (bfloat16 as uint16 bits). Raw tensors keep their own
    dtype and bits; quantized ones are rounded from float32 to `dtype` (default: the source's)."""
    if not rec.codec.quantizes:
        return RawCodec.decode_stored(rec.dtype, decode_streams(container, rec, verify)).reshape(rec.shape)
    return dtypes.from_float32(decode_float32(container, rec, verify), dtype or rec.dtype)
