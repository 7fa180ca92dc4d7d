"""Starting from nothing: `init` writes configs that check out, and `up`, `serve` and `worker` refuse
to start on a missing setting with one line each, before starting anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def gitops_bot(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env={**clean, **env}, capture_output=True,
                          text=True, timeout=60)


def test_init_writes_configs_that_check_out_and_never_overwrites(tmp_path):
    made = gitops_bot(tmp_path, "init")
    assert made.returncode == 0, made.stderr
    assert "wrote config/bot.yaml" in made.stdout and "wrote .gitops.yaml" in made.stdout
    checked = gitops_bot(tmp_path, "check-config", "--repo", ".")
    assert checked.returncode == 0, checked.stderr
    assert "config/bot.yaml: ok (1 repository pattern, 0 clusters)" in checked.stdout
    (tmp_path / "config" / "bot.yaml").write_text("# mine\n")
    again = gitops_bot(tmp_path, "init")
    assert again.returncode == 1 and "exists already; --force overwrites it" in again.stderr
    assert (tmp_path / "config" / "bot.yaml").read_text() == "# mine\n"
    assert gitops_bot(tmp_path, "init", "--force").returncode == 0


def test_up_in_an_empty_directory_says_what_to_do_in_one_line(tmp_path):
    result = gitops_bot(tmp_path, "up")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == ["gitops-bot up: config/bot.yaml: (file): not found; set GITOPS_BOT_CONFIG, "
                                          "or write one with `gitops-bot init`"]


def test_serve_and_worker_without_redis_say_so_in_one_line(tmp_path):
    gitops_bot(tmp_path, "init")
    for command in ("serve", "worker"):
        result = gitops_bot(tmp_path, command)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [f"gitops-bot {command}: REDIS_URL is not set (only `gitops-bot up` "
                                              "starts an embedded Redis)"]


def test_a_broken_config_stops_serve_with_every_mistake(tmp_path):
    (tmp_path / "bot.yaml").write_text("repos: [1]\nrender: {timeout: 0}\n")
    result = gitops_bot(tmp_path, "serve", GITOPS_BOT_CONFIG=str(tmp_path / "bot.yaml"), REDIS_URL="redis://x")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"gitops-bot serve: {tmp_path / 'bot.yaml'}: repos[0]: expected a string, got a number",
        f"gitops-bot serve: {tmp_path / 'bot.yaml'}: render.timeout: expected a number of seconds above 0, got 0"]


def test_version(tmp_path):
    result = gitops_bot(tmp_path, "--version")
    assert result.returncode == 0 and result.stdout.startswith("gitops-bot 0.")
