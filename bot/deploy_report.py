"""What a deploy says back: a one-line summary (forge deployment status, CLI) and the reply on the merged PR;
and what a check of the cluster says back: the commit status of the deployed commit's sync."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from bot.environments import Hold, Record, Sync
from bot.forges.base import StatusState

if TYPE_CHECKING:  # the web process words sync states with this module, without loading the Kubernetes client
    from bot.deploy import Result

WORDS = {"success": "succeeded", "failure": "failed", "refused": "refused"}
SIGNS = {"create": "+", "change": "~", "delete": "-"}


def marker(instance: str) -> str:
    return f"<!-- gitops-bot:deploy:{instance} -->"


def counts(numbers: Mapping[str, int]) -> str:
    """`1 created, 2 changed, 0 deleted, 10 unchanged`"""
    return ", ".join(f"{numbers[what]} {what}" for what in ("created", "changed", "deleted", "unchanged"))


def summary(record: Record) -> str:
    if record.result == "refused":
        return f"refused: {record.error}"
    text = f"{WORDS[record.result]} in {record.duration:.1f} s: {counts(record.counts)}"
    return f"{text}; {record.error}" if record.error else text


def reply(record: Record, environment: str, instance: str) -> str:
    icon = {"success": "✅", "failure": "❌", "refused": "⛔"}[record.result]
    lines = [marker(instance),
             f"{icon} **Deploy of `{record.sha[:7]}` to `{environment}` {WORDS[record.result]}**"]
    if record.result != "refused":
        lines[-1] += f" in {record.duration:.1f} s"
        lines += ["", "| created | changed | deleted | unchanged |", "|---:|---:|---:|---:|",
                  f"| {record.created} | {record.changed} | {record.deleted} | {record.unchanged} |"]
    if record.error:
        lines += ["", f"**{'Reason' if record.result == 'refused' else 'Error'}:** {_one_line(record.error)}"]
    return "\n".join(lines) + "\n"


def pending_reply(sha: str, environment: str, hold: Hold, instance: str, prefix: str = "/") -> str:
    reason = f": {_one_line(hold.reason)}" if hold.reason else ""
    return (f"{marker(instance)}\n⏸️ **Deploy of `{sha[:7]}` to `{environment}` is pending.** "
            f"The environment is locked by @{hold.actor}{reason}. It deploys on `{prefix}unlock {environment}`.\n")


def dry_run(result: Result, sha: str, environment: str) -> str:
    """What a deploy would do, object by object, as `gitops-bot deploy --dry-run` prints it."""
    lines = [f"{SIGNS[action.op]} {action.key}" for action in result.done]
    lines += [f"skipped {reason}" for reason in result.skipped]
    outcome = f"failed: {result.error}" if result.error else counts(result.counts)
    return "\n".join([*lines, f"dry run of {sha[:7]} to {environment}: {outcome}"]) + "\n"


STATUS_LIMIT = 140
"""Characters a commit status description holds on GitHub (GitLab holds more)."""
HEALTH_WORDS = {"healthy": "healthy", "progressing": "progressing", "degraded": "degraded",
                "unknown": "without health information"}


def sync_status(sync: Sync) -> tuple[StatusState, str]:
    """The commit status `<instance>/sync` on the deployed commit, with a description of at most 140 characters.

    `success` when the cluster matches the commit, or its drift was re-applied (`drift: heal`); `failure`
    when it drifted, naming as many drifted objects as fit; `error` when the check itself failed.
    """
    if sync.state == "error":
        return "error", _fit(f"check failed: {_one_line(sync.error or 'no reason given')}")
    checked = time.strftime("%H:%M UTC", time.gmtime(sync.checked))
    if sync.in_sync:
        degraded = sync.health.get("degraded", 0)
        return "success", _fit(f"in sync: {_objects(sync.compared)}, checked {checked}"
                               + (f"; {degraded} degraded" if degraded else ""))
    drifted = [sync_item(item) for item in sync.drifted]
    if sync.healed:
        return "success", listing(f"re-applied {_objects(sync.drifted_count)} that drifted", drifted,
                                  sync.drifted_count, STATUS_LIMIT)
    return "failure", listing(f"{_objects(sync.drifted_count)} drifted", drifted, sync.drifted_count, STATUS_LIMIT)


def sync_item(item: Mapping[str, Any]) -> str:
    """A drifted object in a few words: `Deployment shop/web (changed)`."""
    return f"{item['key']} ({item['what']})"


def health_summary(health: Mapping[str, int]) -> str:
    """`12 healthy, 1 progressing, 4 without health information`: the counts that are not zero."""
    order = [*HEALTH_WORDS, *sorted(set(health) - set(HEALTH_WORDS))]
    return ", ".join(f"{health[h]} {HEALTH_WORDS.get(h, h)}" for h in order if health.get(h))


def unhealthy_total(sync: Sync) -> int:
    """Objects progressing or degraded; the list of them may be cut, the counts never are."""
    return max(len(sync.unhealthy), sync.health.get("progressing", 0) + sync.health.get("degraded", 0))


def listing(head: str, items: Iterable[str], total: int, limit: int) -> str:
    """`head: a, b, and 3 more`, naming as many of `total` items as fit in `limit` characters."""
    shown: list[str] = []
    for item in items:
        more = total - len(shown) - 1
        if len(f"{head}: {', '.join([*shown, item])}{_more(more)}") > limit:
            break
        shown.append(item)
    return _fit(f"{head}: {', '.join(shown)}{_more(total - len(shown))}" if shown else head, limit)


def _more(count: int) -> str:
    return f", and {count} more" if count > 0 else ""


def _objects(count: int) -> str:
    return f"{count} object{'' if count == 1 else 's'}"


def _fit(text: str, limit: int = STATUS_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _one_line(text: str) -> str:
    return " ".join(text.split())
