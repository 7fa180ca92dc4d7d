"""Forge-neutral webhook events: what happened, with nothing of the forge's payload shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ZERO_SHA = "0" * 40


@dataclass(frozen=True)
class Repo:
    """A repository as the forge names it; `full_name` is `owner/name` or a GitLab `group/sub/name`."""

    forge: str
    full_name: str
    clone_url: str
    default_branch: str
    web_url: str = ""


@dataclass(frozen=True)
class PullRequest:
    """A pull request (GitHub) or merge request (GitLab) at one head."""

    repo: Repo
    number: int
    title: str
    author: str
    base_ref: str
    base_sha: str
    head_ref: str
    head_sha: str
    head_clone_url: str
    draft: bool = False
    web_url: str = ""

    @property
    def is_fork(self) -> bool:
        return self.head_clone_url != self.repo.clone_url


PullAction = Literal["opened", "updated", "retargeted", "merged", "closed", "other"]


@dataclass(frozen=True)
class PullRequestEvent:
    action: PullAction
    pull: PullRequest
    sender: str
    merge_sha: str | None = None
    detail: str = ""
    """The forge's own name for the action, for the reasons the bot gives."""


@dataclass(frozen=True)
class CommentEvent:
    """A comment on a pull request, or on a plain issue (`on_pull_request` False)."""

    repo: Repo
    number: int
    comment_id: int
    body: str
    author: str
    action: Literal["created", "edited", "deleted"]
    on_pull_request: bool
    author_is_bot: bool = False


@dataclass(frozen=True)
class PushEvent:
    repo: Repo
    ref: str
    before: str
    after: str
    pusher: str

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") else None

    @property
    def created(self) -> bool:
        return self.before == ZERO_SHA

    @property
    def deleted(self) -> bool:
        return self.after == ZERO_SHA


@dataclass(frozen=True)
class Ping:
    repo: Repo | None
    zen: str = ""


@dataclass(frozen=True)
class Unsupported:
    """An event the bot does not act on, with the reason it gives back."""

    reason: str
    repo: Repo | None = None


Event = PullRequestEvent | CommentEvent | PushEvent | Ping | Unsupported


def event_repo(event: Event) -> Repo | None:
    """The repository an event concerns, when it names one."""
    return event.pull.repo if isinstance(event, PullRequestEvent) else event.repo


def to_plain(value: Any) -> Any:
    """A dataclass as plain JSON-able values, for RQ job arguments.

    Unlike `dataclasses.asdict` it copies nothing it need not: the web process calls it per delivery,
    on every field, so it looks at the value's type as `is_dataclass` does, without its other steps.
    """
    if hasattr(type(value), "__dataclass_fields__"):
        return {name: to_plain(field) for name, field in vars(value).items()}
    return value


def repo_from_plain(data: dict[str, Any]) -> Repo:
    return Repo(**data)


def pull_from_plain(data: dict[str, Any]) -> PullRequest:
    return PullRequest(**{**data, "repo": repo_from_plain(data["repo"])})
