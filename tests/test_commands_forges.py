"""Who may run what, as each forge says: GitHub roles and GitLab access levels (inherited from groups too),
read through the real adapters from the forge stand-ins, against every guarded command on every level."""

from __future__ import annotations

from typing import Iterator

import pytest

from bot.commands import GUARDED, parse
from bot.config import Environment, RepoConfig
from bot.environments import Status
from bot.forges.base import Forge, PullState
from bot.forges.github import GitHubForge
from bot.forges.gitlab import GitLabForge
from bot.slash import EnvState, Facts, Outcome, decide
from tests.fakes.github_api import FakeGitHub
from tests.fakes.gitlab_api import DEVELOPER, GUEST, MAINTAINER, OWNER, PLANNER, REPORTER, FakeGitLab

REPO, PROJECT, TOKEN = "acme/infra", "group/sub/infra", "glpat-authzTOKEN0123456789"
LEVELS = ("none", "read", "triage", "write", "maintain", "admin")
ENVIRONMENTS = [Environment(f"needs-{level}", f"needs-{level}", cluster="c", deployers=level) for level in LEVELS[1:]]
CONFIG = RepoConfig(tuple(ENVIRONMENTS))
EMPTY = EnvState(Status(None, None, None, None))


def verdicts(forge: Forge, repo: str, user: str) -> dict[tuple[str, str], bool]:
    """Whether `user` may run each guarded command on each environment; a refusal must name both levels."""
    held = forge.permission(repo, user)
    allowed = {}
    for env in ENVIRONMENTS:
        pull = PullState("a" * 40, env.branch, "open", mergeable=True, approved=True)
        facts = Facts(user, "/", pull, CONFIG, held=held, envs={e.name: EMPTY for e in ENVIRONMENTS})
        for name in GUARDED:
            (command,) = parse(f"/{name} {env.name} {'a' * 7 if name == 'rollback' else ''}")
            then = decide(command, facts).then
            refusal = (then.text or "") if isinstance(then, Outcome) and not then.ok else None
            allowed[name, env.name] = refusal is None
            if refusal is not None:
                assert refusal.endswith(f"/{name} on {env.name} needs {env.deployers} permission; you have {held}.")
    return allowed


def expected(level: str) -> dict[tuple[str, str], bool]:
    return {(name, env.name): LEVELS.index(level) >= LEVELS.index(env.deployers)
            for env in ENVIRONMENTS for name in GUARDED}


@pytest.fixture(scope="module")
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub(bot_login="gitops-bot") as fake:
        fake.add_repo(REPO, private=True)
        yield fake
    assert fake.errors == []


@pytest.mark.parametrize("role", ["admin", "maintain", "write", "triage", "read", None])
def test_github_collaborator_roles(github, role):
    user = f"user-{role}"
    if role:
        github.set_permission(REPO, user, role)
    assert verdicts(GitHubForge(github.url, token="ghp_authzTOKEN0123456789abcdef"), REPO, user) == \
        expected(role or "none")


@pytest.fixture(scope="module")
def gitlab() -> Iterator[FakeGitLab]:
    with FakeGitLab(token=TOKEN) as fake:
        fake.add_project(PROJECT)
        yield fake
    assert fake.errors == []


@pytest.mark.parametrize("project_level, group, group_level, level", [
    (OWNER, None, 0, "admin"),
    (MAINTAINER, None, 0, "maintain"),
    (DEVELOPER, None, 0, "write"),
    (REPORTER, None, 0, "triage"),
    (PLANNER, None, 0, "read"),
    (GUEST, None, 0, "read"),
    (0, None, 0, "none"),
    (0, "group", MAINTAINER, "maintain"),  # inherited from the top group
    (0, "group/sub", DEVELOPER, "write"),  # inherited from the subgroup
    (REPORTER, "group", OWNER, "admin"),  # the highest level counts
    (MAINTAINER, "group/sub", GUEST, "maintain"),
    (0, "group/subzero", OWNER, "none"),  # a group of a similar name is no ancestor
])
def test_gitlab_access_levels(gitlab, project_level, group, group_level, level):
    user = f"user-{project_level}-{group}-{group_level}".replace("/", "-")
    gitlab.add_user(user)
    if project_level:
        gitlab.set_access(PROJECT, user, project_level)
    if group:
        gitlab.set_group_access(group, user, group_level)
    assert verdicts(GitLabForge(gitlab.url, TOKEN), PROJECT, user) == expected(level)
