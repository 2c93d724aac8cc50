// The engine top (docs/engine.md, docs/hls.md): fetch, load, compute and store modules joined by three
// command queues and four dependency-token queues of declared depth TL_QUEUE_DEPTH, VTA style, over the
// on-chip SPM / ACC / IDX / STAT memories.
//
// The control loop is the sequencer. Each module keeps its next command in a head register; a module
// runs its head once the tokens it pops are there and the tokens it pushes fit, exactly as VTA's
// vta() peeks at its queues. When nothing can progress and work remains, the run ends with
// DEP_UNDERFLOW (C-sim: a stderr line naming every blocked queue): a wrong program or a too
// shallow queue never hangs. In this HLS top the modules take turns (one command at a time); the
// counters report the cycle model of docs/engine.md ("Cycle model") for the concurrent engine, in
// which LOAD, COMPUTE and STORE overlap as their tokens allow: every token carries its modelled push
// cycle. DDR bytes, MACs and RETIRED are exact.
#include "tl_engine.h"

#ifndef __SYNTHESIS__
#include <stdio.h>
#include <string.h>
#endif

enum { TL_M_LOAD = 0, TL_M_COMPUTE = 1, TL_M_STORE = 2 };

// ------------------------------------------------------------------------------- on-chip state
static int16_t tl_spm[TL_SPM_ELEMS];
static int64_t tl_accm[TL_ACC_ELEMS];
static uint16_t tl_idxm[TL_IDX_ELEMS];
static int64_t tl_stat[TL_STAT_SLOTS];

static tl_queue<tl_cmd_t> tl_load_q("load_q"), tl_compute_q("compute_q"), tl_store_q("store_q");
static tl_queue<tl_token_t> tl_l2c("l2c"), tl_c2l("c2l"), tl_c2s("c2s"), tl_s2c("s2c");

// ---------------------------------------------------------------------------------- cycle model
static inline uint64_t tl_cdiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }
static inline uint64_t tl_umax(uint64_t a, uint64_t b) { return a > b ? a : b; }

// Cycles a LOAD / STORE occupies its DMA module: DDR latency once, then one beat per cycle.
static uint64_t tl_dma_cycles(const tl_dec_t& d, bool load) {
    const uint64_t size = (d.sub == TL_MEM_ACC || d.sub == TL_MEM_STAT) ? 8 : 2, bytes = (uint64_t)d.n * size;
    if (load && d.tb) return (uint64_t)d.m * tl_cdiv(bytes, TL_AXI_BYTES);  // zero fill: on-chip writes only
    uint64_t beats = 0;
dma_model_rows:
    for (int r = 0; r < d.m; r++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = TL_TRIP_ROWS
        const uint64_t row = d.ta ? (uint64_t)tl_idxm[(d.b_addr + r) % TL_IDX_ELEMS] : (uint64_t)r;
        const uint64_t a = (uint64_t)d.index_base + row * d.index_stride;
        beats += (a + bytes - 1) / TL_AXI_BYTES - a / TL_AXI_BYTES + 1;
    }
    return TL_DDR_LATENCY + beats;
}

