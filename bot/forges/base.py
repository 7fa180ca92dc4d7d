"""The one small interface every forge adapter implements, and what webhook parsing returns."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import orjson

from bot.errors import TemporaryError
from bot.events import Event, PullRequest, Repo

StatusState = Literal["pending", "success", "failure", "error"]
Reaction = Literal["eyes", "+1", "-1", "rocket", "confused"]
DeployState = Literal["in_progress", "success", "failure"]


class WebhookError(Exception):
    """A delivery refused: `status` is the HTTP code, `message` says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class TransientForgeError(TemporaryError):
    """The forge failed in a way worth retrying (5xx, rate limit, connection).

    `retry_after` is the forge's own word on when to try again, in seconds, when it gave one.
    """

    def __init__(self, message: str, retry_after: float | None = None, forge: str = ""):
        super().__init__(message, retry_after)
        self.retry_after, self.forge = retry_after, forge


class MergeRefused(Exception):
    """The forge would not merge: not mergeable, the head moved, a draft, protected rules."""


def retry_after(headers: Mapping[str, str] | None, now: float) -> float | None:
    """Seconds to wait, from `Retry-After` or, with no requests left, `X-RateLimit-Reset`."""
    lower = {k.lower(): v for k, v in (headers or {}).items()}
    try:
        if "retry-after" in lower:
            return max(float(lower["retry-after"]), 0.0)
        if lower.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in lower:
            return max(float(lower["x-ratelimit-reset"]) - now, 0.0)
    except ValueError:
        pass  # an HTTP date or garbage: fall back to the job's own back-off
    return None


@dataclass(frozen=True)
class Delivery:
    """One verified, parsed webhook."""

    forge: str
    event_name: str
    delivery_id: str
    event: Event


@dataclass(frozen=True)
class Comment:
    id: int
    body: str
    author: str


@dataclass(frozen=True)
class PullState:
    """What the forge says of a pull request now, for commands that act on it."""

    head_sha: str
    base_ref: str
    state: Literal["open", "closed", "merged"]
    mergeable: bool | None
    approved: bool


class Forge(Protocol):
    """What the core asks of a forge. Repositories are named by their full name."""

    name: str
    comment_limit: int
    """Longest comment body, in characters."""

    def authenticated_clone_url(self, url: str, repo: str) -> str:
        """`url` with the token for `repo` added, for https only."""
    def pull_refspec(self, number: int) -> str:
        """The ref under which the forge keeps a pull request's head, forks included."""
    def bot_login(self) -> str: ...
    def default_branch(self, repo: str) -> str:
        """The repository's default branch, as the forge names it now (never as a payload does)."""
    def list_comments(self, repo: str, number: int) -> list[Comment]: ...
    def create_comment(self, repo: str, number: int, body: str) -> int: ...
    def edit_comment(self, repo: str, number: int, comment_id: int, body: str) -> None: ...
    def delete_comment(self, repo: str, number: int, comment_id: int) -> None: ...
    def set_status(self, repo: str, sha: str, context: str, state: StatusState,
                   description: str, url: str | None = None) -> None: ...
    def react(self, repo: str, number: int, comment_id: int, reaction: Reaction) -> None: ...
    def permission(self, repo: str, user: str) -> str:
        """The user's level on the repository: none|read|triage|write|maintain|admin."""
    def pull_state(self, repo: str, number: int) -> PullState: ...
    def merge(self, repo: str, number: int, sha: str, message: str) -> str:
        """Merge the pull request at `sha` (refused if the head moved); the merge commit's SHA."""
    def rate_limit_remaining(self) -> int | None:
        """Requests left in the current rate-limit window, when the forge has said."""
    def open_pulls(self, repo: Repo) -> list[PullRequest]:
        """The repository's open pull requests, at their current heads."""
    def has_status(self, repo: str, sha: str, context: str) -> bool:
        """Whether a commit carries a status (or check) named `context`, in any state."""
    def create_deployment(self, repo: str, environment: str, sha: str, ref: str, description: str) -> str:
        """Record a deployment of `sha` to `environment` on the forge, in progress; its id."""
    def update_deployment(self, repo: str, environment: str, deployment_id: str, state: DeployState,
                          description: str) -> None: ...


def with_credentials(url: str, user: str, token: str) -> str:
    """An https clone URL carrying a token; any other URL (file://, ssh) as it is."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        return url
    netloc = f"{user}:{quote(token, safe='')}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def constant_time_equal(given: str | bytes, expected: str | bytes) -> bool:
    given_b = given.encode() if isinstance(given, str) else given
    expected_b = expected.encode() if isinstance(expected, str) else expected
    return hmac.compare_digest(given_b, expected_b)


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)  # a webhook's whole cost is mostly this parse: the fast one
    except orjson.JSONDecodeError:
        raise WebhookError(400, "body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise WebhookError(400, "body is not a JSON object")
    return payload


def field(payload: Mapping[str, Any], path: str, kind: type | tuple[type, ...] = str, *,
          optional: bool = False) -> Any:
    """`payload["a"]["b"]` for path "a.b", or a 400 that names the missing or mistyped field."""
    value: Any = payload
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value or value[part] is None:
            if optional:
                return None
            raise WebhookError(400, f"payload lacks {path}")
        value = value[part]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise WebhookError(400, f"payload field {path} has the wrong type")
    return value
