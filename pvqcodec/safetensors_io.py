"""Read safetensors files lazily through memory maps; write them one tensor at a time.

The format: an 8-byte little-endian u64 header length N, then N bytes of UTF-8 JSON
``{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
"__metadata__": {str: str}}`` (metadata optional), then the data buffer. Offsets are
relative to the start of the data buffer; tensors are little-endian and row-major.

`SafetensorsSource.open` reads a single file, a sharded model directory, or a
``*.safetensors.index.json`` file; it validates every header up front (so a bad file
fails before any work starts) and maps each shard only when one of its tensors is
first read. `write_safetensors` computes the header from the shapes, then asks for
each tensor's data in turn, so a large model never has to sit in memory at once.

Every problem with an input file raises `SafetensorsError` (one line, naming the
file and, where relevant, the tensor); a missing file raises `InputError`.
"""

from __future__ import annotations

import json
import math
import mmap
import operator
import os
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from . import dtypes
from .atomic import atomic_output
from .errors import InputError, SafetensorsError

__all__ = [
    "MAX_HEADER_SIZE",
    "TensorInfo",
    "SafetensorsSource",
    "write_safetensors",
]

#: Largest JSON header accepted (the limit of the reference implementation).
MAX_HEADER_SIZE = 100_000_000

#: Bytes handed to one write() call when streaming a tensor out.
_WRITE_CHUNK = 64 << 20

_INDEX_SUFFIX = ".safetensors.index.json"
_DEFAULT_INDEX = "model" + _INDEX_SUFFIX


def _bad(path, msg: str, tensor: str | None = None) -> SafetensorsError:
    where = f"{os.fspath(path)}: " + (f"tensor {tensor!r}: " if tensor is not None else "")
    return SafetensorsError((where + msg).replace("\r", "\\r").replace("\n", "\\n"))


def _no_such_file(path) -> InputError:
    return InputError(f"no such file: {os.fspath(path)}")


def _cannot_read(path, exc: OSError) -> InputError:
    return InputError(f"cannot read {os.fspath(path)}: {exc.strerror or exc}")


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: its shard file and the absolute byte range [begin, end) in it."""

    name: str
    dtype: str  # the safetensors dtype string, e.g. "BF16"
    shape: tuple[int, ...]
    path: str  # the shard file holding it
    begin: int  # absolute offset in the file of the first byte
    end: int  # absolute offset one past the last byte

    @property
    def numel(self) -> int:
        """Number of elements (1 for a rank-0 tensor, 0 if any dimension is 0)."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def itemsize(self) -> int:
        return dtypes.SAFETENSORS_DTYPES[self.dtype].itemsize

    @property
    def dtype_name(self) -> str | None:
        """Our float name ("float32", "float16", "bfloat16"), or None for any other dtype."""
        return dtypes.dtype_name(self.dtype)


@dataclass
class _Shard:
    path: str
    size: int  # file size when the header was read
    data_start: int  # 8 + header length
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    mm: mmap.mmap | None = field(default=None, repr=False)


# --- header parsing --------------------------------------------------------------------------


def _is_int(x) -> bool:
    return type(x) is int  # bool is a subclass of int: reject it


def _reject_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(Exception):
    pass


def _reject_constant(name):
    raise ValueError(f"invalid JSON constant {name}")


