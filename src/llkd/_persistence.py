"""Pickle-free persistence: safetensors for weights, JSON for everything else.

A saved model is a directory::

    config.json         format_version, the estimator's parameters, the fitted attributes
                        of FITTED (format 3 adds training_summary), and (format 2 on)
                        encoder_ref
    model.safetensors   the student's state_dict
    tokenizer/          the fine-tuned student's tokenizer
    encoder/            format 2 on, text input with a frozen encoder given as a path: a copy
    README.md           format 3, the model card (not read back)

Loading validates everything it reads before it builds anything from it (format
version; keys and types of config.json; tensor names, shapes and dtypes against the
model the config describes; finiteness; classes against the output width) and raises a
ValueError naming the file and the field. It follows no path named in config.json
outside the directory: the frozen encoder is the packaged one, the directory's own
``encoder/`` copy, or the one the caller passes.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
CONFIG, WEIGHTS, TOKENIZER_DIR, ENCODER_DIR = "config.json", "model.safetensors", "tokenizer", "encoder"
# Encoder names that resolve inside the installed packages, never on disk or a hub.
PACKAGED_ENCODERS = ("auto", "packaged-minilm", "mpnet")

_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


class _Invalid(ValueError):
    """A field of config.json that is not what it should be (the reader adds the file)."""


# ------------------------------------------------------------- field readers
def _expect(value, types, where: str, what: str):
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise _Invalid(f"{where} must be {what}, got {value!r}")
    if not isinstance(value, types):
        raise _Invalid(f"{where} must be {what}, got {type(value).__name__} {_short(value)}")
    return value


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(value, where, minimum=0):
    _expect(value, int, where, "an int")
    if value < minimum:
        raise _Invalid(f"{where} must be >= {minimum}, got {value}")
    return value


def _bool(value, where):
    return _expect(value, bool, where, "true or false")


def _classes_to_json(classes) -> dict:
    classes = np.asarray(classes)
    kind = classes.dtype.kind
    if kind in "iu":  # int64 is "int" (as in every format); other widths keep their numpy name
        name = "int" if classes.dtype == np.int64 else classes.dtype.name
        return {"dtype": name, "values": [int(c) for c in classes]}
    if kind == "b":
        return {"dtype": "bool", "values": [bool(c) for c in classes]}
    if kind == "f":  # float64 is "float"; float32 and float16 keep their numpy name
        name = "float" if classes.dtype == np.float64 else classes.dtype.name
        return {"dtype": name, "values": [float(c) for c in classes]}
    if all(isinstance(c, str) for c in classes.tolist()):
        return {"dtype": "str", "values": [str(c) for c in classes]}
    raise TypeError(f"classes of type {classes.dtype} cannot be saved without pickle")


_CLASS_TYPES = {"int": (np.int64, int), "bool": (bool, bool), "float": (np.float64, (int, float)), "str": (None, str)}
_CLASS_TYPES |= {t: (np.dtype(t), int) for t in ("int8", "int16", "int32", "uint8", "uint16", "uint32", "uint64")}
_CLASS_TYPES |= {t: (np.dtype(t), (int, float)) for t in ("float16", "float32")}


def _classes_from_json(d, where) -> np.ndarray:
    _expect(d, dict, where, "an object with 'dtype' and 'values'")
    if set(d) != {"dtype", "values"}:
        raise _Invalid(f"{where} must have exactly the keys 'dtype' and 'values', got {sorted(d)}")
    if d["dtype"] not in _CLASS_TYPES:
        raise _Invalid(f"{where}.dtype must be one of {sorted(_CLASS_TYPES)}, got {_short(d['dtype'])}")
    dtype, pytype = _CLASS_TYPES[d["dtype"]]
    values = _expect(d["values"], list, f"{where}.values", "a list")
    for i, v in enumerate(values):
        if d["dtype"] != "bool" and isinstance(v, bool) or not isinstance(v, pytype):
            raise _Invalid(f"{where}.values[{i}] is {_short(v)}, not a {d['dtype']}")
    if pytype == (int, float) and not all(math.isfinite(v) for v in values):
        raise _Invalid(f"{where}.values must be finite numbers, got {_short(values)}")
    if pytype in (int, (int, float)):
        info = np.iinfo(dtype) if pytype is int else np.finfo(dtype)
        for i, v in enumerate(values):
            if not info.min <= v <= info.max:
                raise _Invalid(f"{where}.values[{i}] = {_short(v)} does not fit in {info.dtype}")
    classes = np.asarray(values, dtype=dtype)
    if len(values) < 2 or len(set(classes.tolist())) != len(values):
        raise _Invalid(f"{where}.values must be at least 2 distinct classes of type {d['dtype']}, got {_short(values)}")
    return classes


_MODEL_CONFIG_KEYS = {
    "mlp": {"kind": str, "n_features": int, "n_classes": int, "hidden_size": int, "dropout": float},
    "finetune": {"kind": str, "n_classes": int, "dropout": float},
}


def _model_config(d, where) -> dict:
    _expect(d, dict, where, "an object")
    kind = d.get("kind")
    if kind not in _MODEL_CONFIG_KEYS:
        raise _Invalid(f"{where}.kind must be 'mlp' or 'finetune', got {_short(kind)}")
    keys = _MODEL_CONFIG_KEYS[kind]
    if set(d) != set(keys):
        raise _Invalid(f"{where} of kind {kind!r} must have the keys {sorted(keys)}, got {sorted(d)}")
    for key, typ in keys.items():
        if typ is float:
            _expect(d[key], (int, float), f"{where}.{key}", "a number")
            if not 0 <= d[key] < 1:
                raise _Invalid(f"{where}.{key} must be in [0, 1), got {d[key]!r}")
        elif typ is int:
            _int(d[key], f"{where}.{key}", minimum=0 if key == "hidden_size" else 1)
    if d["n_classes"] < 2:
        raise _Invalid(f"{where}.n_classes must be >= 2, got {d['n_classes']}")
    return dict(d)


def _dict_or_none(d, where):
    return None if d is None else dict(_expect(d, dict, where, "an object or null"))


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def _n_features(value, where):
    return None if _int(value, where, minimum=-1) < 0 else value


def _feature_names(value, where):
    if value is None:
        return None
    names = _expect(value, list, where, "a list of column names or null")
    for i, v in enumerate(names):
        if not isinstance(v, str):
            raise _Invalid(f"{where}[{i}] is {_short(v)}, not a str")
    return np.asarray(names, dtype=object)


def _history(value, where) -> list:
    _expect(value, list, where, "a list")
    for i, rec in enumerate(value):
        _expect(rec, dict, f"{where}[{i}]", "an object")
    return value


def _selector_state(d, where):
    from .selection import SelectorState

    _expect(d, dict, where, "an object")
    if set(d) != {"global_levels", "class_levels", "n_updates"}:
        raise _Invalid(f"{where} must have the keys class_levels, global_levels, n_updates, got {sorted(d)}")
    try:
        state = SelectorState.from_dict(d)
    except (TypeError, ValueError) as exc:
        raise _Invalid(f"{where} is not numeric: {exc}") from None
    if state.global_levels.shape != (2,) or state.class_levels.ndim != 2 or state.class_levels.shape[0] != 2:
        raise _Invalid(
            f"{where} has levels of shapes {state.global_levels.shape} and {state.class_levels.shape}, "
            "expected (2,) and (2, n_classes)"
        )
    if not (np.isfinite(state.global_levels).all() and np.isfinite(state.class_levels).all()):
        raise _Invalid(f"{where} holds NaN or infinite levels")
    _int(d["n_updates"], f"{where}.n_updates")
    return state


@dataclass(frozen=True)
class Fitted:
    """One fitted attribute of the estimator: where it goes in config.json and how.

    ``dump`` turns the attribute's value into JSON; ``read`` turns the JSON back into
    the value (None: the estimator has no such attribute), raising a ValueError that
    names the field when it is not what ``dump`` writes. ``absent`` is what an
    estimator without the attribute stores.
    """

    attr: str
    key: str
    dump: Callable[[Any], Any]
    read: Callable[[Any, str], Any]
    absent: Any = field(default=None)
    optional: bool = False  # None means "no attribute", not an attribute set to None
    since: int = 1  # the first format version that holds it; older files read as None


# The one list of what a saved model holds besides its parameters and weights.
FITTED = (
    Fitted("classes_", "classes", _classes_to_json, _classes_from_json),
    Fitted("_is_text", "is_text", bool, _bool),
    Fitted("_model_config_", "model_config", dict, _model_config),
    Fitted("_encoder_config_", "encoder_config", lambda v: v, _dict_or_none),
    Fitted("n_features_in_", "n_features_in", int, _n_features, absent=-1, optional=True),
    Fitted("history_", "history", list, _history),
    Fitted("n_iter_", "n_iter", int, _int),
    Fitted("selector_", "selector_state", lambda sel: sel.state.to_dict(), _selector_state),
    Fitted("training_summary_", "training_summary", _jsonable, _dict_or_none, optional=True, since=3),
    Fitted(
        "feature_names_in_", "feature_names_in", lambda v: [str(x) for x in v], _feature_names, optional=True, since=4
    ),
)


def _top_keys(version: int) -> set:
    return (
        {"format_version", "params"}
        | {f.key for f in FITTED if f.since <= version}
        | ({"encoder_ref"} if version >= 2 else set())
    )


def fitted_values(est) -> dict:
    """The attributes of FITTED, read from a fitted estimator."""
    return {f.attr: getattr(est, f.attr, None) for f in FITTED}


def jsonable_params(params: dict) -> dict:
    """Constructor parameters as JSON (the teacher is never saved)."""
    out = {}
    for key, value in params.items():
        if key == "teacher":
            continue
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if key == "random_state" and not (value is None or isinstance(value, int)):
            value = None
        if key == "encoder" and not isinstance(value, str):
            value = None  # a custom encoder object: pass it again to load()
        if key == "class_weight" and isinstance(value, dict):
            value = {str(k.item() if isinstance(k, np.generic) else k): float(v) for k, v in value.items()}
        if key == "labels" and value is not None:
            value = [v.item() if isinstance(v, np.generic) else v for v in value]
        out[key] = value
    return out


# ---------------------------------------------------------------- writing
def write_model(path, *, params: dict, fitted: dict, weights: dict, tokenizer=None, encoder_source=None) -> None:
    """Write a model directory from values: JSON-able ``params``, ``fitted`` (attr -> value,
    see FITTED), the student's ``weights``, a tokenizer to save, and ``encoder_source``:
    None, a packaged encoder name, or a frozen encoder (a directory path, or an object with
    ``save(dir)``) to copy into ``encoder/``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(path / WEIGHTS))
    config = {"format_version": FORMAT_VERSION, "params": params}
    for f in FITTED:
        value = fitted.get(f.attr)
        config[f.key] = f.absent if value is None else f.dump(value)
    config["encoder_ref"] = _write_encoder(path, encoder_source)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path / TOKENIZER_DIR))
    tmp = path / (CONFIG + ".tmp")
    tmp.write_text(json.dumps(config, indent=1))
    os.replace(tmp, path / CONFIG)


