"""`gitops-bot up` on a fresh data dir, with no REDIS_URL: it starts, works end to end, and stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from bot.embedded import free_port
from tests.harness import HEAD_CHANGES, ROOT, Answer, Bot, PullRequestScenario

REPO, SECRET = "acme/infra", "up-secret"


class Running(Bot):
    """A bot someone else started at `url`: the same client calls, no server of the test's own."""

    def __init__(self, url: str):  # noqa: D107 - deliberately not the dataclass's constructor
        self.url = url


def wait_for(check, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_up_starts_serves_a_webhook_end_to_end_and_stops(tmp_path: Path, remote, github):
    port = free_port()
    (tmp_path / "bot.yaml").write_text('repos: ["acme/*"]\ngit: {allow_local_urls: true}\n')  # a file:// remote
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    env.update(GITOPS_BOT_CONFIG=str(tmp_path / "bot.yaml"), GITOPS_BOT_DATA_DIR=str(tmp_path / "data"),
               GITHUB_WEBHOOK_SECRET=SECRET, GITHUB_TOKEN="ghp_upTOKEN0123456789abcd", GITHUB_API_URL=github.url)
    up = subprocess.Popen([sys.executable, "-m", "bot", "up", "--port", str(port)], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        bot = Running(f"http://127.0.0.1:{port}")
        wait_for(lambda: bot.get("/healthz").status == 200, what="/healthz")
        assert bot.get("/readyz") == Answer(200, {"status": "ready"})

        pr = PullRequestScenario(remote, github, bot, REPO, SECRET)
        assert pr.deliver(pr.event("opened", pr.push_head(HEAD_CHANGES))).status == 202
        (comment,) = wait_for(pr.comments, what="the diff comment")
        assert "**1 added, 2 changed, 0 removed**" in comment["body"]
    finally:
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=60)
    assert up.returncode == 0, output[-3000:]
    assert "embedded Redis at redis://127.0.0.1:" in output and f"dashboard  http://127.0.0.1:{port}/\n" in output
    assert any((tmp_path / "data" / "redis").glob("appendonly*"))  # its data survives a restart
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path / "data" / "redis")], capture_output=True, text=True)
    assert leftover.stdout == ""  # the embedded Redis stopped with it


def test_a_closed_terminal_stops_up_and_a_second_up_on_its_data_refuses(tmp_path: Path):
    port = free_port()
    (tmp_path / "bot.yaml").write_text('repos: ["acme/*"]\n')
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    env.update(GITOPS_BOT_CONFIG=str(tmp_path / "bot.yaml"), GITOPS_BOT_DATA_DIR=str(tmp_path / "data"))
    up = subprocess.Popen([sys.executable, "-m", "bot", "up", "--port", str(port)], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: Running(f"http://127.0.0.1:{port}").get("/healthz").status == 200, what="/healthz")
        second = subprocess.run([sys.executable, "-m", "bot", "up", "--port", str(free_port())], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert second.stderr.strip() == (f"gitops-bot up: another Redis is running on {tmp_path / 'data' / 'redis'}: "
                                         "stop the gitops-bot that started it, or set GITOPS_BOT_DATA_DIR to another "
                                         "directory")
    finally:
        up.send_signal(signal.SIGHUP)
        output, _ = up.communicate(timeout=60)
    assert up.returncode == 0, output[-3000:]
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path / "data" / "redis")], capture_output=True, text=True)
    assert leftover.stdout == ""
