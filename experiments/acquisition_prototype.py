"""Prototype acquisition rules for ``teacher_budget`` (issue 14), outside the library.

Each rule replaces ``llkd._active.ActiveRounds.choose``, the batch choice (the estimator is run with
``acquisition="uncertainty"``, so it takes the library's 5 rounds, the first a random seed set;
only the choice in rounds 2-5 differs). Besides macro-F1 on the test set, each fit records the
teacher's accuracy against gold on the rows it was asked about (raw teacher argmax), and the
share of each class among them.

    python -m experiments.acquisition_prototype --data experiments/selection_rules/.cache/20newsgroups.npz \
        --rules random5,balanced,typical --fractions 0.1,0.3 --seeds 3 --out F.jsonl

Environment: ``PROTO_ROUND_EPOCHS=E`` sets the epochs before each round; ``PROTO_PARAMS`` (JSON)
adds estimator parameters; ``PROTO_CALIB=first`` fits the prior correction on the first round's
answers only and applies it unchanged afterwards; ``PROTO_COMBINE=BETA`` (with the student's
labels for the unasked rows) relabels each row asked in rounds 2-5, for the fresh student, by
normalise(p_teacher * p_student ** BETA), p_student the round student's when it chose the row.
``PROTO_ROUNDS=N``: the student-chosen rules take N rounds instead of 5 (random draws keep one);
``PROTO_SEED=S``: the seed set is a share S of the budget, the rest split evenly over the later
rounds. ``PROTO_COLD=1``: after the rounds, the labelling student is thrown away and a new one, from the
fit's initial weights, trains on everything labelled with the one-round schedule (the epochs of
``acquisition="random"``), so the rounds choose the rows but do not warm-start the student
(warm-starting generalises worse: Ash & Adams, NeurIPS 2020).

Rules (rounds 2-5; ``k`` the round's queries, ``u`` the student's normalised entropy):

- ``library:NAME``: the library's own rule NAME (``random`` is one round, the others 5).
- ``top_uncertainty``: the k most uncertain (the library's ``"uncertainty"``).
- ``random5``: uniform draws, in 5 rounds (the schedule's control).
- ``mix:R``: a share R of each batch uniform draws, the rest the top of the margin rule.
- ``trim:Q``: the top k by uncertainty after setting aside the most uncertain share Q of the
  remainder (outlier avoidance, Karamcheti et al. 2021: the hardest rows are where the teacher
  is wrong); ``trimrand:Q``: uniform draws from what is left after setting aside that share.
- ``balanced``: a quota of k / C per class the student predicts (a class with fewer candidates
  gives its share to the others), the most uncertain within each class.
- ``balanced_random``: the same quotas, uniform within each class.
- ``power``: stochastic power acquisition (Kirsch et al. 2023): the top k of log u + Gumbel noise,
  i.e. sampling without replacement with probability proportional to u; ``power:BETA``: to
  u ** BETA; ``power_ta[:BETA]``: the same on the ``teacher_aware`` score.
- ``typical``: TypiClust-like: k-means of the remainder's embeddings into k clusters, from each
  the row of highest typicality (inverse mean distance to its 20 nearest neighbours).
- ``cover_unc``: k-means of the remainder into k clusters, from each its most uncertain row.
- ``top_margin``: the library's ``"margin"`` (the top k of the margin score).
- ``raru``: M-RARU as the abstract of Luccioli et al. (arXiv 2511.11574) describes it (its algorithm
  section was not readable here): candidates drawn uniformly, each accepted with probability equal to
  its margin uncertainty ``1 - (p_(1) - p_(2))``, until k are accepted; ``raru:BETA`` to that
  probability to the power BETA; ``raru_ent[:BETA]`` with ``u`` instead.
- ``confident``: the k least uncertain (a probe: the rows where the teacher is most often right).
- ``confident_cover``: k-means of the remainder into k clusters, from each its least uncertain row.
- ``coreset``: k-centre greedy on the embeddings (Sener & Savarese 2018), the labelled rows as the
  first centres.
- ``badge``: BADGE (Ash et al. 2020) on the frozen features: k-means++ seeding on the gradient
  embedding (p - onehot(argmax p)) x embedding, the first centre the largest norm.
- ``teacher_aware``: u times the teacher confidence expected at the row, the mean calibrated
  confidence of its 10 nearest labelled neighbours (the top k).
- ``gain``: the expected teacher confidence (as ``teacher_aware``) less the student's top
  probability: where the teacher is expected to be right more often than the student.
- ``pure``: u times the share of its 10 nearest labelled neighbours whose teacher label differs
  from the student's prediction for the row (where student and nearby teacher answers disagree).
- ``cal``: CAL (Margatina et al. 2021): the mean KL divergence from the student's distribution on
  each of the row's 10 nearest labelled neighbours to its distribution on the row (the top k).
- ``alfamix``: ALFA-Mix (Parvaneh et al. 2022): a row is a candidate when mixing its embedding
  with a class anchor (the mean embedding of the labelled rows of that teacher label, share
  alpha in 0.1-0.4) changes the student's prediction; k-means of the candidates into k
  clusters, from each the candidate nearest its centre (fewer than k: the rest by margin).

Probes that read the gold labels (upper bounds on what a choice of rows can buy, not rules):

- ``oracle``: first the rows where the raw teacher is right and the student is wrong, then the
  rows where the teacher is right, each group in margin order, then the rest by margin.
- ``oracle_right``: the rows where the raw teacher is right, in margin order, then the rest.
- ``perfect``: the library's random draws from a teacher that answers the gold label (one-hot).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from experiments._common import round_epochs
from experiments.bench_active import _teacher, append_run, fit_record, load_prepared, read_runs
from llkd._numeric import softmax

RULE = {"name": "uncertainty"}
EXTRA = json.loads(os.environ.get("PROTO_PARAMS", "{}"))  # further estimator parameters
ROUND_EPOCHS = os.environ.get("PROTO_ROUND_EPOCHS")  # replaces the estimator's round_epochs when set
# "first": the prior correction is fitted on the first round's answers (the random seed set)
# only and applied unchanged to later rounds, instead of refitted over all answers each round.
CALIB = os.environ.get("PROTO_CALIB")
# BETA: for the fresh student trained with the student's labels, each row asked in rounds 2-5
# takes the label of normalise(p_teacher * p_student ** BETA), p_student the round student's
# distribution when it chose the row (before training on its answer).
COMBINE = os.environ.get("PROTO_COMBINE")
COLD = os.environ.get("PROTO_COLD") == "1"
ROUNDS = os.environ.get("PROTO_ROUNDS")  # rounds of the student-chosen rules (the library: 5)
SEED_SHARE = os.environ.get("PROTO_SEED")  # share of the budget in the seed set (the library: 1 / rounds)
LOG: dict = {}


def _entropy(logits):
    from llkd.selection._acquisition import pool_uncertainty

    return np.asarray(pool_uncertainty(logits), dtype=np.float64)


def _quota_pick(pred, order_within, k, C):
    """k rows, an equal quota per predicted class; ``order_within``: rows in preference order."""
    by_class = [order_within[pred[order_within] == c] for c in range(C)]
    counts = np.array([len(b) for b in by_class])
    quota = np.zeros(C, dtype=int)
    left = k
    while left > 0:
        open_ = np.flatnonzero(counts - quota > 0)
        if not len(open_):
            break
        share = max(1, left // len(open_))
        for c in open_:
            take = min(share, counts[c] - quota[c], left)
            quota[c] += take
            left -= take
            if left == 0:
                break
    return np.concatenate([b[:q] for b, q in zip(by_class, quota)]).astype(np.int64)


def _margin_scores(logits):
    """The library's ``"margin"`` score, ``1 - (p_(1) - p_(2))``, per row."""
    from llkd.selection._acquisition import acquisition_scores

    return np.asarray(acquisition_scores(logits, "margin"), dtype=np.float64)


