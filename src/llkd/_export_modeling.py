"""A text classifier exported by llkd: a transformer encoder, mean pooling and a head.

This file is written next to the weights by ``LLKDClassifier.export(path, format="hf")``;
``transformers`` imports it when the directory is loaded with ``trust_remote_code=True``::

    from transformers import pipeline
    clf = pipeline("text-classification", model=path, trust_remote_code=True)
    clf(["a gorgeous, heartfelt film"], truncation=True)

Mean pooling (and the head) is not an architecture transformers ships, hence the code. The config
has its own ``model_type``, so a load without ``trust_remote_code=True`` stops with transformers'
error instead of building a built-in head with fresh, random weights.
"""

import torch
from torch import nn
from transformers import CONFIG_MAPPING, MODEL_MAPPING, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "bert"  # the encoder's model_type, set at export
_EncoderConfig = CONFIG_MAPPING[MODEL_TYPE]


class LLKDStudentConfig(_EncoderConfig):
    model_type = "llkd_student"


def _head(config):
    spec = config.llkd_head
    width = config.hidden_size
    layers = []
    if spec["type"] == "mlp" and spec["hidden_size"] > 0:
        layers += [nn.Linear(width, spec["hidden_size"]), nn.GELU(), nn.Dropout(0.0)]
        width = spec["hidden_size"]
    layers.append(nn.Linear(width, config.num_labels))
    return nn.Sequential(*layers) if spec["type"] == "mlp" else layers[0]


def _truncate(input_ids, attention_mask, config):
    """Cut each row as ``truncation=True`` would, for callers that did not pass it.

    The student never saw more than ``llkd_max_length`` tokens, and the encoder may have no
    positions beyond them. Where the tokenizer ends a text with a special token, it is kept.
    """
    limit = config.llkd_max_length
    if input_ids.shape[1] <= limit:
        return input_ids, attention_mask
    mask = attention_mask.bool()
    rank = mask.long().cumsum(1) - 1
    keep = mask & (rank < limit)
    if config.llkd_end_token:
        keep = mask & ((rank < limit - 1) | (rank == mask.sum(1, keepdim=True) - 1))
    order = torch.argsort((~keep).long(), dim=1, stable=True)[:, :limit]
    kept = keep.gather(1, order)
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    return input_ids.gather(1, order).masked_fill(~kept, pad), kept.long()


class _Head(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.net = _head(config)

    def forward(self, x):
        return self.net(x)


class LLKDStudentForSequenceClassification(PreTrainedModel):
    config_class = LLKDStudentConfig
    base_model_prefix = "llkd_student"

    def __init__(self, config):
        super().__init__(config)
        self.encoder = MODEL_MAPPING[_EncoderConfig](config)
        self.head = _Head(config) if config.llkd_head["type"] == "mlp" else _head(config)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        input_ids, attention_mask = _truncate(input_ids, attention_mask, self.config)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if self.config.llkd_normalize:
            pooled = nn.functional.normalize(pooled, p=2, dim=1)
        logits = self.head(pooled)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)
