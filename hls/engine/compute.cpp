// The COMPUTE module's command bodies (docs/engine.md): the GEMM array with its requantize / accumulate
// epilogue, the softmax units, the vector/SFU unit (LayerNorm, GELU, column sums, masks) and the
// top-k unit, all on the on-chip SPM / ACC / IDX / STAT memories. Bit-exact with trilevel.intref.
#include "tl_engine.h"

#ifdef TRILEVEL_FAST_CSIM
#include <algorithm>

#include "trilevel_fastsim.h"
#endif

#define TL_R TL_ARRAY_ROWS
#define TL_C TL_ARRAY_COLS

// Shift fields (docs/engine.md "Checks"): requantizer shifts right 0..62, left 0..16; operand ALIGNMENT
// shifts (GEMM bias shift2 / residual shift3, LN_FWD beta shift2, LN_BWD residual shift4 and shift4 - k)
// -47..62: an int16 moved left by up to 47 bits still fits the 64-bit epilogue.
static inline bool tl_round_ok(int s) { return s >= -16 && s <= 62; }
static inline bool tl_align_ok(int s) { return s >= -47 && s <= 62; }

static inline void tl_stat_max(int64_t* stat, int slot, int64_t v) {
#pragma HLS INLINE
    if (v > stat[slot]) stat[slot] = v;
}

// ============================================================================================ GEMM
// The output stage of element (i, j) given its exact dot product (the requantizer lane of column j):
// ACC accumulate, or dot * imm + bias + residual rounded to int16, and the statistic. 0 or a failure.
static inline uint32_t tl_gemm_out(const tl_dec_t& d, int i, int j, int64_t dot, int16_t* spm, int64_t* acc,
                                   int64_t* peak) {
#pragma HLS INLINE
    if (d.acc) {
        const uint64_t e = d.f_addr + (uint64_t)i * d.c_stride + j;
        const int64_t v = acc[e] + dot;
        if (!tl_acc_ok(v)) return tl_fail(TL_ERR_ACC_RANGE, d.pc);
        acc[e] = v;
        return 0;
    }
    if (tl_abs64(dot) >= d.dot_limit) return tl_fail(TL_ERR_ACC_RANGE, d.pc);  // |dot * imm| >= 2**62
    int64_t v = dot * (int64_t)d.imm;
    if (d.bias) v += tl_align(spm[d.d_addr + j], d.shift2);
    bool counted = true;
    if (d.res || d.mask) {
        const int16_t e = spm[d.e_addr + (uint64_t)i * d.e_stride + j];
        if (d.res) v += tl_align(e, d.shift3);
        if (d.mask) counted = e != 0;
    }
    if (counted) *peak = tl_max64(*peak, tl_units(tl_abs64(v), d.shift));
    spm[d.c_addr + (uint64_t)i * d.c_stride + j] =
        tl_requantize(v, d.shift, d.sr, d.seed, d.index_base + (uint32_t)i * d.index_stride + (uint32_t)j);
    return 0;
}

static inline int16_t tl_gemm_a(const tl_dec_t& d, const int16_t* spm, int i, int p) {
#pragma HLS INLINE
    return d.ta ? spm[d.a_addr + (uint64_t)p * d.a_stride + i] : spm[d.a_addr + (uint64_t)i * d.a_stride + p];
}

static inline int16_t tl_gemm_b(const tl_dec_t& d, const int16_t* spm, int j, int p) {
#pragma HLS INLINE
    return d.tb ? spm[d.b_addr + (uint64_t)p * d.b_stride + j] : spm[d.b_addr + (uint64_t)j * d.b_stride + p];
}

#ifdef TRILEVEL_FAST_CSIM
// The output stage of one row (tl_gemm_out for j0 <= j < j0 + nj) with the flags resolved once per row.
static uint32_t tl_gemm_out_row(const tl_dec_t& d, int i, int j0, int nj, const int64_t* dots, int16_t* spm,
                                int64_t* acc, int64_t* peak, const int64_t* bias_al) {
    if (d.acc) {
        int64_t* row = acc + d.f_addr + (uint64_t)i * d.c_stride + j0;
        for (int j = 0; j < nj; j++) {
            const int64_t v = row[j] + dots[j];
            if (!tl_acc_ok(v)) return tl_fail(TL_ERR_ACC_RANGE, d.pc);
            row[j] = v;
        }
        return 0;
    }
    const int16_t* e_row = (d.res || d.mask) ? spm + d.e_addr + (uint64_t)i * d.e_stride + j0 : 0;
    int16_t* c_row = spm + d.c_addr + (uint64_t)i * d.c_stride + j0;
    const uint32_t index0 = d.index_base + (uint32_t)i * d.index_stride + (uint32_t)j0;
    int64_t best = *peak;
    for (int j = 0; j < nj; j++) {
        if (tl_abs64(dots[j]) >= d.dot_limit) return tl_fail(TL_ERR_ACC_RANGE, d.pc);
        int64_t v = dots[j] * (int64_t)d.imm;
        if (d.bias) v += bias_al[j0 + j];
        if (d.res) v += tl_align(e_row[j], d.shift3);
        if (!d.mask || e_row[j] != 0) best = tl_max64(best, tl_units(tl_abs64(v), d.shift));
        c_row[j] = tl_requantize(v, d.shift, d.sr, d.seed, index0 + (uint32_t)j);
    }
    *peak = best;
    return 0;
}

