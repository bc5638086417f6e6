"""Shared test utilities: small weight files, surgical edits of .pvqc bytes, the conformance scripts."""

import importlib.util
import sys
from pathlib import Path

import numpy as np

from pvqcodec import checksum
from pvqcodec.container import format as fmt
from pvqcodec.safetensors_io import write_safetensors

ODD_SHAPES = [
    ("a.weight", (576, 1536), "F32"),
    ("b.weight", (1536, 576), "F16"),
    ("c.weight", (3, 5), "BF16"),
    ("norm.weight", (576,), "F32"),
    ("bias16", (7,), "F16"),
    ("e3.weight", (4, 6, 32), "F32"),
]


def make_array(shape, st_dtype, rng):
    a = rng.standard_normal(shape).astype(np.float32)
    if st_dtype == "F32":
        return a
    if st_dtype == "F16":
        return a.astype(np.float16)
    from pvqcodec.dtypes import f32_to_bf16_bits

    return f32_to_bf16_bits(a)


def write_weights(path, spec=ODD_SHAPES, seed=0, metadata=None):
    rng = np.random.default_rng(seed)
    arrays = {name: make_array(shape, dt, rng) for name, shape, dt in spec}
    write_safetensors(path, [(n, dt, shape, (lambda n=n: arrays[n])) for n, shape, dt in spec], metadata)
    return arrays


def split(data: bytes):
    """(file header dict, header block dict, rest) of a .pvqc file's bytes."""
    hdr = fmt.FileHeader.parse(data[:32])
    block = fmt.HeaderBlock.parse(data[32 : 32 + hdr.header_size])
    return hdr, block, data[32 + hdr.header_size :]


def rebuild(data: bytes, mutate_block=None, mutate_header=None, fix_crc=True) -> bytes:
    """Apply edits to the parsed header and re-serialize with a correct header CRC, keeping
    payload bytes where they were (edits must keep the header block's size)."""
    hdr, block, rest = split(data)
    if mutate_block:
        mutate_block(block)
    raw = fmt.HeaderBlock.build(block)
    assert len(raw) == hdr.header_size, "edit changed the header size"
    h = dict(hdr)
    h.pop("_io", None)
    if fix_crc:
        h["header_crc"] = checksum.crc32(raw)
    if mutate_header:
        mutate_header(h)
    return fmt.FileHeader.build(h) + raw + rest


CONFORMANCE = Path(__file__).resolve().parent.parent / "conformance"


def load_conformance(name):
    """conformance/<name>.py as a module (the scripts are not a package)."""
    mod_name = f"pvqc_conformance_{name}"
    if mod_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(mod_name, CONFORMANCE / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[mod_name]
