"""Calibration of a teacher's class distribution.

Small LLMs are biased: the packaged Gemma 3 270M says "positive" for almost every movie
review while its scores still rank reviews well. Two corrections, applied in this order:

1. **Unsupervised prior correction** (no labels needed), over the pool of texts being
   labeled. Each method adds one offset per class to the teacher's log-probabilities,
   ``log p'(k|x) = log p(k|x) + b_k`` (then renormalises). The offsets ``b`` are fitted
   on the pool and can be reapplied to other texts (``PriorCorrection.transform``).
   Probabilities are floored at ``1e-12`` before taking logs.

   - ``"center"``: ``b_k = -mean_x log p(k|x)``: centre each class's log-probability
     over the pool. With two classes this centres the log-odds at zero. It assumes the
     classes are about equally frequent in the pool (more precisely: that an unbiased
     teacher's mean log-probability would be the same for every class).
   - ``"mean"``: ``b_k = -log mean_x p(k|x)``: divide by the pool's mean distribution
     ("batch calibration", Zhou et al. 2023). Same assumption.
   - ``"match"``: choose ``b`` so that the corrected distributions average to ``prior``
     (uniform unless given) over the pool, by iterative proportional fitting
     (``b_k += log(prior_k / mean_x p'(k|x))`` until it changes less than ``tol``).
     Use it when the class frequencies are known.
   - ``"em"``: ``"center"``, then re-estimate the pool's class prior by the EM algorithm
     of Saerens, Latinne & Decaestecker (2002): treating the centred distributions
     ``q(k|x)`` as posteriors under a uniform prior, iterate
     ``p(k|x) ∝ q(k|x) pi_k`` and ``pi_k = mean_x p(k|x)`` to convergence. Unlike the
     other methods this lets an imbalanced pool keep its imbalance, at the price of
     trusting the shape of the teacher's scores.
   - ``"adaptive"``: correct only when the raw teacher *starves* a class, i.e. predicts
     it (argmax) less than 0.4 times as often as its own mean probability for the class
     says it occurs (``mean_x p(k|x)``; classes with a mass of at least 5 texts). A
     calibrated teacher predicts each class about as often as its probabilities say, on
     any imbalance, and is left unchanged (centring would push it to a uniform prior). A
     prompt-biased teacher (the zero-shot Gemma, which says "positive" for every review)
     or an under-confident one whose argmax follows its training prior (TF-IDF teachers
     on few labels) starves classes. When it corrects: ``"center"`` (two classes) or
     ``"mean"`` (more), then ONE step of the Saerens EM re-estimate of the prior (from
     uniform), which lets part of a real imbalance back in without the collapse that
     EM run to convergence shows on under-confident teachers. With gold labels
     (``fit(proba, y)``, -1 = unknown), it picks among none, center, mean and the above
     the one with the lowest gold negative log-likelihood after a fitted temperature.
     Without them but with the pool's class shares known (``fit(proba,
     class_shares=...)``: the estimator passes the shares of its gold labels, 20 or
     more, which the teacher is not asked about), a correction the starved test calls
     for is kept only if its predicted (argmax) shares are closer to those than the raw
     teacher's. The shares can only veto: gold rows picked per class rather than at
     random would otherwise pull a good teacher on an imbalanced pool towards their
     own balance. ``decision_`` records the choice and the starved ratio. Limits,
     without gold labels: a moderate bias that starves no class (a teacher that says
     "positive" for 87 % of a balanced pool while its mean probability says 82 %) is not
     detected and not corrected; and a calibrated teacher that cannot separate a rare
     class (it gives the class its true 10 % of probability but almost never the argmax)
     looks starved, exactly as a biased one does, and is corrected: from unlabeled
     answers alone the two cannot be told apart. Give 20 or more gold labels (a random
     sample of the pool), or choose the method, when either is suspected; the estimator
     warns when a correction without gold labels moves a class share by more than 15
     points.
   - ``"none"``: no change.

   ``"auto"`` is ``DEFAULT_PRIOR_METHOD``. Measured in ``benchmarks/RESULTS.md`` (section
   bench_calibration: the Gemma teacher on balanced, subsampled 75/25 and 90/10 and
   zero-shot movie reviews; TF-IDF teachers on R8, 20 Newsgroups and R52). History:
   ``"center"`` was the default; it cost a good teacher much accuracy on imbalanced
   pools, and ``"em"`` run to convergence collapsed the multi-class teachers (the
   numbers are in ``benchmarks/RESULTS.md``, sections bench_calibration and bench_distill).

2. **Temperature scaling** (Guo et al. 2017), when a few gold labels exist: one
   temperature ``T`` fitted by minimising the negative log-likelihood of the gold labels
   under ``softmax(log p' / T)``; it changes confidences, never the argmax.

Answers without a distribution (``proba`` None, e.g. a callable returning
``(labels, confidence)``) pass through every calibration unchanged.

To say what a correction did: :func:`predicted_shares` (raw vs corrected class shares,
a dict) and :func:`share_shift_warning` (the message to give when a class share moved by
more than 15 points without gold labels to back it).
"""

