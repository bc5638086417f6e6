// Fused lattice decode + matrix product y'[n][r] = sum_c W'[r][c] x'[n][c] for 1..16 rows of
// activations x' (float16, already through the column-side RHT). W' never reaches memory: the
// codewords are decoded in registers straight into float16 tensor-core fragments
// (mma.sync m16n8k16, float32 accumulators), and every payload byte is read once.
//
// Exactness: the E8P points and the stage vectors k_l = U[l] - d are exact in float16, so the
// only roundings are x' -> float16 and the float32 accumulation. Per row,
//   y'[n][r] = q_r (s1 A1 + s2 (A2 + cx[n]) + s3 (A3 + cx[n])),
// with A1 = sum P x, A_j = sum k x (stage j) and cx[n] = sum_c d[c mod 8] x'[n][c] (the part of
// U that does not depend on the label, spec 6.4.5).
//
// Layout. A warp owns 16 rows (lanes g = lane/4 and t = lane%4 hold rows g and g+8) and walks
// the block's slice of columns in chunks of 64 groups (512 columns). In a chunk, lane t takes
// groups 16t .. 16t+15 of its two rows (one 16-byte load per stream and row); at step j it
// decodes group 16t + j of each row into the A fragments of two mma (k = 16 each): the k order
// inside a step is permuted so that each thread's 8 A values of a row are one group. The B
// fragment (x') of lane (n = g, t) is the same 8 columns: one 16-byte shared load, from an x'
// slice stored in the order (chunk, j, t) so that the four t of a row hit different banks.
//
// Table lookups: the tables are replicated 32 times in shared memory and lane l reads copy l at
// word l of the entry, so that a warp's 32 lookups always hit 32 different banks (one wavefront)
// instead of about 3.15 wavefronts for random entries of a single copy. The default ("lean")
// layout puts entry e at byte 256 e (T' in its first 128 bytes, S' in the other 128; K in a
// second region), so that one PRMT builds a lookup's offset from the payload byte and lane * 4,
// and uses the tables T', S' of lattice.cuh (e8p_point_h2_rot). Two accumulator sets per stage
// (even and odd steps) halve the chain of dependent tensor-core products. NOTES.md (lattice,
// versions 6 and 7) has the measurements behind each choice and the variants that lost.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <algorithm>
#include "common.cuh"
#include "lattice.cuh"

