# Shared Vitis HLS flow for the engine top: csim_design, csynth_design, export_design.
# Sourced by hls/tcl/<script>.tcl after it sets `top` and `sources` (files under hls/engine/); run from
# the repository root (hls/run_hls.sh does, after generating build/hls/include/{tl_isa.h,trilevel_luts.h}
# and the csim vectors). Environment:
#   TRILEVEL_HLS_CLOCK_MHZ   target clock in MHz (default 150, the paper's clock)
#   TRILEVEL_HLS_PART        FPGA part (default xczu9eg-ffvb1156-2-e, ZCU102)
#   TRILEVEL_HLS_STEPS       subset of "csim synth export" (default all three)
proc env_or {name default} {
    if {[info exists ::env($name)] && $::env($name) ne ""} { return $::env($name) }
    return $default
}

set clock_mhz [env_or TRILEVEL_HLS_CLOCK_MHZ 150]
set part [env_or TRILEVEL_HLS_PART xczu9eg-ffvb1156-2-e]
set steps [env_or TRILEVEL_HLS_STEPS "csim synth export"]
set cflags "-std=c++14 -DTL_VITIS -Ihls/engine -Ibuild/hls/include"

open_project -reset build/hls/$top
set_top $top
foreach src $sources { add_files hls/engine/$src -cflags $cflags }
add_files -tb hls/tb/tb_engine.cpp -cflags $cflags
set vectors [file normalize build/hls/vectors/engine]

open_solution -reset "solution_${clock_mhz}mhz" -flow_target vivado
set_part $part
create_clock -period [format %.3f [expr {1000.0 / $clock_mhz}]] -name default
config_interface -m_axi_alignment_byte_size 16 -m_axi_max_widen_bitwidth 128
config_compile -pipeline_loops 64

if {[lsearch $steps csim] >= 0} { csim_design -argv $vectors }
if {[lsearch $steps synth] >= 0} { csynth_design }
if {[lsearch $steps export] >= 0} {
    export_design -format ip_catalog -vendor trilevel.org -library trilevel -ipname $top -version 1.0
}
exit