from __future__ import annotations

import numpy as np

from .._numeric import softmax
from ._base import TeacherOutput, _check_proba

__all__ = [
    "PriorCorrection",
    "TemperatureScaling",
    "TeacherCalibrator",
    "calibrate",
    "calibrate_pool",
    "calibration_report",
    "expected_calibration_error",
    "PRIOR_METHODS",
    "DEFAULT_PRIOR_METHOD",
    "predicted_shares",
    "share_shift_warning",
    "SHARE_SHIFT_WARN",
]

PRIOR_METHODS = ("none", "center", "mean", "match", "em", "adaptive")
DEFAULT_PRIOR_METHOD = "adaptive"
_FLOOR = 1e-12
#: "adaptive": a class is starved when the raw teacher predicts it (argmax) less than this
#: fraction as often as its own mean probability for the class says the class occurs.
_STARVED_RATIO = 0.4
#: ... counting only classes whose mean probability times the pool size is at least this.
_STARVED_MIN_COUNT = 5
#: share_shift_warning: warn when a class share moves by more than this (a fraction).
SHARE_SHIFT_WARN = 0.15


def _log(proba: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(proba, _FLOOR))


def _resolve_method(method) -> str:
    if method is None or method is False:
        return "none"
    if not isinstance(method, str):
        raise TypeError(f"method must be a string, got {type(method).__name__}")
    m = method.lower()
    if m == "auto":
        return DEFAULT_PRIOR_METHOD
    if m in ("centre", "centering", "centring"):
        m = "center"
    if m not in PRIOR_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {('auto',) + PRIOR_METHODS}")
    return m


def _check_prior(prior, C: int) -> np.ndarray:
    if prior is None:
        return np.full(C, 1.0 / C)
    p = np.asarray(prior, dtype=np.float64)
    if p.shape != (C,):
        raise ValueError(f"prior must have one entry per class ({C}), got shape {p.shape}")
    if not np.isfinite(p).all() or (p <= 0).any():
        raise ValueError(f"prior must be positive and finite, got {p.tolist()}")
    return p / p.sum()


# --------------------------------------------------------------------------- metrics


