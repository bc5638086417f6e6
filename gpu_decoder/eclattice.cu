// Spec 6.8 (codec id 7, eclattice): W' from the doubled coordinates c_0 .. c_7 of E8 points, one
// group of 8 values per point, every group decoded by its own thread.
//
// A group's symbols sit at positions that depend on the groups before it: its `mid` symbols at 6
// times the number of earlier groups of its coset, its last coordinate at the number of earlier
// groups of its class (integer of residue 0, integer of residue 2, half-integer). So the decode runs
// in three passes over all groups, each fully parallel, with two prefix sums between them
// (torch.cumsum on the device, in the host wrapper; flags uint8, positions int32):
//   1. coset of every group from its `first` symbol                       -> is_int[g]
//      int_before = exclusive prefix sum of is_int
//   2. c_0 .. c_6 and the residue of c_7 of every group (steps 1 to 3)    -> is_res0[g]
//      res0_before = exclusive prefix sum of is_res0
//   3. every group again, with its last coordinate (steps 1 to 5)         -> W'
// This is simpler than a walk per row and does not leave the GPU idle on matrices with few rows;
// positions from global prefix sums equal those from the row counts whenever the row counts are
// right, and the wrapper checks that they are (the row counts exist so that a CPU decodes rows
// independently).
//
// Check 1 of 6.8.3 (the row counts' sums and bounds) runs on the host before these kernels; checks 2
// and 3 (each row's cosets and residues against its counts) are per-row sums of is_int and is_res0
// on the device (host wrapper, err bits 4 and 8). Until they are known the kernels do not trust the
// counts: every read is checked against its stream's length.
// err bits: 1 a decoded value is not finite (7.3); 2 a group's symbols lie past the end of a stream
// (possible only when a row count is wrong; never read); 4 check 2 failed; 8 check 3 failed.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include "common.cuh"

namespace {

constexpr int THREADS = 256;

// The inverse of zigzag: odd s -> (s + 1) / 2, even s -> -s / 2.
__device__ __forceinline__ int unzigzag(unsigned s) {
    return (s & 1u) ? (int)((s + 1u) >> 1) : -(int)(s >> 1);
}

// 6.8.4 step 1: the coset k = c_0 mod 2 of a group from its `first` symbol (0 integer, 1 half-integer).
__device__ __forceinline__ int coset_of(unsigned first) { return unzigzag(first) & 1; }

struct Streams {
    const uint16_t* first;
    const uint16_t* mid_int;   // 6 per integer group
    const uint16_t* mid_half;  // 6 per half-integer group
    const uint16_t* last0;     // last_res0
    const uint16_t* last2;     // last_res2
    const uint16_t* lasth;     // last_half
    long long n_int, n_half, n_res0, n_res2;  // groups of each kind the streams hold
};

// 6.8.4 steps 1 to 3 of group g: c[0..6] and the residue r = (-(c_0 + .. + c_6)) mod 4 of c_7
// (0 or 2 for k = 0; 1 or 3 for k = 1).
// ib: integer groups before g. False where the group's mid symbols lie past their stream.
__device__ __forceinline__ bool group_head(const Streams& s, long long g, long long ib, int c[8], int& k, int& r) {
    c[0] = unzigzag(s.first[g]);
    k = c[0] & 1;
    const long long idx = k ? g - ib : ib;
    if (idx >= (k ? s.n_half : s.n_int)) return false;
    const uint16_t* m = (k ? s.mid_half : s.mid_int) + 6 * idx;
    int sum = c[0];
#pragma unroll
    for (int i = 1; i < 7; ++i) {
        c[i] = 2 * unzigzag(__ldg(m + i - 1)) + k;
        sum += c[i];
    }
    r = -sum & 3;  // two's complement: the residue mod 4 of a negative value too
    return true;
}

__global__ void eclattice_coset_kernel(const uint16_t* __restrict__ first, long long G, uint8_t* __restrict__ is_int) {
    for (long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x; g < G; g += (long long)gridDim.x * blockDim.x)
        is_int[g] = coset_of(first[g]) == 0;
}

__global__ void eclattice_residue_kernel(Streams s, const int32_t* __restrict__ int_before, long long G,
                                         uint8_t* __restrict__ is_res0, int* __restrict__ err) {
    bool short_ = false;
    for (long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x; g < G;
         g += (long long)gridDim.x * blockDim.x) {
        int c[8], k, r;
        const bool ok = group_head(s, g, int_before[g], c, k, r);
        short_ |= !ok;
        is_res0[g] = ok && k == 0 && r == 0;
    }
    if (short_) atomicOr(err, 2);
}

template <typename T>
__device__ __forceinline__ void store_group(T* dst, const float* v, int nvalid, bool vec) {
    if (vec && nvalid == 8) {
        alignas(16) T tmp[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) tmp[i] = from_f32<T>(v[i]);
#pragma unroll
        for (int i = 0; i < (int)(8 * sizeof(T)) / 16; ++i)
            reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(tmp)[i];
    } else {
        for (int i = 0; i < nvalid; ++i) dst[i] = from_f32<T>(v[i]);
    }
}

template <typename T>
__global__ void eclattice_decode_kernel(Streams s, const int32_t* __restrict__ int_before,
                                        const int32_t* __restrict__ res0_before, long long G, int gr, int cols,
                                        float half_scale, bool vec, T* __restrict__ out, int* __restrict__ err) {
    bool short_ = false, bad = false;
    for (long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x; g < G;
         g += (long long)gridDim.x * blockDim.x) {
        const long long row = g / gr;
        const int col = 8 * (int)(g - row * gr);
        const int nvalid = cols - col < 8 ? cols - col : 8;
        const long long ib = int_before[g];
        int c[8], k, r;
        bool ok = group_head(s, g, ib, c, k, r);
        if (ok) {
            // 6.8.4 step 4: c_7 from the stream of its residue
            const long long rb = res0_before[g];
            const long long idx = r == 0 ? rb : r == 2 ? ib - rb : g - ib;
            const long long n = r == 0 ? s.n_res0 : r == 2 ? s.n_res2 : s.n_half;
            ok = idx < n;
            if (ok) {
                const uint16_t* p = r == 0 ? s.last0 : r == 2 ? s.last2 : s.lasth;
                const int t = 4 * unzigzag(__ldg(p + idx)) + (r == 3 ? 1 : r);
                c[7] = r == 3 ? -t : t;
            }
        }
        float v[8];
        if (ok) {
            // 6.8.5: x_i = float32(c_i) * half_scale (|c_i| < 2^17: exact conversion)
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                v[i] = __fmul_rn((float)c[i], half_scale);
                bad |= i < nvalid && !isfinite(v[i]);
            }
        } else {
            short_ = true;
#pragma unroll
            for (int i = 0; i < 8; ++i) v[i] = 0.0f;
        }
        store_group(out + row * cols + col, v, nvalid, vec);
    }
    if (short_) atomicOr(err, 2);
    if (bad) atomicOr(err, 1);
}

