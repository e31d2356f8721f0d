"""Write experiments/selection_rules/RESULTS.md from the cached fits (no fits):
.cache/runs-<calibration>.jsonl (run.py), .cache/finetune.jsonl (finetune.py) and
.cache/repro-*.json (repro.py). The summary is also written into benchmarks/RESULTS.md, as
its section "Selection rules (issue 13)" (between the selection_rules markers)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run

SETTING_TITLES = {
    "rt_gemma": "Rotten Tomatoes, packaged Gemma teacher (good teacher; the reviews it has answered)",
    "rt_tfidf": "Rotten Tomatoes, TF-IDF teacher",
    "20ng": "20 Newsgroups, TF-IDF teacher",
    "r8": "Reuters R8, TF-IDF teacher",
    "r52": "Reuters R52, TF-IDF teacher",
}
MASK_RULES = {
    "llkd",
    "random@llkd",
    "fixed@median",
    "teacher-only",
    "(a2) class keep-rate = class mean conf (pool)",
    "cleanlab(cv LR probs)",
    "cleanlab(teacher probs)",
    "(a) c >= m_T[y] (class mean, no norm.)",
    "(a') c >= g_T (global running mean)",
    "(a)+soft targets",
    "teacher-only, w = s",
    "(a) class mean, product weights",
    "(a4) c >= max(m_T[y], g_T)",
    "(a5) c >= min(m_T[y], g_T)",
    "llkd, raw class-mean teacher test",
    "llkd raw, w = s",
    "random@(a)",
    "random@(a')",
}
# The rows of the summary table, in this order (the library's names where it has the rule).
SUMMARY = [
    ("gold", "gold labels (bound)"),
    ("gold, class weights^0.5", 'gold labels, `class_weight="sqrt_balanced"`'),
    (
        "(h) (f5) + class weights^0.5",
        '**`confidence` + `noise_correction="forward"` + `class_weight="sqrt_balanced"` (the MLP default)**',
    ),
    (
        "(f5) SLaM a=rank, excess weights, from epoch 5",
        '`confidence` + `noise_correction="forward"`, `class_weight=None` (the previous default)',
    ),
    ("(c*) w = (C c - 1) / (C - 1)", '`confidence`, `noise_correction="none"` (the default before)'),
    ("(h) (f5) + class weights^1.0", '`confidence` + forward + `class_weight="balanced"`'),
    ("(h) (f5) + class weights^0.25", "`confidence` + forward + class weights (n / (C n_k))^0.25"),
    (
        "(h) (f5) + class weights^0.5 (soft prior)",
        "`confidence` + forward + class weights^0.5 from the teacher's mean probabilities",
    ),
    ("(i) (f5) + logit adjustment tau=0.5", "`confidence` + forward + logit adjustment, tau 0.5"),
    ("(i) (f5) + logit adjustment tau=1.0", "`confidence` + forward + logit adjustment, tau 1"),
    (
        "(j) (f5) + class weights^0.5 + logit adjustment 0.5",
        "`confidence` + forward + class weights^0.5 + logit adjustment 0.5",
    ),
    ("llkd", "`llkd` (the paper's rule, old default)"),
    ("(a) c >= m_T[y] (class mean, no norm.)", "`class_mean` (new)"),
    ("teacher-only", "`teacher`"),
    ("teacher-only, w = s", '`teacher`, weighting `"none"`'),
    ("(c) w = c", "weight c (normalised)"),
    ("(c') w = c^2", "weight c^2 (normalised)"),
    ("(b) SoftMatch global", "SoftMatch weights (global)"),
    ("(b') SoftMatch per class", "SoftMatch weights (per class)"),
    ("soft targets", "soft targets (T = 1)"),
    ("fixed@median", "`fixed` at the median confidence"),
    ("(a') c >= g_T (global running mean)", "c >= g_T (global running mean)"),
    ("(a4) c >= max(m_T[y], g_T)", "c >= max(m_T[y], g_T)"),
    ("(a5) c >= min(m_T[y], g_T)", "c >= min(m_T[y], g_T)"),
    ("(a2) class keep-rate = class mean conf (pool)", "class keep-rate = class mean conf (pool)"),
    ("random@llkd", "`random` at llkd's rate"),
    ("random@(a)", "`random` at class_mean's rate"),
    ("cleanlab(teacher probs)", "cleanlab on the teacher's probabilities"),
    ("cleanlab(cv LR probs)", "cleanlab on cross-validated LR probabilities"),
    ("self-training", "self-training (sklearn, LR on the embeddings)"),
    ("(f) SLaM a=c", "forward correction with a = c, weight 1, from the start"),
    ("(f') SLaM a=c, excess weights", "forward correction with a = c, `confidence` weights, from the start"),
    ("(f3) SLaM a=c, excess weights, from epoch 5", "forward correction with a = c, `confidence` weights, half-way"),
    ("(f4) SLaM a=rank, excess weights", "forward correction with a = rank, `confidence` weights, from the start"),
    ("(g') EMA relabel, p_T*Q soft", "re-labelling: soft target ∝ p_T × running student prediction"),
    ("(g) EMA relabel, p_T*Q hard", "re-labelling: hard target argmax p_T × running student prediction"),
]
NOISY = ["rt_tfidf", "20ng", "r8", "r52"]


def backprop(row):
    m = row["method"]
    if m == "self-training":
        return "—"
    u = float(np.mean(row["used"]))
    if m in MASK_RULES:
        v = u
    elif m.startswith("(e"):
        v = (u if "agreement" in m else 1.0) + 1.0  # + the two half-pool fits
    else:
        v = 1.0
    return f"{100 * v:.0f} %"


def machine():
    cpu = platform.processor() or "CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import torch

    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}"


def table(rows, key):
    base = np.array(rows["all"]["f1"]) if "all" in rows else None
    gold = np.array(rows["gold"]["f1"]) if "gold" in rows else None
    out = [
        "| method | macro-F1 (5 seeds) | Δ vs all, points (seeds > 0) | accuracy | used per step | back-prop vs all "
        "| wall s (5 seeds) |",
        "|---|---|---|---|---|---|---|",
    ]
    t = next(iter(rows.values()))["teacher"]
    if np.isnan(t["teacher_test_f1"]):
        out.append(
            f"| teacher (no answers on the test texts; pool macro-F1 {t['teacher_pool_f1']:.3f}) | n/a | — | — | — | — | — |"
        )
    else:
        out.append(
            f"| teacher (its own test predictions) | {t['teacher_test_f1']:.3f} | "
            + (f"{100 * (t['teacher_test_f1'] - base.mean()):+.2f} |" if base is not None else "— |")
            + " — | — | — | — |"
        )
    for name in run.ORDER + [m for m in rows if m not in run.ORDER]:
        if name not in rows:
            continue
        r = rows[name]
        f1 = np.array(r["f1"])
        d = (
            f"{100 * (f1 - base).mean():+.2f} ({int(((f1 - base) > 0).sum())}/5)"
            if base is not None and name != "all"
            else "—"
        )
        if r.get("deterministic"):
            d = f"{100 * (f1 - base).mean():+.2f} (deterministic)" if base is not None else "—"
        extra = f", kept {100 * r['kept']:.0f} %" if "kept" in r else ""
        if "kept_precision" in r:
            extra += f" at precision {r['kept_precision']:.3f}"
        out.append(
            f"| {name} | {f1.mean():.3f} ± {f1.std():.3f} | {d} | {np.mean(r['acc']):.3f} | "
            f"{100 * np.mean(r['used']):.0f} %{extra} | "
            f"{backprop(r)} | {r['wall']:.0f} |"
        )
    return out, base, gold


def _delta(rows, m, base):
    f1 = np.array(rows[m]["f1"])
    return 100 * (f1 - base).mean(), int(((f1 - base) > 0).sum())


def summary_section(by, header):
    """The cross-setting table of benchmarks/RESULTS.md (Δ vs all, 5 seeds, MLP)."""
    keys = [k for k in NOISY + ["rt_gemma"] if k in by]
    out = list(header) + [
        "",
        "| setting | pool | classes | teacher pool accuracy (confident half / other half) | teacher test macro-F1 | `all` | gold | gold − all |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k in keys:
        rows = by[k]
        t = next(iter(rows.values()))["teacher"]
        a, g = np.array(rows["all"]["f1"]), np.array(rows["gold"]["f1"])
        tt = "n/a (no test answers)" if np.isnan(t["teacher_test_f1"]) else f"{t['teacher_test_f1']:.3f}"
        out.append(
            f"| {SETTING_TITLES[k].split(' (')[0]} | {t['n']} | {t['C']} | {t['pool_acc']:.3f} "
            f"({t['top_half']:.3f} / {t['bottom_half']:.3f}) | {tt} | {a.mean():.3f} | {g.mean():.3f} | "
            f"{100 * (g.mean() - a.mean()):+.2f} |"
        )
    out += [
        "",
        "Δ vs `all` in macro-F1 points, mean of the 5 paired seeds (seeds on which it is positive); "
        "*target* = Δ ≥ +1 on ≥ 4/5 seeds; *worst* over all five settings; *back-prop* = rows "
        "back-propagated relative to `all`, mean over the settings run.",
        "",
        "| method | " + " | ".join(keys) + " | noisy settings at target | worst Δ | back-prop vs all |",
        "|---|" + "---|" * (len(keys) + 3),
    ]
    cells = []
    for k in keys:
        t = next(iter(by[k].values()))["teacher"]
        a = np.array(by[k]["all"]["f1"])
        cells.append(
            "n/a" if np.isnan(t["teacher_test_f1"]) else f"{100 * (t['teacher_test_f1'] - a.mean()):+.2f} (det.)"
        )
    out.append("| the teacher itself (its test predictions) | " + " | ".join(cells) + " | — | — | — |")
    for m, label in SUMMARY:
        cells, wins, worst, n_noisy, bp = [], 0, np.inf, 0, []
        for k in keys:
            rows = by[k]
            if m not in rows:
                cells.append("—")
                continue
            d, n = _delta(rows, m, np.array(rows["all"]["f1"]))
            det = rows[m].get("deterministic")
            cells.append(f"{d:+.2f} ({'det.' if det else f'{n}/5'})")
            worst = min(worst, d)
            if k in NOISY:
                n_noisy += 1
                wins += bool(d >= 1.0 and (n >= 4 or det))
            b = backprop(rows[m])
            if b != "—":
                bp.append(float(b.split()[0]))
        bps = f"{np.mean(bp):.0f} %" if bp else "—"
        out.append(f"| {label} | " + " | ".join(cells) + f" | {wins} of {n_noisy} | {worst:+.2f} | {bps} |")
    return out


def finetune_section():
    path = HERE / ".cache" / "finetune.jsonl"
    if not path.exists():
        return []
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            rows.setdefault((r["setting"], r["pool"]), {}).setdefault(r["method"], {})[r["seed"]] = r
    out = [
        "### Fine-tuned MiniLM student (`finetune.py`, through `LLKDClassifier`)",
        "",
        '`LLKDClassifier(student="finetune", selection=..., random_state=seed)` with the library defaults '
        '(3 epochs, AdamW 5e-5, linear schedule, batch 32, `calibration="auto"`) on the first *pool* texts '
        "of a fixed permutation of the training pool, the same teacher answers for every method; macro-F1 on "
        "the 2,000 test texts. Δ is paired by seed against `all`.",
        "",
        "| setting | pool, tokens | method | macro-F1 (seeds) | Δ vs all (seeds > 0) | fraction with weight > 0 | rows back-propagated | wall s per fit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = [
        "all",
        "confidence",
        "confidence+forward",
        "confidence+forward+cw",
        "all+forward",
        "all+cw",
        "llkd",
        "teacher",
        "class_mean",
        "gold",
    ]
    for (setting, pool), by_m in rows.items():
        if len(by_m) < 2:  # an abandoned run (RT at 2,000 texts: one fit in 6 minutes)
            continue
        base = by_m.get("all", {})
        for m in order:
            if m not in by_m:
                continue
            seeds = sorted(by_m[m])
            f1 = np.array([by_m[m][s]["f1"] for s in seeds])
            common = [s for s in seeds if s in base]
            if m != "all" and common:
                d = np.array([by_m[m][s]["f1"] - base[s]["f1"] for s in common])
                ds = f"{100 * d.mean():+.2f} ({int((d > 0).sum())}/{len(d)})"
            else:
                ds = "—"
            r0 = by_m[m][seeds[0]]
            out.append(
                f"| {SETTING_TITLES[setting].split(',')[0]}, {SETTING_TITLES[setting].split(', ')[1].split(' (')[0]} "
                f"| {pool}, {r0['max_length']} | {m} | {f1.mean():.3f} ± {f1.std():.3f} ({len(seeds)}) | {ds} | "
                f"{np.mean([by_m[m][s]['selected_fraction'] for s in seeds]):.2f} | "
                f"{np.mean([by_m[m][s]['n_backprop'] for s in seeds]):.0f} | "
                f"{np.mean([by_m[m][s]['wall'] for s in seeds]):.0f} |"
            )
    kept = [by_m for by_m in rows.values() if len(by_m) >= 2]
    dates = sorted(r["date"] for by_m in kept for per in by_m.values() for r in per.values())
    loads = [r["load"] for by_m in kept for per in by_m.values() for r in per.values()]
    out += [
        "",
        f"Fits {dates[0]} to {dates[-1]}; 1-min load average {min(loads):.1f}-{max(loads):.1f} "
        "(other fits ran beside them: the wall times are contended).",
        "",
    ]
    return out


def repro_section():
    out = []
    for f in sorted((HERE / ".cache").glob(f"repro-{run.CALIB}-*.json")):
        d = json.loads(f.read_text())
        key, pool = f.stem.split("-")[2], f.stem.split("-")[3]
        if not out:
            out += [
                "### Check: the library against `trainer.py` (MLP student)",
                "",
                '`LLKDClassifier(student="mlp", max_epochs=10, calibration="auto")` with the native kernel on the '
                "same embeddings and teacher answers (`repro.py`), against the study's batched trainer, on the "
                'same seeds. *+forward*: `noise_correction="forward"`; *+cw*: '
                '`class_weight="sqrt_balanced"` (the two together with `confidence` are the MLP default); '
                "without them both are off. The trainers draw different initialisations and batch orders, so "
                "agreement is within seed noise.",
                "",
                "| setting | pool | selection | seeds | LLKDClassifier macro-F1 | trainer.py macro-F1 |",
                "|---|---|---|---|---|---|",
            ]
        for sel, v in d.items():
            a, b = np.array(v["library"]), np.array(v["trainer.py"])
            out.append(
                f"| {key} | {pool} | {sel} | {len(a)} | {a.mean():.3f} ± {a.std():.3f} | {b.mean():.3f} ± {b.std():.3f} |"
            )
    return out + [""] if out else []


def main():
    runs = run.load_runs()
    by = {}
    for (s, m), r in runs.items():
        by.setdefault(s, {})[m] = r
    rev = subprocess.run(
        ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    loads = [r["load"] for r in runs.values() if "load" in r]
    dates = sorted(r["date"] for r in runs.values() if "date" in r)
    fractions = ", ".join(f"{k} {100 * v:g} %" for k, v in run.prep.FRACTIONS.items())
    header = [
        f"Machine: {machine()}; 1-min load average {min(loads):.1f}-{max(loads):.1f} while the fits ran "
        f"(several fits ran side by side: wall times are contended). Fits {dates[0]} to {dates[-1]}; "
        f"report {datetime.datetime.now().isoformat(timespec='minutes')} at commit {rev}. Commands: "
        "`python experiments/selection_rules/prep.py` (data, embeddings, teachers), "
        "`python experiments/selection_rules/run.py SETTING ...` (MLP fits, cached), "
        "`python experiments/selection_rules/finetune.py SETTING --pool N --max-length L` (fine-tuned fits, cached), "
        "`REPRO_SEEDS=5 python experiments/selection_rules/repro.py SETTING N all confidence+forward confidence+forward+cw` "
        "(library check), then "
        "`python experiments/selection_rules/run.py --report`.",
        "",
        "Student: the library's MLP head (384 -> 256 GELU, dropout 0.1; AdamW lr 1e-3, batch 32, 10 epochs) on "
        "frozen all-MiniLM-L6-v2 embeddings of the first 128 tokens, 5 seeds (`trainer.py`, checked against "
        "`LLKDClassifier` below). Teachers: logistic regression on TF-IDF fitted on a fraction of the training "
        f"split's gold labels ({fractions}), chosen for a pool accuracy of 55-80 %; the good teacher is the "
        "packaged Gemma 3 270M on the reviews it has answered (shared answer cache). Every teacher is "
        f'calibrated as the library does by default (`calibration="{run.CALIB}"`).',
    ]
    lines = ["# Selection-rule study for issue 13 (`experiments/selection_rules/`)", "", *header, ""]
    summary = summary_section(by, ["## Summary"])
    lines += summary + [""] + finetune_section() + repro_section()
    for key in run.SETTINGS:
        if key not in by:
            continue
        rows = by[key]
        t = next(iter(rows.values()))["teacher"]
        tab, base, gold = table(rows, key)
        gm = f"{100 * (gold.mean() - base.mean()):+.2f}" if gold is not None and base is not None else "n/a"
        lines += [
            f"## {SETTING_TITLES[key]}",
            "",
            f"Pool {t['n']} texts, test {t['n_test']}, {t['C']} classes; "
            + (
                f"teacher trained on {t['n_gold_teacher']} gold labels; "
                if t["n_gold_teacher"]
                else "teacher: the packaged Gemma 3 270M (cached answers, no gold labels); "
            )
            + f"teacher pool accuracy {t['pool_acc']:.3f} (most confident half {t['top_half']:.3f}, other half "
            f"{t['bottom_half']:.3f}); teacher test macro-F1 {t['teacher_test_f1']:.3f}. **Gold minus all: {gm} points.**",
            "",
            *tab,
            "",
        ]
    notes = HERE / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text()]
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")
    section = (
        "\n".join(["## Selection rules (issue 13)", "", *header, "", *summary_section(by, [])[1:], ""])
        + "\n".join(finetune_section() + repro_section())
        + "\nPer-setting tables with every method: `experiments/selection_rules/RESULTS.md`.\n"
    )
    write_block(HERE.parents[1] / "benchmarks" / "RESULTS.md", "selection_rules", section)
    print("\n".join(summary))


def write_block(path, name, text):
    """Replace the text between <!-- BEGIN name --> and <!-- END name --> (appended if absent)."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    doc = path.read_text()
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in doc:
        head, rest = doc.split(begin, 1)
        doc = head + block + rest.split(end, 1)[1]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc)


if __name__ == "__main__":
    main()
