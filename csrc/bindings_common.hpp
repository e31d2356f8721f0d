// Helpers shared by the pybind11 bindings of the CPU and the CUDA kernels: argument
// checks that name the argument, the state arrays (checked, then written in place only
// after a step succeeded) and the kernel configuration both bound Kernel classes hold.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "contract_py.hpp"

namespace llkd {
namespace bind {

namespace py = pybind11;

inline std::string type_name(py::handle obj) { return py::str(py::type::handle_of(obj).attr("__name__")); }

inline py::array as_ndarray(py::handle obj, const char* name) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + " must be a numpy.ndarray, got " + type_name(obj));
    return py::reinterpret_borrow<py::array>(obj);
}

inline std::string shape_str(const py::array& a) {
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

inline void require_layout(const py::array& a, const char* name, bool writeable = false) {
    if (!(a.flags() & py::array::c_style))
        throw py::value_error(std::string(name) + " must be C-contiguous (use numpy.ascontiguousarray)");
    if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
        throw py::value_error(std::string(name) +
                              " must be aligned (use numpy.require(x, requirements='CA'))");
    if (writeable && !a.writeable())
        throw py::value_error(std::string(name) + " must be writeable (it is updated in place)");
}

// The selector state: global_levels (2,) and class_levels (2, C), float64, C-contiguous,
// writeable. Read by the step, written by commit() only once the step succeeded.
struct StateArrays {
    py::array glob, cls;
    int64_t C = 0;

    StateArrays(py::handle global_obj, py::handle class_obj, int64_t n_classes) : C(n_classes) {
        glob = as_ndarray(global_obj, "global_levels");
        if (!has_dtype<double>(glob))
            throw py::type_error("global_levels must have dtype float64, got " +
                                 std::string(py::str(glob.dtype())));
        if (glob.ndim() != 1 || glob.shape(0) != 2)
            throw py::value_error("global_levels must have shape (2,), got " + shape_str(glob));
        require_layout(glob, "global_levels", true);
        cls = as_ndarray(class_obj, "class_levels");
        if (!has_dtype<double>(cls))
            throw py::type_error("class_levels must have dtype float64, got " +
                                 std::string(py::str(cls.dtype())));
        if (cls.ndim() != 2 || cls.shape(0) != 2 || cls.shape(1) != C)
            throw py::value_error("class_levels must have shape (2, " + std::to_string(C) +
                                  ") to match student_logits, got " + shape_str(cls));
        require_layout(cls, "class_levels", true);
    }
    const double* global_levels() const { return static_cast<const double*>(glob.data()); }
    const double* class_levels() const { return static_cast<const double*>(cls.data()); }
    void commit(const double* new_global, const double* new_class) {
        std::memcpy(glob.mutable_data(), new_global, 2 * sizeof(double));
        std::memcpy(cls.mutable_data(), new_class, static_cast<size_t>(2 * C) * sizeof(double));
    }
};

// The configuration of a bound Kernel (CPU and CUDA), checked once at construction.
struct KernelConfig {
    int64_t n_classes;
    int mode, weighting;
    double momentum, fixed_threshold, random_rate;

    KernelConfig(int64_t n_classes_, const std::string& mode_, const std::string& weighting_,
                 double momentum_, double fixed_threshold_, double random_rate_)
        : n_classes(n_classes_),
          mode(contract_code(mode_, kModeNames, kNumModes, "mode")),
          weighting(contract_code(weighting_, kWeightingNames, kNumWeightings, "weighting")),
          momentum(momentum_),
          fixed_threshold(fixed_threshold_),
          random_rate(random_rate_) {
        if (n_classes < 2) throw py::value_error("n_classes must be >= 2, got " + std::to_string(n_classes));
        if (!(momentum >= 0.0 && momentum < 1.0))
            throw py::value_error("momentum must be in [0, 1), got " +
                                  py::repr(py::float_(momentum)).cast<std::string>());
        if (!(fixed_threshold >= 0.0 && fixed_threshold <= 1.0))
            throw py::value_error("fixed_threshold must be in [0, 1], got " +
                                  py::repr(py::float_(fixed_threshold)).cast<std::string>());
        if (!(random_rate >= 0.0 && random_rate <= 1.0))
            throw py::value_error("random_rate must be in [0, 1], got " +
                                  py::repr(py::float_(random_rate)).cast<std::string>());
    }
    // Copies the configuration into a kernel's argument struct (StepInput, StepArgs).
    template <class Args>
    void fill(Args& a) const {
        a.momentum = momentum;
        a.mode = mode;
        a.weighting = weighting;
        a.fixed_threshold = fixed_threshold;
        a.random_rate = random_rate;
    }
    std::string mode_name() const { return kModeNames[mode]; }
    std::string weighting_name() const { return kWeightingNames[weighting]; }
    // The step's logits must have n_classes columns.
    void check_columns(int64_t C) const {
        if (C != n_classes)
            throw py::value_error(
                "student_logits has " + std::to_string(C) +
                " columns but the kernel was built for n_classes=" + std::to_string(n_classes));
    }
    std::string repr(const std::string& extra) const {
        return "Kernel(n_classes=" + std::to_string(n_classes) + ", mode='" + mode_name() + "', weighting='" +
               weighting_name() + "', momentum=" + py::repr(py::float_(momentum)).cast<std::string>() +
               extra + ")";
    }
};

// Binds struct K as the module's Kernel class: K(KernelConfig, Extra) is built from the
// configuration plus one backend-specific argument (`extra`, with its default), and
// K::config holds the configuration, exposed as read-only properties.
template <class K, class Extra>
py::class_<K> bind_kernel(py::module_& m, const char* doc, const char* extra, Extra extra_default) {
    py::class_<K> cls(m, "Kernel", doc);
    cls.def(py::init([](int64_t n_classes, const std::string& mode, const std::string& weighting,
                        double momentum, double fixed_threshold, double random_rate, Extra x) {
                return K(KernelConfig(n_classes, mode, weighting, momentum, fixed_threshold, random_rate), x);
            }),
            py::arg("n_classes"), py::arg("mode") = "llkd", py::arg("weighting") = "product",
            py::arg("momentum") = 0.9, py::arg("fixed_threshold") = 0.9, py::arg("random_rate") = 0.1,
            py::arg(extra) = extra_default)
        .def_property_readonly("n_classes", [](const K& k) { return k.config.n_classes; })
        .def_property_readonly("mode", [](const K& k) { return k.config.mode_name(); })
        .def_property_readonly("weighting", [](const K& k) { return k.config.weighting_name(); })
        .def_property_readonly("momentum", [](const K& k) { return k.config.momentum; })
        .def_property_readonly("fixed_threshold", [](const K& k) { return k.config.fixed_threshold; })
        .def_property_readonly("random_rate", [](const K& k) { return k.config.random_rate; })
        .def_property_readonly(extra, [](const K& k) { return k.extra(); })
        .def("__repr__", [extra](const K& k) {
            return k.config.repr(std::string(", ") + extra + "=" + std::to_string(k.extra()));
        });
    return cls;
}

}  // namespace bind
}  // namespace llkd
