"""The GitLab adapter against the GitLab stand-in, through the real python-gitlab client."""

from __future__ import annotations

import email.utils
import time

import gitlab
import pytest

from bot.events import Repo
from bot.forges.base import DEFAULT_BRANCH_TTL, CloneURLRefused, MergeRefused, PullState, TransientForgeError
from bot.forges.gitlab import MAX_RETRIES, GitLabForge
from tests.fakes.gitlab_api import DEVELOPER, GUEST, MAINTAINER, OWNER, PLANNER, REPORTER, FakeGitLab
from tests.fakes.http import Reply

PATH = "group/sub/infra"
TOKEN = "glpat-adapterTOKEN0123"
HEAD, BASE = "a" * 40, "b" * 40
BAD_GATEWAY = Reply(502, {"message": "502 Bad Gateway"}, {"Retry-After": "0"})  # "0": at once, in-process


@pytest.fixture
def fake():
    with FakeGitLab(token=TOKEN) as server:
        server.add_project(PATH)
        server.add_mr(PATH, 7, "feature", "main", HEAD, base_sha=BASE)
        yield server
    assert server.errors == []


@pytest.fixture
def forge(fake) -> GitLabForge:
    return GitLabForge(fake.url, TOKEN)


@pytest.fixture
def no_backoff(monkeypatch):
    """python-gitlab sleeps between retries; the count matters here, not the wait."""
    monkeypatch.setattr(gitlab.utils.time, "sleep", lambda seconds: None)


def test_identity(forge, fake):
    assert (forge.name, forge.comment_limit) == ("gitlab", 1_000_000)
    assert forge.pull_refspec(7) == "refs/merge-requests/7/head"
    assert forge.bot_login() == forge.bot_login() == "gitops-bot"
    assert len(fake.calls("GET", r"/api/v4/user$")) == 1  # cached


@pytest.mark.parametrize("base, given", [
    ("https://gitlab.example.com", "https://gitlab.example.com/group/sub/infra.git"),
    ("https://gitlab.example.com", "https://gitlab.example.com:443/other/project.git"),
    ("https://gitlab.example.com:8443", "https://gitlab.example.com:8443/group/sub/infra.git"),
    ("https://example.com/gitlab", "https://example.com/gitlab/group/sub/infra.git"),  # a relative URL root
])
def test_clone_urls_are_the_configured_gitlab_and_the_projects_path(base, given):
    forge = GitLabForge(base, TOKEN)
    host = base.removeprefix("https://")
    assert forge.clone_url(Repo("gitlab", PATH, given, "main"), allow_local=False) == (
        f"https://oauth2:{TOKEN}@{host}/group/sub/infra.git")


@pytest.mark.parametrize("given", ["https://evil.example/x.git", "http://gitlab.example.com/group/sub/infra.git",
                                   "https://gitlab.example.com:8443/group/sub/infra.git", "git@gitlab.example.com:g/r",
                                   "file:///srv/infra.git"])
def test_other_clone_urls_are_refused_without_the_token(given):
    forge = GitLabForge("https://gitlab.example.com", TOKEN)
    with pytest.raises(CloneURLRefused, match=f"^{PATH} is not fetched: its clone URL is ") as refused:
        forge.clone_url(Repo("gitlab", PATH, given, "main"), allow_local=False)
    assert TOKEN not in str(refused.value)


def test_projects_are_addressed_by_their_nested_path(forge, fake):
    forge.create_comment(PATH, 7, "hello")
    (call,) = fake.calls("POST", r"/notes$")
    assert call.path == "/api/v4/projects/group%2Fsub%2Finfra/merge_requests/7/notes"
    assert call.headers["private-token"] == TOKEN


