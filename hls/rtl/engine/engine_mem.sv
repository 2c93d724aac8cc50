// Element-interleaved banked memory with window ports: LANES banks of EW-bit elements, element a in
// bank a mod LANES at row a / LANES. NW write ports and NR read ports each move a window of LANES
// consecutive elements starting at ANY element address per cycle (per-lane write enables; a rotate
// network maps window lanes to banks), so a DMA beat or a vector of a row is one access even when
// unaligned. Reads have one cycle of latency. DEPTH (elements) is a multiple of LANES; addresses
// wrap modulo DEPTH (callers range-check commands before issuing them). Two writers never target
// the same element in one cycle in a well-formed program (higher port numbers win if they do).
// Cost: every read port beyond the first is a replica of the banks in BRAM (or a time-multiplexed
// port); docs/rtl.md discusses the port budget.
`timescale 1ns / 1ps
module engine_mem #(
    parameter int EW = 16,
    parameter int LANES = 8,
    parameter int DEPTH = 4096,
    parameter int NR = 1,
    parameter int NW = 1,
    parameter int AW = 24
) (
    input  logic                  clk,
    input  logic [NW-1:0]         we,
    /* verilator lint_off UNUSEDSIGNAL */
    input  logic [NW*AW-1:0]      waddr,       // bits above the memory's range are ignored
    /* verilator lint_on UNUSEDSIGNAL */
    input  logic [NW*LANES-1:0]   wmask,       // window lane l writes element waddr + l
    input  logic [NW*LANES*EW-1:0] wdata,
    input  logic [NR*AW-1:0]      raddr,
    output logic [NR*LANES*EW-1:0] rdata       // window lane l = element raddr + l (one cycle later)
);
    localparam int LB = $clog2(LANES);
    localparam int ROWS = DEPTH / LANES;
    localparam int RB = $clog2(ROWS);

    logic [EW-1:0] bank [LANES][ROWS];

    // ---- writes: bank b takes window lane (b - waddr) mod LANES
    always_ff @(posedge clk) begin
        for (int w = 0; w < NW; w++) begin
            if (we[w]) begin
                for (int b = 0; b < LANES; b++) begin
                    logic [LB-1:0] l, off;
                    logic [RB-1:0] row;
                    off = waddr[w*AW +: LB];
                    row = waddr[w*AW + LB +: RB];
                    l = LB'(b) - off;
                    // lanes that wrapped past the end of the first row live one row further
                    if (wmask[w*LANES + 32'(l)]) bank[b][LB'(b) < off ? row + 1'b1 : row] <= wdata[(w*LANES + 32'(l))*EW +: EW];
                end
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
