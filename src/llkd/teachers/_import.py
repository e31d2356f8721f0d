"""Answers computed elsewhere (vLLM replicas, Ray Data batch jobs) into the answer cache."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ._base import TeacherOutput, check_texts, identity_key, output_from_answer
from ._batching import open_cache

__all__ = ["read_answers", "import_answers"]


def _records(source) -> list[Mapping]:
    """Rows of ``source``: a path (.jsonl, .json, .csv, .parquet), a DataFrame, or mappings."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        ext = os.path.splitext(path)[1].lower()
        if ext in (".jsonl", ".ndjson"):
            with open(path, encoding="utf-8") as fh:
                rows = []
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise ValueError(f"{path}, line {n}: not JSON ({exc.msg})") from None
                return rows
        if ext == ".json":
            with open(path, encoding="utf-8") as fh:
                return list(json.load(fh))
        if ext == ".csv":
            with open(path, encoding="utf-8", newline="") as fh:
                return list(csv.DictReader(fh))
        if ext == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise ImportError(f"reading {path} needs pyarrow (pip install pyarrow)") from None
            return pq.read_table(path).to_pylist()
        raise ValueError(f"{path}: unknown format {ext!r} (use .jsonl, .json, .csv or .parquet)")
    if hasattr(source, "to_dict") and hasattr(source, "columns"):  # a pandas DataFrame
        return source.to_dict("records")
    if isinstance(source, Iterable):
        return list(source)
    raise TypeError(f"source must be a path, a DataFrame or an iterable of mappings, got {type(source).__name__}")


def read_answers(source, classes: Sequence[str], *, text="text", proba=None, label=None, confidence=None):
    """Texts and a :class:`TeacherOutput` from answers stored as records.

    Parameters
    ----------
    source : path, DataFrame or iterable of mappings
        ``.jsonl``/``.json``/``.csv``/``.parquet`` (Parquet needs pyarrow), or rows.
    classes : sequence of str
        The teacher's class names, in order.
    text : str, default="text"
        Column holding the text each answer belongs to.
    proba : str, list of str or None
        Either one column holding the class distribution (a list of ``len(classes)``
        numbers, or its JSON text in a CSV), or one column per class, in ``classes`` order.
    label, confidence : str or None
        Instead of ``proba``: the column with the class (name or index) and the column
        with its confidence in [0, 1].

    Returns
    -------
    texts : list of str
    output : TeacherOutput
    """
    if (proba is None) == (label is None):
        raise ValueError("give the answer columns: proba=..., or label=... with confidence=...")
    if label is not None and confidence is None:
        raise ValueError("label= needs confidence= (the confidence column)")
    rows = _records(source)
    if not rows:
        raise ValueError("source holds no answers")
    needed = [text] + ([proba] if isinstance(proba, str) else list(proba or [])) + [c for c in (label, confidence) if c]
    for n, row in enumerate(rows):
        missing = [c for c in needed if c not in row]
        if missing:
            raise ValueError(f"row {n} has no column {missing[0]!r} (it has {sorted(row)[:8]})")
    texts = check_texts([row[text] for row in rows])
    where = f"answers read from {source if isinstance(source, (str, os.PathLike)) else type(source).__name__}"
    if proba is not None:
        if isinstance(proba, str):
            values = [json.loads(r[proba]) if isinstance(r[proba], str) else r[proba] for r in rows]
        else:
            values = [[r[c] for c in proba] for r in rows]
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: the proba column(s) are not numbers of one length per row") from None
        out = output_from_answer(arr, len(texts), classes, where)
    else:
        labels = [r[label] for r in rows]
        if all(isinstance(v, str) and v.strip().lstrip("-").isdigit() for v in labels) and not set(labels) & set(
            classes
        ):
            labels = [int(v) for v in labels]  # class indices written as text (CSV)
        conf = np.asarray([float(r[confidence]) for r in rows])
        out = output_from_answer((labels, conf), len(texts), classes, where)
    first: dict[str, int] = {}
    for i, t in enumerate(texts):
        j = first.setdefault(t, i)
        if j != i and (out.labels[j] != out.labels[i] or out.confidence[j] != out.confidence[i]):
            raise ValueError(f"{where}: text {t[:60]!r} appears twice (rows {j} and {i}) with different answers")
    keep = np.array(sorted(first.values()), dtype=np.int64)
    return [texts[i] for i in keep], out.take(keep)


def import_answers(source, teacher, cache=True, **columns) -> int:
    """Store answers computed elsewhere in the answer cache, under ``teacher``'s identity.

    Labelling millions of texts is a batch job for a cluster (vLLM replicas behind one URL,
    or Ray Data with vLLM writing Parquet); its output comes back here so that
    ``LLKDClassifier(teacher=teacher, teacher_cache=cache)`` finds every answer and asks
    the teacher nothing. ``teacher`` must be configured as the job was (same model, prompt,
    verbalizers): its ``identity`` is the cache key. An ``OpenAITeacher`` with
    ``logprobs="auto"`` is keyed as answering with log-probabilities.

    Parameters
    ----------
    source : path, DataFrame or iterable of mappings
        See :func:`read_answers` (the column arguments are passed on).
    teacher : teacher
        The teacher the answers are attributed to (it is not called).
    cache : True, path or TeacherCache, default=True
        The answer cache (``True``: the default file under ``$LLKD_HOME``).
    **columns
        ``text=``, ``proba=`` or ``label=`` and ``confidence=``, as :func:`read_answers`.

    Returns
    -------
    int
        The number of distinct texts written.
    """
    tkey = identity_key(getattr(teacher, "identity", None), list(teacher.classes))
    if tkey is None:
        raise ValueError(f"{type(teacher).__name__} has no identity, so its answers cannot be cached")
    store = open_cache(cache)
    if store is None:
        raise ValueError("import_answers needs a cache (True, a path or a TeacherCache)")
    texts, out = read_answers(source, list(teacher.classes), **columns)
    store.put(tkey, texts, TeacherOutput(out.labels, out.confidence, out.proba), len(teacher.classes))
    return len(texts)
