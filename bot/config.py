"""The server config (operators') and the repo config (`.gitops.yaml`), typed and validated once."""

from __future__ import annotations

import fnmatch
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bot.renderers.errors import RenderError
from bot.yamlio import parse_documents

PERMISSION_LEVELS = ("none", "read", "triage", "write", "maintain", "admin")
REQUIREMENTS = ("approved", "mergeable")
REPO_CONFIG_FILE = ".gitops.yaml"
DEFAULT_ENVIRONMENT = "default"


class ConfigError(ValueError):
    """A config mistake: which file, which key, and what was expected; `errors` holds it and every
    further one found in the same file."""

    def __init__(self, file: str, key: str, expected: str, more: tuple["ConfigError", ...] = ()):
        self.file, self.key, self.expected = file, key, expected
        self.errors = (self, *more)
        super().__init__("\n".join(f"{e.file}: {e.key}: {e.expected}" for e in self.errors))


@dataclass(frozen=True)
class IgnoreRule:
    """Fields the diff leaves out, for objects whose kind and name match the globs."""

    kinds: tuple[str, ...] = ("*",)
    names: tuple[str, ...] = ("*",)
    annotations: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    """JSON pointers, e.g. `/spec/replicas`; a segment may be a glob."""


@dataclass(frozen=True)
class Cluster:
    name: str
    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False
    repos: tuple[str, ...] = ()
    """Globs on the repositories granted this cluster; no other may deploy to it."""
    branches: tuple[str, ...] | None = None
    """Only environments of these branches may deploy to it; None: any branch."""
    namespaces: tuple[str, ...] | None = None
    """Only objects in these namespaces (and no cluster-scoped ones but these Namespaces); None: any."""

    def refusal(self, repo: str, env: "Environment") -> str | None:
        """Why `repo`'s environment `env` may not deploy to this cluster, if it may not."""
        if not _matches(repo, self.repos):
            return (f"cluster `{self.name}` is not granted to {repo} "
                    f"(the server config grants it to {_listing(self.repos)})")
        if self.branches is not None and env.branch not in self.branches:
            return (f"cluster `{self.name}` takes deploys only from the branches {_listing(self.branches)}, "
                    f"not `{env.branch}`")
        if self.namespaces is not None and (env.namespace or "default") not in self.namespaces:
            return (f"cluster `{self.name}` takes objects only in the namespaces {_listing(self.namespaces)}, "
                    f"not `{env.namespace or 'default'}`")
        return None


def _matches(name: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name.lower(), glob.lower()) for glob in globs)


def _listing(items: tuple[str, ...]) -> str:
    return ", ".join(f"`{item}`" for item in items) or "nothing"


@dataclass(frozen=True)
class ServerConfig:
    repos: tuple[str, ...] = ()
    clusters: dict[str, Cluster] = field(default_factory=dict)
    command_prefix: str = "/"
    ignore: tuple[IgnoreRule, ...] = ()
    render_timeout: float = 60.0
    """Seconds one renderer (kustomize, helm) may run before it is stopped."""
    rollout_timeout: float = 300.0
    """Seconds a deploy waits for workloads to become available."""
    reconcile_interval: float = 600.0
    """Seconds between runs that catch up on missed webhooks; 0 turns them off."""
    render_sandbox: bool = True
    """Kustomize and Helm run boxed (no network, no file outside the exported tree), or not at all.
    Off only for a local trial on a machine that cannot box them."""
    fetch_timeout: float = 300.0
    """Seconds one `git fetch` may take before it is stopped and reported."""
    allow_local_urls: bool = False
    """Whether a payload's `file://` URL or local path is cloned as it is (local trials and tests);
    otherwise clone URLs are built from the configured forge and the repository's path."""

    def allows(self, full_name: str) -> bool:
        return _matches(full_name, self.repos)

    def refusal(self, repo: str, env: "Environment") -> str | None:
        """Why `repo`'s environment `env` may not deploy, if its cluster is unknown or not granted."""
        if not env.cluster:
            return None
        cluster = self.clusters.get(env.cluster)
        if cluster is None:
            return f"cluster `{env.cluster}` is not in the server config"
        return cluster.refusal(repo, env)


