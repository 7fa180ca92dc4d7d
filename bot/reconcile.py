"""Catch up on missed webhooks: open pull requests without a diff, environment branches not deployed.

GitHub never redelivers a failed webhook on its own, and GitLab gives up on a failing hook, so
this runs periodically (each worker keeps one run scheduled) and on demand (`gitops-bot reconcile`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from bot import runtime
from bot.config import ConfigError
from bot.environments import EnvRef, Environments
from bot.events import PullRequestEvent, Repo
from bot.forges.base import Forge
from bot.gitrepo import GitError
from bot.intake import deploy_job, diff_job
from bot.pipeline import read_repo_config
from bot.queue import Store

log = logging.getLogger("gitops_bot.reconcile")


@dataclass
class Findings:
    """What one reconcile queued, by repository."""

    diffs: list[str] = field(default_factory=list)
    deploys: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def reconcile(rt: runtime.Runtime) -> Findings:
    """Queue what every known repository is missing. A repository that fails does not stop the rest."""
    findings = Findings()
    for repo in rt.store.known_repos():
        if not rt.server.allows(repo.full_name):
            continue
        try:
            forge = rt.forge(repo.forge)
            url = forge.clone_url(repo, allow_local=rt.server.allow_local_urls)  # refused before anything is queued
            _missing_diffs(rt, forge, repo, findings)
            _missing_deploys(rt, forge, repo, url, findings)
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


def _missing_deploys(rt: runtime.Runtime, forge: Forge, repo: Repo, url: str, findings: Findings) -> None:
    mirror = rt.mirrors.get(repo.forge, repo.full_name)
    default = forge.default_branch(repo.full_name)  # as the forge names it now, not as a payload once did
    try:  # what deploys where, as a deploy reads it: from the default branch
        mirror.ensure(url, [], [f"+refs/heads/{default}:refs/heads/{default}"], refresh=True)
        config = read_repo_config(mirror.snapshot(mirror.resolve(f"refs/heads/{default}")), default,
                                  set(rt.server.clusters))
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
            status = envs.status(EnvRef(repo.forge, repo.full_name, env.name))
            done = status.deployed.sha if status.deployed else None
            if status.hold or head in (done, status.deploying, status.pending.sha if status.pending else None):
                continue
            job = deploy_job(repo, branch, head, "reconcile", environment=env.name)
            delivery = f"reconcile:deploy:{repo.full_name}:{env.name}:{head}"
            if rt.store.queue_once(repo, delivery, job, "reconcile"):
                findings.deploys.append(f"{repo.full_name} {env.name} at {head[:7]}")


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
        log.info("reconciled", extra={"diffs": findings.diffs, "deploys": findings.deploys,
                                      "errors": findings.errors})
        return {"diffs": findings.diffs, "deploys": findings.deploys, "errors": findings.errors}
    finally:
        rt.store.redis.delete(f"{rt.store.prefix}:reconcile:scheduled")
        schedule(rt.store, interval)
