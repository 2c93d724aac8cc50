// STORE module (docs/engine.md "STORE"): SPM / ACC / IDX / STAT -> DDR, row by row, optional row
// scatter by an IDX list (ta). Mirror image of engine_load: a request side issues one AXI write
// request per row (aligned beats covering the row), a data side reads each beat's element window
// from the memory (one cycle of latency, credit-based so backpressure never drops a beat) and sets
// the byte strobes of the row's elements. The command retires once every write response is back
// (the data is in DDR), then pushes its s2c token (push_prev).
// STAT rows read slots a + r * a_stride + c (int64 each, like ACC).
`timescale 1ns / 1ps
module engine_store #(
    parameter int AW = 40,
    parameter int SPM_ELEMS = 65536,
    parameter int ACC_ELEMS = 16384,
    parameter int IDX_ELEMS = 4096,
    parameter int STAT_SLOTS = 64
) (
    input  logic          clk,
    input  logic          rst,
    input  logic          ce,                  // clock enable (0: the memories are serving a port conflict, hold)
    input  logic          halt,          // do not start the queue head (it follows an error)
    input  logic          abort,         // the current command follows an error: stop waiting for tokens
    input  logic [AW-1:0] ddr_base,      // DDR_BASE: command DDR addresses are offsets from it
    input  logic [511:0]  cmd,
    input  logic [23:0]   cmd_pc,
    input  logic          cmd_valid,
    output logic          cmd_ready,
    input  logic          tok_in_avail,  // c2s queue not empty
    output logic          tok_in_pop,
    input  logic          tok_out_full,  // s2c queue full
    output logic          tok_out_push,
    output logic          wr_req_valid,
    input  logic          wr_req_ready,
    output logic [AW-1:0] wr_req_addr,
    output logic [23:0]   wr_req_beats,
    output logic [127:0]  wr_tdata,
    output logic [15:0]   wr_tstrb,
    output logic          wr_tvalid,
    input  logic          wr_tready,
    input  logic          wr_busy,       // write master has bursts or responses outstanding
    output logic [23:0]   idx_raddr,     // scatter index
    output logic          idx_re,        // idx_raddr is read this cycle (a scatter STORE moving)
    input  logic [15:0]   idx_rdata,
    output logic [1:0]    rd_mem,        // Mem of the window read (0 SPM, 1 ACC, 2 IDX, 3 STAT)
    output logic [23:0]   rd_addr,       // element address of window lane 0
    output logic          rd_en,         // rd_addr is read this cycle
    input  logic [127:0]  rd_data,       // window one cycle later: 8 x 16 bit, or 2 x 64 bit (ACC/STAT)
    output logic [23:0]   cur_pc,        // pc of the command being executed
    output logic          busy,
    output logic          moving,
    output logic          waiting,
    output logic          retire,
    output logic [39:0]   retire_bytes,  // DDR payload bytes of the retiring command (counters)
    output logic          err_valid,
    output logic [7:0]    err_code,
    output logic [23:0]   err_pc
);
    /* verilator lint_off UNUSEDPARAM */
    `include "tl_isa.svh"
    /* verilator lint_on UNUSEDPARAM */

    localparam logic [2:0] S_IDLE = 3'd0, S_CHECK = 3'd1, S_TOKEN = 3'd2, S_RUN = 3'd3, S_DRAIN = 3'd4,
                           S_PUSH = 3'd5;
    logic [2:0] state;

    logic [511:0] c;
    logic [23:0] pc;
    wire [1:0] f_mem = c[TL_C_SUB_LSB +: 2];
    wire [15:0] f_m = c[TL_F_M_LSB +: 16];
    wire [15:0] f_n = c[TL_F_N_LSB +: 16];
    wire [31:0] f_ddr = c[TL_F_INDEX_BASE_LSB +: 32];
    wire [31:0] f_ddr_stride = c[TL_F_INDEX_STRIDE_LSB +: 32];
    wire [23:0] f_a = c[TL_F_A_ADDR_LSB +: 24];
    wire [15:0] f_a_stride = c[TL_F_A_STRIDE_LSB +: 16];
    wire [23:0] f_b = c[TL_F_B_ADDR_LSB +: 24];
    wire f_scatter = c[TL_C_TA_LSB];
    wire f_pop = c[TL_C_POP_PREV_LSB];
    wire f_push = c[TL_C_PUSH_PREV_LSB];

    wire wide = f_mem == 2'd1 || f_mem == 2'd3;      // 8-byte elements
    wire [3:0] esize = wide ? 4'd8 : 4'd2;
    wire [3:0] epb = wide ? 4'd2 : 4'd8;

    wire [47:0] last_elem = 48'(f_a) + 48'(f_m - 16'd1) * 48'(f_a_stride) + 48'(f_n) - 48'd1;
    wire [47:0] mem_elems = f_mem == 2'd0 ? 48'(SPM_ELEMS) : f_mem == 2'd1 ? 48'(ACC_ELEMS) :
                            f_mem == 2'd2 ? 48'(IDX_ELEMS) : 48'(STAT_SLOTS);
    wire [47:0] idx_last = 48'(f_b) + 48'(f_m) - 48'd1;
    wire align_bad = wide ? (f_ddr[2:0] != 0 || f_ddr_stride[2:0] != 0) : (f_ddr[0] || f_ddr_stride[0]);
    logic [7:0] check_code;
    always_comb begin
        check_code = TL_ERR_NONE;
        if (f_m == 0 || f_n == 0) check_code = TL_ERR_BAD_DIMS;
        else if (last_elem >= mem_elems || (f_scatter && idx_last >= 48'(IDX_ELEMS))) check_code = TL_ERR_SPM_RANGE;
        else if (align_bad) check_code = TL_ERR_DDR_RANGE;
    end

    // ---- request side
    logic [15:0] rq_row;
    logic rq_done, rq_phase;
    logic [AW-1:0] rq_lin;
    logic [23:0] rq_spm;
    wire [AW-1:0] row_addr = f_scatter ? ddr_base + AW'(f_ddr) + AW'(idx_rdata) * AW'(f_ddr_stride) : rq_lin;
    wire [3:0] off_b = row_addr[3:0];
    wire [23:0] row_bytes = 24'(off_b) + 24'(f_n) * 24'(esize);
    wire [23:0] row_beats = (row_bytes + 24'd15) >> 4;
    wire [2:0] off_e = wide ? 3'(off_b[3]) : off_b[3:1];

    logic dq_push, dq_pop, dq_empty, dq_full;
    logic [50:0] dq_din, dq_dout;
    logic [4:0] dq_count;
    engine_fifo #(.W(51), .DEPTH(16)) u_desc (
        .clk(clk), .rst(rst), .push(ce && (dq_push)), .din(dq_din), .pop(ce && (dq_pop)), .dout(dq_dout),
        .empty(dq_empty), .full(dq_full), .count(dq_count)
    );
    assign dq_din = {rq_spm, off_e, row_beats};
    wire rq_can = state == S_RUN && !rq_done && (!f_scatter || rq_phase) && !dq_full;
    assign wr_req_valid = rq_can;
    assign wr_req_addr = {row_addr[AW-1:4], 4'd0};
    assign wr_req_beats = row_beats;
    wire rq_fire = rq_can && wr_req_ready;
    assign dq_push = rq_fire;
    assign idx_raddr = f_b + 24'(rq_row);
    assign idx_re = state == S_RUN && f_scatter;

    // ---- data side: issue window reads while the output FIFO has room (credits)
    wire [23:0] d_spm = dq_dout[50:27];
    wire [2:0] d_off = dq_dout[26:24];
    wire [23:0] d_beats = dq_dout[23:0];
    logic [23:0] d_t;
    logic [2:0] of_count;
    logic of_empty, of_full, of_pop;
    logic [143:0] of_dout;
    logic p_valid;                           // a window read issued last cycle
    logic [15:0] p_strb;
    wire d_go = state == S_RUN && !dq_empty && (32'(of_count) + 32'(p_valid) < 32'd3);
    wire d_last = d_t == d_beats - 24'd1;
    assign dq_pop = d_go && d_last;
    wire [26:0] t_elems = 27'(d_t) * 27'(epb);
    assign rd_mem = f_mem;
    assign rd_addr = d_spm - 24'(d_off) + t_elems[23:0];
    assign rd_en = d_go;
    logic [15:0] strb;
    always_comb begin
        strb = '0;
        for (int l = 0; l < 8; l++) begin
            logic [26:0] e;
            logic ok;
            e = t_elems + 27'(l);
            ok = l < epb && e >= 27'(d_off) && e - 27'(d_off) < 27'(f_n);
            if (wide) begin
                if (l < 2 && ok) strb[l*8 +: 8] = 8'hFF;
            end else if (ok) begin
                strb[l*2 +: 2] = 2'b11;
            end
        end
    end
    engine_fifo #(.W(144), .DEPTH(4)) u_out (
        .clk(clk), .rst(rst), .push(ce && (p_valid)), .din({p_strb, rd_data}), .pop(ce && (of_pop)), .dout(of_dout),
        .empty(of_empty), .full(of_full), .count(of_count)
    );
    assign wr_tvalid = !of_empty;
    assign wr_tdata = of_dout[127:0];
    assign wr_tstrb = of_dout[143:128];
    assign of_pop = wr_tvalid && wr_tready;

    assign cmd_ready = state == S_IDLE && !halt && !err_valid;   // not in the cycle an error is raised
    assign cur_pc = pc;
    assign retire_bytes = 40'(f_m) * 40'(f_n) * 40'(esize);
    assign tok_in_pop = state == S_TOKEN && f_pop && tok_in_avail;
    assign tok_out_push = state == S_PUSH && f_push && !tok_out_full;
    assign busy = state != S_IDLE || !of_empty || p_valid;
    assign moving = state == S_RUN || state == S_DRAIN;
    assign waiting = state == S_TOKEN && f_pop && !tok_in_avail;
    assign retire = state == S_PUSH && (!f_push || !tok_out_full);

    always_ff @(posedge clk) if (rst || ce) begin
        if (rst) begin
            state <= S_IDLE;
            err_valid <= 1'b0;
            err_code <= '0;
            err_pc <= '0;
            rq_done <= 1'b0;
            rq_phase <= 1'b0;
            rq_row <= '0;
            d_t <= '0;
            p_valid <= 1'b0;
            p_strb <= '0;
            c <= '0;
            pc <= '0;
            rq_lin <= '0;
            rq_spm <= '0;
        end else begin
            err_valid <= 1'b0;
            p_valid <= d_go;
            p_strb <= strb;
            case (state)
                S_IDLE: if (cmd_valid && cmd_ready) begin
                    c <= cmd;
                    pc <= cmd_pc;
                    state <= S_CHECK;
                end
                S_CHECK: begin
                    rq_row <= '0;
                    rq_done <= 1'b0;
                    rq_phase <= 1'b0;
                    rq_lin <= ddr_base + AW'(f_ddr);
                    rq_spm <= f_a;
                    d_t <= '0;
                    if (check_code != TL_ERR_NONE) begin
                        err_valid <= 1'b1;
                        err_code <= check_code;
                        err_pc <= pc;
                        state <= S_IDLE;
                    end else begin
                        state <= S_TOKEN;
                    end
                end
                S_TOKEN: if (!f_pop || tok_in_avail || abort) state <= (abort && f_pop && !tok_in_avail) ? S_IDLE : S_RUN;
                S_RUN: begin
                    if (f_scatter && !rq_done && !rq_phase) rq_phase <= 1'b1;
                    if (rq_fire) begin
                        rq_phase <= 1'b0;
                        rq_row <= rq_row + 1'b1;
                        rq_lin <= rq_lin + AW'(f_ddr_stride);
                        rq_spm <= rq_spm + 24'(f_a_stride);
                        if (rq_row == f_m - 16'd1) rq_done <= 1'b1;
                    end
                    if (d_go) d_t <= d_last ? '0 : d_t + 1'b1;
                    if (rq_done && dq_empty) state <= S_DRAIN;
                end
                S_DRAIN: if (of_empty && !p_valid && !wr_busy) state <= S_PUSH;
                S_PUSH: if (!f_push || !tok_out_full) state <= S_IDLE;
                default: state <= S_IDLE;
            endcase
        end
    end

    /* verilator lint_off UNUSEDSIGNAL */
    wire unused = ^{c, row_bytes[3:0], t_elems[26:24], of_full, dq_count};
    /* verilator lint_on UNUSEDSIGNAL */
endmodule