def expected_calibration_error(confidence, correct, n_bins: int = 15) -> float:
    """ECE with ``n_bins`` equal-width confidence bins (Guo et al. 2017).

    ``sum_b |B_b|/N * |accuracy(B_b) - mean confidence(B_b)|``; bins are right-closed,
    the first includes 0.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    corr = np.asarray(correct, dtype=np.float64)
    if conf.shape != corr.shape or conf.ndim != 1:
        raise ValueError(f"confidence {conf.shape} and correct {corr.shape} must be 1-D of equal length")
    if conf.size == 0:
        raise ValueError("expected_calibration_error needs at least one sample")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(corr[m].mean() - conf[m].mean())
    return float(ece)


def calibration_report(output, y, n_bins: int = 15) -> dict:
    """Accuracy, ECE, NLL and predicted class shares of ``output`` against gold ``y``.

    ``output`` is a TeacherOutput or an (N, C) probability array; ``y`` holds class
    indices, with -1 for texts without a gold label (ignored).
    """
    if isinstance(output, TeacherOutput):
        labels, conf, proba = output.labels, output.confidence, output.proba
    else:
        proba = _check_proba(output, "proba")
        labels, conf = proba.argmax(axis=1), proba.max(axis=1)
    y = np.asarray(y)
    if y.shape != labels.shape:
        raise ValueError(f"y has shape {y.shape} but there are {labels.shape[0]} answers")
    m = y >= 0
    if not m.any():
        raise ValueError("y has no gold labels (all -1)")
    yy = y[m].astype(np.int64)
    rep = {
        "n": int(m.sum()),
        "accuracy": float((labels[m] == yy).mean()),
        "ece": expected_calibration_error(conf[m], labels[m] == yy, n_bins),
        "mean_confidence": float(conf[m].mean()),
    }
    if proba is not None:
        rep["nll"] = float(-_log(proba[m][np.arange(m.sum()), yy]).mean())
        shares = np.bincount(labels[m], minlength=proba.shape[1]) / m.sum()
        rep["predicted_share"] = shares.astype(float).tolist()
    return rep


def _labels_of(x, name: str) -> np.ndarray:
    if isinstance(x, TeacherOutput):
        return np.asarray(x.labels)
    arr = np.asarray(x)
    if arr.ndim == 2:
        return _check_proba(arr, name).argmax(axis=1)
    if arr.ndim == 1 and arr.dtype.kind in "iu":
        return arr
    raise TypeError(
        f"{name} must be a TeacherOutput, an (N, C) probability array or 1-D class indices, "
        f"got an array of shape {arr.shape} and dtype {arr.dtype}"
    )


def predicted_shares(raw, corrected, classes=None) -> dict:
    """Predicted class shares (argmax) before and after a correction.

    Parameters
    ----------
    raw, corrected : TeacherOutput, array of shape (N, C) or 1-D class indices
        The same pool's answers before and after calibration.
    classes : sequence of str, optional
        Class names, in index order; default: the indices as strings. With 1-D labels
        it also fixes the number of classes (else the largest index + 1 of either).

    Returns
    -------
    dict
        ``{"raw": {name: share}, "corrected": {name: share}, "max_shift": float,
        "max_shift_class": name}``; shares are fractions of the pool.
    """
    a, b = _labels_of(raw, "raw"), _labels_of(corrected, "corrected")
    if a.shape != b.shape:
        raise ValueError(f"raw has {a.shape[0]} answers but corrected has {b.shape[0]}")
    if a.size == 0:
        raise ValueError("predicted_shares needs at least one answer")
    widths = [x.proba.shape[1] for x in (raw, corrected) if isinstance(x, TeacherOutput) and x.proba is not None]
    widths += [
        np.asarray(x).shape[1] for x in (raw, corrected) if not isinstance(x, TeacherOutput) and np.asarray(x).ndim == 2
    ]
    C = len(classes) if classes is not None else max(widths + [int(max(a.max(), b.max())) + 1])
    if classes is not None and max(a.max(), b.max()) >= C:
        raise ValueError(f"labels go up to {int(max(a.max(), b.max()))} but classes has {C} names")
    names = [str(c) for c in classes] if classes is not None else [str(k) for k in range(C)]
    ra, co = _shares(a, C), _shares(b, C)
    k = int(np.abs(co - ra).argmax())
    return {
        "raw": dict(zip(names, ra.tolist())),
        "corrected": dict(zip(names, co.tolist())),
        "max_shift": float(abs(co[k] - ra[k])),
        "max_shift_class": names[k],
    }


def share_shift_warning(shares: dict, *, n_gold: int = 0, threshold: float = SHARE_SHIFT_WARN) -> str | None:
    """The warning to give when a correction moved a class share a lot without gold labels.

    ``shares`` is a :func:`predicted_shares` dict. Returns a message when some class's
    predicted share moved by more than ``threshold`` (a fraction, default 0.15) and
    ``n_gold`` is 0, else None. The caller decides how to emit it (``warnings.warn``,
    a CLI line).
    """
    if not isinstance(shares, dict) or not {"raw", "corrected"} <= set(shares):
        raise TypeError("shares must be the dict returned by predicted_shares(raw, corrected)")
    if not (isinstance(threshold, (int, float)) and 0 <= threshold <= 1):
        raise ValueError(f"threshold must be a fraction in [0, 1], got {threshold!r}")
    if isinstance(n_gold, bool) or not isinstance(n_gold, (int, np.integer)) or n_gold < 0:
        raise ValueError(f"n_gold must be a non-negative int, got {n_gold!r}")
    if n_gold > 0:
        return None
    moved = [
        (k, shares["raw"][k], shares["corrected"][k])
        for k in shares["raw"]
        if abs(shares["corrected"][k] - shares["raw"][k]) > threshold
    ]
    if not moved:
        return None
    what = ", ".join(f"{k} {r:.0%} -> {c:.0%}" for k, r, c in moved)
    return (
        f"the prior correction moved predicted class shares by more than {threshold:.0%} without gold "
        f"labels to back it ({what}); if the pool's true shares are known to be closer to the raw "
        "ones, use calibration='none', or give 20 or more gold labels (a random sample of the pool): "
        "their class shares then decide whether it is kept"
    )


# --------------------------------------------------------------------------- prior correction


def _check_gold(y, proba):
    """Gold class indices as int64 (-1 = unknown), or None when there are none."""
    y = np.asarray(y)
    if y.shape != (proba.shape[0],):
        raise ValueError(f"y must have one entry per row of proba ({proba.shape[0]}), got shape {y.shape}")
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise TypeError(f"y must hold integer class indices (-1 = unknown), got dtype {y.dtype}")
    if (y >= proba.shape[1]).any() or (y < -1).any():
        raise ValueError(f"y has entries outside -1 and the {proba.shape[1]} class indices")
    return y.astype(np.int64) if (y >= 0).any() else None


def _shares(labels, C: int) -> np.ndarray:
    return np.bincount(labels, minlength=C).astype(float) / max(len(labels), 1)


def _starved_ratio(proba: np.ndarray) -> float:
    """min over classes of the raw predicted (argmax) share / the raw mean probability.

    A calibrated teacher predicts each class about as often as its probabilities say the
    class occurs, whatever the pool's imbalance; a biased or prior-dominated one does not.
    """
    mass = proba.mean(axis=0)
    share = _shares(proba.argmax(axis=1), proba.shape[1])
    m = mass * proba.shape[0] >= _STARVED_MIN_COUNT
    if not m.any():
        return 1.0
    return float((share[m] / mass[m]).min())


def _one_em_step(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``b`` plus the log of one Saerens EM update of the prior (from uniform)."""
    pi = softmax(L + b).mean(axis=0)
    return b + np.log(np.maximum(pi, _FLOOR))


