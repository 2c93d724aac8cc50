// The Tri-Level engine (docs/engine.md): AXI-Lite control/status with hardware counters, command
// fetch over AXI4, in-order dispatch into the LOAD / COMPUTE / STORE command queues, four
// dependency-token queues (VTA semantics), the DMA (one AXI4 master: reads shared by fetch and
// LOAD, writes by STORE) and the on-chip memories SPM (int16), ACC (48 bit), IDX (uint16), STAT.
//
// Control is the Vitis HLS ap_ctrl_hs register map of the HLS engine (trilevel.accel.isa.REGISTERS),
// so one driver runs either IP: CTRL.ap_start (when idle) clears ERROR, ERR_PC_CTRL, the counters and
// the STAT slots and runs CMD_COUNT commands of 64 bytes at DDR_BASE + CMD_ADDR; every DDR address in
// a command is an offset from DDR_BASE. The program ends at FINISH (or when its commands run out):
// once every queue is empty and every module idle, ap_done and ap_ready (clear on read) and ap_idle
// rise, ISR bit 0 is set when IER bit 0 is, and `irq` = GIE && ISR & IER. The first error (a malformed
// command, a range error, an AXI error response, a dependency pop that can never be satisfied)
// latches ERROR and ERR_PC, stops dispatch, lets the running commands finish (AXI bursts are never
// abandoned), drops the rest and ends the run the same way. `rst` (synchronous, active high) returns
// everything to idle at any time.
`timescale 1ns / 1ps
module engine_top #(
    parameter int ROWS = 4,                // GEMM array rows x columns (COLS a power of two)
    parameter int COLS = 4,
    parameter int EPI_LANES = COLS,        // GEMM requantizing epilogue lanes (isa epilogue_lanes; divides COLS)
    parameter int SPM_ELEMS = 65536,
    parameter int SPM_REGION_ROWS = 2048,  // rows of one SPM region per bank (isa spm_region_rows)
    parameter int ACC_ELEMS = 16384,
    parameter int IDX_ELEMS = 4096,
    parameter int STAT_SLOTS = 64,
    parameter int QUEUE_DEPTH = 16,
    parameter int MAX_ROW = 256,           // longest softmax / top-k / MASK row
    parameter int MAX_DIM = 256,           // longest LayerNorm row (isa max_dim)
    parameter int VEC_LANES = 4,           // vector/SFU lanes (<= SPM_LANES and <= the ACC lanes)
    parameter int SPM_LANES = 8,           // >= 8 (one DMA beat), >= ROWS, COLS, a power of two
    parameter int AXI_AW = 40,
    parameter int AXIL_AW = 8,
    parameter int RD_OUTSTANDING = 16,
    parameter int WR_OUTSTANDING = 16,
    parameter int MUTATION = 0             // test only (sim/test_engine_mutation.py): bit 0 breaks the
                                           // LOAD row stride, bit 1 the GEMM requantize rounding
) (
    input  logic                clk,
    input  logic                rst,
    // AXI-Lite slave (registers)
    input  logic [AXIL_AW-1:0]  s_axil_awaddr,
    input  logic                s_axil_awvalid,
    output logic                s_axil_awready,
    input  logic [31:0]         s_axil_wdata,
    input  logic [3:0]          s_axil_wstrb,
    input  logic                s_axil_wvalid,
    output logic                s_axil_wready,
    output logic [1:0]          s_axil_bresp,
    output logic                s_axil_bvalid,
    input  logic                s_axil_bready,
    input  logic [AXIL_AW-1:0]  s_axil_araddr,
    input  logic                s_axil_arvalid,
    output logic                s_axil_arready,
    output logic [31:0]         s_axil_rdata,
    output logic [1:0]          s_axil_rresp,
    output logic                s_axil_rvalid,
    input  logic                s_axil_rready,
    // AXI4 master (DDR through an HP port), 128-bit data, one ID (0): responses come in order
    output logic [0:0]          m_axi_arid,
    output logic [AXI_AW-1:0]   m_axi_araddr,
    output logic [7:0]          m_axi_arlen,
    output logic [2:0]          m_axi_arsize,
    output logic [1:0]          m_axi_arburst,
    output logic                m_axi_arvalid,
    input  logic                m_axi_arready,
    /* verilator lint_off UNUSEDSIGNAL */
    input  logic [0:0]          m_axi_rid,
    input  logic [0:0]          m_axi_bid,
    /* verilator lint_on UNUSEDSIGNAL */
    input  logic [127:0]        m_axi_rdata,
    input  logic [1:0]          m_axi_rresp,
    input  logic                m_axi_rlast,
    input  logic                m_axi_rvalid,
    output logic                m_axi_rready,
    output logic [0:0]          m_axi_awid,
    output logic [AXI_AW-1:0]   m_axi_awaddr,
    output logic [7:0]          m_axi_awlen,
    output logic [2:0]          m_axi_awsize,
    output logic [1:0]          m_axi_awburst,
    output logic                m_axi_awvalid,
    input  logic                m_axi_awready,
    output logic [127:0]        m_axi_wdata,
    output logic [15:0]         m_axi_wstrb,
    output logic                m_axi_wlast,
    output logic                m_axi_wvalid,
    input  logic                m_axi_wready,
    input  logic [1:0]          m_axi_bresp,
    input  logic                m_axi_bvalid,
    output logic                m_axi_bready,
    output logic                irq,
    output logic                busy
);
    /* verilator lint_off UNUSEDPARAM */
    `include "tl_isa.svh"
    /* verilator lint_on UNUSEDPARAM */

    localparam int QW = $clog2(QUEUE_DEPTH + 1);
    // RTL-only statistic (not in isa.REGISTERS): clock cycles of the last run spent serving memory
    // region conflicts (ce low), 64 bits at 0xE0 / 0xE4 right after the isa counters.
    localparam logic [7:0] REG_CONFLICT_LO = 8'hE0, REG_CONFLICT_HI = 8'hE4;
    assign m_axi_arid = 1'b0;
    assign m_axi_awid = 1'b0;
    localparam int FETCH_CMDS = 16;                 // fetched commands buffered before dispatch
    localparam int FW = $clog2(FETCH_CMDS + 1);
    localparam int TAGS = 32;                       // read requests in flight (fetch + LOAD)

    // =========================================================== registers
    logic wr_en, rd_en;
    logic [AXIL_AW-1:0] wr_addr, rd_addr;
    logic [31:0] wr_data, rd_data;
    logic [3:0] wr_strb;
    engine_axil #(.AW(AXIL_AW)) u_axil (
        .clk(clk), .rst(rst),
        .s_axil_awaddr(s_axil_awaddr), .s_axil_awvalid(s_axil_awvalid), .s_axil_awready(s_axil_awready),
        .s_axil_wdata(s_axil_wdata), .s_axil_wstrb(s_axil_wstrb), .s_axil_wvalid(s_axil_wvalid),
        .s_axil_wready(s_axil_wready), .s_axil_bresp(s_axil_bresp), .s_axil_bvalid(s_axil_bvalid),
        .s_axil_bready(s_axil_bready), .s_axil_araddr(s_axil_araddr), .s_axil_arvalid(s_axil_arvalid),
        .s_axil_arready(s_axil_arready), .s_axil_rdata(s_axil_rdata), .s_axil_rresp(s_axil_rresp),
        .s_axil_rvalid(s_axil_rvalid), .s_axil_rready(s_axil_rready),
        .wr_en(wr_en), .wr_addr(wr_addr), .wr_data(wr_data), .wr_strb(wr_strb),
        .rd_en(rd_en), .rd_addr(rd_addr), .rd_data(rd_data)
    );

    logic running, ap_done, ap_ready, halting, gie, ier, isr, err_pc_vld;
    logic [7:0] err_code_r;
    logic [23:0] err_pc_r;
    logic [63:0] ddr_base;
    logic [31:0] cmd_offset;
    logic [31:0] cmd_count;
    localparam int NC = TL_N_COUNTERS;
    logic [63:0] cnt [NC];                          // isa.COUNTERS order
    wire reg_wr = wr_en && wr_strb == 4'hF;
    wire start = reg_wr && wr_addr == AXIL_AW'(TL_REG_CTRL) && wr_data[0] && !running;
    wire [63:0] cmd_addr = ddr_base + 64'(cmd_offset);

    // engine-internal reset: rst, or the cycle after a run ended by an error (clears the queues, the
    // fetch unit and any module still waiting for a token; nothing is in flight on AXI then)
    logic quiet;                                    // nothing in flight anywhere

    // Global clock enable of the memory-facing datapath (fetch, dispatch, queues, tokens, LOAD, STORE,
    // COMPUTE and its units, STAT, counters): low while a memory serves a cycle whose requests
    // oversubscribe one of its regions (engine_mem), so that cycle takes extra clock cycles. Not gated:
    // the AXI-Lite slave and register writes, the AXI masters (their internal valid/ready towards the
    // datapath are gated instead, never an AXI signal) and the CYCLES counter.
    logic spm_done, acc_done, idx_done;
    wire ce = spm_done && acc_done && idx_done;
    logic [63:0] conflict_cycles;                   // cycles of a run with ce low (RTL-only statistic)
    logic srst;
    wire ers = rst || srst;

    // =========================================================== read path: fetch + LOAD share one master
    logic rq_valid, rq_ready;
    logic [AXI_AW-1:0] rq_addr;
    logic [23:0] rq_beats;
    logic [127:0] r_tdata;
    logic r_tvalid, r_tready, rd_busy, rd_err;
    engine_axi_rd #(.AW(AXI_AW), .DW(128), .MAX_BURST(16), .OUTSTANDING(RD_OUTSTANDING)) u_rd (
        .clk(clk), .rst(ers), .req_valid(rq_valid), .req_ready(rq_ready), .req_addr(rq_addr),
        .req_beats(rq_beats), .m_axi_araddr(m_axi_araddr), .m_axi_arlen(m_axi_arlen),
        .m_axi_arsize(m_axi_arsize), .m_axi_arburst(m_axi_arburst), .m_axi_arvalid(m_axi_arvalid),
        .m_axi_arready(m_axi_arready), .m_axi_rdata(m_axi_rdata), .m_axi_rresp(m_axi_rresp),
        .m_axi_rlast(m_axi_rlast), .m_axi_rvalid(m_axi_rvalid), .m_axi_rready(m_axi_rready),
        .out_tdata(r_tdata), .out_tvalid(r_tvalid), .out_tready(r_tready), .busy(rd_busy), .err(rd_err)
    );

    // tag queue: which client each request belongs to (1 = LOAD) and its beat count
    logic tq_push, tq_pop, tq_empty, tq_full;
    logic [24:0] tq_din, tq_dout;
    logic [$clog2(TAGS+1)-1:0] tq_count;
    engine_fifo #(.W(25), .DEPTH(TAGS)) u_tags (
        .clk(clk), .rst(ers), .push(ce && tq_push), .din(tq_din), .pop(ce && tq_pop), .dout(tq_dout),
        .empty(tq_empty), .full(tq_full), .count(tq_count)
    );
    logic [23:0] tq_beat;
    wire tq_load = tq_dout[24];

    // fetch request / LOAD request
    logic f_req_valid, l_req_valid, l_req_ready;
    logic [AXI_AW-1:0] f_req_addr, l_req_addr;
    logic [23:0] f_req_beats, l_req_beats;
    wire grant_f = f_req_valid;                     // fetch first (it only asks when it has room)
    assign rq_valid = ce && !tq_full && (f_req_valid || l_req_valid);
    assign rq_addr = grant_f ? f_req_addr : l_req_addr;
    assign rq_beats = grant_f ? f_req_beats : l_req_beats;
    wire rq_fire = rq_valid && rq_ready;
    wire f_req_fire = rq_fire && grant_f;
    assign l_req_ready = rq_ready && !tq_full && !grant_f;
    assign tq_push = rq_fire;
    assign tq_din = {!grant_f, rq_beats};

    logic l_rd_tready;
    assign r_tready = ce && !tq_empty && (tq_load ? l_rd_tready : 1'b1);   // fetch space is reserved
    wire r_fire = r_tvalid && r_tready;
    wire r_fetch = r_fire && !tq_load;
    assign tq_pop = r_fire && tq_beat == tq_dout[23:0] - 24'd1;
    always_ff @(posedge clk) begin
        if (ers) tq_beat <= '0;
        else if (r_fire) tq_beat <= tq_pop ? '0 : tq_beat + 1'b1;
    end

    // =========================================================== fetch
    logic [63:0] f_addr;
    logic [31:0] f_left;          // commands not yet requested
    logic [FW-1:0] f_inflight;    // commands requested, not yet assembled
    logic [1:0] f_beat;
    logic [383:0] f_asm;
    logic [23:0] f_pc;
    logic ff_push, ff_pop, ff_empty, ff_full;
    logic [535:0] ff_dout;
    logic [FW-1:0] ff_count;
    engine_fifo #(.W(536), .DEPTH(FETCH_CMDS)) u_fetchq (
        .clk(clk), .rst(ers), .push(ce && ff_push), .din({f_pc, r_tdata, f_asm}), .pop(ce && ff_pop), .dout(ff_dout),
        .empty(ff_empty), .full(ff_full), .count(ff_count)
    );
    wire [FW:0] f_room = (FW+1)'(FETCH_CMDS) - (FW+1)'(ff_count) - (FW+1)'(f_inflight);
    logic [2:0] f_n;              // commands in the next request: min(4, left, room)
    always_comb begin
        f_n = 3'd4;
        if (f_left < 32'd4) f_n = 3'(f_left);
        if (f_room < (FW+1)'(f_n)) f_n = 3'(f_room);
    end
    // a burst of commands must not cross 4 KiB: commands are 64-byte aligned, so stop at the page
    wire [6:0] to_page = 7'd64 - {1'b0, f_addr[11:6]};
    wire [2:0] f_n_page = {4'd0, f_n} > to_page ? 3'(to_page) : f_n;
    assign f_req_valid = running && !halting && f_left != 0 && f_n_page != 0;
    assign f_req_addr = f_addr[AXI_AW-1:0];
    assign f_req_beats = {19'd0, f_n_page, 2'b00};
    assign ff_push = r_fetch && f_beat == 2'd3;
    wire fetch_done = f_left == 0 && f_inflight == 0 && ff_empty;

    always_ff @(posedge clk) begin
        if (ers) begin
            f_addr <= '0;
            f_left <= '0;
            f_inflight <= '0;
            f_beat <= '0;
            f_pc <= '0;
            f_asm <= '0;
        end else if (ce || start) begin
            if (start) begin
                f_addr <= cmd_addr;
                f_left <= cmd_count;
                f_pc <= '0;
            end else if (f_req_fire) begin
                f_addr <= f_addr + {57'd0, f_n_page, 4'd0} * 64'd4;
                f_left <= f_left - 32'(f_n_page);
            end
            f_inflight <= f_inflight + (f_req_fire ? FW'(f_n_page) : '0) - FW'(ff_push);
            if (r_fetch) begin
                f_beat <= f_beat + 1'b1;
                f_asm <= {r_tdata, f_asm[383:128]};
            end
            if (ff_push) f_pc <= f_pc + 1'b1;
            if (halting && ff_push) f_left <= '0;   // stop requesting more after an error / FINISH
        end
    end

    // =========================================================== dispatch + validation
    wire [511:0] d_cmd = ff_dout[511:0];
    wire [23:0] d_pc = ff_dout[535:512];
    wire [3:0] d_op = d_cmd[TL_C_OP_LSB +: 4];
    wire [3:0] d_sub = d_cmd[TL_C_SUB_LSB +: 4];
    wire d_rsv = d_cmd[31:TL_C_USED_BITS] != 0;
    logic [7:0] d_err;
    logic [1:0] d_mod;            // 0 LOAD, 1 COMPUTE, 2 STORE
    // control checks in fsim's order: BAD_OPCODE, then RESERVED_BITS (word 0 bits 31:26, `sub`
    // outside its enum or nonzero where unused, a dependency flag towards a missing neighbour, any
    // dependency flag on FINISH, GEMM res with mask). The rest is checked by the executing unit.
    wire d_pop_prev = d_cmd[TL_C_POP_PREV_LSB], d_pop_next = d_cmd[TL_C_POP_NEXT_LSB];
    wire d_push_prev = d_cmd[TL_C_PUSH_PREV_LSB], d_push_next = d_cmd[TL_C_PUSH_NEXT_LSB];
    logic d_bad;
    always_comb begin
        d_err = TL_ERR_NONE;
        d_mod = 2'd1;
        d_bad = 1'b0;
        case (d_op)
            TL_OP_LOAD: begin
                d_mod = 2'd0;
                d_bad = d_sub > 4'd2 || d_pop_prev || d_push_prev;
            end
            TL_OP_STORE: begin
                d_mod = 2'd2;
                d_bad = d_sub > 4'd3 || d_pop_next || d_push_next;
            end
            TL_OP_FINISH: d_bad = d_sub != 0 || d_pop_prev || d_pop_next || d_push_prev || d_push_next;
            TL_OP_GEMM: d_bad = d_sub != 0 || (d_cmd[TL_C_RES_LSB] && d_cmd[TL_C_MASK_LSB]);
            TL_OP_TOPK: d_bad = d_sub != 0;
            TL_OP_SOFTMAX: d_bad = d_sub > 4'd1;
            TL_OP_VEC: d_bad = d_sub > 4'd6;
            default: d_err = TL_ERR_BAD_OPCODE;
        endcase
        if (d_err == TL_ERR_NONE && (d_rsv || d_bad)) d_err = TL_ERR_RESERVED_BITS;
    end

    logic [2:0] q_push, q_pop, q_empty, q_full;
    logic [2:0] m_pop;            // a module takes its next command
    logic [2:0] m_idle;
    // After an error at pc p, commands before p still run (one of them may fail first: the lowest pc
    // wins, as in the sequential golden model); queued commands after p are dropped, running ones finish.
    logic [2:0] m_halt, m_abort;
    logic [23:0] m_cur_pc [3];
    always_comb begin
        for (int i = 0; i < 3; i++) begin
            m_halt[i] = halting && q_dout[i][535:512] > err_pc_r;
            m_abort[i] = halting && m_cur_pc[i] > err_pc_r;
        end
    end
    assign q_pop = m_pop | (m_halt & m_idle & ~q_empty);
    logic [535:0] q_dout [3];
    for (genvar i = 0; i < 3; i++) begin : g_cq
        logic [QW-1:0] cnt_unused;
        engine_fifo #(.W(536), .DEPTH(QUEUE_DEPTH)) u_q (
            .clk(clk), .rst(ers), .push(ce && q_push[i]), .din(ff_dout), .pop(ce && q_pop[i]), .dout(q_dout[i]),
            .empty(q_empty[i]), .full(q_full[i]), .count(cnt_unused)
        );
    end
    logic finish_seen;
    wire d_valid = !ff_empty && running && !halting && !finish_seen;
    wire d_ok = d_err == TL_ERR_NONE;
    wire d_fire = d_valid && (!d_ok || !q_full[d_mod]);
    assign ff_pop = d_fire || (!ff_empty && (halting || finish_seen || !running));   // drop the rest after an error / FINISH
    always_comb begin
        q_push = '0;
        if (d_fire && d_ok) q_push[d_mod] = 1'b1;
    end
    wire d_blocked = d_valid && d_ok && q_full[d_mod];

    // =========================================================== dependency tokens
    // 0 l2c (LOAD -> COMPUTE), 1 c2l, 2 c2s, 3 s2c
    logic [QW-1:0] tok [4];
    logic [3:0] tok_push, tok_pop;
    wire [3:0] tok_avail = {tok[3] != 0, tok[2] != 0, tok[1] != 0, tok[0] != 0};
    wire [3:0] tok_full = {tok[3] == QW'(QUEUE_DEPTH), tok[2] == QW'(QUEUE_DEPTH), tok[1] == QW'(QUEUE_DEPTH),
                           tok[0] == QW'(QUEUE_DEPTH)};
    always_ff @(posedge clk) begin
        for (int i = 0; i < 4; i++) begin
            if (ers || start) tok[i] <= '0;
            else if (ce) tok[i] <= tok[i] + QW'(tok_push[i]) - QW'(tok_pop[i]);
        end
    end

    // =========================================================== memories
    localparam int SPM_AW = 24;
    // LOAD write port (window of 8 x 16 bit / 2 x 64 bit)
    logic l_wr_en;
    logic [1:0] l_wr_mem;
    logic [23:0] l_wr_addr;
    logic [7:0] l_wr_mask;
    logic [127:0] l_wr_data;
    // STORE window read
    logic [1:0] s_rd_mem;
    logic [23:0] s_rd_addr;
    logic [127:0] s_rd_data;
    logic [23:0] l_idx_raddr, s_idx_raddr;

    localparam int AL = COLS > 2 ? COLS : 2;        // ACC window lanes
    // GEMM ports
    logic [23:0] g_a_raddr, g_b_raddr, g_e_raddr, g_d_raddr, g_c_waddr, g_acc_raddr, g_acc_waddr;
    logic [SPM_LANES*16-1:0] g_a_rdata, g_b_rdata, g_e_rdata, g_d_rdata, g_c_wdata;
    logic [SPM_LANES-1:0] g_c_wmask;
    logic g_c_we, g_acc_we;
    logic [AL*48-1:0] g_acc_rdata, g_acc_wdata;
    logic [AL-1:0] g_acc_wmask;

    // GEMM and SOFTMAX share the compute-side ports (COMPUTE runs one command at a time)
    logic sm_busy, sm_c_we, sm_acc_we;
    logic [23:0] sm_a_raddr, sm_b_raddr, sm_c_waddr, sm_acc_raddr, sm_acc_waddr;
    logic [SPM_LANES-1:0] sm_c_wmask;
    logic [SPM_LANES*16-1:0] sm_c_wdata;
    logic [AL-1:0] sm_acc_wmask;
    logic [AL*48-1:0] sm_acc_wdata;
    logic [23:0] x_a_raddr, x_b_raddr, x_d_raddr, x_e_raddr, x_c_waddr, x_acc_raddr, x_acc_waddr;
    // VEC unit ports
    logic v_busy, v_c_we, v_acc_we;
    logic [23:0] v_a_raddr, v_b_raddr, v_d_raddr, v_e_raddr, v_c_waddr, v_acc_raddr, v_acc_waddr, v_idx_raddr;
    logic [SPM_LANES-1:0] v_c_wmask;
    logic [SPM_LANES*16-1:0] v_c_wdata;
    logic [AL-1:0] v_acc_wmask;
    logic [AL*48-1:0] v_acc_wdata;
    logic x_c_we, x_acc_we;
    logic [SPM_LANES-1:0] x_c_wmask;
    logic [SPM_LANES*16-1:0] x_c_wdata;
    logic [AL-1:0] x_acc_wmask;
    logic [AL*48-1:0] x_acc_wdata;
    always_comb begin
        x_a_raddr = sm_busy ? sm_a_raddr : v_busy ? v_a_raddr : g_a_raddr;
        x_b_raddr = sm_busy ? sm_b_raddr : v_busy ? v_b_raddr : g_b_raddr;
        x_d_raddr = v_busy ? v_d_raddr : g_d_raddr;
        x_e_raddr = v_busy ? v_e_raddr : g_e_raddr;
        x_acc_raddr = sm_busy ? sm_acc_raddr : v_busy ? v_acc_raddr : g_acc_raddr;
        x_c_we = g_c_we || sm_c_we || v_c_we;
        x_c_waddr = sm_busy ? sm_c_waddr : v_busy ? v_c_waddr : g_c_waddr;
        x_c_wmask = sm_busy ? sm_c_wmask : v_busy ? v_c_wmask : g_c_wmask;
        x_c_wdata = sm_busy ? sm_c_wdata : v_busy ? v_c_wdata : g_c_wdata;
        x_acc_we = g_acc_we || sm_acc_we || v_acc_we;
        x_acc_waddr = sm_busy ? sm_acc_waddr : v_busy ? v_acc_waddr : g_acc_waddr;
        x_acc_wmask = sm_busy ? sm_acc_wmask : v_busy ? v_acc_wmask : g_acc_wmask;
        x_acc_wdata = sm_busy ? sm_acc_wdata : v_busy ? v_acc_wdata : g_acc_wdata;
    end

    // SPM: write ports LOAD, GEMM/SOFTMAX C; read ports STORE, A, B, GEMM E, bias
    logic [SPM_LANES*16-1:0] spm_wdata;
    logic [SPM_LANES-1:0] spm_wmask;
    always_comb begin
        spm_wdata = '0;
        spm_wmask = '0;
        spm_wdata[127:0] = l_wr_data;
        spm_wmask[7:0] = l_wr_mask;
    end
    logic [5*SPM_LANES*16-1:0] spm_rdata;
    // read enables: a port counts towards its region's two accesses only in the cycles it is read
    wire [3:0] v_sub = u_cmd[TL_C_SUB_LSB +: 4];
    wire v_ln = v_sub == TL_VEC_LN_FWD || v_sub == TL_VEC_LN_BWD;
    wire x_a_re = sm_a_re || (v_busy && v_sub != TL_VEC_MASK) || g_a_re;
    wire x_b_re = sm_b_re || (v_busy && (v_ln || v_sub == TL_VEC_GELU_BWD || v_sub == TL_VEC_COLDOT)) || g_b_re;
    wire x_e_re = (v_busy && v_sub == TL_VEC_LN_BWD) || g_e_re;
    wire x_d_re = (v_busy && v_ln) || g_d_re;
    wire x_acc_re = sm_acc_re || v_busy || g_acc_re;
    logic sm_a_re, sm_b_re, sm_acc_re;
    logic g_a_re, g_b_re, g_e_re, g_d_re, g_acc_re, s_rd_en, l_idx_re, s_idx_re;
    // narrow ports (RD_LANES / WR_LANES, 8 bits a port): STORE reads and LOAD writes one 128-bit beat
    engine_mem #(.EW(16), .LANES(SPM_LANES), .DEPTH(SPM_ELEMS), .NR(5), .NW(2), .AW(SPM_AW),
                 .REGION_ROWS(SPM_REGION_ROWS), .RD_LANES(64'd8), .WR_LANES(64'd8)) u_spm (
        .clk(clk), .rst(ers), .ce(ce), .done(spm_done),
        .re({x_d_re, x_e_re, x_b_re, x_a_re, s_rd_en && s_rd_mem == 2'd0}),
        .we({x_c_we, l_wr_en && l_wr_mem == 2'd0}), .waddr({x_c_waddr, l_wr_addr}),
        .wmask({x_c_wmask, spm_wmask}), .wdata({x_c_wdata, spm_wdata}),
        .raddr({x_d_raddr, x_e_raddr, x_b_raddr, x_a_raddr, s_rd_addr}), .rdata(spm_rdata)
    );
    assign g_a_rdata = spm_rdata[1*SPM_LANES*16 +: SPM_LANES*16];
    assign g_b_rdata = spm_rdata[2*SPM_LANES*16 +: SPM_LANES*16];
    assign g_e_rdata = spm_rdata[3*SPM_LANES*16 +: SPM_LANES*16];
    assign g_d_rdata = spm_rdata[4*SPM_LANES*16 +: SPM_LANES*16];
    logic [4*8*16-1:0] idx_rdata;
    // one lane each: the LOAD / STORE gather indices, VEC's MASK lists, TOPK's index writes
    engine_mem #(.EW(16), .LANES(8), .DEPTH(IDX_ELEMS), .NR(4), .NW(2), .AW(24),
                 .RD_LANES(64'h01_00_01_01), .WR_LANES(64'h01_00)) u_idx (
        .clk(clk), .rst(ers), .ce(ce), .done(idx_done),
        .re({v_busy && v_sub == TL_VEC_MASK, s_rd_en && s_rd_mem == 2'd2, s_idx_re, l_idx_re}),
        .we({t_idx_we, l_wr_en && l_wr_mem == 2'd2}), .waddr({t_idx_waddr, l_wr_addr}),
        .wmask({8'h01, l_wr_mask}), .wdata({112'd0, t_idx_wdata, l_wr_data}),
        .raddr({v_idx_raddr, s_rd_addr, s_idx_raddr, l_idx_raddr}), .rdata(idx_rdata)
    );
    // ACC: write ports LOAD (2 lanes of a beat), GEMM; read ports STORE, GEMM
    logic [AL*48-1:0] acc_l_wdata;
    logic [AL-1:0] acc_l_wmask;
    always_comb begin
        acc_l_wdata = '0;
        acc_l_wmask = '0;
        acc_l_wdata[95:0] = {l_wr_data[111:64], l_wr_data[47:0]};
        acc_l_wmask[1:0] = l_wr_mask[1:0];
    end
    logic [3*AL*48-1:0] acc_rd;
    logic [AL*48-1:0] t_acc_rdata;
    // narrow ports: STORE reads and LOAD writes 2 lanes (a beat), TOPK reads 1
    engine_mem #(.EW(48), .LANES(AL), .DEPTH(ACC_ELEMS), .NR(3), .NW(2), .AW(24),
                 .RD_LANES(64'h01_00_02), .WR_LANES(64'h00_02)) u_acc (
        .clk(clk), .rst(ers), .ce(ce), .done(acc_done),
        .re({t_busy, x_acc_re, s_rd_en && s_rd_mem == 2'd1}),
        .we({x_acc_we, l_wr_en && l_wr_mem == 2'd1}), .waddr({x_acc_waddr, l_wr_addr}),
        .wmask({x_acc_wmask, acc_l_wmask}), .wdata({x_acc_wdata, acc_l_wdata}),
        .raddr({t_acc_raddr, x_acc_raddr, s_rd_addr}), .rdata(acc_rd)
    );
    assign t_acc_rdata = acc_rd[2*AL*48 +: AL*48];
    wire [95:0] acc_rdata = acc_rd[95:0];
    assign g_acc_rdata = acc_rd[AL*48 +: AL*48];
    // STAT slots (int64): cleared by start; a unit's statistic update keeps the maximum. The values are LUT
    // RAM (read ports: the three writers' slots, STORE's two), a slot reads 0 until written since start.
    logic g_stat_we, sm_stat_we, v_stat_we;
    logic [5:0] v_stat_slot;
    logic [63:0] v_stat_value;
    logic [5:0] sm_stat_slot;
    logic [63:0] sm_stat_value;
    logic [5:0] g_stat_slot;
    logic [63:0] g_stat_value;
    localparam int SB = $clog2(STAT_SLOTS);
    logic [STAT_SLOTS-1:0] stat_valid;
    logic [5*64-1:0] stat_rd;
    logic [63:0] stat_of_g, stat_of_sm, stat_of_v, stat_s0, stat_s1;
    logic stat_we;
    logic [SB-1:0] stat_slot;
    logic [63:0] stat_value;
    engine_lutram #(.W(64), .N(STAT_SLOTS), .NRD(5)) u_stat (
        .clk(clk), .we(stat_we), .waddr(stat_slot), .wdata(stat_value),
        .raddr({SB'(s_rd_addr + 24'd1), SB'(s_rd_addr), SB'(v_stat_slot), SB'(sm_stat_slot), SB'(g_stat_slot)}),
        .rdata(stat_rd)
    );
    always_comb begin
        stat_of_g = stat_valid[SB'(g_stat_slot)] ? stat_rd[0 +: 64] : '0;
        stat_of_sm = stat_valid[SB'(sm_stat_slot)] ? stat_rd[64 +: 64] : '0;
        stat_of_v = stat_valid[SB'(v_stat_slot)] ? stat_rd[128 +: 64] : '0;
        stat_s0 = stat_valid[SB'(s_rd_addr)] ? stat_rd[192 +: 64] : '0;
        stat_s1 = stat_valid[SB'(s_rd_addr + 24'd1)] ? stat_rd[256 +: 64] : '0;
        stat_we = 1'b0;
        stat_slot = SB'(g_stat_slot);
        stat_value = g_stat_value;
        if (g_stat_we && g_stat_value > stat_of_g) begin
            stat_we = 1'b1;
        end else if (sm_stat_we && sm_stat_value > stat_of_sm) begin
            stat_we = 1'b1;
            stat_slot = SB'(sm_stat_slot);
            stat_value = sm_stat_value;
        end else if (v_stat_we && v_stat_value > stat_of_v) begin
            stat_we = 1'b1;
            stat_slot = SB'(v_stat_slot);
            stat_value = v_stat_value;
        end
        stat_we = stat_we && ce && !(ers || start);
    end
    always_ff @(posedge clk) begin
        if (ers || start) stat_valid <= '0;
        else if (stat_we) stat_valid[stat_slot] <= 1'b1;
    end
    logic [127:0] stat_q;
    always_ff @(posedge clk) if (ce) begin
        stat_q <= {stat_s1, stat_s0};
    end
    logic [1:0] s_rd_mem_q;
    always_ff @(posedge clk) if (ce) s_rd_mem_q <= s_rd_mem;
    always_comb begin
        case (s_rd_mem_q)
            2'd0: s_rd_data = spm_rdata[127:0];
            2'd1: s_rd_data = {{16{acc_rdata[95]}}, acc_rdata[95:48], {16{acc_rdata[47]}}, acc_rdata[47:0]};
            2'd2: s_rd_data = idx_rdata[2*128 +: 128];
            default: s_rd_data = stat_q;
        endcase
    end

    // =========================================================== modules
    logic l_busy, l_moving, l_waiting, l_retire, l_err_v;
    logic [39:0] l_retire_bytes, s_retire_bytes;
    logic [7:0] l_err_code;
    logic [23:0] l_err_pc, l_pc;
    engine_load #(.AW(AXI_AW), .SPM_ELEMS(SPM_ELEMS), .ACC_ELEMS(ACC_ELEMS), .IDX_ELEMS(IDX_ELEMS),
                  .MUTATE_STRIDE(MUTATION & 1)) u_load (
        .clk(clk), .rst(ers), .ce(ce), .halt(m_halt[0]), .abort(m_abort[0]), .ddr_base(ddr_base[AXI_AW-1:0]),
        .cmd(q_dout[0][511:0]), .cmd_pc(q_dout[0][535:512]),
        .cmd_valid(!q_empty[0]), .cmd_ready(m_pop[0]),
        .tok_in_avail(tok_avail[1]), .tok_in_pop(tok_pop[1]), .tok_out_full(tok_full[0]),
        .tok_out_push(tok_push[0]),
        .rd_req_valid(l_req_valid), .rd_req_ready(l_req_ready), .rd_req_addr(l_req_addr),
        .rd_req_beats(l_req_beats), .rd_tdata(r_tdata), .rd_tvalid(r_tvalid && !tq_empty && tq_load),
        .rd_tready(l_rd_tready), .idx_raddr(l_idx_raddr), .idx_re(l_idx_re), .idx_rdata(idx_rdata[15:0]),
        .wr_en(l_wr_en), .wr_mem(l_wr_mem), .wr_addr(l_wr_addr), .wr_mask(l_wr_mask), .wr_data(l_wr_data),
        .cur_pc(l_pc), .busy(l_busy), .moving(l_moving), .waiting(l_waiting), .retire(l_retire),
        .retire_bytes(l_retire_bytes),
        .err_valid(l_err_v), .err_code(l_err_code), .err_pc(l_err_pc)
    );

    logic w_req_valid, w_req_ready, w_tvalid, w_tready, wr_busy, wr_err;
    logic [AXI_AW-1:0] w_req_addr;
    logic [23:0] w_req_beats;
    logic [127:0] w_tdata;
    logic [15:0] w_tstrb;
    engine_axi_wr #(.AW(AXI_AW), .DW(128), .MAX_BURST(16), .OUTSTANDING(WR_OUTSTANDING)) u_wr (
        .clk(clk), .rst(ers), .req_valid(ce && w_req_valid), .req_ready(w_req_ready), .req_addr(w_req_addr),
        .req_beats(w_req_beats), .in_tdata(w_tdata), .in_tstrb(w_tstrb), .in_tvalid(ce && w_tvalid),
        .in_tready(w_tready), .m_axi_awaddr(m_axi_awaddr), .m_axi_awlen(m_axi_awlen),
        .m_axi_awsize(m_axi_awsize), .m_axi_awburst(m_axi_awburst), .m_axi_awvalid(m_axi_awvalid),
        .m_axi_awready(m_axi_awready), .m_axi_wdata(m_axi_wdata), .m_axi_wstrb(m_axi_wstrb),
        .m_axi_wlast(m_axi_wlast), .m_axi_wvalid(m_axi_wvalid), .m_axi_wready(m_axi_wready),
        .m_axi_bresp(m_axi_bresp), .m_axi_bvalid(m_axi_bvalid), .m_axi_bready(m_axi_bready),
        .busy(wr_busy), .err(wr_err)
    );

    logic s_busy, s_moving, s_waiting, s_retire, s_err_v;
    logic [7:0] s_err_code;
    logic [23:0] s_err_pc, s_pc;
    engine_store #(.AW(AXI_AW), .SPM_ELEMS(SPM_ELEMS), .ACC_ELEMS(ACC_ELEMS), .IDX_ELEMS(IDX_ELEMS),
                   .STAT_SLOTS(STAT_SLOTS)) u_store (
        .clk(clk), .rst(ers), .ce(ce), .halt(m_halt[2]), .abort(m_abort[2]), .ddr_base(ddr_base[AXI_AW-1:0]),
        .cmd(q_dout[2][511:0]), .cmd_pc(q_dout[2][535:512]),
        .cmd_valid(!q_empty[2]), .cmd_ready(m_pop[2]),
        .tok_in_avail(tok_avail[2]), .tok_in_pop(tok_pop[2]), .tok_out_full(tok_full[3]),
        .tok_out_push(tok_push[3]),
        .wr_req_valid(w_req_valid), .wr_req_ready(w_req_ready), .wr_req_addr(w_req_addr),
        .wr_req_beats(w_req_beats), .wr_tdata(w_tdata), .wr_tstrb(w_tstrb), .wr_tvalid(w_tvalid),
        .wr_tready(w_tready), .wr_busy(wr_busy), .idx_raddr(s_idx_raddr), .idx_re(s_idx_re), .idx_rdata(idx_rdata[128 +: 16]),
        .rd_mem(s_rd_mem), .rd_addr(s_rd_addr), .rd_en(s_rd_en), .rd_data(s_rd_data),
        .cur_pc(s_pc), .busy(s_busy), .moving(s_moving), .waiting(s_waiting), .retire(s_retire),
        .retire_bytes(s_retire_bytes),
        .err_valid(s_err_v), .err_code(s_err_code), .err_pc(s_err_pc)
    );

    logic c_busy, c_waiting, c_waiting_load, c_retire, c_err_v, c_finish, c_finish_done;
    logic [7:0] c_err_code;
    logic [23:0] c_err_pc, c_pc;
    logic drained;
    engine_compute #(.UNITS(16'h0078)) u_compute (   // GEMM, SOFTMAX, VEC, TOPK
        .clk(clk), .rst(ers), .ce(ce), .halt(m_halt[1]), .abort(m_abort[1]), .cmd(q_dout[1][511:0]), .cmd_pc(q_dout[1][535:512]),
        .cmd_valid(!q_empty[1]), .cmd_ready(m_pop[1]),
        .l2c_avail(tok_avail[0]), .l2c_pop(tok_pop[0]), .s2c_avail(tok_avail[3]), .s2c_pop(tok_pop[3]),
        .c2l_full(tok_full[1]), .c2l_push(tok_push[1]), .c2s_full(tok_full[2]), .c2s_push(tok_push[2]),
        .unit_start(u_start), .unit_cmd(u_cmd), .unit_done(g_done || t_done || sm_done || v_done),
        .unit_err(g_err || t_err || sm_err || v_err),
        .unit_err_code(g_err ? g_err_code : t_err ? t_err_code : sm_err ? sm_err_code : v_err_code),
        .finish(c_finish), .drained(drained), .cur_pc(c_pc), .busy(c_busy), .waiting(c_waiting),
        .waiting_load(c_waiting_load), .retire(c_retire), .finish_done(c_finish_done), .err_valid(c_err_v), .err_code(c_err_code),
        .err_pc(c_err_pc)
    );

    logic u_start, g_start, t_start, g_done, g_err, g_busy, g_feeding;
    logic [511:0] u_cmd;
    wire [3:0] u_op = u_cmd[TL_C_OP_LSB +: 4];
    assign g_start = u_start && u_op == TL_OP_GEMM;
    assign t_start = u_start && u_op == TL_OP_TOPK;
    wire sm_start = u_start && u_op == TL_OP_SOFTMAX;
    wire v_start = u_start && u_op == TL_OP_VEC;
    logic [7:0] g_err_code;
    logic [15:0] g_macs;
    engine_gemm #(.R(ROWS), .C(COLS), .L(SPM_LANES), .AL(AL), .EPI_LANES(EPI_LANES), .SPM_ELEMS(SPM_ELEMS),
                  .ACC_ELEMS(ACC_ELEMS), .STAT_SLOTS(STAT_SLOTS), .MUTATE_ROUNDING((MUTATION >> 1) & 1)) u_gemm (
        .clk(clk), .rst(ers), .ce(ce), .start(g_start), .cmd(u_cmd), .busy(g_busy), .done(g_done),
        .err_valid(g_err), .err_code(g_err_code),
        .a_re(g_a_re), .b_re(g_b_re), .e_re(g_e_re), .d_re(g_d_re), .acc_re(g_acc_re),
        .a_raddr(g_a_raddr), .a_rdata(g_a_rdata), .b_raddr(g_b_raddr), .b_rdata(g_b_rdata),
        .e_raddr(g_e_raddr), .e_rdata(g_e_rdata), .d_raddr(g_d_raddr), .d_rdata(g_d_rdata),
        .c_we(g_c_we), .c_waddr(g_c_waddr), .c_wmask(g_c_wmask), .c_wdata(g_c_wdata),
        .acc_raddr(g_acc_raddr), .acc_rdata(g_acc_rdata), .acc_we(g_acc_we), .acc_waddr(g_acc_waddr),
        .acc_wmask(g_acc_wmask), .acc_wdata(g_acc_wdata),
        .stat_we(g_stat_we), .stat_slot(g_stat_slot), .stat_value(g_stat_value),
        .feeding(g_feeding), .macs(g_macs)
    );

    logic t_done, t_err, t_busy, t_idx_we;
    logic [7:0] t_err_code;
    logic [23:0] t_acc_raddr, t_idx_waddr;
    logic [15:0] t_idx_wdata;
    engine_topk #(.AL(AL), .ACC_ELEMS(ACC_ELEMS), .IDX_ELEMS(IDX_ELEMS), .MAX_ROW(MAX_ROW)) u_topk (
        .clk(clk), .rst(ers), .ce(ce), .start(t_start), .cmd(u_cmd), .busy(t_busy), .done(t_done), .err_valid(t_err),
        .err_code(t_err_code), .acc_raddr(t_acc_raddr), .acc_rdata(t_acc_rdata), .idx_we(t_idx_we),
        .idx_waddr(t_idx_waddr), .idx_wdata(t_idx_wdata)
    );

    logic sm_done, sm_err;
    logic [7:0] sm_err_code;
    engine_softmax #(.L(SPM_LANES), .AL(AL), .SPM_ELEMS(SPM_ELEMS), .ACC_ELEMS(ACC_ELEMS),
                     .STAT_SLOTS(STAT_SLOTS), .MAX_ROW(MAX_ROW), .V(VEC_LANES)) u_softmax (
        .clk(clk), .rst(ers), .ce(ce), .start(sm_start), .cmd(u_cmd), .busy(sm_busy), .done(sm_done),
        .err_valid(sm_err), .err_code(sm_err_code), .a_re(sm_a_re), .b_re(sm_b_re), .acc_re(sm_acc_re),
        .a_raddr(sm_a_raddr), .a_rdata(g_a_rdata),
        .b_raddr(sm_b_raddr), .b_rdata(g_b_rdata), .c_we(sm_c_we), .c_waddr(sm_c_waddr),
        .c_wmask(sm_c_wmask), .c_wdata(sm_c_wdata),
        .acc_raddr(sm_acc_raddr), .acc_rdata(g_acc_rdata), .acc_we(sm_acc_we), .acc_waddr(sm_acc_waddr),
        .acc_wmask(sm_acc_wmask), .acc_wdata(sm_acc_wdata), .stat_we(sm_stat_we), .stat_slot(sm_stat_slot), .stat_value(sm_stat_value)
    );

    logic v_done, v_err;
    logic [7:0] v_err_code;
    engine_vec #(.L(SPM_LANES), .AL(AL), .SPM_ELEMS(SPM_ELEMS), .ACC_ELEMS(ACC_ELEMS), .IDX_ELEMS(IDX_ELEMS),
                 .STAT_SLOTS(STAT_SLOTS), .MAX_ROW(MAX_ROW), .MAX_DIM(MAX_DIM), .V(VEC_LANES),
                 .MUTATE_ROUNDING((MUTATION >> 2) & 1)) u_vec (
        .clk(clk), .rst(ers), .ce(ce), .start(v_start), .cmd(u_cmd), .busy(v_busy), .done(v_done),
        .err_valid(v_err), .err_code(v_err_code), .a_raddr(v_a_raddr), .a_rdata(g_a_rdata),
        .b_raddr(v_b_raddr), .b_rdata(g_b_rdata), .d_raddr(v_d_raddr), .d_rdata(g_d_rdata),
        .e_raddr(v_e_raddr), .e_rdata(g_e_rdata), .c_we(v_c_we), .c_waddr(v_c_waddr), .c_wmask(v_c_wmask),
        .c_wdata(v_c_wdata),
        .acc_raddr(v_acc_raddr), .acc_rdata(g_acc_rdata), .acc_we(v_acc_we), .acc_waddr(v_acc_waddr),
        .acc_wmask(v_acc_wmask), .acc_wdata(v_acc_wdata), .idx_raddr(v_idx_raddr), .idx_rdata(idx_rdata[3*128 +: 16]),
        .stat_we(v_stat_we), .stat_slot(v_stat_slot), .stat_value(v_stat_value)
    );

    // =========================================================== completion, errors, deadlock
    assign m_idle = {!s_busy, !c_busy, !l_busy};
    assign m_cur_pc[0] = l_pc;
    assign m_cur_pc[1] = c_pc;
    assign m_cur_pc[2] = s_pc;
    wire l_quiet = !l_busy && q_empty[0];
    wire s_quiet = !s_busy && q_empty[2];
    wire axi_quiet = !rd_busy && !wr_busy && tq_empty;
    assign drained = l_quiet && s_quiet && q_empty[1] && axi_quiet;
    assign quiet = drained && !c_busy && f_inflight == 0 && ff_empty;

    // Stuck: every module is idle with an empty queue or waits on an empty token queue (FINISH waits
    // for the others), nothing is in flight and dispatch cannot add anything. While running normally
    // that is a pop no remaining command can satisfy (DEP_UNDERFLOW, at the lowest waiting pc, as
    // fsim reports the earliest blocked head); after an error it ends the run.
    wire l_stuck = l_quiet || l_waiting;
    wire c_stuck = (!c_busy && q_empty[1]) || c_waiting || c_finish;
    wire s_stuck = s_quiet || s_waiting;
    wire no_dispatch = (fetch_done || d_blocked || halting) && !f_req_valid;
    wire stuck = running && no_dispatch && l_stuck && c_stuck && s_stuck && axi_quiet && f_inflight == 0;
    wire deadlock = stuck && !halting && (l_waiting || c_waiting || s_waiting);
    logic deadlock_q, stuck_q;
    logic [23:0] deadlock_pc;
    always_comb begin
        deadlock_pc = 24'hFFFFFF;
        if (l_waiting && l_pc < deadlock_pc) deadlock_pc = l_pc;
        if (c_waiting && c_pc < deadlock_pc) deadlock_pc = c_pc;
        if (s_waiting && s_pc < deadlock_pc) deadlock_pc = s_pc;
    end

    // errors of this cycle: the one with the lowest pc (program order) is kept
    logic new_err;
    logic [7:0] new_code;
    logic [23:0] new_pc;
    always_comb begin
        new_err = 1'b0;
        new_code = TL_ERR_NONE;
        new_pc = 24'hFFFFFF;
        if (d_valid && !d_ok) begin new_err = 1'b1; new_code = d_err; new_pc = d_pc; end
        if (l_err_v && (!new_err || l_err_pc < new_pc)) begin new_err = 1'b1; new_code = l_err_code; new_pc = l_err_pc; end
        if (s_err_v && (!new_err || s_err_pc < new_pc)) begin new_err = 1'b1; new_code = s_err_code; new_pc = s_err_pc; end
        if (c_err_v && (!new_err || c_err_pc < new_pc)) begin new_err = 1'b1; new_code = c_err_code; new_pc = c_err_pc; end
        if (rd_err && !rd_err_q && (!new_err || l_pc < new_pc)) begin new_err = 1'b1; new_code = TL_ERR_DDR_RANGE; new_pc = l_pc; end
        if (wr_err && !wr_err_q && (!new_err || s_pc < new_pc)) begin new_err = 1'b1; new_code = TL_ERR_DDR_RANGE; new_pc = s_pc; end
        if (deadlock && deadlock_q && !new_err) begin new_err = 1'b1; new_code = TL_ERR_DEP_UNDERFLOW; new_pc = deadlock_pc; end
    end
    logic rd_err_q, wr_err_q;
    always_ff @(posedge clk) if (ce) begin
        rd_err_q <= rd_err;
        wr_err_q <= wr_err;
    end

    // program end: FINISH drained, or commands ran out and everything drained
    wire program_end = running && !halting && (c_finish_done ||
                       (fetch_done && quiet && !finish_seen && q_empty[1]));
    wire halt_end = running && halting && stuck && stuck_q;

    wire ctrl_read = rd_en && rd_addr == AXIL_AW'(TL_REG_CTRL);
    always_ff @(posedge clk) begin
        if (rst) begin
            running <= 1'b0;
            ap_done <= 1'b0;
            ap_ready <= 1'b0;
            halting <= 1'b0;
            gie <= 1'b0;
            ier <= 1'b0;
            isr <= 1'b0;
            err_code_r <= '0;
            err_pc_r <= '0;
            err_pc_vld <= 1'b0;
            ddr_base <= '0;
            cmd_offset <= '0;
            cmd_count <= '0;
            finish_seen <= 1'b0;
            deadlock_q <= 1'b0;
            stuck_q <= 1'b0;
            srst <= 1'b0;
        end else begin
            if (ce) begin
                deadlock_q <= deadlock;
                stuck_q <= stuck;
            end
            srst <= ce && halt_end;
            if (ctrl_read) begin                    // ap_done / ap_ready: clear on read
                ap_done <= 1'b0;
                ap_ready <= 1'b0;
            end
            if (reg_wr) begin
                case (wr_addr)
                    AXIL_AW'(TL_REG_GIE): gie <= wr_data[0];
                    AXIL_AW'(TL_REG_IER): ier <= wr_data[0];
                    AXIL_AW'(TL_REG_ISR): if (wr_data[0]) isr <= !isr;   // toggle on write (Vitis)
                    AXIL_AW'(TL_REG_DDR_BASE_LO): ddr_base[31:0] <= wr_data;
                    AXIL_AW'(TL_REG_DDR_BASE_HI): ddr_base[63:32] <= wr_data;
                    AXIL_AW'(TL_REG_CMD_ADDR): cmd_offset <= wr_data;
                    AXIL_AW'(TL_REG_CMD_COUNT): cmd_count <= wr_data;
                    default: ;
                endcase
            end
            if (start) begin
                running <= 1'b1;
                halting <= 1'b0;
                finish_seen <= 1'b0;
                err_code_r <= '0;
                err_pc_r <= '0;
                err_pc_vld <= 1'b0;
            end
            if (ce && d_fire && d_ok && d_op == TL_OP_FINISH) finish_seen <= 1'b1;   // commands after FINISH are ignored
            if (ce && running && new_err && (!halting || new_pc < err_pc_r)) begin
                err_code_r <= new_code;
                err_pc_r <= new_pc;
                err_pc_vld <= 1'b1;
                halting <= 1'b1;
            end
            if (ce && (program_end || halt_end)) begin
                running <= 1'b0;
                ap_done <= 1'b1;
                ap_ready <= 1'b1;
                halting <= 1'b0;
                if (ier) isr <= 1'b1;
            end
        end
    end
    assign irq = gie && isr && ier;
    assign busy = running;

    // =========================================================== counters
    // DDR bytes as docs/engine.md / fsim count them: 64 per retired command plus the LOAD / STORE
    // payloads (m * n * element size; a zero fill reads nothing). The AXI bus bytes (whole beats,
    // commands fetched but dropped) are the harness's own statistics.
    wire [2:0] n_retired = 3'(l_retire) + 3'(s_retire) + 3'(c_retire);
    wire [63:0] r_bytes = 64'(n_retired) * 64'(isa_cmd_bytes) + (l_retire ? 64'(l_retire_bytes) : 64'd0);
    wire [63:0] w_bytes = s_retire ? 64'(s_retire_bytes) : 64'd0;
    localparam int isa_cmd_bytes = 4 * TL_CMD_WORDS;
    logic [NC-1:0] inc;                             // one-per-cycle counters
    always_comb begin
        inc = '0;
        inc[TL_CNT_CYCLES] = 1'b1;
        inc[TL_CNT_LOAD_BUSY] = l_moving;
        inc[TL_CNT_STORE_BUSY] = s_moving;
        inc[TL_CNT_DMA_STALL] = c_waiting_load;
        inc[TL_CNT_GEMM_BUSY] = g_feeding;
        inc[TL_CNT_TOPK_BUSY] = t_busy;
        inc[TL_CNT_SOFTMAX_BUSY] = sm_busy;
        inc[TL_CNT_VEC_BUSY] = v_busy;
    end
    always_ff @(posedge clk) begin
        if (rst || start) begin
            for (int i = 0; i < NC; i++) cnt[i] <= '0;
            conflict_cycles <= '0;
        end else if (running) begin
            if (!ce) conflict_cycles <= conflict_cycles + 64'd1;
            for (int i = 0; i < NC; i++) begin
                if (i == TL_CNT_CYCLES) cnt[i] <= cnt[i] + 64'd1;
                else if (!ce) cnt[i] <= cnt[i];
                else if (i == TL_CNT_DDR_RD_BYTES) cnt[i] <= cnt[i] + 64'(r_bytes);
                else if (i == TL_CNT_DDR_WR_BYTES) cnt[i] <= cnt[i] + 64'(w_bytes);
                else if (i == TL_CNT_MACS) cnt[i] <= cnt[i] + 64'(g_macs);
                else if (i == TL_CNT_RETIRED) cnt[i] <= cnt[i] + 64'(l_retire) + 64'(s_retire) + 64'(c_retire);
                else if (inc[i]) cnt[i] <= cnt[i] + 64'd1;
            end
        end
    end

    // =========================================================== register read
    always_comb begin
        rd_data = '0;
        case (rd_addr)
            AXIL_AW'(TL_REG_CTRL): rd_data = {28'd0, ap_ready, !running, ap_done, running};
            AXIL_AW'(TL_REG_GIE): rd_data = {31'd0, gie};
            AXIL_AW'(TL_REG_IER): rd_data = {31'd0, ier};
            AXIL_AW'(TL_REG_ISR): rd_data = {31'd0, isr};
            AXIL_AW'(TL_REG_ERROR): rd_data = {24'd0, err_code_r};
            AXIL_AW'(TL_REG_DDR_BASE_LO): rd_data = ddr_base[31:0];
            AXIL_AW'(TL_REG_DDR_BASE_HI): rd_data = ddr_base[63:32];
            AXIL_AW'(TL_REG_CMD_ADDR): rd_data = cmd_offset;
            AXIL_AW'(TL_REG_CMD_COUNT): rd_data = cmd_count;
            AXIL_AW'(TL_REG_ERR_PC): rd_data = {8'd0, err_pc_r};
            AXIL_AW'(TL_REG_ERR_PC_CTRL): rd_data = {31'd0, err_pc_vld};
            AXIL_AW'(REG_CONFLICT_LO): rd_data = conflict_cycles[31:0];
            AXIL_AW'(REG_CONFLICT_HI): rd_data = conflict_cycles[63:32];
            default: begin
                for (int i = 0; i < NC; i++) begin
                    if (rd_addr == AXIL_AW'(TL_REG_COUNTERS) + AXIL_AW'(8 * i)) rd_data = cnt[i][31:0];
                    if (rd_addr == AXIL_AW'(TL_REG_COUNTERS) + AXIL_AW'(8 * i + 4)) rd_data = cnt[i][63:32];
                end
            end
        endcase
    end

    /* verilator lint_off UNUSEDSIGNAL */
    wire unused = ^{tq_count, spm_rdata, g_busy, acc_rd[3*AL*48-1:96], idx_rdata[16 +: 112], idx_rdata[144 +: 112],
                    idx_rdata[3*128+16 +: 112], c_busy,
                    ff_full, ddr_base[63:AXI_AW], cmd_addr[63:AXI_AW], l_pc};
    /* verilator lint_on UNUSEDSIGNAL */
endmodule
