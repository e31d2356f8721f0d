"""The ``llkd`` command: ``demo``, ``distill``, ``predict``, ``show-config``."""

from __future__ import annotations

import argparse
import io
import json
import math
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


def _metrics(y_true, y_pred, labels=None) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
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
    quality = getattr(args, "quality", False)
    out_dir = Path(args.out) if args.out else home / ("demo-model-quality" if quality else "demo-model")

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

    budget = getattr(args, "teacher_budget", None)
    if budget is None:

        def label_all():
            tr = label_in_batches(teacher, X_train, cache=cache, progress=True)
            return tr, label_in_batches(teacher, X_test, cache=cache, progress=True)

        t_train, t_test = stages.run("teacher labelling (cached answers are reused)", label_all)
        correction = PriorCorrection().fit(t_train.proba)
        teacher_raw = _metrics(y_test, np.asarray(names)[t_test.labels])
        teacher_cal = _metrics(y_test, np.asarray(names)[correction.transform(t_test.proba).argmax(1)])
    # Under a budget the estimator asks for the training reviews itself, and the teacher is
    # scored on those it was asked (their gold labels are known here): labelling the test
    # reviews too would spend queries the budget is there to save.

    finetune = args.student != "mlp"
    clf = LLKDClassifier(
        teacher,
        student=args.student,
        encoder="mpnet" if quality else "auto",
        selection=args.selection,
        noise_correction=args.noise_correction,
        class_weight=_class_weight(args.class_weight),
        # The fine-tuned student gets one epoch at 1e-4 (benchmarks/study_demo_student.py);
        # the MLP student keeps the estimator's defaults.
        max_epochs=args.epochs if args.epochs is not None else (1 if finetune else None),
        learning_rate=args.lr if args.lr is not None else (1e-4 if finetune else None),
        teacher_cache=cache,
        teacher_budget=budget,
        acquisition=args.acquisition,
        unqueried=args.unqueried,
        random_state=args.seed,
        verbose=1,
    )
    within = " (asking the teacher within its budget)" if budget is not None else ""
    stages.run("training the student" + within, clf.fit, X_train)
    pred = stages.run("evaluating the student", clf.predict, X_test)
    student = _metrics(y_test, pred)
    stages.run("saving the student", clf.save, out_dir)

    distinct = clf.history_[-1]["distinct_selected"]
    asked = clf.teacher_labels_ >= 0
    pseudo_acc = float(np.mean(np.asarray(names)[clf.teacher_labels_[asked]] == y_train_gold[asked]))
    teacher_on = f"the {len(X_test)} test reviews"
    if budget is not None:
        asked_texts = [X_train[i] for i in np.flatnonzero(asked)]
        raw = label_in_batches(teacher, asked_texts, cache=cache)  # every answer is in the cache
        teacher_raw = _metrics(y_train_gold[asked], np.asarray(names)[raw.labels])
        teacher_cal = _metrics(y_train_gold[asked], np.asarray(names)[clf.teacher_labels_[asked]])
        teacher_on = f"the {int(asked.sum())} training reviews it was asked"
    report = {
        "n_train_unlabeled": len(X_train),
        "n_test": len(X_test),
        "teacher_raw": teacher_raw,
        "teacher_calibrated": teacher_cal,
        "teacher_scored_on": "test" if budget is None else "asked_train",
        "pseudo_label_accuracy_train": pseudo_acc,
        "teacher_budget": budget,
        "teacher_labelled_train": int(asked.sum()),
        "student": student,
        "selected_per_step_fraction": _selected_per_step(clf.history_),
        "distinct_selected_fraction": distinct / len(X_train),
        "seconds": stages.times,
        "model_dir": str(out_dir),
    }
    print()
    print("=" * 66)
    print(f"teacher scored on {teacher_on}, the student on the {len(X_test)} test reviews")
    print(
        f"teacher (Gemma 3 270M), raw        accuracy {teacher_raw['accuracy']:.3f}  "
        f"macro-F1 {teacher_raw['macro_f1']:.3f}"
    )
    print(
        f"teacher, calibrated (prior)        accuracy {teacher_cal['accuracy']:.3f}  "
        f"macro-F1 {teacher_cal['macro_f1']:.3f}"
    )
    name = "mpnet" if clf.encoder == "mpnet" else "MiniLM"
    kind = f"fine-tuned {name}" if clf._kind_ == "finetune" else f"MLP, frozen {name}"
    print(
        f"student ({kind + ', ' + clf.selector_.mode + ')':<24s}  accuracy {student['accuracy']:.3f}  "
        f"macro-F1 {student['macro_f1']:.3f}"
    )
    if budget is not None:
        print(
            f"teacher budget {budget}: the teacher labelled {int(asked.sum())} of the {len(X_train)} training "
            f"reviews ({clf.training_summary_['acquisition']} acquisition)"
            + (f", {clf.n_student_labelled_} more labelled by the student" if clf.n_student_labelled_ else "")
        )
    print(
        f"student trained on {100 * report['selected_per_step_fraction']:.1f} % of the samples per step; "
        f"{100 * report['distinct_selected_fraction']:.1f} % of the reviews were ever selected"
    )
    print("time per stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in stages.times.items()))
    print(f"total {sum(stages.times.values()):.0f} s; model saved to {out_dir}")
    print(f"(load it with llkd.LLKDClassifier.load({str(out_dir)!r}))")
    (home / "demo-report.json").write_text(json.dumps(report, indent=1))
    return report


# --------------------------------------------------------------- distill/predict
class Table:
    """Rows of a data file, read with the standard library (pandas is not needed).

    ``rows`` are dicts (column -> value); ``lines`` the line of the file each row starts on.
    """

    def __init__(self, path: str, columns: list, rows: list, lines: list):
        self.path, self.columns, self.rows, self.lines = path, columns, rows, lines

    def column(self, name: str, option: str) -> list:
        if name not in self.columns:
            raise ValueError(f"{option} {name!r} is not a column of {self.path}; columns: {self.columns}")
        return [row.get(name) for row in self.rows]

    def texts(self, name: str, option: str = "--text-column") -> list[str]:
        out = []
        empty = []
        for value, line in zip(self.column(name, option), self.lines):
            if value is None or value == "":
                empty.append(line)
            elif isinstance(value, str):
                out.append(value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append(str(value))
            else:
                raise ValueError(
                    f"{self.path} line {line}: {option} {name!r} holds a {type(value).__name__}, not a text"
                )
        if empty:
            raise ValueError(
                f"{option} {name!r} is empty on {len(empty)} row(s) of {self.path} (first on line {empty[0]})"
            )
        return out


def _read_table(path: str) -> Table:
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson", ".parquet"):
        raise ValueError(f"--data must be a .csv, .jsonl or .parquet file, got {path!r}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"--data {path!r}: no such file")
    if suffix == ".parquet":
        table = _read_parquet(path)
    else:
        try:
            table = _read_csv(path) if suffix == ".csv" else _read_jsonl(path)
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not UTF-8 text ({_first_bad_byte(path)})") from None
    if not table.rows:
        raise ValueError(f"{path} has no data rows" + (" (only a header)" if table.columns else ""))
    return table


def _first_bad_byte(path: str) -> str:
    """Where the first byte that is not UTF-8 is: its offset in the file and its line."""
    data = Path(path).read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return f"byte {exc.start}, line {line}"
    return "a byte that is not UTF-8"


def _read_csv(path: str) -> Table:
    import csv

    rows, lines = [], []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        line = 2
        try:
            for row in reader:
                if None in row:  # more fields than the header: a text cut at an unquoted comma
                    raise ValueError(
                        f"{path} line {line}: {len(columns) + len(row[None])} fields, more than the header's "
                        f"{len(columns)} (quote a text that holds a comma)"
                    )
                rows.append(row)
                lines.append(line)
                line = reader.line_num + 1
        except csv.Error as exc:
            raise ValueError(f"{path} line {reader.line_num}: not valid CSV ({exc})") from None
    return Table(path, columns, rows, lines)


class _NotJSON(ValueError):
    pass


def _not_json(name: str):
    raise _NotJSON(name)  # NaN, Infinity: Python's json reads them, JSON has no such values


def _read_jsonl(path: str) -> Table:
    rows, lines, columns = [], [], {}
    with open(path, encoding="utf-8-sig") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text, parse_constant=_not_json)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} line {number}: not valid JSON ({exc.msg}, column {exc.colno})") from None
            except _NotJSON as exc:
                raise ValueError(f"{path} line {number}: not valid JSON ({exc} is not a JSON value)") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path} line {number}: expected a JSON object, got {type(row).__name__}")  # noqa: TRY004
            rows.append(row)
            lines.append(number)
            columns.update(dict.fromkeys(row))
    return Table(path, list(columns), rows, lines)