// C-sim fast path: every output is one exact SIMD dot product (trilevel_fastsim.h) of an A row and a
// B row packed contiguously (in place when already contiguous): the same sums as the PE array.
static uint32_t tl_gemm_run(const tl_dec_t& d, int16_t* spm, int64_t* acc, int64_t* peak) {
    static int16_t a_pack[65536];
    static int16_t b_pack[TL_SPM_ELEMS];
    static const int16_t* b_rows[65536];
    static int64_t dots[65536];
    static int64_t bias_al[65536];
    if (d.bias && !d.acc)  // the aligned bias once per command, not once per output
        for (int j = 0; j < d.n; j++) bias_al[j] = tl_align(spm[d.d_addr + j], d.shift2);
    const int chunk = d.tb ? (int)(TL_SPM_ELEMS / (uint64_t)d.k) : d.n;  // B columns packed per pass
    for (int j0 = 0; j0 < d.n; j0 += chunk) {
        const int nj = d.n - j0 < chunk ? d.n - j0 : chunk;
        for (int j = 0; j < nj; j++) {
            if (!d.tb) {
                b_rows[j] = spm + d.b_addr + (uint64_t)(j0 + j) * d.b_stride;
                continue;
            }
            int16_t* col = b_pack + (uint64_t)j * d.k;
            for (int p = 0; p < d.k; p++) col[p] = spm[d.b_addr + (uint64_t)p * d.b_stride + j0 + j];
            b_rows[j] = col;
        }
        for (int i = 0; i < d.m; i++) {
            const int16_t* a_row = spm + d.a_addr + (uint64_t)i * d.a_stride;
            if (d.ta) {
                for (int p = 0; p < d.k; p++) a_pack[p] = spm[d.a_addr + (uint64_t)p * d.a_stride + i];
                a_row = a_pack;
            }
            tl_dot16_many(a_row, b_rows, nj, d.k, dots);
            const uint32_t err = tl_gemm_out_row(d, i, j0, nj, dots, spm, acc, peak, bias_al);
            if (err) return err;
        }
    }
    return 0;
}
#else
// The PE array as synthesized: R x C output tiles; per tile the operands are staged into skewed
// tile buffers (element (r, p) in bank (p + r) mod R, so both the row-wise fill and the per-step
// vector read touch R distinct banks), then one reduction step per cycle feeds all R x C PEs
// (PIPELINE II = 1 over p, complete unroll over the constant R x C bounds, guards for edge tiles),
// then the epilogue drains EL = TL_EPILOGUE_LANES columns of a row per cycle (TL_DRAIN_SLOTS a tile).
#define TL_ROW_SLOTS (TL_C / TL_EPILOGUE_LANES)
#define TL_DRAIN_SLOTS (TL_R * TL_ROW_SLOTS)
static uint32_t tl_gemm_run(const tl_dec_t& d, int16_t* spm, int64_t* acc, int64_t* peak) {
    static int16_t abuf[TL_R][TL_TILE_K_MAX];
    static int16_t bbuf[TL_C][TL_TILE_K_MAX];
    static tl_mac_t pe[TL_R][TL_C];
#pragma HLS ARRAY_PARTITION variable = abuf complete dim = 1
#pragma HLS ARRAY_PARTITION variable = bbuf complete dim = 1
#pragma HLS ARRAY_PARTITION variable = pe complete dim = 0
tiles_i:
    for (int i0 = 0; i0 < d.m; i0 += TL_R) {
#pragma HLS LOOP_TRIPCOUNT max = TL_TRIP_ROWS / TL_R
    tiles_j:
        for (int j0 = 0; j0 < d.n; j0 += TL_C) {
#pragma HLS LOOP_TRIPCOUNT max = TL_TRIP_COLS / TL_C
        clear:
            for (int r = 0; r < TL_R; r++) {
#pragma HLS UNROLL
                for (int c = 0; c < TL_C; c++) {
#pragma HLS UNROLL
                    pe[r][c] = 0;
                }
            }
        k_chunks:
            for (int p0 = 0; p0 < d.k; p0 += TL_TILE_K_MAX) {
#pragma HLS LOOP_TRIPCOUNT max = 1
                const int kc = d.k - p0 < TL_TILE_K_MAX ? d.k - p0 : TL_TILE_K_MAX;
            // Operand fills. A row of the stored operand is read R consecutive elements per cycle (any
            // alignment: the SPM is cyclic-banked by address), so a non-transposed operand fills row by
            // row and a transposed one reduction step by step; both write R distinct skewed banks.
            if (!d.ta) {
            fill_a_rows:
                for (int r = 0; r < TL_R; r++) {
                    for (int pv = 0; pv < kc; pv += TL_R) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = TL_TRIP_K / TL_R
                        for (int t = 0; t < TL_R; t++) {
#pragma HLS UNROLL
                            const int p = pv + t;
                            if (p < kc) abuf[(p + r) % TL_R][p] = i0 + r < d.m ? tl_gemm_a(d, spm, i0 + r, p0 + p) : 0;
                        }
                    }
                }
            } else {
            fill_a_steps:
                for (int p = 0; p < kc; p++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = TL_TRIP_K
                    for (int r = 0; r < TL_R; r++) {
#pragma HLS UNROLL
                        abuf[(p + r) % TL_R][p] = i0 + r < d.m ? tl_gemm_a(d, spm, i0 + r, p0 + p) : (int16_t)0;
                    }
                }
            }
            if (!d.tb) {
            fill_b_rows:
                for (int c = 0; c < TL_C; c++) {
                    for (int pv = 0; pv < kc; pv += TL_C) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = TL_TRIP_K / TL_C
                        for (int t = 0; t < TL_C; t++) {
#pragma HLS UNROLL
                            const int p = pv + t;
                            if (p < kc) bbuf[(p + c) % TL_C][p] = j0 + c < d.n ? tl_gemm_b(d, spm, j0 + c, p0 + p) : 0;
                        }
                    }
                }
            } else {
            fill_b_steps:
                for (int p = 0; p < kc; p++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = TL_TRIP_K
                    for (int c = 0; c < TL_C; c++) {
#pragma HLS UNROLL
                        bbuf[(p + c) % TL_C][p] = j0 + c < d.n ? tl_gemm_b(d, spm, j0 + c, p0 + p) : (int16_t)0;
                    }
                }
            }
            mac:
                for (int p = 0; p < kc; p++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = TL_TRIP_K
                    int16_t av[TL_R], bv[TL_C];
                    for (int r = 0; r < TL_R; r++) {
#pragma HLS UNROLL
                        av[r] = abuf[(p + r) % TL_R][p];
                    }
                    for (int c = 0; c < TL_C; c++) {
#pragma HLS UNROLL
                        bv[c] = bbuf[(p + c) % TL_C][p];
                    }
                    for (int r = 0; r < TL_R; r++) {
#pragma HLS UNROLL
                        for (int c = 0; c < TL_C; c++) {
#pragma HLS UNROLL
                            pe[r][c] += (tl_mac_t)((int32_t)av[r] * (int32_t)bv[c]);
                        }
                    }
                }
            }
            uint32_t err = 0;
        drain:  // EL = TL_EPILOGUE_LANES requantizer lanes: a row in C / EL cycles; the first failing lane's error is kept
            for (int s = 0; s < TL_DRAIN_SLOTS; s++) {
#pragma HLS PIPELINE II = 1
                const int r = s / TL_ROW_SLOTS;
                const int c0 = s % TL_ROW_SLOTS * TL_EPILOGUE_LANES;
                for (int l = 0; l < TL_EPILOGUE_LANES; l++) {
#pragma HLS UNROLL
                    const int c = c0 + l;
                    if (i0 + r < d.m && j0 + c < d.n && err == 0)
                        err = tl_gemm_out(d, i0 + r, j0 + c, (int64_t)pe[r][c], spm, acc, peak);
                }
            }
            if (err) return err;
        }
    }
    return 0;
}
#endif

