"""Pieces every codec shares: per-row float16 scales and rows cut into padded groups."""

import numpy as np

from ..errors import PayloadCorrupt


def decode_row_scales(sym, codec: str) -> np.ndarray:
    """A `row_scales` stream (float16 bit patterns) as float32, exactly; a scale that is not
    finite (exponent all ones) is corrupt (spec 6.2.3, 6.3.4, 6.4.3)."""
    scales = np.asarray(sym, np.uint16).view(np.float16).astype(np.float32)
    if not np.all(np.isfinite(scales)):
        bad = int(np.flatnonzero(~np.isfinite(scales))[0])
        raise PayloadCorrupt(f"{codec} row scale of row {bad} is not finite")
    return scales


def group_view(a: np.ndarray, d: int, fill: float = 0.0) -> np.ndarray:
    """Rows cut into groups of d (float64, (rows * ceil(cols / d)) x d); the last group of
    each row is padded with `fill`."""
    rows, cols = a.shape
    gpr = -(-cols // d)
    padded = np.full((rows, gpr * d), fill, np.float64)
    padded[:, :cols] = a
    return padded.reshape(rows * gpr, d)
