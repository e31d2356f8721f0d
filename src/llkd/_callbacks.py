"""Callbacks of the student trainer: history, early stopping, progress.

A callback is notified at each stage of :class:`llkd._trainer.Trainer`'s loop (as in
skorch): ``on_train_begin``, ``on_epoch_begin``, ``on_batch_end``, ``on_epoch_end`` and
``on_train_end``, each called with the trainer and keyword arguments. A hook between
epochs (re-labelling, a round of teacher queries) is a new callback whose
``on_epoch_end`` calls :meth:`Trainer.set_targets` or :meth:`Trainer.add_rows`; it may
also set ``trainer.stop_training``.
"""

from __future__ import annotations

import numpy as np


class Callback:
    """Base class: every hook does nothing."""

    def on_train_begin(self, trainer, **kw):
        pass

    def on_epoch_begin(self, trainer, *, epoch, **kw):
        pass

    def on_batch_end(self, trainer, *, batch, **kw):
        pass

    def on_epoch_end(self, trainer, *, record, **kw):
        pass

    def on_train_end(self, trainer, **kw):
        pass


class History(Callback):
    """Per-epoch records: loss, selection counts, thresholds, validation score, seconds.

    ``records`` is the estimator's ``history_``: one dict per epoch (keys documented on
    :class:`~llkd.LLKDClassifier`).
    """

    def __init__(self):
        self.records: list[dict] = []

    def on_train_begin(self, trainer, **kw):
        self.records = []
        self._ever_selected = np.zeros(trainer.n_targets, dtype=bool)

    def on_epoch_begin(self, trainer, *, epoch, **kw):
        n_classes = trainer.config.n_classes
        self._epoch = {
            "loss_sum": 0.0,
            "loss_weight": 0.0,
            "n_backprop": 0,
            "n_selected": 0,
            "skipped": 0,
            "noise_corrected": 0,
            "per_class": np.zeros(n_classes, dtype=np.int64),
            "result": None,
        }

    def on_batch_end(self, trainer, *, batch, **kw):
        e = self._epoch
        e["result"] = batch.result
        e["n_selected"] += batch.n_selected
        e["n_backprop"] += batch.n_backprop
        e["noise_corrected"] += int(batch.noise_corrected and batch.loss is not None)
        if batch.loss is None:
            e["skipped"] += 1
        else:
            e["loss_sum"] += batch.loss * batch.n_selected
            e["loss_weight"] += batch.n_selected
        chosen = batch.rows[batch.mask]
        self._ever_selected[chosen] = True
        e["per_class"] += np.bincount(trainer.labels[chosen], minlength=trainer.config.n_classes)

    def on_epoch_end(self, trainer, *, record, **kw):
        e = self._epoch
        res = e["result"]
        n = len(trainer.rows)
        record.update(
            {
                "loss": e["loss_sum"] / e["loss_weight"] if e["loss_weight"] else float("nan"),
                "selected_fraction": e["n_selected"] / max(1, n),
                "n_selected": int(e["n_selected"]),
                "n_backprop": int(e["n_backprop"]),
                "n_backprop_all": int(n),
                "distinct_selected": int(self._ever_selected.sum()),
                "teacher_threshold": np.asarray(res.teacher_threshold).tolist() if res is not None else [],
                "student_threshold": np.asarray(res.student_threshold).tolist() if res is not None else [],
                "selected_per_class": e["per_class"].tolist(),
                "skipped_steps": int(e["skipped"]),
                "noise_corrected_steps": int(e["noise_corrected"]),
            }
        )
        record.setdefault("val_score", None)
        self.records.append(record)


class EarlyStopping(Callback):
    """Score the held-out rows after each epoch; keep the best weights; stop on a plateau.

    The score is the accuracy against the held-out rows' targets (teacher or gold). After
    ``patience`` epochs without improvement training stops, and at the end the weights of
    the best epoch are restored.
    """

    def __init__(self, val_rows: np.ndarray, patience: int):
        self.val_rows = val_rows
        self.patience = int(patience)

    def on_train_begin(self, trainer, **kw):
        self.best_score, self.best_state, self.since_best = -np.inf, None, 0

    def on_epoch_end(self, trainer, *, record, **kw):
        score = trainer.accuracy(self.val_rows)
        record["val_score"] = score
        if score > self.best_score:
            self.best_score, self.since_best = score, 0
            self.best_state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        else:
            self.since_best += 1
        if self.since_best >= self.patience:
            trainer.stop_training = True

    def on_train_end(self, trainer, **kw):
        if self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)


class ProgressBar(Callback):
    """A tqdm bar over the steps and one line per epoch (``verbose >= 1``)."""

    def on_train_begin(self, trainer, **kw):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=trainer.total_steps, desc="training student", unit="step")

    def on_batch_end(self, trainer, *, batch, **kw):
        self.bar.update(1)

    def on_epoch_end(self, trainer, *, record, **kw):
        msg = (
            f"epoch {record['epoch']}: loss {record['loss']:.4f}, selected "
            f"{100 * record['selected_fraction']:.1f}%, distinct {record['distinct_selected']}"
        )
        if record.get("val_score") is not None:
            msg += f", val {record['val_score']:.4f}"
        self.bar.write(msg)

    def on_train_end(self, trainer, **kw):
        self.bar.close()
