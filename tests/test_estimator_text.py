"""LLKDClassifier on texts: frozen-encoder MLP and end-to-end fine-tuning of a tiny encoder."""

import pickle

import numpy as np
import pytest
import torch

from llkd import LLKDClassifier

POS = ["good", "great", "fine", "lovely", "superb"]
NEG = ["bad", "awful", "poor", "dull", "boring"]
FILLER = ["the", "movie", "plot", "actor", "scene", "was", "very", "quite", "and", "story"]


def make_texts(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    texts = []
    for label in y:
        words = list(rng.choice(FILLER, 6)) + [rng.choice(POS if label else NEG)]
        rng.shuffle(words)
        texts.append(" ".join(words))
    return texts, y


def keyword_teacher(texts):
    """Probability of 'positive' from the keywords, softened: a noisy-but-useful teacher."""
    out = []
    for t in texts:
        words = t.split()
        pos = sum(w in POS for w in words)
        neg = sum(w in NEG for w in words)
        p = 0.85 if pos > neg else 0.15 if neg > pos else 0.5
        out.append([1 - p, p])
    return np.array(out)


def static_encoder():
    static_model = pytest.importorskip("static_model")
    return static_model.get_embeddings


def test_frozen_encoder_mlp_on_texts():
    texts, y = make_texts(400, 0)
    test_texts, y_test = make_texts(200, 1)
    clf = LLKDClassifier(
        keyword_teacher,
        labels=["negative", "positive"],
        student="mlp",
        encoder=static_encoder(),
        max_epochs=30,
        random_state=0,
    ).fit(texts)
    assert list(clf.classes_) == ["negative", "positive"]
    assert not hasattr(clf, "n_features_in_")
    pred = clf.predict(test_texts)
    assert set(pred) <= {"negative", "positive"}
    assert clf.score(test_texts, np.array(["negative", "positive"])[y_test]) > 0.8
    proba = clf.predict_proba(test_texts)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(test_texts), proba)


def test_finetune_tiny_encoder_end_to_end(tiny_encoder_dir, tmp_path):
    texts, y = make_texts(300, 2)
    test_texts, y_test = make_texts(200, 3)
    clf = LLKDClassifier(
        keyword_teacher,
        labels=["negative", "positive"],
        student="finetune",
        encoder=tiny_encoder_dir,
        max_epochs=4,
        learning_rate=3e-3,
        batch_size=16,
        random_state=0,
        calibration="none",
    ).fit(texts)
    assert clf._kind_ == "finetune"
    acc = clf.score(test_texts, np.array(["negative", "positive"])[y_test])
    assert acc > 0.8, acc
    proba = clf.predict_proba(test_texts)
    for restored in (pickle.loads(pickle.dumps(clf)), LLKDClassifier.load(clf.save(tmp_path / "ft"))):
        np.testing.assert_allclose(restored.predict_proba(test_texts), proba, atol=1e-6)
    assert (tmp_path / "ft" / "tokenizer").is_dir()


def test_finetune_eval_pass_trims_selected_batches(tiny_encoder_dir):
    texts, _ = make_texts(200, 4)
    clf = LLKDClassifier(
        keyword_teacher,
        labels=["negative", "positive"],
        student="finetune",
        encoder=tiny_encoder_dir,
        max_epochs=2,
        selection="llkd",  # the fine-tuned default, "all", selects every row: nothing to trim
        uncertainty_pass="eval",
        learning_rate=3e-3,
        random_state=0,
    ).fit(texts)
    rec = clf.history_[-1]
    # only the selected rows go through the training pass, and the rule did leave rows out
    assert rec["n_backprop"] == rec["n_selected"] < rec["n_backprop_all"]


def test_same_seed_same_finetuned_predictions(tiny_encoder_dir):
    texts, _ = make_texts(120, 5)
    kw = dict(
        labels=["negative", "positive"], student="finetune", encoder=tiny_encoder_dir, max_epochs=1, random_state=7
    )
    a = LLKDClassifier(keyword_teacher, **kw).fit(texts).predict_proba(texts[:20])
    b = LLKDClassifier(keyword_teacher, **kw).fit(texts).predict_proba(texts[:20])
    np.testing.assert_array_equal(a, b)


