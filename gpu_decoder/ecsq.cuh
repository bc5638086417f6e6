// The ecsq decoded value (spec 6.6.4), the one place in CUDA: used by the ecsq codec (ecsq.cu)
// and by the ectcq codec (ectcq.cu, spec 6.7), whose value is 6.6.4's for the grid magnitude.
//   x = +0.0 (m = 0), else a = (float32(m) - off(m)) * step, x = a with its sign bit flipped if negative
// with __fsub_rn / __fmul_rn (never contracted to an FMA). float32(m) is exact for m <= 2^24.
#pragma once
#include <cuda_runtime.h>

// off(m) = offsets[min(m, n) - 1] (n >= 1), 0 for n = 0. `bad` collects a non-finite value (7.3).
__device__ __forceinline__ float ecsq_value(unsigned m, bool negative, const float* __restrict__ offsets, int n,
                                            float step, bool& bad) {
    if (!m) return 0.0f;  // +0.0
    const float off = n ? __ldg(offsets + (m < (unsigned)n ? m : (unsigned)n) - 1) : 0.0f;
    const float a = __fmul_rn(__fsub_rn((float)m, off), step);
    bad |= !isfinite(a);
    return __uint_as_float(__float_as_uint(a) ^ ((unsigned)negative << 31));  // flip the sign bit only
}
