"""Where the trellis codec's MSE comes from (informative; results in bench/RESULTS.md).

    python -m pvqcodec.codecs.trellis.diagnose codes --L 16 --k 2 --samples 262144
    python -m pvqcodec.codecs.trellis.diagnose tailbiting --L 8 10 --k 2 4
    python -m pvqcodec.codecs.trellis.diagnose seam --L 16 --k 2 --seam 32 64 0 256
    python -m pvqcodec.codecs.trellis.diagnose gain --L 16 --k 3 --gain 1.0 1.05 1.1
    python -m pvqcodec.codecs.trellis.diagnose rowscales --L 12 --k 2 --code 3inst

Each experiment Viterbi-encodes the same N(0, 1) samples (tiles of 256) against a code
table, refits the scale by least squares and prints the MSE:

  codes       the spec's codes beside ideal references for the same trellis: a table of
              2^L i.i.d. Gaussian values (V = 1) or pairs (V = 2), which is what a
              computed code imitates, and HYB with other tables (k-means centroids as in
              QTIP, the spec's points sorted by radius).
  tailbiting  QTIP's two-pass tail-biting (the encoder's) against the exact optimum,
              which tries every overlap (2^(L - kV) passes: small L only).
  seam        the first pass's context: steps on each side of the seam.
  gain        the code's RMS relative to the data's before the search (times
              sqrt(1 - 2^-2k)); the encoder's table GAIN holds the best values.
  rowscales   the codec with and without float16 row scales on 512 x 2048 matrices
              (i.i.d.; log-normal row and column gains; log-normal row gains), after
              the RHT and without it: rate (bits/w, side information included) and
              NMSE of the reconstructed matrix.
"""

import argparse

import numpy as np

from . import GAIN, codes, design
from .viterbi import viterbi_encode


