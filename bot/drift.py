"""Drift: an environment's live cluster against its deployed commit, and self-heal.

One LIST per kind reads the objects carrying the environment's inventory. Each rendered object is
compared with its live copy locally (`bot.applied`): plainly the same, it costs nothing more.
Otherwise a server-side dry run of the apply decides: the server's answer, next to the live object,
is what applying would change; when it changes nothing, the difference was the server's own
(defaults, canonical quantities, fields others added). So a check's cost follows the drift, not the
size of the environment. Nothing here writes, except `heal`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal

from bot import health as health_
from bot.applied import Path, as_applied, differences, holders, path_text, unowned
from bot.cluster import FIELD_MANAGER, ClusterClient, ClusterError
from bot.config import Environment
from bot.deploy import (Action, Inventory, Observed, Options, Plan, Result, execute, kind_id, observe, order,
                        resource_of)
from bot.diff import NOISE_METADATA, Change, ObjectKey, hook_of, normalize, unified
from bot.environments import SYNC_OBJECTS, Sync
from bot.render import Manifest

What = Literal["missing", "changed", "extra"]


@dataclass(frozen=True)
class Drifted:
    """One object that is not as the deployed commit has it."""

    key: ObjectKey
    what: What
    """`missing`: not in the cluster; `changed`: fields the bot applied differ, or another field
    manager holds them now; `extra`: carries the inventory, and the commit no longer renders it."""
    change: Change
    """The live object against what applying the commit would make of it, in the comment's format."""
    fields: tuple[str, ...] = ()
    managers: tuple[str, ...] = ()
    """Who holds the drifted fields now, by managedFields."""
    api_version: str = ""
    body: dict[str, Any] | None = None
    """What to apply to heal it; None for an `extra` object."""
    refused: str | None = None
    """Why the API server refused the dry run of its apply, if it did: then `change` is the live
    object against the commit's, as the server's answer could not tell more."""


@dataclass(frozen=True)
class Report:
    """One comparison of an environment with its cluster."""

    drifted: tuple[Drifted, ...] = ()
    compared: int = 0
    health: dict[str, int] = field(default_factory=dict)
    unhealthy: tuple[tuple[ObjectKey, health_.Health], ...] = ()
    skipped: tuple[str, ...] = ()
    dry_runs: int = 0

    @property
    def in_sync(self) -> bool:
        return not self.drifted

    def sync(self, sha: str, checked: float | None = None, healed: bool = False) -> Sync:
        """The record `/status`, the dashboard and `/metrics` show."""
        return Sync(sha, time.time() if checked is None else checked, "in_sync" if self.in_sync else "drifted",
                    len(self.drifted), tuple({"key": str(d.key), "what": d.what, "fields": list(d.fields),
                                              "managers": list(d.managers)} for d in self.drifted[:SYNC_OBJECTS]),
                    self.compared, dict(self.health),
                    tuple({"key": str(k), "health": h.state, "message": h.message}
                          for k, h in self.unhealthy[:SYNC_OBJECTS]), healed)


def compare(cluster: ClusterClient, seen: Observed) -> Report:
    """Compare what a commit renders (`seen.desired`) with the cluster (`seen.live`)."""
    drifted, dry_runs, judged = [], 0, []
    for key, body in seen.desired.items():
        live = seen.live.get(key)
        if live is None:
            live = cluster.get(resource_of(cluster, body["apiVersion"], key), key.namespace, key.name)
            if live is None:
                drifted.append(Drifted(key, "missing", Change("+", key, unified(None, _shown(body, key), key), ""),
                                       api_version=body["apiVersion"], body=body))
                continue  # someone deleted it, or took away its inventory label: a GET tells apart
        judged.append((key, live))
        try:
            found = check_object(cluster, key, body, live)
        except ClusterError as err:
            if err.temporary or err.status is None or not 400 <= err.status < 500:
                raise
            found = _refused(key, body, live, str(err))
        dry_runs += found is not SAME_LOCALLY
        if isinstance(found, Drifted):
            drifted.append(found)
    for key, live in seen.live.items():
        if key not in seen.desired and hook_of(live) is None:
            drifted.append(Drifted(key, "extra", Change("-", key, unified(_shown(live, key), None, key), ""),
                                   api_version=live["apiVersion"]))
    counts: dict[str, int] = {}
    unhealthy = []
    for key, live in judged:
        verdict = health_.health(live)
        counts[verdict.state] = counts.get(verdict.state, 0) + 1
        if verdict.state in ("progressing", "degraded"):
            unhealthy.append((key, verdict))
    order_ = {"degraded": 0, "progressing": 1}
    return Report(tuple(sorted(drifted, key=lambda d: (d.key.kind, d.key.namespace, d.key.name))),
                  len(seen.desired) + sum(key not in seen.desired for key in seen.live), counts,
                  tuple(sorted(unhealthy, key=lambda u: (order_[u[1].state], str(u[0])))), seen.skipped, dry_runs)


