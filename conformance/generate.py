"""Generate the pvqc conformance vectors (deterministic; run by hand, output committed).

    python conformance/generate.py            # rewrite conformance/vectors and conformance/invalid
    python conformance/generate.py --check    # regenerate into a temporary folder, compare, exit 1 on drift
    python conformance/generate.py --out DIR  # write the whole set under DIR instead

Two sets (README.md in this folder describes them for third parties):

* `vectors/<name>/input.pvqc` + `expected.json`: valid files. Each tensor's expected value
  is the SHA-256 of its decoded float32 values (little-endian, row-major), computed with
  the Python reference decoder. The inputs are drawn from fixed seeds, encoded with the
  reference encoder and written with fixed metadata, so the bytes depend only on the
  encoder: a change that alters them fails tests/test_conformance_vectors.py until the
  vectors are regenerated on purpose (and, if the format changed, the spec's version).
* `invalid/<name>.pvqc` + `invalid/MANIFEST.json`: files a decoder must reject, each
  breaking one rule of spec/pvqc.md section 9 (or a codec document), with the error name
  that is the FIRST error in the spec's check order (sections 2.2, 7.2, 9). They are built
  by editing valid files field by field with `RawFile`, a second, independent
  serializer of the container (plain `struct`, so it can write what construct refuses:
  invalid UTF-8, wrong counts, overridden lengths and checksums).

Every quantizing codec in the registry contributes cases: `CODEC_CASES[name]` if the
codec has its own list (PVQ's below), else `generic_codec_cases` (a few rates, shapes,
source dtypes and transforms with the codec's default options). A codec that needs
other shapes or options adds its own function to `CODEC_CASES`. Re-running this script
after a codec joins the registry adds its vectors.
"""

from __future__ import annotations

import argparse
import dataclasses
import filecmp
import importlib.util
import json
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

from pvqcodec import checksum, dtypes  # noqa: E402
from pvqcodec.codecs import all_codecs, codec_by_id, codec_by_name  # noqa: E402
from pvqcodec.coding import RawCoding, StreamSpec  # noqa: E402
from pvqcodec.container import format as fmt  # noqa: E402
from pvqcodec.container.reader import Container, align_up  # noqa: E402
from pvqcodec.container.writer import to_bytes  # noqa: E402
from pvqcodec.decoder import decode_float32  # noqa: E402
from pvqcodec.encoder import EncodeOptions, encode_tensor  # noqa: E402
from pvqcodec.errors import FormatError  # noqa: E402


def _load_runner():
    """run.py (stdlib + numpy only) holds the hashing rules; load it under a private name."""
    name = "pvqc_conformance_run"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "run.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


runner = _load_runner()

SPEC_VERSION = f"{fmt.VERSION_MAJOR}.{fmt.VERSION_MINOR}"
MAX_TOTAL_BYTES = 1_500_000  # the whole conformance folder stays well under 2 MB


# =========================================================================================
# Source tensors
# =========================================================================================


@dataclass
class TensorSpec:
    """One source tensor: drawn from `fill` with a seed derived from the case's seed."""

    name: str
    shape: tuple
    dtype: str = "float32"  # float32 | float16 | bfloat16
    fill: str = "normal"  # normal | zeros | rows | outliers | special
    scale: float = 1.0
    args: tuple = ()  # extra encoder options for this tensor only (CLI syntax)
    view: tuple = None  # a matrix view other than the reference encoder's (rows, cols)


# Bit patterns of special values, per storage width (raw tensors only).
SPECIAL_BITS = {
    "float32": [0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x007FFFFF, 0x00800000, 0x3F800000,
                0xC0200000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000,
                0x7F800001, 0x7FA5A5A5, 0xFFFFFFFF, 0x33800000],
    "float16": [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0xC100, 0x7BFF, 0xFBFF,
                0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7C01, 0x7D55, 0xFFFF, 0x1400],
    "bfloat16": [0x0000, 0x8000, 0x0001, 0x8001, 0x007F, 0x0080, 0x3F80, 0xC020, 0x7F7F, 0xFF7F,
                 0x7F80, 0xFF80, 0x7FC0, 0xFFC0, 0x7F81, 0x7FA5, 0xFFFF, 0x3380],
}


