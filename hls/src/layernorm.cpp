// layernorm_fwd / layernorm_bwd: the stand-alone LayerNorm (the final norm before the head; the blocks
// fuse theirs), trilevel.intref.layers.layernorm_fwd / layernorm_bwd over B*T rows.
#include "trilevel_layers.h"

// y = LN(x) (RNE, frac frac_y); saves x_hat, rsqrt, k per row. stats[0] = max-abs of y.
int layernorm_fwd(const data_t* x, const data_t* gamma, const data_t* beta, data_t* y, data_t* xhat, int32_t* rsqrt,
                  int32_t* kk, grad_t* stats, dim_t rows, dim_t dim, shift_t frac_x, shift_t frac_gamma,
                  shift_t frac_beta, shift_t frac_y) {
#pragma HLS INTERFACE m_axi port = x offset = slave bundle = gmem0 depth = 75648
#pragma HLS INTERFACE m_axi port = gamma offset = slave bundle = gmem1 depth = 384
#pragma HLS INTERFACE m_axi port = beta offset = slave bundle = gmem1 depth = 384
#pragma HLS INTERFACE m_axi port = y offset = slave bundle = gmem2 depth = 75648
#pragma HLS INTERFACE m_axi port = xhat offset = slave bundle = gmem2 depth = 75648
#pragma HLS INTERFACE m_axi port = rsqrt offset = slave bundle = gmem2 depth = 197
#pragma HLS INTERFACE m_axi port = kk offset = slave bundle = gmem2 depth = 197
#pragma HLS INTERFACE m_axi port = stats offset = slave bundle = gmem2 depth = 1
#pragma HLS INTERFACE s_axilite port = rows
#pragma HLS INTERFACE s_axilite port = dim
#pragma HLS INTERFACE s_axilite port = frac_x
#pragma HLS INTERFACE s_axilite port = frac_gamma
#pragma HLS INTERFACE s_axilite port = frac_beta
#pragma HLS INTERFACE s_axilite port = frac_y
#pragma HLS INTERFACE s_axilite port = return
    if ((int)rows < 1 || (int)dim < 2 || (int)dim > TL_D_MAX) return TL_BAD_DIMS;
    stats[0] = tl_layernorm_fwd(x, rows, dim, frac_x, gamma, frac_gamma, beta, frac_beta, frac_y, y, xhat, rsqrt, kk);
    return TL_OK;
}

// LayerNorm backward; fracs = {g, t, dx} (LAYERNORM_BWD_FRACS), stats in the same order. Adds to grad_g,
// grad_b; residual (frac frac_res) may be 0.
int layernorm_bwd(const data_t* dy, const data_t* xhat, const int32_t* rsqrt, const int32_t* kk,
                  const data_t* gamma, const data_t* residual, grad_t* grad_g, grad_t* grad_b, data_t* dx,
                  grad_t stats[3], dim_t rows, dim_t dim, shift_t frac_dy, shift_t frac_x, shift_t frac_gamma,
                  shift_t frac_res, const shift_t fracs[3], u32_t seed) {
#pragma HLS INTERFACE m_axi port = dy offset = slave bundle = gmem0 depth = 75648
#pragma HLS INTERFACE m_axi port = xhat offset = slave bundle = gmem0 depth = 75648
#pragma HLS INTERFACE m_axi port = rsqrt offset = slave bundle = gmem0 depth = 197
#pragma HLS INTERFACE m_axi port = kk offset = slave bundle = gmem0 depth = 197
#pragma HLS INTERFACE m_axi port = gamma offset = slave bundle = gmem1 depth = 384
#pragma HLS INTERFACE m_axi port = residual offset = slave bundle = gmem0 depth = 75648
#pragma HLS INTERFACE m_axi port = grad_g offset = slave bundle = gmem3 depth = 384
#pragma HLS INTERFACE m_axi port = grad_b offset = slave bundle = gmem3 depth = 384
#pragma HLS INTERFACE m_axi port = dx offset = slave bundle = gmem2 depth = 75648
#pragma HLS INTERFACE s_axilite port = stats
#pragma HLS INTERFACE s_axilite port = rows
#pragma HLS INTERFACE s_axilite port = dim
#pragma HLS INTERFACE s_axilite port = frac_dy
#pragma HLS INTERFACE s_axilite port = frac_x
#pragma HLS INTERFACE s_axilite port = frac_gamma
#pragma HLS INTERFACE s_axilite port = frac_res
#pragma HLS INTERFACE s_axilite port = fracs
#pragma HLS INTERFACE s_axilite port = seed
#pragma HLS INTERFACE s_axilite port = return
    if ((int)rows < 1 || (int)dim < 2 || (int)dim > TL_D_MAX) return TL_BAD_DIMS;
    const int fr[3] = {fracs[0], fracs[1], fracs[2]};
    int64_t st[3] = {0, 0, 0};
    const int status = tl_layernorm_bwd(dy, frac_dy, xhat, rsqrt, kk, frac_x, rows, dim, gamma, frac_gamma, grad_g,
                                        grad_b, fr, seed, residual, frac_res, dx, st);
    for (int i = 0; i < 3; i++) stats[i] = st[i];
    return status;
}

