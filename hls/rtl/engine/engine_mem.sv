// Element-interleaved, region-banked memory with window ports and ONE copy of the data.
//
// Layout: LANES (a power of two) lane banks of EW-bit elements, element a in bank a mod LANES at row
// a / LANES; each bank is split by row into NREG regions of RR rows (the depth slices that are one
// BRAM column anyway: 2048 rows of <= 18 bits, 1024 rows of wider elements), so a region is RR * LANES
// consecutive elements (region = element address / (RR * LANES)). Every (bank, region) is one
// engine_bram: a true dual-port RAM, so each region serves at most 2 accesses per cycle.
//
// Ports: NW write ports and NR read ports each move a window of LANES consecutive elements starting
// at ANY element address (per-lane write masks; a rotate network maps window lanes to banks), so a
// DMA beat or a vector of a row is one access even when unaligned. A narrow port (RD_LANES / WR_LANES:
// 8 bits per port, 0 = LANES) moves only the window's first lanes: its other read lanes are 0, its other
// write lanes ignored; it has read registers for its lanes only and, when it has at most LANES / 8 lanes,
// a LANES:1 select per read lane instead of a rotate network; a narrow write port selects each bank's mask
// from its lanes and the data of P lanes per residue bank mod P (P: its lanes rounded up to a power of two)
// instead of rotating (its region accesses and conflicts are those of a full window, so the cycles do not
// depend on the widths). Read data arrive one cycle after
// the request. Idle ports (re / we low) cost nothing. A window that crosses a region boundary is one
// access in each of the two regions. DEPTH (elements) is a multiple of LANES; addresses beyond DEPTH
// are not served (callers range-check commands before issuing them; data of such reads undefined:
// lanes in a row past the last region read 0, lanes in the unused rows of a partial last region
// read a stale RAM output).
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
`ifdef TL_SIM_FORMS
`define TL_MEM_SIM_FORM 1'b1
`else
`define TL_MEM_SIM_FORM 1'b0
`endif
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
    parameter int REGION_ROWS = EW <= 18 ? 2048 : 1024,  // rows of one region (a BRAM36 column depth)
    parameter logic [63:0] RD_LANES = '0,                // lanes of read port p at bits 8p (0: LANES)
    parameter logic [63:0] WR_LANES = '0,                // lanes of write port w at bits 8w (0: LANES)
    parameter bit SIM_FORM = `TL_MEM_SIM_FORM            // the simulation form below (TL_SIM_FORMS builds)
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
    localparam int NREG = (ROWS + RR - 1) / RR;
    localparam int NP = NR + NW;                 // ports in priority order: reads, then writes
    function automatic int port_lanes(input logic [63:0] lanes, input int q);
        port_lanes = lanes[q*8 +: 8] == 0 || 32'(lanes[q*8 +: 8]) > LANES ? LANES : 32'(lanes[q*8 +: 8]);
    endfunction
    function automatic int pow2_lanes(input logic [63:0] lanes, input int q);   // port_lanes rounded up to 2**n
        pow2_lanes = 1 << $clog2(port_lanes(lanes, q));
    endfunction
    if (NR > 8 || NW > 8) begin : g_bad_ports
        $error("engine_mem: at most 8 read and 8 write ports");
    end

    // ---- requests: rows and regions of each port (bank b uses row0 when b >= off, else row0 + 1)
    logic [NP-1:0] req;
    logic [RB-1:0] row0 [NP];
    logic [RB-1:0] row1 [NP];
    logic [LB-1:0] off [NP];
    logic [NREG-1:0] reg0 [NP];                  // region of row0 / row1 (one-hot, 0 if out of range)
    logic [NREG-1:0] reg1 [NP];
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
            reg0[q] = region_bit(row0[q]);
            reg1[q] = region_bit(row1[q]);
            touch[q] = reg0[q] | (off[q] != 0 ? reg1[q] : '0);
        end
    end

    // ---- per cycle: grant up to 2 ports per region, in priority order, blocking behind a refusal
    // Physical ports of a region: with NW <= 2 write port w always uses port w (a RAM port's write data
    // come from one write port) and a read the port left free by the write granted with it, else the
    // reads take ports 0, 1 in port order; with NW > 2 the granted ports take 0, 1 in priority order.
    // Either way two writes in one region are write port 0 on port 0 and 1 on port 1 (engine_bram: port
    // 1 wins a same-address double write, so the higher write port wins), and a read sees the data of
    // before the cycle's writes whichever port it uses (read-first on both ports).
    logic [NP-1:0] served;                       // ports already served in this logical cycle
    logic [NP-1:0] grant;
    always_comb begin
        logic [NREG-1:0] used1, used2, blocked;  // regions with >= 1 / 2 accesses granted, blocked regions
        used1 = '0;
        used2 = '0;
        blocked = '0;
        grant = '0;
        for (int q = 0; q < NP; q++) begin
            if (req[q] && !served[q]) begin
                if ((touch[q] & (used2 | blocked)) == '0) begin
                    grant[q] = 1'b1;
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
    logic [NR-1:0] srv_q;                        // read ports granted in the previous clock cycle
    always_ff @(posedge clk) srv_q <= grant[NR-1:0];
    /* verilator lint_off UNUSEDSIGNAL */
    logic [NR*LANES*EW-1:0] win;                 // read port p's window the cycle after its grant (narrow: its lanes)
    /* verilator lint_on UNUSEDSIGNAL */

    if (SIM_FORM) begin : g_sim
        // ---- simulation form (SIM_FORM; the rtlsim harness builds `+define+TL_SIM_FORMS`): the same
        // element memory without its physical organisation. A Verilated model evaluates every (bank, region)
        // port, rotate network and pick tree every cycle; here a granted window is read or written directly,
        // with the grants, conflicts and timing above unchanged (so the cycles are the same) and the same
        // data: element a + l (mod 2**(LB + RB), as the rows wrap) for window lane l, read-first, the higher
        // write port winning. The one difference is in data the callers never use: window lanes beyond DEPTH
        // read 0 here (the RAMs give 0 or a stale output). sim/test_engine_sim_forms.py checks both forms
        // against each other, cycle for cycle and byte for byte, and sim/test_engine_mem_forms.py the two
        // memories side by side under random traffic; Yosys and the cocotb engine tests read the RAMs.
        localparam int EB = LB + RB;
        logic [EW-1:0] mem [DEPTH];
        logic [NR*LANES*EW-1:0] rd_win;
        always_ff @(posedge clk) begin
            for (int p = 0; p < NR; p++) begin
                if (grant[p]) begin
                    for (int l = 0; l < LANES; l++) begin
                        logic [EB-1:0] e;
                        e = EB'(raddr[p*AW +: AW]) + EB'(l);
                        rd_win[(p*LANES + l)*EW +: EW] <= 32'(e) < DEPTH && l < port_lanes(RD_LANES, p) ? mem[e] : '0;
                    end
                end
            end
            for (int w = 0; w < NW; w++) begin
                if (grant[NR + w]) begin
                    for (int l = 0; l < LANES; l++) begin
                        logic [EB-1:0] e;
                        e = EB'(waddr[w*AW +: AW]) + EB'(l);
                        if (wmask[w*LANES + l] && 32'(e) < DEPTH && l < port_lanes(WR_LANES, w))
                            mem[e] <= wdata[(w*LANES + l)*EW +: EW];
                    end
                end
            end
        end
        assign win = rd_win;
    end else begin : g_rtl
        localparam int RRB = $clog2(RR);             // row bits within a region
        localparam int GB = NREG > 1 ? $clog2(NREG) : 1;

        // ---- physical port of each granted port in each of its regions
        logic [NREG-1:0] slot [NP];                  // physical port (0/1) of a granted port per region
        always_comb begin
            logic [NREG-1:0] used1, w0;              // regions with >= 1 access placed; of write port 0
            w0 = grant[NR] ? touch[NR] : '0;
            used1 = '0;
            for (int q = 0; q < NP; q++) begin
                slot[q] = '0;
                if (grant[q]) begin
                    if (NW > 2) slot[q] = touch[q] & used1;
                    else if (q < NR) slot[q] = touch[q] & (used1 | w0);
                    else if (q > NR) slot[q] = touch[q];
                    used1 = used1 | touch[q];
                end
            end
        end

        // what each (region, physical port) serves this cycle: the port's rows, whether each row lies in
        // this region, the window offset, and for a write the write port
        localparam int WB = NW > 1 ? $clog2(NW) : 1;
        (* keep *) logic [RB-1:0] s_row0 [NREG][2];
        (* keep *) logic [RB-1:0] s_row1 [NREG][2];
        (* keep *) logic s_in0 [NREG][2];
        (* keep *) logic s_in1 [NREG][2];
        (* keep *) logic [LB-1:0] s_off [NREG][2];
        (* keep *) logic s_v [NREG][2];
        (* keep *) logic s_w [NREG][2];
        logic [WB-1:0] s_wp [NREG][2];
        always_comb begin
            for (int r = 0; r < NREG; r++) begin
                for (int k = 0; k < 2; k++) begin
                    s_row0[r][k] = '0;
                    s_row1[r][k] = '0;
                    s_in0[r][k] = 1'b0;
                    s_in1[r][k] = 1'b0;
                    s_off[r][k] = '0;
                    s_v[r][k] = 1'b0;
                    s_w[r][k] = 1'b0;
                    s_wp[r][k] = '0;
                    for (int q = 0; q < NP; q++) begin       // at most one port per (region, port): OR
                        logic h;
                        h = grant[q] && touch[q][r] && 32'(slot[q][r]) == k;
                        s_row0[r][k] = s_row0[r][k] | (row0[q] & {RB{h}});
                        s_row1[r][k] = s_row1[r][k] | (row1[q] & {RB{h}});
                        s_in0[r][k] = s_in0[r][k] | (reg0[q][r] & h);
                        s_in1[r][k] = s_in1[r][k] | (reg1[q][r] & h);
                        s_off[r][k] = s_off[r][k] | (off[q] & {LB{h}});
                        s_v[r][k] = s_v[r][k] | h;
                        s_w[r][k] = s_w[r][k] | (h && q >= NR);
                        s_wp[r][k] = s_wp[r][k] | (WB'(q >= NR ? q - NR : 0) & {WB{h}});
                    end
                end
            end
        end

        // ---- rotate networks (LANES a power of two): radix-4 stages, stage k (k even) rotates by
        // 0 / 1 / 2 / 3 x 2**k lanes (bits k, k + 1 of the amount), as AND-OR terms (one LUT6 a bit)
        localparam int WL = EW + 1;                  // a write lane: {mask, data}
        // lane (l + n) mod LANES of the result = lane l of x (a write window into bank order)
        function automatic logic [LANES*WL-1:0] rot_up(input logic [LANES*WL-1:0] x, input logic [LB-1:0] n);
            logic [LANES*WL-1:0] y;
            logic [1:0] d;
            rot_up = x;
            for (int k = 0; (1 << k) < LANES; k += 2) begin
                d = 2'(32'(n) >> k);
                y = rot_up & {LANES*WL{d == 2'd0}};
                for (int j = 1; j < 4; j++) begin      // by j * 2**k lanes
                    y = y | (((rot_up << (((j << k) % LANES) * WL)) | (rot_up >> ((LANES - (j << k) % LANES) * WL)))
                             & {LANES*WL{32'(d) == j}});
                end
                rot_up = y;
            end
        endfunction
        // stage k of the read rotation: lane l of the result = lane (l + d 2**k) mod LANES of x, d = bits k, k + 1
        // of n (the stages k = 0, 2, 4 rotate bank order into a read window: lane l = lane (l + n) mod LANES)
        function automatic logic [LANES*EW-1:0] rot_down(input logic [LANES*EW-1:0] x, input logic [LB-1:0] n,
                                                         input int k);
            logic [1:0] d;
            d = 2'(32'(n) >> k);
            rot_down = x & {LANES*EW{d == 2'd0}};
            for (int j = 1; j < 4; j++) begin          // by j * 2**k lanes
                rot_down = rot_down | (((x >> (((j << k) % LANES) * EW)) | (x << ((LANES - (j << k) % LANES) * EW)))
                                       & {LANES*EW{32'(d) == j}});
            end
        endfunction

        // write windows in bank order: bank b takes window lane (b - waddr) mod LANES. A full port rotates
        // {mask, data}. A narrow port of n < LANES lanes selects each bank's mask from its n lanes (an n-way
        // AND-OR per bank) and its data from only P = n rounded up to a power of two lanes: a bank that is
        // written takes lane (b - waddr) mod LANES < n, which is (b - waddr) mod P, so the banks of one
        // residue b mod P share one P:1 select (a bank that is not written ignores its data).
        logic [NW*LANES*EW-1:0] w_bank;              // write port w, bank b at (w * LANES + b) * EW
        logic [NW*LANES-1:0] w_mask;
        always_comb begin
            for (int w = 0; w < NW; w++) begin
                logic [LANES*WL-1:0] x;
                for (int l = 0; l < LANES; l++) begin
                    x[l*WL +: WL] = l < port_lanes(WR_LANES, w) ? {wmask[w*LANES + l], wdata[(w*LANES + l)*EW +: EW]} : '0;
                end
                if (port_lanes(WR_LANES, w) < LANES) begin
                    logic [LANES*EW-1:0] xr;             // residue i < P: window lane (i - waddr) mod P
                    xr = '0;
                    for (int i = 0; i < pow2_lanes(WR_LANES, w); i++) begin
                        logic [LB-1:0] li;
                        li = (LB'(i) - off[NR + w]) & LB'(pow2_lanes(WR_LANES, w) - 1);
                        for (int l = 0; l < port_lanes(WR_LANES, w); l++)
                            xr[i*EW +: EW] = xr[i*EW +: EW] | (x[l*WL +: EW] & {EW{li == LB'(l)}});
                    end
                    for (int b = 0; b < LANES; b++) begin
                        logic m;
                        m = 1'b0;
                        for (int l = 0; l < port_lanes(WR_LANES, w); l++)
                            m = m | (x[l*WL + EW] & (off[NR + w] == LB'(b - l)));
                        w_bank[(w*LANES + b)*EW +: EW] = xr[(b % pow2_lanes(WR_LANES, w))*EW +: EW];
                        w_mask[w*LANES + b] = m;
                    end
                end else begin
                    x = rot_up(x, off[NR + w]);
                    for (int b = 0; b < LANES; b++) begin
                        w_bank[(w*LANES + b)*EW +: EW] = x[b*WL +: EW];
                        w_mask[w*LANES + b] = x[b*WL + EW];
                    end
                end
            end
        end

        // what each read port was granted in the previous clock cycle: window offset, and the region and
        // physical port of its row0 / row1
        logic [LB-1:0] off_q [NR];
        logic [GB-1:0] reg0_q [NR];
        logic [GB-1:0] reg1_q [NR];
        logic slot0_q [NR];
        logic slot1_q [NR];
        always_ff @(posedge clk) begin
            for (int p = 0; p < NR; p++) begin
                if (grant[p]) begin
                    off_q[p] <= off[p];
                    reg0_q[p] <= GB'(32'(row0[p]) / RR);
                    reg1_q[p] <= GB'(32'(row1[p]) / RR);
                    slot0_q[p] <= slot[p][32'(row0[p]) / RR < NREG ? 32'(row0[p]) / RR : 0];
                    slot1_q[p] <= slot[p][32'(row1[p]) / RR < NREG ? 32'(row1[p]) / RR : 0];
                end
            end
        end

        // one of a bank's 2 * NREG RAM outputs: d[j * EW +: EW], 0 for j >= 2 * NREG; a radix-4 mux tree
        // as AND-OR terms (one LUT6 per 4:1)
        localparam int JB = GB + 1;                  // bits of j = {region, physical port}
        localparam int NJ = 1 << (JB + JB % 2);      // 2 ** JB rounded up to a power of 4
        localparam int NJW = NJ * EW;
        function automatic logic [EW-1:0] pick(input logic [NREG*2*EW-1:0] d, input logic [JB-1:0] j);
            logic [NJW-1:0] v;
            logic [1:0] t;
            v = NJW'(d);
            for (int l = 0; (NJ >> (2 * l)) > 1; l++) begin         // level l: NJ / 4 ** (l + 1) outputs
                t = 2'(32'(j) >> (2 * l));
                for (int i = 0; i < (NJ >> (2 * l + 2)); i++) begin
                    v[i*EW +: EW] = (v[(4*i)*EW +: EW] & {EW{t == 2'd0}}) | (v[(4*i + 1)*EW +: EW] & {EW{t == 2'd1}})
                                  | (v[(4*i + 2)*EW +: EW] & {EW{t == 2'd2}})
                                  | (v[(4*i + 3)*EW +: EW] & {EW{t == 2'd3}});
                end
            end
            pick = v[EW-1:0];
        endfunction

        // ---- the RAMs: bank b, region r; and per bank the read data of each read port (bank order)
        (* keep *) logic [NR*LANES*EW-1:0] rd_bank;  // read port p, bank b at (p * LANES + b) * EW
        for (genvar b = 0; b < LANES; b++) begin : g_bank
            logic [NREG*2*EW-1:0] dout;              // region r, physical port k at (2 * r + k) * EW
            for (genvar r = 0; r < NREG; r++) begin : g_reg
                logic [1:0] en, wen;
                (* keep *) logic [1:0] hi;                // bank b uses physical port k's row1
                logic [2*RRB-1:0] addr;
                logic [2*EW-1:0] din;
                always_comb begin
                    for (int k = 0; k < 2; k++) begin
                        logic m;
                        /* verilator lint_off CMPCONST */
                        hi[k] = LB'(b) < s_off[r][k];
                        /* verilator lint_on CMPCONST */
                        // write data / mask of the port's write port (used only when written): write
                        // port k when NW <= 2
                        din[k*EW +: EW] = w_bank[((k < NW ? k : 0)*LANES + b)*EW +: EW];
                        m = w_mask[(k < NW ? k : 0)*LANES + b];
                        if (NW > 2) begin
                            for (int w = 0; w < NW; w++) begin
                                if (32'(s_wp[r][k]) == w) begin
                                    din[k*EW +: EW] = w_bank[(w*LANES + b)*EW +: EW];
                                    m = w_mask[w*LANES + b];
                                end
                            end
                        end
                        addr[k*RRB +: RRB] = RRB'(hi[k] ? s_row1[r][k] : s_row0[r][k]);
                        en[k] = 1'b0;
                        wen[k] = 1'b0;
                        if (s_v[r][k]) begin                  // an idle region port computes nothing more
                            wen[k] = s_w[r][k] && m;
                            en[k] = (hi[k] ? s_in1[r][k] : s_in0[r][k]) && (!s_w[r][k] || wen[k]);
                        end
                    end
                end
                engine_bram #(.W(EW), .N(RR)) u_ram (
                    .clk(clk), .en(en), .we(wen), .addr(addr), .din(din), .dout(dout[r*2*EW +: 2*EW])
                );
            end
            // read port p: bank b holds its row1 when b < off_q (region reg1_q, physical port slot1_q)
            logic [NR*EW-1:0] rd;
            (* keep *) logic [NR*JB-1:0] j_rd;        // read port p: the {region, physical port} bank b reads
            always_comb begin
                for (int p = 0; p < NR; p++) begin
                    logic hi;
                    /* verilator lint_off CMPCONST */
                    hi = LB'(b) < off_q[p];
                    /* verilator lint_on CMPCONST */
                    j_rd[p*JB +: JB] = {hi ? reg1_q[p] : reg0_q[p], hi ? slot1_q[p] : slot0_q[p]};
                    rd[p*EW +: EW] = pick(dout, j_rd[p*JB +: JB]);
                end
            end
            for (genvar p = 0; p < NR; p++) begin : g_rdb
                assign rd_bank[(p*LANES + b)*EW +: EW] = rd[p*EW +: EW];
            end
        end

        // window lane l comes from bank (l + off) mod LANES (used only the cycle after a grant). The radix-4
        // stages are kept nets: left to itself Yosys merges them into one wide mux per bit (~7.5 LUT and
        // 4 MUXF7 a bit instead of ~3 LUT; at the production size mem_acc 62.4k -> 49.3k LUT, mem_spm
        // 65.5k -> 56.7k)
        if (LB > 6) begin : g_bad_lanes
            $error("engine_mem: at most 64 lanes (three rotate stages)");
        end
        for (genvar p = 0; p < NR; p++) begin : g_win
            localparam int RL = port_lanes(RD_LANES, p);
            if (RL * 8 <= LANES) begin : g_narrow     // lane l < RL: bank (l + off) mod LANES
                logic [LANES*EW-1:0] sel;
                always_comb begin
                    sel = '0;
                    for (int l = 0; l < RL; l++) begin
                        logic [LB-1:0] ix;
                        ix = off_q[p] + LB'(l);
                        for (int i = 0; i < EW; i++) begin   // bit i of the banks: one LANES:1 mux (MUXF tree)
                            logic [LANES-1:0] col;
                            for (int b = 0; b < LANES; b++) col[b] = rd_bank[(p*LANES + b)*EW + i];
                            sel[l*EW + i] = col[ix];
                        end
                    end
                end
                assign win[p*LANES*EW +: LANES*EW] = sel;
            end else begin : g_full
                (* keep *) logic [LANES*EW-1:0] st1, st2, st3;
                assign st1 = rot_down(rd_bank[p*LANES*EW +: LANES*EW], off_q[p], 0);
                assign st2 = LB > 2 ? rot_down(st1, off_q[p], 2) : st1;
                assign st3 = LB > 4 ? rot_down(st2, off_q[p], 4) : st2;
                assign win[p*LANES*EW +: LANES*EW] = st3;
            end
        end
    end

    // ---- read data: the window the cycle after a port is served, else its shadow
    logic ce_q;
    always_ff @(posedge clk) ce_q <= rst || ce;
    for (genvar p = 0; p < NR; p++) begin : g_rd
        localparam int RW = port_lanes(RD_LANES, p) * EW;   // the port's lanes (the others read 0)
        logic [RW-1:0] phys, shadow, cur, now;
        always_comb begin
            phys = win[p*LANES*EW +: RW];
            now = ce_q ? (srv_q[p] ? phys : shadow) : cur;
        end
        always_ff @(posedge clk) begin
            if (srv_q[p]) shadow <= phys;
            cur <= now;
        end
        assign rdata[p*LANES*EW +: LANES*EW] = (LANES*EW)'(now);
    end

endmodule
