// One processing element of mac_array: a signed 16x16 multiply-accumulate (one DSP48E2).
// Operand a and the tile flags move right, operand b moves down, one PE per cycle of `en`.
// `last` copies the finished sum into `res`, where it stays until the next tile's `last` (the array
// drains it meanwhile), and clears the accumulator, so every tile starts from 0: callers end every
// tile with `last` (mac_array and engine_gemm do; a reset clears it too). The clear is the
// flip-flops' synchronous reset, so the sum acc + a b needs no operand mux.
// With `TL_DSP48E2` defined (hls/rtl/synth_report.py defines it for its xcup runs) that sum is an
// instantiated DSP48E2, multiplier and post-adder (P = C + A B, no pipeline registers), as Vivado
// infers it; Yosys 0.23 maps no DSP48E2 post-adder and would build it from 48 LUTs and carry cells.
// sim/rtl/DSP48E2.sv models the primitive for Verilator (sim/test_mac_array.py runs both forms).
`timescale 1ns / 1ps
module mac_pe #(
    parameter int ACC_W = 48
) (
    input  logic                    clk,
    input  logic                    rst,
    input  logic                    en,
    input  logic signed [15:0]      a_in,
    input  logic signed [15:0]      b_in,
    input  logic                    v_in,
    input  logic                    last_in,
    output logic signed [15:0]      a_out,
    output logic signed [15:0]      b_out,
    output logic                    v_out,
    output logic                    last_out,
    output logic signed [ACC_W-1:0] res
);
    logic signed [ACC_W-1:0] acc;

    always_ff @(posedge clk) begin
        if (rst) begin
            v_out <= 1'b0;
            last_out <= 1'b0;
        end else if (en) begin
            v_out <= v_in;
            last_out <= last_in;
        end
    end

    always_ff @(posedge clk) begin
        if (en) begin
            a_out <= a_in;
            b_out <= b_in;
        end
    end

    logic signed [ACC_W-1:0] sum;  // acc + a_in b_in
`ifdef TL_DSP48E2
    if (ACC_W > 48) begin : g_acc_w
        $error("mac_pe: the DSP48E2 form needs ACC_W <= 48");
    end
    logic [47:0] p;
    // OPMODE W = 0, Z = C, Y = X = M (the multiplier's two partial products); ALUMODE 0: Z + W + X + Y
    DSP48E2 #(.AREG(0), .ACASCREG(0), .BREG(0), .BCASCREG(0), .CREG(0), .DREG(0), .ADREG(0), .MREG(0),
              .PREG(0), .INMODEREG(0), .OPMODEREG(0), .ALUMODEREG(0), .CARRYINREG(0), .CARRYINSELREG(0),
              .USE_MULT("MULTIPLY"), .AMULTSEL("A"), .BMULTSEL("B"), .USE_SIMD("ONE48")) u_dsp (
        .CLK(clk), .A(30'(a_in)), .B(18'(b_in)), .C(48'(acc)), .D(27'd0), .ACIN(30'd0), .BCIN(18'd0),
        .PCIN(48'd0), .CARRYIN(1'b0), .CARRYCASCIN(1'b0), .MULTSIGNIN(1'b0),
        .OPMODE(9'b00_011_01_01), .ALUMODE(4'b0000), .INMODE(5'b00000), .CARRYINSEL(3'b000),
        .CEA1(1'b0), .CEA2(1'b0), .CEB1(1'b0), .CEB2(1'b0), .CEC(1'b0), .CED(1'b0), .CEAD(1'b0), .CEM(1'b0),
        .CEP(1'b0), .CEINMODE(1'b0), .CECTRL(1'b0), .CEALUMODE(1'b0), .CECARRYIN(1'b0),
        .RSTA(1'b0), .RSTB(1'b0), .RSTC(1'b0), .RSTD(1'b0), .RSTM(1'b0), .RSTP(1'b0), .RSTINMODE(1'b0),
        .RSTCTRL(1'b0), .RSTALUMODE(1'b0), .RSTALLCARRYIN(1'b0), .P(p)
    );
    assign sum = ACC_W'(p);
`else
    assign sum = acc + ACC_W'(a_in * b_in);
`endif

    // the accumulator updates only in enabled valid cycles: an idle PE holds its state
    always_ff @(posedge clk) begin
        if (rst || (en && v_in && last_in)) acc <= '0;
        else if (en && v_in) acc <= sum;
    end
    always_ff @(posedge clk) if (en && v_in && last_in) res <= sum;
endmodule
