"""The teacher protocol, its answer type, and the checks every answer goes through.

A *teacher* is any object with

- ``classes``: the class names, in order (a list of ``str``);
- ``label(texts) -> TeacherOutput``: one answer per text.

It may also expose ``identity`` (a string or a JSON-able dict naming the model, the
prompt and every option that changes its answers); the durable cache keys answers by it.
Answers are paid for, so keys must outlive releases: an option added to a teacher later
belongs in ``identity`` only when it differs from the old behaviour, and
:func:`identity_key` itself never changes (a test pins it).
A plain callable is turned into a teacher by :func:`~llkd.teachers.as_teacher` given the class names.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "TeacherOutput",
    "Teacher",
    "TeacherError",
    "check_teacher_output",
    "check_texts",
    "identity_key",
    "input_key",
    "split_calibration",
    "teacher_error",
]

#: How far a row of a probability array may be from summing to one.
PROBA_SUM_TOL = 1e-3


class TeacherError(RuntimeError):
    """A teacher raised while labeling a batch.

    The teacher's own exception is the ``__cause__``; ``batch_index`` is the 0-based
    index of the failing batch, ``start``/``stop`` its slice of the texts that were sent
    to the teacher (those not already cached), ``n_done`` how many answers were safely
    written before it.
    """

    _wrapped_type = None  # the teacher's exception type, in a TeacherError[...] subclass

    def __init__(self, message: str, *, batch_index: int, start: int, stop: int, n_done: int):
        super().__init__(message)
        self.batch_index = batch_index
        self.start = start
        self.stop = stop
        self.n_done = n_done

    def __reduce__(self):
        # Pickles (a GridSearchCV worker's failure reaches the parent): the subclass made
        # at run time is rebuilt from the teacher's exception type, which pickles by name.
        info = {"batch_index": self.batch_index, "start": self.start, "stop": self.stop, "n_done": self.n_done}
        message = self.args[0] if self.args else ""
        return _rebuild_teacher_error, (self._wrapped_type, message, info)


@dataclass(frozen=True, eq=False)
class TeacherOutput:
    """The teacher's answers for N texts.

    Attributes
    ----------
    labels : int64 ndarray of shape (N,)
        Index of the predicted class in the teacher's ``classes``.
    confidence : float64 ndarray of shape (N,)
        Confidence in ``labels``, in [0, 1].
    proba : float64 ndarray of shape (N, C) or None
        The full class distribution where the teacher gives one (rows sum to 1).

    The constructor converts and checks its arguments (shapes, dtypes, ranges, NaN),
    raising ``ValueError``/``TypeError`` that name the field.
    """

    labels: np.ndarray
    confidence: np.ndarray
    proba: np.ndarray | None = None

    def __post_init__(self):
        labels = _as_int_labels(self.labels, "labels")
        conf = _as_float_1d(self.confidence, "confidence")
        if conf.shape[0] != labels.shape[0]:
            raise ValueError(f"confidence has {conf.shape[0]} entries but labels has {labels.shape[0]}")
        bad = ~((conf >= 0.0) & (conf <= 1.0))  # also catches NaN
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"confidence must be in [0, 1] and not NaN; entry {i} is {conf[i]!r} ({int(bad.sum())} bad entries)"
            )
        if (labels < 0).any():
            i = int(np.flatnonzero(labels < 0)[0])
            raise ValueError(f"labels must be non-negative class indices; entry {i} is {labels[i]}")
        proba = self.proba
        if proba is not None:
            proba = _check_proba(proba, "proba")
            if proba.shape[0] != labels.shape[0]:
                raise ValueError(f"proba has {proba.shape[0]} rows but labels has {labels.shape[0]}")
            if (labels >= proba.shape[1]).any():
                i = int(np.flatnonzero(labels >= proba.shape[1])[0])
                raise ValueError(f"labels must be < the {proba.shape[1]} columns of proba; entry {i} is {labels[i]}")
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "confidence", conf)
        object.__setattr__(self, "proba", proba)

    @classmethod
    def from_proba(cls, proba) -> TeacherOutput:
        """Answers from a distribution: label = argmax, confidence = max probability."""
        proba = _check_proba(proba, "proba")
        return cls(proba.argmax(axis=1), proba.max(axis=1), proba)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index) -> TeacherOutput:
        """The answers at ``index`` (anything NumPy fancy indexing accepts)."""
        index = np.asarray(index)
        return TeacherOutput(
            self.labels[index],
            self.confidence[index],
            None if self.proba is None else self.proba[index],
        )

    def __repr__(self) -> str:
        p = "None" if self.proba is None else f"array{self.proba.shape}"
        return f"TeacherOutput(n={len(self)}, proba={p})"


@runtime_checkable
class Teacher(Protocol):
    """What the estimator needs from a teacher."""

    classes: Sequence[str]

    def label(self, texts: Sequence[str]) -> TeacherOutput: ...


# --------------------------------------------------------------------------- checks


def _as_int_labels(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            return arr.astype(np.int64)
        raise TypeError(f"{name} must be integer class indices, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _as_float_1d(x, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be an array of floats: {e}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _check_proba(x, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a numeric array: {e}") from None
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_texts, n_classes), got shape {arr.shape}")
    if arr.shape[1] < 1:
        raise ValueError(f"{name} has no columns")
    if not np.isfinite(arr).all():
        i = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise ValueError(f"{name} contains NaN or infinite values (row {i}: {arr[i].tolist()})")
    if (arr < 0).any() or (arr > 1 + PROBA_SUM_TOL).any():
        i = int(np.flatnonzero(((arr < 0) | (arr > 1 + PROBA_SUM_TOL)).any(axis=1))[0])
        raise ValueError(f"{name} must hold probabilities in [0, 1]; row {i} is {arr[i].tolist()}")
    if arr.shape[0]:
        s = arr.sum(axis=1)
        bad = np.abs(s - 1.0) > PROBA_SUM_TOL
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name} rows must sum to 1; row {i} sums to {s[i]!r}")
        arr = arr / s[:, None]
    return np.clip(arr, 0.0, 1.0)


def check_texts(texts, name: str = "texts", allow_empty: bool = False) -> list[str]:
    """``texts`` as a list of ``str``; ``TypeError``/``ValueError`` naming the problem."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of str, not a single {type(texts).__name__}")
    try:
        out = list(texts)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of str, got {type(texts).__name__}") from None
    for i, t in enumerate(out):
        if not isinstance(t, str):
            if isinstance(t, np.str_):
                out[i] = str(t)
                continue
            raise TypeError(f"{name}[{i}] must be str, got {type(t).__name__}")
    if not out and not allow_empty:
        raise ValueError(f"{name} is empty: there is nothing to label")
    return out


