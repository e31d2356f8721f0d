"""How many epochs after a teacher budget's rounds? The library's rule (``final_epochs``: as many
rows as ``max_epochs`` epochs over the whole pool) against ``max_epochs`` epochs over what is
labelled, and a square-root compromise, with the MLP student on the Gemma RT pool and R8.

    python -m experiments.budget_epochs     # one line per set, budget and rule (3 seeds)

Reads the prepared sets of ``experiments/selection_rules/prep.py`` and the Gemma answers of the
shared teacher cache, as ``bench_active`` does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RULES = {
    "matched": None,  # the library's final_epochs
    "max_epochs": lambda e, n, rounds, m: e,
    "sqrt": lambda e, n, rounds, m: max(e, int(round(e * (n / max(1, m)) ** 0.5))),
}


def data(name):
    d = np.load(HERE / "selection_rules" / ".cache" / f"{name}.npz", allow_pickle=True)
    Xtr, ytr, Xte, yte = d["Xtr"].astype(np.float32), d["ytr"], d["Xte"].astype(np.float32), d["yte"]
    if name == "rotten_tomatoes":
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

    library_rule = estimator.final_epochs
    for name in ["rotten_tomatoes", "reuters_r8"]:
        Xtr, ytr, Xte, yte, P = data(name)
        for frac in [0.1, 0.3]:
            for variant, rule in RULES.items():
                estimator.final_epochs = rule or library_rule
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
