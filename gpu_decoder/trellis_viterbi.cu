// Trellis codec, encoder side: the tail-biting Viterbi search of pvqcodec/codecs/trellis/viterbi.py
// (spec codecs/trellis.md 6.3.9, informative) on the GPU, with the same float32 arithmetic and the
// same tie-breaking, so that it finds the same bit strings and costs as the Numba encoder.
//
// Numba keeps the cost of every state (2^L floats) and the minima of its groups, m[g] (2^(L-kV)).
// Only m is kept here: the cost of state j = (a << (L-kV)) | g at step t-1 is
// m_{t-1}[j >> kV] + e_{t-1}(j), so one step is
//
//     m_t[g] = min over a = 0 .. 2^kV - 1 (the first minimum, strict <) of m_{t-1}[j >> kV] + e_{t-1}(j)
//     back[t][g] = that a
//
// with each term rounded as Numba rounds it: m + ((w * d) * d), d = x - c(j) (V = 2:
// m + ((w0 d0) d0 + (w1 d1) d1)); m_0[g] = 0, or +inf outside the start overlap. The code values
// c(j) come from trellis.cuh, the decoder's arithmetic. The last step's costs, m[j >> kV] + e(j),
// are reduced to the first minimum over j (free end) or over the 2^kV states with the end overlap.
//
// Layout: one block per tile, blocks loop over tiles; m double-buffered in shared memory (in
// global memory, per block, when 2 x 2^(L-kV) floats do not fit: only L = 16, kV = 1), one barrier
// per step. A thread takes NB = min(4, 2^kV) consecutive groups g, which read the same m entry for
// each a: one shared load per NB states. Back pointers, one byte per group and step as in Numba,
// go to a per-block buffer in global memory; thread 0 walks them back. Steps whose weights are 1
// (all but padding and weighted encodes) leave out the product by w (1 * d = d: the same bits).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <math_constants.h>
#include "trellis.cuh"

