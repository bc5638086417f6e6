"""Coding id 1, `rans` (spec coding-rans.md, section 4.3, since 1.1).

Interleaved rANS: 32 lanes with 32-bit states and 16-bit words, in chunks of S
symbols that decode independently. Table mode codes a symbol with a stored
frequency table of precision P; uniform mode codes it uniformly over its bound.
This module holds the payload layout (4.3.1), the bound descriptors of uniform
mode (4.3.3) and the reference encoder's choices (4.3.5); the coder's loops are
in rans_kernels.py.

Symbols are given and returned as the raw coding does (pvqcodec/bits.py): a 1-D
array of the narrowest native dtype for widths up to 64, (count, limbs) uint64
rows for wider symbols.
"""

from dataclasses import dataclass

import numpy as np

from .. import bits
from ..errors import PayloadCorrupt
from . import rans_kernels as K

MODE_TABLE = 0
MODE_UNIFORM = 1
MODES = {"table": MODE_TABLE, "uniform": MODE_UNIFORM}
HEADER_SIZE = 16
LANES = 32
STATE_WORDS = 2 * LANES
MAX_PRECISION = 15
MAX_ALPHABET = 65536
DEFAULT_PRECISION = 12
DEFAULT_CHUNK_SYMBOLS = 65536


def align8(x: int) -> int:
    return (x + 7) & ~7


def output_dtype(width: int):
    """The dtype RawCoding.decode returns for a width up to 64 (bits.unpack's rule)."""
    if width <= 8:
        return np.uint8
    if width <= 16:
        return np.uint16
    if width <= 32:
        return np.uint32
    return np.uint64


# ---- 4.3.1 payload header ------------------------------------------------------------------


@dataclass
class RansHeader:
    mode: int
    precision: int
    chunk_symbols: int
    chunk_count: int
    alphabet: int
    freq: np.ndarray  # int64 (A,), table mode only
    chunk_end: np.ndarray  # uint64 (C,)
    data_offset: int  # byte offset of the chunk data: T + 8C

    def chunk_symbol_range(self, first_chunk: int, n_chunks: int, count: int) -> tuple:
        lo = first_chunk * self.chunk_symbols
        return lo, min((first_chunk + n_chunks) * self.chunk_symbols, count)


def _u(buf, off, n):
    return int.from_bytes(bytes(buf[off:off + n]), "little")


