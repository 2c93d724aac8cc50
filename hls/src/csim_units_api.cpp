// C ABI of the contract primitives and building-block units, for the ctypes wrapper (trilevel.csim)
// and its tests. C-sim only: not part of any synthesized top function.
#include <stdint.h>

#include "trilevel_csim_abi.h"
#include "trilevel_kernels.h"

extern "C" {

int tl_abi_version() { return 1; }

int tl_fast_csim() {
#ifdef TRILEVEL_FAST_CSIM
    return 1;
#else
    return 0;
#endif
}

void tl_hash32_array(uint32_t seed, const uint32_t* index, uint32_t* out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = tl_hash32(seed, index[i]);
}

void tl_requantize_array(const int64_t* acc, int64_t n, int shift, int mode, uint32_t seed,
                         const uint32_t* index, int16_t* out) {
    for (int64_t i = 0; i < n; i++) out[i] = tl_requantize(acc[i], shift, mode, seed, index[i]);
}

// rows x n int32 scores -> rows x k ascending indices, one topk_unit frame per row.
void tl_topk_rows(const int32_t* scores, int rows, int n, int k, int32_t* out) {
    hls::stream<score_t> s_in("scores");
    hls::stream<idx_t> idx_out("idx");
    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < n; j++) s_in.write((score_t)scores[(int64_t)r * n + j]);
        topk_unit(s_in, idx_out, n, k);
        for (int j = 0; j < k; j++) out[(int64_t)r * k + j] = (int32_t)idx_out.read();
    }
}

// rows x n softmax forward (1.5), one softmax_unit frame per row.
void tl_softmax_fwd_rows(const int16_t* s, int rows, int n, int frac_s, int16_t* P) {
    hls::stream<data_t> a("a"), b("b"), o("o");
    hls::stream<idx_t> key("key");
    hls::stream<acc_t> peak("peak");
    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < n; j++) a.write((data_t)s[(int64_t)r * n + j]);
        softmax_unit(a, b, key, o, peak, n, 0, frac_s, 0, 0, 0);
        for (int j = 0; j < n; j++) P[(int64_t)r * n + j] = (int16_t)o.read();
        peak.read();
    }
}

// rows x n softmax backward (1.6); SR index of (r, j) is index_base + r * n + j.
int64_t tl_softmax_bwd_rows(const int16_t* P, const int16_t* dP, int rows, int n, int frac_dp, int frac_ds,
                            uint32_t seed, uint32_t index_base, int16_t* dS) {
    hls::stream<data_t> a("a"), b("b"), o("o");
    hls::stream<idx_t> key("key");
    hls::stream<acc_t> peak_s("peak");
    int64_t peak = 0;
    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < n; j++) {
            a.write((data_t)P[(int64_t)r * n + j]);
            b.write((data_t)dP[(int64_t)r * n + j]);
            key.write((idx_t)j);
        }
        softmax_unit(a, b, key, o, peak_s, n, 1, frac_dp, frac_ds, seed, index_base + (uint32_t)(r * n));
        for (int j = 0; j < n; j++) dS[(int64_t)r * n + j] = (int16_t)o.read();
        const int64_t p = (int64_t)peak_s.read();
        if (p > peak) peak = p;
    }
    return peak;
}

// Y[m][n] = requantize(A[m][kd] . W[n][kd]^T + bias[n]) through tl_gemm_tiled / gemm_tile, streams
// included, in every flavour (bias may be null);
// SR index of (i, j) is i * n + j. Returns max |accumulator + bias|.
int64_t tl_gemm_nt(const int16_t* A, const int16_t* W, const int64_t* bias, int m, int n, int kd, int shift,
                   int mode, uint32_t seed, int16_t* Y) {
    const std::vector<data_t> a = tl_in<data_t>(A, (int64_t)m * kd), w = tl_in<data_t>(W, (int64_t)n * kd);
    const std::vector<acc_t> b = tl_in<acc_t>(bias, n);
    std::vector<data_t> y((size_t)m * n);
    const int64_t peak = tl_gemm_tiled(a.data(), kd, 1, w.data(), 1, kd, 0, 0, bias ? b.data() : 0, TL_NO_RESIDUAL, 0, y.data(),
                                 n, m, n, kd, shift, mode, seed, 0, n);
    tl_out(y, Y);
    return peak;
}
}
