// Contract primitives of docs/numerics.md section 1: hash32 (1.3), requantize (1.2), saturation.
// Pure integer functions on native types: the same code is synthesized (Vitis HLS infers the
// shifts/adders) and runs in both C-sim flavours, so every kernel requantizes identically.
#ifndef TRILEVEL_FIXED_H
#define TRILEVEL_FIXED_H

#include <stdint.h>

#define TL_INT16_MAX 32767
#define TL_INT16_MIN (-32768)

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

static inline int16_t tl_saturate(int64_t v) {
#pragma HLS INLINE
    return (int16_t)(v > TL_INT16_MAX ? TL_INT16_MAX : (v < TL_INT16_MIN ? TL_INT16_MIN : v));
}

static inline int64_t tl_abs64(int64_t v) {
#pragma HLS INLINE
    return v < 0 ? -v : v;
}

// acc * 2**-shift rounded by `mode` (TL_RNE / TL_SR), BEFORE saturation (1.2), for |acc| < 2**62
// and shift <= 62 (trilevel.intref.fixed.round_shift). For shift <= 0 the value is computed from acc
// clipped to +-2**15 and a left shift of at most 17: anything beyond saturates anyway.
static inline int64_t tl_round_shift(int64_t acc, int shift, int mode, uint32_t seed, uint32_t index) {
#pragma HLS INLINE
    if (shift <= 0) {
        const int64_t clipped = acc > 32768 ? 32768 : (acc < -32768 ? -32768 : acc);
        return clipped * ((int64_t)1 << (-shift > 17 ? 17 : -shift));
    }
    if (mode == 0) {  // round half to even
        if (shift >= 63) return 0;  // |acc| < 2**62 <= half
        const int64_t q = acc >> shift;  // floor
        const int64_t rem = acc - q * ((int64_t)1 << shift);
        const int64_t half = (int64_t)1 << (shift - 1);
        return (rem > half || (rem == half && (q & 1))) ? q + 1 : q;
    }
    const uint64_t h = tl_hash32(seed, index);
    if (shift <= 32) return (acc + (int64_t)(h & (((uint64_t)1 << shift) - 1))) >> shift;
    if (shift <= 62) return (acc + (int64_t)(h << (shift - 32))) >> shift;
    // floor((acc + r) / 2**shift) with 0 <= r < 2**shift and |acc| < 2**62 is -1 iff acc + r < 0.
    if (acc >= 0) return 0;
    const int e = shift - 32;  // r = h * 2**e
    if (e >= 62) return h == 0 ? -1 : 0;
    const int64_t need = ((-acc) + ((int64_t)1 << e) - 1) >> e;  // r < -acc  <=>  h < ceil(-acc / 2**e)
    return (int64_t)h < need ? -1 : 0;
}

static inline int16_t tl_requantize(int64_t acc, int shift, int mode, uint32_t seed, uint32_t index) {
#pragma HLS INLINE
    return tl_saturate(tl_round_shift(acc, shift, mode, seed, index));
}

#endif
