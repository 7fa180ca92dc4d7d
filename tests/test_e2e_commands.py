"""Slash commands end to end, on both forges: a comment's webhook, the real web app, a real worker, real
Redis and git, and the forge and the Kubernetes API stood in for."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import git
from tests.fakes.github_api import FakeGitHub
from tests.fakes.kube_api import FakeKubeAPI
from tests.harness import (BASE_FILES, HEAD_CHANGES, ForgeScenario, MergeRequestScenario, PullRequestScenario,
                           bot_on_forge)

SECRET, TOKEN = "e2e-webhook-secret", "e2e-TOKEN-value-0123456789"
NS = "shop"
FILES = {
    ".gitops.yaml": f"environments:\n  staging: {{branch: main, path: apps, cluster: staging, namespace: {NS}, "
                    "prune: true, deployers: write, require: [approved, mergeable]}\n",
    "apps/namespace.yaml": f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n",
    **BASE_FILES,
}


@pytest.fixture
def kube() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as fake:
        yield fake


@pytest.fixture(params=["github", "gitlab"])
def scenario(request, tmp_path: Path, remote, redis_server, redis, kube) -> Iterator[ForgeScenario]:
    kubeconfig = kube.kubeconfig(str(tmp_path / "staging.kubeconfig"))
    config = (f"repos: ['acme/*', 'group/sub/*']\nclusters:\n  staging: {{kubeconfig: {kubeconfig}, "
              f"context: {kube.context}, repos: ['*']}}\ndeploy: {{rollout_timeout: 10}}\n")
    with contextlib.ExitStack() as stack:
        forge, bot = bot_on_forge(stack, request.param, tmp_path, redis_server.url, config, SECRET, TOKEN)
        if isinstance(forge, FakeGitHub):
            yield PullRequestScenario(remote, forge, bot, "acme/infra", SECRET, files=FILES)
        else:
            yield MergeRequestScenario(remote, forge, bot, "group/sub/infra", SECRET, files=FILES)
        assert bot.failed_jobs() == []
        for text in [*bot.logs, *forge.posted_texts()]:  # never a credential in a log line or a reply
            assert TOKEN not in text and SECRET not in text
    assert forge.errors == []


def replicas(kube: FakeKubeAPI) -> int | None:
    web = kube.get("apps", "Deployment", NS, "web")
    return web["spec"]["replicas"] if web else None


def test_help_answers_with_the_commands_and_this_repositorys_environments(scenario):
    scenario.push_head(HEAD_CHANGES)
    answer, comment = scenario.comment("/help\n/frobnicate")
    assert answer.status == 202
    scenario.bot.work()

    (reply,) = scenario.replies()
    assert "> /help\n" in reply and "| `/rollback ENV [SHA]` | the environment's deployers |" in reply
    assert "| `staging` | `main` | `apps` | write or above | approved, mergeable |" in reply
    assert "> /frobnicate\n\n❓ `/frobnicate` is not a command I know; `/help` lists those I do." in reply
    assert scenario.reactions(comment) == ["eyes", "confused"]


def test_a_deploy_without_the_permission_is_refused_with_the_reason_and_nothing_is_merged(scenario, kube):
    scenario.push_head(HEAD_CHANGES)
    scenario.grant("mallory", "triage")
    scenario.grant("bob", "write")
    scenario.approve("bob")
    _, comment = scenario.comment("/deploy staging", author="mallory")
    scenario.bot.work()

    (reply,) = scenario.replies()
    assert "⛔ /deploy on staging needs write permission; you have triage." in reply
    assert not scenario.merged() and replicas(kube) is None
    assert scenario.reactions(comment) == ["eyes", "-1"]


def test_a_deploy_merges_then_deploys_and_reports_once(scenario, kube):
    head = scenario.push_head(HEAD_CHANGES)
    scenario.grant("alice", "write")
    scenario.grant("bob", "write")
    scenario.approve("bob")
    scenario.merge_for_real()
    _, comment = scenario.comment("/deploy")  # the base branch deploys one environment: that one
    scenario.bot.work()

    merge = scenario.remote.show("main")
    assert scenario.merged() and git(scenario.remote.bare, "rev-parse", f"{merge}^2") == head
    assert replicas(kube) == 3 and kube.get("", "Service", NS, "web")
    answer, result = scenario.replies()
    assert f"> /deploy\n\n🚀 Merged as `{merge[:7]}`. Deploying `staging` now" in answer
    assert f"Deploy of `{merge[:7]}` to `staging` succeeded" in result
    assert scenario.reactions(comment) == ["eyes", "+1"]

    scenario.deliver_merge(merge)  # the forge's own webhooks for the merge ask for the same deploy
    scenario.bot.work()
    assert scenario.replies() == [answer, result]


def test_a_lock_holds_a_merge_as_pending_and_the_unlock_deploys_it(scenario, kube):
    scenario.push_head(HEAD_CHANGES)
    scenario.grant("alice", "maintain")
    scenario.comment("/lock staging release freeze\n/status")
    scenario.bot.work()
    (locked,) = scenario.replies()
    assert "🔒 `staging` is locked by @alice: release freeze." in locked
    assert re.search(r"\| `staging` \| `main` \| never \|.*\| 🔒 @alice: release freeze \|", locked)
    (row,) = scenario.bot.get("/api/environments").body  # and on the dashboard
    assert (row["environment"], row["lock"]["actor"], row["lock"]["reason"]) == ("staging", "alice", "release freeze")

    merge = scenario.remote.merge("feature", "main", "Merge from the forge's button")
    scenario.deliver_merge(merge)
    scenario.bot.work()
    assert f"Deploy of `{merge[:7]}` to `staging` is pending" in scenario.replies()[-1]
    assert replicas(kube) is None

    _, comment = scenario.comment("/unlock staging")
    scenario.bot.work()
    unlocked, result = scenario.replies()[-2:]
    assert f"🔓 `staging` is unlocked. Deploying `{merge[:7]}`, which landed while it was locked" in unlocked
    assert f"Deploy of `{merge[:7]}` to `staging` succeeded" in result
    assert replicas(kube) == 3
    assert scenario.reactions(comment) == ["eyes", "+1"]


def test_a_rollback_commits_the_previous_revision_on_the_branch_and_deploys_it(scenario, kube):
    scenario.push_head(HEAD_CHANGES)
    scenario.grant("alice", "write")
    scenario.deliver_push(scenario.base_sha)
    merge = scenario.remote.merge("feature", "main", "Merge")
    scenario.deliver_merge(merge)
    scenario.bot.work()
    assert replicas(kube) == 3

    _, comment = scenario.comment("/rollback staging")
    scenario.bot.work()

    rollback = scenario.remote.show("main")
    assert git(scenario.remote.bare, "rev-parse", f"{rollback}^") == merge  # a new commit: history is kept
    assert git(scenario.remote.bare, "diff", "--name-only", scenario.base_sha, rollback, "--", "apps") == ""
    assert git(scenario.remote.bare, "log", "-1", "--format=%an|%s", rollback) == \
        f"gitops-bot|Roll back staging to {scenario.base_sha[:12]}"
    assert replicas(kube) == 1 and kube.get("", "Service", NS, "web") is None  # pruned
    answer, result = scenario.replies()[-2:]
    assert f"⏪ Committed `{rollback[:7]}` on `main`: `apps` as it was at `{scenario.base_sha[:7]}`" in answer
    assert f"Deploy of `{rollback[:7]}` to `staging` succeeded" in result
    assert scenario.reactions(comment) == ["eyes", "+1"]


def test_comments_that_ask_nothing_cost_nothing(scenario):
    scenario.push_head(HEAD_CHANGES)
    for body, edited, reason in [("```\n/deploy staging\n```", False, "no command"),
                                 ("> /deploy staging", False, "no command"),
                                 ("/deploy staging", True, "edited")]:
        answer, _ = scenario.comment(body, edited=edited)
        assert answer.status == 200 and reason in answer.body["ignored"]
    assert scenario.bot.queued() == 0

    _, own = scenario.comment("/help", author="gitops-bot")  # the bot's own words never command it
    scenario.bot.work()
    assert scenario.replies() == ["/help"] and scenario.reactions(own) == []
