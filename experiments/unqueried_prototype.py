"""The prototype behind ``unqueried="student"``: how well does a budgeted student label the rest?

Two plain fits per seed, outside the library's own mechanism: (1) ``LLKDClassifier`` with
``teacher_budget`` and ``unqueried="ignore"``; (2) a fresh fit without a budget on a teacher
that returns the real teacher's answers for the inputs fit (1) asked about and fit (1)'s
probabilities for the rest (``soft``), or those as near-hard labels at confidence 0.98
(``hard``). Prints per seed: the test macro-F1 of both fits, and the accuracy of fit (1)'s
labels and of the teacher's on the unasked inputs (against gold). docs/design.md 7.5.1.

    python -m experiments.unqueried_prototype reuters_r8 tfidf_tr 0.3 soft
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main(argv=None):
    from sklearn.metrics import f1_score

    from llkd import LLKDClassifier

    from .bench_active import load_prepared

    setname, key, frac, variant = (argv or sys.argv[1:])[:4]
    frac = float(frac)
    acq = (argv or sys.argv[1:])[4] if len(argv or sys.argv[1:]) > 4 else "random"
    Xtr, ytr, Xte, yte, proba = load_prepared(HERE / "selection_rules" / ".cache" / f"{setname}.npz", key)
    C = proba.shape[1]
    index = {r.tobytes(): i for i, r in enumerate(np.ascontiguousarray(Xtr))}

    def rows_of(X):
        return [index[r.tobytes()] for r in np.ascontiguousarray(X)]

    for seed in range(3):
        asked = set()

        def teacher(X, asked=asked):
            ix = rows_of(X)
            asked.update(ix)
            return proba[ix]

        first = LLKDClassifier(
            teacher,
            labels=list(range(C)),
            student="mlp",
            teacher_budget=frac,
            acquisition=acq,
            unqueried="ignore",
            random_state=seed,
        ).fit(Xtr)
        rest = np.array(sorted(set(range(len(Xtr))) - asked))
        ps = first.predict_proba(Xtr[rest])
        mixed = proba.copy()
        mixed[rest] = np.eye(C)[ps.argmax(1)] * 0.98 + 0.02 / C if variant == "hard" else ps

        def mixed_teacher(X, mixed=mixed):  # a new function per seed: no answers remembered across seeds
            return mixed[rows_of(X)]

        second = LLKDClassifier(mixed_teacher, labels=list(range(C)), student="mlp", random_state=seed).fit(Xtr)
        rec = {
            "set": f"{setname}-{key}",
            "fraction": frac,
            "variant": variant,
            "acquisition": acq,
            "seed": seed,
            "budget_f1": float(f1_score(yte, first.predict(Xte), average="macro")),
            "with_student_labels_f1": float(f1_score(yte, second.predict(Xte), average="macro")),
            "student_label_accuracy_unasked": float((ps.argmax(1) == ytr[rest]).mean()),
            "teacher_accuracy_unasked": float((proba[rest].argmax(1) == ytr[rest]).mean()),
        }
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
