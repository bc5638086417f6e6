// Spec 6.2 (codec id 1, pvq): decode every group of W' from the raw-packed payloads
// (row_scales, gains, shapes) in GPU memory, bit-exact (6.2.5). One thread per group walks
// the enumeration of pvq-enumeration.md section 4 with a multiword count table N(n, t).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include "common.cuh"

namespace {

template <int LIMBS>
struct Big {
    unsigned long long w[LIMBS];
};

template <int LIMBS>
__device__ __forceinline__ bool big_lt(const Big<LIMBS>& a, const unsigned long long* __restrict__ c) {
#pragma unroll
    for (int l = LIMBS - 1; l >= 0; --l) {
        const unsigned long long x = c[l];
        if (a.w[l] != x) return a.w[l] < x;
    }
    return false;
}

template <int LIMBS>
__device__ __forceinline__ void big_sub(Big<LIMBS>& a, const unsigned long long* __restrict__ c) {
    unsigned long long borrow = 0;
#pragma unroll
    for (int l = 0; l < LIMBS; ++l) {
        const unsigned long long x = c[l];
        const unsigned long long d = a.w[l] - x - borrow;
        borrow = (a.w[l] < x || (a.w[l] == x && borrow)) ? 1ull : 0ull;
        a.w[l] = d;
    }
}

// err bits: 1 = shape index >= N(d, k); 2 = row scale not finite.
template <int LIMBS>
__global__ void pvq_decode_kernel(const uint8_t* __restrict__ shapes, const uint8_t* __restrict__ gains,
                                  const uint8_t* __restrict__ scales, const float* __restrict__ gtab,
                                  const unsigned long long* __restrict__ ntab, int d, int k, int ibits, int gbits,
                                  long long rows, int cols, int gpr, float* __restrict__ out, int* __restrict__ err) {
    const long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= rows * (long long)gpr) return;
    const long long r = g / gpr;
    const int c = (int)(g - r * gpr);
    // 6.2.3 streams: row scale (float16 bits), gain index, shape index.
    const unsigned short hs = (unsigned short)read_bits(scales, r * 16, 16);
    if ((hs & 0x7C00u) == 0x7C00u) { atomicOr(err, 2); return; }
    const float scale = __half2float(__ushort_as_half(hs));
    const int qg = (int)read_bits(gains, g * (long long)gbits, gbits);
    const float gain = gtab[qg];
    Big<LIMBS> b;
#pragma unroll
    for (int l = 0; l < LIMBS; ++l) {
        const int lo = l * 64;
        const int n = ibits - lo < 64 ? ibits - lo : 64;
        b.w[l] = n > 0 ? read_bits(shapes, g * (long long)ibits + lo, n) : 0ull;
    }
    const int K1 = k + 1;
    // pvq-enumeration section 3: b >= N(d, k) is corrupt.
    if (!big_lt<LIMBS>(b, ntab + ((long long)d * K1 + k) * LIMBS)) { atomicOr(err, 1); return; }
    float* row = out + r * (long long)cols;
    const int c0 = c * d;
    int krem = k;
    int ss = 0;
    // Section 4, pass 1: y_i as exact float values into the output, sum of squares.
    for (int i = 0; i < d; ++i) {
        int y = 0;
        if (krem > 0) {
            const int rr = d - i - 1;
            const unsigned long long* nr = ntab + ((long long)rr * K1) * LIMBS;
            if (!big_lt<LIMBS>(b, nr + (long long)krem * LIMBS)) {
                big_sub<LIMBS>(b, nr + (long long)krem * LIMBS);
                int j = 1;
                while (true) {
                    const unsigned long long* cc = nr + (long long)(krem - j) * LIMBS;
                    if (big_lt<LIMBS>(b, cc)) { y = j; break; }
                    big_sub<LIMBS>(b, cc);
                    if (big_lt<LIMBS>(b, cc)) { y = -j; break; }
                    big_sub<LIMBS>(b, cc);
                    ++j;
                }
                krem -= j;
            }
        }
        ss += y * y;
        if (c0 + i < cols) row[c0 + i] = (float)y;
    }
    // 6.2.5: nrm = sqrt(f32(ss)); a = f32(s_r) * G[q]; c = a / nrm; x_i = c * f32(y_i).
    const float nrm = __fsqrt_rn((float)ss);
    const float a = __fmul_rn(scale, gain);
    const float cf = __fdiv_rn(a, nrm);
    for (int i = 0; i < d && c0 + i < cols; ++i) row[c0 + i] = __fmul_rn(cf, row[c0 + i]);
}

template <int LIMBS>
void launch(const at::Tensor& shapes, const at::Tensor& gains, const at::Tensor& scales, const at::Tensor& gtab,
            const at::Tensor& ntab, int d, int k, int ibits, int gbits, long long rows, int cols, at::Tensor& out,
            at::Tensor& err) {
    const int gpr = (cols + d - 1) / d;
    const long long groups = rows * gpr;
    if (groups == 0) return;
    const int threads = 128;
    pvq_decode_kernel<LIMBS><<<(unsigned)((groups + threads - 1) / threads), threads, 0,
                               c10::cuda::getCurrentCUDAStream()>>>(
        shapes.data_ptr<uint8_t>(), gains.numel() ? gains.data_ptr<uint8_t>() : nullptr, scales.data_ptr<uint8_t>(),
        gtab.data_ptr<float>(), reinterpret_cast<const unsigned long long*>(ntab.data_ptr<int64_t>()), d, k, ibits,
        gbits, rows, cols, gpr, out.data_ptr<float>(), err.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

// ntab: int64 (d+1, k+1, limbs) little-endian limbs of N(n, t); limbs in {1,2,3,4,6,8,12,17}.
void pvq_decode(const at::Tensor& shapes, const at::Tensor& gains, const at::Tensor& scales, const at::Tensor& gtab,
                const at::Tensor& ntab, int64_t d, int64_t k, int64_t ibits, int64_t gbits, int64_t rows,
                int64_t cols, at::Tensor& out, at::Tensor& err) {
    TORCH_CHECK(out.is_cuda() && out.scalar_type() == at::kFloat && out.is_contiguous() && out.numel() == rows * cols,
                "pvq_decode: out must be a contiguous float32 CUDA tensor of rows x cols");
    TORCH_CHECK(ntab.scalar_type() == at::kLong && ntab.dim() == 3 && ntab.size(0) == d + 1 && ntab.size(1) == k + 1,
                "pvq_decode: bad count table");
    const int limbs = (int)ntab.size(2);
    TORCH_CHECK(ibits <= 64 * limbs, "pvq_decode: table limbs too few for the index");
#define PVQ_CASE(L) \
    case L: launch<L>(shapes, gains, scales, gtab, ntab, (int)d, (int)k, (int)ibits, (int)gbits, rows, (int)cols, out, err); break;
    switch (limbs) {
        PVQ_CASE(1) PVQ_CASE(2) PVQ_CASE(3) PVQ_CASE(4) PVQ_CASE(6) PVQ_CASE(8) PVQ_CASE(12) PVQ_CASE(17)
        default: TORCH_CHECK(false, "pvq_decode: unsupported limb count ", limbs);
    }
#undef PVQ_CASE
}
