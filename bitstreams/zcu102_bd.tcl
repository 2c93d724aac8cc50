# ZCU102 block design of the trilevel training accelerator (Vivado 2023.2).
#
# Sourced by bitstreams/build.tcl, which then calls `trilevel::create_bd <design> <clock_mhz>`.
# Everything the host drivers rely on is data in the `trilevel` namespace below and is checked
# against trilevel.accel.pynq_backend by tests/test_bitstream_consistency.py, which runs this file
# in a plain Tcl interpreter with recording stubs for the Vivado commands.
#
#   Zynq UltraScale+ PS (board preset)
#     M_AXI_HPM0_FPD -> axi_ctrl (SmartConnect) -> s_axi_control of every kernel   (AXI-Lite, 64 KiB each)
#     S_AXI_HP<n>_FPD <- axi_hp<n> (SmartConnect) <- m_axi_gmem<n> of every kernel  (n = bundle mod 4)
#     pl_ps_irq0      <- irq_concat <- interrupt of every kernel (In<i> = kernel i)
#     pl_clk0 (150 MHz default) clocks the whole PL; rst_pl0 makes the synchronous resets.
#
# The RTL units (hls/rtl: topk_unit, gemm_tile, softmax_unit) are inside the kernel IPs: Vitis HLS
# links them as RTL blackboxes (TRILEVEL_HLS_RTL_UNITS=1 in hls/tcl/common.tcl), so the block design
# only instantiates the eight kernels.

namespace eval trilevel {
    # HLS top functions, in interrupt / address order (trilevel.accel.pynq_backend.KERNELS).
    variable kernels {linear_fwd linear_bwd attn_fwd attn_bwd mlp_fwd mlp_bwd topk_prune optimizer_step}
    # VLNV of the HLS IP export (hls/tcl/common.tcl: export_design -vendor -library -version).
    variable ip_vendor trilevel.org
    variable ip_library trilevel
    variable ip_version 1.0
    # AXI-Lite windows: kernel i at ctrl_base + i * ctrl_stride, ctrl_range bytes.
    variable ctrl_base 0xA0000000
    variable ctrl_stride 0x10000
    variable ctrl_range 64K
    variable ps_vlnv xilinx.com:ip:zynq_ultra_ps_e
    variable hp_ports 4
}

# The instance name of kernel `k` in the block design (the key pynq's Overlay uses).
proc trilevel::instance {k} { return "${k}_0" }

