"""The codec registry (spec section 6): every codec is an entry found by id or name.

A codec turns the transformed matrix W' (rows x cols, float64 in, float32 out)
into named streams of fixed-width symbols and back. It owns its parameter
block (a construct Struct), the list of its streams, its encoder (which takes
an optional weighting for Hessian-aware rounding) and its decoder. The
container, the CLI's --codec choices and `info` read this registry; nothing
else names codecs.
"""

import abc
from dataclasses import dataclass, field

import numpy as np

from ..errors import CodecUnknown


@dataclass
class Encoded:
    """What a codec's encoder returns."""

    params: dict
    streams: list  # one symbol array per StreamSpec, in the codec's stream order
    info: dict = field(default_factory=dict)  # informative: chosen settings, for the summary


class BlockQuantizer(abc.ABC):
    """Rounds a transformed matrix one block of `width` columns at a time, with the codec's
    parameters (scales, tables, rate) fixed in advance: the hook of Hessian-aware rounding
    (pvqcodec.quantize.ldlq), which feeds each block's error into the blocks before it.

    A block's code is a list of arrays whose first axis runs over row units of
    `unit_rows` rows (symbols chosen together: a row; a tile row for the trellis), so
    that a caller can keep old codes for some units and new ones for others."""

    width: int
    unit_rows: int = 1

    @abc.abstractmethod
    def quantize(self, k: int, X: np.ndarray, weight=None) -> tuple:
        """Round block k (columns k*width ..; X rows x (width or fewer for the last block),
        float64, the values to approach) under an optional positive weight per column.
        Returns (Q, code): Q the values the decoder will produce (up to a later scale
        refit), code as above."""

    def components(self, codes: list):
        """(matrices C_j, current scales s_j) with Q = sum_j s_j C_j, for a least-squares
        refit of the codec's global scales; None if the codec has none."""
        return None

    @abc.abstractmethod
    def finish(self, codes: list, scales=None) -> Encoded:
        """The Encoded tensor of all blocks' codes (scales: refit values for `components`)."""


class Codec(abc.ABC):
    """Base class. Subclasses set id, name, params_struct and implement the abstract methods."""

    id: int
    name: str
    params_struct = None
    quantizes = True  # False for the raw codec: values stored exactly
    since_minor = 0  # the spec's minor version that added the codec (section 6; spec 2.1)
    # Symbols per rANS chunk when the encoder codes this codec's streams (spec 4.3.5): fixed-rate
    # codecs keep chunks small for fast GPU load; storage codecs take larger ones (less state overhead).
    rans_chunk_symbols = 65536
    rates = None  # the bits per weight the encoder takes, if only some (None: any rate)
    needs_identity_transform = False

    @abc.abstractmethod
    def parse_params(self, raw: bytes, rows: int, cols: int, dtype: str) -> dict:
        """Parse and validate the parameter block (ParamsInvalid on any violation)."""

    def build_params(self, params: dict) -> bytes:
        return self.params_struct.build(params)

    @abc.abstractmethod
    def streams(self, params: dict, rows: int, cols: int, dtype: str) -> list:
        """The StreamSpecs of a tensor with these parameters, in payload order."""

    def stream_bounds(self, params: dict, rows: int, cols: int, dtype: str, position: int, earlier_streams: list):
        """The Bounds (pvqcodec.coding.Bounds) of the stream at `position`, or None for an
        unbounded stream (spec section 4, since 1.1). `earlier_streams` are the decoded
        streams before it in payload order, for bounds that depend on them."""
        return None

    def encode(self, wp: np.ndarray, options: dict, weighting=None) -> Encoded:
        """Quantize the transformed matrix wp (rows x cols, float64). Codecs that store
        values exactly (quantizes = False) have no such encoder."""
        raise TypeError(f"codec {self.name} stores values exactly and does not quantize")

    def block_quantizer(self, wp: np.ndarray, options: dict, free: Encoded):
        """A BlockQuantizer for wp with the parameters of `free` (this codec's data-free
        encoding of wp), or None where the codec has no block rounding."""
        return None

    @abc.abstractmethod
    def decode(self, params: dict, rows: int, cols: int, dtype: str, streams: list) -> np.ndarray:
        """The float32 matrix W' (rows x cols), bit-exact as the codec's spec section says."""

    def describe(self, params: dict) -> dict:
        return {"name": self.name, **{k: v for k, v in params.items() if not isinstance(v, (bytes, np.ndarray))}}

    # CLI plug-in: codec-specific options.
    @classmethod
    def add_cli_arguments(cls, group) -> None:
        pass

    @classmethod
    def options_from_args(cls, args) -> dict:
        return {}


CODECS: dict = {}
CODECS_BY_NAME: dict = {}


def register(codec_cls):
    codec = codec_cls()
    if codec.id in CODECS or codec.name in CODECS_BY_NAME:
        raise RuntimeError(f"codec id {codec.id} or name {codec.name} registered twice")
    CODECS[codec.id] = codec
    CODECS_BY_NAME[codec.name] = codec
    return codec_cls


def codec_by_id(codec_id: int) -> Codec:
    _load_builtin()
    try:
        return CODECS[codec_id]
    except KeyError:
        known = ", ".join(f"{c.id} ({c.name})" for c in CODECS.values())
        raise CodecUnknown(f"unknown codec id {codec_id}; this reader knows {known}") from None


def codec_by_name(name: str) -> Codec:
    _load_builtin()
    return CODECS_BY_NAME[name]


def all_codecs() -> list:
    _load_builtin()
    return sorted(CODECS.values(), key=lambda c: c.id)


# The codec modules shipped with pvqcodec; importing one registers it.
BUILTIN_MODULES = ["raw", "pvq", "lattice", "trellis", "pvqvr", "ecsq", "ectcq", "eclattice"]
_loaded = False


def _load_builtin():
    global _loaded
    if not _loaded:
        _loaded = True
        import importlib

        for mod in BUILTIN_MODULES:
            importlib.import_module(f"{__name__}.{mod}")
