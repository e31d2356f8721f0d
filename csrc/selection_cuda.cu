// CUDA implementation of the LLKD selection rule (docs/design.md section 3). See selection_cuda.cuh.
//
// Row kernel layout: a group of G lanes (G in 1..32, a power of two) shares one row; lane
// l of the group holds the logits l, l+G, ..., l+(K-1)G of a chunk of G*K columns in
// registers. Rows with C <= G*K take one chunk: lane max, group max (xor shuffles), then
// d = (z - max) and e = 2^d, s = sum e, t = sum e*d, then a group sum; missing columns get
// d = -200 (e == 0 exactly), so the loop has no branches. Longer rows are walked in chunks
// with a per-lane running max (online rescaling), then combined across the group.
// float32 logits are computed in float32 in base-2 units (MUFU ex2/lg2/rcp), float64 logits
// in float64; every per-class sum is float64. The instruction count per row decides the
// speed of this kernel for small C (see benchmarks/CUDA_NOTES.md): G = 1-2 lanes per row for
// C <= 32 keeps the per-row work (entropy, checks, class sums) shared by few lanes.
//
// Per-class sums of c, u and counts:
//   kAccPriv   (C <= G*K): thread t owns shared-memory slots for the classes kk*G + t%G
//              (no atomics, no registers held); summed per block at the end, then one
//              global atomicAdd per class and block.
//   kAccSmem   (C <= 2048): block shared-memory atomics (a CAS loop for float64 on sm_90;
//              once per row, fine for long rows), flushed the same way.
//   kAccGlobal (any C): global atomicAdd per row.
#include "selection_cuda.cuh"

#include <cuda_runtime.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>

#ifndef LLKD_CUDA_ARCHS
#define LLKD_CUDA_ARCHS "unknown"
#endif

