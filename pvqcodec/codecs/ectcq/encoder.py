"""The reference encoder of the ectcq codec (informative, spec codecs/ectcq.md 6.7.7).

Building blocks (also for Hessian-aware rounding, which quantizes with the step and
tables fixed):
- quantizer.ectcq_lloyd / viterbi.viterbi_rows: grid indices of rows at a fixed step,
  lambda, tables and per-value weights (viterbi_rows takes start states too);
- quantizer.update_tables: centroids and code lengths from chosen grid indices (with
  lam, the offsets cut where they stop paying for themselves);
- encoded_from_grid: the Encoded tensor (parameters and the three streams) of a matrix
  of grid indices that is a trellis path in every row;
- coded_size: its bytes as the reference encoder writes them.

Rate control: lambda = LAMBDA_RATIO * step^2, and the step searched by the secant method
on log(step) until the coded size is within RATE_TOL under the target. Large tensors
search first on a subsample of rows (every k-th row, about SEARCH_VALUES values), then
correct the step on the whole tensor.
"""

import math

import numpy as np

from ...errors import InputError
from .. import Encoded
from ..coded_rate import target_bits as coded_target_bits
from .quantizer import EctcqTables, ectcq_lloyd
from .trellis import STATE_BITS, union_symbol
from .viterbi import JMAX, walk_states

DEFAULT_STATE_BITS = 8  # 256 states: 0.19 dB from D(R) against 0.43 dB with 8 (bench/RESULTS.md)
LAMBDA_RATIO = 0.10
PASSES = 2  # Lloyd passes per trial, from the grid (more move the rate at a step, not the error at a rate)
RATE_TOL = 0.0005  # the search stops at a size within 0.05 percent below the target (0.066 at 2 bits needs it)
SUBSAMPLE_TOL = 0.003  # the subsample search only brings the step near
MAX_SEARCH = 12
MAX_STEP_LOG = math.log(2.0)  # the search's largest step: twice the predicted one
SEARCH_VALUES = 1 << 20  # the subsample a large tensor's first search runs on
STEP_RMS = 2.24  # step / RMS at R bits is about 2.24 * 2^-R (N(0, 1), 2 bits, 256 states)


def target_bits(bits) -> float:
    return coded_target_bits("ectcq", bits)


def state_bits_option(options) -> int:
    v = options.get("state_bits")
    v = DEFAULT_STATE_BITS if v is None else int(v)
    if v not in STATE_BITS:
        raise InputError(f"ectcq state bits must be in {STATE_BITS.start}..{STATE_BITS.stop - 1} (8 to 256 states), got {v}")
    return v


def encoded_from_grid(j, step, tables: EctcqTables, v: int, info=None) -> Encoded:
    """The Encoded tensor of grid indices j (rows x cols), each row a trellis path from
    state 0 (ValueError otherwise), with the tables' reconstruction values as offsets."""
    j = np.asarray(j)
    rows, cols = j.shape
    walk_states(j, v)
    jj = j.astype(np.int64, copy=False)
    if jj.size and int(np.max(np.abs(jj))) > JMAX:
        raise ValueError(f"a grid index beyond +-{JMAX}")
    even = (jj & 1) == 0
    sym = union_symbol(jj).astype(np.uint16)
    a0 = sym[even]
    a1 = sym[~even]
    mmax = int(np.max(np.abs(jj))) if jj.size else 0
    offsets = tables.offsets(mmax)
    n = offsets.size  # magnitudes above n share offsets[n - 1] (6.7.1): drop a repeated tail
    while n > 1 and offsets[n - 1] == offsets[n - 2]:
        n -= 1
    if n == 1 and offsets[0] == 0:
        n = 0
    params = {"step": np.float32(step), "state_bits": int(v), "a0_count": int(a0.size), "offsets": offsets[:n]}
    row_a0 = even.sum(axis=1).astype(np.uint32 if cols < 1 << 32 else np.uint64)
    return Encoded(params, [row_a0, a0, a1], dict(info or {}))


def coded_size(enc: Encoded, rows: int, cols: int) -> int:
    """Bytes of the tensor's parameter block and payloads as the reference encoder writes
    them (coding policy `auto`, the codec's rans chunk size)."""
    from dataclasses import replace

    from ...coding.select import code_stream
    from .. import codec_by_name

    codec = codec_by_name("ectcq")
    params = codec.parse_params(codec.build_params(enc.params), rows, cols, "float32")
    size = len(codec.build_params(enc.params))
    for position, (sym, spec) in enumerate(zip(enc.streams, codec.streams(params, rows, cols, "float32"))):
        spec = replace(spec, bounds=codec.stream_bounds(params, rows, cols, "float32", position, enc.streams[:position]))
        size += code_stream(sym, spec, "auto", codec.rans_chunk_symbols).payload.size
    return size