unsigned grid_for(long long n) {
    const long long want = (n + THREADS - 1) / THREADS;
    return (unsigned)(want < (1LL << 20) ? want : (1LL << 20));
}

const uint16_t* sym_ptr(const at::Tensor& t, long long count, const char* name) {
    TORCH_CHECK(t.is_cuda() && t.scalar_type() == at::kShort && t.is_contiguous() && t.numel() >= count,
                "eclattice: stream ", name, " must be a contiguous int16 CUDA tensor of at least ", count, " symbols");
    return reinterpret_cast<const uint16_t*>(t.data_ptr<int16_t>());
}

// streams: first, mid_int, mid_half, last_res0, last_res2, last_half (spec order 2 .. 7).
Streams make_streams(const std::vector<at::Tensor>& st, long long G, long long n_int, long long n_res0) {
    TORCH_CHECK(st.size() == 6, "eclattice: six symbol streams (first .. last_half)");
    TORCH_CHECK(G >= 0 && G < (1LL << 31), "eclattice: at most 2^31 - 1 groups");
    TORCH_CHECK(n_int >= 0 && n_int <= G && n_res0 >= 0 && n_res0 <= n_int, "eclattice: group counts");
    Streams s;
    s.n_int = n_int;
    s.n_half = G - n_int;
    s.n_res0 = n_res0;
    s.n_res2 = n_int - n_res0;
    s.first = sym_ptr(st[0], G, "first");
    s.mid_int = sym_ptr(st[1], 6 * s.n_int, "mid_int");
    s.mid_half = sym_ptr(st[2], 6 * s.n_half, "mid_half");
    s.last0 = sym_ptr(st[3], s.n_res0, "last_res0");
    s.last2 = sym_ptr(st[4], s.n_res2, "last_res2");
    s.lasth = sym_ptr(st[5], s.n_half, "last_half");
    return s;
}

