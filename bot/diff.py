"""The object-by-object diff of two renders: pure values, no I/O."""

from __future__ import annotations

import copy
import difflib
import fnmatch
import json
import marshal
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterable, Literal

from bot.config import EnvironmentChange, IgnoreRule
from bot.render import Manifest
from bot.yamlio import dump

if TYPE_CHECKING:
    from bot.preview import LivePlan

Op = Literal["+", "-", "~"]

# Kinds the API server keeps outside namespaces, by (group, kind).
CLUSTER_SCOPED = {
    ("", "Namespace"), ("", "Node"), ("", "PersistentVolume"), ("", "ComponentStatus"),
    ("rbac.authorization.k8s.io", "ClusterRole"), ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"), ("apiregistration.k8s.io", "APIService"),
    ("storage.k8s.io", "StorageClass"), ("storage.k8s.io", "CSIDriver"), ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "VolumeAttachment"), ("scheduling.k8s.io", "PriorityClass"),
    ("networking.k8s.io", "IngressClass"), ("node.k8s.io", "RuntimeClass"),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
    ("certificates.k8s.io", "CertificateSigningRequest"), ("policy", "PodSecurityPolicy"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
}
NOISE_METADATA = ("managedFields", "resourceVersion", "uid", "generation", "creationTimestamp", "selfLink")
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
SECRET_FIELDS = ("data", "stringData")
MASK = "***"
HOOK_ANNOTATION = "helm.sh/hook"
"""Helm keeps an object with this annotation out of its release and runs it around one instead."""
GENERATED = "*"
"""Stands for the part of a name the API server generates (`metadata.generateName`)."""
GENERATED_KINDS = {"ConfigMap": "ConfigMapGenerator", "Secret": "SecretGenerator"}
"""The core kinds Kustomize generates with a name hash, and the generator of each."""
NAME_HASH = re.compile(r"(.+)-[2456789bcdfghkmt]{10}")
"""A name and Kustomize's name hash: the first ten hex digits of a SHA-256, with 0, 1, 3, a and e
spelt g, h, k, m and t (kustomize api/hasher/hasher.go, `encode`)."""


@dataclass(frozen=True, order=True)
class ObjectKey:
    """An object's identity: (API group, kind, namespace, name)."""

    group: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        kind = f"{self.group}/{self.kind}" if self.group else self.kind
        return f"{kind} {self.namespace}/{self.name}" if self.namespace else f"{kind} {self.name}"


@dataclass(frozen=True)
class Change:
    op: Op
    key: ObjectKey
    diff: str
    """Unified YAML diff, 3 lines of context, Secret values masked."""
    source: str
    renamed_from: ObjectKey | None = None
    """For a generator's ConfigMap or Secret whose name hash changed (`~`): its identity at the base.
    It is one change of one object, though a deploy creates the new name and prunes the old one."""


@dataclass(frozen=True)
class Counts:
    added: int = 0
    changed: int = 0
    removed: int = 0

    @property
    def total(self) -> int:
        return self.added + self.changed + self.removed


@dataclass(frozen=True)
class EnvironmentDiff:
    """One environment's part of a diff: its changes, or why there are none."""

    environment: str
    path: str
    changes: tuple[Change, ...] = ()
    warnings: tuple[str, ...] = ()
    error: str | None = None
    unchanged_inputs: bool = False
    """Nothing the environment renders from changed, so it was not rendered at all."""
    cluster: str | None = None
    refusal: str | None = None
    """Why the server config refuses this environment's deploys, if it does."""
    live: LivePlan | None = None
    """What applying the head would do to the cluster now, or why that was not computed (`bot.preview`)."""

    @property
    def counts(self) -> Counts:
        ops = [c.op for c in self.changes]
        return Counts(ops.count("+"), ops.count("~"), ops.count("-"))


