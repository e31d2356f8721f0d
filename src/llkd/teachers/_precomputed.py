"""PrecomputedTeacher: answers a user already has, looked up by text."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from ._base import TeacherOutput, check_classes, check_texts, output_from_answer

__all__ = ["PrecomputedTeacher"]


class PrecomputedTeacher:
    """A teacher whose answers were computed elsewhere (an earlier run, another tool).

    Parameters
    ----------
    texts : sequence of str
        The texts the answers belong to.
    labels : sequence of int or str, optional
        Class index or class name per text; give it with ``confidence``.
    confidence : sequence of float, optional
        Confidence per text, in [0, 1].
    proba : array of shape (n_texts, n_classes), optional
        The class distribution per text (instead of labels + confidence).
    classes : sequence of str
        The class names, in order.

    ``label(texts)`` looks each text up (exact string match); texts it has no answer
    for raise ``KeyError`` naming how many and the first one. Duplicate texts must carry
    identical answers.
    """

    def __init__(self, texts, labels=None, confidence=None, *, proba=None, classes):
        self.classes = check_classes(classes, "classes")
        texts = check_texts(texts)
        if proba is not None:
            if labels is not None or confidence is not None:
                raise ValueError("give either proba, or labels and confidence, not both")
            out = output_from_answer(
                np.asarray(proba, dtype=np.float64), len(texts), self.classes, "PrecomputedTeacher"
            )
        else:
            if labels is None or confidence is None:
                raise ValueError("PrecomputedTeacher needs labels and confidence, or proba")
            out = output_from_answer((labels, confidence), len(texts), self.classes, "PrecomputedTeacher")
        self._index: dict[str, int] = {}
        for i, t in enumerate(texts):
            j = self._index.setdefault(t, i)
            if j != i and (out.labels[j] != out.labels[i] or out.confidence[j] != out.confidence[i]):
                raise ValueError(f"text {t[:60]!r} appears twice (rows {j} and {i}) with different answers")
        self._out = out
        h = hashlib.sha256()
        for t in texts:
            h.update(t.encode("utf-8", "surrogatepass") + b"\0")
        h.update(out.labels.tobytes() + out.confidence.tobytes())
        if out.proba is not None:
            h.update(out.proba.tobytes())
        self.identity = {"kind": "precomputed", "sha256": h.hexdigest()}

    def label(self, texts: Sequence[str]) -> TeacherOutput:
        texts = check_texts(texts, allow_empty=True)
        missing = [t for t in texts if t not in self._index]
        if missing:
            raise KeyError(
                f"PrecomputedTeacher has no answer for {len(missing)} of the {len(texts)} texts "
                f"(first: {missing[0][:80]!r})"
            )
        return self._out.take(np.array([self._index[t] for t in texts], dtype=np.int64))

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"PrecomputedTeacher(n={len(self)}, classes={self.classes!r})"
