"""GitHub: webhook verification and parsing (pure), and the API adapter over PyGithub."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, TypeVar
from urllib.parse import parse_qs, urlsplit

import github
import requests
from github import Auth, Github, GithubException, GithubIntegration

from bot.events import CommentEvent, Event, Ping, PullRequest, PullRequestEvent, PushEvent, Repo, Unsupported
from bot.forges.base import (API_ERRORS, DEFAULT_BRANCH_TTL, Comment, DeployState, Delivery, MergeRefused, PullState,
                             Reaction, Review, ShortCache, StatusState, TransientForgeError, WebhookError, approval,
                             constant_time_equal, field, forge_clone_url, parse_json_object, retry_after)

FORGE = "github"
COMMENT_LIMIT = 65_536
T = TypeVar("T")

# Actions that change what a pull request would deploy, by the neutral name the core uses.
_PULL_ACTIONS = {"opened": "opened", "reopened": "opened", "synchronize": "updated",
                 "ready_for_review": "updated"}


# -- webhooks (no I/O) ------------------------------------------------------------------------

def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(headers: Mapping[str, str], body: bytes, secret: str | None) -> None:
    """Check `X-Hub-Signature-256` over the raw body, in constant time."""
    if not secret:
        raise WebhookError(401, "GITHUB_WEBHOOK_SECRET is not set, so no delivery can be verified")
    given = headers.get("x-hub-signature-256")
    if not given:
        raise WebhookError(401, "missing X-Hub-Signature-256")
    if not constant_time_equal(given, signature(secret, body)):
        raise WebhookError(401, "X-Hub-Signature-256 does not match the body")


def parse_webhook(headers: Mapping[str, str], body: bytes, secret: str | None) -> Delivery:
    """Verify and parse one delivery. `headers` must have lower-case keys."""
    event_name = headers.get("x-github-event")
    if not event_name:
        raise WebhookError(400, "missing X-GitHub-Event header")
    verify(headers, body, secret)
    delivery_id = headers.get("x-github-delivery") or "sha256:" + hashlib.sha256(body).hexdigest()
    return Delivery(FORGE, event_name, delivery_id, parse_event(event_name, parse_json_object(_json(headers, body))))


def _json(headers: Mapping[str, str], body: bytes) -> bytes:
    """The delivery's JSON: the body, or with the `form` content type (GitHub's default), the
    body's `payload` field. The signature covers the body as sent, so this comes after it."""
    if headers.get("content-type", "").partition(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        return body
    try:
        fields = parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=True, errors="strict",
                          max_num_fields=20)
    except ValueError:  # UnicodeError included
        raise WebhookError(400, "form body is not URL-encoded UTF-8") from None
    if len(fields.get("payload", ())) != 1:
        raise WebhookError(400, "form body lacks its payload field")
    return fields["payload"][0].encode()


def parse_event(name: str, payload: dict[str, Any]) -> Event:
    if name == "ping":
        zen = payload.get("zen")
        return Ping(_repo(payload) if "repository" in payload else None, zen if isinstance(zen, str) else "")
    parser = {"pull_request": _pull_request_event, "issue_comment": _comment_event,
              "push": _push_event}.get(name)
    if parser is None:
        return Unsupported(f"event {name!r} is not one the bot acts on",
                           _repo(payload) if isinstance(payload.get("repository"), dict) else None)
    return parser(payload)


def _repo(payload: Mapping[str, Any]) -> Repo:
    return Repo(FORGE, field(payload, "repository.full_name"), field(payload, "repository.clone_url"),
                field(payload, "repository.default_branch", optional=True) or "main",
                field(payload, "repository.html_url", optional=True) or "")


def _pull(payload: Mapping[str, Any], repo: Repo) -> PullRequest:
    def get(path: str, kind: type = str, optional: bool = False) -> Any:
        return field(payload, f"pull_request.{path}", kind, optional=optional)

    return PullRequest(
        repo=repo, number=get("number", int), title=get("title", optional=True) or "",
        author=get("user.login"), base_ref=get("base.ref"), base_sha=get("base.sha"),
        head_ref=get("head.ref"), head_sha=get("head.sha"),
        head_clone_url=get("head.repo.clone_url", optional=True) or repo.clone_url,
        draft=bool(get("draft", bool, optional=True)), web_url=get("html_url", optional=True) or "")


