"""A worker told to stop (SIGTERM) in the middle of a job finishes that job first, then exits."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.fakes.github_api import FakeGitHub
from tests.harness import HEAD_CHANGES, ROOT, Bot, PullRequestScenario, bot_env

REPO, SECRET = "acme/infra", "shutdown-secret"


@pytest.fixture
def bot(tmp_path, redis_server, redis):
    with FakeGitHub(bot_login="gitops-bot") as github:
        instance = Bot(bot_env(tmp_path, redis_server.url, 'repos: ["acme/*"]\nreconcile: {interval: 0}\n',
                               GITHUB_WEBHOOK_SECRET=SECRET, GITHUB_TOKEN="ghp_shutdownTOKEN01234567",
                               GITHUB_API_URL=github.url))
        instance.github = github
        yield instance
        instance.stop()


def test_sigterm_lets_the_running_job_finish(bot, remote):
    pr = PullRequestScenario(remote, bot.github, bot, REPO, SECRET)
    gate = bot.github.hold("GET", r"/issues/\d+/comments$")  # the job pauses here, mid-diff
    assert pr.deliver(pr.event("opened", pr.push_head(HEAD_CHANGES))).status == 202
    worker = subprocess.Popen([sys.executable, "-m", "bot", "worker"], cwd=ROOT, env=bot.env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert gate.arrived.wait(60), "the job never reached the forge"
        worker.send_signal(signal.SIGTERM)
        gate.open()
        output, _ = worker.communicate(timeout=60)
    finally:
        gate.open()
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, output[-3000:]
    assert "warm shut down" in output
    (comment,) = pr.comments()
    assert "**1 added, 2 changed, 0 removed**" in comment["body"]
    assert bot.failed_jobs() == [] and bot.queued() == 0