static uint32_t tl_gemm(const tl_dec_t& cmd, int16_t* spm, int64_t* acc, int64_t* stat) {
    tl_dec_t d = cmd;
    const int64_t im = d.imm < 0 ? -(int64_t)d.imm : d.imm;
    d.dot_limit = im == 0 ? INT64_MAX : (((int64_t)1 << 62) + im - 1) / im;  // once per command
    if (d.sub || (d.res && d.mask)) return tl_fail(TL_ERR_RESERVED_BITS, d.pc);
    if (d.m == 0 || d.n == 0 || d.k == 0) return tl_fail(TL_ERR_BAD_DIMS, d.pc);
    if (!d.acc && (!tl_round_ok(d.shift) || (d.bias && !tl_align_ok(d.shift2)) || (d.res && !tl_align_ok(d.shift3))))
        return tl_fail(TL_ERR_BAD_SHIFT, d.pc);
    const bool a_ok = d.ta ? tl_span_ok(d.a_addr, d.k, d.a_stride, d.m, TL_SPM_ELEMS)
                           : tl_span_ok(d.a_addr, d.m, d.a_stride, d.k, TL_SPM_ELEMS);
    const bool b_ok = d.tb ? tl_span_ok(d.b_addr, d.k, d.b_stride, d.n, TL_SPM_ELEMS)
                           : tl_span_ok(d.b_addr, d.n, d.b_stride, d.k, TL_SPM_ELEMS);
    const bool c_ok = d.acc ? tl_span_ok(d.f_addr, d.m, d.c_stride, d.n, TL_ACC_ELEMS)
                            : tl_span_ok(d.c_addr, d.m, d.c_stride, d.n, TL_SPM_ELEMS);
    const bool d_ok = !d.bias || tl_span_ok(d.d_addr, 1, 0, d.n, TL_SPM_ELEMS);
    const bool e_ok = !(d.res || d.mask) || tl_span_ok(d.e_addr, d.m, d.e_stride, d.n, TL_SPM_ELEMS);
    if (!(a_ok && b_ok && c_ok && d_ok && e_ok) || (d.stat && d.slot >= TL_STAT_SLOTS))
        return tl_fail(TL_ERR_SPM_RANGE, d.pc);
    int64_t peak = 0;
    const uint32_t err = tl_gemm_run(d, spm, acc, &peak);
    if (err) return err;
    if (d.stat) tl_stat_max(stat, d.slot, peak);
    return 0;
}

