// Top-k selection (docs/numerics.md 1.4): a frame of n signed scores in, the k selected indices out
// in ascending order. Element i beats j iff s[i] > s[j], or s[i] == s[j] and i < j; i is selected
// iff fewer than k elements beat it.
//
// Datapath: while a frame streams in (one score per cycle), it is written to one of two score banks
// and inserted into a sorted list of NMAX / 2 (score, index) entries (one parallel compare per entry,
// a shift-register insertion). When 2k <= n the list keeps the best entries and, after the n-th score,
// its entry k-1 is the threshold: element i is selected iff (s[i], i) is at or above it. Otherwise the
// list keeps the worst entries (worst first) and its entry n-k-1 is the best of the n-k unselected:
// element i is selected iff (s[i], i) is strictly above it (k = n: every element). Either way the list
// holds at most min(k, n - k) <= NMAX / 2 entries that matter. A scanner re-reads the bank in index order
// and emits the selected indices, overlapped with the next frame's input (ping-pong banks).
// Timing without backpressure: latency 2n + 2 cycles (first input beat to the beat of index n-1),
// one frame every n + 1 cycles back to back (trilevel.rtl_cycles.topk_*).
//
// Configuration is sideband (Vitis ap_none scalars): cfg_n and cfg_k are sampled with the first
// beat of each frame. The frame is n beats; s_axis_tlast is only checked. `err` (sticky until
// reset) flags n outside [1, NMAX], k outside [1, n] (the unit clamps them) or a misplaced tlast.
`timescale 1ns / 1ps
module topk_unit #(
    parameter int NMAX = 256,
    parameter int SCORE_W = 32,
    // Mutation hook for the testbench's self-check: 1 flips the tie-break to "higher index wins".
    parameter bit TIE_BREAK_BUG = 1'b0
) (
    input  logic               clk,
    input  logic               rst,
    input  logic [15:0]        cfg_n,
    input  logic [15:0]        cfg_k,
    input  logic [SCORE_W-1:0] s_axis_tdata,
    input  logic               s_axis_tvalid,
    output logic               s_axis_tready,
    input  logic               s_axis_tlast,
    output logic [15:0]        m_axis_tdata,
    output logic               m_axis_tvalid,
    input  logic               m_axis_tready,
    output logic               m_axis_tlast,
    output logic               err
);
    localparam int IW = $clog2(NMAX);
    localparam int LIST = NMAX > 1 ? NMAX / 2 : 1;   // list entries: min(k, n - k) <= NMAX / 2

    // ---------------- input side: bank write + sorted-list insertion ----------------
    logic signed [SCORE_W-1:0] list_s [LIST];
    logic [IW-1:0] list_i [LIST];
    logic [LIST-1:0] list_v;
    logic [SCORE_W-1:0] mem [2*NMAX];

    logic [IW-1:0] in_cnt;      // index of the next beat within the frame
    logic [IW:0] n_reg, k_reg;  // the frame's clamped n and k
    logic [IW:0] n_eff, k_eff;
    logic wbank, list_done, in_fire, first_beat, last_beat, handoff;
    logic worst;                // this frame's list keeps the worst entries (2k > n)
    logic signed [SCORE_W-1:0] x_s;

    assign s_axis_tready = !rst && !list_done;
    assign in_fire = s_axis_tvalid && s_axis_tready;
    assign first_beat = in_cnt == '0;
    assign x_s = s_axis_tdata;

    // Clamped configuration, used on the first beat.
    always_comb begin
        if (cfg_n == 16'd0) n_eff = 1;
        else if (cfg_n > 16'(NMAX)) n_eff = (IW+1)'(NMAX);
        else n_eff = cfg_n[IW:0];
        if (cfg_k == 16'd0) k_eff = 1;
        else if (cfg_k > 16'(n_eff)) k_eff = n_eff;
        else k_eff = cfg_k[IW:0];
    end

    wire [IW:0] frame_n = first_beat ? n_eff : n_reg;
    assign last_beat = {1'b0, in_cnt} == frame_n - 1;

    // A new beat arrives with the highest index so far: it goes before an entry iff the entry is empty or
    // its score is strictly larger (best first; equal scores keep the earlier index first), or, when the
    // list keeps the worst entries, iff its score is at most the entry's (worst first: of equal scores the
    // later index is worse). The LIST compares sit in the enabled insertion (a register update per accepted
    // beat), so an idle unit evaluates none of them; entries pushed past the list's end are not needed.
    always_ff @(posedge clk) begin
        if (in_fire) begin
            logic [LIST-1:0] beats;     // beats[j]: the incoming score goes before list entry j
            for (int j = 0; j < LIST; j++) begin
                logic gt;
                gt = TIE_BREAK_BUG ? x_s >= list_s[j] : x_s > list_s[j];
                if (first_beat || !list_v[j]) beats[j] = 1'b1;
                else beats[j] = gt != worst;
            end
            mem[{wbank, in_cnt}] <= s_axis_tdata;
            for (int j = 0; j < LIST; j++) begin
                if (first_beat) list_v[j] <= j == 0;
                else if (beats[j]) list_v[j] <= j > 0 && beats[j > 0 ? j - 1 : 0] ? list_v[j > 0 ? j - 1 : 0] : 1'b1;
                if (beats[j]) begin
                    if (j > 0 && beats[j > 0 ? j - 1 : 0]) begin
                        list_s[j] <= list_s[j > 0 ? j - 1 : 0];
                        list_i[j] <= list_i[j > 0 ? j - 1 : 0];
                    end else begin
                        list_s[j] <= x_s;
                        list_i[j] <= in_cnt;
                    end
                end
            end
        end
        if (rst) list_v <= '0;
    end

    always_ff @(posedge clk) begin
        if (rst) begin
            in_cnt <= '0;
            list_done <= 1'b0;
            wbank <= 1'b0;
            n_reg <= 1;
            k_reg <= 1;
            worst <= 1'b0;
            err <= 1'b0;
        end else begin
            if (in_fire) begin
                if (first_beat) begin
                    n_reg <= n_eff;
                    k_reg <= k_eff;
                    worst <= {k_eff, 1'b0} > {1'b0, n_eff};
                    if (cfg_n == 16'd0 || cfg_n > 16'(NMAX) || cfg_k == 16'd0 || cfg_k > cfg_n) err <= 1'b1;
                end
                if (s_axis_tlast != last_beat) err <= 1'b1;
                if (last_beat) begin
                    in_cnt <= '0;
                    list_done <= 1'b1;
                end else begin
                    in_cnt <= in_cnt + 1'b1;
                end
            end
            if (handoff) begin
                list_done <= 1'b0;
                wbank <= !wbank;
            end
        end
    end

    // ---------------- scanner: re-read the bank, emit indices at or above the threshold ----------------
    logic en;                       // pipeline advance (stalls only on output backpressure)
    logic sc_active, sc_bank;
    logic [IW-1:0] sc_addr;
    logic [IW:0] sc_n, sc_k;
    logic signed [SCORE_W-1:0] sc_thr_s;
    logic [IW-1:0] sc_thr_i;
    logic sc_worst, sc_all;         // the threshold is the best unselected entry; k = n (all selected)
    logic sc_issue_last;
    // read stage
    logic rd_valid;
    logic [IW-1:0] rd_idx;
    logic [SCORE_W-1:0] rd_data;
    logic signed [SCORE_W-1:0] rd_thr_s;
    logic [IW-1:0] rd_thr_i;
    logic rd_worst, rd_all;
    logic [IW:0] rd_k;
    logic [IW:0] out_cnt;           // selected indices emitted in the current frame
    logic rd_sel;

    assign en = !m_axis_tvalid || m_axis_tready;
    // the threshold entry: k-1 of the best, or n-k-1 of the worst (k < n; unused when k = n)
    /* verilator lint_off UNUSEDSIGNAL */
    wire [IW:0] thr_pos = worst ? n_reg - k_reg - 1'b1 : k_reg - 1'b1;   // < LIST (see LIST)
    /* verilator lint_on UNUSEDSIGNAL */
    wire [$clog2(LIST > 1 ? LIST : 2)-1:0] thr_at = $bits(thr_at)'(thr_pos);
    assign sc_issue_last = sc_active && en && {1'b0, sc_addr} == sc_n - 1;
    assign handoff = list_done && (!sc_active || sc_issue_last);

    always_ff @(posedge clk) begin
        if (rst) begin
            sc_active <= 1'b0;
            sc_addr <= '0;
            sc_bank <= 1'b0;
        end else if (handoff) begin
            sc_active <= 1'b1;
            sc_addr <= '0;
            sc_bank <= wbank;
            sc_n <= n_reg;
            sc_k <= k_reg;
            sc_worst <= worst;
            sc_all <= k_reg == n_reg;
            sc_thr_s <= list_s[thr_at];
            sc_thr_i <= list_i[thr_at];
        end else if (sc_active && en) begin
            if (sc_issue_last) sc_active <= 1'b0;
            sc_addr <= sc_addr + 1'b1;
        end
    end

    always_ff @(posedge clk) begin
        if (rst) begin
            rd_valid <= 1'b0;
        end else if (en) begin
            rd_valid <= sc_active;
            rd_data <= mem[{sc_bank, sc_addr}];
            rd_idx <= sc_addr;
            rd_thr_s <= sc_thr_s;
            rd_thr_i <= sc_thr_i;
            rd_worst <= sc_worst;
            rd_all <= sc_all;
            rd_k <= sc_k;
        end
    end

    // at or above the k-th best, or strictly above the best unselected (of the n - k worst)
    assign rd_sel = rd_all || $signed(rd_data) > rd_thr_s
                    || ($signed(rd_data) == rd_thr_s && (rd_worst ? rd_idx < rd_thr_i : rd_idx <= rd_thr_i));

    always_ff @(posedge clk) begin
        if (rst) begin
            m_axis_tvalid <= 1'b0;
            m_axis_tlast <= 1'b0;
            m_axis_tdata <= '0;
            out_cnt <= '0;
        end else if (en) begin
            m_axis_tvalid <= rd_valid && rd_sel;
            if (rd_valid && rd_sel) begin
                m_axis_tdata <= 16'(rd_idx);
                m_axis_tlast <= out_cnt == rd_k - 1;
                out_cnt <= out_cnt == rd_k - 1 ? '0 : out_cnt + 1'b1;
            end
        end
    end
endmodule
