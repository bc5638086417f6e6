"""GPU benchmark of the pvqcodec kernels (issue 6), run on a CUDA device.

For each layer shape (out x in) and batch 1/4/16: the fused trellis and lattice decode + product
(kernel alone, and the whole layer with the activation-side RHT) against float16 cuBLAS (`x @ W.T`)
and torch's int4 kernel (`_weight_int4pack_mm`, group 128, bfloat16), measured side by side
in this run. Every timing reads its weights from HBM: it cycles through enough copies of the
layer to exceed 256 MB (the H100's L2 holds 50 MB). Also: the device's copy bandwidth, and
decode-to-float16 throughput. Timings are CUDA-graph replays (host overhead excluded) unless
--no-graph; --kb-sweep first times the fused lattice kernel's column splits on 8192 x 28672.

    python bench/gpu_bench.py [--quick] [--codes 1mad,3inst,hyb,lattice,lattice_tiled] [--kb-sweep] [--no-graph]
        [--shapes 8192x28672,28672x8192] [--no-decode] [--variant-sweep [--sweeps-only]] [--profile-once]
        [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gpu_decoder as g  # noqa: E402
from pvqcodec.transforms import hadamard  # noqa: E402

DEV = torch.device("cuda")
FLUSH = 256 << 20
SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (8192, 8192), (28672, 8192), (8192, 28672)]  # out x in
CODES = {"1mad": 0, "3inst": 1, "hyb": 2}
ALL_CODES = list(CODES) + ["lattice", "lattice_tiled"]  # lattice_tiled: payload re-laid out in tiles at load


GRAPH = True  # time CUDA-graph replays (no Python or launch overhead); --no-graph: eager calls


def cold_time(make, nbytes, reps=200, max_copies=256, graph=None):
    """Microseconds per call, cycling through copies so that the weights come from HBM.
    With GRAPH, the reps calls are captured in one CUDA graph and its replays are timed
    (median of 5), so that host overhead stays out of the kernels' figures."""
    copies = max(1, min(max_copies, -(-FLUSH // max(nbytes, 1))))
    return time_fns([make() for _ in range(copies)], reps, graph)


def time_fns(fns, reps=200, graph=None):
    """Microseconds per call of fns (cycled), as cold_time measures them."""
    copies = len(fns)
    if GRAPH if graph is None else graph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for f in fns[: min(copies, 10)]:
                f()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for i in range(reps):
                fns[i % copies]()
        graph.replay()
        torch.cuda.synchronize()
        ts = []
        for _ in range(5):
            a, b = torch.cuda.Event(True), torch.cuda.Event(True)
            a.record()
            graph.replay()
            b.record()
            torch.cuda.synchronize()
            ts.append(a.elapsed_time(b) / reps * 1e3)
        del graph
        return float(np.median(ts))
    for f in fns[: min(copies, 10)]:
        f()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(True), torch.cuda.Event(True)
    a.record()
    for i in range(reps):
        fns[i % copies]()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / reps * 1e3


def copy_bandwidth():
    src = torch.empty(1 << 30, dtype=torch.uint8, device=DEV).random_(0, 255)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(True), torch.cuda.Event(True)
    a.record()
    for _ in range(10):
        dst.copy_(src)
    b.record()
    torch.cuda.synchronize()
    return 2 * src.numel() * 10 / (a.elapsed_time(b) * 1e-3)


def trellis_layer(rows, cols, code, k, L=16):
    words = torch.randint(-(2**31), 2**31 - 1, (-(-rows // 16) * -(-cols // 16) * 8 * k,), dtype=torch.int32, device=DEV)
    params = {"code": code, "L": L, "k": k, "row_scales": 0, "scale": np.float32(0.01)}
    return [words], params


def lattice_layer(rows, cols, bits, row_scales=False):
    """Random lattice payloads (every byte value is a valid symbol) for 2, 3 or 4 bits."""
    k = bits - 1
    ng = rows * -(-cols // 8)
    pl = [torch.randint(0, 256, (ng,), dtype=torch.uint8, device=DEV) for _ in range(k + 1)]
    if row_scales:
        pl.insert(0, torch.from_numpy(np.full(rows, 0x3C00, np.uint16).view(np.uint8)).to(DEV))
    params = {"stages": k, "row_scales": row_scales, "scales": np.array([0.01, 0.005, 0.0025][:k], np.float32)}
    return pl, params


def int4_layer(rows, cols, G=128):
    W = torch.randn(rows, cols, device=DEV, dtype=torch.bfloat16) * 0.02
    w = W.float().reshape(rows, cols // G, G)
    lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    scale = (hi - lo).clamp(min=1e-8) / 15
    qv = ((w - lo) / scale).round().clamp(0, 15).to(torch.int32).reshape(rows, cols)
    zero = lo + 8 * scale
    sz = torch.stack([scale.reshape(rows, cols // G), zero.reshape(rows, cols // G)], -1).transpose(0, 1).contiguous()
    packed = (qv[:, ::2] << 4 | qv[:, 1::2]).to(torch.uint8)
    return torch.ops.aten._convert_weight_to_int4pack(packed, 8), sz.to(torch.bfloat16)


def run(args):
    out_dir = Path(args.out or os.environ.get("OUT", "."))
    props = torch.cuda.get_device_properties(0)
    info = {"gpu": torch.cuda.get_device_name(0), "sms": props.multi_processor_count, "torch": torch.__version__,
            "cuda": torch.version.cuda, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python"] + sys.argv), "timing": "CUDA graph replays" if GRAPH else "eager calls"}
    t0 = time.time()
    g.load()
    info["build_or_load_s"] = round(time.time() - t0, 1)
    bw = copy_bandwidth()
    info["copy_bandwidth_TBps"] = round(bw / 1e12, 3)
    print(json.dumps(info), flush=True)
    shapes = SHAPES[:2] + SHAPES[-1:] if args.quick else SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    codes = args.codes.split(",") if args.codes else (["1mad", "hyb", "lattice"] if args.quick else ALL_CODES)
    if args.kb_sweep:
        kb_sweep()
    if args.variant_sweep:
        variant_sweep(shapes if args.shapes else [(8192, 28672), (28672, 8192)], out_dir)
    if args.sweeps_only:
        return
    rows_out = []
    for rows, cols in shapes:
        seed = 0x5EED1234
        br, bc = hadamard.default_block(rows), hadamard.default_block(cols)
        nbytes16 = rows * cols * 2
        for m in (1, 4, 16):
            x16 = torch.randn(m, cols, device=DEV, dtype=torch.float16)

            def make_fp16():
                W = torch.randn(rows, cols, device=DEV, dtype=torch.float16)
                return lambda: torch.matmul(x16, W.t())

            t16 = cold_time(make_fp16, nbytes16)
            xb = x16.to(torch.bfloat16)

            def make_int4():
                wp, sz = int4_layer(rows, cols)
                return lambda: torch.ops.aten._weight_int4pack_mm(xb, wp, 128, sz)

            t4 = cold_time(make_int4, rows * cols // 2 + (rows * cols // 128) * 4)
            row = {"out": rows, "in": cols, "m": m, "fp16_us": t16, "int4_us": t4}
            xt = torch.randn(m, cols, device=DEV, dtype=torch.float32)
            xh = xt.half()
            for name in codes:
                for k in (2, 3, 4):
                    nb = rows * cols * k // 8
                    if name.startswith("lattice"):
                        def make_kernel():
                            pl, pr = lattice_layer(rows, cols, k)
                            h = g.lattice_prepare(pl, pr)
                            tl = g.lattice_tile(h, rows, cols) if name == "lattice_tiled" else None
                            return lambda: g.lattice_gemv(pl, pr, rows, cols, xh, prepared=h, tiled=tl)

                        def make_layer():
                            pl, pr = lattice_layer(rows, cols, k)
                            h = g.lattice_prepare(pl, pr)
                            tl = g.lattice_tile(h, rows, cols) if name == "lattice_tiled" else None

                            def f():
                                a = g.rht_side(x16, bc, seed, 1, True, out_dtype=torch.float16)
                                y = g.lattice_gemv(pl, pr, rows, cols, a, prepared=h, tiled=tl)
                                return g.rht_side(y, br, seed, 0, False, out_dtype=torch.float16)

                            return f
                    else:
                        def make_kernel():
                            pl, pr = trellis_layer(rows, cols, CODES[name], k)
                            return lambda: g.trellis_gemv(pl, pr, rows, cols, xt)

                        def make_layer():
                            pl, pr = trellis_layer(rows, cols, CODES[name], k)

                            def f():
                                a = g.rht_side(x16, bc, seed, 1, True, out_dtype=torch.float32)
                                y = g.trellis_gemv(pl, pr, rows, cols, a)
                                return g.rht_side(y, br, seed, 0, False, out_dtype=torch.float16)

                            return f

                    tk = cold_time(make_kernel, nb)
                    tl = cold_time(make_layer, nb)
                    row[f"{name}{k}_kernel_us"] = tk
                    row[f"{name}{k}_layer_us"] = tl
                    row[f"{name}{k}_TBps"] = nb / (tk * 1e-6) / 1e12
            if "lattice" in codes:  # the unfused alternative: decode W' into a reused fp16 buffer + cuBLAS
                buf = torch.empty(rows, cols, dtype=torch.float16, device=DEV)
                for k in (2, 4):
                    def make_ldg():
                        pl, pr = lattice_layer(rows, cols, k)
                        h = g.lattice_prepare(pl, pr)
                        return lambda: torch.matmul(x16, g.lattice_decode(pl, pr, rows, cols, out=buf, check=False,
                                                                          prepared=h).t())

                    row[f"decode_gemm_lattice{k}_us"] = cold_time(make_ldg, rows * cols * k // 8, reps=50)
            if m == 16 and "1mad" in codes:  # the unfused alternative: decode W' into a reused buffer, then cuBLAS
                buf = torch.empty(rows, cols, dtype=torch.float16, device=DEV)

                def make_dg():
                    pl, pr = trellis_layer(rows, cols, 0, 2)
                    return lambda: torch.matmul(x16, g.trellis_decode(pl, pr, rows, cols, out=buf).t())

                row["decode_gemm_1mad2_us"] = cold_time(make_dg, rows * cols // 4, reps=50)
            rows_out.append(row)
            print(json.dumps({k2: (round(v, 2) if isinstance(v, float) else v) for k2, v in row.items()}), flush=True)
    # decode-to-float16 throughput (largest layer, W' domain and the bit-exact dense decode)
    dec = []
    if args.no_decode:
        res = {"info": info, "layers": rows_out, "decode": dec}
        (out_dir / "gpu_bench.json").write_text(json.dumps(res, indent=1))
        table(res, codes, out_dir)
        return
    codes_dec = [c for c in codes if c != "lattice_tiled"]
    rows, cols = 8192, 28672
    for name in codes_dec:
        for k in (2, 4):
            if name == "lattice":
                pl, pr = lattice_layer(rows, cols, k)
                buf = torch.empty(rows, cols, dtype=torch.float16, device=DEV)
                t = cold_time(lambda: (lambda: g.lattice_decode(pl, pr, rows, cols, out=buf, check=False)), 1 << 40,
                              reps=20)
                dec.append({"what": f"lattice {k} bits -> W' fp16", "us": t,
                            "out_TBps": rows * cols * 2 / (t * 1e-6) / 1e12})
                continue
            pl, pr = trellis_layer(rows, cols, CODES[name], k)
            buf = torch.empty(rows, cols, dtype=torch.float16, device=DEV)
            t = cold_time(lambda: (lambda: g.trellis_decode(pl, pr, rows, cols, out=buf)), 1 << 40, reps=20)
            dec.append({"what": f"trellis {name} k={k} -> W' fp16", "us": t, "out_TBps": rows * cols * 2 / (t * 1e-6) / 1e12})
    pl, pr = lattice_layer(4096, 4096, 2)
    wp = g.lattice_decode(pl, pr, 4096, 4096)
    t = cold_time(lambda: (lambda: g.inverse_rht_2d(wp, 7, 512, 512, out_dtype=torch.float16)), 1 << 40, reps=20)
    dec.append({"what": "bit-exact inverse RHT 4096x4096 (512 blocks) f32 -> fp16", "us": t,
                "out_TBps": 4096 * 4096 * 2 / (t * 1e-6) / 1e12})
    # PVQ: enumeration decode of W' (random valid indices), 4096 x 4096
    from pvqcodec.codecs.pvq import enumeration
    from pvqcodec.coding import RawCoding, StreamSpec
    rng = np.random.default_rng(0)
    for d, k, gb in ((32, 22, 4), (32, 44, 4), (8, 6, 2)):
        prow, pcol = 4096, 4096
        groups = prow * pcol // d
        ib = enumeration.index_bits(d, k)
        y = np.zeros((groups, d), np.int64)
        pos = rng.integers(0, d, (groups, k))
        for j in range(k):
            np.add.at(y, (np.arange(groups), pos[:, j]), 1)
        y *= rng.choice([-1, 1], (groups, d))
        idx = enumeration.encode_indices(y, k)
        params = {"group_size": d, "pulses": k, "gain_bits": gb, "gain_table": np.linspace(0.5, 2, 1 << gb).astype(np.float32)}
        pls = [RawCoding.encode(np.full(prow, 0x3C00, np.uint16), StreamSpec("s", prow, 16)),
               RawCoding.encode(rng.integers(0, 1 << gb, groups).astype(np.uint8), StreamSpec("g", groups, gb)),
               RawCoding.encode(idx, StreamSpec("i", groups, ib))]
        pls = [torch.from_numpy(np.ascontiguousarray(p)).to(DEV) for p in pls]
        out = torch.empty(prow, pcol, dtype=torch.float32, device=DEV)
        g.pvq_decode(pls, params, prow, pcol, out=out)
        t = cold_time(lambda: (lambda: g.pvq_decode(pls, params, prow, pcol, out=out)), 1 << 40, reps=10, graph=False)
        bpw = (gb + ib) / d
        dec.append({"what": f"pvq D={d} K={k} ({bpw:.2f} bpw) -> W' f32 (incl. error-flag sync)", "us": t,
                    "out_TBps": prow * pcol * 4 / (t * 1e-6) / 1e12})
    for r in dec:
        print(json.dumps(r), flush=True)
    res = {"info": info, "layers": rows_out, "decode": dec}
    (out_dir / "gpu_bench.json").write_text(json.dumps(res, indent=1))
    table(res, codes, out_dir)


#: Tuning variants of the tiled lattice kernel (gpu_decoder/lattice_gemv.cu, kVariants); 7 and 8
#: are timing diagnostics whose output is meaningless.
VARIANTS = {0: "default", 1: "version 5 decode, 8 warps", 2: "lean + acc2, 8 warps (version 6)",
            3: "lean + acc2 + 2 ahead, 8 warps", 4: "lean + acc2, 16 warps", 5: "lean, 16 warps",
            6: "lean + acc2, 12 warps", 7: "diag: payload loads only (16 warps)", 8: "diag: decode + mma only (16 warps)",
            9: "lean + acc2 + k16, 16 warps", 10: "lean + acc2 + k16, 8 warps", 11: "diag: decode + mma only, k16",
            12: "lean + acc2 + k16 (stage 2 only), 16 warps", 13: "diag: decode + mma only, k16 stage 2"}
DIAG_VARIANTS = (7, 8, 11, 13)


def variant_sweep(shapes, out_dir):
    """The tiled lattice kernel's tuning variants (and column splits of the default) on large
    layers, weights from HBM, each non-diagnostic variant checked against version 5."""
    res = []
    for rows, cols in shapes:
        for bits in (2, 4):
            nb = rows * cols * bits // 8
            layers = []
            for _ in range(max(1, -(-FLUSH // nb))):
                pl, pr = lattice_layer(rows, cols, bits)
                h = g.lattice_prepare(pl, pr)
                layers.append((pr, h, g.lattice_tile(h, rows, cols)))
            for m in (1, 4):
                xh = torch.randn(m, cols, device=DEV, dtype=torch.float16)
                pr, h, tl = layers[0]
                ref = g.lattice_gemv(None, pr, rows, cols, xh, prepared=h, tiled=tl, variant=1)
                runs = [(v, 0) for v in VARIANTS] + ([(0, kb) for kb in (8, 14, 28)] if m == 1 else [])
                for v, kb in runs:
                    err = None
                    if v not in DIAG_VARIANTS:
                        y = g.lattice_gemv(None, pr, rows, cols, xh, prepared=h, tiled=tl, variant=v, kb=kb)
                        err = float((y - ref).abs().max() / ref.abs().max())
                    fns = [(lambda L=L, v=v, kb=kb: g.lattice_gemv(None, L[0], rows, cols, xh, prepared=L[1],
                                                                   tiled=L[2], variant=v, kb=kb)) for L in layers]
                    t = time_fns(fns)
                    r = {"shape": f"{rows}x{cols}", "bits": bits, "m": m, "variant": v, "name": VARIANTS[v], "kb": kb,
                         "us": round(t, 2), "TBps": round(nb / (t * 1e-6) / 1e12, 3),
                         "maxdiff_vs_v5": None if err is None else float(f"{err:.2e}")}
                    res.append(r)
                    print(json.dumps(r), flush=True)
            del layers
            torch.cuda.empty_cache()
    (out_dir / "variant_sweep.json").write_text(json.dumps(res, indent=1))
    print("| shape | bits | m | " + " | ".join(f"v{v}" for v in VARIANTS) + " | default kb 8/14/28 |")
    for key in sorted({(r["shape"], r["bits"], r["m"]) for r in res}):
        rr = [r for r in res if (r["shape"], r["bits"], r["m"]) == key]
        cells = [f"{r['us']:.1f}" for r in rr if r["kb"] == 0]
        kbs = "/".join(f"{r['us']:.1f}" for r in rr if r["kb"] != 0)
        print(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + f" | {kbs} |")


def profile_once():
    """One call of the default fused lattice kernel per rate on 8192 x 28672, batch 1 (for ncu)."""
    rows, cols = 8192, 28672
    xh = torch.randn(1, cols, device=DEV, dtype=torch.float16)
    for bits in (2, 4):
        pl, pr = lattice_layer(rows, cols, bits)
        h = g.lattice_prepare(pl, pr)
        tl = g.lattice_tile(h, rows, cols)
        for _ in range(3):
            g.lattice_gemv(None, pr, rows, cols, xh, prepared=h, tiled=tl)
    torch.cuda.synchronize()


def kb_sweep():
    """The fused lattice kernel on 8192 x 28672 for several column splits (tuning aid)."""
    rows, cols = 8192, 28672
    for bits in (2, 4):
        for m in (1, 16):
            xh = torch.randn(m, cols, device=DEV, dtype=torch.float16)
            cells = []
            for kb in (0, 1, 2, 4, 7, 14, 28):
                if m * (kb * 64 + 4) * 16 > 100 * 1024:
                    continue

                def mk():
                    pl, pr = lattice_layer(rows, cols, bits)
                    h = g.lattice_prepare(pl, pr)
                    return lambda: g.lattice_gemv(pl, pr, rows, cols, xh, kb=kb, prepared=h)

                cells.append(f"kb={kb}: {cold_time(mk, rows * cols * bits // 8):.1f}")
            print(f"kb sweep {bits} bits m={m}: " + ", ".join(cells) + " us",
                  flush=True)


def table(res, codes, out_dir):
    bw = res["info"]["copy_bandwidth_TBps"]
    lines = ["| out x in | m | fp16 us | int4 x | " + " | ".join(f"{c} {k}b x (layer x, TB/s)" for c in codes for k in (2, 3, 4)) + " |",
             "|---|---|---|---|" + "---|" * (3 * len(codes))]
    for r in res["layers"]:
        cells = [f"{r['out']}x{r['in']}", str(r["m"]), f"{r['fp16_us']:.1f}", f"{r['fp16_us'] / r['int4_us']:.2f}"]
        for c in codes:
            for k in (2, 3, 4):
                cells.append(f"{r['fp16_us'] / r[f'{c}{k}_kernel_us']:.2f} ({r['fp16_us'] / r[f'{c}{k}_layer_us']:.2f}, "
                             f"{r[f'{c}{k}_TBps']:.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for r in res["layers"]:
        if "decode_gemm_lattice2_us" in r:
            lines.append(f"- m={r['m']} {r['out']}x{r['in']}: lattice decode W' to fp16 buffer + cuBLAS 2 / 4 bits "
                         f"{r['decode_gemm_lattice2_us']:.1f} / {r['decode_gemm_lattice4_us']:.1f} us vs fused "
                         f"{r['lattice2_kernel_us']:.1f} / {r['lattice4_kernel_us']:.1f} us "
                         f"vs fp16 {r['fp16_us']:.1f} us")
        if "decode_gemm_1mad2_us" in r:
            lines.append(f"- m=16 {r['out']}x{r['in']}: decode W' to fp16 buffer + cuBLAS {r['decode_gemm_1mad2_us']:.1f} us "
                         f"vs fused {r['1mad2_kernel_us']:.1f} us vs fp16 {r['fp16_us']:.1f} us")
    lines.append(f"copy bandwidth {bw} TB/s (read + write)")
    for d in res["decode"]:
        lines.append(f"- {d['what']}: {d['us']:.1f} us, {d['out_TBps']:.2f} TB/s of output")
    text = "\n".join(lines)
    (out_dir / "gpu_bench_table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--codes", default=None, help="comma list of " + ",".join(ALL_CODES))
    ap.add_argument("--kb-sweep", action="store_true", help="time the fused lattice kernel's column splits first")
    ap.add_argument("--no-graph", action="store_true", help="time eager calls instead of CUDA-graph replays")
    ap.add_argument("--shapes", default=None, help="comma list of OUTxIN layer shapes (default: the built-in list)")
    ap.add_argument("--no-decode", action="store_true", help="skip the decode-throughput section")
    ap.add_argument("--variant-sweep", action="store_true",
                    help="time the tiled lattice kernel's tuning variants first (on --shapes, else the two largest)")
    ap.add_argument("--sweeps-only", action="store_true", help="stop after the sweeps")
    ap.add_argument("--profile-once", action="store_true", help="only run the default lattice kernel a few times (ncu)")
    a = ap.parse_args()
    GRAPH = not a.no_graph
    if a.profile_once:
        profile_once()
    else:
        run(a)
