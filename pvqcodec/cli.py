"""The `pvqcodec` command: encode, decode, info, verify.

User mistakes and damaged files end with one line on stderr and exit status 1
(2 for bad command-line usage); a traceback means a bug in pvqcodec.
"""

import argparse
import json
import os
import re
import sys
import time

from . import __version__

EXIT_ERROR = 1
EXIT_USAGE = 2


def _codec_names():
    from .codecs import all_codecs

    return [c.name for c in all_codecs() if c.quantizes]


def build_parser() -> argparse.ArgumentParser:
    from .codecs import all_codecs

    p = argparse.ArgumentParser(prog="pvqcodec", description="Compress LLM weights (safetensors) into .pvqc files and back.")
    p.add_argument("--version", action="version", version=f"pvqcodec {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    e = sub.add_parser("encode", help="compress a safetensors file (or a sharded directory / index) to .pvqc")
    e.add_argument("input", help="a .safetensors file, a directory of shards, or a *.safetensors.index.json")
    e.add_argument("output", help="the .pvqc file to write")
    e.add_argument("--codec", choices=_codec_names(), default="pvq", help="the codec for quantized tensors (default pvq)")
    e.add_argument("--bits", type=float, default=2.0, help="target bits per weight, side information included (default 2.0)")
    e.add_argument("--keep", metavar="REGEX", help="store tensors whose name matches REGEX exactly (raw)")
    e.add_argument("--exclude", metavar="REGEX", help="leave tensors whose name matches REGEX out of the file")
    e.add_argument("--seed", type=int, default=0, help="seed of the randomized Hadamard transform (default 0)")
    e.add_argument("--transform", choices=["rht", "identity"], default="rht", help="incoherence transform (default rht)")
    e.add_argument("--rht-block", default="auto", metavar="auto|full|N",
                   help="Hadamard block order per side: auto (tensor-parallel friendly), full, or N (default auto)")
    e.add_argument("--entropy", choices=["auto", "rans", "none"], default="auto",
                   help="payload coding: auto (rans where it saves at least 1 percent, else raw), rans (every "
                        "payload rans-coded), none (raw only, a version 1.0 file) (default auto)")
    h = e.add_argument_group("Hessian-aware rounding and bit allocation")
    h.add_argument("--hessians", metavar="FILE",
                   help="input second moments per layer (from `pvqcodec calibrate`, or a llama.cpp imatrix): round "
                        "with BlockLDLQ to minimize each layer's output error; tensors without an entry are rounded "
                        "data-free")
    h.add_argument("--damp", type=float, default=0.01,
                   help="damping added to H, as a fraction of its mean diagonal (default 0.01)")
    h.add_argument("--ldlq-passes", type=int, default=2, metavar="N",
                   help="passes of block coordinate descent after BlockLDLQ (default 2: they converge by then; "
                        "QuIP# runs 10)")
    h.add_argument("--allocate", action="store_true",
                   help="choose a rate per tensor so that --bits is met on average with the least total proxy "
                        "error (automatic when --bits is not one of the codec's rates)")
    h.add_argument("--allocate-weight", choices=["auto", "proxy", "fisher"], default="auto",
                   help="what the allocation minimizes: the sum of relative proxy errors (proxy), or of the loss "
                        "increases estimated from each layer's output sensitivity (fisher: needs an H file from "
                        "calibrate --fisher-tokens); auto: fisher where the H file has sensitivities (default)")
    e.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where the encoder's search runs: cpu (default) or cuda (the trellis codec's Viterbi "
                        "search on a GPU: the same file, much faster at large --trellis-L; needs torch with CUDA)")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary table")
    for codec in all_codecs():
        if codec.quantizes:
            codec.add_cli_arguments(e.add_argument_group(f"{codec.name} codec options"))

    d = sub.add_parser("decode", help="decode a .pvqc file back to safetensors")
    d.add_argument("input")
    d.add_argument("output")
    d.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                   help="dtype of quantized tensors (default: each tensor's source dtype); raw tensors keep theirs")
    d.add_argument("-q", "--quiet", action="store_true")
    d.add_argument("--decoder", choices=["python", "c"], default="python",
                   help="the reference decoder to use: python (default) or c (ref_decoder_c, same bits)")

    i = sub.add_parser("info", help="describe a .pvqc file")
    i.add_argument("input")
    i.add_argument("--json", action="store_true", help="machine-readable output")

    c = sub.add_parser("calibrate", help="measure each linear layer's input second moments H = E[x x^T] "
                                         "(needs transformers: pip install \"pvqcodec[calib]\")")
    c.add_argument("model_dir", help="a local Hugging Face causal LM directory (config, safetensors, tokenizer)")
    c.add_argument("--text", required=True, metavar="FILE", help="UTF-8 calibration text")
    c.add_argument("--tokens", type=int, default=65536, metavar="N", help="tokens to run at most (default 65536)")
    c.add_argument("--ctx", type=int, default=2048, metavar="L", help="tokens per window (default 2048)")
    c.add_argument("--device", default="cpu", metavar="cpu|cuda", help="torch device (default cpu)")
    c.add_argument("--out", required=True, metavar="H.safetensors", help="the Hessian file to write")
    c.add_argument("--fisher-tokens", type=int, default=0, metavar="N",
                   help="also measure each layer's output sensitivity E[(d loss / d y)^2] with a backward pass over "
                        "the first N tokens (for encode --allocate; default 0: none)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")

    v = sub.add_parser("verify", help="check a .pvqc file's structure, checksums and decodability")
    v.add_argument("input")
    v.add_argument("--no-decode", action="store_true", help="check structure and checksums only")
    v.add_argument("--decoder", choices=["python", "c"], default="python",
                   help="the reference decoder to use: python (default) or c (ref_decoder_c)")
    return p