def _load_json(path, raw: bytes, what: str):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(path, f"{what} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except _DuplicateKey as exc:
        raise _bad(path, f"{what} has the key {exc.args[0]!r} twice") from None
    except RecursionError:
        raise _bad(path, f"{what} is nested too deeply") from None
    except ValueError as exc:  # json.JSONDecodeError and the constant hook
        raise _bad(path, f"{what} is not valid JSON ({exc})") from None


def _parse_entry(path, name: str, entry, data_len: int, data_start: int) -> TensorInfo:
    if not isinstance(entry, dict):
        raise _bad(path, f"header entry is a {type(entry).__name__}, not an object", name)
    for key in ("dtype", "shape", "data_offsets"):
        if key not in entry:
            raise _bad(path, f"header entry has no {key!r}", name)
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str):
        raise _bad(path, f"dtype is {dtype!r}, not a string", name)
    if dtype not in dtypes.SAFETENSORS_DTYPES:
        raise _bad(path, f"unknown or unsupported dtype {dtype!r}", name)
    if not isinstance(shape, list):
        raise _bad(path, f"shape is {shape!r}, not a list", name)
    for dim in shape:
        if not _is_int(dim) or dim < 0:
            raise _bad(path, f"shape {shape!r} has a dimension that is not a non-negative integer", name)
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise _bad(path, f"data_offsets {offsets!r} is not a list of two integers", name)
    begin, end = offsets
    if begin < 0 or end < begin:
        raise _bad(path, f"data_offsets {offsets!r} is not a valid range", name)
    expected = math.prod(shape) * dtypes.SAFETENSORS_DTYPES[dtype].itemsize
    if end - begin != expected:
        raise _bad(
            path,
            f"data_offsets {offsets!r} span {end - begin} bytes but shape {shape} of {dtype} needs {expected}",
            name,
        )
    if end > data_len:
        raise _bad(path, f"data_offsets {offsets!r} run past the end of the {data_len}-byte data buffer", name)
    return TensorInfo(name, dtype, tuple(shape), os.fspath(path), data_start + begin, data_start + end)