def _gold_nll(L: np.ndarray, b: np.ndarray, y: np.ndarray) -> float:
    m = y >= 0
    p = softmax(L[m] + b)
    t = TemperatureScaling().fit(p, y[m]).temperature_
    q = softmax(_log(p) / t)
    return float(-_log(q[np.arange(m.sum()), y[m]]).mean())


def _adaptive_bias(proba: np.ndarray, gold, shares=None) -> tuple[np.ndarray, dict]:
    """The offsets of ``method="adaptive"`` and what decided them (module docstring)."""
    L = _log(proba)
    b_mean = -np.log(np.maximum(proba.mean(axis=0), _FLOOR))
    b_center = -L.mean(axis=0)
    ratio = _starved_ratio(proba)
    # binary answers are often saturated, which makes the arithmetic mean a partial fix
    base = "center" if proba.shape[1] == 2 else "mean"
    name = f"{base}+em1"
    candidates = {"none": np.zeros(proba.shape[1]), name: _one_em_step(L, b_center if base == "center" else b_mean)}
    if gold is None:
        choice = name if ratio < _STARVED_RATIO else "none"
        if shares is None or choice == "none":
            return candidates[choice], {"choice": choice, "starved_ratio": ratio, "by": "starved_ratio"}
        # the shares may only veto the correction: gold rows picked per class (not at random)
        # would otherwise pull a good teacher on an imbalanced pool towards their own balance
        C = proba.shape[1]
        tv = {k: float(0.5 * np.abs(_shares((L + v).argmax(axis=1), C) - shares).sum()) for k, v in candidates.items()}
        choice = min(tv, key=tv.get)
        return candidates[choice], {"choice": choice, "starved_ratio": ratio, "by": "class_shares", "shares_tv": tv}
    candidates["center"] = b_center
    candidates["mean"] = b_mean
    nll = {k: _gold_nll(L, v, gold) for k, v in candidates.items()}
    choice = min(nll, key=nll.get)
    return candidates[choice], {
        "choice": choice,
        "starved_ratio": ratio,
        "by": "gold_nll",
        "gold_nll": nll,
        "n_gold": int((gold >= 0).sum()),
    }