# ---- encode ---------------------------------------------------------------------------------


def cmd_encode(args) -> int:
    from tqdm import tqdm

    from .atomic import check_writable
    from .codecs import codec_by_name
    from .container.writer import write_pvqc
    from .encoder import EncodeOptions, encode_tensor, quantizes
    from .quantize.allocate import needs_allocation
    from .errors import InputError
    from .safetensors_io import SafetensorsSource

    if not args.bits > 0 or args.bits > 32:
        raise InputError(f"--bits must be in (0, 32], got {args.bits}")
    for flag in ("keep", "exclude"):
        pattern = getattr(args, flag)
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise InputError(f"--{flag} {pattern!r} is not a valid regular expression: {exc}") from None
    if args.rht_block not in ("auto", "full"):
        try:
            if int(args.rht_block) < 1:
                raise ValueError
        except ValueError:
            raise InputError(f"--rht-block must be auto, full or a positive integer, got {args.rht_block!r}") from None
    codec = codec_by_name(args.codec)
    options = EncodeOptions(codec=args.codec, bits=args.bits, keep=args.keep, exclude=args.exclude, seed=args.seed,
                            transform=args.transform, rht_block=args.rht_block,
                            codec_options=codec.options_from_args(args), entropy=args.entropy)
    if not 0 <= args.damp <= 100 or args.damp != args.damp:
        raise InputError(f"--damp must be in [0, 100], got {args.damp}")
    if args.ldlq_passes < 0:
        raise InputError(f"--ldlq-passes must be >= 0, got {args.ldlq_passes}")
    options.damp, options.ldlq_passes = args.damp, args.ldlq_passes
    options.allocate_weight = args.allocate_weight
    if args.device != "cpu":
        if args.device not in getattr(codec, "encode_devices", ("cpu",)):
            raise InputError(f"--device {args.device}: the {args.codec} codec's encoder runs on the cpu only")
        codec.check_encode_device(args.device)  # torch, CUDA and the kernels, before any work
        options.device = args.device
    check_writable(args.output)
    t0 = time.perf_counter()
    hessians = open_hessians(args.hessians, codec)
    with SafetensorsSource.open(args.input) as src, hessians or _nothing():
        names = [n for n in src.names if not (args.exclude and re.search(args.exclude, n))]
        if not names:
            raise InputError(f"{args.input}: no tensors to encode")
        for n in names:  # check everything before spending time on encoding
            info = src.info(n)
            if info.dtype_name is None:
                raise InputError(f"tensor {n!r} has dtype {info.dtype}; only float32, float16 and bfloat16 can be "
                                 f"encoded (leave it out with --exclude)")
            if info.numel == 0:
                raise InputError(f"tensor {n!r} has shape {list(info.shape)} with no elements (leave it out with --exclude)")
        total = sum(src.info(n).numel for n in names)
        if hessians is not None:
            check_hessian_names(hessians, src, names, options, args.input)
        plan = None
        if args.allocate or needs_allocation(codec, args.bits):
            from .quantize.allocate import plan_rates

            with tqdm(total=total, unit="w", unit_scale=True, desc="measure rates", disable=args.quiet or None,
                      file=sys.stderr) as bar:
                plan = plan_rates(src, names, options, hessians, bar.update)
            options.bits_per_tensor = plan.rates

        def encode_one(n):
            info = src.info(n)
            got = hessians.get(n) if hessians is not None and quantizes(n, tuple(info.shape), options) else None
            return encode_tensor(n, src.read(n), info.dtype_name, options, hessian=None if got is None else got[0])

        entries, reports = [], []
        with tqdm(total=total, unit="w", unit_scale=True, desc="encode", disable=args.quiet or None,
                  file=sys.stderr) as bar:
            for n in names:
                bar.set_postfix_str(n[-40:], refresh=False)
                entry, rep = encode_one(n)
                entries.append(entry)
                reports.append(rep)
                bar.update(src.info(n).numel)
        if plan is not None:
            meet_budget(plan, names, entries, reports, encode_one)
        metadata = {
            "producer": f"pvqcodec {__version__}",
            "source": os.path.basename(os.path.normpath(args.input)),
            "encode_options": json.dumps(
                {"codec": options.codec, "bits": options.bits, "seed": options.seed, "transform": options.transform,
                 "rht_block": options.rht_block, "keep": options.keep, "exclude": options.exclude,
                 "entropy": options.entropy,
                 **({"hessians": os.path.basename(args.hessians), "damp": options.damp,
                     "ldlq_passes": options.ldlq_passes} if hessians is not None else {}),
                 **({"allocate": plan.weighting} if plan is not None else {}),
                 **options.codec_options}, sort_keys=True),
        }
        if src.metadata:
            metadata["safetensors.metadata"] = json.dumps(src.metadata, sort_keys=True)
        size = write_pvqc(args.output, metadata, entries)
    elapsed = time.perf_counter() - t0
    _hessian_warnings(reports)
    if not args.quiet:
        print_encode_summary(reports, size, elapsed, plan is not None)
        if plan is not None:
            print("bit allocation: " + ("least summed loss increase estimated from each layer's output sensitivity "
                                        "(--allocate-weight fisher)" if plan.weighting == "fisher"
                                        else "least summed relative proxy error"))
    return 0


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def open_hessians(path, codec):
    """The HessianSource of --hessians, or None."""
    if path is None:
        return None
    from .errors import InputError
    from .quantize.hessians import open_importance

    from .codecs import Codec

    if type(codec).block_quantizer is Codec.block_quantizer:
        raise InputError(f"--hessians: the {codec.name} codec has no Hessian-aware rounding")
    return open_importance(path)


