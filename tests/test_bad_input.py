"""The bad-input battery: one table of what a user passes and the error it must give.

Each row is ``(case id, action, expected exception, words)``: ``action(ctx)`` does what a
user would do (fit, predict, score, load, run the command line) and must raise the
exception, whose message must contain every one of ``words`` (spec section 5: the
message names the argument and what was wrong). ``ctx`` gives a temporary directory,
a saved model to tamper with and the command line; to add a case, add a row.
Command-line rows raise ``CLIFailed`` carrying the exit status and the one stderr line.
"""

import contextlib
import io
import json
import shutil

import numpy as np
import pytest

from llkd import LLKDClassifier
from llkd.cli import main


class CLIFailed(Exception):
    """``llkd ...`` exited non-zero; the message is its stderr."""


class Context:
    def __init__(self, tmp_path, saved_dir):
        self.tmp = tmp_path
        self._saved = saved_dir

    # -- saved models, copied so that each case tampers with its own
    def model(self, name="features"):
        target = self.tmp / name
        if not target.exists():
            shutil.copytree(self._saved[name], target)
        return target

    def config(self, model_dir, **changes):
        """Rewrite config.json with top-level keys changed (None deletes the key)."""
        path = model_dir / "config.json"
        config = json.loads(path.read_text())
        for key, value in changes.items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value(config[key]) if callable(value) else value
        path.write_text(json.dumps(config))
        return model_dir

    def tensors(self, model_dir, change):
        from safetensors.torch import load_file, save_file

        path = str(model_dir / "model.safetensors")
        weights = load_file(path)
        change(weights)
        save_file(weights, path)
        return model_dir

    def load(self, model_dir, **kw):
        return LLKDClassifier.load(model_dir, **kw)

    def write(self, name, text):
        path = self.tmp / name
        path.write_text(text)
        return str(path)

    def write_bytes(self, name, data):
        path = self.tmp / name
        path.write_bytes(data)
        return str(path)

    def cli(self, *argv):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main([str(a) for a in argv])
        text = err.getvalue()
        if code != 0:
            # one clear line (progress bars of the teacher aside)
            lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]
            assert len(lines) == 1 and "Traceback" not in text, text
            raise CLIFailed(f"exit {code}: {lines[0]}")


@pytest.fixture(scope="module")
def saved_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    LLKDClassifier(max_epochs=1, hidden_size=4, random_state=0).fit(X, np.where(X[:, 0] > 0, "b", "a")).save(
        root / "features"
    )
    return {"features": root / "features"}


@pytest.fixture
def ctx(tmp_path, saved_dirs):
    return Context(tmp_path, saved_dirs)


