"""Plots for benchmarks/RESULTS.md from the cached fits (no fits):

- ``experiments/plots/active_f1_vs_queries.png``: macro-F1 against teacher queries for each
  acquisition rule (``bench_active`` JSON lines, library defaults; dashed: the unasked inputs
  ignored), one panel per set;
- ``experiments/plots/selection_rules_delta.png``: Δ macro-F1 against ``all`` per setting for
  the main selection rules (``selection_rules/run.py`` fits).

    python -m experiments.plot_results
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / "selection_rules" / ".cache"
OUT = HERE / "plots"
ACTIVE_SETS = {
    "rotten_tomatoes-gemma": "RT, Gemma teacher",
    "20newsgroups": "20NG, TF-IDF teacher",
    "reuters_r8": "R8, TF-IDF teacher",
    "rotten_tomatoes": "RT, TF-IDF teacher",
}
RULES = ["random", "uncertainty", "margin", "diverse"]
SELECTION = [
    ("(h) (f5) + class weights^0.5", "confidence + forward + sqrt_balanced (default)"),
    ("(f5) SLaM a=rank, excess weights, from epoch 5", "confidence + forward"),
    ("(c*) w = (C c - 1) / (C - 1)", "confidence alone"),
    ("llkd", "llkd (paper)"),
    ("(a) c >= m_T[y] (class mean, no norm.)", "class_mean"),
    ("cleanlab(cv LR probs)", "cleanlab (cv LR)"),
    ("self-training", "self-training (LR)"),
]


def _curves(path):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    full = np.mean([r["macro_f1"] for r in rows if r["fraction"] >= 1.0])
    out = {}
    for rule in RULES:
        fr = sorted({r["fraction"] for r in rows if r["rule"] == rule})
        if fr:
            f1 = [[r["macro_f1"] for r in rows if r["rule"] == rule and r["fraction"] == f] for f in fr]
            out[rule] = (
                [100 * f for f in fr] + [100],
                [np.mean(v) for v in f1] + [full],
                [np.std(v) for v in f1] + [0],
            )
    return full, out


def active_plot(tag="-auto-auto-auto-auto-auto", ignore_tag="-auto-auto-auto-auto"):
    """Solid: the library defaults (unasked inputs labelled by the student); dashed, where those
    runs are cached: the same rules when the unasked inputs are ignored (``--unqueried ignore``)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ACTIVE_SETS), figsize=(4 * len(ACTIVE_SETS), 3.6), sharex=True)
    for ax, (name, title) in zip(axes, ACTIVE_SETS.items()):
        path = CACHE / f"active-{name}{tag}.jsonl"
        if not path.exists():
            ax.set_title(f"{title}\n(not run)")
            continue
        full, curves = _curves(path)
        for i, (rule, (x, mean, std)) in enumerate(curves.items()):
            ax.errorbar(x, mean, yerr=std, label=rule, capsize=2, marker="o", color=f"C{i}")
        old = CACHE / f"active-{name}{ignore_tag}.jsonl"
        if old.exists():
            for rule, (x, mean, _) in _curves(old)[1].items():
                if rule in curves:
                    ax.plot(
                        x, mean, ls="--", lw=0.9, color=f"C{list(curves).index(rule)}", label=f"{rule}, unasked ignored"
                    )
        ax.axhline(full, color="grey", lw=0.8, ls=":")
        ax.set_title(title)
        ax.set_xlabel("teacher queries, % of the pool")
    axes[0].set_ylabel("test macro-F1 (3 seeds)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "active_f1_vs_queries.png", dpi=110)


def selection_plot():
    import matplotlib.pyplot as plt

    runs = {}
    path = CACHE / "runs-auto.jsonl"
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            runs[(r["setting"], r["method"])] = r
    settings = ["rt_tfidf", "20ng", "r8", "r52", "rt_gemma"]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / len(SELECTION)
    for j, (method, label) in enumerate(SELECTION):
        d = [
            100 * (np.mean(runs[(s, method)]["f1"]) - np.mean(runs[(s, "all")]["f1"])) if (s, method) in runs else 0
            for s in settings
        ]
        ax.bar(np.arange(len(settings)) + j * width, d, width, label=label)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(settings)) + 0.4 - width / 2)
    ax.set_xticklabels(["RT TF-IDF", "20NG", "R8", "R52", "RT Gemma"])
    ax.set_ylabel("Δ macro-F1 vs all (points, 5 seeds)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(OUT / "selection_rules_delta.png", dpi=110)


def main():
    import matplotlib

    matplotlib.use("Agg")
    OUT.mkdir(exist_ok=True)
    active_plot()
    print(f"wrote {OUT / 'active_f1_vs_queries.png'}")
    if (CACHE / "runs-auto.jsonl").exists():
        selection_plot()
        print(f"wrote {OUT / 'selection_rules_delta.png'}")
    else:  # a fresh checkout: the selection-rule fits are not cached here
        print(f"{CACHE / 'runs-auto.jsonl'} missing: selection_rules_delta.png left as it is")


if __name__ == "__main__":
    main()
