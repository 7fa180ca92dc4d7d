"""Missed webhooks: `gitops-bot reconcile` finds pull requests without a diff and environments behind."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from rq.registry import ScheduledJobRegistry

from bot.environments import EnvRef, Environments
from bot.events import Repo
from bot.queue import Plan
from bot.reconcile import schedule
from tests.fakes.github_api import FakeGitHub
from tests.fakes.http import RecordingServer, Reply
from tests.fakes.kube_api import FakeKubeAPI, status_body
from tests.harness import BASE_FILES, HEAD_CHANGES, ROOT, Bot, PullRequestScenario, bot_env

REPO, SECRET = "acme/infra", "reconcile-secret"
CONFIG = ".gitops.yaml"


@pytest.fixture
def setup(tmp_path: Path, remote, redis_server, redis):
    with FakeGitHub(bot_login="gitops-bot") as github, FakeKubeAPI() as kube:
        kubeconfig = kube.kubeconfig(str(tmp_path / "kubeconfig"))
        config = f'repos: ["acme/*"]\nclusters:\n  staging: {{kubeconfig: {kubeconfig}, context: {kube.context}, repos: ["*"]}}\n'
        bot = Bot(bot_env(tmp_path, redis_server.url, config, GITHUB_WEBHOOK_SECRET=SECRET,
                          GITHUB_TOKEN="ghp_reconcileTOKEN01234567", GITHUB_API_URL=github.url))
        yield bot, github, kube, remote
        bot.stop()


def reconcile(bot: Bot) -> str:
    result = subprocess.run([sys.executable, "-m", "bot", "reconcile"], cwd=ROOT, env=bot.env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_a_dropped_pull_request_webhook_is_caught_up(setup):
    bot, github, _, remote = setup
    seen = PullRequestScenario(remote, github, bot, REPO, SECRET, number=1)
    seen.deliver(seen.event("opened", seen.push_head(HEAD_CHANGES)))  # makes the repository known
    bot.work()

    dropped = PullRequestScenario(remote, github, bot, REPO, SECRET, number=2)
    head = dropped.push_head({"apps/extra.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\n"})
    assert dropped.comments() == []  # its webhook never arrived

    assert reconcile(bot) == f"diff queued: {REPO}#2 at {head[:7]}\n"
    bot.work()
    (comment,) = dropped.comments()
    assert "<code>+ ConfigMap extra</code>" in comment["body"]
    assert len(seen.comments()) == 1
    assert reconcile(bot) == "nothing missed\n"


def test_an_environment_behind_its_branch_is_deployed_unless_locked(setup, redis):
    bot, github, kube, remote = setup
    files = {CONFIG: "environments:\n  staging: {branch: main, path: apps, cluster: staging, namespace: shop}\n",
             "apps/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n", **BASE_FILES}
    pr = PullRequestScenario(remote, github, bot, REPO, SECRET, number=1)
    pr.deliver(pr.event("opened", pr.push_head(HEAD_CHANGES)))  # makes the repository known
    bot.work()
    head = remote.commit("main", files, "a push whose webhook was lost")

    env = EnvRef("github", REPO, "staging")
    Environments(redis, "gitops-bot").lock(env, "alice", "freeze")
    assert "deploy queued" not in reconcile(bot)
    Environments(redis, "gitops-bot").unlock(env)

    assert f"deploy queued: {REPO} staging at {head[:7]}" in reconcile(bot)
    bot.work()
    assert kube.get("apps", "Deployment", "shop", "web") is not None
    assert Environments(redis, "gitops-bot").deployed(env).sha == head
    assert "deploy queued" not in reconcile(bot)


def test_one_periodic_run_is_scheduled_however_many_workers_start(redis):
    from bot.queue import Store

    store = Store(redis, "gitops-bot")
    assert schedule(store, 600) is True
    assert schedule(store, 600) is False
    assert ScheduledJobRegistry(queue=store.queue("diff")).count == 1
    assert schedule(store, 0) is False  # turned off


def test_a_repository_known_with_a_clone_url_off_the_forge_is_reported_never_fetched(setup):
    """Known from a delivery taken before clone URLs were checked: reconcile must not send it the token."""
    bot, github, _, remote = setup
    pr = PullRequestScenario(remote, github, bot, REPO, SECRET, number=1)
    pr.push_head(HEAD_CHANGES)  # open, and without a diff: reconcile would queue one
    with RecordingServer() as evil:
        elsewhere = evil.url
        repo = Repo("github", REPO, f"{elsewhere}/acme/infra.git", "main")
        bot.store.accept(repo, "before-the-check", Plan(ignored="recorded"), {"repo": REPO})
        result = subprocess.run([sys.executable, "-m", "bot", "reconcile"], cwd=ROOT, env=bot.env,
                                capture_output=True, text=True, timeout=120)
        assert evil.requests == []
    assert result.returncode == 1 and result.stdout == (
        f"error: {REPO}: {REPO} is not fetched: its clone URL is on {elsewhere}, not on the forge, {github.url}\n")
    assert bot.queued() == 0


def test_a_branch_naming_itself_an_environment_is_not_caught_up(setup):
    bot, github, kube, remote = setup
    files = {**BASE_FILES, CONFIG: "environments:\n  preview: {branch: sneaky, path: apps}\n"}  # diffs only
    pr = PullRequestScenario(remote, github, bot, REPO, SECRET, number=1, files=files)
    pr.deliver(pr.event("opened", pr.push_head(HEAD_CHANGES)))  # makes the repository known
    bot.work()
    remote.commit("sneaky", {CONFIG: "environments:\n  preview: {branch: sneaky, path: apps, cluster: staging, "
                                     "namespace: shop}\n"}, "give myself a cluster", parent="main")
    assert reconcile(bot) == "nothing missed\n"  # main's .gitops.yaml gives `preview` no cluster
    bot.work()
    assert kube.writes() == []


# -- a deploy of the head that failed: reconcile's words match what it does ---------------------------

ENV_FILES = {CONFIG: "environments:\n  staging: {branch: main, path: apps, cluster: staging, namespace: shop}\n",
             "apps/namespace.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n", **BASE_FILES}
SETTINGS = r"/namespaces/shop/configmaps/settings$"


def known_repository_with_a_lost_push(bot: Bot, github: FakeGitHub, remote) -> str:
    pr = PullRequestScenario(remote, github, bot, REPO, SECRET, number=1)
    pr.deliver(pr.event("opened", pr.push_head(HEAD_CHANGES)))  # makes the repository known
    bot.work()
    return remote.commit("main", ENV_FILES, "a push whose webhook was lost")


def test_a_head_whose_deploy_failed_as_the_cluster_meant_is_not_queued_and_reconcile_says_why(setup):
    bot, github, kube, remote = setup
    head = known_repository_with_a_lost_push(bot, github, remote)
    kube.fail("PATCH", SETTINGS, Reply(422, status_body(422, "Invalid", "data: Invalid value")), times=1_000)
    assert reconcile(bot) == f"deploy queued: {REPO} staging at {head[:7]}\n"
    bot.work()

    assert reconcile(bot) == (
        f"deploy not queued: {REPO} staging at {head[:7]}: its deploy failed: apply ConfigMap shop/settings: "
        "Invalid (422); a new commit, or `gitops-bot deploy --env staging`, deploys it again\n")
    assert bot.queued() == 0


def test_a_head_awaiting_its_retry_is_left_to_it_and_one_whose_retry_is_gone_is_queued_for_real(setup, redis):
    bot, github, kube, remote = setup
    head = known_repository_with_a_lost_push(bot, github, remote)
    kube.inject("PATCH", SETTINGS, 503, times=1_000)
    assert reconcile(bot) == f"deploy queued: {REPO} staging at {head[:7]}\n"
    bot.work()

    env = EnvRef("github", REPO, "staging")
    retry = Environments(redis, "gitops-bot").run(env, head).retry_by
    assert bot.job(retry).get_status() == "scheduled"
    assert reconcile(bot) == (f"deploy not queued: {REPO} staging at {head[:7]}: try 1 failed: apply ConfigMap "
                              "shop/settings: ServiceUnavailable (503); its retry is scheduled\n")
    assert bot.queued() == 0

    bot.job(retry).delete()  # lost, as if the queue's data were
    kube.clear_faults()
    assert reconcile(bot) == f"deploy queued: {REPO} staging at {head[:7]}\n"
    bot.work()
    deployed = Environments(redis, "gitops-bot").deployed(env)
    assert (deployed.sha, deployed.attempt, deployed.created) == (head, 2, 4)  # the Namespace and Secret by try 1
    assert reconcile(bot) == f"sync check queued: {REPO} staging\nnothing missed\n"  # a deployed one is checked


def cut_short(redis, head: str, times: int) -> None:
    """Tries of `head` whose workers died mid-deploy, their locks since expired."""
    envs = Environments(redis, "gitops-bot", lock_ttl=0.1)
    for i in range(times):
        assert envs.start(envs.acquire(EnvRef("github", REPO, "staging"), head, f"killed-{i}")) == i + 1
        time.sleep(0.2)


def test_a_head_whose_deploy_was_cut_short_is_queued_to_resume_until_its_tries_are_spent(setup, redis):
    bot, github, kube, remote = setup
    head = known_repository_with_a_lost_push(bot, github, remote)
    cut_short(redis, head, 1)
    assert reconcile(bot) == f"deploy queued: {REPO} staging at {head[:7]}\n"
    bot.work()
    assert Environments(redis, "gitops-bot").deployed(EnvRef("github", REPO, "staging")).attempt == 2

    head = remote.commit("main", {"apps/config.yaml": BASE_FILES["apps/config.yaml"].replace("fast", "safe")})
    cut_short(redis, head, 4)
    assert reconcile(bot) == (f"deploy not queued: {REPO} staging at {head[:7]}: its deploy was cut short 4 times "
                              "(its worker stopped); a new commit, or `gitops-bot deploy --env staging`, deploys it "
                              f"again\nsync check queued: {REPO} staging\n")
    assert bot.queued() == 1  # the check of what is deployed, and no deploy