// ========================================================================================= SOFTMAX
// One softmax unit's row (docs/numerics.md 1.5 / 1.6); the TL_SOFTMAX_UNITS units take rows in turn.
static uint32_t tl_softmax(const tl_dec_t& d, int16_t* spm, int64_t* acc, int64_t* stat) {
    if (d.sub != TL_SOFTMAX_FWD && d.sub != TL_SOFTMAX_BWD) return tl_fail(TL_ERR_RESERVED_BITS, d.pc);
    if (d.m == 0 || d.n == 0 || d.n > TL_MAX_ROW) return tl_fail(TL_ERR_BAD_DIMS, d.pc);
    const bool fwd = d.sub == TL_SOFTMAX_FWD;
    if (fwd ? (d.shift < 0 || d.shift > 15) : !tl_round_ok(d.shift)) return tl_fail(TL_ERR_BAD_SHIFT, d.pc);
    bool ok = tl_span_ok(d.a_addr, d.m, d.a_stride, d.n, TL_SPM_ELEMS) &&
              tl_span_ok(d.c_addr, d.m, d.c_stride, d.n, TL_SPM_ELEMS);
    if (fwd) {
        ok = ok && (!d.mask || tl_span_ok(d.e_addr, d.m, d.e_stride, d.n, TL_SPM_ELEMS));
        ok = ok && (!d.acc || tl_span_ok(d.d_addr, d.m, d.d_stride, d.n, TL_ACC_ELEMS));
    } else {
        ok = ok && tl_span_ok(d.b_addr, d.m, d.b_stride, d.n, TL_SPM_ELEMS) && !(d.stat && d.slot >= TL_STAT_SLOTS);
    }
    if (!ok) return tl_fail(TL_ERR_SPM_RANGE, d.pc);
    int64_t row_a[TL_MAX_ROW], row_b[TL_MAX_ROW];
    int64_t peak = 0;
softmax_rows:
    for (int i = 0; i < d.m; i++) {
#pragma HLS LOOP_TRIPCOUNT max = TL_TRIP_ROWS
        const uint64_t a_row = d.a_addr + (uint64_t)i * d.a_stride, c_row = d.c_addr + (uint64_t)i * d.c_stride;
        if (fwd) {
            int64_t mx = TL_INT16_MIN, total = 0;
        sm_max:
            for (int j = 0; j < d.n; j++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = TL_MAX_ROW
                const bool valid = !d.mask || spm[d.e_addr + (uint64_t)i * d.e_stride + j] != 0;
                row_a[j] = spm[a_row + j];
                row_b[j] = valid;
                if (valid && row_a[j] > mx) mx = row_a[j];
            }
        sm_exp:
            for (int j = 0; j < d.n; j++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = TL_MAX_ROW
                const int64_t u = ((mx - row_a[j]) * TL_LOG2E_Q14) >> (d.shift + 6);
                row_a[j] = row_b[j] ? tl_exp2_neg(u) : 0;
                total += row_a[j];
            }
            const bool empty = total == 0;
            const int b = tl_bit_length((uint64_t)(empty ? 32768 : total)) - 1;
            const int64_t recip = RECIP_LUT[((empty ? 32768 : total) >> (b - 8)) & 255];
        sm_norm:
            for (int j = 0; j < d.n; j++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = TL_MAX_ROW
                const int16_t p = empty ? (int16_t)0 : tl_requantize(row_a[j] * recip, b + 1, TL_RNE, 0, 0);
                spm[c_row + j] = p;
                if (d.acc) {
                    const uint64_t e = d.d_addr + (uint64_t)i * d.d_stride + j;
                    const int64_t v = acc[e] + p;
                    if (!tl_acc_ok(v)) return tl_fail(TL_ERR_ACC_RANGE, d.pc);
                    acc[e] = v;
                }
            }
        } else {
            const uint64_t b_row = d.b_addr + (uint64_t)i * d.b_stride;
            int64_t dot = 0;
        sm_dot:
            for (int j = 0; j < d.n; j++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = TL_MAX_ROW
                row_a[j] = spm[a_row + j];
                row_b[j] = spm[b_row + j];
                dot += row_a[j] * row_b[j];
            }
        sm_grad:
            for (int j = 0; j < d.n; j++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = TL_MAX_ROW
                const int64_t v = row_a[j] * ((row_b[j] << 15) - dot);
                peak = tl_max64(peak, tl_units(tl_abs64(v), d.shift));
                spm[c_row + j] = tl_requantize(v, d.shift, TL_SR, d.seed,
                                               d.index_base + (uint32_t)i * d.index_stride + (uint32_t)j);
            }
        }
    }
    if (!fwd && d.stat) tl_stat_max(stat, d.slot, peak);
    return 0;
}

