"""How many epochs after a teacher budget's rounds? ``matched`` (as many rows as ``max_epochs``
epochs over the whole pool), ``max_epochs`` epochs over what is labelled, and ``sqrt``
(``max_epochs`` epochs' worth of sqrt(pool * labelled) rows: the library's
rule when the student labels the unasked inputs, ``llkd._active.final_epochs(labeller=True)``),
with the MLP student on the prepared sets (default: the Gemma RT pool and R8).

    python -m experiments.budget_epochs     # one line per set, budget and rule (3 seeds)
    python -m experiments.budget_epochs --sets 20newsgroups --fractions 0.3 --rules matched,sqrt

Reads the prepared sets of ``experiments/selection_rules/prep.py`` and the Gemma answers of the
shared teacher cache, as ``bench_active`` does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RULES = {  # arguments as the estimator passes them to llkd._active.final_epochs
    "matched": lambda e, n, rounds, m, **kw: _final(e, n, rounds, m, labeller=False),
    "max_epochs": lambda e, n, rounds, m, **kw: e,
    # sqrt(n * m) rows: the library's rule for a student that labels the unasked inputs
    "sqrt": lambda e, n, rounds, m, **kw: _final(e, n, rounds, m, labeller=True),
}


def _final(*args, **kw):
    from llkd._active import final_epochs

    return final_epochs(*args, **kw)


def data(name):
    """A prepared set; ``rotten_tomatoes`` is the Gemma pool, ``rotten_tomatoes-tfidf`` the TF-IDF teacher's."""
    tfidf = name.endswith("-tfidf")
    name = name.removesuffix("-tfidf")
    d = np.load(HERE / "selection_rules" / ".cache" / f"{name}.npz", allow_pickle=True)
    Xtr, ytr, Xte, yte = d["Xtr"].astype(np.float32), d["ytr"], d["Xte"].astype(np.float32), d["yte"]
    if name == "rotten_tomatoes" and not tfidf:
        sys.path.insert(0, str(HERE / "selection_rules"))
        import gemma
        import prep

        rows, P, _ = gemma.gemma_pool(prep.load("rotten_tomatoes")[0])
        return Xtr[rows], ytr[rows], Xte, yte, P
    return Xtr, ytr, Xte, yte, d["tfidf_tr"]


def main():
    from sklearn.metrics import f1_score

    import llkd.estimator as estimator
    from llkd import LLKDClassifier

    from .bench_active import _teacher

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="rotten_tomatoes,reuters_r8", help="rotten_tomatoes means the Gemma pool")
    ap.add_argument("--fractions", default="0.1,0.3")
    ap.add_argument("--rules", default=",".join(RULES))
    args = ap.parse_args()
    library_rule = estimator.final_epochs
    for name in args.sets.split(","):
        Xtr, ytr, Xte, yte, P = data(name)
        for frac in [float(f) for f in args.fractions.split(",")]:
            for variant in args.rules.split(","):
                rule = RULES[variant]
                estimator.final_epochs = rule
                f = []
                for seed in range(3):
                    clf = LLKDClassifier(
                        _teacher(Xtr, P),
                        labels=list(range(P.shape[1])),
                        student="mlp",
                        teacher_budget=frac,
                        random_state=seed,
                    ).fit(Xtr)
                    f.append(f1_score(yte, clf.predict(Xte), average="macro"))
                print(name, frac, variant, round(float(np.mean(f)), 3), np.round(f, 3), flush=True)
    estimator.final_epochs = library_rule


if __name__ == "__main__":
    main()
