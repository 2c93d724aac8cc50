// COMPUTE module: pops its command queue in order; waits for the tokens its pop flags ask for
// (pop_prev: l2c from LOAD, pop_next: s2c from STORE), executes, pushes its tokens (push_prev: c2l,
// push_next: c2s). FINISH raises `finish` and completes when the top reports the engine drained.
// Arithmetic commands run on their unit (start pulse with the command, then done or err); an opcode
// whose unit is not built (UNITS bit clear: SOFTMAX and VEC so far) stops the engine with
// BAD_OPCODE at its pc (never a hang).
`timescale 1ns / 1ps
module engine_compute #(
    parameter logic [15:0] UNITS = 16'h0048   // opcodes with a unit: GEMM (3), TOPK (6)
) (
    input  logic          clk,
    input  logic          rst,
    input  logic          ce,                  // clock enable (0: the memories are serving a port conflict, hold)
    input  logic          halt,          // do not start the queue head (it follows an error)
    input  logic          abort,         // the current command follows an error: stop waiting for tokens
    input  logic [511:0]  cmd,
    input  logic [23:0]   cmd_pc,
    input  logic          cmd_valid,
    output logic          cmd_ready,
    input  logic          l2c_avail,
    output logic          l2c_pop,
    input  logic          s2c_avail,
    output logic          s2c_pop,
    input  logic          c2l_full,
    output logic          c2l_push,
    input  logic          c2s_full,
    output logic          c2s_push,
    output logic          unit_start,    // pulse: run `unit_cmd` on the unit of its opcode
    output logic [511:0]  unit_cmd,
    input  logic          unit_done,
    input  logic          unit_err,
    input  logic [7:0]    unit_err_code,
    output logic          finish,        // FINISH reached (after its token pops)
    input  logic          drained,       // the top saw every queue empty and every module idle
    output logic [23:0]   cur_pc,
    output logic          busy,
    output logic          waiting,       // blocked on a token pop (either queue)
    output logic          waiting_load,  // blocked on l2c (DMA_STALL counter)
    output logic          retire,
    output logic          finish_done,   // FINISH retired: the program has ended
    output logic          err_valid,
    output logic [7:0]    err_code,
    output logic [23:0]   err_pc
);
    /* verilator lint_off UNUSEDPARAM */
    `include "tl_isa.svh"
    /* verilator lint_on UNUSEDPARAM */

    localparam logic [2:0] S_IDLE = 3'd0, S_TOKEN = 3'd1, S_EXEC = 3'd2, S_PUSH = 3'd3;
    logic [2:0] state;
    logic [511:0] c;
    logic [23:0] pc;
    wire [3:0] f_op = c[TL_C_OP_LSB +: 4];
    wire f_pop_prev = c[TL_C_POP_PREV_LSB];
    wire f_pop_next = c[TL_C_POP_NEXT_LSB];
    wire f_push_prev = c[TL_C_PUSH_PREV_LSB];
    wire f_push_next = c[TL_C_PUSH_NEXT_LSB];
    logic got_prev, got_next, did_prev, did_next, started;
    wire has_unit = UNITS[f_op];
    assign unit_cmd = c;
    assign unit_start = state == S_EXEC && f_op != TL_OP_FINISH && has_unit && !started;

    wire need_prev = f_pop_prev && !got_prev;
    wire need_next = f_pop_next && !got_next;
    assign l2c_pop = state == S_TOKEN && need_prev && l2c_avail;
    assign s2c_pop = state == S_TOKEN && need_next && s2c_avail;
    assign c2l_push = state == S_PUSH && f_push_prev && !did_prev && !c2l_full;
    assign c2s_push = state == S_PUSH && f_push_next && !did_next && !c2s_full;
    wire push_done = (!f_push_prev || did_prev || !c2l_full) && (!f_push_next || did_next || !c2s_full);
    assign cmd_ready = state == S_IDLE && !halt && !err_valid;   // not in the cycle an error is raised
    assign cur_pc = pc;
    assign busy = state != S_IDLE;
    assign waiting_load = state == S_TOKEN && need_prev && !l2c_avail;
    assign waiting = state == S_TOKEN && ((need_prev && !l2c_avail) || (need_next && !s2c_avail));
    assign finish = state == S_EXEC && f_op == TL_OP_FINISH;
    assign retire = state == S_PUSH && push_done;
    assign finish_done = retire && f_op == TL_OP_FINISH;

    always_ff @(posedge clk) if (rst || ce) begin
        if (rst) begin
            state <= S_IDLE;
            c <= '0;
            pc <= '0;
            got_prev <= 1'b0;
            got_next <= 1'b0;
            did_prev <= 1'b0;
            did_next <= 1'b0;
            started <= 1'b0;
            err_valid <= 1'b0;
            err_code <= '0;
            err_pc <= '0;
        end else begin
            err_valid <= 1'b0;
            case (state)
                S_IDLE: if (cmd_valid && cmd_ready) begin
                    c <= cmd;
                    pc <= cmd_pc;
                    got_prev <= 1'b0;
                    got_next <= 1'b0;
                    did_prev <= 1'b0;
                    did_next <= 1'b0;
                    started <= 1'b0;
                    state <= S_TOKEN;
                end
                S_TOKEN: begin
                    if (l2c_pop) got_prev <= 1'b1;
                    if (s2c_pop) got_next <= 1'b1;
                    if ((!need_prev || l2c_avail) && (!need_next || s2c_avail)) state <= S_EXEC;
                    else if (abort) state <= S_IDLE;
                end
                S_EXEC: begin
                    if (f_op == TL_OP_FINISH) begin
                        if (drained) state <= S_PUSH;
                    end else if (has_unit) begin
                        started <= 1'b1;
                        if (unit_done) state <= S_PUSH;
                        if (unit_err) begin
                            err_valid <= 1'b1;
                            err_code <= unit_err_code;
                            err_pc <= pc;
                            state <= S_IDLE;
                        end
                    end else begin
                        err_valid <= 1'b1;
                        err_code <= TL_ERR_BAD_OPCODE;   // no unit for this opcode in this RTL
                        err_pc <= pc;
                        state <= S_IDLE;
                    end
                end
                S_PUSH: begin
                    if (c2l_push) did_prev <= 1'b1;
                    if (c2s_push) did_next <= 1'b1;
                    if (push_done) state <= S_IDLE;
                end
                default: state <= S_IDLE;
            endcase
        end
    end

    /* verilator lint_off UNUSEDSIGNAL */
    wire unused = ^{c[511:4]};
    /* verilator lint_on UNUSEDSIGNAL */
endmodule
