"""Per-step selection / weighting rules and target-side options, vectorised over seeds.

Every rule sees, per step, for each of S seeds a batch of B pool rows: the teacher label
``y`` [S,B], its confidence ``c`` [S,B] (float64, after calibration), and the student's
eval-mode logits ``z`` [S,B,C] (detached). It returns loss weights ``w`` [S,B] and the
selected mask ``s`` [S,B]; the loss is ``sum_i w_i * loss_i / max(1, #selected)``.
Weights of soft rules are normalised to average 1 over the batch, as the spec's
product weighting normalises over the selected samples.
"""

from __future__ import annotations

import numpy as np
import torch
from trainer import normalized_entropy

TIE = 1e-9


def _class_stats(values, y, C):
    """Per seed and class: sum of values and counts. values, y: [S,B]."""
    S = y.shape[0]
    sums = torch.zeros(S, C, dtype=torch.float64).scatter_add_(1, y, values.double())
    counts = torch.zeros(S, C, dtype=torch.float64).scatter_add_(1, y, torch.ones_like(values, dtype=torch.float64))
    return sums, counts


class Levels:
    """Running global and class-wise means of a per-sample value (spec section 3 updates)."""

    def __init__(self, S, C, lam):
        self.g = torch.zeros(S, dtype=torch.float64)
        self.m = torch.zeros(S, C, dtype=torch.float64)
        self.lam, self.C, self.n = lam, C, 0

    def update(self, v, y):
        batch = v.double().mean(1)
        sums, counts = _class_stats(v, y, self.C)
        present = counts > 0
        cls = torch.where(present, sums / counts.clamp(min=1), batch[:, None])
        if self.n == 0:
            self.g[:] = batch
            self.m[:] = cls
        else:
            lam = self.lam
            self.g = lam * self.g + (1 - lam) * batch
            self.m = torch.where(present, lam * self.m + (1 - lam) * cls, self.m)
        self.n += 1


def _product_weights(mask, c, u):
    r = torch.where(mask, c * u, torch.zeros_like(c))
    k = mask.sum(1, keepdim=True).clamp(min=1)
    mean_r = r.sum(1, keepdim=True) / k
    w = torch.where(mean_r > 0, r / mean_r.clamp(min=1e-300), mask.double())
    return torch.where(mask, w, torch.zeros_like(w))


def _norm(w):
    return w / w.mean(1, keepdim=True).clamp(min=1e-300)


class Rule:
    name = "rule"
    needs_logits = False  # True: the trainer runs the eval-mode scoring pass

    def init(self, S, C, pool):
        self.S, self.C = S, C

    def step(self, idx, y, c, z, t):
        raise NotImplementedError


class All(Rule):
    def step(self, idx, y, c, z, t):
        m = torch.ones_like(c, dtype=torch.bool)
        return m.double(), m


class Spec(Rule):
    """The library's modes (spec section 3): llkd, teacher, fixed, random; product or none."""

    needs_logits = True

    def __init__(self, mode="llkd", weighting="product", lam=0.9, fixed=0.9, rate=None):
        self.mode, self.weighting, self.lam, self.fixed, self.rate = mode, weighting, lam, fixed, rate

    def init(self, S, C, pool):
        super().init(S, C, pool)
        self.T, self.U = Levels(S, C, self.lam), Levels(S, C, self.lam)
        self.gen = torch.Generator().manual_seed(int(pool["seeds"][0]) + 31)
        self.tau_T = None

    def step(self, idx, y, c, z, t):
        u = normalized_entropy(z)
        self.T.update(c, y)
        self.U.update(u, y)
        tT = self.T.g[:, None] * self.T.m / self.T.m.max(1, keepdim=True).values.clamp(min=1e-300)
        tS = self.U.g[:, None] * self.U.m / self.U.m.max(1, keepdim=True).values.clamp(min=1e-300)
        if self.mode.endswith("_raw"):  # teacher test against the raw class level m_T[k]
            tT = self.T.m
        self.tau_T = tT
        okT = c >= tT.gather(1, y) - TIE
        okS = u >= tS.gather(1, y) - TIE
        if self.mode in ("llkd", "llkd_raw"):
            m = okT & okS
        elif self.mode in ("teacher", "teacher_raw"):
            m = okT
        elif self.mode == "fixed":
            m = c >= self.fixed
        elif self.mode == "random":
            rate = torch.as_tensor(self.rate, dtype=torch.float64).reshape(-1, 1)
            m = torch.rand(c.shape, generator=self.gen, dtype=torch.float64) < rate
        else:
            raise ValueError(self.mode)
        if self.weighting == "product":
            return _product_weights(m, c, u), m
        return m.double(), m


class StaticMask(Rule):
    """A mask fixed before training (cleanlab filtering, pool-level keep rates)."""

    def __init__(self, keep):
        self.keep = torch.as_tensor(keep, dtype=torch.bool)

    def step(self, idx, y, c, z, t):
        m = self.keep[idx]
        return m.double(), m


class ClassMeanThreshold(Rule):
    """(a) s_i = [c_i >= m_T[y_i]] with m_T the running class-mean confidence, NO
    normalisation by max_j m_T[j] (scale in [0,1]: tau = scale * m_T[y])."""

    def __init__(self, lam=0.9, scale=1.0, weighting="none"):
        self.lam, self.scale, self.weighting = lam, scale, weighting
        self.needs_logits = weighting == "product"

    def init(self, S, C, pool):
        super().init(S, C, pool)
        self.T = Levels(S, C, self.lam)

    def step(self, idx, y, c, z, t):
        self.T.update(c, y)
        m = c >= self.scale * self.T.m.gather(1, y) - TIE
        if self.weighting == "product":
            return _product_weights(m, c, normalized_entropy(z)), m
        return m.double(), m


