"""The student trainer: a loop over epochs and steps with selection, a weighted loss and callbacks.

Shaped like skorch's ``NeuralNet``: :meth:`Trainer.fit_loop` runs
:meth:`Trainer.run_single_epoch`, which runs :meth:`Trainer.train_step` per mini-batch;
a step is :meth:`Trainer.select` (the :class:`~llkd.selection.AdaptiveSelector` on the
student's detached logits) followed by :meth:`Trainer.loss_step` (the weighted loss and
one optimizer step). History, early stopping and progress are callbacks
(:mod:`llkd._callbacks`), notified at every stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ._callbacks import EarlyStopping, History, ProgressBar
from ._class_weight import class_weights, reweight
from ._label_noise import forward_corrected_loss, reliability
from ._targets import Targets
from .selection import AdaptiveSelector, reads_student
from .students import length_bucketed_batches


@dataclass
class TrainConfig:
    """What the trainer needs; the estimator's parameters of the same names fill it.

    Build it with :meth:`from_params`: every field named like an estimator parameter is
    taken from ``get_params()``, the rest (``n_classes``, the resolved epochs, learning
    rate and schedule) are given explicitly.
    """

    n_classes: int
    max_epochs: int
    learning_rate: float
    lr_schedule: str  # "linear" (10 % warm-up, then linear decay to 0) or "constant"
    selection: str = "llkd"
    weighting: str = "product"
    momentum: float = 0.9
    fixed_threshold: float = 0.9
    random_rate: float = 0.1
    warmup_epochs: float = 0.0
    uncertainty_pass: str = "eval"
    soft_targets: bool = False
    temperature: float = 2.0
    noise_correction: str = "none"  # resolved: "none" or "forward" (llkd._label_noise)
    noise_correction_start: float = 0.5
    # resolved: None, "balanced", "sqrt_balanced" or fixed per-class weights (llkd._class_weight)
    class_weight: object = None
    batch_size: int = 32
    weight_decay: float = 0.01
    early_stopping: bool = False
    validation_fraction: float = 0.1
    n_iter_no_change: int = 5
    selection_backend: str = "auto"
    mixed_precision: str = "auto"
    verbose: int = 0

    @classmethod
    def from_params(cls, params: dict, **explicit) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in params.items() if k in names}
        values.update(explicit)
        return cls(**values)


@dataclass
class BatchResult:
    """What one step did, as callbacks see it."""

    rows: np.ndarray  # target rows of the batch
    mask: np.ndarray  # bool, selected (or warm-up) rows of the batch
    result: object  # the selector's SelectionResult
    n_selected: int
    n_backprop: int
    loss: float | None  # None: nothing selected, no optimizer step
    noise_corrected: bool = False  # the loss was the forward-corrected one


@dataclass
class TrainResult:
    model: torch.nn.Module
    selector: AdaptiveSelector
    history: list


def split_validation(rows, labels, fraction, rng):
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
            f"validation_fraction={fraction} leaves an empty training or validation set for {len(rows)} training rows"
        )
    return np.setdiff1d(rows, val), val


def loss_per_sample(logits, y, proba, soft: bool, temperature: float):
    """Cross-entropy on hard labels, or the temperature-scaled KL to ``proba`` (soft targets)."""
    if soft and proba is not None:
        T = temperature
        log_p = F.log_softmax(logits / T, dim=1)
        target = proba.clamp_min(1e-12)
        target = target / target.sum(1, keepdim=True)
        return (target * (target.log() - log_p)).sum(1) * (T * T)
    return F.cross_entropy(logits, y, reduction="none")


def linear_warmup_decay(warmup_steps: int, total_steps: int):
    """LambdaLR factor: linear warm-up over ``warmup_steps`` (step 0 already at 1/warmup),
    then linear decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


PRECISIONS = ("auto", "bf16", "fp16", "off")


