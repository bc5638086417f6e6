"""BlockLDLQ for the entropy-coded codecs: the rate rule, the rate term, and quantizers
whose blocks must come in column order (issues 9 and 10).

Rate rule. An entropy-coded codec's `--bits` is its coded size, met within 1 percent
under the target. Rounding towards the fed-forward targets X instead of W changes the
symbol statistics, so BlockLDLQ with the data-free encoding's parameters lands at
another size. A RateControlledQuantizer therefore exposes one knob (log of the step or
of lambda) and the driver (`ldlq.encode_with_hessian`) runs whole BlockLDLQ passes as
trials of a secant search on it, from the data-free value: between trials the
quantizer re-estimates its tables (centroids, code lengths) from the last trial's
targets and symbols, as the data-free encoder does between its Lloyd passes. The
result is the trial with the largest coded size within the target; a quantizer
without a knob (`knob()` None) runs once and its result counts only if it fits.

Rate term. Each block's choice minimizes  sum_c w_c (x - q)^2 + lambda len(q)  with
w_c the diagonal of the block LDL metric D for the block's columns (the weights
`block_ldlq` passes when `needs_weights`): with blocks of one column the proxy is
exactly sum_k d_k (X_k - Q_k)^2 (ldlq.py), so the per-value choice is the exact
Lagrangian of proxy + lambda * bits given the earlier decisions. H is normalized to a
mean diagonal of 1 before factoring, so w = 1 is the data-free metric and lambda keeps
its data-free meaning (ratio * step^2). Coordinate descent re-quantizes with w =
diag(H_kk) and keeps a row's new codes only where distortion + lambda * bits falls
(`unit_rates`).

Forward quantizers. A codec whose state runs along the row (ECTCQ's trellis) must
round columns 0, 1, ... in order, while BlockLDLQ rounds the last block first. It sets
`forward = True`, and the driver runs BlockLDLQ on the column-reversed problem
(W[:, ::-1], H[::-1, ::-1]), whose last block is the original first one; ReversedColumns
hands the quantizer each block in original column order with the original block index.
A quantizer with `lookahead` > 0 also gets the current targets of the next columns
(`block_ldlq`'s `ahead`), so that a path committed at a block's end is chosen with the
row's continuation in view. Coordinate descent does not apply to such a quantizer
(`supports_passes = False`): re-quantizing a block alone would have to reconnect to the
state the next block starts from.
"""

from __future__ import annotations

import abc
import math
from dataclasses import replace

import numpy as np

from ..codecs import BlockQuantizer
from .ldlq import blocks_of

RATE_TOLERANCE = 0.01  # the rate rule: a coded size within 1 percent under the target
AIM = 0.995  # the search aims this far under the target: the middle of the rate rule, against noise
ACCEPT = 0.995  # a trial this close under the target ends the search
RELAX_AFTER = 2  # from the second trial on, any size within the rate rule ends it (each trial is a whole BlockLDLQ)
MAX_KNOB_STEP = 1.0  # at most a factor e per trial
MAX_TRIALS = 6  # BlockLDLQ passes per tensor at most


class RateControlledQuantizer(BlockQuantizer):
    """A BlockQuantizer of an entropy-coded codec (see the module docstring)."""

    needs_weights = True  # block_ldlq passes the LDL metric's diagonal as the per-column weight
    forward = False  # True: blocks must be quantized in column order (the driver reverses the problem)
    supports_passes = True  # False: coordinate descent cannot re-quantize one block alone
    min_trials = 1  # trials run even when the first one meets the rate (its tables are the data-free ones)
    target_bytes: float

    @abc.abstractmethod
    def coded_bytes(self, enc) -> int:
        """The coded size of an Encoded, counted as the codec's data-free rate control counts it."""

    @abc.abstractmethod
    def knob(self):
        """The current value of the search variable (decreasing size as it grows), or None."""

    def default_slope(self) -> float:
        """Bytes per unit of the knob, before two trials give a measured slope (negative)."""
        return -1.0

    @abc.abstractmethod
    def retune(self, knob: float, codes: list, targets: np.ndarray, weights) -> None:
        """Set the knob and re-estimate the tables from the last trial: its codes, the
        fed-forward targets (rows x cols, original column order) and the per-column
        weights it used (None: 1)."""

    def unit_rates(self, k: int, code: list) -> np.ndarray:
        """lambda * bits of each row unit of block k's code (coordinate descent's rate term)."""
        return None


class ScaleSearchQuantizer(RateControlledQuantizer):
    """A RateControlledQuantizer whose knob is the log of its quantization scale (the
    attribute named by `scale_attr`: ecsq's and ectcq's step, eclattice's half_scale), and
    whose size is the codec's coded size of the whole tensor (self.codec, self.rows,
    self.cols): about n/8 bytes less per doubling of the scale."""

    scale_attr = "step"

    def coded_bytes(self, enc):
        size = coded_bytes(self.codec, enc, self.rows, self.cols)
        enc.info["coded_bits"] = 8 * size / (self.rows * self.cols)
        return size

    def knob(self):
        return math.log(getattr(self, self.scale_attr))

    def default_slope(self):
        return -self.rows * self.cols / 8 / math.log(2)


