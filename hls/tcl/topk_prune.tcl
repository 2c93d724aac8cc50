# Vitis HLS: topk_prune (hls/src/topk_prune.cpp) -> build/hls/topk_prune, IP catalog export. Run: bash hls/run_hls.sh topk_prune
set top topk_prune
set sources {topk_prune.cpp}
source hls/tcl/common.tcl
