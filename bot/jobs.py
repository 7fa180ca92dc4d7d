"""RQ jobs. Each takes plain values, builds what it needs from the runtime, and reports back."""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterator, Mapping

from redis.exceptions import LockError
from rq import get_current_job

from bot import deploy, deploy_report, drift, governance, preview, runtime, slash, sync
from bot.cluster import ClusterClient, ClusterError
from bot.comments import sync_comments
from bot.metrics import FleetMetrics, measured
from bot.errors import TemporaryError
from bot.retries import retried_as_the_error_says
from bot.config import ConfigError, Environment
from bot.diff import DiffReport
from bot.environments import DEPLOY_TRIES, EnvRef, Environments, Lease, Record
from bot.events import PullRequest, Repo, pull_from_plain, repo_from_plain
from bot.forges.base import Forge, StatusState
from bot.gitrepo import GitError, Mirror
from bot.pipeline import diff_snapshots, read_repo_config
from bot.render import Manifest, Workspace
from bot.queue import pull_key
from bot.report import markdown, marker, status_description

log = logging.getLogger("gitops_bot.jobs")


POST_LOCK_SECONDS = 300
"""Longest a diff job may hold a pull request's comment; a dead worker's hold expires after it."""


@measured("diff")
@retried_as_the_error_says
def diff_pull_request(pull: dict[str, Any], generation: str | None = None,
                      requested_by: str | None = None) -> dict[str, Any]:
    """Render a pull request's base and head, and bring its diff comment and status up to date.

    `requested_by`: who asked with `/diff`; their own right to a live plan is checked (`bot.preview`).
    """
    rt = runtime.current()
    pr = pull_from_plain(pull)
    key = pull_key(pr.repo.forge, pr.repo.full_name, pr.number)
    context = f"{rt.settings.name}/diff"

    def superseded() -> bool:
        return generation is not None and generation != rt.store.newest(key)

    if superseded():
        log.info("diff superseded before it started", extra={"pull": key, "head": pr.head_sha})
        return {"superseded": True}
    forge = rt.forge(pr.repo.forge)
    try:
        fetched: Fetched | GitError | None = fetch_pull(rt, forge, pr)
    except GitError as err:
        fetched = err
    if fetched is None:
        log.info("diff skipped: the pull request's head is not the one named", extra={"pull": key, "head": pr.head_sha})
        return {"superseded": True}
    forge.set_status(pr.repo.full_name, pr.head_sha, context, "pending", "rendering manifests")
    report = (DiffReport(pr.base_sha, pr.head_sha, error=str(fetched)) if isinstance(fetched, GitError)
              else build_report(rt, pr, fetched, forge, requested_by))
    bodies = markdown(report, rt.settings.name, forge.comment_limit)
    # One job at a time edits a pull request's comment, so two workers never both create it, and
    # whichever posts second checks again that it is still the newest.
    with _comment_lock(rt, key):
        if superseded():  # a newer head is queued: its job owns the comment now
            forge.set_status(pr.repo.full_name, pr.head_sha, context, "error", "superseded by a newer push")
            return {"superseded": True}
        sync_comments(forge, pr.repo.full_name, pr.number, marker(rt.settings.name), bodies)
    state: StatusState = "failure" if report.failed or report.refused else "success"
    forge.set_status(pr.repo.full_name, pr.head_sha, context, state, status_description(report))
    counts = report.counts
    log.info("diff posted", extra={"pull": key, "head": pr.head_sha, "state": state, "parts": len(bodies)})
    return {"state": state, "added": counts.added, "changed": counts.changed, "removed": counts.removed,
            "parts": len(bodies)}


@contextmanager
def _comment_lock(rt: runtime.Runtime, key: str) -> Iterator[None]:
    """A pull request's comment lock, owned by this RQ job: a retry of a job whose worker died
    holding it takes it over at once instead of waiting for it to expire."""
    job = get_current_job()
    owner = job.id if job else uuid.uuid4().hex
    name = f"{rt.store.prefix}:{key}:comment"
    if rt.store.redis.get(name) == owner.encode():
        rt.store.redis.delete(name)
    lock = rt.store.redis.lock(name, timeout=POST_LOCK_SECONDS, blocking_timeout=POST_LOCK_SECONDS)
    if not lock.acquire(token=owner):
        raise TemporaryError(f"another job held the comment of {key} for {POST_LOCK_SECONDS} s")
    try:
        yield
    finally:
        with suppress(LockError):  # it expired meanwhile: nothing left to release
            lock.release()


