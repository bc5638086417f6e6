"""Second moments of layer inputs (Hessians) for Hessian-aware rounding: the file
`pvqcodec calibrate` writes, and one interface over it and llama.cpp imatrix files.

The proxy loss of a linear layer W (out x in) quantized to Q is tr((W - Q) H (W - Q)^T)
with H = E[x x^T] over the layer's calibration inputs x. Layers that read the same input
(q/k/v; gate/up) share one H.

The H file (safetensors, format 1). Per distinct input, keyed by K = the name of the
first weight that reads it (e.g. "model.layers.0.self_attn.q_proj.weight"):

  ``H:{K}``      F64 [n, n]  E[x x^T] = sum(x x^T) / count (exactly symmetric)
  ``mu:{K}``     F64 [n]     E[x]
  ``count:{K}``  I64 [1]     number of input vectors (tokens) accumulated, >= 1

and the metadata entry "pvqcodec.hessians" = JSON {"format": 1, "weights": {weight
name: K, ...}, "tokens": N, "ctx": L, "model": str}. Every K in "weights" has all three
tensors; tensors not named by any K are an error.

`open_importance(path)` detects the kind of file (this H file, a llama.cpp imatrix in
its GGUF or legacy .dat format) and returns a `HessianSource`, whose
``get(weight_name)`` gives ``(H, count)``: a float64 [n, n] matrix, or for an imatrix
(``diagonal_only``) the float64 [n] diagonal E[x_j^2]; None for a weight it has nothing
for. Structure is checked on open; values (finite, symmetric, non-negative diagonal)
when a matrix is first read. Problems raise `HessianFileError` naming file and tensor.
"""

from __future__ import annotations

import abc
import json
import math
import os
import struct
from typing import Mapping

import numpy as np

from ..errors import InputError
from ..safetensors_io import SafetensorsSource, write_safetensors
from .imatrix import ImatrixError, hf_to_gguf_name, read_imatrix

__all__ = [
    "HessianFileError",
    "HessianSource",
    "FullHessians",
    "DiagonalImportance",
    "HESSIANS_METADATA_KEY",
    "HESSIANS_FORMAT",
    "write_hessians",
    "load_hessians",
    "load_imatrix",
    "open_importance",
]

HESSIANS_METADATA_KEY = "pvqcodec.hessians"
HESSIANS_FORMAT = 1

#: Relative asymmetry max|H - H^T| / max|H| tolerated on read (the writer stores exact symmetry).
_SYMMETRY_TOL = 1e-12


class HessianFileError(InputError):
    """A Hessian or importance file that is malformed, inconsistent, or holds NaN/Inf or impossible values."""

    code = "hessians_invalid"


class HessianSource(abc.ABC):
    """Per-weight second moments: ``get(name) -> (H or diag, count) | None``."""

    path: str
    kind: str  # "hessians", "imatrix-legacy" or "imatrix-gguf"
    diagonal_only: bool

    def output_fisher(self, weight_name: str) -> float | None:
        """The layer's output sensitivity E[(d loss / d y)^2], where the file has one."""
        return None

    @abc.abstractmethod
    def get(self, weight_name: str) -> tuple[np.ndarray, int] | None:
        """The weight's H (n x n) or diagonal (n), with its token count; None if it has none."""

    @abc.abstractmethod
    def weight_names(self) -> list[str]:
        """The weight names that `get` answers (Hugging Face names where a mapping exists)."""

    def __contains__(self, weight_name: str) -> bool:
        return weight_name in set(self.weight_names())

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- the H file -----------------------------------------------------------------------------


def _bad(path, msg: str, tensor: str | None = None) -> HessianFileError:
    where = f"{os.fspath(path)}: " + (f"tensor {tensor!r}: " if tensor else "")
    return HessianFileError(where + msg)