@dataclass(frozen=True)
class HelmOptions:
    release: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Environment:
    name: str
    branch: str
    path: str = "."
    cluster: str | None = None
    namespace: str | None = None
    prune: bool = False
    deployers: str = "write"
    require: tuple[str, ...] = ()
    helm: HelmOptions | None = None
    drift: str = "report"
    """What the periodic comparison with the cluster does with drift: `report` it, or `heal` it too."""


DRIFT_MODES = ("report", "heal")


@dataclass(frozen=True)
class RepoConfig:
    environments: tuple[Environment, ...]
    ignore: tuple[IgnoreRule, ...] = ()

    def for_branch(self, branch: str) -> list[Environment]:
        return [env for env in self.environments if env.branch == branch]

    def get(self, name: str) -> Environment | None:
        return next((env for env in self.environments if env.name.lower() == name.lower()), None)

    @classmethod
    def implicit(cls, default_branch: str) -> "RepoConfig":
        return cls((Environment(DEFAULT_ENVIRONMENT, default_branch),))


class _Reader:
    """Typed reads from a parsed mapping. A mistake is recorded with the file and the key's full path,
    and reading goes on, so that one run finds every mistake; `check` raises them all."""

    def __init__(self, file: str, data: Any, key: str = "", problems: list[ConfigError] | None = None):
        self.file, self.key = file, key
        self.problems = [] if problems is None else problems
        self.data: dict[Any, Any] = data if isinstance(data, dict) else {}
        if not isinstance(data, dict):
            self.fail("", f"expected a mapping, got {_kind(data)}")

    def _path(self, key: str) -> str:
        return f"{self.key}.{key}" if self.key and key else key or self.key or "(top level)"

    def fail(self, key: str, expected: str) -> None:
        self.problems.append(ConfigError(self.file, self._path(key), expected))

    def check(self) -> None:
        """Raise every mistake found, as one ConfigError."""
        if self.problems:
            first = self.problems[0]
            raise ConfigError(first.file, first.key, first.expected, tuple(self.problems[1:]))

    def reject_unknown(self, known: set[str]) -> None:
        for key in self.data:
            if key not in known:
                self.fail(str(key), f"unknown key; expected one of {', '.join(sorted(known))}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        value = self.data.get(key, default)
        if value is default:
            return default
        # YAML booleans are ints to Python, never to a user.
        if not isinstance(value, kind) or isinstance(value, bool) and bool not in _kinds(kind):
            self.fail(key, f"expected {_name(kind)}, got {_kind(value)}")
            return default
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list):
            self.fail(key, f"expected a list of strings, got {_kind(value)}")
            return default
        for index, item in enumerate(value):
            if not isinstance(item, str):
                self.fail(f"{key}[{index}]", f"expected a string, got {_kind(item)}")
        return tuple(item for item in value if isinstance(item, str))

    def seconds(self, key: str, default: float, zero: str | None = None) -> float:
        """A duration in seconds, above 0 (or 0 too, when `zero` says what 0 means)."""
        value = float(self.get(key, (int, float), default))
        if value < 0 or value == 0 and zero is None:
            floor = "0 or more (0 " + zero + ")" if zero else "above 0"
            self.fail(key, f"expected a number of seconds {floor}, got {value:g}")
            return default
        return value

    def path(self, key: str, value: str) -> str:
        """A repository-relative path, normalised, that cannot leave the repository."""
        if "\\" in value or "\0" in value:
            self.fail(key, f"expected a relative POSIX path, got {value!r}")
            return "."
        normal = posixpath.normpath(value or ".")
        if normal.startswith("/") or normal == ".." or normal.startswith("../"):
            self.fail(key, f"expected a path inside the repository, got {value!r}")
            return "."
        return normal

    def child(self, key: str) -> "_Reader | None":
        value = self.data.get(key)
        return None if value is None else _Reader(self.file, value, self._path(key), self.problems)

    def section(self, key: str, known: set[str]) -> "_Reader":
        """A mapping of known keys under `key`, empty when absent."""
        reader = self.child(key) or _Reader(self.file, {}, self._path(key), self.problems)
        reader.reject_unknown(known)
        return reader


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)


def _name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(dict.fromkeys(_kind(k()) for k in _kinds(kind)))


