"""Checks of what a user passes to the estimator (X, y, device), with messages that name it.

Every check raises a ``ValueError`` or ``TypeError`` that names the argument, the first
offending element and what was wrong (design document, "Bad input"), before torch or
scikit-learn can fail on it with a message about something the user never passed.
"""

from __future__ import annotations

import numpy as np

_FLOAT32_MAX = float(np.finfo(np.float32).max)
DEVICE_TYPES = ("cpu", "cuda", "mps")
_ALLOWED_DEVICES = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _empty(purpose: str, kind: str) -> ValueError:
    return ValueError(f"X is empty (0 samples, {kind}): {purpose} needs at least one sample")


def _holds_text(X) -> bool:
    """Whether a 2-D array or data frame holds strings (its first cell is a str)."""
    dtype = getattr(X, "dtype", None)
    if dtype is None and hasattr(X, "dtypes"):  # a data frame
        dtype = X.dtypes.iloc[0]
    if dtype is None or getattr(dtype, "kind", "O") not in "OUST":
        return False
    try:
        first = X.iloc[0, 0] if hasattr(X, "iloc") else X[0, 0]
    except (IndexError, TypeError, KeyError):
        return False
    return isinstance(first, (str, bytes))


def texts_or_features(X, *, purpose: str = "fit"):
    """``(X, is_text)``: texts as a list of str, anything else returned for ``validate_data``.

    Iterables without a length (generators, ``map`` objects) are materialised once.
    A single string, an empty sequence, and a sequence that mixes texts with other
    values are refused, naming the first element that is not a str and its index.
    """
    if isinstance(X, (str, bytes)):
        raise TypeError(
            f"X must be a sequence of texts or a 2-D array of features, got a single "
            f"{'string' if isinstance(X, str) else 'bytes object'}; wrap it in a list"
        )
    ndim = getattr(X, "ndim", None)
    if ndim == 2 and getattr(X, "shape", (0, 0))[1] == 1 and _holds_text(X):
        raise ValueError(
            f"X is a table of one text column (shape {X.shape}); pass the texts as a 1-D sequence, "
            "e.g. df['text'] or X[:, 0]"
        )
    if ndim is not None and ndim != 1:
        return X, False  # arrays, DataFrames, sparse matrices: validate_data's job
    if ndim == 1 and hasattr(X, "dtype"):
        if len(X) == 0:
            raise _empty(purpose, f"an empty {type(X).__name__}")
        if X.dtype.kind not in "OUS":
            return X, False  # a 1-D numeric array: validate_data asks for 2-D
        seq = X.tolist()
    elif isinstance(X, list):
        seq = X
    else:
        try:
            seq = list(X)
        except TypeError:
            return X, False  # not iterable (a scalar, None): validate_data names it
    if len(seq) == 0:
        raise _empty(purpose, f"an empty {type(X).__name__}")
    if not any(isinstance(x, (str, bytes)) for x in seq):
        return seq, False  # rows of numbers
    for i, x in enumerate(seq):
        if not isinstance(x, str):
            hint = ": decode it to str" if isinstance(x, bytes) else ""
            what = "None" if x is None else f"{type(x).__name__} ({_short(x)})"
            raise TypeError(
                f"X[{i}] is {what}{hint}; X must be all texts (str) "
                f"or a 2-D numeric array, and X[{i}] is its first element that is not a str"
            )
    return seq, True


def check_float32_range(X, name: str = "X") -> None:
    """Refuse finite values that the float32 student would turn into infinities."""
    arr = np.asarray(X)
    if arr.dtype.kind != "f" or arr.dtype.itemsize <= 4 or arr.size == 0:
        return
    big = np.abs(arr) > _FLOAT32_MAX
    if big.any():
        where = tuple(int(i) for i in np.argwhere(big)[0])
        index = ", ".join(map(str, where))
        raise ValueError(
            f"{name} has {int(big.sum())} value(s) too large for float32, in which the student "
            f"computes: {name}[{index}] = {arr[where]:g}, the largest magnitude allowed is "
            f"{_FLOAT32_MAX:.4g}. Scale the features (e.g. StandardScaler) first"
        )


def check_embeddings(embeddings: np.ndarray, name: str = "X") -> np.ndarray:
    """Refuse NaN or infinite sentence embeddings, naming the first text that got one."""
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"the encoder returned NaN or infinite embeddings for {int(bad.sum())} of "
            f"{len(embeddings)} texts of {name}, the first for {name}[{i}]; check the encoder"
        )
    return embeddings


def check_outputs(logits, name: str = "X", *, texts: bool = False) -> None:
    """Refuse non-finite student outputs (a CPU tensor or an array): finite features too large for
    the weights, or broken weights."""
    bad = ~np.isfinite(np.asarray(logits)).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        why = (
            "the student's weights overflow on them (a model whose saved weights were altered, or a diverged fit)"
            if texts
            else "its values are too large in magnitude for the student; scale the features"
        )
        raise ValueError(
            f"the student's outputs are NaN or infinite for {int(bad.sum())} row(s) of {name}, "
            f"the first {name}[{i}]: {why}"
        )


def resolve_device(device):
    """The ``torch.device`` for the ``device`` parameter, or a ValueError naming it."""
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be a str ({_ALLOWED_DEVICES}), got {type(device).__name__}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"device={device!r} is not a device: use {_ALLOWED_DEVICES}") from exc
    if dev.type not in DEVICE_TYPES:
        raise ValueError(f"device={device!r} is not supported: use {_ALLOWED_DEVICES}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was requested but torch sees no CUDA device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} was requested but torch sees {torch.cuda.device_count()} CUDA device(s)"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} was requested but torch sees no MPS device")
    return dev


def labeled_rows(X, y, classes, sample_weight=None):
    """``(X, y, sample_weight)`` restricted to the rows whose label is not -1 / None.

    ``y`` comes back as values of ``classes`` (so that it compares equal to
    ``predict``'s output whatever dtype the user passed). A label outside ``classes``,
    a length mismatch, or no labeled row at all raise a ValueError.
    """
    from sklearn.utils import _safe_indexing

    from ._targets import encode_gold, unlabeled_mask

    X, _ = texts_or_features(X, purpose="score")
    if isinstance(y, (str, bytes)) or y is None:
        raise TypeError(f"y must be a sequence of labels, got {type(y).__name__}")
    y_obj = np.asarray(y if hasattr(y, "__len__") else list(y), dtype=object)
    if y_obj.ndim == 2 and y_obj.shape[1] == 1:
        y_obj = y_obj[:, 0]
    if y_obj.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {y_obj.shape}")
    n = X.shape[0] if hasattr(X, "shape") else len(X)
    if len(y_obj) != n:
        raise ValueError(f"X has {n} rows but y has {len(y_obj)} entries")
    rows = np.flatnonzero(~unlabeled_mask(y_obj))
    if rows.size == 0:
        raise ValueError(
            f"y has no labeled rows: all {n} are -1 or None (unlabeled); score needs at least one gold label"
        )
    y_idx = encode_gold(y_obj[rows], np.asarray(classes))
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight)
        if sample_weight.shape != (n,):
            raise ValueError(
                f"sample_weight must have shape ({n},), one weight per row of X; got {sample_weight.shape}"
            )
        sample_weight = sample_weight[rows]
    if rows.size < n:
        X = _safe_indexing(X, rows)
    return X, np.asarray(classes)[y_idx], sample_weight
