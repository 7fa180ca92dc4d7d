"""`/metrics` moves as webhooks arrive and jobs run, and shows the whole fleet from any web process."""

from __future__ import annotations

import re
import urllib.request

import pytest

from bot.metrics import FleetMetrics
from tests.fakes.github_api import FakeGitHub
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

    queued = scrape(bot)
    delta = {outcome: value(queued, "gitops_bot_webhooks_total", outcome=outcome) -
             value(before, "gitops_bot_webhooks_total", outcome=outcome)
             for outcome in ("queued", "duplicate", "refused_401", "ignored")}
    assert delta == {"queued": 1, "duplicate": 1, "refused_401": 1, "ignored": 1}
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
    fleet.forge_error("github", "transient")
    samples = scrape(bot)
    assert value(samples, "gitops_bot_deploys_total", environment="staging", result="success") == 2
    assert value(samples, "gitops_bot_deploys_total", environment="staging", result="failure") == 1
    assert value(samples, "gitops_bot_forge_api_errors_total", forge="github") == 1
