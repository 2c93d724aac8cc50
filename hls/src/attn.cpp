// attn_fwd / attn_bwd: the attention half of a transformer block, out = x + proj(attention(LN1(x))), over
// a batch of B images with T tokens (trilevel.intref.blocks.attn_block_fwd / attn_block_bwd).
//
// Sparse attention: the first `dense_rows` query rows ([CLS]) attend to every key; every other query row
// q attends only to its C keys conn[b][q - dense_rows][:] (from the TA-selector). Those keys are
// GATHERED by index into the score, softmax, context and gradient computations, so the work scales
// with C, not T; no masked dense matrix exists anywhere. Probabilities are stored compactly:
// probs[b][h][q][j] is the probability of query q for its j-th key (j < T for dense rows, j < C else).
#include "trilevel_layers.h"

// 1/sqrt(head_dim) as a pure frac change: head_dim must be a power of 4 (true for all DeiT configs);
// returns log2(sqrt(head_dim)), or -1.
static int tl_attn_extra_frac(int head_dim) {
    for (int e = 0; e < 8; e++)
        if ((1 << (2 * e)) == head_dim) return e;
    return -1;
}

// The keys of query row q: 0 = all T keys (identity), else conn's row.
static inline const int* tl_keys(const int* conn, int b, int q, int T, int C, int dense_rows, int has_conn) {
    return (has_conn && q >= dense_rows) ? conn + ((int64_t)b * (T - dense_rows) + q - dense_rows) * C : 0;
}

static int tl_attn_check(int B, int T, int D, int H, int C, int dense_rows, int has_conn) {
    if (B < 1 || T < 1 || T > TL_T_MAX || D < 1 || D > TL_D_MAX || H < 1 || H > TL_HEADS_MAX || D % H) return 0;
    if (tl_attn_extra_frac(D / H) < 0) return 0;
    if (has_conn && (C < 1 || C > T || dense_rows < 0 || dense_rows >= T)) return 0;
    return 1;
}

