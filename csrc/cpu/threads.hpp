// The worker threads of the CPU kernel.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace llkd {
namespace detail {

// Runs fn(chunk, worker) for every chunk, on up to n_workers threads (the caller is
// worker 0), handing out chunks dynamically. Exceptions of any worker are rethrown
// here; if a thread cannot be started the others do its share.
template <class Fn>
inline void run_chunks(int64_t n_chunks, int64_t n_workers, Fn&& fn) {
    n_workers = std::max<int64_t>(1, std::min(n_workers, n_chunks));
    if (n_workers == 1) {
        for (int64_t k = 0; k < n_chunks; ++k) fn(k, 0);
        return;
    }
    std::atomic<int64_t> next{0};
    std::vector<std::exception_ptr> errors(static_cast<size_t>(n_workers));
    auto body = [&](int64_t w) {
        try {
            for (;;) {
                const int64_t k = next.fetch_add(1, std::memory_order_relaxed);
                if (k >= n_chunks) break;
                fn(k, w);
            }
        } catch (...) {
            errors[static_cast<size_t>(w)] = std::current_exception();
            next.store(n_chunks, std::memory_order_relaxed);
        }
    };
    std::vector<std::thread> threads;
    threads.reserve(static_cast<size_t>(n_workers - 1));
    for (int64_t w = 1; w < n_workers; ++w) {
        try {
            threads.emplace_back(body, w);
        } catch (...) {
            break;  // could not start a thread: run with fewer
        }
    }
    body(0);
    for (auto& th : threads) th.join();
    for (auto& e : errors)
        if (e) std::rethrow_exception(e);
}

}  // namespace detail
}  // namespace llkd
