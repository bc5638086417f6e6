"""The proxy loss of Hessian-aware quantization and the checks on an H before it is used.

For a linear layer W (out x in) with input second moment H = E[x x^T], quantizing W to
Q changes the output by (W - Q) x, whose mean square is the proxy loss

    P(Q) = tr((W - Q) H (W - Q)^T) = sum over rows r of e_r H e_r^T,  e = W - Q.

It decomposes over rows, and an orthogonal transform of both sides (W' = A W B^T,
H' = B H B^T) leaves it unchanged, so it can be measured in the codec's domain. The
summary reports it relative to the layer's output energy tr(W H W^T).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

#: More than this fraction of dead input channels (zero diagonal) means the H file is wrong.
MAX_DEAD_FRACTION = 0.5


class HessianInvalid(InputError):
    """An H that cannot be used for a tensor: wrong size, NaN/Inf, negative or all-zero diagonal."""

    code = "hessian_invalid"


def proxy_error(E: np.ndarray, H: np.ndarray) -> float:
    """tr(E H E^T) for E (rows x n) and H (n x n), or a diagonal H given as a vector (n,)."""
    E = np.asarray(E, np.float64)
    if H.ndim == 1:
        return float(np.einsum("rc,rc,c->", E, E, H))
    return float(np.einsum("rc,rc->", E @ H, E))


def row_proxy(E: np.ndarray, H: np.ndarray) -> np.ndarray:
    """e_r H e_r^T for each row r of E."""
    return np.einsum("rc,rc->r", E @ H, E)


def relative_proxy(W: np.ndarray, Q: np.ndarray, H: np.ndarray) -> float:
    """tr(E H E^T) / tr(W H W^T) (0 if W carries no energy under H)."""
    den = proxy_error(W, H)
    num = proxy_error(np.asarray(W, np.float64) - Q, H)
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))


def check_hessian(H: np.ndarray, n: int, name: str) -> tuple[np.ndarray, dict]:
    """Validate an H (n x n matrix or length-n diagonal) for tensor `name`, whose matrix
    view has n columns, and repair dead input channels.

    Returns (H as a float64 n x n symmetric matrix, info). Errors (HessianInvalid, naming
    the tensor): a size that is not n, NaN or Inf, a negative diagonal entry, every input
    channel dead, or more than MAX_DEAD_FRACTION of them dead (a wrong or truncated file,
    not a model). A dead channel (zero diagonal, so a zero row and column of a Gram
    matrix) had no input on the calibration data: the proxy is blind to its weights.
    It is repaired, not fatal: its diagonal is set to the mean of the live diagonal,
    i.e. its weights are rounded as carefully as an average channel's and kept (GPTQ
    instead zeroes those weight columns, which breaks the layer for inputs the
    calibration set did not contain). info["dead_channels"] counts them.
    """
    H = np.asarray(H, np.float64)
    if H.ndim == 1:
        if H.shape != (n,):
            raise HessianInvalid(f"tensor {name!r}: the importance vector has {H.shape[0]} entries but the tensor has "
                                 f"{n} input columns (wrong layer, or a model other than the one calibrated)")
    elif H.ndim != 2 or H.shape != (n, n):
        raise HessianInvalid(f"tensor {name!r}: H has shape {list(H.shape)} but the tensor has {n} input columns "
                             f"(expected [{n}, {n}]: wrong layer, or a model other than the one calibrated)")
    if not np.all(np.isfinite(H)):
        raise HessianInvalid(f"tensor {name!r}: H holds NaN or infinite values")
    diag = H if H.ndim == 1 else np.diagonal(H)
    if np.any(diag < 0):
        raise HessianInvalid(f"tensor {name!r}: H has a negative diagonal entry ({float(diag.min()):.4g} at input "
                             f"{int(np.argmin(diag))}): not a second moment")
    scale = float(np.max(diag)) if diag.size else 0.0
    dead = diag <= scale * 1e-12
    nd = int(dead.sum())
    if nd == n:
        raise HessianInvalid(f"tensor {name!r}: H is zero (no calibration input reached this layer)")
    if nd > MAX_DEAD_FRACTION * n:
        raise HessianInvalid(f"tensor {name!r}: {nd} of {n} input channels have zero second moment: the H file "
                             f"looks wrong (another layer's statistics, or too few calibration tokens)")
    if H.ndim == 1:
        H = np.diag(H)
    else:
        H = (H + H.T) / 2  # exact symmetry for the factorization
    if nd:
        H = H.copy()
        H[dead, :] = 0.0
        H[:, dead] = 0.0
        idx = np.flatnonzero(dead)
        H[idx, idx] = float(np.mean(diag[~dead]))
    return H, {"dead_channels": nd}
