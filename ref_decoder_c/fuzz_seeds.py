"""Write small valid .pvqc files: the fuzzer's seed corpus and the C decoder tests' inputs.

    python ref_decoder_c/fuzz_seeds.py OUT_DIR

Each file holds a few tiny tensors so that one fuzzing run is fast: PVQ at several group
sizes and rates (one-limb and multi-limb shape indices), the trellis codec (every code,
row scales), the lattice codec (1 and 3 stages, row scales), the RHT with power-of-two and
Paley blocks, the identity transform, raw tensors of every dtype, a scalar and an empty
raw tensor.
"""

import os
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
]

# Codec options the encoder expects, by codec (the CLI's defaults).
DEFAULT_OPTIONS = {
    "pvq": {"group_size": 32, "gain_bits": None, "gain_quantizer": "empirical"},
    "trellis": {"trellis_L": 12, "code": "1mad", "row_scales": False},
    "lattice": {"row_scales": "auto"},
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
                            rht_block=opts.get("rht_block", "auto"), codec_options=codec_options)
    entries = []
    for name, shape, dtype in tensors:
        entry, _ = encode_tensor(name, stored_array(shape, dtype, rng), dtype, options)
        entries.append(entry)
    return to_bytes({"producer": "fuzz_seeds"}, entries)


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
