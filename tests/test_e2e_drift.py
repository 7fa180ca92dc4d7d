"""Drift end to end: a merge deploys, someone edits the cluster with the real kubectl, and the
reconcile run (the real CLI, a real worker, real Redis and git, the Kubernetes API and GitHub stood
in for) reports it on the forge, the dashboard and /metrics, and heals it where asked."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from bot.environments import EnvRef, Environments
from bot.forges.github import signature
from tests.conftest import payload
from tests.harness import ROOT, Bot, bot_env
from tests.test_e2e_deploy import FILES, NS, PROJECT, REPO, SECRET, TOKEN, kube, merge, server_config  # noqa: F401

KUBECTL = Path(sys.executable).parent / "kubectl"


def deployed_bot(tmp_path, remote, redis_server, kube, github, files: dict | None = None) -> tuple[Bot, str]:
    """A bot whose merge of pull request 7 deployed `staging`."""
    bot = Bot(bot_env(tmp_path, redis_server.url, server_config(tmp_path, kube, "acme/*"),
                      GITHUB_WEBHOOK_SECRET=SECRET, GITHUB_TOKEN=TOKEN, GITHUB_API_URL=github.url))
    sha = merge(remote)
    if files:
        sha = remote.commit("main", files, "settings")
    github.add_repo(REPO, clone_url=remote.url)
    push = payload("github/push.branch")
    push["repository"].update({"full_name": REPO, "name": "infra", "clone_url": remote.url, "default_branch": "main"})
    push.update(ref="refs/heads/main", after=sha)
    raw = json.dumps(push).encode()
    answer = bot.post("/webhooks/github", raw, {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d1",
                                                "X-Hub-Signature-256": signature(SECRET, raw)})
    assert answer.status == 202, answer.body
    bot.work()
    assert kube.get("", "ConfigMap", NS, "settings")["data"] == {"mode": "fast"}
    return bot, sha


def kubectl(kube, tmp_path, *args: str) -> None:
    config = kube.kubeconfig(str(tmp_path / "operator.kubeconfig"))
    subprocess.run([str(KUBECTL), "--kubeconfig", config, "-n", NS, *args], check=True, capture_output=True,
                   timeout=60)


def reconcile(bot: Bot) -> None:
    run = subprocess.run([sys.executable, "-m", "bot", "reconcile"], cwd=ROOT, env=bot.env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"sync check queued: {REPO} staging" in run.stdout
    bot.work()


def sync_statuses(github, sha: str) -> list[tuple[str, str]]:
    return [(s["state"], s["description"]) for s in github.statuses(REPO, sha) if s["context"] == "gitops-bot/sync"]


def metrics(bot: Bot) -> str:
    with urllib.request.urlopen(bot.url + "/metrics", timeout=10) as response:
        return response.read().decode()


def test_a_hand_edit_is_reported_on_the_commit_the_dashboard_and_metrics(tmp_path, remote, redis_server, redis,
                                                                         kube, github):
    bot, sha = deployed_bot(tmp_path, remote, redis_server, kube, github)
    try:
        assert sync_statuses(github, sha) == []  # the deploy found it in sync: nothing to say yet
        reconcile(bot)
        ((state, description),) = sync_statuses(github, sha)
        assert state == "success" and description.startswith("in sync: 4 objects")

        kubectl(kube, tmp_path, "patch", "configmap", "settings", "--type=merge", "-p", '{"data": {"mode": "slow"}}')
        reconcile(bot)
        state, description = sync_statuses(github, sha)[-1]
        assert state == "failure" and "ConfigMap" in description and "settings" in description
        assert kube.get("", "ConfigMap", NS, "settings")["data"] == {"mode": "slow"}  # `report` only reports

        (row,) = bot.get("/api/environments").body
        assert row["sync"]["state"] == "drifted" and row["sync"]["drifted"][0]["fields"] == ["data.mode"]
        assert row["sync"]["drifted"][0]["managers"] == ["kubectl-patch"]
        text = metrics(bot)
        assert f'gitops_bot_environment_in_sync{{environment="staging",forge="github",repo="{REPO}"}} 0.0' in text
        assert f'gitops_bot_environment_drifted_objects{{environment="staging",forge="github",repo="{REPO}"}} 1.0' \
            in text

        reconcile(bot)  # nothing new: the forge is not told again
        assert len(sync_statuses(github, sha)) == 2
        assert bot.failed_jobs() == []
    finally:
        bot.stop()


def test_drift_heal_reapplies_and_records_a_deploy_by_the_bot(tmp_path, remote, redis_server, redis, kube, github):
    files = {**FILES, ".gitops.yaml": FILES[".gitops.yaml"].replace("prune: true", "prune: true, drift: heal")}
    bot, sha = deployed_bot(tmp_path, remote, redis_server, kube, github, files)
    try:
        kubectl(kube, tmp_path, "patch", "configmap", "settings", "--type=merge", "-p", '{"data": {"mode": "slow"}}')
        kubectl(kube, tmp_path, "delete", "secret", "db")
        reconcile(bot)
        assert kube.get("", "ConfigMap", NS, "settings")["data"] == {"mode": "fast"}
        assert kube.get("", "Secret", NS, "db") is not None
        envs = Environments(redis, "gitops-bot")
        ref = EnvRef("github", REPO, "staging")
        healed = envs.history(ref)[0]
        assert (healed.heal, healed.actor, healed.sha, healed.result) == (True, "gitops-bot", sha, "success")
        assert (healed.created, healed.changed) == (1, 1)
        assert envs.deployed(ref).actor != "gitops-bot"  # the deploy of record stays the merge's
        sync = envs.sync(ref)
        assert sync.state == "in_sync" and sync.healed
        assert bot.failed_jobs() == []
    finally:
        bot.stop()


def test_gitlab_shows_drift_as_a_commit_status_too(tmp_path, remote, redis_server, redis, kube, gitlab):
    bot = Bot(bot_env(tmp_path, redis_server.url, server_config(tmp_path, kube, "group/sub/*"),
                      GITLAB_WEBHOOK_TOKEN=SECRET, GITLAB_TOKEN=TOKEN, GITLAB_URL=gitlab.url))
    try:
        sha = merge(remote)
        gitlab.add_project(PROJECT, http_url_to_repo=remote.url)
        push = payload("gitlab/push")
        push["project"].update({"path_with_namespace": PROJECT, "git_http_url": remote.url, "http_url": remote.url,
                                "default_branch": "main", "web_url": f"{gitlab.url}/{PROJECT}"})
        push.update(ref="refs/heads/main", after=sha, checkout_sha=sha)
        answer = bot.post("/webhooks/gitlab", json.dumps(push).encode(), {
            "X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": "uuid-1", "X-Gitlab-Token": SECRET})
        assert answer.status == 202, answer.body
        bot.work()
        kubectl(kube, tmp_path, "scale", "deployment", "web", "--replicas=5")
        run = subprocess.run([sys.executable, "-m", "bot", "reconcile"], cwd=ROOT, env=bot.env, capture_output=True,
                             text=True, timeout=120)
        assert f"sync check queued: {PROJECT} staging" in run.stdout, run.stderr
        bot.work()
        (status,) = [s for s in gitlab.statuses(PROJECT, sha) if s["name"] == "gitops-bot/sync"]
        assert status["status"] == "failed" and "Deployment shop/web" in status["description"]
        assert bot.failed_jobs() == []
    finally:
        bot.stop()


def test_heal_leaves_what_it_cannot_heal_and_does_not_repeat_a_failure(tmp_path, remote, redis_server, redis, kube,
                                                                        github):
    files = {**FILES, ".gitops.yaml": FILES[".gitops.yaml"].replace("prune: true", "prune: false, drift: heal")}
    bot, sha = deployed_bot(tmp_path, remote, redis_server, kube, github, files)
    envs, ref = Environments(redis, "gitops-bot"), EnvRef("github", REPO, "staging")
    try:
        leftover = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": "old", "namespace": NS, "labels": {"gitops-bot.io/inventory": kube.get(
                "", "ConfigMap", NS, "settings")["metadata"]["labels"]["gitops-bot.io/inventory"]},
            "annotations": {"gitops-bot.io/inventory-id": f"gitops-bot:github:{REPO}:staging"}}}
        (tmp_path / "old.json").write_text(json.dumps(leftover))
        kubectl(kube, tmp_path, "apply", "--server-side", "--field-manager=someone", "-f", str(tmp_path / "old.json"))
        reconcile(bot)
        assert envs.sync(ref).state == "drifted" and envs.history(ref)[0].heal is False  # prune is off: nothing to do

        kubectl(kube, tmp_path, "patch", "configmap", "settings", "--type=merge", "-p", '{"data": {"mode": "slow"}}')
        kube.inject("PATCH", r"/configmaps/settings$", 422, times=1_000)
        reconcile(bot)
        reconcile(bot)
        heals = [r for r in envs.history(ref) if r.heal]
        assert len(heals) == 1 and heals[0].result == "failure"  # tried once, not on every run
        assert bot.failed_jobs() == []
    finally:
        bot.stop()