// Cycles one command occupies its unit (docs/engine.md "Cycle model"); *unit = the busy counter it
// adds to (-1: none), *fed = GEMM_BUSY cycles (one operand vector pair into the array per cycle).
static uint64_t tl_cmd_cycles(const tl_dec_t& d, int* unit, uint64_t* fed) {
    const uint64_t m = d.m, n = d.n, k = d.k;
    *unit = -1;
    *fed = 0;
    if (d.op == TL_OP_LOAD || d.op == TL_OP_STORE) {
        *unit = d.op == TL_OP_LOAD ? TL_CNT_LOAD_BUSY : TL_CNT_STORE_BUSY;
        return tl_dma_cycles(d, d.op == TL_OP_LOAD);
    }
    if (d.op == TL_OP_GEMM) {  // trilevel.rtl_cycles.gemm_cycles: tiles streamed through mac_array
        const uint64_t tiles = tl_cdiv(m, TL_ARRAY_ROWS) * tl_cdiv(n, TL_ARRAY_COLS);
        *unit = TL_CNT_GEMM_BUSY;
        *fed = tiles * k;
        return (tiles - 1) * tl_umax(k, tl_umax(TL_ARRAY_ROWS, TL_ARRAY_COLS)) + k + TL_ARRAY_ROWS + TL_ARRAY_COLS -
               1 + 5;
    }
    if (d.op == TL_OP_SOFTMAX) {  // rtl_cycles.softmax_stream_cycles, rows dealt to the units in turn
        const uint64_t q = tl_cdiv(m, TL_SOFTMAX_UNITS);
        *unit = TL_CNT_SOFTMAX_BUSY;
        return d.sub == TL_SOFTMAX_FWD ? (q - 1) * (2 * n + 3) + 3 * n + 2 + 7 : (q - 1) * (n + 1) + 2 * n + 7;
    }
    if (d.op == TL_OP_VEC) {
        const uint64_t w = tl_cdiv(n, TL_VEC_LANES);
        *unit = TL_CNT_VEC_BUSY;
        if (d.sub == TL_VEC_LN_FWD || d.sub == TL_VEC_LN_BWD) return m * 2 * w + TL_VEC_PIPE;
        if (d.sub == TL_VEC_MASK) {
            const uint64_t listed = d.imm >= 0 && (uint64_t)d.imm < m ? m - (uint64_t)d.imm : 0;
            return m * w + listed * k + TL_VEC_PIPE;
        }
        return m * w + TL_VEC_PIPE;
    }
    if (d.op == TL_OP_TOPK) {  // rtl_cycles.topk_stream_cycles
        *unit = TL_CNT_TOPK_BUSY;
        return (m - 1) * (n + 1) + 2 * n + 2;
    }
    return 1;  // FINISH
}

// The program streams in as back-to-back 4-beat commands after one DDR latency.
static inline uint64_t tl_fetch_ready(uint32_t pc) { return TL_DDR_LATENCY + 4 * ((uint64_t)pc + 1); }

// ------------------------------------------------------------------------------------- sequencer
// Queues are named by small ids and resolved with switches on the static streams (no stream pointers
// or runtime-selected stream references in the synthesized code).
enum { TL_Q_NONE = -1, TL_Q_L2C = 0, TL_Q_C2L = 1, TL_Q_C2S = 2, TL_Q_S2C = 3 };

static bool tl_tok_empty(int q) {
    switch (q) {
        case TL_Q_L2C: return tl_l2c.empty();
        case TL_Q_C2L: return tl_c2l.empty();
        case TL_Q_C2S: return tl_c2s.empty();
        default: return tl_s2c.empty();
    }
}
static bool tl_tok_full(int q) {
    switch (q) {
        case TL_Q_L2C: return tl_l2c.full();
        case TL_Q_C2L: return tl_c2l.full();
        case TL_Q_C2S: return tl_c2s.full();
        default: return tl_s2c.full();
    }
}
static tl_token_t tl_tok_read(int q) {
    switch (q) {
        case TL_Q_L2C: return tl_l2c.read();
        case TL_Q_C2L: return tl_c2l.read();
        case TL_Q_C2S: return tl_c2s.read();
        default: return tl_s2c.read();
    }
}
static void tl_tok_write(int q, tl_token_t v) {
    switch (q) {
        case TL_Q_L2C: tl_l2c.write(v); break;
        case TL_Q_C2L: tl_c2l.write(v); break;
        case TL_Q_C2S: tl_c2s.write(v); break;
        default: tl_s2c.write(v); break;
    }
}
static bool tl_cmdq_empty(int m) {
    return m == TL_M_LOAD ? tl_load_q.empty() : m == TL_M_COMPUTE ? tl_compute_q.empty() : tl_store_q.empty();
}
static bool tl_cmdq_full(int m) {
    return m == TL_M_LOAD ? tl_load_q.full() : m == TL_M_COMPUTE ? tl_compute_q.full() : tl_store_q.full();
}
static tl_cmd_t tl_cmdq_read(int m) {
    switch (m) {
        case TL_M_LOAD: return tl_load_q.read();
        case TL_M_COMPUTE: return tl_compute_q.read();
        default: return tl_store_q.read();
    }
}
static void tl_cmdq_write(int m, const tl_cmd_t& c) {
    switch (m) {
        case TL_M_LOAD: tl_load_q.write(c); break;
        case TL_M_COMPUTE: tl_compute_q.write(c); break;
        default: tl_store_q.write(c); break;
    }
}

