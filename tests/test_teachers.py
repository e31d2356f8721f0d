"""Teacher protocol, checks, callable/precomputed teachers, label_in_batches and the SQLite cache."""

import multiprocessing as mp
import pickle
import sqlite3
import threading

import numpy as np
import pytest

from llkd.teachers import (
    CallableTeacher,
    PrecomputedTeacher,
    TeacherCache,
    TeacherError,
    TeacherOutput,
    as_teacher,
    identity_key,
    label_in_batches,
)

LABELS = ["neg", "pos"]


def proba_fn(texts):
    p = np.array([(len(t) % 7 + 1) / 9 for t in texts])
    return np.stack([1 - p, p], axis=1)


# --------------------------------------------------------------------------- TeacherOutput


def test_teacher_output_checks():
    out = TeacherOutput([0, 1], [0.5, 1.0])
    assert out.labels.dtype == np.int64 and out.confidence.dtype == np.float64 and out.proba is None
    with pytest.raises(ValueError, match=r"confidence must be in \[0, 1\].*entry 1"):
        TeacherOutput([0, 1], [0.5, 1.5])
    with pytest.raises(ValueError, match="not NaN"):
        TeacherOutput([0, 1], [0.5, np.nan])
    with pytest.raises(ValueError, match="confidence has 1 entries but labels has 2"):
        TeacherOutput([0, 1], [0.5])
    with pytest.raises(ValueError, match="non-negative"):
        TeacherOutput([0, -1], [0.5, 0.5])
    with pytest.raises(TypeError, match="integer class indices"):
        TeacherOutput([0.5, 1], [0.5, 0.5])
    with pytest.raises(ValueError, match="rows must sum to 1; row 0"):
        TeacherOutput([0], [0.5], [[0.5, 0.6]])
    with pytest.raises(ValueError, match="NaN or infinite"):
        TeacherOutput([0], [0.5], [[np.nan, 1.0]])
    with pytest.raises(ValueError, match="< the 2 columns"):
        TeacherOutput([2], [0.5], [[0.5, 0.5]])
    o = TeacherOutput.from_proba([[0.2, 0.8], [0.9, 0.1]])
    assert o.labels.tolist() == [1, 0] and np.allclose(o.confidence, [0.8, 0.9])
    assert len(o.take([1])) == 1 and o.take([1]).labels.tolist() == [0]


# --------------------------------------------------------------------------- as_teacher / callables


def test_as_teacher():
    t = CallableTeacher(proba_fn, LABELS)
    assert as_teacher(t) is t
    assert as_teacher(t, labels=LABELS) is t
    with pytest.raises(ValueError, match="do not match"):
        as_teacher(t, labels=["a", "b"])
    c = as_teacher(proba_fn, labels=LABELS)
    assert isinstance(c, CallableTeacher) and c.classes == LABELS
    with pytest.raises(TypeError, match="needs the class names"):
        as_teacher(proba_fn)
    with pytest.raises(TypeError, match="must have `classes`"):
        as_teacher(42, labels=LABELS)
    with pytest.raises(TypeError, match="teacher is None"):
        as_teacher(None)
    with pytest.raises(ValueError, match="at least 2 classes"):
        as_teacher(proba_fn, labels=["only"])
    with pytest.raises(ValueError, match="distinct"):
        as_teacher(proba_fn, labels=["a", "a"])


def test_callable_answer_forms():
    texts = ["a", "bb", "ccc"]
    out = CallableTeacher(proba_fn, LABELS).label(texts)
    assert out.proba.shape == (3, 2)
    pair = CallableTeacher(lambda ts: ([1, 0, 1], [0.9, 0.8, 0.7]), LABELS).label(texts)
    assert pair.proba is None and pair.labels.tolist() == [1, 0, 1]
    names = CallableTeacher(lambda ts: (["pos", "neg", "pos"], np.array([0.9, 0.8, 0.7])), LABELS).label(texts)
    assert names.labels.tolist() == [1, 0, 1]
    to = CallableTeacher(lambda ts: TeacherOutput([0] * len(ts), [1.0] * len(ts)), LABELS).label(texts)
    assert to.labels.tolist() == [0, 0, 0]