def test_notes_listed_without_system_notes_created_edited_deleted(forge, fake):
    fake.add_note(PATH, 7, "added 1 commit", author="alice", system=True)
    human = fake.add_note(PATH, 7, "/diff", author="carol")
    first = forge.create_comment(PATH, 7, "<!-- marker -->\npart 1")
    second = forge.create_comment(PATH, 7, "<!-- marker -->\npart 2")
    assert [(c.id, c.body, c.author) for c in forge.list_comments(PATH, 7)] == [
        (human["id"], "/diff", "carol"), (first, "<!-- marker -->\npart 1", "gitops-bot"),
        (second, "<!-- marker -->\npart 2", "gitops-bot")]

    forge.edit_comment(PATH, 7, first, "<!-- marker -->\nnew")
    forge.delete_comment(PATH, 7, second)
    assert [n["body"] for n in fake.notes(PATH, 7)] == ["added 1 commit", "/diff", "<!-- marker -->\nnew"]
    assert len(fake.calls("PUT", rf"/notes/{first}$")) == 1
    assert fake.calls("GET", rf"/notes/{first}$") == []  # an edit is one PUT, no read first


def test_listing_follows_pages(forge, fake):
    for i in range(130):
        fake.add_note(PATH, 7, f"note {i}")
    assert len(forge.list_comments(PATH, 7)) == 130


@pytest.mark.parametrize("state, gitlab_state", [
    ("pending", "pending"), ("success", "success"), ("failure", "failed"), ("error", "failed"),
])
def test_commit_status_states(forge, fake, state, gitlab_state):
    forge.set_status(PATH, HEAD, "gitops-bot/diff", state, "1 added", url="https://bot/runs/1")
    (status,) = fake.statuses(PATH, HEAD)
    assert (status["name"], status["status"], status["description"], status["target_url"]) == (
        "gitops-bot/diff", gitlab_state, "1 added", "https://bot/runs/1")


def test_posting_pending_onto_pending_is_tolerated(forge, fake):
    forge.set_status(PATH, HEAD, "gitops-bot/diff", "pending", "rendering manifests")
    forge.set_status(PATH, HEAD, "gitops-bot/diff", "pending", "rendering manifests")
    forge.set_status(PATH, HEAD, "gitops-bot/diff", "success", "no changes")
    assert [s["status"] for s in fake.statuses(PATH, HEAD)] == ["pending", "success"]
    fake.fail("POST", r"/statuses/", Reply(400, {"message": "400 Bad request - sha is invalid"}))
    with pytest.raises(gitlab.GitlabCreateError):  # other refusals still surface
        forge.set_status(PATH, HEAD, "gitops-bot/diff", "success", "no changes")


@pytest.mark.parametrize("reaction, emoji", [
    ("+1", "thumbsup"), ("-1", "thumbsdown"), ("eyes", "eyes"), ("rocket", "rocket"), ("confused", "confused"),
])
def test_reactions_are_award_emoji_on_the_note(forge, fake, reaction, emoji):
    note = fake.add_note(PATH, 7, "/deploy", author="carol")
    forge.react(PATH, 7, note["id"], reaction)
    forge.react(PATH, 7, note["id"], reaction)  # already awarded: not an error
    assert [a["name"] for a in fake.award_emoji(note["id"])] == [emoji]


def test_reacting_to_a_missing_note_is_an_error(forge):
    with pytest.raises(gitlab.GitlabCreateError) as err:
        forge.react(PATH, 7, 999_999, "eyes")
    assert err.value.response_code == 404


@pytest.mark.parametrize("project_level, group, group_level, expected", [
    (GUEST, None, 0, "read"), (PLANNER, None, 0, "read"), (REPORTER, None, 0, "triage"),
    (DEVELOPER, None, 0, "write"), (MAINTAINER, None, 0, "maintain"), (OWNER, None, 0, "admin"),
    (0, "group", MAINTAINER, "maintain"),  # inherited from the top group
    (0, "group/sub", DEVELOPER, "write"),  # inherited from the subgroup
    (REPORTER, "group", OWNER, "admin"),  # the highest level counts
    (0, "group/subzero", OWNER, "none"),  # not an ancestor
    (0, None, 0, "none"),
])
def test_permission_levels(forge, fake, project_level, group, group_level, expected):
    fake.add_user("dana")
    if project_level:
        fake.set_access(PATH, "dana", project_level)
    if group:
        fake.set_group_access(group, "dana", group_level)
    assert forge.permission(PATH, "dana") == expected


