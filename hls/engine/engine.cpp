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
static inline tl_queue<tl_cmd_t>& tl_cmd_queue(int m) {
    return m == TL_M_LOAD ? tl_load_q : m == TL_M_COMPUTE ? tl_compute_q : tl_store_q;
}

// The token queues a command pops / pushes: [0] pop prev, [1] pop next, [2] push prev, [3] push next
// (0 where the module has no such neighbour).
static inline void tl_token_queues(int m, tl_queue<tl_token_t>* q[4]) {
    q[0] = m == TL_M_COMPUTE ? &tl_l2c : m == TL_M_STORE ? &tl_c2s : 0;
    q[1] = m == TL_M_LOAD ? &tl_c2l : m == TL_M_COMPUTE ? &tl_s2c : 0;
    q[2] = m == TL_M_COMPUTE ? &tl_c2l : m == TL_M_STORE ? &tl_s2c : 0;
    q[3] = m == TL_M_LOAD ? &tl_l2c : m == TL_M_COMPUTE ? &tl_c2s : 0;
}

// 0 if module m can run command d now, else the queue it waits on (-1: FINISH waits for the drain).
// Flags naming a missing neighbour are left to the module (RESERVED_BITS).
static inline int tl_blocked_on(int m, const tl_dec_t& d, bool others_busy, tl_queue<tl_token_t>** on,
                                bool* full) {
    tl_queue<tl_token_t>* q[4];
    tl_token_queues(m, q);
    const int flag[4] = {d.pop_prev, d.pop_next, d.push_prev, d.push_next};
    for (int i = 0; i < 4; i++) {
        if (!flag[i] || !q[i]) continue;
        if (i < 2 ? q[i]->empty() : q[i]->full()) {
            *on = q[i];
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
    tl_queue<tl_token_t>* q[4];
    tl_token_queues(m, q);
    if ((m == TL_M_LOAD && (d.pop_prev || d.push_prev)) || (m == TL_M_STORE && (d.pop_next || d.push_next)) ||
        (d.op == TL_OP_FINISH && (d.pop_prev || d.pop_next || d.push_prev || d.push_next)))
        return tl_fail(TL_ERR_RESERVED_BITS, d.pc);  // LOAD has no previous module, STORE no next, FINISH none
    uint64_t start = tl_umax(t[m], tl_fetch_ready(d.pc));
    if (d.pop_next && q[1]) start = tl_umax(start, q[1]->read());
    if (d.pop_prev && q[0]) {
        const uint64_t ready = q[0]->read();
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
    if (d.push_prev && q[2]) q[2]->write(end);
    if (d.push_next && q[3]) q[3]->write(end);
    return 0;
}

static void tl_drain_queues() {
drain:
    for (int i = 0; i < 8 * TL_QUEUE_DEPTH; i++) {
#pragma HLS LOOP_TRIPCOUNT max = 64
        bool any = false;
        if (!tl_load_q.empty()) (void)tl_load_q.read(), any = true;
        if (!tl_compute_q.empty()) (void)tl_compute_q.read(), any = true;
        if (!tl_store_q.empty()) (void)tl_store_q.read(), any = true;
        if (!tl_l2c.empty()) (void)tl_l2c.read(), any = true;
        if (!tl_c2l.empty()) (void)tl_c2l.read(), any = true;
        if (!tl_c2s.empty()) (void)tl_c2s.read(), any = true;
        if (!tl_s2c.empty()) (void)tl_s2c.read(), any = true;
        if (!any) break;
    }
}

#ifndef __SYNTHESIS__
static void tl_note(char* buf, size_t cap, const char* fmt, const char* a, const char* b, int c, unsigned d) {
    const size_t used = strlen(buf);
    if (used + 2 >= cap) return;
    snprintf(buf + used, cap - used, fmt, used ? "; " : "", a, b, c, d);
}
#endif

uint32_t tl_engine_core(tl_beat_t* gmem, uint64_t ddr_bytes, uint64_t cmd_addr, uint32_t cmd_count,
                        uint32_t* err_pc, uint64_t counters[TL_N_COUNTERS]) {
    static const char* const module_name[3] = {"load", "compute", "store"};
    tl_cmd_t head[3], pending;
    bool head_valid[3] = {false, false, false};
    bool pending_valid = false, fetch_done = cmd_count == 0, finished = false;
    int pending_module = 0;
    uint32_t pc = 0, err = 0;
    uint64_t t[3] = {0, 0, 0};
    for (int c = 0; c < TL_N_COUNTERS; c++) counters[c] = 0;
    for (int s = 0; s < TL_STAT_SLOTS; s++) tl_stat[s] = 0;
    tl_drain_queues();
sequencer:
    for (;;) {
#pragma HLS LOOP_TRIPCOUNT max = 65536
        bool progress = false;
        // FETCH: the next command in program order into its module's queue, when that has room.
        if (!fetch_done && !pending_valid) {
            err = tl_fetch_one(gmem, ddr_bytes, cmd_addr, pc, pending, &pending_module);
            if (err) break;
            pending_valid = true;
            pc++;
        }
        if (pending_valid && !tl_cmd_queue(pending_module).full()) {
            tl_cmd_queue(pending_module).write(pending);
            pending_valid = false;
            progress = true;
            if ((pending.w[0] & ((1u << TL_C_OP_W) - 1)) == TL_OP_FINISH || pc >= cmd_count) fetch_done = true;
        }
        // LOAD, COMPUTE, STORE: each runs its head command once its tokens are there.
    modules:
        for (int m = 0; m < 3; m++) {
            if (err) break;
            if (!head_valid[m] && !tl_cmd_queue(m).empty()) {
                head[m] = tl_cmd_queue(m).read();
                head_valid[m] = true;
                progress = true;
            }
            if (!head_valid[m]) continue;
            const tl_dec_t d = tl_decode(head[m]);
            const bool others_busy = head_valid[TL_M_LOAD] || head_valid[TL_M_STORE] || !tl_load_q.empty() ||
                                     !tl_store_q.empty();
            tl_queue<tl_token_t>* on;
            bool full;
            if (tl_blocked_on(m, d, others_busy, &on, &full) != 0) continue;
            err = tl_run_module(m, d, gmem, ddr_bytes, t, counters);
            head_valid[m] = false;
            progress = true;
            if (d.op == TL_OP_FINISH) finished = true;
        }
        if (err || finished) break;
        const bool idle = !head_valid[0] && !head_valid[1] && !head_valid[2] && tl_load_q.empty() &&
                          tl_compute_q.empty() && tl_store_q.empty();
        if (fetch_done && !pending_valid && idle) break;  // a program without FINISH ends when it drains
        if (!progress) {  // nothing can move: a pop no remaining command satisfies, or a full queue
            uint32_t first = pending_valid ? pending.pc : pc;
#ifndef __SYNTHESIS__
            char why[1024] = "";
            if (pending_valid)
                tl_note(why, sizeof why, "%sfetch waits on %s (%s, depth %d) at command %u",
                        tl_cmd_queue(pending_module).name(), "full", tl_cmd_queue(pending_module).depth(),
                        pending.pc);
#endif
            for (int m = 0; m < 3; m++) {
                if (!head_valid[m]) continue;
                const tl_dec_t d = tl_decode(head[m]);
                if (d.pc < first) first = d.pc;
#ifndef __SYNTHESIS__
                tl_queue<tl_token_t>* on = 0;
                bool full = false;
                if (tl_blocked_on(m, d, true, &on, &full) > 0) {
                    char what[64];
                    snprintf(what, sizeof what, "%s waits on %s", module_name[m], on->name());
                    tl_note(why, sizeof why, "%s%s (%s, depth %d) at command %u", what, full ? "full" : "empty",
                            on->depth(), d.pc);
                } else {
                    tl_note(why, sizeof why, "%s%s waits at FINISH for %s (%d) at command %u", "compute",
                            "load_q/store_q to drain", tl_load_q.size() + tl_store_q.size(), d.pc);
                }
#endif
            }
#ifndef __SYNTHESIS__
            fprintf(stderr, "trilevel engine: deadlock: %s (error DEP_UNDERFLOW)\n", why);
#endif
            err = tl_fail(TL_ERR_DEP_UNDERFLOW, first);
            break;
        }
    }
    (void)module_name;
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
    static_assert(TL_N_COUNTERS == 12, "counters[12] above must follow isa.N_COUNTERS");
    return tl_engine_core(gmem, (uint64_t)1 << 32, cmd_addr, cmd_count, err_pc, counters);
}
#endif

#ifndef __SYNTHESIS__
// --------------------------------------------------------------------------- C-sim test hooks
int tl_engine_queue_depth_hook(const char* name, int depth) {
    tl_queue<tl_cmd_t>* cq[3] = {&tl_load_q, &tl_compute_q, &tl_store_q};
    tl_queue<tl_token_t>* tq[4] = {&tl_l2c, &tl_c2l, &tl_c2s, &tl_s2c};
    for (int i = 0; i < 3; i++)
        if (strcmp(cq[i]->name(), name) == 0) return cq[i]->set_depth(depth), cq[i]->depth();
    for (int i = 0; i < 4; i++)
        if (strcmp(tq[i]->name(), name) == 0) return tq[i]->set_depth(depth), tq[i]->depth();
    return -1;
}
#endif
