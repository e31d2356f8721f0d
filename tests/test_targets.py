"""Target-making: one teacher protocol for texts and feature rows, the cache, calibration."""

import warnings

import numpy as np
import pytest

from llkd import LLKDClassifier
from llkd.teachers import CallableTeacher, TeacherCache, TeacherError, label_in_batches


def _rows(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4))


def _proba(rows):
    p = 1 / (1 + np.exp(-3 * rows[:, 0]))
    return np.stack([1 - p, p], axis=1)


def test_feature_rows_are_cached_by_digest_and_a_new_process_pays_nothing(tmp_path):
    X = _rows()
    asked = []

    def fn(batch):
        assert isinstance(batch, np.ndarray) and batch.ndim == 2  # rows reach the teacher as rows
        asked.append(len(batch))
        return _proba(batch)

    path = tmp_path / "answers.sqlite"
    clf = LLKDClassifier(
        CallableTeacher(fn, ["a", "b"], identity="rows-v1"), teacher_cache=path, max_epochs=1, random_state=0
    ).fit(X)
    assert path.exists() and len(TeacherCache(path)) == len(X)
    assert sum(asked) == clf.n_teacher_queries_ == len(X)
    # Another teacher object with the same identity (as in a new process): all from the cache.
    asked.clear()
    clf2 = LLKDClassifier(
        CallableTeacher(fn, ["a", "b"], identity="rows-v1"), teacher_cache=path, max_epochs=1, random_state=0
    ).fit(X[::-1])
    assert asked == [] and clf2.n_teacher_queries_ == 0
    np.testing.assert_array_equal(clf2.teacher_labels_, clf.teacher_labels_[::-1])


def test_a_cache_for_rows_of_a_teacher_without_identity_warns(tmp_path):
    X = _rows(20)
    with pytest.warns(UserWarning, match="identity"):
        LLKDClassifier(
            lambda b: _proba(b), labels=["a", "b"], teacher_cache=tmp_path / "unused.sqlite", max_epochs=1
        ).fit(X)


@pytest.mark.parametrize("kind", ["rows", "texts"])
def test_a_teachers_value_error_names_the_batch_on_rows_as_on_texts(kind):
    X = _rows(40)
    if kind == "texts":
        X = [f"text {i}" for i in range(40)]
    calls = []

    def fn(batch):
        calls.append(len(batch))
        if len(calls) == 2:
            raise ValueError("the model refused")
        return np.full((len(batch), 2), 0.5)

    with pytest.raises(TeacherError, match=r"batch 1 of 3.*the model refused") as info:
        LLKDClassifier(fn, labels=["a", "b"], teacher_batch_size=16, max_epochs=1).fit(X)
    assert isinstance(info.value, ValueError) and info.value.batch_index == 1 and info.value.n_done == 16


def test_a_teacher_object_is_asked_through_label_for_rows():
    class RowTeacher:
        classes = ["a", "b"]

        def __init__(self):
            self.calls = 0

        def label(self, batch):
            from llkd.teachers import TeacherOutput

            self.calls += 1
            return TeacherOutput.from_proba(_proba(np.asarray(batch)))

    t = RowTeacher()
    X = _rows(40)
    out = label_in_batches(t, X, batch_size=16)
    assert t.calls == 3 and len(out) == 40
    np.testing.assert_allclose(out.proba, _proba(X))


def test_calibrated_teacher_is_deprecated_but_works():
    from llkd.teachers import CalibratedTeacher

    with pytest.warns(FutureWarning, match="calibration="):
        t = CalibratedTeacher(lambda b: _proba(b) * 0 + [0.2, 0.8], labels=["a", "b"], method="none")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # using it does not warn again
        out = label_in_batches(t, _rows(10))
    assert out.labels.tolist() == [1] * 10


def test_the_teachers_modules_import_each_other_without_cycles():
    """Every relative import between llkd.teachers modules (module level or inside functions)
    forms an acyclic graph."""
    import ast
    from pathlib import Path

    import llkd.teachers

    folder = Path(llkd.teachers.__file__).parent
    graph = {}
    for f in folder.glob("_*.py"):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                deps.add(node.module.split(".")[0])
        graph[f.stem] = deps & {g.stem for g in folder.glob("_*.py")}
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "active", f"import cycle: {' -> '.join(path + [m])}"
        state[m] = "active"
        for d in sorted(graph[m]):
            visit(d, path + [m])
        state[m] = "done"

    for m in sorted(graph):
        visit(m, [])


