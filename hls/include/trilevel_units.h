// The three building blocks every trilevel kernel calls. Their ports are hls::streams plus scalar
// configuration so that the RTL units of hls/rtl/ replace them as Vitis RTL blackboxes
// (hls/rtl/<unit>.json binds to these exact signatures; keep them stable). The C++ bodies in
// hls/src/trilevel_units.cpp are the C-sim models, bit-exact with docs/numerics.md section 1.
//
// Stream protocol: every call consumes exactly the values listed per input stream, in the order
// given, and writes exactly the values listed per output stream. Scalars hold for the whole call.
#ifndef TRILEVEL_UNITS_H
#define TRILEVEL_UNITS_H

#include "trilevel_stream.h"
#include "trilevel_types.h"

// Static maxima of one gemm_tile call (the systolic MAC array is TL_TILE_M x TL_TILE_N PEs).
#ifndef TL_TILE_M
#define TL_TILE_M 32
#endif
#ifndef TL_TILE_N
#define TL_TILE_N 32
#endif
#define TL_K_MAX 1536  // longest reduction (DeiT-S MLP hidden)
#define TL_ROW_MAX 256  // longest softmax row / top-k frame (N <= 197 tokens)

// Top-k (1.4): reads n scores, writes the k selected indices (0..n-1) in ascending order.
// Element i is selected iff fewer than k elements beat it (larger score, then lower index).
// 1 <= k <= n <= TL_ROW_MAX.
void topk_unit(hls::stream<score_t>& scores_in, hls::stream<idx_t>& idx_out, dim_t n, dim_t k);

// GEMM tile with requantize epilogue (1.2):  C[i][j] = requantize(sum_p A[i][p] * B[p][j] + E[i][j]).
// Inputs, in order:  a_in: A row-major (m * kd values, row i contiguous);
//                    b_in: B column by column (n * kd values, column j contiguous: for Y = X W^T this
//                          is W in its stored [Dout, Din] layout);
//                    addend_in: E row-major (m * n values at the accumulator frac: bias and/or
//                          residual, already aligned; 0 for none).
// Outputs:           c_out: m * n int16, row-major;  peak_out: 1 value, max |accumulator + E|
//                    before rounding (the host's max-abs statistic is peak >> shift).
// Rounding: mode TL_RNE or TL_SR; SR element (i, j) uses hash32(seed, index_base + i*index_stride + j).
// 1 <= m <= TL_TILE_M, 1 <= n <= TL_TILE_N, 1 <= kd <= TL_K_MAX.
void gemm_tile(hls::stream<data_t>& a_in, hls::stream<data_t>& b_in, hls::stream<acc_t>& addend_in,
               hls::stream<data_t>& c_out, hls::stream<acc_t>& peak_out, dim_t m, dim_t n, dim_t kd,
               shift_t shift, flag_t mode, u32_t seed, u32_t index_base, u32_t index_stride);

// Softmax row (1.5 forward, 1.6 backward), 1 <= n <= TL_ROW_MAX.
// backward = 0: a_in = n scores s (frac frac_in, 0..15); out = n probabilities P (Q0.15);
//               b_in and key_in are not read; frac_out, seed, index_base are ignored.
// backward = 1: a_in = n probabilities P, b_in = n upstream grads dP (frac frac_in), key_in = n key
//               positions; out = n dS (frac frac_out, SR with hash32(seed, index_base + key_j), so a
//               row of gathered connections rounds exactly like the same entries of a dense row).
// peak_out: 1 value, max |accumulator| before rounding: forward e_j * RECIP (row shift b + 1),
//           backward P_j * ((dP_j << 15) - dot) (shift frac_in + 30 - frac_out).
void softmax_unit(hls::stream<data_t>& a_in, hls::stream<data_t>& b_in, hls::stream<idx_t>& key_in,
                  hls::stream<data_t>& out, hls::stream<acc_t>& peak_out, dim_t n, flag_t backward,
                  shift_t frac_in, shift_t frac_out, u32_t seed, u32_t index_base);

#endif
