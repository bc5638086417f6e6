// Spec 4.3 (coding-rans.md): the rans payload coding, decoded on the GPU into the raw coding's
// packed layout (4.2, LSB-first at the stream's width) and, optionally, a uint8/uint16 symbol array.
//
// One warp per chunk (4.3.1: chunks decode independently), lane l = coder lane l. The host parses
// and checks the header (4.3.1, pvqcodec/coding/rans.py parse_rans_header) and builds the decode
// table; this file runs the coder (4.3.2), the symbols of table and uniform mode (4.3.3) in the
// operation order of 4.3.4, and the final-state and exhaustion checks. Uniform mode wider than 16
// bits or with per-symbol bounds runs rans_uniform_wide_kernel (bound descriptors, packed output). A refilling lane finds its
// word by a ballot and a population count of the lanes below it, so one sub-step's refills read
// consecutive words in lane order, as 4.3.4 requires.
//
// A warp runs its chunk's steps one after another, in order, so the time of a chunk is its number
// of steps times the latency of one step: the loop keeps only the state's own chain (table lookup,
// state update, ballot, shuffle) on that path. The word stream is staged in shared memory (a ring
// of 4 segments of 256 words per warp, filled by cp.async two segments ahead) and the next 32 words
// sit in registers, one per lane, so a refill is one shuffle. Exhaustion is checked once, at the
// chunk's end: the read position only grows, so some refill ran past the chunk's words iff the
// final position is past them (the words read beyond are never used for output that is kept).
// Symbols are staged in shared memory and written every 32 steps: 16-byte stores of the symbol
// array and whole 32-bit words of the packed layout.
//
// TABLE_SPEC (opt-in; table mode, P <= 12, A <= 256) tries to take the table lookup off that path:
// a refilled state's slot is the new word's low P bits (x = x' 2^16 + word, P <= 16), so the table
// entry of every staged word is computed when its ring segment arrives (a second ring), and a step
// fetches the next step's entry by the same shuffle that fetches its word; a lane that does not
// refill uses the entry of x' & mask. Measured 11-15 % slower than TABLE_PACKED on the H100
// (bench/RESULTS.md): nvcc turns the select into a load predicated on "no refill" and issues it
// after the shuffles, back on the chain.
//
// Errors (bits of err[0]; the host raises PayloadCorrupt): 1 an initial state below 2^16, 2 a refill
// past the chunk's words, 4 a final state other than 2^16, 8 words left over, 16 a uniform-mode
// symbol at or above its bound.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <cstdint>

