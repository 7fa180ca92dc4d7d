"""Redis: the bot's queues, delivery de-duplication, and which work is the newest for a pull request."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import hiredis
import orjson
import redis
from redis.exceptions import NoScriptError
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.scripts import _build_hset_args  # the fields RQ's own atomic enqueue writes

from bot.events import Repo, to_plain

DELIVERY_TTL = 7 * 24 * 3600
RECENT_DELIVERIES = 100
RECENT_REFUSALS = 100
"""Refused deliveries kept for the dashboard: the newest, never their bodies."""
GENERATION_TTL = 30 * 24 * 3600
QUEUES = ("deploy", "commands", "diff")
"""Queue names in the order a worker takes from them: deploys first, diffs last."""
RETRY = Retry(max=3, interval=[5, 30, 120])
"""How RQ retries a job that raised: at most 3 times, after 5, 30 and 120 s."""


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

    # One round trip records a delivery and queues its jobs, atomically: a delivery is never
    # remembered without its jobs, nor queued twice.
    # KEYS: de-duplication key, deliveries log, RQ's set of queues, known repositories, open pull
    #       requests, then each pull request's newest key, then each job's hash key and queue key.
    # ARGV: the two TTLs, the log entry up to its outcome, the outcome, the generation, the number
    #       of pull requests, the repository's field and value (for reconcile), the numbers of pull
    #       requests diffed and closed, their fields and values and the closed ones' fields (for the
    #       dashboard), then per job: its id, its field count, and its fields.
    _ACCEPT = """
    local fresh = redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1])
    redis.call('LPUSH', KEYS[2], ARGV[3] .. (fresh and ARGV[4] or '"duplicate"}'))
    redis.call('LTRIM', KEYS[2], 0, %d)
    if not fresh then return 0 end
    if redis.call('HGET', KEYS[4], ARGV[7]) ~= ARGV[8] then redis.call('HSET', KEYS[4], ARGV[7], ARGV[8]) end
    local diffed, closed = tonumber(ARGV[9]), tonumber(ARGV[10])
    if diffed > 0 then redis.call('HSET', KEYS[5], unpack(ARGV, 11, 10 + 2 * diffed)) end
    if closed > 0 then redis.call('HDEL', KEYS[5], unpack(ARGV, 11 + 2 * diffed, 10 + 2 * diffed + closed)) end
    local pulls = tonumber(ARGV[6])
    for i = 1, pulls do redis.call('SET', KEYS[5 + i], ARGV[5], 'EX', ARGV[2]) end
    local key, arg = 6 + pulls, 11 + 2 * diffed + closed
    while key < #KEYS do
      local fields = tonumber(ARGV[arg + 1])
      redis.call('HSET', KEYS[key], unpack(ARGV, arg + 2, arg + 1 + fields))
      redis.call('RPUSH', KEYS[key + 1], ARGV[arg])
      redis.call('SADD', KEYS[3], KEYS[key + 1])
      key, arg = key + 2, arg + 2 + fields
    end
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

    def accept(self, repo: Repo, delivery_id: str, plan: Plan, entry: dict[str, Any]) -> list[str] | None:
        """Record the delivery and queue its jobs in one atomic round trip; None for a duplicate.

        `entry` describes the delivery for the recent-deliveries log; `repo` is remembered for
        reconcile, which finds what missed webhooks left undone.
        """
        generation = f"{repo.forge}:{delivery_id}"
        pulls = sorted({j.supersedes for j in plan.jobs if j.supersedes} | set(plan.cancel))
        jobs = [self._prepare(job, generation, delivery_id) for job in plan.jobs]
        keys = [f"{self.prefix}:delivery:{repo.forge}:{delivery_id}", self.deliveries_key,
                Queue.redis_queues_keys, self.repos_key, self.pulls_key, *map(self._newest_key, pulls)]
        outcome = "queued" if jobs else plan.ignored or "recorded"
        # The entry, open for its outcome; its jobs' ids let the dashboard show what they did.
        logged = orjson.dumps({**entry, "jobs": [job.id for job, _ in jobs], "outcome": None})[:-5]
        diffed = [(spec.supersedes, _pull_record(spec, job.id, entry.get("at")))
                  for spec, (job, _) in zip(plan.jobs, jobs) if spec.func == "diff_pull_request" and spec.supersedes]
        args: list[Any] = [DELIVERY_TTL, GENERATION_TTL, logged, orjson.dumps(outcome) + b"}", generation,
                           len(pulls), f"{repo.forge}:{repo.full_name}", orjson.dumps(to_plain(repo)),
                           len(diffed), len(plan.cancel), *(part for pair in diffed for part in pair), *plan.cancel]
        for job, queue in jobs:
            fields = _build_hset_args(job)
            keys += [job.key, queue.key]
            args += [job.id, len(fields), *fields]
        if not self._accept(keys, args):
            return None
        return [job.id for job, _ in jobs]

    def _accept(self, keys: list[str], args: list[Any]) -> int:
        """EVALSHA on a connection from the pool, sent and read by the connection itself.

        redis-py's command layer would inspect each of the ~60 arguments, time the call and wrap it
        for retries (which its clients, made without a retry policy, never make): a third of the
        round trip's CPU. The pool still checks the connection it lends, and a connection that fails
        is dropped, as that layer does."""
        pool = self.redis.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([hiredis.pack_command(
                ("EVALSHA", self._accept_script.sha, len(keys), *keys, *args))])
            return conn.read_response()
        except NoScriptError:  # a server that has not seen the script yet (restarted, flushed)
            return self._accept_script(keys=keys, args=args)
        finally:
            pool.release(conn)

    def queue_once(self, repo: Repo, delivery: str, job: JobSpec, event: str) -> bool:
        """Queue work the bot found itself (a command, a reconcile) as a webhook would be: under a
        delivery id of its own, so a retry or a second run finds it seen and queues nothing."""
        entry = {"forge": repo.forge, "delivery": delivery, "event": event, "repo": repo.full_name,
                 "at": time.time()}
        return self.accept(repo, delivery, Plan(jobs=[job]), entry) is not None

    @property
    def repos_key(self) -> str:
        return f"{self.prefix}:repos"

    @property
    def pulls_key(self) -> str:
        """Open pull requests by `pull_key`: each one's head and its newest diff job, as queued."""
        return f"{self.prefix}:pulls"

    def open_pulls(self) -> list[dict[str, Any]]:
        """The pull requests a diff was queued for and no close or merge was seen since, newest first.
        One seen longer ago than `GENERATION_TTL` is taken as closed (its close went unheard) and forgotten."""
        pulls, stale = [], []
        for field_name, raw in self.redis.hgetall(self.pulls_key).items():
            pull = orjson.loads(raw)
            if time.time() - (pull.get("at") or 0) > GENERATION_TTL:
                stale.append(field_name)
            else:
                pulls.append(pull)
        if stale:
            self.redis.hdel(self.pulls_key, *stale)
        return sorted(pulls, key=lambda p: p.get("at") or 0, reverse=True)

    @property
    def refusals_key(self) -> str:
        return f"{self.prefix}:refused"

    def refuse(self, entry: dict[str, Any]) -> None:
        """Log a delivery refused (bad signature or token, malformed, too large) in one round trip,
        keeping the newest `RECENT_REFUSALS`. `entry` names the reason and the sender, never the body."""
        self._log(self.refusals_key, entry, RECENT_REFUSALS)

    def recent_refusals(self) -> list[dict[str, Any]]:
        return self._recent(self.refusals_key, RECENT_REFUSALS)

    def record_reconcile(self, findings: dict[str, list[str]]) -> None:
        """Keep when the last reconcile ran and what it found, for the dashboard."""
        self.redis.set(f"{self.prefix}:reconcile:last", orjson.dumps({"at": time.time(), **findings}))

    def last_reconcile(self) -> dict[str, Any] | None:
        raw = self.redis.get(f"{self.prefix}:reconcile:last")
        return orjson.loads(raw) if raw else None

    def known_repos(self) -> list[Repo]:
        """Every repository a queued delivery came from."""
        return sorted((Repo(**orjson.loads(raw)) for raw in self.redis.hvals(self.repos_key)),
                      key=lambda r: (r.forge, r.full_name))

    def _prepare(self, spec: JobSpec, generation: str, delivery_id: str) -> tuple[Job, Queue]:
        """An RQ job made and serialised by RQ itself, as its own enqueue would, but not yet saved.

        Made as `Queue.create_job` makes it, less its passing on the queue's serializer (RQ's
        default, which the job takes anyway when given none): checking a serializer passed in costs
        a runtime-protocol check, a quarter of the job's making."""
        queue = self.queue(spec.queue)
        kwargs = {**spec.kwargs, "generation": generation} if spec.supersedes else spec.kwargs
        job = queue.job_class.create(f"bot.jobs.{spec.func}", kwargs=kwargs, connection=queue.connection,
                                     description=spec.description, timeout=spec.timeout, result_ttl=7 * 24 * 3600,
                                     failure_ttl=30 * 24 * 3600, meta={"delivery": delivery_id}, retry=RETRY,
                                     origin=queue.name, status=JobStatus.QUEUED)
        queue._prepare_for_queue(job)
        return job, queue

    def note(self, entry: dict[str, Any]) -> None:
        """Log a delivery that needed no queuing; losing this record is harmless."""
        self._log(self.deliveries_key, entry, RECENT_DELIVERIES)

    def recent_deliveries(self) -> list[dict[str, Any]]:
        return self._recent(self.deliveries_key, RECENT_DELIVERIES)

    def _log(self, key: str, entry: dict[str, Any], kept: int) -> None:
        """Push `entry` onto the list at `key`, keeping its newest `kept`, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(key, orjson.dumps(entry))
        pipe.ltrim(key, 0, kept - 1)
        pipe.execute()

    def _recent(self, key: str, kept: int) -> list[dict[str, Any]]:
        return [orjson.loads(raw) for raw in self.redis.lrange(key, 0, kept - 1)]


def _pull_record(spec: JobSpec, job_id: str, at: float | None) -> bytes:
    """What the dashboard lists of an open pull request: who, where, which head, and its diff job."""
    pull = spec.kwargs["pull"]
    repo = pull["repo"]
    return orjson.dumps({"forge": repo["forge"], "repo": repo["full_name"], "number": pull["number"],
                         "title": pull.get("title", ""), "author": pull.get("author", ""),
                         "base_ref": pull.get("base_ref", ""), "head_sha": pull["head_sha"],
                         "job": job_id, "at": at or time.time()})
