"""Cached bare mirrors, and read-only snapshots of a commit or of a working directory."""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import posixpath
import re
import subprocess
import tarfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import git

from bot.renderers.errors import RenderError

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
SYMLINK_MODE = "120000"
MAX_SYMLINK_HOPS = 8


class GitError(Exception):
    """A git operation failed; the message holds no credentials."""


def _mask_urls(text: str) -> str:
    return re.sub(r"(https?://)[^@/\s]+@", r"\1***@", text)


@dataclass(frozen=True)
class Entry:
    """A file in a snapshot: its blob id (git) or content hash (working tree), and its mode."""

    blob: str
    mode: str

    @property
    def is_symlink(self) -> bool:
        return self.mode == SYMLINK_MODE


class Snapshot(Protocol):
    """A read-only view of a repository's files at one revision."""

    label: str

    def files(self, path: str = ".") -> dict[str, Entry]:
        """Every file below `path`, by repository-relative POSIX path."""

    def read(self, path: str) -> bytes: ...
    def read_optional(self, path: str) -> bytes | None: ...
    def read_many(self, paths: list[str]) -> dict[str, bytes]: ...
    def export(self, dest: Path) -> Path:
        """Write the whole tree below `dest` for renderers that need files on disk."""


def resolve_symlink(snapshot: Snapshot, path: str, entries: dict[str, Entry]) -> str:
    """Follow a symlink inside the repository; raise if it leaves it, dangles or loops."""
    current = path
    for _ in range(MAX_SYMLINK_HOPS):
        entry = entries.get(current)
        if entry is None:
            raise RenderError("symlink target does not exist in the repository", path)
        if not entry.is_symlink:
            return current
        target = snapshot.read(current).decode("utf-8", "replace")
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(current), target))
        if target.startswith("/") or joined == ".." or joined.startswith("../"):
            raise RenderError("symlink points outside the repository", path)
        current = joined
    raise RenderError("symlink chain is too long or loops", path)


class Mirror:
    """One bare mirror of a repository. Fetches happen under a file lock, so workers can share it."""

    def __init__(self, path: Path, repo: git.Repo | None = None):
        """A mirror at `path`, created bare if absent; or a view of an existing `repo`."""
        self.path = path
        if repo is None and not (path / "HEAD").exists():
            path.mkdir(parents=True, exist_ok=True)
            git.Repo.init(path, bare=True)
        self.repo = repo or git.Repo(path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.path / "gitops-bot.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def has(self, sha: str) -> bool:
        if not SHA_RE.match(sha):
            return False
        try:
            self.repo.git.cat_file("-e", f"{sha}^{{commit}}")
            return True
        except git.GitCommandError:
            return False

    def ensure(self, url: str, shas: list[str], refspecs: list[str], refresh: bool = False) -> None:
        """Fetch from `url` only when one of `shas` is missing (always, with `refresh`); then every
        one must be present."""
        if not refresh and all(self.has(sha) for sha in shas):
            return
        with self._locked():
            errors = self._fetch(url, refspecs)
            if errors:  # one missing ref fails the whole fetch: take each one that exists
                errors = [e for spec in refspecs for e in self._fetch(url, [spec])]
            missing = [sha for sha in shas if not self.has(sha)]
            if missing:  # a force-push can orphan a SHA from every ref; ask for it by name
                errors += self._fetch(url, missing)
        missing = [sha for sha in shas if not self.has(sha)]
        if missing:
            reason = f": {errors[0]}" if errors else ""
            raise GitError(f"commit {missing[0][:12]} could not be fetched{reason}")

    def _fetch(self, url: str, refspecs: list[str]) -> list[str]:
        """Fetch, returning the error (credentials masked) instead of raising."""
        try:
            self.repo.git.fetch("--quiet", "--no-tags", "--", url, *refspecs,
                                env={"GIT_TERMINAL_PROMPT": "0"})
            return []
        except git.GitCommandError as err:
            return [_mask_urls(str(err.stderr or "").strip().removeprefix("stderr: ").strip("'"))[-300:]]

    def resolve(self, ref: str) -> str:
        """The commit a local ref points at."""
        try:
            return self.repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}").strip()
        except git.GitCommandError:
            raise GitError(f"{ref} could not be fetched") from None

    def merge_base(self, a: str, b: str) -> str | None:
        try:
            return self.repo.git.merge_base(a, b).strip() or None
        except git.GitCommandError:
            return None

    def changed_paths(self, base: str, head: str) -> set[str]:
        out = self.repo.git.diff_tree("-r", "-z", "--no-renames", "--name-only", base, head)
        return {p for p in out.split("\0") if p}

    def snapshot(self, sha: str) -> "CommitSnapshot":
        return CommitSnapshot(self, sha)


