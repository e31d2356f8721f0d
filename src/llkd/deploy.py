"""Run an exported student without torch: :class:`OnnxStudent` (onnxruntime + tokenizers).

Write the directory with ``LLKDClassifier.export(path, format="onnx")`` (``quantize=True``
adds a dynamically int8-quantised copy); install the runtime with ``pip install 'llkd[onnx]'``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ._inputs import check_float32_range, check_outputs

__all__ = ["OnnxStudent"]

_CONFIG, _MODEL, _INT8 = "llkd_onnx.json", "model.onnx", "model.int8.onnx"


class OnnxStudent:
    """An exported llkd student, run by onnxruntime.

    Parameters
    ----------
    path : str or path-like
        A directory written by ``LLKDClassifier.export(path, format="onnx")``.
    quantized : bool, default=False
        Run the int8 model (exported with ``quantize=True``) instead of the float one.
    n_threads : int or None, default=None
        onnxruntime intra-op threads; None lets onnxruntime choose.
    batch_size : int, default=64
        Texts per run; texts are grouped by length, so batches carry little padding.

    Attributes
    ----------
    classes_ : ndarray
        The class labels, in the order of ``predict_proba``'s columns.
    """

    def __init__(self, path, *, quantized: bool = False, n_threads: int | None = None, batch_size: int = 64):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError("OnnxStudent needs onnxruntime: pip install 'llkd[onnx]'") from None
        self.path = Path(path)
        cfg_file = self.path / _CONFIG
        if not cfg_file.is_file():
            raise ValueError(f"{self.path}: no {_CONFIG}; not a directory written by export(format='onnx')")
        cfg = json.loads(cfg_file.read_text())
        if not isinstance(cfg, dict) or cfg.get("input") not in ("text", "features") or not cfg.get("classes"):
            raise ValueError(f"{cfg_file}: not an llkd ONNX config")
        model = self.path / (_INT8 if quantized else _MODEL)
        if not model.is_file():
            hint = " (export with quantize=True)" if quantized else ""
            raise ValueError(f"{model}: missing{hint}")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
        self.config = cfg
        self.classes_ = np.asarray(cfg["classes"])
        self.batch_size = batch_size
        opts = ort.SessionOptions()
        if n_threads is not None:
            opts.intra_op_num_threads = int(n_threads)
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        self.tokenizer = None
        if cfg["input"] == "text":
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(os.fspath(self.path / "tokenizer.json"))
            tok.enable_truncation(int(cfg["max_length"]))
            tok.no_padding()
            self.tokenizer = tok

    def _batches(self, X):
        if self.config["input"] == "features":
            X = np.asarray(X)
            if X.dtype.kind not in "biuf":
                raise TypeError(f"X must be an array of numbers; got dtype {X.dtype}")
            if X.ndim != 2 or X.shape[1] != self.config["n_features"]:
                raise ValueError(f"X must have shape (n, {self.config['n_features']}); got {X.shape}")
            if X.dtype.kind == "f" and not np.isfinite(X).all():
                where = tuple(int(i) for i in np.argwhere(~np.isfinite(X))[0])
                raise ValueError(f"X holds NaN or infinite values, the first X[{where[0]}, {where[1]}] = {X[where]}")
            check_float32_range(X)
            X = X.astype(np.float32)
            for start in range(0, len(X), self.batch_size):
                yield (
                    np.arange(start, min(start + self.batch_size, len(X))),
                    {"features": X[start : start + self.batch_size]},
                )
            return
        if isinstance(X, str) or not all(isinstance(t, str) for t in X):
            raise TypeError("X must be a sequence of str")
        encodings = self.tokenizer.encode_batch(list(X))
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(lengths, kind="stable")
        pad, left = int(self.config["pad_id"]), bool(self.config.get("pad_left"))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = max(1, int(lengths[rows].max()))
            ids = np.full((len(rows), width), pad, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for j, i in enumerate(rows):
                n = lengths[i]
                cols = slice(width - n, width) if left else slice(0, n)
                ids[j, cols] = encodings[i].ids
                mask[j, cols] = 1
            yield rows, {"input_ids": ids, "attention_mask": mask}

    def decision_function(self, X) -> np.ndarray:
        """The student's logits, shape (n_samples, n_classes)."""
        n = len(X)
        out = np.empty((n, len(self.classes_)), dtype=np.float32)
        for rows, feeds in self._batches(X):
            out[rows] = self.session.run(["logits"], feeds)[0]
        check_outputs(out, texts=self.config["input"] == "text")
        return out

    def predict_proba(self, X) -> np.ndarray:
        z = self.decision_function(X).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(axis=1)]