def check_hessian_names(hessians, src, names, options, input_path):
    """At least one quantized tensor must have an H: otherwise the names do not match."""
    from .encoder import quantizes
    from .errors import InputError

    quantized = [n for n in names if quantizes(n, tuple(src.info(n).shape), options)]
    known = set(hessians.weight_names())
    if quantized and not any(n in known for n in quantized):
        example = sorted(known)[0] if known else "none"
        raise InputError(f"--hessians {hessians.path}: no tensor of {input_path} has an entry (the file names e.g. "
                         f"{example!r}, the model e.g. {quantized[0]!r}): calibrated on another model?")


def meet_budget(plan, names, entries, reports, encode_one):
    """Re-encode tensors one rate lower until the quantized tensors' real size meets the
    allocation's budget (the allocator's sizes are predictions from a row sample)."""
    from .errors import InputError

    index = {n: i for i, n in enumerate(names)}
    while True:
        used = sum(8 * reports[index[n]].coded_bytes for n in plan.names)
        if used <= plan.budget:
            return
        step = plan.downgrade(used - plan.budget)
        if step is None:
            raise InputError(f"cannot meet --bits: the quantized tensors need {used / sum(plan.numels):.4f} bits "
                             f"per weight at the codec's lowest rates")
        i = index[step[0]]
        entries[i], reports[i] = encode_one(step[0])


