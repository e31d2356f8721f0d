// CUDA selection kernel of llkd: plain C++ interface (no CUDA headers needed here).
//
// Spec section 3, for a batch of N rows of C logits living on a CUDA device:
//   pass 1 (row kernel)     one read of the logits per row: row max, exp-sum and entropy
//                           H = log s - sum_j e_j (z_j - m) / s, u = clip(H / log C, 0, 1);
//                           per-class sums of c and u and counts (float64) reduced on the
//                           device; bad labels, confidences and non-finite logits raise
//                           bits of a device flag word.
//   pass 2 (update kernel)  one block: levels update (float64, no FMA contraction, the
//                           reference's operation order) and thresholds.
//   pass 3 (select kernel)  mask, r = c * u and its sum over the selected rows.
//   pass 4 (scale kernel)   weights r / mean(r over selected) (product weighting only).
// Then one device-to-host copy of O(C) numbers (flags, new levels, thresholds) and a
// stream synchronisation. The logits never leave the device.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "selection_contract.hpp"

namespace llkd_cuda {

// Modes, weightings, dtypes, flag bits (the flag word returned by step()) and the tie
// tolerance: selection_contract.hpp.
using llkd::DType;
using llkd::kFlagBadConfidence;
using llkd::kFlagBadLabels;
using llkd::kFlagBadLogits;
using llkd::kModeAll;
using llkd::kModeClassMean;
using llkd::kModeConfidence;
using llkd::kModeFixed;
using llkd::kModeLLKD;
using llkd::kModeRandom;
using llkd::kModeStudent;
using llkd::kModeTeacher;
using llkd::kTieTolerance;
using llkd::kWeightNone;
using llkd::kWeightProduct;

struct StepArgs {
    const void* logits = nullptr;  // (n, c), C-contiguous, dtype logits_dtype (F32 / F64)
    DType logits_dtype = DType::F32;
    int64_t n = 0;
    int64_t c = 0;
    const void* labels = nullptr;  // (n,), I32 / I64
    DType labels_dtype = DType::I64;
    const void* confidence = nullptr;  // (n,), F32 / F64
    DType confidence_dtype = DType::F64;
    const double* draws = nullptr;    // (n,) float64, mode kModeRandom only
    void* out_uncertainty = nullptr;  // (n,), logits dtype
    uint8_t* out_mask = nullptr;      // (n,), bool
    void* out_weights = nullptr;      // (n,), logits dtype
    void* scratch = nullptr;          // scratch_bytes(c) bytes of device memory
    size_t scratch_size = 0;
    const double* state_global = nullptr;  // host (2,)
    const double* state_class = nullptr;   // host (2, c)
    int64_t n_updates = 0;
    double momentum = 0.99;
    int mode = kModeLLKD;
    int weighting = kWeightProduct;
    double fixed_threshold = 0.9;
    double random_rate = 0.1;
    bool update = true;
    uintptr_t stream = 0;  // cudaStream_t as an integer (0: legacy default stream)
    int device = 0;        // device the pointers live on
    int variant = -1;      // row-kernel variant, -1: chosen from c
};

struct StepResult {
    unsigned flags = 0;
    std::vector<double> global_levels;  // (2,)   levels after this step (== input if !update)
    std::vector<double> class_levels;   // (2*c,)
    std::vector<double> thresholds;     // (2*c,) teacher thresholds then student thresholds
    double selected_sum = 0.0;          // sum of c*u over the selected rows (product weighting)
    uint64_t n_selected = 0;            // selected rows (product weighting only)
    int variant = -1;                   // row-kernel variant that ran
};

struct VariantInfo {
    int id;
    int threads_per_row;   // G: lanes that share one row
    int elems_per_thread;  // K: logits a lane holds per chunk (G*K per chunk)
    int prefetch;          // 1: the next row tile is loaded while the current one is processed
    int accumulation;      // 0 private shared-memory slots (c <= G*K), 1 shared atomics, 2 global atomics
    int64_t max_classes;   // largest c this variant accepts (-1: any)
    std::string name;
};

// Device bytes of scratch space step() needs for c classes.
size_t scratch_bytes(int64_t c);

// Runs one selection step; throws std::invalid_argument for bad arguments and
// std::runtime_error for CUDA failures. Does not touch the host state arrays.
void step(const StepArgs& args, StepResult& result);

// Number of visible CUDA devices; 0 without a driver or device (never throws).
int device_count() noexcept;

// Device that owns a pointer; -1 if it is not device (or managed) memory.
int pointer_device(uintptr_t ptr);

std::vector<VariantInfo> variants();
int default_variant(int64_t c, DType logits_dtype);

int runtime_version() noexcept;  // cudart this module links (e.g. 13000)
int driver_version() noexcept;   // 0 without a driver
std::string device_name(int device);
const char* compiled_archs() noexcept;

}  // namespace llkd_cuda
