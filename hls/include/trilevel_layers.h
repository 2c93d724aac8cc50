// Element-wise and row-wise layers shared by the block kernels: LayerNorm and GELU, forward and
// backward, bit-exact with trilevel.intref.layers (docs/numerics.md 2.7, 2.8). Each routine runs over
// `rows` rows of `dim` values (all B*T tokens of a call); SR indices are flat positions in [rows][dim].
#ifndef TRILEVEL_LAYERS_H
#define TRILEVEL_LAYERS_H

#include "trilevel_kernels.h"
#include "trilevel_luts.h"

#define TL_RSQRT_BITS 12
#define TL_RSQRT_FRAC 20
#define TL_GELU_IN_FRAC 7
#define TL_GELU_CELLS 2048
#define TL_GELU_LUT_FRAC 16
#define TL_LN_EPS_LOG2 (-20)
#define TL_LN_MAX_IN_FRAC 24

static inline int tl_bit_length(uint64_t v) {
    int n = 0;
    while (v) {
        n++;
        v >>= 1;
    }
    return n;
}

static inline int64_t tl_max64(int64_t a, int64_t b) { return a > b ? a : b; }

// Frac of the normalized value x_hat: 15 - bit_length(isqrt(D - 1)).
static inline int tl_ln_xhat_frac(int dim) {
    int r = 0;
    while ((int64_t)(r + 1) * (r + 1) <= dim - 1) r++;
    return 15 - tl_bit_length((uint64_t)r);
}

// eps * D^2 * 2^(2 fx) as an integer (eps = 2^-20, fx capped at 24).
static inline int64_t tl_ln_eps_term(int dim, int frac_x) {
    const int e = 2 * (frac_x < TL_LN_MAX_IN_FRAC ? frac_x : TL_LN_MAX_IN_FRAC) + TL_LN_EPS_LOG2;
    const int64_t d2 = (int64_t)dim * dim;
    return e >= 0 ? d2 << e : (-e >= 63 ? 0 : d2 >> -e);
}

// LayerNorm forward: y = RNE(x_hat * gamma + align(beta), fh + fgamma - frac_y). Saves x_hat (frac fh),
// the row's rsqrt LUT value and its k. Returns max_abs_out of the y accumulator.
static int64_t tl_layernorm_fwd(const data_t* x, int rows, int dim, int frac_x, const data_t* gamma, int frac_g,
                                const data_t* beta, int frac_b, int frac_y, data_t* y, data_t* xhat,
                                int32_t* rsqrt, int32_t* kk) {
    const int fh = tl_ln_xhat_frac(dim), fa = fh + frac_g, shift = fa - frac_y;
    const int64_t eps = tl_ln_eps_term(dim, frac_x);
    int64_t peak = 0;
ln_rows:
    for (int r = 0; r < rows; r++) {
        const data_t* xr = x + (int64_t)r * dim;
        int64_t s1 = 0, s2 = 0;
        for (int d = 0; d < dim; d++) {
#pragma HLS PIPELINE II = 1
            const int64_t v = xr[d];
            s1 += v;
            s2 += v * v;
        }
        const int64_t w = dim * s2 - s1 * s1 + eps;
        const int bl = tl_bit_length((uint64_t)w);
        const int k = bl >= TL_RSQRT_BITS - 1 ? (bl - TL_RSQRT_BITS + 1) / 2 : 0;
        const int64_t rs = RSQRT_LUT[w >> (2 * k)];
        rsqrt[r] = (int32_t)rs;
        kk[r] = k;
        const int xs = TL_RSQRT_FRAC + k - fh;
        for (int d = 0; d < dim; d++) {
#pragma HLS PIPELINE II = 1
            const int64_t h = tl_requantize(((int64_t)dim * xr[d] - s1) * rs, xs, TL_RNE, 0, 0);
            xhat[(int64_t)r * dim + d] = (data_t)h;
            const int64_t acc = h * (int64_t)gamma[d] + tl_align(beta[d], frac_b, fa);
            peak = tl_max64(peak, tl_abs64(acc));
            y[(int64_t)r * dim + d] = (data_t)tl_requantize(acc, shift, TL_RNE, 0, 0);
        }
    }
    return tl_peak_out(peak, shift);
}