def _write_encoder(path: Path, source):
    if source is None:
        return None
    if isinstance(source, str) and source in PACKAGED_ENCODERS:
        return {"packaged": source}
    target = path / ENCODER_DIR
    is_folder = isinstance(source, (str, os.PathLike)) and os.path.isdir(source)
    if is_folder and target.is_dir() and os.path.samefile(source, target):
        return {"directory": ENCODER_DIR}  # a loaded model saved back into its own folder
    fresh = path / (ENCODER_DIR + ".tmp")
    if fresh.exists():
        shutil.rmtree(fresh)
    if is_folder:
        shutil.copytree(source, fresh)
    else:
        source.save(str(fresh))
    if target.exists():  # removed only once the new copy is whole
        shutil.rmtree(target)
    os.replace(fresh, target)
    return {"directory": ENCODER_DIR}


def save_model(est, path) -> None:
    """Save a fitted LLKDClassifier (see :meth:`LLKDClassifier.save`)."""
    params = jsonable_params(est.get_params(deep=False))
    fitted = fitted_values(est)
    kind = fitted["_model_config_"]["kind"]
    encoder_source = None
    if fitted["_is_text"] and kind == "mlp":
        if params["encoder"] is None:
            encoder_source = None  # a custom object: load() needs encoder= again
        elif params["encoder"] in PACKAGED_ENCODERS:
            encoder_source = params["encoder"]
        else:
            from . import students

            local = students.resolve_encoder_path(est.encoder)
            encoder_source = local if os.path.isdir(local) else est._frozen_encoder()
    write_model(
        path,
        params=params,
        fitted=fitted,
        weights=est.student_.state_dict(),
        tokenizer=est._tokenizer_ if kind == "finetune" else None,
        encoder_source=encoder_source,
    )
    from ._model_card import model_card

    (Path(path) / "README.md").write_text(model_card(est, fmt="llkd"))


