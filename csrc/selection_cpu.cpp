// LLKD batched sample selection on the CPU (spec section 3, semantics of
// src/llkd/selection/_reference.py).
//
// Layout of this file
// -------------------
// The SIMD kernels are written once (the "kernel body" at the end of this file) over a
// small set of primitives, and compiled several times, each time inside its own
// namespace and under its own target options: "scalar" (plain C++, any compiler),
// "sse2"/"neon" (128-bit GCC/Clang vector extensions, the architecture's baseline) and,
// on x86-64 with GCC or Clang, "avx2+fma" (intrinsics, compiled under
// `#pragma GCC target`). The file includes itself to do that (the technique of
// Highway's foreach_target.h), so no -march flag is ever needed: the best variant the
// CPU supports is chosen at run time (__builtin_cpu_supports; LLKD_SIMD=<name> picks
// a lower one).
//
// Numerics: float64 logits are computed in float64 (polynomial exp, fdlibm log), to
// ~1e-15 of the reference. float32 logits are computed in float32 within a row (z - m,
// exp), the row sums are formed in float32 over at most a few terms per lane and
// finished in float64, log/division in float64: u to ~1e-7 absolute.
//
// Work per step
// -------------
//  1. pass 1 (threads over fixed row chunks): one fused pass over each row of logits:
//     row max, then e_j = exp(z_j - m), s = sum e_j, t = sum e_j (z_j - m) with a
//     polynomial SIMD exp; per block of rows H = log s - t/s (SIMD log), u = H / log C
//     clipped to [0, 1]; per-class sums of c and u and counts. Labels, confidences
//     and finiteness of the logits are checked on the way.
//  2. serial: merge the chunk sums in chunk order, update the state (exactly the
//     reference's formulas, into new buffers), thresholds.
//  3. pass 2 (threads): mask and unnormalised weights r = c*u, chunk sums of r.
//  4. pass 3 (threads): weights = r / mean r (weighting "product" only).
// Chunks depend on (B, C) only and are reduced in order, so results are bitwise
// identical for every thread count.

#ifndef LLKD_SELECTION_KERNEL_BODY
// =====================================================================================
// Common part
// =====================================================================================
#include "selection_cpu.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <string>
#include <thread>
#include <vector>

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
    // Sum (mod 2^64) of the 64-bit words of p[0, n & ~7) plus the trailing bytes.
    uint64_t (*read_sum)(const unsigned char* p, size_t n);
};

}  // namespace detail
}  // namespace llkd

// ---- compile the kernel body once per SIMD variant ----------------------------------
#define LLKD_SELECTION_KERNEL_BODY 1

#define LLKD_BODY_SCALAR 1
#define LLKD_NS isa_scalar
#define LLKD_NAME "scalar"
#include "selection_cpu.cpp"
#undef LLKD_BODY_SCALAR
#undef LLKD_NS
#undef LLKD_NAME

#if defined(LLKD_BUILD_VEC128)
#define LLKD_BODY_VEC128 1
#define LLKD_NS isa_vec128
#define LLKD_NAME LLKD_VEC128_NAME
#include "selection_cpu.cpp"
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
#include "selection_cpu.cpp"
#undef LLKD_BODY_AVX2
#undef LLKD_NS
#undef LLKD_NAME
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // LLKD_BUILD_AVX2

#undef LLKD_SELECTION_KERNEL_BODY

