# Vitis HLS: mlp_bwd (hls/src/mlp.cpp) -> build/hls/mlp_bwd, IP catalog export. Run: bash hls/run_hls.sh mlp_bwd
set top mlp_bwd
set sources {mlp.cpp linear.cpp}
source hls/tcl/common.tcl