def test_finetuned_predictions_follow_the_input_order(tiny_encoder_dir):
    # Prediction groups texts by length internally; the rows must come back in input order.
    texts, _ = make_texts(120, 6)
    clf = LLKDClassifier(
        keyword_teacher,
        labels=["negative", "positive"],
        student="finetune",
        encoder=tiny_encoder_dir,
        max_epochs=1,
        random_state=0,
    ).fit(texts)
    test = texts[:70] + ["good", "the movie was very very very bad and the plot was dull and boring"]
    proba = clf.predict_proba(test)
    perm = np.random.RandomState(0).permutation(len(test))
    np.testing.assert_allclose(clf.predict_proba([test[i] for i in perm]), proba[perm], atol=1e-6)
    singles = np.vstack([clf.predict_proba([t]) for t in test[-5:]])
    np.testing.assert_allclose(singles, proba[-5:], atol=1e-5)


def test_text_model_rejects_numeric_input_and_mixed_lists():
    texts, _ = make_texts(60, 6)
    clf = LLKDClassifier(keyword_teacher, labels=["n", "p"], student="mlp", encoder=static_encoder(), max_epochs=1).fit(
        texts
    )
    with pytest.raises(TypeError, match="texts"):
        clf.predict(np.zeros((2, 64)))
    with pytest.raises((TypeError, ValueError)):
        LLKDClassifier(keyword_teacher, labels=["n", "p"]).fit(["a text", 3])


def test_finetune_requires_a_path_encoder():
    texts, _ = make_texts(20, 7)
    with pytest.raises(ValueError, match="finetune"):
        LLKDClassifier(keyword_teacher, labels=["n", "p"], student="finetune", encoder=static_encoder()).fit(texts)


@pytest.mark.gpu
def test_finetune_on_cuda_selects_on_the_device(tiny_encoder_dir):
    import torch

    # The setting of test_finetune_tiny_encoder_end_to_end (on an H200, 2026-11-28: test
    # accuracy 1.0, selected fractions per epoch 0.83/0.66/0.28/0.07; 200 texts and 3
    # epochs underfit at 0.67).
    texts, y = make_texts(300, 2)
    clf = LLKDClassifier(
        keyword_teacher,
        labels=["negative", "positive"],
        student="finetune",
        encoder=tiny_encoder_dir,
        device="cuda",
        max_epochs=4,
        learning_rate=3e-3,
        batch_size=16,
        random_state=0,
    ).fit(texts)
    assert next(clf.student_.parameters()).is_cuda
    assert clf.selector_.resolve_backend(torch.zeros(1, 2, device="cuda")) == "cuda"
    assert all(h["n_selected"] <= h["n_backprop_all"] for h in clf.history_)
    assert clf.history_[0]["n_selected"] > 0
    assert clf.score(texts, np.array(["negative", "positive"])[y]) > 0.8


def test_finetune_in_bf16_learns_and_predicts_in_bf16(tiny_encoder_dir):
    texts, y = make_texts(300, 2)
    test_texts, y_test = make_texts(200, 3)
    clf = LLKDClassifier(
        keyword_teacher,
        labels=["negative", "positive"],
        student="finetune",
        encoder=tiny_encoder_dir,
        max_epochs=4,
        learning_rate=3e-3,
        batch_size=16,
        random_state=0,
        calibration="none",
        mixed_precision="bf16",
    ).fit(texts)
    seen = set()
    clf.student_.head.register_forward_hook(lambda mod, inp, out: seen.add(out.dtype))
    assert clf.score(test_texts, np.array(["negative", "positive"])[y_test]) > 0.8
    assert seen == {torch.bfloat16}
    low = clf.predict_proba(test_texts)
    full = clf.set_params(mixed_precision="off").predict_proba(test_texts)
    assert seen == {torch.bfloat16, torch.float32}
    np.testing.assert_allclose(low, full, atol=0.05)


def test_a_text_longer_than_the_encoders_positions_is_truncated_to_them(tiny_encoder_dir):
    import json as _json
    from pathlib import Path

    positions = _json.loads((Path(tiny_encoder_dir) / "config.json").read_text())["max_position_embeddings"]
    texts, _ = make_texts(60, 7)
    long_text = " ".join(["good"] * (3 * positions))
    clf = LLKDClassifier(
        keyword_teacher,
        labels=["negative", "positive"],
        student="finetune",
        encoder=tiny_encoder_dir,
        max_length=4 * positions,  # beyond what the encoder can take
        max_epochs=1,
        random_state=0,
    ).fit(texts + [long_text])
    assert clf._truncation() == positions
    assert clf.predict_proba([long_text]).shape == (1, 2)