class PriorCorrection:
    """Per-class log-offsets fitted on a pool (see the module docstring).

    Attributes after ``fit``: ``bias_`` (C,), ``prior_`` (C,: the pool prior the
    corrected distributions average to), ``n_iter_``, and ``decision_`` (for
    ``"adaptive"``: which candidate it chose and why; None for the other methods).
    """

    def __init__(self, method: str = "auto", prior=None, max_iter: int = 1000, tol: float = 1e-9):
        self.method = method
        self.prior = prior
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, proba, y=None, *, class_shares=None) -> PriorCorrection:
        """Fit the offsets on a pool ``proba`` (N, C).

        ``y`` (optional, class indices, -1 = unknown) is used by ``"adaptive"`` only:
        with gold labels it chooses among its candidate corrections by their gold NLL.

        ``class_shares`` (optional, (C,), used by ``"adaptive"`` only, when ``y`` has no
        gold label): the pool's class shares as known from elsewhere, e.g. gold labels of
        other rows of the same pool, which the teacher was not asked about. A correction
        the starved test calls for is then kept only when its predicted (argmax) shares
        are closer to them in total variation than the raw teacher's.
        """
        proba = _check_proba(proba, "proba")
        if proba.shape[0] == 0:
            raise ValueError("proba is empty: the prior correction needs a pool of answers")
        C = proba.shape[1]
        method = _resolve_method(self.method)
        gold = _check_gold(y, proba) if y is not None and method == "adaptive" else None
        shares = None
        if class_shares is not None:
            shares = np.asarray(class_shares, dtype=np.float64)
            if shares.shape != (C,) or not np.isfinite(shares).all() or (shares < 0).any() or shares.sum() <= 0:
                raise ValueError(f"class_shares must be {C} non-negative finite shares, got {class_shares!r}")
            shares = shares / shares.sum()
        L = _log(proba)
        b = np.zeros(C)
        n_iter = 0
        self.decision_ = None
        if method == "adaptive":
            b, self.decision_ = _adaptive_bias(proba, gold, shares)
            n_iter = 1
        elif method == "center":
            b = -L.mean(axis=0)
        elif method == "mean":
            b = -np.log(np.maximum(proba.mean(axis=0), _FLOOR))
        elif method == "match":
            target = _check_prior(self.prior, C)
            for n_iter in range(1, self.max_iter + 1):  # noqa: B007 (read after the loop)
                mean = softmax(L + b).mean(axis=0)
                step = np.log(target) - np.log(np.maximum(mean, _FLOOR))
                b = b + step
                if np.abs(step).max() < self.tol:
                    break
        elif method == "em":
            b = -L.mean(axis=0)
            q = softmax(L + b)
            pi = np.full(C, 1.0 / C)
            for n_iter in range(1, self.max_iter + 1):  # noqa: B007 (read after the loop)
                p = q * pi
                p /= p.sum(axis=1, keepdims=True)
                new = p.mean(axis=0)
                delta = np.abs(new - pi).max()
                pi = np.maximum(new, _FLOOR)
                if delta < self.tol:
                    break
            b = b + np.log(pi * C)
        b = b - b.mean()
        self.method_ = method
        self.bias_ = b
        self.prior_ = softmax(L + b).mean(axis=0)
        self.n_iter_ = n_iter
        return self

    def transform(self, proba) -> np.ndarray:
        if not hasattr(self, "bias_"):
            raise RuntimeError("PriorCorrection is not fitted: call fit(proba) first")
        proba = _check_proba(proba, "proba")
        if proba.shape[1] != self.bias_.shape[0]:
            raise ValueError(f"proba has {proba.shape[1]} classes, the correction was fitted on {self.bias_.shape[0]}")
        if self.method_ == "none":
            return proba
        return softmax(_log(proba) + self.bias_)

    def fit_transform(self, proba) -> np.ndarray:
        return self.fit(proba).transform(proba)