namespace {
using namespace trellis;

constexpr int VITERBI_MAX_THREADS = 1024;  // launch bound: at most 64 registers a thread
constexpr int VITERBI_THREADS = 512;       // default block size (fewer where a step has fewer groups)
constexpr int TILE_VALUES = 256;
constexpr int SCRATCH_FLOATS = 96;  // reduction: 32 costs, 32 states, 32 spare words

template <int CODE> constexpr int hyb_floats() { return CODE == CODE_HYB ? 1024 : 0; }
template <int CODE> constexpr int base_floats() { return 2 * TILE_VALUES + hyb_floats<CODE>() + SCRATCH_FLOATS; }

// e(j) = the (weighted) squared error of state j at one step, rounded as in viterbi.py. UNIT: the
// step's weights are 1, and w * d = d exactly, so the product is left out (the same bits).
template <int CODE, bool UNIT>
__device__ __forceinline__ float state_error(uint32_t j, float x0, float x1, float w0, float w1,
                                             const float2* __restrict__ hyb) {
    if constexpr (CODE == CODE_HYB) {
        float c0, c1;
        code_hyb(j, hyb, c0, c1);
        const float d0 = __fsub_rn(x0, c0), d1 = __fsub_rn(x1, c1);
        if constexpr (UNIT) return __fadd_rn(__fmul_rn(d0, d0), __fmul_rn(d1, d1));
        return __fadd_rn(__fmul_rn(__fmul_rn(w0, d0), d0), __fmul_rn(__fmul_rn(w1, d1), d1));
    } else {
        const float c = (CODE == CODE_1MAD) ? code_1mad(j) : code_3inst(j);
        const float d = __fsub_rn(x0, c);
        if constexpr (UNIT) return __fmul_rn(d, d);
        return __fmul_rn(__fmul_rn(w0, d), d);
    }
}

// One predecessor block a for the NB groups g0 .. g0+NB-1: they all read m[(a << sh | g0) >> kV].
template <int CODE, int KV, int NB, bool UNIT, bool FIRST>
__device__ __forceinline__ void relax(uint32_t a, uint32_t g0, int sh, const float* cur, float x0, float x1, float w0,
                                      float w1, const float2* __restrict__ hyb, float* bc, uint32_t* ba) {
    const uint32_t jb = (a << sh) | g0;
    const float mp = cur[jb >> KV];
#pragma unroll
    for (int i = 0; i < NB; ++i) {
        const float c = __fadd_rn(mp, state_error<CODE, UNIT>(jb + i, x0, x1, w0, w1, hyb));
        if (FIRST) {
            bc[i] = c;
            ba[i] = 0;
        } else if (c < bc[i]) {
            bc[i] = c;
            ba[i] = a;
        }
    }
}

// One step for the NB groups g0 .. g0+NB-1: m_t and the back pointers of step t.
template <int CODE, int KV, bool UNIT>
__device__ __forceinline__ void step_groups(uint32_t g0, int sh, const float* cur, float* nxt, uint8_t* bt, float x0,
                                            float x1, float w0, float w1, const float2* __restrict__ hyb) {
    constexpr int A = 1 << KV, NB = A < 4 ? A : 4;
    float bc[NB];
    uint32_t ba[NB];
    relax<CODE, KV, NB, UNIT, true>(0u, g0, sh, cur, x0, x1, w0, w1, hyb, bc, ba);
    if constexpr (A <= 16) {
#pragma unroll
        for (uint32_t a = 1; a < (uint32_t)A; ++a)
            relax<CODE, KV, NB, UNIT, false>(a, g0, sh, cur, x0, x1, w0, w1, hyb, bc, ba);
    } else {
#pragma unroll 4
        for (uint32_t a = 1; a < (uint32_t)A; ++a)
            relax<CODE, KV, NB, UNIT, false>(a, g0, sh, cur, x0, x1, w0, w1, hyb, bc, ba);
    }
    if constexpr (NB == 4) {
        *reinterpret_cast<float4*>(nxt + g0) = make_float4(bc[0], bc[1], bc[2], bc[3]);
        *reinterpret_cast<uint32_t*>(bt + g0) = ba[0] | (ba[1] << 8) | (ba[2] << 16) | (ba[3] << 24);
    } else {
        *reinterpret_cast<float2*>(nxt + g0) = make_float2(bc[0], bc[1]);
        *reinterpret_cast<uint16_t*>(bt + g0) = (uint16_t)(ba[0] | (ba[1] << 8));
    }
}

// (c2, j2) before (c1, j1): a lower cost, or the same cost at a lower state; j < 0 is "none".
__device__ __forceinline__ bool first_min_before(float c2, int j2, float c1, int j1) {
    return j2 >= 0 && (j1 < 0 || c2 < c1 || (c2 == c1 && j2 < j1));
}

// The block's first minimum of (c, j); the result is valid in thread 0 only. Ends with a barrier.
__device__ void block_first_min(float& c, int& j, float* red_c, int* red_j) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float c2 = __shfl_down_sync(0xffffffffu, c, o);
        const int j2 = __shfl_down_sync(0xffffffffu, j, o);
        if (first_min_before(c2, j2, c, j)) {
            c = c2;
            j = j2;
        }
    }
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    if (lane == 0) {
        red_c[wid] = c;
        red_j[wid] = j;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        const int nw = blockDim.x >> 5;
        for (int i = 1; i < nw; ++i)
            if (first_min_before(red_c[i], red_j[i], c, j)) {
                c = red_c[i];
                j = red_j[i];
            }
    }
}

