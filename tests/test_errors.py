"""Temporary and permanent failures, through the real app, worker and Redis: a missing setting fails
a job once and says why; a busy comment is tried again later, never written by two jobs at once."""

from __future__ import annotations

import pytest

from bot import jobs, runtime
from bot.config import ServerConfig
from bot.errors import TemporaryError
from bot.queue import Store
from bot.settings import Settings
from tests.harness import HEAD_CHANGES, Bot, PullRequestScenario, bot_env


def test_a_missing_token_fails_the_job_once_and_says_why(tmp_path, redis_server, redis, remote, github):
    bot = Bot(bot_env(tmp_path, redis_server.url, "repos: ['acme/*']\n", GITHUB_WEBHOOK_SECRET="s",
                      GITHUB_API_URL=github.url))
    try:
        pr = PullRequestScenario(remote, github, bot, "acme/infra", "s")
        assert pr.deliver(pr.event("opened", pr.push_head(HEAD_CHANGES))).status == 202
        output = bot.work()
        (failed,) = bot.failed_jobs()
        assert bot.release_retries() == {}  # nothing scheduled to try again
        assert output.count("permanent failure; the job is not retried") == 1
        error = bot.job(failed).latest_result().exc_string.strip().splitlines()[-1]
        assert error == ("bot.errors.PermanentError: GitHub needs GITHUB_TOKEN, or GITHUB_APP_ID and "
                         "GITHUB_APP_PRIVATE_KEY")
    finally:
        bot.stop()


def test_a_comment_another_job_holds_too_long_is_tried_again_later(tmp_path, redis, monkeypatch):
    rt = runtime.Runtime(Settings(data_dir=tmp_path), ServerConfig(), Store(redis, "errors"))
    monkeypatch.setattr(jobs, "POST_LOCK_SECONDS", 0.3)
    redis.set(f"{rt.store.prefix}:github:acme/infra#7:comment", "another-job")
    with pytest.raises(TemporaryError, match="another job held the comment"):
        with jobs._comment_lock(rt, "github:acme/infra#7"):
            raise AssertionError("the comment was written while another job held it")
