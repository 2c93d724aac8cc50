# Vitis HLS: linear_bwd (hls/src/linear.cpp) -> build/hls/linear_bwd, IP catalog export. Run: bash hls/run_hls.sh linear_bwd
set top linear_bwd
set sources {linear.cpp}
source hls/tcl/common.tcl