def _hessian_columns(rows, reports, allocated=False):
    """Add the allocated rate (when rates differ) and, with --hessians, the relative proxy
    error tr(E H E^T) / tr(W H W^T) of data-free and of Hessian-aware rounding."""
    targets = {r.info.get("bits_target") for r in reports if "bits_target" in r.info}
    hess = any("hessian" in r.info for r in reports)
    if allocated or len(targets) > 1:
        rows = [row + (("rate",) if i == 0 else (f"{r.info['bits_target']:g}" if "bits_target" in r.info else "",))
                for i, (row, r) in enumerate(zip(rows, [None] + list(reports)))]
    if hess:
        def cols(r):
            h = r.info.get("hessian")
            if h is None:
                return ("", "", "")
            return (f"{h['proxy_free']:.4g}", f"{h['proxy_ldlq']:.4g}", h["chosen"])
        rows = [row + (("proxy free", "proxy H", "kept") if i == 0 else cols(r))
                for i, (row, r) in enumerate(zip(rows, [None] + list(reports)))]
    return rows


def _hessian_warnings(reports):
    for r in reports:
        h = r.info.get("hessian")
        if h and h.get("dead_channels"):
            print(f"pvqcodec: warning: tensor {r.name!r}: {h['dead_channels']} input channels had no calibration "
                  f"input (zero H diagonal); rounded as an average channel", file=sys.stderr)
        if h and h.get("damp_tries", 1) > 1:
            print(f"pvqcodec: warning: tensor {r.name!r}: H was not positive definite; factorized with damping "
                  f"{h['damp']:g} after {h['damp_tries']} tries", file=sys.stderr)


def print_encode_summary(reports, file_size, seconds, allocated=False):
    import math

    rows = [("tensor", "shape", "codec", "raw bits/w", "bits/w", "SQNR dB")]
    for r in reports:
        sq = "exact" if r.sqnr_db is None else ("inf" if math.isinf(r.sqnr_db) else f"{r.sqnr_db:.2f}")
        rows.append((r.name, "x".join(map(str, r.shape)) or "scalar", r.codec, f"{r.raw_bits_per_weight:.4f}",
                     f"{r.bits_per_weight:.4f}", sq))
    rows = _hessian_columns(rows, reports, allocated)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    q = [r for r in reports if r.sqnr_db is not None]
    qw = sum(r.numel for r in q)
    allw = sum(r.numel for r in reports)
    print(f"{len(reports)} tensors ({len(q)} quantized, {len(reports) - len(q)} raw), {file_size:,} bytes in "
          f"{seconds:.1f} s ({allw / max(seconds, 1e-9) / 1e6:.2f} M weights/s)")
    if qw:
        qbits = 8 * sum(r.coded_bytes for r in q) / qw
        qraw = 8 * sum(r.raw_coded_bytes for r in q) / qw
        mse = sum(r.info.get("mse", 0) * r.numel for r in q) / qw
        print(f"quantized tensors: {qbits:.4f} bits per weight ({qraw:.4f} before entropy coding), "
              f"mean squared error {mse:.4g}")
    print(f"whole file: {8 * file_size / max(allw, 1):.4f} bits per weight")


# ---- decode ---------------------------------------------------------------------------------


def cmd_decode(args) -> int:
    from tqdm import tqdm

    from .api import PvqcFile
    from .atomic import check_writable
    from .safetensors_io import write_safetensors
    from . import dtypes

    check_writable(args.output)
    t0 = time.perf_counter()
    with PvqcFile(args.input) as f:
        c = f.container
        total = sum(r.numel for r in c.tensors)
        bar = tqdm(total=total, unit="w", unit_scale=True, desc="decode", disable=args.quiet or None, file=sys.stderr)
        entries = []
        for rec in c.tensors:
            out_dtype = rec.dtype if not rec.codec.quantizes else (args.dtype or rec.dtype)

            def produce(rec=rec, out_dtype=out_dtype):
                arr = f.decode_stored(rec.name, out_dtype, decoder=args.decoder)
                bar.update(rec.numel)
                return arr

            entries.append((rec.name, dtypes.SAFETENSORS_NAMES[out_dtype], rec.shape, produce))
        meta = None
        if "safetensors.metadata" in c.metadata:
            try:
                meta = json.loads(c.metadata["safetensors.metadata"])
            except ValueError:
                meta = None
        try:
            write_safetensors(args.output, entries, meta)
        finally:
            bar.close()
    if not args.quiet:
        print(f"decoded {len(entries)} tensors ({total:,} weights) to {args.output} in {time.perf_counter() - t0:.1f} s")
    return 0


