"""The container: construct round trips, the writer's canonical layout, and every
rejection condition of spec section 9 that the container checks."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from pvqcodec import errors
from pvqcodec.container import format as fmt
from pvqcodec.container.reader import Container
from pvqcodec.container.writer import TensorToWrite, to_bytes

from helpers import rebuild, split

names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)


@st.composite
def raw_tensors(draw):
    n = draw(st.integers(0, 4))
    tensor_names = draw(st.lists(names, min_size=n, max_size=n, unique=True))
    out = []
    for name in tensor_names:
        dtype = draw(st.sampled_from(["float32", "float16", "bfloat16"]))
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
        numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
        size = fmt.DTYPE_SIZES[dtype]
        data = np.frombuffer(draw(st.binary(min_size=numel * size, max_size=numel * size)), np.uint8)
        rows, cols = (1, numel) if len(shape) < 2 else (int(np.prod(shape[:-1])), shape[-1])
        out.append(TensorToWrite(name, dtype, shape, rows, cols, 0, b"", 0, b"", [(0, data)]))
    return out


@given(meta=st.dictionaries(names, st.text(max_size=30), max_size=4), tensors=raw_tensors())
def test_write_parse_round_trip(meta, tensors):
    data = to_bytes(meta, tensors)
    c = Container.from_bytes(data)
    assert c.metadata == meta
    assert c.names == [t.name for t in tensors]
    for t, rec in zip(tensors, c.tensors):
        assert (rec.dtype, rec.shape, rec.rows, rec.cols) == (t.dtype, t.shape, t.rows, t.cols)
        p = rec.payloads[0]
        assert p.offset % 64 == 0
        assert c.payload(rec, 0).tobytes() == t.payloads[0][1].tobytes()
    # construct round trips both ways on the header block
    hdr, block, _ = split(data)
    raw = data[32 : 32 + hdr.header_size]
    assert fmt.HeaderBlock.build(fmt.HeaderBlock.parse(raw)) == raw
    # the file is exactly as long as its header says
    assert hdr.file_size == len(data)


def _small_file(n_payload_bytes=10):
    data = np.arange(n_payload_bytes, dtype=np.uint8)
    t = TensorToWrite("t", "float16", (n_payload_bytes // 2,), 1, n_payload_bytes // 2, 0, b"", 0, b"", [(0, data)])
    u = TensorToWrite("u", "float32", (2,), 1, 2, 0, b"", 0, b"", [(0, np.arange(8, dtype=np.uint8))])
    return to_bytes({"k": "v"}, [t, u])


def _rejects(data, exc):
    with pytest.raises(exc) as info:
        Container.from_bytes(data)
    return str(info.value)


def test_valid_small_file_parses():
    c = Container.from_bytes(_small_file())
    assert c.names == ["t", "u"]


def test_truncated_everywhere():
    data = _small_file()
    for cut in (0, 7, 31, 40, len(data) - 1):
        with pytest.raises((errors.FileTruncated, errors.MagicInvalid)):
            Container.from_bytes(data[:cut])


def test_trailing_bytes():
    _rejects(_small_file() + b"\x00", errors.FileSizeMismatch)


def test_magic():
    data = bytearray(_small_file())
    data[1] = ord("X")
    _rejects(bytes(data), errors.MagicInvalid)


def test_newer_major_version_names_versions():
    data = rebuild(_small_file(), mutate_header=lambda h: h.update(version_major=2))
    msg = _rejects(data, errors.VersionUnsupported)
    assert "2.0" in msg and "1.x" in msg


def test_newer_minor_version_is_accepted():
    Container.from_bytes(rebuild(_small_file(), mutate_header=lambda h: h.update(version_minor=7)))


def test_flags_reserved():
    _rejects(rebuild(_small_file(), mutate_header=lambda h: h.update(flags=1)), errors.ReservedNonZero)


def test_header_checksum():
    data = bytearray(_small_file())
    data[40] ^= 0x01  # inside the header block
    _rejects(bytes(data), errors.ChecksumMismatch)


def test_payload_checksum_detected_on_read():
    data = bytearray(_small_file())
    c = Container.from_bytes(bytes(data))
    off = c.tensors[0].payloads[0].offset
    data[off] ^= 0xFF
    c = Container.from_bytes(bytes(data))  # structure is fine
    with pytest.raises(errors.ChecksumMismatch, match="'t'"):
        c.payload(c.tensors[0], 0)


def _set_first(key, value):
    def f(block):
        block.tensors[0][key] = value

    return f


def test_unknown_codec_transform_coding_dtype():
    data = _small_file()
    assert "200" in _rejects(rebuild(data, _set_first("codec_id", 200)), errors.CodecUnknown)
    _rejects(rebuild(data, _set_first("transform_id", 9)), errors.TransformUnknown)
    _rejects(rebuild(data, _set_first("dtype", 9)), errors.HeaderCorrupt)

    def coding(block):
        block.tensors[0].payloads[0].coding = 5

    msg = _rejects(rebuild(data, coding), errors.CodingUnknown)
    assert "5" in msg and "raw" in msg


def test_rows_cols_must_hold_numel():
    _rejects(rebuild(_small_file(), _set_first("rows", 2)), errors.HeaderCorrupt)


def test_duplicate_names():
    def dup(block):
        block.tensors[1].name = "t"

    _rejects(rebuild(_small_file(), dup), errors.HeaderCorrupt)


def test_payload_offset_and_length_rules():
    def shift(block):
        block.tensors[0].payloads[0].offset += 64

    with pytest.raises((errors.PayloadLayoutInvalid, errors.FileTruncated)):
        Container.from_bytes(rebuild(_small_file(), shift))

    def short(block):
        block.tensors[0].payloads[0].length -= 1

    _rejects(rebuild(_small_file(), short), errors.PayloadLayoutInvalid)


def test_nonzero_padding():
    data = bytearray(_small_file())
    c = Container.from_bytes(bytes(data))
    off = c.tensors[0].payloads[0].offset
    data[off - 1] = 1
    _rejects(bytes(data), errors.PayloadLayoutInvalid)


def test_params_must_be_consumed_exactly():
    # The raw codec and the identity transform take empty parameter blocks: one byte more is corrupt.
    data = np.zeros(4, np.uint8)
    for tparams, cparams in ((b"\x00", b""), (b"", b"\x00")):
        t = TensorToWrite("t", "float32", (1,), 1, 1, 0, tparams, 0, cparams, [(0, data)])
        _rejects(to_bytes({}, [t]), errors.ParamsInvalid)


def test_raw_codec_requires_identity_transform():
    import struct

    t = TensorToWrite("t", "float32", (1,), 1, 1, 1, struct.pack("<QII", 0, 1, 1), 0, b"", [(0, np.zeros(4, np.uint8))])
    _rejects(to_bytes({}, [t]), errors.ParamsInvalid)


def test_limits_checked_before_allocation():
    data = _small_file()
    hdr, block, rest = split(data)
    # A tensor count far beyond the limit, in a header block that is otherwise tiny.
    raw = (0).to_bytes(4, "little") + (fmt.MAX_TENSORS + 1).to_bytes(4, "little")
    from pvqcodec import checksum

    h = dict(hdr)
    h.pop("_io")
    h.update(header_size=len(raw), header_crc=checksum.crc32(raw), file_size=32 + len(raw))
    _rejects(fmt.FileHeader.build(h) + raw, errors.LimitExceeded)


def test_every_format_error_has_a_distinct_code():
    codes = errors.all_format_errors()
    assert len(codes) == len(set(codes))
    assert {"magic_invalid", "checksum_mismatch", "payload_corrupt", "codec_unknown"} <= set(codes)
