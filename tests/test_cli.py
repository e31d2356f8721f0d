"""The llkd command line: distil and predict, gold-label evaluation, errors in one line.

The data files are written and read with the standard library only: the command needs no
pandas (see test_the_commands_work_without_pandas).
"""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_estimator_text import keyword_teacher, make_texts

from llkd import LLKDClassifier
from llkd.cli import main


def write_csv(path, columns: dict):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(list(columns))
        writer.writerows(zip(*columns.values()))
    return str(path)


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_jsonl(path, columns: dict):
    rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def sentiment_texts(n, seed):
    """Texts with the sentiment words of the fake server (tests/_openai_server.py) that the
    tiny tokenizer knows, and their labels by construction."""
    rng = np.random.default_rng(seed)
    filler = ["the", "movie", "plot", "actor", "scene", "was", "very", "quite", "and", "story"]
    texts, truth = [], []
    for label in rng.integers(0, 2, n):
        words = list(rng.choice(filler, 5)) + [rng.choice(["good", "great"] if label else ["bad", "awful", "dull"])]
        rng.shuffle(words)
        texts.append(" ".join(words))
        truth.append("positive" if label else "negative")
    return texts, truth


@pytest.fixture(scope="module")
def saved_model(tiny_encoder_dir, tmp_path_factory):
    texts, _ = make_texts(200, 0)
    clf = LLKDClassifier(
        keyword_teacher,
        labels=["negative", "positive"],
        student="finetune",
        encoder=tiny_encoder_dir,
        max_epochs=3,
        learning_rate=3e-3,
        random_state=0,
    ).fit(texts)
    path = tmp_path_factory.mktemp("model") / "student"
    clf.save(path)
    return clf, str(path)


