"""Processes sharing one teacher cache pay once per text (claims with leases in TeacherCache)."""

import multiprocessing as mp
import os
import sqlite3
import time

import numpy as np
import pytest

from llkd.teachers import CallableTeacher, TeacherCache, identity_key, label_in_batches

LABELS = ["neg", "pos"]
IDENT = "counting-sharing-v1"


class LoggingFn:
    """A teacher function that appends every text it is asked to a log file (one line each)."""

    def __init__(self, log, delay=0.0):
        self.log, self.delay = str(log), delay

    def __call__(self, texts):
        time.sleep(self.delay * len(texts))
        with open(self.log, "a") as f:
            f.writelines(t + "\n" for t in texts)
        p = np.array([(len(t) % 7 + 1) / 9 for t in texts])
        return np.stack([1 - p, p], axis=1)


def asked(log):
    return open(log).read().splitlines() if os.path.exists(log) else []


def _fit_like(path, log, texts, q):
    out = label_in_batches(
        CallableTeacher(LoggingFn(log, delay=0.03), LABELS, identity=IDENT),
        texts,
        batch_size=8,
        cache=TeacherCache(path, lease=5.0),
    )
    q.put(out.proba.tolist())


def test_two_processes_on_one_cache_pay_once_per_text(tmp_path):
    path, log = str(tmp_path / "c.sqlite"), str(tmp_path / "asked.log")
    TeacherCache(path)
    texts = [f"text number {i} " + "x" * (i % 13) for i in range(120)] * 2  # duplicates too
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_fit_like, args=(path, log, texts, q)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = asked(log)
    assert len(lines) == len(set(texts)) and set(lines) == set(texts)  # each distinct text asked once
    expected = LoggingFn(log)(texts)
    for r in results:
        np.testing.assert_allclose(r, expected)
    con = sqlite3.connect(path)
    assert con.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0  # nothing left claimed


def _claim_and_die(path, texts, q):
    c = TeacherCache(path)
    key = identity_key(IDENT, LABELS)
    q.put(c.claim(key, texts, c.new_owner(), lease_s=1.0))
    q.close()
    q.join_thread()
    os._exit(0)  # killed: no release, no answers


def test_a_dead_owner_claim_lapses_and_is_taken_over(tmp_path):
    path, log = str(tmp_path / "c.sqlite"), str(tmp_path / "asked.log")
    texts = [f"t{i}" for i in range(10)]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_claim_and_die, args=(path, texts[:6], q))
    p.start()
    assert q.get(timeout=60) == texts[:6]
    p.join(60)
    con = sqlite3.connect(path)
    assert con.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 6
    out = label_in_batches(
        CallableTeacher(LoggingFn(log), LABELS, identity=IDENT),
        texts,
        batch_size=4,
        cache=TeacherCache(path, lease=1.0),
    )
    assert sorted(asked(log)) == sorted(texts)  # the 4 free ones at once, the 6 once the lease lapsed
    np.testing.assert_allclose(out.proba, LoggingFn(log)(texts))
    assert con.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0


def test_claim_release_and_wait_for(tmp_path):
    c = TeacherCache(tmp_path / "c.sqlite", lease=30.0)
    k = identity_key(IDENT, LABELS)
    a, b = c.new_owner(), c.new_owner()
    assert c.claim(k, ["x", "y", "x"], a) == ["x", "y"]
    assert c.claim(k, ["x", "y", "z"], b) == ["z"]  # x, y are a's
    assert c.claim(k, ["x"], a) == ["x"]  # an owner may renew its own claim
    from llkd.teachers import TeacherOutput

    c.put(k, ["x"], TeacherOutput.from_proba(np.array([[0.2, 0.8]])))
    assert c.claim(k, ["x"], b) == []  # answered: nothing to ask
    c.release(k, ["y"], a)
    assert c.wait_for(k, ["x", "y"], b, poll_s=0.01) == ["y"]  # released by a: b takes it
    assert c.wait_for(k, ["x"], b) == []  # answered: no wait
    with pytest.raises(ValueError, match="lease"):
        TeacherCache(tmp_path / "c.sqlite", lease=0)


def test_a_teacher_failure_releases_the_claims(tmp_path):
    path = tmp_path / "c.sqlite"

    def broken(texts):
        raise RuntimeError("the LLM went away")

    with pytest.raises(RuntimeError, match="went away"):
        label_in_batches(CallableTeacher(broken, LABELS, identity=IDENT), ["a", "b"], cache=path)
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0


def test_old_cache_files_are_read_and_gain_the_claims_table(tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE answers (key TEXT PRIMARY KEY, teacher TEXT NOT NULL, label INTEGER NOT NULL,
            confidence REAL NOT NULL, n_classes INTEGER NOT NULL, proba BLOB, created REAL NOT NULL) WITHOUT ROWID;
        CREATE INDEX answers_teacher ON answers(teacher);
    """)
    k = identity_key(IDENT, LABELS)
    from llkd.teachers._cache import text_key

    con.execute(
        "INSERT INTO answers VALUES (?, ?, 1, 0.75, 2, ?, 0)",
        (text_key(k, "old"), k, np.array([0.25, 0.75], "<f8").tobytes()),
    )
    con.commit()
    con.close()
    c = TeacherCache(path)
    assert c.get(k, ["old"])[0][:2] == (1, 0.75)
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"answers", "claims"}
