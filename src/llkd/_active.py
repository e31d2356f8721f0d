"""Active distillation: ask the teacher only where the student needs it (``teacher_budget``).

With a budget of ``B`` distinct inputs, ``fit`` proceeds in :func:`n_rounds` rounds of about
``B / n_rounds`` queries each. Random draws do not depend on the student, so with
``acquisition="random"`` the whole budget is one round: the teacher is asked once, in one
stream of batches (an LLM server is kept full), and the student trains only on the final
labelled set. The student-chosen rules take ``N_ROUNDS`` rounds:

1. the teacher labels a random seed set (the calibration is fitted on the answers so far,
   and refitted after every round over all of them);
2. the student trains :func:`round_epochs` epochs on what is labelled (gold rows included,
   which never cost a query): ``max_epochs`` for the MLP student, one for the fine-tuned one;
3. the student scores the unlabeled remainder (``selection._acquisition.acquisition_scores``);
4. the teacher labels the next batch, chosen by the acquisition rule;
5. training continues, warm-started, until the budget is spent; then the student trains on
   everything labelled until it has seen about as many rows as ``max_epochs`` epochs over the
   whole pool would show it (:func:`final_epochs`; fewer, sqrt(pool * labelled) rows a
   ``max_epochs``, when it will label the unasked inputs), at least ``max_epochs`` epochs. Fewer labels
   must not also mean fewer optimizer steps: with ``max_epochs`` epochs over a fifth of
   Reuters R8, the MLP student scored 0.553 macro-F1; with the steps of a full fit, 0.691.
6. with ``unqueried="student"`` (the MLP student's default), that student labels the inputs
   never asked about and a fresh student trains on everything (:mod:`llkd._unqueried`).

Rounds 3-4 are a trainer callback (:class:`ActiveRounds`) run at the end of every
``round_epochs``-th epoch.
"""

from __future__ import annotations

import math
import numbers
import time

import numpy as np

from ._callbacks import Callback
from .selection._acquisition import acquisition_scores, choose_batch

N_ROUNDS = 5


def resolve_budget(budget, n_pool: int, n_classes: int) -> int:
    """Queries allowed: an int (clamped to the pool), or a fraction in (0, 1] of the pool.

    Raises ValueError for 0, a negative budget, a fraction above 1, or a budget smaller
    than the number of classes (the answers could not cover every class). The rounds may
    still give the seed set fewer inputs than there are classes (:func:`round_sizes`).
    """
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real):
        raise TypeError(f"teacher_budget must be None, an int or a float, got {type(budget).__name__}")
    if isinstance(budget, numbers.Integral):
        if budget <= 0:
            raise ValueError(f"teacher_budget must be a positive number of queries, got {budget}")
        b = min(int(budget), n_pool)
    else:
        if not 0 < budget <= 1:
            raise ValueError(f"a float teacher_budget is a fraction of the distinct inputs, in (0, 1]; got {budget}")
        b = int(math.ceil(round(budget * n_pool, 6)))  # 0.07 * 100 is 7.000000000000001 in floats
    if b < n_classes and b < n_pool:
        raise ValueError(
            f"teacher_budget allows {b} queries, fewer than the {n_classes} classes: "
            "the student could not see every class"
        )
    return b


def final_epochs(max_epochs: int, n_full: int, round_epoch_rows, n_labelled: int, *, labeller: bool = False) -> int:
    """Epochs after the rounds: ``max_epochs`` epochs' worth of the full pool's rows, less the
    rows the round epochs already trained on, over the ``n_labelled`` rows, to the nearest
    epoch (within half an epoch of a full fit's rows); at least ``max_epochs``.

    ``labeller=True`` (the student will label the unasked inputs for a fresh student,
    ``unqueried="student"``): ``max_epochs`` epochs' worth of ``sqrt(n_full * n_labelled)``
    rows, the geometric mean of the pool and the labelled set. That student's labels were
    better for it (docs/design.md 7.5).
    """
    n = max(1, n_labelled)
    rows = math.sqrt(n_full * n) if labeller else n_full
    owed = max_epochs * rows - sum(round_epoch_rows)
    return max(int(max_epochs), int(math.floor(owed / n + 0.5)))


