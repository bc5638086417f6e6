// Fused trellis decode + matrix product y'[m][r] = sum_c W'[r][c] x'[m][c] for 1..16 rows of
// activations x' (float32, already through the column-side RHT). The decoded weights never
// reach memory: each thread decodes 16*RT weights of a tile in registers and multiplies them
// by the block's slice of x' in shared memory.
//
// Grid: (tile rows, splits of the tile columns). Block: 256 threads = 256/TPT tiles side by
// side; each block walks its slice of tile columns and adds its 16 row sums (times a_r) into
// y' with atomicAdd (y' zeroed by the caller).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include "trellis.cuh"

namespace {
using namespace trellis;
constexpr int THREADS = 256;

template <int K, int CODE, int MT>
__global__ void __launch_bounds__(THREADS) trellis_gemv_kernel(
    const uint32_t* __restrict__ words, const uint16_t* __restrict__ rscale, float scale, int L, int rows, int cols,
    int tj, int jr, const float* __restrict__ x, int m, const float2* __restrict__ hyb_g, float* __restrict__ y) {
    constexpr int RT = Layout<K>::RT, TPT = Layout<K>::TPT, W = Layout<K>::W;
    constexpr int TPI = THREADS / TPT;  // tiles per iteration
    extern __shared__ float xs[];       // [MT][jr*16]
    __shared__ float2 hyb[CODE == CODE_HYB ? 512 : 1];
    __shared__ float red[THREADS / 32][16][MT];
    const int I = blockIdx.x;
    const int J0 = blockIdx.y * jr;
    const int J1 = min(tj, J0 + jr);
    const int ncol = (J1 - J0) * 16;
    if (CODE == CODE_HYB)
        for (int i = threadIdx.x; i < 512; i += THREADS) hyb[i] = hyb_g[i];
    for (int i = threadIdx.x; i < MT * ncol; i += THREADS) {
        const int mm = i / ncol, c = i - mm * ncol;
        const int col = J0 * 16 + c;
        xs[mm * jr * 16 + c] = (mm < m && col < cols) ? x[(long long)mm * cols + col] : 0.0f;
    }
    __syncthreads();
    const int jj = threadIdx.x / TPT;
    const int n0 = (threadIdx.x - jj * TPT) * RT;
    float acc[RT][MT];
#pragma unroll
    for (int rr = 0; rr < RT; ++rr)
#pragma unroll
        for (int mm = 0; mm < MT; ++mm) acc[rr][mm] = 0.0f;
    const uint32_t* base = words + ((long long)I * tj) * W;
    for (int J = J0 + jj; J < J1; J += TPI) {
        float vals[16 * RT];
        decode_rows<K, CODE>(base + (long long)J * W, n0, L, hyb, vals);
        const float* xc = xs + (J - J0) * 16;
#pragma unroll
        for (int mm = 0; mm < MT; ++mm) {
            const float4* xv = reinterpret_cast<const float4*>(xc + mm * jr * 16);
            float xr[16];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const float4 t = xv[i];
                xr[4 * i] = t.x; xr[4 * i + 1] = t.y; xr[4 * i + 2] = t.z; xr[4 * i + 3] = t.w;
            }
#pragma unroll
            for (int rr = 0; rr < RT; ++rr) {
                float s = acc[rr][mm];
#pragma unroll
                for (int c = 0; c < 16; ++c) s = __fmaf_rn(vals[rr * 16 + c], xr[c], s);
                acc[rr][mm] = s;
            }
        }
    }
    // Reduce over the tiles of a warp (lanes with the same rows), then over the warps.
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int rr = 0; rr < RT; ++rr)
#pragma unroll
        for (int mm = 0; mm < MT; ++mm) {
            float v = acc[rr][mm];
#pragma unroll
            for (int o = TPT; o < 32; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            acc[rr][mm] = v;
        }
    if (lane < TPT) {
#pragma unroll
        for (int rr = 0; rr < RT; ++rr)
#pragma unroll
            for (int mm = 0; mm < MT; ++mm) red[warp][n0 + rr][mm] = acc[rr][mm];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < 16 * MT; i += THREADS) {
        const int n = i / MT, mm = i - n * MT;
        const int r = I * 16 + n;
        if (r >= rows || mm >= m) continue;
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < THREADS / 32; ++w) s += red[w][n][mm];
        float a = scale;
        if (rscale) a = __half2float(__ushort_as_half(rscale[r])) * scale;
        atomicAdd(y + (long long)mm * rows + r, s * a);
    }
}

