"""Stubs of llkd's compiled CUDA selection kernel (csrc/bindings_cuda.cpp)."""

from typing import Any

import numpy as np
import numpy.typing as npt

from ._contract import KernelConfig

# The native contract (csrc/selection_contract.hpp).
MODES: tuple[str, ...]
WEIGHTINGS: tuple[str, ...]
TIE_TOLERANCE: float
DTYPES: dict[str, int]
FLAGS: dict[str, int]

class InputFlagsError(ValueError):
    """Bad values found on the device; ``flags`` holds the bits of FLAGS."""

    flags: int

# (pointer, shape, typestr) of a C-contiguous device array.
Descriptor = tuple[int, tuple[int, ...], str]

class Kernel(KernelConfig):
    """The CUDA selection kernel for one configuration (docs/design.md section 3)."""

    def __init__(
        self,
        n_classes: int,
        mode: str = "llkd",
        weighting: str = "product",
        momentum: float = 0.9,
        fixed_threshold: float = 0.9,
        random_rate: float = 0.1,
        variant: int = -1,
    ) -> None: ...
    def step(
        self,
        student_logits: Any,
        pseudo_labels: Any,
        teacher_confidence: Any,
        global_levels: npt.NDArray[np.float64],
        class_levels: npt.NDArray[np.float64],
        n_updates: int,
        *,
        out: tuple[Any, Any, Any],
        scratch: Any,
        random_draws: Any = None,
        update: bool = True,
        stream: int = 0,
    ) -> tuple[Any, Any, Any, npt.NDArray[np.float64], npt.NDArray[np.float64], int]:
        """Checked step on __cuda_array_interface__ arrays: (mask, weights, uncertainty,
        teacher_threshold, student_threshold, n_updates), the first three being ``out``."""
    def step_unchecked(
        self,
        student_logits: Descriptor,
        pseudo_labels: Descriptor,
        teacher_confidence: Descriptor,
        random_draws: Descriptor | None,
        out_uncertainty: int,
        out_mask: int,
        out_weights: int,
        scratch: int,
        scratch_size: int,
        global_levels: npt.NDArray[np.float64],
        class_levels: npt.NDArray[np.float64],
        n_updates: int,
        update: bool,
        stream: int,
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], int]:
        """Unchecked fast path: (teacher_threshold, student_threshold, n_updates)."""
    @property
    def variant(self) -> int: ...

def device_count() -> int: ...
def pointer_device(ptr: int) -> int: ...
def scratch_bytes(n_classes: int) -> int: ...
def default_variant(n_classes: int, float64: bool = False) -> int: ...
def variants() -> list[dict[str, object]]: ...
def build_info() -> dict[str, object]: ...
