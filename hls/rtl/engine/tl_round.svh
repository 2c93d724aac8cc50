// Roundings shared by the engine's units (included inside a module body).

// v * 2**-s rounded half to even, for an int16 v and s >= 1: floor((v + 2**(s-1) - 1 + bit s of v) / 2**s)
// in 18 bits (as trilevel_requant rounds RNE), which fits 16 bits for s <= 15; 0 for every s >= 16
// (|v| <= 2**15). Equal to trilevel_requant's RNE of v at shift s, without its 64-bit datapath.
function automatic logic signed [15:0] rne_right16(input logic signed [15:0] v, input logic signed [7:0] s);
    logic signed [17:0] x;
    logic [3:0] r;
    r = 4'(s);
    x = 18'(v) + 18'((18'd1 << r) >> 1) - 18'd1 + 18'(v[r]);
    for (int b = 3; b >= 0; b--) if (r[b]) x = x >>> (1 << b);
    rne_right16 = s >= 8'sd16 ? '0 : 16'(x);
endfunction

// v * 2**k for an int16 v and k = 0..63, mod 2**64 (exact for the k <= 47 the callers' checks allow): one
// 16 x 17-bit product by 2**(k mod 16), which maps to a DSP48E2, then whole 16-bit steps, instead of six
// variable stages of up to 64 bits (Yosys, 16 lanes: ~1.0k LUT + 16 DSP48E2 instead of ~6.1k LUT + 5.1k MUXF).
function automatic logic signed [63:0] shl16(input logic signed [15:0] v, input logic [5:0] k);
    logic signed [32:0] p;
    p = 33'(v) * 33'($signed({1'b0, 16'(16'd1 << k[3:0])}));
    shl16 = 64'(p);
    if (k[5]) shl16 = shl16 <<< 32;
    if (k[4]) shl16 = shl16 <<< 16;
endfunction