namespace llkd_cuda {
namespace {

constexpr int kBlock = 256;  // threads per block of the row, select and scale kernels
constexpr int kUpdateBlock = 1024;
constexpr unsigned kFull = 0xffffffffu;
constexpr int64_t kSmemMaxClasses = 2048;  // 24 bytes of shared memory per class: 48 KiB

enum Acc : int { kAccPriv = 0, kAccSmem = 1, kAccGlobal = 2 };

// Scratch layout, in 8-byte words.
struct Layout {
    int64_t c, state_in, sum_c, sum_u, cnt, flags, sel_sum, sel_cnt, out_g, out_m, tau, total;
    __host__ __device__ explicit Layout(int64_t c_) : c(c_) {
        state_in = 0;                  // 2 + 2c   g_T, g_S, m_T[c], m_S[c]   (uploaded)
        sum_c = state_in + 2 + 2 * c;  // c        sum of c per class          (zeroed)
        sum_u = sum_c + c;             // c        sum of u per class          (zeroed)
        cnt = sum_u + c;               // c uint64 rows per class              (zeroed)
        flags = cnt + c;               // 1 uint32 error bits                  (zeroed)
        sel_sum = flags + 1;           // 1        sum of c*u over selected    (zeroed)
        sel_cnt = sel_sum + 1;         // 1 uint64 selected rows               (zeroed)
        out_g = sel_cnt + 1;           // 2        levels after the step       (downloaded from flags on)
        out_m = out_g + 2;             // 2c
        tau = out_m + 2 * c;           // 2c       thresholds
        total = tau + 2 * c;
    }
};

// ------------------------------------------------------------------ device helpers
__device__ __forceinline__ float ex2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ float lg2_approx(float x) {
    float y;
    asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ float rcp_approx(float x) {
    float y;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

template <typename T>
struct RowMath;

template <>
struct RowMath<float> {
    // Exponents are taken in base-2 units: e = 2^((z - m) * log2(e)); t is then in base-2
    // units too and kUnit converts it back to nats.
    static constexpr float kScale = 1.4426950408889634f;
    static constexpr float kUnit = 0.6931471805599453f;
    static constexpr float kFloor = -200.0f;  // ex2.approx.ftz(-200) == 0
    __device__ static __forceinline__ float exp_(float x) { return ex2_approx(x); }
    // s is in [1, C]: no denormals, MUFU.LG2 / MUFU.RCP precision (~2 ulp) is plenty.
    __device__ static __forceinline__ float log_(float x) { return lg2_approx(x) * 0.6931471805599453f; }
    __device__ static __forceinline__ float div_(float a, float b) { return a * rcp_approx(b); }
    __device__ static __forceinline__ float fill() { return -FLT_MAX; }
    __device__ static __forceinline__ bool finite(float x) { return fabsf(x) <= FLT_MAX; }
    __device__ static __forceinline__ float max_(float a, float b) { return fmaxf(a, b); }
    __device__ static __forceinline__ float neg_inf() { return -INFINITY; }
    __device__ static __forceinline__ float to_u(float h, double inv_log_c, double) {
        return __saturatef(h * static_cast<float>(inv_log_c));  // clip to [0, 1]; NaN -> 0
    }
};

template <>
struct RowMath<double> {
    static constexpr double kScale = 1.0;
    static constexpr double kUnit = 1.0;
    static constexpr double kFloor = -800.0;  // exp(-800) == 0
    __device__ static __forceinline__ double exp_(double x) { return exp(x); }
    __device__ static __forceinline__ double log_(double x) { return log(x); }
    __device__ static __forceinline__ double div_(double a, double b) { return a / b; }
    __device__ static __forceinline__ double fill() { return -DBL_MAX; }
    __device__ static __forceinline__ bool finite(double x) { return fabs(x) <= DBL_MAX; }
    __device__ static __forceinline__ double max_(double a, double b) { return fmax(a, b); }
    __device__ static __forceinline__ double neg_inf() { return -INFINITY; }
    __device__ static __forceinline__ double to_u(double h, double, double log_c) {
        return fmin(fmax(h / log_c, 0.0), 1.0);
    }
};

__device__ __forceinline__ int64_t load_label(const void* p, int is64, int64_t i) {
    return is64 ? static_cast<int64_t>(__ldg(static_cast<const long long*>(p) + i))
                : static_cast<int64_t>(__ldg(static_cast<const int*>(p) + i));
}

__device__ __forceinline__ double load_conf(const void* p, int is64, int64_t i) {
    return is64 ? __ldg(static_cast<const double*>(p) + i)
                : static_cast<double>(__ldg(static_cast<const float*>(p) + i));
}

template <typename V>
__device__ __forceinline__ V warp_sum(V v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(kFull, v, off);
    return v;
}

// Sum (or max) over the block; every thread gets the result. sh: >= 32 words.
template <typename V, bool kMax>
__device__ V block_reduce(V v, V* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        V o = __shfl_xor_sync(kFull, v, off);
        v = kMax ? (o > v ? o : v) : v + o;
    }
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nw ? sh[lane] : sh[0];
        if (!kMax && lane >= nw) v = V(0);
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            V o = __shfl_xor_sync(kFull, v, off);
            v = kMax ? (o > v ? o : v) : v + o;
        }
        if (lane == 0) sh[0] = v;
    }
    __syncthreads();
    v = sh[0];
    __syncthreads();
    return v;
}

// ------------------------------------------------------------------ pass 1: rows
struct RowArgs {
    const void* logits;
    int64_t n, c;
    const void* labels;
    int labels64;
    const void* conf;
    int conf64;
    void* out_u;
    double* sum_c;
    double* sum_u;
    unsigned long long* cnt;
    unsigned* flags;
    double inv_log_c, log_c;
    int accumulate;
    int acc_slots;  // kAccPriv: class slots per thread, ceil(c / G)
};

// One row group's view of a row: K logits per lane, its label and confidence.
template <typename T, int G, int K>
struct RowTile {
    T x[K];
    int64_t y;
    double c;
};

template <typename T, int G, int K>
__device__ __forceinline__ void load_tile(const RowArgs& a, int64_t row, int gl, int left,
                                          RowTile<T, G, K>& r) {
    const bool valid = row < a.n;
    const int64_t li = valid ? row : 0;  // always a readable row
    const T* zr = static_cast<const T*>(a.logits) + li * a.c + gl;
    // Keep one pointer register: without this the compiler rebuilds the address (constant
    // load + two LEAs) under every load's predicate; with it the loads take immediate offsets.
    asm("" : "+l"(zr));
#pragma unroll
    for (int k = 0; k < K; ++k) {
        r.x[k] = RowMath<T>::fill();
        if (valid && k * G < left) r.x[k] = __ldg(zr + k * G);
    }
    r.y = load_label(a.labels, a.labels64, li);
    r.c = load_conf(a.conf, a.conf64, li);
}

// Adds the lane's logits x[k] (the columns k*G below `left`) to sj = sum e, tj = sum e*d
// with d = max(x - m, kFloor) (base-2 units for float32); missing columns get d = kFloor
// (e == 0 exactly, e*d == 0). cj turns NaN iff one of the logits is NaN or infinite.
template <typename T, int G, int K>
__device__ __forceinline__ void exp_terms(const T (&x)[K], T m, int left, T& sj, T& tj, T& cj) {
    using M = RowMath<T>;
#pragma unroll
    for (int k = 0; k < K; ++k) {
        // Clamped at kFloor (where e is already 0): a finite spread beyond the type's range
        // would give d = -inf and e * d = NaN.
        const T d = k * G < left ? M::max_((x[k] - m) * M::kScale, M::kFloor) : M::kFloor;
        const T e = M::exp_(d);
        sj += e;
        tj = fma(e, d, tj);
        cj = fma(x[k], T(0), cj);
    }
}

// Sums sj and tj over the G lanes of a row group (xor shuffles) into s and t.
template <typename T, int G>
__device__ __forceinline__ void group_sums(T sj, T tj, T cj, T& s, T& t, T& chk) {
#pragma unroll
    for (int off = G / 2; off > 0; off >>= 1) {
        sj += __shfl_xor_sync(kFull, sj, off);
        tj += __shfl_xor_sync(kFull, tj, off);
    }
    s = sj;
    t = tj;
    chk = cj;
}

// Row max, then s = sum e, t = sum e*d with d = (z - max) (base-2 units for float32), over
// the lane's columns; group reductions by xor shuffles. Missing columns get d = kFloor
// (e == 0 exactly, e*d == 0). chk is NaN iff one of the lane's logits is NaN or infinite.
template <typename T, int G, int K>
__device__ __forceinline__ void row_sums(const RowTile<T, G, K>& r, int left, T& s, T& t, T& chk) {
    using M = RowMath<T>;
    T m = r.x[0];
#pragma unroll
    for (int k = 1; k < K; ++k) m = M::max_(m, r.x[k]);
#pragma unroll
    for (int off = G / 2; off > 0; off >>= 1) m = M::max_(m, __shfl_xor_sync(kFull, m, off));
    T sj = T(0), tj = T(0), cj = T(0);
    exp_terms<T, G, K>(r.x, m, left, sj, tj, cj);
    group_sums<T, G>(sj, tj, cj, s, t, chk);
}

// Chunked rows (c > G*K): per-lane running max with rescaling, then the group merge.
template <typename T, int G, int K>
__device__ __forceinline__ void row_sums_chunked(const RowArgs& a, int64_t row, int gl, T& s, T& t, T& chk) {
    using M = RowMath<T>;
    const bool valid = row < a.n;
    const int64_t C = a.c;
    const T* zr = static_cast<const T*>(a.logits) + (valid ? row : 0) * C + gl;
    T m = M::neg_inf(), sj = T(0), tj = T(0), cj = T(0);
    for (int c0 = 0; c0 < C; c0 += G * K) {  // uniform over the warp (C < 2^30)
        const int left = static_cast<int>(C) - gl - c0;
        const T* zc = zr + c0;
        asm("" : "+l"(zc));  // one pointer, immediate offsets (see load_tile)
        T x[K];
        T cm = M::neg_inf();
#pragma unroll
        for (int k = 0; k < K; ++k) {
            x[k] = M::fill();
            if (valid && k * G < left) x[k] = __ldg(zc + k * G);
            cm = M::max_(cm, x[k]);
        }
        if (cm > m) {
            if (sj > T(0)) {
                const T dm = M::max_((m - cm) * M::kScale, M::kFloor);  // f == 0, not 0 * inf
                const T f = M::exp_(dm);
                tj = f * fma(sj, dm, tj);
                sj *= f;
            }
            m = cm;
        }
        exp_terms<T, G, K>(x, m, left, sj, tj, cj);
    }
    T mg = m;
#pragma unroll
    for (int off = G / 2; off > 0; off >>= 1) mg = M::max_(mg, __shfl_xor_sync(kFull, mg, off));
    if (sj > T(0) && m < mg) {  // lanes without columns (sj == 0) add nothing
        const T dm = M::max_((m - mg) * M::kScale, M::kFloor);
        const T f = M::exp_(dm);
        tj = f * fma(sj, dm, tj);
        sj *= f;
    }
    group_sums<T, G>(sj, tj, cj, s, t, chk);
}

// Row kernel. ACC: kAccPriv (c <= G*K): thread t owns shared-memory slots [kk][t] holding
// the sums of the classes kk*G + t%G; no atomics, no registers held. kAccSmem: block
// shared-memory atomics (c <= 2048). kAccGlobal: global atomics. PF: the next row tile is
// loaded before the current one is processed.
template <typename T, int G, int K, int ACC, bool PF>
__global__ void __launch_bounds__(kBlock) row_kernel(const RowArgs a) {
    static_assert(G >= 1 && G <= 32 && (G & (G - 1)) == 0, "G must be a power of two <= 32");
    constexpr int kGroups = 32 / G;  // row groups per warp
    constexpr int kLogG = G == 1 ? 0 : G == 2 ? 1 : G == 4 ? 2 : G == 8 ? 3 : G == 16 ? 4 : 5;
    using M = RowMath<T>;
    T* __restrict__ out_u = static_cast<T*>(a.out_u);
    const int64_t n = a.n, C = a.c;
    const int lane = threadIdx.x & 31;
    const int gl = lane & (G - 1);  // lane within its row group
    const int gw = lane / G;        // row group within the warp
    const int64_t warp_id = (static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x) >> 5;
    const int64_t stride = (static_cast<int64_t>(gridDim.x) * kBlock >> 5) * kGroups;  // rows per sweep
    const int64_t warp_first = warp_id * kGroups;
    const int left = static_cast<int>(C) - gl;  // columns gl, gl+G, ... below C (C < 2^31)

    extern __shared__ double smem_dyn[];
    // kAccPriv: [slots][kBlock] sums of c, of u (double) and counts (unsigned)
    // kAccSmem: [C] sums of c, of u and counts (unsigned long long)
    const int slots = a.acc_slots;
    double* s_c = smem_dyn;
    double* s_u = smem_dyn + (ACC == kAccPriv ? static_cast<int64_t>(slots) * kBlock : C);
    void* s_n = smem_dyn + 2 * (ACC == kAccPriv ? static_cast<int64_t>(slots) * kBlock : C);
    if constexpr (ACC == kAccPriv) {
        for (int i = threadIdx.x; i < slots * kBlock; i += kBlock) {
            s_c[i] = 0.0;
            s_u[i] = 0.0;
            static_cast<unsigned*>(s_n)[i] = 0u;
        }
    } else if constexpr (ACC == kAccSmem) {
        for (int64_t k = threadIdx.x; k < C; k += kBlock) {
            s_c[k] = 0.0;
            s_u[k] = 0.0;
            static_cast<unsigned long long*>(s_n)[k] = 0ull;
        }
    }
    if constexpr (ACC != kAccGlobal) __syncthreads();

    unsigned bad = 0u;
    const bool single = C <= static_cast<int64_t>(G) * K;
    RowTile<T, G, K> cur;
    if constexpr (PF) load_tile<T, G, K>(a, warp_first + gw, gl, left, cur);

    // The loop condition is uniform across the warp (every lane must reach the shuffles).
    for (int64_t base = warp_first; base < n; base += stride) {
        const int64_t row = base + gw;
        const bool valid = row < n;
        T s, t, chk;
        int64_t y;
        double cj;
        if (ACC == kAccPriv || single) {
            RowTile<T, G, K> nxt;
            if constexpr (PF)
                load_tile<T, G, K>(a, row + stride, gl, left, nxt);  // in flight while this tile is processed
            else
                load_tile<T, G, K>(a, row, gl, left, cur);
            row_sums<T, G, K>(cur, left, s, t, chk);
            y = cur.y;
            cj = cur.c;
            if constexpr (PF) cur = nxt;
        } else {
            if constexpr (ACC != kAccPriv) {
                y = valid ? load_label(a.labels, a.labels64, row) : 0;
                cj = valid ? load_conf(a.conf, a.conf64, row) : 0.0;
                row_sums_chunked<T, G, K>(a, row, gl, s, t, chk);
            }
        }
        if (!valid) continue;  // uniform per group; no shuffles below
        // H = log s - t / s (t in base-2 units for float32); exactly 0 for a one-hot row.
        const T lg = s == T(1) ? T(0) : M::log_(s);
        const T u = M::to_u(lg - M::kUnit * M::div_(t, s), a.inv_log_c, a.log_c);
        if (chk != chk) bad |= kFlagBadLogits;
        if (gl == 0) out_u[row] = u;
        const bool y_ok = y >= 0 && y < C;
        if (!y_ok) bad |= kFlagBadLabels;
        if (!(cj >= 0.0 && cj <= 1.0)) bad |= kFlagBadConfidence;  // NaN fails too
        if (!a.accumulate || !y_ok) continue;
        const double uj = static_cast<double>(u);
        if constexpr (ACC == kAccPriv) {
            if (((static_cast<int>(y) - gl) & (G - 1)) == 0) {  // this lane owns class y
                const int i = (static_cast<int>(y) >> kLogG) * kBlock + threadIdx.x;
                s_c[i] += cj;
                s_u[i] += uj;
                static_cast<unsigned*>(s_n)[i] += 1u;
            }
        } else if constexpr (ACC == kAccSmem) {
            if (gl == 0) {
                atomicAdd(s_c + y, cj);
                atomicAdd(s_u + y, uj);
                atomicAdd(static_cast<unsigned long long*>(s_n) + y, 1ull);
            }
        } else {
            if (gl == 0) {
                atomicAdd(a.sum_c + y, cj);
                atomicAdd(a.sum_u + y, uj);
                atomicAdd(a.cnt + y, 1ull);
            }
        }
    }

    if constexpr (ACC != kAccGlobal) {
        __syncthreads();
        if (a.accumulate) {
            for (int64_t k = threadIdx.x; k < C; k += kBlock) {
                double sc = 0.0, su = 0.0;
                unsigned long long sn = 0ull;
                if constexpr (ACC == kAccPriv) {
                    const int base_i = static_cast<int>(k >> kLogG) * kBlock + static_cast<int>(k & (G - 1));
                    for (int j = 0; j < kBlock; j += G) {  // the threads that own class k
                        sc += s_c[base_i + j];
                        su += s_u[base_i + j];
                        sn += static_cast<unsigned*>(s_n)[base_i + j];
                    }
                } else {
                    sc = s_c[k];
                    su = s_u[k];
                    sn = static_cast<unsigned long long*>(s_n)[k];
                }
                if (sn) {
                    atomicAdd(a.sum_c + k, sc);
                    atomicAdd(a.sum_u + k, su);
                    atomicAdd(a.cnt + k, sn);
                }
            }
        }
    }
    if (bad) atomicOr(a.flags, bad);
}

// ------------------------------------------------------------------ pass 2: levels
struct UpdateArgs {
    double* scratch;
    int64_t c, n;
    double lam, one_minus_lam;
    int first, update, raw_teacher;  // raw_teacher: tau_T = m_T (mode class_mean)
};

// Mirrors llkd.selection._reference.update_state / thresholds operation by operation
// (explicit _rn intrinsics: no FMA contraction).
__global__ void __launch_bounds__(kUpdateBlock) update_kernel(const UpdateArgs a) {
    __shared__ double sh[32];
    const Layout L(a.c);
    const int64_t C = a.c;
    double* w = a.scratch;
    const double* g_in = w + L.state_in;
    const double* mT_in = g_in + 2;
    const double* mS_in = mT_in + C;
    const double* sum_c = w + L.sum_c;
    const double* sum_u = w + L.sum_u;
    const unsigned long long* cnt = reinterpret_cast<const unsigned long long*>(w + L.cnt);
    double* out_g = w + L.out_g;
    double* out_mT = w + L.out_m;
    double* out_mS = out_mT + C;
    double* tauT = w + L.tau;
    double* tauS = tauT + C;

    double tc = 0.0, tu = 0.0;
    for (int64_t k = threadIdx.x; k < C; k += blockDim.x) {
        tc += sum_c[k];
        tu += sum_u[k];
    }
    tc = block_reduce<double, false>(tc, sh);
    tu = block_reduce<double, false>(tu, sh);
    const double nd = static_cast<double>(a.n);
    const double bc = __ddiv_rn(tc, nd), bu = __ddiv_rn(tu, nd);
    const double lam = a.lam, oml = a.one_minus_lam;

    double gT = g_in[0], gS = g_in[1];
    if (a.update) {
        if (a.first) {
            gT = bc;
            gS = bu;
        } else {
            gT = __dadd_rn(__dmul_rn(lam, gT), __dmul_rn(oml, bc));
            gS = __dadd_rn(__dmul_rn(lam, gS), __dmul_rn(oml, bu));
        }
    }
    double maxT = -DBL_MAX, maxS = -DBL_MAX;
    for (int64_t k = threadIdx.x; k < C; k += blockDim.x) {
        double mT = mT_in[k], mS = mS_in[k];
        if (a.update) {
            const unsigned long long nk = cnt[k];
            const bool present = nk > 0ull;
            const double cbT = present ? __ddiv_rn(sum_c[k], static_cast<double>(nk)) : bc;
            const double cbS = present ? __ddiv_rn(sum_u[k], static_cast<double>(nk)) : bu;
            if (a.first) {
                mT = cbT;
                mS = cbS;
            } else if (present) {
                mT = __dadd_rn(__dmul_rn(lam, mT), __dmul_rn(oml, cbT));
                mS = __dadd_rn(__dmul_rn(lam, mS), __dmul_rn(oml, cbS));
            }
        }
        out_mT[k] = mT;
        out_mS[k] = mS;
        maxT = fmax(maxT, mT);
        maxS = fmax(maxS, mS);
    }
    maxT = block_reduce<double, true>(maxT, sh);
    maxS = block_reduce<double, true>(maxS, sh);
    if (threadIdx.x == 0) {
        out_g[0] = gT;
        out_g[1] = gS;
    }
    for (int64_t k = threadIdx.x; k < C; k += blockDim.x) {  // same k per thread as above
        tauT[k] = a.raw_teacher ? out_mT[k] : (maxT > 0.0 ? __ddiv_rn(__dmul_rn(gT, out_mT[k]), maxT) : 0.0);
        tauS[k] = maxS > 0.0 ? __ddiv_rn(__dmul_rn(gS, out_mS[k]), maxS) : 0.0;
    }
}

// ------------------------------------------------------------------ pass 3: mask
struct SelectArgs {
    int64_t n, c;
    const void* labels;
    int labels64;
    const void* conf;
    int conf64;
    const void* u;
    const double* draws;
    uint8_t* mask;
    void* w;
    const double* tau;  // tau_T[c] then tau_S[c]
    double* sel_sum;
    unsigned long long* sel_cnt;
    double fixed, rate, tie;
    double n_classes;  // C, as a double (mode confidence)
};

template <typename T, int MODE, bool PRODUCT>
__global__ void __launch_bounds__(kBlock) select_kernel(const SelectArgs a) {
    constexpr int U = 4;  // rows in flight per thread
    __shared__ double sh_d[32];
    __shared__ unsigned long long sh_n[32];
    const T* __restrict__ uu = static_cast<const T*>(a.u);
    T* __restrict__ w = static_cast<T*>(a.w);
    const int64_t n = a.n, C = a.c;
    const double* tauT = a.tau;
    const double* tauS = a.tau + C;
    const double tie = a.tie;
    double rsum = 0.0;
    unsigned long long nsel = 0ull;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * kBlock * U;
    for (int64_t base = static_cast<int64_t>(blockIdx.x) * kBlock * U + threadIdx.x; base < n;
         base += stride) {
        int64_t y[U];
        double c[U], uv[U], d[U];
#pragma unroll
        for (int q = 0; q < U; ++q) {
            const int64_t i = base + q * kBlock;
            const bool v = i < n;
            constexpr bool kNeedY =
                MODE == kModeLLKD || MODE == kModeTeacher || MODE == kModeStudent || MODE == kModeClassMean;
            constexpr bool kNeedC = MODE != kModeStudent && MODE != kModeRandom && MODE != kModeAll;
            constexpr bool kNeedU = MODE == kModeLLKD || MODE == kModeStudent;
            y[q] = (kNeedY && v) ? load_label(a.labels, a.labels64, i) : 0;
            c[q] = ((kNeedC || PRODUCT) && v) ? load_conf(a.conf, a.conf64, i) : 0.0;
            uv[q] = ((kNeedU || PRODUCT) && v) ? static_cast<double>(__ldg(uu + i)) : 0.0;
            d[q] = (MODE == kModeRandom && v) ? __ldg(a.draws + i) : 0.0;
        }
#pragma unroll
        for (int q = 0; q < U; ++q) {
            const int64_t i = base + q * kBlock;
            if (i >= n) break;
            const int64_t k = y[q] < 0 ? 0 : (y[q] >= C ? C - 1 : y[q]);  // bad labels are flagged
            bool m;
            // value >= tau - tie, as llkd.selection._reference.select
            if constexpr (MODE == kModeLLKD)
                m = c[q] >= __ldg(tauT + k) - tie && uv[q] >= __ldg(tauS + k) - tie;
            else if constexpr (MODE == kModeTeacher || MODE == kModeClassMean)
                m = c[q] >= __ldg(tauT + k) - tie;
            else if constexpr (MODE == kModeStudent)
                m = uv[q] >= __ldg(tauS + k) - tie;
            else if constexpr (MODE == kModeAll || MODE == kModeConfidence)
                m = true;
            else if constexpr (MODE == kModeFixed)
                m = c[q] >= a.fixed;
            else
                m = d[q] < a.rate;
            a.mask[i] = m ? 1 : 0;
            if constexpr (PRODUCT) {
                const double r = MODE == kModeConfidence
                                     ? fmax(0.0, __ddiv_rn(__dsub_rn(__dmul_rn(a.n_classes, c[q]), 1.0),
                                                           __dsub_rn(a.n_classes, 1.0)))
                                     : (m ? c[q] * uv[q] : 0.0);
                w[i] = static_cast<T>(r);
                rsum += r;
                nsel += m ? 1ull : 0ull;
            } else {
                w[i] = m ? T(1) : T(0);
            }
        }
    }
    if constexpr (PRODUCT) {
        rsum = block_reduce<double, false>(rsum, sh_d);
        nsel = block_reduce<unsigned long long, false>(nsel, sh_n);
        if (threadIdx.x == 0 && nsel) {
            atomicAdd(a.sel_sum, rsum);
            atomicAdd(a.sel_cnt, nsel);
        }
    }
}

// ------------------------------------------------------------------ pass 4: weights
struct ScaleArgs {
    int64_t n;
    const uint8_t* mask;
    void* w;
    const double* sel_sum;
    const unsigned long long* sel_cnt;
};

template <typename T>
__device__ __forceinline__ T scale_weight(T r, double mean, double inv_mean);
template <>
__device__ __forceinline__ float scale_weight<float>(float r, double, double inv_mean) {
    return static_cast<float>(static_cast<double>(r) * inv_mean);
}
template <>
__device__ __forceinline__ double scale_weight<double>(double r, double mean, double) {
    return r / mean;  // as the reference: r / mean(r over selected)
}

template <typename T>
__global__ void __launch_bounds__(kBlock) scale_kernel(const ScaleArgs a) {
    constexpr int U = 4;
    T* __restrict__ w = static_cast<T*>(a.w);
    const double sum = *a.sel_sum;
    const unsigned long long cnt = *a.sel_cnt;
    const int64_t n = a.n;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * kBlock * U;
    const int64_t first = static_cast<int64_t>(blockIdx.x) * kBlock * U + threadIdx.x;
    if (sum > 0.0) {
        const double mean = sum / static_cast<double>(cnt);
        const double inv_mean = 1.0 / mean;
        for (int64_t base = first; base < n; base += stride) {
            T r[U];
#pragma unroll
            for (int q = 0; q < U; ++q) {
                const int64_t i = base + q * kBlock;
                r[q] = i < n ? w[i] : T(0);
            }
#pragma unroll
            for (int q = 0; q < U; ++q) {
                const int64_t i = base + q * kBlock;
                if (i < n) w[i] = scale_weight<T>(r[q], mean, inv_mean);
            }
        }
    } else {
        // Every selected row has c*u == 0 (or none is selected): selected rows weigh 1.
        for (int64_t base = first; base < n; base += stride) {
#pragma unroll
            for (int q = 0; q < U; ++q) {
                const int64_t i = base + q * kBlock;
                if (i < n) w[i] = a.mask[i] ? T(1) : T(0);
            }
        }
    }
}

// ------------------------------------------------------------------ host side
void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) {
        throw std::runtime_error(std::string("llkd CUDA kernel: ") + what +
                                 " failed: " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
    }
}

