# Vitis HLS: attn_bwd (hls/src/attn.cpp) -> build/hls/attn_bwd, IP catalog export. Run: bash hls/run_hls.sh attn_bwd
set top attn_bwd
set sources {attn.cpp linear.cpp}
source hls/tcl/common.tcl
