// Vitis HLS csim_design testbench of the engine top trilevel_engine (hls/engine/engine.cpp): loads the
// DDR image written by hls/gen_vectors.py (a program exercising every unit, at offset 0), runs it, and
// compares every byte of DDR afterwards with the golden model's image (trilevel.accel.fsim).
//     tb_engine <vectors>/engine        (csim_design -argv build/hls/vectors/engine)
// Exit status 0 and "bit-exact" on success, 1 with the first differing byte otherwise.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <string>
#include <vector>

#include "tl_engine.h"

static std::vector<unsigned char> read_file(const std::string& path) {
    std::vector<unsigned char> data;
    FILE* f = fopen(path.c_str(), "rb");
    if (!f) {
        fprintf(stderr, "tb_engine: cannot open %s\n", path.c_str());
        exit(2);
    }
    unsigned char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) data.insert(data.end(), buf, buf + n);
    fclose(f);
    return data;
}

int main(int argc, char** argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: tb_engine <vectors>/engine\n");
        return 2;
    }
    const std::string dir = argv[1];
    const std::vector<unsigned char> image = read_file(dir + "/ddr.bin"), expected = read_file(dir + "/expected.bin");
    unsigned count = 0, want_error = 0, want_retired = 0;
    FILE* meta = fopen((dir + "/meta.txt").c_str(), "r");
    if (!meta || fscanf(meta, "%u %u %u", &count, &want_error, &want_retired) != 3) {
        fprintf(stderr, "tb_engine: bad %s/meta.txt\n", dir.c_str());
        return 2;
    }
    fclose(meta);
    const size_t beats = (image.size() + 15) / 16;
    std::vector<ap_uint<128> > gmem(beats);
    for (size_t b = 0; b < beats; b++)
        for (int i = 0; i < 16 && b * 16 + i < image.size(); i++) gmem[b].range(8 * i + 7, 8 * i) = image[b * 16 + i];
    uint32_t err_pc = 0;
    uint64_t counters[12];
    const uint32_t error = trilevel_engine(gmem.data(), 0, count, &err_pc, counters);
    if (error != want_error || counters[TL_CNT_RETIRED] != want_retired) {
        fprintf(stderr, "tb_engine: ERROR %u at command %u, retired %llu; the golden model: ERROR %u, retired %u\n",
                error, err_pc, (unsigned long long)counters[TL_CNT_RETIRED], want_error, want_retired);
        return 1;
    }
    for (size_t i = 0; i < expected.size(); i++) {
        const unsigned got = (unsigned)gmem[i / 16].range(8 * (i % 16) + 7, 8 * (i % 16));
        if (got != expected[i]) {
            fprintf(stderr, "tb_engine: DDR byte %zu is %u, differs from the reference %u\n", i, got, expected[i]);
            return 1;
        }
    }
    printf("tb_engine: %u commands, %zu DDR bytes bit-exact; %llu modelled cycles, %llu MACs\n", count,
           expected.size(), (unsigned long long)counters[TL_CNT_CYCLES], (unsigned long long)counters[TL_CNT_MACS]);
    return 0;
}