// ===================================================================================== VECTOR / SFU
// Row-wise over m rows of n elements, TL_VEC_LANES elements per cycle (the element loops are pipelined
// and unrolled by the lanes; the SPM and ACC banks serve consecutive elements in one access).
static uint32_t tl_vec_ln_fwd(const tl_dec_t& d, int16_t* spm, int64_t* acc, int64_t* stat) {
    const int n = d.n, fh = tl_ln_xhat_frac(n), shift = d.shift;
    const int64_t eps = tl_ln_eps_term(n, d.shift4);
    int64_t peak = 0;
ln_fwd_rows:
    for (int i = 0; i < d.m; i++) {
#pragma HLS LOOP_TRIPCOUNT max = TL_TRIP_ROWS
        const uint64_t a_row = d.a_addr + (uint64_t)i * d.a_stride;
        int64_t s1 = 0, s2 = 0;
    ln_fwd_sums:
        for (int j = 0; j < n; j++) {
#pragma HLS PIPELINE II = 1
#pragma HLS UNROLL factor = TL_VEC_LANES
#pragma HLS LOOP_TRIPCOUNT max = TL_MAX_DIM
            const int64_t v = spm[a_row + j];
            s1 += v;
            s2 += v * v;
        }
        const int64_t w = n * s2 - s1 * s1 + eps;
        const int bl = tl_bit_length((uint64_t)w);
        const int k = bl >= TL_RSQRT_BITS - 1 ? (bl - TL_RSQRT_BITS + 1) / 2 : 0;
        const int64_t rs = RSQRT_LUT[w >> (2 * k)];
        acc[d.f_addr + i] = rs | ((int64_t)k << 32);
        const int xs = TL_RSQRT_FRAC + k - fh;
    ln_fwd_out:
        for (int j = 0; j < n; j++) {
#pragma HLS PIPELINE II = 1
#pragma HLS UNROLL factor = TL_VEC_LANES
#pragma HLS LOOP_TRIPCOUNT max = TL_MAX_DIM
            const int64_t h = tl_requantize(((int64_t)n * spm[a_row + j] - s1) * rs, xs, TL_RNE, 0, 0);
            spm[d.e_addr + (uint64_t)i * d.e_stride + j] = (int16_t)h;
            const int64_t v = h * spm[d.b_addr + j] + tl_align(spm[d.d_addr + j], d.shift2);
            peak = tl_max64(peak, tl_units(tl_abs64(v), shift));
            spm[d.c_addr + (uint64_t)i * d.c_stride + j] = tl_requantize(v, shift, TL_RNE, 0, 0);
        }
    }
    if (d.stat) tl_stat_max(stat, d.slot, peak);
    return 0;
}

