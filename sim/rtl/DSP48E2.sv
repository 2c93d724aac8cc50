// Test-only model of the Xilinx DSP48E2 for Verilator: the subset mac_pe's TL_DSP48E2 form uses (UG579),
// written from the documented multiplexer and ALU tables, not from Xilinx's simulation library. No
// pipeline registers (every *REG = 0): P = W + Z + X + Y + CARRYIN, with the 27 x 18 signed multiplier M
// entering as X = Y = M (OPMODE[3:0] = 4'b0101, the two partial products) and ALUMODE 0000 (add) or 0011
// (Z - (W + X + Y + CIN)). Any other setting stops the simulation instead of computing something else.
`timescale 1ns / 1ps
/* verilator lint_off UNUSEDSIGNAL */
/* verilator lint_off UNUSEDPARAM */
module DSP48E2 #(
    parameter int AREG = 1, parameter int ACASCREG = 1, parameter int BREG = 1, parameter int BCASCREG = 1,
    parameter int CREG = 1, parameter int DREG = 1, parameter int ADREG = 1, parameter int MREG = 1,
    parameter int PREG = 1, parameter int INMODEREG = 1, parameter int OPMODEREG = 1,
    parameter int ALUMODEREG = 1, parameter int CARRYINREG = 1, parameter int CARRYINSELREG = 1,
    parameter string USE_MULT = "MULTIPLY", parameter string AMULTSEL = "A", parameter string BMULTSEL = "B",
    parameter string USE_SIMD = "ONE48"
) (
    input  logic        CLK,
    input  logic [29:0] A, ACIN,
    input  logic [17:0] B, BCIN,
    input  logic [47:0] C, PCIN,
    input  logic [26:0] D,
    input  logic        CARRYIN, CARRYCASCIN, MULTSIGNIN,
    input  logic [8:0]  OPMODE,
    input  logic [3:0]  ALUMODE,
    input  logic [4:0]  INMODE,
    input  logic [2:0]  CARRYINSEL,
    input  logic        CEA1, CEA2, CEB1, CEB2, CEC, CED, CEAD, CEM, CEP, CEINMODE, CECTRL, CEALUMODE,
    input  logic        CECARRYIN,
    input  logic        RSTA, RSTB, RSTC, RSTD, RSTM, RSTP, RSTINMODE, RSTCTRL, RSTALUMODE, RSTALLCARRYIN,
    output logic [47:0] P
);
    initial begin
        if (AREG != 0 || BREG != 0 || CREG != 0 || MREG != 0 || PREG != 0 || INMODEREG != 0
                || OPMODEREG != 0 || ALUMODEREG != 0 || CARRYINREG != 0 || CARRYINSELREG != 0)
            $fatal(1, "DSP48E2 model: only the register-free configuration is modelled");
        if (USE_MULT != "MULTIPLY" || AMULTSEL != "A" || BMULTSEL != "B" || USE_SIMD != "ONE48")
            $fatal(1, "DSP48E2 model: only USE_MULT MULTIPLY, AMULTSEL A, BMULTSEL B, USE_SIMD ONE48");
    end

    wire logic signed [44:0] m = $signed(A[26:0]) * $signed(B);   // INMODE 0: A2 / B2 paths, no pre-adder
    wire logic [47:0] m48 = 48'($signed(m));
    // OPMODE: X = M and Y = M; Z (bits 6:4) 0 or C; W (bits 8:7) 0 or C
    wire logic [47:0] z = OPMODE[6:4] == 3'b011 ? C : '0;
    wire logic [47:0] w = OPMODE[8:7] == 2'b11 ? C : '0;
    wire logic modelled = OPMODE[3:0] == 4'b0101 && OPMODE[6:4] inside {3'b000, 3'b011}
                          && OPMODE[8:7] inside {2'b00, 2'b11} && INMODE == '0 && CARRYINSEL == '0
                          && ALUMODE inside {4'b0000, 4'b0011};
    assign P = ALUMODE == 4'b0011 ? z - (w + m48 + 48'(CARRYIN)) : z + w + m48 + 48'(CARRYIN);
    always_ff @(posedge CLK) begin
        if (!modelled) $fatal(1, "DSP48E2 model: OPMODE %b ALUMODE %b INMODE %b CARRYINSEL %b is not modelled",
                              OPMODE, ALUMODE, INMODE, CARRYINSEL);
    end
endmodule
/* verilator lint_on UNUSEDPARAM */
/* verilator lint_on UNUSEDSIGNAL */