struct DeviceGuard {
    int prev = -1;
    bool changed = false;
    explicit DeviceGuard(int device) {
        check(cudaGetDevice(&prev), "cudaGetDevice");
        if (prev != device) {
            check(cudaSetDevice(device), "cudaSetDevice");
            changed = true;
        }
    }
    ~DeviceGuard() {
        if (changed) cudaSetDevice(prev);
    }
    DeviceGuard(const DeviceGuard&) = delete;
    DeviceGuard& operator=(const DeviceGuard&) = delete;
};

using RowKernel = void (*)(const RowArgs);

struct VariantDef {
    int G, K, acc;
    bool pf;
    RowKernel f32, f64;
    const char* name;
};

// name: G lanes per row x K logits per lane, where the class sums go, +pf: prefetch
#define LLKD_V(G, K, A, PF, NAME) \
    {G, K, A, PF, row_kernel<float, G, K, A, PF>, row_kernel<double, G, K, A, PF>, NAME}

// Kept from the sweep on an H200 (benchmarks/CUDA_NOTES.md, run 2): the fastest per class
// range and a runner-up; wider row groups (4-32 lanes for C <= 128) lost everywhere.
const VariantDef kVariants[] = {
    LLKD_V(1, 2, kAccPriv, true, "1x2-priv+pf"),        // 0   C <= 2
    LLKD_V(1, 4, kAccPriv, true, "1x4-priv+pf"),        // 1   C <= 4
    LLKD_V(2, 4, kAccPriv, true, "2x4-priv+pf"),        // 2   C <= 8
    LLKD_V(2, 8, kAccPriv, true, "2x8-priv+pf"),        // 3   C <= 16
    LLKD_V(2, 10, kAccPriv, false, "2x10-priv"),        // 4   C <= 20
    LLKD_V(2, 10, kAccPriv, true, "2x10-priv+pf"),      // 5   C <= 20
    LLKD_V(2, 16, kAccPriv, true, "2x16-priv+pf"),      // 6   C <= 32
    LLKD_V(8, 16, kAccPriv, false, "8x16-priv"),        // 7   C <= 128
    LLKD_V(4, 32, kAccSmem, false, "4x32-smem"),        // 8   C <= 2048 (chunked above 128)
    LLKD_V(8, 32, kAccSmem, false, "8x32-smem"),        // 9   C <= 2048 (chunked above 256)
    LLKD_V(32, 16, kAccSmem, false, "32x16-smem"),      // 10  C <= 2048 (chunked above 512)
    LLKD_V(32, 16, kAccGlobal, false, "32x16-global"),  // 11  any C
};
#undef LLKD_V
constexpr int kNumVariants = static_cast<int>(sizeof(kVariants) / sizeof(kVariants[0]));

