"""What a render holds, as a pull request's diff sees it: dot-directories, rendered output, Helm hooks and
generated names."""

from __future__ import annotations

from pathlib import Path

from bot.diff import DiffReport, EnvironmentDiff
from bot.gitrepo import Mirror
from bot.pipeline import diff_snapshots
from bot.renderers import kustomize
from tests.conftest import GitRemote

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{k: '{value}'}}\n"
DEPENDABOT = "version: 2\nupdates:\n  - package-ecosystem: pip\n    directory: /\n    schedule: {interval: weekly}\n"


def diff(remote: GitRemote, tmp_path: Path, base_files: dict, head_files: dict) -> DiffReport:
    base = remote.commit("main", base_files)
    head = remote.commit("pr", head_files, parent=base)
    mirror = Mirror(tmp_path / "mirror")
    mirror.ensure(remote.url, [base, head], ["+refs/heads/*:refs/heads/*"])
    return diff_snapshots(mirror.snapshot(base), mirror.snapshot(head), config_snapshot=mirror.snapshot(base),
                          base_sha=base, head_sha=head, branch="main", default_branch="main",
                          changed=mirror.changed_paths(base, head))


def only(report: DiffReport) -> EnvironmentDiff:
    (env,) = report.environments
    return env


def test_the_default_environment_skips_dot_directories(remote, tmp_path):
    report = diff(remote, tmp_path, {"app/cm.yaml": CM.format(name="a", value="1")},
                  {"app/cm.yaml": CM.format(name="a", value="2"), ".github/dependabot.yml": DEPENDABOT,
                   ".github/workflows/ci.yaml": "on: push\njobs: {}\n", "app/.hidden/x.yaml": "not: [a manifest\n"})
    env = only(report)
    assert env.error is None, env.error
    assert [(c.op, str(c.key)) for c in env.changes] == [("~", "ConfigMap a")]


def test_an_environment_inside_a_dot_directory_still_renders(remote, tmp_path):
    config = {".gitops.yaml": "environments: {hidden: {branch: main, path: .deploy/app}}\n"}
    report = diff(remote, tmp_path, {**config, ".deploy/app/cm.yaml": CM.format(name="a", value="1")},
                  {".deploy/app/cm.yaml": CM.format(name="a", value="2"), ".deploy/app/.git-crypt/k.yaml": "x: [\n"})
    assert [(c.op, str(c.key)) for c in only(report).changes] == [("~", "ConfigMap a")]


def test_an_error_in_rendered_output_names_the_output_and_its_lines(remote, tmp_path, monkeypatch):
    """kustomize writes what it reads well; whatever it writes that cannot be read is named as its output."""
    output = CM.format(name="a", value="1") + "---\n" + "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n" \
        "spec: {limit: .inf}\n"
    monkeypatch.setattr(kustomize, "render_kustomize", lambda *args, **kwargs: output)
    files = {".gitops.yaml": "environments: {k: {branch: main, path: envs/k}}\n",
             "envs/k/kustomization.yaml": "resources: [cm.yaml]\n", "envs/k/cm.yaml": CM.format(name="a", value="1")}
    report = diff(remote, tmp_path, files, {"envs/k/cm.yaml": CM.format(name="a", value="2")})
    error = only(report).error
    assert error and error.startswith("kustomize output of envs/k: at ")
    assert error.endswith(": ConfigMap b: line 9, column 15: an infinite number or NaN has no JSON form, so "
                          "kubectl refuses it; quote it to keep it as text")


CHART = {
    ".gitops.yaml": "environments: {web: {branch: main, path: chart, helm: {release: web}}}\n",
    "chart/Chart.yaml": "apiVersion: v2\nname: web\nversion: 0.1.0\n",
    "chart/values.yaml": "value: '1'\n",
    "chart/templates/cm.yaml": CM.format(name="web", value="{{ .Values.value }}"),
    "chart/templates/tests/test.yaml": "apiVersion: v1\nkind: Pod\nmetadata:\n"
                                       "  name: web-test-{{ randAlphaNum 5 | lower }}\n"
                                       "  annotations: {helm.sh/hook: test}\n"
                                       "spec: {containers: [{name: t, image: busybox}]}\n",
    "chart/templates/migrate.yaml": "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\n"
                                    "  annotations: {helm.sh/hook: 'pre-install,pre-upgrade'}\n"
                                    "spec: {template: {spec: {restartPolicy: Never, containers: [{name: m, "
                                    "image: 'migrate:{{ .Values.value }}'}]}}}\n",
}


def test_helm_hooks_are_not_diffed_and_are_counted_apart(remote, tmp_path):
    report = diff(remote, tmp_path, CHART, {"chart/values.yaml": "value: '2'\n"})
    env = only(report)
    assert env.error is None, env.error
    assert [(c.op, str(c.key)) for c in env.changes] == [("~", "ConfigMap web")]  # no random test Pods
    assert env.warnings == ("2 Helm hooks are left out (pre-install, pre-upgrade: 1; test: 1): Helm runs hooks "
                            "around a release, not as part of it, so they are not diffed and a deploy neither "
                            "applies nor prunes them",)


def test_an_object_with_a_generated_name_is_shown_not_refused(remote, tmp_path):
    job = ("apiVersion: batch/v1\nkind: Job\nmetadata:\n  generateName: smoke-\n"
           "  annotations: {argocd.argoproj.io/hook: PostSync}\nspec: {template: {spec: {restartPolicy: Never, "
           "containers: [{name: s, image: 'curl:{}'}]}}}\n")
    report = diff(remote, tmp_path, {"app/cm.yaml": CM.format(name="a", value="1")},
                  {"app/smoke.yaml": job.replace("{}", "8")})
    env = only(report)
    assert env.error is None, env.error
    assert [(c.op, str(c.key)) for c in env.changes] == [("+", "batch/Job smoke-*")]
    assert len(env.warnings) == 1 and "a deploy skips it" in env.warnings[0]
