"""Torch threads for the MLP student: predict_proba and fit time at 1 thread and at torch's count.

The estimator's default (``n_threads=None``) runs the MLP student's work on one torch thread
in a thread of its own, leaving the caller's count alone. This script measures that choice
against the caller's count (torch's default: the cores) in the same run, on synthetic
features of the packaged MiniLM's width, and prints the ratios.

    python benchmarks/bench_predict_threads.py            # 200,000 rows
    python benchmarks/bench_predict_threads.py --quick    # 20,000 rows
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from llkd import LLKDClassifier


def _best(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20,000 rows, 2 repeats")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    n = 20_000 if args.quick else args.rows
    repeats = 2 if args.quick else args.repeats
    rng = np.random.default_rng(0)
    X_fit = rng.normal(size=(2_000, 384)).astype(np.float32)
    y_fit = (X_fit[:, :8].sum(1) > 0).astype(int)
    X = rng.normal(size=(n, 384)).astype(np.float32)
    cores = torch.get_num_threads()
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {cores} torch threads, "
        f"load average {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d')}"
    )
    rows = []
    for label, n_threads in [("default (1 thread, own thread)", None), (f"caller's count ({cores})", cores)]:
        clf = LLKDClassifier(max_epochs=5, random_state=0, n_threads=n_threads)
        fit_best, fit_med = _best(lambda c=clf: c.fit(X_fit, y_fit), repeats)
        pred_best, pred_med = _best(lambda c=clf: c.predict_proba(X), repeats)
        rows.append((label, fit_best, fit_med, pred_best, pred_med))
    print(f"| n_threads | fit 2,000 rows x 5 epochs, best / median (s) | predict_proba {n:,} rows, best / median (s) |")
    print("|---|---:|---:|")
    for label, fb, fm, pb, pm in rows:
        print(f"| {label} | {fb:.3f} / {fm:.3f} | {pb:.3f} / {pm:.3f} |")
    print(
        f"caller's count / default: fit {rows[1][1] / rows[0][1]:.2f}x, predict {rows[1][3] / rows[0][3]:.2f}x "
        "(best of repeats; > 1 means the default is faster)"
    )


if __name__ == "__main__":
    main()