namespace {

constexpr unsigned FULL = 0xffffffffu;
constexpr int SEG = 256;         // words (uint16) per ring segment: 16 bytes per lane
constexpr int RING = 4 * SEG;    // words per warp
constexpr int WARPS = 4;         // warps (chunks) per block
constexpr int BLOCK = 32;        // steps per output flush (1024 symbols)
constexpr unsigned L = 65536u;   // lower end of a lane state (2^16)

enum : int { ERR_STATE = 1, ERR_EXHAUSTED = 2, ERR_FINAL = 4, ERR_LEFT = 8, ERR_BOUND = 16 };
enum : int { TABLE_PACKED = 0, TABLE_WIDE = 1, UNIFORM = 2, TABLE_SPEC = 3 };

struct Chunks {
    const uint8_t* payload;  // 16-byte aligned
    long long length;        // payload bytes
    long long table_off;     // T: byte offset of chunk_end (u64, 8-aligned)
    long long data_hw;       // (T + 8C) / 2: the chunk data, in words from the payload's start
    long long count;         // symbols of the stream
    long long S;             // chunk_symbols
    long long C;             // chunk_count
};

// Uniform mode (4.3.3) for one bound N <= 2^16: operation 0 is even(n0) (k0 < 0) or raw(k0);
// operation 1, if s > 0, is raw(s). For even(n): q = 65536 div n, r = 65536 mod n, and the
// divisions of a slot (< 2^16) by q and q + 1 (both >= 256) are exact as umulhi(slot, m) with
// m = floor(2^32 / d) + 1 (the error n / 2^32 * (m - 2^32 / d) stays below 1/d).
struct Uniform {
    unsigned N;
    int nops;   // 0, 1 or 2
    int k0;     // raw(k0) if >= 0, else even(n0)
    int s;      // low bits of operation 1
    unsigned q, r, thr, mq, mq1;  // even(n0): thr = r (q + 1)
};

struct Output {
    uint8_t* sym8;      // or null
    uint16_t* sym16;    // or null
    uint32_t* packed;   // raw layout as 32-bit words (zeroed beforehand if !aligned), or null
    int width;          // 0..16
    bool aligned;       // every chunk starts on a 32-bit word of the packed layout
};

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int bytes) {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// A chunk's word stream as one warp reads it (4.3.1): `pos` counts words from g0, the chunk's
// first stream word rounded down to 16 bytes; segment k of the ring holds words [256 k, 256 k + 256).
// Invariant: words [0, limit) that are still needed are in the ring, limit = 256 (ready + 1).
struct WordRing {
    uint16_t* ring;
    uint32_t* ering;            // TABLE_SPEC: table entry of each ring word's slot, else null
    const uint32_t* stab;
    unsigned mask;
    const uint8_t* payload;
    long long length, g0;
    unsigned pos, end, limit;  // next word, end of the chunk's words, end of the ready segments
    int ready;                 // highest complete segment

    __device__ __forceinline__ void issue(int seg, int lane) {
        const long long byte = 2 * (g0 + (long long)seg * SEG) + 16 * lane;
        const long long rem = length - byte;
        const int n = rem >= 16 ? 16 : rem > 0 ? (int)rem : 0;  // zero-fill past the payload
        cp_async16(ring + (seg & 3) * SEG + 8 * lane, n ? payload + byte : payload, n);
        cp_async_commit();
    }
    __device__ __forceinline__ void annotate(int seg, int lane) {
        if (!ering) return;
        const int b = (seg & 3) * SEG;
        for (int k = lane; k < SEG; k += 32) ering[b + k] = stab[ring[b + k] & mask];
        __syncwarp();
    }
    __device__ __forceinline__ void start(int lane) {
        for (int k = 0; k < 4; ++k) issue(k, lane);
        cp_async_wait<2>();
        __syncwarp();
        ready = 1;
        limit = 2 * SEG;
        annotate(0, lane);
        annotate(1, lane);
    }
    // Words [pos, pos + n) in the ring (n <= 128): when short, one more segment made ready and the
    // one after next issued into the slot of segment ready - 1, which pos > limit - n has left behind.
    template <unsigned N>
    __device__ __forceinline__ void ensure(int lane) {
        if (pos + N > limit) {
            __syncwarp();
            issue(ready + 3, lane);
            cp_async_wait<2>();
            __syncwarp();
            ++ready;
            limit += SEG;
            annotate(ready, lane);
        }
    }
    __device__ __forceinline__ unsigned word(int lane) const { return ring[(pos + lane) & (RING - 1)]; }
};

// 4.3.2: the refill after an operation. Lanes with x < 2^16 (and a live symbol) take the next words
// in lane order: the word of rank k is in lane k's window register `nw` (word pos + k).
template <bool LAST>
__device__ __forceinline__ void refill(unsigned& x, bool live, unsigned& nw, WordRing& w, unsigned lt, int lane) {
    const bool r = (!LAST || live) && x < L;
    const unsigned bal = __ballot_sync(FULL, r);
    const unsigned wv = __shfl_sync(FULL, nw, __popc(bal & lt));
    x = r ? (x << 16) | wv : x;
    w.pos += __popc(bal);
    nw = w.word(lane);
}

// One operation of total 2^16 even(n) (4.3.2): slot -> value v, x -> f (x div 2^16) + slot - c.
__device__ __forceinline__ unsigned op_even(unsigned& x, const Uniform& u) {
    const unsigned slot = x & 0xffffu;
    const bool lo = slot < u.thr;
    const unsigned v = lo ? __umulhi(slot, u.mq1) : u.r + __umulhi(slot - u.thr, u.mq);
    const unsigned f = lo ? u.q + 1 : u.q;
    const unsigned c = lo ? v * (u.q + 1) : v * u.q + u.r;
    x = f * (x >> 16) + slot - c;
    return v;
}

// Table entries in shared memory: TABLE_PACKED one word per slot, symbol (8 bits) | f - 1 (12 bits)
// | slot - c (12 bits) for P <= 12 and A <= 256; TABLE_WIDE f - 1 (16 bits) | slot - c (16 bits) and
// the symbol in a uint16 table beside it. Per warp after them: the word ring, then the symbol stage.
template <int MODE>
__host__ __device__ constexpr int table_bytes(int P) {
    return MODE == UNIFORM ? 0 : MODE == TABLE_WIDE ? ((6 << P) + 15) & ~15 : ((4 << P) + 15) & ~15;
}
template <int MODE, typename ST>
__host__ __device__ constexpr int warp_bytes() {
    return RING * 2 + (MODE == TABLE_SPEC ? RING * 4 : 0) + BLOCK * 32 * (int)sizeof(ST);
}

// TABLE_SPEC's step: e is the table entry of x's slot; ne the entry of the window word nw.
template <bool LAST>
__device__ __forceinline__ unsigned step_spec(unsigned& x, unsigned& e, bool live, unsigned& nw, unsigned& ne,
                                              WordRing& w, unsigned lt, int lane, const uint32_t* stab, int P,
                                              unsigned mask) {
    w.ensure<64>(lane);
    unsigned xn = (((e >> 8) & 0xfffu) + 1u) * (x >> P) + (e >> 20);
    const unsigned sym = e & 0xffu;
    if (LAST) xn = live ? xn : x;
    const bool r = (!LAST || live) && xn < L;
    const unsigned es = stab[xn & mask];
    const unsigned bal = __ballot_sync(FULL, r);
    const unsigned rk = __popc(bal & lt);
    const unsigned wv = __shfl_sync(FULL, nw, rk);
    const unsigned ev = __shfl_sync(FULL, ne, rk);
    x = r ? (xn << 16) | wv : xn;
    e = r ? ev : es;
    w.pos += __popc(bal);
    const unsigned idx = (w.pos + lane) & (RING - 1);
    nw = w.ring[idx];
    ne = w.ering[idx];
    return (!LAST || live) ? sym : 0u;
}

// One step (4.3.4): the symbols 32 t + lane of every lane, as sub-steps of the mode's operations.
// Returns the lane's symbol (0 for a lane past the chunk's end); `bound` collects symbols >= N.
template <int MODE, bool LAST>
__device__ __forceinline__ unsigned step(unsigned& x, bool live, unsigned& nw, WordRing& w, unsigned lt, int lane,
                                         const uint32_t* stab, const uint16_t* ssym, int P, unsigned mask,
                                         const Uniform& un, bool& bound) {
    unsigned sym = 0;
    if (MODE == TABLE_PACKED) {
        const unsigned slot = x & mask;
        const unsigned e = stab[slot];
        w.ensure<64>(lane);
        const unsigned xn = (((e >> 8) & 0xfffu) + 1u) * (x >> P) + (e >> 20);
        x = (!LAST || live) ? xn : x;
        sym = e & 0xffu;
        refill<LAST>(x, live, nw, w, lt, lane);
    } else if (MODE == TABLE_WIDE) {
        const unsigned slot = x & mask;
        const unsigned e = stab[slot];
        sym = ssym[slot];
        w.ensure<64>(lane);
        const unsigned xn = ((e & 0xffffu) + 1u) * (x >> P) + (e >> 16);
        x = (!LAST || live) ? xn : x;
        refill<LAST>(x, live, nw, w, lt, lane);
    } else if (MODE == UNIFORM) {
        w.ensure<96>(lane);
        if (un.nops >= 1) {
            unsigned xn = x;
            if (un.k0 >= 0) { sym = xn & ((1u << un.k0) - 1u); xn >>= un.k0; }
            else sym = op_even(xn, un);
            x = (!LAST || live) ? xn : x;
            refill<LAST>(x, live, nw, w, lt, lane);
        }
        if (un.nops == 2) {
            const unsigned v = x & ((1u << un.s) - 1u);
            const unsigned xn = x >> un.s;
            x = (!LAST || live) ? xn : x;
            sym = (sym << un.s) | v;
            refill<LAST>(x, live, nw, w, lt, lane);
        }
        bound |= (!LAST || live) && sym >= un.N;
    }
    return (!LAST || live) ? sym : 0u;
}

// Write a block of nb staged symbols (stream positions i0 .. i0 + nb - 1) to the outputs. Staged
// entries past nb within the block's last step are 0, so whole packed words may read them.
template <typename ST>
__device__ __forceinline__ void flush(const Output& o, const ST* stage, long long i0, int nb, int lane) {
    __syncwarp();
    ST* so = sizeof(ST) == 1 ? (ST*)o.sym8 : (ST*)o.sym16;
    if (so) {
        ST* dst = so + i0;
        if (nb == BLOCK * 32 && ((reinterpret_cast<uintptr_t>(dst) & 15) == 0)) {
            const uint4* s4 = reinterpret_cast<const uint4*>(stage);
            uint4* d4 = reinterpret_cast<uint4*>(dst);
            for (int k = lane; k < BLOCK * 32 * (int)sizeof(ST) / 16; k += 32) d4[k] = s4[k];
        } else {
            for (int k = lane; k < nb; k += 32) dst[k] = stage[k];
        }
    }
    const int w = o.width;
    if (o.packed && w) {
        if (o.aligned) {
            const long long wb = (i0 * w) >> 5;  // i0 w is a multiple of 32
            const int nwords = (nb * w + 31) >> 5;
            for (int m = lane; m < nwords; m += 32) {
                unsigned acc = 0;
                if (sizeof(ST) == 1 && w == 4) {
                    const uint2 b = reinterpret_cast<const uint2*>(stage)[m];  // symbols 8m .. 8m + 7
                    const unsigned lo = b.x | (b.x >> 4), hi = b.y | (b.y >> 4);
                    acc = (lo & 0xffu) | ((lo >> 8) & 0xff00u) | ((hi & 0xffu) << 16) | ((hi << 8) & 0xff000000u);
                } else {
                    const int s1 = (32 * m + 31) / w;
                    for (int s = (32 * m) / w; s <= s1; ++s) {
                        const int bit = s * w - 32 * m;  // -w < bit < 32
                        const unsigned v = stage[s];
                        acc |= bit >= 0 ? v << bit : v >> -bit;
                    }
                }
                o.packed[wb + m] = acc;
            }
        } else {
            for (int k = lane; k < nb; k += 32) {
                const long long bit = (i0 + k) * w;
                const int sh = (int)(bit & 31);
                const unsigned v = stage[k];
                atomicOr(o.packed + (bit >> 5), v << sh);
                if (sh + w > 32) atomicOr(o.packed + (bit >> 5) + 1, v >> (32 - sh));
            }
        }
    }
    __syncwarp();
}

// Chunk j's start (4.3.1): its first symbol and symbol count, lane's initial state x (w[2l] +
// 65536 w[2l+1], in [2^16, 2^32)), the word ring positioned at its first refill word and nw,
// lane's first word. Returns ERR_STATE where a lane's state is out of range (warp-uniform).
__device__ __forceinline__ int open_chunk(const Chunks& ck, long long j, WordRing& w, int lane, long long& first,
                                          int& n, unsigned& x, unsigned& nw) {
    const unsigned long long* chunk_end = reinterpret_cast<const unsigned long long*>(ck.payload + ck.table_off);
    const long long start = j ? (long long)chunk_end[j - 1] : 0;
    const long long stop = (long long)chunk_end[j];
    first = j * ck.S;
    n = (int)(ck.count - first < ck.S ? ck.count - first : ck.S);

    const uint16_t* w16 = reinterpret_cast<const uint16_t*>(ck.payload);
    const long long hw = ck.data_hw + start;
    x = (unsigned)w16[hw + 2 * lane] | ((unsigned)w16[hw + 2 * lane + 1] << 16);
    if (__any_sync(FULL, x < L)) return ERR_STATE;

    w.payload = ck.payload;
    w.length = ck.length;
    w.g0 = (hw + 64) & ~7LL;
    w.pos = (unsigned)(hw + 64 - w.g0);
    w.end = (unsigned)(ck.data_hw + stop - w.g0);
    w.start(lane);
    nw = w.word(lane);
    return 0;
}

// Chunk j (4.3.1, 4.3.4): returns 0 or error bits. The ring's copies are drained by the caller.
template <int MODE, typename ST>
__device__ __forceinline__ int decode_chunk(const Chunks& ck, long long j, const uint32_t* stab, const uint16_t* ssym,
                                            int P, const Uniform& un, const Output& o, WordRing& w, ST* stage,
                                            int lane) {
    long long first;
    int n;
    unsigned x, nw;
    if (open_chunk(ck, j, w, lane, first, n, x, nw)) return ERR_STATE;

    const unsigned mask = (1u << P) - 1u;
    const unsigned lt = (1u << lane) - 1u;
    const int steps = (n + 31) >> 5;
    bool bound = false;
    unsigned e_cur = 0, ne = 0;
    if (MODE == TABLE_SPEC) {
        e_cur = stab[x & mask];
        ne = w.ering[(w.pos + lane) & (RING - 1)];
    }
    for (int t = 0; t < steps - 1; ++t) {
        const unsigned sym = MODE == TABLE_SPEC
            ? step_spec<false>(x, e_cur, true, nw, ne, w, lt, lane, stab, P, mask)
            : step<MODE, false>(x, true, nw, w, lt, lane, stab, ssym, P, mask, un, bound);
        stage[((t & (BLOCK - 1)) << 5) + lane] = (ST)sym;
        if ((t & (BLOCK - 1)) == BLOCK - 1) flush<ST>(o, stage, first + 32LL * (t - (BLOCK - 1)), BLOCK * 32, lane);
    }
    if (steps) {
        const int t = steps - 1;
        const int nlive = n - 32 * t;
        const unsigned sym = MODE == TABLE_SPEC
            ? step_spec<true>(x, e_cur, lane < nlive, nw, ne, w, lt, lane, stab, P, mask)
            : step<MODE, true>(x, lane < nlive, nw, w, lt, lane, stab, ssym, P, mask, un, bound);
        stage[((t & (BLOCK - 1)) << 5) + lane] = (ST)sym;
        flush<ST>(o, stage, first + 32LL * (t & ~(BLOCK - 1)), 32 * (t & (BLOCK - 1)) + nlive, lane);
    }
    // 4.3.4: every state back at 2^16 and the word stream used up exactly.
    int e = __any_sync(FULL, x != L) ? ERR_FINAL : 0;
    if (w.pos > w.end) e |= ERR_EXHAUSTED;
    if (w.pos < w.end) e |= ERR_LEFT;
    if (__any_sync(FULL, bound)) e |= ERR_BOUND;
    return e;
}

template <int MODE, typename ST>
__global__ void __launch_bounds__(WARPS * 32)
rans_decode_kernel(Chunks ck, const uint32_t* __restrict__ tab, const uint16_t* __restrict__ tsym, int P,
                   Uniform un, Output o, int* __restrict__ err) {
    extern __shared__ __align__(16) unsigned char smem[];
    const int tab_n = MODE == UNIFORM ? 0 : 1 << P;
    uint32_t* stab = reinterpret_cast<uint32_t*>(smem);
    uint16_t* ssym = reinterpret_cast<uint16_t*>(smem + 4 * tab_n);
    for (int s = threadIdx.x; s < tab_n; s += blockDim.x) {
        stab[s] = tab[s];
        if (MODE == TABLE_WIDE) ssym[s] = tsym[s];
    }
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long long j = (long long)blockIdx.x * WARPS + warp;
    if (j >= ck.C) return;
    unsigned char* mine = smem + table_bytes<MODE>(P) + warp * warp_bytes<MODE, ST>();
    WordRing w;
    w.ring = reinterpret_cast<uint16_t*>(mine);
    w.ering = MODE == TABLE_SPEC ? reinterpret_cast<uint32_t*>(mine + RING * 2) : nullptr;
    w.stab = stab;
    w.mask = (1u << P) - 1u;
    ST* stage = reinterpret_cast<ST*>(mine + RING * 2 + (MODE == TABLE_SPEC ? RING * 4 : 0));
    const int e = decode_chunk<MODE, ST>(ck, j, stab, ssym, P, un, o, w, stage, lane);
    cp_async_wait<0>();
    if (e && lane == 0) atomicOr(err, e);
}

// Pack a uint8/uint16 symbol array into the raw layout (4.2): thread per 32-bit output word.
template <typename T>
__global__ void rans_pack_kernel(const T* __restrict__ sym, long long count, int w, uint32_t* __restrict__ out,
                                 long long nwords) {
    const long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= nwords) return;
    const long long b0 = 32 * k;
    long long i = b0 / w;
    const long long i1 = (b0 + 31) / w;
    unsigned acc = 0;
    for (; i <= i1 && i < count; ++i) {
        const long long bit = i * w - b0;  // -w < bit < 32
        const unsigned v = sym[i];
        acc |= bit >= 0 ? v << bit : v >> -bit;
    }
    out[k] = acc;
}

