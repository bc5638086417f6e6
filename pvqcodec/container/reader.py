"""Reading and validating a .pvqc file (spec sections 2, 3, 7 and 8).

`Container` validates the whole structure (file header, header block, every
tensor entry and the payload layout) before any payload is touched, then hands
out payloads as read-only numpy views over a memory map, checking each one's
CRC on first use. Checks run in the order of the spec's rejection list, so
every decoder reports the same first error for the same file.
"""

import io
import os
from dataclasses import dataclass, field

import numpy as np
from construct import ConstructError, Int32ul

from .. import checksum
from ..coding import StreamSpec, coding_by_id
from ..codecs import codec_by_id
from ..errors import (
    ChecksumMismatch,
    FileSizeMismatch,
    FileTruncated,
    HeaderCorrupt,
    InputError,
    LimitExceeded,
    MagicInvalid,
    ParamsInvalid,
    PayloadLayoutInvalid,
    ReservedNonZero,
    VersionUnsupported,
)
from ..mapped import close_map, map_file
from ..transforms import transform_by_id
from . import format as fmt


@dataclass
class PayloadRecord:
    coding: int
    offset: int
    length: int
    crc: int
    stream: StreamSpec


@dataclass
class TensorRecord:
    index: int
    name: str
    dtype: str
    shape: tuple
    rows: int
    cols: int
    transform_id: int
    transform_params: dict
    codec_id: int
    codec_params: dict
    payloads: list = field(default_factory=list)
    params_size: int = 0  # bytes of the transform and codec parameter blocks (side information)

    @property
    def numel(self) -> int:
        return self.rows * self.cols

    @property
    def codec(self):
        return codec_by_id(self.codec_id)

    @property
    def transform(self):
        return transform_by_id(self.transform_id)

    @property
    def payload_bytes(self) -> int:
        return sum(p.length for p in self.payloads)

    @property
    def coded_bytes(self) -> int:
        """Payloads plus parameter blocks: what the tensor costs, as rates are reported."""
        return self.payload_bytes + self.params_size


def align_up(x: int, a: int = fmt.PAYLOAD_ALIGNMENT) -> int:
    return (x + a - 1) // a * a


