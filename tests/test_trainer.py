"""The student trainer: callbacks, hooks between epochs, the schedule, and thread counts."""

import threading

import numpy as np
import pytest
import torch

from llkd import LLKDClassifier
from llkd._callbacks import Callback
from llkd._trainer import Targets, TrainConfig, Trainer, linear_warmup_decay
from llkd.students import FeatureData, MLPHead


def _task(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    return X, y


def _trainer(X, labels, callbacks=(), **cfg):
    torch.manual_seed(0)
    config = TrainConfig(
        n_classes=2,
        max_epochs=cfg.pop("max_epochs", 4),
        learning_rate=1e-2,
        lr_schedule=cfg.pop("lr_schedule", "constant"),
        selection=cfg.pop("selection", "all"),
        **cfg,
    )
    model = MLPHead(X.shape[1], 2, 16, 0.0)
    targets = Targets(labels, np.ones(len(labels)), None)
    return Trainer(
        model,
        FeatureData(X),
        targets,
        config,
        device=torch.device("cpu"),
        rng=np.random.RandomState(0),
        callbacks=callbacks,
    )


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, trainer, **kw):
        self.events.append("train_begin")

    def on_epoch_begin(self, trainer, *, epoch, **kw):
        self.events.append(f"epoch_begin:{epoch}")

    def on_batch_end(self, trainer, *, batch, **kw):
        self.events.append("batch")

    def on_epoch_end(self, trainer, *, record, **kw):
        # The built-in History runs first: the record is complete when a hook sees it.
        assert "loss" in record and "selected_fraction" in record
        self.events.append(f"epoch_end:{record['epoch']}")

    def on_train_end(self, trainer, **kw):
        self.events.append("train_end")


def test_callbacks_are_notified_at_every_stage_in_order():
    X, y = _task(64)
    rec = Recorder()
    result = _trainer(X, y, [rec], max_epochs=2, batch_size=32).fit_loop(np.arange(64))
    assert rec.events == [
        "train_begin",
        "epoch_begin:0",
        "batch",
        "batch",
        "epoch_end:1",
        "epoch_begin:1",
        "batch",
        "batch",
        "epoch_end:2",
        "train_end",
    ]
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert all(r["n_backprop"] == r["n_backprop_all"] == 64 for r in result.history)


def test_a_hook_between_epochs_can_relabel_add_rows_and_stop():
    """Re-labelling and a round of new rows are callbacks, not edits of the loop."""
    X, y = _task(120)

    class Relabel(Callback):
        def on_epoch_end(self, trainer, *, record, **kw):
            if record["epoch"] == 1:
                trainer.add_rows(np.arange(60, 120))  # newly labelled rows join the pool
                trainer.set_targets(Targets(1 - y, np.ones(len(y)), None))  # flipped targets
            if record["epoch"] == 6:
                trainer.stop_training = True

    trainer = _trainer(X, y, [Relabel()], max_epochs=20, batch_size=8)
    result = trainer.fit_loop(np.arange(60))
    assert [r["n_backprop_all"] for r in result.history] == [60] + [120] * 5  # stopped after epoch 6
    assert result.history[1]["loss"] > result.history[0]["loss"]  # the new targets disagree at first
    pred = result.model(torch.from_numpy(X)).argmax(1).numpy()
    assert (pred == 1 - y).mean() > 0.8  # and then it learned them


def test_early_stopping_restores_the_best_epoch_and_stops_on_a_plateau():
    X, y = _task(200)
    noisy = y.copy()
    trainer = _trainer(X, noisy, max_epochs=30, early_stopping=True, validation_fraction=0.2, n_iter_no_change=2)
    result = trainer.fit_loop(np.arange(200))
    scores = [r["val_score"] for r in result.history]
    assert len(scores) < 30 and all(s is not None for s in scores)
    best = int(np.argmax(scores))
    assert len(scores) - 1 - best == 2  # stopped two epochs after the best one
    es = [cb for cb in trainer.callbacks if type(cb).__name__ == "EarlyStopping"][0]
    assert trainer.accuracy(es.val_rows) == pytest.approx(max(scores))  # best weights restored


def test_linear_schedule_warms_up_then_decays_to_zero():
    f = linear_warmup_decay(3, 10)
    assert [round(f(s), 6) for s in range(11)] == [
        round(v, 6) for v in [1 / 3, 2 / 3, 1, 1, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7, 0]
    ]
    X, y = _task(64)
    trainer = _trainer(X, y, max_epochs=2, batch_size=16, lr_schedule="linear")
    seen = []

    class LR(Callback):
        def on_batch_end(self, trainer, *, batch, **kw):
            seen.append(trainer.optimizer.param_groups[0]["lr"])

    trainer.extra_callbacks.append(LR())
    trainer.fit_loop(np.arange(64))
    # 8 steps, 1 warm-up step: after step s the next step's rate is lr * f(s + 1).
    g = linear_warmup_decay(1, 8)
    np.testing.assert_allclose(seen, [1e-2 * g(s + 1) for s in range(8)])


