"""Where an arriving request ends: a table of tiny requests, fed whole and byte by byte; how
workers share connections; a worker's settled config."""

from __future__ import annotations

import copy

import pytest
from gunicorn.config import Config

from bot.webserver import HEADER_LIMIT, Arrival, Balance, SettledConfig, _webhook_forge

LIMIT = 100  # the most body bytes the application reads, in this table: it refuses a body that reaches it


def arrival(request: bytes, pieces: int | None = None) -> Arrival:
    """An arrival fed `request` whole, or one byte at a time (`pieces=1`)."""
    arriving = Arrival(deadline=0.0, read_limit=LIMIT)
    step = pieces or len(request) or 1
    for start in range(0, len(request), step):
        arriving.feed(request[start:start + step])
    return arriving


def head(*fields: str, line: str = "POST /webhooks/github HTTP/1.1") -> bytes:
    return ("\r\n".join([line, "Host: x", *fields]) + "\r\n\r\n").encode()


CHUNKED = "Transfer-Encoding: chunked"

# (request, ready, complete): complete means the request ended inside what arrived; ready but not
# complete means the application (or gunicorn's parser) can answer it without reading further.
TABLE = [
    (head(line="GET /healthz HTTP/1.1"), True, True),
    (head("Content-Length: 5") + b"hello", True, True),
    (head("content-length:5") + b"hello", True, True),
    (head("Content-Length: 5") + b"hell", False, False),
    (head("Content-Length: 5")[:-1], False, False),
    (head("Content-Length: 0"), True, True),
    (head(f"Content-Length: {LIMIT}"), False, False),
    (head(f"Content-Length: {LIMIT + 1}"), True, False),
    (head("Content-Length: 5", "Content-Length: 6") + b"hello", True, False),
    (head("Content-Length: 5", "Content-Length: 5") + b"hello", True, True),
    (head("Content-Length: -5"), True, False),
    (head("Content-Length: 5", CHUNKED) + b"hello", True, False),
    (head("Transfer-Encoding: gzip"), True, False),
    (head("Transfer-Encoding: gzip, chunked") + b"0\r\n\r\n", True, True),
    (head(CHUNKED) + b"5\r\nhello\r\n0\r\n\r\n", True, True),
    (head(CHUNKED) + b"5;name=value\r\nhello\r\n0\r\n\r\n", True, True),
    (head(CHUNKED) + b"5\r\nhello\r\n0\r\nTrailer: x\r\n\r\n", True, True),
    (head(CHUNKED) + b"5\r\nhello\r\n0\r\nTrailer: x\r\n", False, False),
    (head(CHUNKED) + b"5\r\nhello\r\n0\r\n", False, False),
    (head(CHUNKED) + b"5\r\nhel", False, False),
    (head(CHUNKED) + b"zz\r\nhello\r\n0\r\n\r\n", True, False),
    (head(CHUNKED) + b"5 x\r\nhello\r\n0\r\n\r\n", True, False),
    (head(CHUNKED) + b"63\r\n" + b"x" * (LIMIT - 1) + b"\r\n", False, False),
    (head(CHUNKED) + b"63\r\n" + b"x" * (LIMIT - 1) + b"\r\n1\r\nx", True, False),
    (head(CHUNKED) + b"ffffff\r\n" + b"x" * (LIMIT - 1), False, False),
    (head(CHUNKED) + b"ffffff\r\n" + b"x" * LIMIT, True, False),
]


@pytest.mark.parametrize("pieces", [None, 1])
@pytest.mark.parametrize("request_, ready, complete", TABLE)
def test_where_a_request_ends(request_, ready, complete, pieces):
    arriving = arrival(request_, pieces)
    assert (arriving.ready, arriving.complete) == (ready, complete)
    assert arriving.take() == request_ and arriving.data == b""


def test_headers_past_their_limit_are_refused_before_they_end():
    assert not arrival(head("X: " + "y" * (HEADER_LIMIT - 100))[:-4]).headers_too_large
    assert arrival(b"POST / HTTP/1.1\r\nX: " + b"y" * HEADER_LIMIT).headers_too_large


@pytest.mark.parametrize("request_, due", [
    (head("Content-Length: 5", "Expect: 100-continue"), True),
    (head("Content-Length: 5", "expect: 100-Continue"), True),
    (head("Content-Length: 5", "Expect: 100-continue") + b"he", False),
    (head("Content-Length: 5", "Expect: 100-continue", line="POST / HTTP/1.0"), False),
    (head("Content-Length: 0", "Expect: 100-continue"), False),
    (head("Content-Length: 5"), False),
])
def test_100_continue_is_due_only_while_an_http_1_1_client_waits_for_it(request_, due):
    assert arrival(request_).continue_due is due


def test_a_worker_takes_connections_only_up_to_the_mean_of_the_live_workers():
    shared = Balance()
    workers = [copy.copy(shared) for _ in range(3)]  # one view of the shared memory per worker
    for age, worker in enumerate(workers, 1):
        worker.claim(age)
    for worker, held in zip(workers, (6, 2, 1)):
        worker.report(held)
    assert [worker.my_turn(held) for worker, held in zip(workers, (6, 2, 1))] == [False, True, True]
    assert workers[1].my_turn(3) and not workers[1].my_turn(4)

    shared._slots[3 * 1 + 2] -= Balance.STALE + 1  # the first worker has not written for a while: gone
    assert workers[1].my_turn(2) and not workers[1].my_turn(3)
    assert Balance().my_turn(1000)  # alone, nothing to balance against
    assert workers[0].my_turn(0)  # holding none, a worker always may


def test_a_settled_config_answers_as_gunicorns_own():
    config = Config()
    for name, value in {"workers": 3, "threads": 2, "forwarded_allow_ips": "10.0.0.1", "keyfile": "k.pem"}.items():
        config.set(name, value)
    settled = SettledConfig(config)
    properties = [name for name, value in vars(Config).items() if isinstance(value, property)]
    assert {"sendfile", "worker_class", "is_ssl"} <= set(properties)  # some named as settings
    for name in [*config.settings, *properties]:
        assert getattr(settled, name) == getattr(config, name), name
    assert settled.forwarded_allow_networks() == config.forwarded_allow_networks()
    with pytest.raises(AttributeError):
        settled.no_such_setting


REFUSED_HERE = [  # what arrived of a request the server answers itself (408, 431, 503) -> the forge it counts for
    (b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\n", "github"),
    (b"POST /webhooks/gitlab?x=1 HTTP/1.1\r\n", "gitlab"),
    (b"POST /webhooks/bitbucket HTTP/1.1\r\n", "unknown"),
    (b"POST /metrics HTTP/1.1\r\n", "unknown"),
    (b"GET /webhooks/github HTTP/1.1\r\n", None),
    (b"POST /webhooks/git", None),
    (b"", None),
]


@pytest.mark.parametrize("arrived, forge", REFUSED_HERE)
def test_a_refusal_by_the_server_is_counted_for_the_forge_its_request_line_names(arrived, forge):
    assert _webhook_forge(arrived) == forge
