"""Deployable students: export(format="hf") loads in a transformers pipeline, "onnx" in onnxruntime."""

import json

import numpy as np
import pytest
from test_estimator_text import keyword_teacher, make_texts

from llkd import LLKDClassifier

LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def texts():
    return make_texts(200, 2)[0]


@pytest.fixture(scope="module")
def finetuned(tiny_encoder_dir, texts):
    return LLKDClassifier(
        keyword_teacher,
        labels=LABELS,
        student="finetune",
        encoder=tiny_encoder_dir,
        max_epochs=2,
        learning_rate=3e-3,
        max_length=12,  # shorter than some texts: the export must truncate where the student did
        random_state=0,
        calibration="none",
    ).fit(texts)


@pytest.fixture(scope="module")
def frozen_mlp(tiny_encoder_dir, texts):
    # sentence-transformers wraps the plain tiny BERT as transformer + mean pooling
    return LLKDClassifier(
        keyword_teacher, labels=LABELS, student="mlp", encoder=tiny_encoder_dir, max_epochs=3, random_state=0
    ).fit(texts)


def _pipeline_proba(path, texts):
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(path), trust_remote_code=True, top_k=None, device="cpu")
    out = pipe(texts, truncation=True)
    return np.array([[{d["label"]: d["score"] for d in row}[c] for c in LABELS] for row in out])


def test_hf_export_refuses_a_load_without_trust_remote_code_instead_of_answering_with_random_weights(
    finetuned, tmp_path
):
    from transformers import pipeline

    path = finetuned.export(tmp_path / "hf")
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline("text-classification", model=str(path), device="cpu")
    assert json.loads((path / "config.json").read_text())["model_type"] == "llkd_student"


@pytest.mark.parametrize("student", ["finetuned", "frozen_mlp"])
def test_hf_export_cuts_long_texts_where_the_student_did_without_truncation_true(student, tmp_path, request):
    from transformers import pipeline

    clf = request.getfixturevalue(student)
    long = ["bad " + "the " * 300 + "good", "good movie", "the film " * 7 + "was good"]
    pipe = pipeline("text-classification", model=str(clf.export(tmp_path / "hf")), trust_remote_code=True, top_k=None)
    got = np.array([[{d["label"]: d["score"] for d in row}[c] for c in LABELS] for row in pipe(long)])
    np.testing.assert_allclose(got, clf.predict_proba(long), atol=1e-5)


@pytest.mark.parametrize("student", ["finetuned", "frozen_mlp"])
def test_hf_export_gives_the_students_predictions_in_a_transformers_pipeline(student, texts, tmp_path, request):
    clf = request.getfixturevalue(student)
    path = clf.export(tmp_path / "hf", metrics={"accuracy": 0.5})
    got = _pipeline_proba(path, texts)
    np.testing.assert_allclose(got, clf.predict_proba(texts), atol=1e-5)
    assert (got.argmax(1) == (clf.predict(texts) == "positive")).all()
    config = json.loads((path / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}


@pytest.mark.parametrize("student", ["finetuned", "frozen_mlp"])
def test_onnx_export_matches_torch_and_int8_stays_close(student, texts, tmp_path, request):
    pytest.importorskip("onnxruntime")
    from llkd.deploy import OnnxStudent

    clf = request.getfixturevalue(student)
    path = clf.export(tmp_path / "onnx", format="onnx", quantize=True)
    want = clf.predict_proba(texts)
    np.testing.assert_allclose(OnnxStudent(path, n_threads=1).predict_proba(texts), want, atol=1e-4)
    np.testing.assert_allclose(OnnxStudent(path, batch_size=1).predict_proba(texts[:20]), want[:20], atol=1e-4)
    int8 = OnnxStudent(path, quantized=True)
    assert np.mean(int8.predict(texts) == clf.predict(texts)) > 0.9
    assert list(int8.classes_) == LABELS
    # the int8 file is a quantised graph, not a copy of the float one
    import onnx

    ops = {node.op_type for node in onnx.load(str(path / "model.int8.onnx")).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops, sorted(ops)
    assert not {"DynamicQuantizeLinear", "MatMulInteger"} & {
        node.op_type for node in onnx.load(str(path / "model.onnx")).graph.node
    }


def test_onnx_export_of_a_feature_model(tmp_path):
    pytest.importorskip("onnxruntime")
    from llkd.deploy import OnnxStudent

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5)).astype(np.float32)
    y = np.where(X[:, 0] > 0, "up", "down")
    clf = LLKDClassifier(max_epochs=5, random_state=0).fit(X, y)
    onnx = OnnxStudent(clf.export(tmp_path / "f", format="onnx"))
    np.testing.assert_allclose(onnx.predict_proba(X), clf.predict_proba(X), atol=1e-4)
    with pytest.raises(ValueError, match=r"shape \(n, 5\)"):
        onnx.predict_proba(X[:, :4])
    bad = X[:3].astype(np.float64)
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values, the first X\[1, 2\]"):
        onnx.predict(bad)
    bad[1, 2] = 1e39  # finite, but infinite in float32
    with pytest.raises(ValueError, match=r"too large for float32.*X\[1, 2\]"):
        onnx.predict_proba(bad)
    with pytest.raises(ValueError, match=r"outputs are NaN or infinite for 1 row\(s\) of X, the first X\[0\]"):
        onnx.predict(np.full((1, 5), 3e38))
    with pytest.raises(TypeError, match="array of numbers"):
        onnx.predict(np.array([["a"] * 5]))
    with pytest.raises(ValueError, match="format='hf' needs a text model"):
        clf.export(tmp_path / "h", format="hf")