namespace llkd {
namespace detail {

// ---- run-time dispatch ---------------------------------------------------------------
static bool cpu_has(const std::string& name) {
    if (name == "scalar") return true;
#if defined(LLKD_BUILD_VEC128)
    if (name == LLKD_VEC128_NAME) return true;  // part of the architecture's baseline
#endif
#if defined(LLKD_BUILD_AVX2)
    if (name == "avx2+fma") {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
#endif
    return false;
}

static const KernelTable* table_by_name(const std::string& name) {
    if (name == "scalar") return &isa_scalar::kTable;
#if defined(LLKD_BUILD_VEC128)
    if (name == LLKD_VEC128_NAME) return &isa_vec128::kTable;
#endif
#if defined(LLKD_BUILD_AVX2)
    if (name == "avx2+fma") return &isa_avx2::kTable;
#endif
    return nullptr;
}

static std::vector<std::string> compiled_names() {
    std::vector<std::string> v{"scalar"};
#if defined(LLKD_BUILD_VEC128)
    v.push_back(LLKD_VEC128_NAME);
#endif
#if defined(LLKD_BUILD_AVX2)
    v.push_back("avx2+fma");
#endif
    return v;
}

static const KernelTable* best_table() {
    const KernelTable* best = &isa_scalar::kTable;
    for (const auto& n : compiled_names())
        if (cpu_has(n)) best = table_by_name(n);
    // LLKD_SIMD=<name> may pick a lower variant (debugging, comparisons).
    if (const char* env = std::getenv("LLKD_SIMD")) {
        std::string want(env);
        if (want != "auto" && !want.empty() && cpu_has(want) && table_by_name(want))
            best = table_by_name(want);
    }
    return best;
}

static std::atomic<const KernelTable*>& active_table() {
    static std::atomic<const KernelTable*> t{best_table()};
    return t;
}

// ---- threads ---------------------------------------------------------------------------
// Runs fn(chunk, worker) for every chunk, on up to n_workers threads (the caller is
// worker 0), handing out chunks dynamically. Exceptions of any worker are rethrown
// here; if a thread cannot be started the others do its share.
template <class Fn>
static void run_chunks(int64_t n_chunks, int64_t n_workers, Fn&& fn) {
    n_workers = std::max<int64_t>(1, std::min(n_workers, n_chunks));
    if (n_workers == 1) {
        for (int64_t k = 0; k < n_chunks; ++k) fn(k, 0);
        return;
    }
    std::atomic<int64_t> next{0};
    std::vector<std::exception_ptr> errors(static_cast<size_t>(n_workers));
    auto body = [&](int64_t w) {
        try {
            for (;;) {
                const int64_t k = next.fetch_add(1, std::memory_order_relaxed);
                if (k >= n_chunks) break;
                fn(k, w);
            }
        } catch (...) {
            errors[static_cast<size_t>(w)] = std::current_exception();
            next.store(n_chunks, std::memory_order_relaxed);
        }
    };
    std::vector<std::thread> threads;
    threads.reserve(static_cast<size_t>(n_workers - 1));
    for (int64_t w = 1; w < n_workers; ++w) {
        try {
            threads.emplace_back(body, w);
        } catch (...) {
            break;  // could not start a thread: run with fewer
        }
    }
    body(0);
    for (auto& th : threads) th.join();
    for (auto& e : errors)
        if (e) std::rethrow_exception(e);
}

// ---- exact NumPy-compatible summation --------------------------------------------------
// numpy's pairwise summation of a contiguous float64 array (np.add.reduce), so that
// single-chunk batches reproduce the reference's np.mean bit for bit.
static double pairwise_sum(const double* a, int64_t n) {
    if (n < 8) {
        double res = 0.0;
        for (int64_t i = 0; i < n; ++i) res += a[i];
        return res;
    }
    if (n <= 128) {
        double r[8];
        for (int j = 0; j < 8; ++j) r[j] = a[j];
        int64_t i = 8;
        for (; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; ++j) r[j] += a[i + j];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; ++i) res += a[i];
        return res;
    }
    int64_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

// ---- errors --------------------------------------------------------------------------
enum ErrKind : int { ERR_NONE = -1, ERR_LABEL = 0, ERR_CONF = 1, ERR_LOGITS = 2, ERR_DRAWS = 3 };

struct ChunkInfo {
    double tot_c = 0.0, tot_u = 0.0;  // multi-chunk mode only
    double sum_r = 0.0;
    int64_t n_sel = 0;
    int64_t err_row = -1;
    int err_kind = ERR_NONE;
    int64_t err_label = 0;
    double err_value = 0.0;
};

static std::string fmt_double(double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
}

[[noreturn]] static void raise_chunk_error(const ChunkInfo& ci, int64_t C) {
    const std::string at = " at index " + std::to_string(ci.err_row);
    switch (ci.err_kind) {
        case ERR_LABEL:
            throw InputError("pseudo_labels must lie in [0, " + std::to_string(C - 1) + "], found " +
                             std::to_string(ci.err_label) + at);
        case ERR_CONF:
            if (std::isfinite(ci.err_value))
                throw InputError("teacher_confidence must lie in [0, 1], found " + fmt_double(ci.err_value) + at);
            throw InputError("teacher_confidence contains NaN or infinite values (" + fmt_double(ci.err_value) +
                             at + ")");
        case ERR_LOGITS:
            throw InputError("student_logits contains NaN or infinite values (first in row " +
                             std::to_string(ci.err_row) + ")");
        case ERR_DRAWS:
            throw InputError("random_draws contains NaN or infinite values (" + fmt_double(ci.err_value) + at + ")");
        default:
            throw InputError("invalid input");
    }
}

// After the SIMD pass: rows whose t is NaN hold NaN or infinite logits, or finite ones
// so large that z - max overflowed. Returns the first row with a non-finite logit (nb
// when none) and recomputes the other flagged rows exactly, in float64 with std::exp,
// as the reference does.
template <class T>
static int64_t check_rows(const T* z, int64_t nb, int64_t C, double* s, double* t) {
    bool any = false;
    for (int64_t i = 0; i < nb; ++i) any |= std::isnan(t[i]);
    if (!any) return nb;
    for (int64_t i = 0; i < nb; ++i) {
        if (!std::isnan(t[i])) continue;
        const T* p = z + i * C;
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < C; ++j) {
            if (!std::isfinite(p[j])) return i;
            m = std::max(m, static_cast<double>(p[j]));
        }
        double ss = 0.0, tt = 0.0;
        for (int64_t j = 0; j < C; ++j) {
            const double d = static_cast<double>(p[j]) - m;  // may overflow to -inf (|z| ~ 1e308)
            const double e = std::exp(d);
            if (e > 0.0) ss += e, tt += e * d;  // e == 0 contributes exactly 0 (not 0 * -inf)
        }
        s[i] = ss, t[i] = tt;
    }
    return nb;
}

// ---- the step ------------------------------------------------------------------------
struct Plan {
    int64_t chunk_rows = 1, n_chunks = 1, n_workers = 1;
};

static Plan make_plan(int64_t B, int64_t C, int64_t n_threads) {
    // Chunks depend on (B, C) only, never on the thread count (determinism).
    constexpr int64_t kMinChunkElems = int64_t(1) << 16;  // ~30-60 us of work per chunk
    constexpr int64_t kMaxChunks = 64;
    constexpr int64_t kMaxPartials = int64_t(1) << 20;    // chunk x class partial sums
    int64_t rows = std::max<int64_t>((B + kMaxChunks - 1) / kMaxChunks, (kMinChunkElems + C - 1) / C);
    const int64_t max_chunks_mem = std::max<int64_t>(1, kMaxPartials / C);
    rows = std::max<int64_t>(rows, (B + max_chunks_mem - 1) / max_chunks_mem);
    rows = std::max<int64_t>(1, std::min(rows, B));
    Plan p;
    p.chunk_rows = rows;
    p.n_chunks = (B + rows - 1) / rows;
    // A thread start costs tens of microseconds (about one chunk of work) on an idle
    // machine and up to a scheduler time slice on a busy one: use threads only from
    // four chunks per thread on.
    p.n_workers = std::max<int64_t>(1, std::min(n_threads, p.n_chunks / 4));
    return p;
}

static void check_params(const StepInput& in) {
    if (in.n_rows < 1) throw InputError("student_logits is empty: a selection step needs at least one sample");
    if (in.n_classes < 2) throw InputError("student_logits needs at least 2 classes (columns), got " +
                                           std::to_string(in.n_classes));
    if (!in.logits || !in.labels || !in.confidence || !in.global_levels || !in.class_levels)
        throw InputError("missing input array");
    if (in.mode < 0 || in.mode >= kNumModes)
        throw InputError("mode must be a code in 0.." + std::to_string(kNumModes - 1) + ", got " +
                         std::to_string(in.mode));
    if (in.weighting < 0 || in.weighting >= kNumWeightings)
        throw InputError("weighting must be a code in 0.." + std::to_string(kNumWeightings - 1) + ", got " +
                         std::to_string(in.weighting));
    if (!(in.momentum >= 0.0 && in.momentum < 1.0))
        throw InputError("momentum must be in [0, 1), got " + fmt_double(in.momentum));
    if (!(in.fixed_threshold >= 0.0 && in.fixed_threshold <= 1.0))
        throw InputError("fixed_threshold must be in [0, 1], got " + fmt_double(in.fixed_threshold));
    if (!(in.random_rate >= 0.0 && in.random_rate <= 1.0))
        throw InputError("random_rate must be in [0, 1], got " + fmt_double(in.random_rate));
    if (in.n_threads < 1) throw InputError("n_threads must be >= 1, got " + std::to_string(in.n_threads));
    if (in.n_updates < 0) throw InputError("n_updates must be >= 0, got " + std::to_string(in.n_updates));
    if (in.mode == kModeRandom && !in.random_draws)
        throw InputError("random_draws are required for mode 'random'");
    for (int i = 0; i < 2; ++i)
        if (!std::isfinite(in.global_levels[i]))
            throw InputError("global_levels contains NaN or infinite values: the selector state is corrupt");
    for (int64_t k = 0; k < 2 * in.n_classes; ++k)
        if (!std::isfinite(in.class_levels[k]))
            throw InputError("class_levels contains NaN or infinite values: the selector state is corrupt");
}

// ---- pass 1: class sums ----------------------------------------------------------------
struct ClassAcc {
    double c = 0.0, u = 0.0;
    int64_t n = 0, pad_ = 0;
};

// Adds rows [0, n) of a block to the class sums; returns the first row whose label or
// confidence is invalid (n when all are valid). With `interleave`, row i goes to
// copy i % 4 of acc (4 x C entries), which breaks the store-to-load dependency chain
// of consecutive rows of one class; otherwise the sums run in row order (as
// np.bincount does).
static int64_t accumulate_block(const int64_t* __restrict lab, const double* __restrict conf,
                                const double* __restrict u, int64_t n, int64_t C, ClassAcc* __restrict acc,
                                bool interleave, double* __restrict tc, double* __restrict tu) {
    const uint64_t uC = static_cast<uint64_t>(C);
    for (int64_t i = 0; i < n; ++i)
        if (static_cast<uint64_t>(lab[i]) >= uC || !(conf[i] >= 0.0 && conf[i] <= 1.0)) return i;
    if (interleave) {
        int64_t i = 0;
        for (; i + 4 <= n; i += 4)
            for (int q = 0; q < 4; ++q) {
                ClassAcc& a = acc[q * C + lab[i + q]];
                a.c += conf[i + q], a.u += u[i + q], a.n += 1;
                tc[q] += conf[i + q], tu[q] += u[i + q];
            }
        // Blocks hold a multiple of 4 rows except the chunk's last, so the copy
        // index stays the row index mod 4 within the chunk.
        for (int q = 0; i < n; ++i, ++q) {
            ClassAcc& a = acc[q * C + lab[i]];
            a.c += conf[i], a.u += u[i], a.n += 1;
            tc[q] += conf[i], tu[q] += u[i];
        }
    } else {
        for (int64_t i = 0; i < n; ++i) {
            ClassAcc& a = acc[lab[i]];
            a.c += conf[i], a.u += u[i], a.n += 1;
            tc[0] += conf[i], tu[0] += u[i];
        }
    }
    return n;
}

// ---- pass 2: selection --------------------------------------------------------------
struct SelectArgs {
    const int64_t* labels;
    const double* conf;
    const double* u;
    const double* draws;
    const double* tau_t;
    const double* tau_s;
    double fixed, rate;
    uint8_t* mask;
    double* weights;
};

// Branch-free selection of rows [r0, r1) for one mode; r = c*u (product weighting,
// normalised later) or 1 for selected rows, 0 otherwise.
template <int MODE, bool PRODUCT>
static void select_rows(const SelectArgs& a, int64_t r0, int64_t r1, ChunkInfo& ci) {
    const int64_t* __restrict lab = a.labels;
    const double* __restrict conf = a.conf;
    const double* __restrict unc = a.u;
    const double* __restrict draws = a.draws;
    const double* __restrict tt = a.tau_t;
    const double* __restrict ts = a.tau_s;
    uint8_t* __restrict mask = a.mask;
    double* __restrict w = a.weights;
    const double fixed = a.fixed, rate = a.rate;
    double sr[4] = {0.0, 0.0, 0.0, 0.0};
    int64_t ns = 0;
    auto one = [&](int64_t i) -> double {
        const double c = conf[i], u = unc[i];
        bool sel;
        if (MODE == kModeLLKD) {
            const int64_t y = lab[i];
            sel = (c >= tt[y]) & (u >= ts[y]);
        } else if (MODE == kModeTeacher) {
            sel = c >= tt[lab[i]];
        } else if (MODE == kModeStudent) {
            sel = u >= ts[lab[i]];
        } else if (MODE == kModeAll) {
            sel = true;
        } else if (MODE == kModeFixed) {
            sel = c >= fixed;
        } else {
            sel = draws[i] < rate;
        }
        mask[i] = static_cast<uint8_t>(sel);
        ns += sel;
        const double r = PRODUCT ? (c * u) * static_cast<double>(sel) : static_cast<double>(sel);
        w[i] = r;
        return r;
    };
    if (MODE == kModeRandom) {
        for (int64_t i = r0; i < r1; ++i)
            if (!std::isfinite(draws[i])) {
                ci.err_row = i, ci.err_kind = ERR_DRAWS, ci.err_value = draws[i];
                return;
            }
    }
    int64_t i = r0;
    for (; i + 4 <= r1; i += 4) {
        sr[0] += one(i);
        sr[1] += one(i + 1);
        sr[2] += one(i + 2);
        sr[3] += one(i + 3);
    }
    for (int q = 0; i < r1; ++i, ++q) sr[q] += one(i);
    ci.sum_r = (sr[0] + sr[1]) + (sr[2] + sr[3]);
    ci.n_sel = ns;
}

template <bool PRODUCT>
static void select_mode(const SelectArgs& a, int mode, int64_t r0, int64_t r1, ChunkInfo& ci) {
    switch (mode) {
        case kModeLLKD: return select_rows<kModeLLKD, PRODUCT>(a, r0, r1, ci);
        case kModeTeacher: return select_rows<kModeTeacher, PRODUCT>(a, r0, r1, ci);
        case kModeStudent: return select_rows<kModeStudent, PRODUCT>(a, r0, r1, ci);
        case kModeAll: return select_rows<kModeAll, PRODUCT>(a, r0, r1, ci);
        case kModeFixed: return select_rows<kModeFixed, PRODUCT>(a, r0, r1, ci);
        default: return select_rows<kModeRandom, PRODUCT>(a, r0, r1, ci);
    }
}

static void select_chunk(const SelectArgs& a, int mode, bool product, int64_t r0, int64_t r1, ChunkInfo& ci) {
    if (product)
        select_mode<true>(a, mode, r0, r1, ci);
    else
        select_mode<false>(a, mode, r0, r1, ci);
}

}  // namespace detail

void step(const StepInput& in, StepOutput& out) {
    using namespace detail;
    check_params(in);
    const KernelTable& K = *active_table().load(std::memory_order_relaxed);
    const int64_t B = in.n_rows, C = in.n_classes;
    const Plan plan = make_plan(B, C, in.n_threads);
    const bool single = plan.n_chunks == 1;
    // Multi-chunk: 4 interleaved accumulator copies for small C break the
    // store-to-load dependency chains of consecutive rows of the same class.
    const int64_t copies = single ? 1 : (C <= 64 ? 4 : 1);
    const double logC = K.log1(static_cast<double>(C));

    std::vector<ClassAcc> part(static_cast<size_t>(plan.n_chunks * C));
    std::vector<ChunkInfo> info(static_cast<size_t>(plan.n_chunks));
    std::vector<std::vector<ClassAcc>> scratch(static_cast<size_t>(plan.n_workers));
    if (copies > 1)
        for (auto& v : scratch) v.resize(static_cast<size_t>(copies * C));

    // ---------------- pass 1: uncertainty and class sums ----------------
    auto pass1 = [&](int64_t k, int64_t w) {
        const int64_t r0 = k * plan.chunk_rows, r1 = std::min(B, r0 + plan.chunk_rows);
        ChunkInfo& ci = info[static_cast<size_t>(k)];
        ClassAcc* acc = copies > 1 ? scratch[static_cast<size_t>(w)].data() : part.data() + k * C;
        if (copies > 1) std::fill(acc, acc + copies * C, ClassAcc{});
        double tc[4] = {0, 0, 0, 0}, tu[4] = {0, 0, 0, 0};
        alignas(64) double sbuf[kBlock + kPad], tbuf[kBlock + kPad], ubuf[kBlock + kPad];
        for (int64_t b0 = r0; b0 < r1; b0 += kBlock) {
            const int64_t nb = std::min(kBlock, r1 - b0);
            int64_t stop = nb;  // rows of this block that are valid
            if (in.dtype == DType::F32) {
                const float* z = static_cast<const float*>(in.logits) + b0 * C;
                K.rows_f32(z, nb, C, sbuf, tbuf);
                stop = check_rows(z, nb, C, sbuf, tbuf);
            } else {
                const double* z = static_cast<const double*>(in.logits) + b0 * C;
                K.rows_f64(z, nb, C, sbuf, tbuf);
                stop = check_rows(z, nb, C, sbuf, tbuf);
            }
            if (stop < nb) ci.err_row = b0 + stop, ci.err_kind = ERR_LOGITS;
            const int64_t npad = (nb + 7) & ~int64_t(7);
            for (int64_t i = stop; i < npad; ++i) sbuf[i] = 1.0, tbuf[i] = 0.0;  // keep the log finite
            K.entropy(sbuf, tbuf, npad, logC, ubuf);
            std::memcpy(out.uncertainty + b0, ubuf, static_cast<size_t>(nb) * sizeof(double));
            const int64_t bad = accumulate_block(in.labels + b0, in.confidence + b0, ubuf, stop, C, acc,
                                                 copies > 1, tc, tu);
            if (bad < stop) {
                const int64_t y = in.labels[b0 + bad];
                ci.err_row = b0 + bad;
                if (static_cast<uint64_t>(y) >= static_cast<uint64_t>(C))
                    ci.err_kind = ERR_LABEL, ci.err_label = y;
                else
                    ci.err_kind = ERR_CONF, ci.err_value = in.confidence[b0 + bad];
            }
            if (ci.err_kind != ERR_NONE) return;
        }
        if (copies > 1) {
            ClassAcc* dst = part.data() + k * C;
            for (int64_t q = 0; q < copies; ++q)
                for (int64_t y = 0; y < C; ++y) {
                    dst[y].c += acc[q * C + y].c;
                    dst[y].u += acc[q * C + y].u;
                    dst[y].n += acc[q * C + y].n;
                }
        }
        ci.tot_c = ((tc[0] + tc[1]) + (tc[2] + tc[3]));
        ci.tot_u = ((tu[0] + tu[1]) + (tu[2] + tu[3]));
    };
    run_chunks(plan.n_chunks, plan.n_workers, pass1);
    for (const ChunkInfo& ci : info)
        if (ci.err_kind != ERR_NONE) raise_chunk_error(ci, C);

    // ---------------- state update and thresholds (serial, float64) ----------------
    const double* g_old = in.global_levels;
    const double* m_old = in.class_levels;
    double* g = out.new_global;
    double* m = out.new_class;
    g[0] = g_old[0], g[1] = g_old[1];
    std::copy(m_old, m_old + 2 * C, m);
    if (in.update) {
        // Merge the chunk sums in chunk order.
        std::vector<double> sum_c(static_cast<size_t>(C)), sum_u(static_cast<size_t>(C));
        std::vector<int64_t> cnt(static_cast<size_t>(C));
        for (int64_t y = 0; y < C; ++y) sum_c[y] = part[y].c, sum_u[y] = part[y].u, cnt[y] = part[y].n;
        for (int64_t k = 1; k < plan.n_chunks; ++k)
            for (int64_t y = 0; y < C; ++y) {
                sum_c[y] += part[k * C + y].c;
                sum_u[y] += part[k * C + y].u;
                cnt[y] += part[k * C + y].n;
            }
        double tot_c, tot_u;
        if (single) {
            // Reproduce np.mean exactly (pairwise summation).
            tot_c = pairwise_sum(in.confidence, B);
            tot_u = pairwise_sum(out.uncertainty, B);
        } else {
            tot_c = info[0].tot_c, tot_u = info[0].tot_u;
            for (int64_t k = 1; k < plan.n_chunks; ++k) tot_c += info[k].tot_c, tot_u += info[k].tot_u;
        }
        const double batch_c = tot_c / static_cast<double>(B);
        const double batch_u = tot_u / static_cast<double>(B);
        const double lam = in.momentum;
        if (in.n_updates == 0) {
            g[0] = batch_c, g[1] = batch_u;
            for (int64_t y = 0; y < C; ++y) {
                const bool present = cnt[y] > 0;
                m[y] = present ? sum_c[y] / static_cast<double>(cnt[y]) : batch_c;
                m[C + y] = present ? sum_u[y] / static_cast<double>(cnt[y]) : batch_u;
            }
        } else {
            g[0] = lam * g_old[0] + (1.0 - lam) * batch_c;
            g[1] = lam * g_old[1] + (1.0 - lam) * batch_u;
            for (int64_t y = 0; y < C; ++y) {
                if (cnt[y] == 0) continue;
                const double n = static_cast<double>(cnt[y]);
                m[y] = lam * m_old[y] + (1.0 - lam) * (sum_c[y] / n);
                m[C + y] = lam * m_old[C + y] + (1.0 - lam) * (sum_u[y] / n);
            }
        }
        out.new_n_updates = in.n_updates + 1;
    } else {
        out.new_n_updates = in.n_updates;
    }
    for (int row = 0; row < 2; ++row) {
        const double* lev = m + row * C;
        double* tau = row == 0 ? out.tau_teacher : out.tau_student;
        const double top = *std::max_element(lev, lev + C);
        for (int64_t y = 0; y < C; ++y) tau[y] = top > 0.0 ? (g[row] * lev[y]) / top : 0.0;
    }

    // ---------------- pass 2: mask and r = c*u ----------------
    const bool product = in.weighting == kWeightProduct && in.mode != kModeAll;
    SelectArgs sa;
    sa.labels = in.labels, sa.conf = in.confidence, sa.u = out.uncertainty, sa.draws = in.random_draws;
    // Tests pass at value >= tau - kTieTolerance (selection_contract.hpp).
    std::vector<double> cut_t(static_cast<size_t>(C)), cut_s(static_cast<size_t>(C));
    for (int64_t y = 0; y < C; ++y)
        cut_t[y] = out.tau_teacher[y] - kTieTolerance, cut_s[y] = out.tau_student[y] - kTieTolerance;
    sa.tau_t = cut_t.data(), sa.tau_s = cut_s.data();
    sa.fixed = in.fixed_threshold, sa.rate = in.random_rate;
    sa.mask = out.mask, sa.weights = out.weights;
    auto pass2 = [&](int64_t k, int64_t) {
        const int64_t r0 = k * plan.chunk_rows, r1 = std::min(B, r0 + plan.chunk_rows);
        select_chunk(sa, in.mode, product, r0, r1, info[static_cast<size_t>(k)]);
    };
    const int64_t light_workers = std::min<int64_t>(plan.n_workers, std::max<int64_t>(1, B / 65536));
    run_chunks(plan.n_chunks, light_workers, pass2);
    for (const ChunkInfo& ci : info)
        if (ci.err_kind != ERR_NONE) raise_chunk_error(ci, C);

    // ---------------- pass 3: normalise the weights ----------------
    if (product) {
        double sum_r = info[0].sum_r;
        int64_t n_sel = info[0].n_sel;
        for (int64_t k = 1; k < plan.n_chunks; ++k) sum_r += info[k].sum_r, n_sel += info[k].n_sel;
        if (n_sel > 0) {
            const double mean_r = sum_r / static_cast<double>(n_sel);
            auto pass3 = [&](int64_t k, int64_t) {
                const int64_t r0 = k * plan.chunk_rows, r1 = std::min(B, r0 + plan.chunk_rows);
                if (mean_r > 0.0) {
                    for (int64_t i = r0; i < r1; ++i) out.weights[i] = out.weights[i] / mean_r;
                } else {  // every selected sample has c*u == 0: they keep weight 1
                    for (int64_t i = r0; i < r1; ++i) out.weights[i] = out.mask[i] ? 1.0 : 0.0;
                }
            };
            run_chunks(plan.n_chunks, light_workers, pass3);
        }
    }
}

uint64_t stream_read(const void* data, size_t n_bytes, int64_t n_threads) {
    using namespace detail;
    const KernelTable& K = *active_table().load(std::memory_order_relaxed);
    const auto* p = static_cast<const unsigned char*>(data);
    const size_t chunk = size_t(1) << 20;
    const int64_t n_chunks = static_cast<int64_t>((n_bytes + chunk - 1) / chunk);
    if (n_chunks == 0) return 0;
    std::vector<uint64_t> part(static_cast<size_t>(n_chunks), 0);
    run_chunks(n_chunks, std::max<int64_t>(1, n_threads), [&](int64_t k, int64_t) {
        const size_t off = static_cast<size_t>(k) * chunk;
        part[static_cast<size_t>(k)] = K.read_sum(p + off, std::min(chunk, n_bytes - off));
    });
    uint64_t s = 0;
    for (uint64_t v : part) s += v;
    return s;
}

std::vector<std::string> simd_compiled() { return detail::compiled_names(); }

std::vector<std::string> simd_supported() {
    std::vector<std::string> v;
    for (const auto& n : detail::compiled_names())
        if (detail::cpu_has(n)) v.push_back(n);
    return v;
}

std::string simd_active() { return detail::active_table().load()->name; }

bool simd_select(const std::string& name) {
    if (name == "auto") {
        detail::active_table().store(detail::best_table());
        return true;
    }
    const detail::KernelTable* t = detail::table_by_name(name);
    if (!t || !detail::cpu_has(name)) return false;
    detail::active_table().store(t);
    return true;
}

std::map<std::string, std::string> build_facts() {
    std::map<std::string, std::string> f;
#if defined(__clang__)
    f["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    f["compiler"] = std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
    f["compiler"] = "msvc " + std::to_string(_MSC_VER);
#else
    f["compiler"] = "unknown";
#endif
    f["cxx_standard"] = std::to_string(__cplusplus);
#if defined(LLKD_X86_64)
    f["arch"] = "x86_64";
#elif defined(__aarch64__)
    f["arch"] = "aarch64";
#else
    f["arch"] = "other";
#endif
#if defined(NDEBUG)
    f["assertions"] = "off";
#else
    f["assertions"] = "on";
#endif
#if defined(_OPENMP)
    f["openmp"] = "yes";
#else
    f["openmp"] = "no";
#endif
    f["threading"] = "std::thread, spawned per call over fixed row chunks (deterministic for any thread count)";
    f["exp_log"] = "polynomial SIMD exp (float32 in float32, float64 in float64), fdlibm-style float64 log";
    return f;
}

}  // namespace llkd

#else  // LLKD_SELECTION_KERNEL_BODY
// =====================================================================================
// Kernel body: compiled once per SIMD variant, inside namespace LLKD_NS.
// =====================================================================================
namespace llkd {
namespace detail {
namespace LLKD_NS {

#if defined(LLKD_BODY_SCALAR)
// ---- portable baseline: one lane ----------------------------------------------------
using vf = float;
using vd = double;
constexpr int64_t NF = 1, ND = 1;

static inline uint32_t bits_f(float x) { uint32_t b; std::memcpy(&b, &x, 4); return b; }
static inline float from_bits_f(uint32_t b) { float x; std::memcpy(&x, &b, 4); return x; }
static inline uint64_t bits_d(double x) { uint64_t b; std::memcpy(&b, &x, 8); return b; }
static inline double from_bits_d(uint64_t b) { double x; std::memcpy(&x, &b, 8); return x; }

static inline vf f_set1(float x) { return x; }
static inline vf f_load(const float* p) { return *p; }
static inline vf f_load_tail(const float* p, int64_t, float) { return *p; }
static inline vf f_add(vf a, vf b) { return a + b; }
static inline vf f_sub(vf a, vf b) { return a - b; }
static inline vf f_mul(vf a, vf b) { return a * b; }
static inline vf f_fmadd(vf a, vf b, vf c) { return a * b + c; }
static inline vf f_fnmadd(vf a, vf b, vf c) { return c - a * b; }
static inline vf f_max(vf a, vf b) { return a > b ? a : b; }  // b when either is NaN
static inline float f_hmax(vf v) { return v; }
static inline vf f_select_ge(vf y, vf x, float thr) { return x >= thr ? y : 0.0f; }
// 2^n from t = 1.5 * 2^23 + 127 + n: the low bits of t hold n + 127.
static inline vf f_pow2_bits(vf t) { return from_bits_f(bits_f(t) << 23); }
static inline void f_widen_add(vd& acc, vf v) { acc += static_cast<double>(v); }
static inline void f_load_deint2(const float* p, vf& a, vf& b) { a = p[0], b = p[1]; }
static inline vf f_neg_abs(vf x) { return -std::fabs(x); }
static inline void f_store_c2(vf e, vf d, double* s, double* t) {
    s[0] = 1.0 + static_cast<double>(e);
    t[0] = static_cast<double>(e) * static_cast<double>(d);
}

static inline vd d_set1(double x) { return x; }
static inline vd d_load(const double* p) { return *p; }
static inline vd d_load_tail(const double* p, int64_t, double) { return *p; }
static inline void d_store(double* p, vd v) { *p = v; }
static inline vd d_add(vd a, vd b) { return a + b; }
static inline vd d_sub(vd a, vd b) { return a - b; }
static inline vd d_mul(vd a, vd b) { return a * b; }
static inline vd d_div(vd a, vd b) { return a / b; }
static inline vd d_fmadd(vd a, vd b, vd c) { return a * b + c; }
static inline vd d_fnmadd(vd a, vd b, vd c) { return c - a * b; }
static inline vd d_max(vd a, vd b) { return a > b ? a : b; }
static inline vd d_min(vd a, vd b) { return a < b ? a : b; }
static inline double d_hmax(vd v) { return v; }
static inline double d_hsum(vd v) { return v; }
static inline vd d_select_ge(vd y, vd x, double thr) { return x >= thr ? y : 0.0; }
static inline vd d_pow2_bits(vd t) { return from_bits_d(bits_d(t) << 52); }
// x = 2^k (1 + f) with 1 + f in [sqrt(2)/2, sqrt(2)); x positive and normal.
static inline void d_log_split(vd x, vd& f, vd& k) {
    uint64_t u = bits_d(x) + (0x3ff0000000000000ULL - 0x3fe6a09e667f3bcdULL);
    const int64_t e = static_cast<int64_t>(u >> 52) - 0x3ff;
    u = (u & 0x000fffffffffffffULL) + 0x3fe6a09e667f3bcdULL;
    f = from_bits_d(u) - 1.0;
    k = static_cast<double>(e);
}
static inline void d_load_deint2(const double* p, vd& a, vd& b) { a = p[0], b = p[1]; }
static inline vd d_neg_abs(vd x) { return -std::fabs(x); }
static inline void d_store_c2(vd e, vd d, double* s, double* t) {
    s[0] = 1.0 + e;
    t[0] = e * d;
}

static uint64_t read_sum(const unsigned char* p, size_t n) {
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        uint64_t w[4];
        std::memcpy(w, p + i, 32);
        a0 += w[0], a1 += w[1], a2 += w[2], a3 += w[3];
    }
    uint64_t s = a0 + a1 + a2 + a3;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        std::memcpy(&w, p + i, 8);
        s += w;
    }
    for (; i < n; ++i) s += p[i];
    return s;
}

#elif defined(LLKD_BODY_VEC128)
// ---- 128-bit vector extensions: 4 floats / 2 doubles (SSE2 / NEON) -----------------
typedef float vf __attribute__((vector_size(16)));
typedef double vd __attribute__((vector_size(16)));
typedef int32_t vfi __attribute__((vector_size(16)));
typedef int64_t vdi __attribute__((vector_size(16)));
typedef uint64_t vdu __attribute__((vector_size(16)));
constexpr int64_t NF = 4, ND = 2;

static inline vf sel_f(vfi m, vf a, vf b) { return (vf)(((vfi)a & m) | ((vfi)b & ~m)); }  // m ? a : b
static inline vd sel_d(vdi m, vd a, vd b) { return (vd)(((vdi)a & m) | ((vdi)b & ~m)); }

static inline vf f_set1(float x) { return vf{x, x, x, x}; }
static inline vf f_load(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
static inline vf f_load_tail(const float* p, int64_t n, float fill) {
    vf v = f_set1(fill);
    for (int64_t i = 0; i < n; ++i) v[i] = p[i];
    return v;
}
static inline vf f_add(vf a, vf b) { return a + b; }
static inline vf f_sub(vf a, vf b) { return a - b; }
static inline vf f_mul(vf a, vf b) { return a * b; }
static inline vf f_fmadd(vf a, vf b, vf c) { return a * b + c; }
static inline vf f_fnmadd(vf a, vf b, vf c) { return c - a * b; }
static inline vf f_max(vf a, vf b) { return sel_f(a > b, a, b); }  // b when either is NaN
static inline float f_hmax(vf v) {
    const float a = v[0] > v[1] ? v[0] : v[1], b = v[2] > v[3] ? v[2] : v[3];
    return a > b ? a : b;
}
static inline vf f_select_ge(vf y, vf x, float thr) { return (vf)((vfi)y & (x >= f_set1(thr))); }
static inline vf f_pow2_bits(vf t) { return (vf)((vfi)t << 23); }
static inline void f_widen_add(vd& acc, vf v) { acc += vd{v[0], v[1]} + vd{v[2], v[3]}; }
static inline void f_load_deint2(const float* p, vf& a, vf& b) {
    a = vf{p[0], p[2], p[4], p[6]};
    b = vf{p[1], p[3], p[5], p[7]};
}
static inline vf f_neg_abs(vf x) { return (vf)((vfi)x | vfi{INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN}); }
static inline void f_store_c2(vf e, vf d, double* s, double* t) {
    for (int i = 0; i < 4; ++i) {
        s[i] = 1.0 + static_cast<double>(e[i]);
        t[i] = static_cast<double>(e[i]) * static_cast<double>(d[i]);
    }
}
// small-C row path
using ftail = vfi;
static inline ftail f_tail(int64_t n) { return vfi{0, 1, 2, 3} < vfi{int(n), int(n), int(n), int(n)}; }
static inline vf f_load_over(const float* p, ftail mk, vf fill) { return sel_f(mk, f_load(p), fill); }
static inline vf f_load_masked(const float* p, ftail mk, vf fill) {
    vf v = fill;
    for (int i = 0; i < 4; ++i)
        if (mk[i]) v[i] = p[i];
    return v;
}
static inline vf f_hmax_bcast(vf v) { return f_set1(f_hmax(v)); }
static inline void f_reduce2_store(vf sf, vf tf, double* s, double* t) {
    s[0] = static_cast<double>(sf[0] + sf[1]) + static_cast<double>(sf[2] + sf[3]);
    t[0] = static_cast<double>(tf[0] + tf[1]) + static_cast<double>(tf[2] + tf[3]);
}

static inline vd d_set1(double x) { return vd{x, x}; }
static inline vd d_load(const double* p) { vd v; std::memcpy(&v, p, sizeof v); return v; }
static inline vd d_load_tail(const double* p, int64_t, double fill) { return vd{p[0], fill}; }  // n == 1
static inline void d_store(double* p, vd v) { std::memcpy(p, &v, sizeof v); }
static inline vd d_add(vd a, vd b) { return a + b; }
static inline vd d_sub(vd a, vd b) { return a - b; }
static inline vd d_mul(vd a, vd b) { return a * b; }
static inline vd d_div(vd a, vd b) { return a / b; }
static inline vd d_fmadd(vd a, vd b, vd c) { return a * b + c; }
static inline vd d_fnmadd(vd a, vd b, vd c) { return c - a * b; }
static inline vd d_max(vd a, vd b) { return sel_d(a > b, a, b); }
static inline vd d_min(vd a, vd b) { return sel_d(a < b, a, b); }
static inline double d_hmax(vd v) { return v[0] > v[1] ? v[0] : v[1]; }
static inline double d_hsum(vd v) { return v[0] + v[1]; }
static inline vd d_select_ge(vd y, vd x, double thr) { return (vd)((vdi)y & (x >= d_set1(thr))); }
static inline vd d_pow2_bits(vd t) { return (vd)((vdi)t << 52); }
static inline void d_log_split(vd x, vd& f, vd& k) {
    const int64_t off = static_cast<int64_t>(0x3ff0000000000000ULL - 0x3fe6a09e667f3bcdULL);
    vdi u = (vdi)x + vdi{off, off};
    const vdi e = (vdi)((vdu)u >> 52) - vdi{0x3ff, 0x3ff};
    u = (u & vdi{0x000fffffffffffffLL, 0x000fffffffffffffLL}) + vdi{0x3fe6a09e667f3bcdLL, 0x3fe6a09e667f3bcdLL};
    f = (vd)u - d_set1(1.0);
    const vd magic = d_set1(6755399441055744.0);  // small int64 -> double via 1.5 * 2^52
    k = (vd)(e + (vdi)magic) - magic;
}
static inline void d_load_deint2(const double* p, vd& a, vd& b) {
    a = vd{p[0], p[2]};
    b = vd{p[1], p[3]};
}
static inline vd d_neg_abs(vd x) { return (vd)((vdi)x | vdi{INT64_MIN, INT64_MIN}); }
static inline void d_store_c2(vd e, vd d, double* s, double* t) {
    d_store(s, d_set1(1.0) + e);
    d_store(t, e * d);
}

static uint64_t read_sum(const unsigned char* p, size_t n) {
    typedef vdu vu;
    vu a0 = {0, 0}, a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        vu w[4];
        std::memcpy(w, p + i, 64);
        a0 += w[0], a1 += w[1], a2 += w[2], a3 += w[3];
    }
    const vu a = (a0 + a1) + (a2 + a3);
    uint64_t s = a[0] + a[1];
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        std::memcpy(&v, p + i, 8);
        s += v;
    }
    for (; i < n; ++i) s += p[i];
    return s;
}

#elif defined(LLKD_BODY_AVX2)
// ---- AVX2 + FMA: 8 floats / 4 doubles ------------------------------------------------
using vf = __m256;
using vd = __m256d;
constexpr int64_t NF = 8, ND = 4;

static inline vf f_set1(float x) { return _mm256_set1_ps(x); }
static inline vf f_load(const float* p) { return _mm256_loadu_ps(p); }
static inline __m256i tail_mask32(int64_t n) {  // first n (1..7) lanes set
    alignas(32) static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + 8 - n));
}
static inline vf f_load_tail(const float* p, int64_t n, float fill) {
    const __m256i mk = tail_mask32(n);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, mk), _mm256_castsi256_ps(mk));
}
static inline vf f_add(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf f_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf f_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf f_fmadd(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline vf f_fnmadd(vf a, vf b, vf c) { return _mm256_fnmadd_ps(a, b, c); }
static inline vf f_max(vf a, vf b) { return _mm256_max_ps(a, b); }  // b when either is NaN
static inline float f_hmax(vf v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}
static inline vf f_select_ge(vf y, vf x, float thr) {
    return _mm256_and_ps(y, _mm256_cmp_ps(x, _mm256_set1_ps(thr), _CMP_GE_OQ));
}
static inline vf f_pow2_bits(vf t) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t), 23)); }
// Small-C row path: whole rows in registers.
using ftail = __m256i;
static inline ftail f_tail(int64_t n) {  // first n (1..8) lanes
    alignas(32) static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + 8 - n));
}
// Lanes outside the mask get `fill`; load_over reads past the row (caller guarantees
// the memory exists), load_masked does not touch it.
static inline vf f_load_over(const float* p, ftail mk, vf fill) {
    return _mm256_blendv_ps(fill, _mm256_loadu_ps(p), _mm256_castsi256_ps(mk));
}
static inline vf f_load_masked(const float* p, ftail mk, vf fill) {
    return _mm256_blendv_ps(fill, _mm256_maskload_ps(p, mk), _mm256_castsi256_ps(mk));
}
// out[0..7] = (double)a + (double)b, lane by lane.
static inline void f_store_wide_sum(vf a, vf b, double* out) {
    _mm256_storeu_pd(out, _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(a)),
                                        _mm256_cvtps_pd(_mm256_castps256_ps128(b))));
    _mm256_storeu_pd(out + 4, _mm256_add_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)),
                                            _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1))));
}
static inline vf f_hmax_bcast(vf v) {
    vf m = _mm256_max_ps(v, _mm256_permute2f128_ps(v, v, 1));
    m = _mm256_max_ps(m, _mm256_permute_ps(m, 0x4E));
    return _mm256_max_ps(m, _mm256_permute_ps(m, 0xB1));
}
// s[0] = sum of the lanes of sf, t[0] = of tf; pairs of lanes are added in float32,
// the rest in float64.
static inline void f_reduce2_store(vf sf, vf tf, double* s, double* t) {
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(sf), _mm256_extractf128_ps(sf, 1));
    const __m128 t4 = _mm_add_ps(_mm256_castps256_ps128(tf), _mm256_extractf128_ps(tf, 1));
    const __m256d h = _mm256_hadd_pd(_mm256_cvtps_pd(s4), _mm256_cvtps_pd(t4));
    const __m128d r = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
    _mm_storel_pd(s, r);
    _mm_storeh_pd(t, r);
}
static inline void f_widen_add(vd& acc, vf v) {
    acc = _mm256_add_pd(acc, _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                                           _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
}
static inline void f_load_deint2(const float* p, vf& a, vf& b) {
    const vf lo = _mm256_loadu_ps(p), hi = _mm256_loadu_ps(p + 8);
    const vf ea = _mm256_shuffle_ps(lo, hi, 0x88), eb = _mm256_shuffle_ps(lo, hi, 0xDD);
    a = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ea), 0xD8));
    b = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(eb), 0xD8));
}
static inline vf f_neg_abs(vf x) { return _mm256_or_ps(x, _mm256_set1_ps(-0.0f)); }
static inline void f_store_c2(vf e, vf d, double* s, double* t) {
    const vd one = _mm256_set1_pd(1.0);
    const vd e0 = _mm256_cvtps_pd(_mm256_castps256_ps128(e)), e1 = _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1));
    const vd d0 = _mm256_cvtps_pd(_mm256_castps256_ps128(d)), d1 = _mm256_cvtps_pd(_mm256_extractf128_ps(d, 1));
    _mm256_storeu_pd(s, _mm256_add_pd(one, e0));
    _mm256_storeu_pd(s + 4, _mm256_add_pd(one, e1));
    _mm256_storeu_pd(t, _mm256_mul_pd(e0, d0));
    _mm256_storeu_pd(t + 4, _mm256_mul_pd(e1, d1));
}

