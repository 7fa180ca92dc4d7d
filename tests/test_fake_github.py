"""Drive FakeGitHub with the real PyGithub client, so its answers are proven to parse as GitHub's do."""

from __future__ import annotations

import base64
import json
import time

import github
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from urllib3.util.retry import Retry

from tests.fakes.github_api import FakeGitHub
from tests.fakes.http import Reply

REPO = "acme/infra"
HEAD, BASE = "a" * 40, "b" * 40


@pytest.fixture
def fake():
    with FakeGitHub() as server:
        server.add_repo(REPO)
        server.add_pull(REPO, 7, head_sha=HEAD, head_ref="feature", base_ref="main", base_sha=BASE)
        yield server
    assert server.errors == []


def client(fake: FakeGitHub, **overrides) -> github.Github:
    # PyGithub throttles writes to one a second by default, which would make the paging test crawl
    options = dict(base_url=fake.url, auth=github.Auth.Token("t0ken"), per_page=30, retry=None,
                   seconds_between_requests=0, seconds_between_writes=0)
    return github.Github(**{**options, **overrides})


@pytest.fixture
def repo(fake):
    return client(fake).get_repo(REPO)


def test_user_and_repo(fake, repo):
    assert client(fake).get_user().login == "gitops-bot[bot]"
    assert (repo.full_name, repo.default_branch, repo.clone_url) == (REPO, "main", f"https://github.com/{REPO}.git")
    assert repo.owner.login == "acme"
    last = fake.calls("GET", f"^/repos/{REPO}$")[-1]
    assert last.headers["authorization"] == "token t0ken"


def test_missing_auth_bad_token_and_unknown_route(fake):
    with pytest.raises(github.GithubException) as missing:
        github.Github(base_url=fake.url, retry=None).get_repo(REPO)
    assert missing.value.status == 401 and missing.value.data["message"] == "Requires authentication"
    fake.tokens = {"good"}
    with pytest.raises(github.BadCredentialsException):
        client(fake).get_repo(REPO)
    with pytest.raises(github.UnknownObjectException) as unknown:
        client(fake, auth=github.Auth.Token("good")).get_repo("acme/nope")
    assert unknown.value.data["message"] == "Not Found"
    gh = client(fake, auth=github.Auth.Token("good"))
    status, headers, body = gh.requester.requestJson("GET", "/no/such/route")
    assert status == 404 and json.loads(body)["documentation_url"].startswith("https://docs.github.com")
    assert int(headers["x-ratelimit-remaining"]) < 5000 and "x-ratelimit-reset" in headers


def test_pull_issue_view_and_list(fake, repo):
    fake.add_pull(REPO, 8, head_sha="c" * 40, head_ref="fix", head_full_name="mallory/infra", author="mallory")
    fake.add_pull(REPO, 9, head_sha="d" * 40, head_ref="old", state="closed")
    pull = repo.get_pull(7)
    assert (pull.head.sha, pull.head.ref, pull.base.sha, pull.base.ref) == (HEAD, "feature", BASE, "main")
    assert pull.mergeable is True and pull.merged is False and pull.user.login == "octocat"
    fork = repo.get_pull(8)
    assert fork.head.repo.full_name == "mallory/infra" and fork.head.repo.fork
    assert [p.number for p in repo.get_pulls(state="open")] == [8, 7]
    assert [p.number for p in repo.get_pulls(state="all")] == [9, 8, 7]
    assert [p.number for p in repo.get_pulls(head="acme:feature")] == [7]
    listed = repo.get_pulls()[1]
    assert listed.mergeable is True  # absent from list answers, so PyGithub had to fetch the PR itself
    assert fake.calls("GET", "/pulls/7$")
    issue = repo.get_issue(7)
    assert issue.pull_request is not None and issue.number == 7 and issue.html_url.endswith("/pull/7")


def test_comments_create_list_paginate_edit_delete(fake, repo):
    for i in range(105):
        fake.add_comment(REPO, 7, f"human {i}", user="alice")
    pull = repo.get_pull(7)
    posted = pull.create_issue_comment("plan: 3 to add")
    assert posted.user.login == "gitops-bot[bot]" and posted.user.type == "Bot"
    assert posted.body == "plan: 3 to add" and posted.created_at.tzinfo is not None
    comments = list(pull.get_issue_comments())
    assert len(comments) == 106 and comments[0].user.login == "alice" and comments[-1].id == posted.id
    assert len(fake.calls("GET", r"/issues/7/comments$")) == 4  # 106 comments at 30 a page
    assert [c.id for c in repo.get_issue(7).get_comments()] == [c.id for c in comments]
    assert len({c.id for c in comments}) == 106 and sorted(c.id for c in comments) == [c.id for c in comments]

    posted.edit("plan: 4 to add")
    assert repo.get_issue(7).get_comment(posted.id).body == "plan: 4 to add"
    assert fake.comments(REPO, 7)[-1]["body"] == "plan: 4 to add"
    posted.delete()
    assert fake.calls("DELETE", f"/issues/comments/{posted.id}$")
    assert len(fake.comments(REPO, 7)) == 105 and "plan: 4 to add" in fake.posted_texts()
    with pytest.raises(github.UnknownObjectException):
        repo.get_issue(7).get_comment(posted.id)
    with pytest.raises(github.GithubException) as too_long:
        pull.create_issue_comment("x" * 65537)
    assert too_long.value.status == 422