#ifndef __SYNTHESIS__
#include "trilevel_csim_abi.h"

extern "C" {
// fr: frac_x, frac_gamma, frac_beta, frac_y
int tl_layernorm_fwd(const int16_t* x, const int16_t* gamma, const int16_t* beta, int16_t* y, int16_t* xhat,
                     int32_t* rsqrt, int32_t* kk, int64_t* stats, int rows, int dim, const int* fr) {
    const int64_t n = (int64_t)rows * dim;
    const std::vector<data_t> xv = tl_in<data_t>(x, n), gv = tl_in<data_t>(gamma, dim), bv = tl_in<data_t>(beta, dim);
    std::vector<data_t> yv(n), hv(n);
    std::vector<int32_t> rs(rows), kv(rows);
    grad_t st[1] = {0};
    const int status = layernorm_fwd(xv.data(), gv.data(), bv.data(), yv.data(), hv.data(), rs.data(), kv.data(), st,
                                     rows, dim, fr[0], fr[1], fr[2], fr[3]);
    tl_out(yv, y);
    tl_out(hv, xhat);
    tl_out(rs, rsqrt);
    tl_out(kv, kk);
    stats[0] = (int64_t)st[0];
    return status;
}

// fr: frac_dy, frac_x, frac_gamma, frac_res, fracs[3]
int tl_layernorm_bwd(const int16_t* dy, const int16_t* xhat, const int32_t* rsqrt, const int32_t* kk,
                     const int16_t* gamma, const int16_t* residual, int64_t* grad_g, int64_t* grad_b, int16_t* dx,
                     int64_t* stats, int rows, int dim, const int* fr, uint32_t seed) {
    const int64_t n = (int64_t)rows * dim;
    const std::vector<data_t> dyv = tl_in<data_t>(dy, n), hv = tl_in<data_t>(xhat, n), gv = tl_in<data_t>(gamma, dim),
                              rv = tl_in<data_t>(residual, residual ? n : 0);
    const std::vector<int32_t> rs = tl_in<int32_t>(rsqrt, rows), kv = tl_in<int32_t>(kk, rows);
    std::vector<grad_t> gg = tl_in<grad_t>(grad_g, dim), gb = tl_in<grad_t>(grad_b, dim), st(3);
    std::vector<data_t> dxv(n);
    const shift_t fs[3] = {fr[4], fr[5], fr[6]};
    const int status = layernorm_bwd(dyv.data(), hv.data(), rs.data(), kv.data(), gv.data(), residual ? rv.data() : 0,
                                     gg.data(), gb.data(), dxv.data(), st.data(), rows, dim, fr[0], fr[1], fr[2], fr[3],
                                     fs, seed);
    tl_out(gg, grad_g);
    tl_out(gb, grad_b);
    tl_out(dxv, dx);
    tl_out(st, stats);
    return status;
}
}
#endif
