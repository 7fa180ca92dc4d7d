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
from tests.fakes.kube_api import FakeKubeAPI, status_body
from tests.harness import BASE_FILES, HEAD_CHANGES, Bot, MergeRequestScenario, PullRequestScenario, bot_env

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


def deliver_push(remote, bot: Bot, files: dict[str, str], number: int) -> tuple[str, str]:
    """A commit on main and its push webhook: (its SHA, the deploy job's id)."""
    sha = remote.commit("main", files, f"push {number}")
    body = payload("github/push.branch")
    body["repository"].update(full_name=REPO, clone_url=remote.url, default_branch="main")
    body.update(ref="refs/heads/main", after=sha)
    raw = json.dumps(body).encode()
    answer = bot.post("/webhooks/github", raw, {"X-GitHub-Event": "push", "X-GitHub-Delivery": f"push-{number}",
                                                "X-Hub-Signature-256": signature(SECRET, raw)})
    assert answer.status == 202
    (job,) = answer.body["queued"]
    return sha, job


CONFIGMAP = r"/namespaces/shop/configmaps/settings$"
BRIEF_CLUSTER_FAULTS = {  # what the Kubernetes API answers a while, and the error the history keeps
    "503": (dict(status=503), "apply ConfigMap shop/settings: ServiceUnavailable (503)"),
    "429": (dict(status=429), "apply ConfigMap shop/settings: TooManyRequests (429)"),
    "dropped": (dict(drop=True), "apply ConfigMap shop/settings: cluster 'staging' is unreachable (ProtocolError)"),
}


def history(bot: Bot) -> list[tuple[str, int, bool, str | None]]:
    envs = Environments(bot.redis, bot.settings.name)
    return [(r.result, r.attempt, r.retried, r.error) for r in envs.history(EnvRef("github", REPO, "staging"))]


@pytest.mark.parametrize("fault", list(BRIEF_CLUSTER_FAULTS))
def test_a_deploy_that_met_a_brief_cluster_error_is_tried_again_with_back_off_until_deployed(
        remote, bot, github, kube, fault):
    github.add_repo(REPO, clone_url=remote.url)
    injected, error = BRIEF_CLUSTER_FAULTS[fault]
    kube.inject("PATCH", CONFIGMAP, times=1_000, **injected)
    envs, ref = Environments(bot.redis, bot.settings.name), EnvRef("github", REPO, "staging")
    started = time.time()
    sha, job = deliver_push(remote, bot, FILES, 1)
    bot.work()
    assert history(bot) == [("failure", 1, True, error)]
    assert bot.job(job).get_status() == JobStatus.SCHEDULED and bot.job(job).retries_left == 2
    run = envs.run(ref, sha)
    assert (run.state, run.retry_by) == ("retrying", job)
    assert envs.status(ref).deploying is None and envs.deployed(ref) is None  # the lock is not held meanwhile
    (deployment,) = github.deployments[REPO]
    assert [s["state"] for s in github.deployment_statuses[deployment["id"]]] == ["in_progress"]

    retried = time.time()
    assert bot.release_retries()[job] >= int(started) + 5  # the job's back-off: 5 s, then 30 s
    bot.work()
    assert history(bot)[0] == ("failure", 2, True, error)
    assert bot.release_retries()[job] >= int(retried) + 30

    kube.clear_faults()  # the cluster answers again
    bot.work()
    assert history(bot) == [("success", 3, False, None), ("failure", 2, True, error), ("failure", 1, True, error)]
    assert bot.job(job).get_status() == JobStatus.FINISHED and bot.failed_jobs() == []
    deployed = envs.deployed(ref)
    assert deployed.sha == sha and deployed.counts == {"created": 3, "changed": 0, "deleted": 0, "unchanged": 0}
    assert kube.get("", "ConfigMap", "shop", "settings")["data"] == {"mode": "fast"}
    assert github.deployments[REPO] == [deployment]  # one forge deployment, finished once
    assert [s["state"] for s in github.deployment_statuses[deployment["id"]]] == ["in_progress", "success"]