def test_predict_writes_labels_and_confidences(saved_model, tmp_path, capsys):
    clf, path = saved_model
    texts, _ = make_texts(30, 1)
    data = write_csv(tmp_path / "in.csv", {"review": texts})
    out = tmp_path / "out.jsonl"
    assert main(["predict", "--model", path, "--data", str(data), "--text-column", "review", "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == texts
    np.testing.assert_array_equal([r["label"] for r in rows], clf.predict(texts))
    np.testing.assert_allclose([r["confidence"] for r in rows], clf.predict_proba(texts).max(1), atol=1e-6)


def test_predict_errors_are_clear(saved_model, tmp_path, capsys):
    _, path = saved_model
    data = write_csv(tmp_path / "in.csv", {"review": ["a good movie"]})
    assert main(["predict", "--model", path, "--data", str(data), "--text-column", "text"]) == 2
    assert "'text' is not a column" in capsys.readouterr().err
    assert main(["predict", "--model", str(tmp_path / "nowhere"), "--data", str(data), "--text-column", "review"]) == 2
    assert "config.json" in capsys.readouterr().err
    bad = tmp_path / "in.xlsx"
    bad.write_text("x")
    assert main(["predict", "--model", path, "--data", str(bad)]) == 2
    assert ".csv, .jsonl or .parquet" in capsys.readouterr().err


def test_distill_rejects_bad_arguments(tmp_path, capsys):
    data = write_jsonl(tmp_path / "in.jsonl", {"text": ["a", "b"]})
    assert main(["distill", "--data", str(data), "--labels", "onlyone", "--out", str(tmp_path / "m")]) == 2
    assert "at least two" in capsys.readouterr().err
    assert (
        main(["distill", "--data", str(data), "--labels", "a,b", "--teacher", "magic", "--out", str(tmp_path / "m")])
        == 2
    )
    assert "--teacher 'magic'" in capsys.readouterr().err
    # an unknown selection rule is refused by the parser, before any teacher is loaded or asked
    with pytest.raises(SystemExit) as info:
        main(["distill", "--data", str(data), "--labels", "a,b", "--selection", "best", "--out", str(tmp_path / "m")])
    assert info.value.code == 2 and "invalid choice: 'best'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(
            ["distill", "--data", str(data), "--labels", "a,b", "--noise-correction", "x", "--out", str(tmp_path / "m")]
        )
    assert info.value.code == 2 and "invalid choice: 'x'" in capsys.readouterr().err


def test_distill_then_predict_end_to_end(tiny_encoder_dir, tmp_path, capsys):
    from _openai_server import FakeOpenAIServer

    texts, _ = sentiment_texts(240, 7)
    data = write_csv(tmp_path / "reviews.csv", {"review": texts})
    model_dir, cache = tmp_path / "student", tmp_path / "answers.sqlite"
    with FakeOpenAIServer() as srv:
        argv = [
            "distill",
            "--data",
            str(data),
            "--text-column",
            "review",
            "--labels",
            "negative,positive",
            "--teacher",
            f"openai:fake-model@{srv.url}",
            "--student",
            "finetune",
            "--encoder",
            tiny_encoder_dir,
            "--epochs",
            "4",
            "--lr",
            "3e-3",
            "--noise-correction",
            "forward",
            "--class-weight",
            "balanced",
            "--encoder-layers",
            "1",
            "--cache",
            str(cache),
            "--out",
            str(model_dir),
        ]
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
    assert re.search(r"after calibration \(auto: (none|center\+em1), by starved ratio\)", first), first
    assert "model saved to" in second and (model_dir / "config.json").is_file()
    from llkd import LLKDClassifier

    saved = LLKDClassifier.load(model_dir)
    assert saved.noise_correction == "forward" and saved.training_summary_["noise_correction"] == "forward"
    assert saved.history_[-1]["noise_corrected_steps"] > 0
    assert saved.class_weight == "balanced" and saved.training_summary_["class_weight"] == "balanced"
    assert saved.encoder_layers == 1 and saved.training_summary_["encoder_layers"] == 1

    preds = tmp_path / "preds.csv"
    assert (
        main(
            [
                "predict",
                "--model",
                str(model_dir),
                "--data",
                str(data),
                "--text-column",
                "review",
                "--output",
                str(preds),
            ]
        )
        == 0
    )
    out = read_csv(preds)
    assert [r["text"] for r in out] == texts
    from _openai_server import p_positive

    teacher_says = np.where([p_positive(t) > 0.5 for t in texts], "positive", "negative")
    assert (np.array([r["label"] for r in out]) == teacher_says).mean() > 0.85


def test_a_closed_output_pipe_ends_quietly(monkeypatch, capsys):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["show-config"]) == 1
    assert capsys.readouterr().err == ""