// Uniform mode with any bounds (4.3.3): bounds wider than 2^16 and per-symbol bounds. Each distinct
// bound has a descriptor of DESC + nl words (host: gpu_decoder.rans_uniform_descriptors): operations,
// raw(k0) (k0 >= 0) or even(n_top) with its q, r, thr, mq, mq1 (as in Uniform), s low bits, n_top - 1,
// then N - 1 as nl 32-bit limbs, least significant first. A symbol's operation u is its top (u = 0,
// bits s .. b - 1 of the symbol) or its low piece i = nops - 1 - u (bits 16 i .. 16 i + k_i - 1); a
// sub-step runs operation u of every lane whose symbol has more than u operations (4.3.4). Each
// value is or-ed into the packed layout (zeroed beforehand) at bit i * width + its offset, so
// pieces may straddle 32-bit words and chunks may share them. symbol >= N (4.3.3) is found
// MSB-first: the top against n_top - 1, then while equal so far each piece against N - 1's bits
// (a 16-aligned piece lies within one limb).
constexpr int DESC = 9;

__device__ __forceinline__ void or_bits(uint32_t* packed, long long bit, unsigned v, int k) {
    if (!v) return;
    const int sh = (int)(bit & 31);
    atomicOr(packed + (bit >> 5), v << sh);
    if (sh + k > 32) atomicOr(packed + (bit >> 5) + 1, v >> (32 - sh));
}

