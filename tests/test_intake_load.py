"""`gitops-bot serve` over real sockets: slow clients hold no worker and are cut off at the
request deadline, while signed deliveries are answered at once; kept-alive, pipelined, chunked and
oversized requests get the answers the app gives."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from bot.embedded import free_port
from bot.forges.github import signature
from bot.webserver import HEADER_LIMIT, REQUEST_DEADLINE, IntakeWorker
from tests.conftest import payload
from tests.harness import ROOT, bot_env

SECRET = "load-secret"
DEADLINE = 2.0  # the request deadline these servers run with; the default is REQUEST_DEADLINE
BODY = json.dumps(payload("github/pull_request.opened"), indent=2).encode()


def serve(tmp: Path, redis_url: str, *args: str, command: tuple[str, ...] = ("bot", "serve"),
          started: list[subprocess.Popen] | None = None) -> Iterator[int]:
    port = free_port()
    env = bot_env(tmp, redis_url, 'repos: ["*"]\n', GITHUB_WEBHOOK_SECRET=SECRET)
    log = open(tmp / "serve.log", "w")
    address = ["--host", "127.0.0.1", "--port", str(port)] if command[0] == "bot" else ["--bind", f"127.0.0.1:{port}"]
    process = subprocess.Popen([sys.executable, "-m", *command, *address, *args], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    if started is not None:
        started.append(process)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, (tmp / "serve.log").read_text()
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(30)
        log.close()


@pytest.fixture
def port(tmp_path: Path, redis_server, redis) -> Iterator[int]:
    """One worker with one thread: any client that held it would stop intake."""
    yield from serve(tmp_path, redis_server.url, "--workers", "1", "--threads", "1",
                     "--request-timeout", str(DEADLINE))


def headers(delivery: str, body: bytes = BODY) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-GitHub-Event": "pull_request", "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": signature(SECRET, body)}


def deliver(port: int, delivery: str) -> tuple[int, dict, float]:
    start = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/webhooks/github", body=BODY, headers=headers(delivery))
    answer = connection.getresponse()
    status, body = answer.status, json.loads(answer.read())
    connection.close()
    return status, body, time.monotonic() - start


class Dribbler(threading.Thread):
    """A client that sends `head`, then the rest of `request` one byte every 0.1 s, and records
    what the server answers and when the server closed the connection."""

    def __init__(self, port: int, request: bytes, head: int):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.request, self.head = request, head
        self.answer, self.closed_after = b"", None
        self.started = time.monotonic()

    def run(self) -> None:
        self.sock.sendall(self.request[:self.head])
        self.sock.settimeout(0.1)
        for byte in self.request[self.head:]:
            try:
                self.sock.send(bytes([byte]))
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            self.answer += data
            if not data:
                break
        self.closed_after = time.monotonic() - self.started
        self.sock.close()


def raw_request(body: bytes = BODY, delivery: str = "dribbled") -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers(delivery, body).items())
    return f"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


def test_dribbling_clients_hold_no_worker_and_are_cut_off_at_the_deadline(port):
    request = raw_request()
    body_at = request.index(b"\r\n\r\n") + 4
    dribblers = [Dribbler(port, request, head) for head in (0, 10, 40, body_at, body_at + 1000, body_at + 20000)]
    for dribbler in dribblers:
        dribbler.start()
    time.sleep(0.5)  # every dribbler is mid-request

    for n in range(5):
        status, body, took = deliver(port, f"fast-{n}")
        assert status == 202 and len(body["queued"]) == 1
        assert took < 1.0, f"a delivery took {took:.2f} s beside slow clients"

    for dribbler in dribblers:
        dribbler.join(DEADLINE + 5)
        assert dribbler.closed_after is not None, "a slow client is still connected"
        assert DEADLINE - 0.1 <= dribbler.closed_after < DEADLINE + 1.5
        status_line, _, rest = dribbler.answer.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 408 Request Timeout"
        assert json.loads(rest.partition(b"\r\n\r\n")[2]) == {
            "error": f"the request did not arrive within {DEADLINE:g} s"}


def test_a_silent_connection_is_closed_at_the_deadline_and_the_default_is_stated(port):
    assert REQUEST_DEADLINE == 10.0
    silent = socket.create_connection(("127.0.0.1", port))
    silent.settimeout(DEADLINE + 5)
    start = time.monotonic()
    answer = b""
    while chunk := silent.recv(65536):
        answer += chunk
    assert DEADLINE - 0.1 <= time.monotonic() - start < DEADLINE + 1.5
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_every_answer_closes_its_connection_and_one_request_is_served_per_connection(port):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for delivery, status in (("once", 202), ("once", 200)):
        connection.request("POST", "/webhooks/github", body=BODY, headers=headers(delivery))
        answer = connection.getresponse()
        assert (answer.status, answer.getheader("Connection")) == (status, "close")
        answer.read()
        connection.close()

    pipelined = socket.create_connection(("127.0.0.1", port), timeout=10)
    pipelined.sendall(raw_request(delivery="piped-1") + raw_request(delivery="piped-2"))
    replies = b""
    while chunk := pipelined.recv(65536):
        replies += chunk
    assert re.findall(rb"HTTP/1.1 (\d+) ", replies) == [b"202"]
    pipelined.close()


def test_chunked_and_expect_continue_deliveries_are_read_whole(port):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    chunks = (BODY[i:i + 5000] for i in range(0, len(BODY), 5000))
    connection.request("POST", "/webhooks/github", body=chunks, encode_chunked=True, headers=headers("chunked"))
    answer = connection.getresponse()
    assert answer.status == 202, answer.read()
    connection.close()

    waiting = socket.create_connection(("127.0.0.1", port), timeout=10)
    request = raw_request(delivery="expects").replace(b"Host: x\r\n", b"Host: x\r\nExpect: 100-continue\r\n")
    body_at = request.index(b"\r\n\r\n") + 4
    waiting.sendall(request[:body_at])
    assert waiting.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
    waiting.sendall(request[body_at:])
    replies = b""
    while b"queued" not in replies:
        replies += waiting.recv(65536)
    assert b" 202 " in replies.partition(b"\r\n")[0]
    waiting.close()


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_limit_is_413_and_headers_over_theirs_431(port, chunked):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    size = 25 * 1024 * 1024 + 1000
    body = (b"x" * 1024 * 1024 for _ in range(size // (1024 * 1024) + 1)) if chunked else b"x" * size
    connection.request("POST", "/webhooks/github", body=body, encode_chunked=chunked,
                       headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=00"})
    answer = connection.getresponse()
    assert (answer.status, json.loads(answer.read())) == (413, {"error": "body is over 25 MiB"})
    connection.close()

    crowded = socket.create_connection(("127.0.0.1", port), timeout=10)
    crowded.sendall(b"POST /webhooks/github HTTP/1.1\r\n" + b"X-Filler: " + b"y" * HEADER_LIMIT + b"\r\n")
    reply = b""
    while chunk := crowded.recv(65536):
        reply += chunk
    assert reply.startswith(b"HTTP/1.1 431 ") and b'"error":"request headers are over 64 KiB"' in reply


def test_serve_with_its_defaults_answers_a_delivery(tmp_path, redis_server, redis):
    for port in serve(tmp_path, redis_server.url):
        status, body, _ = deliver(port, "defaults")
        assert status == 202 and len(body["queued"]) == 1


class TightWorker(IntakeWorker):
    """The intake worker with room for little: 64 KiB per request, 256 KiB beyond that per worker."""

    small_request, large_requests = 64 * 1024, 256 * 1024


def test_large_arriving_requests_share_a_budget_past_which_they_are_refused(tmp_path, redis_server, redis):
    for port in serve(tmp_path, redis_server.url, "--workers", "1", "--worker-class", f"{__name__}.TightWorker",
                      "bot.web:create_app()", command=("gunicorn",)):
        body = b"x" * (250 * 1024)
        request = (f"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                   "X-GitHub-Event: push\r\nX-Hub-Signature-256: sha256=00\r\n\r\n").encode() + body
        first, second = (socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2))
        first.sendall(request[:200 * 1024])  # holds 136 KiB of the 256
        time.sleep(0.5)
        second.sendall(request[:200 * 1024])  # would hold 136 more
        refused = b""
        while chunk := second.recv(65536):
            refused += chunk
        assert refused.startswith(b"HTTP/1.1 503 ")
        assert refused.endswith(b'{"error":"the server holds too many large requests; redeliver later"}')

        first.sendall(request[200 * 1024:])
        answer = http.client.HTTPResponse(first)
        answer.begin()
        assert (answer.status, json.loads(answer.read())) == (
            401, {"error": "X-Hub-Signature-256 does not match the body"})


def test_connections_spread_evenly_over_the_workers(tmp_path, redis_server, redis):
    if not shutil.which("ss"):
        pytest.skip("needs ss (iproute2) to see which worker holds which connection")
    for port in serve(tmp_path, redis_server.url, "--workers", "3"):
        # Requests still arriving would otherwise all wait in whichever worker woke first, and be
        # served one after another there when they arrive.
        requests = [raw_request(delivery=f"spread-{n}") for n in range(30)]
        started = time.monotonic()
        held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in requests]
        for sock, request in zip(held, requests):
            sock.sendall(request[:100])
        deadline = time.monotonic() + 5
        while True:
            out = subprocess.run(["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
                                 capture_output=True, text=True, check=True).stdout
            per_worker = Counter(line.split("pid=")[1].split(",")[0] for line in out.splitlines() if "pid=" in line)
            if sum(per_worker.values()) == 30 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert sum(per_worker.values()) == 30 and len(per_worker) == 3, per_worker
        assert max(per_worker.values()) - min(per_worker.values()) <= 2, per_worker
        assert time.monotonic() - started < 1.0, "a worker over its share held up the connections"
        for sock, request in zip(held, requests):
            sock.sendall(request[100:])
        for sock in held:
            assert sock.recv(65536).startswith(b"HTTP/1.1 202 ")
            sock.close()


def test_stopping_answers_a_delivery_in_flight_and_closes_silent_connections(tmp_path, redis_server, redis):
    started: list[subprocess.Popen] = []
    for port in serve(tmp_path, redis_server.url, "--workers", "1", started=started):
        silent = socket.create_connection(("127.0.0.1", port))
        request = raw_request(delivery="in-flight")
        in_flight = socket.create_connection(("127.0.0.1", port), timeout=10)
        in_flight.sendall(request[:500])
        time.sleep(0.3)
        stop = time.monotonic()
        started[0].send_signal(signal.SIGTERM)
        time.sleep(0.3)
        in_flight.sendall(request[500:])
        answer = http.client.HTTPResponse(in_flight)
        answer.begin()
        assert answer.status == 202 and answer.getheader("Connection") == "close"
        assert started[0].wait(10) == 0 and time.monotonic() - stop < 5
        assert silent.recv(65536) == b""