def make_source(spec: TensorSpec, seed: int, index: int) -> np.ndarray:
    """The tensor in its storage dtype (bfloat16 as uint16 bit patterns)."""
    rng = np.random.default_rng([seed, index])
    shape = tuple(spec.shape)
    numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if spec.fill == "special":
        pattern = SPECIAL_BITS[spec.dtype]
        bits = np.array([pattern[i % len(pattern)] for i in range(numel)])
        store = {"float32": np.uint32, "float16": np.uint16, "bfloat16": np.uint16}[spec.dtype]
        arr = bits.astype(store).reshape(shape)
        if spec.dtype == "float32":
            return arr.view(np.float32)
        if spec.dtype == "float16":
            return arr.view(np.float16)
        return arr
    if spec.fill == "zeros":
        x = np.zeros(shape)
    elif spec.fill == "normal":
        x = rng.standard_normal(shape)
    elif spec.fill == "rows":
        # Rows of very different size (a zero row, rows whose float16 scale is subnormal or
        # underflows to zero): the row scales' corner cases.
        factors = np.array([1.0, 0.0, 1e-3, 1e-7, 30.0, 1e3, 0.25])
        x = rng.standard_normal(shape)
        lead = x.reshape(-1, shape[-1])
        lead *= factors[np.arange(lead.shape[0]) % factors.size][:, None]
    elif spec.fill == "outliers":
        x = rng.standard_normal(shape)
        flat = x.reshape(-1)
        hit = rng.choice(flat.size, size=max(1, flat.size // 200), replace=False)
        flat[hit] *= 60.0
    else:
        raise ValueError(f"unknown fill {spec.fill!r}")
    x = (x * spec.scale).astype(np.float32)
    if spec.dtype == "float32":
        return x
    if spec.dtype == "float16":
        return x.astype(np.float16)
    return dtypes.f32_to_bf16_bits(x)


def source_bytes(stored: np.ndarray) -> bytes:
    return np.ascontiguousarray(stored).astype(stored.dtype.newbyteorder("<"), copy=False).tobytes()


# =========================================================================================
# Valid cases
# =========================================================================================


@dataclass
class ValidCase:
    name: str
    description: str
    tensors: list
    codec: str = "pvq"
    args: tuple = ()  # encoder options in `pvqcodec encode` syntax (after --codec)
    seed: int = 0
    metadata: dict = field(default_factory=dict)
    expect: dict = field(default_factory=dict)  # tensor -> {param: value}: the corner must be reached
    version_minor: int = None  # patch the file header's minor version (decoders accept any)
    # Payloads re-coded with rans settings the encoder would not choose by itself:
    # (tensor name, stream name, RansCoding.encode keyword arguments), spec 4.3.
    rans: tuple = ()
    codings: dict = field(default_factory=dict)  # tensor -> expected payload codings ("raw", "table", "uniform")


def encode_options(codec_name: str, args) -> EncodeOptions:
    """EncodeOptions from `pvqcodec encode` options, exactly as the CLI builds them."""
    from pvqcodec.cli import build_parser

    ns = build_parser().parse_args(["encode", "in.safetensors", "out.pvqc", "--codec", codec_name, *args])
    codec_name = ns.codec  # a tensor's own options may name another codec
    codec = codec_by_name(codec_name)
    # Cases that do not name --entropy keep raw payloads (version 1.0 files, as before 1.1);
    # the rans cases name it.
    entropy = ns.entropy if "--entropy" in args else "none"
    return EncodeOptions(codec=codec_name, bits=ns.bits, keep=ns.keep, exclude=ns.exclude, seed=ns.seed,
                         transform=ns.transform, rht_block=ns.rht_block, codec_options=codec.options_from_args(ns),
                         entropy=entropy)


def _shape_of(spec):
    return list(spec.shape)


def encode_case(case: ValidCase):
    """(file bytes, expected.json dict) of a valid case."""
    entries, sources = [], {}
    for i, spec in enumerate(case.tensors):
        stored = make_source(spec, case.seed, i)
        opts = encode_options(case.codec, [*case.args, *spec.args])
        if spec.view is not None:
            rows, cols = spec.view
            entry, _ = encode_tensor(spec.name, stored.reshape(rows, cols), spec.dtype, opts)
            if not codec_by_id(entry.codec_id).quantizes:
                entry.rows, entry.cols = rows, cols
            entry.shape = tuple(spec.shape)
        else:
            entry, _ = encode_tensor(spec.name, stored, spec.dtype, opts)
        recode_rans(entry, [(stream, kw) for t, stream, kw in case.rans if t == spec.name])
        if spec.name in case.codings:
            got = payload_codings(entry)
            if got != case.codings[spec.name]:
                raise AssertionError(f"{case.name}/{spec.name}: payload codings {got}, expected "
                                     f"{case.codings[spec.name]} (adjust the case so that it still covers its corner)")
        entries.append(entry)
        sources[spec.name] = stored
    data = to_bytes(dict(case.metadata), entries)
    if case.version_minor is not None:
        data = data[:10] + struct.pack("<H", case.version_minor) + data[12:]

    tensors = {}
    with Container.from_bytes(data) as c:
        for spec, rec in zip(case.tensors, c.tensors):
            values = decode_float32(c, rec)
            digest = runner.sha256_float32(values)
            codec = rec.codec
            if not codec.quantizes:
                # Independent check: a raw tensor hashes like its source, widened by run.py's bit rules.
                widened = runner.widen_to_float32(source_bytes(sources[spec.name]), spec.dtype)
                assert runner.sha256_float32(widened) == digest, f"{case.name}/{spec.name}: raw hash differs from source"
            assert list(values.shape) == _shape_of(spec), (case.name, spec.name)
            want = case.expect.get(spec.name, {})
            got = {**rec.codec_params, **codec.describe(rec.codec_params), **rec.transform_params,
                   "codec": codec.name, "transform": rec.transform.name}
            for key, value in want.items():
                if got.get(key) != value:
                    raise AssertionError(f"{case.name}/{spec.name}: expected {key} = {value}, the encoder chose "
                                         f"{got.get(key)} (adjust the case so that it still covers its corner)")
            tensors[rec.name] = {
                "sha256": digest,
                "shape": list(rec.shape),
                "dtype": rec.dtype,
                "codec": codec.name,
                "codec_params": _jsonable(codec.describe(rec.codec_params)),
                "transform": _jsonable(rec.transform.describe(rec.transform_params)),
            }
    expected = {
        "spec_version": SPEC_VERSION,
        "description": case.description,
        "generator": {
            "codec": case.codec,
            "options": list(case.args),
            "seed": case.seed,
            "metadata_keys": sorted(case.metadata),
            "tensors": [
                {"name": s.name, "shape": list(s.shape), "dtype": s.dtype, "fill": s.fill,
                 **({"scale": s.scale} if s.scale != 1.0 else {}),
                 **({"options": list(s.args)} if s.args else {}),
                 **({"matrix_view": list(s.view)} if s.view else {})}
                for s in case.tensors
            ],
        },
        "tensors": tensors,
    }
    if case.version_minor is not None:
        expected["generator"]["version_minor"] = case.version_minor
    if case.rans:
        expected["generator"]["rans_payloads"] = [{"tensor": t, "stream": st, **kw} for t, st, kw in case.rans]
    return data, expected


def tensor_streams(entry):
    """(codec, params, StreamSpecs, decoded streams) of a TensorToWrite's payloads."""
    from pvqcodec.decoder import decode_payloads

    codec = codec_by_id(entry.codec_id)
    params = codec.parse_params(entry.codec_params, entry.rows, entry.cols, entry.dtype)
    specs = codec.streams(params, entry.rows, entry.cols, entry.dtype)
    streams = decode_payloads(codec, params, entry.rows, entry.cols, entry.dtype,
                              [(c, d, sp) for (c, d), sp in zip(entry.payloads, specs)])
    return codec, params, specs, streams


def payload_codings(entry) -> list:
    """"raw", or the rans mode ("table", "uniform"), of each payload of a TensorToWrite."""
    return ["raw" if c == 0 else ("table", "uniform")[int(d[0])] for c, d in entry.payloads]


def recode_rans(entry, overrides) -> None:
    """Replace payloads of `entry` by rans payloads with the given encoder settings."""
    if not overrides:
        return
    from pvqcodec.coding.rans import RansCoding

    codec, params, specs, streams = tensor_streams(entry)
    names = [sp.name for sp in specs]
    for stream, kw in overrides:
        i = names.index(stream)
        bounds = codec.stream_bounds(params, entry.rows, entry.cols, entry.dtype, i, streams[:i])
        data = RansCoding.encode(streams[i], dataclasses.replace(specs[i], bounds=bounds), **kw)
        entry.payloads[i] = (RansCoding.id, data)


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, (np.integer,)):
            v = int(v)
        elif isinstance(v, (np.floating,)):
            v = float(v)
        out[k] = v
    return out


T = TensorSpec


def container_cases() -> list:
    """Cases about the container and raw tensors; they hold no codec-specific payloads
    beyond a small PVQ tensor where a quantized one is needed."""
    cases = []
    for dt in ("float32", "float16", "bfloat16"):
        cases.append(ValidCase(
            f"raw_{dt}", f"raw {dt} tensors of rank 0, 1, 2 and 3 (rank >= 2 kept raw by --keep)",
            [T("scalar", (), dt), T("vector", (37,), dt), T("raw.matrix", (5, 3), dt), T("raw.cube", (2, 3, 4), dt)],
            args=("--keep", r"^raw\."), seed=10))
        cases.append(ValidCase(
            f"raw_{dt}_special_values",
            f"raw {dt} bit patterns: +-0, subnormals, +-max, +-inf, quiet and signalling NaNs with payloads "
            "(widening to float32 keeps the sign and shifts the payload; NaNs are not quieted)",
            [T("special", (18,), dt, fill="special")], seed=11))
    cases.append(ValidCase(
        "raw_zero_size", "raw tensors with no elements (allowed for raw only), one of them the file's last payload",
        [T("empty32", (0,), "float32"), T("raw.empty16", (3, 0), "float16"), T("w", (4, 16), "float32"),
         T("raw.empty_bf16", (2, 0, 5), "bfloat16")],
        args=("--keep", r"^raw\.", "--bits", "3", "--group-size", "8"), seed=12))
    cases.append(ValidCase("no_tensors", "a file with no tensors and no metadata: the header and an 8-byte header block",
                           [], seed=13))
    cases.append(ValidCase(
        "metadata", "metadata entries (a decoder may ignore them): unicode keys, an empty value, a long value, "
        "safetensors.metadata",
        [T("w", (3, 24), "float32"), T("b", (3,), "float16")],
        args=("--group-size", "8"), seed=14,
        metadata={"producer": "pvqcodec conformance", "empty": "", "ключ/鍵": "värde ✓", "long": "x" * 3000,
                  "safetensors.metadata": json.dumps({"format": "pt"})}))
    cases.append(ValidCase(
        "many_tensors", "48 small tensors, quantized and raw, of every dtype, in directory order",
        [T(f"layers.{i}.{kind}", shape, dt)
         for i in range(8)
         for kind, shape, dt in (("q", (4, 24), "float32"), ("k", (4, 16), "float16"), ("v", (2, 8), "bfloat16"),
                                 ("norm", (8,), "float32"), ("bias", (4,), "float16"), ("scale", (), "bfloat16"))],
        args=("--group-size", "8", "--bits", "2"), seed=15))
    cases.append(ValidCase(
        "unicode_names", "tensor names in several scripts, with spaces, slashes and an emoji",
        [T("model/层.0 weight", (4, 16), "float32"), T("émbed 🙂", (5,), "float16"), T("Ω", (), "float32")],
        args=("--group-size", "16"), seed=16))
    cases.append(ValidCase(
        "minor_version_future", "version_minor = 9: a 1.0 decoder accepts any minor version of major 1 (2.1)",
        [T("w", (4, 32), "float32"), T("b", (4,), "float32")], args=("--group-size", "8"), seed=17, version_minor=9))
    cases.append(ValidCase(
        "matrix_view_nondefault",
        "matrix views the reference encoder does not choose: a (4, 6, 32) tensor quantized as 4 x 192, "
        "a (12,) raw tensor stored as 3 x 4 (the decoder reshapes row-major, 3.5)",
        [T("w3", (4, 6, 32), "float32", view=(4, 192)), T("v", (12,), "float16", view=(3, 4))],
        args=("--group-size", "16", "--rht-block", "64"), seed=18,
        expect={"w3": {"group_size": 16, "row_block": 4, "col_block": 64}}))
    return cases


def seeded_case(name, description, tensors, args=(), seed=0, **kw) -> ValidCase:
    """A case whose encoder seed is its data seed, so that its RHT seeds use all 64 bits
    (the per-tensor seed is seed * 0x9E3779B97F4A7C15 + crc32(name) mod 2^64)."""
    return ValidCase(name, description, tensors, args=("--seed", str(seed), *args), seed=seed, **kw)


def pvq_cases(codec) -> list:
    """PVQ's parameter corners (spec/codecs/pvq.md)."""
    P = seeded_case
    return [
        P("pvq_d1", "group size 1: the shape is a sign, the gain carries the magnitude",
          [T("w", (8, 24))], args=("--group-size", "1", "--gain-bits", "2", "--bits", "3.5"), seed=101,
          expect={"w": {"group_size": 1, "shape_bits": 1, "gain_bits": 2}}),
        P("pvq_d8_2bit", "group size 8 at 2 bits per weight, cols not a power of two, automatic RHT blocks (Paley)",
          [T("w", (8, 96))], args=("--group-size", "8", "--bits", "2"), seed=102,
          expect={"w": {"group_size": 8, "row_block": 8, "col_block": 96}}),
        P("pvq_d32_index64", "group size 32 with a 64-bit shape index: the widest single-limb index",
          [T("w", (4, 128))], args=("--group-size", "32", "--gain-bits", "0", "--bits", "2.2"), seed=103,
          expect={"w": {"group_size": 32, "shape_bits": 64, "gain_bits": 0}}),
        P("pvq_d32_index65", "group size 32 with a 65-bit shape index: the narrowest two-limb index",
          [T("w", (4, 128))], args=("--group-size", "32", "--gain-bits", "0", "--bits", "2.22"), seed=104,
          expect={"w": {"group_size": 32, "shape_bits": 65}}),
        P("pvq_d64_4bit", "group size 64 at 4 bits per weight: 250-odd-bit shape indices",
          [T("w", (4, 128))], args=("--group-size", "64", "--bits", "4"), seed=105,
          expect={"w": {"group_size": 64}}),
        P("pvq_d256_index1024", "the largest group (256) with a 1024-bit shape index (the limit)",
          [T("w", (4, 256))], args=("--group-size", "256", "--gain-bits", "0", "--bits", "4.5"), seed=106,
          expect={"w": {"group_size": 256, "pulses": 760, "shape_bits": 1024}}),
        P("pvq_k1", "one pulse per group (the lowest rate): the shape is one signed unit vector",
          [T("w", (4, 512))], args=("--group-size", "256", "--bits", "0.05"), seed=107,
          expect={"w": {"group_size": 256, "pulses": 1}}),
        P("pvq_k4096", "the most pulses (4096) in groups of 8: an 80-bit index",
          [T("w", (4, 64))], args=("--group-size", "8", "--gain-bits", "0", "--bits", "16"), seed=108,
          expect={"w": {"group_size": 8, "pulses": 4096, "shape_bits": 80}}),
        P("pvq_gain_bits_0", "gain_bits 0: an empty gains payload and a one-entry gain table",
          [T("w", (6, 64))], args=("--group-size", "16", "--gain-bits", "0"), seed=109,
          expect={"w": {"gain_bits": 0}}),
        P("pvq_gain_bits_8", "gain_bits 8: a 256-entry gain table",
          [T("w", (32, 64))], args=("--group-size", "8", "--gain-bits", "8", "--bits", "3"), seed=110,
          expect={"w": {"gain_bits": 8}}),
        P("pvq_odd_shape", "7 x 37: rows and cols not multiples of the group (the last group padded), "
          "prime sides (RHT blocks of 1: signs only); gain_bits 3 (streams end inside a byte)",
          [T("w", (7, 37))], args=("--group-size", "8", "--gain-bits", "3"), seed=111,
          expect={"w": {"group_size": 8, "row_block": 1, "col_block": 1, "gain_bits": 3}}),
        P("pvq_tiny_shapes", "1 x 1, a column (37 x 1) and a row (1 x 300) of weights",
          [T("one", (1, 1)), T("column", (37, 1)), T("row", (1, 300))], args=("--bits", "3"), seed=112,
          expect={"one": {"group_size": 1}, "column": {"group_size": 1}, "row": {"group_size": 32}}),
        P("pvq_rht_block_1", "RHT with blocks of 1 (random signs only)",
          [T("w", (8, 64))], args=("--group-size", "16", "--rht-block", "1"), seed=113,
          expect={"w": {"row_block": 1, "col_block": 1}}),
        P("pvq_rht_block_12", "RHT blocks of 12 (Paley I, q = 1) on both sides",
          [T("w", (24, 36))], args=("--group-size", "12", "--rht-block", "12"), seed=114,
          expect={"w": {"row_block": 12, "col_block": 12}}),
        P("pvq_rht_block_20", "RHT blocks of 20 (Paley I)",
          [T("w", (20, 40))], args=("--group-size", "8", "--rht-block", "20"), seed=115,
          expect={"w": {"row_block": 20, "col_block": 20}}),
        P("pvq_rht_block_28", "RHT blocks of 28 (Paley II)",
          [T("w", (28, 56))], args=("--group-size", "8", "--rht-block", "28"), seed=116,
          expect={"w": {"row_block": 28, "col_block": 28}}),
        P("pvq_rht_block_36", "RHT blocks of 36 (Paley II)",
          [T("w", (36, 72))], args=("--group-size", "8", "--rht-block", "36"), seed=117,
          expect={"w": {"row_block": 36, "col_block": 36}}),
        P("pvq_rht_block_64", "RHT blocks of 64 (Sylvester only)",
          [T("w", (64, 128))], args=("--group-size", "64", "--rht-block", "64", "--bits", "1"), seed=118,
          expect={"w": {"row_block": 64, "col_block": 64}}),
        P("pvq_rht_block_192", "RHT column blocks of 192 = 12 x 16 (Paley I times Sylvester)",
          [T("w", (4, 384))], args=("--group-size", "32", "--rht-block", "192", "--bits", "1.5"), seed=119,
          expect={"w": {"row_block": 4, "col_block": 192}}),
        P("pvq_rht_block_576", "RHT column blocks of 576 = 36 x 16 (Paley II times Sylvester)",
          [T("w", (2, 576))], args=("--group-size", "32", "--rht-block", "576"), seed=120,
          expect={"w": {"row_block": 2, "col_block": 576}}),
        P("pvq_rht_block_252", "RHT blocks of 252, the largest base order (a dense 252-term sum)",
          [T("w", (2, 252))], args=("--group-size", "16", "--rht-block", "252", "--bits", "1.5"), seed=121,
          expect={"w": {"col_block": 252}}),
        P("pvq_rht_mixed_blocks", "different automatic blocks per side: 24 (12 x 2) rows by 128 columns",
          [T("w", (24, 128))], args=("--group-size", "32", "--bits", "1.5"), seed=122,
          expect={"w": {"row_block": 24, "col_block": 128}}),
        P("pvq_identity", "the identity transform (no RHT)",
          [T("w", (16, 64))], args=("--group-size", "16", "--transform", "identity"), seed=123,
          expect={"w": {"transform": "identity"}}),
        P("pvq_source_dtypes", "quantized tensors whose source dtype is float16 or bfloat16 (they decode to float32)",
          [T("w16", (8, 48), "float16"), T("wbf", (8, 48), "bfloat16")], args=("--group-size", "16"), seed=124),
        P("pvq_high_rank", "quantized rank-3 and rank-4 tensors (matrix view: leading dimensions by the last)",
          [T("w3", (4, 6, 32)), T("w4", (2, 3, 4, 8))], args=("--group-size", "8"), seed=125),
        P("pvq_row_scales", "rows of very different size: a zero row, float16 row scales that are subnormal "
          "or zero, large rows", [T("w", (14, 32), fill="rows")],
          args=("--group-size", "8", "--transform", "identity", "--bits", "3"), seed=126),
        P("pvq_zeros", "an all-zero tensor (all row scales 0)", [T("w", (4, 32), fill="zeros")],
          args=("--group-size", "8"), seed=127),
        P("pvq_outliers", "Gaussian weights with 0.5 percent outliers 60 times larger",
          [T("w", (16, 96), fill="outliers")], args=("--group-size", "32", "--bits", "3"), seed=128),
        P("pvq_mixed_params", "several PVQ tensors with different group sizes, rates and transforms in one file",
          [T("a", (8, 40), args=("--group-size", "8", "--bits", "2")),
           T("b", (4, 64), args=("--group-size", "64", "--bits", "3", "--transform", "identity")),
           T("c", (6, 20), "float16", args=("--group-size", "5", "--bits", "4", "--gain-bits", "1")),
           T("d", (12,), "bfloat16")], seed=129,
          expect={"a": {"group_size": 8}, "b": {"group_size": 64, "transform": "identity"},
                  "c": {"group_size": 5, "gain_bits": 1}}),
    ]


def generic_codec_cases(codec) -> list:
    """Default coverage for a codec without its own list: rates, odd shapes, source dtypes, transforms."""
    n = codec.name
    P = seeded_case
    return [
        P(f"{n}_2bit", f"{n} at 2 bits per weight", [T("w", (32, 256))], codec=n, args=("--bits", "2"), seed=201),
        P(f"{n}_3bit", f"{n} at 3 bits per weight", [T("w", (16, 256))], codec=n, args=("--bits", "3"), seed=202),
        P(f"{n}_4bit", f"{n} at 4 bits per weight", [T("w", (16, 128))], codec=n, args=("--bits", "4"), seed=203),
        P(f"{n}_odd_shape", f"{n} on 7 x 37 (sides that are prime and not multiples of any group or tile)",
          [T("w", (7, 37))], codec=n, args=("--bits", "2"), seed=204),
        P(f"{n}_identity", f"{n} with the identity transform", [T("w", (16, 64))], codec=n,
          args=("--bits", "2", "--transform", "identity"), seed=205),
        P(f"{n}_source_dtypes", f"{n} on float16 and bfloat16 sources, rank 3",
          [T("w16", (16, 64), "float16"), T("wbf", (2, 8, 64), "bfloat16")], codec=n, args=("--bits", "2"), seed=206),
        P(f"{n}_rht_block_576", f"{n} with RHT column blocks of 576 = 36 x 16", [T("w", (4, 576))], codec=n,
          args=("--bits", "2", "--rht-block", "576"), seed=207),
    ]


def lattice_cases(codec) -> list:
    """The lattice codec (QuIP#-style E8P stages): the generic cases, and per-row scales forced on."""
    P = seeded_case
    return generic_codec_cases(codec) + [
        P("lattice_row_scales_2bit", "lattice at 2 bits with a float16 scale per row",
          [T("w", (12, 64), fill="rows")], codec="lattice", args=("--bits", "2", "--lattice-row-scales", "on"),
          seed=211, expect={"w": {"row_scales": True, "stages": 1}}),
        P("lattice_row_scales_4bit", "lattice at 4 bits (three stages) with a float16 scale per row, 5 x 24",
          [T("w", (5, 24))], codec="lattice", args=("--bits", "4", "--lattice-row-scales", "on"),
          seed=212, expect={"w": {"row_scales": True, "stages": 3}}),
    ]


def trellis_cases(codec) -> list:
    """The trellis codec (QTIP-style bitshift trellis): the generic cases, each computed code,
    the smallest and largest rates and state sizes, and per-row scales."""
    P = seeded_case
    return generic_codec_cases(codec) + [
        P("trellis_1mad", "the 1MAD code (V = 1) at 2 bits", [T("w", (16, 32))], codec="trellis",
          args=("--bits", "2", "--code", "1mad"), seed=221, expect={"w": {"code": "1mad", "k": 2}}),
        P("trellis_3inst", "the 3INST code (float16 sums) at 3 bits", [T("w", (16, 32))], codec="trellis",
          args=("--bits", "3", "--code", "3inst"), seed=222, expect={"w": {"code": "3inst", "k": 3}}),
        P("trellis_k1", "one bit per weight", [T("w", (16, 48))], codec="trellis", args=("--bits", "1"), seed=223,
          expect={"w": {"k": 1}}),
        P("trellis_L16", "16-bit states (QTIP's L), HYB code", [T("w", (16, 16))], codec="trellis",
          args=("--bits", "2", "--trellis-L", "16", "--code", "hyb"), seed=224, expect={"w": {"L": 16}}),
        P("trellis_L_min", "the fewest state bits allowed at 2 bits with V = 2: L = k * V = 4", [T("w", (16, 32))],
          codec="trellis", args=("--bits", "2", "--trellis-L", "4", "--code", "hyb"), seed=225, expect={"w": {"L": 4}}),
        P("trellis_row_scales", "a float16 scale per row, identity transform, rows of very different size",
          [T("w", (20, 40), fill="rows")], codec="trellis",
          args=("--bits", "4", "--trellis-row-scales", "--transform", "identity"), seed=226,
          expect={"w": {"row_scales": True, "k": 4}}),
    ]


def rans_cases() -> list:
    """The rans payload coding (spec 4.3, since 1.1): both modes on every kind of stream,
    precisions and alphabets from 1 bit up, bounds above 2^64 up to 2^1024, several
    chunks, counts that are not multiples of 32 or of the chunk size, empty streams."""
    P = seeded_case
    return [
        P("rans_pvq", "PVQ with every payload rans-coded (--entropy rans), each in its smaller mode: at this size "
          "all uniform (row scales over 2^16, gains over 2^3, shapes over N(D, K), a bound below 2^64)",
          [T("w", (16, 64))], args=("--group-size", "8", "--bits", "2", "--gain-bits", "3", "--entropy", "rans"),
          seed=401, codings={"w": ["uniform", "uniform", "uniform"]}),
        P("rans_pvq_wide_bounds", "uniform mode on PVQ shape indices bounded by N(D, K) above 2^64: "
          "group 64 at 4 bits (about 250 bits) and group 256 with 760 pulses (a 1024-bit index)",
          [T("w64", (4, 128), args=("--group-size", "64", "--bits", "4")),
           T("w256", (4, 256), args=("--group-size", "256", "--gain-bits", "0", "--bits", "4.5"))],
          args=("--entropy", "rans"), seed=402,
          expect={"w64": {"group_size": 64}, "w256": {"pulses": 760, "shape_bits": 1024}},
          codings={"w64": ["uniform", "uniform", "uniform"], "w256": ["uniform", "uniform", "uniform"]}),
        P("rans_chunks", "several chunks per payload, chunk sizes 1, 3, 8 and 16 and counts that are not multiples "
          "of 32 or of the chunk size (35 groups, 7 rows), a 1 x 1 tensor with one symbol per chunk",
          [T("w", (7, 37)), T("one", (1, 1), args=("--gain-bits", "1", "--bits", "4"))], args=("--group-size", "8", "--gain-bits", "3", "--bits", "3"), seed=403,
          rans=(("w", "row_scales", dict(mode="uniform", chunk_symbols=3)),
                ("w", "gains", dict(mode="table", precision=3, chunk_symbols=8)),
                ("w", "shapes", dict(mode="uniform", chunk_symbols=16)),
                ("one", "row_scales", dict(mode="uniform", chunk_symbols=1)),
                ("one", "gains", dict(mode="table", precision=1, chunk_symbols=1)),
                ("one", "shapes", dict(mode="uniform", chunk_symbols=1))),
          codings={"w": ["uniform", "table", "uniform"], "one": ["uniform", "table", "uniform"]}),
        P("rans_table_precisions", "table mode at precisions 1, 2, 8, 11 and 15 and alphabets of up to 256 "
          "symbols: PVQ gains of 1, 2 and 8 bits, lattice patterns and signs",
          [T("g1", (8, 32), args=("--group-size", "8", "--gain-bits", "1")),
           T("g2", (8, 32), args=("--group-size", "8", "--gain-bits", "2")),
           T("g8", (32, 64), args=("--group-size", "8", "--gain-bits", "8", "--bits", "3")),
           T("lat", (16, 64), args=("--codec", "lattice"))],
          args=("--bits", "2"), seed=404,
          rans=(("g1", "gains", dict(mode="table", precision=1)),
                ("g2", "gains", dict(mode="table", precision=2)),
                ("g8", "gains", dict(mode="table", precision=8)),
                ("lat", "patterns", dict(mode="table", precision=11)),
                ("lat", "signs", dict(mode="table", precision=15, chunk_symbols=100))),
          codings={"g1": ["raw", "table", "raw"], "g2": ["raw", "table", "raw"], "g8": ["raw", "table", "raw"],
                   "lat": ["table", "table"]}),
        P("rans_pvq_shapes_table", "table mode on a bounded stream: PVQ shape indices of 8 bits (group 4)",
          [T("w", (8, 64))], args=("--group-size", "4", "--bits", "2.5"), seed=405,
          rans=(("w", "shapes", dict(mode="table", precision=12)),), codings={"w": ["raw", "raw", "table"]}),
        P("rans_trellis", "trellis words (32 bits) and row scales (16 bits) in uniform mode over 2^width",
          [T("w", (16, 32))], codec="trellis", args=("--bits", "2", "--trellis-row-scales", "--entropy", "rans"),
          seed=406, codings={"w": ["uniform", "uniform"]}),
        P("rans_empty_streams", "rans payloads of streams with no symbols (no chunks) or of width 0: empty raw "
          "tensors in table and uniform mode, PVQ gains of 0 bits in table mode (one symbol of frequency 2^P) "
          "and in uniform mode (bound 1: no operations), a float16 raw tensor in uniform mode over 2^16",
          [T("raw.empty", (0,), "float32"), T("raw.empty16", (2, 0), "float16"), T("g0", (4, 32)),
           T("g0u", (4, 32)), T("raw.h", (5,), "float16")],
          args=("--group-size", "8", "--gain-bits", "0", "--keep", r"^raw\."), seed=407,
          rans=(("raw.empty", "values", dict(mode="table")), ("raw.empty16", "values", dict(mode="uniform")),
                ("g0", "gains", dict(mode="table", precision=7)), ("g0u", "gains", dict(mode="uniform")),
                ("raw.h", "values", dict(mode="uniform", chunk_symbols=2))),
          codings={"raw.empty": ["table"], "raw.empty16": ["uniform"], "g0": ["raw", "table", "raw"],
                   "g0u": ["raw", "uniform", "raw"], "raw.h": ["uniform"]}),
    ]


def pvqvr_cases(codec) -> list:
    """The variable-rate PVQ codec (spec codecs/pvqvr.md): the generic cases (raw payloads, shapes at
    index_bits(D, K_max)), rans payloads with per-group bounds, all-zero groups, one pulse count."""
    P = seeded_case
    return generic_codec_cases(codec) + [
        P("pvqvr_rans_3bit", "pvqvr at 3 bits with rans: shapes in uniform mode, each bounded by N(32, K_g); "
          "pulse indices in table mode", [T("w", (64, 1024))], codec="pvqvr",
          args=("--bits", "3", "--entropy", "auto"), seed=241, codings={"w": ["raw", "raw", "table", "uniform"]}),
        P("pvqvr_zero_groups", "K = 0 in the table (groups of 8, pulse counts 0, 2, 5, 9): all-zero groups "
          "decode to +0.0, raw payloads", [T("w", (32, 128), fill="rows")], codec="pvqvr",
          args=("--bits", "2.5", "--group-size", "8", "--vr-k-values", "0", "2", "5", "9", "--transform", "identity"),
          seed=242, expect={"w": {"k_values": [0, 2, 5, 9]}}),
        P("pvqvr_zero_groups_rans", "K = 0 groups with rans: a shape bound of N(8, 0) = 1 takes no operation",
          [T("w", (32, 128), fill="rows")], codec="pvqvr",
          args=("--bits", "2.5", "--group-size", "8", "--vr-k-values", "0", "2", "5", "9", "--transform", "identity",
                "--entropy", "rans"), seed=243, expect={"w": {"k_values": [0, 2, 5, 9]}}),
        P("pvqvr_one_k", "a one-entry table (k_count 1): a pulses stream of width 0", [T("w", (16, 256))],
          codec="pvqvr", args=("--bits", "2", "--vr-fixed"), seed=244),
        P("pvqvr_k_count_3", "a three-entry table: 2-bit pulse indices, index 3 unused", [T("w", (16, 256))],
          codec="pvqvr", args=("--bits", "3", "--vr-k-values", "30", "45", "60"), seed=245,
          expect={"w": {"k_values": [30, 45, 60]}}),
        P("pvqvr_d64_4bit_rans", "group size 64 at 4 bits with rans: multi-limb shape indices in uniform mode",
          [T("w", (16, 512))], codec="pvqvr",
          args=("--bits", "4", "--group-size", "64", "--vr-k-count", "8", "--entropy", "rans"),
          seed=246, expect={"w": {"group_size": 64}}),
        P("pvqvr_spread_raw", "an 8-entry table in the raw coding: 3-bit pulse indices, every shape index at "
          "index_bits(32, K_max) bits", [T("w", (32, 256))], codec="pvqvr", args=("--bits", "2", "--vr-k-count", "8"),
          seed=248),
        P("pvqvr_d1", "group size 1: N(1, K) = 2 for every K (equal bounds), the shape is a sign",
          [T("w", (8, 40))], codec="pvqvr", args=("--bits", "3", "--group-size", "1", "--vr-k-values", "1", "2", "7"),
          seed=247, expect={"w": {"group_size": 1}}),
    ]


def ecsq_cases(codec) -> list:
    """The entropy-coded scalar codec (spec codecs/ecsq.md): a storage codec whose one 16-bit stream is
    meant for the rans coding's table mode, so its cases use --entropy auto (raw payloads would take 16
    bits per weight); one case keeps the raw coding. Offsets from none (an all-zero tensor) to hundreds."""
    n = codec.name
    P = seeded_case
    auto = ("--entropy", "auto")
    table = {"w": ["table"]}
    return [
        P(f"{n}_2bit", f"{n} at 2 bits per weight, rans table mode", [T("w", (32, 256))], codec=n,
          args=("--bits", "2", *auto), seed=251, codings=table),
        P(f"{n}_3bit", f"{n} at 3 bits per weight, rans table mode", [T("w", (16, 256))], codec=n,
          args=("--bits", "3", *auto), seed=252, codings=table),
        P(f"{n}_4bit", f"{n} at 4 bits per weight, rans table mode", [T("w", (16, 128))], codec=n,
          args=("--bits", "4", *auto), seed=253, codings=table),
        P(f"{n}_8bit_outliers", f"{n} at 8 bits on weights with outliers: large magnitudes, hundreds of offsets",
          [T("w", (16, 256), fill="outliers")], codec=n, args=("--bits", "8", *auto), seed=254, codings=table),
        P(f"{n}_odd_shape", f"{n} on 7 x 37 (prime sides; the tensor is smaller than its target rate allows)",
          [T("w", (7, 37))], codec=n, args=("--bits", "2", *auto), seed=255),
        P(f"{n}_identity", f"{n} with the identity transform", [T("w", (16, 64))], codec=n,
          args=("--bits", "3", "--transform", "identity", *auto), seed=256, expect={"w": {"transform": "identity"}}),
        P(f"{n}_source_dtypes", f"{n} on float16 and bfloat16 sources, rank 3",
          [T("w16", (16, 64), "float16"), T("wbf", (2, 8, 64), "bfloat16")], codec=n, args=("--bits", "3", *auto),
          seed=257),
        P(f"{n}_rht_block_576", f"{n} with RHT column blocks of 576 = 36 x 16", [T("w", (4, 576))], codec=n,
          args=("--bits", "2", "--rht-block", "576", *auto), seed=258),
        P(f"{n}_raw_coding", f"{n} with its indices in the raw coding (16 bits per weight)", [T("w", (8, 64))],
          codec=n, args=("--bits", "3", "--entropy", "none"), seed=259, codings={"w": ["raw"]}),
        P(f"{n}_zeros", f"{n} on an all-zero tensor: offset_count 0, every symbol 0 (+0.0)",
          [T("w", (8, 64), fill="zeros")], codec=n, args=("--bits", "2", *auto), seed=260,
          expect={"w": {"offset_count": 0}}),
        P(f"{n}_rows", f"{n} on rows of very different size (a zero row, tiny rows), identity transform",
          [T("w", (14, 64), fill="rows")], codec=n, args=("--bits", "4", "--transform", "identity", *auto), seed=261),
        P(f"{n}_rans_chunks", f"{n} indices in table-mode chunks of 100 symbols (a partial last chunk)",
          [T("w", (9, 37))], codec=n, args=("--bits", "3", "--transform", "identity", *auto), seed=262,
          rans=(("w", "indices", dict(mode="table", chunk_symbols=100)),), codings=table),
    ]


def eclattice_cases(codec) -> list:
    """The entropy-coded E8 lattice codec (spec codecs/eclattice.md): a storage codec whose coordinate
    streams are meant for the rans table mode (--entropy auto); padding (cols not a multiple of 8), rows
    of zeros, an all-zero tensor, multi-chunk streams, uniform-mode row counts and the raw coding."""
    n = codec.name
    P = seeded_case
    auto = ("--entropy", "auto")
    return [
        P(f"{n}_2bit", f"{n} at 2 bits per weight, rans table mode", [T("w", (32, 256))], codec=n,
          args=("--bits", "2", *auto), seed=271),
        P(f"{n}_3bit", f"{n} at 3 bits per weight, rans table mode", [T("w", (16, 256))], codec=n,
          args=("--bits", "3", *auto), seed=272),
        P(f"{n}_4bit", f"{n} at 4 bits per weight, rans table mode", [T("w", (16, 128))], codec=n,
          args=("--bits", "4", *auto), seed=273),
        P(f"{n}_odd_cols", f"{n} on 16 x 203: 26 groups per row, the last one with 5 padding values",
          [T("w", (16, 203))], codec=n, args=("--bits", "3", *auto), seed=274),
        P(f"{n}_narrow", f"{n} on 5 x 3 and 3 x 8: one group per row (5 padding values; none), row-count width 1",
          [T("a", (5, 3)), T("b", (3, 8))], codec=n, args=("--bits", "4", "--transform", "identity", *auto), seed=275),
        P(f"{n}_zero_rows", f"{n} on rows of very different size (a zero row, rows that round to all-zero "
          "points, a row 1000 times larger), identity transform", [T("w", (14, 64), fill="rows")], codec=n,
          args=("--bits", "4", "--transform", "identity", *auto), seed=276),
        P(f"{n}_zeros", f"{n} on an all-zero tensor: every group the origin (integer coset, residue 0)",
          [T("w", (8, 64), fill="zeros")], codec=n, args=("--bits", "2", *auto), seed=277),
        P(f"{n}_8bit_outliers", f"{n} at 8 bits on weights with outliers: large coordinates",
          [T("w", (16, 256), fill="outliers")], codec=n, args=("--bits", "8", "--transform", "identity", *auto),
          seed=278),
        P(f"{n}_source_dtypes", f"{n} on float16 and bfloat16 sources, rank 3",
          [T("w16", (16, 64), "float16"), T("wbf", (2, 8, 64), "bfloat16")], codec=n, args=("--bits", "3", *auto),
          seed=279),
        P(f"{n}_raw_coding", f"{n} with every stream in the raw coding (row counts 4 bits, coordinates 16 bits)",
          [T("w", (8, 64))], codec=n, args=("--bits", "3", "--entropy", "none"), seed=280,
          codings={"w": ["raw"] * 8}),
        P(f"{n}_rans_chunks", f"{n} coordinate streams in table-mode chunks of 100 symbols (partial last chunks) "
          "and row counts in uniform mode (bound G_r + 1 = 9)", [T("w", (24, 64))], codec=n,
          args=("--bits", "3", "--transform", "identity", *auto), seed=281,
          rans=(("w", "row_int", dict(mode="uniform", chunk_symbols=16)),
                ("w", "row_int_res0", dict(mode="uniform")),
                ("w", "first", dict(mode="table", chunk_symbols=100)),
                ("w", "mid_int", dict(mode="table", chunk_symbols=100)),
                ("w", "mid_half", dict(mode="table", chunk_symbols=100)),
                ("w", "last_res0", dict(mode="table", chunk_symbols=10)),
                ("w", "last_res2", dict(mode="table", chunk_symbols=10)),
                ("w", "last_half", dict(mode="table", chunk_symbols=10))),
          codings={"w": ["uniform", "uniform"] + ["table"] * 6}),
    ]


def ectcq_cases(codec) -> list:
    """The entropy-constrained trellis codec (spec codecs/ectcq.md): 256 states by default and the
    8-state trellis, row counts in the raw coding (small tensors) or uniform mode, union symbols for the
    rans table mode; shapes from 1 column and 1 row up; an all-zero tensor and a zero row; the raw coding."""
    n = codec.name
    P = seeded_case
    auto = ("--entropy", "auto")
    table = {"w": ["raw", "table", "table"]}
    return [
        P(f"{n}_2bit", f"{n} at 2 bits per weight, 256 states, union symbols in rans table mode",
          [T("w", (32, 256))], codec=n, args=("--bits", "2", *auto), seed=291, codings=table,
          expect={"w": {"states": 256}}),
        P(f"{n}_3bit", f"{n} at 3 bits per weight, 256 states", [T("w", (16, 256))], codec=n,
          args=("--bits", "3", *auto), seed=292, codings=table),
        P(f"{n}_4bit", f"{n} at 4 bits per weight, 256 states", [T("w", (16, 128))], codec=n,
          args=("--bits", "4", *auto), seed=293, codings=table),
        P(f"{n}_8_states", f"{n} with the 8-state trellis (state_bits 3) at 2 bits", [T("w", (16, 256))], codec=n,
          args=("--bits", "2", "--ectcq-states", "8", *auto), seed=294, codings=table, expect={"w": {"states": 8}}),
        P(f"{n}_32_states", f"{n} with the 32-state trellis (state_bits 5) at 3 bits", [T("w", (8, 200))], codec=n,
          args=("--bits", "3", "--ectcq-states", "32", *auto), seed=295, expect={"w": {"states": 32}}),
        P(f"{n}_odd_shape", f"{n} on 7 x 37 (prime sides; the tensor is smaller than its target rate allows)",
          [T("w", (7, 37))], codec=n, args=("--bits", "2", *auto), seed=296),
        P(f"{n}_narrow", f"{n} on 5 x 1 (every row one value, in state 0: row_a0 of width 1, all 1, no A_1 "
          "value) and 3 x 2", [T("a", (5, 1)), T("b", (3, 2))], codec=n,
          args=("--bits", "4", "--transform", "identity", *auto), seed=297),
        P(f"{n}_one_row", f"{n} on a single row of 300 values (rows = 1)", [T("w", (1, 300))], codec=n,
          args=("--bits", "3", "--transform", "identity", *auto), seed=298),
        P(f"{n}_rows", f"{n} on rows of very different size (a zero row, tiny rows), identity transform",
          [T("w", (14, 64), fill="rows")], codec=n, args=("--bits", "4", "--transform", "identity", *auto), seed=299),
        P(f"{n}_zeros", f"{n} on an all-zero tensor: j = 0 everywhere, every row stays in state 0 (union A_0; "
          "the a1 stream is empty), no offsets", [T("w", (8, 64), fill="zeros")], codec=n, args=("--bits", "2", *auto),
          seed=300, expect={"w": {"offset_count": 0, "a0_count": 512}}),
        P(f"{n}_8bit_outliers", f"{n} at 8 bits on weights with outliers: large grid magnitudes and union symbols",
          [T("w", (16, 256), fill="outliers")], codec=n, args=("--bits", "8", "--transform", "identity", *auto),
          seed=311),
        P(f"{n}_source_dtypes", f"{n} on float16 and bfloat16 sources, rank 3",
          [T("w16", (16, 64), "float16"), T("wbf", (2, 8, 64), "bfloat16")], codec=n, args=("--bits", "3", *auto),
          seed=312),
        P(f"{n}_raw_coding", f"{n} with every stream in the raw coding (row counts 7 bits, symbols 16 bits)",
          [T("w", (8, 64))], codec=n, args=("--bits", "3", "--entropy", "none"), seed=313,
          codings={"w": ["raw"] * 3}),
        P(f"{n}_rans_chunks", f"{n} union symbols in table-mode chunks of 100 symbols (partial last chunks) and "
          "row counts in uniform mode (bound cols + 1 = 38) in chunks of 3", [T("w", (9, 37))], codec=n,
          args=("--bits", "3", "--transform", "identity", *auto), seed=314,
          rans=(("w", "row_a0", dict(mode="uniform", chunk_symbols=3)),
                ("w", "a0", dict(mode="table", chunk_symbols=100)),
                ("w", "a1", dict(mode="table", chunk_symbols=100))),
          codings={"w": ["uniform", "table", "table"]}),
    ]


# codec name -> function(codec) -> [ValidCase]; codecs not named here get generic_codec_cases.
CODEC_CASES = {"pvq": pvq_cases, "lattice": lattice_cases, "trellis": trellis_cases, "pvqvr": pvqvr_cases,
               "ecsq": ecsq_cases, "ectcq": ectcq_cases, "eclattice": eclattice_cases}


def valid_cases() -> list:
    cases = container_cases() + rans_cases()
    for codec in all_codecs():
        if codec.quantizes:
            cases += CODEC_CASES.get(codec.name, generic_codec_cases)(codec)
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "duplicate vector names"
    return cases


# =========================================================================================
# RawFile: an independent, permissive serializer of the container (for invalid files)
# =========================================================================================


@dataclass
class RawPayload:
    coding: int
    data: bytes
    length: int = None  # declared length (default: len(data))
    crc: int = None  # declared CRC (default: CRC-32 of data)
    offset: int = None  # where the data lies and the declared offset (default: canonical)
    declared_offset: int = None  # a declared offset other than where the data lies
    gap: bytes = None  # the bytes before this payload (default: zeros up to its offset)


@dataclass
class RawTensor:
    name: bytes
    dtype: int
    shape: list
    rows: int
    cols: int
    transform_id: int
    transform_params: bytes
    codec_id: int
    codec_params: bytes
    payloads: list
    rank: int = None  # declared rank (default: len(shape))
    name_len: int = None  # declared str16 length (default: len(name))
    payload_count: int = None  # declared (default: len(payloads))

    def to_bytes(self, placed: dict) -> bytes:
        """The entry's bytes; `placed` maps id(payload) to where its data lies."""
        out = [struct.pack("<H", len(self.name) if self.name_len is None else self.name_len), self.name,
               struct.pack("<BB", self.dtype, len(self.shape) if self.rank is None else self.rank)]
        out += [struct.pack("<Q", d) for d in self.shape]
        out += [struct.pack("<QQB", self.rows, self.cols, self.transform_id),
                struct.pack("<H", len(self.transform_params)), self.transform_params,
                struct.pack("<B", self.codec_id), struct.pack("<I", len(self.codec_params)), self.codec_params,
                struct.pack("<B", len(self.payloads) if self.payload_count is None else self.payload_count)]
        for p in self.payloads:
            off = p.declared_offset if p.declared_offset is not None else placed.get(id(p), 0)
            out.append(struct.pack("<BQQI", p.coding, off, len(p.data) if p.length is None else p.length,
                                   checksum.crc32(p.data) if p.crc is None else p.crc))
        return b"".join(out)


@dataclass
class RawFile:
    """A .pvqc file as plain fields. `to_bytes` lays payloads out canonically (section 7.1)
    unless told otherwise and fills in sizes and checksums that are not overridden."""

    metadata: list  # [(key bytes, value bytes)] or [(key, value, key_len, value_len)]
    tensors: list
    magic: bytes = fmt.MAGIC
    version_major: int = fmt.VERSION_MAJOR
    version_minor: int = None  # None: the lowest minor version that defines the ids used (spec 2.1)
    flags: int = 0
    header_size: int = None
    header_crc: int = None
    file_size: int = None
    metadata_count: int = None
    tensor_count: int = None
    block_suffix: bytes = b""  # bytes after the tensor directory inside the header block
    tail: bytes = b""  # bytes after the last payload

    def _block(self, placed: dict) -> bytes:
        out = [struct.pack("<I", len(self.metadata) if self.metadata_count is None else self.metadata_count)]
        for m in self.metadata:
            key, value = m[0], m[1]
            klen = len(key) if len(m) < 3 or m[2] is None else m[2]
            vlen = len(value) if len(m) < 4 or m[3] is None else m[3]
            out += [struct.pack("<H", klen), key, struct.pack("<I", vlen), value]
        out.append(struct.pack("<I", len(self.tensors) if self.tensor_count is None else self.tensor_count))
        out += [t.to_bytes(placed) for t in self.tensors]
        out.append(self.block_suffix)
        return b"".join(out)

    def payloads(self) -> list:
        return [p for t in self.tensors for p in t.payloads]

    def layout(self):
        """(header block, payload area bytes, {id(payload): offset}, {id(payload): end of what precedes it})."""
        # Fixed-width fields: the block's size does not depend on the offsets' values.
        pos = fmt.FILE_HEADER_SIZE + len(self._block({}))
        placed, before, body = {}, {}, []
        for p in self.payloads():
            off = align_up(pos) if p.offset is None else p.offset
            gap = b"\x00" * (off - pos) if p.gap is None else p.gap
            assert len(gap) == off - pos, "a gap must fill the space before its payload exactly"
            placed[id(p)], before[id(p)] = off, pos
            body += [gap, p.data]
            pos = off + len(p.data)
        body.append(self.tail)
        return self._block(placed), b"".join(body), placed, before

    def header_block(self) -> bytes:
        return self.layout()[0]

    def end_before(self, target: RawPayload) -> int:
        """Where the header block or the payload before `target` ends."""
        return self.layout()[3][id(target)]

    def canonical_offset(self, target: RawPayload) -> int:
        return align_up(self.end_before(target))

    def minor_version(self) -> int:
        """Spec 2.1, written out independently of the writer: 1.1 added coding 1 (rans) and
        codecs 4 (pvqvr) and 5 (ecsq); 1.2 added codecs 6 (ectcq) and 7 (eclattice)."""
        if self.version_minor is not None:
            return self.version_minor
        if any(t.codec_id in (6, 7) for t in self.tensors if isinstance(t.codec_id, int)):
            return 2
        uses_1_1 = any(t.codec_id in (4, 5) for t in self.tensors if isinstance(t.codec_id, int)) or \
            any(p.coding == 1 for p in self.payloads())
        return 1 if uses_1_1 else 0

    def to_bytes(self) -> bytes:
        block, body, _, _ = self.layout()
        size = fmt.FILE_HEADER_SIZE + len(block) + len(body)
        header = self.magic + struct.pack(
            "<HHIIIQ", self.version_major, self.minor_version(), self.flags,
            len(block) if self.header_size is None else self.header_size,
            checksum.crc32(block) if self.header_crc is None else self.header_crc,
            size if self.file_size is None else self.file_size)
        return header + block + body

    @classmethod
    def parse(cls, data: bytes) -> "RawFile":
        """A valid file's fields (the construct reader validates it first); payloads lie canonically."""
        Container.from_bytes(data).close()
        hdr = fmt.FileHeader.parse(data[:32])
        block = fmt.HeaderBlock.parse(data[32:32 + hdr.header_size])
        meta = [(m.key.encode(), m.value.encode()) for m in block.metadata]
        tensors = []
        for e in block.tensors:
            pls = [RawPayload(p.coding, data[p.offset:p.offset + p.length]) for p in e.payloads]
            tensors.append(RawTensor(e.name.encode(), e.dtype, list(e.shape), e.rows, e.cols, e.transform_id,
                                     bytes(e.transform_params), e.codec_id, bytes(e.codec_params), pls))
        return cls(meta, tensors, version_minor=hdr.version_minor)

    def copy(self) -> "RawFile":
        return RawFile(
            [tuple(m) for m in self.metadata],
            [dataclasses.replace(t, shape=list(t.shape), payloads=[dataclasses.replace(p) for p in t.payloads])
             for t in self.tensors],
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("metadata", "tensors")})

    def tensor(self, name: str) -> RawTensor:
        return next(t for t in self.tensors if t.name == name.encode())


