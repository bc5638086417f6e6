// Trellis codec: decode W' (rows x cols) into GPU memory, bit-exact with the Python decoder:
// y = c(s_t) * a_r in float32 (one rounding), a_r = scale or f32(h_r) * scale.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include "trellis.cuh"

namespace {
using namespace trellis;

// Thread layout: consecutive threads take consecutive tiles J of the same tile row n0 (RT rows),
// so a warp writes 32 adjacent 16-value segments of one row: coalesced 16-byte stores.
template <typename Tout>
__device__ __forceinline__ void store16(Tout* dst, const float* v, float a, int nvalid, bool vec_ok) {
    if (vec_ok && nvalid == 16) {
        constexpr int PER = 16 / sizeof(Tout);  // values per 16-byte store
        alignas(16) Tout tmp[16];
#pragma unroll
        for (int c = 0; c < 16; ++c) tmp[c] = from_f32<Tout>(__fmul_rn(v[c], a));
#pragma unroll
        for (int i = 0; i < 16 / PER; ++i)
            reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(tmp)[i];
    } else {
        for (int c = 0; c < nvalid; ++c) dst[c] = from_f32<Tout>(__fmul_rn(v[c], a));
    }
}

template <int K, int CODE, typename Tout>
__global__ void trellis_decode_kernel(const uint32_t* __restrict__ words, const uint16_t* __restrict__ rscale,
                                      float scale, int L, long long rows, int cols, int tj, const float2* __restrict__ hyb_g,
                                      Tout* __restrict__ out, int* __restrict__ err) {
    __shared__ float2 hyb[CODE == CODE_HYB ? 512 : 1];
    if (CODE == CODE_HYB) {
        for (int i = threadIdx.x; i < 512; i += blockDim.x) hyb[i] = hyb_g[i];
        __syncthreads();
    }
    constexpr int RT = Layout<K>::RT, TPT = Layout<K>::TPT, W = Layout<K>::W;
    const long long gt = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long ti = (rows + 15) / 16;
    const long long strip = gt / tj;  // (tile row I, row group) pairs
    const int J = (int)(gt - strip * tj);
    const long long I = strip / TPT;
    const int n0 = (int)(strip - I * TPT) * RT;
    if (I >= ti) return;
    const long long tile = I * tj + J;
    float vals[16 * RT];
    decode_rows<K, CODE>(words + tile * W, n0, L, hyb, vals);
    const bool vec_ok = (cols % (16 / (int)sizeof(Tout))) == 0;
    const int nvalid = min(16, cols - J * 16);
#pragma unroll
    for (int rr = 0; rr < RT; ++rr) {
        const long long r = I * 16 + n0 + rr;
        if (r >= rows) continue;
        float a = scale;
        if (rscale) {
            const unsigned short hs = rscale[r];
            if ((hs & 0x7C00u) == 0x7C00u) { atomicOr(err, 2); continue; }
            a = __fmul_rn(__half2float(__ushort_as_half(hs)), scale);
        }
        store16<Tout>(out + r * cols + (long long)J * 16, vals + rr * 16, a, nvalid, vec_ok);
    }
}

template <int K, int CODE, typename Tout>
void launch(const at::Tensor& words, const at::Tensor& rscale, double scale, int L, long long rows, int cols,
            const at::Tensor& hyb, at::Tensor& out, at::Tensor& err) {
    const long long ti = (rows + 15) / 16;
    const int tj = (cols + 15) / 16;
    const long long threads_total = ti * tj * Layout<K>::TPT;
    if (threads_total == 0) return;
    const int threads = 256;
    trellis_decode_kernel<K, CODE, Tout><<<(unsigned)((threads_total + threads - 1) / threads), threads, 0,
                                           c10::cuda::getCurrentCUDAStream()>>>(
        reinterpret_cast<const uint32_t*>(words.data_ptr()),
        rscale.numel() ? reinterpret_cast<const uint16_t*>(rscale.data_ptr()) : nullptr, (float)scale, L, rows, cols,
        tj, CODE == CODE_HYB ? reinterpret_cast<const float2*>(hyb.data_ptr<float>()) : nullptr,
        reinterpret_cast<Tout*>(out.data_ptr()), err.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <int K, int CODE>
void by_out(const at::Tensor& words, const at::Tensor& rscale, double scale, int L, long long rows, int cols,
            const at::Tensor& hyb, at::Tensor& out, at::Tensor& err) {
    switch (out.scalar_type()) {
        case at::kFloat: launch<K, CODE, float>(words, rscale, scale, L, rows, cols, hyb, out, err); break;
        case at::kHalf: launch<K, CODE, __half>(words, rscale, scale, L, rows, cols, hyb, out, err); break;
        case at::kBFloat16: launch<K, CODE, __nv_bfloat16>(words, rscale, scale, L, rows, cols, hyb, out, err); break;
        default: TORCH_CHECK(false, "trellis_decode: out must be float32, float16 or bfloat16");
    }
}

template <int K>
void by_code(int code, const at::Tensor& words, const at::Tensor& rscale, double scale, int L, long long rows,
             int cols, const at::Tensor& hyb, at::Tensor& out, at::Tensor& err) {
    switch (code) {
        case CODE_1MAD: by_out<K, CODE_1MAD>(words, rscale, scale, L, rows, cols, hyb, out, err); break;
        case CODE_3INST: by_out<K, CODE_3INST>(words, rscale, scale, L, rows, cols, hyb, out, err); break;
        case CODE_HYB: by_out<K, CODE_HYB>(words, rscale, scale, L, rows, cols, hyb, out, err); break;
        default: TORCH_CHECK(false, "trellis_decode: unknown code ", code);
    }
}

}  // namespace

// words: the `trellis` payload (int32 view, little-endian 32-bit symbols); rscale: the
// `row_scales` payload as int16 (float16 bits) or an empty tensor; hyb: float32 (512, 2).
void trellis_decode(const at::Tensor& words, const at::Tensor& rscale, int64_t code, int64_t L, int64_t k,
                    double scale, int64_t rows, int64_t cols, const at::Tensor& hyb, at::Tensor& out, at::Tensor& err) {
    TORCH_CHECK(out.is_cuda() && out.is_contiguous() && out.numel() == rows * cols, "trellis_decode: bad out");
    const long long ntiles = ((rows + 15) / 16) * ((cols + 15) / 16);
    TORCH_CHECK(words.numel() == ntiles * 8 * k, "trellis_decode: words length");
    switch (k) {
        case 1: by_code<1>((int)code, words, rscale, scale, (int)L, rows, (int)cols, hyb, out, err); break;
        case 2: by_code<2>((int)code, words, rscale, scale, (int)L, rows, (int)cols, hyb, out, err); break;
        case 3: by_code<3>((int)code, words, rscale, scale, (int)L, rows, (int)cols, hyb, out, err); break;
        case 4: by_code<4>((int)code, words, rscale, scale, (int)L, rows, (int)cols, hyb, out, err); break;
        case 5: by_code<5>((int)code, words, rscale, scale, (int)L, rows, (int)cols, hyb, out, err); break;
        case 6: by_code<6>((int)code, words, rscale, scale, (int)L, rows, (int)cols, hyb, out, err); break;
        case 7: by_code<7>((int)code, words, rscale, scale, (int)L, rows, (int)cols, hyb, out, err); break;
        case 8: by_code<8>((int)code, words, rscale, scale, (int)L, rows, (int)cols, hyb, out, err); break;
        default: TORCH_CHECK(false, "trellis_decode: k ", k, " outside 1..8");
    }
}
