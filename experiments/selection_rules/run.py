"""Selection-rule study (issue 13): which per-step rule or target option beats `all`.

    python experiments/selection_rules/run.py SETTING [SETTING ...]   # fits (cached)
    python experiments/selection_rules/run.py --report                # RESULTS.md

Settings: rt_tfidf, 20ng, r8, r52 (TF-IDF teachers on 2 % of the gold labels of the full
training split, centred as the library's calibration="auto"). Every method trains the
library's MLP student on cached MiniLM embeddings (trainer.py), 5 seeds, 10 epochs.
Fits are cached in .cache/runs.jsonl; a rerun only reprints.
Needs `pip install cleanlab` in the venv (only for the cleanlab rows; not a project dependency).
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import prep
import rules as R
from trainer import train

# The teacher's calibration: the library default ("auto") unless SEL_CALIB names another.
CALIB = os.environ.get("SEL_CALIB", "auto")
RUNS = HERE / ".cache" / f"runs-{CALIB}.jsonl"
SEEDS = [0, 1, 2, 3, 4]
EPOCHS = 10
SETTINGS = {
    "rt_tfidf": "rotten_tomatoes",
    "20ng": "20newsgroups",
    "r8": "reuters_r8",
    "r52": "reuters_r52",
    "rt_gemma": "rotten_tomatoes",
}


def macro_f1(y, pred, C):
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, average="macro", labels=np.arange(C)))


class Setting:
    def __init__(self, key):
        from llkd.teachers import PriorCorrection

        self.key = key
        z = prep.prepare(SETTINGS[key], prep.FRACTIONS[SETTINGS[key]])
        self.X, self.y, self.Xte, self.yte = z["Xtr"], z["ytr"], z["Xte"], z["yte"]
        self.names = list(z["names"])
        self.C = len(self.names)
        raw_tr, raw_te = z["tfidf_tr"], z["tfidf_te"]
        self.n_gold_teacher = len(z["tfidf_gold"])
        if key == "rt_gemma":
            import gemma

            tr_t, _, _, _, _ = prep.load("rotten_tomatoes")
            rows, raw_tr, self.gemma_key = gemma.gemma_pool(tr_t)
            self.X, self.y = self.X[rows], self.y[rows]
            raw_te = None
            self.n_gold_teacher = 0
        pc = PriorCorrection(CALIB).fit(raw_tr)
        self.P = pc.transform(raw_tr)
        self.P_te = pc.transform(raw_te) if raw_te is not None else None
        self.lab = self.P.argmax(1)
        self.conf = self.P.max(1)

    def teacher_stats(self):
        ok = self.lab == self.y
        top = self.conf >= np.median(self.conf)
        return {
            "pool_acc": float(ok.mean()),
            "top_half": float(ok[top].mean()),
            "bottom_half": float(ok[~top].mean()),
            "teacher_test_f1": macro_f1(self.yte, self.P_te.argmax(1), self.C)
            if self.P_te is not None
            else float("nan"),
            "teacher_pool_f1": macro_f1(self.y, self.lab, self.C),
            "n": len(self.y),
            "n_test": len(self.yte),
            "C": self.C,
            "n_gold_teacher": self.n_gold_teacher,
        }


def load_runs():
    rows = {}
    if RUNS.exists():
        for line in RUNS.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows[(r["setting"], r["method"])] = r
    return rows


def save_run(row):
    RUNS.parent.mkdir(exist_ok=True)
    with open(RUNS, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def fit(st, rule, labels=None, extra_time=0.0):
    t0 = time.perf_counter()
    labels = st.lab if labels is None else labels
    logits, stats = train(st.X, labels, st.conf, st.P, rule, seeds=SEEDS, epochs=EPOCHS, n_classes=st.C, X_test=st.Xte)
    pred = logits.argmax(-1).numpy()
    f1 = [macro_f1(st.yte, pred[s], st.C) for s in range(len(SEEDS))]
    acc = [float((pred[s] == st.yte).mean()) for s in range(len(SEEDS))]
    return {
        "f1": f1,
        "acc": acc,
        "used": stats["used"].tolist(),
        "skipped": stats["skipped"].tolist(),
        "wall": time.perf_counter() - t0 + extra_time,
    }


def crossfit_q(st):
    """(e) Two students per seed on disjoint halves (teacher labels, `all`), each
    predicting the other half: cross-fitted student distributions Q [S, N, C]."""
    N = len(st.y)
    Q = np.zeros((len(SEEDS), N, st.C), dtype=np.float32)
    perm = np.random.RandomState(99).permutation(N)
    halves = [np.sort(perm[: N // 2]), np.sort(perm[N // 2 :])]
    for a, b in ((0, 1), (1, 0)):
        ia, ib = halves[a], halves[b]
        logits, _ = train(
            st.X[ia],
            st.lab[ia],
            st.conf[ia],
            st.P[ia],
            R.All(),
            seeds=[s + 100 * (a + 1) for s in SEEDS],
            epochs=EPOCHS,
            n_classes=st.C,
            X_test=st.X[ib],
        )
        Q[:, ib] = torch.softmax(logits, -1).numpy()
    return Q


class PerSeedTarget(R.Target):
    """Target 'fixed' with a per-seed [S, N, C] matrix."""

    def target(self, idx, p_teacher, z):
        if self.kind == "fixed":
            return self.q[torch.arange(self.q.shape[0])[:, None], idx]
        if self.kind == "xmix":
            return 0.5 * p_teacher + 0.5 * self.q[torch.arange(self.q.shape[0])[:, None], idx]
        return super().target(idx, p_teacher, z)


class PerSeedMask(R.Rule):
    def __init__(self, keep):  # [S, N]
        self.keep = torch.as_tensor(keep, dtype=torch.bool)

    def step(self, idx, y, c, z, t):
        m = self.keep[torch.arange(self.keep.shape[0])[:, None], idx]
        return m.double(), m


def self_training(st):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.semi_supervised import SelfTrainingClassifier

    t0 = time.perf_counter()
    y = np.full(len(st.lab), -1)
    for k in np.unique(st.lab):
        rows = np.flatnonzero(st.lab == k)
        take = rows[np.argsort(-st.conf[rows], kind="stable")[: max(1, int(round(0.2 * len(rows))))]]
        y[take] = k
    base = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    model = SelfTrainingClassifier(base, threshold=0.75, max_iter=10).fit(st.X, y)
    f1 = macro_f1(st.yte, model.predict(st.Xte), st.C)
    return {
        "f1": [f1] * len(SEEDS),
        "acc": [float((model.predict(st.Xte) == st.yte).mean())] * len(SEEDS),
        "used": [float(np.mean(model.labeled_iter_ >= 0))] * len(SEEDS),
        "wall": time.perf_counter() - t0,
        "deterministic": True,
    }


def cv_pred_probs(st):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    base = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    return cross_val_predict(base, st.X, st.lab, cv=5, method="predict_proba")


# name -> (description, builder(st, done) -> row)
def methods():
    M = {}

    def rule_method(name, desc, make):
        M[name] = (desc, lambda st, done: fit(st, make(st, done)))

    M["gold"] = ("the same student on the pool's gold labels (bound)", lambda st, done: fit(st, R.All(), labels=st.y))
    rule_method("all", "every pseudo-label, weight 1", lambda st, d: R.All())
    rule_method("llkd", "spec section 3 (library default): both tests, product weights", lambda st, d: R.Spec("llkd"))
    rule_method("teacher-only", "spec rule, teacher test only, product weights", lambda st, d: R.Spec("teacher"))
    rule_method(
        "fixed@median",
        "c >= median pool confidence, product weights (as bench_distill)",
        lambda st, d: R.Spec("fixed", fixed=float(np.median(st.conf))),
    )
    rule_method(
        "random@llkd",
        "random at llkd's per-seed rate, product weights",
        lambda st, d: R.Spec("random", rate=d["llkd"]["used"]),
    )
    rule_method(
        "random@(a)",
        "random at (a)'s per-seed rate, weight 1",
        lambda st, d: R.Spec("random", weighting="none", rate=d["(a) c >= m_T[y] (class mean, no norm.)"]["used"]),
    )
    M["self-training"] = (
        "sklearn SelfTrainingClassifier (LR on the embeddings; 20 % most confident per class seeded)",
        lambda st, d: self_training(st),
    )

    def cl(st, d, source):
        t0 = time.perf_counter()
        pp = st.P if source == "teacher" else cv_pred_probs(st)
        keep = R.cleanlab_keep(st.lab, pp)
        row = fit(st, R.StaticMask(keep), extra_time=time.perf_counter() - t0)
        row["kept"] = float(keep.mean())
        row["kept_precision"] = float((st.lab == st.y)[keep].mean())
        return row

    M["cleanlab(teacher probs)"] = (
        "cleanlab find_label_issues(prune_by_noise_rate) on the teacher's probabilities; train on the rest",
        lambda st, d: cl(st, d, "teacher"),
    )
    M["cleanlab(cv LR probs)"] = (
        "cleanlab with 5-fold cross-validated LR-on-embeddings probabilities (the usual cleanlab recipe)",
        lambda st, d: cl(st, d, "cv"),
    )

    def a2(st, d):
        keep = R.class_precision_keep(st.lab, st.conf, st.C)
        row = fit(st, R.StaticMask(keep))
        row["kept"] = float(keep.mean())
        row["kept_precision"] = float((st.lab == st.y)[keep].mean())
        return row

    M["(a2) class keep-rate = class mean conf (pool)"] = (
        "keep the R_k = mean conf of class k most confident of class k",
        a2,
    )
    rule_method(
        "(a) c >= m_T[y] (class mean, no norm.)",
        "running class-mean threshold, no max-normalisation",
        lambda st, d: R.ClassMeanThreshold(),
    )
    rule_method(
        "(a) class mean, product weights",
        "running class-mean threshold, weights c*u normalised over the selected",
        lambda st, d: R.ClassMeanThreshold(weighting="product"),
    )
    rule_method(
        "llkd, raw class-mean teacher test",
        "llkd with tau_T[k] = m_T[k] (no normalisation); student test and product weights as the spec",
        lambda st, d: R.Spec("llkd_raw"),
    )
    rule_method(
        "llkd raw, w = s",
        "llkd with tau_T[k] = m_T[k], weighting none",
        lambda st, d: R.Spec("llkd_raw", weighting="none"),
    )
    rule_method("(a4) c >= max(m_T[y], g_T)", "stricter of class and global level", lambda st, d: ClassGlobalMix("max"))
    rule_method("(a5) c >= min(m_T[y], g_T)", "laxer of class and global level", lambda st, d: ClassGlobalMix("min"))
    rule_method(
        "random@(a')",
        "random at (a')'s per-seed rate, weight 1",
        lambda st, d: R.Spec("random", weighting="none", rate=d["(a') c >= g_T (global running mean)"]["used"]),
    )
    rule_method("(a') c >= g_T (global running mean)", "running global-mean threshold", lambda st, d: GlobalMean())
    rule_method(
        "(b) SoftMatch global",
        "w=1 above running mean, exp(-(c-mu)^2/2var) below, floor 0.05",
        lambda st, d: R.SoftMatch(),
    )
    rule_method(
        "(b') SoftMatch per class",
        "as (b) with per-teacher-class mu_k, var_k",
        lambda st, d: R.SoftMatch(per_class=True),
    )
    rule_method("(c) w = c", "every sample, weight c (normalised)", lambda st, d: R.ConfWeight(1.0))
    rule_method("(c') w = c^2", "every sample, weight c^2 (normalised)", lambda st, d: R.ConfWeight(2.0))
    rule_method(
        "(c*) w = (C c - 1) / (C - 1)",
        "every sample, weight its confidence above chance (normalised)",
        lambda st, d: R.ExcessConfWeight(),
    )
    rule_method(
        "soft targets", "cross-entropy to the teacher distribution (T=1), all samples", lambda st, d: R.Target("soft")
    )
    rule_method(
        "(a)+soft targets",
        "mask of (a), cross-entropy to the teacher distribution on the selected",
        lambda st, d: R.Target("soft", inner=R.ClassMeanThreshold()),
    )
    rule_method(
        "teacher-only, w = s", "spec teacher test, weighting none", lambda st, d: R.Spec("teacher", weighting="none")
    )
    rule_method("(d) bootstrap beta=0.8", "q = 0.8 onehot(y) + 0.2 softmax(z)", lambda st, d: R.Target("boot"))
    rule_method("(d') bootstrap beta=c", "q = c onehot(y) + (1-c) softmax(z)", lambda st, d: R.Target("bootconf"))
    rule_method(
        "(d'') soft mix a=0.5",
        "q = (1-a) p_T + a softmax(z), a ramps 0->0.5 over epoch 1",
        lambda st, d: R.Target("softmix"),
    )

    def xfit(st, d, kind):
        t0 = time.perf_counter()
        Q = d.get("_Q")
        if Q is None:
            Q = d["_Q"] = crossfit_q(st)
            d["_Q_time"] = time.perf_counter() - t0
        extra = d["_Q_time"]
        if kind == "hard":
            qh = np.eye(st.C, dtype=np.float32)[Q.argmax(-1)]
            return fit(st, PerSeedTarget("fixed", q=qh), extra_time=extra)
        if kind == "mix":
            return fit(st, PerSeedTarget("xmix", q=Q), extra_time=extra)
        if kind == "agree":
            keep = Q.argmax(-1) == st.lab[None]
            row = fit(st, PerSeedMask(keep), extra_time=extra)
            row["kept"] = float(keep.mean())
            return row
        raise ValueError(kind)

    import relabel as RL

    rule_method("(f) SLaM a=c", "forward-corrected loss, label right w.p. c else uniform", lambda st, d: RL.SLaM())
    rule_method(
        "(f') SLaM a=c, excess weights",
        "(f) with the (c*) weights",
        lambda st, d: RL.SLaM(weight="excess"),
    )
    rule_method(
        "(f'') SLaM a=c, excess weights, from epoch 2",
        "(f') after 2 epochs of (c*)",
        lambda st, d: RL.SLaM(weight="excess", warm=2.0),
    )
    rule_method(
        "(f3) SLaM a=c, excess weights, from epoch 5",
        "(f') after 5 epochs of (c*)",
        lambda st, d: RL.SLaM(weight="excess", warm=5.0),
    )
    rule_method(
        "(f4) SLaM a=rank, excess weights",
        "(f') with a = 1/C + (1 - 1/C) F(c), F the pool's empirical CDF of c",
        lambda st, d: RL.SLaM(a="rank", weight="excess"),
    )
    rule_method(
        "(f5) SLaM a=rank, excess weights, from epoch 5",
        "(f4) after 5 epochs of (c*)",
        lambda st, d: RL.SLaM(a="rank", weight="excess", warm=5.0),
    )
    for pw in (0.5, 1.0):
        rule_method(
            f"(h) (f5) + class weights^{pw}",
            f"(f5) with weights times (1 / (C prior_k))^{pw}, prior = the teacher's label shares on the pool",
            lambda st, d, pw=pw: RL.SLaM(a="rank", weight="excess", warm=5.0, cw_power=pw),
        )
    for tau in (0.5, 1.0):
        rule_method(
            f"(i) (f5) + logit adjustment tau={tau}",
            f"(f5) with the training logits shifted by {tau} log prior_k (Menon et al. 2021), prior = the teacher's label shares",
            lambda st, d, tau=tau: RL.SLaM(a="rank", weight="excess", warm=5.0, la_tau=tau),
        )
    rule_method(
        "(h) (f5) + class weights^0.25",
        "(f5) with weights times (1 / (C prior_k))^0.25, prior = the teacher's label shares on the pool",
        lambda st, d: RL.SLaM(a="rank", weight="excess", warm=5.0, cw_power=0.25),
    )
    rule_method(
        "(h) (f5) + class weights^0.5 (soft prior)",
        "(f5) with weights times (1 / (C prior_k))^0.5, prior = the teacher's mean probability per class",
        lambda st, d: RL.SLaM(a="rank", weight="excess", warm=5.0, cw_power=0.5, prior_source="soft"),
    )
    rule_method(
        "(j) (f5) + class weights^0.5 + logit adjustment 0.5",
        "(f5) with both (h) at power 0.5 and (i) at tau 0.5",
        lambda st, d: RL.SLaM(a="rank", weight="excess", warm=5.0, cw_power=0.5, la_tau=0.5),
    )
    M["gold, class weights^0.5"] = (
        "the gold-label student with class weights (1 / (C prior_k))^0.5, prior = the gold label shares",
        lambda st, d: fit(st, RL.SLaM(warm=1e9, cw_power=0.5), labels=st.y),
    )
    rule_method(
        "(g) EMA relabel, p_T*Q hard",
        "from epoch 2: hard target argmax p_T*Q (Q: per-row EMA of the student's train-mode softmax), excess weights",
        lambda st, d: RL.EMARelabel(),
    )
    rule_method(
        "(g') EMA relabel, p_T*Q soft",
        "as (g), cross-entropy to the normalised product",
        lambda st, d: RL.EMARelabel(hard=False),
    )
    rule_method(
        "(g'') EMA relabel, p_T*Q hard, warm 1",
        "as (g) from epoch 1",
        lambda st, d: RL.EMARelabel(warm=1),
    )

    M["(e) cross-fit relabel (hard)"] = (
        "two half-pool students re-label each other's half; train on their argmax",
        lambda st, d: xfit(st, d, "hard"),
    )
    M["(e') cross-fit mix 0.5 p_T + 0.5 Q"] = (
        "soft target: mean of teacher and cross-fitted student distributions",
        lambda st, d: xfit(st, d, "mix"),
    )
    M["(e'') cross-fit agreement filter"] = (
        "keep samples whose cross-fitted student agrees with the teacher",
        lambda st, d: xfit(st, d, "agree"),
    )
    return M


# Priority order (CPU budget: the run is stopped where the clock runs out).
ORDER = [
    "all",
    "gold",
    "llkd",
    "random@llkd",
    "fixed@median",
    "(c) w = c",
    "(b') SoftMatch per class",
    "soft targets",
    "(a2) class keep-rate = class mean conf (pool)",
    "cleanlab(cv LR probs)",
    "self-training",
    "(d') bootstrap beta=c",
    "(e) cross-fit relabel (hard)",
    "(e') cross-fit mix 0.5 p_T + 0.5 Q",
    "(e'') cross-fit agreement filter",
    "(b) SoftMatch global",
    "(a) c >= m_T[y] (class mean, no norm.)",
    "(a)+soft targets",
    "teacher-only, w = s",
    "(c') w = c^2",
    "(d) bootstrap beta=0.8",
    "cleanlab(teacher probs)",
    "teacher-only",
    "(a') c >= g_T (global running mean)",
    "(d'') soft mix a=0.5",
]


class ClassGlobalMix(R.Rule):
    """(a4) s_i = [c_i >= max(m_T[y_i], g_T)]  or  (a5) s_i = [c_i >= min(m_T[y_i], g_T)]."""

    def __init__(self, how):
        self.how = how

    def init(self, S, C, pool):
        super().init(S, C, pool)
        self.T = R.Levels(S, C, 0.9)

    def step(self, idx, y, c, z, t):
        self.T.update(c, y)
        m, g = self.T.m.gather(1, y), self.T.g[:, None].expand_as(c)
        tau = torch.maximum(m, g) if self.how == "max" else torch.minimum(m, g)
        s = c >= tau - R.TIE
        return s.double(), s


class GlobalMean(R.Rule):
    """(a') s_i = [c_i >= g_T], g_T the running global mean confidence (spec update)."""

    def init(self, S, C, pool):
        super().init(S, C, pool)
        self.T = R.Levels(S, C, 0.9)

    def step(self, idx, y, c, z, t):
        self.T.update(c, y)
        m = c >= self.T.g[:, None] - R.TIE
        return m.double(), m


def run_setting(key, only=None):
    st = Setting(key)
    ts = st.teacher_stats()
    print(f"[{key}] teacher: {json.dumps(ts)}", flush=True)
    done = {}
    cache = load_runs()
    M = methods()
    for name in ORDER + [m for m in M if m not in ORDER]:
        desc, build = M[name]
        if only and name not in only:
            continue
        if (key, name) in cache:
            done[name] = cache[(key, name)]
            continue
        row = build(st, done)
        row.update(
            setting=key,
            method=name,
            desc=desc,
            teacher=ts,
            date=datetime.datetime.now().isoformat(timespec="seconds"),
            load=os.getloadavg()[0],
        )
        done[name] = row
        save_run(row)
        f1 = np.array(row["f1"])
        base = np.array(done["all"]["f1"]) if "all" in done else None
        diff = (
            f"  d vs all {100 * (f1 - base).mean():+.2f} ({int(((f1 - base) > 0).sum())}/5)" if base is not None else ""
        )
        print(
            f"[{key}] {name:45s} F1 {f1.mean():.4f} ± {f1.std():.4f} used {np.mean(row['used']):.3f} "
            f"{row['wall']:.0f}s{diff}",
            flush=True,
        )


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--report":
        import report

        report.main()
    else:
        only = os.environ.get("ONLY")
        for k in args:
            run_setting(k, only=only.split(";") if only else None)
