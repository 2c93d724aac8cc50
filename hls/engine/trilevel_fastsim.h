// C-sim-only helpers of the fast flavour (-DTRILEVEL_FAST_CSIM): exact int16 dot products that g++
// runs at several MACs per cycle on any x86-64 (SSE2 is part of the baseline ISA; no -march needed).
// Synthesis and the ap_int C-sim never include this header: their loops stay as written.
#ifndef TRILEVEL_FASTSIM_H
#define TRILEVEL_FASTSIM_H

#ifdef TRILEVEL_FAST_CSIM
#include <stdint.h>
#include <stdlib.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

// sum_k a[k] * b[k], exact in int64 for any int16 inputs and n < 2**32.
// SSE2 path: pmaddwd adds two int16 products into an int32 lane. The pair sum lies in
// [-2**31 + 2**16, 2**31], so it wraps only at +2**31 (to INT32_MIN); subtracting 1 first maps every
// pair sum t to t - 1, which fits int32 exactly, and the 1s are added back once at the end.
static inline int64_t tl_dot16(const int16_t* a, const int16_t* b, int n) {
    int64_t sum = 0;
    int k = 0;
#if defined(__SSE2__)
    if (n >= 8) {
        const __m128i one = _mm_set1_epi32(1);
        __m128i acc0 = _mm_setzero_si128(), acc1 = _mm_setzero_si128();
        for (; k + 8 <= n; k += 8) {
            const __m128i va = _mm_loadu_si128((const __m128i*)(a + k));
            const __m128i vb = _mm_loadu_si128((const __m128i*)(b + k));
            const __m128i pair = _mm_sub_epi32(_mm_madd_epi16(va, vb), one);  // t - 1, exact
            const __m128i sign = _mm_srai_epi32(pair, 31);
            acc0 = _mm_add_epi64(acc0, _mm_unpacklo_epi32(pair, sign));
            acc1 = _mm_add_epi64(acc1, _mm_unpackhi_epi32(pair, sign));
        }
        const __m128i acc = _mm_add_epi64(acc0, acc1);
        int64_t lanes[2];
        _mm_storeu_si128((__m128i*)lanes, acc);
        sum = lanes[0] + lanes[1] + (int64_t)(k / 2);  // k / 2 pair sums, each 1 short
    }
#endif
    for (; k < n; k++) sum += (int64_t)a[k] * b[k];
    return sum;
}

// out[j] = tl_dot16(a, b[j], n) for j < count: the MAC loop of the fast C-sim's GEMMs. On CPUs with
// AVX2 (checked once at run time) a 256-bit build of the same arithmetic runs; the library itself
// still needs only the x86-64 baseline.
static inline void tl_dot16_many_base(const int16_t* a, const int16_t* const* b, int count, int n, int64_t* out) {
    for (int j = 0; j < count; j++) out[j] = tl_dot16(a, b[j], n);
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx2"))) static void tl_dot16_many_avx2(const int16_t* a, const int16_t* const* b,
                                                               int count, int n, int64_t* out) {
    const __m256i one = _mm256_set1_epi32(1);
    const int n16 = n & ~15;
    for (int j = 0; j < count; j++) {
        const int16_t* bj = b[j];
        __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
        for (int k = 0; k < n16; k += 16) {
            const __m256i va = _mm256_loadu_si256((const __m256i*)(a + k));
            const __m256i vb = _mm256_loadu_si256((const __m256i*)(bj + k));
            const __m256i pair = _mm256_sub_epi32(_mm256_madd_epi16(va, vb), one);  // t - 1, exact
            acc0 = _mm256_add_epi64(acc0, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(pair)));
            acc1 = _mm256_add_epi64(acc1, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(pair, 1)));
        }
        int64_t lanes[4];
        _mm256_storeu_si256((__m256i*)lanes, _mm256_add_epi64(acc0, acc1));
        int64_t sum = lanes[0] + lanes[1] + lanes[2] + lanes[3] + (int64_t)(n16 / 2);
        for (int k = n16; k < n; k++) sum += (int64_t)a[k] * bj[k];
        out[j] = sum;
    }
}

// TRILEVEL_CSIM_NO_AVX2=1 in the environment forces the baseline path (to test it on an AVX2 machine).
static inline int tl_use_avx2() {
    __builtin_cpu_init();
    const char* off = getenv("TRILEVEL_CSIM_NO_AVX2");
    return __builtin_cpu_supports("avx2") && !(off && off[0] && off[0] != '0');
}

static inline void tl_dot16_many(const int16_t* a, const int16_t* const* b, int count, int n, int64_t* out) {
    static const int has_avx2 = tl_use_avx2();
    if (has_avx2)
        tl_dot16_many_avx2(a, b, count, n, out);
    else
        tl_dot16_many_base(a, b, count, n, out);
}
#else
static inline void tl_dot16_many(const int16_t* a, const int16_t* const* b, int count, int n, int64_t* out) {
    tl_dot16_many_base(a, b, count, n, out);
}
#endif

#endif
#endif
