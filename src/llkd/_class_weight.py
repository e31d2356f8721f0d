"""Class weights on the student's loss (``class_weight``).

A student trained on a teacher's labels inherits the teacher's class shares. A teacher
whose labels over-represent some classes (a prompt or prior bias: the TF-IDF teacher of
the benchmark's movie reviews says "positive" for 75 % of a pool that is 58 % positive)
or starve rare ones (Reuters R52) passes that bias on, and macro-F1 pays for it. Class
weights, as in scikit-learn's ``class_weight``, counter it:

- ``"balanced"``: ``w_k = n / (C n_k)``, with ``n_k`` the training rows labelled ``k``
  (teacher labels and gold labels alike) and ``n`` their total;
- ``"sqrt_balanced"``: ``w_k = sqrt(n / (C n_k))``, half-way on a log scale: it corrects
  a biased teacher without handing the rarest, noisiest labels the largest weights
  (square-root re-balancing, as in long-tail learning);
- a dict ``{class: weight}`` (classes not named get 1);
- ``None``: no class weights.

A row's weight is multiplied by the weight of its label, then the batch is rescaled so
that its total weight is unchanged: the weights move the balance between the rows of a
batch, not the step size. A class with no training rows gets weight 1 (it never
contributes). ``"auto"`` is ``"sqrt_balanced"`` with ``selection="confidence"`` (the MLP
student's default) or ``"all"`` (the fine-tuned student's), hard targets and teacher
labels among the training rows, the combinations measured (docs/design.md section 3.9),
and ``None`` otherwise: the paper's rule and the other selection rules train as before,
and a fit on gold labels alone (no teacher to be biased) is left unweighted.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

CLASS_WEIGHTS = ("auto", "balanced", "sqrt_balanced")


def resolve_class_weight(setting, selection: str, soft_targets: bool, teacher_rows: bool):
    """What ``class_weight`` stands for: None, a name or a dict.

    ``teacher_rows``: whether any training row carries a teacher's label (not gold).
    """
    if isinstance(setting, str) and setting == "auto":
        measured = selection in ("confidence", "all")
        return "sqrt_balanced" if measured and not soft_targets and teacher_rows else None
    return setting


def check_class_weight(setting, classes) -> None:
    """Refuse a ``class_weight`` that cannot apply to ``classes`` (before any teacher query)."""
    if setting is None or isinstance(setting, str):
        if setting is not None and setting not in CLASS_WEIGHTS:
            raise ValueError(f"class_weight must be one of {CLASS_WEIGHTS}, a dict or None; got {setting!r}")
        return
    if not isinstance(setting, dict):
        raise TypeError(f"class_weight must be one of {CLASS_WEIGHTS}, a dict or None; got {type(setting).__name__}")
    known = {str(c) for c in classes}
    unknown = [k for k in setting if str(k) not in known]
    if unknown:
        raise ValueError(f"class_weight names classes that are not among the classes {sorted(known)}: {unknown}")
    for k, v in setting.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v) or v < 0:
            raise ValueError(f"class_weight[{k!r}] must be a finite number >= 0; got {v!r}")


def weight_vector(setting: dict, classes) -> np.ndarray:
    """A dict ``class_weight`` as one weight per class of ``classes`` (1 for classes not named)."""
    by_name = {str(k): float(v) for k, v in setting.items()}
    return np.array([by_name.get(str(c), 1.0) for c in classes], dtype=np.float64)


def class_weights(setting, labels: np.ndarray, rows: np.ndarray, n_classes: int) -> np.ndarray | None:
    """Per-class weights (float64, one per class) over the training ``rows``.

    ``setting``: None (no weights: returns None), ``"balanced"``, ``"sqrt_balanced"``, or
    an array of fixed weights (returned as it is).
    """
    if setting is None:
        return None
    if not isinstance(setting, str):
        return np.asarray(setting, dtype=np.float64)
    C = n_classes
    counts = np.bincount(np.asarray(labels)[np.asarray(rows, dtype=np.int64)], minlength=C).astype(np.float64)
    n = counts.sum()
    w = np.ones(C, dtype=np.float64)
    present = counts > 0
    if n > 0:
        w[present] = n / (C * counts[present])
    if setting == "sqrt_balanced":
        w = np.sqrt(w)
    return w


def reweight(weights: torch.Tensor, mask: torch.Tensor, y: torch.Tensor, w_class: torch.Tensor) -> torch.Tensor:
    """``weights`` times the class weight of each row's label, rescaled so that the selected
    rows' total weight is unchanged (rows outside ``mask`` keep their weight)."""
    w = weights * w_class[y].to(weights.dtype)
    before = (weights * mask).sum()
    after = (w * mask).sum()
    ok = after > 0  # a tensor test: no device synchronisation per step
    return torch.where(ok, w * (before / torch.where(ok, after, torch.ones_like(after))), weights)
