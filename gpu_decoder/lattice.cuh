// The lattice codec (codec id 3; spec codecs/lattice.md, section 6.4): E8P codewords of 8
// weights (pattern byte a, sign byte b) and up to two refinement labels (rows of the stage
// table U). Three packed 256-entry tables of 32-bit words (built in gpu_decoder/__init__.py,
// `lattice_tables`) drive both kernels:
//
// - T[a]: the 8 coordinates of the base of pattern a (the doubled, signed base 2B_i, odd in
//   -5..5, the last coordinate already negated for odd patterns) as 3-bit fields
//   w_i = (2B_i + 7) / 2 in 1..6. Negating a coordinate is w -> 7 - w = w XOR 7.
// - S[b]: 7 in field i for every set bit i of the applied sign mask m = b XOR p, and the
//   parity p = popcount(b) mod 2 in bits 1 and 17 (where T has zeros). So T[a] XOR S[b]
//   holds the signed coordinates v_i = 2 w_i - 7 and p: the E8P point is
//   P_i = v_i / 2 + sigma / 4 = w_i - 3.5 + sigma / 4 with sigma = +1 (p = 0) or -1 (p = 1).
// - K[l]: U[l] = k_l + d with k_l a point of E8 (half-integers; 2k in -4..2) and d = a - m
//   the same vector for every label (spec 6.4.5: U[l] = t_l - m, t_l = a + a point of E8);
//   the nibble 2k_i + 4 (0..6) of each coordinate.
//
// Field positions (bit offsets), chosen so that a pair of coordinates (2j, 2j+1) lands in the
// low and high halves of a half2 word and converts to float16 with one mask and one add:
//   T / S: coordinate 0 at 2, 1 at 18, 2 at 5, 3 at 21, 4 at 8, 5 at 24, 6 at 11, 7 at 27;
//   K:     coordinate 0 at 0, 1 at 16, 2 at 4, 3 at 20, 4 at 8, 5 at 24, 6 at 12, 7 at 28.
#pragma once
#include <cstdint>
#include <cuda_fp16.h>

namespace lattice {

__host__ __device__ constexpr int tpos(int i) {
    return i == 0 ? 2 : i == 1 ? 18 : i == 2 ? 5 : i == 3 ? 21 : i == 4 ? 8 : i == 5 ? 24 : i == 6 ? 11 : 27;
}
__host__ __device__ constexpr int kpos(int i) { return (i & 1) * 16 + (i >> 1) * 4; }

// d = a - m (spec 6.4.5): U[l] = k_l + d; d times 512 is (0, 24, 44, 60, 72, 80, 84, 428).
__host__ __device__ constexpr float dvec(int i) {
    return (i == 0 ? 0.f : i == 1 ? 24.f : i == 2 ? 44.f : i == 3 ? 60.f : i == 4 ? 72.f : i == 5 ? 80.f
            : i == 6 ? 84.f : 428.f) * (1.0f / 512.0f);
}

// ---- float32 decode (bit-exact path) ---------------------------------------------------------

// The E8P point of (T[a] XOR S[b]) in float32 (exact: multiples of 1/4).
__device__ __forceinline__ void e8p_point_f32(uint32_t ts, float P[8]) {
    const float off = (ts & 2u) ? -3.75f : -3.25f;  // -3.5 + sigma / 4
#pragma unroll
    for (int i = 0; i < 8; ++i) P[i] = __fadd_rn((float)((ts >> tpos(i)) & 7u), off);
}

// Row l of U in float32 from K[l] (exact: multiples of 1/512 below 2 in magnitude).
__device__ __forceinline__ void stage_row_f32(uint32_t kw, float U[8]) {
#pragma unroll
    for (int i = 0; i < 8; ++i)
        U[i] = __fadd_rn(__fmul_rn((float)((int)((kw >> kpos(i)) & 15u) - 4), 0.5f), dvec(i));
}

// ---- float16 fragments (fused product) --------------------------------------------------------

// (a & b) | c in one LOP3. With b an immediate the compiler otherwise emits an AND and an OR
// (a LOP3 takes one immediate); here c is forced into a register, which the loop keeps.
template <uint32_t B>
__device__ __forceinline__ uint32_t lop3_and_or(uint32_t a, uint32_t c) {
    uint32_t d;
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(a), "n"(B), "r"(c));
    return d;
}

__device__ __forceinline__ uint32_t hadd2_bits(uint32_t a, uint32_t b) {
    __half2 r = __hadd2(*reinterpret_cast<const __half2*>(&a), *reinterpret_cast<const __half2*>(&b));
    return *reinterpret_cast<uint32_t*>(&r);
}

__device__ __forceinline__ uint32_t hfma2_bits(uint32_t a, uint32_t b, uint32_t c) {
    __half2 r = __hfma2(*reinterpret_cast<const __half2*>(&a), *reinterpret_cast<const __half2*>(&b),
                        *reinterpret_cast<const __half2*>(&c));
    return *reinterpret_cast<uint32_t*>(&r);
}

