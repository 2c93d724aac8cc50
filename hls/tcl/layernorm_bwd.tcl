# Vitis HLS: layernorm_bwd (hls/src/layernorm.cpp) -> build/hls/layernorm_bwd, IP catalog export. Run: bash hls/run_hls.sh layernorm_bwd
set top layernorm_bwd
set sources {layernorm.cpp}
source hls/tcl/common.tcl
