// AXI4 read master of the engine DMA: turns requests (byte address, beat count) into INCR bursts of
// at most MAX_BURST beats that never cross a 4 KiB boundary (AXI rule; the ZynqMP HP ports split
// anything longer than 16 beats anyway, UG1085 "PL-PS Interface Specifics"), keeps up to
// OUTSTANDING bursts in flight and streams the returned beats, in request order, to `out`.
// Addresses are DW/8-byte aligned (the low bits of req_addr are ignored); the consumer counts beats.
// A new request is accepted as soon as the previous one's bursts are all issued, so the next row's
// address phase overlaps the current row's data (row gathers stream back to back).
// `err` (sticky until rst) is set by a non-OKAY RRESP. The R channel ends in a 2-entry register slice
// (engine_fifo): `out` and `m_axi_rready` are registered, so no engine logic depends combinationally
// on the AXI inputs (one cycle more from an R beat to its consumer; full rate back to back).
`timescale 1ns / 1ps
module engine_axi_rd #(
    parameter int AW = 40,
    parameter int DW = 128,
    parameter int MAX_BURST = 16,
    parameter int OUTSTANDING = 8
) (
    input  logic          clk,
    input  logic          rst,
    input  logic          req_valid,
    output logic          req_ready,
    input  logic [AW-1:0] req_addr,
    input  logic [23:0]   req_beats,      // >= 1
    output logic [AW-1:0] m_axi_araddr,
    output logic [7:0]    m_axi_arlen,
    output logic [2:0]    m_axi_arsize,
    output logic [1:0]    m_axi_arburst,
    output logic          m_axi_arvalid,
    input  logic          m_axi_arready,
    input  logic [DW-1:0] m_axi_rdata,
    input  logic [1:0]    m_axi_rresp,
    input  logic          m_axi_rlast,
    input  logic          m_axi_rvalid,
    output logic          m_axi_rready,
    output logic [DW-1:0] out_tdata,
    output logic          out_tvalid,
    input  logic          out_tready,
    output logic          busy,
    output logic          err
);
    localparam int BB = $clog2(DW / 8);            // byte-address bits of a beat
    localparam int PB = 12 - BB;                   // beat-index bits inside a 4 KiB page
    localparam int OW = $clog2(OUTSTANDING + 1);

    logic active;
    logic [AW-1:0] addr;
    logic [23:0] left;
    logic [OW-1:0] inflight;

    // burst length: min(left, MAX_BURST, beats to the 4 KiB boundary)
    wire [PB:0] to_page = (PB+1)'(1 << PB) - {1'b0, addr[11:BB]};
    logic [8:0] blen;
    always_comb begin
        blen = 9'(MAX_BURST);
        if ({15'd0, blen} > left) blen = left[8:0];
        if (9'(to_page) < blen) blen = 9'(to_page);
    end

    assign req_ready = !active;
    assign m_axi_arvalid = active && inflight != OW'(OUTSTANDING);
    assign m_axi_araddr = {addr[AW-1:BB], BB'(0)};
    assign m_axi_arlen = 8'(blen - 9'd1);
    assign m_axi_arsize = 3'(BB);
    assign m_axi_arburst = 2'b01;

    wire ar_fire = m_axi_arvalid && m_axi_arready;
    wire r_fire = m_axi_rvalid && m_axi_rready;
    wire r_done = r_fire && m_axi_rlast;

    logic r_empty, r_full;
    /* verilator lint_off PINCONNECTEMPTY */
    engine_fifo #(.W(DW), .DEPTH(2)) u_slice (
        .clk(clk), .rst(rst), .push(r_fire), .din(m_axi_rdata), .pop(out_tready), .dout(out_tdata),
        .empty(r_empty), .full(r_full), .count()
    );
    /* verilator lint_on PINCONNECTEMPTY */
    assign m_axi_rready = !r_full;
    assign out_tvalid = !r_empty;
    assign busy = active || inflight != 0 || !r_empty;

    always_ff @(posedge clk) begin
        if (rst) begin
            active <= 1'b0;
            inflight <= '0;
            err <= 1'b0;
            addr <= '0;
            left <= '0;
        end else begin
            if (req_valid && req_ready) begin
                active <= req_beats != 0;
                addr <= req_addr;
                left <= req_beats;
            end else if (ar_fire) begin
                addr <= addr + (AW'(blen) << BB);
                left <= left - 24'(blen);
                if (left == 24'(blen)) active <= 1'b0;
            end
            inflight <= inflight + OW'(ar_fire) - OW'(r_done);
            if (r_fire && m_axi_rresp != 2'b00) err <= 1'b1;
        end
    end
endmodule
