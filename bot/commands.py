"""Slash commands: parsing comment text, and who may run what. Pure functions, no I/O."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from bot.config import PERMISSION_LEVELS, Environment

GUARDED = ("deploy", "rollback", "lock", "unlock")
"""Commands that need the environment's `deployers` level; the rest are for anyone."""


@dataclass(frozen=True)
class Usage:
    args: str
    does: str
    least: int = 0
    most: int | None = 0
    """How many arguments it takes; None: any number."""


USAGE = {
    "diff": Usage("", "recompute the diff comment now"),
    "deploy": Usage("[ENV]", "check the requirements, merge, and report the deploy", 0, 1),
    "rollback": Usage("ENV [SHA]", "restore ENV's path as it was at SHA (default: the previous deploy)", 1, 2),
    "lock": Usage("ENV [reason]", "hold deploys of ENV", 1, None),
    "unlock": Usage("ENV", "release ENV and deploy what is pending", 1, 1),
    "status": Usage("", "each environment's deployed commit, lock and pending commit"),
    "help": Usage("", "this message"),
}
KNOWN = tuple(USAGE)
MAX_COMMANDS = 10
"""Commands run from one comment; the rest are answered, not run."""
MAX_REASON = 200
"""Characters in a `/lock` reason: it is shown in every `/status` and on the dashboard."""
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


@dataclass(frozen=True)
class Command:
    name: str
    """Lower-case; `unknown` commands keep the name as typed in `line`."""
    args: tuple[str, ...]
    line: str
    error: str | None = None
    """Why the line could not be understood, for the reply."""

    @property
    def known(self) -> bool:
        return self.name in KNOWN

    def problem(self, prefix: str = "/") -> str | None:
        """Why a known command cannot run as written: unreadable or the wrong number of arguments."""
        if self.error:
            return self.error
        usage = USAGE[self.name]
        if len(self.args) < usage.least or (usage.most is not None and len(self.args) > usage.most):
            return f"usage: `{synopsis(self.name, prefix)}`"
        if self.name == "lock" and len(" ".join(self.args[1:])) > MAX_REASON:
            return f"a lock's reason is at most {MAX_REASON} characters"
        return None


def synopsis(name: str, prefix: str = "/") -> str:
    """`/rollback ENV [SHA]`"""
    return f"{prefix}{name} {USAGE[name].args}".rstrip()


def command_lines(body: str) -> list[str]:
    """The lines of a comment that Markdown shows as plain text: no fences, quotes or HTML comments."""
    lines, fence, in_html_comment = [], None, False
    for line in body.replace("\r\n", "\n").split("\n"):
        opening = _FENCE.match(line)
        if fence is not None:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence) \
                    and not line.strip().lstrip(fence[0]):
                fence = None
            continue
        if opening:
            fence = opening.group(1)
            continue
        if in_html_comment:
            in_html_comment = "-->" not in line
            continue
        if line.lstrip().startswith("<!--"):
            in_html_comment = "-->" not in line
            continue
        if line.startswith("    ") or line.startswith("\t") or line.lstrip().startswith(">"):
            continue  # an indented code block, or a quote of someone else's words
        lines.append(line.strip())
    return lines


def parse(body: str, prefix: str = "/") -> list[Command]:
    """Every command in a comment, in order. Lines that merely start with the prefix
    (a path such as `/etc/hosts`, a lone `/`) are not commands."""
    commands = []
    for line in command_lines(body):
        if not line.startswith(prefix):
            continue
        rest = line[len(prefix):]
        word = rest.split(None, 1)[0] if rest[:1].strip() else ""
        if not _NAME.fullmatch(word):
            continue
        try:
            args = tuple(shlex.split(rest[len(word):]))
        except ValueError as err:
            commands.append(Command(word.lower(), (), line, error=f"cannot read the arguments: {err}"))
            continue
        commands.append(Command(word.lower(), args, line))
    return commands


def has_commands(body: str, prefix: str = "/") -> bool:
    return bool(parse(body, prefix))


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


def level_at_least(held: str, needed: str) -> bool:
    order = {level: rank for rank, level in enumerate(PERMISSION_LEVELS)}
    return order.get(held, 0) >= order.get(needed, len(order))


def authorize(command: str, environment: Environment | None, held: str, prefix: str = "/") -> Decision:
    """May someone holding `held` run `command` on `environment`? The reason names both levels."""
    if command not in GUARDED:
        return Decision(True, f"{prefix}{command} is open to anyone who can comment")
    if environment is None:
        return Decision(False, f"{prefix}{command} needs an environment")
    needed = environment.deployers
    if level_at_least(held, needed):
        return Decision(True, f"{prefix}{command} on {environment.name} needs {needed}; you have {held}")
    return Decision(False, f"{prefix}{command} on {environment.name} needs {needed} permission; you have {held}")
