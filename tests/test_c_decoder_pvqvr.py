"""The C decoder's pvqvr codec (codec id 4, spec codecs/pvqvr.md, 6.5): the same float32
bits as the Python decoder for every kind of pulse table (one K, several, K = 0 groups,
shape indices wider than 64 bits), raw and rans payloads (the shapes' bounds indexed by the
pulses stream, chunk sizes that differ between the two), row ranges, and the same error
names on damaged files."""

import struct
import sys
import zlib

import numpy as np
import pytest

from test_c_decoder import CDIR
from test_c_decoder_errors import c_decode, corruptions, fix_header_crc, python_decode, walk
from test_c_decoder_rans import assert_c_equals_python, rans_payload_modes

cdecoder = pytest.importorskip("pvqcodec.cdecoder")
sys.path.insert(0, CDIR)
from fuzz_seeds import recode, seed_bytes  # noqa: E402

TENSORS = [("w", (32, 64), "float32"), ("v", (48, 32), "bfloat16")]

CONFIGS = [
    ("rd_d8", dict(bits=2.0, codec_options={"group_size": 8})),
    ("rd_d16_zero_groups", dict(bits=3.0, codec_options={"group_size": 16, "zero_groups": True, "k_count": 5})),
    ("d64_wide", dict(bits=4.0, codec_options={"group_size": 64, "k_count": 3})),
    ("fixed_identity", dict(bits=2.0, transform="identity", codec_options={"group_size": 8, "fixed": True})),
    ("table_raw_coding", dict(bits=2.0, entropy="none", codec_options={"group_size": 8, "k_values": [0, 2, 3, 5, 9]})),
]


@pytest.fixture(scope="module")
def files():
    return {label: seed_bytes(TENSORS, dict(opts, codec="pvqvr")) for label, opts in CONFIGS}


@pytest.mark.parametrize("label", [c[0] for c in CONFIGS])
def test_c_equals_python(files, label):
    data = files[label]
    assert_c_equals_python(data)
    # rans everywhere; chunk sizes per payload position (row_scales, gains, pulses, shapes) that
    # make a row range's shape chunks reach past its pulse chunks, and the other way round
    for S, mode in [(7, "uniform"), (33, "auto"), ((5, 9, 7, 3), "uniform"), ((5, 9, 3, 7), "table")]:
        recoded = recode(data, S, mode)
        assert all(m is not None for _, m in rans_payload_modes(recoded))
        assert_c_equals_python(recoded)


def test_several_pulse_counts_and_zero_groups_are_covered(files):
    from pvqcodec.container.reader import Container

    kv = [rec.codec_params["k_values"] for data in files.values() for rec in Container.from_bytes(data).tensors]
    assert any(len(k) > 1 for k in kv) and any(len(k) == 1 for k in kv) and any(k[0] == 0 for k in kv)


def _set_symbol(data: bytes, k: int, index: int, width: int, value: int) -> bytes:
    """The file with symbol `index` of raw payload k set to value, CRCs fixed."""
    _, payloads = walk(data)
    off, ln, crc_at = payloads[k]
    d = bytearray(data)
    for j in range(width):
        p = index * width + j
        byte, bit = off + p // 8, p % 8
        d[byte] = (d[byte] & ~(1 << bit)) | (((value >> j) & 1) << bit)
    struct.pack_into("<I", d, crc_at, zlib.crc32(bytes(d[off:off + ln])) & 0xFFFFFFFF)
    return bytes(fix_header_crc(d))


def test_pulse_and_shape_indices_out_of_range(files):
    """k_values [0, 2, 3, 5, 9] (pulse_bits 3): pulse indices 5..7 are corrupt; a K_g = 0
    group with a non-zero shape index is corrupt; so is b_g = N(D, K_g)."""
    from pvqcodec.codecs.pvq.enumeration import pvq_count
    from pvqcodec.container.reader import Container

    data = files["table_raw_coding"]
    rec = Container.from_bytes(data).tensors[0]
    width = rec.payloads[3].stream.width
    assert rec.payloads[2].stream.width == 3
    bad = [_set_symbol(data, 2, 4, 3, v) for v in (5, 7)]
    bad.append(_set_symbol(_set_symbol(data, 2, 4, 3, 0), 3, 4, width, 1))  # K = 0, b = 1
    bad.append(_set_symbol(_set_symbol(data, 2, 4, 3, 1), 3, 4, width, pvq_count(8, 2)))  # K = 2, b = N
    ok = _set_symbol(_set_symbol(data, 2, 4, 3, 1), 3, 4, width, pvq_count(8, 2) - 1)  # K = 2, b = N - 1
    for d in bad:
        assert python_decode(d)[0] == c_decode(d)[0] == "payload_corrupt"
    assert python_decode(ok)[0] is None and c_decode(ok)[0] is None
    assert_c_equals_python(ok)


def test_damaged_files_give_the_same_error_names(files):
    cases = corruptions(files["rd_d16_zero_groups"]) + corruptions(recode(files["table_raw_coding"], 9, "uniform"))
    mismatches = []
    for label, data in cases:
        py, c = python_decode(data)[0], c_decode(data)[0]
        if py != c:
            mismatches.append((label, py, c))
    assert not mismatches, mismatches[:10]
    assert len(cases) > 500
