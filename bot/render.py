"""Turn an environment's path at one snapshot into manifests: plain YAML, Kustomize or Helm."""

from __future__ import annotations

import posixpath
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from bot.config import Environment
from bot.gitrepo import Entry, Snapshot, resolve_symlink
from bot.renderers.errors import RenderError
from bot.yamlio import DEFAULT_LIMITS, Limits, parse_documents

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object and the file it came from."""

    source: str
    doc: dict[str, Any]


def kind_of(snapshot: Snapshot, env: Environment) -> str:
    """`kustomize`, `helm` or `plain`: what the environment's path holds."""
    names = {posixpath.relpath(p, env.path) for p in snapshot.files(env.path)}
    if any(name in names for name in KUSTOMIZATION_FILES):
        return "kustomize"
    if "Chart.yaml" in names:
        return "helm"
    return "plain"


def is_manifest_file(path: str) -> bool:
    name = posixpath.basename(path)
    return path.endswith(MANIFEST_SUFFIXES) and not name.startswith(".") and name not in KUSTOMIZATION_FILES


def render(snapshot: Snapshot, env: Environment, *, only: set[str] | None = None,
           limits: Limits = DEFAULT_LIMITS, timeout: float = 60.0) -> list[Manifest]:
    """Render `env` at `snapshot`. For a plain tree, `only` limits parsing to those files."""
    kind = kind_of(snapshot, env)
    if kind == "plain":
        return render_plain(snapshot, env.path, only=only, limits=limits)
    with tempfile.TemporaryDirectory(prefix="gitops-bot-render-") as tmp:
        root = snapshot.export(Path(tmp))
        if kind == "kustomize":
            from bot.renderers.kustomize import render_kustomize
            text = render_kustomize(root, env.path, timeout=timeout)
            source = posixpath.join(env.path, "kustomization.yaml")
        else:
            from bot.renderers.helm import render_helm
            helm = env.helm
            text = render_helm(root, env.path, release=helm.release if helm else env.name,
                               namespace=env.namespace, values=list(helm.values) if helm else [],
                               timeout=timeout)
            source = posixpath.join(env.path, "Chart.yaml")
    return list(to_manifests(parse_documents(text.encode(), source, limits), source))


def render_plain(snapshot: Snapshot, path: str, *, only: set[str] | None = None,
                 limits: Limits = DEFAULT_LIMITS) -> list[Manifest]:
    entries = snapshot.files(path)
    wanted = sorted(p for p in entries if is_manifest_file(p) and (only is None or p in only))
    targets = {p: _target(snapshot, p, entries) for p in wanted}
    contents = snapshot.read_many(sorted(set(targets.values())))
    manifests: list[Manifest] = []
    for path_ in wanted:
        manifests.extend(to_manifests(parse_documents(contents[targets[path_]], path_, limits), path_))
    return manifests


def _target(snapshot: Snapshot, path: str, entries: dict[str, Entry]) -> str:
    if not entries[path].is_symlink:
        return path
    return resolve_symlink(snapshot, path, snapshot.files("."))


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
        name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), dict) else None
        if not isinstance(name, str) or not name:
            raise RenderError(f"document {index + 1} ({doc['kind']}) has no `metadata.name`", source)
        yield Manifest(source, doc)


def _is_list(doc: dict[str, Any]) -> bool:
    kind = doc.get("kind")
    return kind == "List" or isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list)
