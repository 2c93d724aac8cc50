// mlp_fwd / mlp_bwd: the MLP half of a transformer block, out = x + fc2(GELU(fc1(LN2(x)))), over a batch of
// B images with T tokens (trilevel.intref.blocks.mlp_block_fwd / mlp_block_bwd), layer by layer over the
// batch so every weight is streamed once per call.
#include "trilevel_layers.h"

// Parameter order (pfrac too): norm2.weight, norm2.bias, fc1.weight, fc1.bias, fc2.weight, fc2.bias.
// fracs / stats order: ln, h, a, out (MLP_FWD_FRACS). Saved for the backward: z (LN output), the LN
// row state (xhat, rsqrt, k), h (fc1 output) and a (GELU output).
int mlp_fwd(const data_t* x, const data_t* ln_w, const data_t* ln_b, const data_t* fc1_w, const data_t* fc1_b,
            const data_t* fc2_w, const data_t* fc2_b, data_t* out, data_t* z, data_t* xhat, int32_t* rsqrt,
            int32_t* kk, data_t* h, data_t* a, grad_t stats[4], dim_t batch, dim_t tokens, dim_t dim,
            dim_t hidden, shift_t frac_x, const shift_t pfrac[6], const shift_t fracs[4]) {
#pragma HLS INTERFACE m_axi port = x offset = slave bundle = gmem0 depth = 75648
#pragma HLS INTERFACE m_axi port = ln_w offset = slave bundle = gmem1 depth = 384
#pragma HLS INTERFACE m_axi port = ln_b offset = slave bundle = gmem1 depth = 384
#pragma HLS INTERFACE m_axi port = fc1_w offset = slave bundle = gmem1 depth = 589824
#pragma HLS INTERFACE m_axi port = fc1_b offset = slave bundle = gmem1 depth = 1536
#pragma HLS INTERFACE m_axi port = fc2_w offset = slave bundle = gmem1 depth = 589824
#pragma HLS INTERFACE m_axi port = fc2_b offset = slave bundle = gmem1 depth = 384
#pragma HLS INTERFACE m_axi port = out offset = slave bundle = gmem2 depth = 75648
#pragma HLS INTERFACE m_axi port = z offset = slave bundle = gmem2 depth = 75648
#pragma HLS INTERFACE m_axi port = xhat offset = slave bundle = gmem2 depth = 75648
#pragma HLS INTERFACE m_axi port = rsqrt offset = slave bundle = gmem2 depth = 197
#pragma HLS INTERFACE m_axi port = kk offset = slave bundle = gmem2 depth = 197
#pragma HLS INTERFACE m_axi port = h offset = slave bundle = gmem3 depth = 302592
#pragma HLS INTERFACE m_axi port = a offset = slave bundle = gmem3 depth = 302592
#pragma HLS INTERFACE s_axilite port = stats
#pragma HLS INTERFACE s_axilite port = batch
#pragma HLS INTERFACE s_axilite port = tokens
#pragma HLS INTERFACE s_axilite port = dim
#pragma HLS INTERFACE s_axilite port = hidden
#pragma HLS INTERFACE s_axilite port = frac_x
#pragma HLS INTERFACE s_axilite port = pfrac
#pragma HLS INTERFACE s_axilite port = fracs
#pragma HLS INTERFACE s_axilite port = return
    const int B = batch, T = tokens, D = dim, HD = hidden, rows = B * T;
    if (B < 1 || T < 1 || T > TL_T_MAX || D < 1 || D > TL_D_MAX || HD < 1 || HD > TL_HIDDEN_MAX) return TL_BAD_DIMS;
    grad_t s[1];
    stats[0] = tl_layernorm_fwd(x, rows, D, frac_x, ln_w, pfrac[0], ln_b, pfrac[1], fracs[0], z, xhat, rsqrt, kk);
    linear_fwd(z, fc1_w, fc1_b, 0, h, s, B, T, D, HD, fracs[0], pfrac[2], pfrac[3], 0, fracs[1], 1, 0);
    stats[1] = s[0];
    stats[2] = tl_gelu_fwd(h, (int64_t)rows * HD, fracs[1], fracs[2], a);
    linear_fwd(a, fc2_w, fc2_b, x, out, s, B, T, HD, D, fracs[2], pfrac[4], pfrac[5], frac_x, fracs[3], 1, 1);
    stats[3] = s[0];
    return TL_OK;
}

