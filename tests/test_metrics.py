"""`/metrics` moves as webhooks arrive and jobs run, and shows the whole fleet from any web process."""

from __future__ import annotations

import re
import urllib.request

import pytest

from bot.environments import EnvRef, Environments, Sync
from bot.forges import github as github_forge, gitlab as gitlab_forge
from bot.forges.base import API_ERRORS, TransientForgeError
from bot.metrics import FleetMetrics
from tests.fakes.github_api import FakeGitHub
from tests.fakes.http import Reply
from tests.harness import HEAD_CHANGES, Bot, PullRequestScenario, bot_env

REPO, SECRET = "acme/infra", "metrics-secret"


def scrape(bot: Bot) -> dict[str, float]:
    text = urllib.request.urlopen(bot.url + "/metrics").read().decode()
    samples = {}
    for line in text.split("\n"):  # exposition lines end in \n only; label values may hold other breaks
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def value(samples: dict[str, float], name: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for key, v in samples.items()
               if re.match(rf"{name}(\{{|$)", key) and all(w in key for w in wanted))


@pytest.fixture
def bot(tmp_path, redis_server, redis):
    with FakeGitHub(bot_login="gitops-bot") as github:
        instance = Bot(bot_env(tmp_path, redis_server.url, 'repos: ["acme/*"]\n', GITHUB_WEBHOOK_SECRET=SECRET,
                               GITHUB_TOKEN="ghp_metricsTOKEN012345678", GITHUB_API_URL=github.url))
        instance.github = github
        yield instance
        instance.stop()


def test_counters_move_with_webhooks_and_jobs(bot, remote):
    before = scrape(bot)
    pr = PullRequestScenario(remote, bot.github, bot, REPO, SECRET)
    head = pr.push_head(HEAD_CHANGES)
    pr.deliver(pr.event("opened", head))
    pr.deliver(pr.event("opened", head), delivery="delivery-1")  # the same delivery again
    pr.deliver(pr.event("opened", head), secret="wrong")
    pr.deliver(pr.event("labeled", head))

    assert bot.post("/webhooks/github", b"x" * (25 * 1024 * 1024 + 1), {"X-GitHub-Event": "push"}).status == 413
    assert bot.post("/webhooks/github", b"{}", {"X-GitHub-Event": "push"}).status == 401

    queued = scrape(bot)
    delta = {outcome: value(queued, "gitops_bot_webhooks_total", outcome=outcome) -
             value(before, "gitops_bot_webhooks_total", outcome=outcome)
             for outcome in ("queued", "duplicate", "refused_401", "refused_413", "ignored")}
    assert delta == {"queued": 1, "duplicate": 1, "refused_401": 2, "refused_413": 1, "ignored": 1}
    assert value(queued, "gitops_bot_webhooks_total", event="unverified", outcome="refused_401") >= 1
    assert value(queued, "gitops_bot_queue_depth", queue="gitops-bot.diff", state="queued") == 1

    bot.work()
    done = scrape(bot)
    assert value(done, "gitops_bot_job_duration_seconds_count", kind="diff", outcome="ok") == 1
    assert value(done, "gitops_bot_job_duration_seconds_sum", kind="diff", outcome="ok") > 0
    assert value(done, "gitops_bot_queue_depth", queue="gitops-bot.diff", state="queued") == 0
    assert value(done, "gitops_bot_forge_rate_limit_remaining", forge="github") > 0


def test_deploys_and_forge_errors_are_counted_for_the_fleet(bot, redis):
    fleet = FleetMetrics(redis, "gitops-bot:gitops-bot")
    fleet.deploy("staging", "success")
    fleet.deploy("staging", "failure")
    fleet.deploy("staging", "success")
    fleet.forge_error("github", "transient", "502")
    redis.hincrbyfloat("gitops-bot:gitops-bot:metrics:forge_errors", "gitlab\x1ftransient", 1)  # as counted before statuses
    samples = scrape(bot)
    assert value(samples, "gitops_bot_deploys_total", environment="staging", result="success") == 2
    assert value(samples, "gitops_bot_deploys_total", environment="staging", result="failure") == 1
    assert value(samples, "gitops_bot_forge_api_errors_total", forge="github", kind="transient", status="502") == 1
    assert value(samples, "gitops_bot_forge_api_errors_total", forge="gitlab", kind="transient", status="none") == 1


