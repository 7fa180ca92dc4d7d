"""The commands job against a recording forge at our own seam, with real Redis and a real git repository:
what it asks the forge, how often, and what a retry of it does."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from bot import runtime, slash
from bot.config import Cluster, ServerConfig
from bot.environments import EnvRef, Environments, Sync
from bot.events import Repo
from bot.forges.base import Comment, MergeRefused, PullState, TransientForgeError
from bot.queue import Store
from bot.settings import Settings
from tests.conftest import GitRemote

TOKEN = "ghp_runTOKENvalue0123456789abcdef"
CONFIG = "environments:\n  staging: {branch: main, path: apps, cluster: staging, deployers: write}\n"


class RecordingForge:
    """The Forge interface, answering from plain fields and recording what it is asked to do."""

    name, comment_limit = "github", 65_536

    def __init__(self, permission: str = "write"):
        self.level, self.looked_up = permission, 0
        self.asked_about: list[str] = []
        self.state = PullState("h" * 40, "main", "open", mergeable=True, approved=True)
        self.comments: list[str] = []
        self.reactions: list[str] = []
        self.merges: list[str] = []
        self.fail_comments = 0
        self.said: dict[int, Comment] = {}
        """The comments in the thread, by id, as the forge's API answers them."""

    def clone_url(self, repo: Repo, *, allow_local: bool) -> str:
        assert allow_local  # the tests' remote is a file:// URL
        return repo.clone_url

    def pull_refspec(self, number: int) -> str:
        return f"refs/pull/{number}/head"

    def bot_login(self) -> str:
        return "gitops-bot"

    def default_branch(self, repo: str) -> str:
        return "main"

    def comment(self, repo: str, number: int, comment_id: int) -> Comment | None:
        return self.said.get(comment_id)

    def permission(self, repo: str, user: str) -> str:
        self.looked_up += 1
        self.asked_about.append(user)
        return self.level

    def pull_state(self, repo: str, number: int) -> PullState:
        return self.state

    def react(self, repo: str, number: int, comment_id: int, reaction: str) -> None:
        self.reactions.append(reaction)

    def create_comment(self, repo: str, number: int, body: str) -> int:
        if self.fail_comments:
            self.fail_comments -= 1
            raise TransientForgeError("GitHub answered 502 to create comment")
        self.comments.append(body)
        return len(self.comments)

    def list_comments(self, repo: str, number: int) -> list[Comment]:
        return [Comment(i + 1, body, "gitops-bot") for i, body in enumerate(self.comments)]

    def merge(self, repo: str, number: int, sha: str, message: str) -> str:
        self.merges.append(message)
        self.state = PullState(sha, "main", "merged", mergeable=None, approved=True)
        return "m" * 40


@pytest.fixture
def forge() -> RecordingForge:
    return RecordingForge()


@pytest.fixture
def rt(tmp_path: Path, redis_server, redis, forge) -> runtime.Runtime:
    settings = Settings(redis_url=redis_server.url, data_dir=tmp_path / "data", github_token=TOKEN)
    server = ServerConfig(repos=("*",), clusters={"staging": Cluster("staging", "/dev/null", repos=("*",))},
                          allow_local_urls=True)
    made = runtime.Runtime(settings, server, Store(redis, settings.name))
    made._forges["github"] = forge  # type: ignore[assignment]
    return made


@pytest.fixture
def repo(remote: GitRemote, forge: RecordingForge) -> Repo:
    remote.commit("main", {".gitops.yaml": CONFIG, "apps/cm.yaml": "kind: ConfigMap\n"}, "base")
    head = remote.commit("feature", {"apps/cm.yaml": "kind: ConfigMap\ndata: {}\n"}, "change", parent="main")
    remote.set_ref("refs/pull/7/head", head)
    forge.state = replace(forge.state, head_sha=head)
    return Repo("github", "acme/infra", remote.url, "main")


def run(rt: runtime.Runtime, repo: Repo, body: str, author: str = "alice", comment_id: int = 99) -> dict:
    """The job for a comment that `author` made just now, whose webhook says the same."""
    forge: RecordingForge = rt.forge("github")  # type: ignore[assignment]
    forge.said[comment_id] = Comment(comment_id, body, author, author.endswith("[bot]"), time.time())
    return slash.run(rt, slash.Request(repo, 7, comment_id, body, author))


def test_the_permission_is_looked_up_once_and_only_for_guarded_commands(rt, repo, forge):
    run(rt, repo, "/help\n/status", comment_id=1)
    assert forge.looked_up == 0
    run(rt, repo, "/lock staging\n/unlock staging\n/status", comment_id=2)
    assert forge.looked_up == 1
    assert forge.reactions == ["eyes", "+1", "eyes", "+1"]


