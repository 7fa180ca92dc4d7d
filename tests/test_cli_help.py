"""`--help` everywhere: what each command does, each option's default, the environment variables it
reads, and `diff`'s exit codes and how it compares BASE with HEAD."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from bot.cli import build_parser, main
from bot.settings import VARIABLES

ROOT = Path(__file__).resolve().parent.parent


def help_of(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *command: str) -> str:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # wrapping aside


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_top_level_help_lists_every_command_in_one_line_and_every_variable(capsys, monkeypatch):
    text = help_of(capsys, monkeypatch)
    for name in subcommands():
        assert re.search(rf"\b{re.escape(name)} \w", text), name
    assert "up web + worker in one command, with an embedded Redis" in text
    for name in VARIABLES:
        assert name in text, name


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_every_command_says_what_it_does_and_every_option_has_help(command):
    parser = subcommands()[command]
    assert parser.description and len(parser.description) > 60
    for action in parser._actions:
        assert action.help, f"{command} {action.option_strings or action.dest}"


def test_serve_names_its_defaults_and_the_variables_behind_them(capsys, monkeypatch):
    text = help_of(capsys, monkeypatch, "serve")
    assert "--host HOST address to listen on (default: 0.0.0.0, every address of this machine)" in text
    assert "--port PORT port to listen on (default: $PORT, else 8080)" in text
    assert "(default: $WEB_CONCURRENCY, else 3)" in text
    assert "(default: $GITOPS_BOT_WEB_THREADS, else 1" in text
    assert "--no-summary" not in text
    variables = text.split("environment variables:")[1]
    for name in ("REDIS_URL", "GITOPS_BOT_CONFIG", "GITHUB_WEBHOOK_SECRET", "GITLAB_WEBHOOK_TOKEN",
                 "GITOPS_BOT_DASHBOARD_TOKEN", "PORT", "WEB_CONCURRENCY", "GITOPS_BOT_WEB_THREADS"):
        assert f" {name} " in f" {variables}", name
    assert "GITHUB_TOKEN" not in variables  # the web process never calls a forge


def test_up_listens_on_this_machine_only_by_default(capsys, monkeypatch):
    text = help_of(capsys, monkeypatch, "up")
    assert "(default: 127.0.0.1, this machine only; 0.0.0.0 for every address)" in text
    assert "(default: $PORT, else 8080)" in text
    assert "GITOPS_BOT_DATA_DIR" in text and "GITHUB_TOKEN" in text and "GITHUB_WEBHOOK_SECRET" in text


def test_diff_gives_its_exit_codes_and_how_base_and_head_are_compared(capsys, monkeypatch):
    text = help_of(capsys, monkeypatch, "diff")
    assert "0 no change 1 changes 2 error" in text
    assert "HEAD is compared with its merge base with BASE (as `git diff BASE...HEAD` does)" in text
    assert ".gitops.yaml as BASE has it" in text
    assert "HEAD head revision (default: the working tree)" in text
    assert "NO_COLOR" in text.split("environment variables:")[1]


def test_a_command_reading_no_variable_says_none():
    assert subcommands()["init"].epilog is None


def test_every_variable_the_code_reads_is_documented_in_help_and_the_readme():
    read = set()
    for path in (ROOT / "bot").rglob("*.py"):
        source = path.read_text()
        read |= set(re.findall(r"""(?:environ\.get|getenv|\bget)\(\s*["']([A-Z][A-Z0-9_]{2,})["']""", source))
        read |= set(re.findall(r"""environ\[\s*["']([A-Z][A-Z0-9_]{2,})["']\s*\]""", source))
    wsgi = {"PATH_INFO", "REQUEST_METHOD", "CONTENT_TYPE", "CONTENT_LENGTH", "REMOTE_ADDR"}  # a request's, not ours
    read -= wsgi | {name for name in read if name.startswith("HTTP_")}
    read.discard("KUBERNETES_SERVICE_HOST")  # Kubernetes sets it in every pod: where in_cluster works
    assert read <= set(VARIABLES), read - set(VARIABLES)
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| variable | meaning |"):]
    table = table[:table.index("\n\n")]
    for name in VARIABLES:
        assert f"`{name}`" in table, name


def test_the_quick_start_installs_what_running_needs_and_ci_runs_the_readmes_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", readme[:readme.index("\n## ")], re.S)
    quick_start, tests = blocks[0], blocks[1]
    assert "pip install -e . " in quick_start and "[test]" not in quick_start
    assert tests == "pip install -e '.[test]' && python -m pytest -q"
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()