// Parameter order (pfrac too): norm1.weight, norm1.bias, attn.qkv.weight, attn.qkv.bias, attn.proj.weight,
// attn.proj.bias. fracs / stats order: ln, qkv, s, ctx, out (ATTN_FWD_FRACS). Outputs besides `out`: the
// saved state for attn_bwd (z, LN rows, qkv, ctx, compact probs) and attn_sum[b][q][key], the head-sum of
// the probabilities (frac 15, 0 on dropped connections) that topk_prune scores.
int attn_fwd(const data_t* x, const data_t* ln_w, const data_t* ln_b, const data_t* qkv_w, const data_t* qkv_b,
             const data_t* proj_w, const data_t* proj_b, const int* conn, data_t* out, data_t* z, data_t* xhat,
             int32_t* rsqrt, int32_t* kk, data_t* qkv, data_t* ctx, data_t* probs, score_t* attn_sum,
             grad_t stats[5], dim_t batch, dim_t tokens, dim_t dim, dim_t heads, dim_t keep, dim_t dense_rows,
             flag_t has_conn, shift_t frac_x, const shift_t pfrac[6], const shift_t fracs[5]) {
#pragma HLS INTERFACE m_axi port = x offset = slave bundle = gmem0 depth = 75648
#pragma HLS INTERFACE m_axi port = ln_w offset = slave bundle = gmem1 depth = 384
#pragma HLS INTERFACE m_axi port = ln_b offset = slave bundle = gmem1 depth = 384
#pragma HLS INTERFACE m_axi port = qkv_w offset = slave bundle = gmem1 depth = 442368
#pragma HLS INTERFACE m_axi port = qkv_b offset = slave bundle = gmem1 depth = 1152
#pragma HLS INTERFACE m_axi port = proj_w offset = slave bundle = gmem1 depth = 147456
#pragma HLS INTERFACE m_axi port = proj_b offset = slave bundle = gmem1 depth = 384
#pragma HLS INTERFACE m_axi port = conn offset = slave bundle = gmem0 depth = 38612
#pragma HLS INTERFACE m_axi port = out offset = slave bundle = gmem2 depth = 75648
#pragma HLS INTERFACE m_axi port = z offset = slave bundle = gmem2 depth = 75648
#pragma HLS INTERFACE m_axi port = xhat offset = slave bundle = gmem2 depth = 75648
#pragma HLS INTERFACE m_axi port = rsqrt offset = slave bundle = gmem2 depth = 197
#pragma HLS INTERFACE m_axi port = kk offset = slave bundle = gmem2 depth = 197
#pragma HLS INTERFACE m_axi port = qkv offset = slave bundle = gmem3 depth = 226944
#pragma HLS INTERFACE m_axi port = ctx offset = slave bundle = gmem3 depth = 75648
#pragma HLS INTERFACE m_axi port = probs offset = slave bundle = gmem3 depth = 232854
#pragma HLS INTERFACE m_axi port = attn_sum offset = slave bundle = gmem2 depth = 38809
#pragma HLS INTERFACE s_axilite port = stats
#pragma HLS INTERFACE s_axilite port = batch
#pragma HLS INTERFACE s_axilite port = tokens
#pragma HLS INTERFACE s_axilite port = dim
#pragma HLS INTERFACE s_axilite port = heads
#pragma HLS INTERFACE s_axilite port = keep
#pragma HLS INTERFACE s_axilite port = dense_rows
#pragma HLS INTERFACE s_axilite port = has_conn
#pragma HLS INTERFACE s_axilite port = frac_x
#pragma HLS INTERFACE s_axilite port = pfrac
#pragma HLS INTERFACE s_axilite port = fracs
#pragma HLS INTERFACE s_axilite port = return
    const int B = batch, T = tokens, D = dim, H = heads, C = keep, R = dense_rows, sparse = has_conn;
    if (!tl_attn_check(B, T, D, H, C, R, sparse)) return TL_BAD_DIMS;
    const int HD = D / H, D3 = 3 * D, rows = B * T;
    const int f_ln = fracs[0], f_qkv = fracs[1], f_s = fracs[2], f_ctx = fracs[3], f_out = fracs[4];
    const int s_shift = 2 * f_qkv + tl_attn_extra_frac(HD) - f_s, ctx_shift = 15 + f_qkv - f_ctx;
    grad_t s[1];
    stats[0] = tl_layernorm_fwd(x, rows, D, frac_x, ln_w, pfrac[0], ln_b, pfrac[1], f_ln, z, xhat, rsqrt, kk);
    linear_fwd(z, qkv_w, qkv_b, 0, qkv, s, B, T, D, D3, f_ln, pfrac[2], pfrac[3], 0, f_qkv, 1, 0);
    stats[1] = s[0];

    static data_t score[TL_T_MAX][TL_T_MAX];
    hls::stream<data_t> sm_in("sm_in"), sm_unused("sm_unused"), sm_out("sm_out");
    hls::stream<idx_t> sm_keys("sm_keys");
    hls::stream<acc_t> sm_peak("sm_peak");
    for (int64_t i = 0; i < (int64_t)B * T * T; i++) attn_sum[i] = 0;
    int64_t peak_s = 0, peak_ctx = 0;
images:
    for (int b = 0; b < B; b++) {
    heads:
        for (int h = 0; h < H; h++) {
            const data_t* qh = qkv + (int64_t)b * T * D3 + h * HD;  // row stride D3
            const data_t* kh = qh + D;
            const data_t* vh = qh + 2 * D;
            data_t* ph = probs + ((int64_t)b * H + h) * T * T;
            // Row groups sharing one key list: the dense rows, then each sparse row on its own.
            const int n_groups = sparse ? R + (T - R) : 1;
        row_groups:
            for (int g = 0; g < n_groups; g++) {
                const int q0 = sparse ? g : 0, nq = sparse ? 1 : T;
                const int* keys = tl_keys(conn, b, q0, T, C, R, sparse);
                const int nk = keys ? C : T;
                // scores[i][j] = RNE(q_i . k_key(j)), keys gathered by index
                int64_t p = tl_gemm(qh + (int64_t)q0 * D3, D3, 1, kh, 1, D3, 0, keys, 0, TL_NO_RESIDUAL, 0,
                                    &score[0][0], TL_T_MAX, nq, nk, HD, s_shift, TL_RNE, 0, 0, 0);
                peak_s = tl_max64(peak_s, p);
                for (int i = 0; i < nq; i++) {
                    for (int j = 0; j < nk; j++) sm_in.write(score[i][j]);
                    softmax_unit(sm_in, sm_unused, sm_keys, sm_out, sm_peak, nk, 0, f_s, 0, 0, 0);
                    sm_peak.read();
                    data_t* prow = ph + (int64_t)(q0 + i) * T;
                    score_t* srow = attn_sum + ((int64_t)b * T + q0 + i) * T;
                    for (int j = 0; j < nk; j++) {
#pragma HLS PIPELINE II = 1
                        prow[j] = sm_out.read();
                        srow[keys ? keys[j] : j] += (score_t)prow[j];
                    }
                }
                // ctx_i = RNE(sum_j P[i][j] v_key(j)), values gathered by index
                p = tl_gemm(ph + (int64_t)q0 * T, T, 1, vh, D3, 1, keys, 0, 0, TL_NO_RESIDUAL, 0,
                            ctx + ((int64_t)b * T + q0) * D + h * HD, D, nq, HD, nk, ctx_shift, TL_RNE, 0, 0, 0);
                peak_ctx = tl_max64(peak_ctx, p);
            }
        }
    }
    stats[2] = tl_peak_out(peak_s, s_shift);
    stats[3] = tl_peak_out(peak_ctx, ctx_shift);
    linear_fwd(ctx, proj_w, proj_b, x, out, s, B, T, D, D, f_ctx, pfrac[4], pfrac[5], frac_x, f_out, 1, 1);
    stats[4] = s[0];
    return TL_OK;
}

