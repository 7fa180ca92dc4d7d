"""The GitHub adapter against the GitHub stand-in, through the real PyGithub."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.events import Repo
from bot.forges.base import DEFAULT_BRANCH_TTL, CloneURLRefused, TransientForgeError
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
    fake.set_permission(REPO, "alice", "write")
    fake.add_review(REPO, 7, "alice", "CHANGES_REQUESTED")
    state = forge.pull_state(REPO, 7)
    assert not state.approved and state.approval_note == "@alice asks for changes"
    fake.add_review(REPO, 7, "alice", "APPROVED")
    fake.add_review(REPO, 7, "alice", "COMMENTED")  # a comment leaves the approval standing
    state = forge.pull_state(REPO, 7)
    assert state.approved and state.state == "open" and state.head_sha == HEAD and state.base_ref == "main"


def test_pull_state_names_the_author_and_a_fork(forge, fake):
    fake.add_pull(REPO, 9, head_sha="d" * 40, head_ref="patch", author="mallory", head_full_name="mallory/infra")
    state = forge.pull_state(REPO, 9)
    assert (state.author, state.fork) == ("mallory", True)
    mine = forge.pull_state(REPO, 7)
    assert (mine.author, mine.fork) == ("octocat", False)


@pytest.mark.parametrize("reviews, approved, note", [
    ([("bob", "APPROVED", HEAD)], True, ""),
    ([("bob", "APPROVED", "0" * 40)], False, "@bob approved an older head"),
    ([("carol", "APPROVED", HEAD)], False, "@carol has read permission, below write"),
    ([("dave", "APPROVED", HEAD)], False, "@dave has none permission, below write"),  # not a collaborator
    ([("bob", "APPROVED", HEAD), ("erin", "CHANGES_REQUESTED", "0" * 40)], False, "@erin asks for changes"),
    ([("bob", "APPROVED", HEAD), ("carol", "CHANGES_REQUESTED", HEAD)], True, ""),  # read: no say either way
    ([("erin", "CHANGES_REQUESTED", HEAD), ("erin", "DISMISSED", HEAD), ("bob", "APPROVED", HEAD)], True, ""),
    ([("bob", "APPROVED", HEAD), ("bob", "DISMISSED", HEAD)], False, ""),
    ([("bob", "APPROVED", "0" * 40), ("erin", "APPROVED", HEAD)], True, ""),
])
def test_only_approvals_of_the_current_head_by_writers_count(forge, fake, reviews, approved, note):
    fake.repos[REPO]["private"] = True
    for user, role in (("bob", "write"), ("erin", "maintain"), ("carol", "read")):
        fake.set_permission(REPO, user, role)
    for user, state, commit in reviews:
        fake.add_review(REPO, 7, user, state, commit_id=commit)
    state = forge.pull_state(REPO, 7)
    assert (state.approved, state.approval_note) == (approved, note)


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


@pytest.mark.parametrize("api, web", [
    ("https://api.github.com", "https://github.com"),
    ("https://github.example/api/v3", "https://github.example"),
    ("https://github.example:8443/api/v3/", "https://github.example:8443"),
])
def test_clone_urls_are_built_from_the_forge_and_carry_the_token(api, web):
    forge = GitHubForge(api, token=TOKEN)
    host = web.removeprefix("https://")
    for given in (f"{web}/acme/infra.git", f"{web}/someone/else.git", f"https://user:pw@{host}/acme/infra"):
        assert forge.clone_url(Repo("github", REPO, given, "main"), allow_local=False) == (
            f"https://x-access-token:{TOKEN}@{host}/acme/infra.git")


@pytest.mark.parametrize("given, where", [
    ("https://evil.example/acme/infra.git", "https://evil.example"),
    ("https://github.com.evil.example/acme/infra.git", "https://github.com.evil.example"),
    ("https://github.com:8443/acme/infra.git", "https://github.com:8443"),
    ("http://github.com/acme/infra.git", "http://github.com"),
    ("ssh://git@github.com/acme/infra.git", "no http(s) host"),
    ("git@github.com:acme/infra.git", "no http(s) host"),
    ("ext::sh -c touch% /tmp/pwned", "no http(s) host"),
    ("", "no http(s) host"),
])
def test_a_clone_url_off_the_forge_is_refused_without_the_token(given, where):
    forge = GitHubForge("https://api.github.com", token=TOKEN)
    with pytest.raises(CloneURLRefused) as refused:
        forge.clone_url(Repo("github", REPO, given, "main"), allow_local=True)
    assert str(refused.value) == f"{REPO} is not fetched: its clone URL is on {where}, not on the forge, " \
                                 "https://github.com"
    assert TOKEN not in str(refused.value)


@pytest.mark.parametrize("given", ["file:///tmp/remote.git", "/srv/git/infra.git", "../infra"])
def test_local_clone_urls_only_where_the_server_config_allows_them(forge, given):
    repo = Repo("github", REPO, given, "main")
    assert forge.clone_url(repo, allow_local=True) == given  # as it is, with no token
    with pytest.raises(CloneURLRefused, match=r"its clone URL is local, and the server config does not allow local "
                                              r"URLs \(git: \{allow_local_urls: true\}\)"):
        forge.clone_url(repo, allow_local=False)


def test_a_comment_is_read_by_id_on_its_own_pull_request(forge, fake):
    fake.add_pull(REPO, 8, head_sha="c" * 40, head_ref="other")
    mine = fake.add_comment(REPO, 7, "/deploy", user="alice")
    elsewhere = fake.add_comment(REPO, 8, "/deploy", user="alice")
    app = fake.add_comment(REPO, 7, "/deploy", user="renovate[bot]")
    comment = forge.comment(REPO, 7, mine["id"])
    assert comment is not None and (comment.body, comment.author, comment.author_is_bot) == ("/deploy", "alice", False)
    assert abs(comment.created_at - time.time()) < 60
    assert forge.comment(REPO, 7, elsewhere["id"]) is None  # on another pull request
    assert forge.comment(REPO, 7, 999_999) is None
    assert forge.comment(REPO, 7, app["id"]).author_is_bot
    assert fake.calls("GET", rf"/repos/{REPO}/issues/comments/{mine['id']}$")


def test_the_default_branch_is_read_from_the_api_and_kept_briefly(forge, fake, monkeypatch):
    fake.repos[REPO]["default_branch"] = "trunk"
    clock = [1000.0]
    monkeypatch.setattr(forge._default_branches, "clock", lambda: clock[0])
    assert forge.default_branch(REPO) == forge.default_branch(REPO) == "trunk"
    assert len(fake.calls("GET", rf"/repos/{REPO}$")) == 1
    fake.repos[REPO]["default_branch"] = "main"
    clock[0] += DEFAULT_BRANCH_TTL + 1
    assert forge.default_branch(REPO) == "main" and len(fake.calls("GET", rf"/repos/{REPO}$")) == 2


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
    # No installation token is made for a clone URL that would not carry one: refused, or plain http.
    with pytest.raises(CloneURLRefused):
        forge.clone_url(Repo("github", REPO, "https://evil.example/acme/infra.git", "main"), allow_local=False)
    assert forge.clone_url(Repo("github", REPO, f"{fake.url}/acme/infra.git", "main"), allow_local=False) == (
        f"{fake.url}/acme/infra.git")
    assert not fake.calls("POST", r"/app/installations/\d+/access_tokens")
    forge.create_comment(REPO, 7, "from the app")
    assert len(fake.calls("POST", r"/app/installations/\d+/access_tokens")) == 1


def test_a_github_apps_own_comments_are_its_slugs_and_only_those_are_its_diff():
    from bot.comments import sync_comments

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    with FakeGitHub(bot_login="gitops-bot[bot]") as fake:
        fake.add_repo(REPO)
        fake.add_pull(REPO, 7, head_sha=HEAD, head_ref="feature")
        forge = GitHubForge(fake.url, app_id=str(fake.app_id), app_private_key=pem)
        assert forge.bot_login() == "gitops-bot[bot]"
        squatter = fake.add_comment(REPO, 7, "<!-- m -->\nno changes", user="mallory")
        (mine,) = sync_comments(forge, REPO, 7, "<!-- m -->", ["<!-- m -->\nthe diff"])
        assert [(c["user"]["login"], c["body"]) for c in fake.comments(REPO, 7)] == [
            ("mallory", "<!-- m -->\nno changes"), ("gitops-bot[bot]", "<!-- m -->\nthe diff")]
        assert sync_comments(forge, REPO, 7, "<!-- m -->", ["<!-- m -->\nnew"]) == [mine]
        assert fake.comments(REPO, 7)[0]["id"] == squatter["id"]
    assert fake.errors == []


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
