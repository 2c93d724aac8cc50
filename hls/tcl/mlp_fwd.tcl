# Vitis HLS: mlp_fwd (hls/src/mlp.cpp) -> build/hls/mlp_fwd, IP catalog export. Run: bash hls/run_hls.sh mlp_fwd
set top mlp_fwd
set sources {mlp.cpp linear.cpp}
source hls/tcl/common.tcl
