"""Asking the teacher (once per distinct input) and merging its answers with gold labels."""

from __future__ import annotations

import numpy as np
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

from ._labels import Targets, encode_gold, memo_for, row_key, unlabeled_mask


def _gold(y, n: int):
    y = column_or_1d(np.asarray(y, dtype=object) if _has_none(y) else y, warn=True)
    if len(y) != n:
        raise ValueError(f"X has {n} rows but y has {len(y)} entries")
    unl = unlabeled_mask(y)
    return y, unl


def _has_none(y) -> bool:
    try:
        return any(v is None for v in y)
    except TypeError:
        return False


def _classes_from_y(y_lab, labels) -> np.ndarray:
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


def make_targets(est, X, y) -> Targets:
    """Targets for every row of ``X``; sets ``est.classes_``."""
    n = len(X)
    if n == 0:
        raise ValueError("X is empty: fit needs at least one sample")
    gold_y, unl = (None, np.ones(n, dtype=bool)) if y is None else _gold(y, n)

    if est.teacher is None:
        if gold_y is None:
            raise ValueError(
                f"{type(est).__name__} requires y to be passed, but the target y is None "
                "(pass a teacher to train on unlabeled data)"
            )
        y_lab = gold_y[~unl]
        classes = _classes_from_y(y_lab, est.labels)
        est.classes_ = classes
        labels = np.full(n, -1, dtype=np.int64)
        labels[~unl] = encode_gold(y_lab, classes)
        confidence = (~unl).astype(np.float64)
        return Targets(labels, confidence, None, ~unl, 0)

    from .teachers import as_teacher

    teacher = as_teacher(est.teacher, labels=est.labels)
    classes = np.asarray(list(teacher.classes))
    if len(classes) < 2:
        raise ValueError(f"the teacher must have at least 2 classes, got {classes.tolist()!r}")
    est.classes_ = classes
    C = len(classes)
    labels = np.full(n, -1, dtype=np.int64)
    confidence = np.zeros(n)
    is_gold = ~unl
    if gold_y is not None and is_gold.any():
        labels[is_gold] = encode_gold(gold_y[is_gold], classes)
        confidence[is_gold] = 1.0

    ask_rows = np.flatnonzero(unl)
    keys = [row_key(X[i]) for i in ask_rows]
    distinct: dict[str, int] = {}
    for i, k in zip(ask_rows, keys):
        distinct.setdefault(k, int(i))
    answers, n_queries = _answers(est, teacher, X, distinct)
    proba = None
    if answers["proba"] is not None:
        proba = np.zeros((n, C))
        proba[is_gold, labels[is_gold]] = 1.0

    pool_proba = answers["proba"]
    pool_labels, pool_conf = answers["labels"], answers["confidence"]
    if pool_proba is not None and len(pool_proba):
        from .teachers import calibrate_pool

        pool_proba = calibrate_pool(pool_proba, method=est.calibration)
        pool_labels = pool_proba.argmax(axis=1)
        pool_conf = pool_proba.max(axis=1)
    position = {k: j for j, k in enumerate(distinct)}
    for i, k in zip(ask_rows, keys):
        j = position[k]
        labels[i] = pool_labels[j]
        confidence[i] = pool_conf[j]
        if proba is not None:
            proba[i] = pool_proba[j]
    return Targets(labels, np.clip(confidence, 0.0, 1.0), proba, is_gold, n_queries)


def _answers(est, teacher, X, distinct: dict[str, int]):
    """Teacher answers for each distinct key (memo first, then the teacher).

    A :class:`~llkd.teachers.CalibratedTeacher` is unwrapped: its inner teacher's raw
    answers are asked and remembered batch by batch like any teacher's, and its
    calibration is applied once, over this fit's whole pool (never per batch, and never
    reusing answers calibrated over an earlier fit's pool).
    """
    from .teachers import CalibratedTeacher, TeacherOutput, label_in_batches

    calibrated = teacher if isinstance(teacher, CalibratedTeacher) else None
    if calibrated is not None:
        teacher = calibrated.teacher
    memo = memo_for(est.teacher)
    memo = {} if memo is None else memo
    missing = [k for k in distinct if k not in memo]
    n_queries = 0
    if missing:
        rows = [distinct[k] for k in missing]

        def remember(keys, out):
            # Batch by batch: when a later batch fails, a new fit with the same teacher
            # object asks only for what is still missing.
            for j, k in enumerate(keys):
                memo[k] = (
                    int(out.labels[j]),
                    float(out.confidence[j]),
                    None if out.proba is None else np.asarray(out.proba[j], dtype=np.float64),
                )

        asked = []

        def on_batch(keys, out):
            asked.append(len(keys))
            remember(keys, out)

        if isinstance(X, list):
            out = label_in_batches(
                teacher,
                [X[i] for i in rows],
                batch_size=int(est.teacher_batch_size),
                cache=est.teacher_cache,
                progress=bool(est.verbose),
                on_batch=on_batch,  # texts are their own memo keys
            )
            remember(missing, out)  # answers that came from the durable cache too
        else:
            _label_rows(teacher, X[np.asarray(rows)], missing, int(est.teacher_batch_size), on_batch)
        n_queries = sum(asked)
    entries = [memo[k] for k in distinct]
    has_proba = all(e[2] is not None for e in entries) and len(entries) > 0
    out = TeacherOutput(
        np.array([e[0] for e in entries], dtype=np.int64),
        np.array([e[1] for e in entries], dtype=np.float64),
        np.stack([e[2] for e in entries]) if has_proba else None,
    )
    if calibrated is not None and len(entries):
        out = calibrated.calibrate_output(out)
    return {"labels": out.labels, "confidence": out.confidence, "proba": out.proba}, n_queries


def _label_rows(teacher, rows: np.ndarray, keys: list, batch_size: int, remember) -> None:
    """Ask the teacher about rows of a feature matrix, batch by batch (no text cache applies)."""
    from .teachers import CallableTeacher, TeacherError
    from .teachers._base import check_teacher_output, output_from_answer

    C = len(teacher.classes)
    for b, start in enumerate(range(0, len(rows), batch_size)):
        batch = rows[start : start + batch_size]
        what = f"teacher (batch {b}, rows {start}-{start + len(batch) - 1})"
        try:
            if isinstance(teacher, CallableTeacher):
                out = output_from_answer(teacher.fn(batch), len(batch), teacher.classes, what)
            else:
                out = check_teacher_output(teacher.label(batch), len(batch), C, what)
        except (ValueError, TypeError):
            raise
        except Exception as exc:
            raise TeacherError(
                f"{what} raised {type(exc).__name__}: {exc} ({start} answers before it are kept "
                "for this teacher object: fitting again asks only for the rest)",
                batch_index=b, start=start, stop=start + len(batch), n_done=start,
            ) from exc
        remember(keys[start : start + len(batch)], out)
