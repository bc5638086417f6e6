"""The reference encoder's choice of a payload coding per stream (informative, spec 4.3.5).

`auto` keeps a rans payload only where it is at least 1 percent smaller than the
raw one (tables, chunk offsets and lane states included); `rans` codes every
stream with rans in its smaller mode, even where raw would be smaller (for tests
and measurements); `none` writes raw payloads only. Candidates: table mode for
streams of width <= 16 (with at most 2^15 distinct symbols), uniform mode for
bounded streams, and under `rans` also uniform mode over 2^width for unbounded
ones (never smaller than raw, so `auto` does not try it). Deterministic: ties go to
the first candidate in that order.
"""

from dataclasses import dataclass

import numpy as np

from . import RawCoding
from .rans import RansCoding

ENTROPY_CHOICES = ("auto", "rans", "none")
AUTO_MAX_RATIO = 0.99
DEFAULT_CHUNK_SYMBOLS = 65536  # 32 lane states = 1,024 bits: under 1 percent of a chunk at 2 bits/symbol


@dataclass
class CodedStream:
    coding: int  # the payload's coding id
    payload: np.ndarray  # uint8
    raw_bytes: int  # the size of the raw coding of the same stream
    mode: str = None  # "table" or "uniform" for rans payloads


def code_stream(symbols, spec, entropy: str = "auto", chunk_symbols: int = DEFAULT_CHUNK_SYMBOLS) -> CodedStream:
    """The payload of one stream under the `entropy` policy, in rANS chunks of `chunk_symbols`."""
    if entropy not in ENTROPY_CHOICES:
        raise ValueError(f"entropy must be one of {ENTROPY_CHOICES}, got {entropy!r}")
    raw = RawCoding.encode(symbols, spec)
    if entropy == "none":
        return CodedStream(RawCoding.id, raw, raw.size)
    candidates = []
    if spec.width <= 16:
        try:
            candidates.append(("table", RansCoding.encode(symbols, spec, mode="table", precision=None, chunk_symbols=chunk_symbols)))
        except ValueError:  # more distinct symbols than a table of precision 15 has slots
            pass
    if spec.bounds is not None or entropy == "rans":
        candidates.append(("uniform", RansCoding.encode(symbols, spec, mode="uniform", chunk_symbols=chunk_symbols)))
    if not candidates:
        return CodedStream(RawCoding.id, raw, raw.size)
    mode, best = min(candidates, key=lambda c: c[1].size)
    if entropy == "auto" and best.size > AUTO_MAX_RATIO * raw.size:
        return CodedStream(RawCoding.id, raw, raw.size)
    return CodedStream(RansCoding.id, best, raw.size, mode)