def _margin_order(logits):
    """Rows from the largest margin score down."""
    return np.argsort(-_margin_scores(logits), kind="stable")


def _knn(feats_query, feats_ref, n):
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=min(n, len(feats_ref))).fit(feats_ref)
    return nn.kneighbors(feats_query)


def choose(name, logits, k, rng, feats, labelled_feats, labelled_conf, labelled_labels, model=None):
    """``model``: the student's forward pass from input rows of features to logits (cal, alfamix)."""
    n, C = logits.shape
    k = min(k, n)
    u = _entropy(logits)
    pred = logits.argmax(1)
    if name == "top_uncertainty":  # the library's "uncertainty", with the asked rows logged
        return np.argsort(-u, kind="stable")[:k]
    if name == "random5":
        return rng.choice(n, k, replace=False)
    if name.startswith("mix:"):  # a share R of the batch uniform draws, the rest the top of the margin
        n_rand = int(round(float(name.split(":", 1)[1]) * k))
        top = _margin_order(logits)[: k - n_rand]
        rest = np.setdiff1d(np.arange(n), top)
        return np.concatenate([top, rng.choice(rest, n_rand, replace=False)])
    if name.startswith("trim:"):  # the top k after setting aside the most uncertain share Q
        order = np.argsort(-u, kind="stable")
        skip = min(int(float(name.split(":", 1)[1]) * n), n - k)
        return order[skip : skip + k]
    if name.startswith("trimrand:"):  # uniform draws after setting aside the most uncertain share Q
        order = np.argsort(-u, kind="stable")
        skip = min(int(float(name.split(":", 1)[1]) * n), n - k)
        return order[skip:][rng.choice(n - skip, k, replace=False)]
    if name == "balanced":
        return _quota_pick(pred, np.argsort(-u, kind="stable"), k, C)
    if name == "balanced_random":
        return _quota_pick(pred, rng.permutation(n), k, C)
    if name.startswith("power"):  # power, power:BETA, power_ta, power_ta:BETA
        base, _, beta = name.partition(":")
        beta = float(beta or 1.0)
        s = u
        if base == "power_ta":
            _, idx = _knn(feats, labelled_feats, 10)
            s = u * labelled_conf[idx].mean(1)
        g = -np.log(-np.log(rng.random(n)))
        return np.argsort(-(beta * np.log(np.maximum(s, 1e-12)) + g))[:k]
    if name in ("typical", "cover_unc", "confident_cover"):
        from sklearn.cluster import MiniBatchKMeans

        km = MiniBatchKMeans(n_clusters=k, random_state=int(rng.integers(2**31 - 1)), n_init=1, batch_size=2048)
        assign = km.fit_predict(feats)
        chosen = []
        for c in np.unique(assign):
            members = np.flatnonzero(assign == c)
            if name == "cover_unc":
                chosen.append(members[np.argmax(u[members])])
            elif name == "confident_cover":
                chosen.append(members[np.argmin(u[members])])
            else:
                if len(members) == 1:
                    chosen.append(members[0])
                    continue
                d, _ = _knn(feats[members], feats[members], 21)
                typ = 1.0 / (d[:, 1:].mean(1) + 1e-9)
                chosen.append(members[np.argmax(typ)])
        chosen = np.array(chosen, dtype=np.int64)
        if len(chosen) < k:  # empty clusters: fill with the most uncertain others
            taken = set(chosen.tolist())
            rest = [i for i in np.argsort(-u) if i not in taken][: k - len(chosen)]
            chosen = np.concatenate([chosen, np.array(rest, dtype=np.int64)])
        return chosen[:k]
    if name == "top_margin":  # the library's "margin" as a prototype rule (for PROTO_COMBINE)
        return _margin_order(logits)[:k]
    if name.startswith("raru"):  # raru, raru:BETA, raru_ent[:BETA]
        base, _, beta = name.partition(":")
        accept = np.clip(u if base == "raru_ent" else _margin_scores(logits), 0.0, 1.0) ** float(beta or 1.0)
        chosen, stream = [], rng.permutation(n)
        while len(chosen) < k and len(stream):  # passes over the uniform stream until k accepted
            take = rng.random(len(stream)) < accept[stream]
            chosen.extend(stream[take][: k - len(chosen)].tolist())
            stream = stream[~take]
            if not take.any() and accept[stream].max(initial=0.0) <= 0.0:
                chosen.extend(stream[: k - len(chosen)].tolist())
                break
        return np.array(chosen, dtype=np.int64)
    if name == "confident":
        return np.argsort(u, kind="stable")[:k]
    if name == "coreset":
        f = feats.astype(np.float64)
        d, _ = _knn(f, labelled_feats.astype(np.float64), 1)
        dmin = d[:, 0] ** 2
        chosen = []
        for _ in range(k):
            j = int(np.argmax(dmin))
            chosen.append(j)
            dmin = np.minimum(dmin, ((f - f[j]) ** 2).sum(1))
            dmin[j] = -1.0
        return np.array(chosen, dtype=np.int64)
    if name == "badge":
        a = softmax(logits)
        a[np.arange(n), pred] -= 1.0
        h = feats.astype(np.float64)
        sq = (a**2).sum(1) * (h**2).sum(1)
        j = int(np.argmax(sq))
        chosen = [j]
        dmin = np.maximum(sq + sq[j] - 2.0 * (a @ a[j]) * (h @ h[j]), 0.0)
        dmin[j] = 0.0
        for _ in range(k - 1):
            tot = dmin.sum()
            j = int(rng.choice(n, p=dmin / tot)) if tot > 0 else int(rng.choice(np.flatnonzero(dmin >= 0)))
            chosen.append(j)
            dmin = np.minimum(dmin, np.maximum(sq + sq[j] - 2.0 * (a @ a[j]) * (h @ h[j]), 0.0))
            dmin[j] = 0.0
        return np.array(chosen, dtype=np.int64)
    if name == "teacher_aware":
        _, idx = _knn(feats, labelled_feats, 10)
        expect = labelled_conf[idx].mean(1)
        return np.argsort(-(u * expect))[:k]
    if name == "gain":
        _, idx = _knn(feats, labelled_feats, 10)
        return np.argsort(-(labelled_conf[idx].mean(1) - softmax(logits).max(1)))[:k]
    if name == "pure":
        _, idx = _knn(feats, labelled_feats, 10)
        agree = (labelled_labels[idx] == pred[:, None]).mean(1)
        return np.argsort(-(u * (1.0 - agree) + 1e-3 * u))[:k]
    if name in ("oracle", "oracle_right"):
        right = LOG["teacher_right"][LOG["rows"]]
        wrong_student = pred != LOG["gold"][LOG["rows"]]
        order = _margin_order(logits)
        key = -(2 * right * wrong_student + right) if name == "oracle" else -right.astype(int)
        return order[np.argsort(key[order], kind="stable")][:k]
    if name == "cal":
        _, idx = _knn(feats, labelled_feats, 10)
        p = np.maximum(softmax(logits), 1e-12)
        q = np.maximum(softmax(model(labelled_feats)), 1e-12)
        kl = (q[idx] * (np.log(q[idx]) - np.log(p)[:, None, :])).sum(2).mean(1)
        return np.argsort(-kl, kind="stable")[:k]
    if name == "alfamix":
        from sklearn.cluster import MiniBatchKMeans

        anchors = np.stack(
            [labelled_feats[labelled_labels == c].mean(0) for c in range(C) if (labelled_labels == c).any()]
        )
        flip = np.zeros(n, dtype=bool)
        for alpha in (0.1, 0.2, 0.3, 0.4):
            for a in anchors:
                flip |= model((1.0 - alpha) * feats + alpha * a).argmax(1) != pred
        cand = np.flatnonzero(flip)
        if len(cand) <= k:
            rest = [i for i in _margin_order(logits) if not flip[i]][: k - len(cand)]
            return np.concatenate([cand, np.array(rest, dtype=np.int64)])
        km = MiniBatchKMeans(n_clusters=k, random_state=int(rng.integers(2**31 - 1)), n_init=1, batch_size=2048)
        assign = km.fit_predict(feats[cand])
        d = ((feats[cand] - km.cluster_centers_[assign]) ** 2).sum(1)
        chosen = [cand[np.flatnonzero(assign == c)[np.argmin(d[assign == c])]] for c in np.unique(assign)]
        if len(chosen) < k:
            taken = set(chosen)
            chosen += [i for i in cand[np.argsort(-u[cand])] if i not in taken][: k - len(chosen)]
        return np.array(chosen[:k], dtype=np.int64)
    raise ValueError(name)