def check_classes(classes, name: str = "labels") -> list[str]:
    if classes is None:
        raise TypeError(f"{name} is required: give the class names, in order")
    if isinstance(classes, str):
        raise TypeError(f"{name} must be a sequence of class names, not a single str")
    out = list(classes)
    if len(out) < 2:
        raise ValueError(f"{name} needs at least 2 classes, got {out!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must be distinct, got {out!r}")
    return out


def _numeric_names(classes) -> bool:
    """True where every class name is an integer but the names are not the indices 0..C-1:
    then a returned number could be either."""
    names = [str(c).strip() for c in classes]
    if not all(n.lstrip("-").isdigit() for n in names):
        return False
    return sorted(int(n) for n in names) != list(range(len(names)))


def _labels_to_index(labels, classes: Sequence[str], what: str) -> np.ndarray:
    """Class indices from ints or class names (mixed allowed); errors name the position."""
    arr = np.asarray(labels, dtype=object) if not isinstance(labels, np.ndarray) else labels
    if arr.ndim != 1:
        raise ValueError(f"{what} labels must be 1-D, got shape {arr.shape}")
    C = len(classes)
    pos = {c: i for i, c in enumerate(classes)}
    out = np.empty(arr.shape[0], dtype=np.int64)
    ambiguous = None
    for i, v in enumerate(arr.tolist()):
        if isinstance(v, (str, np.str_)) or (v in pos and not isinstance(v, (numbers.Number, bool))):
            if v not in pos:
                raise ValueError(
                    f"{what} returned the unknown label {v!r} at position {i}; known classes are {list(classes)!r}"
                )
            out[i] = pos[v]
            continue
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Integral, numbers.Real)):
            raise TypeError(
                f"{what} labels must be class indices or class names; position {i} is {v!r} ({type(v).__name__})"
            )
        if not isinstance(v, numbers.Integral) and (not math.isfinite(v) or v != int(v)):
            raise ValueError(f"{what} returned a non-integer label {v!r} at position {i}")
        iv = int(v)
        if ambiguous is None:
            ambiguous = _numeric_names(classes)
        if ambiguous:
            raise ValueError(
                f"{what} returned the number {v!r} at position {i}, but the class names are the numbers "
                f"{list(classes)!r}, so it could be a name or an index; return the names as str "
                f"(e.g. {str(classes[0])!r}), or a TeacherOutput of class indices"
            )
        if not 0 <= iv < C:
            raise ValueError(f"{what} returned label {iv} at position {i}, outside the {C} classes (0..{C - 1})")
        out[i] = iv
    return out


def check_teacher_output(out, n_texts: int, n_classes: int, what: str = "teacher") -> TeacherOutput:
    """Check one batch of answers: type, count, label range, confidence, proba shape."""
    if not isinstance(out, TeacherOutput):
        raise TypeError(f"{what}.label must return a TeacherOutput, got {type(out).__name__}")
    if len(out) != n_texts:
        raise ValueError(f"{what} returned {len(out)} answers for {n_texts} texts")
    if len(out) and (out.labels >= n_classes).any():
        i = int(np.flatnonzero(out.labels >= n_classes)[0])
        raise ValueError(f"{what} returned label {out.labels[i]} at position {i}, outside the {n_classes} classes")
    if out.proba is not None and out.proba.shape[1] != n_classes:
        raise ValueError(f"{what} returned proba with {out.proba.shape[1]} columns for {n_classes} classes")
    return out


