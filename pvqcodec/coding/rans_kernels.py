"""Numba loops of the rans coding (spec coding-rans.md, sections 4.3.2 to 4.3.5).

The one place in Python for the coder's arithmetic. Each kernel walks chunks in
the normative operation order (4.3.4): steps of 32 symbols, sub-steps, lanes;
the encoders walk the same order backwards (4.3.5). Lane states are int64 holding
values in [2^16, 2^32); words are uint16.

Uniform mode works on symbols as rows of uint64 limbs (limb 0 least significant)
and on per-bound descriptors computed in rans.py:
  nops[b]  operations per symbol (0, 1, or 1 + ceil(s / 16))
  low[b]   s, the number of low bits coded by raw pieces (0 when b <= 8)
  ntop[b]  n of the first operation (even(n), or raw(topk) when n = 2^topk)
  topk[b]  log2 ntop when ntop is a power of two, else -1
  nm1[b]   N - 1 as limbs: a decoded symbol above it is corrupt

Decoders return an error triple (code, chunk, detail); code 0 means success.
"""

import numba
import numpy as np

L_BOUND = 65536  # lower end of a lane state between operations (2^16)

ERR_NONE = 0
ERR_INITIAL_STATE = 1  # detail: lane
ERR_REFILL_PAST_END = 2  # detail: symbol index within the chunk
ERR_FINAL_STATE = 3  # detail: lane
ERR_WORDS_LEFT = 4  # detail: number of words left over
ERR_SYMBOL_BOUND = 5  # detail: symbol index within the stream


@numba.njit(cache=True, inline="always")
def _get_bits(sym, row, pos, k):
    """Bits pos .. pos+k-1 (k <= 16) of a limb-row symbol."""
    limb = pos >> 6
    off = pos & 63
    nl = sym.shape[1]
    v = np.uint64(0)
    if limb < nl:
        v = sym[row, limb] >> np.uint64(off)
        if off + k > 64 and limb + 1 < nl:
            v |= sym[row, limb + 1] << np.uint64(64 - off)
    return np.int64(v & np.uint64((1 << k) - 1))


@numba.njit(cache=True, inline="always")
def _set_bits(sym, row, pos, v):
    limb = pos >> 6
    off = pos & 63
    sym[row, limb] |= np.uint64(v) << np.uint64(off)
    if off > 48 and limb + 1 < sym.shape[1]:  # a top value of up to 8 bits may straddle limbs
        sym[row, limb + 1] |= np.uint64(v) >> np.uint64(64 - off)


@numba.njit(cache=True)
def _above(sym, row, nm1, b):
    """True if symbol `row` is greater than nm1[b] (that is, >= its bound)."""
    for l in range(sym.shape[1] - 1, -1, -1):
        a = sym[row, l]
        m = nm1[b, l]
        if a != m:
            return a > m
    return False