def _load_yaml(text: bytes, file: str) -> Any:
    try:
        docs = parse_documents(text, file)
    except RenderError as err:
        raise ConfigError(file, "(file)", err.message) from None
    if len(docs) > 1:
        raise ConfigError(file, "(file)", "expected one YAML document")
    return docs[0] if docs else {}


def _ignore_rules(reader: _Reader) -> tuple[IgnoreRule, ...]:
    raw = reader.data.get("ignore") or []
    if not isinstance(raw, list):
        reader.fail("ignore", f"expected a list of rules, got {_kind(raw)}")
        return ()
    rules = []
    for i, item in enumerate(raw):
        rule = _Reader(reader.file, item, reader._path(f"ignore[{i}]"), reader.problems)
        rule.reject_unknown({"kinds", "names", "annotations", "labels", "paths"})
        for pointer in rule.strings("paths"):
            if not pointer.startswith("/"):
                rule.fail("paths", f"expected a JSON pointer like /spec/replicas, got {pointer!r}")
        rules.append(IgnoreRule(kinds=rule.strings("kinds", ("*",)), names=rule.strings("names", ("*",)),
                                annotations=rule.strings("annotations"), labels=rule.strings("labels"),
                                paths=rule.strings("paths")))
    return tuple(rules)


def parse_server_config(text: bytes, file: str = "config/bot.yaml") -> ServerConfig:
    """Parse the server config; a ConfigError names every mistake in it."""
    top = _Reader(file, _load_yaml(text, file))
    top.reject_unknown({"repos", "clusters", "commands", "diff", "render", "deploy", "reconcile", "git"})
    clusters = {}
    for name, raw in (top.get("clusters", dict, {}) or {}).items():
        entry = _Reader(file, raw, f"clusters.{name}", top.problems)
        if not isinstance(raw, dict):
            continue
        entry.reject_unknown({"kubeconfig", "context", "in_cluster", "repos", "branches", "namespaces"})
        cluster = Cluster(str(name), entry.get("kubeconfig", str), entry.get("context", str),
                          entry.get("in_cluster", bool, False), repos=entry.strings("repos"),
                          branches=entry.strings("branches") if "branches" in entry.data else None,
                          namespaces=entry.strings("namespaces") if "namespaces" in entry.data else None)
        if cluster.in_cluster == bool(cluster.kubeconfig):
            entry.fail("", "expected `kubeconfig` (with `context`) or `in_cluster: true`"
                       + (", not both" if cluster.in_cluster else ""))
        if not cluster.repos and "repos" not in entry.data:
            entry.fail("repos", "expected the repository globs granted this cluster, such as [\"acme/infra\"]")
        clusters[str(name)] = cluster
    commands = top.section("commands", {"prefix"})
    prefix = commands.get("prefix", str, "/")
    if not prefix or any(c.isspace() for c in prefix):
        commands.fail("prefix", "expected a non-empty prefix without spaces")
    diff = top.section("diff", {"ignore"})
    render = top.section("render", {"timeout", "sandbox"})
    deploy = top.section("deploy", {"rollout_timeout"})
    reconcile = top.section("reconcile", {"interval"})
    git = top.section("git", {"allow_local_urls", "fetch_timeout"})
    config = ServerConfig(
        repos=top.strings("repos"), clusters=clusters, command_prefix=prefix, ignore=_ignore_rules(diff),
        render_timeout=render.seconds("timeout", 60.0),
        rollout_timeout=deploy.seconds("rollout_timeout", 300.0),
        reconcile_interval=reconcile.seconds("interval", 600.0, zero="turns the periodic run off"),
        render_sandbox=render.get("sandbox", bool, True),
        allow_local_urls=git.get("allow_local_urls", bool, False),
        fetch_timeout=git.seconds("fetch_timeout", 300.0),
    )
    top.check()
    return config


def load_server_config(path: Path) -> ServerConfig:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), "(file)", "not found; set GITOPS_BOT_CONFIG, or write one with "
                                               "`gitops-bot init`") from None
    return parse_server_config(data, str(path))


