// Vector/SFU unit of the engine (docs/engine.md "VEC"), bit-exact with trilevel.accel.fsim:
//   LN_FWD   per row: S1, S2 -> W = n S2 - S1^2 + eps -> (rsqrt, k) = RSQRT_LUT[W >> 2k];
//            XHAT = sat16(RNE((n x - S1) rsqrt, 20 + k - fh)) to E; Y = sat16(RNE(xhat gamma +
//            align(beta, shift2), shift)) to C; ACC[f_addr + i] = rsqrt | k << 32; statistic of Y.
//   LN_BWD   per row (rsqrt, k) from ACC[f_addr + i]; g = sat16(SR(dy gamma, shift, hash32(seed, 0)));
//            A = sum g, B = RNE(sum g xhat, fh); t = ((n g - A) << fh) - xhat B;
//            t_hat = sat16(SR(t, shift2, hash32(seed, 1))); dx = sat16(SR(t_hat rsqrt +
//            align(D, shift4 - k), shift3 + k, hash32(seed, 2))) to C; statistics to slot .. slot+2.
//   GELU_FWD y = sat16(RNE(x PHI_LUT[cell(x, imm)], shift)); GELU_BWD dx = sat16(SR(dy DGELU_LUT[cell(x, imm)],
//            shift, seed)); statistic.
//   COLSUM / COLDOT  ACC[f_addr + j] += sum_i A(i, j) (* B(i, j)), 48-bit range check of the total.
//   MASK     C(i, .) = 1 for i < imm, else 0 with 1 at the k entries of IDX[b_addr + (i - imm) b_stride + t].
// Every rounding of a wide value goes through trilevel_requant (A and C on the main path); the RNE
// right alignment of the int16 beta / residual is rne_right16 (tl_round.svh: the requantizer's RNE of
// an int16, in 18 bits), and LN_BWD's B = RNE(sum g xhat, fh) an internal unsaturated RNE (round_shift
// without saturation, which the requantizer does not provide).
//
// Datapath: row-sequential with V lanes (V = vec_lanes, <= SPM window lanes L and ACC lanes AL): V
// consecutive elements of a row per cycle through one window of each SPM port (COLSUM / COLDOT: V
// consecutive columns of a row, rows one per cycle; MASK's list entries one per cycle). A command runs
// as rows of passes; a pass issues one group of V elements per cycle and then drains its pipeline
// (stage 0 read address, stage 1 operands -> V requantizers A and B, stage 5 -> V requantizers C,
// stage 9 result; GELU: stage 1 table reads, stage 2 -> requantizers A, stage 6 result) as far as that
// pass still acts. Cycles (VEC_BUSY) for m rows of n elements,
// g = ceil(n / V): LN_FWD m (3g + 23) + 5, LN_BWD m (2g + 20) + 5, GELU_* m (g + 9) + 5, MASK m (g + 3) + 5
// plus k + 2 per list row, COLSUM / COLDOT g (m + 5) + 5 (measured in Verilator at V = 4).
// Errors exactly as fsim in its order: BAD_DIMS, BAD_SHIFT, SPM_RANGE (slots, operand ranges) before
// anything moves; while running LN_BWD's per-row BAD_SHIFT (shift3 + k, shift4 - k), MASK's list entry
// >= n (SPM_RANGE) and the COLSUM/COLDOT total outside 48 bits (ACC_RANGE). Memory written by a failing
// command is unspecified (as in fsim); the unit always ends with done or err_valid.
`timescale 1ns / 1ps
module engine_vec #(
    parameter int L = 8,                // SPM window lanes (lane 0 is used)
    parameter int AL = 4,               // ACC window lanes (lane 0 is used)
    parameter int SPM_ELEMS = 65536,
    parameter int ACC_ELEMS = 16384,
    parameter int IDX_ELEMS = 4096,
    parameter int STAT_SLOTS = 64,
    parameter int MAX_ROW = 256,         // longest MASK row
    parameter int MAX_DIM = 256,         // longest LayerNorm row (isa max_dim; the row buffers)
    parameter int V = 4,                // vector lanes (isa vec_lanes), V <= L and V <= AL
    parameter int MUTATE_ROUNDING = 0   // test only: GELU_BWD rounds RNE instead of SR
) (
    input  logic              clk,
    input  logic              rst,
    input  logic              ce,                  // clock enable (0: the memories are serving a port conflict, hold)
    input  logic              start,
    input  logic [511:0]      cmd,
    output logic              busy,
    output logic              done,
    output logic              err_valid,
    output logic [7:0]        err_code,
    output logic [23:0]       a_raddr,
    input  logic [L*16-1:0]   a_rdata,
    output logic [23:0]       b_raddr,
    input  logic [L*16-1:0]   b_rdata,
    output logic [23:0]       d_raddr,
    input  logic [L*16-1:0]   d_rdata,
    output logic [23:0]       e_raddr,
    input  logic [L*16-1:0]   e_rdata,
    output logic              c_we,
    output logic [23:0]       c_waddr,
    output logic [L-1:0]      c_wmask,
    output logic [L*16-1:0]   c_wdata,
    output logic [23:0]       acc_raddr,
    input  logic [AL*48-1:0]  acc_rdata,
    output logic              acc_we,
    output logic [23:0]       acc_waddr,
    output logic [AL-1:0]     acc_wmask,
    output logic [AL*48-1:0]  acc_wdata,
    output logic [23:0]       idx_raddr,
    input  logic [15:0]       idx_rdata,
    output logic              stat_we,
    output logic [5:0]        stat_slot,
    output logic [63:0]       stat_value
);
    /* verilator lint_off UNUSEDPARAM */
    `include "tl_isa.svh"
    /* verilator lint_on UNUSEDPARAM */
    `include "tl_vec_luts.svh"
    `include "tl_round.svh"

    localparam int JW = 17;
    localparam int NS = 9;                  // pipeline stages after issue

    // ------------------------------------------------------------------ command fields
    logic [511:0] c;
    wire [3:0] f_sub = c[TL_C_SUB_LSB +: 4];
    wire [15:0] f_m = c[TL_F_M_LSB +: 16];
    wire [15:0] f_n = c[TL_F_N_LSB +: 16];
    wire [15:0] f_k = c[TL_F_K_LSB +: 16];
    wire signed [7:0] f_shift = c[TL_F_SHIFT_LSB +: 8];
    wire signed [7:0] f_shift2 = c[TL_F_SHIFT2_LSB +: 8];
    wire signed [7:0] f_shift3 = c[TL_F_SHIFT3_LSB +: 8];
    wire signed [7:0] f_shift4 = c[TL_F_SHIFT4_LSB +: 8];
    wire [31:0] f_seed = c[TL_F_SEED_LSB +: 32];
    wire [31:0] f_ibase = c[TL_F_INDEX_BASE_LSB +: 32];
    wire [31:0] f_istride = c[TL_F_INDEX_STRIDE_LSB +: 32];
    wire [23:0] f_a = c[TL_F_A_ADDR_LSB +: 24];
    wire [15:0] f_as = c[TL_F_A_STRIDE_LSB +: 16];
    wire [23:0] f_b = c[TL_F_B_ADDR_LSB +: 24];
    wire [15:0] f_bs = c[TL_F_B_STRIDE_LSB +: 16];
    wire [23:0] f_c = c[TL_F_C_ADDR_LSB +: 24];
    wire [15:0] f_cs = c[TL_F_C_STRIDE_LSB +: 16];
    wire [23:0] f_d = c[TL_F_D_ADDR_LSB +: 24];
    wire [15:0] f_ds = c[TL_F_D_STRIDE_LSB +: 16];
    wire [23:0] f_e = c[TL_F_E_ADDR_LSB +: 24];
    wire [15:0] f_es = c[TL_F_E_STRIDE_LSB +: 16];
    wire [23:0] f_f = c[TL_F_F_ADDR_LSB +: 24];
    wire signed [31:0] f_imm = c[TL_F_IMM_LSB +: 32];
    wire f_bias = c[TL_C_BIAS_LSB];
    wire f_stat = c[TL_C_STAT_LSB];
    wire [5:0] f_slot = c[TL_C_SLOT_LSB +: 6];

    wire op_lnf = f_sub == TL_VEC_LN_FWD;
    wire op_lnb = f_sub == TL_VEC_LN_BWD;
    wire op_gf = f_sub == TL_VEC_GELU_FWD;
    wire op_gb = f_sub == TL_VEC_GELU_BWD;
    wire op_gelu = op_gf || op_gb;
    wire op_col = f_sub == TL_VEC_COLSUM || f_sub == TL_VEC_COLDOT;
    wire op_dot = f_sub == TL_VEC_COLDOT;
    wire op_mask = f_sub == TL_VEC_MASK;

    // ------------------------------------------------------------------ helpers
    // hash32 of docs/numerics.md 1.3 (the LN_BWD rounding points' seeds hash32(seed, p))
    function automatic logic [31:0] hash32(input logic [31:0] seed, input logic [31:0] index);
        logic [31:0] x;
        x = seed ^ (index * 32'h9E3779B9);
        x = (x ^ (x >> 16)) * 32'h21F0AAAD;
        x = (x ^ (x >> 15)) * 32'h735A2D97;
        hash32 = x ^ (x >> 15);
    endfunction
    // max |v| in output units: |v| >> s, or |v| << -s saturating at 2**63 - 1 (intref max_abs_out).
    // units(mag, s) is monotone non-decreasing in mag = |v| for a fixed s (the left shift is taken only
    // when mag < 2**t, and t + the shift = 63), and units(0, s) = 0: the max over lanes of the units is
    // the units of the lanes' largest |v|, so each statistic converts once.
    function automatic logic [63:0] magn(input logic signed [63:0] v);
        magn = v[63] ? 64'(-v) : 64'(v);
    endfunction
    function automatic logic [63:0] units(input logic [63:0] mag, input logic signed [8:0] s);
        if (!s[8]) units = mag >> 6'(s);
        else if ((mag >> 6'(9'sd63 + s)) != 0) units = 64'h7FFF_FFFF_FFFF_FFFF;
        else units = mag << 6'(-s);
    endfunction
    function automatic logic [63:0] umax(input logic [63:0] a, input logic [63:0] b);
        umax = b > a ? b : a;
    endfunction
    // last element of a rows x cols operand: base + (rows - 1) * stride + cols - 1
    function automatic logic [47:0] last2(input logic [23:0] base, input logic [15:0] rows,
                                          input logic [15:0] stride, input logic [15:0] cols);
        last2 = 48'(base) + 48'(rows - 16'd1) * 48'(stride) + 48'(cols) - 48'd1;
    endfunction
    function automatic logic bad_rq(input logic signed [7:0] s);     // requantizer shift -16..62
        bad_rq = s < -8'sd16 || s > 8'sd62;
    endfunction
    function automatic logic bad_al(input logic signed [7:0] s);     // alignment shift -47..62
        bad_al = s < -8'sd47 || s > 8'sd62;
    endfunction

    // ------------------------------------------------------------------ checks (fsim's order)
    wire spm_a = last2(f_a, f_m, f_as, f_n) >= 48'(SPM_ELEMS);
    wire spm_b_row = 48'(f_b) + 48'(f_n) - 48'd1 >= 48'(SPM_ELEMS);
    wire spm_b = last2(f_b, f_m, f_bs, f_n) >= 48'(SPM_ELEMS);
    wire spm_c = last2(f_c, f_m, f_cs, f_n) >= 48'(SPM_ELEMS);
    wire spm_d_row = 48'(f_d) + 48'(f_n) - 48'd1 >= 48'(SPM_ELEMS);
    wire spm_d = last2(f_d, f_m, f_ds, f_n) >= 48'(SPM_ELEMS);
    wire spm_e = last2(f_e, f_m, f_es, f_n) >= 48'(SPM_ELEMS);
    wire acc_fm = 48'(f_f) + 48'(f_m) - 48'd1 >= 48'(ACC_ELEMS);
    wire acc_fn = 48'(f_f) + 48'(f_n) - 48'd1 >= 48'(ACC_ELEMS);
    wire signed [32:0] list_rows = 33'($signed(f_m)) - 33'(f_imm);     // m - imm
    wire mask_lists = list_rows > 0;
    wire idx_bad = 48'(f_b) + 48'(16'(list_rows) - 16'd1) * 48'(f_bs) + 48'(f_k) - 48'd1 >= 48'(IDX_ELEMS);
    wire [6:0] slot_end = 7'(f_slot) + (op_lnb ? 7'd3 : 7'd1);
    wire slot_bad = f_stat && 32'(slot_end) > 32'(STAT_SLOTS);
    wire row_long = 32'(f_n) > 32'(MAX_ROW);
    wire dim_long = 32'(f_n) > 32'(MAX_DIM);
    logic [7:0] check_code;
    always_comb begin
        check_code = TL_ERR_NONE;
        if (f_m == 0 || f_n == 0) check_code = TL_ERR_BAD_DIMS;
        else if (op_lnf) begin
            if (dim_long) check_code = TL_ERR_BAD_DIMS;
            else if (bad_rq(f_shift) || bad_rq(f_shift4) || bad_al(f_shift2)) check_code = TL_ERR_BAD_SHIFT;
            else if (slot_bad || spm_a || spm_b_row || spm_d_row || spm_c || spm_e || acc_fm)
                check_code = TL_ERR_SPM_RANGE;
        end else if (op_lnb) begin
            if (dim_long) check_code = TL_ERR_BAD_DIMS;
            else if (bad_rq(f_shift) || bad_rq(f_shift2) || bad_rq(f_shift3) || (f_bias && bad_al(f_shift4)))
                check_code = TL_ERR_BAD_SHIFT;
            else if (slot_bad || spm_a || spm_b_row || spm_e || acc_fm || (f_bias && spm_d) || spm_c)
                check_code = TL_ERR_SPM_RANGE;
        end else if (op_gelu) begin
            if (bad_rq(f_shift)) check_code = TL_ERR_BAD_SHIFT;
            else if (slot_bad || spm_a || spm_c || (op_gb && spm_b)) check_code = TL_ERR_SPM_RANGE;
        end else if (op_col) begin
            if (spm_a || (op_dot && spm_b) || acc_fn) check_code = TL_ERR_SPM_RANGE;
        end else if (op_mask) begin
            if (f_imm < 0 || (mask_lists && (f_k == 0 || f_k > f_n)) || row_long) check_code = TL_ERR_BAD_DIMS;
            else if (spm_c || (mask_lists && idx_bad)) check_code = TL_ERR_SPM_RANGE;
        end else check_code = TL_ERR_RESERVED_BITS;     // dispatch refuses other subs already
    end

    // per-command constants
    // fh = ln_xhat_frac(n) = 15 - bit_length(isqrt(n - 1)); bit_length(isqrt(v)) = #{b : 4**b <= v}
    logic [3:0] fh_c;
    always_comb begin
        fh_c = 4'd15;
        for (int b = 0; b < 8; b++) if (32'(f_n) - 32'd1 >= (32'd1 << (2 * b))) fh_c = fh_c - 4'd1;
    end
    // eps term of ln_eps_term(n, shift4): n*n << e or >> -e, e = 2 min(shift4, 24) - 20
    wire signed [8:0] eps_e = 9'sd2 * (f_shift4 > 8'sd24 ? 9'sd24 : 9'(f_shift4)) - 9'sd20;
    wire [63:0] nn = 64'(f_n) * 64'(f_n);
    wire [63:0] eps_c = eps_e[8] ? nn >> 6'(-eps_e) : nn << 6'(eps_e);

    // ------------------------------------------------------------------ state
    localparam logic [3:0] S_IDLE = 4'd0, S_CHECK = 4'd1, S_ROW = 4'd2, S_ROWCHK = 4'd3, S_PASS = 4'd4,
                           S_CALC = 4'd5, S_ROWEND = 4'd6, S_STAT = 4'd7, S_END = 4'd8;
    logic [3:0] state;
    logic [1:0] pass;                 // pass within a row
    logic [2:0] calc;                 // step of S_CALC / S_STAT
    logic [15:0] row;                 // row i (first column of the group for COLSUM / COLDOT)
    logic [JW-1:0] j, plen;           // issue counter (first element of the group) and pass length
    logic [23:0] r_a, r_b, r_c, r_d, r_e, r_i;   // row bases
    logic [23:0] p_a, p_b;            // pass pointers of A and B (row-wise for COLSUM / COLDOT)
    logic [31:0] r_ib;                // SR index of the row's element 0
    logic [3:0] fh;
    logic [63:0] eps;
    logic [31:0] seed0, seed1, seed2;
    logic err_f;
    logic [7:0] err_c;

    // row statistics
    logic signed [31:0] s1;           // sum x (LN_FWD), sum g (LN_BWD)
    // sum x^2 (LN_FWD), sum g xhat (LN_BWD): n <= MAX_DIM < 2**16 products of two int16, |s2| < 2**46
    logic signed [47:0] s2;
    logic signed [63:0] w;
    logic [5:0] wlen;
    logic [4:0] kk;                   // LN_FWD k
    logic [11:0] widx;
    logic [31:0] rs;                  // rsqrt (LN_FWD: the LUT value, LN_BWD: ACC bits 31:0)
    logic signed [7:0] dx_sh, al_sh;  // LN_BWD shift3 + k, shift4 - k
    logic signed [47:0] bsum;         // LN_BWD B = RNE(s2, fh): |B| <= |s2| + 1 < 2**47
    logic signed [63:0] csum [V];     // COLSUM / COLDOT column sums of the group
    logic signed [47:0] cacc [V];     // their ACC values
    logic [63:0] st [3];              // statistics

    // Row buffers (LUT RAM), banked by lane: element js + l (js a multiple of V in the LayerNorm passes, the
    // only ones that write them or use what they read) is word js / V of lane l's bank, so no access needs a
    // rotation. xbuf: LN_FWD x, LN_BWD xhat (written at stage 1, read at stages 1 and 5); hbuf: LN_FWD xhat,
    // LN_BWD g (written at stage 5, read at stage 1).
    localparam int VB = $clog2(V);
    localparam int D = MAX_DIM / V;   // words per bank
    localparam int DW = D > 1 ? $clog2(D) : 1;
    if (V != (1 << VB) || D * V != MAX_DIM) begin : g_bad_size
        $error("engine_vec: V must be a power of two that divides MAX_DIM");
    end
    logic [V*32-1:0] xbuf_q;          // lane l: {xbuf at js[5], xbuf at js[1]}
    logic [V*16-1:0] hbuf_q;          // lane l: hbuf at js[1]

    // pipeline bookkeeping: stage s holds the group issued s cycles ago
    wire single = op_mask && pass == 2'd1;          // MASK list entries: one per cycle
    wire [JW-1:0] step = (single || op_col) ? JW'(1) : JW'(V);    // COLSUM / COLDOT: one row per cycle
    logic [NS:1] vld;
    logic [JW-1:0] js [1:NS];
    wire issue = state == S_PASS && j < plen && !err_f;
    // a pass ends once no element is in a stage that still acts in it (its last stage: 0 for MASK's fill,
    // 1 for sums / scatter, 5 for requantizer A results (GELU 6), 9 for requantizer C results); the elements still
    // in later stages are dropped then (they have no effect in this pass)
    logic [NS:1] need;
    always_comb begin
        logic [3:0] d;
        d = 4'd9;
        if (op_lnf) d = pass == 2'd0 ? 4'd1 : pass == 2'd1 ? 4'd5 : 4'd9;
        else if (op_lnb) d = pass == 2'd0 ? 4'd5 : 4'd9;
        else if (op_gelu) d = 4'd6;
        else if (op_col) d = 4'd1;
        else if (op_mask) d = pass == 2'd0 ? 4'd0 : 4'd1;
        for (int s = 1; s <= NS; s++) need[s] = 4'(s) <= d;
    end
    wire pass_end = !issue && (vld & need) == '0;
    logic [V-1:0] lv0, lv1, lv2, lv5, lv6, lv9;   // lane valid at stages 0, 1, 2, 5, 6, 9
    always_comb begin
        for (int l = 0; l < V; l++) begin
            lv0[l] = issue && j + JW'(l) < plen && (l == 0 || !single);
            lv1[l] = vld[1] && js[1] + JW'(l) < plen && (l == 0 || !single);
            lv2[l] = vld[2] && js[2] + JW'(l) < plen;
            lv5[l] = vld[5] && js[5] + JW'(l) < plen;
            lv6[l] = vld[6] && js[6] + JW'(l) < plen;
            lv9[l] = vld[9] && js[9] + JW'(l) < plen;
        end
    end

    // ------------------------------------------------------------------ stage 0: read addresses
    assign a_raddr = p_a;
    assign b_raddr = p_b;
    assign d_raddr = (op_lnf ? f_d : r_d) + 24'(j);
    assign e_raddr = r_e + 24'(j);
    assign idx_raddr = r_i + 24'(j);
    assign acc_raddr = f_f + 24'(row);

    // ------------------------------------------------------------------ stage 1: operands, per lane
    // GELU cell: clip(floor(x * 2**(7 - imm)), -1024, 1023) + 1024
    wire signed [32:0] gsh = 33'sd7 - 33'(f_imm);
    function automatic logic [10:0] gelu_cell(input logic signed [15:0] x, input logic signed [32:0] sh);
        logic signed [31:0] v;
        if (!sh[32]) begin
            if (x == 0) v = 32'sd0;
            else if (sh >= 33'sd11) v = x < 0 ? -32'sd1024 : 32'sd1023;
            else v = 32'(x) <<< 4'(sh);
        end else if (-sh >= 33'sd16) v = x < 0 ? -32'sd1 : 32'sd0;
        else v = 32'(x) >>> 4'(-sh);
        if (v < -32'sd1024) v = -32'sd1024;
        if (v > 32'sd1023) v = 32'sd1023;
        gelu_cell = 11'(v + 32'sd1024);
    endfunction
    wire signed [63:0] n64 = 64'($signed({1'b0, f_n}));
    wire signed [63:0] rs64 = 64'($signed({1'b0, rs}));

    logic signed [15:0] a1 [V], b1 [V], d1 [V], e1 [V], xb1 [V], hb1 [V], xb5 [V];
    logic signed [63:0] gelu_acc [V], g_acc [V], t_acc [V], xg1 [V];
    logic signed [63:0] qa_acc [V];
    // GELU reads its table at stage 1 into a register (a block RAM ROM per table and lane) and feeds
    // requantizer A at stage 2 (results at stage 6); the LayerNorm passes feed it at stage 1
    logic [16:0] phi2 [V];
    logic signed [17:0] dgelu2 [V];
    logic signed [15:0] a2 [V];
    logic [31:0] idxa [V], idx5 [V];        // hash32's index * K of the lanes (trilevel_requant index_k)
    wire [31:0] idxa_k = (r_ib + 32'(op_gelu ? js[2] : js[1])) * 32'h9E3779B9;
    wire [31:0] idx5_k = (r_ib + 32'(js[5])) * 32'h9E3779B9;
    always_comb begin
        for (int l = 0; l < V; l++) begin
            logic signed [17:0] lut;
            logic signed [33:0] nh, nx;
            a1[l] = a_rdata[l*16 +: 16];
            b1[l] = b_rdata[l*16 +: 16];
            d1[l] = d_rdata[l*16 +: 16];
            e1[l] = e_rdata[l*16 +: 16];
            xb1[l] = xbuf_q[l*32 +: 16];
            hb1[l] = hbuf_q[l*16 +: 16];
            xb5[l] = xbuf_q[l*32 + 16 +: 16];
            idxa[l] = idxa_k + 32'(l) * 32'h9E3779B9;   // (r_ib + js + l) * K: one base multiply per stage
            idx5[l] = idx5_k + 32'(l) * 32'h9E3779B9;
            lut = '0;
            nh = '0;
            nx = '0;
            gelu_acc[l] = '0;
            g_acc[l] = '0;
            t_acc[l] = '0;
            xg1[l] = '0;
            qa_acc[l] = '0;
            if (busy) begin                        // operand isolation: an idle unit computes nothing
                lut = op_gf ? 18'(phi2[l]) : dgelu2[l];
                gelu_acc[l] = 64'(a2[l]) * 64'(lut);
                g_acc[l] = 64'(a1[l]) * 64'(b1[l]);                              // dy gamma
                // n xhat - S1 and n x - S1 (n < 2**16, int16, 32-bit S1) fit 34 bits; xhat * B is 16 x 48
                nh = 34'(n64 * 64'(hb1[l])) - 34'(s1);
                nx = 34'(n64 * 64'(xb1[l])) - 34'(s1);
                t_acc[l] = (64'(nh) <<< fh) - 64'(xb1[l]) * 64'(bsum);
                xg1[l] = 64'(hb1[l]) * 64'(b1[l]);                               // xhat gamma
                if (op_lnf) qa_acc[l] = 64'(nx) * rs64;                           // (n x - S1) rsqrt
                else if (op_lnb && pass == 2'd0) qa_acc[l] = g_acc[l];
                else if (op_lnb) qa_acc[l] = t_acc[l];
                else qa_acc[l] = gelu_acc[l];
            end
        end
    end
    always_ff @(posedge clk) if (ce && busy) begin
        for (int l = 0; l < V; l++) begin
            logic [10:0] gc;
            gc = gelu_cell(op_gf ? a1[l] : b1[l], gsh);
            phi2[l] <= tl_phi_lut(gc);
            dgelu2[l] <= tl_dgelu_lut(gc);
            a2[l] <= a1[l];
        end
    end
    // requantizer A (stage 1 -> 5, GELU 2 -> 6): shift, mode and seed are per command / pass
    logic signed [7:0] qa_sh;
    logic qa_mode;
    logic [31:0] qa_seed;
    always_comb begin
        qa_sh = f_shift;
        qa_mode = 1'b0;
        qa_seed = f_seed;
        if (op_lnf) qa_sh = 8'sd20 + 8'(kk) - 8'(fh);
        else if (op_lnb && pass == 2'd0) begin
            qa_mode = 1'b1;
            qa_seed = seed0;
        end else if (op_lnb) begin
            qa_sh = f_shift2;
            qa_mode = 1'b1;
            qa_seed = seed1;
        end else if (op_gb) qa_mode = MUTATE_ROUNDING == 0;
    end
    wire signed [7:0] qb_sh = op_lnf ? f_shift2 : al_sh;
    wire signed [7:0] qc_sh = op_lnf ? f_shift : dx_sh;
    logic signed [15:0] qa [V], qb [V], qc [V];   // qb: the right-aligned beta / residual, with d_dl[3]
    logic signed [63:0] qc_acc [V], y_acc [V], dx_acc [V], d_al [V];
    logic signed [63:0] xg_dl [4][V];
    logic signed [15:0] d_dl [4][V];
    always_ff @(posedge clk) if (rst || ce) begin
        for (int l = 0; l < V; l++) begin
            xg_dl[0][l] <= xg1[l];
            d_dl[0][l] <= d1[l];
            for (int s = 1; s < 4; s++) begin
                xg_dl[s][l] <= xg_dl[s-1][l];
                d_dl[s][l] <= d_dl[s-1][l];
            end
            qb[l] <= rne_right16(d_dl[2][l], qb_sh);
        end
    end
    // row buffer banks: xbuf takes x (LN_FWD) / xhat (LN_BWD) of the group at stage 1 in pass 0, hbuf the
    // requantizer A results at stage 5 (LN_FWD pass 1, LN_BWD pass 0)
    wire [DW-1:0] w1 = DW'(js[1] >> VB);
    wire [DW-1:0] w5 = DW'(js[5] >> VB);
    wire buf_act = ce && !rst && state == S_PASS && !err_f;
    wire x_we = buf_act && vld[1] && (op_lnf || op_lnb) && pass == 2'd0;
    wire h_we = buf_act && vld[5] && ((op_lnf && pass == 2'd1) || (op_lnb && pass == 2'd0));
    for (genvar l = 0; l < V; l++) begin : g_bank
        engine_lutram #(.W(16), .N(D), .NRD(2)) u_x (
            .clk(clk), .we(x_we && lv1[l]), .waddr(w1), .wdata(op_lnf ? a1[l] : e1[l]),
            .raddr({w5, w1}), .rdata(xbuf_q[l*32 +: 32])
        );
        engine_lutram #(.W(16), .N(D), .NRD(1)) u_h (
            .clk(clk), .we(h_we && lv5[l]), .waddr(w5), .wdata(qa[l]), .raddr(w1), .rdata(hbuf_q[l*16 +: 16])
        );
    end

    // stage 5: beta / residual aligned (left shift exact, right shift RNE)
    always_comb begin
        for (int l = 0; l < V; l++) begin
            d_al[l] = '0;
            y_acc[l] = '0;
            dx_acc[l] = '0;
            qc_acc[l] = '0;
            if (busy) begin
                d_al[l] = qb_sh <= 0 ? shl16(d_dl[3][l], 6'(-qb_sh)) : 64'(qb[l]);
                y_acc[l] = xg_dl[3][l] + d_al[l];                                       // LN_FWD
                dx_acc[l] = 64'(qa[l]) * rs64 + (f_bias ? d_al[l] : 64'sd0);           // LN_BWD
                qc_acc[l] = op_lnf ? y_acc[l] : dx_acc[l];
            end
        end
    end
    logic [84:0] dec_a, dec_c;    // the common shift / mode decode of the A lanes and of the C lanes
    trilevel_requant_decode u_dec_a (.clk(clk), .en(ce && busy), .shift(qa_sh), .mode(qa_mode), .dec(dec_a));
    trilevel_requant_decode u_dec_c (.clk(clk), .en(ce && busy), .shift(qc_sh), .mode(op_lnb), .dec(dec_c));
    for (genvar l = 0; l < V; l++) begin : g_lane
        trilevel_requant #(.ACC_W(64), .EXT_DECODE(1'b1)) u_rq_a (
            .clk(clk), .en(ce && busy), .acc(qa_acc[l]), .shift(qa_sh), .mode(qa_mode), .dec_in(dec_a), .seed(qa_seed),
            .index_k(idxa[l]), .q(qa[l])
        );
        trilevel_requant #(.ACC_W(64), .EXT_DECODE(1'b1)) u_rq_c (
            .clk(clk), .en(ce && busy), .acc(qc_acc[l]), .shift(qc_sh), .mode(op_lnb), .dec_in(dec_c), .seed(seed2),
            .index_k(idx5[l]),
            .q(qc[l])
        );
    end

    // statistics of this cycle: max over the valid lanes (of |v|, then in output units once). A pass has at
    // most two: the early one u_a (LN_BWD pass 0 g and pass 1 t at stage 1, GELU at stage 2) and the late
    // one u_b (LN_FWD Y, LN_BWD dx at stage 5), so two max trees serve the four statistics.
    logic [63:0] u_a, u_b;
    always_comb begin
        logic [63:0] m_a, m_b;
        m_a = '0;
        m_b = '0;
        for (int l = 0; l < V; l++) begin
            if (op_gelu ? lv2[l] : lv1[l])
                m_a = umax(m_a, magn(op_gelu ? gelu_acc[l] : pass == 2'd0 ? g_acc[l] : t_acc[l]));
            if (lv5[l]) m_b = umax(m_b, magn(op_lnf ? y_acc[l] : dx_acc[l]));
        end
        u_a = units(m_a, 9'(op_lnb && pass == 2'd1 ? f_shift2 : f_shift));
        u_b = units(m_b, 9'(op_lnf ? f_shift : dx_sh));
    end
    // row sums of this cycle
    logic signed [31:0] sum_x1, sum_g5;
    logic signed [47:0] sum_xx1, sum_gx5;   // <= V products of two int16
    always_comb begin
        sum_x1 = '0;
        sum_xx1 = '0;
        sum_g5 = '0;
        sum_gx5 = '0;
        for (int l = 0; l < V; l++) begin
            if (lv1[l]) begin
                sum_x1 = sum_x1 + 32'(a1[l]);
                sum_xx1 = sum_xx1 + 48'(a1[l]) * 48'(a1[l]);
            end
            if (lv5[l]) begin
                sum_g5 = sum_g5 + 32'(qa[l]);
                sum_gx5 = sum_gx5 + 48'(qa[l]) * 48'(xb5[l]);
            end
        end
    end

    // ------------------------------------------------------------------ writes
    wire [15:0] list_e = idx_rdata;
    wire list_bad = single && vld[1] && 32'(list_e) >= 32'(f_n);
    wire [15:0] mask_fill = 16'(32'(row) < 32'(f_imm));
    always_comb begin
        c_we = 1'b0;
        c_waddr = r_c + 24'(js[5]);
        c_wmask = '0;
        c_wdata = '0;
        for (int l = 0; l < V; l++) c_wdata[l*16 +: 16] = qa[l];
        if (!err_f && state == S_PASS) begin
            if (op_lnf && pass == 2'd1) begin
                c_we = vld[5];
                c_waddr = r_e + 24'(js[5]);
                c_wmask = L'(lv5);
            end else if ((op_lnf && pass == 2'd2) || (op_lnb && pass == 2'd1)) begin
                c_we = vld[9];
                c_waddr = r_c + 24'(js[9]);
                c_wmask = L'(lv9);
                for (int l = 0; l < V; l++) c_wdata[l*16 +: 16] = qc[l];
            end else if (op_gelu) begin
                c_we = vld[6];
                c_waddr = r_c + 24'(js[6]);
                c_wmask = L'(lv6);
            end else if (op_mask && pass == 2'd0) begin
                c_we = issue;
                c_waddr = r_c + 24'(j);
                c_wmask = L'(lv0);
                for (int l = 0; l < V; l++) c_wdata[l*16 +: 16] = mask_fill;
            end else if (op_mask) begin
                c_we = vld[1] && !list_bad;
                c_waddr = r_c + 24'(list_e);
                c_wmask = L'(1);
                c_wdata[15:0] = 16'd1;
            end
        end
    end
    // COLSUM / COLDOT totals of the group, the 48-bit check over the valid columns
    logic signed [48:0] col_total [V];
    logic [V-1:0] col_lane;
    logic col_over;
    always_comb begin
        col_over = 1'b0;
        for (int l = 0; l < V; l++) begin
            col_lane[l] = 32'(row) + 32'(l) < 32'(f_n);
            col_total[l] = 49'(cacc[l]) + 49'(csum[l]);
            if (col_lane[l] && (col_total[l] >= 49'sh0_8000_0000_0000 || col_total[l] <= -49'sh0_8000_0000_0000))
                col_over = 1'b1;
        end
    end
    always_comb begin
        acc_wmask = '0;
        acc_wdata = '0;
        if (op_lnf) begin
            acc_wmask[0] = 1'b1;
            acc_wdata[47:0] = {11'd0, kk, rs};
        end else begin
            acc_wmask = AL'(col_lane);
            for (int l = 0; l < V; l++) acc_wdata[l*48 +: 48] = col_total[l][47:0];
        end
    end
    assign acc_we = state == S_ROWEND && !err_f && (op_lnf || (op_col && !col_over));
    assign acc_waddr = f_f + 24'(row);

    assign stat_we = state == S_STAT && f_stat && !err_f && (op_lnf || op_lnb || op_gelu) &&
                     calc < (op_lnb ? 3'd3 : 3'd1);
    assign stat_slot = f_slot + 6'(calc);
    assign stat_value = st[2'(calc)];
    assign busy = state != S_IDLE;

    // LN_FWD: bit length of W, k = max(0, (bitlen - 11) / 2)
    always_comb begin
        wlen = 6'd0;
        for (int b = 0; b < 48; b++) if (w[b]) wlen = 6'(b + 1);
    end
    wire [4:0] k_of_w = wlen > 6'd11 ? 5'((wlen - 6'd11) >> 1) : 5'd0;
    // LN_BWD: B = RNE(sum g xhat, fh)
    wire signed [47:0] b_q = s2 >>> fh;
    wire [63:0] b_rem = 64'(s2) & ((64'd1 << fh) - 64'd1);
    wire [63:0] b_half = 64'd1 << (fh - 4'd1);
    wire signed [47:0] b_rne = b_q + 48'((b_rem > b_half) || (b_rem == b_half && b_q[0]));
    // LN_BWD row check: shift3 + k in -16..62, with bias shift4 - k in -47..62
    wire signed [15:0] acc_k = acc_rdata[47:32];
    wire signed [17:0] dxs = 18'(f_shift3) + 18'(acc_k);
    wire signed [17:0] als = 18'(f_shift4) - 18'(acc_k);
    wire lnb_bad = dxs < -18'sd16 || dxs > 18'sd62 || (f_bias && (als < -18'sd47 || als > 18'sd62));
    wire last_row = op_col ? 32'(row) + 32'(V) >= 32'(f_n) : row == f_m - 16'd1;

    // length of the next pass
    logic [JW-1:0] len_next;
    always_comb begin
        len_next = JW'(f_n);
        if (op_col) len_next = JW'(f_m);
        else if (op_mask && pass == 2'd0) len_next = JW'(f_k);   // the list pass after the zero row
    end

    always_ff @(posedge clk) if (rst || ce) begin
        if (rst) begin
            state <= S_IDLE;
            c <= '0;
            done <= 1'b0;
            err_valid <= 1'b0;
            err_code <= '0;
            vld <= '0;
            err_f <= 1'b0;
            err_c <= '0;
            pass <= '0;
            calc <= '0;
            row <= '0;
            j <= '0;
            plen <= '0;
        end else begin
            done <= 1'b0;
            err_valid <= 1'b0;
            vld <= {vld[NS-1:1], issue};
            for (int s = NS; s > 1; s--) js[s] <= js[s-1];
            js[1] <= j;

            // ---- per-element work of the current pass
            if (state == S_PASS && !err_f) begin
                if (issue) begin
                    j <= j + step;
                    p_a <= p_a + (op_col ? 24'(f_as) : 24'(V));
                    p_b <= p_b + (op_col ? 24'(f_bs) : 24'(V));
                end
                if (vld[1]) begin
                    for (int l = 0; l < V; l++)      // (xbuf is written in g_bank)
                        if (op_col) csum[l] <= csum[l] + (op_dot ? 64'(a1[l]) * 64'(b1[l]) : 64'(a1[l]));
                    if (op_lnf && pass == 2'd0) begin
                        s1 <= s1 + sum_x1;
                        s2 <= s2 + sum_xx1;
                    end
                    if (op_lnb && pass == 2'd0 && f_stat && u_a > st[0]) st[0] <= u_a;
                    if (op_lnb && pass == 2'd1 && f_stat && u_a > st[1]) st[1] <= u_a;
                    if (list_bad) begin
                        err_f <= 1'b1;
                        err_c <= TL_ERR_SPM_RANGE;
                    end
                end
                if (vld[2] && op_gelu && f_stat && u_a > st[0]) st[0] <= u_a;
                if (vld[5]) begin                     // (hbuf is written in g_bank)
                    if (op_lnf && pass == 2'd2 && f_stat && u_b > st[0]) st[0] <= u_b;
                    if (op_lnb && pass == 2'd0) begin
                        s1 <= s1 + sum_g5;
                        s2 <= s2 + sum_gx5;
                    end
                    if (op_lnb && pass == 2'd1 && f_stat && u_b > st[2]) st[2] <= u_b;
                end
            end

            case (state)
                S_IDLE: if (start) begin
                    c <= cmd;
                    state <= S_CHECK;
                end
                S_CHECK: begin
                    row <= '0;
                    r_a <= f_a;
                    r_b <= f_b;
                    r_c <= f_c;
                    r_d <= f_d;
                    r_e <= f_e;
                    r_i <= f_b;
                    r_ib <= f_ibase;
                    fh <= fh_c;
                    eps <= eps_c;
                    seed0 <= hash32(f_seed, 32'd0);
                    seed1 <= hash32(f_seed, 32'd1);
                    seed2 <= hash32(f_seed, 32'd2);
                    err_f <= 1'b0;
                    for (int s = 0; s < 3; s++) st[s] <= '0;
                    if (check_code != TL_ERR_NONE) begin
                        err_valid <= 1'b1;
                        err_code <= check_code;
                        state <= S_IDLE;
                    end else begin
                        state <= S_ROW;
                    end
                end
                S_ROW: begin                  // row (column group) setup; ACC[f_addr + row] is being read
                    pass <= '0;
                    j <= '0;
                    s1 <= '0;
                    s2 <= '0;
                    for (int l = 0; l < V; l++) csum[l] <= '0;
                    plen <= op_col ? JW'(f_m) : JW'(f_n);
                    p_a <= op_col ? f_a + 24'(row) : r_a;
                    p_b <= op_col ? f_b + 24'(row) : (op_lnf || op_lnb) ? f_b : r_b;
                    state <= (op_lnb || op_col) ? S_ROWCHK : S_PASS;
                end
                S_ROWCHK: begin
                    rs <= acc_rdata[31:0];
                    dx_sh <= 8'(dxs);
                    al_sh <= 8'(als);
                    for (int l = 0; l < V; l++) cacc[l] <= acc_rdata[l*48 +: 48];
                    if (op_lnb && lnb_bad) begin
                        err_f <= 1'b1;
                        err_c <= TL_ERR_BAD_SHIFT;
                        state <= S_END;
                    end else begin
                        state <= S_PASS;
                    end
                end
                S_PASS: if (pass_end) begin
                    vld <= '0;
                    j <= '0;
                    p_a <= r_a;
                    p_b <= op_lnf ? f_b : r_b;
                    calc <= '0;
                    plen <= len_next;
                    if (err_f) state <= S_END;
                    else if ((op_lnf || op_lnb) && pass == 2'd0) state <= S_CALC;
                    else if (op_lnf && pass == 2'd1) pass <= 2'd2;
                    else if (op_mask && pass == 2'd0 && 32'(row) >= 32'(f_imm)) pass <= 2'd1;
                    else state <= S_ROWEND;
                end
                S_CALC: begin
                    calc <= calc + 1'b1;
                    if (op_lnb) begin
                        bsum <= b_rne;
                        pass <= 2'd1;
                        state <= S_PASS;
                    end else begin
                        case (calc)
                            3'd0: w <= n64 * s2 - 64'(s1) * 64'(s1) + $signed(eps);
                            3'd1: begin
                                kk <= k_of_w;
                                widx <= 12'(w >> (6'(k_of_w) << 1));
                            end
                            default: begin
                                rs <= 32'(tl_rsqrt_lut(widx));
                                pass <= 2'd1;
                                state <= S_PASS;
                            end
                        endcase
                    end
                end
                S_ROWEND: begin
                    calc <= '0;
                    if (op_col && col_over) begin
                        err_f <= 1'b1;
                        err_c <= TL_ERR_ACC_RANGE;
                        state <= S_END;
                    end else if (last_row) begin
                        state <= S_STAT;
                    end else begin
                        row <= row + (op_col ? 16'(V) : 16'd1);
                        r_a <= r_a + 24'(f_as);
                        r_b <= r_b + 24'(f_bs);
                        r_c <= r_c + 24'(f_cs);
                        r_d <= r_d + 24'(f_ds);
                        r_e <= r_e + 24'(f_es);
                        if (op_mask && 32'(row) >= 32'(f_imm)) r_i <= r_i + 24'(f_bs);
                        r_ib <= r_ib + f_istride;
                        state <= S_ROW;
                    end
                end
                S_STAT: begin
                    calc <= calc + 1'b1;
                    if (calc == 3'd2) state <= S_END;
                end
                S_END: begin
                    if (err_f) begin
                        err_valid <= 1'b1;
                        err_code <= err_c;
                    end else begin
                        done <= 1'b1;
                    end
                    state <= S_IDLE;
                end
                default: state <= S_IDLE;
            endcase
        end
    end

    /* verilator lint_off UNUSEDSIGNAL */
    wire unused = ^{c, a_rdata, b_rdata, d_rdata, e_rdata, acc_rdata, list_rows, gsh};
    /* verilator lint_on UNUSEDSIGNAL */
endmodule