class TemperatureScaling:
    """One temperature fitted on gold labels by minimising the NLL (Guo et al. 2017).

    ``fit(proba, y)``: ``y`` holds class indices, -1 for unlabeled rows (ignored).
    ``temperature_`` is searched in [1e-2, 1e2] (log scale, bounded Brent).
    """

    def fit(self, proba, y) -> TemperatureScaling:
        from scipy.optimize import minimize_scalar

        proba = _check_proba(proba, "proba")
        y = np.asarray(y)
        if y.shape != (proba.shape[0],):
            raise ValueError(f"y must have one entry per row of proba ({proba.shape[0]}), got shape {y.shape}")
        m = y >= 0
        if not m.any():
            raise ValueError("temperature scaling needs at least one gold label (y >= 0)")
        if (y[m] >= proba.shape[1]).any():
            raise ValueError(f"y has labels outside the {proba.shape[1]} classes")
        L = _log(proba[m])
        yy = y[m].astype(np.int64)

        def nll(logt):
            z = L / np.exp(logt)
            z = z - z.max(axis=1, keepdims=True)
            return float(-(z[np.arange(len(yy)), yy] - np.log(np.exp(z).sum(axis=1))).mean())

        res = minimize_scalar(nll, bounds=(np.log(1e-2), np.log(1e2)), method="bounded", options={"xatol": 1e-4})
        self.temperature_ = float(np.exp(res.x))
        self.n_gold_ = int(m.sum())
        return self

    def transform(self, proba) -> np.ndarray:
        if not hasattr(self, "temperature_"):
            raise RuntimeError("TemperatureScaling is not fitted: call fit(proba, y) first")
        proba = _check_proba(proba, "proba")
        return softmax(_log(proba) / self.temperature_)


# --------------------------------------------------------------------------- the combination


def _as_output(x) -> TeacherOutput:
    if isinstance(x, TeacherOutput):
        return x
    return TeacherOutput.from_proba(x)


