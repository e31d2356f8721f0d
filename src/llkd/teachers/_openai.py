"""OpenAITeacher: any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp server).

Class distribution
------------------
- With log-probabilities (``logprobs`` in the response): the teacher asks for one answer
  token (temperature 0) with ``top_logprobs`` alternatives. Each listed token, stripped
  of spaces and lower-cased, counts for a class when it equals one of the class's
  verbalizers or is a prefix of verbalizers of that class only; a class's mass is the sum
  of its tokens' probabilities; a class absent from the list gets half the smallest listed
  probability (its true mass is at most that); the masses are normalised over the
  classes. Multi-token verbalizers are thus judged by their first token.
- Without them (the server ignores or refuses ``logprobs``): *self-consistency*, ``k``
  sampled answers (``n_samples``, temperature ``sample_temperature``) parsed into classes;
  the distribution is the share of votes with add-``smoothing`` counts (unparseable
  answers vote for nothing). ``mode_`` says which was used, and a warning says so when
  the teacher falls back.

Transport
---------
The standard library (``urllib``) over HTTP(S); up to ``max_concurrency`` requests in
flight (threads); each with ``timeout`` seconds; up to ``max_retries`` retries on 429,
408, 5xx, timeouts, dropped connections and malformed JSON, waiting
``min(max_backoff, backoff * 2**attempt)`` seconds (times a random factor in [0.5, 1]),
or the server's ``Retry-After`` when it sends one (capped at ``max_backoff``). Other 4xx
errors raise :class:`OpenAIHTTPError` at once with the server's message.

The API key is read from the environment variable named by ``api_key_env`` at each
request. It is never stored on the object, so it is in no pickle, repr, identity (cache
key) or log message.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ._base import TeacherOutput, check_classes, check_texts
from ._prompts import default_prompt

__all__ = ["OpenAITeacher", "OpenAIHTTPError"]

logger = logging.getLogger("llkd.teachers.openai")

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIHTTPError(RuntimeError):
    """The server answered with an error that retrying will not fix (or retries ran out)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


def _parse_retry_after(value) -> float | None:
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _norm(s: str) -> str:
    return s.strip().lower()


