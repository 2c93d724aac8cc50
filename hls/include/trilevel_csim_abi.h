// Helpers of the C-sim `extern "C"` wrappers (never synthesized): convert the native arrays that
// ctypes passes to and from the kernels' element types (a plain copy in the fast C-sim).
#ifndef TRILEVEL_CSIM_ABI_H
#define TRILEVEL_CSIM_ABI_H

#include <stddef.h>
#include <stdint.h>

#include <vector>

#include "trilevel_types.h"

template <typename T, typename N>
static std::vector<T> tl_in(const N* src, int64_t n) {
    std::vector<T> v((size_t)n);
    if (src)
        for (int64_t i = 0; i < n; i++) v[(size_t)i] = (T)src[i];
    return v;
}

template <typename N, typename T>
static void tl_out(const std::vector<T>& v, N* dst) {
    for (size_t i = 0; i < v.size(); i++) dst[i] = (N)v[i];
}

#endif
