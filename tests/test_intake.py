"""What the bot decides to do about an event: a table of parsed real payloads and the plans they make."""

from __future__ import annotations

import json

import pytest

from bot.config import ServerConfig
from bot.forges.github import parse_webhook, signature
from bot.intake import plan
from bot.queue import pull_key
from tests.conftest import payload

SERVER = ServerConfig(repos=("*",))


def event(name: str, fixture: str):
    raw = json.dumps(payload(f"github/{fixture}")).encode()
    return parse_webhook({"x-github-event": name, "x-hub-signature-256": signature("s", raw)}, raw, "s").event


@pytest.mark.parametrize("fixture, branch", [("push.branch", "master"), ("push.new-branch", "master")])
def test_a_push_to_a_branch_queues_a_deploy_of_that_commit(fixture, branch):
    push = event("push", fixture)
    (job,) = plan(push, SERVER).jobs
    assert (job.queue, job.func) == ("deploy", "deploy_push")
    assert job.kwargs["branch"] == branch and job.kwargs["sha"] == push.after and job.kwargs["pull"] is None
    assert job.kwargs["repo"]["full_name"] == push.repo.full_name and job.kwargs["actor"] == push.pusher


def test_a_deleted_tag_queues_nothing():
    decision = plan(event("push", "push.tag-deleted"), SERVER)
    assert decision.jobs == [] and "refs/tags/" in decision.ignored


def test_a_merged_pull_request_deploys_its_merge_commit_and_cancels_its_diffs():
    merged = event("pull_request", "pull_request.closed.merged")
    decision = plan(merged, SERVER)
    (job,) = decision.jobs
    assert (job.queue, job.func) == ("deploy", "deploy_push")
    assert job.kwargs["sha"] == merged.merge_sha and job.kwargs["branch"] == merged.pull.base_ref
    assert job.kwargs["pull"] == merged.pull.number
    assert decision.cancel == [pull_key("github", merged.pull.repo.full_name, merged.pull.number)]


def test_a_closed_pull_request_only_cancels_its_diffs():
    decision = plan(event("pull_request", "pull_request.closed"), SERVER)
    assert decision.jobs == [] and len(decision.cancel) == 1


def test_pushes_to_other_repositories_are_ignored():
    decision = plan(event("push", "push.branch"), ServerConfig(repos=("acme/*",)))
    assert decision.jobs == [] and "not in the server config" in decision.ignored
