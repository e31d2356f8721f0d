"""Broken teacher caches give ValueErrors that name the file and what is wrong."""

import sqlite3

import numpy as np
import pytest

from llkd.teachers import (
    CallableTeacher,
    TeacherCache,
    TeacherOutput,
    identity_key,
    label_in_batches,
)
from llkd.teachers._cache import text_key

LABELS = ["neg", "pos"]
KEY = identity_key("errors-v1", LABELS)


def fn(texts):
    return np.tile([0.3, 0.7], (len(texts), 1))


def test_a_directory(tmp_path):
    with pytest.raises(ValueError, match=rf"{tmp_path}.* is a directory"):
        TeacherCache(tmp_path)
    with pytest.raises(ValueError, match="is a directory"):
        label_in_batches(CallableTeacher(fn, LABELS, identity="errors-v1"), ["a"], cache=tmp_path)


def test_another_sqlite_database_is_left_alone(tmp_path):
    path = tmp_path / "shop.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE orders (id INTEGER, item TEXT)")
    con.commit()
    con.close()
    with pytest.raises(ValueError, match=r"shop\.db is an SQLite database of another kind.*orders"):
        TeacherCache(path)
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"orders"}  # not modified


def test_an_answers_table_of_another_shape(tmp_path):
    path = tmp_path / "c.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE answers (key TEXT, value TEXT)")
    con.commit()
    con.close()
    with pytest.raises(ValueError, match=r"c\.sqlite: table 'answers' has columns \['key', 'value'\]"):
        TeacherCache(path)


def test_a_file_that_is_not_sqlite(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("just some text, long enough to fill a page header? " * 40)
    with pytest.raises(ValueError, match=r"notes\.txt is not a usable SQLite database"):
        TeacherCache(path)


def _tamper(path, text, sql, *args):
    c = TeacherCache(path)
    c.put(KEY, [text], TeacherOutput.from_proba(np.array([[0.3, 0.7]])))
    con = sqlite3.connect(path)
    con.execute(sql, (*args, text_key(KEY, text)))
    con.commit()
    con.close()
    return TeacherCache(path)


@pytest.mark.parametrize(
    "sql, args, words",
    [
        ("UPDATE answers SET proba = ? WHERE key = ?", (b"garbage",), "proba holds 7 bytes"),
        ("UPDATE answers SET proba = ? WHERE key = ?", ("{not json",), "proba holds 9 bytes"),
        ("UPDATE answers SET proba = ? WHERE key = ?", (np.array([0.9, 0.9]).tobytes(),), "not a probability"),
        ("UPDATE answers SET proba = ? WHERE key = ?", (np.array([np.nan, 1.0]).tobytes(),), "not a probability"),
        ("UPDATE answers SET label = ? WHERE key = ?", (7,), "label 7 is not a class index"),
        ("UPDATE answers SET label = ? WHERE key = ?", ("pos",), "label 'pos'"),
        ("UPDATE answers SET confidence = ? WHERE key = ?", (1.5,), "confidence 1.5"),
        ("UPDATE answers SET confidence = ? WHERE key = ?", ("high",), "confidence 'high'"),
        ("UPDATE answers SET n_classes = ? WHERE key = ?", ("two",), "n_classes is 'two'"),
    ],
)
def test_tampered_rows_name_the_cache_and_the_fault(tmp_path, sql, args, words):
    path = tmp_path / "c.sqlite"
    c = _tamper(path, "a", sql, *args)
    with pytest.raises(ValueError, match="teacher cache .*c\\.sqlite.*damaged") as ei:
        c.get(KEY, ["a"])
    assert words in str(ei.value)
    with pytest.raises(ValueError, match=words.replace("[", r"\[")):
        label_in_batches(CallableTeacher(fn, LABELS, identity="errors-v1"), ["a", "b"], cache=c)
