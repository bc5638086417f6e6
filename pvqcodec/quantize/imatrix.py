"""Read llama.cpp importance matrices ("imatrix"): E[x_j^2] per input column of each weight.

llama.cpp's `llama-imatrix` writes one of two formats; both hold, per GGUF weight name
(``blk.3.attn_q.weight``), the mean of the squared activations entering each input
column (for a mixture-of-experts weight: one such vector per expert).

Legacy binary ``.dat`` (all integers int32 little-endian, values float32)::

    n_entries
    n_entries times:  len, name[len] (bytes), ncall, nval, values[nval]
    optional trailer: last_call, len, dataset[len]  (older versions: last_call only)

  The stored values are mean * ncall; llama.cpp's quantizer divides by ncall (when
  ncall > 0) to get the mean E[x_j^2]. ncall counts chunks, not tokens.

GGUF (``general.type`` = "imatrix"): per weight two float32 tensors, ``NAME.in_sum2``
  with GGUF dims [n_per_row, n_mat] (the sum of x_j^2) and ``NAME.counts`` with dims
  [1, n_mat] (tokens seen per matrix); the mean is in_sum2 / counts, and a matrix with
  count 0 never saw input. Key-value pairs ``imatrix.datasets`` (array of strings),
  ``imatrix.chunk_count``, ``imatrix.chunk_size``.

The GGUF container itself (version 2 or 3, little-endian): magic "GGUF", u32 version,
u64 n_tensors, u64 n_kv, the key-value pairs (string key = u64 length + bytes, u32 type,
value), the tensor infos (name, u32 n_dims, u64 dims[n_dims] innermost first, u32 ggml
type, u64 offset relative to the data section), padding to ``general.alignment`` (32
unless given), then the data section.

Importance vectors are keyed by GGUF names; `gguf_to_hf_name` maps the names of
Llama-like architectures (Llama, Mistral, Qwen2/3, SmolLM, ...) to Hugging Face
transformers names so that they can be looked up by the names in a safetensors file.
Every problem raises `ImatrixError` naming the file (and the entry where known).
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

__all__ = [
    "ImatrixError",
    "ImatrixEntry",
    "Imatrix",
    "read_imatrix",
    "read_legacy_imatrix",
    "read_gguf_imatrix",
    "gguf_to_hf_name",
    "hf_to_gguf_name",
]

#: Caps applied before anything is allocated (far above any real model).
MAX_ENTRIES = 1 << 20
MAX_NAME_LEN = 1 << 12
MAX_KV = 1 << 16
MAX_DIMS = 4


class ImatrixError(InputError):
    """An importance-matrix file that cannot be read: truncated, malformed, non-finite or negative values."""

    code = "imatrix_invalid"


@dataclass
class ImatrixEntry:
    """One weight's importance: ``values`` float64 [n_mat, n_per_row] = E[x_j^2], ``counts`` [n_mat]."""

    name: str  # the GGUF name as stored
    values: np.ndarray
    counts: np.ndarray  # int64; tokens (GGUF) or chunks (legacy) per matrix


@dataclass
class Imatrix:
    path: str
    format: str  # "imatrix-legacy" or "imatrix-gguf"
    entries: dict[str, ImatrixEntry]
    datasets: list[str] = field(default_factory=list)
    chunk_count: int | None = None


# --- GGUF <-> Hugging Face names (Llama-like architectures) ------------------------------

# GGUF block tensor -> Hugging Face module path inside model.layers.N
_BLOCK_TO_HF = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_HF_TO_BLOCK = {v: k for k, v in _BLOCK_TO_HF.items()}
# mixture-of-experts weights stacked in one GGUF tensor, one HF tensor per expert (Qwen-MoE style)
_EXPS_TO_HF = {"ffn_gate_exps": "gate_proj", "ffn_up_exps": "up_proj", "ffn_down_exps": "down_proj"}
_HF_TO_EXPS = {v: k for k, v in _EXPS_TO_HF.items()}
_TOP_TO_HF = {"output.weight": "lm_head.weight", "token_embd.weight": "model.embed_tokens.weight"}
_HF_TO_TOP = {v: k for k, v in _TOP_TO_HF.items()}

_GGUF_BLOCK = re.compile(r"blk\.(\d+)\.([a-z_]+)\.weight")
_HF_BLOCK = re.compile(r"model\.layers\.(\d+)\.(self_attn\.[a-z_]+|mlp\.[a-z_]+)\.weight")
_HF_EXPERT = re.compile(r"model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.([a-z_]+)\.weight")


def gguf_to_hf_name(name: str, expert: int | None = None) -> str | None:
    """The Hugging Face name of GGUF weight ``name`` (matrix ``expert`` of a stacked MoE tensor), or None."""
    if name in _TOP_TO_HF and expert is None:
        return _TOP_TO_HF[name]
    m = _GGUF_BLOCK.fullmatch(name)
    if not m:
        return None
    layer, part = m.groups()
    if expert is None and part in _BLOCK_TO_HF:
        return f"model.layers.{layer}.{_BLOCK_TO_HF[part]}.weight"
    if expert is not None and part in _EXPS_TO_HF:
        return f"model.layers.{layer}.mlp.experts.{expert}.{_EXPS_TO_HF[part]}.weight"
    return None


