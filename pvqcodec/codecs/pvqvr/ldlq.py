"""BlockLDLQ for `pvqvr` (Hessian-aware rounding; pvqcodec/quantize/ldlq_rate.py explains
the rate rule and the rate term).

Blocks of one group per row (width D), with the row scales, the pulse-count table and
the gain width of the data-free encoding fixed. Two ways to round a block (option
`ldlq_pulses`):

- "rd" (default): the pulse count of each group is chosen again, as the data-free
  encoder chooses it (spec 6.5.6, rd.py), but on the fed-forward targets X and in the
  LDL metric: per group the entry of the table minimizing
      s_r^2 sum_c w_c (x_c - g y_c / |y|)^2 + lambda (shape bits + pulse-index bits),
  w_c the LDL diagonal (mean 1), x = X / (s_r sigma). BlockLDLQ moves energy between
  groups (errors of later groups are compensated in earlier ones), so the data-free
  pulse counts no longer match the targets; choosing them again spends the bits where
  the targets need them. The knob of the rate search is log(lambda); trial 0 starts
  from lambda = 2 ln 2 x the data-free encoding's normalized MSE (the high-rate slope
  of D(R), -dD/dR = 2 ln 2 D per weight); between trials the pulse-index code lengths
  and the gain table are redesigned from the last trial's choices (the data-free
  encoder's passes do the same).
- "fixed": each group keeps the data-free pulse count; only its shape and gain follow
  X. The shapes' size is then unchanged, and only the gains' histogram moves the
  coded size (one trial; the result counts only if it fits).

Each group's gain is the stored level nearest to its optimal gain (no rate term: the
gain indices are 4 to 6 percent of the size). Coordinate descent is supported in both
ways (a group may change alone; in "rd" its rate term is `unit_rates`). The gain
table is scaled by a least-squares factor in the H metric after each trial.
"""

import math

import numpy as np

from ...coding import rans
from ...errors import InputError
from ...quantize.ldlq_rate import RateControlledQuantizer, coded_bytes
from .. import Encoded
from ..pvq import decode_pvq_gains, decode_pvq_values, enumeration, gain, groups_per_row, optimal_gains
from ..pvq.search import pvq_search
from . import PVQVRCodec, rate, rd

PULSE_MODES = ("rd", "fixed")