class FullHessians(HessianSource):
    """The safetensors H file written by `pvqcodec calibrate` (read lazily, memory-mapped)."""

    kind = "hessians"
    diagonal_only = False

    def __init__(self, path: str, src: SafetensorsSource, weights: dict[str, str], info: dict):
        self.path, self._src, self.weights, self.info = path, src, weights, info
        self._cache: tuple[str, np.ndarray, int] | None = None  # the last key read: q/k/v ask in a row

    def weight_names(self) -> list[str]:
        return list(self.weights)

    def keys(self) -> list[str]:
        """The distinct inputs, each named by the first weight that reads it."""
        return sorted(set(self.weights.values()))

    def output_fisher(self, weight_name: str) -> float | None:
        """E[(d loss / d y)^2] of the layer's output (calibrate --fisher-tokens), or None."""
        v = (self.info.get("output_fisher") or {}).get(weight_name)
        return None if v is None else float(v)

    def mean(self, weight_name: str) -> np.ndarray | None:
        key = self.weights.get(weight_name)
        return None if key is None else np.array(self._src.read(f"mu:{key}"), dtype=np.float64)

    def get(self, weight_name: str) -> tuple[np.ndarray, int] | None:
        key = self.weights.get(weight_name)
        if key is None:
            return None
        if self._cache is None or self._cache[0] != key:
            h = np.array(self._src.read(f"H:{key}"), dtype=np.float64)
            mu = self._src.read(f"mu:{key}")
            count = int(self._src.read(f"count:{key}")[0])
            if not np.all(np.isfinite(h)) or not np.all(np.isfinite(mu)):
                raise _bad(self.path, "contains NaN or Inf", f"H:{key}")
            scale = float(np.max(np.abs(h))) if h.size else 0.0
            if scale and float(np.max(np.abs(h - h.T))) > _SYMMETRY_TOL * scale:
                raise _bad(self.path, "is not symmetric", f"H:{key}")
            if np.any(np.diag(h) < 0):
                raise _bad(self.path, "has a negative diagonal entry (not a second moment)", f"H:{key}")
            self._cache = (key, h, count)
        _, h, count = self._cache
        return h.copy(), count

    def close(self) -> None:
        self._cache = None
        self._src.close()


def load_hessians(path) -> FullHessians:
    """Open an H file written by `pvqcodec calibrate`, checking its structure (not yet its values)."""
    path = os.fspath(path)
    try:
        src = SafetensorsSource.open(path)
    except HessianFileError:
        raise
    except InputError as exc:
        raise HessianFileError(str(exc)) from None
    try:
        raw = src.metadata.get(HESSIANS_METADATA_KEY)
        if raw is None:
            raise _bad(path, f"no {HESSIANS_METADATA_KEY!r} metadata: not a Hessian file written by pvqcodec calibrate")
        try:
            info = json.loads(raw)
        except ValueError as exc:
            raise _bad(path, f"{HESSIANS_METADATA_KEY} metadata is not JSON: {exc}") from None
        if not isinstance(info, dict) or info.get("format") != HESSIANS_FORMAT:
            got = info.get("format") if isinstance(info, dict) else info
            raise _bad(path, f"Hessian file format {got!r} is not supported (this reader knows {HESSIANS_FORMAT})")
        weights = info.get("weights")
        if not isinstance(weights, dict) or not weights or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in weights.items()):
            raise _bad(path, "metadata 'weights' must be a non-empty object of weight name -> input key")
        fisher = info.get("output_fisher")
        if fisher is not None and (not isinstance(fisher, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v) and v >= 0 for k, v in fisher.items())):
            raise _bad(path, "metadata 'output_fisher' must be an object of weight name -> finite number >= 0")
        keys = set(weights.values())
        expected = {f"{p}:{k}" for k in keys for p in ("H", "mu", "count")}
        have = set(src.names)
        if expected - have:
            raise _bad(path, "missing", sorted(expected - have)[0])
        if have - expected:
            raise _bad(path, "is not named by any weight in the metadata", sorted(have - expected)[0])
        for k in sorted(keys):
            h, mu, c = src.info(f"H:{k}"), src.info(f"mu:{k}"), src.info(f"count:{k}")
            if h.dtype != "F64" or len(h.shape) != 2 or h.shape[0] != h.shape[1] or h.shape[0] < 1:
                raise _bad(path, f"must be F64 [n, n], is {h.dtype} {list(h.shape)}", f"H:{k}")
            if mu.dtype != "F64" or tuple(mu.shape) != (h.shape[0],):
                raise _bad(path, f"must be F64 [{h.shape[0]}], is {mu.dtype} {list(mu.shape)}", f"mu:{k}")
            if c.dtype != "I64" or tuple(c.shape) != (1,):
                raise _bad(path, f"must be I64 [1], is {c.dtype} {list(c.shape)}", f"count:{k}")
            if int(src.read(f"count:{k}")[0]) < 1:
                raise _bad(path, f"count {int(src.read(f'count:{k}')[0])} is not positive", f"count:{k}")
    except BaseException:
        src.close()
        raise
    return FullHessians(path, src, dict(weights), info)