@numba.njit(cache=True, inline="always")
def _encode_op(x, f, c, p, scratch, e):
    """Section 4.3.5: push value (f, c) of an operation with total 2^p onto state x.
    Returns (x, e): the new state and the new number of emitted words."""
    if x >= f << (32 - p):
        scratch[e] = np.uint16(x & 0xFFFF)
        e += 1
        x >>= 16
    x = ((x // f) << p) + (x % f) + c
    return x, e


@numba.njit(cache=True)
def _flush_chunk(states, scratch, e, out, pos):
    """Chunk layout (4.3.1): the 32 initial states as word pairs, then the word stream
    (the emitted words reversed). Returns the new end position in words."""
    for l in range(32):
        out[pos + 2 * l] = np.uint16(states[l] & 0xFFFF)
        out[pos + 2 * l + 1] = np.uint16(states[l] >> 16)
    pos += 64
    for k in range(e):
        out[pos + k] = scratch[e - 1 - k]
    return pos + e


# ---- table mode ---------------------------------------------------------------------------


@numba.njit(cache=True)
def encode_table(sym, count, S, freq, cum, P, out, chunk_end):
    """Table mode: one table operation per symbol. Returns the number of words written."""
    C = chunk_end.size
    scratch = np.empty(min(S, count), np.uint16)
    states = np.empty(32, np.int64)
    pos = 0
    for j in range(C):
        first = j * S
        n = min(S, count - first)
        states[:] = L_BOUND
        e = 0
        # Reverse of the decode order: with one operation per symbol that is simply i descending.
        for i in range(n - 1, -1, -1):
            s = np.int64(sym[first + i])
            l = i & 31
            states[l], e = _encode_op(states[l], freq[s], cum[s], P, scratch, e)
        pos = _flush_chunk(states, scratch, e, out, pos)
        chunk_end[j] = pos
    return pos


@numba.njit(cache=True)
def _initial_states(words, start, states, err, j):
    for l in range(32):
        x = np.int64(words[start + 2 * l]) | (np.int64(words[start + 2 * l + 1]) << 16)
        if x < L_BOUND:
            err[0] = ERR_INITIAL_STATE
            err[1] = j
            err[2] = l
            return False
        states[l] = x
    return True


@numba.njit(cache=True)
def _open_chunk(words, chunk_end, j, count, S, first_chunk, states, err):
    """Chunk j (4.3.1): its 32 initial states read into `states` (False on a bad state,
    err set), the position of its first refill word, its end, its first symbol, its symbol
    count, and where its symbols go in an output that starts at chunk first_chunk."""
    start = 0 if j == 0 else np.int64(chunk_end[j - 1])
    end = np.int64(chunk_end[j])
    first = j * S
    n = min(S, count - first)
    ok = _initial_states(words, start, states, err, j)
    return ok, start + 64, end, first, n, first - first_chunk * S


@numba.njit(cache=True)
def _final_states(states, pos, end, err, j):
    for l in range(32):
        if states[l] != L_BOUND:
            err[0] = ERR_FINAL_STATE
            err[1] = j
            err[2] = l
            return False
    if pos != end:
        err[0] = ERR_WORDS_LEFT
        err[1] = j
        err[2] = end - pos
        return False
    return True


@numba.njit(cache=True)
def decode_table(words, chunk_end, count, S, first_chunk, n_chunks, freq, cum, lut, P, out, err):
    """Table mode (4.3.3) over chunks first_chunk .. first_chunk + n_chunks - 1; out holds
    their symbols from the first one's first symbol."""
    mask = (1 << P) - 1
    states = np.empty(32, np.int64)
    for j in range(first_chunk, first_chunk + n_chunks):
        ok, pos, end, first, n, base = _open_chunk(words, chunk_end, j, count, S, first_chunk, states, err)
        if not ok:
            return
        for i in range(n):
            l = i & 31
            x = states[l]
            slot = x & mask
            s = lut[slot]
            x = freq[s] * (x >> P) + slot - cum[s]
            if x < L_BOUND:
                if pos >= end:
                    err[0] = ERR_REFILL_PAST_END
                    err[1] = j
                    err[2] = i
                    return
                x = (x << 16) | np.int64(words[pos])
                pos += 1
            states[l] = x
            out[base + i] = s
        if not _final_states(states, pos, end, err, j):
            return


# ---- uniform mode -------------------------------------------------------------------------


@numba.njit(cache=True, inline="always")
def _even_freq(v, n):
    """even(n) (4.3.2): value v's frequency f and start c."""
    q = 65536 // n
    r = 65536 - q * n
    return (q + 1 if v < r else q), v * q + min(v, r)


@numba.njit(cache=True, inline="always")
def _even_value(slot, n):
    """even(n) (4.3.2): the value of a slot and its (f, c)."""
    q = 65536 // n
    r = 65536 - q * n
    v = slot // (q + 1) if slot < r * (q + 1) else r + (slot - r * (q + 1)) // q
    f, c = _even_freq(v, n)
    return v, f, c


@numba.njit(cache=True)
def check_uniform_symbols(sym, bidx, nm1):
    """Index of the first symbol at or above its bound, or -1."""
    for i in range(sym.shape[0]):
        if _above(sym, i, nm1, np.int64(bidx[i])):
            return i
    return -1


@numba.njit(cache=True)
def encode_uniform(sym, bidx, count, S, nops, low, ntop, topk, out, chunk_end):
    """Uniform mode: each symbol's operations (4.3.3) in the reverse of 4.3.4's order."""
    C = chunk_end.size
    maxops = 0
    for b in range(nops.size):
        maxops = max(maxops, nops[b])
    scratch = np.empty(max(1, min(S, count) * maxops), np.uint16)
    states = np.empty(32, np.int64)
    pos = 0
    for j in range(C):
        first = j * S
        n = min(S, count - first)
        states[:] = L_BOUND
        e = 0
        for t in range((n + 31) // 32 - 1, -1, -1):
            lanes = min(32, n - 32 * t)
            mo = 0
            for l in range(lanes):
                mo = max(mo, nops[bidx[first + 32 * t + l]])
            for u in range(mo - 1, -1, -1):
                for l in range(lanes - 1, -1, -1):
                    row = first + 32 * t + l
                    b = bidx[row]
                    if u >= nops[b]:
                        continue
                    s = low[b]
                    if u == 0:
                        v = _get_bits(sym, row, s, 8)
                        k = topk[b]
                        if k >= 0:
                            p, f, c = k, 1, v
                        else:
                            p = 16
                            f, c = _even_freq(v, ntop[b])
                    else:
                        piece = nops[b] - 1 - u
                        k = min(16, s - 16 * piece)
                        v = _get_bits(sym, row, 16 * piece, k)
                        p, f, c = k, 1, v
                    states[l], e = _encode_op(states[l], f, c, p, scratch, e)
        pos = _flush_chunk(states, scratch, e, out, pos)
        chunk_end[j] = pos
    return pos


@numba.njit(cache=True)
def decode_uniform(words, chunk_end, count, S, first_chunk, n_chunks, bidx, nops, low, ntop, topk, nm1, out, err):
    """Uniform mode (4.3.3, 4.3.4) over a run of chunks; out (zeroed limb rows) receives
    their symbols. bidx is indexed by stream position."""
    states = np.empty(32, np.int64)
    for j in range(first_chunk, first_chunk + n_chunks):
        ok, pos, end, first, n, base = _open_chunk(words, chunk_end, j, count, S, first_chunk, states, err)
        if not ok:
            return
        for t in range((n + 31) // 32):
            lanes = min(32, n - 32 * t)
            mo = 0
            for l in range(lanes):
                mo = max(mo, nops[bidx[first + 32 * t + l]])
            for u in range(mo):
                for l in range(lanes):
                    i = 32 * t + l
                    b = bidx[first + i]
                    if u >= nops[b]:
                        continue
                    x = states[l]
                    s = low[b]
                    if u == 0:
                        k = topk[b]
                        if k >= 0:  # raw(k): f = 1, c = v
                            v = x & ((1 << k) - 1)
                            x = x >> k
                        else:
                            slot = x & 0xFFFF
                            v, f, c = _even_value(slot, ntop[b])
                            x = f * (x >> 16) + slot - c
                        _set_bits(out, base + i, s, v)
                    else:
                        piece = nops[b] - 1 - u
                        k = min(16, s - 16 * piece)
                        v = x & ((1 << k) - 1)
                        x = x >> k
                        _set_bits(out, base + i, 16 * piece, v)
                    if x < L_BOUND:
                        if pos >= end:
                            err[0] = ERR_REFILL_PAST_END
                            err[1] = j
                            err[2] = i
                            return
                        x = (x << 16) | np.int64(words[pos])
                        pos += 1
                    states[l] = x
            for l in range(lanes):
                row = base + 32 * t + l
                if _above(out, row, nm1, np.int64(bidx[first + 32 * t + l])):
                    err[0] = ERR_SYMBOL_BOUND
                    err[1] = j
                    err[2] = first + 32 * t + l
                    return
        if not _final_states(states, pos, end, err, j):
            return
