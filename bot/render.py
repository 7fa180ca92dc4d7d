"""Turn an environment's path at one snapshot into manifests: plain YAML, Kustomize or Helm."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import posixpath
import shutil
import tempfile
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from bot.config import Environment
from bot.gitrepo import ExportedTree, RepoPaths, Snapshot, WorkTreeSnapshot, join, under
from bot.renderers.errors import RenderError
from bot.renderers.kustomize import (KUSTOMIZATION_FILES, Origins, kustomization_inputs, prepare_build,
                                     take_origin)
from bot.yamlio import DEFAULT_LIMITS, Limits, parse_documents

if TYPE_CHECKING:
    from bot.render_cache import RenderCache

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
MAX_CONCURRENT_RENDERS = 8
"""The most renders one job runs at once, however many cores the machine shows: each may take the
renderer box's memory cap (sandbox.MEMORY_LIMIT), and a worker pod is rarely given that many cores."""


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object and the file it came from."""

    source: str
    doc: dict[str, Any]
    generator: str | None = None
    """The kind of Kustomize generator that made the object (`ConfigMapGenerator`,
    `SecretGenerator`), as Kustomize says; "" when Kustomize read it from a file; None when not known."""


def kind_of(snapshot: Snapshot, env: Environment) -> str:
    """`kustomize`, `helm` or `plain`: what the environment's path holds."""
    markers = snapshot.entries(join(env.path, name) for name in (*KUSTOMIZATION_FILES, "Chart.yaml"))
    names = {posixpath.basename(path) for path in markers}
    if names & set(KUSTOMIZATION_FILES):
        return "kustomize"
    if "Chart.yaml" in names:
        return "helm"
    return "plain"


def render_inputs(snapshot: Snapshot, env: Environment) -> set[str]:
    """The repository paths that rendering `env` reads; a directory stands for all below it.

    Raises RenderError when they cannot be told; rendering then reports the same problem.
    """
    if kind_of(snapshot, env) == "kustomize":
        return kustomization_inputs(snapshot, env.path)
    # A chart's values files lie below it (the repo config allows no `..`), or behind a symlink.
    inputs, pending, paths = {env.path}, [env.path], None
    while pending:  # plain trees and charts also read whatever their symlinks point to
        for link in snapshot.symlinks(pending.pop()):
            paths = paths or RepoPaths.of(snapshot)
            target = paths.resolve(link, inputs)
            if target is None:
                raise RenderError("symlink points outside the repository", link)
            if not any(under(target, i) for i in inputs):
                inputs.add(target)
                pending.append(target)
    return inputs


def is_manifest_file(path: str, root: str = ".") -> bool:
    """A manifest of a plain tree at `root`; as git tooling does, hidden files and directories are skipped."""
    below = path[len(root) + 1:] if root != "." and path.startswith(root + "/") else path
    hidden = below.startswith(".") or "/." in below
    return path.endswith(MANIFEST_SUFFIXES) and not hidden and posixpath.basename(path) not in KUSTOMIZATION_FILES


def render(snapshot: Snapshot, env: Environment, *, only: set[str] | None = None,
           limits: Limits = DEFAULT_LIMITS, timeout: float = 60.0, sandbox: bool = True,
           workspace: Workspace | None = None, cache: RenderCache | None = None) -> list[Manifest]:
    """Render `env` at `snapshot`. For a plain tree, `only` limits parsing to those files.

    Kustomize and Helm run for at most `timeout` seconds each and, with `sandbox`, in the
    renderer box (bot/renderers/sandbox.py) or not at all; their output is refused past
    `limits.max_file_bytes`. They read the snapshot's tree as `workspace` exported it (shared with
    the job's other renders of that snapshot), or as exported for this render alone. With `cache`,
    a commit's Kustomize or Helm render is kept, and taken from there the next time
    (`bot.render_cache`).
    """
    kind = kind_of(snapshot, env)
    if kind == "plain":
        return render_plain(snapshot, env.path, only=only, limits=limits)
    reads = render_inputs(snapshot, env)  # what the renderer reads must stay in the repository
    inputs = inputs_id(snapshot, reads) if cache is not None else None
    key = cache.key(inputs, kind, env, limits.max_file_bytes) if cache is not None and inputs else None
    if key and (kept := cache.get(key)) is not None:  # type: ignore[union-attr]
        return kept
    manifests = _render_with(kind, snapshot, env, reads, limits, timeout, sandbox, workspace)
    if key:
        cache.put(key, manifests)  # type: ignore[union-attr]
    return manifests