class CommitSnapshot:
    """A commit's tree, read straight from the object database: no working copy."""

    def __init__(self, mirror: Mirror, sha: str):
        self.mirror, self.sha, self.label = mirror, sha, sha[:7]
        self._files: dict[str, dict[str, Entry]] = {}

    def files(self, path: str = ".") -> dict[str, Entry]:
        if path not in self._files:
            args = ["-r", "-z", self.sha]
            if path != ".":
                args += ["--", path]
            out = self.mirror.repo.git.ls_tree(*args)
            entries = {}
            for record in out.split("\0"):
                if not record:
                    continue
                meta, name = record.split("\t", 1)
                mode, kind, blob = meta.split()
                if kind == "blob":
                    entries[name] = Entry(blob, mode)
            self._files[path] = entries
        return self._files[path]

    def read(self, path: str) -> bytes:
        entry = self.files(".").get(path) or self.files(path).get(path)
        if entry is None:
            raise FileNotFoundError(path)
        return self._blob(entry.blob)

    def _blob(self, blob: str) -> bytes:
        return self.mirror.repo.odb.stream(bytes.fromhex(blob)).read()

    def read_many(self, paths: list[str]) -> dict[str, bytes]:
        entries = self.files(".")
        return {p: self._blob(entries[p].blob) for p in paths}

    def read_optional(self, path: str) -> bytes | None:
        try:
            return self.read(path)
        except FileNotFoundError:
            return None

    def export(self, dest: Path) -> Path:
        archive = subprocess.run(["git", "archive", "--format=tar", self.sha], cwd=self.mirror.path,
                                 capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            for member in tar.getmembers():
                try:
                    tarfile.data_filter(member, str(dest))
                except tarfile.FilterError:
                    raise RenderError("symlink or path leaves the repository", member.name) from None
            tar.extractall(dest, filter="data")
        return dest


class WorkTreeSnapshot:
    """A directory on disk, as `gitops-bot diff` sees an uncommitted working tree."""

    def __init__(self, root: Path):
        self.root, self.label = root.resolve(), "working tree"

    def files(self, path: str = ".") -> dict[str, Entry]:
        entries = {}
        base = self.root / path
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            for name in filenames:
                full = Path(dirpath) / name
                rel = full.relative_to(self.root).as_posix()
                if full.is_symlink():
                    entries[rel] = Entry(hashlib.sha1(os.readlink(full).encode()).hexdigest(), SYMLINK_MODE)
                else:
                    stat = full.stat()
                    entries[rel] = Entry(f"{stat.st_size}:{stat.st_mtime_ns}", "100644")
        return entries

    def read(self, path: str) -> bytes:
        full = self.root / path
        if full.is_symlink():
            return os.readlink(full).encode()
        return full.read_bytes()

    def read_many(self, paths: list[str]) -> dict[str, bytes]:
        return {p: self.read(p) for p in paths}

    def read_optional(self, path: str) -> bytes | None:
        try:
            return self.read(path)
        except FileNotFoundError:
            return None

    def export(self, dest: Path) -> Path:
        return self.root


class Mirrors:
    """Mirrors under the data dir, one per forge and repository."""

    def __init__(self, data_dir: Path):
        self.root = data_dir / "mirrors"

    def get(self, forge: str, full_name: str) -> Mirror:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", full_name.replace("/", "__"))
        return Mirror(self.root / forge / f"{safe}.git")