def _one_error_line(err: str, command: str) -> str:
    """The error line of stderr, checked to be the only one (progress bars aside)."""
    lines = [
        line
        for line in err.replace("\r", "\n").splitlines()
        if line.strip() and "it/s]" not in line and "text/s]" not in line
    ]
    assert len(lines) == 1 and lines[0].startswith(f"llkd {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_predict_reads_jsonl_and_names_a_bad_line(saved_model, tmp_path, capsys):
    clf, path = saved_model
    texts, _ = make_texts(5, 2)
    data = write_jsonl(tmp_path / "in.jsonl", {"text": texts})
    assert main(["predict", "--model", path, "--data", data]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == list(clf.predict(texts))
    with open(data, "a") as f:
        f.write('{"text": "the plot was good"}\n{"text": "unterminated\n')
    assert main(["predict", "--model", path, "--data", data]) == 2
    line = _one_error_line(capsys.readouterr().err, "predict")
    assert f"{data} line 7: not valid JSON" in line
    header_only = tmp_path / "empty.csv"
    header_only.write_text("text\n")
    assert main(["predict", "--model", path, "--data", str(header_only)]) == 2
    assert "has no data rows (only a header)" in _one_error_line(capsys.readouterr().err, "predict")
    gap = write_csv(tmp_path / "gap.csv", {"text": ["good", "", "bad"]})
    assert main(["predict", "--model", path, "--data", gap]) == 2
    assert "is empty on 1 row(s)" in (msg := _one_error_line(capsys.readouterr().err, "predict")) and "line 3" in msg


def test_predict_on_a_tampered_model_is_one_line_and_debug_shows_the_traceback(saved_model, tmp_path, capsys):
    import shutil

    _, path = saved_model
    bad = tmp_path / "tampered"
    shutil.copytree(path, bad)
    config = json.loads((bad / "config.json").read_text())
    config["classes"]["values"].append("neutral")
    (bad / "config.json").write_text(json.dumps(config))
    data = write_csv(tmp_path / "in.csv", {"text": ["a good movie"]})
    assert main(["predict", "--model", str(bad), "--data", data]) == 2
    line = _one_error_line(capsys.readouterr().err, "predict")
    assert "config.json" in line and "classes" in line
    with pytest.raises(ValueError, match="classes"):
        main(["predict", "--model", str(bad), "--data", data, "--debug"])


def test_distill_reports_a_teacher_failure_in_one_line(tiny_encoder_dir, tmp_path, capsys):
    from _openai_server import FakeOpenAIServer

    texts, _ = sentiment_texts(20, 3)
    data = write_csv(tmp_path / "reviews.csv", {"text": texts})
    with FakeOpenAIServer() as srv:
        srv.fail_next(*[("status", 400, "model 'nope' does not exist")] * 10)
        code = main(
            [
                "distill",
                "--data",
                data,
                "--labels",
                "negative,positive",
                "--teacher",
                f"openai:nope@{srv.url}",
                "--encoder",
                tiny_encoder_dir,
                "--cache",
                str(tmp_path / "c.sqlite"),
                "--out",
                str(tmp_path / "m"),
            ]
        )
    assert code != 0
    line = _one_error_line(capsys.readouterr().err, "distill")
    assert "400" in line and "batch 0" in line, line
    assert not (tmp_path / "m" / "config.json").exists()


def test_distill_evaluates_teacher_and_student_against_gold_labels(tiny_encoder_dir, tmp_path, capsys):
    from _openai_server import FakeOpenAIServer, p_positive

    texts, truth = sentiment_texts(160, 11)
    gold = [t if i % 4 == 0 else "" for i, t in enumerate(truth)]  # 40 gold rows
    data = write_csv(tmp_path / "reviews.csv", {"text": texts, "gold": gold})
    gold_rows = [i for i, g in enumerate(gold) if g]
    teacher_says = ["positive" if p_positive(texts[i]) > 0.5 else "negative" for i in gold_rows]
    y_gold = [gold[i] for i in gold_rows]
    for hold_out in (False, True):
        out = tmp_path / f"m{int(hold_out)}"
        srv = FakeOpenAIServer()
        argv = [
            "distill",
            "--data",
            data,
            "--label-column",
            "gold",
            "--labels",
            "negative,positive",
            "--teacher",
            f"openai:fake-model@{srv.url}",
            "--student",
            "finetune",
            "--encoder",
            tiny_encoder_dir,
            "--epochs",
            "3",
            "--lr",
            "3e-3",
            "--cache",
            str(tmp_path / "c.sqlite"),
            "--out",
            str(out),
        ] + (["--hold-out-gold"] if hold_out else [])
        with srv:
            assert main(argv) == 0
        # the server's model is the teacher: the first fit asks it once per distinct text (the gold
        # rows too, to score it), the second finds every answer in the shared cache
        assert len(srv.requests) == (0 if hold_out else len(set(texts)))
        printed = capsys.readouterr().out
        report = json.loads((out / "evaluation.json").read_text())
        assert report["n_gold"] == 40 and report["gold_used_for_training"] is (not hold_out)
        assert report["classes"] == ["negative", "positive"]
        # the fake teacher samples its answers, so it is right about most, not all, of what its rule says
        assert report["teacher"]["accuracy"] >= 0.9 * np.mean(np.array(teacher_says) == np.array(y_gold))
        for name in ("teacher", "student"):
            m = np.array(report[name]["confusion_matrix"])
            assert m.shape == (2, 2) and m.sum() == 40
            np.testing.assert_array_equal(m.sum(1), [y_gold.count("negative"), y_gold.count("positive")])
            assert report[name]["accuracy"] == pytest.approx(np.trace(m) / 40)
            f1 = [2 * m[k, k] / (m[k].sum() + m[:, k].sum()) for k in range(2)]
            assert report[name]["macro_f1"] == pytest.approx(np.mean(f1))
            assert f"{name:<8s} accuracy {report[name]['accuracy']:.3f}" in printed
        student = LLKDClassifier.load(out)
        assert report["student"]["accuracy"] == pytest.approx(
            np.mean(student.predict([texts[i] for i in gold_rows]) == np.array(y_gold))
        )
        assert ("120 texts" if hold_out else "160 texts") in printed
        assert "evaluation.json" in printed and "confusion matrix, student" in printed
    # a gold label that is not a class is refused before anything is asked or trained
    bad = write_csv(tmp_path / "bad.csv", {"text": texts[:3], "gold": ["positive", "", "neutral"]})
    assert (
        main(
            [
                "distill",
                "--data",
                bad,
                "--label-column",
                "gold",
                "--labels",
                "negative,positive",
                "--out",
                str(tmp_path / "m2"),
            ]
        )
        == 2
    )
    line = _one_error_line(capsys.readouterr().err, "distill")
    assert f"{bad} line 4" in line and "'neutral'" in line


_NO_PANDAS = "import sys; sys.modules['pandas'] = None; from llkd.cli import main; raise SystemExit(main(sys.argv[1:]))"


def test_the_commands_work_without_pandas_and_fail_in_one_line(saved_model, tmp_path):
    """Through a subprocess, as a user runs it, with pandas made unimportable."""
    clf, path = saved_model
    texts, _ = make_texts(8, 4)
    data = write_csv(tmp_path / "in.csv", {"text": texts})
    out = tmp_path / "out.csv"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    run = subprocess.run(
        [sys.executable, "-c", _NO_PANDAS, "predict", "--model", path, "--data", data, "--output", str(out)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert [r["label"] for r in read_csv(out)] == list(clf.predict(texts))
    bad = write_jsonl(tmp_path / "bad.jsonl", {"text": texts[:2]})
    with open(bad, "a") as f:
        f.write("[1, 2]\n")
    run = subprocess.run(
        [sys.executable, "-c", _NO_PANDAS, "predict", "--model", path, "--data", bad],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert run.returncode == 2
    line = _one_error_line(run.stderr, "predict")
    assert f"{bad} line 3: expected a JSON object" in line


def test_distill_reads_its_data_without_pandas(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    data = write_jsonl(tmp_path / "in.jsonl", {"text": ["a", "b"]})
    # reading the data and checking the labels comes before any teacher is loaded
    assert main(["distill", "--data", data, "--labels", "a,b", "--teacher", "magic", "--out", str(tmp_path / "m")]) == 2
    assert "--teacher 'magic'" in capsys.readouterr().err


# ------------------------------------------------------------------ honest packaging
ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _floor(requirements, name):
    for req in requirements:
        pkg, _, version = req.partition(">=")
        if pkg.strip().lower() == name:
            return tuple(int(p) for p in version.split(",")[0].split("."))
    raise AssertionError(f"{name} is not a dependency")


def test_dependency_floors_have_the_apis_the_code_uses():
    deps = _pyproject()["project"]["dependencies"]
    assert _floor(deps, "scikit-learn") >= (1, 6)  # sklearn.utils.validation.validate_data, __sklearn_tags__
    assert _floor(deps, "transformers") >= (4, 56)  # from_pretrained(dtype=...)
    from sklearn.utils.validation import validate_data  # noqa: F401  (what the floor promises)

    # the command line needs no pandas: it is in no required dependency
    assert not any(d.lower().startswith("pandas") for d in deps)


def test_the_version_has_one_source(capsys):
    import importlib.metadata

    from scikit_build_core.metadata.regex import dynamic_metadata

    import llkd

    project = _pyproject()
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    settings = dict(project["tool"]["scikit-build"]["metadata"]["version"])
    assert settings.pop("provider") == "scikit_build_core.metadata.regex"
    assert dynamic_metadata("version", settings) == llkd.__version__  # what a build reads
    assert importlib.metadata.version("llkd") == llkd.__version__  # what this install was built with
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"llkd {llkd.__version__}"


def test_distill_with_a_teacher_budget_asks_only_that_many_texts(tiny_encoder_dir, tmp_path, capsys):
    from _openai_server import FakeOpenAIServer

    texts, _ = sentiment_texts(200, 3)
    data = write_csv(tmp_path / "reviews.csv", {"review": texts})
    with FakeOpenAIServer() as srv:
        argv = [
            "distill",
            "--data",
            str(data),
            "--text-column",
            "review",
            "--labels",
            "negative,positive",
            "--teacher",
            f"openai:fake-model@{srv.url}",
            "--student",
            "mlp",
            "--encoder",
            tiny_encoder_dir,
            "--epochs",
            "2",
            "--cache",
            str(tmp_path / "answers.sqlite"),
            "--teacher-budget",
            "0.25",
            "--acquisition",
            "margin",
            "--unqueried",
            "ignore",
            "--out",
            str(tmp_path / "student"),
        ]
        assert main(argv) == 0
    out = capsys.readouterr().out
    n_distinct = len(set(texts))
    assert f"200 texts, {-(-n_distinct // 4)} new teacher answers" in out
    saved = LLKDClassifier.load(tmp_path / "student")
    assert saved.unqueried == "ignore" and saved.training_summary_["unqueried"] == "ignore"
    assert saved.acquisition == "margin" and any("acquisition" in h for h in saved.history_)  # rounds ran
    assert saved.training_summary_["n_student_labelled"] == 0
    with pytest.raises(SystemExit) as info:
        main(argv[:-6] + ["--teacher-budget", "some", "--out", str(tmp_path / "s2")])
    assert info.value.code == 2 and "--teacher-budget" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(argv[:-4] + ["--unqueried", "teacher", "--out", str(tmp_path / "s3")])
    assert info.value.code == 2 and "--unqueried" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(argv[:-6] + ["--acquisition", "entropy", "--out", str(tmp_path / "s4")])
    assert info.value.code == 2 and "--acquisition" in capsys.readouterr().err


class _Stop(Exception):
    pass


@pytest.mark.parametrize("flags, encoder", [([], "auto"), (["--quality"], "mpnet")])
def test_demo_quality_trains_the_mpnet_student(flags, encoder, monkeypatch, tmp_path):
    from types import SimpleNamespace

    import llkd.datasets
    import llkd.teachers

    texts, y = make_texts(40, 0)
    data = SimpleNamespace(data=texts, target=y, target_names=["negative", "positive"])
    monkeypatch.setattr(llkd.datasets, "fetch_rotten_tomatoes", lambda subset: data)
    teacher = llkd.teachers.CallableTeacher(keyword_teacher, ["negative", "positive"])
    monkeypatch.setattr(llkd.teachers.TransformersTeacher, "from_packaged_gemma", staticmethod(lambda labels: teacher))
    seen = {}

    def fit(self, X, y=None):
        seen["encoder"] = self.encoder
        raise _Stop

    monkeypatch.setattr(LLKDClassifier, "fit", fit)
    argv = ["demo", "--n-train", "20", "--n-test", "10", "--home", str(tmp_path), "--debug", *flags]
    with pytest.raises(_Stop):
        main(argv)
    assert seen["encoder"] == encoder


def test_demo_with_a_budget_asks_only_for_its_budget_and_scores_the_teacher_on_those(
    tiny_encoder_dir, monkeypatch, tmp_path, capsys
):
    from types import SimpleNamespace

    import llkd.datasets
    import llkd.encoders
    import llkd.teachers

    texts, y = make_texts(60, 0)
    data = SimpleNamespace(data=texts, target=y, target_names=["negative", "positive"])
    monkeypatch.setattr(llkd.datasets, "fetch_rotten_tomatoes", lambda subset: data)
    monkeypatch.setattr(llkd.encoders, "packaged_minilm_path", lambda: tiny_encoder_dir)
    asked = []

    def counting(batch):
        asked.extend(batch)
        return keyword_teacher(batch)

    # with an identity, as the packaged Gemma has: the demo reads the raw answers back from its cache
    teacher = llkd.teachers.CallableTeacher(counting, ["negative", "positive"], identity="keywords-v1")
    monkeypatch.setattr(llkd.teachers.TransformersTeacher, "from_packaged_gemma", staticmethod(lambda labels: teacher))
    argv = ["demo", "--n-train", "40", "--n-test", "20", "--home", str(tmp_path), "--student", "mlp"]
    assert main([*argv, "--epochs", "2", "--teacher-budget", "10"]) == 0
    report = json.loads((tmp_path / "demo-report.json").read_text())
    rng = np.random.RandomState(0)  # the demo's draws of its training and test reviews
    train_texts = {texts[i] for i in rng.permutation(60)[:40]}
    test_texts = {texts[i] for i in rng.permutation(60)[:20]}
    # 10 distinct training reviews asked, none of the test reviews
    assert len(asked) == len(set(asked)) == 10 and set(asked) <= train_texts
    assert not set(asked) & (test_texts - train_texts)
    assert report["teacher_labelled_train"] == 10 and report["teacher_scored_on"] == "asked_train"
    assert report["teacher_calibrated"]["accuracy"] == report["pseudo_label_accuracy_train"]
    assert "teacher scored on the 10 training reviews it was asked" in capsys.readouterr().out
    asked.clear()  # without a budget every training and test review is asked
    assert main([*argv, "--epochs", "2", "--home", str(tmp_path / "full")]) == 0
    report = json.loads((tmp_path / "full" / "demo-report.json").read_text())
    assert set(asked) == train_texts | test_texts and report["teacher_scored_on"] == "test"


def test_the_gold_evaluation_stays_within_the_teacher_budget(tiny_encoder_dir, tmp_path, capsys):
    from _openai_server import FakeOpenAIServer

    texts, truth = sentiment_texts(80, 12)
    gold = [t if i % 2 == 0 else "" for i, t in enumerate(truth)]  # 40 gold rows, 40 to label
    data = write_csv(tmp_path / "reviews.csv", {"text": texts, "gold": gold})
    cache = tmp_path / "c.sqlite"

    def distill(out, *extra):
        srv = FakeOpenAIServer()
        argv = ["distill", "--data", data, "--label-column", "gold", "--labels", "negative,positive"]
        argv += ["--teacher", f"openai:fake-model@{srv.url}", "--student", "mlp", "--encoder", tiny_encoder_dir]
        argv += ["--epochs", "1", "--cache", str(cache), "--out", str(tmp_path / out), *extra]
        with srv:
            assert main(argv) == 0
        printed = capsys.readouterr().out
        return len(srv.requests), json.loads((tmp_path / out / "evaluation.json").read_text()), printed

    # under a budget: the budget's queries only, so the teacher is not scored on the gold rows
    asked, report, printed = distill("budget", "--teacher-budget", "10", "--acquisition", "random")
    assert asked == 10 and report["teacher"] is None and report["teacher_n_gold"] == 0
    assert report["student"]["confusion_matrix"] and "teacher  not scored" in printed
    # without one it asks about the gold rows too; under a budget again, those cached answers score it free
    asked, report, _ = distill("all")
    assert asked == 70 and report["teacher_n_gold"] == 40  # 30 unlabeled rows left, and the 40 gold
    asked, report, printed = distill("budget2", "--teacher-budget", "10", "--acquisition", "random")
    assert asked == 0 and report["teacher_n_gold"] == 40 and report["teacher"]["accuracy"] > 0.5
    assert "(on the 40 gold rows it had answered)" in printed


def test_distill_checks_its_out_folder_before_paying_and_holds_gold_out_by_text(tiny_encoder_dir, tmp_path, capsys):
    from _openai_server import FakeOpenAIServer

    texts, truth = sentiment_texts(60, 13)
    (tmp_path / "afile").write_text("in the way")
    base = ["--labels", "negative,positive", "--student", "mlp", "--encoder", tiny_encoder_dir, "--epochs", "1"]
    with FakeOpenAIServer() as srv:
        teacher = ["--teacher", f"openai:fake-model@{srv.url}", "--cache", str(tmp_path / "c.sqlite")]
        data = write_csv(tmp_path / "d.csv", {"text": texts})
        for out, words in [("afile", "is a file, not a folder"), ("afile/sub", "a file, not a folder")]:
            assert main(["distill", "--data", data, *base, *teacher, "--out", str(tmp_path / out)]) == 2
            assert words in capsys.readouterr().err
        assert srv.requests == []  # nothing was paid for
        # 20 gold rows, and unlabeled repeats of 5 of their texts: held out with them
        gold = [t if i < 20 else "" for i, t in enumerate(truth)]
        rows = texts + texts[:5]
        data = write_csv(tmp_path / "g.csv", {"text": rows, "gold": gold + [""] * 5})
        out = tmp_path / "m"
        argv = ["distill", "--data", data, "--label-column", "gold", "--hold-out-gold", *base, *teacher]
        assert main([*argv, "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert "5 unlabeled row(s) repeat a gold text and are held out too" in printed and "40 texts" in printed
        assert (out / "evaluation.json").exists()
        # a second run into the same folder without gold labels leaves no stale report
        assert (
            main(
                [
                    "distill",
                    "--data",
                    write_csv(tmp_path / "d2.csv", {"text": texts[20:]}),
                    *base,
                    *teacher,
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        assert not (out / "evaluation.json").exists()
    # an export into the saved model's own folder would destroy it
    assert main(["export", "--model", str(out), "--format", "hf", "--out", str(out)]) == 2
    assert "holds a model saved by LLKDClassifier.save" in capsys.readouterr().err
    assert LLKDClassifier.load(out).predict(texts[:2]).shape == (2,)


def test_budget_and_output_arguments_are_read_as_their_help_says(tmp_path, capsys):
    import argparse

    from llkd.cli import _budget

    assert _budget("1e3") == 1000 and _budget("250") == 250 and _budget("1") == 1
    assert _budget("0.3") == 0.3 and _budget("1.0") == 1.0 and isinstance(_budget("1.0"), float)
    for bad in ("nan", "inf", "-inf", "half"):
        with pytest.raises(argparse.ArgumentTypeError, match="a number of queries or a fraction"):
            _budget(bad)
    data = write_csv(tmp_path / "in.csv", {"text": ["a", "b"]})
    for output in ("preds.txt", "preds.parquet", "preds"):
        assert main(["predict", "--model", str(tmp_path / "no-model"), "--data", data, "--output", output]) == 2
        assert "write .csv or .jsonl" in capsys.readouterr().err  # refused before the model is even read


def test_predict_reads_a_parquet_file_as_it_reads_a_csv(tiny_encoder_dir, tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    texts, _ = make_texts(40, 3)
    model = LLKDClassifier(
        keyword_teacher, labels=["negative", "positive"], student="mlp", encoder=tiny_encoder_dir, max_epochs=1
    ).fit(texts)
    path = str(model.save(tmp_path / "m"))
    pq.write_table(pa.table({"text": texts[:10], "n": list(range(10))}), tmp_path / "in.parquet")
    csv_path = write_csv(tmp_path / "in.csv", {"text": texts[:10]})
    out = {}
    for name, data in (("parquet", str(tmp_path / "in.parquet")), ("csv", csv_path)):
        assert main(["predict", "--model", path, "--data", data]) == 0
        out[name] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(out["parquet"]) == 10 and out["parquet"] == out["csv"]
    pq.write_table(pa.table({"text": ["fine", None]}), tmp_path / "gap.parquet")
    assert main(["predict", "--model", path, "--data", str(tmp_path / "gap.parquet")]) == 2
    assert "is empty on 1 row(s)" in capsys.readouterr().err
