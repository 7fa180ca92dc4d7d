"""What a deploy says back: a one-line summary (forge deployment status, CLI) and the reply on the merged PR."""

from __future__ import annotations

from typing import Mapping

from bot.deploy import Result
from bot.environments import Hold, Record

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


def _one_line(text: str) -> str:
    return " ".join(text.split())