static inline vd d_set1(double x) { return _mm256_set1_pd(x); }
static inline vd d_load(const double* p) { return _mm256_loadu_pd(p); }
static inline __m256i tail_mask64(int64_t n) {  // first n (1..3) lanes set
    alignas(32) static const int64_t m[8] = {-1, -1, -1, -1, 0, 0, 0, 0};
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + 4 - n));
}
static inline vd d_load_tail(const double* p, int64_t n, double fill) {
    const __m256i mk = tail_mask64(n);
    return _mm256_blendv_pd(_mm256_set1_pd(fill), _mm256_maskload_pd(p, mk), _mm256_castsi256_pd(mk));
}
static inline void d_store(double* p, vd v) { _mm256_storeu_pd(p, v); }
static inline vd d_add(vd a, vd b) { return _mm256_add_pd(a, b); }
static inline vd d_sub(vd a, vd b) { return _mm256_sub_pd(a, b); }
static inline vd d_mul(vd a, vd b) { return _mm256_mul_pd(a, b); }
static inline vd d_div(vd a, vd b) { return _mm256_div_pd(a, b); }
static inline vd d_fmadd(vd a, vd b, vd c) { return _mm256_fmadd_pd(a, b, c); }
static inline vd d_fnmadd(vd a, vd b, vd c) { return _mm256_fnmadd_pd(a, b, c); }
static inline vd d_max(vd a, vd b) { return _mm256_max_pd(a, b); }
static inline vd d_min(vd a, vd b) { return _mm256_min_pd(a, b); }
static inline double d_hmax(vd v) {
    __m128d m = _mm_max_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    m = _mm_max_sd(m, _mm_unpackhi_pd(m, m));
    return _mm_cvtsd_f64(m);
}
static inline double d_hsum(vd v) {
    __m128d m = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    m = _mm_add_sd(m, _mm_unpackhi_pd(m, m));
    return _mm_cvtsd_f64(m);
}
static inline vd d_select_ge(vd y, vd x, double thr) {
    return _mm256_and_pd(y, _mm256_cmp_pd(x, _mm256_set1_pd(thr), _CMP_GE_OQ));
}
static inline vd d_pow2_bits(vd t) { return _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_castpd_si256(t), 52)); }
static inline void d_log_split(vd x, vd& f, vd& k) {
    __m256i u = _mm256_add_epi64(_mm256_castpd_si256(x),
                                 _mm256_set1_epi64x(static_cast<int64_t>(0x3ff0000000000000ULL - 0x3fe6a09e667f3bcdULL)));
    const __m256i e = _mm256_sub_epi64(_mm256_srli_epi64(u, 52), _mm256_set1_epi64x(0x3ff));
    u = _mm256_add_epi64(_mm256_and_si256(u, _mm256_set1_epi64x(0x000fffffffffffffLL)),
                         _mm256_set1_epi64x(0x3fe6a09e667f3bcdLL));
    f = _mm256_sub_pd(_mm256_castsi256_pd(u), _mm256_set1_pd(1.0));
    // small int64 -> double: add to the bits of 1.5 * 2^52 and subtract it again
    const vd magic = _mm256_set1_pd(6755399441055744.0);
    k = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_add_epi64(e, _mm256_castpd_si256(magic))), magic);
}
static inline void d_load_deint2(const double* p, vd& a, vd& b) {
    const vd lo = _mm256_loadu_pd(p), hi = _mm256_loadu_pd(p + 4);
    a = _mm256_permute4x64_pd(_mm256_unpacklo_pd(lo, hi), 0xD8);
    b = _mm256_permute4x64_pd(_mm256_unpackhi_pd(lo, hi), 0xD8);
}
static inline vd d_neg_abs(vd x) { return _mm256_or_pd(x, _mm256_set1_pd(-0.0)); }
static inline void d_store_c2(vd e, vd d, double* s, double* t) {
    _mm256_storeu_pd(s, _mm256_add_pd(_mm256_set1_pd(1.0), e));
    _mm256_storeu_pd(t, _mm256_mul_pd(e, d));
}

