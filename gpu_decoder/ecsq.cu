// Spec 6.6 (codec id 5, ecsq): W' from the 16-bit zigzag symbols of the `indices` stream
// (the raw layout of width 16 is the little-endian uint16 array, so the rans decoder's symbol
// output and a raw payload read the same). Elementwise, bit-exact in float32 (6.6.4, ecsq.cuh),
// then rounded to the output type.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include "common.cuh"
#include "ecsq.cuh"

namespace {

// err bit 1: a decoded value is not finite (payload_corrupt by spec 7.3).
template <typename T>
__global__ void ecsq_decode_kernel(const unsigned short* __restrict__ sym, long long count,
                                   const float* __restrict__ offsets, int n, float step, T* __restrict__ out,
                                   int* __restrict__ err) {
    bool bad = false;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x) {
        const unsigned s = sym[i];
        // 6.6.3: m = (s + 1) div 2, negative = s != 0 and s even (m = 0 ignores the sign)
        out[i] = from_f32<T>(ecsq_value((s + 1u) >> 1, !(s & 1u), offsets, n, step, bad));
    }
    if (bad) atomicOr(err, 1);
}

template <typename T>
void launch(const at::Tensor& sym, long long count, const at::Tensor& offsets, int n, float step, at::Tensor& out,
            at::Tensor& err) {
    if (count == 0) return;
    const int threads = 256;
    const long long want = (count + threads - 1) / threads;
    const unsigned blocks = (unsigned)(want < (1LL << 20) ? want : (1LL << 20));
    ecsq_decode_kernel<T><<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        reinterpret_cast<const unsigned short*>(sym.data_ptr<int16_t>()), count,
        n ? offsets.data_ptr<float>() : nullptr, n, step, reinterpret_cast<T*>(out.data_ptr()), err.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void ecsq_decode(const at::Tensor& sym, const at::Tensor& offsets, double step, at::Tensor& out, at::Tensor& err) {
    TORCH_CHECK(sym.is_cuda() && sym.scalar_type() == at::kShort && sym.is_contiguous(),
                "ecsq_decode: symbols must be a contiguous int16 CUDA tensor (uint16 bits)");
    TORCH_CHECK(offsets.is_cuda() && offsets.scalar_type() == at::kFloat && offsets.is_contiguous(),
                "ecsq_decode: offsets must be a contiguous float32 CUDA tensor");
    TORCH_CHECK(out.is_cuda() && out.is_contiguous() && out.numel() == sym.numel(),
                "ecsq_decode: out must be a contiguous CUDA tensor with one element per symbol");
    TORCH_CHECK(err.is_cuda() && err.scalar_type() == at::kInt && err.numel() >= 1, "ecsq_decode: bad err tensor");
    TORCH_CHECK(offsets.numel() <= 65535, "ecsq_decode: at most 65,535 offsets");
    const long long count = sym.numel();
    const int n = (int)offsets.numel();
    const float st = (float)step;  // step is a float32 of the parameter block: exact
    switch (out.scalar_type()) {
        case at::kFloat: launch<float>(sym, count, offsets, n, st, out, err); break;
        case at::kHalf: launch<__half>(sym, count, offsets, n, st, out, err); break;
        case at::kBFloat16: launch<__nv_bfloat16>(sym, count, offsets, n, st, out, err); break;
        default: TORCH_CHECK(false, "ecsq_decode: out must be float32, float16 or bfloat16");
    }
}
