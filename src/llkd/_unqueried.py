"""Inputs a teacher budget left unasked, labelled by the student (``unqueried="student"``).

Under ``teacher_budget`` the teacher answers part of the pool. With ``unqueried="student"``,
once the rounds have spent the budget and the student has trained on the answers, that
student labels every input the teacher was never asked about, and a fresh student (the
same initial weights, the same training settings) trains on the teacher's answers and
these labels together, as a fit without a budget trains on the teacher's answers alone.

A student label is the student's softmax ``p``: label ``argmax p``, confidence ``max p``,
and ``p`` itself as the distribution for ``soft_targets``. The confidence is kept rather
than set to 1 because the forward noise correction (:mod:`llkd._label_noise`) ranks every
non-gold row by its confidence: the student's unsure labels are discounted as the
teacher's are. Student labels at full confidence trained worse students.

Why it pays: a student trained with the noise correction on a noisy teacher's answers
labels the remaining inputs more accurately than that teacher does, so the unasked
inputs carry more signal through the student than they would have through the teacher.
With a teacher better than the student the student labels are worse than the teacher's
would be, but not worse than no label. Measurements: docs/design.md section 7.5.1.

The rows keep label -1 in ``teacher_labels_``: the student's labels are training
targets, not answers, and never count as teacher queries.
"""

from __future__ import annotations

import numpy as np

from ._targets import Targets

UNQUERIED = ("auto", "student", "ignore")


def resolve_unqueried(setting: str, budget, student: str) -> str:
    """``"student"`` or ``"ignore"`` for a fit under ``budget`` with the resolved ``student`` kind.

    ``"auto"`` is ``"student"`` under a budget with the MLP student (where it was measured
    to pay), else ``"ignore"``: a second fine-tuned student repeats the costly part of a fit
    and gained little with a good teacher (docs/design.md section 7.5.1). Without a budget
    every input is asked, so nothing is left for the student to label.
    """
    if setting not in UNQUERIED:
        raise ValueError(f"unqueried must be one of {UNQUERIED}, got {setting!r}")
    if setting == "auto":
        return "student" if budget is not None and student == "mlp" else "ignore"
    return setting


def with_student_labels(targets: Targets, rows: np.ndarray, proba: np.ndarray) -> Targets:
    """A copy of ``targets`` in which ``rows`` (unlabelled, -1) carry the student's labels.

    ``proba``: the student's class probabilities for ``rows``, shape (len(rows), C).
    ``targets`` is not modified: its labels stay the teacher's answers.
    """
    rows = np.asarray(rows, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape[0] != rows.size:
        raise ValueError(f"proba has {proba.shape[0]} rows for {rows.size} student-labelled rows")
    if rows.size and (targets.labels[rows] >= 0).any():
        raise ValueError("student labels are only for rows without a label")
    labels = targets.labels.copy()
    confidence = targets.confidence.copy()
    labels[rows] = proba.argmax(axis=1)
    confidence[rows] = np.clip(proba.max(axis=1), 0.0, 1.0)
    dist = None
    if targets.proba is not None:
        dist = targets.proba.copy()
        dist[rows] = proba
    is_gold = None if targets.is_gold is None else targets.is_gold.copy()
    return Targets(labels, confidence, dist, is_gold, targets.n_teacher_queries)