static uint64_t read_sum(const unsigned char* p, size_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
        a2 = _mm256_add_epi64(a2, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
        a3 = _mm256_add_epi64(a3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
    }
    alignas(32) uint64_t w[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(w),
                       _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
    uint64_t s = w[0] + w[1] + w[2] + w[3];
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        std::memcpy(&v, p + i, 8);
        s += v;
    }
    for (; i < n; ++i) s += p[i];
    return s;
}
#endif

// ---- math, written once over the primitives above ----------------------------------
// exp for x <= 0 (Cephes expf polynomial, Cody-Waite reduction): 1-2 ulp, exactly 1 at
// 0, exactly 0 below -87.33654 (no subnormal results). x = NaN or -inf gives 0 too:
// callers detect those through e * x, which is NaN then.
static inline vf exp_f(vf x) {
    const float magic = 12582912.0f + 127.0f;  // 1.5 * 2^23 + bias: rounds, and carries the exponent bias
    const vf t = f_fmadd(x, f_set1(1.44269504088896341f), f_set1(magic));
    const vf n = f_sub(t, f_set1(magic));
    vf r = f_fnmadd(n, f_set1(0.693359375f), x);
    r = f_fnmadd(n, f_set1(-2.12194440e-4f), r);
    vf p = f_set1(1.9875691500e-4f);
    p = f_fmadd(p, r, f_set1(1.3981999507e-3f));
    p = f_fmadd(p, r, f_set1(8.3334519073e-3f));
    p = f_fmadd(p, r, f_set1(4.1665795894e-2f));
    p = f_fmadd(p, r, f_set1(1.6666665459e-1f));
    p = f_fmadd(p, r, f_set1(5.0000001201e-1f));
    const vf y = f_fmadd(p, f_mul(r, r), f_add(r, f_set1(1.0f)));
    return f_select_ge(f_mul(y, f_pow2_bits(t)), x, -87.33654f);
}

// exp for x <= 0 in float64: Taylor polynomial of degree 13 on |r| <= ln2/2 (< 1 ulp
// truncation), Cody-Waite reduction; exactly 0 below -708.39 (no subnormals).
static inline vd exp_d(vd x) {
    const double magic = 6755399441055744.0 + 1023.0;  // 1.5 * 2^52 + bias
    const vd t = d_fmadd(x, d_set1(1.4426950408889634), d_set1(magic));
    const vd n = d_sub(t, d_set1(magic));
    vd r = d_fnmadd(n, d_set1(6.93147180369123816490e-01), x);
    r = d_fnmadd(n, d_set1(1.90821492927058770002e-10), r);
    vd p = d_set1(1.0 / 6227020800.0);
    p = d_fmadd(p, r, d_set1(1.0 / 479001600.0));
    p = d_fmadd(p, r, d_set1(1.0 / 39916800.0));
    p = d_fmadd(p, r, d_set1(1.0 / 3628800.0));
    p = d_fmadd(p, r, d_set1(1.0 / 362880.0));
    p = d_fmadd(p, r, d_set1(1.0 / 40320.0));
    p = d_fmadd(p, r, d_set1(1.0 / 5040.0));
    p = d_fmadd(p, r, d_set1(1.0 / 720.0));
    p = d_fmadd(p, r, d_set1(1.0 / 120.0));
    p = d_fmadd(p, r, d_set1(1.0 / 24.0));
    p = d_fmadd(p, r, d_set1(1.0 / 6.0));
    p = d_fmadd(p, r, d_set1(0.5));
    p = d_fmadd(p, r, d_set1(1.0));
    p = d_fmadd(p, r, d_set1(1.0));
    return d_select_ge(d_mul(p, d_pow2_bits(t)), x, -708.3964185322641);
}

// Natural log of positive normal x (fdlibm/musl e_log.c): < 1 ulp; log(1) == 0.
static inline vd log_d(vd x) {
    vd f, k;
    d_log_split(x, f, k);
    const vd hfsq = d_mul(d_set1(0.5), d_mul(f, f));
    const vd s = d_div(f, d_add(d_set1(2.0), f));
    const vd z = d_mul(s, s);
    const vd w = d_mul(z, z);
    const vd t1 = d_mul(w, d_add(d_set1(3.999999999940941908e-01),
                                 d_mul(w, d_add(d_set1(2.222219843214978396e-01),
                                                d_mul(w, d_set1(1.531383769920937332e-01))))));
    const vd t2 = d_mul(z, d_add(d_set1(6.666666666666735130e-01),
                                 d_mul(w, d_add(d_set1(2.857142874366239149e-01),
                                                d_mul(w, d_add(d_set1(1.818357216161805012e-01),
                                                               d_mul(w, d_set1(1.479819860511658591e-01))))))));
    const vd R = d_add(t2, t1);
    vd res = d_mul(s, d_add(hfsq, R));
    res = d_add(res, d_mul(k, d_set1(1.90821492927058770002e-10)));
    res = d_sub(res, hfsq);
    res = d_add(res, f);
    return d_add(res, d_mul(k, d_set1(6.93147180369123816490e-01)));
}

// ---- row kernels ------------------------------------------------------------------------
// s[r] = sum_j e_j and t[r] = sum_j e_j d_j with d_j = z_rj - max_j z_rj, e_j = exp(d_j).
// Non-finite logits make t[r] NaN (an infinite or NaN d_j meets e_j == 0), and so do
// finite logits so large (|z| > ~1e31 in float32) that d_j overflows: the caller
// rechecks such rows (see check_rows) and recomputes the valid ones exactly.

static void rows_c2_f32(const float* z, int64_t nrows, double* s, double* t) {
    // C == 2: u depends on |z0 - z1| only; rows go across the SIMD lanes.
    for (int64_t r = 0; r < nrows; r += NF) {
        vf a, b;
        f_load_deint2(z + 2 * r, a, b);
        const vf d = f_neg_abs(f_sub(a, b));
        f_store_c2(exp_f(d), d, s + r, t + r);
    }
}

#if !defined(LLKD_BODY_SCALAR)
// 2 < C <= 8 * NF: a row is NV vectors kept in registers; the last one is completed
// with -FLT_MAX lanes (loaded past the row where the block's memory allows, masked
// otherwise). R rows are interleaved so that their exp's dependency chains overlap.
template <int NV, int R>
static inline void rows_small_step(const float* p, int64_t C, bool last_masked, ftail mk, double* s, double* t) {
    const vf lowest = f_set1(-std::numeric_limits<float>::max());
    vf v[R][NV], vm[R];
    for (int k = 0; k < R; ++k) {
        const float* pk = p + k * C;
        for (int q = 0; q < NV - 1; ++q) v[k][q] = f_load(pk + q * NF);
        v[k][NV - 1] = (last_masked && k == R - 1) ? f_load_masked(pk + (NV - 1) * NF, mk, lowest)
                                                  : f_load_over(pk + (NV - 1) * NF, mk, lowest);
        vf mx = v[k][0];
        for (int q = 1; q < NV; ++q) mx = f_max(mx, v[k][q]);
        vm[k] = f_hmax_bcast(mx);
    }
    // Vectors 0-3 and 4-7 of a row go to separate float32 sums (at most 4 terms per
    // lane), joined in float64.
    vf sf[R][2], tf[R][2];
    for (int h = 0; h < (NV > 4 ? 2 : 1); ++h)
        for (int k = 0; k < R; ++k) {
            const vf d = f_sub(v[k][h * 4], vm[k]);
            const vf e = exp_f(d);
            sf[k][h] = e;
            tf[k][h] = f_mul(e, d);
        }
    for (int q = 1; q < NV; ++q) {
        if (q == 4) continue;
        const int h = q / 4;
        for (int k = 0; k < R; ++k) {
            const vf d = f_sub(v[k][q], vm[k]);
            const vf e = exp_f(d);
            sf[k][h] = f_add(sf[k][h], e);
            tf[k][h] = f_fmadd(e, d, tf[k][h]);
        }
    }
    for (int k = 0; k < R; ++k) {
        f_reduce2_store(sf[k][0], tf[k][0], s + k, t + k);
        if (NV > 4) {
            double s2, t2;
            f_reduce2_store(sf[k][1], tf[k][1], &s2, &t2);
            s[k] += s2, t[k] += t2;
        }
    }
}

#if defined(LLKD_BODY_AVX2)
// 3 <= C <= NF: rows across the lanes, one gather per column, no horizontal work.
// Columns alternate between two float32 partial sums (at most 4 terms each per lane).
static void rows_cols_f32(const float* z, int64_t nrows, int64_t C, double* s, double* t) {
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                           _mm256_set1_epi32(static_cast<int>(C)));
    for (int64_t r = 0; r + NF <= nrows; r += NF) {
        const float* p = z + r * C;
        vf col[NF];
        vf mx = col[0] = _mm256_i32gather_ps(p, idx, 4);
        for (int64_t j = 1; j < C; ++j) mx = f_max(mx, col[j] = _mm256_i32gather_ps(p + j, idx, 4));
        vf sf[2] = {f_set1(0.0f), f_set1(0.0f)}, tf[2] = {f_set1(0.0f), f_set1(0.0f)};
        for (int64_t j = 0; j < C; ++j) {
            const vf d = f_sub(col[j], mx);
            const vf e = exp_f(d);
            sf[j & 1] = f_add(sf[j & 1], e);
            tf[j & 1] = f_fmadd(e, d, tf[j & 1]);
        }
        f_store_wide_sum(sf[0], sf[1], s + r);
        f_store_wide_sum(tf[0], tf[1], t + r);
    }
}

