"""Deploy one environment's render: plan the changes (pure), then apply them, prune, and wait for rollout."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal

from kubernetes.dynamic.resource import Resource

from bot.applied import same_as_applied
from bot.cluster import FIELD_MANAGER, ClusterClient, ClusterError, connect
from bot.config import Cluster, Environment
from bot.diff import (ObjectKey, cluster_scoped_kinds, crd_kind, group_of, hook_of, identify, is_generated,
                      normalize, release_objects)
from bot.gitrepo import Snapshot
from bot.health import failed, waiting_for
from bot.render import Manifest, Workspace, render
from bot.renderers.errors import RenderError

if TYPE_CHECKING:
    from bot.render_cache import RenderCache

INVENTORY_LABEL = "gitops-bot.io/inventory"
"""On everything applied: a short hash of the inventory identity, so one LIST per kind finds it all."""
INVENTORY_ANNOTATION = "gitops-bot.io/inventory-id"
"""The full identity behind the label: instance, forge, repository and environment."""
HASH_ANNOTATION = "gitops-bot.io/applied-hash"
"""A hash of what was last applied; an equal hash means the object needs no write."""
DEFAULT_NAMESPACE = "default"
NAMESPACE = ("", "Namespace")
CRD = ("apiextensions.k8s.io", "CustomResourceDefinition")
CRD_VERSION = "apiextensions.k8s.io/v1"
APPLY_FIRST = ("ServiceAccount", "Secret", "ConfigMap", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
               "Service")
"""Kinds others refer to go first within their wave, so pods find them when they start."""

Op = Literal["create", "change", "delete"]
Check = Callable[[], str | None]
"""Asked between steps: a reason to stop (the environment's lock was lost), or None."""


class DeployError(Exception):
    """A deploy cannot go on; the message says why, naming objects by kind and name only."""


@dataclass(frozen=True)
class Inventory:
    """Whose objects these are: one environment of one repository, as one bot instance deploys it."""

    identity: str

    @classmethod
    def of(cls, instance: str, forge: str, repo: str, environment: str) -> "Inventory":
        return cls(f"{instance}:{forge}:{repo}:{environment}")

    @property
    def label(self) -> str:
        """A valid label value (at most 63 characters) for the identity."""
        return hashlib.sha256(self.identity.encode()).hexdigest()[:40]

    @property
    def selector(self) -> str:
        return f"{INVENTORY_LABEL}={self.label}"


@dataclass(frozen=True)
class Action:
    op: Op
    key: ObjectKey
    api_version: str
    body: dict[str, Any] | None = None
    """What to apply; None for a delete."""


@dataclass(frozen=True)
class Plan:
    """What a deploy does, in order: each wave after the one before, and CRDs established between waves."""

    waves: tuple[tuple[Action, ...], ...] = ()
    unchanged: tuple[ObjectKey, ...] = ()
    rollouts: tuple[tuple[str, ObjectKey], ...] = ()
    """Objects whose health to wait for, with their apiVersion: every object applied now (unless its
    apply's answer shows it healthy already, or with no health information) and every unchanged one
    not healthy yet (`bot.health`)."""
    kinds: frozenset[str] = frozenset()
    """Every kind this deploy applies (see `kind_id`), which a later prune must look through."""
    skipped: tuple[str, ...] = ()
    """What the render holds that a deploy never applies, each with the reason."""

    @property
    def actions(self) -> tuple[Action, ...]:
        return tuple(a for wave in self.waves for a in wave)


@dataclass(frozen=True)
class Options:
    rollout_timeout: float = 300.0
    """Seconds to wait for CRDs to be established and for workloads to become available."""
    render_timeout: float = 60.0
    """Seconds one renderer (kustomize, helm) may run."""
    dry_run: bool = False
    """Send every write as a server-side dry run (`dryRun=All`): validated, nothing changed."""
    render_sandbox: bool = True
    """Kustomize and Helm run in the renderer box (no network, no file outside the tree), or not at all."""


@dataclass(frozen=True)
class Result:
    done: tuple[Action, ...] = ()
    """The actions performed (or, in a dry run, validated), in order."""
    unchanged: int = 0
    error: str | None = None
    writes: int = 0
    """API write requests sent, dry runs excluded."""
    duration: float = 0.0
    skipped: tuple[str, ...] = ()
    """What the render holds that the deploy did not apply, each with the reason (see `Plan.skipped`)."""
    temporary: bool = False
    """The error was the cluster briefly unable to answer (`ClusterError.temporary`): worth another try."""

    def count(self, op: Op) -> int:
        return sum(a.op == op for a in self.done)

    @property
    def counts(self) -> dict[str, int]:
        return {"created": self.count("create"), "changed": self.count("change"), "deleted": self.count("delete"),
                "unchanged": self.unchanged}


def kind_id(group: str, kind: str) -> str:
    """`Deployment.apps`, `ConfigMap`: how a kind is recorded in an environment's state."""
    return f"{kind}.{group}" if group else kind


def parse_kind_id(value: str) -> tuple[str, str]:
    kind, _, group = value.partition(".")
    return group, kind


# -- planning (pure) ----------------------------------------------------------------------------------
def content_hash(body: dict[str, Any]) -> str:
    """A hash of the JSON sent: manifests are read as kubectl reads them, so they are JSON data."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def stamp(doc: dict[str, Any], key: ObjectKey, inventory: Inventory) -> dict[str, Any]:
    """The body to apply: normalised, marked with the inventory, and hashed."""
    body = normalize(doc, key)
    meta = body["metadata"]
    for part in ("labels", "annotations"):
        if not isinstance(meta.get(part) or {}, dict):
            raise DeployError(f"{key}: metadata.{part} must be a mapping")
    if not key.namespace:
        meta.pop("namespace", None)
    meta["labels"] = {**(meta.get("labels") or {}), INVENTORY_LABEL: inventory.label}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != HASH_ANNOTATION}
    meta["annotations"] = {**annotations, INVENTORY_ANNOTATION: inventory.identity}
    meta["annotations"][HASH_ANNOTATION] = content_hash(body)
    return body


def desired_objects(manifests: Iterable[Manifest], namespace: str, cluster_kinds: set[tuple[str, str]],
                    inventory: Inventory) -> dict[ObjectKey, dict[str, Any]]:
    """Rendered objects by identity, ready to apply; of one identity defined twice the last wins.

    `manifests` are those `deployable` keeps.
    """
    desired = {}
    for m in manifests:
        key = identify(m, namespace, cluster_kinds)
        desired[key] = stamp(m.doc, key, inventory)
    return desired


def deployable(manifests: Iterable[Manifest], namespace: str,
               cluster_kinds: set[tuple[str, str]]) -> tuple[list[Manifest], tuple[str, ...]]:
    """(what a deploy applies, what it skips and why). Helm hooks run around a release, not in it;
    an object with only a `generateName` has no name for server-side apply to find it by."""
    objects, hooks = release_objects(manifests)
    skipped = [f"{identify(m, namespace, cluster_kinds)}: a Helm hook ({hook_of(m.doc)}), which Helm keeps out "
               "of a release" for m in hooks]
    kept = []
    for m in objects:
        key = identify(m, namespace, cluster_kinds)
        if is_generated(key):
            skipped.append(f"{key}: only `metadata.generateName`, and server-side apply needs a name")
        else:
            kept.append(m)
    return kept, tuple(skipped)


def live_key(obj: dict[str, Any]) -> ObjectKey:
    meta = obj["metadata"]
    return ObjectKey(group_of(obj["apiVersion"]), obj["kind"], meta.get("namespace") or "", meta["name"])


def plan(desired: dict[ObjectKey, dict[str, Any]], live: dict[ObjectKey, dict[str, Any]], *, prune: bool) -> Plan:
    """What to apply, skip and delete. `live` holds only objects carrying this environment's inventory.

    An object is skipped when its last apply was of the same body and the cluster holds it as
    applied; one that someone changed since (`bot.applied`) is applied again, as `kubectl apply` would.
    """
    applies, unchanged, rollouts = [], [], []
    for key, body in desired.items():
        current = live.get(key)
        same = current is not None and _annotations(current).get(HASH_ANNOTATION) == \
            body["metadata"]["annotations"][HASH_ANNOTATION] and same_as_applied(body, current, FIELD_MANAGER)
        if same:
            unchanged.append(key)
            if waiting_for(current):  # type: ignore[arg-type]
                rollouts.append((body["apiVersion"], key))
            continue
        applies.append(Action("create" if current is None else "change", key, body["apiVersion"], body))
        rollouts.append((body["apiVersion"], key))
    deletes = [Action("delete", key, obj["apiVersion"]) for key, obj in live.items()
               if key not in desired and hook_of(obj) is None] if prune else []  # a hook is never pruned

    return Plan(order(applies, deletes), tuple(unchanged), tuple(rollouts),
                frozenset(kind_id(k.group, k.kind) for k in desired))


def order(applies: list[Action], deletes: list[Action]) -> tuple[tuple[Action, ...], ...]:
    """Waves of actions: Namespaces, then CRDs, then the rest (kinds others refer to first), then
    deletes, of CRDs after their custom resources and of Namespaces last."""
    def kind(action: Action) -> tuple[str, str]:
        return action.key.group, action.key.kind

    rest = [a for a in applies if kind(a) not in (NAMESPACE, CRD)]
    rank = {k: i for i, k in enumerate(APPLY_FIRST)}
    waves = [
        [a for a in applies if kind(a) == NAMESPACE],
        [a for a in applies if kind(a) == CRD],
        sorted(rest, key=lambda a: rank.get(a.key.kind, len(rank))),
        [a for a in deletes if kind(a) not in (NAMESPACE, CRD)],
        [a for a in deletes if kind(a) == CRD],  # after their custom resources, which would go with them
        [a for a in deletes if kind(a) == NAMESPACE],  # last: deleting one deletes everything in it
    ]
    return tuple(tuple(w) for w in waves if w)


def _annotations(obj: dict[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), {})


def established(crd: dict[str, Any]) -> str | None:
    """None once a CRD serves its kinds; otherwise what it waits for."""
    return None if _condition(crd, "Established").get("status") == "True" else "not established yet"


# -- acting on a cluster ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Observed:
    """A render next to the live objects that carry its environment's inventory."""

    desired: dict[ObjectKey, dict[str, Any]]
    live: dict[ObjectKey, dict[str, Any]]
    skipped: tuple[str, ...] = ()
    """What the render holds that a deploy never applies, each with the reason."""


def observe(cluster: ClusterClient, manifests: list[Manifest], env: Environment, inventory: Inventory,
            known_kinds: Iterable[str] = (), namespaces: tuple[str, ...] | None = None) -> Observed:
    """Discover the rendered kinds and read the live inventory: one LIST per kind.

    With `namespaces` (the cluster's grant), every object must lie in one of them; the only
    cluster-scoped objects allowed are those Namespaces themselves.
    """
    cluster_kinds = cluster_scoped_kinds(manifests)  # built-ins, and kinds of the CRDs rendered here
    manifests, skipped = deployable(manifests, env.namespace or DEFAULT_NAMESPACE, cluster_kinds)
    versions = {(group_of(m.doc["apiVersion"]), m.doc["kind"]): m.doc["apiVersion"].rpartition("/")[2]
                for m in manifests}
    defined_here = _crd_kinds(manifests)
    for (group, kind), version in versions.items():
        resource = cluster.resource(group, kind, version)
        if resource is None and (group, kind) not in defined_here:
            raise DeployError(f"{kind_id(group, kind)}: the cluster does not serve {group or 'core'}/{version}, "
                              "and no CustomResourceDefinition in this render defines it")
        if resource is not None and resource.namespaced:
            cluster_kinds.discard((group, kind))
        elif resource is not None:
            cluster_kinds.add((group, kind))
    desired = desired_objects(manifests, env.namespace or DEFAULT_NAMESPACE, cluster_kinds, inventory)
    if namespaces is not None:
        outside = next((key for key in desired if not _granted(key, namespaces)), None)
        if outside is not None:
            allowed = ", ".join(namespaces) or "none"
            raise DeployError(f"{outside}: the cluster takes objects only in the namespaces {allowed}")
    live: dict[ObjectKey, dict[str, Any]] = {}
    for kid in sorted(set(known_kinds) | {kind_id(g, k) for g, k in versions}):
        group, kind = parse_kind_id(kid)
        resource = cluster.resource(group, kind, versions.get((group, kind)))
        for obj in cluster.list(resource, inventory.selector) if resource else []:
            if _annotations(obj).get(INVENTORY_ANNOTATION) == inventory.identity:  # never anyone else's
                live[live_key(obj)] = obj
    return Observed(desired, live, skipped)


def prepare(cluster: ClusterClient, manifests: list[Manifest], env: Environment, inventory: Inventory,
            known_kinds: Iterable[str] = (), namespaces: tuple[str, ...] | None = None) -> Plan:
    """Observe the render and the cluster (see `observe`), and plan."""
    seen = observe(cluster, manifests, env, inventory, known_kinds, namespaces)
    return replace(plan(seen.desired, seen.live, prune=env.prune), skipped=seen.skipped)


def _granted(key: ObjectKey, namespaces: tuple[str, ...]) -> bool:
    if key.namespace:
        return key.namespace in namespaces
    return (key.group, key.kind) == NAMESPACE and key.name in namespaces


def execute(plan_: Plan, cluster: ClusterClient, options: Options = Options(),
            check: Check = lambda: None) -> Result:
    """Carry out a plan. A failure stops it; the result says what was done before and why it stopped."""
    done: list[Action] = []
    answers: dict[ObjectKey, dict[str, Any]] = {}
    # A dry run cannot validate what depends on a namespace or CRD that it only pretended to create.
    pretend = depends_on_new(plan_) if options.dry_run else set()
    try:
        for wave in plan_.waves:
            for action in wave:
                _stop_if(check)
                if action.key not in pretend:
                    answer = _perform(cluster, action, options.dry_run)
                    if answer is not None:
                        answers[action.key] = answer
                done.append(action)
            crds = [(CRD_VERSION, a.key) for a in wave if a.op != "delete" and (a.key.group, a.key.kind) == CRD]
            if crds and not options.dry_run:
                _wait(cluster, crds, lambda crd: established(crd) or _not_served(cluster, crd), "establishing CRDs",
                      options.rollout_timeout, check)
        if not options.dry_run:  # what an apply's answer shows healthy needs no more asking
            waits = [(v, key) for v, key in plan_.rollouts if key not in answers or waiting_for(answers[key])]
            _wait(cluster, waits, _healthy_or_failed, "rollout", options.rollout_timeout, check)
    except (ClusterError, DeployError) as err:
        return Result(tuple(done), len(plan_.unchanged), str(err), cluster.writes, skipped=plan_.skipped,
                      temporary=isinstance(err, ClusterError) and err.temporary)
    return Result(tuple(done), len(plan_.unchanged), None, cluster.writes, skipped=plan_.skipped)


def run(snapshot: Snapshot, env: Environment, cluster: Cluster, inventory: Inventory, *,
        known_kinds: Iterable[str] = (), options: Options = Options(),
        on_plan: Callable[[Plan], None] | None = None, check: Check = lambda: None,
        after: Callable[[ClusterClient, list[Manifest]], None] | None = None,
        cache: RenderCache | None = None, workspace: Workspace | None = None) -> Result:
    """Render, plan and execute one environment's deploy. Every failure becomes a result with a reason.

    `on_plan` runs before anything is applied: the place to record the kinds a later prune needs.
    `after` runs once a deploy (not a dry run) succeeded, with the cluster and the render. `cache`
    keeps and reuses renders of commits (`bot.render_cache`); `workspace` shares the exported tree
    with the deploys of other environments from the same commit.
    """
    started = time.monotonic()
    try:
        manifests = render(snapshot, env, timeout=options.render_timeout, sandbox=options.render_sandbox,
                           cache=cache, workspace=workspace)
        with connect(cluster) as client:
            plan_ = prepare(client, manifests, env, inventory, known_kinds, cluster.namespaces)
            if on_plan:
                on_plan(plan_)
            result = execute(plan_, client, options, check)
            if after and not result.error and not options.dry_run:
                after(client, manifests)
    except RenderError as err:
        result = Result(error=f"render failed: {err}")
    except (ClusterError, DeployError) as err:
        result = Result(error=str(err), temporary=isinstance(err, ClusterError) and err.temporary)
    return replace(result, duration=time.monotonic() - started)


def _crd_kinds(manifests: Iterable[Manifest]) -> set[tuple[str, str]]:
    return {crd_kind(m.doc) for m in manifests if (group_of(m.doc["apiVersion"]), m.doc["kind"]) == CRD}


def _not_served(cluster: ClusterClient, crd: dict[str, Any]) -> str | None:
    """Discovery can lag a moment behind `Established`; a miss makes the client discover again."""
    group, kind = crd_kind(crd)
    version = next(v["name"] for v in crd["spec"]["versions"] if v.get("served", True))
    return None if cluster.resource(group, kind, version) else "its kind is not in discovery yet"


def _stop_if(check: Check) -> None:
    reason = check()
    if reason:
        raise DeployError(reason)


def depends_on_new(plan_: Plan) -> set[ObjectKey]:
    created = [a for a in plan_.actions if a.op == "create"]
    namespaces = {a.key.name for a in created if (a.key.group, a.key.kind) == NAMESPACE}
    crds = {crd_kind(a.body) for a in created if a.body and (a.key.group, a.key.kind) == CRD}
    return {a.key for a in created if a.key.namespace in namespaces or (a.key.group, a.key.kind) in crds}


def resource_of(cluster: ClusterClient, api_version: str, key: ObjectKey) -> Resource:
    resource = cluster.resource(key.group, key.kind, api_version.rpartition("/")[2])
    if resource is None:
        raise DeployError(f"{key}: the cluster does not serve {api_version}")
    return resource


def _perform(cluster: ClusterClient, action: Action, dry_run: bool) -> dict[str, Any] | None:
    """Apply or delete; the API's answer to an apply."""
    resource = resource_of(cluster, action.api_version, action.key)
    if action.op == "delete":
        cluster.delete(resource, action.key.namespace, action.key.name, str(action.key), dry_run)
        return None
    return cluster.apply(resource, action.body, str(action.key), dry_run)  # type: ignore[arg-type]


def _healthy_or_failed(obj: dict[str, Any]) -> str | None:
    """What an object's health waits for; an object failed for good fails the deploy at once."""
    reason = failed(obj)
    if reason:
        raise DeployError(f"{live_key(obj)}: {reason}")
    return waiting_for(obj)


def _wait(cluster: ClusterClient, items: list[tuple[str, ObjectKey]], waiting_for: Callable[[dict], str | None],
          what: str, timeout: float, check: Check) -> None:
    """Poll each object until `waiting_for` says nothing, or fail when `timeout` seconds have passed."""
    deadline, pause = time.monotonic() + timeout, 0.1
    while items:
        reasons = {}
        for api_version, key in items:
            obj = cluster.get(resource_of(cluster, api_version, key), key.namespace, key.name)
            reason = "it does not exist" if obj is None else waiting_for(obj)
            if reason:
                reasons[(api_version, key)] = reason
        items = list(reasons)
        if not items:
            return
        if time.monotonic() >= deadline:
            (_, key), reason = next(iter(reasons.items()))
            more = f" (and {len(items) - 1} more)" if len(items) > 1 else ""
            raise DeployError(f"{what} timed out after {timeout:g} s: {key}: {reason}{more}")
        _stop_if(check)
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 1.5, 2.0)
