"""BlockLDLQ for `ecsq` (Hessian-aware rounding; pvqcodec/quantize/ldlq_rate.py explains
the rate rule and the rate term).

Blocks of one column: ECSQ rounds each value alone, so a wider block would round its
columns without each other's feedback; with width 1 BlockLDLQ is GPTQ's column-by-
column feedback, and its proxy is exactly sum_k d_k (X_k - Q_k)^2, d_k the LDL
diagonal. Each value takes the symbol minimizing

    d_k (|x| - r_m)^2 + lambda len(s),  lambda = ratio * step^2

over the nearest magnitude and the two below it (the data-free encoder's rule with the
LDL weight), r_m the decoder's values (spec 6.6.4) for the current step and offsets,
len the code lengths of the current symbol frequencies.

Rate: the knob is log(step). Trial 0 uses the data-free step, offsets and code lengths;
each later trial takes the secant's step and re-runs the entropy-constrained Lloyd
iteration of the data-free encoder at that step on the previous trial's fed-forward
targets X (weights d_k), which gives the offsets and code lengths the trial rounds with.
The step itself is refit in the H metric after each trial (its symbols, hence its size,
unchanged). Coordinate descent is supported: any value may change alone.
"""

import math

import numpy as np

from .. import Encoded
from ...quantize.ldlq_rate import ScaleSearchQuantizer
from . import LAMBDA_RATIO, LLOYD_ITERS, EcsqCodec, decode_ecsq_values, offsets_from_centroids, target_bits
from .quantizer import MAX_MAG, _assign, code_lengths, ecsq_quantize, zigzag

LDLQ_WIDTH = 1


class EcsqBlockQuantizer(ScaleSearchQuantizer):
    unit_rows = 1

    def __init__(self, wp, options, free):
        self.rows, self.cols = wp.shape
        self.width = int(options.get("ldlq_width", LDLQ_WIDTH))
        self.codec = EcsqCodec()
        self.target_bytes = target_bits(options["bits"]) * self.rows * self.cols / 8
        self.ratio = float(options.get("lambda_ratio", LAMBDA_RATIO))
        self.iters = int(options.get("lloyd_iters", LLOYD_ITERS))
        # experiments (bench/ldlq.py): lambda times this factor; "none" rounds without the LDL weights
        self.lam_scale = float(options.get("ldlq_lambda_scale", 1.0))
        self.weighting = options.get("ldlq_weights", "ldl")
        p = free.params
        sym = np.asarray(free.streams[0], np.int64)
        self._set(float(np.float32(p["step"])), np.asarray(p["offsets"], np.float32),
                  code_lengths(np.bincount(sym, minlength=2).astype(np.float64)))

    def _set(self, step, offsets, lens):
        self.step = float(np.float32(step))
        self.offsets = np.asarray(offsets, np.float32)
        self.lens = np.asarray(lens, np.float64)
        self.lam = self.lam_scale * self.ratio * self.step * self.step
        self.recon = np.zeros(0)

    def _recon(self, mmax: int) -> np.ndarray:
        """The decoder's |value| of each magnitude 0..mmax (grown on demand)."""
        if self.recon.size <= mmax:
            m = np.arange(max(mmax + 1, 2 * self.recon.size, 64))
            self.recon = np.abs(decode_ecsq_values(zigzag(m), self.step, self.offsets)).astype(np.float64)
        return self.recon

    def quantize(self, k, X, weight=None):
        rows, w = X.shape
        x = np.ascontiguousarray(X, np.float64).reshape(-1)
        if self.weighting == "none":
            weight = None
        wt = np.ones(x.size) if weight is None else np.tile(np.asarray(weight, np.float64), rows)
        mmax = min(MAX_MAG, int(np.max(np.abs(x)) / self.step + 0.5) if x.size else 0)
        sym = np.empty(x.size, np.int64)
        _assign(x, wt, self.step, self._recon(mmax + 1), self.lens, self.lam, sym)
        sym16 = sym.astype(np.uint16).reshape(rows, w)
        Q = decode_ecsq_values(sym16, self.step, self.offsets).astype(np.float64)
        return Q, [sym16]

    def unit_rates(self, k, code):
        s = np.asarray(code[0], np.int64)
        big = self.lens.max() + 1.0
        bits = np.where(s < self.lens.size, self.lens[np.minimum(s, self.lens.size - 1)], big)
        return self.lam * bits.sum(axis=1)

    def _symbols(self, codes):
        return np.concatenate([c[0] for c in codes], axis=1).reshape(-1)

    def components(self, codes):
        t = decode_ecsq_values(self._symbols(codes), np.float32(1.0), self.offsets).astype(np.float64)
        return [t.reshape(self.rows, self.cols)], np.array([self.step], np.float32)

    def finish(self, codes, scales=None):
        step = np.float32(scales[0]) if scales is not None else np.float32(self.step)
        if not (np.isfinite(step) and step > 0):
            step = np.float32(self.step)
        params = {"step": step, "offsets": self.offsets}
        return Encoded(params, [self._symbols(codes)], {"step": float(step), "lambda_ratio": self.ratio})

    # ---- rate control ----------------------------------------------------------------------------

    def retune(self, knob, codes, targets, weights):
        step = float(np.float32(math.exp(knob)))
        x = np.ascontiguousarray(targets, np.float64).reshape(-1)
        if self.weighting == "none":
            weights = None
        w = np.ones(x.size) if weights is None else np.tile(np.asarray(weights, np.float64), self.rows)
        sym, rec, lens = ecsq_quantize(x, w, step, self.lam_scale * self.ratio * step * step, iters=self.iters)
        self._set(step, offsets_from_centroids(rec, sym, step), lens)