# ----------------------------------------------------------------------- helpers for rows
def _X(n=20, d=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def _y(n=20):
    return np.arange(n) % 2


def _teacher(texts):
    return np.full((len(texts), 2), 0.5)


def _text_clf(**kw):
    return LLKDClassifier(
        _teacher, labels=["a", "b"], student="mlp", encoder=lambda t: np.ones((len(t), 4)), max_epochs=1, **kw
    )


def _fitted(ctx):
    return ctx.load(ctx.model())


def _with(X, i, j, value):
    X = X.copy()
    X[i, j] = value
    return X


def _gpu_absent():
    import torch

    return not torch.cuda.is_available()


def _set_nan(weights):
    name = min(weights)
    weights[name].view(-1)[0] = float("nan")


def _set_inf(weights):
    name = max(weights)
    weights[name].view(-1)[0] = float("inf")


def _as_float64(weights):
    for k in weights:
        weights[k] = weights[k].double()


def _params(**changes):
    return lambda params: {**params, **changes}


def _text_model(ctx, encoder_value, version=1, encoder_ref=None):
    """A saved model of text input with a frozen encoder, its encoder reference set as given."""
    model = ctx.model()

    def text_config(config):
        config.update(is_text=True, format_version=version, n_features_in=-1)
        for key in ("training_summary", "feature_names_in"):  # a format 1 or 2 file has neither
            config.pop(key, None)
        config["params"]["encoder"] = encoder_value
        if version >= 2:
            config["encoder_ref"] = encoder_ref
        else:
            config.pop("encoder_ref", None)
        return config

    path = model / "config.json"
    path.write_text(json.dumps(text_config(json.loads(path.read_text()))))
    return model


# ----------------------------------------------------------------------------- the table
CASES = [
    # --- X and y given to fit
    ("fit-features-without-y", lambda c: LLKDClassifier(max_epochs=1).fit(_X(5, 2)), ValueError, ["requires y"]),
    (
        "fit-empty-array",
        lambda c: LLKDClassifier(max_epochs=1).fit(np.zeros((0, 2)), np.zeros(0)),
        ValueError,
        ["0 sample"],
    ),
    ("fit-empty-list", lambda c: _text_clf().fit([]), ValueError, ["X is empty", "fit"]),
    ("fit-empty-generator", lambda c: _text_clf().fit(t for t in []), ValueError, ["X is empty"]),
    (
        "fit-nan-features",
        lambda c: LLKDClassifier(max_epochs=1).fit(_with(_X(4, 2), 0, 1, np.nan), [0, 1, 0, 1]),
        ValueError,
        ["NaN"],
    ),
    (
        "fit-features-overflow-float32",
        lambda c: LLKDClassifier(max_epochs=1).fit(_with(_X(), 3, 1, 1e300), _y()),
        ValueError,
        ["X[3, 1]", "float32"],
    ),
    (
        "fit-one-class",
        lambda c: LLKDClassifier(max_epochs=1).fit(_X(4, 2), [0, 0, 0, 0]),
        ValueError,
        ["at least 2 classes"],
    ),
    ("fit-y-length", lambda c: LLKDClassifier(max_epochs=1).fit(_X(4, 2), [0, 1, 0]), ValueError, ["inconsistent"]),
    (
        "fit-unknown-label",
        lambda c: LLKDClassifier(labels=["a", "b"], max_epochs=1).fit(_X(4, 2), ["a", "b", "c", "a"]),
        ValueError,
        ["'c'"],
    ),
    ("fit-single-string", lambda c: _text_clf().fit("one text"), TypeError, ["single string"]),
    ("fit-texts-with-none", lambda c: _text_clf().fit(["a", "b", None, "c"]), TypeError, ["X[2] is None"]),
    ("fit-texts-with-int", lambda c: _text_clf().fit(["a", 7, "b"]), TypeError, ["X[1] is int", "7"]),
    ("fit-texts-with-bytes", lambda c: _text_clf().fit(["a", "b", b"c"]), TypeError, ["X[2] is bytes", "decode"]),
    (
        "fit-nan-embeddings",
        lambda c: LLKDClassifier(
            _teacher, labels=["a", "b"], student="mlp", max_epochs=1, encoder=lambda t: np.full((len(t), 4), np.nan)
        ).fit(["a", "b"]),
        ValueError,
        ["embeddings", "X[0]"],
    ),
    ("fit-text-length-mismatch", lambda c: _text_clf().fit(["a", "b"], ["a"]), ValueError, ["2 texts", "1 entries"]),
    # --- parameters
    (
        "param-momentum",
        lambda c: LLKDClassifier(momentum=1.5, max_epochs=1).fit(_X(4, 2), [0, 1, 0, 1]),
        ValueError,
        ["momentum"],
    ),
    (
        "param-selection",
        lambda c: LLKDClassifier(selection="best", max_epochs=1).fit(_X(4, 2), [0, 1, 0, 1]),
        ValueError,
        ["selection"],
    ),
    (
        "param-encoder-layers",
        lambda c: LLKDClassifier(encoder_layers=0, max_epochs=1).fit(_X(4, 2), [0, 1, 0, 1]),
        ValueError,
        ["encoder_layers"],
    ),
    (
        "param-noise-correction",
        lambda c: LLKDClassifier(noise_correction="backward", max_epochs=1).fit(_X(4, 2), [0, 1, 0, 1]),
        ValueError,
        ["noise_correction", "backward"],
    ),
    (
        "param-noise-correction-start",
        lambda c: LLKDClassifier(noise_correction_start=1.0, max_epochs=1).fit(_X(4, 2), [0, 1, 0, 1]),
        ValueError,
        ["noise_correction_start"],
    ),
    (
        "param-forward-with-soft-targets",
        lambda c: LLKDClassifier(noise_correction="forward", soft_targets=True, max_epochs=1).fit(
            _X(4, 2), [0, 1, 0, 1]
        ),
        ValueError,
        ["noise_correction='forward'", "soft_targets=True"],
    ),
    ("param-teacher", lambda c: LLKDClassifier(42, max_epochs=1).fit(_X(4, 2)), ValueError, ["teacher"]),
    (
        "param-device-tpu",
        lambda c: LLKDClassifier(device="tpu", max_epochs=1).fit(_X(4, 2), [0, 1, 0, 1]),
        ValueError,
        ["device='tpu'", "'cpu'", "'cuda'"],
    ),
    (
        "param-device-bad-cuda-string",
        lambda c: LLKDClassifier(device="cuda:x", max_epochs=1).fit(_X(4, 2), [0, 1, 0, 1]),
        ValueError,
        ["device='cuda:x'"],
    ),
    (
        "param-student-finetune-on-arrays",
        lambda c: LLKDClassifier(student="finetune", max_epochs=1).fit(_X(4, 2), [0, 1, 0, 1]),
        ValueError,
        ["text"],
    ),
    # --- teachers answering feature rows
    (
        "teacher-too-few-answers",
        lambda c: LLKDClassifier(lambda r: np.full((len(r) - 1, 2), 0.5), labels=["a", "b"], max_epochs=1).fit(_X(40)),
        ValueError,
        ["answers"],
    ),
    (
        "teacher-nan-answers",
        lambda c: LLKDClassifier(lambda r: np.full((len(r), 2), np.nan), labels=["a", "b"], max_epochs=1).fit(_X(40)),
        ValueError,
        ["NaN"],
    ),
    (
        "teacher-label-out-of-range",
        lambda c: LLKDClassifier(
            lambda r: (np.full(len(r), 5), np.full(len(r), 0.9)), labels=["a", "b"], max_epochs=1
        ).fit(_X(40)),
        ValueError,
        ["5"],
    ),
    # --- predict and score on a fitted model
    ("predict-wrong-width", lambda c: _fitted(c).predict(_X(5, 2)), ValueError, ["features"]),
    (
        "predict-texts-on-feature-model",
        lambda c: _fitted(c).predict(["some text"]),
        TypeError,
        ["numeric features", "texts"],
    ),
    ("predict-empty", lambda c: _fitted(c).predict([]), ValueError, ["X is empty", "predict"]),
    (
        "predict-overflow-float32",
        lambda c: _fitted(c).predict(_with(_X(5), 2, 0, -1e300)),
        ValueError,
        ["X[2, 0]", "float32"],
    ),
    (
        "score-label-outside-classes",
        lambda c: _fitted(c).score(_X(4), ["a", "b", "zebra", "a"]),
        ValueError,
        ["'zebra'", "classes"],
    ),
    ("score-no-labeled-rows", lambda c: _fitted(c).score(_X(4), [-1, None, -1, None]), ValueError, ["no labeled rows"]),
    ("score-y-length", lambda c: _fitted(c).score(_X(4), ["a", "b"]), ValueError, ["4 rows", "2 entries"]),
    (
        "score-sample-weight-short",
        lambda c: _fitted(c).score(_X(4), ["a", "b", -1, "a"], sample_weight=[1.0, 2.0]),
        ValueError,
        ["sample_weight", "(4,)", "(2,)"],
    ),
    (
        "score-sample-weight-long",
        lambda c: _fitted(c).score(_X(4), ["a", "b", "b", "a"], sample_weight=np.ones(8)),
        ValueError,
        ["sample_weight", "(4,)", "(8,)"],
    ),
    (
        "fit-one-text-column-table",
        lambda c: LLKDClassifier(max_epochs=1).fit(np.array([["a good film"], ["a bad one"]], dtype=object), [0, 1]),
        ValueError,
        ["one text column", "shape (2, 1)", "1-D sequence"],
    ),
    (
        "predict-one-text-column-table",
        lambda c: _fitted(c).predict(np.array([["a good film"]])),
        ValueError,
        ["one text column", "1-D sequence"],
    ),
    (
        "predict-before-fit",
        lambda c: LLKDClassifier().predict(_X(2, 2)),
        __import__("sklearn.exceptions").exceptions.NotFittedError,
        ["not fitted"],
    ),
    # --- load(): tampered or broken directories
    (
        "load-nan-weight",
        lambda c: c.load(c.tensors(c.model(), _set_nan)),
        ValueError,
        ["model.safetensors", "NaN or infinite"],
    ),
    (
        "load-inf-weight",
        lambda c: c.load(c.tensors(c.model(), _set_inf)),
        ValueError,
        ["model.safetensors", "NaN or infinite"],
    ),
    (
        "load-float64-weights",
        lambda c: c.load(c.tensors(c.model(), _as_float64)),
        ValueError,
        ["model.safetensors", "F64", "F32"],
    ),
    (
        "load-extra-tensor",
        lambda c: c.load(c.tensors(c.model(), lambda w: w.update(extra=w[min(w)].clone()))),
        ValueError,
        ["model.safetensors", "unexpected", "extra"],
    ),
    (
        "load-missing-tensor",
        lambda c: c.load(c.tensors(c.model(), lambda w: w.pop(min(w)))),
        ValueError,
        ["model.safetensors", "missing"],
    ),
    (
        "load-shape-mismatch",
        lambda c: c.load(c.config(c.model(), model_config=lambda m: {**m, "hidden_size": 5})),
        ValueError,
        ["model.safetensors", "shape"],
    ),
    (
        "load-three-classes-two-outputs",
        lambda c: c.load(c.config(c.model(), classes={"dtype": "str", "values": ["a", "b", "c"]})),
        ValueError,
        ["config.json", "classes", "3"],
    ),
    (
        "load-duplicate-classes",
        lambda c: c.load(c.config(c.model(), classes={"dtype": "str", "values": ["a", "a"]})),
        ValueError,
        ["config.json", "classes", "distinct"],
    ),
    (
        "load-classes-wrong-type",
        lambda c: c.load(c.config(c.model(), classes={"dtype": "int", "values": ["a", "b"]})),
        ValueError,
        ["config.json", "classes.values[0]"],
    ),
    (
        "load-broken-json",
        lambda c: c.load((c.model() / "config.json").write_text('{"format_version": 2,') and c.model()),
        ValueError,
        ["config.json", "not valid JSON"],
    ),
    (
        "load-json-not-object",
        lambda c: c.load((c.model() / "config.json").write_text("[1, 2]") and c.model()),
        ValueError,
        ["config.json", "JSON object"],
    ),
    (
        "load-truncated-safetensors",
        lambda c: c.load(
            (c.model() / "model.safetensors").write_bytes((c.model() / "model.safetensors").read_bytes()[:40])
            and c.model()
        ),
        ValueError,
        ["model.safetensors", "not a valid safetensors"],
    ),
    (
        "load-safetensors-garbage",
        lambda c: c.load((c.model() / "model.safetensors").write_bytes(b"\xff" * 64) and c.model()),
        ValueError,
        ["model.safetensors"],
    ),
    (
        "load-future-format",
        lambda c: c.load(c.config(c.model(), format_version=99)),
        ValueError,
        ["config.json", "format_version 99"],
    ),
    (
        "load-missing-key",
        lambda c: c.load(c.config(c.model(), model_config=None)),
        ValueError,
        ["config.json", "missing", "model_config"],
    ),
    ("load-unknown-key", lambda c: c.load(c.config(c.model(), surprise=1)), ValueError, ["config.json", "surprise"]),
    (
        "load-n-iter-wrong-type",
        lambda c: c.load(c.config(c.model(), n_iter="3")),
        ValueError,
        ["config.json", "n_iter", "int"],
    ),
    (
        "load-is-text-wrong-type",
        lambda c: c.load(c.config(c.model(), is_text="no")),
        ValueError,
        ["config.json", "is_text"],
    ),
    (
        "load-unknown-kind",
        lambda c: c.load(c.config(c.model(), model_config=lambda m: {**m, "kind": "svm"})),
        ValueError,
        ["config.json", "model_config.kind"],
    ),
    (
        "load-n-features-mismatch",
        lambda c: c.load(c.config(c.model(), n_features_in=7)),
        ValueError,
        ["config.json", "n_features_in"],
    ),
    (
        "load-unknown-param",
        lambda c: c.load(c.config(c.model(), params=_params(magic=1))),
        ValueError,
        ["config.json", "params", "magic"],
    ),
    (
        "load-bad-param-value",
        lambda c: c.load(c.config(c.model(), params=_params(momentum=5))),
        ValueError,
        ["config.json", "params", "momentum"],
    ),
    (
        "load-selector-state-nan",
        lambda c: c.load(c.config(c.model(), selector_state=lambda s: {**s, "global_levels": [float("nan"), 0.5]})),
        ValueError,
        ["config.json", "selector_state"],
    ),
    (
        "load-encoder-config-garbage",
        lambda c: c.load(
            c.config(
                c.model(),
                model_config={"kind": "finetune", "n_classes": 2, "dropout": 0.1},
                is_text=True,
                encoder_config={"model_type": "no-such-model"},
            )
        ),
        ValueError,
        ["config.json", "encoder_config"],
    ),
    ("load-device-tpu", lambda c: c.load(c.model(), device="tpu"), ValueError, ["device='tpu'"]),
    # --- load(): encoder references follow no path outside the directory
    (
        "load-encoder-absolute-path",
        lambda c: c.load(_text_model(c, str(c.tmp / "enc"))),
        ValueError,
        ["config.json", "outside the saved directory", "encoder="],
    ),
    (
        "load-encoder-cwd-relative",
        lambda c: c.load(_text_model(c, "models/enc")),
        ValueError,
        ["config.json", "outside the saved directory"],
    ),
    (
        "load-encoder-hub-name",
        lambda c: c.load(_text_model(c, "sentence-transformers/all-MiniLM-L6-v2")),
        ValueError,
        ["config.json", "sentence-transformers/all-MiniLM-L6-v2", "outside"],
    ),
    (
        "load-encoder-ref-escapes",
        lambda c: c.load(_text_model(c, "x", 2, {"directory": "../elsewhere"})),
        ValueError,
        ["config.json", "outside the model directory"],
    ),
    (
        "load-encoder-ref-absolute",
        lambda c: c.load(_text_model(c, "x", 2, {"directory": str(c.tmp)})),
        ValueError,
        ["config.json", "outside the model directory"],
    ),
    (
        "load-encoder-ref-hub",
        lambda c: c.load(_text_model(c, "x", 2, {"packaged": "bert-base-uncased"})),
        ValueError,
        ["config.json", "encoder_ref"],
    ),
    (
        "load-encoder-custom-not-given",
        lambda c: c.load(_text_model(c, None)),
        ValueError,
        ["custom encoder object", "encoder="],
    ),
    # --- the command line: one line on stderr, non-zero exit
    (
        "cli-predict-tampered-model",
        lambda c: c.cli(
            "predict", "--model", c.tensors(c.model(), _set_nan), "--data", c.write("in.csv", "text\nhello\n")
        ),
        CLIFailed,
        ["exit 2", "llkd predict: error:", "model.safetensors", "NaN"],
    ),
    (
        "cli-predict-bad-jsonl-line",
        lambda c: c.cli(
            "predict", "--model", c.model(), "--data", c.write("in.jsonl", '{"text": "a"}\n\n{"text": oops}\n')
        ),
        CLIFailed,
        ["exit 2", "in.jsonl line 3", "not valid JSON"],
    ),
    (
        "cli-predict-jsonl-nan-text",
        lambda c: c.cli(
            "predict", "--model", c.model(), "--data", c.write("in.jsonl", '{"text": "a"}\n{"text": NaN}\n')
        ),
        CLIFailed,
        ["exit 2", "in.jsonl line 2", "NaN is not a JSON value"],
    ),
    (
        "cli-predict-csv-unquoted-comma",
        lambda c: c.cli(
            "predict", "--model", c.model(), "--data", c.write("in.csv", "text\nplain\nI liked it, but not the end\n")
        ),
        CLIFailed,
        ["exit 2", "in.csv line 3", "2 fields, more than the header's 1", "quote"],
    ),
    (
        "cli-predict-not-utf8-late-in-the-file",
        lambda c: c.cli(
            "predict",
            "--model",
            c.model(),
            "--data",
            c.write_bytes("in.csv", b"text\n" + b"fine\n" * 3000 + b"caf\xe9\n"),
        ),
        CLIFailed,
        ["exit 2", "in.csv: not UTF-8 text (byte 15008, line 3002)"],
    ),
    (
        "cli-predict-jsonl-not-object",
        lambda c: c.cli("predict", "--model", c.model(), "--data", c.write("in.jsonl", '{"text": "a"}\n"b"\n')),
        CLIFailed,
        ["in.jsonl line 2", "JSON object"],
    ),
    (
        "cli-predict-missing-column",
        lambda c: c.cli("predict", "--model", c.model(), "--data", c.write("in.csv", "review\nhello\n")),
        CLIFailed,
        ["--text-column 'text'", "in.csv", "['review']"],
    ),
    (
        "cli-predict-header-only-csv",
        lambda c: c.cli("predict", "--model", c.model(), "--data", c.write("in.csv", "text\n")),
        CLIFailed,
        ["in.csv", "no data rows"],
    ),
    (
        "cli-predict-empty-text",
        lambda c: c.cli("predict", "--model", c.model(), "--data", c.write("in.csv", 'text\na\n""\n')),
        CLIFailed,
        ["empty", "line 3"],
    ),
    (
        "cli-predict-not-utf8",
        lambda c: c.cli(
            "predict",
            "--model",
            c.model(),
            "--data",
            (c.tmp / "in.csv").write_bytes(b"text\n\xff\xfe\n") and c.tmp / "in.csv",
        ),
        CLIFailed,
        ["in.csv", "UTF-8"],
    ),
    (
        "cli-predict-no-model",
        lambda c: c.cli("predict", "--model", c.tmp / "nowhere", "--data", c.write("in.csv", "text\na\n")),
        CLIFailed,
        ["config.json", "not found"],
    ),
    (
        "cli-distill-bad-jsonl-line",
        lambda c: c.cli(
            "distill", "--data", c.write("d.jsonl", '{"text": "a"}\n{\n'), "--labels", "a,b", "--out", c.tmp / "m"
        ),
        CLIFailed,
        ["d.jsonl line 2"],
    ),
    (
        "cli-distill-missing-label-column",
        lambda c: c.cli(
            "distill",
            "--data",
            c.write("d.csv", "text\na\n"),
            "--label-column",
            "gold",
            "--labels",
            "a,b",
            "--out",
            c.tmp / "m",
        ),
        CLIFailed,
        ["--label-column 'gold'", "d.csv"],
    ),
    (
        "cli-distill-unknown-gold-label",
        lambda c: c.cli(
            "distill",
            "--data",
            c.write("d.csv", "text,gold\na,a\nb,zz\n"),
            "--label-column",
            "gold",
            "--labels",
            "a,b",
            "--out",
            c.tmp / "m",
        ),
        CLIFailed,
        ["d.csv line 3", "'zz'"],
    ),
    (
        "cli-distill-one-label",
        lambda c: c.cli("distill", "--data", c.write("d.csv", "text\na\n"), "--labels", "a", "--out", c.tmp / "m"),
        CLIFailed,
        ["at least two"],
    ),
]


@pytest.mark.parametrize("action, exc, words", [pytest.param(*row[1:], id=row[0]) for row in CASES])
def test_bad_input(ctx, action, exc, words):
    with pytest.raises(exc) as info:
        action(ctx)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_the_table_ids_are_unique():
    ids = [row[0] for row in CASES]
    assert len(ids) == len(set(ids))


def test_a_failing_teacher_in_distill_is_one_line(ctx, monkeypatch):
    import llkd.cli

    class Broken:
        classes = ("a", "b")
        identity = None

        def label(self, texts):
            raise ConnectionError("server went away")

    monkeypatch.setattr(llkd.cli, "_make_teacher", lambda spec, labels: Broken())
    with pytest.raises(CLIFailed) as info:
        ctx.cli(
            "distill",
            "--data",
            ctx.write("d.csv", "text\na\nb\n"),
            "--labels",
            "a,b",
            "--encoder",
            "unused",
            "--student",
            "mlp",
            "--out",
            ctx.tmp / "m",
        )
    assert "exit 1" in str(info.value) and "server went away" in str(info.value) and "batch 0" in str(info.value)


def test_a_gpu_only_device_without_a_gpu_names_the_device():
    if not _gpu_absent():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ValueError, match="device='cuda:7'"):
        LLKDClassifier(device="cuda:7", max_epochs=1).fit(_X(4, 2), [0, 1, 0, 1])


