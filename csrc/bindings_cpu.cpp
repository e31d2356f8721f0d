// pybind11 bindings of the CPU selection kernel: llkd._selection_cpu.
//
// Every argument is checked here (type, dtype, shape, contiguity, alignment,
// writability) before any pointer is taken, so calling the module directly with
// garbage raises TypeError/ValueError naming the argument instead of crashing. Value
// checks that need a pass over the data (labels in range, confidences in [0, 1],
// finite logits) are fused into the kernel's own pass and raise ValueError too. The
// caller's state arrays are written only after the whole step succeeded.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "bindings_common.hpp"
#include "selection_cpu.hpp"

namespace py = pybind11;
using namespace llkd::bind;

namespace {

static_assert(sizeof(bool) == 1, "numpy bool arrays are written as bytes");

py::array vector_arg(py::handle obj, const char* name, int64_t n, const char* dtype_name, bool is_int) {
    py::array a = as_ndarray(obj, name);
    const bool ok = is_int ? has_dtype<int64_t>(a) : has_dtype<double>(a);
    if (!ok)
        throw py::type_error(std::string(name) + " must have dtype " + dtype_name + ", got " +
                             std::string(py::str(a.dtype())));
    if (a.ndim() != 1 || a.shape(0) != n)
        throw py::value_error(std::string(name) + " must have shape (" + std::to_string(n) +
                              ",) to match student_logits, got " + shape_str(a));
    require_layout(a, name);
    return a;
}

// The kernel configuration, bound as a class (as hnswlib binds Index): the parameters
// are checked once, and step() takes the arrays of one batch and the per-call flags.
struct Kernel {
    KernelConfig config;
    int64_t n_threads;

    Kernel(KernelConfig c, int64_t n_threads_) : config(std::move(c)), n_threads(n_threads_) {
        if (n_threads < 1) throw py::value_error("n_threads must be >= 1, got " + std::to_string(n_threads));
    }
    int64_t extra() const { return n_threads; }