# ---- info / verify --------------------------------------------------------------------------


def cmd_info(args) -> int:
    from .api import PvqcFile, tensor_info

    with PvqcFile(args.input) as f:
        c = f.container
        tensors = [tensor_info(r, c) for r in c.tensors]
        doc = {
            "file": args.input,
            "version": f"{c.version[0]}.{c.version[1]}",
            "file_size": c.file_size,
            "metadata": c.metadata,
            "tensors": tensors,
        }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    weights = sum(int(t["matrix"][0]) * int(t["matrix"][1]) for t in tensors)
    print(f"{args.input}: pvqc version {doc['version']}, {len(tensors)} tensors, {doc['file_size']:,} bytes, "
          f"{8 * doc['file_size'] / max(weights, 1):.4f} bits per weight")
    for k, v in doc["metadata"].items():
        print(f"  {k}: {v if len(v) <= 200 else v[:197] + '...'}")
    for t in tensors:
        tr = t["transform"]
        trs = tr["name"] if tr["name"] != "rht" else f"rht(seed={tr['seed']}, blocks={tr['row_block']}x{tr['col_block']})"
        cd = t["codec"]
        cds = ", ".join(f"{k}={v}" for k, v in cd.items() if k != "name")
        print(f"  {t['name']}: {t['dtype']} {t['shape']} as {t['matrix'][0]}x{t['matrix'][1]}, {trs}, "
              f"{cd['name']}{'(' + cds + ')' if cds else ''}, {sum(p['bytes'] for p in t['payloads']):,} bytes, "
              f"{t['bits_per_weight']:.4f} bits/w")
        for p in t["payloads"]:
            how = p["coding_name"] + (f" ({p['mode']})" if "mode" in p else "")
            ratio = f", {100 * p['bytes'] / p['raw_bytes']:.1f}% of raw {p['raw_bytes']:,}" if p["coding"] and p["raw_bytes"] else ""
            print(f"    {p['stream']}: {p['symbols']:,} x {p['width']} bits, {how}, {p['bytes']:,} bytes{ratio}")
    return 0


def cmd_verify(args) -> int:
    from .api import PvqcFile

    with PvqcFile(args.input) as f:
        problems = f.verify(decode=not args.no_decode, decoder=args.decoder)
        n = len(f.names)
    if problems:
        for name, code, msg in problems:
            print(f"pvqcodec: damaged [{code}]: tensor {name!r}: {msg}", file=sys.stderr)
        print(f"{args.input}: {len(problems)} of {n} tensors damaged", file=sys.stderr)
        return EXIT_ERROR
    print(f"{args.input}: OK ({n} tensors, structure and checksums{'' if args.no_decode else ', decoded'})")
    return 0


def cmd_calibrate(args) -> int:
    from .errors import InputError
    from .quantize.calibrate import run_calibrate

    if not (args.device == "cpu" or args.device == "cuda" or args.device.startswith("cuda:")):
        raise InputError(f"--device must be cpu or cuda, got {args.device!r}")
    res = run_calibrate(args.model_dir, args.text, args.out, tokens=args.tokens, ctx=args.ctx, device=args.device,
                        progress=not args.quiet, fisher_tokens=args.fisher_tokens)
    if not args.quiet:
        print(f"calibrated {len(res.weights)} weights ({len(res.moments)} distinct inputs) on {res.tokens:,} tokens "
              f"in {res.seconds:.1f} s ({res.tokens_per_second:,.0f} tokens/s)"
              + (f", output sensitivities on the first {res.fisher_tokens:,}" if res.fisher else "")
              + f"; wrote {args.out}")
    return 0


COMMANDS = {"encode": cmd_encode, "decode": cmd_decode, "info": cmd_info, "verify": cmd_verify, "calibrate": cmd_calibrate}


def main(argv=None) -> int:
    from .errors import FormatError, PvqcodecError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FormatError as exc:  # the spec's error name, for the conformance runner
        print(f"pvqcodec: error [{exc.code}]: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except PvqcodecError as exc:
        print(f"pvqcodec: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("pvqcodec: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("pvqcodec: error: out of memory", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # disk full, permission denied mid-write, ...
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"pvqcodec: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
