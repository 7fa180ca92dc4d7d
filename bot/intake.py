"""Decide what one event asks of the bot: a pure function from event and config to a plan."""

from __future__ import annotations

from typing import Mapping

from bot.commands import has_commands
from bot.config import ServerConfig
from bot.events import (CommentEvent, Event, Ping, PullRequestEvent, PushEvent, Repo, Unsupported, event_repo,
                        to_plain)
from bot.forges.base import clone_url_refusal
from bot.queue import JobSpec, Plan, pull_key


def plan(event: Event, server: ServerConfig, web_urls: Mapping[str, str] | None = None) -> Plan:
    """`web_urls` (forge name: where it serves repositories) refuses payloads whose clone URL is
    elsewhere; the jobs check again before they fetch, so leaving it out (in tests of planning) is safe."""
    if isinstance(event, Ping):
        return Plan(ignored="ping: the webhook is set up")
    if isinstance(event, Unsupported):
        return Plan(ignored=event.reason)
    repo = event_repo(event)
    if repo is None:
        return Plan(ignored="the event names no repository")
    if not server.allows(repo.full_name):
        return Plan(ignored=f"repository {repo.full_name} is not in the server config")
    if web_urls is not None:
        refusal = clone_url_refusal(repo.clone_url, web_urls.get(repo.forge, ""), server.allow_local_urls)
        if refusal:
            return Plan(ignored=f"repository {repo.full_name}: {refusal}")
    if isinstance(event, PullRequestEvent):
        return _pull_request(event)
    if isinstance(event, CommentEvent):
        return _comment(event, server.command_prefix)
    if isinstance(event, PushEvent):
        return _push(event)
    return Plan(ignored=f"{type(event).__name__} is not acted on")


def _pull_request(event: PullRequestEvent) -> Plan:
    pull = event.pull
    key = pull_key(pull.repo.forge, pull.repo.full_name, pull.number)
    if event.action in ("opened", "updated", "retargeted"):
        return Plan(jobs=[diff_job(event)])
    if event.action == "merged":
        # The merge commit, if the forge names one; otherwise the job deploys the branch's tip.
        job = deploy_job(pull.repo, pull.base_ref, event.merge_sha or "", event.sender, pull=pull.number)
        return Plan(jobs=[job], cancel=[key])
    if event.action == "closed":
        return Plan(cancel=[key], ignored=f"pull request {event.detail}: pending diffs are cancelled")
    return Plan(ignored=f"pull request action {event.detail!r} does not change what it deploys")


def diff_job(event: PullRequestEvent, requested_by: str | None = None) -> JobSpec:
    """Diff a pull request at its head; `requested_by` is whoever asked with `/diff`."""
    pull = event.pull
    kwargs = {"pull": to_plain(pull), **({"requested_by": requested_by} if requested_by is not None else {})}
    return JobSpec(
        queue="diff", func="diff_pull_request", kwargs=kwargs,
        description=f"diff {pull.repo.full_name}#{pull.number} at {pull.head_sha[:7]}",
        supersedes=pull_key(pull.repo.forge, pull.repo.full_name, pull.number), timeout=900)


def _comment(event: CommentEvent, prefix: str) -> Plan:
    """Only a new comment on a pull request, by a person, with a command in it, costs a job."""
    if event.action != "created":
        return Plan(ignored=f"comment {event.action}: only new comments are read for commands")
    if not event.on_pull_request:
        return Plan(ignored="comment on an issue, not a pull request")
    if event.author_is_bot:
        return Plan(ignored=f"comment by the bot {event.author}")
    if not has_commands(event.body, prefix):
        return Plan(ignored="comment has no command")
    return Plan(jobs=[JobSpec(
        queue="commands", func="run_commands",
        kwargs={"repo": to_plain(event.repo), "number": event.number, "comment_id": event.comment_id,
                "body": event.body, "author": event.author},
        description=f"commands in {event.repo.full_name}#{event.number} by {event.author}")])


def _push(event: PushEvent) -> Plan:
    if event.branch is None:
        return Plan(ignored=f"push to {event.ref}: only pushes to branches deploy")
    if event.deleted:
        return Plan(ignored=f"branch {event.branch} was deleted: nothing to deploy")
    return Plan(jobs=[deploy_job(event.repo, event.branch, event.after, event.pusher)])


def sync_job(repo: Repo, environment: str) -> JobSpec:
    """Compare a deployed environment with its cluster (and heal it, if it asks for that)."""
    return JobSpec(queue="deploy", func="check_sync", kwargs={"repo": to_plain(repo), "environment": environment},
                   description=f"check {repo.full_name} {environment} against its cluster", timeout=3600)


def deploy_job(repo: Repo, branch: str, sha: str, actor: str, pull: int | None = None,
               environment: str | None = None) -> JobSpec:
    """Deploy the environments of `branch` at `sha` ("" = its tip), or only `environment`; reply on `pull`."""
    return JobSpec(
        queue="deploy", func="deploy_push",
        kwargs={"repo": to_plain(repo), "branch": branch, "sha": sha, "actor": actor, "pull": pull,
                "environment": environment},
        description=f"deploy {repo.full_name} {branch} at {sha[:7] or 'tip'}", timeout=3600)
