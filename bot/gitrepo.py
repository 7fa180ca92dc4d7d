"""Cached bare mirrors, and read-only snapshots of a commit or of a working directory."""

from __future__ import annotations

import bisect
import fcntl
import hashlib
import os
import posixpath
import re
import shutil
import stat
import subprocess
import tarfile
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, NamedTuple, Protocol
from urllib.parse import quote

import git

from bot.renderers.errors import RenderError

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
SYMLINK_MODE = "120000"
MAX_SYMLINK_HOPS = 40  # as Linux allows
STREAM_FROM = 16
"""Reading this many blobs or more starts a `git cat-file` of its own, to stream them."""
FETCH_TIMEOUT = 300.0
"""Seconds one `git fetch` may take before it is killed; it holds the mirror's lock meanwhile."""
LOW_SPEED_SECONDS = 30
"""Seconds an https fetch may move less than a kilobyte per second before git gives up on it."""
MAX_MIRROR_NAME = 200
_LS_TREE_BLOB = re.compile(r"(\d+) blob ([0-9a-f]+)\t([^\0]*)\0")
_LS_TREE_SYMLINK = re.compile(SYMLINK_MODE + r" blob [0-9a-f]+\t([^\0]*)\0")


class GitError(Exception):
    """A git operation failed; the message holds no credentials."""


def _mask_urls(text: str) -> str:
    return re.sub(r"(https?://)[^@/\s]+@", r"\1***@", text)


class Entry(NamedTuple):
    """A file in a snapshot: its blob id (empty in a working tree) and its mode."""

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

    def entries(self, paths: Iterable[str]) -> dict[str, Entry]:
        """Those of `paths` that are files, found without listing anything else."""

    def symlinks(self, path: str = ".") -> list[str]:
        """Every symlink below `path`."""

    def read(self, path: str) -> bytes:
        """A file's bytes; for a symlink, its target."""

    def read_many(self, paths: Iterable[str], max_bytes: int | None = None) -> dict[str, bytes]:
        """Files' bytes by path; one larger than `max_bytes` raises RenderError before it is read."""

    def read_optional(self, path: str) -> bytes | None:
        try:
            return self.read(path)
        except FileNotFoundError:
            return None

    def tree_id(self) -> str | None:
        """The id of the snapshot's tree in git, which names its content; None for a working tree."""

    def export_tree(self, dest: Path) -> "ExportedTree":
        """Write the whole tree below `dest` for renderers that need files on disk; a symlink or
        path that leaves the repository is left out, and listed."""

    def export(self, dest: Path, reads: set[str] | None = None) -> Path:
        """Write the tree below `dest` for renderers that need files on disk.

        A symlink or path that leaves the repository is refused when it lies under one of `reads`
        (what the render reads; all of the tree when None) or leads to one, and is left out
        otherwise: a link elsewhere in the repository must not break this render.
        """
        tree = self.export_tree(dest)
        tree.check(reads)
        return tree.root


class ExportedTree(NamedTuple):
    """A snapshot's tree on disk, which the renders of one job share."""

    root: Path
    left_out: tuple[str, ...] = ()
    """Members not written because they leave the repository (absolute or `..` symlinks)."""

    def check(self, reads: set[str] | None) -> None:
        """Refuse a left-out member under one of `reads` or leading to one (any, when None): the
        render would miss it. One elsewhere in the repository does not concern the render."""
        for path in self.left_out:
            _refuse_if_read(path, reads)


def under(path: str, root: str) -> bool:
    """Whether `path` is `root` or lies below it."""
    return root == "." or path == root or path.startswith(root.rstrip("/") + "/")


def join(directory: str, name: str) -> str:
    """`name` in `directory`, where `.` is the repository's root."""
    return name if directory == "." else f"{directory}/{name}"