// Backward of attn_fwd. fracs / stats order: dctx, dp, ds, dqkv, dln, ln_g, ln_t, dx (ATTN_BWD_FRACS);
// SR point i uses hash32(seed, i); dP and dS use the index of the dense [B, H, T, T] tensor, dqkv that of
// [B, T, 3D], so gathered rows round exactly like a dense computation would. Gradients are ADDED to the
// caller's accumulators (parameter order). Scratch: dctx, dz [B*T*D], dqkv [B*T*3D].
int attn_bwd(const data_t* dout, const data_t* z, const data_t* xhat, const int32_t* rsqrt, const int32_t* kk,
             const data_t* qkv, const data_t* ctx, const data_t* probs, const int* conn, const data_t* ln_w,
             const data_t* qkv_w, const data_t* proj_w, grad_t* g_ln_w, grad_t* g_ln_b, grad_t* g_qkv_w,
             grad_t* g_qkv_b, grad_t* g_proj_w, grad_t* g_proj_b, data_t* dctx, data_t* dqkv, data_t* dz, data_t* dx,
             grad_t stats[8], dim_t batch, dim_t tokens, dim_t dim, dim_t heads, dim_t keep, dim_t dense_rows,
             flag_t has_conn, shift_t frac_dout, shift_t frac_x, shift_t frac_qkv, const shift_t pfrac[6],
             const shift_t fracs[8], u32_t seed) {
#pragma HLS INTERFACE m_axi port = dout offset = slave bundle = gmem0 depth = 75648
#pragma HLS INTERFACE m_axi port = z offset = slave bundle = gmem0 depth = 75648
#pragma HLS INTERFACE m_axi port = xhat offset = slave bundle = gmem0 depth = 75648
#pragma HLS INTERFACE m_axi port = rsqrt offset = slave bundle = gmem0 depth = 197
#pragma HLS INTERFACE m_axi port = kk offset = slave bundle = gmem0 depth = 197
#pragma HLS INTERFACE m_axi port = qkv offset = slave bundle = gmem0 depth = 226944
#pragma HLS INTERFACE m_axi port = ctx offset = slave bundle = gmem0 depth = 75648
#pragma HLS INTERFACE m_axi port = probs offset = slave bundle = gmem0 depth = 232854
#pragma HLS INTERFACE m_axi port = conn offset = slave bundle = gmem0 depth = 38612
#pragma HLS INTERFACE m_axi port = ln_w offset = slave bundle = gmem1 depth = 384
#pragma HLS INTERFACE m_axi port = qkv_w offset = slave bundle = gmem1 depth = 442368
#pragma HLS INTERFACE m_axi port = proj_w offset = slave bundle = gmem1 depth = 147456
#pragma HLS INTERFACE m_axi port = g_ln_w offset = slave bundle = gmem3 depth = 384
#pragma HLS INTERFACE m_axi port = g_ln_b offset = slave bundle = gmem3 depth = 384
#pragma HLS INTERFACE m_axi port = g_qkv_w offset = slave bundle = gmem3 depth = 442368
#pragma HLS INTERFACE m_axi port = g_qkv_b offset = slave bundle = gmem3 depth = 1152
#pragma HLS INTERFACE m_axi port = g_proj_w offset = slave bundle = gmem3 depth = 147456
#pragma HLS INTERFACE m_axi port = g_proj_b offset = slave bundle = gmem3 depth = 384
#pragma HLS INTERFACE m_axi port = dctx offset = slave bundle = gmem2 depth = 75648
#pragma HLS INTERFACE m_axi port = dqkv offset = slave bundle = gmem2 depth = 226944
#pragma HLS INTERFACE m_axi port = dz offset = slave bundle = gmem2 depth = 75648
#pragma HLS INTERFACE m_axi port = dx offset = slave bundle = gmem2 depth = 75648
#pragma HLS INTERFACE s_axilite port = stats
#pragma HLS INTERFACE s_axilite port = batch
#pragma HLS INTERFACE s_axilite port = tokens
#pragma HLS INTERFACE s_axilite port = dim
#pragma HLS INTERFACE s_axilite port = heads
#pragma HLS INTERFACE s_axilite port = keep
#pragma HLS INTERFACE s_axilite port = dense_rows
#pragma HLS INTERFACE s_axilite port = has_conn
#pragma HLS INTERFACE s_axilite port = frac_dout
#pragma HLS INTERFACE s_axilite port = frac_x
#pragma HLS INTERFACE s_axilite port = frac_qkv
#pragma HLS INTERFACE s_axilite port = pfrac
#pragma HLS INTERFACE s_axilite port = fracs
#pragma HLS INTERFACE s_axilite port = seed
#pragma HLS INTERFACE s_axilite port = return
    const int B = batch, T = tokens, D = dim, H = heads, C = keep, R = dense_rows, sparse = has_conn;
    if (!tl_attn_check(B, T, D, H, C, R, sparse)) return TL_BAD_DIMS;
    const int HD = D / H, D3 = 3 * D, rows = B * T, extra = tl_attn_extra_frac(HD);
    const int f_dctx = fracs[0], f_dp = fracs[1], f_ds = fracs[2], f_dqkv = fracs[3];
    const uint32_t sd = seed, seed_dp = tl_hash32(sd, 1), seed_ds = tl_hash32(sd, 2), seed_dqkv = tl_hash32(sd, 3);
    const int dp_shift = f_dctx + frac_qkv - f_dp;
    const int qk_shift = f_ds + frac_qkv + extra - f_dqkv, v_shift = 15 + f_dctx - f_dqkv;
    grad_t s[1];
    if (linear_bwd(dout, ctx, proj_w, dctx, g_proj_w, g_proj_b, s, B, T, D, D, frac_dout, pfrac[4], f_dctx,
                   tl_hash32(sd, 0), 1, 1) != TL_OK)
        return TL_ACC_RANGE;
    stats[0] = s[0];

    static data_t ds[TL_T_MAX][TL_T_MAX];
    static int64_t dk_acc[TL_T_MAX][TL_HEAD_DIM_MAX], dv_acc[TL_T_MAX][TL_HEAD_DIM_MAX];
    hls::stream<data_t> sm_p("sm_p"), sm_dp("sm_dp"), sm_out("sm_out");
    hls::stream<idx_t> sm_keys("sm_keys");
    hls::stream<acc_t> sm_peak("sm_peak");
    int64_t peak_dp = 0, peak_ds = 0, peak_qk = 0, peak_v = 0;
images:
    for (int b = 0; b < B; b++) {
    heads:
        for (int h = 0; h < H; h++) {
            const data_t* qh = qkv + (int64_t)b * T * D3 + h * HD;
            const data_t* kh = qh + D;
            const data_t* vh = qh + 2 * D;
            const data_t* ph = probs + ((int64_t)b * H + h) * T * T;
            const data_t* gh = dctx + (int64_t)b * T * D + h * HD;  // dctx of this head, row stride D
            const uint32_t dense_base = (uint32_t)(((int64_t)b * H + h) * T * T);
            for (int t = 0; t < T; t++)
                for (int d = 0; d < HD; d++) dk_acc[t][d] = dv_acc[t][d] = 0;
            const int n_groups = sparse ? T : 1;
        row_groups:
            for (int g = 0; g < n_groups; g++) {
                const int q0 = sparse ? g : 0, nq = sparse ? 1 : T;
                const int* keys = tl_keys(conn, b, q0, T, C, R, sparse);
                const int nk = keys ? C : T;
                for (int i = 0; i < nq; i++) {
                    const int q = q0 + i;
                    const uint32_t row_base = dense_base + (uint32_t)q * T;
                    // dP[q][key] = SR(dctx_q . v_key): a gathered dot product per selected key
                dp_keys:
                    for (int j = 0; j < nk; j++) {
#pragma HLS PIPELINE II = 1
                        const int key = keys ? keys[j] : j;
                        int64_t acc = 0;
                        for (int d = 0; d < HD; d++) {
#pragma HLS UNROLL
                            acc += (int64_t)gh[(int64_t)q * D + d] * vh[(int64_t)key * D3 + d];
                        }
                        peak_dp = tl_max64(peak_dp, tl_abs64(acc));
                        sm_p.write(ph[(int64_t)q * T + j]);
                        sm_dp.write((data_t)tl_requantize(acc, dp_shift, TL_SR, seed_dp, row_base + key));
                        sm_keys.write((idx_t)key);
                    }
                    softmax_unit(sm_p, sm_dp, sm_keys, sm_out, sm_peak, nk, 1, f_dp, f_ds, seed_ds, row_base);
                    peak_ds = tl_max64(peak_ds, (int64_t)sm_peak.read());
                    for (int j = 0; j < nk; j++) ds[i][j] = sm_out.read();
                    // dK[key] += dS[q][key] q_q and dV[key] += P[q][key] dctx_q (scatter by index)
                scatter:
                    for (int j = 0; j < nk; j++) {
                        const int key = keys ? keys[j] : j;
                        const int64_t dsv = ds[i][j], pv = ph[(int64_t)q * T + j];
                        for (int d = 0; d < HD; d++) {
#pragma HLS PIPELINE II = 1
                            dk_acc[key][d] += dsv * qh[(int64_t)q * D3 + d];
                            dv_acc[key][d] += pv * gh[(int64_t)q * D + d];
                        }
                    }
                }
                // dQ rows = SR(dS . K_keys), keys gathered by index, into the Q part of dqkv
                const int64_t p = tl_gemm(&ds[0][0], TL_T_MAX, 1, kh, D3, 1, keys, 0, 0, TL_NO_RESIDUAL, 0,
                                          dqkv + ((int64_t)b * T + q0) * D3 + h * HD, D3, nq, HD, nk, qk_shift, TL_SR,
                                          seed_dqkv, (uint32_t)(((int64_t)b * T + q0) * D3 + h * HD), D3);
                peak_qk = tl_max64(peak_qk, p);
            }
        dk_dv_out:
            for (int t = 0; t < T; t++)
                for (int d = 0; d < HD; d++) {
#pragma HLS PIPELINE II = 1
                    const int64_t base = ((int64_t)b * T + t) * D3 + h * HD + d;
                    peak_qk = tl_max64(peak_qk, tl_abs64(dk_acc[t][d]));
                    peak_v = tl_max64(peak_v, tl_abs64(dv_acc[t][d]));
                    dqkv[base + D] = (data_t)tl_requantize(dk_acc[t][d], qk_shift, TL_SR, seed_dqkv, (uint32_t)(base + D));
                    dqkv[base + 2 * D] =
                        (data_t)tl_requantize(dv_acc[t][d], v_shift, TL_SR, seed_dqkv, (uint32_t)(base + 2 * D));
                }
        }
    }
    stats[1] = tl_peak_out(peak_dp, dp_shift);
    stats[2] = tl_peak_out(peak_ds, f_dp + 30 - f_ds);
    stats[3] = tl_max64(tl_peak_out(peak_qk, qk_shift), tl_peak_out(peak_v, v_shift));
    if (linear_bwd(dqkv, z, qkv_w, dz, g_qkv_w, g_qkv_b, s, B, T, D, D3, f_dqkv, pfrac[2], fracs[4],
                   tl_hash32(sd, 4), 1, 1) != TL_OK)
        return TL_ACC_RANGE;
    stats[4] = s[0];
    const int ln_fr[3] = {fracs[5], fracs[6], fracs[7]};
    int64_t ln_stats[3];
    if (tl_layernorm_bwd(dz, fracs[4], xhat, rsqrt, kk, frac_x, rows, D, ln_w, pfrac[0], g_ln_w, g_ln_b, ln_fr,
                         tl_hash32(sd, 5), dout, frac_dout, dx, ln_stats) != TL_OK)
        return TL_ACC_RANGE;
    for (int i = 0; i < 3; i++) stats[5 + i] = ln_stats[i];
    return TL_OK;
}