# ---------------------------------------------------------------- reading
@dataclass
class SavedModel:
    """What a model directory holds, validated."""

    params: dict
    fitted: dict  # attr -> value, as in FITTED
    weights: dict  # name -> CPU tensor
    format_version: int
    encoder: Any  # what the frozen encoder resolves to, None where the model needs none
    tokenizer_dir: Path | None


def read_config(path) -> dict:
    """config.json of a model directory as a dict, with its format version checked."""
    file = Path(path) / CONFIG
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: not a directory written by LLKDClassifier.save")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise ValueError(f"{file}: nested too deeply to be a model's config") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{file}: not UTF-8 text (byte {exc.start})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{file}: must hold a JSON object, got {type(config).__name__}")  # noqa: TRY004
    version = config.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise ValueError(
            f"{file}: format_version {version!r} is not one this version of llkd reads "
            f"({', '.join(map(str, READABLE_VERSIONS))}); was it saved by a newer llkd?"
        )
    expected = _top_keys(version)
    missing, unknown = sorted(expected - set(config)), sorted(set(config) - expected)
    if missing or unknown:
        raise ValueError(
            f"{file}: "
            + "; ".join(
                ([f"missing key(s) {missing}"] if missing else []) + ([f"unknown key(s) {unknown}"] if unknown else [])
            )
        )
    return config


