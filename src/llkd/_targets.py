"""Training targets from X, y and a teacher: gold labels first, the teacher for the rest, then calibration.

Gold labels in ``y`` win over the teacher (confidence 1). The teacher is asked only for
the distinct inputs without a gold label, through
:func:`~llkd.teachers.label_in_batches`; its answers are remembered per teacher object
(``memory_for``), so clones (``GridSearchCV`` folds) and a refit after a failure never pay
for them twice, and written to the durable cache when one is given. Calibration is the
last step, over this fit's pool of distinct teacher-labelled inputs.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

from .teachers._base import input_key

_MEMORY: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()


@dataclass
class Targets:
    """Per-row training targets."""

    labels: np.ndarray  # int64 (n,), -1 where the row has no label at all
    confidence: np.ndarray  # float64 (n,)
    proba: np.ndarray | None = None  # float64 (n, C) or None
    is_gold: np.ndarray | None = None  # bool (n,)
    n_teacher_queries: int = 0  # distinct inputs the teacher answered in this fit


def memory_for(teacher) -> dict | None:
    """The answers remembered for this teacher object (None: it cannot be weakly referenced)."""
    try:
        return _MEMORY.setdefault(teacher, {})
    except TypeError:
        return None


def unlabeled_mask(y) -> np.ndarray:
    """True where ``y`` marks a row as unlabeled (-1, NaN or None)."""
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


def gold_labels(y, n: int):
    """``(y as a 1-D array, unlabeled mask)``, checked against ``n`` rows."""
    has_none = False
    try:
        has_none = any(v is None for v in y)
    except TypeError:
        pass
    y = column_or_1d(np.asarray(y, dtype=object) if has_none else y, warn=True)
    if len(y) != n:
        raise ValueError(f"X has {n} rows but y has {len(y)} entries")
    return y, unlabeled_mask(y)


def classes_from_y(y_lab, labels) -> np.ndarray:
    if labels is not None:
        classes = np.asarray(list(labels))
    else:
        if len(y_lab) == 0:
            raise ValueError("y has no labeled rows (all are -1 or None) and there is no teacher")
        check_classification_targets(np.asarray(y_lab) if y_lab.dtype != object else y_lab)
        classes = np.unique(y_lab.tolist() if y_lab.dtype == object else y_lab)
    if len(classes) < 2:
        raise ValueError(
            f"the classifier needs at least 2 classes; got {len(classes)} class: {classes.tolist()!r}"
        )
    if len(set(classes.tolist())) != len(classes):
        raise ValueError(f"labels must be distinct, got {classes.tolist()!r}")
    return classes


def make_targets(X, y, *, teacher, labels=None, calibration="auto", batch_size=16, cache=None,
                 progress=False) -> tuple[np.ndarray, Targets]:
    """``(classes, targets)`` for every row of ``X`` (a list of texts or a 2-D array)."""
    from .teachers import calibrate_pool
    from .teachers._batching import label_in_batches
    from .teachers._base import split_calibration
    from .teachers._callable import as_teacher

    n = len(X)
    if n == 0:
        raise ValueError("X is empty: fit needs at least one sample")
    gold_y, unl = (None, np.ones(n, dtype=bool)) if y is None else gold_labels(y, n)

    if teacher is None:
        if gold_y is None:
            raise ValueError("LLKDClassifier requires y to be passed, but the target y is None "
                             "(pass a teacher to train on unlabeled data)")
        y_lab = gold_y[~unl]
        classes = classes_from_y(y_lab, labels)
        target_labels = np.full(n, -1, dtype=np.int64)
        target_labels[~unl] = encode_gold(y_lab, classes)
        return classes, Targets(target_labels, (~unl).astype(np.float64), None, ~unl, 0)

    memory = memory_for(teacher)
    teacher = as_teacher(teacher, labels=labels)
    classes = np.asarray(list(teacher.classes))
    if len(classes) < 2:
        raise ValueError(f"the teacher must have at least 2 classes, got {classes.tolist()!r}")
    C = len(classes)
    target_labels = np.full(n, -1, dtype=np.int64)
    confidence = np.zeros(n)
    is_gold = ~unl
    if gold_y is not None and is_gold.any():
        target_labels[is_gold] = encode_gold(gold_y[is_gold], classes)
        confidence[is_gold] = 1.0

    ask_rows = np.flatnonzero(unl)
    keys = [input_key(X[i]) for i in ask_rows]
    distinct: dict[str, int] = {}
    for i, k in zip(ask_rows, keys):
        distinct.setdefault(k, int(i))
    proba = None
    n_queries = 0
    if distinct:
        # A deprecated CalibratedTeacher: its base teacher's raw answers are the ones
        # remembered and cached; its calibration replaces `calibration` below.
        base, pool_calibration = split_calibration(teacher)
        asked = []
        rows = list(distinct.values())
        pool_inputs = [X[i] for i in rows] if isinstance(X, list) else X[np.asarray(rows)]
        answers = label_in_batches(base, pool_inputs, batch_size=int(batch_size), cache=cache, progress=progress,
                                   memory=memory, on_batch=lambda k, out: asked.append(len(k)))
        n_queries = sum(asked)
        if pool_calibration is not None:
            answers = pool_calibration(answers)
        pool_labels, pool_conf, pool_proba = answers.labels, answers.confidence, answers.proba
        if pool_calibration is None and pool_proba is not None:
            pool_proba = calibrate_pool(pool_proba, method=calibration)
            pool_labels, pool_conf = pool_proba.argmax(axis=1), pool_proba.max(axis=1)
        position = {k: j for j, k in enumerate(distinct)}
        where = np.array([position[k] for k in keys], dtype=np.int64)
        target_labels[ask_rows] = pool_labels[where]
        confidence[ask_rows] = pool_conf[where]
        if pool_proba is not None:
            proba = np.zeros((n, C))
            proba[is_gold, target_labels[is_gold]] = 1.0
            proba[ask_rows] = pool_proba[where]
    return classes, Targets(target_labels, np.clip(confidence, 0.0, 1.0), proba, is_gold, n_queries)
