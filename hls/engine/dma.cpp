// The FETCH, LOAD and STORE modules' command bodies (docs/engine.md): AXI4 bursts of 16-byte beats over
// the 128-bit HP port, one row of a 2-D transfer per burst sequence (sequential beats, no address
// chasing inside a row), optional row gather/scatter by an IDX list and zero fill.
#include "tl_engine.h"

#ifdef TRILEVEL_FAST_CSIM
#include <string.h>
#endif

// ------------------------------------------------------------------------------------------- fetch
uint32_t tl_fetch_one(const tl_beat_t* ddr, uint64_t ddr_bytes, uint64_t cmd_addr, uint32_t pc, tl_cmd_t& cmd,
                      int* module) {
#pragma HLS INLINE
    const uint64_t addr = cmd_addr + (uint64_t)pc * (4 * TL_CMD_WORDS);
    *module = -1;
    if ((cmd_addr & 63) != 0 || addr + 4 * TL_CMD_WORDS > ddr_bytes) return tl_fail(TL_ERR_DDR_RANGE, pc);
fetch_beats:
    for (int b = 0; b < TL_CMD_WORDS / 4; b++) {
#pragma HLS PIPELINE II = 1
        const tl_beat_t beat = tl_ddr_rd(ddr, addr / 16 + b, ddr_bytes);
        for (int q = 0; q < 4; q++) {
#pragma HLS UNROLL
            cmd.w[4 * b + q] = tl_beat_word(beat, q);
        }
    }
    cmd.pc = pc;
    const int op = (int)(cmd.w[0] & ((1u << TL_C_OP_W) - 1));
    if (tl_module_of(op) < 0) return tl_fail(TL_ERR_BAD_OPCODE, pc);
    if ((cmd.w[0] >> TL_C_USED_BITS) != 0) return tl_fail(TL_ERR_RESERVED_BITS, pc);
    *module = tl_module_of(op);
    return 0;
}

// --------------------------------------------------------------------------------------- helpers
static inline int tl_elem_bytes(int mem) {
#pragma HLS INLINE
    return (mem == TL_MEM_ACC || mem == TL_MEM_STAT) ? 8 : 2;
}

static inline uint64_t tl_mem_elems(int mem) {
#pragma HLS INLINE
    return mem == TL_MEM_SPM ? TL_SPM_ELEMS : mem == TL_MEM_ACC ? TL_ACC_ELEMS : mem == TL_MEM_IDX ? TL_IDX_ELEMS
                                                                                                  : TL_STAT_SLOTS;
}

// DDR byte address of row r of a LOAD/STORE (gathered / scattered through IDX with `ta`).
static inline uint64_t tl_row_addr(const tl_dec_t& d, const uint16_t* idx, int r) {
#pragma HLS INLINE
    const uint64_t row = d.ta ? (uint64_t)idx[d.b_addr + r] : (uint64_t)r;
    return (uint64_t)d.index_base + row * (uint64_t)d.index_stride;
}

// The checks LOAD and STORE share; 0 or a tl_fail code. `zero`: no DDR access (LOAD zero fill).
static uint32_t tl_check_dma(const tl_dec_t& d, int mem, bool zero, uint64_t ddr_bytes, const uint16_t* idx) {
    if (d.m == 0 || d.n == 0) return tl_fail(TL_ERR_BAD_DIMS, d.pc);
    if (!tl_span_ok(d.a_addr, d.m, d.a_stride, d.n, tl_mem_elems(mem))) return tl_fail(TL_ERR_SPM_RANGE, d.pc);
    if (d.ta && !tl_span_ok(d.b_addr, 1, 0, d.m, TL_IDX_ELEMS)) return tl_fail(TL_ERR_SPM_RANGE, d.pc);
    if (zero) return 0;
    const uint64_t size = tl_elem_bytes(mem), bytes = (uint64_t)d.n * size;
dma_check_rows:
    for (int r = 0; r < d.m; r++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = TL_TRIP_ROWS
        const uint64_t a = tl_row_addr(d, idx, r);
        if (a % size != 0 || a + bytes > ddr_bytes) return tl_fail(TL_ERR_DDR_RANGE, d.pc);
    }
    return 0;
}

