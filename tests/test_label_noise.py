"""The forward noise correction (``noise_correction="forward"``): its reliability, its loss,
and where the trainer and the estimator apply it."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llkd import LLKDClassifier
from llkd._label_noise import forward_corrected_loss, reliability, resolve_noise_correction
from llkd._targets import Targets
from llkd._trainer import TrainConfig, Trainer
from llkd.students import FeatureData, MLPHead


def test_reliability_is_the_mid_rank_of_the_confidence_mapped_onto_chance_to_one():
    c = np.array([0.9, 0.5, 0.7, 0.7, 0.6])
    a = reliability(c, np.arange(5), None, n_classes=4)
    # sorted: 0.5 0.6 0.7 0.7 0.9; a row's share below it plus half its ties, in ranks of
    # n = 5: 4.5, 0.5, 3 (the tied pair shares places 2 and 3), 3, 1.5
    F_ = np.array([4.5, 0.5, 3.0, 3.0, 1.5]) / 5
    np.testing.assert_allclose(a, 0.25 + 0.75 * F_, rtol=1e-6)
    assert a.dtype == np.float32


def test_reliability_depends_only_on_the_order_of_the_confidences():
    c = np.random.default_rng(0).uniform(0.3, 1.0, 50)
    a = reliability(c, np.arange(50), None, 3)
    b = reliability(c**4 * 0.1, np.arange(50), None, 3)  # same order, other scale
    np.testing.assert_array_equal(a, b)
    assert np.all(np.diff(a[np.argsort(c)]) > 0)


def test_gold_rows_rows_outside_training_and_uninformative_teachers_get_reliability_one():
    c = np.array([0.9, 0.2, 0.6, 1.0, 0.4])
    gold = np.array([False, False, False, True, False])
    a = reliability(c, np.array([0, 1, 2, 3]), gold, 2)
    assert a[3] == 1.0  # gold
    assert a[4] == 1.0  # not a training row
    # ranks among the teacher rows 0, 1, 2 only: 2.5/3, 0.5/3, 1.5/3
    np.testing.assert_allclose(a[:3], 0.5 + 0.5 * np.array([2.5, 0.5, 1.5]) / 3, rtol=1e-6)
    # a teacher that gives every row the same confidence tells nothing: plain cross-entropy
    np.testing.assert_array_equal(reliability(np.ones(6), np.arange(6), None, 3), np.ones(6, np.float32))


def test_forward_loss_is_the_cross_entropy_at_reliability_one_and_constant_at_chance():
    torch.manual_seed(0)
    logits = torch.randn(6, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    ce = F.cross_entropy(logits, y, reduction="none")
    torch.testing.assert_close(forward_corrected_loss(logits, y, torch.ones(6)), ce)
    chance = forward_corrected_loss(logits, y, torch.full((6,), 1 / 3))
    torch.testing.assert_close(chance, torch.full((6,), float(np.log(3))))
    chance.sum().backward()
    assert float(logits.grad.abs().max()) < 1e-6  # a label at chance confidence pulls nothing


def test_forward_loss_matches_the_noisy_channel_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    p = torch.softmax(logits, 1)[0]
    a = 0.7
    expected = -np.log(a * float(p[1]) + (1 - a) * (1 - float(p[1])) / 2)
    got = forward_corrected_loss(logits, torch.tensor([1]), torch.tensor([a]))
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_a_label_the_student_firmly_rejects_loses_its_pull_under_the_forward_loss():
    # The student puts p_y = e^-8 / (1 + e^-8) on the teacher's label.
    logits = torch.tensor([[8.0, 0.0]], requires_grad=True)
    y = torch.tensor([1])
    F.cross_entropy(logits, y).backward()
    ce_grad = float(logits.grad.abs().max())
    logits.grad = None
    forward_corrected_loss(logits, y, torch.tensor([0.8])).sum().backward()
    fwd_grad = float(logits.grad.abs().max())
    assert ce_grad > 0.99
    assert fwd_grad < 0.01 * ce_grad


def _trainer(X, labels, conf, **cfg):
    torch.manual_seed(0)
    config = TrainConfig(n_classes=2, max_epochs=4, learning_rate=1e-2, lr_schedule="constant", **cfg)
    return Trainer(
        MLPHead(X.shape[1], 2, 16, 0.0),
        FeatureData(X),
        Targets(labels, conf, None),
        config,
        device=torch.device("cpu"),
        rng=np.random.RandomState(0),
    )


def _data(n=128):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    return X, y, rng.uniform(0.5, 1.0, n)


def test_the_trainer_switches_to_the_forward_loss_at_the_start_fraction_and_not_before():
    X, y, c = _data()
    rows = np.arange(len(y))
    base = _trainer(X, y, c, selection="confidence").fit_loop(rows).history
    half = _trainer(X, y, c, selection="confidence", noise_correction="forward").fit_loop(rows).history
    full = _trainer(X, y, c, selection="confidence", noise_correction="forward", noise_correction_start=0.0)
    full = full.fit_loop(rows).history
    assert [h["noise_corrected_steps"] for h in base] == [0, 0, 0, 0]
    assert [h["noise_corrected_steps"] for h in half] == [0, 0, 4, 4]  # 4 steps per epoch, from step 8
    assert [h["noise_corrected_steps"] for h in full] == [4, 4, 4, 4]
    # Before the start the losses are the plain ones, bit for bit; after it they differ.
    assert [h["loss"] for h in half[:2]] == [h["loss"] for h in base[:2]]
    assert half[2]["loss"] != base[2]["loss"]


def test_noise_correction_auto_means_forward_only_with_confidence_weights_and_hard_targets():
    assert resolve_noise_correction("auto", "confidence", False) == "forward"
    assert resolve_noise_correction("auto", "confidence", True) == "none"
    for mode in ("llkd", "all", "teacher", "class_mean"):
        assert resolve_noise_correction("auto", mode, False) == "none"
    assert resolve_noise_correction("forward", "llkd", False) == "forward"
    assert resolve_noise_correction("none", "confidence", False) == "none"


def test_the_estimator_applies_and_records_the_correction_it_resolved():
    X, y, c = _data(200)
    proba = np.stack([1 - c, c], 1)
    proba[y == 0] = proba[y == 0][:, ::-1]

    def teacher(rows):
        index = {r.tobytes(): i for i, r in enumerate(X)}
        return proba[[index[np.asarray(r, dtype=np.float32).tobytes()] for r in rows]]

    auto = LLKDClassifier(teacher, labels=[0, 1], student="mlp", max_epochs=4, random_state=0).fit(X)
    assert auto.training_summary_["noise_correction"] == "forward"
    assert [h["noise_corrected_steps"] > 0 for h in auto.history_] == [False, False, True, True]
    paper = LLKDClassifier(teacher, labels=[0, 1], selection="llkd", max_epochs=4, random_state=0).fit(X)
    assert paper.training_summary_["noise_correction"] == "none"
    assert all(h["noise_corrected_steps"] == 0 for h in paper.history_)
    off = LLKDClassifier(teacher, labels=[0, 1], noise_correction="none", max_epochs=4, random_state=0).fit(X)
    assert not np.allclose(off.predict_proba(X), auto.predict_proba(X))
