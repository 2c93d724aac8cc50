# Vitis HLS: linear_fwd (hls/src/linear.cpp) -> build/hls/linear_fwd, IP catalog export. Run: bash hls/run_hls.sh linear_fwd
set top linear_fwd
set sources {linear.cpp}
source hls/tcl/common.tcl
