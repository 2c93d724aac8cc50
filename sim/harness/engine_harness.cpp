// Cycle-driven C++ harness around the Verilated engine top (hls/rtl/engine/engine_top.sv).
//
// One shared library = one Verilated engine configuration. The C API below (th_*) is loaded with
// ctypes by trilevel.accel.rtlsim. Per cycle the harness drives the engine's inputs from its own
// registered state (AXI-Lite master, AXI4 DDR slave), evaluates the low phase, samples every
// handshake, evaluates the rising edge and then updates its state from the handshakes. Nothing in
// the harness responds combinationally to the engine's outputs, so the AXI rules "valid must not
// depend on ready" hold on our side by construction.
//
// DDR model (docs/rtl.md, "Engine harness"): one AXI4 slave at the HP-port width (128 bit),
//   * reads: up to `max_reads` outstanding bursts; a burst's first beat is returned `rd_latency`
//     cycles after its AR handshake, then one beat per cycle in order;
//   * writes: W beats accepted once their AW is known; B `wr_latency` cycles after the last beat;
//   * bandwidth: one token bucket of `bw_x256` / 256 bytes per cycle shared by R and W beats
//     (a DDR controller budget); each channel moves at most one beat per cycle anyway;
//   * backpressure: with probability `stall_x256` / 256 per cycle (xorshift PRNG seeded by `seed`)
//     each of arready / awready / wready / rvalid is withheld for the cycle.
// Memory is sparse (64 KiB pages, zero-filled on first touch), addressed by the AXI address.
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <unordered_map>
#include <vector>

#include "verilated.h"
#include "Vengine_top.h"

#ifndef AXI_DATA_BYTES
#define AXI_DATA_BYTES 16
#endif

namespace {

using VTOP = Vengine_top;
constexpr int kWords = AXI_DATA_BYTES / 4;
constexpr uint64_t kPageBits = 16;
constexpr uint64_t kPageSize = 1ull << kPageBits;

struct Config {            // mirrored by trilevel.accel.rtlsim.HarnessConfig (ctypes)
    uint32_t rd_latency;   // AR handshake -> first R beat (cycles)
    uint32_t wr_latency;   // last W beat -> B (cycles)
    uint32_t max_reads;    // outstanding read bursts accepted
    uint32_t max_writes;   // outstanding write bursts accepted
    uint32_t bw_x256;      // DDR bytes per cycle x 256 (0 = unlimited)
    uint32_t stall_x256;   // random backpressure probability x 256
    uint32_t seed;         // PRNG seed for backpressure
    uint32_t reserved;
};

struct Stats {             // mirrored by trilevel.accel.rtlsim.HarnessStats
    uint64_t cycles;
    uint64_t rd_bursts, rd_beats, wr_bursts, wr_beats;
    uint64_t rd_bytes, wr_bytes;   // by strobe / burst size
    uint64_t protocol_errors;      // bursts crossing 4 KiB, bad size/burst type, W without AW...
};

struct Burst {
    uint64_t addr;
    uint32_t len;      // beats
    uint32_t size;     // bytes per beat
    uint64_t due;      // cycle the first beat may go (reads) / response may go (writes)
};

class Harness {
public:
    explicit Harness(const Config& cfg) : cfg_(cfg), rng_(cfg.seed ? cfg.seed : 0x9E3779B9u) {
        ctx_ = std::make_unique<VerilatedContext>();
        ctx_->randReset(0);
        top_ = std::make_unique<VTOP>(ctx_.get(), "engine");
        idle_inputs();
        reset(8);
    }

    ~Harness() { top_->final(); }

    void reset(uint32_t cycles) {
        rd_q_.clear();
        wr_q_.clear();
        b_q_.clear();
        r_beat_ = 0;
        w_beat_ = 0;
        r_valid_ = false;
        r_last_ = false;
        b_valid_ = false;
        tokens_ = 0;
        idle_inputs();
        top_->rst = 1;
        for (uint32_t i = 0; i < (cycles ? cycles : 1); ++i) step();
        top_->rst = 0;
    }

    void step() {
        drive();
        top_->clk = 0;
        top_->eval();
        const Handshakes h = sample();
        top_->clk = 1;
        top_->eval();
        update(h);
        ++stats_.cycles;
    }

    // ---------------- AXI-Lite master ----------------
    void mmio_write(uint32_t addr, uint32_t data) {
        l_awvalid_ = l_wvalid_ = true;
        l_awaddr_ = addr;
        l_wdata_ = data;
        for (int guard = 0; guard < 10000 && (l_awvalid_ || l_wvalid_ || !l_bdone_); ++guard) step();
        l_awvalid_ = l_wvalid_ = false;
        l_bdone_ = false;
    }

