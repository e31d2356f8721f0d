"""Distillation benchmark: LLKD against the alternatives a user would try, on real data.

Datasets: Rotten Tomatoes (teacher: the packaged Gemma 3 270M), 20 Newsgroups and
Reuters R8 (teacher: logistic regression on TF-IDF trained on 2 % of the gold labels of
the full training split, an honest noisy teacher). Every method trains the SAME student: a
Torch MLP head (hidden 256, dropout 0.1, AdamW 1e-3) on frozen all-MiniLM-L6-v2 sentence
embeddings, for the same number of epochs (10 by default: a CPU budget, see
study_selection.py for 5/30/100), batch 32; only the
selection rule changes. Each method runs with the raw teacher distribution
(``calibration="none"``) and with the two unsupervised prior corrections that were the
library's default during this work: ``"center"`` and ``"em"`` (see ``llkd.teachers.calibrate``).

Methods:
- teacher: the teacher's own argmax on the test set (calibrated: the correction fitted on
  the training pool, applied to the test set);
- all: ``selection="all"`` (every pseudo-label, weight 1);
- fixed@median: ``selection="fixed"`` with the median teacher confidence of the pool as
  threshold (a fixed 0.9 means nothing for a 20-class teacher whose confidences are low);
- teacher-only, student-only: ``selection="teacher"`` / ``"student"`` (one of LLKD's two
  tests), product weighting as LLKD;
- random@LLKD: ``selection="random"`` keeping each sample with probability equal to
  LLKD's mean selected fraction in the same seed and calibration;
- self-training: ``sklearn.semi_supervised.SelfTrainingClassifier`` (base: standard
  scaling + LogisticRegression) on the same embeddings; labeled set = the 20 % most
  confident teacher pseudo-labels within each teacher class, the rest unlabeled;
  sklearn's defaults (threshold 0.75, max_iter 10). Deterministic, so run once;
- llkd: ``selection="llkd"`` with the library defaults;
- gold: the same student on all gold labels of the pool (upper bound).

Every fit is cached in ``.cache/bench/runs-bench_distill-<dataset>.jsonl`` (keyed by its config),
so a rerun only trains what is missing; ``--fresh`` ignores the cache.

    python -m experiments.bench_distill                     # full run, writes RESULTS.md + plots
    python -m experiments.bench_distill --quick             # tiny smoke run, prints only
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from . import _common as bc

METHODS = (
    "teacher",
    "all",
    "fixed@median",
    "teacher-only",
    "student-only",
    "random@LLKD",
    "self-training",
    "llkd",
    "gold",
)
# Explicit names, not "auto": the library's default changed from "center" to "em" while
# these benchmarks ran (commit 3441430), so "auto" does not name one correction over time.
CALIBRATIONS = ("none", "center", "em")


def cal_name(calib):
    from llkd.teachers import DEFAULT_PRIOR_METHOD

    name = {"none": "raw"}.get(calib, calib)
    return name + (" (default)" if calib == DEFAULT_PRIOR_METHOD else "")


RUNS = bc.CACHE / "runs-bench_distill.jsonl"
DEFAULT_SIZES = {"rotten_tomatoes": (1000, 500), "20newsgroups": (2000, 1000), "reuters_r8": (2000, 1000)}


# ------------------------------------------------------------------------- run cache
class RunStore:
    """Fits already done, one JSON line each; one file per dataset (so that processes
    working on different sets never append to the same file)."""

    def __init__(self, path: Path, fresh: bool):
        self.path = path
        self.rows: dict[str, dict] = {}
        if not fresh:
            for f in sorted(path.parent.glob(f"{path.stem}-*.jsonl")):
                for line in f.read_text().splitlines():
                    if line.strip():
                        r = json.loads(line)
                        self.rows[r["key"]] = r

    def get(self, key):
        return self.rows.get(key)

    def put(self, key, row):
        row = dict(row, key=key)
        self.rows[key] = row
        path = self.path.with_name(f"{self.path.stem}-{key.split('|')[0]}.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        return row


def _metrics(y_true, y_pred):
    from sklearn.metrics import accuracy_score, f1_score

    return float(accuracy_score(y_true, y_pred)), float(f1_score(y_true, y_pred, average="macro"))


def _history_summary(h, n):
    all_ = sum(r["n_backprop_all"] for r in h)
    return {
        "used": sum(r["n_selected"] for r in h) / all_,
        "backprop": sum(r["n_backprop"] for r in h) / all_,
        "distinct": h[-1]["distinct_selected"] / n,
        "skipped_steps": sum(r["skipped_steps"] for r in h),
        "selected_fraction_per_epoch": [r["selected_fraction"] for r in h],
    }


# --------------------------------------------------------------------------- one set
class Bench:
    def __init__(self, name, n_train, n_test, epochs, store, log=print):
        self.name, self.epochs, self.store, self.log = name, epochs, store, log
        self.train, self.test = bc.load(name, n_train, n_test)
        t0 = time.perf_counter()
        self.emb_tr = bc.embed(self.train.texts, f"{name}-train")
        self.emb_te = bc.embed(self.test.texts, f"{name}-test")
        self.encoder = bc.CachedEncoder(self.train.texts, self.emb_tr).add(self.test.texts, self.emb_te)
        self.names = np.asarray(self.train.names)
        self.n = len(self.train.texts)
        if name == "rotten_tomatoes":
            self.use_answers(bc.gemma_answers(self.train, self.test, progress=True))
        else:
            self.use_answers(bc.tfidf_answers(name, self.train, self.test))
        self.prep_seconds = time.perf_counter() - t0

    def use_answers(self, answers):
        """Make ``answers`` (a bc.TeacherAnswers) the teacher of every fit; fits are keyed by them."""
        from llkd.teachers import PrecomputedTeacher

        self.answers = answers
        self.teacher = PrecomputedTeacher(self.train.texts, proba=answers.train_proba, classes=list(self.names))
        tdig = bc.hashlib.sha1(np.ascontiguousarray(answers.train_proba).tobytes()).hexdigest()[:10]
        self.tag = f"{self.name}|{len(self.train.texts)}|{len(self.test.texts)}|{tdig}"

    # teacher distributions as the estimator sees them
    def pool_proba(self, calib):
        from llkd.teachers import calibrate_pool

        return calibrate_pool(self.answers.train_proba, method=calib)

    def test_proba(self, calib):
        from llkd.teachers import PriorCorrection

        if calib == "none":
            return self.answers.test_proba
        return PriorCorrection(calib).fit(self.answers.train_proba).transform(self.answers.test_proba)

    def teacher_stats(self, calib):
        p = self.pool_proba(calib)
        conf, lab = p.max(1), p.argmax(1)
        ok = lab == self.train.y
        top = conf >= np.median(conf)
        pt = self.test_proba(calib)
        acc, f1 = _metrics(self.test.y, pt.argmax(1))
        return {
            "pool_acc": float(ok.mean()),
            "pool_acc_top_half": float(ok[top].mean()),
            "pool_acc_bottom_half": float(ok[~top].mean()),
            "median_conf": float(np.median(conf)),
            "test_acc": acc,
            "test_f1": f1,
            "label_share": np.bincount(lab, minlength=len(self.names)).tolist(),
        }

    def student_params(self) -> dict:
        """The student every method trains (the MLP head on the cached frozen embeddings)."""
        return {"student": "mlp", "encoder": self.encoder}

    def fit_student(self, method, calib, seed, **extra):
        from llkd import LLKDClassifier

        kw = dict(
            self.student_params(),
            max_epochs=self.epochs,
            random_state=seed,
            calibration=calib,
            selection_backend="auto",
            selection="llkd",  # the rows of RESULTS.md ran with llkd, the default then
        )
        kw.update(extra)
        if method == "gold":
            clf = LLKDClassifier(teacher=None, labels=list(self.names), **{**kw, "selection": "all"})
            t0 = time.perf_counter()
            clf.fit(self.train.texts, self.names[self.train.y])
        else:
            clf = LLKDClassifier(teacher=self.teacher, **kw)
            t0 = time.perf_counter()
            clf.fit(self.train.texts)
        pred = clf.predict(self.test.texts)
        wall = time.perf_counter() - t0
        index = {c: i for i, c in enumerate(self.names.tolist())}
        y_pred = np.array([index[c] for c in np.asarray(pred).tolist()])
        acc, f1 = _metrics(self.test.y, y_pred)
        row = {"acc": acc, "f1": f1, "wall": wall}
        row.update(_history_summary(clf.history_, self.n))
        return row, clf

    def cached_fit(self, method, calib, seed, epochs, extra, keep_history=False):
        """One student fit, from the run cache when it was done before."""
        key = f"{self.tag}|{method}|{calib}|{seed}|{epochs}|{json.dumps(extra, sort_keys=True)}"
        r = self.store.get(key)
        if r is None or (keep_history and "history" not in r):
            res, clf = self.fit_student(method, calib, seed, max_epochs=epochs, **extra)
            res.update(method=method, calib=calib, seed=seed, epochs=epochs, params=extra)
            if keep_history:
                res["history"] = [
                    {
                        k: h[k]
                        for k in (
                            "epoch",
                            "selected_fraction",
                            "teacher_threshold",
                            "student_threshold",
                            "selected_per_class",
                            "loss",
                        )
                    }
                    for h in clf.history_
                ]
            r = self.store.put(key, res)
        return r

    def self_training(self, calib):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.semi_supervised import SelfTrainingClassifier

        p = self.pool_proba(calib)
        lab, conf = p.argmax(1), p.max(1)
        y = np.full(self.n, -1)
        for k in np.unique(lab):
            rows = np.flatnonzero(lab == k)
            take = rows[np.argsort(-conf[rows], kind="stable")[: max(1, int(round(0.2 * len(rows))))]]
            y[take] = k
        t0 = time.perf_counter()
        base = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
        st = SelfTrainingClassifier(base, threshold=0.75, max_iter=10).fit(self.emb_tr, y)
        pred = st.predict(self.emb_te)
        wall = time.perf_counter() - t0
        acc, f1 = _metrics(self.test.y, pred)
        used = float(np.mean(st.labeled_iter_ >= 0))
        return {
            "acc": acc,
            "f1": f1,
            "wall": wall,
            "used": used,
            "backprop": float("nan"),
            "distinct": used,
            "seed_labeled": float(np.mean(y >= 0)),
            "n_iter": int(st.n_iter_),
        }

    def references(self, calib):
        """The teacher's own test predictions and self-training: deterministic, one row each."""
        stats = self.teacher_stats(calib)
        teacher = {
            "method": "teacher",
            "calib": calib,
            "seed": None,
            "acc": stats["test_acc"],
            "f1": stats["test_f1"],
            "used": 0.0,
            "backprop": 0.0,
            "distinct": 0.0,
            "wall": 0.0,
            "stats": stats,
        }
        self.log(
            f"[{self.name}] teacher ({calib}): acc {stats['test_acc']:.3f} F1 {stats['test_f1']:.3f}; "
            f"pool acc {stats['pool_acc']:.3f} (top half {stats['pool_acc_top_half']:.3f}, "
            f"bottom half {stats['pool_acc_bottom_half']:.3f}), median conf {stats['median_conf']:.3f}"
        )
        key = f"{self.tag}|self-training|{calib}|{bc.TEACHER_FRACTION}"
        st = self.store.get(key) or self.store.put(
            key, {"method": "self-training", "calib": calib, "seed": None, **self.self_training(calib)}
        )
        self.log(f"[{self.name}] self-training ({calib}): F1 {st['f1']:.3f} used {st['used']:.2f} {st['wall']:.1f}s")
        return [teacher, st]

    def fit_methods(self, methods, calib, seed, epochs, median_conf, keep_history=False):
        """One (cached) fit per method, in order; "random@LLKD" takes the rate of the "llkd"
        fit before it in ``methods``."""
        fixed = {
            "llkd": {"selection": "llkd"},  # named: the library default changed to "confidence"
            "gold": {},
            "all": {"selection": "all"},
            "teacher-only": {"selection": "teacher"},
            "student-only": {"selection": "student"},
            "fixed@median": {"selection": "fixed", "fixed_threshold": median_conf},
        }
        rows = []
        for method in methods:
            if method == "random@LLKD":
                rate = next(r["used"] for r in rows if r["method"] == "llkd")
                extra = {"selection": "random", "random_rate": float(rate)}
            else:
                extra = fixed[method]
            r = self.cached_fit(method, calib, seed, epochs, extra, keep_history=keep_history and method == "llkd")
            rows.append(r)
            self.log(
                f"[{self.name}] {method:13s} {calib:4s} {epochs:3d} ep seed {seed}: acc {r['acc']:.3f} "
                f"F1 {r['f1']:.3f} used {r['used']:.3f} backprop {r['backprop']:.3f} "
                f"distinct {r['distinct']:.3f} {r['wall']:.1f}s"
            )
        return rows

    def run(self, seeds, keep_history_seed=0):
        rows = []
        for calib in CALIBRATIONS:
            refs = self.references(calib)
            rows += refs
            methods = ["llkd", "all", "teacher-only", "student-only", "fixed@median"]
            if calib == CALIBRATIONS[0]:
                methods.append("gold")
            for seed in seeds:
                rows += self.fit_methods(
                    methods + ["random@LLKD"],
                    calib,
                    seed,
                    self.epochs,
                    refs[0]["stats"]["median_conf"],
                    keep_history=seed == keep_history_seed,
                )
        gold = [r for r in rows if r["method"] == "gold"]
        for r in gold:  # the gold bound does not depend on the teacher's calibration
            for calib in CALIBRATIONS[1:]:
                rows.append(dict(r, calib=calib))
        return rows


