"""Each environment's deploy state in Redis: its deploy lock, `/lock` hold, pending commit and history."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Literal

import redis

from bot.errors import TemporaryError

HISTORY_LIMIT = 100
RUN_TTL = 30 * 24 * 3600
"""Seconds the record of one commit's deploy is kept, to answer duplicate triggers."""
FINAL = ("success", "failure", "refused")
DEPLOY_TRIES = 4
"""Tries of one commit's deploy to one environment when the cluster is briefly unable to answer (a
429 or 5xx, a refused or timed-out connection) or its worker dies: the first and its job's three
retries, after the job's back-off of 5 s, 30 s and 2 min (`bot.queue`)."""
UNFINISHED = ("running", "retrying", "pending")
"""Run states without an outcome: the next try resumes the run, with its forge deployment."""
Outcome = Literal["success", "failure", "refused"]


class LockBusy(TemporaryError):
    """Another deploy of the environment held its lock for longer than we would wait; worth retrying."""


@dataclass(frozen=True, order=True)
class EnvRef:
    """An environment of a repository on a forge."""

    forge: str
    repo: str
    name: str


@dataclass(frozen=True)
class Hold:
    """A `/lock`: deploys of the environment wait until `/unlock`."""

    actor: str
    reason: str
    since: float


@dataclass(frozen=True)
class Pending:
    """The newest commit that landed while the environment was held; it deploys on unlock."""

    sha: str
    actor: str
    since: float


@dataclass(frozen=True)
class Record:
    """One deploy's outcome, as history keeps it. Times are Unix seconds."""

    sha: str
    actor: str
    started: float
    result: Outcome
    duration: float = 0.0
    created: int = 0
    changed: int = 0
    deleted: int = 0
    unchanged: int = 0
    error: str | None = None
    attempt: int = 1
    """Which try of this commit's deploy this was: a retry after a temporary failure, or after the
    worker died, is the next. Counts are of all tries so far: an object an earlier try created
    counts as created."""
    retried: bool = False
    """A failed try that is tried again (the cluster was briefly unable to answer)."""
    heal: bool = False
    """A re-apply of the deployed commit's drift by the bot (`drift: heal`), not a new deploy."""

    @property
    def ok(self) -> bool:
        return self.result == "success"

    @property
    def counts(self) -> dict[str, int]:
        return {"created": self.created, "changed": self.changed, "deleted": self.deleted,
                "unchanged": self.unchanged}


@dataclass(frozen=True)
class Status:
    deployed: Record | None
    """The last successful deploy."""
    hold: Hold | None
    pending: Pending | None
    deploying: str | None
    """The SHA being deployed now, if any."""


@dataclass(frozen=True)
class Run:
    """What is known of one commit's deploy to one environment."""

    state: Literal["running", "pending", "retrying", "success", "failure", "refused"]
    record: Record | None = None
    """The outcome; while `retrying`, the failed try's."""
    deployment_id: str | None = None
    attempt: int = 0
    """Tries started so far."""
    retry_by: str | None = None
    """While `retrying`: the job that tries again, after its back-off."""
    deployment_owed: bool = False
    """The forge was busy when the run started: its deployment is made when the outcome is reported."""

    @property
    def final(self) -> bool:
        return self.state in FINAL


SYNC_OBJECTS = 50
"""Drifted and unhealthy objects a sync state names; the counts stay whole."""


@dataclass(frozen=True)
class Sync:
    """The last comparison of an environment's cluster with its deployed commit (see `bot.drift`).

    `drifted` lists objects as `{"key", "what", "fields", "managers"}`: `what` is `missing` (gone from
    the cluster), `changed` (fields the bot applied differ, or another field manager now holds them;
    `fields` names them, `managers` who holds them) or `extra` (carrying the inventory, no longer
    rendered). `unhealthy` lists objects as `{"key", "health", "message"}`. Each list is cut to
    `SYNC_OBJECTS`; the counts are whole.
    """

    sha: str
    checked: float
    state: Literal["in_sync", "drifted", "error"]
    drifted_count: int = 0
    drifted: tuple[dict[str, Any], ...] = ()
    compared: int = 0
    """Objects compared (those rendered plus those found carrying the inventory)."""
    health: dict[str, int] = field(default_factory=dict)
    """Objects by health: `healthy`, `progressing`, `degraded`, `unknown` (no health information)."""
    unhealthy: tuple[dict[str, Any], ...] = ()
    healed: bool = False
    """The drift was re-applied (`drift: heal`) after this check found it."""
    error: str | None = None

    @property
    def in_sync(self) -> bool:
        return self.state == "in_sync"

    @classmethod
    def from_json(cls, raw: bytes | None) -> "Sync | None":
        if not raw:
            return None
        data = json.loads(raw)
        return cls(**{**data, "drifted": tuple(data.get("drifted") or ()),
                      "unhealthy": tuple(data.get("unhealthy") or ())})