template <int K, int CODE, int MT>
void launch(const at::Tensor& words, const at::Tensor& rscale, double scale, int L, int rows, int cols,
            const at::Tensor& hyb, const at::Tensor& x, int m, int jr, at::Tensor& y) {
    const int ti = (rows + 15) / 16, tj = (cols + 15) / 16;
    const int splits = (tj + jr - 1) / jr;
    const size_t smem = (size_t)MT * jr * 16 * sizeof(float);
    auto kern = trellis_gemv_kernel<K, CODE, MT>;
    if (smem > 48 * 1024) C10_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    dim3 grid(ti, splits);
    kern<<<grid, THREADS, smem, c10::cuda::getCurrentCUDAStream()>>>(
        reinterpret_cast<const uint32_t*>(words.data_ptr()),
        rscale.numel() ? reinterpret_cast<const uint16_t*>(rscale.data_ptr()) : nullptr, (float)scale, L, rows, cols,
        tj, jr, x.data_ptr<float>(), m, CODE == CODE_HYB ? reinterpret_cast<const float2*>(hyb.data_ptr<float>()) : nullptr,
        y.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <int K, int CODE>
void by_m(int mt, const at::Tensor& words, const at::Tensor& rscale, double scale, int L, int rows, int cols,
          const at::Tensor& hyb, const at::Tensor& x, int m, int jr, at::Tensor& y) {
    switch (mt) {
        case 1: launch<K, CODE, 1>(words, rscale, scale, L, rows, cols, hyb, x, m, jr, y); break;
        case 2: launch<K, CODE, 2>(words, rscale, scale, L, rows, cols, hyb, x, m, jr, y); break;
        case 4: launch<K, CODE, 4>(words, rscale, scale, L, rows, cols, hyb, x, m, jr, y); break;
        case 8: launch<K, CODE, 8>(words, rscale, scale, L, rows, cols, hyb, x, m, jr, y); break;
        case 16: launch<K, CODE, 16>(words, rscale, scale, L, rows, cols, hyb, x, m, jr, y); break;
        default: TORCH_CHECK(false, "trellis_gemv: batch tile ", mt);
    }
}

template <int K>
void by_code(int code, int mt, const at::Tensor& words, const at::Tensor& rscale, double scale, int L, int rows,
             int cols, const at::Tensor& hyb, const at::Tensor& x, int m, int jr, at::Tensor& y) {
    switch (code) {
        case CODE_1MAD: by_m<K, CODE_1MAD>(mt, words, rscale, scale, L, rows, cols, hyb, x, m, jr, y); break;
        case CODE_3INST: by_m<K, CODE_3INST>(mt, words, rscale, scale, L, rows, cols, hyb, x, m, jr, y); break;
        case CODE_HYB: by_m<K, CODE_HYB>(mt, words, rscale, scale, L, rows, cols, hyb, x, m, jr, y); break;
        default: TORCH_CHECK(false, "trellis_gemv: unknown code ", code);
    }
}

}  // namespace

// x: float32 (m, cols) contiguous, m <= 16; y: float32 (m, rows), zeroed. jr: tile columns
// per block (x slice of 16*jr*mt floats in shared memory).
void trellis_gemv(const at::Tensor& words, const at::Tensor& rscale, int64_t code, int64_t L, int64_t k, double scale,
                  int64_t rows, int64_t cols, const at::Tensor& hyb, const at::Tensor& x, at::Tensor& y, int64_t jr) {
    const int m = (int)x.size(0);
    TORCH_CHECK(m >= 1 && m <= 16, "trellis_gemv: 1..16 rows of activations");
    TORCH_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous() && x.size(1) == cols, "trellis_gemv: bad x");
    TORCH_CHECK(y.scalar_type() == at::kFloat && y.is_contiguous() && y.numel() == m * rows, "trellis_gemv: bad y");
    const int mt = m <= 1 ? 1 : m <= 2 ? 2 : m <= 4 ? 4 : m <= 8 ? 8 : 16;
    switch (k) {
        case 1: by_code<1>((int)code, mt, words, rscale, scale, (int)L, (int)rows, (int)cols, hyb, x, m, (int)jr, y); break;
        case 2: by_code<2>((int)code, mt, words, rscale, scale, (int)L, (int)rows, (int)cols, hyb, x, m, (int)jr, y); break;
        case 3: by_code<3>((int)code, mt, words, rscale, scale, (int)L, (int)rows, (int)cols, hyb, x, m, (int)jr, y); break;
        case 4: by_code<4>((int)code, mt, words, rscale, scale, (int)L, (int)rows, (int)cols, hyb, x, m, (int)jr, y); break;
        default: TORCH_CHECK(false, "trellis_gemv: fused product for k 1..4 only (got ", k, ")");
    }
}
