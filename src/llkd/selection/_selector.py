"""AdaptiveSelector: the stateful, backend-dispatching front of the selection rule."""

from __future__ import annotations

import numbers
import os

import numpy as np

from . import _backends, _reference, _validation
from ._reference import MODES, WEIGHTINGS
from ._state import SelectionResult, SelectorState

#: The weighting each mode takes under ``weighting="auto"``: the spec's modes keep the
#: product weighting of docs/design.md section 3; ``class_mean`` is defined with weight 1.
AUTO_WEIGHTING = {"class_mean": "none"}


#: The rule ``selection="auto"`` stands for, per student kind (benchmarks/RESULTS.md,
#: "Selection rules (issue 13)"): confidence weights paid on every noisy set for the
#: frozen-encoder MLP, but cost the fine-tuned student up to 14 points on Reuters R8.
AUTO_SELECTION = {"mlp": "confidence", "finetune": "all"}


def resolve_selection(selection: str, student_kind: str) -> str:
    """The mode ``selection`` stands for with a student of ``student_kind`` ("mlp", "finetune")."""
    if selection == "auto":
        return AUTO_SELECTION[student_kind]
    return selection


def resolve_weighting(mode: str, weighting: str) -> str:
    """The weighting ``weighting`` stands for in ``mode`` (``"auto"`` resolved)."""
    if weighting == "auto":
        return AUTO_WEIGHTING.get(mode, "product")
    return weighting


def reads_student(mode: str, weighting: str) -> bool:
    """Whether the mask or the weights of ``mode`` depend on the student's logits.

    When they do not, a trainer may skip the scoring forward pass and hand the selector
    any logits (the reported uncertainties and student levels then mean nothing).
    """
    weighting = resolve_weighting(mode, weighting)
    return mode in ("llkd", "student") or (weighting == "product" and mode not in ("all", "confidence"))


