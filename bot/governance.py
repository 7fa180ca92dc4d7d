"""Who may deploy what, where: the server config's grants, and a change's edits to `.gitops.yaml`."""

from __future__ import annotations

from dataclasses import replace

from bot.config import REPO_CONFIG_FILE, ConfigError, ServerConfig, environment_changes
from bot.diff import ConfigReview, DiffReport
from bot.gitrepo import Snapshot
from bot.pipeline import read_repo_config


def review(report: DiffReport, *, server: ServerConfig, repo: str, base: Snapshot, head: Snapshot,
           changed: set[str], branch: str, default_branch: str) -> DiffReport:
    """`report` with each environment's refusal by the server config and, when the change touches
    `.gitops.yaml`, what it adds, removes or redefines. `base` holds the config in force."""
    if report.error:
        return report
    clusters = set(server.clusters)
    try:
        before = read_repo_config(base, default_branch, clusters)
    except ConfigError:
        return report  # the report already says why
    envs = tuple(replace(diff, refusal=server.refusal(repo, env)) if (env := before.get(diff.environment)) else diff
                 for diff in report.environments)
    if REPO_CONFIG_FILE not in changed:
        return replace(report, environments=envs)
    landing = ConfigReview(branch=branch, governs=branch == default_branch)
    try:
        after = read_repo_config(head, default_branch, clusters)
    except ConfigError as err:
        return replace(report, environments=envs, config=replace(landing, error=str(err)))
    changes = environment_changes(before, after)
    refusals = {change.name: refusal for change in changes if change.op != "removed"
                and (refusal := server.refusal(repo, after.get(change.name)))}  # type: ignore[arg-type]
    return replace(report, environments=envs, config=replace(landing, changes=changes, refusals=refusals))
