"""Process settings: read once from the environment at start-up, never at import time."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

VARIABLES: dict[str, str] = {
    "REDIS_URL": "queue and state; unset: `up` starts an embedded Redis, the others refuse to start",
    "GITOPS_BOT_CONFIG": "the server config file (default: config/bot.yaml)",
    "GITOPS_BOT_DATA_DIR": "git mirrors and the embedded Redis's data (default: ./.gitops-bot)",
    "GITOPS_BOT_NAME": "this instance's name in comment markers and status contexts (default: gitops-bot)",
    "GITHUB_WEBHOOK_SECRET": "verifies /webhooks/github; unset, every GitHub delivery is refused",
    "GITHUB_TOKEN": "GitHub API token (or a GitHub App: GITHUB_APP_ID + GITHUB_APP_PRIVATE_KEY)",
    "GITHUB_APP_ID": "the GitHub App's id, with GITHUB_APP_PRIVATE_KEY",
    "GITHUB_APP_PRIVATE_KEY": "the GitHub App's private key: PEM text, or the path of a PEM file",
    "GITHUB_API_URL": "default https://api.github.com; GitHub Enterprise Server: https://HOST/api/v3",
    "GITLAB_WEBHOOK_TOKEN": "verifies /webhooks/gitlab; unset, every GitLab delivery is refused",
    "GITLAB_TOKEN": "GitLab API token (scope `api`)",
    "GITLAB_URL": "default https://gitlab.com",
    "GITOPS_BOT_DASHBOARD_TOKEN": "the dashboard and /api need it; unset, they answer this machine only",
    "PORT": "the web server's port (default: 8080)",
    "WEB_CONCURRENCY": "gunicorn worker processes of `serve` (default: 3)",
    "GITOPS_BOT_WEB_THREADS": "threads per gunicorn worker of `serve` (default: 1)",
    "PROMETHEUS_MULTIPROC_DIR": "where `serve`'s processes share their metrics (default: a new temporary directory)",
    "NO_COLOR": "set: `diff` and `drift` print no colour on a terminal",
    "HELM_C_LIB": "the Helm SDK's shared library, where the helm-python-sdk wheel has none for this platform",
}
"""Every environment variable the bot reads, with its meaning in one line (for --help and the README)."""


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to know about its surroundings.

    Secrets live only here (and in the forge clients built from them); nothing logs a Settings.
    """

    redis_url: str | None = None
    """Queue and state. None means an embedded Redis, which only `gitops-bot up` starts."""

    config_path: Path = Path("config/bot.yaml")
    """The server config (trusted, written by operators)."""

    data_dir: Path = Path(".gitops-bot")
    """Git mirrors and embedded Redis data."""

    name: str = "gitops-bot"
    """This instance's identity, in comment markers and status contexts."""

    github_webhook_secret: str | None = field(default=None, repr=False)
    github_token: str | None = field(default=None, repr=False)
    github_app_id: str | None = None
    github_app_private_key: str | None = field(default=None, repr=False)
    """PEM text, or a path to a PEM file."""
    github_api_url: str = "https://api.github.com"

    gitlab_webhook_token: str | None = field(default=None, repr=False)
    gitlab_token: str | None = field(default=None, repr=False)
    gitlab_url: str = "https://gitlab.com"

    dashboard_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env

        def get(key: str) -> str | None:
            return env.get(key) or None

        return cls(
            redis_url=get("REDIS_URL"),
            config_path=Path(get("GITOPS_BOT_CONFIG") or "config/bot.yaml"),
            data_dir=Path(get("GITOPS_BOT_DATA_DIR") or ".gitops-bot"),
            name=get("GITOPS_BOT_NAME") or "gitops-bot",
            github_webhook_secret=get("GITHUB_WEBHOOK_SECRET"),
            github_token=get("GITHUB_TOKEN"),
            github_app_id=get("GITHUB_APP_ID"),
            github_app_private_key=get("GITHUB_APP_PRIVATE_KEY"),
            github_api_url=(get("GITHUB_API_URL") or "https://api.github.com").rstrip("/"),
            gitlab_webhook_token=get("GITLAB_WEBHOOK_TOKEN"),
            gitlab_token=get("GITLAB_TOKEN"),
            gitlab_url=(get("GITLAB_URL") or "https://gitlab.com").rstrip("/"),
            dashboard_token=get("GITOPS_BOT_DASHBOARD_TOKEN"),
        )

    def credentials(self) -> list[Credential]:
        """What each forge secret and token is set to do, or what its absence means: names only."""
        github_api = [Credential("GITHUB_TOKEN", True, "set" + (" (used; the GitHub App settings are ignored)"
                                                                 if self.github_app_id or self.github_app_private_key
                                                                 else ""))]
        if not self.github_token:
            github_api = [self._github_app()]
        dashboard = ("set: the dashboard and /api need it" if self.dashboard_token else
                     "missing: the dashboard and /api answer this machine only")
        return [
            _credential("GITHUB_WEBHOOK_SECRET", self.github_webhook_secret,
                        "GitHub webhooks are refused (401)"),
            *github_api,
            _credential("GITLAB_WEBHOOK_TOKEN", self.gitlab_webhook_token, "GitLab webhooks are refused (401)"),
            _credential("GITLAB_TOKEN", self.gitlab_token,
                        "GitLab jobs fail: no diff comment, status, slash command or deploy report"),
            Credential("GITOPS_BOT_DASHBOARD_TOKEN", bool(self.dashboard_token), dashboard),
        ]

    def _github_app(self) -> Credential:
        name = "GITHUB_TOKEN or GITHUB_APP_*"
        key = self.github_app_private_key
        if not self.github_app_id and not key:
            return _credential(name, None, "GitHub jobs fail: no diff comment, status, slash command or deploy "
                                           "report (set GITHUB_TOKEN, or GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY)")
        if not self.github_app_id or not key:
            missing = "GITHUB_APP_PRIVATE_KEY" if self.github_app_id else "GITHUB_APP_ID"
            return Credential(name, False, f"{missing} is missing, so GitHub jobs fail: no diff comment, status, "
                                           "slash command or deploy report")
        if "-----BEGIN" not in key and not _is_file(key):
            return Credential(name, False, "GITHUB_APP_PRIVATE_KEY is neither PEM text nor a file that exists, so "
                                           "GitHub jobs fail")
        return Credential(name, True, "set (a GitHub App)")

    def secrets(self) -> list[str]:
        """Every secret value this process holds, for masking in logs and messages."""
        return [s for s in (self.github_webhook_secret, self.github_token, self.github_app_private_key,
                            self.gitlab_webhook_token, self.gitlab_token, self.dashboard_token) if s]


@dataclass(frozen=True)
class Credential:
    """A secret or token by its name only: whether it is usable, and what that means."""

    name: str
    present: bool
    meaning: str
    """"set", or "missing: what fails without it"."""


def _credential(name: str, value: str | None, missing_means: str) -> Credential:
    return Credential(name, bool(value), "set" if value else f"missing: {missing_means}")


def _is_file(path: str) -> bool:
    try:
        return Path(path).is_file()
    except (OSError, ValueError):  # too long, or a NUL: not a path at all
        return False
