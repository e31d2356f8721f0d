"""Acquisition scores of unlabeled inputs from the student's logits (higher: ask the teacher first).

- ``"uncertainty"``: the normalised entropy ``H(softmax(z)) / log C`` of the selection rule.
- ``"margin"``: ``1 - (p_(1) - p_(2))``, one minus the gap between the two most probable classes.
- ``"random"``: uniform draws (the baseline at the same budget).
- ``"diverse"``: the uncertainty, but the batch is taken one per cluster of the candidates'
  features (k-means over the most uncertain candidates), so that near-duplicates are not
  all asked about (see :func:`choose_batch`).
- ``"power"``: the uncertainty, but the batch is a sample without replacement with
  probability proportional to it (stochastic power acquisition, Kirsch et al., TMLR 2023),
  not its top ``k``: the rows the student is least sure of are still favoured, yet a batch
  is not spent wholly on the boundary, where a noisy teacher is wrong most often.
"""

from __future__ import annotations

import numpy as np

from .._numeric import softmax
from ._reference import normalized_entropy

ACQUISITIONS = ("uncertainty", "margin", "random", "diverse", "power")


def pool_uncertainty(logits, *, backend: str = "auto", n_threads: int | None = None):
    """``H(softmax(z)) / log C`` per row of ``logits`` (n, C): the selection step's
    uncertainty, for scoring an unlabeled pool.

    ``backend``: ``"native"`` (the multi-threaded C++ kernel, GIL released),
    ``"numpy"`` (the reference), ``"torch"`` (a torch tensor on any device, CUDA
    included, computed there and returned as a tensor), or ``"auto"`` (torch for a
    tensor, else native when built, else numpy). Non-finite logits raise ValueError.
    """
    if backend not in ("auto", "native", "numpy", "torch"):
        raise ValueError(f"backend must be 'auto', 'native', 'numpy' or 'torch', got {backend!r}")
    is_tensor = type(logits).__module__.startswith("torch")
    if backend == "torch" or (backend == "auto" and is_tensor):
        import torch

        z = torch.as_tensor(logits)
        if z.ndim != 2 or z.shape[1] < 2:
            raise ValueError(f"logits must have shape (n, C) with C >= 2, got {tuple(z.shape)}")
        z = z.double() if z.dtype == torch.float64 else z.float()
        if not bool(torch.isfinite(z).all()):
            raise ValueError("logits contains NaN or infinite values")
        logp = torch.log_softmax(z, dim=1)
        h = -(logp.exp() * logp).sum(1)
        return (h / np.log(z.shape[1])).clamp_(0.0, 1.0)
    z = np.asarray(logits)
    if z.dtype.kind not in "biuf":  # the same on both backends: object arrays were computed natively
        raise TypeError(f"logits must be a numeric array, got dtype {z.dtype}")
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must have shape (n, C) with C >= 2, got {z.shape}")
    from ._backends import native_module

    module = native_module() if backend in ("auto", "native") else None
    if backend == "native" and module is None:
        raise RuntimeError("the native kernel is not built (llkd.show_config())")
    if module is None:
        if not np.isfinite(z).all():
            raise ValueError("logits contains NaN or infinite values")
        return normalized_entropy(z)
    if z.dtype not in (np.float32, np.float64):
        z = z.astype(np.float64)
    from ._selector import default_n_threads

    z = np.require(z, dtype=z.dtype.newbyteorder("="), requirements=("C", "A"))
    return module.pool_uncertainty(z, default_n_threads() if n_threads is None else int(n_threads))


def acquisition_scores(logits: np.ndarray, rule: str, rng=None) -> np.ndarray:
    """One score per row of ``logits`` (shape (n, C), C >= 2); higher is asked first."""
    if rule not in ACQUISITIONS:
        raise ValueError(f"acquisition must be one of {ACQUISITIONS}, got {rule!r}")
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (n, C) with C >= 2, got {logits.shape}")
    if rule == "random":
        return np.random.default_rng(rng).random(len(logits))
    if rule == "margin":
        p = np.sort(softmax(logits), axis=1)
        return 1.0 - (p[:, -1] - p[:, -2])
    return pool_uncertainty(logits)


def choose_batch(scores: np.ndarray, k: int, rule: str, features=None, rng=None, max_clusters: int = 50) -> np.ndarray:
    """Indices of the ``k`` rows to ask about.

    The ``k`` highest scores; for ``"power"``, the top ``k`` of ``log(score) + Gumbel noise``
    (drawn from ``rng``), a sample without replacement with probability proportional to
    the score (rows scored 0 come last); for ``"diverse"``, the ``min(len, 4k)`` most uncertain rows
    are clustered by k-means on their ``features`` into ``min(k, max_clusters)`` groups, and
    each group gives its most uncertain rows in proportion to its size, so that a batch is
    not spent on near-duplicates of one region.
    """
    k = int(min(k, len(scores)))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if rule == "power":
        noise = np.random.default_rng(rng).gumbel(size=len(scores))
        key = np.log(np.maximum(np.asarray(scores, dtype=np.float64), 1e-300)) + noise
        return np.sort(np.argsort(-key, kind="stable")[:k])
    order = np.argsort(-scores, kind="stable")
    if rule != "diverse" or features is None or k == len(scores):
        return np.sort(order[:k])
    from sklearn.cluster import MiniBatchKMeans

    pool = order[: min(len(scores), 4 * k)]
    n_clusters = int(min(k, max_clusters))
    seed = int(np.random.default_rng(rng).integers(2**31 - 1))
    km = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, n_init=1, batch_size=1024)
    assign = km.fit_predict(np.asarray(features, dtype=np.float64)[pool])
    sizes = np.bincount(assign, minlength=n_clusters)
    quota = np.floor(k * sizes / sizes.sum()).astype(int)
    for c in np.argsort(-(k * sizes / sizes.sum() - quota))[: k - quota.sum()]:
        quota[c] += 1  # largest remainders first
    chosen = []
    for c in range(n_clusters):
        members = pool[assign == c]  # already in order of decreasing score
        chosen.extend(members[: quota[c]])
    return np.sort(np.asarray(chosen[:k], dtype=np.int64))
