"""Turning X, y and a teacher into training targets for the student.

Gold labels in ``y`` win over the teacher (confidence 1); the teacher is asked only
for the distinct inputs that have no gold label, and its answers are remembered per
teacher object so that clones (``GridSearchCV`` folds) never pay for them twice.
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass

import numpy as np

_MEMO: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()


@dataclass
class Targets:
    """Per-row training targets."""

    labels: np.ndarray  # int64 (n,), -1 where the row has no label at all
    confidence: np.ndarray  # float64 (n,)
    proba: np.ndarray | None  # float64 (n, C) or None
    is_gold: np.ndarray  # bool (n,)
    n_teacher_queries: int  # distinct inputs sent to the teacher in this fit


def row_key(x) -> str:
    """Memo key of one input: the text itself, or a hash of a feature row's bytes."""
    if isinstance(x, str):
        return x
    row = np.ascontiguousarray(x)
    return "row:" + hashlib.sha1(row.tobytes() + str(row.dtype).encode()).hexdigest()


def memo_for(teacher) -> dict | None:
    try:
        return _MEMO.setdefault(teacher, {})
    except TypeError:  # not weak-referenceable: no memo
        return None


def unlabeled_mask(y) -> np.ndarray:
    """True where ``y`` marks a row as unlabeled (-1 or None)."""
    y = np.asarray(y, dtype=object)
    out = np.zeros(len(y), dtype=bool)
    for i, v in enumerate(y):
        if v is None:
            out[i] = True
        elif isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v == -1:
            out[i] = True
        elif isinstance(v, (float, np.floating)) and (np.isnan(v) or v == -1):
            out[i] = True
    return out


def encode_gold(y_labeled, classes) -> np.ndarray:
    """Class indices of gold labels; unknown labels raise a ValueError naming them."""
    lookup = {c: i for i, c in enumerate(classes.tolist())}
    idx = np.empty(len(y_labeled), dtype=np.int64)
    for j, v in enumerate(y_labeled):
        key = v.item() if isinstance(v, np.generic) else v
        if key not in lookup:
            raise ValueError(
                f"y contains the label {key!r}, which is not one of the classes "
                f"{classes.tolist()!r}"
            )
        idx[j] = lookup[key]
    return idx