@pytest.mark.parametrize(
    "answer,err,match",
    [
        (lambda ts: proba_fn(ts)[:-1], ValueError, "returned 2 answers for 3 texts"),
        (lambda ts: ([0, 1], [0.5, 0.5]), ValueError, "returned 2 labels for 3 texts"),
        (lambda ts: ([0, 2, 1], [0.5] * 3), ValueError, "label 2 at position 1, outside the 2 classes"),
        (lambda ts: ([0, -1, 1], [0.5] * 3), ValueError, "label -1 at position 1"),
        (lambda ts: (["neg", "meh", "pos"], [0.5] * 3), ValueError, "unknown label 'meh' at position 1"),
        (lambda ts: ([0, 1, 1], [0.5, 1.2, 0.5]), ValueError, r"confidence must be in \[0, 1\]"),
        (lambda ts: ([0, 1, 1], [0.5, np.nan, 0.5]), ValueError, "not NaN"),
        (lambda ts: ([0, 1, 1], [0.5, 0.5]), ValueError, "confidence of shape"),
        (lambda ts: np.full((3, 2), 0.7), ValueError, "sum to 1"),
        (lambda ts: np.full((3, 3), 1 / 3), ValueError, "3 probability columns for 2 classes"),
        (lambda ts: np.ones(3), ValueError, "array of shape"),
        (lambda ts: ([0.5, 1, 1], [0.5] * 3), ValueError, "non-integer label"),
        (lambda ts: (1, 2, 3), TypeError, "tuple of 3 items"),
        (lambda ts: "pos", TypeError, "probability array"),
        (lambda ts: {"a": 1}, TypeError, "probability array"),
    ],
)
def test_callable_bad_answers(answer, err, match):
    with pytest.raises(err, match=match):
        CallableTeacher(answer, LABELS).label(["a", "b", "c"])
    # label_in_batches reports the batch too.
    with pytest.raises(err, match=match):
        label_in_batches(CallableTeacher(answer, LABELS), ["a", "b", "c"], batch_size=3)


def test_teacher_returning_wrong_count_through_object():
    class Bad:
        classes = LABELS

        def label(self, texts):
            return TeacherOutput([0], [1.0])

    with pytest.raises(ValueError, match=r"returned 1 answers for 2 texts"):
        label_in_batches(Bad(), ["a", "b"], batch_size=2)

    class NotOutput:
        classes = LABELS

        def label(self, texts):
            return [0] * len(texts)

    with pytest.raises(TypeError, match="must return a TeacherOutput"):
        label_in_batches(NotOutput(), ["a", "b"])


def test_precomputed_teacher():
    t = PrecomputedTeacher(["x", "y", "z"], ["pos", "neg", 1], [0.9, 0.6, 0.7], classes=LABELS)
    out = t.label(["z", "x"])
    assert out.labels.tolist() == [1, 1] and np.allclose(out.confidence, [0.7, 0.9])
    with pytest.raises(KeyError, match="no answer for 1 of the 2 texts"):
        t.label(["x", "nope"])
    tp = PrecomputedTeacher(["x", "y"], proba=[[0.3, 0.7], [0.6, 0.4]], classes=LABELS)
    assert tp.label(["y"]).proba.tolist() == [[0.6, 0.4]]
    assert tp.identity != t.identity
    with pytest.raises(ValueError, match="either proba"):
        PrecomputedTeacher(["x"], [0], [1.0], proba=[[1, 0]], classes=LABELS)
    with pytest.raises(ValueError, match="different answers"):
        PrecomputedTeacher(["x", "x"], [0, 1], [1.0, 1.0], classes=LABELS)
    with pytest.raises(ValueError, match="unknown label"):
        PrecomputedTeacher(["x"], ["maybe"], [1.0], classes=LABELS)


# --------------------------------------------------------------------------- label_in_batches


class CountingTeacher:
    """Answers by text length; raises on a chosen batch of a chosen run."""

    classes = LABELS

    def __init__(self, fail_on_call=None, identity="counting-v1"):
        self.asked = []
        self.calls = 0
        self.fail_on_call = fail_on_call
        self.identity = identity

    def label(self, texts):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise ConnectionError("the LLM went away")
        self.asked.extend(texts)
        return TeacherOutput.from_proba(proba_fn(texts))


