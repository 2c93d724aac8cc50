// AXI4 write master of the engine DMA: requests (byte address, beat count) become INCR bursts of at
// most MAX_BURST beats that never cross 4 KiB; the data beats (with byte strobes) come from `in` in
// request order. Up to OUTSTANDING bursts may wait for their B response; `busy` stays high until
// every response has arrived, so "not busy" means the data is in DDR (store completion).
// The AW of a burst is issued before its W beats (the harness and the HP ports accept W only for a
// known burst). `err` (sticky until rst) is set by a non-OKAY BRESP. `in` enters a 2-entry register
// slice (engine_fifo): `in_tready` and the W channel are registered, so no engine logic depends
// combinationally on the AXI inputs (one cycle more per stream; full rate back to back).
`timescale 1ns / 1ps
module engine_axi_wr #(
    parameter int AW = 40,
    parameter int DW = 128,
    parameter int MAX_BURST = 16,
    parameter int OUTSTANDING = 8
) (
    input  logic            clk,
    input  logic            rst,
    input  logic            req_valid,
    output logic            req_ready,
    input  logic [AW-1:0]   req_addr,
    input  logic [23:0]     req_beats,      // >= 1
    input  logic [DW-1:0]   in_tdata,
    input  logic [DW/8-1:0] in_tstrb,
    input  logic            in_tvalid,
    output logic            in_tready,
    output logic [AW-1:0]   m_axi_awaddr,
    output logic [7:0]      m_axi_awlen,
    output logic [2:0]      m_axi_awsize,
    output logic [1:0]      m_axi_awburst,
    output logic            m_axi_awvalid,
    input  logic            m_axi_awready,
    output logic [DW-1:0]   m_axi_wdata,
    output logic [DW/8-1:0] m_axi_wstrb,
    output logic            m_axi_wlast,
    output logic            m_axi_wvalid,
    input  logic            m_axi_wready,
    input  logic [1:0]      m_axi_bresp,
    input  logic            m_axi_bvalid,
    output logic            m_axi_bready,
    output logic            busy,
    output logic            err
);
    localparam int BB = $clog2(DW / 8);
    localparam int PB = 12 - BB;
    localparam int OW = $clog2(OUTSTANDING + 1);
    localparam int QD = OUTSTANDING;              // burst-length queue for the W channel
    localparam int QW = $clog2(QD);

    logic active;
    logic [AW-1:0] addr;
    logic [23:0] left;
    logic [OW-1:0] pending;        // bursts whose AW was issued and whose B has not arrived

    wire [PB:0] to_page = (PB+1)'(1 << PB) - {1'b0, addr[11:BB]};
    logic [8:0] blen;
    always_comb begin
        blen = 9'(MAX_BURST);
        if ({15'd0, blen} > left) blen = left[8:0];
        if (9'(to_page) < blen) blen = 9'(to_page);
    end

    // W-channel queue of burst lengths (entries = bursts issued, not yet fully written)
    logic [8:0] lq [QD];
    logic [QW-1:0] lq_wr, lq_rd;
    logic [QW:0] lq_n;
    logic [8:0] wbeat;

    assign req_ready = !active;
    assign m_axi_awvalid = active && pending != OW'(OUTSTANDING) && lq_n != (QW+1)'(QD);
    assign m_axi_awaddr = {addr[AW-1:BB], BB'(0)};
    assign m_axi_awlen = 8'(blen - 9'd1);
    assign m_axi_awsize = 3'(BB);
    assign m_axi_awburst = 2'b01;

    wire aw_fire = m_axi_awvalid && m_axi_awready;
    logic w_empty, w_full;
    assign in_tready = !w_full;
    wire w_ok = lq_n != 0;
    assign m_axi_wvalid = w_ok && !w_empty;
    assign m_axi_wlast = wbeat == lq[lq_rd] - 9'd1;
    wire w_fire = m_axi_wvalid && m_axi_wready;
    wire w_done = w_fire && m_axi_wlast;
    /* verilator lint_off PINCONNECTEMPTY */
    engine_fifo #(.W(DW + DW/8), .DEPTH(2)) u_slice (
        .clk(clk), .rst(rst), .push(in_tvalid), .din({in_tstrb, in_tdata}), .pop(w_fire),
        .dout({m_axi_wstrb, m_axi_wdata}), .empty(w_empty), .full(w_full), .count()
    );
    /* verilator lint_on PINCONNECTEMPTY */
    assign m_axi_bready = 1'b1;
    wire b_fire = m_axi_bvalid;
    assign busy = active || pending != 0 || !w_empty;

    always_ff @(posedge clk) begin
        if (rst) begin
            active <= 1'b0;
            pending <= '0;
            err <= 1'b0;
            lq_wr <= '0;
            lq_rd <= '0;
            lq_n <= '0;
            wbeat <= '0;
            addr <= '0;
            left <= '0;
        end else begin
            if (req_valid && req_ready) begin
                active <= req_beats != 0;
                addr <= req_addr;
                left <= req_beats;
            end else if (aw_fire) begin
                addr <= addr + (AW'(blen) << BB);
                left <= left - 24'(blen);
                if (left == 24'(blen)) active <= 1'b0;
            end
            if (aw_fire) begin
                lq[lq_wr] <= blen;
                lq_wr <= lq_wr + 1'b1;
            end
            if (w_fire) wbeat <= w_done ? '0 : wbeat + 1'b1;
            if (w_done) lq_rd <= lq_rd + 1'b1;
            lq_n <= lq_n + (QW+1)'(aw_fire) - (QW+1)'(w_done);
            pending <= pending + OW'(aw_fire) - OW'(b_fire);
            if (b_fire && m_axi_bresp != 2'b00) err <= 1'b1;
        end
    end
endmodule