def raw_entry(name, dtype="float32", shape=(2,), data=None, **kw) -> RawTensor:
    """A raw-codec tensor entry (identity transform) with its one payload."""
    numel = int(np.prod(shape, dtype=object)) if shape else 1
    width = fmt.DTYPE_SIZES[dtype]
    if data is None:
        data = bytes(range(numel * width)) if numel * width < 256 else b"\x00" * (numel * width)
    rows, cols = (1, numel) if len(shape) < 2 else (int(np.prod(shape[:-1], dtype=object)), shape[-1])
    args = dict(name=name.encode(), dtype=fmt.DTYPE_IDS[dtype], shape=list(shape), rows=rows, cols=cols,
                transform_id=0, transform_params=b"", codec_id=0, codec_params=b"", payloads=[RawPayload(0, data)])
    args.update(kw)
    return RawTensor(**args)


# =========================================================================================
# Invalid cases
# =========================================================================================


@dataclass
class InvalidCase:
    name: str
    error: str  # the spec's error name (errors.py `code`): the FIRST error in check order
    section: str
    description: str
    data: bytes


def _base_files():
    """The valid files the invalid ones are edited from."""
    base_case = ValidCase(
        "base", "", [T("w", (5, 40)), T("b16", (5,), "float16"), T("s", (), "float32")],
        args=("--group-size", "8", "--gain-bits", "3", "--bits", "2"), seed=301, metadata={"k": "v", "note": "base"})
    multi_case = ValidCase(
        "multi", "", [T("wide", (2, 128))],
        args=("--group-size", "64", "--gain-bits", "0", "--bits", "4"), seed=302)
    base, _ = encode_case(base_case)
    multi, _ = encode_case(multi_case)
    return base, multi