__device__ __forceinline__ int decode_chunk_wide(const Chunks& ck, long long j, const uint32_t* desc,
                                                 const uint16_t* index, int nl, uint32_t* packed, int width,
                                                 WordRing& w, int lane) {
    long long first;
    int n;
    unsigned x, nw;
    if (open_chunk(ck, j, w, lane, first, n, x, nw)) return ERR_STATE;

    const unsigned lt = (1u << lane) - 1u;
    const int steps = (n + 31) >> 5;
    const int stride = DESC + nl;
    bool bad = false;
    for (int t = 0; t < steps; ++t) {
        const bool live = 32 * t + lane < n;
        const long long i = first + 32LL * t + lane;
        const uint32_t* d = desc + (index && live ? (long long)__ldg(index + i) * stride : 0);
        const int nops = live ? (int)__ldg(d) : 0;
        const int k0 = (int)__ldg(d + 1);
        const int s = (int)__ldg(d + 2);
        Uniform u{};
        u.q = __ldg(d + 3);
        u.r = __ldg(d + 4);
        u.thr = __ldg(d + 5);
        u.mq = __ldg(d + 6);
        u.mq1 = __ldg(d + 7);
        const unsigned top_max = __ldg(d + 8);
        const int maxu = __reduce_max_sync(FULL, (unsigned)nops);
        const long long bit0 = i * width;
        bool eq = true;  // the symbol's bits so far equal N - 1's
        for (int uu = 0; uu < maxu; ++uu) {
            w.ensure<64>(lane);
            const bool act = uu < nops;
            unsigned xn = x, v;
            if (uu == 0) {
                if (k0 >= 0) { v = xn & ((1u << k0) - 1u); xn >>= k0; }
                else v = op_even(xn, u);
                if (act) {
                    eq = v == top_max;
                    or_bits(packed, bit0 + s, v, 8);
                }
            } else {
                const int pi = nops - 1 - uu;
                const int k = act ? min(16, s - 16 * pi) : 16;
                v = xn & ((1u << k) - 1u);
                xn >>= k;
                if (act) {
                    if (eq) {
                        const unsigned nb = (__ldg(d + DESC + (pi >> 1)) >> (16 * (pi & 1))) & ((1u << k) - 1u);
                        bad |= v > nb;
                        eq = v == nb;
                    }
                    or_bits(packed, bit0 + 16 * pi, v, k);
                }
            }
            x = act ? xn : x;
            refill<true>(x, act, nw, w, lt, lane);
        }
    }
    int e = __any_sync(FULL, x != L) ? ERR_FINAL : 0;
    if (w.pos > w.end) e |= ERR_EXHAUSTED;
    if (w.pos < w.end) e |= ERR_LEFT;
    if (__any_sync(FULL, bad)) e |= ERR_BOUND;
    return e;
}

