"""Inference throughput of a distilled student against its teacher, on the same texts.

The student is the one ``llkd demo`` saved (``$LLKD_HOME/demo-model``; run the demo first,
or pass ``--model``), measured as a user would deploy it:

- torch: ``LLKDClassifier.load(...).predict_proba``;
- ONNX: ``export(format="onnx")`` run by ``llkd.deploy.OnnxStudent`` (onnxruntime);
- ONNX int8: the same with ``quantize=True`` (dynamic int8 weights);

each in batches of 64 and one text at a time, on ``--threads`` threads, over the demo's
1,000 held-out reviews (accuracy against their gold labels beside each). The teacher is
the packaged Gemma 3 270M labelling ``--teacher-texts`` of the same reviews in its batches
of 16 with no cache. Ratios are against the teacher's texts/s in the same run.

    python benchmarks/bench_inference.py            # prints the table
    python benchmarks/bench_inference.py --write    # and writes it into benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

try:
    from _results_md import write_section
except ImportError:  # run as python -m benchmarks.bench_inference
    from benchmarks._results_md import write_section


def demo_test_reviews(n_train=4000, n_test=1000, seed=0):
    """The held-out reviews of ``llkd demo`` (same draws, in the same order, as cli.demo)."""
    from llkd.datasets import fetch_rotten_tomatoes

    train = fetch_rotten_tomatoes(subset="train")
    test = fetch_rotten_tomatoes(subset="test")
    rng = np.random.RandomState(seed)
    rng.permutation(len(train.data))[:n_train]  # the demo draws the training reviews first
    te = rng.permutation(len(test.data))[:n_test]
    names = np.asarray(train.target_names)
    return [test.data[i] for i in te], names[test.target[te]]


def throughput(predict, texts, one_at_a_time: int, repeats: int):
    """(texts/s in batches, texts/s one at a time, predictions): best of ``repeats``."""
    predict(texts[:64])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        pred = predict(texts)
        best = min(best, time.perf_counter() - t0)
    single = texts[:one_at_a_time]
    t0 = time.perf_counter()
    for t in single:
        predict([t])
    return len(texts) / best, len(single) / (time.perf_counter() - t0), pred


def main(argv=None):
    from llkd import LLKDClassifier
    from llkd.deploy import OnnxStudent
    from llkd.teachers._cache import llkd_home

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(llkd_home() / "demo-model"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one-at-a-time", type=int, default=200, help="texts timed one by one")
    ap.add_argument("--teacher-texts", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    if not Path(args.model, "config.json").is_file():
        raise SystemExit(f"no saved student at {args.model}: run `llkd demo` first, or pass --model")
    torch.set_num_threads(args.threads)
    texts, gold = demo_test_reviews()
    load0 = os.getloadavg()[0]

    clf = LLKDClassifier.load(args.model)
    rows = []
    rate, single, pred = throughput(
        lambda t: clf.classes_[clf.predict_proba(t).argmax(1)], texts, args.one_at_a_time, args.repeats
    )
    rows.append(("student, torch (`predict_proba`)", rate, single, float(np.mean(pred == gold))))
    with tempfile.TemporaryDirectory() as tmp:
        clf.export(tmp, format="onnx", quantize=True)
        for label, quantized in [("student, ONNX (onnxruntime)", False), ("student, ONNX int8 (dynamic)", True)]:
            onnx = OnnxStudent(tmp, quantized=quantized, n_threads=args.threads)
            rate, single, pred = throughput(onnx.predict, texts, args.one_at_a_time, args.repeats)
            rows.append((label, rate, single, float(np.mean(pred == gold))))

    from llkd.teachers import TransformersTeacher

    teacher = TransformersTeacher.from_packaged_gemma(labels=list(clf.classes_))
    sample = texts[: args.teacher_texts]
    teacher.label(sample[:16])  # warm-up
    t0 = time.perf_counter()
    out = teacher.label(sample)
    teacher_rate = len(sample) / (time.perf_counter() - t0)
    teacher_acc = float(np.mean(clf.classes_[out.labels] == gold[: len(sample)]))

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    head = (
        f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} threads, torch {torch.__version__}, commit {commit}, load average before the run "
        f"{load0:.1f}, after {os.getloadavg()[0]:.1f}. Student: {args.model} "
        f"({clf.training_summary_['student'] if getattr(clf, 'training_summary_', None) else clf._kind_}); "
        f"texts: the demo's {len(texts)} held-out reviews (one-at-a-time rates over the first {args.one_at_a_time})."
    )
    lines = [
        head,
        "",
        "| model | texts/s, batches of 64 | × teacher | texts/s, one at a time | accuracy |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, rate, single, acc in rows:
        lines.append(f"| {label} | {rate:.0f} | {rate / teacher_rate:.1f} | {single:.0f} | {acc:.3f} |")
    lines.append(
        f"| teacher, Gemma 3 270M (batches of 16, no cache; {len(sample)} reviews) | {teacher_rate:.1f} | 1.0 | | "
        f"{teacher_acc:.3f} (raw) |"
    )
    body = "\n".join(lines)
    print(body)
    if args.write:
        write_section(
            "bench_inference",
            "## Inference throughput: student against teacher (`bench_inference.py`)\n\n" + body,
        )


if __name__ == "__main__":
    main()
