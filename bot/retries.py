"""Job retries as the error says: a temporary one after its delay, a permanent one never."""

from __future__ import annotations

import functools
import logging
import math
from typing import Any, Callable, TypeVar

from rq import get_current_job
from rq.job import Job

from bot.config import ConfigError
from bot.errors import PermanentError, TemporaryError

MAX_WAIT = 3600
"""Seconds: a forge asking for longer still gets retried within the hour."""
F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("gitops_bot.retries")


def retried_as_the_error_says(job_function: F) -> F:
    """A temporary error retries the job after its own delay when it names one (the forge's
    Retry-After or rate-limit reset), else after the job's back-off; a permanent one (a broken
    config, a missing setting) fails the job once, with its reason and no traceback. Anything
    else is a bug or an outage nobody named: the job's back-off retries it."""

    @functools.wraps(job_function)
    def run(*args: Any, **kwargs: Any) -> Any:
        job = get_current_job()
        try:
            return job_function(*args, **kwargs)
        except TemporaryError as err:
            if job is not None and err.delay is not None and job.retries_left:
                _wait_this_once(job, min(max(math.ceil(err.delay), 1), MAX_WAIT))
            log.warning("temporary failure; the job will be retried" if job and job.retries_left else
                        "temporary failure; no retries left", extra={"error": str(err), "retry_after": err.delay})
            raise
        except (PermanentError, ConfigError) as err:
            if job is not None:
                job.retries_left = 0
            log.error("permanent failure; the job is not retried", extra={"error": str(err)})
            raise PermanentError(str(err)) from None
    return run  # type: ignore[return-value]


def _wait_this_once(job: Job, seconds: int) -> None:
    """The coming retry waits `seconds`; later ones keep the job's back-off. RQ takes interval
    `len(intervals) - retries_left`, and the first for retries beyond the list."""
    intervals = list(job.retry_intervals or [0])
    if len(intervals) < job.retries_left:
        intervals = [intervals[0]] * (job.retries_left - len(intervals)) + intervals
    intervals[len(intervals) - job.retries_left] = seconds
    job.retry_intervals = intervals
