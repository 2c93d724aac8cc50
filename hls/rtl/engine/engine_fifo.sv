// Synchronous FIFO (show-ahead: dout is the head while !empty). `count` for credit logic.
`timescale 1ns / 1ps
module engine_fifo #(
    parameter int W = 8,
    parameter int DEPTH = 4
) (
    input  logic                     clk,
    input  logic                     rst,
    input  logic                     push,
    input  logic [W-1:0]             din,
    input  logic                     pop,
    output logic [W-1:0]             dout,
    output logic                     empty,
    output logic                     full,
    output logic [$clog2(DEPTH+1)-1:0] count
);
    localparam int PW = DEPTH > 1 ? $clog2(DEPTH) : 1;
    localparam int CW = $clog2(DEPTH + 1);
    logic [W-1:0] mem [DEPTH];
    logic [PW-1:0] wr, rd;
    assign empty = count == 0;
    assign full = count == CW'(DEPTH);
    assign dout = mem[rd];
    wire do_push = push && !full;
    wire do_pop = pop && !empty;
    always_ff @(posedge clk) begin
        if (rst) begin
            wr <= '0;
            rd <= '0;
            count <= '0;
        end else begin
            if (do_push) wr <= wr == PW'(DEPTH - 1) ? '0 : wr + 1'b1;
            if (do_pop) rd <= rd == PW'(DEPTH - 1) ? '0 : rd + 1'b1;
            count <= count + CW'(do_push) - CW'(do_pop);
        end
    end
    always_ff @(posedge clk) if (do_push) mem[wr] <= din;
endmodule