#ifndef __SYNTHESIS__
#include "trilevel_csim_abi.h"

extern "C" {
// in: x, ln_w, ln_b, qkv_w, qkv_b, proj_w, proj_b; conn (may be null); out: out, z, xhat, qkv, ctx, probs;
// rs: rsqrt, k; attn_sum [B*T*T]. dims: B, T, D, H, C, dense_rows; fr: frac_x, pfrac[6], fracs[5].
int tl_attn_fwd(const int16_t* const* in, const int32_t* conn, int16_t* const* out, int32_t* const* rs,
                int32_t* attn_sum, int64_t* stats, const int* dims, const int* fr) {
    const int B = dims[0], T = dims[1], D = dims[2], H = dims[3], C = dims[4], R = dims[5];
    const int64_t nx = (int64_t)B * T * D;
    const int64_t sizes[7] = {nx, D, D, (int64_t)3 * D * D, 3 * D, (int64_t)D * D, D};
    std::vector<data_t> v[7];
    for (int i = 0; i < 7; i++) v[i] = tl_in<data_t>(in[i], sizes[i]);
    std::vector<int> cv = tl_in<int>(conn, conn ? (int64_t)B * (T - R) * C : 0);
    std::vector<data_t> o(nx), z(nx), xh(nx), qkv(3 * nx), ctx(nx), probs((size_t)B * H * T * T);
    std::vector<int32_t> rsq((size_t)B * T), kk((size_t)B * T);
    std::vector<score_t> asum((size_t)B * T * T);
    grad_t st[5] = {0, 0, 0, 0, 0};
    shift_t pf[6], fs[5];
    for (int i = 0; i < 6; i++) pf[i] = fr[1 + i];
    for (int i = 0; i < 5; i++) fs[i] = fr[7 + i];
    const int status = attn_fwd(v[0].data(), v[1].data(), v[2].data(), v[3].data(), v[4].data(), v[5].data(),
                                v[6].data(), conn ? cv.data() : 0, o.data(), z.data(), xh.data(), rsq.data(), kk.data(),
                                qkv.data(), ctx.data(), probs.data(), asum.data(), st, B, T, D, H, C, R, conn != 0,
                                fr[0], pf, fs);
    int16_t* const outs[6] = {out[0], out[1], out[2], out[3], out[4], out[5]};
    tl_out(o, outs[0]);
    tl_out(z, outs[1]);
    tl_out(xh, outs[2]);
    tl_out(qkv, outs[3]);
    tl_out(ctx, outs[4]);
    tl_out(probs, outs[5]);
    tl_out(rsq, rs[0]);
    tl_out(kk, rs[1]);
    tl_out(asum, attn_sum);
    for (int i = 0; i < 5; i++) stats[i] = (int64_t)st[i];
    return status;
}

// in: dout, z, xhat, qkv, ctx, probs (compact), ln_w, qkv_w, proj_w; conn (may be null); rs: rsqrt, k;
// grads: parameter order; dims: B, T, D, H, C, dense_rows; fr: frac_dout, frac_x, frac_qkv, pfrac[6], fracs[8].
int tl_attn_bwd(const int16_t* const* in, const int32_t* conn, const int32_t* const* rs, int64_t* const* grads,
                int16_t* dx, int64_t* stats, const int* dims, const int* fr, uint32_t seed) {
    const int B = dims[0], T = dims[1], D = dims[2], H = dims[3], C = dims[4], R = dims[5];
    const int64_t nx = (int64_t)B * T * D;
    const int64_t sizes[9] = {nx, nx, nx, 3 * nx, nx, (int64_t)B * H * T * T, D, (int64_t)3 * D * D, (int64_t)D * D};
    std::vector<data_t> v[9];
    for (int i = 0; i < 9; i++) v[i] = tl_in<data_t>(in[i], sizes[i]);
    std::vector<int> cv = tl_in<int>(conn, conn ? (int64_t)B * (T - R) * C : 0);
    const int64_t gsizes[6] = {D, D, (int64_t)3 * D * D, 3 * D, (int64_t)D * D, D};
    std::vector<grad_t> g[6];
    for (int i = 0; i < 6; i++) g[i] = tl_in<grad_t>(grads[i], gsizes[i]);
    std::vector<int32_t> rsq = tl_in<int32_t>(rs[0], (int64_t)B * T), kk = tl_in<int32_t>(rs[1], (int64_t)B * T);
    std::vector<data_t> dctx(nx), dqkv(3 * nx), dz(nx), dxv(nx);
    grad_t st[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    shift_t pf[6], fs[8];
    for (int i = 0; i < 6; i++) pf[i] = fr[3 + i];
    for (int i = 0; i < 8; i++) fs[i] = fr[9 + i];
    const int status = attn_bwd(v[0].data(), v[1].data(), v[2].data(), rsq.data(), kk.data(), v[3].data(),
                                v[4].data(), v[5].data(), conn ? cv.data() : 0, v[6].data(), v[7].data(), v[8].data(),
                                g[0].data(), g[1].data(), g[2].data(), g[3].data(), g[4].data(), g[5].data(),
                                dctx.data(), dqkv.data(), dz.data(), dxv.data(), st, B, T, D, H, C, R, conn != 0,
                                fr[0], fr[1], fr[2], pf, fs, seed);
    for (int i = 0; i < 6; i++) tl_out(g[i], grads[i]);
    tl_out(dxv, dx);
    for (int i = 0; i < 8; i++) stats[i] = (int64_t)st[i];
    return status;
}
}
#endif
