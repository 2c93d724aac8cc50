# Package the SystemVerilog engine (hls/rtl/engine) as a Vivado IP (IP-XACT) for the block design.
# Run by bitstreams/build.sh when TRILEVEL_ENGINE=rtl (the default):
#   vivado -mode batch -source bitstreams/package_engine.tcl -tclargs <repo_root> <ip_out_dir>
# Sources: hls/rtl/engine/files.f (compile order, top module last). Result: <ip_out_dir>/component.xml,
# IP trilevel.org:trilevel:trilevel_engine_rtl:1.0 with the same ports and register map as the HLS engine.

if {[llength $argv] != 2} {
    error "usage: package_engine.tcl <repo_root> <ip_out_dir>"
}
lassign $argv repo ip_dir
set top trilevel_engine_rtl

set filelist [file join $repo hls rtl engine files.f]
if {![file exists $filelist]} { error "trilevel: $filelist not found" }
set fh [open $filelist r]
set sources {}
foreach line [split [read $fh] "\n"] {
    set line [string trim $line]
    if {$line eq "" || [string index $line 0] eq "#"} { continue }
    lappend sources [file join $repo $line]
}
close $fh

create_project -in_memory -part xczu9eg-ffvb1156-2-e
read_verilog -sv $sources
set_property top $top [current_fileset]
update_compile_order -fileset sources_1

ipx::package_project -root_dir $ip_dir -vendor trilevel.org -library trilevel -taxonomy /UserIP \
    -import_files -force
set core [ipx::current_core]
set_property name $top $core
set_property version 1.0 $core
set_property display_name "trilevel training engine (SystemVerilog)" $core
set_property description "Command-driven Tri-Level E-ViT training engine, docs/engine.md" $core

# AXI4-Lite slave s_axi_control, AXI4 master m_axi_gmem, clock ap_clk, active-low reset, interrupt.
ipx::infer_bus_interfaces xilinx.com:interface:aximm_rtl:1.0 $core
ipx::infer_bus_interfaces xilinx.com:signal:clock_rtl:1.0 $core
ipx::infer_bus_interfaces xilinx.com:signal:reset_rtl:1.0 $core
ipx::infer_bus_interfaces xilinx.com:signal:interrupt_rtl:1.0 $core
foreach busif {s_axi_control m_axi_gmem} {
    if {[ipx::get_bus_interfaces $busif -of_objects $core] eq ""} {
        error "trilevel: $top has no $busif interface (check the port names in docs/engine.md)"
    }
    ipx::associate_bus_interfaces -busif $busif -clock ap_clk $core
}
ipx::associate_bus_interfaces -clock ap_clk -reset ap_rst_n $core
set_property value ACTIVE_LOW \
    [ipx::get_bus_parameters POLARITY -of_objects [ipx::get_bus_interfaces ap_rst_n -of_objects $core]]

# The register window is the address block "Reg" (the name Vitis HLS gives it, used by the block design).
set mm [ipx::get_memory_maps s_axi_control -of_objects $core]
if {$mm eq ""} { set mm [ipx::add_memory_map s_axi_control $core] }
foreach block [ipx::get_address_blocks -of_objects $mm] { ipx::remove_address_block [get_property name $block] $mm }
set block [ipx::add_address_block Reg $mm]
set_property range 65536 $block
set_property width 32 $block
set_property slave_memory_map_ref s_axi_control [ipx::get_bus_interfaces s_axi_control -of_objects $core]

ipx::create_xgui_files $core
ipx::update_checksums $core
ipx::check_integrity $core
ipx::save_core $core
puts "trilevel: packaged $top into $ip_dir"