def _check_inside(root: Path, member: Path) -> None:
    """Refuse ``member`` (and, for a folder, every entry in it) if a link takes it outside ``root``."""
    base = root.resolve()

    def check(entry: Path) -> None:
        if not entry.resolve().is_relative_to(base):
            raise ValueError(
                f"{entry}: a link to {entry.resolve()}, outside the model directory; load follows no path outside it"
            )

    if not (member.exists() or member.is_symlink()):
        return
    check(member)
    if member.is_dir():
        for entry in member.rglob("*"):
            check(entry)


def read_model(cls, path, *, encoder=None) -> SavedModel:
    """Read and validate a model directory written by :func:`write_model` (or format 1)."""
    path = Path(path)
    for member in (CONFIG, WEIGHTS, TOKENIZER_DIR):
        _check_inside(path, path / member)
    config = read_config(path)
    file = path / CONFIG
    try:
        params = _params(cls, config["params"])
        version = config["format_version"]
        fitted = {f.attr: f.read(config[f.key], f.key) if f.since <= version else None for f in FITTED}
        _check_consistency(fitted)
        if isinstance(params.get("class_weight"), dict):  # JSON keys are strings: back to the classes
            names = {str(c): c for c in fitted["classes_"].tolist()}
            params["class_weight"] = {names.get(k, k): v for k, v in params["class_weight"].items()}
        encoder_ref = config.get("encoder_ref") if config["format_version"] >= 2 else _legacy_encoder_ref(params)
        needs_encoder = fitted["_is_text"] and fitted["_model_config_"]["kind"] == "mlp"
        resolved = _resolve_encoder(path, encoder_ref, encoder) if needs_encoder else None
    except _Invalid as exc:
        raise ValueError(f"{file}: {exc}") from None
    handle = _open_weights(path / WEIGHTS)
    _check_depth(fitted["_encoder_config_"], handle.keys(), path / WEIGHTS, file)
    expected = _expected_state(fitted["_model_config_"], fitted["_encoder_config_"], file)
    weights = _read_weights(handle, path / WEIGHTS, expected)
    tokenizer_dir = None
    if fitted["_model_config_"]["kind"] == "finetune":
        tokenizer_dir = path / TOKENIZER_DIR
        if not tokenizer_dir.is_dir():
            raise ValueError(f"{tokenizer_dir}: missing; a fine-tuned student needs its tokenizer")
    return SavedModel(params, fitted, weights, config["format_version"], resolved, tokenizer_dir)


