"""BlockLDLQ for `ectcq` (Hessian-aware rounding; pvqcodec/quantize/ldlq_rate.py explains
the rate rule, the rate term and forward quantizers).

The trellis state runs along each row from column 0 (6.7.4), so the blocks must be
rounded in column order: the quantizer is `forward`, and BlockLDLQ runs on the
column-reversed problem. Each block of `width` columns continues every row's path from
the state the previous block ended in, with the branch cost w (x - y)^2 + lambda
len_u(s), lambda = ratio * step^2 (the data-free encoder's):

- Per-survivor processing (psp.py, the default): BlockLDLQ hands over the block's LDL
  metric D_k (scaled like the weights, mean diagonal pivot 1), and each survivor path
  carries the feedback its own errors give the block's later columns (scalar LDLQ inside
  the block, one history per trellis state), priced with D_k's pivots. Without it
  (`ldlq_psp` False) the block's columns get no feedback from each other and are priced
  with D_k's diagonal (viterbi.py's search).
- Lookahead: committing a block's best path would end it in the state best for the
  block alone; the search runs on over the next `lookahead` columns' current targets
  (BlockLDLQ hands them over with the feedback of every finished block, not yet this
  block's) and commits only the block's part of the path.

Block 64 + lookahead 64 with per-survivor processing measured best (bench/RESULTS.md):
wider blocks commit less often and, with the feedback kept per survivor, lose nothing
inside the block; the work per column grows with the width (states x width feedback
updates).

Rate: the knob is log(step). Each trial rounds with the tables (centroids, code lengths)
that the data-free encoder's Lloyd passes but the last give at the trial's step (from
the grid, so that the size depends on the step, not on the history): trial 0 on W', each
later one on the previous trial's fed-forward targets X. The BlockLDLQ pass takes the
place of the last Lloyd pass (with H = I and one block per row it is exactly that pass).
The step is refit in the H metric after each trial. Coordinate descent is not
supported: re-quantizing one block alone would have to end in the state the next block
starts from (a path that reconnects), which the Viterbi with a free end does not
guarantee.
"""

import math

import numpy as np

from ...quantize.ldlq_rate import ScaleSearchQuantizer
from .. import Encoded
from ..ecsq import decode_ecsq_values
from . import EctcqCodec
from .encoder import LAMBDA_RATIO, PASSES, encoded_from_grid, target_bits
from .quantizer import EctcqTables, ectcq_lloyd, table_size
from .psp import psp_block
from .viterbi import JMAX, viterbi_rows, walk_states

LDLQ_WIDTH = 64  # with per-survivor feedback, wider blocks commit less and lose nothing (RESULTS.md)
LOOKAHEAD = 64
PSP = True


class EctcqBlockQuantizer(ScaleSearchQuantizer):
    forward = True
    supports_passes = False
    unit_rows = 1

    def __init__(self, wp, options, free: Encoded):
        self.wp = np.asarray(wp, np.float64)
        self.rows, self.cols = wp.shape
        self.codec = EctcqCodec()
        self.width = int(options.get("ldlq_width", LDLQ_WIDTH))
        self.lookahead = int(options.get("ldlq_lookahead", LOOKAHEAD))
        # per-survivor processing of the block's own feedback (psp.py) when BlockLDLQ gives D_k
        self.wants_metric = bool(options.get("ldlq_psp", PSP))
        self.target_bytes = target_bits(options["bits"]) * self.rows * self.cols / 8
        self.ratio = float(options.get("lambda_ratio") or LAMBDA_RATIO)
        p = free.params
        self.v = int(p["state_bits"])
        self.passes = int(options.get("passes") or PASSES)
        self._set(self._lloyd(self.wp, None, float(np.float32(p["step"]))))
        self.states = np.zeros(self.rows, np.int64)

    def _lloyd(self, x, weights, step):
        """The tables the data-free encoder's last pass searches with: its Lloyd passes
        but the last, from the grid, at this step, on the values x (weights per column)."""
        step = max(float(np.float32(step)), float(np.max(np.abs(x))) / (JMAX - 4))
        w = np.ones_like(x) if weights is None else np.broadcast_to(np.asarray(weights, np.float64), x.shape)
        _, tables = ectcq_lloyd(x, w, step, self.ratio * step * step, self.v, max(1, self.passes - 1))
        return tables

    def _set(self, tables: EctcqTables):
        self.tables = tables
        self.step = float(np.float32(tables.step))
        self.lam = self.ratio * self.step * self.step
        self.offsets = tables.offsets(tables.rec.size - 1)

    def _cover(self, x):
        """Grow the tables (new magnitudes: the grid, offset 0) to cover values x."""
        need = table_size(x, self.step)
        if need > self.tables.rec.size:
            self._set(self.tables.at_step(self.step, need))

    def _values(self, j):
        jj = np.asarray(j, np.int64)
        zz = np.where(jj > 0, 2 * jj - 1, -2 * jj)
        return decode_ecsq_values(zz, self.step, self.offsets).astype(np.float64)

    def quantize(self, k, X, weight=None, ahead=None, metric=None):
        """ahead: (targets, weights) of the next columns (BlockLDLQ's lookahead), or None:
        then the next columns of W' stand in for them."""
        rows, w = X.shape
        if k == 0:
            self.states = np.zeros(rows, np.int64)  # each row's path starts in state 0 (6.7.4)
        s = k * self.width
        if ahead is None:
            la = min(self.lookahead, self.cols - s - w)
            xa, wa = self.wp[:, s + w : s + w + la], None
        else:
            xa, wa = ahead
        x = np.concatenate([X, xa], axis=1) if xa.shape[1] else np.asarray(X, np.float64)
        wt = np.ones(x.shape[1])
        if weight is not None:
            wt[:w] = weight
        if wa is not None:
            wt[w:] = wa
        self._cover(x)
        if metric is not None and self.wants_metric:
            j = psp_block(X, metric, x[:, w:], wt[w:], self.step, self.tables.rec, self.tables.lens, self.lam,
                          self.v, self.states, JMAX)
        else:
            j, _, _ = viterbi_rows(x, np.broadcast_to(wt, x.shape), self.step, self.tables.rec, self.tables.lens,
                                   self.lam, self.v, self.states)
            j = np.ascontiguousarray(j[:, :w])
        self.states = _advance(j, self.states, self.v)
        return self._values(j), [j]

    def _grid(self, codes):
        return np.concatenate([c[0] for c in codes], axis=1)

    def components(self, codes):
        t = self._values(self._grid(codes)) / self.step
        return [t], np.array([self.step], np.float32)

    def finish(self, codes, scales=None):
        step = np.float32(scales[0]) if scales is not None else np.float32(self.step)
        if not (np.isfinite(step) and step > 0):
            step = np.float32(self.step)
        j = self._grid(codes)
        return encoded_from_grid(j, step, self.tables, self.v, {"step": float(step), "states": 1 << self.v,
                                                                "lambda_ratio": self.ratio})

    # ---- rate control ----------------------------------------------------------------------------

    def retune(self, knob, codes, targets, weights):
        self._set(self._lloyd(targets, weights, math.exp(knob)))


def _advance(j, states, v):
    """Each row's state after its grid indices j (rows, w) from `states`."""
    return walk_states(j, v, states)
