"""Codec id 3, `lattice`: the E8P lattice codebook of QuIP# with nested refinement stages
(spec codecs/lattice.md, section 6.4).

Each row of the transformed matrix W' is cut into groups of 8 consecutive values (the
last group of a row padded with zeros that the decoder discards). A group is one E8P
codeword (16 bits: an 8-bit pattern index and a sign byte; 2 bits per weight) plus
`stages - 1` refinement labels of 8 bits (3 and 4 bits per weight). Decoded value of
coordinate i, in float32 with each operation rounded (spec 6.4.6):

    v = E8P(codeword)_i * s_1
    v = v + U[l_2]_i * s_2          (stages >= 2)
    v = v + U[l_3]_i * s_3          (stages == 3)
    x = v * r_row                   (only with per-row scales)

The scales s_j are float32 values of the parameter block; U is the stage table
(`stages.STAGE_U`). The encoder (informative) searches the nested code exactly
(stages.py), picks s_1 by minimizing the measured error over a sample of groups
(s_2 = s_1/2, s_3 = s_1/4), then refits all stage scales by least squares.
"""

from __future__ import annotations

import math

import numpy as np
from construct import Bytes, Int8ul, Struct

from ...coding import StreamSpec
from ...errors import InputError, ParamsInvalid
from ...params import parse_exact
from .. import BlockQuantizer, Codec, Encoded, register
from ..rows import decode_row_scales, group_view
from . import e8p
from .e8p import e8p_points
from .stages import STAGE_U, lattice_search, reconstruct_units

GROUP = 8
MAX_STAGES = 3
FLAG_ROW_SCALES = 0x01
RESERVED_FLAGS = 0xFF & ~FLAG_ROW_SCALES
SAMPLE_GROUPS = 8192  # groups on which the scale search measures the error
SCALE_BRACKET = (0.7, 1.5)  # s_1 / RMS searched in this range
SCALE_TOL = 0.004
ROW_SCALE_CV = 0.02  # below this spread of the row RMS values, per-row scales are not tried


