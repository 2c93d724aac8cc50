// gemm_tile: the Vitis RTL blackbox of hls/include/trilevel_units.h's gemm_tile(), around mac_array.
//
// The C function streams one element per beat (hls::stream ports = ap_fifo here: tvalid = empty_n,
// tready = read, and on outputs tvalid = write, tready = full_n): A row-major (m * kd values), B
// column by column (n * kd values, i.e. W in its stored [Dout, Din] layout), n biases; then it
// the addend E (m * n accumulator-aligned values, row-major: bias and/or residual); then it writes
// m * n int16 results row-major and one peak value (max |acc + E|). This adapter buffers A, B and E
// in row / column banks (the three input streams load concurrently), feeds mac_array one reduction
// step per cycle and E one row per drained row (rows >= m and columns >= n as zeros), and
// serializes the result rows.
// Scalars (cfg_*) hold for the whole call and are sampled when the call starts. One call at a time.
// Cycle counts: trilevel.rtl_cycles.gemm_tile_cycles.
`timescale 1ns / 1ps
module gemm_tile #(
    parameter int ROWS = 32,
    parameter int COLS = 32,
    parameter int KMAX = 1536
) (
    input  logic               clk,
    input  logic               rst,
    input  logic [15:0]        cfg_m,
    input  logic [15:0]        cfg_n,
    input  logic [15:0]        cfg_kd,
    input  logic signed [7:0]  cfg_shift,
    input  logic               cfg_mode,
    input  logic [31:0]        cfg_seed,
    input  logic [31:0]        cfg_index_base,
    input  logic [31:0]        cfg_index_stride,
    input  logic [15:0]        s_axis_a_tdata,
    input  logic               s_axis_a_tvalid,
    output logic               s_axis_a_tready,
    input  logic [15:0]        s_axis_b_tdata,
    input  logic               s_axis_b_tvalid,
    output logic               s_axis_b_tready,
    input  logic [47:0]        s_axis_e_tdata,
    input  logic               s_axis_e_tvalid,
    output logic               s_axis_e_tready,
    output logic [15:0]        m_axis_c_tdata,
    output logic               m_axis_c_tvalid,
    input  logic               m_axis_c_tready,
    output logic               m_axis_c_tlast,
    output logic [47:0]        m_axis_peak_tdata,
    output logic               m_axis_peak_tvalid,
    input  logic               m_axis_peak_tready
);
    localparam int ACC_W = 48;
    localparam int KW = $clog2(KMAX + 1);
    localparam int RW = $clog2(ROWS + 1);
    localparam int CW = $clog2(COLS + 1);
    localparam int RI = ROWS > 1 ? $clog2(ROWS) : 1;   // addend bank address

    typedef enum logic [1:0] {IDLE, LOAD, FEED, DRAIN} state_t;
    state_t state;
    logic [RW-1:0] m_reg;
    logic [CW-1:0] n_reg;
    logic [KW-1:0] kd_reg;

    // ---------------- load: three independent element streams ----------------
    logic [RW-1:0] a_row;
    logic [KW-1:0] a_p;
    logic [CW-1:0] b_col, e_col;
    logic [RW-1:0] e_row;
    logic [KW-1:0] b_p;
    logic a_done, b_done, e_done;

    assign a_done = a_row == m_reg;
    assign b_done = b_col == n_reg;
    assign e_done = e_row == m_reg;
    assign s_axis_a_tready = state == LOAD && !a_done;
    assign s_axis_b_tready = state == LOAD && !b_done;
    assign s_axis_e_tready = state == LOAD && !e_done;

    // ---------------- feed: one reduction step per beat into the array ----------------
    logic [KW-1:0] f_p;             // next step to read
    logic f_valid, f_adv, f_last;
    logic [ROWS*16-1:0] f_a;
    logic [COLS*16-1:0] f_b;
    logic mac_a_ready, mac_b_ready;
    assign f_adv = !f_valid || (mac_a_ready && mac_b_ready);

    for (genvar i = 0; i < ROWS; i++) begin : g_abank
        logic [15:0] mem [KMAX];
        always_ff @(posedge clk) begin
            if (s_axis_a_tvalid && s_axis_a_tready && a_row == RW'(i)) mem[a_p] <= s_axis_a_tdata;
            if (state == FEED && f_adv) f_a[i*16 +: 16] <= RW'(i) < m_reg ? mem[f_p] : 16'd0;
        end
    end
    for (genvar j = 0; j < COLS; j++) begin : g_bbank
        logic [15:0] mem [KMAX];
        always_ff @(posedge clk) begin
            if (s_axis_b_tvalid && s_axis_b_tready && b_col == CW'(j)) mem[b_p] <= s_axis_b_tdata;
            if (state == FEED && f_adv) f_b[j*16 +: 16] <= CW'(j) < n_reg ? mem[f_p] : 16'd0;
        end
    end

    // ---------------- addend rows for the array's drain (bank j holds column j) ----------------
    logic [RW:0] x_row;             // next addend row to read
    logic x_valid, x_adv, mac_e_ready;
    logic [COLS*ACC_W-1:0] x_data;
    assign x_adv = !x_valid || mac_e_ready;
    for (genvar j = 0; j < COLS; j++) begin : g_ebank
        logic [ACC_W-1:0] mem [ROWS];
        always_ff @(posedge clk) begin
            if (s_axis_e_tvalid && s_axis_e_tready && e_col == CW'(j)) mem[e_row[RI-1:0]] <= s_axis_e_tdata;
            if (state != LOAD && x_adv)
                x_data[j*ACC_W +: ACC_W] <= (x_row < (RW+1)'(m_reg) && CW'(j) < n_reg) ? mem[x_row[RI-1:0]] : '0;
        end
    end

    // ---------------- drain: serialize the first n lanes of the first m rows ----------------
    logic [COLS*16-1:0] mac_c;
    logic mac_c_valid, mac_c_ready, mac_c_last;
    logic [47:0] mac_peak;
    logic [COLS*16-1:0] row_buf;
    logic row_full, tile_end;
    logic [RW-1:0] d_row;
    logic [CW-1:0] d_col;
    logic [47:0] peak_hold;

    assign mac_c_ready = state == DRAIN && !row_full && !tile_end;

    always_ff @(posedge clk) begin
        if (rst) begin
            state <= IDLE;
            m_axis_c_tvalid <= 1'b0;
            m_axis_peak_tvalid <= 1'b0;
            f_valid <= 1'b0;
            x_valid <= 1'b0;
        end else begin
            // addend rows 0..ROWS-1, read ahead one beat (the memory read is registered)
            if (state != LOAD && state != IDLE && x_adv) begin
                x_valid <= x_row < (RW+1)'(ROWS);
                if (x_row < (RW+1)'(ROWS)) x_row <= x_row + 1'b1;
            end
            if (state == IDLE) x_valid <= 1'b0;
            if (m_axis_c_tvalid && m_axis_c_tready) m_axis_c_tvalid <= 1'b0;
            if (m_axis_peak_tvalid && m_axis_peak_tready) m_axis_peak_tvalid <= 1'b0;
            case (state)
                IDLE: if (s_axis_a_tvalid || s_axis_b_tvalid || s_axis_e_tvalid) begin
                    m_reg <= RW'(cfg_m);
                    n_reg <= CW'(cfg_n);
                    kd_reg <= KW'(cfg_kd);
                    {a_row, a_p, b_col, b_p, e_row, e_col} <= '0;
                    state <= LOAD;
                end
                LOAD: begin
                    if (s_axis_a_tvalid && s_axis_a_tready) begin
                        a_p <= a_p == kd_reg - 1 ? '0 : a_p + 1'b1;
                        if (a_p == kd_reg - 1) a_row <= a_row + 1'b1;
                    end
                    if (s_axis_b_tvalid && s_axis_b_tready) begin
                        b_p <= b_p == kd_reg - 1 ? '0 : b_p + 1'b1;
                        if (b_p == kd_reg - 1) b_col <= b_col + 1'b1;
                    end
                    if (s_axis_e_tvalid && s_axis_e_tready) begin
                        e_col <= e_col == n_reg - 1 ? '0 : e_col + 1'b1;
                        if (e_col == n_reg - 1) e_row <= e_row + 1'b1;
                    end
                    if (a_done && b_done && e_done) begin
                        f_p <= '0;
                        x_row <= '0;
                        state <= FEED;
                    end
                end
                FEED: if (f_adv) begin
                    f_valid <= f_p < kd_reg;
                    f_last <= f_p == kd_reg - 1;
                    f_p <= f_p + 1'b1;
                    if (f_p == kd_reg) begin
                        {d_row, d_col, row_full, tile_end} <= '0;
                        state <= DRAIN;
                    end
                end
                DRAIN: begin
                    if (mac_c_valid && mac_c_ready) begin
                        row_buf <= mac_c;
                        row_full <= RW'(d_row) < m_reg;   // rows >= m are dropped
                        if (RW'(d_row) >= m_reg) d_row <= d_row + 1'b1;
                        if (mac_c_last) begin
                            tile_end <= 1'b1;
                            peak_hold <= mac_peak;
                        end
                    end
                    if (row_full && (!m_axis_c_tvalid || m_axis_c_tready)) begin
                        m_axis_c_tvalid <= 1'b1;
                        m_axis_c_tdata <= row_buf[d_col*16 +: 16];
                        m_axis_c_tlast <= d_row == m_reg - 1 && d_col == n_reg - 1;
                        if (d_col == n_reg - 1) begin
                            d_col <= '0;
                            d_row <= d_row + 1'b1;
                            row_full <= 1'b0;
                        end else begin
                            d_col <= d_col + 1'b1;
                        end
                    end
                    if (tile_end && !row_full && (!m_axis_peak_tvalid || m_axis_peak_tready)) begin
                        m_axis_peak_tvalid <= 1'b1;
                        m_axis_peak_tdata <= peak_hold;
                        state <= IDLE;
                    end
                end
                default: state <= IDLE;
            endcase
        end
    end

    // Only the bits that can be in range are kept (1 <= m <= ROWS, 1 <= n <= COLS, 1 <= kd <= KMAX).
    wire unused_cfg = &{1'b0, cfg_m[15:RW], cfg_n[15:CW], cfg_kd[15:KW]};

    /* verilator lint_off PINCONNECTEMPTY */
    mac_array #(.ROWS(ROWS), .COLS(COLS), .ACC_W(ACC_W)) array (
        .clk(clk), .rst(rst),
        .cfg_k(16'(kd_reg)), .cfg_m(16'(m_reg)), .cfg_n(16'(n_reg)), .cfg_shift(cfg_shift),
        .cfg_mode(cfg_mode), .cfg_seed(cfg_seed), .cfg_index_base(cfg_index_base),
        .cfg_index_stride(cfg_index_stride),
        .s_axis_a_tdata(f_a), .s_axis_a_tvalid(f_valid), .s_axis_a_tready(mac_a_ready),
        .s_axis_a_tlast(f_last),
        .s_axis_b_tdata(f_b), .s_axis_b_tvalid(f_valid), .s_axis_b_tready(mac_b_ready),
        .s_axis_b_tlast(f_last),
        .s_axis_e_tdata(x_data), .s_axis_e_tvalid(x_valid), .s_axis_e_tready(mac_e_ready),
        .s_axis_e_tlast(x_row == (RW+1)'(ROWS)),
        .m_axis_c_tdata(mac_c), .m_axis_c_tvalid(mac_c_valid), .m_axis_c_tready(mac_c_ready),
        .m_axis_c_tlast(mac_c_last), .m_axis_c_tuser(mac_peak), .err()
    );
    /* verilator lint_on PINCONNECTEMPTY */
endmodule