def inputs_id(snapshot: Snapshot, reads: set[str]) -> str | None:
    """One id for everything a render reads (`reads`, from render_inputs): the path, mode and blob
    id of every file at or below them, symlinks included. A commit that leaves them as they were
    keeps the id, whatever else it changes. None where files have no blob ids (a working tree)."""
    paths, digest = RepoPaths.of(snapshot), hashlib.sha256()
    for path in sorted({file for read in reads for file in paths.below(read)}):
        entry = paths.files[path]
        if not entry.blob:
            return None
        digest.update(f"{entry.mode} {entry.blob} {path}\0".encode())
    return digest.hexdigest()


def _render_with(kind: str, snapshot: Snapshot, env: Environment, reads: set[str], limits: Limits,
                 timeout: float, sandbox: bool, workspace: Workspace | None) -> list[Manifest]:
    """Run Kustomize or Helm on the snapshot's exported tree; `reads` is what they may read."""
    with contextlib.nullcontext(workspace) if workspace else Workspace() as space:
        tree = space.tree(snapshot)
        tree.check(reads)
        if kind == "kustomize":
            from bot.renderers.kustomize import render_kustomize
            origins = space.origins(snapshot, env.path)
            text = render_kustomize(tree.root, env.path, timeout=timeout, sandbox=sandbox,
                                    max_output=limits.max_file_bytes, paths=space.paths(snapshot))
        else:
            from bot.renderers.helm import render_helm
            helm = env.helm
            text = render_helm(tree.root, env.path, release=helm.release if helm else env.name,
                               namespace=env.namespace, values=list(helm.values) if helm else [],
                               timeout=timeout, sandbox=sandbox, max_output=limits.max_file_bytes)
            source = posixpath.join(env.path, "Chart.yaml")
    output = f"{kind} output of {env.path}"  # what a parse error's lines count: the rendered text, not a file
    manifests = to_manifests(parse_documents(text.encode(), output, limits), output)
    if kind == "kustomize":
        return [_with_origin(m.doc, origins) for m in manifests]
    return [Manifest(source, m.doc) for m in manifests]


def _with_origin(doc: dict[str, Any], origins: Origins) -> Manifest:
    """An object of a kustomize build, with the file it comes from, its origin annotation taken off."""
    source, generator = take_origin(doc, origins)
    return Manifest(source, doc, generator)


def _tree_key(snapshot: Snapshot) -> tuple[str, Any]:
    """What a workspace knows a snapshot's tree by: its id, so two snapshots of one commit (or of
    two commits with one tree) share an export; a working tree by the snapshot itself."""
    tree = snapshot.tree_id()
    return ("tree", tree) if tree else ("snapshot", id(snapshot))


class Workspace:
    """Where one job's renders find their trees on disk: each tree is exported at most once, on
    the first render that needs it, and shared by every later one (renders in other threads wait
    for it); everything is removed on close. Renderers see the whole tree
    either way, and each render still refuses the links out of the repository that it reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._directory: Path | None = None
        self._trees: dict[Any, tuple[Snapshot, Future[ExportedTree]]] = {}
        self._paths: dict[Any, tuple[Snapshot, Future[RepoPaths]]] = {}
        self._origins: dict[tuple[Any, str], tuple[Snapshot, Future[Origins]]] = {}
        self._exported = 0

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            directory, self._directory = self._directory, None
            self._trees.clear()
            self._paths.clear()
            self._origins.clear()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def tree(self, snapshot: Snapshot) -> ExportedTree:
        """`snapshot`'s tree on disk, exported now if no render exported it before."""
        return self._once(self._trees, _tree_key(snapshot), snapshot, lambda: self._export(snapshot))

    def origins(self, snapshot: Snapshot, path: str) -> Origins:
        """How to read where each object of the kustomization at `path` comes from; its kustomization
        in the exported tree is prepared for its build (see kustomize.prepare_build) once, whichever
        render comes first, so that every render of it reads the same."""
        paths = self.paths(snapshot)
        directory = paths.resolve(path) or path  # two paths to one directory are one kustomization
        root = self.tree(snapshot).root
        return self._once(self._origins, (_tree_key(snapshot), directory), snapshot,
                          lambda: prepare_build(root, paths, directory, schema_dir=self._directory))

    def paths(self, snapshot: Snapshot) -> RepoPaths:
        """The exported tree of `snapshot` as read back from disk, for renderers that check what
        they are about to run on."""
        return self._once(self._paths, _tree_key(snapshot), snapshot,
                          lambda: RepoPaths(WorkTreeSnapshot(self.tree(snapshot).root)))

    def _once(self, made: dict[Any, Any], key: Any, snapshot: Snapshot, make: Any) -> Any:
        with self._lock:
            entry = made.get(key)
            mine = entry is None
            if mine:  # the snapshot is kept with it, so that its id is not reused meanwhile
                entry = made[key] = (snapshot, Future())
        future = entry[1]
        if mine:
            try:
                future.set_result(make())
            except BaseException as err:  # every render of this snapshot fails alike
                future.set_exception(err)
        return future.result()

    def _export(self, snapshot: Snapshot) -> ExportedTree:
        with self._lock:
            if self._directory is None:
                self._directory = Path(tempfile.mkdtemp(prefix="gitops-bot-render-"))
            self._exported += 1
            dest = self._directory / f"tree-{self._exported}"
        dest.mkdir()
        return snapshot.export_tree(dest)


