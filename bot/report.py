"""A diff report as Markdown comments (split to fit a forge's limit), terminal text, or JSON."""

from __future__ import annotations

import html
import json
import re
from typing import TYPE_CHECKING, Any

from bot.config import REPO_CONFIG_FILE
from bot.diff import Change, ConfigReview, Counts, DiffReport, EnvironmentDiff, ObjectKey

if TYPE_CHECKING:
    from bot.preview import LivePlan

OP_WORDS = {"+": "added", "~": "changed", "-": "removed"}
LIVE_OPS = {"create": "+", "change": "~", "prune": "-", "drift reverted": "~"}
PART_RESERVE = 300
"""Room kept in every part for its marker and "Part N of M" header."""
NAME_CHARS = 300
"""Longest name or path shown whole: every block must fit in one comment, whatever the repository holds."""
MESSAGE_CHARS = 4_000
"""Longest error or warning shown whole."""
MAX_PARTS = 5
"""Comments one diff may take; a larger diff is summed up in one."""


def marker(name: str) -> str:
    return f"<!-- gitops-bot:diff:{name} -->"


def fence_for(text: str) -> str:
    """A backtick fence longer than any run of backticks inside, so the text cannot close it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def fenced(text: str, lang: str = "") -> str:
    fence = fence_for(text)
    return f"{fence}{lang}\n{text}\n{fence}"


def code(text: str) -> str:
    """Inline code that survives backticks in the text."""
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def clip(text: str, limit: int = NAME_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def fit(body: str, limit: int) -> str:
    """`body` cut at a line to at most `limit` characters, saying so, for a comment the forge would refuse."""
    if len(body) <= limit:
        return body
    note = "\n\n… (cut to fit the forge's limit on a comment)\n"
    kept = body[:limit - len(note)].rpartition("\n")[0]
    return kept + note


def short(sha: str) -> str:
    return sha[:7] if re.fullmatch(r"[0-9a-f]{40}", sha) else sha


def summary(counts: Counts) -> str:
    return f"{counts.added} added, {counts.changed} changed, {counts.removed} removed"


def status_description(report: DiffReport) -> str:
    """The one line a commit status can hold."""
    if report.error:
        return "diff failed: " + report.error
    failed = [e.environment for e in report.environments if e.error]
    if failed:
        return f"render failed in {', '.join(failed)}"
    if not report.environments:
        return "no environment deploys from this branch"
    refused = f"; {report.refused} refused by the cluster" if report.refused else ""
    return summary(report.counts) + refused


# -- Markdown ----------------------------------------------------------------------------------

def _header(report: DiffReport, name: str) -> str:
    envs = len(report.environments)
    lines = [f"### {name} diff for {code(short(report.head_sha))}", ""]
    if report.error:
        lines += ["**The diff could not be computed.**", "", fenced(clip(report.error, MESSAGE_CHARS), "text")]
    elif not envs:
        lines += ["No environment deploys from this pull request's base branch, so there is nothing to diff."]
    else:
        failed = sum(1 for e in report.environments if e.error)
        rendered = envs - failed
        outcome = (f"**{summary(report.counts)}** in {rendered} environment{'s' if rendered != 1 else ''}"
                   if rendered else "nothing could be compared")
        broken = f"; **rendering failed in {failed}**" if failed else ""
        lines += [f"Base {code(short(report.base_sha))} → head {code(short(report.head_sha))}: {outcome}{broken}."]
    return "\n".join(lines)


def _config_review(review: ConfigReview) -> str:
    """The section that says how the change redefines environments, ahead of every diff."""
    lines = [f"#### ⚠️ This pull request changes {code(REPO_CONFIG_FILE)}", ""]
    branch = review.branch
    lines.append(f"Once merged into {code(clip(branch))}, it decides what deploys where, and who may deploy."
                 if review.governs else
                 f"It does not land on the default branch, so deploys keep following the default branch's "
                 f"{code(REPO_CONFIG_FILE)}; it decides the diffs of pull requests into {code(clip(branch))}.")
    if review.error:
        return "\n".join(lines + ["", "**The new file cannot be read:**", "",
                                  fenced(clip(review.error, MESSAGE_CHARS), "text")])
    if not review.changes:
        return "\n".join(lines + ["", "No environment changes."])
    lines += ["", "| Environment | Change |", "|---|---|"]
    for change in review.changes:
        if change.op == "changed":
            what = "; ".join(f"{field} {code(clip(old))} → {code(clip(new))}" for field, old, new in change.fields)
        else:
            what = f"**{change.op}**" + (": " if change.fields else "") + ", ".join(
                f"{field} {code(clip(new))}" for field, _, new in change.fields)
        refusal = review.refusals.get(change.name)
        if refusal:
            what += f" · ⛔ {clip(refusal, MESSAGE_CHARS)}"
        lines.append(f"| {code(clip(change.name))} | {what.replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


def _env_header(env: EnvironmentDiff, continued: bool = False, budget: int = MESSAGE_CHARS) -> str:
    """The environment's title, and unless `continued` its outcome, in about `budget` characters."""
    target = f" → cluster {code(clip(env.cluster))}" if env.cluster else ""
    title = (f"#### {code(clip(env.environment))} · {code(clip(env.path))}{target}"
             + (" (continued)" if continued else ""))
    if continued:
        return title
    lines = [title, ""]
    if env.refusal:
        lines += [f"⛔ **Deploys refused:** {clip(env.refusal, MESSAGE_CHARS)}", ""]
    if env.error:
        lines += ["**Render failed:**", "", fenced(clip(env.error, min(budget, MESSAGE_CHARS)), "text")]
    elif env.unchanged_inputs:
        lines.append("No changes: nothing this environment renders from was touched.")
    elif not env.changes:
        lines.append("No changes.")
    else:
        c = env.counts
        lines += ["| Added | Changed | Removed |", "|---:|---:|---:|", f"| {c.added} | {c.changed} | {c.removed} |"]
    return "\n".join(lines + _warnings(env.warnings, budget))


