"""A temporary failure retries the job when the forge says, or with the usual back-off; a permanent one
fails it once."""

from __future__ import annotations

import time

from rq import Retry, SimpleWorker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from bot.config import ConfigError
from bot.errors import PermanentError
from bot.forges.base import TransientForgeError, retry_after
from bot.queue import Store
from bot.retries import retried_as_the_error_says

CALLS: list[str] = []


@retried_as_the_error_says
def rate_limited(wait: float | None) -> None:
    raise TransientForgeError("GitHub answered 429 to create comment", wait)


@retried_as_the_error_says
def misconfigured(error: str) -> None:
    CALLS.append(error)
    if error == "setting":
        raise PermanentError("GitHub needs GITHUB_TOKEN, or GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY")
    raise ConfigError("config/bot.yaml", "clusters.staging.repos", "expected the repository globs")


def run_once(redis, wait: float | None, retries: int = 3, function=rate_limited):
    queue = Store(redis, "retries").queue("diff")
    job = queue.enqueue(function, wait, retry=Retry(max=retries, interval=[5, 30, 120]) if retries else None)
    SimpleWorker([queue], connection=redis).work(burst=True, with_scheduler=False)
    return queue, job


class Window:
    """When a retry is scheduled, as seen from outside the worker: the failure came between the
    worker's start and its end, and a loaded machine may take seconds between them."""

    def __init__(self) -> None:
        self.started = time.time()

    def scheduled_in(self, queue, job) -> tuple[float, float]:
        """The least and the most the delay after the failure can be."""
        at = ScheduledJobRegistry(queue=queue).get_scheduled_time(job).timestamp()
        return at - time.time(), at - self.started


def test_the_retry_waits_as_long_as_the_forge_said(redis):
    window = Window()
    least, most = window.scheduled_in(*run_once(redis, 42.3))
    assert 42 <= most and least <= 43.5  # the forge's 42.3 s, rounded up; RQ keeps whole seconds


def test_without_a_word_from_the_forge_the_usual_back_off_applies(redis):
    window = Window()
    least, most = window.scheduled_in(*run_once(redis, None))
    assert 4 <= most and least <= 5.5


def test_with_no_retries_left_the_failure_is_visible(redis):
    queue, job = run_once(redis, 10, retries=0)
    assert job.id in FailedJobRegistry(queue=queue).get_job_ids()


def test_a_permanent_failure_fails_once_and_says_why(redis):
    for error, reason in (("setting", "GitHub needs GITHUB_TOKEN"),
                          ("config", "config/bot.yaml: clusters.staging.repos: expected the repository globs")):
        CALLS.clear()
        queue, job = run_once(redis, error, function=misconfigured)
        assert CALLS == [error]  # run once, not retried
        assert job.id in FailedJobRegistry(queue=queue).get_job_ids()
        assert ScheduledJobRegistry(queue=queue).get_job_ids() == []
        last_line = job.latest_result().exc_string.strip().splitlines()[-1]
        assert last_line.startswith("bot.errors.PermanentError: ") and reason in last_line  # what the dashboard shows


def test_reading_the_forges_headers():
    assert retry_after({"Retry-After": "17"}, now=1000) == 17
    assert retry_after({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1060"}, now=1000) == 60
    assert retry_after({"X-RateLimit-Remaining": "12", "X-RateLimit-Reset": "1060"}, now=1000) is None
    october = 1792567680  # Wed, 21 Oct 2026 07:28:00 GMT
    assert retry_after({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, now=october - 90) == 90
    assert retry_after({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, now=october + 5) == 0  # past: now
    assert retry_after({"RateLimit-Remaining": "0", "RateLimit-Reset": "1060"}, now=1000) == 60  # GitLab's names
    for garbage in ("soon", "nan", "inf", ""):
        assert retry_after({"Retry-After": garbage}, now=1000) is None  # the job's own back-off
    assert retry_after(None, now=1000) is None


WAITS: list[float | None] = []


@retried_as_the_error_says
def rate_limited_in_turn(_: None) -> None:
    raise TransientForgeError("GitHub answered 502 to create comment", WAITS.pop(0))


def test_the_forges_wait_replaces_one_retrys_back_off_not_the_later_ones(redis):
    WAITS[:] = [42.3, None]
    window = Window()
    queue, job = run_once(redis, None, function=rate_limited_in_turn)
    least, most = window.scheduled_in(queue, job)
    assert 42 <= most and least <= 43.5
    job.refresh()
    assert job.retry_intervals == [43, 30, 120]
    queue.scheduled_job_registry.remove(job)
    queue.enqueue_job(job)
    window = Window()
    SimpleWorker([queue], connection=redis).work(burst=True, with_scheduler=False)
    least, most = window.scheduled_in(queue, job)
    assert 29 <= most and least <= 30.5  # the job's own back-off, for a forge naming no wait
