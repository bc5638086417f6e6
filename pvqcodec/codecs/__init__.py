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


class Codec(abc.ABC):
    """Base class. Subclasses set id, name, params_struct and implement the abstract methods."""

    id: int
    name: str
    params_struct = None
    quantizes = True  # False for the raw codec: values stored exactly
    needs_identity_transform = False

    @abc.abstractmethod
    def parse_params(self, raw: bytes, rows: int, cols: int, dtype: str) -> dict:
        """Parse and validate the parameter block (ParamsInvalid on any violation)."""

    def build_params(self, params: dict) -> bytes:
        return self.params_struct.build(params)

    @abc.abstractmethod
    def streams(self, params: dict, rows: int, cols: int, dtype: str) -> list:
        """The StreamSpecs of a tensor with these parameters, in payload order."""

    def encode(self, wp: np.ndarray, options: dict, weighting=None) -> Encoded:
        """Quantize the transformed matrix wp (rows x cols, float64). Codecs that store
        values exactly (quantizes = False) have no such encoder."""
        raise TypeError(f"codec {self.name} stores values exactly and does not quantize")

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
BUILTIN_MODULES = ["raw", "pvq", "lattice", "trellis"]
_loaded = False


def _load_builtin():
    global _loaded
    if not _loaded:
        _loaded = True
        import importlib

        for mod in BUILTIN_MODULES:
            importlib.import_module(f"{__name__}.{mod}")
