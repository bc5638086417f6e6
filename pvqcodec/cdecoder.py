"""The C reference decoder (ref_decoder_c/pvqc.c) from Python, through cffi.

The extension module `pvqcodec._pvqc_c` is compiled by the package's install
(setup.py's `cffi_modules`); it needs only a C compiler. Without it, everything here
raises `CDecoderUnavailable` (an ImportError) with the reason and the fix.

    from pvqcodec.cdecoder import CDecoder
    with CDecoder.open("model.pvqc") as f:
        w = f.decode("layers.0.mlp.up_proj.weight")            # float32, shaped
        part = f.decode_rows("layers.0.mlp.up_proj.weight", 0, 128)  # rows of the matrix view

Errors in a file raise the same `pvqcodec.errors` classes (same `code`) as the
Python decoder, with the C decoder's message. The C calls release the GIL; one
CDecoder serializes its own calls (the C handle is not shared between threads).
"""

from __future__ import annotations

import os
import threading

import numpy as np

from .errors import InputError, all_format_errors
from .mapped import close_map, map_file

try:  # the compiled binding (built by `pip install`)
    from ._pvqc_c import ffi as _ffi
    from ._pvqc_c import lib as _lib

    _IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the install
    _ffi = _lib = None
    _IMPORT_ERROR = exc


class CDecoderUnavailable(ImportError, InputError):
    """The C decoder's extension module is not built (an ImportError, and a user-facing InputError)."""

    code = "c_decoder_unavailable"


def available() -> bool:
    """True if the C decoder's extension module is importable."""
    return _lib is not None


def _require():
    if _lib is None:
        raise CDecoderUnavailable(
            f"the C decoder is not built ({_IMPORT_ERROR}); reinstall pvqcodec with a C compiler present "
            f"(pip install -e .) or use the Python decoder"
        )


_DTYPE_IDS = {"float32": 1, "float16": 2, "bfloat16": 3}
_DTYPE_NAMES = {v: k for k, v in _DTYPE_IDS.items()}
_NUMPY = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}  # bfloat16 as uint16 bits
_CALLER_ERRORS = {100: ValueError, 101: ValueError, 102: MemoryError, 103: InputError, 104: InputError}


def error_name(code: int) -> str:
    """The spec's name of a C error code (e.g. 2 -> "magic_invalid")."""
    _require()
    return _ffi.string(_lib.pvqc_error_name(code)).decode()


