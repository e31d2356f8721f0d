"""Rough cost of the Python work around one CUDA selection step, without a GPU.

Times the pieces of ``llkd.selection._cuda.step`` that run on the host, using CPU tensors
as the nearest analogue of the CUDA ones (the pybind call, the launches and the stream
synchronisation are not included). A lead for the ~0.1 ms per step outside the kernels
(benchmarks/CUDA_NOTES.md), not a measurement of it. Run: python benchmarks/_cuda_host_cost.py
"""

import time

import numpy as np
import torch

from llkd.selection import _cuda, _validation
from llkd.selection._state import SelectionResult, SelectorState

N, C = 10_000_000, 20
z = torch.randn(1000, C)
y = torch.randint(0, C, (1000,))
c = torch.rand(1000)
st = SelectorState.empty(C)


def t(fn, n=20000):
    for _ in range(100):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


dev = z.device
parts = {
    "is_torch_tensor x3 + detach": lambda: [_validation.is_torch_tensor(a) and a.detach() for a in (z, y, c)],
    "logits checks (dtype/ndim/shape/contig)": lambda: (
        z.dtype in (torch.float32, torch.float64),
        z.ndim,
        z.shape[0],
        z.shape[1],
        z.is_contiguous(),
    ),
    "labels checks": lambda: (
        y.device == dev,
        y.ndim,
        y.shape[0],
        y.dtype == torch.bool or y.is_complex(),
        y.dtype.is_floating_point,
        y.dtype in (torch.int32, torch.int64),
        y.is_contiguous(),
    ),
    "confidence checks": lambda: (
        c.device == dev,
        c.ndim,
        c.shape[0],
        c.dtype == torch.bool or c.is_complex(),
        c.dtype in (torch.float16, torch.bfloat16),
        c.dtype.is_floating_point,
        c.is_contiguous(),
    ),
    "_allocate (1 empty + 3 views)": lambda: _cuda._allocate(1000, torch.float32, dev, 4096),
    "_desc x3": lambda: (_cuda._desc(z), _cuda._desc(y.int() if False else y), _cuda._desc(c)),
    "result: copy levels + SelectionResult": lambda: (
        st.global_levels.copy(),
        st.class_levels.copy(),
        SelectionResult(None, None, None, np.zeros(C), np.zeros(C), backend="cuda"),
    ),
}
tot = 0
for k, f in parts.items():
    us = t(f)
    tot += us
    print(f"{k:45s} {us:6.2f} us")
print(f"{'sum':45s} {tot:6.2f} us")
