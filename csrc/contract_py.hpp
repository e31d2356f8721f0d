// Exports selection_contract.hpp to Python (both compiled modules call this).
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "selection_contract.hpp"

namespace llkd {

inline void export_contract(pybind11::module_& m) {
    namespace py = pybind11;
    py::list modes, weightings;
    for (const char* name : kModeNames) modes.append(name);
    for (const char* name : kWeightingNames) weightings.append(name);
    m.attr("MODES") = py::tuple(modes);
    m.attr("WEIGHTINGS") = py::tuple(weightings);
    m.attr("TIE_TOLERANCE") = kTieTolerance;
    py::dict dtypes, flags;
    dtypes["float32"] = static_cast<int>(DType::F32);
    dtypes["float64"] = static_cast<int>(DType::F64);
    dtypes["int32"] = static_cast<int>(DType::I32);
    dtypes["int64"] = static_cast<int>(DType::I64);
    flags["bad_logits"] = static_cast<unsigned>(kFlagBadLogits);
    flags["bad_labels"] = static_cast<unsigned>(kFlagBadLabels);
    flags["bad_confidence"] = static_cast<unsigned>(kFlagBadConfidence);
    m.attr("DTYPES") = dtypes;
    m.attr("FLAGS") = flags;
}

// The code of a mode or weighting name; throws ValueError naming `what` and the choices.
inline int contract_code(const std::string& name, const char* const* names, int n, const char* what) {
    for (int i = 0; i < n; ++i)
        if (name == names[i]) return i;
    std::string choices;
    for (int i = 0; i < n; ++i) choices += std::string(i ? ", " : "") + "'" + names[i] + "'";
    throw pybind11::value_error(std::string(what) + " must be one of (" + choices + "), got '" + name + "'");
}

}  // namespace llkd
