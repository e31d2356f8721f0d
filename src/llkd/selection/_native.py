"""Adapter between AdaptiveSelector and the compiled CPU kernel (``llkd._selection_cpu``)."""

from __future__ import annotations

import numpy as np

from ._backends import native_module
from ._state import SelectionResult, SelectorState

MODE_CODES = {"llkd": 0, "teacher": 1, "student": 2, "all": 3, "fixed": 4, "random": 5}
WEIGHTING_CODES = {"product": 0, "none": 1}


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
    mask, weights, uncertainty, tau_t, tau_s, n_updates = module.step(
        logits,
        labels,
        confidence,
        state.global_levels,
        state.class_levels,
        int(state.n_updates),
        float(momentum),
        MODE_CODES[mode],
        WEIGHTING_CODES[weighting],
        float(fixed_threshold),
        random_draws,
        float(random_rate),
        bool(update),
        int(n_threads),
    )
    state.n_updates = int(n_updates)
    return SelectionResult(mask, weights, uncertainty, tau_t, tau_s, backend="native")