namespace {

constexpr int XPAD = 4;  // uint4 of padding per activation row (64 bytes: rows alternate bank halves)
constexpr int TAB_BYTES = 256 * 32 * 4;  // one replicated table (stride-128 layout)

// A kernel variant, as bits of one integer (tuning: bench/gpu_bench.py --variant-sweep):
//   pf    (bits 0-1) payload chunks loaded ahead of the one being computed, in registers (1..3);
//   acc2  (bit 2)    two accumulator sets per stage (even / odd steps): halves the chain of
//                    dependent tensor-core products;
//   lean  (bit 3)    T', S' (e8p_point_h2_rot: 9 instead of 12 instructions per point) and table
//                    offsets by one PRMT (entries 256 bytes apart; T' and S' interleaved);
//   diag  (bits 4-5) 1: payload loads only (no decode), 2: decode and products only (words made
//                    up in registers): timing diagnostics, the output is meaningless;
//   warps (bits 6-7) 8, 16 or 12 warps (16 rows each) per block; one block per multiprocessor
//   k16   (bit 8)    stage vectors (stages 2, 3) stored in shared memory as their four float16
//                    pairs (16 bytes, 8 copies per entry: lane l reads copy l mod 8, so each
//                    quarter-warp covers the 32 banks once): one 16-byte lookup instead of a
//                    word lookup and 9 conversion instructions; trades issue slots (the ALU pipe
//                    bound the kernel at 3 stages) for shared-memory wavefronts
//   k16a  (bit 9)    with k16: only stage 2 takes the 16-byte lookups, stage 3 keeps the word
//                    lookup and its conversion, to balance the ALU pipe and shared memory
//                    (shared memory), so this is the number of warps per multiprocessor.
__host__ __device__ constexpr int v_pf(int v) { return (v & 3) ? (v & 3) : 1; }
__host__ __device__ constexpr bool v_acc2(int v) { return (v >> 2) & 1; }
__host__ __device__ constexpr bool v_lean(int v) { return (v >> 3) & 1; }
__host__ __device__ constexpr int v_diag(int v) { return (v >> 4) & 3; }
__host__ __device__ constexpr bool v_k16(int v) { return (v >> 8) & 1; }
__host__ __device__ constexpr bool v_k16a(int v) { return (v >> 9) & 1; }
__host__ __device__ constexpr int v_warps(int v) { return ((v >> 6) & 3) == 1 ? 16 : ((v >> 6) & 3) == 2 ? 12 : 8; }
constexpr int V_PF2 = 2, V_ACC2 = 4, V_LEAN = 8, V_MEM = 16, V_ALU = 32, V_W16 = 64, V_W12 = 128, V_K16 = 256, V_K16A = 512;

// The kernel every caller gets (variant index 0), by stages and products per step (MT): 16 warps
// where the 128 registers a thread then has suffice (ptxas: no spills), else 8; up to 8 activation
// rows, stage vectors as float16 pairs (k16) for stage 2 and word lookups for stage 3 (with 9-16
// rows the 8-warp kernels measured 1-2 % slower with k16). NOTES.md (lattice, versions 6 to 8)
// has the measurements behind it.
template <int STAGES, int MT>
struct Default {
    static constexpr int K16 = STAGES == 2 ? V_K16 : STAGES == 3 ? (V_K16 | V_K16A) : 0;
    static constexpr int value = (MT == 2 && STAGES >= 2) ? (V_LEAN | V_ACC2) : (V_LEAN | V_ACC2 | V_W16 | K16);
};

// Shared memory of the tables: stride-128 layout, T, S (, K) at 32 KB each; lean layout, T'/S'
// interleaved in 256-byte entries (64 KB) (, K in 256-byte entries, 64 KB).
__host__ __device__ constexpr int tab_bytes(int v, int stages) {
    return v_lean(v) ? (stages >= 2 ? 2 : 1) * 256 * 256 : (stages >= 2 ? 3 : 2) * TAB_BYTES;
}

// Byte j of the 16 in u, as the byte offset of its entry in a replicated table (e * 128), with
// the lane's copy (lane * 4, below 128) or-ed in: one shift and one LOP3.
template <int J>
__device__ __forceinline__ uint32_t entry_off(const uint4& u, uint32_t lane4) {
    const uint32_t w = (J >> 2) == 0 ? u.x : (J >> 2) == 1 ? u.y : (J >> 2) == 2 ? u.z : u.w;
    constexpr int SH = 8 * (J & 3) - 7;
    const uint32_t v = SH < 0 ? (w << 7) : (w >> (SH < 0 ? 0 : SH));
    return lattice::lop3_and_or<0x7F80u>(v, lane4);
}

// The same offset in the lean layout (entry e at e * 256): byte 0 = lane * 4, byte 1 = byte j of
// u, bytes 2 and 3 zero, in one PRMT.
template <int J>
__device__ __forceinline__ uint32_t entry_off256(const uint4& u, uint32_t lane4) {
    const uint32_t w = (J >> 2) == 0 ? u.x : (J >> 2) == 1 ? u.y : (J >> 2) == 2 ? u.z : u.w;
    return __byte_perm(w, lane4, 0x5504u | ((J & 3) << 4));
}

__device__ __forceinline__ uint32_t lds32(const unsigned char* base, uint32_t off) {
    return *reinterpret_cast<const uint32_t*>(base + off);
}

__device__ __forceinline__ void mma16816(float* c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <bool VEC>
__device__ __forceinline__ uint4 load16(const uint8_t* __restrict__ base, long long off, int avail) {
    if (VEC) {
        // A warp reads 64 bytes of each of 8 rows per load; the 256-byte L2 prefetch brings in the
        // row's next chunks with it, so that the memory sees whole 256-byte runs.
        uint4 r = make_uint4(0u, 0u, 0u, 0u);
        if (avail > 0)
            asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
                : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                : "l"(base + off));
        return r;
    }
    uint32_t w[4] = {0u, 0u, 0u, 0u};
#pragma unroll
    for (int i = 0; i < 16; ++i)
        if (i < avail) w[i >> 2] |= (uint32_t)__ldg(base + off + i) << (8 * (i & 3));
    return make_uint4(w[0], w[1], w[2], w[3]);
}

template <int I> struct IntC { static constexpr int value = I; };
template <int N, int I = 0, typename F>
__device__ __forceinline__ void static_for(F&& f) {
    if constexpr (I < N) {
        f(IntC<I>{});
        static_for<N, I + 1>(f);
    }
}

template <int STAGES>
struct Words {
    uint4 p[2], s[2], l2[2], l3[2];  // rows g and g+8 of the warp's tile
};

template <int STAGES, bool VEC>
__device__ __forceinline__ void load_words(Words<STAGES>& w, const uint8_t* __restrict__ pat,
                                           const uint8_t* __restrict__ sgn, const uint8_t* __restrict__ lab2,
                                           const uint8_t* __restrict__ lab3, long long rowoff0, long long rowoff1,
                                           bool ok0, bool ok1, int g, int gr) {
    const int avail = gr - g;
    const int a0 = ok0 ? avail : 0, a1 = ok1 ? avail : 0;
    w.p[0] = load16<VEC>(pat, rowoff0 + g, a0);
    w.p[1] = load16<VEC>(pat, rowoff1 + g, a1);
    w.s[0] = load16<VEC>(sgn, rowoff0 + g, a0);
    w.s[1] = load16<VEC>(sgn, rowoff1 + g, a1);
    if (STAGES >= 2) {
        w.l2[0] = load16<VEC>(lab2, rowoff0 + g, a0);
        w.l2[1] = load16<VEC>(lab2, rowoff1 + g, a1);
    }
    if (STAGES >= 3) {
        w.l3[0] = load16<VEC>(lab3, rowoff0 + g, a0);
        w.l3[1] = load16<VEC>(lab3, rowoff1 + g, a1);
    }
}

// Tiled layout (lattice_tile in __init__.py, built once per layer at load time): for each
// 16-row tile rt and 512-column chunk ch, the bytes of all streams of that (rt, ch) are one
// contiguous run of NS * 1024 bytes, stream s at s * 1024, rows g (+0) and g + 8 (+512), lane
// (g, t) at lane * 16: exactly the 16 bytes that lane loads. A warp load is 512 contiguous
// bytes and a warp walks one contiguous run of kb * NS KB. Rows and groups are zero-padded to
// whole tiles (padded groups meet zero activations; padded rows are not stored).
template <int STAGES>
__device__ __forceinline__ void load_words_tiled(Words<STAGES>& w, const uint8_t* __restrict__ tiled, long long tileoff,
                                                 bool ok, uint32_t lane) {
    const uint8_t* p = tiled + tileoff * (1024LL * (STAGES + 1)) + lane * 16u;
    const int a = ok ? 16 : 0;
    w.p[0] = load16<true>(p, 0, a);
    w.p[1] = load16<true>(p, 512, a);
    w.s[0] = load16<true>(p, 1024, a);
    w.s[1] = load16<true>(p, 1536, a);
    if (STAGES >= 2) {
        w.l2[0] = load16<true>(p, 2048, a);
        w.l2[1] = load16<true>(p, 2560, a);
    }
    if (STAGES >= 3) {
        w.l3[0] = load16<true>(p, 3072, a);
        w.l3[1] = load16<true>(p, 3584, a);
    }
}

// Words made up in registers (variant diag 2): random-looking bytes, no memory traffic.
template <int STAGES>
__device__ __forceinline__ void synth_words(Words<STAGES>& w, int ch, uint32_t lane) {
    const uint32_t s = (uint32_t)ch * 0x9E3779B1u + lane * 0x85EBCA77u;
    w.p[0] = make_uint4(s, s * 3u, s * 5u, s * 7u);
    w.p[1] = make_uint4(s * 11u, s * 13u, s * 17u, s * 19u);
    w.s[0] = make_uint4(s ^ 0x5bd1e995u, s * 23u, s * 29u, s * 31u);
    w.s[1] = make_uint4(s * 37u, s * 41u, s * 43u, s * 47u);
    if (STAGES >= 2) {
        w.l2[0] = make_uint4(s * 53u, s * 59u, s * 61u, s * 67u);
        w.l2[1] = make_uint4(s * 71u, s * 73u, s * 79u, s * 83u);
    }
    if (STAGES >= 3) {
        w.l3[0] = make_uint4(s * 89u, s * 97u, s * 101u, s * 103u);
        w.l3[1] = make_uint4(s * 107u, s * 109u, s * 113u, s * 127u);
    }
}

template <int STAGES, int MT, bool VEC, bool TILED, int V>
__global__ void __launch_bounds__(v_warps(V) * 32, 1) lattice_gemv_kernel(
    const uint8_t* __restrict__ pat, const uint8_t* __restrict__ sgn, const uint8_t* __restrict__ lab2,
    const uint8_t* __restrict__ lab3, const uint16_t* __restrict__ rscale, const uint32_t* __restrict__ tabs,
    float s1, float s2, float s3, int rows, int cols, int gr, int kb, const __half* __restrict__ x, int m,
    float* __restrict__ y) {
    constexpr int WARPS = v_warps(V), THREADS = WARPS * 32, ROWS_PER_BLOCK = WARPS * 16;
    constexpr int PF = v_pf(V), NACC = v_acc2(V) ? 2 : 1, DIAG = v_diag(V);
    constexpr bool LEAN = v_lean(V);
    constexpr bool K16 = LEAN && v_k16(V) && STAGES >= 2;
    constexpr bool K16W = K16 && v_k16a(V) && STAGES >= 3;  // stage 3 reads words (at byte 128 of an entry)
    __shared__ float cx[16];
    extern __shared__ uint4 smem[];  // the tables (tab_bytes), then the x' slice [m][kb * 64 + XPAD]
    const unsigned char* T = reinterpret_cast<const unsigned char*>(smem);
    const unsigned char* S = LEAN ? T + 128 : T + TAB_BYTES;  // lean: S' beside T' in each entry
    const unsigned char* K = LEAN ? T + 256 * 256 : T + 2 * TAB_BYTES;
    uint4* xs = smem + tab_bytes(V, STAGES) / 16;
    const int nch = (gr + 63) / 64;
    const int ch0 = blockIdx.y * kb, ch1 = min(nch, ch0 + kb);
    const int xstride = kb * 64 + XPAD;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int gq = lane >> 2, t = lane & 3;
    const uint32_t lane4 = (uint32_t)lane * 4u, lane16 = (uint32_t)(lane & 7) * 16u;
    const int r0 = blockIdx.x * ROWS_PER_BLOCK + warp * 16 + gq, r1 = r0 + 8;
    const bool ok0 = r0 < rows, ok1 = r1 < rows;
    const long long ro0 = (long long)(ok0 ? r0 : 0) * gr, ro1 = (long long)(ok1 ? r1 : 0) * gr;
    const int rt = blockIdx.x * WARPS + warp;  // 16-row tile (tiled layout)
    const bool okt = rt < (rows + 15) / 16;
    const long long tb = (long long)(okt ? rt : 0) * nch;
    auto fetch = [&](Words<STAGES>& w, int ch) {
        if (DIAG == 2) synth_words<STAGES>(w, ch, (uint32_t)lane);
        else if (TILED) load_words_tiled<STAGES>(w, pat, tb + ch, okt, (uint32_t)lane);
        else load_words<STAGES, VEC>(w, pat, sgn, lab2, lab3, ro0, ro1, ok0, ok1, ch * 64 + 16 * t, gr);
    };
    // The first PF chunks are requested before the tables and the x' slice are set up, so that
    // their memory latency overlaps with that set-up. buf[i] holds chunk ch + i (main loop).
    Words<STAGES> buf[PF];
    static_for<PF>([&](auto ic) {
        constexpr int I = decltype(ic)::value;
        if (ch0 + I < ch1) fetch(buf[I], ch0 + I);
    });
    // Tables: each thread loads all its words first (one round trip to L2), then stores them.
    if (LEAN) {
        // entry e: 8 uint4 of T'[e], then 8 of S'[e]; K[e] in the first 8 uint4 of its entry
        constexpr int NTS = 256 * 16 / THREADS + (256 * 16 % THREADS != 0);
        constexpr int NK = STAGES >= 2 ? 256 * 8 / THREADS + (256 * 8 % THREADS != 0) : 0;
        uint32_t v[NTS + NK];
#pragma unroll
        for (int j = 0; j < NTS; ++j) {
            const int i = threadIdx.x + j * THREADS;
            v[j] = i < 256 * 16 ? tabs[768 + ((i >> 3) & 1) * 256 + (i >> 4)] : 0u;
        }
#pragma unroll
        for (int j = 0; j < NK; ++j) {
            const int i = threadIdx.x + j * THREADS;
            v[NTS + j] = i < 256 * 8 ? tabs[512 + (i >> 3)] : 0u;
        }
#pragma unroll
        for (int j = 0; j < NTS; ++j) {
            const int i = threadIdx.x + j * THREADS;
            if (i < 256 * 16) smem[i] = make_uint4(v[j], v[j], v[j], v[j]);
        }
#pragma unroll
        for (int j = 0; j < NK; ++j) {
            const int i = threadIdx.x + j * THREADS;
            if (i >= 256 * 8) continue;
            if (K16) {
                uint32_t h[4];
                lattice::stage_k_h2(v[NTS + j], h);  // the same bits as the per-lookup conversion
                smem[256 * 16 + (i >> 3) * 16 + (i & 7)] = make_uint4(h[0], h[1], h[2], h[3]);
                if (K16W)
                    smem[256 * 16 + (i >> 3) * 16 + 8 + (i & 7)] =
                        make_uint4(v[NTS + j], v[NTS + j], v[NTS + j], v[NTS + j]);
            } else {
                smem[256 * 16 + (i >> 3) * 16 + (i & 7)] = make_uint4(v[NTS + j], v[NTS + j], v[NTS + j], v[NTS + j]);
            }
        }
    } else {
        constexpr int NE = (STAGES >= 2 ? 3 : 2) * 256 * 8;  // 8 uint4 = 32 copies per entry
        constexpr int N = NE / THREADS + (NE % THREADS != 0);
        uint32_t v[N];
#pragma unroll
        for (int j = 0; j < N; ++j) {
            const int i = threadIdx.x + j * THREADS;
            v[j] = i < NE ? tabs[i >> 3] : 0u;
        }
#pragma unroll
        for (int j = 0; j < N; ++j) {
            const int i = threadIdx.x + j * THREADS;
            if (i < NE) smem[i] = make_uint4(v[j], v[j], v[j], v[j]);
        }
    }
    if (threadIdx.x < 16) cx[threadIdx.x] = 0.0f;
    __syncthreads();
    // The x' slice, float16, in (chunk, j, t) order; and cx (stages >= 2) over the slice. XB loads
    // per thread are issued together.
    {
        constexpr int XB = 4;
        const int span = (ch1 - ch0) * 64;  // groups of the slice
        const int total = m * span;         // a multiple of 64: the 32 entries of a warp share n
        const bool xvec = (cols & 7) == 0;
        for (int base = warp * 32; base < total; base += XB * THREADS) {
            uint4 v[XB];
#pragma unroll
            for (int u = 0; u < XB; ++u) {
                const int idx = base + u * THREADS + lane;
                v[u] = make_uint4(0u, 0u, 0u, 0u);
                if (idx < total) {
                    const int n = idx / span, G = ch0 * 64 + idx - n * span;
                    if (G < gr) {
                        const __half* src = x + (long long)n * cols + 8LL * G;
                        if (xvec) {
                            v[u] = __ldg(reinterpret_cast<const uint4*>(src));
                        } else {
                            uint16_t h[8];
#pragma unroll
                            for (int i = 0; i < 8; ++i)
                                h[i] = (8 * G + i < cols) ? __half_as_ushort(src[i]) : (uint16_t)0;
                            v[u] = make_uint4(h[0] | (uint32_t)h[1] << 16, h[2] | (uint32_t)h[3] << 16,
                                              h[4] | (uint32_t)h[5] << 16, h[6] | (uint32_t)h[7] << 16);
                        }
                    }
                }
            }
#pragma unroll
            for (int u = 0; u < XB; ++u) {
                if (base + u * THREADS >= total) break;  // warp-uniform
                const int idx = base + u * THREADS + lane;
                const int n = idx / span, gg = idx - n * span;
                const int c = gg >> 6, w = gg & 63;
                xs[n * xstride + c * 64 + (w & 15) * 4 + (w >> 4)] = v[u];
                if (STAGES >= 2) {
                    const __half* hv = reinterpret_cast<const __half*>(&v[u]);
                    float p = 0.0f;
#pragma unroll
                    for (int i = 0; i < 8; ++i) p += __half2float(hv[i]) * lattice::dvec(i);
#pragma unroll
                    for (int o = 16; o > 0; o >>= 1) p += __shfl_xor_sync(0xffffffffu, p, o);
                    if (lane == 0) atomicAdd(&cx[n], p);
                }
            }
        }
    }
    __syncthreads();

    float acc[STAGES][NACC][MT][4];
#pragma unroll
    for (int s = 0; s < STAGES; ++s)
#pragma unroll
        for (int a = 0; a < NACC; ++a)
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[s][a][mt][e] = 0.0f;
    uint32_t sink = 0u;  // diag 1: keeps the loads alive

    // Point (stage 1) or stage vector (2, 3) of byte J of each row's word, as two rows' A fragments.
    auto point = [&](auto jc, const uint4& p0, const uint4& s0, const uint4& p1, const uint4& s1_, uint32_t* h0,
                     uint32_t* h1) {
        constexpr int J = decltype(jc)::value;
        if (LEAN) {
            lattice::e8p_point_h2_rot(lds32(T, entry_off256<J>(p0, lane4)) ^ lds32(S, entry_off256<J>(s0, lane4)), h0);
            lattice::e8p_point_h2_rot(lds32(T, entry_off256<J>(p1, lane4)) ^ lds32(S, entry_off256<J>(s1_, lane4)), h1);
        } else {
            lattice::e8p_point_h2(lds32(T, entry_off<J>(p0, lane4)) ^ lds32(S, entry_off<J>(s0, lane4)), h0);
            lattice::e8p_point_h2(lds32(T, entry_off<J>(p1, lane4)) ^ lds32(S, entry_off<J>(s1_, lane4)), h1);
        }
    };
    auto stagek = [&](auto jc, auto sc, const uint4& l0, const uint4& l1, uint32_t* h0, uint32_t* h1) {
        constexpr int J = decltype(jc)::value;
        constexpr bool PAIRS = K16 && !(K16W && decltype(sc)::value == 3);  // else a word, converted here
        const unsigned char* KW = K16W ? K + 128 : K;  // the word copies (k16a: beside the pairs)
        if (PAIRS) {
            const uint4 k0 = *reinterpret_cast<const uint4*>(K + entry_off256<J>(l0, lane16));
            const uint4 k1 = *reinterpret_cast<const uint4*>(K + entry_off256<J>(l1, lane16));
            h0[0] = k0.x; h0[1] = k0.y; h0[2] = k0.z; h0[3] = k0.w;
            h1[0] = k1.x; h1[1] = k1.y; h1[2] = k1.z; h1[3] = k1.w;
        } else if (LEAN) {
            lattice::stage_k_h2(lds32(KW, entry_off256<J>(l0, lane4)), h0);
            lattice::stage_k_h2(lds32(KW, entry_off256<J>(l1, lane4)), h1);
        } else {
            lattice::stage_k_h2(lds32(K, entry_off<J>(l0, lane4)), h0);
            lattice::stage_k_h2(lds32(K, entry_off<J>(l1, lane4)), h1);
        }
    };
    auto compute = [&](const Words<STAGES>& cur, int lc) {
        if (DIAG == 1) {
            sink ^= cur.p[0].x ^ cur.p[0].y ^ cur.p[0].z ^ cur.p[0].w ^ cur.p[1].x ^ cur.p[1].y ^ cur.p[1].z ^ cur.p[1].w;
            sink += cur.s[0].x ^ cur.s[0].y ^ cur.s[0].z ^ cur.s[0].w ^ cur.s[1].x ^ cur.s[1].y ^ cur.s[1].z ^ cur.s[1].w;
            if (STAGES >= 2)
                sink += cur.l2[0].x ^ cur.l2[0].y ^ cur.l2[0].z ^ cur.l2[0].w ^ cur.l2[1].x ^ cur.l2[1].y ^ cur.l2[1].z ^
                        cur.l2[1].w;
            if (STAGES >= 3)
                sink += cur.l3[0].x ^ cur.l3[0].y ^ cur.l3[0].z ^ cur.l3[0].w ^ cur.l3[1].x ^ cur.l3[1].y ^ cur.l3[1].z ^
                        cur.l3[1].w;
            return;
        }
        const uint4* xrow = xs + lc * 64 + t;
        static_for<16>([&](auto jc) {
            constexpr int J = decltype(jc)::value;
            constexpr int A = J % NACC;
            uint4 xb[MT];  // columns n >= m of the products read row m-1 and are discarded
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) xb[mt] = xrow[min(mt * 8 + gq, m - 1) * xstride + J * 4];
            uint32_t h0[4], h1[4];
            point(jc, cur.p[0], cur.s[0], cur.p[1], cur.s[1], h0, h1);
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                mma16816(acc[0][A][mt], h0[0], h1[0], h0[1], h1[1], xb[mt].x, xb[mt].y);
                mma16816(acc[0][A][mt], h0[2], h1[2], h0[3], h1[3], xb[mt].z, xb[mt].w);
            }
            if (STAGES >= 2) {
                stagek(jc, IntC<2>{}, cur.l2[0], cur.l2[1], h0, h1);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma16816(acc[1][A][mt], h0[0], h1[0], h0[1], h1[1], xb[mt].x, xb[mt].y);
                    mma16816(acc[1][A][mt], h0[2], h1[2], h0[3], h1[3], xb[mt].z, xb[mt].w);
                }
            }
            if (STAGES >= 3) {
                stagek(jc, IntC<3>{}, cur.l3[0], cur.l3[1], h0, h1);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma16816(acc[STAGES - 1][A][mt], h0[0], h1[0], h0[1], h1[1], xb[mt].x, xb[mt].y);
                    mma16816(acc[STAGES - 1][A][mt], h0[2], h1[2], h0[3], h1[3], xb[mt].z, xb[mt].w);
                }
            }
        });
    };

    // PF chunks in flight while one is computed: consuming buf[i] (chunk ch + i) starts the load
    // of chunk ch + i + PF into the same registers (indices are compile-time constants).
    for (int ch = ch0; ch < ch1; ch += PF) {
        static_for<PF>([&](auto ic) {
            constexpr int I = decltype(ic)::value;
            const int c = ch + I;
            if (c < ch1) {
                const Words<STAGES> cur = buf[I];
                if (c + PF < ch1) fetch(buf[I], c + PF);
                compute(cur, c - ch0);
            }
        });
    }
    if constexpr (DIAG == 1) {
        if (sink == 0x9E3779B9u && ch0 == -1) y[0] = 1.0f;  // never true: the loads stay
        return;
    }
    if (ch0 >= ch1) return;
    // Accumulator e of tile mt: row (e < 2 ? r0 : r1), activation row mt*8 + 2t + (e & 1).
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        const int r = e < 2 ? r0 : r1;
        if (r >= rows) continue;
        const float q = rscale ? __half2float(__ushort_as_half(rscale[r])) : 1.0f;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            const int n = mt * 8 + 2 * t + (e & 1);
            if (n >= m) continue;
            float a[STAGES];
