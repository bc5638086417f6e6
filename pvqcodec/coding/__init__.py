"""Payload codings (spec section 4): how a stream of symbols becomes bytes.

A codec turns a matrix into streams of fixed-width symbols; a coding turns one
stream into a payload's bytes and back. Codecs never see bytes and codings
never see matrices, so a new coding (rANS in spec 1.1) needs no codec change.
"""

import operator
from dataclasses import dataclass

import numpy as np

from .. import bits
from ..errors import CodingUnknown


@dataclass(frozen=True, eq=False)
class Bounds:
    """Exclusive upper bounds of a bounded stream's symbols (spec section 4, since 1.1).

    `values` are the distinct bounds as Python ints (PVQ's N(D, K) can exceed 2^64);
    `index` is None (every symbol has bound values[0]) or a per-symbol uint8/uint16
    array of indices into `values`."""

    values: tuple
    index: np.ndarray = None

    def __post_init__(self):
        values = tuple(operator.index(v) for v in self.values)  # numpy integers become ints
        object.__setattr__(self, "values", tuple(int(v) for v in values))
        if not values or any(v < 1 for v in values):
            raise ValueError(f"bounds must be integers >= 1, got {self.values!r}")
        if self.index is None and len(self.values) != 1:
            raise ValueError("bounds without a per-symbol index must hold exactly one value")


@dataclass(frozen=True)
class StreamSpec:
    """One stream of a tensor: `count` symbols of `width` bits each, optionally bounded."""

    name: str
    count: int
    width: int
    bounds: Bounds = None


class RawCoding:
    """Coding id 0: the symbols bit-packed LSB-first at their full width (section 4.2)."""

    id = 0
    name = "raw"
    since_minor = 0  # the spec's minor version that added it (section 4.1)

    @staticmethod
    def expected_length(spec: StreamSpec) -> int:
        return bits.packed_size(spec.count, spec.width)

    @staticmethod
    def encode(symbols: np.ndarray, spec: StreamSpec) -> np.ndarray:
        return bits.pack(symbols, spec.width)

    @staticmethod
    def decode(buf: np.ndarray, spec: StreamSpec) -> np.ndarray:
        return bits.unpack(buf, spec.count, spec.width)


def _registry():
    from .rans import RansCoding  # after RawCoding and StreamSpec: rans imports them

    return {RawCoding.id: RawCoding, RansCoding.id: RansCoding}


CODINGS = _registry()
CODINGS_BY_NAME = {c.name: c for c in CODINGS.values()}


def coding_by_id(coding_id: int):
    try:
        return CODINGS[coding_id]
    except KeyError:
        known = ", ".join(f"{c.id} ({c.name})" for c in CODINGS.values())
        raise CodingUnknown(f"unknown payload coding id {coding_id}; this reader knows {known}") from None
