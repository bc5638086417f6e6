"""Parsing of parameter blocks: exact consumption, errors as ParamsInvalid."""

import io

from construct import ConstructError

from .errors import ParamsInvalid


def parse_exact(struct, raw: bytes, what: str) -> dict:
    """Parse `raw` with `struct`; every byte must be consumed (spec 1.3)."""
    stream = io.BytesIO(raw)
    try:
        parsed = struct.parse_stream(stream)
    except (ConstructError, UnicodeDecodeError, ValueError) as exc:
        raise ParamsInvalid(f"{what}: cannot parse its parameter block ({type(exc).__name__})") from None
    if stream.tell() != len(raw):
        raise ParamsInvalid(f"{what}: parameter block is {len(raw)} bytes but its fields use {stream.tell()}")
    return {k: v for k, v in parsed.items() if not k.startswith("_")}