__global__ void __launch_bounds__(WARPS * 32)
rans_uniform_wide_kernel(Chunks ck, const uint32_t* __restrict__ desc, const uint16_t* __restrict__ index, int nl,
                         uint32_t* __restrict__ packed, int width, int* __restrict__ err) {
    __shared__ __align__(16) uint16_t ring[WARPS * RING];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const long long j = (long long)blockIdx.x * WARPS + warp;
    if (j >= ck.C) return;
    WordRing w;
    w.ring = ring + warp * RING;
    w.ering = nullptr;
    w.stab = nullptr;
    w.mask = 0;
    const int e = decode_chunk_wide(ck, j, desc, index, nl, packed, width, w, lane);
    cp_async_wait<0>();
    if (e && lane == 0) atomicOr(err, e);
}

Uniform uniform_ops(long long N) {
    // 4.3.3: b = bits of N - 1; b <= 8: one even(N) (raw(b) if N = 2^b); b > 8: s = b - 8,
    // even(n_top) (raw(8) if n_top = 256) then raw(s) (s <= 8 here: one piece).
    Uniform u{};
    u.N = (unsigned)N;
    int b = 0;
    while ((1LL << b) < N) ++b;
    if (b == 0) return u;
    u.s = b > 8 ? b - 8 : 0;
    const long long ntop = ((N - 1) >> u.s) + 1;
    u.nops = u.s ? 2 : 1;
    u.k0 = (ntop & (ntop - 1)) == 0 ? __builtin_ctzll(ntop) : -1;
    if (u.k0 < 0) {
        u.q = (unsigned)(65536 / ntop);
        u.r = (unsigned)(65536 % ntop);
        u.thr = u.r * (u.q + 1);
        u.mq = (unsigned)((1ULL << 32) / u.q + 1);
        u.mq1 = (unsigned)((1ULL << 32) / (u.q + 1) + 1);
    }
    return u;
}

