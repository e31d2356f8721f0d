"""Which student configuration should the demo use? Quality against training time.

The demo (``llkd demo``) must finish a cached run in under 2 minutes on 2 CPU cores, so
the fine-tuned MiniLM student gets roughly one minute of training. This script trains
the student on the Gemma teacher's answers for the demo's reviews (the same random
permutation of the Rotten Tomatoes training split, the first N of it) under several
configurations and reports held-out accuracy on the demo's 1,000 test reviews together
with the fit time, so configurations can be compared at equal time.

Teacher answers come from the teacher cache of ``llkd demo`` (``$LLKD_HOME``); missing
ones are labelled first (about 15 reviews/s). Run::

    python -m experiments.study_demo_student --write          # the default grid, ~15 min
    python -m experiments.study_demo_student --configs llkd:4000:1:1e-4 all:3000:1:1e-4
    python -m experiments.study_demo_student --quick                  # smoke run, prints only

A configuration is ``selection:n_train:epochs:learning_rate`` with optional suffixes
``:soft`` (soft targets), ``:gold`` (gold labels instead of the teacher's: the
student's own ceiling at that budget), ``:mpnet`` (the packaged all-mpnet-base-v2
instead of MiniLM), ``:mlp`` (the frozen-encoder MLP student instead of fine-tuning) and
``:layersK`` (``encoder_layers=K``: the encoder cut to its first K transformer layers, a
smaller, faster student), ``:budgetF`` (``teacher_budget=F``, a fraction of the reviews) and
``:acqRULE`` (its ``acquisition``, default random), ``:cwNAME`` (``class_weight=NAME``, e.g.
``:cwsqrt_balanced``; without it ``class_weight=None``, as every configuration ran before
the option existed) and ``:unqRULE`` (``unqueried=RULE`` under a budget, ``student`` or
``ignore``; without it ``"auto"``, which is ``ignore`` for the fine-tuned student) and ``:reN``
(under a budget, N epochs before each later round instead of ``_active.round_epochs``'s).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from . import _common as common

DEFAULT_GRID = [
    "llkd:2000:3:5e-5",  # the previous demo setting (estimator defaults)
    "llkd:4000:1:1e-4",  # the demo now
    "llkd:6000:1:1e-4",
    "teacher:4000:1:1e-4",
    "all:3000:1:1e-4",
    "all:6000:1:1e-4",
    "all:4000:1:1e-4:gold",
]


def parse(spec: str) -> dict:
    parts = spec.split(":")
    if len(parts) < 4:
        raise SystemExit(f"bad config {spec!r}: use selection:n_train:epochs:lr[:soft][:gold]")
    flags = set(parts[4:])
    layers = [f for f in flags if f.startswith("layers") and f[6:].isdigit()]
    budget = [f for f in flags if f.startswith("budget")]
    acq = [f for f in flags if f.startswith("acq")]
    cw = [f for f in flags if f.startswith("cw")]
    unq = [f for f in flags if f.startswith("unq")]
    re_ = [f for f in flags if f.startswith("re") and f[2:].isdigit()]
    flags -= set(layers) | set(budget) | set(acq) | set(cw) | set(unq) | set(re_)
    unknown = flags - {"soft", "gold", "mpnet", "mlp"}
    if unknown:
        raise SystemExit(f"bad config {spec!r}: unknown flags {sorted(unknown)}")
    return {
        "spec": spec,
        "selection": parts[0],
        "n": int(parts[1]),
        "epochs": int(parts[2]),
        "lr": float(parts[3]),
        "soft": "soft" in flags,
        "gold": "gold" in flags,
        "encoder": "mpnet" if "mpnet" in flags else "auto",
        "student": "mlp" if "mlp" in flags else "finetune",
        "layers": int(layers[0][6:]) if layers else None,
        "teacher_budget": float(budget[0][6:]) if budget else None,
        "acquisition": acq[0][3:] if acq else "random",
        "class_weight": cw[0][2:] if cw else None,
        "unqueried": unq[0][3:] if unq else "auto",
        "round_epochs": int(re_[0][2:]) if re_ else None,
    }


def run_one(cfg, X, y_gold, P, X_test, y_test, names, seed: int, save=None) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    from llkd import LLKDClassifier
    from llkd.teachers import PrecomputedTeacher

    n = cfg["n"]
    X, y_gold = X[:n], y_gold[:n]
    proba = np.eye(len(names))[y_gold] if cfg["gold"] else P[:n]
    teacher = PrecomputedTeacher(X, proba=proba, classes=names)
    clf = LLKDClassifier(
        teacher,
        selection=cfg["selection"],
        student=cfg.get("student", "finetune"),
        encoder=cfg.get("encoder", "auto"),
        encoder_layers=cfg.get("layers"),
        max_epochs=cfg["epochs"],
        learning_rate=cfg["lr"],
        soft_targets=cfg["soft"],
        calibration="none" if cfg["gold"] else "auto",
        teacher_budget=cfg.get("teacher_budget"),
        acquisition=cfg.get("acquisition", "random"),
        class_weight=cfg.get("class_weight"),
        unqueried=cfg.get("unqueried", "auto"),
        random_state=seed,
    )
    with common.round_epochs(cfg.get("round_epochs")):
        t0 = time.perf_counter()
        clf.fit(X)
        fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = clf.predict(X_test)
    predict_s = time.perf_counter() - t0
    if save:
        clf.save(save)
    truth = np.asarray(names)[y_test]
    hist = clf.history_
    return {
        **cfg,
        "seed": seed,
        "accuracy": float(accuracy_score(truth, pred)),
        "macro_f1": float(f1_score(truth, pred, average="macro")),
        "pseudo_label_accuracy": float(np.mean((clf.teacher_labels_ == y_gold)[clf.teacher_labels_ >= 0])),
        "teacher_queries": int(clf.n_teacher_queries_),
        "student_labelled": int(clf.n_student_labelled_),
        "scoring_seconds": float(sum(h["acquisition"]["scoring_seconds"] for h in hist if "acquisition" in h)),
        "selected_per_step": sum(h["n_selected"] for h in hist) / sum(h["n_backprop_all"] for h in hist),
        "distinct_selected": int(hist[-1]["distinct_selected"]),
        "fit_s": fit_s,
        "predict_s": predict_s,
    }


def table(rows, teacher_cal, n_test) -> str:
    lines = [
        f"Held-out: the demo's {n_test} gold test reviews. Calibrated teacher on them: accuracy {teacher_cal:.3f}.",
        "",
        "| config (selection:N:epochs:lr) | accuracy | macro-F1 | pseudo-label acc. | selected/step | fit s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['spec']}` | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r['pseudo_label_accuracy']:.3f} "
            f"| {r['selected_per_step']:.2f} | {r['fit_s']:.0f} |"
        )
    return "\n".join(lines)


QUICK_GRID = ["llkd:64:1:1e-4"]


def seed_table(rows, teacher_cal, n_test) -> str:
    """Rows of several seeds (``--json`` output) as mean ± std per configuration."""
    by_spec: dict = {}
    for r in rows:
        by_spec.setdefault(r["spec"], []).append(r)
    lines = [
        f"Held-out: the demo's {n_test} gold test reviews. Calibrated teacher on them: accuracy {teacher_cal:.3f}.",
        "",
        "| config (selection:N:epochs:lr:flags) | seeds | accuracy | macro-F1 | Δ accuracy vs teacher "
        "| fit s per seed | predict texts/s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for spec, rs in by_spec.items():
        acc = np.array([r["accuracy"] for r in rs])
        f1 = np.array([r["macro_f1"] for r in rs])
        seeds = ",".join(str(r["seed"]) for r in rs)
        lines.append(
            f"| `{spec}` | {seeds} | {acc.mean():.3f} ± {acc.std():.3f} | {f1.mean():.3f} ± {f1.std():.3f} "
            f"| {100 * (acc.mean() - teacher_cal):+.1f} | {np.mean([r['fit_s'] for r in rs]):.0f} "
            f"| {np.mean([n_test / r['predict_s'] for r in rs]):.0f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=DEFAULT_GRID)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    ap.add_argument("--json", default=None, help="append one JSON line per configuration here")
    ap.add_argument("--save", default=None, help="save the student of the (last) configuration here")
    ap.add_argument(
        "--quick", action="store_true", help=f"smoke run: {QUICK_GRID[0]} against 64 test reviews; prints only"
    )
    ap.add_argument("--report", default=None, help="summarise a --json file over its seeds (no training)")
    ap.add_argument("--section", default="study_demo_student", help="RESULTS.md section for --report --write")
    ap.add_argument("--note", default="", help="a line about the run (machine load) for --report --write")
    args = ap.parse_args(argv)
    if args.report:
        rows = [json.loads(line) for line in open(args.report) if line.strip()]
        from llkd.teachers import PriorCorrection

        train, test = common.load("rotten_tomatoes", max(r["n"] for r in rows), args.n_test)
        answers = common.gemma_answers(train, test)
        P, P_test = answers.train_proba, answers.test_proba
        teacher_cal = float(np.mean(PriorCorrection().fit(P).transform(P_test).argmax(1) == test.y))
        body = seed_table(rows, teacher_cal, args.n_test)
        print(body)
        if args.write:
            header = (
                f"## Demo student, {args.section} (`study_demo_student.py --report`)\n\n"
                f"{time.strftime('%Y-%m-%d')}, {common.machine()}, commit {common.git_rev()}. {args.note}\n\n"
            )
            common.write_section(args.section, header + body)
        return
    if args.quick:
        args.configs, args.n_test, args.write = QUICK_GRID, 64, False
    configs = [parse(s) for s in args.configs]

    from llkd.teachers import PriorCorrection

    # The reviews of ``llkd demo --seed 0``: common.load draws the same permutations.
    train, test = common.load("rotten_tomatoes", max(c["n"] for c in configs), args.n_test)
    X, y, X_test, y_test, names = train.texts, train.y, test.texts, test.y, train.names
    answers = common.gemma_answers(train, test, progress=True)
    P, P_test = answers.train_proba, answers.test_proba
    teacher_cal = float(np.mean(PriorCorrection().fit(P).transform(P_test).argmax(1) == y_test))
    print(f"calibrated teacher accuracy on the {len(y_test)} test reviews: {teacher_cal:.3f}", flush=True)

    rows = []
    for cfg in configs:
        row = run_one(cfg, X, y, P, X_test, y_test, names, args.seed, save=args.save)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    body = table(rows, teacher_cal, len(y_test))
    print(body)
    if args.write:
        header = (
            "## Demo student: configurations at the demo's time budget (`study_demo_student.py`)\n\n"
            f"{time.strftime('%Y-%m-%d')}, {common.machine()}, commit {common.git_rev()}, "
            f"seed {args.seed}; configurations run one after another on an otherwise quiet machine.\n\n"
        )
        common.write_section("study_demo_student", header + body)


if __name__ == "__main__":
    main()
