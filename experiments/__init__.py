"""Accuracy studies of llkd: which selection rule, calibration and student pay, on real data.

Run each from the repository root as a module, e.g. ``python -m experiments.bench_distill
--quick``; results go to ``benchmarks/RESULTS.md`` (the one results file) and plots to
``experiments/plots/``. Expensive intermediate results (embeddings, teacher answers, fits)
are cached under ``.cache/bench/`` (see ``experiments/_common.py``). The speed benchmarks
are in ``benchmarks/``.
"""
