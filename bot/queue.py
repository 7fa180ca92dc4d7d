"""Redis: the bot's queues, delivery de-duplication, and which work is the newest for a pull request."""

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
    supersedes: str | None = None
    """A `pull_key`. The job gets its delivery's id as `generation`; it becomes the pull
    request's newest, and a job whose generation is no longer the newest does nothing."""
    timeout: int = 600


@dataclass
class Plan:
    """What to do about one event: jobs to queue, pull requests whose pending work is void."""

    jobs: list[JobSpec] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)
    ignored: str | None = None


class Store:
    """Keys are prefixed with the instance name, so instances can share one Redis."""

    # KEYS: the delivery's de-duplication key, the deliveries log, then pull requests' newest keys.
    # ARGV: the two TTLs, the log entry, the log entry for a duplicate, the new generation.
    _ACCEPT = """
    local fresh = redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1])
    redis.call('LPUSH', KEYS[2], fresh and ARGV[3] or ARGV[4])
    redis.call('LTRIM', KEYS[2], 0, %d)
    if not fresh then return 0 end
    for i = 3, #KEYS do redis.call('SET', KEYS[i], ARGV[5], 'EX', ARGV[2]) end
    return 1
    """ % (RECENT_DELIVERIES - 1)

    def __init__(self, connection: redis.Redis, name: str):
        self.redis, self.name = connection, name
        self.prefix = f"gitops-bot:{name}"
        self._accept_script = connection.register_script(self._ACCEPT)
        # Kept, because a Queue asks Redis for its version once per instance.
        self._queues = {q: Queue(f"{name}.{q}", connection=connection) for q in QUEUES}

    def queue(self, name: str) -> Queue:
        return self._queues[name]

    def queues(self) -> list[Queue]:
        return list(self._queues.values())

    def _newest_key(self, pull_key: str) -> str:
        return f"{self.prefix}:{pull_key}:newest"

    def newest(self, pull_key: str) -> str | None:
        """The generation of the newest work queued for a pull request."""
        value = self.redis.get(self._newest_key(pull_key))
        return value.decode() if value else None

    @property
    def deliveries_key(self) -> str:
        return f"{self.prefix}:deliveries"

    def accept(self, forge: str, delivery_id: str, plan: Plan, entry: dict[str, Any]) -> list[str] | None:
        """Record the delivery and queue its jobs, in two round trips; None for a duplicate.

        `entry` describes the delivery for the recent-deliveries log. If queuing fails, the
        delivery is forgotten again, so the forge's redelivery is not taken for a duplicate.
        """
        dedup_key = f"{self.prefix}:delivery:{forge}:{delivery_id}"
        generation = f"{forge}:{delivery_id}"
        pulls = sorted({j.supersedes for j in plan.jobs if j.supersedes} | set(plan.cancel))
        outcome = "queued" if plan.jobs else plan.ignored or "recorded"
        fresh = self._accept_script(
            keys=[dedup_key, self.deliveries_key, *map(self._newest_key, pulls)],
            args=[DELIVERY_TTL, GENERATION_TTL, json.dumps({**entry, "outcome": outcome}),
                  json.dumps({**entry, "outcome": "duplicate"}), generation])
        if not fresh:
            return None
        try:
            pipe = self.redis.pipeline(transaction=True)
            jobs = [self._enqueue(job, generation, delivery_id, pipe) for job in plan.jobs]
            pipe.execute()
            return jobs
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

    def _enqueue(self, job: JobSpec, generation: str, delivery_id: str, pipe: redis.client.Pipeline) -> str:
        kwargs = {**job.kwargs, "generation": generation} if job.supersedes else job.kwargs
        queued = self.queue(job.queue).enqueue_call(
            f"bot.jobs.{job.func}", kwargs=kwargs, description=job.description, timeout=job.timeout,
            result_ttl=7 * 24 * 3600, failure_ttl=30 * 24 * 3600, meta={"delivery": delivery_id},
            retry=Retry(max=3, interval=[5, 30, 120]), pipeline=pipe)
        return queued.id
