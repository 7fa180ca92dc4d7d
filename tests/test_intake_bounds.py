"""Intake's bounds over real HTTP: a body over 25 MiB is refused as too large however it is sent."""

from __future__ import annotations

import http.client
import threading
from typing import Iterator

import pytest
from werkzeug.serving import make_server

from bot.config import ServerConfig
from bot.settings import Settings
from bot.web import MAX_BODY, create_app


@pytest.fixture
def port(redis) -> Iterator[int]:
    app = create_app(Settings(redis_url="redis://unused", github_webhook_secret="s"), ServerConfig(repos=("*",)),
                     redis)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()


def chunks(size: int) -> Iterator[bytes]:
    step = 1024 * 1024
    for start in range(0, size, step):
        yield b"x" * min(step, size - start)


@pytest.mark.parametrize("size, status", [(MAX_BODY, 401), (MAX_BODY + 1, 413), (MAX_BODY + 5_000_000, 413)])
def test_a_chunked_body_over_the_limit_is_413_not_a_bad_signature(port, size, status):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/webhooks/github", body=chunks(size), encode_chunked=True,
                       headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=00"})
    answer = connection.getresponse()
    assert answer.status == status, answer.read()[:200]
    connection.close()
