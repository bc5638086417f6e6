"""A straightforward pure-Python decoder of the rans coding, written from the text of
spec/coding-rans.md alone (no pvqcodec code), for cross-checking the Numba decoder.

It works on Python integers throughout: symbols come back as a list of ints."""


class Reject(Exception):
    """The payload breaks a rule of section 4.3 (payload_corrupt)."""


def _le(b, off, n):
    if off + n > len(b):
        raise Reject("payload ends inside a field")
    return int.from_bytes(b[off:off + n], "little")


def ref_decode(payload: bytes, count: int, width: int, bounds=None) -> list:
    """bounds: None (each symbol bounded by 2^width) or a list of `count` ints."""
    b = bytes(payload)
    # 4.3.1: the header fields, checked in table order.
    mode = _le(b, 0, 1)
    P = _le(b, 1, 1)
    reserved = _le(b, 2, 2)
    S = _le(b, 4, 4)
    C = _le(b, 8, 4)
    A = _le(b, 12, 4)
    if mode not in (0, 1):
        raise Reject("mode")
    if mode == 0 and not 1 <= P <= 15 or mode == 1 and P != 0:
        raise Reject("precision")
    if reserved != 0:
        raise Reject("reserved")
    if S < 1:
        raise Reject("chunk_symbols")
    if C != (count + S - 1) // S:
        raise Reject("chunk_count")
    if mode == 0 and not 1 <= A <= min(2 ** width, 65536) or mode == 1 and A != 0:
        raise Reject("alphabet")
    freq = [_le(b, 16 + 2 * s, 2) for s in range(A)]
    if mode == 0:
        if any(f > 2 ** P for f in freq) or sum(freq) != 2 ** P:
            raise Reject("freq")
    T = 16 + 2 * A
    T += (-T) % 8
    if len(b) < T or any(b[16 + 2 * A:T]):
        raise Reject("padding")
    ends = [_le(b, T + 8 * j, 8) for j in range(C)]
    prev = 0
    for e in ends:
        if e < prev or e - prev < 64:
            raise Reject("chunk_end")
        prev = e
    if len(b) != T + 8 * C + (2 * ends[-1] if C else 0):
        raise Reject("length")
    data = T + 8 * C

    out = []
    for j in range(C):
        start = ends[j - 1] if j else 0
        w = [_le(b, data + 2 * k, 2) for k in range(start, ends[j])]
        x = [w[2 * l] + 65536 * w[2 * l + 1] for l in range(32)]
        if any(v < 2 ** 16 for v in x):
            raise Reject("initial state")
        stream = w[64:]
        nxt = 0
        n = min(S, count - j * S)
        syms = [0] * n

        def operation(l, p, value_of):
            # 4.3.2: decode one operation on lane l's state.
            nonlocal nxt
            slot = x[l] % 2 ** p
            v, f, c = value_of(slot)
            x[l] = f * (x[l] // 2 ** p) + slot - c
            if x[l] < 2 ** 16:
                if nxt >= len(stream):
                    raise Reject("refill past end")
                x[l] = x[l] * 65536 + stream[nxt]
                nxt += 1
            return v

        def table(slot):
            c = 0
            for v, f in enumerate(freq):
                if c <= slot < c + f:
                    return v, f, c
                c += f
            raise AssertionError("frequencies partition the slots")

        def raw(slot):
            return slot, 1, slot

        def even(n_):
            q, r = 65536 // n_, 65536 % n_

            def value(slot):
                v = slot // (q + 1) if slot < r * (q + 1) else r + (slot - r * (q + 1)) // q
                return v, (q + 1 if v < r else q), v * q + min(v, r)
            return value

        def ops_of(i):
            """The list of (p, value function, role) of symbol i (4.3.3)."""
            if mode == 0:
                return [(P, table, "table")]
            N = bounds[j * S + i] if bounds is not None else 2 ** width
            bb = (N - 1).bit_length()
            if bb == 0:
                return []
            if bb <= 8:
                return [(bb, raw, "all")] if N == 2 ** bb else [(16, even(N), "all")]
            s = bb - 8
            n_top = (N - 1) // 2 ** s + 1
            ops = [(8, raw, ("top", s)) if n_top == 256 else (16, even(n_top), ("top", s))]
            for piece in range((s + 15) // 16 - 1, -1, -1):
                k = min(16, s - 16 * piece)
                ops.append((k, raw, ("low", 16 * piece)))
            return ops

        # 4.3.4: steps, sub-steps, lanes.
        for t in range((n + 31) // 32):
            idx = [i for i in range(32 * t, min(32 * t + 32, n))]
            ops = {i: ops_of(i) for i in idx}
            for u in range(max(len(o) for o in ops.values())):
                for i in idx:
                    if u < len(ops[i]):
                        p, fn, role = ops[i][u]
                        v = operation(i % 32, p, fn)
                        if role in ("table", "all"):
                            syms[i] = v
                        elif role[0] == "top":
                            syms[i] += v * 2 ** role[1]
                        else:
                            syms[i] += v * 2 ** role[1]
        if mode == 1:
            for i in range(n):
                N = bounds[j * S + i] if bounds is not None else 2 ** width
                if syms[i] >= N:
                    raise Reject("symbol at or above its bound")
        if any(v != 2 ** 16 for v in x) or nxt != len(stream):
            raise Reject("final state or words left")
        out.extend(syms)
    return out