bool aligned16(const at::Tensor& t) { return (reinterpret_cast<uintptr_t>(t.data_ptr()) & 15) == 0; }

template <int MODE, typename ST>
void launch(const Chunks& ck, const uint32_t* tp, const uint16_t* sp, int P, const Uniform& un, const Output& o,
            int* err) {
    const size_t smem = table_bytes<MODE>(P) + WARPS * warp_bytes<MODE, ST>();
    if (smem > 48 * 1024)
        C10_CUDA_CHECK(cudaFuncSetAttribute(rans_decode_kernel<MODE, ST>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            (int)smem));
    const dim3 grid((unsigned)((ck.C + WARPS - 1) / WARPS));
    rans_decode_kernel<MODE, ST><<<grid, WARPS * 32, smem, c10::cuda::getCurrentCUDAStream()>>>(ck, tp, sp, P, un, o,
                                                                                                 err);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename ST>
void launch_mode(int kind, const Chunks& ck, const uint32_t* tp, const uint16_t* sp, int P, const Uniform& un,
                 const Output& o, int* err) {
    switch (kind) {
        case TABLE_PACKED: launch<TABLE_PACKED, ST>(ck, tp, sp, P, un, o, err); break;
        case TABLE_WIDE: launch<TABLE_WIDE, ST>(ck, tp, sp, P, un, o, err); break;
        case TABLE_SPEC: launch<TABLE_SPEC, ST>(ck, tp, sp, P, un, o, err); break;
        default: launch<UNIFORM, ST>(ck, tp, sp, P, un, o, err); break;
    }
}

}  // namespace