def test_an_unknown_user_has_no_permission(forge):
    assert forge.permission(PATH, "nobody-here") == "none"


def test_pull_state(forge, fake):
    assert forge.pull_state(PATH, 7) == PullState(HEAD, "main", "open", True, False, author="alice", fork=False)
    fake.set_access(PATH, "carol", DEVELOPER)
    fake.add_approval(PATH, 7, "carol")
    assert forge.pull_state(PATH, 7).approved
    fake.add_mr(PATH, 8, "two-approvals", "production", "c" * 40, approvals_required=2)
    fake.add_approval(PATH, 8, "carol")
    state = forge.pull_state(PATH, 8)
    assert not state.approved and state.approval_note == "GitLab's approval rules want 1 more"
    assert fake.calls("GET", r"/merge_requests/8/versions$")


def test_pull_state_names_the_author_and_a_fork(forge, fake):
    fake.add_mr(PATH, 9, "from-a-fork", "main", "d" * 40, author="mallory", source_project_id=999)
    state = forge.pull_state(PATH, 9)
    assert (state.author, state.fork) == ("mallory", True)
    assert forge.pull_state(PATH, 7).fork is False


EARLIER = "2020-01-01T00:00:00.000Z"


@pytest.mark.parametrize("approvals, approved, note", [
    ([("carol", None)], True, ""),
    ([("carol", EARLIER)], False, "@carol approved an older head"),
    ([("rita", None)], False, "@rita has triage permission, below write"),  # a reporter
    ([("gus", None)], False, "@gus has read permission, below write"),  # a guest
    ([("nobody", None)], False, "@nobody has none permission, below write"),
    ([("gus", None), ("carol", EARLIER), ("mia", None)], True, ""),  # a maintainer's counts
])
def test_only_approvals_of_the_current_head_by_developers_count(forge, fake, approvals, approved, note):
    for user, level in (("carol", DEVELOPER), ("mia", MAINTAINER), ("rita", REPORTER), ("gus", GUEST)):
        fake.set_access(PATH, user, level)
    for user, at in approvals:
        fake.add_approval(PATH, 7, user, approved_at=at)
    state = forge.pull_state(PATH, 7)
    assert (state.approved, state.approval_note) == (approved, note)


def test_an_approval_before_the_newest_push_does_not_count(forge, fake):
    fake.set_access(PATH, "carol", DEVELOPER)
    fake.add_approval(PATH, 7, "carol")
    assert forge.pull_state(PATH, 7).approved
    time.sleep(0.002)  # GitLab's timestamps are to the millisecond
    fake.set_head(PATH, 7, "c" * 40)
    state = forge.pull_state(PATH, 7)
    assert (state.head_sha, state.approved, state.approval_note) == ("c" * 40, False, "@carol approved an older head")


def test_an_approval_whose_time_gitlab_does_not_give_does_not_count(forge, fake):
    fake.approval_times = False  # GitLab before 18.4
    fake.set_access(PATH, "carol", DEVELOPER)
    fake.add_approval(PATH, 7, "carol")
    state = forge.pull_state(PATH, 7)
    assert (state.approved, state.approval_note) == (False, "the forge does not say when @carol approved")


def test_a_note_is_read_by_id_with_whether_its_author_is_a_bot(forge, fake):
    fake.add_user("project_7_bot_1234", bot=True)
    human = fake.add_note(PATH, 7, "/deploy", author="alice")
    bot = fake.add_note(PATH, 7, "/deploy", author="project_7_bot_1234")
    system = fake.add_note(PATH, 7, "/deploy", author="alice", system=True)
    fake.add_mr(PATH, 8, "other", "main", "c" * 40)
    elsewhere = fake.add_note(PATH, 8, "/deploy", author="alice")
    comment = forge.comment(PATH, 7, human["id"])
    assert comment is not None and (comment.id, comment.body, comment.author, comment.author_is_bot) == (
        human["id"], "/deploy", "alice", False)
    assert abs(comment.created_at - time.time()) < 60
    assert forge.comment(PATH, 7, bot["id"]).author_is_bot
    assert forge.comment(PATH, 7, system["id"]) is None  # GitLab's own record, not anyone's comment
    assert forge.comment(PATH, 7, elsewhere["id"]) is None  # on another merge request
    assert forge.comment(PATH, 7, 999_999) is None
    assert fake.calls("GET", rf"/merge_requests/7/notes/{human['id']}$")
    assert fake.calls("GET", rf"/api/v4/users/{fake.users['project_7_bot_1234']['id']}$")


