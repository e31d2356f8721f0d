"""The distillation benchmark with the paper's kind of student: a fine-tuned encoder.

``bench_distill.py`` trains every method's student as a small head on FROZEN MiniLM
embeddings, whose ceiling (0.712 macro-F1 on Rotten Tomatoes even with gold labels) is far
below the Gemma teacher. The LLKD paper fine-tunes the whole encoder. This script asks
whether the selection pays once the student can learn the task: the same methods and the
same teacher answers as ``bench_distill.py`` on Rotten Tomatoes (the first 1,000 reviews of its
permutation as the pool, 1,000 test reviews), but the student is
``LLKDClassifier(student="finetune")`` with the library defaults (all-MiniLM-L6-v2 fine-tuned
end to end, 3 epochs, AdamW lr 5e-5, batch 32, length-bucketed batches), teacher centred
(``calibration="center"``, the default).

Methods as in bench_distill: all, fixed@median, teacher-only, student-only, random@LLKD
(LLKD's selected rate, same seed), llkd, gold (the same fine-tuned student on every gold
label of the pool), plus the teacher itself and self-training over frozen embeddings as
references. A second run trains llkd and all for longer (10 epochs), where training on every
pseudo-label has time to memorise the teacher's mistakes, and a third run repeats llkd, all,
teacher-only and random@LLKD with a much noisier teacher (bench_distill's topic-set teacher:
TF-IDF logistic regression on 2 % of the gold labels). Each fit takes 1-6 minutes on 2
cores; fits are cached in ``.cache/bench/runs-bench_distill_finetuned-<dataset>.jsonl``, so an
interrupted run resumes.

    python -m experiments.bench_distill_finetuned              # ~1.5 h on 2 cores, writes RESULTS.md
    python -m experiments.bench_distill_finetuned --quick      # smoke run, prints only
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time

from . import _common as bc
from . import bench_distill as bd

CALIB = "center"
RUNS = bc.CACHE / "runs-bench_distill_finetuned.jsonl"


class FinetunedBench(bd.Bench):
    """bench_distill's Bench with the fine-tuned student and only the default calibration."""

    def student_params(self) -> dict:
        return {"student": "finetune"}  # the library defaults: all-MiniLM-L6-v2, lr 5e-5

    def run_methods(self, seeds, epochs, methods):
        """Fits of ``methods`` at ``epochs``, seed by seed (a partial run holds whole seeds)."""
        median = self.teacher_stats(CALIB)["median_conf"]
        return [r for seed in seeds for r in self.fit_methods(methods, CALIB, seed, epochs, median)]


METHODS = ["llkd", "all", "teacher-only", "student-only", "fixed@median", "random@LLKD", "gold"]
LONG_METHODS = ["llkd", "all"]
NOISY_METHODS = ["llkd", "all", "teacher-only", "random@LLKD"]