@dataclass(frozen=True)
class ConfigReview:
    """A change to `.gitops.yaml`: the environments it changes, and what the server config refuses."""

    changes: tuple[EnvironmentChange, ...] = ()
    refusals: dict[str, str] = field(default_factory=dict)
    """Why the server config refuses an added or changed environment, by its name."""
    error: str | None = None
    """Why the new `.gitops.yaml` cannot be read, if it cannot."""
    branch: str = ""
    """The branch the change lands on."""
    governs: bool = True
    """Whether that is the default branch, whose `.gitops.yaml` says what deploys where."""


@dataclass(frozen=True)
class DiffReport:
    base_sha: str
    head_sha: str
    environments: tuple[EnvironmentDiff, ...] = field(default_factory=tuple)
    error: str | None = None
    """A failure before any environment could be rendered (for example a broken .gitops.yaml)."""
    config: "ConfigReview | None" = None
    """What the change does to `.gitops.yaml`, when it changes it."""

    @property
    def counts(self) -> Counts:
        envs = [e.counts for e in self.environments]
        return Counts(sum(c.added for c in envs), sum(c.changed for c in envs), sum(c.removed for c in envs))

    @property
    def failed(self) -> bool:
        return self.error is not None or any(e.error for e in self.environments)

    @property
    def refused(self) -> int:
        """Objects a cluster's API server would refuse, by the live plans' dry runs."""
        return sum(len(e.live.refused) for e in self.environments if e.live is not None)


def group_of(api_version: str) -> str:
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def crd_kind(crd: dict[str, Any]) -> tuple[str, str]:
    """The (group, kind) a CustomResourceDefinition defines; empty strings where it names none."""
    spec = crd.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    names = spec.get("names")
    return str(spec.get("group", "")), str(names.get("kind", "") if isinstance(names, dict) else "")


def cluster_scoped_kinds(manifests: Iterable[Manifest]) -> set[tuple[str, str]]:
    """The built-in cluster-scoped kinds, plus custom kinds whose CRD says `scope: Cluster`."""
    kinds = set(CLUSTER_SCOPED)
    for m in manifests:
        spec = m.doc.get("spec")
        if m.doc.get("kind") == "CustomResourceDefinition" and isinstance(spec, dict) and spec.get("scope") == "Cluster":
            kinds.add(crd_kind(m.doc))
    return kinds


def identify(m: Manifest, namespace: str | None, cluster_kinds: set[tuple[str, str]]) -> ObjectKey:
    group, kind = group_of(m.doc["apiVersion"]), m.doc["kind"]
    meta = m.doc["metadata"]
    ns = "" if (group, kind) in cluster_kinds else str(meta.get("namespace") or namespace or "")
    return ObjectKey(group, kind, ns, str(meta.get("name") or f"{meta['generateName']}{GENERATED}"))


def is_generated(key: ObjectKey) -> bool:
    """Whether the object names only a `generateName`, so that the API server names it on creation."""
    return key.name.endswith(GENERATED)


def hook_of(doc: dict[str, Any]) -> str | None:
    """The Helm hooks an object is (`pre-install,pre-upgrade`, `test`), or None for a release's object."""
    meta = doc.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    hook = annotations.get(HOOK_ANNOTATION) if isinstance(annotations, dict) else None
    return None if hook is None else ", ".join(sorted({p.strip() for p in str(hook).split(",") if p.strip()}))


def release_objects(manifests: Iterable[Manifest]) -> tuple[list[Manifest], list[Manifest]]:
    """(the objects a release holds, its Helm hooks), as Helm and Argo CD tell them apart."""
    objects, hooks = [], []
    for m in manifests:
        (objects if hook_of(m.doc) is None else hooks).append(m)
    return objects, hooks


def same(a: Any, b: Any) -> bool:
    """Whether two objects are the same JSON: Python's == takes `true` for 1.

    Equal marshal bytes mean equal types and values; they differ for key order or shared values
    too, which the slower JSON comparison then tells apart.
    """
    return a == b and (marshal.dumps(a) == marshal.dumps(b)
                       or json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True))


