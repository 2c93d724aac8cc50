// linear_fwd / linear_bwd: a token-wise linear layer (patch embedding, classifier head) over a batch
// of B images with T tokens each (trilevel.intref.layers.linear_fwd / linear_bwd). The weight
// W[Dout][Din] is read in its stored layout in both directions (no transposed copy).
#include "trilevel_kernels.h"

// y = RNE(x W^T + align(bias) + align(residual), frac_acc - frac_y), frac_acc = frac_x + frac_w.
// stats[0] = max |acc| >> shift ("y").
int linear_fwd(const data_t* x, const data_t* w, const data_t* bias, const data_t* residual, data_t* y,
               grad_t* stats, dim_t batch, dim_t tokens, dim_t din, dim_t dout, shift_t frac_x, shift_t frac_w,
               shift_t frac_b, shift_t frac_res, shift_t frac_y, flag_t has_bias, flag_t has_residual) {
#pragma HLS INTERFACE m_axi port = x offset = slave bundle = gmem0 depth = 75648
#pragma HLS INTERFACE m_axi port = w offset = slave bundle = gmem1 depth = 589824
#pragma HLS INTERFACE m_axi port = bias offset = slave bundle = gmem1 depth = 1536
#pragma HLS INTERFACE m_axi port = residual offset = slave bundle = gmem2 depth = 75648
#pragma HLS INTERFACE m_axi port = y offset = slave bundle = gmem2 depth = 75648
#pragma HLS INTERFACE m_axi port = stats offset = slave bundle = gmem2 depth = 1
#pragma HLS INTERFACE s_axilite port = batch
#pragma HLS INTERFACE s_axilite port = tokens
#pragma HLS INTERFACE s_axilite port = din
#pragma HLS INTERFACE s_axilite port = dout
#pragma HLS INTERFACE s_axilite port = frac_x
#pragma HLS INTERFACE s_axilite port = frac_w
#pragma HLS INTERFACE s_axilite port = frac_b
#pragma HLS INTERFACE s_axilite port = frac_res
#pragma HLS INTERFACE s_axilite port = frac_y
#pragma HLS INTERFACE s_axilite port = has_bias
#pragma HLS INTERFACE s_axilite port = has_residual
#pragma HLS INTERFACE s_axilite port = return
    const int B = batch, T = tokens, DI = din, DO = dout;
    if (B < 1 || T < 1 || T > TL_T_MAX || DI < 1 || DI > TL_LINEAR_MAX || DO < 1 || DO > TL_LINEAR_MAX)
        return TL_BAD_DIMS;
    const int frac_acc = (int)frac_x + (int)frac_w, shift = frac_acc - (int)frac_y;
    acc_t bias_acc[TL_LINEAR_MAX];
    for (int j = 0; j < DO; j++) {
#pragma HLS PIPELINE II = 1
        bias_acc[j] = has_bias ? (acc_t)tl_align(bias[j], frac_b, frac_acc) : (acc_t)0;
    }
    // The B images' token rows are contiguous: one GEMM over all B*T rows, so every weight tile is
    // streamed once per TL_TILE_M rows of the whole batch (not once per image).
    const tl_residual res = {has_residual ? residual : 0, DO, frac_res};
    const int64_t peak = tl_gemm(x, DI, 1, w, 1, DI, 0, 0, bias_acc, res, frac_acc, y, DO, B * T, DO, DI, shift,
                                 TL_RNE, 0, 0, DO);
    stats[0] = tl_peak_out(peak, shift);
    return TL_OK;
}