def test_resume_after_failure_asks_only_for_the_rest(tmp_path):
    texts = [f"text number {i}" + "!" * (i % 5) for i in range(40)]
    db = tmp_path / "answers.sqlite"
    t1 = CountingTeacher(fail_on_call=4)  # batch index 3 raises
    with pytest.raises(TeacherError, match=r"ConnectionError on batch 3 of 5 \(texts 24\.\.31") as ei:
        label_in_batches(t1, texts, batch_size=8, cache=db)
    e = ei.value
    assert isinstance(e.__cause__, ConnectionError) and e.batch_index == 3 and e.n_done == 24
    assert "the LLM went away" in str(e) and "kept in the cache" in str(e)
    assert TeacherCache(db).stats()["rows"] == 24
    t2 = CountingTeacher()
    out = label_in_batches(t2, texts, batch_size=8, cache=db)
    assert len(t2.asked) == 16 and not set(t2.asked) & set(t1.asked)
    ref = TeacherOutput.from_proba(proba_fn(texts))
    np.testing.assert_allclose(out.proba, ref.proba)
    np.testing.assert_array_equal(out.labels, ref.labels)
    t3 = CountingTeacher()
    label_in_batches(t3, texts, batch_size=8, cache=db)
    assert t3.calls == 0


def test_label_in_batches_order_dedupe_and_identity(tmp_path):
    texts = ["bbbb", "a", "bbbb", "cc", "a", "dddddd"]
    t = CountingTeacher()
    out = label_in_batches(t, texts, batch_size=2)
    assert sorted(t.asked) == sorted(set(texts))  # each distinct text once
    assert t.asked == sorted(set(texts), key=len)  # shortest first
    np.testing.assert_allclose(out.proba, proba_fn(texts))
    # Another identity (another model or prompt) does not reuse the answers.
    db = tmp_path / "c.sqlite"
    label_in_batches(CountingTeacher(identity="A"), texts, cache=db)
    tb = CountingTeacher(identity="B")
    label_in_batches(tb, texts, cache=db)
    assert len(tb.asked) == 4
    assert TeacherCache(db).stats()["teachers"] == 2
    # Teachers without identity are not cached (with a warning).
    with pytest.warns(UserWarning, match="not cached"):
        label_in_batches(CallableTeacher(proba_fn, LABELS), texts, cache=db)
    assert TeacherCache(db).stats()["rows"] == 8


def test_label_in_batches_reports_each_answered_batch(tmp_path):
    db = tmp_path / "c.sqlite"
    label_in_batches(CountingTeacher(identity="A"), ["a", "cc"], cache=db)
    seen = []
    out = label_in_batches(
        CountingTeacher(identity="A"),
        ["a", "bbbb", "cc", "dddddd", "eee"],
        batch_size=2,
        cache=db,
        on_batch=lambda texts, o: seen.append((list(texts), o.proba.copy())),
    )
    # Only what the teacher answered (not the cached "a" and "cc"), batch by batch, after caching.
    assert [texts for texts, _ in seen] == [["eee", "bbbb"], ["dddddd"]]
    for texts, proba in seen:
        np.testing.assert_allclose(proba, proba_fn(texts))
    np.testing.assert_allclose(out.proba, proba_fn(["a", "bbbb", "cc", "dddddd", "eee"]))


def test_label_in_batches_input_checks():
    t = CountingTeacher()
    with pytest.raises(ValueError, match="texts is empty"):
        label_in_batches(t, [])
    with pytest.raises(TypeError, match="not a single str"):
        label_in_batches(t, "abc")
    with pytest.raises(TypeError, match=r"texts\[1\] must be str"):
        label_in_batches(t, ["a", None])
    with pytest.raises(ValueError, match="batch_size"):
        label_in_batches(t, ["a"], batch_size=0)
    with pytest.raises(TypeError, match="cache must be"):
        label_in_batches(t, ["a"], cache=3.5)


def test_label_in_batches_with_callable_and_progress(capsys):
    out = label_in_batches(proba_fn, ["a", "bb"], labels=LABELS, progress=True)
    assert out.proba.shape == (2, 2)
    assert "labeling" in capsys.readouterr().err