// Two rows whose last vector holds at most 4 values (8 < C <= 32, C % 8 in 1..4): the
// two tails share one exp (row a in lanes 0-3, row b in lanes 4-7), and the two row
// maxima are reduced together. p must be readable up to the 4 floats starting at row
// b's tail.
static inline void reduce4_store(__m128 s4, __m128 t4, double* s, double* t) {
    const __m256d h = _mm256_hadd_pd(_mm256_cvtps_pd(s4), _mm256_cvtps_pd(t4));
    const __m128d r = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
    _mm_storel_pd(s, r);
    _mm_storeh_pd(t, r);
}

template <int NV>
static inline void rows_pair_packed(const float* p, int64_t C, __m128 mk4, double* s, double* t) {
    const __m128 lowest4 = _mm_set1_ps(-std::numeric_limits<float>::max());
    const float* pb = p + C;
    vf a[NV - 1], b[NV - 1];
    for (int q = 0; q < NV - 1; ++q) a[q] = f_load(p + q * NF), b[q] = f_load(pb + q * NF);
    const __m128 ta = _mm_blendv_ps(lowest4, _mm_loadu_ps(p + (NV - 1) * NF), mk4);
    const __m128 tb = _mm_blendv_ps(lowest4, _mm_loadu_ps(pb + (NV - 1) * NF), mk4);
    const vf tc = _mm256_insertf128_ps(_mm256_castps128_ps256(ta), tb, 1);
    vf mxa = a[0], mxb = b[0];
    for (int q = 1; q < NV - 1; ++q) mxa = f_max(mxa, a[q]), mxb = f_max(mxb, b[q]);
    vf m = _mm256_max_ps(_mm256_permute2f128_ps(mxa, mxb, 0x20), _mm256_permute2f128_ps(mxa, mxb, 0x31));
    m = _mm256_max_ps(m, tc);
    m = _mm256_max_ps(m, _mm256_permute_ps(m, 0x4E));
    m = _mm256_max_ps(m, _mm256_permute_ps(m, 0xB1));  // [max a x4 | max b x4]
    const vf vma = _mm256_permute2f128_ps(m, m, 0x00), vmb = _mm256_permute2f128_ps(m, m, 0x11);
    vf sfa, tfa, sfb, tfb;
    {
        const vf da = f_sub(a[0], vma), db = f_sub(b[0], vmb);
        const vf ea = exp_f(da), eb = exp_f(db);
        sfa = ea, tfa = f_mul(ea, da), sfb = eb, tfb = f_mul(eb, db);
    }
    for (int q = 1; q < NV - 1; ++q) {
        const vf da = f_sub(a[q], vma), db = f_sub(b[q], vmb);
        const vf ea = exp_f(da), eb = exp_f(db);
        sfa = f_add(sfa, ea), tfa = f_fmadd(ea, da, tfa);
        sfb = f_add(sfb, eb), tfb = f_fmadd(eb, db, tfb);
    }
    const vf dc = f_sub(tc, m);
    const vf ec = exp_f(dc), tcn = f_mul(ec, dc);
    auto lo = [](vf v) { return _mm256_castps256_ps128(v); };
    auto hi = [](vf v) { return _mm256_extractf128_ps(v, 1); };
    reduce4_store(_mm_add_ps(_mm_add_ps(lo(sfa), hi(sfa)), lo(ec)),
                  _mm_add_ps(_mm_add_ps(lo(tfa), hi(tfa)), lo(tcn)), s, t);
    reduce4_store(_mm_add_ps(_mm_add_ps(lo(sfb), hi(sfb)), hi(ec)),
                  _mm_add_ps(_mm_add_ps(lo(tfb), hi(tfb)), hi(tcn)), s + 1, t + 1);
}

