"""Torch intra-op threads for one piece of work, without changing the caller's setting.

``torch.set_num_threads`` is process-wide in general, which is unsafe when several fits
run in threads (joblib's threading backend) and surprising to a caller. With torch's
OpenMP backend (the default CPU build) the count is per OS thread, so work that wants
another count runs in a short-lived thread of its own that sets it there; the caller's
thread keeps its count. With any other backend the work runs in the caller's thread with
the caller's count unchanged.
"""

from __future__ import annotations

import functools
import threading

import torch


@functools.lru_cache(maxsize=1)
def per_thread_counts() -> bool:
    """True when torch's thread count is per OS thread (the OpenMP backend)."""
    try:
        return "parallel backend: OpenMP" in torch.__config__.parallel_info()
    except Exception:  # pragma: no cover - exotic builds
        return False


def run_with_threads(n_threads: int | None, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on ``n_threads`` torch threads; the caller's count is untouched.

    ``None``, or the caller's own count, runs ``fn`` directly. Exceptions propagate to the
    caller as raised; the RNG and every other torch state are shared as usual.
    """
    if n_threads is None or n_threads == torch.get_num_threads() or not per_thread_counts():
        return fn(*args, **kwargs)
    result: dict = {}

    def target():
        try:
            torch.set_num_threads(int(n_threads))
            result["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # carried back to the caller's thread
            result["error"] = exc

    worker = threading.Thread(target=target, name="llkd-torch-threads", daemon=True)
    worker.start()
    worker.join()
    if "error" in result:
        raise result["error"]
    return result["value"]
