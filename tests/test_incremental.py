"""Incremental work: an environment is rendered only when something it reads changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.diff import DiffReport
from bot.gitrepo import Mirror
from bot.pipeline import diff_snapshots
from bot.renderers import helm, kustomize
from bot.renderers.kustomize import kustomization_inputs
from tests.conftest import GitRemote, Symlink

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{k: '{value}'}}\n"
TREE: dict[str, Any] = {
    ".gitops.yaml": """environments:
  staging: {branch: main, path: envs/staging}
  production: {branch: main, path: envs/production}
  chart: {branch: main, path: charts/web, helm: {release: web, values: [values.yaml]}}
  plain: {branch: main, path: plain}
""",
    "base/kustomization.yaml": "resources: [app.yaml]\n",
    "base/app.yaml": CM.format(name="app", value="1"),
    "components/extra/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"
                                           "resources: [extra.yaml]\n",
    "components/extra/extra.yaml": CM.format(name="extra", value="1"),
    "shared/settings.env": "A=1\n",
    "envs/staging/kustomization.yaml": "resources: [../../base]\ncomponents: [../../components/extra]\n"
                                       "namePrefix: staging-\n",
    "envs/production/kustomization.yaml": "resources: [../../base]\nnamePrefix: prod-\n",
    "envs/production/README.md": "not read by kustomize\n",
    "charts/web/Chart.yaml": "apiVersion: v2\nname: web\nversion: 0.1.0\n",
    "charts/web/values.yaml": "value: '1'\n",
    "charts/web/templates/cm.yaml": CM.format(name="web", value="{{ .Values.value }}"),
    "plain/app.yaml": CM.format(name="plain", value="1"),
    "plain/shared.yaml": Symlink("../common/shared.yaml"),
    "common/shared.yaml": CM.format(name="shared", value="1"),
    "unrelated/notes.txt": "hello\n",
}


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths Kustomize and Helm are asked to render."""
    calls: list[str] = []
    for module, name in ((kustomize, "render_kustomize"), (helm, "render_helm")):
        original = getattr(module, name)

        def counting(root: Path, path: str, *args, _original=original, **kwargs) -> str:
            calls.append(path)
            return _original(root, path, *args, **kwargs)

        monkeypatch.setattr(module, name, counting)
    return calls


def diff(remote: GitRemote, tmp_path: Path, changes: dict) -> DiffReport:
    base = remote.commit("main", TREE)
    head = remote.commit("pr", changes, parent=base)
    mirror = Mirror(tmp_path / "mirror")
    mirror.ensure(remote.url, [base, head], ["+refs/heads/*:refs/heads/*"])
    return diff_snapshots(mirror.snapshot(base), mirror.snapshot(head), config_snapshot=mirror.snapshot(base),
                          base_sha=base, head_sha=head, branch="main", default_branch="main",
                          changed=mirror.changed_paths(base, head))


def rendered(report: DiffReport) -> dict[str, int]:
    """Changed objects by environment, for those that were rendered."""
    assert not report.failed, report
    return {e.environment: e.counts.total for e in report.environments if not e.unchanged_inputs}


@pytest.mark.parametrize("changes, expected, calls", [
    ({"unrelated/notes.txt": "bye\n"}, {}, []),
    ({"envs/staging/kustomization.yaml": TREE["envs/staging/kustomization.yaml"] + "namespace: s\n"},
     {"staging": 4}, ["envs/staging"] * 2),
    ({"base/app.yaml": CM.format(name="app", value="2")}, {"staging": 1, "production": 1},
     ["envs/staging"] * 2 + ["envs/production"] * 2),
    ({"components/extra/extra.yaml": CM.format(name="extra", value="2")}, {"staging": 1}, ["envs/staging"] * 2),
    ({"envs/production/README.md": "still not read\n"}, {"production": 0}, ["envs/production"] * 2),
    ({"charts/web/values.yaml": "value: '2'\n"}, {"chart": 1}, ["charts/web"] * 2),
    ({"common/shared.yaml": CM.format(name="shared", value="2")}, {"plain": 1}, []),
    ({"plain/app.yaml": CM.format(name="plain", value="2")}, {"plain": 1}, []),
], ids=["unrelated", "overlay", "base", "component", "env-dir", "chart-values", "symlink-target", "plain-file"])
def test_only_environments_whose_inputs_changed_are_rendered(remote, tmp_path, renders, changes, expected, calls):
    assert rendered(diff(remote, tmp_path, changes)) == expected
    assert sorted(renders) == sorted(calls)  # environments render concurrently: in no set order


def test_when_inputs_cannot_be_told_it_renders_and_says_why(remote, tmp_path, renders):
    report = diff(remote, tmp_path, {"base/kustomization.yaml": "resources: [https://example.com/x]\n"})
    errors = {e.environment: e.error for e in report.environments if e.error}
    assert set(errors) == {"staging", "production"}
    assert "base/kustomization.yaml" in errors["staging"] and "remote reference" in errors["staging"]


def test_kustomization_inputs_are_read_from_the_snapshot(remote, tmp_path):
    sha = remote.commit("main", {**TREE, "envs/staging/base": Symlink("../../base"),
                                 "envs/staging/kustomization.yaml": "resources: [base]\n"
                                                                    "components: [../../components/extra]\n"
                                                                    "patches: [{path: ../../shared/settings.env}]\n"})
    mirror = Mirror(tmp_path / "mirror")
    mirror.ensure(remote.url, [sha], ["+refs/heads/*:refs/heads/*"])
    inputs = kustomization_inputs(mirror.snapshot(sha), "envs/staging")
    assert {"envs/staging", "envs/staging/base", "base", "components/extra", "shared/settings.env"} <= inputs
    assert not any(p.startswith(("envs/production", "charts", "plain", "unrelated")) for p in inputs)