SAME_LOCALLY = object()
"""`check_object`'s answer when local comparison alone shows the object as applied: no dry run was sent."""


def check_object(cluster: ClusterClient, key: ObjectKey, body: dict[str, Any], live: dict[str, Any], *,
                 shown: Callable[[dict[str, Any], ObjectKey], dict[str, Any]] | None = None) -> Any:
    """`SAME_LOCALLY`, None (the same, by a dry run), or what applying `body` would change in `live`,
    compared as `shown` (default: without status and server bookkeeping) shows both.

    The dry run's refusal is raised as the `ClusterError` it is.
    """
    shown = shown or _shown
    held = unowned(body, live, FIELD_MANAGER)
    if next(differences(as_applied(body), live), None) is None and not held:
        return SAME_LOCALLY
    after = cluster.apply(resource_of(cluster, body["apiVersion"], key), body, str(key), dry_run=True)
    before_shown, after_shown = shown(live, key), shown(after, key)
    paths = list(_changed_paths(before_shown, after_shown))
    if not paths and not held:
        return None
    return Drifted(key, "changed", Change("~", key, unified(before_shown, after_shown, key), ""),
                   *_named(live, paths or list(held), held), body["apiVersion"], body)


def _refused(key: ObjectKey, body: dict[str, Any], live: dict[str, Any], reason: str) -> Drifted:
    """An object that differs from the commit by local comparison, whose apply the API server refuses."""
    held = unowned(body, live, FIELD_MANAGER)
    return Drifted(key, "changed", Change("~", key, unified(_shown(live, key), _shown(as_applied(body), key), key), ""),
                   *_named(live, [*differences(as_applied(body), live), *held], held), body["apiVersion"], body,
                   refused=reason)


def _named(live: dict[str, Any], paths: list[Path],
           held: dict[Path, tuple[str, ...]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The drifted fields as text (at most 20), and the managers that hold them now."""
    managers = {m for names in held.values() for m in names}
    managers |= {m for p in paths for m in holders(live, p, FIELD_MANAGER)}
    return tuple(dict.fromkeys(path_text(p) or "(every field)" for p in paths))[:20], tuple(sorted(managers))


def _shown(obj: dict[str, Any], key: ObjectKey) -> dict[str, Any]:
    """An object as the diff shows it: without status and server bookkeeping."""
    return normalize(obj, key)


def _changed_paths(before: Any, after: Any, path: Path = ()) -> Iterable[Path]:
    if isinstance(before, dict) and isinstance(after, dict):
        for k in sorted(before.keys() | after.keys(), key=str):
            if path == () and k == "metadata":
                yield from _changed_paths(_meta(before.get(k)), _meta(after.get(k)), ("metadata",))
            elif k not in before or k not in after:
                yield path + (k,)
            else:
                yield from _changed_paths(before[k], after[k], path + (k,))
    elif isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for i, (a, b) in enumerate(zip(before, after)):
            yield from _changed_paths(a, b, path + (i,))
    elif before != after or type(before) is not type(after):
        yield path


def _meta(meta: Any) -> Any:
    return {k: v for k, v in (meta or {}).items() if k not in NOISE_METADATA} if isinstance(meta, dict) else meta


def check(cluster: ClusterClient, manifests: list[Manifest], env: Environment, inventory: Inventory,
          known_kinds: Iterable[str] = (), namespaces: tuple[str, ...] | None = None) -> Report:
    """Read the cluster and compare it with a render of the deployed commit."""
    return compare(cluster, observe(cluster, manifests, env, inventory, known_kinds, namespaces))


# -- self-heal ----------------------------------------------------------------------------------------
def healing(report: Report, env: Environment) -> Plan:
    """What re-applying the drift takes: every missing or changed object applied again; objects no
    longer rendered deleted, with `prune: true` only."""
    applies = [Action("create" if d.what == "missing" else "change", d.key, d.api_version, d.body)
               for d in report.drifted if d.what != "extra"]
    deletes = [Action("delete", d.key, d.api_version) for d in report.drifted if d.what == "extra"] if env.prune \
        else []
    return Plan(order(applies, deletes), rollouts=tuple((a.api_version, a.key) for a in applies),
                kinds=frozenset(kind_id(a.key.group, a.key.kind) for a in applies))


def heal(cluster: ClusterClient, report: Report, env: Environment, options: Options = Options(),
         check_: Any = lambda: None) -> Result:
    """Apply the drift away, as a deploy of the same commit would (see `healing`)."""
    plan_ = healing(report, env)
    started = time.monotonic()
    try:
        result = execute(plan_, cluster, options, check_)
    except ClusterError as err:
        result = Result(error=str(err), temporary=err.temporary)
    return Result(result.done, result.unchanged, result.error, result.writes, time.monotonic() - started,
                  result.skipped, result.temporary)
