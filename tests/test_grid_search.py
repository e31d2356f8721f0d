"""GridSearchCV with a teacher: in threads, in loky worker processes, and with a teacher left behind."""

import pickle

import joblib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV

from llkd import LLKDClassifier
from llkd.teachers import TeacherOutput


def _task(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    y = (X[:, 0] - X[:, 1] > 0).astype(int)
    return X, y


def linear_teacher(rows):
    """A module-level function: it pickles into worker processes."""
    p = 1 / (1 + np.exp(-3 * (rows[:, 0] - rows[:, 1])))
    return np.stack([1 - p, p], axis=1)


class LocalModelTeacher:
    """Like TransformersTeacher: holds a 'local model' and does not travel with the estimator."""

    pickle_with_estimator = False
    classes = [0, 1]
    identity = "local-model-v1"

    def __init__(self):
        self.asked = 0

    def label(self, rows):
        self.asked += len(rows)
        return TeacherOutput.from_proba(linear_teacher(np.asarray(rows)))


def _partial(y, n_gold=60):
    out = np.full(len(y), -1)
    out[:n_gold] = y[:n_gold]
    return out


GRID = {"selection": ["llkd", "all"]}


@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_parallel_grid_search_uses_the_teacher_and_scores_on_the_gold_rows(backend):
    X, y = _task()
    grid = GridSearchCV(
        LLKDClassifier(linear_teacher, labels=[0, 1], max_epochs=5, random_state=0),
        GRID,
        cv=3,
        n_jobs=2,
        error_score="raise",
    )
    with joblib.parallel_backend(backend, n_jobs=2):
        grid.fit(X, _partial(y))
    # Trained on the teacher's labels for the unlabeled rows, scored on the 60 gold rows only:
    # training on the 40 gold rows of a fold alone, as the workers used to, scores far lower.
    assert grid.best_score_ > 0.85, grid.cv_results_["mean_test_score"]
    assert (grid.best_estimator_.teacher_labels_ >= 0).all()
    assert grid.best_estimator_.score(X, y) > 0.85


def test_teacher_asked_once_per_distinct_input_and_not_again_in_grid_search():
    X, y = _task(200)
    calls = []

    def teacher(rows):
        calls.append(len(rows))
        return linear_teacher(rows)

    X2 = np.vstack([X, X[:50]])  # duplicates are asked once
    clf = LLKDClassifier(teacher, labels=[0, 1], max_epochs=2, teacher_batch_size=64, random_state=0)
    clf.fit(X2)
    assert sum(calls) == 200 and clf.n_teacher_queries_ == 200 and len(clf.teacher_labels_) == 250
    grid = GridSearchCV(clf, {"selection": ["llkd", "all"], "momentum": [0.9, 0.99]}, cv=3)
    grid.fit(X, _partial(y, 30))  # the folds' unlabeled rows need the teacher's answers ...
    assert sum(calls) == 200, "... which were remembered: GridSearchCV folds must not ask again"
    assert (grid.best_estimator_.teacher_labels_[30:] >= 0).all()


def test_a_teacher_left_behind_answers_from_what_it_already_gave():
    X, y = _task(300)
    teacher = LocalModelTeacher()
    clf = LLKDClassifier(teacher, max_epochs=3, random_state=0).fit(X)  # labels the pool here
    asked = teacher.asked
    unfitted = LLKDClassifier(teacher, max_epochs=3, random_state=0)
    blob = pickle.dumps(unfitted)
    assert b"local-model" in blob and asked == 300
    grid = GridSearchCV(unfitted, GRID, cv=3, n_jobs=2, error_score="raise")
    with joblib.parallel_backend("loky", n_jobs=2):
        grid.fit(X, _partial(y))
    assert teacher.asked == asked  # the workers never reached the local model
    assert grid.best_score_ > 0.85
    del clf


def test_a_teacher_left_behind_refuses_new_inputs_with_a_clear_error():
    X, y = _task(120)
    restored = pickle.loads(pickle.dumps(LLKDClassifier(LocalModelTeacher(), max_epochs=1)))
    assert type(restored.teacher).__name__ == "TeacherLeftBehind"
    with pytest.raises(RuntimeError, match="stayed in the process"):
        restored.fit(X, _partial(y))


def test_a_fitted_model_still_pickles_without_its_teacher():
    X, y = _task(100)
    clf = LLKDClassifier(linear_teacher, labels=[0, 1], max_epochs=1, random_state=0).fit(X)
    restored = pickle.loads(pickle.dumps(clf))
    assert restored.teacher is None
    np.testing.assert_array_equal(restored.predict(X), clf.predict(X))


def test_frozen_embeddings_are_computed_once_per_encoder_and_text(tiny_encoder_dir, monkeypatch):
    from llkd import _embeddings, students

    _embeddings.clear()
    encoded = []
    real = students.encode_texts

    def counting(encoder, texts, **kw):
        encoded.extend(texts)
        return real(encoder, texts, **kw)

    monkeypatch.setattr(students, "encode_texts", counting)
    texts = [f"the movie was {'good' if i % 2 else 'bad'} {'very ' * (i % 3)}" + str(i) for i in range(40)]
    y = [i % 2 for i in range(40)]
    clf = LLKDClassifier(student="mlp", encoder=tiny_encoder_dir, max_epochs=2, random_state=0).fit(texts, y)
    first = clf.predict_proba(texts)
    assert sorted(encoded) == sorted(set(texts))  # fit encoded each text once; predict reused them
    grid = GridSearchCV(
        LLKDClassifier(student="mlp", encoder=tiny_encoder_dir, max_epochs=2, random_state=0),
        {"hidden_size": [0, 16]},
        cv=2,
    )
    grid.fit(texts, y)
    assert len(encoded) == len(set(texts)), "no fold or candidate encoded a text again"
    np.testing.assert_allclose(clf.predict_proba(texts), first)
    _embeddings.clear()


def test_grid_search_on_a_dask_cluster_uses_the_teacher():
    distributed = pytest.importorskip("distributed")
    X, y = _task()
    grid = GridSearchCV(
        LLKDClassifier(linear_teacher, labels=[0, 1], max_epochs=5, random_state=0), GRID, cv=3, error_score="raise"
    )
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster),
        joblib.parallel_backend("dask"),
    ):
        grid.fit(X, _partial(y))
    assert grid.best_score_ > 0.85, grid.cv_results_["mean_test_score"]
    assert (grid.best_estimator_.teacher_labels_ >= 0).all()


def test_grid_search_with_class_names_and_a_plain_k_fold():
    # scikit-learn's default stratified split cannot sort -1 beside class names (README's recipe
    # says to pass a KFold); -1 in a plain list still marks the unlabeled rows
    from sklearn.model_selection import KFold

    X, y = _task(300)
    names = np.array(["down", "up"])[y]
    y_part = [names[i] if i < 60 else -1 for i in range(len(y))]

    asked = []

    def named_teacher(rows):
        asked.append(len(rows))
        return linear_teacher(rows)

    grid = GridSearchCV(
        LLKDClassifier(named_teacher, labels=["down", "up"], max_epochs=5, random_state=0),
        GRID,
        cv=KFold(3, shuffle=True, random_state=0),
        error_score="raise",
    ).fit(X, y_part)
    assert grid.best_score_ > 0.85 and list(grid.best_estimator_.classes_) == ["down", "up"]
    assert sum(asked) == 240  # every unlabeled row asked, once over the whole search
    assert (grid.best_estimator_.teacher_labels_ >= 0).all() and grid.best_estimator_.is_gold_.sum() == 60
