"""Active distillation: macro-F1 against teacher queries, for each acquisition rule (``teacher_budget``).

Reads a prepared set (an ``.npz`` with MiniLM embeddings ``Xtr``/``Xte``, gold ``ytr``/``yte``
and the teacher's probabilities ``tfidf_tr`` for the pool, as written by
``experiments/selection_rules/prep.py``), and fits ``LLKDClassifier(student="mlp")`` on the
pool's embeddings with ``teacher_budget`` at each fraction and each acquisition rule, over
seeds. Prints a markdown table: mean macro-F1 +- std on the test set, and the mean wall
time of a fit (which includes the student's extra forward passes over the pool).

    python -m experiments.bench_active --data experiments/selection_rules/.cache/rotten_tomatoes.npz
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def _teacher(X, proba):
    index = {row.tobytes(): i for i, row in enumerate(np.ascontiguousarray(X))}

    def answer(rows):
        return proba[[index[r.tobytes()] for r in np.ascontiguousarray(rows)]]

    return answer


def read_runs(path: Path) -> dict:
    """The fits already in a JSON-lines file, by (fraction, rule, seed); empty when it is missing."""
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            done[(r["fraction"], r["rule"], r["seed"])] = r
    return done


def append_run(path: Path, rec: dict) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(rec) + "\n")


def fit_record(clf, Xtr, Xte, yte, *, fraction, rule, seed) -> dict:
    """Fit ``clf`` on ``Xtr``: the fields every run file holds (its key, test macro-F1, the
    queries paid and the wall seconds of fit and predict)."""
    from sklearn.metrics import f1_score

    t0 = time.perf_counter()
    clf.fit(Xtr)
    return {
        "fraction": fraction,
        "rule": rule,
        "seed": seed,
        "macro_f1": float(f1_score(yte, clf.predict(Xte), average="macro")),
        "queries": int(clf.n_teacher_queries_),
        "seconds": time.perf_counter() - t0,
    }


def load_prepared(path, teacher_key: str):
    """(Xtr, ytr, Xte, yte, teacher proba for the pool) of a prepared set; ``"gemma"``: the
    packaged Gemma's cached answers, the pool cut to the texts they cover."""
    d = np.load(path, allow_pickle=True)
    Xtr, ytr, Xte, yte = d["Xtr"].astype(np.float32), d["ytr"], d["Xte"].astype(np.float32), d["yte"]
    if teacher_key != "gemma":
        return Xtr, ytr, Xte, yte, d[teacher_key]
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent / "selection_rules"))
    import gemma
    import prep

    rows, proba, _ = gemma.gemma_pool(prep.load("rotten_tomatoes")[0])
    return Xtr[rows], ytr[rows], Xte, yte, proba