proc trilevel::create_bd {design clock_mhz} {
    variable kernels
    variable ip_vendor
    variable ip_library
    variable ip_version
    variable ctrl_base
    variable ctrl_stride
    variable ctrl_range
    variable ps_vlnv
    variable hp_ports

    create_bd_design $design

    # --- Processing system: ZCU102 board preset, one HPM port for control, four HP ports for data.
    set ps [create_bd_cell -type ip -vlnv $ps_vlnv zynq_ultra_ps_e_0]
    apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e -config {apply_board_preset "1"} $ps
    set ps_config [list \
        CONFIG.PSU__USE__M_AXI_GP0 {1} CONFIG.PSU__USE__M_AXI_GP1 {0} CONFIG.PSU__USE__M_AXI_GP2 {0} \
        CONFIG.PSU__FPGA_PL0_ENABLE {1} CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ $clock_mhz \
        CONFIG.PSU__USE__IRQ0 {1}]
    # S_AXI_HP<n>_FPD is S_AXI_GP<n + 2> in the PS configuration.
    for {set n 0} {$n < $hp_ports} {incr n} {
        set gp [expr {$n + 2}]
        lappend ps_config CONFIG.PSU__USE__S_AXI_GP$gp {1} CONFIG.PSU__SAXIGP${gp}__DATA_WIDTH {128}
    }
    set_property -dict $ps_config $ps

    # --- Clock and reset.
    set rst [create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset rst_pl0]
    set clk [get_bd_pins zynq_ultra_ps_e_0/pl_clk0]
    connect_bd_net $clk [get_bd_pins rst_pl0/slowest_sync_clk]
    connect_bd_net [get_bd_pins zynq_ultra_ps_e_0/pl_resetn0] [get_bd_pins rst_pl0/ext_reset_in]
    set rstn [get_bd_pins rst_pl0/peripheral_aresetn]
    connect_bd_net $clk [get_bd_pins zynq_ultra_ps_e_0/maxihpm0_fpd_aclk]
    for {set n 0} {$n < $hp_ports} {incr n} {
        connect_bd_net $clk [get_bd_pins zynq_ultra_ps_e_0/saxihp${n}_fpd_aclk]
    }

    # --- Kernels.
    foreach k $kernels {
        set cell [trilevel::instance $k]
        create_bd_cell -type ip -vlnv $ip_vendor:$ip_library:$k:$ip_version $cell
        connect_bd_net $clk [get_bd_pins $cell/ap_clk]
        connect_bd_net $rstn [get_bd_pins $cell/ap_rst_n]
    }

    # --- Control path: one SmartConnect from the HPM0 port to every kernel's AXI-Lite slave.
    set n_kernels [llength $kernels]
    create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect axi_ctrl
    set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI $n_kernels] [get_bd_cells axi_ctrl]
    connect_bd_net $clk [get_bd_pins axi_ctrl/aclk]
    connect_bd_net $rstn [get_bd_pins axi_ctrl/aresetn]
    connect_bd_intf_net [get_bd_intf_pins zynq_ultra_ps_e_0/M_AXI_HPM0_FPD] [get_bd_intf_pins axi_ctrl/S00_AXI]
    set i 0
    foreach k $kernels {
        connect_bd_intf_net [get_bd_intf_pins axi_ctrl/[format M%02d_AXI $i]] \
            [get_bd_intf_pins [trilevel::instance $k]/s_axi_control]
        incr i
    }

    # --- Data path: bundle gmem<b> of every kernel goes to HP port b mod 4 (activations, weights,
    # outputs, gradients on separate ports; one kernel runs at a time and owns all four).
    for {set n 0} {$n < $hp_ports} {incr n} { set masters($n) {} }
    foreach k $kernels {
        set cell [trilevel::instance $k]
        foreach pin [get_bd_intf_pins -of_objects [get_bd_cells $cell] -filter {MODE == Master}] {
            if {![regexp {m_axi_gmem(\d+)$} $pin -> bundle]} {
                error "trilevel: $pin is not an m_axi_gmem<n> port"
            }
            lappend masters([expr {$bundle % $hp_ports}]) $pin
        }
    }
    for {set n 0} {$n < $hp_ports} {incr n} {
        if {[llength $masters($n)] == 0} { continue }
        set sc axi_hp$n
        create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect $sc
        set_property -dict [list CONFIG.NUM_SI [llength $masters($n)] CONFIG.NUM_MI {1}] [get_bd_cells $sc]
        connect_bd_net $clk [get_bd_pins $sc/aclk]
        connect_bd_net $rstn [get_bd_pins $sc/aresetn]
        set s 0
        foreach pin $masters($n) {
            connect_bd_intf_net $pin [get_bd_intf_pins $sc/[format S%02d_AXI $s]]
            incr s
        }
        connect_bd_intf_net [get_bd_intf_pins $sc/M00_AXI] [get_bd_intf_pins zynq_ultra_ps_e_0/S_AXI_HP${n}_FPD]
    }

    # --- Interrupts: kernel i drives bit i of pl_ps_irq0.
    create_bd_cell -type ip -vlnv xilinx.com:ip:xlconcat irq_concat
    set_property -dict [list CONFIG.NUM_PORTS $n_kernels] [get_bd_cells irq_concat]
    set i 0
    foreach k $kernels {
        connect_bd_net [get_bd_pins [trilevel::instance $k]/interrupt] [get_bd_pins irq_concat/In$i]
        incr i
    }
    connect_bd_net [get_bd_pins irq_concat/dout] [get_bd_pins zynq_ultra_ps_e_0/pl_ps_irq0]

    # --- Address map: fixed AXI-Lite windows (the drivers check them), DDR for every m_axi space.
    set i 0
    foreach k $kernels {
        set offset [format 0x%08X [expr {$ctrl_base + $i * $ctrl_stride}]]
        assign_bd_address -offset $offset -range $ctrl_range \
            -target_address_space [get_bd_addr_spaces zynq_ultra_ps_e_0/Data] \
            [get_bd_addr_segs [trilevel::instance $k]/s_axi_control/Reg] -force
        incr i
    }
    assign_bd_address

    validate_bd_design
    save_bd_design
}
