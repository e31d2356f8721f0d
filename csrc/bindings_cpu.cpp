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

#include "contract_py.hpp"
#include "selection_cpu.hpp"

namespace py = pybind11;

namespace {

static_assert(sizeof(bool) == 1, "numpy bool arrays are written as bytes");

std::string type_name(py::handle obj) { return py::str(py::type::handle_of(obj).attr("__name__")); }

py::array as_ndarray(py::handle obj, const char* name) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + " must be a numpy.ndarray, got " + type_name(obj));
    return py::reinterpret_borrow<py::array>(obj);
}

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
        if (i) s += ", ";
        s += std::to_string(a.shape(i));
    }
    if (a.ndim() == 1) s += ",";
    return s + ")";
}

template <class T>
bool has_dtype(const py::array& a) {
    return py::isinstance<py::array_t<T>>(a);  // exact (and native byte order) dtype
}

void require_layout(const py::array& a, const char* name, bool writeable = false) {
    if (!(a.flags() & py::array::c_style))
        throw py::value_error(std::string(name) + " must be C-contiguous (use numpy.ascontiguousarray)");
    if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
        throw py::value_error(std::string(name) + " must be aligned (use numpy.require(x, requirements='CA'))");
    if (writeable && !a.writeable()) throw py::value_error(std::string(name) + " must be writeable (it is updated in place)");
}

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

py::tuple step(py::object logits_obj, py::object labels_obj, py::object confidence_obj, py::object global_obj,
               py::object class_obj, int64_t n_updates, double momentum, int64_t mode, int64_t weighting,
               double fixed_threshold, py::object draws_obj, double random_rate, bool update, int64_t n_threads) {
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
        throw py::value_error("student_logits must be 2-D (batch, n_classes), got shape " + shape_str(logits));
    const int64_t B = logits.shape(0), C = logits.shape(1);
    if (B < 1) throw py::value_error("student_logits is empty: a selection step needs at least one sample");
    if (C < 2) throw py::value_error("student_logits must have at least 2 columns (classes), got " + std::to_string(C));
    require_layout(logits, "student_logits");

    // ---- per-sample arrays ----
    py::array labels = vector_arg(labels_obj, "pseudo_labels", B, "int64", true);
    py::array confidence = vector_arg(confidence_obj, "teacher_confidence", B, "float64", false);
    py::array draws;
    const bool has_draws = !draws_obj.is_none();
    if (has_draws) draws = vector_arg(draws_obj, "random_draws", B, "float64", false);

    // ---- state (in/out) ----
    py::array glob = as_ndarray(global_obj, "global_levels");
    if (!has_dtype<double>(glob))
        throw py::type_error("global_levels must have dtype float64, got " + std::string(py::str(glob.dtype())));
    if (glob.ndim() != 1 || glob.shape(0) != 2)
        throw py::value_error("global_levels must have shape (2,), got " + shape_str(glob));
    require_layout(glob, "global_levels", true);
    py::array cls = as_ndarray(class_obj, "class_levels");
    if (!has_dtype<double>(cls))
        throw py::type_error("class_levels must have dtype float64, got " + std::string(py::str(cls.dtype())));
    if (cls.ndim() != 2 || cls.shape(0) != 2 || cls.shape(1) != C)
        throw py::value_error("class_levels must have shape (2, " + std::to_string(C) +
                              ") to match student_logits, got " + shape_str(cls));
    require_layout(cls, "class_levels", true);

    // ---- scalars ----
    if (mode < 0 || mode >= llkd::kNumModes)
        throw py::value_error("mode must be a code in 0.." + std::to_string(llkd::kNumModes - 1) + ", got " +
                              std::to_string(mode));
    if (weighting < 0 || weighting >= llkd::kNumWeightings)
        throw py::value_error("weighting must be a code in 0.." + std::to_string(llkd::kNumWeightings - 1) +
                              ", got " + std::to_string(weighting));
    if (n_threads < 1) throw py::value_error("n_threads must be >= 1, got " + std::to_string(n_threads));
    if (mode == llkd::kModeRandom && !has_draws)
        throw py::value_error("random_draws must be given for mode 'random'");

    in.logits = logits.data();
    in.n_rows = B;
    in.n_classes = C;
    in.labels = static_cast<const int64_t*>(labels.data());
    in.confidence = static_cast<const double*>(confidence.data());
    in.global_levels = static_cast<const double*>(glob.data());
    in.class_levels = static_cast<const double*>(cls.data());
    in.n_updates = n_updates;
    in.momentum = momentum;
    in.mode = static_cast<int>(mode);
    in.weighting = static_cast<int>(weighting);
    in.fixed_threshold = fixed_threshold;
    in.random_draws = has_draws ? static_cast<const double*>(draws.data()) : nullptr;
    in.random_rate = random_rate;
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
    if (update) {
        std::memcpy(glob.mutable_data(), out.new_global, 2 * sizeof(double));
        std::memcpy(cls.mutable_data(), out.new_class, static_cast<size_t>(2 * C) * sizeof(double));
    }
    return py::make_tuple(mask, weights, uncertainty, tau_t, tau_s, out.new_n_updates);
}