    uint32_t mmio_read(uint32_t addr) {
        l_arvalid_ = true;
        l_araddr_ = addr;
        for (int guard = 0; guard < 10000 && (l_arvalid_ || !l_rdone_); ++guard) step();
        l_arvalid_ = false;
        l_rdone_ = false;
        return l_rdata_;
    }

    // ---------------- memory ----------------
    void mem_write(uint64_t addr, const uint8_t* src, uint64_t n) {
        for (uint64_t i = 0; i < n;) {
            uint8_t* p = page(addr + i);
            const uint64_t off = (addr + i) & (kPageSize - 1);
            const uint64_t chunk = std::min<uint64_t>(n - i, kPageSize - off);
            std::memcpy(p + off, src + i, chunk);
            i += chunk;
        }
    }

    void mem_read(uint64_t addr, uint8_t* dst, uint64_t n) {
        for (uint64_t i = 0; i < n;) {
            uint8_t* p = page(addr + i);
            const uint64_t off = (addr + i) & (kPageSize - 1);
            const uint64_t chunk = std::min<uint64_t>(n - i, kPageSize - off);
            std::memcpy(dst + i, p + off, chunk);
            i += chunk;
        }
    }

    // Run until the stop condition holds or max_cycles pass. stop: bit 0 = irq high,
    // bit 1 = engine not busy. Returns the cycles run.
    uint64_t run(uint64_t max_cycles, uint32_t stop) {
        uint64_t n = 0;
        for (; n < max_cycles; ++n) {
            if ((stop & 1) && top_->irq) break;
            if ((stop & 2) && !top_->busy) break;
            step();
        }
        return n;
    }

    const Stats& stats() const { return stats_; }
    Stats& stats() { return stats_; }
    bool irq() const { return top_->irq; }
    bool busy() const { return top_->busy; }

private:
    struct Handshakes {
        bool ar, r, aw, w, b;
        bool l_aw, l_w, l_b, l_ar, l_r;
    };

    uint32_t rand() {  // xorshift32
        rng_ ^= rng_ << 13;
        rng_ ^= rng_ >> 17;
        rng_ ^= rng_ << 5;
        return rng_;
    }
    bool stall() { return cfg_.stall_x256 && (rand() & 255) < cfg_.stall_x256; }

    uint8_t* page(uint64_t addr) {
        auto& slot = mem_[addr >> kPageBits];
        if (!slot) {
            slot.reset(new uint8_t[kPageSize]);
            std::memset(slot.get(), 0, kPageSize);
        }
        return slot.get();
    }

    void idle_inputs() {
        l_awvalid_ = l_wvalid_ = l_arvalid_ = false;
        l_bdone_ = l_rdone_ = false;
        top_->s_axil_awvalid = 0;
        top_->s_axil_wvalid = 0;
        top_->s_axil_arvalid = 0;
        top_->s_axil_bready = 1;
        top_->s_axil_rready = 1;
        top_->s_axil_wstrb = 0xF;
        top_->m_axi_arready = 0;
        top_->m_axi_rvalid = 0;
        top_->m_axi_awready = 0;
        top_->m_axi_wready = 0;
        top_->m_axi_bvalid = 0;
        top_->m_axi_rresp = 0;
        top_->m_axi_bresp = 0;
        top_->m_axi_rlast = 0;
        top_->m_axi_rid = 0;
        top_->m_axi_bid = 0;
    }