#endif  // LLKD_BODY_AVX2

template <int NV>
static void rows_small_f32(const float* z, int64_t nrows, int64_t C, double* s, double* t) {
    constexpr int R = NV == 1 ? 4 : NV <= 4 ? 2 : 1;
    const ftail mk = f_tail(C - NF * (NV - 1));
    // Rows r < n_over may load whole vectors past their end (r * C + NV * NF <= nrows * C:
    // the bytes belong to the following rows); the others use masked loads.
    const int64_t total = nrows * C, span = NV * NF;
    const int64_t n_over = total >= span ? (total - span) / C + 1 : 0;
    int64_t r = 0;
#if defined(LLKD_BODY_AVX2)
    const int64_t rem = C - NF * (NV - 1);
    if (NV >= 2 && NV <= 4 && rem <= 4) {
        // pairs (r, r + 1) with (r + 1) * C + (NV - 1) * NF + 4 <= total
        const int64_t lim = total - (NV - 1) * NF - 4;
        const int64_t n_pairs_ok = lim >= C ? lim / C : 0;  // pair (r, r + 1) is safe when r + 1 <= n_pairs_ok
        const __m128 mk4 = _mm256_castps256_ps128(_mm256_castsi256_ps(f_tail(rem)));
        // (the template argument is clamped so that NV = 1 or > 4 never instantiates it)
        for (; r + 2 <= nrows && r + 1 <= n_pairs_ok; r += 2)
            rows_pair_packed<(NV >= 2 && NV <= 4) ? NV : 2>(z + r * C, C, mk4, s + r, t + r);
        for (; r < nrows; ++r) rows_small_step<NV, 1>(z + r * C, C, r >= n_over, mk, s + r, t + r);
        return;
    }
#endif
    for (; r + R <= n_over; r += R) rows_small_step<NV, R>(z + r * C, C, false, mk, s + r, t + r);
    for (; r < nrows; ++r) rows_small_step<NV, 1>(z + r * C, C, r >= n_over, mk, s + r, t + r);
}
#endif