static uint32_t tl_vec_ln_bwd(const tl_dec_t& d, int16_t* spm, const int64_t* acc, int64_t* stat) {
    const int n = d.n, fh = tl_ln_xhat_frac(n);
    const uint32_t seed_g = tl_hash32(d.seed, 0), seed_t = tl_hash32(d.seed, 1), seed_dx = tl_hash32(d.seed, 2);
    int64_t g[TL_MAX_DIM];
    int64_t peak_g = 0, peak_t = 0, peak_dx = 0;
ln_bwd_rows:
    for (int i = 0; i < d.m; i++) {
#pragma HLS LOOP_TRIPCOUNT max = TL_TRIP_ROWS
        const uint64_t a_row = d.a_addr + (uint64_t)i * d.a_stride, e_row = d.e_addr + (uint64_t)i * d.e_stride;
        const uint32_t idx_row = d.index_base + (uint32_t)i * d.index_stride;
        const int64_t st = acc[d.f_addr + i];
        const int64_t rs = st & 0xFFFFFFFF;
        const int k = (int)(st >> 32);
        const int shift = d.shift3 + k, res_shift = d.shift4 - k;
        if (!tl_round_ok(shift) || (d.bias && !tl_align_ok(res_shift))) return tl_fail(TL_ERR_BAD_SHIFT, d.pc);
        int64_t a_sum = 0, gx = 0;
    ln_bwd_g:
        for (int j = 0; j < n; j++) {
#pragma HLS PIPELINE II = 1
#pragma HLS UNROLL factor = TL_VEC_LANES
#pragma HLS LOOP_TRIPCOUNT max = TL_MAX_DIM
            const int64_t g_acc = (int64_t)spm[a_row + j] * spm[d.b_addr + j];
            peak_g = tl_max64(peak_g, tl_units(tl_abs64(g_acc), d.shift));
            g[j] = tl_requantize(g_acc, d.shift, TL_SR, seed_g, idx_row + (uint32_t)j);
            a_sum += g[j];
            gx += g[j] * spm[e_row + j];
        }
        const int64_t b_sum = tl_round_shift(gx, fh, TL_RNE, 0, 0);
    ln_bwd_dx:
        for (int j = 0; j < n; j++) {
#pragma HLS PIPELINE II = 1
#pragma HLS UNROLL factor = TL_VEC_LANES
#pragma HLS LOOP_TRIPCOUNT max = TL_MAX_DIM
            const int64_t t = ((n * g[j] - a_sum) * ((int64_t)1 << fh)) - (int64_t)spm[e_row + j] * b_sum;
            peak_t = tl_max64(peak_t, tl_units(tl_abs64(t), d.shift2));
            const int64_t t_hat = tl_requantize(t, d.shift2, TL_SR, seed_t, idx_row + (uint32_t)j);
            int64_t v = t_hat * rs;
            if (d.bias) v += tl_align(spm[d.d_addr + (uint64_t)i * d.d_stride + j], res_shift);
            peak_dx = tl_max64(peak_dx, tl_units(tl_abs64(v), shift));
            spm[d.c_addr + (uint64_t)i * d.c_stride + j] = tl_requantize(v, shift, TL_SR, seed_dx, idx_row + (uint32_t)j);
        }
    }
    if (d.stat) {
        tl_stat_max(stat, d.slot, peak_g);
        tl_stat_max(stat, d.slot + 1, peak_t);
        tl_stat_max(stat, d.slot + 2, peak_dx);
    }
    return 0;
}

