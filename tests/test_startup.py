"""The start-up block as a table: where each listening address can be reached from, and what each
missing or half-set credential means, by name only."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ServerConfig
from bot.settings import Settings
from bot.startup import Start, redis_description, summary


def block(host: str, addresses: list[str], **env: str) -> str:
    start = Start("serve", host, 8080, "redis://r:6379/0 (REDIS_URL)", "web")
    return "\n".join(summary(start, Settings.from_env(env), ServerConfig(), addresses=lambda: addresses))


@pytest.mark.parametrize("host, addresses, webhook, reach", [
    ("127.0.0.1", ["10.0.0.5"], "http://127.0.0.1:8080/webhooks/github", "this machine only (127.0.0.1)"),
    ("localhost", [], "http://localhost:8080/webhooks/github", "this machine only (localhost)"),
    ("0.0.0.0", ["10.0.0.5", "fd00::5"], "http://10.0.0.5:8080/webhooks/github", "every address of this machine"),
    ("0.0.0.0", [], "http://<this machine's address>:8080/webhooks/github", "every address of this machine"),
    ("::", ["fd00::5"], "http://[fd00::5]:8080/webhooks/github", "every address of this machine (::)"),
    ("10.0.0.5", [], "http://10.0.0.5:8080/webhooks/github", "10.0.0.5 only, a private network's address"),
    ("203.0.113.9", [], "http://203.0.113.9:8080/webhooks/github", "203.0.113.9 only, a private network's"),
    ("8.8.4.4", [], "http://8.8.4.4:8080/webhooks/github", "8.8.4.4 is a public address: a forge can reach it"),
])
def test_the_urls_name_an_address_a_client_can_use_and_say_who_can(host, addresses, webhook, reach):
    text = block(host, addresses)
    assert webhook in text and reach in text
    assert "0.0.0.0:" not in text and "[::]:" not in text
    if host == "0.0.0.0":
        assert "fd00::5" not in text  # an IPv4 listener is not reachable on IPv6 addresses


def test_the_dashboard_without_a_token_answers_loopback_only_so_its_url_is_loopback():
    assert "dashboard  http://127.0.0.1:8080/\n" in block("0.0.0.0", ["10.0.0.5"])
    assert "refuses every client" in block("10.0.0.5", [])
    assert "dashboard  http://10.0.0.5:8080/\n" in block("10.0.0.5", [], GITOPS_BOT_DASHBOARD_TOKEN="t")


@pytest.mark.parametrize("env, meaning", [
    ({}, "missing: GitHub jobs fail"),
    ({"GITHUB_TOKEN": "tok"}, "set"),
    ({"GITHUB_TOKEN": "tok", "GITHUB_APP_ID": "1"}, "set (used; the GitHub App settings are ignored)"),
    ({"GITHUB_APP_ID": "1"}, "GITHUB_APP_PRIVATE_KEY is missing, so GitHub jobs fail"),
    ({"GITHUB_APP_PRIVATE_KEY": "-----BEGIN RSA PRIVATE KEY-----"}, "GITHUB_APP_ID is missing"),
    ({"GITHUB_APP_ID": "1", "GITHUB_APP_PRIVATE_KEY": "/no/such.pem"},
     "GITHUB_APP_PRIVATE_KEY is neither PEM text nor a file"),
    ({"GITHUB_APP_ID": "1", "GITHUB_APP_PRIVATE_KEY": "-----BEGIN RSA PRIVATE KEY-----\nabc"}, "set (a GitHub App)"),
])
def test_github_api_credentials_say_what_they_are_and_never_their_value(env, meaning):
    credential = Settings.from_env(env).credentials()[1]
    assert credential.meaning.startswith(meaning)
    assert not any(value in credential.meaning for value in env.values())


def test_a_key_file_counts_as_a_github_app(tmp_path: Path):
    key = tmp_path / "app.pem"
    key.write_text("-----BEGIN RSA PRIVATE KEY-----\n")
    assert Settings.from_env({"GITHUB_APP_ID": "1", "GITHUB_APP_PRIVATE_KEY": str(key)}).credentials()[1].present


def test_redis_urls_lose_their_password():
    assert redis_description("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0 (REDIS_URL)"
    assert redis_description("rediss://bot:s3cret@[::1]:6380/1") == "rediss://bot:***@[::1]:6380/1 (REDIS_URL)"
    assert redis_description("redis://127.0.0.1:1/0", Path("/d")) == "embedded Redis at redis://127.0.0.1:1/0, data in /d"


def test_an_empty_server_config_says_that_nothing_is_accepted_and_nothing_deploys():
    text = block("127.0.0.1", [])
    assert "repos      none: every webhook is answered 200 and ignored; list your repositories under `repos` in " \
           "config/bot.yaml" in text
    assert "clusters   none: pull requests get diffs, and nothing deploys" in text
