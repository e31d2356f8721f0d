"""The LLKD training loop: selection at every step, weighted loss, per-epoch records."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .selection import AdaptiveSelector
from .students import length_bucketed_batches


@dataclass
class TrainConfig:
    n_classes: int
    selection: str
    weighting: str
    momentum: float
    fixed_threshold: float
    random_rate: float
    warmup_epochs: float
    uncertainty_pass: str
    soft_targets: bool
    temperature: float
    max_epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    lr_schedule: str
    early_stopping: bool
    validation_fraction: float
    n_iter_no_change: int
    selection_backend: str
    verbose: int


@dataclass
class TrainResult:
    model: torch.nn.Module
    selector: AdaptiveSelector
    history: list


def _split_validation(rows, labels, fraction, rng):
    """Stratified hold-out of ``fraction`` of ``rows`` (at least one row per split)."""
    val = []
    for k in np.unique(labels[rows]):
        members = rows[labels[rows] == k]
        members = members[rng.permutation(len(members))]
        take = int(round(fraction * len(members)))
        val.extend(members[:take])
    val = np.array(sorted(val), dtype=np.int64)
    if len(val) == 0 or len(val) == len(rows):
        raise ValueError(
            f"validation_fraction={fraction} leaves an empty training or validation set "
            f"for {len(rows)} training rows"
        )
    train = np.setdiff1d(rows, val)
    return train, val


@torch.no_grad()
def _accuracy(model, data, rows, labels, device, batch_size):
    model.eval()
    correct = 0
    lengths = getattr(data, "lengths", None)
    if lengths is not None:
        rows = rows[np.argsort(lengths[rows], kind="stable")]
    for start in range(0, len(rows), batch_size):
        idx = rows[start : start + batch_size]
        pred = model(data.batch(idx, device)).argmax(1).cpu().numpy()
        correct += int((pred == labels[idx]).sum())
    return correct / max(1, len(rows))


def _selector_inputs(logits, y_dev, c_dev, y_np, c_np, on_cuda):
    if on_cuda:
        return logits, y_dev, c_dev
    return logits.float().numpy(), y_np, c_np


def _as_tensor(x, device, dtype=None):
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype) if dtype is not None else x.to(device)
    return torch.as_tensor(np.asarray(x), device=device, dtype=dtype)


def _loss_per_sample(logits, y, proba, soft, temperature):
    if soft and proba is not None:
        T = temperature
        log_p = F.log_softmax(logits / T, dim=1)
        target = proba.clamp_min(1e-12)
        target = target / target.sum(1, keepdim=True)
        return (target * (target.log() - log_p)).sum(1) * (T * T)
    return F.cross_entropy(logits, y, reduction="none")


def train_student(model, data, rows, targets, cfg: TrainConfig, *, device, rng) -> TrainResult:
    """Train ``model`` on ``rows`` of ``data`` against ``targets`` with adaptive selection."""
    labels_np = targets.labels
    conf_np = targets.confidence
    val_rows = None
    if cfg.early_stopping:
        rows, val_rows = _split_validation(rows, labels_np, cfg.validation_fraction, rng)

    selector = AdaptiveSelector(
        cfg.n_classes,
        momentum=cfg.momentum,
        mode=cfg.selection,
        weighting=cfg.weighting,
        backend=cfg.selection_backend,
        fixed_threshold=cfg.fixed_threshold,
        random_rate=cfg.random_rate,
        random_state=rng.randint(0, 2**31 - 1),
    )
    on_cuda = device.type == "cuda" and selector.resolve_backend(torch.empty(0, device=device)) == "cuda"

    labels_t = torch.as_tensor(labels_np, dtype=torch.long)
    conf_t = torch.as_tensor(conf_np, dtype=torch.float64)
    proba_t = torch.as_tensor(targets.proba, dtype=torch.float32) if targets.proba is not None else None
    if on_cuda:
        labels_t, conf_t = labels_t.to(device), conf_t.to(device)
        proba_t = proba_t.to(device) if proba_t is not None else None

    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )
    n = len(rows)
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    total_steps = steps_per_epoch * cfg.max_epochs
    warmup_lr_steps = max(1, int(0.1 * total_steps))

    def lr_at(step):
        if cfg.lr_schedule != "linear":
            return cfg.learning_rate
        if step < warmup_lr_steps:  # linear warm-up, then linear decay to 0
            return cfg.learning_rate * (step + 1) / warmup_lr_steps
        return cfg.learning_rate * max(0.0, (total_steps - step) / max(1, total_steps - warmup_lr_steps))

    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))

    history = []
    ever_selected = np.zeros(len(labels_np), dtype=bool)
    best_score, best_state, since_best = -np.inf, None, 0
    global_step = 0
    progress = None
    if cfg.verbose:
        from tqdm.auto import tqdm

        progress = tqdm(total=total_steps, desc="training student", unit="step")

    for epoch in range(cfg.max_epochs):
        t0 = time.perf_counter()
        order = rows[rng.permutation(n)]
        loss_sum, loss_weight, n_backprop, n_selected, skipped = 0.0, 0.0, 0, 0, 0
        per_class = np.zeros(cfg.n_classes, dtype=np.int64)
        res = None
        for idx in length_bucketed_batches(order, cfg.batch_size, getattr(data, "lengths", None), rng):
            x = data.batch(idx, device)
            idx_t = torch.from_numpy(idx).to(labels_t.device)
            y_b = labels_t[idx_t]
            c_b = conf_t[idx_t]
            p_b = proba_t[idx_t] if proba_t is not None else None
            in_warmup = global_step < warmup_steps

            if cfg.uncertainty_pass == "eval":
                model.eval()
                with torch.no_grad():
                    score_logits = model(x)
                model.train()
            else:
                model.train()
                logits = model(x)
                score_logits = logits.detach()

            res = selector.step(
                *_selector_inputs(score_logits, y_b, c_b, labels_np[idx], conf_np[idx], on_cuda)
            )
            mask = _as_tensor(res.mask, device, torch.bool)
            weights = _as_tensor(res.weights, device, torch.float32)
            if in_warmup:
                mask = torch.ones_like(mask)
                weights = torch.ones_like(weights)
            k = int(mask.sum())
            mask_np = mask.cpu().numpy()
            n_selected += k
            ever_selected[idx[mask_np]] = True
            per_class += np.bincount(labels_np[idx[mask_np]], minlength=cfg.n_classes)
            global_step += 1
            if progress is not None:
                progress.update(1)
            if k == 0:
                skipped += 1
                continue

            y_dev = y_b.to(device)
            p_dev = p_b.to(device) if p_b is not None else None
            if cfg.uncertainty_pass == "eval":
                sel = torch.nonzero(mask).squeeze(1)
                x_sel = {kk: v[sel] for kk, v in x.items()} if isinstance(x, dict) else x[sel]
                if isinstance(x_sel, dict):  # trim padding of the selected sub-batch
                    width = int(x_sel["attention_mask"].sum(1).max())
                    x_sel = {kk: v[:, :width] for kk, v in x_sel.items()}
                logits = model(x_sel)
                per_sample = _loss_per_sample(
                    logits, y_dev[sel], p_dev[sel] if p_dev is not None else None, cfg.soft_targets, cfg.temperature
                )
                loss = (weights[sel] * per_sample).sum() / max(1, k)
                n_backprop += k
            else:
                per_sample = _loss_per_sample(logits, y_dev, p_dev, cfg.soft_targets, cfg.temperature)
                loss = (weights * per_sample).sum() / max(1, k)
                n_backprop += len(idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for group in optimizer.param_groups:
                group["lr"] = lr_at(global_step - 1)
            optimizer.step()
            loss_sum += float(loss.detach()) * k
            loss_weight += k

        record = {
            "epoch": epoch + 1,
            "loss": loss_sum / loss_weight if loss_weight else float("nan"),
            "selected_fraction": n_selected / max(1, n),
            "n_selected": int(n_selected),
            "n_backprop": int(n_backprop),
            "n_backprop_all": int(n),
            "distinct_selected": int(ever_selected.sum()),
            "teacher_threshold": np.asarray(res.teacher_threshold).tolist(),
            "student_threshold": np.asarray(res.student_threshold).tolist(),
            "selected_per_class": per_class.tolist(),
            "skipped_steps": int(skipped),
            "val_score": None,
            "seconds": time.perf_counter() - t0,
        }
        if val_rows is not None:
            score = _accuracy(model, data, val_rows, labels_np, device, max(256, cfg.batch_size))
            record["val_score"] = score
            if score > best_score:
                best_score, since_best = score, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                since_best += 1
        history.append(record)
        if cfg.verbose:
            msg = (
                f"epoch {epoch + 1}: loss {record['loss']:.4f}, selected "
                f"{100 * record['selected_fraction']:.1f}%, distinct {record['distinct_selected']}"
            )
            if record["val_score"] is not None:
                msg += f", val {record['val_score']:.4f}"
            (progress.write if progress is not None else print)(msg)
        if val_rows is not None and since_best >= cfg.n_iter_no_change:
            break
    if progress is not None:
        progress.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, selector, history)
