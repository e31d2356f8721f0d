"""Bad input (docs/design.md section 5) for the selection backends and the raw C++ module.

Through AdaptiveSelector both backends ("numpy" and "native") must raise the same
exception type with a message naming the argument, and leave the state untouched.
The raw module (``llkd.selection._selection_cpu.Kernel``) checks everything itself: it is called
here with wrong types, dtypes, shapes, layouts and values, and a battery of garbage
calls runs in a subprocess to prove the interpreter survives all of them.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from llkd.selection import AdaptiveSelector

cpu = pytest.importorskip(
    "llkd.selection._selection_cpu",
    reason="llkd's C++ extension is not built (pip install -e . compiles it)",
)

C = 4
RNG = np.random.default_rng(0)
Z = RNG.normal(size=(6, C))
Y = np.array([0, 1, 2, 3, 0, 1])
CONF = np.linspace(0.1, 0.9, 6)


def with_nan():
    z = Z.copy()
    z[3, 2] = np.nan
    return z


def with_value(v, row=5, col=3, dtype=np.float64):
    z = Z.astype(dtype)
    z[row, col] = v
    return z


# (name, logits, labels, confidence, exception, words the message must contain)
SELECTOR_CASES = [
    ("logits 1-D", Z[0], Y[:1], CONF[:1], ValueError, ["student_logits", "2-D"]),
    ("logits 3-D", Z[None], Y, CONF, ValueError, ["student_logits", "2-D"]),
    ("logits wrong C", Z[:, :3], Y, CONF, ValueError, ["student_logits", "n_classes"]),
    ("empty batch", Z[:0], Y[:0], CONF[:0], ValueError, ["student_logits", "empty"]),
    ("integer logits", Z.astype(np.int64), Y, CONF, TypeError, ["student_logits", "float"]),
    ("complex logits", Z.astype(complex), Y, CONF, TypeError, ["student_logits", "float"]),
    ("string logits", np.full((6, C), "a"), Y, CONF, TypeError, ["student_logits"]),
    ("ragged logits", [[1.0, 2.0], [1.0]], Y[:2], CONF[:2], TypeError, ["student_logits"]),
    ("NaN logits", with_nan(), Y, CONF, ValueError, ["student_logits", "NaN"]),
    ("+inf logits", with_value(np.inf), Y, CONF, ValueError, ["student_logits"]),
    ("-inf logits", with_value(-np.inf, row=0, col=0), Y, CONF, ValueError, ["student_logits"]),
    ("inf float32 logits", with_value(np.inf, dtype=np.float32), Y, CONF, ValueError, ["student_logits"]),
    ("labels too short", Z, Y[:5], CONF, ValueError, ["pseudo_labels", "shape"]),
    ("labels 2-D", Z, Y[:, None], CONF, ValueError, ["pseudo_labels", "shape"]),
    ("label too large", Z, np.array([0, 1, 2, 4, 0, 1]), CONF, ValueError, ["pseudo_labels", "4"]),
    ("negative label", Z, np.array([0, -1, 2, 3, 0, 1]), CONF, ValueError, ["pseudo_labels", "-1"]),
    ("fractional labels", Z, Y + 0.5, CONF, TypeError, ["pseudo_labels"]),
    ("string labels", Z, np.array(list("abcdef")), CONF, TypeError, ["pseudo_labels"]),
    ("confidence too short", Z, Y, CONF[:5], ValueError, ["teacher_confidence", "shape"]),
    ("NaN confidence", Z, Y, np.where(np.arange(6) == 2, np.nan, CONF), ValueError, ["teacher_confidence", "NaN"]),
    ("inf confidence", Z, Y, np.where(np.arange(6) == 2, np.inf, CONF), ValueError, ["teacher_confidence"]),
    ("confidence > 1", Z, Y, CONF + 0.5, ValueError, ["teacher_confidence", "[0, 1]"]),
    ("confidence < 0", Z, Y, CONF - 0.5, ValueError, ["teacher_confidence", "[0, 1]"]),
    ("string confidence", Z, Y, np.array(list("abcdef")), TypeError, ["teacher_confidence"]),
]


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("case", SELECTOR_CASES, ids=[c[0] for c in SELECTOR_CASES])
def test_selector_rejects_bad_input_and_keeps_state(backend, case):
    _, logits, labels, conf, exc, words = case
    sel = AdaptiveSelector(C, 0.9, backend=backend)
    sel.step(Z, Y, CONF)  # a valid first step
    before = sel.state.copy()
    for call in (sel.step, sel.score):
        with pytest.raises(exc) as info:
            call(logits, labels, conf)
        for w in words:
            assert w in str(info.value), (w, str(info.value))
        np.testing.assert_array_equal(sel.state.global_levels, before.global_levels)
        np.testing.assert_array_equal(sel.state.class_levels, before.class_levels)
        assert sel.state.n_updates == before.n_updates
    assert sel.n_steps == 1


# --------------------------------------------------------------------- raw module
CONFIG = dict(
    n_classes=C, mode="llkd", weighting="product", momentum=0.9, fixed_threshold=0.5, random_rate=0.1, n_threads=2
)


def raw_args(**over):
    args = dict(
        student_logits=Z.copy(),
        pseudo_labels=Y.astype(np.int64),
        teacher_confidence=CONF.copy(),
        global_levels=np.array([0.5, 0.5]),
        class_levels=np.full((2, C), 0.5),
        n_updates=3,
        random_draws=None,
        update=True,
    )
    args.update(over)
    return args


def raw_call(args, **config):
    """Kernel(**CONFIG with config).step(**args): a bad value fails in either."""
    return cpu.Kernel(**{**CONFIG, **config}).step(**args)


def readonly(a):
    a = a.copy()
    a.setflags(write=False)
    return a


RAW_CASES = [
    # logits
    ("logits list", dict(student_logits=Z.tolist()), TypeError, "student_logits"),
    ("logits None", dict(student_logits=None), TypeError, "student_logits"),
    ("logits int", dict(student_logits=Z.astype(np.int32)), TypeError, "student_logits"),
    ("logits float16", dict(student_logits=Z.astype(np.float16)), TypeError, "student_logits"),
    ("logits big-endian", dict(student_logits=Z.astype(">f8")), TypeError, "student_logits"),
    ("logits 1-D", dict(student_logits=Z[0].copy()), ValueError, "student_logits"),
    ("logits 0 rows", dict(student_logits=Z[:0].copy()), ValueError, "student_logits"),
    ("logits 1 class", dict(student_logits=Z[:, :1].copy()), ValueError, "student_logits"),
    ("logits F-order", dict(student_logits=np.asfortranarray(Z)), ValueError, "C-contiguous"),
    ("logits strided", dict(student_logits=np.repeat(Z, 2, axis=1)[:, ::2]), ValueError, "C-contiguous"),
    (
        "logits unaligned",
        dict(student_logits=np.frombuffer(b"\0" + Z.tobytes(), np.float64, Z.size, 1).reshape(Z.shape)),
        ValueError,
        "aligned",
    ),
    ("logits NaN", dict(student_logits=with_nan()), ValueError, "student_logits"),
    ("logits inf f32", dict(student_logits=with_value(-np.inf, dtype=np.float32)), ValueError, "student_logits"),
    # labels
    ("labels int32", dict(pseudo_labels=Y.astype(np.int32)), TypeError, "pseudo_labels"),
    ("labels float", dict(pseudo_labels=Y.astype(float)), TypeError, "pseudo_labels"),
    ("labels list", dict(pseudo_labels=Y.tolist()), TypeError, "pseudo_labels"),
    ("labels short", dict(pseudo_labels=Y[:5].copy()), ValueError, "pseudo_labels"),
    ("labels 2-D", dict(pseudo_labels=Y[:, None].copy()), ValueError, "pseudo_labels"),
    ("label = C", dict(pseudo_labels=np.array([0, 1, 2, C, 0, 1])), ValueError, "found 4 at index 3"),
    ("label < 0", dict(pseudo_labels=np.array([0, 1, 2, 3, 0, -7])), ValueError, "found -7 at index 5"),
    ("label huge", dict(pseudo_labels=np.array([2**62, 1, 2, 3, 0, 1])), ValueError, "pseudo_labels"),
    # confidence
    ("conf float32", dict(teacher_confidence=CONF.astype(np.float32)), TypeError, "teacher_confidence"),
    ("conf short", dict(teacher_confidence=CONF[:2].copy()), ValueError, "teacher_confidence"),
    ("conf NaN", dict(teacher_confidence=np.where(np.arange(6) == 4, np.nan, CONF)), ValueError, "teacher_confidence"),
    ("conf > 1", dict(teacher_confidence=np.where(np.arange(6) == 1, 1.5, CONF)), ValueError, "index 1"),
    ("conf < 0", dict(teacher_confidence=np.where(np.arange(6) == 0, -0.1, CONF)), ValueError, "teacher_confidence"),
    # state
    ("global shape", dict(global_levels=np.zeros(3)), ValueError, "global_levels"),
    ("global dtype", dict(global_levels=np.zeros(2, np.float32)), TypeError, "global_levels"),
    ("global readonly", dict(global_levels=readonly(np.zeros(2))), ValueError, "global_levels"),
    ("global NaN", dict(global_levels=np.array([np.nan, 0.5])), ValueError, "global_levels"),
    ("class shape", dict(class_levels=np.zeros((2, C + 1))), ValueError, "class_levels"),
    ("class 1-D", dict(class_levels=np.zeros(2 * C)), ValueError, "class_levels"),
    ("class F-order", dict(class_levels=np.asfortranarray(np.zeros((2, C)))), ValueError, "class_levels"),
    ("class inf", dict(class_levels=np.full((2, C), np.inf)), ValueError, "class_levels"),
    ("class list", dict(class_levels=[[0.0] * C] * 2), TypeError, "class_levels"),
    # scalars
    ("mode unknown", dict(mode="six"), ValueError, "mode must be one of"),
    ("mode empty", dict(mode=""), ValueError, "mode"),
    ("weighting unknown", dict(weighting="sum"), ValueError, "weighting must be one of"),
    ("n_classes 1", dict(n_classes=1), ValueError, "n_classes"),
    ("logits wrong C", dict(n_classes=C + 1), ValueError, "n_classes=5"),
    ("momentum 1", dict(momentum=1.0), ValueError, "momentum"),
    ("momentum NaN", dict(momentum=float("nan")), ValueError, "momentum"),
    ("momentum < 0", dict(momentum=-0.1), ValueError, "momentum"),
    ("n_threads 0", dict(n_threads=0), ValueError, "n_threads"),
    ("n_updates < 0", dict(n_updates=-1), ValueError, "n_updates"),
    ("fixed NaN", dict(fixed_threshold=float("nan")), ValueError, "fixed_threshold"),
    ("rate 2", dict(random_rate=2.0), ValueError, "random_rate"),
    ("random without draws", dict(mode="random"), ValueError, "random_draws"),
    ("draws short", dict(mode="random", random_draws=np.zeros(2)), ValueError, "random_draws"),
    ("draws NaN", dict(mode="random", random_draws=np.array([0.1, np.nan, 0, 0, 0, 0])), ValueError, "random_draws"),
    ("draws int", dict(mode="random", random_draws=np.zeros(6, np.int64)), TypeError, "random_draws"),
    ("mode code", dict(mode=0), TypeError, "mode"),
    ("n_threads float", dict(n_threads=2.5), TypeError, "n_threads"),
]


@pytest.mark.parametrize("case", RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_raw_module_rejects_bad_input_and_keeps_state(case):
    _, over, exc, words = case
    config = {k: over.pop(k) for k in list(over) if k in CONFIG}
    args = raw_args(**over)
    g = args["global_levels"]
    cl = args["class_levels"]
    g_before = np.array(g, copy=True) if isinstance(g, np.ndarray) else None
    c_before = np.array(cl, copy=True) if isinstance(cl, np.ndarray) else None
    with pytest.raises(exc) as info:
        raw_call(args, **config)
    assert words in str(info.value), str(info.value)
    if g_before is not None:
        np.testing.assert_array_equal(g, g_before)
    if c_before is not None:
        np.testing.assert_array_equal(cl, c_before)


def test_raw_module_reports_errors_found_by_any_thread():
    """Errors in a late chunk of a large, multi-threaded batch are reported with their
    row, and nothing is committed."""
    n, c = 200_000, 8
    rng = np.random.default_rng(1)
    z = rng.normal(size=(n, c)).astype(np.float32)
    y = rng.integers(0, c, n)
    conf = rng.random(n)
    g, cl = np.array([0.3, 0.4]), np.full((2, c), 0.2)
    for over, msg in [
        (dict(pseudo_labels=np.where(np.arange(n) == n - 3, c, y)), f"at index {n - 3}"),
        (dict(teacher_confidence=np.where(np.arange(n) == n - 1, 2.0, conf)), f"at index {n - 1}"),
        (dict(student_logits=np.where(np.arange(n)[:, None] == 150_001, np.float32(np.nan), z)), "row 150001"),
    ]:
        args = dict(
            student_logits=z, pseudo_labels=y, teacher_confidence=conf, global_levels=g, class_levels=cl, n_updates=1
        )
        args.update(over)
        with pytest.raises(ValueError, match=msg):
            cpu.Kernel(c, fixed_threshold=0.5, n_threads=3).step(**args)
        np.testing.assert_array_equal(g, [0.3, 0.4])
        np.testing.assert_array_equal(cl, 0.2)
    # the earliest bad row wins, whatever thread found it
    bad = z.copy()
    bad[170_000, 1] = np.inf
    labels = y.copy()
    labels[120_000] = -1
    with pytest.raises(ValueError, match="at index 120000"):
        cpu.Kernel(c, fixed_threshold=0.5, n_threads=4).step(bad, labels, conf, g, cl, 1)


def test_state_updated_in_place_only_on_success():
    args = raw_args()
    g, cl = args["global_levels"], args["class_levels"]
    out = raw_call(args)
    assert out[5] == 4  # n_updates + 1
    assert not np.array_equal(g, [0.5, 0.5])
    args = raw_args(update=False)
    g, cl = args["global_levels"], args["class_levels"]
    out = raw_call(args)
    assert out[5] == 3
    np.testing.assert_array_equal(g, [0.5, 0.5])
    np.testing.assert_array_equal(cl, 0.5)


GARBAGE_SCRIPT = textwrap.dedent(
    r"""
    import itertools, sys
    import numpy as np
    import llkd.selection._selection_cpu as m

    config = dict(n_classes=4, mode="llkd", weighting="product", momentum=0.5, fixed_threshold=0.5,
                  random_rate=0.5, n_threads=1)
    good = dict(
        student_logits=np.zeros((3, 4), np.float32), pseudo_labels=np.zeros(3, np.int64),
        teacher_confidence=np.full(3, 0.5), global_levels=np.zeros(2), class_levels=np.zeros((2, 4)),
        n_updates=0, random_draws=None, update=True,
    )
    garbage = [
        None, 0, -1, 2**70, 1.5, float("nan"), "x", b"\xff", [], [[1.0]], {}, object(),
        np.zeros(0), np.zeros((0, 4)), np.zeros((3, 0)), np.zeros((3, 4, 2)), np.zeros(()),
        np.zeros(3, np.int8), np.zeros(3, np.uint64), np.full(3, 2**40, np.int64),
        np.full(3, -5, np.int64), np.zeros((3, 4), np.complex128), np.zeros((3, 4), object),
        np.zeros((3, 4), "U1"), np.zeros((4, 3), np.float32)[:, ::2], np.zeros((2, 4)),
        np.zeros((3, 4))[::-1], np.zeros(3)[::-1], np.full(3, np.nan), np.full((3, 4), -np.inf),
        np.zeros((2, 4), np.float32), np.zeros(2, np.float16), np.memmap,
    ]
    ok = 0
    for key in list(config) + list(good):
        for value in garbage:
            cfg, args = dict(config), dict(good)
            (cfg if key in config else args)[key] = value
            try:
                m.Kernel(**cfg).step(**args)
                ok += 1
            except (TypeError, ValueError, OverflowError, MemoryError):
                pass
    # positional garbage, wrong arity
    kernel = m.Kernel(**config)
    for args in [(), (1,), tuple(good.values())[:4], tuple(good.values()) + (1,)]:
        try:
            kernel.step(*args)
        except TypeError:
            pass
    for args in [(), ("x",), (4, "llkd", "product", 0.5, 0.5, 0.5, 1, 9)]:
        try:
            m.Kernel(*args)
        except (TypeError, ValueError):
            pass
    print("survived", ok)
    """
)


def test_garbage_calls_never_crash_the_interpreter():
    proc = subprocess.run([sys.executable, "-c", GARBAGE_SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    assert "survived" in proc.stdout


GUARD_SCRIPT = textwrap.dedent(
    r"""
    import ctypes, mmap
    import numpy as np
    import llkd.selection._selection_cpu as m

    libc = ctypes.CDLL(None, use_errno=True)
    PAGE = mmap.PAGESIZE
    keep = []

    def guarded(shape, dtype):
        # an array whose last byte is followed by an unreadable page
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        npages = (nbytes + PAGE - 1) // PAGE + 1
        buf = mmap.mmap(-1, npages * PAGE)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        assert libc.mprotect(ctypes.c_void_p(addr + (npages - 1) * PAGE), PAGE, 0) == 0
        keep.append(buf)
        a = np.frombuffer(buf, dtype, int(np.prod(shape)), (npages - 1) * PAGE - nbytes)
        return a.reshape(shape)

    rng = np.random.default_rng(0)
    calls = 0
    for variant in m.build_info()["simd_supported"]:
        assert m._set_simd(variant)
        for dtype in (np.float32, np.float64):
            for c in list(range(2, 68)) + [100, 129]:
                for n in list(range(1, 12)) + [127, 128, 129, 131]:
                    z = guarded((n, c), dtype)
                    z[...] = rng.normal(size=(n, c))
                    m.Kernel(c, fixed_threshold=0.5).step(z, rng.integers(0, c, n), rng.random(n),
                                                          np.zeros(2), np.zeros((2, c)), 0)
                    calls += 1
    print("calls", calls)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses mmap + mprotect guard pages")
def test_kernel_never_reads_past_the_logits():
    """Every row path (C = 2, gathers, rows in registers, long rows, tails) on arrays
    that end right before an unreadable page: any over-read would crash the process."""
    proc = subprocess.run([sys.executable, "-c", GUARD_SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    assert "calls" in proc.stdout
