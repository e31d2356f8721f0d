"""Can the seed set tell when margin acquisition will lose to random draws? (issue 14)

Margin acquisition beats random draws where the teacher is good and loses where it is weak
(20 Newsgroups, movie reviews with the TF-IDF teacher): the rows the student is least sure of
are then the ones the teacher gets wrong. A budgeted fit cannot read gold labels, but it has
the teacher's answers on its random seed set (a fifth of the budget). This probe measures, per
set and seed, a label-free signal on that seed set: a student trained on one half of it
predicts the other half, and Cohen's kappa of those predictions against the teacher's
(calibrated) labels says how far the teacher's labels are learnable from the features, two-fold.

    python -m experiments.teacher_strength_probe --data experiments/selection_rules/.cache/SET.npz \
        [--teacher-key gemma] --fractions 0.1,0.3 --seeds 3 --out F.jsonl

Prints the kappa (mean, min, max over seeds) per budget; the fits of margin and random at the
same budgets come from ``experiments.bench_active``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np

from experiments.bench_active import _teacher, load_prepared


def kappa(a: np.ndarray, b: np.ndarray, C: int) -> float:
    """Cohen's kappa of two label vectors."""
    po = float((a == b).mean())
    pa = np.bincount(a, minlength=C) / len(a)
    pb = np.bincount(b, minlength=C) / len(b)
    pe = float((pa * pb).sum())
    return (po - pe) / (1 - pe) if pe < 1 else 0.0


def probe(X, proba, rows, C, seed, student="logreg", epochs=None):
    """(two-fold agreement, two-fold kappa) of students on halves of ``rows`` against the
    teacher's calibrated labels on the other half. ``student``: ``"logreg"`` (scikit-learn's
    logistic regression on the features) or ``"mlp"`` (the library's, ``max_epochs=epochs``)."""
    from llkd import LLKDClassifier
    from llkd.teachers import PriorCorrection

    lab = PriorCorrection("adaptive").fit(proba[rows]).transform(proba[rows]).argmax(1)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(rows))
    halves = perm[: len(rows) // 2], perm[len(rows) // 2 :]
    preds, truth = [], []
    for tr, te in (halves, halves[::-1]):
        if len(np.unique(lab[tr])) < 2:
            preds.append(np.full(len(te), lab[tr][0]))
        elif student == "logreg":
            from sklearn.linear_model import LogisticRegression

            preds.append(LogisticRegression(max_iter=2000).fit(X[rows[tr]], lab[tr]).predict(X[rows[te]]))
        else:
            clf = LLKDClassifier(
                _teacher(X, proba), labels=list(range(C)), student="mlp", max_epochs=epochs, random_state=seed
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                clf.fit(X[rows[tr]])
            preds.append(clf.predict(X[rows[te]]))
        truth.append(lab[te])
    p, t = np.concatenate(preds), np.concatenate(truth)
    return float((p == t).mean()), kappa(p, t, C)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--teacher-key", default="tfidf_tr")
    ap.add_argument("--fractions", default="0.1,0.3")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--student", default="logreg", choices=["logreg", "mlp"])
    ap.add_argument("--epochs", type=int, default=None, help="max_epochs of the mlp probe student")
    args = ap.parse_args(argv)
    Xtr, ytr, _, _, proba = load_prepared(args.data, args.teacher_key)
    N, C = proba.shape
    name = Path(args.data).stem + ("-gemma" if args.teacher_key == "gemma" else "")
    print(
        f"# {name}: pool {N}, {C} classes, teacher accuracy {(proba.argmax(1) == ytr).mean():.3f}; "
        f"{time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}"
    )
    recs = []
    for frac in [float(f) for f in args.fractions.split(",")]:
        n_seed = math.ceil(round(frac * N, 6)) // 5
        for seed in range(args.seeds):
            rows = np.random.default_rng(seed).choice(N, size=n_seed, replace=False)
            agree, kap = probe(Xtr, proba, rows, C, seed, args.student, args.epochs)
            raw = proba[rows].argmax(1)  # the raw teacher on the seed, against gold, for the record
            rec = {
                "set": name,
                "fraction": frac,
                "seed": seed,
                "n_seed": int(n_seed),
                "student": args.student,
                "epochs": args.epochs,
                "agreement": agree,
                "kappa": kap,
                "teacher_seed_accuracy": float((raw == ytr[rows]).mean()),
                "teacher_seed_kappa": kappa(raw, ytr[rows], C),
            }
            recs.append(rec)
            print(f"  {frac:.2f} seed {seed}: n_seed {n_seed}, agreement {agree:.3f}, kappa {kap:.3f}", flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
    for frac in sorted({r["fraction"] for r in recs}):
        k = np.array([r["kappa"] for r in recs if r["fraction"] == frac])
        print(f"| {name} | {frac:.0%} | {k.mean():.3f} | {k.min():.3f} | {k.max():.3f} |")


if __name__ == "__main__":
    main()
