"""Frozen-encoder embeddings, memoised per encoder and text, and loaded encoders shared per path.

The frozen-encoder student encodes the same texts in every fit and every predict; a grid
search over it pays the encoder once per fold and candidate. Here embeddings are kept in
memory per (encoder path, text), up to ``MAX_BYTES`` (least recently used first out), and
a loaded encoder is shared by the estimators that name the same path and device. Only
encoders named by a path or the packaged names are memoised: an encoder object of the
user's has no identity to key on.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

MAX_BYTES = 512 * 2**20

_lock = threading.Lock()
_vectors: OrderedDict = OrderedDict()
_nbytes = 0
_encoders: dict = {}


def clear() -> None:
    """Forget every memoised embedding and loaded encoder."""
    global _nbytes
    with _lock:
        _vectors.clear()
        _encoders.clear()
        _nbytes = 0


def shared_encoder(path: str, device, load):
    """The encoder loaded from ``path`` on ``device`` (``load()`` on first use)."""
    key = (str(path), str(device))
    with _lock:
        enc = _encoders.get(key)
    if enc is None:
        enc = load()
        with _lock:
            enc = _encoders.setdefault(key, enc)
    return enc


def encode(path: str, texts, compute) -> np.ndarray:
    """Embeddings of ``texts`` (float32, one row each): memoised rows, ``compute(missing_texts)`` for the rest."""
    global _nbytes
    texts = list(texts)
    out: list = [None] * len(texts)
    missing: dict[str, list[int]] = {}
    with _lock:
        for i, t in enumerate(texts):
            v = _vectors.get((path, t))
            if v is None:
                missing.setdefault(t, []).append(i)
            else:
                _vectors.move_to_end((path, t))
                out[i] = v
    if missing:
        new = np.asarray(compute(list(missing)), dtype=np.float32)
        with _lock:
            for row, (t, where) in zip(new, missing.items()):
                row = row.copy()
                for i in where:
                    out[i] = row
                if (path, t) not in _vectors:
                    _vectors[(path, t)] = row
                    _nbytes += row.nbytes
            while _nbytes > MAX_BYTES and _vectors:
                _, old = _vectors.popitem(last=False)
                _nbytes -= old.nbytes
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack(out)