// The token queue of module m for dependency flag i (0 pop_prev, 1 pop_next, 2 push_prev, 3 push_next),
// TL_Q_NONE where the module has no such neighbour.
static inline int tl_tok_of(int m, int i) {
    static const int ids[3][4] = {{TL_Q_NONE, TL_Q_C2L, TL_Q_NONE, TL_Q_L2C},
                                  {TL_Q_L2C, TL_Q_S2C, TL_Q_C2L, TL_Q_C2S},
                                  {TL_Q_C2S, TL_Q_NONE, TL_Q_S2C, TL_Q_NONE}};
    return ids[m][i];
}

// 0 if module m can run command d now; 1 if it waits on token queue *on (*full: a push, else a pop);
// -1 if it is FINISH waiting for LOAD and STORE to drain. Flags naming a missing neighbour are left to
// the command (RESERVED_BITS).
static int tl_blocked_on(int m, const tl_dec_t& d, bool others_busy, int* on, bool* full) {
    const int flag[4] = {d.pop_prev, d.pop_next, d.push_prev, d.push_next};
blocked:
    for (int i = 0; i < 4; i++) {
        const int q = tl_tok_of(m, i);
        if (!flag[i] || q == TL_Q_NONE) continue;
        if (i < 2 ? tl_tok_empty(q) : tl_tok_full(q)) {
            *on = q;
            *full = i >= 2;
            return 1;
        }
    }
    if (d.op == TL_OP_FINISH && others_busy) return -1;
    return 0;
}

// Runs module m's command d (its tokens are there): pops, executes, pushes; updates the model.
static uint32_t tl_run_module(int m, const tl_dec_t& d, tl_beat_t* gmem, uint64_t ddr_bytes, uint64_t t[3],
                              uint64_t* counters) {
    if ((m == TL_M_LOAD && (d.pop_prev || d.push_prev)) || (m == TL_M_STORE && (d.pop_next || d.push_next)) ||
        (d.op == TL_OP_FINISH && (d.pop_prev || d.pop_next || d.push_prev || d.push_next)))
        return tl_fail(TL_ERR_RESERVED_BITS, d.pc);  // LOAD has no previous module, STORE no next, FINISH none
    uint64_t start = tl_umax(t[m], tl_fetch_ready(d.pc));
    if (d.pop_next) start = tl_umax(start, tl_tok_read(tl_tok_of(m, 1)));
    if (d.pop_prev) {
        const uint64_t ready = tl_tok_read(tl_tok_of(m, 0));
        if (m == TL_M_COMPUTE && ready > start) counters[TL_CNT_DMA_STALL] += ready - start;
        start = tl_umax(start, ready);
    }
    if (d.op == TL_OP_FINISH) start = tl_umax(start, tl_umax(t[TL_M_LOAD], t[TL_M_STORE]));
    int unit;
    uint64_t fed;
    const uint64_t cycles = tl_cmd_cycles(d, &unit, &fed);
    uint32_t err;
    if (m == TL_M_LOAD)
        err = tl_exec_load(d, gmem, ddr_bytes, tl_spm, tl_accm, tl_idxm);
    else if (m == TL_M_STORE)
        err = tl_exec_store(d, gmem, ddr_bytes, tl_spm, tl_accm, tl_idxm, tl_stat);
    else
        err = tl_exec_compute(d, tl_spm, tl_accm, tl_idxm, tl_stat);
    if (err) return err;
    const uint64_t end = start + cycles;
    t[m] = end;
    if (unit >= 0) counters[unit] += unit == TL_CNT_GEMM_BUSY ? fed : cycles;
    const uint64_t elem = (d.sub == TL_MEM_ACC || d.sub == TL_MEM_STAT) ? 8 : 2;
    if (d.op == TL_OP_LOAD && !d.tb) counters[TL_CNT_DDR_RD_BYTES] += (uint64_t)d.m * d.n * elem;
    if (d.op == TL_OP_STORE) counters[TL_CNT_DDR_WR_BYTES] += (uint64_t)d.m * d.n * elem;
    if (d.op == TL_OP_GEMM) counters[TL_CNT_MACS] += (uint64_t)d.m * d.n * d.k;
    counters[TL_CNT_RETIRED]++;
    counters[TL_CNT_DDR_RD_BYTES] += 4 * TL_CMD_WORDS;  // the command itself (counted when it retires)
    if (d.push_prev) tl_tok_write(tl_tok_of(m, 2), end);
    if (d.push_next) tl_tok_write(tl_tok_of(m, 3), end);
    return 0;
}