#pragma unroll
            for (int s = 0; s < STAGES; ++s)
                a[s] = NACC == 2 ? acc[s][0][mt][e] + acc[s][NACC - 1][mt][e] : acc[s][0][mt][e];
            float v = s1 * a[0];
            if (STAGES >= 2) v += s2 * (a[1] + cx[n]);
            if (STAGES >= 3) v += s3 * (a[2] + cx[n]);
            atomicAdd(y + (long long)n * rows + r, v * q);
        }
    }
}

// Tuning variants of the tiled kernel (bench/gpu_bench.py --variant-sweep); index 0 = the default.
constexpr int kVariants[] = {
    0,                                  // 0: the default (Default<STAGES, MT>; not used from this table)
    0,                                  // 1: version 5's decode (stride-128 tables, one accumulator), 8 warps
    V_LEAN | V_ACC2,                    // 2: version 6's best, 8 warps
    V_LEAN | V_ACC2 | V_PF2,            // 3: + a second chunk in flight
    V_LEAN | V_ACC2 | V_W16,            // 4: 16 warps
    V_LEAN | V_W16,                     // 5: 16 warps, one accumulator
    V_LEAN | V_ACC2 | V_W12,            // 6: 12 warps
    V_LEAN | V_ACC2 | V_W16 | V_MEM,    // 7: diagnostic, payload loads only
    V_LEAN | V_ACC2 | V_W16 | V_ALU,    // 8: diagnostic, decode + products only
    V_LEAN | V_ACC2 | V_W16 | V_K16,    // 9: stage vectors as float16 pairs (16-byte lookups), 16 warps
    V_LEAN | V_ACC2 | V_K16,            // 10: the same, 8 warps
    V_LEAN | V_ACC2 | V_W16 | V_ALU | V_K16,  // 11: diagnostic, decode + products only, k16
    V_LEAN | V_ACC2 | V_W16 | V_K16 | V_K16A,          // 12: k16 for stage 2 only, 16 warps
    V_LEAN | V_ACC2 | V_W16 | V_ALU | V_K16 | V_K16A,  // 13: diagnostic, decode + products only, k16a
};
constexpr int kNumVariants = sizeof(kVariants) / sizeof(kVariants[0]);

