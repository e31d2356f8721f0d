"""The CUDA selection kernel (llkd.selection._selection_cuda) against the NumPy reference.

Tests marked ``gpu`` need a CUDA device and the compiled module; they skip cleanly
elsewhere. The others check that the module imports and degrades clearly without a
device.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llkd.selection import AdaptiveSelector, SelectorState, _backends, _reference

torch = pytest.importorskip("torch")

MOD = _backends.cuda_module()
BUILT = MOD is not None
HAS_GPU = BUILT and torch.cuda.is_available() and _backends.cuda_device_count() > 0

needs_module = pytest.mark.skipif(not BUILT, reason="llkd was built without its CUDA kernel")
gpu = [
    pytest.mark.gpu,
    pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device and llkd's CUDA kernel"),
]

MODES = _reference.MODES
WEIGHTINGS = _reference.WEIGHTINGS
DTYPES = {"float32": (np.float32, "torch.float32"), "float64": (np.float64, "torch.float64")}


# --------------------------------------------------------------------------- no device needed
@needs_module
def test_module_imports_and_reports():
    n = MOD.device_count()
    assert isinstance(n, int) and n >= 0
    info = MOD.build_info()
    assert isinstance(info, dict)
    assert info["cuda_archs"] and info["cuda_archs"] != "unknown"
    assert info["cuda_runtime_version"].split(".")[0].isdigit()
    assert info["devices"] == n
    variants = MOD.variants()
    assert len(variants) >= 4
    for c in (2, 3, 20, 100, 1000, 5000):
        v = variants[MOD.default_variant(c)]
        assert v["max_classes"] < 0 or v["max_classes"] >= c
    assert MOD.scratch_bytes(20) > 0
    assert MOD.pointer_device(12345) == -1  # not device memory; must not raise


@needs_module
def test_kernel_class_checks_its_configuration_without_a_device():
    k = MOD.Kernel(20, "teacher", "none", 0.8, 0.5, 0.25, variant=-1)
    assert (k.n_classes, k.mode, k.weighting, k.momentum, k.fixed_threshold, k.random_rate, k.variant) == (
        20,
        "teacher",
        "none",
        0.8,
        0.5,
        0.25,
        -1,
    )
    assert "mode='teacher'" in repr(k)
    for kwargs, words in [
        (dict(mode="nope"), "mode must be one of"),
        (dict(weighting="nope"), "weighting must be one of"),
        (dict(momentum=1.0), "momentum"),
        (dict(fixed_threshold=2.0), "fixed_threshold"),
        (dict(random_rate=-1.0), "random_rate"),
        (dict(n_classes=1), "n_classes"),
        (dict(variant=999), "variant"),
        (dict(n_classes=40, variant=0), "does not accept 40 classes"),
    ]:
        with pytest.raises(ValueError, match=words):
            MOD.Kernel(**{"n_classes": 20, **kwargs})
    assert issubclass(MOD.InputFlagsError, ValueError)
    state = SelectorState.empty(20)
    with pytest.raises(TypeError, match="student_logits.*__cuda_array_interface__"):
        k.step(
            np.zeros((3, 20)),
            None,
            None,
            state.global_levels,
            state.class_levels,
            0,
            out=(None, None, None),
            scratch=None,
        )


@needs_module
def test_device_count_without_visible_devices_is_zero():
    # Load the extension from its file, whatever the install layout (editable or not).
    code = (
        "import importlib.util as u, sys; "
        f"s = u.spec_from_file_location('llkd.selection._selection_cuda', {MOD.__file__!r}); "
        "m = u.module_from_spec(s); s.loader.exec_module(m); "
        "print(m.device_count()); print(m.build_info()['devices'])"
    )
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "0"]


def test_cuda_backend_without_device_raises_clearly():
    if HAS_GPU:
        pytest.skip("a CUDA device is visible")
    rng = np.random.default_rng(0)
    args = (rng.normal(size=(4, 3)), rng.integers(0, 3, 4), rng.random(4))
    if not BUILT:
        with pytest.raises(ValueError, match="built without CUDA"):
            AdaptiveSelector(3, backend="cuda")
        return
    sel = AdaptiveSelector(3, backend="cuda")
    with pytest.raises(ValueError, match="no CUDA device"):
        sel.step(*args)
    assert sel.state.n_updates == 0
    # "auto" never picks CUDA for host data.
    assert AdaptiveSelector(3, backend="auto").step(*args).backend in ("native", "numpy")


# --------------------------------------------------------------------------- helpers
def make_batch(rng, n, c, dtype=np.float32, *, absent=False, extreme=False, scale=3.0):
    logits = rng.normal(scale=scale, size=(n, c))
    if extreme:
        hit = rng.random((n, c)) < 0.2
        logits[hit] = rng.choice([-1e4, 1e4], size=int(hit.sum()))
        big = rng.random(n) < 0.1  # whole rows far from zero
        logits[big] += rng.choice([-1e4, 1e4], size=(int(big.sum()), 1))
    classes = np.arange(c)
    if absent and c > 2:
        classes = rng.choice(c, size=max(1, c // 3), replace=False)
    labels = rng.choice(classes, size=n)
    conf = rng.random(n)
    return logits.astype(dtype), labels.astype(np.int64), conf


def to_dev(logits, labels, conf, conf_dtype=torch.float64, label_dtype=torch.int64):
    return (
        torch.from_numpy(np.ascontiguousarray(logits)).cuda(),
        torch.from_numpy(labels).to(device="cuda", dtype=label_dtype),
        torch.from_numpy(conf).to(device="cuda", dtype=conf_dtype),
    )


def tolerances(dtype):
    if dtype == np.float32:
        return dict(u=5e-5, tau_s=2e-5, tau_s_atol=2e-6, w_rtol=2e-4, w_atol=1e-4)
    return dict(u=1e-11, tau_s=1e-10, tau_s_atol=1e-12, w_rtol=1e-9, w_atol=1e-11)


def expected_weights(mask, conf, u, mode, weighting, C):
    w = mask.astype(np.float64)
    if mode == "confidence":  # every sample, confidence above chance / its batch mean (any weighting)
        excess = np.maximum(0.0, (C * conf - 1.0) / (C - 1.0))
        return excess / excess.mean() if excess.mean() > 0 else w
    if weighting == "product" and mode != "all" and mask.any():
        r = np.where(mask, conf * u, 0.0)
        mean = r[mask].mean()
        if mean > 0:
            w = r / mean
    return w


def assert_matches(res, ref, labels, conf, dtype, mode, weighting, fixed_threshold=0.9):
    """The CUDA result equals the reference up to float rounding.

    Mask entries may differ only where the sample sits on its threshold to within the
    rounding of the two computations; weights are then compared against the reference
    formula applied to the CUDA mask.
    """
    tol = tolerances(dtype)
    assert res.backend == "cuda"
    assert res.mask.is_cuda and res.weights.is_cuda and res.uncertainty.is_cuda
    assert res.mask.dtype == torch.bool
    assert str(res.uncertainty.dtype) == DTYPES[np.dtype(dtype).name][1]
    u = res.uncertainty.cpu().numpy().astype(np.float64)
    mask = res.mask.cpu().numpy()
    w = res.weights.cpu().numpy().astype(np.float64)
    np.testing.assert_allclose(u, ref.uncertainty, rtol=0, atol=tol["u"])
    assert np.all((u >= 0) & (u <= 1))
    np.testing.assert_allclose(res.teacher_threshold, ref.teacher_threshold, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(res.student_threshold, ref.student_threshold, rtol=tol["tau_s"], atol=tol["tau_s_atol"])
    tie = getattr(_reference, "TIE_TOLERANCE", 0.0)  # tests pass at value >= tau - tie
    near_t = np.abs(conf - (ref.teacher_threshold[labels] - tie)) <= 1e-10
    near_s = np.abs(ref.uncertainty - (ref.student_threshold[labels] - tie)) <= 2 * tol["u"] + 1e-10
    near = {"llkd": near_t | near_s, "teacher": near_t, "class_mean": near_t, "student": near_s}.get(
        mode, np.zeros_like(near_t)
    )
    bad = (mask != ref.mask) & ~near
    assert not bad.any(), f"{int(bad.sum())} mask entries differ away from the thresholds"
    if mode == "all":
        assert mask.all() and np.all(w == 1.0)
    np.testing.assert_allclose(
        w,
        expected_weights(mask, conf, ref.uncertainty, mode, weighting, len(ref.teacher_threshold)),
        rtol=tol["w_rtol"],
        atol=tol["w_atol"],
    )
    assert np.all(w[~mask] == 0)


def assert_states_match(a: SelectorState, b: SelectorState, dtype):
    tol = tolerances(dtype)
    assert a.n_updates == b.n_updates
    np.testing.assert_allclose(a.global_levels[0], b.global_levels[0], rtol=1e-12)
    np.testing.assert_allclose(a.class_levels[0], b.class_levels[0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(a.global_levels[1], b.global_levels[1], rtol=tol["tau_s"], atol=tol["tau_s_atol"])
    np.testing.assert_allclose(a.class_levels[1], b.class_levels[1], rtol=tol["tau_s"], atol=tol["tau_s_atol"])


def pair(c, **kw):
    return AdaptiveSelector(c, backend="cuda", **kw), AdaptiveSelector(c, backend="numpy", **kw)


def cuda_step_direct(
    state,
    logits_d,
    labels_d,
    conf_d,
    *,
    variant=-1,
    out=None,
    update=True,
    mode="llkd",
    weighting="product",
    draws=None,
    momentum=0.9,
    fixed_threshold=0.9,
    random_rate=0.3,
):
    from llkd.selection import _cuda

    return _cuda.step(
        state,
        logits_d,
        labels_d,
        conf_d,
        momentum=momentum,
        mode=mode,
        weighting=weighting,
        fixed_threshold=fixed_threshold,
        random_rate=random_rate,
        random_draws=draws,
        update=update,
        out=out,
        variant=variant,
    )


def ref_step(
    state,
    logits,
    labels,
    conf,
    *,
    update=True,
    mode="llkd",
    weighting="product",
    draws=None,
    momentum=0.9,
    fixed_threshold=0.9,
    random_rate=0.3,
):
    return _reference.step(
        state,
        logits,
        labels,
        conf,
        momentum=momentum,
        mode=mode,
        weighting=weighting,
        fixed_threshold=fixed_threshold,
        random_rate=random_rate,
        random_draws=draws,
        update=update,
    )


def variant_cases():
    if not BUILT:
        return []
    cases = []
    for v in MOD.variants():
        mx = v["max_classes"]
        chunk = v["threads_per_row"] * v["elems_per_thread"]
        cs = {2, 3, chunk} if mx > 0 and mx <= 32 else {2, 20, chunk - 1, chunk + 5, 3 * chunk + 7}
        if mx > 32:
            cs |= {mx}
        if mx < 0:
            cs |= {3000}
        for c in sorted(x for x in cs if x >= 2 and (mx < 0 or x <= mx)):
            cases.append((v["id"], c))
    return cases


# --------------------------------------------------------------------------- GPU: parity
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("vid,c", variant_cases())
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device and llkd's CUDA kernel")
def test_every_variant_matches_reference_and_writes_every_output(vid, c, dtype):
    rng = np.random.default_rng(1000 * vid + c)
    sizes = ((1, False), (257, True), (4099, False)) if c <= 256 else ((1, False), (67, True), (513, False))
    for n, extreme in sizes:
        logits, labels, conf = make_batch(rng, n, c, dtype, extreme=extreme, absent=c > 5)
        state_d, state_r = SelectorState.empty(c), SelectorState.empty(c)
        for it in range(2):  # first update, then a momentum update
            if it:
                logits, labels, conf = make_batch(rng, n, c, dtype, extreme=extreme)
            ld, yd, cd = to_dev(logits, labels, conf)
            poison = (
                torch.full((n,), float("nan"), dtype=ld.dtype, device="cuda"),
                torch.full((n,), 0xAB, dtype=torch.uint8, device="cuda").view(torch.bool),
                torch.full((n,), float("nan"), dtype=ld.dtype, device="cuda"),
            )
            res = cuda_step_direct(state_d, ld, yd, cd, variant=vid, out=poison)
            assert int(poison[1].view(torch.uint8).max()) <= 1, "mask left unwritten"
            assert bool(torch.isfinite(poison[0]).all()) and bool(torch.isfinite(poison[2]).all())
            ref = ref_step(state_r, logits, labels, conf)
            assert_matches(res, ref, labels, conf, dtype, "llkd", "product")
            assert_states_match(state_d, state_r, dtype)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 3000),
    c=st.sampled_from([2, 3, 4, 7, 16, 20, 31, 33, 64, 100, 129, 257, 600, 1000]),
    dtype=st.sampled_from([np.float32, np.float64]),
    mode=st.sampled_from(MODES),
    weighting=st.sampled_from(WEIGHTINGS),
    absent=st.booleans(),
    extreme=st.booleans(),
    host_inputs=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device and llkd's CUDA kernel")
def test_selector_matches_reference(n, c, dtype, mode, weighting, absent, extreme, host_inputs, seed):
    rng = np.random.default_rng(seed)
    sel_d, sel_r = pair(
        c, mode=mode, weighting=weighting, momentum=0.8, random_state=seed, fixed_threshold=0.5, random_rate=0.4
    )
    for _ in range(3):
        logits, labels, conf = make_batch(rng, n, c, dtype, absent=absent, extreme=extreme)
        ld, yd, cd = to_dev(logits, labels, conf)
        if host_inputs:  # labels and confidences from the host, logits on the device
            res = sel_d.step(ld, labels, conf)
        else:
            res = sel_d.step(ld, yd, cd)
        ref = sel_r.step(logits, labels, conf)
        assert_matches(res, ref, labels, conf, dtype, mode, weighting)
        assert_states_match(sel_d.state, sel_r.state, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device and llkd's CUDA kernel")
def test_state_evolution_over_many_steps(dtype):
    rng = np.random.default_rng(7)
    c = 20
    sel_d, sel_r = pair(c, momentum=0.95)
    for t in range(40):
        n = int(rng.integers(1, 700))
        logits, labels, conf = make_batch(rng, n, c, dtype, absent=t % 3 == 0, scale=3.0 / (1 + t / 10))
        res = sel_d.step(*to_dev(logits, labels, conf))
        ref = sel_r.step(logits, labels, conf)
        assert_matches(res, ref, labels, conf, dtype, "llkd", "product")
        assert_states_match(sel_d.state, sel_r.state, dtype)
    np.testing.assert_allclose(sel_d.teacher_threshold, sel_r.teacher_threshold, rtol=1e-11)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device and llkd's CUDA kernel")
def test_score_does_not_touch_state(dtype):
    rng = np.random.default_rng(3)
    c = 7
    sel_d, sel_r = pair(c)
    pool = make_batch(rng, 5000, c, dtype)
    # Before any step: zero thresholds, every sample passes the class-wise tests.
    res = sel_d.score(*to_dev(*pool))
    assert bool(res.mask.all()) and sel_d.state.n_updates == 0
    for _ in range(3):
        batch = make_batch(rng, 300, c, dtype)
        sel_d.step(*to_dev(*batch))
        sel_r.step(*batch)
    before = sel_d.state.copy()
    res = sel_d.score(*to_dev(*pool))
    ref = sel_r.score(*pool)
    assert_matches(res, ref, pool[1], pool[2], dtype, "llkd", "product")
    np.testing.assert_array_equal(sel_d.state.class_levels, before.class_levels)
    np.testing.assert_array_equal(sel_d.state.global_levels, before.global_levels)
    assert sel_d.state.n_updates == before.n_updates


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device and llkd's CUDA kernel")
def test_large_batch_and_input_dtypes():
    rng = np.random.default_rng(11)
    n, c = (1 << 21) + 17, 20
    logits, labels, conf = make_batch(rng, n, c, np.float32, absent=True)
    for conf_dtype in (torch.float64, torch.float32):
        conf_in = conf if conf_dtype == torch.float64 else conf.astype(np.float32).astype(np.float64)
        ref = ref_step(SelectorState.empty(c), logits, labels, conf_in)
        for label_dtype in (torch.int64, torch.int32):
            state = SelectorState.empty(c)
            res = cuda_step_direct(state, *to_dev(logits, labels, conf_in, conf_dtype, label_dtype))
            assert_matches(res, ref, labels, conf_in, np.float32, "llkd", "product")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device and llkd's CUDA kernel")
def test_degenerate_weights(mode):
    c, n = 4, 1000
    # c*u == 0 for every sample: selected samples keep weight 1.
    logits = np.tile(np.array([[1e4, -1e4, -1e4, -1e4]], dtype=np.float32), (n, 1))
    labels = np.zeros(n, dtype=np.int64)
    conf = np.zeros(n)
    sel_d, sel_r = pair(c, mode=mode, fixed_threshold=0.0, random_rate=0.5, random_state=1)
    res = sel_d.step(*to_dev(logits, labels, conf))
    ref = sel_r.step(logits, labels, conf)
    assert_matches(res, ref, labels, conf, np.float32, mode, "product", fixed_threshold=0.0)
    w = res.weights.cpu().numpy()
    assert set(np.unique(w)) <= {0.0, 1.0}
    # Nothing selected: all weights 0.
    sel = AdaptiveSelector(c, backend="cuda", mode="fixed", fixed_threshold=1.0)
    res = sel.step(*to_dev(*make_batch(np.random.default_rng(0), 100, c)))
    assert not bool(res.mask.any()) and float(res.weights.abs().sum()) == 0.0


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device and llkd's CUDA kernel")
def test_tensor_forms_streams_and_auto():
    rng = np.random.default_rng(5)
    c = 20
    logits, labels, conf = make_batch(rng, 999, c, np.float32)
    ref = ref_step(SelectorState.empty(c), logits, labels, conf, momentum=0.99)
    ld, yd, cd = to_dev(logits, labels, conf)
    # auto picks cuda for CUDA tensors
    sel = AdaptiveSelector(c, backend="auto")
    assert sel.resolve_backend(ld) == "cuda"
    assert_matches(sel.step(ld, yd, cd), ref, labels, conf, np.float32, "llkd", "product")
    # requires_grad, non-contiguous, float16 and a foreign __cuda_array_interface__ object
    g = ld.clone().requires_grad_(True)
    assert_matches(
        AdaptiveSelector(c, backend="cuda").step(g, yd, cd), ref, labels, conf, np.float32, "llkd", "product"
    )
    t = ld.t().contiguous().t()
    assert not t.is_contiguous()
    assert_matches(
        AdaptiveSelector(c, backend="cuda").step(t, yd, cd), ref, labels, conf, np.float32, "llkd", "product"
    )

    class Foreign:
        def __init__(self, x):
            self.__cuda_array_interface__ = x.__cuda_array_interface__
            self._x = x

    assert_matches(
        AdaptiveSelector(c, backend="cuda").step(Foreign(ld), Foreign(yd), Foreign(cd)),
        ref,
        labels,
        conf,
        np.float32,
        "llkd",
        "product",
    )
    half = ld.half()
    ref_h = ref_step(SelectorState.empty(c), half.float().cpu().numpy(), labels, conf, momentum=0.99)
    assert_matches(
        AdaptiveSelector(c, backend="cuda").step(half, yd, cd), ref_h, labels, conf, np.float32, "llkd", "product"
    )
    # a side stream: the kernel runs on the current stream
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        ld2, yd2, cd2 = to_dev(logits, labels, conf)
        res = AdaptiveSelector(c, backend="cuda").step(ld2, yd2, cd2)
    s.synchronize()
    assert_matches(res, ref, labels, conf, np.float32, "llkd", "product")


# --------------------------------------------------------------------------- GPU: bad input
def _fresh_state_pair(c):
    rng = np.random.default_rng(9)
    sel = AdaptiveSelector(c, backend="cuda")
    sel.step(*to_dev(*make_batch(rng, 64, c)))
    return sel, sel.state.copy()


def _assert_untouched(sel, before):
    assert sel.state.n_updates == before.n_updates
    np.testing.assert_array_equal(sel.state.global_levels, before.global_levels)
    np.testing.assert_array_equal(sel.state.class_levels, before.class_levels)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [2, 20, 100, 1000, 3000])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, "row-inf"])
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device and llkd's CUDA kernel")
def test_non_finite_logits_raise_and_leave_state(dtype, c, bad):
    rng = np.random.default_rng(c)
    sel, before = _fresh_state_pair(c)
    for n, pos in ((1, 0), (300, 299), (2000, 1234)):
        logits, labels, conf = make_batch(rng, n, c, dtype)
        if bad == "row-inf":
            logits[pos, :] = -np.inf
        else:
            logits[pos, int(rng.integers(c))] = bad
        with pytest.raises(ValueError, match="student_logits"):
            sel.step(*to_dev(logits, labels, conf))
        _assert_untouched(sel, before)
    with pytest.raises(ValueError, match="student_logits"):
        sel.score(*to_dev(logits, labels, conf))
    # the device is still usable afterwards
    sel.step(*to_dev(*make_batch(rng, 10, c, dtype)))
    assert sel.state.n_updates == before.n_updates + 1


@pytest.mark.parametrize("variant_case", variant_cases()[::3])
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device and llkd's CUDA kernel")
def test_non_finite_logits_every_variant(variant_case):
    vid, c = variant_case
    rng = np.random.default_rng(vid)
    for dtype in (np.float32, np.float64):
        for bad in (np.nan, np.inf, -np.inf):
            logits, labels, conf = make_batch(rng, 777, c, dtype)
            logits[int(rng.integers(777)), int(rng.integers(c))] = bad
            state = SelectorState.empty(c)
            with pytest.raises(ValueError, match="student_logits"):
                cuda_step_direct(state, *to_dev(logits, labels, conf), variant=vid)
            assert state.n_updates == 0 and not state.class_levels.any()


@pytest.mark.parametrize("variant_case", variant_cases())
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device and llkd's CUDA kernel")
def test_finite_logits_spanning_beyond_the_type_match_the_reference(variant_case):
    # (x - max) * log2(e) overflows to -inf for finite logits; the term must be 0, not NaN
    # (which to_u turned into a silent uncertainty of 0).
    vid, c = variant_case
    rng = np.random.default_rng(vid)
    for dtype, big in ((np.float32, 2e38), (np.float64, 1.5e308)):
        logits, labels, conf = make_batch(rng, 64, c, dtype)
        logits[:4] = -big / 2 if dtype == np.float32 else -big
        logits[0, [0, -1]] = big  # two equal maxima, the second in the last chunk
        logits[1, -1] = big  # one maximum, after the other columns
        logits[2, 0] = big
        logits[3, c // 2] = big
        ref = ref_step(SelectorState.empty(c), logits, labels, conf)
        res = cuda_step_direct(SelectorState.empty(c), *to_dev(logits, labels, conf), variant=vid)
        u = res.uncertainty.cpu().numpy().astype(np.float64)
        np.testing.assert_allclose(u, ref.uncertainty, rtol=0, atol=tolerances(dtype)["u"])
        assert u[0] > 0.05 and u[1] == 0.0


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device and llkd's CUDA kernel")
def test_bad_labels_and_confidences_raise_and_leave_state():
    c = 5
    rng = np.random.default_rng(2)
    sel, before = _fresh_state_pair(c)
    logits, labels, conf = make_batch(rng, 100, c)
    ld, yd, cd = to_dev(logits, labels, conf)
    for bad_label in (-1, c, 10**12):
        y = yd.clone()
        y[37] = bad_label
        with pytest.raises(ValueError, match="pseudo_labels"):
            sel.step(ld, y, cd)
        with pytest.raises(ValueError, match="pseudo_labels"):
            sel.step(ld, y.cpu().numpy(), conf)
        _assert_untouched(sel, before)
    for bad_conf in (np.nan, -0.1, 1.5, np.inf):
        cc = cd.clone()
        cc[5] = bad_conf
        with pytest.raises(ValueError, match="teacher_confidence"):
            sel.step(ld, yd, cc)
        _assert_untouched(sel, before)
    with pytest.raises(ValueError, match="pseudo_labels"):
        sel.step(ld, yd[:-1], cd)
    with pytest.raises(ValueError, match="teacher_confidence"):
        sel.step(ld, yd, cd[:50])
    with pytest.raises(ValueError, match="student_logits"):
        sel.step(ld[:, :3], yd, cd)
    with pytest.raises(ValueError, match="student_logits"):
        sel.step(ld[0], yd[:1], cd[:1])
    with pytest.raises(ValueError, match="empty"):
        sel.step(ld[:0], yd[:0], cd[:0])
    with pytest.raises(TypeError, match="student_logits"):
        sel.step(ld.to(torch.int32), yd, cd)
    with pytest.raises(TypeError, match="pseudo_labels"):
        sel.step(ld, yd.to(torch.bool), cd)
    with pytest.raises(TypeError, match="pseudo_labels"):
        sel.step(ld, yd.double() + 0.5, cd)
    with pytest.raises(TypeError, match="student_logits"):
        AdaptiveSelector(c, backend="cuda").step(logits, labels, conf)  # host logits
    _assert_untouched(sel, before)
    # float labels holding whole numbers are accepted, as on the host
    res = AdaptiveSelector(c, backend="cuda").step(ld, yd.double(), cd)
    assert res.mask.shape == (100,)
    with pytest.raises(ValueError, match="variant"):
        cuda_step_direct(
            SelectorState.empty(40),
            torch.zeros(3, 40, device="cuda"),
            torch.zeros(3, dtype=torch.int64, device="cuda"),
            torch.zeros(3, device="cuda"),
            variant=0,
        )


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device and llkd's CUDA kernel")
def test_binding_validates_raw_arrays():
    c, n = 4, 10
    z = torch.randn(n, c, device="cuda")
    y = torch.zeros(n, dtype=torch.int64, device="cuda")
    cf = torch.rand(n, device="cuda", dtype=torch.float64)
    u, m, w = (
        torch.empty(n, device="cuda"),
        torch.empty(n, dtype=torch.bool, device="cuda"),
        torch.empty(n, device="cuda"),
    )
    sb = MOD.scratch_bytes(c)
    scratch = torch.empty(sb, dtype=torch.uint8, device="cuda")
    st0 = SelectorState.empty(c)
    k = MOD.Kernel(c, "llkd", "product", 0.9, 0.9, 0.1)
    stream = torch.cuda.current_stream().cuda_stream

    def call(zz=z, yy=y, cc=cf, uptr=None, ss=sb):
        return k.step_unchecked(
            zz,
            yy,
            cc,
            None,
            uptr or u.data_ptr(),
            m.data_ptr(),
            w.data_ptr(),
            scratch.data_ptr(),
            ss,
            st0.global_levels,
            st0.class_levels,
            0,
            False,
            stream,
        )

    desc = lambda t: (t.data_ptr(), tuple(t.shape), t.__cuda_array_interface__["typestr"])  # noqa: E731
    assert len(call(desc(z), desc(y), desc(cf))) == 3
    with pytest.raises(TypeError, match="student_logits"):
        call(zz=z)  # step_unchecked takes descriptors only
    with pytest.raises(ValueError, match="scratch"):
        call(desc(z), desc(y), desc(cf), ss=8)
    # the checked entry: __cuda_array_interface__ objects everywhere, outputs included
    res = k.step(
        z, y, cf, st0.global_levels, st0.class_levels, 0, out=(u, m, w), scratch=scratch, update=False, stream=stream
    )
    assert res[0] is m and res[1] is w and res[2] is u and res[5] == 0
    checked = dict(out=(u, m, w), scratch=scratch, update=False, stream=stream)
    with pytest.raises(TypeError, match="student_logits"):
        k.step(z.cpu().numpy(), y, cf, st0.global_levels, st0.class_levels, 0, **checked)
    with pytest.raises(ValueError, match="C-contiguous"):
        k.step(torch.randn(c, n, device="cuda").t(), y, cf, st0.global_levels, st0.class_levels, 0, **checked)
    with pytest.raises(TypeError, match="pseudo_labels"):
        k.step(z, y.float(), cf, st0.global_levels, st0.class_levels, 0, **checked)
    with pytest.raises(ValueError, match="out mask"):
        k.step(z, y, cf, st0.global_levels, st0.class_levels, 0, **dict(checked, out=(u, m[:-1], w)))
    with pytest.raises(ValueError, match="not in CUDA device memory"):
        k.step(z, y, cf, st0.global_levels, st0.class_levels, 0, **dict(checked, out=(u.cpu(), m, w)))
    bad = y.clone()
    bad[3] = c
    with pytest.raises(MOD.InputFlagsError) as info:
        k.step(z, bad, cf, st0.global_levels, st0.class_levels, 0, **dict(checked, update=True))
    assert isinstance(info.value, ValueError) and info.value.flags == MOD.FLAGS["bad_labels"]
    assert not st0.class_levels.any()  # state untouched