def groups_per_row(cols: int) -> int:
    return -(-cols // GROUP)


@register
class LatticeCodec(Codec):
    id = 3
    name = "lattice"
    rates = (2, 3, 4)
    params_struct = Struct(
        "stages" / Int8ul,
        "flags" / Int8ul,
        "scales" / Bytes(lambda ctx: 4 * ctx.stages),
    )

    # ---- format (spec 6.4.1 - 6.4.3) ------------------------------------------------------

    def parse_params(self, raw, rows, cols, dtype):
        p = parse_exact(self.params_struct, raw, "lattice codec")
        k, flags = p["stages"], p["flags"]
        if not 1 <= k <= MAX_STAGES:
            raise ParamsInvalid(f"lattice stages {k} outside 1..{MAX_STAGES}")
        if flags & RESERVED_FLAGS:
            raise ParamsInvalid(f"lattice flags 0x{flags:02x} set reserved bits (0x{RESERVED_FLAGS:02x} must be 0)")
        scales = np.frombuffer(p["scales"], dtype="<f4").astype(np.float32)
        if not np.all(np.isfinite(scales)):
            raise ParamsInvalid(f"lattice stage scale {int(np.flatnonzero(~np.isfinite(scales))[0]) + 1} is not finite")
        return {"stages": k, "row_scales": bool(flags & FLAG_ROW_SCALES), "scales": scales}

    def build_params(self, params):
        scales = np.asarray(params["scales"], "<f4")
        if scales.shape != (params["stages"],):
            raise ValueError("lattice: one scale per stage")
        return self.params_struct.build(
            dict(stages=params["stages"], flags=FLAG_ROW_SCALES if params["row_scales"] else 0,
                 scales=scales.tobytes())
        )

    def streams(self, params, rows, cols, dtype):
        groups = rows * groups_per_row(cols)
        out = [StreamSpec("row_scales", rows, 16)] if params["row_scales"] else []
        out += [StreamSpec("patterns", groups, 8), StreamSpec("signs", groups, 8)]
        out += [StreamSpec(f"stage{j}", groups, 8) for j in range(2, params["stages"] + 1)]
        return out

    def describe(self, params):
        return {
            "name": self.name,
            "stages": params["stages"],
            "code_bits_per_weight": params["stages"] + 1,
            "row_scales": params["row_scales"],
            "scales": [float(s) for s in params["scales"]],
        }

    # ---- decoder (spec 6.4.6) -------------------------------------------------------------

    def decode(self, params, rows, cols, dtype, streams):
        k = params["stages"]
        pos = 0
        row_scales = None
        if params["row_scales"]:
            row_scales = decode_row_scales(streams[0], "lattice")
            pos = 1
        points = e8p_points(streams[pos], streams[pos + 1])
        labels = [streams[pos + 2 + j] for j in range(k - 1)]
        return decode_lattice_values(points, labels, params["scales"], row_scales, rows, cols)

    # ---- encoder ------------------------------------------------------------------------------

    @classmethod
    def add_cli_arguments(cls, group):
        group.add_argument("--lattice-row-scales", choices=["auto", "on", "off"], default="auto",
                           help="lattice: a float16 scale per row (default auto: used where measured to pay)")

    @classmethod
    def options_from_args(cls, args):
        return {"row_scales": args.lattice_row_scales}

    def encode(self, wp, options, weighting=None):
        return encode_lattice(wp, options, weighting)

    def block_quantizer(self, wp, options, free):
        return LatticeBlockQuantizer(wp, free)


# ---- decode arithmetic: the one place in Python ---------------------------------------------------


def decode_lattice_values(points, labels, scales, row_scales, rows, cols) -> np.ndarray:
    """Spec 6.4.6, float32, each operation rounded, in this order:
    v = p * s_1; v = v + U[l_2] * s_2; v = v + U[l_3] * s_3; x = v * r_row."""
    scales = np.asarray(scales, np.float32)
    v = points * scales[0]
    for j, lab in enumerate(labels):
        v = v + STAGE_U[np.asarray(lab, np.int64)] * scales[j + 1]
    gpr = groups_per_row(cols)
    if row_scales is not None:
        v = v * np.repeat(row_scales, gpr)[:, None]
    return v.reshape(rows, gpr * GROUP)[:, :cols]


# ---- encoder (informative) --------------------------------------------------------------------------


def _sse(X, W, recon) -> float:
    d = X - recon
    return float(np.sum(d * d if W is None else W * d * d))


def _golden(f, lo, hi, tol):
    """Minimum of f on [lo, hi] by golden-section search (f is unimodal near its optimum)."""
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return (c, fc) if fc <= fd else (d, fd)


class _Problem:
    """Groups to code. X: (G, 8) targets in the units the stage scales apply to (values
    divided by their row scale); W: per-value weights of the search and the error, or
    None; gw: per-group error weights (the squared row scale), or None; pad: the number
    of padded values at the end of the last group of each row (weight 0), gpr: groups
    per row."""

    def __init__(self, X, W, gw, pad, gpr, groups=None):
        self.X, self.W, self.gw = X, W, gw
        n = X.shape[0]
        if groups is None:
            groups = np.arange(n)
        # groups holding padding, as positions in X (searched with zero weight there)
        self.pad_pos = np.flatnonzero(groups % gpr == gpr - 1) if pad else np.zeros(0, np.int64)
        self.pad = pad
        self.gpr = gpr

    def subset(self, idx):
        return _Problem(self.X[idx], None if self.W is None else self.W[idx],
                        None if self.gw is None else self.gw[idx], self.pad, self.gpr, idx)

    def search(self, k, s):
        cw, lab, over = lattice_search(self.X / s, k, self.W)
        if self.W is None and len(self.pad_pos):
            pw = np.ones((len(self.pad_pos), GROUP))
            pw[:, GROUP - self.pad :] = 0.0
            cw[self.pad_pos], lab[self.pad_pos], over[self.pad_pos] = lattice_search(self.X[self.pad_pos] / s, k, pw)
        return cw, lab, over

    def error_weights(self, g0=0, g1=None):
        """Per-value weights of the squared error for groups g0..g1 (None: all 1)."""
        g1 = self.X.shape[0] if g1 is None else g1
        if self.W is None and not len(self.pad_pos) and self.gw is None:
            return None
        w = np.ones((g1 - g0, GROUP)) if self.W is None else self.W[g0:g1].copy()
        if self.W is None and len(self.pad_pos):
            pp = self.pad_pos[(self.pad_pos >= g0) & (self.pad_pos < g1)] - g0
            w[pp, GROUP - self.pad :] = 0.0
        if self.gw is not None:
            w *= self.gw[g0:g1, None]
        return w

    def error_at(self, k, s):
        cw, lab, _ = self.search(k, s)
        return _sse(self.X, self.error_weights(), s * reconstruct_units(cw, lab))

    def best_scale(self, k, sigma):
        f, err = _golden(lambda f: self.error_at(k, f * sigma), *SCALE_BRACKET, SCALE_TOL)
        return f * sigma, err


def _sample(n: int) -> np.ndarray:
    if n <= SAMPLE_GROUPS:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, SAMPLE_GROUPS).round().astype(np.int64))