// LayerNorm backward (trilevel.intref.layers.layernorm_bwd). Adds sum dy*x_hat to grad_g and sum dy to
// grad_b first (TL_ACC_RANGE on 48-bit overflow, nothing else done). fr = {f_g, f_t, f_dx}; residual
// (frac frac_res) may be 0. stats[0..2] = max-abs of g, t, dx.
static int tl_layernorm_bwd(const data_t* dy, int frac_dy, const data_t* xhat, const int32_t* rsqrt,
                            const int32_t* kk, int frac_x, int rows, int dim, const data_t* gamma, int frac_gamma,
                            grad_t* grad_g, grad_t* grad_b, const int* fr, uint32_t seed, const data_t* residual,
                            int frac_res, data_t* dx, int64_t* stats) {
    if (tl_accumulate_outer_diag(dy, xhat, rows, dim, grad_g) != TL_OK) return TL_ACC_RANGE;
    if (tl_accumulate_colsum(dy, dim, dim, rows, grad_b) != TL_OK) return TL_ACC_RANGE;
    const int fh = tl_ln_xhat_frac(dim);
    const int g_shift = frac_dy + frac_gamma - fr[0], t_shift = fr[0] + fh - fr[1];
    const uint32_t seed_g = tl_hash32(seed, 0), seed_t = tl_hash32(seed, 1), seed_dx = tl_hash32(seed, 2);
    static int64_t g[TL_HIDDEN_MAX];
    int64_t peak_g = 0, peak_t = 0, peak_dx = 0;
ln_bwd_rows:
    for (int r = 0; r < rows; r++) {
        const int64_t base = (int64_t)r * dim;
        int64_t a_sum = 0, gx = 0;
        for (int d = 0; d < dim; d++) {
#pragma HLS PIPELINE II = 1
            const int64_t g_acc = (int64_t)dy[base + d] * gamma[d];
            peak_g = tl_max64(peak_g, tl_abs64(g_acc));
            g[d] = tl_requantize(g_acc, g_shift, TL_SR, seed_g, (uint32_t)(base + d));
            a_sum += g[d];
            gx += g[d] * xhat[base + d];
        }
        const int64_t b_sum = tl_round_shift(gx, fh, TL_RNE, 0, 0);
        const int frac_acc = fr[1] + TL_RSQRT_FRAC + kk[r] - frac_x, shift = frac_acc - fr[2];
        for (int d = 0; d < dim; d++) {
#pragma HLS PIPELINE II = 1
            const int64_t t = ((dim * g[d] - a_sum) * ((int64_t)1 << fh)) - (int64_t)xhat[base + d] * b_sum;
            peak_t = tl_max64(peak_t, tl_abs64(t));
            const int64_t t_hat = tl_requantize(t, t_shift, TL_SR, seed_t, (uint32_t)(base + d));
            int64_t acc = t_hat * rsqrt[r];
            if (residual) acc += tl_align(residual[base + d], frac_res, frac_acc);
            peak_dx = tl_max64(peak_dx, tl_peak_out(tl_abs64(acc), shift));
            dx[base + d] = (data_t)tl_requantize(acc, shift, TL_SR, seed_dx, (uint32_t)(base + d));
        }
    }
    stats[0] = tl_peak_out(peak_g, g_shift);
    stats[1] = tl_peak_out(peak_t, t_shift);
    stats[2] = peak_dx;
    return TL_OK;
}

// GELU LUT cell of h (frac frac_h): clip(floor(h * 2^(7 - frac_h)), -1024, 1023) + 1024.
static inline int tl_gelu_index(int64_t h, int frac_h) {
    const int s = TL_GELU_IN_FRAC - frac_h;
    int64_t scaled = s >= 0 ? h * ((int64_t)1 << s) : h >> (-s > 62 ? 62 : -s);
    const int half = TL_GELU_CELLS / 2;
    scaled = scaled < -half ? -half : (scaled > half - 1 ? half - 1 : scaled);
    return (int)scaled + half;
}

// y = RNE(h * PHI_LUT[cell(h)], frac_h + 16 - frac_y) over n values; returns max_abs_out.
static int64_t tl_gelu_fwd(const data_t* h, int64_t n, int frac_h, int frac_y, data_t* y) {
    const int shift = frac_h + TL_GELU_LUT_FRAC - frac_y;
    int64_t peak = 0;
gelu:
    for (int64_t i = 0; i < n; i++) {
#pragma HLS PIPELINE II = 1
        const int64_t acc = (int64_t)h[i] * (int64_t)PHI_LUT[tl_gelu_index(h[i], frac_h)];
        peak = tl_max64(peak, tl_abs64(acc));
        y[i] = (data_t)tl_requantize(acc, shift, TL_RNE, 0, 0);
    }
    return tl_peak_out(peak, shift);
}

// dx = SR(dy * DGELU_LUT[cell(h)], frac_dy + 16 - frac_dx, hash32(seed, 0)); returns max_abs_out.
static int64_t tl_gelu_bwd(const data_t* dy, const data_t* h, int64_t n, int frac_dy, int frac_h, int frac_dx,
                           uint32_t seed, data_t* dx) {
    const int shift = frac_dy + TL_GELU_LUT_FRAC - frac_dx;
    const uint32_t sd = tl_hash32(seed, 0);
    int64_t peak = 0;
gelu_bwd:
    for (int64_t i = 0; i < n; i++) {
#pragma HLS PIPELINE II = 1
        const int64_t acc = (int64_t)dy[i] * (int64_t)DGELU_LUT[tl_gelu_index(h[i], frac_h)];
        peak = tl_max64(peak, tl_abs64(acc));
        dx[i] = (data_t)tl_requantize(acc, shift, TL_SR, sd, (uint32_t)i);
    }
    return tl_peak_out(peak, shift);
}

#endif
