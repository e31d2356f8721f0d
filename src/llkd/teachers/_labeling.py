"""label_in_batches: ask a teacher for a pool of texts, batch by batch, through the cache."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np

from ._base import TeacherError, TeacherOutput, as_teacher, check_teacher_output, check_texts, identity_key
from ._cache import TeacherCache

__all__ = ["label_in_batches"]


def _open_cache(cache) -> TeacherCache | None:
    if cache is None or cache is False:
        return None
    if isinstance(cache, TeacherCache):
        return cache
    if cache is True:
        return TeacherCache()
    if isinstance(cache, (str, os.PathLike)):
        return TeacherCache(cache)
    raise TypeError(f"cache must be None, True, a path or a TeacherCache, got {type(cache).__name__}")


_WRAPPED: dict = {}


def _wrap(exc: BaseException, message: str, **info) -> TeacherError:
    """A TeacherError that is also an instance of the teacher's exception type.

    ``except ValueError`` still catches a teacher's ValueError, ``except TeacherError``
    catches every teacher failure, and ``__cause__`` is the original. Types whose C
    layout cannot be combined with RuntimeError (OSError and subclasses) give a plain
    TeacherError.
    """
    cls = type(exc)
    if cls not in _WRAPPED:
        try:
            _WRAPPED[cls] = type(f"TeacherError[{cls.__name__}]", (TeacherError, cls), {"__module__": __name__})
        except TypeError:
            _WRAPPED[cls] = TeacherError
    try:
        return _WRAPPED[cls](message, **info)
    except Exception:
        return TeacherError(message, **info)


def _teacher_name(teacher) -> str:
    return type(teacher).__name__


def _cached(store: TeacherCache, tkey: str, texts: list, C: int) -> dict:
    hits = store.get(tkey, texts, n_classes=C)
    return {texts[j]: ans for j, ans in hits.items() if 0 <= ans[0] < C and (ans[2] is None or ans[2].shape == (C,))}


def label_in_batches(
    teacher,
    texts: Sequence[str],
    batch_size: int | None = None,
    cache=None,
    progress: bool = False,
    *,
    labels=None,
    sort_by_length: bool = True,
    on_batch=None,
) -> TeacherOutput:
    """Label ``texts`` with ``teacher``, batch by batch, paying only for what is not cached.

    Parameters
    ----------
    teacher : teacher object or callable
        Passed through :func:`as_teacher` (with ``labels`` for a callable).
    texts : sequence of str
        Non-empty.
    batch_size : int, optional
        Texts per ``teacher.label`` call; default: the teacher's ``batch_size``
        attribute, else 16.
    cache : None, True, path or TeacherCache
        Durable cache. Answers are read from it first; each batch the teacher answers is
        written in its own transaction before the next batch is asked, so answers already
        paid for survive a crash or an exception. A teacher whose ``identity`` is None is
        not cached (a warning says so).
    progress : bool
        Show a progress bar (tqdm) over the texts sent to the teacher.
    sort_by_length : bool
        Send the texts in order of length (shortest first) so that batches hold texts of
        similar length (less padding for local models). Answers come back in the
        original order either way.
    on_batch : callable, optional
        Called as ``on_batch(batch_texts, output)`` after each batch the teacher answered
        (and after it was cached): a caller can keep what was paid for even when a later
        batch fails. For a :class:`~llkd.teachers.CalibratedTeacher` it is called once,
        with the whole pool, since its answers are calibrated over the pool.

    Returns
    -------
    TeacherOutput
        One answer per text, in the order of ``texts``. ``proba`` is None unless every
        answer (cached or new) has a distribution.

    Raises
    ------
    TeacherError
        The teacher raised; its exception is the ``__cause__`` and the message says which
        batch (index and range) failed and how many answers were saved before it.
    ValueError, TypeError
        Empty or non-string texts; a teacher answer with the wrong count, labels out of
        range, confidence outside [0, 1] or NaN.

    A :class:`~llkd.teachers.CalibratedTeacher` is handled specially: its inner teacher
    is asked (and cached: raw answers), then its calibration is fitted/applied over the
    whole pool at once.
    """
    from ._calibration import CalibratedTeacher

    teacher = as_teacher(teacher, labels=labels)
    if isinstance(teacher, CalibratedTeacher):
        raw = label_in_batches(teacher.teacher, texts, batch_size, cache, progress,
                               sort_by_length=sort_by_length)
        out = teacher.calibrate_output(raw)
        if on_batch is not None:  # calibrated answers exist only for the whole pool
            on_batch(list(texts), out)
        return out

    texts = check_texts(texts)
    if batch_size is None:
        batch_size = getattr(teacher, "batch_size", None) or 16
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    classes = list(teacher.classes)
    C = len(classes)
    store = _open_cache(cache)
    tkey = None
    if store is not None:
        tkey = identity_key(getattr(teacher, "identity", None), classes)
        if tkey is None:
            warnings.warn(
                f"{_teacher_name(teacher)} has no `identity`, so its answers are not cached; "
                "give it an identity (e.g. CallableTeacher(fn, labels, identity='my-model-v1'))",
                UserWarning,
                stacklevel=2,
            )
            store = None

    n = len(texts)
    lab = np.full(n, -1, dtype=np.int64)
    conf = np.zeros(n, dtype=np.float64)
    probas: list = [None] * n

    # Distinct texts: each is asked once.
    first: dict[str, int] = {}
    for i, t in enumerate(texts):
        first.setdefault(t, i)
    uniq = list(first)
    done: dict[str, tuple] = _cached(store, tkey, uniq, C) if store is not None else {}
    todo = [t for t in uniq if t not in done]
    if todo and store is not None and callable(getattr(teacher, "settle_identity", None)):
        # The teacher decides how it answers (OpenAITeacher, logprobs="auto"); its identity says which.
        try:
            teacher.settle_identity(todo[:1])
        except Exception as exc:
            raise _wrap(exc, f"{_teacher_name(teacher)} raised {type(exc).__name__} on its first text, "
                        f"before batch 0 (no answer was lost): {exc}",
                        batch_index=0, start=0, stop=1, n_done=0) from exc
        if (key := identity_key(teacher.identity, classes)) != tkey:
            tkey = key
            done = _cached(store, tkey, uniq, C)
            todo = [t for t in uniq if t not in done]
    if sort_by_length:
        todo.sort(key=len)

    bar = None
    if progress and todo:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=f"labeling with {_teacher_name(teacher)}", unit="text")
        except ImportError:  # pragma: no cover
            bar = None
    n_batches = (len(todo) + batch_size - 1) // batch_size
    # With a cache, batches are claimed in it first: texts another process is asking are
    # left to it and read from the cache after the loop (TeacherCache.share).
    batches = (store.share(tkey, todo, batch_size) if store is not None
               else (todo[s : s + batch_size] for s in range(0, len(todo), batch_size)))
    e = 0
    try:
        for b, batch in enumerate(batches):
            s, e = e, e + len(batch)
            try:
                out = teacher.label(batch)
            except Exception as exc:
                answered = getattr(exc, "answered", None)  # (texts, output) the teacher got before failing
                kept = s
                if store is not None and answered is not None:
                    store.put(tkey, *answered)
                    kept += len(answered[0])
                raise _wrap(
                    exc,
                    f"{_teacher_name(teacher)} raised {type(exc).__name__} on batch {b} of {n_batches} "
                    f"(texts {s}..{e - 1} of the {len(todo)} sent to the teacher; "
                    f"{kept} answers are kept{' in the cache' if store is not None else ''}): {exc}",
                    batch_index=b, start=s, stop=e, n_done=kept,
                ) from exc
            try:
                out = check_teacher_output(out, len(batch), C, f"{_teacher_name(teacher)} (batch {b}, texts {s}..{e - 1})")
            except (TypeError, ValueError) as exc:
                raise type(exc)(str(exc)) from None
            if store is not None:
                store.put(tkey, batch, out)
            if on_batch is not None:
                on_batch(batch, out)
            for j, t in enumerate(batch):
                done[t] = (int(out.labels[j]), float(out.confidence[j]),
                           None if out.proba is None else out.proba[j])
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
        if store is not None:
            batches.close()
    if store is not None and len(done) < len(uniq):  # answered by other processes meanwhile
        done.update(_cached(store, tkey, [t for t in uniq if t not in done], C))

    for i, t in enumerate(texts):
        lab[i], conf[i], probas[i] = done[t]
    proba = None
    if all(p is not None for p in probas):
        proba = np.stack(probas).astype(np.float64) if n else np.zeros((0, C))
    return TeacherOutput(lab, conf, proba)