def test_mixed_proba_and_pairs_give_none(tmp_path):
    db = tmp_path / "c.sqlite"
    label_in_batches(CallableTeacher(proba_fn, LABELS, identity="same"), ["a"], cache=db)
    pair = CallableTeacher(lambda ts: ([1] * len(ts), [0.6] * len(ts)), LABELS, identity="same")
    out = label_in_batches(pair, ["a", "b"], cache=db)
    assert out.proba is None and out.labels.tolist() == [0, 1]  # "a" from the cache


# --------------------------------------------------------------------------- the cache


def test_identity_key_is_stable_across_releases():
    # Cached answers are paid for: a change to this digest orphans every user's cache.
    # Pinned values, computed once; a failure here means old caches would stop matching.
    ident = {"template": "Review: {text}", "model": "m", "n": 1}
    assert identity_key(ident, ["neg", "pos"]) == "46da4aeea7e64f06cd0ffda3e55d7ebac5a946a745e6f6b6c20f46d2c74770fb"
    assert (
        identity_key("counting-v1", ["neg", "pos"])
        == "151bbf799a498b99b744ea7cac8036be16b0b7a571c3756ee2597df220f6ed71"
    )
    # key order and numpy scalars do not matter; the class order does
    assert identity_key({"n": np.int64(1), "model": "m", "template": "Review: {text}"}, ["neg", "pos"]) == identity_key(
        ident, ["neg", "pos"]
    )
    assert identity_key(ident, ["pos", "neg"]) != identity_key(ident, ["neg", "pos"])


def test_cache_roundtrip_clear_stats_pickle(tmp_path):
    c = TeacherCache(tmp_path / "sub" / "c.sqlite")
    key = identity_key({"model": "m"}, LABELS)
    assert key != identity_key({"model": "m"}, ["pos", "neg"]) and identity_key(None, LABELS) is None
    out = TeacherOutput.from_proba([[0.2, 0.8], [0.7, 0.3]])
    c.put(key, ["é unicode ✓", "b"], out)
    got = c.get(key, ["b", "missing", "é unicode ✓"])
    assert set(got) == {0, 2} and got[0][0] == 0 and np.allclose(got[2][2], [0.2, 0.8])
    assert c.get(key, ["b"], n_classes=3) == {}
    assert c.get("other", ["b"]) == {}
    s = c.stats()
    assert s["rows"] == 2 and s["teachers"] == 1 and s["bytes"] > 0
    mode = sqlite3.connect(str(c.path)).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    c2 = pickle.loads(pickle.dumps(c))
    assert c2.stats()["rows"] == 2
    c.put("other", ["z"], TeacherOutput([1], [0.5]))
    assert c.clear(key) == 2 and c.stats()["rows"] == 1
    assert c.clear() == 1 and len(c) == 0
    with pytest.raises(ValueError, match="2 texts but 1 answers"):
        c.put(key, ["a", "b"], TeacherOutput([1], [0.5]))


def test_label_only_answers_that_miss_the_last_class_are_read_back_from_the_cache(tmp_path):
    calls = []

    def fn(texts):  # three classes, but these texts only ever get "a" or "b"
        calls.append(len(texts))
        return ["a" if len(t) % 2 else "b" for t in texts], np.full(len(texts), 0.9)

    texts = [f"text {i}" + "x" * i for i in range(10)]
    teacher = CallableTeacher(fn, ["a", "b", "c"], identity="v1")
    first = label_in_batches(teacher, texts, batch_size=4, cache=tmp_path / "c.sqlite")
    calls.clear()
    again = label_in_batches(teacher, texts, batch_size=4, cache=tmp_path / "c.sqlite")
    assert calls == [] and again.labels.tolist() == first.labels.tolist()
    # a file written before put() took n_classes stored max(label) + 1; those answers still count
    old = TeacherCache(tmp_path / "old.sqlite")
    key = identity_key("v1", ["a", "b", "c"])
    old.put(key, texts[:2], TeacherOutput([1, 0], [0.9, 0.9]))
    assert old._con().execute("SELECT DISTINCT n_classes FROM answers").fetchall() == [(2,)]
    assert sorted(old.get(key, texts[:2], n_classes=3)) == [0, 1]
    assert old.get(key, texts[:2], n_classes=1) == {}