def zero_encoding(rows: int, cols: int, v: int) -> Encoded:
    """An all-zero matrix: j = 0 everywhere, a path that never leaves state 0 (next(0, 0) = 0
    in every trellis), so every value is in union A_0 and decodes to +0.0."""
    tables = EctcqTables(1.0, np.zeros(1), np.zeros((2, 1)))
    return encoded_from_grid(np.zeros((rows, cols), np.int32), 1.0, tables, v, {"step": 1.0, "coded_bits": None})


def _search(x, w, bits, v, ratio, passes, ls, ls_min, ls_max, slope, tol):
    """Secant search on log(step) for a coded size in [(1 - tol) target, target].
    Every trial runs the same passes from the grid, so the size is a function of the
    step alone. Returns the trials (log step, size, Encoded), in order."""
    rows, cols = x.shape
    target = bits * x.size / 8
    aim = target * (1 - tol / 2)
    tried = []
    for _ in range(MAX_SEARCH):
        # the Viterbi works with the stored float32 step (at least the smallest positive float32)
        step = max(float(np.float32(math.exp(ls))), float(np.finfo(np.float32).smallest_subnormal))
        j, tables = ectcq_lloyd(x, w, step, ratio * step * step, v, passes)
        enc = encoded_from_grid(j, step, tables, v)
        size = coded_size(enc, rows, cols)
        tried.append((math.log(step), size, enc))
        if (1 - tol) * target <= size <= target:
            break
        if len(tried) > 1:
            (l0, z0, _), (l1, z1, _) = tried[-2], tried[-1]
            if l1 != l0 and (z1 - z0) / (l1 - l0) < 0:
                slope = (z1 - z0) / (l1 - l0)
        ls = min(ls_max, max(ls_min, math.log(step) + max(-1.0, min(1.0, (aim - size) / slope))))
        if any(abs(ls - t[0]) < 1e-6 for t in tried):  # held at a bound of the search
            break
    return tried, slope


def _best(tried, target):
    """The largest size within the target, else the first trial (the predicted step)."""
    fits = [t for t in tried if t[1] <= target]
    return max(fits, key=lambda t: (t[1], -t[0])) if fits else tried[0]


def _subsample_rows(rows: int, cols: int) -> np.ndarray:
    """Every k-th row, about SEARCH_VALUES values (None: the whole tensor is small)."""
    k = (rows * cols) // SEARCH_VALUES
    if k < 2:
        return None
    return np.arange(0, rows, k)


def encode_ectcq(wp, options, weighting=None) -> Encoded:
    """Options: bits (coded bits per weight, everything counted), state_bits (3..8, default
    8); for experiments lambda_ratio (lambda / step^2) and passes (Lloyd passes per trial)."""
    wp = np.asarray(wp, np.float64)
    rows, cols = wp.shape
    bits = target_bits(options["bits"])
    v = state_bits_option(options)
    ratio = float(options.get("lambda_ratio") or LAMBDA_RATIO)
    passes = int(options.get("passes") or PASSES)
    if weighting is None:
        w = np.ones_like(wp)
    else:
        w = np.ascontiguousarray(np.broadcast_to(np.asarray(weighting, np.float64), wp.shape))
        if not np.all(np.isfinite(w) & (w >= 0)):
            raise InputError("ectcq: the weighting must be finite and non-negative")
    rms = math.sqrt(float(np.mean(wp * wp))) if wp.size else 0.0
    if rms == 0.0:
        return zero_encoding(rows, cols, v)
    n = wp.size
    ls = math.log(rms * STEP_RMS * 2.0 ** -bits)
    # the candidates of every subset stay within |j| <= JMAX above this step (viterbi.py)
    ls_min = math.log(float(np.max(np.abs(wp))) / (JMAX - 4))
    ls = max(ls, ls_min)
    # A tensor too small for its target (a rans payload takes at least 152 bytes: header,
    # chunk offset, lane states) would reach it only with a step that rounds nearly everything to 0: the
    # search stays below twice the step the target predicts, and such a tensor keeps that step.
    ls_max = ls + MAX_STEP_LOG
    # the size falls by about n/8 bytes per doubling of the step (the secant refines it)
    slope = -n / 8 / math.log(2)
    sub = _subsample_rows(rows, cols)
    trials = 0
    if sub is not None:
        xs, ws = wp[sub], w[sub]
        tried, slope = _search(xs, ws, bits, v, ratio, passes, ls, ls_min, ls_max, -xs.size / 8 / math.log(2),
                                SUBSAMPLE_TOL)
        trials += len(tried)
        ls = _best(tried, bits * xs.size / 8)[0]
        slope *= n / xs.size
    tried, _ = _search(wp, w, bits, v, ratio, passes, ls, ls_min, ls_max, slope, RATE_TOL)
    trials += len(tried)
    _, size, enc = _best(tried, bits * n / 8)
    enc.info.update({"step": float(enc.params["step"]), "states": 1 << v, "coded_bits": 8 * size / n,
                     "lambda_ratio": ratio, "trials": trials})
    return enc
