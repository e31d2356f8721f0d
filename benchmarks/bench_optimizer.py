"""AdamW for the fine-tuned student: torch's CPU default against the fused kernel the trainer uses.

Times one optimizer step over the trainable tensors of the packaged MiniLM (the fine-tuned
student's encoder and its head), with torch's default implementation (a Python loop over
the tensors on the CPU), ``foreach=True`` and ``llkd._trainer._adamw`` (fused where torch
has the kernel), and one forward and backward pass of a training batch for scale. Prints
the ratios.

    python benchmarks/bench_optimizer.py            # 30 steps each
    python benchmarks/bench_optimizer.py --quick    # 5 steps each
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from types import SimpleNamespace

import numpy as np
import torch


def _step_ms(opt, steps):
    for _ in range(2):  # warm-up: the state tensors are allocated on the first step
        opt.step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times), 1e3 * float(np.median(times))


def main(argv=None):
    from llkd import students
    from llkd._trainer import _adamw

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 steps each")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args(argv)
    steps = 5 if args.quick else args.steps
    torch.manual_seed(0)
    encoder, tokenizer = students.load_hf_encoder(students.resolve_encoder_path("auto"))
    model = students.EncoderClassifier(encoder, 2, 0.1)  # the fine-tuned student, as the estimator builds it
    params = [p for p in model.parameters() if p.requires_grad]
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f}, "
        f"{time.strftime('%Y-%m-%d')}; {len(params)} tensors, {sum(p.numel() for p in params):,} parameters"
    )
    texts = ["a quietly moving film with one scene too many"] * args.batch
    batch = students.TextData(texts, tokenizer, 64).batch(np.arange(args.batch), torch.device("cpu"))
    t0 = time.perf_counter()
    loss = model(batch).logsumexp(1).mean()
    loss.backward()
    fwd_bwd_ms = 1e3 * (time.perf_counter() - t0)
    grads = [None if p.grad is None else p.grad.clone() for p in params]  # the unused pooler has none

    cfg = SimpleNamespace(learning_rate=1e-4, weight_decay=0.01)
    rows = []
    for label, make in [
        ("torch default (CPU: a loop over the tensors)", lambda ps: torch.optim.AdamW(ps, lr=1e-4, weight_decay=0.01)),
        ("foreach=True", lambda ps: torch.optim.AdamW(ps, lr=1e-4, weight_decay=0.01, foreach=True)),
        ("llkd._trainer._adamw (fused)", lambda ps: _adamw(ps, cfg)),
    ]:
        copies = [p.detach().clone().requires_grad_() for p in params]
        for c, g in zip(copies, grads):
            c.grad = None if g is None else g.clone()
        opt = make(copies)
        rows.append((label, bool(opt.defaults.get("fused")), *_step_ms(opt, steps)))
    print(f"| optimizer | fused | step, best / median (ms, {steps} steps) | × the default (best) |")
    print("|---|---|---:|---:|")
    for label, fused, best, med in rows:
        print(f"| {label} | {fused} | {best:.1f} / {med:.1f} | {rows[0][2] / best:.1f} |")
    print(
        f"one forward + backward pass of {args.batch} texts (max length 64, first call): {fwd_bwd_ms:.0f} ms; "
        f"the default step adds {100 * rows[0][2] / fwd_bwd_ms:.0f} % to it, the fused one "
        f"{100 * rows[-1][2] / fwd_bwd_ms:.0f} %"
    )


if __name__ == "__main__":
    main()
