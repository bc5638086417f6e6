// Spec 6.7 (codec id 6, ectcq): W' from the union symbols of the streams `a0` and `a1`, each row
// a walk of the trellis from state 0 (6.7.6). Rows are independent: row r starts at start0(r) in
// `a0` and at r * cols - start0(r) in `a1` (6.7.3). The row counts (`rows` integers of up to 49
// bits) are decoded, checked (bound, sum) and prefix-summed on the host before this kernel runs,
// as 6.7.3 orders those checks before any value.
//
// One thread per row. The walk is sequential by nature: which stream the next symbol comes from
// depends on the state, and the state on every earlier symbol, so no part of a row can start
// before the row's earlier part is known (the stream positions are unknown too). The chain of one
// step is kept to a few integer operations, branch-free so that the lanes of a warp (32 rows) do
// not diverge on their unions:
//   u = state & 1; s = the lane's next symbol of stream u (kept in a register, the following one
//   loaded at once); z1 = (j mod 4) div 2 = bit 0 xor bit 1 of s (either union);
//   state' = (state >> 1) xor (z1 ? h1 >> 1 : 0) xor (u ? h0 >> 1 : 0)   (Ungerboeck's trellis)
// and, off the chain, |j| = s + ((s xor u) & 1), negative iff (s xor u) is even and j != 0; the
// value is 6.6.4's (ecsq.cuh). These identities are checked against the Python trellis tables and
// symbol map by tests/test_gpu_ectcq.py (CPU part).
//
// Latency: a warp's load instruction completes when its slowest lane's does, and the next step
// needs it, so one lane's L1 miss (a lane enters a new 32-byte sector every 16 symbols of a stream:
// most steps, for some lane of 32) would stall all 32 rows for an L2 round trip. So each lane also
// prefetches into L1 the symbol `pf` places ahead in the stream it just read (`prefetch.global.L1`:
// no register result, nothing waits on it; only addresses inside the row's symbols). pf = 0: off.
// (A prediction, not yet measured: bench/gpu_ec.py times the kernel at pf = 0, 16, 32, 64.)
//
// Writes go through a 32 x 32 tile in shared memory per warp: each lane fills its row's next 32
// values, then the warp writes the tile row by row (32 consecutive columns per store instruction)
// instead of 32 rows apart.
//
// err bits: 1 a decoded value is not finite (7.3); 2 a row takes more symbols from a stream than its
// row count gives (6.7.6). The kernel does not trust the host's checks for its memory safety: a
// row count above cols is bit 2, and every read is clipped to its stream's length.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include "common.cuh"
#include "ecsq.cuh"

