// One processing element of mac_array: a signed 16x16 multiply-accumulate (one DSP48E2).
// Operand a and the tile flags move right, operand b moves down, one PE per cycle of `en`.
// `last` copies the finished sum into `res`, where it stays until the next tile's `last` (the array
// drains it meanwhile), and clears the accumulator, so every tile starts from 0: callers end every
// tile with `last` (mac_array and engine_gemm do; a reset clears it too). The clear is the
// flip-flops' synchronous reset, so the fabric adder needs no operand mux (Yosys: 51 LUT per PE
// instead of 98).
`timescale 1ns / 1ps
module mac_pe #(
    parameter int ACC_W = 48
) (
    input  logic                    clk,
    input  logic                    rst,
    input  logic                    en,
    input  logic signed [15:0]      a_in,
    input  logic signed [15:0]      b_in,
    input  logic                    v_in,
    input  logic                    last_in,
    output logic signed [15:0]      a_out,
    output logic signed [15:0]      b_out,
    output logic                    v_out,
    output logic                    last_out,
    output logic signed [ACC_W-1:0] res
);
    logic signed [ACC_W-1:0] acc;

    always_ff @(posedge clk) begin
        if (rst) begin
            v_out <= 1'b0;
            last_out <= 1'b0;
        end else if (en) begin
            v_out <= v_in;
            last_out <= last_in;
        end
    end

    always_ff @(posedge clk) begin
        if (en) begin
            a_out <= a_in;
            b_out <= b_in;
        end
    end

    // the multiply-add only inside the enabled updates: an idle PE evaluates nothing
    always_ff @(posedge clk) begin
        if (rst || (en && v_in && last_in)) acc <= '0;
        else if (en && v_in) acc <= acc + ACC_W'(a_in * b_in);
    end
    always_ff @(posedge clk) if (en && v_in && last_in) res <= acc + ACC_W'(a_in * b_in);
endmodule
