# ZCU102 block design of the trilevel training engine (Vivado 2023.2).
#
# Sourced by bitstreams/build.tcl, which then calls `trilevel::create_bd <design> <clock_mhz> <impl>`.
# Everything the host driver relies on is data in the `trilevel` namespace below and is checked against
# trilevel.accel.isa by tests/test_bitstream_consistency.py, which runs this file in a plain Tcl
# interpreter with recording stubs for the Vivado commands.
#
#   Zynq UltraScale+ PS (board preset)
#     M_AXI_HPM0_FPD  -> axi_ctrl (SmartConnect) -> trilevel_engine_0/s_axi_control   (AXI-Lite, 64 KiB)
#     S_AXI_HP0_FPD   <- axi_hp0 (SmartConnect)  <- trilevel_engine_0/m_axi_gmem      (AXI4, 128 bit)
#     pl_ps_irq0[0]   <- trilevel_engine_0/interrupt
#     pl_clk0 (150 MHz default) clocks the whole PL; rst_pl0 makes the synchronous resets.
#
# One engine executes every kernel (docs/engine.md). `impl` picks its implementation: "rtl" (the
# SystemVerilog engine packaged by bitstreams/package_engine.tcl) or "hls" (the Vitis HLS engine of
# `make hls`). Both have the same ports and the same register map, so the host driver is the same.

namespace eval trilevel {
    variable ip_vendor trilevel.org
    variable ip_library trilevel
    variable ip_version 1.0
    # IP name per implementation (trilevel.accel.isa.IP_NAMES).
    variable ip_names {rtl trilevel_engine_rtl hls trilevel_engine}
    variable instance trilevel_engine_0
    # AXI-Lite window of the engine (trilevel.accel.isa.CTRL_BASE / CTRL_RANGE).
    variable ctrl_base 0xA0000000
    variable ctrl_range 64K
    # HP port of the engine's AXI4 master and its width (trilevel.accel.isa PRODUCTION.axi_bytes * 8).
    variable hp_port 0
    variable hp_width 128
    variable ps_vlnv xilinx.com:ip:zynq_ultra_ps_e
}

proc trilevel::engine_vlnv {impl} {
    variable ip_vendor
    variable ip_library
    variable ip_version
    variable ip_names
    if {![dict exists $ip_names $impl]} {
        error "trilevel: engine implementation must be one of [dict keys $ip_names], got '$impl'"
    }
    return "$ip_vendor:$ip_library:[dict get $ip_names $impl]:$ip_version"
}

proc trilevel::create_bd {design clock_mhz {impl rtl}} {
    variable instance
    variable ctrl_base
    variable ctrl_range
    variable hp_port
    variable hp_width
    variable ps_vlnv

    set vlnv [trilevel::engine_vlnv $impl]
    create_bd_design $design

    # --- Processing system: ZCU102 board preset, HPM0 for control, one 128-bit HP port for data.
    set ps [create_bd_cell -type ip -vlnv $ps_vlnv zynq_ultra_ps_e_0]
    apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e -config {apply_board_preset "1"} $ps
    # S_AXI_HP<n>_FPD is S_AXI_GP<n + 2> in the PS configuration.
    set gp [expr {$hp_port + 2}]
    set_property -dict [list \
        CONFIG.PSU__USE__M_AXI_GP0 {1} CONFIG.PSU__USE__M_AXI_GP1 {0} CONFIG.PSU__USE__M_AXI_GP2 {0} \
        CONFIG.PSU__FPGA_PL0_ENABLE {1} CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ $clock_mhz \
        CONFIG.PSU__USE__IRQ0 {1} \
        CONFIG.PSU__USE__S_AXI_GP$gp {1} CONFIG.PSU__SAXIGP${gp}__DATA_WIDTH $hp_width] $ps

    # --- Clock and reset.
    set rst [create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset rst_pl0]
    set clk [get_bd_pins zynq_ultra_ps_e_0/pl_clk0]
    connect_bd_net $clk [get_bd_pins rst_pl0/slowest_sync_clk]
    connect_bd_net [get_bd_pins zynq_ultra_ps_e_0/pl_resetn0] [get_bd_pins rst_pl0/ext_reset_in]
    set rstn [get_bd_pins rst_pl0/peripheral_aresetn]
    connect_bd_net $clk [get_bd_pins zynq_ultra_ps_e_0/maxihpm0_fpd_aclk]
    connect_bd_net $clk [get_bd_pins zynq_ultra_ps_e_0/saxihp${hp_port}_fpd_aclk]

    # --- The engine.
    create_bd_cell -type ip -vlnv $vlnv $instance
    connect_bd_net $clk [get_bd_pins $instance/ap_clk]
    connect_bd_net $rstn [get_bd_pins $instance/ap_rst_n]

    # --- Control: HPM0 -> SmartConnect -> the engine's AXI-Lite slave.
    create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect axi_ctrl
    set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {1}] [get_bd_cells axi_ctrl]
    connect_bd_net $clk [get_bd_pins axi_ctrl/aclk]
    connect_bd_net $rstn [get_bd_pins axi_ctrl/aresetn]
    connect_bd_intf_net [get_bd_intf_pins zynq_ultra_ps_e_0/M_AXI_HPM0_FPD] [get_bd_intf_pins axi_ctrl/S00_AXI]
    connect_bd_intf_net [get_bd_intf_pins axi_ctrl/M00_AXI] [get_bd_intf_pins $instance/s_axi_control]

    # --- Data: the engine's AXI4 master (commands, loads, stores) -> SmartConnect -> HP port.
    set sc axi_hp$hp_port
    create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect $sc
    set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {1}] [get_bd_cells $sc]
    connect_bd_net $clk [get_bd_pins $sc/aclk]
    connect_bd_net $rstn [get_bd_pins $sc/aresetn]
    connect_bd_intf_net [get_bd_intf_pins $instance/m_axi_gmem] [get_bd_intf_pins $sc/S00_AXI]
    connect_bd_intf_net [get_bd_intf_pins $sc/M00_AXI] [get_bd_intf_pins zynq_ultra_ps_e_0/S_AXI_HP${hp_port}_FPD]

    # --- Interrupt: the engine drives bit 0 of pl_ps_irq0.
    connect_bd_net [get_bd_pins $instance/interrupt] [get_bd_pins zynq_ultra_ps_e_0/pl_ps_irq0]

    # --- Address map: the fixed AXI-Lite window the driver checks; DDR for the m_axi space.
    assign_bd_address -offset $ctrl_base -range $ctrl_range \
        -target_address_space [get_bd_addr_spaces zynq_ultra_ps_e_0/Data] \
        [get_bd_addr_segs $instance/s_axi_control/Reg] -force
    assign_bd_address

    validate_bd_design
    save_bd_design
}
