"""The one small interface every forge adapter implements, and what webhook parsing returns."""

from __future__ import annotations

import functools
import hmac
import math
import threading
import time
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Generic, Hashable, Iterable, Literal, Mapping, Protocol, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import orjson

from bot.config import PERMISSION_LEVELS
from bot.errors import PermanentError, TemporaryError
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


class ApiErrors:
    """Forge API errors this process met and metrics have not taken yet, by (forge, kind, status).

    `kind` is `transient` (retried: a 5xx, a rate limit, no answer) or `refused` (any other error
    answer); `status` is the HTTP status, or `none` when no answer came. Every error is counted where
    the adapters call the API, whether a job then fails, retries or carries on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = {}

    def add(self, forge: str, kind: str, status: int | None) -> None:
        key = (forge, kind, str(status) if status is not None else "none")
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def take(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            counts, self._counts = self._counts, {}
        return counts


API_ERRORS = ApiErrors()
"""The process's tally; `bot.metrics.measured` moves it into the fleet metrics after each job."""


class MergeRefused(Exception):
    """The forge would not merge: not mergeable, the head moved, a draft, protected rules."""


class CloneURLRefused(PermanentError):
    """A clone URL the bot will not fetch from: on a host that is not the forge's, or local where the
    server config does not allow local URLs. The message says which, and never holds a token."""


def retry_after(headers: Mapping[str, str] | None, now: float) -> float | None:
    """Seconds to wait, from `Retry-After` (seconds or an HTTP date) or, with no requests left, the
    rate limit's reset time (GitHub's `X-RateLimit-*`, GitLab's `RateLimit-*` headers)."""
    lower = {k.lower(): v for k, v in (headers or {}).items()}
    if "retry-after" in lower:
        return _seconds_from(lower["retry-after"], now)
    for prefix in ("x-ratelimit-", "ratelimit-"):
        if lower.get(f"{prefix}remaining", "").strip() == "0" and f"{prefix}reset" in lower:
            reset = _finite(lower[f"{prefix}reset"])
            return None if reset is None else max(reset - now, 0.0)
    return None


def _seconds_from(value: str, now: float) -> float | None:
    """A `Retry-After` value: delay seconds, or an HTTP date; None for garbage (the job's own back-off applies)."""
    seconds = _finite(value)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT, and the obsolete forms name no zone
        when = when.replace(tzinfo=timezone.utc)
    return max(when.timestamp() - now, 0.0)


