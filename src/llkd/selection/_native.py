"""Adapter between AdaptiveSelector and the compiled CPU kernel (``llkd._selection_cpu``).

The kernel (``csrc/selection_cpu.cpp``) makes one fused, multi-threaded pass over the
logits with the GIL released. It checks its arguments itself (types, shapes, labels in
range, confidences in [0, 1], finite logits) and raises ``ValueError``/``TypeError``
naming the argument and the row. Through :class:`AdaptiveSelector` Python checks only
shapes and dtypes first; every value check is the kernel's. The state
arrays are updated in place, and only when the whole step succeeded.
"""

from __future__ import annotations

import numpy as np

from ._backends import native_module
from ._contract import MODE_CODES, WEIGHTING_CODES
from ._state import SelectionResult, SelectorState



def _packed(x: np.ndarray, dtype=None) -> np.ndarray:
    """C-contiguous, aligned, native byte order (a no-op for ordinary arrays)."""
    return np.require(x, dtype=dtype, requirements=("C", "A"))


def step(
    state: SelectorState,
    logits: np.ndarray,
    labels: np.ndarray,
    confidence: np.ndarray,
    *,
    momentum: float,
    mode: str,
    weighting: str,
    fixed_threshold: float,
    random_rate: float,
    random_draws: np.ndarray | None,
    update: bool,
    n_threads: int,
) -> SelectionResult:
    module = native_module()
    if module is None:  # pragma: no cover - the selector checks availability first
        raise RuntimeError("llkd's compiled selection kernel is not available")
    logits = _packed(logits, logits.dtype.newbyteorder("="))
    mask, weights, uncertainty, tau_t, tau_s, n_updates = module.step(
        logits,
        _packed(labels, np.int64),
        _packed(confidence, np.float64),
        state.global_levels,
        state.class_levels,
        int(state.n_updates),
        float(momentum),
        MODE_CODES[mode],
        WEIGHTING_CODES[weighting],
        float(fixed_threshold),
        None if random_draws is None else _packed(random_draws, np.float64),
        float(random_rate),
        bool(update),
        int(n_threads),
    )
    state.n_updates = int(n_updates)
    return SelectionResult(mask, weights, uncertainty, tau_t, tau_s, backend="native")
