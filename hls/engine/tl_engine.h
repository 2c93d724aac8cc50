// The trilevel engine (docs/engine.md): fetch, load, compute and store modules joined by command and
// dependency-token queues, VTA style. Every constant of the command set and every build size comes
// from tl_isa.h, generated from trilevel.accel.isa (hls/build_csim.py, hls/run_hls.sh).
//
// The sequencer (engine.cpp) runs a module's next command once the tokens it pops are there and the
// tokens it pushes fit: pop, check and execute the command body (tl_exec_load / tl_exec_compute /
// tl_exec_store, which return 0 or tl_fail(Err, command index): the ERROR / ERR_PC registers), push.
#ifndef TL_ENGINE_H
#define TL_ENGINE_H

#include <stdint.h>

#include "tl_fixed.h"
#include "tl_isa.h"
#include "tl_queue.h"

#ifndef TRILEVEL_FAST_CSIM
#include <ap_int.h>
typedef ap_int<48> tl_mac_t;  // a PE's accumulator: one DSP48E2
#else
typedef int64_t tl_mac_t;
#endif

// Static bounds of the runtime loops (LOOP_TRIPCOUNT maxima): DeiT-S shapes.
#define TL_TRIP_ROWS 1576     // rows of one command (8 images x 197 tokens)
#define TL_TRIP_K 1536        // GEMM reduction (MLP hidden of DeiT-S)
#define TL_TRIP_COLS 1536     // columns of one command
#define TL_SPM_BANKS (TL_ARRAY_ROWS > TL_ARRAY_COLS ? TL_ARRAY_ROWS : TL_ARRAY_COLS)
#define TL_TILE_K_MAX 2048    // GEMM operand tile buffers (one BRAM36 per bank): longer reductions are split
#define TL_DDR_LATENCY 120    // modelled DDR read latency (cycles at 150 MHz), docs/engine.md
#define TL_VEC_PIPE 8         // vector/SFU pipeline depth (cycles), docs/engine.md

// One command as fetched (16 words) plus its index in the program (for ERR_PC).
struct tl_cmd_t {
    uint32_t w[TL_CMD_WORDS];
    uint32_t pc;
};
// A dependency token. It carries the modelled cycle at which it was pushed (the cycle model of
// docs/engine.md); the RTL engine's tokens are bare handshakes.
typedef uint64_t tl_token_t;
// One AXI4 beat of the 128-bit HP port (TL_AXI_BYTES = 16), four little-endian 32-bit words: the
// top's `ap_uint<128>* gmem` in the Vitis build (TL_VITIS), a plain struct in the C-sim library.
#if defined(TL_VITIS) || defined(__SYNTHESIS__)
#include <ap_int.h>
typedef ap_uint<128> tl_beat_t;
static inline uint32_t tl_beat_word(const tl_beat_t& b, int q) {
#pragma HLS INLINE
    return (uint32_t)b.range(32 * q + 31, 32 * q);
}
static inline tl_beat_t tl_make_beat(const uint32_t* w) {
#pragma HLS INLINE
    tl_beat_t b;
    for (int q = 0; q < 4; q++) {
#pragma HLS UNROLL
        b.range(32 * q + 31, 32 * q) = w[q];
    }
    return b;
}
#else
struct tl_beat_t {
    uint32_t w[4];
};
static inline uint32_t tl_beat_word(const tl_beat_t& b, int q) { return b.w[q]; }
static inline tl_beat_t tl_make_beat(const uint32_t* w) {
    tl_beat_t b;
    for (int q = 0; q < 4; q++) b.w[q] = w[q];
    return b;
}
#endif

// The decoded fields of a command (names as in trilevel.accel.isa).
struct tl_dec_t {
    int op, pop_prev, pop_next, push_prev, push_next, sub, sr, acc, ta, tb, bias, res, mask, stat, slot;
    uint32_t reserved;
    int m, n, k, shift, shift2, shift3, shift4;
    uint32_t seed, index_base, index_stride;
    uint32_t a_addr, b_addr, c_addr, d_addr, e_addr, f_addr;
    int a_stride, b_stride, c_stride, d_stride, e_stride;
    int32_t imm;
    uint32_t pc;
    int64_t dot_limit;  // GEMM: |dot| must stay below this (|dot * imm| < 2**62); set by the GEMM unit
};

