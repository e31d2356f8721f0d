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
  answers vote for nothing).

With ``logprobs="auto"`` the method is decided once per teacher, at its first response
(a response without log-probabilities is asked again once, so that one faulty response
does not decide), and kept: a later response without log-probabilities is a fault and is
retried, never a switch. ``mode_`` says which method was chosen, a warning says so when
it is sampling, and the teacher's ``identity`` (the cache key of its answers) then says
``"method": "sampling"``.

Transport
---------
The standard library over HTTP(S): ``http.client`` connections kept alive and reused
across requests (a server closing an idle one costs one immediate resend, not a retry),
or ``urllib`` when a proxy is configured for ``base_url``. Up to ``max_concurrency``
requests in flight (threads); each with ``timeout`` seconds; up to ``max_retries`` retries on 429,
408, 5xx, timeouts (at most ``timeout_retries`` of them), dropped connections, malformed
JSON and, in log-probability mode, responses without log-probabilities, waiting
``min(max_backoff, backoff * 2**attempt)`` seconds (times a random factor in [0.5, 1]),
or the server's ``Retry-After`` when it sends one (capped at ``max_backoff``). A
``deadline`` bounds one ``label`` call as a whole, and each request of ``label_iter``
(which ``label_in_batches`` uses: requests are sent continuously, up to
``max_concurrency`` in flight, and each answer is cached as it arrives). Other 4xx errors and a
refused connection raise :class:`OpenAIHTTPError` at once.

Credentials
-----------
The API key is read from the environment variable named by ``api_key_env`` at each
request and sent in ``api_key_header`` (``Authorization: Bearer <key>`` by default). It
is never stored on the object, so it is in no pickle, repr, identity (cache key) or log
message. A credential given directly in ``headers`` or ``extra_body`` (a name such as
``api-key``, ``x-api-key``, ``token``, ``secret``, or a value that looks like a key) is
sent, but *dropped* when the teacher is pickled (an unpickled teacher raises a
``ValueError`` naming it until it is set again) and replaced by ``"<redacted>"`` in
``identity``. Redirects are followed only within the origin (scheme, host, port) of
``base_url``; a redirect to another origin raises :class:`OpenAIHTTPError` naming its
target, and nothing is sent there.
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
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import numpy as np

from ._base import TeacherOutput, check_classes, check_texts
from ._prompts import default_prompt

__all__ = ["OpenAITeacher", "OpenAIHTTPError"]

logger = logging.getLogger("llkd.teachers.openai")

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
_REDIRECT_STATUS = {301, 302, 303, 307, 308}
_MAX_REDIRECTS = 5
_REDACTED = "<redacted>"
_DROPPED = "<credential dropped when pickled: set it again>"
_SECRET_NAMES = {
    "authorization",
    "proxyauthorization",
    "apikey",
    "key",
    "token",
    "accesstoken",
    "authtoken",
    "bearer",
    "secret",
    "clientsecret",
    "password",
    "passwd",
    "cookie",
    "credential",
    "credentials",
}
_SECRET_SUFFIXES = ("apikey", "secret", "password", "authtoken", "accesstoken", "subscriptionkey", "authorization")
# Headers only: an extra_body field such as "stop_token" is a setting, and part of the identity.
_SECRET_HEADER_SUFFIXES = ("token", "cookie", "credential", "credentials")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects surface as HTTPError, to be judged (same origin or not) by the teacher."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class _NoDelay:
    """TCP_NODELAY on connect, as urllib3 does: a request is sent in one or two segments
    and must not wait for the server's delayed ACK of the first."""

    def connect(self):
        super().connect()
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):  # pragma: no cover - not a TCP socket
            pass


class _HTTPConnection(_NoDelay, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_NoDelay, http.client.HTTPSConnection):
    pass


class _ConnectionPool:
    """Idle kept-alive connections per origin, shared by the request threads.

    A thread takes a connection for one request and gives it back when the response
    was read whole and the server did not ask to close; at most ``max_idle`` wait per
    origin. Not pickled (a teacher builds a new pool when unpickled).
    """

    def __init__(self, max_idle: int):
        self.max_idle = max_idle
        self._idle: dict = {}
        self._lock = threading.Lock()

    def take(self, parts, timeout: float):
        """(connection, reused) for the origin of ``parts`` (a urlsplit result)."""
        key = _origin(parts.geturl())
        with self._lock:
            idle = self._idle.get(key)
            conn = idle.pop() if idle else None
        if conn is not None:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            return conn, True
        if parts.scheme == "https":
            return _HTTPSConnection(
                parts.hostname, parts.port, timeout=timeout, context=ssl.create_default_context()
            ), False
        return _HTTPConnection(parts.hostname, parts.port, timeout=timeout), False

    def give_back(self, parts, conn) -> None:
        key = _origin(parts.geturl())
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.max_idle:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for c in conns:
            c.close()


