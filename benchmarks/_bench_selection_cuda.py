"""CUDA selection benchmark: the llkd kernel vs a device copy of the same bytes and vs torch eager.

Imported by ``benchmarks/bench_selection.py --device cuda`` (which calls :func:`run`),
or run directly: ``python benchmarks/_bench_selection_cuda.py [--quick] [--out DIR]``.

What is timed, per (N, C), float32 logits, int64 labels, float32 confidences on the GPU:

- ``copy``: ``dst.copy_(src)`` of a buffer as large as the step's inputs (logits, labels,
  confidences); its bandwidth counts bytes read plus bytes written.
- ``llkd``: ``AdaptiveSelector(backend="cuda").step`` end to end (validation, output
  allocation, four kernels, the O(C) copy of levels and thresholds back to the host).
- ``kernel``: the same through ``llkd.selection._cuda.step`` with preallocated outputs.
- ``torch``: the same rule written with torch eager ops on the GPU (log_softmax, bincount,
  index_add_, where, ...), thresholds copied to the host at the end, as the API returns.

The bytes of a step are its minimal traffic: inputs read once (N*C logits, N labels, N
confidences) plus outputs written once (uncertainty, mask, weights). Times are CUDA-event
medians after warm-up; inputs rotate among several sets so that small cases do not run
from the L2 cache. The largest N of each C also sweeps the row-kernel variants.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results_md import write_section  # noqa: E402

SECTION = "bench_selection_cuda"

# Options other than ``quick`` are read from ``args.cuda_<name>`` when present (so that a
# caller's own options of the same name do not leak in), else from these defaults.
DEFAULTS = dict(
    quick=False,
    sizes="1e5,1e6,1e7",
    classes="2,20,100,1000",
    dtype="float32",
    max_logit_bytes=4.5e9,  # skip (N, C) whose logits exceed this (C=1000 stops at N=1e6)
    min_time=0.25,  # seconds of timed repeats per measurement (at least 5 repeats)
    sweep=True,
    out=None,  # folder for the log, JSON and markdown (default: $OUT if set)
    results=None,  # path of RESULTS.md whose section this run replaces
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="N=1e6 for every C plus N=1e7 at C=20")
    p.add_argument("--sizes", dest="cuda_sizes", default=DEFAULTS["sizes"])
    p.add_argument("--classes", dest="cuda_classes", default=DEFAULTS["classes"])
    p.add_argument("--dtype", dest="cuda_dtype", default=DEFAULTS["dtype"], choices=["float32", "float64"])
    p.add_argument("--max-logit-bytes", dest="cuda_max_logit_bytes", type=float, default=DEFAULTS["max_logit_bytes"])
    p.add_argument("--min-time", dest="cuda_min_time", type=float, default=DEFAULTS["min_time"])
    p.add_argument("--no-sweep", dest="cuda_sweep", action="store_false")
    p.add_argument("--out", dest="cuda_out", default=None, help="folder for the log, JSON and markdown")
    p.add_argument(
        "--results", dest="cuda_results", default=None, help="RESULTS.md to update (this module's section only)"
    )
    return p


def _opt(args, name):
    if name == "quick":
        return getattr(args, "quick", False)
    value = getattr(args, "cuda_" + name, None)
    if value is None and name == "out":
        value = os.environ.get("OUT")
    return DEFAULTS[name] if value is None else value


# ----------------------------------------------------------------------------- torch eager
def torch_eager_step(state, z, y, c, lam):
    """docs/design.md section 3 with torch eager ops on the logits' device (reference for speed)."""
    import torch

    n_classes = z.shape[1]
    logp = torch.log_softmax(z, dim=1)
    h = -(logp.exp() * logp).sum(dim=1)
    u = (h / math.log(n_classes)).clamp_(0.0, 1.0)
    c64, u64 = c.double(), u.double()
    counts = torch.bincount(y, minlength=n_classes)
    sum_c = torch.zeros(n_classes, dtype=torch.float64, device=z.device).index_add_(0, y, c64)
    sum_u = torch.zeros(n_classes, dtype=torch.float64, device=z.device).index_add_(0, y, u64)
    batch = torch.stack([c64.mean(), u64.mean()])
    present = counts > 0
    per_class = torch.where(present, torch.stack([sum_c, sum_u]) / counts.clamp(min=1), batch[:, None])
    if state["n"] == 0:
        state["g"], state["m"] = batch, per_class
    else:
        state["g"] = lam * state["g"] + (1 - lam) * batch
        state["m"] = torch.where(present, lam * state["m"] + (1 - lam) * per_class, state["m"])
    state["n"] += 1
    top = state["m"].max(dim=1, keepdim=True).values
    tau = torch.where(top > 0, state["g"][:, None] * state["m"] / top, torch.zeros_like(state["m"]))
    from llkd.selection._contract import TIE_TOLERANCE as tie

    mask = (c64 >= tau[0][y] - tie) & (u64 >= tau[1][y] - tie)
    r = torch.where(mask, c64 * u64, torch.zeros_like(c64))
    mean = r.sum() / mask.sum().clamp(min=1)
    w = torch.where(mean > 0, r / mean, mask.double()).to(z.dtype)
    return mask, w, u, tau.cpu()  # thresholds to the host, as AdaptiveSelector returns them


