"""The GitHub adapter against the GitHub stand-in, through the real PyGithub."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.events import Repo
from bot.forges.base import TransientForgeError
from bot.forges.github import GitHubForge
from tests.fakes.github_api import FakeGitHub
from tests.fakes.http import Reply

REPO = "acme/infra"
HEAD = "a" * 40
TOKEN = "ghp_adapterTOKEN0123456789abcdef"


@pytest.fixture
def fake():
    with FakeGitHub(bot_login="gitops-bot") as server:
        server.add_repo(REPO, clone_url="https://github.example/acme/infra.git")
        server.add_pull(REPO, 7, head_sha=HEAD, head_ref="feature", base_sha="b" * 40)
        yield server
    assert server.errors == []


@pytest.fixture
def forge(fake):
    return GitHubForge(fake.url, token=TOKEN)


def test_comments_round_trip(forge, fake):
    first = forge.create_comment(REPO, 7, "hello")
    fake.add_comment(REPO, 7, "a human", user="alice")
    forge.edit_comment(REPO, 7, first, "hello again")
    listed = forge.list_comments(REPO, 7)
    assert [(c.body, c.author) for c in listed] == [("hello again", "gitops-bot"), ("a human", "alice")]
    forge.delete_comment(REPO, 7, first)
    assert [c.body for c in forge.list_comments(REPO, 7)] == ["a human"]


def test_status_description_is_cut_to_githubs_limit(forge, fake):
    forge.set_status(REPO, HEAD, "gitops-bot/diff", "success", "x" * 300)
    (status,) = fake.statuses(REPO, HEAD)
    assert status["state"] == "success" and len(status["description"]) == 140


@pytest.mark.parametrize("role", ["admin", "maintain", "write", "triage", "read"])
def test_permission_is_the_role(forge, fake, role):
    fake.set_permission(REPO, "alice", role)
    assert forge.permission(REPO, "alice") == role


def test_pull_state_counts_the_latest_review_of_each_reviewer(forge, fake):
    fake.add_review(REPO, 7, "alice", "CHANGES_REQUESTED")
    assert not forge.pull_state(REPO, 7).approved
    fake.add_review(REPO, 7, "alice", "APPROVED")
    state = forge.pull_state(REPO, 7)
    assert state.approved and state.state == "open" and state.head_sha == HEAD and state.base_ref == "main"


def test_merge_and_deployments(forge, fake):
    fake.on_merge = lambda full, number, method, title: "c" * 40
    assert forge.merge(REPO, 7, HEAD, "merge it") == "c" * 40
    deployment = forge.create_deployment(REPO, "staging", "c" * 40, "main", "deploying")
    forge.update_deployment(REPO, "staging", deployment, "success", "3 changed")
    states = [s["state"] for s in fake.deployment_statuses[int(deployment)]]
    assert states == ["in_progress", "success"]


def test_reactions(forge, fake):
    comment = fake.add_comment(REPO, 7, "/help", user="alice")
    forge.react(REPO, 7, comment["id"], "eyes")
    assert [r["content"] for r in fake.reactions(comment["id"])] == ["eyes"]


def test_clone_urls_carry_the_token_for_https_only(forge):
    assert forge.authenticated_clone_url("https://github.example/acme/infra.git", REPO) == (
        f"https://x-access-token:{TOKEN}@github.example/acme/infra.git")
    assert forge.authenticated_clone_url("file:///tmp/remote.git", REPO) == "file:///tmp/remote.git"


def test_server_errors_become_transient_without_the_token(forge, fake):
    fake.fail("POST", r"/issues/7/comments$", Reply(502, {"message": "Bad Gateway"}), times=10)
    with pytest.raises(TransientForgeError) as err:
        forge.create_comment(REPO, 7, "hello")
    assert "kept failing create comment" in str(err.value) and TOKEN not in str(err.value)


def test_github_app_installation_tokens(fake):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    forge = GitHubForge(fake.url, app_id=str(fake.app_id), app_private_key=pem)
    forge.create_comment(REPO, 7, "from the app")
    token = next(iter(fake.installation_tokens))
    assert forge.authenticated_clone_url("https://github.example/acme/infra.git", REPO) == (
        f"https://x-access-token:{token}@github.example/acme/infra.git")
    assert fake.calls("POST", r"/app/installations/\d+/access_tokens")


def test_a_github_token_or_an_app_is_required():
    with pytest.raises(ValueError, match="GITHUB_TOKEN"):
        GitHubForge("http://127.0.0.1:1")


def test_open_pulls_and_statuses_for_reconcile(forge, fake):
    repo = Repo("github", REPO, "https://github.example/acme/infra.git", "main")
    fake.add_pull(REPO, 8, head_sha="c" * 40, head_ref="done", state="closed")
    (pull,) = forge.open_pulls(repo)
    assert (pull.number, pull.head_sha, pull.base_ref, pull.head_ref) == (7, HEAD, "main", "feature")
    assert not forge.has_status(REPO, HEAD, "gitops-bot/diff")
    forge.set_status(REPO, HEAD, "gitops-bot/diff", "pending", "rendering")
    assert forge.has_status(REPO, HEAD, "gitops-bot/diff")
    assert not forge.has_status(REPO, HEAD, "other-bot/diff")


def test_a_refused_merge_says_why_in_forge_neutral_terms(forge, fake):
    from bot.forges.base import MergeRefused

    fake.pulls[REPO, 7]["mergeable"] = False
    with pytest.raises(MergeRefused, match="GitHub answered 405: Pull Request is not mergeable"):
        forge.merge(REPO, 7, HEAD, "merge it")
