"""Keep each deployed environment in sync: check its cluster against the deployed commit, record
what was found, tell the forge, and heal the drift where the environment asks for it.

Runs on the reconcile schedule (one job per environment) and on demand (`gitops-bot drift`).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from rq import get_current_job

from bot import deploy, deploy_report, drift, runtime
from bot.cluster import ClusterClient, ClusterError, connect
from bot.config import ConfigError, Environment, RepoConfig
from bot.environments import EnvRef, Environments, Record, Sync
from bot.events import Repo
from bot.forges.base import Forge
from bot.gitrepo import GitError, Mirror
from bot.metrics import FleetMetrics
from bot.pipeline import read_repo_config
from bot.render import render
from bot.renderers.errors import RenderError

log = logging.getLogger("gitops_bot.sync")

HEAL_BACKOFF = 3600.0
"""Seconds after a failed heal of a commit before its drift is re-applied again."""


@dataclass(frozen=True)
class Checked:
    """One environment's check: the record kept, and the comparison behind it (None on an error)."""

    sync: Sync
    report: drift.Report | None = None
    healed: deploy.Result | None = None


def governing_config(rt: runtime.Runtime, mirror: Mirror, url: str, default: str) -> RepoConfig:
    """The repo config on the default branch as fetched now: what deploys where, as a deploy reads it."""
    mirror.ensure(url, [], [f"+refs/heads/{default}:refs/heads/{default}"], refresh=True)
    return read_repo_config(mirror.snapshot(mirror.resolve(f"refs/heads/{default}")), default,
                            set(rt.server.clusters))


def check_environment(rt: runtime.Runtime, repo: Repo, name: str, *, report_to: Forge | None = None,
                      heal: bool = True) -> Checked | None:
    """Compare environment `name` with its cluster and record it. None when there is nothing to
    compare (no such environment with a cluster, never deployed, or a deploy is under way, which
    records its own check when it ends)."""
    forge = rt.forge(repo.forge)
    mirror = rt.mirrors.get(repo.forge, repo.full_name)
    envs = Environments(rt.store.redis, rt.settings.name)
    url = forge.clone_url(repo, allow_local=rt.server.allow_local_urls)
    try:
        config = governing_config(rt, mirror, url, forge.default_branch(repo.full_name))
    except (GitError, ConfigError) as err:
        log.warning("sync check skipped: the repo config cannot be read", extra={"repo": repo.full_name,
                                                                                  "error": str(err)})
        return None
    env = config.get(name)
    if env is None or env.cluster is None:
        return None
    ref = EnvRef(repo.forge, repo.full_name, env.name)
    status = envs.status(ref)
    if status.deployed is None or status.deploying:
        return None
    checked = _check(rt, envs, ref, repo, env, mirror, url, status.deployed.sha, heal and env.drift == "heal")
    envs.record_sync(ref, checked.sync)
    if report_to is not None and envs.sync_news(ref, checked.sync):
        state, description = deploy_report.sync_status(checked.sync)
        report_to.set_status(repo.full_name, checked.sync.sha, f"{rt.settings.name}/sync", state, description)
    log.info("sync checked", extra={"repo": repo.full_name, "environment": env.name, "state": checked.sync.state,
                                    "drifted": checked.sync.drifted_count, "healed": checked.sync.healed})
    return checked


def _check(rt: runtime.Runtime, envs: Environments, ref: EnvRef, repo: Repo, env: Environment, mirror: Mirror,
           url: str, sha: str, heal: bool) -> Checked:
    cluster = rt.server.clusters.get(env.cluster or "")
    refusal = (rt.server.refusal(repo.full_name, env) if cluster
               else f"cluster {env.cluster!r} is not in the server config")
    if refusal:
        return Checked(Sync(sha, time.time(), "error", error=refusal))
    inventory = deploy.Inventory.of(rt.settings.name, ref.forge, ref.repo, ref.name)
    try:
        mirror.ensure(url, [sha], [])
        manifests = render(mirror.snapshot(sha), env, timeout=rt.server.render_timeout,
                           sandbox=rt.server.render_sandbox, cache=rt.render_cache)
        with connect(cluster) as client:  # type: ignore[arg-type]
            def look() -> drift.Report:
                return drift.check(client, manifests, env, inventory, envs.applied_kinds(ref),
                                   cluster.namespaces)  # type: ignore[union-attr]
            report = look()
            if report.in_sync or not heal or not _worth_healing(envs, ref, report, env, sha):
                return Checked(report.sync(sha), report)
            healed = _heal(rt, envs, ref, client, report, env, sha)
            if healed is None or healed.error:
                return Checked(report.sync(sha), report, healed)
            after = look()
            return Checked(after.sync(sha, healed=True), after, healed)
    except (GitError, RenderError, ClusterError, deploy.DeployError) as err:
        what = "render failed: " if isinstance(err, RenderError) else ""
        return Checked(Sync(sha, time.time(), "error", error=f"{what}{err}"))


def _worth_healing(envs: Environments, ref: EnvRef, report: drift.Report, env: Environment, sha: str) -> bool:
    """Whether a heal would do anything (objects no longer rendered stay without `prune: true`), and
    has not just failed: a heal of the same commit that failed within `HEAL_BACKOFF` is not tried
    again, so the history does not fill with the same failure every reconcile."""
    if not drift.healing(report, env).actions:
        return False
    last = next(iter(envs.history(ref, 1)), None)
    return not (last and last.heal and not last.ok and last.sha == sha and time.time() - last.started < HEAL_BACKOFF)


def _heal(rt: runtime.Runtime, envs: Environments, ref: EnvRef, client: ClusterClient, report: drift.Report,
          env: Environment, sha: str) -> deploy.Result | None:
    """Re-apply the drift under the environment's deploy lock, recorded in its history as a deploy of
    the same commit by the bot. None when a deploy holds the lock or moved the environment on."""
    job = get_current_job()
    lease = envs.acquire(ref, sha, job.id if job else uuid.uuid4().hex)
    if lease is None:
        return None  # a deploy is under way: it applies everything anyway
    lease.keep_alive()
    try:
        deployed = envs.deployed(ref)
        if deployed is None or deployed.sha != sha:
            return None
        started = time.time()
        options = deploy.Options(rt.server.rollout_timeout, rt.server.render_timeout,
                                 render_sandbox=rt.server.render_sandbox)
        result = drift.heal(client, report, env, options, lease.problem)
        record = Record(sha, rt.settings.name, started, "failure" if result.error else "success",
                        round(result.duration, 3), **result.counts, error=result.error, heal=True)
        envs.record_heal(lease, record)
        FleetMetrics(rt.store.redis, rt.store.prefix).deploy(env.name, "healed" if record.ok else "heal_failed")
        log.info("drift healed" if record.ok else "drift heal failed", extra={
            "environment": env.name, "sha": sha, "counts": record.counts, "error": result.error})
        return result
    finally:
        lease.release()