def _pull_request_event(payload: dict[str, Any]) -> Event:
    action = field(payload, "action")
    repo = _repo(payload)
    pull = _pull(payload, repo)
    sender = field(payload, "sender.login", optional=True) or pull.author
    if action in _PULL_ACTIONS:
        return PullRequestEvent(_PULL_ACTIONS[action], pull, sender, detail=action)  # type: ignore[arg-type]
    changes = payload.get("changes")
    if action == "edited" and isinstance(changes, dict) and isinstance(changes.get("base"), dict):
        return PullRequestEvent("retargeted", pull, sender, detail=action)
    if action == "closed":
        if payload["pull_request"].get("merged"):
            return PullRequestEvent("merged", pull, sender, detail="merged",
                                    merge_sha=field(payload, "pull_request.merge_commit_sha", optional=True))
        return PullRequestEvent("closed", pull, sender, detail=action)
    return PullRequestEvent("other", pull, sender, detail=action)


def _comment_event(payload: dict[str, Any]) -> Event:
    issue = field(payload, "issue", dict)
    user = field(payload, "comment.user", dict)
    return CommentEvent(
        repo=_repo(payload), number=field(issue, "number", int), comment_id=field(payload, "comment.id", int),
        body=field(payload, "comment.body", optional=True) or "", author=field(user, "login"),
        action=field(payload, "action"), on_pull_request=isinstance(issue.get("pull_request"), dict),
        author_is_bot=user.get("type") == "Bot")


def _push_event(payload: dict[str, Any]) -> Event:
    pusher = (field(payload, "pusher.name", optional=True) or field(payload, "sender.login", optional=True)
              or "")
    return PushEvent(_repo(payload), field(payload, "ref"), field(payload, "before"),
                     field(payload, "after"), pusher)


def web_url(api_url: str) -> str:
    """Where GitHub serves pages and repositories, from its API's URL: `https://api.github.com` is
    `https://github.com`; GitHub Enterprise Server's `https://HOST/api/v3` is `https://HOST`."""
    parts = urlsplit(api_url.rstrip("/"))
    host = "github.com" if parts.hostname == "api.github.com" else parts.netloc
    path = parts.path.removesuffix("/api/v3")
    return f"{parts.scheme}://{host}{path}"


def commit_url(api_url: str, repo: str, sha: str) -> str:
    """A commit's page: github.com for the public API, the host itself for GitHub Enterprise Server."""
    return f"{web_url(api_url)}/{repo}/commit/{sha}"


# -- API adapter -------------------------------------------------------------------------------

def _private_key(value: str) -> str:
    return value if "-----BEGIN" in value else Path(value).read_text()


class _Retry(github.GithubRetry):
    """PyGithub's retries of 5xx answers and dropped connections, but never a wait the forge asks for
    (Retry-After, a rate-limit reset): urllib3 would sleep it out in the worker, for as long as the
    forge says. The answer becomes an error with its headers, and the job queue waits instead."""

    def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                  error: Exception | None = None, _pool: Any = None, _stacktrace: Any = None) -> Any:
        if response is not None and retry_after(response.headers, time.time()) is not None:
            raise GithubException(response.status, None, dict(response.headers))
        return super().increment(method, url, response, error, _pool, _stacktrace)


def _call(what: str, fn: Callable[[], T]) -> T:
    """Run one API call; 5xx and rate limits become retryable, and no token reaches the message.
    Every error is counted, whatever its status."""
    try:
        return fn()
    except GithubException as err:
        wait = retry_after(err.headers, time.time())
        if err.status >= 500 or err.status in (403, 429) and (wait is not None or "rate limit" in str(err.data).lower()):
            API_ERRORS.add(FORGE, "transient", err.status)
            raise TransientForgeError(f"GitHub answered {err.status} to {what}", wait, FORGE) from None
        API_ERRORS.add(FORGE, "refused", err.status)
        raise
    except requests.exceptions.RetryError:
        API_ERRORS.add(FORGE, "transient", None)
        raise TransientForgeError(f"GitHub kept failing {what}, after retries", forge=FORGE) from None
    except (ConnectionError, OSError) as err:
        API_ERRORS.add(FORGE, "transient", None)
        raise TransientForgeError(f"GitHub unreachable for {what}: {type(err).__name__}", forge=FORGE) from None


def _stances(reviews: Any) -> dict[str, tuple[str, str]]:
    """Each reviewer's latest approval or request for changes, and the commit it was given on.

    Reviews come oldest first. A comment-only review changes no one's stance, as on GitHub's own page;
    a dismissed one withdraws it.
    """
    stances: dict[str, tuple[str, str]] = {}
    for review in reviews:
        if review.user is not None and review.state in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED"):
            stances[review.user.login] = (review.state, review.commit_id)
    return {user: stance for user, stance in stances.items() if stance[0] != "DISMISSED"}


