"""A loopback HTTP server speaking the OpenAI chat-completions protocol with scripted replies.

Tests point the real ``openai`` client at ``server.base_url`` and script what it answers:

    with FakeOpenAI(models=["m"]) as server:
        server.reply("```python\\ndef execute_command(image):\\n    return 1\\n```")
        server.reply(Reply(status=429, headers={"retry-after-ms": "10"}), "...")
        ...
        server.requests        # every HTTP request (method, path, lower-case headers, body)
        server.chat_requests   # the JSON bodies of POST .../chat/completions

Each chat request takes the next scripted item: a string (the assistant's content), a
:class:`Reply` (status, headers, error body, delay before answering) or a callable of the
request body returning either. Requests naming a model outside ``models`` get the 404 an
OpenAI server sends for an unknown model, without using the script. When the script is
empty the server answers 500 with ``x-should-retry: false``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer: ``content`` (200) or an error ``status`` with ``message``."""

    content: str | None = None
    status: int = 200
    message: str = "scripted error"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    finish_reason: str = "stop"
    raw: bytes | None = None  # exact body to send instead of JSON


Script = str | Reply | Callable[[dict[str, Any]], "str | Reply"]


class FakeOpenAI:
    """The server (start with ``with`` or :meth:`start`; stop with :meth:`stop`)."""

    def __init__(self, models: Iterable[str] = ("m",)) -> None:
        self.models = list(models)
        self.script: deque[Script] = deque()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control
    def reply(self, *items: Script) -> FakeOpenAI:
        """Append scripted answers, in order."""
        self.script.extend(items)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r["body"] for r in self.requests if r["path"].endswith("/chat/completions")]

    def start(self) -> FakeOpenAI:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ serving
    def _record(self, method: str, path: str, headers: Any, body: Any) -> None:
        headers = {str(k).lower(): v for k, v in dict(headers).items()}
        with self._lock:
            self.requests.append({"method": method, "path": path, "headers": headers, "body": body})

    def _next(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            item = self.script.popleft() if self.script else None
        if item is None:
            return Reply(status=500, message="the fake server has no scripted reply left",
                         headers={"x-should-retry": "false"})
        if callable(item):
            item = item(body)
        return Reply(content=item) if isinstance(item, str) else item


def completion(content: str, model: str, finish_reason: str = "stop", n: int = 0) -> dict[str, Any]:
    """An OpenAI chat.completion object."""
    return {
        "id": f"chatcmpl-fake-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": finish_reason,
        }],
        "usage": {"prompt_tokens": 100, "completion_tokens": max(1, len(content) // 4),
                  "total_tokens": 100 + max(1, len(content) // 4)},
    }


def error_body(message: str, status: int) -> dict[str, Any]:
    """An OpenAI error object."""
    kind = {401: "invalid_request_error", 404: "invalid_request_error",
            429: "rate_limit_exceeded"}.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAI

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the log
        return

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None,
              raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self.fake._record("GET", self.path, self.headers, None)
        if self.path.rstrip("/").endswith("/models"):
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                    for m in self.fake.models]
            self._send(200, {"object": "list", "data": data})
        else:
            self._send(404, error_body(f"no route {self.path}", 404))

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        length = int(self.headers.get("Content-Length") or 0)
        text = self.rfile.read(length).decode("utf-8") if length else ""
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            body = {"_unparsed": text}
        self.fake._record("POST", self.path, self.headers, body)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, error_body(f"no route {self.path}", 404))
            return
        model = str(body.get("model"))
        if self.fake.models and model not in self.fake.models:
            self._send(404, error_body(f"The model `{model}` does not exist.", 404))
            return
        reply = self.fake._next(body)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.status != 200:
            self._send(reply.status, error_body(reply.message, reply.status), reply.headers,
                       reply.raw)
            return
        n = len(self.fake.requests)
        self._send(200, completion(reply.content or "", model, reply.finish_reason, n),
                   reply.headers, reply.raw)
