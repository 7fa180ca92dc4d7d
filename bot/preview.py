"""The live plan of a pull request: what applying its head would do to each environment's cluster now.

Like `atlantis plan` beside Terraform's diff: the Git diff says what the pull request changes in the
manifests; the live plan says what merging it would change in the cluster. It reads the cluster (one
LIST per kind, as a deploy does) and sends a server-side dry run (`dryRun=All`) of only the objects
a deploy would apply, never a write. The API server's answer, next to the live object, is what
really changes (defaults and other managers' fields included), and its refusals come before the
merge instead of after it.

Reaching a cluster is a deployer's right: it runs when the pull request's author holds the
environment's `deployers` level (never for a fork's pull request on its own), or when someone who
does asks with `/diff`. `decide` is that rule, pure; `plan_live` is the dry run; `add_live_plans`
joins them for the diff job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable

from bot import deploy, drift
from bot.cluster import ClusterClient, ClusterError, connect
from bot.commands import level_at_least
from bot.config import ConfigError, Environment
from bot.diff import Change, DiffReport, EnvironmentDiff, ObjectKey, is_secret, normalize, unified
from bot.environments import EnvRef, Environments
from bot.events import PullRequest
from bot.gitrepo import GitError, Snapshot
from bot.pipeline import read_repo_config
from bot.render import render
from bot.renderers.errors import RenderError

if TYPE_CHECKING:
    from bot.forges.base import Forge
    from bot.runtime import Runtime

log = logging.getLogger("gitops_bot.preview")

MAX_FIELDS = 20
"""Fields named per reverted object; the diff below it shows them all."""
BOOKKEEPING = {"labels": (deploy.INVENTORY_LABEL,),
               "annotations": (deploy.INVENTORY_ANNOTATION, deploy.HASH_ANNOTATION)}
"""The marks a deploy puts on every object: they say whose it is, not what it does, so a plan leaves them out."""


# -- the plan (values) ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Reverted:
    """An object the pull request does not change in Git, whose live state someone changed: the
    merge's deploy sets it back."""

    change: Change
    """The live object against the dry run's result."""
    fields: tuple[str, ...] = ()
    managers: tuple[str, ...] = ()
    """Who holds those fields now, by managedFields."""


@dataclass(frozen=True)
class Refused:
    key: ObjectKey
    reason: str
    """The API server's reason; for objects other than Secrets, with each cause's field and message."""


@dataclass(frozen=True)
class LivePlan:
    """One environment's live plan, or why there is none."""

    cluster: str
    ran_for: str = ""
    """Whose right it ran on, in words for the comment."""
    skipped: str | None = None
    """Why it was not computed, and how to get it."""
    error: str | None = None
    created: tuple[Change, ...] = ()
    changed: tuple[Change, ...] = ()
    """Objects the pull request changes: the live object against the dry run's result."""
    pruned: tuple[Change, ...] = ()
    reverted: tuple[Reverted, ...] = ()
    refused: tuple[Refused, ...] = ()
    unvalidated: tuple[ObjectKey, ...] = ()
    """Created objects in a Namespace, or of a CRD's kind, that this head creates too: a dry run
    cannot validate them, since it only pretends to create what they need."""
    unchanged: int = 0
    notes: tuple[str, ...] = ()
    """What the render holds that a deploy never applies, each with the reason."""

    @property
    def computed(self) -> bool:
        return self.skipped is None and self.error is None

    @property
    def counts(self) -> dict[str, int]:
        return {"created": len(self.created), "changed": len(self.changed), "pruned": len(self.pruned),
                "reverted": len(self.reverted), "refused": len(self.refused)}

    @property
    def objects(self) -> tuple[tuple[str, Change, str], ...]:
        """Every object it shows, as (what happens to it, its diff, a note), in the comment's order."""
        pending = set(self.unvalidated)
        return (*((("create", c, "not validated: it needs what this head creates") if c.key in pending
                   else ("create", c, "")) for c in self.created),
                *(("change", c, "") for c in self.changed),
                *(("prune", c, "") for c in self.pruned),
                *(("drift reverted", r.change, _held(r)) for r in self.reverted))


def _held(reverted: Reverted) -> str:
    fields = ", ".join(reverted.fields) or "(every field)"
    return f"{fields}" + (f" · held by {', '.join(reverted.managers)}" if reverted.managers else "")


# -- who may reach the cluster (pure) -------------------------------------------------------------

@dataclass(frozen=True)
class Person:
    login: str
    level: str
    """Their permission on the repository, as the forge's API says now."""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    """Whose right it runs on; or why it does not run, and how to make it."""