def resolve_precision(setting: str, device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use a grad scaler) for ``mixed_precision`` on ``device``.

    ``"auto"``: bf16 on a CUDA device that supports it, else fp16 with a grad scaler on
    CUDA, and full precision on the CPU (where autocast is slower, not faster).
    ``"bf16"``/``"fp16"`` force that dtype on any device; ``"off"`` is full precision.
    """
    device = torch.device(device)
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None, False
    if setting == "auto":
        setting = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if setting == "bf16":
        return torch.bfloat16, False
    if setting == "fp16":
        return torch.float16, True
    raise ValueError(f"mixed_precision must be one of {PRECISIONS}; got {setting!r}")


def autocast(device, dtype):
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def _as_tensor(x, device, dtype):
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(x), device=device, dtype=dtype)


def _take(x, sel):
    if isinstance(x, dict):
        x = {k: v[sel] for k, v in x.items()}
        width = int(x["attention_mask"].sum(1).max())  # trim the sub-batch's padding
        return {k: v[:, :width] for k, v in x.items()}
    return x[sel]


def _adamw(params, cfg):
    """AdamW, fused where torch has a fused kernel for the parameters' device.

    Torch's CPU default loops over the tensors in Python, several times slower for the
    fine-tuned student (benchmarks/RESULTS.md, "Fused AdamW").
    """
    try:
        return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this torch or device
        return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


class Trainer:
    """Train ``model`` on rows of ``data`` against ``targets`` with adaptive selection.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``data.batch(idx, device)`` to logits.
    data : object
        ``batch(idx, device)`` and optionally ``lengths`` (for length-bucketed batches).
    targets : Targets
        Labels, confidences and optional distributions, one per row of ``data``.
    config : TrainConfig
    device : torch.device
    rng : numpy.random.RandomState
        Drives the validation split, the batch order and the selector's seed.
    callbacks : list of Callback, optional
        Extra callbacks, notified after the built-in ones (history, early stopping,
        progress).
    epoch_sizes : list of int, optional
        Rows expected per epoch when a callback grows the pool (:meth:`add_rows`), so the
        learning-rate schedule spans the steps that will really be taken; default: every
        epoch the size of the initial rows.
    """

    def __init__(
        self, model, data, targets: Targets, config: TrainConfig, *, device, rng, callbacks=(), epoch_sizes=None
    ):
        self.epoch_sizes = epoch_sizes
        self.model = model
        self.data = data
        self.config = config
        self.device = device
        self.rng = rng
        self.extra_callbacks = list(callbacks)
        self.amp_dtype, self.scaler = None, None  # set in _build from config.mixed_precision
        self.set_targets(targets)

    # ------------------------------------------------------------------ targets
    @property
    def n_targets(self) -> int:
        return len(self.labels)

    def set_targets(self, targets: Targets) -> None:
        """Replace the targets (e.g. after re-labelling); takes effect at the next step."""
        self.labels = np.asarray(targets.labels, dtype=np.int64)
        self.confidence = np.asarray(targets.confidence, dtype=np.float64)
        self.proba = targets.proba
        self.is_gold = targets.is_gold
        self._reliability_t = None  # recomputed over the training rows at the next epoch
        self._class_w_t = None  # likewise
        self._labels_t = torch.as_tensor(self.labels, dtype=torch.long)
        self._conf_t = torch.as_tensor(self.confidence, dtype=torch.float64)
        self._proba_t = torch.as_tensor(self.proba, dtype=torch.float32) if self.proba is not None else None
        if getattr(self, "_on_cuda", False):
            self._to_device()

    def add_rows(self, rows) -> None:
        """Train on these rows too from the next epoch on (e.g. newly labelled ones)."""
        self.rows = np.union1d(self.rows, np.asarray(rows, dtype=np.int64))

    def _to_device(self):
        self._labels_t = self._labels_t.to(self.device)
        self._conf_t = self._conf_t.to(self.device)
        if self._proba_t is not None:
            self._proba_t = self._proba_t.to(self.device)

    # ------------------------------------------------------------------- set-up
    def _build(self, rows):
        cfg = self.config
        self.callbacks = [History()]
        if cfg.early_stopping:
            rows, val_rows = split_validation(rows, self.labels, cfg.validation_fraction, self.rng)
            self.callbacks.append(EarlyStopping(val_rows, cfg.n_iter_no_change))
        if cfg.verbose:
            self.callbacks.append(ProgressBar())
        self.callbacks.extend(self.extra_callbacks)
        self.rows = np.asarray(rows, dtype=np.int64)

        self.selector = AdaptiveSelector(
            cfg.n_classes,
            momentum=cfg.momentum,
            mode=cfg.selection,
            weighting=cfg.weighting,
            backend=cfg.selection_backend,
            fixed_threshold=cfg.fixed_threshold,
            random_rate=cfg.random_rate,
            random_state=self.rng.randint(0, 2**31 - 1),
        )
        self._on_cuda = (
            self.device.type == "cuda" and self.selector.resolve_backend(torch.empty(0, device=self.device)) == "cuda"
        )
        # Rules that read only the teacher need no scoring pass (docs/design.md section 3).
        self._scores_needed = reads_student(cfg.selection, cfg.weighting)
        if self._on_cuda:
            self._to_device()

        self.optimizer = _adamw([p for p in self.model.parameters() if p.requires_grad], cfg)
        self.steps_per_epoch = max(1, math.ceil(len(self.rows) / cfg.batch_size))
        if self.epoch_sizes is not None:
            self.total_steps = sum(max(1, math.ceil(r / cfg.batch_size)) for r in self.epoch_sizes)
        else:
            self.total_steps = self.steps_per_epoch * cfg.max_epochs
        if cfg.lr_schedule == "linear":
            factor = linear_warmup_decay(max(1, int(0.1 * self.total_steps)), self.total_steps)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        else:
            self.scheduler = None
        self.amp_dtype, use_scaler = resolve_precision(cfg.mixed_precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if use_scaler else None
        self.warmup_steps = int(round(cfg.warmup_epochs * self.steps_per_epoch))
        self.forward_from_step = (
            int(round(cfg.noise_correction_start * self.total_steps)) if cfg.noise_correction == "forward" else None
        )
        self.class_weights = None  # per-class loss weights of the current epoch (None: none)
        self.global_step = 0
        self.stop_training = False
        self.history = self.callbacks[0]

    def notify(self, event: str, **kw) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self, **kw)

    # --------------------------------------------------------------------- loop
    def fit_loop(self, rows) -> TrainResult:
        self._build(rows)
        self.notify("on_train_begin")
        for epoch in range(self.config.max_epochs):
            self.run_single_epoch(epoch)
            if self.stop_training:
                break
        self.notify("on_train_end")
        self.model.eval()
        return TrainResult(self.model, self.selector, self.history.records)

    def run_single_epoch(self, epoch: int) -> None:
        t0 = time.perf_counter()
        self.notify("on_epoch_begin", epoch=epoch)
        if self.forward_from_step is not None:  # the rows may have grown (teacher budget)
            a = reliability(self.confidence, self.rows, self.is_gold, self.config.n_classes)
            self._reliability_t = torch.as_tensor(a, device=self._labels_t.device)
        w_class = class_weights(self.config.class_weight, self.labels, self.rows, self.config.n_classes)
        self.class_weights = w_class
        self._class_w_t = None if w_class is None else torch.as_tensor(w_class, device=self.device)
        order = self.rows[self.rng.permutation(len(self.rows))]
        lengths = getattr(self.data, "lengths", None)
        for idx in length_bucketed_batches(order, self.config.batch_size, lengths, self.rng):
            batch = self.train_step(idx)
            self.notify("on_batch_end", batch=batch)
        record = {"epoch": epoch + 1}
        seconds = time.perf_counter() - t0
        self.notify("on_epoch_end", record=record)
        record["seconds"] = seconds

    def train_step(self, idx: np.ndarray) -> BatchResult:
        cfg = self.config
        x = self.data.batch(idx, self.device)
        idx_t = torch.from_numpy(idx).to(self._labels_t.device)
        y_b, c_b = self._labels_t[idx_t], self._conf_t[idx_t]
        p_b = self._proba_t[idx_t] if self._proba_t is not None else None
        forward = self.forward_from_step is not None and self.global_step >= self.forward_from_step
        a_b = self._reliability_t[idx_t] if forward else None

        if cfg.uncertainty_pass == "eval" and not self._scores_needed:
            score_logits = torch.zeros(len(idx), cfg.n_classes, device=self.device)
            logits = None
        elif cfg.uncertainty_pass == "eval":
            self.model.eval()
            with torch.no_grad(), self._autocast():
                score_logits = self.model(x)
            self.model.train()
            logits = None
        else:
            self.model.train()
            with self._autocast():
                logits = self.model(x)
            score_logits = logits.detach()

        res, mask, weights = self.select(score_logits, idx, y_b, c_b)
        self.global_step += 1
        k = int(mask.sum())
        mask_np = mask.cpu().numpy()
        if k == 0:
            if self.scheduler is not None:
                self._advance_schedule()
            return BatchResult(idx, mask_np, res, 0, 0, None)
        loss, n_backprop = self.loss_step(x, logits, mask, weights, y_b, p_b, k, a_b)
        return BatchResult(idx, mask_np, res, k, n_backprop, loss, noise_corrected=forward)

    def select(self, score_logits, idx, y_b, c_b):
        """The selector's step on a batch: (result, mask, weights) as tensors on the device."""
        if self._on_cuda:
            res = self.selector.step(score_logits, y_b, c_b)
        else:
            res = self.selector.step(score_logits.float().cpu().numpy(), self.labels[idx], self.confidence[idx])
        mask = _as_tensor(res.mask, self.device, torch.bool)
        weights = _as_tensor(res.weights, self.device, torch.float32)
        if self.global_step < self.warmup_steps:
            mask, weights = torch.ones_like(mask), torch.ones_like(weights)
        if self._class_w_t is not None:
            weights = reweight(weights, mask, y_b.to(self.device), self._class_w_t)
        return res, mask, weights

    def loss_step(self, x, logits, mask, weights, y_b, p_b, k: int, a_b=None):
        """Weighted loss over the selected rows and one optimizer step: (loss, rows back-propagated).

        ``a_b``: the rows' label reliabilities when the forward noise correction is on.
        """
        cfg = self.config
        y_dev = y_b.to(self.device)
        p_dev = p_b.to(self.device) if p_b is not None else None
        a_dev = a_b.to(self.device) if a_b is not None else None
        with self._autocast():
            if logits is None:  # eval pass: a second forward over the selected rows only
                sel = torch.nonzero(mask).squeeze(1)
                logits = self.model(_take(x, sel))
                y_dev, p_dev, weights = y_dev[sel], p_dev[sel] if p_dev is not None else None, weights[sel]
                a_dev = a_dev[sel] if a_dev is not None else None
                n_backprop = k
            else:
                n_backprop = len(mask)
        # The loss in float32, whatever precision the forward pass ran in.
        if a_dev is not None:
            per_sample = forward_corrected_loss(logits.float(), y_dev, a_dev)
        else:
            per_sample = loss_per_sample(logits.float(), y_dev, p_dev, cfg.soft_targets, cfg.temperature)
        loss = (weights * per_sample).sum() / max(1, k)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return float(loss.detach()), n_backprop

    def _autocast(self):
        return autocast(self.device, self.amp_dtype)

    def _advance_schedule(self):
        # A step with nothing selected still moves the schedule, as a step with an update does.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()`")
            self.scheduler.step()

    # ---------------------------------------------------------------- scoring
    @torch.no_grad()
    def logits(self, rows: np.ndarray) -> np.ndarray:
        """The model's logits (float64, eval mode) for ``rows``, in their order.

        Texts go through in batches of similar length; the model is left in train mode.
        """
        self.model.eval()
        lengths = getattr(self.data, "lengths", None)
        order = np.argsort(lengths[rows], kind="stable") if lengths is not None else np.arange(len(rows))
        out = np.empty((len(rows), self.config.n_classes))
        bs = max(256, self.config.batch_size)
        for start in range(0, len(rows), bs):
            pos = order[start : start + bs]
            with self._autocast():
                out[pos] = self.model(self.data.batch(rows[pos], self.device)).double().cpu().numpy()
        self.model.train()
        return out

    def accuracy(self, rows: np.ndarray) -> float:
        """Agreement of the model's argmax with the targets on ``rows``."""
        if len(rows) == 0:
            return 0.0
        return float((self.logits(rows).argmax(axis=1) == self.labels[rows]).mean())
