// The C API of the C-sim library build/csim/libtrilevel_csim.so (never synthesized): the engine of
// engine.cpp over a simulated DDR given as a byte array. docs/hls.md documents the calls.
#include <stdio.h>

#include "tl_engine.h"

int tl_engine_queue_depth_hook(const char* name, int depth);  // engine.cpp

extern "C" {

// Fills out[0..n) with the build's sizes (array_rows, array_cols, spm_elems, acc_elems, idx_elems,
// stat_slots, vec_lanes, softmax_units, max_row, axi_bytes, queue_depth, isa_version, max_dim); returns the
// count.
int tl_engine_config(uint32_t* out, int n) {
    const uint32_t v[] = {TL_ARRAY_ROWS, TL_ARRAY_COLS,    TL_SPM_ELEMS, TL_ACC_ELEMS, TL_IDX_ELEMS,   TL_STAT_SLOTS,
                          TL_VEC_LANES,  TL_SOFTMAX_UNITS, TL_MAX_ROW,   TL_AXI_BYTES, TL_QUEUE_DEPTH, TL_ISA_VERSION,
                          TL_MAX_DIM};
    int i = 0;
    for (; i < n && i < (int)(sizeof v / sizeof v[0]); i++) out[i] = v[i];
    return i;
}

// Sets the depth of the named queue (load_q, compute_q, store_q, l2c, c2l, c2s, s2c); 0 restores the
// declared TL_QUEUE_DEPTH. Returns the depth now in force, or -1 for an unknown name / bad depth.
int tl_engine_set_queue_depth(const char* name, int depth) {
    if (!name || depth < 0 || depth > TL_QUEUE_CAPACITY) return -1;
    return tl_engine_queue_depth_hook(name, depth == 0 ? TL_QUEUE_DEPTH : depth);
}

// Runs the program of cmd_count commands at byte offset cmd_addr of ddr[0, ddr_bytes). Returns the CTRL
// bits after the run (ap_done | ap_idle = 6); *error = ERROR (Err), *err_pc, *retired, and
// counters[isa.COUNTERS order] (TL_N_COUNTERS values, RETIRED last).
uint32_t tl_engine_run(uint8_t* ddr, uint64_t ddr_bytes, uint64_t cmd_addr, uint32_t cmd_count, uint32_t* error,
                       uint32_t* err_pc, uint32_t* retired, uint64_t* counters) {
    uint32_t code = 0;
    *err_pc = 0;
    try {
        code = tl_engine_core((tl_beat_t*)ddr, ddr_bytes, cmd_addr, cmd_count, err_pc, counters);
    } catch (const tl_queue_error& e) {  // an engine bug, reported as a deadlock rather than a hang
        fprintf(stderr, "trilevel engine: %s (error DEP_UNDERFLOW)\n", e.text);
        code = TL_ERR_DEP_UNDERFLOW;
    }
    *error = code;
    *retired = (uint32_t)counters[TL_CNT_RETIRED];
    return 2u | 4u;  // CTRL: ap_done | ap_idle
}

}  // extern "C"
