"""Target-side rules for issue 13, second round: noise-robust losses and re-labelling by the
student, all cheap enough for a fine-tuned student (no extra scoring pass: they read the
training forward pass's own logits, detached where they only shape the target).

- ``SLaM``: the teacher's label is modelled as right with probability ``a_i`` and else uniform
  over the other classes (SLaM, Kontonis et al. 2023; forward loss correction). The student is
  trained so that this noisy channel applied to its prediction explains the label:
  ``loss_i = -log(a_i p_S(y_i) + (1 - a_i) (1 - p_S(y_i)) / (C - 1))``. With ``a_i = c_i``
  (calibrated confidence) a label at chance confidence carries no gradient, and a confident
  label the student firmly rejects costs at most ``-log((1 - a_i) / (C - 1))``.
- ``EMARelabel``: a running (per-row EMA) copy of the student's own predictions ``Q`` from its
  training forward passes; from epoch ``warm`` on, the target is the product of the teacher's
  and the student's distributions, ``q ∝ p_T * Q^beta`` (two independent opinions), hard or
  soft, weighted by its confidence above chance.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from rules import Rule


def excess(c, C):
    return ((C * c - 1.0) / (C - 1.0)).clamp(min=0.0)


def _norm(w):
    m = w.mean(1, keepdim=True)
    return torch.where(m > 0, w / m.clamp(min=1e-300), torch.ones_like(w))


class SLaM(Rule):
    def init(self, S, C, pool):
        super().init(S, C, pool)
        conf = np.asarray(pool["conf"])
        order = np.argsort(np.argsort(conf, kind="stable"), kind="stable")
        self.rank = torch.as_tensor((order + 0.5) / len(conf), dtype=torch.float64)  # empirical CDF of c
        if self.prior_source == "soft":
            counts = np.asarray(pool["proba"], dtype=np.float64).sum(0)
        else:
            counts = np.bincount(np.asarray(pool["labels"]), minlength=C).astype(np.float64)
        prior = np.maximum(counts, 1.0) / max(1.0, counts.sum())
        # class weights (1 / (C prior_k))^power; logit adjustment tau * log prior_k
        self.cw = torch.as_tensor((1.0 / (C * prior)) ** self.cw_power, dtype=torch.float64)
        self.log_prior = torch.as_tensor(np.log(prior), dtype=torch.float32)

    def __init__(self, a="c", weight="none", floor=0.0, warm=0.0, cw_power=0.0, la_tau=0.0, prior_source="hard"):
        self.a, self.weight, self.floor, self.warm = a, weight, floor, warm
        self.cw_power, self.la_tau, self.prior_source = cw_power, la_tau, prior_source
        self.needs_logits = False

    def step(self, idx, y, c, z, t):
        self._t = t
        C = self.C
        w = excess(c, C) if self.weight == "excess" else torch.ones_like(c)
        if self.cw_power:
            w = w * self.cw[y]
        m = torch.ones_like(c, dtype=torch.bool)
        return _norm(w), m

    def loss(self, idx, logits, y, c, p_teacher):
        C = self.C
        if self.la_tau:
            logits = logits + self.la_tau * self.log_prior
        if self._t < self.warm:
            return F.cross_entropy(logits.reshape(-1, C), y.reshape(-1), reduction="none").view_as(y)
        if self.a == "rank":
            a = (1.0 / C + (1 - 1.0 / C) * self.rank[idx]).float()
        else:
            a = c.float()
        p = torch.softmax(logits.float(), -1)
        py = p.gather(-1, y.unsqueeze(-1)).squeeze(-1)
        mix = a * py + (1 - a) * (1 - py) / (C - 1)
        return -torch.log(mix.clamp(min=1e-12))


class EMARelabel(Rule):
    def __init__(self, warm=2, beta=1.0, momentum=0.5, hard=True, weight="excess", prior=False):
        self.warm, self.beta, self.mom, self.hard, self.weight, self.prior = warm, beta, momentum, hard, weight, prior
        self.needs_logits = False

    def init(self, S, C, pool):
        super().init(S, C, pool)
        N = len(pool["labels"])
        self.Q = torch.full((S, N, C), 1.0 / C)
        self.seen = torch.zeros(S, N, dtype=torch.bool)
        self.sidx = torch.arange(S)[:, None]
        self.P = torch.as_tensor(pool["proba"], dtype=torch.float32)  # calibrated teacher [N, C]
        self.relabelled = []

    def _combined(self, idx, p_teacher, t):
        if t < self.warm:
            return p_teacher
        Q = self.Q[self.sidx, idx]
        q = p_teacher * Q.clamp(min=1e-6) ** self.beta
        if self.prior:  # divide by the student's mean prediction (its class prior) once
            q = q / Q.mean(1, keepdim=True).clamp(min=1e-6)
        return q / q.sum(-1, keepdim=True)

    def step(self, idx, y, c, z, t):
        self._idx, self._t = idx, t
        m = torch.ones_like(c, dtype=torch.bool)
        return torch.ones_like(c), m

    def loss(self, idx, logits, y, c, p_teacher):
        C = self.C
        q = self._combined(idx, p_teacher, self._t)
        conf, lab = q.max(-1)
        w = excess(conf.double(), C) if self.weight == "excess" else torch.ones_like(conf.double())
        w = _norm(w).float()
        logp = torch.log_softmax(logits, -1)
        if self.hard:
            per = -logp.gather(-1, lab.unsqueeze(-1)).squeeze(-1)
        else:
            per = -(q * logp).sum(-1)
        with torch.no_grad():
            ps = torch.softmax(logits.detach().float(), -1)
            old = self.Q[self.sidx, idx]
            first = ~self.seen[self.sidx, idx]
            new = torch.where(first.unsqueeze(-1), ps, self.mom * old + (1 - self.mom) * ps)
            self.Q[self.sidx, idx] = new
            self.seen[self.sidx, idx] = True
            if self._t >= self.warm:
                self.relabelled.append(float((lab != y).float().mean()))
        return w * per