class RepoPaths:
    """A snapshot's paths as the operating system would see them on disk: symlinks followed one
    component at a time, and never out of the repository."""

    _shared: "weakref.WeakKeyDictionary[Snapshot, RepoPaths]" = weakref.WeakKeyDictionary()
    _sharing = threading.Lock()

    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot
        self.files = snapshot.files(".")
        self._targets: dict[str, str] = {}
        self.checked: dict[str, Any] = {}
        """What checks of this tree found, by what they checked (a tree never changes): the
        overlays of one base read and check it once."""
        self._sorted: list[str] | None = None
        self.dirs = {"."}
        for path in self.files:
            parent = path.rpartition("/")[0]
            while parent and parent not in self.dirs:
                self.dirs.add(parent)
                parent = parent.rpartition("/")[0]

    @classmethod
    def of(cls, snapshot: Snapshot) -> "RepoPaths":
        """The snapshot's paths, made once for every caller while the snapshot lives."""
        with cls._sharing:
            paths = cls._shared.get(snapshot)
        if paths is None:  # two threads may both make it: the same, and cheap next to a render
            paths = cls(snapshot)
            with cls._sharing:
                paths = cls._shared.setdefault(snapshot, paths)
        return paths

    def resolve(self, path: str, via: set[str] | None = None) -> str | None:
        """`path` with every symlink in it followed; None if it leaves the repository or loops.

        The symlinks followed are added to `via`: the result depends on them too.
        """
        if path.startswith("/") or "\0" in path:
            return None
        pending, resolved, hops = path.split("/")[::-1], list[str](), 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    return None
                resolved.pop()
                continue
            resolved.append(part)
            entry = self.files.get("/".join(resolved))
            if entry is not None and entry.is_symlink:
                hops += 1
                if via is not None:
                    via.add("/".join(resolved))
                target = self._target("/".join(resolved))
                if hops > MAX_SYMLINK_HOPS or target.startswith("/"):
                    return None
                resolved.pop()  # the target is relative to the symlink's directory
                pending.extend(target.split("/")[::-1])
        return "/".join(resolved) or "."

    def below(self, path: str) -> list[str]:
        """The files at or below `path` (no symlink in it is followed), in order."""
        if self._sorted is None:
            self._sorted = sorted(self.files)
        if path == ".":
            return self._sorted
        # Below `path` is "path/..." and nothing else: "path-x" and "path.x" sort between them.
        start = bisect.bisect_left(self._sorted, path + "/")
        end = bisect.bisect_left(self._sorted, path + "0", start)  # "0" follows "/"
        return [path, *self._sorted[start:end]] if path in self.files else self._sorted[start:end]

    def _target(self, link: str) -> str:
        if link not in self._targets:
            self._targets[link] = self.snapshot.read(link).decode("utf-8", "replace")
        return self._targets[link]

    def kind(self, resolved: str) -> str | None:
        """`file`, `dir`, or None for a path that does not exist; `resolved` has no symlinks."""
        return "file" if resolved in self.files else "dir" if resolved in self.dirs else None

    def read(self, resolved: str, max_bytes: int | None = None) -> bytes:
        return self.snapshot.read_many([resolved], max_bytes)[resolved]


