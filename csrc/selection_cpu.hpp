// LLKD batched sample selection on the CPU (docs/design.md section 3): public C++ interface.
//
// The kernel is independent of Python; bindings_cpu.cpp wraps it with pybind11.
// Semantics are those of the NumPy reference, src/llkd/selection/_reference.py.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "selection_contract.hpp"

namespace llkd {

// Bad input found by the kernel (mapped to ValueError by the bindings). The message
// names the argument, as the Python front end does.
struct InputError : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

struct StepInput {
    const void* logits = nullptr;  // [B, C] row-major, float32 or float64
    DType dtype = DType::F32;
    int64_t n_rows = 0;                     // B >= 1
    int64_t n_classes = 0;                  // C >= 2
    const int64_t* labels = nullptr;        // [B], in [0, C)
    const double* confidence = nullptr;     // [B], in [0, 1]
    const double* global_levels = nullptr;  // [2]   (g_T, g_S), read only
    const double* class_levels = nullptr;   // [2*C] (m_T, m_S), read only
    int64_t n_updates = 0;
    double momentum = 0.99;
    int mode = kModeLLKD;
    int weighting = kWeightProduct;
    double fixed_threshold = 0.9;
    const double* random_draws = nullptr;  // [B], required for kModeRandom
    double random_rate = 0.1;
    bool update = true;
    int64_t n_threads = 1;
};

// Caller-allocated outputs. The new state goes to new_global/new_class (never to the
// input levels), so a failed step leaves the caller's state untouched: the caller
// commits it only after step() returned.
struct StepOutput {
    uint8_t* mask = nullptr;        // [B] 0/1
    double* weights = nullptr;      // [B]
    double* uncertainty = nullptr;  // [B]
    double* tau_teacher = nullptr;  // [C]
    double* tau_student = nullptr;  // [C]
    double* new_global = nullptr;   // [2]
    double* new_class = nullptr;    // [2*C]
    int64_t new_n_updates = 0;
};

// One selection step. Throws InputError for bad input (labels out of range,
// confidences outside [0, 1] or NaN, non-finite logits or draws, bad parameters).
// Thread-safe; runs without touching Python.
void step(const StepInput& in, StepOutput& out);

// Pool scoring for teacher_budget: u[r] = H(softmax(z_r)) / log C, the uncertainty of
// pass 1 without labels, state or selection (llkd.selection.pool_uncertainty). Rows
// are split into the step's chunks, so the result does not depend on n_threads.
// Throws InputError for non-finite logits (naming the first row), C < 2 or n_rows < 0.
void pool_uncertainty(const void* logits, DType dtype, int64_t n_rows, int64_t n_classes, int64_t n_threads,
                      double* out);

// SIMD variants compiled into this build, those this CPU runs, and the active one.
std::vector<std::string> simd_compiled();
std::vector<std::string> simd_supported();
std::string simd_active();
// Switch the active variant (for tests and benchmarks); returns false when this CPU
// or build has no such variant. "auto" restores the run-time choice.
bool simd_select(const std::string& name);

// Static facts about the build, for llkd.show_config().
std::map<std::string, std::string> build_facts();

}  // namespace llkd
