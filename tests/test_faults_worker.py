"""Faults while a job runs: its worker killed mid-job, the forge failing (5xx, dropped connections,
rate limits), the Kubernetes API failing mid-deploy. Work is retried and ends done exactly once, or
ends as a visible failure; never half done, never twice."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from rq.job import JobStatus

from bot.environments import EnvRef, Environments
from bot.forges.github import signature
from tests.conftest import payload
from tests.fakes.http import Reply
from tests.fakes.kube_api import FakeKubeAPI
from tests.harness import BASE_FILES, HEAD_CHANGES, Bot, PullRequestScenario, bot_env

REPO, SECRET, TOKEN = "acme/infra", "faults-secret", "faults-TOKEN-value-0123"
COMMENTS = r"/repos/acme/infra/issues/7/comments$"
STATUSES = r"/repos/acme/infra/statuses/"


@pytest.fixture
def kube():
    with FakeKubeAPI(namespaces=("default", "shop")) as fake:
        yield fake


@pytest.fixture
def bot(tmp_path: Path, redis_server, redis, github, kube):
    kubeconfig = kube.kubeconfig(str(tmp_path / "kubeconfig"))
    config = (f"repos: ['acme/*']\nclusters:\n  staging: {{kubeconfig: {kubeconfig}, context: {kube.context}, repos: ['*']}}\n"
              "deploy: {rollout_timeout: 10}\nreconcile: {interval: 0}\n")
    instance = Bot(bot_env(tmp_path, redis_server.url, config, GITHUB_WEBHOOK_SECRET=SECRET, GITHUB_TOKEN=TOKEN,
                           GITHUB_API_URL=github.url))
    yield instance
    instance.stop()


@pytest.fixture
def pr(remote, github, bot) -> PullRequestScenario:
    return PullRequestScenario(remote, github, bot, REPO, SECRET)


def open_pull_request(pr: PullRequestScenario) -> tuple[str, str]:
    """The head pushed and its webhook delivered: (head SHA, the diff job's id)."""
    head = pr.push_head(HEAD_CHANGES)
    (job,) = pr.deliver(pr.event("opened", head)).body["queued"]
    return head, job


def assert_one_diff_comment(pr: PullRequestScenario, head: str) -> None:
    (comment,) = pr.comments()
    assert f"diff for `{head[:7]}`" in comment["body"] and "**1 added, 2 changed, 0 removed**" in comment["body"]
    assert pr.github.statuses(REPO, head)[-1]["state"] == "success"


# -- a worker killed mid-job --------------------------------------------------------------------------

@pytest.mark.parametrize("method, path, skip", [("GET", COMMENTS, 0), ("POST", STATUSES, 1)],
                         ids=["listing-comments", "after-commenting"])
def test_a_diff_whose_worker_is_killed_runs_again_and_comments_once(pr, bot, github, method, path, skip):
    head, job = open_pull_request(pr)
    held = github.hold(method, path, skip)  # the job waits there, so the kill lands mid-job
    worker = bot.spawn_worker(burst=True)
    assert held.arrived.wait(60), "the job never reached the held request"
    bot.stop_worker(worker, signal.SIGKILL)
    held.open()
    assert bot.job(job).get_status() == JobStatus.STARTED  # abandoned: nobody will finish it

    bot.reap_abandoned()
    assert bot.job(job).get_status() == JobStatus.SCHEDULED  # its Retry, not a failure
    assert job in bot.release_retries()
    bot.work()
    assert bot.job(job).get_status() == JobStatus.FINISHED
    assert_one_diff_comment(pr, head)


# -- the forge failing --------------------------------------------------------------------------------

CLIENT_ATTEMPTS = 4
"""Tries of one request in the GitHub client (3 retries) before a 5xx or a dropped connection
reaches the job; an answer that asks to wait reaches it at once."""
FORGE_FAULTS = {  # (the answer, how many of them make the job fail once)
    "502": (Reply(502, {"message": "Server Error"}), CLIENT_ATTEMPTS),
    "dropped": (None, CLIENT_ATTEMPTS),
    "403-rate-limited": (Reply(403, {"message": "You have exceeded a secondary rate limit."}, {"Retry-After": "1"}), 1),
    "429": (Reply(429, {"message": "Too Many Requests"}, {"Retry-After": "1"}), 1),
}


@pytest.mark.parametrize("fault", list(FORGE_FAULTS))
def test_a_forge_failure_is_retried_until_the_forge_recovers(pr, bot, github, fault):
    head, job = open_pull_request(pr)
    github.fail("GET", COMMENTS, *FORGE_FAULTS[fault])
    bot.work()
    assert bot.job(job).get_status() == JobStatus.SCHEDULED and bot.job(job).retries_left == 2
    assert pr.comments() == []

    assert job in bot.release_retries()  # the forge has recovered by the time the retry runs
    bot.work()
    assert bot.job(job).get_status() == JobStatus.FINISHED
    assert_one_diff_comment(pr, head)


def test_a_forge_that_keeps_failing_ends_as_a_visible_failure(pr, bot, github):
    head, job = open_pull_request(pr)
    github.fail("GET", COMMENTS, FORGE_FAULTS["502"][0], times=1_000)
    worker = bot.spawn_worker()
    bot.wait_for([job], timeout=90, between=bot.release_retries, statuses=(JobStatus.FAILED,))
    log = bot.stop_worker(worker)

    assert bot.failed_jobs() == [job] and bot.job(job).retries_left == 0
    assert len(github.calls("GET", COMMENTS)) == 4 * CLIENT_ATTEMPTS  # the first run and its 3 retries
    failures = [line for line in log.splitlines() if job in line and "list comments" in line]
    assert failures, log[-3000:]
    assert pr.comments() == [] and github.statuses(REPO, head)[-1]["state"] == "pending"


def test_a_retry_after_is_waited_out_by_the_queue_not_by_the_worker(pr, bot, github):
    wait = 30
    head, job = open_pull_request(pr)
    github.fail("GET", COMMENTS, Reply(429, {"message": "Too Many Requests"}, {"Retry-After": str(wait)}),
                times=1_000)
    started = time.time()  # the retry is due no earlier than the failure, after this, plus the wait
    worker = bot.spawn_worker(burst=True)
    deadline = time.monotonic() + 10
    while bot.job(job).get_status() != JobStatus.SCHEDULED:
        assert time.monotonic() < deadline, "the worker is waiting out the rate limit itself"
        time.sleep(0.1)
    bot.stop_worker(worker)

    github.clear_faults()  # the forge recovers...
    retries = bot.release_retries()
    assert retries[job] >= int(started) + wait  # ...and was not due before the forge said (RQ keeps seconds)
    bot.work()
    assert_one_diff_comment(pr, head)


# -- the Kubernetes API failing mid-deploy ------------------------------------------------------------

FILES = {".gitops.yaml": "environments:\n  staging: {branch: main, path: apps, cluster: staging, namespace: shop}\n",
         **BASE_FILES}


def push(remote, bot: Bot, files: dict[str, str], number: int) -> str:
    sha = remote.commit("main", files, f"push {number}")
    body = payload("github/push.branch")
    body["repository"].update(full_name=REPO, clone_url=remote.url, default_branch="main")
    body.update(ref="refs/heads/main", after=sha)
    raw = json.dumps(body).encode()
    answer = bot.post("/webhooks/github", raw, {"X-GitHub-Event": "push", "X-GitHub-Delivery": f"push-{number}",
                                                "X-Hub-Signature-256": signature(SECRET, raw)})
    assert answer.status == 202
    bot.work()
    return sha


def test_a_kubernetes_failure_mid_deploy_is_recorded_and_the_next_deploy_works(remote, bot, github, kube):
    github.add_repo(REPO, clone_url=remote.url)
    kube.inject("PATCH", r"/namespaces/shop/configmaps/settings$", 503, times=3)  # the client's tries, all
    failed = push(remote, bot, FILES, 1)
    envs, ref = Environments(bot.redis, bot.settings.name), EnvRef("github", REPO, "staging")
    (record,) = envs.history(ref)
    assert (record.sha, record.result) == (failed, "failure")
    assert record.error == "apply ConfigMap shop/settings: ServiceUnavailable (503)"
    status = envs.status(ref)
    assert status.deploying is None and status.deployed is None  # the lock was released
    (deployment,) = github.deployments[REPO]
    assert github.deployment_statuses[deployment["id"]][-1]["state"] == "failure"

    fixed = push(remote, bot, {"apps/config.yaml": BASE_FILES["apps/config.yaml"].replace("fast", "safe")}, 2)
    assert envs.status(ref).deployed.sha == fixed and envs.history(ref)[0].result == "success"
    assert kube.get("", "ConfigMap", "shop", "settings")["data"] == {"mode": "safe"}
    assert bot.failed_jobs() == []