def _warnings(warnings: tuple[str, ...], budget: int) -> list[str]:
    return _listed([f"⚠️ {clip(w, min(budget, MESSAGE_CHARS))}" for w in warnings], budget, "⚠️ … and {} more warnings")


def renamed(change: Change) -> str:
    """What the change's note says of a generator's new name hash, or nothing."""
    old = change.renamed_from
    return "" if old is None else f"renamed by its generator from {old.name}"


def _details(change: Change, max_chars: int | None = None) -> str:
    note = renamed(change)
    note = f" · {html.escape(clip(note))}" if note else ""
    return details(f"<code>{change.op} {html.escape(clip(str(change.key)))}</code>"
                   f" <sub>{html.escape(clip(change.source))}{note}</sub>", change.diff, max_chars)


def details(summary: str, diff: str, max_chars: int | None = None) -> str:
    """A `<details>` block: its summary line (HTML), then the diff fenced, cut to about `max_chars`."""
    summary_line = f"<details><summary>{summary}</summary>"
    if max_chars is not None:
        diff = _truncate(diff, max_chars - len(summary_line) - 200)
    return f"{summary_line}\n\n{fenced(diff, 'diff')}\n\n</details>"


def _truncate(text: str, budget: int) -> str:
    lines, kept, used = text.splitlines(), [], 0
    for line in lines:
        if used + len(line) + 1 > budget:
            break
        kept.append(line)
        used += len(line) + 1
    omitted = len(lines) - len(kept)
    return "\n".join(kept + [f"# … {omitted} more lines not shown; run `gitops-bot diff` to see them all"])