def output_from_answer(answer, n_texts: int, classes: Sequence[str], what: str) -> TeacherOutput:
    """A TeacherOutput from what a user callable returned.

    Accepted: a TeacherOutput, an (N, C) probability array, or a pair
    ``(labels, confidence)`` where labels are class indices or class names.
    """
    C = len(classes)
    if isinstance(answer, TeacherOutput):
        return check_teacher_output(answer, n_texts, C, what)
    if isinstance(answer, tuple) and len(answer) == 2:
        labels, conf = answer
        labels = _labels_to_index(labels, classes, what)
        if labels.shape[0] != n_texts:
            raise ValueError(f"{what} returned {labels.shape[0]} labels for {n_texts} texts")
        conf = np.asarray(conf, dtype=np.float64)
        if conf.ndim != 1 or conf.shape[0] != n_texts:
            raise ValueError(f"{what} returned confidence of shape {conf.shape} for {n_texts} texts")
        return check_teacher_output(TeacherOutput(labels, conf, None), n_texts, C, what)
    if isinstance(answer, tuple):
        raise TypeError(
            f"{what} returned a tuple of {len(answer)} items; expected (labels, confidence) "
            "or an (n_texts, n_classes) probability array"
        )
    try:
        arr = np.asarray(answer, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{what} must return an (n_texts, n_classes) probability array or a pair "
            f"(labels, confidence), got {type(answer).__name__}"
        ) from None
    if arr.ndim != 2:
        raise ValueError(
            f"{what} returned an array of shape {arr.shape}; expected (n_texts={n_texts}, "
            f"n_classes={C}) probabilities or a pair (labels, confidence)"
        )
    if arr.shape[0] != n_texts:
        raise ValueError(f"{what} returned {arr.shape[0]} answers for {n_texts} texts")
    if arr.shape[1] != C:
        raise ValueError(f"{what} returned {arr.shape[1]} probability columns for {C} classes")
    try:
        return TeacherOutput.from_proba(arr)
    except ValueError as e:
        raise ValueError(f"{what} returned invalid probabilities: {e}") from None


# --------------------------------------------------------------------------- identity


def _jsonable(x: Any):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if isinstance(x, np.generic):
        return x.item()
    return repr(x)


def identity_key(identity, classes: Sequence[str]) -> str | None:
    """A stable hex digest of a teacher identity and its classes (None: not cacheable)."""
    if identity is None:
        return None
    blob = json.dumps({"identity": _jsonable(identity), "classes": list(classes)}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- inputs and errors


def input_key(x) -> str:
    """The key of one input in answer memories and caches: a text itself, or a digest of a row.

    A feature row's key is ``"row:" + sha1(row bytes + dtype name)``, so equal rows of the
    same dtype share their answers (and their cache entries) whatever array they came from.
    """
    if isinstance(x, str):
        return x
    row = np.ascontiguousarray(x)
    return "row:" + hashlib.sha1(row.tobytes() + str(row.dtype).encode()).hexdigest()


_WRAPPED: dict = {}


def teacher_error(exc: BaseException, message: str, **info) -> TeacherError:
    """The one place a TeacherError is built: also an instance of the teacher's exception type.

    ``except ValueError`` still catches a teacher's ValueError, ``except TeacherError``
    catches every teacher failure, and ``__cause__`` (set by ``raise ... from exc``) is
    the original. Types whose C layout cannot be combined with RuntimeError (OSError and
    subclasses) give a plain TeacherError. ``info``: ``batch_index``, ``start``, ``stop``,
    ``n_done``.
    """
    return _rebuild_teacher_error(type(exc), message, info)


def _rebuild_teacher_error(cls, message: str, info: dict) -> TeacherError:
    if cls is None:
        return TeacherError(message, **info)
    if cls not in _WRAPPED:
        try:
            _WRAPPED[cls] = type(
                f"TeacherError[{cls.__name__}]", (TeacherError, cls), {"__module__": __name__, "_wrapped_type": cls}
            )
        except TypeError:
            _WRAPPED[cls] = TeacherError
    try:
        return _WRAPPED[cls](message, **info)
    except Exception:
        return TeacherError(message, **info)


def split_calibration(teacher):
    """``(base teacher, calibrate)`` of a teacher whose answers depend on their whole pool.

    Such a teacher (the deprecated :class:`~llkd.teachers.CalibratedTeacher`) has
    ``base_teacher`` and ``calibrate_output(raw_answers_for_the_pool)``: the base is
    asked (and cached) batch by batch, and ``calibrate`` is applied once to the pool's
    raw answers. Every other teacher answers per input: ``(teacher, None)``.
    """
    base = getattr(teacher, "base_teacher", None)
    calibrate = getattr(teacher, "calibrate_output", None)
    if base is not None and callable(calibrate):
        return base, calibrate
    return teacher, None