class Mirror:
    """One bare mirror of a repository. Fetches happen under a file lock, so workers can share it."""

    def __init__(self, path: Path, repo: git.Repo | None = None, fetch_timeout: float = FETCH_TIMEOUT):
        """A mirror at `path`, created bare if absent; or a view of an existing `repo`."""
        self.path, self.fetch_timeout = path, fetch_timeout
        if repo is None and not (path / "HEAD").exists():
            path.mkdir(parents=True, exist_ok=True)
            git.Repo.init(path, bare=True)
        self.repo = repo or git.Repo(path)
        self._odb_lock = threading.Lock()

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
        """Fetch, returning the error (credentials masked) instead of raising; a fetch that runs out of
        time raises at once, as the next would only wait as long."""
        started = time.monotonic()
        try:
            self.repo.git.fetch("--quiet", "--no-tags", "--", url, *refspecs, kill_after_timeout=self.fetch_timeout,
                                env={"GIT_TERMINAL_PROMPT": "0", "GIT_HTTP_LOW_SPEED_LIMIT": "1000",
                                     "GIT_HTTP_LOW_SPEED_TIME": str(LOW_SPEED_SECONDS)})
            return []
        except git.GitCommandError as err:
            if time.monotonic() - started >= self.fetch_timeout:
                raise GitError(f"git fetch took longer than {self.fetch_timeout:g} s and was stopped") from None
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

    def is_ancestor(self, sha: str, of: str) -> bool:
        """Whether `sha` is `of` or lies in its history."""
        try:
            self.repo.git.merge_base("--is-ancestor", sha, of)
            return True
        except git.GitCommandError:
            return False

    def changed_paths(self, base: str, head: str) -> set[str]:
        out = self.repo.git.diff_tree("-r", "-z", "--no-renames", "--name-only", base, head)
        return {p for p in out.split("\0") if p}

    def snapshot(self, sha: str) -> "CommitSnapshot":
        return CommitSnapshot(self, sha)

    def read_blobs(self, blobs: list[tuple[str, str]], max_bytes: int | None = None) -> list[bytes]:
        """The contents of (path, blob id) pairs. A blob larger than `max_bytes` raises RenderError
        naming its path before it is read."""
        if len(blobs) >= STREAM_FROM:
            return self._stream_blobs(blobs, max_bytes)
        contents = []
        # GitPython's long-lived `git cat-file` processes answer one caller at a time.
        with self._odb_lock:
            for path, blob in blobs:
                try:
                    size = self.repo.odb.info(bytes.fromhex(blob)).size
                    if max_bytes is not None and size > max_bytes:
                        raise RenderError.too_large(size, max_bytes, path)
                    contents.append(self.repo.odb.stream(bytes.fromhex(blob)).read())
                except ValueError:
                    raise GitError(f"object {blob[:12]} for {path} is missing from the repository") from None
        return contents

    def _stream_blobs(self, blobs: list[tuple[str, str]], max_bytes: int | None) -> list[bytes]:
        """Many blobs through one `git cat-file --batch` of their own, without a round trip each."""
        proc = subprocess.Popen(["git", "cat-file", "--batch"], cwd=self.path, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdin and proc.stdout
        request = "".join(f"{blob}\n" for _, blob in blobs).encode()
        # A second thread writes: git stops reading requests while its answers are not read.
        feeder = threading.Thread(target=_write_and_close, args=(proc.stdin, request), daemon=True)
        feeder.start()
        contents = []
        try:
            for path, blob in blobs:
                header = proc.stdout.readline().split()
                if len(header) != 3:
                    raise GitError(f"object {blob[:12]} for {path} is missing from the repository")
                size = int(header[2])
                if max_bytes is not None and size > max_bytes:
                    raise RenderError.too_large(size, max_bytes, path)
                contents.append(proc.stdout.read(size))
                proc.stdout.read(1)  # the newline after each object
        finally:
            if len(contents) < len(blobs):
                proc.kill()
            proc.stdout.close()
            proc.wait()
            feeder.join()
        return contents


def _write_and_close(pipe: IO[bytes], data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except (BrokenPipeError, ValueError):  # the reader gave up and killed git
        pass


class CommitSnapshot(Snapshot):
    """A commit's tree, read straight from the object database: no working copy."""

    def __init__(self, mirror: Mirror, sha: str):
        self.mirror, self.sha, self.label = mirror, sha, sha[:7]
        self._tree: str | None = None
        self._listed: dict[str, dict[str, Entry]] = {}
        self._looked_up: dict[str, Entry | None] = {}
        self._symlinks: dict[str, list[str]] = {}

    def files(self, path: str = ".") -> dict[str, Entry]:
        if path not in self._listed:
            everything = self._listed.get(".")
            self._listed[path] = (self._ls_tree("-r", *(["--", path] if path != "." else []))
                                  if everything is None else
                                  {p: e for p, e in everything.items() if under(p, path)})
        return self._listed[path]

    def entries(self, paths: Iterable[str]) -> dict[str, Entry]:
        paths = list(paths)
        everything = self._listed.get(".")
        if everything is not None:
            return {p: everything[p] for p in paths if p in everything}
        unknown = list(dict.fromkeys(p for p in paths if p not in self._looked_up))
        for start in range(0, len(unknown), 1000):  # keep each command line short
            chunk = unknown[start:start + 1000]
            found = self._ls_tree("--", *chunk)
            self._looked_up.update((p, found.get(p)) for p in chunk)
        return {p: e for p in paths if (e := self._looked_up.get(p)) is not None}

    def symlinks(self, path: str = ".") -> list[str]:
        if path in self._listed or "." in self._listed:
            return [p for p, e in self.files(path).items() if e.is_symlink]
        if path not in self._symlinks:  # without building every entry: a big tree has few symlinks
            listing = self._git_ls_tree("-r", *(["--", path] if path != "." else []))
            self._symlinks[path] = _LS_TREE_SYMLINK.findall(listing)
        return self._symlinks[path]

    def _ls_tree(self, *args: str) -> dict[str, Entry]:
        return {name: Entry(blob, mode) for mode, blob, name in _LS_TREE_BLOB.findall(self._git_ls_tree(*args))}

    def _git_ls_tree(self, *args: str) -> str:
        # Literal pathspecs: a path with `*` or `:(` in it names that path, nothing more.
        return self.mirror.repo.git.ls_tree("-z", self.sha, *args, env={"GIT_LITERAL_PATHSPECS": "1"})

    def read(self, path: str) -> bytes:
        return self.read_many([path])[path]

    def read_many(self, paths: Iterable[str], max_bytes: int | None = None) -> dict[str, bytes]:
        paths = list(dict.fromkeys(paths))
        entries = self.entries(paths)
        for path in paths:
            if path not in entries:
                raise FileNotFoundError(path)
        return dict(zip(paths, self.mirror.read_blobs([(p, entries[p].blob) for p in paths], max_bytes)))

    def tree_id(self) -> str:
        if self._tree is None:
            self._tree = self.mirror.repo.git.rev_parse(f"{self.sha}^{{tree}}")
        return self._tree

    def export_tree(self, dest: Path) -> ExportedTree:
        """The commit's tree, streamed from `git archive` and written one member at a time, so that
        no more than one read of it is ever held in memory."""
        left_out: list[str] = []
        broken = False
        with subprocess.Popen(["git", "archive", "--format=tar", self.sha], cwd=self.mirror.path,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as archive:
            assert archive.stdout
            try:
                with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
                    for member in tar:
                        try:  # the filter looks at what is on disk by now: links written before count
                            tar.extract(member, dest, filter="data")
                        except tarfile.FilterError:
                            left_out.append(member.name)
            except tarfile.TarError:  # a broken stream: git failed or was cut short
                archive.kill()
                broken = True
        if broken or archive.returncode != 0:
            raise GitError(f"commit {self.sha[:12]} could not be exported from the repository")
        return ExportedTree(dest, tuple(left_out))


class WorkTreeSnapshot(Snapshot):
    """A directory on disk, as `gitops-bot diff` sees an uncommitted working tree.

    With `repo`, its files are those `git add --all` would commit: ignored files are left out,
    as they never reach the bot. Like git, it lists a symlink as a file and never follows it.
    """

    def __init__(self, root: Path, repo: git.Repo | None = None):
        self.root, self.label, self.repo = root.resolve(), "working tree", repo
        self._files: dict[str, Entry] | None = None
        self._real_dirs: dict[str, bool] = {}

    def files(self, path: str = ".") -> dict[str, Entry]:
        if self._files is None:
            names = (self.repo.git.ls_files("-z", "--cached", "--others", "--exclude-standard").split("\0")
                     if self.repo is not None else self._walk())
            self._files = {name: entry for name in names if name and (entry := self._entry(name))}
        return self._files if path == "." else {p: e for p, e in self._files.items() if under(p, path)}

    def _real_directory(self, directory: str) -> bool:
        """Whether no symlink leads into `directory`: git may still list files a symlink now hides."""
        if directory not in self._real_dirs:
            self._real_dirs[directory] = os.path.realpath(self.root / directory) == str(self.root / directory)
        return self._real_dirs[directory]

    def changed_since(self, sha: str) -> set[str] | None:
        """The paths that differ from commit `sha`, or None without a repository to ask."""
        if self.repo is None:
            return None
        tracked = self.repo.git.diff("-z", "--name-only", "--no-renames", sha, "--")
        new = self.repo.git.ls_files("-z", "--others", "--exclude-standard")
        return {p for p in f"{tracked}\0{new}".split("\0") if p}

    def _walk(self) -> Iterator[str]:
        pending = [self.root]
        while pending:
            with os.scandir(pending.pop()) as scan:
                for item in scan:
                    if item.is_dir(follow_symlinks=False):
                        if item.name != ".git":
                            pending.append(Path(item.path))
                    else:
                        yield Path(item.path).relative_to(self.root).as_posix()

    def _entry(self, name: str) -> Entry | None:
        """Regular files and symlinks; anything else (a FIFO could block a read forever) is not a file."""
        try:
            mode = (self.root / name).lstat().st_mode
        except OSError:  # listed by git, deleted since
            return None
        if "/" in name and not self._real_directory(name.rpartition("/")[0]):
            return None
        return Entry("", SYMLINK_MODE) if stat.S_ISLNK(mode) else Entry("", "100644") if stat.S_ISREG(mode) else None

    def entries(self, paths: Iterable[str]) -> dict[str, Entry]:
        files = self.files(".")
        return {p: files[p] for p in paths if p in files}

    def symlinks(self, path: str = ".") -> list[str]:
        return [p for p, e in self.files(path).items() if e.is_symlink]

    def read(self, path: str) -> bytes:
        return self.read_many([path])[path]

    def read_many(self, paths: Iterable[str], max_bytes: int | None = None) -> dict[str, bytes]:
        files, contents = self.files("."), {}
        for path in paths:
            if path not in files:
                raise FileNotFoundError(path)
            full = self.root / path
            if files[path].is_symlink:
                contents[path] = os.readlink(full).encode()
                continue
            size = full.stat().st_size
            if max_bytes is not None and size > max_bytes:
                raise RenderError.too_large(size, max_bytes, path)
            contents[path] = full.read_bytes()
        return contents

    def export_tree(self, dest: Path) -> ExportedTree:
        """A copy of the files git would commit: no `.git`, no ignored file (a local `.env`)."""
        left_out = []
        for path, entry in self.files(".").items():
            target = dest / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if not entry.is_symlink:
                shutil.copyfile(self.root / path, target)
                continue
            link = os.readlink(self.root / path)
            inside = posixpath.normpath(posixpath.join(posixpath.dirname(path), link))
            if link.startswith("/") or inside == ".." or inside.startswith("../"):
                left_out.append(path)
            else:
                target.symlink_to(link)
        return ExportedTree(dest, tuple(left_out))


def _refuse_if_read(path: str, reads: set[str] | None) -> None:
    """Refuse a member of the tree that leaves the repository, if the render reads it."""
    if reads is None or any(under(path, r) or under(r, path) for r in reads):
        raise RenderError("symlink or path leaves the repository", path)


class Mirrors:
    """Mirrors under the data dir, one per forge and repository."""

    def __init__(self, data_dir: Path, fetch_timeout: float = FETCH_TIMEOUT):
        self.root, self.fetch_timeout = data_dir / "mirrors", fetch_timeout

    def get(self, forge: str, full_name: str) -> Mirror:
        return Mirror(self.root / forge / f"{mirror_name(full_name)}.git", fetch_timeout=self.fetch_timeout)


def mirror_name(full_name: str) -> str:
    """A file name for a repository's mirror. Percent-encoding is injective, so two repositories never
    share a mirror (`grp/sub/app`, `grp__sub/app`, `grp/sub__app`); a long name is cut and hashed."""
    name = quote(full_name, safe="")
    if len(name) > MAX_MIRROR_NAME:
        name = f"{name[:MAX_MIRROR_NAME - 65]}-{hashlib.sha256(full_name.encode()).hexdigest()}"
    return name