def install():
    import llkd._active as A
    import llkd.estimator as E

    class ProtoRounds(A.ActiveRounds):
        def choose(self, logits, rows, k):
            t = self.labeler.targets
            lab = np.flatnonzero(t.labels >= 0)
            f = self.features
            LOG["rows"] = rows
            pick = choose(
                RULE["name"], logits, k, self.rng, f[rows], f[lab], t.confidence[lab], t.labels[lab], self._forward
            )
            pick = np.sort(np.asarray(pick, dtype=np.int64))
            LOG.setdefault("asked", []).extend(rows[pick].tolist())
            if COMBINE:
                LOG.setdefault("pre", {}).update(zip(rows[pick].tolist(), softmax(logits[pick])))
                LOG["pool"] = self.labeler.pool
            return _entropy(logits), pick

        def on_epoch_end(self, trainer, **kw):
            self._trainer = trainer
            return super().on_epoch_end(trainer, **kw)

        def _forward(self, x):
            import torch

            tr = self._trainer
            tr.model.eval()
            with torch.no_grad():
                out = tr.model(torch.as_tensor(np.asarray(x), dtype=torch.float32, device=tr.device))
            tr.model.train()
            return out.double().cpu().numpy()

    E.ActiveRounds = ProtoRounds
    if ROUNDS or SEED_SHARE:

        def proto_sizes(budget, n_rounds):
            if n_rounds == 1:  # random draws: one round, as in the library
                return A.round_sizes(budget, 1)
            r = int(ROUNDS or n_rounds)
            if not SEED_SHARE:
                return A.round_sizes(budget, r)
            seed = max(1, min(budget - (r - 1), int(round(float(SEED_SHARE) * budget))))
            return [seed] + A.round_sizes(budget - seed, r - 1)

        E.round_sizes = proto_sizes
    if COMBINE:
        base_wsl = E.with_student_labels

        def combined_labels(targets, rows, proba):
            out = base_wsl(targets, rows, proba)
            pre = LOG.get("pre", {})
            if not pre or out.proba is None:
                return out
            rep = {rs[0]: rs for rs in LOG["pool"].values()}
            beta = float(COMBINE)
            for r, ps in pre.items():
                q = out.proba[r] * np.maximum(ps, 1e-12) ** beta
                q /= q.sum()
                rs = rep.get(r, [r])
                out.labels[rs], out.confidence[rs] = int(q.argmax()), float(q.max())
                out.proba[rs] = q
            return out

        E.with_student_labels = combined_labels
    if CALIB == "first":
        import llkd.teachers as T

        base = T.PriorCorrection

        class FirstRoundCorrection(base):
            def fit(self, proba, y=None):
                if "correction" not in LOG:
                    LOG["correction"] = base.fit(self, proba, y)
                self.__dict__.update(LOG["correction"].__dict__)
                return self

        T.PriorCorrection = FirstRoundCorrection
    if COLD:
        import torch

        base_train = E.LLKDClassifier._train

        def cold_train(self, model, data, targets, train_rows, kind, C, device, seed, labeler, rounds):
            trainer = base_train(self, model, data, targets, train_rows, kind, C, device, seed, labeler, rounds)
            if not rounds:
                return trainer
            torch.manual_seed(seed)
            model = self._new_model(kind, C, device, data)
            rows = np.flatnonzero(labeler.targets.labels >= 0)
            return base_train(self, model, data, labeler.targets, rows, kind, C, device, seed, labeler, [])

        E.LLKDClassifier._train = cold_train
    return A.ActiveRounds