class CDecoder:
    """A .pvqc file opened by the C decoder over a bytes-like buffer (kept alive, never copied)."""

    def __init__(self, data, path=None):
        _require()
        self.path = path
        self._lock = threading.Lock()
        self._mmap = None
        self._file = None
        self._h = None
        self._buf = _ffi.from_buffer("uint8_t[]", data)
        self._keep = data
        out = _ffi.new("pvqc_file **")
        code = _lib.pvqc_open_memory(self._buf, len(self._buf), _ffi.NULL, out)
        handle = out[0]
        if code != 0:
            msg = self._message(handle, code)
            if handle != _ffi.NULL:
                _lib.pvqc_close(handle)
            self._release()
            raise self._error(code, msg)
        self._h = handle
        self._index = {}
        info = _ffi.new("pvqc_tensor_info *")
        self._infos = []
        for i in range(_lib.pvqc_tensor_count(handle)):
            self._check(_lib.pvqc_get_tensor_info(handle, i, info))
            d = {
                "name": _ffi.unpack(info.name, info.name_len).decode("utf-8"),
                "dtype": _DTYPE_NAMES[int(info.dtype)],
                "shape": tuple(int(info.shape[k]) for k in range(info.rank)),
                "rows": int(info.rows),
                "cols": int(info.cols),
                "transform": _ffi.string(info.transform_name).decode(),
                "codec": _ffi.string(info.codec_name).decode(),
                "codec_id": int(info.codec_id),
                "payload_bytes": int(info.payload_bytes),
            }
            self._index[d["name"]] = i
            self._infos.append(d)

    # ---- opening and closing ------------------------------------------------------------

    @classmethod
    def open(cls, path):
        """Memory-map a file and open it (no copy)."""
        _require()
        f, mm = map_file(path)
        try:
            obj = cls(mm, path=os.fspath(path))
        except BaseException:
            close_map(f, mm)
            raise
        obj._mmap, obj._file = mm, f
        return obj

    @classmethod
    def from_bytes(cls, data):
        return cls(bytes(data))

    def close(self):
        with self._lock:
            if self._h is not None:
                _lib.pvqc_close(self._h)
                self._h = None
            self._release()

    def _release(self):
        if self._buf is not None:
            _ffi.release(self._buf)
            self._buf = None
        self._keep = None
        if self._mmap is not None:
            close_map(self._file, self._mmap)
            self._mmap = self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    # ---- errors ---------------------------------------------------------------------------

    def _message(self, handle, code) -> str:
        msg = _ffi.string(_lib.pvqc_error_message(handle)).decode("utf-8", "replace")
        if self.path and code < 100:
            msg = f"{self.path}: {msg}"
        return msg

    @staticmethod
    def _error(code, msg):
        if code in _CALLER_ERRORS:
            return _CALLER_ERRORS[code](msg)
        name = _ffi.string(_lib.pvqc_error_name(code)).decode()
        return all_format_errors().get(name, InputError)(msg)

    def _check(self, code):
        if code != 0:
            raise self._error(code, self._message(self._h, code))

    def _handle(self):
        if self._h is None:
            raise ValueError("the C decoder's file is closed")
        return self._h

    # ---- the directory ----------------------------------------------------------------------

    @property
    def names(self) -> list:
        return [d["name"] for d in self._infos]

    def info(self, name: str) -> dict:
        return dict(self._infos[self._tensor_index(name)])

    @property
    def metadata(self) -> dict:
        out = {}
        k = _ffi.new("const char **")
        kl = _ffi.new("size_t *")
        v = _ffi.new("const char **")
        vl = _ffi.new("size_t *")
        with self._lock:
            h = self._handle()
            for i in range(_lib.pvqc_metadata_count(h)):
                self._check(_lib.pvqc_get_metadata(h, i, k, kl, v, vl))
                out[_ffi.unpack(k[0], kl[0]).decode()] = _ffi.unpack(v[0], vl[0]).decode()
        return out

    def _tensor_index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise InputError(f"no tensor named {name!r} in {self.path or 'this file'}") from None

    # ---- decoding ---------------------------------------------------------------------------

    def check(self, name: str) -> None:
        """Check the tensor's payloads (CRCs, coding, codec content) without decoding values."""
        i = self._tensor_index(name)
        with self._lock:
            self._check(_lib.pvqc_check_tensor(self._handle(), i))

    def decode_rows(self, name: str, start: int, stop: int, dtype: str = "float32") -> np.ndarray:
        """Rows [start, stop) of the tensor's matrix view (rows x cols), in `dtype`
        (float32, float16, or bfloat16 as uint16 bits), shape (stop - start, cols)."""
        i = self._tensor_index(name)
        d = self._infos[i]
        if dtype not in _DTYPE_IDS:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPE_IDS)}, got {dtype!r}")
        if not 0 <= start <= stop <= d["rows"]:
            raise ValueError(f"row range [{start}, {stop}) is not inside the tensor's {d['rows']} rows")
        out = np.empty((stop - start, d["cols"]), dtype=_NUMPY[dtype])
        with self._lock:
            code = _lib.pvqc_decode_rows(self._handle(), i, start, stop, _DTYPE_IDS[dtype],
                                         _ffi.from_buffer(out, require_writable=True), out.nbytes)
            self._check(code)
        return out

    def decode(self, name: str, dtype: str = "float32") -> np.ndarray:
        """The whole tensor in `dtype`, reshaped to its shape. float32 is the spec's exact
        values; float16/bfloat16 are rounded by spec 10.3, except that a raw tensor asked
        for in its own dtype is copied bit for bit."""
        d = self._infos[self._tensor_index(name)]
        return self.decode_rows(name, 0, d["rows"], dtype).reshape(d["shape"])

    def decode_stored(self, name: str, dtype: str = None) -> np.ndarray:
        """Like pvqcodec.decoder.decode_stored: raw tensors in their own dtype (bit for bit),
        quantized ones rounded to `dtype` (default: their source dtype)."""
        d = self._infos[self._tensor_index(name)]
        if d["codec_id"] == 0:
            return self.decode(name, d["dtype"])
        return self.decode(name, dtype or d["dtype"])
