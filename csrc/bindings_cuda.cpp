// pybind11 bindings of the CUDA selection kernel: llkd._selection_cuda.
//
// Kernel.step takes device arrays through __cuda_array_interface__ (torch, CuPy, Numba
// ...) and checks all of them; no libtorch is linked. Kernel.step_unchecked is the fast
// path of llkd.selection._cuda: (pointer, shape, typestr) descriptors of arrays that the
// adapter made C-contiguous and raw pointers of buffers it allocated and checked itself.
// Both write the state arrays in place only when the step succeeded, as the CPU kernel.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bindings_common.hpp"
#include "selection_cuda.cuh"

namespace py = pybind11;
using llkd_cuda::DType;
using namespace llkd::bind;

namespace {

struct DeviceArray {
    uintptr_t ptr = 0;
    std::vector<int64_t> shape;
    std::string typestr;
    int64_t itemsize = 0;
};

// (pointer, shape, typestr) of a C-contiguous device array: the unchecked fast path.
DeviceArray parse_descriptor(py::handle obj, const std::string& name) {
    if (!py::isinstance<py::tuple>(obj) || py::len(obj) != 3)
        throw py::type_error(name + " must be a (pointer, shape, typestr) tuple, got " + type_name(obj));
    py::tuple t = py::reinterpret_borrow<py::tuple>(obj);
    DeviceArray a;
    a.ptr = t[0].cast<uintptr_t>();
    for (auto item : t[1].cast<py::tuple>()) a.shape.push_back(item.cast<int64_t>());
    a.typestr = t[2].cast<std::string>();
    if (a.typestr.size() < 3) throw py::type_error(name + " has an unknown typestr '" + a.typestr + "'");
    a.itemsize = std::stoll(a.typestr.substr(2));
    return a;
}

// Reads __cuda_array_interface__ (versions 2 and 3) and checks that the array is
// C-contiguous and unmasked.
DeviceArray parse_cai(py::handle obj, const std::string& name) {
    if (!py::hasattr(obj, "__cuda_array_interface__")) {
        throw py::type_error(name +
                             " must be a CUDA array (an object with __cuda_array_interface__, such as a "
                             "CUDA torch tensor), got " +
                             type_name(obj));
    }
    py::object cai_obj = obj.attr("__cuda_array_interface__");
    if (!py::isinstance<py::dict>(cai_obj))
        throw py::type_error(name + ".__cuda_array_interface__ is not a dict");
    py::dict cai = cai_obj.cast<py::dict>();
    DeviceArray a;
    for (auto item : cai["shape"].cast<py::tuple>()) a.shape.push_back(item.cast<int64_t>());
    a.typestr = cai["typestr"].cast<std::string>();
    if (a.typestr.size() < 3) throw py::type_error(name + " has an unknown typestr '" + a.typestr + "'");
    if (a.typestr[0] == '>') throw py::type_error(name + " is big-endian; pass a native-endian array");
    a.itemsize = std::stoll(a.typestr.substr(2));
    py::tuple data = cai["data"].cast<py::tuple>();
    a.ptr = data[0].is_none() ? 0 : data[0].cast<uintptr_t>();
    if (cai.contains("mask") && !cai["mask"].is_none())
        throw py::value_error(name + " is a masked array; pass plain data");
    if (cai.contains("strides") && !cai["strides"].is_none()) {
        std::vector<int64_t> strides;
        for (auto item : cai["strides"].cast<py::tuple>()) strides.push_back(item.cast<int64_t>());
        if (strides.size() != a.shape.size())
            throw py::value_error(name + " has strides that do not match its shape");
        int64_t expect = a.itemsize;
        for (int i = static_cast<int>(a.shape.size()) - 1; i >= 0; --i) {
            if (a.shape[i] != 1 && strides[i] != expect) {
                throw py::value_error(name + " must be C-contiguous (call .contiguous() on it first)");
            }
            expect *= a.shape[i];
        }
    }
    return a;
}

std::string shape_str(const std::vector<int64_t>& s) {
    std::string out = "(";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    if (s.size() == 1) out += ",";
    return out + ")";
}

DType float_dtype(const DeviceArray& a, const std::string& name) {
    const char k = a.typestr[1];
    if (k == 'f' && a.itemsize == 4) return DType::F32;
    if (k == 'f' && a.itemsize == 8) return DType::F64;
    throw py::type_error(name + " must be float32 or float64 on the device, got typestr '" + a.typestr + "'");
}

DType int_dtype(const DeviceArray& a, const std::string& name) {
    const char k = a.typestr[1];
    if (k == 'i' && a.itemsize == 4) return DType::I32;
    if (k == 'i' && a.itemsize == 8) return DType::I64;
    throw py::type_error(name + " must hold int32 or int64 class indices on the device, got typestr '" +
                         a.typestr + "'");
}

void check_device(uintptr_t ptr, int device, const std::string& name) {
    const int d = llkd_cuda::pointer_device(ptr);
    if (d < 0) throw py::value_error(name + " is not in CUDA device memory");
    if (d != device) {
        throw py::value_error(name + " is on cuda:" + std::to_string(d) +
                              " but student_logits is on cuda:" + std::to_string(device));
    }
}

// The device flag word named bad values (state untouched): InputFlagsError, a ValueError
// whose `flags` attribute holds the bits, so that the adapter can name the row.
PyObject* g_flags_error = nullptr;

[[noreturn]] void raise_flags(unsigned flags, int64_t c) {
    std::string msg;
    if (flags & llkd::kFlagBadLabels)
        msg = "pseudo_labels must lie in [0, " + std::to_string(c - 1) + "]";
    else if (flags & llkd::kFlagBadConfidence)
        msg = "teacher_confidence contains NaN values or values outside [0, 1]";
    else if (flags & llkd::kFlagBadLogits)
        msg = "student_logits contains NaN or infinite values";
    else
        msg = "CUDA selection kernel reported unknown error flags " + std::to_string(flags);
    py::object exc =
        py::reinterpret_steal<py::object>(PyObject_CallFunction(g_flags_error, "s", msg.c_str()));
    if (!exc) throw py::error_already_set();
    exc.attr("flags") = flags;
    PyErr_SetObject(g_flags_error, exc.ptr());
    throw py::error_already_set();
}

struct Inputs {
    DeviceArray z, y, cf;
    const double* draws = nullptr;
    int device = -1;
};

// Shapes, dtypes and devices of the inputs (descriptors or __cuda_array_interface__).
Inputs check_inputs(const DeviceArray& z, const DeviceArray& y, const DeviceArray& cf, const DeviceArray* d,
                    const KernelConfig& config) {
    if (z.shape.size() != 2)
        throw py::value_error("student_logits must be 2-D (batch, n_classes), got shape " +
                              shape_str(z.shape));
    const int64_t n = z.shape[0], c = z.shape[1];
    if (n == 0) throw py::value_error("student_logits is empty: a selection step needs at least one sample");
    config.check_columns(c);
    float_dtype(z, "student_logits");
    if (z.ptr == 0) throw py::value_error("student_logits has a null data pointer");
    Inputs in{z, y, cf, nullptr, llkd_cuda::pointer_device(z.ptr)};
    if (in.device < 0) throw py::value_error("student_logits is not in CUDA device memory");
    if (y.shape.size() != 1 || y.shape[0] != n)
        throw py::value_error("pseudo_labels must have shape (" + std::to_string(n) +
                              ",) to match student_logits, got " + shape_str(y.shape));
    int_dtype(y, "pseudo_labels");
    check_device(y.ptr, in.device, "pseudo_labels");
    if (cf.shape.size() != 1 || cf.shape[0] != n)
        throw py::value_error("teacher_confidence must have shape (" + std::to_string(n) +
                              ",) to match student_logits, got " + shape_str(cf.shape));
    float_dtype(cf, "teacher_confidence");
    check_device(cf.ptr, in.device, "teacher_confidence");
    if (d) {
        if (d->shape.size() != 1 || d->shape[0] != n || float_dtype(*d, "random_draws") != DType::F64)
            throw py::value_error("random_draws must be float64 of shape (" + std::to_string(n) + ",)");
        check_device(d->ptr, in.device, "random_draws");
        in.draws = reinterpret_cast<const double*>(d->ptr);
    }
    if (config.mode == llkd::kModeRandom && !in.draws)
        throw py::value_error("random_draws must be given for mode 'random'");
    return in;
}

// Reads the inputs with `parse` (parse_cai or parse_descriptor) and checks their shapes,
// dtypes and devices.
template <class Parse>
Inputs read_inputs(Parse parse, py::handle logits, py::handle labels, py::handle confidence, py::handle draws,
                   const KernelConfig& config) {
    const DeviceArray z = parse(logits, "student_logits");
    const DeviceArray y = parse(labels, "pseudo_labels");
    const DeviceArray cf = parse(confidence, "teacher_confidence");
    DeviceArray d;
    if (!draws.is_none()) d = parse(draws, "random_draws");
    return check_inputs(z, y, cf, draws.is_none() ? nullptr : &d, config);
}

// The kernel configuration, bound as a class (as hnswlib binds Index).
struct Kernel {
    KernelConfig config;
    int variant;

