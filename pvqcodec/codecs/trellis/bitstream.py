"""A tile's circular bit string and its trellis states (spec codecs/trellis.md, 6.3.3).

A tile of T = 256 weights is S = T / V trellis steps. Its bit string b holds
N = S * kV = T * k bits and is read as a circle (tail-biting). The state of step t
is the L-bit window starting at bit p = t * kV, read most significant bit first:

    s_t = sum over i in 0..L-1 of b[(p + i) mod N] << (L - 1 - i)

so s_{t+1} = ((s_t << kV) | next kV bits) mod 2^L: consecutive states overlap in
L - kV bits (the low bits of s_t are the high bits of s_{t+1}), and the last state
wraps around to the first bits of the string (so no bits are spent on a start or
end state). Equivalently b is the concatenation of the top kV bits of every
state, most significant first.

The string is stored as W = N / 32 = 8k words of 32 bits: bit i of b is bit
31 - (i mod 32) of word i div 32 (most significant bit first). A state is then a
funnel shift of two consecutive words (the second taken circularly):

    q = p div 32, o = p mod 32
    s_t = ((word[q] << 32 | word[(q + 1) mod W]) >> (64 - L - o)) mod 2^L

(o + L <= 47 < 64, so two words always suffice).
"""

import numpy as np


def states_to_words(states: np.ndarray, L: int, kv: int) -> np.ndarray:
    """(n, S) states of consistent tail-biting paths -> (n, S*kv/32) uint32 words.

    The bit string is the top kv bits of each state, most significant first."""
    states = np.asarray(states, np.uint32)
    n, S = states.shape
    nbits = S * kv
    if nbits % 32:
        raise ValueError(f"{S} steps of {kv} bits do not fill whole 32-bit words")
    bits = np.empty((n, S, kv), np.uint8)
    for i in range(kv):
        bits[:, :, i] = (states >> np.uint32(L - 1 - i)) & np.uint32(1)
    packed = np.packbits(bits.reshape(n, nbits), axis=1, bitorder="big")  # MSB of each byte first
    return packed.view(">u4").astype(np.uint32).reshape(n, nbits // 32)


def words_to_states(words: np.ndarray, L: int, kv: int) -> np.ndarray:
    """(n, W) uint32 words -> (n, S) uint32 states, S = 32 W / kv (spec 6.3.3, the funnel shift)."""
    words = np.asarray(words, np.uint32)
    n, W = words.shape
    S = 32 * W // kv
    p = np.arange(S, dtype=np.int64) * kv
    q, o = p >> 5, p & 31
    hi = words[:, q].astype(np.uint64)
    lo = words[:, (q + 1) % W].astype(np.uint64)
    both = (hi << np.uint64(32)) | lo
    shift = (64 - L - o).astype(np.uint64)
    return ((both >> shift[None, :]) & np.uint64((1 << L) - 1)).astype(np.uint32)


def is_tail_biting(states: np.ndarray, L: int, kv: int) -> bool:
    """True if every state's low L - kv bits are the next state's high bits, circularly."""
    s = np.asarray(states, np.int64)
    low = s & ((1 << (L - kv)) - 1)
    high = np.roll(s, -1, axis=-1) >> kv
    return bool(np.all(low == high))
