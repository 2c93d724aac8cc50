// Vitis HLS csim_design testbench: replays the golden call recorded by hls/gen_vectors.py (the integer
// reference's inputs and outputs) on one top function through its extern "C" wrapper and compares every
// buffer bit for bit. Build with -DTB_TOP_<top> (hls/tcl/common.tcl does) or -DTB_ALL_TOPS.
//     tb_kernels <vector dir>        (reads <dir>/call.bin; exit code 0 = pass)
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <string>
#include <vector>

#if defined(TB_ALL_TOPS) || defined(TB_TOP_linear_fwd) || defined(TB_TOP_linear_bwd) || defined(TB_TOP_layernorm_fwd) || \
    defined(TB_TOP_layernorm_bwd) || defined(TB_TOP_attn_fwd) || defined(TB_TOP_attn_bwd) || defined(TB_TOP_mlp_fwd) || \
    defined(TB_TOP_mlp_bwd) || defined(TB_TOP_topk_prune) || defined(TB_TOP_optimizer_step)
#else
#error "define TB_TOP_<top> or TB_ALL_TOPS"
#endif

extern "C" {
int tl_linear_fwd(const int16_t*, const int16_t*, const int16_t*, const int16_t*, int16_t*, int64_t*, int, int, int,
                  int, int, int, int, int, int);
int tl_linear_bwd(const int16_t*, const int16_t*, const int16_t*, int16_t*, int64_t*, int64_t*, int64_t*, int, int,
                  int, int, int, int, int, uint32_t);
int tl_layernorm_fwd(const int16_t*, const int16_t*, const int16_t*, int16_t*, int16_t*, int32_t*, int32_t*, int64_t*,
                     int, int, const int*);
int tl_layernorm_bwd(const int16_t*, const int16_t*, const int32_t*, const int32_t*, const int16_t*, const int16_t*,
                     int64_t*, int64_t*, int16_t*, int64_t*, int, int, const int*, uint32_t);
int tl_attn_fwd(const int16_t* const*, const int32_t*, int16_t* const*, int32_t* const*, int32_t*, int64_t*,
                const int*, const int*);
int tl_attn_bwd(const int16_t* const*, const int32_t*, const int32_t* const*, int64_t* const*, int16_t*, int64_t*,
                const int*, const int*, uint32_t);
int tl_mlp_fwd(const int16_t* const*, int16_t* const*, int32_t* const*, int64_t*, const int*, const int*);
int tl_mlp_bwd(const int16_t* const*, const int32_t* const*, int64_t* const*, int16_t*, int64_t*, const int*,
               const int*, uint32_t);
int tl_topk_prune(const int32_t*, int32_t*, int, int, int, int, int);
int tl_optimizer_step(float*, float*, float*, const int64_t*, int16_t*, int*, int64_t, int, int, int, const float*,
                      int);
}

namespace {

struct Buffer {
    std::vector<unsigned char> data, expected;
    bool null = true;
};

struct Arg {
    int kind = 0;
    int64_t value = 0, expected = 0;  // scalars and the by-reference int
    int ref = 0;                      // the by-reference int's storage
    Buffer buf;
    std::vector<Buffer> table;
    std::vector<void*> pointers;  // the pointer table passed to the kernel
};

// Converts to any pointer type: the replayed argument of a pointer parameter.
struct AnyPtr {
    void* p;
    template <typename T>
    operator T*() const {
        return (T*)p;
    }
};

class Reader {
  public:
    explicit Reader(FILE* f) : f_(f) {}
    bool ok() const { return ok_; }
    template <typename T>
    T get() {
        T v = T();
        ok_ = ok_ && fread(&v, sizeof v, 1, f_) == 1;
        return v;
    }
    void bytes(std::vector<unsigned char>& out, uint64_t n) {
        out.resize(n);
        ok_ = ok_ && (n == 0 || fread(out.data(), 1, n, f_) == n);
    }
    void buffer(Buffer& b) {
        const int kind = get<uint8_t>();
        b.null = kind == 4;
        if (kind == 3) {
            const uint64_t n = get<uint64_t>();
            bytes(b.data, n);
            bytes(b.expected, n);
        } else if (kind != 4) {
            ok_ = false;
        }
    }

  private:
    FILE* f_;
    bool ok_ = true;
};

void* ptr(Buffer& b) { return b.null ? 0 : (void*)b.data.data(); }

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s <vector dir>\n", argv[0]);
        return 2;
    }
    const std::string path = std::string(argv[1]) + "/call.bin";
    FILE* f = fopen(path.c_str(), "rb");
    if (!f) {
        fprintf(stderr, "tb: cannot open %s (run python hls/gen_vectors.py)\n", path.c_str());
        return 2;
    }
    Reader in(f);
    char magic[4];
    const bool magic_ok = fread(magic, 1, 4, f) == 4 && memcmp(magic, "TLV1", 4) == 0;
    std::vector<unsigned char> name_bytes;
    in.bytes(name_bytes, in.get<uint32_t>());
    const std::string name(name_bytes.begin(), name_bytes.end());
    std::vector<Arg> args(in.get<uint32_t>());
    for (size_t i = 0; i < args.size() && in.ok(); i++) {
        Arg& a = args[i];
        a.kind = in.get<uint8_t>();
        if (a.kind == 0) a.value = in.get<int32_t>();
        else if (a.kind == 1) a.value = in.get<uint32_t>();
        else if (a.kind == 2) a.value = in.get<int64_t>();
        else if (a.kind == 3) {
            const uint64_t n = in.get<uint64_t>();
            a.buf.null = false;
            in.bytes(a.buf.data, n);
            in.bytes(a.buf.expected, n);
        } else if (a.kind == 4) {
            a.buf.null = true;
        } else if (a.kind == 5) {
            a.table.resize(in.get<uint32_t>());
            for (size_t t = 0; t < a.table.size(); t++) in.buffer(a.table[t]);
            for (size_t t = 0; t < a.table.size(); t++) a.pointers.push_back(ptr(a.table[t]));
        } else if (a.kind == 6) {
            a.ref = in.get<int32_t>();
            a.expected = in.get<int32_t>();
        }
    }
    fclose(f);
    if (!magic_ok || !in.ok()) {
        fprintf(stderr, "tb: %s is not a valid vector file\n", path.c_str());
        return 2;
    }
    // P(i): pointer argument i; V(i): scalar argument i.