def _check_prices(prices):
    if prices is None:
        return None
    if not isinstance(prices, Mapping) or set(prices) != {"prompt", "completion"}:
        raise ValueError(f"prices must be {{'prompt': ..., 'completion': ...}} per million tokens; got {prices!r}")
    out = {}
    for k, v in prices.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
            raise ValueError(f"prices[{k!r}] must be a finite number >= 0; got {v!r}")
        out[k] = float(v)
    return out


def _stale(exc: BaseException) -> bool:
    """The server closed a kept-alive connection before reading the request."""
    return isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError))


def _origin(url: str) -> tuple:
    u = urllib.parse.urlsplit(url)
    port = u.port or {"http": 80, "https": 443}.get(u.scheme)
    return (u.scheme.lower(), (u.hostname or "").lower(), port)


def _secret_name(name) -> bool:
    n = re.sub(r"[^a-z0-9]", "", str(name).lower())
    return n in _SECRET_NAMES or n.endswith(_SECRET_SUFFIXES)


def _secret_header(name) -> bool:
    return _secret_name(name) or re.sub(r"[^a-z0-9]", "", str(name).lower()).endswith(_SECRET_HEADER_SUFFIXES)


def _secret_value(value, known: tuple) -> bool:
    if not isinstance(value, str):
        return False
    v = value.strip()
    return (v.startswith("sk-") and len(v) >= 20) or v.lower().startswith("bearer ") or (bool(v) and v in known)


def _hidden_values(obj, known: tuple = ()) -> list[str]:
    """The strings :func:`_hide` would replace in ``obj``."""
    if isinstance(obj, Mapping):
        items = obj.items()
    elif isinstance(obj, list):
        items = ((None, v) for v in obj)
    else:
        return []
    out: list[str] = []
    for k, v in items:
        if isinstance(v, str) and ((k is not None and _secret_name(k)) or _secret_value(v, known)):
            out.append(v)
        else:
            out += _hidden_values(v, known)
    return out


def _hide(obj, replacement: str, known: tuple = (), path: str = ""):
    """``obj`` with credential entries (by name or by value) replaced; also the paths replaced."""
    found: list[str] = []
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            p = f"{path}[{k!r}]"
            if (_secret_name(k) and isinstance(v, str)) or _secret_value(v, known):
                out[k] = replacement
                found.append(p)
            else:
                out[k], sub = _hide(v, replacement, known, p)
                found += sub
        return out, found
    if isinstance(obj, list):
        out = []
        for i, v in enumerate(obj):
            if _secret_value(v, known):
                out.append(replacement)
                found.append(f"{path}[{i}]")
            else:
                w, sub = _hide(v, replacement, known, f"{path}[{i}]")
                out.append(w)
                found += sub
        return out, found
    return obj, found


def _dropped_in(obj, path: str = "") -> list[str]:
    if isinstance(obj, Mapping):
        return [
            q
            for k, v in obj.items()
            for q in ([f"{path}[{k!r}]"] if v == _DROPPED else _dropped_in(v, f"{path}[{k!r}]"))
        ]
    if isinstance(obj, list):
        return [
            q
            for i, v in enumerate(obj)
            for q in ([f"{path}[{i}]"] if v == _DROPPED else _dropped_in(v, f"{path}[{i}]"))
        ]
    return []


class OpenAIHTTPError(RuntimeError):
    """The server answered with an error that retrying will not fix (or retries ran out)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class OpenAIResponseError(OpenAIHTTPError, ValueError):
    """The server kept answering without what the teacher needs (log-probabilities)."""


class _Retryable(Exception):
    def __init__(
        self, message: str, retry_after: float | None = None, status: int | None = None, kind: str = "transient"
    ):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status
        self.kind = kind


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _malformed_choices(choices: list, endpoint: str) -> str | None:
    """What is wrong with the shape of a response's ``choices`` (None: what the parsing reads is there)."""
    for i, ch in enumerate(choices):
        where = f"choices[{i}]"
        if not isinstance(ch, dict):
            return f"{where} is a {type(ch).__name__}, not an object"
        if endpoint == "chat":
            msg = ch.get("message")
            if msg is not None and not isinstance(msg, dict):
                return f"{where}.message is a {type(msg).__name__}, not an object"
            if msg is not None and not isinstance(msg.get("content") or "", str):
                return f"{where}.message.content is not a string"
        elif not isinstance(ch.get("text") or "", str):
            return f"{where}.text is not a string"
        lp = ch.get("logprobs")
        if lp is None:
            continue
        if not isinstance(lp, dict):
            return f"{where}.logprobs is a {type(lp).__name__}, not an object"
        if endpoint == "chat":
            content = lp.get("content") or []
            if not isinstance(content, list):
                return f"{where}.logprobs.content is not a list"
            for j, item in enumerate(content[:1]):
                if not isinstance(item, dict):
                    return f"{where}.logprobs.content[{j}] is not an object"
                tops = item.get("top_logprobs") or []
                if not isinstance(tops, list) or not all(isinstance(d, dict) for d in tops):
                    return f"{where}.logprobs.content[{j}].top_logprobs is not a list of objects"
                for d in [item, *tops]:
                    if d.get("logprob") is not None and not _is_number(d.get("logprob")):
                        return f"{where}.logprobs: a logprob is {d.get('logprob')!r}, not a number"
                    if not isinstance(d.get("token", ""), str):
                        return f"{where}.logprobs: a token is not a string"
        else:
            tops = lp.get("top_logprobs") or []
            if not isinstance(tops, list) or not all(isinstance(d, dict) for d in tops[:1]):
                return f"{where}.logprobs.top_logprobs is not a list of objects"
            if tops and not all(_is_number(v) for v in tops[0].values()):
                return f"{where}.logprobs.top_logprobs[0] holds a logprob that is not a number"
            tokens, token_lps = lp.get("tokens") or [], lp.get("token_logprobs") or []
            if not isinstance(tokens, list) or not isinstance(token_lps, list):
                return f"{where}.logprobs.tokens / token_logprobs are not lists"
            if tokens and (not token_lps or not isinstance(tokens[0], str) or not _is_number(token_lps[0])):
                return f"{where}.logprobs: the first token or its logprob is malformed"
    return None


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