def normalize(doc: dict[str, Any], key: ObjectKey, rules: Iterable[IgnoreRule] = ()) -> dict[str, Any]:
    """A copy without the fields that never belong in a diff, namespace filled in.

    The copy is shallow where nothing is removed, since this runs for every object.
    """
    rules = [r for r in rules if _rule_matches(r, key)]
    out = copy.deepcopy(doc) if any(r.paths for r in rules) else dict(doc)
    out.pop("status", None)
    meta = out["metadata"] = dict(out.get("metadata") or {})
    for name in NOISE_METADATA:
        meta.pop(name, None)
    if key.namespace:
        meta["namespace"] = key.namespace
    _drop_keys(meta, "annotations", [LAST_APPLIED])
    for rule in rules:
        _drop_keys(meta, "annotations", rule.annotations)
        _drop_keys(meta, "labels", rule.labels)
        for pointer in rule.paths:
            _drop_pointer(out, pointer)
    return out


def _rule_matches(rule: IgnoreRule, key: ObjectKey) -> bool:
    return (any(fnmatch.fnmatchcase(key.kind, k) for k in rule.kinds)
            and any(fnmatch.fnmatchcase(key.name, n) for n in rule.names))


def _drop_keys(meta: dict[str, Any], field_: str, patterns: Iterable[str]) -> None:
    values = meta.get(field_)
    if not isinstance(values, dict):
        return
    kept = {k: v for k, v in values.items() if not any(fnmatch.fnmatchcase(str(k), p) for p in patterns)}
    if kept:
        meta[field_] = kept
    else:
        meta.pop(field_)


def _drop_pointer(doc: Any, pointer: str) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.strip("/").split("/")]
    nodes = [doc]
    for part in parts[:-1]:
        nodes = [child for node in nodes for k, child in _children(node) if fnmatch.fnmatchcase(k, part)]
    for node in nodes:
        for k, _ in list(_children(node)):
            if fnmatch.fnmatchcase(k, parts[-1]):
                del node[int(k) if isinstance(node, list) else k]
                if isinstance(node, list):
                    break  # indices shift after a delete; one element per pointer match


def _children(node: Any) -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [(str(k), v) for k, v in node.items()]
    if isinstance(node, list):
        return [(str(i), v) for i, v in enumerate(node)]
    return []


def is_secret(key: ObjectKey) -> bool:
    # Any API group: a misspelt apiVersion is rejected by the cluster only after the comment is posted.
    return key.kind == "Secret"


def mask_secrets(old: dict[str, Any] | None, new: dict[str, Any] | None) -> tuple[Any, Any]:
    """Both sides of a Secret with every value replaced, changed ones marked before/after."""
    old_m, new_m = copy.copy(old), copy.copy(new)
    for name in SECRET_FIELDS:
        before = old.get(name) if old else None
        after = new.get(name) if new else None
        if old_m is not None and name in old_m:
            old_m[name] = _mask_values(before, after, "before")
        if new_m is not None and name in new_m:
            new_m[name] = _mask_values(after, before, "after")
    return old_m, new_m


def _mask_values(mine: Any, theirs: Any, side: str) -> Any:
    if not isinstance(mine, dict):
        return MASK
    theirs = theirs if isinstance(theirs, dict) else {}
    return {k: f"{MASK} ({side})" if k in theirs and not same(theirs[k], v) else MASK for k, v in mine.items()}


def unified(old: Any, new: Any, key: ObjectKey) -> str:
    if is_secret(key):
        old, new = mask_secrets(old, new)
    before = dump(old).splitlines() if old is not None else []
    after = dump(new).splitlines() if new is not None else []
    lines = difflib.unified_diff(before, after, lineterm="", n=3)
    return "\n".join(line for i, line in enumerate(lines) if i > 1)  # the ---/+++ header says nothing here


def index(manifests: Iterable[Manifest], namespace: str | None, rules: Iterable[IgnoreRule],
          cluster_kinds: set[tuple[str, str]]) -> tuple[dict[ObjectKey, Manifest], list[str]]:
    """Objects by identity, and a warning for each identity defined twice (the last one wins)."""
    objects: dict[ObjectKey, Manifest] = {}
    warnings = []
    rules = tuple(rules)
    for m in manifests:
        key = identify(m, namespace, cluster_kinds)
        if key in objects:
            warnings.append(f"`{key}` is defined more than once ({objects[key].source}, {m.source}); "
                            "the last definition is used")
        objects[key] = replace(m, doc=normalize(m.doc, key, rules))
    return objects, warnings


