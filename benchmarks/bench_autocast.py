"""Fine-tuning speed and accuracy in full precision against autocast (``mixed_precision``).

Fine-tunes the student encoder on the gold labels of ``--n-train`` movie reviews (the
demo's draw) for one epoch, once per precision, on ``--device``, and reports training
texts/s, prediction texts/s and accuracy on ``--n-test`` held-out reviews. Meant for a GPU
(``--device cuda``: ``off`` against ``auto``, i.e. bf16 where supported); on the CPU
``--precisions off bf16`` checks that the path runs (CPU autocast is slower, not faster).

    python benchmarks/bench_autocast.py --device cuda                         # MiniLM
    python benchmarks/bench_autocast.py --device cuda --encoder mpnet
    python benchmarks/bench_autocast.py --quick --precisions off bf16         # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def demo_reviews(n_train: int, n_test: int, seed: int = 0):
    from llkd.datasets import fetch_rotten_tomatoes

    train, test = fetch_rotten_tomatoes(subset="train"), fetch_rotten_tomatoes(subset="test")
    rng = np.random.RandomState(seed)
    tr = rng.permutation(len(train.data))[:n_train]
    te = rng.permutation(len(test.data))[:n_test]
    names = np.asarray(train.target_names)
    return (
        [train.data[i] for i in tr],
        names[train.target[tr]],
        [test.data[i] for i in te],
        names[test.target[te]],
    )


def main(argv=None):
    from llkd import LLKDClassifier

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--encoder", default="auto", help="auto (MiniLM), mpnet, or a model folder")
    ap.add_argument("--precisions", nargs="+", default=["off", "auto"])
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--quick", action="store_true", help="256 training and 128 test reviews")
    ap.add_argument("--json", default=None, help="append one JSON line per run here")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_train, args.n_test = 256, 128
    X, y, X_test, y_test = demo_reviews(args.n_train, args.n_test)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"# {time.strftime('%Y-%m-%d')}, {name}, torch {torch.__version__}, encoder {args.encoder}")
    print("| precision | seed | train texts/s | predict texts/s | accuracy |")
    print("|---|---:|---:|---:|---:|")
    for seed in args.seeds:
        for precision in args.precisions:
            clf = LLKDClassifier(
                student="finetune",
                encoder=args.encoder,
                max_epochs=1,
                learning_rate=1e-4,
                batch_size=args.batch_size,
                mixed_precision=precision,
                device=args.device,
                random_state=seed,
            )
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            clf.fit(X, y)
            fit_s = time.perf_counter() - t0
            train_s = sum(h["seconds"] for h in clf.history_)
            t0 = time.perf_counter()
            pred = clf.predict(X_test)
            predict_s = time.perf_counter() - t0
            row = {
                "precision": precision,
                "seed": seed,
                "device": name,
                "encoder": args.encoder,
                "train_texts_per_s": len(X) / train_s,
                "fit_s": fit_s,
                "predict_texts_per_s": len(X_test) / predict_s,
                "accuracy": float(np.mean(pred == y_test)),
            }
            print(
                f"| {precision} | {seed} | {row['train_texts_per_s']:.0f} | {row['predict_texts_per_s']:.0f} "
                f"| {row['accuracy']:.3f} |",
                flush=True,
            )
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
