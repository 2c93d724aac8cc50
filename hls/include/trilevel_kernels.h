// Top functions of the trilevel accelerator and the helpers they share.
// Static maxima (DeiT-S): runtime dimensions arrive over AXI-Lite and must not exceed these.
#ifndef TRILEVEL_KERNELS_H
#define TRILEVEL_KERNELS_H

#include "trilevel_fixed.h"
#include "trilevel_units.h"

#define TL_D_MAX 384        // embedding dim
#define TL_HEADS_MAX 6
#define TL_HEAD_DIM_MAX 64
#define TL_HIDDEN_MAX 1536  // MLP hidden dim
#define TL_T_MAX 197        // tokens per image (N patches + [CLS])
#define TL_LINEAR_MAX 1536  // Din / Dout of linear_fwd / linear_bwd (patch embedding, head)

// Kernel status codes (returned through the AXI-Lite `return` register).
#define TL_OK 0
#define TL_BAD_DIMS 1
#define TL_ACC_RANGE 2  // a gradient accumulator left the signed 48-bit range
#define TL_ACC_LIMIT ((int64_t)1 << 47)

// v (frac_from) at frac_to as an accumulator value: exact left shift or RNE right shift
// (trilevel.intref.layers.align).
static inline int64_t tl_align(int64_t v, int frac_from, int frac_to) {
#pragma HLS INLINE
    const int shift = frac_from - frac_to;
    return shift <= 0 ? v * ((int64_t)1 << -shift) : tl_round_shift(v, shift, TL_RNE, 0, 0);
}

// An optional residual operand of a GEMM: R(i, j) = data[i*rs + j] with frac `frac`, added to the
// accumulator (aligned to its frac) before the single rounding.
struct tl_residual {
    const data_t* data;
    int rs;
    int frac;
};

// Y(i, j) = requantize(sum_p A(i, p) * B(p, j) + bias[j] + R(i, j), shift, mode), tiled over gemm_tile.
// Operands are read in place through strides and optional gather maps:
//   A(i, p) = a[i*a_rs + p*a_cs],  B(p, j) = b[P(p)*b_rs + J(j)*b_cs]  with P = p_map, J = j_map (0: identity)
// so a weight W[Dout][Din] serves X W^T (b_rs = 1, b_cs = Din) and dY W (b_rs = Din, b_cs = 1) without a
// transposed copy, and attention gathers the selected keys by index (never a masked dense matrix).
// bias (n entries, already at the accumulator frac frac_acc) and res.data may be 0. SR index of element
// (i, j) is index_base + i * index_stride + j. Returns max |accumulator + addends|.
static int64_t tl_gemm(const data_t* a, int a_rs, int a_cs, const data_t* b, int b_rs, int b_cs,
                       const int* p_map, const int* j_map, const acc_t* bias, tl_residual res, int frac_acc, data_t* y, int y_rs, int m, int n,
                       int kd, int shift, int mode, uint32_t seed, uint32_t index_base, uint32_t index_stride) {
#pragma HLS INLINE off
    hls::stream<data_t> a_s("a"), b_s("b"), c_s("c");
    hls::stream<acc_t> e_s("addend"), peak_s("peak");
    int64_t peak = 0;
tiles_m:
    for (int i0 = 0; i0 < m; i0 += TL_TILE_M) {
        const int tm = m - i0 < TL_TILE_M ? m - i0 : TL_TILE_M;
    tiles_n:
        for (int j0 = 0; j0 < n; j0 += TL_TILE_N) {
            const int tn = n - j0 < TL_TILE_N ? n - j0 : TL_TILE_N;
            for (int i = 0; i < tm; i++)
                for (int p = 0; p < kd; p++) {
#pragma HLS PIPELINE II = 1
                    a_s.write(a[(int64_t)(i0 + i) * a_rs + (int64_t)p * a_cs]);
                }
            for (int j = 0; j < tn; j++)
                for (int p = 0; p < kd; p++) {
#pragma HLS PIPELINE II = 1
                    const int64_t bp = p_map ? p_map[p] : p, bj = j_map ? j_map[j0 + j] : j0 + j;
                    b_s.write(b[bp * b_rs + bj * b_cs]);
                }
            for (int i = 0; i < tm; i++)
                for (int j = 0; j < tn; j++) {
#pragma HLS PIPELINE II = 1
                    int64_t e = bias ? (int64_t)bias[j0 + j] : 0;
                    if (res.data) e += tl_align(res.data[(int64_t)(i0 + i) * res.rs + j0 + j], res.frac, frac_acc);
                    e_s.write((acc_t)e);
                }
            gemm_tile(a_s, b_s, e_s, c_s, peak_s, tm, tn, kd, shift, mode, seed,
                      index_base + (uint32_t)i0 * index_stride + j0, index_stride);
            for (int i = 0; i < tm; i++)
                for (int j = 0; j < tn; j++) {
#pragma HLS PIPELINE II = 1
                    y[(int64_t)(i0 + i) * y_rs + j0 + j] = c_s.read();
                }
            const int64_t tile_peak = (int64_t)peak_s.read();
            if (tile_peak > peak) peak = tile_peak;
        }
    }
    return peak;
}

