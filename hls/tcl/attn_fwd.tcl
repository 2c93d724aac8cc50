# Vitis HLS: attn_fwd (hls/src/attn.cpp) -> build/hls/attn_fwd, IP catalog export. Run: bash hls/run_hls.sh attn_fwd
set top attn_fwd
set sources {attn.cpp linear.cpp}
source hls/tcl/common.tcl