def report(refs, rows, long_rows, noisy, args, cmd, total, bench) -> str:
    st = next(r["stats"] for r in refs if r["method"] == "teacher")
    noisy_bench, noisy_refs, noisy_rows = noisy or (None, [], [])
    fit_total = sum(r["wall"] for r in rows + long_rows + noisy_rows)
    lines = [
        "## Distillation with a fine-tuned student (`experiments/bench_distill_finetuned.py`)",
        "",
        f"Date {datetime.date.today().isoformat()}, commit {bc.git_rev()}; machine: {bc.machine()}. "
        f"Command: `{cmd}` (fits cached in `.cache/bench/runs-bench_distill_finetuned-<dataset>.jsonl`; this "
        f"report run took {total:.0f} s; the fits took {fit_total / 60:.0f} min in all, run one after another, "
        "some while other work shared the 2 cores, so compare wall times only roughly).",
        "",
        f"Rotten Tomatoes, the first {bench.n} pool texts and {len(bench.test.texts)} gold test texts of "
        "bench_distill's permutation (the demo's reviews), teacher: " + bench.answers.description + ", centred "
        f"(pool pseudo-label accuracy {st['pool_acc']:.3f}; most confident half {st['pool_acc_top_half']:.3f}, "
        f"least confident half {st['pool_acc_bottom_half']:.3f}). Student for every method: "
        '`LLKDClassifier(student="finetune")` with the library defaults (all-MiniLM-L6-v2 fine-tuned end to '
        f"end, AdamW lr 5e-5 with linear decay, batch 32), {args.epochs} epochs (the default). Seeds "
        f"0..{args.seeds - 1}, mean ± std; the teacher and self-training (logistic regression on frozen "
        "embeddings, as in bench_distill) are deterministic. Columns as in bench_distill; *wall s/fit* "
        "includes predicting the test texts.",
        "",
        bd.table(refs + rows, bench, calibs=(CALIB,)),
        "",
        *[f"- {v}" for v in bd.verdict(refs + rows, calibs=(CALIB,))],
        "",
    ]
    if long_rows:
        lines += [
            f"Longer training, {args.long_epochs} epochs (where training on every pseudo-label has time to "
            "memorise the teacher's mistakes):",
            "",
            bd.table(long_rows, bench, calibs=(CALIB,)),
            "",
        ]
    if noisy_rows:
        nst = next(r["stats"] for r in noisy_refs if r["method"] == "teacher")
        lines += [
            f"A noisier teacher, same student, pool and {args.epochs} epochs: {noisy_bench.answers.description} "
            f"(pool pseudo-label accuracy, centred, {nst['pool_acc']:.3f}; most confident half "
            f"{nst['pool_acc_top_half']:.3f}, least confident half {nst['pool_acc_bottom_half']:.3f}). The gold "
            "bound does not depend on the teacher: see the first table.",
            "",
            bd.table(noisy_refs + noisy_rows, noisy_bench, calibs=(CALIB,)),
            "",
            *[f"- {v}" for v in bd.verdict(noisy_refs + noisy_rows, calibs=(CALIB,))],
            "",
        ]
    return "\n".join(lines + [NOTES])