int64_t variant_max_classes(const VariantDef& v) {
    if (v.acc == kAccPriv) return static_cast<int64_t>(v.G) * v.K;
    if (v.acc == kAccSmem) return kSmemMaxClasses;
    return -1;
}

int priv_slots(const VariantDef& v, int64_t c) { return static_cast<int>((c + v.G - 1) / v.G); }

size_t row_smem_bytes(const VariantDef& v, int64_t c) {
    if (v.acc == kAccPriv)
        return static_cast<size_t>(priv_slots(v, c)) * kBlock * (2 * sizeof(double) + sizeof(unsigned));
    if (v.acc == kAccSmem) return static_cast<size_t>(c) * 3 * sizeof(double);
    return 0;
}

bool variant_accepts(const VariantDef& v, int64_t c) {
    const int64_t mx = variant_max_classes(v);
    return mx < 0 || c <= mx;
}

struct DeviceInfo {
    int sms = 0;
};

std::mutex g_mutex;
std::map<int, DeviceInfo> g_devices;
std::map<std::tuple<int, const void*, size_t>, int> g_occupancy;
std::map<std::pair<int, const void*>, size_t> g_smem_optin;

// Kernels that need more than 48 KiB of dynamic shared memory must opt in (per device).
template <typename F>
void ensure_smem(int device, F kernel, size_t bytes) {
    if (bytes <= 48 * 1024) return;
    const auto key = std::make_pair(device, reinterpret_cast<const void*>(kernel));
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_smem_optin.find(key);
    if (it != g_smem_optin.end() && it->second >= bytes) return;
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
          "cudaFuncSetAttribute (dynamic shared memory)");
    g_smem_optin[key] = bytes;
}