def test_calibration_shares_are_recorded_and_a_large_unbacked_shift_warns():
    X = _rows(200, seed=3)

    def starving(rows):  # says "b" almost never, though its probabilities give b about 40 %
        p = np.clip(0.3 + 0.15 * np.tanh(rows[:, 0]), 0.01, 0.99)
        return np.stack([1 - p, p], axis=1)

    with pytest.warns(UserWarning, match="share"):
        clf = LLKDClassifier(starving, labels=["a", "b"], calibration="center", max_epochs=1, random_state=0).fit(X)
    shares = clf.calibration_shares_
    assert shares["raw"]["b"] < 0.05 and shares["corrected"]["b"] > 0.3 and shares["max_shift"] > 0.15
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf = LLKDClassifier(starving, labels=["a", "b"], calibration="none", max_epochs=1, random_state=0).fit(X)
    assert clf.calibration_shares_["max_shift"] == 0


class _ZeroShot:
    """A zero-shot teacher whose columns follow the class list it is given (``order``)."""

    def __init__(self):
        self.order, self.asked = ["a", "b"], []

    def __call__(self, batch):
        self.asked.append(len(batch))
        p = _proba(batch)
        if self.order[:2] == ["b", "a"]:
            p = p[:, ::-1]
        return np.concatenate([p, np.zeros((len(p), len(self.order) - 2))], 1)


def test_remembered_answers_belong_to_the_class_list_they_were_given_for():
    import pickle

    X = _rows(40)
    fn = _ZeroShot()
    clf = LLKDClassifier(fn, labels=fn.order, calibration="none", max_epochs=1, random_state=0).fit(X)
    first = clf.classes_[clf.teacher_labels_]
    assert sum(fn.asked) == len(X)
    clf.fit(X)  # same classes: answered from memory
    assert sum(fn.asked) == len(X)
    fn.order = ["b", "a"]
    clf.set_params(labels=fn.order).fit(X)  # another question: asked again, answers in the new order
    assert sum(fn.asked) == 2 * len(X)
    np.testing.assert_array_equal(clf.classes_[clf.teacher_labels_], first)
    fn.order = ["b", "a", "c"]
    clf.set_params(labels=fn.order).fit(X)  # a third class: three columns, no stale two-column answers
    assert sum(fn.asked) == 3 * len(X) and clf.teacher_proba_.shape == (len(X), 3)
    # an unfitted clone pickled for a worker (a copy of the teacher) carries the answers of every class list
    sent = pickle.dumps(LLKDClassifier(fn, labels=["a", "b"], calibration="none", max_epochs=1))
    for labels in (["a", "b"], ["b", "a"], ["b", "a", "c"]):
        worker = pickle.loads(sent).set_params(labels=labels)
        assert worker.teacher is not fn and worker.fit(X).n_teacher_queries_ == 0


@pytest.mark.parametrize("budget", [None, 1.0])
def test_an_input_with_a_gold_label_is_not_asked_about_in_its_unlabeled_repeats(budget):
    X = _rows(30)
    X = np.concatenate([X, X[:10], X[:2]])  # rows 30-39 repeat rows 0-9, rows 40-41 rows 0-1
    y = np.full(len(X), -1)
    y[:10] = 0  # gold labels for rows 0-9, against the teacher where its rule says 1
    y[40:] = [1, 0]  # row 0 has gold labels 0 and 1 (the first wins the tie), row 1 has 0 twice
    asked = []

    def fn(batch):
        asked.extend(map(bytes, np.ascontiguousarray(batch)))
        return _proba(batch)

    clf = LLKDClassifier(fn, labels=[0, 1], teacher_budget=budget, calibration="none", max_epochs=1, random_state=0)
    clf.fit(X, y)
    assert not set(asked) & set(map(bytes, np.ascontiguousarray(X[:10])))
    assert clf.n_teacher_queries_ == len(asked) == 20  # the 20 inputs without a gold label
    assert clf.is_gold_[:42].sum() == 22 and clf.is_gold_[30:40].all()
    np.testing.assert_array_equal(clf.teacher_labels_[30:40], 0)
    np.testing.assert_array_equal(clf.teacher_confidence_[30:40], 1.0)