def test_the_default_branch_is_read_from_the_api_and_kept_briefly(forge, fake, monkeypatch):
    fake.projects[PATH]["default_branch"] = "trunk"
    clock = [1000.0]
    monkeypatch.setattr(forge._default_branches, "clock", lambda: clock[0])
    assert forge.default_branch(PATH) == forge.default_branch(PATH) == "trunk"
    project = r"/api/v4/projects/group%2Fsub%2Finfra$"
    assert len(fake.calls("GET", project)) == 1
    clock[0] += DEFAULT_BRANCH_TTL + 1
    fake.projects[PATH]["default_branch"] = "main"
    assert forge.default_branch(PATH) == "main" and len(fake.calls("GET", project)) == 2


@pytest.mark.parametrize("fields, state, mergeable", [
    ({"detailed_merge_status": "checking"}, "open", None),
    ({"detailed_merge_status": "unchecked"}, "open", None),
    ({"detailed_merge_status": "conflict"}, "open", False),
    ({"detailed_merge_status": "not_approved"}, "open", False),
    ({"state": "closed", "detailed_merge_status": "not_open"}, "closed", False),
    ({"state": "merged", "detailed_merge_status": "not_open"}, "merged", False),
])
def test_pull_state_mergeability(forge, fake, fields, state, mergeable):
    fake.mrs[(PATH, 7)].update(fields)
    pull = forge.pull_state(PATH, 7)
    assert (pull.state, pull.mergeable) == (state, mergeable)


def test_merge_at_the_expected_head(forge, fake):
    fake.on_merge = lambda path, iid: "f" * 40
    assert forge.merge(PATH, 7, HEAD, "Deploy !7") == "f" * 40
    (call,) = fake.calls("PUT", r"/merge$")
    assert fake._params(call) == {"sha": HEAD, "merge_commit_message": "Deploy !7"}
    assert fake.mrs[(PATH, 7)]["state"] == "merged"


def test_merge_refuses_a_moved_head(forge, fake):
    with pytest.raises(MergeRefused, match="GitLab answered 409"):
        forge.merge(PATH, 7, "1" * 40, "Deploy !7")
    assert fake.mrs[(PATH, 7)]["state"] == "opened"


def test_deployments(forge, fake):
    deployment_id = forge.create_deployment(PATH, "production", HEAD, "main", "deploying")
    (deployment,) = fake.deployments[PATH]
    assert str(deployment["id"]) == deployment_id
    assert (deployment["environment"]["name"], deployment["sha"], deployment["ref"], deployment["status"]) == (
        "production", HEAD, "main", "running")
    for state, expected in (("success", "success"), ("failure", "failed")):
        forge.update_deployment(PATH, "production", deployment_id, state, "done")
        assert fake.deployments[PATH][0]["status"] == expected


def test_a_transient_502_is_retried(forge, fake):
    fake.fail("POST", r"/notes$", BAD_GATEWAY, times=2)
    assert forge.create_comment(PATH, 7, "hello")
    assert len(fake.calls("POST", r"/notes$")) == 3
    assert [n["body"] for n in fake.notes(PATH, 7)] == ["hello"]


@pytest.mark.parametrize("reply", [BAD_GATEWAY, Reply(503, {"message": "503"}), None])  # None: dropped
def test_persistent_transient_errors_become_transient_forge_errors(forge, fake, no_backoff, reply):
    fake.fail("GET", r"/notes$", reply, times=100)
    with pytest.raises(TransientForgeError) as err:
        forge.list_comments(PATH, 7)
    assert TOKEN not in str(err.value) and err.value.__cause__ is None
    assert err.value.retry_after is None  # the job's own back-off
    assert len(fake.calls("GET", r"/notes$")) == 1 + MAX_RETRIES  # python-gitlab retried first