// Page-locked staging buffer for the O(C) copies (true async DMA, no CPU-side staging).
struct PinnedBuffer {
    double* ptr = nullptr;
    size_t words = 0;
    double* get(size_t n) {
        if (n > words) {
            if (ptr) cudaFreeHost(ptr);
            ptr = nullptr;
            words = 0;
            check(cudaMallocHost(reinterpret_cast<void**>(&ptr), n * sizeof(double)), "cudaMallocHost");
            words = n;
        }
        return ptr;
    }
    ~PinnedBuffer() {
        if (ptr) cudaFreeHost(ptr);  // may fail at process exit; nothing to do then
    }
};

int sm_count(int device) {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_devices.find(device);
    if (it != g_devices.end()) return it->second.sms;
    int sms = 0;
    check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
    g_devices[device].sms = sms;
    return sms;
}

template <typename F>
int blocks_per_sm(int device, F kernel, int threads, size_t smem) {
    const auto key = std::make_tuple(device, reinterpret_cast<const void*>(kernel), smem);
    {
        std::lock_guard<std::mutex> lock(g_mutex);
        auto it = g_occupancy.find(key);
        if (it != g_occupancy.end()) return it->second;
    }
    int nb = 0;
    check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, kernel, threads, smem),
          "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
    if (nb < 1) nb = 1;
    std::lock_guard<std::mutex> lock(g_mutex);
    g_occupancy[key] = nb;
    return nb;
}

