"""LLKDClassifier on numeric features: conformance, persistence, the LLKD effect."""

import pickle
import warnings

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from llkd import LLKDClassifier

# -1 marks an unlabeled row (as in SelfTrainingClassifier; docs/design.md section 2), so a
# classifier whose classes are {-1, 1} cannot be told apart from a partly labeled one.
EXPECTED_FAILED_CHECKS = {
    "check_classifiers_classes": "y = -1 marks unlabeled rows (docs/design.md section 2), so -1 cannot be a class",
}


@parametrize_with_checks(
    [LLKDClassifier(max_epochs=30, random_state=0)],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        check(estimator)


def noisy_teacher_task(seed, n=1000, d=8):
    """Truth is a linear rule; the teacher is right with probability = its confidence."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    X = rng.normal(size=(n, d))
    truth = (X @ w > 0).astype(int)
    X_test = rng.normal(size=(1500, d))
    y_test = (X_test @ w > 0).astype(int)
    conf = rng.uniform(0.5, 1.0, n)
    label = np.where(rng.random(n) < conf, truth, 1 - truth)
    proba = np.zeros((n, 2))
    proba[np.arange(n), label] = conf
    proba[np.arange(n), 1 - label] = 1 - conf
    table = {X[i].tobytes(): proba[i] for i in range(n)}
    calls = []

    def teacher(rows):
        calls.append(len(rows))
        return np.stack([table[np.ascontiguousarray(r).tobytes()] for r in rows])

    return X, truth, X_test, y_test, teacher, calls


def fit_score(teacher, X, X_test, y_test, **kw):
    clf = LLKDClassifier(teacher, labels=[0, 1], max_epochs=30, calibration="none", random_state=0, **kw)
    clf.fit(X)
    return clf, clf.score(X_test, y_test)


@pytest.mark.parametrize("seed", [0, 1])
def test_llkd_beats_training_on_all_pseudo_labels(seed):
    X, truth, X_test, y_test, teacher, _ = noisy_teacher_task(seed)
    teacher_acc = (np.stack([teacher(X[i : i + 1])[0] for i in range(len(X))]).argmax(1) == truth).mean()
    _, acc_all = fit_score(teacher, X, X_test, y_test, selection="all")
    clf, acc_llkd = fit_score(teacher, X, X_test, y_test, selection="llkd")
    assert acc_llkd > acc_all + 0.02, (acc_llkd, acc_all, teacher_acc)
    assert acc_llkd > teacher_acc
    last = clf.history_[-1]
    assert last["selected_fraction"] < 0.5
    # the default eval pass back-propagates the selected rows only
    assert last["n_backprop"] == last["n_selected"] < last["n_backprop_all"]
    assert 0 < last["distinct_selected"] <= len(X)


def test_history_records_selection():
    X, _, _, _, teacher, _ = noisy_teacher_task(0, n=300)
    clf = LLKDClassifier(teacher, labels=["neg", "pos"], max_epochs=3, random_state=0).fit(X)
    assert len(clf.history_) == clf.n_iter_ == 3
    for rec in clf.history_:
        assert len(rec["teacher_threshold"]) == len(rec["student_threshold"]) == 2
        assert sum(rec["selected_per_class"]) == rec["n_selected"]
        assert rec["n_backprop_all"] == 300
        assert rec["skipped_steps"] >= 0 and np.isfinite(rec["loss"])
    distinct = [r["distinct_selected"] for r in clf.history_]
    assert distinct == sorted(distinct)
    assert list(clf.classes_) == ["neg", "pos"]
    assert clf.teacher_proba_.shape == (300, 2)
    np.testing.assert_allclose(clf.teacher_confidence_, clf.teacher_proba_.max(1))
    assert clf.selector_.state.n_updates > 0


def test_train_uncertainty_pass_backpropagates_whole_batches():
    X, _, X_test, y_test, teacher, _ = noisy_teacher_task(0, n=600)
    clf, acc = fit_score(teacher, X, X_test, y_test, selection="llkd", uncertainty_pass="train")
    rec = clf.history_[-1]
    # the shared forward pass of docs/design.md section 3.6 back-propagates whole batches (zero weights included)
    assert rec["n_selected"] < rec["n_backprop"] <= rec["n_backprop_all"]
    assert acc > 0.8


def test_warmup_uses_every_sample_first():
    X, _, _, _, teacher, _ = noisy_teacher_task(0, n=320)
    clf = LLKDClassifier(
        teacher, labels=[0, 1], selection="llkd", max_epochs=2, batch_size=32, warmup_epochs=1, random_state=0
    ).fit(X)
    assert clf.history_[0]["selected_fraction"] == 1.0
    assert clf.history_[1]["selected_fraction"] < 1.0


def test_soft_targets_and_all_modes_run():
    X, _, X_test, y_test, teacher, _ = noisy_teacher_task(1, n=400)
    for mode in ("teacher", "student", "fixed", "random", "class_mean", "confidence", "llkd"):
        clf, acc = fit_score(teacher, X, X_test, y_test, selection=mode, soft_targets=True, random_rate=0.3)
        assert acc > 0.7, mode
        # the soft loss is the one trained on (its formula: test_trainer.py)
        hard, _ = fit_score(teacher, X, X_test, y_test, selection=mode, random_rate=0.3)
        assert not np.allclose(clf.predict_proba(X_test), hard.predict_proba(X_test)), mode
    clf = LLKDClassifier(teacher, labels=[0, 1], selection="random", random_rate=0.3, max_epochs=2, random_state=0).fit(
        X
    )
    assert 0.2 < clf.history_[-1]["selected_fraction"] < 0.4


def test_clone_passes_teacher_by_reference():
    class Heavy:
        classes = ["a", "b"]

        def __deepcopy__(self, memo):
            raise AssertionError("a loaded teacher must not be deep-copied")

        def label(self, X):
            raise NotImplementedError

    heavy = Heavy()
    est = LLKDClassifier(heavy, momentum=0.5)
    copy = clone(est)
    assert copy.teacher is heavy and copy.momentum == 0.5
    assert copy.get_params()["teacher"] is heavy
    copy.set_params(momentum=0.9)
    assert est.momentum == 0.5


def test_partial_gold_labels_override_the_teacher():
    X, truth, _, _, teacher, calls = noisy_teacher_task(0, n=200)
    y = np.full(200, -1)
    y[:50] = truth[:50]
    clf = LLKDClassifier(teacher, labels=[0, 1], max_epochs=1, random_state=0).fit(X, y)
    assert sum(calls) == 150
    np.testing.assert_array_equal(clf.teacher_labels_[:50], truth[:50])
    assert np.all(clf.teacher_confidence_[:50] == 1.0) and clf.is_gold_[:50].all()
    assert not clf.is_gold_[50:].any()


def test_teacher_none_with_partial_labels_trains_on_labeled_rows():
    X, truth, X_test, y_test, _, _ = noisy_teacher_task(0, n=400)
    y = np.where(np.arange(400) < 300, truth, -1)
    clf = LLKDClassifier(max_epochs=20, random_state=0).fit(X, y)
    assert clf.history_[-1]["n_backprop_all"] == 300
    assert clf.score(X_test, y_test) > 0.85
    y_obj = np.array([("pos" if t else "neg") if i < 300 else None for i, t in enumerate(truth)], dtype=object)
    clf = LLKDClassifier(max_epochs=5, random_state=0).fit(X, y_obj)
    assert set(clf.classes_) == {"neg", "pos"}


def test_same_random_state_same_predictions_and_pipeline():
    X, truth, X_test, _, _, _ = noisy_teacher_task(2, n=300)
    a = make_pipeline(StandardScaler(), LLKDClassifier(max_epochs=5, random_state=3)).fit(X, truth)
    b = make_pipeline(StandardScaler(), LLKDClassifier(max_epochs=5, random_state=3)).fit(X, truth)
    np.testing.assert_array_equal(a.predict_proba(X_test), b.predict_proba(X_test))
    c = make_pipeline(StandardScaler(), LLKDClassifier(max_epochs=5, random_state=4)).fit(X, truth)
    assert not np.array_equal(a.predict_proba(X_test), c.predict_proba(X_test))


def test_pickle_joblib_and_safetensors_round_trips(tmp_path):
    X, truth, X_test, _, teacher, _ = noisy_teacher_task(0, n=300)
    clf = LLKDClassifier(teacher, labels=["neg", "pos"], max_epochs=3, random_state=0).fit(X)
    expected = clf.predict_proba(X_test)
    for restored in (
        pickle.loads(pickle.dumps(clf)),
        joblib.load(joblib.dump(clf, tmp_path / "m.joblib")[0]),
        LLKDClassifier.load(clf.save(tmp_path / "saved")),
    ):
        np.testing.assert_array_equal(restored.predict_proba(X_test), expected)
        np.testing.assert_array_equal(restored.predict(X_test), clf.predict(X_test))
        assert list(restored.classes_) == ["neg", "pos"]
    saved = sorted(p.name for p in (tmp_path / "saved").iterdir())
    assert saved == ["README.md", "config.json", "model.safetensors"]  # README.md: the model card
    loaded = LLKDClassifier.load(tmp_path / "saved")
    assert loaded.teacher is None and loaded.history_ == clf.history_
    with pytest.raises(ValueError, match="features"):
        loaded.predict(X_test[:, :3])


def test_pickled_state_holds_cpu_tensors_only():
    X, truth, _, _, _, _ = noisy_teacher_task(0, n=100)
    clf = LLKDClassifier(max_epochs=1, random_state=0).fit(X, truth)
    state = clf.__getstate__()
    assert "student_" not in state
    assert all(t.device.type == "cpu" for t in state["_student_state_"].values())


@pytest.mark.gpu
def test_model_fitted_on_cuda_predicts_identically_on_a_cpu_only_process(tmp_path):
    import subprocess
    import sys

    X, truth, X_test, _, teacher, _ = noisy_teacher_task(0, n=400)
    clf = LLKDClassifier(teacher, labels=[0, 1], device="cuda", max_epochs=3, random_state=0).fit(X)
    assert next(clf.student_.parameters()).device.type == "cuda"
    assert clf.history_[-1]["n_selected"] > 0
    np.save(tmp_path / "X.npy", X_test)
    np.save(tmp_path / "p.npy", clf.predict_proba(X_test))
    joblib.dump(clf, tmp_path / "m.joblib")
    code = (
        "import joblib, numpy as np, torch; assert not torch.cuda.is_available(); "
        f"m = joblib.load({str(tmp_path / 'm.joblib')!r}); "
        f"p = m.predict_proba(np.load({str(tmp_path / 'X.npy')!r})); "
        f"np.testing.assert_allclose(p, np.load({str(tmp_path / 'p.npy')!r}), atol=1e-5); print('ok')"
    )
    env = dict(__import__("os").environ, CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


@pytest.mark.parametrize(
    "kwargs, X, y, exc, words",
    [
        ({}, np.zeros((5, 2)), None, ValueError, "requires y"),
        ({}, np.zeros((0, 2)), np.zeros(0), ValueError, "0 sample"),
        ({}, np.array([[0.0, np.nan]] * 4), [0, 1, 0, 1], ValueError, "NaN"),
        ({}, np.zeros((4, 2)), [0, 0, 0, 0], ValueError, "at least 2 classes"),
        ({}, np.zeros((4, 2)), [0, 1, 0], ValueError, "inconsistent"),
        ({"labels": ["a", "b"]}, np.zeros((4, 2)), ["a", "b", "c", "a"], ValueError, "'c'"),
        ({"momentum": 1.5}, np.zeros((4, 2)), [0, 1, 0, 1], ValueError, "momentum"),
        ({"selection": "best"}, np.zeros((4, 2)), [0, 1, 0, 1], ValueError, "selection"),
        ({"teacher": 42}, np.zeros((4, 2)), None, ValueError, "teacher"),
        ({"device": "cuda:7"}, np.zeros((4, 2)), [0, 1, 0, 1], ValueError, "device"),
        ({"student": "finetune"}, np.zeros((4, 2)), [0, 1, 0, 1], ValueError, "text"),
    ],
)
def test_bad_input(kwargs, X, y, exc, words):
    torch = pytest.importorskip("torch")
    if kwargs.get("device", "").startswith("cuda") and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(exc) as info:
        LLKDClassifier(max_epochs=1, **kwargs).fit(X, y)
    assert words in str(info.value)


def test_predict_before_fit_and_wrong_input_kind():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        LLKDClassifier().predict(np.zeros((2, 2)))
    X, truth, _, _, _, _ = noisy_teacher_task(0, n=50)
    clf = LLKDClassifier(max_epochs=1, random_state=0).fit(X, truth)
    with pytest.raises((TypeError, ValueError)):
        clf.predict(["some text"])
    with pytest.raises(TypeError, match="single string"):
        clf.fit("one text")


@pytest.mark.parametrize("kind", ["rows", "texts"])
def test_failing_teacher_is_reported_with_its_batch_and_a_refit_asks_only_the_rest(kind):
    from llkd.teachers import TeacherError

    X, _, _, _, _, _ = noisy_teacher_task(0, n=100)
    if kind == "texts":
        X = [" ".join(f"w{int(v > 0)}{i}" for i, v in enumerate(row)) for row in X]
    asked = []
    fail = {"at": 3}

    def flaky(batch):
        asked.append(len(batch))
        if len(asked) == fail["at"]:
            raise ConnectionError("server went away")
        first = np.array([float(str(r).split()[0][1]) if kind == "texts" else float(r[0] > 0) for r in batch])
        return np.stack([0.9 - 0.8 * first, 0.1 + 0.8 * first], axis=1)

    clf = LLKDClassifier(flaky, labels=["a", "b"], teacher_batch_size=16, max_epochs=1, random_state=0)
    with pytest.raises(TeacherError) as info:
        clf.fit(X)
    msg = str(info.value)
    assert "batch 2" in msg and "ConnectionError" in msg and "server went away" in msg, msg
    assert not hasattr(clf, "student_")
    assert sum(asked[:2]) == 32
    fail["at"] = -1
    asked.clear()
    clf.fit(X)  # the same teacher object: the 32 answers already paid for are not asked again
    n_distinct = len(set(X)) if kind == "texts" else len(np.unique(X, axis=0))
    assert sum(asked) == n_distinct - 32
    assert clf.n_teacher_queries_ == n_distinct - 32


def _biased_teacher(asked, fail_at=None):
    """Right about the sign of the first feature (texts: its first word), but biased to "b"."""

    def answer(batch):
        asked.append(len(batch))
        if fail_at is not None and len(asked) == fail_at[0]:
            raise ConnectionError("server went away")
        first = np.array([str(r).startswith("w1") if isinstance(r, str) else r[0] > 0 for r in batch], float)
        p_b = np.where(first > 0, 0.95, 0.6)
        return np.stack([1 - p_b, p_b], axis=1)

    return answer


@pytest.mark.parametrize("kind", ["rows", "texts"])
def test_calibrated_teacher_is_calibrated_over_the_whole_pool_and_keeps_raw_answers(kind):
    from llkd.teachers import CalibratedTeacher, TeacherError, TeacherOutput

    X, _, _, _, _, _ = noisy_teacher_task(1, n=100)
    if kind == "texts":  # distinct texts, so that the pool is the 100 rows
        X = [" ".join(f"w{int(v > 0)}{i}" for i, v in enumerate(row)) + f" r{j}" for j, row in enumerate(X)]
    asked, fail_at = [], [3]
    teacher = CalibratedTeacher(_biased_teacher(asked, fail_at), method="center", labels=["a", "b"])
    clf = LLKDClassifier(teacher, teacher_batch_size=16, calibration="none", max_epochs=1, random_state=0)
    with pytest.raises(TeacherError, match="server went away"):
        clf.fit(X)
    fail_at[0] = -1
    asked.clear()
    clf.fit(X)
    # the two batches answered before the failure were kept (raw) and not asked again
    assert sum(asked) == 100 - 32 and clf.n_teacher_queries_ == 100 - 32
    # ... and the calibration was fitted on the pool of 100, not batch by batch
    raw = _biased_teacher([])(X if kind == "texts" else list(X))
    expected = CalibratedTeacher(_biased_teacher([]), method="center", labels=["a", "b"]).calibrate_output(
        TeacherOutput.from_proba(np.asarray(raw))
    )
    np.testing.assert_array_equal(clf.teacher_labels_, expected.labels)
    np.testing.assert_allclose(clf.teacher_confidence_, expected.confidence)
    # a refit on part of the pool recalibrates over that part, from the remembered raw answers
    asked.clear()
    clf.fit(X[:50])
    assert asked == [] and clf.n_teacher_queries_ == 0
    part = CalibratedTeacher(_biased_teacher([]), method="center", labels=["a", "b"]).calibrate_output(
        TeacherOutput.from_proba(np.asarray(raw)[:50])
    )
    np.testing.assert_allclose(clf.teacher_confidence_, part.confidence)


@pytest.mark.parametrize(
    "answer, exc, words",
    [
        (lambda rows: np.full((len(rows) - 1, 2), 0.5), ValueError, "answers"),
        (lambda rows: np.full((len(rows), 2), np.nan), ValueError, "NaN"),
        (lambda rows: (np.full(len(rows), 5), np.full(len(rows), 0.9)), ValueError, "5"),
    ],
)
def test_bad_teacher_answers_on_feature_rows_are_rejected(answer, exc, words):
    X, _, _, _, _, _ = noisy_teacher_task(0, n=40)
    with pytest.raises(exc) as info:
        LLKDClassifier(answer, labels=["a", "b"], max_epochs=1).fit(X)
    assert words in str(info.value), str(info.value)
