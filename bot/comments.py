"""Keep a pull request's sticky comment (one or more parts) in step with the newest report."""

from __future__ import annotations

from bot.forges.base import Comment, Forge


def sync_comments(forge: Forge, repo: str, number: int, marker: str, bodies: list[str]) -> list[int]:
    """Edit the existing parts in place, create missing ones, delete surplus ones.

    Parts are the bot's own comments whose first line is exactly `marker`, oldest first, so part N
    stays the Nth comment and the thread does not reshuffle. Anyone else's comment with the marker is
    no part: it is never edited, deleted or read as the diff.
    """
    existing = own_comments(forge, repo, number, marker)
    ids = []
    for index, body in enumerate(bodies):
        if index < len(existing):
            comment = existing[index]
            if comment.body != body:
                forge.edit_comment(repo, number, comment.id, body)
            ids.append(comment.id)
        else:
            ids.append(forge.create_comment(repo, number, body))
    for surplus in existing[len(bodies):]:
        forge.delete_comment(repo, number, surplus.id)
    return ids


def own_comments(forge: Forge, repo: str, number: int, marker: str) -> list[Comment]:
    """The bot's comments on a pull request whose first line is `marker`, oldest first."""
    login = forge.bot_login().lower()
    return sorted((c for c in forge.list_comments(repo, number)
                   if c.author.lower() == login and c.body.split("\n", 1)[0].strip() == marker),
                  key=lambda c: c.id)
