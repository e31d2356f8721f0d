"""LLKD sample selection: the NumPy reference and the compiled backends."""

from ._acquisition import pool_uncertainty
from ._reference import MODES, WEIGHTINGS, normalized_entropy
from ._selector import AdaptiveSelector, default_n_threads, reads_student, resolve_selection, resolve_weighting
from ._state import SelectionResult, SelectorState

__all__ = [
    "AdaptiveSelector",
    "SelectionResult",
    "SelectorState",
    "MODES",
    "WEIGHTINGS",
    "normalized_entropy",
    "pool_uncertainty",
    "default_n_threads",
    "reads_student",
    "resolve_selection",
    "resolve_weighting",
]