def main(argv=None):

    from llkd import LLKDClassifier

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help=".npz with Xtr, ytr, Xte, yte, tfidf_tr (teacher proba)")
    ap.add_argument("--teacher-key", default="tfidf_tr", help='the key of the teacher proba, or "gemma"')
    ap.add_argument("--fractions", default="0.05,0.1,0.2,0.3,0.5,1.0")
    ap.add_argument("--rules", default="uncertainty,margin,diverse,random")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=None, help="JSON lines of every fit (appended; reused on rerun)")
    ap.add_argument("--selection", default="auto", help="the estimator's selection (default: the library default)")
    ap.add_argument("--calibration", default="auto", help="the estimator's calibration (default: the library default)")
    ap.add_argument(
        "--noise-correction", default="auto", help="the estimator's noise_correction (default: the library default)"
    )
    ap.add_argument(
        "--class-weight",
        default="auto",
        help="the estimator's class_weight (default: the library default); files of runs before it "
        "existed carry no class-weight tag",
    )
    ap.add_argument(
        "--unqueried",
        default="auto",
        help="the estimator's unqueried (default: the library default); files of runs before it existed, "
        "which ignored the unasked inputs, carry no tag for it",
    )
    ap.add_argument("--quick", action="store_true", help="1,000 pool rows, fractions 0.1 and 1.0, 1 seed")
    args = ap.parse_args(argv)
    Xtr, ytr, Xte, yte, proba = load_prepared(args.data, args.teacher_key)
    fractions = [float(f) for f in args.fractions.split(",")]
    rules = args.rules.split(",")
    seeds = range(args.seeds)
    if args.quick:
        Xtr, ytr, proba = Xtr[:1000], ytr[:1000], proba[:1000]
        fractions, seeds = [0.1, 1.0], range(1)
    C = proba.shape[1]
    name = Path(args.data).stem + ("-gemma" if args.teacher_key == "gemma" else "")
    # File names: the first run (llkd, no calibration) has no tag; later ones name their settings.
    tag = (
        ""
        if (args.selection, args.calibration) == ("llkd", "none")
        else f"-{args.selection}-{args.calibration}-{args.noise_correction}-{args.class_weight}"
        + ("" if args.unqueried == "ignore" else f"-{args.unqueried}")
    )
    out = Path(args.out) if args.out else Path(args.data).with_name(f"active-{name}{tag}.jsonl")
    done = {} if args.quick else read_runs(out)
    teacher_acc = float((proba.argmax(1) == ytr).mean())
    print(
        f"# {name}: pool {len(Xtr)}, test {len(Xte)}, {C} classes, teacher pool accuracy {teacher_acc:.3f}; "
        f"selection={args.selection!r}, calibration={args.calibration!r}, noise_correction={args.noise_correction!r}, "
        f"class_weight={args.class_weight!r}, unqueried={args.unqueried!r}; "
        f"{time.strftime('%Y-%m-%d')}, load average {os.getloadavg()[0]:.1f}"
    )
    for frac in fractions:
        for rule in rules if frac < 1.0 else ["all"]:
            for seed in seeds:
                key = (frac, rule, seed)
                if key in done:
                    continue
                clf = LLKDClassifier(
                    _teacher(Xtr, proba),
                    labels=list(range(C)),
                    student="mlp",
                    teacher_budget=None if frac >= 1.0 else frac,
                    acquisition="uncertainty" if rule == "all" else rule,
                    calibration=args.calibration,
                    selection=args.selection,
                    noise_correction=args.noise_correction,
                    class_weight=None if args.class_weight == "none" else args.class_weight,
                    unqueried=args.unqueried,
                    random_state=seed,
                )
                rec = fit_record(clf, Xtr, Xte, yte, fraction=frac, rule=rule, seed=seed)
                f1 = rec["macro_f1"]
                rounds = [h["acquisition"] for h in clf.history_ if "acquisition" in h]
                rec |= {
                    "scoring_seconds": float(sum(r["scoring_seconds"] for r in rounds)),
                    "pool_scored": int(sum(r["pool_scored"] for r in rounds)),
                    "agreement_before": [r["agreement_before"] for r in rounds],
                    "student_labelled": int(getattr(clf, "n_student_labelled_", 0)),
                }
                done[key] = rec
                if not args.quick:
                    append_run(out, rec)
                print(
                    f"  {frac:.2f} {rule:12s} seed {seed}: macro-F1 {f1:.4f}, {rec['queries']} queries, "
                    f"{rec['seconds']:.1f} s",
                    flush=True,
                )
    full = [done[(1.0, "all", s)]["macro_f1"] for s in seeds if (1.0, "all", s) in done]
    ref = float(np.mean(full)) if full else float("nan")
    print(f"\n| queries (fraction of the pool) | {' | '.join(rules)} |")
    print("|---|" + "---:|" * len(rules))
    for frac in fractions:
        cells = []
        for rule in rules:
            rs = [
                done[(frac, rule if frac < 1.0 else "all", s)]
                for s in seeds
                if (frac, rule if frac < 1.0 else "all", s) in done
            ]
            if not rs:
                cells.append("")
                continue
            f = np.array([r["macro_f1"] for r in rs])
            cells.append(f"{f.mean():.3f} ± {f.std():.3f} ({f.mean() - ref:+.3f})")
        print(f"| {frac:.0%} | " + " | ".join(cells) + " |")
    print("\n(in brackets: against labelling the whole pool)")
    print("\nCompute per fit, mean over seeds: wall seconds / rows the student scored for acquisition / their seconds")
    print(f"\n| queries | {' | '.join(rules)} |")
    print("|---|" + "---:|" * len(rules))
    for frac in fractions:
        cells = []
        for rule in rules:
            r_ = rule if frac < 1.0 else "all"
            rs = [done[(frac, r_, s)] for s in seeds if (frac, r_, s) in done]
            if not rs:
                cells.append("")
                continue
            cells.append(
                f"{np.mean([r['seconds'] for r in rs]):.1f} s / {np.mean([r['pool_scored'] for r in rs]):.0f} / "
                f"{np.mean([r['scoring_seconds'] for r in rs]):.2f} s"
            )
        print(f"| {frac:.0%} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
