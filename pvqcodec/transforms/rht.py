"""The randomized Hadamard transform, RHT (spec/transforms.md, section 5.3).

For a side of length n with block b and sign vector s (from the seed), block k
of a vector x maps to y_k = c_b * H_b (s_k * x_k), c_b = float32(1 / sqrt(b)).
A matrix W (m x n) is transformed on both sides: W' = A W B^T, A acting on the
columns (axis 0, sign side 0, block b_r), B on the rows (axis 1, side 1, b_c).

The forward transform is encoder-only and computed in float64. The inverse
W = A^T W' B is normative and bit-exact in float32: `inverse_axis` follows the
spec's four steps (Sylvester butterflies, sequential dense H_h^T sums, scale,
signs) with the exact order of float32 operations; numpy's elementwise float32
ufuncs round every operation to nearest-even and never fuse or reassociate.
"""

import math

import numpy as np

from ..errors import ParamsInvalid
from .hadamard import MAX_BLOCK, _as_int, base_matrix, factor_block

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB

# Working-set size of one chunk, in float32 elements (float64 chunks hold half as many):
# small enough for the scratch buffers to stay in the cache.
_CHUNK = 1 << 17


# --- sign vectors ------------------------------------------------------------------------


def _check_seed(seed) -> int:
    seed = _as_int(seed, "seed")
    if not 0 <= seed <= MASK64:
        raise ValueError(f"seed must be in 0 .. 2^64-1, got {seed}")
    return seed


def _check_side(side) -> int:
    side = _as_int(side, "side")
    if side not in (0, 1):
        raise ValueError(f"side must be 0 (rows, axis 0) or 1 (columns, axis 1), got {side}")
    return side