def diff_manifests(base: list[Manifest], head: list[Manifest], *, namespace: str | None = None,
                   rules: Iterable[IgnoreRule] = ()) -> tuple[tuple[Change, ...], tuple[str, ...]]:
    """The changes from `base` to `head`, and warnings about the head: objects defined twice, what
    a deploy skips (Helm hooks, objects with only a generated name)."""
    cluster_kinds = cluster_scoped_kinds(base) | cluster_scoped_kinds(head)
    base, _ = release_objects(base)
    head, hooks = release_objects(head)
    old, _ = index(base, namespace, rules, cluster_kinds)
    new, warnings = index(head, namespace, rules, cluster_kinds)
    renamed = generator_renames(old, new)
    changes = []
    keys = (old.keys() - set(renamed.values())) | new.keys()
    for key in sorted(keys, key=lambda k: (k.kind, k.namespace, k.name, k.group)):
        before, after = old.get(renamed.get(key, key)), new.get(key)
        if before is not None and after is not None and same(before.doc, after.doc):
            continue  # the same object, perhaps in another file: a move is not a change
        op: Op = "+" if before is None else "-" if after is None else "~"
        changes.append(Change(op, key, unified(before.doc if before else None, after.doc if after else None, key),
                              (after or before).source, renamed.get(key)))  # type: ignore[union-attr]
    warnings += [f"`{key}` has only `metadata.generateName`, so the API server would name it on creation; "
                 "server-side apply needs a name, so a deploy skips it" for key in new if is_generated(key)]
    if hooks:
        warnings.append(hooks_note(hooks))
    return tuple(changes), tuple(warnings)


def generator_renames(old: dict[ObjectKey, Manifest], new: dict[ObjectKey, Manifest]) -> dict[ObjectKey, ObjectKey]:
    """The generated ConfigMaps and Secrets that a new name hash renamed: the added one's identity
    to the removed one's. They pair when one is removed and one added with the same kind,
    namespace and name before the hash; never where that is ambiguous."""
    removed = _by_stem(old, old.keys() - new.keys())
    added = _by_stem(new, new.keys() - old.keys())
    return {keys[0]: removed[stem][0] for stem, keys in added.items()
            if len(keys) == 1 and len(removed.get(stem, ())) == 1}


def _by_stem(objects: dict[ObjectKey, Manifest], keys: Iterable[ObjectKey]) -> dict[ObjectKey, list[ObjectKey]]:
    """`keys` of generated objects, by their identity with the name hash left out."""
    found: dict[ObjectKey, list[ObjectKey]] = {}
    for key in keys:
        stem = generated_stem(key, objects[key].generator)
        if stem is not None:
            found.setdefault(replace(key, name=stem), []).append(key)
    return found


def generated_stem(key: ObjectKey, generator: str | None) -> str | None:
    """The name a Kustomize generator's ConfigMap or Secret has before its name hash, or None for
    another object. Where Kustomize said what made the object (`generator`), that decides; otherwise
    the name's shape does."""
    if key.group or key.kind not in GENERATED_KINDS or generator not in (None, GENERATED_KINDS[key.kind]):
        return None
    match = NAME_HASH.fullmatch(key.name)
    return match.group(1) if match else None


def hooks_note(hooks: list[Manifest]) -> str:
    """One line for the Helm hooks of a render, counted by hook: their names may be random."""
    counts = Counter(hook_of(m.doc) or "(none)" for m in hooks)
    kinds = "; ".join(f"{hook}: {count}" for hook, count in sorted(counts.items()))
    return (f"{len(hooks)} Helm hook{'s are' if len(hooks) != 1 else ' is'} left out ({kinds}): Helm runs hooks "
            "around a release, not as part of it, so they are not diffed and a deploy neither applies nor "
            "prunes them")