def test_the_model_card_records_the_teacher_the_data_and_the_metrics(finetuned, tmp_path):
    card = (finetuned.export(tmp_path / "hf", metrics={"held-out accuracy": 0.8125}) / "README.md").read_text()
    assert "pipeline_tag: text-classification" in card
    assert "| teacher | CallableTeacher |" in card
    assert "| inputs | 200 |" in card
    assert "| selection rule | all |" in card  # the fine-tuned student's auto rule
    assert "| held-out accuracy | 0.8125 |" in card
    assert "## Intended use" in card and "trust_remote_code=True" in card
    saved = (finetuned.save(tmp_path / "saved") / "README.md").read_text()
    assert "None recorded" in saved and "LLKDClassifier.load" in saved
    loaded = LLKDClassifier.load(tmp_path / "saved")
    assert loaded.training_summary_ == finetuned.training_summary_


def test_export_rejects_bad_arguments_and_unfitted_models(finetuned, tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        LLKDClassifier().export(tmp_path / "x")
    with pytest.raises(ValueError, match="format must be one of"):
        finetuned.export(tmp_path / "x", format="torchscript")
    with pytest.raises(ValueError, match="quantize=True is for format='onnx'"):
        finetuned.export(tmp_path / "x", quantize=True)
    with pytest.raises(TypeError, match="metrics must be a dict"):
        finetuned.export(tmp_path / "x", metrics={"accuracy": [0.1]})
    assert not (tmp_path / "x").exists()


def test_export_refuses_a_custom_encoder_object_it_cannot_describe(texts, tmp_path):
    def encode(batch):
        return np.array([[len(t), t.count("good")] for t in batch], dtype=np.float32)

    clf = LLKDClassifier(keyword_teacher, labels=LABELS, encoder=encode, max_epochs=2, random_state=0).fit(texts)
    with pytest.raises(ValueError, match="frozen sentence encoder made of a transformer"):
        clf.export(tmp_path / "x")


def test_cli_exports_a_saved_model(finetuned, texts, tmp_path):
    pytest.importorskip("onnxruntime")
    from llkd import cli
    from llkd.deploy import OnnxStudent

    finetuned.save(tmp_path / "saved")
    (tmp_path / "m.json").write_text(json.dumps({"accuracy": 0.75}))
    argv = ["export", "--model", str(tmp_path / "saved"), "--out", str(tmp_path / "o"), "--format", "onnx"]
    assert cli.main(argv + ["--metrics", str(tmp_path / "m.json")]) == 0
    np.testing.assert_allclose(
        OnnxStudent(tmp_path / "o").predict_proba(texts), finetuned.predict_proba(texts), atol=1e-4
    )
    assert "| accuracy | 0.75 |" in (tmp_path / "o" / "README.md").read_text()
    assert cli.main(["export", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "p")]) == 2


def test_a_format1_fine_tuned_model_exports_with_the_same_predictions(tmp_path):
    from pathlib import Path

    data = Path(__file__).parent / "data" / "format1" / "finetune"
    want = json.loads((data / "expected.json").read_text())
    path = LLKDClassifier.load(data).export(tmp_path / "hf")
    np.testing.assert_allclose(_pipeline_proba(path, want["X"]), want["proba"], atol=1e-5)
    assert "training record | not kept" in (path / "README.md").read_text()