static inline uint32_t tl_bits(const tl_cmd_t& c, int word, int lsb, int width) {
#pragma HLS INLINE
    const uint32_t v = c.w[word] >> lsb;
    return width >= 32 ? v : (v & ((1u << width) - 1u));
}

static inline int32_t tl_sbits(const tl_cmd_t& c, int word, int lsb, int width) {
#pragma HLS INLINE
    const uint32_t v = tl_bits(c, word, lsb, width);
    return width >= 32 ? (int32_t)v : (int32_t)(v ^ (1u << (width - 1))) - (int32_t)(1u << (width - 1));
}

#define TL_CTL(c, N) (int)tl_bits(c, 0, TL_C_##N##_LSB, TL_C_##N##_W)
#define TL_UF(c, N) tl_bits(c, TL_F_##N##_WORD, TL_F_##N##_LSB, TL_F_##N##_W)
#define TL_SF(c, N) tl_sbits(c, TL_F_##N##_WORD, TL_F_##N##_LSB, TL_F_##N##_W)

static inline tl_dec_t tl_decode(const tl_cmd_t& c) {
#pragma HLS INLINE
    tl_dec_t d;
    d.op = TL_CTL(c, OP);
    d.pop_prev = TL_CTL(c, POP_PREV);
    d.pop_next = TL_CTL(c, POP_NEXT);
    d.push_prev = TL_CTL(c, PUSH_PREV);
    d.push_next = TL_CTL(c, PUSH_NEXT);
    d.sub = TL_CTL(c, SUB);
    d.sr = TL_CTL(c, SR);
    d.acc = TL_CTL(c, ACC);
    d.ta = TL_CTL(c, TA);
    d.tb = TL_CTL(c, TB);
    d.bias = TL_CTL(c, BIAS);
    d.res = TL_CTL(c, RES);
    d.mask = TL_CTL(c, MASK);
    d.stat = TL_CTL(c, STAT);
    d.slot = TL_CTL(c, SLOT);
    d.reserved = c.w[0] >> TL_C_USED_BITS;
    d.m = (int)TL_UF(c, M);
    d.n = (int)TL_UF(c, N);
    d.k = (int)TL_UF(c, K);
    d.shift = TL_SF(c, SHIFT);
    d.shift2 = TL_SF(c, SHIFT2);
    d.shift3 = TL_SF(c, SHIFT3);
    d.shift4 = TL_SF(c, SHIFT4);
    d.seed = TL_UF(c, SEED);
    d.index_base = TL_UF(c, INDEX_BASE);
    d.index_stride = TL_UF(c, INDEX_STRIDE);
    d.a_addr = TL_UF(c, A_ADDR);
    d.b_addr = TL_UF(c, B_ADDR);
    d.c_addr = TL_UF(c, C_ADDR);
    d.d_addr = TL_UF(c, D_ADDR);
    d.e_addr = TL_UF(c, E_ADDR);
    d.f_addr = TL_UF(c, F_ADDR);
    d.a_stride = (int)TL_UF(c, A_STRIDE);
    d.b_stride = (int)TL_UF(c, B_STRIDE);
    d.c_stride = (int)TL_UF(c, C_STRIDE);
    d.d_stride = (int)TL_UF(c, D_STRIDE);
    d.e_stride = (int)TL_UF(c, E_STRIDE);
    d.imm = TL_SF(c, IMM);
    d.pc = c.pc;
    d.dot_limit = INT64_MAX;
    return d;
}

// The module that executes an opcode (isa.MODULE_OF): 0 load, 1 compute, 2 store, -1 bad opcode.
static inline int tl_module_of(int op) {
#pragma HLS INLINE
    return op == TL_OP_LOAD ? 0 : op == TL_OP_STORE ? 2 : op <= TL_OP_TOPK ? 1 : -1;
}

// True iff the `rows` x `cols` strided region starting at addr lies below `limit` (rows, cols >= 1).
static inline bool tl_span_ok(uint64_t addr, uint64_t rows, uint64_t stride, uint64_t cols, uint64_t limit) {
#pragma HLS INLINE
    return addr + (rows - 1) * stride + cols <= limit;
}

