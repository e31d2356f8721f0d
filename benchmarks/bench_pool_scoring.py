"""Scoring an unlabeled pool for teacher_budget: the kernel's pool_uncertainty against the
alternatives and against the student's forward pass over the same pool.

Per round of ``teacher_budget`` the student's logits for the unlabeled pool are turned
into acquisition scores (``llkd.selection.pool_uncertainty``). This script times, on
``--rows`` rows (default 1e6) of float32 logits with C classes:

- the C++ kernel (``backend="native"``, all cores, GIL released);
- the NumPy reference (``backend="numpy"``) and the same formula in torch on the CPU;
- the MLP student's forward pass over the pool (384-d frozen-MiniLM-sized features,
  hidden 256, in batches of 4,096), the compute the scores come after.

    python benchmarks/bench_pool_scoring.py            # 1e6 rows, C = 2 and 20
    python benchmarks/bench_pool_scoring.py --quick    # 1e5 rows
    python benchmarks/bench_pool_scoring.py --write    # and into benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time

import numpy as np
import torch

try:
    from _results_md import write_section
except ImportError:  # run as python -m benchmarks.bench_pool_scoring
    from benchmarks._results_md import write_section


def best(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None):
    from llkd.selection import default_n_threads, pool_uncertainty
    from llkd.students import MLPHead

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--classes", type=int, nargs="+", default=[2, 20])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    n = 100_000 if args.quick else args.rows
    rng = np.random.default_rng(0)
    features = torch.from_numpy(rng.normal(size=(n, 384)).astype(np.float32))
    load0 = os.getloadavg()[0]
    lines = [
        "| C | native kernel (ms) | NumPy reference (ms) | torch CPU (ms) | student forward (ms) "
        "| × NumPy | × torch | scoring / forward |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for C in args.classes:
        z = rng.normal(size=(n, C)).astype(np.float32) * 3
        zt = torch.from_numpy(z)
        t_native = best(lambda z=z: pool_uncertainty(z, backend="native"), args.repeats)
        t_numpy = best(lambda z=z: pool_uncertainty(z, backend="numpy"), max(1, args.repeats // 2))
        t_torch = best(lambda zt=zt: pool_uncertainty(zt, backend="torch"), args.repeats)
        head = MLPHead(384, C, 256, 0.0).eval()

        def forward(head=head):
            with torch.inference_mode():
                for s in range(0, n, 4096):
                    head(features[s : s + 4096])

        t_fwd = best(forward, max(1, args.repeats // 2))
        lines.append(
            f"| {C} | {1e3 * t_native:.1f} | {1e3 * t_numpy:.1f} | {1e3 * t_torch:.1f} | {1e3 * t_fwd:.0f} "
            f"| {t_numpy / t_native:.1f} | {t_torch / t_native:.1f} | {t_native / t_fwd:.3f} |"
        )
        print(lines[-1], flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    head_line = (
        f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        f"(kernel threads {default_n_threads()}, torch threads {torch.get_num_threads()}), torch {torch.__version__}, "
        f"commit {commit}, load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after; {n:,} rows of float32 "
        f"logits, best of {args.repeats}. The student forward pass is the MLP head (384 -> 256 -> C) over the same "
        "rows' features; the frozen encoder's pass that made those features is far larger still."
    )
    body = head_line + "\n\n" + "\n".join(lines)
    print(body)
    if args.write:
        write_section("bench_pool_scoring", "## Pool scoring for teacher_budget (`bench_pool_scoring.py`)\n\n" + body)


if __name__ == "__main__":
    main()