@dataclass(frozen=True)
class Fetched:
    """A pull request as its repository holds it now: the mirror, its base branch's tip, and the
    repository's default branch as the forge names it."""

    mirror: Mirror
    base_tip: str
    default_branch: str


def fetch_pull(rt: runtime.Runtime, forge: Forge, pr: PullRequest) -> Fetched | None:
    """Fetch the base branch and the pull request's head from the forge. None when the head there is
    not the one named (a newer push, or a payload that names a commit the pull request does not
    hold), once the forge's API agrees."""
    mirror = rt.mirrors.get(pr.repo.forge, pr.repo.full_name)
    base_branch, pull_ref = f"refs/heads/{pr.base_ref}", f"refs/pull-heads/{pr.number}"
    mirror.ensure(forge.clone_url(pr.repo, allow_local=rt.server.allow_local_urls), [],
                  [f"+{base_branch}:{base_branch}",
                   f"+{forge.pull_refspec(pr.number)}:{pull_ref}"], refresh=True)
    if mirror.resolve(pull_ref) != pr.head_sha:  # the forge may move its ref a moment after it tells
        live = forge.pull_state(pr.repo.full_name, pr.number)
        if (live.head_sha, live.base_ref) != (pr.head_sha, pr.base_ref):
            return None
        mirror.ensure(forge.clone_url(pr.repo, allow_local=rt.server.allow_local_urls), [pr.head_sha],
                      [f"+{forge.pull_refspec(pr.number)}:{pull_ref}"])
    # The repo config in force is the base branch's as fetched now, never a commit a payload names.
    return Fetched(mirror, mirror.resolve(base_branch), forge.default_branch(pr.repo.full_name))


def build_report(rt: runtime.Runtime, pr: PullRequest, fetched: Fetched, forge: Forge | None = None,
                 requested_by: str | None = None) -> DiffReport:
    """Diff the merge base against the head (as the PR's files view does), with the server's grants
    and any change to `.gitops.yaml` reviewed; with `forge`, each cluster's live plan too."""
    mirror, base_tip = fetched.mirror, fetched.base_tip
    base_sha = mirror.merge_base(base_tip, pr.head_sha) or base_tip
    base, head = mirror.snapshot(base_sha), mirror.snapshot(pr.head_sha)
    changed = mirror.changed_paths(base_sha, pr.head_sha)
    config = mirror.snapshot(base_tip)
    report = diff_snapshots(
        base, head, config_snapshot=config, base_sha=base_sha, head_sha=pr.head_sha,
        branch=pr.base_ref, default_branch=fetched.default_branch,
        changed=changed, server_rules=rt.server.ignore,
        clusters=set(rt.server.clusters), timeout=rt.server.render_timeout, sandbox=rt.server.render_sandbox,
        cache=rt.render_cache)
    report = governance.review(report, server=rt.server, repo=pr.repo.full_name, base=config, head=head,
                               changed=changed, branch=pr.base_ref, default_branch=fetched.default_branch)
    if forge is None:
        return report
    return preview.add_live_plans(rt, forge, pr, report, head=head, config=config,
                                  default_branch=fetched.default_branch, requested_by=requested_by)


@measured("commands")
@retried_as_the_error_says
def run_commands(repo: dict[str, Any], number: int, comment_id: int, body: str, author: str) -> dict[str, Any]:
    """Run the slash commands of a new pull request comment, and answer it."""
    return slash.run(runtime.current(), slash.Request(repo_from_plain(repo), number, comment_id, body, author))


@measured("sync")
@retried_as_the_error_says
def check_sync(repo: dict[str, Any], environment: str) -> dict[str, Any]:
    """Compare one deployed environment with its cluster; heal the drift where it asks for that."""
    rt = runtime.current()
    source = repo_from_plain(repo)
    checked = sync.check_environment(rt, source, environment, report_to=rt.forge(source.forge))
    if checked is None:
        return {"state": "not checked"}
    return {"state": checked.sync.state, "drifted": checked.sync.drifted_count, "healed": checked.sync.healed,
            "error": checked.sync.error}


# -- deploy -----------------------------------------------------------------------------------------

LOCK_WAIT = 300.0
"""Seconds, beyond the rollout time-out, a deploy waits for another deploy of the same environment."""


