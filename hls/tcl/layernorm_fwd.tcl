# Vitis HLS: layernorm_fwd (hls/src/layernorm.cpp) -> build/hls/layernorm_fwd, IP catalog export. Run: bash hls/run_hls.sh layernorm_fwd
set top layernorm_fwd
set sources {layernorm.cpp}
source hls/tcl/common.tcl