namespace {

constexpr int ROWS = 32;  // rows per block (one warp)

__device__ __forceinline__ void prefetch_l1(const void* p) { asm volatile("prefetch.global.L1 [%0];" ::"l"(p)); }

template <typename T>
__global__ void __launch_bounds__(ROWS) ectcq_decode_kernel(
    const int64_t* __restrict__ row_a0, const int64_t* __restrict__ start0, const uint16_t* __restrict__ a0,
    long long n_a0, const uint16_t* __restrict__ a1, long long n_a1, long long rows, int cols, unsigned h0s,
    unsigned h1s, const float* __restrict__ offsets, int n_off, float step, int pf, T* __restrict__ out,
    int* __restrict__ err) {
    __shared__ float tile[ROWS][ROWS + 1];
    const int lane = threadIdx.x;
    const long long r0 = (long long)blockIdx.x * ROWS;
    const long long r = r0 + lane;
    bool live = r < rows, corrupt = false, bad = false;
    const uint16_t* q0 = a0;  // the row's symbols in each stream
    const uint16_t* q1 = a1;
    int lim0 = 0, lim1 = 0;  // symbols the row may take from each stream (clipped to the stream)
    if (live) {
        const long long c0 = row_a0[r];
        const long long p0 = start0[r];
        const long long p1 = r * (long long)cols - p0;
        if (c0 > cols || p1 < 0) {
            corrupt = true;
            live = false;
        } else {
            const long long e0 = n_a0 - p0 < c0 ? n_a0 - p0 : c0;
            const long long e1 = n_a1 - p1 < cols - c0 ? n_a1 - p1 : cols - c0;
            lim0 = e0 > 0 ? (int)e0 : 0;
            lim1 = e1 > 0 ? (int)e1 : 0;
            q0 = a0 + (lim0 ? p0 : 0);
            q1 = a1 + (lim1 ? p1 : 0);
        }
    }
    int k0 = 0, k1 = 0;                           // symbols taken from each stream
    unsigned w0 = lim0 > 0 ? __ldg(q0) : 0u;      // the next symbol of each stream
    unsigned w1 = lim1 > 0 ? __ldg(q1) : 0u;
    unsigned st = 0;                              // the trellis state (6.7: each row starts in state 0)
    for (int cb = 0; cb < cols; cb += ROWS) {
        const int nc = cols - cb < ROWS ? cols - cb : ROWS;
        for (int i = 0; i < nc; ++i) {
            float x = 0.0f;
            if (live) {
                const unsigned u = st & 1u;
                const int k = u ? k1 : k0;
                const int lim = u ? lim1 : lim0;
                const unsigned s = u ? w1 : w0;
                if (k >= lim) {  // the row takes more symbols of union u than its counts allow
                    corrupt = true;
                    live = false;
                } else {
                    const uint16_t* q = u ? q1 : q0;
                    const unsigned nxt = k + 1 < lim ? __ldg(q + k + 1) : 0u;
                    if (pf && k + pf < lim) prefetch_l1(q + k + pf);
                    w1 = u ? nxt : w1;
                    w0 = u ? w0 : nxt;
                    k1 += (int)u;
                    k0 += (int)(u ^ 1u);
                    const unsigned pos = (s ^ u) & 1u;  // 1: j = s + 1 > 0; 0: j = -s
                    x = ecsq_value(s + pos, pos == 0u, offsets, n_off, step, bad);
                    st = (st >> 1) ^ (((s ^ (s >> 1)) & 1u) ? h1s : 0u) ^ (u ? h0s : 0u);
                }
            }
            tile[lane][i] = x;
        }
        __syncwarp();
        for (int rr = 0; rr < ROWS; ++rr) {
            const long long row = r0 + rr;
            if (row < rows && lane < nc) out[row * cols + cb + lane] = from_f32<T>(tile[rr][lane]);
        }
        __syncwarp();
    }
    if (corrupt) atomicOr(err, 2);
    if (bad) atomicOr(err, 1);
}

template <typename T>
void launch(const at::Tensor& row_a0, const at::Tensor& start0, const at::Tensor& a0, long long n_a0,
            const at::Tensor& a1, long long n_a1, long long rows, int cols, unsigned h0s, unsigned h1s,
            const at::Tensor& offsets, float step, int pf, at::Tensor& out, at::Tensor& err) {
    const unsigned blocks = (unsigned)((rows + ROWS - 1) / ROWS);
    const int n_off = (int)offsets.numel();
    ectcq_decode_kernel<T><<<blocks, ROWS, 0, c10::cuda::getCurrentCUDAStream()>>>(
        row_a0.data_ptr<int64_t>(), start0.data_ptr<int64_t>(),
        reinterpret_cast<const uint16_t*>(a0.data_ptr<int16_t>()), n_a0,
        reinterpret_cast<const uint16_t*>(a1.data_ptr<int16_t>()), n_a1, rows, cols, h0s, h1s,
        n_off ? offsets.data_ptr<float>() : nullptr, n_off, step, pf, reinterpret_cast<T*>(out.data_ptr()),
        err.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void check_symbols(const at::Tensor& t, long long count, const char* name) {
    TORCH_CHECK(t.is_cuda() && t.scalar_type() == at::kShort && t.is_contiguous() && t.numel() >= count,
                "ectcq_decode: ", name, " must be a contiguous int16 CUDA tensor of at least ", count, " symbols");
}

}  // namespace

// h0, h1: the trellis's parity-check polynomials (6.7, Ungerboeck's table) for its state bits.
// pf: L1 prefetch distance in symbols (0: none).
void ectcq_decode(const at::Tensor& row_a0, const at::Tensor& start0, const at::Tensor& a0, const at::Tensor& a1,
                  int64_t a0_count, int64_t rows, int64_t cols, int64_t h0, int64_t h1, const at::Tensor& offsets,
                  double step, int64_t pf, at::Tensor& out, at::Tensor& err) {
    TORCH_CHECK(rows >= 0 && cols >= 0 && cols < (1LL << 30), "ectcq_decode: bad shape");
    TORCH_CHECK(a0_count >= 0 && a0_count <= rows * cols, "ectcq_decode: a0_count outside 0 .. rows * cols");
    check_symbols(a0, a0_count, "a0");
    check_symbols(a1, rows * cols - a0_count, "a1");
    for (const at::Tensor* t : {&row_a0, &start0})
        TORCH_CHECK(t->is_cuda() && t->scalar_type() == at::kLong && t->is_contiguous() && t->numel() >= rows,
                    "ectcq_decode: row_a0 and start0 must be int64 CUDA tensors, one value per row");
    TORCH_CHECK(offsets.is_cuda() && offsets.scalar_type() == at::kFloat && offsets.is_contiguous() &&
                    offsets.numel() <= 65535, "ectcq_decode: offsets must be at most 65,535 float32 CUDA values");
    TORCH_CHECK(out.is_cuda() && out.is_contiguous() && out.numel() == rows * cols,
                "ectcq_decode: out must be a contiguous CUDA tensor of rows * cols values");
    TORCH_CHECK(err.is_cuda() && err.scalar_type() == at::kInt && err.numel() >= 1, "ectcq_decode: bad err tensor");
    TORCH_CHECK(h0 > 0 && h0 < 1024 && h1 >= 0 && h1 < 1024, "ectcq_decode: bad trellis polynomials");
    TORCH_CHECK(pf >= 0 && pf <= 4096, "ectcq_decode: prefetch distance outside 0 .. 4096");
    if (rows == 0 || cols == 0) return;
    const unsigned h0s = (unsigned)(h0 >> 1), h1s = (unsigned)(h1 >> 1);
    const long long n_a1 = rows * cols - a0_count;
    const float st = (float)step;  // a float32 of the parameter block: exact
    switch (out.scalar_type()) {
        case at::kFloat:
            launch<float>(row_a0, start0, a0, a0_count, a1, n_a1, rows, (int)cols, h0s, h1s, offsets, st, (int)pf,
                          out, err);
            break;
        case at::kHalf:
            launch<__half>(row_a0, start0, a0, a0_count, a1, n_a1, rows, (int)cols, h0s, h1s, offsets, st, (int)pf,
                           out, err);
            break;
        case at::kBFloat16:
            launch<__nv_bfloat16>(row_a0, start0, a0, a0_count, a1, n_a1, rows, (int)cols, h0s, h1s, offsets, st,
                                  (int)pf, out, err);
            break;
        default: TORCH_CHECK(false, "ectcq_decode: out must be float32, float16 or bfloat16");
    }
}