uint64_t stream_read(py::object obj, int64_t n_threads) {
    py::array a = as_ndarray(obj, "data");
    if (!(a.flags() & py::array::c_style)) throw py::value_error("data must be C-contiguous");
    if (n_threads < 1) throw py::value_error("n_threads must be >= 1, got " + std::to_string(n_threads));
    const void* p = a.data();
    const size_t n = static_cast<size_t>(a.nbytes());
    py::gil_scoped_release release;
    return llkd::stream_read(p, n, n_threads);
}

py::dict build_info() {
    py::dict d;
    for (const auto& kv : llkd::build_facts()) d[py::str(kv.first)] = kv.second;
    d["simd_compiled"] = llkd::simd_compiled();
    d["simd_supported"] = llkd::simd_supported();
    d["simd_dispatched"] = llkd::simd_active();
    const char* env = std::getenv("LLKD_SIMD");
    d["simd_override"] = env ? py::object(py::str(env)) : py::object(py::none());
    d["pybind11"] = std::to_string(PYBIND11_VERSION_MAJOR) + "." + std::to_string(PYBIND11_VERSION_MINOR) + "." +
                    std::to_string(PYBIND11_VERSION_PATCH);
    d["gil_released"] = true;
    return d;
}

}  // namespace

PYBIND11_MODULE(_selection_cpu, m) {
    m.doc() = "LLKD sample selection, multi-threaded C++ kernel (private; use llkd.selection.AdaptiveSelector).";
    llkd::export_contract(m);
    m.def("step", &step, py::arg("student_logits"), py::arg("pseudo_labels"), py::arg("teacher_confidence"),
          py::arg("global_levels"), py::arg("class_levels"), py::arg("n_updates"), py::arg("momentum"),
          py::arg("mode"), py::arg("weighting"), py::arg("fixed_threshold"), py::arg("random_draws"),
          py::arg("random_rate"), py::arg("update"), py::arg("n_threads"),
          R"doc(One selection step of spec section 3.

Returns (mask, weights, uncertainty, tau_teacher, tau_student, new_n_updates). With
update=True the state arrays global_levels (2,) and class_levels (2, C) are updated in
place, and only when the step succeeds.)doc");
    m.def("stream_read", &stream_read, py::arg("data"), py::arg("n_threads") = 1,
          "Sum (mod 2**64) of `data` read as native 64-bit words plus its trailing bytes: the\n"
          "streaming-read reference of the benchmark.");
    m.def("build_info", &build_info, "Compiler, SIMD variants compiled/supported/dispatched, threading.");
    m.def("_set_simd", &llkd::simd_select, py::arg("name"),
          "Switch the SIMD variant ('auto' restores the run-time choice); False when unavailable.");
    m.def("_simd_active", &llkd::simd_active);
}