def test_minus_one_beside_class_names_in_a_plain_list_marks_an_unlabeled_row():
    X = _rows(20)
    y = ["a", "b"] + [-1] * 17 + [None]  # numpy alone would read -1 here as the string '-1'
    clf = LLKDClassifier(lambda r: _proba(r), labels=["a", "b"], max_epochs=1, random_state=0).fit(X, y)
    assert clf.is_gold_.tolist() == [True, True] + [False] * 18
    assert clf.n_teacher_queries_ == 18


@pytest.mark.parametrize("original", [ValueError("bad batch"), KeyError("x"), OSError("disk")])
def test_a_teacher_error_pickles_so_a_worker_process_can_report_it(original):
    import pickle

    from llkd.teachers._base import teacher_error

    err = teacher_error(original, "Teacher raised on batch 2", batch_index=2, start=32, stop=48, n_done=32)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err) and str(back) == str(err)
    assert (back.batch_index, back.start, back.stop, back.n_done) == (2, 32, 48, 32)
    assert isinstance(back, TeacherError) and (isinstance(back, type(original)) or type(back) is TeacherError)


def test_the_teachers_own_batch_size_applies_unless_teacher_batch_size_is_given():
    sizes = []

    def fn(rows):
        sizes.append(len(rows))
        return np.c_[1 - (rows[:, 0] > 0), rows[:, 0] > 0] * 0.8 + 0.1

    X = np.random.RandomState(0).randn(100, 4)
    teacher = CallableTeacher(fn, ["a", "b"], batch_size=64)
    LLKDClassifier(teacher, max_epochs=1, random_state=0).fit(X)
    assert sizes == [64, 36]
    sizes.clear()
    LLKDClassifier(teacher, teacher_batch_size=30, max_epochs=1, random_state=0).fit(X + 1)
    assert sizes == [30, 30, 30, 10]
    sizes.clear()
    LLKDClassifier(lambda rows: fn(rows), labels=["a", "b"], max_epochs=1, random_state=0).fit(X + 2)
    assert sizes == [16] * 6 + [4]


def test_answers_are_remembered_per_identity_and_survive_an_auto_teacher_settling():
    import os
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from _openai_server import FakeOpenAIServer

    from llkd._targets import memory_for
    from llkd.teachers import OpenAITeacher

    texts = ["good film", "dull film", "great fun"]
    with FakeOpenAIServer(logprobs=False) as srv:
        t = OpenAITeacher("small", ["negative", "positive"], base_url=srv.url, api_key_env=None, n_samples=2)
        with pytest.warns(UserWarning, match="self-consistency"):
            label_in_batches(t, texts, memory=memory_for(t, t.classes))
        assert t.mode_ == "sampling"  # settled: its identity now says so, and the memory still holds
        n = len(srv.requests)
        label_in_batches(t, texts, memory=memory_for(t, t.classes))
        assert len(srv.requests) == n
        t.model = "big"  # another model on the same object: a new question
        label_in_batches(t, texts, memory=memory_for(t, t.classes))
        assert {r["body"]["model"] for r in srv.requests[n:]} == {"big"}


def test_answers_pickled_under_the_class_list_alone_are_still_read():
    from llkd._targets import memory_for

    teacher = CallableTeacher(lambda b: np.full((len(b), 2), 0.5), ["a", "b"], identity="v1")
    clf = LLKDClassifier(teacher, max_epochs=1)
    state = clf.__getstate__()
    state["_teacher_answers_"] = {("a", "b"): {"old text": (1, 0.9, None)}}  # the format before this key
    clone = LLKDClassifier.__new__(LLKDClassifier)
    clone.__setstate__(state)
    assert memory_for(clone.teacher, ["a", "b"]) == {"old text": (1, 0.9, None)}