def _params(cls, params) -> dict:
    _expect(params, dict, "params", "an object")
    known = set(cls().get_params(deep=False)) - {"teacher"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise _Invalid(f"params has unknown parameter(s) {unknown}")
    # A custom encoder object is saved as null; load() takes it again as encoder=.
    est = cls(**{**params, "encoder": "auto" if params.get("encoder") is None else params["encoder"]})
    try:
        est._validate_params()
    except ValueError as exc:
        raise _Invalid(f"params: {exc}") from None
    return dict(params)


def _check_consistency(fitted: dict) -> None:
    n_out = fitted["_model_config_"]["n_classes"]
    classes = fitted["classes_"]
    if len(classes) != n_out:
        raise _Invalid(f"classes has {len(classes)} values but model_config.n_classes is {n_out} (the output width)")
    state = fitted["selector_"]
    if state.class_levels.shape[1] != n_out:
        raise _Invalid(f"selector_state has levels for {state.class_levels.shape[1]} classes, not {n_out}")
    kind = fitted["_model_config_"]["kind"]
    if kind == "finetune":
        if not fitted["_is_text"]:
            raise _Invalid("model_config.kind is 'finetune' but is_text is false")
        cfg = fitted["_encoder_config_"]
        if cfg is None or not isinstance(cfg.get("model_type"), str):
            raise _Invalid("encoder_config must be a transformers config with a 'model_type' for a fine-tuned student")
    elif not fitted["_is_text"]:
        n_in = fitted["n_features_in_"]
        names = fitted.get("feature_names_in_")
        if names is not None and len(names) != n_in:
            raise _Invalid(f"feature_names_in has {len(names)} names but n_features_in is {n_in}")
        if n_in != fitted["_model_config_"]["n_features"]:
            raise _Invalid(
                f"n_features_in is {n_in} but model_config.n_features is {fitted['_model_config_']['n_features']}"
            )


def _read_tokenizer(folder: Path):
    """The saved tokenizer; one saved by transformers 5 (class ``TokenizersBackend``) is read
    by an older transformers as the plain fast tokenizer of its tokenizer.json."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 (tokenizers raise many kinds on a bad file)
        first = exc
    if (folder / "tokenizer.json").is_file():
        try:
            return PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)
        except Exception:  # noqa: BLE001, S110 (the first error is the one to report)
            pass
    raise ValueError(f"{folder}: not a readable tokenizer ({type(first).__name__}: {first})") from None


def _legacy_encoder_ref(params: dict):
    """Format 1 saved only the encoder parameter: a packaged name, null (a custom object) or a path."""
    value = params.get("encoder")
    if value is None:
        return None
    if value in PACKAGED_ENCODERS:
        return {"packaged": value}
    return {"path": value}


def _resolve_encoder(path: Path, ref, encoder):
    if encoder is not None:
        return encoder  # the caller's choice wins
    if ref is None:
        raise _Invalid(
            "params.encoder is null: the model was fitted with a custom encoder object, which is not "
            "saved; pass it again with load(..., encoder=...) (llkd predict --encoder)"
        )
    _expect(ref, dict, "encoder_ref", "an object")
    if set(ref) == {"packaged"} and ref["packaged"] in PACKAGED_ENCODERS:
        return ref["packaged"]
    if set(ref) == {"directory"} and isinstance(ref["directory"], str):
        target = (path / ref["directory"]).resolve()
        if not target.is_relative_to(path.resolve()) or target == path.resolve():
            raise _Invalid(
                f"encoder_ref.directory {ref['directory']!r} is outside the model directory; "
                "load follows no path outside it (pass encoder= to choose one)"
            )
        if not target.is_dir():
            raise _Invalid(f"encoder_ref.directory {ref['directory']!r} does not exist in the model directory")
        _check_inside(path, target)
        return str(target)
    if set(ref) == {"path"}:
        raise _Invalid(
            f"params.encoder {ref['path']!r} is a path or model name outside the saved directory; "
            "load follows none: pass the encoder with load(..., encoder=...) (llkd predict --encoder)"
        )
    raise _Invalid(f"encoder_ref must name a packaged encoder or a directory inside the model, got {_short(ref)}")


def build_student(model_config: dict, encoder_config: dict | None) -> torch.nn.Module:
    """The (untrained) student that a model config describes."""
    from . import students

    if model_config["kind"] == "finetune":
        encoder = students.build_hf_encoder_from_config(encoder_config)
        return students.EncoderClassifier(encoder, model_config["n_classes"], model_config["dropout"])
    return students.MLPHead(
        model_config["n_features"], model_config["n_classes"], model_config["hidden_size"], model_config["dropout"]
    )


def _check_depth(encoder_config, names, weights_file: Path, file) -> None:
    """Refuse a layer count beyond the layers in the weights' header before building the model
    (building thousands of layers, even on the meta device, takes seconds)."""
    depth = (encoder_config or {}).get("num_hidden_layers")
    if not isinstance(depth, int):
        return
    layers = {m.group(1) for m in map(re.compile(r"\.layers?\.(\d+)\.").search, names) if m}
    if layers and depth > len(layers):
        raise ValueError(
            f"{file}: encoder_config.num_hidden_layers is {depth}, but {weights_file.name} holds {len(layers)} layer(s)"
        )


def _expected_state(model_config, encoder_config, file) -> dict:
    """name -> (shape, safetensors dtype) of the student the config describes (built on the
    meta device: no memory is spent on a config that asks for a huge model)."""
    try:
        with torch.device("meta"):
            model = build_student(model_config, encoder_config)
    except Exception as exc:  # noqa: BLE001 (transformers raises many kinds on a bad config)
        raise ValueError(f"{file}: encoder_config does not describe a model ({type(exc).__name__}: {exc})") from None
    return {k: (tuple(v.shape), _SAFETENSORS_DTYPES.get(v.dtype, str(v.dtype))) for k, v in model.state_dict().items()}


def _open_weights(file: Path):
    from safetensors import SafetensorError, safe_open

    if not file.is_file():
        raise ValueError(f"{file}: missing")
    try:
        return safe_open(str(file), framework="pt", device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{file}: not a valid safetensors file ({exc})") from None


def _read_weights(handle, file: Path, expected: dict) -> dict:
    from safetensors import SafetensorError

    names = set(handle.keys())
    missing, unknown = sorted(set(expected) - names), sorted(names - set(expected))
    if missing or unknown:
        raise ValueError(
            f"{file}: the tensors do not match config.json's model: "
            + "; ".join(
                ([f"missing {missing[:5]}"] if missing else []) + ([f"unexpected {unknown[:5]}"] if unknown else [])
            )
        )
    weights = {}
    for name, (shape, dtype) in expected.items():
        try:
            sl = handle.get_slice(name)
            got_shape, got_dtype = tuple(sl.get_shape()), sl.get_dtype()
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{file}: tensor {name!r} cannot be read ({exc})") from None
        if got_shape != shape or got_dtype != dtype:
            raise ValueError(
                f"{file}: tensor {name!r} is {got_dtype} of shape {list(got_shape)}, but config.json's "
                f"model needs {dtype} of shape {list(shape)}"
            )
        try:
            tensor = handle.get_tensor(name)
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise ValueError(f"{file}: tensor {name!r} cannot be read ({exc})") from None
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise ValueError(f"{file}: tensor {name!r} has {bad} NaN or infinite value(s)")
        weights[name] = tensor
    return weights


def load_model(cls, path, *, device="cpu", encoder=None):
    """Load a model directory into a new ``cls`` (see :meth:`LLKDClassifier.load`)."""

    from ._inputs import resolve_device

    dev = resolve_device(device)
    saved = read_model(cls, path, encoder=encoder)
    params = dict(saved.params)
    if saved.encoder is not None:
        params["encoder"] = saved.encoder
    elif encoder is not None:
        params["encoder"] = encoder
    params["device"] = str(device)
    est = cls(**params)
    for f in FITTED:
        value = saved.fitted[f.attr]
        if f.attr == "selector_":
            value = _selector(est, len(saved.fitted["classes_"]), value)
        if value is not None or not f.optional:
            setattr(est, f.attr, value)
    est._kind_ = est._model_config_["kind"]
    if saved.tokenizer_dir is not None:
        est._tokenizer_ = _read_tokenizer(saved.tokenizer_dir)
        _check_vocabulary(est._tokenizer_, saved.weights, saved.tokenizer_dir)
    model = build_student(est._model_config_, est._encoder_config_)
    model.load_state_dict(saved.weights)
    est.student_ = model.to(dev).eval()
    est._frozen_encoder_ = None
    return est


def _selector(est, n_classes, state):
    """The fitted selector as the fit built it, from params and its saved levels; a backend
    this machine lacks (a model saved where CUDA was built) falls back to "auto"."""
    from .selection import AdaptiveSelector, resolve_selection
    from .selection._backends import cuda_built, native_available

    backend = est.selection_backend
    if backend == "native" and not native_available() or backend == "cuda" and not cuda_built():
        backend = "auto"
    selector = AdaptiveSelector(
        n_classes,
        momentum=est.momentum,
        mode=resolve_selection(est.selection, est._model_config_["kind"]),
        weighting=est.weighting,
        backend=backend,
        fixed_threshold=est.fixed_threshold,
        random_rate=est.random_rate,
    )
    selector.state = state
    selector.n_steps = state.n_updates
    return selector


def _check_vocabulary(tokenizer, weights: dict, where) -> None:
    """Token ids the tokenizer can produce must have a row in the embedding matrix."""
    rows = [t.shape[0] for k, t in weights.items() if k.endswith("word_embeddings.weight")]
    if not rows:
        return
    if len(tokenizer) > rows[0]:
        raise ValueError(
            f"{where}: the tokenizer has {len(tokenizer)} tokens but the encoder's embedding has {rows[0]} rows"
        )
    token, top = max(tokenizer.get_vocab().items(), key=lambda item: item[1], default=(None, -1))
    if top >= rows[0]:
        raise ValueError(
            f"{where}: the tokenizer maps {token!r} to id {top}, beyond the encoder's {rows[0]} embedding rows"
        )