// One Viterbi pass over n steps; step t codes value step (t + off) mod S of the tile. start_ov /
// end_ov >= 0 restrict the first state's top L-kV bits / the last state's low L-kV bits.
// Back pointers of step t (1 .. n-1) at back[t * GP ..]. Thread 0 gets the best last state
// (-1 if none is finite) and its cost.
template <int K, int CODE>
__device__ void viterbi_pass(int n, int off, int start_ov, int end_ov, int L, const float* xs, const float* ws,
                             const float2* __restrict__ hyb, float* M, uint8_t* back, float* red_c, int* red_j,
                             float& best_c, int& best_j) {
    constexpr int V = CodeInfo<CODE>::V, KV = K * V, A = 1 << KV, S = TILE_VALUES / V;
    constexpr int NB = A < 4 ? A : 4;
    const int sh = L - KV;
    const int G = 1 << sh;
    const int GP = G > NB ? G : NB;
    const int ntup = GP / NB;
    const int tid = threadIdx.x, T = blockDim.x;
    float* cur = M;
    float* nxt = M + GP;
    for (int g = tid; g < GP; g += T) cur[g] = (start_ov < 0 || g == start_ov) ? 0.0f : CUDART_INF_F;
    __syncthreads();
    for (int t = 1; t < n; ++t) {
        const int st = (t - 1 + off) & (S - 1);
        const float x0 = xs[st * V], w0 = ws[st * V];
        const float x1 = (V == 2) ? xs[st * V + 1] : 0.0f, w1 = (V == 2) ? ws[st * V + 1] : 0.0f;
        uint8_t* bt = back + (size_t)t * GP;
        if (w0 == 1.0f && (V == 1 || w1 == 1.0f)) {  // the same in every thread: no divergence
            for (int q = tid; q < ntup; q += T)
                step_groups<CODE, KV, true>((uint32_t)q * NB, sh, cur, nxt, bt, x0, x1, w0, w1, hyb);
        } else {
            for (int q = tid; q < ntup; q += T)
                step_groups<CODE, KV, false>((uint32_t)q * NB, sh, cur, nxt, bt, x0, x1, w0, w1, hyb);
        }
        __syncthreads();
        float* tmp = cur;
        cur = nxt;
        nxt = tmp;
    }
    // the last step: every state's cost (free end) or the 2^kV states with the end overlap
    const int st = (n - 1 + off) & (S - 1);
    const float x0 = xs[st * V], w0 = ws[st * V];
    const float x1 = (V == 2) ? xs[st * V + 1] : 0.0f, w1 = (V == 2) ? ws[st * V + 1] : 0.0f;
    float lc = CUDART_INF_F;
    int lj = -1;
    if (end_ov < 0) {
        const int ns = 1 << L;
        for (int j = tid; j < ns; j += T) {
            const float e = state_error<CODE, false>((uint32_t)j, x0, x1, w0, w1, hyb);
            const float c = __fadd_rn(cur[j >> KV], e);
            if (c < lc) {
                lc = c;
                lj = j;
            }
        }
    } else {
        for (int a = tid; a < A; a += T) {
            const int j = (a << sh) | end_ov;
            const float e = state_error<CODE, false>((uint32_t)j, x0, x1, w0, w1, hyb);
            const float c = __fadd_rn(cur[j >> KV], e);
            if (c < lc) {
                lc = c;
                lj = j;
            }
        }
    }
    block_first_min(lc, lj, red_c, red_j);
    best_c = lc;
    best_j = lj;
}

// Thread 0: the state at step `stop` of the best path ending in `last` at step n-1 (0 if none),
// writing the states of steps stop .. n-1 to out (if not null) on the way.
template <int KV>
__device__ int walk_back(int last, int n, int stop, int sh, int GP, const uint8_t* back, int* out) {
    if (last < 0) {
        if (out)
            for (int t = stop; t < n; ++t) out[t] = 0;
        return 0;
    }
    int s = last;
    if (out) out[n - 1] = s;
    for (int t = n - 1; t > stop; --t) {
        const int g = s >> KV;
        s = ((int)back[(size_t)t * GP + g] << sh) | g;
        if (out) out[t - 1] = s;
    }
    return s;
}

template <int K, int CODE, bool GM>
__global__ void __launch_bounds__(VITERBI_MAX_THREADS)
trellis_viterbi_kernel(const float* __restrict__ x, const float* __restrict__ w, long long ntiles, int L, int seam,
                       int two_pass, const float2* __restrict__ hyb_g, uint8_t* back_all, long long back_stride,
                       float* gm_all, int* __restrict__ states, float* __restrict__ costs) {
    constexpr int V = CodeInfo<CODE>::V, KV = K * V, A = 1 << KV, S = TILE_VALUES / V;
    constexpr int NB = A < 4 ? A : 4;
    extern __shared__ float4 smem4[];
    float* sm = reinterpret_cast<float*>(smem4);
    float* xs = sm;
    float* ws = sm + TILE_VALUES;
    float2* hyb = reinterpret_cast<float2*>(sm + 2 * TILE_VALUES);
    float* red_c = sm + 2 * TILE_VALUES + hyb_floats<CODE>();
    int* red_j = reinterpret_cast<int*>(red_c + 32);
    int* misc = red_j + 32;
    const int sh = L - KV;
    const int G = 1 << sh;
    const int GP = G > NB ? G : NB;
    float* M = GM ? gm_all + (size_t)blockIdx.x * 2 * GP : sm + base_floats<CODE>();
    uint8_t* back = back_all + (size_t)blockIdx.x * back_stride;
    const int tid = threadIdx.x, T = blockDim.x;
    if (CODE == CODE_HYB)
        for (int i = tid; i < 512; i += T) hyb[i] = hyb_g[i];
    const bool tb = two_pass && sh > 0;
    for (long long tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
        for (int i = tid; i < TILE_VALUES; i += T) {
            xs[i] = x[tile * TILE_VALUES + i];
            ws[i] = w[tile * TILE_VALUES + i];
        }
        __syncthreads();
        float bc;
        int bj;
        int ov = -1;
        if (tb) {
            // QTIP's Algorithm 4: a free pass over steps -h .. h-1 around the seam (original step 0
            // at index h), whose best path gives the overlap at the seam ...
            const int h = seam;
            viterbi_pass<K, CODE>(2 * h, (S - h % S) % S, -1, -1, L, xs, ws, hyb, M, back, red_c, red_j, bc, bj);
            if (tid == 0) misc[0] = walk_back<KV>(bj, 2 * h, h, sh, GP, back, nullptr) >> KV;
            __syncthreads();
            ov = misc[0];
        }
        // ... then the pass over the tile with the first and last states held to that overlap.
        viterbi_pass<K, CODE>(S, 0, ov, ov, L, xs, ws, hyb, M, back, red_c, red_j, bc, bj);
        if (tid == 0) {
            walk_back<KV>(bj, S, 0, sh, GP, back, states + tile * S);
            costs[tile] = bj < 0 ? CUDART_INF_F : bc;
        }
        __syncthreads();
    }
}