def round_epochs(kind: str, max_epochs: int) -> int:
    """Epochs the student trains on what is labelled before each later round scores the pool.

    ``max_epochs`` (a full fit on what is labelled) for the MLP student: after one epoch
    its scores ranked the pool little better than chance, and the student-chosen rules lost
    to random draws (docs/design.md 7.5). One for the fine-tuned student, whose epochs are
    expensive: three per round did not make margin pay (docs/design.md 7.5).
    """
    return max(1, int(max_epochs)) if kind == "mlp" else 1


def resolve_acquisition(acquisition: str, kind: str) -> str:
    """``"auto"``: ``"margin"`` for the MLP student, ``"random"`` for the fine-tuned one
    (docs/design.md 7.5); ``"diverse"`` for the fine-tuned student, which has no frozen
    features to cluster: ``"uncertainty"``, the rule its batches are chosen by; any other
    rule as given."""
    if acquisition == "diverse" and kind != "mlp":
        return "uncertainty"
    if acquisition != "auto":
        return acquisition
    return "margin" if kind == "mlp" else "random"


def n_rounds(acquisition: str) -> int:
    """Rounds of queries: one for random draws (they do not read the student), else ``N_ROUNDS``."""
    return 1 if acquisition == "random" else N_ROUNDS


def round_sizes(budget: int, n_rounds: int = N_ROUNDS) -> list[int]:
    """Queries per round (the first is the seed set), summing to ``budget``."""
    n_rounds = max(1, min(n_rounds, budget))
    base, extra = divmod(budget, n_rounds)
    return [base + (1 if r < extra else 0) for r in range(n_rounds)]


class ActiveRounds(Callback):
    """At the end of an epoch, while queries remain: score the pool, ask the teacher, add the rows."""

    def __init__(self, labeler, sizes, rule: str, rng, features=None, epochs_per_round: int = 1):
        self.labeler = labeler
        self.epochs_per_round = max(1, int(epochs_per_round))
        self._epochs = 0
        self.sizes = list(sizes)
        self.rule = rule
        self.rng = rng
        self.features = features
        self.rounds: list[dict] = []

    def remaining_keys(self):
        return [k for k in self.labeler.pool if self.labeler.targets.labels[self.labeler.pool[k][0]] < 0]

    def choose(self, logits, rows, k: int):
        """(acquisition scores of the unlabeled ``rows``, sorted indices into them of the ``k`` to ask)."""
        scores = acquisition_scores(logits, self.rule, rng=self.rng)
        feats = self.features[rows] if self.features is not None else None
        return scores, choose_batch(scores, k, self.rule, feats, rng=self.rng)

    def on_epoch_end(self, trainer, *, record, **kw):
        if not self.sizes:
            return
        self._epochs += 1
        if self._epochs % self.epochs_per_round:
            return
        k = self.sizes.pop(0)
        keys = self.remaining_keys()
        if not keys:
            self.sizes = []
            return
        t0 = time.perf_counter()
        rows = np.array([self.labeler.pool[key][0] for key in keys], dtype=np.int64)
        # random draws never get here: their whole budget is the seed set (n_rounds)
        logits = trainer.logits(rows)
        scores, pick = self.choose(logits, rows, k)
        picked_logits = logits[pick]
        scored = len(rows)
        scoring_seconds = time.perf_counter() - t0
        chosen = [keys[i] for i in pick]
        student_pred = picked_logits.argmax(axis=1)
        new_rows = self.labeler.label(chosen)
        teacher_pred = self.labeler.targets.labels[rows[pick]]
        trainer.set_targets(self.labeler.targets)
        trainer.add_rows(new_rows)
        info = {
            "round": len(self.rounds) + 1,
            "teacher_queries": int(self.labeler.n_queries),
            "acquired": len(chosen),
            "pool_scored": scored,
            "scoring_seconds": scoring_seconds,
            "acquisition_score_mean": float(scores[pick].mean()),
            "acquisition_score_pool_mean": float(scores.mean()),
            "agreement_before": float((student_pred == teacher_pred).mean()),
        }
        self.rounds.append(info)
        record["acquisition"] = info
