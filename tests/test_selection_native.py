"""The C++ kernel (``llkd.selection._selection_cpu``) against the NumPy reference (docs/design.md sections 3, 4).

Every comparison runs once per SIMD variant this CPU supports (scalar C++, 128-bit vectors
(SSE2 or NEON) and, where the CPU has it, AVX2+FMA), so the variants that are not dispatched
by default are tested too.

Tolerances. float64 logits: u agrees with the reference to ~1e-15 (polynomial exp/log
of 1 ulp, other summation order). float32 logits: the kernel computes the row in
float32 (z - max, exp), as the "float rounding" of docs/design.md section 4 allows, so u agrees to ~1e-7
absolute (we assert 2e-6). State and thresholds inherit these errors.

Masks. A sample exactly at a threshold (``u == tau_S[y]`` or ``c == tau_T[y]``) can go
either way under rounding of the last bit: the thresholds are means over the batch,
and the reference sums them in another order than the threaded kernel (pairwise
np.mean vs chunked sums) and computes u with other exp/log implementations. So a mask
disagreement is accepted only for samples whose u (resp. c) lies within the u
(resp. rounding) tolerance of its threshold; everywhere else masks must be identical.
Weights are then checked as what they are, a function of (mask, c, u): the kernel's
weights must equal the reference formula applied to the kernel's own mask and u, and
equal the reference's weights where the masks agree.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llkd.selection import MODES, WEIGHTINGS, AdaptiveSelector, _reference
from llkd.selection._state import SelectorState

cpu = pytest.importorskip(
    "llkd.selection._selection_cpu",
    reason="llkd's C++ extension is not built (pip install -e . compiles it)",
)

VARIANTS = cpu.build_info()["simd_supported"]
FAST = settings(
    max_examples=25,
    deadline=None,
    # the `variant` fixture only selects the SIMD variant: nothing to reset between inputs
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(params=VARIANTS)
def variant(request):
    assert cpu._set_simd(request.param)
    yield request.param
    cpu._set_simd("auto")


def tol_u(dtype) -> float:
    return 2e-6 if np.dtype(dtype) == np.float32 else 1e-12


# ----------------------------------------------------------------------------- helpers
def make_logits(rng, n, c, dtype, kind):
    if kind == "normal":
        z = rng.normal(size=(n, c)) * rng.choice([0.05, 1.0, 4.0, 30.0])
    elif kind == "extreme":  # +-1e4 mixed with ordinary values
        z = rng.normal(size=(n, c))
        z[rng.random((n, c)) < 0.3] = 1e4
        z[rng.random((n, c)) < 0.3] = -1e4
    elif kind == "identical":  # every logit of a row equal: u == 1 exactly
        z = np.repeat(rng.normal(size=(n, 1)) * 5, c, axis=1)
    elif kind == "ties":  # few distinct values, duplicated rows
        z = rng.integers(-2, 3, size=(n, c)).astype(float)
        z[n // 2 :] = z[0]
    elif kind == "onehot":  # one huge logit per row: u == 0 (or nearly)
        z = np.zeros((n, c))
        z[np.arange(n), rng.integers(0, c, n)] = 1e3
    else:  # pragma: no cover
        raise ValueError(kind)
    return np.ascontiguousarray(z.astype(dtype))


def make_labels(rng, n, c, kind):
    if kind == "random":
        return rng.integers(0, c, n)
    if kind == "one":  # a single class in the batch
        return np.full(n, rng.integers(0, c))
    # a few classes only: the others are absent
    present = rng.choice(c, size=min(c, 1 + rng.integers(0, 3)), replace=False)
    return rng.choice(present, n)


def make_conf(rng, n, kind):
    if kind == "random":
        return rng.random(n)
    if kind == "ties":
        return rng.choice([0.0, 0.25, 0.5, 1.0], n)
    return np.full(n, 0.7)  # all equal


def reference_weights(mask, conf, u, mode, weighting, C):
    """The reference's weight formula applied to a given mask and u."""
    w = mask.astype(np.float64)
    if mode == "confidence":  # every sample, confidence above chance / its batch mean (any weighting)
        excess = np.maximum(0.0, (C * conf - 1.0) / (C - 1.0))
        return excess / excess.mean() if excess.mean() > 0 else w
    if weighting == "product" and mode != "all" and mask.any():
        r = np.where(mask, conf * u, 0.0)
        mean_r = r[mask].mean()
        if mean_r > 0:
            w = r / mean_r
    return w


