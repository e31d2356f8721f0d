"""Class weights on the student's loss (``class_weight``): the weights, the batch rescaling,
what ``"auto"`` resolves to, and what the estimator does with them."""

import numpy as np
import pytest
import torch

from llkd import LLKDClassifier
from llkd._class_weight import class_weights, resolve_class_weight, reweight, weight_vector
from llkd.cli import main


def test_balanced_weights_are_n_over_c_n_k_over_the_training_rows_only():
    labels = np.array([0, 0, 0, 1, 2, 2, 1, 1])
    rows = np.arange(6)  # rows 6 and 7 are not trained on: counts 3, 1, 2 over 6 rows
    w = class_weights("balanced", labels, rows, 3)
    np.testing.assert_allclose(w, [6 / 9, 6 / 3, 6 / 6])
    np.testing.assert_allclose(class_weights("sqrt_balanced", labels, rows, 3), np.sqrt(w))
    # a class without training rows gets 1 (it never contributes)
    np.testing.assert_allclose(class_weights("balanced", labels, np.array([0, 1, 3]), 3), [3 / 6, 3 / 3, 1.0])
    assert class_weights(None, labels, rows, 3) is None


def test_a_dict_maps_class_names_to_weights_and_unnamed_classes_get_one():
    np.testing.assert_array_equal(weight_vector({"b": 3.0}, ["a", "b", "c"]), [1.0, 3.0, 1.0])
    np.testing.assert_array_equal(weight_vector({1: 0.5}, np.array([0, 1])), [1.0, 0.5])


