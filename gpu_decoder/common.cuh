// Shared helpers of the pvqcodec CUDA kernels (gpu_decoder/).
//
// Bit-exact code (spec sections 5.3.6, 6.2.5 and the trellis codec's decoded value) uses
// __fadd_rn / __fsub_rn / __fmul_rn / __fdiv_rn / __fsqrt_rn, which the compiler never
// contracts, and the whole extension is compiled with -fmad=false. The fused products use
// __fmaf_rn explicitly (an explicit FMA is kept under -fmad=false); they are not bit-exact
// and are checked by relative error.
#pragma once
#include <cstdint>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

// spec 5.3.4: sign(seed, side, i) is -1 iff bit 63 of mix64(seed + (2i + side + 1) * gamma).
__device__ __forceinline__ bool rht_sign_negative(unsigned long long seed, int side, long long i) {
    unsigned long long z = seed + (2ull * (unsigned long long)i + (unsigned long long)side + 1ull) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    return (z >> 63) != 0;
}

template <typename T> __device__ __forceinline__ float to_f32(T v);
template <> __device__ __forceinline__ float to_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f32<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// n (<= 64) bits of an LSB-first packed stream (spec 4.2) starting at bit `pos`.
// Reads only the bytes that hold those bits.
__device__ __forceinline__ unsigned long long read_bits(const uint8_t* __restrict__ p, long long pos, int n) {
    if (n <= 0) return 0ull;
    const long long byte = pos >> 3;
    const int sh = (int)(pos & 7);
    const int nbytes = (sh + n + 7) >> 3;  // 1 .. 9
    unsigned long long v = 0ull;
    const int lim = nbytes < 8 ? nbytes : 8;
    for (int i = 0; i < lim; ++i) v |= (unsigned long long)p[byte + i] << (8 * i);
    v >>= sh;
    if (nbytes == 9) v |= (unsigned long long)p[byte + 8] << (64 - sh);
    if (n < 64) v &= (1ull << n) - 1ull;
    return v;
}