def test_a_deploy_that_keeps_meeting_cluster_errors_fails_after_its_tries(remote, bot, github, kube):
    github.add_repo(REPO, clone_url=remote.url)
    kube.inject("PATCH", CONFIGMAP, 503, times=1_000)
    sha, job = deliver_push(remote, bot, FILES, 1)
    bot.work()
    while bot.release_retries():
        bot.work()
    error = "apply ConfigMap shop/settings: ServiceUnavailable (503)"
    assert history(bot) == [("failure", 4, False, error), *[("failure", n, True, error) for n in (3, 2, 1)]]
    assert bot.job(job).get_status() == JobStatus.FINISHED  # the deploy failed; the job did its work
    (deployment,) = github.deployments[REPO]
    assert [s["state"] for s in github.deployment_statuses[deployment["id"]]] == ["in_progress", "failure"]


def test_a_failure_the_cluster_means_is_recorded_once_and_the_next_deploy_works(remote, bot, github, kube):
    github.add_repo(REPO, clone_url=remote.url)
    kube.fail("PATCH", CONFIGMAP, Reply(403, status_body(403, "Forbidden", "configmaps is forbidden")), times=1_000)
    failed = push(remote, bot, FILES, 1)
    envs, ref = Environments(bot.redis, bot.settings.name), EnvRef("github", REPO, "staging")
    assert history(bot) == [("failure", 1, False, "apply ConfigMap shop/settings: Forbidden (403)")]
    assert envs.run(ref, failed).state == "failure" and bot.release_retries() == {}  # not tried again
    status = envs.status(ref)
    assert status.deploying is None and status.deployed is None  # the lock was released
    (deployment,) = github.deployments[REPO]
    assert github.deployment_statuses[deployment["id"]][-1]["state"] == "failure"

    kube.clear_faults()
    fixed = push(remote, bot, {"apps/config.yaml": BASE_FILES["apps/config.yaml"].replace("fast", "safe")}, 2)
    assert envs.status(ref).deployed.sha == fixed and envs.history(ref)[0].result == "success"
    assert kube.get("", "ConfigMap", "shop", "settings")["data"] == {"mode": "safe"}
    assert bot.failed_jobs() == []


def test_a_deploy_whose_worker_is_killed_is_finished_by_its_retry_as_one_forge_deployment(remote, bot, github, kube):
    pr = PullRequestScenario(remote, github, bot, REPO, SECRET, files=FILES)
    github.add_pull(REPO, 7, head_sha="f" * 40, head_ref="feature", state="closed")
    merged = remote.commit("main", {"apps/web.yaml": BASE_FILES["apps/web.yaml"].replace("replicas: 1", "replicas: 2")},
                           "Merge pull request #7")
    kube.stall("apps", "Deployment", "shop", "web")
    pr.deliver_merge(merged)  # the merged pull request's job (it replies on #7), then the push's
    merge_job, push_job = bot.store.queue("deploy").get_job_ids()
    worker = bot.spawn_worker(burst=True)
    deadline = time.monotonic() + 60
    while not kube.calls("GET", r"/deployments/web$"):  # applied everything; waiting for the rollout
        assert time.monotonic() < deadline, "the deploy never waited for its rollout"
        time.sleep(0.05)
    bot.stop_worker(worker, signal.SIGKILL)
    kube.ready_after("apps", "Deployment", "shop", "web", 0)  # the rollout completes meanwhile

    envs, ref = Environments(bot.redis, bot.settings.name), EnvRef("github", REPO, "staging")
    lock = envs.key(ref, "lock")
    assert envs.run(ref, merged).state == "running" and bot.redis.pttl(lock) > 0
    bot.redis.pexpire(lock, 600_000)  # had it lasted ten minutes, the retry would still not wait for it
    (deployment,) = github.deployments[REPO]
    assert [s["state"] for s in github.deployment_statuses[deployment["id"]]] == ["in_progress"]

    bot.reap_abandoned()
    assert merge_job in bot.release_retries()
    started = time.monotonic()
    bot.work()
    assert time.monotonic() - started < 120  # waiting for the lock would take 310 s
    assert bot.job(merge_job).get_status() == bot.job(push_job).get_status() == JobStatus.FINISHED
    assert bot.job(push_job).return_value() == {"staging": {"state": "joined"}}
    assert github.deployments[REPO] == [deployment]
    assert [s["state"] for s in github.deployment_statuses[deployment["id"]]] == ["in_progress", "success"]
    (reply,) = pr.comments()
    assert f"Deploy of `{merged[:7]}` to `staging` succeeded" in reply["body"]
    assert "| 3 | 0 | 0 | 0 |" in reply["body"]  # created by the killed try, not unchanged
    assert [(r.result, r.attempt) for r in envs.history(ref)] == [("success", 2)]
    assert envs.status(ref).deploying is None and bot.failed_jobs() == []