def test_numbers_returned_for_numeric_class_names_are_refused_not_read_as_indices():
    stars = [1, 2, 3, 4, 5]
    teacher = CallableTeacher(lambda b: ([int(t[0]) for t in b], np.full(len(b), 0.9)), stars)
    with pytest.raises(TeacherError, match="could be a name or an index; return the names as str"):
        label_in_batches(teacher, ["1 star", "4 stars"])
    named = CallableTeacher(lambda b: ([t[0] for t in b], np.full(len(b), 0.9)), [str(s) for s in stars])
    assert label_in_batches(named, ["1 star", "4 stars"]).labels.tolist() == [0, 3]
    indices = CallableTeacher(lambda b: ([1, 0], [0.9, 0.9]), [0, 1])  # names 0..C-1: a number is both
    assert label_in_batches(indices, ["a", "b"]).labels.tolist() == [1, 0]


def test_cache_default_path_under_llkd_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLKD_HOME", str(tmp_path / "home"))
    c = TeacherCache()
    assert c.path == tmp_path / "home" / "teacher-cache.sqlite" and c.path.exists()


def test_cache_concurrent_threads(tmp_path):
    c = TeacherCache(tmp_path / "c.sqlite")
    errors = []

    def writer(w):
        try:
            for b in range(10):
                texts = [f"w{w}-b{b}-{i}" for i in range(20)]
                c.put("k", texts, TeacherOutput.from_proba(proba_fn(texts)))
        except Exception as e:  # pragma: no cover
            errors.append(e)

    def reader():
        try:
            for _ in range(30):
                got = c.get("k", [f"w0-b{b}-{i}" for b in range(10) for i in range(20)])
                assert len(got) % 20 == 0  # whole batches only: one transaction per batch
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)] + [
        threading.Thread(target=reader) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert c.stats()["rows"] == 600


def _proc_writer(path, w):
    c = TeacherCache(path)
    for b in range(5):
        texts = [f"p{w}-b{b}-{i}" for i in range(10)]
        c.put("k", texts, TeacherOutput.from_proba(proba_fn(texts)))


def _proc_reader(path, q):
    c = TeacherCache(path)
    ok = True
    for _ in range(20):
        n = len(c.get("k", [f"p0-b{b}-{i}" for b in range(5) for i in range(10)]))
        ok &= n % 10 == 0
    q.put(ok)


def test_cache_concurrent_processes(tmp_path):
    path = str(tmp_path / "c.sqlite")
    TeacherCache(path)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_proc_writer, args=(path, w)) for w in range(2)] + [
        ctx.Process(target=_proc_reader, args=(path, q)) for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert q.get(timeout=5) and q.get(timeout=5)
    assert TeacherCache(path).stats()["rows"] == 100


class _StreamingTeacher:
    """A teacher with ``label_iter`` that answers as ``answer(texts)`` says."""

    classes = ["a", "b"]
    identity = "stream-test"

    def __init__(self, answer):
        self.answer = answer

    def label(self, texts):  # pragma: no cover - the stream is used for texts
        raise AssertionError("label_iter should be used")

    def label_iter(self, texts):
        for t in self.answer(list(texts)):
            yield t, [0.3, 0.7]


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda ts: ts[:-1], "returned 2 answers for 3 texts, none for"),
        (lambda ts: [t for t in ts for _ in range(2)], "answered .* twice"),
        (lambda ts: ts + ["never asked"], "answered 'never asked' without being asked"),
    ],
)
def test_a_streaming_teacher_must_answer_each_text_sent_once(answer, message):
    from llkd._targets import PoolLabeler

    labeler = PoolLabeler(["aa", "b", "ccc"], None, teacher=_StreamingTeacher(answer))
    with pytest.raises(TeacherError, match=message) as info:
        labeler.label(list(labeler.pool))
    kept = info.value.n_done
    assert 1 <= kept <= 3
    # the answers it gave are kept: a teacher that answers properly is asked only about the rest
    again = PoolLabeler(["aa", "b", "ccc"], None, teacher=labeler.teacher)
    labeler.teacher.answer = lambda ts: ts
    again.label(list(again.pool))
    assert again.n_queries == 3 - kept
