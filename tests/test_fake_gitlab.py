"""Drive FakeGitLab with the real python-gitlab client, so the fake's shapes are proven, not assumed."""

from __future__ import annotations

import gitlab
import pytest
import requests

from tests.fakes.gitlab_api import DEVELOPER, MAINTAINER, REPORTER, FakeGitLab
from tests.fakes.http import Reply

PATH = "group/sub/infra"
HEAD, BASE = "a" * 40, "b" * 40


@pytest.fixture
def fake():
    with FakeGitLab() as server:
        server.add_project(PATH, http_url_to_repo="file:///tmp/infra.git")
        server.add_mr(PATH, 7, "feature", "main", HEAD, base_sha=BASE)
        yield server


@pytest.fixture
def gl(fake):
    return gitlab.Gitlab(url=fake.url, private_token="glpat-test", retry_transient_errors=True)


@pytest.fixture
def project(gl):
    return gl.projects.get(PATH, lazy=True)


def test_project_by_nested_path_and_by_id(gl, fake):
    project = gl.projects.get(PATH)
    assert project.path_with_namespace == PATH
    assert project.namespace["full_path"] == "group/sub"
    assert project.http_url_to_repo == "file:///tmp/infra.git"
    assert fake.calls("GET", r"/projects/group%2Fsub%2Finfra$")
    assert gl.projects.get(project.id).path_with_namespace == PATH


def test_current_user_and_user_lookup(gl, fake):
    gl.auth()
    assert gl.user.username == "gitops-bot"
    uid = fake.add_user("bob")
    assert [u.id for u in gl.users.list(username="bob")] == [uid]
    assert gl.users.list(username="nobody") == []


def test_auth_and_unknown_route():
    with FakeGitLab() as fake:
        anonymous = gitlab.Gitlab(url=fake.url)
        with pytest.raises(gitlab.GitlabAuthenticationError) as err:
            anonymous.projects.get(1)
        assert err.value.response_code == 401
        resp = requests.get(f"{fake.url}/api/v4/nope", headers={"Authorization": "Bearer x"})
        assert (resp.status_code, resp.json()) == (404, {"message": "404 Not Found"})


def test_merge_request_get_and_list(project, fake):
    fake.add_mr(PATH, 8, "fork-branch", "main", "c" * 40, source_project_id=999, draft=True)
    mr = project.mergerequests.get(7)
    assert (mr.source_branch, mr.sha, mr.state) == ("feature", HEAD, "opened")
    assert mr.diff_refs == {"base_sha": BASE, "head_sha": HEAD, "start_sha": BASE}
    assert mr.author["username"] == "alice"
    fork = project.mergerequests.get(8)
    assert fork.source_project_id == 999 and fork.draft
    assert fork.detailed_merge_status == "draft_status"
    assert sorted(m.iid for m in project.mergerequests.list(state="opened", get_all=True)) == [7, 8]
    with pytest.raises(gitlab.GitlabGetError) as err:
        project.mergerequests.get(404)
    assert err.value.response_code == 404


def test_notes_crud_and_pagination(project, fake):
    mr = project.mergerequests.get(7, lazy=True)
    human = fake.add_note(PATH, 7, "/deploy please", author="carol")
    for i in range(120):
        mr.notes.create({"body": f"note {i}"})
    listed = mr.notes.list(get_all=True)
    assert len(listed) == 121
    assert [n.id for n in listed] == sorted((n.id for n in listed), reverse=True)  # newest first
    assert len(fake.calls("GET", r"/notes$")) == 7  # 20 per page by default
    assert len(list(mr.notes.list(iterator=True, per_page=100))) == 121
    page = fake.calls("GET", r"/notes$")[-1]
    assert page.query["page"] == ["2"]

    note = mr.notes.get(listed[0].id)
    assert (note.body, note.author["username"], note.system) == ("note 119", "gitops-bot", False)
    note.body = "edited"
    note.save()
    assert fake.notes(PATH, 7)[-1]["body"] == "edited"
    note.delete()
    assert len(fake.notes(PATH, 7)) == 120

    with pytest.raises(gitlab.GitlabUpdateError) as err:  # a human's note is not ours to edit
        other = mr.notes.get(human["id"])
        other.body = "hijacked"
        other.save()
    assert err.value.response_code == 403