def test_reactions(fake, repo):
    human = fake.add_comment(REPO, 7, "/apply", user="alice")
    comment = repo.get_issue(7).get_comment(human["id"])
    reaction = comment.create_reaction("eyes")
    assert reaction.content == "eyes" and reaction.user.login == "gitops-bot[bot]"
    assert comment.create_reaction("eyes").id == reaction.id  # GitHub answers the existing reaction
    comment.create_reaction("rocket")
    assert sorted(r.content for r in comment.get_reactions()) == ["eyes", "rocket"]
    assert [r["content"] for r in fake.reactions(human["id"])] == ["eyes", "rocket"]
    assert fake.calls("POST", "/reactions$")[0].headers["accept"].startswith("application/vnd.github")
    assert comment.delete_reaction(reaction.id)
    assert [r["content"] for r in fake.reactions(human["id"])] == ["rocket"]
    with pytest.raises(github.GithubException):
        comment.create_reaction("thumbsup")


def test_statuses_and_combined_status(fake, repo):
    commit = repo.get_commit(HEAD)
    created = commit.create_status("pending", target_url="https://ci/1", description="planning", context="gitops/plan")
    assert created.state == "pending" and created.context == "gitops/plan" and created.creator.login == "gitops-bot[bot]"
    commit.create_status("success", description="applied", context="gitops/apply")
    assert commit.get_combined_status().state == "pending"
    commit.create_status("success", description="planned", context="gitops/plan")
    combined = repo.get_commit("feature").get_combined_status()
    assert combined.state == "success" and combined.sha == HEAD and combined.total_count == 2
    assert {s.context: s.state for s in combined.statuses} == {"gitops/plan": "success", "gitops/apply": "success"}
    assert [s.description for s in commit.get_statuses()] == ["planned", "applied", "planning"]
    assert [s["state"] for s in fake.statuses(REPO, HEAD)] == ["pending", "success", "success"]
    with pytest.raises(github.GithubException) as too_long:
        commit.create_status("failure", description="x" * 141, context="gitops/plan")
    assert too_long.value.status == 422


def test_collaborator_permission(fake, repo):
    for login, role in {"root": "admin", "mia": "maintain", "wes": "write", "tia": "triage", "nob": "none"}.items():
        fake.set_permission(REPO, login, role)
    expected = {"root": "admin", "mia": "write", "wes": "write", "tia": "read", "nob": "none", "stranger": "read"}
    assert {login: repo.get_collaborator_permission(login) for login in expected} == expected
    assert repo.get_collaborator_role_name("mia") == "maintain"
    fake.set_permission(REPO, "gitops-bot[bot]", "write")
    assert repo.get_collaborator_permission("gitops-bot[bot]") == "write"
    fake.repos[REPO]["private"] = True
    assert repo.get_collaborator_permission("stranger") == "none"


def test_reviews(fake, repo):
    fake.add_review(REPO, 7, "alice")
    fake.add_review(REPO, 7, "bob", state="CHANGES_REQUESTED", body="no")
    fake.add_review(REPO, 7, "carol", commit_id=BASE)
    reviews = list(repo.get_pull(7).get_reviews())
    assert [(r.user.login, r.state, r.commit_id) for r in reviews] == [
        ("alice", "APPROVED", HEAD), ("bob", "CHANGES_REQUESTED", HEAD), ("carol", "APPROVED", BASE)]
    assert reviews[1].body == "no" and reviews[0].submitted_at is not None


def test_a_comment_by_id_says_which_issue_it_is_on(fake, repo):
    from datetime import datetime, timezone

    fake.add_pull(REPO, 8, head_sha="c" * 40, head_ref="other")
    old = datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    made = fake.add_comment(REPO, 8, "/deploy", user="renovate[bot]", created_at=old)
    comment = repo.get_issue(7).get_comment(made["id"])  # GitHub finds it whatever issue is named
    assert comment.issue_url.endswith(f"/repos/{REPO}/issues/8")
    assert (comment.user.login, comment.user.type, comment.created_at) == ("renovate[bot]", "Bot", old)


def test_merge_calls_on_merge_and_closes(fake, repo):
    seen = []
    fake.on_merge = lambda full, number, method, title: seen.append((full, number, method, title)) or "e" * 40
    pull = repo.get_pull(7)
    status = pull.merge(merge_method="squash", sha=HEAD)
    assert status.merged and status.sha == "e" * 40
    assert seen == [(REPO, 7, "squash", "PR #7 (#7)")]
    merged = repo.get_pull(7)
    assert merged.merged and merged.state == "closed" and merged.merge_commit_sha == "e" * 40
    assert merged.merged_by.login == "gitops-bot[bot]"
    with pytest.raises(github.GithubException) as again:
        pull.merge()
    assert again.value.status == 405