void check_flags(const at::Tensor& t, long long G, at::ScalarType type, const char* name) {
    TORCH_CHECK(t.is_cuda() && t.scalar_type() == type && t.is_contiguous() && t.numel() >= G, "eclattice: ", name);
}

}  // namespace

// Pass 1: is_int[g] (uint8) for every group g < G.
void eclattice_cosets(const at::Tensor& first, int64_t G, at::Tensor& is_int) {
    TORCH_CHECK(G >= 0 && G < (1LL << 31), "eclattice: at most 2^31 - 1 groups");
    const uint16_t* f = sym_ptr(first, G, "first");
    check_flags(is_int, G, at::kByte, "is_int must be uint8, one per group");
    if (G == 0) return;
    eclattice_coset_kernel<<<grid_for(G), THREADS, 0, c10::cuda::getCurrentCUDAStream()>>>(f, G,
                                                                                             is_int.data_ptr<uint8_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Pass 2: is_res0[g] (uint8): g is an integer group whose c_7 has residue 0. Positions are int32
// (fewer than 2^31 groups, checked by make_streams).
void eclattice_residues(const std::vector<at::Tensor>& streams, int64_t G, int64_t n_int, int64_t n_res0,
                        const at::Tensor& int_before, at::Tensor& is_res0, at::Tensor& err) {
    const Streams s = make_streams(streams, G, n_int, n_res0);
    check_flags(int_before, G, at::kInt, "int_before must be int32, one per group");
    check_flags(is_res0, G, at::kByte, "is_res0 must be uint8, one per group");
    TORCH_CHECK(err.is_cuda() && err.scalar_type() == at::kInt && err.numel() >= 1, "eclattice: bad err tensor");
    if (G == 0) return;
    eclattice_residue_kernel<<<grid_for(G), THREADS, 0, c10::cuda::getCurrentCUDAStream()>>>(
        s, int_before.data_ptr<int32_t>(), G, is_res0.data_ptr<uint8_t>(), err.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Pass 3: W' (rows x cols, float32 / float16 / bfloat16).
void eclattice_decode(const std::vector<at::Tensor>& streams, int64_t rows, int64_t cols, int64_t n_int,
                      int64_t n_res0, const at::Tensor& int_before, const at::Tensor& res0_before, double half_scale,
                      at::Tensor& out, at::Tensor& err) {
    TORCH_CHECK(rows >= 0 && cols >= 0 && cols < (1LL << 30), "eclattice_decode: bad shape");
    const long long gr = (cols + 7) / 8, G = rows * gr;
    const Streams s = make_streams(streams, G, n_int, n_res0);
    check_flags(int_before, G, at::kInt, "int_before must be int32, one per group");
    check_flags(res0_before, G, at::kInt, "res0_before must be int32, one per group");
    TORCH_CHECK(out.is_cuda() && out.is_contiguous() && out.numel() == rows * cols,
                "eclattice_decode: out must be a contiguous CUDA tensor of rows * cols values");
    TORCH_CHECK(err.is_cuda() && err.scalar_type() == at::kInt && err.numel() >= 1, "eclattice: bad err tensor");
    if (G == 0) return;
    const bool vec = cols % 8 == 0 && (reinterpret_cast<uintptr_t>(out.data_ptr()) & 15) == 0;
    const float hs = (float)half_scale;  // a float32 of the parameter block: exact
    const auto stream = c10::cuda::getCurrentCUDAStream();
    const int32_t* ib = int_before.data_ptr<int32_t>();
    const int32_t* rb = res0_before.data_ptr<int32_t>();
    switch (out.scalar_type()) {
        case at::kFloat:
            eclattice_decode_kernel<float><<<grid_for(G), THREADS, 0, stream>>>(
                s, ib, rb, G, (int)gr, (int)cols, hs, vec, out.data_ptr<float>(), err.data_ptr<int>());
            break;
        case at::kHalf:
            eclattice_decode_kernel<__half><<<grid_for(G), THREADS, 0, stream>>>(
                s, ib, rb, G, (int)gr, (int)cols, hs, vec, reinterpret_cast<__half*>(out.data_ptr()),
                err.data_ptr<int>());
            break;
        case at::kBFloat16:
            eclattice_decode_kernel<__nv_bfloat16><<<grid_for(G), THREADS, 0, stream>>>(
                s, ib, rb, G, (int)gr, (int)cols, hs, vec, reinterpret_cast<__nv_bfloat16*>(out.data_ptr()),
                err.data_ptr<int>());
            break;
        default: TORCH_CHECK(false, "eclattice_decode: out must be float32, float16 or bfloat16");
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}
