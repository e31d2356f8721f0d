"""The ``llkd`` command: ``demo``, ``distill``, ``predict``, ``show-config``."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path


def _default_home() -> Path:
    return Path(os.environ.get("LLKD_HOME", Path.home() / ".cache" / "llkd"))


class _Stages:
    """Wall time per named stage, printed at the end."""

    def __init__(self):
        self.times: dict[str, float] = {}

    def run(self, name, fn, *args, **kwargs):
        print(f"[llkd] {name} ...", flush=True)
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        self.times[name] = time.perf_counter() - t0
        print(f"[llkd] {name}: {self.times[name]:.1f} s", flush=True)
        return out


def _metrics(y_true, y_pred) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro")),
    }


# ---------------------------------------------------------------------- demo
def demo(args) -> dict:
    """Distil the packaged Gemma 3 270M into a MiniLM student on Rotten Tomatoes."""
    import numpy as np

    from . import LLKDClassifier
    from .datasets import fetch_rotten_tomatoes
    from .teachers import PriorCorrection, TransformersTeacher, label_in_batches

    stages = _Stages()
    home = Path(args.home)
    home.mkdir(parents=True, exist_ok=True)
    cache = str(home / "teacher-cache.sqlite")
    out_dir = Path(args.out) if args.out else home / "demo-model"

    def load_data():
        train = fetch_rotten_tomatoes(subset="train")
        test = fetch_rotten_tomatoes(subset="test")
        rng = np.random.RandomState(args.seed)
        tr = rng.permutation(len(train.data))[: args.n_train]
        te = rng.permutation(len(test.data))[: args.n_test]
        names = list(train.target_names)
        return (
            [train.data[i] for i in tr],
            np.asarray(names)[train.target[tr]],
            [test.data[i] for i in te],
            np.asarray(names)[test.target[te]],
            names,
        )

    X_train, y_train_gold, X_test, y_test, names = stages.run("loading movie reviews", load_data)
    print(f"       {len(X_train)} unlabeled training reviews, {len(X_test)} gold test reviews, classes {names}")
    teacher = stages.run("loading the Gemma 3 270M teacher", TransformersTeacher.from_packaged_gemma, labels=names)

    def label_all():
        tr = label_in_batches(teacher, X_train, cache=cache, progress=True)
        te = label_in_batches(teacher, X_test, cache=cache, progress=True)
        return tr, te

    t_train, t_test = stages.run("teacher labelling (cached answers are reused)", label_all)
    correction = PriorCorrection().fit(t_train.proba)
    teacher_raw = _metrics(y_test, np.asarray(names)[t_test.labels])
    teacher_cal = _metrics(y_test, np.asarray(names)[correction.transform(t_test.proba).argmax(1)])

    finetune = args.student != "mlp"
    clf = LLKDClassifier(
        teacher,
        student=args.student,
        selection=args.selection,
        # The fine-tuned student gets one epoch at 1e-4 (benchmarks/study_demo_student.py);
        # the MLP student keeps the estimator's defaults.
        max_epochs=args.epochs if args.epochs is not None else (1 if finetune else None),
        learning_rate=args.lr if args.lr is not None else (1e-4 if finetune else None),
        teacher_cache=cache,
        random_state=args.seed,
        verbose=1,
    )
    stages.run("training the student", clf.fit, X_train)
    pred = stages.run("evaluating the student", clf.predict, X_test)
    student = _metrics(y_test, pred)
    stages.run("saving the student", clf.save, out_dir)

    distinct = clf.history_[-1]["distinct_selected"]
    pseudo_acc = float(np.mean(np.asarray(names)[clf.teacher_labels_] == y_train_gold))
    report = {
        "n_train_unlabeled": len(X_train),
        "n_test": len(X_test),
        "teacher_raw": teacher_raw,
        "teacher_calibrated": teacher_cal,
        "pseudo_label_accuracy_train": pseudo_acc,
        "student": student,
        "selected_per_step_fraction": _selected_per_step(clf.history_),
        "distinct_selected_fraction": distinct / len(X_train),
        "seconds": stages.times,
        "model_dir": str(out_dir),
    }
    print()
    print("=" * 66)
    print(f"teacher (Gemma 3 270M), raw        accuracy {teacher_raw['accuracy']:.3f}  macro-F1 {teacher_raw['macro_f1']:.3f}")
    print(f"teacher, calibrated (prior)        accuracy {teacher_cal['accuracy']:.3f}  macro-F1 {teacher_cal['macro_f1']:.3f}")
    kind = "fine-tuned MiniLM" if clf._kind_ == "finetune" else "MLP, frozen MiniLM"
    print(f"student ({kind + ', ' + clf.selection + ')':<24s}  accuracy {student['accuracy']:.3f}  macro-F1 {student['macro_f1']:.3f}")
    print(f"student trained on {100 * report['selected_per_step_fraction']:.1f} % of the samples per step; "
          f"{100 * report['distinct_selected_fraction']:.1f} % of the reviews were ever selected")
    print("time per stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in stages.times.items()))
    print(f"total {sum(stages.times.values()):.0f} s; model saved to {out_dir}")
    print(f"(load it with llkd.LLKDClassifier.load({str(out_dir)!r}))")
    (home / "demo-report.json").write_text(json.dumps(report, indent=1))
    return report


# --------------------------------------------------------------- distill/predict
def _read_table(path: str):
    import pandas as pd

    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix in (".jsonl", ".ndjson"):
        return pd.read_json(path, lines=True)
    if suffix == ".parquet":
        return pd.read_parquet(path)
    raise ValueError(f"--data must be a .csv, .jsonl or .parquet file, got {path!r}")


def _texts(frame, column: str) -> list[str]:
    if column not in frame.columns:
        raise ValueError(f"--text-column {column!r} is not a column of the data; columns: {list(frame.columns)}")
    col = frame[column]
    if col.isna().any():
        raise ValueError(f"--text-column {column!r} has {int(col.isna().sum())} empty rows")
    return col.astype(str).tolist()


def _make_teacher(spec: str, labels: list[str]):
    from . import teachers

    if spec == "gemma":
        return teachers.TransformersTeacher.from_packaged_gemma(labels=labels)
    if spec.startswith("hf:"):
        return teachers.TransformersTeacher(spec[3:], labels=labels)
    if spec.startswith("openai:"):
        OpenAITeacher = teachers.OpenAITeacher
        rest = spec[len("openai:"):]
        model, _, base_url = rest.partition("@")
        return OpenAITeacher(model=model, labels=labels, base_url=base_url or "https://api.openai.com/v1")
    raise ValueError(
        f"--teacher {spec!r}: use 'gemma', 'hf:<path or model>', or 'openai:<model>@<base url>'"
    )


def _selected_per_step(history) -> float:
    """Samples trained on per step, over all epochs, as a fraction of what "all" uses."""
    return sum(h["n_selected"] for h in history) / max(1, sum(h["n_backprop_all"] for h in history))


def distill(args) -> None:
    import numpy as np

    from . import LLKDClassifier

    frame = _read_table(args.data)
    texts = _texts(frame, args.text_column)
    labels = [s.strip() for s in args.labels.split(",") if s.strip()]
    if len(labels) < 2:
        raise ValueError("--labels needs at least two comma-separated class names")
    y = None
    if args.label_column:
        if args.label_column not in frame.columns:
            raise ValueError(f"--label-column {args.label_column!r} is not a column of the data")
        y = [None if (v != v or v is None or str(v) == "") else str(v) for v in frame[args.label_column]]
    teacher = _make_teacher(args.teacher, labels)
    cache = args.cache or str(_default_home() / "teacher-cache.sqlite")
    clf = LLKDClassifier(
        teacher, student=args.student, encoder=args.encoder, selection=args.selection, max_epochs=args.epochs,
        learning_rate=args.lr, teacher_cache=cache, random_state=args.seed, verbose=1,
    )
    clf.fit(texts, y)
    clf.save(args.out)
    per_step = _selected_per_step(clf.history_)
    counts = np.bincount(clf.teacher_labels_[clf.teacher_labels_ >= 0], minlength=len(labels))
    print(f"{len(texts)} texts, {clf.n_teacher_queries_} new teacher answers (the others reused; cache {cache}); "
          f"labels: " + ", ".join(f"{c} {n}" for c, n in zip(clf.classes_, counts)))
    print(f"student ({clf._kind_}) trained for {clf.n_iter_} epoch(s) in {clf.fit_seconds_:.0f} s on "
          f"{100 * per_step:.1f} % of the samples per step; model saved to {args.out}")


def predict(args) -> None:
    import pandas as pd

    from . import LLKDClassifier

    clf = LLKDClassifier.load(args.model, device=args.device)
    frame = _read_table(args.data)
    texts = _texts(frame, args.text_column)
    proba = clf.predict_proba(texts)
    out = pd.DataFrame({"text": texts, "label": clf.classes_[proba.argmax(1)], "confidence": proba.max(1)})
    if args.output:
        if args.output.endswith(".csv"):
            out.to_csv(args.output, index=False)
        else:
            out.to_json(args.output, orient="records", lines=True)
        print(f"wrote {len(out)} predictions to {args.output}")
    else:
        out.to_json(sys.stdout, orient="records", lines=True)


def _stdout_to_devnull() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # not a real file (tests, notebooks): nothing will be flushed to it


def main(argv=None) -> int:
    from .selection import MODES

    parser = argparse.ArgumentParser(prog="llkd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="distil the packaged Gemma teacher into a MiniLM student on movie reviews")
    p.add_argument("--n-train", type=int, default=4000, help="unlabeled training reviews (default 4000)")
    p.add_argument("--n-test", type=int, default=1000, help="held-out gold test reviews (default 1000)")
    p.add_argument("--epochs", type=int, default=None,
                   help="student epochs (default 1 for the fine-tuned student: more reviews once beat "
                        "fewer reviews three times, see RESULTS.md; the estimator's default for the MLP)")
    p.add_argument("--lr", type=float, default=None,
                   help="student learning rate (default 1e-4 for the fine-tuned student, else the estimator's)")
    p.add_argument("--student", default="auto", choices=["auto", "mlp", "finetune"])
    p.add_argument("--selection", default="llkd", choices=MODES,
                   help="sample selection rule (default llkd; the others are the baselines of the benchmarks)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--home", default=str(_default_home()), help="cache directory (teacher answers, model)")
    p.add_argument("--out", default=None, help="where to save the student (default <home>/demo-model)")
    p.set_defaults(func=demo)

    p = sub.add_parser("distill", help="distil a teacher into a student on your own texts")
    p.add_argument("--data", required=True, help="a .csv, .jsonl or .parquet file")
    p.add_argument("--text-column", default="text", help="column holding the texts (default text)")
    p.add_argument("--label-column", default=None, help="optional gold labels (empty = unlabeled)")
    p.add_argument("--labels", required=True, help="comma-separated class names")
    p.add_argument("--teacher", default="gemma", help="gemma | hf:<path> | openai:<model>@<base url> (default gemma)")
    p.add_argument("--student", default="auto", choices=["auto", "mlp", "finetune"],
                   help="auto (default) fine-tunes the encoder; mlp trains a head on frozen embeddings")
    p.add_argument("--selection", default="llkd", choices=MODES,
                   help="sample selection rule (default llkd; the others are the baselines of the benchmarks)")
    p.add_argument("--encoder", default="auto",
                   help="student encoder: 'auto' (the packaged MiniLM) or a local Hugging Face model folder")
    p.add_argument("--epochs", type=int, default=None,
                   help="student epochs (default: the estimator's, 3 fine-tuning, 10 for the MLP)")
    p.add_argument("--lr", type=float, default=None, help="student learning rate (default: the estimator's)")
    p.add_argument("--cache", default=None,
                   help="SQLite file for teacher answers (default <LLKD_HOME or ~/.cache/llkd>/teacher-cache.sqlite)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="directory to save the student")
    p.set_defaults(func=distill)

    p = sub.add_parser("predict", help="label texts with a saved student")
    p.add_argument("--model", required=True, help="a directory written by distill or demo")
    p.add_argument("--data", required=True, help="a .csv, .jsonl or .parquet file")
    p.add_argument("--text-column", default="text", help="column holding the texts (default text)")
    p.add_argument("--output", default=None, help=".csv or .jsonl (default: JSON lines on stdout)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=predict)

    p = sub.add_parser("show-config", help="which selection backends are built and active")
    p.set_defaults(func=lambda a: __import__("llkd").show_config())

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except BrokenPipeError:
        # The reader went away (`llkd predict ... | head`): stop quietly, as Python's
        # documentation advises, instead of reporting an error at exit too.
        _stdout_to_devnull()
        return 1
    except (ValueError, TypeError, FileNotFoundError, OSError) as exc:
        print(f"llkd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