# --------------------------------------------------------------------------- report
def _agg(rows, method, calib, field):
    return [r[field] for r in rows if r["method"] == method and r["calib"] == calib]


def table(rows, bench, calibs=CALIBRATIONS) -> str:
    out = [
        "| method | teacher | accuracy | macro-F1 | used per step | back-prop vs all | distinct ever selected | wall s/fit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for calib in calibs:
        for m in METHODS:
            acc = _agg(rows, m, calib, "acc")
            if not acc:
                continue
            f1 = _agg(rows, m, calib, "f1")
            used, bp, dist, wall = (_agg(rows, m, calib, f) for f in ("used", "backprop", "distinct", "wall"))
            name = {"gold": "gold labels (bound)"}.get(m, m)
            cal = cal_name(calib)
            if m == "gold":
                cal = "—"
                if calib != calibs[0]:
                    continue

            def pct(v, m=m):
                return "—" if m == "teacher" or np.all(np.isnan(v)) else f"{100 * np.nanmean(v):.1f} %"

            out.append(
                f"| {name} | {cal} | {bc.mean_std(acc)} | {bc.mean_std(f1)} | {pct(used)} | {pct(bp)} | "
                f"{pct(dist)} | {'—' if m == 'teacher' else f'{np.mean(wall):.1f}'} |"
            )
    return "\n".join(out)


def verdict(rows, calibs=CALIBRATIONS) -> list[str]:
    """Per calibration: LLKD's rank among the non-gold methods, and among the students, by mean macro-F1."""
    lines = []
    for calib in calibs:
        means = {m: np.mean(_agg(rows, m, calib, "f1")) for m in METHODS if m != "gold" and _agg(rows, m, calib, "f1")}
        order = sorted(means, key=lambda m: -means[m])
        students = [m for m in order if m != "teacher"]
        llkd = means["llkd"]
        std = np.std(_agg(rows, "llkd", calib, "f1"))
        used = np.mean(_agg(rows, "llkd", calib, "used"))
        cal = cal_name(calib)
        if order[0] == "llkd":
            lines.append(
                f"{cal} teacher: LLKD has the best macro-F1 ({llkd:.3f} ± {std:.3f}) of the non-gold methods, "
                f"using {100 * used:.1f} % of the samples per step; runner-up {order[1]} {means[order[1]]:.3f}."
            )
        else:
            s_rank = students.index("llkd") + 1
            best_s = students[0] if students[0] != "llkd" else students[1]
            lines.append(
                f"{cal} teacher: LLKD does NOT win: {llkd:.3f} ± {std:.3f}, rank {order.index('llkd') + 1} of "
                f"{len(order)} non-gold methods (best: {order[0]} {means[order[0]]:.3f}); among the trained "
                f"students rank {s_rank} of {len(students)} (best other student: {best_s} {means[best_s]:.3f}); "
                f"LLKD used {100 * used:.1f} % of the samples per step."
            )
    return lines


def plots(results, path_thr, path_f1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(len(names), 3, figsize=(14, 3.4 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        rows, bench = results[name]
        hist = next(
            (r["history"] for r in rows if r["method"] == "llkd" and r["calib"] == "center" and "history" in r), None
        )
        if hist is None:
            continue
        ep = [h["epoch"] for h in hist]
        tt = np.array([h["teacher_threshold"] for h in hist])
        st = np.array([h["student_threshold"] for h in hist])
        C = tt.shape[1]
        cmap = plt.get_cmap("tab20" if C > 10 else "tab10")
        for k in range(C):
            lbl = bench.names[k] if C <= 8 else None
            axes[i, 0].plot(ep, tt[:, k], color=cmap(k % 20), lw=1, label=lbl)
            axes[i, 1].plot(ep, st[:, k], color=cmap(k % 20), lw=1, label=lbl)
        sel = np.array([h["selected_per_class"] for h in hist], dtype=float)
        axes[i, 2].plot(ep, [h["selected_fraction"] for h in hist], color="k", lw=2, label="all classes")
        share = np.bincount(np.argmax(bench.pool_proba("center"), 1), minlength=C)
        for k in range(C):
            if share[k]:
                axes[i, 2].plot(ep, sel[:, k] / share[k], color=cmap(k % 20), lw=0.8, alpha=0.7)
        axes[i, 0].set_title(f"{name}: teacher threshold per class")
        axes[i, 1].set_title(f"{name}: student threshold per class")
        axes[i, 2].set_title(f"{name}: selected fraction per class")
        for a in axes[i]:
            a.set_xlabel("epoch")
            a.grid(alpha=0.3)
        if C <= 8:
            axes[i, 0].legend(fontsize=7)
    fig.suptitle(
        "LLKD (teacher calibrated by centring, seed 0): end-of-epoch class-wise thresholds and selected fraction"
    )
    fig.tight_layout()
    fig.savefig(path_thr, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.4), squeeze=False)
    markers = {
        "all": "s",
        "fixed@median": "v",
        "teacher-only": "<",
        "student-only": ">",
        "random@LLKD": "x",
        "self-training": "D",
        "llkd": "*",
    }
    colors = {"none": "tab:orange", "center": "tab:blue", "em": "tab:green"}
    for ax, name in zip(axes[0], names):
        rows, _ = results[name]
        for calib in CALIBRATIONS:
            for m, mk in markers.items():
                f1, used = _agg(rows, m, calib, "f1"), _agg(rows, m, calib, "used")
                if not f1:
                    continue
                ax.errorbar(
                    np.mean(used),
                    np.mean(f1),
                    yerr=np.std(f1),
                    fmt=mk,
                    color=colors[calib],
                    ms=11 if m == "llkd" else 7,
                    capsize=2,
                    label=f"{m} ({cal_name(calib)})",
                )
            t = _agg(rows, "teacher", calib, "f1")
            ax.axhline(t[0], color=colors[calib], ls=":", lw=1, label=f"teacher ({cal_name(calib)})")
        g = _agg(rows, "gold", "none", "f1")
        if g:
            ax.axhline(np.mean(g), color="k", ls="--", lw=1, label="gold labels (bound)")
        ax.set_xlabel("fraction of training samples used per step")
        ax.set_ylabel("macro-F1 (test)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    handles, legend_labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, legend_labels, loc="lower center", ncol=6, fontsize=7)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(path_f1, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default=",".join(bc.DATASETS), help="comma-separated: " + ",".join(bc.DATASETS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10, help="training epochs of every student (default 10)")
    p.add_argument(
        "--n-train", type=int, default=None, help="cap on training texts (default per set: RT 3000, topic 4000)"
    )
    p.add_argument("--n-test", type=int, default=None, help="cap on test texts (default per set: RT 1000, topic 2000)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (300/200 texts, 1 seed, 3 epochs); prints only")
    p.add_argument("--fresh", action="store_true", help="ignore cached runs")
    p.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md or the plots")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs = 1, 3
        args.n_train, args.n_test = args.n_train or 300, args.n_test or 200
        args.no_write = True
    store = RunStore(RUNS if not args.quick else bc.CACHE / "quick-runs.jsonl", args.fresh)
    started = time.perf_counter()
    results = {}
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if name not in bc.DATASETS:
            p.error(f"unknown dataset {name!r}")
        ntr, nte = DEFAULT_SIZES[name]
        bench = Bench(name, args.n_train or ntr, args.n_test or nte, args.epochs, store)
        print(
            f"[{name}] {bench.n} training texts, {len(bench.test.texts)} test texts; teacher: "
            f"{bench.answers.description}",
            flush=True,
        )
        t0 = time.perf_counter()
        rows = bench.run(list(range(args.seeds)))
        bench.seconds = time.perf_counter() - t0
        results[name] = (rows, bench)
        print(table(rows, bench))
        print("\n".join(verdict(rows)), flush=True)
    total = time.perf_counter() - started
    print(f"[bench_distill] total {total:.0f} s", flush=True)
    if args.no_write:
        return results
    cmd = "python -m experiments.bench_distill " + shlex.join(argv if argv is not None else sys.argv[1:])
    bc.PLOTS.mkdir(parents=True, exist_ok=True)
    plots(results, bc.PLOTS / "distill_thresholds.png", bc.PLOTS / "distill_f1_vs_fraction.png")
    bc.write_section("bench_distill", report(results, args, cmd.strip(), total))
    return results


def report(results, args, cmd, total) -> str:
    lines = [
        "## Distillation benchmark (`experiments/bench_distill.py`)",
        "",
        f"Date {datetime.date.today().isoformat()}, commit {bc.git_rev()}; machine: {bc.machine()} "
        "(see the wall times for how busy it was). Command: "
        f"`{cmd}` (fits are cached in `.cache/bench/runs-bench_distill-<dataset>.jsonl` and were computed by "
        f"earlier invocations of the same script, per dataset; this report run took {total:.0f} s; the fits' own wall "
        "times are in the tables).",
        "",
        "Student for every method: a Torch MLP head (1 hidden layer of 256, GELU, dropout 0.1, AdamW lr 1e-3, "
        f"batch 32, {args.epochs} epochs) on frozen all-MiniLM-L6-v2 embeddings (384-d). Same budget for all: "
        f"{args.epochs} epochs over the pool. Seeds 0..{args.seeds - 1}; mean ± std over seeds "
        "(self-training and the teacher are deterministic: one run). *used per step*: samples with a non-zero "
        'loss weight / samples seen (what `selection="all"` uses); *back-prop vs all*: rows that went through '
        'the backward pass relative to `all` (the default `uncertainty_pass="eval"` scores each batch in a '
        "no-grad forward pass and back-propagates only the selected rows); "
        "*distinct ever selected*: samples selected at least once in training / pool size. "
        '*raw*: `calibration="none"`; *center*: centre each class\'s log-probability over the pool (the '
        'library default, `"auto"`); *em*: centring then the Saerens EM re-estimate of the pool prior (the '
        "default for a while during development, until this benchmark showed it collapsing the multi-class teachers).",
        "",
    ]
    for name, (rows, bench) in results.items():
        st = {c: next(r["stats"] for r in rows if r["method"] == "teacher" and r["calib"] == c) for c in CALIBRATIONS}
        acc_txt = ", ".join(f"{cal_name(c)} {st[c]['pool_acc']:.3f}" for c in CALIBRATIONS)
        lines += [
            f"### {name}",
            "",
            f"{bench.n} training texts (unlabeled pool), {len(bench.test.texts)} gold test texts, "
            f"{len(bench.names)} classes. Teacher: {bench.answers.description}. Pseudo-label accuracy on the pool: "
            f"{acc_txt} (center: most confident half {st['center']['pool_acc_top_half']:.3f}, least confident half "
            f"{st['center']['pool_acc_bottom_half']:.3f}). "
            f"Sum of the fit wall times in this table: {sum(r['wall'] for r in rows if r['method'] != 'gold' or r['calib'] == 'none'):.0f} s.",
            "",
            table(rows, bench),
            "",
            *[f"- {v}" for v in verdict(rows)],
            "",
        ]
    lines += [
        "Plots: [thresholds and selected fraction per class over training](../experiments/plots/distill_thresholds.png), "
        "[macro-F1 against fraction of data used](../experiments/plots/distill_f1_vs_fraction.png).",
        "",
        NOTES,
    ]
    return "\n".join(lines)


# Written after reading the numbers of the full run (see the tables above them).
NOTES = """### Reading the results

Numbers below are from the run of 2026-11-28 with the library defaults of that day
(`uncertainty_pass="eval"`, centring); they are quoted, so check them against the tables
after a rerun.

**The target is not reached.** On none of the three sets, with none of the three teacher
calibrations, does LLKD have the best macro-F1 of the non-gold methods. It does train on a
minority of the samples: with the default centred teacher it back-propagates 30 % (RT), 39 %
(20NG) and 36 % (R8) of the rows that `all` back-propagates.

- **Rotten Tomatoes (Gemma teacher).** LLKD (center 0.715 ± 0.008) is 3rd of the 7 students,
  level with `all` (0.711), random at its rate (0.714) and fixed@median (0.717) within the spread.
  Teacher-only is better (0.728 ± 0.002), and every student is about 15 points below the teacher
  itself (0.870). The student, not the labels, is the bottleneck: the MLP on frozen MiniLM reaches
  only 0.712 **with all gold labels**, so no selection rule can approach the teacher. This is the
  frozen-encoder cap measured when the project started (74 %), and the reason the demo uses the fine-tuned student.
  The Gemma teacher here is far better than the 52-59 % raw measured then: the current few-shot prompt
  is nearly unbiased, at 0.878 raw.
- **Reuters R8 (imbalanced, 8 classes).** With the centred teacher LLKD is 5th of 7 students
  (0.628 ± 0.003). Ahead of it: fixed@median 0.699, student-only 0.667, random@LLKD 0.653 and
  all 0.639.
  - Cause: the class-normalised teacher threshold `tau_T[k] = g_T * m_T[k] / max_j m_T[j]` gives
    the class with the highest mean confidence the highest threshold. On R8 that is *earn*,
    whose pseudo-labels are 99.7 % precise. The low-confidence classes (interest, money-fx,
    trade: 53-59 % precise) get thresholds about half as high. So LLKD moves its budget from
    clean labels to noisy ones. The thresholds plot shows it: earn, green, has the top teacher
    threshold and the lowest selected fraction.
  - One global threshold (fixed@median: the 50 % most confident) does not have this problem
    and wins.
  - With the *raw* teacher, which is biased to the two big classes (F1 0.343), the same
    class-wise normalisation helps: LLKD 0.487 vs all 0.316, because it rescues the classes the
    teacher rarely predicts. The global median threshold is still better there (0.537).
  - LLKD *with soft targets* was the best R8 student in the selection study (0.734, above the
    teacher's 0.697).
- **20 Newsgroups (20 classes, teacher 42 % raw / 64 % centred on the pool).** All selection rules
  are within about 0.015 of each other: LLKD 0.630 ± 0.011, teacher-only 0.637, student-only 0.630,
  random@LLKD 0.627, all 0.624, fixed@median 0.620. `SelfTrainingClassifier` with logistic
  regression on the same embeddings is best (0.653). With batches of 32 and 20 classes a class
  appears about 1.6 times per batch, so the class levels are noisy.
- **Calibration matters more than selection on the topic sets.** Centring lifts the teacher's
  macro-F1 from 0.343 to 0.697 (R8) and from 0.379 to 0.555 (20NG), and every student follows.
  The EM correction collapses both: R8 0.225, 20NG 0.167 for LLKD; the pool accuracy on 20NG
  falls from 0.644 to 0.290. No selection rule recovers from it. On the binary Gemma teacher
  the three calibrations are equal within noise.
- **Compute.** With the eval uncertainty pass, the back-propagated fraction equals the selected
  fraction. The price is one extra no-grad forward pass per batch. For these MLP heads every
  fit takes 1-4 s whatever the method. For the fine-tuned MiniLM, the forward pass is about 40 %
  of the cost of forward plus backward, so at 25-30 % selected LLKD costs about 0.65x of `all`
  per epoch (`study_demo_student` above).
- **Why the paper's gain does not show here (best explanation).**
  1. The paper fine-tunes RoBERTa. Here the student is a small head on frozen embeddings, whose
     ceiling is at or below the teacher (RT gold bound 0.712 < teacher 0.870). Tested since in
     `bench_distill_finetuned.py` (below): with a fine-tuned MiniLM on the same movie reviews
     LLKD still ranks 4th of 7 students (0.768 vs `all` 0.778), because there training on every
     pseudo-label is already as good as gold labels (0.777): the teacher's noise costs nothing
     measurable, so dropping samples only loses data.
  2. The student test and the product weight favour samples the student finds hard. Under
     label noise, the hard samples are disproportionately the mislabeled ones.
  3. Class-normalised thresholds assume a class's mean confidence tracks its reliability. On
     R8 it does not.
  4. At the 10-epoch budget there is little memorisation for the selection to prevent. With
     longer training LLKD's margin over `all` grows (study section: RT `all` falls from 0.714 at
     5 epochs to 0.659 at 100, while LLKD stays at 0.710-0.722).

What I tried (all measured, see the study section): momentum 0.5/0.9/0.99, weighting
product/none, 1 warm-up epoch, soft targets, eval-mode uncertainty, 5/10/30/100 epochs and
combinations of these; three teacher corrections; fixed global thresholds; random selection at
LLKD's rate. The first version of this section was written from a run with
`uncertainty_pass="train"` (the default then); the verdicts were the same.
"""


if __name__ == "__main__":
    main()