static void rows_f32(const float* z, int64_t nrows, int64_t C, double* s, double* t) {
    int64_t r = 0;
    if (C == 2) {
        const int64_t nv = nrows / NF * NF;
        rows_c2_f32(z, nv, s, t);
        r = nv;
    }
#if !defined(LLKD_BODY_SCALAR)
    else if (C <= 8 * NF) {
#if defined(LLKD_BODY_AVX2)
        if (C <= 4) {  // gathers beat the row path only for the smallest rows
            const int64_t nv = nrows / NF * NF;
            rows_cols_f32(z, nv, C, s, t);
            rows_small_f32<1>(z + nv * C, nrows - nv, C, s + nv, t + nv);
            return;
        }
#endif
        switch ((C + NF - 1) / NF) {
            case 1: rows_small_f32<1>(z, nrows, C, s, t); break;
            case 2: rows_small_f32<2>(z, nrows, C, s, t); break;
            case 3: rows_small_f32<3>(z, nrows, C, s, t); break;
            case 4: rows_small_f32<4>(z, nrows, C, s, t); break;
            case 5: rows_small_f32<5>(z, nrows, C, s, t); break;
            case 6: rows_small_f32<6>(z, nrows, C, s, t); break;
            case 7: rows_small_f32<7>(z, nrows, C, s, t); break;
            default: rows_small_f32<8>(z, nrows, C, s, t); break;
        }
        return;
    }
#endif
    const float lowest = -std::numeric_limits<float>::max();
    for (; r < nrows; ++r) {
        const float* p = z + r * C;
        vf m0 = f_set1(lowest), m1 = m0;
        int64_t j = 0;
        for (; j + 2 * NF <= C; j += 2 * NF) {
            m0 = f_max(m0, f_load(p + j));
            m1 = f_max(m1, f_load(p + j + NF));
        }
        for (; j + NF <= C; j += NF) m0 = f_max(m0, f_load(p + j));
        if (j < C) m1 = f_max(m1, f_load_tail(p + j, C - j, lowest));
        const vf vm = f_set1(f_hmax(f_max(m0, m1)));
        vd sd = d_set1(0.0), td = d_set1(0.0);
        // Blocks of 4 vectors (4 terms per lane) in float32, then widened to float64.
        for (j = 0; j + 4 * NF <= C; j += 4 * NF) {
            const vf d0 = f_sub(f_load(p + j), vm), d1 = f_sub(f_load(p + j + NF), vm);
            const vf d2 = f_sub(f_load(p + j + 2 * NF), vm), d3 = f_sub(f_load(p + j + 3 * NF), vm);
            const vf e0 = exp_f(d0), e1 = exp_f(d1), e2 = exp_f(d2), e3 = exp_f(d3);
            f_widen_add(sd, f_add(f_add(e0, e1), f_add(e2, e3)));
            f_widen_add(td, f_fmadd(e3, d3, f_fmadd(e2, d2, f_fmadd(e1, d1, f_mul(e0, d0)))));
        }
        if (j < C) {
            vf sf = f_set1(0.0f), tf = f_set1(0.0f);
            for (; j + NF <= C; j += NF) {
                const vf d = f_sub(f_load(p + j), vm);
                const vf e = exp_f(d);
                sf = f_add(sf, e);
                tf = f_fmadd(e, d, tf);
            }
            if (j < C) {
                const vf d = f_sub(f_load_tail(p + j, C - j, lowest), vm);
                const vf e = exp_f(d);
                sf = f_add(sf, e);
                tf = f_fmadd(e, d, tf);
            }
            f_widen_add(sd, sf);
            f_widen_add(td, tf);
        }
        s[r] = d_hsum(sd);
        t[r] = d_hsum(td);
    }
}