def markdown_blocks(report: DiffReport, name: str, limit: int) -> list[tuple[str, str | None]]:
    """The comment as (block, environment header to repeat if a part starts here) pairs."""
    blocks: list[tuple[str, str | None]] = [(_header(report, name), None)]
    if report.config:
        blocks.append((_config_review(report.config), None))
    for env in report.environments:
        blocks.append((_env_header(env, budget=(limit - PART_RESERVE) // 4), None))
        continued = _env_header(env, continued=True)
        room = limit - PART_RESERVE - len(continued) - 200  # a part may begin with `continued`
        for change in env.changes:
            block = _details(change)
            if len(block) > room:
                block = _details(change, room - 200)
            blocks.append((block, continued))
        if env.live is not None:
            blocks += _live_blocks(env.live, report.head_sha, continued, limit)
    return blocks


# -- the live plan ------------------------------------------------------------------------------

LIVE_TITLE = "##### Live plan"


def _live_blocks(plan: LivePlan, head: str, continued: str, limit: int) -> list[tuple[str, str | None]]:
    """The live plan after its environment's Git diff: its header, then an object per block."""
    header = _live_header(plan, head, budget=(limit - PART_RESERVE) // 4)
    again = f"{continued}\n\n{LIVE_TITLE} (continued)"
    room = limit - PART_RESERVE - len(again) - 200
    blocks: list[tuple[str, str | None]] = [(header, None)]
    for word, change, note in plan.objects:
        block = _live_details(word, change, note)
        if len(block) > room:
            block = _live_details(word, change, note, room - 200)
        blocks.append((block, again))
    return blocks


def _live_header(plan: LivePlan, head: str, budget: int = MESSAGE_CHARS) -> str:
    """What applying the head would do to the cluster now, in numbers, with the refusals and notes."""
    lines = [f"{LIVE_TITLE} · cluster {code(clip(plan.cluster))} now", ""]
    if plan.skipped:
        return "\n".join(lines + [f"⏸️ **Not computed:** {clip(plan.skipped, MESSAGE_CHARS)}."])
    lines.append(f"What applying head {code(short(head))} would do to the cluster now, by a server-side dry run "
                 f"(`dryRun=All`): nothing was written. Computed because {clip(plan.ran_for, MESSAGE_CHARS)}.")
    if plan.error:
        return "\n".join(lines + ["", "**The live plan could not be computed:**", "",
                                  fenced(clip(plan.error, min(budget, MESSAGE_CHARS)), "text")])
    c = plan.counts
    lines += ["", "| Create | Change | Prune | Drift reverted | Refused | Unchanged |",
              "|---:|---:|---:|---:|---:|---:|",
              f"| {c['created']} | {c['changed']} | {c['pruned']} | {c['reverted']} | {c['refused']} | "
              f"{plan.unchanged} |"]
    if not any(c.values()):
        lines += ["", "Applying the head would change nothing in the cluster."]
    # The API server's words may quote the object's values: as code on one line, they cannot break the Markdown.
    items = [f"⛔ **Refused:** {code(clip(str(r.key)))}: {code(clip(' '.join(r.reason.split()), MESSAGE_CHARS))}"
             for r in plan.refused]
    items += [f"⚠️ {code(clip(str(key)))} needs a Namespace or CustomResourceDefinition that this head creates, "
              "so a dry run cannot validate it" for key in plan.unvalidated]
    items += [f"⚠️ {clip(note, MESSAGE_CHARS)}" for note in plan.notes]
    return "\n".join(lines + _listed(items, budget))


def _listed(items: list[str], budget: int, more: str = "… and {} more") -> list[str]:
    """Quoted lines in about `budget` characters, saying how many more there are."""
    lines: list[str] = []
    used = 0
    for index, item in enumerate(items):
        line = f"> {item}"
        if used + len(line) > budget:
            return lines + ["", f"> {more.format(len(items) - index)}"]
        lines += ["", line]
        used += len(line) + 2
    return lines


def _live_details(word: str, change: Change, note: str, max_chars: int | None = None) -> str:
    extra = f" · {note}" if note else ""
    return details(f"<code>{LIVE_OPS[word]} {html.escape(clip(str(change.key)))}</code>"
                   f" <sub>{html.escape(word + clip(extra))}</sub>", change.diff, max_chars)


def _summary(report: DiffReport, name: str, budget: int, parts: int, max_parts: int) -> str:
    """The counts of every environment and the largest changes, in one comment: the whole diff would
    take more comments than a thread should hold."""
    blocks = [_header(report, name)]
    if report.config:
        blocks.append(_config_review(report.config))
    for env in report.environments:
        blocks.append(_env_header(env, budget=budget // 8))
        if env.live is not None:
            blocks.append(_live_header(env.live, report.head_sha, budget // 8))
    base, head = short(report.base_sha), short(report.head_sha)
    blocks.append(f"**The whole diff would take {parts} comments**, more than the {max_parts} a pull request "
                  f"gets, so here are its largest changes. See every change with "
                  f"`gitops-bot diff {base} {head}` in a clone of the repository.")
    changes = sorted(((env, c) for env in report.environments for c in env.changes),
                     key=lambda pair: len(pair[1].diff), reverse=True)
    rows, used = ["| | Object | Environment | Source | Lines |", "|---|---|---|---|---:|"], 0
    room = budget - sum(len(b) + 2 for b in blocks) - 200
    for env, change in changes:
        renamed_from = f" (renamed from {code(clip(change.renamed_from.name, 120))})" if change.renamed_from else ""
        cells = (change.op, code(clip(str(change.key), 120)) + renamed_from, code(clip(env.environment, 60)),
                 code(clip(change.source, 120)), f"{change.diff.count(chr(10)) + 1:,}")
        row = "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
        if used + len(row) + 1 > room:
            break
        rows.append(row)
        used += len(row) + 1
    more = len(changes) - (len(rows) - 2)
    return "\n\n".join([*blocks, "\n".join(rows)] + ([f"… and {more:,} more changes."] if more else []))


def markdown(report: DiffReport, name: str, limit: int = 65_536, max_parts: int | None = MAX_PARTS) -> list[str]:
    """The comment, split at object boundaries into parts of at most `limit` characters; past
    `max_parts`, one summary comment instead."""
    head = marker(name)
    parts: list[list[str]] = [[]]
    size = 0
    budget = limit - PART_RESERVE
    for block, continuation in markdown_blocks(report, name, limit):
        if parts[-1] and size + len(block) + 2 > budget:
            parts.append([continuation] if continuation else [])
            size = sum(len(b) + 2 for b in parts[-1])
        parts[-1].append(block)
        size += len(block) + 2
    total = len(parts)
    if max_parts is not None and total > max_parts:
        return [f"{head}\n{_summary(report, name, limit - PART_RESERVE, total, max_parts)}\n"]
    bodies = []
    for number, blocks in enumerate(parts, 1):
        title = [head]
        if total > 1:
            title.append(f"**Part {number} of {total}** · head {code(short(report.head_sha))}")
        bodies.append("\n".join(title) + "\n" + "\n\n".join(blocks) + "\n")
    return bodies


# -- terminal text -----------------------------------------------------------------------------

COLOURS = {"+": "\033[32m", "-": "\033[31m", "@": "\033[36m", "bold": "\033[1m", "reset": "\033[0m"}


def text(report: DiffReport, colour: bool = False) -> str:
    def paint(s: str, what: str) -> str:
        return f"{COLOURS[what]}{s}{COLOURS['reset']}" if colour else s

    out = []  # errors are the caller's to say (on stderr), once
    if report.config:
        out.append(paint(f"== {REPO_CONFIG_FILE} changes", "bold"))
        out += [f"   {line}" for line in _config_lines(report.config)]
    for env in report.environments:
        title = f"== {env.environment} ({env.path}): "
        if env.refusal:
            out.append(paint("refused: ", "-") + env.refusal)
        if env.error:
            out.append(paint(title + "render failed", "bold"))
            continue
        out.append(paint(title + (summary(env.counts) if env.changes else "no changes"), "bold"))
        for warning in env.warnings:
            out.append("warning: " + warning)
        for change in env.changes:
            note = renamed(change)
            out.append(paint(f"{change.op} {change.key}", "bold") + f"  ({change.source}{'; ' + note if note else ''})")
            for line in change.diff.splitlines():
                kind = line[:1] if line[:1] in "+-@" else None
                out.append("  " + (paint(line, kind) if kind else line))
        if env.live is not None:
            out += _live_text(env.live, paint)
    return "\n".join(out) + "\n"


def _live_text(plan: LivePlan, paint: Any) -> list[str]:
    title = f"-- live plan, cluster {plan.cluster}: "
    if plan.skipped:
        return [paint(title + "not computed", "bold"), f"   {plan.skipped}"]
    if plan.error:
        return [paint(title + "failed", "bold"), f"   {plan.error}"]
    c = plan.counts
    out = [paint(title + f"{c['created']} to create, {c['changed']} to change, {c['pruned']} to prune, "
                         f"{c['reverted']} drift reverted, {c['refused']} refused", "bold")]
    out += [paint("refused: ", "-") + f"{r.key}: {r.reason}" for r in plan.refused]
    out += [f"not validated: {key} needs what this head creates" for key in plan.unvalidated]
    for word, change, note in plan.objects:
        out.append(paint(f"{LIVE_OPS[word]} {change.key}", "bold") + f"  ({word}{' · ' + note if note else ''})")
        for line in change.diff.splitlines():
            kind = line[:1] if line[:1] in "+-@" else None
            out.append("  " + (paint(line, kind) if kind else line))
    return out


def _config_lines(review: ConfigReview) -> list[str]:
    if review.error:
        return [f"the new file cannot be read: {review.error}"]
    lines = []
    for change in review.changes:
        fields = ", ".join(f"{f} {old} -> {new}" if change.op == "changed" else f"{f} {new}"
                           for f, old, new in change.fields)
        refusal = f" (refused: {review.refusals[change.name]})" if change.name in review.refusals else ""
        lines.append(f"{change.op} {change.name}" + (f": {fields}" if fields else "") + refusal)
    return lines or ["no environment changes"]


# -- a standard unified diff -------------------------------------------------------------------

def patch(report: DiffReport) -> str:
    """Every change as a unified diff with `---`/`+++` headers, one file per object, which `patch`,
    `delta` and other diff tools read. Secret values stay masked."""
    out = []
    for env in report.environments:
        for change in env.changes:
            old = _patch_path(env.environment, change.renamed_from or change.key)
            new = _patch_path(env.environment, change.key)
            out.append(f"--- {'/dev/null' if change.op == '+' else 'a/' + old}")
            out.append(f"+++ {'/dev/null' if change.op == '-' else 'b/' + new}")
            out.append(change.diff)
    return "\n".join(out) + ("\n" if out else "")


def _patch_path(environment: str, key: ObjectKey) -> str:
    return "/".join((environment, key.group or "core", key.kind, key.namespace or "_cluster", f"{key.name}.yaml"))


# -- JSON --------------------------------------------------------------------------------------

def as_json(report: DiffReport) -> str:
    def counts(c: Counts) -> dict[str, int]:
        return {"added": c.added, "changed": c.changed, "removed": c.removed}

    data: dict[str, Any] = {
        "base": report.base_sha, "head": report.head_sha, "error": report.error,
        "counts": counts(report.counts),
        "config": None if report.config is None else {
            "error": report.config.error, "governs": report.config.governs,
            "changes": [{"environment": c.name, "op": c.op,
                         "fields": [{"field": f, "before": old, "after": new} for f, old, new in c.fields],
                         "refusal": report.config.refusals.get(c.name)} for c in report.config.changes]},
        "environments": [{
            "name": env.environment, "path": env.path, "cluster": env.cluster, "error": env.error,
            "refusal": env.refusal,
            "unchanged_inputs": env.unchanged_inputs, "warnings": list(env.warnings),
            "counts": counts(env.counts),
            "changes": [{"op": OP_WORDS[c.op], "group": c.key.group, "kind": c.key.kind,
                         "namespace": c.key.namespace, "name": c.key.name, "source": c.source,
                         "renamed_from": c.renamed_from.name if c.renamed_from else None,
                         "diff": c.diff} for c in env.changes],
            "live": None if env.live is None else _live_json(env.live),
        } for env in report.environments],
    }
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def _live_json(plan: LivePlan) -> dict[str, Any]:
    def key(k: Any) -> dict[str, str]:
        return {"group": k.group, "kind": k.kind, "namespace": k.namespace, "name": k.name}

    return {"cluster": plan.cluster, "ran_for": plan.ran_for or None, "skipped": plan.skipped, "error": plan.error,
            "counts": {**plan.counts, "unchanged": plan.unchanged},
            "objects": [{"op": word, **key(change.key), "note": note, "diff": change.diff}
                        for word, change, note in plan.objects],
            "refused": [{**key(r.key), "reason": r.reason} for r in plan.refused],
            "unvalidated": [key(k) for k in plan.unvalidated], "notes": list(plan.notes)}
