// Run-time choice of the SIMD variant (__builtin_cpu_supports; LLKD_SIMD=<name> picks a
// lower one) and the static facts of the build.
#include "dispatch.hpp"

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "../selection_cpu.hpp"

namespace llkd {
namespace detail {

static bool cpu_has(const std::string& name) {
    if (name == "scalar") return true;
#if defined(LLKD_BUILD_VEC128)
    if (name == LLKD_VEC128_NAME) return true;  // part of the architecture's baseline
#endif
#if defined(LLKD_BUILD_AVX2)
    if (name == "avx2+fma") {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
#endif
    return false;
}

static const KernelTable* table_by_name(const std::string& name) {
    if (name == "scalar") return &isa_scalar::kTable;
#if defined(LLKD_BUILD_VEC128)
    if (name == LLKD_VEC128_NAME) return &isa_vec128::kTable;
#endif
#if defined(LLKD_BUILD_AVX2)
    if (name == "avx2+fma") return &isa_avx2::kTable;
#endif
    return nullptr;
}

static std::vector<std::string> compiled_names() {
    std::vector<std::string> v{"scalar"};
#if defined(LLKD_BUILD_VEC128)
    v.push_back(LLKD_VEC128_NAME);
#endif
#if defined(LLKD_BUILD_AVX2)
    v.push_back("avx2+fma");
#endif
    return v;
}

static const KernelTable* best_table() {
    const KernelTable* best = &isa_scalar::kTable;
    for (const auto& n : compiled_names())
        if (cpu_has(n)) best = table_by_name(n);
    // LLKD_SIMD=<name> may pick a lower variant (debugging, comparisons).
    if (const char* env = std::getenv("LLKD_SIMD")) {
        std::string want(env);
        if (want != "auto" && !want.empty() && cpu_has(want) && table_by_name(want))
            best = table_by_name(want);
    }
    return best;
}

std::atomic<const KernelTable*>& active_table() {
    static std::atomic<const KernelTable*> t{best_table()};
    return t;
}

}  // namespace detail

std::vector<std::string> simd_compiled() { return detail::compiled_names(); }

std::vector<std::string> simd_supported() {
    std::vector<std::string> v;
    for (const auto& n : detail::compiled_names())
        if (detail::cpu_has(n)) v.push_back(n);
    return v;
}

std::string simd_active() { return detail::active_table().load()->name; }

bool simd_select(const std::string& name) {
    if (name == "auto") {
        detail::active_table().store(detail::best_table());
        return true;
    }
    const detail::KernelTable* t = detail::table_by_name(name);
    if (!t || !detail::cpu_has(name)) return false;
    detail::active_table().store(t);
    return true;
}

std::map<std::string, std::string> build_facts() {
    std::map<std::string, std::string> f;
#if defined(__clang__)
    f["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    f["compiler"] = std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
    f["compiler"] = "msvc " + std::to_string(_MSC_VER);
#else
    f["compiler"] = "unknown";
#endif
    f["cxx_standard"] = std::to_string(__cplusplus);
#if defined(LLKD_X86_64)
    f["arch"] = "x86_64";
#elif defined(__aarch64__)
    f["arch"] = "aarch64";
#else
    f["arch"] = "other";
#endif
#if defined(NDEBUG)
    f["assertions"] = "off";
#else
    f["assertions"] = "on";
#endif
#if defined(_OPENMP)
    f["openmp"] = "yes";
#else
    f["openmp"] = "no";
#endif
    f["threading"] =
        "std::thread, spawned per call over fixed row chunks (deterministic for any thread count)";
    f["exp_log"] = "polynomial SIMD exp (float32 in float32, float64 in float64), fdlibm-style float64 log";
    return f;
}

}  // namespace llkd