def test_train_config_takes_the_estimators_parameters_by_name():
    est = LLKDClassifier(selection="teacher", momentum=0.5, batch_size=7, early_stopping=True)
    cfg = TrainConfig.from_params(
        est.get_params(deep=False), n_classes=3, max_epochs=2, learning_rate=1.0, lr_schedule="constant"
    )
    assert (cfg.selection, cfg.momentum, cfg.batch_size, cfg.early_stopping, cfg.n_classes) == (
        "teacher",
        0.5,
        7,
        True,
        3,
    )


@pytest.mark.parametrize("n_threads", [None, 1, 2])
def test_fit_and_predict_never_change_the_callers_thread_count(n_threads, monkeypatch):
    X, y = _task(100)
    callers = []
    real = torch.set_num_threads

    def recording(n):
        callers.append(threading.current_thread())
        real(n)

    before = torch.get_num_threads()
    monkeypatch.setattr(torch, "set_num_threads", recording)
    clf = LLKDClassifier(max_epochs=2, random_state=0, n_threads=n_threads).fit(X, y)
    clf.predict_proba(X)
    assert torch.get_num_threads() == before
    assert threading.current_thread() not in callers


def test_n_threads_is_validated_in_fit():
    X, y = _task(20)
    est = LLKDClassifier(n_threads=0)  # __init__ only stores it
    with pytest.raises(ValueError, match="n_threads"):
        est.fit(X, y)


class CountingHead(MLPHead):
    def __init__(self, *args):
        super().__init__(*args)
        self.calls = {"eval": 0, "train": 0}

    def forward(self, x):
        self.calls["train" if self.training else "eval"] += 1
        return super().forward(x)


def _counting_fit(X, labels, conf, **cfg):
    torch.manual_seed(0)
    config = TrainConfig(n_classes=2, max_epochs=3, learning_rate=1e-2, lr_schedule="constant", **cfg)
    model = CountingHead(X.shape[1], 2, 16, 0.1)
    trainer = Trainer(
        model,
        FeatureData(X),
        Targets(labels, conf, None),
        config,
        device=torch.device("cpu"),
        rng=np.random.RandomState(0),
    )
    result = trainer.fit_loop(np.arange(len(labels)))
    return model, result