def _load(cls: type, raw: bytes | None) -> Any:
    return cls(**json.loads(raw)) if raw else None


def _dump(value: Any) -> str:
    return json.dumps(asdict(value))


class Lease:
    """The deploy lock of one environment, held for one commit. A thread renews it until released.

    Its value is "<fencing token> <sha> <owner>"; the owner is the job that took it.
    """

    def __init__(self, envs: "Environments", env: EnvRef, sha: str, value: str, ttl: float):
        self.envs, self.env, self.sha, self.value, self.ttl = envs, env, sha, value, ttl
        self.token = int(value.split()[0])
        """The fencing token: it grows with every acquisition, and state writes check it."""
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def keep_alive(self) -> None:
        self._thread = threading.Thread(target=self._renew, daemon=True, name=f"lease-{self.env.name}")
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                renewed = self.envs._renew_script(keys=[self.envs.key(self.env, "lock")],
                                                  args=[self.value, int(self.ttl * 1000)])
            except redis.RedisError:
                continue  # the lock lasts `ttl`: the next beat may get through
            if not renewed:
                self.lost = True
                return

    def problem(self) -> str | None:
        """Why the holder must stop, if it must: someone else may hold the lock now."""
        return "the environment's deploy lock expired and may be held by another deploy" if self.lost else None

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.envs._release_script(keys=[self.envs.key(self.env, "lock")], args=[self.value])


