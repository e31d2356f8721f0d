"""A batched copy of the library's MLP training loop with pluggable per-step rules.

S seeds train at once as S independent MLPs (stacked weights, one bmm per layer):
the same network as ``llkd.students.MLPHead`` (Linear 384->256, GELU, Dropout 0.1,
Linear 256->C, torch's default Linear init), the same AdamW (lr 1e-3, betas
(0.9, 0.999), eps 1e-8, weight decay 0.01, decoupled), batch 32, constant lr,
``uncertainty_pass="eval"`` (each batch is scored by a no-grad eval-mode forward pass,
the rule picks weights, then a train-mode forward/backward gives
``sum_i w_i * loss_i / max(1, #selected)``; a seed whose batch selects nothing makes
no optimizer step, exactly as ``llkd._training.train_student``). Only the per-step rule
and the per-sample target change between methods.

A rule is an object with ``init(S, n_classes, pool)`` and
``step(idx, labels, conf, logits_eval, epoch_frac) -> (weights [S,B] float64, selected [S,B] bool)``,
and optionally ``target(idx, teacher_proba, logits_eval) -> [S,B,C]`` soft targets.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def normalized_entropy(logits):
    logp = torch.log_softmax(logits.double(), dim=-1)
    h = -(logp.exp() * logp).sum(-1)
    return (h / math.log(logits.shape[-1])).clamp(0.0, 1.0)


class BatchedMLP:
    def __init__(self, S, d, C, hidden=256, dropout=0.1, seeds=None):
        self.params = []
        W1, b1, W2, b2 = [], [], [], []
        for s in range(S):
            torch.manual_seed(int(seeds[s]) if seeds is not None else s)
            l1 = torch.nn.Linear(d, hidden)
            l2 = torch.nn.Linear(hidden, C)
            W1.append(l1.weight.detach().T.clone())
            b1.append(l1.bias.detach().clone())
            W2.append(l2.weight.detach().T.clone())
            b2.append(l2.bias.detach().clone())
        self.W1 = torch.stack(W1).requires_grad_()
        self.b1 = torch.stack(b1).requires_grad_()
        self.W2 = torch.stack(W2).requires_grad_()
        self.b2 = torch.stack(b2).requires_grad_()
        self.params = [self.W1, self.b1, self.W2, self.b2]
        self.dropout = dropout
        self.S = S

    def forward(self, x, train):
        # x: [S, B, d]
        h = F.gelu(torch.baddbmm(self.b1.unsqueeze(1), x, self.W1))
        if train and self.dropout > 0:
            h = F.dropout(h, self.dropout, training=True)
        return torch.baddbmm(self.b2.unsqueeze(1), h, self.W2)

    @torch.no_grad()
    def predict_logits(self, X, batch=4096):
        out = []
        for s in range(0, len(X), batch):
            x = X[s : s + batch].unsqueeze(0).expand(self.S, -1, -1)
            out.append(self.forward(x, train=False))
        return torch.cat(out, 1)


class BatchedAdamW:
    """torch.optim.AdamW (foreach) over the stacked weights; a seed whose batch selected
    nothing keeps its weights and moments (no optimizer step, as the library). The step
    count is shared by the seeds, so a skipped seed's bias correction runs one step ahead
    (counted in the stats as ``skipped``; zero for the rules that keep every sample)."""

    def __init__(self, params, lr=1e-3, weight_decay=0.01):
        self.params = params
        self.opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)

    @torch.no_grad()
    def step(self, active):
        if bool(active.all()):
            self.opt.step()
            return
        off = torch.nonzero(~active).squeeze(1)
        saved = [
            (
                p,
                p[off].clone(),
                {k: v[off].clone() for k, v in self.opt.state[p].items() if torch.is_tensor(v) and v.dim() > 0},
            )
            for p in self.params
        ]
        self.opt.step()
        for p, pv, st in saved:
            p[off] = pv
            for k, v in st.items():
                self.opt.state[p][k][off] = v


def train(X, labels, conf, proba, rule, *, seeds, epochs=10, batch_size=32, n_classes, X_test=None, record=None):
    """Train len(seeds) students on pool features X against the teacher (labels, conf, proba).

    labels/conf/proba: numpy [N], [N], [N, C] (the rule may ignore them, e.g. gold).
    Returns test logits [S, Nt, C] and a dict of per-seed statistics.
    """
    torch.set_num_threads(1)
    S = len(seeds)
    N, d = X.shape
    Xt = torch.as_tensor(X, dtype=torch.float32)
    lab_t = torch.as_tensor(labels, dtype=torch.long)
    conf_t = torch.as_tensor(conf, dtype=torch.float64)
    proba_t = torch.as_tensor(proba, dtype=torch.float32)
    model = BatchedMLP(S, d, n_classes, seeds=seeds)
    opt = BatchedAdamW(model.params)
    rngs = [np.random.RandomState(int(s) + 7919) for s in seeds]
    rule.init(S, n_classes, dict(X=X, labels=labels, conf=conf, proba=proba, seeds=seeds, model=model))
    n_steps = math.ceil(N / batch_size)
    used = np.zeros(S)
    seen = 0
    skipped = np.zeros(S, dtype=np.int64)
    for epoch in range(epochs):
        perms = np.stack([r.permutation(N) for r in rngs])  # [S, N]
        if hasattr(rule, "start_epoch"):
            rule.start_epoch(epoch, model)
        for b in range(n_steps):
            idx = torch.as_tensor(perms[:, b * batch_size : (b + 1) * batch_size])  # [S, B]
            x = Xt[idx]  # [S, B, d]
            if getattr(rule, "needs_logits", True):
                with torch.no_grad():
                    logits_eval = model.forward(x, train=False)
            else:
                logits_eval = None
            y = lab_t[idx]
            c = conf_t[idx]
            w, sel = rule.step(idx, y, c, logits_eval, epoch + b / n_steps)
            k = sel.sum(1)
            used += k.numpy()
            seen += idx.shape[1]
            active = k > 0
            skipped += (~active).numpy()
            if not bool(active.any()):
                continue
            logits = model.forward(x, train=True)
            tgt = rule.target(idx, proba_t[idx], logits_eval) if hasattr(rule, "target") else None
            if hasattr(rule, "loss"):
                per = rule.loss(idx, logits, y, c, proba_t[idx])
            elif tgt is None:
                per = F.cross_entropy(logits.reshape(-1, n_classes), y.reshape(-1), reduction="none").view_as(y)
            else:
                per = -(tgt * torch.log_softmax(logits, -1)).sum(-1)
            loss = ((w.float() * per).sum(1) / k.clamp(min=1).float()).sum()
            for p in model.params:
                p.grad = None
            loss.backward()
            opt.step(active)
    stats = {"used": used / seen, "skipped": skipped}
    out = model.predict_logits(torch.as_tensor(X_test, dtype=torch.float32)) if X_test is not None else None
    if record is not None:
        record["model"] = model
    return out, stats
