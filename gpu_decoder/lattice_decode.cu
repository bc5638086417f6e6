// Lattice codec: decode W' (rows x cols) into GPU memory, bit-exact with the Python decoder
// (spec 6.4.6: v = P * s1; v = v + U[l2] * s2; v = v + U[l3] * s3; v = v * q_r, float32, each
// operation rounded to nearest even; float16 / bfloat16 outputs round that float32 value).
// One thread per group of 8 values; consecutive threads take consecutive groups of a row, so
// a warp writes adjacent 16- or 32-byte segments.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include "common.cuh"
#include "lattice.cuh"

namespace {

template <typename Tout>
__device__ __forceinline__ void store8(Tout* dst, const float* v, int nvalid, bool vec_ok) {
    if (vec_ok && nvalid == 8) {
        alignas(16) Tout tmp[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) tmp[i] = from_f32<Tout>(v[i]);
#pragma unroll
        for (int i = 0; i < (int)(8 * sizeof(Tout)) / 16; ++i)
            reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(tmp)[i];
    } else {
        for (int i = 0; i < nvalid; ++i) dst[i] = from_f32<Tout>(v[i]);
    }
}

template <int STAGES, typename Tout>
__global__ void lattice_decode_kernel(const uint8_t* __restrict__ pat, const uint8_t* __restrict__ sgn,
                                      const uint8_t* __restrict__ lab2, const uint8_t* __restrict__ lab3,
                                      const uint16_t* __restrict__ rscale, const uint32_t* __restrict__ tabs,
                                      float s1, float s2, float s3, long long ngroups, int gr, int cols,
                                      Tout* __restrict__ out, int* __restrict__ err) {
    __shared__ uint32_t T[256], S[256], K[256];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) {
        T[i] = tabs[i];
        S[i] = tabs[256 + i];
        K[i] = tabs[512 + i];
    }
    __syncthreads();
    const long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= ngroups) return;
    const long long r = g / gr;
    const int c = (int)(g - r * gr);
    float v[8];
    lattice::e8p_point_f32(T[pat[g]] ^ S[sgn[g]], v);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = __fmul_rn(v[i], s1);
    if (STAGES >= 2) {
        float u[8];
        lattice::stage_row_f32(K[lab2[g]], u);
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = __fadd_rn(v[i], __fmul_rn(u[i], s2));
    }
    if (STAGES >= 3) {
        float u[8];
        lattice::stage_row_f32(K[lab3[g]], u);
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = __fadd_rn(v[i], __fmul_rn(u[i], s3));
    }
    if (rscale) {
        const unsigned short hs = rscale[r];
        if ((hs & 0x7C00u) == 0x7C00u) {
            atomicOr(err, 1);
            return;
        }
        const float q = __half2float(__ushort_as_half(hs));
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = __fmul_rn(v[i], q);
    }
    const bool vec_ok = (cols % (16 / (int)sizeof(Tout))) == 0;
    store8<Tout>(out + r * cols + 8LL * c, v, min(8, cols - 8 * c), vec_ok);
}

template <int STAGES, typename Tout>
void launch(const at::Tensor& pat, const at::Tensor& sgn, const at::Tensor& l2, const at::Tensor& l3,
            const at::Tensor& rscale, const at::Tensor& tabs, float s1, float s2, float s3, long long rows, int cols,
            at::Tensor& out, at::Tensor& err) {
    const int gr = (cols + 7) / 8;
    const long long ng = rows * gr;
    if (ng == 0) return;
    const int threads = 256;
    lattice_decode_kernel<STAGES, Tout><<<(unsigned)((ng + threads - 1) / threads), threads, 0,
                                          c10::cuda::getCurrentCUDAStream()>>>(
        pat.data_ptr<uint8_t>(), sgn.data_ptr<uint8_t>(), STAGES >= 2 ? l2.data_ptr<uint8_t>() : nullptr,
        STAGES >= 3 ? l3.data_ptr<uint8_t>() : nullptr,
        rscale.numel() ? reinterpret_cast<const uint16_t*>(rscale.data_ptr()) : nullptr,
        reinterpret_cast<const uint32_t*>(tabs.data_ptr()), s1, s2, s3, ng, gr, cols,
        reinterpret_cast<Tout*>(out.data_ptr()), err.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <int STAGES>
void by_out(const at::Tensor& pat, const at::Tensor& sgn, const at::Tensor& l2, const at::Tensor& l3,
            const at::Tensor& rscale, const at::Tensor& tabs, float s1, float s2, float s3, long long rows, int cols,
            at::Tensor& out, at::Tensor& err) {
    switch (out.scalar_type()) {
        case at::kFloat: launch<STAGES, float>(pat, sgn, l2, l3, rscale, tabs, s1, s2, s3, rows, cols, out, err); break;
        case at::kHalf: launch<STAGES, __half>(pat, sgn, l2, l3, rscale, tabs, s1, s2, s3, rows, cols, out, err); break;
        case at::kBFloat16:
            launch<STAGES, __nv_bfloat16>(pat, sgn, l2, l3, rscale, tabs, s1, s2, s3, rows, cols, out, err);
            break;
        default: TORCH_CHECK(false, "lattice_decode: out must be float32, float16 or bfloat16");
    }
}

}  // namespace

// pat, sgn, l2, l3: the 8-bit streams (uint8, one byte per group; l2 / l3 may be empty when
// unused); rscale: the row_scales payload as int16 (float16 bits) or empty; tabs: int32 (768,)
// = T, S, K (lattice.cuh). err bit 0: a row scale is not finite.
void lattice_decode(const at::Tensor& pat, const at::Tensor& sgn, const at::Tensor& l2, const at::Tensor& l3,
                    const at::Tensor& rscale, const at::Tensor& tabs, int64_t stages, double s1, double s2,
                    double s3, int64_t rows, int64_t cols, at::Tensor& out, at::Tensor& err) {
    TORCH_CHECK(out.is_cuda() && out.is_contiguous() && out.numel() == rows * cols, "lattice_decode: bad out");
    const long long ng = rows * ((cols + 7) / 8);
    TORCH_CHECK(pat.numel() == ng && sgn.numel() == ng, "lattice_decode: pattern / sign stream length");
    TORCH_CHECK(stages < 2 || l2.numel() == ng, "lattice_decode: stage2 stream length");
    TORCH_CHECK(stages < 3 || l3.numel() == ng, "lattice_decode: stage3 stream length");
    TORCH_CHECK(rscale.numel() == 0 || rscale.numel() == rows, "lattice_decode: row_scales length");
    TORCH_CHECK(tabs.numel() == 768, "lattice_decode: tables");
    switch (stages) {
        case 1: by_out<1>(pat, sgn, l2, l3, rscale, tabs, (float)s1, (float)s2, (float)s3, rows, (int)cols, out, err); break;
        case 2: by_out<2>(pat, sgn, l2, l3, rscale, tabs, (float)s1, (float)s2, (float)s3, rows, (int)cols, out, err); break;
        case 3: by_out<3>(pat, sgn, l2, l3, rscale, tabs, (float)s1, (float)s2, (float)s3, rows, (int)cols, out, err); break;
        default: TORCH_CHECK(false, "lattice_decode: stages ", stages, " outside 1..3");
    }
}
