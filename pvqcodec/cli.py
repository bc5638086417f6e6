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
    from .encoder import EncodeOptions, encode_tensor
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
                            codec_options=codec.options_from_args(args))
    check_writable(args.output)
    t0 = time.perf_counter()
    with SafetensorsSource.open(args.input) as src:
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
        entries, reports = [], []
        with tqdm(total=total, unit="w", unit_scale=True, desc="encode", disable=args.quiet or None,
                  file=sys.stderr) as bar:
            for n in names:
                info = src.info(n)
                bar.set_postfix_str(n[-40:], refresh=False)
                entry, rep = encode_tensor(n, src.read(n), info.dtype_name, options)
                entries.append(entry)
                reports.append(rep)
                bar.update(info.numel)
        metadata = {
            "producer": f"pvqcodec {__version__}",
            "source": os.path.basename(os.path.normpath(args.input)),
            "encode_options": json.dumps(
                {"codec": options.codec, "bits": options.bits, "seed": options.seed, "transform": options.transform,
                 "rht_block": options.rht_block, "keep": options.keep, "exclude": options.exclude,
                 **options.codec_options}, sort_keys=True),
        }
        if src.metadata:
            metadata["safetensors.metadata"] = json.dumps(src.metadata, sort_keys=True)
        size = write_pvqc(args.output, metadata, entries)
    elapsed = time.perf_counter() - t0
    if not args.quiet:
        print_encode_summary(reports, size, elapsed)
    return 0


def print_encode_summary(reports, file_size, seconds):
    import math

    rows = [("tensor", "shape", "codec", "bits/w", "SQNR dB")]
    for r in reports:
        sq = "exact" if r.sqnr_db is None else ("inf" if math.isinf(r.sqnr_db) else f"{r.sqnr_db:.2f}")
        rows.append((r.name, "x".join(map(str, r.shape)) or "scalar", r.codec, f"{r.bits_per_weight:.4f}", sq))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    q = [r for r in reports if r.sqnr_db is not None]
    qw = sum(r.numel for r in q)
    allw = sum(r.numel for r in reports)
    print(f"{len(reports)} tensors ({len(q)} quantized, {len(reports) - len(q)} raw), {file_size:,} bytes in "
          f"{seconds:.1f} s ({allw / max(seconds, 1e-9) / 1e6:.2f} M weights/s)")
    if qw:
        qbits = 8 * sum(r.coded_bytes for r in q) / qw
        mse = sum(r.info.get("mse", 0) * r.numel for r in q) / qw
        print(f"quantized tensors: {qbits:.4f} bits per weight, mean squared error {mse:.4g}")
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
        tensors = [tensor_info(r) for r in c.tensors]
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


COMMANDS = {"encode": cmd_encode, "decode": cmd_decode, "info": cmd_info, "verify": cmd_verify}


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
