"""What a grid search over the frozen-encoder student costs with and without memoised embeddings.

``GridSearchCV(LLKDClassifier(student="mlp"), 4 candidates, cv=3)`` on ``--n`` movie
reviews, in one process (``n_jobs=1``), once with the embedding memo (the default: each
text is encoded once per encoder) and once with it emptied after every call (every fit and
every scoring encodes its texts again, as before the memo). 30 % of the rows carry gold
labels (``None`` marks the others), which score the search; a ``PrecomputedTeacher`` labels
the rest.

    python benchmarks/bench_grid_embeddings.py            # 2,000 reviews
    python benchmarks/bench_grid_embeddings.py --quick    # 300 reviews
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch


def main(argv=None):
    from sklearn.model_selection import GridSearchCV

    from llkd import LLKDClassifier, _embeddings
    from llkd.datasets import fetch_rotten_tomatoes
    from llkd.teachers import PrecomputedTeacher

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    n = 300 if args.quick else args.n
    data = fetch_rotten_tomatoes(subset="train")
    idx = np.random.RandomState(0).permutation(len(data.data))[:n]
    X = [data.data[i] for i in idx]
    names = list(data.target_names)
    y = np.asarray(names)[data.target[idx]]
    teacher = PrecomputedTeacher(X, proba=np.eye(2)[data.target[idx]] * 0.8 + 0.1, classes=names)
    grid = {"hidden_size": [64, 256], "dropout": [0.0, 0.2]}
    partial = np.where(np.random.RandomState(1).random_sample(n) < 0.3, y, None).astype(object)
    print(
        f"# {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}; {n} reviews, 4 candidates x 3 folds + refit"
    )
    print("| embeddings | wall s | best score |")
    print("|---|---:|---:|")
    saved = _embeddings.MAX_BYTES
    for label, limit in [("memoised (default)", saved), ("recomputed every call", 0)]:
        _embeddings.clear()
        _embeddings.MAX_BYTES = limit
        try:
            search = GridSearchCV(
                LLKDClassifier(teacher, student="mlp", max_epochs=5, random_state=0), grid, cv=3, n_jobs=1
            )
            t0 = time.perf_counter()
            search.fit(X, partial)  # 30 % gold rows (the scored ones), the rest from the teacher
            wall = time.perf_counter() - t0
        finally:
            _embeddings.MAX_BYTES = saved
        print(f"| {label} | {wall:.1f} | {search.best_score_:.3f} |", flush=True)


if __name__ == "__main__":
    main()