REFIT_CHUNK = 1 << 16  # groups per step of the least-squares refit (bounds its memory)


def _refit_scales(prob, cw, lab, s1, k):
    """Least-squares stage scales for fixed codes (float32), if they beat the nested ones.
    The error is the quadratic form xx - 2 s.b + s'As of the normal equations A s = b."""
    A = np.zeros((k, k))
    b = np.zeros(k)
    xx = 0.0
    for g0 in range(0, prob.X.shape[0], REFIT_CHUNK):
        g1 = min(prob.X.shape[0], g0 + REFIT_CHUNK)
        X = prob.X[g0:g1]
        w = prob.error_weights(g0, g1)
        w = np.ones_like(X) if w is None else w
        pat, sgn = e8p.split_codewords(cw[g0:g1])
        comps = [e8p_points(pat, sgn).astype(np.float64)]
        comps += [STAGE_U[lab[g0:g1, j]].astype(np.float64) for j in range(k - 1)]
        wx = w * X
        xx += float(np.sum(wx * X))
        for i in range(k):
            b[i] += float(np.sum(wx * comps[i]))
            for j in range(i, k):
                A[i, j] += float(np.sum(w * comps[i] * comps[j]))
                A[j, i] = A[i, j]
    nested = np.array([s1 * 0.5**j for j in range(k)], np.float32)

    def err(sc):
        sc = sc.astype(np.float64)
        return xx - 2 * sc @ b + sc @ A @ sc

    try:
        ls = np.linalg.solve(A, b).astype(np.float32)
    except np.linalg.LinAlgError:
        return nested
    if not np.all(np.isfinite(ls)):
        return nested
    return ls if err(ls) < err(nested) else nested


def encode_lattice(wp: np.ndarray, options: dict, weighting=None) -> Encoded:
    wp = np.asarray(wp, np.float64)
    rows, cols = wp.shape
    bits = float(options["bits"])
    if bits not in (2.0, 3.0, 4.0):
        raise InputError(f"the lattice codec codes 2, 3 or 4 bits per weight (--bits 2|3|4), got {bits:g}")
    k = int(bits) - 1
    mode = options.get("row_scales") or "auto"
    if mode not in ("auto", "on", "off"):
        raise InputError(f"lattice row scales must be auto, on or off, got {mode!r}")
    gpr = groups_per_row(cols)
    n_groups = rows * gpr
    pad = gpr * GROUP - cols

    W = None
    if weighting is not None:
        w_full = np.broadcast_to(np.asarray(weighting, np.float64), wp.shape)
        if not (np.all(np.isfinite(w_full)) and np.all(w_full >= 0)):
            raise InputError("lattice: weights must be finite and non-negative")
        W = group_view(w_full, GROUP)

    sigma = float(np.sqrt(np.mean(wp * wp))) if wp.size else 0.0
    if not sigma > 0:
        params = {"stages": k, "row_scales": False, "scales": np.zeros(k, np.float32)}
        streams = _streams(None, np.zeros(n_groups, np.uint16), np.zeros((n_groups, k - 1), np.uint8))
        return Encoded(params, streams, {"stages": k, "row_scales": False, "scale": 0.0, "overload": 0.0})

    # Per-row scales r = float16(rms(row) / sigma); a row's values are coded in units of r.
    row_rms = np.sqrt(np.mean(wp * wp, axis=1))
    r16 = np.minimum(row_rms / sigma, 65504.0).astype(np.float16)
    r = r16.astype(np.float64)

    def problem(use_rows: bool) -> _Problem:
        if not use_rows:
            return _Problem(group_view(wp, GROUP), W, None, pad, gpr)
        safe = np.where(r > 0, r, 1.0)
        X = group_view(np.where(r[:, None] > 0, wp / safe[:, None], 0.0), GROUP)
        return _Problem(X, W, np.repeat(r * r, gpr), pad, gpr)

    sample = _sample(n_groups)
    use_rows = mode == "on"
    prob = problem(use_rows)
    s1, err = prob.subset(sample).best_scale(k, sigma)
    if mode == "auto" and rows > 1 and float(np.std(row_rms) / np.mean(row_rms)) > ROW_SCALE_CV:
        with_rows = problem(True)
        s1r, err_r = with_rows.subset(sample).best_scale(k, sigma)
        # 16 bits per row cost 16 / cols bits per weight, worth about 6.02 dB per bit.
        gain_db = 10 * math.log10(err / err_r) if err_r > 0 else float("inf")
        if gain_db > 6.02 * 16 / cols:
            use_rows, s1, prob = True, s1r, with_rows

    s1 = float(np.float32(s1))
    cw, lab, over = prob.search(k, s1)
    scales = _refit_scales(prob, cw, lab, s1, k)
    params = {"stages": k, "row_scales": use_rows, "scales": scales}
    info = {"stages": k, "row_scales": use_rows, "scale": round(s1 / sigma, 4),
            "overload": round(float(over.mean()), 4)}
    return Encoded(params, _streams(r16 if use_rows else None, cw, lab), info)


