// Element-interleaved banked memory with window ports: LANES banks of EW-bit elements, element a in
// bank a mod LANES at row a / LANES. One write port and NR read ports each move a window of LANES
// consecutive elements starting at ANY element address per cycle (per-lane write enables; a rotate
// network maps window lanes to banks), so a DMA beat or a vector of a row is one access even when
// unaligned. Reads have one cycle of latency. DEPTH (elements) is a multiple of LANES; addresses
// wrap modulo DEPTH (callers range-check commands before issuing them).
`timescale 1ns / 1ps
module engine_mem #(
    parameter int EW = 16,
    parameter int LANES = 8,
    parameter int DEPTH = 4096,
    parameter int NR = 1,
    parameter int AW = 24
) (
    input  logic                  clk,
    input  logic                  we,
    /* verilator lint_off UNUSEDSIGNAL */
    input  logic [AW-1:0]         waddr,       // bits above the memory's range are ignored
    /* verilator lint_on UNUSEDSIGNAL */
    input  logic [LANES-1:0]      wmask,       // window lane l writes element waddr + l
    input  logic [LANES*EW-1:0]   wdata,
    input  logic [NR*AW-1:0]      raddr,
    output logic [NR*LANES*EW-1:0] rdata       // window lane l = element raddr + l (one cycle later)
);
    localparam int LB = $clog2(LANES);
    localparam int ROWS = DEPTH / LANES;
    localparam int RB = $clog2(ROWS);

    logic [EW-1:0] bank [LANES][ROWS];

    // ---- write: bank b takes window lane (b - waddr) mod LANES
    wire [LB-1:0] w_off = waddr[LB-1:0];
    wire [RB-1:0] w_row = waddr[LB +: RB];
    always_ff @(posedge clk) begin
        if (we) begin
            for (int b = 0; b < LANES; b++) begin
                logic [LB-1:0] l;
                l = LB'(b) - w_off;
                // lanes that wrapped past the end of the first row live one row further
                if (wmask[l]) bank[b][LB'(b) < w_off ? w_row + 1'b1 : w_row] <= wdata[l*EW +: EW];
            end
        end
    end

    // ---- reads
    for (genvar p = 0; p < NR; p++) begin : g_rd
        /* verilator lint_off UNUSEDSIGNAL */
        wire [AW-1:0] a = raddr[p*AW +: AW];
        /* verilator lint_on UNUSEDSIGNAL */
        wire [LB-1:0] off = a[LB-1:0];
        wire [RB-1:0] row = a[LB +: RB];
        logic [LANES*EW-1:0] banks_q;
        logic [LB-1:0] off_q;
        always_ff @(posedge clk) begin
            off_q <= off;
            for (int b = 0; b < LANES; b++) banks_q[b*EW +: EW] <= bank[b][LB'(b) < off ? row + 1'b1 : row];
        end
        always_comb begin
            for (int l = 0; l < LANES; l++) begin
                logic [LB-1:0] b;
                b = LB'(l) + off_q;
                rdata[(p*LANES + l)*EW +: EW] = banks_q[b*EW +: EW];
            end
        end
    end

endmodule
