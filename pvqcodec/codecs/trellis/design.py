"""How the HYB table was made (informative: the table itself, hyb_table.py, is normative).

    python -m pvqcodec.codecs.trellis.design --out pvqcodec/codecs/trellis/hyb_table.py

The table is a "sunflower" sample of the 2-D standard normal on the half plane
x0 >= 0 (HYB's sign bit mirrors the first coordinate, so the 512 rows and their
mirrors form a 1024-point set symmetric in x0): row i, for i = 0 .. 511, is

    r_i     = sqrt(-2 ln(1 - (i + 1/2) / 512))        (radius quantiles of the chi law, 2 dof)
    theta_i = pi * frac(i * (sqrt(5) - 1) / 2) - pi/2  (golden-ratio angles in (-pi/2, pi/2))
    p_i     = (r_i cos theta_i, r_i sin theta_i)
    row_i   = p_j / rho,  j = (317 * i) mod 512

with rho the RMS of all 1024 coordinates (so the code's RMS is 1), computed in
float64 and rounded to float16 (nearest, ties to even). The points p_i are sorted
by radius; the rows take them in the order j = 317 i mod 512 (317 ~ 512 / golden
ratio, odd, so a permutation): with L < 16 HYB's hash x = s^2 + s reaches small
row indices more often than large ones (at L = 8 only 214 rows, mostly small), and
a table sorted by radius would then favour small values (measured at L = 8, k = 2:
MSE 0.128 sorted, 0.108 permuted; at L = 12 and 16 the order makes no difference
beyond the noise, 0.0755 / 0.0697).

Why not k-means (QTIP's table, 2-D N(0, I) centroids rescaled)? Inside a trellis the
code values play the role of a random codebook, whose best distribution is the
Gaussian itself, while k-means centroids have density proportional to p^(1/2) (too
wide). Measured on N(0, 1), L = 16, k = 2 (bench/RESULTS.md): k-means 0.0708 (QTIP
reports 0.071), this table 0.0696; trellis-aware Lloyd iterations (trellis_lloyd below)
took a k-means start to about 0.0700-0.0703 and did not improve this table beyond the
noise of the measurement.
"""

import argparse

import numba
import numpy as np

from . import codes
from .viterbi import viterbi_encode


@numba.njit(cache=True, parallel=True)
def _assign(d, c, idx):
    n = d.shape[0]
    for i in numba.prange(n):
        best = np.inf
        bi = 0
        for j in range(c.shape[0]):
            e = (d[i, 0] - c[j, 0]) ** 2 + (d[i, 1] - c[j, 1]) ** 2
            if e < best:
                best = e
                bi = j
        idx[i] = bi


def kmeans_folded(n=1 << 20, q=codes.HYB_Q, iters=60, seed=1):
    """QTIP-style table (informative comparison): k-means of 2-D N(0, I) folded to x0 >= 0."""
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((n, 2))
    d[:, 0] = np.abs(d[:, 0])
    c = d[rng.choice(n, 1 << q, replace=False)].copy()
    idx = np.zeros(n, np.int64)
    for _ in range(iters):
        _assign(d, c, idx)
        cnt = np.bincount(idx, minlength=len(c))
        for v in range(2):
            s = np.bincount(idx, weights=d[:, v], minlength=len(c))
            c[:, v] = np.where(cnt > 0, s / np.maximum(cnt, 1), c[:, v])
    return c


ROW_ORDER_MULTIPLIER = 317


def sunflower(q=codes.HYB_Q) -> np.ndarray:
    """The table's float64 values before rounding (see the module's text)."""
    n = 1 << q
    i = np.arange(n, dtype=np.float64)
    r = np.sqrt(-2.0 * np.log(1.0 - (i + 0.5) / n))
    theta = np.pi * np.mod(i * ((np.sqrt(5.0) - 1.0) / 2.0), 1.0) - np.pi / 2
    t = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    t = t[(np.arange(n) * ROW_ORDER_MULTIPLIER) % n]
    return t / np.sqrt(np.mean(t * t))


