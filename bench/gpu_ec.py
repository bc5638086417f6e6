"""GPU decode of the three entropy-coded codecs (issue 10): ecsq (ecsq.cu), ectcq (ectcq.cu),
eclattice (eclattice.cu), each after the GPU rans decoder, to float16.

Data: i.i.d. N(0, 1) values, quantized by fast stand-ins for the reference encoders (the
decoders' work does not depend on how the symbols were chosen, only on their statistics):
ecsq round(v / step); ectcq the greedy trellis path (each value to the nearest grid point of
its state's union; 256 states); eclattice the nearest point of 2 E8 (Conway and Sloane). Steps
/ scales put the coded rate near 2, 3, 4 bits (the table prints the rate of the rans payloads).
The 16-bit streams are rans table mode in each codec's chunk size (ecsq 2^18, ectcq 2^20,
eclattice 2^18), coded by the reference encoder; the row counts (ectcq, eclattice) are handed
over decoded, as QuantizedLinear does (`rows` integers decoded on the host).

Times: CUDA events, median of 10 runs after one warm-up, no host sync inside the timed
region (errors checked afterwards): "total" = every stream's rans decode + the codec's
kernels (+ the wrapper's host work: ectcq's row prefix sums, eclattice's torch passes);
"codec" = the codec's part alone, from the decoded symbols. G weights/s and GB/s of float16
output (2 bytes per weight) from the total. Every output is compared bit for bit with the
Python reference decoder (float16), unless --no-verify.

    python bench/gpu_ec.py [--shapes 4096x4096,4096x11008] [--bits 2,3,4] [--codecs ecsq,ectcq,eclattice]
                           [--ectcq-prefetch 0,16,32,64] [--no-verify]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from numba import njit, prange

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gpu_decoder as g  # noqa: E402
from pvqcodec.codecs import codec_by_id  # noqa: E402
from pvqcodec.codecs.eclattice.encoder import encoded_from_points  # noqa: E402
from pvqcodec.codecs.eclattice.quantizer import nearest_2e8  # noqa: E402
from pvqcodec.codecs.ectcq.trellis import trellis_tables, union_symbol  # noqa: E402
from pvqcodec.coding import StreamSpec  # noqa: E402
from pvqcodec.coding.rans import RansCoding  # noqa: E402

H_GAUSS = 2.047  # differential entropy of N(0, 1) in bits: a cell of width 2^(h - R) costs about R bits


def _time(fn, reps=10):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / 1e3)
    return statistics.median(ts)


@njit(cache=True, parallel=True)
def _greedy_tcq(y, nxt, out):
    """Each row a trellis path from state 0; each value to the nearest grid index of its state's union."""
    rows, cols = y.shape
    for r in prange(rows):
        st = 0
        for i in range(cols):
            u = st & 1
            j = 2 * int(np.floor((y[r, i] - u) / 2.0 + 0.5)) + u
            out[r, i] = j
            st = nxt[st, (j & 3) >> 1]


@njit(cache=True, parallel=True)
def _nearest_points(y, out):
    for gi in prange(y.shape[0]):
        tmp = np.empty(8, np.int64)
        o = np.empty(8, np.int64)
        nearest_2e8(y[gi], o, tmp)
        out[gi] = o


def make_ecsq(x, bits):
    step = np.float32(2.0 ** (H_GAUSS - bits))
    q = np.round(x / step).astype(np.int64)
    sym = np.where(q > 0, 2 * q - 1, -2 * q).astype(np.uint16).reshape(-1)
    params = {"step": step, "offsets": (0.02 + 0.01 * np.arange(32)).astype(np.float32)}
    return params, [sym]


def make_ectcq(x, bits, v=8):
    step = np.float32(2.0 ** (H_GAUSS - bits) / 2)  # a union's grid spacing is 2 steps
    nxt, _ = trellis_tables(v)
    j = np.empty(x.shape, np.int64)
    _greedy_tcq(x.astype(np.float64) / float(step), nxt, j)
    even = (j & 1) == 0
    sym = union_symbol(j).astype(np.uint16)
    a0, a1 = sym[even], sym[~even]
    params = {"step": step, "state_bits": v, "a0_count": int(a0.size),
              "offsets": (0.02 + 0.01 * np.arange(32)).astype(np.float32)}
    return params, [even.sum(axis=1).astype(np.int64), a0, a1]


