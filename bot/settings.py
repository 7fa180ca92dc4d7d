"""Process settings: read once from the environment at start-up, never at import time."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping


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

    def secrets(self) -> list[str]:
        """Every secret value this process holds, for masking in logs and messages."""
        return [s for s in (self.github_webhook_secret, self.github_token, self.github_app_private_key,
                            self.gitlab_webhook_token, self.gitlab_token, self.dashboard_token) if s]
