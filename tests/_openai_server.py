"""A fake OpenAI-compatible HTTP server on loopback, for the OpenAITeacher tests.

Its "model" scores sentiment by counting words: p(positive) = sigmoid(2 * (#good - #bad))
with good = {good, great, fun, love}, bad = {bad, awful, dull, hate}. It answers
``/v1/chat/completions`` and ``/v1/completions`` in the OpenAI wire format, with or
without log-probabilities, honours ``n`` (or not), and plays injected failures:
``server.fail_next(("status", 429, {"Retry-After": "0"}), ("status", 500), ("sleep", 2.0),
("malformed",), ("status", 400, "message"), ("redirect", 302, "http://other/v1/..."),
("nologprobs",))``, one per request in order. ``("redirect", code, location)`` answers with
that status and ``Location`` (absolute, or a path on this server); ``("nologprobs",)``
answers normally but without log-probabilities. ``requests`` records the path, headers
and body of every request received.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GOOD = {"good", "great", "fun", "love"}
BAD = {"bad", "awful", "dull", "hate"}


def p_positive(text: str) -> float:
    words = [w.strip(".,!?").lower() for w in text.split()]
    s = sum(w in GOOD for w in words) - sum(w in BAD for w in words)
    return 1.0 / (1.0 + math.exp(-2.0 * s))


class FakeOpenAIServer:
    def __init__(
        self,
        *,
        logprobs: bool = True,
        honour_n: bool = True,
        api_key: str | None = None,
        labels=("negative", "positive"),
        delay: float = 0.0,
    ):
        self.delay = delay
        self.logprobs = logprobs
        self.honour_n = honour_n
        self.api_key = api_key
        self.labels = list(labels)
        self.requests: list[dict] = []
        self._failures: list[tuple] = []
        self._lock = threading.Lock()
        self._rng = random.Random(0)
        self._concurrent = 0
        self.max_concurrent = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                server._handle(self)

            def do_GET(self):  # what a client that turns a redirected POST into a GET sends
                server._handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # -- control -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def fail_next(self, *actions):
        with self._lock:
            self._failures.extend(actions)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    # -- answering -----------------------------------------------------------------------------
    def _send(self, h, status: int, payload, headers=None):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _handle(self, h):
        n = int(h.headers.get("Content-Length", "0"))
        raw = h.rfile.read(n)
        try:
            body = json.loads(raw)
        except ValueError:
            with self._lock:
                self.requests.append({"method": h.command, "path": h.path, "headers": dict(h.headers), "body": None})
            return self._send(h, 400, {"error": {"message": "invalid JSON body"}})
        with self._lock:
            self.requests.append(
                {
                    "method": h.command,
                    "path": h.path,
                    "headers": dict(h.headers),
                    "body": body,
                    "peer": h.client_address,
                }
            )
            action = self._failures.pop(0) if self._failures else None
            self._concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self._concurrent)
        try:
            if self.delay:
                time.sleep(self.delay)
            if action is not None:
                kind = action[0]
                if kind == "status":
                    status = action[1]
                    extra = action[2] if len(action) > 2 else None
                    headers = extra if isinstance(extra, dict) else None
                    msg = extra if isinstance(extra, str) else f"injected {status}"
                    return self._send(h, status, {"error": {"message": msg, "type": "injected"}}, headers)
                if kind == "redirect":
                    return self._send(h, action[1], {"error": {"message": "moved"}}, {"Location": action[2]})
                if kind == "drop":  # close the connection without an answer
                    h.close_connection = True
                    return None
                if kind == "sleep":
                    time.sleep(action[1])
                elif kind == "malformed":
                    return self._send(h, 200, b"{not json")
            if self.api_key is not None and h.headers.get("Authorization") != f"Bearer {self.api_key}":
                return self._send(h, 401, {"error": {"message": "Incorrect API key provided"}})
            if action is not None and action[0] == "nologprobs":
                body = {k: v for k, v in body.items() if k not in ("logprobs", "top_logprobs")}
            if h.path.endswith("/chat/completions"):
                return self._send(h, 200, self._chat(body))
            if h.path.endswith("/completions"):
                return self._send(h, 200, self._completions(body))
            return self._send(h, 404, {"error": {"message": f"no route {h.path}"}})
        finally:
            with self._lock:
                self._concurrent -= 1

    def _text_of(self, body) -> str:
        if "messages" in body:
            last = body["messages"][-1]["content"]
        else:
            last = body["prompt"].rsplit("\n\n", 1)[-1]
        return last.split(":", 1)[1] if ":" in last else last

    def _choices(self, body, chat: bool):
        p = p_positive(self._text_of(body))
        neg, pos = self.labels
        tops = sorted(
            [(pos, math.log(p) - 0.05), (neg, math.log(1 - p) - 0.05), ("neutral", math.log(0.03))], key=lambda x: -x[1]
        )
        k = body.get("top_logprobs", 20) if chat else body.get("logprobs") or 0
        want_lp = self.logprobs and (body.get("logprobs") is True if chat else bool(body.get("logprobs")))
        n = int(body.get("n", 1)) if self.honour_n else 1
        choices = []
        for i in range(n):
            if body.get("temperature", 1) == 0:
                ans = tops[0][0]
            else:
                ans = pos if self._rng.random() < p else neg
            prefix = "" if chat else " "
            if chat:
                ch = {"index": i, "message": {"role": "assistant", "content": ans}, "finish_reason": "stop"}
                ch["logprobs"] = None
                if want_lp:
                    ch["logprobs"] = {
                        "content": [
                            {
                                "token": ans,
                                "logprob": dict(tops)[ans],
                                "bytes": list(ans.encode()),
                                "top_logprobs": [{"token": t, "logprob": v} for t, v in tops[:k]],
                            }
                        ]
                    }
            else:
                ch = {"index": i, "text": prefix + ans, "finish_reason": "length", "logprobs": None}
                if want_lp:
                    ch["logprobs"] = {
                        "tokens": [prefix + ans],
                        "token_logprobs": [dict(tops)[ans]],
                        "top_logprobs": [{prefix + t: v for t, v in tops[:k]}],
                        "text_offset": [0],
                    }
            choices.append(ch)
        return choices

    def _chat(self, body):
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model"),
            "choices": self._choices(body, chat=True),
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        }

    def _completions(self, body):
        return {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": 0,
            "model": body.get("model"),
            "choices": self._choices(body, chat=False),
        }
