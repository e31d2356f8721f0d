"""import_answers: answers computed elsewhere land in the cache under the teacher's identity,
so that a fit asks the teacher nothing."""

import csv
import json

import numpy as np
import pytest

from llkd import LLKDClassifier
from llkd.teachers import OpenAITeacher, import_answers, read_answers

LABELS = ["negative", "positive"]
TEXTS = ["good fun movie", "bad and dull", "great great great", "awful", "a film", "dull plot"]
P_POS = np.array([0.9, 0.2, 0.95, 0.05, 0.55, 0.3])


def unreachable_teacher():
    # Port 9 (discard) on loopback: any request the teacher made would fail the test.
    return OpenAITeacher("served-model", LABELS, base_url="http://127.0.0.1:9/v1", api_key_env=None, max_retries=0)


def write(tmp_path, fmt):
    if fmt == "jsonl":
        path = tmp_path / "answers.jsonl"
        path.write_text("".join(json.dumps({"text": t, "proba": [1 - p, p]}) + "\n" for t, p in zip(TEXTS, P_POS)))
        return path, {"proba": "proba"}
    if fmt == "parquet":  # what a Ray Data / vLLM batch job writes (README)
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        path = tmp_path / "answers.parquet"
        pq.write_table(pa.table({"text": TEXTS, "proba": [[1 - p, p] for p in P_POS]}), path)
        return path, {"proba": "proba"}
    path = tmp_path / "answers.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label", "conf"])
        for t, p in zip(TEXTS, P_POS):
            w.writerow([t, "positive" if p >= 0.5 else "negative", max(p, 1 - p)])
    return path, {"label": "label", "confidence": "conf"}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_imported_answers_serve_a_fit_without_asking_the_teacher(tmp_path, fmt):
    path, columns = write(tmp_path, fmt)
    cache = tmp_path / "cache.sqlite"
    assert import_answers(path, unreachable_teacher(), cache, **columns) == len(TEXTS)
    clf = LLKDClassifier(teacher=unreachable_teacher(), teacher_cache=cache, student="mlp", encoder=_Encoder())
    clf.set_params(max_epochs=2, random_state=0).fit(TEXTS)  # raises if the teacher were asked
    expected = np.where(P_POS >= 0.5, 1, 0)
    np.testing.assert_array_equal(clf.teacher_labels_, expected)
    np.testing.assert_allclose(clf.teacher_confidence_, np.maximum(P_POS, 1 - P_POS))


class _Encoder:
    def encode(self, texts, **kw):
        return np.array([[len(t), t.count("g"), t.count("d")] for t in texts], dtype=np.float32)


def test_read_answers_checks_columns_classes_and_duplicates():
    rows = [{"text": "a", "label": "positive", "confidence": 0.9}, {"text": "b", "label": "neutral", "confidence": 1}]
    with pytest.raises(ValueError, match="neutral"):
        read_answers(rows, LABELS, label="label", confidence="confidence")
    with pytest.raises(ValueError, match="no column 'proba'"):
        read_answers(rows, LABELS, proba="proba")
    with pytest.raises(ValueError, match="give the answer columns"):
        read_answers(rows, LABELS)
    dup = [{"text": "a", "p": [0.1, 0.9]}, {"text": "a", "p": [0.8, 0.2]}]
    with pytest.raises(ValueError, match="appears twice"):
        read_answers(dup, LABELS, proba="p")
    texts, out = read_answers([{"text": "a", "p": [0.1, 0.9]}, {"text": "a", "p": [0.1, 0.9]}], LABELS, proba="p")
    assert texts == ["a"] and out.labels.tolist() == [1]
    with pytest.raises(ValueError, match="no identity"):
        import_answers(
            rows[:1],
            type("T", (), {"classes": LABELS, "identity": None})(),
            True,
            label="label",
            confidence="confidence",
        )
