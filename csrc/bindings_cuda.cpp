// pybind11 bindings of the CUDA selection kernel: llkd._selection_cuda.
//
// Device arrays come in through __cuda_array_interface__ (torch, CuPy, Numba ...); no
// libtorch is linked. Buffers that llkd.selection._cuda allocates itself (outputs and
// scratch) are passed as raw device pointers and checked to live on the input's device.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "contract_py.hpp"
#include "selection_cuda.cuh"

namespace py = pybind11;
using llkd_cuda::DType;

namespace {

struct DeviceArray {
  uintptr_t ptr = 0;
  std::vector<int64_t> shape;
  std::string typestr;
  int64_t itemsize = 0;
};

std::string type_name(py::handle obj) { return py::str(py::type::handle_of(obj).attr("__name__")); }

// Reads __cuda_array_interface__ (versions 2 and 3) and checks that the array is
// C-contiguous and unmasked. A tuple (data pointer, shape, typestr) is read as the
// description of a C-contiguous device array: llkd.selection._cuda passes torch tensors
// so (it made them contiguous), which skips building the interface dict per call.
DeviceArray parse_cai(py::handle obj, const std::string& name) {
  if (py::isinstance<py::tuple>(obj) && py::len(obj) == 3) {
    py::tuple t = py::reinterpret_borrow<py::tuple>(obj);
    DeviceArray a;
    a.ptr = t[0].cast<uintptr_t>();
    for (auto item : t[1].cast<py::tuple>()) a.shape.push_back(item.cast<int64_t>());
    a.typestr = t[2].cast<std::string>();
    if (a.typestr.size() < 3) throw py::type_error(name + " has an unknown typestr '" + a.typestr + "'");
    a.itemsize = std::stoll(a.typestr.substr(2));
    return a;
  }
  if (!py::hasattr(obj, "__cuda_array_interface__")) {
    throw py::type_error(name + " must be a CUDA array (an object with __cuda_array_interface__, such as a "
                                "CUDA torch tensor), got " + type_name(obj));
  }
  py::object cai_obj = obj.attr("__cuda_array_interface__");
  if (!py::isinstance<py::dict>(cai_obj)) throw py::type_error(name + ".__cuda_array_interface__ is not a dict");
  py::dict cai = cai_obj.cast<py::dict>();
  DeviceArray a;
  for (auto item : cai["shape"].cast<py::tuple>()) a.shape.push_back(item.cast<int64_t>());
  a.typestr = cai["typestr"].cast<std::string>();
  if (a.typestr.size() < 3) throw py::type_error(name + " has an unknown typestr '" + a.typestr + "'");
  if (a.typestr[0] == '>') throw py::type_error(name + " is big-endian; pass a native-endian array");
  a.itemsize = std::stoll(a.typestr.substr(2));
  py::tuple data = cai["data"].cast<py::tuple>();
  a.ptr = data[0].is_none() ? 0 : data[0].cast<uintptr_t>();
  if (cai.contains("mask") && !cai["mask"].is_none()) throw py::value_error(name + " is a masked array; pass plain data");
  if (cai.contains("strides") && !cai["strides"].is_none()) {
    std::vector<int64_t> strides;
    for (auto item : cai["strides"].cast<py::tuple>()) strides.push_back(item.cast<int64_t>());
    if (strides.size() != a.shape.size()) throw py::value_error(name + " has strides that do not match its shape");
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
  throw py::type_error(name + " must hold int32 or int64 class indices on the device, got typestr '" + a.typestr +
                       "'");
}

void check_device(uintptr_t ptr, int device, const std::string& name) {
  const int d = llkd_cuda::pointer_device(ptr);
  if (d < 0) throw py::value_error(name + " is not in CUDA device memory");
  if (d != device) {
    throw py::value_error(name + " is on cuda:" + std::to_string(d) + " but student_logits is on cuda:" +
                          std::to_string(device));
  }
}

py::dict step(py::handle logits, py::handle labels, py::handle confidence, py::handle draws, uintptr_t out_u,
              uintptr_t out_mask, uintptr_t out_w, uintptr_t scratch, size_t scratch_size,
              py::array_t<double, py::array::c_style | py::array::forcecast> state_global,
              py::array_t<double, py::array::c_style | py::array::forcecast> state_class, int64_t n_updates,
              double momentum, int mode, int weighting, double fixed_threshold, double random_rate, bool update,
              uintptr_t stream, int variant, bool trusted_buffers) {
  const DeviceArray z = parse_cai(logits, "student_logits");
  if (z.shape.size() != 2)
    throw py::value_error("student_logits must be 2-D (batch, n_classes), got shape " + shape_str(z.shape));
  const int64_t n = z.shape[0], c = z.shape[1];
  if (n == 0) throw py::value_error("student_logits is empty: a selection step needs at least one sample");
  if (state_class.ndim() != 2 || state_class.shape(0) != 2 || state_class.shape(1) != c)
    throw py::value_error("student_logits has " + std::to_string(c) +
                          " columns but the selector state was built for another number of classes");
  if (state_global.ndim() != 1 || state_global.shape(0) != 2) throw py::value_error("state.global_levels must have shape (2,)");
  const DType zdt = float_dtype(z, "student_logits");
  if (z.ptr == 0) throw py::value_error("student_logits has a null data pointer");
  const int device = llkd_cuda::pointer_device(z.ptr);
  if (device < 0) throw py::value_error("student_logits is not in CUDA device memory");

  const DeviceArray y = parse_cai(labels, "pseudo_labels");
  if (y.shape.size() != 1 || y.shape[0] != n)
    throw py::value_error("pseudo_labels must have shape (" + std::to_string(n) + ",) to match student_logits, got " +
                          shape_str(y.shape));
  const DType ydt = int_dtype(y, "pseudo_labels");
  check_device(y.ptr, device, "pseudo_labels");

  const DeviceArray cf = parse_cai(confidence, "teacher_confidence");
  if (cf.shape.size() != 1 || cf.shape[0] != n)
    throw py::value_error("teacher_confidence must have shape (" + std::to_string(n) +
                          ",) to match student_logits, got " + shape_str(cf.shape));
  const DType cdt = float_dtype(cf, "teacher_confidence");
  check_device(cf.ptr, device, "teacher_confidence");

  const double* draws_ptr = nullptr;
  if (!draws.is_none()) {
    const DeviceArray d = parse_cai(draws, "random_draws");
    if (d.shape.size() != 1 || d.shape[0] != n || float_dtype(d, "random_draws") != DType::F64)
      throw py::value_error("random_draws must be float64 of shape (" + std::to_string(n) + ",)");
    check_device(d.ptr, device, "random_draws");
    draws_ptr = reinterpret_cast<const double*>(d.ptr);
  }
  if (!trusted_buffers) {  // llkd.selection._cuda allocates them itself on `device` otherwise
    check_device(out_u, device, "uncertainty output");
    check_device(out_mask, device, "mask output");
    check_device(out_w, device, "weights output");
    check_device(scratch, device, "scratch buffer");
  }

  llkd_cuda::StepArgs a;
  a.logits = reinterpret_cast<const void*>(z.ptr);
  a.logits_dtype = zdt;
  a.n = n;
  a.c = c;
  a.labels = reinterpret_cast<const void*>(y.ptr);
  a.labels_dtype = ydt;
  a.confidence = reinterpret_cast<const void*>(cf.ptr);
  a.confidence_dtype = cdt;
  a.draws = draws_ptr;
  a.out_uncertainty = reinterpret_cast<void*>(out_u);
  a.out_mask = reinterpret_cast<uint8_t*>(out_mask);
  a.out_weights = reinterpret_cast<void*>(out_w);
  a.scratch = reinterpret_cast<void*>(scratch);
  a.scratch_size = scratch_size;
  a.state_global = state_global.data();
  a.state_class = state_class.data();
  a.n_updates = n_updates;
  a.momentum = momentum;
  a.mode = mode;
  a.weighting = weighting;
  a.fixed_threshold = fixed_threshold;
  a.random_rate = random_rate;
  a.update = update;
  a.stream = stream;
  a.device = device;
  a.variant = variant;

  llkd_cuda::StepResult r;
  try {
    py::gil_scoped_release release;
    llkd_cuda::step(a, r);
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  py::dict out;
  out["flags"] = r.flags;
  py::array_t<double> g(2), tt(c), ts(c);
  py::array_t<double> m({static_cast<py::ssize_t>(2), static_cast<py::ssize_t>(c)});
  std::copy(r.global_levels.begin(), r.global_levels.end(), g.mutable_data());
  std::copy(r.class_levels.begin(), r.class_levels.end(), m.mutable_data());
  std::copy(r.thresholds.begin(), r.thresholds.begin() + c, tt.mutable_data());
  std::copy(r.thresholds.begin() + c, r.thresholds.end(), ts.mutable_data());
  out["global_levels"] = g;
  out["class_levels"] = m;
  out["teacher_threshold"] = tt;
  out["student_threshold"] = ts;
  out["selected_sum"] = r.selected_sum;
  out["n_selected"] = r.n_selected;
  out["variant"] = r.variant;
  out["device"] = device;
  return out;
}

}  // namespace

PYBIND11_MODULE(_selection_cuda, m) {
  m.doc() = "llkd's CUDA selection kernel (spec section 3); use it through llkd.selection.AdaptiveSelector.";
  llkd::export_contract(m);

  m.def("device_count", &llkd_cuda::device_count,
        "Number of visible CUDA devices (0 without a driver or device; never raises).");

  m.def("pointer_device", [](uintptr_t ptr) { return llkd_cuda::pointer_device(ptr); },
        "CUDA device that owns a pointer, or -1 for host or unknown memory.");

  m.def("scratch_bytes", [](int64_t c) { return llkd_cuda::scratch_bytes(c); },
        "Bytes of device scratch memory one step needs for n_classes classes.");

  m.def("default_variant", [](int64_t c, bool float64) {
        return llkd_cuda::default_variant(c, float64 ? DType::F64 : DType::F32);
      }, py::arg("n_classes"), py::arg("float64") = false);

  m.def("variants", []() {
    py::list out;
    for (const auto& v : llkd_cuda::variants()) {
      py::dict d;
      d["id"] = v.id;
      d["threads_per_row"] = v.threads_per_row;
      d["elems_per_thread"] = v.elems_per_thread;
      d["prefetch"] = static_cast<bool>(v.prefetch);
      d["accumulation"] = v.accumulation == 0 ? "private" : (v.accumulation == 1 ? "shared" : "global");
      d["max_classes"] = v.max_classes;
      d["name"] = v.name;
      out.append(d);
    }
    return out;
  }, "Row-kernel variants (for tests and benchmarks).");

  m.def("build_info", []() {
    py::dict d;
    d["cuda_archs"] = std::string(llkd_cuda::compiled_archs());
    const int rv = llkd_cuda::runtime_version();
    d["cuda_runtime_version"] = std::to_string(rv / 1000) + "." + std::to_string((rv % 1000) / 10);
    const int dv = llkd_cuda::driver_version();
    d["cuda_driver_version"] = dv ? std::to_string(dv / 1000) + "." + std::to_string((dv % 1000) / 10) : std::string();
    const int n = llkd_cuda::device_count();
    d["devices"] = n;
    py::list names;
    for (int i = 0; i < n; ++i) names.append(llkd_cuda::device_name(i));
    d["device_names"] = names;
    return d;
  }, "Build and runtime information (never raises without a driver).");

  m.def("step", &step, py::arg("logits"), py::arg("labels"), py::arg("confidence"), py::arg("draws"),
        py::arg("out_uncertainty"), py::arg("out_mask"), py::arg("out_weights"), py::arg("scratch"),
        py::arg("scratch_size"), py::arg("state_global"), py::arg("state_class"), py::arg("n_updates"),
        py::arg("momentum"), py::arg("mode"), py::arg("weighting"), py::arg("fixed_threshold"),
        py::arg("random_rate"), py::arg("update"), py::arg("stream"), py::arg("variant") = -1,
        py::arg("trusted_buffers") = false,
        "One selection step on the device; returns flags, new levels and thresholds (host arrays).");
}