class TeacherCalibrator:
    """Prior correction over the pool, then temperature scaling where gold labels exist.

    Parameters
    ----------
    method : {"auto", "adaptive", "center", "mean", "match", "em", "none"}
        The prior correction (module docstring); "auto" = ``DEFAULT_PRIOR_METHOD``.
        "adaptive" also uses the gold labels given to ``fit``.
    prior : array of shape (C,), optional
        Target class prior for ``method="match"`` (uniform if None).
    temperature : "auto", float or None
        "auto": fit a temperature when ``fit`` gets gold labels, else none; a float fixes
        it; None: no temperature scaling.

    ``fit(output, y=None)`` then ``transform(output)``; ``report_`` holds accuracy/ECE
    before and after (``{"raw": ..., "calibrated": ...}``) when gold labels were given.
    Outputs without ``proba`` pass through unchanged.
    """

    def __init__(self, method: str = "auto", prior=None, temperature="auto"):
        self.method = method
        self.prior = prior
        self.temperature = temperature

    def fit(self, output, y=None) -> TeacherCalibrator:
        out = _as_output(output)
        self.report_ = None
        if out.proba is None:
            self.prior_correction_ = None
            self.temperature_ = None
            return self
        has_gold = y is not None and (np.asarray(y) >= 0).any()
        self.prior_correction_ = PriorCorrection(self.method, self.prior).fit(out.proba, y if has_gold else None)
        corrected = self.prior_correction_.transform(out.proba)
        t = self.temperature
        self.temperature_ = None
        has_gold = y is not None and (np.asarray(y) >= 0).any()
        if isinstance(t, str):
            if t != "auto":
                raise ValueError(f"temperature must be 'auto', a positive float or None, got {t!r}")
            if has_gold:
                self.temperature_ = TemperatureScaling().fit(corrected, y).temperature_
        elif t is not None:
            if not (isinstance(t, (int, float)) and np.isfinite(t) and t > 0):
                raise ValueError(f"temperature must be 'auto', a positive float or None, got {t!r}")
            self.temperature_ = float(t)
        if has_gold:
            self.report_ = {
                "raw": calibration_report(out, y),
                "calibrated": calibration_report(self.transform(out), y),
                "method": self.prior_correction_.method_,
                "temperature": self.temperature_,
            }
        return self

    def transform(self, output):
        """Calibrated answers: a TeacherOutput (or an array when given an array)."""
        if not hasattr(self, "prior_correction_"):
            raise RuntimeError("TeacherCalibrator is not fitted: call fit(output) first")
        is_array = not isinstance(output, TeacherOutput)
        out = _as_output(output)
        if out.proba is None or self.prior_correction_ is None:
            return out
        p = self.prior_correction_.transform(out.proba)
        if self.temperature_ is not None:
            p = softmax(_log(p) / self.temperature_)
        return p if is_array else TeacherOutput.from_proba(p)

    def fit_transform(self, output, y=None):
        return self.fit(output, y).transform(output)


def calibrate(output, method: str = "auto", *, y=None, prior=None, temperature="auto", return_calibrator: bool = False):
    """Calibrate a pool of teacher answers.

    Parameters
    ----------
    output : TeacherOutput or array of shape (N, C)
        The answers for the whole pool (the prior correction is estimated over them).
    method, prior, temperature : see :class:`TeacherCalibrator`.
    y : array of shape (N,), optional
        Gold class indices, -1 where unknown; enables temperature scaling and the report.
    return_calibrator : bool
        Also return the fitted :class:`TeacherCalibrator` (its ``report_`` has accuracy
        and ECE before/after when ``y`` was given).

    Returns
    -------
    The calibrated TeacherOutput (an array if given an array); unchanged when the
    answers have no distribution.
    """
    cal = TeacherCalibrator(method, prior, temperature).fit(output, y)
    res = cal.transform(output)
    return (res, cal) if return_calibrator else res


def calibrate_pool(proba, method: str = "auto", prior=None) -> np.ndarray:
    """The unsupervised prior correction of an (N, C) pool of distributions.

    ``method``: "auto" (= ``DEFAULT_PRIOR_METHOD``), "adaptive", "center", "mean", "match",
    "em", "none" or None.
    Returns a new (N, C) array.
    """
    proba = _check_proba(proba, "proba")
    if _resolve_method(method) == "none" or proba.shape[0] == 0:
        return proba
    return PriorCorrection(method, prior).fit_transform(proba)
