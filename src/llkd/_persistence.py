"""Pickle-free persistence: safetensors for weights, JSON for everything else."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

FORMAT_VERSION = 1


def _jsonable_classes(classes: np.ndarray) -> dict:
    kind = classes.dtype.kind
    if kind in "iu":
        return {"dtype": "int", "values": [int(c) for c in classes]}
    if kind == "b":
        return {"dtype": "bool", "values": [bool(c) for c in classes]}
    if kind == "f":
        return {"dtype": "float", "values": [float(c) for c in classes]}
    if all(isinstance(c, str) for c in classes.tolist()):
        return {"dtype": "str", "values": [str(c) for c in classes]}
    raise TypeError(f"classes of type {classes.dtype} cannot be saved without pickle")


def _classes_from_json(d: dict) -> np.ndarray:
    return np.asarray(d["values"], dtype={"int": np.int64, "bool": bool, "float": np.float64, "str": None}[d["dtype"]])


def _jsonable_params(est) -> dict:
    out = {}
    for key, value in est.get_params(deep=False).items():
        if key == "teacher":
            continue
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if key == "random_state" and not (value is None or isinstance(value, int)):
            value = None
        if key == "encoder" and not isinstance(value, str):
            value = None  # a custom encoder object: pass it again to load()
        if key == "labels" and value is not None:
            value = list(value)
        out[key] = value
    return out


def save_model(est, path) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in est.student_.state_dict().items()}
    save_file(state, str(path / "model.safetensors"))
    config = {
        "format_version": FORMAT_VERSION,
        "params": _jsonable_params(est),
        "classes": _jsonable_classes(np.asarray(est.classes_)),
        "is_text": bool(est._is_text),
        "model_config": est._model_config_,
        "encoder_config": getattr(est, "_encoder_config_", None),
        "n_features_in": int(getattr(est, "n_features_in_", -1)),
        "history": est.history_,
        "n_iter": int(est.n_iter_),
        "selector_state": est.selector_.state.to_dict(),
    }
    if est._kind_ == "finetune":
        est._tokenizer_.save_pretrained(str(path / "tokenizer"))
    tmp = path / "config.json.tmp"
    tmp.write_text(json.dumps(config, indent=1))
    os.replace(tmp, path / "config.json")


def load_model(cls, path, *, device="cpu", encoder=None):
    from safetensors.torch import load_file

    from . import students
    from .selection import AdaptiveSelector, SelectorState

    path = Path(path)
    config_file = path / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file} not found: not a directory written by LLKDClassifier.save")
    config = json.loads(config_file.read_text())
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unsupported llkd save format {config.get('format_version')!r}")
    params = dict(config["params"])
    if params.get("encoder") is None:
        params["encoder"] = encoder if encoder is not None else "auto"
    params["device"] = str(device)
    est = cls(**params)
    est.classes_ = _classes_from_json(config["classes"])
    est._is_text = config["is_text"]
    est._model_config_ = config["model_config"]
    est._kind_ = est._model_config_["kind"]
    est._encoder_config_ = config["encoder_config"]
    if config["n_features_in"] >= 0:
        est.n_features_in_ = config["n_features_in"]
    est.history_ = config["history"]
    est.n_iter_ = config["n_iter"]
    if est._kind_ == "finetune":
        from transformers import AutoTokenizer

        est._tokenizer_ = AutoTokenizer.from_pretrained(str(path / "tokenizer"))
    model = est._rebuild_model()
    model.load_state_dict(load_file(str(path / "model.safetensors"), device="cpu"))
    est.student_ = model.to(torch.device(device)).eval()
    state = SelectorState.from_dict(config["selector_state"])
    selector = AdaptiveSelector(len(est.classes_), momentum=est.momentum, mode=est.selection,
                                weighting=est.weighting, backend="auto")
    selector.state = state
    est.selector_ = selector
    est._frozen_encoder_ = None
    return est
