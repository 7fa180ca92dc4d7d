"""Merge to deploy, end to end: a merged pull request's webhook, the real web app, a real worker, real
Redis and git, the Kubernetes API stood in for, and GitHub or GitLab stood in for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.forges.github import signature
from tests.conftest import GitRemote, payload
from tests.fakes.kube_api import FakeKubeAPI
from tests.harness import BASE_FILES, PASSWORD_BASE, Bot, bot_env

SECRET, TOKEN = "e2e-webhook-secret", "e2e-TOKEN-value-0123456789"
NS = "shop"
FILES = {
    ".gitops.yaml": f"environments:\n  staging: {{branch: main, path: apps, cluster: staging, namespace: {NS}, "
                    "prune: true}\n",
    "apps/namespace.yaml": f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n",
    **BASE_FILES,
}


@pytest.fixture
def kube():
    with FakeKubeAPI() as fake:
        yield fake


def server_config(tmp_path: Path, kube: FakeKubeAPI, repos: str) -> str:
    kubeconfig = kube.kubeconfig(str(tmp_path / "staging.kubeconfig"))
    return (f"repos: [{repos!r}]\nclusters:\n  staging: {{kubeconfig: {kubeconfig}, context: {kube.context}, repos: ['*']}}\n"
            "deploy: {rollout_timeout: 10}\n")


def merge(remote: GitRemote) -> str:
    """The main branch before and after a pull request landed on it: the merge commit's SHA."""
    remote.commit("main", FILES, "base")
    return remote.commit("main", {"apps/web.yaml": BASE_FILES["apps/web.yaml"].replace("replicas: 1", "replicas: 2")},
                         "Merge pull request #7")


def assert_deployed(kube: FakeKubeAPI, bot: Bot) -> None:
    assert kube.get("apps", "Deployment", NS, "web")["spec"]["replicas"] == 2
    assert kube.get("", "Secret", NS, "db") and kube.get("", "ConfigMap", NS, "settings")
    assert len(kube.writes()) == 4  # once, although the merge and its push both asked
    assert bot.failed_jobs() == []
    for log in bot.logs:
        assert TOKEN not in log and SECRET not in log


def assert_reply(body: str, sha: str) -> None:
    assert body.startswith("<!-- gitops-bot:deploy:gitops-bot -->")
    assert f"Deploy of `{sha[:7]}` to `staging` succeeded" in body
    assert "| 4 | 0 | 0 | 0 |" in body and PASSWORD_BASE not in body


# -- GitHub -------------------------------------------------------------------------------------------
REPO = "acme/infra"


def test_github_merged_pull_request_deploys_and_replies(tmp_path, remote, redis_server, redis, kube, github):
    bot = Bot(bot_env(tmp_path, redis_server.url, server_config(tmp_path, kube, "acme/*"),
                      GITHUB_WEBHOOK_SECRET=SECRET, GITHUB_TOKEN=TOKEN, GITHUB_API_URL=github.url))
    try:
        sha = merge(remote)
        github.add_repo(REPO, clone_url=remote.url)
        github.add_pull(REPO, 7, head_sha="f" * 40, head_ref="feature", state="closed")
        repository = {"full_name": REPO, "name": "infra", "clone_url": remote.url, "default_branch": "main"}
        merged = payload("github/pull_request.closed.merged")
        merged["repository"].update(repository)
        merged["number"] = 7
        merged["pull_request"].update(number=7, merge_commit_sha=sha)
        merged["pull_request"]["base"].update(ref="main")
        push = payload("github/push.branch")
        push["repository"].update(repository)
        push.update(ref="refs/heads/main", after=sha)

        for i, (event, body) in enumerate([("pull_request", merged), ("push", push)]):
            raw = json.dumps(body).encode()
            answer = bot.post("/webhooks/github", raw, {"X-GitHub-Event": event, "X-GitHub-Delivery": f"d{i}",
                                                        "X-Hub-Signature-256": signature(SECRET, raw)})
            assert answer.status == 202, answer.body
        bot.work()

        assert_deployed(kube, bot)
        (deployment,) = github.deployments[REPO]
        assert (deployment["environment"], deployment["sha"]) == ("staging", sha)
        states = [s["state"] for s in github.deployment_statuses[deployment["id"]]]
        assert states == ["in_progress", "success"]
        (reply,) = github.comments(REPO, 7)
        assert_reply(reply["body"], sha)
    finally:
        bot.stop()


# -- GitLab -------------------------------------------------------------------------------------------
PROJECT = "group/sub/infra"


def test_gitlab_merged_merge_request_deploys_and_replies(tmp_path, remote, redis_server, redis, kube, gitlab):
    bot = Bot(bot_env(tmp_path, redis_server.url, server_config(tmp_path, kube, "group/sub/*"),
                      GITLAB_WEBHOOK_TOKEN=SECRET, GITLAB_TOKEN=TOKEN, GITLAB_URL=gitlab.url))
    try:
        sha = merge(remote)
        gitlab.add_project(PROJECT, http_url_to_repo=remote.url)
        gitlab.add_mr(PROJECT, 7, "feature", "main", "f" * 40)
        project = {"path_with_namespace": PROJECT, "git_http_url": remote.url, "http_url": remote.url,
                   "default_branch": "main", "web_url": f"{gitlab.url}/{PROJECT}"}
        merged = payload("gitlab/merge_request.open")
        for part in (merged["project"], merged["object_attributes"]["source"], merged["object_attributes"]["target"]):
            part.update(project)
        merged["object_attributes"].update(action="merge", state="merged", iid=7, target_branch="main",
                                           source_branch="feature", merge_commit_sha=sha)
        push = payload("gitlab/push")
        push["project"].update(project)
        push.update(ref="refs/heads/main", after=sha, checkout_sha=sha)

        for i, (event, body) in enumerate([("Merge Request Hook", merged), ("Push Hook", push)]):
            answer = bot.post("/webhooks/gitlab", json.dumps(body).encode(), {
                "X-Gitlab-Event": event, "X-Gitlab-Event-UUID": f"uuid-{i}", "X-Gitlab-Token": SECRET})
            assert answer.status == 202, answer.body
        bot.work()

        assert_deployed(kube, bot)
        (deployment,) = gitlab.deployments[PROJECT]
        assert (deployment["environment"]["name"], deployment["sha"], deployment["ref"]) == ("staging", sha, "main")
        assert deployment["status"] == "success"
        (reply,) = gitlab.notes(PROJECT, 7)
        assert_reply(reply["body"], sha)
    finally:
        bot.stop()
