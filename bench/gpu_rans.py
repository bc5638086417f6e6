"""GPU rans decoder (gpu_decoder/rans.cu, spec 4.3) beside NVIDIA nvCOMP's ANS decoder (issue 8).

Data: 4-bit indices of a uniform scalar quantizer on Gaussian values (step 0.365 sigma, 16 levels,
clipped): entropy about 3.5 bits. Our payloads come from the reference encoder (table mode, P = 12,
64 Ki-symbol chunks); the largest buffers repeat the chunks of a 64 Mi-symbol encoding (each chunk
decodes on its own, so the work per chunk is that of real data). nvCOMP (`nvidia-nvcomp-cu13`,
algorithm "ANS", 64 KiB chunks, best of its two execution policies) codes the same symbols:
(a) one symbol per byte, compared with our decoder writing uint8 symbols; (b) two symbols per byte,
compared with our decoder writing the raw packed layout (4 bits per symbol, LSB first: the same bytes).

Throughput is GB/s of decoded output. Every call reads its compressed input from HBM: the inputs
cycle through copies past 256 MB (the H100's L2 holds 50 MB). Times: median over 7 rounds of
wall-clock time per call (device synchronized at each round's end), for our API call with its error
check (one device sync per call, as at load time) and without it (errors checked once per round),
and for nvCOMP's `Codec.decode`. "ours" is the default (plain) kernel; the opt-in speculative variant
(gpu_decoder.RANS_SPECULATIVE) is timed beside it. Every output is checked against the symbols.

    python bench/gpu_rans.py [--sizes 4,8,64,128] [--out DIR]     # PYTHONPATH=<repo>:<nvcomp wheels>
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gpu_decoder as g  # noqa: E402
from pvqcodec.coding import StreamSpec  # noqa: E402
from pvqcodec.coding.rans import RansCoding, build_rans_header, parse_rans_header  # noqa: E402

DEV = torch.device("cuda")
FLUSH = 256 << 20
STEP = 0.365
BASE_SYMBOLS = 64 << 20
MB = 1 << 20


def quantized_gaussian(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator(device=DEV).manual_seed(seed)
    x = torch.randn(n, generator=gen, device=DEV)
    return torch.clamp(torch.floor(x / STEP) + 8, 0, 15).to(torch.uint8)


def entropy_bits(sym: torch.Tensor) -> float:
    p = torch.bincount(sym.long(), minlength=16).double() / sym.numel()
    p = p[p > 0]
    return float(-(p * torch.log2(p)).sum())


def tiled_payload(base: np.ndarray, spec_base: StreamSpec, chunks: int) -> np.ndarray:
    """A valid payload of `chunks` chunks: the base payload's chunks in order, repeated."""
    h = parse_rans_header(base, spec_base)
    lens = np.diff(np.concatenate([[0], h.chunk_end.astype(np.int64)]))
    reps = np.arange(chunks) % h.chunk_count
    chunk_end = np.cumsum(lens[reps]).astype(np.uint64)
    data = base[h.data_offset:]
    full, rem = divmod(chunks, h.chunk_count)
    parts = [data] * full + ([data[: 2 * int(h.chunk_end[rem - 1])]] if rem else [])
    head = np.frombuffer(build_rans_header(h.mode, h.precision, h.chunk_symbols, chunks, h.freq, chunk_end), np.uint8)
    return np.concatenate([head] + parts)


def timed(fn, calls: int, rounds: int = 7) -> float:
    """Median seconds per call over `rounds` rounds of `calls` calls (fn(i) for i in range(calls))."""
    for i in range(min(3, calls)):
        fn(i)
    torch.cuda.synchronize()
    ts = []
    for _ in range(rounds):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(calls):
            fn(i)
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) / calls)
    return statistics.median(ts)


