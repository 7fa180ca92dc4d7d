"""GitLab: webhook verification and parsing (pure), and the API adapter over python-gitlab."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from typing import Any, Callable, Mapping, TypeVar

import gitlab
import requests
from gitlab.exceptions import GitlabError
from gitlab.v4.objects import CurrentUserManager

from bot.events import CommentEvent, Event, PullRequest, PullRequestEvent, PushEvent, Repo, Unsupported
from bot.forges.base import (API_ERRORS, DEFAULT_BRANCH_TTL, Comment, DeployState, Delivery, MergeRefused, PullState,
                             Reaction, Review, ShortCache, StatusState, TransientForgeError, WebhookError, approval,
                             constant_time_equal, field, forge_clone_url, parse_json_object, retry_after)

FORGE = "gitlab"
COMMENT_LIMIT = 1_000_000
TIMEOUT = 30.0
"""Seconds per API request."""
MAX_RETRIES = 5
"""python-gitlab's own retries of a 5xx or a dropped connection, 0.1 s doubling (3 s in all). An answer
that asks for a wait (a 429, a Retry-After) is never retried in the worker: see `_WaitAsked`."""
T = TypeVar("T")

# Merge request actions the core tells apart: (the neutral name, the words for its reasons).
_MR_ACTIONS = {"open": ("opened", "opened"), "reopen": ("opened", "reopened"), "merge": ("merged", "merged"),
               "close": ("closed", "closed")}
_STATUS_STATES = {"pending": "pending", "success": "success", "failure": "failed", "error": "failed"}
_DEPLOY_STATES = {"in_progress": "running", "success": "success", "failure": "failed"}
_EMOJI = {"+1": "thumbsup", "-1": "thumbsdown", "eyes": "eyes", "rocket": "rocket", "confused": "confused"}
# GitLab access levels, highest first: 50 owner, 40 maintainer, 30 developer, 20 reporter, 15 planner, 10 guest.
_ACCESS = ((50, "admin"), (40, "maintain"), (30, "write"), (20, "triage"), (10, "read"))
_MR_STATES = {"opened": "open", "locked": "open", "merged": "merged"}
_STILL_CHECKING = {"unchecked", "checking", "preparing", "approvals_syncing", "cannot_be_merged_recheck"}


# -- webhooks (no I/O) ------------------------------------------------------------------------

def verify(headers: Mapping[str, str], token: str | None) -> None:
    """Check `X-Gitlab-Token` against the configured token, in constant time."""
    if not token:
        raise WebhookError(401, "GITLAB_WEBHOOK_TOKEN is not set, so no delivery can be verified")
    given = headers.get("x-gitlab-token")
    if not given:
        raise WebhookError(401, "missing X-Gitlab-Token")
    if not constant_time_equal(given, token):
        raise WebhookError(401, "X-Gitlab-Token is wrong")


def parse_webhook(headers: Mapping[str, str], body: bytes, token: str | None) -> Delivery:
    """Verify and parse one delivery. `headers` must have lower-case keys."""
    event_name = headers.get("x-gitlab-event")
    if not event_name:
        raise WebhookError(400, "missing X-Gitlab-Event header")
    verify(headers, token)
    # Older GitLab servers send no delivery id; a resend then carries the same body.
    delivery_id = (headers.get("x-gitlab-event-uuid") or headers.get("idempotency-key")
                   or "sha256:" + hashlib.sha256(body).hexdigest())
    return Delivery(FORGE, event_name, delivery_id, parse_event(event_name, parse_json_object(body)))


def parse_event(name: str, payload: dict[str, Any]) -> Event:
    parser = {"Merge Request Hook": _merge_request_event, "Note Hook": _note_event,
              "Push Hook": _push_event}.get(name)
    if parser is None:
        return Unsupported(f"event {name!r} is not one the bot acts on",
                           _repo(payload) if isinstance(payload.get("project"), dict) else None)
    return parser(payload)


def _first(payload: Mapping[str, Any], *paths: str) -> str:
    """The first of `paths` present; a 400 naming the first when none is."""
    for path in paths:
        if value := field(payload, path, optional=True):
            return value
    return field(payload, paths[0])


def _repo(payload: Mapping[str, Any]) -> Repo:
    return Repo(FORGE, field(payload, "project.path_with_namespace"),
                _first(payload, "project.git_http_url", "project.http_url"),
                field(payload, "project.default_branch", optional=True) or "main",
                field(payload, "project.web_url", optional=True) or "")


def _merge_request(payload: Mapping[str, Any], repo: Repo) -> PullRequest:
    def get(path: str, kind: type = str, optional: bool = False) -> Any:
        return field(payload, f"object_attributes.{path}", kind, optional=optional)

    return PullRequest(
        repo=repo, number=get("iid", int), title=get("title", optional=True) or "",
        author=field(payload, "user.username"), base_ref=get("target_branch"),
        # Merge request hooks name the target branch but rarely its commit: "" means the branch tip.
        base_sha=get("diff_refs.base_sha", optional=True) or "",
        head_ref=get("source_branch"), head_sha=get("last_commit.id"),
        head_clone_url=get("source.git_http_url", optional=True) or get("source.http_url", optional=True)
        or repo.clone_url,
        draft=bool(get("draft", bool, optional=True) or get("work_in_progress", bool, optional=True)),
        web_url=get("url", optional=True) or "")


def _merge_request_event(payload: dict[str, Any]) -> Event:
    action = field(payload, "object_attributes.action")
    pull = _merge_request(payload, _repo(payload))
    neutral, detail = _MR_ACTIONS.get(action) or (_update(payload) if action == "update" else ("other", action))
    merge_sha = field(payload, "object_attributes.merge_commit_sha", optional=True)
    return PullRequestEvent(neutral, pull, pull.author,  # type: ignore[arg-type]
                            merge_sha=merge_sha if neutral == "merged" else None, detail=detail)


def _update(payload: Mapping[str, Any]) -> tuple[str, str]:
    """An `update` changes what a merge request deploys only with new commits or a new target branch."""
    if field(payload, "object_attributes.oldrev", optional=True):
        return "updated", "update with new commits"
    changes = payload.get("changes")
    if isinstance(changes, dict) and isinstance(changes.get("target_branch"), dict):
        return "retargeted", "update of the target branch"
    return "other", "update (title, description or label edit)"


def _note_event(payload: dict[str, Any]) -> Event:
    on_merge_request = field(payload, "object_attributes.noteable_type") == "MergeRequest"
    number = (field(payload, "merge_request.iid", int) if on_merge_request
              else field(payload, "issue.iid", int, optional=True) or 0)
    edited = field(payload, "object_attributes.action", optional=True) == "update"
    return CommentEvent(
        repo=_repo(payload), number=number, comment_id=field(payload, "object_attributes.id", int),
        body=field(payload, "object_attributes.note", optional=True) or "",
        author=field(payload, "user.username"), action="edited" if edited else "created",
        on_pull_request=on_merge_request)


def _push_event(payload: dict[str, Any]) -> Event:
    pusher = field(payload, "user_username", optional=True) or field(payload, "user_name", optional=True) or ""
    return PushEvent(_repo(payload), field(payload, "ref"), field(payload, "before"),
                     field(payload, "after"), pusher)


# -- API adapter -------------------------------------------------------------------------------

class _Client(gitlab.Gitlab):
    """python-gitlab retries ten times by default (about 100 s); the job queue retries too."""

    def http_request(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("max_retries", MAX_RETRIES)
        return super().http_request(*args, **kwargs)


class _WaitAsked(TransientForgeError):
    """GitLab asked the client to wait: a rate limit (429), or a 5xx naming when to try again.

    python-gitlab would sleep that out in the worker (a 429's Retry-After, a 5xx's Retry-After or
    RateLimit-Reset), inside whatever lock the job holds, and it cannot read an HTTP-date Retry-After
    at all. Raised from the session's response hook, before python-gitlab sees the answer, it retries
    the job as late as GitLab said instead.
    """

    def __init__(self, status: int, retry_after: float | None):
        super().__init__(f"GitLab answered {status}", retry_after, FORGE)
        self.status = status


def _asks_to_wait(status: int, headers: Mapping[str, str]) -> bool:
    """A rate limit, or a 5xx whose headers name a wait other than none (`Retry-After: 0` is "now")."""
    if status == 429:
        return True
    named = headers.get("Retry-After", headers.get("RateLimit-Reset"))
    return status >= 500 and named is not None and named.strip() != "0"


class _Session(requests.Session):
    """The client's session: raises `_WaitAsked`, and keeps the rate-limit headroom GitLab last gave."""

    def __init__(self) -> None:
        super().__init__()
        self.remaining: int | None = None
        self.hooks["response"].append(self._seen)

    def _seen(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        headers = response.headers  # case-insensitive
        if (remaining := headers.get("RateLimit-Remaining", "")).isdigit():
            self.remaining = int(remaining)
        if _asks_to_wait(response.status_code, headers):
            response.close()
            raise _WaitAsked(response.status_code, retry_after(headers, time.time()))


def _call(what: str, fn: Callable[[], T]) -> T:
    """Run one API call; 5xx, 429 and connection errors become retryable, and no token reaches the message.
    Every error is counted, whatever its status."""
    try:
        return fn()
    except _WaitAsked as err:
        API_ERRORS.add(FORGE, "transient", err.status)
        raise TransientForgeError(f"{err} to {what}", err.retry_after, FORGE) from None
    except GitlabError as err:
        if err.response_code is not None and (err.response_code >= 500 or err.response_code == 429):
            API_ERRORS.add(FORGE, "transient", err.response_code)
            raise TransientForgeError(f"GitLab answered {err.response_code} to {what}", forge=FORGE) from None
        API_ERRORS.add(FORGE, "refused", err.response_code)
        raise
    except OSError as err:  # requests' connection, timeout and chunked-encoding errors are OSErrors
        API_ERRORS.add(FORGE, "transient", None)
        raise TransientForgeError(f"GitLab unreachable for {what}: {type(err).__name__}", forge=FORGE) from None


def _refused(err: GitlabError, words: str) -> bool:
    return words in str(err.error_message)


def _mergeable(mr: Any) -> bool | None:
    """None while GitLab is still checking; servers before 15.6 send only `merge_status`."""
    status = getattr(mr, "detailed_merge_status", None) or mr.merge_status
    return None if status in _STILL_CHECKING else status in ("mergeable", "can_be_merged")


def _access_name(level: int) -> str:
    return next((name for floor, name in _ACCESS if level >= floor), "none")


def _time(value: Any) -> float | None:
    """Unix time of one of GitLab's ISO 8601 timestamps; None when it gave none, or not one."""
    try:
        return datetime.fromisoformat(value).timestamp() if isinstance(value, str) else None
    except ValueError:
        return None


def _head_pushed_at(mr: Any) -> float | None:
    """When the merge request's current head was pushed: the time of its newest diff version, if that
    version is of the current head (else a push is under way, and the time is not known)."""
    versions = mr.diffs.list(get_all=True)
    newest = max(versions, key=lambda v: v.id, default=None)
    return _time(newest.created_at) if newest is not None and newest.head_commit_sha == mr.sha else None


def _after(approved_at: float | None, pushed_at: float | None) -> bool | None:
    """Whether an approval was given on the current head; None when either time is not known."""
    return None if approved_at is None or pushed_at is None else approved_at >= pushed_at


def commit_url(base_url: str, repo: str, sha: str) -> str:
    return f"{base_url.rstrip('/')}/{repo}/-/commit/{sha}"


class GitLabForge:
    """The GitLab API as the core needs it. Nothing else in the bot imports python-gitlab."""

    name = FORGE
    comment_limit = COMMENT_LIMIT

    def __init__(self, url: str, token: str | None):
        if not token:
            raise ValueError("GitLab needs GITLAB_TOKEN")
        self.url = self.web_url = url.rstrip("/")
        self._token = token
        self._session = _Session()
        self._gl = _Client(self.url, private_token=token, retry_transient_errors=True, timeout=TIMEOUT,
                           per_page=100, session=self._session)
        self._login: str | None = None
        self._default_branches: ShortCache[str, str] = ShortCache(DEFAULT_BRANCH_TTL)

    def clone_url(self, repo: Repo, *, allow_local: bool) -> str:
        return forge_clone_url(repo, self.web_url, allow_local, "oauth2", lambda: self._token)

    def pull_refspec(self, number: int) -> str:
        return f"refs/merge-requests/{number}/head"

    def bot_login(self) -> str:
        if self._login is None:
            self._login = _call("GET /user", lambda: CurrentUserManager(self._gl).get().username)
        return self._login

    def _project(self, repo: str) -> Any:
        return self._gl.projects.get(repo, lazy=True)  # by full path, so nested groups just work

    def default_branch(self, repo: str) -> str:
        return self._default_branches.get(repo.lower(), lambda: _call(
            "read project", lambda: self._gl.projects.get(repo).default_branch))

    def _mr(self, repo: str, number: int) -> Any:
        return self._project(repo).mergerequests.get(number, lazy=True)

    def comment(self, repo: str, number: int, comment_id: int) -> Comment | None:
        try:
            note = _call("read note", lambda: self._mr(repo, number).notes.get(comment_id))
        except GitlabError as err:
            if err.response_code == 404:
                return None
            raise
        if note.system:  # GitLab's own record of an event, in the name of whoever caused it
            return None
        author = note.author or {}
        return Comment(note.id, note.body or "", author.get("username", ""), self._is_bot(author.get("id")),
                       _time(note.created_at) or 0.0)

    def _is_bot(self, user_id: int | None) -> bool:
        """Whether a user is a bot (project, group and service-account tokens' users), as the users API says."""
        if user_id is None:
            return False
        try:
            user = _call("read user", lambda: self._gl.users.get(user_id))
        except GitlabError as err:
            if err.response_code == 404:  # no such user: nobody whose permission could grant anything
                return False
            raise
        return bool(getattr(user, "bot", False))

    def list_comments(self, repo: str, number: int) -> list[Comment]:
        return _call("list notes", lambda: [
            Comment(n.id, n.body or "", (n.author or {}).get("username", ""))
            for n in self._mr(repo, number).notes.list(sort="asc", iterator=True) if not n.system])

    def create_comment(self, repo: str, number: int, body: str) -> int:
        return _call("create note", lambda: self._mr(repo, number).notes.create({"body": body}).id)

    def edit_comment(self, repo: str, number: int, comment_id: int, body: str) -> None:
        _call("edit note", lambda: self._mr(repo, number).notes.update(comment_id, {"body": body}))

    def delete_comment(self, repo: str, number: int, comment_id: int) -> None:
        _call("delete note", lambda: self._mr(repo, number).notes.delete(comment_id))

    def set_status(self, repo: str, sha: str, context: str, state: StatusState,
                   description: str, url: str | None = None) -> None:
        data = {"state": _STATUS_STATES[state], "name": context, "description": description[:255]}
        if url:
            data["target_url"] = url
        try:
            _call("set status", lambda: self._project(repo).commits.get(sha, lazy=True).statuses.create(data))
        except GitlabError as err:
            # GitLab refuses to post "pending" onto "pending"; the status is already what we want.
            if not (err.response_code == 400 and _refused(err, "Cannot transition status")):
                raise

    def react(self, repo: str, number: int, comment_id: int, reaction: Reaction) -> None:
        note = self._mr(repo, number).notes.get(comment_id, lazy=True)
        try:
            _call("award emoji", lambda: note.awardemojis.create({"name": _EMOJI[reaction]}))
        except GitlabError as err:
            if not _refused(err, "has already been taken"):  # the bot awarded it before
                raise

    def permission(self, repo: str, user: str) -> str:
        users = _call("find user", lambda: self._gl.users.list(username=user, get_all=True))
        return self._level(repo, users[0].id) if users else "none"

    def _level(self, repo: str, user_id: int) -> str:
        try:
            # members/all includes access inherited from every ancestor group.
            member = _call("member", lambda: self._project(repo).members_all.get(user_id))
        except GitlabError as err:
            if err.response_code == 404:
                return "none"
            raise
        return _access_name(member.access_level)

    def pull_state(self, repo: str, number: int) -> PullState:
        def read() -> PullState:
            mr = self._project(repo).mergerequests.get(number)
            approvals = mr.approvals.get()
            pushed = _head_pushed_at(mr)
            approved, note = approval(
                Review(entry["user"]["username"], True, _after(_time(entry.get("approved_at")), pushed),
                       self._level(repo, entry["user"]["id"]))
                for entry in approvals.approved_by or [])
            if approved and approvals.approvals_left:  # the project's own approval rules want more
                approved, note = False, f"GitLab's approval rules want {approvals.approvals_left} more"
            state = _MR_STATES.get(mr.state, "closed")
            return PullState(mr.sha, mr.target_branch, state, _mergeable(mr), approved,  # type: ignore[arg-type]
                             note, (mr.author or {}).get("username", ""),
                             mr.source_project_id != mr.target_project_id)
        return _call("read merge request", read)

    def merge(self, repo: str, number: int, sha: str, message: str) -> str:
        try:
            merged = _call("merge", lambda: self._mr(repo, number).merge(merge_commit_message=message, sha=sha))
        except GitlabError as err:  # 405/406 not mergeable, 409 head moved, 401/403 rules
            raise MergeRefused(f"GitLab answered {err.response_code}: {err.error_message or 'refused'}") from None
        # A fast-forward merge makes no merge commit: the head itself lands on the target branch.
        return merged.get("merge_commit_sha") or merged["sha"]

    def rate_limit_remaining(self) -> int | None:
        return self._session.remaining

    def open_pulls(self, repo: Repo) -> list[PullRequest]:
        # The listing names no base commit: an empty base_sha makes the diff take the target's tip.
        return _call("list merge requests", lambda: [PullRequest(
            repo=repo, number=mr.iid, title=mr.title or "", author=(mr.author or {}).get("username", ""),
            base_ref=mr.target_branch, base_sha="", head_ref=mr.source_branch, head_sha=mr.sha,
            head_clone_url=repo.clone_url, draft=bool(getattr(mr, "draft", False)), web_url=mr.web_url or "")
            for mr in self._project(repo.full_name).mergerequests.list(state="opened", iterator=True)])

    def has_status(self, repo: str, sha: str, context: str) -> bool:
        return _call("list statuses", lambda: any(
            s.name == context for s in self._project(repo).commits.get(sha, lazy=True).statuses.list(
                iterator=True, all=True)))

    def create_deployment(self, repo: str, environment: str, sha: str, ref: str, description: str) -> str:
        # GitLab deployments carry no description; the environment and SHA say what it is.
        deployment = _call("create deployment", lambda: self._project(repo).deployments.create(
            {"environment": environment, "sha": sha, "ref": ref, "tag": False, "status": "running"}))
        return str(deployment.id)

    def update_deployment(self, repo: str, environment: str, deployment_id: str, state: DeployState,
                          description: str) -> None:
        _call("update deployment", lambda: self._project(repo).deployments.update(
            int(deployment_id), {"status": _DEPLOY_STATES[state]}))