def write_hessians(path, moments: Mapping[str, tuple[np.ndarray, np.ndarray, int]], weights: Mapping[str, str],
                   *, tokens: int, ctx: int, model: str, fisher: Mapping[str, float] | None = None,
                   fisher_tokens: int = 0) -> None:
    """Write an H file atomically. ``moments``: key -> (sum of x x^T, sum of x, count), float64 sums.

    ``weights`` maps every weight name to the key of the input it reads. The file stores
    the means (sum / count), made exactly symmetric.
    """
    keys = sorted(set(weights.values()))
    if set(keys) != set(moments):
        raise ValueError(f"weights name inputs {sorted(set(keys) ^ set(moments))[:3]} without moments or vice versa")
    entries = []
    for k in keys:
        sxx, sx, count = moments[k]
        if count < 1:
            raise ValueError(f"input {k!r} saw no tokens")
        n = sx.shape[0]

        def h(sxx=sxx, count=count):
            m = np.asarray(sxx, dtype=np.float64) / count
            return (m + m.T) * 0.5

        entries += [(f"H:{k}", "F64", (n, n), h),
                    (f"mu:{k}", "F64", (n,), lambda sx=sx, count=count: np.asarray(sx, dtype=np.float64) / count),
                    (f"count:{k}", "I64", (1,), lambda count=count: np.array([count], dtype=np.int64))]
    info = {"format": HESSIANS_FORMAT, "weights": dict(sorted(weights.items())), "tokens": int(tokens),
            "ctx": int(ctx), "model": str(model)}
    if fisher is not None:  # optional: the layers' output sensitivities (calibrate --fisher-tokens)
        info["output_fisher"] = {k: float(v) for k, v in sorted(fisher.items())}
        info["fisher_tokens"] = int(fisher_tokens)
    meta = {HESSIANS_METADATA_KEY: json.dumps(info, sort_keys=True)}
    write_safetensors(path, entries, meta)


# --- imatrix as a diagonal H --------------------------------------------------------------


class DiagonalImportance(HessianSource):
    """A llama.cpp imatrix: E[x_j^2] per input column, looked up by HF or GGUF weight name."""

    diagonal_only = True

    def __init__(self, imatrix):
        self.path, self.kind, self.imatrix = imatrix.path, imatrix.format, imatrix
        self._by_name: dict[str, tuple[str, int]] = {}  # name asked -> (GGUF entry, matrix index)
        from .imatrix import gguf_to_hf_name

        for gname, e in imatrix.entries.items():
            n_mat = e.values.shape[0]
            if n_mat == 1:
                self._by_name[gname] = (gname, 0)
            for j in range(n_mat):
                hf = gguf_to_hf_name(gname, None if n_mat == 1 else j)
                if hf is not None:
                    self._by_name[hf] = (gname, j)

    def weight_names(self) -> list[str]:
        return list(self._by_name)

    def get(self, weight_name: str) -> tuple[np.ndarray, int] | None:
        hit = self._by_name.get(weight_name)
        if hit is None:
            mapped = hf_to_gguf_name(weight_name)
            if mapped is None or mapped[0] not in self.imatrix.entries:
                return None
            hit = (mapped[0], mapped[1] or 0)
            if self.imatrix.entries[hit[0]].values.shape[0] <= hit[1]:
                return None
        e = self.imatrix.entries[hit[0]]
        count = int(e.counts[hit[1]])
        if count == 0:  # this matrix (expert) never saw input during calibration
            return None
        return e.values[hit[1]].copy(), count


def load_imatrix(path) -> DiagonalImportance:
    """Read a llama.cpp imatrix file (GGUF or legacy .dat) as a diagonal HessianSource."""
    try:
        return DiagonalImportance(read_imatrix(os.fspath(path)))
    except ImatrixError as exc:
        raise HessianFileError(str(exc)) from None


def open_importance(path) -> HessianSource:
    """Open a pvqcodec H file, a GGUF imatrix or a legacy imatrix .dat, whichever ``path`` is."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except FileNotFoundError:
        raise InputError(f"no such file: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head[:4] == b"GGUF":
        return load_imatrix(path)
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < os.path.getsize(path):
        return load_hessians(path)  # a safetensors header: u64 length, then JSON
    try:
        return load_imatrix(path)
    except HessianFileError as exc:
        raise HessianFileError(f"{exc} (the file is neither a pvqcodec Hessian file, a GGUF imatrix nor a "
                               f"legacy imatrix .dat)") from None