def test_status_reads_each_environments_last_sync_check(rt, repo, forge):
    run(rt, repo, "/status", comment_id=1)
    assert "| ❓ not checked yet |" in forge.comments[0]

    checked = time.time()
    Environments(rt.store.redis, rt.settings.name).record_sync(EnvRef("github", "acme/infra", "staging"), Sync(
        "d" * 40, checked, "drifted", 2, ({"key": "apps/Deployment shop/web", "what": "changed",
                                            "fields": ["spec.replicas"], "managers": ["kubectl-edit"]},),
        compared=12, health={"healthy": 11, "degraded": 1},
        unhealthy=({"key": "apps/Deployment shop/web", "health": "degraded", "message": "quota exceeded"},)))
    run(rt, repo, "/status", comment_id=2)
    answer = forge.comments[1]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(checked))
    assert f"| ⚠️ 2 drifted, checked {when} against `ddddddd` | 11 healthy, 1 degraded; " in answer
    assert ("**`staging`**: 2 objects drifted\n- `apps/Deployment shop/web` changed: `spec.replicas`, now managed by "
            "`kubectl-edit`\n- and 1 more") in answer


def test_the_bots_own_comment_is_ignored_without_a_word(rt, repo, forge):
    assert run(rt, repo, "/deploy staging", author="GitOps-Bot") == {"ignored": "the bot's own comment"}
    assert forge.reactions == forge.comments == forge.merges == [] and forge.looked_up == 0


def test_the_repo_config_comes_from_the_base_branch_never_the_head(rt, repo, forge, remote):
    remote.commit("feature", {".gitops.yaml": CONFIG.replace("write", "read")}, "widen my rights", parent="main")
    forge.level = "read"
    run(rt, repo, "/lock staging")
    assert "/lock on staging needs write permission; you have read." in forge.comments[0]


def test_a_deploy_merges_once_and_queues_the_deploy_that_replies_here(rt, repo, forge):
    result = run(rt, repo, "/deploy\n/deploy")
    assert result["commands"] == [{"command": "/deploy", "result": "ok"}, {"command": "/deploy", "result": "refused"}]
    assert forge.merges == ["Merge #7: /deploy staging, asked by @alice"]
    (job,) = rt.store.queue("deploy").get_jobs()
    assert job.kwargs | {"repo": None} == {"repo": None, "branch": "main", "sha": "m" * 40, "actor": "alice",
                                           "pull": 7, "environment": None}
    (reply,) = forge.comments
    assert "This pull request is merged already." in reply and forge.reactions == ["eyes", "-1"]


def test_a_merge_the_forge_refuses_is_a_failure_in_its_words(rt, repo, forge):
    def refuse(*args: object) -> str:
        raise MergeRefused("GitHub answered 405: Pull Request is not mergeable")

    forge.merge = refuse  # type: ignore[method-assign]
    run(rt, repo, "/deploy staging")
    assert "The forge did not merge it: GitHub answered 405: Pull Request is not mergeable" in forge.comments[0]
    assert forge.reactions[-1] == "-1" and rt.store.queue("deploy").count == 0


def test_a_retried_job_neither_repeats_a_command_nor_its_reply(rt, repo, forge):
    forge.fail_comments = 1
    with pytest.raises(TransientForgeError):
        run(rt, repo, "/deploy staging\n/lock staging")
    assert len(forge.merges) == 1 and forge.comments == []
    run(rt, repo, "/deploy staging\n/lock staging")  # RQ's retry, with the same comment
    assert len(forge.merges) == 1 and rt.store.queue("deploy").count == 1
    (reply,) = forge.comments
    assert "Merged as `mmmmmmm`" in reply and "locked by @alice" in reply
    run(rt, repo, "/deploy staging\n/lock staging")
    assert len(forge.comments) == 1


def test_a_reply_never_carries_a_token(rt, repo, forge):
    run(rt, repo, f"/lock staging {TOKEN}")
    assert TOKEN not in forge.comments[0] and "locked by @alice: ***" in forge.comments[0]


def job(rt: runtime.Runtime, repo: Repo, said: Comment | None, body: str, author: str) -> dict:
    """The job for comment 5, whose webhook says `body` by `author`, while the forge's API says `said`."""
    forge: RecordingForge = rt.forge("github")  # type: ignore[assignment]
    if said is not None:
        forge.said[5] = said
    return slash.run(rt, slash.Request(repo, 7, 5, body, author))


def test_the_author_and_body_are_the_forges_never_the_payloads(rt, repo, forge):
    forge.level = "read"
    said = Comment(5, "/lock staging", "guest", created_at=time.time())
    assert job(rt, repo, said, "/unlock staging", "admin")["commands"] == [
        {"command": "/lock staging", "result": "refused"}]
    assert "/lock on staging needs write permission; you have read." in forge.comments[0]
    assert forge.asked_about == ["guest"]


@pytest.mark.parametrize("said, reason", [
    (None, "no such comment on this pull request"),
    (Comment(5, "/lock staging", "alice", created_at=time.time() - slash.MAX_COMMENT_AGE - 60),
     "the comment is older than 24 hours"),
    (Comment(5, "/lock staging", "renovate", author_is_bot=True, created_at=time.time()),
     "a comment by the bot renovate"),
    (Comment(5, "/lock staging", "GitOps-Bot", created_at=time.time()), "the bot's own comment"),
])
def test_comments_the_forge_does_not_vouch_for_are_ignored(rt, repo, forge, said, reason, caplog):
    caplog.set_level("INFO", logger="gitops_bot.slash")
    assert job(rt, repo, said, "/lock staging", "alice") == {"ignored": reason}
    assert forge.reactions == forge.comments == forge.merges == [] and forge.looked_up == 0
    assert [r.reason for r in caplog.records if r.msg == "comment ignored"] == [reason]