def _read_shard(path: str, strict: bool) -> _Shard:
    """Parse and validate one safetensors file's header (the data is not read)."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 8:
                raise _bad(path, f"file is {size} bytes, too short for a safetensors header")
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > MAX_HEADER_SIZE:
                raise _bad(path, f"header length {n} exceeds the limit of {MAX_HEADER_SIZE} bytes")
            if 8 + n > size:
                raise _bad(path, f"header length {n} runs past the end of the {size}-byte file")
            raw = fh.read(n)
    except FileNotFoundError:
        raise _no_such_file(path) from None
    except IsADirectoryError:
        raise _bad(path, "is a directory, not a safetensors file") from None
    except OSError as exc:
        raise _cannot_read(path, exc) from None
    if len(raw) != n:
        raise _bad(path, "file was truncated while its header was read")

    header = _load_json(path, raw, "header")
    if not isinstance(header, dict):
        raise _bad(path, f"header is a JSON {type(header).__name__}, not an object")

    metadata: dict[str, str] = {}
    if "__metadata__" in header:
        meta = header.pop("__metadata__")
        if not isinstance(meta, dict):
            raise _bad(path, "__metadata__ is not an object")
        for key, value in meta.items():
            if not isinstance(value, str):
                raise _bad(path, f"__metadata__ value for {key!r} is not a string")
        metadata = dict(meta)

    data_start = 8 + n
    data_len = size - data_start
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        tensors[name] = _parse_entry(path, name, entry, data_len, data_start)

    # The data buffer must be covered by the tensors: no overlaps (ever), and in strict
    # mode no gaps and no trailing bytes either, as the reference implementation requires.
    expect = data_start
    for info in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if info.begin < expect:
            raise _bad(path, "data overlaps the data of another tensor", info.name)
        if strict and info.begin > expect:
            raise _bad(path, f"gap of {info.begin - expect} bytes in the data buffer before this tensor", info.name)
        expect = info.end
    if strict and expect != size:
        raise _bad(path, f"{size - expect} bytes after the last tensor's data are not covered by the header")

    return _Shard(path=path, size=size, data_start=data_start, tensors=tensors, metadata=metadata)


def _read_index(index_path: str) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """(tensor, shard path) pairs from an index file, and its "metadata" object."""
    try:
        with open(index_path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise _no_such_file(index_path) from None
    except OSError as exc:
        raise _cannot_read(index_path, exc) from None
    index = _load_json(index_path, raw, "index")
    if not isinstance(index, dict):
        raise _bad(index_path, f"index is a JSON {type(index).__name__}, not an object")
    if "weight_map" not in index:
        raise _bad(index_path, "index has no 'weight_map'")
    weight_map = index["weight_map"]
    if not isinstance(weight_map, dict):
        raise _bad(index_path, "'weight_map' is not an object")
    meta = index.get("metadata", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise _bad(index_path, "'metadata' is not an object")
    base = os.path.dirname(index_path)
    pairs = []
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or not shard:
            raise _bad(index_path, f"weight_map entry for tensor {tensor!r} is {shard!r}, not a file name")
        pairs.append((tensor, os.path.normpath(os.path.join(base, shard))))
    return pairs, dict(meta)


# --- the source ------------------------------------------------------------------------------


class SafetensorsSource:
    """A read-only view of the tensors of one safetensors file or a sharded set of them.

    Create with `SafetensorsSource.open(path)`. Headers are validated on open; each
    shard is memory-mapped on first use. Use as a context manager or call `close()`.
    Arrays already returned by `read` stay valid after `close()` (they keep their map
    alive until they are garbage-collected).
    """

    def __init__(self, path: str, shards: Sequence[_Shard], index_metadata: Mapping[str, Any] | None = None):
        self.path = path
        self._shards: dict[str, _Shard] = {s.path: s for s in shards}
        self._infos: dict[str, TensorInfo] = {}
        for shard in shards:
            for name, info in shard.tensors.items():
                if name in self._infos:
                    raise _bad(shard.path, f"tensor {name!r} is also in {self._infos[name].path}")
                self._infos[name] = info
        self.names: list[str] = sorted(self._infos)
        self.metadata: dict[str, str] = {}
        for shard in shards:  # first shard wins on a conflicting key
            for key, value in shard.metadata.items():
                self.metadata.setdefault(key, value)
        self.index_metadata: dict[str, Any] = dict(index_metadata or {})
        self._closed = False

    # construction

    @classmethod
    def open(cls, path, *, strict: bool = True) -> "SafetensorsSource":
        """Open a .safetensors file, a directory of shards, or a *.safetensors.index.json file.

        A directory with ``model.safetensors.index.json`` (or exactly one
        ``*.safetensors.index.json``) is read through that index; otherwise every
        ``*.safetensors`` file in it (sorted by name, hidden files skipped) is a shard.
        With ``strict=False`` gaps in a data buffer and trailing bytes are tolerated
        (overlapping or out-of-range tensors are always rejected).
        """
        p = os.fsdecode(os.fspath(path))
        if not os.path.exists(p):
            raise _no_such_file(p)
        if os.path.isdir(p):
            return cls._open_dir(p, strict)
        if p.endswith(".json"):
            return cls._open_index(p, strict)
        return cls(p, [_read_shard(p, strict)])

    @classmethod
    def _open_dir(cls, directory: str, strict: bool) -> "SafetensorsSource":
        try:
            entries = sorted(os.listdir(directory))
        except OSError as exc:
            raise _cannot_read(directory, exc) from None
        visible = [e for e in entries if not e.startswith(".") and os.path.isfile(os.path.join(directory, e))]
        indexes = [e for e in visible if e.endswith(_INDEX_SUFFIX)]
        if _DEFAULT_INDEX in indexes:
            return cls._open_index(os.path.join(directory, _DEFAULT_INDEX), strict, label=directory)
        if len(indexes) == 1:
            return cls._open_index(os.path.join(directory, indexes[0]), strict, label=directory)
        files = [os.path.join(directory, e) for e in visible if e.endswith(".safetensors")]
        if not files:
            raise _bad(directory, "directory contains no .safetensors files")
        return cls(directory, [_read_shard(f, strict) for f in files])

    @classmethod
    def _open_index(cls, index_path: str, strict: bool, label: str | None = None) -> "SafetensorsSource":
        pairs, meta = _read_index(index_path)
        shard_paths: list[str] = []
        for tensor, shard in pairs:
            if shard not in shard_paths:
                if not os.path.isfile(shard):
                    raise _bad(index_path, f"shard {shard} (of tensor {tensor!r}) does not exist")
                shard_paths.append(shard)
        shards = {sp: _read_shard(sp, strict) for sp in shard_paths}
        for tensor, shard in pairs:
            if tensor not in shards[shard].tensors:
                raise _bad(index_path, f"tensor {tensor!r} is not in its shard {shard}")
        # Tensors a shard holds but the index does not list are kept (no data is dropped);
        # a name in two shards is an error (raised by __init__).
        return cls(label or index_path, list(shards.values()), meta)

    # queries

    @property
    def shards(self) -> list[str]:
        """The shard file paths, in the order they were opened."""
        return list(self._shards)

    @property
    def shard_metadata(self) -> dict[str, dict[str, str]]:
        """Each shard's own __metadata__, keyed by shard path."""
        return {p: dict(s.metadata) for p, s in self._shards.items()}

    def __contains__(self, name) -> bool:
        return name in self._infos

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def info(self, name: str) -> TensorInfo:
        try:
            return self._infos[name]
        except (KeyError, TypeError):
            raise _bad(self.path, f"no tensor named {name!r}") from None

    def infos(self) -> list[TensorInfo]:
        """TensorInfo of every tensor, sorted by name."""
        return [self._infos[n] for n in self.names]

    # data

    def _map(self, shard_path: str) -> mmap.mmap:
        shard = self._shards[shard_path]
        if shard.mm is None:
            try:
                with open(shard_path, "rb") as fh:
                    if os.fstat(fh.fileno()).st_size != shard.size:
                        raise _bad(shard_path, "file changed size since it was opened")
                    shard.mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except FileNotFoundError:
                raise _bad(shard_path, "file disappeared since it was opened") from None
            except OSError as exc:
                raise _cannot_read(shard_path, exc) from None
            if len(shard.mm) != shard.size:
                raise _bad(shard_path, "file changed size since it was opened")
        return shard.mm

    def read(self, name: str) -> np.ndarray:
        """The tensor as a read-only array viewing the mapped file, in its stored dtype.

        F32/F16/F64 as floats, BF16 as uint16 bit patterns, F8 types as uint8 bits,
        integer types as their numpy dtype, BOOL as bool. Shaped as stored.
        """
        if self._closed:
            raise ValueError("read from a closed SafetensorsSource")
        info = self.info(name)
        dt = dtypes.SAFETENSORS_DTYPES[info.dtype].numpy
        if info.nbytes == 0:
            arr = np.empty(info.shape, dtype=dt)
        else:
            mm = self._map(info.path)
            arr = np.frombuffer(mm, dtype=dt, count=info.numel, offset=info.begin).reshape(info.shape)
        arr.flags.writeable = False
        return arr

    def read_float32(self, name: str) -> np.ndarray:
        """The tensor converted exactly to a new float32 array (F64 is rounded to float32).

        Raises SafetensorsError for a dtype that is not floating point.
        """
        info = self.info(name)
        stored = self.read(name)
        if info.dtype_name is not None:
            return dtypes.to_float32(stored, info.dtype_name)
        if info.dtype == "F64":
            return stored.astype(np.float32)
        raise _bad(info.path, f"dtype {info.dtype} is not a floating-point type", name)

    def close(self) -> None:
        """Drop the file maps (a map still used by a returned array closes when it is freed)."""
        self._closed = True
        for shard in self._shards.values():
            if shard.mm is not None:
                try:
                    shard.mm.close()
                except BufferError:  # arrays still view it; it closes when they are freed
                    pass
                shard.mm = None

    def __enter__(self) -> "SafetensorsSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SafetensorsSource({self.path!r}, {len(self.names)} tensors, {len(self._shards)} shard(s))"


