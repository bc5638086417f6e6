"""The trellis encoder's Viterbi search on the GPU against the Numba encoder (issue 6; results in
bench/RESULTS.md, "GPU Viterbi").

    python bench/gpu_viterbi.py                       # L = 12 and 16, 1MAD, k = 2, 3, 4
    python bench/gpu_viterbi.py --L 16 --k 2 --code 1mad 3inst hyb --threads 256 512 1024

Part 1, the search alone: N(0, 1) tiles at the scale the encoder searches at, through the kernel
(gpu_decoder.trellis_viterbi, device tensors, timed between synchronizations after a warm-up) and
through Numba's viterbi_encode on every core of this machine (a subset of the same tiles); the
states and costs of that subset are compared bit for bit. Part 2, the codec: a 1024 x 1024 N(0, 1)
matrix encoded by encode_trellis with device cpu and cuda (scale, search, refit, words), the
streams compared, both decoded by the reference decoder and their MSE printed.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numba
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gpu_decoder  # noqa: E402
from pvqcodec.codecs.trellis import TrellisCodec, codes, default_gain, encode_trellis  # noqa: E402
from pvqcodec.codecs.trellis.viterbi import viterbi_encode  # noqa: E402


def search_inputs(code, L, k, n, weight=1.0, seed=0):
    """n tiles of N(0, 1) data divided by the encoder's first scale guess, every weight `weight`."""
    V = codes.CODE_V[code]
    z = np.random.default_rng(seed).standard_normal((n, 256 // V, V))
    x = (z * codes.code_rms(code, L) / default_gain(code, k)).astype(np.float32)
    return x, np.full_like(x, weight)


def time_gpu(x, w, code, L, k, threads=0, repeat=2):
    n = x.shape[0]
    xt = torch.from_numpy(x.reshape(n, 256)).cuda()
    wt = torch.from_numpy(w.reshape(n, 256)).cuda()
    seam = 256 // codes.CODE_V[code] // 2
    gpu_decoder.trellis_viterbi(xt[:64], wt[:64], code, L, k, seam, threads=threads)  # warm-up
    best = None
    for _ in range(repeat):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        st, c = gpu_decoder.trellis_viterbi(xt, wt, code, L, k, seam, threads=threads)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best, st.cpu().numpy(), c.cpu().numpy()


def time_cpu(x, w, code, L, k):
    lut = codes.code_lut(code, L)
    kv = k * codes.CODE_V[code]
    viterbi_encode(x[:1], w[:1], lut, L, kv)  # warm-up (Numba's compilation or cache)
    t0 = time.perf_counter()
    st, c = viterbi_encode(x, w, lut, L, kv)
    return time.perf_counter() - t0, st, c


def part_search(args, out):
    print(f"# search alone: GPU {torch.cuda.get_device_name()} ; CPU Numba, {numba.get_num_threads()} threads "
          f"({os.cpu_count()} cores); weights {args.weight}")
    print("| code | L | k | threads | GPU weights | GPU s | GPU weights/s | minutes per 10^9 weights | "
          "CPU weights | CPU weights/s | GPU / CPU | same states and costs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for L in args.L:
        for k in args.k:
            for name in args.code:
                code = codes.CODE_IDS[name]
                if k * codes.CODE_V[code] > L:
                    continue
                n = max(64, (args.gpu_weights if L >= 16 else 4 * args.gpu_weights) // 256)
                ncpu = max(4, min(n, (args.cpu_weights if L >= 16 else 16 * args.cpu_weights) // 256))
                x, w = search_inputs(code, L, k, n, args.weight)
                tc, st_c, c_c = time_cpu(x[:ncpu], w[:ncpu], code, L, k)
                for threads in args.threads:
                    tg, st_g, c_g = time_gpu(x, w, code, L, k, threads)
                    same = (np.array_equal(st_g[:ncpu], st_c)
                            and c_g[:ncpu].tobytes() == c_c.astype(np.float32).tobytes())
                    gws, cws = n * 256 / tg, ncpu * 256 / tc
                    row = dict(code=name, L=L, k=k, threads=threads or 512, gpu_weights=n * 256, gpu_s=tg,
                               gpu_wps=gws, min_per_g=1e9 / gws / 60, cpu_weights=ncpu * 256, cpu_wps=cws,
                               ratio=gws / cws, same=bool(same))
                    out.append(row)
                    print(f"| {name} | {L} | {k} | {row['threads']} | {n * 256:,} | {tg:.3f} | {gws / 1e6:.2f} M | "
                          f"{row['min_per_g']:.1f} | {ncpu * 256:,} | {cws / 1e3:.1f} k | {gws / cws:.0f}x | "
                          f"{'yes' if same else 'NO'} |", flush=True)


def part_codec(args, out):
    print(f"\n# codec: encode_trellis on a {args.rows} x {args.cols} N(0, 1) matrix, device cpu and cuda")
    print("| code | L | k | cpu s | cuda s | speed-up | streams equal | MSE cpu | MSE cuda |")
    print("|---|---|---|---|---|---|---|---|---|")
    codec = TrellisCodec()
    wp = np.random.default_rng(1).standard_normal((args.rows, args.cols))
    for L, k in args.codec_cases:
        for name in args.codec_code:
            opts = {"bits": k, "code": name, "trellis_L": L}
            encode_trellis(wp[:16, :256], {**opts, "device": "cpu"})  # warm-ups
            encode_trellis(wp[:16, :256], {**opts, "device": "cuda"})
            res = {}
            for dev in ("cpu", "cuda"):
                t0 = time.perf_counter()
                enc = encode_trellis(wp, {**opts, "device": dev})
                dt = time.perf_counter() - t0
                p = codec.parse_params(codec.build_params(enc.params), args.rows, args.cols, "float32")
                y = codec.decode(p, args.rows, args.cols, "float32", enc.streams)
                res[dev] = (dt, enc, float(np.mean((y - wp) ** 2)))
            (tc, ec, mc), (tg, eg, mg) = res["cpu"], res["cuda"]
            same = (np.float32(ec.params["scale"]).tobytes() == np.float32(eg.params["scale"]).tobytes()
                    and all(np.array_equal(a, b) for a, b in zip(ec.streams, eg.streams)))
            out.append(dict(code=name, L=L, k=k, cpu_s=tc, cuda_s=tg, same=bool(same), mse_cpu=mc, mse_cuda=mg))
            print(f"| {name} | {L} | {k} | {tc:.2f} | {tg:.2f} | {tc / tg:.0f}x | {'yes' if same else 'NO'} | "
                  f"{mc:.5f} | {mg:.5f} |", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--L", type=int, nargs="+", default=[12, 16])
    ap.add_argument("--k", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--code", nargs="+", default=["1mad"], choices=sorted(codes.CODE_IDS))
    ap.add_argument("--threads", type=int, nargs="+", default=[0], help="block sizes to time (0: the default)")
    ap.add_argument("--gpu-weights", type=int, default=1 << 23, help="weights searched on the GPU at L = 16 "
                    "(4x at smaller L)")
    ap.add_argument("--cpu-weights", type=int, default=1 << 17, help="weights searched by Numba at L = 16 "
                    "(16x at smaller L)")
    ap.add_argument("--weight", type=float, default=1.0, help="the weight of every value in part 1 (1: the "
                    "kernel's unit-weight steps; any other value times its general steps)")
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--cols", type=int, default=1024)
    ap.add_argument("--codec-cases", default="12:2,12:3,12:4,16:2", help="L:k pairs of part 2")
    ap.add_argument("--codec-code", nargs="+", default=["1mad"], choices=sorted(codes.CODE_IDS))
    ap.add_argument("--skip", choices=["search", "codec"], nargs="*", default=[])
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)
    args.codec_cases = [tuple(int(v) for v in c.split(":")) for c in args.codec_cases.split(",") if c]
    out = {"search": [], "codec": []}
    if "search" not in args.skip:
        part_search(args, out["search"])
    if "codec" not in args.skip:
        part_codec(args, out["codec"])
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
