"""Training targets from X, y and a teacher: gold labels first, the teacher for the rest, then calibration.

Gold labels in ``y`` win over the teacher (confidence 1). The teacher is asked only for
the distinct inputs without a gold label, through
:func:`~llkd.teachers.label_in_batches`; its answers are remembered per teacher object,
class list and identity (``memory_for``), so clones (``GridSearchCV`` folds) and a refit after a failure never pay
for them twice, and written to the durable cache when one is given. Calibration is the
last step, over this fit's pool of distinct teacher-labelled inputs.
"""

from __future__ import annotations

import weakref
from collections import Counter
from dataclasses import dataclass

import numpy as np
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

from .teachers._base import input_key

_MEMORY: weakref.WeakKeyDictionary[object, dict] = weakref.WeakKeyDictionary()


@dataclass
class Targets:
    """Per-row training targets."""

    labels: np.ndarray  # int64 (n,), -1 where the row has no label at all
    confidence: np.ndarray  # float64 (n,)
    proba: np.ndarray | None = None  # float64 (n, C) or None
    is_gold: np.ndarray | None = None  # bool (n,)
    n_teacher_queries: int = 0  # distinct inputs the teacher answered in this fit


def memory_for(teacher, classes) -> dict | None:
    """The answers remembered for this teacher object, class list and identity (None: the
    teacher cannot be weakly referenced).

    The class names are part of the key, as in the durable cache's: a callable teacher
    refitted with other ``labels`` (``set_params(labels=...)``) answers a new question. So
    is the identity: a teacher changed in place (another model, another prompt) does too.
    """
    by_key = remembered(teacher)
    return None if by_key is None else by_key.setdefault(memory_key(teacher, classes), {})


def memory_key(teacher, classes) -> tuple:
    """``(class names, identity key or None)``. The ``"method"`` an ``"auto"`` OpenAITeacher
    settles on with its first answer is left out: an object settles once, before it answers."""
    from .teachers._base import identity_key

    names = tuple(str(c) for c in classes)
    ident = getattr(teacher, "identity", None)
    if isinstance(ident, dict):
        ident = {k: v for k, v in ident.items() if k != "method"}
    try:
        return (names, identity_key(ident, list(names)))
    except (TypeError, ValueError):  # an identity that cannot be keyed: the object alone
        return (names, None)


def remembered(teacher) -> dict | None:
    """Every answer remembered for this teacher object, ``{memory_key: {input key: answer}}``."""
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
            raise ValueError(f"y contains the label {key!r}, which is not one of the classes {classes.tolist()!r}")
        idx[j] = lookup[key]
    return idx


def gold_labels(y, n: int):
    """``(y as a 1-D array, unlabeled mask)``, checked against ``n`` rows."""
    as_objects = False
    try:
        has_none = any(v is None for v in y)
        # numpy would turn a -1 beside class names into the string '-1'
        mixed = not hasattr(y, "dtype") and len({isinstance(v, str) for v in y}) > 1
        as_objects = has_none or mixed
    except TypeError:
        pass
    y = column_or_1d(np.asarray(y, dtype=object) if as_objects else y, warn=True)
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
        raise ValueError(f"the classifier needs at least 2 classes; got {len(classes)} class: {classes.tolist()!r}")
    if len(set(classes.tolist())) != len(classes):
        raise ValueError(f"labels must be distinct, got {classes.tolist()!r}")
    return classes


#: Gold labels from which their class shares guide the teacher's prior correction
#: (``PriorCorrection.fit(class_shares=)``); fewer are too noisy a sample of the pool.
MIN_GOLD_FOR_SHARES = 20


