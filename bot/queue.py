"""Redis: the bot's queues, delivery de-duplication and pull-request generations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis
from rq import Queue, Retry

DELIVERY_TTL = 7 * 24 * 3600
GENERATION_TTL = 30 * 24 * 3600
QUEUES = ("deploy", "commands", "diff")
"""Queue names in the order a worker takes from them: deploys first, diffs last."""


def pull_key(forge: str, repo: str, number: int) -> str:
    return f"pr:{forge}:{repo}:{number}"


@dataclass(frozen=True)
class JobSpec:
    """A job to enqueue: a function in `bot.jobs`, plain-valued keyword arguments."""

    queue: str
    func: str
    kwargs: dict[str, Any]
    description: str
    generation_of: str | None = None
    """A `pull_key`: the job gets the pull request's new generation as `generation`, and a
    job whose generation is no longer the newest does nothing."""
    timeout: int = 600


@dataclass
class Plan:
    """What to do about one event: jobs to queue, pull requests whose pending work is void."""

    jobs: list[JobSpec] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)
    ignored: str | None = None


class Store:
    """Keys are prefixed with the instance name, so instances can share one Redis."""

    def __init__(self, connection: redis.Redis, name: str):
        self.redis, self.name = connection, name
        self.prefix = f"gitops-bot:{name}"
        self._accept_script = connection.register_script(self._ACCEPT)

    def queue(self, name: str) -> Queue:
        return Queue(f"{self.name}.{name}", connection=self.redis)

    def queues(self) -> list[Queue]:
        return [self.queue(q) for q in QUEUES]

    def generation(self, pull_key: str) -> int:
        """The newest generation queued for a pull request (see `pull_key`)."""
        return int(self.redis.get(f"{self.prefix}:{pull_key}:generation") or 0)

    # Record a delivery and bump generations atomically, in one round trip; nil for a duplicate.
    _ACCEPT = """
    if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return false end
    local out = {}
    for i = 2, #KEYS do
      out[i - 1] = redis.call('INCR', KEYS[i])
      redis.call('EXPIRE', KEYS[i], ARGV[2])
    end
    return out
    """

    def accept(self, forge: str, delivery_id: str, plan: Plan) -> list[str] | None:
        """Record the delivery and queue its jobs; None when the delivery was seen before.

        If queuing fails, the delivery is forgotten again, so the forge's redelivery is not
        taken for a duplicate.
        """
        dedup_key = f"{self.prefix}:delivery:{forge}:{delivery_id}"
        bumps = sorted({j.generation_of for j in plan.jobs if j.generation_of} | set(plan.cancel))
        keys = [f"{self.prefix}:{key}:generation" for key in bumps]
        result = self._accept_script(keys=[dedup_key, *keys], args=[DELIVERY_TTL, GENERATION_TTL])
        if result is None:
            return None
        generations = dict(zip(bumps, result))
        try:
            return [self._enqueue(job, generations) for job in plan.jobs]
        except redis.RedisError:
            self.redis.delete(dedup_key)
            raise

    def _enqueue(self, job: JobSpec, generations: dict[str, int]) -> str:
        kwargs = dict(job.kwargs)
        if job.generation_of:
            kwargs["generation"] = generations[job.generation_of]
        queued = self.queue(job.queue).enqueue_call(
            f"bot.jobs.{job.func}", kwargs=kwargs, description=job.description, timeout=job.timeout,
            result_ttl=7 * 24 * 3600, failure_ttl=30 * 24 * 3600,
            retry=Retry(max=3, interval=[5, 30, 120]))
        return queued.id
