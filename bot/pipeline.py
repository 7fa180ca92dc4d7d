"""From two snapshots and a repo config to a diff report, rendering only what changed."""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

from bot.config import (ConfigError, Environment, IgnoreRule, REPO_CONFIG_FILE, RepoConfig,
                        parse_repo_config)
from bot.diff import DiffReport, EnvironmentDiff, diff_manifests
from bot.gitrepo import Snapshot
from bot.render import Manifest, is_manifest_file, kind_of, render
from bot.renderers.errors import RenderError
from bot.yamlio import DEFAULT_LIMITS, Limits


def read_repo_config(snapshot: Snapshot, default_branch: str, clusters: set[str] | None = None) -> RepoConfig:
    """`.gitops.yaml` at the snapshot, or the implicit `default` environment."""
    data = snapshot.read_optional(REPO_CONFIG_FILE)
    if data is None:
        return RepoConfig.implicit(default_branch)
    return parse_repo_config(data, REPO_CONFIG_FILE, clusters=clusters)


def under(path: str, root: str) -> bool:
    return root == "." or path == root or path.startswith(root.rstrip("/") + "/")


def diff_environment(base: Snapshot, head: Snapshot, env: Environment, *, changed: set[str] | None,
                     rules: Iterable[IgnoreRule] = (), limits: Limits = DEFAULT_LIMITS,
                     timeout: float = 60.0) -> EnvironmentDiff:
    """One environment's diff. `changed` (paths changed between the two) enables incremental work."""
    result = EnvironmentDiff(env.name, env.path, cluster=env.cluster)
    relevant = None if changed is None else {p for p in changed if under(p, env.path)}
    try:
        kinds = {kind_of(base, env), kind_of(head, env)}
        if kinds == {"plain"} and relevant is not None:
            if not relevant:
                return replace(result, unchanged_inputs=True)
            only = {p for p in relevant if is_manifest_file(p)}
            before = _render_side(base, env, only, limits, timeout)
            after = _render_side(head, env, only, limits, timeout)
        else:
            # Kustomize and Helm may read files anywhere in the repository: when in doubt, render.
            if changed is not None and not changed:
                return replace(result, unchanged_inputs=True)
            before = _render_side(base, env, None, limits, timeout)
            after = _render_side(head, env, None, limits, timeout)
    except RenderError as err:
        return replace(result, error=str(err))
    changes, warnings = diff_manifests(before, after, namespace=env.namespace, rules=rules)
    return replace(result, changes=changes, warnings=warnings)


def _render_side(snapshot: Snapshot, env: Environment, only: set[str] | None, limits: Limits,
                 timeout: float) -> list[Manifest]:
    try:
        return render(snapshot, env, only=only, limits=limits, timeout=timeout)
    except RenderError as err:
        raise RenderError(f"at {snapshot.label}: {err.message}", err.file) from None


def diff_snapshots(base: Snapshot, head: Snapshot, *, config_snapshot: Snapshot, base_sha: str, head_sha: str,
                   branch: str | None, default_branch: str, changed: set[str] | None,
                   env_name: str | None = None, server_rules: Iterable[IgnoreRule] = (),
                   clusters: set[str] | None = None, timeout: float = 60.0) -> DiffReport:
    """The whole report. The repo config comes from `config_snapshot` (a PR's base, never its head)."""
    try:
        config = read_repo_config(config_snapshot, default_branch, clusters)
    except ConfigError as err:
        return DiffReport(base_sha, head_sha, error=str(err))
    if env_name is not None:
        env = config.get(env_name)
        if env is None:
            names = ", ".join(e.name for e in config.environments)
            return DiffReport(base_sha, head_sha, error=f"no environment {env_name!r} (have: {names})")
        envs = [env]
    elif branch is not None:
        envs = config.for_branch(branch)
    else:
        envs = list(config.environments)
    rules = (*server_rules, *config.ignore)
    return DiffReport(base_sha, head_sha, tuple(
        diff_environment(base, head, env, changed=changed, rules=rules, timeout=timeout) for env in envs))
