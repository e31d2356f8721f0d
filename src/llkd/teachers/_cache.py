"""A durable SQLite cache of teacher answers.

Every answer is stored under ``sha256(teacher identity + classes, text)``, so the same
text asked of the same model with the same prompt and options is never paid for twice,
across runs and processes. Each batch is written in its own transaction as soon as the
teacher returns it: a run that is killed or whose teacher raises keeps what it got.

The database runs in WAL mode (readers never block the writer and see only committed
batches); every thread opens its own connection; the object pickles as its path.

Processes that share a cache share the work: before asking the teacher, a process
*claims* the texts of a batch (the ``claims`` table: text key, owner, lease expiry); texts
another live process has claimed are left to it and waited for, and read from the cache
once answered. A claim is renewed while its owner works and lapses ``lease`` seconds
after its owner stops (killed, or crashed), when another process takes it over. Caches
written before claims existed are read as they are (the table is added).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ._base import TeacherOutput

__all__ = ["TeacherCache", "default_cache_path", "llkd_home"]

logger = logging.getLogger("llkd.teachers.cache")

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
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    teacher TEXT NOT NULL,
    owner TEXT NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS claims_owner ON claims(owner);
"""
_COLUMNS = {
    "answers": {"key", "teacher", "label", "confidence", "n_classes", "proba", "created"},
    "claims": {"key", "teacher", "owner", "expires"},
}

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
    lease : float
        Seconds a claim on texts outlives its owner's last sign of life (the owner renews
        it every third of that while it works): how long other processes wait before
        taking over the texts of a killed one.

    ``teacher_key`` below is :func:`llkd.teachers.identity_key` of a teacher: a digest of
    its identity (model, prompt template, options) and classes.
    """

    def __init__(self, path=None, timeout: float = 60.0, lease: float = 60.0):
        self.path = Path(path) if path is not None else default_cache_path()
        self.timeout = float(timeout)
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not lease > 0 or lease == float("inf"):
            raise ValueError(f"lease must be a positive number of seconds, got {lease!r}")
        self.lease = float(lease)
        self._local = threading.local()
        if self.path.is_dir():
            raise ValueError(
                f"teacher cache {self.path} is a directory: give the path of a cache file, "
                f"e.g. {self.path / 'teacher-cache.sqlite'}"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._errors("open"):
            con = self._con()
            tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "answers" not in tables:
                raise ValueError(
                    f"teacher cache {self.path} is an SQLite database of another kind (tables "
                    f"{sorted(tables)!r}, no 'answers'): give the path of an llkd cache or of a new file"
                )
            for table, want in _COLUMNS.items():
                if table in tables:
                    have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
                    if have != want:
                        raise ValueError(
                            f"teacher cache {self.path}: table {table!r} has columns {sorted(have)!r}, "
                            f"expected {sorted(want)!r}; it is not an llkd cache (or was altered)"
                        )
            with con:
                con.executescript(_SCHEMA)

    @contextmanager
    def _errors(self, action: str):
        """sqlite3 errors (other than a busy database) as ValueErrors that name the file."""
        try:
            yield
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise
            raise ValueError(f"teacher cache {self.path}: cannot {action} it: {e}") from e
        except sqlite3.DatabaseError as e:
            raise ValueError(
                f"teacher cache {self.path} is not a usable SQLite database ({e}); "
                "give another path, or delete the file"
            ) from e

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
        return {"path": str(self.path), "timeout": self.timeout, "lease": self.lease}

    def __setstate__(self, state):
        self.path = Path(state["path"])
        self.timeout = state["timeout"]
        self.lease = state.get("lease", 60.0)
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
        uniq = list(where)
        with self._errors("read"):
            con = self._con()
            for s in range(0, len(uniq), _CHUNK):
                chunk = uniq[s : s + _CHUNK]
                q = ",".join("?" * len(chunk))
                rows = con.execute(
                    f"SELECT key, label, confidence, n_classes, proba FROM answers WHERE key IN ({q})",
                    chunk,
                ).fetchall()
                for key, label, conf, nc, blob in rows:
                    if isinstance(nc, int) and n_classes is not None and nc != n_classes:
                        if blob is not None or nc > n_classes:
                            continue
                        nc = n_classes  # a label-only answer once stored max(label) + 1 here
                    ans = self._check_row(key, label, conf, nc, blob)
                    for i in where[key]:
                        found[i] = ans
        return found

    def _check_row(self, key, label, conf, nc, blob) -> tuple:
        """A stored answer as (label, confidence, proba or None); ValueError if it is damaged."""

        def bad(what):
            return ValueError(
                f"teacher cache {self.path}: the answer stored under key {key} is damaged "
                f"({what}); delete that row or the file, and its text will be asked again"
            )

        if not isinstance(nc, int) or isinstance(nc, bool) or nc < 1:
            raise bad(f"n_classes is {nc!r}")
        if not isinstance(label, int) or not 0 <= label < nc:
            raise bad(f"label {label!r} is not a class index below n_classes={nc}")
        if not isinstance(conf, (int, float)) or not 0.0 <= conf <= 1.0:
            raise bad(f"confidence {conf!r} is not a number in [0, 1]")
        proba = None
        if blob is not None:
            if not isinstance(blob, bytes) or len(blob) != 8 * nc:
                size = len(blob) if isinstance(blob, (bytes, str)) else type(blob).__name__
                raise bad(f"proba holds {size} bytes, not {nc} float64 values")
            proba = np.frombuffer(blob, dtype="<f8").astype(np.float64)
            if not (np.isfinite(proba).all() and (proba >= 0).all() and abs(proba.sum() - 1.0) <= 1e-3):
                raise bad(f"proba {proba.tolist()} is not a probability distribution")
        return (int(label), float(conf), proba)

    def put(self, teacher_key: str, texts: Sequence[str], output: TeacherOutput, n_classes: int | None = None) -> None:
        """Write one batch of answers in one transaction (replacing older answers).

        ``n_classes`` is the teacher's number of classes; it is needed where ``output`` has
        labels only (no ``proba``), and otherwise read from ``proba``.
        """
        if len(texts) != len(output):
            raise ValueError(f"{len(texts)} texts but {len(output)} answers")
        now = time.time()
        if output.proba is not None:
            nc = int(output.proba.shape[1])
        elif n_classes is not None:
            nc = int(n_classes)
        else:  # at least max(label) + 1; get() reads such answers for any larger class count
            nc = int(output.labels.max(initial=0)) + 1
        rows = []
        for i, t in enumerate(texts):
            blob = None
            if output.proba is not None:
                blob = np.ascontiguousarray(output.proba[i], dtype="<f8").tobytes()
            rows.append(
                (
                    text_key(teacher_key, t),
                    teacher_key,
                    int(output.labels[i]),
                    float(output.confidence[i]),
                    nc,
                    blob,
                    now,
                )
            )
        with self._errors("write"):
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
                con.execute("DELETE FROM claims")
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

    # -- sharing the work between processes --------------------------------------------
    @staticmethod
    def new_owner() -> str:
        """A name for one labelling run: host, process id and a random part."""
        return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"

    def _answered_keys(self, con, keys: list[str]) -> set[str]:
        out: set[str] = set()
        for s in range(0, len(keys), _CHUNK):
            chunk = keys[s : s + _CHUNK]
            q = ",".join("?" * len(chunk))
            out.update(k for (k,) in con.execute(f"SELECT key FROM answers WHERE key IN ({q})", chunk))
        return out

    def claim(self, teacher_key: str, texts: Sequence[str], owner: str, lease_s: float | None = None) -> list[str]:
        """Claim ``texts`` for ``owner``; returns those it now holds, which it should ask.

        Left out: texts already answered, and texts another owner holds with an unexpired
        lease. A lapsed claim (its owner stopped renewing it) is taken over. One
        transaction, so two processes never both get a text.
        """
        lease_s = self.lease if lease_s is None else float(lease_s)
        keys: dict[str, str] = {}
        for t in texts:
            keys.setdefault(text_key(teacher_key, t), t)
        ks = list(keys)
        mine: list[str] = []
        with self._errors("claim texts in"):
            con = self._con()
            con.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                answered = self._answered_keys(con, ks)
                held: dict[str, tuple] = {}
                for s in range(0, len(ks), _CHUNK):
                    chunk = ks[s : s + _CHUNK]
                    q = ",".join("?" * len(chunk))
                    for k, o, exp in con.execute(f"SELECT key, owner, expires FROM claims WHERE key IN ({q})", chunk):
                        held[k] = (o, exp)
                rows = []
                for k in ks:
                    if k in answered:
                        continue
                    if k in held and held[k][0] != owner and held[k][1] > now:
                        continue
                    rows.append((k, teacher_key, owner, now + lease_s))
                    mine.append(keys[k])
                con.executemany("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?)", rows)
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        return mine

    def release(self, teacher_key: str, texts: Sequence[str] | None, owner: str) -> None:
        """Drop ``owner``'s claims on ``texts`` (all of its claims when ``texts`` is None)."""
        with self._errors("release claims in"):
            con = self._con()
            if texts is None:
                con.execute("DELETE FROM claims WHERE owner = ?", (owner,))
                return
            ks = list({text_key(teacher_key, t) for t in texts})
            for s in range(0, len(ks), _CHUNK):
                chunk = ks[s : s + _CHUNK]
                q = ",".join("?" * len(chunk))
                con.execute(f"DELETE FROM claims WHERE owner = ? AND key IN ({q})", [owner, *chunk])

    def renew(self, owner: str, lease_s: float | None = None) -> None:
        """Extend every claim of ``owner`` by a lease from now."""
        lease_s = self.lease if lease_s is None else float(lease_s)
        with self._errors("renew claims in"):
            self._con().execute("UPDATE claims SET expires = ? WHERE owner = ?", (time.time() + lease_s, owner))

    def wait_for(
        self, teacher_key: str, texts: Sequence[str], owner: str, lease_s: float | None = None, poll_s: float = 0.2
    ) -> list[str]:
        """Wait until other owners answered ``texts`` or let their claims lapse.

        Returns the texts now claimed by ``owner`` (to be asked by it) as soon as there
        are any, or ``[]`` once every text is answered.
        """
        pending = list(dict.fromkeys(texts))
        lease_s = self.lease if lease_s is None else float(lease_s)
        wait = poll_s
        while pending:
            keys = [text_key(teacher_key, t) for t in pending]
            with self._errors("read"):  # read-only first: polling takes no write lock
                con = self._con()
                answered = self._answered_keys(con, keys)
                now = time.time()
                held: set[str] = set()
                for s in range(0, len(keys), _CHUNK):
                    chunk = keys[s : s + _CHUNK]
                    q = ",".join("?" * len(chunk))
                    held.update(
                        k
                        for (k,) in con.execute(
                            f"SELECT key FROM claims WHERE key IN ({q}) AND owner != ? AND expires > ?",
                            [*chunk, owner, now],
                        )
                    )
            free = [t for t, k in zip(pending, keys) if k not in answered and k not in held]
            if free and (mine := self.claim(teacher_key, free, owner, lease_s)):
                return mine
            pending = [t for t, k in zip(pending, keys) if k not in answered]
            if pending:
                time.sleep(wait)
                wait = min(2.0, wait * 1.5)
        return []

    def share(
        self,
        teacher_key: str,
        texts: Sequence[str],
        batch_size: int,
        *,
        owner: str | None = None,
        lease_s: float | None = None,
        poll_s: float = 0.2,
        hold: bool = False,
    ) -> Iterator[list[str]]:
        """Batches of ``texts`` for this process to ask, shared with other processes.

        Each batch is claimed before it is yielded, and its claims are renewed in the
        background while the caller asks it; the caller ``put``s its answers before asking
        for the next batch. With ``hold=True`` (a caller that asks the next batch while
        the last is still in flight) claims are kept until the generator closes. Texts
        other processes hold are skipped, then waited for at
        the end (and taken over if their claim lapses); read them from the cache after
        the loop. Closing the generator (or an exception in the caller's loop, once the
        generator is collected) releases this owner's claims.
        """
        owner = owner or self.new_owner()
        lease_s = self.lease if lease_s is None else float(lease_s)
        stop = threading.Event()

        def heartbeat():
            try:
                while not stop.wait(lease_s / 3):
                    self.renew(owner, lease_s)
            except Exception as e:  # noqa: BLE001  # pragma: no cover - a lapsed lease costs a repeat, never an answer
                logger.warning("%s: could not renew the claims of %s: %s", self.path, owner, e)
            finally:
                self.close()

        beat = threading.Thread(target=heartbeat, name="llkd-cache-lease", daemon=True)
        beat.start()
        try:
            todo = list(dict.fromkeys(texts))
            deferred: list[str] = []
            pos = 0
            while pos < len(todo):
                batch: list[str] = []
                while len(batch) < batch_size and pos < len(todo):
                    cand = todo[pos : pos + batch_size - len(batch)]
                    pos += len(cand)
                    got = set(self.claim(teacher_key, cand, owner, lease_s))
                    batch += [t for t in cand if t in got]
                    deferred += [t for t in cand if t not in got]
                if batch:
                    yield batch
                    if not hold:
                        self.release(teacher_key, batch, owner)
            while deferred:
                mine = self.wait_for(teacher_key, deferred, owner, lease_s, poll_s)
                if not mine:  # all answered by others
                    break
                taken = set(mine)
                deferred = [t for t in deferred if t not in taken]
                for s in range(0, len(mine), batch_size):
                    batch = mine[s : s + batch_size]
                    yield batch
                    if not hold:
                        self.release(teacher_key, batch, owner)
        finally:
            stop.set()
            self.release(teacher_key, None, owner)