// Backward of mlp_fwd. fracs / stats order: da, dh, dln, ln_g, ln_t, dx (MLP_BWD_FRACS); SR point i
// uses hash32(seed, i). Gradients are ADDED to the caller's int64 accumulators (grad order = parameter
// order). Scratch: da, dh [B*T*hidden], dz [B*T*dim]. Returns TL_ACC_RANGE on 48-bit overflow.
int mlp_bwd(const data_t* dout, const data_t* z, const data_t* xhat, const int32_t* rsqrt, const int32_t* kk,
            const data_t* h, const data_t* a, const data_t* ln_w, const data_t* fc1_w, const data_t* fc2_w,
            grad_t* g_ln_w, grad_t* g_ln_b, grad_t* g_fc1_w, grad_t* g_fc1_b, grad_t* g_fc2_w, grad_t* g_fc2_b,
            data_t* da, data_t* dh, data_t* dz, data_t* dx, grad_t stats[6], dim_t batch, dim_t tokens, dim_t dim,
            dim_t hidden, shift_t frac_dout, shift_t frac_x, shift_t frac_h, const shift_t pfrac[6],
            const shift_t fracs[6], u32_t seed) {
#pragma HLS INTERFACE m_axi port = dout offset = slave bundle = gmem0 depth = 75648
#pragma HLS INTERFACE m_axi port = z offset = slave bundle = gmem0 depth = 75648
#pragma HLS INTERFACE m_axi port = xhat offset = slave bundle = gmem0 depth = 75648
#pragma HLS INTERFACE m_axi port = rsqrt offset = slave bundle = gmem0 depth = 197
#pragma HLS INTERFACE m_axi port = kk offset = slave bundle = gmem0 depth = 197
#pragma HLS INTERFACE m_axi port = h offset = slave bundle = gmem0 depth = 302592
#pragma HLS INTERFACE m_axi port = a offset = slave bundle = gmem0 depth = 302592
#pragma HLS INTERFACE m_axi port = ln_w offset = slave bundle = gmem1 depth = 384
#pragma HLS INTERFACE m_axi port = fc1_w offset = slave bundle = gmem1 depth = 589824
#pragma HLS INTERFACE m_axi port = fc2_w offset = slave bundle = gmem1 depth = 589824
#pragma HLS INTERFACE m_axi port = g_ln_w offset = slave bundle = gmem3 depth = 384
#pragma HLS INTERFACE m_axi port = g_ln_b offset = slave bundle = gmem3 depth = 384
#pragma HLS INTERFACE m_axi port = g_fc1_w offset = slave bundle = gmem3 depth = 589824
#pragma HLS INTERFACE m_axi port = g_fc1_b offset = slave bundle = gmem3 depth = 1536
#pragma HLS INTERFACE m_axi port = g_fc2_w offset = slave bundle = gmem3 depth = 589824
#pragma HLS INTERFACE m_axi port = g_fc2_b offset = slave bundle = gmem3 depth = 384
#pragma HLS INTERFACE m_axi port = da offset = slave bundle = gmem2 depth = 302592
#pragma HLS INTERFACE m_axi port = dh offset = slave bundle = gmem2 depth = 302592
#pragma HLS INTERFACE m_axi port = dz offset = slave bundle = gmem2 depth = 75648
#pragma HLS INTERFACE m_axi port = dx offset = slave bundle = gmem2 depth = 75648
#pragma HLS INTERFACE s_axilite port = stats
#pragma HLS INTERFACE s_axilite port = batch
#pragma HLS INTERFACE s_axilite port = tokens
#pragma HLS INTERFACE s_axilite port = dim
#pragma HLS INTERFACE s_axilite port = hidden
#pragma HLS INTERFACE s_axilite port = frac_dout
#pragma HLS INTERFACE s_axilite port = frac_x
#pragma HLS INTERFACE s_axilite port = frac_h
#pragma HLS INTERFACE s_axilite port = pfrac
#pragma HLS INTERFACE s_axilite port = fracs
#pragma HLS INTERFACE s_axilite port = seed
#pragma HLS INTERFACE s_axilite port = return
    const int B = batch, T = tokens, D = dim, HD = hidden, rows = B * T;
    if (B < 1 || T < 1 || T > TL_T_MAX || D < 1 || D > TL_D_MAX || HD < 1 || HD > TL_HIDDEN_MAX) return TL_BAD_DIMS;
    const uint32_t sd = seed;
    grad_t s[1];
    if (linear_bwd(dout, a, fc2_w, da, g_fc2_w, g_fc2_b, s, B, T, HD, D, frac_dout, pfrac[4], fracs[0],
                   tl_hash32(sd, 0), 1, 1) != TL_OK)
        return TL_ACC_RANGE;
    stats[0] = s[0];
    stats[1] = tl_gelu_bwd(da, h, (int64_t)rows * HD, fracs[0], frac_h, fracs[1], tl_hash32(sd, 1), dh);
    if (linear_bwd(dh, z, fc1_w, dz, g_fc1_w, g_fc1_b, s, B, T, D, HD, fracs[1], pfrac[2], fracs[2],
                   tl_hash32(sd, 2), 1, 1) != TL_OK)
        return TL_ACC_RANGE;
    stats[2] = s[0];
    const int ln_fr[3] = {fracs[3], fracs[4], fracs[5]};
    int64_t ln_stats[3];
    if (tl_layernorm_bwd(dz, fracs[2], xhat, rsqrt, kk, frac_x, rows, D, ln_w, pfrac[0], g_ln_w, g_ln_b, ln_fr,
                         tl_hash32(sd, 3), dout, frac_dout, dx, ln_stats) != TL_OK)
        return TL_ACC_RANGE;
    for (int i = 0; i < 3; i++) stats[3 + i] = ln_stats[i];
    return TL_OK;
}