@dataclass(frozen=True)
class Target:
    """One environment at one commit, who asked for it, and the pull request to reply on."""

    repo: Repo
    env: Environment
    sha: str
    actor: str
    pull: int | None = None
    tip: str | None = None
    """The branch's tip when the deploy was asked for. Only a deploy of the tip is tried again after
    a temporary failure: an older commit would be refused once the newer one is deployed."""

    @property
    def ref(self) -> EnvRef:
        return EnvRef(self.repo.forge, self.repo.full_name, self.env.name)


@measured("deploy")
@retried_as_the_error_says
def deploy_push(repo: dict[str, Any], branch: str, sha: str, actor: str, pull: int | None = None,
                environment: str | None = None) -> dict[str, Any]:
    """Deploy each environment of `branch` that has a cluster (or only `environment`) at `sha`.

    An empty `sha` means the branch's tip. What deploys where is read from `.gitops.yaml` on the
    repository's default branch, as the forge names it now: a push to any other branch can never
    declare itself an environment. Only a commit on the branch's current history deploys.
    An environment whose deploy failed on a temporary cluster error makes the job try again, after
    the others are done.
    """
    rt = runtime.current()
    source = repo_from_plain(repo)
    forge = rt.forge(source.forge)
    mirror = rt.mirrors.get(source.forge, source.full_name)
    default = forge.default_branch(source.full_name)
    mirror.ensure(forge.clone_url(source, allow_local=rt.server.allow_local_urls), [sha] if sha else [],
                  [f"+refs/heads/{b}:refs/heads/{b}" for b in dict.fromkeys((branch, default))], refresh=True)
    tip = mirror.resolve(f"refs/heads/{branch}")
    sha = sha or tip
    if not mirror.is_ancestor(sha, tip):
        log.warning("deploy skipped: the commit is not on the branch", extra={
            "repo": source.full_name, "branch": branch, "sha": sha, "tip": tip})
        return {"skipped": f"{sha[:7]} is not on the current history of {branch}"}
    try:
        config = read_repo_config(mirror.snapshot(mirror.resolve(f"refs/heads/{default}")), default,
                                  set(rt.server.clusters))
    except ConfigError as err:
        log.warning("deploy skipped: the repo config is broken", extra={"repo": source.full_name, "sha": sha})
        if pull:
            forge.create_comment(source.full_name, pull, f"{deploy_report.marker(rt.settings.name)}\n"
                                 f"❌ **Deploy of `{sha[:7]}` skipped:** `.gitops.yaml` on `{default}`: {err}\n")
        return {"error": str(err)}
    envs = [e for e in config.for_branch(branch) if e.cluster and environment in (None, e.name)]
    with Workspace() as workspace:  # the commit's tree, exported once for every environment
        outcomes = {e.name: deploy_environment(rt, Target(source, e, sha, actor, pull, tip), mirror, forge,
                                               workspace=workspace) for e in envs}
    retrying = [name for name, outcome in outcomes.items() if outcome["state"] == "retrying"]
    if retrying:
        raise TemporaryError(f"the deploy of {sha[:7]} to {', '.join(retrying)} met a temporary cluster error; "
                             "it is tried again")
    return outcomes


def deploy_environment(rt: runtime.Runtime, target: Target, mirror: Mirror, forge: Forge | None, *,
                       force: bool = False, workspace: Workspace | None = None) -> dict[str, Any]:
    """Deploy one environment at one commit, once, under its lock, and report to `forge` if given.

    A second request for the same commit (a merge and its push, or a retried job) does not deploy
    again: it is answered with the recorded result. `force` deploys regardless (`gitops-bot deploy`).
    A deploy left unfinished (its worker died, or it met a temporary cluster error) is resumed by
    the next request, which finishes the same forge deployment; the job that left it takes its lock
    over at once.
    """
    state = Environments(rt.store.redis, rt.settings.name)
    owner = _owner()
    joined = "new" if force else state.join(target.ref, target.sha, target.pull, owner)
    if joined == "joined":
        return {"state": "joined"}  # the deploy under way, or its retry, replies on this pull request too
    if joined == "new":
        with state.deploy_lock(target.ref, target.sha, wait=rt.server.rollout_timeout + LOCK_WAIT,
                               owner=owner) as lease:
            attempt = state.start(lease, force)
            if attempt:
                _deploy_locked(rt, state, lease, target, mirror, forge, attempt, workspace)
    return _report(rt, state, target, forge)


