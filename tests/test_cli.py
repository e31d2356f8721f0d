"""The llkd command line: predict with a saved model, argument errors."""

import json
import sys

import numpy as np
import pandas as pd
import pytest

from llkd import LLKDClassifier
from llkd.cli import main
from test_estimator_text import keyword_teacher, make_texts


@pytest.fixture(scope="module")
def saved_model(tiny_encoder_dir, tmp_path_factory):
    texts, _ = make_texts(200, 0)
    clf = LLKDClassifier(
        keyword_teacher, labels=["negative", "positive"], student="finetune", encoder=tiny_encoder_dir,
        max_epochs=3, learning_rate=3e-3, random_state=0,
    ).fit(texts)
    path = tmp_path_factory.mktemp("model") / "student"
    clf.save(path)
    return clf, str(path)


def test_predict_writes_labels_and_confidences(saved_model, tmp_path, capsys):
    clf, path = saved_model
    texts, _ = make_texts(30, 1)
    data = tmp_path / "in.csv"
    pd.DataFrame({"review": texts}).to_csv(data, index=False)
    out = tmp_path / "out.jsonl"
    assert main(["predict", "--model", path, "--data", str(data), "--text-column", "review", "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == texts
    np.testing.assert_array_equal([r["label"] for r in rows], clf.predict(texts))
    np.testing.assert_allclose([r["confidence"] for r in rows], clf.predict_proba(texts).max(1), atol=1e-6)


def test_predict_errors_are_clear(saved_model, tmp_path, capsys):
    _, path = saved_model
    data = tmp_path / "in.csv"
    pd.DataFrame({"review": ["a good movie"]}).to_csv(data, index=False)
    assert main(["predict", "--model", path, "--data", str(data), "--text-column", "text"]) == 2
    assert "'text' is not a column" in capsys.readouterr().err
    assert main(["predict", "--model", str(tmp_path / "nowhere"), "--data", str(data), "--text-column", "review"]) == 2
    assert "config.json" in capsys.readouterr().err
    bad = tmp_path / "in.xlsx"
    bad.write_text("x")
    assert main(["predict", "--model", path, "--data", str(bad)]) == 2
    assert ".csv, .jsonl or .parquet" in capsys.readouterr().err


def test_distill_rejects_bad_arguments(tmp_path, capsys):
    data = tmp_path / "in.jsonl"
    pd.DataFrame({"text": ["a", "b"]}).to_json(data, orient="records", lines=True)
    assert main(["distill", "--data", str(data), "--labels", "onlyone", "--out", str(tmp_path / "m")]) == 2
    assert "at least two" in capsys.readouterr().err
    assert main(["distill", "--data", str(data), "--labels", "a,b", "--teacher", "magic", "--out", str(tmp_path / "m")]) == 2
    assert "--teacher 'magic'" in capsys.readouterr().err
    # an unknown selection rule is refused by the parser, before any teacher is loaded or asked
    with pytest.raises(SystemExit) as info:
        main(["distill", "--data", str(data), "--labels", "a,b", "--selection", "best", "--out", str(tmp_path / "m")])
    assert info.value.code == 2 and "invalid choice: 'best'" in capsys.readouterr().err


def test_distill_then_predict_end_to_end(tiny_encoder_dir, tmp_path, capsys):
    from _openai_server import FakeOpenAIServer

    # Sentiment words the fake server knows (tests/_openai_server.py) and the tiny tokenizer has.
    rng = np.random.default_rng(7)
    filler = ["the", "movie", "plot", "actor", "scene", "was", "very", "quite", "and", "story"]
    texts = []
    for label in rng.integers(0, 2, 240):
        words = list(rng.choice(filler, 5)) + [rng.choice(["good", "great"] if label else ["bad", "awful", "dull"])]
        rng.shuffle(words)
        texts.append(" ".join(words))
    data = tmp_path / "reviews.csv"
    pd.DataFrame({"review": texts}).to_csv(data, index=False)
    model_dir, cache = tmp_path / "student", tmp_path / "answers.sqlite"
    with FakeOpenAIServer() as srv:
        argv = ["distill", "--data", str(data), "--text-column", "review", "--labels", "negative,positive",
                "--teacher", f"openai:fake-model@{srv.url}", "--student", "finetune",
                "--encoder", tiny_encoder_dir, "--epochs", "4", "--lr", "3e-3", "--cache", str(cache),
                "--out", str(model_dir)]
        assert main(argv) == 0
        first = capsys.readouterr().out
        n_requests = len(srv.requests)
        assert n_requests > 0
        assert main(argv) == 0  # the same texts again: every answer comes from the cache
        second = capsys.readouterr().out
        assert len(srv.requests) == n_requests
    n_distinct = len(set(texts))
    assert f"240 texts, {n_distinct} new teacher answers" in first
    assert "240 texts, 0 new teacher answers" in second
    assert "model saved to" in second and (model_dir / "config.json").is_file()

    preds = tmp_path / "preds.csv"
    assert main(["predict", "--model", str(model_dir), "--data", str(data), "--text-column", "review",
                 "--output", str(preds)]) == 0
    out = pd.read_csv(preds)
    assert out["text"].tolist() == texts
    from _openai_server import p_positive

    teacher_says = np.where([p_positive(t) > 0.5 for t in texts], "positive", "negative")
    assert (out["label"].to_numpy() == teacher_says).mean() > 0.85


def test_a_closed_output_pipe_ends_quietly(monkeypatch, capsys):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["show-config"]) == 1
    assert capsys.readouterr().err == ""