    Kernel(KernelConfig c, int variant_) : config(std::move(c)), variant(variant_) {
        if (variant >= 0) {
            const auto vs = llkd_cuda::variants();
            if (variant >= static_cast<int>(vs.size()))
                throw py::value_error("unknown kernel variant " + std::to_string(variant));
            const auto& v = vs[static_cast<size_t>(variant)];
            if (v.max_classes >= 0 && config.n_classes > v.max_classes)
                throw py::value_error("kernel variant " + std::to_string(variant) + " (" + v.name +
                                      ") does not accept " + std::to_string(config.n_classes) + " classes");
        }
    }
    int extra() const { return variant; }

    // Runs the step and commits the state; returns (teacher_threshold, student_threshold,
    // n_updates) as host values.
    py::tuple run(const Inputs& in, uintptr_t out_u, uintptr_t out_mask, uintptr_t out_w, uintptr_t scratch,
                  size_t scratch_size, StateArrays& state, int64_t n_updates, bool update,
                  uintptr_t stream) const {
        const int64_t n = in.z.shape[0], c = in.z.shape[1];
        llkd_cuda::StepArgs a;
        a.logits = reinterpret_cast<const void*>(in.z.ptr);
        a.logits_dtype = float_dtype(in.z, "student_logits");
        a.n = n;
        a.c = c;
        a.labels = reinterpret_cast<const void*>(in.y.ptr);
        a.labels_dtype = int_dtype(in.y, "pseudo_labels");
        a.confidence = reinterpret_cast<const void*>(in.cf.ptr);
        a.confidence_dtype = float_dtype(in.cf, "teacher_confidence");
        a.draws = in.draws;
        a.out_uncertainty = reinterpret_cast<void*>(out_u);
        a.out_mask = reinterpret_cast<uint8_t*>(out_mask);
        a.out_weights = reinterpret_cast<void*>(out_w);
        a.scratch = reinterpret_cast<void*>(scratch);
        a.scratch_size = scratch_size;
        a.state_global = state.global_levels();
        a.state_class = state.class_levels();
        a.n_updates = n_updates;
        config.fill(a);
        a.update = update;
        a.stream = stream;
        a.device = in.device;
        a.variant = variant;

        llkd_cuda::StepResult r;
        try {
            py::gil_scoped_release release;
            llkd_cuda::step(a, r);
        } catch (const std::invalid_argument& e) {
            throw py::value_error(e.what());
        }
        if (r.flags) raise_flags(r.flags, c);
        if (update) state.commit(r.global_levels.data(), r.class_levels.data());
        py::array_t<double> tt(c), ts(c);
        std::copy(r.thresholds.begin(), r.thresholds.begin() + c, tt.mutable_data());
        std::copy(r.thresholds.begin() + c, r.thresholds.end(), ts.mutable_data());
        return py::make_tuple(tt, ts, update ? n_updates + 1 : n_updates);
    }

