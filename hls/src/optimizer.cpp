// optimizer_step: AdamW or SGD with momentum on fp32 master weights and moments, element-wise in one fixed
// operation order (compiled with -ffp-contract=off: no fused multiply-add), then the int16 weights are
// re-derived with a frac from the new max-abs (trilevel.intref.optim, docs/numerics.md 2.12).
#include <math.h>

#include "trilevel_kernels.h"

#define TL_ADAMW 0
#define TL_SGDM 1
#define TL_NOT_FINITE 3  // a master weight became NaN or inf
#define TL_HEADROOM_BITS 1
#define TL_ZERO_FRAC 15
#define TL_FRAC_MIN (-16)
#define TL_FRAC_MAX 40

// mode TL_ADAMW: scal = {decay, beta1, 1 - beta1, beta2, 1 - beta2, step_size, 1/sqrt(bc2), eps};
//   g = float(acc) * 2^-grad_frac / batch;  p *= decay;  m = beta1 m + (1 - beta1) g;
//   v = beta2 v + ((1 - beta2) g) g;  p -= step_size (m / (sqrt(v) / sqrt(bc2) + eps)).
// mode TL_SGDM: scal = {lr, momentum, weight_decay}, m is the momentum buffer, v is not used;
//   g += weight_decay p;  m = first ? g : momentum m + g;  p -= lr m.
// Then frac = clamp(15 - 1 - exponent(max |p|), -16, 40) (15 if all zero) and w = sat16(rint(p 2^frac)).
int optimizer_step(float* master, float* m, float* v, const grad_t* grad_acc, data_t* w, shift_t* frac_out,
                   int n, shift_t grad_frac, dim_t batch, flag_t mode, const float scal[8], flag_t first) {
#pragma HLS INTERFACE m_axi port = master offset = slave bundle = gmem0 depth = 589824
#pragma HLS INTERFACE m_axi port = m offset = slave bundle = gmem1 depth = 589824
#pragma HLS INTERFACE m_axi port = v offset = slave bundle = gmem2 depth = 589824
#pragma HLS INTERFACE m_axi port = grad_acc offset = slave bundle = gmem3 depth = 589824
#pragma HLS INTERFACE m_axi port = w offset = slave bundle = gmem0 depth = 589824
#pragma HLS INTERFACE s_axilite port = frac_out
#pragma HLS INTERFACE s_axilite port = n
#pragma HLS INTERFACE s_axilite port = grad_frac
#pragma HLS INTERFACE s_axilite port = batch
#pragma HLS INTERFACE s_axilite port = mode
#pragma HLS INTERFACE s_axilite port = scal
#pragma HLS INTERFACE s_axilite port = first
#pragma HLS INTERFACE s_axilite port = return
    if (n < 0 || (int)batch < 1) return TL_BAD_DIMS;
    const float scale = ldexpf(1.0f, -(int)grad_frac), fb = (float)(int)batch;
    float max_abs = 0.0f;
    bool finite = true;
update:
    for (int i = 0; i < n; i++) {
#pragma HLS PIPELINE II = 1
        float g = ((float)(int64_t)grad_acc[i] * scale) / fb;
        float p = master[i];
        if (mode == TL_ADAMW) {
            p = p * scal[0];
            const float mi = scal[1] * m[i] + scal[2] * g;
            const float vi = scal[3] * v[i] + (scal[4] * g) * g;
            m[i] = mi;
            v[i] = vi;
            p = p - scal[5] * (mi / (sqrtf(vi) * scal[6] + scal[7]));
        } else {
            g = g + scal[2] * p;
            const float bi = first ? g : scal[1] * m[i] + g;
            m[i] = bi;
            p = p - scal[0] * bi;
        }
        master[i] = p;
        const float a = fabsf(p);
        if (!(a < INFINITY)) finite = false;  // inf or NaN
        if (a > max_abs) max_abs = a;
    }
    if (!finite) return TL_NOT_FINITE;
    int frac = TL_ZERO_FRAC;
    if (max_abs > 0.0f) {
        int e;
        frexpf(max_abs, &e);
        frac = 15 - TL_HEADROOM_BITS - e;
        frac = frac < TL_FRAC_MIN ? TL_FRAC_MIN : (frac > TL_FRAC_MAX ? TL_FRAC_MAX : frac);
    }
    const double unit = ldexp(1.0, frac);
requantize:
    for (int i = 0; i < n; i++) {
#pragma HLS PIPELINE II = 1
        const double r = nearbyint((double)master[i] * unit);  // RNE; saturate before the integer cast
        w[i] = (data_t)(r > TL_INT16_MAX ? TL_INT16_MAX : (r < TL_INT16_MIN ? TL_INT16_MIN : (int)r));
    }
    *frac_out = frac;
    return TL_OK;
}

#ifndef __SYNTHESIS__
#include "trilevel_csim_abi.h"

extern "C" {
int tl_optimizer_step(float* master, float* m, float* v, const int64_t* grad_acc, int16_t* w, int* frac_out, int64_t n,
                      int grad_frac, int batch, int mode, const float* scal, int first) {
    if (n > 0x7FFFFFFF) return TL_BAD_DIMS;
    std::vector<grad_t> g = tl_in<grad_t>(grad_acc, n);
    std::vector<data_t> wv((size_t)n);
    shift_t frac = 0;
    const int status = optimizer_step(master, m, v, g.data(), wv.data(), &frac, (int)n, grad_frac, batch, mode, scal,
                                      first);
    tl_out(wv, w);
    *frac_out = (int)frac;
    return status;
}
}
#endif
