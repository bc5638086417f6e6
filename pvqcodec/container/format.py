"""The .pvqc container, declared with construct (spec sections 2 and 3).

Field names here are the spec's field names. Bulk data (payloads) never goes
through construct: the reader hands out numpy views over a memory map.
"""

from construct import (
    Array,
    Bytes,
    Const,
    GreedyBytes,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    PascalString,
    Prefixed,
    PrefixedArray,
    Struct,
    this,
)

MAGIC = b"\x89PVQC\r\n\x1a"
VERSION_MAJOR = 1
VERSION_MINOR = 2
FILE_HEADER_SIZE = 32
PAYLOAD_ALIGNMENT = 64

# Section 8: limits a decoder enforces before allocating anything.
MAX_HEADER_SIZE = 256 * 1024 * 1024
MAX_TENSORS = 1 << 20
MAX_METADATA_ENTRIES = 65535
MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 16 * 1024 * 1024
MAX_NAME_BYTES = 4096
MAX_RANK = 8
MAX_DIM = 1 << 40
MAX_NUMEL = 1 << 48
MAX_PAYLOADS = 16
MAX_FILE_SIZE = 1 << 50

# Section 3.2: source dtypes.
DTYPE_IDS = {"float32": 1, "float16": 2, "bfloat16": 3}
DTYPE_NAMES = {v: k for k, v in DTYPE_IDS.items()}
DTYPE_SIZES = {"float32": 4, "float16": 2, "bfloat16": 2}

FileHeader = Struct(
    "magic" / Bytes(8),
    "version_major" / Int16ul,
    "version_minor" / Int16ul,
    "flags" / Int32ul,
    "header_size" / Int32ul,
    "header_crc" / Int32ul,
    "file_size" / Int64ul,
)
assert FileHeader.sizeof() == FILE_HEADER_SIZE

MetadataEntry = Struct(
    "key" / PascalString(Int16ul, "utf8"),
    "value" / PascalString(Int32ul, "utf8"),
)

PayloadEntry = Struct(
    "coding" / Int8ul,
    "offset" / Int64ul,
    "length" / Int64ul,
    "crc" / Int32ul,
)

TensorEntry = Struct(
    "name" / PascalString(Int16ul, "utf8"),
    "dtype" / Int8ul,
    "rank" / Int8ul,
    "shape" / Array(this.rank, Int64ul),
    "rows" / Int64ul,
    "cols" / Int64ul,
    "transform_id" / Int8ul,
    "transform_params" / Prefixed(Int16ul, GreedyBytes),
    "codec_id" / Int8ul,
    "codec_params" / Prefixed(Int32ul, GreedyBytes),
    "payloads" / PrefixedArray(Int8ul, PayloadEntry),
)

HeaderBlock = Struct(
    "metadata" / PrefixedArray(Int32ul, MetadataEntry),
    "tensors" / PrefixedArray(Int32ul, TensorEntry),
)

__all__ = [name for name in dir() if name.isupper() or name[0].isupper()]
__all__ += ["Const"]  # re-exported for codec parameter blocks
