"""A durable SQLite cache of teacher answers.

Every answer is stored under ``sha256(teacher identity + classes, text)``, so the same
text asked of the same model with the same prompt and options is never paid for twice,
across runs and processes. Each batch is written in its own transaction as soon as the
teacher returns it: a run that is killed or whose teacher raises keeps what it got.

The database runs in WAL mode (readers never block the writer and see only committed
batches); every thread opens its own connection; the object pickles as its path.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._base import TeacherOutput

__all__ = ["TeacherCache", "default_cache_path", "llkd_home"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    teacher TEXT NOT NULL,
    label INTEGER NOT NULL,
    confidence REAL NOT NULL,
    n_classes INTEGER NOT NULL,
    proba BLOB,
    created REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS answers_teacher ON answers(teacher);
"""

# SQLite's default limit on bound parameters is 999 in old builds.
_CHUNK = 500


def llkd_home() -> Path:
    """``$LLKD_HOME`` if set, else ``~/.cache/llkd``."""
    env = os.environ.get("LLKD_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "llkd"


def default_cache_path() -> Path:
    return llkd_home() / "teacher-cache.sqlite"


def text_key(teacher_key: str, text: str) -> str:
    h = hashlib.sha256()
    h.update(teacher_key.encode("ascii"))
    h.update(b"\0")
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


class TeacherCache:
    """SQLite store of teacher answers.

    Parameters
    ----------
    path : str or Path, optional
        The database file (created with its folder if missing). Default:
        ``$LLKD_HOME/teacher-cache.sqlite`` (``~/.cache/llkd`` without ``LLKD_HOME``).
    timeout : float
        Seconds a writer waits for another process's write lock before failing.

    ``teacher_key`` below is :func:`llkd.teachers.identity_key` of a teacher: a digest of
    its identity (model, prompt template, options) and classes.
    """

    def __init__(self, path=None, timeout: float = 60.0):
        self.path = Path(path) if path is not None else default_cache_path()
        self.timeout = float(timeout)
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._con()
        with con:
            con.executescript(_SCHEMA)

    # -- connections -------------------------------------------------------------
    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None or getattr(self._local, "pid", None) != os.getpid():
            con = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None)
            for attempt in range(50):
                try:
                    con.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError:  # another process is switching modes
                    time.sleep(0.05 * (attempt + 1))
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            self._local.con = con
            self._local.pid = os.getpid()
        return con

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    def __getstate__(self):
        return {"path": str(self.path), "timeout": self.timeout}

    def __setstate__(self, state):
        self.path = Path(state["path"])
        self.timeout = state["timeout"]
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"TeacherCache({str(self.path)!r})"

    # -- reads and writes ----------------------------------------------------------
    def get(self, teacher_key: str, texts: Sequence[str], n_classes: int | None = None):
        """Cached answers: a dict ``index in texts -> (label, confidence, proba or None)``.

        Entries stored with a different number of classes are ignored.
        """
        keys = [text_key(teacher_key, t) for t in texts]
        where: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            where.setdefault(k, []).append(i)
        found: dict[int, tuple] = {}
        con = self._con()
        uniq = list(where)
        for s in range(0, len(uniq), _CHUNK):
            chunk = uniq[s : s + _CHUNK]
            q = ",".join("?" * len(chunk))
            rows = con.execute(
                f"SELECT key, label, confidence, n_classes, proba FROM answers WHERE key IN ({q})",
                chunk,
            ).fetchall()
            for key, label, conf, nc, blob in rows:
                if n_classes is not None and nc != n_classes:
                    continue
                proba = None if blob is None else np.frombuffer(blob, dtype="<f8").astype(np.float64)
                for i in where[key]:
                    found[i] = (int(label), float(conf), proba)
        return found

    def put(self, teacher_key: str, texts: Sequence[str], output: TeacherOutput) -> None:
        """Write one batch of answers in one transaction (replacing older answers)."""
        if len(texts) != len(output):
            raise ValueError(f"{len(texts)} texts but {len(output)} answers")
        now = time.time()
        nc = int(output.proba.shape[1]) if output.proba is not None else int(output.labels.max(initial=0)) + 1
        rows = []
        for i, t in enumerate(texts):
            blob = None
            if output.proba is not None:
                blob = np.ascontiguousarray(output.proba[i], dtype="<f8").tobytes()
            rows.append((text_key(teacher_key, t), teacher_key, int(output.labels[i]),
                         float(output.confidence[i]), nc, blob, now))
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            con.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def clear(self, teacher_key: str | None = None) -> int:
        """Delete every answer (or only those of one teacher); returns how many."""
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            if teacher_key is None:
                n = con.execute("DELETE FROM answers").rowcount
            else:
                n = con.execute("DELETE FROM answers WHERE teacher = ?", (teacher_key,)).rowcount
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        if teacher_key is None:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            con.execute("VACUUM")
        return int(n)

    def stats(self) -> dict:
        """``rows`` (answers), ``teachers`` (distinct identities), ``bytes`` (files on disk)."""
        con = self._con()
        rows = con.execute("SELECT COUNT(*), COUNT(DISTINCT teacher) FROM answers").fetchone()
        size = 0
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                size += p.stat().st_size
        return {"path": str(self.path), "rows": int(rows[0]), "teachers": int(rows[1]), "bytes": int(size)}

    def __len__(self) -> int:
        return self.stats()["rows"]
