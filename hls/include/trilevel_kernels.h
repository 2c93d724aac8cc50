// Top functions of the trilevel accelerator and the helpers they share.
// Static maxima (DeiT-S): runtime dimensions arrive over AXI-Lite and must not exceed these.
#ifndef TRILEVEL_KERNELS_H
#define TRILEVEL_KERNELS_H

#include "trilevel_fastsim.h"
#include "trilevel_fixed.h"
#include "trilevel_units.h"

#define TL_OUTER_CHUNK 256  // fast C-sim: rows per transposed chunk of tl_accumulate_outer

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
static int64_t tl_gemm_tiled(const data_t* a, int a_rs, int a_cs, const data_t* b, int b_rs, int b_cs,
                             const int* p_map, const int* j_map, const acc_t* bias, tl_residual res, int frac_acc,
                             data_t* y, int y_rs, int m, int n, int kd, int shift, int mode, uint32_t seed,
                             uint32_t index_base, uint32_t index_stride) {
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

#ifdef TRILEVEL_FAST_CSIM
// C-sim fast path of tl_gemm: the same outputs, SR indices and peak as the tiles of gemm_tile, without
// the per-element stream round trips. A rows and B columns are used in place when contiguous, else
// packed once per call; every output is one exact tl_dot16 plus its addends.
static int64_t tl_gemm_direct(const data_t* a, int a_rs, int a_cs, const data_t* b, int b_rs, int b_cs,
                              const int* p_map, const int* j_map, const acc_t* bias, tl_residual res, int frac_acc,
                              data_t* y, int y_rs, int m, int n, int kd, int shift, int mode, uint32_t seed,
                              uint32_t index_base, uint32_t index_stride) {
    static data_t b_pack[(int64_t)TL_LINEAR_MAX * TL_K_MAX];
    static data_t a_pack[TL_K_MAX];
    static const data_t* b_cols[TL_LINEAR_MAX];
    static int64_t dots[TL_LINEAR_MAX];
    const bool b_in_place = !p_map && b_rs == 1;
    for (int j = 0; j < n; j++) {
        const int64_t bj = j_map ? j_map[j] : j;
        if (b_in_place) {
            b_cols[j] = b + bj * b_cs;
            continue;
        }
        data_t* col = b_pack + (int64_t)j * kd;
        for (int p = 0; p < kd; p++) col[p] = b[(int64_t)(p_map ? p_map[p] : p) * b_rs + bj * b_cs];
        b_cols[j] = col;
    }
    int64_t peak = 0;
    for (int i = 0; i < m; i++) {
        const data_t* a_row = a + (int64_t)i * a_rs;
        if (a_cs != 1) {
            for (int p = 0; p < kd; p++) a_pack[p] = a_row[(int64_t)p * a_cs];
            a_row = a_pack;
        }
        const uint32_t row_index = index_base + (uint32_t)i * index_stride;
        const data_t* res_row = res.data ? res.data + (int64_t)i * res.rs : 0;
        data_t* y_row = y + (int64_t)i * y_rs;
        tl_dot16_many(a_row, b_cols, n, kd, dots);
        for (int j = 0; j < n; j++) {
            int64_t acc = bias ? (int64_t)bias[j] : 0;
            if (res_row) acc += tl_align(res_row[j], res.frac, frac_acc);
            acc += dots[j];
            if (tl_abs64(acc) > peak) peak = tl_abs64(acc);
            y_row[j] = (data_t)tl_requantize(acc, shift, mode, seed, row_index + (uint32_t)j);
        }
    }
    return peak;
}
#endif

// tl_gemm_tiled through gemm_tile (synthesis, ap_int C-sim); the fast C-sim computes the same directly.
static inline int64_t tl_gemm(const data_t* a, int a_rs, int a_cs, const data_t* b, int b_rs, int b_cs,
                              const int* p_map, const int* j_map, const acc_t* bias, tl_residual res, int frac_acc,
                              data_t* y, int y_rs, int m, int n, int kd, int shift, int mode, uint32_t seed,
                              uint32_t index_base, uint32_t index_stride) {
#pragma HLS INLINE
#ifdef TRILEVEL_FAST_CSIM
    return tl_gemm_direct(a, a_rs, a_cs, b, b_rs, b_cs, p_map, j_map, bias, res, frac_acc, y, y_rs, m, n, kd, shift,
                          mode, seed, index_base, index_stride);
#else
    return tl_gemm_tiled(a, a_rs, a_cs, b, b_rs, b_cs, p_map, j_map, bias, res, frac_acc, y, y_rs, m, n, kd, shift,
                         mode, seed, index_base, index_stride);
#endif
}

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
#ifdef TRILEVEL_FAST_CSIM
    // C-sim fast path: the same exact sums, as dot products over chunks of rows transposed once each,
    // added straight into grad (int64, no overflow); the range check sees the same final values.
    static data_t g_t[TL_LINEAR_MAX][TL_OUTER_CHUNK], x_t[TL_K_MAX][TL_OUTER_CHUNK];
    static const data_t* x_rows[TL_K_MAX];
    static int64_t dots[TL_K_MAX];
    for (int i = 0; i < n_in; i++) x_rows[i] = x_t[i];
    for (int r0 = 0; r0 < rows; r0 += TL_OUTER_CHUNK) {
        const int nr = rows - r0 < TL_OUTER_CHUNK ? rows - r0 : TL_OUTER_CHUNK;
        for (int r = 0; r < nr; r++) {
            const data_t* gr = g + (int64_t)(r0 + r) * g_rs;
            const data_t* xr = x + (int64_t)(r0 + r) * x_rs;
            for (int o = 0; o < n_out; o++) g_t[o][r] = gr[o];
            for (int i = 0; i < n_in; i++) x_t[i][r] = xr[i];
        }
        for (int o = 0; o < n_out; o++) {
            tl_dot16_many(g_t[o], x_rows, n_in, nr, dots);
            grad_t* grad_row = grad + (int64_t)o * n_in;
            for (int i = 0; i < n_in; i++) grad_row[i] += dots[i];
        }
    }
    int status = TL_OK;
    for (int64_t e = 0; e < (int64_t)n_out * n_in; e++)
        if (grad[e] >= TL_ACC_LIMIT || grad[e] < -TL_ACC_LIMIT) status = TL_ACC_RANGE;
    return status;
#else
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
#endif
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
