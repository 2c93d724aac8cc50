// Stages 1-3 of trilevel_requant (trilevel_requant.sv) that depend on (shift, mode) only, registered with
// the same `en`, so that lanes given the same shift and mode in the same cycles share one:
// dec = {sh2 (its 6 low bits), md2, md3, left3, rs3 (6), hs3 (5), below3 (65)}, 85 bits.
`timescale 1ns / 1ps
module trilevel_requant_decode #(
    parameter bit SR = 1'b1
) (
    input  logic              clk,
    input  logic              en,
    input  logic signed [7:0] shift,
    input  logic              mode,
    output logic [84:0]       dec
);
    logic signed [7:0] sh1, sh2;
    logic md1, md2, md3;
    logic left3;                           // shift <= 0
    logic [5:0] rs3;                       // right shift s, 1..62
    logic [4:0] hs3;                       // SR: hash << hs3 (s - 32 beyond 32)
    logic [64:0] below3;                   // below3[i] = i < s: 2**s - 1, and 2**(s-1) - 1 one bit up
    always_ff @(posedge clk) begin
        if (en) begin
            sh1 <= shift;      sh2 <= sh1;
            md1 <= SR && mode; md2 <= md1;    md3 <= md2;
            left3 <= sh2 <= 8'sd0;
            rs3 <= 6'(sh2);
            hs3 <= SR && sh2 > 8'sd32 ? 5'(sh2 - 8'sd32) : 5'd0;
`ifdef TL_SIM_FORMS  // simulation form: the same thermometer as one word operation (per-bit: ~15 % of a cycle)
            below3 <= sh2 <= 8'sd0 ? '0 : ~({65{1'b1}} << 7'(sh2));
`else             // per-bit compares: Yosys maps these to fewer LUTs than the shift (784 vs 863 a lane)
            for (int i = 0; i <= 64; i++) below3[i] <= 8'(i) < 8'(sh2);
`endif
        end
    end
    assign dec = {6'(sh2), md2, md3, left3, rs3, hs3, below3};
endmodule
