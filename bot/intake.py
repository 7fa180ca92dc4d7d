"""Decide what one event asks of the bot: a pure function from event and config to a plan."""

from __future__ import annotations

from bot.config import ServerConfig
from bot.events import CommentEvent, Event, Ping, PullRequestEvent, PushEvent, Unsupported, event_repo, to_plain
from bot.queue import JobSpec, Plan, pull_key


def plan(event: Event, server: ServerConfig) -> Plan:
    if isinstance(event, Ping):
        return Plan(ignored="ping: the webhook is set up")
    if isinstance(event, Unsupported):
        return Plan(ignored=event.reason)
    repo = event_repo(event)
    if repo is None or not server.allows(repo.full_name):
        return Plan(ignored=f"repository {repo.full_name} is not in the server config")
    if isinstance(event, PullRequestEvent):
        return _pull_request(event)
    if isinstance(event, CommentEvent):
        return Plan(ignored="comments are not acted on by this version")
    if isinstance(event, PushEvent):
        return Plan(ignored="pushes are not acted on by this version")
    return Plan(ignored=f"{type(event).__name__} is not acted on")


def _pull_request(event: PullRequestEvent) -> Plan:
    pull = event.pull
    key = pull_key(pull.repo.forge, pull.repo.full_name, pull.number)
    if event.action in ("opened", "updated", "retargeted"):
        return Plan(jobs=[diff_job(event)])
    if event.action in ("closed", "merged"):
        return Plan(cancel=[key], ignored=f"pull request {event.detail}: pending diffs are cancelled")
    return Plan(ignored=f"pull request action {event.detail!r} does not change what it deploys")


def diff_job(event: PullRequestEvent) -> JobSpec:
    pull = event.pull
    return JobSpec(
        queue="diff", func="diff_pull_request", kwargs={"pull": to_plain(pull)},
        description=f"diff {pull.repo.full_name}#{pull.number} at {pull.head_sha[:7]}",
        supersedes=pull_key(pull.repo.forge, pull.repo.full_name, pull.number), timeout=900)
