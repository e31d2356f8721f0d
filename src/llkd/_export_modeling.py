"""A text classifier exported by llkd: a transformer encoder, mean pooling and a head.

This file is written next to the weights by ``LLKDClassifier.export(path, format="hf")``;
``transformers`` imports it when the directory is loaded with ``trust_remote_code=True``::

    from transformers import pipeline
    clf = pipeline("text-classification", model=path, trust_remote_code=True)
    clf(["a gorgeous, heartfelt film"], truncation=True)

Mean pooling (and the head) is not an architecture transformers ships, hence the code.
"""

import torch
from torch import nn
from transformers import CONFIG_MAPPING, AutoModel, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "bert"  # the encoder's model_type, set at export


def _head(config):
    spec = config.llkd_head
    width = config.hidden_size
    layers = []
    if spec["type"] == "mlp" and spec["hidden_size"] > 0:
        layers += [nn.Linear(width, spec["hidden_size"]), nn.GELU(), nn.Dropout(0.0)]
        width = spec["hidden_size"]
    layers.append(nn.Linear(width, config.num_labels))
    return nn.Sequential(*layers) if spec["type"] == "mlp" else layers[0]


class _Head(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.net = _head(config)

    def forward(self, x):
        return self.net(x)


class LLKDStudentForSequenceClassification(PreTrainedModel):
    config_class = CONFIG_MAPPING[MODEL_TYPE]
    base_model_prefix = "llkd_student"

    def __init__(self, config):
        super().__init__(config)
        self.encoder = AutoModel.from_config(config)
        self.head = _Head(config) if config.llkd_head["type"] == "mlp" else _head(config)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
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