int grid_for(int64_t work_blocks, int device, int per_sm) {
    const int64_t cap = static_cast<int64_t>(sm_count(device)) * per_sm;
    int64_t g = work_blocks < cap ? work_blocks : cap;
    return static_cast<int>(g < 1 ? 1 : g);
}

// The per-row inputs the row and select kernels read (RowArgs, SelectArgs).
template <class A>
void set_row_inputs(A& a, const StepArgs& p) {
    a.n = p.n;
    a.c = p.c;
    a.labels = p.labels;
    a.labels64 = p.labels_dtype == DType::I64;
    a.conf = p.confidence;
    a.conf64 = p.confidence_dtype == DType::F64;
}

template <typename T>
void launch_tail(const StepArgs& p, double* sw, const Layout& L, cudaStream_t stream, bool product) {
    SelectArgs s{};
    set_row_inputs(s, p);
    s.u = p.out_uncertainty;
    s.draws = p.draws;
    s.mask = p.out_mask;
    s.w = p.out_weights;
    s.tau = sw + L.tau;
    s.sel_sum = sw + L.sel_sum;
    s.sel_cnt = reinterpret_cast<unsigned long long*>(sw + L.sel_cnt);
    s.fixed = p.fixed_threshold;
    s.n_classes = static_cast<double>(p.c);
    s.rate = p.random_rate;
    s.tie = kTieTolerance;
    using SelectKernel = void (*)(const SelectArgs);
    // [mode][product]; mode "all" never uses the product weighting
    static_assert(llkd::kNumModes == 8, "one row of kSelect per mode");
    static const SelectKernel kSelect[llkd::kNumModes][2] = {
        {select_kernel<T, kModeLLKD, false>, select_kernel<T, kModeLLKD, true>},
        {select_kernel<T, kModeTeacher, false>, select_kernel<T, kModeTeacher, true>},
        {select_kernel<T, kModeStudent, false>, select_kernel<T, kModeStudent, true>},
        {select_kernel<T, kModeAll, false>, select_kernel<T, kModeAll, false>},
        {select_kernel<T, kModeFixed, false>, select_kernel<T, kModeFixed, true>},
        {select_kernel<T, kModeRandom, false>, select_kernel<T, kModeRandom, true>},
        {select_kernel<T, kModeClassMean, false>, select_kernel<T, kModeClassMean, true>},
        {select_kernel<T, kModeConfidence, true>,
         select_kernel<T, kModeConfidence, true>},  // always c / mean c
    };
    const SelectKernel sk = kSelect[p.mode][product ? 1 : 0];
    const int64_t blocks = (p.n + kBlock * 4 - 1) / (kBlock * 4);
    const int gs = grid_for(blocks, p.device, blocks_per_sm(p.device, sk, kBlock, 0));
    sk<<<gs, kBlock, 0, stream>>>(s);
    check(cudaGetLastError(), "select kernel launch");
    if (product) {
        ScaleArgs c{};
        c.n = p.n;
        c.mask = p.out_mask;
        c.w = p.out_weights;
        c.sel_sum = s.sel_sum;
        c.sel_cnt = s.sel_cnt;
        const int gc = grid_for(blocks, p.device, blocks_per_sm(p.device, scale_kernel<T>, kBlock, 0));
        scale_kernel<T><<<gc, kBlock, 0, stream>>>(c);
        check(cudaGetLastError(), "scale kernel launch");
    }
}

}  // namespace