def default_n_threads() -> int:
    """Threads for the CPU kernel: the cores this process may use, at most 16."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 16))


class AdaptiveSelector:
    """Class-wise adaptive sample selection of LLKD (docs/design.md section 3).

    At every training step the selector receives the student's logits, the teacher's
    pseudo-labels and the teacher's confidences for a mini-batch, updates running
    global and per-class levels of teacher confidence and student uncertainty, and
    keeps the samples whose teacher label is reliable *and* that the student still
    finds hard, weighting each by both.

    Parameters
    ----------
    n_classes : int
        Number of classes ``C >= 2``.
    momentum : float, default=0.9
        Momentum ``lam`` of the running levels, in [0, 1). 0.9 averages over about
        the last 10 batches. The student's uncertainty falls fast while it learns,
        and a slower average lags behind it: the student test then rejects whole
        batches for many steps (``benchmarks/RESULTS.md``, section study_selection).
        Rare classes only update when present, so their levels still average over
        many batches.
    mode : {"llkd", "teacher", "student", "all", "fixed", "random", "class_mean", "confidence"}, default="llkd"
        ``"llkd"`` keeps samples passing both class-wise tests; ``"teacher"`` and
        ``"student"`` one test each; ``"all"`` keeps every sample with weight 1;
        ``"fixed"`` keeps ``c >= fixed_threshold``; ``"random"`` keeps each sample with
        probability ``random_rate``; ``"class_mean"`` keeps ``c >= m_T[y]``, a
        pseudo-label at least as confident as its class's running mean confidence
        (the teacher test without the ``g_T / max_j m_T[j]`` factor, docs/design.md
        section 3); ``"confidence"`` keeps every sample, weighted by its confidence above
        chance, ``e = max(0, (C c - 1) / (C - 1))``, normalised to mean 1 over the batch.
        Levels and thresholds are tracked in every mode.
    weighting : {"product", "none", "auto"}, default="product"
        ``"product"`` weights selected samples by ``c * u`` normalised to mean 1 (when
        every selected sample has ``c * u == 0`` they keep weight 1); ``"none"`` gives
        selected samples weight 1; ``"auto"`` is ``"none"`` for ``"class_mean"`` and
        ``"product"`` otherwise (kept resolved in ``weighting``). Ignored in modes ``"all"``
        and ``"confidence"``.
    backend : {"auto", "native", "cuda", "numpy"}, default="auto"
        ``"numpy"`` is the reference; ``"native"`` the multi-threaded C++ kernel;
        ``"cuda"`` the CUDA kernel (CUDA tensors in, CUDA tensors out); ``"auto"``
        takes ``"cuda"`` for CUDA input when built, else ``"native"`` when built, else
        ``"numpy"``.
    fixed_threshold : float, default=0.9
        Confidence threshold of mode ``"fixed"``.
    random_rate : float, default=0.1
        Keep probability of mode ``"random"``.
    n_threads : int or None, default=None
        Threads of the CPU kernel; None uses the available cores (at most 16).
    random_state : int, Generator or None, default=None
        Seed of the draws of mode ``"random"``.

    Attributes
    ----------
    state : SelectorState
        Running levels (float64) and the number of updates.
    n_steps : int
        Calls to :meth:`step` so far.

    Examples
    --------
    >>> import numpy as np
    >>> from llkd.selection import AdaptiveSelector
    >>> sel = AdaptiveSelector(n_classes=3, backend="numpy")
    >>> rng = np.random.default_rng(0)
    >>> res = sel.step(rng.normal(size=(8, 3)), rng.integers(0, 3, 8), rng.random(8))
    >>> res.mask.shape, res.teacher_threshold.shape
    ((8,), (3,))
    """

    def __init__(
        self,
        n_classes: int,
        momentum: float = 0.9,
        mode: str = "llkd",
        weighting: str = "product",
        backend: str = "auto",
        *,
        fixed_threshold: float = 0.9,
        random_rate: float = 0.1,
        n_threads: int | None = None,
        random_state=None,
    ):
        if isinstance(n_classes, bool) or not isinstance(n_classes, numbers.Integral):
            raise TypeError(f"n_classes must be an int, got {type(n_classes).__name__}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        if not isinstance(momentum, numbers.Real) or not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be a float in [0, 1), got {momentum!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if weighting != "auto" and weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be 'auto' or one of {WEIGHTINGS}, got {weighting!r}")
        if backend not in _backends.BACKENDS:
            raise ValueError(f"backend must be one of {_backends.BACKENDS}, got {backend!r}")
        if not isinstance(fixed_threshold, numbers.Real) or not 0.0 <= fixed_threshold <= 1.0:
            raise ValueError(f"fixed_threshold must be in [0, 1], got {fixed_threshold!r}")
        if not isinstance(random_rate, numbers.Real) or not 0.0 <= random_rate <= 1.0:
            raise ValueError(f"random_rate must be in [0, 1], got {random_rate!r}")
        if n_threads is not None and (
            isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral) or n_threads < 1
        ):
            raise ValueError(f"n_threads must be a positive int or None, got {n_threads!r}")
        if backend == "native" and not _backends.native_available():
            raise ValueError("backend='native' requested but llkd's C++ extension is not built")
        if backend == "cuda" and not _backends.cuda_built():
            raise ValueError("backend='cuda' requested but llkd was built without CUDA")
        self.n_classes = int(n_classes)
        self.momentum = float(momentum)
        self.mode = mode
        self.weighting = resolve_weighting(mode, weighting)
        self.backend = backend
        self.fixed_threshold = float(fixed_threshold)
        self.random_rate = float(random_rate)
        self.n_threads = default_n_threads() if n_threads is None else int(n_threads)
        self._rng = np.random.default_rng(random_state)
        self.state = SelectorState.empty(self.n_classes)
        self.n_steps = 0

    # ------------------------------------------------------------------ public
    def step(self, student_logits, pseudo_labels, teacher_confidence) -> SelectionResult:
        """Update the levels with one mini-batch and select from it.

        Parameters
        ----------
        student_logits : array of shape (B, n_classes), float32 or float64
            Detached logits of the student's forward pass (NumPy array or tensor).
        pseudo_labels : array of int, shape (B,)
            Teacher labels in ``[0, n_classes)``.
        teacher_confidence : array of float, shape (B,)
            Teacher confidences in [0, 1].

        Returns
        -------
        SelectionResult
        """
        result = self._run(student_logits, pseudo_labels, teacher_confidence, update=True)
        self.n_steps += 1
        return result

    def score(self, student_logits, pseudo_labels, teacher_confidence) -> SelectionResult:
        """Select from a pool against the current thresholds without updating them.

        Before the first :meth:`step` all thresholds are 0, so every sample passes
        the class-wise tests.
        """
        return self._run(student_logits, pseudo_labels, teacher_confidence, update=False)

    def reset(self) -> AdaptiveSelector:
        """Forget the running levels."""
        self.state = SelectorState.empty(self.n_classes)
        self.n_steps = 0
        return self

    @property
    def teacher_threshold(self) -> np.ndarray:
        return _reference.thresholds(self.state, self.mode)[0]

    @property
    def student_threshold(self) -> np.ndarray:
        return _reference.thresholds(self.state, self.mode)[1]

    def resolve_backend(self, student_logits=None) -> str:
        """The backend a call with these logits would use."""
        if self.backend != "auto":
            return self.backend
        if student_logits is not None and _validation.is_cuda_array(student_logits):
            if _backends.cuda_built() and _backends.cuda_device_count() > 0:
                return "cuda"
        if _backends.native_module() is not None:
            return "native"
        return "numpy"

    def __repr__(self) -> str:
        return (
            f"AdaptiveSelector(n_classes={self.n_classes}, momentum={self.momentum}, "
            f"mode={self.mode!r}, weighting={self.weighting!r}, backend={self.backend!r})"
        )

    # ----------------------------------------------------------------- private
    def _draws(self, n: int):
        return self._rng.random(n) if self.mode == "random" else None

    def _run(self, student_logits, pseudo_labels, teacher_confidence, *, update: bool):
        # A call that raises leaves the selector as it was, its generator included: the
        # native kernel checks values only after the draws are taken.
        rng_state = self._rng.bit_generator.state if self.mode == "random" else None
        try:
            return self._run_backend(student_logits, pseudo_labels, teacher_confidence, update=update)
        except BaseException:
            if rng_state is not None:
                self._rng.bit_generator.state = rng_state
            raise

    def _run_backend(self, student_logits, pseudo_labels, teacher_confidence, *, update: bool):
        backend = self.resolve_backend(student_logits)
        params = dict(
            momentum=self.momentum,
            mode=self.mode,
            weighting=self.weighting,
            fixed_threshold=self.fixed_threshold,
            random_rate=self.random_rate,
            update=update,
        )
        if backend == "cuda":
            from . import _cuda

            return _cuda.step(
                self.state,
                student_logits,
                pseudo_labels,
                teacher_confidence,
                random_draws=self._draws(_cuda.n_rows(student_logits)),
                **params,
            )
        logits = _validation.check_logits(_validation.to_host(student_logits, "student_logits"), self.n_classes)
        n = logits.shape[0]
        values = backend != "native"  # the C++ kernel checks values in its own pass
        labels = _validation.check_labels(
            _validation.to_host(pseudo_labels, "pseudo_labels"), n, self.n_classes, values=values
        )
        confidence = _validation.check_confidence(
            _validation.to_host(teacher_confidence, "teacher_confidence"), n, values=values
        )
        draws = self._draws(n)
        if backend == "native":
            from . import _native

            return _native.step(
                self.state,
                logits,
                labels,
                confidence,
                random_draws=draws,
                n_threads=self.n_threads,
                **params,
            )
        _validation.check_finite_logits(logits)
        return _reference.step(self.state, logits, labels, confidence, random_draws=draws, **params)