static uint32_t tl_vec(const tl_dec_t& d, int16_t* spm, int64_t* acc, uint16_t* idx, int64_t* stat) {
    const int sub = d.sub;
    if (sub > TL_VEC_MASK) return tl_fail(TL_ERR_RESERVED_BITS, d.pc);
    if (d.m == 0 || d.n == 0) return tl_fail(TL_ERR_BAD_DIMS, d.pc);
    const bool ln = sub == TL_VEC_LN_FWD || sub == TL_VEC_LN_BWD;
    if ((ln && d.n > TL_MAX_DIM) || (sub == TL_VEC_MASK && d.n > TL_MAX_ROW)) return tl_fail(TL_ERR_BAD_DIMS, d.pc);
    if (sub == TL_VEC_MASK && (d.imm < 0 || (d.m > d.imm && (d.k == 0 || d.k > d.n))))
        return tl_fail(TL_ERR_BAD_DIMS, d.pc);
    const bool shift_ok = sub == TL_VEC_LN_FWD
                              ? tl_round_ok(d.shift) && tl_align_ok(d.shift2) && tl_round_ok(d.shift4)
                          : sub == TL_VEC_LN_BWD
                              ? tl_round_ok(d.shift) && tl_round_ok(d.shift2) && tl_round_ok(d.shift3) &&
                                    (!d.bias || tl_align_ok(d.shift4))
                          : (sub == TL_VEC_GELU_FWD || sub == TL_VEC_GELU_BWD) ? tl_round_ok(d.shift)
                                                                               : true;
    if (!shift_ok) return tl_fail(TL_ERR_BAD_SHIFT, d.pc);
    // Operand regions per sub-operation (docs/engine.md).
    const uint64_t S = TL_SPM_ELEMS;
    const bool uses_b_mat = sub == TL_VEC_GELU_BWD || sub == TL_VEC_COLDOT;
    const bool writes_c = sub != TL_VEC_COLSUM && sub != TL_VEC_COLDOT;
    bool ok = (sub == TL_VEC_MASK || tl_span_ok(d.a_addr, d.m, d.a_stride, d.n, S)) &&
              (!writes_c || tl_span_ok(d.c_addr, d.m, d.c_stride, d.n, S)) &&
              (!uses_b_mat || tl_span_ok(d.b_addr, d.m, d.b_stride, d.n, S)) &&
              (!ln || (tl_span_ok(d.b_addr, 1, 0, d.n, S) && tl_span_ok(d.e_addr, d.m, d.e_stride, d.n, S) &&
                       tl_span_ok(d.f_addr, 1, 0, d.m, TL_ACC_ELEMS))) &&
              (sub != TL_VEC_LN_FWD || tl_span_ok(d.d_addr, 1, 0, d.n, S)) &&
              (sub != TL_VEC_LN_BWD || !d.bias || tl_span_ok(d.d_addr, d.m, d.d_stride, d.n, S)) &&
              (writes_c || tl_span_ok(d.f_addr, 1, 0, d.n, TL_ACC_ELEMS)) &&
              (!d.stat || d.slot + (sub == TL_VEC_LN_BWD ? 2 : 0) < TL_STAT_SLOTS);
    if (ok && sub == TL_VEC_MASK && d.m > (int)d.imm) {
        ok = tl_span_ok(d.b_addr, d.m - d.imm, d.b_stride, d.k, TL_IDX_ELEMS);
    mask_check:
        for (int i = d.imm; ok && i < d.m; i++) {
#pragma HLS LOOP_TRIPCOUNT max = TL_TRIP_ROWS
            for (int t = 0; t < d.k; t++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = TL_MAX_ROW
                if (idx[d.b_addr + (uint64_t)(i - d.imm) * d.b_stride + t] >= d.n) ok = false;
            }
        }
    }
    if (!ok) return tl_fail(TL_ERR_SPM_RANGE, d.pc);

    if (sub == TL_VEC_LN_FWD) return tl_vec_ln_fwd(d, spm, acc, stat);
    if (sub == TL_VEC_LN_BWD) return tl_vec_ln_bwd(d, spm, acc, stat);
    int64_t peak = 0;
vec_rows:
    for (int i = 0; i < d.m; i++) {
#pragma HLS LOOP_TRIPCOUNT max = TL_TRIP_ROWS
        const uint64_t a_row = d.a_addr + (uint64_t)i * d.a_stride, b_row = d.b_addr + (uint64_t)i * d.b_stride;
        const uint64_t c_row = d.c_addr + (uint64_t)i * d.c_stride;
        const uint32_t idx_row = d.index_base + (uint32_t)i * d.index_stride;
    vec_cols:
        for (int j = 0; j < d.n; j++) {
#pragma HLS PIPELINE II = 1
#pragma HLS UNROLL factor = TL_VEC_LANES
#pragma HLS LOOP_TRIPCOUNT max = TL_TRIP_COLS
            if (sub == TL_VEC_GELU_FWD) {
                const int64_t x = spm[a_row + j];
                const int64_t v = x * (int64_t)PHI_LUT[tl_gelu_index(x, d.imm)];
                peak = tl_max64(peak, tl_units(tl_abs64(v), d.shift));
                spm[c_row + j] = tl_requantize(v, d.shift, TL_RNE, 0, 0);
            } else if (sub == TL_VEC_GELU_BWD) {
                const int64_t v = (int64_t)spm[a_row + j] * (int64_t)DGELU_LUT[tl_gelu_index(spm[b_row + j], d.imm)];
                peak = tl_max64(peak, tl_units(tl_abs64(v), d.shift));
                spm[c_row + j] = tl_requantize(v, d.shift, TL_SR, d.seed, idx_row + (uint32_t)j);
            } else if (sub == TL_VEC_COLSUM || sub == TL_VEC_COLDOT) {
                const int64_t x = spm[a_row + j];
                const int64_t v = acc[d.f_addr + j] + (sub == TL_VEC_COLSUM ? x : x * spm[b_row + j]);
                if (!tl_acc_ok(v)) return tl_fail(TL_ERR_ACC_RANGE, d.pc);
                acc[d.f_addr + j] = v;
            } else {  // MASK: the dense rows, or a zero row that the list below fills
                spm[c_row + j] = i < d.imm ? 1 : 0;
            }
        }
        if (sub == TL_VEC_MASK && i >= d.imm) {
        mask_ones:
            for (int t = 0; t < d.k; t++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = TL_MAX_ROW
                spm[c_row + idx[d.b_addr + (uint64_t)(i - d.imm) * d.b_stride + t]] = 1;
            }
        }
    }
    if (d.stat && (sub == TL_VEC_GELU_FWD || sub == TL_VEC_GELU_BWD)) tl_stat_max(stat, d.slot, peak);
    return 0;
}