def test_reweighting_keeps_the_selected_rows_total_weight_and_leaves_the_rest():
    weights = torch.tensor([1.0, 2.0, 1.0, 0.0])
    mask = torch.tensor([True, True, True, False])
    y = torch.tensor([0, 1, 1, 0])
    w = reweight(weights, mask, y, torch.tensor([4.0, 1.0], dtype=torch.float64))
    assert float((w * mask).sum()) == pytest.approx(4.0)
    # relative to each other: row 0 gained 4x against rows 1 and 2
    assert float(w[0] / w[2]) == pytest.approx(4.0) and float(w[1] / w[2]) == pytest.approx(2.0)
    assert float(w[3]) == 0.0
    # every selected row's class weighted 0: the batch keeps its weights rather than dividing by 0
    same = reweight(weights, mask, y, torch.tensor([0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(same, weights)


def test_auto_means_sqrt_balanced_only_for_confidence_or_all_hard_targets_and_teacher_labels():
    for mode in ("confidence", "all"):  # the MLP and the fine-tuned student's defaults
        assert resolve_class_weight("auto", mode, False, True) == "sqrt_balanced"
        assert resolve_class_weight("auto", mode, True, True) is None
        assert resolve_class_weight("auto", mode, False, False) is None  # gold labels only
    for mode in ("llkd", "teacher", "student", "class_mean", "fixed", "random"):
        assert resolve_class_weight("auto", mode, False, True) is None
    assert resolve_class_weight("balanced", "llkd", False, False) == "balanced"
    assert resolve_class_weight(None, "confidence", False, True) is None


def _imbalanced_teacher(n=400, seed=0):
    """Features and a teacher that labels 1 only the rows with x0 > 1 (about 16 %)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    index = {r.tobytes(): i for i, r in enumerate(X)}
    p1 = 1 / (1 + np.exp(-4 * (X[:, 0] - 1.0)))
    proba = np.stack([1 - p1, p1], 1)
    calls = []

    def teacher(rows):
        calls.append(len(rows))
        return proba[[index[np.asarray(r, dtype=np.float32).tobytes()] for r in rows]]

    return X, teacher, calls


def test_the_default_mlp_student_weights_classes_by_the_square_root_of_the_balanced_weights():
    X, teacher, _ = _imbalanced_teacher()
    clf = LLKDClassifier(teacher, labels=["no", "yes"], max_epochs=2, random_state=0).fit(X)
    counts = np.bincount(clf.teacher_labels_, minlength=2)
    np.testing.assert_allclose(clf.class_weight_, np.sqrt(len(X) / (2 * counts)))
    assert clf.training_summary_["class_weight"] == "sqrt_balanced"
    paper = LLKDClassifier(teacher, labels=["no", "yes"], selection="llkd", max_epochs=2, random_state=0).fit(X)
    assert paper.class_weight_ is None and paper.training_summary_["class_weight"] is None
    gold = LLKDClassifier(max_epochs=2, random_state=0).fit(X, (X[:, 0] > 1).astype(int))
    assert gold.class_weight_ is None  # no teacher, no teacher bias to counter


def test_heavier_minority_weights_make_the_student_predict_the_minority_more_often():
    X, teacher, _ = _imbalanced_teacher()
    share = {}
    for cw in (None, "sqrt_balanced", "balanced", {"yes": 20.0}):
        clf = LLKDClassifier(teacher, labels=["no", "yes"], class_weight=cw, max_epochs=10, random_state=0)
        share[str(cw)] = float((clf.fit(X).predict(X) == "yes").mean())
    assert share["None"] < share["sqrt_balanced"] < share["balanced"] < share["{'yes': 20.0}"]


def test_a_class_weighted_zero_is_never_learned():
    X, teacher, _ = _imbalanced_teacher()
    clf = LLKDClassifier(teacher, labels=["no", "yes"], class_weight={"yes": 0.0}, max_epochs=10, random_state=0)
    assert set(clf.fit(X).predict(X)) == {"no"}


@pytest.mark.parametrize(
    "class_weight, words",
    [
        ({"maybe": 2.0}, ["class_weight", "'maybe'"]),
        ({"yes": -1.0}, ["class_weight['yes']", ">= 0"]),
        ({"yes": float("nan")}, ["class_weight['yes']"]),
    ],
)
def test_a_bad_class_weight_is_refused_before_any_teacher_query(class_weight, words):
    X, teacher, calls = _imbalanced_teacher(40)
    with pytest.raises(ValueError) as err:
        LLKDClassifier(teacher, labels=["no", "yes"], class_weight=class_weight, max_epochs=1).fit(X)
    assert all(w in str(err.value) for w in words)
    assert calls == []


def test_an_unknown_class_weight_name_is_a_parameter_error():
    X, teacher, calls = _imbalanced_teacher(40)
    with pytest.raises(ValueError, match="class_weight"):
        LLKDClassifier(teacher, labels=["no", "yes"], class_weight="inverse", max_epochs=1).fit(X)
    assert calls == []


def test_under_a_teacher_budget_the_weights_follow_the_labelled_rows():
    X, teacher, calls = _imbalanced_teacher(300)
    kw = dict(labels=["no", "yes"], teacher_budget=0.5, max_epochs=2, random_state=0)
    clf = LLKDClassifier(teacher, unqueried="ignore", **kw).fit(X)
    asked = clf.teacher_labels_ >= 0
    assert sum(calls) == asked.sum() == 150
    counts = np.bincount(clf.teacher_labels_[asked], minlength=2)
    np.testing.assert_allclose(clf.class_weight_, np.sqrt(asked.sum() / (2 * counts)))
    # with the unasked rows labelled by the student, the second student's weights count all 300
    both = LLKDClassifier(teacher, **kw).fit(X)
    assert both.n_student_labelled_ == 150
    implied = 300 / (2 * both.class_weight_**2)  # n_k from w_k = sqrt(n / (C n_k))
    assert implied.sum() == pytest.approx(300) and np.allclose(implied, np.round(implied))


def test_a_dict_class_weight_survives_save_and_load(tmp_path):
    X, teacher, _ = _imbalanced_teacher(60)
    clf = LLKDClassifier(teacher, labels=["no", "yes"], class_weight={"yes": 2.5}, max_epochs=1, random_state=0)
    clf.fit(X).save(tmp_path / "m")
    loaded = LLKDClassifier.load(tmp_path / "m")
    assert loaded.class_weight == {"yes": 2.5}
    assert loaded.training_summary_["class_weight"] == "dict"
    assert "| class weights | dict |" in (tmp_path / "m" / "README.md").read_text()
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), rtol=1e-6)


def test_the_command_line_passes_class_weight_through(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    path = tmp_path / "data.csv"
    with open(path, "w") as fh:
        fh.write("text,label\n")
        for i, row in enumerate(X):
            fh.write(f"item {i} {'good' if row[0] > 0 else 'bad'},{'pos' if row[0] > 0 else 'neg'}\n")
    with pytest.raises(SystemExit):
        main(["distill", "--data", str(path), "--class-weight", "inverse", "--out", str(tmp_path / "x")])
    assert "--class-weight" in capsys.readouterr().err
