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
    localparam int SUM_W = ACC_W + 2;

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

    // Stage 4: round and saturate.
    function automatic logic signed [15:0] sat16(input logic signed [SUM_W-1:0] v);
        if (v > 32767) sat16 = 16'sh7FFF;
        else if (v < -32768) sat16 = 16'sh8000;
        else sat16 = v[15:0];
    endfunction

    logic [31:0] hash;
    logic signed [SUM_W-1:0] wide, q_floor, rounded, trunc, hsum;
    logic [SUM_W-1:0] rem, half, low_mask;
    logic [7:0] s_left, s_right, s_sr_hi, s_sr_lo;
    logic signed [15:0] q_next;

    always_comb begin
        hash = x2 ^ (x2 >> 15);
        wide = SUM_W'(acc3);
        s_left = 8'(-sh3);
        s_right = 8'(sh3);
        // Defaults keep every variable assigned on every path.
        q_floor = '0; rounded = '0; trunc = '0; hsum = '0; rem = '0; half = '0; low_mask = '0;
        s_sr_hi = '0; s_sr_lo = '0;
        if (sh3 <= 0) begin
            // Exact left shift: a value outside int16, or nonzero and shifted by >= 16, saturates;
            // otherwise |acc| < 2**15 and the shifted value fits SUM_W bits.
            if (acc3 == 0) q_next = 16'sd0;
            else if (s_left >= 16 || acc3 > 32767 || acc3 < -32768) q_next = acc3 < 0 ? 16'sh8000 : 16'sh7FFF;
            else q_next = sat16(wide <<< s_left);
        end else if (!md3) begin
            // Round half to even; |acc| <= 2**(ACC_W-1) rounds to 0 once shift >= ACC_W.
            if (s_right >= 8'(ACC_W)) q_next = 16'sd0;
            else begin
                q_floor = wide >>> s_right;
                low_mask = (SUM_W'(1) << s_right) - 1;
                rem = wide & low_mask;
                half = SUM_W'(1) << (s_right - 1);
                rounded = q_floor + SUM_W'((rem > half || (rem == half && q_floor[0])) ? 1 : 0);
                q_next = sat16(rounded);
            end
        end else begin
            // Stochastic: floor((acc + r) / 2**s), r = hash & (2**s - 1) for s <= 32, hash << (s - 32)
            // beyond, computed exactly as floor((floor(acc / 2**(s-32)) + hash) / 2**32).
            s_sr_hi = s_right > 32 ? s_right - 32 : 8'd0;
            s_sr_lo = s_right > 32 ? 8'd32 : s_right;
            trunc = s_sr_hi >= 8'(SUM_W) ? (wide < 0 ? -1 : 0) : (wide >>> s_sr_hi);
            low_mask = (SUM_W'(1) << s_sr_lo) - 1;
            hsum = trunc + $signed(SUM_W'(hash) & low_mask);
            q_next = sat16(hsum >>> s_sr_lo);
        end
    end

    always_ff @(posedge clk) if (en) q <= q_next;
endmodule