# -- GitLab asking the bot to wait, mid-deploy --------------------------------------------------------

PROJECT = "group/sub/infra"


@pytest.fixture
def gitlab_bot(tmp_path: Path, redis_server, redis, gitlab, kube):
    kubeconfig = kube.kubeconfig(str(tmp_path / "kubeconfig"))
    config = (f"repos: ['group/*']\nclusters:\n  staging: {{kubeconfig: {kubeconfig}, context: {kube.context}, "
              "repos: ['*']}\ndeploy: {rollout_timeout: 10}\nreconcile: {interval: 0}\n")
    instance = Bot(bot_env(tmp_path, redis_server.url, config, GITLAB_WEBHOOK_TOKEN=SECRET, GITLAB_TOKEN=TOKEN,
                           GITLAB_URL=gitlab.url))
    yield instance
    instance.stop()


def test_a_gitlab_rate_limit_mid_deploy_is_waited_out_by_the_queue_not_under_the_lock(
        remote, gitlab_bot, gitlab, kube):
    bot, wait = gitlab_bot, 30
    mr = MergeRequestScenario(remote, gitlab, bot, PROJECT, SECRET, files=FILES)
    gitlab.add_mr(PROJECT, 7, "feature", "main", "f" * 40)
    merged = remote.commit("main", {"apps/web.yaml": BASE_FILES["apps/web.yaml"].replace("replicas: 1", "replicas: 2")},
                           "Merge branch 'feature'")
    gitlab.fail("POST", r"/deployments$", Reply(429, {"message": "429 Too Many Requests"},
                                               {"Retry-After": str(wait)}), times=1_000)
    started = time.time()
    mr.deliver_merge(merged)  # the merge request's job (it replies on !7), then the push's
    merge_job, push_job = bot.store.queue("deploy").get_job_ids()
    worker = bot.spawn_worker(burst=True)
    deadline = time.monotonic() + wait - 5  # python-gitlab would sleep the whole wait, five times over
    while {bot.job(j).get_status() for j in (merge_job, push_job)} != {JobStatus.SCHEDULED}:
        assert time.monotonic() < deadline, "the worker is waiting out the rate limit itself"
        time.sleep(0.1)
    bot.stop_worker(worker)

    envs, ref = Environments(bot.redis, bot.settings.name), EnvRef("gitlab", PROJECT, "staging")
    deployed = envs.deployed(ref)  # the deploy went on without the forge, and let go of its lock
    assert deployed.sha == merged and deployed.duration < wait and envs.status(ref).deploying is None
    assert kube.get("apps", "Deployment", "shop", "web")["spec"]["replicas"] == 2
    assert gitlab.deployments.get(PROJECT, []) == [] and mr.replies() == []

    gitlab.clear_faults()  # GitLab's window has passed...
    retries = bot.release_retries()
    assert min(retries[merge_job], retries[push_job]) >= int(started) + wait  # ...and not before it said
    bot.work()
    (deployment,) = gitlab.deployments[PROJECT]
    assert (deployment["sha"], deployment["status"]) == (merged, "success")
    (reply,) = mr.replies()
    assert f"Deploy of `{merged[:7]}` to `staging` succeeded" in reply and "| 3 | 0 | 0 | 0 |" in reply
    assert bot.failed_jobs() == [] and len(kube.writes()) == 3
