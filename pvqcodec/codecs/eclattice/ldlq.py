"""BlockLDLQ for `eclattice` (Hessian-aware rounding; pvqcodec/quantize/ldlq_rate.py
explains the rate rule and the rate term).

Blocks of one group (8 columns) per row, QuIP#'s width for E8. Each group takes the
point of 2 E8 minimizing

    sum_i w_i (y_i - c_i)^2 + lam bits(c),  y = X / half_scale,

the data-free encoder's rule (quantizer.py: nearest point, then descent over the 240
neighbours) with w_i the LDL diagonal of the group's columns (mean 1; 0 on padding) and
the data-free lambda (LAMBDA_RATIO), bits(c) the code length of c's symbols under the
tables. Rate: the knob is log(half_scale). Trial 0 uses the data-free half_scale and the
tables of its points; between trials the tables are re-estimated by the data-free
encoder's Lloyd passes at the new half_scale on the previous trial's targets X, starting
from the last trial's tables (the encoder's warm trials do the same). half_scale is refit
in the H metric after each trial. Coordinate descent is supported (a group may change
alone; its rate term is `unit_rates`).
"""

import math

import numpy as np
from numba import njit

from ...quantize.ldlq_rate import ScaleSearchQuantizer
from . import GROUP, EclatticeCodec, decode_eclattice_points
from .encoder import HALF_SCALE_FLOOR, LAMBDA_RATIO, WARM_ITERS, encoded_from_points, groups_of, target_bits
from .quantizer import point_bits, quantize_groups, quantize_points, tables_from_points


@njit(cache=True)
def _bits_of_points(c, lens):
    out = np.empty(c.shape[0])
    for g in range(c.shape[0]):
        out[g] = point_bits(c[g], lens)
    return out


class EclatticeBlockQuantizer(ScaleSearchQuantizer):
    width = GROUP
    scale_attr = "hs"  # half_scale
    unit_rows = 1

    def __init__(self, wp, options, free):
        self.rows, self.cols = wp.shape
        self.codec = EclatticeCodec()
        self.target_bytes = target_bits(options["bits"]) * self.rows * self.cols / 8
        self.ratio = float(options.get("lambda_ratio", LAMBDA_RATIO))
        self.lam = 4.0 * self.ratio  # per bit, in units of doubled coordinates (the encoder's)
        self.warm = int(options.get("warm_iters", WARM_ITERS))
        self.hs_min = float(np.max(np.abs(wp))) / HALF_SCALE_FLOOR if wp.size else 0.0
        p = free.params
        c = decode_eclattice_points(p, self.rows, self.cols, free.streams)
        self.tables = tables_from_points(c)
        self.hs = float(np.float32(p["half_scale"]))

    def _groups(self, X, weight):
        rows, w = X.shape
        y = np.zeros((rows, GROUP))
        y[:, :w] = X / self.hs
        wt = np.zeros((rows, GROUP))
        wt[:, :w] = 1.0 if weight is None else np.asarray(weight, np.float64)[None, :]
        return y, wt

    def quantize(self, k, X, weight=None):
        rows, w = X.shape
        y, wt = self._groups(X, weight)
        c, _ = quantize_points(y, wt, self.lam, self.tables)
        Q = c[:, :w].astype(np.float32) * np.float32(self.hs)  # the decoder's values (6.8.5)
        return Q.astype(np.float64), [c]

    def unit_rates(self, k, code):
        # lam is per bit in units of (X / half_scale)^2: times half_scale^2 in units of X^2
        return self.lam * self.hs * self.hs * _bits_of_points(np.ascontiguousarray(code[0], np.int64),
                                                              np.ascontiguousarray(self.tables.lens))

    def _points(self, codes):
        return np.stack([c[0] for c in codes], axis=1).reshape(-1, GROUP)

    def components(self, codes):
        c = self._points(codes).astype(np.float32).astype(np.float64)
        return [c.reshape(self.rows, -1)[:, : self.cols]], np.array([self.hs], np.float32)

    def finish(self, codes, scales=None):
        hs = np.float32(scales[0]) if scales is not None else np.float32(self.hs)
        if not (np.isfinite(hs) and hs > 0):
            hs = np.float32(self.hs)
        return encoded_from_points(self._points(codes), hs, self.rows, self.cols,
                                   {"half_scale": float(hs), "lambda_ratio": self.ratio})

    # ---- rate control ----------------------------------------------------------------------------

    def retune(self, knob, codes, targets, weights):
        self.hs = max(float(np.float32(math.exp(knob))), self.hs_min)
        x8, w8 = groups_of(targets, None if weights is None else np.broadcast_to(weights, targets.shape))
        _, self.tables, _ = quantize_groups(x8 / self.hs, w8, self.lam, iters=max(1, self.warm), tables=self.tables)

