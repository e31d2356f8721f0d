"""What makes LLKD's selection pay reliably: one factor at a time, against its baselines.

On Rotten Tomatoes (calibrated Gemma teacher) and one topic set (TF-IDF teacher on 2 %
of the gold labels), with the MLP head on frozen MiniLM embeddings (the student of
``bench_distill.py``; same data, teachers and cached fits), >= 3 seeds, starting from the
library defaults (``momentum=0.9, weighting="product", warmup_epochs=0,
soft_targets=False, uncertainty_pass="train"``, 30 epochs) and changing one thing at a time:

- momentum 0.5 / 0.9 / 0.99;
- weighting "product" / "none";
- warmup_epochs 0 / 1;
- soft_targets off / on (temperature 2; also for ``selection="all"``, to separate the
  effect of soft targets from that of the selection);
- uncertainty_pass "train" / "eval";
- training length 5 / 30 / 100 epochs (also for "all" and "teacher-only");
- combinations given with ``--combo`` (e.g. the recommendation).

    python benchmarks/study_selection.py                       # writes its RESULTS.md section
    python benchmarks/study_selection.py --quick               # smoke run, prints only
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as bc  # noqa: E402
import bench_distill as bd  # noqa: E402

# (label, method, extra parameters, epochs)
BASE_EPOCHS = 30
FACTORS = [
    ("defaults (m 0.9, product, no warm-up, hard, train pass)", "llkd", {}, BASE_EPOCHS),
    ("momentum 0.5", "llkd", {"momentum": 0.5}, BASE_EPOCHS),
    ("momentum 0.99", "llkd", {"momentum": 0.99}, BASE_EPOCHS),
    ("weighting none", "llkd", {"weighting": "none"}, BASE_EPOCHS),
    ("warmup_epochs 1", "llkd", {"warmup_epochs": 1.0}, BASE_EPOCHS),
    ("soft_targets", "llkd", {"soft_targets": True}, BASE_EPOCHS),
    ("uncertainty_pass eval", "llkd", {"uncertainty_pass": "eval"}, BASE_EPOCHS),
    ("5 epochs", "llkd", {}, 5),
    ("100 epochs", "llkd", {}, 100),
]
REFERENCES = [
    ("all", "all", {"selection": "all"}, 5),
    ("all", "all", {"selection": "all"}, BASE_EPOCHS),
    ("all", "all", {"selection": "all"}, 100),
    ("all + soft_targets", "all", {"selection": "all", "soft_targets": True}, BASE_EPOCHS),
    ("teacher-only", "teacher-only", {"selection": "teacher"}, 5),
    ("teacher-only", "teacher-only", {"selection": "teacher"}, BASE_EPOCHS),
    ("teacher-only", "teacher-only", {"selection": "teacher"}, 100),
]


def run_set(bench, seeds, configs, log=print):
    rows = []
    for label, method, extra, epochs in configs:
        for seed in seeds:
            r = bench.cached_fit(method, "auto", seed, epochs, extra)
            rows.append(dict(r, label=label, epochs=epochs))
            log(f"[{bench.name}] {label:55s} {epochs:3d} ep seed {seed}: F1 {r['f1']:.3f} acc {r['acc']:.3f} "
                f"used {r['used']:.3f} backprop {r['backprop']:.3f} skipped {r.get('skipped_steps', 0)} "
                f"{r['wall']:.1f}s")
    return rows


def table(rows, all30) -> str:
    out = ["| configuration | epochs | macro-F1 | Δ vs all (same seeds, 30 ep) | accuracy | used per step | back-prop vs all | distinct | skipped steps | wall s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    seen = []
    for r in rows:
        k = (r["label"], r["epochs"])
        if k not in seen:
            seen.append(k)
    for label, epochs in seen:
        rs = [r for r in rows if r["label"] == label and r["epochs"] == epochs]
        f1 = np.array([r["f1"] for r in rs])
        base = np.array([all30[r["seed"]] for r in rs])
        d = f1 - base
        out.append(
            f"| {label} | {epochs} | {bc.mean_std(f1)} | {np.mean(d):+.3f} ({int(np.sum(d > 0))}/{len(d)} seeds > 0) | "
            f"{bc.mean_std([r['acc'] for r in rs])} | {100 * np.mean([r['used'] for r in rs]):.1f} % | "
            f"{100 * np.mean([r['backprop'] for r in rs]):.1f} % | {100 * np.mean([r['distinct'] for r in rs]):.1f} % | "
            f"{np.mean([r.get('skipped_steps', 0) for r in rs]):.0f} | {np.mean([r['wall'] for r in rs]):.1f} |"
        )
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="rotten_tomatoes,20newsgroups")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--combo", action="append", default=[],
                   help='extra LLKD configuration as JSON, e.g. \'{"soft_targets": true, "warmup_epochs": 1}\'')
    p.add_argument("--quick", action="store_true", help="300/200 texts, 1 seed, epochs 5 only; prints only")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    configs = FACTORS + REFERENCES
    for c in args.combo:
        extra = json.loads(c)
        epochs = int(extra.pop("max_epochs", BASE_EPOCHS))
        configs.append(("combo " + ", ".join(f"{k}={v}" for k, v in extra.items()), "llkd", extra, epochs))
    if args.quick:
        args.seeds = 1
        args.n_train, args.n_test = args.n_train or 300, args.n_test or 200
        args.no_write = True
        configs = [(lbl, m, e, min(ep, 3)) for lbl, m, e, ep in configs if ep != 100]
    store = bd.RunStore(bd.RUNS if not args.quick else bc.CACHE / "runs-bench_distill-quick.jsonl", False)
    started = time.perf_counter()
    sections = []
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        ntr, nte = bd.DEFAULT_SIZES[name]
        bench = bd.Bench(name, args.n_train or ntr, args.n_test or nte, BASE_EPOCHS, store)
        t0 = time.perf_counter()
        seeds = list(range(args.seeds))
        rows = run_set(bench, seeds, configs)
        ref_epochs = BASE_EPOCHS if not args.quick else 3
        all30 = {r["seed"]: r["f1"] for r in rows if r["label"] == "all" and r["epochs"] == ref_epochs}
        tab = table(rows, all30)
        secs = time.perf_counter() - t0
        print(tab, flush=True)
        sections.append((name, bench, tab, secs))
    total = time.perf_counter() - started
    print(f"[study_selection] total {total:.0f} s")
    if args.no_write:
        return
    cmd = "python benchmarks/study_selection.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "## What makes the selection pay (`benchmarks/study_selection.py`)",
        "",
        f"Date {datetime.date.today().isoformat()}, commit {bc.git_rev()}; machine: {bc.machine()} (shared, "
        f"wall times noisy). Command: `{cmd.strip()}` ({total:.0f} s including fits cached by "
        "`bench_distill.py`, which shares data, teachers and runs). Student: MLP head on frozen MiniLM "
        "embeddings (as in bench_distill); calibrated teacher (`calibration=\"auto\"`); seeds "
        f"0..{args.seeds - 1}, mean ± std. One factor changed at a time from the library defaults; *Δ vs all* is "
        "the paired macro-F1 difference to `selection=\"all\"` at 30 epochs, same seed.",
        "",
    ]
    for name, bench, tab, secs in sections:
        lines += [f"### {name}", "", f"{bench.n} training texts, {len(bench.test.texts)} test texts; teacher: "
                  f"{bench.answers.description}. {secs:.0f} s.", "", tab, ""]
    lines.append(NOTES)
    bc.write_section("study_selection", "\n".join(lines))


# Written after reading the numbers of the full run.
NOTES = """(notes pending)"""


if __name__ == "__main__":
    main()
