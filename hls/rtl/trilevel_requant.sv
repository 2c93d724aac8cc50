// Requantize one accumulator to int16 (docs/numerics.md 1.2, 1.3), pipelined: LATENCY = 4 cycles
// of `en`. mode 0 = round half to even, mode 1 = stochastic rounding with hash32(seed, index).
// `shift` is signed (left shift when <= 0). Exact in the reference's domain: shift <= 62
// (fixed.MAX_SHIFT; callers check it) and |acc| < 2**62. `q` is saturated to [-32768, 32767].
//
// Both roundings share one adder and one right shifter: q = (acc + addend + cin) >>> s with
//   RNE: addend = 2**(s-1) - 1, cin = bit s of acc (round half to even, no remainder compare);
//   SR:  addend = hash & (2**s - 1) for s <= 32, hash << (s - 32) beyond; cin = 0.
// |acc + addend| < 2**63, so the 64-bit sum never overflows.
`timescale 1ns / 1ps
module trilevel_requant #(
    parameter int ACC_W = 48
) (
    input  logic                    clk,
    input  logic                    en,
    input  logic signed [ACC_W-1:0] acc,
    input  logic signed [7:0]       shift,
    input  logic                    mode,
    input  logic [31:0]             seed,
    input  logic [31:0]             index,
    output logic signed [15:0]      q
);

    function automatic logic signed [15:0] sat16(input logic signed [63:0] v);
        if (v > 64'sd32767) sat16 = 16'sh7FFF;
        else if (v < -64'sd32768) sat16 = 16'sh8000;
        else sat16 = v[15:0];
    endfunction

    // Left shift (shift <= 0): |acc| >= 2**15 or a shift beyond 16 saturates, so clip acc to 17
    // bits and the shift to 17 first (as the reference does); the shifted value fits 35 bits.
    function automatic logic signed [15:0] left_sat(input logic signed [63:0] a, input logic signed [7:0] sh);
        logic signed [34:0] v;
        logic [8:0] n;
        n = 9'(-$signed({sh[7], sh}));
        v = a > 64'sd32768 ? 35'sd32768 : a < -64'sd32768 ? -35'sd32768 : 35'(a);
        left_sat = sat16(64'(v <<< (n > 9'd17 ? 5'd17 : 5'(n))));
    endfunction

    function automatic logic [63:0] low_mask(input logic [6:0] bits);   // 2**bits - 1, bits <= 64
        low_mask = bits >= 7'd64 ? '1 : (64'd1 << bits) - 64'd1;
    endfunction

    // Stages 1-3: the counter-based hash (two 32x32 multiplies mod 2**32, one per stage); the left
    // shift result at stage 1; the shift-only terms of the shared rounding at stage 3.
    logic [31:0] x0, x1, x2;
    logic signed [63:0] acc1, acc2, acc3;
    logic signed [7:0] sh1, sh2;
    logic md1, md2, md3;
    logic signed [15:0] lq1, lq2, lq3;     // the left-shift result
    logic left3;                           // shift <= 0
    logic [5:0] rs3;                       // right shift, 1..62
    logic [4:0] hs3;                       // SR: hash << hs3 (s - 32 beyond 32)
    logic [63:0] hmask3;                   // SR: 2**s - 1
    logic [63:0] rne3;                     // RNE: 2**(s-1) - 1 (0 for SR)
    logic cin3;                            // RNE: bit s of acc

    always_ff @(posedge clk) begin
        if (en) begin
            x0 <= seed ^ (index * 32'h9E3779B9);
            x1 <= (x0 ^ (x0 >> 16)) * 32'h21F0AAAD;
            x2 <= (x1 ^ (x1 >> 15)) * 32'h735A2D97;
            acc1 <= 64'(acc);  acc2 <= acc1;  acc3 <= acc2;
            sh1 <= shift;      sh2 <= sh1;
            md1 <= mode;       md2 <= md1;    md3 <= md2;
            lq1 <= left_sat(64'(acc), shift);
            lq2 <= lq1;        lq3 <= lq2;
            left3 <= sh2 <= 8'sd0;
            rs3 <= sh2 <= 8'sd0 ? 6'd1 : 6'(sh2);
            hs3 <= sh2 > 8'sd32 ? 5'(sh2 - 8'sd32) : 5'd0;
            hmask3 <= low_mask(sh2 <= 8'sd0 ? 7'd1 : 7'(sh2));
            rne3 <= md2 || sh2 <= 8'sd0 ? 64'd0 : low_mask(7'(sh2 - 8'sd1));
            cin3 <= !md2 && sh2 > 8'sd0 && acc2[6'(sh2)];
        end
    end

    // Stage 4: the shared add, shift and saturate, in the enabled register update (an idle
    // requantizer evaluates nothing).
    function automatic logic signed [15:0] round_sat(input logic [31:0] x, input logic signed [63:0] a,
                                                     input logic sr, input logic [4:0] hs, input logic [63:0] hmask,
                                                     input logic [63:0] rne, input logic cin, input logic [5:0] rs);
        logic [31:0] hash;
        logic [63:0] addend;
        logic signed [63:0] sum;
        hash = x ^ (x >> 15);
        addend = sr ? (64'(hash) << hs) & hmask : rne;
        sum = a + $signed(addend) + 64'(cin);
        round_sat = sat16(sum >>> rs);
    endfunction

    always_ff @(posedge clk) if (en) q <= left3 ? lq3 : round_sat(x2, acc3, md3, hs3, hmask3, rne3, cin3, rs3);
endmodule
