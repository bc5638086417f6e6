"""Transforms (spec section 5): identity and the randomized Hadamard transform.

A transform maps the matrix view W (rows x cols) into the domain where the
codec's values live, W' = forward(W); decoders apply inverse(W'). Each is an
entry in TRANSFORMS with an id and a parameter block.
"""

import numpy as np
from construct import Int32ul, Int64ul, Struct

from ..errors import TransformUnknown
from ..params import parse_exact


class IdentityTransform:
    """Transform id 0: the codec's values are the weights themselves."""

    id = 0
    name = "identity"
    params_struct = Struct()

    def parse_params(self, raw: bytes, rows: int, cols: int) -> dict:
        parse_exact(self.params_struct, raw, "identity transform")
        return {}

    def build_params(self, params: dict) -> bytes:
        return b""

    def forward(self, w: np.ndarray, params: dict) -> np.ndarray:
        return np.asarray(w, np.float64)

    def inverse(self, wp: np.ndarray, params: dict) -> np.ndarray:
        return wp

    def describe(self, params: dict) -> dict:
        return {"name": self.name}


class RHTTransform:
    """Transform id 1: block-diagonal randomized Hadamard transform on both sides (section 5.3)."""

    id = 1
    name = "rht"
    params_struct = Struct("seed" / Int64ul, "row_block" / Int32ul, "col_block" / Int32ul)

    def parse_params(self, raw: bytes, rows: int, cols: int) -> dict:
        from . import rht

        p = parse_exact(self.params_struct, raw, "rht transform")
        rht.validate_params(rows, cols, p["row_block"], p["col_block"])
        return p

    def build_params(self, params: dict) -> bytes:
        return self.params_struct.build(params)

    def forward(self, w: np.ndarray, params: dict) -> np.ndarray:
        from . import rht

        return rht.forward_2d(np.asarray(w, np.float64), params["seed"], params["row_block"], params["col_block"])

    def inverse(self, wp: np.ndarray, params: dict) -> np.ndarray:
        from . import rht

        return rht.inverse_2d(wp, params["seed"], params["row_block"], params["col_block"])

    def describe(self, params: dict) -> dict:
        return {"name": self.name, **params}


TRANSFORMS = {t.id: t for t in (IdentityTransform(), RHTTransform())}
TRANSFORMS_BY_NAME = {t.name: t for t in TRANSFORMS.values()}


def transform_by_id(transform_id: int):
    try:
        return TRANSFORMS[transform_id]
    except KeyError:
        known = ", ".join(f"{t.id} ({t.name})" for t in TRANSFORMS.values())
        raise TransformUnknown(f"unknown transform id {transform_id}; this reader knows {known}") from None