def assert_step_matches(ref, nat, labels, conf, dtype, mode, weighting, st_ref, st_nat):
    tu = tol_u(dtype)
    np.testing.assert_allclose(nat.uncertainty, ref.uncertainty, rtol=0, atol=tu)
    assert nat.uncertainty.dtype == np.float64 and nat.mask.dtype == bool
    np.testing.assert_allclose(st_nat.global_levels, st_ref.global_levels, rtol=1e-9, atol=tu)
    np.testing.assert_allclose(st_nat.class_levels, st_ref.class_levels, rtol=1e-9, atol=tu)
    assert st_nat.n_updates == st_ref.n_updates
    np.testing.assert_allclose(nat.teacher_threshold, ref.teacher_threshold, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(nat.student_threshold, ref.student_threshold, rtol=1e-9, atol=tu)
    # Masks: only samples at a threshold (within rounding) may differ.
    differ = nat.mask != ref.mask
    if differ.any():
        near_t = np.abs(conf - ref.teacher_threshold[labels]) <= 1e-9
        near_s = np.abs(ref.uncertainty - ref.student_threshold[labels]) <= 4 * tu
        assert np.all(near_t[differ] | near_s[differ]), f"{differ.sum()} mask differences away from the thresholds"
    # Weights: the formula applied to the kernel's own mask and u ...
    expect = reference_weights(nat.mask, conf, nat.uncertainty, mode, weighting, len(ref.teacher_threshold))
    np.testing.assert_allclose(nat.weights, expect, rtol=1e-12, atol=1e-12)
    # ... and the reference's weights where everything agrees. u is accurate to tu in
    # absolute terms only (a tiny u, from a peaked softmax, has few correct digits in
    # either implementation), so dw = (c du + w dmean) / mean_r with |du|, |dmean| <= tu.
    if not differ.any():
        C = len(ref.teacher_threshold)
        excess = np.maximum(0.0, (C * conf - 1.0) / (C - 1.0))
        r_ref = excess if mode == "confidence" else np.where(ref.mask, conf * ref.uncertainty, 0.0)
        if ref.mask.any() and r_ref[ref.mask].mean() > 0:
            mean_r = r_ref[ref.mask].mean()
            atol = 4 * tu * (1 + ref.weights.max()) / mean_r
            np.testing.assert_allclose(nat.weights, ref.weights, rtol=1e-9, atol=atol)
        else:
            np.testing.assert_array_equal(nat.weights, ref.weights)


def pair(n_classes, mode="llkd", weighting="product", momentum=0.9, seed=0, n_threads=2, **kw):
    kw.setdefault("fixed_threshold", 0.6)
    kw.setdefault("random_rate", 0.3)
    ref = AdaptiveSelector(n_classes, momentum, mode, weighting, "numpy", random_state=seed, **kw)
    nat = AdaptiveSelector(n_classes, momentum, mode, weighting, "native", random_state=seed, n_threads=n_threads, **kw)
    return ref, nat


# ------------------------------------------------------------------------ equivalence
shapes = st.one_of(
    st.tuples(st.integers(1, 40), st.integers(2, 12)),
    st.tuples(st.integers(1, 3000), st.sampled_from([2, 3, 4, 5, 8, 9, 17, 20, 32, 33, 64, 65])),
    st.tuples(st.integers(1, 200), st.integers(66, 1000)),
)


@FAST
@given(
    shape=shapes,
    dtype=st.sampled_from([np.float32, np.float64]),
    logit_kind=st.sampled_from(["normal", "normal", "extreme", "identical", "ties", "onehot"]),
    label_kind=st.sampled_from(["random", "random", "one", "few"]),
    conf_kind=st.sampled_from(["random", "random", "ties", "equal"]),
    mode=st.sampled_from(MODES),
    weighting=st.sampled_from(WEIGHTINGS),
    seed=st.integers(0, 2**32 - 1),
)
def test_native_matches_reference_on_random_batches(
    variant, shape, dtype, logit_kind, label_kind, conf_kind, mode, weighting, seed
):
    n, c = shape
    rng = np.random.default_rng(seed)
    ref, nat = pair(c, mode, weighting, seed=seed)
    for _ in range(2):  # first update (initialisation), then a momentum update
        z = make_logits(rng, n, c, dtype, logit_kind)
        y = make_labels(rng, n, c, label_kind)
        conf = make_conf(rng, n, conf_kind)
        r_ref = ref.step(z, y, conf)
        r_nat = nat.step(z, y, conf)
        assert r_nat.backend == "native"
        assert_step_matches(r_ref, r_nat, y, conf, dtype, mode, weighting, ref.state, nat.state)
    # scoring a pool against the current thresholds leaves the state alone
    z = make_logits(rng, n, c, dtype, logit_kind)
    y = make_labels(rng, n, c, "random")
    conf = make_conf(rng, n, "random")
    before = nat.state.copy()
    s_ref, s_nat = ref.score(z, y, conf), nat.score(z, y, conf)
    np.testing.assert_array_equal(nat.state.class_levels, before.class_levels)
    np.testing.assert_array_equal(nat.state.global_levels, before.global_levels)
    assert nat.state.n_updates == before.n_updates
    assert_step_matches(s_ref, s_nat, y, conf, dtype, mode, weighting, ref.state, nat.state)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_every_mode_and_weighting(variant, dtype, mode, weighting):
    rng = np.random.default_rng(7)
    ref, nat = pair(6, mode, weighting, seed=3)
    for n in (1, 7, 64, 300):
        z = make_logits(rng, n, 6, dtype, "normal")
        y, conf = rng.integers(0, 6, n), rng.random(n)
        assert_step_matches(
            ref.step(z, y, conf), nat.step(z, y, conf), y, conf, dtype, mode, weighting, ref.state, nat.state
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [2, 3, 20, 130])
def test_state_evolution_over_many_steps(variant, dtype, c):
    """60 steps with varying batch sizes (some single-row, some multi-chunk) and absent
    classes: levels track the reference to rounding at every step."""
    rng = np.random.default_rng(c)
    ref, nat = pair(c, "llkd", "product", momentum=0.8)
    for i in range(60):
        n = int(rng.choice([1, 3, 50, 257, 9000 if c <= 20 else 700]))
        z = make_logits(rng, n, c, dtype, "normal")
        y = make_labels(rng, n, c, "few" if i % 3 == 0 else "random")
        conf = rng.random(n)
        r_ref, r_nat = ref.step(z, y, conf), nat.step(z, y, conf)
        assert_step_matches(r_ref, r_nat, y, conf, dtype, "llkd", "product", ref.state, nat.state)
    assert nat.state.n_updates == ref.state.n_updates == 60
    if np.dtype(dtype) == np.float64:
        np.testing.assert_allclose(nat.state.class_levels, ref.state.class_levels, rtol=1e-9, atol=1e-13)


def test_teacher_side_is_bitwise_equal_for_single_chunk_batches(variant):
    """Confidences are exact inputs and single-chunk batches use NumPy's summation order
    (pairwise np.mean, sequential np.bincount), so the teacher thresholds and the
    teacher-only mask reproduce the reference bit for bit, ties included."""
    rng = np.random.default_rng(11)
    ref, nat = pair(5, "teacher", "none", momentum=0.7)
    for n in (1, 2, 7, 8, 9, 100, 129, 1000):
        z = make_logits(rng, n, 5, np.float32, "normal")
        y = make_labels(rng, n, 5, "few")
        conf = make_conf(rng, n, "ties" if n % 2 else "equal")
        r_ref, r_nat = ref.step(z, y, conf), nat.step(z, y, conf)
        np.testing.assert_array_equal(r_nat.teacher_threshold, r_ref.teacher_threshold)
        np.testing.assert_array_equal(nat.state.class_levels[0], ref.state.class_levels[0])
        np.testing.assert_array_equal(r_nat.mask, r_ref.mask)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thread_counts_give_identical_results(dtype):
    """Rows are cut into chunks that depend on (B, C) only and the chunk sums are reduced
    in chunk order, so 1, 2, 3 and 7 threads agree bit for bit."""
    rng = np.random.default_rng(5)
    n, c = 100_000, 20  # 31 chunks: up to 7 threads take part
    zs = [make_logits(rng, n, c, dtype, "normal") for _ in range(3)]
    ys = [rng.integers(0, c, n) for _ in range(3)]
    cs = [rng.random(n) for _ in range(3)]
    results = []
    for threads in (1, 2, 3, 7):
        sel = AdaptiveSelector(c, 0.9, backend="native", n_threads=threads)
        out = [sel.step(z, y, cf) for z, y, cf in zip(zs, ys, cs)]
        results.append((out, sel.state))
    out0, st0 = results[0]
    for out, state in results[1:]:
        for a, b in zip(out0, out):
            for field in ("mask", "weights", "uncertainty", "teacher_threshold", "student_threshold"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        np.testing.assert_array_equal(state.global_levels, st0.global_levels)
        np.testing.assert_array_equal(state.class_levels, st0.class_levels)


def test_simd_variants_agree(variant):
    rng = np.random.default_rng(1)
    for c in (2, 3, 4, 7, 8, 9, 20, 40, 64, 65, 257):
        for dtype in (np.float32, np.float64):
            z = make_logits(rng, 301, c, dtype, "normal")
            y, conf = rng.integers(0, c, 301), rng.random(301)
            u = cpu.Kernel(c, fixed_threshold=0.5).step(z, y, conf, np.zeros(2), np.zeros((2, c)), 0)[2]
            np.testing.assert_allclose(u, _reference.normalized_entropy(z), rtol=0, atol=tol_u(dtype))


def test_exact_values_identical_and_one_hot_rows(variant):
    for dtype in (np.float32, np.float64):
        for c in (2, 3, 5, 8, 20, 33, 100):
            z = np.zeros((9, c), dtype=dtype)
            z[4:, 0] = 1e4  # rows 4..8: one-hot
            z[4:, 1:] = -1e4
            out = cpu.Kernel(c, fixed_threshold=0.5).step(
                z, np.zeros(9, np.int64), np.ones(9), np.zeros(2), np.zeros((2, c)), 0
            )
            np.testing.assert_array_equal(out[2][:4], 1.0)  # identical logits: u == 1 exactly
            np.testing.assert_array_equal(out[2][4:], 0.0)  # u == 0 exactly


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_finite_logits_are_handled_exactly(variant, dtype):
    """Finite logits whose spread overflows (z - max == -inf for |z| near the float
    max) are recomputed exactly in float64 instead of being reported as non-finite.
    (For float64 row 0 the reference itself returns NaN: 0 * -inf in its t sum.)"""
    big = np.finfo(dtype).max * 0.75
    z = np.array([[big, -big, 0.0], [1.0, 2.0, 3.0], [-big, -big, -big]] * 5, dtype=dtype)
    out = cpu.Kernel(3, fixed_threshold=0.5).step(
        z, np.zeros(15, np.int64), np.ones(15), np.zeros(2), np.zeros((2, 3)), 0
    )
    u = out[2].reshape(5, 3)
    assert np.all(np.isfinite(u))
    np.testing.assert_array_equal(u[:, 0], 0.0)
    np.testing.assert_array_equal(u[:, 2], 1.0)
    np.testing.assert_allclose(u[:, 1], _reference.normalized_entropy(z[1:2].astype(np.float64))[0], atol=tol_u(dtype))


def test_torch_tensors_and_default_backend():
    torch = pytest.importorskip("torch")
    sel = AdaptiveSelector(4, backend="auto")
    assert sel.resolve_backend(np.zeros((1, 4))) == "native"
    res = sel.step(torch.randn(10, 4), torch.randint(0, 4, (10,)), torch.rand(10))
    assert res.backend == "native" and res.mask.shape == (10,)


def test_kernel_class_holds_the_configuration():
    k = cpu.Kernel(5, "fixed", "none", 0.8, 0.3, 0.2, 3)
    assert (k.n_classes, k.mode, k.weighting, k.momentum, k.fixed_threshold, k.random_rate, k.n_threads) == (
        5,
        "fixed",
        "none",
        0.8,
        0.3,
        0.2,
        3,
    )
    assert repr(k).startswith("Kernel(n_classes=5, mode='fixed'")
    rng = np.random.default_rng(0)
    z, y, conf = rng.normal(size=(50, 5)), rng.integers(0, 5, 50), rng.random(50)
    state, ref_state = SelectorState.empty(5), SelectorState.empty(5)
    mask, weights, u, tau_t, tau_s, n = k.step(z, y, conf, state.global_levels, state.class_levels, 0)
    ref = _reference.step(
        ref_state,
        z,
        y,
        conf,
        momentum=0.8,
        mode="fixed",
        weighting="none",
        fixed_threshold=0.3,
        random_rate=0.2,
        random_draws=None,
    )
    assert n == 1
    np.testing.assert_array_equal(mask, ref.mask)
    np.testing.assert_array_equal(mask, conf >= 0.3)
    np.testing.assert_allclose(state.class_levels, ref_state.class_levels, rtol=1e-12)


def test_build_info():
    """What llkd.show_config() reports for the native backend."""
    info = cpu.build_info()
    for key in ("compiler", "simd_compiled", "simd_supported", "simd_dispatched", "openmp", "threading"):
        assert key in info
    assert "scalar" in info["simd_compiled"]
    assert info["simd_dispatched"] in info["simd_supported"]
    assert set(info["simd_supported"]) <= set(info["simd_compiled"])
    assert not hasattr(cpu, "stream_read")  # a benchmark helper, not shipped
    assert not cpu._set_simd("no-such-variant")
    assert cpu._simd_active() == info["simd_dispatched"]


def test_simd_override_by_environment():
    import os
    import subprocess
    import sys

    code = "import llkd.selection._selection_cpu as m; print(m.build_info()['simd_dispatched'])"
    env = dict(os.environ, LLKD_SIMD="scalar")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "scalar", out.stderr


def test_gil_is_released_during_the_step():
    """Another Python thread keeps running while the kernel works."""
    import threading

    rng = np.random.default_rng(2)
    z = rng.normal(size=(400_000, 20)).astype(np.float32)
    y, conf = rng.integers(0, 20, 400_000), rng.random(400_000)
    done = threading.Event()

    def work():
        for _ in range(3):
            cpu.Kernel(20, fixed_threshold=0.5).step(z, y, conf, np.zeros(2), np.zeros((2, 20)), 0)
        done.set()

    th = threading.Thread(target=work)
    ticks = 0
    th.start()
    while not done.is_set():
        ticks += 1
    th.join()
    # with the GIL held for the whole step the loop would barely advance
    assert ticks > 10_000


# ----------------------------------------------------------------------- pool scoring
@FAST
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.sampled_from([1, 7, 513, 70_001]),
    c=st.sampled_from([2, 3, 8, 20, 67]),
    dtype=st.sampled_from([np.float32, np.float64]),
    kind=st.sampled_from(["normal", "extreme", "identical", "ties"]),
)
def test_pool_uncertainty_matches_the_reference(variant, seed, n, c, dtype, kind):
    rng = np.random.default_rng(seed)
    z = make_logits(rng, n, c, dtype, kind)
    got = cpu.pool_uncertainty(z, 3)
    want = _reference.normalized_entropy(z.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=0, atol=tol_u(dtype))
    np.testing.assert_array_equal(got, cpu.pool_uncertainty(z, 1))  # any thread count, same bits
    if kind == "identical":
        assert (got == 1.0).all()


def test_pool_uncertainty_equals_the_steps_uncertainty():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5000, 20)).astype(np.float32)
    k = cpu.Kernel(20, "all", "none", 0.9, 0.9, 0.1, 2)
    _, _, u, *_ = k.step(
        z, rng.integers(0, 20, 5000), np.full(5000, 0.5), np.zeros(2), np.zeros((2, 20)), 0, None, False
    )
    np.testing.assert_array_equal(cpu.pool_uncertainty(z, 2), u)


