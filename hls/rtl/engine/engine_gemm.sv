// GEMM unit of the engine (docs/engine.md "GEMM"): C(i, j) = sat16(round(dot * imm + bias + res))
// or ACC(i, j) += dot, dot = sum_p A(i, p) B(j, p), A and B read from the SPM in their stored
// layouts (ta / tb select the transposed ones), on an R x C output-stationary array of mac_pe.
//
// Dataflow, one command:
//   loaders  For every output tile (R rows x C columns; i-tiles outer, j-tiles inner) and every
//            chunk of KC reduction steps, the A loader and the B loader (one SPM window port each)
//            fill one of two chunk buffers: a transposed operand needs one window per step (the R
//            or C elements of a step are consecutive), a stored-layout one one window of KC
//            consecutive steps per row. Either way a chunk costs <= KC reads when R, C <= KC.
//   feeder   streams the other buffer into the array, one A vector and one B vector per cycle
//            (the skew, flags and PEs are those of mac_array); the PEs accumulate across chunks and
//            restart on a tile's first step, so k is unbounded. A tile's last step waits until the
//            previous tile's results have drained (MINP / MINP_E cycles apart, below).
//   epilogue a row drains in H = C / EL cycles, EL columns a cycle (EL = EPI_LANES): read E(i, j..),
//            the bias window; dot * imm + align(bias, shift2) + align(E, shift3) in 64 bits, EL
//            trilevel_requant lanes (RNE / SR with hash32(seed, index_base + i * index_stride + j)),
//            write the C window. Or (acc) a row a cycle: read the ACC row, ACC += dot with the 48-bit
//            range check. The statistic (max |v| in output units, optionally only where E != 0) goes
//            to STAT[slot] at the end.
// Errors are found before anything moves (dims, ranges, shifts, exclusive flags), except ACC_RANGE.
`timescale 1ns / 1ps
module engine_gemm #(
    parameter int R = 4,                // array rows (outputs i per tile)
    parameter int C = 4,                // array columns (outputs j per tile)
    parameter int L = 8,                // SPM window lanes (>= R, C); also the chunk length KC
    parameter int AL = 4,               // ACC window lanes (>= C)
    parameter int EPI_LANES = C,        // requantizing epilogue lanes EL (C / EL a power of two)
    parameter int SPM_ELEMS = 65536,
    parameter int ACC_ELEMS = 16384,
    parameter int STAT_SLOTS = 64,
    parameter int MUTATE_ROUNDING = 0    // test only: +1 on every value before a right shift
) (
    input  logic                clk,
    input  logic                rst,
    input  logic                ce,                  // clock enable (0: the memories are serving a port conflict, hold)
    input  logic                start,
    input  logic [511:0]        cmd,
    output logic                busy,
    output logic                done,         // pulse: command complete
    output logic                err_valid,    // pulse: command refused / failed (then no done)
    output logic [7:0]          err_code,
    // SPM window ports (one cycle read latency); *_re: the port is read this cycle
    output logic                a_re, b_re, e_re, d_re, acc_re,
    output logic [23:0]         a_raddr,
    input  logic [L*16-1:0]     a_rdata,
    output logic [23:0]         b_raddr,
    input  logic [L*16-1:0]     b_rdata,
    output logic [23:0]         e_raddr,
    input  logic [L*16-1:0]     e_rdata,
    output logic [23:0]         d_raddr,
    input  logic [L*16-1:0]     d_rdata,
    output logic                c_we,
    output logic [23:0]         c_waddr,
    output logic [L-1:0]        c_wmask,
    output logic [L*16-1:0]     c_wdata,
    // ACC window port (acc mode)
    output logic [23:0]         acc_raddr,
    input  logic [AL*48-1:0]    acc_rdata,
    output logic                acc_we,
    output logic [23:0]         acc_waddr,
    output logic [AL-1:0]       acc_wmask,
    output logic [AL*48-1:0]    acc_wdata,
    // statistic (the top keeps the max)
    output logic                stat_we,
    output logic [5:0]          stat_slot,
    output logic [63:0]         stat_value,
    // counters
    output logic                feeding,      // an A/B vector pair entered the array this cycle
    output logic [15:0]         macs          // useful MACs of this cycle's step
);
    /* verilator lint_off UNUSEDPARAM */
    `include "tl_isa.svh"
    /* verilator lint_on UNUSEDPARAM */

    localparam int KC = L;
    localparam int KB = $clog2(KC);
    localparam int MINP = R > C ? R : C;
    localparam int EL = EPI_LANES;
    localparam int H = C / EL;          // epilogue cycles per row
    localparam int HB = H > 1 ? $clog2(H) : 1;
    // A tile's last step follows the previous one's by >= MINP (acc) or MINP_E cycles (requantizing). With
    // the last step entering the array at T, drain slot s = i H + h (row i, columns h EL..) reads the PE
    // results at T + C + s; the next tile's last step, entering at T', replaces PE (i, j)'s result after
    // cycle T' + i + j, and its own drain starts at T' + C: so T' - T >= C + (R - 1)(H - 1) and >= R H.
    localparam int MINP_E0 = H * R > C + (R - 1) * (H - 1) ? H * R : C + (R - 1) * (H - 1);
    localparam int MINP_E = MINP_E0 > MINP ? MINP_E0 : MINP;
    localparam int RQ_LAT = 4;
    localparam int RW = R > 1 ? $clog2(R) : 1;
    if (EL < 1 || C % EL != 0 || H != (1 << $clog2(H))) begin : g_bad_epi
        $error("engine_gemm: EPI_LANES must divide C, C / EPI_LANES a power of two");
    end
    // the chunk buffers' bank layout (element (i, p) in bank (i + p) mod KC) needs R, C <= KC = 2**KB
    if (R > KC || C > KC || KC != (1 << KB)) begin : g_bad_size
        $error("engine_gemm: R and C must be <= L, and L a power of two");
    end

    // ------------------------------------------------------------------ command fields
    logic [511:0] c;
    wire [15:0] f_m = c[TL_F_M_LSB +: 16];
    wire [15:0] f_n = c[TL_F_N_LSB +: 16];
    wire [15:0] f_k = c[TL_F_K_LSB +: 16];
    wire signed [7:0] f_shift = c[TL_F_SHIFT_LSB +: 8];
    wire signed [7:0] f_shift2 = c[TL_F_SHIFT2_LSB +: 8];
    wire signed [7:0] f_shift3 = c[TL_F_SHIFT3_LSB +: 8];
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
    wire [23:0] f_e = c[TL_F_E_ADDR_LSB +: 24];
    wire [15:0] f_es = c[TL_F_E_STRIDE_LSB +: 16];
    wire [23:0] f_f = c[TL_F_F_ADDR_LSB +: 24];
    wire signed [31:0] f_imm = c[TL_F_IMM_LSB +: 32];
    wire f_sr = c[TL_C_SR_LSB];
    wire f_acc = c[TL_C_ACC_LSB];
    wire f_ta = c[TL_C_TA_LSB];
    wire f_tb = c[TL_C_TB_LSB];
    wire f_bias = c[TL_C_BIAS_LSB];
    wire f_res = c[TL_C_RES_LSB];
    wire f_mask = c[TL_C_MASK_LSB];
    wire f_stat = c[TL_C_STAT_LSB];
    wire [5:0] f_slot = c[TL_C_SLOT_LSB +: 6];
    wire use_e = f_res || f_mask;

    // ------------------------------------------------------------------ checks
    function automatic logic [47:0] last2(input logic [23:0] base, input logic [15:0] rows,
                                          input logic [15:0] stride, input logic [15:0] cols);
        last2 = 48'(base) + 48'(rows - 16'd1) * 48'(stride) + 48'(cols) - 48'd1;
    endfunction
    function automatic logic shift_ok(input logic signed [7:0] s);      // requantizer
        shift_ok = s >= -8'sd16 && s <= 8'sd62;
    endfunction
    function automatic logic align_ok(input logic signed [7:0] s);      // operand alignment
        align_ok = s >= -8'sd47 && s <= 8'sd62;
    endfunction
    wire [47:0] a_last = f_ta ? last2(f_a, f_k, f_as, f_m) : last2(f_a, f_m, f_as, f_k);
    wire [47:0] b_last = f_tb ? last2(f_b, f_k, f_bs, f_n) : last2(f_b, f_n, f_bs, f_k);
    logic [7:0] check_code;
    // fsim's order: BAD_DIMS, BAD_SHIFT, SPM_RANGE (res with mask is refused at dispatch)
    always_comb begin
        check_code = TL_ERR_NONE;
        if (!busy) check_code = TL_ERR_NONE;   // checked in S_CHECK only: idle, skip the bounds
        else if (f_m == 0 || f_n == 0 || f_k == 0) check_code = TL_ERR_BAD_DIMS;
        else if (!f_acc && (!shift_ok(f_shift) || (f_bias && !align_ok(f_shift2)) || (f_res && !align_ok(f_shift3))))
            check_code = TL_ERR_BAD_SHIFT;
        else if (a_last >= 48'(SPM_ELEMS) || b_last >= 48'(SPM_ELEMS) ||
                 (!f_acc && last2(f_c, f_m, f_cs, f_n) >= 48'(SPM_ELEMS)) ||
                 (f_acc && last2(f_f, f_m, f_cs, f_n) >= 48'(ACC_ELEMS)) ||
                 (!f_acc && f_bias && 48'(f_d) + 48'(f_n) > 48'(SPM_ELEMS)) ||
                 (!f_acc && use_e && last2(f_e, f_m, f_es, f_n) >= 48'(SPM_ELEMS)) ||
                 (f_stat && 32'(f_slot) >= 32'(STAT_SLOTS)))
            check_code = TL_ERR_SPM_RANGE;
    end

    // ------------------------------------------------------------------ control
    localparam logic [1:0] S_IDLE = 2'd0, S_CHECK = 2'd1, S_RUN = 2'd2, S_STAT = 2'd3;
    logic [1:0] state;
    wire [15:0] ti_n = (f_m + 16'(R - 1)) / 16'(R);
    wire [15:0] tj_n = (f_n + 16'(C - 1)) / 16'(C);
    wire [15:0] ch_n = (f_k + 16'(KC - 1)) >> KB;
    wire [31:0] tiles = 32'(ti_n) * 32'(tj_n);

    // ------------------------------------------------------------------ loaders
    // chunk buffers (LUT RAM): element (lane i, step p) of buffer b lives in bank (i + p) mod KC at address
    // {b, p}, each bank an engine_lutram of 2 KC words. Every access pattern touches each bank at most once:
    // a stored-layout window (row i, all p) and a transposed one (step p, all i) are written through a
    // rotation by i resp. p into bank order, with per-bank addresses; the feeder's column (step p, all i)
    // reads every bank at {b, p} and rotates back by p. Needs R, C <= KC (KC = L, a power of two).
    logic [1:0] full;
    logic [15:0] meta_i0 [2];
    logic [15:0] meta_j0 [2];
    logic [KB:0] meta_len [2];
    logic [1:0] meta_first, meta_last;

    logic [15:0] l_ti, l_tj, l_ch;        // chunk being loaded
    logic l_all;                          // every chunk loaded
    logic lb;                             // buffer being filled
    logic [15:0] la_cnt, lb_cnt;          // issue counters of the A and B loaders
    logic la_done, lb_done;
    wire [15:0] l_i0 = l_ti * 16'(R);
    wire [15:0] l_j0 = l_tj * 16'(C);
    wire [15:0] l_p0 = l_ch << KB;
    wire [15:0] l_rem = f_k - l_p0;
    wire [KB:0] l_len = l_rem > 16'(KC) ? (KB+1)'(KC) : (KB+1)'(l_rem);
    // reads per chunk: transposed -> l_len windows; stored layout -> one window per row
    wire [15:0] la_total = f_ta ? 16'(l_len) : 16'(R);
    wire [15:0] lb_total = f_tb ? 16'(l_len) : 16'(C);
    wire l_go = state == S_RUN && !l_all && !full[lb];
    wire la_issue = l_go && !la_done;
    wire lb_issue = l_go && !lb_done;
    assign a_re = la_issue;
    assign b_re = lb_issue;
    assign a_raddr = f_ta ? f_a + 24'(32'(l_p0 + la_cnt) * 32'(f_as)) + 24'(l_i0)
                          : f_a + 24'(32'(l_i0 + la_cnt) * 32'(f_as)) + 24'(l_p0);
    assign b_raddr = f_tb ? f_b + 24'(32'(l_p0 + lb_cnt) * 32'(f_bs)) + 24'(l_j0)
                          : f_b + 24'(32'(l_j0 + lb_cnt) * 32'(f_bs)) + 24'(l_p0);
    // read data lands one cycle later
    logic la_v, lb_v;
    logic [15:0] la_q, lb_q;
    logic lb_buf_q;
    always_ff @(posedge clk) if (rst || ce) begin
        la_v <= la_issue;
        lb_v <= lb_issue;
        la_q <= la_cnt;
        lb_q <= lb_cnt;
        lb_buf_q <= lb;
    end
    // The operand rotations: lane k of rotl(x, s) is lane (k - s) mod KC of x, of rotr(x, s) lane (k + s) mod KC.
    // g_rot[0], [1]: the A / B landing windows (rotl), [2], [3]: the feeder's A / B bank columns (rotr).
    // Simulation form: log2 KC whole-vector rotations. Synthesized: radix-4 stages (2 bits of s each; the
    // last one 2:1 when KB is odd), each stage's input a kept net, one LUT6 a bit and stage; as the log2 KC
    // 2:1 stages Yosys mapped 4 LUT a bit at KC = 32 (three LUT3 stages and a 4:1), 2k LUT more in all.
    function automatic logic [KC*16-1:0] rotl(input logic [KC*16-1:0] x, input logic [KB-1:0] s);
        logic [KC*16-1:0] y;
        y = x;
        for (int b = 0; b < KB; b++)
            if (s[b]) y = (y << (16 * (1 << b))) | (y >> (16 * (KC - (1 << b))));
        rotl = y;
    endfunction
    function automatic logic [KC*16-1:0] rotr(input logic [KC*16-1:0] x, input logic [KB-1:0] s);
        logic [KC*16-1:0] y;
        y = x;
        for (int b = 0; b < KB; b++)
            if (s[b]) y = (y >> (16 * (1 << b))) | (y << (16 * (KC - (1 << b))));
        rotr = y;
    endfunction
    function automatic logic [KC*16-1:0] rot4(input logic [KC*16-1:0] x, input logic [KB-1:0] s, input int st,
                                              input int left);
        logic [1:0] d;
        d = 2'(s >> (2 * st));
        rot4 = '0;
        for (int k = 0; k < KC; k++)
            for (int m = 0; m < 4; m++)
                if ((m << (2 * st)) < KC)
                    rot4[k*16 +: 16] = rot4[k*16 +: 16] | (x[((k + (left != 0 ? KC - (m << (2 * st)) : m << (2 * st))) % KC)*16 +: 16]
                                                          & {16{d == 2'(m)}});
    endfunction
    logic [KC*16-1:0] a_bq, b_bq;                  // bank read data, bank order
    logic [KB:0] f_p;
    logic [4*KC*16-1:0] rot_y;                     // the four rotators' outputs (flat: Yosys 0.23 has no 2-D packed)
    for (genvar r = 0; r < 4; r++) begin : g_rot
        wire [KB-1:0] sh = r == 0 ? KB'(la_q) : r == 1 ? KB'(lb_q) : KB'(f_p);
        wire [KC*16-1:0] x = r == 0 ? a_rdata : r == 1 ? b_rdata : r == 2 ? a_bq : b_bq;
`ifdef TL_SIM_FORMS
        assign rot_y[r*KC*16 +: KC*16] = r < 2 ? rotl(x, sh) : rotr(x, sh);
`else
        localparam int RS = (KB + 1) / 2;
        // entry t of st: the input (t = 0), after stage t - 1 (kept); the last stage merges into its consumer
        (* keep *) logic [RS*KC*16-1:0] st;
        assign st[0 +: KC*16] = x;
        for (genvar t = 1; t < RS; t++) begin : g_st
            assign st[t*KC*16 +: KC*16] = rot4(st[(t-1)*KC*16 +: KC*16], sh, t - 1, r < 2 ? 1 : 0);
        end
        assign rot_y[r*KC*16 +: KC*16] = rot4(st[(RS-1)*KC*16 +: KC*16], sh, RS - 1, r < 2 ? 1 : 0);
`endif
    end
    // the landing window (A: row la_q, or step la_q when transposed; B likewise) rotated by la_q into bank
    // order: bank k takes lane (k - la_q) mod KC, which is its step p (stored) or its row i (transposed)
    wire [KB-1:0] a_s = KB'(la_q);
    wire [KB-1:0] b_s = KB'(lb_q);
    wire [KC*16-1:0] a_wrot = rot_y[0 +: KC*16];
    wire [KC*16-1:0] b_wrot = rot_y[KC*16 +: KC*16];
    // a chunk is complete once both loaders issued everything and the last data has landed
    wire l_chunk_done = l_go && (la_done || (la_issue && la_cnt == la_total - 16'd1)) &&
                        (lb_done || (lb_issue && lb_cnt == lb_total - 16'd1));
    logic mark_full;                      // set `full` one cycle after the chunk's last issue
    logic mark_buf;

    // ------------------------------------------------------------------ feeder
    logic fb;
    logic [15:0] since_last;
    wire f_at_last = f_p == meta_len[fb] - 1'b1;
    wire f_is_last = meta_last[fb] && f_at_last;
    wire f_ok = state == S_RUN && full[fb] && (!f_is_last || since_last >= (f_acc ? 16'(MINP) : 16'(MINP_E))) && !tq_full;
    wire f_first = f_ok && meta_first[fb] && f_p == 0;
    wire f_last = f_ok && f_is_last;
    assign feeding = f_ok;

    wire [KB:0] f_raddr = {fb, KB'(f_p)};          // the feeder's column: the same address in every bank
    wire ld_we = rst || ce;
    for (genvar k = 0; k < KC; k++) begin : g_bank
        wire [KB-1:0] a_lane = KB'(k) - a_s;
        wire [KB-1:0] b_lane = KB'(k) - b_s;
        engine_lutram #(.W(16), .N(2 * KC), .NRD(1)) u_a (
            .clk(clk), .we(ld_we && la_v && (!f_ta || 32'(a_lane) < 32'(R))),
            .waddr({lb_buf_q, f_ta ? a_s : a_lane}), .wdata(a_wrot[k*16 +: 16]),
            .raddr(f_raddr), .rdata(a_bq[k*16 +: 16])
        );
        engine_lutram #(.W(16), .N(2 * KC), .NRD(1)) u_b (
            .clk(clk), .we(ld_we && lb_v && (!f_tb || 32'(b_lane) < 32'(C))),
            .waddr({lb_buf_q, f_tb ? b_s : b_lane}), .wdata(b_wrot[k*16 +: 16]),
            .raddr(f_raddr), .rdata(b_bq[k*16 +: 16])
        );
    end
    // column f_p of buffer fb: lane i from bank (i + f_p) mod KC
    wire [KC*16-1:0] a_col = rot_y[2*KC*16 +: KC*16];
    wire [KC*16-1:0] b_col = rot_y[3*KC*16 +: KC*16];
    wire [R*16-1:0] a_vec = a_col[R*16-1:0];
    wire [C*16-1:0] b_vec = b_col[C*16-1:0];
    wire [15:0] rows_valid = f_m - meta_i0[fb] > 16'(R) ? 16'(R) : f_m - meta_i0[fb];
    wire [15:0] cols_valid = f_n - meta_j0[fb] > 16'(C) ? 16'(C) : f_n - meta_j0[fb];
    assign macs = f_ok ? 16'(32'(rows_valid) * 32'(cols_valid)) : 16'd0;

    // tile queue: (i0, j0) of each tile in the array, pushed at its first step, popped at its last row
    logic tq_push, tq_pop, tq_empty, tq_full;
    logic [31:0] tq_dout;
    logic [2:0] tq_count;
    engine_fifo #(.W(32), .DEPTH(4)) u_tiles (
        .clk(clk), .rst(rst || state == S_IDLE), .push(ce && (tq_push)), .din({meta_i0[fb], meta_j0[fb]}),
        .pop(ce && (tq_pop)), .dout(tq_dout), .empty(tq_empty), .full(tq_full), .count(tq_count)
    );
    assign tq_push = f_first;

    always_ff @(posedge clk) if (rst || ce) begin
        if (rst || state == S_IDLE) begin
            full <= '0;
            lb <= 1'b0;
            fb <= 1'b0;
            f_p <= '0;
            l_ti <= '0;
            l_tj <= '0;
            l_ch <= '0;
            l_all <= 1'b0;
            la_cnt <= '0;
            lb_cnt <= '0;
            la_done <= 1'b0;
            lb_done <= 1'b0;
            mark_full <= 1'b0;
            mark_buf <= 1'b0;
            since_last <= 16'(MINP);
        end else begin
            // loaders
            mark_full <= 1'b0;
            if (la_issue) begin
                if (la_cnt == la_total - 16'd1) la_done <= 1'b1;
                la_cnt <= la_cnt + 1'b1;
            end
            if (lb_issue) begin
                if (lb_cnt == lb_total - 16'd1) lb_done <= 1'b1;
                lb_cnt <= lb_cnt + 1'b1;
            end
            if (l_chunk_done) begin
                mark_full <= 1'b1;
                mark_buf <= lb;
                meta_i0[lb] <= l_i0;
                meta_j0[lb] <= l_j0;
                meta_len[lb] <= l_len;
                meta_first[lb] <= l_ch == 0;
                meta_last[lb] <= l_ch == ch_n - 16'd1;
                lb <= !lb;
                la_cnt <= '0;
                lb_cnt <= '0;
                la_done <= 1'b0;
                lb_done <= 1'b0;
                if (l_ch == ch_n - 16'd1) begin
                    l_ch <= '0;
                    if (l_tj == tj_n - 16'd1) begin
                        l_tj <= '0;
                        if (l_ti == ti_n - 16'd1) l_all <= 1'b1;
                        else l_ti <= l_ti + 1'b1;
                    end else begin
                        l_tj <= l_tj + 1'b1;
                    end
                end else begin
                    l_ch <= l_ch + 1'b1;
                end
            end
            // feeder
            if (f_ok) begin
                if (f_at_last) begin
                    f_p <= '0;
                    fb <= !fb;
                end else begin
                    f_p <= f_p + 1'b1;
                end
            end
            if (f_last) since_last <= 16'd1;
            else if (since_last != 16'hFFFF) since_last <= since_last + 1'b1;
            // buffer flags: the data of the chunk's last read lands in the cycle mark_full is set
            for (int x = 0; x < 2; x++) begin
                if (mark_full && mark_buf == 1'(x)) full[x] <= 1'b1;
                else if (f_ok && f_at_last && fb == 1'(x)) full[x] <= 1'b0;
            end
        end
    end

    // ------------------------------------------------------------------ PE grid (as in mac_array)
    // Unpacked per-PE nets (not mac_array's flat packed buses): Verilator evaluates each element on
    // its own instead of rewriting one 17-kbit vector per PE, ~50x faster at 32 x 32.
    // a_h[i][j]: operand a (and flags f_h) entering PE(i, j) from the left; b_v[j][i]: b entering from
    // above. (Values leaving the last column / row are not used: the array edge.)
    /* verilator lint_off UNUSEDSIGNAL */
    logic [15:0] a_h [R][C+1];
    logic [1:0] f_h [R][C+1];
    logic [15:0] b_v [C][R+1];
    /* verilator lint_on UNUSEDSIGNAL */
    logic [47:0] res_a [R][C];
    // The grid's clock enable. Simulation form (TL_SIM_FORMS): the skew lines and PEs also hold while
    // nothing valid is in them (R + C cycles after the last fed step) -- a uniform pause of a system whose
    // idle slots carry no valid flag, so results and timing are the same, and an idle array costs the
    // Verilated model nothing.
    logic grid_en;
`ifdef TL_SIM_FORMS
    logic [$clog2(R + C + 1)-1:0] in_flight;   // cycles until the last fed step has left the array
    always_ff @(posedge clk) begin
        if (rst) in_flight <= '0;
        else if (ce && f_ok) in_flight <= $bits(in_flight)'(R + C);
        else if (ce && in_flight != 0) in_flight <= in_flight - 1'b1;
    end
    assign grid_en = ce && (f_ok || in_flight != 0);
`else
    assign grid_en = ce;
`endif
    for (genvar i = 0; i < R; i++) begin : g_askew
        wire [17:0] inj = {f_ok, f_last, a_vec[i*16 +: 16]};
        if (i == 0) begin : g_direct
            assign {f_h[0][0], a_h[0][0]} = inj;
        end else begin : g_delay
            logic [17:0] chain [i];
            always_ff @(posedge clk) if (rst || grid_en) begin
                for (int d = 0; d < i; d++) begin
                    if (rst) chain[d] <= '0;
                    else chain[d] <= d == 0 ? inj : chain[d == 0 ? 0 : d - 1];
                end
            end
            assign {f_h[i][0], a_h[i][0]} = chain[i-1];
        end
    end
    for (genvar j = 0; j < C; j++) begin : g_bskew
        wire [15:0] inj = b_vec[j*16 +: 16];
        if (j == 0) begin : g_direct
            assign b_v[0][0] = inj;
        end else begin : g_delay
            logic [15:0] chain [j];
            always_ff @(posedge clk) if (rst || grid_en) begin
                for (int d = 0; d < j; d++) chain[d] <= d == 0 ? inj : chain[d == 0 ? 0 : d - 1];
            end
            assign b_v[j][0] = chain[j-1];
        end
    end
    for (genvar i = 0; i < R; i++) begin : g_row
        for (genvar j = 0; j < C; j++) begin : g_col
            mac_pe #(.ACC_W(48)) pe (
                .clk(clk), .rst(rst), .en(grid_en),
                .a_in(a_h[i][j]), .b_in(b_v[j][i]),
                .v_in(f_h[i][j][1]), .last_in(f_h[i][j][0]),
                .a_out(a_h[i][j+1]), .b_out(b_v[j][i+1]),
                .v_out(f_h[i][j+1][1]), .last_out(f_h[i][j+1][0]),
                .res(res_a[i][j])
            );
        end
    end
    // The drain: slot (row_sel, half) one per cycle from the cycle row 0's last step leaves the array (row i
    // is complete i cycles later, by slot i H); H slots a row when requantizing, one in acc mode.
    wire row0_done = f_h[0][C][1] && f_h[0][C][0];
    logic dr_busy;                 // slots after the first pending
    logic [RW-1:0] dr_row;
    logic [HB-1:0] dr_half;
    wire draining = row0_done || dr_busy;
    // dr_row is 0 whenever dr_busy is (it returns to 0 with the last slot), so the row select is the
    // register itself: as `dr_busy ? dr_row : 0` Yosys folded dr_busy into every drain select bit (a 4:1
    // of 4 data + 2 select bits became a LUT6 + a LUT1 pass-through of entry 0 + a MUXF7 on dr_busy:
    // 15.4k LUT at 32 x 32), and a kept net did not stop it
    wire [RW-1:0] row_sel = dr_row;
    wire [HB-1:0] half = dr_busy && !f_acc ? dr_half : '0;
    wire half_last = f_acc || half == HB'(H - 1);
    wire slot_last = row_sel == RW'(R - 1) && half_last;
    always_ff @(posedge clk) if (rst || ce) begin
        if (rst || state == S_IDLE) begin
            dr_busy <= 1'b0;
            dr_row <= '0;
            dr_half <= '0;
        end else if (draining) begin
            dr_busy <= !slot_last;
            dr_row <= slot_last ? '0 : half_last ? row_sel + 1'b1 : row_sel;
            dr_half <= half_last ? '0 : half + 1'b1;
        end
    end
    logic [C*48-1:0] row_res;
`ifdef TL_SIM_FORMS   // simulation form: the draining row only (packing all R x C results costs every cycle)
    always_comb for (int j = 0; j < C; j++) row_res[j*48 +: 48] = draining ? res_a[row_sel][j] : '0;
`else
    // the draining row as radix-4 select stages over whole rows (row i at bits i*C*48), each stage a kept
    // net: left to itself Yosys merges a variable part-select into one wide LUT + MUXF tree per bit (at
    // C = 8: ~15 LUT and ~21 MUXF a bit; three 4:1 / 2:1 levels are ~11 LUT). res_a[row_sel][j] itself
    // would become, under Yosys' -mem2reg, a case over all R x C elements per j.
    localparam int RWB = R * C * 48;
    if (RW > 6) begin : g_bad_rows
        $error("engine_gemm: at most 64 array rows (three drain select stages)");
    end
    function automatic logic [RWB-1:0] drain4(input logic [RWB-1:0] x, input logic [1:0] d, input int n);
        drain4 = '0;                            // entry g of the result = entry 4 g + d of x's n entries
        for (int g = 0; g < (n + 3) / 4; g++)
            for (int k = 0; k < 4; k++)
                if (4 * g + k < n)
                    drain4[g*C*48 +: C*48] = drain4[g*C*48 +: C*48] | (x[(4*g + k)*C*48 +: C*48] & {C*48{d == 2'(k)}});
    endfunction
    /* verilator lint_off UNUSEDSIGNAL */
    (* keep *) logic [RWB-1:0] dr0, dr1, dr2;   // the rows; after 1, 2 stages (entries 4 apart)
    // the last stage is not kept: it merges into d1_raw's input LUT (a kept dr3 was built twice, 1.5k LUT)
    logic [RWB-1:0] dr3;
    /* verilator lint_on UNUSEDSIGNAL */
    always_comb for (int i = 0; i < R; i++) for (int j = 0; j < C; j++) dr0[(i*C + j)*48 +: 48] = res_a[i][j];
    assign dr1 = drain4(dr0, 2'(row_sel), R);
    assign dr2 = RW > 2 ? drain4(dr1, 2'(row_sel >> 2), (R + 3) / 4) : dr1;
    assign dr3 = RW > 4 ? drain4(dr2, 2'(row_sel >> 4), (R + 15) / 16) : dr2;
    assign row_res = dr3[C*48-1:0];
`endif
    assign tq_pop = draining && slot_last;

    // ------------------------------------------------------------------ epilogue
    // D0: the drain cycle issues the E / bias / ACC window reads of row i
    wire [15:0] d0_i = tq_dout[31:16] + 16'(row_sel);
    wire [15:0] d0_j0 = tq_dout[15:0] + 16'(32'(half) * EL);   // the slot's first column
    assign e_raddr = f_e + 24'(32'(d0_i) * 32'(f_es)) + 24'(d0_j0);
    assign d_raddr = f_d + 24'(d0_j0);
    assign acc_raddr = f_f + 24'(32'(d0_i) * 32'(f_cs)) + 24'(d0_j0);
    assign e_re = draining && use_e;
    assign d_re = draining && f_bias;
    assign acc_re = draining && f_acc;

    logic d1_v;
    logic [HB-1:0] d1_half;
    logic [15:0] d1_i, d1_j0;
    logic [C*48-1:0] d1_raw;
    always_ff @(posedge clk) if (rst || ce) begin
        if (rst || state == S_IDLE) begin
            d1_v <= 1'b0;
        end else begin
            d1_v <= draining;
        end
        d1_half <= half;
        d1_i <= d0_i;
        d1_j0 <= d0_j0;
        d1_raw <= row_res;
    end

    // D1: combine
    // align16(v, s) = v * 2**-s rounded half to even: s <= 0 v << -s (the check bounds -s <= 47), 1 <= s <= 15
    // the RNE of tl_round.svh's rne_right16, s >= 16 zero. Both directions are one 18 x 18-bit product
    // p = x * 2**e (a DSP48E2) and a shift by whole 16-bit words: s <= 0: x = v, e = -s mod 16, p << 16 (-s / 16);
    // 1 <= s <= 15: x = v + 2**(s-1) - 1 + v[s], e = 16 - s, p >>> 16; zero (s >= 16, or the term off): factor
    // 0. The decode depends on the command only (shared by the lanes); a lane keeps a 16:1 bit select, an
    // 18-bit add and a 4:1 word select. As a shl16 and an rne_right16 muxed by the sign of s: ~165 LUT and
    // ~100 MUXF a lane and term. Checked equal to that form over every int16 and s in -47..62, on and off.
    // The decode {f, w, r, h, h1} (55 bits: Yosys 0.23 reads a struct-typed function argument as 0):
    //   f  [54:38] 2**e, or 0
    //   w  [37:36] result p << 16 w (w = 0..2), or p >>> 16 (w = 3)
    //   r  [35:32] rounding: x = v + (v[r] ? h : h1), h = 2**(r-1) [31:16], h1 = h - 1 [15:0] (both 0: x = v)
    function automatic logic [54:0] align_dec(input logic signed [7:0] s, input logic on);
        logic [16:0] f;
        logic [1:0] w;
        logic [3:0] r;
        logic [15:0] h;
        f = '0;
        w = '0;
        r = '0;
        h = '0;
        if (s <= 0) begin
            f = 17'd1 << 4'(-s);
            w = 2'(6'(-s) >> 4);                  // -s >= 48 (w = 3) is refused by the shift check
        end else if (s <= 8'sd15) begin
            f = 17'd1 << (5'd16 - 5'(s));
            w = 2'd3;
            r = 4'(s);
            h = 16'd1 << (4'(s) - 4'd1);
        end
        if (!on) f = '0;
        align_dec = {f, w, r, h, r != 4'd0 ? h - 16'd1 : 16'd0};
    endfunction
    function automatic logic signed [63:0] align16(input logic signed [15:0] v, input logic [54:0] d);
        logic signed [17:0] x;
        logic signed [35:0] p;
        x = 18'(v) + 18'(v[d[35:32]] ? d[31:16] : d[15:0]);
        p = 36'(x) * 36'($signed({1'b0, d[54:38]}));
        case (d[37:36])
            2'd0: align16 = 64'(p);
            2'd1: align16 = 64'(p) <<< 16;
            2'd2: align16 = 64'(p) <<< 32;
            default: align16 = 64'(p) >>> 16;
        endcase
    endfunction
    wire [54:0] dec_b = align_dec(f_shift2, f_bias);
    wire [54:0] dec_e = align_dec(f_shift3, f_res);

    // Operand isolation of the ACC adders and the epilogue lanes (their values count only with acc_we /
    // d2_v) in the simulation form only, where it saves Verilator the evaluation: synthesized, zeroing them
    // is a LUT a bit behind the adders' carry chains (ACC: 1.5k LUT at 32 columns) and a 64-bit 2:1 mux
    // behind each epilogue term's add
`ifdef TL_SIM_FORMS
    wire acc_eval = d1_v && f_acc;
    wire epi_eval = d1_v && !f_acc;
`else
    wire acc_eval = 1'b1;
    wire epi_eval = 1'b1;
`endif
    // the range checks as bit tests: as constant compares Yosys built each as a carry chain over the whole
    // width (the 32 + 16 checks: ~600 LUT and 320 CARRY4 more)
    function automatic logic over49(input logic [48:0] x);     // x >= 2**47 || x <= -2**47 (signed)
        over49 = x[48] ? !x[47] || x[46:0] == '0 : x[47];
    endfunction
    function automatic logic over80(input logic [79:0] x);     // x >= 2**62 || x <= -2**62 (signed)
        over80 = x[79] ? !(&x[78:62]) || x[61:0] == '0 : |x[78:62];
    endfunction
    logic [C-1:0] d1_valid;        // (i, j0 + j) inside the output
    logic [EL*64-1:0] v1;
    logic [EL-1:0] keep1;          // counts for the statistic
    logic [AL*48-1:0] acc_sum;
    logic acc_over;
    logic [EL*48-1:0] d1_epi;      // the slot's columns of the drained row
    if (H == 1) begin : g_epi_row
        assign d1_epi = d1_raw;
    end else begin : g_epi_half
        assign d1_epi = d1_raw[32'(d1_half)*EL*48 +: EL*48];
    end
    always_comb begin
        acc_over = 1'b0;
        acc_sum = '0;
        for (int j = 0; j < C; j++) begin          // acc mode: the whole row
            logic signed [48:0] s49;
            d1_valid[j] = d1_i < f_m && d1_j0 + 16'(j) < f_n;
            s49 = '0;
            if (acc_eval) s49 = 49'(signed'(acc_rdata[j*48 +: 48])) + 49'(signed'(d1_raw[j*48 +: 48]));
            if (d1_v && f_acc && d1_valid[j] && over49(s49)) acc_over = 1'b1;
            acc_sum[j*48 +: 48] = s49[47:0];
        end
        for (int j = 0; j < EL; j++) begin         // requantizing: the slot's EL columns
            logic signed [63:0] v;
            logic signed [79:0] p80;   // dot * imm, exact (48 x 32 bits signed): one multiplier per lane
            keep1[j] = d1_valid[j] && (!f_mask || e_rdata[j*16 +: 16] != 16'd0);
            v = '0;
            p80 = '0;
            if (epi_eval) begin
                // a term that is off has a zero factor (align_dec): `if (on) v = v + term` was a 64-bit 2:1
                // mux behind each add
                p80 = 80'(signed'(d1_epi[j*48 +: 48])) * 80'(f_imm);
                v = p80[63:0] + align16(signed'(d_rdata[j*16 +: 16]), dec_b)
                              + align16(signed'(e_rdata[j*16 +: 16]), dec_e);
            end
            // fsim refuses epilogue products |dot * imm| >= 2**62 with ACC_RANGE
            if (d1_v && !f_acc && d1_valid[j] && over80(p80)) acc_over = 1'b1;
            v1[j*64 +: 64] = v;
        end
    end
    // acc mode: read-modify-write the ACC row now
    assign acc_we = d1_v && f_acc;
    logic epi_over;                // the epilogue product check of a non-acc GEMM
    assign epi_over = d1_v && !f_acc && acc_over;
    assign acc_waddr = f_f + 24'(32'(d1_i) * 32'(f_cs)) + 24'(d1_j0);
    always_comb begin
        acc_wmask = '0;
        acc_wdata = acc_sum;
        for (int j = 0; j < C; j++) acc_wmask[j] = d1_valid[j];
    end

    // D2: requantize lanes (4 stages) + statistic
    logic d2_v;
    logic [15:0] d2_i, d2_j0;
    logic [EL*64-1:0] v2;
    logic [EL-1:0] keep2, valid2;
    always_ff @(posedge clk) if (rst || ce) begin
        if (rst || state == S_IDLE) d2_v <= 1'b0;
        else d2_v <= d1_v && !f_acc;
        d2_i <= d1_i;
        d2_j0 <= d1_j0;
        v2 <= v1;
        keep2 <= keep1;
        valid2 <= d1_valid[EL-1:0];
    end
    wire [31:0] row_index = f_ibase + 32'(d2_i) * f_istride + 32'(d2_j0);
    wire [31:0] row_k = row_index * 32'h9E3779B9;     // hash32's index * K once per row; lane j adds j * K
    logic [EL*16-1:0] q_lanes;
    logic [RQ_LAT-1:0] q_v;
    wire rq_en = ce && (d2_v || q_v[RQ_LAT-2:0] != '0);   // only while a row is inside the requantizers
    logic [84:0] rq_dec;      // the lanes' common shift / mode decode
    trilevel_requant_decode u_rq_dec (.clk(clk), .en(rq_en), .shift(f_shift), .mode(f_sr), .dec(rq_dec));
    for (genvar j = 0; j < EL; j++) begin : g_rq
        trilevel_requant #(.ACC_W(64), .EXT_DECODE(1'b1)) u_rq (
            .clk(clk), .en(rq_en), .acc(v2[j*64 +: 64] + 64'(MUTATE_ROUNDING != 0 && f_shift > 0)), .shift(f_shift), .mode(f_sr),
            .dec_in(rq_dec), .seed(f_seed),
            .index_k(row_k + 32'(j) * 32'h9E3779B9), .q(q_lanes[j*16 +: 16])
        );
    end
    logic [23:0] q_addr [RQ_LAT];
    logic [EL-1:0] q_mask [RQ_LAT];
    always_ff @(posedge clk) if (rst || ce) begin
        if (rst || state == S_IDLE) q_v <= '0;
        else q_v <= {q_v[RQ_LAT-2:0], d2_v};
        q_addr[0] <= f_c + 24'(32'(d2_i) * 32'(f_cs)) + 24'(d2_j0);
        q_mask[0] <= valid2;
        for (int s = 1; s < RQ_LAT; s++) begin
            q_addr[s] <= q_addr[s-1];
            q_mask[s] <= q_mask[s-1];
        end
    end
    assign c_we = q_v[RQ_LAT-1];
    assign c_waddr = q_addr[RQ_LAT-1];
    always_comb begin
        c_wmask = '0;
        c_wdata = '0;
        for (int j = 0; j < EL; j++) begin
            c_wmask[j] = q_mask[RQ_LAT-1][j];
            c_wdata[j*16 +: 16] = q_lanes[j*16 +: 16];
        end
    end

    // statistic: max over kept (i, j) of |v| in output units (|v| >> shift, or << -shift saturating).
    // units() is monotone in |v| for a fixed shift, so the running max is kept on the magnitudes (|v|
    // saturated to 63 bits, a balanced max tree per row) and converted once: stat_max = units(mag_max),
    // registered every cycle (the last row's magnitude lands >= RQ_LAT cycles before S_STAT).
    localparam int CP = 1 << $clog2(EL);   // tree leaves (EL rounded up to a power of two)
    logic [62:0] row_mag;
    always_comb begin
        logic [62:0] t [CP];
        for (int j = 0; j < CP; j++) begin
            logic signed [63:0] v;
            logic [63:0] mag;
            v = j < EL ? v2[(j < EL ? j : 0)*64 +: 64] : '0;
            mag = v[63] ? 64'(-v) : 64'(v);
            t[j] = mag[63] ? 63'h7FFF_FFFF_FFFF_FFFF : mag[62:0];
            if (j >= EL || !keep2[j < EL ? j : 0]) t[j] = '0;
        end
        for (int w = CP / 2; w >= 1; w = w / 2)
            for (int n = 0; n < w; n++) t[n] = t[2*n] > t[2*n+1] ? t[2*n] : t[2*n+1];
        row_mag = t[0];
    end
    // |v| in output units: right shift by s >= 0, left shift by -s saturating to 2**63 - 1 (log2 stages
    // of constant shifts; the left stages collect the bits shifted out). Commands with a statistic
    // passed the shift check (-16 <= s <= 62).
    function automatic logic [63:0] units(input logic [62:0] mag, input logic signed [7:0] s);
        logic [62:0] r;
        logic [5:0] k;
        logic ovf;
        r = mag;
        ovf = 1'b0;
        if (s >= 0) begin
            for (int b = 5; b >= 0; b--) if (s[b]) r = r >> (1 << b);
            if (s[6]) r = '0;
        end else begin
            k = 6'(-s);
            for (int b = 5; b >= 0; b--)
                if (k[b]) begin
                    ovf = ovf || (r >> (63 - (1 << b))) != 63'd0;
                    r = r << (1 << b);
                end
        end
        units = ovf ? 64'h7FFF_FFFF_FFFF_FFFF : {1'b0, r};
    endfunction
    logic [62:0] mag_max;
    logic [63:0] stat_max;

    // ------------------------------------------------------------------ completion
    logic [31:0] rows_out;         // drain slots leaving the epilogue (acc: at D1; else at the C write)
    logic acc_err;
    wire row_out = f_acc ? d1_v : c_we;
    wire [31:0] rows_total = tiles * 32'(R) * (f_acc ? 32'd1 : 32'(H));   // drain slots

    assign busy = state != S_IDLE;
    assign stat_we = state == S_STAT && f_stat && !f_acc;
    assign stat_slot = f_slot;
    assign stat_value = stat_max;

    always_ff @(posedge clk) if (rst || ce) begin
        if (rst) begin
            state <= S_IDLE;
            c <= '0;
            done <= 1'b0;
            err_valid <= 1'b0;
            err_code <= '0;
            rows_out <= '0;
            mag_max <= '0;
            stat_max <= '0;
            acc_err <= 1'b0;
        end else begin
            stat_max <= units(mag_max, f_shift);
            done <= 1'b0;
            err_valid <= 1'b0;
            case (state)
                S_IDLE: if (start) begin
                    c <= cmd;
                    state <= S_CHECK;
                end
                S_CHECK: begin
                    rows_out <= '0;
                    mag_max <= '0;
                    acc_err <= 1'b0;
                    if (check_code != TL_ERR_NONE) begin
                        err_valid <= 1'b1;
                        err_code <= check_code;
                        state <= S_IDLE;
                    end else begin
                        state <= S_RUN;
                    end
                end
                S_RUN: begin
                    if (row_out) rows_out <= rows_out + 1'b1;
                    if (d2_v && row_mag > mag_max) mag_max <= row_mag;
                    if ((acc_we && acc_over) || epi_over) acc_err <= 1'b1;
                    if (row_out && rows_out == rows_total - 32'd1) state <= S_STAT;
                end
                S_STAT: begin
                    if (acc_err) begin
                        err_valid <= 1'b1;
                        err_code <= TL_ERR_ACC_RANGE;
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
    wire unused = ^{c, tq_count, la_q, lb_q, a_col, b_col, tq_empty, q_lanes, d1_half, mark_full, e_rdata, d_rdata, acc_rdata, a_rdata, b_rdata};
    /* verilator lint_on UNUSEDSIGNAL */
endmodule