# ----------------------------------------------------------------------------- timing
def _time(fn, n_sets, min_time):
    """Median milliseconds of fn(i) by CUDA events, after warm-up."""
    import torch

    for i in range(3):
        fn(i % n_sets)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn(0)
    torch.cuda.synchronize()
    one = max(time.perf_counter() - t0, 1e-6)
    reps = int(min(60, max(5, min_time / one)))
    times = []
    for i in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(i % n_sets)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times), reps


_KERNELS = ("row_kernel", "update_kernel", "select_kernel", "scale_kernel")


def _kernel_ms(fn, reps=5):
    """Device time of llkd's kernels per call (torch profiler / CUPTI), or NaN."""
    import torch

    try:
        from torch.profiler import ProfilerActivity, profile

        fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                fn()
            torch.cuda.synchronize()
        total_us = 0.0
        for ev in prof.key_averages():
            if any(k in ev.key for k in _KERNELS):
                total_us += getattr(ev, "self_device_time_total", None) or getattr(ev, "self_cuda_time_total", 0.0)
        return total_us / reps / 1000.0 if total_us > 0 else float("nan")
    except Exception as exc:  # profiler unavailable
        print(f"kernel timing unavailable: {exc}")
        return float("nan")


def _bench_case(n, c, dtype, min_time, sweep, log):
    import numpy as np
    import torch

    from llkd.selection import AdaptiveSelector, SelectorState, _cuda

    dev = torch.device("cuda")
    tdt = getattr(torch, dtype)
    es = torch.finfo(tdt).bits // 8
    in_bytes = n * c * es + n * 8 + n * 4
    out_bytes = n * es + n * 1 + n * es
    step_bytes = in_bytes + out_bytes
    l2 = torch.cuda.get_device_properties(dev).L2_cache_size
    n_sets = int(min(64, max(1, math.ceil(4 * l2 / in_bytes))))
    gen = torch.Generator(device=dev).manual_seed(n + c)
    sets = []
    for _ in range(n_sets):
        z = torch.randn(n, c, device=dev, dtype=tdt, generator=gen) * 3
        y = torch.randint(0, c, (n,), device=dev, generator=gen)
        cf = torch.rand(n, device=dev, generator=gen)
        sets.append((z, y, cf))
    src = torch.empty(in_bytes, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    copy_ms, _ = _time(lambda i: dst.copy_(src), 1, min_time)
    copy_gbs = 2 * in_bytes / copy_ms / 1e6
    del src, dst

    sel = AdaptiveSelector(c, backend="cuda", momentum=0.99)
    sel_ms, reps = _time(lambda i: sel.step(*sets[i]), n_sets, min_time)

    state = SelectorState.empty(c)
    outs = (
        torch.empty(n, dtype=tdt, device=dev),
        torch.empty(n, dtype=torch.bool, device=dev),
        torch.empty(n, dtype=tdt, device=dev),
    )
    params = dict(
        momentum=0.99,
        mode="llkd",
        weighting="product",
        fixed_threshold=0.9,
        random_rate=0.1,
        random_draws=None,
        update=True,
    )
    ker_ms, _ = _time(lambda i: _cuda.step(state, *sets[i], out=outs, **params), n_sets, min_time)
    dev_ms = _kernel_ms(lambda: _cuda.step(state, *sets[0], out=outs, **params)) if sweep else float("nan")

    tstate = {"n": 0}
    try:
        eager_ms, _ = _time(lambda i: torch_eager_step(tstate, *sets[i], 0.99), n_sets, min_time)
    except torch.cuda.OutOfMemoryError:
        eager_ms = float("nan")
    torch.cuda.empty_cache()

    # Sanity: one fresh step of each against each other (not a test; the tests are in tests/).
    z, y, cf = sets[0]
    ours = AdaptiveSelector(c, backend="cuda").step(z, y, cf)
    mask_t, w_t, u_t, tau_t = torch_eager_step({"n": 0}, z, y, cf, 0.99)
    agree = float((ours.mask == mask_t).double().mean())
    du = float((ours.uncertainty.double() - u_t.double()).abs().max())
    dtau = float(np.abs(ours.teacher_threshold - tau_t[0].numpy()).max())
    del mask_t, w_t, u_t, ours

    row = dict(
        n=n,
        c=c,
        dtype=dtype,
        step_bytes=step_bytes,
        in_bytes=in_bytes,
        n_sets=n_sets,
        reps=reps,
        copy_ms=copy_ms,
        copy_gbs=copy_gbs,
        llkd_ms=sel_ms,
        llkd_gbs=step_bytes / sel_ms / 1e6,
        kernel_ms=ker_ms,
        kernel_gbs=step_bytes / ker_ms / 1e6,
        device_ms=dev_ms,
        device_gbs=step_bytes / dev_ms / 1e6,
        device_frac_copy=(step_bytes / dev_ms / 1e6) / copy_gbs,
        torch_ms=eager_ms,
        frac_copy=(step_bytes / sel_ms / 1e6) / copy_gbs,
        x_torch=eager_ms / sel_ms,
        mask_agree=agree,
        max_du_vs_torch=du,
        max_dtau_teacher_vs_torch=dtau,
    )
    log(json.dumps(row))

    sweep_rows = []
    if sweep:
        mod = _cuda._module()
        for v in mod.variants():
            if v["max_classes"] >= 0 and c > v["max_classes"]:
                continue
            st = SelectorState.empty(c)
            ms, _ = _time(lambda i: _cuda.step(st, *sets[i], out=outs, variant=v["id"], **params), n_sets, min_time / 2)
            r = dict(
                n=n,
                c=c,
                variant=v["id"],
                name=v["name"],
                ms=ms,
                gbs=step_bytes / ms / 1e6,
                default=v["id"] == mod.default_variant(c, dtype == "float64"),
            )
            sweep_rows.append(r)
            log(json.dumps(r))
    del sets, outs
    torch.cuda.empty_cache()
    return row, sweep_rows


def _fmt_n(n):
    e = int(round(math.log10(n)))
    return f"1e{e}" if 10**e == n else str(n)


def _markdown(rows, sweep, device, when):
    lines = [
        f"CUDA selection on {device}, {when}. float32 logits, int64 labels, float32 confidences on the GPU.",
        "GB/s counts each step's minimal traffic (inputs read once, uncertainty/mask/weights written once);",
        "copy GB/s counts read + write of a device-to-device copy of the step's input bytes.",
        "Medians of CUDA-event timings.",
        "llkd step: AdaptiveSelector.step end to end (host validation, allocation, 4 kernels, one sync);",
        "kernels: device time of the 4 kernels alone (torch profiler), at the largest N of each C.",
        "",
        "| C | N | copy GB/s | llkd step ms | llkd GB/s | % of copy | kernels ms | kernels % of copy "
        "| torch eager ms | x torch |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        dev = "" if r["device_ms"] != r["device_ms"] else f"{r['device_ms']:.3f}"
        devf = "" if r["device_ms"] != r["device_ms"] else f"{100 * r['device_frac_copy']:.0f}%"
        lines.append(
            f"| {r['c']} | {_fmt_n(r['n'])} | {r['copy_gbs']:.0f} | {r['llkd_ms']:.3f} | {r['llkd_gbs']:.0f} | "
            f"{100 * r['frac_copy']:.0f}% | {dev} | {devf} | {r['torch_ms']:.3f} | {r['x_torch']:.1f} |"
        )
    if sweep:
        lines += [
            "",
            "Row-kernel variants at the largest N of each C (kernel-call ms; * = default):",
            "",
            "| C | N | variant | ms | GB/s |",
            "|---:|---:|---|---:|---:|",
        ]
        for s in sweep:
            lines.append(
                f"| {s['c']} | {_fmt_n(s['n'])} | {s['name']}{' *' if s['default'] else ''} | "
                f"{s['ms']:.3f} | {s['gbs']:.0f} |"
            )
    return "\n".join(lines)


def run(args=None):
    """Run the benchmark; returns {"rows", "sweep", "markdown"}. Needs a CUDA device."""
    import torch

    from llkd.selection import _backends

    if args is None:
        args = _parser().parse_args([])
    if not torch.cuda.is_available() or not _backends.cuda_built() or _backends.cuda_device_count() < 1:
        print("bench_selection_cuda: no CUDA device or llkd built without CUDA; skipped")
        return None
    quick = bool(_opt(args, "quick"))
    dtype = _opt(args, "dtype")
    sizes = [int(float(s)) for s in str(_opt(args, "sizes")).split(",")]
    classes = [int(s) for s in str(_opt(args, "classes")).split(",")]
    cases = [(n, c) for c in classes for n in sizes]
    if quick:
        cases = [(10**6, c) for c in classes] + [(10**7, 20)]
    cap = float(_opt(args, "max_logit_bytes"))
    es = 4 if dtype == "float32" else 8
    cases = [(n, c) for n, c in cases if n * c * es <= cap]
    largest = {c: max(n for n, cc in cases if cc == c) for _, c in cases}
    out = _opt(args, "out")
    logf = open(Path(out) / "bench_selection_cuda.log", "w") if out else None

    def log(msg):
        print(msg, flush=True)
        if logf:
            logf.write(msg + "\n")
            logf.flush()

    device = torch.cuda.get_device_name()
    when = time.strftime("%Y-%m-%d")
    log(f"device: {device}; torch {torch.__version__}; cases {cases}")
    rows, sweep = [], []
    for n, c in sorted(cases, key=lambda t: (t[1], t[0])):
        row, sw = _bench_case(
            n, c, dtype, float(_opt(args, "min_time")), bool(_opt(args, "sweep")) and n == largest[c], log
        )
        rows.append(row)
        sweep += sw
    md = _markdown(rows, sweep, device, when)
    if out:
        Path(out, "bench_selection_cuda.json").write_text(
            json.dumps({"device": device, "date": when, "rows": rows, "sweep": sweep}, indent=1)
        )
        Path(out, "results_section.md").write_text(md + "\n")
    if _opt(args, "results"):
        write_section(SECTION, md, _opt(args, "results"))
    if logf:
        logf.close()
    print()
    print(md)
    return {"rows": rows, "sweep": sweep, "markdown": md}


if __name__ == "__main__":
    sys.exit(0 if run(_parser().parse_args()) is not None else 1)