    void drive() {
        // AXI-Lite master
        top_->s_axil_awvalid = l_awvalid_;
        top_->s_axil_awaddr = l_awaddr_;
        top_->s_axil_wvalid = l_wvalid_;
        top_->s_axil_wdata = l_wdata_;
        top_->s_axil_wstrb = 0xF;
        top_->s_axil_bready = 1;
        top_->s_axil_arvalid = l_arvalid_;
        top_->s_axil_araddr = l_araddr_;
        top_->s_axil_rready = 1;

        // bandwidth budget for this cycle
        if (cfg_.bw_x256) {
            tokens_ += cfg_.bw_x256;
            const uint64_t cap = 64ull * 256 * AXI_DATA_BYTES;  // burst allowance
            if (tokens_ > cap) tokens_ = cap;
        }
        const uint64_t beat_cost = 256ull * AXI_DATA_BYTES;

        // AR / AW acceptance
        ar_ready_ = rd_q_.size() < cfg_.max_reads && !stall();
        aw_ready_ = wr_q_.size() + b_q_.size() < cfg_.max_writes && !stall();
        top_->m_axi_arready = ar_ready_;
        top_->m_axi_awready = aw_ready_;

        // R: present the head burst's next beat once due (held until taken)
        if (!r_valid_ && !rd_q_.empty() && stats_.cycles >= rd_q_.front().due && !stall() &&
            (!cfg_.bw_x256 || tokens_ >= beat_cost)) {
            if (cfg_.bw_x256) tokens_ -= beat_cost;
            const Burst& b = rd_q_.front();
            const uint64_t addr = beat_addr(b, r_beat_);
            uint8_t bytes[AXI_DATA_BYTES];
            const uint64_t aligned = addr & ~uint64_t(AXI_DATA_BYTES - 1);
            mem_read(aligned, bytes, AXI_DATA_BYTES);
            for (int w = 0; w < kWords; ++w) {
                uint32_t v;
                std::memcpy(&v, bytes + 4 * w, 4);
                r_data_[w] = v;
            }
            r_last_ = r_beat_ + 1 == b.len;
            r_valid_ = true;
        }
        top_->m_axi_rvalid = r_valid_;
        for (int w = 0; w < kWords; ++w) top_->m_axi_rdata[w] = r_data_[w];
        top_->m_axi_rlast = r_last_;
        top_->m_axi_rresp = 0;

        // W: accept while a burst address is known
        w_ready_ = !wr_q_.empty() && !stall() && (!cfg_.bw_x256 || tokens_ >= beat_cost);
        top_->m_axi_wready = w_ready_;

        // B
        if (!b_valid_ && !b_q_.empty() && stats_.cycles >= b_q_.front().due) b_valid_ = true;
        top_->m_axi_bvalid = b_valid_;
        top_->m_axi_bresp = 0;
    }

    Handshakes sample() {
        Handshakes h{};
        h.ar = top_->m_axi_arvalid && ar_ready_;
        h.r = r_valid_ && top_->m_axi_rready;
        h.aw = top_->m_axi_awvalid && aw_ready_;
        h.w = top_->m_axi_wvalid && w_ready_;
        h.b = b_valid_ && top_->m_axi_bready;
        h.l_aw = l_awvalid_ && top_->s_axil_awready;
        h.l_w = l_wvalid_ && top_->s_axil_wready;
        h.l_b = top_->s_axil_bvalid;
        h.l_ar = l_arvalid_ && top_->s_axil_arready;
        h.l_r = top_->s_axil_rvalid;
        if (h.l_r) l_rdata_ = top_->s_axil_rdata;
        if (h.ar) {
            Burst b{top_->m_axi_araddr, uint32_t(top_->m_axi_arlen) + 1, 1u << top_->m_axi_arsize,
                    stats_.cycles + cfg_.rd_latency};
            check_burst(b, top_->m_axi_arburst);
            pending_ar_ = b;
        }
        if (h.aw) {
            Burst b{top_->m_axi_awaddr, uint32_t(top_->m_axi_awlen) + 1, 1u << top_->m_axi_awsize, 0};
            check_burst(b, top_->m_axi_awburst);
            pending_aw_ = b;
        }
        if (h.w) {
            for (int w = 0; w < kWords; ++w) w_data_[w] = top_->m_axi_wdata[w];
            w_strb_ = top_->m_axi_wstrb;
            w_last_ = top_->m_axi_wlast;
        }
        return h;
    }

    void update(const Handshakes& h) {
        if (h.l_aw) l_awvalid_ = false;
        if (h.l_w) l_wvalid_ = false;
        if (h.l_b) l_bdone_ = true;
        if (h.l_ar) l_arvalid_ = false;
        if (h.l_r) l_rdone_ = true;

        if (h.ar) {
            rd_q_.push_back(pending_ar_);
            ++stats_.rd_bursts;
        }
        if (h.r) {
            r_valid_ = false;
            ++stats_.rd_beats;
            stats_.rd_bytes += rd_q_.front().size;
            if (++r_beat_ == rd_q_.front().len) {
                rd_q_.pop_front();
                r_beat_ = 0;
            }
        }
        if (h.aw) {
            wr_q_.push_back(pending_aw_);
            ++stats_.wr_bursts;
        }
        if (h.w) {
            if (wr_q_.empty()) {
                ++stats_.protocol_errors;
            } else {
                if (cfg_.bw_x256) tokens_ -= 256ull * AXI_DATA_BYTES;
                Burst& b = wr_q_.front();
                const uint64_t addr = beat_addr(b, w_beat_) & ~uint64_t(AXI_DATA_BYTES - 1);
                uint8_t bytes[AXI_DATA_BYTES];
                for (int w = 0; w < kWords; ++w) std::memcpy(bytes + 4 * w, &w_data_[w], 4);
                for (int i = 0; i < AXI_DATA_BYTES; ++i) {
                    if ((w_strb_ >> i) & 1) {
                        *(page(addr + i) + ((addr + i) & (kPageSize - 1))) = bytes[i];
                        ++stats_.wr_bytes;
                    }
                }
                ++stats_.wr_beats;
                const bool last = ++w_beat_ == b.len;
                if (last != w_last_) ++stats_.protocol_errors;
                if (last) {
                    b.due = stats_.cycles + cfg_.wr_latency;
                    b_q_.push_back(b);
                    wr_q_.pop_front();
                    w_beat_ = 0;
                }
            }
        }
        if (h.b) {
            b_valid_ = false;
            b_q_.pop_front();
        }
    }