class Environments:
    """Deploy state of every environment, under the instance's key prefix."""

    def __init__(self, connection: redis.Redis, instance: str, lock_ttl: float = 30.0):
        self.redis, self.lock_ttl = connection, lock_ttl
        self.prefix = f"gitops-bot:{instance}:env"
        self._acquire_script = connection.register_script(self._ACQUIRE)
        self._renew_script = connection.register_script(self._RENEW)
        self._release_script = connection.register_script(self._RELEASE)
        self._fenced_script = connection.register_script(self._FENCED)
        self._join_script = connection.register_script(self._JOIN)
        self._owed_script = connection.register_script(self._OWED)
        self._forget_retry_script = connection.register_script(self._FORGET_RETRY)

    def key(self, env: EnvRef, *parts: str) -> str:
        return ":".join((self.prefix, env.forge, env.repo, env.name, *parts))

    @property
    def _known_key(self) -> str:
        return f"{self.prefix}s"

    def known(self) -> list[EnvRef]:
        """Every environment that was ever locked or deployed, for the dashboard."""
        return sorted(EnvRef(**json.loads(raw)) for raw in self.redis.smembers(self._known_key))

    # -- /lock, /unlock, /status ---------------------------------------------------------------------
    def lock(self, env: EnvRef, actor: str, reason: str = "") -> Hold:
        """Hold deploys of `env` (replacing any hold): commits that land meanwhile are recorded as pending."""
        hold = Hold(actor, reason, time.time())
        with self.redis.pipeline() as pipe:
            pipe.set(self.key(env, "hold"), _dump(hold))
            pipe.sadd(self._known_key, _dump(env))
            pipe.execute()
        return hold

    def unlock(self, env: EnvRef) -> Pending | None:
        """Release the hold. Returns the pending commit, which the caller should now deploy."""
        with self.redis.pipeline() as pipe:  # a transaction: a commit deferred meanwhile is not lost
            pipe.delete(self.key(env, "hold"))
            pipe.get(self.key(env, "pending"))
            pipe.delete(self.key(env, "pending"))
            _, pending, _ = pipe.execute()
        return _load(Pending, pending)

    def hold(self, env: EnvRef) -> Hold | None:
        return _load(Hold, self.redis.get(self.key(env, "hold")))

    def pending(self, env: EnvRef) -> Pending | None:
        return _load(Pending, self.redis.get(self.key(env, "pending")))

    def deployed(self, env: EnvRef) -> Record | None:
        return _load(Record, self.redis.get(self.key(env, "deployed")))

    def history(self, env: EnvRef, limit: int = HISTORY_LIMIT) -> list[Record]:
        """Deploy attempts that finished (succeeded, failed or were refused), newest first."""
        return [_load(Record, raw) for raw in self.redis.lrange(self.key(env, "history"), 0, limit - 1)]

    def status(self, env: EnvRef) -> Status:
        lock = self.redis.get(self.key(env, "lock"))
        return Status(self.deployed(env), self.hold(env), self.pending(env),
                      lock.decode().split()[1] if lock else None)

    # -- drift and health (`bot.drift`) -------------------------------------------------------------
    def sync(self, env: EnvRef) -> Sync | None:
        return Sync.from_json(self.redis.get(self.key(env, "sync")))

    def syncs(self, envs: list[EnvRef]) -> dict[EnvRef, Sync]:
        """The last check of each of `envs` that has one, in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for env in envs:
                pipe.get(self.key(env, "sync"))
            found = zip(envs, pipe.execute())
        return {env: sync for env, raw in found if (sync := Sync.from_json(raw)) is not None}

    def record_sync(self, env: EnvRef, sync: Sync) -> None:
        """Keep the newest check of `env`."""
        with self.redis.pipeline() as pipe:
            pipe.set(self.key(env, "sync"), _dump(sync))
            pipe.sadd(self._known_key, _dump(env))
            pipe.execute()

    def sync_news(self, env: EnvRef, sync: Sync) -> bool:
        """Whether the forge has not been told of this state yet (a new commit, state, count or error):
        True once per state, for whoever should tell it."""
        said = json.dumps([sync.sha, sync.state, sync.drifted_count, sync.error])
        return self.redis.set(self.key(env, "sync", "said"), said, get=True) != said.encode()

    # -- what a prune must look through --------------------------------------------------------------
    def applied_kinds(self, env: EnvRef) -> set[str]:
        return {k.decode() for k in self.redis.smembers(self.key(env, "kinds"))}

    def add_applied_kinds(self, env: EnvRef, kinds: set[str] | frozenset[str]) -> None:
        if kinds:
            self.redis.sadd(self.key(env, "kinds"), *sorted(kinds))

    # -- the deploy lock -----------------------------------------------------------------------------
    # Redis values compare as strings; the lock's value is "<fencing token> <sha> <owner>". Its owner
    # takes it over (a job retried after its worker died): with a new token, so whatever the earlier
    # holder might still write is refused, as after an expiry.
    _ACQUIRE = """
    local held = redis.call('GET', KEYS[1])
    if held and string.match(held, '^%S+ %S+ (.+)$') ~= ARGV[3] then return false end
    local value = redis.call('INCR', KEYS[2]) .. ' ' .. ARGV[1] .. ' ' .. ARGV[3]
    redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
    return value
    """
    _RENEW = """
    if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
    """
    _RELEASE = """
    if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
    """
    # Commands (a JSON list) run only while the lock still holds the caller's value: a deploy whose
    # lock expired cannot overwrite the record of the one that holds it now.
    _FENCED = """
    if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
    for _, command in ipairs(cjson.decode(ARGV[2])) do redis.call(unpack(command)) end
    return 1
    """

    def acquire(self, env: EnvRef, sha: str, owner: str) -> Lease | None:
        """The lock, or None while another owner holds it. It expires unless renewed (`Lease.keep_alive`).

        `owner` names who asks (a job's id): one that holds it already, and died, takes it over at once.
        """
        value = self._acquire_script(keys=[self.key(env, "lock"), self.key(env, "fence")],
                              args=[sha, int(self.lock_ttl * 1000), owner])
        return Lease(self, env, sha, value.decode(), self.lock_ttl) if value else None

    @contextmanager
    def deploy_lock(self, env: EnvRef, sha: str, wait: float, owner: str) -> Iterator[Lease]:
        """Hold the environment's deploy lock, renewed, waiting up to `wait` seconds for it."""
        deadline = time.monotonic() + wait
        while (lease := self.acquire(env, sha, owner)) is None:
            if time.monotonic() >= deadline:
                raise LockBusy(f"environment {env.name} is still being deployed after {wait:g} s")
            time.sleep(0.2)
        lease.keep_alive()
        try:
            yield lease
        finally:
            lease.release()

    def _write(self, lease: Lease, commands: list[list[Any]]) -> bool:
        keys = [self.key(lease.env, "lock"), *{str(c[1]) for c in commands}]
        script = json.dumps([[str(arg) for arg in command] for command in commands])
        return bool(self._fenced_script(keys=keys, args=[lease.value, script]))

    # -- one commit's deploy -------------------------------------------------------------------------
    _JOIN = """
    if ARGV[1] ~= '' then
      redis.call('SADD', KEYS[2], ARGV[1])
      redis.call('EXPIRE', KEYS[2], ARGV[2])
    end
    local state = redis.call('HGET', KEYS[1], 'state')
    if state == 'success' or state == 'failure' or state == 'refused' then return 'done' end
    local held = redis.call('GET', KEYS[3])
    if state == 'running' and held and held == redis.call('HGET', KEYS[1], 'lock') then
      if string.match(held, '^%S+ %S+ (.+)$') == ARGV[3] then return 'new' end
      return 'joined'
    end
    local by = redis.call('HGET', KEYS[1], 'retry_by')
    if state == 'retrying' and by and by ~= ARGV[3] then return 'joined' end
    return 'new'
    """

    def join(self, env: EnvRef, sha: str, reply_to: int | None = None,
             owner: str = "") -> Literal["new", "joined", "done"]:
        """Ask, as `owner` (a job's id), for a deploy of `sha`, to be reported on pull request `reply_to`.

        `done`: it was deployed (report the record); `joined`: a live deploy is running it, or a
        retry is scheduled for it, and will reply to `reply_to` too; `new`: take the lock and `start`
        it. A deploy whose own job (retried after its worker died, or after a temporary failure) asks
        again is `new`: that job resumes it.
        """
        return self._join_script(keys=[self.key(env, "run", sha), self.key(env, "run", sha, "replies"),
                                self.key(env, "lock")],
                          args=[reply_to or "", RUN_TTL, owner]).decode()

    def run(self, env: EnvRef, sha: str) -> Run | None:
        raw = {k.decode(): v.decode() for k, v in self.redis.hgetall(self.key(env, "run", sha)).items()}
        if not raw:
            return None
        record = Record(**json.loads(raw["record"])) if "record" in raw else None
        return Run(raw["state"], record, raw.get("deployment"), int(raw.get("attempt", 0)),  # type: ignore[arg-type]
                   raw.get("retry_by"), "deployment_owed" in raw)

    def start(self, lease: Lease, force: bool = False) -> int:
        """Mark the lease's commit as deploying: the number of this try, or 0 if the commit was
        deployed meanwhile (unless `force`).

        A run an earlier try left unfinished (its worker died, it awaits its retry, or it was held) is
        resumed: it keeps its forge deployment and what earlier tries planned (`planned`).
        """
        current = self.run(lease.env, lease.sha)
        if current and current.final and not force:
            return 0
        run = self.key(lease.env, "run", lease.sha)
        resumed = current is not None and current.state in UNFINISHED
        # A try that found the environment held (`defer`) did nothing: the next one takes its number.
        attempt = max(current.attempt + (current.state != "pending"), 1) if resumed else 1
        fresh = [] if resumed else [["DEL", run], ["DEL", self.key(lease.env, "run", lease.sha, "planned")]]
        started = self._write(lease, [*fresh, ["HSET", run, "state", "running", "lock", lease.value, "attempt", attempt],
                                      ["HDEL", run, "retry_by"], ["EXPIRE", run, RUN_TTL]])
        return attempt if started else 0

    def set_deployment(self, lease: Lease, deployment_id: str) -> None:
        """The forge's deployment for this run, to finish when the result is known."""
        self._write(lease, [["HSET", self.key(lease.env, "run", lease.sha), "deployment", deployment_id]])

    def owe_deployment(self, lease: Lease) -> None:
        """The forge was busy when this run started: make its deployment when the outcome is reported."""
        self._write(lease, [["HSET", self.key(lease.env, "run", lease.sha), "deployment_owed", 1]])

    def paid_deployment(self, env: EnvRef, sha: str, deployment_id: str) -> None:
        """The owed deployment, made by whoever holds the report's claim (`claim_report`)."""
        run = self.key(env, "run", sha)
        with self.redis.pipeline() as pipe:
            pipe.hset(run, "deployment", deployment_id)
            pipe.hdel(run, "deployment_owed")
            pipe.execute()

    def plan(self, lease: Lease, actions: dict[str, str]) -> None:
        """What this try is about to do, object by object (`ObjectKey` text: create, change or delete).
        An object an earlier try of the run planned keeps that try's word."""
        if actions:
            planned = self.key(lease.env, "run", lease.sha, "planned")
            self._write(lease, [*(["HSETNX", planned, key, op] for key, op in sorted(actions.items())),
                                ["EXPIRE", planned, RUN_TTL]])

    def planned(self, env: EnvRef, sha: str) -> dict[str, str]:
        """What the tries of one commit's deploy planned so far (see `plan`)."""
        return {k.decode(): v.decode() for k, v in self.redis.hgetall(self.key(env, "run", sha, "planned")).items()}

    def defer(self, lease: Lease, actor: str) -> bool:
        """Record the lease's commit as the environment's pending one (it is held)."""
        run = self.key(lease.env, "run", lease.sha)
        pending = _dump(Pending(lease.sha, actor, time.time()))
        return self._write(lease, [["HSET", run, "state", "pending"], ["SET", self.key(lease.env, "pending"), pending],
                                   ["SADD", self._known_key, _dump(lease.env)]])

    def finish(self, lease: Lease, record: Record) -> bool:
        """Record the outcome: in the run, the history and, on success, as the deployed commit.

        False, and nothing written, if the lease was lost.
        """
        commands = [["HSET", self.key(lease.env, "run", lease.sha), "state", record.result, "record", _dump(record)],
                    *self._history(lease.env, record)]
        if record.ok:
            commands.append(["SET", self.key(lease.env, "deployed"), _dump(record)])
        return self._write(lease, commands)

    def record_heal(self, lease: Lease, record: Record) -> bool:
        """Record a re-apply of the deployed commit's drift: in the history only, the deployed record
        staying the deploy's. False, and nothing written, if the lease was lost."""
        return self._write(lease, self._history(lease.env, record))

    def retry_later(self, lease: Lease, record: Record, by: str) -> bool:
        """Record a failed try that job `by` tries again: in the history, but not as the run's outcome.

        False, and nothing written, if the lease was lost.
        """
        run = self.key(lease.env, "run", lease.sha)
        return self._write(lease, [["HSET", run, "state", "retrying", "record", _dump(record), "retry_by", by],
                                   *self._history(lease.env, record)])

    def forget_retry(self, env: EnvRef, sha: str, by: str) -> bool:
        """Job `by` will not try the run again after all (it is gone): the next deploy of `sha` does.
        False when the run awaits no retry by `by`."""
        return bool(self._forget_retry_script(keys=[self.key(env, "run", sha)], args=[by]))

    _FORGET_RETRY = """
    if redis.call('HGET', KEYS[1], 'retry_by') ~= ARGV[1] then return 0 end
    return redis.call('HDEL', KEYS[1], 'retry_by')
    """

    def _history(self, env: EnvRef, record: Record) -> list[list[Any]]:
        history = self.key(env, "history")
        return [["LPUSH", history, _dump(record)], ["LTRIM", history, 0, HISTORY_LIMIT - 1],
                ["SADD", self._known_key, _dump(env)]]

    # -- reporting it, each part once ----------------------------------------------------------------
    def claim_report(self, env: EnvRef, sha: str) -> bool:
        """True for the first caller: it finishes the forge deployment (and gives it back if that fails)."""
        return bool(self.redis.hsetnx(self.key(env, "run", sha), "reported", 1))

    def unclaim_report(self, env: EnvRef, sha: str) -> None:
        self.redis.hdel(self.key(env, "run", sha), "reported")

    _OWED = """
    local owed = redis.call('SDIFF', KEYS[1], KEYS[2])
    for _, number in ipairs(owed) do redis.call('SADD', KEYS[2], number) end
    redis.call('EXPIRE', KEYS[2], ARGV[1])
    return owed
    """

    def claim_replies(self, env: EnvRef, sha: str) -> list[int]:
        """Pull requests still owed the result; each is handed out once (give back with `unclaim_reply`)."""
        owed = self._owed_script(keys=[self.key(env, "run", sha, "replies"), self.key(env, "run", sha, "replied")],
                          args=[RUN_TTL])
        return sorted(int(n) for n in owed)

    def unclaim_reply(self, env: EnvRef, sha: str, number: int) -> None:
        self.redis.srem(self.key(env, "run", sha, "replied"), number)
