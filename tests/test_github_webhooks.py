"""GitHub webhook verification and parsing, on the real payloads."""

from __future__ import annotations

import json

import pytest

from bot.events import CommentEvent, Ping, PullRequestEvent, PushEvent, Unsupported
from bot.forges.base import WebhookError
from bot.forges.github import parse_webhook, signature
from tests.conftest import payload

SECRET = "webhook-secret"


def deliver(event: str, body: dict | bytes, secret: str = SECRET, **headers: str):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    base = {"x-github-event": event, "x-github-delivery": "d-1", "x-hub-signature-256": signature(secret, raw)}
    return parse_webhook({**base, **headers}, raw, SECRET)


def test_published_signature_vector():
    assert signature("It's a Secret to Everybody", b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")


@pytest.mark.parametrize("name, action", [
    ("opened", "opened"), ("reopened", "opened"), ("synchronize", "updated"),
    ("ready_for_review", "updated"), ("closed.merged", "merged"), ("closed", "closed"),
    ("labeled", "other"), ("converted_to_draft", "other"),
])
def test_pull_request_actions(name, action):
    event = deliver("pull_request", payload(f"github/pull_request.{name}")).event
    assert isinstance(event, PullRequestEvent)
    assert event.action == action
    assert event.pull.repo.full_name == "Codertocat/Hello-World"
    assert event.pull.number == 2
    assert event.pull.head_sha == "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
    assert event.pull.base_ref == "master"


def test_merged_pull_request_carries_the_merge_commit():
    event = deliver("pull_request", payload("github/pull_request.closed.merged")).event
    assert event.merge_sha and len(event.merge_sha) == 40


def test_base_branch_edit_is_a_retarget_and_title_edit_is_not():
    body = payload("github/pull_request.opened")
    body["action"] = "edited"
    body["changes"] = {"base": {"ref": {"from": "develop"}, "sha": {"from": "0" * 40}}}
    assert deliver("pull_request", body).event.action == "retargeted"
    body["changes"] = {"title": {"from": "old"}}
    assert deliver("pull_request", body).event.action == "other"


def test_comment_on_pull_request_is_told_apart_from_plain_issue():
    on_pr = deliver("issue_comment", payload("github/issue_comment.created.on-pull-request")).event
    plain = deliver("issue_comment", payload("github/issue_comment.created")).event
    edited = deliver("issue_comment", payload("github/issue_comment.edited")).event
    assert isinstance(on_pr, CommentEvent) and on_pr.on_pull_request and on_pr.body == "/build"
    assert isinstance(plain, CommentEvent) and not plain.on_pull_request
    assert edited.action == "edited"


@pytest.mark.parametrize("name, branch, created, deleted", [
    ("push.branch", "master", False, False),
    ("push.new-branch", "master", True, False),
    ("push.tag-deleted", None, False, True),
])
def test_push_events(name, branch, created, deleted):
    event = deliver("push", payload(f"github/{name}")).event
    assert isinstance(event, PushEvent)
    assert (event.branch, event.created, event.deleted) == (branch, created, deleted)


def test_ping_and_unknown_events():
    assert isinstance(deliver("ping", payload("github/ping")).event, Ping)
    other = deliver("star", {"action": "created", "repository": payload("github/ping")["repository"]}).event
    assert isinstance(other, Unsupported) and "star" in other.reason


@pytest.mark.parametrize("headers, status, words", [
    ({"x-hub-signature-256": None}, 401, "missing"),
    ({"x-hub-signature-256": "sha256=" + "0" * 64}, 401, "does not match"),
    ({"x-hub-signature-256": "sha1=abc"}, 401, "does not match"),
    ({"x-github-event": None}, 400, "X-GitHub-Event"),
])
def test_refusals(headers, status, words):
    raw = json.dumps(payload("github/ping")).encode()
    base = {"x-github-event": "ping", "x-github-delivery": "d", "x-hub-signature-256": signature(SECRET, raw)}
    merged = {k: v for k, v in {**base, **headers}.items() if v is not None}
    with pytest.raises(WebhookError) as err:
        parse_webhook(merged, raw, SECRET)
    assert err.value.status == status and words in err.value.message


def test_signature_over_another_body_or_without_a_secret_is_refused():
    raw = b'{"zen": "x"}'
    with pytest.raises(WebhookError) as err:
        parse_webhook({"x-github-event": "ping", "x-hub-signature-256": signature(SECRET, b"{}")}, raw, SECRET)
    assert err.value.status == 401
    with pytest.raises(WebhookError) as err:
        parse_webhook({"x-github-event": "ping", "x-hub-signature-256": signature("", raw)}, raw, None)
    assert err.value.status == 401 and "GITHUB_WEBHOOK_SECRET" in err.value.message


@pytest.mark.parametrize("body, words", [
    (b"not json", "not valid JSON"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps({"action": "opened", "repository": {"full_name": "a/b", "clone_url": "x"}}).encode(),
     "pull_request"),
    (json.dumps({**payload("github/pull_request.opened"), "pull_request": {"number": "two"}}).encode(),
     "pull_request.number"),
])
def test_malformed_bodies_name_the_problem(body, words):
    with pytest.raises(WebhookError) as err:
        deliver("pull_request", body)
    assert err.value.status == 400 and words in err.value.message