def render_concurrency() -> int:
    """How many renders of one job run at once: the cores this process may use (its CPU affinity,
    and its cgroup's CPU quota where one is set), at most MAX_CONCURRENT_RENDERS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, min(cores, MAX_CONCURRENT_RENDERS))


def _cgroup_cpu_quota() -> float | None:
    """The CPUs a container's cgroup (v2, else v1) allows, or None where it sets no quota."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text().strip()
        period = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text().strip()
        return None if int(quota) <= 0 else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def render_plain(snapshot: Snapshot, path: str, *, only: set[str] | None = None,
                 limits: Limits = DEFAULT_LIMITS) -> list[Manifest]:
    """The manifest files below `path` (or only those in `only`), each symlink read from its target.

    As git and Argo CD do, a symlinked directory is not descended; a symlink out of the
    repository is refused whatever its name.
    """
    entries = snapshot.files(path) if only is None else snapshot.entries(p for p in only if under(p, path))
    wanted = sorted(p for p in entries if is_manifest_file(p, path))
    targets = _follow(snapshot, [p for p, e in entries.items() if e.is_symlink])
    contents = snapshot.read_many(sorted({targets.get(p, p) for p in wanted}), limits.max_file_bytes)
    manifests: list[Manifest] = []
    for path_ in wanted:
        docs = parse_documents(contents[targets.get(path_, path_)], path_, limits)
        manifests.extend(to_manifests(docs, path_))
    return manifests


def _follow(snapshot: Snapshot, links: list[str]) -> dict[str, str]:
    """The file each manifest symlink among `links` stands for; every link must stay inside."""
    if not links:
        return {}
    paths, targets = RepoPaths.of(snapshot), {}
    for link in links:
        target = paths.resolve(link)
        if target is None:
            raise RenderError("symlink points outside the repository", link)
        if is_manifest_file(link):
            if paths.kind(target) != "file":
                raise RenderError("symlink target is not a file in the repository", link)
            targets[link] = target
    return targets


def to_manifests(docs: Iterable[Any], source: str) -> Iterable[Manifest]:
    """Kubernetes objects from parsed documents: `List`s flattened, everything checked for shape."""
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise RenderError(f"document {index + 1} is not a mapping", source)
        if _is_list(doc):
            items = doc.get("items") or []
            if not isinstance(items, list):
                raise RenderError(f"document {index + 1}: `items` of a List must be a list", source)
            yield from to_manifests(items, source)
            continue
        for key in ("apiVersion", "kind"):
            if not isinstance(doc.get(key), str) or not doc[key]:
                raise RenderError(f"document {index + 1} has no `{key}`", source)
        meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
        name = meta.get("name") or meta.get("generateName")  # a generated name is the API server's to give
        if not isinstance(name, str) or not name:
            raise RenderError(f"document {index + 1} ({doc['kind']}) has no `metadata.name`", source)
        yield Manifest(source, doc)


def _is_list(doc: dict[str, Any]) -> bool:
    kind = doc.get("kind")
    return kind == "List" or isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list)