@pytest.mark.parametrize(
    "bad, err, match",
    [
        (np.zeros((4, 1)), ValueError, "at least 2 columns"),
        (np.zeros(4), ValueError, "2-D"),
        (np.zeros((4, 3), dtype=np.int64), TypeError, "float32 or float64"),
        (np.array([[0.0, 1.0], [np.nan, 0.0], [np.inf, 0.0]]), ValueError, "first in row 1"),
    ],
)
def test_pool_uncertainty_rejects_bad_logits(bad, err, match):
    with pytest.raises(err, match=match):
        cpu.pool_uncertainty(bad, 2)


def test_pool_uncertainty_backends_agree():
    import torch

    from llkd.selection import pool_uncertainty

    z = np.random.default_rng(1).normal(size=(300, 5)) * 3
    ref = pool_uncertainty(z, backend="numpy")
    np.testing.assert_allclose(pool_uncertainty(z, backend="native"), ref, atol=1e-12)
    np.testing.assert_allclose(pool_uncertainty(torch.from_numpy(z)).numpy(), ref, atol=1e-12)
    assert pool_uncertainty(np.zeros((0, 3))).shape == (0,)
    with pytest.raises(ValueError, match="NaN or infinite"):
        pool_uncertainty(torch.tensor([[0.0, float("nan")]]))


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_pool_uncertainty_refuses_non_numeric_logits_on_every_backend(backend):
    from llkd.selection import pool_uncertainty

    z = np.random.default_rng(0).normal(size=(5, 3))
    with pytest.raises(TypeError, match="numeric array, got dtype object"):
        pool_uncertainty(z.astype(object), backend=backend)
    mask = z > 0  # booleans are numbers: the same on both backends
    np.testing.assert_allclose(pool_uncertainty(mask, backend=backend), pool_uncertainty(mask, backend="numpy"))