def hf_to_gguf_name(name: str) -> tuple[str, int | None] | None:
    """(GGUF name, expert index or None) for a Hugging Face weight name, or None if unmapped."""
    if name in _HF_TO_TOP:
        return _HF_TO_TOP[name], None
    m = _HF_EXPERT.fullmatch(name)
    if m:
        layer, expert, proj = m.groups()
        return (f"blk.{layer}.{_HF_TO_EXPS[proj]}.weight", int(expert)) if proj in _HF_TO_EXPS else None
    m = _HF_BLOCK.fullmatch(name)
    if m:
        layer, part = m.groups()
        return (f"blk.{layer}.{_HF_TO_BLOCK[part]}.weight", None) if part in _HF_TO_BLOCK else None
    return None


# --- a bounds-checked little-endian reader ------------------------------------------------


class _Reader:
    def __init__(self, path: str, data: bytes):
        self.path, self.data, self.pos = path, memoryview(data), 0

    def fail(self, msg: str) -> ImatrixError:
        return ImatrixError(f"{self.path}: {msg}")

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or n > self.remaining():
            raise self.fail(f"truncated: {what} needs {n} bytes at offset {self.pos}, {self.remaining()} left")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))[0]

    def text(self, n: int, what: str) -> str:
        raw = bytes(self.take(n, what))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not UTF-8: {raw[:40]!r}") from None


def _check_values(r: _Reader, name: str, values: np.ndarray) -> None:
    if not np.all(np.isfinite(values)):
        raise r.fail(f"entry {name!r}: values contain NaN or Inf")
    if np.any(values < 0):
        raise r.fail(f"entry {name!r}: negative mean square {float(values.min())!r}")


# --- legacy .dat ----------------------------------------------------------------------------


def read_legacy_imatrix(path: str, data: bytes) -> Imatrix:
    r = _Reader(path, data)
    n_entries = r.unpack("i", "entry count")
    if not 1 <= n_entries <= MAX_ENTRIES:
        raise r.fail(f"entry count {n_entries} is not in [1, {MAX_ENTRIES}] (not a legacy imatrix file?)")
    entries: dict[str, ImatrixEntry] = {}
    for i in range(n_entries):
        length = r.unpack("i", f"name length of entry {i}")
        if not 1 <= length <= MAX_NAME_LEN:
            raise r.fail(f"entry {i}: name length {length} is not in [1, {MAX_NAME_LEN}]")
        name = r.text(length, f"name of entry {i}")
        ncall = r.unpack("i", f"call count of entry {name!r}")
        nval = r.unpack("i", f"value count of entry {name!r}")
        if ncall < 0:
            raise r.fail(f"entry {name!r}: negative call count {ncall}")
        if nval < 1 or 4 * nval > r.remaining():
            raise r.fail(f"entry {name!r}: value count {nval} does not fit the {r.remaining()} bytes left")
        if name in entries:
            raise r.fail(f"entry {name!r} appears twice")
        values = np.frombuffer(r.take(4 * nval, f"values of {name!r}"), dtype="<f4").astype(np.float64)
        _check_values(r, name, values)
        if ncall > 0:  # stored as mean * ncall
            values = values / ncall
        entries[name] = ImatrixEntry(name, values.reshape(1, nval), np.array([ncall], dtype=np.int64))
    datasets, chunk_count = [], None
    if r.remaining():
        chunk_count = r.unpack("i", "trailer call count")
        if not r.remaining():  # older llama.cpp wrote the call count without a dataset name
            return Imatrix(path, "imatrix-legacy", entries, [], chunk_count)
        length = r.unpack("i", "trailer dataset name length")
        if not 0 <= length <= r.remaining():
            raise r.fail(f"trailer: dataset name length {length} does not fit the {r.remaining()} bytes left")
        datasets = [bytes(r.take(length, "dataset name")).decode("utf-8", "replace")]
        if r.remaining():
            raise r.fail(f"{r.remaining()} trailing bytes after the dataset name")
    return Imatrix(path, "imatrix-legacy", entries, datasets, chunk_count)


# --- GGUF -----------------------------------------------------------------------------------

_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGML_F32 = 0


def _gguf_string(r: _Reader, what: str) -> str:
    n = r.unpack("Q", f"length of {what}")
    if n > r.remaining():
        raise r.fail(f"{what}: string length {n} runs past the end of the file")
    return r.text(n, what)


