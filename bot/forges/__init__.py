"""Forge adapters: one module per forge, behind the interface in `base`."""

from __future__ import annotations

from typing import Callable, Mapping

from bot.forges.base import Delivery, Forge
from bot.settings import Settings

WebhookParser = Callable[[Mapping[str, str], bytes, Settings], Delivery]


def webhook_parser(forge: str) -> WebhookParser | None:
    """The pure verify-and-parse function for a forge's webhooks, given the process settings."""
    if forge == "github":
        from bot.forges import github
        return lambda headers, body, settings: github.parse_webhook(headers, body, settings.github_webhook_secret)
    if forge == "gitlab":
        from bot.forges import gitlab
        return lambda headers, body, settings: gitlab.parse_webhook(headers, body, settings.gitlab_webhook_token)
    return None


def make_forge(forge: str, settings: Settings) -> Forge:
    """The API adapter for a forge, authenticated from the settings."""
    if forge == "github":
        from bot.forges.github import GitHubForge
        return GitHubForge(settings.github_api_url, settings.github_token, settings.github_app_id,
                           settings.github_app_private_key)
    if forge == "gitlab":
        from bot.forges.gitlab import GitLabForge
        return GitLabForge(settings.gitlab_url, settings.gitlab_token)
    raise ValueError(f"unknown forge {forge!r}")


def web_urls(settings: Settings) -> dict[str, str]:
    """Where each forge serves its repositories, by forge name: a payload's clone URL must be there."""
    from bot.forges import github
    return {"github": github.web_url(settings.github_api_url), "gitlab": settings.gitlab_url.rstrip("/")}


def commit_url(forge: str, settings: Settings, repo: str, sha: str) -> str | None:
    """Where a person sees a commit on its forge."""
    if forge == "github":
        from bot.forges import github
        return github.commit_url(settings.github_api_url, repo, sha)
    if forge == "gitlab":
        from bot.forges import gitlab
        return gitlab.commit_url(settings.gitlab_url, repo, sha)
    return None
