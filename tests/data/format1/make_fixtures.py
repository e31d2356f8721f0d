"""Write the format-1 fixtures of tests/test_persistence.py with the code of that time.

Run once, with the llkd of commit 9f4ba11 (format_version 1) importable and the
tests/ of that commit beside this script's parent, e.g. ``git archive 9f4ba11 src tests``
unpacked into DIR, then ``PYTHONPATH=DIR/src python make_fixtures.py`` from a venv with no
editable llkd (the numpy selection backend then runs, which does not change the format).
Each fixture directory holds what ``LLKDClassifier.save`` wrote, plus ``expected.json``
with the inputs and the probabilities the fitted model gave for them.
"""

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/, for conftest and test_estimator_text

from conftest import make_tiny_encoder  # noqa: E402
from test_estimator_text import keyword_teacher, make_texts  # noqa: E402

from llkd import LLKDClassifier  # noqa: E402


def write(name, clf, inputs):
    out = HERE / name
    clf.save(out)
    proba = clf.predict_proba(inputs)
    as_json = inputs if isinstance(inputs, list) else np.asarray(inputs).tolist()
    (out / "expected.json").write_text(json.dumps({"X": as_json, "proba": proba.tolist()}))


def main():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 4))
    y = np.where(X[:, 0] + 0.5 * X[:, 1] > 0, "pos", "neg")
    clf = LLKDClassifier(max_epochs=3, hidden_size=8, random_state=0).fit(X, y)
    write("features", clf, rng.normal(size=(10, 4)))

    texts, _ = make_texts(80, 0)
    enc_dir = make_tiny_encoder(HERE / "_tiny_encoder")
    clf = LLKDClassifier(
        keyword_teacher,
        labels=["negative", "positive"],
        student="finetune",
        encoder=enc_dir,
        max_epochs=1,
        learning_rate=3e-3,
        random_state=0,
    ).fit(texts)
    write("finetune", clf, make_texts(10, 1)[0])

    import static_model

    clf = LLKDClassifier(
        keyword_teacher,
        labels=["negative", "positive"],
        student="mlp",
        encoder=static_model.get_embeddings,
        hidden_size=8,
        max_epochs=2,
        random_state=0,
    ).fit(texts)
    write("text_mlp_custom_encoder", clf, make_texts(10, 1)[0])


if __name__ == "__main__":
    main()
