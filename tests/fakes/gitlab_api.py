"""An in-process stand-in for the GitLab REST API v4, good enough for the real python-gitlab client.

State lives in plain dicts guarded by `self.lock`; tests seed it with `add_*`/`set_*` helpers and
inspect it with `notes()`, `statuses()`, `award_emoji()` and `posted_texts()`. Response bodies,
status codes, error messages and pagination headers follow GitLab's documented shapes.

GitLab behaviours kept on purpose:
- every push to a merge request's source branch is a new diff version (`/versions`), newest first;
  `set_head` records one, and a head changed behind the stand-in's back is recorded when next read;
- approvals are not reset by a push; each `approved_by` entry carries `approved_at` (GitLab 18.4 and
  later; `approval_times = False` answers as older servers do, without it);
- `GET /users/:id` is the full public profile, with `bot`; user objects inside other answers are
  the basic ones, without it.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import math
import traceback
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlencode

from tests.fakes.http import Recorded, Reply, RecordingServer

GUEST, PLANNER, REPORTER, DEVELOPER, MAINTAINER, OWNER = 10, 15, 20, 30, 40, 50

_P = r"/api/v4/projects/(?P<pid>[^/]+)"
_MR = _P + r"/merge_requests/(?P<iid>\d+)"
_STATUS_STATES = {"pending", "running", "success", "failed", "canceled"}
# GitLab's state-machine event names, used in its "Cannot transition" error text.
_STATUS_EVENTS = {"pending": "enqueue", "running": "run"}


class _Abort(Exception):
    """Raised inside a handler to answer with an error reply."""

    def __init__(self, status: int, message: Any, key: str = "message") -> None:
        super().__init__(message)
        self.reply = Reply(status, {key: message})


def _found(item: Any, what: str) -> Any:
    if item is None:
        raise _Abort(404, f"404 {what} Not Found")
    return item


def _require(params: dict, *fields: str) -> None:
    missing = [f for f in fields if not params.get(f) and params.get(f) is not False]
    if missing:
        raise _Abort(400, f"{missing[0]} is missing", key="error")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _truthy(value: Any) -> bool:
    return str(value).lower() in ("true", "1", "t", "yes", "on")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


class FakeGitLab(RecordingServer):
    """GitLab API v4 fake. Every request must carry `PRIVATE-TOKEN` or `Authorization: Bearer`."""

    def __init__(self, bot_username: str = "gitops-bot", token: str | None = None,
                 web_base: str | None = None) -> None:
        super().__init__()
        self.token = token  # None accepts any token; a value demands that exact one
        # web_url fields default to this server's own URL: python-gitlab warns when they differ.
        self._web_base = web_base.rstrip("/") if web_base else None
        self.bot_username = bot_username
        self.on_merge: Callable[[str, int], str] | None = None
        self.projects: dict[str, dict] = {}
        self.users: dict[str, dict] = {}
        self.mrs: dict[tuple[str, int], dict] = {}
        self.project_access: dict[tuple[str, str], int] = {}
        self.group_access: dict[tuple[str, str], int] = {}
        self.environments: dict[str, list[dict]] = {}
        self.deployments: dict[str, list[dict]] = {}
        self._notes: dict[tuple[str, int], list[dict]] = {}
        self._statuses: dict[tuple[str, str], list[dict]] = {}
        self._emoji: dict[tuple[str, int], list[dict]] = {}  # (awardable_type, awardable_id)
        self._approvals: dict[tuple[str, int], list[tuple[str, str]]] = {}  # (username, approved_at)
        self._versions: dict[tuple[str, int], list[dict]] = {}
        self.approval_times = True
        """Whether approvals say when they were given, as GitLab 18.4 and later do."""
        self._ids = itertools.count(1)
        self.errors: list[str] = []  # tracebacks of handler crashes
        self.add_user(bot_username)
        self._register_routes()

    def _register_routes(self) -> None:
        on, mr, note = self._on, _MR, _MR + r"/notes/(?P<note_id>\d+)"
        on("GET", r"/api/v4/user", lambda request: self._user(self.bot_username))
        on("GET", r"/api/v4/users", self._list_users)
        on("GET", r"/api/v4/users/(?P<uid>\d+)", lambda request, uid: self._profile(uid))
        on("GET", _P, lambda request, path: self.projects[path])
        on("GET", _P + r"/members/all", self._list_members)
        on("GET", _P + r"/members/all/(?P<uid>\d+)", self._get_member)
        on("GET", _P + r"/merge_requests", self._list_mrs)
        on("GET", mr, lambda request, path, iid: self._mr(path, iid))
        on("PUT", mr + r"/merge", self._merge)
        on("GET", mr + r"/approvals", self._get_approvals)
        on("GET", mr + r"/versions", self._list_versions)
        on("GET", mr + r"/notes", self._list_notes)
        on("POST", mr + r"/notes", self._create_note)
        on("GET", note, lambda request, path, iid, note_id: self._note(path, iid, note_id))
        on("PUT", note, self._update_note)
        on("DELETE", note, self._delete_note)
        for awardable in (mr, note):
            on("GET", awardable + r"/award_emoji", self._list_emoji)
            on("POST", awardable + r"/award_emoji", self._create_emoji)
        on("POST", _P + r"/statuses/(?P<sha>[0-9a-fA-F]+)", self._create_status)
        on("GET", _P + r"/repository/commits/(?P<sha>[0-9a-fA-F]+)/statuses", self._list_statuses)
        on("GET", _P + r"/environments", self._list_environments)
        on("POST", _P + r"/environments", self._create_environment)
        on("GET", _P + r"/deployments", self._list_deployments)
        on("POST", _P + r"/deployments", self._create_deployment)
        on("GET", _P + r"/deployments/(?P<dep_id>\d+)",
           lambda request, path, dep_id: self._deployment(path, dep_id))
        on("PUT", _P + r"/deployments/(?P<dep_id>\d+)", self._update_deployment)

    def _on(self, method: str, pattern: str, handler: Callable[..., Reply | dict]) -> None:
        """Route with the project id resolved to its `path` and numeric ids made ints;
        a handler returning a plain dict answers 200 with it."""
        def call(request: Recorded, pid: str | None = None, **ids: str) -> Reply:
            args: dict[str, Any] = {k: v if k == "sha" else int(v) for k, v in ids.items()}
            if pid is not None:
                args["path"] = self._project(pid)["path_with_namespace"]
            result = handler(request, **args)
            return result if isinstance(result, Reply) else Reply(200, result)
        self.route(method, pattern, call)

    # -- seeding and inspection for tests ------------------------------------------------------
    def add_user(self, username: str, bot: bool = False) -> int:
        """A user; `bot` makes it a bot user, as project and group access tokens and service accounts are."""
        with self.lock:
            if username not in self.users:
                uid = next(self._ids)
                self.users[username] = {
                    "id": uid, "username": username, "name": username.replace("-", " ").title(),
                    "state": "active", "locked": False, "bot": bot or username == self.bot_username,
                    "avatar_url": None, "created_at": _now()}
            return self.users[username]["id"]

    def add_project(self, path_with_namespace: str, default_branch: str = "main",
                    http_url_to_repo: str | None = None) -> dict:
        """Needs the server started (or `web_base` given): web URLs are fixed at creation."""
        namespace, _, path = path_with_namespace.rpartition("/")
        with self.lock:
            project = {
                "id": next(self._ids), "path": path, "name": path,
                "path_with_namespace": path_with_namespace,
                "name_with_namespace": path_with_namespace.replace("/", " / "),
                "namespace": {"id": next(self._ids), "name": namespace.rpartition("/")[2],
                              "path": namespace.rpartition("/")[2], "kind": "group",
                              "full_path": namespace, "web_url": f"{self.web_base}/groups/{namespace}"},
                "default_branch": default_branch,
                "web_url": f"{self.web_base}/{path_with_namespace}",
                "http_url_to_repo": http_url_to_repo or f"{self.web_base}/{path_with_namespace}.git",
                "visibility": "private", "archived": False, "created_at": _now()}
            self.projects[path_with_namespace] = project
            return project

    def add_mr(self, path: str, iid: int, source_branch: str, target_branch: str, sha: str,
               author: str = "alice", source_project_id: int | None = None,
               merge_status: str = "can_be_merged", detailed_merge_status: str = "mergeable",
               draft: bool = False, base_sha: str | None = None, approvals_required: int = 0,
               **extra: Any) -> dict:
        """Seed an open MR. `source_project_id` set to another project's id marks a fork;
        `extra` overrides any field (title, description, labels, ...). Returns the live dict."""
        with self.lock:
            project = self.projects[path]
            if draft and detailed_merge_status == "mergeable":
                detailed_merge_status = "draft_status"
            base = base_sha or "0" * 40
            mr = {
                "id": next(self._ids), "iid": iid, "project_id": project["id"],
                "title": f"{'Draft: ' if draft else ''}{source_branch}", "description": "",
                "state": "opened", "source_branch": source_branch, "target_branch": target_branch,
                "source_project_id": source_project_id or project["id"],
                "target_project_id": project["id"], "author": self._user(author), "sha": sha,
                "merge_status": merge_status, "detailed_merge_status": detailed_merge_status,
                "draft": draft, "work_in_progress": draft, "has_conflicts": False, "labels": [],
                "diff_refs": {"base_sha": base, "head_sha": sha, "start_sha": base},
                "merge_commit_sha": None, "merged_at": None, "merged_by": None, "merge_user": None,
                "approvals_before_merge": None, "approvals_required": approvals_required,
                "web_url": f"{project['web_url']}/-/merge_requests/{iid}",
                "created_at": _now(), "updated_at": _now(), **extra}
            self.mrs[(path, iid)] = mr
            self._notes.setdefault((path, iid), [])
            self._approvals.setdefault((path, iid), [])
            self._versions[(path, iid)] = []
            self._record_version(path, iid)
            return mr

    def set_head(self, path: str, iid: int, sha: str) -> None:
        """A push to the merge request's source branch: its new head, and a new diff version."""
        with self.lock:
            mr = self.mrs[(path, iid)]
            mr.update(sha=sha, updated_at=_now())
            mr["diff_refs"]["head_sha"] = sha
            self._record_version(path, iid)

    def add_note(self, path: str, iid: int, body: str, author: str = "alice",
                 system: bool = False, created_at: str | None = None) -> dict:
        with self.lock:
            mr, now = self.mrs[(path, iid)], created_at or _now()
            note = {"id": next(self._ids), "type": None, "body": body, "attachment": None,
                    "author": self._user(author), "created_at": now, "updated_at": now,
                    "system": system, "noteable_id": mr["id"], "noteable_type": "MergeRequest",
                    "noteable_iid": iid, "project_id": mr["project_id"], "resolvable": False,
                    "confidential": False, "internal": False}
            self._notes[(path, iid)].append(note)
            return note

    def add_approval(self, path: str, iid: int, username: str, approved_at: str | None = None) -> None:
        with self.lock:
            self.add_user(username)
            self._approvals[(path, iid)].append((username, approved_at or _now()))

    def set_access(self, path: str, username: str, level: int) -> None:
        with self.lock:
            self.add_user(username)
            self.project_access[(path, username)] = level

    def set_group_access(self, group_full_path: str, username: str, level: int) -> None:
        with self.lock:
            self.add_user(username)
            self.group_access[(group_full_path, username)] = level

    def notes(self, path: str, iid: int) -> list[dict]:
        with self.lock:
            return [dict(n) for n in self._notes[(path, iid)]]

    def statuses(self, path: str, sha: str) -> list[dict]:
        with self.lock:
            return [dict(s) for s in self._statuses.get((path, sha), [])]

    def award_emoji(self, note_id: int) -> list[dict]:
        with self.lock:
            return [dict(a) for a in self._emoji.get(("Note", note_id), [])]

    def posted_texts(self) -> list[str]:
        """Every string the client sent in POST/PUT/PATCH bodies or their query strings."""
        with self.lock:
            sent = [r for r in self.requests if r.method in ("POST", "PUT", "PATCH")]
        return [s for r in sent for s in _strings(self._body(r)) + _strings(r.query)]

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def web_base(self) -> str:
        return self._web_base or self.url

    def dispatch(self, request: Recorded) -> Reply | None:
        bearer = request.headers.get("authorization", "")
        token = request.headers.get("private-token") or (
            bearer[7:] if bearer.lower().startswith("bearer ") else None)
        if not token or (self.token is not None and token != self.token):
            with self.lock:
                self.requests.append(request)
            return Reply(401, {"message": "401 Unauthorized"})
        with self.lock:
            try:
                reply = super().dispatch(request)
            except _Abort as abort:
                return abort.reply
            except Exception:
                # A bug in the fake: keep it for the test to see, and let the client give up fast.
                self.errors.append(traceback.format_exc())
                return Reply(500, {"message": "500 Internal Server Error"}, {"Retry-After": "0"})
            # The base class answers unrouted paths with its own body; GitLab says "404 Not Found".
            if reply is not None and reply.status == 404 and reply.body == {"message": "Not Found"}:
                return Reply(404, {"message": "404 Not Found"})
            if reply is not None:  # serialised after the lock is released, so hand out a snapshot
                reply.body = copy.deepcopy(reply.body)
            return reply

    @staticmethod
    def _body(request: Recorded) -> dict:
        if not request.body:
            return {}
        if "json" in request.headers.get("content-type", ""):
            return request.json or {}
        return {k: v[-1] for k, v in parse_qs(request.body.decode(), keep_blank_values=True).items()}

    def _params(self, request: Recorded) -> dict:
        return {**{k: v[-1] for k, v in request.query.items()}, **self._body(request)}

    def _paginate(self, request: Recorded, items: list) -> Reply:
        query = request.query
        per_page = max(1, min(int(query.get("per_page", ["20"])[0]), 100))
        page = max(1, int(query.get("page", ["1"])[0]))
        total_pages = max(1, math.ceil(len(items) / per_page))

        def link(number: int, rel: str) -> str:
            q = urlencode({**query, "page": [number], "per_page": [per_page]}, doseq=True)
            return f'<{self.url}{request.path}?{q}>; rel="{rel}"'

        links = ([link(page - 1, "prev")] if page > 1 else []) + (
            [link(page + 1, "next")] if page < total_pages else []) + [
            link(1, "first"), link(total_pages, "last")]
        headers = {"X-Page": str(page), "X-Per-Page": str(per_page), "X-Total": str(len(items)),
                   "X-Total-Pages": str(total_pages),
                   "X-Next-Page": str(page + 1) if page < total_pages else "",
                   "X-Prev-Page": str(page - 1) if page > 1 else "", "Link": ", ".join(links)}
        return Reply(200, items[(page - 1) * per_page: page * per_page], headers)

    def _project(self, pid: str) -> dict:
        key = unquote(pid)
        return _found(self.projects.get(key) or next(
            (p for p in self.projects.values() if str(p["id"]) == key), None), "Project")

    def _user(self, username: str) -> dict:
        self.add_user(username)
        u = self.users[username]
        return {**{k: u[k] for k in ("id", "username", "name", "state", "locked", "avatar_url")},
                "web_url": f"{self.web_base}/{username}"}

    def _user_by_id(self, uid: int) -> dict:
        return self._user(_found(next((u for u, v in self.users.items() if v["id"] == uid), None), "User"))

    def _profile(self, uid: int) -> dict:
        """`GET /users/:id` as a user who is not an administrator sees it."""
        user = self._user_by_id(uid)
        stored = self.users[user["username"]]
        return {**user, "created_at": stored["created_at"], "bio": "", "location": "", "public_email": None,
                "linkedin": "", "twitter": "", "discord": "", "website_url": "", "organization": "",
                "job_title": "", "pronouns": None, "bot": stored["bot"], "work_information": None,
                "followers": 0, "following": 0, "is_followed": False, "local_time": None}

    def _record_version(self, path: str, iid: int) -> None:
        mr = self.mrs[(path, iid)]
        self._versions[(path, iid)].append({
            "id": next(self._ids), "head_commit_sha": mr["sha"], "base_commit_sha": mr["diff_refs"]["base_sha"],
            "start_commit_sha": mr["diff_refs"]["start_sha"], "created_at": _now(), "merge_request_id": mr["id"],
            "state": "collected", "real_size": "1", "patch_id_sha": hashlib.sha1(mr["sha"].encode()).hexdigest()})

    def _mr(self, path: str, iid: int) -> dict:
        return _found(self.mrs.get((path, iid)), "Merge Request")

    def _note(self, path: str, iid: int, note_id: int) -> dict:
        self._mr(path, iid)
        return _found(next((n for n in self._notes[(path, iid)] if n["id"] == note_id), None), "Note")

    def _deployment(self, path: str, dep_id: int) -> dict:
        return _found(next((d for d in self.deployments.get(path, []) if d["id"] == dep_id), None),
                      "Deployment")

    def _effective_level(self, path: str, username: str) -> int:
        parts = path.split("/")
        groups = ["/".join(parts[:n]) for n in range(1, len(parts))]
        return max([self.project_access.get((path, username), 0)]
                   + [self.group_access.get((g, username), 0) for g in groups])

    def _member(self, path: str, username: str) -> dict | None:
        level = self._effective_level(path, username)
        return {**self._user(username), "access_level": level, "expires_at": None,
                "created_at": self.projects[path]["created_at"]} if level else None

    # -- handlers ------------------------------------------------------------------------------
    def _list_users(self, request: Recorded) -> Reply:
        wanted = request.query.get("username", [None])[0]
        users = [self._user(u) for u in self.users if wanted is None or u.lower() == wanted.lower()]
        return self._paginate(request, users)

    def _get_member(self, request: Recorded, path: str, uid: int) -> dict:
        return _found(self._member(path, self._user_by_id(uid)["username"]), "Member")

    def _list_members(self, request: Recorded, path: str) -> Reply:
        return self._paginate(request, [m for u in self.users if (m := self._member(path, u))])

    def _list_mrs(self, request: Recorded, path: str) -> Reply:
        q = self._params(request)
        mrs = [mr for (p, _), mr in self.mrs.items() if p == path
               and q.get("state", "all") in ("all", mr["state"])
               and all(q[f] == mr[f] for f in ("source_branch", "target_branch") if f in q)]
        mrs.sort(key=lambda mr: mr["id"], reverse=q.get("sort", "desc") == "desc")
        return self._paginate(request, mrs)

    def _merge(self, request: Recorded, path: str, iid: int) -> dict:
        mr, wanted_sha = self._mr(path, iid), self._params(request).get("sha")
        if mr["state"] != "opened" or mr["detailed_merge_status"] != "mergeable":
            raise _Abort(405, "405 Method Not Allowed")
        if wanted_sha and wanted_sha != mr["sha"]:
            raise _Abort(409, "SHA does not match HEAD of source branch: " + mr["sha"])
        sha = self.on_merge(path, iid) if self.on_merge else hashlib.sha1(
            f"merge {path}!{iid} {mr['sha']}".encode()).hexdigest()
        bot = self._user(self.bot_username)
        mr.update(state="merged", merge_commit_sha=sha, merged_at=_now(), updated_at=_now(),
                  merged_by=bot, merge_user=bot, detailed_merge_status="not_open",
                  merge_status="merged")
        return mr

    def _get_approvals(self, request: Recorded, path: str, iid: int) -> dict:
        mr, approvals = self._mr(path, iid), self._approvals[(path, iid)]
        left = max(0, mr["approvals_required"] - len(approvals))
        return {**{k: mr[k] for k in ("id", "iid", "project_id", "title", "state", "merge_status",
                                      "approvals_required")},
                "approved": left == 0, "approvals_left": left,
                "approved_by": [{"user": self._user(u), **({"approved_at": at} if self.approval_times else {})}
                                for u, at in approvals],
                "user_has_approved": any(u == self.bot_username for u, _ in approvals), "user_can_approve": False}

    def _list_versions(self, request: Recorded, path: str, iid: int) -> Reply:
        mr, versions = self._mr(path, iid), self._versions[(path, iid)]
        if versions[-1]["head_commit_sha"] != mr["sha"]:  # a test moved the head without `set_head`
            self._record_version(path, iid)
        return self._paginate(request, versions[::-1])

    def _list_notes(self, request: Recorded, path: str, iid: int) -> Reply:
        self._mr(path, iid)
        q, notes = self._params(request), list(self._notes[(path, iid)])
        # GitLab's default order for MR notes is newest first.
        order = "updated_at" if q.get("order_by") == "updated_at" else "id"
        notes.sort(key=lambda n: (n[order], n["id"]), reverse=q.get("sort", "desc") == "desc")
        return self._paginate(request, notes)

    def _create_note(self, request: Recorded, path: str, iid: int) -> Reply:
        self._mr(path, iid)
        q = self._params(request)
        _require(q, "body")
        return Reply(201, self.add_note(path, iid, q["body"], author=self.bot_username))

    def _own_note(self, path: str, iid: int, note_id: int) -> dict:
        note = self._note(path, iid, note_id)
        if note["author"]["username"] != self.bot_username:
            raise _Abort(403, "403 Forbidden")
        return note

    def _update_note(self, request: Recorded, path: str, iid: int, note_id: int) -> dict:
        note, body = self._own_note(path, iid, note_id), self._params(request).get("body")
        if body:
            note.update(body=body, updated_at=_now())
        return note

    def _delete_note(self, request: Recorded, path: str, iid: int, note_id: int) -> Reply:
        self._notes[(path, iid)].remove(self._own_note(path, iid, note_id))
        return Reply(204)

    def _awardable(self, path: str, iid: int, note_id: int | None) -> tuple[str, int]:
        if note_id is None:
            return ("MergeRequest", self._mr(path, iid)["id"])
        return ("Note", self._note(path, iid, note_id)["id"])

    def _list_emoji(self, request: Recorded, path: str, iid: int, note_id: int | None = None) -> Reply:
        return self._paginate(request, self._emoji.get(self._awardable(path, iid, note_id), []))

    def _create_emoji(self, request: Recorded, path: str, iid: int, note_id: int | None = None) -> Reply:
        key, q = self._awardable(path, iid, note_id), self._params(request)
        _require(q, "name")
        name = q["name"]
        awards = self._emoji.setdefault(key, [])
        if any(a["name"] == name and a["user"]["username"] == self.bot_username for a in awards):
            raise _Abort(404, "404 Award Emoji Name has already been taken Not Found")
        award = {"id": next(self._ids), "name": name, "user": self._user(self.bot_username),
                 "created_at": _now(), "updated_at": _now(), "awardable_id": key[1],
                 "awardable_type": key[0]}
        awards.append(award)
        return Reply(201, award)

    def _create_status(self, request: Recorded, path: str, sha: str) -> Reply:
        q = self._params(request)
        state, name = q.get("state"), q.get("name") or q.get("context") or "default"
        if state not in _STATUS_STATES:
            raise _Abort(400, "state does not have a valid value", key="error")
        history = self._statuses.setdefault((path, sha), [])
        latest = next((s for s in reversed(history) if s["name"] == name), None)
        # GitLab refuses to re-post an unfinished state onto itself (a classic race in CI bots).
        if latest and latest["status"] == state and state in _STATUS_EVENTS:
            event = _STATUS_EVENTS[state]
            raise _Abort(400, f"Cannot transition status via :{event} from :{state} "
                              f'(Reason(s): Status cannot transition via "{event}")')
        status = {"id": next(self._ids), "sha": sha, "status": state, "name": name,
                  "ref": q.get("ref") or self.projects[path]["default_branch"],
                  "target_url": q.get("target_url"), "description": q.get("description"),
                  "coverage": q.get("coverage"), "created_at": _now(), "started_at": None,
                  "finished_at": None, "allow_failure": False, "author": self._user(self.bot_username)}
        history.append(status)
        return Reply(201, status)

    def _list_statuses(self, request: Recorded, path: str, sha: str) -> Reply:
        q, history = self._params(request), self._statuses.get((path, sha), [])
        if not _truthy(q.get("all")):  # by default GitLab lists only the latest per name
            latest = {s["name"]: s for s in history}
            history = [s for s in history if latest[s["name"]] is s]
        return self._paginate(request, [s for s in history if q.get("name", s["name"]) == s["name"]])

    def _environment(self, path: str, name: str, external_url: str | None = None,
                     tier: str | None = None) -> dict:
        envs = self.environments.setdefault(path, [])
        env = next((e for e in envs if e["name"] == name), None)
        if env is None:
            env = {"id": next(self._ids), "name": name, "slug": name.lower().replace("/", "-"),
                   "external_url": external_url, "state": "available", "tier": tier or "other",
                   "created_at": _now(), "updated_at": _now()}
            envs.append(env)
        return env

    def _list_environments(self, request: Recorded, path: str) -> Reply:
        q = self._params(request)
        return self._paginate(request, [e for e in self.environments.get(path, [])
                                        if q.get("name", e["name"]) == e["name"]
                                        and q.get("search", "") in e["name"]])

    def _create_environment(self, request: Recorded, path: str) -> Reply:
        q = self._params(request)
        _require(q, "name")
        if any(e["name"] == q["name"] for e in self.environments.get(path, [])):
            raise _Abort(400, {"name": ["has already been taken"]})
        return Reply(201, self._environment(path, q["name"], q.get("external_url"), q.get("tier")))

    def _list_deployments(self, request: Recorded, path: str) -> Reply:
        q = self._params(request)
        deps = [d for d in self.deployments.get(path, [])
                if q.get("environment", d["environment"]["name"]) == d["environment"]["name"]
                and q.get("status", d["status"]) == d["status"]]
        deps.sort(key=lambda d: d["id"], reverse=q.get("sort") == "desc")
        return self._paginate(request, deps)

    def _create_deployment(self, request: Recorded, path: str) -> Reply:
        q = self._params(request)
        _require(q, "environment", "sha", "ref", "tag", "status")
        env, deps = self._environment(path, q["environment"]), self.deployments.setdefault(path, [])
        dep = {"id": next(self._ids), "iid": len(deps) + 1, "ref": q["ref"], "sha": q["sha"],
               "tag": _truthy(q["tag"]), "status": q["status"], "created_at": _now(),
               "updated_at": _now(), "user": self._user(self.bot_username), "deployable": None,
               "environment": {k: env[k] for k in ("id", "name", "external_url")}}
        deps.append(dep)
        return Reply(201, dep)

    def _update_deployment(self, request: Recorded, path: str, dep_id: int) -> dict:
        dep, q = self._deployment(path, dep_id), self._params(request)
        _require(q, "status")
        dep.update(status=q["status"], updated_at=_now())
        return dep