static const tl_residual TL_NO_RESIDUAL = {0, 0, 0};

// max |acc| requantized by `shift`, in output units (floor), as trilevel.intref.fixed.max_abs_out.
static inline int64_t tl_peak_out(int64_t peak, int shift) {
    return shift >= 0 ? peak >> shift : peak << (-shift);
}

// grad[o][i] += sum_r g[r*g_rs + o] * x[r*x_rs + i] for o < n_out, i < n_in (weight gradient dY^T X,
// exact in the accumulator; both operands read in place). Returns TL_ACC_RANGE if a result leaves
// the signed 48-bit range (the accumulator keeps it anyway), else TL_OK.
static int tl_accumulate_outer(const data_t* g, int g_rs, int n_out, const data_t* x, int x_rs, int n_in,
                               int rows, grad_t* grad) {
#pragma HLS INLINE off
    static acc_t acc[TL_TILE_M][TL_K_MAX];
#pragma HLS ARRAY_PARTITION variable = acc dim = 1 complete
    int status = TL_OK;
tiles_o:
    for (int o0 = 0; o0 < n_out; o0 += TL_TILE_M) {
        const int tm = n_out - o0 < TL_TILE_M ? n_out - o0 : TL_TILE_M;
        for (int oi = 0; oi < tm; oi++)
            for (int i = 0; i < n_in; i++) {
#pragma HLS PIPELINE II = 1
                acc[oi][i] = 0;
            }
    reduce:
        for (int r = 0; r < rows; r++) {
            const data_t* xr = x + (int64_t)r * x_rs;
            for (int oi = 0; oi < tm; oi++) {
                const prod_t d = g[(int64_t)r * g_rs + o0 + oi];
                for (int i = 0; i < n_in; i++) {
#pragma HLS PIPELINE II = 1
                    acc[oi][i] += (prod_t)(d * xr[i]);
                }
            }
        }
    write_back:
        for (int oi = 0; oi < tm; oi++)
            for (int i = 0; i < n_in; i++) {
#pragma HLS PIPELINE II = 1
                const int64_t v = (int64_t)grad[(int64_t)(o0 + oi) * n_in + i] + (int64_t)acc[oi][i];
                if (v >= TL_ACC_LIMIT || v < -TL_ACC_LIMIT) status = TL_ACC_RANGE;
                grad[(int64_t)(o0 + oi) * n_in + i] = v;
            }
    }
    return status;
}

// grad[d] += sum_r g[r*dim + d] * x[r*dim + d] (LayerNorm gamma gradient, exact). Same status convention.
static int tl_accumulate_outer_diag(const data_t* g, const data_t* x, int rows, int dim, grad_t* grad) {
#pragma HLS INLINE off
    int status = TL_OK;
    for (int d = 0; d < dim; d++) {
        int64_t v = grad[d];
        for (int r = 0; r < rows; r++) {
#pragma HLS PIPELINE II = 1
            v += (int64_t)g[(int64_t)r * dim + d] * (int64_t)x[(int64_t)r * dim + d];
        }
        if (v >= TL_ACC_LIMIT || v < -TL_ACC_LIMIT) status = TL_ACC_RANGE;
        grad[d] = v;
    }
    return status;
}

// grad[o] += sum_r g[r*g_rs + o] (bias gradient, exact). Same status convention.
static int tl_accumulate_colsum(const data_t* g, int g_rs, int n_out, int rows, grad_t* grad) {
#pragma HLS INLINE off
    int status = TL_OK;
    for (int o = 0; o < n_out; o++) {
        int64_t v = grad[o];
        for (int r = 0; r < rows; r++) {
#pragma HLS PIPELINE II = 1
            v += (int64_t)g[(int64_t)r * g_rs + o];
        }
        if (v >= TL_ACC_LIMIT || v < -TL_ACC_LIMIT) status = TL_ACC_RANGE;
        grad[o] = v;
    }
    return status;
}

// The layer kernels, callable from the block kernels (see hls/src/linear.cpp).
int linear_fwd(const data_t* x, const data_t* w, const data_t* bias, const data_t* residual, data_t* y,
               grad_t* stats, dim_t batch, dim_t tokens, dim_t din, dim_t dout, shift_t frac_x, shift_t frac_w,
               shift_t frac_b, shift_t frac_res, shift_t frac_y, flag_t has_bias, flag_t has_residual);
int linear_bwd(const data_t* dy, const data_t* x, const data_t* w, data_t* dx, grad_t* grad_w, grad_t* grad_b,
               grad_t* stats, dim_t batch, dim_t tokens, dim_t din, dim_t dout, shift_t frac_dy, shift_t frac_w,
               shift_t frac_dx, u32_t seed, flag_t has_bias, flag_t need_dx);

#endif
