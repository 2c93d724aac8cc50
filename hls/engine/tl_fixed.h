// Bit-exact integer primitives of docs/numerics.md section 1-2, as the engine's units use them:
// hash32 (1.3), round_shift / requantize (1.2), saturation, align (2.3), the statistic in output units,
// the softmax exp2 (1.5), and the LayerNorm / GELU helpers (2.7, 2.8). Pure functions on native
// integer types: Vitis HLS infers the shifters/adders, and both C-sim flavours run the same code.
// The tables come from build/.../trilevel_luts.h, generated from trilevel.intref.luts.
#ifndef TL_FIXED_H
#define TL_FIXED_H

#include <stdint.h>

#include "trilevel_luts.h"

#define TL_INT16_MAX 32767
#define TL_INT16_MIN (-32768)
#define TL_ACC_LIMIT ((int64_t)1 << 47)  // signed 48-bit accumulators: |v| < 2**47
#define TL_RNE 0
#define TL_SR 1
#define TL_LOG2E_Q14 23637
#define TL_RSQRT_BITS 12
#define TL_RSQRT_FRAC 20
#define TL_GELU_IN_FRAC 7
#define TL_GELU_CELLS 2048
#define TL_GELU_LUT_FRAC 16
#define TL_LN_EPS_LOG2 (-20)
#define TL_LN_MAX_IN_FRAC 24

// Counter-based SR source (1.3): every lane computes its bits from (seed, index), no carried state.
static inline uint32_t tl_hash32(uint32_t seed, uint32_t index) {
#pragma HLS INLINE
    uint32_t x = seed ^ (uint32_t)(index * 0x9E3779B9u);
    x ^= x >> 16;
    x *= 0x21F0AAADu;
    x ^= x >> 15;
    x *= 0x735A2D97u;
    x ^= x >> 15;
    return x;
}

static inline int16_t tl_sat16(int64_t v) {
#pragma HLS INLINE
    return (int16_t)(v > TL_INT16_MAX ? TL_INT16_MAX : (v < TL_INT16_MIN ? TL_INT16_MIN : v));
}

static inline int64_t tl_abs64(int64_t v) {
#pragma HLS INLINE
    return v < 0 ? -v : v;
}

static inline int64_t tl_max64(int64_t a, int64_t b) {
#pragma HLS INLINE
    return a > b ? a : b;
}

static inline int tl_acc_ok(int64_t v) {
#pragma HLS INLINE
    return v < TL_ACC_LIMIT && v >= -TL_ACC_LIMIT;
}

// acc * 2**-shift rounded by `mode` (TL_RNE / TL_SR), BEFORE saturation (1.2), for |acc| < 2**62 and
// shift <= 62 (trilevel.intref.fixed.round_shift). For shift <= 0 the value is computed from acc
// clipped to +-2**15 and a left shift of at most 17: anything beyond saturates anyway.
static inline int64_t tl_round_shift(int64_t acc, int shift, int mode, uint32_t seed, uint32_t index) {
#pragma HLS INLINE
    if (shift <= 0) {
        const int64_t clipped = acc > 32768 ? 32768 : (acc < -32768 ? -32768 : acc);
        return clipped * ((int64_t)1 << (-shift > 17 ? 17 : -shift));
    }
    if (mode == TL_RNE) {
        if (shift >= 63) return 0;
        const int64_t q = acc >> shift;  // floor
        const int64_t rem = acc - q * ((int64_t)1 << shift);
        const int64_t half = (int64_t)1 << (shift - 1);
        return (rem > half || (rem == half && (q & 1))) ? q + 1 : q;
    }
    const uint64_t h = tl_hash32(seed, index);
    if (shift <= 32) return (acc + (int64_t)(h & (((uint64_t)1 << shift) - 1))) >> shift;
    return (acc + (int64_t)(h << (shift - 32))) >> shift;  // shift <= 62: r < 2**62, no overflow
}

static inline int16_t tl_requantize(int64_t acc, int shift, int mode, uint32_t seed, uint32_t index) {
#pragma HLS INLINE
    return tl_sat16(tl_round_shift(acc, shift, mode, seed, index));
}

// align(v, s) of docs/engine.md: v << -s for s <= 0 (exact), round(v, s, RNE) for s > 0.
static inline int64_t tl_align(int64_t v, int s) {
#pragma HLS INLINE
    return s <= 0 ? v * ((int64_t)1 << -s) : tl_round_shift(v, s, TL_RNE, 0, 0);
}

// units(|v|, s): the statistic in output units (trilevel.intref.fixed.max_abs_out), saturating at 2**63 - 1.
static inline int64_t tl_units(int64_t mag, int s) {
#pragma HLS INLINE
    if (s >= 0) return s >= 63 ? 0 : mag >> s;
    const int l = -s;
    if (mag == 0) return 0;
    if (l >= 63 || mag > (INT64_MAX >> l)) return INT64_MAX;
    return mag << l;
}

// bit_length of v >= 0 (a priority encoder in hardware).
static inline int tl_bit_length(uint64_t v) {
#pragma HLS INLINE
    int n = 0;
bitlen:
    for (int b = 0; b < 64; b++) {
#pragma HLS UNROLL
        if ((v >> b) & 1) n = b + 1;
    }
    return n;
}

// 1.5: 2**(-u/256) in Q1.15 for u >= 0 in Q.8.
static inline int64_t tl_exp2_neg(int64_t u) {
#pragma HLS INLINE
    const int64_t n = u >> 8;
    return n >= 16 ? 0 : (int64_t)(EXP2_LUT[u & 255] >> n);
}

// Frac of the normalized value x_hat: 15 - bit_length(isqrt(D - 1)) (ln_xhat_frac).
static inline int tl_ln_xhat_frac(int dim) {
    int r = 0;
isqrt:
    for (int t = 0; t < 256; t++) {  // dim <= TL_MAX_ROW <= 65536: isqrt < 256
#pragma HLS PIPELINE II = 1
        if ((int64_t)(t + 1) * (t + 1) <= dim - 1) r = t + 1;
    }
    return 15 - tl_bit_length((uint64_t)r);
}

// eps * D**2 * 2**(2 fx) as an integer (eps = 2**-20, fx capped at 24): ln_eps_term.
static inline int64_t tl_ln_eps_term(int dim, int frac_x) {
    const int e = 2 * (frac_x < TL_LN_MAX_IN_FRAC ? frac_x : TL_LN_MAX_IN_FRAC) + TL_LN_EPS_LOG2;
    const int64_t d2 = (int64_t)dim * dim;
    return e >= 0 ? d2 << e : (-e >= 63 ? 0 : d2 >> -e);
}

// GELU LUT cell of h (frac frac_h): clip(floor(h * 2**(7 - frac_h)), -1024, 1023) + 1024.
static inline int tl_gelu_index(int64_t h, int frac_h) {
#pragma HLS INLINE
    const int s = TL_GELU_IN_FRAC - frac_h;
    int64_t scaled = s >= 0 ? h * ((int64_t)1 << (s > 40 ? 40 : s)) : h >> (-s > 62 ? 62 : -s);
    const int half = TL_GELU_CELLS / 2;
    scaled = scaled < -half ? -half : (scaled > half - 1 ? half - 1 : scaled);
    return (int)scaled + half;
}

#endif
