"""Adapter between AdaptiveSelector and the compiled CPU kernel (``llkd.selection._selection_cpu``).

The kernel (``csrc/cpu/``) makes one fused, multi-threaded pass over the logits with the
GIL released. It checks its arguments itself (types, shapes, labels in range,
confidences in [0, 1], finite logits) and raises ``ValueError``/``TypeError`` naming the
argument and the row. Through :class:`AdaptiveSelector` Python checks only shapes and
dtypes first; every value check is the kernel's. The state arrays are updated in
place, and only when the whole step succeeded.
"""

from __future__ import annotations

import functools

import numpy as np

from ._backends import native_module
from ._state import SelectionResult, SelectorState


@functools.lru_cache(maxsize=64)
def kernel(
    n_classes: int,
    mode: str,
    weighting: str,
    momentum: float,
    fixed_threshold: float,
    random_rate: float,
    n_threads: int,
):
    """The compiled ``Kernel`` of one configuration (cached: building one checks it)."""
    module = native_module()
    if module is None:  # pragma: no cover - the selector checks availability first
        raise RuntimeError("llkd's compiled selection kernel is not available")
    return module.Kernel(n_classes, mode, weighting, momentum, fixed_threshold, random_rate, n_threads)


def _packed(x: np.ndarray, dtype=None) -> np.ndarray:
    """C-contiguous, aligned, native byte order (a no-op for ordinary arrays)."""
    return np.require(x, dtype=dtype, requirements=("C", "A"))


def step(state: SelectorState, logits, labels, confidence, *, random_draws, update: bool, **config) -> SelectionResult:
    """One step of :func:`kernel` ``(**config)``; ``state`` is updated in place on success."""
    k = kernel(logits.shape[1], **config)
    mask, weights, uncertainty, tau_t, tau_s, n_updates = k.step(
        _packed(logits, logits.dtype.newbyteorder("=")),
        _packed(labels, np.int64),
        _packed(confidence, np.float64),
        state.global_levels,
        state.class_levels,
        int(state.n_updates),
        None if random_draws is None else _packed(random_draws, np.float64),
        bool(update),
    )
    state.n_updates = int(n_updates)
    return SelectionResult(mask, weights, uncertainty, tau_t, tau_s, backend="native")