static void tl_drain_queues() {
drain:
    for (int i = 0; i < 8 * TL_QUEUE_DEPTH; i++) {
#pragma HLS LOOP_TRIPCOUNT max = 64
        bool any = false;
        for (int m = 0; m < 3; m++)
            if (!tl_cmdq_empty(m)) (void)tl_cmdq_read(m), any = true;
        for (int q = 0; q < 4; q++)
            if (!tl_tok_empty(q)) (void)tl_tok_read(q), any = true;
        if (!any) break;
    }
}

#ifndef __SYNTHESIS__
// C-sim only: names and depths of the queues, for the deadlock message and the test hook.
static tl_queue<tl_cmd_t>* tl_cmdq_ptr(int m) {
    return m == TL_M_LOAD ? &tl_load_q : m == TL_M_COMPUTE ? &tl_compute_q : &tl_store_q;
}
static tl_queue<tl_token_t>* tl_tok_ptr(int q) {
    return q == TL_Q_L2C ? &tl_l2c : q == TL_Q_C2L ? &tl_c2l : q == TL_Q_C2S ? &tl_c2s : &tl_s2c;
}
static void tl_note(char* buf, size_t cap, const char* fmt, const char* a, const char* b, int c, unsigned d) {
    const size_t used = strlen(buf);
    if (used + 2 >= cap) return;
    snprintf(buf + used, cap - used, fmt, used ? "; " : "", a, b, c, d);
}

// The stderr line of a deadlock: every blocked queue, by name, with its state and depth.
static void tl_report_deadlock(const tl_cmd_t head[3], const bool head_valid[3], bool pending_valid,
                               const tl_cmd_t& pending, int pending_module) {
    static const char* const module_name[3] = {"load", "compute", "store"};
    char why[1024] = "";
    if (pending_valid)
        tl_note(why, sizeof why, "%sfetch waits on %s (%s, depth %d) at command %u",
                tl_cmdq_ptr(pending_module)->name(), "full", tl_cmdq_ptr(pending_module)->depth(), pending.pc);
    for (int m = 0; m < 3; m++) {
        if (!head_valid[m]) continue;
        const tl_dec_t d = tl_decode(head[m]);
        int on = TL_Q_NONE;
        bool full = false;
        if (tl_blocked_on(m, d, true, &on, &full) > 0) {
            char what[64];
            snprintf(what, sizeof what, "%s waits on %s", module_name[m], tl_tok_ptr(on)->name());
            tl_note(why, sizeof why, "%s%s (%s, depth %d) at command %u", what, full ? "full" : "empty",
                    tl_tok_ptr(on)->depth(), d.pc);
        } else {
            tl_note(why, sizeof why, "%s%s waits at FINISH for %s (%d) at command %u", "compute",
                    "load_q/store_q to drain", tl_load_q.size() + tl_store_q.size(), d.pc);
        }
    }
    fprintf(stderr, "trilevel engine: deadlock: %s (error DEP_UNDERFLOW)\n", why);
}
#endif

