"""The native contract: modes, weightings, dtype codes, flag bits and the tie tolerance.

They are defined once, in ``csrc/selection_contract.hpp``, and exported by the compiled
modules; this module reads them from there. ``FALLBACK`` is a copy used only when no
compiled module is importable, so that the NumPy reference still runs;
``tests/test_selection_contract.py`` checks that it equals what the modules export.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Protocol

from ._backends import _import

FALLBACK = MappingProxyType(
    {
        "MODES": ("llkd", "teacher", "student", "all", "fixed", "random", "class_mean", "confidence"),
        "WEIGHTINGS": ("product", "none"),
        "TIE_TOLERANCE": 1e-9,
        "DTYPES": {"float32": 0, "float64": 1, "int32": 2, "int64": 3},
        "FLAGS": {"bad_logits": 1, "bad_labels": 2, "bad_confidence": 4},
    }
)


def exported(module) -> dict:
    """The contract as a compiled module exports it."""
    return {key: getattr(module, key) for key in FALLBACK}


def _source():
    for name in ("_selection_cpu", "_selection_cuda"):
        module, _ = _import(name)
        if module is not None and hasattr(module, "MODES"):
            return exported(module), name
    return dict(FALLBACK), None


_CONTRACT, SOURCE = _source()

#: Selection modes, in the order of their codes.
MODES: tuple = tuple(_CONTRACT["MODES"])
#: Weightings, in the order of their codes.
WEIGHTINGS: tuple = tuple(_CONTRACT["WEIGHTINGS"])
#: Threshold tests pass when ``value >= tau - TIE_TOLERANCE`` (see the header).
TIE_TOLERANCE: float = float(_CONTRACT["TIE_TOLERANCE"])
DTYPES: dict = dict(_CONTRACT["DTYPES"])
FLAGS: dict = dict(_CONTRACT["FLAGS"])
MODE_CODES = {name: code for code, name in enumerate(MODES)}
WEIGHTING_CODES = {name: code for code, name in enumerate(WEIGHTINGS)}


class KernelConfig(Protocol):
    """The configuration both compiled ``Kernel`` classes expose (read-only properties)."""

    n_classes: int
    mode: str
    weighting: str
    momentum: float
    fixed_threshold: float
    random_rate: float
