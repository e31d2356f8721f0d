"""What makes LLKD's selection pay reliably: one factor at a time, against its baselines.

On Rotten Tomatoes (calibrated Gemma teacher) and one topic set (TF-IDF teacher on 2 %
of the gold labels), with the MLP head on frozen MiniLM embeddings (the student of
``bench_distill.py``; same data, teachers and cached fits), >= 3 seeds, starting from the
library defaults (``momentum=0.9, weighting="product", warmup_epochs=0,
soft_targets=False, uncertainty_pass="train"``, 10 epochs as bench_distill) and changing
one thing at a time:

- momentum 0.5 / 0.9 / 0.99;
- weighting "product" / "none";
- warmup_epochs 0 / 1;
- soft_targets off / on (temperature 2; also for ``selection="all"``, to separate the
  effect of soft targets from that of the selection);
- uncertainty_pass "train" / "eval";
- training length 5 / 10 / 30 epochs (LLKD and "all"), and 100 on the sets named by
  ``--long`` (default Rotten Tomatoes; 100 epochs of the others cost too much CPU here);
- references: "all", "all" + soft targets, "teacher-only", "student-only";
- combinations given with ``--combo`` (e.g. the recommendation).

    python -m experiments.study_selection                       # writes its RESULTS.md section
    python -m experiments.study_selection --quick               # smoke run, prints only
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time

import numpy as np

from . import _common as bc
from . import bench_distill as bd

# (label, method, extra parameters, epochs). The base length is bench_distill's budget
# (10 epochs), so the default LLKD, "all" and "teacher-only" fits are shared with it.
BASE_EPOCHS = 10
FACTORS = [
    ("defaults (m 0.9, product, no warm-up, hard, train pass)", "llkd", {}, BASE_EPOCHS),
    ("momentum 0.5", "llkd", {"momentum": 0.5}, BASE_EPOCHS),
    ("momentum 0.99", "llkd", {"momentum": 0.99}, BASE_EPOCHS),
    ("weighting none", "llkd", {"weighting": "none"}, BASE_EPOCHS),
    ("warmup_epochs 1", "llkd", {"warmup_epochs": 1.0}, BASE_EPOCHS),
    ("soft_targets", "llkd", {"soft_targets": True}, BASE_EPOCHS),
    ("uncertainty_pass eval", "llkd", {"uncertainty_pass": "eval"}, BASE_EPOCHS),
]
REFERENCES = [
    ("all", "all", {"selection": "all"}, BASE_EPOCHS),
    ("all + soft_targets", "all", {"selection": "all", "soft_targets": True}, BASE_EPOCHS),
    ("teacher-only", "teacher-only", {"selection": "teacher"}, BASE_EPOCHS),
    ("student-only", "student-only", {"selection": "student"}, BASE_EPOCHS),
]
# Training length: 5 / 10 / 30 epochs everywhere, 100 where --long names the set.
LENGTHS = [
    ("defaults (m 0.9, product, no warm-up, hard, train pass)", "llkd", {}),
    ("all", "all", {"selection": "all"}),
]
SHORT_LONG = (5, 30)
LONG = 100


def run_set(bench, seeds, configs, calib, log=print):
    rows = []
    for label, method, extra, epochs in configs:
        for seed in seeds:
            r = bench.cached_fit(method, calib, seed, epochs, extra)
            rows.append(dict(r, label=label, epochs=epochs))
            log(
                f"[{bench.name}] {label:55s} {epochs:3d} ep seed {seed}: F1 {r['f1']:.3f} acc {r['acc']:.3f} "
                f"used {r['used']:.3f} backprop {r['backprop']:.3f} skipped {r.get('skipped_steps', 0)} "
                f"{r['wall']:.1f}s"
            )
    return rows


def table(rows, all30) -> str:
    out = [
        "| configuration | epochs | macro-F1 | Δ vs all (same seed, 10 ep) | accuracy | used per step | back-prop vs all | distinct | skipped steps | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
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
    p.add_argument(
        "--combo",
        action="append",
        default=[],
        help='extra LLKD configuration as JSON, e.g. \'{"soft_targets": true, "warmup_epochs": 1}\'',
    )
    p.add_argument("--long", default="rotten_tomatoes", help="sets that also run 100 epochs (comma-separated)")
    p.add_argument("--quick", action="store_true", help="300/200 texts, 1 seed, 3 epochs; prints only")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        help="DATASET:SUBSTRING: on DATASET run only configurations whose label contains SUBSTRING "
        "(repeatable; a CPU saver for a third set)",
    )
    p.add_argument(
        "--calibration",
        default="center",
        help="teacher calibration (explicit: the library's 'auto' changed from center to em mid-study)",
    )
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    configs = FACTORS + REFERENCES + [(lbl, m, e, ep) for ep in SHORT_LONG for lbl, m, e in LENGTHS]
    for c in args.combo:
        extra = json.loads(c)
        epochs = int(extra.pop("max_epochs", BASE_EPOCHS))
        configs.append(("combo " + ", ".join(f"{k}={v}" for k, v in extra.items()), "llkd", extra, epochs))
    if args.quick:
        args.seeds = 1
        args.n_train, args.n_test = args.n_train or 300, args.n_test or 200
        args.no_write = True
        configs = [(lbl, m, e, 3) for lbl, m, e, ep in configs if ep == BASE_EPOCHS]
    store = bd.RunStore(bd.RUNS if not args.quick else bc.CACHE / "quick-runs.jsonl", False)
    started = time.perf_counter()
    sections = []
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        ntr, nte = bd.DEFAULT_SIZES[name]
        bench = bd.Bench(name, args.n_train or ntr, args.n_test or nte, BASE_EPOCHS, store)
        t0 = time.perf_counter()
        seeds = list(range(args.seeds))
        long = [(lbl, m, e, LONG) for lbl, m, e in LENGTHS] if name in args.long.split(",") and not args.quick else []
        subs = [o.split(":", 1)[1] for o in args.only if o.split(":", 1)[0] == name]
        todo = [
            c
            for c in configs + long
            if not subs or c[0] == "all" and c[3] == BASE_EPOCHS or any(x in c[0] for x in subs)
        ]
        rows = run_set(bench, seeds, todo, args.calibration)
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
    cmd = "python -m experiments.study_selection " + shlex.join(argv if argv is not None else sys.argv[1:])
    lines = [
        "## What makes the selection pay (`experiments/study_selection.py`)",
        "",
        f"Date {datetime.date.today().isoformat()}, commit {bc.git_rev()}; machine: {bc.machine()} (shared, "
        f"wall times noisy). Command: `{cmd.strip()}` (fits are shared with `bench_distill.py`'s run cache: data, "
        f"teachers and runs; those not there were computed by earlier invocations of this command; this report run "
        f"took {total:.0f} s; base length 10 epochs as there). Student: MLP head on frozen MiniLM "
        f'embeddings (as in bench_distill); teacher calibrated with `calibration="{args.calibration}"`; seeds '
        f"0..{args.seeds - 1}, mean ± std. One factor changed at a time from the library defaults; *Δ vs all* is "
        f'the paired macro-F1 difference to `selection="all"` at {BASE_EPOCHS} epochs, same seed.',
        "",
    ]
    for name, bench, tab, _secs in sections:
        lines += [
            f"### Study: {name}",
            "",
            f"{bench.n} training texts, {len(bench.test.texts)} test texts; teacher: {bench.answers.description}.",
            "",
            tab,
            "",
        ]
    lines.append(NOTES)
    bc.write_section("study_selection", "\n".join(lines))


# Written after reading the numbers of the full run.
NOTES = """### Recommended defaults and the evidence

