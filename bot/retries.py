"""Job retries that follow the forge's own word on when to try again."""

from __future__ import annotations

import functools
import logging
import math
from typing import Any, Callable, TypeVar

from rq import get_current_job

from bot.forges.base import TransientForgeError

MAX_WAIT = 3600
"""Seconds: a forge asking for longer still gets retried within the hour."""
F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("gitops_bot.retries")


def honour_retry_after(job_function: F) -> F:
    """When the forge says how long to wait (Retry-After, a rate-limit reset), the job's next retry
    waits that long instead of its usual back-off. RQ reads the interval as the job fails."""

    @functools.wraps(job_function)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return job_function(*args, **kwargs)
        except TransientForgeError as err:
            job = get_current_job()
            if job is not None and err.retry_after is not None and job.retries_left:
                job.retry_intervals = [min(max(math.ceil(err.retry_after), 1), MAX_WAIT)]
            log.warning("the forge failed; the job will be retried" if job and job.retries_left else
                        "the forge failed; no retries left", extra={"error": str(err),
                                                                  "retry_after": err.retry_after})
            raise
    return run  # type: ignore[return-value]
