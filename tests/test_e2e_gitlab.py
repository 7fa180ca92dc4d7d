"""A GitLab merge request gets its diff note: real app, worker, Redis and git; GitLab stood in for."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import git, payload
from tests.harness import (HEAD_CHANGES, PASSWORD_BASE, PASSWORD_HEAD, Bot, MergeRequestScenario, assert_first_diff,
                           bot_env)

PATH = "group/sub/infra"
WEBHOOK_TOKEN = "e2e-gitlab-webhook-token"
TOKEN = "glpat-e2eTOKENvalue0123456789"


@pytest.fixture
def bot(tmp_path: Path, redis_server, redis, gitlab):
    env = bot_env(tmp_path, redis_server.url, 'repos: ["group/sub/*"]\n', GITLAB_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
                  GITLAB_TOKEN=TOKEN, GITLAB_URL=gitlab.url)
    instance = Bot(env)
    yield instance
    instance.stop()


@pytest.fixture
def scenario(remote, gitlab, bot) -> MergeRequestScenario:
    return MergeRequestScenario(remote, gitlab, bot, PATH, WEBHOOK_TOKEN)


def test_opened_merge_request_gets_one_note_and_a_status(scenario, bot, gitlab):
    head = scenario.push_head(HEAD_CHANGES)
    answer = scenario.deliver(scenario.event("open", head))
    assert answer.status == 202 and len(answer.body["queued"]) == 1
    bot.work()

    (note,) = scenario.comments()
    body = note["body"]
    assert_first_diff(body, head)
    statuses = gitlab.statuses(PATH, head)
    assert [(s["name"], s["status"]) for s in statuses] == [("gitops-bot/diff", "pending"),
                                                            ("gitops-bot/diff", "success")]
    assert statuses[-1]["description"] == "1 added, 2 changed, 0 removed"
    assert gitlab.calls("GET", r"/projects/group%2Fsub%2Finfra/merge_requests/7/notes$")
    assert bot.failed_jobs() == []


def test_a_new_push_edits_the_same_note(scenario, bot, gitlab):
    first = scenario.push_head(HEAD_CHANGES)
    scenario.deliver(scenario.event("open", first))
    bot.work()
    (original,) = scenario.comments()

    second = scenario.push_head({"apps/config.yaml": None}, "drop the config")
    assert scenario.deliver(scenario.event("update", second, oldrev=first)).status == 202
    bot.work()

    (edited,) = scenario.comments()
    assert edited["id"] == original["id"]
    assert f"`{second[:7]}`" in edited["body"] and "**1 added, 2 changed, 1 removed**" in edited["body"]
    assert "<code>- ConfigMap settings</code>" in edited["body"]
    assert len(gitlab.calls("PUT", r"/notes/\d+$")) == 1
    assert len(gitlab.calls("POST", r"/notes$")) == 1
    assert gitlab.statuses(PATH, second)[-1]["status"] == "success"


def test_a_base_branch_that_moved_on_is_fetched_again(scenario, bot, gitlab):
    head = scenario.push_head(HEAD_CHANGES)
    scenario.deliver(scenario.event("open", head))
    bot.work()
    moved = scenario.remote.commit("main", {"README.md": "unrelated\n"}, "unrelated")
    retarget = scenario.event("update", head)  # the head is mirrored already; only the base moved
    retarget["changes"] = {"target_branch": {"previous": "develop", "current": "main"}}
    assert scenario.deliver(retarget).status == 202
    bot.work()
    mirror = bot.settings.data_dir / "mirrors" / "gitlab" / "group%2Fsub%2Finfra.git"
    assert git(mirror, "rev-parse", "refs/heads/main") == moved
    (note,) = scenario.comments()
    assert "**1 added, 2 changed, 0 removed**" in note["body"]  # still against the merge base
    assert bot.failed_jobs() == []


def test_a_target_branch_that_does_not_exist_fails_the_status_and_says_so(scenario, bot, gitlab):
    head = scenario.push_head(HEAD_CHANGES)
    scenario.deliver(scenario.event("open", head, target_branch="gone"))
    bot.work()
    (note,) = scenario.comments()
    assert "refs/heads/gone could not be fetched" in note["body"] and "Traceback" not in note["body"]
    assert gitlab.statuses(PATH, head)[-1]["status"] == "failed"


def test_the_same_delivery_twice_makes_one_job(scenario, bot):
    head = scenario.push_head(HEAD_CHANGES)
    first = scenario.deliver(scenario.event("open", head), delivery="same-uuid")
    second = scenario.deliver(scenario.event("open", head), delivery="same-uuid")
    assert first.status == 202
    assert (second.status, second.body) == (200, {"duplicate": True})
    assert bot.queued() == 1


def test_a_wrong_token_is_refused_and_nothing_is_queued(scenario, bot):
    head = scenario.push_head(HEAD_CHANGES)
    answer = scenario.deliver(scenario.event("open", head), token="not-the-token")
    assert answer.status == 401 and "X-Gitlab-Token" in answer.body["error"]
    assert bot.queued() == 0


def test_a_title_edit_is_ignored_with_a_reason(scenario, bot):
    head = scenario.push_head(HEAD_CHANGES)
    body = scenario.event("update", head)
    body["changes"] = {"title": {"previous": "feature", "current": "Feature: scale web"}}
    answer = scenario.deliver(body)
    assert answer.status == 200 and "title" in answer.body["ignored"]
    assert bot.queued() == 0


def test_secret_values_never_reach_gitlab(scenario, bot, gitlab):
    head = scenario.push_head(HEAD_CHANGES)
    scenario.deliver(scenario.event("open", head))
    bot.work()
    posted = "\n".join(gitlab.posted_texts())
    assert posted
    for value in (PASSWORD_BASE, PASSWORD_HEAD, "password-one", "password-two", TOKEN, WEBHOOK_TOKEN):
        assert value not in posted
    for log in bot.logs:
        assert TOKEN not in log and WEBHOOK_TOKEN not in log


def test_closing_cancels_pending_diffs(scenario, bot, gitlab):
    head = scenario.push_head(HEAD_CHANGES)
    scenario.deliver(scenario.event("open", head))
    closed = scenario.deliver(scenario.event("close", head))
    assert closed.status == 200 and "cancelled" in closed.body["ignored"]
    bot.work()
    assert scenario.comments() == [] and gitlab.statuses(PATH, head) == []


def test_events_the_bot_does_not_act_on_are_ignored_with_a_reason(scenario, bot):
    head = scenario.push_head(HEAD_CHANGES)
    other = scenario.event("open", head)
    other["project"]["path_with_namespace"] = "someone/else"
    ignored = scenario.deliver(other)
    assert ignored.status == 200 and "someone/else" in ignored.body["ignored"]
    tag = {**payload("gitlab/push"), "object_kind": "tag_push", "ref": "refs/tags/v1"}
    unsupported = scenario.deliver(tag, event="Tag Push Hook")
    assert unsupported.status == 200 and "Tag Push Hook" in unsupported.body["ignored"]
    assert bot.queued() == 0


@pytest.mark.parametrize("body, headers, status", [
    (b"{not json", {"X-Gitlab-Event": "Merge Request Hook"}, 400),
    (b"{}", {"X-Gitlab-Event": "Merge Request Hook"}, 400),
    (b"{}", {}, 400),
])
def test_malformed_deliveries(bot, body, headers, status):
    answer = bot.post("/webhooks/gitlab", body, {"X-Gitlab-Token": WEBHOOK_TOKEN, **headers})
    assert answer.status == status and answer.body["error"]


def test_http_edges(bot):
    assert bot.get("/webhooks/gitlab").status == 405
