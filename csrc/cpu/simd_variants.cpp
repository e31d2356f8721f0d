// Compiles the kernel body (kernel_body.inc) once per SIMD variant, each inside its own
// namespace and under its own target options: "scalar" (plain C++, any compiler),
// "sse2"/"neon" (128-bit GCC/Clang vector extensions, the architecture's baseline) and,
// on x86-64 with GCC or Clang, "avx2+fma" (intrinsics, under `#pragma GCC target`), the
// technique of Highway's foreach_target.h: no -march flag is ever needed.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "config.hpp"

#if defined(LLKD_BUILD_AVX2)
#include <immintrin.h>
#endif

#define LLKD_BODY_SCALAR 1
#define LLKD_NS isa_scalar
#define LLKD_NAME "scalar"
#include "kernel_body.inc"
#undef LLKD_BODY_SCALAR
#undef LLKD_NS
#undef LLKD_NAME

#if defined(LLKD_BUILD_VEC128)
#define LLKD_BODY_VEC128 1
#define LLKD_NS isa_vec128
#define LLKD_NAME LLKD_VEC128_NAME
#include "kernel_body.inc"
#undef LLKD_BODY_VEC128
#undef LLKD_NS
#undef LLKD_NAME
#endif

#if defined(LLKD_BUILD_AVX2)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#define LLKD_BODY_AVX2 1
#define LLKD_NS isa_avx2
#define LLKD_NAME "avx2+fma"
#include "kernel_body.inc"
#undef LLKD_BODY_AVX2
#undef LLKD_NS
#undef LLKD_NAME
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // LLKD_BUILD_AVX2