class OpenAITeacher:
    """Label texts with a model behind an OpenAI-compatible HTTP API.

    Parameters
    ----------
    model : str
        The model name the server knows.
    labels : sequence of str
        The class names, in order.
    base_url : str
        Up to and including the version, e.g. ``"https://api.openai.com/v1"`` or
        ``"http://localhost:8000/v1"`` (vLLM), ``"http://localhost:11434/v1"`` (Ollama).
    endpoint : {"chat", "completions"}
        ``/chat/completions`` (messages: instructions as the system message, few-shot
        examples as turns) or ``/completions`` (one text prompt, as the local teacher).
    api_key_env : str or None
        Name of the environment variable holding the API key (read at each request,
        never stored). Without the variable no ``Authorization`` header is sent, unless
        ``require_api_key`` (default: True for api.openai.com).
    verbalizers, template, instructions, few_shot, task
        As for :class:`~llkd.teachers.TransformersTeacher`.
    logprobs : {"auto", True, False}
        "auto": use log-probabilities, fall back to sampling when the server gives none;
        True: require them (error otherwise); False: always sample.
    top_logprobs : int
        Alternatives asked per answer token (OpenAI allows up to 20).
    n_samples, sample_temperature, smoothing : int, float, float
        Self-consistency fallback: answers per text, their temperature, and add-smoothing
        of the vote counts.
    max_tokens : int
        Answer length when sampling (log-probability mode asks for 1 token).
    max_tokens_field : str
        The request field for the answer length: ``"max_tokens"`` (default, understood
        by vLLM, Ollama, llama.cpp and OpenAI's older models) or ``"max_completion_tokens"``
        (OpenAI's newer models).
    max_concurrency : int
        Requests in flight at once.
    timeout, max_retries, backoff, max_backoff : float, int, float, float
        Per-request timeout (s), retries after the first try, and the backoff schedule.
    batch_size : int
        Texts per ``label`` call made by :func:`label_in_batches`.
    extra_body, headers : dict, optional
        Merged into every request's JSON body / HTTP headers.
    seed : int, optional
        Sent as ``seed`` (servers that support it sample reproducibly).
    progress : bool
        Show a progress bar over the texts of one ``label`` call.

    Attributes
    ----------
    mode_ : {"logprobs", "sampling", None}
        How the distribution was obtained (None before the first request).
    n_requests_ : int
        HTTP requests made (retries included).
    """

    def __init__(
        self,
        model: str,
        labels: Sequence[str],
        *,
        base_url: str = "https://api.openai.com/v1",
        endpoint: str = "chat",
        api_key_env: str | None = "OPENAI_API_KEY",
        require_api_key: bool | None = None,
        verbalizers=None,
        template: str | None = None,
        instructions: str | None = None,
        few_shot=None,
        task: str = "auto",
        logprobs="auto",
        top_logprobs: int = 20,
        n_samples: int = 5,
        sample_temperature: float = 1.0,
        smoothing: float = 0.5,
        max_tokens: int = 8,
        max_tokens_field: str = "max_tokens",
        max_concurrency: int = 4,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        batch_size: int = 16,
        extra_body: dict | None = None,
        headers: dict | None = None,
        seed: int | None = None,
        progress: bool = False,
    ):
        if not isinstance(model, str) or not model:
            raise TypeError(f"model must be a non-empty str, got {model!r}")
        self.model = model
        self.classes = check_classes(labels)
        self.base_url = str(base_url).rstrip("/")
        parsed = urllib.parse.urlparse(self.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if endpoint not in ("chat", "completions"):
            raise ValueError(f"endpoint must be 'chat' or 'completions', got {endpoint!r}")
        self.endpoint = endpoint
        if api_key_env is not None and not isinstance(api_key_env, str):
            raise TypeError("api_key_env must be the *name* of an environment variable (str) or None")
        if isinstance(api_key_env, str) and (api_key_env.startswith("sk-") or len(api_key_env) > 64):
            raise ValueError("api_key_env must name an environment variable, not hold the key itself")
        self.api_key_env = api_key_env
        self.require_api_key = (parsed.hostname == "api.openai.com") if require_api_key is None else bool(require_api_key)
        if logprobs not in ("auto", True, False):
            raise ValueError(f"logprobs must be 'auto', True or False, got {logprobs!r}")
        self.logprobs = logprobs
        for name, v, lo in (("top_logprobs", top_logprobs, 1), ("n_samples", n_samples, 1),
                            ("max_tokens", max_tokens, 1), ("max_concurrency", max_concurrency, 1),
                            ("max_retries", max_retries, 0), ("batch_size", batch_size, 1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        for name, v in (("timeout", timeout), ("backoff", backoff), ("max_backoff", max_backoff),
                        ("sample_temperature", sample_temperature), ("smoothing", smoothing)):
            if not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a non-negative number, got {v!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self.top_logprobs = int(top_logprobs)
        self.n_samples = int(n_samples)
        self.sample_temperature = float(sample_temperature)
        self.smoothing = float(smoothing)
        self.max_tokens = int(max_tokens)
        if max_tokens_field not in ("max_tokens", "max_completion_tokens"):
            raise ValueError(f"max_tokens_field must be 'max_tokens' or 'max_completion_tokens', got {max_tokens_field!r}")
        self.max_tokens_field = max_tokens_field
        self.max_concurrency = int(max_concurrency)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.batch_size = int(batch_size)
        self.extra_body = dict(extra_body or {})
        self.headers = dict(headers or {})
        if any(k.lower() == "authorization" for k in self.headers):
            raise ValueError("do not pass the API key in headers: name its environment variable with api_key_env")
        self.seed = seed
        self.progress = progress

        default = default_prompt(self.classes, task)
        if template is None:
            template = default["template"]
            instructions = default["instructions"] if instructions is None else instructions
            few_shot = default["few_shot"] if few_shot is None else few_shot
        if "{text}" not in template:
            raise ValueError(f"template must contain a {{text}} field, got {template!r}")
        self.template = template
        self.instructions = "" if instructions is None else str(instructions).replace(
            "{labels}", ", ".join(map(str, self.classes)))
        self.answer_prefix = default["answer_prefix"]
        self.separator = default["separator"]
        self.verbalizers = self._check_verbalizers(verbalizers)
        self.few_shot = []
        for i, item in enumerate(few_shot or []):
            text, lab = item
            if lab not in self.classes:
                raise ValueError(f"few_shot[{i}] has unknown class {lab!r}; classes are {self.classes!r}")
            self.few_shot.append((str(text), self.classes.index(lab)))

        self.mode_ = None if logprobs == "auto" else ("logprobs" if logprobs else "sampling")
        self.n_requests_ = 0
        self._lock = threading.Lock()
        self._sleep = time.sleep

    # -- pickling: no lock, no key (there is none to drop) -----------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_lock"]
        state.pop("_sleep", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._sleep = time.sleep

    def __repr__(self) -> str:
        return f"OpenAITeacher({self.model!r}, labels={self.classes!r}, base_url={self.base_url!r}, endpoint={self.endpoint!r})"

    @property
    def identity(self) -> dict:
        return {
            "kind": "openai", "base_url": self.base_url, "endpoint": self.endpoint, "model": self.model,
            "template": self.template, "instructions": self.instructions,
            "few_shot": [(t, self.classes[k]) for t, k in self.few_shot], "verbalizers": self.verbalizers,
            "logprobs": self.logprobs, "top_logprobs": self.top_logprobs,
            "sampling": [self.n_samples, self.sample_temperature, self.smoothing, self.max_tokens, self.seed],
            "extra_body": self.extra_body,
        }

    def _check_verbalizers(self, verbalizers) -> list[list[str]]:
        if verbalizers is None:
            out = [[str(c)] for c in self.classes]
        elif isinstance(verbalizers, Mapping):
            unknown = [k for k in verbalizers if k not in self.classes]
            if unknown:
                raise ValueError(f"verbalizers has unknown classes {unknown!r}")
            out = [[v] if isinstance(v := verbalizers.get(c, [str(c)]), str) else list(v) for c in self.classes]
        else:
            verbalizers = list(verbalizers)
            if len(verbalizers) != len(self.classes):
                raise ValueError(f"verbalizers has {len(verbalizers)} entries for {len(self.classes)} classes")
            out = [[v] if isinstance(v, str) else list(v) for v in verbalizers]
        seen = {}
        for c, vs in zip(self.classes, out):
            for v in vs:
                if not isinstance(v, str) or not v.strip():
                    raise ValueError(f"verbalizers of class {c!r} must be non-empty strings, got {vs!r}")
                if seen.setdefault(_norm(v), c) != c:
                    raise ValueError(f"verbalizer {v!r} is given for classes {seen[_norm(v)]!r} and {c!r}")
        return out

    # -- prompts ----------------------------------------------------------------------------
    def _answer_instruction(self) -> str:
        return "Answer with exactly one of: " + ", ".join(vs[0] for vs in self.verbalizers) + "."

    def _payload(self, text: str, sampling: bool) -> dict:
        body: dict = {"model": self.model}
        if self.endpoint == "chat":
            system = (self.instructions + " " if self.instructions else "") + self._answer_instruction()
            msgs = [{"role": "system", "content": system}]
            for ex, k in self.few_shot:
                msgs.append({"role": "user", "content": self.template.format(text=ex)})
                msgs.append({"role": "assistant", "content": self.verbalizers[k][0]})
            msgs.append({"role": "user", "content": self.template.format(text=text)})
            body["messages"] = msgs
        else:
            parts = [self.instructions + self.separator] if self.instructions else []
            for ex, k in self.few_shot:
                parts.append(self.template.format(text=ex) + self.answer_prefix + self.verbalizers[k][0] + self.separator)
            body["prompt"] = "".join(parts) + self.template.format(text=text)
        if sampling:
            body[self.max_tokens_field] = self.max_tokens
            body["temperature"] = self.sample_temperature
            body["n"] = self.n_samples
            if self.endpoint == "completions":
                body["stop"] = ["\n"]
        else:
            body[self.max_tokens_field] = 1
            body["temperature"] = 0
            if self.endpoint == "chat":
                body["logprobs"] = True
                body["top_logprobs"] = self.top_logprobs
            else:
                body["logprobs"] = self.top_logprobs
        if self.seed is not None:
            body["seed"] = self.seed
        body.update(self.extra_body)
        return body

    # -- HTTP -------------------------------------------------------------------------------
    def _headers(self) -> dict:
        h = {"Content-Type": "application/json", "Accept": "application/json", **self.headers}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if key:
                h["Authorization"] = "Bearer " + key
            elif self.require_api_key:
                raise OpenAIHTTPError(
                    f"the environment variable {self.api_key_env} (api_key_env) is not set; "
                    f"{self.base_url} needs an API key"
                )
        return h

    def _post_once(self, url: str, body: bytes) -> dict:
        req = urllib.request.Request(url, data=body, headers=self._headers(), method="POST")
        with self._lock:
            self.n_requests_ += 1
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            try:
                detail = e.read().decode("utf-8", "replace")[:500]
            except Exception:  # pragma: no cover
                detail = ""
            try:
                msg = json.loads(detail)["error"]["message"]
            except Exception:
                msg = detail.strip() or e.reason
            if e.code in _RETRY_STATUS:
                raise _Retryable(f"HTTP {e.code}: {msg}", _parse_retry_after(e.headers.get("Retry-After")), e.code) from None
            hint = {401: " (check the API key in $" + str(self.api_key_env) + ")", 404: " (check base_url and model)"}.get(e.code, "")
            raise OpenAIHTTPError(f"{url} answered HTTP {e.code}: {msg}{hint}", e.code) from None
        except (socket.timeout, TimeoutError) as e:
            raise _Retryable(f"timed out after {self.timeout:g} s ({e})") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, (socket.timeout, TimeoutError)):
                raise _Retryable(f"timed out after {self.timeout:g} s") from None
            if isinstance(e.reason, ConnectionRefusedError):
                raise _Retryable(f"connection refused by {self.base_url}") from None
            raise _Retryable(f"connection error: {e.reason}") from None
        except (http.client.HTTPException, ConnectionError, OSError) as e:
            raise _Retryable(f"connection error: {type(e).__name__}: {e}") from None
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise _Retryable(f"malformed JSON in the response: {raw[:120]!r}") from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
            raise _Retryable(f"response has no choices: {str(data)[:200]}")
        return data

    def _post(self, body: dict) -> dict:
        url = self.base_url + ("/chat/completions" if self.endpoint == "chat" else "/completions")
        payload = json.dumps(body).encode("utf-8")
        last = None
        for attempt in range(self.max_retries + 1):
            try:
                return self._post_once(url, payload)
            except _Retryable as e:
                last = e
                if attempt == self.max_retries:
                    break
                delay = min(self.max_backoff, self.backoff * (2 ** attempt)) * random.uniform(0.5, 1.0)
                if e.retry_after is not None:
                    delay = min(self.max_backoff, e.retry_after)
                logger.warning("%s: %s; retry %d/%d in %.2f s", url, e, attempt + 1, self.max_retries, delay)
                self._sleep(delay)
        raise OpenAIHTTPError(f"{url} failed after {self.max_retries + 1} attempts: {last}", last.status)

    # -- answers ----------------------------------------------------------------------------
    def _class_of_token(self, token: str):
        t = _norm(token)
        if not t:
            return None
        exact = [k for k, vs in enumerate(self.verbalizers) if any(_norm(v) == t for v in vs)]
        if exact:
            return exact[0]
        pre = {k for k, vs in enumerate(self.verbalizers) if any(_norm(v).startswith(t) for v in vs)}
        return pre.pop() if len(pre) == 1 else None

    def class_of_answer(self, answer: str):
        """The class a free-text answer names, or None (exact, prefix, or sole mention)."""
        a = _norm(answer.split("\n", 1)[0] if answer.strip() else answer)
        a = a.strip(" \t\"'`.,;:!*()[]")
        if not a:
            return None
        for k, vs in enumerate(self.verbalizers):
            if any(a == _norm(v) for v in vs):
                return k
        starts = {k for k, vs in enumerate(self.verbalizers)
                  if any(re.match(re.escape(_norm(v)) + r"\b", a) for v in vs)}
        if len(starts) == 1:
            return starts.pop()
        mentioned = {k for k, vs in enumerate(self.verbalizers)
                     if any(re.search(r"\b" + re.escape(_norm(v)) + r"\b", a) for v in vs)}
        return mentioned.pop() if len(mentioned) == 1 else None

    def _dist_from_logprobs(self, data: dict):
        """Class distribution from the first answer token's top log-probabilities, or None."""
        choice = data["choices"][0]
        lp = choice.get("logprobs")
        if not lp:
            return None
        pairs = []
        if self.endpoint == "chat":
            content = lp.get("content") if isinstance(lp, dict) else None
            if not content:
                return None
            first = content[0]
            tops = first.get("top_logprobs") or [{"token": first.get("token", ""), "logprob": first.get("logprob")}]
            pairs = [(d.get("token", ""), d.get("logprob")) for d in tops]
        else:
            tops = lp.get("top_logprobs") if isinstance(lp, dict) else None
            if tops:
                pairs = list(tops[0].items())
            elif lp.get("tokens"):
                pairs = [(lp["tokens"][0], lp["token_logprobs"][0])]
            else:
                return None
        pairs = [(t, float(v)) for t, v in pairs if v is not None and np.isfinite(float(v))]
        if not pairs:
            return None
        C = len(self.classes)
        mass = np.zeros(C)
        seen = np.zeros(C, dtype=bool)
        for tok, logp in pairs:
            k = self._class_of_token(tok)
            if k is not None:
                mass[k] += np.exp(logp)
                seen[k] = True
        if not seen.any():
            # None of the listed tokens is a class: read the answer text as one vote.
            text = choice.get("message", {}).get("content", "") if self.endpoint == "chat" else choice.get("text", "")
            k = self.class_of_answer(text or "")
            if k is None:
                return np.full(C, 1.0 / C)
            mass[k], seen[k] = 1.0, True
        floor = 0.5 * min(np.exp(v) for _, v in pairs)
        mass[~seen] = floor
        return mass / mass.sum()

    def _sample_answers(self, text: str) -> list[str]:
        answers: list[str] = []
        for _ in range(self.n_samples):  # servers that ignore `n` answer once per request
            need = self.n_samples - len(answers)
            if need <= 0:
                break
            body = self._payload(text, sampling=True)
            body["n"] = need
            data = self._post(body)
            for ch in data["choices"][:need]:
                if self.endpoint == "chat":
                    answers.append((ch.get("message") or {}).get("content") or "")
                else:
                    answers.append(ch.get("text") or "")
        return answers

    def _dist_from_samples(self, text: str) -> np.ndarray:
        C = len(self.classes)
        votes = np.zeros(C)
        for a in self._sample_answers(text):
            k = self.class_of_answer(a)
            if k is not None:
                votes[k] += 1
        votes += self.smoothing
        if votes.sum() == 0:
            return np.full(C, 1.0 / C)
        return votes / votes.sum()

    def _switch_to_sampling(self, reason: str):
        with self._lock:
            if self.mode_ == "sampling":
                return
            self.mode_ = "sampling"
            self.fallback_reason_ = reason
        warnings.warn(
            f"{self.base_url} ({self.model}) gives no log-probabilities ({reason}); falling back to "
            f"self-consistency: {self.n_samples} sampled answers per text (OpenAITeacher.mode_ = 'sampling')",
            UserWarning, stacklevel=4,
        )

    def _one(self, text: str) -> np.ndarray:
        if self.mode_ != "sampling":
            try:
                data = self._post(self._payload(text, sampling=False))
            except OpenAIHTTPError as e:
                if self.logprobs == "auto" and e.status == 400 and "logprob" in str(e).lower():
                    self._switch_to_sampling(f"the server refused logprobs: {e}")
                    return self._dist_from_samples(text)
                raise
            dist = self._dist_from_logprobs(data)
            if dist is not None:
                if self.mode_ is None:
                    with self._lock:
                        self.mode_ = self.mode_ or "logprobs"
                return dist
            if self.logprobs is True:
                raise ValueError(
                    f"{self.base_url} returned no logprobs for model {self.model!r}; "
                    "use logprobs='auto' or False to sample answers instead"
                )
            self._switch_to_sampling("the response has no logprobs")
        return self._dist_from_samples(text)

    def label(self, texts: Sequence[str]) -> TeacherOutput:
        texts = check_texts(texts, allow_empty=True)
        C = len(self.classes)
        if not texts:
            return TeacherOutput(np.zeros(0, np.int64), np.zeros(0), np.zeros((0, C)))
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc=f"asking {self.model}", unit="text")
        try:
            if self.max_concurrency == 1 or len(texts) == 1:
                rows = []
                for t in texts:
                    rows.append(self._one(t))
                    if bar is not None:
                        bar.update(1)
            else:
                with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(texts))) as pool:
                    futures = [pool.submit(self._one, t) for t in texts]
                    if bar is not None:
                        for f in futures:
                            f.add_done_callback(lambda _f: bar.update(1))
                    try:
                        rows = [f.result() for f in futures]
                    except BaseException:
                        for f in futures:
                            f.cancel()
                        raise
        finally:
            if bar is not None:
                bar.close()
        return TeacherOutput.from_proba(np.stack(rows))
