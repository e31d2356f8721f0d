"""Check: trainer.py's batched loop reproduces LLKDClassifier (student="mlp") within seed
noise, on the first N_POOL rows of a setting (the teacher calibrated as run.CALIB).

    python experiments/selection_rules/repro.py SETTING N_POOL [SELECTION ...]

A SELECTION may end in ``+forward`` (``noise_correction="forward"``) and then ``+cw``
(``class_weight="sqrt_balanced"``); without them the library runs with
``noise_correction="none"`` and ``class_weight=None``. Seeds: ``REPRO_SEEDS`` (default 3).
Results are merged into ``.cache/repro-<calibration>-SETTING-N_POOL.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import relabel as RL
import rules as R
import run
from trainer import train

SEEDS = list(range(int(os.environ.get("REPRO_SEEDS", "3"))))


class RowEncoder:
    def __init__(self, emb):
        self.emb = emb

    def encode(self, texts, **kw):
        return self.emb[[int(t) for t in texts]]


RULES = {
    "all": lambda: R.All(),
    "llkd": lambda: R.Spec("llkd"),
    "confidence": lambda: R.ExcessConfWeight(),
    "class_mean": lambda: R.ClassMeanThreshold(),
    "confidence+forward": lambda: RL.SLaM(a="rank", weight="excess", warm=5.0),
    "confidence+forward+cw": lambda: RL.SLaM(a="rank", weight="excess", warm=5.0, cw_power=0.5),
}


def main(key="rt_tfidf", n_pool=3000, selections=("all", "llkd")):
    import torch

    from llkd import LLKDClassifier
    from llkd.teachers import PrecomputedTeacher

    torch.set_num_threads(1)
    st = run.Setting(key)
    z = run.prep.prepare(run.SETTINGS[key], run.prep.FRACTIONS[run.SETTINGS[key]])
    X, Xte = st.X[:n_pool], st.Xte
    emb = np.concatenate([X, Xte])
    tr_texts = [str(i) for i in range(n_pool)]
    te_texts = [str(n_pool + i) for i in range(len(Xte))]
    raw = z["tfidf_tr"][:n_pool]
    teacher = PrecomputedTeacher(tr_texts, proba=raw, classes=st.names)
    from llkd.teachers import PriorCorrection

    P = PriorCorrection(run.CALIB).fit_transform(raw)
    out = {}
    for sel in selections:
        lib = []
        t0 = time.perf_counter()
        for seed in SEEDS:
            clf = LLKDClassifier(
                teacher=teacher,
                student="mlp",
                encoder=RowEncoder(emb),
                selection=sel.split("+")[0],
                noise_correction="forward" if "+forward" in sel else "none",
                class_weight="sqrt_balanced" if sel.endswith("+cw") else None,
                max_epochs=10,
                random_state=seed,
                calibration=run.CALIB,
            )
            clf.fit(tr_texts)
            idx = {c: i for i, c in enumerate(st.names)}
            pred = np.array([idx[c] for c in clf.predict(te_texts)])
            lib.append(run.macro_f1(st.yte, pred, st.C))
        t_lib = time.perf_counter() - t0
        t0 = time.perf_counter()
        rule = RULES[sel]()
        logits, stats = train(X, P.argmax(1), P.max(1), P, rule, seeds=SEEDS, epochs=10, n_classes=st.C, X_test=Xte)
        mine = [run.macro_f1(st.yte, logits[s].argmax(-1).numpy(), st.C) for s in range(len(SEEDS))]
        out[sel] = {
            "library": lib,
            "trainer.py": mine,
            "library_used": float(np.mean([h["n_selected"] for h in clf.history_]) / n_pool),
            "trainer_used": float(np.mean(stats["used"])),
            "wall_library": t_lib,
            "wall_trainer": time.perf_counter() - t0,
        }
        print(sel, json.dumps(out[sel]), flush=True)
    path = HERE / ".cache" / f"repro-{run.CALIB}-{key}-{n_pool}.json"
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged.update(out)
    path.write_text(json.dumps(merged))
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0] if args else "rt_tfidf", int(args[1]) if len(args) > 1 else 3000, tuple(args[2:]) or ("all", "llkd"))
