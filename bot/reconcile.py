"""Catch up on missed webhooks: open pull requests without a diff, environment branches not deployed.

GitHub never redelivers a failed webhook on its own, and GitLab gives up on a failing hook, so
this runs periodically (each worker keeps one run scheduled) and on demand (`gitops-bot reconcile`).
What it queues is work that will really be done; what it leaves, it says why.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from bot import runtime
from bot.config import ConfigError
from bot.environments import DEPLOY_TRIES, EnvRef, Environments, Run
from bot.events import PullRequestEvent, Repo
from bot.forges.base import Forge
from bot.gitrepo import GitError
from bot.intake import deploy_job, diff_job, sync_job
from bot.queue import Store
from bot.sync import governing_config

log = logging.getLogger("gitops_bot.reconcile")


@dataclass
class Findings:
    """What one reconcile queued, by repository."""

    diffs: list[str] = field(default_factory=list)
    deploys: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    """Deployed environments queued for a comparison with their cluster (`bot.sync`)."""
    not_deployed: list[str] = field(default_factory=list)
    """Environments behind their branch that no deploy was queued for, each with the reason."""
    errors: list[str] = field(default_factory=list)


def reconcile(rt: runtime.Runtime) -> Findings:
    """Queue what every known repository is missing. A repository that fails does not stop the rest."""
    findings, run = Findings(), f"{time.time():.3f}"
    for repo in rt.store.known_repos():
        if not rt.server.allows(repo.full_name):
            continue
        try:
            forge = rt.forge(repo.forge)
            url = forge.clone_url(repo, allow_local=rt.server.allow_local_urls)  # refused before anything is queued
            _missing_diffs(rt, forge, repo, findings)
            _missing_deploys(rt, forge, repo, url, findings, run)
        except Exception as err:  # one repository's trouble is reported, and the others still run
            log.warning("reconcile failed for a repository", extra={"repo": repo.full_name, "error": str(err)})
            findings.errors.append(f"{repo.full_name}: {err}")
    return findings


def _missing_diffs(rt: runtime.Runtime, forge: Forge, repo: Repo, findings: Findings) -> None:
    context = f"{rt.settings.name}/diff"
    for pull in forge.open_pulls(repo):
        if forge.has_status(repo.full_name, pull.head_sha, context):
            continue
        job = diff_job(PullRequestEvent("opened", pull, sender="reconcile"))
        delivery = f"reconcile:diff:{repo.full_name}#{pull.number}:{pull.head_sha}"
        if rt.store.queue_once(repo, delivery, job, "reconcile"):
            findings.diffs.append(f"{repo.full_name}#{pull.number} at {pull.head_sha[:7]}")


def _missing_deploys(rt: runtime.Runtime, forge: Forge, repo: Repo, url: str, findings: Findings, run: str) -> None:
    mirror = rt.mirrors.get(repo.forge, repo.full_name)
    default = forge.default_branch(repo.full_name)  # as the forge names it now, not as a payload once did
    try:  # what deploys where, as a deploy reads it: from the default branch
        config = governing_config(rt, mirror, url, default)
    except (GitError, ConfigError) as err:
        findings.errors.append(f"{repo.full_name} {default}: {err}")
        return
    branches = sorted({env.branch for env in config.environments if env.cluster})
    mirror.ensure(url, [], [f"+refs/heads/{b}:refs/heads/{b}" for b in branches], refresh=True)
    envs = Environments(rt.store.redis, rt.settings.name)
    for branch in branches:
        try:
            head = mirror.resolve(f"refs/heads/{branch}")
        except GitError as err:
            findings.errors.append(f"{repo.full_name} {branch}: {err}")
            continue
        for env in config.for_branch(branch):
            if env.cluster is None:
                continue
            ref = EnvRef(repo.forge, repo.full_name, env.name)
            status = envs.status(ref)
            if status.deployed and not status.deploying and rt.store.queue_once(
                    repo, f"reconcile:sync:{repo.full_name}:{env.name}:{run}", sync_job(repo, env.name), "reconcile"):
                findings.checks.append(f"{repo.full_name} {env.name}")
            done = status.deployed.sha if status.deployed else None
            if status.hold or head in (done, status.deploying, status.pending.sha if status.pending else None):
                continue
            what = f"{repo.full_name} {env.name} at {head[:7]}"
            current = envs.run(ref, head)
            why_not = _why_not_redeployed(rt, envs, ref, head, current)
            if why_not:
                findings.not_deployed.append(f"{what}: {why_not}")
                continue
            # One delivery per try: a deploy left unfinished is queued again when a try has passed.
            delivery = f"reconcile:deploy:{repo.full_name}:{env.name}:{head}" + (
                f":{current.attempt}" if current else "")
            job = deploy_job(repo, branch, head, "reconcile", environment=env.name)
            if rt.store.queue_once(repo, delivery, job, "reconcile"):
                findings.deploys.append(what)


LIVE_JOB = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.DEFERRED)


def _why_not_redeployed(rt: runtime.Runtime, envs: Environments, ref: EnvRef, head: str,
                        run: Run | None) -> str | None:
    """Why a deploy of the branch's head is not queued, in words; None when one should be.

    A deploy that ended is not tried again: a failure the cluster meant (or one that used up its
    tries) waits for a new commit or `gitops-bot deploy`. A failure awaiting its retry is left to that
    retry while its job lives. A deploy left unfinished (its worker died) is queued, and resumes,
    within `DEPLOY_TRIES`.
    """
    if run is None:
        return None
    by_hand = f"a new commit, or `gitops-bot deploy --env {ref.name}`, deploys it again"
    record = run.record
    if run.state == "refused" and record:
        return f"its deploy was refused: {record.error}; {by_hand}"
    if run.state == "failure" and record:
        tries = f" after {record.attempt} tries" if record.attempt > 1 else ""
        return f"its deploy failed{tries}: {record.error}; {by_hand}"
    if run.state == "running" and run.attempt >= DEPLOY_TRIES:
        return f"its deploy was cut short {run.attempt} times (its worker stopped); {by_hand}"
    if run.state == "retrying" and run.retry_by:
        if _job_lives(rt, run.retry_by):
            error = f": {record.error}" if record else ""
            return f"try {run.attempt} failed{error}; its retry is scheduled"
        envs.forget_retry(ref, head, run.retry_by)  # its job is gone: the deploy queued now tries again
    return None


def _job_lives(rt: runtime.Runtime, job_id: str) -> bool:
    try:
        return Job.fetch(job_id, connection=rt.store.redis).get_status(refresh=False) in LIVE_JOB
    except NoSuchJobError:
        return False


# -- the periodic run --------------------------------------------------------------------------

def schedule(store: Store, interval: float) -> bool:
    """Schedule the next run unless one is already scheduled. Every worker calls this at start;
    the marker key makes one run result, and expires so a lost run is scheduled again."""
    if interval <= 0 or not store.redis.set(f"{store.prefix}:reconcile:scheduled", "1", nx=True,
                                             ex=int(interval * 2) + 60):
        return False
    store.queue("diff").enqueue_in(timedelta(seconds=interval), "bot.reconcile.run_periodically",
                                   kwargs={"interval": interval}, description="reconcile", result_ttl=3600,
                                   failure_ttl=7 * 24 * 3600)
    return True


def run_periodically(interval: float) -> dict[str, list[str]]:
    """The scheduled job: reconcile, then schedule the next run."""
    rt = runtime.current()
    try:
        findings = reconcile(rt)
        result = {"diffs": findings.diffs, "deploys": findings.deploys, "checks": findings.checks,
                  "not_deployed": findings.not_deployed, "errors": findings.errors}
        log.info("reconciled", extra=result)
        rt.store.record_reconcile(result)
        return result
    finally:
        rt.store.redis.delete(f"{rt.store.prefix}:reconcile:scheduled")
        schedule(rt.store, interval)
