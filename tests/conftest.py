"""Shared test fixtures: real webhook payloads, a Redis server of our own, real git repositories."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest
from hypothesis import settings
import redis as redis_lib

from bot.embedded import RedisServer
from tests.fakes.kube_api import FakeKubeAPI
from tests.harness import KubeTarget

FIXTURES = Path(__file__).parent / "fixtures"

# Property tests: a modest run in CI; HYPOTHESIS_PROFILE=nightly searches much further.
settings.register_profile("ci", max_examples=200, deadline=None)
settings.register_profile("nightly", max_examples=10_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def payload(name: str) -> dict[str, Any]:
    """A real webhook payload from tests/fixtures, e.g. `github/pull_request.opened`."""
    return copy.deepcopy(json.loads((FIXTURES / f"{name}.json").read_text()))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server started for this test run, in its own directory, on a free port."""
    with RedisServer(tmp_path_factory.mktemp("redis"), appendonly=False) as server:
        yield server


@pytest.fixture
def redis(redis_server: RedisServer) -> redis_lib.Redis:
    connection = redis_lib.Redis.from_url(redis_server.url)
    connection.flushall()  # our own server: each test starts empty
    return connection


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@dataclass(frozen=True)
class Symlink:
    """A symlink to commit, pointing at `target` exactly as written."""

    target: str


class GitRemote:
    """A bare "remote" and a working clone to make commits in, as a forge would hold them."""

    def __init__(self, root: Path, default_branch: str = "main"):
        self.bare = root / "remote.git"
        self.work = root / "work"
        git(root, "init", "-q", "--bare", "-b", default_branch, str(self.bare))
        git(root, "init", "-q", "-b", default_branch, str(self.work))
        git(self.work, "config", "user.email", "dev@example.com")
        git(self.work, "config", "user.name", "Dev")
        git(self.work, "remote", "add", "origin", self.url)

    @property
    def url(self) -> str:
        return self.bare.as_uri()

    def commit(self, branch: str, files: Mapping[str, str | bytes | Symlink | None], message: str = "change",
               parent: str | None = None) -> str:
        """Commit `files` (None deletes) on `branch` (created from `parent` if new) and push it."""
        branches = git(self.work, "branch", "--list", branch)
        if branches:
            git(self.work, "checkout", "-q", branch)
        elif parent:
            git(self.work, "checkout", "-q", "-b", branch, parent)
        else:
            git(self.work, "checkout", "-q", "--orphan", branch)
        for path, content in files.items():
            target = self.work / path
            if content is None:
                target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Symlink):
                target.unlink(missing_ok=True)
                target.symlink_to(content.target)
            elif isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "--allow-empty", "-m", message)
        git(self.work, "push", "-q", "-f", "origin", branch)
        return git(self.work, "rev-parse", "HEAD")

    def merge(self, branch: str, into: str, message: str) -> str:
        """Merge `branch` into `into` with a merge commit, as a forge's merge button does, and push it."""
        git(self.work, "fetch", "-q", "origin", into)
        git(self.work, "checkout", "-q", into)
        git(self.work, "reset", "-q", "--hard", f"origin/{into}")
        git(self.work, "merge", "-q", "--no-ff", "-m", message, branch)
        git(self.work, "push", "-q", "origin", into)
        return git(self.work, "rev-parse", "HEAD")

    def show(self, rev: str, path: str = "") -> str:
        """A file at a revision of the remote, or with no path, the commit's SHA."""
        return git(self.bare, "show", f"{rev}:{path}") if path else git(self.bare, "rev-parse", rev)

    def set_ref(self, ref: str, sha: str) -> None:
        """Point a ref in the remote at a commit, as GitHub keeps `refs/pull/N/head`."""
        git(self.bare, "update-ref", ref, sha)


@pytest.fixture
def github():
    """The GitHub stand-in; the bot's login there is `gitops-bot`. A crash inside it fails the test."""
    from tests.fakes.github_api import FakeGitHub

    with FakeGitHub(bot_login="gitops-bot") as fake:
        yield fake
    assert fake.errors == []


@pytest.fixture
def gitlab(request: pytest.FixtureRequest):
    """The GitLab stand-in, taking the test module's `TOKEN`; the bot's username there is
    `gitops-bot`. A crash inside it fails the test."""
    from tests.fakes.gitlab_api import FakeGitLab

    with FakeGitLab(bot_username="gitops-bot", token=request.module.TOKEN) as fake:
        yield fake
    assert fake.errors == []


@pytest.fixture
def remote(tmp_path: Path) -> GitRemote:
    return GitRemote(tmp_path)


@pytest.fixture(params=["fake", "real"])
def kube_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KubeTarget]:
    """Where deploy tests deploy to: the local Kubernetes API stand-in, and a real cluster when
    GITOPS_BOT_TEST_KUBECONFIG names one (its current context, or GITOPS_BOT_TEST_CONTEXT)."""
    if request.param == "fake":
        with FakeKubeAPI() as fake:
            target = KubeTarget(fake.kubeconfig(str(tmp_path / "kubeconfig")), fake.context, tmp_path, fake)
            yield target
            target.cleanup()
        return
    kubeconfig = os.environ.get("GITOPS_BOT_TEST_KUBECONFIG")
    if not kubeconfig:
        pytest.skip("GITOPS_BOT_TEST_KUBECONFIG is not set")
    target = KubeTarget(kubeconfig, os.environ.get("GITOPS_BOT_TEST_CONTEXT"), tmp_path)
    yield target
    target.cleanup()