template <int STAGES, int MT, bool VEC, bool TILED, int V>
void launch(const at::Tensor& pat, const at::Tensor& sgn, const at::Tensor& l2, const at::Tensor& l3,
            const at::Tensor& rscale, const at::Tensor& tabs, float s1, float s2, float s3, int rows, int cols,
            const at::Tensor& x, int m, int kb, at::Tensor& y) {
    constexpr int THREADS = v_warps(V) * 32, ROWS_PER_BLOCK = v_warps(V) * 16;
    const int gr = (cols + 7) / 8;
    const int nch = (gr + 63) / 64;
    const int tiles = (rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK;
    auto kern = lattice_gemv_kernel<STAGES, MT, VEC, TILED, V>;
    constexpr size_t SMEM_MAX = 227 * 1024 - 128;  // per block, less the static cx
    auto smem_of = [&](int k) { return (size_t)tab_bytes(V, STAGES) + (size_t)m * (k * 64 + XPAD) * sizeof(uint4); };
    C10_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)SMEM_MAX));
    if (kb <= 0) {
        // Blocks have equal work (kb chunks); the time goes as rounds x (kb + the block's fixed
        // cost, about half a chunk), counting one block per multiprocessor a round: fewer, longer
        // blocks measured faster than a full wave of 2-3 blocks per multiprocessor (bench
        // --kb-sweep: 8192 x 28672, batch 1, 2 bits 43.5 vs 50.2 us, 4 bits 88.1 vs 99.5 us).
        int dev = 0, sms = 0;
        C10_CUDA_CHECK(cudaGetDevice(&dev));
        C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
        const int kmax = std::max(1, std::min(nch, (int)(((SMEM_MAX - tab_bytes(V, STAGES)) / (16 * m) - XPAD) / 64)));
        double best = 1e30;
        for (int k = kmax; k >= 1; --k) {
            const long long slots = sms;
            const long long blocks = (long long)tiles * ((nch + k - 1) / k);
            const double cost = (double)((blocks + slots - 1) / slots) * (k + 0.5);
            if (cost < best - 1e-9) { best = cost; kb = k; }
        }
    }
    TORCH_CHECK(smem_of(kb) <= SMEM_MAX, "lattice_gemv: x slice too large (kb ", kb, ")");
    const int splits = (nch + kb - 1) / kb;
    y = at::zeros({m, rows}, x.options().dtype(at::kFloat));  // blocks of one row range add their parts
    const dim3 grid(tiles, splits);
    kern<<<grid, THREADS, smem_of(kb), c10::cuda::getCurrentCUDAStream()>>>(
        pat.data_ptr<uint8_t>(), TILED ? nullptr : sgn.data_ptr<uint8_t>(),
        (STAGES >= 2 && !TILED) ? l2.data_ptr<uint8_t>() : nullptr, (STAGES >= 3 && !TILED) ? l3.data_ptr<uint8_t>() : nullptr,
        rscale.numel() ? reinterpret_cast<const uint16_t*>(rscale.data_ptr()) : nullptr,
        reinterpret_cast<const uint32_t*>(tabs.data_ptr()), s1, s2, s3, rows, cols, gr, kb,
        reinterpret_cast<const __half*>(x.data_ptr()), m, y.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <int STAGES, int MT>
void by_vec(bool vec, const at::Tensor& pat, const at::Tensor& sgn, const at::Tensor& l2, const at::Tensor& l3,
            const at::Tensor& rscale, const at::Tensor& tabs, float s1, float s2, float s3, int rows, int cols,
            const at::Tensor& x, int m, int kb, at::Tensor& y) {
    constexpr int V = Default<STAGES, MT>::value;
    if (vec) launch<STAGES, MT, true, false, V>(pat, sgn, l2, l3, rscale, tabs, s1, s2, s3, rows, cols, x, m, kb, y);
    else launch<STAGES, MT, false, false, V>(pat, sgn, l2, l3, rscale, tabs, s1, s2, s3, rows, cols, x, m, kb, y);
}

template <int STAGES>
void by_mt(int mt, bool vec, const at::Tensor& pat, const at::Tensor& sgn, const at::Tensor& l2, const at::Tensor& l3,
           const at::Tensor& rscale, const at::Tensor& tabs, float s1, float s2, float s3, int rows, int cols,
           const at::Tensor& x, int m, int kb, at::Tensor& y) {
    if (mt == 1) by_vec<STAGES, 1>(vec, pat, sgn, l2, l3, rscale, tabs, s1, s2, s3, rows, cols, x, m, kb, y);
    else by_vec<STAGES, 2>(vec, pat, sgn, l2, l3, rscale, tabs, s1, s2, s3, rows, cols, x, m, kb, y);
}

// A sweep variant (index >= 1): stages 1 and 3, at most 8 activation rows.
template <int STAGES, int I = 1>
void tiled_variant(int vi, const at::Tensor& tl, const at::Tensor& rscale, const at::Tensor& tabs, float s1, float s2,
                   float s3, int rows, int cols, const at::Tensor& x, int m, int kb, at::Tensor& y) {
    if constexpr (I < kNumVariants) {
        if (vi == I) launch<STAGES, 1, true, true, kVariants[I]>(tl, tl, tl, tl, rscale, tabs, s1, s2, s3, rows, cols, x, m, kb, y);
        else tiled_variant<STAGES, I + 1>(vi, tl, rscale, tabs, s1, s2, s3, rows, cols, x, m, kb, y);
    } else {
        TORCH_CHECK(false, "lattice_gemv_tiled: variant ", vi, " outside 0..", kNumVariants - 1);
    }
}

template <int STAGES>
void tiled_by_mt(int mt, int vi, const at::Tensor& tl, const at::Tensor& rscale, const at::Tensor& tabs, float s1,
                 float s2, float s3, int rows, int cols, const at::Tensor& x, int m, int kb, at::Tensor& y) {
    if (vi != 0) {
        TORCH_CHECK(mt == 1 && (STAGES == 1 || STAGES == 3), "lattice_gemv_tiled: variants take stages 1 / 3, m <= 8");
        if constexpr (STAGES == 1 || STAGES == 3) tiled_variant<STAGES>(vi, tl, rscale, tabs, s1, s2, s3, rows, cols, x, m, kb, y);
        return;
    }
    if (mt == 1) launch<STAGES, 1, true, true, Default<STAGES, 1>::value>(tl, tl, tl, tl, rscale, tabs, s1, s2, s3, rows, cols, x, m, kb, y);
    else launch<STAGES, 2, true, true, Default<STAGES, 2>::value>(tl, tl, tl, tl, rscale, tabs, s1, s2, s3, rows, cols, x, m, kb, y);
}

bool aligned16(const at::Tensor& t) { return t.numel() == 0 || (reinterpret_cast<uintptr_t>(t.data_ptr()) & 15) == 0; }

}  // namespace