# --- writing ---------------------------------------------------------------------------------

_LITTLE = np.little_endian


def _dim(x) -> int:
    """A true integer (Python or numpy int) as int; TypeError for floats, bools, strings."""
    if isinstance(x, (bool, np.bool_)):
        raise TypeError("bool is not a dimension")
    return operator.index(x)


def _check_produced(name: str, st: str, numel: int, arr) -> memoryview:
    spec = dtypes.SAFETENSORS_DTYPES[st]
    a = np.asarray(arr)
    if a.dtype.kind not in "biufc":
        raise ValueError(f"tensor {name!r}: produced a {a.dtype} array, not numeric")
    if a.dtype.kind in "fc" and a.dtype.newbyteorder("<") != spec.numpy.newbyteorder("<"):
        raise ValueError(
            f"tensor {name!r}: produced a {a.dtype} array for dtype {st}"
            + (" (pass bit patterns as uint16 for BF16)" if st == "BF16" else "")
        )
    if a.dtype.itemsize != spec.itemsize or a.size != numel:
        raise ValueError(
            f"tensor {name!r}: produced {a.size} elements of {a.dtype.itemsize} bytes "
            f"({a.nbytes} bytes), but {st} of {numel} elements needs {numel * spec.itemsize} bytes"
        )
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and not _LITTLE):
        a = a.astype(a.dtype.newbyteorder("<"))
    a = np.ascontiguousarray(a).reshape(-1)
    return memoryview(a.view(np.uint8))


