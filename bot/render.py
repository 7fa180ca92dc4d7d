"""Turn an environment's path at one snapshot into manifests: plain YAML, Kustomize or Helm."""

from __future__ import annotations

import posixpath
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from bot.config import Environment
from bot.gitrepo import RepoPaths, Snapshot, join, under
from bot.renderers.errors import RenderError
from bot.renderers.kustomize import KUSTOMIZATION_FILES, kustomization_inputs
from bot.yamlio import DEFAULT_LIMITS, Limits, parse_documents

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object and the file it came from."""

    source: str
    doc: dict[str, Any]


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
            paths = paths or RepoPaths(snapshot)
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
           limits: Limits = DEFAULT_LIMITS, timeout: float = 60.0, sandbox: bool = True) -> list[Manifest]:
    """Render `env` at `snapshot`. For a plain tree, `only` limits parsing to those files.

    Kustomize and Helm run for at most `timeout` seconds each and, with `sandbox`, in the
    renderer box (bot/renderers/sandbox.py) or not at all.
    """
    kind = kind_of(snapshot, env)
    if kind == "plain":
        return render_plain(snapshot, env.path, only=only, limits=limits)
    reads = render_inputs(snapshot, env)  # what the renderer reads must stay in the repository
    with tempfile.TemporaryDirectory(prefix="gitops-bot-render-") as tmp:
        root = snapshot.export(Path(tmp), reads)
        if kind == "kustomize":
            from bot.renderers.kustomize import render_kustomize
            text = render_kustomize(root, env.path, timeout=timeout, sandbox=sandbox)
            source = posixpath.join(env.path, "kustomization.yaml")
        else:
            from bot.renderers.helm import render_helm
            helm = env.helm
            text = render_helm(root, env.path, release=helm.release if helm else env.name,
                               namespace=env.namespace, values=list(helm.values) if helm else [],
                               timeout=timeout, sandbox=sandbox)
            source = posixpath.join(env.path, "Chart.yaml")
    output = f"{kind} output of {env.path}"  # what a parse error's lines count: the rendered text, not a file
    return [Manifest(source, m.doc) for m in to_manifests(parse_documents(text.encode(), output, limits), output)]


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
    paths, targets = RepoPaths(snapshot), {}
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