void rans_decode(const at::Tensor& payload, int64_t table_off, int64_t data_off, int64_t count, int64_t S, int64_t C,
                 int64_t mode, int64_t precision, const at::Tensor& tab, const at::Tensor& tsym, int64_t bound,
                 int64_t width, at::Tensor& packed, at::Tensor& symbols, bool aligned, bool speculative,
                 at::Tensor& err) {
    TORCH_CHECK(payload.is_cuda() && payload.scalar_type() == at::kByte && payload.is_contiguous(),
                "rans_decode: payload must be a contiguous uint8 CUDA tensor");
    TORCH_CHECK(aligned16(payload), "rans_decode: payload not 16-byte aligned");
    TORCH_CHECK(table_off % 8 == 0 && data_off % 2 == 0 && data_off == table_off + 8 * C, "rans_decode: offsets");
    // Uniform mode with bound descriptors in `tab` (and a per-symbol index in `tsym`): any width.
    const bool wide = mode == 1 && tab.numel() > 0;
    TORCH_CHECK(width >= 0 && (wide || width <= 16), "rans_decode: width ", width, " above 16");
    TORCH_CHECK(S >= 1 && S <= (1LL << 24), "rans_decode: chunk_symbols ", S, " outside 1..2^24");
    TORCH_CHECK(err.is_cuda() && err.scalar_type() == at::kInt && err.numel() >= 1, "rans_decode: err");
    if (C == 0) return;
    Chunks ck{payload.data_ptr<uint8_t>(), payload.numel(), table_off, data_off / 2, count, S, C};
    if (wide) {
        const int nl = (int)((width + 31) / 32 > 0 ? (width + 31) / 32 : 1);
        TORCH_CHECK(tab.is_cuda() && tab.scalar_type() == at::kInt && tab.is_contiguous() &&
                        tab.numel() % (DESC + nl) == 0, "rans_decode: bound descriptors");
        TORCH_CHECK(!symbols.numel(), "rans_decode: no symbol array for descriptor bounds");
        TORCH_CHECK(packed.is_cuda() && packed.is_contiguous() && packed.numel() % 4 == 0 && aligned16(packed) &&
                        packed.numel() >= 4 * ((count * width + 31) / 32), "rans_decode: packed output (zeroed)");
        const uint16_t* ix = nullptr;
        if (tsym.numel()) {
            TORCH_CHECK(tsym.is_cuda() && tsym.scalar_type() == at::kShort && tsym.is_contiguous() &&
                            tsym.numel() >= count, "rans_decode: bound index");
            ix = reinterpret_cast<const uint16_t*>(tsym.data_ptr<int16_t>());
        }
        const dim3 grid((unsigned)((C + WARPS - 1) / WARPS));
        rans_uniform_wide_kernel<<<grid, WARPS * 32, 0, c10::cuda::getCurrentCUDAStream()>>>(
            ck, reinterpret_cast<const uint32_t*>(tab.data_ptr<int32_t>()), ix, nl,
            reinterpret_cast<uint32_t*>(packed.data_ptr()), (int)width, err.data_ptr<int>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return;
    }
    Output o{};
    o.width = (int)width;
    o.aligned = aligned;
    if (packed.numel()) {
        TORCH_CHECK(packed.is_cuda() && packed.is_contiguous() && packed.numel() % 4 == 0 && aligned16(packed),
                    "rans_decode: packed output");
        TORCH_CHECK(packed.numel() >= 4 * (((count + 31) / 32) * width), "rans_decode: packed output too short");
        o.packed = reinterpret_cast<uint32_t*>(packed.data_ptr());
    }
    const bool narrow = width <= 8;
    if (symbols.numel()) {
        TORCH_CHECK(symbols.is_cuda() && symbols.is_contiguous() && symbols.numel() >= count, "rans_decode: symbols");
        if (narrow) {
            TORCH_CHECK(symbols.scalar_type() == at::kByte, "rans_decode: symbols of width <= 8 are uint8");
            o.sym8 = symbols.data_ptr<uint8_t>();
        } else {
            TORCH_CHECK(symbols.scalar_type() == at::kShort, "rans_decode: symbols of width 9..16 are int16");
            o.sym16 = reinterpret_cast<uint16_t*>(symbols.data_ptr<int16_t>());
        }
    }
    Uniform un{};
    const uint32_t* tp = nullptr;
    const uint16_t* sp = nullptr;
    int kind;
    if (mode == 0) {
        TORCH_CHECK(precision >= 1 && precision <= 15 && tab.numel() == (1LL << precision), "rans_decode: table");
        tp = reinterpret_cast<const uint32_t*>(tab.data_ptr<int32_t>());
        if (tsym.numel()) {
            TORCH_CHECK(tsym.numel() == tab.numel(), "rans_decode: symbol table");
            sp = reinterpret_cast<const uint16_t*>(tsym.data_ptr<int16_t>());
            kind = TABLE_WIDE;
        } else {
            TORCH_CHECK(precision <= 12, "rans_decode: packed table entries need precision <= 12");
            kind = speculative ? TABLE_SPEC : TABLE_PACKED;
        }
    } else {
        TORCH_CHECK(bound >= 1 && bound <= 65536, "rans_decode: uniform bound ", bound, " outside 1..65536");
        un = uniform_ops(bound);
        kind = UNIFORM;
    }
    int* e = err.data_ptr<int>();
    if (narrow) launch_mode<uint8_t>(kind, ck, tp, sp, (int)precision, un, o, e);
    else launch_mode<uint16_t>(kind, ck, tp, sp, (int)precision, un, o, e);
}

void rans_pack(const at::Tensor& symbols, int64_t count, int64_t width, at::Tensor& packed) {
    TORCH_CHECK(width >= 1 && width <= 16, "rans_pack: width");
    TORCH_CHECK(packed.is_cuda() && packed.numel() % 4 == 0 && aligned16(packed), "rans_pack: packed output");
    const long long nwords = (count * width + 31) / 32;
    TORCH_CHECK(packed.numel() >= 4 * nwords, "rans_pack: packed output too short");
    if (nwords == 0) return;
    auto stream = c10::cuda::getCurrentCUDAStream();
    uint32_t* out = reinterpret_cast<uint32_t*>(packed.data_ptr());
    const unsigned blocks = (unsigned)((nwords + 255) / 256);
    if (symbols.scalar_type() == at::kByte)
        rans_pack_kernel<uint8_t><<<blocks, 256, 0, stream>>>(symbols.data_ptr<uint8_t>(), count, (int)width, out,
                                                              nwords);
    else
        rans_pack_kernel<uint16_t><<<blocks, 256, 0, stream>>>(
            reinterpret_cast<const uint16_t*>(symbols.data_ptr<int16_t>()), count, (int)width, out, nwords);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}