int device_attr(cudaDeviceAttr a) {
    int dev = 0, v = 0;
    C10_CUDA_CHECK(cudaGetDevice(&dev));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&v, a, dev));
    return v;
}

template <int K, int CODE, bool GM>
void launch(const at::Tensor& x, const at::Tensor& w, long long ntiles, int L, int seam, bool two_pass,
            const at::Tensor& hyb, at::Tensor& states, at::Tensor& costs, int max_threads) {
    constexpr int V = CodeInfo<CODE>::V, KV = K * V, A = 1 << KV, S = TILE_VALUES / V;
    constexpr int NB = A < 4 ? A : 4;
    const int sh = L - KV;
    const long long GP = std::max(1LL << sh, (long long)NB);
    const int threads = (int)std::min<long long>(max_threads, std::max<long long>(32, GP / NB));
    const long long steps = (two_pass && sh > 0) ? std::max<long long>(S, 2LL * seam) : S;
    const size_t smem = sizeof(float) * (base_floats<CODE>() + (GM ? 0 : 2 * GP));
    auto kern = trellis_viterbi_kernel<K, CODE, GM>;
    C10_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    int per_sm = 0;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, threads, smem));
    TORCH_CHECK(per_sm > 0, "trellis_viterbi: the kernel does not fit on a multiprocessor");
    // GM: one block per multiprocessor keeps every block's m buffers (256 KB) in the L2 cache.
    const long long slots = (long long)(GM ? 1 : per_sm) * device_attr(cudaDevAttrMultiProcessorCount);
    const long long blocks = std::min(ntiles, slots);
    const long long back_stride = steps * GP;
    auto back = at::empty({blocks * back_stride}, x.options().dtype(at::kByte));
    auto gm = at::empty({GM ? blocks * 2 * GP : 1}, x.options());
    trellis_viterbi_kernel<K, CODE, GM><<<(unsigned)blocks, threads, smem, c10::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<float>(), w.data_ptr<float>(), ntiles, L, seam, two_pass ? 1 : 0,
        CODE == CODE_HYB ? reinterpret_cast<const float2*>(hyb.data_ptr<float>()) : nullptr,
        back.data_ptr<uint8_t>(), back_stride, gm.data_ptr<float>(), states.data_ptr<int>(),
        costs.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <int K, int CODE>
void by_memory(const at::Tensor& x, const at::Tensor& w, long long ntiles, int L, int seam, bool two_pass,
               const at::Tensor& hyb, at::Tensor& states, at::Tensor& costs, int max_threads) {
    constexpr int V = CodeInfo<CODE>::V, KV = K * V, A = 1 << KV;
    constexpr int NB = A < 4 ? A : 4;
    const long long GP = std::max(1LL << (L - KV), (long long)NB);
    const long long smem = (long long)sizeof(float) * (base_floats<CODE>() + 2 * GP);
    if (smem <= device_attr(cudaDevAttrMaxSharedMemoryPerBlockOptin)) {
        launch<K, CODE, false>(x, w, ntiles, L, seam, two_pass, hyb, states, costs, max_threads);
    } else if constexpr (KV == 1) {
        launch<K, CODE, true>(x, w, ntiles, L, seam, two_pass, hyb, states, costs, max_threads);
    } else {
        TORCH_CHECK(false, "trellis_viterbi: L = ", L, " needs more shared memory than the device has");
    }
}