def parse_repo_config(text: bytes, file: str = REPO_CONFIG_FILE, *,
                      clusters: set[str] | None = None) -> RepoConfig:
    """Parse `.gitops.yaml`; a ConfigError names every mistake in it. With `clusters`, cluster names
    are checked against the server config."""
    top = _Reader(file, _load_yaml(text, file))
    top.reject_unknown({"environments", "diff"})
    envs_raw = top.get("environments", dict)
    if not envs_raw:
        top.fail("environments", "expected a mapping of environment names to settings")
    environments = []
    for name, raw in (envs_raw or {}).items():
        entry = _Reader(file, raw, f"environments.{name}", top.problems)
        if not isinstance(raw, dict):
            continue
        entry.reject_unknown({"branch", "path", "cluster", "namespace", "prune", "deployers", "require", "helm",
                            "drift"})
        branch = entry.get("branch", str)
        if not entry.data.get("branch"):
            entry.fail("branch", "expected the branch this environment deploys from")
        cluster = entry.get("cluster", str)
        if cluster is not None and clusters is not None and cluster not in clusters:
            entry.fail("cluster", f"expected a cluster named in the server config "
                                  f"({', '.join(sorted(clusters)) or 'none'}), got {cluster!r}")
        deployers = entry.get("deployers", str, "write")
        if deployers not in PERMISSION_LEVELS[1:]:
            entry.fail("deployers", f"expected one of {'|'.join(PERMISSION_LEVELS[1:])}, got {deployers!r}")
        require = entry.strings("require")
        for index, item in enumerate(require):
            if item not in REQUIREMENTS:
                entry.fail(f"require[{index}]", f"expected one of {', '.join(REQUIREMENTS)}, got {item!r}")
        drift = entry.get("drift", str, "report")
        if drift not in DRIFT_MODES:
            entry.fail("drift", f"expected one of {'|'.join(DRIFT_MODES)}, got {drift!r}")
        helm = entry.child("helm")
        helm_options = None
        if helm:
            helm.reject_unknown({"release", "values"})
            values = tuple(helm.path(f"values[{i}]", v) for i, v in enumerate(helm.strings("values")))
            helm_options = HelmOptions(helm.get("release", str) or str(name), values)
        environments.append(Environment(
            name=str(name), branch=branch or "", cluster=cluster, path=entry.path("path", entry.get("path", str, ".")),
            namespace=entry.get("namespace", str), prune=entry.get("prune", bool, False),
            deployers=deployers, require=require, helm=helm_options, drift=drift,
        ))
    diff = top.section("diff", {"ignore"})
    config = RepoConfig(tuple(environments), _ignore_rules(diff))
    top.check()
    return config


GOVERNING_FIELDS = ("branch", "path", "cluster", "namespace", "prune", "deployers", "require", "helm", "drift")
"""What an environment's entry decides: which commits deploy, what, where, and who may ask."""


@dataclass(frozen=True)
class EnvironmentChange:
    """How a change to `.gitops.yaml` changes one environment: each field as (name, before, after)."""

    name: str
    op: Literal["added", "removed", "changed"]
    fields: tuple[tuple[str, str, str], ...] = ()


def environment_changes(before: RepoConfig, after: RepoConfig) -> tuple[EnvironmentChange, ...]:
    """The environments `after` adds, removes or defines differently from `before`, by name."""
    old = {env.name: env for env in before.environments}
    new = {env.name: env for env in after.environments}
    changes = []
    for name in sorted(old.keys() | new.keys()):
        a, b = old.get(name), new.get(name)
        if a is None or b is None:
            shown = b or a
            assert shown is not None
            fields = tuple((f, "", show_field(shown, f)) for f in GOVERNING_FIELDS if _is_set(shown, f))
            changes.append(EnvironmentChange(name, "added" if a is None else "removed",
                                             fields if a is None else ()))
            continue
        fields = tuple((f, show_field(a, f), show_field(b, f)) for f in GOVERNING_FIELDS
                       if getattr(a, f) != getattr(b, f))
        if fields:
            changes.append(EnvironmentChange(name, "changed", fields))
    return tuple(changes)


def show_field(env: Environment, name: str) -> str:
    """A field of an environment as the pull request comment shows it."""
    value = getattr(env, name)
    if name == "helm":
        return f"release {value.release}, values {', '.join(value.values) or 'none'}" if value else "none"
    if isinstance(value, tuple):
        return ", ".join(value) or "nothing"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "none" if value is None else str(value)


def _is_set(env: Environment, name: str) -> bool:
    value = getattr(env, name)
    return value not in (None, False, ()) and not (name == "drift" and value == DRIFT_MODES[0])
