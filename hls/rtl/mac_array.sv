// Output-stationary systolic GEMM engine, ROWS x COLS PEs (mac_pe), with the requantize epilogue.
//
// A tile computes C[i][j] = requantize(sum_p A[i][p] * B[p][j] + E[i][j]) for i < ROWS, j < COLS
// over a reduction of K = cfg_k steps. Beat p of s_axis_a carries column p of A (lane i = A[i][p]),
// beat p of s_axis_b row p of B (lane j = B[p][j]); both streams advance together, tlast on p = K-1.
// s_axis_e carries the addend (bias and/or residual at the accumulator frac), one beat per output
// row (lane j = E[i][j], 48 bits), taken when that row drains; tlast on row ROWS-1.
// m_axis_c emits the tile's ROWS rows (lane j = C[i][j], int16), tlast on row ROWS-1, whose tuser
// holds the tile's peak: max |acc + E| over rows < cfg_m and columns < cfg_n (48 bits).
// Rounding (docs/numerics.md 1.2/1.3): cfg_mode 0 = RNE, 1 = SR with
// hash32(cfg_seed, cfg_index_base + i * cfg_index_stride + j); cfg_shift as in requantize.
//
// Tiles stream back to back: the accumulators restart on a tile's first beat while the previous
// tile's results drain (one row per cycle) through COLS requantizer lanes. A new tile may start
// every max(K, ROWS, COLS) cycles (consecutive last beats are paced that far apart), so with
// K >= max(ROWS, COLS) every PE does one MAC per cycle.
// Configuration is sideband, sampled with each tile's first beat and queued with the tile.
// `err` (sticky) flags a misplaced tlast on any input, or cfg_k = 0 (treated as 1).
// Cycle counts: trilevel.rtl_cycles.mac_array_cycles / gemm_cycles.
`timescale 1ns / 1ps
module mac_array #(
    parameter int ROWS = 4,
    parameter int COLS = 4,
    parameter int ACC_W = 48
) (
    input  logic                      clk,
    input  logic                      rst,
    input  logic [15:0]               cfg_k,
    input  logic [15:0]               cfg_m,
    input  logic [15:0]               cfg_n,
    input  logic signed [7:0]         cfg_shift,
    input  logic                      cfg_mode,
    input  logic [31:0]               cfg_seed,
    input  logic [31:0]               cfg_index_base,
    input  logic [31:0]               cfg_index_stride,
    input  logic [ROWS*16-1:0]        s_axis_a_tdata,
    input  logic                      s_axis_a_tvalid,
    output logic                      s_axis_a_tready,
    input  logic                      s_axis_a_tlast,
    input  logic [COLS*16-1:0]        s_axis_b_tdata,
    input  logic                      s_axis_b_tvalid,
    output logic                      s_axis_b_tready,
    input  logic                      s_axis_b_tlast,
    input  logic [COLS*ACC_W-1:0]     s_axis_e_tdata,
    input  logic                      s_axis_e_tvalid,
    output logic                      s_axis_e_tready,
    input  logic                      s_axis_e_tlast,
    output logic [COLS*16-1:0]        m_axis_c_tdata,
    output logic                      m_axis_c_tvalid,
    input  logic                      m_axis_c_tready,
    output logic                      m_axis_c_tlast,
    output logic [47:0]               m_axis_c_tuser,
    output logic                      err
);
    localparam int MINP = ROWS > COLS ? ROWS : COLS;  // shortest tile period
    localparam int RW = ROWS > 1 ? $clog2(ROWS) : 1;
    localparam int CFG_W = 16 + 16 + 8 + 1 + 32 + 32 + 32;
    localparam int QD = 4;                              // config queue depth (tiles in flight)
    localparam int RQ_LAT = 4;                          // trilevel_requant pipeline stages

    // Everything advances together unless the output register is full or a draining row lacks its
    // addend beat. (Output handshakes never depend on `en`, so a stall cannot duplicate a beat.)
    logic en, out_free, draining;
    logic [ROWS-1:0] row_done;      // row i of a finished tile is ready to drain
    logic [RW-1:0] row_sel;
    assign out_free = !m_axis_c_tvalid || m_axis_c_tready;
    assign en = out_free && (!draining || s_axis_e_tvalid);

    // ---------------- input control ----------------
    // Tiles are paced by their LAST beats: a finished sum must stay in the PEs until its row drains,
    // so consecutive last beats are at least MINP cycles apart (a short tile waits before its last beat).
    logic [15:0] p_cnt, k_reg, k_cur;
    logic [15:0] since_last;        // en cycles since the previous tile's last beat
    logic [2:0] q_count;
    logic q_push, q_pop, at_last, in_ok, fire, first, last;

    assign k_cur = p_cnt == 0 ? (cfg_k == 0 ? 16'd1 : cfg_k) : k_reg;
    assign at_last = p_cnt == k_cur - 1;
    assign in_ok = (p_cnt != 0 || q_count != 3'(QD)) && (!at_last || since_last >= 16'(MINP));
    assign s_axis_a_tready = !rst && en && in_ok && s_axis_b_tvalid;
    assign s_axis_b_tready = !rst && en && in_ok && s_axis_a_tvalid;
    assign fire = s_axis_a_tvalid && s_axis_a_tready;
    assign first = fire && p_cnt == 0;
    assign last = fire && at_last;
    assign q_push = first;

    always_ff @(posedge clk) begin
        if (rst) begin
            p_cnt <= '0;
            k_reg <= 16'd1;
            since_last <= 16'(MINP);
            err <= 1'b0;
        end else if (en) begin
            if (last) since_last <= 16'd1;
            else if (since_last != 16'hFFFF) since_last <= since_last + 1'b1;
            if (first) begin
                k_reg <= k_cur;
                if (cfg_k == 0) err <= 1'b1;
            end
            if (fire) begin
                p_cnt <= last ? '0 : p_cnt + 1'b1;
                if (s_axis_a_tlast != last || s_axis_b_tlast != last) err <= 1'b1;
            end
            if (draining && s_axis_e_tlast != (row_sel == RW'(ROWS - 1))) err <= 1'b1;
        end
    end

    // ---------------- configuration queue (one entry per tile in flight) ----------------
    logic [CFG_W-1:0] cfg_q [QD];
    logic [1:0] q_wr, q_rd;
    logic [CFG_W-1:0] head;
    assign head = cfg_q[q_rd];

    always_ff @(posedge clk) begin
        if (rst) begin
            q_wr <= '0;
            q_rd <= '0;
            q_count <= '0;
        end else if (en) begin
            if (q_push) begin
                cfg_q[q_wr] <= {cfg_m, cfg_n, cfg_shift, cfg_mode, cfg_seed, cfg_index_base,
                                cfg_index_stride};
                q_wr <= q_wr + 1'b1;
            end
            if (q_pop) q_rd <= q_rd + 1'b1;
            q_count <= q_count + 3'(q_push) - 3'(q_pop);
        end
    end

    wire [15:0] h_m = head[CFG_W-1 -: 16];
    wire [15:0] h_n = head[CFG_W-17 -: 16];
    wire signed [7:0] h_shift = head[CFG_W-33 -: 8];
    wire h_mode = head[CFG_W-41];
    wire [31:0] h_seed = head[CFG_W-42 -: 32];
    wire [31:0] h_base = head[CFG_W-74 -: 32];
    wire [31:0] h_stride = head[CFG_W-106 -: 32];

    // ---------------- skew: row i delayed by i cycles, column j by j ----------------
    // Horizontal buses: a and flags entering PE(i, j) at index i*(COLS+1)+j; vertical: b at j*(ROWS+1)+i.
    // (operands leaving the last column / row are not used: the array edge)
    /* verilator lint_off UNUSEDSIGNAL */
    logic [ROWS*(COLS+1)*16-1:0] a_bus;
    logic [ROWS*(COLS+1)*2-1:0] f_bus;
    logic [COLS*(ROWS+1)*16-1:0] b_bus;
    /* verilator lint_on UNUSEDSIGNAL */
    logic [ROWS*COLS*ACC_W-1:0] res_bus;

    for (genvar i = 0; i < ROWS; i++) begin : g_askew
        wire [17:0] inj = {fire, last, s_axis_a_tdata[i*16 +: 16]};
        if (i == 0) begin : g_direct
            assign {f_bus[0 +: 2], a_bus[0 +: 16]} = inj;
        end else begin : g_delay
            logic [18*i-1:0] chain;
            always_ff @(posedge clk) begin
                if (rst) chain <= '0;
                else if (en) chain <= (18*i)'({chain, inj});
            end
            assign {f_bus[i*(COLS+1)*2 +: 2], a_bus[i*(COLS+1)*16 +: 16]} = chain[18*i-1 -: 18];
        end
    end

    for (genvar j = 0; j < COLS; j++) begin : g_bskew
        wire [15:0] inj = s_axis_b_tdata[j*16 +: 16];
        if (j == 0) begin : g_direct
            assign b_bus[0 +: 16] = inj;
        end else begin : g_delay
            logic [16*j-1:0] chain;
            always_ff @(posedge clk) if (en) chain <= (16*j)'({chain, inj});
            assign b_bus[j*(ROWS+1)*16 +: 16] = chain[16*j-1 -: 16];
        end
    end

    // ---------------- PE grid ----------------
    for (genvar i = 0; i < ROWS; i++) begin : g_row
        for (genvar j = 0; j < COLS; j++) begin : g_col
            localparam int H = i * (COLS + 1) + j;
            localparam int V = j * (ROWS + 1) + i;
            mac_pe #(.ACC_W(ACC_W)) pe (
                .clk(clk), .rst(rst), .en(en),
                .a_in(a_bus[H*16 +: 16]), .b_in(b_bus[V*16 +: 16]),
                .v_in(f_bus[H*2 + 1]), .last_in(f_bus[H*2]),
                .a_out(a_bus[(H+1)*16 +: 16]), .b_out(b_bus[(V+1)*16 +: 16]),
                .v_out(f_bus[(H+1)*2 + 1]), .last_out(f_bus[(H+1)*2]),
                .res(res_bus[(i*COLS+j)*ACC_W +: ACC_W])
            );
        end
    end

    // Row i is complete the cycle after PE(i, COLS-1) captured it (its registered v & last flags).
    for (genvar i = 0; i < ROWS; i++) begin : g_done
        localparam int E = i * (COLS + 1) + COLS;
        assign row_done[i] = f_bus[E*2 + 1] && f_bus[E*2];
    end

    logic [COLS*ACC_W-1:0] row_res;
    always_comb begin
        row_sel = '0;
        for (int i = 0; i < ROWS; i++) if (row_done[i]) row_sel = RW'(i);
        row_res = res_bus[row_sel*COLS*ACC_W +: COLS*ACC_W];
    end
    assign draining = |row_done;
    assign q_pop = en && draining && row_sel == RW'(ROWS - 1);
    assign s_axis_e_tready = !rst && draining && out_free;

    // ---------------- epilogue: + addend, requantize lanes, peak ----------------
    logic d_valid, d_last;
    logic signed [7:0] d_shift;
    logic d_mode;
    logic [31:0] d_seed;
    logic [COLS*ACC_W-1:0] d_acc;
    logic [31:0] d_index_k;                            // hash32's row_base * K; lane j adds j * K
    logic [COLS-1:0] d_mask;
    wire [31:0] row_base = h_base + 32'(row_sel) * h_stride;

    always_ff @(posedge clk) begin
        if (rst) begin
            d_valid <= 1'b0;
        end else if (en) begin
            d_valid <= |row_done;
            d_last <= row_sel == RW'(ROWS - 1);
            d_shift <= h_shift;
            d_mode <= h_mode;
            d_seed <= h_seed;
            d_index_k <= row_base * 32'h9E3779B9;
            for (int j = 0; j < COLS; j++) begin
                d_acc[j*ACC_W +: ACC_W] <= row_res[j*ACC_W +: ACC_W] + s_axis_e_tdata[j*ACC_W +: ACC_W];
                d_mask[j] <= 16'(row_sel) < h_m && 16'(j) < h_n;
            end
        end
    end

    logic [COLS*16-1:0] q_lanes;
    logic [84:0] rq_dec;       // the lanes' common shift / mode decode
    trilevel_requant_decode u_rq_dec (.clk(clk), .en(en), .shift(d_shift), .mode(d_mode), .dec(rq_dec));
    for (genvar j = 0; j < COLS; j++) begin : g_lane
        trilevel_requant #(.ACC_W(ACC_W), .EXT_DECODE(1'b1)) requant (
            .clk(clk), .en(en), .acc(d_acc[j*ACC_W +: ACC_W]), .shift(d_shift), .mode(d_mode), .dec_in(rq_dec),
            .seed(d_seed), .index_k(d_index_k + 32'(j) * 32'h9E3779B9), .q(q_lanes[j*16 +: 16])
        );
    end

    logic [ACC_W-1:0] row_peak, peak_run;
    logic [ACC_W-1:0] pk_pipe [RQ_LAT];
    logic [RQ_LAT-1:0] v_pipe, l_pipe;
    logic [COLS*ACC_W-1:0] d_mag;
    for (genvar j = 0; j < COLS; j++) begin : g_mag
        wire signed [ACC_W-1:0] v = d_acc[j*ACC_W +: ACC_W];
        assign d_mag[j*ACC_W +: ACC_W] = d_mask[j] ? (v < 0 ? -v : v) : '0;
    end
    always_comb begin
        row_peak = '0;
        for (int j = 0; j < COLS; j++)
            if (d_mag[j*ACC_W +: ACC_W] > row_peak) row_peak = d_mag[j*ACC_W +: ACC_W];
    end
    wire [ACC_W-1:0] peak_with = row_peak > peak_run ? row_peak : peak_run;

    always_ff @(posedge clk) begin
        if (rst) begin
            v_pipe <= '0;
            l_pipe <= '0;
            peak_run <= '0;
            m_axis_c_tvalid <= 1'b0;
            m_axis_c_tlast <= 1'b0;
        end else begin
            if (m_axis_c_tvalid && m_axis_c_tready) m_axis_c_tvalid <= 1'b0;
            if (en) begin
                v_pipe <= {v_pipe[RQ_LAT-2:0], d_valid};
                l_pipe <= {l_pipe[RQ_LAT-2:0], d_valid && d_last};
                pk_pipe[0] <= peak_with;
                for (int s = 1; s < RQ_LAT; s++) pk_pipe[s] <= pk_pipe[s-1];
                if (d_valid) peak_run <= d_last ? '0 : peak_with;
                if (v_pipe[RQ_LAT-1]) begin
                    m_axis_c_tvalid <= 1'b1;
                    m_axis_c_tdata <= q_lanes;
                    m_axis_c_tlast <= l_pipe[RQ_LAT-1];
                    m_axis_c_tuser <= pk_pipe[RQ_LAT-1][47:0];
                end
            end
        end
    end
endmodule