uint32_t tl_engine_core(tl_beat_t* gmem, uint64_t ddr_bytes, uint64_t cmd_addr, uint32_t cmd_count,
                        uint32_t* err_pc, uint64_t counters[TL_N_COUNTERS]) {
    tl_cmd_t head[3], pending;
    bool head_valid[3] = {false, false, false};
    bool pending_valid = false, fetch_done = cmd_count == 0, finished = false;
    int pending_module = 0;
    uint32_t pc = 0, err = 0, fetch_err = 0;
    uint64_t t[3] = {0, 0, 0};
    for (int c = 0; c < TL_N_COUNTERS; c++) counters[c] = 0;
    for (int s = 0; s < TL_STAT_SLOTS; s++) tl_stat[s] = 0;
    tl_drain_queues();
    // The program must lie in the DDR window and be 64-byte aligned: checked once, before anything runs.
    if ((cmd_addr & 63) != 0 || cmd_addr + (uint64_t)cmd_count * (4 * TL_CMD_WORDS) > ddr_bytes) {
        *err_pc = 0;
        return TL_ERR_DDR_RANGE;
    }
sequencer:
    for (;;) {
#pragma HLS LOOP_TRIPCOUNT max = 65536
        bool progress = false;
        // FETCH: the next command in program order into its module's queue, when that has room.
        if (!fetch_done && !pending_valid) {
            fetch_err = tl_fetch_one(gmem, ddr_bytes, cmd_addr, pc, pending, &pending_module);
            if (fetch_err) {  // a malformed command: fetch stops, the commands before it still run
                fetch_done = true;
            } else {
                pending_valid = true;
                pc++;
            }
        }
        if (pending_valid && !tl_cmdq_full(pending_module)) {
            tl_cmdq_write(pending_module, pending);
            pending_valid = false;
            progress = true;
            if ((pending.w[0] & ((1u << TL_C_OP_W) - 1)) == TL_OP_FINISH || pc >= cmd_count) fetch_done = true;
        }
        // LOAD, COMPUTE, STORE: each runs its head command once its tokens are there.
    modules:
        for (int m = 0; m < 3; m++) {
            if (err) break;
            if (!head_valid[m] && !tl_cmdq_empty(m)) {
                head[m] = tl_cmdq_read(m);
                head_valid[m] = true;
                progress = true;
            }
            if (!head_valid[m]) continue;
            const tl_dec_t d = tl_decode(head[m]);
            const bool others_busy = head_valid[TL_M_LOAD] || head_valid[TL_M_STORE] ||
                                     !tl_cmdq_empty(TL_M_LOAD) || !tl_cmdq_empty(TL_M_STORE);
            int on;
            bool full;
            if (tl_blocked_on(m, d, others_busy, &on, &full) != 0) continue;
            err = tl_run_module(m, d, gmem, ddr_bytes, t, counters);
            head_valid[m] = false;
            progress = true;
            if (d.op == TL_OP_FINISH) finished = true;
        }
        if (err || finished) break;
        const bool idle = !head_valid[0] && !head_valid[1] && !head_valid[2] && tl_cmdq_empty(TL_M_LOAD) &&
                          tl_cmdq_empty(TL_M_COMPUTE) && tl_cmdq_empty(TL_M_STORE);
        if (fetch_done && !pending_valid && idle) break;  // a program without FINISH ends when it drains
        if (!progress && fetch_err) break;  // the commands before the malformed one ran as far as they can
        if (!progress) {  // nothing can move: a pop no remaining command satisfies, or a full queue
            uint32_t first = pending_valid ? pending.pc : pc;
            for (int m = 0; m < 3; m++)
                if (head_valid[m] && head[m].pc < first) first = head[m].pc;
#ifndef __SYNTHESIS__
            tl_report_deadlock(head, head_valid, pending_valid, pending, pending_module);
#endif
            err = tl_fail(TL_ERR_DEP_UNDERFLOW, first);
            break;
        }
    }
    if (!err) err = fetch_err;
    if (err) tl_drain_queues();  // commands already dispatched are dropped: ready for the next ap_start
    counters[TL_CNT_CYCLES] = tl_umax(t[0], tl_umax(t[1], t[2]));
    *err_pc = err & 0xFFFFFFu;
    return err >> 24;
}

