"""Plain containers shared by every selection backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SelectorState:
    """Running levels of the adaptive selector, kept in float64.

    Attributes
    ----------
    global_levels : ndarray of shape (2,)
        ``[g_T, g_S]``: global teacher-confidence and student-uncertainty levels.
    class_levels : ndarray of shape (2, n_classes)
        ``[m_T, m_S]``: the same levels per pseudo-label class.
    n_updates : int
        Number of batches folded into the levels so far.
    """

    global_levels: np.ndarray
    class_levels: np.ndarray
    n_updates: int = 0

    @classmethod
    def empty(cls, n_classes: int) -> SelectorState:
        return cls(np.zeros(2), np.zeros((2, n_classes)), 0)

    def copy(self) -> SelectorState:
        return SelectorState(self.global_levels.copy(), self.class_levels.copy(), self.n_updates)

    def to_dict(self) -> dict:
        return {
            "global_levels": self.global_levels.tolist(),
            "class_levels": self.class_levels.tolist(),
            "n_updates": int(self.n_updates),
        }

    @classmethod
    def from_dict(cls, d: dict) -> SelectorState:
        return cls(
            np.asarray(d["global_levels"], dtype=np.float64),
            np.asarray(d["class_levels"], dtype=np.float64),
            int(d["n_updates"]),
        )


@dataclass
class SelectionResult:
    """Outcome of one selection step.

    Arrays live where the logits lived: NumPy arrays for host input, tensors on the
    same device for CUDA input. Thresholds are always NumPy arrays.

    Attributes
    ----------
    mask : array of bool, shape (B,)
        Whether each sample is used for the loss.
    weights : array of float, shape (B,)
        Loss weight per sample (0 where not selected; selected weights average 1
        under ``weighting="product"``).
    uncertainty : array of float, shape (B,)
        Normalised entropy of the student's softmax, in [0, 1].
    teacher_threshold, student_threshold : ndarray of shape (n_classes,)
        Class-wise thresholds after this step's update.
    """

    mask: Any
    weights: Any
    uncertainty: Any
    teacher_threshold: np.ndarray
    student_threshold: np.ndarray
    backend: str = field(default="numpy")

    @property
    def n_selected(self) -> int:
        return int(self.mask.sum())
