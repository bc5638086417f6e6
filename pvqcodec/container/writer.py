"""Assembling a .pvqc file (spec section 7's canonical layout), written atomically."""

import numpy as np

from .. import checksum
from ..atomic import atomic_output
from . import format as fmt
from .reader import align_up


class TensorToWrite:
    """One directory entry plus its payloads (as uint8 arrays), ready to lay out."""

    def __init__(self, name, dtype, shape, rows, cols, transform_id, transform_params, codec_id, codec_params, payloads):
        self.name = name
        self.dtype = dtype
        self.shape = tuple(int(d) for d in shape)
        self.rows = int(rows)
        self.cols = int(cols)
        self.transform_id = transform_id
        self.transform_params = transform_params
        self.codec_id = codec_id
        self.codec_params = codec_params
        self.payloads = payloads  # list of (coding_id, np.uint8 array)


def version_minor(tensors: list) -> int:
    """Spec 2.1: the lowest minor version that defines every identifier the file uses.
    Every transform is from 1.0; codecs and codings say when they were added."""
    from ..codecs import codec_by_id
    from ..coding import coding_by_id

    codings = [coding_by_id(c).since_minor for t in tensors for c, _ in t.payloads]
    codecs = [codec_by_id(t.codec_id).since_minor for t in tensors]
    return max([0] + codings + codecs)


def layout(metadata: dict, tensors: list):
    """Compute the header block and the payload offsets; returns (file_header, header_block, placements)."""
    # The header block's size does not depend on the offsets' values (fixed-width fields),
    # so build it once with zero offsets to learn its size, then with the real ones.
    def build(offsets):
        entries = []
        k = 0
        for t in tensors:
            pls = []
            for coding, data in t.payloads:
                off, crc = offsets[k]
                pls.append(dict(coding=coding, offset=off, length=int(data.size), crc=crc))
                k += 1
            entries.append(
                dict(
                    name=t.name,
                    dtype=fmt.DTYPE_IDS[t.dtype],
                    rank=len(t.shape),
                    shape=list(t.shape),
                    rows=t.rows,
                    cols=t.cols,
                    transform_id=t.transform_id,
                    transform_params=t.transform_params,
                    codec_id=t.codec_id,
                    codec_params=t.codec_params,
                    payloads=pls,
                )
            )
        meta = [dict(key=k_, value=v) for k_, v in metadata.items()]
        return fmt.HeaderBlock.build(dict(metadata=meta, tensors=entries))

    all_payloads = [data for t in tensors for _, data in t.payloads]
    crcs = [checksum.crc32(d) for d in all_payloads]
    block = build([(0, c) for c in crcs])
    pos = fmt.FILE_HEADER_SIZE + len(block)
    offsets = []
    for d, c in zip(all_payloads, crcs):
        off = align_up(pos)
        offsets.append((off, c))
        pos = off + d.size
    block = build(offsets)
    header = fmt.FileHeader.build(
        dict(
            magic=fmt.MAGIC,
            version_major=fmt.VERSION_MAJOR,
            version_minor=version_minor(tensors),
            flags=0,
            header_size=len(block),
            header_crc=checksum.crc32(block),
            file_size=pos,
        )
    )
    return header, block, [(off, d) for (off, _), d in zip(offsets, all_payloads)]


def write_stream(f, metadata: dict, tensors: list) -> int:
    header, block, placements = layout(metadata, tensors)
    f.write(header)
    f.write(block)
    pos = len(header) + len(block)
    for off, data in placements:
        if off > pos:
            f.write(b"\x00" * (off - pos))
        f.write(memoryview(np.ascontiguousarray(data)))
        pos = off + data.size
    return pos


def to_bytes(metadata: dict, tensors: list) -> bytes:
    import io

    bio = io.BytesIO()
    write_stream(bio, metadata, tensors)
    return bio.getvalue()


def write_pvqc(path, metadata: dict, tensors: list) -> int:
    """Write the file atomically (temporary file, then rename); returns its size."""
    with atomic_output(path) as f:
        return write_stream(f, metadata, tensors)
