// Python bindings of the pvqcodec GPU kernels (gpu_decoder/*.cu).
#include <torch/extension.h>

void rht_side(const at::Tensor& in, at::Tensor& out, int64_t b, int64_t h, int64_t q, const at::Tensor& H,
              int64_t seed, int64_t side, bool forward, double cb);
void pvq_decode(const at::Tensor& shapes, const at::Tensor& gains, const at::Tensor& scales, const at::Tensor& gtab,
                const at::Tensor& ntab, int64_t d, int64_t k, int64_t ibits, int64_t gbits, int64_t rows,
                int64_t cols, at::Tensor& out, at::Tensor& err);
void trellis_decode(const at::Tensor& words, const at::Tensor& rscale, int64_t code, int64_t L, int64_t k,
                    double scale, int64_t rows, int64_t cols, const at::Tensor& hyb, at::Tensor& out, at::Tensor& err);
void trellis_gemv(const at::Tensor& words, const at::Tensor& rscale, int64_t code, int64_t L, int64_t k, double scale,
                  int64_t rows, int64_t cols, const at::Tensor& hyb, const at::Tensor& x, at::Tensor& y, int64_t jr);
void trellis_viterbi(const at::Tensor& x, const at::Tensor& w, int64_t code, int64_t L, int64_t k, int64_t seam,
                     bool two_pass, const at::Tensor& hyb, at::Tensor& states, at::Tensor& costs,
                     int64_t threads);
void lattice_decode(const at::Tensor& pat, const at::Tensor& sgn, const at::Tensor& l2, const at::Tensor& l3,
                    const at::Tensor& rscale, const at::Tensor& tabs, int64_t stages, double s1, double s2,
                    double s3, int64_t rows, int64_t cols, at::Tensor& out, at::Tensor& err);
at::Tensor lattice_gemv(const at::Tensor& pat, const at::Tensor& sgn, const at::Tensor& l2, const at::Tensor& l3,
                        const at::Tensor& rscale, const at::Tensor& tabs, int64_t stages, double s1, double s2,
                        double s3, int64_t rows, int64_t cols, const at::Tensor& x, int64_t kb);
at::Tensor lattice_gemv_tiled(const at::Tensor& tiled, const at::Tensor& rscale, const at::Tensor& tabs, int64_t stages,
                              double s1, double s2, double s3, int64_t rows, int64_t cols, const at::Tensor& x,
                              int64_t kb);
void rans_decode(const at::Tensor& payload, int64_t table_off, int64_t data_off, int64_t count, int64_t S, int64_t C,
                 int64_t mode, int64_t precision, const at::Tensor& tab, const at::Tensor& tsym, int64_t bound,
                 int64_t width, at::Tensor& packed, at::Tensor& symbols, bool aligned, bool speculative,
                 at::Tensor& err);
void rans_pack(const at::Tensor& symbols, int64_t count, int64_t width, at::Tensor& packed);
void ecsq_decode(const at::Tensor& sym, const at::Tensor& offsets, double step, at::Tensor& out, at::Tensor& err);
void ectcq_decode(const at::Tensor& row_a0, const at::Tensor& start0, const at::Tensor& a0, const at::Tensor& a1,
                  int64_t a0_count, int64_t rows, int64_t cols, int64_t h0, int64_t h1, const at::Tensor& offsets,
                  double step, int64_t pf, at::Tensor& out, at::Tensor& err);
void eclattice_cosets(const at::Tensor& first, int64_t G, at::Tensor& is_int);
void eclattice_residues(const std::vector<at::Tensor>& streams, int64_t G, int64_t n_int, int64_t n_res0,
                        const at::Tensor& int_before, at::Tensor& is_res0, at::Tensor& err);
void eclattice_decode(const std::vector<at::Tensor>& streams, int64_t rows, int64_t cols, int64_t n_int,
                      int64_t n_res0, const at::Tensor& int_before, const at::Tensor& res0_before, double half_scale,
                      at::Tensor& out, at::Tensor& err);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("rht_side", &rht_side, "one side of the RHT on every row (spec 5.3.6; forward for activations)");
    m.def("pvq_decode", &pvq_decode, "PVQ payloads -> W' float32 (spec 6.2.5, bit-exact)");
    m.def("trellis_decode", &trellis_decode, "trellis payloads -> W' (bit-exact in float32)");
    m.def("trellis_gemv", &trellis_gemv, "fused trellis decode + product with 1..16 activation rows");
    m.def("trellis_viterbi", &trellis_viterbi, "the trellis encoder's Viterbi search, every tile (same result as Numba)");
    m.def("lattice_decode", &lattice_decode, "lattice payloads -> W' (spec 6.4.6, bit-exact in float32)");
    m.def("lattice_gemv", &lattice_gemv, "fused lattice decode + product with 1..16 activation rows (tensor cores)");
    m.def("rans_decode", &rans_decode, "rans payload (spec 4.3) -> raw packed layout and/or symbols, chunk-parallel");
    m.def("rans_pack", &rans_pack, "uint8/uint16 symbols -> raw packed layout (spec 4.2)");
    m.def("ecsq_decode", &ecsq_decode, "ecsq 16-bit symbols -> W' (spec 6.6.4, bit-exact in float32)");
    m.def("ectcq_decode", &ectcq_decode, "ectcq symbols -> W', a trellis walk per row (spec 6.7.6, bit-exact)");
    m.def("eclattice_cosets", &eclattice_cosets, "eclattice pass 1: each group's coset (spec 6.8.4 step 1)");
    m.def("eclattice_residues", &eclattice_residues, "eclattice pass 2: integer groups of residue 0 (6.8.4 1-3)");
    m.def("eclattice_decode", &eclattice_decode, "eclattice pass 3: W' (spec 6.8.4, 6.8.5, bit-exact in float32)");
    m.def("lattice_gemv_tiled", &lattice_gemv_tiled, "the fused lattice product from the tiled payload layout");
}
