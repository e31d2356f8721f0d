"""Deployable students: a transformers directory (``format="hf"``) or an ONNX model (``"onnx"``).

Both formats hold the whole text-to-logits path as one model: the encoder (the fine-tuned
one, or the frozen sentence encoder of the MLP student), mean pooling (L2-normalised where
the sentence encoder normalises), and the head. See :meth:`LLKDClassifier.export`.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import students

FORMATS = ("hf", "onnx")
ONNX_CONFIG, ONNX_MODEL, ONNX_INT8 = "llkd_onnx.json", "model.onnx", "model.int8.onnx"
EXPORT_MODEL_TYPE = "llkd_student"  # the model_type of an hf export; modeling_llkd.py names it too


class TextStudent(nn.Module):
    """input_ids, attention_mask -> logits: encoder, mean pooling, optional L2 norm, head."""

    def __init__(self, encoder: nn.Module, head: nn.Module, normalize: bool):
        super().__init__()
        self.encoder, self.head, self.normalize = encoder, head, normalize

    def forward(self, input_ids, attention_mask):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = students.mean_pool(hidden, attention_mask)
        if self.normalize:
            pooled = nn.functional.normalize(pooled, p=2, dim=1)
        return self.head(pooled)


def _pooling_mode(pooling):
    """'mean' for mean pooling, in sentence-transformers 6 (``pooling_mode``) and before it."""
    mode = getattr(pooling, "pooling_mode", None)
    if mode is None and hasattr(pooling, "get_pooling_mode_str"):
        mode = pooling.get_pooling_mode_str()
    return mode


def _frozen_parts(est):
    """(HF encoder, tokenizer, max_length, normalize) of the MLP student's sentence encoder."""
    enc = est._frozen_encoder(torch.device("cpu"))
    modules = list(enc) if isinstance(enc, nn.Sequential) else None
    names = [type(m).__name__ for m in modules] if modules else []
    ok = (
        modules
        and names[:2] == ["Transformer", "Pooling"]
        and set(names[2:]) <= {"Normalize"}
        and _pooling_mode(modules[1]) in ("mean", ["mean"])
        and hasattr(modules[0], "auto_model")
    )
    if not ok:
        raise ValueError(
            "export() supports a frozen sentence encoder made of a transformer, mean pooling and an optional "
            f"normalisation (as the packaged MiniLM and mpnet are); this encoder is {names or type(enc).__name__}"
        )
    max_length = int(enc.max_seq_length)
    tokenizer = _tokenizer_as_encoder(enc, modules[0].tokenizer, max_length)
    return modules[0].auto_model, tokenizer, max_length, "Normalize" in names


# Texts on which the exported tokenizer must give the encoder's own token ids: sentence-transformers
# before 6 strips each text, and lowercases it where do_lower_case is set, before its tokenizer runs.
_PROBES = ("  Leading and trailing spaces  ", "MiXeD CaSe, and Punctuation!", "tab\tand\nnewline\n", "x")


def _encoder_ids(enc, texts) -> list:
    """The token ids the sentence encoder feeds its transformer for ``texts`` (padding removed)."""
    features = enc.preprocess(list(texts)) if hasattr(enc, "preprocess") else enc.tokenize(list(texts))
    ids, mask = features["input_ids"], features["attention_mask"]
    return [row[m.bool()].tolist() for row, m in zip(ids, mask)]


