// Build configuration of the CPU kernel: which SIMD variants this compiler builds, and
// the table of row kernels each variant provides (filled in kernel_body.inc).
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__x86_64__) || defined(_M_X64)
#define LLKD_X86_64 1
#endif
#if defined(LLKD_X86_64) && (defined(__GNUC__) || defined(__clang__))
#define LLKD_BUILD_AVX2 1
#include <immintrin.h>
#endif
// 128-bit GCC/Clang vector extensions: SSE2 on x86-64, NEON on aarch64, with the
// compiler's baseline target (no special flags).
#if (defined(__GNUC__) || defined(__clang__)) && (defined(LLKD_X86_64) || defined(__aarch64__))
#define LLKD_BUILD_VEC128 1
#if defined(LLKD_X86_64)
#define LLKD_VEC128_NAME "sse2"
#else
#define LLKD_VEC128_NAME "neon"
#endif
#endif

namespace llkd {
namespace detail {

// Rows per block inside a chunk: s, t and u of a block live in small stack buffers.
constexpr int64_t kBlock = 128;
// Padding so that SIMD code over a block may round its row count up.
constexpr int64_t kPad = 16;

// One compiled SIMD variant.
struct KernelTable {
    const char* name;
    // Per row r of z[nrows, C]: s[r] = sum_j exp(z_rj - m_r), t[r] = sum_j exp(.) (z_rj - m_r)
    // with m_r the row maximum. t[r] is NaN when the row holds NaN or infinite values
    // (or finite ones so large that z - m overflows: the caller rechecks).
    void (*rows_f32)(const float* z, int64_t nrows, int64_t C, double* s, double* t);
    void (*rows_f64)(const double* z, int64_t nrows, int64_t C, double* s, double* t);
    // u[i] = clip((log s[i] - t[i]/s[i]) / logC, 0, 1) for i < n_padded (a multiple of 8).
    void (*entropy)(const double* s, const double* t, int64_t n_padded, double logC, double* u);
    // The natural log used by `entropy`, on one value (so that log C matches exactly).
    double (*log1)(double x);
};

// The table of each compiled variant (simd_variants.cpp).
namespace isa_scalar {
extern const KernelTable kTable;
}
#if defined(LLKD_BUILD_VEC128)
namespace isa_vec128 {
extern const KernelTable kTable;
}
#endif
#if defined(LLKD_BUILD_AVX2)
namespace isa_avx2 {
extern const KernelTable kTable;
}
#endif

}  // namespace detail
}  // namespace llkd