def next_knob(tried: list, target: float, slope0: float):
    """Secant step on (knob, size) pairs towards AIM * target, or None when the last size
    is accepted: ACCEPT * target or more, and from the RELAX_AFTER-th trial on anything
    within the rate rule. Once trials lie on both sides of the aim, the step interpolates
    between the closest of each side (regula falsi, Illinois variant); before, the slope
    is the last two trials' where it is within a factor 4 of slope0, else slope0: the
    tables re-estimated between trials move the size too, so a measured slope can be far
    off (even of the wrong sign)."""
    k1, z1 = tried[-1]
    accept = ACCEPT if len(tried) < RELAX_AFTER else 1 - RATE_TOLERANCE
    if accept * target <= z1 <= target:
        return None
    aim = AIM * target
    below = [t for t in tried if t[1] < aim]
    above = [t for t in tried if t[1] >= aim]
    if below and above:  # a bracket: interpolate between its closest ends (regula falsi)
        kb, zb = max(below, key=lambda t: t[1])
        ka, za = min(above, key=lambda t: t[1])
        fb, fa = zb - aim, za - aim
        # Illinois: an end that the last two trials left in place weighs half, so that
        # the bracket shrinks from both sides
        if len(tried) > 1 and tried[-1][1] >= aim and tried[-2][1] >= aim:
            fb /= 2
        elif len(tried) > 1 and tried[-1][1] < aim and tried[-2][1] < aim:
            fa /= 2
        if fa != fb and kb != ka:
            return kb - fb * (ka - kb) / (fa - fb)
    slope = slope0
    if len(tried) > 1:
        k0, z0 = tried[-2]
        if k1 != k0 and 0.25 <= ((z1 - z0) / (k1 - k0)) / slope0 <= 4.0:
            slope = (z1 - z0) / (k1 - k0)
    return k1 + max(-MAX_KNOB_STEP, min(MAX_KNOB_STEP, (aim - z1) / slope))


def best_fit(trials: list, target: float):
    """Index of the trial with the largest size within the target (ties: the first), or None."""
    fits = [i for i, t in enumerate(trials) if t[1] <= target]
    return max(fits, key=lambda i: (trials[i][1], -i)) if fits else None


def coded_bytes(codec, enc, rows: int, cols: int, dtype: str = "float32", entropy: str = "auto") -> int:
    """Parameter block plus payloads of an Encoded as the reference encoder writes them
    (bounded streams included)."""
    from ..coding.select import code_stream

    specs = codec.streams(enc.params, rows, cols, dtype)
    raw_params = codec.build_params(enc.params)
    cparams = codec.parse_params(raw_params, rows, cols, dtype)
    size = len(raw_params)
    for position, (s, spec) in enumerate(zip(enc.streams, specs)):
        bounds = codec.stream_bounds(cparams, rows, cols, dtype, position, enc.streams[:position])
        size += code_stream(s, replace(spec, bounds=bounds), entropy, codec.rans_chunk_symbols).payload.size
    return size


class ReversedColumns(BlockQuantizer):
    """The column-reversed view of a forward quantizer for BlockLDLQ on (W[:, ::-1],
    H[::-1, ::-1]) with blocks_of(n, g, end_aligned=True): block k of the reversed
    problem is the inner quantizer's block nb - 1 - k, its columns flipped back."""

    def __init__(self, inner: BlockQuantizer, n: int):
        self.inner = inner
        self.width, self.unit_rows = inner.width, inner.unit_rows
        self.nb = len(blocks_of(n, inner.width))
        self.lookahead = getattr(inner, "lookahead", 0)
        self.wants_metric = getattr(inner, "wants_metric", False)
        if getattr(inner, "unit_rates", None) is not None:
            self.unit_rates = lambda k, code: inner.unit_rates(self.nb - 1 - k, code)

    def quantize(self, k, X, weight=None, ahead=None, metric=None):
        flip = (lambda a: None if a is None else a[..., ::-1])  # noqa: E731
        kw = {} if ahead is None else {"ahead": (flip(ahead[0]), flip(ahead[1]))}
        if metric is not None:
            kw["metric"] = np.ascontiguousarray(metric[::-1, ::-1])
        Q, code = self.inner.quantize(self.nb - 1 - k, X[:, ::-1], flip(weight), **kw)
        return np.asarray(Q)[:, ::-1], code

    def original_codes(self, codes: list) -> list:
        return codes[::-1]

    def finish(self, codes, scales=None):
        return self.inner.finish(self.original_codes(codes), scales)
