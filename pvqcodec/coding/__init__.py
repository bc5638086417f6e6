"""Payload codings (spec section 4): how a stream of symbols becomes bytes.

A codec turns a matrix into streams of fixed-width symbols; a coding turns one
stream into a payload's bytes and back. Codecs never see bytes and codings
never see matrices, so a new coding (rANS in spec 1.1) needs no codec change.
"""

from dataclasses import dataclass

import numpy as np

from .. import bits
from ..errors import CodingUnknown


@dataclass(frozen=True)
class StreamSpec:
    """One stream of a tensor: `count` symbols of `width` bits each."""

    name: str
    count: int
    width: int


class RawCoding:
    """Coding id 0: the symbols bit-packed LSB-first at their full width (section 4.2)."""

    id = 0
    name = "raw"

    @staticmethod
    def expected_length(spec: StreamSpec) -> int:
        return bits.packed_size(spec.count, spec.width)

    @staticmethod
    def encode(symbols: np.ndarray, spec: StreamSpec) -> np.ndarray:
        return bits.pack(symbols, spec.width)

    @staticmethod
    def decode(buf: np.ndarray, spec: StreamSpec) -> np.ndarray:
        return bits.unpack(buf, spec.count, spec.width)


CODINGS = {RawCoding.id: RawCoding}
CODINGS_BY_NAME = {c.name: c for c in CODINGS.values()}


def coding_by_id(coding_id: int):
    try:
        return CODINGS[coding_id]
    except KeyError:
        known = ", ".join(f"{c.id} ({c.name})" for c in CODINGS.values())
        raise CodingUnknown(f"unknown payload coding id {coding_id}; this reader knows {known}") from None
