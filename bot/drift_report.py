"""A drift check as a user reads it: terminal text, Markdown (the comment's format), or JSON."""

from __future__ import annotations

import html
import json

from bot.drift import Drifted, Report
from bot.report import COLOURS, clip, code, details, short

WHAT = {"missing": "missing from the cluster", "changed": "changed in the cluster",
        "extra": "in the cluster, no longer rendered"}
OPS = {"missing": "+", "changed": "~", "extra": "-"}


def headline(report: Report) -> str:
    if report.in_sync:
        return f"in sync: {report.compared} objects as deployed"
    return f"drifted: {len(report.drifted)} of {report.compared} objects"


def why(d: Drifted) -> str:
    """What drifted in one line: the fields, and who holds them now."""
    text = WHAT[d.what]
    if d.fields:
        text += ": " + ", ".join(d.fields[:5]) + (f" and {len(d.fields) - 5} more" if len(d.fields) > 5 else "")
    if d.managers:
        text += f" (now held by {', '.join(d.managers)})"
    if d.refused:
        text += f"; the API server refuses to apply it back: {d.refused}"
    return text


def health_line(report: Report) -> str:
    words = {"healthy": "healthy", "progressing": "progressing", "degraded": "degraded",
             "unknown": "without health information"}
    parts = [f"{report.health[state]} {word}" for state, word in words.items() if report.health.get(state)]
    return ", ".join(parts) or "no objects"


def text(report: Report, environment: str, sha: str, colour: bool = False) -> str:
    def paint(s: str, what: str) -> str:
        return f"{COLOURS[what]}{s}{COLOURS['reset']}" if colour else s

    out = [paint(f"== {environment} at {short(sha)}: {headline(report)}", "bold"),
           f"   health: {health_line(report)}"]
    out += [f"   {key}: {verdict.state}: {verdict.message}" for key, verdict in report.unhealthy]
    out += [f"warning: {skipped}" for skipped in report.skipped]
    for d in report.drifted:
        out.append(paint(f"{OPS[d.what]} {d.key}", "bold") + f"  {why(d)}")
        for line in d.change.diff.splitlines():
            kind = line[:1] if line[:1] in "+-@" else None
            out.append("  " + (paint(line, kind) if kind else line))
    return "\n".join(out) + "\n"


def markdown_block(d: Drifted) -> str:
    return details(f"<code>{OPS[d.what]} {html.escape(clip(str(d.key)))}</code> {html.escape(clip(why(d)))}",
                   d.change.diff)


def markdown(report: Report, environment: str, sha: str) -> str:
    lines = [f"### {code(environment)} at {code(short(sha))}: {headline(report)}", "",
             f"Health: {health_line(report)}."]
    lines += [f"- {code(str(key))}: {verdict.state}: {html.escape(verdict.message)}"
              for key, verdict in report.unhealthy]
    return "\n".join(lines + [""] + [markdown_block(d) for d in report.drifted]) + "\n"


def as_json(report: Report, environment: str, sha: str) -> str:
    return json.dumps({
        "environment": environment, "sha": sha, "in_sync": report.in_sync, "compared": report.compared,
        "health": report.health,
        "unhealthy": [{"object": str(k), "health": h.state, "message": h.message} for k, h in report.unhealthy],
        "drifted": [{"what": d.what, "group": d.key.group, "kind": d.key.kind, "namespace": d.key.namespace,
                     "name": d.key.name, "fields": list(d.fields), "managers": list(d.managers),
                     "refused": d.refused, "diff": d.change.diff} for d in report.drifted],
    }, indent=2) + "\n"
