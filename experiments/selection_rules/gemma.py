"""The good-teacher setting: the packaged Gemma's cached answers (read-only, from the
default SQLite teacher cache that another run fills) for the Rotten Tomatoes training
texts they cover; the pool is those texts (embeddings from the full-pool cache)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np


def cache_path():
    return Path(os.environ.get("LLKD_HOME", Path.home() / ".cache" / "llkd")) / "teacher-cache.sqlite"


def gemma_pool(train_texts, n_classes=2):
    """(rows of train_texts with an answer, their proba [n, C], teacher key)."""
    from llkd.teachers._cache import text_key

    con = sqlite3.connect(f"file:{cache_path()}?mode=ro", uri=True, timeout=30)
    try:
        best = None
        for (tk,) in con.execute("SELECT DISTINCT teacher FROM answers").fetchall():
            keys = [text_key(tk, t) for t in train_texts]
            found = {}
            for s in range(0, len(keys), 500):
                chunk = keys[s : s + 500]
                q = ",".join("?" * len(chunk))
                for k, blob, nc in con.execute(f"SELECT key, proba, n_classes FROM answers WHERE key IN ({q})", chunk):
                    if blob is not None and nc == n_classes:
                        found[k] = np.frombuffer(blob, dtype="<f8").astype(np.float64)
            rows = [i for i, k in enumerate(keys) if k in found]
            if best is None or len(rows) > len(best[0]):
                best = (np.array(rows), np.stack([found[keys[i]] for i in rows]) if rows else None, tk)
        return best
    finally:
        con.close()