// Returns y' = x' W'^T, float32 (m, rows). x: (m, cols), 1 <= m <= 16, any float dtype (used as
// float16). tabs: lattice_gemv_tables (1536 words). kb: chunks of 512 columns per block, or 0 to
// choose.
at::Tensor lattice_gemv(const at::Tensor& pat, const at::Tensor& sgn, const at::Tensor& l2, const at::Tensor& l3,
                        const at::Tensor& rscale, const at::Tensor& tabs, int64_t stages, double s1, double s2,
                        double s3, int64_t rows, int64_t cols, const at::Tensor& x, int64_t kb) {
    const int m = (int)x.size(0);
    TORCH_CHECK(x.dim() == 2 && m >= 1 && m <= 16 && x.size(1) == cols, "lattice_gemv: x must be (1..16, cols)");
    const long long ng = rows * ((cols + 7) / 8);
    TORCH_CHECK(pat.numel() == ng && sgn.numel() == ng, "lattice_gemv: pattern / sign stream length");
    TORCH_CHECK(stages < 2 || l2.numel() == ng, "lattice_gemv: stage2 stream length");
    TORCH_CHECK(stages < 3 || l3.numel() == ng, "lattice_gemv: stage3 stream length");
    TORCH_CHECK(rscale.numel() == 0 || rscale.numel() == rows, "lattice_gemv: row_scales length");
    TORCH_CHECK(tabs.numel() == 1536, "lattice_gemv: tables");
    at::Tensor xh = x.scalar_type() == at::kHalf ? x.contiguous() : x.to(at::kHalf).contiguous();
    if (!aligned16(xh)) xh = xh.clone();
    at::Tensor y;
    const int gr = (int)((cols + 7) / 8);
    const bool vec = gr % 16 == 0 && aligned16(pat) && aligned16(sgn) && aligned16(l2) && aligned16(l3);
    const int mt = m <= 8 ? 1 : 2;
    const float f1 = (float)s1, f2 = (float)s2, f3 = (float)s3;
    switch (stages) {
        case 1: by_mt<1>(mt, vec, pat, sgn, l2, l3, rscale, tabs, f1, f2, f3, (int)rows, (int)cols, xh, m, (int)kb, y); break;
        case 2: by_mt<2>(mt, vec, pat, sgn, l2, l3, rscale, tabs, f1, f2, f3, (int)rows, (int)cols, xh, m, (int)kb, y); break;
        case 3: by_mt<3>(mt, vec, pat, sgn, l2, l3, rscale, tabs, f1, f2, f3, (int)rows, (int)cols, xh, m, (int)kb, y); break;
        default: TORCH_CHECK(false, "lattice_gemv: stages ", stages, " outside 1..3");
    }
    return y;
}