class PVQVRBlockQuantizer(RateControlledQuantizer):
    unit_rows = 1

    def __init__(self, wp, options, free):
        p = free.params
        self.codec = PVQVRCodec()
        self.rows, self.cols = wp.shape
        self.d, self.kv, self.gb = p["group_size"], [int(k) for k in p["k_values"]], p["gain_bits"]
        self.width = self.d
        self.gpr = groups_per_row(self.cols, self.d)
        self.mode = options.get("ldlq_pulses") or "rd"
        if self.mode not in PULSE_MODES:
            raise InputError(f"pvqvr: ldlq_pulses must be one of {', '.join(PULSE_MODES)}, got {self.mode!r}")
        self.scales16 = np.asarray(free.streams[0], np.uint16).view(np.float16)
        self.sigma = float(np.sqrt(np.mean(wp * wp))) if wp.size else 0.0
        scales = self.scales16.astype(np.float32).astype(np.float64)
        self.unit = scales * self.sigma
        self.gw = scales * scales  # normalized squared error times s_r^2 is the real one / sigma^2
        self.free_choice = np.asarray(free.streams[2], np.int64).reshape(self.rows, self.gpr)
        self.target_bytes = math.floor(float(options["bits"]) * self.rows * self.cols) / 8
        self.side_bytes = rate.SizeModel.TRANSFORM_PARAMS_BITS / 8  # counted in pvqvr's rate (rate.py)
        self.model = rate.SizeModel(self.rows, self.cols, self.d, self.kv, self.gb)
        self._set_table(np.asarray(p["gain_table"], np.float32))
        self.pcost = self._pulse_costs(self.free_choice.reshape(-1))
        mse = float(np.mean((wp - self.codec.decode(p, self.rows, self.cols, "float32", free.streams)) ** 2))
        self.lam = 2 * math.log(2) * mse / (self.sigma ** 2) if self.sigma > 0 else 1.0
        self.lam = max(self.lam, 1e-12)

    def _set_table(self, table):
        self.table = np.asarray(table, np.float32)
        self.levels = self.table.astype(np.float64) / self.sigma if self.sigma > 0 else self.table.astype(np.float64)

    def _pulse_costs(self, choice):
        """Bits of each pulse index under the table-mode frequencies of this choice."""
        n_k = len(self.kv)
        if n_k == 1:
            return np.zeros(1)
        f = rans.quantize_frequencies(np.bincount(choice, minlength=n_k).astype(np.int64), rans.DEFAULT_PRECISION)
        return rans.DEFAULT_PRECISION - np.log2(np.maximum(f, 1))

    def _groups(self, X, weight):
        """Normalized groups x (rows x D, zero-padded) and weights (None or rows x D, padding 1)."""
        rows, w = X.shape
        x = np.zeros((rows, self.d))
        live = self.unit > 0
        x[live, :w] = X[live] / self.unit[live, None]
        wt = None
        if weight is not None:
            wt = np.ones((rows, self.d))
            wt[:, :w] = np.asarray(weight, np.float64)[None, :]
        return x, wt

    def _rate_bits(self):
        return self.model.shape_cost + self.pcost

    def quantize(self, k, X, weight=None):
        rows, w = X.shape
        x, wt = self._groups(X, weight)
        if self.mode == "fixed":
            choice = self.free_choice[:, k].copy()
        else:
            c = rd.candidate_stats(x, wt, self.kv)
            _, dist = rd.quantized(c, self.levels, self.kv)
            choice = rd.choose(dist * self.gw[:, None], self._rate_bits(), self.lam)
        kv = np.asarray(self.kv)
        y = np.zeros((rows, self.d), np.int32)
        q = np.zeros(rows, np.int64)
        for j in np.unique(choice):
            kj = int(kv[j])
            sel = np.flatnonzero(choice == j)
            if kj == 0:
                continue
            wj = None if wt is None else wt[sel]
            y[sel] = pvq_search(x[sel], kj, wj)
            gstar = optimal_gains(x[sel], y[sel].astype(np.float64), wj)
            q[sel] = gain.nearest_level(gstar * self.sigma, self.table.astype(np.float64))
        Q = self._values([q], [choice], [y], w)
        return Q, [q, choice, y]

    def _values(self, qs, choices, ys, cols, table=None):
        """The decoder's values (6.5.5) of blocks given as lists of per-block codes."""
        table = self.table if table is None else table
        q = np.stack(qs, axis=1).reshape(-1)
        p = np.stack(choices, axis=1).reshape(-1)
        y = np.stack(ys, axis=1).reshape(-1, self.d)
        rows = self.rows
        gains = decode_pvq_gains(q, table, q.size)
        with np.errstate(divide="ignore", invalid="ignore"):  # K = 0 groups: 0/0, zeroed below
            x = decode_pvq_values(self.scales16.astype(np.float32), gains, y, rows, cols, self.d)
        zero = np.asarray(self.kv)[p] == 0
        if zero.any():
            mask = np.repeat(zero.reshape(rows, -1), self.d, axis=1)[:, :cols]
            x[mask] = np.float32(0.0)
        return np.asarray(x, np.float64)

    def unit_rates(self, k, code):
        return self.lam * self._rate_bits()[np.asarray(code[1], np.int64)]

    def components(self, codes):
        Q = self._values([c[0] for c in codes], [c[1] for c in codes], [c[2] for c in codes], self.cols)
        return [Q], np.array([1.0], np.float32)

    def finish(self, codes, scales=None):
        table = self.table
        if scales is not None and np.isfinite(scales[0]) and scales[0] > 0:
            table = (self.table.astype(np.float64) * float(scales[0])).astype(np.float32)
        q = np.stack([c[0] for c in codes], axis=1).reshape(-1)
        choice = np.stack([c[1] for c in codes], axis=1).reshape(-1)
        y = np.stack([c[2] for c in codes], axis=1).reshape(-1, self.d)
        kv = np.asarray(self.kv)
        k_max = self.kv[-1]
        shapes = np.zeros((q.size, enumeration.n_limbs(self.d, k_max) if k_max else 1), np.uint64)
        for j, kj in enumerate(self.kv):
            idx = np.flatnonzero(choice == j)
            if kj and idx.size:
                shapes[idx, : enumeration.n_limbs(self.d, kj)] = enumeration.encode_indices(y[idx], kj)
        q = np.where(kv[choice] > 0, q, 0)
        params = {"group_size": self.d, "k_values": list(self.kv), "gain_bits": self.gb, "gain_table": table}
        streams = [self.scales16.view(np.uint16), q.astype(np.uint8), choice.astype(np.uint8 if len(self.kv) <= 256
                                                                                        else np.uint16), shapes]
        info = {"group_size": self.d, "gain_bits": self.gb, "k_values": f"{self.kv[0]}..{k_max} ({len(self.kv)})",
                "mean_pulses": round(float(kv[choice].mean()), 2), "ldlq_pulses": self.mode}
        return Encoded(params, streams, info)

    # ---- rate control ----------------------------------------------------------------------------

    def coded_bytes(self, enc):
        return coded_bytes(self.codec, enc, self.rows, self.cols) + self.side_bytes

    def knob(self):
        # one pulse count in the table (small tensors): nothing to choose, the size is fixed
        return None if self.mode == "fixed" or len(self.kv) == 1 else math.log(self.lam)

    def default_slope(self):
        # D ~ 2^-2R and lambda ~ D give dR/dlog(lambda) = -1/(2 ln 2) bit per weight; measured
        # under BlockLDLQ 0.34 to 0.76 of that (real and synthetic layers): half of it
        return -self.rows * self.cols / (32 * math.log(2))

    def retune(self, knob, codes, targets, weights):
        self.lam = math.exp(knob)
        choice = np.stack([c[1] for c in codes], axis=1).reshape(-1)
        self.pcost = self._pulse_costs(choice)
        # The gain table from the last trial's optimal gains (the data-free encoder's design).
        y = np.stack([c[2] for c in codes], axis=1).reshape(-1, self.d)
        x, wt = [], []
        for k in range(self.gpr):
            s, e = k * self.d, min(self.cols, (k + 1) * self.d)
            xk, wk = self._groups(targets[:, s:e], None if weights is None else weights[s:e])
            x.append(xk)
            wt.append(wk)
        x = np.stack(x, axis=1).reshape(-1, self.d)
        wt = None if weights is None else np.stack(wt, axis=1).reshape(-1, self.d)
        live = np.asarray(self.kv)[choice] > 0
        if live.any() and self.gb:
            gstar = optimal_gains(x[live], y[live].astype(np.float64), None if wt is None else wt[live])
            gw = np.repeat(self.gw, self.gpr)[live]
            levels = gain.design_levels("empirical", self.gb, self.d, self.cols, gstar, gw)
            self._set_table((levels * self.sigma).astype(np.float32))
