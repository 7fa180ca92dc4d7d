"""Slash-command parsing and authorisation, as tables."""

from __future__ import annotations

import pytest

from bot.commands import authorize, parse
from bot.config import Environment


def parsed(body: str, prefix: str = "/") -> list[tuple[str, tuple[str, ...]]]:
    return [(c.name, c.args) for c in parse(body, prefix)]


@pytest.mark.parametrize("body, expected", [
    ("/diff", [("diff", ())]),
    ("/DIFF", [("diff", ())]),
    ("/Deploy Staging", [("deploy", ("Staging",))]),
    ("  /status  ", [("status", ())]),
    ("/help\n", [("help", ())]),
    ("/deploy", [("deploy", ())]),
    ("/deploy staging", [("deploy", ("staging",))]),
    ("/rollback production abc1234", [("rollback", ("production", "abc1234"))]),
    ('/lock production "release freeze" until monday', [("lock", ("production", "release freeze", "until", "monday"))]),
    ("/lock staging 'it''s fine'", [("lock", ("staging", "its fine"))]),
    ("/unlock staging", [("unlock", ("staging",))]),
    ("/lock\tstaging", [("lock", ("staging",))]),
    ("please\n/diff\nthanks", [("diff", ())]),
    ("/lock staging\n/deploy staging", [("lock", ("staging",)), ("deploy", ("staging",))]),
    ("/diff\r\n/status\r\n", [("diff", ()), ("status", ())]),
    ("/frobnicate now", [("frobnicate", ("now",))]),
    ("/deploy-all", [("deploy-all", ())]),
    ("no commands here", []),
    ("", []),
    ("please run /deploy", []),
    ("`/deploy staging`", []),
    ("run `/deploy staging` when ready", []),
    ("> /deploy production", []),
    (">/deploy production", []),
    ("   > /deploy production", []),
    ("```\n/deploy production\n```", []),
    ("```sh\n/deploy production\n```\n/status", [("status", ())]),
    ("~~~\n/deploy production\n~~~", []),
    ("````\n```\n/deploy production\n```\n````", []),
    ("```\n/deploy production", []),  # an unclosed fence runs to the end, as Markdown renders it
    ("    /deploy production", []),  # an indented code block
    ("<!-- /deploy production -->", []),
    ("<!--\n/deploy production\n-->\n/diff", [("diff", ())]),
    ("/etc/hosts is broken", []),
    ("/ deploy", []),
    ("/", []),
    ("//deploy", []),
    ("/123", []),
])
def test_parse_table(body, expected):
    assert parsed(body) == expected


def test_unbalanced_quotes_are_reported_not_guessed():
    (command,) = parse('/lock staging "oops')
    assert command.name == "lock" and command.error and "arguments" in command.error


def test_another_prefix():
    assert parsed("!deploy staging\n/diff", prefix="!") == [("deploy", ("staging",))]
    assert parsed("@bot diff", prefix="@bot") == []  # the word must follow the prefix directly
    assert parsed("@botdiff", prefix="@bot") == [("diff", ())]


def test_known_and_unknown():
    known, unknown = parse("/diff\n/frob")
    assert known.known and not unknown.known


STAGING = Environment("staging", "main", deployers="write")
PRODUCTION = Environment("production", "production", deployers="maintain")
LEVELS = ("none", "read", "triage", "write", "maintain", "admin")


@pytest.mark.parametrize("held", LEVELS)
@pytest.mark.parametrize("command", ["deploy", "rollback", "lock", "unlock"])
@pytest.mark.parametrize("environment", [STAGING, PRODUCTION], ids=["write", "maintain"])
def test_authorisation_matrix(command, environment, held):
    decision = authorize(command, environment, held)
    assert decision.allowed == (LEVELS.index(held) >= LEVELS.index(environment.deployers))
    assert environment.deployers in decision.reason and held in decision.reason


@pytest.mark.parametrize("command", ["diff", "status", "help"])
@pytest.mark.parametrize("held", LEVELS)
def test_open_commands(command, held):
    assert authorize(command, PRODUCTION, held).allowed


def test_guarded_command_without_environment_is_refused():
    decision = authorize("deploy", None, "admin")
    assert not decision.allowed and "needs an environment" in decision.reason


def test_reasons_speak_the_configured_prefix():
    assert authorize("deploy", STAGING, "read", prefix="!").reason == "!deploy on staging needs write permission; you have read"
