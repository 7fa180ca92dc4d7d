"""Rollback commits, made with git plumbing in a bot's mirror and pushed to a real (local) remote."""

from __future__ import annotations

import pytest

from bot import rollback
from bot.config import Environment
from bot.gitrepo import Mirror
from bot.rollback import Identity, RollbackError, roll_back
from tests.conftest import GitRemote, git

BOT = Identity("gitops-bot", "gitops-bot@users.noreply.invalid")
STAGING = Environment("staging", "main", "envs/staging", cluster="staging")
V1 = {"envs/staging/web.yaml": "replicas: 1\n", "envs/staging/old.yaml": "kind: Old\n", "envs/prod/web.yaml": "p: 1\n"}
V2 = {"envs/staging/web.yaml": "replicas: 2\n", "envs/staging/old.yaml": None, "envs/staging/new.yaml": "kind: New\n",
      "envs/prod/web.yaml": "p: 2\n"}


@pytest.fixture
def mirror(tmp_path) -> Mirror:
    return Mirror(tmp_path / "mirror.git")


@pytest.fixture
def history(remote: GitRemote) -> tuple[str, str]:
    return remote.commit("main", V1, "v1"), remote.commit("main", V2, "v2")


def files(remote: GitRemote, rev: str) -> dict[str, str]:
    names = git(remote.bare, "ls-tree", "-r", "--name-only", rev).splitlines()
    return {name: remote.show(rev, name) for name in names}


def test_the_path_is_restored_in_a_new_commit_by_the_bot_and_the_rest_is_kept(remote, mirror, history):
    v1, v2 = history
    restored = roll_back(mirror, remote.url, STAGING, v1[:7], BOT, "Asked for by @alice.")

    assert restored.target == v1 and restored.commit == remote.show("main")
    assert git(remote.bare, "rev-parse", f"{restored.commit}^") == v2  # pushed on top: nothing rewritten
    assert files(remote, "main") == {"envs/staging/web.yaml": "replicas: 1", "envs/staging/old.yaml": "kind: Old",
                                     "envs/prod/web.yaml": "p: 2"}
    assert git(remote.bare, "log", "-1", "--format=%an <%ae>|%cn|%B", "main") == (
        f"gitops-bot <gitops-bot@users.noreply.invalid>|gitops-bot|Roll back staging to {v1[:12]}\n\n"
        f"Restores envs/staging as it was at {v1}.\nAsked for by @alice.")


def test_a_path_absent_at_the_target_is_removed(remote, mirror):
    before = remote.commit("main", {"envs/prod/web.yaml": "p: 1\n"}, "no staging yet")
    remote.commit("main", {"envs/staging/web.yaml": "replicas: 1\n"}, "staging")
    roll_back(mirror, remote.url, STAGING, before, BOT, "")
    assert files(remote, "main") == {"envs/prod/web.yaml": "p: 1"}


def test_the_whole_repository_when_the_path_is_its_root(remote, mirror, history):
    v1, _ = history
    restored = roll_back(mirror, remote.url, Environment("default", "main"), v1, BOT, "")
    trees = [git(remote.bare, "rev-parse", f"{commit}^{{tree}}") for commit in (restored.commit, v1)]
    assert trees[0] == trees[1]


def test_nothing_is_committed_when_the_branch_already_has_that_version(remote, mirror, history):
    _, v2 = history
    assert roll_back(mirror, remote.url, STAGING, v2, BOT, "") == rollback.Restored(v2, None)
    assert remote.show("main") == v2


@pytest.mark.parametrize("target, words", [
    ("deadbeef", "`deadbeef` is not a commit in the history of `main`"),
    ("HEAD~1", "`HEAD~1` is not a commit in the history of `main`"),  # only SHAs, never revision syntax
    ("--help", "`--help` is not a commit"),
])
def test_a_target_that_is_not_a_commit_of_the_branch_is_refused(remote, mirror, history, target, words):
    with pytest.raises(RollbackError, match=words):
        roll_back(mirror, remote.url, STAGING, target, BOT, "")


def test_a_commit_off_the_branch_is_refused(remote, mirror, history):
    elsewhere = remote.commit("feature", {"envs/staging/web.yaml": "replicas: 9\n"}, "unmerged", parent="main")
    mirror.ensure(remote.url, [], ["+refs/heads/feature:refs/heads/feature"])  # the mirror has it, from a PR
    with pytest.raises(RollbackError, match="is not a commit in the history of `main`"):
        roll_back(mirror, remote.url, STAGING, elsewhere, BOT, "")


def test_a_concurrent_push_makes_the_rollback_fail_cleanly(remote, mirror, history, monkeypatch):
    v1, _ = history
    push = rollback._Git.push

    def racing(self, url, commit, branch):
        remote.commit("main", {"README.md": "someone else\n"}, "a push meanwhile")
        push(self, url, commit, branch)

    monkeypatch.setattr(rollback._Git, "push", racing)
    with pytest.raises(RollbackError, match="`main` moved on while the rollback was being made, so nothing was "
                                            "pushed; try again"):
        roll_back(mirror, remote.url, STAGING, v1, BOT, "")
    assert git(remote.bare, "log", "-1", "--format=%s", "main") == "a push meanwhile"


def test_credentials_never_reach_the_message(mirror):
    with pytest.raises(RollbackError) as caught:
        roll_back(mirror, "https://x-access-token:ghp_SECRETsecret0123456789abcd@127.0.0.1:9/acme/infra.git",
                  STAGING, "abc1234", BOT, "")
    assert "SECRET" not in str(caught.value) and "could not be fetched" in str(caught.value)
