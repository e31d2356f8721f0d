"""The NumPy reference of docs/design.md section 3, checked against hand computations."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llkd.selection import AdaptiveSelector, normalized_entropy


def entropy_direct(logits):
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return h / math.log(logits.shape[1])


def make(mode="llkd", weighting="product", momentum=0.5, n_classes=3, **kw):
    return AdaptiveSelector(n_classes, momentum=momentum, mode=mode, weighting=weighting, backend="numpy", **kw)


def test_entropy_matches_direct_formula_and_is_stable():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 7)) * 3
    np.testing.assert_allclose(normalized_entropy(z), entropy_direct(z), rtol=1e-12, atol=1e-14)
    assert normalized_entropy(np.zeros((1, 5)))[0] == pytest.approx(1.0)
    extreme = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]])
    u = normalized_entropy(extreme)
    assert np.all(np.isfinite(u))
    assert u[0] == pytest.approx(0.0, abs=1e-12)
    assert u[1] == pytest.approx(1.0)


def test_first_step_initialises_levels_from_batch_and_absent_class_takes_global_mean():
    sel = make()
    logits = np.zeros((4, 3))  # u = 1 for every row
    labels = np.array([0, 0, 1, 1])
    conf = np.array([0.2, 0.4, 0.6, 1.0])
    res = sel.step(logits, labels, conf)
    g_t, g_s = sel.state.global_levels
    assert g_t == pytest.approx(0.55) and g_s == pytest.approx(1.0)
    np.testing.assert_allclose(sel.state.class_levels[0], [0.3, 0.8, 0.55])
    # tau_T[k] = g_T * m_T[k] / max m_T
    np.testing.assert_allclose(res.teacher_threshold, 0.55 * np.array([0.3, 0.8, 0.55]) / 0.8)
    np.testing.assert_allclose(res.student_threshold, [1.0, 1.0, 1.0])
    expected_mask = conf >= res.teacher_threshold[labels]
    np.testing.assert_array_equal(res.mask, expected_mask)


def test_momentum_update_touches_only_present_classes():
    sel = make(momentum=0.9)
    sel.step(np.zeros((3, 3)), np.array([0, 1, 2]), np.array([0.3, 0.6, 0.9]))
    before = sel.state.class_levels.copy()
    sel.step(np.zeros((2, 3)), np.array([0, 0]), np.array([1.0, 1.0]))
    after = sel.state.class_levels
    assert after[0, 0] == pytest.approx(0.9 * 0.3 + 0.1 * 1.0)
    np.testing.assert_array_equal(after[:, 1:], before[:, 1:])
    assert sel.state.global_levels[0] == pytest.approx(0.9 * 0.6 + 0.1 * 1.0)
    assert sel.state.n_updates == 2


def test_product_weights_average_one_over_selected_and_zero_elsewhere():
    rng = np.random.default_rng(1)
    sel = make(mode="llkd")
    for _ in range(5):
        res = sel.step(rng.normal(size=(64, 3)), rng.integers(0, 3, 64), rng.random(64))
    assert res.n_selected > 0
    np.testing.assert_allclose(res.weights[res.mask].mean(), 1.0)
    assert np.all(res.weights[~res.mask] == 0)
    c_u = res.weights[res.mask]
    assert np.ptp(c_u) > 0  # product weighting actually varies


def test_weighting_none_and_mode_all():
    rng = np.random.default_rng(2)
    z, y, c = rng.normal(size=(32, 4)), rng.integers(0, 4, 32), rng.random(32)
    res = AdaptiveSelector(4, mode="teacher", weighting="none", backend="numpy").step(z, y, c)
    np.testing.assert_array_equal(res.weights, res.mask.astype(float))
    res = AdaptiveSelector(4, mode="all", backend="numpy").step(z, y, c)
    assert res.mask.all() and np.all(res.weights == 1.0)


def test_fixed_and_random_modes():
    rng = np.random.default_rng(3)
    z, y, c = rng.normal(size=(4000, 2)), rng.integers(0, 2, 4000), rng.random(4000)
    res = AdaptiveSelector(2, mode="fixed", fixed_threshold=0.7, backend="numpy").step(z, y, c)
    np.testing.assert_array_equal(res.mask, c >= 0.7)
    res = AdaptiveSelector(2, mode="random", random_rate=0.25, random_state=0, backend="numpy").step(z, y, c)
    assert abs(res.mask.mean() - 0.25) < 0.03
    again = AdaptiveSelector(2, mode="random", random_rate=0.25, random_state=0, backend="numpy").step(z, y, c)
    np.testing.assert_array_equal(res.mask, again.mask)


def test_teacher_and_student_modes_are_halves_of_llkd():
    rng = np.random.default_rng(4)
    z, y, c = rng.normal(size=(256, 5)), rng.integers(0, 5, 256), rng.random(256)
    res = {m: AdaptiveSelector(5, mode=m, backend="numpy").step(z, y, c) for m in ("llkd", "teacher", "student")}
    np.testing.assert_array_equal(res["llkd"].mask, res["teacher"].mask & res["student"].mask)


def test_class_mean_thresholds_are_the_raw_teacher_class_levels():
    """class_mean: tau_T[k] = m_T[k] (no g_T / max_j m_T[j]); mask c >= tau_T[y]."""
    sel = make(mode="class_mean", weighting="none", momentum=0.5)
    y = np.array([0, 0, 1, 1, 2, 2])
    c = np.array([0.9, 0.7, 0.4, 0.2, 0.6, 0.6])
    res = sel.step(np.zeros((6, 3)), y, c)
    np.testing.assert_allclose(res.teacher_threshold, [0.8, 0.3, 0.6])
    np.testing.assert_array_equal(res.mask, [True, False, True, False, True, True])
    np.testing.assert_array_equal(res.weights, res.mask.astype(float))
    # the spec's teacher test on the same batch normalises by the top class level (0.8)
    spec = make(mode="teacher", weighting="none", momentum=0.5).step(np.zeros((6, 3)), y, c)
    np.testing.assert_allclose(spec.teacher_threshold, np.array([0.8, 0.3, 0.6]) * (3.4 / 6) / 0.8)
    assert not np.array_equal(spec.mask, res.mask)
    # second step: momentum update of the present classes only; class 2 keeps 0.6
    res = sel.step(np.zeros((2, 3)), np.array([0, 1]), np.array([1.0, 0.5]))
    np.testing.assert_allclose(res.teacher_threshold, [0.9, 0.4, 0.6])
    np.testing.assert_allclose(sel.teacher_threshold, [0.9, 0.4, 0.6])
    np.testing.assert_array_equal(res.mask, [True, True])
    # student thresholds are the spec's in every mode
    np.testing.assert_allclose(res.student_threshold, make().step(np.zeros((6, 3)), y, c).student_threshold)


def test_class_mean_never_inverts_a_precise_class():
    """A class the teacher is sure of keeps its above-mean half; under the spec's teacher
    test the most confident class gets the highest threshold relative to the others."""
    rng = np.random.default_rng(7)
    y = np.repeat([0, 1], 500)
    c = np.concatenate([rng.uniform(0.9, 1.0, 500), rng.uniform(0.3, 0.7, 500)])
    res = AdaptiveSelector(2, mode="class_mean", backend="numpy").step(np.zeros((1000, 2)), y, c)
    kept = [res.mask[y == k].mean() for k in (0, 1)]
    assert 0.4 < kept[0] < 0.6 and 0.4 < kept[1] < 0.6


@pytest.mark.parametrize("weighting", ["product", "none", "auto"])
def test_confidence_mode_keeps_every_sample_weighted_by_relative_confidence(weighting):
    """Weights: the confidence above chance, e = max(0, (C c - 1) / (C - 1)), over its batch mean."""
    sel = make(mode="confidence", weighting=weighting)  # C = 3: chance is 1/3
    c = np.array([1.0, 1 / 3, 2 / 3, 0.2])
    res = sel.step(np.random.default_rng(0).normal(size=(4, 3)), np.array([0, 1, 2, 0]), c)
    assert res.mask.all()
    e = np.array([1.0, 0.0, 0.5, 0.0])  # 0.2 is below chance: clipped to 0
    np.testing.assert_allclose(res.weights, e / e.mean(), atol=1e-12)
    assert res.weights.mean() == pytest.approx(1.0)
    # binary: c = 0.5 (a coin flip) weighs nothing, c = 0.75 half of c = 1
    res = make(mode="confidence", n_classes=2).step(np.zeros((3, 2)), np.array([0, 1, 0]), np.array([0.5, 0.75, 1.0]))
    np.testing.assert_allclose(res.weights, np.array([0.0, 0.5, 1.0]) / 0.5)
    # a batch with no confidence at all keeps weight 1
    res = sel.step(np.zeros((3, 3)), np.array([0, 1, 2]), np.zeros(3))
    np.testing.assert_array_equal(res.weights, 1.0)


def test_zero_max_level_gives_zero_threshold():
    sel = make()
    res = sel.step(np.zeros((3, 3)), np.array([0, 1, 2]), np.zeros(3))
    np.testing.assert_array_equal(res.teacher_threshold, 0.0)
    assert res.mask.all()  # c >= 0 and u = 1 >= tau_S
    # all selected carry c*u = 0: product weighting falls back to weight 1
    np.testing.assert_array_equal(res.weights, 1.0)


def test_score_does_not_update_state():
    rng = np.random.default_rng(5)
    sel = make()
    sel.step(rng.normal(size=(16, 3)), rng.integers(0, 3, 16), rng.random(16))
    state = sel.state.copy()
    res = sel.score(rng.normal(size=(100, 3)), rng.integers(0, 3, 100), rng.random(100))
    np.testing.assert_array_equal(sel.state.class_levels, state.class_levels)
    assert sel.state.n_updates == state.n_updates
    assert res.mask.shape == (100,)


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 40),
    c=st.integers(2, 6),
    seed=st.integers(0, 2**31 - 1),
    mode=st.sampled_from(["llkd", "teacher", "student", "all", "fixed", "class_mean", "confidence"]),
)
def test_invariants(b, c, seed, mode):
    rng = np.random.default_rng(seed)
    sel = AdaptiveSelector(c, momentum=0.7, mode=mode, backend="numpy")
    for _ in range(3):
        labels, conf = rng.integers(0, c, b), rng.random(b)
        res = sel.step(rng.normal(size=(b, c)) * 5, labels, conf)
        assert np.all((res.uncertainty >= 0) & (res.uncertainty <= 1))
        levels = [(res.student_threshold, sel.state.global_levels[1])]
        if mode == "class_mean":
            np.testing.assert_array_equal(res.teacher_threshold, sel.state.class_levels[0])
            np.testing.assert_array_equal(res.mask, conf >= res.teacher_threshold[labels] - 1e-9)
        else:
            levels.append((res.teacher_threshold, sel.state.global_levels[0]))
        for tau, g in levels:
            assert np.all(tau >= 0) and np.all(tau <= g + 1e-12)
            assert tau.max() == pytest.approx(g) or g == 0
        assert np.all(res.weights >= 0)
        if res.n_selected:
            assert res.weights[res.mask].mean() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "logits, labels, conf, exc, words",
    [
        (np.zeros((2, 4)), [0, 1], [0.5, 0.5], ValueError, "columns"),
        (np.zeros(3), [0, 1, 2], [0.5] * 3, ValueError, "2-D"),
        (np.zeros((0, 3)), [], [], ValueError, "empty"),
        (np.zeros((2, 3), dtype=np.int64), [0, 1], [0.5, 0.5], TypeError, "float"),
        (np.array([[0.0, np.nan, 1.0], [0, 0, 0]]), [0, 1], [0.5, 0.5], ValueError, "NaN"),
        (np.array([[0.0, np.inf, 1.0], [0, 0, 0]]), [0, 1], [0.5, 0.5], ValueError, "infinite"),
        (np.zeros((2, 3)), [0, 3], [0.5, 0.5], ValueError, "pseudo_labels"),
        (np.zeros((2, 3)), [0, -1], [0.5, 0.5], ValueError, "pseudo_labels"),
        (np.zeros((2, 3)), [0, 1, 2], [0.5, 0.5], ValueError, "pseudo_labels"),
        (np.zeros((2, 3)), [0.5, 1], [0.5, 0.5], TypeError, "pseudo_labels"),
        (np.zeros((2, 3)), ["a", "b"], [0.5, 0.5], TypeError, "pseudo_labels"),
        (np.zeros((2, 3)), [0, 1], [0.5, 1.5], ValueError, "[0, 1]"),
        (np.zeros((2, 3)), [0, 1], [0.5, -0.1], ValueError, "[0, 1]"),
        (np.zeros((2, 3)), [0, 1], [0.5, np.nan], ValueError, "teacher_confidence"),
        (np.zeros((2, 3)), [0, 1], [0.5], ValueError, "teacher_confidence"),
    ],
)
def test_bad_input_raises_and_state_is_kept(logits, labels, conf, exc, words):
    sel = make()
    sel.step(np.zeros((2, 3)), [0, 1], [0.5, 0.7])
    state = sel.state.copy()
    with pytest.raises(exc, match=None) as info:
        sel.step(logits, np.asarray(labels), np.asarray(conf))
    assert words in str(info.value)
    np.testing.assert_array_equal(sel.state.class_levels, state.class_levels)
    np.testing.assert_array_equal(sel.state.global_levels, state.global_levels)
    assert sel.state.n_updates == state.n_updates


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n_classes=1),
        dict(n_classes=3, momentum=1.0),
        dict(n_classes=3, momentum=-0.1),
        dict(n_classes=3, mode="best"),
        dict(n_classes=3, weighting="square"),
        dict(n_classes=3, backend="tpu"),
        dict(n_classes=3, fixed_threshold=2.0),
        dict(n_classes=3, random_rate=-1),
        dict(n_classes=3, n_threads=0),
    ],
)
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        AdaptiveSelector(**kwargs)


def test_torch_tensor_input_is_accepted():
    torch = pytest.importorskip("torch")
    sel = make()
    res = sel.step(torch.zeros(4, 3, requires_grad=True), torch.tensor([0, 1, 2, 0]), torch.rand(4))
    assert isinstance(res.mask, np.ndarray) and res.mask.shape == (4,)


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_tied_values_pass_their_own_running_mean(backend):
    """A teacher with one constant confidence (or uniform logits) must not be rejected
    because a running mean of tied values rounds one ulp above them."""
    from llkd.selection._backends import native_available

    if backend == "native" and not native_available():
        pytest.skip("native extension not built")
    rng = np.random.default_rng(0)
    sel = AdaptiveSelector(2, momentum=0.9, mode="teacher", backend=backend)
    for _ in range(50):
        res = sel.step(rng.normal(size=(16, 2)), rng.integers(0, 2, 16), np.full(16, 0.85))
        assert res.mask.all()
    sel = AdaptiveSelector(3, momentum=0.99, mode="student", backend=backend)
    for _ in range(50):
        res = sel.step(np.zeros((16, 3), dtype=np.float32), rng.integers(0, 3, 16), rng.random(16))
        assert res.mask.all()


def test_the_student_test_keeps_the_rows_the_student_finds_hard():
    # one class, first step: tau_S = g_S * m_S / max m_S = mean(u), so the rows above it pass
    logits = np.array([[0.0, 0.0], [0.0, 0.5], [0.0, 4.0], [0.0, 6.0]])
    u = entropy_direct(logits)
    assert u[0] == pytest.approx(1.0) and u[0] > u[1] > np.mean(u) > u[2] > u[3]
    labels, conf = np.zeros(4, dtype=int), np.full(4, 0.9)
    res = make(mode="student", n_classes=2).step(logits, labels, conf)
    assert res.student_threshold[0] == pytest.approx(np.mean(u))
    np.testing.assert_array_equal(res.mask, [True, True, False, False])
    # in llkd mode with equal confidences the teacher test passes everywhere: the same rows
    np.testing.assert_array_equal(make(n_classes=2).step(logits, labels, conf).mask, [True, True, False, False])