def test_pagination_headers_match_gitlab(fake):
    for i in range(5):
        fake.add_note(PATH, 7, f"n{i}")
    resp = requests.get(f"{fake.url}/api/v4/projects/{fake.projects[PATH]['id']}/merge_requests/7/notes",
                        params={"per_page": 2, "page": 2, "sort": "asc"},
                        headers={"PRIVATE-TOKEN": "t"})
    assert [n["body"] for n in resp.json()] == ["n2", "n3"]
    h = resp.headers
    assert (h["X-Page"], h["X-Per-Page"], h["X-Total"], h["X-Total-Pages"], h["X-Next-Page"],
            h["X-Prev-Page"]) == ("2", "2", "5", "3", "3", "1")
    assert set(resp.links) == {"prev", "next", "first", "last"}
    assert "page=3" in resp.links["next"]["url"] and "sort=asc" in resp.links["next"]["url"]


def test_commit_statuses(project, fake):
    commit = project.commits.get(HEAD, lazy=True)
    commit.statuses.create({"state": "pending", "name": "gitops/diff", "target_url": "https://ci/1"})
    commit.statuses.create({"state": "success", "name": "gitops/diff", "description": "3 changes"})
    commit.statuses.create({"state": "running", "context": "gitops/deploy"})
    latest = {s.name: s.status for s in commit.statuses.list(get_all=True)}
    assert latest == {"gitops/diff": "success", "gitops/deploy": "running"}
    assert len(commit.statuses.list(query_parameters={"all": True}, get_all=True)) == 3
    assert [s["status"] for s in fake.statuses(PATH, HEAD)] == ["pending", "success", "running"]
    with pytest.raises(gitlab.GitlabCreateError) as err:
        commit.statuses.create({"state": "running", "context": "gitops/deploy"})
    assert err.value.response_code == 400 and "Cannot transition" in err.value.error_message
    with pytest.raises(gitlab.GitlabCreateError):
        commit.statuses.create({"state": "bogus", "name": "x"})


def test_award_emoji_on_note_and_mr(project, fake):
    mr = project.mergerequests.get(7, lazy=True)
    note = fake.add_note(PATH, 7, "/deploy")
    award = mr.notes.get(note["id"], lazy=True).awardemojis.create({"name": "eyes"})
    assert (award.name, award.awardable_type, award.awardable_id) == ("eyes", "Note", note["id"])
    assert award.user["username"] == "gitops-bot"
    assert [a["name"] for a in fake.award_emoji(note["id"])] == ["eyes"]
    with pytest.raises(gitlab.GitlabCreateError) as err:
        mr.notes.get(note["id"], lazy=True).awardemojis.create({"name": "eyes"})
    assert err.value.response_code == 404
    mr.awardemojis.create({"name": "rocket"})
    assert [a.awardable_type for a in mr.awardemojis.list()] == ["MergeRequest"]


def test_member_access_including_groups(project, fake):
    dev = fake.add_user("dev")
    fake.set_access(PATH, "dev", DEVELOPER)
    fake.set_group_access("group", "dev", MAINTAINER)
    assert project.members_all.get(dev).access_level == MAINTAINER
    lead = fake.add_user("lead")
    fake.set_group_access("group/sub", "lead", REPORTER)
    assert project.members_all.get(lead).access_level == REPORTER
    fake.set_group_access("group/subzero", "lead", MAINTAINER)  # not an ancestor
    assert project.members_all.get(lead).access_level == REPORTER
    stranger = fake.add_user("stranger")
    with pytest.raises(gitlab.GitlabGetError) as err:
        project.members_all.get(stranger)
    assert err.value.response_code == 404
    assert {m.username for m in project.members_all.list(get_all=True)} == {"dev", "lead"}


def test_approvals(project, fake):
    fake.add_mr(PATH, 9, "needs-review", "main", "d" * 40, approvals_required=2)
    approvals = project.mergerequests.get(9, lazy=True).approvals.get()
    assert (approvals.approved, approvals.approvals_left, approvals.approved_by) == (False, 2, [])
    fake.add_approval(PATH, 9, "alice")
    fake.add_approval(PATH, 9, "bob")
    approvals = project.mergerequests.get(9, lazy=True).approvals.get()
    assert approvals.approved and approvals.approvals_left == 0
    assert [a["user"]["username"] for a in approvals.approved_by] == ["alice", "bob"]
    assert all(a["approved_at"].endswith("Z") for a in approvals.approved_by)
    fake.approval_times = False  # as GitLab before 18.4 answers
    approvals = project.mergerequests.get(9, lazy=True).approvals.get()
    assert [set(a) for a in approvals.approved_by] == [{"user"}, {"user"}]


