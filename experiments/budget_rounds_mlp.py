"""Random draws in one round or in five, with the MLP student on a prepared set.

Uniform draws do not read the student, so asking the whole budget at once (the library,
``_active.n_rounds``) and spreading it over five rounds (the library before commit ce27f20)
draw from the same distribution; they differ in which rows are drawn and in the four round
epochs on partial sets. This fits both on the same seeds (``llkd.estimator.n_rounds`` swapped
in for the five rounds) and prints one JSON line per fit.

    python -m experiments.budget_rounds_mlp --data experiments/selection_rules/.cache/reuters_r8.npz \\
        --fraction 0.05 --unqueried ignore --seeds 0 4

Reads the prepared sets of ``experiments/selection_rules/prep.py``, as ``bench_active`` does.
"""

from __future__ import annotations

import argparse
import json
import warnings


def main(argv=None):
    from sklearn.metrics import f1_score

    import llkd.estimator as E
    from llkd import LLKDClassifier

    from .bench_active import _teacher, load_prepared

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--teacher-key", default="tfidf_tr")
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--unqueried", default="auto")
    ap.add_argument("--seeds", type=int, nargs=2, default=[0, 3], help="first and one past the last seed")
    args = ap.parse_args(argv)
    Xtr, ytr, Xte, yte, proba = load_prepared(args.data, args.teacher_key)
    library = E.n_rounds
    try:
        for rounds in (5, 1):
            E.n_rounds = lambda _rule, r=rounds: r
            for seed in range(*args.seeds):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # the share-shift warning of R8's teacher
                    clf = LLKDClassifier(
                        _teacher(Xtr, proba),
                        labels=list(range(proba.shape[1])),
                        student="mlp",
                        teacher_budget=args.fraction,
                        unqueried=args.unqueried,
                        random_state=seed,
                    ).fit(Xtr)
                f1 = float(f1_score(yte, clf.predict(Xte), average="macro"))
                print(json.dumps({"rounds": rounds, "seed": seed, "macro_f1": round(f1, 3)}), flush=True)
    finally:
        E.n_rounds = library


if __name__ == "__main__":
    main()
