# Vitis HLS: optimizer_step (hls/src/optimizer.cpp) -> build/hls/optimizer_step, IP catalog export. Run: bash hls/run_hls.sh optimizer_step
set top optimizer_step
set sources {optimizer.cpp}
source hls/tcl/common.tcl