# Written after reading the numbers of the full run (the tables above them); quoted, so
# check them against the tables after a rerun.
NOTES = """### Reading the results

Run of 2026-11-28, 3 seeds; a difference under about 0.01 macro-F1 is within the seed spread.

**With a fine-tuned student LLKD still does not win, and the reason is not the one I expected.**
The frozen-encoder benchmark suggested that the student's ceiling hid LLKD's gain (cause 1 in
bench_distill's reading). Here the student can learn the task, and:

- **Training on every pseudo-label is as good as training on gold labels.** `all` reaches
  0.778 ± 0.008 macro-F1 at 3 epochs, gold 0.777 ± 0.009. The teacher's pseudo-labels are 86 %
  right on this pool; at 1,000 reviews and 3 epochs the other 14 % cost the fine-tuned MiniLM
  nothing measurable, and more data helps it more than cleaner data. So there is no label
  noise damage for a selection rule to prevent, and every rule that drops samples loses:
  LLKD 0.768 ± 0.006, teacher-only 0.770, student-only 0.769, fixed@median 0.762.
- **Longer training does not change the order.** At 10 epochs `all` improves to
  0.792 ± 0.007 and LLKD to 0.773 ± 0.005, training on 12.9 % of the samples per step (its
  student threshold rises with the student's confidence). Up to 10 epochs, nothing here shows
  `all` memorising the teacher's mistakes.
- **The selection does pick better samples than chance.** At the same rate of samples per
  step (28.7 %), LLKD beats random selection by 2.3 points (0.768 vs 0.745, 3/3 seeds). Its
  problem is the rate, not the choice.
- **Compute.** LLKD back-propagates 29 % of the rows of `all` at 3 epochs. On the seeds that
  ran on a quiet machine a fit took 60-76 s against 107-117 s for `all` (about 0.6x); at 10
  epochs 156-196 s against 357-380 s (0.46x). With more compute than `all` at 3 epochs
  (LLKD at 10 epochs), LLKD is still below it (0.773 vs 0.778).
- **With a noisy teacher the selection pays, but mostly through its teacher test.** The
  TF-IDF teacher is right on only 60.6 % of the pool (68 % on its more confident half). Every
  student beats it (teacher 0.597 macro-F1), and the ranking changes: teacher-only
  0.650 ± 0.004, LLKD 0.639 ± 0.010, `all` 0.633 ± 0.020, self-training 0.618, random at
  LLKD's rate 0.593. LLKD is above `all` on 2 of 3 seeds (within the spread) and above random
  on 3 of 3 (+0.046), but below teacher-only on 3 of 3: adding the student test to the teacher
  test costs about a point here, as it did with the frozen student on RT and 20NG (R8: equal).
- **A larger pool, one seed.** `study_demo_student.py` (above) trained the same student for one
  epoch at lr 1e-4 on 6,000 of these reviews: LLKD 0.800 macro-F1, `all` 0.810. Six times the
  pool leaves the gap where it was.

What this means for users: when the teacher is good (here 86 % on the pool) and the pool is
small, `selection="all"` is the better choice for accuracy, and LLKD's selection is a way to
spend less compute per epoch at a small cost in accuracy. When the teacher is poor (here 61 %),
selecting pays: `selection="teacher"` was best, LLKD second, both ahead of training on
everything. The paper's setting
differs in ways that could favour selection and that 2 cores cannot reach: pools far larger
than 6,000 texts (PubMed-RCT-20k has about 180,000 training sentences, so a selected minority
is still a lot of data), and harder tasks on which the teacher is less accurate than 86 %.
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="training epochs of every student (default 3, the library default for the fine-tuned student)",
    )
    p.add_argument(
        "--long-epochs",
        type=int,
        default=10,
        help=f"a second, longer run of {', '.join(LONG_METHODS)} (default 10 epochs; 0 skips it)",
    )
    p.add_argument(
        "--no-noisy",
        action="store_true",
        help=f"skip the run of {', '.join(NOISY_METHODS)} with a noisier teacher (TF-IDF on 2 %% of the gold labels)",
    )
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--quick", action="store_true", help="smoke run: 64/64 texts, 1 seed, 1 and 2 epochs; prints only")
    p.add_argument("--fresh", action="store_true", help="ignore cached runs")
    p.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.long_epochs, args.n_train, args.n_test = 1, 1, 2, 64, 64
        args.no_write = True
    store = bd.RunStore(RUNS if not args.quick else bc.CACHE / "quick-runs-finetuned.jsonl", args.fresh)
    started = time.perf_counter()
    bench = FinetunedBench("rotten_tomatoes", args.n_train, args.n_test, args.epochs, store)
    print(
        f"[rotten_tomatoes] {bench.n} training texts, {len(bench.test.texts)} test texts; teacher: "
        f"{bench.answers.description}",
        flush=True,
    )
    refs = bench.references(CALIB)
    seeds = list(range(args.seeds))
    rows = bench.run_methods(seeds, args.epochs, METHODS)
    print(bd.table(refs + rows, bench, calibs=(CALIB,)))
    print("\n".join(bd.verdict(refs + rows, calibs=(CALIB,))), flush=True)
    long_rows = bench.run_methods(seeds, args.long_epochs, LONG_METHODS) if args.long_epochs else []
    if long_rows:
        print(bd.table(long_rows, bench, calibs=(CALIB,)), flush=True)
    noisy = None
    if not args.no_noisy:
        nb = FinetunedBench("rotten_tomatoes", args.n_train, args.n_test, args.epochs, store)
        nb.use_answers(bc.tfidf_answers("rotten_tomatoes", nb.train, nb.test))
        print(f"[rotten_tomatoes] noisier teacher: {nb.answers.description}", flush=True)
        noisy = (nb, nb.references(CALIB), nb.run_methods(seeds, args.epochs, NOISY_METHODS))
        print(bd.table(noisy[1] + noisy[2], nb, calibs=(CALIB,)))
        print("\n".join(bd.verdict(noisy[1] + noisy[2], calibs=(CALIB,))), flush=True)
    total = time.perf_counter() - started
    if not args.no_write:
        cmd = "python -m experiments.bench_distill_finetuned " + shlex.join(argv if argv is not None else sys.argv[1:])
        bc.write_section(
            "bench_distill_finetuned", report(refs, rows, long_rows, noisy, args, cmd.strip(), total, bench)
        )
    return refs, rows, long_rows, noisy


if __name__ == "__main__":
    main()