// DDR beat access of the 128-bit port. Synthesis: plain m_axi reads/writes (a partial beat is read,
// merged and written back; the RTL engine uses WSTRB instead). C-sim: byte copies that never touch
// bytes at or beyond ddr_bytes (the simulated DDR need not be a whole number of beats).
#if defined(TL_VITIS) || defined(__SYNTHESIS__)
static inline tl_beat_t tl_ddr_rd(const tl_beat_t* ddr, uint64_t beat, uint64_t) {
#pragma HLS INLINE
    return ddr[beat];
}
static inline void tl_ddr_wr(tl_beat_t* ddr, uint64_t beat, const tl_beat_t& v, uint32_t mask, uint64_t) {
#pragma HLS INLINE
    tl_beat_t out = v;
    if (mask != 0xFFFFu) {  // a partial beat: read, merge, write back
        const tl_beat_t old = ddr[beat];
        for (int b = 0; b < 16; b++) {
#pragma HLS UNROLL
            if (!((mask >> b) & 1)) out.range(8 * b + 7, 8 * b) = old.range(8 * b + 7, 8 * b);
        }
    }
    ddr[beat] = out;
}
#else
#include <string.h>
static inline tl_beat_t tl_ddr_rd(const tl_beat_t* ddr, uint64_t beat, uint64_t ddr_bytes) {
    tl_beat_t v;
    const uint8_t* src = (const uint8_t*)ddr + beat * 16;
    if ((beat + 1) * 16 <= ddr_bytes) {
        memcpy(&v, src, 16);
    } else {
        memset(&v, 0, sizeof v);
        if (beat * 16 < ddr_bytes) memcpy(&v, src, (size_t)(ddr_bytes - beat * 16));
    }
    return v;
}
static inline void tl_ddr_wr(tl_beat_t* ddr, uint64_t beat, const tl_beat_t& v, uint32_t mask, uint64_t ddr_bytes) {
    uint8_t* dst = (uint8_t*)ddr + beat * 16;
    const uint8_t* src = (const uint8_t*)&v;
    if (mask == 0xFFFFu && (beat + 1) * 16 <= ddr_bytes) {
        memcpy(dst, src, 16);
        return;
    }
    for (int b = 0; b < 16; b++)
        if (((mask >> b) & 1) && beat * 16 + b < ddr_bytes) dst[b] = src[b];
}
#endif

static inline uint32_t tl_fail(int err, uint32_t pc) {
#pragma HLS INLINE
    return ((uint32_t)err << 24) | (pc & 0xFFFFFFu);
}

// ------------------------------------------------------------------------------------- the engine
// The Vitis HLS top (engine.cpp; its s_axilite map is trilevel.accel.isa.REGISTERS): runs the program
// of cmd_count commands at byte offset cmd_addr of gmem; returns the Err code (ap_return = ERROR).
// Only in the Vitis build (TL_VITIS): the C-sim library calls tl_engine_core.
#if defined(TL_VITIS) || defined(__SYNTHESIS__)
uint32_t trilevel_engine(ap_uint<128>* gmem, uint32_t cmd_addr, uint32_t cmd_count, uint32_t* err_pc,
                         uint64_t counters[12]);
#endif
// The same engine over a DDR window of ddr_bytes (the C-sim's simulated DDR; the top passes 2**32).
uint32_t tl_engine_core(tl_beat_t* gmem, uint64_t ddr_bytes, uint64_t cmd_addr, uint32_t cmd_count,
                        uint32_t* err_pc, uint64_t counters[TL_N_COUNTERS]);
// The fetch unit's step: the command at index pc, checked; sets *module (0 load, 1 compute, 2 store).
uint32_t tl_fetch_one(const tl_beat_t* ddr, uint64_t ddr_bytes, uint64_t cmd_addr, uint32_t pc, tl_cmd_t& cmd,
                      int* module);

// The command bodies (what a module does between its token pops and pushes), shared with the C-sim
// scheduler's checks. Each returns 0 or a tl_fail() code.
uint32_t tl_exec_load(const tl_dec_t& d, const tl_beat_t* ddr, uint64_t ddr_bytes, int16_t* spm, int64_t* acc,
                      uint16_t* idx);
uint32_t tl_exec_store(const tl_dec_t& d, tl_beat_t* ddr, uint64_t ddr_bytes, const int16_t* spm,
                       const int64_t* acc, const uint16_t* idx, const int64_t* stat);
uint32_t tl_exec_compute(const tl_dec_t& d, int16_t* spm, int64_t* acc, uint16_t* idx, int64_t* stat);

#endif
