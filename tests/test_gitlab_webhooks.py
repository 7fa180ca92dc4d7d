"""GitLab webhook verification and parsing, on the real payloads."""

from __future__ import annotations

import hashlib
import json

import pytest

from bot.events import ZERO_SHA, CommentEvent, PullRequestEvent, PushEvent, Unsupported
from bot.forges import gitlab as gitlab_forge
from bot.forges.base import WebhookError
from bot.forges.gitlab import parse_webhook
from tests.conftest import payload

TOKEN = "webhook-token"
HEAD = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"


def deliver(event: str, body: dict | bytes, token: str | None = TOKEN, **headers: str | None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    base = {"x-gitlab-event": event, "x-gitlab-token": TOKEN, "x-gitlab-event-uuid": "uuid-1", **headers}
    return parse_webhook({k: v for k, v in base.items() if v is not None}, raw, token)


def merge_request(action: str, **attributes) -> dict:
    body = payload("gitlab/merge_request.open")
    body["object_attributes"].update(action=action, **attributes)
    return body


# -- the token and the delivery id -------------------------------------------------------------

def test_the_right_token_is_accepted():
    delivery = deliver("Merge Request Hook", payload("gitlab/merge_request.open"))
    assert (delivery.forge, delivery.event_name) == ("gitlab", "Merge Request Hook")
    assert delivery.delivery_id == "uuid-1"


@pytest.mark.parametrize("headers, token, status, words", [
    ({"x-gitlab-token": "not-the-token"}, TOKEN, 401, "X-Gitlab-Token is wrong"),
    ({"x-gitlab-token": None}, TOKEN, 401, "missing X-Gitlab-Token"),
    ({}, None, 401, "GITLAB_WEBHOOK_TOKEN"),
    ({"x-gitlab-token": ""}, "", 401, "GITLAB_WEBHOOK_TOKEN"),
    ({"x-gitlab-event": None}, TOKEN, 400, "X-Gitlab-Event"),
])
def test_refusals(headers, token, status, words):
    with pytest.raises(WebhookError) as err:
        deliver("Push Hook", payload("gitlab/push"), token=token, **headers)
    assert err.value.status == status and words in err.value.message


def test_the_token_is_compared_in_constant_time(monkeypatch):
    compared = []

    def spy(given, expected):
        compared.append((given, expected))
        return given == expected

    monkeypatch.setattr(gitlab_forge, "constant_time_equal", spy)
    deliver("Push Hook", payload("gitlab/push"))
    assert compared == [(TOKEN, TOKEN)]


def test_delivery_id_sources():
    body = payload("gitlab/push")
    raw = json.dumps(body).encode()
    assert deliver("Push Hook", raw).delivery_id == "uuid-1"
    assert deliver("Push Hook", raw, **{"x-gitlab-event-uuid": None, "idempotency-key": "key-9"}
                   ).delivery_id == "key-9"
    assert deliver("Push Hook", raw, **{"x-gitlab-event-uuid": None}).delivery_id == (
        "sha256:" + hashlib.sha256(raw).hexdigest())


# -- the fixtures ------------------------------------------------------------------------------

def test_merge_request_fixture():
    event = deliver("Merge Request Hook", payload("gitlab/merge_request.open")).event
    assert isinstance(event, PullRequestEvent) and event.action == "opened"
    pull = event.pull
    assert (pull.repo.forge, pull.repo.full_name, pull.repo.default_branch) == ("gitlab", "gitlabhq/gitlab-test",
                                                                                 "master")
    assert pull.repo.clone_url == "http://example.com/gitlabhq/gitlab-test.git"
    assert pull.repo.web_url == "http://example.com/gitlabhq/gitlab-test"
    assert (pull.number, pull.base_ref, pull.head_ref, pull.head_sha) == (1, "master", "ms-viewport", HEAD)
    assert pull.base_sha == ""  # merge request hooks name the target branch, not its commit
    assert pull.head_clone_url == "http://example.com/awesome_space/awesome_project.git" and pull.is_fork
    assert (pull.author, event.sender, pull.title, pull.draft) == ("root", "root", "MS-Viewport", False)
    assert pull.web_url == "http://example.com/diaspora/merge_requests/1"


def test_note_fixture():
    event = deliver("Note Hook", payload("gitlab/note.merge_request")).event
    assert isinstance(event, CommentEvent)
    assert (event.on_pull_request, event.number, event.comment_id) == (True, 1, 1244)
    assert (event.body, event.author, event.action) == ("This MR needs work.", "root", "created")
    assert event.repo.full_name == "gitlab-org/gitlab-test"


def test_push_fixture():
    event = deliver("Push Hook", payload("gitlab/push")).event
    assert isinstance(event, PushEvent)
    assert (event.repo.full_name, event.branch, event.after) == ("mike/diaspora", "master", HEAD)
    assert (event.created, event.deleted) == (False, False)
    assert event.pusher == "John Smith"  # this old payload predates user_username


@pytest.mark.parametrize("event, name", [
    ("Merge Request Hook", "merge_request.open"), ("Note Hook", "note.merge_request"), ("Push Hook", "push"),
])
def test_nested_group_projects_keep_their_full_path(event, name):
    body = payload(f"gitlab/{name}")
    body["project"]["path_with_namespace"] = "group/sub/infra"
    parsed = deliver(event, body).event
    repo = parsed.pull.repo if isinstance(parsed, PullRequestEvent) else parsed.repo
    assert repo.full_name == "group/sub/infra"


# -- merge request actions ---------------------------------------------------------------------

@pytest.mark.parametrize("action, neutral", [
    ("open", "opened"), ("reopen", "opened"), ("close", "closed"), ("merge", "merged"),
    ("approved", "other"), ("unapproved", "other"), ("approval", "other"),
])
def test_merge_request_actions(action, neutral):
    event = deliver("Merge Request Hook", merge_request(action)).event
    assert event.action == neutral
    assert event.pull.number == 1 and event.pull.head_sha == HEAD


def test_an_update_with_new_commits_is_a_new_head():
    body = merge_request("update", oldrev="95790bf891e76fee5e1747ab589903a6a1f80f22")
    assert deliver("Merge Request Hook", body).event.action == "updated"


def test_an_update_of_the_target_branch_is_a_retarget():
    body = merge_request("update", target_branch="develop")
    body["changes"]["target_branch"] = {"previous": "master", "current": "develop"}
    event = deliver("Merge Request Hook", body).event
    assert (event.action, event.pull.base_ref) == ("retargeted", "develop")


def test_an_update_without_new_commits_changes_nothing_deployed():
    body = merge_request("update")
    body["changes"] = {"title": {"previous": "MS-Viewport", "current": "MS-Viewport v2"}}
    event = deliver("Merge Request Hook", body).event
    assert event.action == "other" and "title" in event.detail and "label" in event.detail


def test_merge_carries_the_merge_commit_when_sent():
    merged = deliver("Merge Request Hook", merge_request("merge", merge_commit_sha="f" * 40)).event
    assert (merged.action, merged.merge_sha) == ("merged", "f" * 40)
    assert deliver("Merge Request Hook", merge_request("merge")).event.merge_sha is None


def test_diff_refs_give_the_base_commit():
    body = merge_request("open", diff_refs={"base_sha": "b" * 40, "head_sha": HEAD, "start_sha": "b" * 40})
    assert deliver("Merge Request Hook", body).event.pull.base_sha == "b" * 40


@pytest.mark.parametrize("attributes, draft", [
    ({"draft": True}, True), ({"draft": None, "work_in_progress": True}, True),
    ({"draft": False, "work_in_progress": False}, False),
])
def test_draft(attributes, draft):
    assert deliver("Merge Request Hook", merge_request("open", **attributes)).event.pull.draft is draft


def test_a_merge_request_from_the_same_project_is_not_a_fork():
    body = merge_request("open")
    body["object_attributes"]["source"]["git_http_url"] = body["project"]["git_http_url"]
    assert not deliver("Merge Request Hook", body).event.pull.is_fork


def test_http_url_stands_in_for_git_http_url():
    body = payload("gitlab/merge_request.open")
    del body["project"]["git_http_url"]
    assert deliver("Merge Request Hook", body).event.pull.repo.clone_url == body["project"]["http_url"]


# -- notes and pushes --------------------------------------------------------------------------

def test_an_edited_note_is_an_edit():
    body = payload("gitlab/note.merge_request")
    body["object_attributes"]["action"] = "update"
    assert deliver("Note Hook", body).event.action == "edited"


@pytest.mark.parametrize("noteable", ["Issue", "Commit", "Snippet"])
def test_notes_elsewhere_are_not_on_a_merge_request(noteable):
    body = payload("gitlab/note.merge_request")
    body["object_attributes"]["noteable_type"] = noteable
    del body["merge_request"]
    event = deliver("Note Hook", body).event
    assert isinstance(event, CommentEvent) and not event.on_pull_request


@pytest.mark.parametrize("before, after, created, deleted", [
    (ZERO_SHA, HEAD, True, False), (HEAD, ZERO_SHA, False, True),
])
def test_branch_creation_and_deletion(before, after, created, deleted):
    body = {**payload("gitlab/push"), "before": before, "after": after, "user_username": "jsmith"}
    event = deliver("Push Hook", body).event
    assert (event.created, event.deleted, event.pusher) == (created, deleted, "jsmith")


@pytest.mark.parametrize("event", ["Tag Push Hook", "Pipeline Hook", "Issue Hook"])
def test_other_events_are_unsupported_with_a_reason(event):
    body = {**payload("gitlab/push"), "object_kind": "tag_push", "ref": "refs/tags/v1.0"}
    parsed = deliver(event, body).event
    assert isinstance(parsed, Unsupported) and event in parsed.reason
    assert parsed.repo is not None and parsed.repo.full_name == "mike/diaspora"


# -- malformed bodies --------------------------------------------------------------------------

_DROP = object()


def _patched(name: str, path: str, value=_DROP) -> bytes:
    """A fixture with the field at dotted `path` set to `value`, or dropped."""
    body = payload(name)
    *parents, last = path.split(".")
    node = body
    for part in parents:
        node = node[part]
    if value is _DROP:
        del node[last]
    else:
        node[last] = value
    return json.dumps(body).encode()


@pytest.mark.parametrize("event, body, words", [
    ("Push Hook", b"not json", "not valid JSON"),
    ("Push Hook", b"[1, 2]", "not a JSON object"),
    ("Merge Request Hook", _patched("gitlab/merge_request.open", "object_attributes"), "object_attributes"),
    ("Merge Request Hook", _patched("gitlab/merge_request.open", "object_attributes.action"),
     "object_attributes.action"),
    ("Merge Request Hook", _patched("gitlab/merge_request.open", "object_attributes.iid", "one"),
     "object_attributes.iid"),
    ("Merge Request Hook", _patched("gitlab/merge_request.open", "object_attributes.last_commit"),
     "object_attributes.last_commit.id"),
    ("Merge Request Hook", _patched("gitlab/merge_request.open", "project"), "project.path_with_namespace"),
    ("Note Hook", _patched("gitlab/note.merge_request", "merge_request"), "merge_request.iid"),
    ("Note Hook", _patched("gitlab/note.merge_request", "object_attributes.id", "1244"), "object_attributes.id"),
    ("Push Hook", _patched("gitlab/push", "ref"), "ref"),
    ("Push Hook", _patched("gitlab/push", "project", "mike/diaspora"), "project.path_with_namespace"),
])
def test_malformed_bodies_name_the_problem(event, body, words):
    with pytest.raises(WebhookError) as err:
        deliver(event, body)
    assert err.value.status == 400 and words in err.value.message