def _owner() -> str:
    """Who takes an environment's lock: the RQ job, whose retry after its worker died takes it over at
    once, as `_comment_lock` does; a deploy by hand is an owner of its own."""
    job = get_current_job()
    return job.id if job else uuid.uuid4().hex


def _deploy_locked(rt: runtime.Runtime, state: Environments, lease: Lease, target: Target, mirror: Mirror,
                   forge: Forge | None, attempt: int, workspace: Workspace | None = None) -> None:
    ref, started = target.ref, time.time()
    fleet = FleetMetrics(rt.store.redis, rt.store.prefix)
    refusal = rt.server.refusal(target.repo.full_name, target.env)
    if refusal:
        state.finish(lease, Record(target.sha, target.actor, started, "refused", error=refusal, attempt=attempt))
        fleet.deploy(target.env.name, "refused")
        return
    hold = state.hold(ref)
    if hold:
        state.defer(lease, target.actor)
        if forge and target.pull:
            forge.create_comment(target.repo.full_name, target.pull, deploy_report.pending_reply(
                target.sha, target.env.name, hold, rt.settings.name, rt.server.command_prefix))
        return
    deployed = state.deployed(ref)
    if deployed and deployed.sha != target.sha and mirror.merge_base(target.sha, deployed.sha) == target.sha:
        error = f"`{target.sha[:7]}` is older than the deployed `{deployed.sha[:7]}`"
        state.finish(lease, Record(target.sha, target.actor, started, "refused", error=error, attempt=attempt))
        fleet.deploy(target.env.name, "refused")
        return
    if forge:
        _start_deployment(state, lease, forge, target)
    earlier = state.planned(ref, target.sha)
    result, plan = _apply_commit(rt, state, lease, target, mirror, workspace)
    record = Record(target.sha, target.actor, started, "failure" if result.error else "success",
                    round(result.duration, 3), **counts_over_tries(earlier, plan, result), error=result.error,
                    attempt=attempt)
    retry_by = _retry_by(result, target, attempt)
    if retry_by:
        recorded = state.retry_later(lease, replace(record, retried=True), retry_by)
    else:
        recorded = state.finish(lease, record)
    fleet.deploy(target.env.name, "retried" if retry_by else record.result)
    log.info("deploy retried later" if retry_by else "deploy finished", extra={
        "environment": target.env.name, "sha": target.sha, "error": result.error, "attempt": attempt,
        "recorded": recorded, "counts": record.counts})


def _retry_by(result: deploy.Result, target: Target, attempt: int) -> str | None:
    """The job that tries a failed deploy again, if one should: after a temporary cluster error, of the
    branch's tip, within `DEPLOY_TRIES`, by this job while it has a retry left."""
    if not (result.error and result.temporary and target.sha == target.tip and attempt < DEPLOY_TRIES):
        return None
    job = get_current_job()
    return job.id if job is not None and job.retries_left else None


_COUNTED = {"create": "created", "change": "changed", "delete": "deleted"}


def counts_over_tries(earlier: Mapping[str, str], plan: deploy.Plan | None, result: deploy.Result) -> dict[str, int]:
    """What one commit's deploy did over all its tries. An action an earlier try planned (`earlier`,
    `ObjectKey` text to op) that this try's `plan` finds done (the object as rendered, or gone)
    counts as that try's, not as unchanged. A try that failed before it could plan cannot tell what
    the earlier ones did, and counts only itself."""
    counts = dict(result.counts)
    if plan is None:
        return counts
    again, unchanged = {str(a.key) for a in plan.actions}, {str(key) for key in plan.unchanged}
    for key, op in earlier.items():
        if key not in again:
            counts[_COUNTED[op]] += 1
            counts["unchanged"] -= key in unchanged
    return counts


