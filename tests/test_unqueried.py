"""unqueried: the inputs a teacher budget left unasked, labelled by the student."""

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

import llkd.estimator
from llkd import LLKDClassifier
from llkd._model_card import model_card
from llkd._numeric import softmax
from llkd._targets import Targets
from llkd._unqueried import resolve_unqueried, with_student_labels


def _task(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    return X, (X[:, 0] > 0).astype(int)


class CountingTeacher:
    def __init__(self):
        self.asked = []

    def __call__(self, rows):
        self.asked.extend(map(bytes, np.ascontiguousarray(rows)))
        p = 1 / (1 + np.exp(-4 * rows[:, 0]))
        return np.stack([1 - p, p], axis=1)


def test_auto_labels_the_rest_under_a_budget_with_the_mlp_student():
    assert resolve_unqueried("auto", 0.3, "mlp") == "student"
    assert resolve_unqueried("auto", None, "mlp") == "ignore"
    assert resolve_unqueried("auto", 0.3, "finetune") == "ignore"  # little gain for a second fine-tuning
    assert resolve_unqueried("student", 0.3, "finetune") == "student"
    assert resolve_unqueried("ignore", 0.3, "mlp") == "ignore"
    with pytest.raises(ValueError, match="unqueried must be one of"):
        resolve_unqueried("teacher", 0.3, "mlp")


def test_student_labels_fill_only_the_unlabelled_rows_of_a_copy():
    t = Targets(
        np.array([0, -1, 1, -1]),
        np.array([0.9, 0.0, 0.7, 0.0]),
        np.array([[0.9, 0.1], [0, 0], [0.3, 0.7], [0, 0]]),
        np.array([True, False, False, False]),
        2,
    )
    p = np.array([[0.2, 0.8], [0.6, 0.4]])
    out = with_student_labels(t, np.array([1, 3]), p)
    assert out.labels.tolist() == [0, 1, 1, 0]
    assert np.allclose(out.confidence, [0.9, 0.8, 0.7, 0.6])  # the student's own confidence, not 1
    assert np.allclose(out.proba[[1, 3]], p) and np.allclose(out.proba[0], [0.9, 0.1])
    assert out.is_gold.tolist() == [True, False, False, False] and out.n_teacher_queries == 2
    assert t.labels.tolist() == [0, -1, 1, -1] and t.proba[1].sum() == 0  # the teacher's targets untouched
    with pytest.raises(ValueError, match="only for rows without a label"):
        with_student_labels(t, np.array([0]), p[:1])
    with pytest.raises(ValueError, match="2 rows for 1"):
        with_student_labels(t, np.array([1]), p)


def test_softmax_is_stable_for_large_logits():
    p = softmax(np.array([[1000.0, 0.0], [0.0, 0.0]]))
    assert np.allclose(p, [[1, 0], [0.5, 0.5]]) and np.isfinite(p).all()


def test_the_second_student_trains_on_the_first_students_labels_of_the_unasked_inputs(monkeypatch):
    X, y = _task()
    seen = {}
    real = llkd.estimator.with_student_labels

    def spy(targets, rows, proba):
        seen["rows"], seen["proba"], seen["labels"] = rows, proba, targets.labels.copy()
        return real(targets, rows, proba)

    monkeypatch.setattr(llkd.estimator, "with_student_labels", spy)
    t = CountingTeacher()
    clf = LLKDClassifier(t, labels=[0, 1], teacher_budget=60, max_epochs=3, random_state=0).fit(X)
    assert len(t.asked) == 60 == clf.n_teacher_queries_  # the student's labels cost no query
    unasked = np.flatnonzero(clf.teacher_labels_ < 0)
    assert len(unasked) == 240 == clf.n_student_labelled_
    assert np.array_equal(seen["rows"], unasked) and (seen["labels"][unasked] == -1).all()
    assert seen["proba"].shape == (240, 2) and np.allclose(seen["proba"].sum(axis=1), 1)
    # the first student, trained on 60 answers of an easy task, labels the rest mostly right
    assert (seen["proba"].argmax(axis=1) == y[unasked]).mean() > 0.8
    second = [h for h in clf.history_ if h.get("stage") == "student_labels"]
    assert len(second) == 3 and all(h["n_backprop_all"] == 300 for h in second)
    assert clf.training_summary_["unqueried"] == "student" and clf.training_summary_["n_student_labelled"] == 240
    assert "labelled by the student | 240 |" in model_card(clf, fmt="llkd")


def test_ignore_trains_on_the_answers_alone():
    X, _ = _task()
    clf = LLKDClassifier(
        CountingTeacher(), labels=[0, 1], teacher_budget=60, unqueried="ignore", max_epochs=2, random_state=0
    ).fit(X)
    assert clf.n_student_labelled_ == 0 and not any("stage" in h for h in clf.history_)
    assert all(h["n_backprop_all"] <= 60 for h in clf.history_)
    assert "labelled by the student" not in model_card(clf, fmt="llkd")


def test_without_a_budget_there_is_nothing_to_label():
    X, _ = _task()
    clf = LLKDClassifier(CountingTeacher(), labels=[0, 1], unqueried="student", max_epochs=2, random_state=0).fit(X)
    assert clf.n_student_labelled_ == 0 and clf.n_iter_ == 2
    assert clf.training_summary_["unqueried"] is None


def test_gold_rows_are_never_relabelled_by_the_student():
    X, y = _task()
    y_part = np.full(len(X), -1)
    y_part[:100] = 1 - y[:100]  # gold labels the student would disagree with
    clf = LLKDClassifier(CountingTeacher(), labels=[0, 1], teacher_budget=50, max_epochs=2, random_state=0)
    clf.fit(X, y_part)
    assert clf.n_student_labelled_ == 300 - 100 - 50
    assert (clf.teacher_labels_[:100] == 1 - y[:100]).all() and clf.is_gold_[:100].all()


def test_a_refit_on_remembered_answers_trains_the_same_schedule():
    # answers remembered from the first fit cost no query; the epochs must not depend on that
    X, _ = _task()
    t = CountingTeacher()
    kw = dict(labels=[0, 1], teacher_budget=60, max_epochs=2, unqueried="ignore", random_state=0)
    first = LLKDClassifier(t, **kw).fit(X)
    again = LLKDClassifier(t, **kw).fit(X)
    assert first.n_teacher_queries_ == 60 and again.n_teacher_queries_ == 0
    assert again.n_iter_ == first.n_iter_
    assert [h["n_backprop_all"] for h in again.history_] == [h["n_backprop_all"] for h in first.history_]


def test_a_bad_setting_is_refused_before_any_query():
    X, _ = _task()
    t = CountingTeacher()
    with pytest.raises(InvalidParameterError, match="unqueried"):
        LLKDClassifier(t, labels=[0, 1], teacher_budget=60, unqueried="teacher").fit(X)
    assert t.asked == []


def test_the_fine_tuned_student_learns_the_unasked_texts_from_a_fresh_encoder(tiny_encoder_dir, monkeypatch):
    from test_estimator_text import keyword_teacher, make_texts

    import llkd.students

    loads = []
    real = llkd.students.load_hf_encoder
    monkeypatch.setattr(llkd.students, "load_hf_encoder", lambda *a, **k: loads.append(a) or real(*a, **k))
    texts, _ = make_texts(200, 2)
    test_texts, _ = make_texts(200, 3)
    kw = dict(
        labels=["negative", "positive"],
        student="finetune",
        encoder=tiny_encoder_dir,
        max_epochs=3,
        learning_rate=3e-3,
        batch_size=16,
        calibration="none",
        teacher_budget=0.5,
        random_state=0,
    )
    auto = LLKDClassifier(keyword_teacher, **kw).fit(texts)
    assert auto.n_student_labelled_ == 0 and len(loads) == 1  # auto: ignore with the fine-tuned student
    clf = LLKDClassifier(keyword_teacher, unqueried="student", **kw).fit(texts)
    assert len(loads) == 3  # the second student starts from the pretrained encoder, not the first one's
    assert clf.n_student_labelled_ == int((clf.teacher_labels_ < 0).sum()) > 0
    assert sum(h.get("stage") == "student_labels" for h in clf.history_) == 3
    proba = clf.predict_proba(test_texts)
    assert proba.shape == (200, 2) and np.isfinite(proba).all()


def test_the_second_mlp_student_starts_fresh_from_the_first_ones_initial_weights(monkeypatch):
    import torch

    X, _ = _task()
    built = []
    real = LLKDClassifier._new_model

    def spy(self, *args, **kw):
        model = real(self, *args, **kw)
        built.append((model, {k: v.detach().clone() for k, v in model.state_dict().items()}))
        return model

    monkeypatch.setattr(LLKDClassifier, "_new_model", spy)
    clf = LLKDClassifier(CountingTeacher(), labels=[0, 1], teacher_budget=60, max_epochs=3, random_state=0).fit(X)
    assert clf.training_summary_["unqueried"] == "student" and len(built) == 2
    (first, init1), (second, init2) = built
    assert clf.student_ is second and second is not first  # not the first student trained on
    for k in init1:
        torch.testing.assert_close(init1[k], init2[k])  # the same start: the fit's torch seed again
    trained_first = first.state_dict()
    assert any(not torch.equal(trained_first[k], init1[k]) for k in init1)  # the first did train
