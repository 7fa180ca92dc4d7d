"""Redis: the bot's queues, delivery de-duplication and pull-request generations."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import redis
from rq import Queue, Retry

DELIVERY_TTL = 7 * 24 * 3600
RECENT_DELIVERIES = 100
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
    # KEYS: the delivery's de-duplication key, the deliveries log, then generation keys.
    # ARGV: the two TTLs, the log entry, and the log entry for a duplicate.
    _ACCEPT = """
    local fresh = redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1])
    redis.call('LPUSH', KEYS[2], fresh and ARGV[3] or ARGV[4])
    redis.call('LTRIM', KEYS[2], 0, %d)
    if not fresh then return false end
    local out = {}
    for i = 3, #KEYS do
      out[i - 2] = redis.call('INCR', KEYS[i])
      redis.call('EXPIRE', KEYS[i], ARGV[2])
    end
    return out
    """ % (RECENT_DELIVERIES - 1)

    @property
    def deliveries_key(self) -> str:
        return f"{self.prefix}:deliveries"

    def accept(self, forge: str, delivery_id: str, plan: Plan, entry: dict[str, Any]) -> list[str] | None:
        """Record the delivery and queue its jobs; None when the delivery was seen before.

        `entry` describes the delivery for the recent-deliveries log. If queuing fails, the
        delivery is forgotten again, so the forge's redelivery is not taken for a duplicate.
        """
        dedup_key = f"{self.prefix}:delivery:{forge}:{delivery_id}"
        bumps = sorted({j.generation_of for j in plan.jobs if j.generation_of} | set(plan.cancel))
        keys = [f"{self.prefix}:{key}:generation" for key in bumps]
        outcome = "queued" if plan.jobs else plan.ignored or "recorded"
        result = self._accept_script(
            keys=[dedup_key, self.deliveries_key, *keys],
            args=[DELIVERY_TTL, GENERATION_TTL, json.dumps({**entry, "outcome": outcome}),
                  json.dumps({**entry, "outcome": "duplicate"})])
        if result is None:
            return None
        generations = dict(zip(bumps, result))
        try:
            return [self._enqueue(job, generations, delivery_id) for job in plan.jobs]
        except redis.RedisError:
            self.redis.delete(dedup_key)
            raise

    def note(self, entry: dict[str, Any]) -> None:
        """Log a delivery that needed no queuing; losing this record is harmless."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(self.deliveries_key, json.dumps(entry))
        pipe.ltrim(self.deliveries_key, 0, RECENT_DELIVERIES - 1)
        pipe.execute()

    def recent_deliveries(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.redis.lrange(self.deliveries_key, 0, RECENT_DELIVERIES - 1)]

    def _enqueue(self, job: JobSpec, generations: dict[str, int], delivery_id: str) -> str:
        kwargs = dict(job.kwargs)
        if job.generation_of:
            kwargs["generation"] = generations[job.generation_of]
        queued = self.queue(job.queue).enqueue_call(
            f"bot.jobs.{job.func}", kwargs=kwargs, description=job.description, timeout=job.timeout,
            result_ttl=7 * 24 * 3600, failure_ttl=30 * 24 * 3600, meta={"delivery": delivery_id},
            retry=Retry(max=3, interval=[5, 30, 120]))
        return queued.id