def test_merge_refused(fake, repo):
    fake.add_pull(REPO, 8, head_sha="c" * 40, head_ref="conflict", mergeable=False)
    with pytest.raises(github.GithubException) as refused:
        repo.get_pull(8).merge()
    assert refused.value.status == 405 and refused.value.data["message"] == "Pull Request is not mergeable"
    with pytest.raises(github.GithubException) as moved:
        repo.get_pull(7).merge(sha="f" * 40)
    assert moved.value.status == 409 and not fake.pulls[REPO, 7]["merged"]


def test_deployments_and_statuses(fake, repo):
    repo.get_commit(HEAD).create_status("failure", context="ci")
    with pytest.raises(github.GithubException) as blocked:
        repo.create_deployment("feature", environment="staging")
    assert blocked.value.status == 409
    deployment = repo.create_deployment("feature", environment="staging", required_contexts=[],
                                        payload={"plan": "p1"}, description="apply p1")
    assert (deployment.sha, deployment.ref, deployment.environment) == (HEAD, "feature", "staging")
    assert deployment.payload == {"plan": "p1"} and deployment.creator.login == "gitops-bot[bot]"
    deployment.create_status("in_progress", target_url="https://ci/run/1")
    deployment.create_status("success", environment_url="https://staging.example")
    statuses = list(deployment.get_statuses())
    assert [s.state for s in statuses] == ["success", "in_progress"]
    assert statuses[1].target_url == "https://ci/run/1" and statuses[0].environment == "staging"
    assert [d.id for d in repo.get_deployments(environment="staging")] == [deployment.id]
    assert list(repo.get_deployments(environment="production")) == []
    with pytest.raises(github.GithubException):
        deployment.create_status("exploded")


def _pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def test_app_installation_auth(fake):
    fake.tokens = {"only-this-pat"}
    pem = _pem()
    integration = github.GithubIntegration(auth=github.Auth.AppAuth(1234, pem), base_url=fake.url)
    assert integration.get_repo_installation("acme", "infra").id == 4242
    assert integration.get_app().slug == "gitops-bot"  # its comments are by `gitops-bot[bot]`

    gh = client(fake, auth=github.Auth.AppAuth(1234, pem).get_installation_auth(4242))
    gh.get_repo(REPO).get_pull(7).create_issue_comment("hello from the app")
    assert fake.comments(REPO, 7)[-1]["user"]["login"] == "gitops-bot[bot]"
    token_call = fake.calls("POST", "^/app/installations/4242/access_tokens$")[-1]
    scheme, _, jwt = token_call.headers["authorization"].partition(" ")
    payload = jwt.split(".")[1]
    assert scheme == "Bearer" and json.loads(base64.urlsafe_b64decode(payload + "==="))["iss"] == "1234"
    token = fake.calls("POST", "/comments$")[-1].headers["authorization"].removeprefix("token ")
    assert token.startswith("ghs_") and token in fake.installation_tokens
    with pytest.raises(github.GithubException) as no_user:
        gh.get_user().login
    assert no_user.value.status == 403

    with pytest.raises(github.GithubException) as wrong_app:
        client(fake, auth=github.Auth.AppAuth(999, pem).get_installation_auth(4242)).get_repo(REPO)
    assert wrong_app.value.status == 401 and fake.jwt_claims[-1]["iss"] == "999"
    with pytest.raises(github.GithubException) as bare_jwt:
        client(fake, auth=github.Auth.AppAuth(1234, pem)).get_repo(REPO)
    assert bare_jwt.value.status == 401
    with pytest.raises(github.UnknownObjectException):
        client(fake, auth=github.Auth.AppAuth(1234, pem).get_installation_auth(1)).get_repo(REPO)


def test_fault_injection_retry_and_surface(fake):
    fake.fail("GET", f"^/repos/{REPO}$", Reply(502, {"message": "Server Error"}), times=1)
    retrying = client(fake, retry=Retry(total=2, backoff_factor=0, status_forcelist=[502], allowed_methods=None))
    started = time.monotonic()
    assert retrying.get_repo(REPO).full_name == REPO
    assert len(fake.calls("GET", f"^/repos/{REPO}$")) == 2 and time.monotonic() - started < 5

    fake.fail("POST", "/comments$", Reply(502, {"message": "Server Error"}), times=1)
    pull = client(fake).get_repo(REPO).get_pull(7)
    with pytest.raises(github.GithubException) as surfaced:
        pull.create_issue_comment("lost")
    assert surfaced.value.status == 502 and fake.comments(REPO, 7) == []
    pull.create_issue_comment("second try")
    assert [c["body"] for c in fake.comments(REPO, 7)] == ["second try"]
    assert fake.posted_texts().count("lost") == 1


def test_posted_texts_unescapes_json(fake, repo):
    secret = 'pa"ss\nwörd'
    repo.get_pull(7).create_issue_comment(f"leaked {secret}")
    assert any(secret in text for text in fake.posted_texts())
