"""The NumPy reference is as careful as the kernels (issue 12, item 9).

- finite float64 logits spanning more than the float64 range give the kernels' exact 0
  uncertainty instead of NaN (which would poison the state);
- a corrupt state (NaN, infinite, wrong shape or dtype, negative count) is refused with
  an error naming the field, on every host backend;
- big-endian input is converted, not refused, on every host backend.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from llkd.selection import AdaptiveSelector, SelectorState, _backends, _reference

C = 3
BACKENDS = [
    "numpy",
    pytest.param(
        "native", marks=pytest.mark.skipif(not _backends.native_available(), reason="llkd's C++ extension is not built")
    ),
]
RNG = np.random.default_rng(0)
Z = RNG.normal(size=(8, C))
Y = np.arange(8) % C
CONF = np.linspace(0.2, 0.9, 8)


def test_reference_entropy_of_logits_spanning_more_than_float64():
    big = np.finfo(np.float64).max * 0.75  # z - max overflows to -inf
    z = np.array([[big, -big, 0.0], [-big, big, big], [1.0, 2.0, 3.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value warnings escape either
        u = _reference.normalized_entropy(z)
    assert np.all(np.isfinite(u))
    assert u[0] == 0.0  # one class dominates completely
    np.testing.assert_allclose(u[1], np.log(2) / np.log(3), rtol=1e-15)  # two equal maxima
    np.testing.assert_array_equal(u[2], _reference.normalized_entropy(z[2:])[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_span_keeps_the_state_finite_and_matches_the_kernel(backend):
    big = np.finfo(np.float64).max * 0.75
    z = np.tile(np.array([[big, -big, 0.0], [0.5, 0.1, -0.3]]), (4, 1))
    sel = AdaptiveSelector(C, backend=backend)
    res = sel.step(z, Y, CONF)
    assert np.all(np.isfinite(sel.state.global_levels)) and np.all(np.isfinite(sel.state.class_levels))
    np.testing.assert_array_equal(res.uncertainty[::2], 0.0)
    if backend == "numpy" and _backends.native_available():
        nat = AdaptiveSelector(C, backend="native").step(z, Y, CONF)
        np.testing.assert_allclose(res.uncertainty, nat.uncertainty, rtol=0, atol=1e-15)


def _set(field, value):
    def corrupt(state: SelectorState):
        setattr(state, field, value)

    return corrupt


def _poke(field, index, value):
    def corrupt(state: SelectorState):
        getattr(state, field)[index] = value

    return corrupt


# (case, corruption of a valid state, exception, words the message must contain)
STATE_CASES = [
    ("NaN global level", _poke("global_levels", 0, np.nan), ValueError, ["global_levels", "NaN"]),
    ("inf class level", _poke("class_levels", (1, 2), np.inf), ValueError, ["class_levels", "NaN or infinite"]),
    ("global levels shape (3,)", _set("global_levels", np.zeros(3)), ValueError, ["global_levels", "shape"]),
    ("class levels for C + 1", _set("class_levels", np.zeros((2, C + 1))), ValueError, ["class_levels", "shape"]),
    ("class levels 1-D", _set("class_levels", np.zeros(2 * C)), ValueError, ["class_levels", "shape"]),
    ("float32 global levels", _set("global_levels", np.zeros(2, np.float32)), TypeError, ["global_levels", "float64"]),
    ("negative update count", _set("n_updates", -1), ValueError, ["n_updates"]),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", STATE_CASES, ids=[c[0] for c in STATE_CASES])
def test_corrupt_state_is_refused(backend, case):
    _, corrupt, exc, words = case
    sel = AdaptiveSelector(C, backend=backend)
    sel.step(Z, Y, CONF)
    corrupt(sel.state)
    for call in (sel.step, sel.score):
        with pytest.raises(exc) as info:
            call(Z, Y, CONF)
        for w in words:
            assert w in str(info.value), (w, str(info.value))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("logits_dtype", [">f8", ">f4"])
def test_big_endian_input_is_converted(backend, logits_dtype):
    native_dtype = np.dtype(logits_dtype).newbyteorder("=")
    a, b = AdaptiveSelector(C, backend=backend), AdaptiveSelector(C, backend=backend)
    for _ in range(2):
        ra = a.step(Z.astype(logits_dtype), Y.astype(">i8"), CONF.astype(">f8"))
        rb = b.step(Z.astype(native_dtype), Y, CONF)
        for field in ("mask", "weights", "uncertainty", "teacher_threshold", "student_threshold"):
            np.testing.assert_array_equal(getattr(ra, field), getattr(rb, field))
    np.testing.assert_array_equal(a.state.class_levels, b.state.class_levels)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", ["label", "nan_logits", "confidence"])
def test_a_failed_random_step_leaves_the_draws_to_come_unchanged(backend, bad):
    labels, logits, conf = Y.copy(), Z.copy(), CONF.copy()
    if bad == "label":
        labels[5] = C  # the native kernel finds it only after the draws are taken
    elif bad == "nan_logits":
        logits[0, 0] = np.nan
    else:
        conf[2] = 1.5
    failed = AdaptiveSelector(C, mode="random", random_rate=0.5, backend=backend, random_state=42)
    with pytest.raises(ValueError):
        failed.step(logits, labels, conf)
    fresh = AdaptiveSelector(C, mode="random", random_rate=0.5, backend=backend, random_state=42)
    for _ in range(3):
        np.testing.assert_array_equal(failed.step(Z, Y, CONF).mask, fresh.step(Z, Y, CONF).mask)
