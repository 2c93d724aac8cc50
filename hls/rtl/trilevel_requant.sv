// Requantize one accumulator to int16 (docs/numerics.md 1.2, 1.3), pipelined: LATENCY = 4 cycles
// of `en`. mode 0 = round half to even, mode 1 = stochastic rounding with hash32(seed, index).
// SR = 0 builds the round-half-to-even-only requantizer (for callers whose mode is constant 0): mode
// must be 0, seed and index_k are ignored, no hash and no SR addend are built. Same cycles and results.
// `shift` is signed (left shift when <= 0). Exact in the reference's domain: shift <= 62
// (fixed.MAX_SHIFT; callers check it) and |acc| < 2**62. `q` is saturated to [-32768, 32767].
//
// Both roundings share one adder and one right shifter: q = (acc + addend + cin) >>> s with
//   RNE: addend = 2**(s-1) - 1, cin = bit s of acc (round half to even, no remainder compare);
//   SR:  addend = hash & (2**s - 1) for s <= 32, hash << (s - 32) beyond; cin = 0.
// |acc + addend| < 2**63, so the 64-bit sum never overflows.
// The stage 1-3 decode of (shift, mode) is trilevel_requant_decode (its own file); EXT_DECODE = 1 takes it from
// `dec_in` instead, so that lanes given the same shift and mode in the same cycles (a GEMM row, a VEC or
// softmax vector) share one decode (engine_gemm, engine_vec, engine_softmax).
`timescale 1ns / 1ps
module trilevel_requant #(
    parameter int ACC_W = 48,
    parameter bit SR = 1'b1,                 // 0: RNE only (mode must be 0)
    parameter bit EXT_DECODE = 1'b0          // 1: the decode comes from dec_in (a shared trilevel_requant_decode)
) (
    input  logic                    clk,
    input  logic                    en,
    input  logic signed [ACC_W-1:0] acc,
    input  logic signed [7:0]       shift,
    /* verilator lint_off UNUSEDSIGNAL */
    input  logic                    mode,      // (EXT_DECODE: in dec_in)
    input  logic [84:0]             dec_in,    // EXT_DECODE: the group's trilevel_requant_decode `dec`
    /* verilator lint_on UNUSEDSIGNAL */
    input  logic [31:0]             seed,
    input  logic [31:0]             index_k,   // index * 32'h9E3779B9 mod 2**32
    output logic signed [15:0]      q
);

    // The shifters are written as log2 stages of constant shifts: Yosys maps a variable shift to
    // wide mux trees (MUXF7/F8), the stages need a fraction of the LUTs; Verilator still sees word ops.
    function automatic logic signed [63:0] sra64(input logic signed [63:0] v, input logic [5:0] s);
        sra64 = v;
        for (int k = 5; k >= 0; k--) if (s[k]) sra64 = sra64 >>> (1 << k);
    endfunction

    // Left shift (shift <= 0): as the reference, acc beyond int16, or nonzero and shifted by >= 16,
    // saturates; otherwise the int16 value shifted by 0..15 fits 31 bits.
    function automatic logic signed [15:0] left_sat(input logic signed [63:0] a, input logic signed [7:0] sh);
        logic [8:0] n;
        logic signed [31:0] v;
        logic big;
        n = 9'(-$signed({sh[7], sh}));
        big = a[63:15] != {49{a[63]}};
        v = 32'($signed(a[15:0]));
        for (int k = 3; k >= 0; k--) if (n[k]) v = v <<< (1 << k);
        if (big || (n >= 9'd16 && a[15:0] != '0)) left_sat = a[63] ? 16'sh8000 : 16'sh7FFF;
        else if (v[31:15] != {17{v[31]}}) left_sat = v[31] ? 16'sh8000 : 16'sh7FFF;
        else left_sat = v[15:0];
    endfunction

    // Stages 1-3: the counter-based hash (the caller's index * K, then two 32x32 multiplies mod 2**32); the left
    // shift result at stage 1; RNE's carry bit at stage 3; the decode of (shift, mode) beside them.
    logic [84:0] dec;
    if (EXT_DECODE) begin : g_ext
        assign dec = dec_in;
    end else begin : g_dec
        trilevel_requant_decode #(.SR(SR)) u_dec (.clk(clk), .en(en), .shift(shift), .mode(mode), .dec(dec));
    end
    wire [5:0] sh2 = dec[84:79];
    wire md2 = dec[78], md3 = dec[77], left3 = dec[76];
    wire [5:0] rs3 = dec[75:70];
    wire [4:0] hs3 = dec[69:65];
    wire [64:0] below3 = dec[64:0];
    logic [31:0] x0, x1, x2;
    logic signed [63:0] acc1, acc2, acc3;
    logic signed [15:0] lq1, lq2, lq3;     // the left-shift result
    logic cin3;                            // RNE: bit s of acc

    always_ff @(posedge clk) begin
        if (en) begin
            x0 <= SR ? seed ^ index_k : '0;
            x1 <= SR ? (x0 ^ (x0 >> 16)) * 32'h21F0AAAD : '0;
            x2 <= SR ? (x1 ^ (x1 >> 15)) * 32'h735A2D97 : '0;
            acc1 <= 64'(acc);  acc2 <= acc1;  acc3 <= acc2;
            lq1 <= left_sat(64'(acc), shift);
            lq2 <= lq1;        lq3 <= lq2;
            cin3 <= !md2 && acc2[sh2];
        end
    end

    // Stage 4: the shared add, shift and saturate, in the enabled register update (an idle
    // requantizer evaluates nothing). Saturation looks at the sum: the shifted value fits int16
    // iff the sum's bits from s + 15 up all equal its sign.
    function automatic logic signed [15:0] round_sat(input logic [31:0] x, input logic signed [63:0] a,
                                                     input logic sr, input logic [4:0] hs, input logic [64:0] below,
                                                     input logic cin, input logic [5:0] rs);
        logic [31:0] hash;
        logic [63:0] hsh, addend, wide;
        logic signed [63:0] sum;
        /* verilator lint_off UNUSEDSIGNAL */
        logic signed [63:0] shifted;   // the bits above 15 are the saturation test's
        /* verilator lint_on UNUSEDSIGNAL */
        hash = x ^ (x >> 15);
        hsh = 64'(hash);
        for (int k = 4; k >= 0; k--) if (hs[k]) hsh = hsh << (1 << k);
        for (int i = 0; i < 64; i++) addend[i] = sr ? hsh[i] && below[i] : below[i + 1];
        sum = a + $signed(addend) + 64'(cin);
        for (int i = 0; i < 64; i++) wide[i] = i >= 15 && !below[i - 15 < 0 ? 0 : i - 15] && (sum[i] != sum[63]);
        shifted = sra64(sum, rs);
        round_sat = wide != '0 ? (sum[63] ? 16'sh8000 : 16'sh7FFF) : shifted[15:0];
    endfunction

    always_ff @(posedge clk) if (en) q <= left3 ? lq3 : round_sat(x2, acc3, md3, hs3, below3, cin3, rs3);
endmodule
