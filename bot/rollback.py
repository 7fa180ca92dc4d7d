"""Rollback commits: an environment's path restored as it was at an earlier commit, built with git
plumbing in a temporary index (no working copy) and pushed as an ordinary, never forced, push."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bot.config import Environment
from bot.gitrepo import GitError, Mirror
from bot.logs import Masker

_HEX = re.compile(r"[0-9a-fA-F]{4,40}")
_MASK = Masker()


class RollbackError(Exception):
    """The rollback was not made or not pushed; the message says why, with no credentials in it."""


@dataclass(frozen=True)
class Identity:
    """Who the commit is by: the bot, so the branch's history says a rollback was made, not by whom by hand."""

    name: str
    email: str


@dataclass(frozen=True)
class Restored:
    target: str
    """The commit whose version of the path was restored."""
    commit: str | None
    """The new commit on the branch; None when the branch already had that version."""


def roll_back(mirror: Mirror, url: str, env: Environment, target: str, identity: Identity, note: str) -> Restored:
    """Commit, on the environment's branch, its path as it was at `target` (a SHA, possibly short, from
    the branch's history), and push it to `url`. The push fails cleanly if the branch moved meanwhile."""
    branch, ref = env.branch, f"refs/heads/{env.branch}"
    try:
        mirror.ensure(url, [], [f"+{ref}:{ref}"], refresh=True)
        head = mirror.resolve(ref)
    except GitError as err:
        raise RollbackError(str(err)) from None
    full = _resolve(mirror, target)
    if full is None or mirror.merge_base(full, head) != full:
        raise RollbackError(f"`{target}` is not a commit in the history of `{branch}`")
    with tempfile.TemporaryDirectory(prefix="gitops-bot-rollback-") as scratch:
        git = _Git(mirror.path, Path(scratch), identity)
        tree = git.restored_tree(head, full, env.path)
        if tree == git.run("rev-parse", f"{head}^{{tree}}"):
            return Restored(full, None)
        message = f"Roll back {env.name} to {full[:12]}\n\nRestores {env.path} as it was at {full}.\n{note}\n"
        commit = git.run("commit-tree", tree, "-p", head, "-F", "-", stdin=message)
        git.push(url, commit, branch)
    return Restored(full, commit)


def _resolve(mirror: Mirror, rev: str) -> str | None:
    """The full SHA of a hex SHA or prefix; None for anything else, or an unknown or ambiguous one."""
    if not _HEX.fullmatch(rev):
        return None
    done = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev.lower()}^{{commit}}"],
                          cwd=mirror.path, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


class _Git:
    """Git in the mirror, with an index and an (empty) work tree of its own, so concurrent jobs never meet."""

    def __init__(self, mirror: Path, scratch: Path, identity: Identity):
        (scratch / "worktree").mkdir()
        self.cwd = mirror
        self.env = {**os.environ, "GIT_DIR": str(mirror), "GIT_INDEX_FILE": str(scratch / "index"),
                    "GIT_WORK_TREE": str(scratch / "worktree"), "GIT_LITERAL_PATHSPECS": "1",
                    "GIT_TERMINAL_PROMPT": "0", "GIT_AUTHOR_NAME": identity.name,
                    "GIT_AUTHOR_EMAIL": identity.email, "GIT_COMMITTER_NAME": identity.name,
                    "GIT_COMMITTER_EMAIL": identity.email}

    def run(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(["git", *args], cwd=self.cwd, env=self.env, input=stdin, capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise RollbackError(f"git {args[0]} failed: {_MASK(done.stderr.strip())[-300:]}")
        return done.stdout.strip()

    def restored_tree(self, head: str, target: str, path: str) -> str:
        """`head`'s tree with `path` replaced by its version at `target`, or removed if absent there."""
        if path == ".":
            return self.run("rev-parse", f"{target}^{{tree}}")
        self.run("read-tree", head)
        self.run("rm", "-r", "--cached", "--quiet", "--ignore-unmatch", "--", path)
        entry = self.run("ls-tree", "-z", target, "--", path).rstrip("\0")
        if entry:
            mode, kind, oid = entry.split("\t", 1)[0].split()
            if kind == "tree":
                self.run("read-tree", f"--prefix={path}/", oid)
            else:
                self.run("update-index", "--add", "--cacheinfo", f"{mode},{oid},{path}")
        return self.run("write-tree")

    def push(self, url: str, commit: str, branch: str) -> None:
        done = subprocess.run(["git", "push", "--porcelain", url, f"{commit}:refs/heads/{branch}"], cwd=self.cwd,
                              env=self.env, capture_output=True, text=True)
        if done.returncode == 0:
            return
        output = _MASK(f"{done.stdout}\n{done.stderr}")
        if "non-fast-forward" in output or "fetch first" in output:
            raise RollbackError(f"`{branch}` moved on while the rollback was being made, so nothing was pushed; "
                                "try again")
        raise RollbackError(f"the push to `{branch}` failed: {' '.join(output.split())[-300:]}")
