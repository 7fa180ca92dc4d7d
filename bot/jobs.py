"""RQ jobs. Each takes plain values, builds what it needs from the runtime, and reports back."""

from __future__ import annotations

import logging
from typing import Any

from bot import runtime
from bot.comments import sync_comments
from bot.diff import DiffReport
from bot.events import PullRequest, pull_from_plain
from bot.forges.base import Forge
from bot.gitrepo import GitError
from bot.pipeline import diff_snapshots
from bot.queue import pull_key
from bot.report import markdown, marker, status_description

log = logging.getLogger("gitops_bot.jobs")


def diff_pull_request(pull: dict[str, Any], generation: str | None = None) -> dict[str, Any]:
    """Render a pull request's base and head, and bring its diff comment and status up to date."""
    rt = runtime.current()
    pr = pull_from_plain(pull)
    key = pull_key(pr.repo.forge, pr.repo.full_name, pr.number)
    context = f"{rt.settings.name}/diff"

    def superseded() -> bool:
        return generation is not None and generation != rt.store.newest(key)

    if superseded():
        log.info("diff superseded before it started", extra={"pull": key, "head": pr.head_sha})
        return {"superseded": True}
    forge = rt.forge(pr.repo.forge)
    forge.set_status(pr.repo.full_name, pr.head_sha, context, "pending", "rendering manifests")
    report = build_report(rt, forge, pr)
    if superseded():  # a newer head is queued: its job owns the comment now
        return {"superseded": True}
    bodies = markdown(report, rt.settings.name, forge.comment_limit)
    sync_comments(forge, pr.repo.full_name, pr.number, marker(rt.settings.name), bodies)
    state = "failure" if report.failed else "success"
    forge.set_status(pr.repo.full_name, pr.head_sha, context, state, status_description(report))
    counts = report.counts
    log.info("diff posted", extra={"pull": key, "head": pr.head_sha, "state": state, "parts": len(bodies)})
    return {"state": state, "added": counts.added, "changed": counts.changed, "removed": counts.removed,
            "parts": len(bodies)}


def build_report(rt: runtime.Runtime, forge: Forge, pr: PullRequest) -> DiffReport:
    """Fetch what is missing, then diff the merge base against the head (as the PR's files view does)."""
    mirror = rt.mirrors.get(pr.repo.forge, pr.repo.full_name)
    base_branch = f"refs/heads/{pr.base_ref}"
    try:
        # A forge that names only the base branch leaves base_sha empty: its tip, fetched now, is the base.
        mirror.ensure(forge.authenticated_clone_url(pr.repo.clone_url, pr.repo.full_name),
                      [sha for sha in (pr.base_sha, pr.head_sha) if sha],
                      [f"+{base_branch}:{base_branch}",
                       f"+{forge.pull_refspec(pr.number)}:refs/pull-heads/{pr.number}"], refresh=not pr.base_sha)
        base_tip = pr.base_sha or mirror.resolve(base_branch)
    except GitError as err:
        return DiffReport(pr.base_sha, pr.head_sha, error=str(err))
    base_sha = mirror.merge_base(base_tip, pr.head_sha) or base_tip
    base, head = mirror.snapshot(base_sha), mirror.snapshot(pr.head_sha)
    return diff_snapshots(
        base, head, config_snapshot=mirror.snapshot(base_tip), base_sha=base_sha, head_sha=pr.head_sha,
        branch=pr.base_ref, default_branch=pr.repo.default_branch,
        changed=mirror.changed_paths(base_sha, pr.head_sha), server_rules=rt.server.ignore,
        clusters=set(rt.server.clusters), timeout=rt.server.render_timeout)