def test_the_model_card_of_a_feature_model_describes_rows_and_a_path_encoder_by_its_path(tiny_encoder_dir, tmp_path):
    from pathlib import Path

    X = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    clf = LLKDClassifier(max_epochs=1, random_state=0).fit(X, np.where(X[:, 0] > 0, "up", "down"))
    card = (clf.save(tmp_path / "f") / "README.md").read_text()
    assert "classifier of 4 numeric features" in card and "gold labels alone (no teacher)" in card
    assert "pipeline_tag: text-classification" not in card and "| encoder |" not in card
    assert "| input features | 4 |" in card and "clf.predict(X)" in card and "predict(texts)" not in card
    texts = [f"good film {i}" for i in range(20)] + [f"bad film {i}" for i in range(20)]
    text_clf = LLKDClassifier(
        lambda t: np.array([[0.2, 0.8] if "good" in x else [0.8, 0.2] for x in t]),
        labels=["negative", "positive"],
        student="mlp",
        encoder=Path(tiny_encoder_dir),
        max_epochs=1,
    ).fit(texts)
    assert text_clf.training_summary_["encoder"] == str(tiny_encoder_dir)
    card = (text_clf.save(tmp_path / "t") / "README.md").read_text()
    assert f"| encoder | {tiny_encoder_dir} |" in card and "on a teacher's pseudo-labels" in card


def _old_style_encoder(tiny_encoder_dir, tmp_path, preprocess_text, prompt=None):
    """The tiny encoder, with a tokenizer that keeps spaces as tokens, behind a sentence-transformers
    model that rewrites each text before tokenising it (as sentence-transformers < 6 strips and,
    with do_lower_case, lowercases)."""
    import shutil

    from sentence_transformers import SentenceTransformer

    path = tmp_path / "spacey"
    shutil.copytree(tiny_encoder_dir, path)
    tok = json.loads((path / "tokenizer.json").read_text())
    tok["pre_tokenizer"] = {"type": "Split", "pattern": {"String": " "}, "behavior": "Isolated", "invert": False}
    (path / "tokenizer.json").write_text(json.dumps(tok))

    # sentence-transformers 6 tokenises in preprocess (tokenize is its deprecated alias), 3-5 in tokenize
    step = "preprocess" if hasattr(SentenceTransformer, "preprocess") else "tokenize"

    def rewrite(self, inputs, *args, **kwargs):
        return getattr(SentenceTransformer, step)(self, [preprocess_text(t) for t in inputs], *args, **kwargs)

    Rewriting = type("Rewriting", (SentenceTransformer,), {step: rewrite})
    enc = Rewriting(str(path), device="cpu")
    if prompt:
        enc.prompts = {"query": prompt}
        enc.default_prompt_name = "query"
    return enc


@pytest.mark.parametrize("fmt", ["hf", "onnx"])
def test_export_tokenises_as_an_encoder_that_strips_and_lowercases_its_texts(fmt, tiny_encoder_dir, texts, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    enc = _old_style_encoder(tiny_encoder_dir, tmp_path, lambda t: t.strip().lower())
    ragged = [f"  {t.upper()} " if i % 2 else f"{t.title()}\n" for i, t in enumerate(texts[:40])]
    assert enc.encode(ragged[:4]) == pytest.approx(enc.encode([t.strip().lower() for t in ragged[:4]]))
    clf = LLKDClassifier(keyword_teacher, labels=LABELS, encoder=enc, max_epochs=3, random_state=0).fit(texts)
    path = clf.export(tmp_path / fmt, format=fmt)
    if fmt == "hf":
        got = _pipeline_proba(path, ragged)
    else:
        from llkd.deploy import OnnxStudent

        got = OnnxStudent(path).predict_proba(ragged)
    np.testing.assert_allclose(got, clf.predict_proba(ragged), atol=1e-4)
    assert enc[0].tokenizer.backend_tokenizer.normalizer is None  # the user's encoder is left as it was


def test_export_refuses_an_encoder_whose_tokenisation_it_cannot_reproduce(tiny_encoder_dir, texts, tmp_path):
    backwards = _old_style_encoder(tiny_encoder_dir, tmp_path / "a", lambda t: " ".join(reversed(t.split())))
    clf = LLKDClassifier(keyword_teacher, labels=LABELS, encoder=backwards, max_epochs=1, random_state=0).fit(texts)
    with pytest.raises(ValueError, match="cannot reproduce the sentence encoder's tokenisation"):
        clf.export(tmp_path / "x")
    prompted = _old_style_encoder(tiny_encoder_dir, tmp_path / "b", lambda t: t, prompt="query: ")
    clf = LLKDClassifier(keyword_teacher, labels=LABELS, encoder=prompted, max_epochs=1, random_state=0).fit(texts)
    with pytest.raises(ValueError, match="default prompt 'query: '"):
        clf.export(tmp_path / "x", format="onnx")
    assert not (tmp_path / "x").exists()
