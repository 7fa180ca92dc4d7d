"""Prometheus metrics that stay right with many web replicas and workers on many machines.

Webhook counters live in the web process (gunicorn's workers share them through
`PROMETHEUS_MULTIPROC_DIR`). Everything workers measure is kept in Redis, so whichever web
replica is scraped reports the whole fleet: job durations, deploys, forge errors, rate limits.
Queue depths, and each environment's last sync check, are read from Redis at scrape time.
"""

from __future__ import annotations

import functools
import os
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import redis
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from bot.environments import EnvRef, Environments, Sync
from bot.forges.base import API_ERRORS

F = TypeVar("F", bound=Callable[..., Any])

WEBHOOKS = Counter("gitops_bot_webhooks_total", "Webhook deliveries by forge, event and outcome",
                   ["forge", "event", "outcome"])


class FleetMetrics:
    """Worker-side measurements, written to one Redis hash per metric."""

    def __init__(self, connection: redis.Redis, prefix: str):
        self.redis, self.key = connection, f"{prefix}:metrics"

    def _incr(self, metric: str, labels: tuple[str, ...], amount: float = 1) -> None:
        self.redis.hincrbyfloat(f"{self.key}:{metric}", "\x1f".join(labels), amount)

    @contextmanager
    def job(self, kind: str) -> Iterator[None]:
        """Time a job; its outcome is `ok` unless it raises."""
        start, outcome = time.monotonic(), "error"
        try:
            yield
            outcome = "ok"
        finally:
            elapsed = time.monotonic() - start
            pipe = self.redis.pipeline(transaction=False)
            pipe.hincrbyfloat(f"{self.key}:job_seconds_sum", f"{kind}\x1f{outcome}", elapsed)
            pipe.hincrby(f"{self.key}:job_seconds_count", f"{kind}\x1f{outcome}", 1)
            pipe.execute()

    def deploy(self, environment: str, result: str) -> None:
        self._incr("deploys", (environment, result))

    def forge_error(self, forge: str, kind: str, status: str = "none") -> None:
        self._incr("forge_errors", (forge, kind, status))

    def forge_errors(self, counts: dict[tuple[str, str, str], int]) -> None:
        """Add a process's tally of forge API errors (`bot.forges.base.ApiErrors`) in one round trip."""
        if not counts:
            return
        pipe = self.redis.pipeline(transaction=False)
        for labels, count in counts.items():
            pipe.hincrbyfloat(f"{self.key}:forge_errors", "\x1f".join(labels), count)
        pipe.execute()

    def rate_limit(self, forge: str, remaining: int) -> None:
        self.redis.hset(f"{self.key}:rate_limit_remaining", forge, remaining)


HEALTHS = ("healthy", "progressing", "degraded", "unknown")
ENV_LABELS = ["forge", "repo", "environment"]