class ConfWeight(Rule):
    """(c) every sample, weight c_i^p (normalised to mean 1 over the batch)."""

    def __init__(self, power=1.0):
        self.p = power

    def step(self, idx, y, c, z, t):
        w = _norm(c**self.p)
        return w, torch.ones_like(c, dtype=torch.bool)


class ExcessConfWeight(Rule):
    """(c*) every sample, weight the confidence above chance, (C c_i - 1) / (C - 1), clipped
    at 0 (a confidence of 1/C carries no information), normalised to mean 1 over the batch."""

    def step(self, idx, y, c, z, t):
        C = self.C
        e = ((C * c - 1.0) / (C - 1.0)).clamp(min=0.0)
        mean = e.mean(1, keepdim=True)
        w = torch.where(mean > 0, e / mean.clamp(min=1e-300), torch.ones_like(e))
        return w, torch.ones_like(c, dtype=torch.bool)


class SoftMatch(Rule):
    """(b) w_i = 1 if c_i >= mu, else max(floor, exp(-(c_i - mu)^2 / (2 var))), with
    mu/var the running (EMA, momentum lam; first update = batch) mean and variance of
    the teacher confidence, globally or per teacher class; normalised to mean 1."""

    def __init__(self, lam=0.9, floor=0.05, per_class=False, width=1.0):
        self.lam, self.floor, self.per_class, self.width = lam, floor, per_class, width

    def init(self, S, C, pool):
        super().init(S, C, pool)
        self.mu, self.sq = Levels(S, C, self.lam), Levels(S, C, self.lam)

    def step(self, idx, y, c, z, t):
        self.mu.update(c, y)
        self.sq.update(c * c, y)
        if self.per_class:
            mu = self.mu.m.gather(1, y)
            var = (self.sq.m.gather(1, y) - mu * mu).clamp(min=1e-12)
        else:
            mu = self.mu.g[:, None].expand_as(c)
            var = (self.sq.g[:, None] - mu * mu).clamp(min=1e-12)
        var = var * self.width**2
        g = torch.exp(-((c - mu) ** 2) / (2 * var))
        w = torch.where(c >= mu, torch.ones_like(c), g.clamp(min=self.floor))
        return _norm(w), torch.ones_like(c, dtype=torch.bool)


class Target(Rule):
    """Target-side options, every sample at weight 1 (or a wrapped rule's weights).

    kind:
      "soft":      q = teacher distribution p_T (cross-entropy to it, T = 1)
      "boot":      q = beta * onehot(y) + (1 - beta) * softmax(z)          (soft bootstrapping)
      "bootconf":  q = c * onehot(y) + (1 - c) * softmax(z)                (per-sample beta = c)
      "softmix":   q = (1 - a(t)) p_T + a(t) softmax(z), a(t) = alpha * min(1, t / ramp)
      "fixed":     q = a given [N, C] matrix (cross-fitted re-labelling)
    """

    def __init__(self, kind, beta=0.8, alpha=0.5, ramp=1.0, q=None, inner=None):
        self.kind, self.beta, self.alpha, self.ramp, self.inner = kind, beta, alpha, ramp, inner
        self.needs_logits = kind in ("boot", "bootconf", "softmix") or (inner is not None and inner.needs_logits)
        self.q = torch.as_tensor(q, dtype=torch.float32) if q is not None else None
        self._c = None
        self._t = 0.0

    def init(self, S, C, pool):
        super().init(S, C, pool)
        if self.inner is not None:
            self.inner.init(S, C, pool)

    def step(self, idx, y, c, z, t):
        self._y, self._c, self._t = y, c, t
        if self.inner is not None:
            return self.inner.step(idx, y, c, z, t)
        m = torch.ones_like(c, dtype=torch.bool)
        return m.double(), m

    def target(self, idx, p_teacher, z):
        C = self.C
        if self.kind == "soft":
            return p_teacher
        if self.kind == "fixed":
            return self.q[idx]
        ps = torch.softmax(z.float(), -1)
        onehot = torch.nn.functional.one_hot(self._y, C).float()
        if self.kind == "boot":
            return self.beta * onehot + (1 - self.beta) * ps
        if self.kind == "bootconf":
            b = self._c.float().unsqueeze(-1)
            return b * onehot + (1 - b) * ps
        if self.kind == "softmix":
            a = self.alpha * min(1.0, self._t / self.ramp)
            return (1 - a) * p_teacher + a * ps
        if self.kind == "fixed":
            return self.q[idx]
        raise ValueError(self.kind)


def class_precision_keep(labels, conf, C):
    """(a2) pool-level keep rate per teacher class = its mean confidence (the teacher's
    estimated precision of that class, co-teaching's R = 1 - noise rate): keep the
    ceil(R_k * n_k) most confident pseudo-labels of class k."""
    keep = np.zeros(len(labels), dtype=bool)
    for k in range(C):
        rows = np.flatnonzero(labels == k)
        if len(rows) == 0:
            continue
        r = conf[rows].mean()
        take = rows[np.argsort(-conf[rows], kind="stable")[: int(np.ceil(r * len(rows)))]]
        keep[take] = True
    return keep


def cleanlab_keep(labels, pred_probs):
    """Confident learning (cleanlab.filter.find_label_issues, prune_by_noise_rate)."""
    from cleanlab.filter import find_label_issues

    issues = find_label_issues(labels=labels, pred_probs=pred_probs, filter_by="prune_by_noise_rate")
    return ~issues
