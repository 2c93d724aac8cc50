// LOAD module (docs/engine.md "LOAD"): DDR -> SPM / ACC / IDX, row by row, optional row gather by an
// IDX list (ta) or zero fill (tb). A request side walks the rows (reading the gather index first)
// and issues one AXI read request per row (the read master splits it into bursts); a data side
// writes the returned beats into the memory through its unaligned window port, so DDR rows need
// only element alignment: beat t of a row whose start is e elements into its 16-byte beat writes
// elements [t*EPB - e, t*EPB - e + EPB) of the row, masked to [0, n).
// Dependency tokens: pop_next waits for a c2l token, push_next sends an l2c token after the data is
// in the memory. Range errors are found before any data moves (ERR with this command's pc).
`timescale 1ns / 1ps
module engine_load #(
    parameter int AW = 40,
    parameter int SPM_ELEMS = 65536,
    parameter int ACC_ELEMS = 16384,
    parameter int IDX_ELEMS = 4096,
    parameter int MUTATE_STRIDE = 0      // test only: rows advance by one element too many
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
    input  logic          tok_in_avail,  // c2l queue not empty
    output logic          tok_in_pop,
    input  logic          tok_out_full,  // l2c queue full
    output logic          tok_out_push,
    output logic          rd_req_valid,
    input  logic          rd_req_ready,
    output logic [AW-1:0] rd_req_addr,
    output logic [23:0]   rd_req_beats,
    input  logic [127:0]  rd_tdata,
    input  logic          rd_tvalid,
    output logic          rd_tready,
    output logic [23:0]   idx_raddr,
    output logic          idx_re,        // idx_raddr is read this cycle (a gather LOAD moving)
    input  logic [15:0]   idx_rdata,     // IDX[idx_raddr], one cycle later
    output logic          wr_en,
    output logic [1:0]    wr_mem,        // Mem: 0 SPM, 1 ACC, 2 IDX
    output logic [23:0]   wr_addr,       // element address of window lane 0 (may wrap below 0)
    output logic [7:0]    wr_mask,       // per element lane (ACC: lanes 0..1)
    output logic [127:0]  wr_data,       // the raw DDR beat
    output logic [23:0]   cur_pc,        // pc of the command being executed
    output logic          busy,          // executing a command
    output logic          moving,        // moving data (LOAD_BUSY counter)
    output logic          waiting,       // blocked on a token pop
    output logic          retire,
    output logic [39:0]   retire_bytes,  // DDR payload bytes of the retiring command (counters)
    output logic          err_valid,
    output logic [7:0]    err_code,
    output logic [23:0]   err_pc
);
    /* verilator lint_off UNUSEDPARAM */
    `include "tl_isa.svh"
    /* verilator lint_on UNUSEDPARAM */

    localparam logic [2:0] S_IDLE = 3'd0, S_CHECK = 3'd1, S_TOKEN = 3'd2, S_RUN = 3'd3, S_PUSH = 3'd4;
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
    wire f_gather = c[TL_C_TA_LSB];
    wire f_zero = c[TL_C_TB_LSB];
    wire f_pop = c[TL_C_POP_NEXT_LSB];
    wire f_push = c[TL_C_PUSH_NEXT_LSB];

    // element size: SPM/IDX 2 bytes (8 per beat), ACC 8 bytes (2 per beat)
    wire is_acc = f_mem == 2'd1;
    wire [3:0] esize = is_acc ? 4'd8 : 4'd2;
    wire [3:0] epb = is_acc ? 4'd2 : 4'd8;

    // ---- range checks (S_CHECK)
    wire [47:0] last_elem = 48'(f_a) + 48'(f_m - 16'd1) * 48'(f_a_stride) + 48'(f_n) - 48'd1;
    wire [47:0] mem_elems = f_mem == 2'd0 ? 48'(SPM_ELEMS) : f_mem == 2'd1 ? 48'(ACC_ELEMS) : 48'(IDX_ELEMS);
    wire [47:0] idx_last = 48'(f_b) + 48'(f_m) - 48'd1;
    wire align_bad = is_acc ? (f_ddr[2:0] != 0 || f_ddr_stride[2:0] != 0) : (f_ddr[0] || f_ddr_stride[0]);
    logic [7:0] check_code;
    always_comb begin
        check_code = TL_ERR_NONE;
        if (f_m == 0 || f_n == 0) check_code = TL_ERR_BAD_DIMS;
        else if (last_elem >= mem_elems || (f_gather && !f_zero && idx_last >= 48'(IDX_ELEMS)))
            check_code = TL_ERR_SPM_RANGE;
        else if (align_bad && !f_zero) check_code = TL_ERR_DDR_RANGE;
    end

    // ---- request side
    logic [15:0] rq_row;
    logic rq_done, rq_phase;        // rq_phase: gather index read issued, data valid this cycle
    logic [AW-1:0] rq_lin;          // ddr + r * stride (linear rows)
    logic [23:0] rq_spm;            // a + r * a_stride
    wire [AW-1:0] row_addr = f_gather ? ddr_base + AW'(f_ddr) + AW'(idx_rdata) * AW'(f_ddr_stride) : rq_lin;
    wire [3:0] off_b = f_zero ? 4'd0 : row_addr[3:0];
    wire [23:0] row_bytes = 24'(off_b) + 24'(f_n) * 24'(esize);
    wire [23:0] row_beats = (row_bytes + 24'd15) >> 4;
    wire [2:0] off_e = is_acc ? 3'(off_b[3]) : off_b[3:1];

    logic dq_push, dq_pop, dq_empty, dq_full;
    logic [50:0] dq_din, dq_dout;
    logic [4:0] dq_count;
    engine_fifo #(.W(51), .DEPTH(16)) u_desc (
        .clk(clk), .rst(rst), .push(ce && (dq_push)), .din(dq_din), .pop(ce && (dq_pop)), .dout(dq_dout),
        .empty(dq_empty), .full(dq_full), .count(dq_count)
    );
    assign dq_din = {rq_spm, off_e, row_beats};
    wire rq_can = state == S_RUN && !rq_done && (!f_gather || rq_phase) && !dq_full;
    assign rd_req_valid = rq_can && !f_zero;
    assign rd_req_addr = {row_addr[AW-1:4], 4'd0};
    assign rd_req_beats = row_beats;
    wire rq_fire = rq_can && (f_zero || rd_req_ready);
    assign dq_push = rq_fire;
    assign idx_raddr = f_b + 24'(rq_row);
    assign idx_re = state == S_RUN && f_gather;

    // ---- data side
    wire [23:0] d_spm = dq_dout[50:27];
    wire [2:0] d_off = dq_dout[26:24];
    wire [23:0] d_beats = dq_dout[23:0];
    logic [23:0] d_t;
    wire d_src = f_zero || rd_tvalid;
    wire d_go = state == S_RUN && !dq_empty && d_src;
    wire d_last = d_t == d_beats - 24'd1;
    assign rd_tready = state == S_RUN && !dq_empty && !f_zero;
    assign dq_pop = d_go && d_last;
    wire [26:0] t_elems = 27'(d_t) * 27'(epb);      // element index of window lane 0 in the row + d_off
    assign wr_en = d_go;
    assign wr_mem = f_mem;
    assign wr_addr = d_spm - 24'(d_off) + t_elems[23:0];
    assign wr_data = f_zero ? 128'd0 : rd_tdata;
    always_comb begin
        for (int l = 0; l < 8; l++) begin
            logic [26:0] e;
            e = t_elems + 27'(l);
            wr_mask[l] = l < epb && e >= 27'(d_off) && e - 27'(d_off) < 27'(f_n);
        end
    end
    // an ACC value outside the signed 48-bit range
    logic acc_bad;
    always_comb begin
        acc_bad = 1'b0;
        for (int l = 0; l < 2; l++)
            // |value| >= 2**47 (fsim's ACC_RANGE), i.e. outside [-2**47 + 1, 2**47 - 1]
            if (wr_mask[l] && (rd_tdata[l*64 + 47 +: 17] != {17{rd_tdata[l*64 + 47]}} ||
                               rd_tdata[l*64 +: 48] == 48'h8000_0000_0000)) acc_bad = 1'b1;
    end

    assign cmd_ready = state == S_IDLE && !halt && !err_valid;   // not in the cycle an error is raised
    assign cur_pc = pc;
    assign retire_bytes = f_zero ? 40'd0 : 40'(f_m) * 40'(f_n) * 40'(esize);
    assign tok_in_pop = state == S_TOKEN && (!f_pop || tok_in_avail) && f_pop;
    assign tok_out_push = state == S_PUSH && f_push && !tok_out_full;
    assign busy = state != S_IDLE;
    assign moving = state == S_RUN;
    assign waiting = state == S_TOKEN && f_pop && !tok_in_avail;
    assign retire = state == S_PUSH && (!f_push || !tok_out_full);

    logic acc_err;
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
            acc_err <= 1'b0;
            c <= '0;
            pc <= '0;
            rq_lin <= '0;
            rq_spm <= '0;
        end else begin
            err_valid <= 1'b0;
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
                    acc_err <= 1'b0;
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
                    // gather: one cycle to read IDX[b + r], then the request
                    if (f_gather && !rq_done && !rq_phase) rq_phase <= 1'b1;
                    if (rq_fire) begin
                        rq_phase <= 1'b0;
                        rq_row <= rq_row + 1'b1;
                        rq_lin <= rq_lin + AW'(f_ddr_stride) + AW'(MUTATE_STRIDE * 2);
                        rq_spm <= rq_spm + 24'(f_a_stride);
                        if (rq_row == f_m - 16'd1) rq_done <= 1'b1;
                    end
                    if (d_go) begin
                        d_t <= d_last ? '0 : d_t + 1'b1;
                        if (is_acc && !f_zero && acc_bad) acc_err <= 1'b1;
                    end
                    if (rq_done && dq_empty) begin
                        if (acc_err) begin
                            err_valid <= 1'b1;
                            err_code <= TL_ERR_ACC_RANGE;
                            err_pc <= pc;
                            state <= S_IDLE;
                        end else begin
                            state <= S_PUSH;
                        end
                    end
                end
                S_PUSH: if (!f_push || !tok_out_full) state <= S_IDLE;
                default: state <= S_IDLE;
            endcase
        end
    end

    /* verilator lint_off UNUSEDSIGNAL */
    wire unused = ^{c, row_bytes[3:0], t_elems[26:24], dq_count};
    /* verilator lint_on UNUSEDSIGNAL */
endmodule
