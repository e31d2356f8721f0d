"""Discovery of the compiled selection backends.

The compiled modules are optional: when they are missing the package still imports,
warns once, and runs on the NumPy reference.
"""

from __future__ import annotations

import functools
import importlib
import warnings

BACKENDS = ("auto", "native", "cuda", "numpy")


@functools.cache
def _import(name: str):
    try:
        return importlib.import_module(f"llkd.selection.{name}"), None
    except ImportError as exc:  # not built, or built for another Python
        return None, exc


_warned = False


def native_module():
    """The compiled CPU kernel module, or None (warns once) when it is not built."""
    global _warned
    module, exc = _import("_selection_cpu")
    if module is None and not _warned:
        _warned = True
        warnings.warn(
            f"llkd's compiled selection kernel is not available ({exc}); "
            "falling back to the NumPy reference. Reinstall llkd with a C++ compiler "
            "to get the fast path.",
            RuntimeWarning,
            stacklevel=3,
        )
    return module


def cuda_module():
    """The compiled CUDA kernel module, or None when it was not built."""
    module, _ = _import("_selection_cuda")
    return module


def native_available() -> bool:
    return _import("_selection_cpu")[0] is not None


def cuda_built() -> bool:
    return _import("_selection_cuda")[0] is not None


def cuda_device_count() -> int:
    """Number of CUDA devices the compiled kernel can see (0 when not built)."""
    module = cuda_module()
    if module is None:
        return 0
    try:
        return int(module.device_count())
    except Exception:  # no driver, no device
        return 0