// grad_w[o][i] += sum_{b,t} dy[b][t][o] x[b][t][i] (frac frac_dy + frac_x, exact), then, when has_bias,
// grad_b[o] += sum_{b,t} dy[b][t][o] (frac frac_dy); when need_dx, dx = SR(dy W, frac_dy + frac_w - frac_dx)
// with seed hash32(seed, 0) and the flat index of dx[B][T][Din]. stats[0] = max |dx acc| >> shift.
// Returns TL_ACC_RANGE (after the weight accumulation, like the reference) if a gradient accumulator
// leaves the signed 48-bit range.
int linear_bwd(const data_t* dy, const data_t* x, const data_t* w, data_t* dx, grad_t* grad_w, grad_t* grad_b,
               grad_t* stats, dim_t batch, dim_t tokens, dim_t din, dim_t dout, shift_t frac_dy, shift_t frac_w,
               shift_t frac_dx, u32_t seed, flag_t has_bias, flag_t need_dx) {
#pragma HLS INTERFACE m_axi port = dy offset = slave bundle = gmem0 depth = 75648
#pragma HLS INTERFACE m_axi port = x offset = slave bundle = gmem0 depth = 75648
#pragma HLS INTERFACE m_axi port = w offset = slave bundle = gmem1 depth = 589824
#pragma HLS INTERFACE m_axi port = dx offset = slave bundle = gmem2 depth = 75648
#pragma HLS INTERFACE m_axi port = grad_w offset = slave bundle = gmem3 depth = 589824
#pragma HLS INTERFACE m_axi port = grad_b offset = slave bundle = gmem3 depth = 1536
#pragma HLS INTERFACE m_axi port = stats offset = slave bundle = gmem2 depth = 1
#pragma HLS INTERFACE s_axilite port = batch
#pragma HLS INTERFACE s_axilite port = tokens
#pragma HLS INTERFACE s_axilite port = din
#pragma HLS INTERFACE s_axilite port = dout
#pragma HLS INTERFACE s_axilite port = frac_dy
#pragma HLS INTERFACE s_axilite port = frac_w
#pragma HLS INTERFACE s_axilite port = frac_dx
#pragma HLS INTERFACE s_axilite port = seed
#pragma HLS INTERFACE s_axilite port = has_bias
#pragma HLS INTERFACE s_axilite port = need_dx
#pragma HLS INTERFACE s_axilite port = return
    const int B = batch, T = tokens, DI = din, DO = dout;
    if (B < 1 || T < 1 || T > TL_T_MAX || DI < 1 || DI > TL_LINEAR_MAX || DO < 1 || DO > TL_LINEAR_MAX)
        return TL_BAD_DIMS;
    stats[0] = 0;
    if (tl_accumulate_outer(dy, DO, DO, x, DI, DI, B * T, grad_w) != TL_OK) return TL_ACC_RANGE;
    if (has_bias && tl_accumulate_colsum(dy, DO, DO, B * T, grad_b) != TL_OK) return TL_ACC_RANGE;
    if (!need_dx) return TL_OK;
    const int shift = (int)frac_dy + (int)frac_w - (int)frac_dx;
    const uint32_t dx_seed = tl_hash32(seed, 0);
    // One GEMM over all B*T rows; B(p, j) = W[p][j]: W read in place with row stride DI. The SR index
    // base + i * DI + j is the flat index of dx[B][T][Din].
    const int64_t peak = tl_gemm(dy, DO, 1, w, DI, 1, 0, 0, 0, TL_NO_RESIDUAL, 0, dx, DI, B * T, DI, DO, shift, TL_SR,
                                 dx_seed, 0, DI);
    stats[0] = tl_peak_out(peak, shift);
    return TL_OK;
}

#ifndef __SYNTHESIS__
#include "trilevel_csim_abi.h"

extern "C" {
int tl_linear_fwd(const int16_t* x, const int16_t* w, const int16_t* bias, const int16_t* residual, int16_t* y,
                  int64_t* stats, int batch, int tokens, int din, int dout, int frac_x, int frac_w, int frac_b,
                  int frac_res, int frac_y) {
    const int64_t n_x = (int64_t)batch * tokens * din, n_y = (int64_t)batch * tokens * dout;
    const std::vector<data_t> xv = tl_in<data_t>(x, n_x), wv = tl_in<data_t>(w, (int64_t)dout * din),
                              bv = tl_in<data_t>(bias, dout), rv = tl_in<data_t>(residual, n_y);
    std::vector<data_t> yv((size_t)n_y);
    std::vector<grad_t> sv(1);
    const int status = linear_fwd(xv.data(), wv.data(), bv.data(), rv.data(), yv.data(), sv.data(), batch, tokens,
                                  din, dout, frac_x, frac_w, frac_b, frac_res, frac_y, bias != 0, residual != 0);
    tl_out(yv, y);
    tl_out(sv, stats);
    return status;
}

int tl_linear_bwd(const int16_t* dy, const int16_t* x, const int16_t* w, int16_t* dx, int64_t* grad_w,
                  int64_t* grad_b, int64_t* stats, int batch, int tokens, int din, int dout, int frac_dy, int frac_w,
                  int frac_dx, uint32_t seed) {
    const int64_t n_dy = (int64_t)batch * tokens * dout, n_x = (int64_t)batch * tokens * din;
    const std::vector<data_t> dyv = tl_in<data_t>(dy, n_dy), xv = tl_in<data_t>(x, n_x),
                              wv = tl_in<data_t>(w, (int64_t)dout * din);
    std::vector<data_t> dxv((size_t)n_x);
    std::vector<grad_t> gw = tl_in<grad_t>(grad_w, (int64_t)dout * din), gb = tl_in<grad_t>(grad_b, dout), sv(1);
    const int status = linear_bwd(dyv.data(), xv.data(), wv.data(), dxv.data(), gw.data(), gb.data(), sv.data(),
                                  batch, tokens, din, dout, frac_dy, frac_w, frac_dx, seed, grad_b != 0, dx != 0);
    if (dx) tl_out(dxv, dx);
    tl_out(gw, grad_w);
    if (grad_b) tl_out(gb, grad_b);
    tl_out(sv, stats);
    return status;
}
}
#endif
