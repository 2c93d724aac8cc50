// C-sim models of the three building blocks (see trilevel_units.h); synthesizable as written, and
// replaced by the RTL units of hls/rtl/ when those are added as blackboxes.
#include "trilevel_units.h"

#include "trilevel_fastsim.h"
#include "trilevel_fixed.h"
#include "trilevel_luts.h"

void topk_unit(hls::stream<score_t>& scores_in, hls::stream<idx_t>& idx_out, dim_t n, dim_t k) {
    score_t s[TL_ROW_MAX];
#pragma HLS ARRAY_PARTITION variable = s complete
    const int len = n, keep = k;
load:
    for (int i = 0; i < len; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = 197
        s[i] = scores_in.read();
    }
    // Rank of element i = number of elements that beat it; selected iff rank < k. Scanning i in
    // ascending order emits the selection in ascending index order.
select:
    for (int i = 0; i < len; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = 197
        const score_t si = s[i];
        int rank = 0;
    rank:
        for (int j = 0; j < TL_ROW_MAX; j++) {
#pragma HLS UNROLL
            if (j < len) rank += (s[j] > si || (s[j] == si && j < i)) ? 1 : 0;
        }
        if (rank < keep) idx_out.write((idx_t)i);
    }
}

void gemm_tile(hls::stream<data_t>& a_in, hls::stream<data_t>& b_in, hls::stream<acc_t>& addend_in,
               hls::stream<data_t>& c_out, hls::stream<acc_t>& peak_out, dim_t m, dim_t n, dim_t kd,
               shift_t shift, flag_t mode, u32_t seed, u32_t index_base, u32_t index_stride) {
    const int rows = m, cols = n, depth = kd;
    acc_t acc[TL_TILE_M][TL_TILE_N];
#ifdef TRILEVEL_FAST_CSIM
    // C-sim fast path: operands kept in stream order (A rows, B columns, contiguous in p) and every
    // output an exact dot product (tl_dot16); the same sums as the PE-array loop below.
    static data_t a_rows[TL_TILE_M][TL_K_MAX];
    static data_t b_cols[TL_TILE_N][TL_K_MAX];
    for (int i = 0; i < rows; i++)
        for (int p = 0; p < depth; p++) a_rows[i][p] = a_in.read();
    for (int j = 0; j < cols; j++)
        for (int p = 0; p < depth; p++) b_cols[j][p] = b_in.read();
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) acc[i][j] = addend_in.read() + tl_dot16(a_rows[i], b_cols[j], depth);
#else
    // Operands are stored reduction-major so that one pipelined step p feeds the whole PE array.
    static data_t a_buf[TL_K_MAX][TL_TILE_M];
    static data_t b_buf[TL_K_MAX][TL_TILE_N];
#pragma HLS ARRAY_PARTITION variable = a_buf dim = 2 complete
#pragma HLS ARRAY_PARTITION variable = b_buf dim = 2 complete
#pragma HLS ARRAY_PARTITION variable = acc complete dim = 0
load_a:
    for (int i = 0; i < rows; i++)
        for (int p = 0; p < depth; p++) {
#pragma HLS PIPELINE II = 1
            a_buf[p][i] = a_in.read();
        }
load_b:
    for (int j = 0; j < cols; j++)
        for (int p = 0; p < depth; p++) {
#pragma HLS PIPELINE II = 1
            b_buf[p][j] = b_in.read();
        }
load_addend:
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
#pragma HLS PIPELINE II = 1
            acc[i][j] = addend_in.read();
        }
mac:
    for (int p = 0; p < depth; p++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = 1536
        for (int i = 0; i < rows; i++) {
#pragma HLS UNROLL
            const prod_t a = a_buf[p][i];
            for (int j = 0; j < cols; j++) {
#pragma HLS UNROLL
                acc[i][j] += (prod_t)(a * b_buf[p][j]);
            }
        }
    }
#endif
    const int sh = shift, md = mode;
    const uint32_t sd = seed, base = index_base, stride = index_stride;
    int64_t peak = 0;
epilogue:
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
#pragma HLS PIPELINE II = 1
            const int64_t a = (int64_t)acc[i][j];
            if (tl_abs64(a) > peak) peak = tl_abs64(a);
            c_out.write((data_t)tl_requantize(a, sh, md, sd, base + (uint32_t)i * stride + j));
        }
    peak_out.write((acc_t)peak);
}

void softmax_unit(hls::stream<data_t>& a_in, hls::stream<data_t>& b_in, hls::stream<idx_t>& key_in,
                  hls::stream<data_t>& out, hls::stream<acc_t>& peak_out, dim_t n, flag_t backward,
                  shift_t frac_in, shift_t frac_out, u32_t seed, u32_t index_base) {
    int32_t p_row[TL_ROW_MAX];  // forward: e_j; backward: P_j
    int32_t g_row[TL_ROW_MAX];  // backward: dP_j
    uint32_t key[TL_ROW_MAX];   // backward: SR index offsets
    const int len = n;
    int64_t peak = 0;
    if (!backward) {
        const int fs = frac_in;
        int32_t s[TL_ROW_MAX];
        int32_t mx = TL_INT16_MIN;
    fwd_load:
        for (int j = 0; j < len; j++) {
#pragma HLS PIPELINE II = 1
            s[j] = (int32_t)a_in.read();
            if (s[j] > mx) mx = s[j];
        }
        int64_t sum = 0;
    fwd_exp:
        for (int j = 0; j < len; j++) {
#pragma HLS PIPELINE II = 1
            const int64_t u = ((int64_t)(mx - s[j]) * 23637) >> (fs + 6);  // Q.8 of -d * log2(e)
            const int64_t ni = u >> 8;
            const int32_t e = ni >= 16 ? 0 : (int32_t)(EXP2_LUT[u & 255] >> ni);
            p_row[j] = e;
            sum += e;
        }
        int b = 0;
        for (int t = 0; t < 40; t++)
            if ((sum >> t) != 0) b = t;  // bit_length(sum) - 1
        const int64_t recip = RECIP_LUT[(sum >> (b - 8)) & 255];
    fwd_norm:
        for (int j = 0; j < len; j++) {
#pragma HLS PIPELINE II = 1
            const int64_t acc = (int64_t)p_row[j] * recip;
            if (acc > peak) peak = acc;
            out.write((data_t)tl_requantize(acc, b + 1, TL_RNE, 0, 0));
        }
    } else {
        const int shift = (int)frac_in + 30 - (int)frac_out;
        const uint32_t sd = seed, base = index_base;
        int64_t dot = 0;
    bwd_load:
        for (int j = 0; j < len; j++) {
#pragma HLS PIPELINE II = 1
            p_row[j] = (int32_t)a_in.read();
            g_row[j] = (int32_t)b_in.read();
            key[j] = (uint32_t)key_in.read();
            dot += (int64_t)p_row[j] * g_row[j];
        }
    bwd_out:
        for (int j = 0; j < len; j++) {
#pragma HLS PIPELINE II = 1
            const int64_t acc = (int64_t)p_row[j] * (((int64_t)g_row[j] << 15) - dot);
            if (tl_abs64(acc) > peak) peak = tl_abs64(acc);
            out.write((data_t)tl_requantize(acc, shift, TL_SR, sd, base + key[j]));
        }
    }
    peak_out.write((acc_t)peak);
}
