// Small distributed (LUT) RAM of the engine's compute units: N words of W bits, one synchronous write port
// (we / waddr / wdata, lands at the clock edge) and NRD asynchronous read ports, rdata[p] = ram[raddr[p]]
// in the same cycle (a read of the address being written returns the old word, as a flip-flop array does).
// Written as the plain inference template so that Yosys maps it to UltraScale+ LUT RAM (RAM64M / RAM32M /
// RAM64X1D ..., synth_report.py synthesizes it on its own, without -mem2reg) and Verilator keeps it one
// array. Ports are packed vectors: port p is raddr[p*AW +: AW] / rdata[p*W +: W].
`timescale 1ns / 1ps
module engine_lutram #(
    parameter int W = 16,                       // word width
    parameter int N = 64,                       // words (>= 2)
    parameter int NRD = 1,                      // asynchronous read ports
    parameter int AW = N > 1 ? $clog2(N) : 1    // address width (derived, leave at the default)
) (
    input  logic              clk,
    input  logic              we,
    input  logic [AW-1:0]     waddr,
    input  logic [W-1:0]      wdata,
    input  logic [NRD*AW-1:0] raddr,
    output logic [NRD*W-1:0]  rdata
);
    logic [W-1:0] ram [N];

    always_ff @(posedge clk) begin
        if (we) ram[waddr] <= wdata;
    end

    for (genvar p = 0; p < NRD; p++) begin : g_rd
        assign rdata[p*W +: W] = ram[raddr[p*AW +: AW]];
    end
endmodule