def hyb_rows_and_signs(L: int):
    """Row index and sign (+1/-1 on x0) of every state's HYB value."""
    s = np.arange(1 << L, dtype=np.uint64)
    x = (s * s + s) & np.uint64(codes.MASK32)
    idx = ((x >> np.uint64(codes.HYB_SHIFT)) & np.uint64((1 << codes.HYB_Q) - 1)).astype(np.int64)
    sgn = np.where((x >> np.uint64(codes.HYB_SIGN_BIT)) & np.uint64(1), -1.0, 1.0)
    return idx, sgn


def normalize(table):
    """Scale the table to RMS 1 (every row is used by equally many states)."""
    return table / np.sqrt(np.mean(np.asarray(table) ** 2))


def trellis_lloyd(table, L=16, k=2, n=1 << 18, iters=8, seed=2, verbose=True):
    idx_of, sgn_of = hyb_rows_and_signs(L)
    rng = np.random.default_rng(seed)
    t = np.asarray(table, np.float64).copy()
    for it in range(iters):
        x = rng.standard_normal((n // 256, 128, 2))
        lut = codes.code_lut(codes.CODE_HYB, L, t.astype(np.float32))
        rms = np.sqrt(np.mean(lut.astype(np.float64) ** 2))
        a = np.sqrt(1 - 2.0 ** (-2 * k)) / rms
        states, _ = viterbi_encode(x / a, np.ones_like(x), lut, L, 2 * k)
        c = lut.T[states].astype(np.float64)  # (tiles, 128, 2)
        a = float(np.sum(c * x) / np.sum(c * c))
        mse = float(np.mean((x - a * c) ** 2))
        if verbose:
            print(f"iteration {it}: MSE {mse:.5f} (scale {a:.4f})", flush=True)
        rows = idx_of[states].reshape(-1)
        sg = sgn_of[states].reshape(-1)
        xs = x.reshape(-1, 2) / a
        cnt = np.bincount(rows, minlength=len(t))
        new0 = np.bincount(rows, weights=xs[:, 0] * sg, minlength=len(t))
        new1 = np.bincount(rows, weights=xs[:, 1], minlength=len(t))
        used = cnt > 0
        t[used, 0] = new0[used] / cnt[used]
        t[used, 1] = new1[used] / cnt[used]
    return t


def table_module_text(bits: np.ndarray) -> str:
    bits = np.asarray(bits, np.uint16).reshape(-1)
    lines = [
        '"""The HYB code\'s table T (spec codecs/trellis.md, appendix A; normative).',
        "",
        "512 rows of two IEEE binary16 values, as bit patterns, row-major: row i is",
        "(HYB_TABLE_BITS[2i], HYB_TABLE_BITS[2i + 1]). Made by design.py (informative).",
        '"""',
        "",
        "# fmt: off",
        "HYB_TABLE_BITS = (",
    ]
    for i in range(0, len(bits), 8):
        lines.append("    " + ", ".join(f"0x{int(b):04X}" for b in bits[i : i + 8]) + ",")
    lines += [")", "# fmt: on", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description="design the HYB table")
    ap.add_argument("--out", required=True)
    ap.add_argument("--iters", type=int, default=0, help="trellis Lloyd iterations (the table has none)")
    ap.add_argument("--samples", type=int, default=1 << 18)
    ap.add_argument("--L", type=int, default=16)
    ap.add_argument("--k", type=int, default=2)
    args = ap.parse_args(argv)
    t = sunflower()
    if args.iters:
        t = normalize(trellis_lloyd(t, L=args.L, k=args.k, n=args.samples, iters=args.iters))
    bits = t.astype(np.float16).view(np.uint16)
    with open(args.out, "w") as f:
        f.write(table_module_text(bits))


if __name__ == "__main__":
    main()
