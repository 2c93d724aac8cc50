// hls::stream for the kernels. Synthesis and the ap_types C-sim use Xilinx hls_stream.h; the fast
// C-sim (-DTRILEVEL_FAST_CSIM) uses this lock-free single-thread FIFO with the same read/write/empty
// API, because hls_stream.h takes a mutex per element (it dominates a MAC loop's run time).
#ifndef TRILEVEL_STREAM_H
#define TRILEVEL_STREAM_H

#ifdef TRILEVEL_FAST_CSIM
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <vector>

namespace hls {
template <typename T>
class stream {
  public:
    stream() : head_(0) {}
    explicit stream(const char*) : head_(0) {}
    void write(const T& v) { buf_.push_back(v); }
    T read() {
        if (head_ >= buf_.size()) {
            fprintf(stderr, "trilevel: read from an empty hls::stream\n");
            abort();
        }
        T v = buf_[head_++];
        if (head_ == buf_.size()) {  // drained: reuse the storage
            buf_.clear();
            head_ = 0;
        }
        return v;
    }
    void read(T& v) { v = read(); }
    bool empty() const { return head_ == buf_.size(); }
    size_t size() const { return buf_.size() - head_; }

  private:
    std::vector<T> buf_;
    size_t head_;
};
}  // namespace hls
#else
#include <hls_stream.h>
#endif

#endif
