// topk_prune: the TA-selector's two selections on topk_unit (docs/numerics.md 1.4; trilevel.intref.topk).
//   connections = 0: token top-k.  scores [B][n] -> out [B][k]: the k best positions per image, ascending.
//   connections = 1: connection top-k over a head-sum attention map [B][n][n] of the kept tokens ([CLS]
//     first when has_cls): out [B][n - r][k + r] (r = has_cls): for each patch query row, the [CLS] key 0
//     (with [CLS]) then its k strongest patch keys, as ascending token positions. The [CLS] row stays
//     dense and is not listed.
#include "trilevel_kernels.h"

int topk_prune(const score_t* scores, int32_t* out, dim_t batch, dim_t n, dim_t k, flag_t connections,
               flag_t has_cls) {
#pragma HLS INTERFACE m_axi port = scores offset = slave bundle = gmem0 depth = 38809
#pragma HLS INTERFACE m_axi port = out offset = slave bundle = gmem1 depth = 38612
#pragma HLS INTERFACE s_axilite port = batch
#pragma HLS INTERFACE s_axilite port = n
#pragma HLS INTERFACE s_axilite port = k
#pragma HLS INTERFACE s_axilite port = connections
#pragma HLS INTERFACE s_axilite port = has_cls
#pragma HLS INTERFACE s_axilite port = return
    const int B = batch, N = n, K = k, r = connections && has_cls ? 1 : 0;
    const int rows = connections ? N - r : 1, width = N - r;  // frames per image, scores per frame
    if (B < 1 || N < 1 || N > TL_ROW_MAX || width < 1 || K < 1 || K > width) return TL_BAD_DIMS;
    hls::stream<score_t> s_in("scores");
    hls::stream<idx_t> idx_out("idx");
    int64_t o = 0;
images:
    for (int b = 0; b < B; b++) {
    frames:
        for (int q = 0; q < rows; q++) {
            const score_t* row = connections ? scores + ((int64_t)b * N + q + r) * N + r : scores + (int64_t)b * N;
            for (int j = 0; j < width; j++) {
#pragma HLS PIPELINE II = 1
                s_in.write(row[j]);
            }
            topk_unit(s_in, idx_out, width, K);
            if (r) out[o++] = 0;
            for (int j = 0; j < K; j++) {
#pragma HLS PIPELINE II = 1
                out[o++] = (int32_t)idx_out.read() + r;
            }
        }
    }
    return TL_OK;
}

#ifndef __SYNTHESIS__
#include "trilevel_csim_abi.h"

extern "C" {
int tl_topk_prune(const int32_t* scores, int32_t* out, int batch, int n, int k, int connections, int has_cls) {
    const std::vector<score_t> sv = tl_in<score_t>(scores, (int64_t)batch * n * (connections ? n : 1));
    return topk_prune(sv.data(), out, batch, n, k, connections, has_cls);
}
}
#endif
