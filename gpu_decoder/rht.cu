// Spec 5.3: the randomized Hadamard transform of one side, applied to every row of a
// (V x N) matrix (vectors contiguous). The inverse (decoder) follows 5.3.6 step by step
// and is bit-exact; the forward (activations of the fused products) is the same
// structure with H_h untransposed and the signs applied first.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include "common.cuh"

namespace {

// One CUDA block per (vector, transform block). Shared memory: v[b] (+ z[b] when h > 1).
template <typename Tin, typename Tout>
__global__ void rht_side_kernel(const Tin* __restrict__ in, Tout* __restrict__ out, long long nvec, int N, int b,
                                int h, int q, int e, const int8_t* __restrict__ H, unsigned long long seed,
                                int side, int forward, float cb) {
    extern __shared__ float sm[];
    float* v = sm;
    float* z = sm + b;
    const int nblk = N / b;
    const long long vec = blockIdx.x / nblk;
    const int blk = (int)(blockIdx.x - vec * nblk);
    const long long base = vec * (long long)N + (long long)blk * b;
    const long long gidx = (long long)blk * b;  // index along the whole side (signs)
    for (int i = threadIdx.x; i < b; i += blockDim.x) {
        float x = to_f32<Tin>(in[base + i]);
        if (forward && rht_sign_negative(seed, side, gidx + i)) x = -x;
        v[i] = x;
    }
    __syncthreads();
    // Step 1: Sylvester butterflies, stages t = 0 .. e-1 in increasing order.
    const int halfq = q >> 1;
    for (int t = 0; t < e; ++t) {
        const int npairs = b >> 1;
        for (int p = threadIdx.x; p < npairs; p += blockDim.x) {
            const int ih = p / halfq;
            const int pp = p - ih * halfq;
            const int lo = pp & ((1 << t) - 1);
            const int i2 = ((pp >> t) << (t + 1)) | lo;
            const int ia = ih * q + i2, ib = ia + (1 << t);
            const float a = v[ia], c = v[ib];
            v[ia] = __fadd_rn(a, c);
            v[ib] = __fsub_rn(a, c);
        }
        __syncthreads();
    }
    const float* res = v;
    if (h > 1) {
        // Step 2: z[i_h] = sum_j H[j][i_h] w[j] (inverse; forward uses H[i_h][j]), j increasing.
        for (int i = threadIdx.x; i < b; i += blockDim.x) {
            const int ih = i / q;
            const int i2 = i - ih * q;
            const int c0 = forward ? H[ih * h] : H[ih];
            float acc = c0 > 0 ? v[i2] : -v[i2];
            for (int j = 1; j < h; ++j) {
                const int c = forward ? H[ih * h + j] : H[j * h + ih];
                const float w = v[j * q + i2];
                acc = c > 0 ? __fadd_rn(acc, w) : __fsub_rn(acc, w);
            }
            z[i] = acc;
        }
        __syncthreads();
        res = z;
    }
    // Steps 3 and 4: scale by c_b, then the sign (a negation).
    for (int i = threadIdx.x; i < b; i += blockDim.x) {
        float x = __fmul_rn(res[i], cb);
        if (!forward && rht_sign_negative(seed, side, gidx + i)) x = -x;
        out[base + i] = from_f32<Tout>(x);
    }
}

template <typename Tin, typename Tout>
void launch(const at::Tensor& in, at::Tensor& out, int b, int h, int q, const at::Tensor& H, int64_t seed, int side,
            bool forward, double cb) {
    const long long nvec = in.size(0);
    const int N = (int)in.size(1);
    int e = 0;
    while ((1 << e) < q) ++e;
    int threads = b / 2;
    threads = threads < 32 ? 32 : (threads > 512 ? 512 : threads);
    threads = (threads + 31) / 32 * 32;
    const size_t smem = (size_t)b * sizeof(float) * (h > 1 ? 2 : 1);
    auto kern = rht_side_kernel<Tin, Tout>;
    if (smem > 48 * 1024) C10_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const long long blocks = nvec * (long long)(N / b);
    if (blocks == 0) return;
    TORCH_CHECK(blocks < (1ll << 31), "rht_side: too many blocks");
    kern<<<(unsigned)blocks, threads, smem, c10::cuda::getCurrentCUDAStream()>>>(
        reinterpret_cast<const Tin*>(in.data_ptr()), reinterpret_cast<Tout*>(out.data_ptr()), nvec, N, b, h, q, e,
        h > 1 ? H.data_ptr<int8_t>() : nullptr, (unsigned long long)seed, side, forward ? 1 : 0, (float)cb);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename Tin>
void dispatch_out(const at::Tensor& in, at::Tensor& out, int b, int h, int q, const at::Tensor& H, int64_t seed,
                  int side, bool forward, double cb) {
    switch (out.scalar_type()) {
        case at::kFloat: launch<Tin, float>(in, out, b, h, q, H, seed, side, forward, cb); break;
        case at::kHalf: launch<Tin, __half>(in, out, b, h, q, H, seed, side, forward, cb); break;
        case at::kBFloat16: launch<Tin, __nv_bfloat16>(in, out, b, h, q, H, seed, side, forward, cb); break;
        default: TORCH_CHECK(false, "rht_side: output must be float32, float16 or bfloat16");
    }
}

}  // namespace

// Every row of `in` (V x N, contiguous) through one side transform into `out` (same shape;
// may be `in` itself). cb: the float32 constant c_b (5.3.5). seed: the uint64 seed's bits.
void rht_side(const at::Tensor& in, at::Tensor& out, int64_t b, int64_t h, int64_t q, const at::Tensor& H,
              int64_t seed, int64_t side, bool forward, double cb) {
    TORCH_CHECK(in.is_cuda() && out.is_cuda() && in.dim() == 2 && in.is_contiguous() && out.is_contiguous(),
                "rht_side: contiguous 2-D CUDA tensors expected");
    TORCH_CHECK(in.sizes() == out.sizes(), "rht_side: shape mismatch");
    TORCH_CHECK(b >= 1 && b * h * 0 == 0 && in.size(1) % b == 0 && h * q == b, "rht_side: bad block");
    TORCH_CHECK(h == 1 || (H.is_cuda() && H.scalar_type() == at::kChar && H.numel() == h * h), "rht_side: bad H_h");
    switch (in.scalar_type()) {
        case at::kFloat: dispatch_out<float>(in, out, (int)b, (int)h, (int)q, H, seed, (int)side, forward, cb); break;
        case at::kHalf: dispatch_out<__half>(in, out, (int)b, (int)h, (int)q, H, seed, (int)side, forward, cb); break;
        case at::kBFloat16:
            dispatch_out<__nv_bfloat16>(in, out, (int)b, (int)h, (int)q, H, seed, (int)side, forward, cb);
            break;
        default: TORCH_CHECK(false, "rht_side: input must be float32, float16 or bfloat16");
    }
}
