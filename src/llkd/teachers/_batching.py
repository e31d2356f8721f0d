"""label_in_batches: ask a teacher about a pool of inputs, batch by batch, paying once per input.

One function serves texts and feature rows. Each distinct input is asked once; answers
are looked up first in ``memory`` (a dict the caller keeps, e.g. per teacher object),
then in the durable :class:`~llkd.teachers.TeacherCache`; whatever the teacher answers
is written to both as each batch completes, before the next batch is asked.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from ._base import (
    TeacherOutput,
    check_teacher_output,
    check_texts,
    identity_key,
    input_key,
    split_calibration,
    teacher_error,
)
from ._cache import TeacherCache
from ._callable import as_teacher

__all__ = ["label_in_batches"]


def open_cache(cache) -> TeacherCache | None:
    """``cache`` as a TeacherCache (None, False: no cache; True: the default file)."""
    if cache is None or cache is False:
        return None
    if isinstance(cache, TeacherCache):
        return cache
    if cache is True:
        return TeacherCache()
    if isinstance(cache, (str, os.PathLike)):
        return TeacherCache(cache)
    raise TypeError(f"cache must be None, True, a path or a TeacherCache, got {type(cache).__name__}")


def _hits(store: TeacherCache, tkey: str, keys: list, C: int) -> dict:
    hits = store.get(tkey, keys, n_classes=C)
    return {keys[j]: ans for j, ans in hits.items() if 0 <= ans[0] < C and (ans[2] is None or ans[2].shape == (C,))}


def _cached(store: TeacherCache, tkey: str, keys: list, C: int, legacy: list = ()) -> dict:
    """Cached answers under ``tkey``; missing ones are looked up under the ``legacy`` teacher
    keys (earlier identities of the same teacher) and copied under ``tkey``."""
    hits = _hits(store, tkey, keys, C)
    missing = [k for k in keys if k not in hits]
    for old in legacy:
        if not missing:
            break
        found = _hits(store, old, missing, C)
        for with_proba in (False, True):  # an output holds distributions for all its rows or none
            group = [k for k, ans in found.items() if (ans[2] is not None) == with_proba]
            if group:
                store.put(tkey, group, _output_of([found[k] for k in group]), C)
        hits.update(found)
        missing = [k for k in missing if k not in found]
    return hits


def _keep_answered(answered, store, tkey, C: int, memory) -> int:
    """Keep the ``(keys, output)`` a failing teacher still answered (in the cache and the
    memory); returns how many."""
    if answered is None:
        return 0
    keys, out = answered
    try:
        out = check_teacher_output(out, len(keys), C, "the answers given before the failure")
    except (TypeError, ValueError):  # not usable; the teacher's own failure is what to report
        return 0
    if store is not None:
        store.put(tkey, keys, out, C)
    if memory is not None:
        for j, k in enumerate(keys):
            memory[k] = (int(out.labels[j]), float(out.confidence[j]), None if out.proba is None else out.proba[j])
    return len(keys)


def _stream_answers(teacher, texts, n_todo, batch_size, store, tkey, C, done, memory, on_batch, bar) -> None:
    """Ask ``teacher.label_iter`` for ``texts``; store, remember and report each answer."""
    name = type(teacher).__name__
    n = 0
    sent: set = set()
    given: set = set()  # texts answered by this stream

    def feed():
        for k in texts:
            sent.add(k)
            yield k

    fed = feed()
    try:
        for text, proba in teacher.label_iter(fed):
            if text in given or text not in sent:
                raise ValueError(
                    f"{name}.label_iter answered {str(text)[:40]!r} "
                    f"{'twice' if text in given else 'without being asked about it'}"
                )
            out = check_teacher_output(
                TeacherOutput.from_proba(np.asarray(proba, dtype=np.float64)[None]), 1, C, f"{name} ({text[:40]!r})"
            )
            if store is not None:
                store.put(tkey, [text], out, C)
            ans = (int(out.labels[0]), float(out.confidence[0]), out.proba[0])
            done[text] = ans
            if memory is not None:
                memory[text] = ans
            if on_batch is not None:
                on_batch([text], out)
            if bar is not None:
                bar.update(1)
            given.add(text)
            n += 1
        next(fed, None)  # a text label_iter left unread joins `sent`
        if len(given) < len(sent):
            first = next(k for k in sent if k not in given)
            raise ValueError(f"{name}.label_iter returned {n} answers for {n_todo} texts, none for {str(first)[:40]!r}")
    except Exception as exc:
        answered = getattr(exc, "answered", None)  # arrived while the failure was handled
        kept = n + _keep_answered(answered, store, tkey, C, memory)
        b, n_batches = n // batch_size, (n_todo + batch_size - 1) // batch_size
        s, e = b * batch_size, min(n_todo, (b + 1) * batch_size)
        raise teacher_error(
            exc,
            f"{name} raised {type(exc).__name__} on batch {b} of {n_batches} (texts {s}..{e - 1} of the "
            f"{n_todo} sent to the teacher, asked continuously; {kept} answers are kept"
            f"{' in the cache' if store is not None else ''}): {exc}",
            batch_index=b,
            start=s,
            stop=e,
            n_done=kept,
        ) from exc


def _legacy_keys(teacher, classes) -> list:
    return [k for ident in getattr(teacher, "legacy_identities", ()) if (k := identity_key(ident, classes))]


def _check_inputs(inputs):
    """A list of texts or a 2-D float array of rows; ``kind`` says which."""
    if isinstance(inputs, np.ndarray) and inputs.ndim == 2 and inputs.dtype.kind in "biuf":
        if inputs.shape[0] == 0:
            raise ValueError("inputs is empty: there is nothing to label")
        return inputs, "rows"
    return check_texts(inputs), "texts"


def label_in_batches(
    teacher,
    texts,
    batch_size: int | None = None,
    cache=None,
    progress: bool = False,
    *,
    labels=None,
    sort_by_length: bool = True,
    on_batch=None,
    memory: dict | None = None,
):
    """Label ``texts`` (or feature rows) with ``teacher``, batch by batch, paying only for what is new.

    Parameters
    ----------
    teacher : teacher object or callable
        Passed through :func:`as_teacher` (with ``labels`` for a callable).
    texts : sequence of str, or ndarray of shape (n_rows, n_features)
        Non-empty. Feature rows are sent to ``teacher.label`` as 2-D arrays and keyed
        by a digest of their bytes (:func:`~llkd.teachers._base.input_key`).
    batch_size : int, optional
        Inputs per ``teacher.label`` call; default: the teacher's ``batch_size``
        attribute, else 16.
    cache : None, True, path or TeacherCache
        Durable cache. Answers are read from it first; each batch the teacher answers is
        written in its own transaction before the next batch is asked, so answers already
        paid for survive a crash or an exception. A teacher whose ``identity`` is None is
        not cached (a warning says so).
    progress : bool
        Show a progress bar (tqdm) over the inputs sent to the teacher.
    sort_by_length : bool
        Send texts in order of length (shortest first) so that batches hold texts of
        similar length (less padding for local models). Answers come back in the
        original order either way.
    on_batch : callable, optional
        Called as ``on_batch(keys, output)`` after each batch the teacher answered (and
        after it was cached), with the batch's input keys (the texts themselves, or the
        rows' digests). For a deprecated
        :class:`~llkd.teachers.CalibratedTeacher` it is called once, with the whole pool.
    memory : dict, optional
        ``input key -> (label, confidence, proba or None)``: answers the caller already
        has (checked first) and where each new answer is added as its batch completes.

    Returns
    -------
    TeacherOutput
        One answer per input, in the order given. ``proba`` is None unless every answer
        (remembered, cached or new) has a distribution.

    Raises
    ------
    TeacherError
        The teacher raised; its exception is the ``__cause__`` (and the error is also an
        instance of its type), and the message says which batch (index and range) failed
        and how many answers were saved before it.
    ValueError, TypeError
        Empty or non-string inputs; a teacher answer with the wrong count, labels out of
        range, confidence outside [0, 1] or NaN.
    """
    teacher = as_teacher(teacher, labels=labels)
    base, calibrate = split_calibration(teacher)
    if calibrate is not None:  # answers calibrated over the pool: ask the base teacher, then correct
        raw = label_in_batches(base, texts, batch_size, cache, progress, sort_by_length=sort_by_length, memory=memory)
        out = calibrate(raw)
        if on_batch is not None:
            on_batch([input_key(x) for x in _check_inputs(texts)[0]], out)
        return out

    inputs, kind = _check_inputs(texts)
    if batch_size is None:
        batch_size = getattr(teacher, "batch_size", None) or 16
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    classes = list(teacher.classes)
    C = len(classes)
    name = type(teacher).__name__
    store = open_cache(cache)
    tkey = None
    if store is not None:
        tkey = identity_key(getattr(teacher, "identity", None), classes)
        if tkey is None:
            warnings.warn(
                f"{name} has no `identity`, so its answers are not cached; "
                "give it an identity (e.g. CallableTeacher(fn, labels, identity='my-model-v1'))",
                UserWarning,
                stacklevel=2,
            )
            store = None

    keys = [input_key(x) for x in inputs]
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    done: dict[str, tuple] = {}
    if memory:
        done.update((k, memory[k]) for k in first if k in memory)
    if store is not None:
        done.update(_cached(store, tkey, [k for k in first if k not in done], C, _legacy_keys(teacher, classes)))
    todo = [k for k in first if k not in done]
    if todo and store is not None and kind == "texts" and callable(getattr(teacher, "settle_identity", None)):
        for ident in getattr(teacher, "unsettled_identities", ()):  # answered whole already: nothing to settle
            found = _cached(store, identity_key(ident, classes), todo, C)
            if len(found) == len(todo):
                teacher.settle_as(ident)
                tkey = identity_key(teacher.identity, classes)
                done.update(found)
                todo = []
                break
    if todo and store is not None and kind == "texts" and callable(getattr(teacher, "settle_identity", None)):
        # The teacher decides how it answers (OpenAITeacher, logprobs="auto"); its identity says which.
        try:
            teacher.settle_identity(todo[:1])
        except Exception as exc:
            raise teacher_error(
                exc,
                f"{name} raised {type(exc).__name__} on its first text, before batch 0 (no answer was lost): {exc}",
                batch_index=0,
                start=0,
                stop=1,
                n_done=0,
            ) from exc
        if (key := identity_key(teacher.identity, classes)) != tkey:
            tkey = key
            done = {k: memory[k] for k in first if memory and k in memory}
            done.update(_cached(store, tkey, [k for k in first if k not in done], C, _legacy_keys(teacher, classes)))
            todo = [k for k in first if k not in done]
    if memory is not None:
        memory.update(done)
    if sort_by_length and kind == "texts":
        todo.sort(key=len)

    bar = None
    if progress and todo:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=f"labeling with {name}", unit="text" if kind == "texts" else "row")
        except ImportError:  # pragma: no cover
            bar = None
    n_batches = (len(todo) + batch_size - 1) // batch_size
    what = "texts" if kind == "texts" else "rows"
    # With a cache, batches are claimed in it first: inputs another process is asking are
    # left to it and read from the cache after the loop (TeacherCache.share).
    # A teacher that answers as requests complete (OpenAITeacher.label_iter) is fed texts
    # continuously, and each answer is stored as it arrives.
    stream = kind == "texts" and callable(getattr(teacher, "label_iter", None))
    batches = (
        store.share(tkey, todo, batch_size, hold=stream)
        if store is not None
        else (todo[s : s + batch_size] for s in range(0, len(todo), batch_size))
    )
    e = 0
    try:
        if stream:
            keys_in = (k for bk in batches for k in bk)
            _stream_answers(teacher, keys_in, len(todo), batch_size, store, tkey, C, done, memory, on_batch, bar)
            e = len(todo)
        for b, batch_keys in enumerate(() if stream else batches):
            s, e = e, e + len(batch_keys)
            batch = (
                [inputs[first[k]] for k in batch_keys] if kind == "texts" else inputs[[first[k] for k in batch_keys]]
            )
            try:
                out = teacher.label(batch)
            except Exception as exc:
                answered = getattr(exc, "answered", None)  # (keys, output) the teacher got before failing
                kept = s + _keep_answered(answered, store, tkey, C, memory)
                raise teacher_error(
                    exc,
                    f"{name} raised {type(exc).__name__} on batch {b} of {n_batches} "
                    f"({what} {s}..{e - 1} of the {len(todo)} sent to the teacher; "
                    f"{kept} answers are kept{' in the cache' if store is not None else ''}): {exc}",
                    batch_index=b,
                    start=s,
                    stop=e,
                    n_done=kept,
                ) from exc
            try:
                out = check_teacher_output(out, len(batch_keys), C, f"{name} (batch {b}, {what} {s}..{e - 1})")
            except (TypeError, ValueError) as exc:
                raise type(exc)(str(exc)) from None
            if store is not None:
                store.put(tkey, batch_keys, out, C)
            for j, k in enumerate(batch_keys):
                ans = (int(out.labels[j]), float(out.confidence[j]), None if out.proba is None else out.proba[j])
                done[k] = ans
                if memory is not None:
                    memory[k] = ans
            if on_batch is not None:
                on_batch(batch_keys, out)
            if bar is not None:
                bar.update(len(batch_keys))
    finally:
        if bar is not None:
            bar.close()
        if store is not None:
            batches.close()
    if store is not None and len(done) < len(first):  # answered by other processes meanwhile
        others = _cached(store, tkey, [k for k in first if k not in done], C)
        done.update(others)
        if memory is not None:
            memory.update(others)

    return _output_of([done[k] for k in keys])


def _output_of(answers) -> TeacherOutput:
    """A TeacherOutput from (label, confidence, proba or None) answers; ``proba`` is None
    unless every answer has one."""
    lab = np.array([a[0] for a in answers], dtype=np.int64)
    conf = np.array([a[1] for a in answers], dtype=np.float64)
    proba = None
    if all(a[2] is not None for a in answers):
        proba = np.stack([a[2] for a in answers]).astype(np.float64)
    return TeacherOutput(lab, conf, proba)
