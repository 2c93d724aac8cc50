// TOPK unit of the engine (docs/engine.md "TOPK"): for each row i < m of n ACC scores
// ACC[a_addr + i*a_stride + j], writes IDX[c_addr + i*c_stride + t] = t for t < imm (the leading
// dense keys), followed by the k winners + imm in ascending order (intref.fixed.topk_select: larger
// score first, lower index on ties; the scores are the ACC values saturated to int32). The selection is
// topk_unit (one score per cycle in, one index per cycle out); rows run one after another: about
// 2 (n + 1) cycles per row.
`timescale 1ns / 1ps
module engine_topk #(
    parameter int AL = 4,               // ACC window lanes (lane 0 is used)
    parameter int ACC_ELEMS = 16384,
    parameter int IDX_ELEMS = 4096,
    parameter int MAX_ROW = 256
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
    output logic [23:0]       acc_raddr,
    input  logic [AL*48-1:0]  acc_rdata,
    output logic              idx_we,
    output logic [23:0]       idx_waddr,
    output logic [15:0]       idx_wdata
);
    /* verilator lint_off UNUSEDPARAM */
    `include "tl_isa.svh"
    /* verilator lint_on UNUSEDPARAM */

    logic [511:0] c;
    wire [15:0] f_m = c[TL_F_M_LSB +: 16];
    wire [15:0] f_n = c[TL_F_N_LSB +: 16];
    wire [15:0] f_k = c[TL_F_K_LSB +: 16];
    wire [23:0] f_a = c[TL_F_A_ADDR_LSB +: 24];
    wire [15:0] f_as = c[TL_F_A_STRIDE_LSB +: 16];
    wire [23:0] f_c = c[TL_F_C_ADDR_LSB +: 24];
    wire [15:0] f_cs = c[TL_F_C_STRIDE_LSB +: 16];
    wire signed [31:0] f_lead = c[TL_F_IMM_LSB +: 32];

    // checks in fsim's order: dims, k > n or imm < 0, n > max_row (BAD_DIMS), ACC A, IDX C (SPM_RANGE)
    wire [47:0] a_last = 48'(f_a) + 48'(f_m - 16'd1) * 48'(f_as) + 48'(f_n) - 48'd1;
    wire [47:0] c_last = 48'(f_c) + 48'(f_m - 16'd1) * 48'(f_cs) + 48'(f_lead) + 48'(f_k) - 48'd1;
    logic [7:0] check_code;
    always_comb begin
        check_code = TL_ERR_NONE;
        if (f_m == 0 || f_n == 0 || f_k == 0 || f_k > f_n || f_lead < 0 || 32'(f_n) > 32'(MAX_ROW))
            check_code = TL_ERR_BAD_DIMS;
        else if (a_last >= 48'(ACC_ELEMS) || c_last >= 48'(IDX_ELEMS))
            check_code = TL_ERR_SPM_RANGE;
    end

    localparam logic [2:0] S_IDLE = 3'd0, S_CHECK = 3'd1, S_LEAD = 3'd2, S_ROW = 3'd3, S_DONE = 3'd4;
    logic [2:0] state;
    logic [15:0] row, j, got;
    logic [31:0] t;
    wire [23:0] row_a = f_a + 24'(32'(row) * 32'(f_as));
    wire [23:0] row_c = f_c + 24'(32'(row) * 32'(f_cs));

    // score feed: ACC read (one cycle) -> int32 saturation -> 2-entry FIFO -> topk_unit
    logic rd_v;
    logic sq_empty, sq_full, sq_pop;
    logic [31:0] sq_dout;
    wire [47:0] score = acc_rdata[47:0];
    wire fits32 = score[47:31] == {17{score[47]}};
    wire [31:0] score32 = fits32 ? score[31:0] : {score[47], {31{!score[47]}}};
    logic [1:0] sq_count;
    wire feed = state == S_ROW && j < f_n && 32'(sq_count) + 32'(rd_v) < 32'd2;
    assign acc_raddr = row_a + 24'(j);
    engine_fifo #(.W(32), .DEPTH(2)) u_scores (
        .clk(clk), .rst(rst || state == S_IDLE), .push(ce && (rd_v)), .din(score32), .pop(ce && (sq_pop)),
        .dout(sq_dout), .empty(sq_empty), .full(sq_full), .count(sq_count)
    );

    logic s_tready, m_tvalid, m_tlast, unit_err;
    logic [15:0] m_tdata;
    assign sq_pop = !sq_empty && s_tready;
    topk_unit #(.NMAX(MAX_ROW), .SCORE_W(32)) u_unit (
        .clk(clk), .rst(rst), .cfg_n(f_n), .cfg_k(f_k),
        .s_axis_tdata(sq_dout), .s_axis_tvalid(ce && !sq_empty), .s_axis_tready(s_tready), .s_axis_tlast(1'b0),
        .m_axis_tdata(m_tdata), .m_axis_tvalid(m_tvalid), .m_axis_tready(ce), .m_axis_tlast(m_tlast),
        .err(unit_err)
    );

    // IDX writes: the leading keys (S_LEAD), then each winner as it leaves the unit
    assign idx_we = (state == S_LEAD && t < 32'(f_lead)) || (state == S_ROW && m_tvalid);
    assign idx_waddr = state == S_LEAD ? row_c + 24'(t) : row_c + 24'(f_lead) + 24'(got);
    assign idx_wdata = state == S_LEAD ? 16'(t) : m_tdata + 16'(f_lead);
    assign busy = state != S_IDLE;

    always_ff @(posedge clk) if (rst || ce) begin
        if (rst) begin
            state <= S_IDLE;
            c <= '0;
            done <= 1'b0;
            err_valid <= 1'b0;
            err_code <= '0;
            rd_v <= 1'b0;
            row <= '0;
            j <= '0;
            got <= '0;
            t <= '0;
        end else begin
            done <= 1'b0;
            err_valid <= 1'b0;
            rd_v <= feed;
            case (state)
                S_IDLE: if (start) begin
                    c <= cmd;
                    state <= S_CHECK;
                end
                S_CHECK: begin
                    row <= '0;
                    t <= '0;
                    if (check_code != TL_ERR_NONE) begin
                        err_valid <= 1'b1;
                        err_code <= check_code;
                        state <= S_IDLE;
                    end else begin
                        state <= S_LEAD;
                    end
                end
                S_LEAD: begin                      // imm leading entries of this row
                    if (t < 32'(f_lead)) t <= t + 1'b1;
                    else begin
                        j <= '0;
                        got <= '0;
                        state <= S_ROW;
                    end
                end
                S_ROW: begin
                    if (feed) j <= j + 1'b1;
                    if (m_tvalid) begin
                        got <= got + 1'b1;
                        if (m_tlast) begin
                            t <= '0;
                            if (row == f_m - 16'd1) state <= S_DONE;
                            else begin
                                row <= row + 1'b1;
                                state <= S_LEAD;
                            end
                        end
                    end
                end
                S_DONE: begin
                    done <= 1'b1;
                    state <= S_IDLE;
                end
                default: state <= S_IDLE;
            endcase
        end
    end

    /* verilator lint_off UNUSEDSIGNAL */
    wire unused = ^{c, acc_rdata, sq_full, unit_err};
    /* verilator lint_on UNUSEDSIGNAL */
endmodule
