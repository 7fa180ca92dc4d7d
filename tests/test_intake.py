"""What the bot decides to do about an event: a table of parsed real payloads and the plans they make;
GitHub's `form` deliveries read as their JSON."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from bot.config import ServerConfig
from bot.forges.github import parse_webhook, signature
from bot.intake import plan
from bot.queue import pull_key
from bot.settings import Settings
from bot.web import create_app
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


FORM = "application/x-www-form-urlencoded"


def form(document: dict) -> bytes:
    """A body as GitHub sends it with the `form` content type, its default."""
    return urlencode({"payload": json.dumps(document)}).encode()


@pytest.mark.parametrize("name, fixture", [("pull_request", "pull_request.opened"), ("push", "push.branch"),
                                           ("issue_comment", "issue_comment.created.on-pull-request"),
                                           ("ping", "ping")])
def test_a_form_delivery_reads_as_the_json_in_its_payload_field(name, fixture):
    raw = form(payload(f"github/{fixture}"))
    headers = {"x-github-event": name, "x-hub-signature-256": signature("s", raw), "content-type": FORM}
    assert parse_webhook(headers, raw, "s").event == event(name, fixture)


def test_the_web_app_queues_a_form_delivery_and_says_what_is_wrong_with_a_bad_one(redis):
    client = create_app(Settings(redis_url="redis://unused", github_webhook_secret="s"), ServerConfig(repos=("*",)),
                        redis).test_client()

    def post(raw: bytes, delivery: str, signed: bytes | None = None):
        answer = client.post("/webhooks/github", data=raw, headers={
            "Content-Type": f"{FORM}; charset=utf-8", "X-GitHub-Event": "pull_request", "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": signature("s", raw if signed is None else signed)})
        return answer.status_code, answer.get_json()

    document = payload("github/pull_request.opened")
    status, body = post(form(document), "form-1")
    assert status == 202 and len(body["queued"]) == 1
    assert post(form(document), "form-1") == (200, {"duplicate": True})
    assert post(form(document), "form-2", signed=json.dumps(document).encode()) == (
        401, {"error": "X-Hub-Signature-256 does not match the body"})
    assert post(b"action=opened", "form-3") == (400, {"error": "form body lacks its payload field"})
    assert post(b"payload=%FF", "form-4") == (400, {"error": "form body is not URL-encoded UTF-8"})
    assert post(urlencode({"payload": "{"}).encode(), "form-5") == (400, {"error": "body is not valid JSON"})


def test_a_redis_that_forgot_the_intake_script_still_records_and_queues(redis):
    """A restarted or flushed server: the script is loaded again on the spot."""
    client = create_app(Settings(redis_url="redis://unused", github_webhook_secret="s"), ServerConfig(repos=("*",)),
                        redis).test_client()
    raw = json.dumps(payload("github/pull_request.opened")).encode()
    for delivery in ("before", "after"):
        redis.script_flush()
        answer = client.post("/webhooks/github", data=raw, headers={
            "X-GitHub-Event": "pull_request", "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": signature("s", raw)})
        assert answer.status_code == 202 and len(answer.get_json()["queued"]) == 1
