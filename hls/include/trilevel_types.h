// Scalar types of the trilevel HLS kernels (docs/numerics.md section 1).
//
// Kernels are written on these typedefs. Synthesis and the reference C-sim use Xilinx ap_types;
// -DTRILEVEL_FAST_CSIM maps them to native integers of the same width semantics (no value ever
// exceeds the narrower ap_int range, see docs/numerics.md 1.1) and, with trilevel_fastsim.h, lets the
// GEMMs run as exact SIMD dot products without stream round trips: ~100x faster than ap_int C-sim.
#ifndef TRILEVEL_TYPES_H
#define TRILEVEL_TYPES_H

#include <stdint.h>

#ifdef TRILEVEL_FAST_CSIM
typedef int16_t data_t;    // int16 tensor element (dynamic fixed point, one frac per tensor)
typedef int32_t prod_t;    // 16x16 product
typedef int64_t acc_t;     // 48-bit DSP48E2 accumulator
typedef int32_t score_t;   // top-k score (head-sum of Q0.15 probabilities)
typedef uint16_t idx_t;    // token / connection index
typedef int dim_t;         // runtime dimension (AXI-Lite register)
typedef int shift_t;       // requantize shift, frac values
typedef int flag_t;        // one-bit mode register
typedef uint32_t u32_t;    // seeds and SR indices
typedef int64_t grad_t;    // caller-owned weight-gradient accumulator in DDR (48-bit range used)
#else
#include <ap_int.h>
typedef ap_int<16> data_t;
typedef ap_int<32> prod_t;
typedef ap_int<48> acc_t;
typedef ap_int<32> score_t;
typedef ap_uint<16> idx_t;
typedef ap_uint<16> dim_t;
typedef ap_int<8> shift_t;
typedef ap_uint<1> flag_t;
typedef ap_uint<32> u32_t;
typedef ap_int<64> grad_t;
#endif

// Requantize modes (docs/numerics.md 1.2).
#define TL_RNE 0
#define TL_SR 1

#endif