    py::tuple step(py::handle logits, py::handle labels, py::handle confidence, py::handle global_levels,
                   py::handle class_levels, int64_t n_updates, py::tuple out, py::handle scratch,
                   py::handle random_draws, bool update, uintptr_t stream) const {
        const Inputs in = read_inputs(parse_cai, logits, labels, confidence, random_draws, config);
        const int64_t n = in.z.shape[0];
        StateArrays state(global_levels, class_levels, in.z.shape[1]);
        if (py::len(out) != 3) throw py::value_error("out must be (uncertainty, mask, weights)");
        const char* names[3] = {"out uncertainty", "out mask", "out weights"};
        uintptr_t ptr[3];
        for (int i = 0; i < 3; ++i) {
            const DeviceArray o = parse_cai(out[i], names[i]);
            if (o.shape.size() != 1 || o.shape[0] != n)
                throw py::value_error(std::string(names[i]) + " must have shape (" + std::to_string(n) +
                                      ",), got " + shape_str(o.shape));
            const bool ok = i == 1 ? (o.typestr[1] == 'b' && o.itemsize == 1) : o.typestr == in.z.typestr;
            if (!ok)
                throw py::type_error(std::string(names[i]) + " must have typestr '" +
                                     (i == 1 ? "|b1" : in.z.typestr) + "', got '" + o.typestr + "'");
            check_device(o.ptr, in.device, names[i]);
            ptr[i] = o.ptr;
        }
        const DeviceArray sc = parse_cai(scratch, "scratch");
        if (sc.shape.size() != 1 || sc.itemsize != 1)
            throw py::value_error("scratch must be a 1-D byte array of scratch_bytes(n_classes) bytes");
        check_device(sc.ptr, in.device, "scratch");
        py::tuple res = run(in, ptr[0], ptr[1], ptr[2], sc.ptr, static_cast<size_t>(sc.shape[0]), state,
                            n_updates, update, stream);
        return py::make_tuple(out[1], out[2], out[0], res[0], res[1], res[2]);
    }