def _read_parquet(path: str) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"reading {path}: .parquet files need pyarrow (pip install 'llkd[parquet]')") from None
    data = pq.read_table(path)
    rows = data.to_pylist()
    return Table(path, list(data.column_names), rows, list(range(1, len(rows) + 1)))


def _make_teacher(spec: str, labels: list[str]):
    from . import teachers

    if spec == "gemma":
        return teachers.TransformersTeacher.from_packaged_gemma(labels=labels)
    if spec.startswith("hf:"):
        return teachers.TransformersTeacher(spec[3:], labels=labels)
    if spec.startswith("openai:"):
        OpenAITeacher = teachers.OpenAITeacher
        rest = spec[len("openai:") :]
        model, _, base_url = rest.partition("@")
        return OpenAITeacher(model=model, labels=labels, base_url=base_url or "https://api.openai.com/v1")
    raise ValueError(f"--teacher {spec!r}: use 'gemma', 'hf:<path or model>', or 'openai:<model>@<base url>'")


def _selected_per_step(history) -> float:
    """Samples trained on per step, over all epochs, as a fraction of what "all" uses."""
    return sum(h["n_selected"] for h in history) / max(1, sum(h["n_backprop_all"] for h in history))


def _gold_labels(table: Table, column: str, labels: list[str]) -> list:
    """Gold label per row (None where empty), each one of ``labels``."""
    gold = []
    for value, line in zip(table.column(column, "--label-column"), table.lines):
        if value is None or value == "":
            gold.append(None)
            continue
        value = str(value)
        if value not in labels:
            raise ValueError(
                f"{table.path} line {line}: --label-column {column!r} is {value!r}, which is not one of "
                f"--labels {labels}"
            )
        gold.append(value)
    return gold