Macro-F1, mean of 3 seeds, centred teacher, 10 epochs unless said; RT = Rotten Tomatoes, R8 =
Reuters R8, 20NG = 20 Newsgroups (only the soft-target, length and reference rows were run there).

| parameter | recommendation | evidence |
|---|---|---|
| `momentum` | **keep 0.9** | 0.99 starves the selection: R8 0.556 vs 0.629 (208 of 630 steps selected nothing, 8.5 % used per step), RT equal (0.722). 0.5 = 0.9 within noise (RT 0.725, R8 0.628). |
| `weighting` | **keep "product"** | "none": R8 0.613 vs 0.629, RT 0.720 vs 0.722. |
| `warmup_epochs` | **keep 0** | 1 epoch: RT 0.719, R8 0.630 (no change); it only makes "distinct ever selected" 100 %. |
| `soft_targets` | **keep False; document "turn on when the teacher's distribution is sharp"** | over default LLKD: R8 +0.105 (0.734 ± 0.010, the best student on R8, above the teacher 0.697), and there it is the *selection* that pays: `all` + soft targets falls to 0.577. RT +0.002. 20NG −0.060 (0.573 vs 0.633; `all` + soft −0.028): the centred 20-class distributions are almost flat (median top probability 0.088), so a T = 2 KL teaches little in 10 epochs (30 epochs: 0.601). Not reliable as a default. |
| `uncertainty_pass` | **"eval" as the default** (the paper's literal rule stays reachable with "train") | Same macro-F1 within noise (RT 0.715 vs 0.722 ± 0.008, R8 0.628 vs 0.629, R8 with soft targets 0.734 vs 0.734, 20NG with soft targets 0.571 vs 0.573) while back-propagating only the selected rows (28-48 % instead of ~100 %): the only setting under which LLKD's "fraction of samples" saves compute. Measured with the MLP head only; with the fine-tuned student the eval pass also removes dropout noise from the uncertainty, which I did not measure. |
| MLP `max_epochs` | **10 rather than 30** | LLKD at 5/10/30 epochs: RT 0.716/0.722/0.719 (100: 0.710), R8 0.622/0.629/0.633, 20NG 0.582/0.633/0.608: 10 is as good as 30 at a third of the cost. `all` at 5/10/30: RT 0.714/0.711/0.690 (100: 0.659), R8 0.555/0.639/0.670. |

**What makes the selection pay, and when it does not.** No single knob makes LLKD beat the best
alternative everywhere. The selection reliably pays against `all` when training runs long enough for
`all` to memorise the teacher's mistakes: on RT LLKD's margin grows from +0.002 (5 epochs) to +0.029
(30) and +0.051 (100), with LLKD itself nearly flat (0.710-0.722) while it trains on only 13 % of the
samples per step at 100 epochs (the student threshold rises as the student grows confident). It also
pays with a biased, uncalibrated teacher on an imbalanced set (R8 raw: 0.488 vs 0.316), because the
class-wise thresholds rebalance the classes. It does not pay when a calibrated teacher's per-class
mean confidence does not track per-class precision (R8 centred, see bench_distill), and it is neutral
when the student is the bottleneck (RT at 10 epochs) or the classes are many and the batches small
(20NG). The largest single gain measured is LLKD + soft targets on R8 (+0.095 over `all`, 3/3 seeds,
+0.037 over the teacher); the prior prototype's finding that teacher-only selection is as good as or
better than LLKD holds on all three sets (RT 0.730 vs 0.722, 20NG 0.638 vs 0.633, R8 0.630 vs 0.629).
The prototype's momentum 0.99 is confirmed harmful (R8 −0.073).

Ideas not tried (they need library changes, not mine to make): a global rather than class-normalised
teacher threshold (what fixed@median approximates, and wins on R8), class levels over a window of
several batches when C is large, and a floor on the student threshold so that a fully confident
student still learns from a few samples.
"""


if __name__ == "__main__":
    main()
