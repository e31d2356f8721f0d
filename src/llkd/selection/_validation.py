"""Boundary checks for selection inputs (docs/design.md section 5).

Shapes and dtypes are checked here for every backend. The value checks (labels in
range, confidences finite and in [0, 1], finite logits) are left to the compiled
kernels, which do them inside their own pass over the data and name the offending
row; for the NumPy backend (and host data bound for the GPU) they run here.
"""

from __future__ import annotations

import numpy as np


def is_torch_tensor(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def is_cuda_array(x) -> bool:
    if is_torch_tensor(x):
        return bool(x.is_cuda)
    return hasattr(x, "__cuda_array_interface__")


def to_host(x, name: str) -> np.ndarray:
    if is_torch_tensor(x):
        x = x.detach()
        if x.is_cuda:
            x = x.cpu()
        if x.dtype.is_floating_point and x.dtype not in _TORCH_NUMPY_FLOATS():
            x = x.float()
        return x.numpy()
    if hasattr(x, "__cuda_array_interface__") and not isinstance(x, np.ndarray):
        raise TypeError(f"{name} is a CUDA array of type {type(x).__name__}; pass a torch tensor or use backend='cuda'")
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} could not be converted to an array: {exc}") from exc


def _TORCH_NUMPY_FLOATS():
    import torch

    return (torch.float32, torch.float64)


def native_byte_order(x: np.ndarray) -> np.ndarray:
    """``x`` in native byte order (big-endian input is converted, not refused)."""
    return x if x.dtype.isnative else x.astype(x.dtype.newbyteorder("="))


def check_logits(logits: np.ndarray, n_classes: int) -> np.ndarray:
    logits = native_byte_order(logits)
    if logits.ndim != 2:
        raise ValueError(f"student_logits must be 2-D (batch, n_classes), got shape {logits.shape}")
    if logits.shape[0] == 0:
        raise ValueError("student_logits is empty: a selection step needs at least one sample")
    if logits.shape[1] != n_classes:
        raise ValueError(
            f"student_logits has {logits.shape[1]} columns but the selector was built for n_classes={n_classes}"
        )
    if logits.dtype == np.float16:
        logits = logits.astype(np.float32)
    if logits.dtype not in (np.float32, np.float64):
        raise TypeError(f"student_logits must be a float32 or float64 array, got dtype {logits.dtype}")
    return np.ascontiguousarray(logits)


def check_labels(labels: np.ndarray, n_rows: int, n_classes: int, *, values: bool = True) -> np.ndarray:
    if labels.ndim != 1 or labels.shape[0] != n_rows:
        raise ValueError(f"pseudo_labels must have shape ({n_rows},) to match student_logits, got {labels.shape}")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        if (
            np.issubdtype(labels.dtype, np.floating)
            and np.all(np.isfinite(labels))
            and np.all(labels == np.round(labels))
        ):
            labels = labels.astype(np.int64)
        else:
            raise TypeError(f"pseudo_labels must hold integer class indices, got dtype {labels.dtype}")
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    if values and labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)][0]
        raise ValueError(f"pseudo_labels must lie in [0, {n_classes - 1}], found {bad}")
    return labels


def check_confidence(confidence: np.ndarray, n_rows: int, *, values: bool = True) -> np.ndarray:
    if confidence.ndim != 1 or confidence.shape[0] != n_rows:
        raise ValueError(
            f"teacher_confidence must have shape ({n_rows},) to match student_logits, got {confidence.shape}"
        )
    if (
        not (np.issubdtype(confidence.dtype, np.floating) or np.issubdtype(confidence.dtype, np.integer))
        or confidence.dtype == bool
    ):
        raise TypeError(f"teacher_confidence must be a float array, got dtype {confidence.dtype}")
    confidence = np.ascontiguousarray(confidence, dtype=np.float64)
    if not values:
        return confidence
    if not np.all(np.isfinite(confidence)):
        raise ValueError("teacher_confidence contains NaN or infinite values")
    if confidence.size and (confidence.min() < 0.0 or confidence.max() > 1.0):
        raise ValueError(
            f"teacher_confidence must lie in [0, 1], found values in [{confidence.min():g}, {confidence.max():g}]"
        )
    return confidence


def check_finite_logits(logits: np.ndarray) -> None:
    if not np.all(np.isfinite(logits)):
        raise ValueError("student_logits contains NaN or infinite values")


def check_state(state, n_classes: int | None = None) -> int:
    """The selector state the backends read and write in place (docs/design.md section 3).

    Returns the number of classes (taken from ``class_levels`` when not given).
    """
    if n_classes is None:
        shape = np.shape(getattr(state, "class_levels", ()))
        n_classes = int(shape[-1]) if shape else 0
    for name, shape in (("global_levels", (2,)), ("class_levels", (2, n_classes))):
        a = getattr(state, name, None)
        if not isinstance(a, np.ndarray):
            raise TypeError(f"state.{name} must be a numpy.ndarray, got {type(a).__name__}")
        if a.dtype != np.float64:
            raise TypeError(f"state.{name} must have dtype float64, got {a.dtype}")
        if a.shape != shape:
            raise ValueError(f"state.{name} must have shape {shape}, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"state.{name} contains NaN or infinite values: the selector state is corrupt")
    n = state.n_updates
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"state.n_updates must be a non-negative int, got {n!r}")
    return n_classes
