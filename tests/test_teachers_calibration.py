"""Calibration: prior corrections, temperature scaling, metrics, wrappers."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from llkd.teachers import (
    CalibratedTeacher,
    CallableTeacher,
    PriorCorrection,
    TeacherOutput,
    TemperatureScaling,
    calibrate,
    calibrate_pool,
    calibration_report,
    expected_calibration_error,
    label_in_batches,
)


def biased_pool(n=2000, shift=3.0, prior=0.5, seed=0):
    """A binary pool whose teacher adds `shift` to the positive log-odds (like raw Gemma)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prior).astype(int)
    true_logit = np.where(y == 1, 1.0, -1.0) * 2.0 + rng.normal(0, 1.5, n)
    logit = true_logit + shift
    p = 1 / (1 + np.exp(-logit))
    return np.stack([1 - p, p], axis=1), y


def test_center_and_mean_remove_a_bias():
    proba, y = biased_pool()
    raw = calibration_report(proba, y)
    assert raw["predicted_share"][1] > 0.85 and raw["accuracy"] < 0.65
    for m in ["center", "mean", "match", "em", "auto"]:
        p = calibrate_pool(proba, m)
        rep = calibration_report(p, y)
        if m == "mean":  # the arithmetic mean is dominated by saturated answers: a partial fix
            assert rep["accuracy"] > 0.8 and rep["predicted_share"][1] < raw["predicted_share"][1] - 0.15
        else:
            assert rep["accuracy"] > 0.88, m
            assert abs(rep["predicted_share"][1] - 0.5) < 0.1, m
    # centring makes the mean log-odds zero
    p = calibrate_pool(proba, "center")
    lo = np.log(p[:, 1]) - np.log(p[:, 0])
    assert abs(lo.mean()) < 1e-9
    assert calibrate_pool(proba, "none") is not proba and np.allclose(calibrate_pool(proba, None), proba)


def test_match_hits_the_target_prior():
    proba, y = biased_pool(prior=0.3)
    pc = PriorCorrection("match", prior=[0.7, 0.3]).fit(proba)
    np.testing.assert_allclose(pc.transform(proba).mean(0), [0.7, 0.3], atol=1e-6)
    np.testing.assert_allclose(pc.prior_, [0.7, 0.3], atol=1e-6)


def test_em_keeps_an_imbalanced_prior_better_than_centring():
    proba, y = biased_pool(n=4000, prior=0.2, shift=2.0)
    acc = {m: calibration_report(calibrate_pool(proba, m), y)["accuracy"] for m in ["center", "em"]}
    share = {m: calibration_report(calibrate_pool(proba, m), y)["predicted_share"][1] for m in ["center", "em"]}
    assert acc["em"] > acc["center"]
    assert 0.2 < share["em"] < share["center"] - 0.02  # moves (part of the way) towards the true 20 %


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(2, 30), st.integers(2, 5)), elements=st.floats(-8, 8, allow_nan=False)),
    st.sampled_from(["center", "mean", "match", "em"]),
)
def test_prior_correction_properties(logits, method):
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    pc = PriorCorrection(method).fit(p)
    q = pc.transform(p)
    assert q.shape == p.shape and np.isfinite(q).all()
    np.testing.assert_allclose(q.sum(1), 1, atol=1e-9)
    # One offset per class: the log-ratios between two texts are unchanged.
    lp, lq = np.log(np.maximum(p, 1e-12)), np.log(np.maximum(q, 1e-300))
    d1 = (lp[0] - lp[1]) - (lp[0] - lp[1]).mean()
    d2 = (lq[0] - lq[1]) - (lq[0] - lq[1]).mean()
    if (p > 1e-11).all() and (q > 1e-250).all():
        np.testing.assert_allclose(d1, d2, atol=1e-6)
    # Idempotent for the balanced methods.
    if method in ("center", "match"):
        np.testing.assert_allclose(PriorCorrection(method).fit_transform(q), q, atol=1e-6)


