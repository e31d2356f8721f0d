"""CallableTeacher, and as_teacher: a plain function as a teacher."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ._base import TeacherOutput, check_classes, check_texts, output_from_answer

__all__ = ["CallableTeacher", "as_teacher"]


class CallableTeacher:
    """Wrap ``fn(texts) -> answers`` as a teacher.

    Parameters
    ----------
    fn : callable
        Called with one batch: a list of texts, or a 2-D array of feature rows when the
        estimator is fitted on features. It returns either an
        ``(n_texts, n_classes)`` probability array (label = argmax, confidence = max,
        ``proba`` kept), or a pair ``(labels, confidence)`` where ``labels`` are class
        indices or class names (then ``proba`` is None, and calibration leaves these
        answers unchanged), or a :class:`TeacherOutput`. Where the class names are
        numbers other than ``0..n_classes-1`` (star ratings 1-5), a returned number
        could be either, and is refused: return the names as str.
    labels : sequence of str
        The class names, in order.
    identity : str, dict or None
        Names what ``fn`` computes, for the durable cache. ``None`` (default) means the
        answers are not cached: the cache cannot tell two versions of a function apart.
    batch_size : int or None
        Preferred texts per call (used by :func:`label_in_batches` when the caller gives
        none).

    Every answer is checked: the number of answers, labels in range or known class
    names, confidences in [0, 1] and not NaN, rows of probabilities summing to 1.
    """

    def __init__(self, fn: Callable, labels: Sequence[str], *, identity=None, batch_size=None):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.classes = check_classes(labels)
        self.identity = identity
        self.batch_size = batch_size

    def label(self, texts: Sequence[str]) -> TeacherOutput:
        """Answers for a batch of texts (a list of str) or of feature rows (a 2-D array)."""
        if not (isinstance(texts, np.ndarray) and texts.ndim == 2):
            texts = check_texts(texts, allow_empty=True)
        if len(texts) == 0:
            return TeacherOutput([], [], None)
        name = getattr(self.fn, "__qualname__", type(self.fn).__name__)
        return output_from_answer(self.fn(texts), len(texts), self.classes, f"teacher {name!r}")

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", type(self.fn).__name__)
        return f"CallableTeacher({name}, labels={self.classes!r})"


def as_teacher(teacher, labels=None):
    """A teacher object from ``teacher``.

    - An object with ``classes`` and ``label`` is returned as is (``labels``, if given,
      must equal its classes).
    - A plain callable becomes a :class:`~llkd.teachers.CallableTeacher` with ``labels``
      as its class names (required then).

    Raises ``TypeError`` for anything else, and when a callable comes without labels.
    """
    if teacher is None:
        raise TypeError("teacher is None: pass a teacher object or a callable")
    if hasattr(teacher, "label") and callable(teacher.label) and hasattr(teacher, "classes"):
        classes = list(teacher.classes)
        if labels is not None and [str(c) for c in labels] != [str(c) for c in classes]:
            # Compared as strings: labels=[0, 1] for classes ["0", "1"] is the same choice.
            raise ValueError(f"labels {list(labels)!r} do not match the teacher's classes {classes!r}")
        return teacher
    if callable(teacher):
        if labels is None:
            raise TypeError(
                "a callable teacher needs the class names: pass labels=[...] (the estimator's `labels` parameter)"
            )
        return CallableTeacher(teacher, labels)
    raise TypeError(f"teacher must have `classes` and `label(texts)`, or be a callable; got {type(teacher).__name__}")