// The E8P point as 4 half2 words (coordinates (0,1), (2,3), (4,5), (6,7)), exact in float16.
// A field w at bits 2..4 of a half with exponent bits 0x5C00 (256) reads 256 + w; at bits 5..7
// with 0x5000 (32) it reads 32 + w. Adding -(259.5 - sigma/4) = 0xDC0D / 0xDC0F (sigma = +1 / -1)
// or -(35.5 - sigma/4) = 0xD068 / 0xD078 gives w - 3.5 + sigma / 4 exactly.
__device__ __forceinline__ void e8p_point_h2(uint32_t ts, uint32_t h[4]) {
    const uint32_t c8 = lop3_and_or<0x00020002u>(ts, 0xDC0DDC0Du);
    const uint32_t c5 = lop3_and_or<0x00100010u>(ts << 3, 0xD068D068u);
    const uint32_t t6 = ts >> 6;
    h[0] = hadd2_bits(lop3_and_or<0x001C001Cu>(ts, 0x5C005C00u), c8);
    h[1] = hadd2_bits(lop3_and_or<0x00E000E0u>(ts, 0x50005000u), c5);
    h[2] = hadd2_bits(lop3_and_or<0x001C001Cu>(t6, 0x5C005C00u), c8);
    h[3] = hadd2_bits(lop3_and_or<0x00E000E0u>(t6, 0x50005000u), c5);
}

// ---- the fused product's own E8P tables (T', S'; `lattice_gemv_tables` in __init__.py) ----------
// Each coordinate is one 4-bit field f_i = 2 w_i + p' (p' = 1 - p, the inverted parity) whose
// lowest bit sits at rpos(i), the field wrapping around bit 31 for coordinate 7; T'[a] holds
// 2 w_i, S'[b] holds 14 m_i + p', so T'[a] XOR S'[b] holds every f_i. The fields of coordinates
// (0, 1) and (2, 3) sit at bits 1..4 / 17..20 and 5..8 / 21..24 of the word, those of (4, 5) and
// (6, 7) at the same bits of the word rotated right by 8: each pair converts with one LOP3 (mask |
// exponent) and one HADD2 whose constant does not depend on the parity. With P_i = f_i / 2 - 3.75:
// bits 1..4 under 0x5C00 (256, bit 1 = 1/2) read 256 + f/2, minus 259.75 (0xDC0F); bits 5..8
// under 0x4C00 (16, bit 5 = 1/2) read 16 + f/2, minus 19.75 (0xCCF0). All exact in float16.
__host__ __device__ constexpr int rpos(int i) {
    return i == 0 ? 1 : i == 1 ? 17 : i == 2 ? 5 : i == 3 ? 21 : i == 4 ? 9 : i == 5 ? 25 : i == 6 ? 13 : 29;
}

__device__ __forceinline__ void e8p_point_h2_rot(uint32_t ts, uint32_t h[4]) {
    const uint32_t tb = __funnelshift_r(ts, ts, 8);  // rotate right by 8
    const uint32_t c256 = 0xDC0FDC0Fu, c16 = 0xCCF0CCF0u;
    h[0] = hadd2_bits(lop3_and_or<0x001E001Eu>(ts, 0x5C005C00u), c256);
    h[1] = hadd2_bits(lop3_and_or<0x01E001E0u>(ts, 0x4C004C00u), c16);
    h[2] = hadd2_bits(lop3_and_or<0x001E001Eu>(tb, 0x5C005C00u), c256);
    h[3] = hadd2_bits(lop3_and_or<0x01E001E0u>(tb, 0x4C004C00u), c16);
}

// k_l (U[l] - d) as 4 half2 words, exact. A nibble at bits 0..3 under 0x6400 (1024) reads
// 1024 + n, at bits 4..7 under 0x5400 (64) reads 64 + n; k = (n - 4) / 2 = h/2 - 514 or h/2 - 34.
__device__ __forceinline__ void stage_k_h2(uint32_t kw, uint32_t h[4]) {
    const uint32_t half_ = 0x38003800u;        // (0.5, 0.5)
    const uint32_t c10 = 0xE004E004u;          // -514
    const uint32_t c6 = 0xD040D040u;           // -34
    const uint32_t k8 = kw >> 8;
    h[0] = hfma2_bits(lop3_and_or<0x000F000Fu>(kw, 0x64006400u), half_, c10);
    h[1] = hfma2_bits(lop3_and_or<0x00F000F0u>(kw, 0x54005400u), half_, c6);
    h[2] = hfma2_bits(lop3_and_or<0x000F000Fu>(k8, 0x64006400u), half_, c10);
    h[3] = hfma2_bits(lop3_and_or<0x00F000F0u>(k8, 0x54005400u), half_, c6);
}

}  // namespace lattice
