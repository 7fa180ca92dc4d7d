"""A GitHub pull request gets its diff comment: real app, worker, Redis and git; GitHub stood in for."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.forges.github import signature
from tests.conftest import payload
from tests.harness import (HEAD_CHANGES, PASSWORD_BASE, PASSWORD_HEAD, Bot, PullRequestScenario, assert_first_diff,
                           bot_env)

REPO = "acme/infra"
SECRET = "e2e-webhook-secret"
TOKEN = "ghp_e2eTOKENvalue0123456789"


@pytest.fixture
def bot(tmp_path: Path, redis_server, redis, github):
    env = bot_env(tmp_path, redis_server.url, 'repos: ["acme/*"]\n', GITHUB_WEBHOOK_SECRET=SECRET,
                  GITHUB_TOKEN=TOKEN, GITHUB_API_URL=github.url)
    instance = Bot(env)
    yield instance
    instance.stop()


@pytest.fixture
def scenario(remote, github, bot) -> PullRequestScenario:
    return PullRequestScenario(remote, github, bot, REPO, SECRET)


def test_opened_pull_request_gets_one_comment_and_a_status(scenario, bot, github):
    head = scenario.push_head(HEAD_CHANGES)
    answer = scenario.deliver(scenario.event("opened", head))
    assert answer.status == 202 and len(answer.body["queued"]) == 1
    bot.work()

    (comment,) = scenario.comments()
    body = comment["body"]
    assert_first_diff(body, head)
    states = [(s["context"], s["state"]) for s in github.statuses(REPO, head)]
    assert states == [("gitops-bot/diff", "pending"), ("gitops-bot/diff", "success")]
    assert github.statuses(REPO, head)[-1]["description"] == "1 added, 2 changed, 0 removed"
    assert bot.failed_jobs() == []


def test_a_new_push_edits_the_same_comment(scenario, bot, github):
    first = scenario.push_head(HEAD_CHANGES)
    scenario.deliver(scenario.event("opened", first))
    bot.work()
    (original,) = scenario.comments()

    second = scenario.push_head({"apps/config.yaml": None}, "drop the config")
    assert scenario.deliver(scenario.event("synchronize", second)).status == 202
    bot.work()

    (edited,) = scenario.comments()
    assert edited["id"] == original["id"]
    assert f"`{second[:7]}`" in edited["body"] and "**1 added, 2 changed, 1 removed**" in edited["body"]
    assert "<code>- ConfigMap settings</code>" in edited["body"]
    assert len(github.calls("PATCH", r"/issues/comments/\d+")) == 1
    assert len(github.calls("POST", r"/issues/\d+/comments")) == 1
    assert github.statuses(REPO, second)[-1]["state"] == "success"


def test_the_same_delivery_twice_makes_one_job(scenario, bot):
    head = scenario.push_head(HEAD_CHANGES)
    first = scenario.deliver(scenario.event("opened", head), delivery="same-guid")
    second = scenario.deliver(scenario.event("opened", head), delivery="same-guid")
    assert first.status == 202
    assert (second.status, second.body) == (200, {"duplicate": True})
    assert bot.queued() == 1


def test_a_wrong_signature_is_refused_and_nothing_is_queued(scenario, bot):
    head = scenario.push_head(HEAD_CHANGES)
    answer = scenario.deliver(scenario.event("opened", head), secret="not-the-secret")
    assert answer.status == 401 and "X-Hub-Signature-256" in answer.body["error"]
    assert bot.queued() == 0


def test_secret_values_never_reach_github(scenario, bot, github):
    head = scenario.push_head(HEAD_CHANGES)
    scenario.deliver(scenario.event("opened", head))
    bot.work()
    posted = "\n".join(github.posted_texts())
    assert posted  # something was posted, so the scan means something
    for value in (PASSWORD_BASE, PASSWORD_HEAD, "password-one", "password-two", TOKEN, SECRET):
        assert value not in posted
    for log in bot.logs:
        assert TOKEN not in log and SECRET not in log


def test_only_the_newest_head_is_computed(scenario, bot, github):
    old = scenario.push_head(HEAD_CHANGES)
    scenario.deliver(scenario.event("opened", old))
    new = scenario.push_head({"apps/config.yaml": None}, "newer")
    scenario.deliver(scenario.event("synchronize", new))
    assert bot.queued() == 2
    bot.work()
    assert github.statuses(REPO, old) == []  # the older job saw it was superseded and did nothing
    (comment,) = scenario.comments()
    assert f"`{new[:7]}`" in comment["body"]


def test_a_broken_manifest_fails_the_status_and_names_the_file(scenario, bot, github):
    head = scenario.push_head({"apps/web.yaml": "apiVersion: apps/v1\nkind: [Deployment\n"})
    scenario.deliver(scenario.event("opened", head))
    bot.work()
    (comment,) = scenario.comments()
    assert "**Render failed:**" in comment["body"]
    assert "apps/web.yaml: at " in comment["body"] and "line 3, column 1" in comment["body"]
    assert "Traceback" not in comment["body"]
    assert github.statuses(REPO, head)[-1]["state"] == "failure"


def test_closing_cancels_pending_diffs(scenario, bot, github):
    head = scenario.push_head(HEAD_CHANGES)
    scenario.deliver(scenario.event("opened", head))
    closed = scenario.deliver(scenario.event("closed", head))
    assert closed.status == 200 and "cancelled" in closed.body["ignored"]
    bot.work()
    assert scenario.comments() == [] and github.statuses(REPO, head) == []


def test_events_the_bot_does_not_act_on_are_ignored_with_a_reason(scenario, bot):
    head = scenario.push_head(HEAD_CHANGES)
    labeled = scenario.deliver(scenario.event("labeled", head))
    assert labeled.status == 200 and "labeled" in labeled.body["ignored"]
    other = scenario.event("opened", head)
    other["repository"]["full_name"] = "someone/else"
    ignored = scenario.deliver(other)
    assert ignored.status == 200 and "someone/else" in ignored.body["ignored"]
    ping = scenario.deliver(payload("github/ping"), event="ping")
    assert ping.status == 200 and "ping" in ping.body["ignored"]
    assert bot.queued() == 0


@pytest.mark.parametrize("body, headers, status", [
    (b"{not json", {"X-GitHub-Event": "pull_request"}, 400),
    (b"{}", {}, 400),
])
def test_malformed_deliveries(bot, body, headers, status):
    signed = {"X-Hub-Signature-256": signature(SECRET, body), **headers}
    answer = bot.post("/webhooks/github", body, signed)
    assert answer.status == status and answer.body["error"]


def test_http_edges(bot):
    assert bot.get("/webhooks/github").status == 405
    assert bot.get("/healthz").status == 200
    assert bot.get("/readyz").status == 200
    big = b"x" * (25 * 1024 * 1024 + 1)
    answer = bot.post("/webhooks/github", big, {"X-GitHub-Event": "push"})
    assert answer.status == 413
