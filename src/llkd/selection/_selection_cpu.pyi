"""Stubs of llkd's compiled CPU selection kernel (csrc/bindings_cpu.cpp)."""

import numpy as np
import numpy.typing as npt

from ._contract import KernelConfig

# The native contract (csrc/selection_contract.hpp).
MODES: tuple[str, ...]
WEIGHTINGS: tuple[str, ...]
TIE_TOLERANCE: float
DTYPES: dict[str, int]
FLAGS: dict[str, int]

class Kernel(KernelConfig):
    """The CPU selection kernel for one configuration (docs/design.md section 3)."""

    def __init__(
        self,
        n_classes: int,
        mode: str = "llkd",
        weighting: str = "product",
        momentum: float = 0.9,
        fixed_threshold: float = 0.9,
        random_rate: float = 0.1,
        n_threads: int = 1,
    ) -> None: ...
    def step(
        self,
        student_logits: npt.NDArray[np.float32] | npt.NDArray[np.float64],
        pseudo_labels: npt.NDArray[np.int64],
        teacher_confidence: npt.NDArray[np.float64],
        global_levels: npt.NDArray[np.float64],
        class_levels: npt.NDArray[np.float64],
        n_updates: int,
        random_draws: npt.NDArray[np.float64] | None = None,
        update: bool = True,
    ) -> tuple[
        npt.NDArray[np.bool_],
        npt.NDArray[np.float64],
        npt.NDArray[np.float64],
        npt.NDArray[np.float64],
        npt.NDArray[np.float64],
        int,
    ]:
        """(mask, weights, uncertainty, teacher_threshold, student_threshold, n_updates);
        the state arrays are written in place only when the step succeeded."""
    @property
    def n_threads(self) -> int: ...

def build_info() -> dict[str, object]: ...
def _set_simd(name: str) -> bool: ...
def _simd_active() -> str: ...
def pool_uncertainty(
    logits: npt.NDArray[np.float32] | npt.NDArray[np.float64], n_threads: int = 1
) -> npt.NDArray[np.float64]:
    """H(softmax(z)) / log C per row (the step's uncertainty), GIL released."""
