// The engine's queues: command queues (fetch -> load / compute / store) and dependency-token queues
// (l2c, c2l, c2s, s2c), all bounded FIFOs of declared depth TL_QUEUE_DEPTH.
//
// Synthesis: tl_queue<T> is hls::stream<T, TL_QUEUE_DEPTH> (engine.cpp also declares the depth with
// STREAM pragmas). C-sim (the library and Vitis csim_design alike): a fixed-capacity ring that honours
// that depth (changeable only through the test hook) and has a name. The sequencer (engine.cpp) checks
// empty()/full() before every read/write, so a read of an empty or a write to a full queue is an
// engine bug: it throws tl_queue_error naming the queue (tl_engine_run turns it into error
// DEP_UNDERFLOW); it never blocks and never grows.
#ifndef TL_QUEUE_H
#define TL_QUEUE_H

#include "tl_isa.h"

#ifdef __SYNTHESIS__
#include <hls_stream.h>
template <typename T>
using tl_queue = hls::stream<T, TL_QUEUE_DEPTH>;
#else
#include <stdio.h>

#define TL_QUEUE_CAPACITY 4096  // largest depth the test hook accepts (storage is static)

struct tl_queue_error {
    char text[160];
};

template <typename T>
class tl_queue {
  public:
    explicit tl_queue(const char* name) : name_(name), depth_(TL_QUEUE_DEPTH), head_(0), count_(0) {}
    const char* name() const { return name_; }
    int depth() const { return depth_; }
    int size() const { return count_; }
    bool empty() const { return count_ == 0; }
    bool full() const { return count_ >= depth_; }
    void clear() { head_ = count_ = 0; }
    void set_depth(int depth) { depth_ = depth < 1 ? 1 : (depth > TL_QUEUE_CAPACITY ? TL_QUEUE_CAPACITY : depth); }
    const T& peek() const {
        if (empty()) fail("peek at an empty");
        return buf_[head_];
    }
    T read() {
        if (empty()) fail("read from an empty");
        const T v = buf_[head_];
        head_ = (head_ + 1) % TL_QUEUE_CAPACITY;
        count_--;
        return v;
    }
    void write(const T& v) {
        if (full()) fail("write to a full");
        buf_[(head_ + count_) % TL_QUEUE_CAPACITY] = v;
        count_++;
    }

  private:
    void fail(const char* what) const {
        tl_queue_error e;
        snprintf(e.text, sizeof e.text, "%s queue %s (depth %d) would block forever", what, name_, depth_);
        throw e;
    }
    const char* name_;
    int depth_;
    int head_, count_;
    T buf_[TL_QUEUE_CAPACITY];
};
#endif

#endif
