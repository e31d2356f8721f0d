"""TeacherLeftBehind: what an unpickled estimator holds when its teacher could not travel with it."""

from __future__ import annotations

__all__ = ["TeacherLeftBehind"]


class TeacherLeftBehind:
    """Stands in for a teacher that stayed in the process that pickled the estimator.

    A teacher that holds a local model (``pickle_with_estimator = False``, as
    :class:`~llkd.teachers.TransformersTeacher`) is not copied into joblib workers.
    Answers it already gave travel with the estimator and are answered from memory;
    asking this stand-in about anything else raises an error that says what to do,
    instead of silently training on the gold rows alone.
    """

    def __init__(self, name: str, classes, identity=None):
        self.name = name
        self.classes = list(classes)
        self.identity = identity

    def label(self, inputs):
        raise RuntimeError(
            f"the teacher {self.name} stayed in the process that pickled this estimator (it holds a local "
            f"model), and it was asked about {len(inputs)} input(s) it had not answered there. Label the pool "
            "in the main process first (fit once, or llkd.teachers.label_in_batches with teacher_cache=), or "
            "use a teacher that pickles (a function, PrecomputedTeacher, OpenAITeacher)"
        )

    def __repr__(self) -> str:
        return f"TeacherLeftBehind({self.name!r}, classes={self.classes!r})"