def _gguf_value(r: _Reader, vtype: int, key: str, depth: int = 0):
    if vtype in _GGUF_SCALARS:
        return r.unpack(_GGUF_SCALARS[vtype], f"value of {key!r}")
    if vtype == _GGUF_STRING:
        return _gguf_string(r, f"value of {key!r}")
    if vtype == _GGUF_ARRAY and depth == 0:
        etype = r.unpack("I", f"array type of {key!r}")
        n = r.unpack("Q", f"array length of {key!r}")
        if n > r.remaining():  # every element takes at least one byte
            raise r.fail(f"key {key!r}: array length {n} runs past the end of the file")
        return [_gguf_value(r, etype, key, depth + 1) for _ in range(n)]
    raise r.fail(f"key {key!r}: unknown or nested value type {vtype}")


def read_gguf_imatrix(path: str, data: bytes) -> Imatrix:
    r = _Reader(path, data)
    if bytes(r.take(4, "magic")) != b"GGUF":
        raise r.fail("not a GGUF file (bad magic)")
    version = r.unpack("I", "version")
    if version not in (2, 3):
        raise r.fail(f"GGUF version {version} is not supported (2 or 3, little-endian)")
    n_tensors = r.unpack("Q", "tensor count")
    n_kv = r.unpack("Q", "key-value count")
    if n_tensors > MAX_ENTRIES or n_kv > MAX_KV:
        raise r.fail(f"{n_tensors} tensors / {n_kv} key-value pairs exceed the limits {MAX_ENTRIES} / {MAX_KV}")
    kv = {}
    for _ in range(n_kv):
        key = _gguf_string(r, "key")
        kv[key] = _gguf_value(r, r.unpack("I", f"type of {key!r}"), key)
    gtype = kv.get("general.type")
    if gtype is not None and gtype != "imatrix":
        raise r.fail(f"GGUF general.type is {gtype!r}, not 'imatrix' (a model file, not an importance matrix?)")
    alignment = kv.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment < 1 or alignment & (alignment - 1):
        raise r.fail(f"general.alignment {alignment!r} is not a power of two")
    infos = []
    for _ in range(n_tensors):
        name = _gguf_string(r, "tensor name")
        n_dims = r.unpack("I", f"dimension count of {name!r}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise r.fail(f"tensor {name!r}: {n_dims} dimensions")
        dims = [r.unpack("Q", f"dimension of {name!r}") for _ in range(n_dims)]
        ggml_type = r.unpack("I", f"type of {name!r}")
        offset = r.unpack("Q", f"offset of {name!r}")
        infos.append((name, dims, ggml_type, offset))
    data_start = -(-r.pos // alignment) * alignment
    tensors = {}
    for name, dims, ggml_type, offset in infos:
        if not (name.endswith(".in_sum2") or name.endswith(".counts")):
            continue  # llama.cpp ignores other tensors too
        if ggml_type != _GGML_F32:
            raise r.fail(f"tensor {name!r}: ggml type {ggml_type}, expected F32 (0)")
        numel = math.prod(dims)
        begin = data_start + offset
        if offset % alignment or begin + 4 * numel > len(data):
            raise r.fail(f"tensor {name!r}: data [{begin}, {begin + 4 * numel}) is misaligned or past the end "
                         f"of the {len(data)}-byte file")
        arr = np.frombuffer(data, dtype="<f4", count=numel, offset=begin).astype(np.float64)
        tensors[name] = arr.reshape(list(reversed(dims)) if len(dims) > 1 else dims)
    entries: dict[str, ImatrixEntry] = {}
    bases = sorted({n.rsplit(".", 1)[0] for n in tensors})
    for base in bases:
        sums, counts = tensors.get(base + ".in_sum2"), tensors.get(base + ".counts")
        if sums is None or counts is None:
            raise r.fail(f"entry {base!r}: has {'in_sum2' if sums is not None else 'counts'} but not "
                         f"{'counts' if sums is not None else 'in_sum2'}")
        sums = sums.reshape(-1, sums.shape[-1]) if sums.ndim > 1 else sums.reshape(1, -1)
        counts = counts.reshape(-1)
        if counts.size != sums.shape[0]:
            raise r.fail(f"entry {base!r}: {counts.size} counts for {sums.shape[0]} matrices")
        _check_values(r, base, sums)
        _check_values(r, base + ".counts", counts)
        if np.any(counts != np.round(counts)):
            raise r.fail(f"entry {base!r}: token counts are not integers")
        means = np.divide(sums, counts[:, None], out=np.zeros_like(sums), where=counts[:, None] > 0)
        entries[base] = ImatrixEntry(base, means, counts.astype(np.int64))
    if not entries:
        raise r.fail("no importance entries (no *.in_sum2 / *.counts tensors)")
    datasets = kv.get("imatrix.datasets", [])
    chunk_count = kv.get("imatrix.chunk_count")
    return Imatrix(path, "imatrix-gguf", entries,
                   [d for d in datasets if isinstance(d, str)] if isinstance(datasets, list) else [],
                   chunk_count if isinstance(chunk_count, int) else None)


def read_imatrix(path: str) -> Imatrix:
    """Read an imatrix file in either format (GGUF if it starts with b"GGUF", else legacy)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise InputError(f"no such file: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if data[:4] == b"GGUF":
        return read_gguf_imatrix(path, data)
    return read_legacy_imatrix(path, data)