def test_score_ignores_unlabeled_rows():
    X, y = _X(40), _y(40)
    clf = LLKDClassifier(max_epochs=3, random_state=0).fit(X, y)
    partial = np.where(np.arange(40) < 20, y, -1)
    assert clf.score(X, partial) == clf.score(X[:20], y[:20])
    with_none = np.array([v if i < 20 else None for i, v in enumerate(y)], dtype=object)
    assert clf.score(X, with_none) == clf.score(X[:20], y[:20])


def test_iterables_of_texts_are_read_once_and_accepted():
    # teacher and encoder depend on the text, so a row read out of order or twice would show
    texts = [f"{w} {i}" for i, w in enumerate(["good", "bad", "fine", "awful"] * 5)]

    def teacher(batch):
        p = np.array([0.9 if t.startswith(("good", "fine")) else 0.2 for t in batch])
        return np.stack([1 - p, p], axis=1)

    def encoder(batch):
        return np.array([[len(t), t.startswith("good"), t.startswith("bad"), int(t.split()[1])] for t in batch], float)

    def clf():
        return LLKDClassifier(teacher, labels=["a", "b"], student="mlp", encoder=encoder, max_epochs=2, random_state=0)

    reads = []

    def once(seq):
        for t in seq:
            reads.append(t)
            yield t

    a = clf().fit(once(texts))
    assert reads == texts  # read once, in order
    b = clf().fit(texts)
    np.testing.assert_array_equal(a.teacher_labels_, b.teacher_labels_)
    np.testing.assert_array_equal(a.teacher_labels_, [0 if t.startswith(("bad", "awful")) else 1 for t in texts])
    want = b.predict_proba(texts)
    assert not np.allclose(want, want[0])  # the rows differ, so their order is checked
    np.testing.assert_array_equal(a.predict_proba(t for t in texts), want)
    np.testing.assert_array_equal(a.predict_proba(map(str, texts[::-1])), want[::-1])