#define P(i) (AnyPtr{args[i].kind == 5 ? (void*)args[i].pointers.data() : args[i].kind == 6 ? (void*)&args[i].ref : ptr(args[i].buf)})
#define V(i) (args[i].value)
    int status = -1;
    bool known = false;
#if defined(TB_ALL_TOPS) || defined(TB_TOP_linear_fwd)
    if (name == "tl_linear_fwd") known = true, status = tl_linear_fwd(P(0), P(1), P(2), P(3), P(4), P(5), V(6), V(7), V(8), V(9), V(10), V(11), V(12), V(13), V(14));
#endif
#if defined(TB_ALL_TOPS) || defined(TB_TOP_linear_bwd)
    if (name == "tl_linear_bwd") known = true, status = tl_linear_bwd(P(0), P(1), P(2), P(3), P(4), P(5), P(6), V(7), V(8), V(9), V(10), V(11), V(12), V(13), V(14));
#endif
#if defined(TB_ALL_TOPS) || defined(TB_TOP_layernorm_fwd)
    if (name == "tl_layernorm_fwd") known = true, status = tl_layernorm_fwd(P(0), P(1), P(2), P(3), P(4), P(5), P(6), P(7), V(8), V(9), P(10));
#endif
#if defined(TB_ALL_TOPS) || defined(TB_TOP_layernorm_bwd)
    if (name == "tl_layernorm_bwd") known = true, status = tl_layernorm_bwd(P(0), P(1), P(2), P(3), P(4), P(5), P(6), P(7), P(8), P(9), V(10), V(11), P(12), V(13));
#endif
#if defined(TB_ALL_TOPS) || defined(TB_TOP_attn_fwd)
    if (name == "tl_attn_fwd") known = true, status = tl_attn_fwd(P(0), P(1), P(2), P(3), P(4), P(5), P(6), P(7));
#endif
#if defined(TB_ALL_TOPS) || defined(TB_TOP_attn_bwd)
    if (name == "tl_attn_bwd") known = true, status = tl_attn_bwd(P(0), P(1), P(2), P(3), P(4), P(5), P(6), P(7), V(8));
#endif
#if defined(TB_ALL_TOPS) || defined(TB_TOP_mlp_fwd)
    if (name == "tl_mlp_fwd") known = true, status = tl_mlp_fwd(P(0), P(1), P(2), P(3), P(4), P(5));
#endif
#if defined(TB_ALL_TOPS) || defined(TB_TOP_mlp_bwd)
    if (name == "tl_mlp_bwd") known = true, status = tl_mlp_bwd(P(0), P(1), P(2), P(3), P(4), P(5), P(6), V(7));
#endif
#if defined(TB_ALL_TOPS) || defined(TB_TOP_topk_prune)
    if (name == "tl_topk_prune") known = true, status = tl_topk_prune(P(0), P(1), V(2), V(3), V(4), V(5), V(6));
#endif
#if defined(TB_ALL_TOPS) || defined(TB_TOP_optimizer_step)
    if (name == "tl_optimizer_step") known = true, status = tl_optimizer_step(P(0), P(1), P(2), P(3), P(4), P(5), V(6), V(7), V(8), V(9), P(10), V(11));
#endif
#undef P
#undef V
    if (!known) {
        fprintf(stderr, "tb: %s is not compiled into this testbench\n", name.c_str());
        return 2;
    }
    int mismatches = 0;
    for (size_t i = 0; i < args.size(); i++) {
        Arg& a = args[i];
        std::vector<Buffer*> bufs;
        if (a.kind == 3) bufs.push_back(&a.buf);
        for (size_t t = 0; t < a.table.size(); t++) bufs.push_back(&a.table[t]);
        for (size_t b = 0; b < bufs.size(); b++)
            if (!bufs[b]->null && bufs[b]->data != bufs[b]->expected) {
                fprintf(stderr, "tb: %s argument %zu (buffer %zu) differs from the reference\n", name.c_str(), i, b);
                mismatches++;
            }
        if (a.kind == 6 && a.ref != a.expected) {
            fprintf(stderr, "tb: %s argument %zu = %d, reference %lld\n", name.c_str(), i, a.ref, (long long)a.expected);
            mismatches++;
        }
    }
    if (status != 0) fprintf(stderr, "tb: %s returned status %d\n", name.c_str(), status);
    printf("tb: %s %s\n", name.c_str(), mismatches || status ? "FAILED" : "passed, bit-exact with trilevel.intref");
    return mismatches || status ? 1 : 0;
}