def main(argv=None):

    from llkd import LLKDClassifier

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--teacher-key", default="tfidf_tr")
    ap.add_argument("--fractions", default="0.1,0.3")
    ap.add_argument("--rules", default="library:random,random5,balanced")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    Xtr, ytr, Xte, yte, proba = load_prepared(args.data, args.teacher_key)
    C = proba.shape[1]
    teacher_right = proba.argmax(1) == ytr
    lib_rounds = install()
    import llkd.estimator as E

    proto = E.ActiveRounds
    out = Path(args.out)
    done = read_runs(out)
    print(
        f"# {Path(args.data).stem} {args.teacher_key}: pool {len(Xtr)}, {C} classes, teacher acc "
        f"{teacher_right.mean():.3f}; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    with round_epochs(int(ROUND_EPOCHS) if ROUND_EPOCHS else None):
        for frac in [float(f) for f in args.fractions.split(",")]:
            for rule in args.rules.split(","):
                for seed in range(args.seeds):
                    if (frac, rule, seed) in done:
                        continue
                    LOG.clear()
                    LOG.update(gold=ytr, teacher_right=teacher_right)
                    answers = proba
                    if rule == "perfect":
                        E.ActiveRounds, acq, answers = lib_rounds, "random", np.eye(C)[ytr]
                    elif rule.startswith("library:"):
                        E.ActiveRounds, acq = lib_rounds, rule.split(":", 1)[1]
                    else:
                        E.ActiveRounds, acq = proto, "uncertainty"
                        RULE["name"] = rule
                    clf = LLKDClassifier(
                        _teacher(Xtr, answers),
                        labels=list(range(C)),
                        student="mlp",
                        teacher_budget=frac,
                        acquisition=acq,
                        random_state=seed,
                        **EXTRA,
                    )
                    rec = fit_record(clf, Xtr, Xte, yte, fraction=frac, rule=rule, seed=seed)
                    f1 = rec["macro_f1"]
                    asked = np.array(LOG.get("asked", []), dtype=np.int64)
                    rec |= {
                        "teacher_acc_asked": float(teacher_right[asked].mean()) if len(asked) else None,
                        "gold_class_shares_asked": (np.bincount(ytr[asked], minlength=C) / max(1, len(asked)))
                        .round(3)
                        .tolist(),
                    }
                    append_run(out, rec)
                    done[(frac, rule, seed)] = rec
                    print(
                        f"  {frac:.2f} {rule:16s} s{seed}: F1 {f1:.4f} teacher-acc-asked "
                        f"{rec['teacher_acc_asked']} {rec['seconds']:.0f}s",
                        flush=True,
                    )

    report(done)


def report(done):
    from collections import defaultdict

    g = defaultdict(list)
    for (frac, rule, _), r in done.items():
        g[(frac, rule)].append(r)
    for (frac, rule), rs in sorted(g.items()):
        f = np.array([r["macro_f1"] for r in rs])
        ta = [r["teacher_acc_asked"] for r in rs if r["teacher_acc_asked"] is not None]
        print(
            f"| {frac:.0%} | {rule} | {f.mean():.3f} ± {f.std():.3f} | n={len(f)} | "
            f"teacher acc on asked (rounds 2-5) {np.mean(ta) if ta else float('nan'):.3f} |"
        )


if __name__ == "__main__":
    main()