class PoolLabeler:
    """The training targets of one fit, filled in by asking the teacher for parts of the pool.

    Gold rows are set at construction. :meth:`label` asks the teacher for the given
    distinct inputs (batch by batch, remembered per teacher object and cached) and writes
    the answers into :attr:`targets` for every row holding one of them. Calibration is
    fitted on every answer so far at each call (the whole pool at once, or round by round
    under a query budget), and the rows labelled earlier are corrected again with it.

    Parameters
    ----------
    X : list of str or ndarray of shape (n, n_features)
    y : array-like or None
        Gold labels, -1 / None for unlabeled rows.
    teacher, labels, calibration, batch_size, cache, progress
        As the estimator's ``teacher``, ``labels``, ``calibration``,
        ``teacher_batch_size``, ``teacher_cache`` and ``verbose``.

    Attributes
    ----------
    classes : ndarray
    targets : Targets
        Rows without a gold label or an answer yet have label -1.
    pool : dict
        Distinct input key -> the rows (without gold label) that hold it, in first-seen order.
    n_queries : int
        Inputs the teacher answered so far (answers remembered or cached are not counted).
    """

    def __init__(self, X, y, *, teacher, labels=None, calibration="auto", batch_size=None, cache=None, progress=False):
        from .teachers._base import split_calibration
        from .teachers._callable import as_teacher

        n = len(X)
        if n == 0:
            raise ValueError("X is empty: fit needs at least one sample")
        gold_y, unl = (None, np.ones(n, dtype=bool)) if y is None else gold_labels(y, n)
        self.X = X
        self.n_queries = 0
        self.calibration_shares = None
        self.calibration_n_gold = 0
        self.pool: dict[str, list[int]] = {}
        if teacher is None:
            if gold_y is None:
                raise ValueError(
                    "LLKDClassifier requires y to be passed, but the target y is None "
                    "(pass a teacher to train on unlabeled data)"
                )
            y_lab = gold_y[~unl]
            self.classes = classes_from_y(y_lab, labels)
            target_labels = np.full(n, -1, dtype=np.int64)
            target_labels[~unl] = encode_gold(y_lab, self.classes)
            self.targets = Targets(target_labels, (~unl).astype(np.float64), None, ~unl, 0)
            self.teacher = None
            return
        self.teacher = as_teacher(teacher, labels=labels)
        self.classes = np.asarray(list(self.teacher.classes))
        self.memory = memory_for(teacher, self.classes)
        if len(self.classes) < 2:
            raise ValueError(f"the teacher must have at least 2 classes, got {self.classes.tolist()!r}")
        # A deprecated CalibratedTeacher: its base teacher's raw answers are the ones
        # remembered and cached; its calibration replaces `calibration`.
        self._base, self._pool_calibration = split_calibration(self.teacher)
        self._correction = None
        self._raw: dict = {}  # key -> the teacher's raw distribution, for refitting the correction
        self._raw_answers: dict = {}  # key -> (label, confidence, proba): for a CalibratedTeacher
        self.calibration = calibration
        self.batch_size = None if batch_size is None else int(batch_size)  # None: the teacher's own
        self.cache, self.progress = cache, bool(progress)
        target_labels = np.full(n, -1, dtype=np.int64)
        confidence = np.zeros(n)
        is_gold = ~unl
        if gold_y is not None and is_gold.any():
            target_labels[is_gold] = encode_gold(gold_y[is_gold], self.classes)
            confidence[is_gold] = 1.0
            # An input with a gold label in one row is not asked about in another: its
            # unlabeled repeats take that label (the most frequent of its gold labels).
            gold_of: dict = {}
            for i in np.flatnonzero(is_gold):
                gold_of.setdefault(input_key(X[i]), []).append(int(target_labels[i]))
            for i in np.flatnonzero(unl):
                given = gold_of.get(input_key(X[i]))
                if given is not None:
                    target_labels[i] = Counter(given).most_common(1)[0][0]
                    confidence[i], is_gold[i] = 1.0, True
        for i in np.flatnonzero(~is_gold):
            self.pool.setdefault(input_key(X[i]), []).append(int(i))
        self.targets = Targets(target_labels, confidence, None, is_gold, 0)
        # The gold rows' class shares tell the prior correction what the pool holds, at no query.
        n_gold = self._n_gold = int((~unl).sum())
        self._gold_shares = (
            np.bincount(target_labels[~unl], minlength=len(self.classes)) / n_gold
            if n_gold >= MIN_GOLD_FOR_SHARES
            else None
        )

    def inputs(self, keys):
        rows = [self.pool[k][0] for k in keys]
        return [self.X[i] for i in rows] if isinstance(self.X, list) else self.X[np.asarray(rows, dtype=np.int64)]

    def label(self, keys) -> np.ndarray:
        """Ask for the distinct inputs ``keys`` (keys of :attr:`pool`); returns the rows now labelled."""
        from .teachers import PriorCorrection
        from .teachers._batching import label_in_batches

        keys = list(keys)
        if not keys:
            return np.zeros(0, dtype=np.int64)
        asked_keys = list(keys)
        asked = []
        answers = label_in_batches(
            self._base,
            self.inputs(keys),
            batch_size=self.batch_size,
            cache=self.cache,
            progress=self.progress,
            memory=self.memory,
            on_batch=lambda k, out: asked.append(len(k)),
        )
        self.n_queries += sum(asked)
        self.targets.n_teacher_queries = self.n_queries
        labels, conf, proba = answers.labels, answers.confidence, answers.proba
        if self._pool_calibration is not None:
            from .teachers._batching import _output_of

            # calibrated over every answer so far, as the prior correction below
            for j, k in enumerate(keys):
                self._raw_answers[k] = (labels[j], conf[j], None if proba is None else proba[j])
            fresh = set(keys)
            keys = keys + [k for k in self._raw_answers if k not in fresh]
            out = self._pool_calibration(_output_of([self._raw_answers[k] for k in keys]))
            labels, conf, proba = out.labels, out.confidence, out.proba
        elif proba is not None:
            from .teachers import predicted_shares

            # The correction is fitted on every answer so far: under a teacher budget the
            # first round alone is too small a sample (docs/design.md section 7.5), and the
            # rows labelled earlier are corrected again with the new fit.
            self._raw.update(zip(keys, np.asarray(proba, dtype=np.float64)))
            fresh = set(keys)
            keys = keys + [k for k in self._raw if k not in fresh]
            raw = np.stack([self._raw[k] for k in keys])
            self._correction = PriorCorrection(self.calibration).fit(raw, class_shares=self._gold_shares)
            decision = self._correction.decision_ or {}
            # gold labels back the correction only where they chose it
            self.calibration_n_gold = self._n_gold if decision.get("by") == "class_shares" else 0
            proba = self._correction.transform(raw)
            labels, conf = proba.argmax(axis=1), proba.max(axis=1)
            self.calibration_shares = predicted_shares(raw, proba, [str(c) for c in self.classes])
            if self._correction.decision_ is not None:
                self.calibration_shares["decision"] = dict(self._correction.decision_)
        t = self.targets
        if proba is None:
            self._hard_only = True  # distributions only when every answer has one
            t.proba = None
        elif t.proba is None and not getattr(self, "_hard_only", False):
            t.proba = np.zeros((len(t.labels), len(self.classes)))
            t.proba[t.is_gold, t.labels[t.is_gold]] = 1.0
        for j, k in enumerate(keys):
            rows = self.pool[k]
            t.labels[rows] = labels[j]
            t.confidence[rows] = min(1.0, max(0.0, float(conf[j])))
            if t.proba is not None:
                t.proba[rows] = proba[j]
        return np.asarray(sorted(i for k in asked_keys for i in self.pool[k]), dtype=np.int64)
