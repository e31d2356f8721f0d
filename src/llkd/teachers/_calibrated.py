"""CalibratedTeacher (deprecated): a teacher whose answers are calibrated over their pool."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ._base import TeacherOutput, check_texts
from ._calibration import TeacherCalibrator
from ._callable import as_teacher

__all__ = ["CalibratedTeacher"]


class CalibratedTeacher:
    """Deprecated: a teacher whose answers are calibrated over the pool they belong to.

    .. deprecated:: 0.2
        A teacher answers per input; calibration over the pool is a step of making the
        training targets. Give the plain teacher to :class:`~llkd.LLKDClassifier` with
        ``calibration=`` (or call :func:`~llkd.teachers.calibrate` on the answers of
        :func:`~llkd.teachers.label_in_batches`). This class keeps working, and warns.

    Parameters
    ----------
    teacher : teacher object or callable
    method, prior, temperature : see :class:`TeacherCalibrator`.
    labels : class names, for a callable teacher.

    ``fit(texts, y=None)`` asks the inner teacher for ``texts`` (through
    :func:`label_in_batches`, with ``cache``), fits the calibration on them (and the
    temperature on the gold labels in ``y``, -1 = unknown) and freezes it; ``label`` then
    applies it to any texts. Without ``fit``, each :func:`label_in_batches` call fits the
    correction on the texts it is given (its pool), and a bare ``label(texts)`` call on
    those texts. ``report_`` holds accuracy/ECE before and after when ``fit`` got gold
    labels. Raw answers are cached under the inner teacher's identity.
    """

    def __init__(self, teacher, method: str = "auto", prior=None, temperature="auto", *, labels=None):
        warnings.warn(
            "CalibratedTeacher is deprecated: pass the teacher itself with "
            "LLKDClassifier(calibration=...), or calibrate() the answers of label_in_batches()",
            FutureWarning,
            stacklevel=2,
        )
        self.teacher = as_teacher(teacher, labels=labels)
        self.classes = list(self.teacher.classes)
        self.calibrator = TeacherCalibrator(method, prior, temperature)
        self._frozen = False
        self.batch_size = getattr(self.teacher, "batch_size", None)

    @property
    def base_teacher(self):
        """The teacher asked, batch by batch (see :func:`~llkd.teachers._base.split_calibration`)."""
        return self.teacher

    @property
    def identity(self):
        inner = getattr(self.teacher, "identity", None)
        if inner is None:
            return None
        c = self.calibrator
        return {
            "teacher": inner,
            "calibration": [
                c.method,
                None if c.prior is None else list(np.asarray(c.prior, float)),
                repr(c.temperature),
            ],
        }

    @property
    def report_(self):
        return getattr(self.calibrator, "report_", None)

    def fit(self, texts, y=None, *, batch_size=None, cache=None, progress=False) -> CalibratedTeacher:
        from ._batching import label_in_batches

        texts = check_texts(texts)
        if y is not None:
            y = np.asarray(y)
            if y.shape != (len(texts),):
                raise ValueError(f"y must have one entry per text ({len(texts)}), got shape {y.shape}")
        raw = label_in_batches(self.teacher, texts, batch_size, cache, progress)
        if raw.proba is None:
            warnings.warn(
                "the teacher gives no distribution (proba is None): calibration leaves its answers unchanged",
                UserWarning,
                stacklevel=2,
            )
        self.calibrator.fit(raw, y)
        self._frozen = True
        return self

    def calibrate_output(self, raw: TeacherOutput) -> TeacherOutput:
        if not self._frozen:
            if raw.proba is None or len(raw) == 0:
                return raw
            return TeacherCalibrator(
                self.calibrator.method,
                self.calibrator.prior,
                None if self.calibrator.temperature == "auto" else self.calibrator.temperature,
            ).fit_transform(raw)
        return self.calibrator.transform(raw)

    def label(self, texts: Sequence[str]) -> TeacherOutput:
        return self.calibrate_output(self.teacher.label(texts))

    def __repr__(self) -> str:
        return f"CalibratedTeacher({self.teacher!r}, method={self.calibrator.method!r})"