def _apply_commit(rt: runtime.Runtime, state: Environments, lease: Lease, target: Target,
                  mirror: Mirror, workspace: Workspace | None = None) -> tuple[deploy.Result, deploy.Plan | None]:
    """Deploy the commit; its result, and its plan once made (recorded before anything is applied)."""
    cluster = rt.server.clusters.get(target.env.cluster or "")
    if cluster is None:
        return deploy.Result(error=f"cluster {target.env.cluster!r} is not in the server config"), None
    ref, plans = target.ref, []

    def on_plan(plan: deploy.Plan) -> None:
        plans.append(plan)
        state.add_applied_kinds(ref, plan.kinds)
        state.plan(lease, {str(action.key): action.op for action in plan.actions})

    inventory = deploy.Inventory.of(rt.settings.name, ref.forge, ref.repo, ref.name)

    def after(client: ClusterClient, manifests: list[Manifest]) -> None:
        """The cluster as the deploy left it is the environment's sync state and health."""
        try:
            report = drift.check(client, manifests, target.env, inventory, state.applied_kinds(ref),
                                 cluster.namespaces)
        except (ClusterError, deploy.DeployError) as err:
            log.warning("sync check after the deploy failed", extra={"environment": ref.name, "error": str(err)})
            return
        state.record_sync(ref, report.sync(target.sha))

    try:
        result = deploy.run(
            mirror.snapshot(target.sha), target.env, cluster, inventory, known_kinds=state.applied_kinds(ref),
            cache=rt.render_cache, workspace=workspace,
            options=deploy.Options(rt.server.rollout_timeout, rt.server.render_timeout,
                                   render_sandbox=rt.server.render_sandbox),
            on_plan=on_plan, check=lease.problem, after=after)
    except Exception as err:  # a bug must still end as a failed deploy, with the lock released
        log.exception("deploy crashed", extra={"environment": target.env.name, "sha": target.sha})
        result = deploy.Result(error=f"internal error ({type(err).__name__}); the worker's log has the details")
    return result, plans[0] if plans else None


def _start_deployment(state: Environments, lease: Lease, forge: Forge, target: Target) -> None:
    """Make the forge's deployment of this run, unless an earlier try made it: its retry finishes that
    one. A busy forge (a rate limit, a 5xx) is not waited for under the lock: `_report` makes it."""
    run = state.run(target.ref, target.sha)
    if run is not None and (run.deployment_id or run.deployment_owed):
        return
    try:
        state.set_deployment(lease, _create_deployment(forge, target))
    except TemporaryError as err:
        log.warning("forge deployment postponed to the report", extra={"environment": target.env.name,
                                                                       "error": str(err)})
        state.owe_deployment(lease)
    except Exception:  # the forge's view of a deploy must never stop the deploy itself
        log.warning("forge deployment not created", exc_info=True, extra={"environment": target.env.name})


def _create_deployment(forge: Forge, target: Target) -> str:
    return forge.create_deployment(target.repo.full_name, target.env.name, target.sha, target.env.branch,
                                   f"{target.sha[:7]} to {target.env.name}")


def _report(rt: runtime.Runtime, state: Environments, target: Target, forge: Forge | None) -> dict[str, Any]:
    """Finish the forge deployment and reply on each pull request owed the result, each exactly once."""
    ref, sha = target.ref, target.sha
    run = state.run(ref, sha)
    if run is None or run.record is None or not run.final:
        return {"state": run.state if run else "unknown"}
    record = run.record
    if forge is not None:
        if (run.deployment_id or run.deployment_owed) and state.claim_report(ref, sha):
            try:
                deployment_id = run.deployment_id or _owed_deployment(state, forge, target)
                if deployment_id:
                    forge.update_deployment(ref.repo, ref.name, deployment_id, "success" if record.ok else "failure",
                                            deploy_report.summary(record))
            except Exception:
                state.unclaim_report(ref, sha)  # a retry of the job reports it
                raise
        owed = state.claim_replies(ref, sha)
        for i, number in enumerate(owed):
            try:
                forge.create_comment(ref.repo, number, deploy_report.reply(record, ref.name, rt.settings.name))
            except Exception:
                for unsent in owed[i:]:
                    state.unclaim_reply(ref, sha, unsent)
                raise
    return {"state": record.result, **asdict(record)}


def _owed_deployment(state: Environments, forge: Forge, target: Target) -> str | None:
    """The forge deployment the forge was too busy to make when the deploy started, made now. Busy
    still, the job tries again when the forge says; refused, the deploy goes without one."""
    try:
        deployment_id = _create_deployment(forge, target)
    except TemporaryError:
        raise
    except Exception:
        log.warning("forge deployment not created", exc_info=True, extra={"environment": target.env.name})
        return None
    state.paid_deployment(target.ref, target.sha, deployment_id)
    return deployment_id