def mse_of(lut, V, L, k, x, gain, mode="two-pass", seam=None):
    rms = float(np.sqrt(np.mean(lut.astype(np.float64) ** 2)))
    a = gain * np.sqrt(1 - 2.0 ** (-2 * k)) / rms
    xs = x.reshape(-1, 256 // V, V)
    st, _ = viterbi_encode(xs / a, np.ones_like(xs), lut, L, k * V, mode=mode, seam=seam)
    c = lut.T[st].astype(np.float64)
    a2 = np.sum(c * xs) / np.sum(c * c)
    return float(np.mean((xs - a2 * c) ** 2))


TABLES = ["1mad", "3inst", "hyb", "hyb-kmeans", "hyb-sorted", "random-1d", "random-2d"]


def table(name, L, seed=11):
    """(lut (V, 2^L) float32, V, code id for the gain table) of a code or a reference:
    hyb-kmeans is HYB with QTIP's kind of table (k-means centroids of 2-D N(0, I) samples,
    folded to x0 >= 0); hyb-sorted the spec's points in radius order; random-1d / -2d a
    table of 2^L i.i.d. N(0, 1) values or pairs."""
    rng = np.random.default_rng(seed)
    if name in codes.CODE_IDS:
        cid = codes.CODE_IDS[name]
        return codes.code_lut(cid, L), codes.CODE_V[cid], cid
    if name == "hyb-kmeans":
        t = design.normalize(design.kmeans_folded(n=1 << 18, iters=30))
        return codes.code_lut(codes.CODE_HYB, L, _f16(t)), 2, codes.CODE_HYB
    if name == "hyb-sorted":
        t = design.sunflower()[np.argsort((np.arange(512) * design.ROW_ORDER_MULTIPLIER) % 512)]
        return codes.code_lut(codes.CODE_HYB, L, _f16(t)), 2, codes.CODE_HYB
    if name == "random-1d":
        return rng.standard_normal((1, 1 << L)).astype(np.float32), 1, codes.CODE_1MAD
    if name == "random-2d":
        return rng.standard_normal((2, 1 << L)).astype(np.float32), 2, codes.CODE_HYB
    raise ValueError(name)


def _f16(t):
    return np.asarray(t, np.float16).astype(np.float32)


def rowscales(args):
    from ...coding import RawCoding
    from ...encoder import rht_blocks
    from ...transforms import TRANSFORMS_BY_NAME
    from .. import codec_by_name

    codec = codec_by_name("trellis")
    rng = np.random.default_rng(args.seed)
    R, C = 512, 2048
    g = rng.standard_normal((R, C))
    cases = {
        "i.i.d.": g,
        "log-normal row and column gains (sigma 0.5)":
            np.exp(0.5 * rng.standard_normal(R))[:, None] * g * np.exp(0.5 * rng.standard_normal(C))[None, :],
        "log-normal row gains (sigma 1)": np.exp(rng.standard_normal(R))[:, None] * g,
    }
    code = (args.code or ["1mad"])[0]
    print("| matrix | transform | row scales | bits/w | NMSE |")
    print("|---|---|---|---|---|")
    for name, w in cases.items():
        for tname in ("rht", "identity"):
            t = TRANSFORMS_BY_NAME[tname]
            tp = {}
            if tname == "rht":
                rb, cb = rht_blocks(R, C, "auto")
                tp = {"seed": 1, "row_block": rb, "col_block": cb}
            wp = t.forward(w, tp)
            for rs in (False, True):
                enc = codec.encode(wp, {"bits": args.k[0], "code": code, "trellis_L": args.L[0], "row_scales": rs})
                specs = codec.streams(enc.params, R, C, "float32")
                pl = [RawCoding.encode(s, sp) for s, sp in zip(enc.streams, specs)]
                raw = codec.build_params(enc.params)
                y = codec.decode(codec.parse_params(raw, R, C, "float32"), R, C, "float32",
                                 [RawCoding.decode(p, sp) for p, sp in zip(pl, specs)])
                back = t.inverse(np.ascontiguousarray(y, np.float32), tp).astype(np.float64)
                rate = 8 * (sum(p.size for p in pl) + len(raw)) / w.size
                nmse = float(np.sum((back - w) ** 2) / np.sum(w * w))
                print(f"| {name} | {tname} | {'on' if rs else 'off'} | {rate:.4f} | {nmse:.5f} |", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("experiment", choices=["codes", "tailbiting", "seam", "gain", "rowscales"])
    ap.add_argument("--L", type=int, nargs="+", default=[16])
    ap.add_argument("--k", type=int, nargs="+", default=[2])
    ap.add_argument("--samples", type=int, default=1 << 18)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--code", nargs="+", choices=TABLES, help="codes or references (default: all for codes, "
                                                                 "1mad otherwise)")
    ap.add_argument("--seam", type=int, nargs="+", default=[32, 64, 0, 256], help="0: the default, S/2")
    ap.add_argument("--gain", type=float, nargs="+", default=[1.0, 1.05, 1.1])
    args = ap.parse_args(argv)
    if args.experiment == "rowscales":
        return rowscales(args)
    x = np.random.default_rng(args.seed).standard_normal(args.samples // 256 * 256)
    print(f"# N(0, 1), {x.size} samples, seed {args.seed}; MSE after a least-squares scale refit")
    print("| experiment | L | k | setting | MSE | dB from D(R) |")
    print("|---|---|---|---|---|---|")

    def row(L, k, setting, mse):
        print(f"| {args.experiment} | {L} | {k} | {setting} | {mse:.5f} | {10 * np.log10(mse / 2 ** (-2 * k)):+.2f} |",
              flush=True)

    names = args.code or (TABLES if args.experiment == "codes" else ["1mad"])
    for L in args.L:
        tabs = {n: table(n, L) for n in names}
        for k in args.k:
            for name, (lut, V, cid) in tabs.items():
                if k * V > L:
                    continue
                g = GAIN[cid][k]
                if args.experiment == "codes":
                    row(L, k, name, mse_of(lut, V, L, k, x, g))
                elif args.experiment == "tailbiting":
                    row(L, k, f"{name} two-pass", mse_of(lut, V, L, k, x, g))
                    row(L, k, f"{name} exact", mse_of(lut, V, L, k, x, g, mode="exact"))
                elif args.experiment == "seam":
                    for s in args.seam:
                        label = f"seam {s} steps" if s else f"seam S/2 = {128 // V} steps (default)"
                        row(L, k, f"{name} {label}", mse_of(lut, V, L, k, x, g, seam=s or None))
                else:
                    for gg in args.gain:
                        row(L, k, f"{name} gain {gg}", mse_of(lut, V, L, k, x, gg))


if __name__ == "__main__":
    main()
