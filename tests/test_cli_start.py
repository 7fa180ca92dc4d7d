"""Starting from nothing: `init` writes configs that check out; `up`, `serve` and `worker` refuse
to start on a missing setting with one line each, before starting anything; `up` and `serve` start
with one block that says what they loaded, what is missing and where they answer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from bot.embedded import free_port


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


def start_until_summary(cwd: Path, *args: str, **env: str) -> tuple[list[str], str]:
    """Start a long-running command, read its start-up block, stop it with Ctrl-C; the block and all it printed."""
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    process = subprocess.Popen([sys.executable, "-m", "bot", *args], cwd=cwd, env={**clean, **env},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    block = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            block.append(line.rstrip("\n"))
            if "open to whoever reaches the port" in line:  # the block's last line
                break
    finally:
        process.send_signal(signal.SIGINT if args[0] == "up" else signal.SIGTERM)
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    return block, "\n".join(block) + out + err


def test_up_says_what_it_loaded_what_is_missing_and_where_it_answers_from_elsewhere(tmp_path):
    kubeconfig = tmp_path / "staging.kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    (tmp_path / "bot.yaml").write_text(
        "repos: [acme/*, group/sub/infra]\nclusters:\n"
        f"  staging: {{kubeconfig: {kubeconfig}, context: staging, repos: [acme/*]}}\n"
        "  production: {kubeconfig: /nowhere/production.kubeconfig, repos: [acme/infra]}\n"
        "  self: {in_cluster: true, repos: [acme/*]}\n")
    secrets = {"GITHUB_WEBHOOK_SECRET": "whsec-4f9a1c", "GITHUB_TOKEN": "ghp_7b2e0d", "GITLAB_TOKEN": "glpat-93c1aa"}
    port = str(free_port())
    block, printed = start_until_summary(tmp_path, "up", "--host", "0.0.0.0", "--port", port,
                                         GITOPS_BOT_CONFIG=str(tmp_path / "bot.yaml"), **secrets)
    text = "\n".join(block)
    assert block[0] == "gitops-bot up: instance 'gitops-bot'"
    assert f"config     {tmp_path / 'bot.yaml'} (from GITOPS_BOT_CONFIG)" in text
    assert "repos      acme/*, group/sub/infra" in text
    assert f"staging: kubeconfig {kubeconfig}, context staging; granted to acme/*" in text
    assert "/nowhere/production.kubeconfig: no such file, so deploys to production fail" in text
    assert "this process is not in a pod, so deploys to self fail" in text
    for name, meaning in (("GITHUB_WEBHOOK_SECRET", "set"), ("GITHUB_TOKEN", "set"), ("GITLAB_TOKEN", "set"),
                          ("GITLAB_WEBHOOK_TOKEN", "missing: GitLab webhooks are refused (401)"),
                          ("GITOPS_BOT_DASHBOARD_TOKEN", "missing: the dashboard and /api answer this machine only")):
        assert any(line.split()[-len(meaning.split()):] == meaning.split() and name in line for line in block), name
    assert "redis      embedded Redis at redis://127.0.0.1:" in text and str(tmp_path / ".gitops-bot" / "redis") in text
    # Listening on every address: the URLs name this machine's, never 0.0.0.0, and say what a forge needs.
    assert "http://0.0.0.0" not in printed
    assert "every address of this machine (0.0.0.0)" in text
    assert f"a forge on the internet needs a public address or a tunnel (HTTPS) to port {port}" in text
    assert f":{port}/webhooks/github   (GitHub)" in text and f":{port}/webhooks/gitlab   (GitLab)" in text
    assert f"dashboard  http://127.0.0.1:{port}/" in text and f":{port}/metrics" in text
    for value in secrets.values():
        assert value not in printed


def test_serve_on_loopback_says_this_machine_only_and_hides_the_redis_password(tmp_path):
    gitops_bot(tmp_path, "init")
    block, printed = start_until_summary(tmp_path, "serve", "--host", "127.0.0.1", "--port", str(free_port()),
                                         "--workers", "1", REDIS_URL="redis://:pa55word-x@127.0.0.1:1/0",
                                         GITOPS_BOT_DASHBOARD_TOKEN="dash-81f2")
    text = "\n".join(block)
    assert block[0] == "gitops-bot serve: instance 'gitops-bot'"
    assert "(the default; GITOPS_BOT_CONFIG names another)" in text
    assert "clusters   none: pull requests get diffs, and nothing deploys" in text
    assert "redis      redis://:***@127.0.0.1:1/0 (REDIS_URL)" in text
    assert "this machine only (127.0.0.1): no forge can reach it;" in text
    assert "GitHub webhooks are refused (401)" in text and "GitHub jobs fail" in text
    assert "GITOPS_BOT_DASHBOARD_TOKEN    set: the dashboard and /api need it" in text
    assert "pa55word-x" not in printed and "dash-81f2" not in printed


def test_serve_refuses_a_port_that_is_not_a_number(tmp_path):
    gitops_bot(tmp_path, "init")
    result = gitops_bot(tmp_path, "serve", REDIS_URL="redis://127.0.0.1:1/0", PORT="http")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["gitops-bot serve: PORT must be a whole number above 0, got 'http'"]