static void rows_f64(const double* z, int64_t nrows, int64_t C, double* s, double* t) {
    int64_t r = 0;
    if (C == 2) {
        const int64_t nv = nrows / ND * ND;
        for (; r < nv; r += ND) {
            vd a, b;
            d_load_deint2(z + 2 * r, a, b);
            const vd d = d_neg_abs(d_sub(a, b));
            d_store_c2(exp_d(d), d, s + r, t + r);
        }
    }
    const double lowest = -std::numeric_limits<double>::max();
    for (; r < nrows; ++r) {
        const double* p = z + r * C;
        vd vmax = d_set1(lowest);
        int64_t j = 0;
        for (; j + ND <= C; j += ND) vmax = d_max(vmax, d_load(p + j));
        if (j < C) vmax = d_max(vmax, d_load_tail(p + j, C - j, lowest));
        const vd vm = d_set1(d_hmax(vmax));
        vd sd = d_set1(0.0), td = d_set1(0.0);
        for (j = 0; j < C; j += ND) {
            const vd v = j + ND <= C ? d_load(p + j) : d_load_tail(p + j, C - j, lowest);
            const vd d = d_sub(v, vm);
            const vd e = exp_d(d);
            sd = d_add(sd, e);
            td = d_fmadd(e, d, td);
        }
        s[r] = d_hsum(sd);
        t[r] = d_hsum(td);
    }
}

// u = clip(H / log C, 0, 1) with H = log s - t / s, computed as (s log s - t) / (s log C)
// (one division; identical logits give s = C, t = 0 and u == 1 exactly).
static void entropy(const double* s, const double* t, int64_t n_padded, double logC, double* u) {
    const vd lc = d_set1(logC), zero = d_set1(0.0), one = d_set1(1.0);
    for (int64_t i = 0; i < n_padded; i += ND) {
        const vd sv = d_load(s + i), tv = d_load(t + i);
        const vd h = d_sub(d_mul(log_d(sv), sv), tv);
        d_store(u + i, d_min(d_max(d_div(h, d_mul(sv, lc)), zero), one));
    }
}

static double log1(double x) {
    alignas(64) double in[8] = {x, x, x, x, x, x, x, x}, out[8];
    for (int64_t i = 0; i < 8; i += ND) d_store(out + i, log_d(d_load(in + i)));
    return out[0];
}

const KernelTable kTable = {LLKD_NAME, &rows_f32, &rows_f64, &entropy, &log1, &read_sum};

}  // namespace LLKD_NS
}  // namespace detail
}  // namespace llkd
#endif  // LLKD_SELECTION_KERNEL_BODY
