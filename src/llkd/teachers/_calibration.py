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
   - ``"none"``: no change.

   ``"auto"`` is ``"center"``. On the binary Gemma teacher (500 Rotten Tomatoes test
   reviews, ``benchmarks/RESULTS.md`` section bench_teacher) the corrections tie within
   the noise (few-shot prompt: raw 0.870, em 0.868, center 0.862; zero-shot, biased:
   raw 0.570, em 0.860, center 0.858). On multi-class teachers EM drifted to a
   degenerate prior (section bench_distill; TF-IDF teachers trained on 2 % of the gold
   labels): 20 Newsgroups pool accuracy raw 0.425, center 0.644, em 0.290 (3 of 20
   classes never predicted); Reuters R8 test macro-F1 raw 0.343, center 0.697, em
   0.220. Centring was never far from the best and never collapsed, so it is the
   default; use ``"em"`` only with a well-calibrated teacher on a pool whose imbalance
   must be kept.

2. **Temperature scaling** (Guo et al. 2017), when a few gold labels exist: one
   temperature ``T`` fitted by minimising the negative log-likelihood of the gold labels
   under ``softmax(log p' / T)``; it changes confidences, never the argmax.

Answers without a distribution (``proba`` None, e.g. a callable returning
``(labels, confidence)``) pass through every calibration unchanged.
"""

from __future__ import annotations

import numpy as np

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
]

PRIOR_METHODS = ("none", "center", "mean", "match", "em")
DEFAULT_PRIOR_METHOD = "center"
_FLOOR = 1e-12


def _log(proba: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(proba, _FLOOR))


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


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
        rep["predicted_share"] = (
            np.bincount(labels[m], minlength=proba.shape[1]).astype(float).__truediv__(m.sum()).tolist()
        )
    return rep


# --------------------------------------------------------------------------- prior correction


class PriorCorrection:
    """Unsupervised per-class log-offsets fitted on a pool (see the module docstring).

    Attributes after ``fit``: ``bias_`` (C,), ``prior_`` (C,: the pool prior the
    corrected distributions average to), ``n_iter_``.
    """

    def __init__(self, method: str = "auto", prior=None, max_iter: int = 1000, tol: float = 1e-9):
        self.method = method
        self.prior = prior
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, proba) -> PriorCorrection:
        proba = _check_proba(proba, "proba")
        if proba.shape[0] == 0:
            raise ValueError("proba is empty: the prior correction needs a pool of answers")
        C = proba.shape[1]
        method = _resolve_method(self.method)
        L = _log(proba)
        b = np.zeros(C)
        n_iter = 0
        if method == "center":
            b = -L.mean(axis=0)
        elif method == "mean":
            b = -np.log(np.maximum(proba.mean(axis=0), _FLOOR))
        elif method == "match":
            target = _check_prior(self.prior, C)
            for n_iter in range(1, self.max_iter + 1):
                mean = _softmax(L + b).mean(axis=0)
                step = np.log(target) - np.log(np.maximum(mean, _FLOOR))
                b = b + step
                if np.abs(step).max() < self.tol:
                    break
        elif method == "em":
            b = -L.mean(axis=0)
            q = _softmax(L + b)
            pi = np.full(C, 1.0 / C)
            for n_iter in range(1, self.max_iter + 1):
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
        self.prior_ = _softmax(L + b).mean(axis=0)
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
        return _softmax(_log(proba) + self.bias_)

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
        return _softmax(_log(proba) / self.temperature_)


# --------------------------------------------------------------------------- the combination


def _as_output(x) -> TeacherOutput:
    if isinstance(x, TeacherOutput):
        return x
    return TeacherOutput.from_proba(x)


class TeacherCalibrator:
    """Prior correction over the pool, then temperature scaling where gold labels exist.

    Parameters
    ----------
    method : {"auto", "center", "mean", "match", "em", "none"}
        The unsupervised prior correction (module docstring); "auto" = "center".
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
        self.prior_correction_ = PriorCorrection(self.method, self.prior).fit(out.proba)
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
            p = _softmax(_log(p) / self.temperature_)
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

    ``method``: "auto" (= "center"), "center", "mean", "match", "em", "none" or None.
    Returns a new (N, C) array.
    """
    proba = _check_proba(proba, "proba")
    if _resolve_method(method) == "none" or proba.shape[0] == 0:
        return proba
    return PriorCorrection(method, prior).fit_transform(proba)