// ------------------------------------------------------------------------------------------- load
uint32_t tl_exec_load(const tl_dec_t& d, const tl_beat_t* ddr, uint64_t ddr_bytes, int16_t* spm, int64_t* acc,
                      uint16_t* idx) {
    const int mem = d.sub;
    if (mem != TL_MEM_SPM && mem != TL_MEM_ACC && mem != TL_MEM_IDX) return tl_fail(TL_ERR_RESERVED_BITS, d.pc);
    const bool zero = d.tb;
    const uint32_t chk = tl_check_dma(d, mem, zero, ddr_bytes, idx);
    if (chk) return chk;
    const int size = tl_elem_bytes(mem);
    const uint64_t bytes = (uint64_t)d.n * size;
load_rows:
    for (int r = 0; r < d.m; r++) {
#pragma HLS LOOP_TRIPCOUNT max = TL_TRIP_ROWS
        const uint64_t base = d.a_addr + (uint64_t)r * d.a_stride;
        if (zero) {
        load_zero:
            for (int c = 0; c < d.n; c++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = TL_TRIP_COLS
                if (mem == TL_MEM_SPM) spm[base + c] = 0;
                else if (mem == TL_MEM_ACC) acc[base + c] = 0;
                else idx[base + c] = 0;
            }
            continue;
        }
        const uint64_t a = tl_row_addr(d, idx, r), first = a / 16, last = (a + bytes - 1) / 16;
#ifdef TRILEVEL_FAST_CSIM
        // Fast C-sim: the row's bytes are the elements' little-endian bytes; one copy per row.
        const uint8_t* src = (const uint8_t*)ddr + a;
        if (mem == TL_MEM_SPM) {
            memcpy(spm + base, src, bytes);
        } else if (mem == TL_MEM_IDX) {
            memcpy(idx + base, src, bytes);
        } else {
            memcpy(acc + base, src, bytes);
            for (int c = 0; c < d.n; c++)
                if (!tl_acc_ok(acc[base + c])) return tl_fail(TL_ERR_ACC_RANGE, d.pc);
        }
        (void)first;
        (void)last;
        continue;
#endif
    load_beats:  // one burst sequence per row: sequential beats, II = 1
        for (uint64_t b = first; b <= last; b++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = 385
            const tl_beat_t beat = tl_ddr_rd(ddr, b, ddr_bytes);
            if (size == 8) {
                for (int l = 0; l < 2; l++) {
#pragma HLS UNROLL
                    const uint64_t off = b * 16 + 8 * l;
                    if (off < a || off >= a + bytes) continue;
                    const int64_t v =
                        (int64_t)((uint64_t)tl_beat_word(beat, 2 * l) | ((uint64_t)tl_beat_word(beat, 2 * l + 1) << 32));
                    if (!tl_acc_ok(v)) return tl_fail(TL_ERR_ACC_RANGE, d.pc);
                    acc[base + (off - a) / 8] = v;
                }
            } else {
                for (int l = 0; l < 8; l++) {
#pragma HLS UNROLL
                    const uint64_t off = b * 16 + 2 * l;
                    if (off < a || off >= a + bytes) continue;
                    const uint16_t v = (uint16_t)(tl_beat_word(beat, l >> 1) >> (16 * (l & 1)));
                    if (mem == TL_MEM_SPM) spm[base + (off - a) / 2] = (int16_t)v;
                    else idx[base + (off - a) / 2] = v;
                }
            }
        }
    }
    return 0;
}

// ------------------------------------------------------------------------------------------ store
uint32_t tl_exec_store(const tl_dec_t& d, tl_beat_t* ddr, uint64_t ddr_bytes, const int16_t* spm,
                       const int64_t* acc, const uint16_t* idx, const int64_t* stat) {
    const int mem = d.sub;
    if (mem > TL_MEM_STAT) return tl_fail(TL_ERR_RESERVED_BITS, d.pc);
    const uint32_t chk = tl_check_dma(d, mem, false, ddr_bytes, idx);
    if (chk) return chk;
    const int size = tl_elem_bytes(mem);
    const uint64_t bytes = (uint64_t)d.n * size;
store_rows:
    for (int r = 0; r < d.m; r++) {
#pragma HLS LOOP_TRIPCOUNT max = TL_TRIP_ROWS
        const uint64_t base = d.a_addr + (uint64_t)r * d.a_stride;
        const uint64_t a = tl_row_addr(d, idx, r), first = a / 16, last = (a + bytes - 1) / 16;
#ifdef TRILEVEL_FAST_CSIM
        uint8_t* dst = (uint8_t*)ddr + a;  // fast C-sim: one copy per row (see LOAD)
        memcpy(dst, mem == TL_MEM_SPM ? (const void*)(spm + base) : mem == TL_MEM_IDX ? (const void*)(idx + base)
                    : mem == TL_MEM_ACC ? (const void*)(acc + base) : (const void*)(stat + base), bytes);
        (void)first;
        (void)last;
        continue;
#endif
    store_beats:
        for (uint64_t b = first; b <= last; b++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = 385
            uint32_t word[4] = {0, 0, 0, 0};
            uint32_t mask = 0;
            if (size == 8) {
                for (int l = 0; l < 2; l++) {
#pragma HLS UNROLL
                    const uint64_t off = b * 16 + 8 * l;
                    if (off < a || off >= a + bytes) continue;
                    const uint64_t e = base + (off - a) / 8;
                    const uint64_t v = (uint64_t)(mem == TL_MEM_ACC ? acc[e] : stat[e]);
                    word[2 * l] = (uint32_t)v;
                    word[2 * l + 1] = (uint32_t)(v >> 32);
                    mask |= 0xFFu << (8 * l);
                }
            } else {
                for (int l = 0; l < 8; l++) {
#pragma HLS UNROLL
                    const uint64_t off = b * 16 + 2 * l;
                    if (off < a || off >= a + bytes) continue;
                    const uint64_t e = base + (off - a) / 2;
                    const uint32_t v = mem == TL_MEM_SPM ? (uint16_t)spm[e] : idx[e];
                    word[l >> 1] |= v << (16 * (l & 1));
                    mask |= 3u << (2 * l);
                }
            }
            tl_ddr_wr(ddr, b, tl_make_beat(word), mask, ddr_bytes);
        }
    }
    return 0;
}