    py::tuple step(py::handle logits_obj, py::handle labels_obj, py::handle confidence_obj,
                   py::handle global_obj, py::handle class_obj, int64_t n_updates, py::handle draws_obj,
                   bool update) const {
        // ---- logits ----
        py::array logits = as_ndarray(logits_obj, "student_logits");
        llkd::StepInput in;
        if (has_dtype<float>(logits))
            in.dtype = llkd::DType::F32;
        else if (has_dtype<double>(logits))
            in.dtype = llkd::DType::F64;
        else
            throw py::type_error("student_logits must be a float32 or float64 array, got dtype " +
                                 std::string(py::str(logits.dtype())));
        if (logits.ndim() != 2)
            throw py::value_error("student_logits must be 2-D (batch, n_classes), got shape " +
                                  shape_str(logits));
        const int64_t B = logits.shape(0), C = logits.shape(1);
        if (B < 1)
            throw py::value_error("student_logits is empty: a selection step needs at least one sample");
        config.check_columns(C);
        require_layout(logits, "student_logits");

        // ---- per-sample arrays and state ----
        py::array labels = vector_arg(labels_obj, "pseudo_labels", B, "int64", true);
        py::array confidence = vector_arg(confidence_obj, "teacher_confidence", B, "float64", false);
        py::array draws;
        const bool has_draws = !draws_obj.is_none();
        if (has_draws) draws = vector_arg(draws_obj, "random_draws", B, "float64", false);
        StateArrays state(global_obj, class_obj, C);
        if (config.mode == llkd::kModeRandom && !has_draws)
            throw py::value_error("random_draws must be given for mode 'random'");

        in.logits = logits.data();
        in.n_rows = B;
        in.n_classes = C;
        in.labels = static_cast<const int64_t*>(labels.data());
        in.confidence = static_cast<const double*>(confidence.data());
        in.global_levels = state.global_levels();
        in.class_levels = state.class_levels();
        in.n_updates = n_updates;
        config.fill(in);
        in.random_draws = has_draws ? static_cast<const double*>(draws.data()) : nullptr;
        in.update = update;
        in.n_threads = n_threads;

        py::array_t<bool> mask(B);
        py::array_t<double> weights(B), uncertainty(B), tau_t(C), tau_s(C);
        py::array_t<double> new_global(2), new_class(2 * C);
        llkd::StepOutput out;
        out.mask = reinterpret_cast<uint8_t*>(mask.mutable_data());
        out.weights = weights.mutable_data();
        out.uncertainty = uncertainty.mutable_data();
        out.tau_teacher = tau_t.mutable_data();
        out.tau_student = tau_s.mutable_data();
        out.new_global = new_global.mutable_data();
        out.new_class = new_class.mutable_data();
        {
            py::gil_scoped_release release;
            llkd::step(in, out);  // llkd::InputError -> ValueError (std::invalid_argument)
        }
        // Success: commit the state (only now, so that a failed step leaves it untouched).
        if (update) state.commit(out.new_global, out.new_class);
        return py::make_tuple(mask, weights, uncertainty, tau_t, tau_s, out.new_n_updates);
    }
};

py::array_t<double> pool_uncertainty(py::handle logits_obj, int64_t n_threads) {
    py::array logits = as_ndarray(logits_obj, "logits");
    llkd::DType dtype;
    if (has_dtype<float>(logits))
        dtype = llkd::DType::F32;
    else if (has_dtype<double>(logits))
        dtype = llkd::DType::F64;
    else
        throw py::type_error("logits must be a float32 or float64 array, got dtype " +
                             std::string(py::str(logits.dtype())));
    if (logits.ndim() != 2)
        throw py::value_error("logits must be 2-D (n, n_classes), got shape " + shape_str(logits));
    require_layout(logits, "logits");
    const int64_t B = logits.shape(0), C = logits.shape(1);
    py::array_t<double> out(B);
    const void* z = logits.data();
    double* u = out.mutable_data();
    {
        py::gil_scoped_release release;
        llkd::pool_uncertainty(z, dtype, B, C, n_threads, u);
    }
    return out;
}

py::dict build_info() {
    py::dict d;
    for (const auto& kv : llkd::build_facts()) d[py::str(kv.first)] = kv.second;
    d["simd_compiled"] = llkd::simd_compiled();
    d["simd_supported"] = llkd::simd_supported();
    d["simd_dispatched"] = llkd::simd_active();
    const char* env = std::getenv("LLKD_SIMD");
    d["simd_override"] = env ? py::object(py::str(env)) : py::object(py::none());
    d["pybind11"] = std::to_string(PYBIND11_VERSION_MAJOR) + "." + std::to_string(PYBIND11_VERSION_MINOR) +
                    "." + std::to_string(PYBIND11_VERSION_PATCH);
    d["gil_released"] = true;
    return d;
}

}  // namespace

PYBIND11_MODULE(_selection_cpu, m) {
    m.doc() =
        "LLKD sample selection, multi-threaded C++ kernel (private; use llkd.selection.AdaptiveSelector).";
    llkd::export_contract(m);
    bind_kernel<Kernel, int64_t>(
        m, R"doc(The CPU selection kernel for one configuration (docs/design.md section 3).

Kernel(n_classes, mode, weighting, momentum, fixed_threshold, random_rate, n_threads)
checks the configuration once; mode and weighting are names from MODES and WEIGHTINGS.)doc",
        "n_threads", 1)
        .def("step", &Kernel::step, py::arg("student_logits"), py::arg("pseudo_labels"),
             py::arg("teacher_confidence"), py::arg("global_levels"), py::arg("class_levels"),
             py::arg("n_updates"), py::arg("random_draws") = py::none(), py::arg("update") = true,
             R"doc(One selection step, with the GIL released while it runs.

Returns (mask, weights, uncertainty, teacher_threshold, student_threshold, n_updates).
With update=True the state arrays global_levels (2,) and class_levels (2, C) are
written in place, and only when the whole step succeeded; n_updates is the new count.)doc");
    m.def("pool_uncertainty", &pool_uncertainty, py::arg("logits"), py::arg("n_threads") = 1,
          R"doc(H(softmax(z)) / log C per row of logits (n, C), float64, with the GIL released: the
uncertainty of the selection step, for scoring a pool (teacher_budget). Non-finite logits
raise ValueError naming the first row; the result does not depend on n_threads.)doc");
    m.def("build_info", &build_info, "Compiler, SIMD variants compiled/supported/dispatched, threading.");
    m.def("_set_simd", &llkd::simd_select, py::arg("name"),
          "Switch the SIMD variant ('auto' restores the run-time choice); False when unavailable.");
    m.def("_simd_active", &llkd::simd_active);
}
