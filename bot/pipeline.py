"""From two snapshots and a repo config to a diff report, rendering only what changed."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Iterable

from bot.config import (ConfigError, Environment, IgnoreRule, REPO_CONFIG_FILE, RepoConfig,
                        parse_repo_config)
from bot.diff import DiffReport, EnvironmentDiff, diff_manifests
from bot.gitrepo import Snapshot, under
from bot.render import Manifest, Workspace, kind_of, render, render_concurrency, render_inputs
from bot.renderers.errors import RenderError
from bot.yamlio import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    from bot.render_cache import RenderCache


def read_repo_config(snapshot: Snapshot, default_branch: str, clusters: set[str] | None = None) -> RepoConfig:
    """`.gitops.yaml` at the snapshot, or the implicit `default` environment."""
    data = snapshot.read_optional(REPO_CONFIG_FILE)
    if data is None:
        return RepoConfig.implicit(default_branch)
    return parse_repo_config(data, REPO_CONFIG_FILE, clusters=clusters)


def diff_environments(base: Snapshot, head: Snapshot, envs: Iterable[Environment], *, changed: set[str] | None,
                      rules: Iterable[IgnoreRule] = (), limits: Limits = DEFAULT_LIMITS, timeout: float = 60.0,
                      sandbox: bool = True, concurrency: int | None = None,
                      cache: RenderCache | None = None) -> list[EnvironmentDiff]:
    """Each environment's diff, in the order of `envs`, the same as if they ran one after another.

    With `changed` (the paths changed between the two snapshots), an environment whose inputs were
    not touched is not rendered, and a plain tree parses only the files that changed. Renders run
    in `concurrency` threads (default: render_concurrency()), base and head alike: a renderer is a
    child process, so they overlap. At most `concurrency` environments are rendered or wait to be
    diffed at once, so no more than that many environments' manifests (base and head) are held.
    Each snapshot's tree is exported at most once, for every render that needs it.
    """
    rules, workers = tuple(rules), concurrency or render_concurrency()
    with Workspace() as workspace, ThreadPoolExecutor(workers, thread_name_prefix="render") as pool:
        def start(env: Environment) -> _Pending:
            plan = _plan(base, head, env, changed)
            if isinstance(plan, EnvironmentDiff):
                return env, plan, ()
            result, only = plan
            return env, result, tuple(pool.submit(_render_side, snapshot, env, only, limits, timeout, sandbox,
                                                  workspace, cache) for snapshot in (base, head))

        results: list[EnvironmentDiff] = []
        window: deque[_Pending] = deque()
        remaining = iter(envs)
        try:
            while True:
                while sum(1 for *_, sides in window if sides) < workers:
                    env = next(remaining, None)
                    if env is None:
                        break
                    window.append(start(env))
                if not window:
                    return results
                results.append(_finish(*window.popleft(), rules))
        except BaseException:
            for *_, sides in window:
                for side in sides:
                    side.cancel()
            raise


_Pending = tuple[Environment, EnvironmentDiff, "tuple[Future[list[Manifest]], ...]"]
"""An environment, its diff so far, and its renders at base and head (none when it needs none)."""


def _plan(base: Snapshot, head: Snapshot, env: Environment,
          changed: set[str] | None) -> EnvironmentDiff | tuple[EnvironmentDiff, set[str] | None]:
    """The environment's whole diff when it needs no render; else its diff so far and what a plain
    tree's renders parse (`only`; None for everything)."""
    result = EnvironmentDiff(env.name, env.path, cluster=env.cluster)
    try:
        relevant = None if changed is None else {p for p in changed if under(p, env.path)}
        if changed is not None and not relevant and not _inputs_touched(base, head, env, changed):
            return replace(result, unchanged_inputs=True)
        only = None
        if relevant is not None and kind_of(base, env) == kind_of(head, env) == "plain":
            only = relevant
            if env.path != ".":
                # A symlink may lead out of the path to a file that changed; head's symlinks are
                # base's, or changed. (In the whole repository, a target is diffed as its own file.)
                only |= set(base.symlinks(env.path))
    except RenderError as err:
        return replace(result, error=str(err))
    return result, only


def _finish(env: Environment, result: EnvironmentDiff, sides: tuple[Future[list[Manifest]], ...],
            rules: tuple[IgnoreRule, ...]) -> EnvironmentDiff:
    """The environment's diff once its renders are done. Base's error comes first, as when base
    rendered first and head never ran."""
    if not sides:
        return result
    try:
        before = sides[0].result()
        after = sides[1].result()
    except RenderError as err:
        return replace(result, error=str(err))
    changes, warnings = diff_manifests(before, after, namespace=env.namespace, rules=rules)
    return replace(result, changes=changes, warnings=warnings)


def _inputs_touched(base: Snapshot, head: Snapshot, env: Environment, changed: set[str]) -> bool:
    """Whether a changed path is something the render reads, on either side: a kustomization's
    bases, a symlink's target. When that cannot be told, yes: the render will say why."""
    if not changed:
        return False
    try:
        inputs = render_inputs(base, env) | render_inputs(head, env)
    except RenderError:
        return True
    return touches(changed, inputs)


def touches(changed: set[str], inputs: set[str]) -> bool:
    """Whether a changed path lies under an input, or is a symlink on the way to one."""
    return any(under(p, i) or under(i, p) for p in changed for i in inputs)


def _render_side(snapshot: Snapshot, env: Environment, only: set[str] | None, limits: Limits,
                 timeout: float, sandbox: bool, workspace: Workspace, cache: RenderCache | None) -> list[Manifest]:
    try:
        return render(snapshot, env, only=only, limits=limits, timeout=timeout, sandbox=sandbox,
                      workspace=workspace, cache=cache)
    except RenderError as err:
        raise RenderError(f"at {snapshot.label}: {err.message}", err.file) from None


def diff_snapshots(base: Snapshot, head: Snapshot, *, config_snapshot: Snapshot, base_sha: str, head_sha: str,
                   branch: str | None, default_branch: str, changed: set[str] | None,
                   env_name: str | None = None, server_rules: Iterable[IgnoreRule] = (),
                   clusters: set[str] | None = None, timeout: float = 60.0,
                   sandbox: bool = True, concurrency: int | None = None,
                   cache: RenderCache | None = None) -> DiffReport:
    """The whole report. The repo config comes from `config_snapshot` (a PR's base, never its head).
    Environments render `concurrency` at a time (see diff_environments)."""
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
    return DiffReport(base_sha, head_sha, tuple(diff_environments(
        base, head, envs, changed=changed, rules=rules, timeout=timeout, sandbox=sandbox,
        concurrency=concurrency, cache=cache)))
