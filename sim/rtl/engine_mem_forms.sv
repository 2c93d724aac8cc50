// Test-only wrapper (sim/test_engine_mem_forms.py): engine_mem's synthesized form (SIM_FORM 0: the
// region RAMs, rotate networks and pick trees Yosys maps) and its simulation form (SIM_FORM 1: an element
// array) side by side on the same requests, each with its own clock enable (ce = done, as in engine_top).
`timescale 1ns / 1ps
module engine_mem_forms #(
    parameter int EW = 16,
    parameter int LANES = 8,
    parameter int DEPTH = 1536,
    parameter int NR = 3,
    parameter int NW = 2,
    parameter int AW = 12,
    parameter int REGION_ROWS = 64,
    parameter logic [63:0] RD_LANES = '0,
    parameter logic [63:0] WR_LANES = '0
) (
    input  logic                   clk,
    input  logic                   rst,
    input  logic [NW-1:0]          we,
    input  logic [NW*AW-1:0]       waddr,
    input  logic [NR*AW-1:0]       raddr,
    input  logic [NW*LANES-1:0]    wmask,
    input  logic [NW*LANES*EW-1:0] wdata,
    input  logic [NR-1:0]          re,
    output logic                   done_rtl,
    output logic                   done_sim,
    output logic [NR*LANES*EW-1:0] rdata_rtl,
    output logic [NR*LANES*EW-1:0] rdata_sim
);
    engine_mem #(.EW(EW), .LANES(LANES), .DEPTH(DEPTH), .NR(NR), .NW(NW), .AW(AW), .REGION_ROWS(REGION_ROWS),
                 .RD_LANES(RD_LANES), .WR_LANES(WR_LANES), .SIM_FORM(1'b0)) u_rtl (
        .clk(clk), .rst(rst), .ce(done_rtl), .done(done_rtl), .we(we), .waddr(waddr), .raddr(raddr),
        .wmask(wmask), .wdata(wdata), .re(re), .rdata(rdata_rtl)
    );
    engine_mem #(.EW(EW), .LANES(LANES), .DEPTH(DEPTH), .NR(NR), .NW(NW), .AW(AW), .REGION_ROWS(REGION_ROWS),
                 .RD_LANES(RD_LANES), .WR_LANES(WR_LANES), .SIM_FORM(1'b1)) u_sim (
        .clk(clk), .rst(rst), .ce(done_sim), .done(done_sim), .we(we), .waddr(waddr), .raddr(raddr),
        .wmask(wmask), .wdata(wdata), .re(re), .rdata(rdata_sim)
    );
endmodule