def in_an_http_date(seconds: float) -> str:
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


TOO_MANY = {"message": "429 Too Many Requests"}
WAITS = {  # what GitLab answers (made when the test runs: times are absolute), and the wait it asks for
    "429 Retry-After": (lambda: Reply(429, TOO_MANY, {"Retry-After": "12"}), 12),
    "429 HTTP-date": (lambda: Reply(429, TOO_MANY, {"Retry-After": in_an_http_date(40)}), 40),
    "429 RateLimit-Reset": (lambda: Reply(429, TOO_MANY, {
        "RateLimit-Remaining": "0", "RateLimit-Reset": str(int(time.time()) + 50)}), 50),
    "503 Retry-After": (lambda: Reply(503, {"message": "503 Service Unavailable"}, {"Retry-After": "30"}), 30),
    "429 alone": (lambda: Reply(429, TOO_MANY), None),
}


@pytest.mark.parametrize("fault", list(WAITS))
def test_a_wait_gitlab_asks_for_is_raised_at_once_never_slept(forge, fake, fault):
    answer, wait = WAITS[fault]
    reply = answer()
    fake.fail("POST", r"/deployments$", reply, times=100)
    started = time.monotonic()
    with pytest.raises(TransientForgeError) as err:
        forge.create_deployment(PATH, "production", HEAD, "main", "deploying")
    assert time.monotonic() - started < 2  # python-gitlab would sleep 12 s, or fail on the date
    assert len(fake.calls("POST", r"/deployments$")) == 1 and fake.deployments.get(PATH, []) == []
    assert str(err.value) == f"GitLab answered {reply.status} to create deployment" and err.value.forge == "gitlab"
    if wait is None:
        assert err.value.retry_after is None
    else:
        assert wait - 3 <= err.value.retry_after <= wait


def test_the_rate_limit_headroom_is_what_gitlab_last_said(forge, fake):
    assert forge.rate_limit_remaining() is None
    fake.fail("GET", r"/notes$", Reply(200, [], {"RateLimit-Remaining": "598", "RateLimit-Limit": "600"}))
    assert forge.list_comments(PATH, 7) == []
    assert forge.rate_limit_remaining() == 598


def test_an_unreachable_server_is_transient(no_backoff):
    with FakeGitLab() as stopped:
        url = stopped.url
    with pytest.raises(TransientForgeError) as err:
        GitLabForge(url, TOKEN).set_status(PATH, HEAD, "gitops-bot/diff", "pending", "x")
    assert "unreachable" in str(err.value) and TOKEN not in str(err.value)


def test_a_wrong_token_is_not_transient_and_not_echoed(fake):
    with pytest.raises(gitlab.GitlabAuthenticationError) as err:
        GitLabForge(fake.url, "glpat-wrong").create_comment(PATH, 7, "x")
    assert "glpat-wrong" not in str(err.value)


def test_a_token_is_required():
    with pytest.raises(ValueError, match="GITLAB_TOKEN"):
        GitLabForge("https://gitlab.com", None)


def test_open_merge_requests_and_statuses_for_reconcile(forge, fake):
    repo = Repo("gitlab", PATH, "https://gitlab.example/group/sub/infra.git", "main")
    fake.add_mr(PATH, 8, "other", "main", "c" * 40)
    fake.mrs[(PATH, 8)]["state"] = "merged"
    (pull,) = forge.open_pulls(repo)
    assert (pull.number, pull.head_sha, pull.base_ref, pull.head_ref, pull.base_sha) == (7, HEAD, "main", "feature", "")
    assert not forge.has_status(PATH, HEAD, "gitops-bot/diff")
    forge.set_status(PATH, HEAD, "gitops-bot/diff", "pending", "rendering")
    assert forge.has_status(PATH, HEAD, "gitops-bot/diff")
    assert not forge.has_status(PATH, HEAD, "other-bot/diff")
