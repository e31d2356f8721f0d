"""Rounds and final epochs of a teacher budget, with the demo's fine-tuned student.

Trains ``llkd demo``'s student (fine-tuned MiniLM, one epoch at 1e-4, the library's other
defaults) on the demo's 4,000 training reviews under ``teacher_budget`` and reports accuracy
on its 1,000 test reviews, the rows back-propagated and the fit time. A configuration is
``ROUNDS:FINAL:SEED:BUDGET``: ``ROUNDS`` rounds of queries (random draws; the library takes
one), and after them ``FINAL`` epochs: ``ceil`` (the rule before commit ce27f20: at least a
full fit's rows), ``nearest`` (the library's ``final_epochs``: to the nearest epoch) or a
number. Internals are swapped in for the alternatives (``llkd.estimator.round_sizes`` and
``final_epochs``), so the rest of the fit is the library's.

Teacher answers come from the teacher cache of ``llkd demo`` (``$LLKD_HOME``); missing ones
are asked first. Run::

    python -m experiments.budget_rounds_demo 5:ceil:0:0.3 1:ceil:0:0.3 1:2:0:0.3 1:nearest:0:0.3
    python -m experiments.budget_rounds_demo --quick    # smoke run: 200 reviews, 100 test

Each configuration prints one JSON line (also appended to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np


def _ceil_epochs(max_epochs, n_full, round_epoch_rows, n_labelled):
    owed = max_epochs * n_full - sum(round_epoch_rows)
    return max(int(max_epochs), math.ceil(owed / max(1, n_labelled)))


def main(argv=None):
    import llkd.estimator as E
    from llkd import LLKDClassifier
    from llkd.cli import _default_home
    from llkd.datasets import fetch_rotten_tomatoes
    from llkd.teachers import TransformersTeacher

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*", help="ROUNDS:FINAL:SEED:BUDGET")
    ap.add_argument("--out", default=None, help="JSON lines file to append to")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1:nearest:0:0.3 on 200 reviews, 100 test")
    args = ap.parse_args(argv)
    n_train, n_test = (200, 100) if args.quick else (4000, 1000)
    configs = args.configs or (["1:nearest:0:0.3"] if args.quick else [])
    if not configs:
        ap.error("give at least one ROUNDS:FINAL:SEED:BUDGET (or --quick)")

    train, test = fetch_rotten_tomatoes(subset="train"), fetch_rotten_tomatoes(subset="test")
    rng = np.random.RandomState(0)  # the demo's draws (llkd demo --seed 0)
    tr, te = rng.permutation(len(train.data))[:n_train], rng.permutation(len(test.data))[:n_test]
    X, X_test = [train.data[i] for i in tr], [test.data[i] for i in te]
    names = np.asarray(train.target_names)
    y_test = names[test.target[te]]
    teacher = TransformersTeacher.from_packaged_gemma(labels=list(names))
    cache = str(_default_home() / "teacher-cache.sqlite")
    library_rounds, library_final = E.round_sizes, E.final_epochs
    try:
        for spec in configs:
            rounds, final, seed, budget = spec.split(":")
            E.round_sizes = lambda b, _n, r=int(rounds): library_rounds(b, r)
            if final == "nearest":
                E.final_epochs = library_final
            elif final == "ceil":
                E.final_epochs = _ceil_epochs
            else:
                E.final_epochs = lambda *a, f=int(final): f
            clf = LLKDClassifier(
                teacher,
                student="finetune",
                max_epochs=1,
                learning_rate=1e-4,
                teacher_cache=cache,
                teacher_budget=float(budget),
                random_state=int(seed),
            )
            t0 = time.perf_counter()
            clf.fit(X)
            fit_s = time.perf_counter() - t0
            row = {
                "spec": spec,
                "accuracy": float(np.mean(clf.predict(X_test) == y_test)),
                "fit_s": round(fit_s, 1),
                "rows_backpropagated": int(sum(h["n_backprop_all"] for h in clf.history_)),
                "epochs": len(clf.history_),
                "teacher_queries": int(clf.n_teacher_queries_),
            }
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    finally:
        E.round_sizes, E.final_epochs = library_rounds, library_final


if __name__ == "__main__":
    main()