def decide(env: Environment, author: Person, fork: bool, requester: Person | None, prefix: str = "/") -> Decision:
    """Whether `env`'s live plan may be computed: for a deployer's `/diff` (`requester`), or for a
    pull request by a deployer that does not come from a fork."""
    needed = env.deployers
    if requester is not None and level_at_least(requester.level, needed):
        return Decision(True, f"asked for with `{prefix}diff` by @{requester.login}, who holds {requester.level}")
    if not fork and author.login and level_at_least(author.level, needed):
        return Decision(True, f"the author @{author.login} holds {author.level}")
    why = []
    if requester is not None:
        why.append(f"@{requester.login} asked with `{prefix}diff` but holds {requester.level}")
    if fork:
        why.append("this pull request comes from a fork, which never reaches a cluster on its own")
    elif not author.login:
        why.append("the forge names no author")
    elif requester is None or requester.login.lower() != author.login.lower():
        why.append(f"@{author.login} holds {author.level}")
    return Decision(False, f"{'; '.join(why)}; `{env.name}`'s live plan needs {needed}: someone with {needed} "
                           f"can comment `{prefix}diff`")


# -- the dry run ----------------------------------------------------------------------------------

def plan_live(cluster: ClusterClient, seen: deploy.Observed, *, prune: bool,
              changed_in_git: Iterable[ObjectKey] = ()) -> LivePlan:
    """What a deploy of `seen.desired` would do to the cluster now, by dry runs of what it applies.

    `changed_in_git`: what the pull request adds or changes, so that the rest of what a deploy
    applies is drift it reverts. A refusal stops only its object; a cluster that cannot answer
    raises `ClusterError`.
    """
    plan = deploy.plan(seen.desired, seen.live, prune=prune)
    git = _keys(changed_in_git)
    pretend = deploy.depends_on_new(plan)  # the deploy's own dry run skips these too
    created: list[Change] = []
    changed: list[Change] = []
    pruned: list[Change] = []
    reverted: list[Reverted] = []
    refused: list[Refused] = []
    unchanged = len(plan.unchanged)
    for action in plan.actions:
        key = action.key
        if action.op == "delete":
            pruned.append(Change("-", key, unified(shown(seen.live[key], key), None, key), ""))
            continue
        body: dict[str, Any] = action.body  # type: ignore[assignment]
        if key in pretend:
            created.append(Change("+", key, unified(None, shown(body, key), key), ""))
            continue
        try:
            found = _dry_run(cluster, key, body, seen.live.get(key))
        except deploy.DeployError as err:
            refused.append(Refused(key, str(err)))
            continue
        except ClusterError as err:
            if err.temporary or err.status is None or not 400 <= err.status < 500:
                raise
            refused.append(Refused(key, refusal_reason(key, err)))
            continue
        if isinstance(found, Change):
            created.append(found)
        elif not isinstance(found, drift.Drifted):
            unchanged += 1  # the server's own differences only: applying it changes nothing
        elif key in git:
            changed.append(found.change)
        else:
            reverted.append(Reverted(found.change, found.fields[:MAX_FIELDS], found.managers))
    return LivePlan(cluster.name, created=tuple(created), changed=tuple(changed), pruned=tuple(pruned),
                    reverted=tuple(reverted), refused=tuple(refused),
                    unvalidated=tuple(c.key for c in created if c.key in pretend), unchanged=unchanged,
                    notes=seen.skipped)


def _dry_run(cluster: ClusterClient, key: ObjectKey, body: dict[str, Any], live: dict[str, Any] | None) -> Any:
    """A created object's diff (a `Change`), what applying changes in a live one (`drift.Drifted`),
    or something else when it changes nothing."""
    resource = deploy.resource_of(cluster, body["apiVersion"], key)
    if live is None:
        # Not among the inventory's objects: it may be there without the label (taken off by hand).
        live = cluster.get(resource, key.namespace, key.name)
    if live is None:
        after = cluster.apply(resource, body, str(key), dry_run=True)
        return Change("+", key, unified(None, shown(after, key), key), "")
    return drift.check_object(cluster, key, body, live, shown=shown)


def shown(obj: dict[str, Any], key: ObjectKey) -> dict[str, Any]:
    """An object as the plan shows it: as the diff does (`normalize`), without the deploy's own marks."""
    out = normalize(obj, key)
    meta = out["metadata"]  # a copy: normalize copies metadata
    for part, names in BOOKKEEPING.items():
        values = meta.get(part)
        if isinstance(values, dict):
            kept = {k: v for k, v in values.items() if k not in names}
            if kept:
                meta[part] = kept
            else:
                meta.pop(part)
    return out