def _tokenizer_as_encoder(enc, tokenizer, max_length: int):
    """A copy of ``tokenizer`` that tokenises texts as the sentence encoder does, or a ValueError.

    Where the encoder strips or lowercases texts itself, the copy's normaliser does the same, so
    the exported model, a transformers pipeline and :class:`~llkd.deploy.OnnxStudent` see the
    tokens the student was trained on.
    """
    prompt = (getattr(enc, "prompts", None) or {}).get(getattr(enc, "default_prompt_name", None) or "")
    if prompt:
        raise ValueError(
            f"export() cannot carry the sentence encoder's default prompt {prompt!r}, which it prepends to every "
            "text; this student was trained on prompted embeddings"
        )
    vocab = sorted(w for w in tokenizer.get_vocab() if w.isascii() and w.isalpha() and w.islower() and len(w) > 2)
    words = vocab[:: max(1, len(vocab) // 8)][:8]
    probes = _PROBES + (f"  {' '.join(w.capitalize() for w in words)} ", " ".join(w.upper() for w in words))
    want = _encoder_ids(enc, probes)
    base = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None)
    for extra in ((), ("strip",), ("lower",), ("strip", "lower")):
        tok = copy.deepcopy(tokenizer)
        if extra:
            if not hasattr(tok, "backend_tokenizer"):
                break
            from tokenizers import normalizers

            steps = [normalizers.Strip() if e == "strip" else normalizers.Lowercase() for e in extra]
            tok.backend_tokenizer.normalizer = normalizers.Sequence(steps + ([base] if base is not None else []))
        if tok(list(probes), truncation=True, max_length=max_length)["input_ids"] == want:
            return tok
    raise ValueError(
        "export() cannot reproduce the sentence encoder's tokenisation with its tokenizer (the encoder "
        "preprocesses texts in a way the exported model would not); the exported student would not see "
        "the tokens it was trained on"
    )


def text_student(est):
    """(TextStudent on the CPU in eval mode, tokenizer, max_length, head spec) of a fitted estimator."""
    kind = est._kind_
    model = est.student_
    if kind == "finetune":
        encoder, tokenizer, max_length, normalize = model.encoder, est._tokenizer_, est._truncation(), False
        head, spec = model.head, {"type": "linear"}
    else:
        encoder, tokenizer, max_length, normalize = _frozen_parts(est)
        head, spec = model, {"type": "mlp", "hidden_size": int(est._model_config_["hidden_size"])}
    module = TextStudent(copy.deepcopy(encoder).cpu().float(), copy.deepcopy(head).cpu().float(), normalize)
    return module.eval(), tokenizer, max_length, spec


def _is_saved_model(path: Path) -> bool:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "format_version" in config and "params" in config


def export_model(est, path, fmt: str, *, quantize: bool = False, metrics: dict | None = None) -> Path:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {fmt!r}")
    if not isinstance(quantize, bool):
        raise TypeError(f"quantize must be a bool; got {type(quantize).__name__}")
    if quantize and fmt != "onnx":
        raise ValueError("quantize=True is for format='onnx' (dynamic int8 quantisation with onnxruntime)")
    if metrics is not None and not (
        isinstance(metrics, dict) and all(isinstance(k, str) and np.isscalar(v) for k, v in metrics.items())
    ):
        raise TypeError("metrics must be a dict of str -> number or str (what you measured on held-out gold labels)")
    path = Path(path)
    if _is_saved_model(path):
        raise ValueError(
            f"{path} holds a model saved by LLKDClassifier.save; an export would overwrite its config.json "
            "and weights: export to another folder"
        )
    if not est._is_text:
        if fmt == "hf":
            raise ValueError(
                "format='hf' needs a text model (transformers pipelines take texts); this student was fitted on "
                "numeric features: use format='onnx'"
            )
        path.mkdir(parents=True, exist_ok=True)
        _export_features_onnx(est, path, quantize)
    else:
        module, tokenizer, max_length, spec = text_student(est)
        path.mkdir(parents=True, exist_ok=True)
        if fmt == "hf":
            _export_hf(est, path, module, tokenizer, max_length, spec)
        else:
            _export_text_onnx(est, path, module, tokenizer, max_length, quantize)
    from ._model_card import model_card

    (path / "README.md").write_text(model_card(est, fmt=fmt, metrics=metrics))
    return path


# ---------------------------------------------------------------- transformers
def _save_tokenizer(tokenizer, path: Path, max_length: int) -> None:
    tokenizer.save_pretrained(str(path))
    cfg = path / "tokenizer_config.json"
    if cfg.is_file():  # truncation=True then cuts where the student was trained to
        data = json.loads(cfg.read_text())
        data["model_max_length"] = max_length
        cfg.write_text(json.dumps(data, indent=2))


def _export_hf(est, path: Path, module: TextStudent, tokenizer, max_length: int, spec: dict) -> None:
    from safetensors.torch import save_file

    # its own model_type: without trust_remote_code transformers would build its own head, with random weights
    config_class = type("LLKDStudentConfig", (module.encoder.config.__class__,), {"model_type": EXPORT_MODEL_TYPE})
    config = config_class.from_dict(module.encoder.config.to_dict())
    classes = [str(c) for c in est.classes_]
    config.architectures = ["LLKDStudentForSequenceClassification"]
    config.auto_map = {
        "AutoConfig": "modeling_llkd.LLKDStudentConfig",
        "AutoModelForSequenceClassification": "modeling_llkd.LLKDStudentForSequenceClassification",
    }
    config.id2label = dict(enumerate(classes))
    config.label2id = {c: i for i, c in enumerate(classes)}
    config.llkd_head = spec
    config.llkd_normalize = bool(module.normalize)
    config.llkd_max_length = int(max_length)
    ids = tokenizer("a")["input_ids"]
    config.llkd_end_token = bool(ids) and ids[-1] in set(tokenizer.all_special_ids)
    config.save_pretrained(str(path))
    head = {("head." + k): v for k, v in module.head.state_dict().items()}
    weights = {("encoder." + k): v for k, v in module.encoder.state_dict().items()} | head
    save_file({k: v.detach().contiguous() for k, v in weights.items()}, str(path / "model.safetensors"))
    template = resources.files("llkd").joinpath("_export_modeling.py").read_text()
    model_type = module.encoder.config.model_type
    template = template.replace('MODEL_TYPE = "bert"', f"MODEL_TYPE = {model_type!r}", 1)
    (path / "modeling_llkd.py").write_text(template)
    _save_tokenizer(tokenizer, path, max_length)


# ------------------------------------------------------------------------ onnx
def _onnx_export(module, args, path: Path, input_names, dynamic_axes) -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportError("format='onnx' needs onnx and onnxruntime: pip install 'llkd[onnx]'") from None
    torch.onnx.export(
        module,
        args,
        str(path / ONNX_MODEL),
        input_names=input_names,
        output_names=["logits"],
        dynamic_axes=dynamic_axes,
        opset_version=17,
        dynamo=False,
    )


def _quantize(path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(path / ONNX_MODEL), str(path / ONNX_INT8), weight_type=QuantType.QInt8)


def _write_onnx_config(path: Path, est, **extra) -> None:
    import llkd

    info = {"classes": [c.item() if isinstance(c, np.generic) else c for c in est.classes_]}
    info.update(extra, llkd_version=llkd.__version__)
    (path / ONNX_CONFIG).write_text(json.dumps(info, indent=1))


def _export_text_onnx(est, path: Path, module, tokenizer, max_length: int, quantize: bool) -> None:
    ids = torch.tensor([[1, 2, 3, 4], [1, 2, 0, 0]], dtype=torch.long)
    mask = (ids > 0).long()
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}, "logits": {0: "batch"}}
    with torch.no_grad():
        _onnx_export(module, (ids, mask), path, ["input_ids", "attention_mask"], axes)
    if quantize:
        _quantize(path)
    tokenizer.save_pretrained(str(path))  # tokenizer.json is what OnnxStudent reads
    if not (path / "tokenizer.json").is_file():
        raise ValueError("format='onnx' needs a fast (tokenizers-backed) tokenizer with a tokenizer.json")
    pad = tokenizer.pad_token_id
    _write_onnx_config(
        path,
        est,
        input="text",
        max_length=int(max_length),
        pad_id=0 if pad is None else int(pad),
        pad_token=tokenizer.pad_token,
        pad_left=getattr(tokenizer, "padding_side", "right") == "left",
        quantized=quantize,
    )


def _export_features_onnx(est, path: Path, quantize: bool) -> None:
    head = copy.deepcopy(est.student_).cpu().float().eval()
    x = torch.zeros(2, est.n_features_in_)
    with torch.no_grad():
        _onnx_export(head, (x,), path, ["features"], {"features": {0: "batch"}, "logits": {0: "batch"}})
    if quantize:
        _quantize(path)
    _write_onnx_config(path, est, input="features", n_features=int(est.n_features_in_), quantized=quantize)