def make_eclattice(x, bits):
    rows, cols = x.shape
    hs = np.float32(2.0 ** (H_GAUSS - bits) / 2)  # doubled coordinates: one unit is half_scale
    gr = -(-cols // 8)
    y = np.zeros((rows, gr * 8), np.float64)
    y[:, :cols] = x / float(hs)
    c = np.empty((rows * gr, 8), np.int64)
    _nearest_points(y.reshape(-1, 8), c)
    enc = encoded_from_points(c, hs, rows, cols)
    return enc.params, enc.streams


MAKERS = {"ecsq": make_ecsq, "ectcq": make_ectcq, "eclattice": make_eclattice}
HOST_STREAMS = {"ecsq": (), "ectcq": g.ECTCQ_HOST_STREAMS, "eclattice": g.ECLATTICE_HOST_STREAMS}
CODEC_IDS = {"ecsq": 5, "ectcq": 6, "eclattice": 7}


def run_one(name, rows, cols, bits, verify, prefetch=()):
    rng = np.random.default_rng(bits * 7 + rows)
    x = rng.standard_normal((rows, cols), dtype=np.float32)
    codec = codec_by_id(CODEC_IDS[name])
    params, streams = MAKERS[name](x, bits)
    specs = codec.streams(params, rows, cols, "float32")
    host = HOST_STREAMS[name]
    coded = []  # (position, payload on the device, spec, plan, symbol buffer)
    nbytes = 0
    for i, (s, spec) in enumerate(zip(streams, specs)):
        if i in host:
            nbytes += spec.count * spec.width / 8  # not timed: handed over decoded (raw size counted)
            continue
        p = RansCoding.encode(np.asarray(s), spec, mode="table", precision=None, chunk_symbols=codec.rans_chunk_symbols)
        nbytes += p.size
        pt = torch.from_numpy(np.ascontiguousarray(p)).cuda()
        coded.append((i, pt, spec, g.rans_plan(pt, spec), torch.empty(max(spec.count, 1), dtype=torch.int16,
                                                                       device="cuda")))
    out = torch.empty((rows, cols), dtype=torch.float16, device="cuda")
    errs = []

    def decode_symbols():
        args = list(streams)
        for i, pt, spec, plan, buf in coded:
            if spec.count == 0:
                args[i] = buf[:0]
                continue
            _, sym, e = g.rans_decode(pt, spec, plan, packed=False, symbols=True, out_symbols=buf[: spec.count],
                                      check=False)
            errs.append(e)
            args[i] = sym
        return args

    def codec_part(args, **kw):
        fn = {"ecsq": g.ecsq_decode, "ectcq": g.ectcq_decode, "eclattice": g.eclattice_decode}[name]
        _, e = fn(args, params, rows, cols, out=out, check=False, **kw)
        errs.append(e)

    total = _time(lambda: codec_part(decode_symbols()))
    syms = decode_symbols()
    only = _time(lambda: codec_part(syms))
    sweep = {pf: _time(lambda: codec_part(syms, prefetch=pf)) for pf in prefetch} if name == "ectcq" else {}
    ok = "-"
    if any(int(e.item()) for e in errs):
        ok = "NO (error flag)"
    elif verify:
        out.fill_(float("nan"))
        codec_part(decode_symbols())
        ref = codec.decode(params, rows, cols, "float32", [np.asarray(s) for s in streams])
        want = torch.from_numpy(np.ascontiguousarray(ref, np.float32)).half()
        ok = "yes" if torch.equal(out.cpu().view(torch.int16), want.view(torch.int16)) else "NO"
    n = rows * cols
    return dict(codec=name, shape=f"{rows}x{cols}", bits=bits, bpw=8 * nbytes / n, total=total, only=only,
                gws=n / total / 1e9, gbs=2 * n / total / 1e9, ok=ok, sweep=sweep)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="4096x4096,4096x11008")
    ap.add_argument("--bits", default="2,3,4")
    ap.add_argument("--codecs", default="ecsq,ectcq,eclattice")
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--ectcq-prefetch", default="0,16,32,64",
                    help="L1 prefetch distances (symbols) to time the ectcq kernel at (default of the wrapper: "
                         f"{g.ECTCQ_PREFETCH})")
    args = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    rows_out = []
    t0 = time.time()
    for name in args.codecs.split(","):
        for rows, cols in shapes:
            for bits in (int(b) for b in args.bits.split(",")):
                r = run_one(name, rows, cols, bits, not args.no_verify,
                            [int(v) for v in args.ectcq_prefetch.split(",") if v])
                rows_out.append(r)
                print(f"  {name} {rows}x{cols} {bits} bits: {r['total'] * 1e3:.3f} ms ({time.time() - t0:.0f} s)",
                      file=sys.stderr, flush=True)
    print(f"{torch.cuda.get_device_name()} | decode to float16, rans included | median of 10, CUDA events")
    print("| codec | shape | target bits | coded bits/weight | total ms | codec kernels ms | G weights/s | "
          "GB/s fp16 out | bit-exact |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows_out:
        print(f"| {r['codec']} | {r['shape']} | {r['bits']} | {r['bpw']:.3f} | {r['total'] * 1e3:.3f} | "
              f"{r['only'] * 1e3:.3f} | {r['gws']:.1f} | {r['gbs']:.1f} | {r['ok']} |")
    sweeps = [r for r in rows_out if r["sweep"]]
    if sweeps:
        pfs = list(sweeps[0]["sweep"])
        print(f"\nectcq kernel alone (symbols -> float16), ms, by L1 prefetch distance (default {g.ECTCQ_PREFETCH})")
        print("| shape | bits | " + " | ".join(f"pf {p}" for p in pfs) + " |")
        print("|---|---|" + "---|" * len(pfs))
        for r in sweeps:
            print(f"| {r['shape']} | {r['bits']} | " + " | ".join(f"{r['sweep'][p] * 1e3:.3f}" for p in pfs) + " |")
    if any(r["ok"].startswith("NO") for r in rows_out):
        sys.exit("a decode differed from the reference or reported an error (see the table)")


if __name__ == "__main__":
    main()