#if defined(TL_VITIS) || defined(__SYNTHESIS__)
// The Vitis HLS top (isa.HLS_TOP): its ap_ctrl_hs / s_axilite layout is trilevel.accel.isa.REGISTERS
// (bitstreams/hls_interface.py derives it from this signature). gmem is tl_beat_t.
uint32_t trilevel_engine(ap_uint<128>* gmem, uint32_t cmd_addr, uint32_t cmd_count, uint32_t* err_pc,
                         uint64_t counters[12]) {
#pragma HLS INTERFACE m_axi port = gmem offset = slave bundle = gmem max_read_burst_length = 256 max_write_burst_length = 256 num_read_outstanding = 8 num_write_outstanding = 8
#pragma HLS INTERFACE s_axilite port = cmd_addr bundle = control
#pragma HLS INTERFACE s_axilite port = cmd_count bundle = control
#pragma HLS INTERFACE s_axilite port = err_pc bundle = control
#pragma HLS INTERFACE s_axilite port = counters bundle = control
#pragma HLS INTERFACE s_axilite port = return bundle = control
#pragma HLS STREAM variable = tl_load_q depth = TL_QUEUE_DEPTH
#pragma HLS STREAM variable = tl_compute_q depth = TL_QUEUE_DEPTH
#pragma HLS STREAM variable = tl_store_q depth = TL_QUEUE_DEPTH
#pragma HLS STREAM variable = tl_l2c depth = TL_QUEUE_DEPTH
#pragma HLS STREAM variable = tl_c2l depth = TL_QUEUE_DEPTH
#pragma HLS STREAM variable = tl_c2s depth = TL_QUEUE_DEPTH
#pragma HLS STREAM variable = tl_s2c depth = TL_QUEUE_DEPTH
#pragma HLS ARRAY_PARTITION variable = tl_spm cyclic factor = TL_SPM_BANKS
#pragma HLS BIND_STORAGE variable = tl_spm type = ram_t2p impl = bram
#pragma HLS BIND_STORAGE variable = tl_accm type = ram_t2p impl = bram
#pragma HLS ARRAY_PARTITION variable = tl_accm cyclic factor = TL_SPM_BANKS
    static_assert(TL_N_COUNTERS == 12, "counters[12] above must follow isa.N_COUNTERS");
    return tl_engine_core(gmem, (uint64_t)1 << 32, cmd_addr, cmd_count, err_pc, counters);
}
#endif

#ifndef __SYNTHESIS__
// --------------------------------------------------------------------------- C-sim test hooks
int tl_engine_queue_depth_hook(const char* name, int depth) {
    for (int m = 0; m < 3; m++)
        if (strcmp(tl_cmdq_ptr(m)->name(), name) == 0) return tl_cmdq_ptr(m)->set_depth(depth), tl_cmdq_ptr(m)->depth();
    for (int q = 0; q < 4; q++)
        if (strcmp(tl_tok_ptr(q)->name(), name) == 0) return tl_tok_ptr(q)->set_depth(depth), tl_tok_ptr(q)->depth();
    return -1;
}
#endif
