"""Which comments cost a job: real comment payloads from both forges, parsed, and the plans they make."""

from __future__ import annotations

import json

import pytest

from bot.config import ServerConfig
from bot.forges import github, gitlab
from bot.intake import plan
from tests.conftest import payload

SERVER = ServerConfig(repos=("*",))


def github_comment(fixture: str = "issue_comment.created.on-pull-request", body: str | None = "/deploy staging",
                   **user: str):
    data = payload(f"github/{fixture}")
    if body is not None:
        data["comment"]["body"] = body
    data["comment"]["user"].update(user)
    raw = json.dumps(data).encode()
    headers = {"x-github-event": "issue_comment", "x-hub-signature-256": github.signature("s", raw)}
    return github.parse_webhook(headers, raw, "s").event


def gitlab_note(body: str = "/deploy staging", **attributes: str):
    data = payload("gitlab/note.merge_request")
    data["object_attributes"].update(note=body, **attributes)
    return gitlab.parse_webhook({"x-gitlab-event": "Note Hook", "x-gitlab-token": "t"},
                                json.dumps(data).encode(), "t").event


@pytest.mark.parametrize("event", [github_comment(), gitlab_note()], ids=["github", "gitlab"])
def test_a_new_comment_with_a_command_queues_one_commands_job_with_plain_values(event):
    (job,) = plan(event, SERVER).jobs
    assert (job.queue, job.func, job.supersedes) == ("commands", "run_commands", None)
    assert json.loads(json.dumps(job.kwargs)) == job.kwargs  # plain values, as RQ jobs take
    assert {k: v for k, v in job.kwargs.items() if k != "repo"} == {
        "number": event.number, "comment_id": event.comment_id, "body": "/deploy staging", "author": event.author}
    assert job.kwargs["repo"]["full_name"] == event.repo.full_name


@pytest.mark.parametrize("event, reason", [
    (github_comment(body="thanks, looks good"), "no command"),
    (github_comment(body="```\n/deploy staging\n```"), "no command"),
    (github_comment(body="> /deploy staging\nwhy did you ask for this?"), "no command"),
    (github_comment(body="see /etc/hosts"), "no command"),
    (github_comment("issue_comment.edited", body="/deploy staging"), "edited"),
    (github_comment("issue_comment.created", body="/deploy staging"), "issue, not a pull request"),
    (github_comment(body="/deploy staging", type="Bot", login="gitops-bot[bot]"), "bot gitops-bot[bot]"),
    (gitlab_note("no command here"), "no command"),
    (gitlab_note(action="update"), "edited"),
    (gitlab_note(noteable_type="Issue"), "issue, not a pull request"),
], ids=["github-plain", "github-fenced", "github-quoted", "github-path", "github-edited", "github-issue",
        "github-bot", "gitlab-plain", "gitlab-edited", "gitlab-issue"])
def test_comments_that_ask_nothing_cost_nothing(event, reason):
    decision = plan(event, SERVER)
    assert decision.jobs == [] and reason in decision.ignored


def test_an_unknown_command_is_still_answered():
    (job,) = plan(github_comment(body=None), SERVER).jobs  # the fixture's own body: `/build`
    assert job.kwargs["body"] == "/build"


def test_the_server_prefix_decides_what_is_a_command():
    bang = ServerConfig(repos=("*",), command_prefix="!")
    assert plan(github_comment(body="/deploy staging"), bang).jobs == []
    assert len(plan(github_comment(body="!deploy staging"), bang).jobs) == 1


def test_comments_in_other_repositories_are_ignored():
    decision = plan(github_comment(), ServerConfig(repos=("acme/*",)))
    assert decision.jobs == [] and "not in the server config" in decision.ignored
