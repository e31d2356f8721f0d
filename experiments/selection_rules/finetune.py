"""The fine-tuned student on the selection-rule settings (issue 13), through the library.

    python experiments/selection_rules/finetune.py SETTING [--pool N] [--seeds 0 1 2]

Every fit is ``LLKDClassifier(student="finetune", selection=..., random_state=seed)`` with the
library defaults (all-MiniLM-L6-v2 fine-tuned end to end, 3 epochs, AdamW lr 5e-5, batch 32,
``calibration="auto"``, ``weighting="auto"``) on the first ``--pool`` texts of a fixed
permutation of the setting's training pool. The teacher is a callable returning the
setting's raw teacher probabilities for those texts (TF-IDF teachers of ``prep.py``, or the
cached Gemma answers), so every method sees the same answers and the estimator calibrates
them itself. Scored on the setting's 2,000 test texts (macro-F1). Fits are cached in
``.cache/finetune.jsonl``: a rerun only reprints.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import prep  # noqa: E402

RUNS = HERE / ".cache" / "finetune.jsonl"
METHODS = {  # name -> estimator parameters (labels: gold uses the pool's gold labels)
    "all": {"selection": "all", "noise_correction": "none"},
    "teacher": {"selection": "teacher", "noise_correction": "none"},
    "llkd": {"selection": "llkd", "noise_correction": "none"},
    "confidence": {"selection": "confidence", "noise_correction": "none", "class_weight": None},
    "class_mean": {"selection": "class_mean", "noise_correction": "none"},
    "gold": {"selection": "all", "noise_correction": "none", "gold": True},
    "confidence+forward": {"selection": "confidence", "noise_correction": "forward", "class_weight": None},
    "all+forward": {"selection": "all", "noise_correction": "forward"},
    "all+cw": {"selection": "all", "noise_correction": "none", "class_weight": "sqrt_balanced"},
    "confidence+forward+cw": {
        "selection": "confidence",
        "noise_correction": "forward",
        "class_weight": "sqrt_balanced",
    },
}


def setting_data(key):
    """(pool texts, gold labels, raw teacher proba, test texts, test labels, class names)."""
    name = {"rt_tfidf": "rotten_tomatoes", "rt_gemma": "rotten_tomatoes", "r8": "reuters_r8", "20ng": "20newsgroups"}[
        key
    ]
    tr_t, tr_y, te_t, te_y, names = prep.load(name)
    z = prep.prepare(name, prep.FRACTIONS[name])
    P = np.asarray(z["tfidf_tr"], dtype=np.float64)
    rows = np.arange(len(tr_t))
    if key == "rt_gemma":
        import gemma

        rows, P, _ = gemma.gemma_pool(tr_t)
    return [tr_t[i] for i in rows], np.asarray(tr_y)[rows], P, te_t, np.asarray(te_y), names


def load_runs():
    out = {}
    if RUNS.exists():
        for line in RUNS.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                out[(r["setting"], r["pool"], r["method"], r["seed"])] = r
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("setting")
    ap.add_argument("--pool", type=int, default=3000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--n-threads", type=int, default=None, help="torch threads per fit (two runs side by side: 1)")
    args = ap.parse_args(argv)

    from sklearn.metrics import f1_score

    from llkd import LLKDClassifier

    texts, gold, P, te_t, te_y, names = setting_data(args.setting)
    perm = np.random.RandomState(0).permutation(len(texts))[: args.pool]
    pool = [texts[i] for i in perm]
    pool_gold, pool_P = gold[perm], P[perm]
    answers = {t: p for t, p in zip(pool, pool_P)}

    def teacher(batch):
        return np.stack([answers[t] for t in batch])

    done = load_runs()
    RUNS.parent.mkdir(exist_ok=True)
    for seed in args.seeds:
        for method in args.methods:
            key = (args.setting, args.pool, method, seed)
            if key in done:
                r = done[key]
            else:
                params = dict(METHODS[method])
                use_gold = params.pop("gold", False)
                clf = LLKDClassifier(
                    teacher=None if use_gold else teacher,
                    labels=list(names),
                    student="finetune",
                    max_length=args.max_length,
                    n_threads=args.n_threads,
                    random_state=seed,
                    **params,
                )
                t0 = time.perf_counter()
                if use_gold:
                    clf.fit(pool, np.asarray(names, dtype=object)[pool_gold])
                else:
                    clf.fit(pool)
                wall = time.perf_counter() - t0
                pred = clf.predict(te_t)
                idx = {c: i for i, c in enumerate(names)}
                pred_i = np.array([idx[p] for p in pred])
                hist = clf.history_
                r = {
                    "setting": args.setting,
                    "pool": args.pool,
                    "method": method,
                    "seed": seed,
                    "f1": float(f1_score(te_y, pred_i, average="macro", labels=np.arange(len(names)))),
                    "acc": float((pred_i == te_y).mean()),
                    "selected_fraction": float(np.mean([h["selected_fraction"] for h in hist])),
                    "n_backprop": int(sum(h["n_backprop"] for h in hist)),
                    "epochs": len(hist),
                    "wall": wall,
                    "max_length": args.max_length,
                    "teacher_pool_acc": float((pool_P.argmax(1) == pool_gold).mean()),
                    "date": datetime.datetime.now().isoformat(timespec="seconds"),
                    "load": os.getloadavg()[0],
                }
                with open(RUNS, "a") as fh:
                    fh.write(json.dumps(r) + "\n")
            print(
                f"[ft {args.setting} pool {args.pool}] seed {seed} {method:11s} F1 {r['f1']:.4f} "
                f"sel {r['selected_fraction']:.2f} backprop {r['n_backprop']} {r['wall']:.0f}s",
                flush=True,
            )


if __name__ == "__main__":
    main()