    static uint64_t beat_addr(const Burst& b, uint32_t beat) {
        // INCR bursts only (checked): beat i at the size-aligned start + i * size
        return (b.addr & ~uint64_t(b.size - 1)) + uint64_t(beat) * b.size;
    }

    void check_burst(const Burst& b, uint32_t burst_type) {
        const uint64_t end = b.addr + uint64_t(b.len) * b.size - 1;
        if (burst_type != 1 || b.size != AXI_DATA_BYTES || (b.addr >> 12) != (end >> 12) || b.len > 256)
            ++stats_.protocol_errors;
    }

    Config cfg_;
    uint32_t rng_;
    Stats stats_{};
    std::unique_ptr<VerilatedContext> ctx_;
    std::unique_ptr<VTOP> top_;
    std::unordered_map<uint64_t, std::unique_ptr<uint8_t[]>> mem_;

    // AXI-Lite master state
    bool l_awvalid_ = false, l_wvalid_ = false, l_arvalid_ = false, l_bdone_ = false, l_rdone_ = false;
    uint32_t l_awaddr_ = 0, l_wdata_ = 0, l_araddr_ = 0, l_rdata_ = 0;

    // DDR slave state
    std::deque<Burst> rd_q_, wr_q_, b_q_;
    Burst pending_ar_{}, pending_aw_{};
    uint32_t r_beat_ = 0, w_beat_ = 0;
    bool r_valid_ = false, r_last_ = false, b_valid_ = false;
    bool ar_ready_ = false, aw_ready_ = false, w_ready_ = false;
    uint32_t r_data_[kWords] = {};
    uint32_t w_data_[kWords] = {};
    uint64_t w_strb_ = 0;
    bool w_last_ = false;
    uint64_t tokens_ = 0;
};

}  // namespace

// The C API is the library's only exported interface (built with -fvisibility=hidden, so calls inside
// the Verilated model do not go through the PLT).
#define TH_API __attribute__((visibility("default")))

extern "C" {

TH_API void* th_create(const Config* cfg) { return new Harness(*cfg); }
TH_API void th_destroy(void* h) { delete static_cast<Harness*>(h); }
TH_API void th_reset(void* h, uint32_t cycles) { static_cast<Harness*>(h)->reset(cycles); }
TH_API void th_mmio_write(void* h, uint32_t addr, uint32_t data) { static_cast<Harness*>(h)->mmio_write(addr, data); }
TH_API uint32_t th_mmio_read(void* h, uint32_t addr) { return static_cast<Harness*>(h)->mmio_read(addr); }
TH_API void th_mem_write(void* h, uint64_t addr, const void* src, uint64_t n) {
    static_cast<Harness*>(h)->mem_write(addr, static_cast<const uint8_t*>(src), n);
}
TH_API void th_mem_read(void* h, uint64_t addr, void* dst, uint64_t n) {
    static_cast<Harness*>(h)->mem_read(addr, static_cast<uint8_t*>(dst), n);
}
TH_API uint64_t th_run(void* h, uint64_t max_cycles, uint32_t stop) { return static_cast<Harness*>(h)->run(max_cycles, stop); }
TH_API void th_stats(void* h, Stats* out) { *out = static_cast<Harness*>(h)->stats(); }
TH_API int th_irq(void* h) { return static_cast<Harness*>(h)->irq(); }
TH_API int th_busy(void* h) { return static_cast<Harness*>(h)->busy(); }
TH_API int th_data_bytes() { return AXI_DATA_BYTES; }

}  // extern "C"