def write_safetensors(
    path,
    entries: Iterable[tuple[str, str, Sequence[int], Callable[[], Any]]],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write a safetensors file atomically, producing one tensor's data at a time.

    ``entries``: (name, dtype, shape, produce) with dtype a safetensors string ("F32",
    "F16", "BF16", ...; our names "float32"/"float16"/"bfloat16" are accepted too) and
    ``produce()`` returning an array of exactly numel elements whose item size matches
    (uint16 bit patterns for BF16; a float array must be of the matching float type).
    Tensors are laid out in the given order; the JSON header is padded with spaces so
    the data starts at a multiple of 8. Bad entries or produced arrays raise ValueError;
    an output that cannot be written raises InputError.
    """
    entries = list(entries)
    header: dict[str, Any] = {}
    if metadata:
        if not isinstance(metadata, Mapping):
            raise ValueError("metadata must be a mapping of str to str")
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError(f"metadata entry {key!r}: {value!r} is not str -> str")
        header["__metadata__"] = dict(metadata)

    plan: list[tuple[str, str, int, Callable[[], Any]]] = []
    offset = 0
    for entry in entries:
        try:
            name, dtype, shape, produce = entry
        except (TypeError, ValueError):
            raise ValueError(f"entry {entry!r} is not (name, dtype, shape, produce)") from None
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"invalid tensor name {name!r}")
        if name in header:
            raise ValueError(f"tensor {name!r} is listed twice")
        if not isinstance(dtype, str):
            raise ValueError(f"tensor {name!r}: invalid dtype {dtype!r}")
        st = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}.get(dtype, dtype)
        if st not in dtypes.SAFETENSORS_DTYPES:
            raise ValueError(f"tensor {name!r}: unknown dtype {dtype!r}")
        try:
            dims = [_dim(d) for d in shape]
        except TypeError:
            raise ValueError(f"tensor {name!r}: shape {shape!r} is not a sequence of integers") from None
        if any(d < 0 for d in dims):
            raise ValueError(f"tensor {name!r}: shape {shape!r} has a negative dimension")
        if not callable(produce):
            raise ValueError(f"tensor {name!r}: produce is not callable")
        numel = math.prod(dims)
        nbytes = numel * dtypes.SAFETENSORS_DTYPES[st].itemsize
        header[name] = {"dtype": st, "shape": dims, "data_offsets": [offset, offset + nbytes]}
        plan.append((name, st, numel, produce))
        offset += nbytes

    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * ((-(8 + len(raw))) % 8)
    if len(raw) > MAX_HEADER_SIZE:
        raise ValueError(f"header of {len(raw)} bytes exceeds the limit of {MAX_HEADER_SIZE}")

    with atomic_output(path) as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for name, st, numel, produce in plan:
            data = _check_produced(name, st, numel, produce())
            for start in range(0, len(data), _WRITE_CHUNK):
                fh.write(data[start : start + _WRITE_CHUNK])
            del data
