# Vivado batch flow: ZCU102 project -> block design -> bitstream + hardware handoff for PYNQ.
# Run by bitstreams/build.sh:
#   vivado -mode batch -source bitstreams/build.tcl -tclargs "<ip_dir> ..." <out_dir> <clock_mhz> <jobs> <rtl|hls>
# Writes <out_dir>/trilevel.bit and <out_dir>/trilevel.hwh (PYNQ needs the same base name).

if {[llength $argv] != 5} {
    error "usage: build.tcl \"<ip_dir> ...\" <out_dir> <clock_mhz> <jobs> <rtl|hls>"
}
lassign $argv ip_dirs out_dir clock_mhz jobs engine
set script_dir [file dirname [file normalize [info script]]]
set design trilevel
set proj_dir [file join $out_dir vivado]

create_project -force trilevel_zcu102 $proj_dir -part xczu9eg-ffvb1156-2-e
# The board files ship with Vivado; the preset configures DDR4, MIO and clocks of the ZCU102.
set board [lindex [lsort [get_board_parts -quiet *zcu102*]] end]
if {$board eq ""} { error "trilevel: no ZCU102 board files in this Vivado installation" }
set_property board_part $board [current_project]
set_property ip_repo_paths $ip_dirs [current_project]
update_ip_catalog -rebuild

source [file join $script_dir zcu102_bd.tcl]
trilevel::create_bd $design $clock_mhz $engine

set bd_file [get_files $design.bd]
generate_target all $bd_file
add_files -norecurse [make_wrapper -files $bd_file -top]
set_property top ${design}_wrapper [current_fileset]

launch_runs impl_1 -to_step write_bitstream -jobs $jobs
wait_on_run impl_1
if {[get_property PROGRESS [get_runs impl_1]] ne "100%"} {
    error "trilevel: implementation failed, see [get_property DIRECTORY [get_runs impl_1]]/runme.log"
}

file mkdir $out_dir
file copy -force [file join [get_property DIRECTORY [get_runs impl_1]] ${design}_wrapper.bit] \
    [file join $out_dir $design.bit]
set hwh [lindex [get_files -all -of_objects [get_fileset sources_1] $design.hwh] 0]
file copy -force $hwh [file join $out_dir $design.hwh]
puts "trilevel: wrote [file join $out_dir $design.bit] and [file join $out_dir $design.hwh]"
