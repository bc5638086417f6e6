"""BlockLDLQ: Hessian-aware rounding with the error fed forward (QuIP, QuIP#, QTIP).

Goal: codes Q for the transformed matrix W' (rows x n) that make the proxy loss
tr(E H E^T), E = W' - Q, small, H the layer's input second moment in the same domain.

Factorization. With the damped H = C C^T (Cholesky, C lower triangular) and blocks of g
columns, L = C blockdiag(C_kk)^-1 is unit block-lower-triangular and D = blockdiag(C_kk
C_kk^T), so H = L D L^T. Then, with (E L)_k = E_k + sum_{j>k} E_j L_jk,

    tr(E H E^T) = sum_k (E L)_k D_k (E L)_k^T.

Rounding last block first, X_k = W_k + sum_{j>k} E_j L_jk and Q_k = quantize(X_k) make
(E L)_k = X_k - Q_k: each block's term is just its own rounding error in the metric D_k,
and the errors of later blocks are compensated through X_k (QuIP#'s order). With a
block-diagonal H, L = I and this is plain rounding in each block's metric.

Block coordinate descent (QuIP#'s code runs 10 passes; its paper does not describe them):
with every other block fixed, tr(E H E^T) = (Q_k - X*_k) H_kk (Q_k - X*_k)^T + const per
row, X*_k = Q_k + E H[:, k] H_kk^-1. A pass re-quantizes each block towards X*_k and keeps
the new codes of a row unit (a row; a 16-row tile row for the trellis) only where that
term drops, so the loss never rises.

Both loops update lazily (GPTQ's trick): the feedback of a super-block of about
SUPER columns reaches the columns before it in one matrix product, so memory traffic is
O(n / SUPER) passes over E instead of O(n / g).

The entropy-coded codecs (ecsq, pvqvr, ectcq, eclattice) add a rate rule, a rate term
and, for ECTCQ's row-long trellis, column order: ldlq_rate.py.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import InputError
from .proxy import HessianInvalid, check_hessian, proxy_error

SUPER = 128  # columns per lazy-update super-block (rounded up to a multiple of the block width)
DEFAULT_DAMP = 0.01
MAX_DAMP_TRIES = 8  # each retry multiplies the damping by 10


class FactorizationFailed(HessianInvalid):
    """H is not positive definite even with the largest damping tried."""


def rotate_hessian(H: np.ndarray, transform, tparams: dict) -> np.ndarray:
    """H' = B H B^T for the transform's input side B (the columns of W' = A W B^T)."""
    if transform.name == "identity":
        return H
    if transform.name == "rht":
        from ..transforms import rht

        b, seed = tparams["col_block"], tparams["seed"]
        Hp = rht.forward_axis(H, 0, b, seed, 1)
        Hp = rht.forward_axis(Hp, 1, b, seed, 1)
        return (Hp + Hp.T) / 2
    raise InputError(f"Hessian-aware rounding does not know the {transform.name} transform")


def blocks_of(n: int, g: int, end_aligned: bool = False) -> list:
    """Column ranges of blocks of g: the narrower block (when g does not divide n) last,
    or first with end_aligned (the column-reversed problem of a forward quantizer)."""
    if not end_aligned:
        return [(s, min(n, s + g)) for s in range(0, n, g)]
    r = n % g
    return ([(0, r)] if r else []) + [(s, s + g) for s in range(r, n, g)]


def _super_blocks(blk: list, g: int) -> list:
    """Runs of consecutive blocks of about SUPER columns, as (first, last + 1) block indices."""
    per = max(1, SUPER // g)
    return [(i, min(len(blk), i + per)) for i in range(0, len(blk), per)]


def damped_cholesky(H: np.ndarray, damp: float, name: str = "?"):
    """Cholesky factor of H / mean(diag H) + d I, d = damp first, then 10x more per failure
    (a failure means H is numerically not positive definite). Returns (C, Hd, d used, tries)."""
    n = H.shape[0]
    mean = float(np.mean(np.diagonal(H)))
    if not mean > 0:
        raise HessianInvalid(f"tensor {name!r}: H has no positive diagonal entry")
    Hn = H / mean
    d = float(damp)
    for tries in range(1, MAX_DAMP_TRIES + 1):
        Hd = Hn + d * np.eye(n)
        try:
            return np.linalg.cholesky(Hd), Hd, d, tries
        except np.linalg.LinAlgError:
            d = max(d * 10.0, 1e-6)
    raise FactorizationFailed(f"tensor {name!r}: H is not positive definite even with damping {d / 10:g} "
                              f"(times its mean diagonal); the H file is likely damaged")


def block_ldl(C: np.ndarray, g: int, overwrite: bool = False, blocks: list = None):
    """(L, Ddiag, Dblocks) of H = C C^T: L unit block-lower-triangular in blocks of g
    (or the given column ranges), Ddiag the diagonal of D = blockdiag(C_kk C_kk^T), Dblocks
    the list of D_k. With overwrite, L takes C's memory (block k of L needs only block k of C)."""
    n = C.shape[0]
    L = C if overwrite else np.empty_like(C)
    Dblocks = []
    for s, e in blocks or blocks_of(n, g):
        Ckk = C[s:e, s:e].copy()
        # L[:, k] = C[:, k] C_kk^-1: solve C_kk^T Z^T = C[:, k]^T
        L[:, s:e] = np.linalg.solve(Ckk.T, C[:, s:e].T).T
        Dblocks.append(Ckk @ Ckk.T)
    ddiag = np.concatenate([np.diagonal(D) for D in Dblocks])
    return L, ddiag, Dblocks


def _select(old, new, keep_new):
    """Per row unit: the new code where keep_new, else the old one."""
    out = []
    for a, b in zip(old, new):
        m = keep_new.reshape((-1,) + (1,) * (a.ndim - 1))
        out.append(np.where(m, b, a))
    return out


def _unit_mask(row_better: np.ndarray, unit_rows: int, rows: int, unit_extra=None) -> np.ndarray:
    """Which row units gain: sum over the unit's rows of (old - new) term, plus unit_extra
    (per unit: old - new rate term), > 0."""
    units = -(-rows // unit_rows)
    pad = np.zeros(units * unit_rows)
    pad[:rows] = row_better
    gain = pad.reshape(units, unit_rows).sum(1)
    if unit_extra is not None:
        gain = gain + unit_extra
    return gain > 0


def _unit_rows_mask(unit_mask: np.ndarray, unit_rows: int, rows: int) -> np.ndarray:
    return np.repeat(unit_mask, unit_rows)[:rows]


def block_ldlq(W: np.ndarray, L: np.ndarray, quantizer, weights=None, progress=None, blocks: list = None,
               targets: np.ndarray = None, metrics: list = None):
    """BlockLDLQ of W (rows x n) with unit block-lower-triangular L in blocks of
    quantizer.width (or the given column ranges). weights: None or a per-column positive
    vector (n,) passed to the block quantizer (e.g. the diagonal of D). targets: None, or
    an array like W that receives the fed-forward values X each block was rounded towards.
    A quantizer with `lookahead` > 0 also gets `ahead=(Xa, wa)`: the current targets and
    weights of the (up to) `lookahead` columns rounded next, i.e. those before the block.
    A quantizer with `wants_metric` gets `metric=metrics[k]`, the block's D_k.
    Returns (Q, codes)."""
    rows, n = W.shape
    g = quantizer.width
    blk = blocks or blocks_of(n, g)
    ahead = int(getattr(quantizer, "lookahead", 0) or 0)
    with_metric = metrics is not None and getattr(quantizer, "wants_metric", False)
    Q = np.zeros_like(W)
    E = np.zeros_like(W)
    U = np.zeros_like(W)  # feedback from finished super-blocks
    codes = [None] * len(blk)
    for i0, i1 in reversed(_super_blocks(blk, g)):
        c0, c1 = blk[i0][0], blk[i1 - 1][1]
        for k in range(i1 - 1, i0 - 1, -1):
            s, e = blk[k]
            X = W[:, s:e] + U[:, s:e]
            if e < c1:
                X = X + E[:, e:c1] @ L[e:c1, s:e]
            if targets is not None:
                targets[:, s:e] = X
            wk = None if weights is None else weights[s:e]
            kw = {"metric": metrics[k]} if with_metric else {}
            if ahead and s > 0:
                # A quantizer with a lookahead also sees the targets of the next `ahead`
                # columns to be rounded, with every finished block's feedback (not yet this one's).
                a0 = max(0, s - ahead)
                Xa = W[:, a0:s] + U[:, a0:s]
                if e < c1:
                    Xa = Xa + E[:, e:c1] @ L[e:c1, a0:s]
                kw["ahead"] = (Xa, None if weights is None else weights[a0:s])
            Qk, codes[k] = quantizer.quantize(k, X, wk, **kw)
            Q[:, s:e] = Qk
            E[:, s:e] = W[:, s:e] - Qk
            if progress:
                progress(e - s)
        if c0:
            U[:, :c0] += E[:, c0:c1] @ L[c0:c1, :c0]
    return Q, codes


def coordinate_descent(W, Q, codes, Hd, quantizer, passes: int, weighted: bool, blocks: list = None):
    """`passes` passes of block coordinate descent on tr(E Hd E^T) (never increasing it).
    A quantizer with a rate term (`unit_rates`) keeps new codes only where distortion plus
    rate falls, so the Lagrangian never rises instead. Returns (Q, codes, per-pass
    relative decrease of the proxy)."""
    rows, n = W.shape
    g = quantizer.width
    blk = blocks or blocks_of(n, g)
    unit_rates = getattr(quantizer, "unit_rates", None)
    E = W - Q
    inv = [np.linalg.inv(Hd[s:e, s:e]) for s, e in blk]
    history = []
    for _ in range(passes):
        before = proxy_error(E, Hd)
        changed = 0
        for i0, i1 in reversed(_super_blocks(blk, g)):
            c0, c1 = blk[i0][0], blk[i1 - 1][1]
            P = E @ Hd[:, c0:c1]
            for k in range(i1 - 1, i0 - 1, -1):
                s, e = blk[k]
                Hkk = Hd[s:e, s:e]
                Xs = Q[:, s:e] + P[:, s - c0 : e - c0] @ inv[k]
                w = np.diagonal(Hkk).copy() if weighted else None
                Qn, cn = quantizer.quantize(k, Xs, w)
                dn, do = Qn - Xs, Q[:, s:e] - Xs
                gain = np.einsum("rc,rc->r", do @ Hkk, do) - np.einsum("rc,rc->r", dn @ Hkk, dn)
                extra = None if unit_rates is None else unit_rates(k, codes[k]) - unit_rates(k, cn)
                keep = _unit_mask(gain, quantizer.unit_rows, rows, extra)
                if not keep.any():
                    continue
                rmask = _unit_rows_mask(keep, quantizer.unit_rows, rows)
                codes[k] = _select(codes[k], cn, keep)
                Qk = np.where(rmask[:, None], Qn, Q[:, s:e])
                dE = Q[:, s:e] - Qk  # E = W - Q
                Q[:, s:e] = Qk
                E[:, s:e] += dE
                P += dE @ Hd[s:e, c0:c1]
                changed += int(keep.sum())
        after = proxy_error(E, Hd)
        history.append(1.0 - after / before if before > 0 else 0.0)
        if not changed:
            break
    return Q, codes, history


def refit_scales(W, H, quantizer, codes):
    """Least-squares refit, in the H metric, of the codec's global scales for fixed codes
    (the proxy is quadratic in them). Returns the scales to store (the current ones if
    the refit does not lower the proxy), or None for a codec without such scales."""
    got = quantizer.components(codes)
    if got is None:
        return None
    comps, current = got
    m = len(comps)
    CH = [C @ H for C in comps]
    A = np.array([[float(np.einsum("rc,rc->", CH[i], comps[j])) for j in range(m)] for i in range(m)])
    WH = W @ H
    b = np.array([float(np.einsum("rc,rc->", WH, C)) for C in comps])
    ww = float(np.einsum("rc,rc->", WH, W))

    def loss(s):
        s = np.asarray(s, np.float32).astype(np.float64)
        return ww - 2 * s @ b + s @ A @ s

    current = np.asarray(current, np.float32)
    try:
        ls = np.linalg.solve(A, b).astype(np.float32)
    except np.linalg.LinAlgError:
        return current
    if not np.all(np.isfinite(ls)):
        return current
    return ls if loss(ls) < loss(current) else current


def decoded(codec, enc, rows, cols, dtype="float32") -> np.ndarray:
    """The decoder's float32 values of an Encoded (in the transformed domain), as float64."""
    from ..coding import CODINGS_BY_NAME

    raw = CODINGS_BY_NAME["raw"]
    specs = codec.streams(enc.params, rows, cols, dtype)
    params = codec.parse_params(codec.build_params(enc.params), rows, cols, dtype)
    streams = [raw.decode(raw.encode(s, spec), spec) for s, spec in zip(enc.streams, specs)]
    return np.asarray(codec.decode(params, rows, cols, dtype, streams), np.float64)


def encode_with_hessian(codec, wp: np.ndarray, options: dict, Hp: np.ndarray, *, name: str = "?",
                        damp: float = DEFAULT_DAMP, passes: int = 0, weighted: bool = False, dtype="float32",
                        cache: dict = None):
    """Hessian-aware encoding of the transformed matrix wp with the transformed, checked H'
    (cols x cols). The codec first chooses its parameters from wp alone (its data-free
    encoder, whose result is also the baseline); BlockLDLQ (and `passes` of coordinate
    descent) then rounds with them fixed, and the global scales are refit in the H
    metric. Keeps whichever of the two results has the lower proxy loss.

    Entropy-coded codecs (a RateControlledQuantizer, ldlq_rate.py) run BlockLDLQ as
    trials of a search that meets the data-free encoding's rate rule, round each block
    in the LDL metric with their rate term, and may ask for column order (`forward`).

    Returns (Encoded, info): info has proxy_free and proxy_ldlq (relative proxy losses),
    chosen ("ldlq" or "free"), damp (the damping that factorized), damp_tries, cd_gain,
    and for rate-controlled codecs trials, bytes_free, bytes_ldlq and bytes_target.
    cache: a dict kept between calls with the same Hp (the factorization is reused)."""
    from .ldlq_rate import MAX_TRIALS, RateControlledQuantizer, ReversedColumns, best_fit, next_knob

    rows, cols = wp.shape
    t0 = time.perf_counter()
    free = codec.encode(wp, options)
    t_free = time.perf_counter() - t0
    energy = proxy_error(wp, Hp)
    if not np.any(wp):  # nothing to round: the data-free encoding is exact
        return free, {"proxy_free": 0.0, "proxy_ldlq": 0.0, "chosen": "free", "damp": damp, "damp_tries": 0,
                      "cd_passes": 0, "cd_gain": 0.0, "seconds_free": t_free, "seconds_ldlq": 0.0}
    quantizer = codec.block_quantizer(wp, options, free)
    if quantizer is None:
        raise InputError(f"the {codec.name} codec has no Hessian-aware rounding")
    Q_free = decoded(codec, free, rows, cols, dtype)
    p_free = proxy_error(wp - Q_free, Hp)

    forward = bool(getattr(quantizer, "forward", False))
    if not getattr(quantizer, "supports_passes", True):
        passes = 0
    weighted = weighted or bool(getattr(quantizer, "needs_weights", False))
    rated = isinstance(quantizer, RateControlledQuantizer)
    blocks = blocks_of(cols, quantizer.width, end_aligned=forward)
    # A forward quantizer rounds columns 0, 1, ...: run BlockLDLQ (last block first) on the
    # column-reversed problem, whose last block is the original first one.
    runner = ReversedColumns(quantizer, cols) if forward else quantizer
    Wr = np.ascontiguousarray(wp[:, ::-1]) if forward else wp

    key = (quantizer.width, damp, forward)
    if cache is not None and key in cache:
        L, ddiag, Dblocks, Hd, d_used, tries = cache[key]
    else:
        Hr = np.ascontiguousarray(Hp[::-1, ::-1]) if forward else Hp
        C, Hd, d_used, tries = damped_cholesky(Hr, damp, name)
        L, ddiag, Dblocks = block_ldl(C, quantizer.width, overwrite=True, blocks=blocks)
        del C
        if cache is not None:
            cache[key] = (L, ddiag, Dblocks, Hd, d_used, tries)
    weights = ddiag if weighted else None
    Hcd = Hd
    if rated:
        # The rate term's lambda keeps its data-free meaning for the average column: the
        # metric is scaled so that the LDL diagonal has mean 1 (ldlq_rate.py).
        m = float(np.mean(ddiag))
        weights, Hcd = ddiag / m, Hd / m
        Dblocks = [D / m for D in Dblocks]

    trials = []  # (knob, coded bytes, Encoded, cd history)
    while True:
        targets = np.empty_like(Wr) if rated else None
        Q, codes = block_ldlq(Wr, L, runner, weights, blocks=blocks, targets=targets, metrics=Dblocks)
        history = []
        if passes > 0:
            Q, codes, history = coordinate_descent(Wr, Q, codes, Hcd, runner, passes, weighted, blocks)
        if forward:
            codes = runner.original_codes(codes)
        scales = refit_scales(wp, Hp, quantizer, codes)
        enc = quantizer.finish(codes, scales)
        if not rated:
            trials.append((None, None, enc, history))
            break
        knob = quantizer.knob()
        trials.append((knob, quantizer.coded_bytes(enc), enc, history))
        if knob is None:
            break
        nxt = next_knob([(k, z) for k, z, _, _ in trials], quantizer.target_bytes, quantizer.default_slope())
        if len(trials) >= quantizer.min_trials and (nxt is None or len(trials) >= MAX_TRIALS):
            break
        if nxt is None:
            nxt = knob
        if forward:
            targets, w_orig = targets[:, ::-1], None if weights is None else weights[::-1]
        else:
            w_orig = weights
        quantizer.retune(nxt, codes, targets, w_orig)

    pick = best_fit([(k, z) for k, z, _, _ in trials], quantizer.target_bytes) if rated else 0
    info = {"damp": d_used, "damp_tries": tries}
    if rated:
        info.update(trials=len(trials), trial_bytes=[int(z) for _, z, _, _ in trials],
                    trial_knobs=[None if k is None else round(k, 4) for k, _, _, _ in trials],
                    bytes_target=float(quantizer.target_bytes),
                    bytes_free=int(quantizer.coded_bytes(free)))
    rel = (lambda p: p / energy) if energy > 0 else (lambda p: 0.0)
    if pick is None:  # no trial met the rate: BlockLDLQ's result is not a valid encoding
        enc, history, p_ldlq = trials[-1][2], trials[-1][3], float("inf")
        info["bytes_ldlq"] = int(trials[-1][1])
    else:
        _, size, enc, history = trials[pick]
        Q_ldlq = decoded(codec, enc, rows, cols, dtype)
        p_ldlq = proxy_error(wp - Q_ldlq, Hp)
        if rated:
            info["bytes_ldlq"] = int(size)
    chosen = "ldlq" if p_ldlq <= p_free else "free"
    info.update({
        "proxy_free": rel(p_free),
        "proxy_ldlq": rel(p_ldlq) if np.isfinite(p_ldlq) else float("inf"),
        "chosen": chosen,
        "cd_passes": len(history),
        "cd_gain": float(1.0 - np.prod([1.0 - h for h in history])) if history else 0.0,
        "seconds_free": t_free,
        "seconds_ldlq": time.perf_counter() - t0 - t_free,
    })
    out = enc if chosen == "ldlq" else free
    out.info = dict(out.info)
    return out, info


def prepare_hessian(H, cols: int, name: str, transform, tparams) -> tuple:
    """Check and repair H (original domain) and rotate it into the codec's domain."""
    Hc, info = check_hessian(H, cols, name)
    return rotate_hessian(Hc, transform, tparams), info