def _evaluate(y_true, y_pred, labels) -> dict:
    from sklearn.metrics import confusion_matrix

    out = _metrics(y_true, y_pred, labels)
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return out


def _print_confusion(name: str, matrix, labels) -> None:
    width = max(8, *(len(c) for c in labels)) + 2
    print(f"confusion matrix, {name} (rows: gold label, columns: predicted):")
    print(" " * width + "".join(f"{c:>{width}}" for c in labels))
    for c, row in zip(labels, matrix):
        print(f"{c:>{width}}" + "".join(f"{n:>{width}d}" for n in row))


def _answered_already(teacher, texts: list[str], labels: list[str], cache) -> list[int]:
    """Indices of ``texts`` whose teacher answers are remembered or cached: free to read."""
    from ._targets import memory_for
    from .teachers._base import identity_key
    from .teachers._batching import open_cache

    memory = memory_for(teacher, labels) or {}
    free = {i for i, t in enumerate(texts) if t in memory}
    store = open_cache(cache)
    key = identity_key(getattr(teacher, "identity", None), labels) if store is not None else None
    if key is not None:
        free |= set(store.get(key, texts, len(labels)))
    return sorted(free)


def evaluate_on_gold(clf, teacher, texts, gold, labels, *, cache, held_out: bool, out_dir, budget=None) -> dict:
    """Teacher (raw answers) and student against the gold rows; printed and written to
    ``out_dir/evaluation.json``. Under a teacher ``budget`` the teacher is scored only on the
    gold rows it has answered already: asking about the others would spend beyond the budget."""
    from .teachers import label_in_batches

    texts_gold = [t for t, g in zip(texts, gold) if g is not None]
    y_gold = [g for g in gold if g is not None]
    scored = list(range(len(texts_gold))) if budget is None else _answered_already(teacher, texts_gold, labels, cache)
    teacher_report = None
    if scored:
        answers = label_in_batches(teacher, [texts_gold[i] for i in scored], cache=cache)
        teacher_pred = [labels[i] for i in answers.labels]
        teacher_report = _evaluate([y_gold[i] for i in scored], teacher_pred, labels)
    student_pred = [str(c) for c in clf.predict(texts_gold)]
    report = {
        "n_gold": len(y_gold),
        "gold_used_for_training": not held_out,
        "classes": labels,
        "teacher": teacher_report,
        "teacher_n_gold": len(scored),
        "student": _evaluate(y_gold, student_pred, labels),
    }
    where = (
        "held out from training"
        if held_out
        else "also used for training, so the student's numbers are on rows it trained on; "
        "--hold-out-gold keeps them out"
    )
    print(f"evaluation on {len(y_gold)} gold rows ({where}):")
    scored_names = [name for name in ("teacher", "student") if report[name] is not None]
    for name in scored_names:
        m = report[name]
        on = f" (on the {len(scored)} gold rows it had answered)" if name == "teacher" and budget is not None else ""
        print(f"  {name:<8s} accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}{on}")
    if teacher_report is None:
        print(
            f"  teacher  not scored: under --teacher-budget, asking it about the {len(y_gold)} gold rows "
            "would cost queries beyond the budget"
        )
    for name in scored_names:
        _print_confusion(name, report[name]["confusion_matrix"], labels)
    path = Path(out_dir) / "evaluation.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"evaluation report written to {path}")
    return report


