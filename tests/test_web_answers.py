"""Deliveries skip Flask's request machinery, and get Flask's answers to the byte: each sequence of
requests is answered the same by the app as served and by Flask's own dispatch of the same app."""

from __future__ import annotations

import io
import json
import re
from urllib.parse import urlencode

import pytest
import redis as redis_lib
from flask import Flask
from werkzeug.test import EnvironBuilder, run_wsgi_app

from bot.config import ServerConfig
from bot.forges.github import signature
from bot.settings import Settings
from bot.web import MAX_BODY, create_app
from tests.conftest import payload

SECRET = "s"
PULL = json.dumps(payload("github/pull_request.opened")).encode()
PING = json.dumps(payload("github/ping")).encode()
FORM = urlencode({"payload": PULL.decode()}).encode()


def github(body: bytes, event: str | None = "pull_request", delivery: str = "d-1", signed: bytes | None = None,
           **extra: str) -> dict:
    headers = {"X-Hub-Signature-256": signature(SECRET, body if signed is None else signed),
               "X-GitHub-Delivery": delivery, "Content-Type": "application/json", **extra}
    if event:
        headers["X-GitHub-Event"] = event
    return {"path": "/webhooks/github", "method": "POST", "data": body, "headers": headers}


def chunked(size: int) -> dict:
    return {"path": "/webhooks/github", "method": "POST", "input_stream": io.BytesIO(b"x" * size),
            "headers": {"X-GitHub-Event": "push"}, "environ_overrides": {"wsgi.input_terminated": True}}


SEQUENCES = {
    "queued, then a duplicate": [github(PULL), github(PULL)],
    "a form delivery": [github(FORM, **{"Content-Type": "application/x-www-form-urlencoded"})],
    "ignored": [github(PING, event="ping")],
    "wrong signature": [github(PULL, signed=b"other")],
    "no event header": [github(PULL, event=None)],
    "broken JSON": [github(b"{")],
    "unknown forge": [{**github(PULL), "path": "/webhooks/bitbucket"}],
    "no forge": [{**github(PULL), "path": "/webhooks/"}],
    "a length over the limit": [{**github(b"{}"), "headers": {"Content-Length": str(MAX_BODY + 2),
                                                              "X-GitHub-Event": "push"}}],
    "a chunked body at the limit": [chunked(MAX_BODY)],
    "a chunked body over the limit": [chunked(MAX_BODY + 1)],
    "not POST": [{**github(PULL), "method": "PUT"}, {**github(PULL), "method": "GET"}],
}


def answers(wsgi, requests: list[dict]) -> list[tuple[str, list, bytes]]:
    seen = []
    for request in requests:
        if "input_stream" in request:
            request["input_stream"].seek(0)
        body_iter, status, headers = run_wsgi_app(wsgi, EnvironBuilder(**request).get_environ())
        body = re.sub(rb'"queued":\["[0-9a-f-]+"\]', b'"queued":["<job>"]', b"".join(body_iter))
        seen.append((status, sorted(headers.items()), body))
    return seen


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_deliveries_get_flasks_answers(redis, name):
    app = create_app(Settings(redis_url="redis://unused", github_webhook_secret=SECRET), ServerConfig(repos=("*",)),
                     redis)
    served = answers(app.wsgi_app, SEQUENCES[name])
    redis.flushall()
    assert served == answers(lambda environ, start: Flask.wsgi_app(app, environ, start), SEQUENCES[name])
    assert all(status.split()[0] != "500" for status, _, _ in served)


def test_an_unreachable_queue_gets_flasks_503(tmp_path):
    gone = redis_lib.Redis(unix_socket_path=str(tmp_path / "no-redis.sock"), socket_timeout=0.2)
    app = create_app(Settings(redis_url="redis://unused", github_webhook_secret=SECRET), ServerConfig(repos=("*",)),
                     gone)
    served = answers(app.wsgi_app, [github(PULL)])
    assert served == answers(lambda environ, start: Flask.wsgi_app(app, environ, start), [github(PULL)])
    assert served[0][0] == "503 SERVICE UNAVAILABLE"


def test_a_connection_the_server_closed_between_deliveries_costs_none_of_them(redis):
    """The intake connection each thread keeps is checked before each delivery: one Redis closed
    (restarted, or a client timeout) is connected again, and the delivery queued, not refused 503."""
    app = create_app(Settings(redis_url="redis://unused", github_webhook_secret=SECRET), ServerConfig(repos=("*",)),
                     redis)
    for delivery in ("before", "after"):
        status, _, body = answers(app.wsgi_app, [github(PULL, delivery=delivery)])[0]
        assert status == "202 ACCEPTED" and b'"queued"' in body
        redis.client_kill_filter(_type="normal", skipme=True)