#ifndef __SYNTHESIS__
#include "trilevel_csim_abi.h"

extern "C" {
// in: x, ln_w, ln_b, fc1_w, fc1_b, fc2_w, fc2_b; out: out, z, xhat, h, a; rs: rsqrt, k.
// dims: B, T, D, hidden; fr: frac_x, pfrac[6], fracs[4].
int tl_mlp_fwd(const int16_t* const* in, int16_t* const* out, int32_t* const* rs, int64_t* stats, const int* dims,
               const int* fr) {
    const int B = dims[0], T = dims[1], D = dims[2], HD = dims[3];
    const int64_t nx = (int64_t)B * T * D, nh = (int64_t)B * T * HD;
    const int64_t sizes[7] = {nx, D, D, (int64_t)HD * D, HD, (int64_t)D * HD, D};
    std::vector<data_t> v[7];
    for (int i = 0; i < 7; i++) v[i] = tl_in<data_t>(in[i], sizes[i]);
    std::vector<data_t> o(nx), z(nx), xh(nx), h(nh), a(nh);
    std::vector<int32_t> rsq((size_t)B * T), kk((size_t)B * T);
    grad_t st[4];
    shift_t pf[6], fs[4];
    for (int i = 0; i < 6; i++) pf[i] = fr[1 + i];
    for (int i = 0; i < 4; i++) fs[i] = fr[7 + i];
    const int status = mlp_fwd(v[0].data(), v[1].data(), v[2].data(), v[3].data(), v[4].data(), v[5].data(),
                               v[6].data(), o.data(), z.data(), xh.data(), rsq.data(), kk.data(), h.data(), a.data(),
                               st, B, T, D, HD, fr[0], pf, fs);
    tl_out(o, out[0]);
    tl_out(z, out[1]);
    tl_out(xh, out[2]);
    tl_out(h, out[3]);
    tl_out(a, out[4]);
    tl_out(rsq, rs[0]);
    tl_out(kk, rs[1]);
    for (int i = 0; i < 4; i++) stats[i] = (int64_t)st[i];
    return status;
}

// in: dout, z, xhat, h, a, ln_w, fc1_w, fc2_w; rs: rsqrt, k; grads: ln_w, ln_b, fc1_w, fc1_b, fc2_w, fc2_b;
// dims: B, T, D, hidden; fr: frac_dout, frac_x, frac_h, pfrac[6], fracs[6].
int tl_mlp_bwd(const int16_t* const* in, const int32_t* const* rs, int64_t* const* grads, int16_t* dx,
               int64_t* stats, const int* dims, const int* fr, uint32_t seed) {
    const int B = dims[0], T = dims[1], D = dims[2], HD = dims[3];
    const int64_t nx = (int64_t)B * T * D, nh = (int64_t)B * T * HD;
    const int64_t sizes[8] = {nx, nx, nx, nh, nh, D, (int64_t)HD * D, (int64_t)D * HD};
    std::vector<data_t> v[8];
    for (int i = 0; i < 8; i++) v[i] = tl_in<data_t>(in[i], sizes[i]);
    const int64_t gsizes[6] = {D, D, (int64_t)HD * D, HD, (int64_t)D * HD, D};
    std::vector<grad_t> g[6];
    for (int i = 0; i < 6; i++) g[i] = tl_in<grad_t>(grads[i], gsizes[i]);
    std::vector<int32_t> rsq = tl_in<int32_t>(rs[0], (int64_t)B * T), kk = tl_in<int32_t>(rs[1], (int64_t)B * T);
    std::vector<data_t> da(nh), dh(nh), dz(nx), dxv(nx);
    grad_t st[6] = {0, 0, 0, 0, 0, 0};
    shift_t pf[6], fs[6];
    for (int i = 0; i < 6; i++) pf[i] = fr[3 + i];
    for (int i = 0; i < 6; i++) fs[i] = fr[9 + i];
    const int status = mlp_bwd(v[0].data(), v[1].data(), v[2].data(), rsq.data(), kk.data(), v[3].data(), v[4].data(),
                               v[5].data(), v[6].data(), v[7].data(), g[0].data(), g[1].data(), g[2].data(),
                               g[3].data(), g[4].data(), g[5].data(), da.data(), dh.data(), dz.data(), dxv.data(), st,
                               B, T, D, HD, fr[0], fr[1], fr[2], pf, fs, seed);
    for (int i = 0; i < 6; i++) tl_out(g[i], grads[i]);
    tl_out(dxv, dx);
    for (int i = 0; i < 6; i++) stats[i] = (int64_t)st[i];
    return status;
}
}
#endif
