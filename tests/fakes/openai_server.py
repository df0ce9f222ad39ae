"""A loopback OpenAI-compatible chat-completions server, for driving the real ``openai`` client.

It answers ``POST /v1/chat/completions`` (and ``GET /v1/models``) on 127.0.0.1 with a deterministic
reply, and can be told to misbehave the way real endpoints do: latency, 429 with ``Retry-After``,
5xx, malformed JSON bodies, 401/403, unknown model (404), hanging until the client times out.

    def test_x(openai_server):                    # a fresh server per test
        openai_server.latency = 0.05              # every request waits 50 ms
        openai_server.script("429", "500")        # the next two requests fail, in order
        openai_server.per_key = ["429"]           # every conversation is throttled once, then answered
        openai_server.always = "401"              # every request fails the same way
        openai_server.responder = lambda body: "hello"   # decide the reply text from the request
        openai_server.listed = ["smollm2"]        # GET /v1/models lists these (default: `models`, else 404)
        openai_server.error_style = "fastapi"     # error bodies as {"detail": "..."} (llama.cpp's server)
        openai_server.serial = True               # one request at a time, the others queue (llama.cpp)
        ...
        openai_server.base_url                    # http://127.0.0.1:PORT/v1
        openai_server.requests                    # every received body, in arrival order
        openai_server.count(messages)             # requests received for one conversation
        openai_server.answered                    # Counter of conversation key -> 200 replies

Faults (strings): ``429``, ``500``, ``502``, ``503``, ``401``, ``403``, ``404`` (unknown model),
``400``, ``malformed`` (200 with a truncated JSON body), ``bad_shape`` (200 with JSON that is not a
completion), ``hang`` (no reply for ``hang_s`` seconds). A responder may also return a ``Reply``.

Run standalone (the throughput benchmark does, so the server has its own process and GIL):

    python -m tests.fakes.openai_server --latency 0.05     # prints the base URL, serves until killed
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

FAULTS = ("429", "500", "502", "503", "401", "403", "404", "400", "malformed", "bad_shape", "hang")


@dataclass
class Reply:
    """A full reply: text and finish reason, or a fault (one of ``FAULTS``)."""

    text: str = ""
    finish_reason: str | None = None  # None: "stop", or "length" when cut at max_tokens
    fault: str | None = None


Responder = Callable[[dict[str, Any]], "str | Reply | None"]


def message_key(messages: list[dict[str, Any]]) -> str:
    """The identity of a conversation, for counting requests per item."""
    return json.dumps(messages, sort_keys=True, ensure_ascii=False)


def default_text(body: dict[str, Any]) -> str:
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    return f"Answer to: {users[-1] if users else ''}"


def _words(text: str) -> int:
    return len(text.split())


class FakeOpenAI:
    """The server's state and knobs. Attributes may be changed while it runs."""

    def __init__(self) -> None:
        self.latency: float = 0.0
        self.always: str | None = None
        self.per_key: list[str] = []
        self.retry_after: str | None = "0"  # sent with 429 and 503; None: no header
        self.hang_s: float = 30.0
        self.api_key: str | None = None  # when set, other bearer tokens get 401
        self.models: set[str] | None = None  # when set, other model names get 404
        self.listed: list[str] | None = None  # what GET /v1/models lists; None: `models`, or 404 if unset
        self.error_style = "openai"  # or "fastapi": {"detail": "..."}
        self.model_lists = 0  # GET /v1/models answered
        self.serial = False  # answer one request at a time (queued ones wait), as llama.cpp does
        self._serial_lock = threading.Lock()
        self.responder: Responder | None = None
        self.requests: list[dict[str, Any]] = []
        self.events: list[tuple[float, str, int]] = []  # (monotonic time, conversation key, status)
        self.counts: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self._script: list[str | Reply] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # -- knobs ----------------------------------------------------------------------------------
    def script(self, *items: str | Reply) -> None:
        """Queue faults (or replies) for the next requests, in order, whatever their conversation."""
        for it in items:
            if isinstance(it, str) and it not in FAULTS:
                raise ValueError(f"unknown fault {it!r}; use one of {FAULTS}")
        with self._lock:
            self._script.extend(items)

    def count(self, messages: list[dict[str, Any]]) -> int:
        """Requests received for this conversation (whatever the outcome)."""
        with self._lock:
            return self.counts[message_key(messages)]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.events.clear()
            self.counts.clear()
            self.answered.clear()
            self._script.clear()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeOpenAI:
        fake = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False
            request_queue_size = 256  # a burst of concurrent connects must not hit the SYN backlog

        class Handler(_Handler):
            state = fake

        self._server = Server((host, port), Handler)
        self.base_url = f"http://{host}:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- the decision for one request -----------------------------------------------------------
    def _decide(self, body: dict[str, Any], auth: str) -> tuple[int, bytes, dict[str, str]]:
        key = message_key(body.get("messages", []))
        with self._lock:
            self.requests.append(body)
            nth = self.counts[key]
            self.counts[key] += 1
            fault: str | Reply | None = None
            if self.api_key is not None and auth != f"Bearer {self.api_key}":
                fault = "401"
            elif self.models is not None and body.get("model") not in self.models:
                fault = "404"
            elif self.always:
                fault = self.always
            elif self._script:
                fault = self._script.pop(0)
            elif nth < len(self.per_key):
                fault = self.per_key[nth]
            latency, responder, serial = self.latency, self.responder, self.serial
        if serial:
            # The server generates every queued answer, even for a client that gave up waiting.
            with self._serial_lock:
                time.sleep(latency)
        elif latency:
            time.sleep(latency)
        reply: str | Reply | None = fault if isinstance(fault, Reply) else None
        if isinstance(fault, str):
            reply = Reply(fault=fault)
        if reply is None and responder is not None:
            reply = responder(body)
        if reply is None:
            reply = default_text(body)
        if isinstance(reply, str):
            reply = Reply(text=reply)
        status, payload, headers = self._render(body, reply)
        with self._lock:
            self.events.append((time.monotonic(), key, status))
            if status == 200 and reply.fault is None:
                self.answered[key] += 1
        return status, payload, headers

    def _render(self, body: dict[str, Any], reply: Reply) -> tuple[int, bytes, dict[str, str]]:
        f = reply.fault
        if f == "hang":
            time.sleep(self.hang_s)
            f = "500"
        if f == "malformed":
            return 200, b'{"id": "chatcmpl-x", "choices": [{"index": 0, "message": {"content": "Hal', {}
        if f == "bad_shape":
            return 200, json.dumps({"id": "chatcmpl-x", "result": "not a completion"}).encode(), {}
        if f is not None:
            status = int(f)
            kind = {
                400: ("invalid_request_error", "bad request"),
                401: ("invalid_request_error", "Incorrect API key provided"),
                403: ("permission_denied", "You are not allowed to use this model"),
                404: ("invalid_request_error", f"The model `{body.get('model')}` does not exist"),
                429: ("rate_limit_exceeded", "Rate limit reached, slow down"),
            }.get(status, ("server_error", "The server had an error"))
            code = "model_not_found" if status == 404 else kind[0]
            headers = {}
            if status in (429, 503) and self.retry_after is not None:
                headers["Retry-After"] = self.retry_after
            err: dict[str, Any] = {
                "error": {"message": kind[1], "type": kind[0], "code": code, "param": None}
            }
            if self.error_style == "fastapi":
                err = {"detail": kind[1]}
            return status, json.dumps(err).encode(), headers
        text = reply.text
        finish = reply.finish_reason or "stop"
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if max_tokens and _words(text) > int(max_tokens):
            text = " ".join(text.split()[: int(max_tokens)])
            finish = reply.finish_reason or "length"
        prompt_words = sum(_words(str(m.get("content", ""))) for m in body.get("messages", []))
        out = {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_words,
                "completion_tokens": _words(text),
                "total_tokens": prompt_words + _words(text),
            },
        }
        return 200, json.dumps(out).encode(), {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints do
    disable_nagle_algorithm = True  # else Nagle + delayed ACK add ~40 ms to every reply
    state: FakeOpenAI

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        listed = self.state.listed
        if listed is None and self.state.models is not None:
            listed = sorted(self.state.models)
        if self.path.rstrip("/").endswith("/models") and listed is not None:
            with self.state._lock:
                self.state.model_lists += 1
            data = {
                "object": "list",
                "data": [{"id": m, "object": "model", "owned_by": "creed"} for m in listed],
            }
            self._send(200, json.dumps(data).encode())
        elif self.state.error_style == "fastapi":
            self._send(404, b'{"detail": "Not Found"}')
        else:
            self._send(404, b'{"error": {"message": "not found"}}')

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, b'{"error": {"message": "not found"}}')
            return
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            self._send(400, b'{"error": {"message": "body is not JSON"}}')
            return
        status, payload, headers = self.state._decide(body, self.headers.get("Authorization", ""))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            self._send(status, payload, headers)


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAI]:
    """A fresh loopback OpenAI-compatible server for one test (see the module docstring)."""
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="serve a fake OpenAI-compatible API on loopback")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--words", type=int, default=0, help="pad every answer to this many words")
    args = ap.parse_args(argv)
    server = FakeOpenAI()
    server.latency = args.latency
    if args.words:
        pad = " ".join(["answered"] * args.words)
        server.responder = lambda body: f"{default_text(body)} {pad}"
    server.start(port=args.port)
    print(server.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
