"""Write small valid .pvqc files: the fuzzer's seed corpus and the C decoder tests' inputs.

    python ref_decoder_c/fuzz_seeds.py OUT_DIR

Each file holds a few tiny tensors so that one fuzzing run is fast: PVQ at several group
sizes and rates (one-limb and multi-limb shape indices), the trellis codec (every code,
row scales), the lattice codec (1 and 3 stages, row scales), the RHT with power-of-two and
Paley blocks, the identity transform, raw tensors of every dtype, a scalar and an empty
raw tensor; files whose payloads use the rans coding (spec 1.1) in table and uniform
mode, in small chunks (`recode`); the pvqvr codec (spec 1.1), raw and rans-coded; the
ecsq codec (spec 1.1) as the encoder writes it (`--entropy auto`: rans table mode) and in
small table-mode chunks; and the ectcq and eclattice codecs (spec 1.2) the same ways.
"""

import os
import struct
import sys

import numpy as np

from pvqcodec.container.writer import to_bytes
from pvqcodec.dtypes import f32_to_bf16_bits
from pvqcodec.encoder import EncodeOptions, encode_tensor

# (file name, [(tensor name, shape, dtype)], encode options)
SEEDS = [
    ("pvq_d8_2bit", [("w", (4, 16), "float32")], dict(bits=2.0, codec_options={"group_size": 8})),
    ("pvq_d16_3bit_bf16", [("w", (3, 5), "bfloat16"), ("v", (12, 24), "float16")],
     dict(bits=3.0, codec_options={"group_size": 16})),
    ("pvq_d64_4bit_multilimb", [("w", (2, 64), "float32")], dict(bits=4.0, codec_options={"group_size": 64})),
    ("pvq_d128_identity", [("w", (2, 128), "float32")],
     dict(bits=2.0, transform="identity", codec_options={"group_size": 128})),
    ("pvq_paley_blocks", [("w", (24, 20), "float32")], dict(bits=2.5, rht_block="full", codec_options={"group_size": 4})),
    ("pvq_gainbits0", [("w", (8, 8), "float32")], dict(bits=1.5, codec_options={"group_size": 8, "gain_bits": 0})),
    ("pvq_d256_gainbits8", [("w", (2, 256), "float32")], dict(bits=3.0, codec_options={"group_size": 256, "gain_bits": 8})),
    ("pvq_d4_many_rows", [("w", (48, 4), "float16"), ("x", (1, 7), "float32")], dict(bits=2.0, codec_options={"group_size": 4})),
    ("raw_all_dtypes", [("a", (5,), "float32"), ("b", (3,), "float16"), ("c", (2, 2), "bfloat16"), ("s", (), "float32"),
                        ("z", (0,), "float16")], dict(bits=2.0)),
    ("mixed", [("norm", (8,), "float32"), ("w", (6, 12), "bfloat16")], dict(bits=2.0, codec_options={"group_size": 12})),
    ("trellis_1mad_k2", [("w", (20, 18), "float32")], dict(codec="trellis", bits=2.0, codec_options={"trellis_L": 8})),
    ("trellis_hyb_rows", [("w", (16, 16), "float16")],
     dict(codec="trellis", bits=3.0, codec_options={"trellis_L": 10, "code": "hyb", "row_scales": True})),
    ("trellis_3inst_k1", [("w", (3, 40), "bfloat16")], dict(codec="trellis", bits=1.0, transform="identity",
                                                             codec_options={"trellis_L": 6, "code": "3inst"})),
    ("lattice_2bit", [("w", (4, 20), "float32")], dict(codec="lattice", bits=2.0)),
    ("lattice_4bit_rows", [("w", (6, 16), "bfloat16")], dict(codec="lattice", bits=4.0,
                                                             codec_options={"row_scales": "on"})),
    # the rans coding (spec 1.1): the encoder's own choice, and every payload recoded in small
    # chunks (recode: chunk_symbols, mode) for many chunks, partial last chunks, both modes
    ("rans_encoder_pvq_d16", [("w", (12, 48), "float32")], dict(bits=3.0, entropy="rans",
                                                                 codec_options={"group_size": 16})),
    ("rans_pvq_d8_uniform", [("w", (8, 16), "float32")], dict(bits=2.0, codec_options={"group_size": 8},
                                                              recode=(16, "uniform"))),
    ("rans_pvq_d64_wide", [("w", (2, 64), "float32")], dict(bits=4.0, codec_options={"group_size": 64},
                                                            recode=(5, "auto"))),
    ("rans_pvq_d4_table", [("w", (48, 4), "float16"), ("x", (1, 7), "float32")],
     dict(bits=2.0, codec_options={"group_size": 4}, recode=(40, "auto"))),
    ("rans_pvq_identity_table", [("w", (4, 32), "float32")],
     dict(bits=2.0, transform="identity", codec_options={"group_size": 8, "gain_bits": 3}, recode=(9, "auto"))),
    ("rans_trellis_hyb", [("w", (16, 16), "float16")],
     dict(codec="trellis", bits=2.0, codec_options={"trellis_L": 10, "code": "hyb", "row_scales": True},
          recode=(33, "auto"))),
    ("rans_lattice_rows", [("w", (6, 16), "bfloat16")], dict(codec="lattice", bits=4.0,
                                                             codec_options={"row_scales": "on"}, recode=(9, "auto"))),
    ("rans_raw_all_dtypes", [("a", (5,), "float32"), ("b", (3,), "float16"), ("s", (), "float32"),
                             ("z", (0,), "float16")], dict(bits=2.0, recode=(2, "uniform"))),
    # the pvqvr codec (spec 1.1): a pulse count per group, shapes bounded by N(D, K_g)
    ("pvqvr_d8_raw", [("w", (8, 32), "float32")],
     dict(codec="pvqvr", bits=2.0, entropy="none", codec_options={"group_size": 8, "k_values": [0, 2, 3, 5, 9]})),
    ("pvqvr_d16_rans", [("w", (12, 48), "bfloat16")],
     dict(codec="pvqvr", bits=3.0, codec_options={"group_size": 16, "zero_groups": True, "k_count": 5})),
    ("pvqvr_d8_chunks", [("w", (16, 16), "float32")],
     dict(codec="pvqvr", bits=2.0, codec_options={"group_size": 8, "k_count": 4}, recode=((5, 9, 7, 3), "uniform"))),
    ("pvqvr_d64_wide", [("w", (2, 128), "float32")],
     dict(codec="pvqvr", bits=4.0, codec_options={"group_size": 64, "k_count": 3}, recode=(3, "auto"))),
    # the ecsq codec (spec 1.1): 16-bit zigzag indices in rans table mode (--entropy auto)
    ("ecsq_rans_2bit", [("w", (16, 64), "float32"), ("v", (8, 24), "bfloat16")],
     dict(codec="ecsq", bits=2.0, entropy="auto")),
    ("ecsq_identity_8bit", [("w", (8, 64), "float32")],
     dict(codec="ecsq", bits=8.0, transform="identity", entropy="auto")),
    ("ecsq_chunks", [("w", (12, 20), "float16")], dict(codec="ecsq", bits=3.0, recode=(37, "auto"))),
    # the ectcq codec (spec 1.2): row_a0 (32 bits, bounded by cols + 1), the union streams a0, a1;
    # 8 and 256 states, rows walked in column strips with the RHT (cols > 64)
    ("ectcq_rans_2bit", [("w", (8, 96), "float32"), ("v", (3, 20), "bfloat16")],
     dict(codec="ectcq", bits=2.0, entropy="auto")),
    ("ectcq_v3_identity", [("w", (6, 40), "float16")],
     dict(codec="ectcq", bits=3.0, transform="identity", codec_options={"state_bits": 3})),
    ("ectcq_chunks", [("w", (10, 24), "float32")], dict(codec="ectcq", bits=2.0, codec_options={"state_bits": 4},
                                                        recode=((3, 11, 7), "auto"))),
    # the eclattice codec (spec 1.2): row counts of w_r bits, first / mid / last streams, odd cols
    ("eclattice_rans_2bit", [("w", (8, 96), "float32"), ("v", (3, 21), "bfloat16")],
     dict(codec="eclattice", bits=2.0, entropy="auto")),
    ("eclattice_identity_4bit", [("w", (5, 13), "float16")],
     dict(codec="eclattice", bits=4.0, transform="identity")),
    ("eclattice_chunks", [("w", (9, 24), "float32")], dict(codec="eclattice", bits=3.0,
                                                           recode=((2, 5, 13, 7), "auto"))),
]