// =========================================================================================== TOP-K
// Rank selection (1.4): element j wins iff fewer than k elements beat it (larger score, then lower
// index); scanning j in ascending order emits the winners in ascending order. The rank is an n-wide
// comparator tree (unrolled over the constant TL_MAX_ROW with a guard). Scores are the ACC values
// saturated to int32 (docs/engine.md TOPK).
static uint32_t tl_topk(const tl_dec_t& d, const int64_t* acc, uint16_t* idx) {
    if (d.sub) return tl_fail(TL_ERR_RESERVED_BITS, d.pc);
    if (d.m == 0 || d.n == 0 || d.n > TL_MAX_ROW || d.k == 0 || d.k > d.n || d.imm < 0 || d.imm > 65535)
        return tl_fail(TL_ERR_BAD_DIMS, d.pc);
    if (!tl_span_ok(d.a_addr, d.m, d.a_stride, d.n, TL_ACC_ELEMS) ||
        !tl_span_ok(d.c_addr, d.m, d.c_stride, (uint64_t)d.imm + d.k, TL_IDX_ELEMS))
        return tl_fail(TL_ERR_SPM_RANGE, d.pc);
    int32_t s[TL_MAX_ROW];
#pragma HLS ARRAY_PARTITION variable = s complete
topk_rows:
    for (int i = 0; i < d.m; i++) {
#pragma HLS LOOP_TRIPCOUNT max = TL_TRIP_ROWS
        const uint64_t out = d.c_addr + (uint64_t)i * d.c_stride;
    topk_load:
        for (int j = 0; j < d.n; j++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = TL_MAX_ROW
            const int64_t a = acc[d.a_addr + (uint64_t)i * d.a_stride + j];
            s[j] = a > INT32_MAX ? INT32_MAX : a < INT32_MIN ? INT32_MIN : (int32_t)a;
        }
    topk_prefix:
        for (int t = 0; t < d.imm; t++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = 1
            idx[out + t] = (uint16_t)t;
        }
        int kept = 0;
#ifdef TRILEVEL_FAST_CSIM
        // Fast C-sim: sort the row's indices once (larger score first, lower index on ties) and keep the
        // first k: the same winners as the rank test below, in O(n log n).
        int order[TL_MAX_ROW];
        bool win[TL_MAX_ROW];
        for (int j = 0; j < d.n; j++) order[j] = j, win[j] = false;
        std::sort(order, order + d.n, [&s](int x, int y) { return s[x] > s[y] || (s[x] == s[y] && x < y); });
        for (int t = 0; t < d.k; t++) win[order[t]] = true;
        for (int j = 0; j < d.n; j++)
            if (win[j]) idx[out + d.imm + kept++] = (uint16_t)(j + d.imm);
        continue;
#endif
    topk_select:
        for (int j = 0; j < d.n; j++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = TL_MAX_ROW
            const int32_t sj = s[j];
            int rank = 0;
            for (int l = 0; l < TL_MAX_ROW; l++) {
#pragma HLS UNROLL
                if (l < d.n) rank += (s[l] > sj || (s[l] == sj && l < j)) ? 1 : 0;
            }
            if (rank < d.k) idx[out + d.imm + kept++] = (uint16_t)(j + d.imm);
        }
    }
    return 0;
}

// ======================================================================================= dispatch
uint32_t tl_exec_compute(const tl_dec_t& d, int16_t* spm, int64_t* acc, uint16_t* idx, int64_t* stat) {
    switch (d.op) {
        case TL_OP_FINISH:
            return d.sub ? tl_fail(TL_ERR_RESERVED_BITS, d.pc) : 0;
        case TL_OP_GEMM:
            return tl_gemm(d, spm, acc, stat);
        case TL_OP_SOFTMAX:
            return tl_softmax(d, spm, acc, stat);
        case TL_OP_VEC:
            return tl_vec(d, spm, acc, idx, stat);
        case TL_OP_TOPK:
            return tl_topk(d, acc, idx);
        default:
            return tl_fail(TL_ERR_BAD_OPCODE, d.pc);
    }
}
