# Shared Vitis HLS flow for one trilevel top function: csim_design, csynth_design, export_design.
# Sourced by hls/tcl/<top>.tcl after it sets `top` and `sources`; run from the repository root
# (hls/run_hls.sh does). Environment:
#   TRILEVEL_HLS_CLOCK_MHZ   target clock in MHz (default 150, the paper's clock)
#   TRILEVEL_HLS_PART        FPGA part (default xczu9eg-ffvb1156-2-e, ZCU102)
#   TRILEVEL_HLS_STEPS       subset of "csim synth export" (default all three)
#   TRILEVEL_HLS_RTL_UNITS   1: replace topk_unit / gemm_tile / softmax_unit by the RTL blackboxes
#                            hls/rtl/<unit>.json (when they exist)
proc env_or {name default} {
    if {[info exists ::env($name)] && $::env($name) ne ""} { return $::env($name) }
    return $default
}

set clock_mhz [env_or TRILEVEL_HLS_CLOCK_MHZ 150]
set part [env_or TRILEVEL_HLS_PART xczu9eg-ffvb1156-2-e]
set steps [env_or TRILEVEL_HLS_STEPS "csim synth export"]
set rtl_units [env_or TRILEVEL_HLS_RTL_UNITS 0]
set cflags "-std=c++14 -Ihls/include -Ibuild/hls/include"

open_project -reset build/hls/$top
set_top $top
foreach src $sources { add_files hls/src/$src -cflags $cflags }
set blackboxed {}
foreach unit {topk_unit gemm_tile softmax_unit} {
    if {$rtl_units && [file exists hls/rtl/$unit.json]} {
        add_files -blackbox hls/rtl/$unit.json
        lappend blackboxed $unit
    }
}
if {[llength $blackboxed] < 3} { add_files hls/src/trilevel_units.cpp -cflags $cflags }
add_files -tb hls/tb/tb_kernels.cpp -cflags "$cflags -DTB_TOP_$top"
set vectors [file normalize build/hls/vectors/$top]

open_solution -reset "solution_${clock_mhz}mhz" -flow_target vivado
set_part $part
create_clock -period [format %.3f [expr {1000.0 / $clock_mhz}]] -name default
config_interface -m_axi_alignment_byte_size 64 -m_axi_max_widen_bitwidth 512
config_compile -pipeline_loops 64

if {[lsearch $steps csim] >= 0} { csim_design -argv $vectors }
if {[lsearch $steps synth] >= 0} { csynth_design }
if {[lsearch $steps export] >= 0} {
    export_design -format ip_catalog -vendor trilevel.org -library trilevel -ipname $top -version 1.0
}
exit
