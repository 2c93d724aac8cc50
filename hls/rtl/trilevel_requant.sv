// Requantize one accumulator to int16 (docs/numerics.md 1.2, 1.3), pipelined: LATENCY = 4 cycles
// of `en`. mode 0 = round half to even, mode 1 = stochastic rounding with hash32(seed, index).
// `shift` is signed (left shift when <= 0); any shift in [-128, 127] is exact for an ACC_W-bit
// signed accumulator (ACC_W in [34, 64]). `q` is saturated to [-32768, 32767].
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

    // Stages 1-3: the counter-based hash (two 32x32 multiplies mod 2**32, one per stage).
    logic [31:0] x0, x1, x2;
    logic signed [ACC_W-1:0] acc1, acc2, acc3;
    logic signed [7:0] sh1, sh2, sh3;
    logic md1, md2, md3;

    always_ff @(posedge clk) begin
        if (en) begin
            x0 <= seed ^ (index * 32'h9E3779B9);
            x1 <= (x0 ^ (x0 >> 16)) * 32'h21F0AAAD;
            x2 <= (x1 ^ (x1 >> 15)) * 32'h735A2D97;
            acc1 <= acc;    acc2 <= acc1;  acc3 <= acc2;
            sh1 <= shift;   sh2 <= sh1;    sh3 <= sh2;
            md1 <= mode;    md2 <= md1;    md3 <= md2;
        end
    end

    // Stage 4: round and saturate, in ACC_W-bit arithmetic (no intermediate needs more: see below).
    function automatic logic signed [15:0] sat16(input logic signed [ACC_W-1:0] v);
        if (v > 32767) sat16 = 16'sh7FFF;
        else if (v < -32768) sat16 = 16'sh8000;
        else sat16 = v[15:0];
    endfunction

    // Evaluated in the enabled register update, so an idle requantizer (en low) costs nothing.
    function automatic logic signed [15:0] round_sat(input logic [31:0] x, input logic signed [ACC_W-1:0] a,
                                                     input logic signed [7:0] sh, input logic md);
        logic [31:0] hash;
        logic signed [ACC_W-1:0] q_floor, trunc;
        logic [ACC_W-1:0] rem, half;
        logic [31:0] low;
        logic [32:0] carry;
        logic [7:0] s_left, s_right, s_hi, s_lo;
        hash = x ^ (x >> 15);
        s_left = 8'(-sh);
        s_right = 8'(sh);
        if (sh <= 0) begin
            // Exact left shift: a value outside int16, or nonzero and shifted by >= 16, saturates;
            // otherwise |acc| < 2**15 and the shifted value (< 2**31) fits.
            if (a == 0) round_sat = 16'sd0;
            else if (s_left >= 16 || a > 32767 || a < -32768) round_sat = a < 0 ? 16'sh8000 : 16'sh7FFF;
            else round_sat = sat16(a <<< s_left);
        end else if (!md) begin
            // Round half to even; |acc| <= 2**(ACC_W-1) rounds to 0 once shift >= ACC_W. The floor
            // is below 2**(ACC_W-2), so adding the rounding bit cannot overflow.
            if (s_right >= 8'(ACC_W)) round_sat = 16'sd0;
            else begin
                q_floor = a >>> s_right;
                rem = ACC_W'(a) & ((ACC_W'(1) << s_right) - 1);
                half = ACC_W'(1) << (s_right - 1);
                round_sat = sat16(q_floor + ACC_W'((rem > half || (rem == half && q_floor[0])) ? 1 : 0));
            end
        end else begin
            // Stochastic: floor((acc + r) / 2**s), r = hash & (2**s - 1) for s <= 32, hash << (s - 32)
            // beyond, i.e. floor((t + r') / 2**lo) with t = floor(acc / 2**hi), r' = hash & (2**lo - 1),
            // hi + lo = s, 1 <= lo <= 32; split as floor(t / 2**lo) + carry, carry = bit lo of the
            // 33-bit sum (t mod 2**lo) + r', so nothing exceeds ACC_W bits.
            s_hi = s_right > 32 ? s_right - 32 : 8'd0;
            s_lo = s_right > 32 ? 8'd32 : s_right;
            trunc = s_hi >= 8'(ACC_W) ? (a < 0 ? -1 : 0) : (a >>> s_hi);
            low = 32'((33'd1 << s_lo) - 33'd1);
            carry = {1'b0, trunc[31:0] & low} + {1'b0, hash & low};
            trunc = trunc >>> s_lo;
            round_sat = sat16(trunc + $signed(ACC_W'(carry[s_lo[5:0]])));
        end
    endfunction

    always_ff @(posedge clk) if (en) q <= round_sat(x2, acc3, sh3, md3);
endmodule
