"""NumPy reference implementation of the LLKD selection rule (docs/design.md section 3).

This module defines the semantics every other backend must reproduce to float
rounding. It favours clarity over speed; all arithmetic is float64.
"""

from __future__ import annotations

import numpy as np

from ._contract import MODES, TIE_TOLERANCE, WEIGHTINGS
from ._state import SelectionResult, SelectorState
from ._validation import check_state

__all__ = ["MODES", "WEIGHTINGS", "TIE_TOLERANCE", "normalized_entropy", "step"]


def normalized_entropy(logits: np.ndarray) -> np.ndarray:
    """Entropy of ``softmax(logits)`` divided by ``log(C)``, in [0, 1], per row.

    Uses the identity ``H = log(s) - sum_j e_j (z_j - m) / s`` with ``m`` the row
    maximum and ``e_j = exp(z_j - m)``, ``s = sum_j e_j``, which is stable for any
    finite logits: where ``z_j - m`` overflows to ``-inf`` (finite logits spanning more
    than the float64 range), ``e_j == 0`` and the term is exactly 0, as in the kernels.
    """
    z = np.asarray(logits, dtype=np.float64)
    n_classes = z.shape[1]
    with np.errstate(over="ignore", invalid="ignore"):
        shifted = z - z.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        terms = np.where(e > 0, e * shifted, 0.0)
    s = e.sum(axis=1)
    entropy = np.log(s) - terms.sum(axis=1) / s
    return np.clip(entropy / np.log(n_classes), 0.0, 1.0)


def class_means(values: np.ndarray, labels: np.ndarray, n_classes: int):
    """Per-class sums and counts of ``values`` grouped by ``labels``."""
    sums = np.bincount(labels, weights=values, minlength=n_classes).astype(np.float64)
    counts = np.bincount(labels, minlength=n_classes)
    return sums, counts


def update_state(
    state: SelectorState,
    confidence: np.ndarray,
    uncertainty: np.ndarray,
    labels: np.ndarray,
    momentum: float,
) -> None:
    """Advance the global and class levels by one batch, in place."""
    n_classes = state.class_levels.shape[1]
    batch = np.array([confidence.mean(), uncertainty.mean()])
    sum_c, counts = class_means(confidence, labels, n_classes)
    sum_u, _ = class_means(uncertainty, labels, n_classes)
    present = counts > 0
    class_batch = np.empty((2, n_classes))
    class_batch[0] = np.where(present, sum_c / np.maximum(counts, 1), batch[0])
    class_batch[1] = np.where(present, sum_u / np.maximum(counts, 1), batch[1])
    if state.n_updates == 0:
        state.global_levels[:] = batch
        state.class_levels[:] = class_batch
    else:
        lam = momentum
        state.global_levels[:] = lam * state.global_levels + (1.0 - lam) * batch
        state.class_levels[:, present] = lam * state.class_levels[:, present] + (1.0 - lam) * class_batch[:, present]
    state.n_updates += 1


#: Modes whose teacher thresholds are the raw class levels, ``tau_T[k] = m_T[k]``.
RAW_TEACHER_LEVELS = frozenset({"class_mean"})


def thresholds(state: SelectorState, mode: str = "llkd") -> tuple[np.ndarray, np.ndarray]:
    """Class-wise thresholds ``tau[k] = g * m[k] / max_j m[j]`` (0 where max is 0).

    In mode ``"class_mean"`` the teacher thresholds are the class levels themselves,
    ``tau_T[k] = m_T[k]``; the student thresholds are the same in every mode.
    """
    out = []
    for g, m in zip(state.global_levels, state.class_levels):
        top = m.max()
        out.append(g * m / top if top > 0 else np.zeros_like(m))
    if mode in RAW_TEACHER_LEVELS:
        out[0] = state.class_levels[0].copy()
    return out[0], out[1]


def select(
    confidence: np.ndarray,
    uncertainty: np.ndarray,
    labels: np.ndarray,
    tau_teacher: np.ndarray,
    tau_student: np.ndarray,
    *,
    mode: str,
    weighting: str,
    fixed_threshold: float,
    random_draws: np.ndarray | None,
    random_rate: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Selection mask and loss weights for one batch against given thresholds."""
    teacher_ok = confidence >= tau_teacher[labels] - TIE_TOLERANCE
    student_ok = uncertainty >= tau_student[labels] - TIE_TOLERANCE
    if mode == "llkd":
        mask = teacher_ok & student_ok
    elif mode in ("teacher", "class_mean"):
        mask = teacher_ok
    elif mode == "student":
        mask = student_ok
    elif mode in ("all", "confidence"):
        mask = np.ones_like(teacher_ok)
    elif mode == "fixed":
        mask = confidence >= fixed_threshold
    elif mode == "random":
        mask = random_draws < random_rate
    else:  # pragma: no cover - validated by the selector
        raise ValueError(f"unknown mode {mode!r}")
    weights = mask.astype(np.float64)
    if mode == "confidence":
        # Every sample, weighted by its confidence above chance (any weighting).
        n_classes = len(tau_teacher)
        excess = np.maximum(0.0, (n_classes * confidence - 1.0) / (n_classes - 1.0))
        mean_e = excess.mean()
        if mean_e > 0:
            weights = excess / mean_e
    elif weighting == "product" and mode != "all" and mask.any():
        r = np.where(mask, confidence * uncertainty, 0.0)
        mean_r = r[mask].mean()
        # All selected samples carry zero evidence (c*u == 0): keep them at weight 1.
        if mean_r > 0:
            weights = r / mean_r
    return mask, weights


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
    update: bool = True,
) -> SelectionResult:
    """One selection step of docs/design.md section 3 (``update=False`` scores without learning).

    ``state`` is checked first (float64 levels of shapes (2,) and (2, C), finite, a
    non-negative update count): a corrupt state raises instead of poisoning the step.
    """
    check_state(state, np.shape(logits)[1])
    confidence = np.asarray(confidence, dtype=np.float64)
    uncertainty = normalized_entropy(logits)
    if update:
        update_state(state, confidence, uncertainty, labels, momentum)
    tau_t, tau_s = thresholds(state, mode)
    mask, weights = select(
        confidence,
        uncertainty,
        labels,
        tau_t,
        tau_s,
        mode=mode,
        weighting=weighting,
        fixed_threshold=fixed_threshold,
        random_draws=random_draws,
        random_rate=random_rate,
    )
    return SelectionResult(
        mask=mask,
        weights=weights,
        uncertainty=uncertainty,
        teacher_threshold=tau_t,
        student_threshold=tau_s,
    )
