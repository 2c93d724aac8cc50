// Element-interleaved, region-banked memory with window ports and ONE copy of the data.
//
// Layout: LANES lane banks of EW-bit elements, element a in bank a mod LANES at row a / LANES; each
// bank is split by row into NREG regions of RR rows (the depth slices that are one BRAM column
// anyway: 2048 rows of <= 18 bits, 1024 rows of wider elements), so a region is RR * LANES
// consecutive elements (region = element address / (RR * LANES)). Every (bank, region) is one
// engine_bram: a true dual-port RAM, so each region serves at most 2 accesses per cycle.
//
// Ports: NW write ports and NR read ports each move a window of LANES consecutive elements starting
// at ANY element address (per-lane write masks; a rotate network maps window lanes to banks), so a
// DMA beat or a vector of a row is one access even when unaligned. Read data arrive one cycle after
// the request. Idle ports (re / we low) cost nothing. A window that crosses a region boundary is one
// access in each of the two regions. DEPTH (elements) is a multiple of LANES; addresses beyond DEPTH
// are not served (callers range-check commands before issuing them; data of such reads undefined).
//
// Conflicts: when a cycle's requests need more than 2 accesses in some region, the memory serves them
// over several cycles and keeps `done` low until the last one; the engine's global clock enable `ce`
// (the AND of every memory's `done`) freezes the requesters meanwhile, so a logical cycle of the
// engine simply takes extra clock cycles. Within a logical cycle the semantics of the multi-ported
// memory are kept exactly: ports are served in a fixed priority order per region (reads in port
// order, then writes in port order) and a port that cannot be served blocks every later port in its
// regions, so all reads of a region see the data before any write of the same logical cycle
// (read-before-write) and a higher write port wins over a lower one on the same element. Read data
// served before the last cycle wait in a shadow register; every read port's data stay valid through
// the whole next logical cycle however many clock cycles it takes (a port keeps its last data while
// idle). Requests that appear during a frozen cycle (a requester driven by an AXI stream that is not
// frozen) simply join the logical cycle in progress; their handshake completes with ce.
`timescale 1ns / 1ps
/* verilator lint_off DECLFILENAME */
module engine_bram #(
    parameter int W = 16,
    parameter int N = 2048
) (
    input  logic                   clk,
    input  logic [1:0]             en,
    input  logic [1:0]             we,
    input  logic [2*$clog2(N)-1:0] addr,
    input  logic [2*W-1:0]         din,
    output logic [2*W-1:0]         dout
);
    localparam int AB = $clog2(N);
    logic [W-1:0] ram [N];
    // true dual port, read-first on both ports; port 1 wins a same-address double write
    always_ff @(posedge clk) begin
        if (en[0]) begin
            dout[0 +: W] <= ram[addr[0 +: AB]];
            if (we[0]) ram[addr[0 +: AB]] <= din[0 +: W];
        end
        if (en[1]) begin
            dout[W +: W] <= ram[addr[AB +: AB]];
            if (we[1]) ram[addr[AB +: AB]] <= din[W +: W];
        end
    end
endmodule
/* verilator lint_on DECLFILENAME */

module engine_mem #(
    parameter int EW = 16,
    parameter int LANES = 8,
    parameter int DEPTH = 4096,
    parameter int NR = 1,
    parameter int NW = 1,
    parameter int AW = 24,
    parameter int REGION_ROWS = EW <= 18 ? 2048 : 1024   // rows of one region (a BRAM36 column depth)
) (
    input  logic                  clk,
    input  logic                  rst,
    input  logic                  ce,          // global clock enable: this cycle ends a logical cycle
    output logic                  done,        // every request of this logical cycle is served by now
    input  logic [NW-1:0]         we,
    /* verilator lint_off UNUSEDSIGNAL */
    input  logic [NW*AW-1:0]      waddr,       // bits above the memory's range are ignored
    input  logic [NR*AW-1:0]      raddr,
    /* verilator lint_on UNUSEDSIGNAL */
    input  logic [NW*LANES-1:0]   wmask,       // window lane l writes element waddr + l
    input  logic [NW*LANES*EW-1:0] wdata,
    input  logic [NR-1:0]         re,
    output logic [NR*LANES*EW-1:0] rdata       // window lane l = element raddr + l (next logical cycle)
);
    localparam int LB = LANES > 1 ? $clog2(LANES) : 1;
    localparam int ROWS = DEPTH / LANES;
    localparam int RB = $clog2(ROWS);
    localparam int RR = ROWS < REGION_ROWS ? ROWS : REGION_ROWS;
    localparam int RRB = $clog2(RR);
    localparam int NREG = (ROWS + RR - 1) / RR;
    localparam int GB = NREG > 1 ? $clog2(NREG) : 1;
    localparam int NP = NR + NW;                 // ports in priority order: reads, then writes

    // ---- requests: rows and regions of each port (bank b uses row0 when b >= off, else row0 + 1)
    logic [NP-1:0] req;
    logic [RB-1:0] row0 [NP];
    logic [RB-1:0] row1 [NP];
    logic [LB-1:0] off [NP];
    logic [NREG-1:0] touch [NP];
    function automatic logic [NREG-1:0] region_bit(input logic [RB-1:0] row);   // one-hot, 0 if out of range
        region_bit = 32'(row) < ROWS ? NREG'(1) << (32'(row) / RR) : '0;
    endfunction
    always_comb begin
        for (int q = 0; q < NP; q++) begin
            /* verilator lint_off UNUSEDSIGNAL */
            logic [AW-1:0] a;
            /* verilator lint_on UNUSEDSIGNAL */
            a = q < NR ? raddr[q*AW +: AW] : waddr[(q - NR)*AW +: AW];
            req[q] = q < NR ? re[q] : we[q - NR];
            off[q] = LB'(a);
            row0[q] = a[LB +: RB];
            row1[q] = row0[q] + 1'b1;
            touch[q] = region_bit(row0[q]) | (off[q] != 0 ? region_bit(row1[q]) : '0);
        end
    end

    // ---- per cycle: grant up to 2 ports per region, in priority order, blocking behind a refusal
    logic [NP-1:0] served;                       // ports already served in this logical cycle
    logic [NP-1:0] grant;
    logic [NREG-1:0] slot [NP];                  // physical port (0/1) of a granted port per region
    always_comb begin
        logic [NREG-1:0] used1, used2, blocked;  // regions with >= 1 / 2 accesses granted, blocked regions
        used1 = '0;
        used2 = '0;
        blocked = '0;
        grant = '0;
        for (int q = 0; q < NP; q++) begin
            slot[q] = '0;
            if (req[q] && !served[q]) begin
                if ((touch[q] & (used2 | blocked)) == '0) begin
                    grant[q] = 1'b1;
                    slot[q] = touch[q] & used1;
                    used2 = used2 | (touch[q] & used1);
                    used1 = used1 | touch[q];
                end else begin
                    blocked = blocked | touch[q];
                end
            end
        end
        done = (req & ~served & ~grant) == '0;
    end
    always_ff @(posedge clk) begin
        if (rst || ce) served <= '0;
        else served <= served | grant;
    end

    // what each (region, physical port) serves this cycle: the port's rows, window offset, and for a
    // write the write port
    localparam int WB = NW > 1 ? $clog2(NW) : 1;
    logic [RB-1:0] s_row0 [NREG][2];
    logic [RB-1:0] s_row1 [NREG][2];
    logic [LB-1:0] s_off [NREG][2];
    logic s_v [NREG][2];
    logic s_w [NREG][2];
    logic [WB-1:0] s_wp [NREG][2];
    always_comb begin
        for (int r = 0; r < NREG; r++) begin
            for (int k = 0; k < 2; k++) begin
                s_row0[r][k] = '0;
                s_row1[r][k] = '0;
                s_off[r][k] = '0;
                s_v[r][k] = 1'b0;
                s_w[r][k] = 1'b0;
                s_wp[r][k] = '0;
            end
        end
        for (int q = 0; q < NP; q++) begin
            if (grant[q]) begin
                for (int r = 0; r < NREG; r++) begin
                    if (touch[q][r]) begin
                        s_row0[r][32'(slot[q][r])] = row0[q];
                        s_row1[r][32'(slot[q][r])] = row1[q];
                        s_off[r][32'(slot[q][r])] = off[q];
                        s_v[r][32'(slot[q][r])] = 1'b1;
                        s_w[r][32'(slot[q][r])] = q >= NR;
                        s_wp[r][32'(slot[q][r])] = WB'(q >= NR ? q - NR : 0);
                    end
                end
            end
        end
    end

    // write windows rotated into bank order: bank b takes window lane (b - waddr) mod LANES
    logic [EW-1:0] w_lane [NW][LANES];
    logic [EW-1:0] w_bank [NW][LANES];
    logic w_mask [NW][LANES];
    for (genvar w = 0; w < NW; w++) begin : g_wlane
        for (genvar l = 0; l < LANES; l++) begin : g_l
            assign w_lane[w][l] = wdata[(w*LANES + l)*EW +: EW];
        end
    end
    always_comb begin
        for (int w = 0; w < NW; w++) begin
            for (int b = 0; b < LANES; b++) begin
                logic [LB-1:0] l;
                l = LB'(b) - off[NR + w];
                w_bank[w][b] = w_lane[w][l];
                w_mask[w][b] = wmask[w*LANES + 32'(l)];
            end
        end
    end

    // ---- the RAMs: bank b, region r
    logic [2*EW-1:0] dout [LANES][NREG];
    for (genvar b = 0; b < LANES; b++) begin : g_bank
        for (genvar r = 0; r < NREG; r++) begin : g_reg
            logic [1:0] en, wen;
            logic [2*RRB-1:0] addr;
            logic [2*EW-1:0] din;
            always_comb begin
                for (int k = 0; k < 2; k++) begin
                    logic [RB-1:0] row;
                    /* verilator lint_off CMPCONST */
                    row = LB'(b) < s_off[r][k] ? s_row1[r][k] : s_row0[r][k];
                    /* verilator lint_on CMPCONST */
                    en[k] = 1'b0;
                    wen[k] = 1'b0;
                    din[k*EW +: EW] = '0;
                    addr[k*RRB +: RRB] = '0;
                    if (s_v[r][k]) begin                  // an idle region port computes nothing more
                        wen[k] = s_w[r][k] && w_mask[s_wp[r][k]][b];
                        en[k] = 32'(row) < ROWS && 32'(row) / RR == r && (!s_w[r][k] || wen[k]);
                        din[k*EW +: EW] = w_bank[s_wp[r][k]][b];
                        addr[k*RRB +: RRB] = RRB'(row);
                    end
                end
            end
            engine_bram #(.W(EW), .N(RR)) u_ram (
                .clk(clk), .en(en), .we(wen), .addr(addr), .din(din), .dout(dout[b][r])
            );
        end
    end

    // ---- read data: from the RAM outputs the cycle after a port is served, else its shadow
    logic ce_q;
    always_ff @(posedge clk) ce_q <= rst || ce;
    for (genvar p = 0; p < NR; p++) begin : g_rd
        logic srv_q;
        logic [LB-1:0] off_q;
        logic [GB-1:0] reg0_q, reg1_q;
        logic slot0_q, slot1_q;
        always_ff @(posedge clk) begin
            srv_q <= grant[p];
            if (grant[p]) begin
                off_q <= off[p];
                reg0_q <= GB'(32'(row0[p]) / RR);
                reg1_q <= GB'(32'(row1[p]) / RR);
                slot0_q <= slot[p][32'(row0[p]) / RR < NREG ? 32'(row0[p]) / RR : 0];
                slot1_q <= slot[p][32'(row1[p]) / RR < NREG ? 32'(row1[p]) / RR : 0];
            end
        end
        logic [LANES*EW-1:0] phys, shadow, cur, now;
        always_comb begin
            phys = '0;
            for (int l = 0; l < LANES; l++) begin       // window lane l comes from bank l + off
                logic [LB-1:0] b;
                logic [GB-1:0] g;
                logic s;
                b = LB'(l) + off_q;
                g = b < off_q ? reg1_q : reg0_q;
                s = b < off_q ? slot1_q : slot0_q;
                // the RAM outputs matter only the cycle after a grant
                if (srv_q && 32'(g) < NREG) phys[l*EW +: EW] = dout[b][g][32'(s)*EW +: EW];
            end
            now = ce_q ? (srv_q ? phys : shadow) : cur;
        end
        always_ff @(posedge clk) begin
            if (srv_q) shadow <= phys;
            cur <= now;
        end
        assign rdata[p*LANES*EW +: LANES*EW] = now;
    end

endmodule
