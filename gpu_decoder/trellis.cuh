// The trellis codec (codec id 2; pvqcodec/codecs/trellis): 16 x 16 tiles, each a circular
// bit string of 256*k bits in 8k big-endian-bit-order 32-bit words; the state of step t is
// the L-bit window starting at bit t*k*V; codes 1MAD / 3INST (V = 1) and HYB (V = 2).
//
// A thread handles RT rows of a tile (RT = 1 for even k, 2 for odd k), so that its first
// bit, 16*RT*k*n, is word-aligned and every window offset below is a compile-time constant.
#pragma once
#include "common.cuh"

namespace trellis {

constexpr int CODE_1MAD = 0, CODE_3INST = 1, CODE_HYB = 2;

template <int CODE> struct CodeInfo { static constexpr int V = (CODE == CODE_HYB) ? 2 : 1; };

template <int K> struct Layout {
    static constexpr int RT = (K % 2 == 0) ? 1 : 2;  // rows of a tile per thread
    static constexpr int TPT = 16 / RT;              // threads per tile
    static constexpr int W = 8 * K;                  // words per tile
};

template <int K, int V> struct Window {
    static constexpr int RT = Layout<K>::RT;
    static constexpr int STEPS = 16 * RT / V;
    static constexpr int KV = K * V;
    static constexpr int NW = (((STEPS - 1) * KV) >> 5) + 2;  // words spanned by the thread's windows
};

// 1MAD: x = 34038481 s + 76625530; value = (sum of the 4 bytes of x) - 510, exactly. The byte
// sum lands in the mantissa of 2^23 (dp4a's accumulator), one subtraction centres it.
__device__ __forceinline__ float code_1mad(uint32_t s) {
    const uint32_t x = s * 34038481u + 76625530u;
    const uint32_t f = __dp4a(x, 0x01010101u, 0x4B000000u);
    return __fsub_rn(__uint_as_float(f), 8389118.0f);  // 2^23 + 510
}

// 3INST: x = 89226354 s + 64248484; r = (x & 0x8FFF8FFF) ^ 0x3B603B60; value =
// float16(f16(r >> 16) + f16(r & 0xFFFF)) (the float32 sum is exact, one rounding to f16).
__device__ __forceinline__ float code_3inst(uint32_t s) {
    const uint32_t x = s * 89226354u + 64248484u;
    const uint32_t r = (x & 0x8FFF8FFFu) ^ 0x3B603B60u;
    const float hi = __half2float(__ushort_as_half((unsigned short)(r >> 16)));
    const float lo = __half2float(__ushort_as_half((unsigned short)(r & 0xFFFFu)));
    return __half2float(__float2half_rn(__fadd_rn(hi, lo)));
}

// HYB: x = s*s + s; row (x >> 6) & 511 of the 512 x 2 table; bit 15 negates the first value.
__device__ __forceinline__ void code_hyb(uint32_t s, const float2* __restrict__ tab, float& c0, float& c1) {
    const uint32_t x = s * s + s;
    const float2 t = tab[(x >> 6) & 511u];
    c0 = ((x >> 15) & 1u) ? -t.x : t.x;
    c1 = t.y;
}

// The 16*RT code values of rows n0 .. n0+RT-1 of a tile (n0 * 16 * K bits from the tile's start).
template <int K, int CODE>
__device__ __forceinline__ void decode_rows(const uint32_t* __restrict__ tile, int n0, int L,
                                            const float2* __restrict__ hyb, float* vals) {
    constexpr int V = CodeInfo<CODE>::V;
    using Wn = Window<K, V>;
    constexpr int W = Layout<K>::W;
    const int q0 = (n0 * 16 * K) >> 5;
    uint32_t w[Wn::NW];
#pragma unroll
    for (int i = 0; i < Wn::NW; ++i) w[i] = __ldg(tile + ((q0 + i) % W));
    const int rs = 32 - L;
#pragma unroll
    for (int t = 0; t < Wn::STEPS; ++t) {
        const int bit = t * Wn::KV;
        const int qi = bit >> 5, oi = bit & 31;
        const uint32_t s = __funnelshift_l(w[qi + 1], w[qi], oi) >> rs;
        if (CODE == CODE_1MAD) {
            vals[t] = code_1mad(s);
        } else if (CODE == CODE_3INST) {
            vals[t] = code_3inst(s);
        } else {
            float a, b;
            code_hyb(s, hyb, a, b);
            vals[2 * t] = a;
            vals[2 * t + 1] = b;
        }
    }
}

}  // namespace trellis