# Codec options the encoder expects, by codec (the CLI's defaults).
DEFAULT_OPTIONS = {
    "pvq": {"group_size": 32, "gain_bits": None, "gain_quantizer": "empirical"},
    "trellis": {"trellis_L": 12, "code": "1mad", "row_scales": False},
    "lattice": {"row_scales": "auto"},
    "pvqvr": {"group_size": 32, "gain_bits": None, "k_count": None, "k_span": None, "k_values": None,
              "zero_groups": False, "fixed": False},
    "ecsq": {},
    "ectcq": {},
    "eclattice": {},
}


def stored_array(shape, dtype, rng):
    a = rng.standard_normal(shape).astype(np.float32)
    if dtype == "float16":
        return a.astype(np.float16)
    if dtype == "bfloat16":
        return f32_to_bf16_bits(a)
    return a


def seed_bytes(tensors, opts, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    codec = opts.get("codec", "pvq")
    codec_options = dict(DEFAULT_OPTIONS[codec])
    codec_options.update(opts.get("codec_options", {}))
    options = EncodeOptions(codec=codec, bits=opts["bits"], transform=opts.get("transform", "rht"),
                            rht_block=opts.get("rht_block", "auto"), codec_options=codec_options,
                            entropy=opts.get("entropy", "auto"))
    entries = []
    for name, shape, dtype in tensors:
        entry, _ = encode_tensor(name, stored_array(shape, dtype, rng), dtype, options)
        entries.append(entry)
    data = to_bytes({"producer": "fuzz_seeds"}, entries)
    if "recode" in opts:
        data = recode(data, *opts["recode"])
    return data


def _parameter_blocks(data: bytes) -> list:
    """(transform_params, codec_params) bytes of every tensor, in directory order."""
    pos = 32
    (n_meta,) = struct.unpack_from("<I", data, pos)
    pos += 4
    for _ in range(n_meta):
        (kl,) = struct.unpack_from("<H", data, pos)
        (vl,) = struct.unpack_from("<I", data, pos + 2 + kl)
        pos += 2 + kl + 4 + vl
    (n_t,) = struct.unpack_from("<I", data, pos)
    pos += 4
    out = []
    for _ in range(n_t):
        (nl,) = struct.unpack_from("<H", data, pos)
        pos += 2 + nl + 1
        rank = data[pos]
        pos += 1 + 8 * rank + 16 + 1
        (tl,) = struct.unpack_from("<H", data, pos)
        tparams = data[pos + 2:pos + 2 + tl]
        pos += 2 + tl + 1
        (cl,) = struct.unpack_from("<I", data, pos)
        cparams = data[pos + 4:pos + 4 + cl]
        pos += 4 + cl
        npay = data[pos]
        pos += 1 + 21 * npay
        out.append((tparams, cparams))
    return out


def recode(data: bytes, chunk_symbols, mode: str = "auto") -> bytes:
    """The same file with every payload rans-coded in chunks of `chunk_symbols` symbols (an
    int, or a sequence giving payload position p of each tensor chunk_symbols[p % len]):
    mode "uniform" (over the stream's bounds), "table" (where the symbols fit a table,
    else uniform), or "auto" (table mode for streams of width <= 16 whose symbols are below
    4096, else uniform). Exercises what the reference encoder's large
    default chunks never show on small tensors: many chunks, partial last chunks."""
    from dataclasses import replace

    from pvqcodec.coding.rans import RansCoding
    from pvqcodec.container.reader import Container
    from pvqcodec.container.writer import TensorToWrite
    from pvqcodec.decoder import decode_streams

    c = Container.from_bytes(data)
    entries = []
    for rec, (tparams, cparams) in zip(c.tensors, _parameter_blocks(data)):
        streams = decode_streams(c, rec)
        payloads = []
        for pos, (p, sym) in enumerate(zip(rec.payloads, streams)):
            bounds = rec.codec.stream_bounds(rec.codec_params, rec.rows, rec.cols, rec.dtype, pos, streams[:pos])
            spec = replace(p.stream, bounds=bounds)
            top = int(np.max(np.asarray(sym))) if spec.count and spec.width <= 64 else 1 << 64
            m = mode
            if m == "auto":  # table mode where its frequency table stays small
                m = "table" if spec.width <= 16 and top < 4096 else "uniform"
            elif m == "table" and (top >= 65536 or len(np.unique(np.asarray(sym))) > 1 << 15):
                m = "uniform"
            precision = None if m == "table" else 0
            S = chunk_symbols if isinstance(chunk_symbols, int) else chunk_symbols[pos % len(chunk_symbols)]
            payloads.append((RansCoding.id, RansCoding.encode(sym, spec, mode=m, precision=precision, chunk_symbols=S)))
        entries.append(TensorToWrite(rec.name, rec.dtype, rec.shape, rec.rows, rec.cols, rec.transform_id, tparams,
                                     rec.codec_id, cparams, payloads))
    return to_bytes(dict(c.metadata), entries)


def write_seeds(out_dir) -> list:
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for fname, tensors, opts in SEEDS:
        path = os.path.join(out_dir, fname + ".pvqc")
        with open(path, "wb") as f:
            f.write(seed_bytes(tensors, opts))
        paths.append(path)
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: fuzz_seeds.py OUT_DIR")
    for p in write_seeds(sys.argv[1]):
        print(p, os.path.getsize(p))