def mix64(z):
    """SplitMix64's finalizer on a numpy uint64 array (arithmetic mod 2^64)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
        z = z ^ (z >> np.uint64(31))
    return z


def signs(seed, side, n, start=0) -> np.ndarray:
    """sign(seed, side, i) for i = start .. start+n-1, as np.float32 +1/-1.

    u = mix64(seed + (2*i + side + 1) * 0x9E3779B97F4A7C15 mod 2^64); the sign
    is -1 if bit 63 of u is set, else +1. Counter-based: any index range can
    be computed directly (`start`).
    """
    seed = _check_seed(seed)
    side = _check_side(side)
    n = _as_int(n, "n")
    start = _as_int(start, "start")
    if n < 0 or start < 0:
        raise ValueError(f"signs: n and start must be >= 0, got n={n}, start={start}")
    if start + n > (1 << 62):
        raise ValueError("signs: index out of range")
    i = np.arange(start, start + n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        k = i * np.uint64(2) + np.uint64(side + 1)
        z = np.uint64(seed) + k * np.uint64(GOLDEN)
    u = mix64(z)
    top = (u >> np.uint64(63)).astype(np.bool_)
    return np.where(top, np.float32(-1.0), np.float32(1.0)).astype(np.float32)


def sign_reference(seed: int, side: int, i: int) -> int:
    """One sign with plain Python ints (the spec's definition, for tests and docs)."""
    z = (seed + (2 * i + side + 1) * GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    z ^= z >> 31
    return -1 if z >> 63 else 1


# --- block parameters --------------------------------------------------------------------


def _factor(block) -> tuple:
    f = factor_block(block)
    if f is None:
        raise ValueError(f"{block} is not a valid block order")
    return f


def block_scale(b) -> np.float32:
    """c_b = float32(1.0 / sqrt(float64(b))): IEEE double sqrt and division, then round to float32."""
    b = _as_int(b, "block order")
    if b < 1:
        raise ValueError(f"block order must be >= 1, got {b}")
    return np.float32(1.0 / math.sqrt(float(b)))


def validate_params(m, n, row_block, col_block) -> None:
    """Check an RHT parameter set for an m x n matrix; ParamsInvalid if it breaks a rule.

    Each block must be a valid block order (1 .. 65536, constructible) and divide
    its side: row_block | m (rows, axis 0), col_block | n (columns, axis 1).
    """
    m = _as_int(m, "rows")
    n = _as_int(n, "cols")
    if m < 1 or n < 1:
        raise ValueError(f"matrix shape must be positive, got {m} x {n}")
    for name, side_len, side_name, b in (("row_block", m, "rows", row_block), ("col_block", n, "cols", col_block)):
        try:
            b = _as_int(b, name)
        except ValueError as e:
            raise ParamsInvalid(f"rht {name}: {e}") from None
        if b < 1 or b > MAX_BLOCK:
            raise ParamsInvalid(f"rht {name} = {b} is out of range 1 .. {MAX_BLOCK}")
        if factor_block(b) is None:
            raise ParamsInvalid(
                f"rht {name} = {b} is not a valid block order (not a power of two times a base order)"
            )
        if side_len % b != 0:
            raise ParamsInvalid(f"rht {name} = {b} does not divide {side_name} = {side_len}")


def _prepare_axis(x, axis, block, what):
    if x.ndim < 1:
        raise ValueError(f"{what}: need an array with at least one axis")
    axis = _as_int(axis, "axis")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{what}: axis {axis} out of range for {x.ndim} dimensions")
    axis %= x.ndim
    block = _as_int(block, "block")
    h, q = _factor(block)
    n = x.shape[axis]
    if n % block != 0:
        raise ValueError(f"{what}: block {block} does not divide the axis length {n}")
    return axis, block, h, q, n


# --- forward (encoder, float64) --------------------------------------------------------


def forward_axis(x, axis, block, seed, side) -> np.ndarray:
    """The forward RHT of every vector along `axis` (float64; encoder-only, not bit-exact).

    Block k of each vector x maps to c_b * H_b (s_k * x_k), s = signs(seed, side, n):
    signs and scale, fast Walsh-Hadamard butterflies for S_q, a dense product for H_h.
    """
    x = np.asarray(x, dtype=np.float64)
    axis, block, h, q, n = _prepare_axis(x, axis, block, "forward_axis")
    seed = _check_seed(seed)
    side = _check_side(side)
    cs = signs(seed, side, n).astype(np.float64) * float(block_scale(block))
    return _run_axis(x, axis, block, h, q, cs, forward=True)


def forward_2d(W, seed, row_block, col_block) -> np.ndarray:
    """W' = A W B^T for a matrix W (m x n), in float64. ParamsInvalid for bad blocks."""
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"forward_2d needs a 2-D matrix, got shape {W.shape}")
    validate_params(W.shape[0], W.shape[1], row_block, col_block)
    Y = forward_axis(W, 0, row_block, seed, 0)
    Y = forward_axis(Y, 1, col_block, seed, 1)
    return np.ascontiguousarray(Y)


# --- the chunked engine (both directions) ----------------------------------------------


def _butterflies(cur, q, free):
    """Sylvester butterflies on cur viewed as (G, q, r): stage t pairs (i2, i2 + 2^t), bit t of i2 clear,
    (a, b) <- (a + b, a - b), stages t = 0, 1, ... in order. Out of place, alternating between the two
    buffers in `free`; returns the array holding the result (cur itself when q == 1)."""
    G, r = cur.shape[0] * cur.shape[1], cur.shape[3]
    s, nxt = 1, 0
    while s < q:
        out = free[nxt]
        cv = cur.reshape(G, q // (2 * s), 2, s, r)
        ov = out.reshape(G, q // (2 * s), 2, s, r)
        a = cv[:, :, 0]
        b = cv[:, :, 1]
        np.add(a, b, out=ov[:, :, 0])
        np.subtract(a, b, out=ov[:, :, 1])
        cur, nxt, s = out, 1 - nxt, 2 * s
    return cur


def _inverse_chunk(src, h, q, bufs, HT):
    """Steps 1-2 of the inverse on src, shape (g, h, q, r) (any strides); returns the result array.

    bufs: three C-contiguous float32 arrays of src's shape (scratch space).
    HT: H_h as float32 (h x h), or None when h == 1.
    """
    # Step 1: Sylvester butterflies (stage order fixed).
    cur = _butterflies(src, q, bufs[:2])
    if HT is None:
        return cur
    # Step 2: z[i_h] = sum_j H_h[j][i_h] * w[j], accumulated sequentially from j = 0.
    # "acc - w" is computed as acc + (-1 * w): the product is exact, and x - y == x + (-y)
    # in IEEE arithmetic; the first term is +w[0] or the negation -w[0].
    acc, tmp = [bf for bf in bufs if bf is not cur][:2]
    np.multiply(cur[:, 0:1], HT[0].reshape(1, h, 1, 1), out=acc)
    for j in range(1, h):
        np.multiply(cur[:, j:j + 1], HT[j].reshape(1, h, 1, 1), out=tmp)
        np.add(acc, tmp, out=acc)
    return acc


def _forward_chunk(src, h, q, bufs, H, cs):
    """c_b * H_b (s * x) on src, shape (g, h, q, r) (float64, any strides); cs = (s * c_b) shaped
    (g, h, q, 1); H = H_h (float64) or None. Returns the result array (one of bufs)."""
    np.multiply(src, cs, out=bufs[2])
    cur = _butterflies(bufs[2], q, bufs[:2])
    if H is None:
        return cur
    # z = H_h w along the h axis. numpy's own einsum loops, not BLAS: small products through a
    # threaded BLAS are slow and erratic when the cores are busy.
    g, _, _, r = cur.shape
    out = [bf for bf in bufs if bf is not cur][0]
    np.einsum("ij,gjk->gik", H, cur.reshape(g, h, q * r), out=out.reshape(g, h, q * r))
    return out


def _chunked(x2, out2, block, h, q, cs, rows_layout, forward):
    """Transform along one axis of a 2-D array, written into out2 (any strides).

    rows_layout=False: x2 is (n, R) and the transform runs along axis 0 (every column).
    rows_layout=True: x2 is (R, n) and the transform runs along axis 1 (every row).
    forward=False: the bit-exact float32 inverse; forward=True: the float64 forward.
    Work is done in cache-sized chunks of g blocks x r vectors, each held as
    (g, h, q, r) with the r vectors innermost.
    """
    if rows_layout:
        R, n = x2.shape
    else:
        n, R = x2.shape
    nb = n // block
    if n == 0 or R == 0:
        return
    dtype = np.float64 if forward else np.float32
    elems = _CHUNK if not forward else _CHUNK // 2
    if h == 1:
        M = None
    elif forward:
        M = base_matrix(h).astype(np.float64)  # forward: z = H_h w
    else:
        M = base_matrix(h).astype(np.float32)  # inverse: z = H_h^T w, row j of H_h for term j
    r = max(1, min(R, elems // block))
    if 8 <= r < R:
        r -= r % 8
    g = max(1, min(nb, elems // (block * r)))
    bufs = [np.empty((g, h, q, r), dtype=dtype) for _ in range(3)]
    if rows_layout:
        # staging areas for row-major chunks; rows padded so that their stride is not a power of two
        pad = g * block + 16
        stage_in = np.empty((r, pad), dtype=dtype)
        stage_out = np.empty((r, pad), dtype=dtype)
    for c0 in range(0, R, r):
        c1 = min(R, c0 + r)
        rc = c1 - c0
        for k0 in range(0, nb, g):
            k1 = min(nb, k0 + g)
            gc = k1 - k0
            lo, hi = k0 * block, k1 * block
            if gc == g and rc == r:
                bb = bufs
            else:
                bb = [np.empty((gc, h, q, rc), dtype=dtype) for _ in range(3)]
            if rows_layout:
                # copy the rows as they lie (cheap), then read them transposed from cache
                sin = stage_in[:rc, :hi - lo]
                np.copyto(sin, x2[c0:c1, lo:hi])
                src = sin.T.reshape(gc, h, q, rc)
                dst = stage_out[:rc, :hi - lo].T
            else:
                src = x2[lo:hi, c0:c1].reshape(gc, h, q, rc)
                dst = out2[lo:hi, c0:c1]
            if forward:
                res = _forward_chunk(src, h, q, bb, M, cs[lo:hi].reshape(gc, h, q, 1))
                np.copyto(dst, res.reshape(gc * block, rc))
            else:
                res = _inverse_chunk(src, h, q, bb, M)
                # Steps 3-4: multiply by c_b, then by s_i. One multiplication by (s_i * c_b) = +/-c_b
                # gives the same float32 value: a product with -c_b is the negation of one with c_b.
                np.multiply(res.reshape(gc * block, rc), cs[lo:hi, None], out=dst)
            if rows_layout:
                np.copyto(out2[c0:c1, lo:hi], stage_out[:rc, :hi - lo])


def _run_axis(y, axis, block, h, q, cs, forward):
    """Apply the chunked engine along `axis` of an array of any rank; returns a new C-contiguous array."""
    n = y.shape[axis]
    out = np.empty(y.shape, dtype=np.float64 if forward else np.float32)
    if y.size == 0:
        return out
    if y.ndim == 1:
        _chunked(y.reshape(n, 1), out.reshape(n, 1), block, h, q, cs, False, forward)
        return out
    if y.ndim == 2:
        _chunked(y, out, block, h, q, cs, axis == 1, forward)
        return out
    moved = np.ascontiguousarray(np.moveaxis(y, axis, 0))
    res = np.empty(moved.shape, dtype=out.dtype)
    _chunked(moved.reshape(n, -1), res.reshape(n, -1), block, h, q, cs, False, forward)
    return np.ascontiguousarray(np.moveaxis(res, 0, axis))


# --- inverse (decoder, bit-exact float32) ------------------------------------------------


def inverse_axis(y, axis, block, seed, side) -> np.ndarray:
    """The normative inverse RHT of every vector along `axis`, bit-exact in float32.

    y must be np.float32. Per block (b = h * q): Sylvester butterflies on each
    length-q sub-vector, the sequential sum with H_h transposed, multiply by
    c_b, multiply by the sign s_i (i the index along the axis).
    """
    y = np.asarray(y)
    if y.dtype != np.float32:
        raise ValueError(f"inverse_axis needs float32 input (bit-exact decoder), got {y.dtype}")
    axis, block, h, q, n = _prepare_axis(y, axis, block, "inverse_axis")
    seed = _check_seed(seed)
    side = _check_side(side)
    cs = signs(seed, side, n) * block_scale(block)  # exact: +/- c_b
    return _run_axis(y, axis, block, h, q, cs, forward=False)


def inverse_2d(Wp, seed, row_block, col_block) -> np.ndarray:
    """W = A^T W' B in float32, bit-exact: the row side (axis 0) first, then the column side (axis 1).

    ParamsInvalid for bad blocks; ValueError for a non-float32 or non-2-D input.
    """
    Wp = np.asarray(Wp)
    if Wp.ndim != 2:
        raise ValueError(f"inverse_2d needs a 2-D matrix, got shape {Wp.shape}")
    if Wp.dtype != np.float32:
        raise ValueError(f"inverse_2d needs float32 input (bit-exact decoder), got {Wp.dtype}")
    validate_params(Wp.shape[0], Wp.shape[1], row_block, col_block)
    X = inverse_axis(Wp, 0, row_block, seed, 0)
    return inverse_axis(X, 1, col_block, seed, 1)
