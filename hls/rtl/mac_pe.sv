// One processing element of mac_array: a signed 16x16 multiply-accumulate (one DSP48E2).
// Operand a and the tile flags move right, operand b moves down, one PE per cycle of `en`.
// `first` restarts the accumulation, `last` copies the finished sum into `res`, where it stays
// until the next tile's `last` (the array drains it meanwhile).
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
    input  logic                    first_in,
    input  logic                    last_in,
    output logic signed [15:0]      a_out,
    output logic signed [15:0]      b_out,
    output logic                    v_out,
    output logic                    first_out,
    output logic                    last_out,
    output logic signed [ACC_W-1:0] res
);
    logic signed [ACC_W-1:0] acc;

    always_ff @(posedge clk) begin
        if (rst) begin
            v_out <= 1'b0;
            first_out <= 1'b0;
            last_out <= 1'b0;
        end else if (en) begin
            v_out <= v_in;
            first_out <= first_in;
            last_out <= last_in;
        end
    end

    always_ff @(posedge clk) begin
        if (en) begin
            a_out <= a_in;
            b_out <= b_in;
            if (v_in) begin   // the multiply-add inside the enabled update: an idle PE evaluates nothing
                logic signed [31:0] prod;
                logic signed [ACC_W-1:0] sum;
                prod = a_in * b_in;
                sum = (first_in ? '0 : acc) + ACC_W'(prod);
                acc <= sum;
                if (last_in) res <= sum;
            end
        end
    end
endmodule