    py::tuple step_unchecked(py::handle logits, py::handle labels, py::handle confidence,
                             py::handle random_draws, uintptr_t out_u, uintptr_t out_mask, uintptr_t out_w,
                             uintptr_t scratch, size_t scratch_size, py::handle global_levels,
                             py::handle class_levels, int64_t n_updates, bool update,
                             uintptr_t stream) const {
        const Inputs in = read_inputs(parse_descriptor, logits, labels, confidence, random_draws, config);
        StateArrays state(global_levels, class_levels, in.z.shape[1]);
        return run(in, out_u, out_mask, out_w, scratch, scratch_size, state, n_updates, update, stream);
    }
};

}  // namespace

PYBIND11_MODULE(_selection_cuda, m) {
    m.doc() =
        "llkd's CUDA selection kernel (docs/design.md section 3); use it through "
        "llkd.selection.AdaptiveSelector.";
    llkd::export_contract(m);

    m.def("device_count", &llkd_cuda::device_count,
          "Number of visible CUDA devices (0 without a driver or device; never raises).");

    m.def(
        "pointer_device", [](uintptr_t ptr) { return llkd_cuda::pointer_device(ptr); },
        "CUDA device that owns a pointer, or -1 for host or unknown memory.");

    m.def(
        "scratch_bytes", [](int64_t c) { return llkd_cuda::scratch_bytes(c); },
        "Bytes of device scratch memory one step needs for n_classes classes.");

    m.def(
        "default_variant",
        [](int64_t c, bool float64) {
            return llkd_cuda::default_variant(c, float64 ? DType::F64 : DType::F32);
        },
        py::arg("n_classes"), py::arg("float64") = false);

    m.def(
        "variants",
        []() {
            py::list out;
            for (const auto& v : llkd_cuda::variants()) {
                py::dict d;
                d["id"] = v.id;
                d["threads_per_row"] = v.threads_per_row;
                d["elems_per_thread"] = v.elems_per_thread;
                d["prefetch"] = static_cast<bool>(v.prefetch);
                d["accumulation"] =
                    v.accumulation == 0 ? "private" : (v.accumulation == 1 ? "shared" : "global");
                d["max_classes"] = v.max_classes;
                d["name"] = v.name;
                out.append(d);
            }
            return out;
        },
        "Row-kernel variants (for tests and benchmarks).");

    m.def(
        "build_info",
        []() {
            py::dict d;
            d["cuda_archs"] = std::string(llkd_cuda::compiled_archs());
            const int rv = llkd_cuda::runtime_version();
            d["cuda_runtime_version"] = std::to_string(rv / 1000) + "." + std::to_string((rv % 1000) / 10);
            const int dv = llkd_cuda::driver_version();
            d["cuda_driver_version"] =
                dv ? std::to_string(dv / 1000) + "." + std::to_string((dv % 1000) / 10) : std::string();
            const int n = llkd_cuda::device_count();
            d["devices"] = n;
            py::list names;
            for (int i = 0; i < n; ++i) names.append(llkd_cuda::device_name(i));
            d["device_names"] = names;
            return d;
        },
        "Build and runtime information (never raises without a driver).");

    g_flags_error =
        PyErr_NewException("llkd.selection._selection_cuda.InputFlagsError", PyExc_ValueError, nullptr);
    if (!g_flags_error) throw py::error_already_set();
    m.attr("InputFlagsError") =
        py::handle(g_flags_error);  // a module reference; the type lives with the process

    bind_kernel<Kernel, int>(m,
                             R"doc(The CUDA selection kernel for one configuration (docs/design.md section 3).

Kernel(n_classes, mode, weighting, momentum, fixed_threshold, random_rate, variant=-1)
checks the configuration once; mode and weighting are names from MODES and WEIGHTINGS,
variant picks a row-kernel variant (-1: chosen from n_classes).)doc",
                             "variant", -1)
        .def("step", &Kernel::step, py::arg("student_logits"), py::arg("pseudo_labels"),
             py::arg("teacher_confidence"), py::arg("global_levels"), py::arg("class_levels"),
             py::arg("n_updates"), py::kw_only(), py::arg("out"), py::arg("scratch"),
             py::arg("random_draws") = py::none(), py::arg("update") = true, py::arg("stream") = 0,
             R"doc(One selection step on the device; every array is checked.

student_logits, pseudo_labels, teacher_confidence, random_draws, the three arrays of
out = (uncertainty, mask, weights) and scratch (scratch_bytes(n_classes) bytes) are
device arrays with __cuda_array_interface__. Returns (mask, weights, uncertainty,
teacher_threshold, student_threshold, n_updates) like the CPU kernel, the first three
being the out arrays; the state arrays are written in place only when the step
succeeded. Bad values found on the device raise InputFlagsError (a ValueError).)doc")
        .def("step_unchecked", &Kernel::step_unchecked, py::arg("student_logits"), py::arg("pseudo_labels"),
             py::arg("teacher_confidence"), py::arg("random_draws"), py::arg("out_uncertainty"),
             py::arg("out_mask"), py::arg("out_weights"), py::arg("scratch"), py::arg("scratch_size"),
             py::arg("global_levels"), py::arg("class_levels"), py::arg("n_updates"), py::arg("update"),
             py::arg("stream"),
             R"doc(The fast path of llkd.selection._cuda, UNCHECKED layouts and buffers.

Inputs are (pointer, shape, typestr) descriptors of C-contiguous device arrays; outputs
and scratch are raw device pointers that are not checked. Returns (teacher_threshold,
student_threshold, n_updates); state as in step().)doc");
}