class Container:
    """A parsed, validated .pvqc file over a memory map or a bytes buffer."""

    def __init__(self, buf, path=None, _mmap=None, _file=None):
        self._buf = buf
        self._mmap = _mmap
        self._file = _file
        self.path = path
        self._crc_checked = set()
        self._parse()

    # ---- opening ----------------------------------------------------------------------

    @classmethod
    def open(cls, path):
        f, mm = map_file(path)
        try:
            return cls(np.frombuffer(mm, np.uint8), path=os.fspath(path), _mmap=mm, _file=f)
        except BaseException:
            close_map(f, mm)
            raise

    @classmethod
    def from_bytes(cls, data: bytes):
        return cls(np.frombuffer(bytes(data), np.uint8))

    def close(self):
        self._buf = None
        if self._mmap is not None:
            close_map(self._file, self._mmap)
            self._mmap = self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- section 2: the file header ------------------------------------------------------

    def _where(self) -> str:
        return f"{self.path}: " if self.path else ""

    def _parse(self):
        buf = self._buf
        size = buf.size
        w = self._where()
        if size < fmt.FILE_HEADER_SIZE:
            if size >= 8 and bytes(buf[:8]) != fmt.MAGIC:
                raise MagicInvalid(f"{w}not a .pvqc file (wrong magic bytes)")
            raise FileTruncated(f"{w}file is {size} bytes, shorter than the {fmt.FILE_HEADER_SIZE}-byte file header")
        hdr = fmt.FileHeader.parse(bytes(buf[: fmt.FILE_HEADER_SIZE]))
        if hdr.magic != fmt.MAGIC:
            raise MagicInvalid(f"{w}not a .pvqc file (wrong magic bytes)")
        if hdr.version_major != fmt.VERSION_MAJOR:
            raise VersionUnsupported(
                f"{w}file format version {hdr.version_major}.{hdr.version_minor} is not supported; "
                f"this reader supports {fmt.VERSION_MAJOR}.x (up to {fmt.VERSION_MAJOR}.{fmt.VERSION_MINOR})"
            )
        if hdr.flags != 0:
            raise ReservedNonZero(f"{w}file header flags are 0x{hdr.flags:08x}; all flag bits are reserved and must be zero")
        if hdr.file_size > fmt.MAX_FILE_SIZE:
            raise LimitExceeded(f"{w}file_size {hdr.file_size} exceeds the limit {fmt.MAX_FILE_SIZE}")
        if size < hdr.file_size:
            raise FileTruncated(f"{w}file is {size} bytes but its header says {hdr.file_size}: truncated")
        if size > hdr.file_size:
            raise FileSizeMismatch(f"{w}file is {size} bytes but its header says {hdr.file_size}: trailing bytes")
        if hdr.header_size > fmt.MAX_HEADER_SIZE:
            raise LimitExceeded(f"{w}header_size {hdr.header_size} exceeds the limit {fmt.MAX_HEADER_SIZE}")
        end = fmt.FILE_HEADER_SIZE + hdr.header_size
        if end > size:
            raise FileTruncated(f"{w}header block ({hdr.header_size} bytes) runs past the end of the file")
        block = bytes(buf[fmt.FILE_HEADER_SIZE:end])
        if checksum.crc32(block) != hdr.header_crc:
            raise ChecksumMismatch(f"{w}header block CRC-32 mismatch: the file is damaged")
        self.version = (hdr.version_major, hdr.version_minor)
        self.flags = hdr.flags
        self.header_size = hdr.header_size
        self.file_size = hdr.file_size
        self._parse_header_block(block)
        self._check_layout(end)

    # ---- section 3: the header block -----------------------------------------------------

    def _parse_header_block(self, block: bytes):
        w = self._where()
        stream = io.BytesIO(block)
        try:
            n_meta = Int32ul.parse_stream(stream)
            if n_meta > fmt.MAX_METADATA_ENTRIES:
                raise LimitExceeded(f"{w}{n_meta} metadata entries exceed the limit {fmt.MAX_METADATA_ENTRIES}")
            meta = [fmt.MetadataEntry.parse_stream(stream) for _ in range(n_meta)]
            n_tensors = Int32ul.parse_stream(stream)
            if n_tensors > fmt.MAX_TENSORS:
                raise LimitExceeded(f"{w}{n_tensors} tensors exceed the limit {fmt.MAX_TENSORS}")
            entries = [fmt.TensorEntry.parse_stream(stream) for _ in range(n_tensors)]
        except (ConstructError, UnicodeDecodeError) as exc:
            raise HeaderCorrupt(f"{w}header block cannot be parsed ({_construct_reason(exc)})") from None
        if stream.tell() != len(block):
            raise HeaderCorrupt(f"{w}header block has {len(block) - stream.tell()} unread bytes after the tensor directory")

        self.metadata = {}
        for m in meta:
            if len(m.key.encode()) > fmt.MAX_KEY_BYTES or len(m.value.encode()) > fmt.MAX_VALUE_BYTES:
                raise LimitExceeded(f"{w}metadata entry {m.key[:40]!r} exceeds the key or value size limit")
            if not m.key:
                raise HeaderCorrupt(f"{w}metadata key is empty")
            if m.key in self.metadata:
                raise HeaderCorrupt(f"{w}metadata key {m.key!r} appears twice")
            self.metadata[m.key] = m.value

        self.tensors = []
        self._by_name = {}
        for i, e in enumerate(entries):
            rec = self._tensor_record(i, e)
            if rec.name in self._by_name:
                raise HeaderCorrupt(f"{w}tensor name {rec.name!r} appears twice")
            self._by_name[rec.name] = rec
            self.tensors.append(rec)

    def _tensor_record(self, i, e) -> TensorRecord:
        w = self._where()
        name = e.name
        if not name:
            raise HeaderCorrupt(f"{w}tensor {i} has an empty name")
        if len(name.encode()) > fmt.MAX_NAME_BYTES:
            raise LimitExceeded(f"{w}tensor {i}: name longer than {fmt.MAX_NAME_BYTES} bytes")
        where = f"{w}tensor {name!r}: "
        if e.dtype not in fmt.DTYPE_NAMES:
            raise HeaderCorrupt(f"{where}unknown dtype id {e.dtype}")
        if e.rank > fmt.MAX_RANK:
            raise LimitExceeded(f"{where}rank {e.rank} exceeds the limit {fmt.MAX_RANK}")
        numel = 1
        for d in e.shape:
            if d > fmt.MAX_DIM:
                raise LimitExceeded(f"{where}dimension {d} exceeds the limit {fmt.MAX_DIM}")
            numel *= d
        if numel > fmt.MAX_NUMEL:
            raise LimitExceeded(f"{where}{numel} elements exceed the limit {fmt.MAX_NUMEL}")
        if e.rows * e.cols != numel or e.rows > fmt.MAX_NUMEL or e.cols > fmt.MAX_NUMEL:
            raise HeaderCorrupt(f"{where}matrix view {e.rows} x {e.cols} does not hold its {numel} elements")
        dtype = fmt.DTYPE_NAMES[e.dtype]
        transform = transform_by_id(e.transform_id)
        codec = codec_by_id(e.codec_id)
        if numel == 0 and codec.quantizes:
            raise ParamsInvalid(f"{where}a tensor with no elements must use the raw codec")
        if codec.needs_identity_transform and transform.id != 0:
            raise ParamsInvalid(f"{where}codec {codec.name} requires the identity transform")
        try:
            tparams = transform.parse_params(e.transform_params, e.rows, e.cols)
            cparams = codec.parse_params(e.codec_params, e.rows, e.cols, dtype)
        except ParamsInvalid as exc:
            raise type(exc)(f"{where}{exc}") from None
        specs = codec.streams(cparams, e.rows, e.cols, dtype)
        if len(e.payloads) > fmt.MAX_PAYLOADS:
            raise LimitExceeded(f"{where}{len(e.payloads)} payloads exceed the limit {fmt.MAX_PAYLOADS}")
        if len(e.payloads) != len(specs):
            raise PayloadLayoutInvalid(f"{where}has {len(e.payloads)} payloads; codec {codec.name} defines {len(specs)}")
        payloads = []
        for p, spec in zip(e.payloads, specs):
            coding = coding_by_id(p.coding)
            if coding.id == 0 and p.length != coding.expected_length(spec):
                raise PayloadLayoutInvalid(
                    f"{where}raw payload {spec.name!r} is {p.length} bytes; {spec.count} symbols of {spec.width} bits need {coding.expected_length(spec)}"
                )
            payloads.append(PayloadRecord(p.coding, p.offset, p.length, p.crc, spec))
        return TensorRecord(i, name, dtype, tuple(e.shape), e.rows, e.cols, e.transform_id, tparams, e.codec_id, cparams,
                            payloads, len(e.transform_params) + len(e.codec_params))

    # ---- section 7: payload layout -------------------------------------------------------

    def _check_layout(self, header_end: int):
        pos = header_end
        buf = self._buf
        for t in self.tensors:
            for p in t.payloads:
                expect = align_up(pos)
                if p.offset != expect:
                    raise PayloadLayoutInvalid(
                        f"{self._where()}tensor {t.name!r}: payload {p.stream.name!r} at offset {p.offset}, expected {expect}"
                    )
                if np.any(buf[pos:expect]):
                    raise PayloadLayoutInvalid(f"{self._where()}non-zero padding before offset {expect}")
                pos = p.offset + p.length
                if pos > self.file_size:
                    raise FileTruncated(f"{self._where()}tensor {t.name!r}: payload {p.stream.name!r} runs past the end of the file")
        if pos != self.file_size:
            raise PayloadLayoutInvalid(f"{self._where()}{self.file_size - pos} bytes after the last payload")

    # ---- access --------------------------------------------------------------------------

    @property
    def names(self) -> list:
        return [t.name for t in self.tensors]

    def tensor(self, name: str) -> TensorRecord:
        try:
            return self._by_name[name]
        except KeyError:
            raise InputError(f"no tensor named {name!r} in {self.path or 'this file'}") from None

    def payload(self, rec: TensorRecord, i: int, verify: bool = True) -> np.ndarray:
        """Payload i of a tensor as a read-only uint8 view; its CRC is checked once."""
        p = rec.payloads[i]
        view = self._buf[p.offset : p.offset + p.length]
        key = (rec.index, i)
        if verify and key not in self._crc_checked:
            if checksum.crc32(view) != p.crc:
                raise ChecksumMismatch(f"{self._where()}tensor {rec.name!r}: payload {p.stream.name!r} CRC-32 mismatch: the file is damaged")
            self._crc_checked.add(key)
        return view


def _construct_reason(exc) -> str:
    msg = str(exc).strip().splitlines()
    text = msg[-1] if msg else type(exc).__name__
    return text[:160]