def _finite(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class Delivery:
    """One verified, parsed webhook."""

    forge: str
    event_name: str
    delivery_id: str
    event: Event


@dataclass(frozen=True)
class Comment:
    """A comment on a pull request, as the forge's API tells it (never as a payload does)."""

    id: int
    body: str
    author: str
    author_is_bot: bool = False
    """A bot account (GitHub: a user of type Bot; GitLab: a user whose `bot` is true)."""
    created_at: float = 0.0
    """Unix time the comment was made; 0 where a listing does not say."""


@dataclass(frozen=True)
class PullState:
    """What the forge says of a pull request now, for commands that act on it."""

    head_sha: str
    base_ref: str
    state: Literal["open", "closed", "merged"]
    mergeable: bool | None
    approved: bool
    """Someone with write permission or above approved the current head, and no one of them asks for changes."""
    approval_note: str = ""
    """When it is not approved: the reviews that did not count, and why, in words for a reply."""
    author: str = ""
    """Who opened it."""
    fork: bool = False
    """Its head is in another repository (a fork), or in one the forge no longer shows."""


APPROVER_LEVEL = "write"
"""The least permission whose approval counts for `require: [approved]`: who could merge it by hand."""


@dataclass(frozen=True)
class Review:
    """One reviewer's standing verdict on a pull request: their latest approval or request for changes."""

    user: str
    approves: bool
    """False: the reviewer requests changes."""
    on_head: bool | None
    """Given on the current head (GitLab: after it was pushed); None when the forge does not say."""
    level: str
    """The reviewer's permission on the repository: none|read|triage|write|maintain|admin."""


def approval(reviews: Iterable[Review]) -> tuple[bool, str]:
    """Whether reviews approve the current head, and when they do not, why, naming the reviewers.

    Only reviewers with `APPROVER_LEVEL` or above count: one of them must approve the current head and
    none of them may request changes, whatever head they reviewed.
    """
    reviews = list(reviews)
    counted = [r for r in reviews if _at_least(r.level, APPROVER_LEVEL)]
    blocking = [r for r in counted if not r.approves]
    if blocking:
        return False, f"{_who(blocking)} {'asks' if len(blocking) == 1 else 'ask'} for changes"
    if any(r.approves and r.on_head for r in counted):
        return True, ""
    reasons = [f"{_who([r])} has {r.level} permission, below {APPROVER_LEVEL}"
               for r in reviews if r.approves and r not in counted]
    reasons += [f"{_who([r])} approved an older head" for r in counted if r.on_head is False]
    reasons += [f"the forge does not say when {_who([r])} approved" for r in counted if r.on_head is None]
    return False, "; ".join(reasons)


def _at_least(level: str, least: str) -> bool:
    rank = {name: index for index, name in enumerate(PERMISSION_LEVELS)}
    return rank.get(level, 0) >= rank[least]


def _who(reviews: list[Review]) -> str:
    return ", ".join(f"@{r.user}" for r in reviews)


class Forge(Protocol):
    """What the core asks of a forge. Repositories are named by their full name."""

    name: str
    comment_limit: int
    """Longest comment body, in characters."""

    web_url: str
    """Where the forge serves repositories: clone URLs are built from it."""

    def clone_url(self, repo: Repo, *, allow_local: bool) -> str:
        """Where to fetch `repo` from, with the token for https: the forge's own URL for the repository's
        path, never the payload's. The payload's URL must be on the forge's host; a local one (file://, a
        path) is used as it is, with no token, only when `allow_local`. Raises `CloneURLRefused`."""
    def pull_refspec(self, number: int) -> str:
        """The ref under which the forge keeps a pull request's head, forks included."""
    def bot_login(self) -> str:
        """The bot's own account: its comments are the only ones it edits, deletes or takes as its own."""
    def default_branch(self, repo: str) -> str:
        """The repository's default branch, as the forge names it now (never as a payload does); read at
        most once per `DEFAULT_BRANCH_TTL` per process."""
    def comment(self, repo: str, number: int, comment_id: int) -> Comment | None:
        """A comment on pull request `number`, read from the API; None when there is no such comment on
        that pull request (another's, a deleted one, a GitLab system note)."""
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


DEFAULT_BRANCH_TTL = 60.0
"""Seconds a repository's default branch, once read from the forge, is reused by a process: the jobs of
one burst share one read, and a renamed default branch is seen within this time."""

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ShortCache(Generic[K, V]):
    """Values read from a forge, reused for `ttl` seconds by this process only."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic):
        self.ttl, self.clock = ttl, clock
        self._values: dict[K, tuple[float, V]] = {}
        self._lock = threading.Lock()

    def get(self, key: K, read: Callable[[], V]) -> V:
        with self._lock:
            kept = self._values.get(key)
        if kept is not None and self.clock() < kept[0]:
            return kept[1]
        value = read()  # outside the lock: a slow forge must not hold up other keys
        with self._lock:
            self._values[key] = (self.clock() + self.ttl, value)
        return value


def is_local_url(url: str) -> bool:
    """A `file://` URL or a path, as git reads them (`host:path` is ssh, `ext::...` a transport)."""
    if "://" in url:
        return urlsplit(url).scheme.lower() == "file"
    return bool(url) and ":" not in url.split("/", 1)[0]


_DEFAULT_PORTS = {"https": 443, "http": 80}


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, the default port filled in; None for anything else."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        return scheme, parts.hostname, parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:  # a port that is not a number
        return None


def _shown(origin: tuple[str, str, int] | None) -> str:
    if origin is None:
        return "no http(s) host"
    scheme, host, port = origin
    return f"{scheme}://{host}" + ("" if port == _DEFAULT_PORTS[scheme] else f":{port}")


@functools.lru_cache(maxsize=1024)
def clone_url_refusal(url: str, web_url: str, allow_local: bool) -> str | None:
    """Why the bot will not fetch from the clone URL a payload names, or None when it will.

    Pure, so the web app refuses such a delivery at once and every job checks again before it fetches;
    and kept per URL, as deliveries from one repository keep coming (parsing two URLs is a tenth of
    planning one). The reason names hosts only: a URL's user and password never reach a reply or a log.
    """
    if is_local_url(url):
        return None if allow_local else ("its clone URL is local, and the server config does not allow local "
                                         "URLs (git: {allow_local_urls: true})")
    given, forge = _origin(url), _origin(web_url)
    if given is None or given != forge:
        return f"its clone URL is on {_shown(given)}, not on the forge, {_shown(forge)}"
    return None


def forge_clone_url(repo: Repo, web_url: str, allow_local: bool, user: str, token: Callable[[], str]) -> str:
    """`Forge.clone_url` for every adapter: `user` and `token()` are its credentials, asked for only when
    the URL carries them."""
    refusal = clone_url_refusal(repo.clone_url, web_url, allow_local)
    if refusal:
        raise CloneURLRefused(f"{repo.full_name} is not fetched: {refusal}")
    if is_local_url(repo.clone_url):
        return repo.clone_url
    url = f"{web_url.rstrip('/')}/{quote(repo.full_name, safe='/')}.git"
    return with_credentials(url, user, token()) if url.startswith("https:") else url


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
        value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            if optional:
                return None
            raise WebhookError(400, f"payload lacks {path}")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise WebhookError(400, f"payload field {path} has the wrong type")
    return value
