"""Codec id 0, `raw` (spec section 6.1): values stored exactly in the source dtype."""

import numpy as np
from construct import Struct

from .. import dtypes
from ..coding import StreamSpec
from ..container.format import DTYPE_SIZES
from ..errors import ParamsInvalid
from ..params import parse_exact
from . import Codec, Encoded, register


@register
class RawCodec(Codec):
    id = 0
    name = "raw"
    params_struct = Struct()
    quantizes = False
    needs_identity_transform = True

    def parse_params(self, raw, rows, cols, dtype):
        return parse_exact(self.params_struct, raw, "raw codec")

    def streams(self, params, rows, cols, dtype):
        return [StreamSpec("values", rows * cols, 8 * DTYPE_SIZES[dtype])]

    def encode_stored(self, stored: np.ndarray) -> Encoded:
        """`stored` is the source array in its storage dtype (bfloat16 as uint16 bits)."""
        flat = np.ascontiguousarray(stored).reshape(-1)
        width = 8 * flat.dtype.itemsize
        return Encoded({}, [flat.view({16: np.uint16, 32: np.uint32}[width])])

    def decode(self, params, rows, cols, dtype, streams):
        return dtypes.to_float32(self.decode_stored(dtype, streams), dtype).reshape(rows, cols)

    @staticmethod
    def decode_stored(dtype: str, streams) -> np.ndarray:
        """The exact stored values in the storage dtype (bfloat16 as uint16 bits)."""
        sym = streams[0]
        if dtype == "float32":
            return sym.view(np.float32)
        if dtype == "float16":
            return sym.view(np.float16)
        if dtype == "bfloat16":
            return sym.view(np.uint16)
        raise ParamsInvalid(f"raw codec: unsupported dtype {dtype}")  # pragma: no cover
