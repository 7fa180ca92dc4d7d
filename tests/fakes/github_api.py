"""In-process stand-in for the GitHub REST API v3, shaped so the real PyGithub client parses it.

Use it as `with FakeGitHub() as fake:`, seed it (`add_repo`, `add_pull`, `add_comment`,
`add_review`, `set_permission`, `set_branch`), point `github.Github(base_url=fake.url, ...)`
at it and assert on `fake.comments(...)`, `fake.statuses(...)`, `fake.reactions(...)`,
`fake.posted_texts()` or the raw `fake.calls(...)`. State is plain dicts guarded by `self.lock`;
tests may mutate it directly (e.g. `fake.pulls["o/r", 7]["mergeable"] = False`).

GitHub behaviours kept on purpose, because a bot can trip over them in production:
- `permission` is the legacy field: maintain folds to write, triage to read (`role_name` keeps
  the role). A user with no permission set counts as "read" on public repos, "none" on private.
- installation tokens get 403 on `GET /user`; app JWTs are accepted only on app endpoints
  (`/app/...`, `/repos/{o}/{r}/installation`) and must carry `iss` == `app_id`.
- list endpoints omit fields (`mergeable`, `merged`, ...) that only the single-PR answer carries.
- validation: comment bodies <= 65536 chars, status descriptions <= 140 chars, known states only.
- a deployment without `required_contexts` is refused (409) unless every status context is success.
- `GET /repos/{o}/{r}/issues/comments/{id}` finds a comment of any issue or pull request of the
  repository; its `issue_url` says which.
- reviews carry the `commit_id` they were given on (by default the pull request's head when added).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import secrets
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import unquote, urlencode

from tests.fakes.http import Recorded, Reply, RecordingServer

DOCS = "https://docs.github.com/rest"
REPO = r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)"
LEGACY_PERMISSION = {"maintain": "write", "triage": "read"}
ROLES = ("admin", "maintain", "write", "triage", "read", "none")
REACTIONS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes")
STATUS_STATES = ("error", "failure", "pending", "success")
DEPLOYMENT_STATES = ("error", "failure", "inactive", "in_progress", "queued", "pending", "success")


class _Abort(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.reply = Reply(status, {"message": message, **extra, "documentation_url": DOCS})


def _invalid(resource: str, field: str, message: str) -> _Abort:
    return _Abort(422, "Validation Failed",
                  errors=[{"resource": resource, "field": field, "code": "custom", "message": message}])


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _jwt_claims(token: str) -> dict | None:
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (dict, list)):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _strings(item)


class FakeGitHub(RecordingServer):
    """GitHub REST API v3 double; see the module docstring for what it models."""

    def __init__(self, bot_login: str = "gitops-bot[bot]", *, app_id: int | str = 1234,
                 installation_id: int = 4242, tokens: Iterable[str] | None = None,
                 rate_limit: int = 5000) -> None:
        super().__init__()
        self.bot_login = bot_login
        self.app_id = app_id
        self.installation_id = installation_id
        self.tokens: set[str] | None = None if tokens is None else set(tokens)
        self.token_users: dict[str, str] = {}
        self.installation_tokens: dict[str, datetime] = {}
        self.jwt_claims: list[dict] = []
        self.rate_limit = rate_limit
        self.clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
        self.on_merge: Callable[[str, int, str, str], str] | None = None
        self.errors: list[str] = []
        self.repos: dict[str, dict] = {}
        self.branches: dict[tuple[str, str], str] = {}
        self.pulls: dict[tuple[str, int], dict] = {}
        self.issue_comments: dict[tuple[str, int], list[dict]] = {}
        self.comment_reactions: dict[int, list[dict]] = {}
        self.commit_statuses: dict[tuple[str, str], list[dict]] = {}
        self.permissions: dict[tuple[str, str], str] = {}
        self.reviews: dict[tuple[str, int], list[dict]] = {}
        self.deployments: dict[str, list[dict]] = {}
        self.deployment_statuses: dict[int, list[dict]] = {}
        self._ids = itertools.count(1001)
        self._user_ids: dict[str, int] = {}
        self._register_routes()

    # -- seeding ---------------------------------------------------------------------------
    def add_repo(self, full_name: str, default_branch: str = "main", clone_url: str | None = None,
                 private: bool = False) -> dict:
        with self.lock:
            self.repos[full_name] = {
                "id": next(self._ids), "full_name": full_name, "default_branch": default_branch,
                "clone_url": clone_url or f"https://github.com/{full_name}.git", "private": private,
                "permissions": {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True}}
            return self.repos[full_name]

    def add_pull(self, full_name: str, number: int, head_sha: str, head_ref: str, base_ref: str = "main",
                 base_sha: str = "0" * 40, author: str = "octocat", head_full_name: str | None = None,
                 mergeable: bool | None = True, draft: bool = False, state: str = "open",
                 title: str | None = None, body: str = "") -> dict:
        with self.lock:
            now = self._now()
            self.pulls[full_name, number] = {
                "id": next(self._ids), "issue_id": next(self._ids), "number": number,
                "title": title or f"PR #{number}", "body": body, "author": author, "state": state,
                "draft": draft, "mergeable": mergeable, "merged": False, "merged_by": None,
                "merge_commit_sha": None, "head_sha": head_sha, "head_ref": head_ref,
                "head_full_name": head_full_name, "base_ref": base_ref, "base_sha": base_sha,
                "created_at": now, "updated_at": now, "closed_at": None, "merged_at": None}
            return self.pulls[full_name, number]

    def add_comment(self, full_name: str, number: int, body: str, user: str = "alice",
                    created_at: datetime | None = None) -> dict:
        """A comment by `user` (a login ending in `[bot]` is a bot, as an App's is), made now or at `created_at`."""
        with self.lock:
            now = _iso(created_at) if created_at else self._now()
            comment = {"id": next(self._ids), "body": body, "user": user, "created_at": now, "updated_at": now}
            self.issue_comments.setdefault((full_name, number), []).append(comment)
            return self._comment_json(full_name, number, comment)

    def add_review(self, full_name: str, number: int, user: str, state: str = "APPROVED",
                   body: str = "", commit_id: str | None = None) -> dict:
        with self.lock:
            review = {"id": next(self._ids), "user": user, "state": state, "body": body,
                      "commit_id": commit_id or self.pulls[full_name, number]["head_sha"],
                      "submitted_at": self._now()}
            self.reviews.setdefault((full_name, number), []).append(review)
            return review

    def set_permission(self, full_name: str, login: str, role: str) -> None:
        assert role in ROLES, role
        with self.lock:
            self.permissions[full_name, login] = role

    def set_branch(self, full_name: str, ref: str, sha: str) -> None:
        with self.lock:
            self.branches[full_name, ref] = sha

    # -- queries for tests (answers shaped exactly as the API returns them) ------------------
    def comments(self, full_name: str, number: int) -> list[dict]:
        with self.lock:
            return [self._comment_json(full_name, number, c)
                    for c in self.issue_comments.get((full_name, number), [])]

    def statuses(self, full_name: str, sha: str) -> list[dict]:
        """Oldest first (the API itself answers newest first)."""
        with self.lock:
            return [self._status_json(full_name, s) for s in self.commit_statuses.get((full_name, sha), [])]

    def reactions(self, comment_id: int) -> list[dict]:
        with self.lock:
            return [self._reaction_json(r) for r in self.comment_reactions.get(comment_id, [])]

    def posted_texts(self) -> list[str]:
        """Every string value in every POST/PATCH/PUT body, JSON-unescaped so secrets match verbatim."""
        texts: list[str] = []
        for request in self.calls():
            if request.method in ("POST", "PATCH", "PUT") and request.body:
                try:
                    texts.extend(_strings(request.json))
                except ValueError:
                    texts.append(request.body.decode(errors="replace"))
        return texts

    # -- plumbing --------------------------------------------------------------------------
    @property
    def api(self) -> str:
        return self.url if self._httpd is not None else "http://127.0.0.1:0"

    def _now(self) -> str:
        return _iso(self.clock())

    def dispatch(self, request: Recorded) -> Reply | None:
        reply = super().dispatch(request)
        if reply is None:
            return None
        with self.lock:
            used = len(self.requests)
        limits = {"X-RateLimit-Limit": str(self.rate_limit), "X-RateLimit-Used": str(used),
                  "X-RateLimit-Remaining": str(max(0, self.rate_limit - used)),
                  "X-RateLimit-Reset": str(int(self.clock().timestamp()) + 3600), "X-RateLimit-Resource": "core"}
        # fault replies may carry their own rate-limit headers (e.g. Remaining: 0), so theirs win
        return replace(reply, headers={**limits, **reply.headers})

    def _register_routes(self) -> None:
        num, comment = r"(?P<number>\d+)", REPO + r"/issues/comments/(?P<comment_id>\d+)"
        for method, pattern, handler in [
            ("GET", r"/user", self._get_user),
            ("GET", REPO, self._get_repo),
            ("GET", REPO + r"/installation", self._get_installation),
            ("GET", r"/app", self._get_app),
            ("POST", r"/app/installations/(?P<installation>\d+)/access_tokens", self._create_token),
            ("GET", REPO + r"/pulls", self._list_pulls),
            ("GET", REPO + r"/pulls/" + num, self._get_pull),
            ("GET", REPO + r"/pulls/" + num + r"/reviews", self._list_reviews),
            ("PUT", REPO + r"/pulls/" + num + r"/merge", self._merge),
            ("GET", REPO + r"/issues/" + num, self._get_issue),
            ("GET", REPO + r"/issues/" + num + r"/comments", self._list_comments),
            ("POST", REPO + r"/issues/" + num + r"/comments", self._create_comment),
            ("GET", comment, self._get_comment),
            ("PATCH", comment, self._edit_comment),
            ("DELETE", comment, self._delete_comment),
            ("GET", comment + r"/reactions", self._list_reactions),
            ("POST", comment + r"/reactions", self._create_reaction),
            ("DELETE", comment + r"/reactions/(?P<reaction_id>\d+)", self._delete_reaction),
            ("POST", REPO + r"/statuses/(?P<sha>[^/]+)", self._create_status),
            ("GET", REPO + r"/commits/(?P<ref>[^/]+)/statuses", self._list_statuses),
            ("GET", REPO + r"/statuses/(?P<ref>[^/]+)", self._list_statuses),
            ("GET", REPO + r"/commits/(?P<ref>[^/]+)/status", self._combined_status),
            ("GET", REPO + r"/commits/(?P<ref>[^/]+)", self._get_commit),
            ("GET", REPO + r"/collaborators/(?P<user>[^/]+)/permission", self._get_permission),
            ("GET", REPO + r"/deployments", self._list_deployments),
            ("POST", REPO + r"/deployments", self._create_deployment),
            ("GET", REPO + r"/deployments/(?P<deployment_id>\d+)/statuses", self._list_deployment_statuses),
            ("POST", REPO + r"/deployments/(?P<deployment_id>\d+)/statuses", self._create_deployment_status),
        ]:
            app_only = pattern == "/app" or pattern.startswith("/app/") or pattern.endswith("/installation")
            self.route(method, pattern, self._guard(handler, app_only))
        for method in ("GET", "POST", "PATCH", "PUT", "DELETE"):
            self.route(method, r"/.*", lambda request, **_: Reply(404, {"message": "Not Found", "documentation_url": DOCS}))

    def _guard(self, handler: Callable[..., Reply], app_only: bool) -> Callable[..., Reply]:
        def guarded(request: Recorded, **groups: str) -> Reply:
            try:
                self._authenticate(request, app_only)
                return handler(request, **{key: unquote(value) for key, value in groups.items()})
            except _Abort as abort:
                return abort.reply
            except Exception as exc:  # a bug in the fake or in on_merge must surface in the test, not hang it
                self.errors.append(f"{request.method} {request.path}: {exc!r}")
                return Reply(500, {"message": f"fake GitHub crashed: {exc!r}"})
        return guarded

    def _token(self, request: Recorded) -> str:
        return request.headers.get("authorization", "").partition(" ")[2].strip()

    def _who(self, request: Recorded) -> str:
        return self.token_users.get(self._token(request), self.bot_login)

    def _authenticate(self, request: Recorded, app_only: bool) -> None:
        token = self._token(request)
        if not token:
            raise _Abort(401, "Requires authentication")
        claims = _jwt_claims(token)
        if app_only:
            if claims is None:
                raise _Abort(401, "A JSON web token could not be decoded")
            self.jwt_claims.append(claims)
            if str(claims.get("iss")) != str(self.app_id):
                raise _Abort(401, "'Issuer' claim ('iss') does not identify this GitHub App")
            if not isinstance(claims.get("exp"), (int, float)) or claims["exp"] < self.clock().timestamp():
                raise _Abort(401, "'Expiration time' claim ('exp') must be a numeric value in the future")
        elif claims is not None and "iss" in claims:
            raise _Abort(401, "An app JWT cannot be used here; use an installation access token")
        elif token in self.installation_tokens:
            if self.installation_tokens[token] < self.clock():
                raise _Abort(401, "Bad credentials")
        elif self.tokens is not None and token not in self.tokens:
            raise _Abort(401, "Bad credentials")

    def _page(self, request: Recorded, items: list) -> Reply:
        try:
            per_page = max(1, min(100, int(request.query.get("per_page", ["30"])[-1])))
            page = max(1, int(request.query.get("page", ["1"])[-1]))
        except ValueError:
            raise _invalid("Pagination", "per_page", "must be an integer") from None
        last = max(1, -(-len(items) // per_page))

        def link(target: int, rel: str) -> str:
            query = {key: values[-1] for key, values in request.query.items()} | {"per_page": per_page, "page": target}
            return f'<{self.url}{request.path}?{urlencode(query)}>; rel="{rel}"'
        links = ([link(page - 1, "prev"), link(1, "first")] if page > 1 else []) + \
                ([link(page + 1, "next"), link(last, "last")] if page < last else [])
        return Reply(200, items[(page - 1) * per_page: page * per_page], {"Link": ", ".join(links)} if links else {})

    def _repo_of(self, owner: str, name: str) -> str:
        if f"{owner}/{name}" not in self.repos:
            raise _Abort(404, "Not Found")
        return f"{owner}/{name}"

    def _pull_of(self, owner: str, name: str, number: str) -> tuple[str, dict]:
        full = self._repo_of(owner, name)
        if (full, int(number)) not in self.pulls:
            raise _Abort(404, "Not Found")
        return full, self.pulls[full, int(number)]

    def _comment_of(self, owner: str, name: str, comment_id: str) -> tuple[str, int, list[dict], dict]:
        full = self._repo_of(owner, name)
        for (repo, number), thread in self.issue_comments.items():
            for comment in thread:
                if repo == full and comment["id"] == int(comment_id):
                    return full, number, thread, comment
        raise _Abort(404, "Not Found")

    def _resolve(self, full: str, ref: str) -> str:
        ref = ref.removeprefix("refs/").removeprefix("heads/")
        if (full, ref) in self.branches:
            return self.branches[full, ref]
        for (repo, _), pr in self.pulls.items():
            if repo == full and pr["head_ref"] == ref and not pr["head_full_name"]:
                return pr["head_sha"]
            if repo == full and pr["base_ref"] == ref:
                return pr["base_sha"]
        return ref

    # -- JSON shapes -----------------------------------------------------------------------
    def _user(self, login: str) -> dict:
        uid = self._user_ids.setdefault(login, 5001 + len(self._user_ids))
        return {"login": login, "id": uid, "node_id": f"U_{uid}", "type": "Bot" if login.endswith("[bot]") else "User",
                "site_admin": False, "url": f"{self.api}/users/{login}", "html_url": f"https://github.com/{login}",
                "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}"}

    def _association(self, full: str, login: str) -> str:
        if login == full.split("/")[0]:
            return "OWNER"
        return "COLLABORATOR" if self.permissions.get((full, login), "none") not in ("read", "none") else "NONE"

    def _repo_json(self, full: str) -> dict:
        repo = self.repos.get(full) or {
            "id": int(hashlib.sha1(full.encode()).hexdigest()[:7], 16), "default_branch": "main",
            "clone_url": f"https://github.com/{full}.git", "private": False, "permissions": {"pull": True}}
        owner, name = full.split("/")
        return {"id": repo["id"], "node_id": f"R_{repo['id']}", "name": name, "full_name": full,
                "owner": self._user(owner), "private": repo["private"], "fork": full not in self.repos,
                "html_url": f"https://github.com/{full}", "url": f"{self.api}/repos/{full}",
                "clone_url": repo["clone_url"], "default_branch": repo["default_branch"],
                "permissions": repo["permissions"], "visibility": "private" if repo["private"] else "public"}

    def _ref_json(self, full: str, ref: str, sha: str) -> dict:
        owner = full.split("/")[0]
        return {"label": f"{owner}:{ref}", "ref": ref, "sha": sha, "user": self._user(owner), "repo": self._repo_json(full)}

    def _pull_json(self, full: str, pr: dict, detail: bool = True) -> dict:
        api, n = f"{self.api}/repos/{full}", pr["number"]
        body = {"id": pr["id"], "node_id": f"PR_{pr['id']}", "number": n, "url": f"{api}/pulls/{n}",
                "html_url": f"https://github.com/{full}/pull/{n}", "diff_url": f"https://github.com/{full}/pull/{n}.diff",
                "patch_url": f"https://github.com/{full}/pull/{n}.patch", "issue_url": f"{api}/issues/{n}",
                "comments_url": f"{api}/issues/{n}/comments", "statuses_url": f"{api}/statuses/{pr['head_sha']}",
                "commits_url": f"{api}/pulls/{n}/commits", "review_comments_url": f"{api}/pulls/{n}/comments",
                "state": pr["state"], "locked": False, "title": pr["title"], "body": pr["body"],
                "user": self._user(pr["author"]), "labels": [], "draft": pr["draft"],
                "created_at": pr["created_at"], "updated_at": pr["updated_at"], "closed_at": pr["closed_at"],
                "merged_at": pr["merged_at"], "merge_commit_sha": pr["merge_commit_sha"],
                "author_association": self._association(full, pr["author"]),
                "head": self._ref_json(pr["head_full_name"] or full, pr["head_ref"], pr["head_sha"]),
                "base": self._ref_json(full, pr["base_ref"], pr["base_sha"])}
        if detail:
            state = ("draft" if pr["draft"] else "unknown" if pr["mergeable"] is None
                     else "clean" if pr["mergeable"] else "dirty")
            body.update({"merged": pr["merged"], "mergeable": pr["mergeable"], "mergeable_state": state,
                         "merged_by": pr["merged_by"] and self._user(pr["merged_by"]),
                         "comments": len(self.issue_comments.get((full, n), [])), "review_comments": 0,
                         "commits": 1, "additions": 0, "deletions": 0, "changed_files": 0,
                         "maintainer_can_modify": False})
        return body

    def _comment_json(self, full: str, number: int, comment: dict) -> dict:
        api, cid = f"{self.api}/repos/{full}", comment["id"]
        counts = Counter(r["content"] for r in self.comment_reactions.get(cid, []))
        return {"id": cid, "node_id": f"IC_{cid}", "url": f"{api}/issues/comments/{cid}",
                "html_url": f"https://github.com/{full}/pull/{number}#issuecomment-{cid}",
                "issue_url": f"{api}/issues/{number}", "body": comment["body"], "user": self._user(comment["user"]),
                "created_at": comment["created_at"], "updated_at": comment["updated_at"],
                "author_association": self._association(full, comment["user"]),
                "reactions": {"url": f"{api}/issues/comments/{cid}/reactions", "total_count": sum(counts.values()),
                              **{content: counts[content] for content in REACTIONS}}}

    def _reaction_json(self, reaction: dict) -> dict:
        return {**reaction, "node_id": f"REA_{reaction['id']}", "user": self._user(reaction["user"])}

    def _status_json(self, full: str, status: dict) -> dict:
        return {**status, "node_id": f"SC_{status['id']}", "url": f"{self.api}/repos/{full}/statuses/{status['sha']}",
                "creator": self._user(status["creator"]), "avatar_url": None}

    def _deployment_json(self, full: str, deployment: dict) -> dict:
        url = f"{self.api}/repos/{full}/deployments/{deployment['id']}"
        return {**deployment, "node_id": f"DE_{deployment['id']}", "url": url, "statuses_url": f"{url}/statuses",
                "repository_url": f"{self.api}/repos/{full}", "creator": self._user(deployment["creator"])}

    def _deployment_status_json(self, full: str, status: dict) -> dict:
        deployment_url = f"{self.api}/repos/{full}/deployments/{status['deployment_id']}"
        return {**status, "node_id": f"DES_{status['id']}", "url": f"{deployment_url}/statuses/{status['id']}",
                "deployment_url": deployment_url, "repository_url": f"{self.api}/repos/{full}",
                "creator": self._user(status["creator"])}

    # -- handlers --------------------------------------------------------------------------
    def _get_user(self, request: Recorded) -> Reply:
        if self._token(request) in self.installation_tokens:
            raise _Abort(403, "Resource not accessible by integration")
        return Reply(200, {**self._user(self._who(request)), "name": None, "email": None})

    def _get_repo(self, request: Recorded, owner: str, name: str) -> Reply:
        return Reply(200, self._repo_json(self._repo_of(owner, name)))

    def _get_installation(self, request: Recorded, owner: str, name: str) -> Reply:
        self._repo_of(owner, name)
        iid = self.installation_id
        return Reply(200, {"id": iid, "app_id": self.app_id, "app_slug": self.bot_login.removesuffix("[bot]"),
                           "account": self._user(owner), "target_type": "Organization", "repository_selection": "selected",
                           "access_tokens_url": f"{self.api}/app/installations/{iid}/access_tokens",
                           "permissions": {"contents": "write", "pull_requests": "write", "statuses": "write",
                                           "deployments": "write", "issues": "write", "metadata": "read"},
                           "events": ["issue_comment", "pull_request"], "created_at": self._now(), "updated_at": self._now()})

    def _get_app(self, request: Recorded) -> Reply:
        slug = self.bot_login.removesuffix("[bot]")
        return Reply(200, {"id": self.app_id, "slug": slug, "node_id": f"A_{self.app_id}", "name": slug,
                           "owner": self._user("acme"), "description": "", "external_url": "https://example.com",
                           "html_url": f"https://github.com/apps/{slug}", "created_at": self._now(),
                           "updated_at": self._now(), "permissions": {"contents": "write", "metadata": "read"},
                           "events": ["issue_comment", "pull_request"], "installations_count": 1})

    def _create_token(self, request: Recorded, installation: str) -> Reply:
        if int(installation) != self.installation_id:
            raise _Abort(404, "Not Found")
        token, expires = "ghs_" + secrets.token_hex(18), self.clock() + timedelta(hours=1)
        self.installation_tokens[token] = expires
        self.token_users[token] = self.bot_login
        permissions = (request.json or {}).get("permissions") or {"contents": "write", "pull_requests": "write",
                                                                  "statuses": "write", "metadata": "read"}
        return Reply(201, {"token": token, "expires_at": _iso(expires), "permissions": permissions,
                           "repository_selection": "selected"})

    def _list_pulls(self, request: Recorded, owner: str, name: str) -> Reply:
        full = self._repo_of(owner, name)
        query = {key: values[-1] for key, values in request.query.items()}

        def wanted(pr: dict) -> bool:
            head = f"{(pr['head_full_name'] or full).split('/')[0]}:{pr['head_ref']}"
            return (query.get("state", "open") in ("all", pr["state"]) and query.get("head", head) == head
                    and query.get("base", pr["base_ref"]) == pr["base_ref"])
        pulls = [pr for (repo, number), pr in sorted(self.pulls.items(), key=lambda item: -item[0][1])
                 if repo == full and wanted(pr)]
        return self._page(request, [self._pull_json(full, pr, detail=False) for pr in pulls])

    def _get_pull(self, request: Recorded, owner: str, name: str, number: str) -> Reply:
        return Reply(200, self._pull_json(*self._pull_of(owner, name, number)))

    def _list_reviews(self, request: Recorded, owner: str, name: str, number: str) -> Reply:
        full, pr = self._pull_of(owner, name, number)
        api = f"{self.api}/repos/{full}/pulls/{pr['number']}"
        return self._page(request, [
            {**review, "node_id": f"PRR_{review['id']}", "user": self._user(review["user"]),
             "html_url": f"https://github.com/{full}/pull/{pr['number']}#pullrequestreview-{review['id']}",
             "pull_request_url": api, "author_association": self._association(full, review["user"])}
            for review in self.reviews.get((full, pr["number"]), [])])

    def _merge(self, request: Recorded, owner: str, name: str, number: str) -> Reply:
        full, pr = self._pull_of(owner, name, number)
        data = request.json or {}
        if pr["merged"] or pr["state"] != "open" or pr["mergeable"] is False:
            raise _Abort(405, "Pull Request is not mergeable")
        if pr["draft"]:
            raise _Abort(405, "Pull Request is still a draft")
        if data.get("sha") not in (None, pr["head_sha"]):
            raise _Abort(409, "Head branch was modified. Review and try the merge again.")
        method = data.get("merge_method", "merge")
        if method not in ("merge", "squash", "rebase"):
            raise _invalid("PullRequest", "merge_method", f"{method} is not a valid merge method")
        head_owner = (pr["head_full_name"] or full).split("/")[0]
        title = data.get("commit_title") or (f"Merge pull request #{pr['number']} from {head_owner}/{pr['head_ref']}"
                                             if method == "merge" else f"{pr['title']} (#{pr['number']})")
        sha = (self.on_merge(full, pr["number"], method, title) if self.on_merge
               else hashlib.sha1(f"{full}#{pr['number']}@{pr['head_sha']}".encode()).hexdigest())
        now = self._now()
        pr.update(merged=True, state="closed", merge_commit_sha=sha, merged_by=self._who(request),
                  merged_at=now, closed_at=now, updated_at=now)
        return Reply(200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"})

    def _get_issue(self, request: Recorded, owner: str, name: str, number: str) -> Reply:
        full, pr = self._pull_of(owner, name, number)
        api, n, web = f"{self.api}/repos/{full}", pr["number"], f"https://github.com/{full}/pull/{pr['number']}"
        return Reply(200, {
            "id": pr["issue_id"], "node_id": f"I_{pr['issue_id']}", "number": n, "title": pr["title"],
            "body": pr["body"], "user": self._user(pr["author"]), "labels": [], "state": pr["state"],
            "state_reason": None, "locked": False, "assignee": None, "assignees": [], "milestone": None,
            "comments": len(self.issue_comments.get((full, n), [])), "draft": pr["draft"],
            "created_at": pr["created_at"], "updated_at": pr["updated_at"], "closed_at": pr["closed_at"],
            "author_association": self._association(full, pr["author"]), "url": f"{api}/issues/{n}",
            "repository_url": api, "comments_url": f"{api}/issues/{n}/comments", "html_url": web,
            "events_url": f"{api}/issues/{n}/events", "labels_url": f"{api}/issues/{n}/labels{{/name}}",
            "pull_request": {"url": f"{api}/pulls/{n}", "html_url": web, "diff_url": f"{web}.diff",
                             "patch_url": f"{web}.patch", "merged_at": pr["merged_at"]}})

    def _list_comments(self, request: Recorded, owner: str, name: str, number: str) -> Reply:
        full, pr = self._pull_of(owner, name, number)
        since = request.query.get("since", [""])[-1]
        return self._page(request, [c for c in self.comments(full, pr["number"]) if c["updated_at"] >= since])

    def _comment_body(self, request: Recorded) -> str:
        body = (request.json or {}).get("body")
        if not isinstance(body, str) or not body:
            raise _invalid("IssueComment", "body", "body wasn't supplied.")
        if len(body) > 65536:
            raise _invalid("IssueComment", "body", "Body is too long (maximum is 65536 characters)")
        return body

    def _create_comment(self, request: Recorded, owner: str, name: str, number: str) -> Reply:
        full, pr = self._pull_of(owner, name, number)
        comment = self.add_comment(full, pr["number"], self._comment_body(request), user=self._who(request))
        return Reply(201, comment, {"Location": comment["url"]})

    def _get_comment(self, request: Recorded, owner: str, name: str, comment_id: str) -> Reply:
        full, number, _, comment = self._comment_of(owner, name, comment_id)
        return Reply(200, self._comment_json(full, number, comment))

    def _edit_comment(self, request: Recorded, owner: str, name: str, comment_id: str) -> Reply:
        full, number, _, comment = self._comment_of(owner, name, comment_id)
        comment.update(body=self._comment_body(request), updated_at=self._now())
        return Reply(200, self._comment_json(full, number, comment))

    def _delete_comment(self, request: Recorded, owner: str, name: str, comment_id: str) -> Reply:
        _, _, thread, comment = self._comment_of(owner, name, comment_id)
        thread.remove(comment)
        self.comment_reactions.pop(comment["id"], None)
        return Reply(204)

    def _list_reactions(self, request: Recorded, owner: str, name: str, comment_id: str) -> Reply:
        _, _, _, comment = self._comment_of(owner, name, comment_id)
        content = request.query.get("content", [None])[-1]
        return self._page(request, [r for r in self.reactions(comment["id"]) if content in (None, r["content"])])

    def _create_reaction(self, request: Recorded, owner: str, name: str, comment_id: str) -> Reply:
        _, _, _, comment = self._comment_of(owner, name, comment_id)
        content, user = (request.json or {}).get("content"), self._who(request)
        if content not in REACTIONS:
            raise _invalid("Reaction", "content", f"content must be one of {', '.join(REACTIONS)}")
        existing = self.comment_reactions.setdefault(comment["id"], [])
        for reaction in existing:
            if (reaction["content"], reaction["user"]) == (content, user):
                return Reply(200, self._reaction_json(reaction))
        existing.append({"id": next(self._ids), "content": content, "user": user, "created_at": self._now()})
        return Reply(201, self._reaction_json(existing[-1]))

    def _delete_reaction(self, request: Recorded, owner: str, name: str, comment_id: str, reaction_id: str) -> Reply:
        _, _, _, comment = self._comment_of(owner, name, comment_id)
        reactions = self.comment_reactions.get(comment["id"], [])
        self.comment_reactions[comment["id"]] = [r for r in reactions if r["id"] != int(reaction_id)]
        return Reply(204)

    def _create_status(self, request: Recorded, owner: str, name: str, sha: str) -> Reply:
        full, data = self._repo_of(owner, name), request.json or {}
        if data.get("state") not in STATUS_STATES:
            raise _invalid("Status", "state", f"state must be one of {', '.join(STATUS_STATES)}")
        if len(data.get("description") or "") > 140:
            raise _invalid("Status", "description", "description is too long (maximum is 140 characters)")
        now = self._now()
        status = {"id": next(self._ids), "sha": sha, "state": data["state"], "context": data.get("context") or "default",
                  "description": data.get("description"), "target_url": data.get("target_url"),
                  "creator": self._who(request), "created_at": now, "updated_at": now}
        self.commit_statuses.setdefault((full, sha), []).append(status)
        return Reply(201, self._status_json(full, status))

    def _list_statuses(self, request: Recorded, owner: str, name: str, ref: str) -> Reply:
        full = self._repo_of(owner, name)
        return self._page(request, self.statuses(full, self._resolve(full, ref))[::-1])

    def _latest_statuses(self, full: str, sha: str) -> dict[str, dict]:
        return {status["context"]: status for status in self.statuses(full, sha)}

    def _combined_status(self, request: Recorded, owner: str, name: str, ref: str) -> Reply:
        full = self._repo_of(owner, name)
        sha = self._resolve(full, ref)
        latest = list(self._latest_statuses(full, sha).values())
        states = {status["state"] for status in latest}
        state = ("failure" if states & {"error", "failure"} else
                 "pending" if "pending" in states or not states else "success")
        return Reply(200, {"state": state, "statuses": latest, "sha": sha, "total_count": len(latest),
                           "repository": self._repo_json(full), "url": f"{self.api}/repos/{full}/commits/{sha}/status",
                           "commit_url": f"{self.api}/repos/{full}/commits/{sha}"})

    def _get_commit(self, request: Recorded, owner: str, name: str, ref: str) -> Reply:
        full = self._repo_of(owner, name)
        sha, api = self._resolve(full, ref), f"{self.api}/repos/{full}"
        person = {"name": "Octo Cat", "email": "octocat@example.com", "date": self._now()}
        return Reply(200, {"sha": sha, "node_id": f"C_{sha}", "url": f"{api}/commits/{sha}",
                           "html_url": f"https://github.com/{full}/commit/{sha}", "author": None, "committer": None,
                           "commit": {"message": "", "author": person, "committer": person, "comment_count": 0,
                                      "url": f"{api}/git/commits/{sha}"},
                           "parents": [], "files": [], "stats": {"additions": 0, "deletions": 0, "total": 0}})

    def _get_permission(self, request: Recorded, owner: str, name: str, user: str) -> Reply:
        full = self._repo_of(owner, name)
        role = self.permissions.get((full, user)) or ("none" if self.repos[full]["private"] else "read")
        rank = ROLES.index(role)
        flags = {"admin": rank <= 0, "maintain": rank <= 1, "push": rank <= 2, "triage": rank <= 3, "pull": rank <= 4}
        return Reply(200, {"permission": LEGACY_PERMISSION.get(role, role), "role_name": role,
                           "user": {**self._user(user), "permissions": flags, "role_name": role}})

    def _create_deployment(self, request: Recorded, owner: str, name: str) -> Reply:
        full, data = self._repo_of(owner, name), request.json or {}
        if not data.get("ref"):
            raise _invalid("Deployment", "ref", "ref wasn't supplied.")
        sha = self._resolve(full, data["ref"])
        latest = self._latest_statuses(full, sha)
        required = data.get("required_contexts")
        failing = [c for c in (latest if required is None else required) if latest.get(c, {}).get("state") != "success"]
        if failing:
            raise _Abort(409, f"Conflict: Commit status checks failed for {data['ref']}.",
                         errors=[{"contexts": [{"context": c, "state": latest.get(c, {}).get("state", "missing")}
                                               for c in failing], "resource": "Deployment", "field": "required_contexts"}])
        environment, now = data.get("environment") or "production", self._now()
        deployment = {"id": next(self._ids), "sha": sha, "ref": data["ref"], "task": data.get("task") or "deploy",
                      "payload": data.get("payload") or {}, "environment": environment,
                      "original_environment": environment, "description": data.get("description"),
                      "transient_environment": bool(data.get("transient_environment", False)),
                      "production_environment": bool(data.get("production_environment", environment == "production")),
                      "creator": self._who(request), "created_at": now, "updated_at": now}
        self.deployments.setdefault(full, []).append(deployment)
        return Reply(201, self._deployment_json(full, deployment))

    def _list_deployments(self, request: Recorded, owner: str, name: str) -> Reply:
        full = self._repo_of(owner, name)
        query = {key: values[-1] for key, values in request.query.items() if key in ("sha", "ref", "task", "environment")}
        return self._page(request, [self._deployment_json(full, d) for d in reversed(self.deployments.get(full, []))
                                    if all(str(d[key]) == value for key, value in query.items())])

    def _deployment_of(self, owner: str, name: str, deployment_id: str) -> tuple[str, dict]:
        full = self._repo_of(owner, name)
        for deployment in self.deployments.get(full, []):
            if deployment["id"] == int(deployment_id):
                return full, deployment
        raise _Abort(404, "Not Found")

    def _create_deployment_status(self, request: Recorded, owner: str, name: str, deployment_id: str) -> Reply:
        full, deployment = self._deployment_of(owner, name, deployment_id)
        data = request.json or {}
        if data.get("state") not in DEPLOYMENT_STATES:
            raise _invalid("DeploymentStatus", "state", f"state must be one of {', '.join(DEPLOYMENT_STATES)}")
        now = self._now()
        link = data.get("log_url") or data.get("target_url") or ""
        status = {"id": next(self._ids), "deployment_id": deployment["id"], "state": data["state"],
                  "description": data.get("description") or "", "target_url": link, "log_url": link,
                  "environment": data.get("environment") or deployment["environment"],
                  "environment_url": data.get("environment_url") or "", "creator": self._who(request),
                  "created_at": now, "updated_at": now}
        self.deployment_statuses.setdefault(deployment["id"], []).append(status)
        return Reply(201, self._deployment_status_json(full, status))

    def _list_deployment_statuses(self, request: Recorded, owner: str, name: str, deployment_id: str) -> Reply:
        full, deployment = self._deployment_of(owner, name, deployment_id)
        return self._page(request, [self._deployment_status_json(full, s)
                                    for s in reversed(self.deployment_statuses.get(deployment["id"], []))])