class FleetCollector(Collector):
    """Reads FleetMetrics, queue depths and environments' sync checks from Redis when Prometheus scrapes."""

    def __init__(self, metrics: FleetMetrics, queues: list, environments: Environments):
        self.metrics, self.queues, self.environments = metrics, queues, environments

    def _hash(self, metric: str) -> dict[tuple[str, ...], float]:
        raw = self.metrics.redis.hgetall(f"{self.metrics.key}:{metric}")
        return {tuple(k.decode().split("\x1f")): float(v) for k, v in raw.items()}

    def collect(self):  # type: ignore[no-untyped-def]
        try:
            sums, counts = self._hash("job_seconds_sum"), self._hash("job_seconds_count")
            jobs = SummaryMetricFamily("gitops_bot_job_duration_seconds", "Job run time by kind and outcome",
                                       labels=["kind", "outcome"])
            for labels, count in counts.items():
                jobs.add_metric(list(labels), count_value=count, sum_value=sums.get(labels, 0.0))
            yield jobs
            yield self._counter("gitops_bot_deploys", "Deploys by environment and result",
                                ["environment", "result"], self._hash("deploys"))
            # Counted before statuses were: those have no status.
            errors = {labels if len(labels) == 3 else (*labels, "none"): count
                      for labels, count in self._hash("forge_errors").items()}
            yield self._counter("gitops_bot_forge_api_errors", "Forge API errors by forge, kind (transient: "
                                "retried; refused: any other error answer) and HTTP status (none: no answer)",
                                ["forge", "kind", "status"], errors)
            remaining = GaugeMetricFamily("gitops_bot_forge_rate_limit_remaining",
                                          "Requests left in the forge's rate-limit window", labels=["forge"])
            for (forge,), value in self._hash("rate_limit_remaining").items():
                remaining.add_metric([forge], value)
            yield remaining
            depth = GaugeMetricFamily("gitops_bot_queue_depth", "Jobs waiting, running and failed, by queue",
                                      labels=["queue", "state"])
            for queue in self.queues:
                depth.add_metric([queue.name, "queued"], queue.count)
                depth.add_metric([queue.name, "running"], queue.started_job_registry.count)
                depth.add_metric([queue.name, "failed"], queue.failed_job_registry.count)
            yield depth
            yield from self._syncs()
        except redis.RedisError:
            return  # a scrape while Redis is down still shows the web process's own metrics

    def _syncs(self):  # type: ignore[no-untyped-def]
        """Each environment's last sync check: two round trips (the environments, then one pipeline of GETs)."""
        in_sync = GaugeMetricFamily("gitops_bot_environment_in_sync", "1 when the environment's cluster matched its "
                                    "deployed commit at the last check, 0 when it drifted; absent until a check "
                                    "succeeds", labels=ENV_LABELS)
        drifted = GaugeMetricFamily("gitops_bot_environment_drifted_objects", "Objects that drifted from the "
                                    "deployed commit at the last check", labels=ENV_LABELS)
        failed = GaugeMetricFamily("gitops_bot_environment_sync_check_failed", "1 when the last sync check of the "
                                   "environment failed", labels=ENV_LABELS)
        checked = GaugeMetricFamily("gitops_bot_environment_sync_checked_timestamp_seconds", "When the environment's "
                                    "last sync check ran, failed or not (Unix time)", labels=ENV_LABELS)
        objects = GaugeMetricFamily("gitops_bot_environment_objects", "The environment's objects by health at the "
                                    "last check (unknown: no health information)", labels=[*ENV_LABELS, "health"])
        for ref, sync in self._last_checks():
            labels = [ref.forge, ref.repo, ref.name]
            checked.add_metric(labels, sync.checked)
            failed.add_metric(labels, float(sync.state == "error"))
            if sync.state == "error":
                continue
            in_sync.add_metric(labels, float(sync.in_sync))
            drifted.add_metric(labels, sync.drifted_count)
            for health in (*HEALTHS, *sorted(set(sync.health) - set(HEALTHS))):
                objects.add_metric([*labels, health], sync.health.get(health, 0))
        yield from (in_sync, drifted, failed, checked, objects)

    def _last_checks(self) -> list[tuple[EnvRef, Sync]]:
        return list(self.environments.syncs(self.environments.known()).items())

    @staticmethod
    def _counter(name: str, doc: str, labels: list[str], values: dict[tuple[str, ...], float]):
        family = CounterMetricFamily(name, doc, labels=labels)
        for key, value in values.items():
            family.add_metric(list(key), value)
        return family


def measured(kind: str) -> Callable[[F], F]:
    """Time a job into the fleet metrics, and note the rate-limit headroom of each forge it used."""

    def wrap(job_function: F) -> F:
        @functools.wraps(job_function)
        def run(*args: Any, **kwargs: Any) -> Any:
            from bot import runtime  # jobs import this module; the runtime imports the jobs' needs

            rt = runtime.current()
            fleet = FleetMetrics(rt.store.redis, rt.store.prefix)
            try:
                with fleet.job(kind):
                    return job_function(*args, **kwargs)
            finally:
                fleet.forge_errors(API_ERRORS.take())
                for name, forge in rt.forges().items():
                    remaining = forge.rate_limit_remaining()
                    if remaining is not None:
                        fleet.rate_limit(name, remaining)
        return run  # type: ignore[return-value]
    return wrap


def exposition(fleet: FleetCollector) -> bytes:
    """The /metrics body: this web process (or all of gunicorn's workers) plus the fleet."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(WEBHOOKS)
    registry.register(fleet)
    return generate_latest(registry)