def _streams(rf: RawFile, tname: str):
    """(StreamSpecs, symbol arrays) of a tensor's payloads in a RawFile of a valid file."""
    t = rf.tensor(tname)
    dtype = fmt.DTYPE_NAMES[t.dtype]
    codec = codec_by_id(t.codec_id)
    params = codec.parse_params(t.codec_params, t.rows, t.cols, dtype)
    specs = codec.streams(params, t.rows, t.cols, dtype)
    syms = [RawCoding.decode(np.frombuffer(p.data, np.uint8), s) for p, s in zip(t.payloads, specs)]
    return params, specs, syms


def _set_symbol(rf: RawFile, tname: str, stream: int, index: int, value: int) -> int:
    """Replace one symbol of a raw-coded stream (any width); returns the stream's width."""
    t = rf.tensor(tname)
    _, specs, syms = _streams(rf, tname)
    spec = specs[stream]
    sym = np.array(syms[stream], dtype=np.uint64)
    limbs = max(1, -(-spec.width // 64))
    sym = sym.reshape(spec.count, limbs) if sym.ndim == 1 else sym
    sym[index] = [(value >> (64 * i)) & ((1 << 64) - 1) for i in range(limbs)]
    # pack the LSB-first bit string with Python integers: independent of pvqcodec.bits
    big = 0
    for i in range(spec.count):
        v = sum(int(sym[i, l]) << (64 * l) for l in range(limbs))
        big |= v << (i * spec.width)
    t.payloads[stream].data = big.to_bytes(RawCoding.expected_length(spec), "little")
    return spec.width


def pvq_params_bytes(d, k, gain_bits, table=None) -> bytes:
    table = [1.0] * (1 << min(gain_bits, 8)) if table is None else table
    return struct.pack("<HHB", d, k, gain_bits) + struct.pack(f"<{len(table)}f", *table)


def pvqvr_params_bytes(d, k_values, gain_bits, table=None, k_count=None) -> bytes:
    table = [1.0] * (1 << min(gain_bits, 8)) if table is None else table
    kc = len(k_values) if k_count is None else k_count
    return (struct.pack(f"<HH{len(k_values)}H", d, kc, *k_values) + struct.pack("<B", gain_bits)
            + struct.pack(f"<{len(table)}f", *table))


def pvqvr_invalid_cases(add, edit) -> None:
    """The variable-rate PVQ codec's rules (spec codecs/pvqvr.md 6.5.1, 6.5.3), on a raw-coded base."""
    from pvqcodec.codecs.pvq import enumeration

    data, _ = encode_case(ValidCase(
        "pvqvr_base", "", [T("w", (16, 64))], codec="pvqvr", seed=304,
        args=("--bits", "2.5", "--group-size", "8", "--vr-k-values", "0", "3", "5", "--gain-bits", "1",
              "--transform", "identity")))
    V = RawFile.parse(data)
    params, specs, syms = _streams(V, "w")
    assert params["k_values"] == [0, 3, 5] and specs[2].width == 2 and all(p.coding == 0 for p in V.tensor("w").payloads)
    pulses = [int(v) for v in syms[2]]
    table = [float(v) for v in params["gain_table"]]

    def vr(**kw):
        vals = dict(d=8, k_values=[0, 3, 5], gain_bits=1, table=table, k_count=None)
        vals.update(kw)
        return lambda rf: setattr(rf.tensor("w"), "codec_params", pvqvr_params_bytes(**vals))

    add("pvqvr_k_count_0", "params_invalid", "6.5.1", "pvqvr k_count 0 (an empty pulse-count table)",
        edit(vr(k_values=[]), src=V))
    add("pvqvr_k_count_257", "params_invalid", "6.5.1", "pvqvr k_count 257 with 257 pulse counts 0..256",
        edit(vr(k_values=list(range(257))), src=V))
    add("pvqvr_k_values_decreasing", "params_invalid", "6.5.1", "pvqvr k_values 0, 5, 3 (not increasing)",
        edit(vr(k_values=[0, 5, 3]), src=V))
    add("pvqvr_k_values_repeated", "params_invalid", "6.5.1", "pvqvr k_values 0, 3, 3 (not strictly increasing)",
        edit(vr(k_values=[0, 3, 3]), src=V))
    add("pvqvr_k_value_4097", "params_invalid", "6.5.1", "a pvqvr pulse count of 4097",
        edit(vr(k_values=[0, 3, 4097]), src=V))
    add("pvqvr_index_bits_over_1024", "params_invalid", "6.5.1",
        "pvqvr group_size 256 with K_max 761: index_bits(256, 761) = 1025 > 1024", edit(vr(d=256, k_values=[1, 761]), src=V))
    add("pvqvr_gain_table_nan", "params_invalid", "6.5.1", "a NaN in the pvqvr gain table",
        edit(vr(table=[float("nan")] + table[1:]), src=V))
    g3 = pulses.index(1)  # a group with K = 3
    g0 = pulses.index(0)  # a group with K = 0
    n3 = enumeration.pvq_count(8, 3)
    assert n3 < enumeration.pvq_count(8, 5) < (1 << specs[3].width)
    add("pvqvr_pulse_index_eq_k_count", "payload_corrupt", "6.5.3",
        "a pvqvr pulse index of 3 with k_count 3 (raw coding, 2-bit indices)", edit(lambda f: _set_symbol(f, "w", 2, 5, 3), src=V))
    add("pvqvr_shape_index_eq_N_of_its_K", "payload_corrupt", "6.5.3",
        f"a pvqvr shape index equal to N(8, 3) = {n3} in a group with K_g = 3 (valid for K_max = 5, not for K_g)",
        edit(lambda f: _set_symbol(f, "w", 3, g3, n3), src=V))
    add("pvqvr_zero_group_shape_1", "payload_corrupt", "6.5.3",
        "a pvqvr shape index of 1 in a group with K_g = 0 (its bound N(8, 0) is 1)",
        edit(lambda f: _set_symbol(f, "w", 3, g0, 1), src=V))
    add("pvqvr_row_scale_inf", "payload_corrupt", "6.5.3", "a pvqvr row scale of +inf (float16 0x7C00)",
        edit(lambda f: _set_symbol(f, "w", 0, 3, 0x7C00), src=V))


def ecsq_params_bytes(step, offsets, flags=0, reserved=0, offset_count=None) -> bytes:
    n = len(offsets) if offset_count is None else offset_count
    return struct.pack("<fBBH", step, flags, reserved, n) + struct.pack(f"<{len(offsets)}f", *offsets)


def ecsq_invalid_cases(add, edit) -> None:
    """The entropy-coded scalar codec's rules (spec codecs/ecsq.md 6.6.1, 6.6.4 with 7.3), on a raw-coded base."""
    data, _ = encode_case(ValidCase(
        "ecsq_base", "", [T("w", (16, 64))], codec="ecsq", seed=305,
        args=("--bits", "3", "--transform", "identity", "--entropy", "none")))
    V = RawFile.parse(data)
    params, specs, syms = _streams(V, "w")
    assert params["offsets"].size >= 2 and specs[0].width == 16 and V.tensor("w").payloads[0].coding == 0
    step = float(params["step"])
    offsets = [float(v) for v in params["offsets"]]
    inf, nan = float("inf"), float("nan")

    def eq(**kw):
        vals = dict(step=step, offsets=offsets)
        vals.update(kw)
        return lambda rf: setattr(rf.tensor("w"), "codec_params", ecsq_params_bytes(**vals))

    add("ecsq_step_0", "params_invalid", "6.6.1", "ecsq step +0.0 (must be > 0)", edit(eq(step=0.0), src=V))
    add("ecsq_step_negative_zero", "params_invalid", "6.6.1", "ecsq step -0.0 (must be > 0)", edit(eq(step=-0.0), src=V))
    add("ecsq_step_negative", "params_invalid", "6.6.1", "ecsq step -1.0", edit(eq(step=-1.0), src=V))
    add("ecsq_step_nan", "params_invalid", "6.6.1", "ecsq step NaN", edit(eq(step=nan), src=V))
    add("ecsq_step_inf", "params_invalid", "6.6.1", "ecsq step +inf", edit(eq(step=inf), src=V))
    add("ecsq_flags_1", "params_invalid", "6.6.1", "ecsq flags 1 (reserved, must be 0)", edit(eq(flags=1), src=V))
    add("ecsq_reserved_nonzero", "params_invalid", "6.6.1", "ecsq reserved byte 0x80", edit(eq(reserved=0x80), src=V))
    add("ecsq_offset_nan", "params_invalid", "6.6.1", "a NaN as the last ecsq offset",
        edit(eq(offsets=offsets[:-1] + [nan]), src=V))
    add("ecsq_offset_neg_inf", "params_invalid", "6.6.1", "-inf as the first ecsq offset",
        edit(eq(offsets=[-inf] + offsets[1:]), src=V))
    add("ecsq_offset_count_over_block", "params_invalid", "6.6.1",
        "ecsq offset_count one more than the offsets the block holds (8 + 4 n bytes)",
        edit(eq(offset_count=len(offsets) + 1), src=V))
    add("ecsq_decoded_value_inf", "payload_corrupt", "6.6.4, 7.3",
        "ecsq step 1e35 and a symbol 65535 (magnitude 32768, above offset_count: it shares the last offset): "
        "(32768 - off) * 1e35 overflows to +inf",
        edit(lambda f: (eq(step=1e35)(f), _set_symbol(f, "w", 0, 17, 65535)), src=V))


def eclattice_params_bytes(half_scale, int_groups, int_res0_groups, flags=0, reserved=(0, 0, 0)) -> bytes:
    return struct.pack("<fB3BQQ", half_scale, flags, *reserved, int_groups, int_res0_groups)


def ectcq_params_bytes(step, offsets, state_bits=8, flags=0, a0_count=0, offset_count=None) -> bytes:
    n = len(offsets) if offset_count is None else offset_count
    return struct.pack("<fBBHQ", step, state_bits, flags, n, a0_count) + struct.pack(f"<{len(offsets)}f", *offsets)


def ectcq_invalid_cases(add, edit) -> None:
    """The entropy-constrained trellis codec's rules (spec codecs/ectcq.md 6.7.1, 6.7.3, 6.7.6 with 7.3),
    on a raw-coded base with the identity transform (16 x 64, 8 states)."""
    data, _ = encode_case(ValidCase(
        "ectcq_base", "", [T("w", (16, 64))], codec="ectcq", seed=306,
        args=("--bits", "3", "--ectcq-states", "8", "--transform", "identity", "--entropy", "none")))
    V = RawFile.parse(data)
    params, specs, syms = _streams(V, "w")
    rows, cols = 16, 64
    assert params["state_bits"] == 3 and specs[0].width == 7
    assert all(p.coding == 0 for p in V.tensor("w").payloads)
    row_a0 = [int(c) for c in syms[0]]
    step = float(params["step"])
    offsets = [float(v) for v in params["offsets"]]
    a0_count = int(params["a0_count"])
    inf, nan = float("inf"), float("nan")

    def eq(**kw):
        vals = dict(step=step, offsets=offsets, state_bits=3, a0_count=a0_count)
        vals.update(kw)
        return lambda rf: setattr(rf.tensor("w"), "codec_params", ectcq_params_bytes(**vals))

    add("ectcq_step_0", "params_invalid", "6.7.1", "ectcq step +0.0 (must be > 0)", edit(eq(step=0.0), src=V))
    add("ectcq_step_negative_zero", "params_invalid", "6.7.1", "ectcq step -0.0", edit(eq(step=-0.0), src=V))
    add("ectcq_step_negative", "params_invalid", "6.7.1", "ectcq step -1.0", edit(eq(step=-1.0), src=V))
    add("ectcq_step_nan", "params_invalid", "6.7.1", "ectcq step NaN", edit(eq(step=nan), src=V))
    add("ectcq_step_inf", "params_invalid", "6.7.1", "ectcq step +inf", edit(eq(step=inf), src=V))
    add("ectcq_state_bits_2", "params_invalid", "6.7.1", "ectcq state_bits 2 (4 states; the format allows 3..8)",
        edit(eq(state_bits=2), src=V))
    add("ectcq_state_bits_9", "params_invalid", "6.7.1", "ectcq state_bits 9 (512 states)",
        edit(eq(state_bits=9), src=V))
    add("ectcq_flags_1", "params_invalid", "6.7.1", "ectcq flags 1 (reserved, must be 0)", edit(eq(flags=1), src=V))
    add("ectcq_a0_count_over_numel", "params_invalid", "6.7.1",
        f"ectcq a0_count {rows * cols + 1} = rows * cols + 1", edit(eq(a0_count=rows * cols + 1), src=V))
    two = offsets + [0.0] * max(0, 2 - len(offsets))  # at least two offsets (a valid block either way)
    add("ectcq_offset_nan", "params_invalid", "6.7.1", f"a NaN as the last of {len(two)} ectcq offsets",
        edit(eq(offsets=two[:-1] + [nan]), src=V))
    add("ectcq_offset_neg_inf", "params_invalid", "6.7.1", f"-inf as the first of {len(two)} ectcq offsets",
        edit(eq(offsets=[-inf] + two[1:]), src=V))
    add("ectcq_offset_count_over_block", "params_invalid", "6.7.1",
        "ectcq offset_count one more than the offsets the block holds (16 + 4 n bytes)",
        edit(eq(offset_count=len(offsets) + 1), src=V))
    r = next(i for i, c in enumerate(row_a0) if c < cols)
    add("ectcq_row_a0_sum", "payload_corrupt", "6.7.3",
        f"ectcq row_a0[{r}] one larger: the counts sum to a0_count + 1",
        edit(lambda f: _set_symbol(f, "w", 0, r, row_a0[r] + 1), src=V))
    add("ectcq_row_a0_above_cols", "payload_corrupt", "4, 6.7.3",
        f"ectcq row_a0[0] = cols + 1 = {cols + 1}, at its stream's bound (raw coding, 7-bit counts)",
        edit(lambda f: _set_symbol(f, "w", 0, 0, cols + 1), src=V))

    def move(a, b, d):
        def fn(f):
            _set_symbol(f, "w", 0, a, row_a0[a] + d)
            _set_symbol(f, "w", 0, b, row_a0[b] - d)
        return fn

    add("ectcq_row_short_of_a0", "payload_corrupt", "6.7.6",
        "ectcq row_a0[1] one smaller and row_a0[2] one larger (the sum holds): row 1 runs out of A_0 symbols",
        edit(move(1, 2, -1), src=V))
    add("ectcq_row_short_of_a1", "payload_corrupt", "6.7.6",
        "ectcq row_a0[1] one larger and row_a0[2] one smaller (the sum holds): row 1 runs out of A_1 symbols",
        edit(move(1, 2, +1), src=V))
    # a row whose last value is in union A_0: its symbol, the row's last of a0, decides no later state
    from pvqcodec.codecs.ectcq import decode_ectcq_grid

    j = decode_ectcq_grid(syms[0], syms[1], syms[2], a0_count, 3, rows, cols)
    rl = next(i for i in range(rows) if j[i, -1] % 2 == 0)
    k = sum(row_a0[: rl + 1]) - 1
    add("ectcq_decoded_value_inf", "payload_corrupt", "6.7.6, 6.6.4, 7.3",
        f"ectcq step 1e35 and the a0 symbol 65535 (j = 65536) as the last value of row {rl}: "
        "(65536 - off) * 1e35 overflows to +inf",
        edit(lambda f: (eq(step=1e35)(f), _set_symbol(f, "w", 1, k, 65535)), src=V))


def eclattice_invalid_cases(add, edit) -> None:
    """The entropy-coded E8 lattice codec's rules (spec codecs/eclattice.md 6.8.1, 6.8.3, 6.8.5 with 7.3),
    on a raw-coded base of 8 x 40 (5 groups per row, 3-bit row counts)."""
    data, _ = encode_case(ValidCase(
        "eclattice_base", "", [T("w", (8, 40))], codec="eclattice", seed=306,
        args=("--bits", "3", "--transform", "identity", "--entropy", "none")))
    V = RawFile.parse(data)
    params, specs, syms = _streams(V, "w")
    assert specs[0].width == 3 and all(p.coding == 0 for p in V.tensor("w").payloads)
    hs, ni, n0 = float(params["half_scale"]), params["int_groups"], params["int_res0_groups"]
    row_int = [int(v) for v in syms[0]]
    row_res0 = [int(v) for v in syms[1]]
    inf, nan = float("inf"), float("nan")

    def ep(**kw):
        vals = dict(half_scale=hs, int_groups=ni, int_res0_groups=n0)
        vals.update(kw)
        return lambda rf: setattr(rf.tensor("w"), "codec_params", eclattice_params_bytes(**vals))

    def set_rows(stream, values):
        def f(rf):
            for r, v in enumerate(values):
                _set_symbol(rf, "w", stream, r, v)
        return f

    add("eclattice_half_scale_0", "params_invalid", "6.8.1", "eclattice half_scale +0.0 (must be > 0)",
        edit(ep(half_scale=0.0), src=V))
    add("eclattice_half_scale_negative", "params_invalid", "6.8.1", "eclattice half_scale -0.5",
        edit(ep(half_scale=-0.5), src=V))
    add("eclattice_half_scale_nan", "params_invalid", "6.8.1", "eclattice half_scale NaN",
        edit(ep(half_scale=nan), src=V))
    add("eclattice_half_scale_inf", "params_invalid", "6.8.1", "eclattice half_scale +inf",
        edit(ep(half_scale=inf), src=V))
    add("eclattice_flags_1", "params_invalid", "6.8.1", "eclattice flags 1 (reserved, must be 0)",
        edit(ep(flags=1), src=V))
    add("eclattice_reserved_nonzero", "params_invalid", "6.8.1", "eclattice reserved byte 2 (of 3) set to 0x01",
        edit(ep(reserved=(0, 1, 0)), src=V))
    add("eclattice_int_groups_over_G", "params_invalid", "6.8.1", "eclattice int_groups 41 with 8 x 5 = 40 groups",
        edit(ep(int_groups=41, int_res0_groups=0), src=V))
    add("eclattice_res0_over_int_groups", "params_invalid", "6.8.1",
        f"eclattice int_res0_groups {ni + 1} above int_groups {ni}", edit(ep(int_res0_groups=ni + 1), src=V))
    add("eclattice_params_23_bytes", "params_invalid", "6.8.1", "an eclattice parameter block of 23 bytes",
        edit(lambda rf: setattr(rf.tensor("w"), "codec_params", eclattice_params_bytes(hs, ni, n0)[:23]), src=V))
    # 6.8.3: a row count above G_r = 5 (a 3-bit symbol reaches 7)
    add("eclattice_row_int_above_bound", "payload_corrupt", "6.8.3, 4",
        "an eclattice row_int symbol of 6 with 5 groups per row (bound 6)",
        edit(lambda f: _set_symbol(f, "w", 0, 2, 6), src=V))
    add("eclattice_row_res0_above_bound", "payload_corrupt", "6.8.3, 4",
        "an eclattice row_int_res0 symbol of 7 with 5 groups per row (bound 6)",
        edit(lambda f: _set_symbol(f, "w", 1, 0, 7), src=V))
    # check 1: sums, Z_r <= I_r
    r = next(i for i, v in enumerate(row_int) if v < 5)
    add("eclattice_row_int_sum", "payload_corrupt", "6.8.3",
        f"eclattice row_int of row {r} raised by 1: the counts sum to int_groups + 1",
        edit(set_rows(0, row_int[:r] + [row_int[r] + 1] + row_int[r + 1:]), src=V))
    r = next(i for i, v in enumerate(row_res0) if v > 0)
    add("eclattice_row_res0_sum", "payload_corrupt", "6.8.3",
        f"eclattice row_int_res0 of row {r} lowered by 1: the counts sum to int_res0_groups - 1",
        edit(set_rows(1, row_res0[:r] + [row_res0[r] - 1] + row_res0[r + 1:]), src=V))
    a = next(i for i in range(8) if row_int[i] < 5)
    z = list(row_res0)
    need = row_int[a] + 1 - z[a]  # raise row a's count to row_int + 1, take as much from the others
    z[a] += need
    for i in range(8):
        take = min(need, z[i]) if i != a else 0
        z[i] -= take
        need -= take
    assert need == 0 and sum(z) == sum(row_res0) and z[a] == row_int[a] + 1
    add("eclattice_res0_above_row_int", "payload_corrupt", "6.8.3",
        f"eclattice row {a}: row_int_res0 {z[a]} above row_int {row_int[a]} (sums unchanged)",
        edit(set_rows(1, z), src=V))
    # check 2: a row's coset count
    a, b = next((i, j) for i in range(8) for j in range(8) if row_int[i] != row_int[j])
    ri, rz = list(row_int), list(row_res0)
    ri[a], ri[b], rz[a], rz[b] = ri[b], ri[a], rz[b], rz[a]
    add("eclattice_row_coset_count", "payload_corrupt", "6.8.3",
        f"eclattice rows {a} and {b} swap their row counts: sums hold, row {a}'s even c_0 count differs",
        edit(lambda f: (set_rows(0, ri)(f), set_rows(1, rz)(f)), src=V))
    # check 3: a row's residue count
    a = next(i for i in range(8) if row_res0[i] < row_int[i])
    b = next(i for i in range(8) if i != a and row_res0[i] > 0)
    z = list(row_res0)
    z[a] += 1
    z[b] -= 1
    add("eclattice_row_residue_count", "payload_corrupt", "6.8.3",
        f"eclattice row_int_res0 moves one group from row {b} to row {a}: sums hold, the residues differ",
        edit(set_rows(1, z), src=V))
    add("eclattice_decoded_value_inf", "payload_corrupt", "6.8.5, 7.3",
        "eclattice half_scale 3e38: a coordinate of magnitude 2 or more overflows to infinity",
        edit(ep(half_scale=3e38), src=V))

def invalid_cases() -> list:
    from pvqcodec.codecs.pvq import enumeration

    base, multi = _base_files()
    B = RawFile.parse(base)
    M = RawFile.parse(multi)
    assert B.to_bytes() == base and M.to_bytes() == multi, "RawFile must reproduce the writer's bytes"
    cases = []

    def add(name, error, section, description, data):
        cases.append(InvalidCase(name, error, section, description, data))

    def edit(fn, src=B):
        rf = src.copy()
        fn(rf)
        return rf.to_bytes()

    hdr_size = struct.unpack_from("<I", base, 16)[0]

    # ---- 2.1 / 2.2: the file header, in check order -------------------------------------------
    add("file_empty", "file_truncated", "2.2", "an empty file (fewer than 32 bytes)", b"")
    add("file_7_bytes", "file_truncated", "2.2", "the first 7 bytes of a valid file: too short even to hold the magic",
        base[:7])
    add("file_31_bytes", "file_truncated", "2.2", "the first 31 bytes of a valid file: the magic but no full file header",
        base[:31])
    add("short_not_pvqc", "magic_invalid", "2.2", "12 bytes that are not the magic (a short file is magic_invalid "
        "when it has at least 8 bytes and they are not the magic)", b"hello world\n")
    add("magic_first_byte", "magic_invalid", "2.1", "the magic's first byte 0x89 changed to 0x88",
        b"\x88" + base[1:])
    add("magic_text_mode", "magic_invalid", "2.1", "a text-mode transfer turned the magic's CR LF into LF",
        base.replace(b"\r\n", b"\n", 1))
    st = b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    add("safetensors_file", "magic_invalid", "2.1", "a safetensors file given as a .pvqc file",
        struct.pack("<Q", len(st)) + st + b"\x00" * 8)
    add("version_major_0", "version_unsupported", "2.1", "version_major 0", edit(lambda f: setattr(f, "version_major", 0)))
    add("version_major_2", "version_unsupported", "2.1", "version_major 2 (a later major version)",
        edit(lambda f: setattr(f, "version_major", 2)))
    add("flags_bit0", "reserved_nonzero", "2.1", "flags = 1 (all flag bits are reserved)",
        edit(lambda f: setattr(f, "flags", 1)))
    add("flags_bit31", "reserved_nonzero", "2.1", "flags = 0x80000000", edit(lambda f: setattr(f, "flags", 1 << 31)))
    add("file_size_over_limit", "limit_exceeded", "2.1, 8",
        "file_size = 2^50 + 1 (checked against its limit before against the real size)",
        edit(lambda f: setattr(f, "file_size", (1 << 50) + 1)))
    add("truncated_in_header_block", "file_truncated", "2.1", "the file cut inside its header block (file_size unchanged)",
        base[:32 + hdr_size // 2])
    add("truncated_in_payload", "file_truncated", "2.1", "the file cut inside its last payload (file_size unchanged)",
        base[:-3])
    add("trailing_byte", "file_size_mismatch", "2.1", "one zero byte appended after file_size", base + b"\x00")
    add("two_files_concatenated", "file_size_mismatch", "2.1", "two valid files concatenated", base + base)
    add("header_size_over_limit", "limit_exceeded", "2.1, 8", "header_size = 256 MiB + 1",
        edit(lambda f: setattr(f, "header_size", fmt.MAX_HEADER_SIZE + 1)))
    add("header_block_past_end", "file_truncated", "2.1",
        "header_size one byte larger than the rest of the file (file_size correct)",
        edit(lambda f: setattr(f, "header_size", len(base) - 32 + 1)))
    add("header_crc_field", "checksum_mismatch", "2.1", "the header_crc field off by one bit",
        edit(lambda f: setattr(f, "header_crc", checksum.crc32(B.header_block()) ^ 1)))

    def flip_meta_value(f):
        f.metadata[0] = (f.metadata[0][0], b"w")

    add("header_block_byte_flipped", "checksum_mismatch", "2.1",
        "one byte of a metadata value changed after the CRC was computed",
        edit(lambda f: (flip_meta_value(f), setattr(f, "header_crc", checksum.crc32(B.header_block())))))

    # ---- 3: the header block ------------------------------------------------------------------
    add("metadata_count_over_limit", "limit_exceeded", "3, 8",
        "metadata_count = 65,536 (checked when read, before any entry is parsed)",
        edit(lambda f: setattr(f, "metadata_count", fmt.MAX_METADATA_ENTRIES + 1)))
    add("tensor_count_over_limit", "limit_exceeded", "3, 8", "tensor_count = 2^20 + 1 (checked when read)",
        edit(lambda f: setattr(f, "tensor_count", fmt.MAX_TENSORS + 1)))
    add("header_block_trailing_byte", "header_corrupt", "3", "one byte left over after the tensor directory",
        edit(lambda f: setattr(f, "block_suffix", b"\x00")))
    add("header_block_short", "header_corrupt", "3",
        "tensor_count one more than the entries present: the directory runs past the block's end",
        edit(lambda f: setattr(f, "tensor_count", len(f.tensors) + 1)))
    add("metadata_value_past_end", "header_corrupt", "3", "a metadata value's str32 length runs past the block's end",
        edit(lambda f: f.metadata.__setitem__(0, (b"k", b"v", None, 1000))))
    add("metadata_key_too_long", "limit_exceeded", "3.2, 8", "a metadata key of 1025 bytes",
        edit(lambda f: f.metadata.append((b"k" * 1025, b"x"))))
    add("metadata_key_empty", "header_corrupt", "3.2", "an empty metadata key", edit(lambda f: f.metadata.append((b"", b"x"))))
    add("metadata_key_duplicate", "header_corrupt", "3.2", "the same metadata key twice",
        edit(lambda f: f.metadata.append((b"k", b"again"))))
    add("metadata_key_invalid_utf8", "header_corrupt", "1.1, 3.2", "a metadata key with the byte 0xFF",
        edit(lambda f: f.metadata.append((b"bad\xffkey", b"x"))))
    add("metadata_value_invalid_utf8", "header_corrupt", "1.1, 3.2",
        "a metadata value with a truncated multi-byte sequence", edit(lambda f: f.metadata.append((b"v", b"caf\xc3"))))
    add("metadata_value_overlong_utf8", "header_corrupt", "1.1, 3.2",
        "a metadata value with the overlong encoding C0 AF of '/'", edit(lambda f: f.metadata.append((b"v", b"a\xc0\xafb"))))

    def rename(name: bytes):
        return lambda f: setattr(f.tensors[0], "name", name)

    add("tensor_name_empty", "header_corrupt", "3.3", "an empty tensor name", edit(rename(b"")))
    add("tensor_name_duplicate", "header_corrupt", "3.3", "two tensors named 'b16'", edit(rename(b"b16")))
    add("tensor_name_invalid_utf8", "header_corrupt", "1.1, 3.3", "a tensor name with a lone continuation byte 0x80",
        edit(rename(b"w\x80")))
    add("tensor_name_utf8_surrogate", "header_corrupt", "1.1, 3.3",
        "a tensor name holding the UTF-8 encoding ED A0 80 of the surrogate U+D800 (not valid UTF-8)",
        edit(rename(b"w\xed\xa0\x80")))
    add("tensor_name_too_long", "limit_exceeded", "3.3, 8", "a tensor name of 4097 bytes", edit(rename(b"n" * 4097)))

    def set_t(tname, **kw):
        def f(rf):
            for k, v in kw.items():
                setattr(rf.tensor(tname), k, v)
        return f

    add("dtype_0", "header_corrupt", "3.3", "dtype id 0", edit(set_t("s", dtype=0)))
    add("dtype_4", "header_corrupt", "3.3", "dtype id 4", edit(set_t("s", dtype=4)))
    add("rank_over_limit", "limit_exceeded", "3.3, 8", "a raw tensor of rank 9 (shape 1 x ... x 1)",
        edit(lambda f: f.tensors.append(raw_entry("r9", shape=(1,) * 9))))
    add("dimension_over_limit", "limit_exceeded", "3.3, 8", "a raw tensor of shape (2^40 + 1, 0), view 1 x 0",
        edit(lambda f: f.tensors.append(raw_entry("big", shape=((1 << 40) + 1, 0), rows=1, cols=0, data=b""))))
    add("numel_over_limit", "limit_exceeded", "3.3, 8",
        "a raw tensor of shape (2^40, 2^9): numel 2^49 > 2^48 (the first error; its payload is empty)",
        edit(lambda f: f.tensors.append(raw_entry("big", shape=(1 << 40, 1 << 9), rows=1 << 40, cols=1 << 9,
                                                  data=b""))))
    add("numel_overflows_u64", "limit_exceeded", "3.3, 8",
        "a raw tensor of shape (2^40, 2^24), view 0 x 0: numel is 2^64, which wraps to 0 in 64-bit arithmetic",
        edit(lambda f: f.tensors.append(raw_entry("wrap", shape=(1 << 40, 1 << 24), rows=0, cols=0, data=b""))))
    add("rows_cols_mismatch", "header_corrupt", "3.3", "rows * cols is not numel (rows of 'w' set to 4 for 5 x 40)",
        edit(set_t("w", rows=4)))
    add("rows_cols_product_overflows_u64", "header_corrupt", "3.3",
        "a raw tensor of shape (0,) with view 2^32 x 2^32: rows * cols is 2^64, not 0 (it wraps to 0 in 64 bits)",
        edit(lambda f: f.tensors.append(raw_entry("wrap", shape=(0,), rows=1 << 32, cols=1 << 32, data=b""))))
    add("transform_id_200", "transform_unknown", "3.3, 5", "transform id 200 on the PVQ tensor",
        edit(set_t("w", transform_id=200)))
    add("transform_id_255", "transform_unknown", "3.3, 5", "transform id 255 on a raw tensor",
        edit(set_t("s", transform_id=255)))
    add("codec_id_200", "codec_unknown", "3.3, 6", "codec id 200", edit(set_t("w", codec_id=200)))
    add("codec_id_255", "codec_unknown", "3.3, 6", "codec id 255 on a raw tensor", edit(set_t("b16", codec_id=255)))

    # ---- parameter blocks (params_invalid) ----------------------------------------------------
    w = B.tensor("w")
    w_rows, w_cols = w.rows, w.cols
    add("identity_params_nonempty", "params_invalid", "1.3, 5", "an identity transform with a 1-byte parameter block",
        edit(set_t("s", transform_params=b"\x00")))
    add("raw_params_nonempty", "params_invalid", "1.3, 6.1", "a raw codec with a 1-byte parameter block",
        edit(set_t("s", codec_params=b"\x00")))
    add("raw_with_rht", "params_invalid", "6.1", "a raw tensor with an rht transform (valid rht parameters)",
        edit(set_t("b16", transform_id=1, transform_params=struct.pack("<QII", 7, 1, 1))))
    add("rht_params_short", "params_invalid", "1.3, 5", "an rht parameter block of 15 bytes",
        edit(set_t("w", transform_params=w.transform_params[:15])))
    add("rht_params_long", "params_invalid", "1.3, 5", "an rht parameter block of 17 bytes",
        edit(set_t("w", transform_params=w.transform_params + b"\x00")))
    add("rht_block_zero", "params_invalid", "5", "rht col_block = 0",
        edit(set_t("w", transform_params=struct.pack("<QII", 1, 1, 0))))
    add("rht_block_not_dividing", "params_invalid", "5",
        f"rht row_block = 4, a valid order that does not divide rows = {w_rows}",
        edit(set_t("w", transform_params=struct.pack("<QII", 1, 4, 1))))
    add("rht_block_not_hadamard", "params_invalid", "5",
        f"rht col_block = 10, which divides cols = {w_cols} but has no Hadamard matrix in the spec's table",
        edit(set_t("w", transform_params=struct.pack("<QII", 1, 1, 10))))
    add("rht_block_over_65536", "params_invalid", "transforms 5.3.1",
        "rht col_block = 131072 = 2^17 on a 1 x 131072 PVQ tensor: a power of two dividing its side, but above "
        "65536 (the first error; the tensor's payloads are empty)",
        edit(lambda f: f.tensors.append(RawTensor(
            b"huge", 1, [1, 131072], 1, 131072, 1, struct.pack("<QII", 5, 1, 131072), 1, pvq_params_bytes(8, 2, 0),
            [RawPayload(0, b""), RawPayload(0, b""), RawPayload(0, b"")]))))
    add("rht_block_6", "params_invalid", "5", "rht col_block = 6 (no Hadamard matrix of order 6) on a 6-column tensor",
        edit(lambda f: f.tensors.append(RawTensor(
            b"six", 1, [1, 6], 1, 6, 1, struct.pack("<QII", 3, 1, 6), 1, pvq_params_bytes(6, 2, 0),
            [RawPayload(0, b"\x00\x3c"), RawPayload(0, b""),
             RawPayload(0, b"\x00" * RawCoding.expected_length(StreamSpec("s", 1, enumeration.index_bits(6, 2))))]))))
    add("pvq_empty_tensor", "params_invalid", "3.3", "a PVQ tensor of shape (0, 8) (identity transform): "
        "a quantized tensor with no elements",
        edit(lambda f: f.tensors.append(RawTensor(
            b"empty", 1, [0, 8], 0, 8, 0, b"", 1, pvq_params_bytes(8, 2, 0),
            [RawPayload(0, b""), RawPayload(0, b""), RawPayload(0, b"")]))))
    add("pvq_empty_tensor_rht", "params_invalid", "3.3", "a PVQ tensor of shape (0, 8) with the rht transform "
        "(blocks 1 x 8): a quantized tensor with no elements, checked before the transform's parameters",
        edit(lambda f: f.tensors.append(RawTensor(
            b"empty", 1, [0, 8], 0, 8, 1, struct.pack("<QII", 7, 1, 8), 1, pvq_params_bytes(8, 2, 0),
            [RawPayload(0, b""), RawPayload(0, b""), RawPayload(0, b"")]))))

    d, k, gb = struct.unpack_from("<HHB", w.codec_params)
    table = list(struct.unpack_from(f"<{1 << gb}f", w.codec_params, 5))

    def pvq(**kw):
        vals = dict(d=d, k=k, gain_bits=gb, table=table)
        vals.update(kw)
        return set_t("w", codec_params=pvq_params_bytes(vals["d"], vals["k"], vals["gain_bits"], vals["table"]))

    add("pvq_group_size_0", "params_invalid", "6.2.1", "PVQ group_size 0", edit(pvq(d=0)))
    add("pvq_group_size_257", "params_invalid", "6.2.1", "PVQ group_size 257", edit(pvq(d=257)))
    add("pvq_pulses_0", "params_invalid", "6.2.1", "PVQ pulses 0", edit(pvq(k=0)))
    add("pvq_pulses_4097", "params_invalid", "6.2.1", "PVQ pulses 4097", edit(pvq(k=4097)))
    add("pvq_gain_bits_9", "params_invalid", "6.2.1",
        "PVQ gain_bits 9 with a 2^9-entry table (5 + 4 * 512 bytes)", edit(pvq(gain_bits=9, table=[1.0] * 512)))
    assert enumeration.index_bits(256, 761) > 1024
    add("pvq_index_bits_over_1024", "params_invalid", "6.2.1, 6.2.4",
        "PVQ group_size 256, pulses 761: index_bits(256, 761) = 1025 > 1024", edit(pvq(d=256, k=761)))
    add("pvq_gain_table_nan", "params_invalid", "6.2.1", "a NaN in the PVQ gain table",
        edit(pvq(table=[float("nan")] + table[1:])))
    add("pvq_gain_table_inf", "params_invalid", "6.2.1", "-inf in the PVQ gain table",
        edit(pvq(table=table[:-1] + [float("-inf")])))
    add("pvq_decoded_overflow", "payload_corrupt", "7.3", "every PVQ gain table entry 3.0e38 (finite): "
        "row scale x gain overflows float32, so decoded values are not finite",
        edit(pvq(table=[3.0e38] * len(table))))
    add("pvq_params_short", "params_invalid", "1.3, 6.2.1", "a PVQ parameter block one byte short",
        edit(set_t("w", codec_params=w.codec_params[:-1])))
    add("pvq_params_long", "params_invalid", "1.3, 6.2.1", "a PVQ parameter block with one byte left over",
        edit(set_t("w", codec_params=w.codec_params + b"\x00")))

    # ---- payload entries ------------------------------------------------------------------------
    add("payload_count_over_limit", "limit_exceeded", "3.3, 8",
        "a raw tensor with 17 payloads (also more than the 1 its codec defines: the limit is checked first)",
        edit(lambda f: setattr(f.tensor("s"), "payloads", f.tensor("s").payloads + [RawPayload(0, b"") for _ in range(16)])))
    add("payload_count_too_few", "payload_layout_invalid", "3.3",
        "a PVQ tensor with 2 payloads (its shapes payload removed); the codec defines 3",
        edit(lambda f: f.tensor("w").payloads.pop()))
    add("payload_count_too_many", "payload_layout_invalid", "3.3", "a raw tensor with a second, empty payload",
        edit(lambda f: f.tensor("s").payloads.append(RawPayload(0, b""))))
    add("coding_7", "coding_unknown", "3.6, 4.1", "payload coding id 7", edit(lambda f: setattr(f.tensor("w").payloads[1], "coding", 7)))
    add("coding_255", "coding_unknown", "3.6, 4.1", "payload coding id 255 on a raw tensor",
        edit(lambda f: setattr(f.tensor("b16").payloads[0], "coding", 255)))
    add("raw_payload_too_long", "payload_layout_invalid", "4.2", "a raw float16 payload one byte longer than 5 symbols",
        edit(lambda f: setattr(f.tensor("b16").payloads[0], "data", f.tensor("b16").payloads[0].data + b"\x00")))
    add("raw_payload_too_short", "payload_layout_invalid", "4.2", "a PVQ shapes payload one byte short",
        edit(lambda f: setattr(f.tensor("w").payloads[2], "data", f.tensor("w").payloads[2].data[:-1])))

    # ---- 7.1: layout ------------------------------------------------------------------------------
    first_off = align_up(32 + hdr_size)
    assert first_off > 32 + hdr_size, "the base file needs padding after its header block"

    def shift_payload(f):
        p = f.tensor("b16").payloads[0]
        p.offset = f.canonical_offset(p) + 64

    add("payload_offset_not_canonical", "payload_layout_invalid", "7.1",
        "a payload 64 bytes after its canonical offset (zero gap; the later payloads follow it canonically)",
        edit(shift_payload))

    def overlap(f):
        f.tensor("w").payloads[2].declared_offset = f.canonical_offset(f.tensor("w").payloads[2]) - 64

    add("payload_offset_overlaps", "payload_layout_invalid", "7.1",
        "a payload's declared offset 64 bytes before the canonical one (overlapping its predecessor)", edit(overlap))

    def pad_after_header(f):
        p = f.tensors[0].payloads[0]
        gap = bytearray(first_off - 32 - hdr_size)
        gap[-1] = 1
        p.gap = bytes(gap)

    add("padding_nonzero_after_header", "payload_layout_invalid", "7.1",
        "a non-zero byte in the padding between the header block and the first payload", edit(pad_after_header))

    def pad_between(f):
        p = f.tensor("b16").payloads[0]
        canon = f.canonical_offset(p)
        prev_end = f.end_before(p)
        assert canon > prev_end
        gap = bytearray(canon - prev_end)
        gap[0] = 0x80
        p.gap = bytes(gap)

    add("padding_nonzero_between_payloads", "payload_layout_invalid", "7.1",
        "a non-zero byte in the padding between two payloads", edit(pad_between))
    add("bytes_after_last_payload", "payload_layout_invalid", "1.3, 7.1",
        "64 zero bytes after the last payload, counted in file_size", edit(lambda f: setattr(f, "tail", b"\x00" * 64)))
    add("byte_after_last_payload", "payload_layout_invalid", "1.3, 7.1",
        "one byte after the last payload, counted in file_size", edit(lambda f: setattr(f, "tail", b"\x07")))

    cut = base[:-2]
    cut = cut[:24] + struct.pack("<Q", len(cut)) + cut[32:]
    add("payload_past_end", "file_truncated", "7.1",
        "the last payload's final 2 bytes missing and file_size lowered to match: the payload runs past the end",
        cut)

    # ---- payloads: checksums, then content -----------------------------------------------------
    def flip_payload(tname, i, byte=0):
        def f(rf):
            p = rf.tensor(tname).payloads[i]
            b = bytearray(p.data)
            b[byte] ^= 0x10
            p.crc = checksum.crc32(p.data)
            p.data = bytes(b)
        return f

    add("payload_byte_flipped", "checksum_mismatch", "3.6", "one byte of the PVQ shapes payload changed",
        edit(flip_payload("w", 2, 3)))
    add("payload_byte_flipped_last_tensor", "checksum_mismatch", "3.6",
        "one byte of the last tensor's payload changed (earlier tensors decode; no output may be left)",
        edit(flip_payload("s", 0, 1)))
    add("payload_crc_field", "checksum_mismatch", "3.6", "a payload's crc field changed (header CRC recomputed)",
        edit(lambda f: setattr(f.tensor("b16").payloads[0], "crc", checksum.crc32(f.tensor("b16").payloads[0].data) ^ 0x800)))
    add("payload_crc_empty", "checksum_mismatch", "2.3, 3.6",
        "an empty payload (gains of width 0) whose crc is 1: the CRC of no bytes is 0",
        edit(lambda f: setattr(f.tensor("wide").payloads[1], "crc", 1), src=M))

    def padding_bit(tname, stream):
        def f(rf):
            p = rf.tensor(tname).payloads[stream]
            _, specs, _ = _streams(rf, tname)
            used = specs[stream].count * specs[stream].width % 8
            assert used, "this stream must end inside a byte"
            b = bytearray(p.data)
            b[-1] |= 0x80
            p.data = bytes(b)
        return f

    add("raw_padding_bits_gains", "payload_corrupt", "4.2", "a padding bit set in the last byte of the PVQ gains stream",
        edit(padding_bit("w", 1)))
    add("raw_padding_bits_shapes", "payload_corrupt", "4.2", "a padding bit set in the last byte of the PVQ shapes stream",
        edit(padding_bit("w", 2)))

    params_w, specs_w, _ = _streams(B, "w")
    n_w = enumeration.pvq_count(params_w["group_size"], params_w["pulses"])
    width_w = specs_w[2].width
    assert n_w < (1 << width_w)
    add("pvq_index_eq_N", "payload_corrupt", "6.2.3, pvq-enumeration 3",
        f"a PVQ shape index equal to N({params_w['group_size']}, {params_w['pulses']}) = {n_w} (single limb)",
        edit(lambda f: _set_symbol(f, "w", 2, 5, n_w)))
    add("pvq_index_max", "payload_corrupt", "6.2.3, pvq-enumeration 3",
        f"a PVQ shape index of all ones ({width_w} bits) in the last group", edit(lambda f: _set_symbol(f, "w", 2, specs_w[2].count - 1, (1 << width_w) - 1)))
    params_m, specs_m, _ = _streams(M, "wide")
    n_m = enumeration.pvq_count(params_m["group_size"], params_m["pulses"])
    assert specs_m[2].width > 128 and n_m < (1 << specs_m[2].width)
    add("pvq_index_eq_N_multilimb", "payload_corrupt", "6.2.3, pvq-enumeration 3",
        f"a {specs_m[2].width}-bit PVQ shape index equal to N({params_m['group_size']}, {params_m['pulses']})",
        edit(lambda f: _set_symbol(f, "wide", 2, 1, n_m), src=M))
    wm = specs_m[2].width
    top_only = ((1 << wm) - 1) ^ ((1 << (64 * ((wm - 1) // 64))) - 1)
    assert top_only >= n_m
    add("pvq_index_top_limb_multilimb", "payload_corrupt", "6.2.3, pvq-enumeration 3",
        "a multi-limb PVQ shape index >= N whose top limb is all ones and whose lower limbs are zero",
        edit(lambda f: _set_symbol(f, "wide", 2, 0, top_only), src=M))
    add("pvq_row_scale_inf", "payload_corrupt", "6.2.3", "a PVQ row scale of +inf (float16 0x7C00)",
        edit(lambda f: _set_symbol(f, "w", 0, 2, 0x7C00)))
    add("pvq_row_scale_nan", "payload_corrupt", "6.2.3", "a PVQ row scale that is a NaN (float16 0xFE01)",
        edit(lambda f: _set_symbol(f, "w", 0, 0, 0xFE01)))

    pvqvr_invalid_cases(add, edit)
    ecsq_invalid_cases(add, edit)
    ectcq_invalid_cases(add, edit)
    eclattice_invalid_cases(add, edit)

    # ---- codecs without their own invalid list: the rules every codec shares ------------------
    for codec in all_codecs():
        if not codec.quantizes or codec.name == "pvq":
            continue
        data, _ = encode_case(ValidCase(f"{codec.name}_base", "", [T("w", (16, 64))], codec=codec.name,
                                        args=("--bits", "2"), seed=303))
        rf = RawFile.parse(data)
        t = rf.tensors[0]
        add(f"{codec.name}_params_long", "params_invalid", "1.3, 6",
            f"a {codec.name} parameter block with one byte left over",
            edit(lambda f: setattr(f.tensors[0], "codec_params", t.codec_params + b"\x00"), src=rf))
        if t.codec_params:
            add(f"{codec.name}_params_short", "params_invalid", "1.3, 6", f"a {codec.name} parameter block one byte short",
                edit(lambda f: setattr(f.tensors[0], "codec_params", t.codec_params[:-1]), src=rf))
        add(f"{codec.name}_payload_count_too_few", "payload_layout_invalid", "3.3",
            f"a {codec.name} tensor with its last payload removed", edit(lambda f: f.tensors[0].payloads.pop(), src=rf))
        add(f"{codec.name}_payload_byte_flipped", "checksum_mismatch", "3.6", f"one byte of a {codec.name} payload changed",
            edit(lambda f: _flip_first_nonempty(f.tensors[0]), src=rf))

    rans_invalid_cases(add)
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "duplicate invalid vector names"
    return cases


def rans_invalid_cases(add) -> None:
    """One file per rejection rule of the rans coding (spec 4.3, all `payload_corrupt`), each
    an edit of one rans payload of a valid file. Every edit is checked to break the rule it
    names: the Python decoder's message for that payload must say so."""
    from pvqcodec.coding.rans import RansCoding, align8

    base_case = ValidCase(
        "rans_base", "", [T("w", (5, 40)), T("z", (4, 64), args=("--gain-bits", "0", "--group-size", "16")),
                          T("wide", (2, 128), args=("--group-size", "64", "--gain-bits", "0", "--bits", "4"))],
        args=("--group-size", "8", "--gain-bits", "3", "--bits", "2"), seed=304,
        rans=(("w", "gains", dict(mode="table", chunk_symbols=8)), ("w", "shapes", dict(mode="uniform", chunk_symbols=16)),
              ("z", "gains", dict(mode="table")), ("z", "shapes", dict(mode="uniform")),
              ("wide", "shapes", dict(mode="uniform"))),
        codings={"w": ["raw", "table", "uniform"], "z": ["raw", "table", "uniform"], "wide": ["raw", "raw", "uniform"]})
    data, _ = encode_case(base_case)
    R = RawFile.parse(data)
    GAINS, SHAPES = 1, 2

    def spec_of(rf, tname, stream):
        from pvqcodec.decoder import decode_payloads

        t = rf.tensor(tname)
        dtype = fmt.DTYPE_NAMES[t.dtype]
        codec = codec_by_id(t.codec_id)
        params = codec.parse_params(t.codec_params, t.rows, t.cols, dtype)
        specs = codec.streams(params, t.rows, t.cols, dtype)
        earlier = decode_payloads(codec, params, t.rows, t.cols, dtype,
                                  [(p.coding, np.frombuffer(p.data, np.uint8), sp)
                                   for p, sp in zip(t.payloads[:stream], specs[:stream])])
        bounds = codec.stream_bounds(params, t.rows, t.cols, dtype, stream, earlier)
        return dataclasses.replace(specs[stream], bounds=bounds), earlier

    def u(b, off, n):
        return int.from_bytes(b[off:off + n], "little")

    def put(b, off, n, v):
        b[off:off + n] = int(v).to_bytes(n, "little")

    def layout(b):
        """(T, C, offset of the chunk data) of a rans payload."""
        T = align8(16 + 2 * u(b, 12, 4))
        C = u(b, 8, 4)
        return T, C, T + 8 * C

    def case(name, tname, stream, description, fn, says):
        rf = R.copy()
        p = rf.tensor(tname).payloads[stream]
        assert p.coding == RansCoding.id
        b = bytearray(p.data)
        out = fn(b)
        p.data = bytes(b if out is None else out)
        spec, _ = spec_of(rf, tname, stream)
        try:
            RansCoding.decode(np.frombuffer(p.data, np.uint8), spec)
        except FormatError as exc:
            assert exc.code == "payload_corrupt" and says in str(exc), (name, str(exc))
        else:
            raise AssertionError(f"invalid/{name}: the edited rans payload decodes")
        add(name, "payload_corrupt", "4.3", description, rf.to_bytes())

    def gains_field(off, n, v):
        return lambda b: put(b, off, n, v)

    case("rans_mode_unknown", "w", GAINS, "a rans payload with mode 2 (0 table, 1 uniform)",
         gains_field(0, 1, 2), "unknown mode")
    case("rans_table_precision_0", "w", GAINS, "a table-mode rans payload with precision 0 (1 to 15)",
         gains_field(1, 1, 0), "precision")
    case("rans_table_precision_16", "w", GAINS, "a table-mode rans payload with precision 16 (1 to 15)",
         gains_field(1, 1, 16), "precision")
    case("rans_uniform_precision", "w", SHAPES, "a uniform-mode rans payload with precision 12 (must be 0)",
         gains_field(1, 1, 12), "precision")
    case("rans_reserved_nonzero", "w", GAINS, "a rans payload whose reserved u16 is 1", gains_field(2, 2, 1),
         "reserved")
    case("rans_chunk_symbols_0", "w", GAINS, "a rans payload with chunk_symbols 0", gains_field(4, 4, 0),
         "chunk_symbols")
    case("rans_chunk_count_wrong", "w", GAINS, "a rans payload whose chunk_count is ceil(count / S) + 1",
         lambda b: put(b, 8, 4, u(b, 8, 4) + 1), "chunk_count")
    case("rans_alphabet_0", "w", GAINS, "a table-mode rans payload with alphabet 0", gains_field(12, 4, 0),
         "alphabet")
    case("rans_alphabet_over_width", "w", GAINS,
         "a table-mode rans payload of a 3-bit stream with alphabet 9 (more than 2^width)", gains_field(12, 4, 9),
         "alphabet")

    def wide_table(b):
        b[0], b[1] = 0, 12
        put(b, 12, 4, 65537)
    case("rans_alphabet_over_65536", "wide", SHAPES,
         "a table-mode rans payload of a 250-odd-bit stream with alphabet 65537 (at most 65536)", wide_table,
         "alphabet")
    case("rans_uniform_alphabet", "w", SHAPES, "a uniform-mode rans payload with alphabet 1 (must be 0)",
         gains_field(12, 4, 1), "alphabet")
    case("rans_freq_sum", "w", GAINS, "a frequency table that sums to 2^P + 1",
         lambda b: put(b, 16, 2, u(b, 16, 2) + 1), "sum to")
    case("rans_freq_entry_over_total", "z", GAINS,
         "a one-symbol frequency table whose entry is 2^P + 1 (at most 2^P, and the sum is off)",
         lambda b: put(b, 16, 2, (1 << b[1]) + 1), "exceeds")

    def padding(b):
        assert u(b, 12, 4) % 4, "this payload's frequency table must be followed by padding"
        b[align8(16 + 2 * u(b, 12, 4)) - 1] = 1
    case("rans_padding_nonzero", "z", GAINS, "a non-zero padding byte after the frequency table", padding,
         "padding")
    case("rans_truncated_in_freq", "w", GAINS, "a rans payload that ends inside its frequency table",
         lambda b: b[:18], "frequency table")
    case("rans_truncated_in_chunk_end", "w", GAINS, "a rans payload that ends inside its chunk offset table",
         lambda b: b[:layout(b)[0] + 12], "chunk offset table")

    def decreasing(b):
        T, C, _ = layout(b)
        assert C >= 3
        put(b, T, 8, u(b, T + 8, 8) + 64)
    case("rans_chunk_end_decreasing", "w", GAINS, "chunk_end[0] above chunk_end[1] (offsets must not decrease)",
         decreasing, "below")

    def short_chunk(b):
        T, C, _ = layout(b)
        put(b, T + 8, 8, u(b, T, 8) + 63)
    case("rans_chunk_under_64_words", "w", GAINS, "chunk 1 is 63 words long (each chunk holds at least its 64 "
         "words of lane states)", short_chunk, "under 64")
    case("rans_length_long", "w", GAINS, "a rans payload with two bytes after its last chunk",
         lambda b: b + bytes(2), "ends the payload")
    case("rans_length_short", "w", GAINS, "a rans payload whose last chunk lacks its last word",
         lambda b: b[:-2], "ends the payload")
    case("rans_length_odd", "w", GAINS, "a rans payload with one byte after its last chunk",
         lambda b: b + bytes(1), "ends the payload")

    def low_state(b):
        T, C, data_off = layout(b)
        start = u(b, T + 8, 8)  # chunk 2 starts where chunk 1 ends
        put(b, data_off + 2 * (start + 2 * 3 + 1), 2, 0)
    case("rans_initial_state_low", "w", GAINS, "lane 3 of chunk 2 starts at a state below 2^16 (its high word 0)",
         low_state, "initial state")

    def refill_past_end(b):
        T, C, _ = layout(b)
        assert C == 1 and u(b, T, 8) > 64, "the chunk must have words to read"
        put(b, T, 8, u(b, T, 8) - 1)
        return b[:-2]
    case("rans_refill_past_end", "wide", SHAPES, "the payload's last word removed (and chunk_end with it): the "
         "chunk's last refill finds no word",
         refill_past_end, "refills past the end")

    def final_state(b):
        T, C, data_off = layout(b)
        put(b, data_off + 2 * (2 * 7), 2, 1)  # lane 7: 2^16 + 1; a symbol of frequency 2^P never moves it
    case("rans_final_state", "z", GAINS, "a lane not back at 2^16 after the chunk's last symbol (table mode with "
         "one symbol of frequency 2^P: lane 7 starts, and so ends, at 2^16 + 1)", final_state, "not back at state")

    def words_left(b):
        T, C, _ = layout(b)
        put(b, T + 8 * (C - 1), 8, u(b, T + 8 * (C - 1), 8) + 1)
        return b + bytes(2)
    case("rans_words_left_over", "z", GAINS, "a word left over after the chunk's last symbol", words_left,
         "left over")

    def above_bound(tname, symbol_index, how):
        """Re-encode the shapes under the largest bound with the same operations as N(D, K),
        with one symbol at (or above) N(D, K)."""
        from pvqcodec.coding.rans import symbol_operations

        def fn(b):
            rf = R.copy()
            spec, _ = spec_of(rf, tname, SHAPES)
            N = spec.bounds.values[0]
            ops, s, ntop, _ = symbol_operations(N)
            wider = ntop << s
            assert wider > N and symbol_operations(wider) == symbol_operations(N)
            syms = RansCoding.decode(np.frombuffer(bytes(b), np.uint8), spec)
            rows = np.asarray(syms, np.uint64).reshape(spec.count, -1).copy()
            v = N if how == "eq" else wider - 1
            rows[symbol_index] = [(v >> (64 * i)) & ((1 << 64) - 1) for i in range(rows.shape[1])]
            head = RansCoding.header(np.frombuffer(bytes(b), np.uint8), spec)
            return bytearray(RansCoding.encode(rows if rows.shape[1] > 1 else rows[:, 0],
                                               dataclasses.replace(spec, bounds=type(spec.bounds)((wider,), None)),
                                               mode="uniform", chunk_symbols=head.chunk_symbols).tobytes())
        return fn

    case("rans_uniform_symbol_eq_bound", "z", SHAPES,
         "a uniform-mode PVQ shape index equal to N(D, K), coded with the operations of that bound",
         above_bound("z", 5, "eq"), "at or above its bound")
    case("rans_uniform_symbol_above_bound_multilimb", "wide", SHAPES,
         "a uniform-mode PVQ shape index above N(D, K) > 2^64 (the largest value its operations can code)",
         above_bound("wide", 1, "max"), "at or above its bound")


def _flip_first_nonempty(t: RawTensor):
    p = next(p for p in t.payloads if p.data)
    p.crc = checksum.crc32(p.data)
    b = bytearray(p.data)
    b[0] ^= 0x01
    p.data = bytes(b)


# =========================================================================================
# Writing and checking
# =========================================================================================


def check_invalid(case: InvalidCase) -> None:
    """The Python reference decoder must reject the file with exactly the expected error."""
    try:
        with Container.from_bytes(case.data) as c:
            for rec in c.tensors:
                decode_float32(c, rec)
    except FormatError as exc:
        if exc.code != case.error:
            raise AssertionError(f"invalid/{case.name}: the reference decoder says {exc.code} ({exc}), "
                                 f"the manifest {case.error}") from None
        return
    raise AssertionError(f"invalid/{case.name}: the reference decoder accepts it")


def build_all():
    """Every vector in memory: ([(name, bytes, expected)], [InvalidCase])."""
    valid = []
    for case in valid_cases():
        data, expected = encode_case(case)
        valid.append((case.name, data, expected))
    invalid = invalid_cases()
    for case in invalid:
        check_invalid(case)
    return valid, invalid


def file_codecs(data: bytes) -> list:
    """The registered codecs named by a file's tensor entries (as far as its directory parses):
    a decoder that lacks one of them cannot be expected to reach the file's error."""
    try:
        hdr = fmt.FileHeader.parse(data[:32])
        block = fmt.HeaderBlock.parse(data[32:32 + hdr.header_size])
    except Exception:  # noqa: BLE001 - a file broken before its directory names no codec
        return []
    known = {c.id: c.name for c in all_codecs()}
    return sorted({known[t.codec_id] for t in block.tensors if t.codec_id in known})


def manifest(invalid) -> dict:
    return {
        "spec_version": SPEC_VERSION,
        "description": "Files a conforming decoder must reject. `error` is the spec's error name (spec/pvqc.md "
                       "section 9) of the first rule the file breaks in the spec's check order; a decoder prints it "
                       "on stderr and exits non-zero.",
        "files": {c.name + ".pvqc": {"error": c.error, "section": c.section, "description": c.description,
                                     "codecs": file_codecs(c.data)}
                  for c in sorted(invalid, key=lambda c: c.name)},
    }


def _dump_json(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def write_all(out: Path, valid, invalid) -> None:
    out = Path(out)
    vdir, idir = out / "vectors", out / "invalid"
    vdir.mkdir(parents=True, exist_ok=True)
    idir.mkdir(parents=True, exist_ok=True)
    keep = {name for name, _, _ in valid}
    for stale in vdir.iterdir():  # vectors of cases that no longer exist
        if stale.is_dir() and stale.name not in keep:
            shutil.rmtree(stale)
    for name, data, expected in valid:
        d = vdir / name
        d.mkdir(exist_ok=True)
        (d / "input.pvqc").write_bytes(data)
        (d / "expected.json").write_text(_dump_json(expected), encoding="utf-8")
    keep = {c.name + ".pvqc" for c in invalid} | {"MANIFEST.json"}
    for stale in idir.iterdir():  # sub-folders (fuzz/: crash inputs found by fuzzing) are kept
        if stale.is_file() and stale.name not in keep:
            stale.unlink()
    for c in invalid:
        (idir / (c.name + ".pvqc")).write_bytes(c.data)
    (idir / "MANIFEST.json").write_text(_dump_json(manifest(invalid)), encoding="utf-8")


def total_size(out: Path) -> int:
    return sum(p.stat().st_size for sub in ("vectors", "invalid") for p in (Path(out) / sub).rglob("*") if p.is_file())


def compare_trees(a: Path, b: Path) -> list:
    """Relative paths that differ between two generated trees (missing on either side included)."""
    diffs = []
    for sub in ("vectors", "invalid"):
        # invalid/fuzz/ holds crash inputs found by fuzzing: kept by hand, not generated.
        fa = {p.relative_to(a) for p in (a / sub).rglob("*") if p.is_file() and "fuzz" not in p.relative_to(a).parts}
        fb = {p.relative_to(b) for p in (b / sub).rglob("*") if p.is_file() and "fuzz" not in p.relative_to(b).parts}
        for rel in sorted(fa ^ fb):
            diffs.append(f"{rel}: only in {'the committed set' if rel in fa else 'the regenerated set'}")
        for rel in sorted(fa & fb):
            if not filecmp.cmp(a / rel, b / rel, shallow=False):
                diffs.append(f"{rel}: differs")
    return diffs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE, help="folder to write vectors/ and invalid/ into (default: here)")
    ap.add_argument("--check", action="store_true", help="regenerate into a temporary folder and compare with --out")
    args = ap.parse_args(argv)
    valid, invalid = build_all()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            write_all(Path(tmp), valid, invalid)
            diffs = compare_trees(args.out, Path(tmp))
        for d in diffs:
            print(d)
        print(f"{len(valid)} valid and {len(invalid)} invalid vectors: "
              f"{'no drift' if not diffs else f'{len(diffs)} differences'}")
        return 1 if diffs else 0
    write_all(args.out, valid, invalid)
    size = total_size(args.out)
    print(f"wrote {len(valid)} valid and {len(invalid)} invalid vectors to {args.out} ({size:,} bytes)")
    if size > MAX_TOTAL_BYTES:
        print(f"error: the vectors take {size:,} bytes, more than {MAX_TOTAL_BYTES:,}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