def test_diff_versions_record_each_push_newest_first(project, fake):
    mr = project.mergerequests.get(7, lazy=True)
    (first,) = mr.diffs.list(get_all=True)
    assert (first.head_commit_sha, first.base_commit_sha, first.state) == (HEAD, BASE, "collected")
    fake.set_head(PATH, 7, "c" * 40)
    fake.mrs[(PATH, 7)]["sha"] = "d" * 40  # a push the stand-in is not told of: recorded when next read
    versions = mr.diffs.list(get_all=True)
    assert [v.head_commit_sha for v in versions] == ["d" * 40, "c" * 40, HEAD]
    assert versions[0].id > versions[1].id and versions[0].created_at >= versions[1].created_at
    assert project.mergerequests.get(7).sha == "d" * 40


def test_a_users_profile_says_whether_it_is_a_bot(gl, fake):
    human, bot = fake.add_user("alice"), fake.add_user("group_5_bot_0af3", bot=True)
    assert (gl.users.get(human).bot, gl.users.get(bot).bot) == (False, True)
    assert gl.users.get(bot).username == "group_5_bot_0af3"
    note = fake.add_note(PATH, 7, "hi", author="group_5_bot_0af3")
    assert "bot" not in note["author"]  # user objects inside other answers are the basic ones


def test_merge(project, fake):
    merged = []
    fake.on_merge = lambda path, iid: merged.append((path, iid)) or "f" * 40
    mr = project.mergerequests.get(7)
    mr.merge(sha=HEAD)
    assert (mr.state, mr.merge_commit_sha) == ("merged", "f" * 40)
    assert merged == [(PATH, 7)]
    assert fake.mrs[(PATH, 7)]["state"] == "merged"

    fake.add_mr(PATH, 10, "conflicted", "main", "e" * 40, detailed_merge_status="conflict")
    with pytest.raises(gitlab.GitlabMRClosedError) as err:
        project.mergerequests.get(10).merge()
    assert err.value.response_code == 405 and err.value.error_message == "405 Method Not Allowed"
    fake.add_mr(PATH, 11, "moved", "main", "1" * 40)
    with pytest.raises(gitlab.GitlabMRClosedError) as err:
        project.mergerequests.get(11).merge(sha="2" * 40)
    assert err.value.response_code == 409


def test_environments_and_deployments(project, fake):
    env = project.environments.create({"name": "production", "external_url": "https://prod"})
    assert (env.name, env.state) == ("production", "available")
    with pytest.raises(gitlab.GitlabCreateError):
        project.environments.create({"name": "production"})
    dep = project.deployments.create({"environment": "production", "sha": HEAD, "ref": "main",
                                      "tag": False, "status": "running"})
    assert (dep.status, dep.environment["name"], dep.sha) == ("running", "production", HEAD)
    dep.status = "success"
    dep.save()
    assert project.deployments.get(dep.id).status == "success"
    project.deployments.create({"environment": "staging", "sha": BASE, "ref": "main",
                                "tag": False, "status": "failed"})
    assert {e.name for e in project.environments.list(get_all=True)} == {"production", "staging"}
    assert [d.sha for d in project.deployments.list(environment="staging", get_all=True)] == [BASE]


def test_transient_502_is_retried(project, fake):
    fake.fail("GET", r"/merge_requests/7$", Reply(502, {"message": "502 Bad Gateway"}), times=1)
    assert project.mergerequests.get(7).iid == 7
    assert len(fake.calls("GET", r"/merge_requests/7$")) == 2

    fake.fail("POST", r"/notes$", Reply(502, {"message": "502 Bad Gateway"}), times=1)
    no_retry = gitlab.Gitlab(url=fake.url, private_token="glpat-test")
    with pytest.raises(gitlab.GitlabCreateError) as err:
        no_retry.projects.get(PATH, lazy=True).mergerequests.get(7, lazy=True).notes.create({"body": "x"})
    assert err.value.response_code == 502


def test_posted_texts_cover_json_and_form_bodies(project, fake):
    project.mergerequests.get(7, lazy=True).notes.create({"body": "diff for glpat-secret"})
    requests.post(f"{fake.url}/api/v4/projects/{fake.projects[PATH]['id']}/statuses/{HEAD}",
                  data={"state": "success", "description": "form-encoded"},
                  headers={"PRIVATE-TOKEN": "t"})
    texts = fake.posted_texts()
    assert "diff for glpat-secret" in texts and "form-encoded" in texts


def test_handler_crash_surfaces_fast(project, fake):
    fake.route("GET", r"/api/v4/boom", lambda request: 1 / 0)
    resp = requests.get(f"{fake.url}/api/v4/boom", headers={"PRIVATE-TOKEN": "t"})
    assert resp.status_code == 500 and resp.headers["Retry-After"] == "0"
    assert "ZeroDivisionError" in fake.errors[0]
