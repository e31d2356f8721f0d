"""Teachers: the LLMs (or anything else) that label the unlabeled pool.

A teacher has ``classes`` (the class names, in order) and ``label(texts)`` returning a
:class:`TeacherOutput` (``labels``, ``confidence``, and ``proba`` or None). Provided:

- :class:`TransformersTeacher`: a Hugging Face causal LM scoring the class names after a
  prompt (``TransformersTeacher.from_packaged_gemma(labels=...)`` for the packaged
  Gemma 3 270M);
- :class:`OpenAITeacher`: any OpenAI-compatible server (chat or completions);
- :class:`CallableTeacher`, :class:`PrecomputedTeacher`;
- :func:`label_in_batches` with a durable :class:`TeacherCache`;
- :func:`import_answers`: answers a cluster job computed (vLLM, Ray Data) into that cache;
- calibration: :func:`calibrate`, :func:`calibrate_pool` (:class:`CalibratedTeacher` is
  deprecated: the estimator calibrates over the pool with ``calibration=``).

Example::

    from llkd.teachers import TransformersTeacher, label_in_batches, calibrate

    teacher = TransformersTeacher.from_packaged_gemma(labels=["negative", "positive"])
    raw = label_in_batches(teacher, texts, batch_size=64, cache=True)   # ~/.cache/llkd
    answers = calibrate(raw)              # unsupervised prior correction ("center")

    teacher = OpenAITeacher("gpt-4o-mini", ["negative", "positive"],
                            api_key_env="OPENAI_API_KEY")           # or base_url=vLLM/Ollama
"""

from __future__ import annotations

from ._base import Teacher, TeacherError, TeacherOutput, check_teacher_output, identity_key
from ._batching import label_in_batches
from ._cache import TeacherCache, default_cache_path, llkd_home
from ._calibrated import CalibratedTeacher
from ._calibration import (
    DEFAULT_PRIOR_METHOD,
    PRIOR_METHODS,
    PriorCorrection,
    TeacherCalibrator,
    TemperatureScaling,
    calibrate,
    calibrate_pool,
    calibration_report,
    expected_calibration_error,
    predicted_shares,
    share_shift_warning,
)
from ._callable import CallableTeacher, as_teacher
from ._import import import_answers, read_answers
from ._precomputed import PrecomputedTeacher

__all__ = [
    "Teacher",
    "TeacherOutput",
    "TeacherError",
    "as_teacher",
    "check_teacher_output",
    "identity_key",
    "label_in_batches",
    "import_answers",
    "read_answers",
    "TeacherCache",
    "default_cache_path",
    "llkd_home",
    "CallableTeacher",
    "PrecomputedTeacher",
    "TransformersTeacher",
    "OpenAITeacher",
    "calibrate",
    "calibrate_pool",
    "calibration_report",
    "expected_calibration_error",
    "PriorCorrection",
    "TemperatureScaling",
    "TeacherCalibrator",
    "CalibratedTeacher",
    "PRIOR_METHODS",
    "DEFAULT_PRIOR_METHOD",
    "predicted_shares",
    "share_shift_warning",
]


def __getattr__(name):
    # These pull in torch/transformers or the HTTP machinery: import on first use.
    if name == "TransformersTeacher":
        from ._transformers import TransformersTeacher

        return TransformersTeacher
    if name == "OpenAITeacher":
        from ._openai import OpenAITeacher

        return OpenAITeacher
    raise AttributeError(f"module 'llkd.teachers' has no attribute {name!r}")
