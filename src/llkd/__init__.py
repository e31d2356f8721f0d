"""llkd: distil a large language model into a small, fast text classifier.

The method is LLKD ("Learning with Less: Knowledge Distillation from Large Language
Models via Unlabeled Data", Li et al., 2025): the student trains on teacher
pseudo-labels, choosing at every step the samples with a reliable teacher label that
the student still finds hard.
"""

from __future__ import annotations

from ._config import show_config

__version__ = "0.1.0"

__all__ = ["LLKDClassifier", "show_config", "__version__"]


def __getattr__(name):
    # The estimator pulls in torch and scikit-learn; import it on first use only.
    if name == "LLKDClassifier":
        from .estimator import LLKDClassifier

        return LLKDClassifier
    raise AttributeError(f"module 'llkd' has no attribute {name!r}")