@pytest.mark.parametrize(
    "selection,weighting,reads",
    [("class_mean", "none", False), ("all", "product", False), ("teacher", "none", False), ("llkd", "product", True)],
)
def test_scoring_pass_runs_only_for_rules_that_read_the_student(selection, weighting, reads, monkeypatch):
    """A rule that reads only the teacher skips the eval-mode scoring pass, and skipping it
    changes nothing: the same fit with the pass forced on gives identical weights."""
    import llkd._trainer as trainer_module

    X, y = _task(96)
    conf = np.random.default_rng(1).uniform(0.5, 1.0, len(y))
    model, result = _counting_fit(X, y, conf, selection=selection, weighting=weighting, batch_size=16)
    steps = 3 * 96 // 16
    assert model.calls["eval"] == (steps if reads else 0)
    if not reads:
        monkeypatch.setattr(trainer_module, "reads_student", lambda *a: True)
        forced, forced_result = _counting_fit(X, y, conf, selection=selection, weighting=weighting, batch_size=16)
        assert forced.calls["eval"] == steps
        for a, b in zip(model.state_dict().values(), forced.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert [r["selected_fraction"] for r in result.history] == [
            r["selected_fraction"] for r in forced_result.history
        ]


def test_weighting_auto_is_none_for_class_mean_and_product_for_the_spec_modes():
    from llkd.selection import AdaptiveSelector

    assert AdaptiveSelector(3, mode="class_mean", weighting="auto").weighting == "none"
    assert AdaptiveSelector(3, mode="llkd", weighting="auto").weighting == "product"
    X, y = _task(64)
    clf = LLKDClassifier(student="mlp", selection="class_mean", weighting="auto", max_epochs=2, random_state=0)
    clf.fit(X, y)  # gold labels: confidence 1 everywhere, every row ties its class mean and passes
    assert clf.history_[-1]["selected_fraction"] == 1.0
    assert clf.selector_.weighting == "none" and clf.get_params()["weighting"] == "auto"


def test_selection_auto_is_confidence_for_the_mlp_and_all_for_the_finetuned_student(tmp_path):
    from llkd.selection import resolve_selection

    assert resolve_selection("auto", "mlp") == "confidence"
    assert resolve_selection("auto", "finetune") == "all"
    assert resolve_selection("llkd", "finetune") == "llkd"
    X, y = _task(64)
    clf = LLKDClassifier(student="mlp", max_epochs=1, random_state=0).fit(X, y)
    assert clf.get_params()["selection"] == "auto" and clf.selector_.mode == "confidence"
    clf.save(tmp_path / "m")
    assert LLKDClassifier.load(tmp_path / "m").selector_.mode == "confidence"


# ------------------------------------------------------------ mixed precision
def _weights(trainer):
    return [p.detach().clone() for p in trainer.model.parameters()]


def test_mixed_precision_auto_is_full_precision_on_the_cpu():
    from llkd._trainer import resolve_precision

    assert resolve_precision("auto", "cpu") == (None, False)
    X, y = _task()
    a, b = _trainer(X, y, mixed_precision="auto"), _trainer(X, y, mixed_precision="off")
    a.fit_loop(np.arange(len(y)))
    b.fit_loop(np.arange(len(y)))
    assert a.amp_dtype is None and a.scaler is None
    for wa, wb in zip(_weights(a), _weights(b)):
        assert torch.equal(wa, wb)


class _DtypeProbe(Callback):
    """Records the dtype of the model's output in the forward passes of training."""

    def on_train_begin(self, trainer, **kw):
        self.dtypes = set()
        trainer.model.register_forward_hook(lambda mod, inp, out: self.dtypes.add(out.dtype))


@pytest.mark.parametrize("precision, dtype, scaled", [("bf16", torch.bfloat16, False), ("fp16", torch.float16, True)])
def test_forced_mixed_precision_runs_the_forward_in_that_dtype_and_still_learns(precision, dtype, scaled):
    X, y = _task(400)
    probe = _DtypeProbe()
    trainer = _trainer(X, y, callbacks=[probe], mixed_precision=precision, max_epochs=8)
    try:
        trainer.fit_loop(np.arange(len(y)))
    except RuntimeError as exc:  # an old CPU build without this autocast dtype
        pytest.skip(f"torch CPU autocast {precision}: {exc}")
    assert probe.dtypes == {dtype}
    assert (trainer.scaler is not None) == scaled
    assert all(torch.isfinite(w).all() and w.dtype == torch.float32 for w in _weights(trainer))
    assert trainer.accuracy(np.arange(len(y))) > 0.9


def test_mixed_precision_is_validated_in_fit():
    X, y = _task()
    with pytest.raises(ValueError, match="mixed_precision"):
        LLKDClassifier(mixed_precision="fp8").fit(X, y)


def test_adamw_is_fused_where_torch_has_the_kernel_and_plain_where_it_does_not(monkeypatch):
    from types import SimpleNamespace

    from llkd import _trainer

    cfg = SimpleNamespace(learning_rate=1e-3, weight_decay=0.01)
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
    assert _trainer._adamw(params, cfg).defaults["fused"] is True  # torch >= 2.4 on the CPU
    real = torch.optim.AdamW

    def no_fused(params, **kw):
        if kw.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real(params, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", no_fused)
    opt = _trainer._adamw(params, cfg)
    assert not opt.defaults.get("fused") and opt.defaults["lr"] == 1e-3 and opt.defaults["weight_decay"] == 0.01


def test_soft_targets_are_the_temperature_scaled_kl_to_the_teacher_distribution():
    import torch.nn.functional as F

    from llkd._trainer import loss_per_sample

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=g, dtype=torch.float64)
    proba = torch.softmax(torch.randn(6, 3, generator=g, dtype=torch.float64), 1)
    y = proba.argmax(1)
    T = 2.0
    want = T * T * (proba * (proba.log() - F.log_softmax(logits / T, 1))).sum(1)
    torch.testing.assert_close(loss_per_sample(logits, y, proba, True, T), want)
    # zero where the tempered student reproduces the teacher, and positive elsewhere
    torch.testing.assert_close(
        loss_per_sample(T * proba.log(), y, proba, True, T), torch.zeros(6, dtype=torch.float64), atol=1e-12, rtol=0
    )
    assert (want > 0).all()
    # hard labels: cross-entropy, also when soft is asked but the teacher has no distribution
    ce = F.cross_entropy(logits, y, reduction="none")
    torch.testing.assert_close(loss_per_sample(logits, y, proba, False, T), ce)
    torch.testing.assert_close(loss_per_sample(logits, y, None, True, T), ce)