def _streams(r16, cw, lab) -> list:
    pat, sgn = e8p.split_codewords(cw)
    out = [] if r16 is None else [r16.view(np.uint16)]
    out += [pat, sgn]
    out += [np.ascontiguousarray(lab[:, j], np.uint8) for j in range(lab.shape[1])]
    return out


class LatticeBlockQuantizer(BlockQuantizer):
    """Blocks of one 8-value group per row, with the stage count, row scales and first
    stage scale of a data-free encoding fixed; each block runs the nested search with
    nested stage scales s_1, s_1/2, s_1/4, refit afterwards (`components`)."""

    width = GROUP

    def __init__(self, wp, free: Encoded):
        p = free.params
        self.k, self.use_rows = p["stages"], p["row_scales"]
        s1 = float(np.asarray(p["scales"], np.float32)[0])
        self.nested = np.array([s1 * 0.5**j for j in range(self.k)], np.float32)
        self.r16 = np.asarray(free.streams[0], np.uint16).view(np.float16) if self.use_rows else None
        rows, self.cols = wp.shape
        self.r = self.r16.astype(np.float64) if self.use_rows else np.ones(rows)

    def quantize(self, k, X, weight=None):
        rows, w = X.shape
        x = np.zeros((rows, GROUP))
        live = self.r > 0
        x[live, :w] = X[live] / self.r[live, None]
        W = None
        if weight is not None or w < GROUP:
            W = np.zeros((rows, GROUP))
            W[:, :w] = 1.0 if weight is None else np.asarray(weight, np.float64)[None, :]
        s1 = float(self.nested[0])
        if s1 > 0:
            cw, lab, _ = lattice_search(x / s1, self.k, W)
        else:
            cw, lab, _ = lattice_search(np.zeros_like(x), self.k, W)
        Q = self._values(cw, lab, self.nested, rows)[:, :w]
        return np.asarray(Q, np.float64), [cw, lab]

    def _values(self, cw, lab, scales, rows):
        pat, sgn = e8p.split_codewords(cw)
        labels = [lab[:, j] for j in range(self.k - 1)]
        rs = self.r16.astype(np.float32) if self.use_rows else None
        return decode_lattice_values(e8p_points(pat, sgn), labels, scales, rs, rows, GROUP)

    def _stack(self, codes):
        cw = np.stack([c[0] for c in codes], axis=1).reshape(-1)
        lab = np.stack([c[1] for c in codes], axis=1).reshape(cw.size, self.k - 1)
        return cw, lab

    def components(self, codes):
        cw, lab = self._stack(codes)
        rows = self.r.size
        pat, sgn = e8p.split_codewords(cw)
        parts = [e8p_points(pat, sgn).astype(np.float64)]
        parts += [STAGE_U[lab[:, j]].astype(np.float64) for j in range(self.k - 1)]
        comps = [c.reshape(rows, -1)[:, : self.cols] * self.r[:, None] for c in parts]
        return comps, self.nested

    def finish(self, codes, scales=None):
        cw, lab = self._stack(codes)
        scales = self.nested if scales is None else np.asarray(scales, np.float32)
        params = {"stages": self.k, "row_scales": self.use_rows, "scales": scales}
        info = {"stages": self.k, "row_scales": self.use_rows}
        return Encoded(params, _streams(self.r16 if self.use_rows else None, cw, lab), info)
