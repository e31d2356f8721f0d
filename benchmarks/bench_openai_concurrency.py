"""Throughput of OpenAITeacher against a server of known capacity (loopback).

The server answers each request after a fixed latency and serves at most ``--slots``
requests at a time (more wait in its queue), as a continuous-batching server (vLLM with
``max_num_seqs``) does: its capacity is ``slots / latency`` requests per second. For each
client concurrency the script labels the same texts twice, through ``label_in_batches``
(requests sent continuously, each answer cached as it arrives) and batch by batch with
``teacher.label`` (the loop before: each batch waits for its slowest request), and prints
the throughput of both as a fraction of the capacity.

    python benchmarks/bench_openai_concurrency.py                 # 1, 16, 64, 256
    python benchmarks/bench_openai_concurrency.py --quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LABELS = ["negative", "positive"]


class CapacityServer:
    """OpenAI chat completions with log-probabilities, ``slots`` at a time, ``latency`` each."""

    def __init__(self, latency: float, slots: int, jitter: float):
        self.latency, self.jitter = latency, jitter
        self.slots = threading.BoundedSemaphore(slots)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # as uvicorn (vLLM's server) does: no delayed-ACK stalls

            def log_message(self, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                json.loads(self.rfile.read(n))
                with server.slots:
                    time.sleep(server.latency * (1 + server.jitter * (2 * random.random() - 1)))
                lp = [{"token": "positive", "logprob": -0.2}, {"token": "negative", "logprob": -1.7}]
                body = json.dumps(
                    {
                        "choices": [
                            {
                                "message": {"role": "assistant", "content": "positive"},
                                "logprobs": {"content": [{"token": "positive", "logprob": -0.2, "top_logprobs": lp}]},
                            }
                        ]
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        ThreadingHTTPServer.daemon_threads = True
        ThreadingHTTPServer.request_queue_size = 1024
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def run(concurrency: int, n_texts: int, server, batch_size: int) -> dict:
    from llkd.teachers import OpenAITeacher, label_in_batches

    def teacher():
        return OpenAITeacher(
            "bench", LABELS, base_url=server.url, api_key_env=None, max_concurrency=concurrency, timeout=60
        )

    texts = [f"review number {i} of the benchmark" for i in range(n_texts)]
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        label_in_batches(teacher(), texts, batch_size=batch_size, cache=os.path.join(d, "c.sqlite"))
        stream = time.perf_counter() - t0
    t = teacher()
    t0 = time.perf_counter()
    for s in range(0, n_texts, batch_size):
        t.label(texts[s : s + batch_size])
    batched = time.perf_counter() - t0
    return {"concurrency": concurrency, "stream_rps": n_texts / stream, "batched_rps": n_texts / batched}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.2, help="seconds per request at the server")
    ap.add_argument("--slots", type=int, default=64, help="requests the server serves at once")
    ap.add_argument("--jitter", type=float, default=0.5, help="latency varies by +-this fraction")
    ap.add_argument("--batch-size", type=int, default=64, help="label_in_batches / label batch size")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    ap.add_argument("--requests", type=int, default=None, help="texts per run (default: 8 s of capacity)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.concurrency, args.requests = [1, 16, 64], 256
    capacity = args.slots / args.latency
    n = args.requests or int(8 * capacity)
    print(
        f"# {datetime.datetime.now().isoformat(timespec='minutes')} {platform.node()} "
        f"({os.cpu_count()} cores, 1-min load {os.getloadavg()[0]:.1f}); server: {args.slots} slots x "
        f"{args.latency * 1000:.0f} ms (+-{100 * args.jitter:.0f} %) = capacity {capacity:.0f} req/s; "
        f"{n} texts per run, batch size {args.batch_size}"
    )
    print("| client max_concurrency | label_in_batches (continuous) | batch by batch (label) |")
    print("|---|---|---|")
    with CapacityServer(args.latency, args.slots, args.jitter) as server:
        for c in args.concurrency:
            r = run(c, min(n, max(64, int(n * min(1.0, c / args.slots)))), server, args.batch_size)
            print(
                f"| {c} | {r['stream_rps']:.0f} req/s ({100 * r['stream_rps'] / capacity:.0f} % of capacity) | "
                f"{r['batched_rps']:.0f} req/s ({100 * r['batched_rps'] / capacity:.0f} %) |",
                flush=True,
            )


if __name__ == "__main__":
    main()