def refusal_reason(key: ObjectKey, err: ClusterError) -> str:
    """The API server's refusal: its reason, and but for a Secret, each cause's field and message
    (a Secret's causes may quote its values)."""
    reason = str(err).removeprefix(f"apply {key}: ")
    if is_secret(key) or not err.causes:
        return reason
    return f"{reason}: " + "; ".join(f"{field}: {message}" if field else message for field, message in err.causes)


def _keys(keys: Iterable[ObjectKey]) -> set[ObjectKey]:
    """The keys as a deploy names them too: the diff leaves a namespaced object that names no
    namespace in none when the environment sets none, and a deploy puts it in `default`."""
    out = set()
    for key in keys:
        out.add(key)
        if not key.namespace:
            out.add(replace(key, namespace=deploy.DEFAULT_NAMESPACE))
    return out


# -- for the diff job -----------------------------------------------------------------------------

def add_live_plans(rt: Runtime, forge: Forge, pr: PullRequest, report: DiffReport, *, head: Snapshot,
                   config: Snapshot, default_branch: str, requested_by: str | None = None) -> DiffReport:
    """`report` with a live plan, or the reason for none, for each environment with a cluster.

    `config` holds the repo config in force (the base branch's). `requested_by` is whoever asked
    with `/diff`; then the pull request's author and origin are read from the forge too, as the
    command's job knows them only from there.
    """
    if report.error:
        return report
    try:
        repo_config = read_repo_config(config, default_branch, set(rt.server.clusters))
    except ConfigError:
        return report  # the report says why
    targets = [(i, env_diff, env) for i, env_diff in enumerate(report.environments)
               if (env := repo_config.get(env_diff.environment)) is not None and env.cluster]
    if not targets:
        return report
    repo = pr.repo.full_name
    author, fork = pr.author, pr.is_fork
    if requested_by is not None:
        state = forge.pull_state(repo, pr.number)
        author, fork = state.author, state.fork
    levels: dict[str, str] = {}

    def person(login: str) -> Person:
        if login and login.lower() not in levels:
            levels[login.lower()] = forge.permission(repo, login)
        return Person(login, levels.get(login.lower(), "none"))

    environments = list(report.environments)
    for i, env_diff, env in targets:
        environments[i] = replace(env_diff, live=_environment(
            rt, pr, env_diff, env, head, lambda: (person(author), fork, requested_by and person(requested_by))))
    return replace(report, environments=tuple(environments))


def _environment(rt: Runtime, pr: PullRequest, env_diff: EnvironmentDiff, env: Environment, head: Snapshot,
                 people: Callable[[], tuple[Person, bool, Person | None]]) -> LivePlan:
    cluster_name = env.cluster or ""
    if env_diff.refusal:
        return LivePlan(cluster_name, skipped="the server config refuses this environment's deploys (see above)")
    if env_diff.error:
        return LivePlan(cluster_name, skipped="the render failed, so there is nothing to compare with the cluster")
    author, fork, requester = people()
    decision = decide(env, author, fork, requester or None, rt.server.command_prefix)
    log.info("live plan decided", extra={"pull": f"{pr.repo.full_name}#{pr.number}", "environment": env.name,
                                         "allowed": decision.allowed, "reason": decision.reason})
    if not decision.allowed:
        return LivePlan(cluster_name, skipped=decision.reason)
    cluster = rt.server.clusters[cluster_name]  # not refused: the server config has it
    ref = EnvRef(pr.repo.forge, pr.repo.full_name, env.name)
    inventory = deploy.Inventory.of(rt.settings.name, ref.forge, ref.repo, ref.name)
    changed_in_git = [c.key for c in env_diff.changes if c.op != "-"]
    try:
        manifests = render(head, env, timeout=rt.server.render_timeout, sandbox=rt.server.render_sandbox,
                           cache=rt.render_cache)
        with connect(cluster) as client:
            seen = deploy.observe(client, manifests, env, inventory,
                                  Environments(rt.store.redis, rt.settings.name).applied_kinds(ref),
                                  cluster.namespaces)
            plan = plan_live(client, seen, prune=env.prune, changed_in_git=changed_in_git)
    except (RenderError, GitError, ClusterError, deploy.DeployError) as err:
        what = "render failed: " if isinstance(err, RenderError) else ""
        return LivePlan(cluster_name, decision.reason, error=f"{what}{err}")
    return replace(plan, cluster=cluster_name, ran_for=decision.reason)
