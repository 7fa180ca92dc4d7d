"""Environments render concurrently: the report is the one a render at a time gives, errors stay with
their environment, a hanging render still times out, and each commit's tree is exported once."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bot import pipeline
from bot.diff import DiffReport
from bot.gitrepo import CommitSnapshot, Mirror
from bot.pipeline import diff_snapshots
from bot.renderers import kustomize
from tests.conftest import GitRemote

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{k: '{value}'}}\n"
OVERLAYS = 6
ENVIRONMENTS = "".join(f"  k{i}: {{branch: main, path: envs/k{i}}}\n" for i in range(OVERLAYS))
TREE: dict[str, Any] = {
    ".gitops.yaml": "environments:\n" + ENVIRONMENTS.replace("  k3:", "  plain: {branch: main, path: plain}\n"
                                                             "  broken: {branch: main, path: envs/broken}\n"
                                                             "  chart: {branch: main, path: chart, helm: "
                                                             "{release: web, values: [values.yaml]}}\n  k3:"),
    "base/kustomization.yaml": "resources: [app.yaml]\n",
    "base/app.yaml": CM.format(name="app", value="1"),
    "envs/broken/kustomization.yaml": "resources: [../../base]\nnamePrefix: broken-\n",
    "chart/Chart.yaml": "apiVersion: v2\nname: web\nversion: 0.1.0\n",
    "chart/values.yaml": "value: '1'\n",
    "chart/templates/cm.yaml": CM.format(name="web", value="{{ .Values.value }}"),
    "plain/app.yaml": CM.format(name="plain", value="1"),
    **{f"envs/k{i}/kustomization.yaml": f"resources: [../../base]\nnamePrefix: k{i}-\n" for i in range(OVERLAYS)},
}
CHANGE = {"base/app.yaml": CM.format(name="app", value="2"), "chart/values.yaml": "value: '2'\n",
          "plain/app.yaml": CM.format(name="plain", value="2"),
          "envs/broken/kustomization.yaml": "resources: [../../base, missing.yaml]\n"}


def mirror_of(remote: GitRemote, tmp_path: Path, changes: dict[str, Any],
              tree: dict[str, Any] = TREE) -> tuple[Mirror, str, str]:
    base = remote.commit("main", tree)
    head = remote.commit("pr", changes, parent=base)
    mirror = Mirror(tmp_path / "mirror")
    mirror.ensure(remote.url, [base, head], ["+refs/heads/*:refs/heads/*"])
    return mirror, base, head


def diff(mirror: Mirror, base: str, head: str, **options: Any) -> DiffReport:
    return diff_snapshots(mirror.snapshot(base), mirror.snapshot(head), config_snapshot=mirror.snapshot(base),
                          base_sha=base, head_sha=head, branch="main", default_branch="main",
                          changed=mirror.changed_paths(base, head), **options)


@pytest.fixture
def changed(remote: GitRemote, tmp_path: Path) -> tuple[Mirror, str, str]:
    return mirror_of(remote, tmp_path, CHANGE)


def test_the_report_is_the_one_renders_one_at_a_time_give(changed):
    one_at_a_time = diff(*changed, concurrency=1)
    assert diff(*changed, concurrency=4) == one_at_a_time
    assert diff(*changed, concurrency=2) == one_at_a_time
    envs = {e.environment: e for e in one_at_a_time.environments}
    assert [e.environment for e in one_at_a_time.environments] == [
        "k0", "k1", "k2", "plain", "broken", "chart", *(f"k{i}" for i in range(3, OVERLAYS))]
    assert envs["broken"].error and "missing.yaml" in envs["broken"].error  # its own, and only there
    assert all(not e.error and e.counts.changed == 1 for name, e in envs.items() if name != "broken")


def test_each_commit_is_exported_once_per_job(changed, monkeypatch):
    exported: list[str] = []
    original = CommitSnapshot.export_tree

    def counting(snapshot: CommitSnapshot, dest: Path) -> Any:
        exported.append(snapshot.sha)
        return original(snapshot, dest)

    monkeypatch.setattr(CommitSnapshot, "export_tree", counting)
    mirror, base, head = changed
    report = diff(mirror, base, head, concurrency=3)
    assert sum(1 for e in report.environments if not e.unchanged_inputs) == OVERLAYS + 3
    assert sorted(exported) == sorted([base, head])


def test_renders_overlap_up_to_the_bound_and_hold_no_more_environments(changed, monkeypatch):
    lock, running, peak = threading.Lock(), [0], [0]
    rendered: set[str] = set()
    held_peak = [0]
    render_kustomize, finish = kustomize.render_kustomize, pipeline._finish

    def slow(root: Path, path: str, **options: Any) -> str:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2)
        try:
            return render_kustomize(root, path, **options)
        finally:
            with lock:
                running[0] -= 1
                rendered.add(path)
                held_peak[0] = max(held_peak[0], len(rendered))

    def finishing(env: Any, *args: Any) -> Any:
        result = finish(env, *args)
        with lock:
            rendered.discard(env.path)
        return result

    monkeypatch.setattr(kustomize, "render_kustomize", slow)
    monkeypatch.setattr(pipeline, "_finish", finishing)
    diff(*changed, concurrency=3)
    assert peak[0] == 3  # overlapping, never more than the bound
    assert held_peak[0] <= 3  # environments rendered and not yet diffed


def test_a_hanging_render_times_out_while_the_others_finish(remote, tmp_path):
    hang = "{{- range until 100000 }}{{- range until 100000 }}{{- end }}{{- end }}\n"
    mirror, base, head = mirror_of(remote, tmp_path, {**CHANGE, "chart/templates/hang.yaml": hang})
    started = time.monotonic()
    report = diff(mirror, base, head, concurrency=2, timeout=4)
    elapsed = time.monotonic() - started
    envs = {e.environment: e for e in report.environments}
    assert envs["chart"].error == f"chart: at {head[:7]}: helm render timed out after 4s"
    assert all(not e.error for name, e in envs.items() if name not in ("chart", "broken"))
    assert elapsed < 25, f"took {elapsed:.1f}s"


def test_the_exported_trees_are_removed_whatever_happens(changed, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    diff(*changed, concurrency=2)
    assert list(scratch.iterdir()) == []

    def failing(root: Path, path: str, **options: Any) -> str:
        raise RuntimeError("a bug, not a render error")

    monkeypatch.setattr(kustomize, "render_kustomize", failing)
    with pytest.raises(RuntimeError, match="a bug"):
        diff(*changed, concurrency=2)
    assert list(scratch.iterdir()) == []