_BUDGET_HELP = (
    "ask the teacher about at most this many distinct texts (an int) or this fraction of them "
    "(a number in (0, 1]), chosen by --acquisition (default: all)"
)


def _add_budget_options(p) -> None:
    """--teacher-budget, --acquisition and --unqueried, shared by demo and distill."""
    from ._unqueried import UNQUERIED
    from .selection._acquisition import ACQUISITIONS

    p.add_argument("--teacher-budget", type=_budget, default=None, help=_BUDGET_HELP)
    p.add_argument(
        "--acquisition",
        default="auto",
        choices=["auto", *ACQUISITIONS],
        help="under a budget, how to choose what to ask: uniform draws (random), in one round, or in rounds "
        "by the student's uncertainty, margin, uncertainty across k-means clusters (diverse) or a sample "
        "in proportion to the uncertainty (power); default auto: margin with the MLP student, random with "
        "the fine-tuned one",
    )
    p.add_argument(
        "--unqueried",
        default="auto",
        choices=list(UNQUERIED),
        help="under a budget, what the student learns from the texts never asked about: 'student' labels them "
        "with a first student and trains a second on everything; 'ignore' leaves them out (default auto: student "
        "with the MLP student, ignore with the fine-tuned one)",
    )


def _budget(value: str):
    """--teacher-budget: an int (queries) or a fraction in (0, 1]."""
    import argparse

    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of queries or a fraction, got {value!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a number of queries or a fraction, got {value!r}")
    if number.is_integer() and (number > 1 or "." not in value and "e" not in value.lower()):
        return int(number)  # 1e3 is 1000 queries; 1 is one query and 1.0 the whole pool
    return number


def distill(args) -> None:
    import numpy as np

    from . import LLKDClassifier

    labels = [s.strip() for s in args.labels.split(",") if s.strip()]
    if len(labels) < 2:
        raise ValueError("--labels needs at least two comma-separated class names")
    if len(set(labels)) != len(labels):
        raise ValueError(f"--labels must be distinct, got {labels}")
    table = _read_table(args.data)
    texts = table.texts(args.text_column)
    gold = _gold_labels(table, args.label_column, labels) if args.label_column else None
    if args.hold_out_gold and gold is None:
        raise ValueError("--hold-out-gold needs --label-column")
    train_texts, y = texts, gold
    if args.hold_out_gold:
        # held out by text: an unlabeled repeat of a gold text would train on it
        gold_texts = {t for t, g in zip(texts, gold) if g is not None}
        train_texts = [t for t, g in zip(texts, gold) if g is None and t not in gold_texts]
        repeats = sum(1 for t, g in zip(texts, gold) if g is None and t in gold_texts)
        if repeats:
            print(f"--hold-out-gold: {repeats} unlabeled row(s) repeat a gold text and are held out too")
        y = None
        if not train_texts:
            raise ValueError(f"--hold-out-gold: every row of {args.data} has a gold label; none is left to train on")
    elif gold is not None and all(g is None for g in gold):
        y = None
    _check_writable_dir(args.out, "--out")  # before anything is paid for
    if args.cache:
        _check_writable_dir(str(Path(args.cache).parent), "--cache's folder")
    teacher = _make_teacher(args.teacher, labels)
    cache = args.cache or str(_default_home() / "teacher-cache.sqlite")
    clf = LLKDClassifier(
        teacher,
        student=args.student,
        encoder=args.encoder,
        selection=args.selection,
        noise_correction=args.noise_correction,
        class_weight=_class_weight(args.class_weight),
        encoder_layers=args.encoder_layers,
        max_epochs=args.epochs,
        learning_rate=args.lr,
        teacher_cache=cache,
        teacher_budget=args.teacher_budget,
        acquisition=args.acquisition,
        unqueried=args.unqueried,
        random_state=args.seed,
        verbose=1,
    )
    clf.fit(train_texts, y)
    clf.save(args.out)
    per_step = _selected_per_step(clf.history_)
    counts = np.bincount(clf.teacher_labels_[clf.teacher_labels_ >= 0], minlength=len(labels))
    print(
        f"{len(train_texts)} texts, {clf.n_teacher_queries_} new teacher answers (the others reused; cache {cache}); "
        f"labels: " + ", ".join(f"{c} {n}" for c, n in zip(clf.classes_, counts))
    )
    shares = clf.calibration_shares_
    if shares is not None:
        raw = ", ".join(f"{k} {v:.2f}" for k, v in shares["raw"].items())
        cal = ", ".join(f"{k} {v:.2f}" for k, v in shares["corrected"].items())
        how = clf.calibration
        if "decision" in shares:
            how += f": {shares['decision']['choice']}, by {shares['decision']['by'].replace('_', ' ')}"
        print(f"teacher class shares: raw {raw}; after calibration ({how}) {cal}")
    print(
        f"student ({clf._kind_}) trained for {clf.n_iter_} epoch(s) in {clf.fit_seconds_:.0f} s on "
        f"{100 * per_step:.1f} % of the samples per step; model saved to {args.out}"
    )
    stale = Path(args.out) / "evaluation.json"
    if stale.exists():
        stale.unlink()  # a previous model's report must not sit beside this one
    if gold is not None and any(g is not None for g in gold):
        evaluate_on_gold(
            clf,
            teacher,
            texts,
            gold,
            labels,
            cache=cache,
            held_out=args.hold_out_gold,
            out_dir=args.out,
            budget=args.teacher_budget,
        )


def _check_writable_dir(path: str, option: str) -> None:
    """``path`` is a folder, or can be made one: no file in the way, its nearest existing folder writable."""
    p = Path(path).expanduser().absolute()
    for ancestor in (p, *p.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                what = "is a file" if ancestor == p else f"is under {ancestor}, a file"
                raise ValueError(f"{option} {path!r} {what}, not a folder")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise PermissionError(f"{option} {path!r}: {ancestor} is not writable")
            return


def _output_suffix(output):
    """--output's suffix, lower case (None: stdout); refused unless .csv or .jsonl."""
    suffix = Path(output).suffix.lower() if output is not None else None
    if suffix not in (None, ".csv", ".jsonl", ".ndjson"):
        raise ValueError(f"--output {output!r}: write .csv or .jsonl (got {suffix or 'no suffix'})")
    return suffix


def _write_predictions(rows: list[dict], output) -> None:
    import csv

    if _output_suffix(output) == ".csv":
        with open(output, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "label", "confidence"])
            writer.writeheader()
            writer.writerows(rows)
        return
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if output is None:
        sys.stdout.write(lines)
        sys.stdout.flush()
    else:
        Path(output).write_text(lines, encoding="utf-8")


def predict(args) -> None:
    import numpy as np

    from . import LLKDClassifier

    _output_suffix(args.output)  # before the model is loaded and run
    clf = LLKDClassifier.load(args.model, device=args.device, encoder=args.encoder)
    texts = _read_table(args.data).texts(args.text_column)
    proba = clf.predict_proba(texts)
    labels = clf.classes_[proba.argmax(1)]
    rows = [
        {"text": t, "label": lab.item() if isinstance(lab, np.generic) else lab, "confidence": float(c)}
        for t, lab, c in zip(texts, labels, proba.max(1))
    ]
    _write_predictions(rows, args.output)
    if args.output:
        print(f"wrote {len(rows)} predictions to {args.output}")


def export(args) -> None:
    from . import LLKDClassifier

    clf = LLKDClassifier.load(args.model, encoder=args.encoder)
    metrics = None
    if args.metrics:
        try:
            metrics = json.loads(Path(args.metrics).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"--metrics {args.metrics!r}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    out = clf.export(args.out, format=args.format, quantize=args.quantize, metrics=metrics)
    print(f"wrote a {args.format} export of {args.model} to {out} (model card: {Path(out) / 'README.md'})")


def _stdout_to_devnull() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # not a real file (tests, notebooks): nothing will be flushed to it


def _class_weight(value: str):
    return None if value == "none" else value


def _add_loss_options(p) -> None:
    """--selection, --noise-correction and --class-weight, shared by ``demo`` and ``distill``."""
    from ._class_weight import CLASS_WEIGHTS
    from ._label_noise import NOISE_CORRECTIONS
    from .selection import MODES

    p.add_argument(
        "--selection",
        default="auto",
        choices=("auto", *MODES),
        help="sample selection rule (default auto: confidence for the MLP student, all when fine-tuning)",
    )
    p.add_argument(
        "--noise-correction",
        default="auto",
        choices=NOISE_CORRECTIONS,
        help="loss on the teacher's labels: forward (a noise-corrected loss from half-way through training), "
        "none, or auto (forward with the confidence selection)",
    )
    p.add_argument(
        "--class-weight",
        default="auto",
        choices=(*CLASS_WEIGHTS, "none"),
        help="loss weights per label class against a teacher's class bias: balanced (n / (C n_k)), "
        "sqrt_balanced (its square root), none, or auto (sqrt_balanced with the confidence selection)",
    )


def main(argv=None) -> int:
    from . import __version__

    parser = argparse.ArgumentParser(prog="llkd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"llkd {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "demo", parents=[common], help="distil the packaged Gemma teacher into a MiniLM student on movie reviews"
    )
    p.add_argument("--n-train", type=int, default=4000, help="unlabeled training reviews (default 4000)")
    p.add_argument("--n-test", type=int, default=1000, help="held-out gold test reviews (default 1000)")
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="student epochs (default 1 for the fine-tuned student: more reviews once beat "
        "fewer reviews three times, see RESULTS.md; the estimator's default for the MLP)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="student learning rate (default 1e-4 for the fine-tuned student, else the estimator's)",
    )
    p.add_argument("--student", default="auto", choices=["auto", "mlp", "finetune"])
    p.add_argument(
        "--quality",
        action="store_true",
        help="the packaged all-mpnet-base-v2 student instead of MiniLM: several times the compute, and on the "
        "demo's reviews it reached its teacher (benchmarks/RESULTS.md, demo_quality); fetches ~400 MB of model "
        "parts once",
    )
    _add_loss_options(p)
    _add_budget_options(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--home", default=str(_default_home()), help="cache directory (teacher answers, model)")
    p.add_argument("--out", default=None, help="where to save the student (default <home>/demo-model)")
    p.set_defaults(func=demo)

    p = sub.add_parser("distill", parents=[common], help="distil a teacher into a student on your own texts")
    p.add_argument("--data", required=True, help="a .csv, .jsonl or .parquet file")
    p.add_argument("--text-column", default="text", help="column holding the texts (default text)")
    p.add_argument(
        "--label-column",
        default=None,
        help="optional gold labels (empty = unlabeled): they train the student, and teacher and "
        "student are evaluated against them (printed, and <out>/evaluation.json); under "
        "--teacher-budget the teacher only on the gold rows it has answered already",
    )
    p.add_argument(
        "--hold-out-gold",
        action="store_true",
        help="with --label-column: keep the gold rows out of training and only evaluate on them",
    )
    p.add_argument("--labels", required=True, help="comma-separated class names")
    p.add_argument("--teacher", default="gemma", help="gemma | hf:<path> | openai:<model>@<base url> (default gemma)")
    p.add_argument(
        "--student",
        default="auto",
        choices=["auto", "mlp", "finetune"],
        help="auto (default) fine-tunes the encoder; mlp trains a head on frozen embeddings",
    )
    _add_loss_options(p)
    p.add_argument(
        "--encoder",
        default="auto",
        help=(
            "student encoder: 'auto' (the packaged MiniLM), 'mpnet' (the packaged all-mpnet-base-v2) "
            "or a local Hugging Face model folder"
        ),
    )
    p.add_argument(
        "--encoder-layers",
        type=int,
        default=None,
        help="fine-tune only the first K layers of the encoder: a smaller, faster student (default: all)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="student epochs (default: the estimator's, 3 fine-tuning, 10 for the MLP)",
    )
    p.add_argument("--lr", type=float, default=None, help="student learning rate (default: the estimator's)")
    p.add_argument(
        "--cache",
        default=None,
        help="SQLite file for teacher answers (default <LLKD_HOME or ~/.cache/llkd>/teacher-cache.sqlite)",
    )
    _add_budget_options(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="directory to save the student")
    p.set_defaults(func=distill)

    p = sub.add_parser("predict", parents=[common], help="label texts with a saved student")
    p.add_argument("--model", required=True, help="a directory written by distill or demo")
    p.add_argument("--data", required=True, help="a .csv, .jsonl or .parquet file")
    p.add_argument("--text-column", default="text", help="column holding the texts (default text)")
    p.add_argument("--output", default=None, help=".csv or .jsonl (default: JSON lines on stdout)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--encoder",
        default=None,
        help="a frozen encoder to use instead of the saved one (a local folder); required for a model "
        "fitted with a custom encoder object, which is not saved",
    )
    p.set_defaults(func=predict)

    p = sub.add_parser(
        "export", parents=[common], help="write a saved student for transformers (hf) or onnxruntime (onnx)"
    )
    p.add_argument("--model", required=True, help="a directory written by distill or demo")
    p.add_argument("--out", required=True, help="the directory to write")
    p.add_argument("--format", choices=["hf", "onnx"], default="hf")
    p.add_argument("--quantize", action="store_true", help="onnx: also write a dynamic int8 model")
    p.add_argument("--metrics", default=None, help="a JSON file of held-out metrics for the model card")
    p.add_argument("--encoder", default=None, help="as for predict")
    p.set_defaults(func=export)

    p = sub.add_parser("show-config", parents=[common], help="which selection backends are built and active")
    p.set_defaults(func=lambda a: __import__("llkd").show_config())

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except BrokenPipeError:
        # The reader went away (`llkd predict ... | head`): stop quietly, as Python's
        # documentation advises, instead of reporting an error at exit too.
        _stdout_to_devnull()
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"llkd {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for any failure; --debug re-raises
        if args.debug:
            raise
        print(f"llkd {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, _USER_ERRORS) else 1
    return 0


# Errors in what the user passed: the message alone says it (exit status 2, as argparse).
_USER_ERRORS = (
    ValueError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    PermissionError,
    IsADirectoryError,
)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    if isinstance(exc, _USER_ERRORS):
        return text
    return f"{type(exc).__name__}: {text} (--debug shows the traceback)"


if __name__ == "__main__":
    raise SystemExit(main())
