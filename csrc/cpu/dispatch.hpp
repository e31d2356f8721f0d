// The SIMD variant in use (dispatch.cpp).
#pragma once

#include <atomic>

#include "config.hpp"

namespace llkd {
namespace detail {

// The active variant's table: the best this CPU runs, unless switched by simd_select().
std::atomic<const KernelTable*>& active_table();

}  // namespace detail
}  // namespace llkd
