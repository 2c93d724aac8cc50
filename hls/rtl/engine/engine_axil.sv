// AXI-Lite slave front end of the engine's register file: one write and one read at a time, OKAY
// responses. A write is accepted when both AW and W are valid and no B is pending; it appears as a
// one-cycle `wr_en` with the word address and data (byte strobes apply per byte). A read samples
// `rd_data` for `rd_addr` one cycle after the AR handshake; `rd_en` pulses in that sampling cycle, so
// a clear-on-read register clears at the same edge that captures its old value.
`timescale 1ns / 1ps
module engine_axil #(
    parameter int AW = 12
) (
    input  logic          clk,
    input  logic          rst,
    /* verilator lint_off UNUSEDSIGNAL */
    input  logic [AW-1:0] s_axil_awaddr,      // word addresses: bits 1:0 ignored
    /* verilator lint_on UNUSEDSIGNAL */
    input  logic          s_axil_awvalid,
    output logic          s_axil_awready,
    input  logic [31:0]   s_axil_wdata,
    input  logic [3:0]    s_axil_wstrb,
    input  logic          s_axil_wvalid,
    output logic          s_axil_wready,
    output logic [1:0]    s_axil_bresp,
    output logic          s_axil_bvalid,
    input  logic          s_axil_bready,
    /* verilator lint_off UNUSEDSIGNAL */
    input  logic [AW-1:0] s_axil_araddr,
    /* verilator lint_on UNUSEDSIGNAL */
    input  logic          s_axil_arvalid,
    output logic          s_axil_arready,
    output logic [31:0]   s_axil_rdata,
    output logic [1:0]    s_axil_rresp,
    output logic          s_axil_rvalid,
    input  logic          s_axil_rready,
    output logic          wr_en,
    output logic [AW-1:0] wr_addr,
    output logic [31:0]   wr_data,
    output logic [3:0]    wr_strb,
    output logic          rd_en,
    output logic [AW-1:0] rd_addr,
    input  logic [31:0]   rd_data
);
    wire do_wr = s_axil_awvalid && s_axil_wvalid && !s_axil_bvalid;
    assign s_axil_awready = do_wr;
    assign s_axil_wready = do_wr;
    assign s_axil_bresp = 2'b00;
    assign s_axil_rresp = 2'b00;
    assign s_axil_arready = !s_axil_rvalid && !rd_pending;

    logic rd_pending;
    wire ar_fire = s_axil_arvalid && s_axil_arready;
    assign rd_en = rd_pending;

    always_ff @(posedge clk) begin
        if (rst) begin
            s_axil_bvalid <= 1'b0;
            s_axil_rvalid <= 1'b0;
            rd_pending <= 1'b0;
            wr_en <= 1'b0;
            wr_addr <= '0;
            wr_data <= '0;
            wr_strb <= '0;
            rd_addr <= '0;
            s_axil_rdata <= '0;
        end else begin
            wr_en <= do_wr;
            if (do_wr) begin
                wr_addr <= {s_axil_awaddr[AW-1:2], 2'b00};
                wr_data <= s_axil_wdata;
                wr_strb <= s_axil_wstrb;
                s_axil_bvalid <= 1'b1;
            end else if (s_axil_bready) begin
                s_axil_bvalid <= 1'b0;
            end
            if (ar_fire) begin
                rd_addr <= {s_axil_araddr[AW-1:2], 2'b00};
                rd_pending <= 1'b1;
            end
            if (rd_pending) begin
                rd_pending <= 1'b0;
                s_axil_rvalid <= 1'b1;
                s_axil_rdata <= rd_data;
            end else if (s_axil_rvalid && s_axil_rready) begin
                s_axil_rvalid <= 1'b0;
            end
        end
    end
endmodule