def test_temperature_scaling_recovers_the_temperature():
    rng = np.random.default_rng(1)
    n, C = 4000, 3
    true_logits = rng.normal(0, 1.5, (n, C))
    pt = np.exp(true_logits)
    pt /= pt.sum(1, keepdims=True)
    y = np.array([rng.choice(C, p=row) for row in pt])
    over = np.exp(true_logits * 2.5)  # an overconfident teacher: T = 2.5
    over /= over.sum(1, keepdims=True)
    y_part = y.copy()
    y_part[1000:] = -1  # a few gold labels only
    ts = TemperatureScaling().fit(over, y_part)
    assert ts.temperature_ == pytest.approx(2.5, rel=0.15)
    fixed = ts.transform(over)
    np.testing.assert_array_equal(fixed.argmax(1), over.argmax(1))
    assert calibration_report(fixed, y)["ece"] < calibration_report(over, y)["ece"]
    with pytest.raises(ValueError, match="at least one gold label"):
        TemperatureScaling().fit(over, np.full(n, -1))


def test_calibrate_with_gold_reports_before_after():
    proba, y = biased_pool(n=1000, shift=3.0)
    y_gold = np.full_like(y, -1)
    y_gold[:100] = y[:100]
    out, cal = calibrate(TeacherOutput.from_proba(proba), "auto", y=y_gold, return_calibrator=True)
    assert isinstance(out, TeacherOutput)
    rep = cal.report_
    assert rep["method"] == "center" and rep["temperature"] > 0
    assert rep["calibrated"]["accuracy"] > rep["raw"]["accuracy"] + 0.15
    assert rep["calibrated"]["ece"] < rep["raw"]["ece"]
    arr = calibrate(proba, "center", temperature=None)
    assert isinstance(arr, np.ndarray)
    np.testing.assert_allclose(arr, calibrate_pool(proba, "center"))
    with pytest.raises(ValueError, match="unknown calibration method"):
        calibrate(proba, "magic")
    with pytest.raises(ValueError, match="temperature"):
        calibrate(proba, temperature=-1.0)


def test_answers_without_proba_pass_unchanged():
    out = TeacherOutput([0, 1, 1], [0.9, 0.6, 0.8])
    res = calibrate(out, "center", y=[0, 1, 0])
    assert res is out
    t = CalibratedTeacher(lambda ts: ([1] * len(ts), [0.7] * len(ts)), labels=["a", "b"])
    got = label_in_batches(t, ["x", "y"])
    assert got.proba is None and got.labels.tolist() == [1, 1]


def test_ece_values():
    assert expected_calibration_error([1.0, 1.0], [1, 1]) == 0.0
    assert expected_calibration_error([0.9] * 10, [1] * 6 + [0] * 4) == pytest.approx(0.3)
    # two bins: conf 0.25 (acc 0) and 0.95 (acc 1) -> (0.25 + 0.05) / 2
    assert expected_calibration_error([0.25, 0.95], [0, 1]) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="at least one"):
        expected_calibration_error([], [])


def test_calibrated_teacher_pool_and_fit():
    proba, y = biased_pool(n=400)
    texts = [f"t{i}" for i in range(len(y))]
    lookup = dict(zip(texts, proba))

    def fn(ts):
        return np.stack([lookup[t] for t in ts])

    t = CalibratedTeacher(CallableTeacher(fn, ["neg", "pos"], identity="biased"), method="center")
    seen = []
    pooled = label_in_batches(
        t,
        texts,
        batch_size=16,  # fitted over the whole pool, not per batch
        on_batch=lambda ts, out: seen.append((list(ts), out)),
    )
    np.testing.assert_allclose(pooled.proba, calibrate_pool(proba, "center"), atol=1e-12)
    assert len(seen) == 1 and seen[0][0] == list(texts)  # calibrated answers: one call, whole pool
    np.testing.assert_allclose(seen[0][1].proba, pooled.proba)
    y_gold = np.where(np.arange(len(y)) < 50, y, -1)
    t.fit(texts, y_gold)
    assert t.report_["calibrated"]["accuracy"] > t.report_["raw"]["accuracy"]
    one = t.label(texts[:3])  # the frozen calibration applies to a few texts
    full = label_in_batches(t, texts)
    np.testing.assert_allclose(one.proba, full.proba[:3])
    assert t.identity["teacher"] == "biased"
