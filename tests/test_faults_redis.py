"""Redis faults at intake: down means 503 fast and recovery without a restart; a restart loses nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bot.embedded import RedisServer
from tests.harness import HEAD_CHANGES, Bot, PullRequestScenario, bot_env

REPO = "acme/infra"
SECRET = "faults-secret"


@pytest.fixture
def own_redis(tmp_path: Path):
    """A Redis only this test uses, with append-only persistence, that the test may stop and start."""
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    yield server
    server.stop()


@pytest.fixture
def bot(tmp_path, own_redis, github):
    instance = Bot(bot_env(tmp_path, own_redis.url, 'repos: ["acme/*"]\n', GITHUB_WEBHOOK_SECRET=SECRET,
                           GITHUB_TOKEN="ghp_faultsTOKEN0123456789", GITHUB_API_URL=github.url))
    yield instance
    instance.stop()


def test_redis_down_answers_503_fast_and_recovers_without_a_restart(bot, own_redis, remote, github):
    pr = PullRequestScenario(remote, github, bot, REPO, SECRET)
    head = pr.push_head(HEAD_CHANGES)
    own_redis.stop()

    started = time.monotonic()
    down = pr.deliver(pr.event("opened", head), delivery="while-down")
    assert down.status == 503 and "redeliver" in down.body["error"]
    assert time.monotonic() - started < 1.0
    assert bot.get("/readyz").status == 503
    assert bot.get("/healthz").status == 200
    for path in ("/api/state", "/api/environments", "/api/deliveries", "/api/queues"):
        answer = bot.get(path)
        assert (answer.status, answer.body) == (503, {"error": "redis unreachable"}), path

    own_redis.start()
    assert bot.get("/readyz").status == 200
    redelivered = pr.deliver(pr.event("opened", head), delivery="while-down")
    assert redelivered.status == 202  # the failed attempt was not remembered as seen
    bot.work()
    assert len(pr.comments()) == 1


def test_deliveries_accepted_before_a_restart_are_processed_after_it(bot, own_redis, tmp_path, github):
    from tests.conftest import GitRemote

    prs = []
    for number in range(1, 6):
        (tmp_path / f"repo{number}").mkdir()
        remote = GitRemote(tmp_path / f"repo{number}")
        pr = PullRequestScenario(remote, github, bot, f"acme/infra{number}", SECRET, number=number)
        head = pr.push_head(HEAD_CHANGES)
        assert pr.deliver(pr.event("opened", head), delivery=f"before-restart-{number}").status == 202
        prs.append(pr)

    own_redis.stop()  # a clean shutdown writes the append-only file
    own_redis.start()

    bot.work()
    assert [len(pr.comments()) for pr in prs] == [1, 1, 1, 1, 1]
    assert bot.failed_jobs() == []