def _first_word(verbalizer: str) -> str:
    """The leading run of letters and digits ("comp" of "comp.graphics"): tokenizers split there,
    so a first answer token rarely reaches past it. A verbalizer without one: its first word."""
    s = _norm(verbalizer)
    m = re.match(r"[^\W_]+", s)
    return m.group(0) if m else s.split()[0]


def _warn_shared_first_words(classes, verbalizers) -> None:
    """Warn where two classes' verbalizers start with the same word (or the same run of letters
    before a '.', '-' or '_'): log-probabilities are read for the answer's first token only,
    which then names both."""
    first: dict[str, tuple] = {}
    for c, vs in zip(classes, verbalizers):
        for v in vs:
            w = _first_word(v)
            c0, v0 = first.setdefault(w, (c, v))
            if c0 != c:
                warnings.warn(
                    f"verbalizers {v0!r} (class {c0!r}) and {v!r} (class {c!r}) start with the same word "
                    f"({w!r}); "
                    "log-probabilities are read for the answer's first token only, which cannot tell these "
                    "classes apart: give verbalizers whose first words differ, or use logprobs=False "
                    "(sampling reads whole answers)",
                    UserWarning,
                    stacklevel=4,
                )
                return


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
        never stored). Without the variable no key is sent, unless ``require_api_key``
        (default: True for api.openai.com).
    api_key_header : str
        The header that carries the key: ``"Authorization"`` (default) sends
        ``Bearer <key>``; any other name (e.g. Azure's ``"api-key"``) sends the key as is.
    verbalizers, template, instructions, few_shot, task
        As for :class:`~llkd.teachers.TransformersTeacher`.
    logprobs : {"auto", True, False}
        "auto": use log-probabilities, or sampling when the server gives none (decided
        once, at the first response, and kept); True: require them (a response without
        them is retried, then an error); False: always sample. Log-probabilities are read
        for the first answer token, so with True or "auto" a warning names two classes whose
        verbalizers start with the same word or letters ("comp" of "comp.graphics" and
        "comp.windows.x"): give such classes distinct verbalizers.
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
    timeout_retries : int
        How many of the retries may follow a timeout: a server that accepts and never
        answers fails after ``(timeout_retries + 1) * timeout`` seconds per request.
    deadline : float, optional
        Seconds one ``label`` call (one batch of :func:`label_in_batches`) may take in
        all, retries and waits included; no request or wait runs past it and the call
        then raises :class:`OpenAIHTTPError`. None: no bound beyond the above.
    batch_size : int
        Texts per ``label`` call made by :func:`label_in_batches`.
    extra_body, headers : dict, optional
        Merged into every request's JSON body / HTTP headers. Credentials in them are
        sent, but dropped from pickles and redacted in ``identity`` (see the module
        docstring); prefer ``api_key_env`` with ``api_key_header``.
    seed : int, optional
        Sent as ``seed`` (servers that support it sample reproducibly).
    progress : bool
        Show a progress bar over the texts of one ``label`` call.
    prices : dict, optional
        What the server charges, per million tokens: ``{"prompt": p, "completion": c}``
        in any one currency. Gives ``cost_``. Not part of ``identity``.

    Attributes
    ----------
    mode_ : {"logprobs", "sampling", None}
        How the distributions are obtained (None before the first response with
        ``logprobs="auto"``).
    n_requests_ : int
        HTTP requests made (retries included).
    usage_ : dict
        Tokens the server reported (``prompt_tokens``, ``completion_tokens``,
        ``total_tokens``), summed over every response, retried ones included.
    cost_ : float or None
        ``usage_`` priced with ``prices`` (None without prices).
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
        api_key_header: str = "Authorization",
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
        timeout_retries: int = 1,
        deadline: float | None = None,
        batch_size: int = 16,
        extra_body: dict | None = None,
        headers: dict | None = None,
        seed: int | None = None,
        progress: bool = False,
        prices: Mapping | None = None,
    ):
        if not isinstance(model, str) or not model:
            raise TypeError(f"model must be a non-empty str, got {model!r}")
        self.model = model
        self.classes = check_classes(labels)
        self.base_url = str(base_url).rstrip("/")
        parsed = urllib.parse.urlparse(self.base_url)
        if parsed.username is not None or parsed.password is not None:
            # never echoed: the user:password part is a credential, and it would not be sent
            raise ValueError(
                "base_url must not hold credentials (user:password@host); put the API key in the "
                "environment variable that api_key_env names"
            )
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
        if not isinstance(api_key_header, str) or not _HEADER_NAME.match(api_key_header):
            raise ValueError(f"api_key_header must be an HTTP header name, got {api_key_header!r}")
        self.api_key_header = api_key_header
        self.require_api_key = (
            (parsed.hostname == "api.openai.com") if require_api_key is None else bool(require_api_key)
        )
        if logprobs not in ("auto", True, False):
            raise ValueError(f"logprobs must be 'auto', True or False, got {logprobs!r}")
        self.logprobs = logprobs
        for name, v, lo in (
            ("top_logprobs", top_logprobs, 1),
            ("n_samples", n_samples, 1),
            ("max_tokens", max_tokens, 1),
            ("max_concurrency", max_concurrency, 1),
            ("max_retries", max_retries, 0),
            ("batch_size", batch_size, 1),
            ("timeout_retries", timeout_retries, 0),
        ):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        for name, v in (
            ("timeout", timeout),
            ("backoff", backoff),
            ("max_backoff", max_backoff),
            ("sample_temperature", sample_temperature),
            ("smoothing", smoothing),
        ):
            if not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a non-negative number, got {v!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        if deadline is not None and (
            isinstance(deadline, bool)
            or not isinstance(deadline, (int, float))
            or not np.isfinite(deadline)
            or deadline <= 0
        ):
            raise ValueError(f"deadline must be a positive number of seconds or None, got {deadline!r}")
        self.timeout_retries = int(timeout_retries)
        self.deadline = None if deadline is None else float(deadline)
        self.top_logprobs = int(top_logprobs)
        self.n_samples = int(n_samples)
        self.sample_temperature = float(sample_temperature)
        self.smoothing = float(smoothing)
        self.max_tokens = int(max_tokens)
        if max_tokens_field not in ("max_tokens", "max_completion_tokens"):
            raise ValueError(
                f"max_tokens_field must be 'max_tokens' or 'max_completion_tokens', got {max_tokens_field!r}"
            )
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
        if any(k.lower() == api_key_header.lower() for k in self.headers) and api_key_env:
            raise ValueError(f"headers has {api_key_header!r}, the api_key_header that carries ${api_key_env}")
        self.seed = seed
        self.progress = progress
        self.prices = _check_prices(prices)

        default = default_prompt(self.classes, task)
        if template is None:
            template = default["template"]
            instructions = default["instructions"] if instructions is None else instructions
            few_shot = default["few_shot"] if few_shot is None else few_shot
        if "{text}" not in template:
            raise ValueError(f"template must contain a {{text}} field, got {template!r}")
        self.template = template
        self.instructions = (
            "" if instructions is None else str(instructions).replace("{labels}", ", ".join(map(str, self.classes)))
        )
        self.answer_prefix = default["answer_prefix"]
        self.separator = default["separator"]
        self.verbalizers = self._check_verbalizers(verbalizers)
        if logprobs is not False:
            _warn_shared_first_words(self.classes, self.verbalizers)
        self.few_shot = []
        for i, item in enumerate(few_shot or []):
            text, lab = item
            if lab not in self.classes:
                raise ValueError(f"few_shot[{i}] has unknown class {lab!r}; classes are {self.classes!r}")
            self.few_shot.append((str(text), self.classes.index(lab)))

        self.mode_ = None if logprobs == "auto" else ("logprobs" if logprobs else "sampling")
        self.n_requests_ = 0
        self.usage_ = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        self._lock = threading.Lock()
        self._decide_lock = threading.Lock()
        self._memo: dict = {}
        self._sleep = time.sleep
        self._pool = _ConnectionPool(self.max_concurrency)

    # -- pickling: no lock, no credential ------------------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        for k in ("_lock", "_decide_lock", "_sleep", "_memo", "_pool"):
            state.pop(k, None)
        known = self._known_secrets()
        state["headers"] = {
            k: (_DROPPED if _secret_header(k) or _secret_value(v, known) else v) for k, v in self.headers.items()
        }
        state["extra_body"] = _hide(self.extra_body, _DROPPED, known)[0]
        return state

    def __setstate__(self, state):
        state.setdefault("api_key_header", "Authorization")
        state.setdefault("timeout_retries", state.get("max_retries", 5))
        state.setdefault("deadline", None)
        state.setdefault("usage_", {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
        state.setdefault("prices", None)
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._decide_lock = threading.Lock()
        self._memo = {}
        self._sleep = time.sleep
        self._pool = _ConnectionPool(self.max_concurrency)

    def _known_secrets(self) -> tuple:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return (key,) if key else ()

    def _scrub(self, text: str) -> str:
        """``text`` (a server's words, bound for a message) with every credential sent replaced."""
        secrets = set(self._known_secrets())
        secrets.update(
            v for k, v in self.headers.items() if isinstance(v, str) and (_secret_header(k) or _secret_value(v, ()))
        )
        secrets.update(_hidden_values(self.extra_body, tuple(secrets)))
        secrets.update(v.strip()[7:] for v in list(secrets) if v.strip().lower().startswith("bearer "))
        for secret in sorted((s.strip() for s in secrets), key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, _REDACTED)
        return text

    def __repr__(self) -> str:
        return (
            f"OpenAITeacher({self.model!r}, labels={self.classes!r}, base_url={self.base_url!r}, "
            f"endpoint={self.endpoint!r})"
        )

    @property
    def identity(self) -> dict:
        """What decides the answers: the model and how it is asked, not where it is served.

        ``base_url`` is not part of it, so the same model behind another replica or URL
        reuses the cached answers; caches written when it was (before 0.1.0's
        2026-12-02 change) are still read through :attr:`legacy_identities`.
        """
        ident = {
            "kind": "openai",
            "endpoint": self.endpoint,
            "model": self.model,
            "template": self.template,
            "instructions": self.instructions,
            "few_shot": [(t, self.classes[k]) for t, k in self.few_shot],
            "verbalizers": self.verbalizers,
            "logprobs": self.logprobs,
            "top_logprobs": self.top_logprobs,
            "sampling": [self.n_samples, self.sample_temperature, self.smoothing, self.max_tokens, self.seed],
            "extra_body": _hide(self.extra_body, _REDACTED, self._known_secrets())[0],
        }
        # Keys outlive releases: "auto" answers made with log-probabilities keep the old key.
        if self.logprobs == "auto" and self.mode_ == "sampling":
            ident["method"] = "sampling"
        return ident

    @property
    def legacy_identities(self) -> list:
        """Earlier identities of the same answers: the cache reads them when the current one
        has no answer, and copies what it finds under the current one."""
        return [{**self.identity, "base_url": self.base_url}]

    @property
    def unsettled_identities(self) -> list:
        """The other identities :meth:`settle_identity` may still settle on: with
        ``logprobs="auto"`` before the first answer, the sampling one. A pool cached whole
        under one of them is read without asking the server, and :meth:`settle_as` then
        settles on it, so later answers are made the same way."""
        if self.logprobs == "auto" and self.mode_ is None:
            return [{**self.identity, "method": "sampling"}]
        return []

    def settle_as(self, identity) -> None:
        """Settle on ``identity``, one of :attr:`unsettled_identities`, without asking."""
        if identity not in self.unsettled_identities:
            raise ValueError("settle_as takes one of unsettled_identities")
        with self._decide_lock:
            self.mode_ = "sampling"
            self.fallback_reason_ = "the answers cached for this pool were sampled"

    def settle_identity(self, texts) -> None:
        """Decide how answers are made before any is cached (``logprobs="auto"``).

        :func:`label_in_batches` calls this with the texts it is about to ask: the
        teacher asks the first one (its answer is kept for the coming ``label`` call),
        decides between log-probabilities and sampling, and ``identity`` says which.
        """
        texts = list(texts)
        if self.logprobs == "auto" and self.mode_ is None and texts:
            dist = self._one(texts[0], self._deadline_at())
            with self._lock:
                self._memo[texts[0]] = dist

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
                parts.append(
                    self.template.format(text=ex) + self.answer_prefix + self.verbalizers[k][0] + self.separator
                )
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
    def _check_not_dropped(self) -> None:
        dropped = [f"headers[{k!r}]" for k, v in self.headers.items() if v == _DROPPED]
        dropped += ["extra_body" + p for p in _dropped_in(self.extra_body)]
        if dropped:
            raise ValueError(
                f"{', '.join(dropped)} held a credential, which is never pickled: set it again on this "
                "OpenAITeacher, or give the key through api_key_env (and api_key_header)"
            )

    def _headers(self) -> dict:
        h = {"Content-Type": "application/json", "Accept": "application/json", **self.headers}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if key:
                h[self.api_key_header] = ("Bearer " + key) if self.api_key_header.lower() == "authorization" else key
            elif self.require_api_key:
                raise OpenAIHTTPError(
                    f"the environment variable {self.api_key_env} (api_key_env) is not set; "
                    f"{self.base_url} needs an API key"
                )
        return h

    def _hint(self, status: int) -> str:
        if status in (401, 403):
            if not self.api_key_env:
                return (
                    " (the server wants an API key: set api_key_env to the name of the environment "
                    "variable that holds it)"
                )
            if not os.environ.get(self.api_key_env):
                return f" (the environment variable {self.api_key_env}, named by api_key_env, is not set)"
            return f" (check the API key in ${self.api_key_env})"
        return {404: " (check base_url and model)"}.get(status, "")

    def _send(self, url: str, body: bytes, headers: dict, timeout: float):
        """One POST: (status, reason, response headers, body)."""
        parts = urllib.parse.urlsplit(url)
        proxies = urllib.request.getproxies()
        if parts.scheme in proxies and not urllib.request.proxy_bypass(parts.hostname or ""):
            req = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with _OPENER.open(req, timeout=timeout) as resp:
                    return resp.status, resp.reason, resp.headers, resp.read()
            except urllib.error.HTTPError as e:
                with e:
                    try:
                        raw = e.read()
                    except Exception:  # pragma: no cover
                        raw = b""
                return e.code, e.reason, e.headers, raw
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        while True:
            conn, reused = self._pool.take(parts, timeout)
            try:
                conn.request("POST", target, body=body, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except BaseException as e:
                conn.close()
                if reused and _stale(e):
                    continue  # once more, on a new connection (the pool hands out no more stale ones)
                raise
            if resp.will_close:
                conn.close()
            else:
                self._pool.give_back(parts, conn)
            return resp.status, resp.reason, resp.headers, raw

    def _post_once(self, url: str, body: bytes, timeout: float) -> dict:
        headers = self._headers()
        for _hop in range(_MAX_REDIRECTS + 1):
            with self._lock:
                self.n_requests_ += 1
            try:
                status, reason, resp_headers, raw = self._send(url, body, headers, timeout)
            except TimeoutError as e:
                raise _Retryable(f"timed out after {timeout:g} s ({e})", kind="timeout") from None
            except ConnectionRefusedError:
                raise OpenAIHTTPError(
                    f"{url}: connection refused (is the server at {self.base_url} running?)"
                ) from None
            except urllib.error.URLError as e:
                if isinstance(e.reason, (socket.timeout, TimeoutError)):
                    raise _Retryable(f"timed out after {timeout:g} s", kind="timeout") from None
                if isinstance(e.reason, ConnectionRefusedError):
                    raise OpenAIHTTPError(
                        f"{url}: connection refused (is the server at {self.base_url} running?)"
                    ) from None
                raise _Retryable(f"connection error: {e.reason}") from None
            except (http.client.HTTPException, ConnectionError, OSError) as e:
                raise _Retryable(f"connection error: {type(e).__name__}: {e}") from None
            if status in _REDIRECT_STATUS:
                location = resp_headers.get("Location")
                if not location:
                    raise OpenAIHTTPError(f"{url} answered HTTP {status} without a Location", status)
                target = urllib.parse.urljoin(url, location)
                if _origin(target) != _origin(self.base_url):
                    raise OpenAIHTTPError(
                        f"{url} answered HTTP {status}, a redirect to {target}, another origin than "
                        f"base_url {self.base_url}: the request and its credentials were not sent "
                        "there (set base_url to that server if you trust it)",
                        status,
                    )
                url = target  # same origin: the same request again
                continue
            if not 200 <= status < 300:
                detail = raw.decode("utf-8", "replace")[:500]
                try:
                    msg = str(json.loads(detail)["error"]["message"])
                except Exception:
                    msg = detail.strip() or reason
                msg = self._scrub(msg)  # a server may quote the key it was sent
                if status in _RETRY_STATUS:
                    raise _Retryable(
                        f"HTTP {status}: {msg}", _parse_retry_after(resp_headers.get("Retry-After")), status
                    )
                raise OpenAIHTTPError(f"{url} answered HTTP {status}: {msg}{self._hint(status)}", status)
            break
        else:
            raise OpenAIHTTPError(f"{url}: more than {_MAX_REDIRECTS} redirects")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise _Retryable(self._scrub(f"malformed JSON in the response: {raw[:120]!r}")) from None
        self._count_usage(data)
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
            raise _Retryable(self._scrub(f"response has no choices: {str(data)[:200]}"))
        problem = _malformed_choices(data["choices"], self.endpoint)
        if problem:
            raise _Retryable(self._scrub(f"malformed response: {problem}"))
        return data

    def _count_usage(self, data) -> None:
        usage = data.get("usage") if isinstance(data, dict) else None
        if not isinstance(usage, dict):
            return
        n = {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
        n = {
            k: int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 else 0 for k, v in n.items()
        }
        if not n["total_tokens"]:
            n["total_tokens"] = n["prompt_tokens"] + n["completion_tokens"]
        with self._lock:
            for k, v in n.items():
                self.usage_[k] += v

    @property
    def cost_(self) -> float | None:
        if self.prices is None:
            return None
        with self._lock:
            u = dict(self.usage_)
        return (u["prompt_tokens"] * self.prices["prompt"] + u["completion_tokens"] * self.prices["completion"]) / 1e6

    def _deadline_at(self) -> float | None:
        return None if self.deadline is None else time.monotonic() + self.deadline

    def _post(self, body: dict, deadline_at: float | None = None, parse=None):
        """POST with retries; ``parse(data)`` (which may raise _Retryable) gives the result."""
        url = self.base_url + ("/chat/completions" if self.endpoint == "chat" else "/completions")
        self._check_not_dropped()
        payload = json.dumps(body).encode("utf-8")
        last = None
        n_timeouts = 0
        attempts = 0
        for attempt in range(self.max_retries + 1):
            timeout = self.timeout
            if deadline_at is not None:
                left = deadline_at - time.monotonic()
                if left <= 0:
                    break
                timeout = min(timeout, left)
            attempts += 1
            try:
                data = self._post_once(url, payload, timeout)
                return data if parse is None else parse(data)
            except _Retryable as e:
                last = e
                n_timeouts += e.kind == "timeout"
                if attempt == self.max_retries or (e.kind == "timeout" and n_timeouts > self.timeout_retries):
                    break
                delay = min(self.max_backoff, self.backoff * (2**attempt)) * random.uniform(0.5, 1.0)
                if e.retry_after is not None:
                    delay = min(self.max_backoff, e.retry_after)
                if deadline_at is not None and time.monotonic() + delay >= deadline_at:
                    break
                logger.warning("%s: %s; retry %d/%d in %.2f s", url, e, attempt + 1, self.max_retries, delay)
                self._sleep(delay)
        if last is None:
            raise OpenAIHTTPError(f"{url}: the deadline of {self.deadline:g} s for this batch passed before a request")
        why = f"failed after {attempts} attempt{'s' * (attempts != 1)}"
        if (
            deadline_at is not None
            and attempt < self.max_retries
            and not (last.kind == "timeout" and n_timeouts > self.timeout_retries)
        ):
            why += f" (the deadline of {self.deadline:g} s for this batch)"
        if last.kind == "no_logprobs":
            raise OpenAIResponseError(
                f"{url} {why}: {last}; the teacher uses log-probabilities for model {self.model!r} "
                "and does not switch methods (use logprobs=False to sample answers instead)",
                last.status,
            )
        raise OpenAIHTTPError(f"{url} {why}: {last}", last.status)

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
        starts = {
            k for k, vs in enumerate(self.verbalizers) if any(re.match(re.escape(_norm(v)) + r"\b", a) for v in vs)
        }
        if len(starts) == 1:
            return starts.pop()
        mentioned = {
            k
            for k, vs in enumerate(self.verbalizers)
            if any(re.search(r"\b" + re.escape(_norm(v)) + r"\b", a) for v in vs)
        }
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
        top = max(v for _, v in pairs)
        pairs = [(t, v - top) for t, v in pairs]  # relative to the best: exp cannot overflow
        for tok, logp in pairs:
            k = self._class_of_token(tok)
            if k is not None:
                mass[k] += np.exp(logp)
                seen[k] = True
        if not seen.any():
            # None of the listed tokens is a class: read the answer text as one vote.
            text = (
                (choice.get("message") or {}).get("content", "") if self.endpoint == "chat" else choice.get("text", "")
            )
            k = self.class_of_answer(text or "")
            if k is None:
                return np.full(C, 1.0 / C)
            mass[k], seen[k] = 1.0, True
        floor = 0.5 * min(np.exp(v) for _, v in pairs)
        mass[~seen] = floor
        return mass / mass.sum()

    def _sample_answers(self, text: str, deadline_at=None) -> list[str]:
        answers: list[str] = []
        for _ in range(self.n_samples):  # servers that ignore `n` answer once per request
            need = self.n_samples - len(answers)
            if need <= 0:
                break
            body = self._payload(text, sampling=True)
            body["n"] = need
            data = self._post(body, deadline_at)
            for ch in data["choices"][:need]:
                if self.endpoint == "chat":
                    answers.append((ch.get("message") or {}).get("content") or "")
                else:
                    answers.append(ch.get("text") or "")
        return answers

    def _dist_from_samples(self, text: str, deadline_at=None) -> np.ndarray:
        C = len(self.classes)
        votes = np.zeros(C)
        for a in self._sample_answers(text, deadline_at):
            k = self.class_of_answer(a)
            if k is not None:
                votes[k] += 1
        votes += self.smoothing
        if votes.sum() == 0:
            return np.full(C, 1.0 / C)
        return votes / votes.sum()

    def _switch_to_sampling(self, reason: str):
        self.mode_ = "sampling"
        self.fallback_reason_ = reason
        warnings.warn(
            f"{self.base_url} ({self.model}) gives no log-probabilities ({reason}); this teacher uses "
            f"self-consistency instead: {self.n_samples} sampled answers per text (OpenAITeacher.mode_ = "
            "'sampling', and its identity says so)",
            UserWarning,
            stacklevel=4,
        )

    def _need_logprobs(self, data: dict) -> np.ndarray:
        dist = self._dist_from_logprobs(data)
        if dist is None:
            raise _Retryable("the response has no logprobs", kind="no_logprobs")
        return dist

    def _decide(self, text: str, deadline_at) -> np.ndarray:
        """The first answer of an "auto" teacher: decides its method for good."""
        try:
            data = self._post(self._payload(text, sampling=False), deadline_at)
        except OpenAIHTTPError as e:
            if e.status == 400 and "logprob" in str(e).lower():
                self._switch_to_sampling(f"the server refused logprobs: {e}")
                return self._dist_from_samples(text, deadline_at)
            raise
        dist = self._dist_from_logprobs(data)
        if dist is None:  # once more, so that one faulty response does not decide
            dist = self._dist_from_logprobs(self._post(self._payload(text, sampling=False), deadline_at))
        if dist is None:
            self._switch_to_sampling("two responses had no logprobs")
            return self._dist_from_samples(text, deadline_at)
        self.mode_ = "logprobs"
        return dist

    def _one(self, text: str, deadline_at=None) -> np.ndarray:
        if self.mode_ is None:
            with self._decide_lock:
                if self.mode_ is None:
                    return self._decide(text, deadline_at)
        if self.mode_ == "sampling":
            return self._dist_from_samples(text, deadline_at)
        return self._post(self._payload(text, sampling=False), deadline_at, parse=self._need_logprobs)

    def label_iter(self, texts):
        """Answers as they arrive: yields ``(text, proba)`` in completion order.

        ``texts`` is read lazily, one text whenever a request slot frees, so up to
        ``max_concurrency`` requests stay in flight across what would be batch
        boundaries, and no text waits for the slowest of a batch. ``label_in_batches``
        uses this to keep a continuous-batching server (vLLM) full and to cache every
        answer as it comes. ``deadline`` bounds each request from when it is sent (in
        :meth:`label`, the whole call). On failure the
        pending requests are cancelled, those already running are waited for, and the
        raised exception's ``answered`` holds ``(texts, TeacherOutput)`` for the answers
        that arrived but were not yielded yet.
        """
        it = iter(texts)
        with self._lock:
            memo = dict(self._memo)
            self._memo.clear()
        first = next(it, None)
        if first is None:
            return
        if first in memo:
            yield first, memo.pop(first)
        else:
            yield first, self._one(check_texts([first])[0], self._deadline_at())  # settles the method for all
        pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="llkd-openai")
        pending: dict = {}
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < self.max_concurrency:
                    text = next(it, None)
                    if text is None:
                        exhausted = True
                    elif text in memo:
                        yield text, memo.pop(text)
                    else:
                        pending[pool.submit(self._one, check_texts([text])[0], self._deadline_at())] = text
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    text = pending.pop(f)
                    yield text, f.result()
        except BaseException as exc:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=True)
            arrived = [
                (t, f.result()) for f, t in pending.items() if f.done() and not f.cancelled() and not f.exception()
            ]
            if arrived:
                try:
                    exc.answered = (
                        [t for t, _ in arrived],
                        TeacherOutput.from_proba(np.stack([p for _, p in arrived])),
                    )
                except Exception:  # pragma: no cover - exceptions without a __dict__
                    pass
            raise
        finally:
            pool.shutdown(wait=True)

    def label(self, texts: Sequence[str]) -> TeacherOutput:
        """One answer per text; on failure the raised exception's ``answered`` holds
        ``(texts, TeacherOutput)`` for the texts that were answered (paid for)."""
        texts = check_texts(texts, allow_empty=True)
        C = len(self.classes)
        if not texts:
            return TeacherOutput(np.zeros(0, np.int64), np.zeros(0), np.zeros((0, C)))
        deadline_at = self._deadline_at()
        rows: dict[int, np.ndarray] = {}
        with self._lock:
            for i, t in enumerate(texts):
                if t in self._memo:
                    rows[i] = self._memo.pop(t)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc=f"asking {self.model}", unit="text", initial=len(rows))
        todo = [i for i in range(len(texts)) if i not in rows]
        try:
            if todo and self.mode_ is None:  # the first response decides the method, for all
                rows[todo[0]] = self._one(texts[todo[0]], deadline_at)
                todo = todo[1:]
                if bar is not None:
                    bar.update(1)
            if self.max_concurrency == 1 or len(todo) <= 1:
                for i in todo:
                    rows[i] = self._one(texts[i], deadline_at)
                    if bar is not None:
                        bar.update(1)
            elif todo:
                with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(todo))) as pool:
                    futures = {i: pool.submit(self._one, texts[i], deadline_at) for i in todo}
                    if bar is not None:
                        for f in futures.values():
                            f.add_done_callback(lambda _f: bar.update(1))
                    try:
                        for i, f in futures.items():
                            rows[i] = f.result()
                    except BaseException:
                        for f in futures.values():
                            f.cancel()
                        pool.shutdown(wait=True)
                        for i, f in futures.items():  # requests that finished are paid for: keep them
                            if f.done() and not f.cancelled() and f.exception() is None:
                                rows[i] = f.result()
                        raise
        except BaseException as exc:
            if rows:
                keep = sorted(rows)
                try:
                    exc.answered = (
                        [texts[i] for i in keep],
                        TeacherOutput.from_proba(np.stack([rows[i] for i in keep])),
                    )
                except Exception:  # pragma: no cover - exceptions without a __dict__
                    pass
            raise
        finally:
            if bar is not None:
                bar.close()
        return TeacherOutput.from_proba(np.stack([rows[i] for i in range(len(texts))]))
