// The contract shared by the CPU kernel, the CUDA kernel and their bindings: mode and
// weighting codes, dtype codes, the bits of the CUDA flag word and the tie tolerance.
// Defined here once; both compiled modules export it to Python (llkd.selection._contract
// derives MODES, WEIGHTINGS and the codes from it). Semantics: docs/design.md section 3 and the
// NumPy reference, src/llkd/selection/_reference.py.
#pragma once

#include <cstdint>

namespace llkd {

// Selection modes; the code is the index into kModeNames.
// kModeClassMean: the teacher test against the unnormalised class level, tau_T[k] = m_T[k].
// kModeConfidence: every sample, weighted by its confidence above chance,
// e = max(0, (C c - 1) / (C - 1)), normalised to mean 1 over the batch (whatever the weighting).
enum Mode : int {
    kModeLLKD = 0,
    kModeTeacher,
    kModeStudent,
    kModeAll,
    kModeFixed,
    kModeRandom,
    kModeClassMean,
    kModeConfidence,
    kNumModes
};
inline constexpr const char* kModeNames[kNumModes] = {"llkd",  "teacher", "student",    "all",
                                                      "fixed", "random",  "class_mean", "confidence"};

// Whether a mode's teacher thresholds are the raw class levels (no g_T / max_j m_T[j] factor).
inline constexpr bool raw_teacher_levels(int mode) { return mode == kModeClassMean; }

// Weightings of the selected samples; the code is the index into kWeightingNames.
enum Weighting : int { kWeightProduct = 0, kWeightNone, kNumWeightings };
inline constexpr const char* kWeightingNames[kNumWeightings] = {"product", "none"};

// Whether a step normalises its weights r_i to mean 1 over the selected rows (r_i = e_i in
// mode confidence, c_i * u_i under weighting product).
inline constexpr bool normalised_weights(int mode, int weighting) {
    return mode == kModeConfidence || (weighting == kWeightProduct && mode != kModeAll);
}

// Element types the kernels read (logits: F32/F64; CUDA labels: I32/I64).
enum class DType : int { F32 = 0, F64 = 1, I32 = 2, I64 = 3 };

// Bits of the flag word the CUDA kernel raises for bad values found on the device.
enum Flag : unsigned { kFlagBadLogits = 1u, kFlagBadLabels = 2u, kFlagBadConfidence = 4u };

// Threshold tests pass when value >= tau - kTieTolerance. Levels are running means of
// values in [0, 1]; when every value is the same (a teacher with discrete or constant
// confidences, uniform logits), the mean and the momentum update can land one ulp above
// that value and would reject every tied sample. 1e-9 is far above float64 rounding of
// such means and far below any meaningful difference.
inline constexpr double kTieTolerance = 1e-9;

}  // namespace llkd