// The same product from the tiled layout (lattice_tile): one uint8 tensor of
// ceil(rows / 16) * ceil(ceil(cols / 8) / 64) * (stages + 1) * 1024 bytes. kb: bits 0-15 the
// column split (0: choose), bits 16 and up a tuning variant (0: the default kernel).
at::Tensor lattice_gemv_tiled(const at::Tensor& tiled, const at::Tensor& rscale, const at::Tensor& tabs, int64_t stages,
                              double s1, double s2, double s3, int64_t rows, int64_t cols, const at::Tensor& x,
                              int64_t kb) {
    const int m = (int)x.size(0);
    TORCH_CHECK(x.dim() == 2 && m >= 1 && m <= 16 && x.size(1) == cols, "lattice_gemv_tiled: x must be (1..16, cols)");
    TORCH_CHECK(stages >= 1 && stages <= 3, "lattice_gemv_tiled: stages ", stages, " outside 1..3");
    const long long gr = (cols + 7) / 8, nch = (gr + 63) / 64, r16 = (rows + 15) / 16;
    TORCH_CHECK(tiled.scalar_type() == at::kByte && tiled.is_contiguous() && tiled.numel() == r16 * nch * (stages + 1) * 1024,
                "lattice_gemv_tiled: tiled payload length");
    TORCH_CHECK(aligned16(tiled), "lattice_gemv_tiled: tiled payload not 16-byte aligned");
    TORCH_CHECK(rscale.numel() == 0 || rscale.numel() == rows, "lattice_gemv_tiled: row_scales length");
    TORCH_CHECK(tabs.numel() == 1536, "lattice_gemv_tiled: tables");
    TORCH_CHECK(kb >= 0, "lattice_gemv_tiled: kb");
    const int vi = (int)(kb >> 16), kbl = (int)(kb & 0xFFFF);
    at::Tensor xh = x.scalar_type() == at::kHalf ? x.contiguous() : x.to(at::kHalf).contiguous();
    if (!aligned16(xh)) xh = xh.clone();
    at::Tensor y;
    const int mt = m <= 8 ? 1 : 2;
    const float f1 = (float)s1, f2 = (float)s2, f3 = (float)s3;
    switch (stages) {
        case 1: tiled_by_mt<1>(mt, vi, tiled, rscale, tabs, f1, f2, f3, (int)rows, (int)cols, xh, m, kbl, y); break;
        case 2: tiled_by_mt<2>(mt, vi, tiled, rscale, tabs, f1, f2, f3, (int)rows, (int)cols, xh, m, kbl, y); break;
        default: tiled_by_mt<3>(mt, vi, tiled, rscale, tabs, f1, f2, f3, (int)rows, (int)cols, xh, m, kbl, y); break;
    }
    return y;
}