def test_a_forge_error_a_job_meets_is_counted_whatever_its_status(bot, remote):
    pr = PullRequestScenario(remote, bot.github, bot, REPO, SECRET)
    head = pr.push_head(HEAD_CHANGES)
    bot.github.fail("POST", r"/statuses/", Reply(422, {"message": "Validation Failed"}))  # neither 5xx nor a rate limit
    before = scrape(bot)
    pr.deliver(pr.event("opened", head))
    bot.work()
    samples = scrape(bot)
    assert value(samples, "gitops_bot_forge_api_errors_total", forge="github", kind="refused", status="422") - value(
        before, "gitops_bot_forge_api_errors_total", forge="github", kind="refused", status="422") == 1


def _raise(err: Exception):
    def call():
        raise err
    return call


ADAPTER_ERRORS = [  # (adapter, what the API call raised) -> what is counted
    (github_forge, github_forge.GithubException(404, {"message": "Not Found"}, {}), ("github", "refused", "404")),
    (github_forge, github_forge.GithubException(503, None, {}), ("github", "transient", "503")),
    (github_forge, github_forge.GithubException(403, {"message": "API rate limit exceeded"}, {}),
     ("github", "transient", "403")),
    (github_forge, ConnectionResetError(), ("github", "transient", "none")),
    (gitlab_forge, gitlab_forge.GitlabError("Forbidden", 403), ("gitlab", "refused", "403")),
    (gitlab_forge, gitlab_forge.GitlabError("Bad Gateway", 502), ("gitlab", "transient", "502")),
    (gitlab_forge, gitlab_forge._WaitAsked(429, 30.0), ("gitlab", "transient", "429")),
    (gitlab_forge, TimeoutError(), ("gitlab", "transient", "none")),
]


@pytest.mark.parametrize("adapter, error, counted", ADAPTER_ERRORS)
def test_each_api_error_is_counted_once_by_kind_and_status(adapter, error, counted):
    API_ERRORS.take()
    with pytest.raises((type(error), TransientForgeError)):
        adapter._call("read something", _raise(error))
    assert API_ERRORS.take() == {counted: 1}


def test_each_environments_last_sync_check_is_a_gauge_any_replica_reports(bot, redis):
    envs = Environments(redis, "gitops-bot")
    staging, production, broken, fresh = (EnvRef("github", REPO, name)
                                          for name in ("staging", "production", "broken", "fresh"))
    envs.record_sync(staging, Sync("a" * 40, 1_700_000_000.0, "in_sync", compared=17,
                                   health={"healthy": 12, "progressing": 1, "unknown": 4}))
    envs.record_sync(production, Sync("b" * 40, 1_700_000_060.0, "drifted", 3, compared=40,
                                      health={"healthy": 39, "degraded": 1}))
    envs.record_sync(broken, Sync("c" * 40, 1_700_000_120.0, "error", error="connection refused"))
    envs.lock(fresh, "alice")  # known, never checked
    samples = scrape(bot)

    def gauge(name: str, **labels: str) -> dict[str, float]:
        return {env: value(samples, name, environment=env, repo=REPO, forge="github", **labels)
                for env in ("staging", "production", "broken", "fresh")
                if any(f'environment="{env}"' in key for key in samples if re.match(rf"{name}\{{", key))}

    assert gauge("gitops_bot_environment_in_sync") == {"staging": 1, "production": 0}
    assert gauge("gitops_bot_environment_drifted_objects") == {"staging": 0, "production": 3}
    assert gauge("gitops_bot_environment_sync_check_failed") == {"staging": 0, "production": 0, "broken": 1}
    assert gauge("gitops_bot_environment_sync_checked_timestamp_seconds") == {
        "staging": 1_700_000_000.0, "production": 1_700_000_060.0, "broken": 1_700_000_120.0}
    assert {health: gauge("gitops_bot_environment_objects", health=health)
            for health in ("healthy", "progressing", "degraded", "unknown")} == {
        "healthy": {"staging": 12, "production": 39}, "progressing": {"staging": 1, "production": 0},
        "degraded": {"staging": 0, "production": 1}, "unknown": {"staging": 4, "production": 0}}

    envs.record_sync(production, Sync("b" * 40, 1_700_000_600.0, "in_sync", compared=40, health={"healthy": 40}))
    again = scrape(bot)
    assert value(again, "gitops_bot_environment_in_sync", environment="production") == 1
    assert value(again, "gitops_bot_environment_drifted_objects", environment="production") == 0
    assert value(again, "gitops_bot_environment_objects", environment="production", health="degraded") == 0