// ------------------------------------------------------------------ public API
size_t scratch_bytes(int64_t c) { return static_cast<size_t>(Layout(c).total) * sizeof(double); }

std::vector<VariantInfo> variants() {
    std::vector<VariantInfo> out;
    for (int i = 0; i < kNumVariants; ++i) {
        const VariantDef& v = kVariants[i];
        out.push_back({i, v.G, v.K, v.pf ? 1 : 0, v.acc, variant_max_classes(v), v.name});
    }
    return out;
}

int default_variant(int64_t c, DType) {
    // Fastest measured on an H200 at N = 1e7 (C = 1000: N = 1e6); see benchmarks/CUDA_NOTES.md.
    if (c <= 2) return 0;
    if (c <= 4) return 1;
    if (c <= 8) return 2;
    if (c <= 16) return 3;
    if (c <= 20) return 4;
    if (c <= 32) return 6;
    if (c <= 128) return 8;
    if (c <= kSmemMaxClasses) return 10;
    return 11;
}

void step(const StepArgs& p, StepResult& r) {
    if (p.n < 1)
        throw std::invalid_argument("student_logits is empty: a selection step needs at least one sample");
    if (p.c < 2) throw std::invalid_argument("n_classes must be >= 2");
    if (p.c > (int64_t{1} << 30)) throw std::invalid_argument("n_classes must be < 2**30");
    if (p.logits_dtype != DType::F32 && p.logits_dtype != DType::F64)
        throw std::invalid_argument("student_logits must be float32 or float64");
    if (p.labels_dtype != DType::I32 && p.labels_dtype != DType::I64)
        throw std::invalid_argument("pseudo_labels must be int32 or int64");
    if (p.confidence_dtype != DType::F32 && p.confidence_dtype != DType::F64)
        throw std::invalid_argument("teacher_confidence must be float32 or float64");
    if (!p.logits || !p.labels || !p.confidence || !p.out_uncertainty || !p.out_mask || !p.out_weights ||
        !p.scratch || !p.state_global || !p.state_class)
        throw std::invalid_argument("null pointer passed to the CUDA selection kernel");
    if (p.mode < 0 || p.mode >= llkd::kNumModes) throw std::invalid_argument("unknown selection mode code");
    if (p.weighting < 0 || p.weighting >= llkd::kNumWeightings)
        throw std::invalid_argument("unknown weighting code");
    if (p.mode == kModeRandom && !p.draws) throw std::invalid_argument("mode 'random' needs random_draws");
    if (p.scratch_size < scratch_bytes(p.c)) throw std::invalid_argument("scratch buffer too small");
    int vid = p.variant < 0 ? default_variant(p.c, p.logits_dtype) : p.variant;
    if (vid >= kNumVariants) throw std::invalid_argument("unknown kernel variant " + std::to_string(vid));
    const VariantDef& v = kVariants[vid];
    if (!variant_accepts(v, p.c))
        throw std::invalid_argument("kernel variant " + std::to_string(vid) + " (" + v.name +
                                    ") does not accept " + std::to_string(p.c) + " classes");

    DeviceGuard guard(p.device);
    const cudaStream_t stream = reinterpret_cast<cudaStream_t>(p.stream);
    const Layout L(p.c);
    double* sw = static_cast<double*>(p.scratch);

    // Upload the levels and zero the accumulators in one copy, through a page-locked
    // buffer of this thread (the step ends with a stream synchronisation, so it is free
    // again when the next step on this thread starts).
    static thread_local PinnedBuffer pinned;
    const size_t n_up = static_cast<size_t>(L.out_g), n_down = static_cast<size_t>(L.total - L.flags);
    double* up = pinned.get(n_up + n_down);
    double* down = up + n_up;
    std::memset(up, 0, n_up * sizeof(double));
    up[0] = p.state_global[0];
    up[1] = p.state_global[1];
    std::memcpy(up + 2, p.state_class, sizeof(double) * 2 * p.c);
    check(cudaMemcpyAsync(sw, up, n_up * sizeof(double), cudaMemcpyHostToDevice, stream),
          "cudaMemcpyAsync (levels to device)");

    RowArgs ra{};
    ra.logits = p.logits;
    set_row_inputs(ra, p);
    ra.out_u = p.out_uncertainty;
    ra.sum_c = sw + L.sum_c;
    ra.sum_u = sw + L.sum_u;
    ra.cnt = reinterpret_cast<unsigned long long*>(sw + L.cnt);
    ra.flags = reinterpret_cast<unsigned*>(sw + L.flags);
    ra.log_c = std::log(static_cast<double>(p.c));
    ra.inv_log_c = 1.0 / ra.log_c;
    ra.accumulate = p.update ? 1 : 0;
    ra.acc_slots = priv_slots(v, p.c);
    const RowKernel rk = p.logits_dtype == DType::F32 ? v.f32 : v.f64;
    const size_t smem = row_smem_bytes(v, p.c);
    ensure_smem(p.device, rk, smem);
    const int64_t rows_per_block = static_cast<int64_t>(kBlock / v.G);
    const int gr = grid_for((p.n + rows_per_block - 1) / rows_per_block, p.device,
                            blocks_per_sm(p.device, rk, kBlock, smem));
    rk<<<gr, kBlock, smem, stream>>>(ra);
    check(cudaGetLastError(), "row kernel launch");

    UpdateArgs ua{};
    ua.scratch = sw;
    ua.c = p.c;
    ua.n = p.n;
    ua.lam = p.momentum;
    ua.one_minus_lam = 1.0 - p.momentum;
    ua.first = p.n_updates == 0 ? 1 : 0;
    ua.update = p.update ? 1 : 0;
    ua.raw_teacher = llkd::raw_teacher_levels(p.mode) ? 1 : 0;
    update_kernel<<<1, kUpdateBlock, 0, stream>>>(ua);
    check(cudaGetLastError(), "update kernel launch");

    const bool product = llkd::normalised_weights(p.mode, p.weighting);
    if (p.logits_dtype == DType::F32)
        launch_tail<float>(p, sw, L, stream, product);
    else
        launch_tail<double>(p, sw, L, stream, product);

    check(cudaMemcpyAsync(down, sw + L.flags, n_down * sizeof(double), cudaMemcpyDeviceToHost, stream),
          "cudaMemcpyAsync (results to host)");
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");

    unsigned flags = 0;
    std::memcpy(&flags, &down[0], sizeof(unsigned));
    unsigned long long nsel = 0;
    std::memcpy(&nsel, &down[L.sel_cnt - L.flags], sizeof(nsel));
    r.flags = flags;
    r.selected_sum = down[L.sel_sum - L.flags];
    r.n_selected = nsel;
    const double* g = &down[L.out_g - L.flags];
    r.global_levels.assign(g, g + 2);
    const double* m = &down[L.out_m - L.flags];
    r.class_levels.assign(m, m + 2 * p.c);
    const double* t = &down[L.tau - L.flags];
    r.thresholds.assign(t, t + 2 * p.c);
    r.variant = vid;
}

int device_count() noexcept {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();  // clear it: no driver or no device is not an error here
        return 0;
    }
    return n < 0 ? 0 : n;
}

int pointer_device(uintptr_t ptr) {
    cudaPointerAttributes at{};
    const cudaError_t e = cudaPointerGetAttributes(&at, reinterpret_cast<const void*>(ptr));
    if (e != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    if (at.type == cudaMemoryTypeDevice || at.type == cudaMemoryTypeManaged) return at.device;
    return -1;
}

int runtime_version() noexcept { return CUDART_VERSION; }

int driver_version() noexcept {
    int v = 0;
    if (cudaDriverGetVersion(&v) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return v;
}

std::string device_name(int device) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
        cudaGetLastError();
        return std::string();
    }
    return std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ", " +
           std::to_string(prop.multiProcessorCount) + " SMs)";
}

const char* compiled_archs() noexcept { return LLKD_CUDA_ARCHS; }

}  // namespace llkd_cuda
