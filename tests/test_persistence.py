"""Saved models: old-format directories still load, the format is one declared list, and a
saved text model carries its encoder. (Tampered and broken directories: test_bad_input.py.)"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from llkd import LLKDClassifier
from llkd import _persistence as persistence
from llkd.cli import main

FORMAT1 = Path(__file__).parent / "data" / "format1"


def expected(name):
    d = json.loads((FORMAT1 / name / "expected.json").read_text())
    return d["X"], np.asarray(d["proba"])


@pytest.mark.parametrize("name", ["features", "finetune"])
def test_format1_directories_load_and_predict_as_when_saved(name, tmp_path):
    # Written by the code of commit 9f4ba11 (tests/data/format1/make_fixtures.py); the
    # fine-tuned one names its encoder by an absolute path that no longer exists, which
    # prediction never needs and load never follows.
    X, proba = expected(name)
    clf = LLKDClassifier.load(FORMAT1 / name)
    if name == "features":
        X = np.asarray(X)
    np.testing.assert_allclose(clf.predict_proba(X), proba, atol=1e-6)
    assert clf.history_ and clf.n_iter_ == len(clf.history_)
    assert clf.selector_.state.n_updates > 0


def test_format1_text_model_with_a_custom_encoder_needs_it_again(tmp_path, capsys):
    static_model = pytest.importorskip("static_model")
    X, proba = expected("text_mlp_custom_encoder")
    with pytest.raises(ValueError, match="custom encoder object.*encoder="):
        LLKDClassifier.load(FORMAT1 / "text_mlp_custom_encoder")
    clf = LLKDClassifier.load(FORMAT1 / "text_mlp_custom_encoder", encoder=static_model.get_embeddings)
    np.testing.assert_allclose(clf.predict_proba(X), proba, atol=1e-6)


def test_llkd_predict_reads_a_format1_directory(tmp_path):
    X, proba = expected("finetune")
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in X))
    out = tmp_path / "out.jsonl"
    assert main(["predict", "--model", str(FORMAT1 / "finetune"), "--data", str(data), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    np.testing.assert_allclose([r["confidence"] for r in rows], proba.max(1), atol=1e-6)


def test_fitted_attributes_come_back_through_the_declared_list(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    clf = LLKDClassifier(max_epochs=2, hidden_size=8, random_state=0).fit(X, X[:, 0] > 0)
    loaded = LLKDClassifier.load(clf.save(tmp_path / "m"))
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["format_version"] == persistence.FORMAT_VERSION == 4
    assert set(config) == {"format_version", "params", "encoder_ref"} | {f.key for f in persistence.FITTED}
    for f in persistence.FITTED:
        a, b = getattr(clf, f.attr, None), getattr(loaded, f.attr, None)
        if f.attr == "selector_":
            np.testing.assert_array_equal(a.state.class_levels, b.state.class_levels)
        elif isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b, f.attr
    assert loaded.classes_.dtype == clf.classes_.dtype == bool
    # every trailing-underscore attribute a prediction needs is in the list or rebuilt
    needed = {"classes_", "n_features_in_", "feature_names_in_", "student_", "selector_", "history_", "n_iter_"}
    assert needed <= {f.attr for f in persistence.FITTED} | {"student_"}
    # a format-3 directory (before feature_names_in) still loads
    del config["feature_names_in"]
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "format_version": 3}))
    old = LLKDClassifier.load(tmp_path / "m")
    np.testing.assert_array_equal(old.predict_proba(X), loaded.predict_proba(X))


def test_a_text_model_saves_its_path_encoder_and_loads_without_the_original(tiny_encoder_dir, tmp_path, monkeypatch):
    from test_estimator_text import keyword_teacher, make_texts

    encoder = tmp_path / "my-encoder"
    shutil.copytree(tiny_encoder_dir, encoder)
    texts, _ = make_texts(60, 0)
    clf = LLKDClassifier(
        keyword_teacher,
        labels=["negative", "positive"],
        student="mlp",
        encoder=str(encoder),
        max_epochs=2,
        hidden_size=8,
        random_state=0,
    ).fit(texts)
    proba = clf.predict_proba(texts[:10])
    clf.save(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["encoder_ref"] == {"directory": "encoder"}
    assert (tmp_path / "saved" / "encoder").is_dir()
    shutil.rmtree(encoder)  # the original is gone, and the working directory is elsewhere
    moved = shutil.move(tmp_path / "saved", tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path)
    loaded = LLKDClassifier.load(moved)
    assert Path(loaded.encoder).resolve() == (Path(moved) / "encoder").resolve()
    np.testing.assert_allclose(loaded.predict_proba(texts[:10]), proba, atol=1e-5)
    loaded.save(moved)  # back into the folder its encoder is read from
    np.testing.assert_allclose(LLKDClassifier.load(moved).predict_proba(texts[:10]), proba, atol=1e-5)
    assert sorted(p.name for p in Path(moved).iterdir() if "encoder" in p.name) == ["encoder"]


def test_a_packaged_encoder_is_saved_by_name(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    clf = LLKDClassifier(max_epochs=1, hidden_size=4, random_state=0).fit(X, X[:, 0] > 0)
    # feature input needs no encoder: none is recorded, and the parameter comes back as saved
    clf.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["encoder_ref"] is None
    assert LLKDClassifier.load(tmp_path / "m").encoder == "auto"
    assert persistence._write_encoder(tmp_path, "auto") == {"packaged": "auto"}
    assert not os.path.exists(tmp_path / "encoder")


def test_load_follows_no_link_out_of_the_model_directory(tiny_encoder_dir, tmp_path):
    from test_estimator_text import keyword_teacher, make_texts

    texts, _ = make_texts(40, 0)
    kw = dict(labels=["negative", "positive"], encoder=tiny_encoder_dir, max_epochs=1, random_state=0)
    saved = {
        "mlp": LLKDClassifier(keyword_teacher, student="mlp", **kw).fit(texts).save(tmp_path / "mlp"),
        "finetune": LLKDClassifier(keyword_teacher, student="finetune", **kw).fit(texts).save(tmp_path / "ft"),
    }
    outside = tmp_path / "outside"
    outside.mkdir()
    cases = [
        ("finetune", "model.safetensors"),
        ("finetune", "config.json"),
        ("finetune", "tokenizer"),
        ("finetune", "tokenizer/tokenizer.json"),
        ("mlp", "encoder/config.json"),
    ]
    for i, (kind, member) in enumerate(cases):
        model = Path(shutil.copytree(saved[kind], tmp_path / f"case{i}"))
        LLKDClassifier.load(model)  # the copy loads
        target = outside / f"{i}-{Path(member).name}"
        shutil.move(model / member, target)  # the same content, reached through a link
        os.symlink(target, model / member)
        with pytest.raises(ValueError, match="outside the model directory") as info:
            LLKDClassifier.load(model)
        assert Path(member).name in str(info.value), (member, info.value)
    # a link that stays inside the directory is fine
    model = Path(shutil.copytree(saved["finetune"], tmp_path / "inside"))
    shutil.move(model / "model.safetensors", model / "weights.bin")
    os.symlink("weights.bin", model / "model.safetensors")
    np.testing.assert_allclose(
        LLKDClassifier.load(model).predict_proba(texts[:5]),
        LLKDClassifier.load(saved["finetune"]).predict_proba(texts[:5]),
    )


def test_a_thread_count_beyond_any_machine_is_refused_in_params_and_on_load(tmp_path):
    X = np.random.default_rng(0).normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(int)
    with pytest.raises(ValueError, match=r"n_threads.*\[1, 1024\]"):
        LLKDClassifier(n_threads=100_000, max_epochs=1).fit(X, y)
    path = LLKDClassifier(max_epochs=1, random_state=0).fit(X, y).save(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    config["params"]["n_threads"] = 100_000  # torch's pool would take the interpreter down
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config.json: params: .*n_threads"):
        LLKDClassifier.load(path)


def test_a_model_fitted_on_a_data_frame_keeps_its_column_names_through_save_and_load(tmp_path):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 3)), columns=["age", "height", "weight"])
    y = (X["age"] > 0).astype(int)
    clf = LLKDClassifier(max_epochs=2, random_state=0).fit(X, y)
    loaded = LLKDClassifier.load(clf.save(tmp_path / "m"))
    assert list(loaded.feature_names_in_) == ["age", "height", "weight"]
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X))
    for model in (clf, loaded):  # columns in another order are refused, not silently misread
        with pytest.raises(ValueError, match="feature names"):
            model.predict(X[["weight", "height", "age"]])
    # an array-fitted model has no names, before and after
    plain = LLKDClassifier.load(LLKDClassifier(max_epochs=1).fit(X.to_numpy(), y).save(tmp_path / "p"))
    assert not hasattr(plain, "feature_names_in_")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["feature_names_in"] = ["age", "height"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="feature_names_in has 2 names but n_features_in is 3"):
        LLKDClassifier.load(tmp_path / "m")


def test_non_finite_float_classes_are_refused_on_load(tmp_path):
    X = np.random.default_rng(0).normal(size=(40, 3))
    y = np.where(X[:, 0] > 0, 1.0, 2.0)
    path = LLKDClassifier(max_epochs=1, random_state=0).fit(X, y).save(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    assert config["classes"] == {"dtype": "float", "values": [1.0, 2.0]}
    config["classes"]["values"] = [float("nan"), 2.0]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="classes.values must be finite"):
        LLKDClassifier.load(path)


@pytest.mark.parametrize(
    "classes",
    [
        np.array([-3, 4], dtype=np.int32),
        np.array([1, 2**63 + 5], dtype=np.uint64),
        np.array([7, 8]),
        np.array([-3.0, 4.0], dtype=np.float32),
        np.array([1.0, 2.0], dtype=np.float16),
    ],
)
def test_numeric_classes_come_back_in_their_own_type(classes, tmp_path):
    X = np.random.default_rng(0).normal(size=(40, 3))
    y = np.where(X[:, 0] > 0, classes[1], classes[0])
    clf = LLKDClassifier(max_epochs=1, random_state=0).fit(X, y)
    loaded = LLKDClassifier.load(clf.save(tmp_path / "m"))
    assert loaded.classes_.dtype == classes.dtype and loaded.classes_.tolist() == classes.tolist()
    assert loaded.predict(X).dtype == classes.dtype
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))


def test_the_loaded_selector_has_the_fitted_settings(tmp_path):
    X = np.random.default_rng(0).normal(size=(120, 5))
    kw = dict(max_epochs=2, random_state=0, selection="fixed", fixed_threshold=0.3, random_rate=0.4)
    fitted = LLKDClassifier(selection_backend="numpy", **kw).fit(X, (X[:, 0] > 0).astype(int)).selector_
    loaded = LLKDClassifier.load(
        LLKDClassifier(selection_backend="numpy", **kw).fit(X, (X[:, 0] > 0).astype(int)).save(tmp_path / "m")
    ).selector_
    for attr in ("mode", "fixed_threshold", "random_rate", "backend", "momentum", "weighting", "n_steps"):
        assert getattr(loaded, attr) == getattr(fitted, attr), attr
    assert loaded.n_steps > 0
    z, y = np.random.default_rng(1).normal(size=(50, 2)), np.arange(50) % 2
    c = np.linspace(0.0, 0.8, 50)
    np.testing.assert_array_equal(loaded.score(z, y, c).mask, fitted.score(z, y, c).mask)


def test_an_integer_class_beyond_its_type_is_refused_on_load(tmp_path):
    X = np.random.default_rng(0).normal(size=(40, 3))
    path = LLKDClassifier(max_epochs=1, random_state=0).fit(X, (X[:, 0] > 0).astype(int)).save(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    config["classes"]["values"] = [0, 10**30]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"classes.values\[1\] = 10{30} does not fit in int64"):
        LLKDClassifier.load(path)


@pytest.mark.parametrize(
    "values, message",
    [
        ([0.0, 1e300], r"classes.values\[1\] = 1e\+300 does not fit in float32"),
        ([16777216.0, 16777217.0], "at least 2 distinct classes of type float32"),
    ],
)
def test_a_float32_class_beyond_its_type_or_equal_once_cast_is_refused_on_load(values, message, tmp_path):
    X = np.random.default_rng(0).normal(size=(40, 3))
    y = np.where(X[:, 0] > 0, np.float32(1), np.float32(0))
    path = LLKDClassifier(max_epochs=1, random_state=0).fit(X, y).save(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    assert config["classes"]["dtype"] == "float32"
    config["classes"]["values"] = values
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        LLKDClassifier.load(path)


def test_predicting_with_an_encoder_of_another_width_names_the_widths(tiny_encoder_dir, tmp_path):
    from test_estimator_text import keyword_teacher, make_texts

    texts, _ = make_texts(40, 0)
    kw = dict(labels=["negative", "positive"], student="mlp", max_epochs=1, random_state=0)
    saved = LLKDClassifier(keyword_teacher, encoder=tiny_encoder_dir, **kw).fit(texts).save(tmp_path / "m")
    # an encoder object of another width, passed in place of the saved one
    wide = type("Wide", (), {"encode": lambda self, batch, **_: np.ones((len(batch), 7), dtype=np.float32)})()
    loaded = LLKDClassifier.load(saved, encoder=wide)
    with pytest.raises(ValueError, match="the encoder gives 7 features per text, but this student was trained on 32"):
        loaded.predict(texts[:3])


@pytest.fixture(scope="module")
def saved_finetuned(tiny_encoder_dir, tmp_path_factory):
    from test_estimator_text import keyword_teacher, make_texts

    texts, _ = make_texts(40, 0)
    clf = LLKDClassifier(
        keyword_teacher,
        labels=["negative", "positive"],
        student="finetune",
        encoder=tiny_encoder_dir,
        max_epochs=1,
        max_length=12,
        random_state=0,
        calibration="none",
    ).fit(texts)
    return clf.save(tmp_path_factory.mktemp("finetuned") / "saved"), texts


def test_a_fine_tuned_model_whose_weights_overflow_refuses_to_predict_instead_of_answering_nan(
    saved_finetuned, tmp_path
):
    from safetensors.torch import load_file, save_file

    saved, texts = saved_finetuned
    path = shutil.copytree(saved, tmp_path / "saved")
    weights = load_file(str(path / "model.safetensors"))
    weights["head.weight"].fill_(3e38)  # finite, so load() accepts it; the logits are not
    save_file(weights, str(path / "model.safetensors"))
    loaded = LLKDClassifier.load(path)
    for method in (loaded.predict, loaded.predict_proba, loaded.decision_function):
        with pytest.raises(ValueError, match=r"NaN or infinite for 3 row\(s\) of X.*weights overflow"):
            method(texts[:3])


def test_a_tokenizer_with_an_id_beyond_the_embedding_is_refused_on_load(saved_finetuned, tmp_path):
    saved, texts = saved_finetuned
    path = shutil.copytree(saved, tmp_path / "saved")
    LLKDClassifier.load(path).predict(texts[:2])
    file = path / "tokenizer" / "tokenizer.json"
    tokenizer = json.loads(file.read_text())
    tokenizer["model"]["vocab"]["good"] = 10**6  # as many tokens as before, one of them out of range
    file.write_text(json.dumps(tokenizer))
    with pytest.raises(ValueError, match=r"tokenizer: the tokenizer maps 'good' to id 1000000, beyond the encoder's"):
        LLKDClassifier.load(path)


@pytest.mark.parametrize("classes", [[0, 1], ["down", "up"], [False, True]])
def test_a_class_weight_dict_comes_back_keyed_by_the_classes(classes, tmp_path):
    from sklearn.base import clone

    X = np.random.default_rng(0).normal(size=(40, 3))
    y = np.where(X[:, 0] > 0, classes[1], classes[0])
    weights = {classes[0]: 1.0, classes[1]: 3.0}
    clf = LLKDClassifier(max_epochs=1, class_weight=weights, random_state=0).fit(X, y)
    loaded = LLKDClassifier.load(clf.save(tmp_path / "m"))
    assert loaded.get_params()["class_weight"] == weights
    assert all(type(k) is type(c) for k, c in zip(loaded.class_weight, classes))
    np.testing.assert_array_equal(clone(loaded).fit(X, y).class_weight_, clf.class_weight_)


def test_a_layer_count_beyond_the_saved_layers_is_refused_before_the_model_is_built(
    saved_finetuned, tmp_path, monkeypatch
):
    path = shutil.copytree(saved_finetuned[0], tmp_path / "saved")
    config = json.loads((path / "config.json").read_text())
    config["encoder_config"]["num_hidden_layers"] = 2000
    (path / "config.json").write_text(json.dumps(config))
    built = []
    monkeypatch.setattr(persistence, "build_student", lambda *a: built.append(a))
    with pytest.raises(ValueError, match=r"num_hidden_layers is 2000, but model.safetensors holds 1 layer\(s\)"):
        LLKDClassifier.load(path)
    assert built == []


def test_a_config_nested_too_deeply_is_refused_by_name(tmp_path):
    X = np.random.default_rng(0).normal(size=(40, 3))
    path = LLKDClassifier(max_epochs=1, random_state=0).fit(X, X[:, 0] > 0).save(tmp_path / "m")
    (path / "config.json").write_text('{"format_version": 4, "history": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(ValueError, match="config.json: nested too deeply"):
        LLKDClassifier.load(path)