class Ours:
    """Our decoder on copies of one payload (rotated), writing uint8 symbols or the packed layout."""

    def __init__(self, payload: np.ndarray, spec: StreamSpec, form: str):
        self.spec, self.form = spec, form
        t0 = time.perf_counter()
        self.plan = g.rans_plan(payload, spec, DEV)
        self.plan_s = time.perf_counter() - t0
        self.size = payload.size
        host = torch.from_numpy(payload)
        self.copies = [host.to(DEV) for _ in range(max(1, -(-FLUSH // payload.size)))]
        n = spec.count
        out_bytes = n if form == "u8" else n // 2
        self.outs = [torch.empty(n if form == "u8" else -(-4 * self.plan.packed_words() // 16) * 16, dtype=torch.uint8,
                                 device=DEV) for _ in range(max(1, min(len(self.copies), -(-FLUSH // out_bytes))))]
        self.errs = []

    def __call__(self, i: int, check: bool = True, fused: bool = True, spec=None):
        p = self.copies[i % len(self.copies)]
        o = self.outs[i % len(self.outs)]
        if self.form == "u8":
            r = g.rans_decode(p, self.spec, self.plan, packed=False, symbols=True, out_symbols=o, check=check,
                              speculative=spec)
            out = r[1]
        else:
            r = g.rans_decode(p, self.spec, self.plan, out_packed=o, fused_pack=fused, check=check, speculative=spec)
            out = r[0]
        if not check:
            self.errs.append(r[2])
        return out

    def check_errors(self):
        if self.errs:
            assert int(torch.stack(self.errs).sum()) == 0, "decode errors"
            self.errs = []


class NvComp:
    """nvCOMP's ANS codec on copies of the same bytes (each copy encoded separately)."""

    def __init__(self, data: torch.Tensor, policy):
        from nvidia import nvcomp

        self.nvcomp = nvcomp
        kw = {"algorithm": "ANS", "cuda_stream": torch.cuda.current_stream().cuda_stream}
        if policy is not None:
            kw["execution_policy"] = policy
        self.codec = nvcomp.Codec(**kw)
        first = self.codec.encode(nvcomp.as_array(data))
        torch.cuda.synchronize()
        self.size = int(first.buffer_size)
        k = max(1, -(-FLUSH // self.size))
        self.enc = [first] + [self.codec.encode(nvcomp.as_array(data)) for _ in range(k - 1)]
        torch.cuda.synchronize()

    def __call__(self, i: int):
        return self.codec.decode(self.enc[i % len(self.enc)])


def nvcomp_policies():
    try:
        from nvidia import nvcomp
    except ImportError:
        return None
    pol = getattr(nvcomp, "ExecutionPolicy", None)
    return [None] + ([pol.LATENCY] if pol is not None and hasattr(pol, "LATENCY") else [])


def as_torch(arr) -> torch.Tensor:
    return torch.as_tensor(arr, device=DEV).view(torch.uint8).reshape(-1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="4,8,64,128", help="decoded output sizes in MB")
    ap.add_argument("--total-gb", type=float, default=4.0, help="decoded output of the long run, in GB")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    props = torch.cuda.get_device_properties(0)
    print(f"{props.name}, {props.multi_processor_count} SMs, torch {torch.__version__}, "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    policies = nvcomp_policies()
    if policies is None:
        print("nvCOMP not importable: its columns are left out")
    else:
        from nvidia import nvcomp

        print(f"nvCOMP {nvcomp.__version__}")

    max_sym = max(max(sizes) * MB * 2, BASE_SYMBOLS)
    sym_all = quantized_gaussian(max_sym)
    sym_all[BASE_SYMBOLS:] = sym_all[:BASE_SYMBOLS].repeat(max_sym // BASE_SYMBOLS - 1)  # the tiled chunks' symbols
    H = entropy_bits(sym_all[:BASE_SYMBOLS])
    spec_base = StreamSpec("indices", BASE_SYMBOLS, 4)
    t0 = time.perf_counter()
    base = RansCoding.encode(sym_all[:BASE_SYMBOLS].cpu().numpy(), spec_base, mode="table", precision=12)
    print(f"symbols: 4-bit, entropy {H:.3f} bits; reference encoder: {BASE_SYMBOLS / MB:.0f} Mi symbols in "
          f"{time.perf_counter() - t0:.1f} s, {8 * base.size / BASE_SYMBOLS:.3f} bits/symbol")
    S = 65536

    results = []
    for form in ("u8", "packed4"):
        for mb in sizes:
            n = mb * MB * (1 if form == "u8" else 2)
            spec = StreamSpec("indices", n, 4)
            payload = tiled_payload(base, spec_base, n // S)
            ours = Ours(payload, spec, form)
            sym = sym_all[:n]
            ref = sym if form == "u8" else (sym[0::2] | (sym[1::2] << 4))
            out_bytes = ref.numel()
            for sp in (True, False):
                assert torch.equal(ours(0, spec=sp), ref), f"our decode differs ({form}, {mb} MB, speculative {sp})"
            calls = max(len(ours.copies), 10)
            t_spec = timed(lambda i: ours(i, check=False, spec=True), calls)
            t_chk = timed(lambda i: ours(i, spec=False), calls)
            t_async = timed(lambda i: ours(i, check=False, spec=False), calls)
            ours.check_errors()
            r = {"form": form, "MB": mb, "symbols": n, "out_bytes": out_bytes, "ours_bytes": int(payload.size),
                 "ours_bps": 8 * payload.size / n, "ours_s": t_chk, "ours_async_s": t_async, "ours_spec_s": t_spec,
                 "plan_s": ours.plan_s}
            if form == "packed4":
                r["ours_2kernel_s"] = timed(lambda i: ours(i, check=False, fused=False), calls)
                ours.check_errors()
            best = None
            if policies is not None:
                for pol in policies:
                    nv = NvComp(ref, pol)
                    dec = as_torch(nv(0))
                    assert torch.equal(dec, ref), "nvCOMP round trip differs"
                    t = timed(nv, max(len(nv.enc), 10))
                    if best is None or t < best[0]:
                        best = (t, str(pol), nv.size)
                    nv = None
                r.update({"nv_s": best[0], "nv_policy": best[1], "nv_bytes": best[2], "nv_bps": 8 * best[2] / n})
            results.append(r)
            ours = None
            torch.cuda.empty_cache()
            line = (f"{form:8s} {mb:4d} MB out: ours {out_bytes / r['ours_s'] / 1e9:7.1f} GB/s "
                    f"(async {out_bytes / r['ours_async_s'] / 1e9:7.1f}, speculative variant "
                    f"{out_bytes / r['ours_spec_s'] / 1e9:7.1f}) {r['ours_bps']:.3f} b/sym")
            if best:
                line += (f" | nvCOMP {out_bytes / best[0] / 1e9:7.1f} GB/s {r['nv_bps']:.3f} b/sym "
                         f"[{best[1]}] | ratio {best[0] / r['ours_s']:.2f}x")
            print(line, flush=True)

    # Small buffers hold few chunks (4 MB of uint8 output: 64 warps): the same data in 16 Ki-symbol
    # chunks, 4x the parallelism for 3x the state overhead (ours only; nvCOMP as above).
    small = [mb for mb in sizes if mb <= 8]
    if small:
        n16 = max(small) * MB * 2
        s16 = StreamSpec("indices", n16, 4)
        base16 = RansCoding.encode(sym_all[:n16].cpu().numpy(), s16, mode="table", precision=12, chunk_symbols=16384)
        for form in ("u8", "packed4"):
            for mb in small:
                n = mb * MB * (1 if form == "u8" else 2)
                spec = StreamSpec("indices", n, 4)
                payload = tiled_payload(base16, s16, n // 16384)
                ours = Ours(payload, spec, form)
                ref = sym_all[:n] if form == "u8" else (sym_all[:n][0::2] | (sym_all[:n][1::2] << 4))
                assert torch.equal(ours(0), ref)
                calls = max(len(ours.copies), 10)
                t_async = timed(lambda i: ours(i, check=False), calls)
                ours.check_errors()
                r = {"form": form, "MB": mb, "S": 16384, "out_bytes": ref.numel(), "ours_async_s": t_async,
                     "ours_bps": 8 * payload.size / n}
                results.append(r)
                ours = None
                print(f"{form:8s} {mb:4d} MB out, 16 Ki-symbol chunks: ours async "
                      f"{ref.numel() / t_async / 1e9:7.1f} GB/s {r['ours_bps']:.3f} b/sym", flush=True)

    # The long run: `total_gb` of decoded output through repeated calls on the largest buffer.
    long_rows = []
    mb = max(sizes)
    for form in ("u8", "packed4"):
        n = mb * MB * (1 if form == "u8" else 2)
        spec = StreamSpec("indices", n, 4)
        ours = Ours(tiled_payload(base, spec_base, n // S), spec, form)
        out_bytes = n if form == "u8" else n // 2
        calls = int(round(args.total_gb * 1e9 / out_bytes))
        ours(0)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(calls):
            ours(i, check=False)
        torch.cuda.synchronize()
        t = time.perf_counter() - t0
        ours.check_errors()
        lr = {"form": form, "calls": calls, "MB_each": mb, "out_GB": calls * out_bytes / 1e9, "seconds": t}
        if policies is not None:
            ref = sym_all[:n] if form == "u8" else (sym_all[:n][0::2] | (sym_all[:n][1::2] << 4))
            nv = NvComp(ref, None)
            nv(0)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for i in range(calls):
                nv(i)
            torch.cuda.synchronize()
            lr["nv_seconds"] = time.perf_counter() - t0
            nv = None
        long_rows.append(lr)
        ours = None
        torch.cuda.empty_cache()
        print(f"long run {form}: {calls} x {mb} MB = {lr['out_GB']:.2f} GB decoded in {t:.3f} s "
              f"({lr['out_GB'] / t:.0f} GB/s)" + (f"; nvCOMP {lr['nv_seconds']:.3f} s" if "nv_seconds" in lr else ""))

    table = ["| output | MB out | ours GB/s (1 sync/call) | ours GB/s (async) | speculative variant GB/s (async) | "
             "nvCOMP GB/s | "
             "ours / nvCOMP | ours bits/sym | nvCOMP bits/sym |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "S" in r:
            continue
        nvg = f"{r['out_bytes'] / r['nv_s'] / 1e9:.1f}" if "nv_s" in r else "-"
        ratio = f"{r['nv_s'] / r['ours_s']:.2f}x" if "nv_s" in r else "-"
        nvb = f"{r['nv_bps']:.3f}" if "nv_s" in r else "-"
        table.append(f"| {'uint8 symbols' if r['form'] == 'u8' else 'packed 4-bit'} | {r['MB']} | "
                     f"{r['out_bytes'] / r['ours_s'] / 1e9:.1f} | {r['out_bytes'] / r['ours_async_s'] / 1e9:.1f} | "
                     f"{r['out_bytes'] / r['ours_spec_s'] / 1e9:.1f} | {nvg} | "
                     f"{ratio} | {r['ours_bps']:.3f} | {nvb} |")
    extra = [f"- packed 4-bit, {r['MB']} MB: decode to uint8 + separate pack kernel "
             f"{r['out_bytes'] / r['ours_2kernel_s'] / 1e9:.1f} GB/s vs fused packing "
             f"{r['out_bytes'] / r['ours_async_s'] / 1e9:.1f} GB/s (both async)"
             for r in results if "ours_2kernel_s" in r]
    extra += [f"- {'uint8 symbols' if r['form'] == 'u8' else 'packed 4-bit'}, {r['MB']} MB, 16 Ki-symbol chunks: "
              f"ours {r['out_bytes'] / r['ours_async_s'] / 1e9:.1f} GB/s (async), {r['ours_bps']:.3f} bits/sym"
              for r in results if "S" in r]
    extra.append(f"- host header parse + table upload (rans_plan), 128 MB payload: "
                 f"{1e3 * max(r.get('plan_s', 0) for r in results):.2f} ms at most")
    print("\n".join(table + extra))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        summary = {"entropy": H, "rows": results, "long": long_rows}
        Path(args.out, "gpu_rans.json").write_text(json.dumps(summary, indent=1))
        Path(args.out, "gpu_rans_table.md").write_text("\n".join(table + extra) + "\n")


if __name__ == "__main__":
    main()