template <int K>
void by_code(int code, const at::Tensor& x, const at::Tensor& w, long long ntiles, int L, int seam, bool two_pass,
             const at::Tensor& hyb, at::Tensor& states, at::Tensor& costs, int max_threads) {
    switch (code) {
        case CODE_1MAD: by_memory<K, CODE_1MAD>(x, w, ntiles, L, seam, two_pass, hyb, states, costs, max_threads);
            break;
        case CODE_3INST: by_memory<K, CODE_3INST>(x, w, ntiles, L, seam, two_pass, hyb, states, costs, max_threads);
            break;
        case CODE_HYB: by_memory<K, CODE_HYB>(x, w, ntiles, L, seam, two_pass, hyb, states, costs, max_threads);
            break;
        default: TORCH_CHECK(false, "trellis_viterbi: unknown code ", code);
    }
}

}  // namespace

// x, w: float32 (ntiles, 256), each tile's values (and weights) in sequence order (spec 6.3.2:
// step t, value v at t * V + v); hyb: float32 (512, 2). Writes states (int32, ntiles x 256/V: the
// state of every step) and costs (float32, ntiles). two_pass: QTIP's tail-biting two passes with
// `seam` steps on each side of the seam; otherwise one free pass (not tail-biting). threads: the
// most threads a block (0: the default, 512; a multiple of 32 up to 1024).
void trellis_viterbi(const at::Tensor& x, const at::Tensor& w, int64_t code, int64_t L, int64_t k, int64_t seam,
                     bool two_pass, const at::Tensor& hyb, at::Tensor& states, at::Tensor& costs, int64_t threads) {
    TORCH_CHECK(x.is_cuda() && x.is_contiguous() && x.scalar_type() == at::kFloat, "trellis_viterbi: bad x");
    TORCH_CHECK(w.is_cuda() && w.is_contiguous() && w.scalar_type() == at::kFloat && w.numel() == x.numel(),
                "trellis_viterbi: bad w");
    TORCH_CHECK(x.numel() % TILE_VALUES == 0, "trellis_viterbi: x is not whole tiles of 256 values");
    const long long ntiles = x.numel() / TILE_VALUES;
    const int V = code == CODE_HYB ? 2 : 1;
    TORCH_CHECK(k >= 1 && k <= 4 && L >= k * V && L <= 16, "trellis_viterbi: needs 1 <= k <= 4, k*V <= L <= 16");
    TORCH_CHECK(seam >= 1 && seam <= 4096, "trellis_viterbi: seam outside 1..4096");
    TORCH_CHECK(states.is_cuda() && states.is_contiguous() && states.scalar_type() == at::kInt &&
                    states.numel() == ntiles * (TILE_VALUES / V),
                "trellis_viterbi: bad states");
    TORCH_CHECK(costs.is_cuda() && costs.scalar_type() == at::kFloat && costs.numel() == ntiles,
                "trellis_viterbi: bad costs");
    TORCH_CHECK(threads == 0 || (threads % 32 == 0 && threads >= 32 && threads <= VITERBI_MAX_THREADS),
                "trellis_viterbi: threads must be 0 or a multiple of 32 up to ", VITERBI_MAX_THREADS);
    const int mt = threads ? (int)threads : VITERBI_THREADS;
    if (ntiles == 0) return;
    switch (k) {
        case 1: by_code<1>((int)code, x, w, ntiles, (int)L, (int)seam, two_pass, hyb, states, costs, mt); break;
        case 2: by_code<2>((int)code, x, w, ntiles, (int)L, (int)seam, two_pass, hyb, states, costs, mt); break;
        case 3: by_code<3>((int)code, x, w, ntiles, (int)L, (int)seam, two_pass, hyb, states, costs, mt); break;
        case 4: by_code<4>((int)code, x, w, ntiles, (int)L, (int)seam, two_pass, hyb, states, costs, mt); break;
        default: TORCH_CHECK(false, "trellis_viterbi: k ", k, " outside 1..4");
    }
}
