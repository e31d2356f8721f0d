"""CallableTeacher: a plain function as a teacher."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ._base import TeacherOutput, check_classes, check_texts, output_from_answer

__all__ = ["CallableTeacher"]


class CallableTeacher:
    """Wrap ``fn(texts) -> answers`` as a teacher.

    Parameters
    ----------
    fn : callable
        Called with a list of texts (one batch). It returns either an
        ``(n_texts, n_classes)`` probability array (label = argmax, confidence = max,
        ``proba`` kept), or a pair ``(labels, confidence)`` where ``labels`` are class
        indices or class names (then ``proba`` is None, and calibration leaves these
        answers unchanged), or a :class:`TeacherOutput`.
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
        texts = check_texts(texts, allow_empty=True)
        if not texts:
            return TeacherOutput([], [], None)
        name = getattr(self.fn, "__qualname__", type(self.fn).__name__)
        return output_from_answer(self.fn(texts), len(texts), self.classes, f"teacher {name!r}")

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", type(self.fn).__name__)
        return f"CallableTeacher({name}, labels={self.classes!r})"
