// LLKD batched sample selection on the CPU (docs/design.md section 3, semantics of
// src/llkd/selection/_reference.py).
//
// This file: the step (validation, the passes, the state update). Around it, in csrc/cpu/:
//   config.hpp         SIMD variants this compiler builds; the table of row kernels
//   kernel_body.inc    exp/log and the row kernels, written once over SIMD primitives
//   simd_*.inc         the primitives of each variant (scalar, sse2/neon, avx2+fma)
//   simd_variants.cpp  compiles the body once per variant (own namespace and target
//                      options, as Highway's foreach_target.h: no -march flag needed)
//   dispatch.cpp       run-time choice of the variant (__builtin_cpu_supports;
//                      LLKD_SIMD=<name> picks a lower one), build facts
//   threads.hpp        the worker threads (exceptions carried back to the caller)
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
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "../selection_cpu.hpp"
#include "dispatch.hpp"
#include "threads.hpp"

namespace llkd {
namespace detail {

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
                throw InputError("teacher_confidence must lie in [0, 1], found " + fmt_double(ci.err_value) +
                                 at);
            throw InputError("teacher_confidence contains NaN or infinite values (" +
                             fmt_double(ci.err_value) + at + ")");
        case ERR_LOGITS:
            throw InputError("student_logits contains NaN or infinite values (first in row " +
                             std::to_string(ci.err_row) + ")");
        case ERR_DRAWS:
            throw InputError("random_draws contains NaN or infinite values (" + fmt_double(ci.err_value) +
                             at + ")");
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
    constexpr int64_t kMaxPartials = int64_t(1) << 20;  // chunk x class partial sums
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
    if (in.n_rows < 1)
        throw InputError("student_logits is empty: a selection step needs at least one sample");
    if (in.n_classes < 2)
        throw InputError("student_logits needs at least 2 classes (columns), got " +
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
    double n_classes;  // C, as a double (mode confidence)
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
    const double fixed = a.fixed, rate = a.rate, cd = a.n_classes;
    double sr[4] = {0.0, 0.0, 0.0, 0.0};
    int64_t ns = 0;
    auto one = [&](int64_t i) -> double {
        const double c = conf[i], u = unc[i];
        bool sel;
        if (MODE == kModeLLKD) {
            const int64_t y = lab[i];
            sel = (c >= tt[y]) & (u >= ts[y]);
        } else if (MODE == kModeTeacher || MODE == kModeClassMean) {
            sel = c >= tt[lab[i]];
        } else if (MODE == kModeStudent) {
            sel = u >= ts[lab[i]];
        } else if (MODE == kModeAll || MODE == kModeConfidence) {
            sel = true;
        } else if (MODE == kModeFixed) {
            sel = c >= fixed;
        } else {
            sel = draws[i] < rate;
        }
        mask[i] = static_cast<uint8_t>(sel);
        ns += sel;
        const double r = MODE == kModeConfidence ? std::max(0.0, (cd * c - 1.0) / (cd - 1.0))
                         : PRODUCT               ? (c * u) * static_cast<double>(sel)
                                                 : static_cast<double>(sel);
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
        case kModeLLKD:
            return select_rows<kModeLLKD, PRODUCT>(a, r0, r1, ci);
        case kModeTeacher:
            return select_rows<kModeTeacher, PRODUCT>(a, r0, r1, ci);
        case kModeStudent:
            return select_rows<kModeStudent, PRODUCT>(a, r0, r1, ci);
        case kModeAll:
            return select_rows<kModeAll, PRODUCT>(a, r0, r1, ci);
        case kModeFixed:
            return select_rows<kModeFixed, PRODUCT>(a, r0, r1, ci);
        case kModeClassMean:
            return select_rows<kModeClassMean, PRODUCT>(a, r0, r1, ci);
        case kModeConfidence:
            return select_rows<kModeConfidence, true>(a, r0, r1, ci);
        default:
            return select_rows<kModeRandom, PRODUCT>(a, r0, r1, ci);
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
            const int64_t bad =
                accumulate_block(in.labels + b0, in.confidence + b0, ubuf, stop, C, acc, copies > 1, tc, tu);
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
        if (row == 0 && raw_teacher_levels(in.mode)) {
            std::copy(lev, lev + C, tau);
            continue;
        }
        const double top = *std::max_element(lev, lev + C);
        for (int64_t y = 0; y < C; ++y) tau[y] = top > 0.0 ? (g[row] * lev[y]) / top : 0.0;
    }

    // ---------------- pass 2: mask and r = c*u ----------------
    const bool product = normalised_weights(in.mode, in.weighting);
    SelectArgs sa;
    sa.labels = in.labels, sa.conf = in.confidence, sa.u = out.uncertainty, sa.draws = in.random_draws;
    // Tests pass at value >= tau - kTieTolerance (selection_contract.hpp).
    std::vector<double> cut_t(static_cast<size_t>(C)), cut_s(static_cast<size_t>(C));
    for (int64_t y = 0; y < C; ++y)
        cut_t[y] = out.tau_teacher[y] - kTieTolerance, cut_s[y] = out.tau_student[y] - kTieTolerance;
    sa.tau_t = cut_t.data(), sa.tau_s = cut_s.data();
    sa.fixed = in.fixed_threshold, sa.rate = in.random_rate, sa.n_classes = static_cast<double>(C);
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

void pool_uncertainty(const void* logits, DType dtype, int64_t n_rows, int64_t n_classes, int64_t n_threads,
                      double* out) {
    using namespace detail;
    if (n_classes < 2)
        throw InputError("logits must have at least 2 columns, got " + std::to_string(n_classes));
    if (n_rows < 0) throw InputError("n_rows must be >= 0");
    if (n_threads < 1) throw InputError("n_threads must be >= 1, got " + std::to_string(n_threads));
    if (n_rows == 0) return;
    const KernelTable& K = *active_table().load(std::memory_order_relaxed);
    const int64_t B = n_rows, C = n_classes;
    const Plan plan = make_plan(B, C, n_threads);
    const double logC = K.log1(static_cast<double>(C));
    std::vector<int64_t> bad(static_cast<size_t>(plan.n_chunks), -1);
    auto pass = [&](int64_t k, int64_t) {
        const int64_t r0 = k * plan.chunk_rows, r1 = std::min(B, r0 + plan.chunk_rows);
        alignas(64) double sbuf[kBlock + kPad], tbuf[kBlock + kPad], ubuf[kBlock + kPad];
        for (int64_t b0 = r0; b0 < r1; b0 += kBlock) {
            const int64_t nb = std::min(kBlock, r1 - b0);
            int64_t stop;
            if (dtype == DType::F32) {
                const float* z = static_cast<const float*>(logits) + b0 * C;
                K.rows_f32(z, nb, C, sbuf, tbuf);
                stop = check_rows(z, nb, C, sbuf, tbuf);
            } else {
                const double* z = static_cast<const double*>(logits) + b0 * C;
                K.rows_f64(z, nb, C, sbuf, tbuf);
                stop = check_rows(z, nb, C, sbuf, tbuf);
            }
            if (stop < nb) {
                bad[static_cast<size_t>(k)] = b0 + stop;
                return;
            }
            const int64_t npad = (nb + 7) & ~int64_t(7);
            for (int64_t i = nb; i < npad; ++i) sbuf[i] = 1.0, tbuf[i] = 0.0;
            K.entropy(sbuf, tbuf, npad, logC, ubuf);
            std::memcpy(out + b0, ubuf, static_cast<size_t>(nb) * sizeof(double));
        }
    };
    run_chunks(plan.n_chunks, plan.n_workers, pass);
    for (int64_t row : bad)
        if (row >= 0)
            throw InputError("logits contains NaN or infinite values (first in row " + std::to_string(row) +
                             ")");
}

}  // namespace llkd
