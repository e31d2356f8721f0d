"""The llkd command line: predict with a saved model, argument errors."""

import json

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
