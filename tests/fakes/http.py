"""A small threaded HTTP server that routes by regex, records every request and injects faults."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    """One request as it arrived on the wire."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    """What a route handler answers: status, JSON-able body, extra headers."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str = "application/json"


@dataclass
class Fault:
    """Answer the next `times` requests matching `method` and `pattern` with this reply instead."""

    method: str
    pattern: re.Pattern[str]
    reply: Reply | None  # None drops the connection without an answer
    times: int


@dataclass
class Gate:
    """Holds one matching request before it is handled, until the test opens it.

    `arrived` is set while the request waits, so a test can act at that exact point of a job
    (kill its worker, deliver a newer webhook) instead of guessing with sleeps.
    """

    method: str
    pattern: re.Pattern[str]
    skip: int
    """Matching requests to let through before the one held."""
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def open(self) -> None:
        self.released.set()


GATE_LIMIT = 120.0
"""Seconds a held request waits at most, so a test that forgets to open its gate still ends."""

Handler = Callable[..., Reply]


class RecordingServer:
    """Base class: subclasses register routes with `self.route(method, regex, handler)`.

    A handler is called with the match's named groups as keyword arguments and the
    `Recorded` request as `request`. Everything runs under one lock, so state is consistent.
    """

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.lock = threading.RLock()
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._faults: list[Fault] = []
        self._holds: list[Gate] = []
        self._httpd: ThreadingHTTPServer | None = None

    # -- routing ---------------------------------------------------------------------------
    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, re.compile(pattern + r"/?$"), handler))

    def fail(self, method: str, pattern: str, reply: Reply | None, times: int = 1) -> None:
        """Make the next `times` matching requests fail (reply=None drops the connection)."""
        with self.lock:
            self._faults.append(Fault(method, re.compile(pattern), reply, times))

    def clear_faults(self) -> None:
        """The server recovers: faults not yet used up are forgotten."""
        with self.lock:
            self._faults.clear()

    def hold(self, method: str, pattern: str, skip: int = 0) -> Gate:
        """Hold the next matching request (after `skip` others) until `Gate.open()`."""
        gate = Gate(method, re.compile(pattern), skip)
        with self.lock:
            self._holds.append(gate)
        return gate

    def _wait_at_gate(self, request: Recorded) -> None:
        with self.lock:
            gate = next((g for g in self._holds if g.method in (request.method, "*")
                         and g.pattern.search(request.path)), None)
            if gate is None:
                return
            if gate.skip:
                gate.skip -= 1
                return
            self._holds.remove(gate)
        gate.arrived.set()
        gate.released.wait(GATE_LIMIT)  # outside the lock: everything else goes on meanwhile

    def _fault_for(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.times > 0 and fault.method in (method, "*") and fault.pattern.search(path):
                fault.times -= 1
                return fault
        return None

    def dispatch(self, request: Recorded) -> Reply | None:
        with self.lock:
            self.requests.append(request)
            fault = self._fault_for(request.method, request.path)
            if fault is not None:
                return fault.reply
            for method, pattern, handler in self._routes:
                if method != request.method:
                    continue
                match = pattern.match(request.path)
                if match:
                    return handler(request=request, **match.groupdict())
        return Reply(404, {"message": "Not Found"})

    # -- queries for tests -----------------------------------------------------------------
    def calls(self, method: str | None = None, pattern: str = "") -> list[Recorded]:
        regex = re.compile(pattern)
        with self.lock:
            return [r for r in self.requests
                    if (method is None or r.method == method) and regex.search(r.path)]

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "RecordingServer":
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # otherwise small answers wait ~40 ms for a delayed ACK

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _handle(self) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Recorded(self.command, split.path, parse_qs(split.query),
                                   {k.lower(): v for k, v in self.headers.items()}, body)
                server._wait_at_gate(request)
                reply = server.dispatch(request)
                if reply is None:
                    self.close_connection = True
                    self.connection.close()
                    return
                payload = reply.raw if reply.raw is not None else (
                    b"" if reply.body is None and reply.status == 204 else json.dumps(reply.body).encode())
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(payload)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "RecordingServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
