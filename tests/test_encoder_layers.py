"""encoder_layers: a fine-tuned student cut to its first K layers, saved, loaded and exported."""

import json

import numpy as np
import pytest
from conftest import make_tiny_encoder
from test_estimator_text import keyword_teacher, make_texts

from llkd import LLKDClassifier
from llkd.students import load_hf_encoder, truncate_encoder

LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def two_layer_dir(tmp_path_factory):
    from transformers import BertConfig, BertModel

    path = make_tiny_encoder(tmp_path_factory.mktemp("tiny-bert-2"))
    config = BertConfig.from_pretrained(path)
    config.num_hidden_layers = 2
    BertModel(config).save_pretrained(path)
    return path


class Counting:
    def __init__(self):
        self.asked = 0

    def __call__(self, texts):
        self.asked += len(texts)
        return keyword_teacher(texts)


def _clf(teacher, encoder, **kw):
    return LLKDClassifier(
        teacher,
        labels=LABELS,
        student="finetune",
        encoder=encoder,
        max_epochs=2,
        learning_rate=3e-3,
        max_length=12,
        random_state=0,
        calibration="none",
        **kw,
    )


def test_truncate_encoder_keeps_the_first_layers_and_records_the_depth(two_layer_dir):
    model, _ = load_hf_encoder(two_layer_dir)
    first = model.encoder.layer[0]
    truncate_encoder(model, 1)
    assert len(model.encoder.layer) == 1 and model.encoder.layer[0] is first
    assert model.config.num_hidden_layers == 1
    with pytest.raises(ValueError, match="has 1 layers"):
        truncate_encoder(model, 2)


def test_a_cut_student_trains_saves_loads_and_exports_at_its_depth(two_layer_dir, tmp_path):
    texts = make_texts(120, 3)[0]
    full = _clf(keyword_teacher, two_layer_dir).fit(texts)
    cut = _clf(keyword_teacher, two_layer_dir, encoder_layers=1).fit(texts)
    assert len(cut.student_.encoder.encoder.layer) == 1 and len(full.student_.encoder.encoder.layer) == 2
    n_params = [sum(p.numel() for p in c.student_.parameters()) for c in (cut, full)]
    assert n_params[0] < n_params[1]
    assert cut.training_summary_["encoder_layers"] == 1

    cut.save(tmp_path / "saved")
    loaded = LLKDClassifier.load(tmp_path / "saved")
    np.testing.assert_allclose(loaded.predict_proba(texts), cut.predict_proba(texts), atol=1e-6)
    assert "encoder layers kept | 1" in (tmp_path / "saved" / "README.md").read_text()

    pytest.importorskip("onnxruntime")
    from llkd.deploy import OnnxStudent

    path = cut.export(tmp_path / "onnx", format="onnx")
    np.testing.assert_allclose(OnnxStudent(path).predict_proba(texts), cut.predict_proba(texts), atol=1e-4)
    hf = cut.export(tmp_path / "hf")
    assert json.loads((hf / "config.json").read_text())["num_hidden_layers"] == 1


def test_bad_encoder_layers_and_a_missing_encoder_cost_no_teacher_answer(two_layer_dir, tiny_encoder_dir, tmp_path):
    texts = make_texts(60, 4)[0]
    teacher = Counting()
    with pytest.raises(ValueError, match="the encoder has 2 layers"):
        _clf(teacher, two_layer_dir, encoder_layers=3).fit(texts)
    assert teacher.asked == 0  # its config says how deep it is: refused before the teacher is asked
    for missing in (str(tmp_path / "no-such-encoder"), "./models/none"):
        with pytest.raises(ValueError, match="no such directory"):
            _clf(teacher, missing).fit(texts)
        with pytest.raises(ValueError, match="no such directory"):
            LLKDClassifier(teacher, labels=LABELS, student="mlp", encoder=missing).fit(texts)
    assert teacher.asked == 0
    _clf(teacher, two_layer_dir, encoder_layers=2).fit(texts)
    assert teacher.asked > 0
    # The frozen-encoder student is refused before the teacher is asked at all.
    fresh = Counting()
    with pytest.raises(ValueError, match="encoder_layers=1 cuts the fine-tuned student"):
        LLKDClassifier(fresh, labels=LABELS, student="mlp", encoder=tiny_encoder_dir, encoder_layers=1).fit(texts)
    assert fresh.asked == 0