def _comment(found: Any) -> Comment:
    user = found.user
    return Comment(found.id, found.body or "", user.login if user else "", bool(user and user.type == "Bot"),
                   found.created_at.timestamp() if found.created_at else 0.0)


class GitHubForge:
    """The GitHub API as the core needs it. Nothing else in the bot imports PyGithub."""

    name = FORGE
    comment_limit = COMMENT_LIMIT

    def __init__(self, api_url: str, token: str | None = None, app_id: str | None = None,
                 app_private_key: str | None = None):
        if not token and not (app_id and app_private_key):
            raise ValueError("GitHub needs GITHUB_TOKEN, or GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY")
        self.api_url = api_url.rstrip("/")
        self.web_url = web_url(self.api_url)
        self._token = token
        self._app_auth = None if token else Auth.AppAuth(str(app_id), _private_key(str(app_private_key)))
        self._auths: dict[str, Auth.Auth] = {}
        self._clients: dict[str, Github] = {}
        self._lock = threading.Lock()
        self._login: str | None = None
        self._default_branches: ShortCache[str, str] = ShortCache(DEFAULT_BRANCH_TTL)

    def _github(self, auth: Auth.Auth) -> Github:
        # PyGithub paces requests by default; the bot makes few, and a comment should land at once.
        return Github(base_url=self.api_url, auth=auth, lazy=True, seconds_between_requests=None,
                      seconds_between_writes=None, retry=_Retry(total=3, backoff_factor=0.5))

    def _auth(self, repo: str) -> Auth.Auth:
        """The token, or the App installation's auth for `repo`'s owner (it refreshes itself)."""
        if self._token:
            return Auth.Token(self._token)
        owner, name = repo.split("/", 1)
        app_auth = self._app_auth
        assert app_auth is not None
        if owner.lower() not in self._auths:
            integration = GithubIntegration(auth=app_auth, base_url=self.api_url)
            installation = _call("installation lookup", lambda: integration.get_repo_installation(owner, name))
            self._auths[owner.lower()] = app_auth.get_installation_auth(installation.id)
        return self._auths[owner.lower()]

    def client(self, repo: str) -> Github:
        """A client whose token may act on `repo`."""
        key = "token" if self._token else repo.split("/", 1)[0].lower()
        with self._lock:
            if key not in self._clients:
                self._clients[key] = self._github(self._auth(repo))
            return self._clients[key]

    def _token_for(self, repo: str) -> str:
        if self._token:
            return self._token
        self.client(repo)
        return self._auths[repo.split("/", 1)[0].lower()].token

    def clone_url(self, repo: Repo, *, allow_local: bool) -> str:
        # An App's installation token is fetched only for a URL that will carry it.
        return forge_clone_url(repo, self.web_url, allow_local, "x-access-token",
                               lambda: self._token_for(repo.full_name))

    def pull_refspec(self, number: int) -> str:
        return f"refs/pull/{number}/head"

    def bot_login(self, repo: str = "") -> str:
        if self._login is None:
            if self._token:
                self._login = _call("GET /user", lambda: self.client(repo).get_user().login)
            else:
                app = GithubIntegration(auth=self._app_auth, base_url=self.api_url).get_app()
                self._login = f"{app.slug}[bot]"
        return self._login

    def _repo(self, repo: str):
        return self.client(repo).get_repo(repo)  # lazy: the client was made with lazy=True

    def default_branch(self, repo: str) -> str:
        return self._default_branches.get(repo.lower(), lambda: _call(
            "read repository", lambda: self._repo(repo).default_branch))

    def _issue(self, repo: str, number: int):
        return self._repo(repo).get_issue(number)

    def comment(self, repo: str, number: int, comment_id: int) -> Comment | None:
        def read() -> tuple[str, Comment]:
            found = self._issue(repo, number).get_comment(comment_id)  # lazy: read by the first attribute
            return found.issue_url or "", _comment(found)
        try:
            issue_url, comment = _call("read comment", read)
        except GithubException as err:
            if err.status == 404:
                return None
            raise
        # The endpoint finds any comment of the repository, on any issue or pull request: it must be on this one.
        return comment if issue_url.rstrip("/").endswith(f"/issues/{number}") else None

    def list_comments(self, repo: str, number: int) -> list[Comment]:
        return _call("list comments", lambda: [_comment(c) for c in self._issue(repo, number).get_comments()])

    def create_comment(self, repo: str, number: int, body: str) -> int:
        return _call("create comment", lambda: self._issue(repo, number).create_comment(body).id)

    def edit_comment(self, repo: str, number: int, comment_id: int, body: str) -> None:
        _call("edit comment", lambda: self._issue(repo, number).get_comment(comment_id).edit(body))

    def delete_comment(self, repo: str, number: int, comment_id: int) -> None:
        _call("delete comment", lambda: self._issue(repo, number).get_comment(comment_id).delete())

    def set_status(self, repo: str, sha: str, context: str, state: StatusState,
                   description: str, url: str | None = None) -> None:
        kwargs: dict[str, Any] = {"state": state, "context": context, "description": description[:140]}
        if url:
            kwargs["target_url"] = url
        _call("set status", lambda: self._repo(repo).get_commit(sha).create_status(**kwargs))

    def react(self, repo: str, number: int, comment_id: int, reaction: Reaction) -> None:
        _call("react", lambda: self._issue(repo, number).get_comment(comment_id).create_reaction(reaction))

    def permission(self, repo: str, user: str) -> str:
        try:
            role = _call("permission", lambda: self._repo(repo).get_collaborator_role_name(user))
        except GithubException as err:
            if err.status == 404:
                return "none"
            raise
        return {"pull": "read", "push": "write"}.get(role, role)

    def pull_state(self, repo: str, number: int) -> PullState:
        def read() -> PullState:
            pull = self._repo(repo).get_pull(number)
            head = pull.head.sha
            approved, note = approval(
                Review(user, state == "APPROVED", commit == head, self.permission(repo, user))
                for user, (state, commit) in _stances(pull.get_reviews()).items())
            state: Literal["open", "closed", "merged"] = "merged" if pull.merged else (
                "open" if pull.state == "open" else "closed")
            fork = pull.head.repo is None or pull.head.repo.full_name != pull.base.repo.full_name
            return PullState(head, pull.base.ref, state, pull.mergeable, approved, note,
                             pull.user.login if pull.user else "", fork)
        return _call("read pull request", read)

    def merge(self, repo: str, number: int, sha: str, message: str) -> str:
        try:
            status = _call("merge", lambda: self._repo(repo).get_pull(number).merge(
                commit_title=message, sha=sha, merge_method="merge"))
        except GithubException as err:  # 405 not mergeable, 409 head moved, 422 rules
            reason = err.data.get("message") if isinstance(err.data, dict) else None
            raise MergeRefused(f"GitHub answered {err.status}: {reason or 'refused'}") from None
        return status.sha

    def rate_limit_remaining(self) -> int | None:
        """The lowest headroom among this process's clients, as GitHub's last answers said."""
        seen = []
        for client in list(self._clients.values()):
            try:
                seen.append(client.rate_limiting[0])
            except (GithubException, OSError):
                continue
        return min(seen) if seen else None

    def open_pulls(self, repo: Repo) -> list[PullRequest]:
        return _call("list pull requests", lambda: [PullRequest(
            repo=repo, number=p.number, title=p.title or "", author=p.user.login if p.user else "",
            base_ref=p.base.ref, base_sha=p.base.sha, head_ref=p.head.ref, head_sha=p.head.sha,
            head_clone_url=p.head.repo.clone_url if p.head.repo else repo.clone_url, draft=bool(p.draft),
            web_url=p.html_url or "") for p in self._repo(repo.full_name).get_pulls(state="open")])

    def has_status(self, repo: str, sha: str, context: str) -> bool:
        return _call("list statuses", lambda: any(
            s.context == context for s in self._repo(repo).get_commit(sha).get_statuses()))

    def create_deployment(self, repo: str, environment: str, sha: str, ref: str, description: str) -> str:
        # The bot deploys what landed; GitHub must not hold it back on status checks or merge the base.
        deployment = _call("create deployment", lambda: self._repo(repo).create_deployment(
            ref=sha, environment=environment, description=description[:140], required_contexts=[],
            auto_merge=False, transient_environment=False, production_environment=False))
        _call("deployment status", lambda: deployment.create_status("in_progress", description=description[:140]))
        return str(deployment.id)

    def update_deployment(self, repo: str, environment: str, deployment_id: str, state: DeployState,
                          description: str) -> None:
        _call("deployment status", lambda: self._repo(repo).get_deployment(int(deployment_id)).create_status(
            state, description=description[:140], environment=environment))