def parse_rans_header(buf: np.ndarray, spec) -> RansHeader:
    """Section 4.3.1: every check of the layout table, in its order, before any chunk is decoded."""
    where = f"rans payload of stream {spec.name!r}: "
    size = buf.size
    if size < HEADER_SIZE:
        raise PayloadCorrupt(f"{where}{size} bytes, shorter than its 16-byte header")
    mode, precision, reserved = _u(buf, 0, 1), _u(buf, 1, 1), _u(buf, 2, 2)
    S, C, A = _u(buf, 4, 4), _u(buf, 8, 4), _u(buf, 12, 4)
    if mode not in (MODE_TABLE, MODE_UNIFORM):
        raise PayloadCorrupt(f"{where}unknown mode {mode} (0 table, 1 uniform)")
    if mode == MODE_TABLE and not 1 <= precision <= MAX_PRECISION:
        raise PayloadCorrupt(f"{where}table precision {precision} outside 1..{MAX_PRECISION}")
    if mode == MODE_UNIFORM and precision != 0:
        raise PayloadCorrupt(f"{where}uniform mode with precision {precision} (must be 0)")
    if reserved:
        raise PayloadCorrupt(f"{where}reserved field is {reserved} (must be 0)")
    if S < 1:
        raise PayloadCorrupt(f"{where}chunk_symbols is 0")
    want_c = -(-spec.count // S)
    if C != want_c:
        raise PayloadCorrupt(f"{where}chunk_count {C}, expected ceil({spec.count} / {S}) = {want_c}")
    max_a = min(1 << spec.width, MAX_ALPHABET)
    if mode == MODE_TABLE and not 1 <= A <= max_a:
        raise PayloadCorrupt(f"{where}alphabet {A} outside 1..{max_a}")
    if mode == MODE_UNIFORM and A != 0:
        raise PayloadCorrupt(f"{where}uniform mode with alphabet {A} (must be 0)")
    T = align8(HEADER_SIZE + 2 * A)
    if size < T:
        raise PayloadCorrupt(f"{where}{size} bytes end inside the frequency table")
    freq = np.frombuffer(buf[HEADER_SIZE:HEADER_SIZE + 2 * A].tobytes(), "<u2").astype(np.int64)
    if A:
        total = 1 << precision
        if int(freq.max()) > total:
            s = int(np.argmax(freq > total))
            raise PayloadCorrupt(f"{where}freq[{s}] = {int(freq[s])} exceeds 2^{precision}")
        if int(freq.sum()) != total:
            raise PayloadCorrupt(f"{where}frequencies sum to {int(freq.sum())}, not 2^{precision} = {total}")
    if np.any(buf[HEADER_SIZE + 2 * A:T]):
        raise PayloadCorrupt(f"{where}non-zero padding after the frequency table")
    if size < T + 8 * C:
        raise PayloadCorrupt(f"{where}{size} bytes end inside the chunk offset table ({C} chunks)")
    chunk_end = np.frombuffer(buf[T:T + 8 * C].tobytes(), "<u8").astype(np.uint64)
    if C:
        prev = np.concatenate([np.zeros(1, np.uint64), chunk_end[:-1]])
        if np.any(chunk_end < prev):
            j = int(np.argmax(chunk_end < prev))
            raise PayloadCorrupt(f"{where}chunk_end[{j}] = {int(chunk_end[j])} is below chunk_end[{j - 1}]")
        short = (chunk_end - prev) < STATE_WORDS
        if np.any(short):
            j = int(np.argmax(short))
            raise PayloadCorrupt(f"{where}chunk {j} is {int(chunk_end[j] - prev[j])} words long, under {STATE_WORDS}")
    want_len = T + 8 * C + (2 * int(chunk_end[-1]) if C else 0)
    if size != want_len:
        raise PayloadCorrupt(f"{where}{size} bytes, but its chunk offset table ends the payload at {want_len}")
    return RansHeader(mode, precision, S, C, A, freq, chunk_end, T + 8 * C)


def build_rans_header(mode, precision, S, C, freq, chunk_end) -> bytes:
    A = 0 if freq is None else len(freq)
    head = bytearray()
    head += bytes([mode, precision]) + (0).to_bytes(2, "little")
    head += S.to_bytes(4, "little") + C.to_bytes(4, "little") + A.to_bytes(4, "little")
    if A:
        head += np.asarray(freq, "<u2").tobytes()
    head += bytes(align8(len(head)) - len(head))
    head += np.asarray(chunk_end, "<u8").tobytes()
    return bytes(head)


# ---- table mode: frequencies ----------------------------------------------------------------


def quantize_frequencies(counts: np.ndarray, precision: int) -> np.ndarray:
    """Reference encoder (4.3.5, informative): counts scaled to sum 2^P, rounded to
    nearest, every occurring symbol at least 1, the rounding absorbed by the largest
    frequencies. Raises ValueError if more symbols occur than 2^P has slots."""
    counts = np.asarray(counts, np.int64)
    total_slots = 1 << precision
    occurring = counts > 0
    n_occ = int(occurring.sum())
    if n_occ > total_slots:
        raise ValueError(f"{n_occ} distinct symbols do not fit a table of precision {precision}")
    total = int(counts.sum())
    if total == 0:
        f = np.zeros(counts.size, np.int64)
        f[0] = total_slots
        return f
    f = (2 * counts * total_slots + total) // (2 * total)
    f[occurring] = np.maximum(f[occurring], 1)
    diff = total_slots - int(f.sum())
    # Largest first, ties by symbol: a deterministic order for absorbing the rounding.
    order = np.lexsort((np.arange(f.size), -f))
    if diff > 0:
        f[order[0]] += diff
    while diff < 0:
        # Take an equal share from each frequency still above 1 (keeping it >= 1), largest
        # first, until the excess is gone: one slot each while the excess is below their number.
        cand = order[f[order] > 1]
        dec = np.minimum(f[cand] - 1, max(1, -diff // cand.size))
        cum = np.cumsum(dec)
        k = int(np.searchsorted(cum, -diff))
        if k < dec.size:
            dec[k] -= cum[k] + diff
            dec[k + 1:] = 0
        f[cand] -= dec
        diff += int(dec.sum())
    return f


def table_cost_bits(counts: np.ndarray, freq: np.ndarray, precision: int) -> float:
    """Ideal coded size in bits of symbols with these counts under a table (no overhead)."""
    nz = counts > 0
    return float(np.sum(counts[nz] * (precision - np.log2(freq[nz]))))


def choose_precision(counts: np.ndarray) -> int:
    """The precision with the smallest estimated payload (the table's size is the same for
    every P, so only the symbols' cost differs): the least P >= 12 that fits the occurring
    symbols, raised only where that saves at least one bit per hundred symbols (a small P
    keeps a decoder's slot table small: 2^P entries)."""
    n_occ = int(np.count_nonzero(counts))
    lo = max(DEFAULT_PRECISION, (max(n_occ, 1) - 1).bit_length())
    if lo > MAX_PRECISION:
        raise ValueError(f"{n_occ} distinct symbols exceed table mode's {1 << MAX_PRECISION} slots")
    best, best_cost = lo, table_cost_bits(counts, quantize_frequencies(counts, lo), lo)
    n = int(counts.sum())
    for p in range(lo + 1, MAX_PRECISION + 1):
        cost = table_cost_bits(counts, quantize_frequencies(counts, p), p)
        if cost < best_cost - n / 100:
            best, best_cost = p, cost
    return best


def _cumulative(freq):
    cum = np.zeros(freq.size, np.int64)
    np.cumsum(freq[:-1], out=cum[1:])
    return cum


def _slot_table(freq):
    """The symbol owning each of the 2^P slots (zero-frequency symbols own none)."""
    return np.repeat(np.arange(freq.size, dtype=np.uint16), freq)


# ---- uniform mode: bounds -------------------------------------------------------------------


@dataclass
class UniformPlan:
    """Per-bound operation descriptors (4.3.3) and the per-symbol bound index."""

    nops: np.ndarray
    low: np.ndarray
    ntop: np.ndarray
    topk: np.ndarray
    nm1: np.ndarray  # (n_bounds, limbs) uint64
    index: np.ndarray  # (count,) uint8/uint16/int64


def _to_limbs(v: int, limbs: int) -> np.ndarray:
    return np.array([(v >> (64 * i)) & ((1 << 64) - 1) for i in range(limbs)], np.uint64)


def symbol_operations(N: int) -> tuple:
    """(number of operations, s low bits, n_top, log2 n_top or -1) of a symbol bounded by N."""
    b = (N - 1).bit_length()
    if b == 0:
        return 0, 0, 0, -1
    s = max(0, b - 8)
    ntop = ((N - 1) >> s) + 1
    topk = ntop.bit_length() - 1 if ntop & (ntop - 1) == 0 else -1
    return 1 + -(-s // 16), s, ntop, topk


def uniform_plan(spec) -> UniformPlan:
    limbs = bits.n_limbs(spec.width)
    if spec.bounds is None:
        values, index = (1 << spec.width,), None
    else:
        values, index = spec.bounds.values, spec.bounds.index
    for v in values:
        if not 1 <= v <= 1 << spec.width:
            raise ValueError(f"stream {spec.name!r}: bound {v} outside 1..2^{spec.width}")
    ops = [symbol_operations(v) for v in values]
    if index is None:
        index = np.zeros(spec.count, np.uint8)
    else:
        index = np.ascontiguousarray(index)
        if index.shape != (spec.count,):
            raise ValueError(f"stream {spec.name!r}: bound index of shape {index.shape}, expected ({spec.count},)")
        if index.size and int(index.max()) >= len(values):
            raise ValueError(f"stream {spec.name!r}: bound index refers past its {len(values)} values")
    return UniformPlan(
        nops=np.array([o[0] for o in ops], np.int64),
        low=np.array([o[1] for o in ops], np.int64),
        ntop=np.array([o[2] for o in ops], np.int64),
        topk=np.array([o[3] for o in ops], np.int64),
        nm1=np.stack([_to_limbs(v - 1, limbs) for v in values]),
        index=index,
    )


# ---- symbols <-> arrays ---------------------------------------------------------------------


def _as_limb_rows(symbols, width: int) -> np.ndarray:
    """Symbols as (count, n_limbs(width)) uint64 rows; ValueError if one does not fit."""
    sym = np.asarray(symbols)
    limbs = bits.n_limbs(width)
    if sym.ndim == 1:
        if sym.size and sym.dtype.kind == "i" and int(sym.min()) < 0:
            raise ValueError("negative symbol")
        rows = np.zeros((sym.shape[0], limbs), np.uint64)
        rows[:, 0] = sym.astype(np.uint64)
    else:
        rows = np.zeros((sym.shape[0], limbs), np.uint64)
        k = min(limbs, sym.shape[1])
        if sym.shape[1] > limbs and np.any(sym[:, limbs:]):
            raise ValueError(f"symbol does not fit in {width} bits")
        rows[:, :k] = sym[:, :k]
    top = width - 64 * (limbs - 1)
    if top < 64 and rows.size and np.any(rows[:, -1] >> np.uint64(top)):
        raise ValueError(f"symbol does not fit in {width} bits")
    return rows


def _from_limb_rows(rows: np.ndarray, width: int) -> np.ndarray:
    if width > 64:
        return rows
    return rows[:, 0].astype(output_dtype(width))


def _small_symbols(symbols, width: int) -> np.ndarray:
    """Table-mode symbols as a 1-D int64 array (each < 65536)."""
    sym = np.asarray(symbols)
    if sym.ndim == 2:
        if sym.shape[1] > 1 and np.any(sym[:, 1:]):
            raise ValueError("table mode codes symbols below 65536 only")
        sym = sym[:, 0]
    sym = sym.astype(np.int64)
    if sym.size and (int(sym.min()) < 0 or int(sym.max()) >= min(1 << width, MAX_ALPHABET)):
        raise ValueError(f"symbol outside table mode's range for width {width}")
    return sym


# ---- the coding -----------------------------------------------------------------------------


_ERRORS = {
    K.ERR_INITIAL_STATE: "chunk {c}: lane {d}'s initial state is below 2^16",
    K.ERR_REFILL_PAST_END: "chunk {c}: symbol {d} refills past the end of the chunk's words",
    K.ERR_FINAL_STATE: "chunk {c}: lane {d} is not back at state 2^16 after the chunk's last symbol",
    K.ERR_WORDS_LEFT: "chunk {c}: {d} words left over after the chunk's last symbol",
    K.ERR_SYMBOL_BOUND: "chunk {c}: symbol {d} is at or above its bound",
}


def _raise_kernel_error(err, spec):
    if err[0] != K.ERR_NONE:
        msg = _ERRORS[int(err[0])].format(c=int(err[1]), d=int(err[2]))
        raise PayloadCorrupt(f"rans payload of stream {spec.name!r}: {msg}")


class RansCoding:
    """Coding id 1: interleaved rANS in table or uniform mode (section 4.3)."""

    id = 1
    name = "rans"
    since_minor = 1

    @staticmethod
    def encode(symbols, spec, mode: str = "table", precision: int = DEFAULT_PRECISION,
               chunk_symbols: int = DEFAULT_CHUNK_SYMBOLS) -> np.ndarray:
        """The payload of `symbols` (the stream `spec`) in `mode`. Table mode: precision
        None picks one (choose_precision); the alphabet is the largest symbol + 1.
        ValueError if the symbols do not fit the mode (table: below 65536 and at most 2^P
        distinct; uniform: each below its bound)."""
        if mode not in MODES:
            raise ValueError(f"rans mode must be 'table' or 'uniform', got {mode!r}")
        S = int(chunk_symbols)
        if not 1 <= S < 1 << 32:
            raise ValueError(f"chunk_symbols {S} outside 1..2^32-1")
        count = spec.count
        if len(symbols) != count:
            raise ValueError(f"stream {spec.name!r}: {len(symbols)} symbols, expected {count}")
        C = -(-count // S)
        chunk_end = np.zeros(C, np.uint64)
        if mode == "table":
            sym = _small_symbols(symbols, spec.width)
            A = int(sym.max()) + 1 if count else 1
            counts = np.bincount(sym, minlength=A).astype(np.int64)
            P = choose_precision(counts) if precision is None else int(precision)
            if not 1 <= P <= MAX_PRECISION:
                raise ValueError(f"precision {P} outside 1..{MAX_PRECISION}")
            freq = quantize_frequencies(counts, P)
            words = np.zeros(C * STATE_WORDS + count, np.uint16)
            n = K.encode_table(sym, count, S, freq, _cumulative(freq), P, words, chunk_end) if count else 0
            head = build_rans_header(MODE_TABLE, P, S, C, freq, chunk_end)
        else:
            plan = uniform_plan(spec)
            rows = _as_limb_rows(symbols, spec.width)
            bad = K.check_uniform_symbols(rows, plan.index, plan.nm1) if count else -1
            if bad >= 0:
                raise ValueError(f"stream {spec.name!r}: symbol {bad} is at or above its bound")
            words = np.zeros(C * STATE_WORDS + count * int(plan.nops.max()), np.uint16)
            n = (K.encode_uniform(rows, plan.index, count, S, plan.nops, plan.low, plan.ntop, plan.topk,
                                  words, chunk_end) if count else 0)
            head = build_rans_header(MODE_UNIFORM, 0, S, C, None, chunk_end)
        out = np.empty(len(head) + 2 * n, np.uint8)
        out[:len(head)] = np.frombuffer(head, np.uint8)
        out[len(head):] = words[:n].astype("<u2").view(np.uint8)
        return out

    @staticmethod
    def decode(buf, spec) -> np.ndarray:
        """Every symbol of the stream; PayloadCorrupt on any rejection of section 4.3."""
        buf = _as_bytes(buf)
        head = parse_rans_header(buf, spec)
        return _decode_chunks(buf, spec, head, 0, head.chunk_count)

    @staticmethod
    def decode_chunks(buf, spec, first_chunk: int, n_chunks: int) -> np.ndarray:
        """The symbols of chunks first_chunk .. first_chunk + n_chunks - 1 (the header is
        checked whole; only these chunks' words are decoded)."""
        buf = _as_bytes(buf)
        head = parse_rans_header(buf, spec)
        if first_chunk < 0 or n_chunks < 0 or first_chunk + n_chunks > head.chunk_count:
            raise ValueError(f"chunks {first_chunk}..{first_chunk + n_chunks - 1} outside 0..{head.chunk_count - 1}")
        return _decode_chunks(buf, spec, head, first_chunk, n_chunks)

    @staticmethod
    def header(buf, spec) -> RansHeader:
        return parse_rans_header(_as_bytes(buf), spec)


def _as_bytes(buf) -> np.ndarray:
    return buf if isinstance(buf, np.ndarray) else np.frombuffer(buf, np.uint8)


def _decode_chunks(buf, spec, head: RansHeader, first_chunk: int, n_chunks: int) -> np.ndarray:
    lo, hi = head.chunk_symbol_range(first_chunk, n_chunks, spec.count)
    n_sym = max(0, hi - lo)
    # A copy: aligned for the kernels, and little-endian words whatever the host.
    words = buf[head.data_offset:].copy().view("<u2").astype(np.uint16, copy=False)
    err = np.zeros(3, np.int64)
    if head.mode == MODE_TABLE:
        freq = head.freq
        out = np.empty(n_sym, np.uint16)
        if n_chunks:
            K.decode_table(words, head.chunk_end, spec.count, head.chunk_symbols, first_chunk, n_chunks, freq,
                           _cumulative(freq), _slot_table(freq), head.precision, out, err)
        _raise_kernel_error(err, spec)
        if spec.width > 64:
            rows = np.zeros((n_sym, bits.n_limbs(spec.width)), np.uint64)
            rows[:, 0] = out
            return rows
        return out.astype(output_dtype(spec.width), copy=False)
    try:
        plan = uniform_plan(spec)
    except ValueError as exc:  # bounds computed from earlier streams that are themselves impossible
        raise PayloadCorrupt(f"rans payload of stream {spec.name!r}: {exc}") from None
    out = np.zeros((n_sym, bits.n_limbs(spec.width)), np.uint64)
    if n_chunks:
        K.decode_uniform(words, head.chunk_end, spec.count, head.chunk_symbols, first_chunk, n_chunks, plan.index,
                         plan.nops, plan.low, plan.ntop, plan.topk, plan.nm1, out, err)
    _raise_kernel_error(err, spec)
    return _from_limb_rows(out, spec.width)
