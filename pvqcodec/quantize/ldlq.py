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


def blocks_of(n: int, g: int) -> list:
    return [(s, min(n, s + g)) for s in range(0, n, g)]


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


def block_ldl(C: np.ndarray, g: int, overwrite: bool = False):
    """(L, Ddiag, Dblocks) of H = C C^T: L unit block-lower-triangular in blocks of g,
    Ddiag the diagonal of D = blockdiag(C_kk C_kk^T), Dblocks the list of D_k. With
    overwrite, L takes C's memory (block k of L needs only block k of C)."""
    n = C.shape[0]
    L = C if overwrite else np.empty_like(C)
    Dblocks = []
    for s, e in blocks_of(n, g):
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


def _unit_mask(row_better: np.ndarray, unit_rows: int, rows: int) -> np.ndarray:
    """Which row units gain: sum over the unit's rows of (old - new) term > 0."""
    units = -(-rows // unit_rows)
    pad = np.zeros(units * unit_rows)
    pad[:rows] = row_better
    return pad.reshape(units, unit_rows).sum(1) > 0


def _unit_rows_mask(unit_mask: np.ndarray, unit_rows: int, rows: int) -> np.ndarray:
    return np.repeat(unit_mask, unit_rows)[:rows]


def block_ldlq(W: np.ndarray, L: np.ndarray, quantizer, weights=None, progress=None):
    """BlockLDLQ of W (rows x n) with unit block-lower-triangular L in blocks of
    quantizer.width. weights: None or a per-column positive vector (n,) passed to the
    block quantizer (e.g. the diagonal of D). Returns (Q, codes)."""
    rows, n = W.shape
    g = quantizer.width
    blk = blocks_of(n, g)
    sup = max(g, (SUPER // g) * g)
    Q = np.zeros_like(W)
    E = np.zeros_like(W)
    U = np.zeros_like(W)  # feedback from finished super-blocks
    codes = [None] * len(blk)
    for c0 in range(((n - 1) // sup) * sup, -1, -sup):
        c1 = min(n, c0 + sup)
        for k in range((c1 - 1) // g, c0 // g - 1, -1):
            s, e = blk[k]
            X = W[:, s:e] + U[:, s:e]
            if e < c1:
                X = X + E[:, e:c1] @ L[e:c1, s:e]
            Qk, codes[k] = quantizer.quantize(k, X, None if weights is None else weights[s:e])
            Q[:, s:e] = Qk
            E[:, s:e] = W[:, s:e] - Qk
            if progress:
                progress(e - s)
        if c0:
            U[:, :c0] += E[:, c0:c1] @ L[c0:c1, :c0]
    return Q, codes


def coordinate_descent(W, Q, codes, Hd, quantizer, passes: int, weighted: bool):
    """`passes` passes of block coordinate descent on tr(E Hd E^T) (never increasing it).
    Returns (Q, codes, per-pass relative decrease list)."""
    rows, n = W.shape
    g = quantizer.width
    blk = blocks_of(n, g)
    sup = max(g, (SUPER // g) * g)
    E = W - Q
    inv = [np.linalg.inv(Hd[s:e, s:e]) for s, e in blk]
    history = []
    for _ in range(passes):
        before = proxy_error(E, Hd)
        changed = 0
        for c0 in range(((n - 1) // sup) * sup, -1, -sup):
            c1 = min(n, c0 + sup)
            P = E @ Hd[:, c0:c1]
            for k in range((c1 - 1) // g, c0 // g - 1, -1):
                s, e = blk[k]
                Hkk = Hd[s:e, s:e]
                Xs = Q[:, s:e] + P[:, s - c0 : e - c0] @ inv[k]
                w = np.diagonal(Hkk).copy() if weighted else None
                Qn, cn = quantizer.quantize(k, Xs, w)
                dn, do = Qn - Xs, Q[:, s:e] - Xs
                gain = np.einsum("rc,rc->r", do @ Hkk, do) - np.einsum("rc,rc->r", dn @ Hkk, dn)
                keep = _unit_mask(gain, quantizer.unit_rows, rows)
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

    Returns (Encoded, info): info has proxy_free and proxy_ldlq (relative proxy losses),
    chosen ("ldlq" or "free"), damp (the damping that factorized), damp_tries, cd_gain.
    cache: a dict kept between calls with the same Hp (the factorization is reused)."""
    rows, cols = wp.shape
    t0 = time.perf_counter()
    free = codec.encode(wp, options)
    t_free = time.perf_counter() - t0
    quantizer = codec.block_quantizer(wp, options, free)
    if quantizer is None:
        raise InputError(f"the {codec.name} codec has no Hessian-aware rounding")
    energy = proxy_error(wp, Hp)
    Q_free = decoded(codec, free, rows, cols, dtype)
    p_free = proxy_error(wp - Q_free, Hp)

    key = (quantizer.width, damp)
    if cache is not None and key in cache:
        L, ddiag, Hd, d_used, tries = cache[key]
    else:
        C, Hd, d_used, tries = damped_cholesky(Hp, damp, name)
        L, ddiag, _ = block_ldl(C, quantizer.width, overwrite=True)
        del C
        if cache is not None:
            cache[key] = (L, ddiag, Hd, d_used, tries)
    Q, codes = block_ldlq(wp, L, quantizer, ddiag if weighted else None)
    history = []
    if passes > 0:
        Q, codes, history = coordinate_descent(wp, Q, codes, Hd, quantizer, passes, weighted)
    scales = refit_scales(wp, Hp, quantizer, codes)
    enc = quantizer.finish(codes, scales)
    Q_ldlq = decoded(codec, enc, rows, cols, dtype)
    p_ldlq = proxy_error(wp - Q_ldlq, Hp)
    chosen = "ldlq" if p_ldlq <= p_free else "free"
    rel = (lambda p: p / energy) if energy > 0 else (lambda p: 0.0)
    info = {
        "proxy_free": rel(p_free),
        "proxy_ldlq": rel(p_ldlq),
        "chosen": chosen,
        "damp": d_used,
        "damp_tries": tries,
        "cd_passes": len(history),
        "cd_gain": float(1.0 - np.prod([1.0 - h for h in history])) if history else 0.0,
        "seconds_free": t_free,
        "seconds_ldlq": time.perf_counter() - t0 - t_free,
    }
    out = enc if chosen == "ldlq" else free
    out.info = dict(out.info)
    return out, info


def prepare_hessian(H, cols: int, name: str, transform, tparams) -> tuple:
    """Check and repair H (original domain) and rotate it into the codec's domain."""
    Hc, info = check_hessian(H, cols, name)
    return rotate_hessian(Hc, transform, tparams), info
