"""Hostile repositories through the real pipeline: each gets a clear error naming the file, fast,
with bounded memory, and nothing outside the repository is ever read."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, strategies as st
import yaml

from bot.diff import DiffReport
from bot.gitrepo import Mirror
from bot.pipeline import diff_snapshots
from bot.renderers import sandbox
from bot.report import as_json, markdown, text
from bot.yamlio import nesting_bound
from tests.conftest import GitRemote, Symlink

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{k: '{value}'}}\n"
SENTINEL = "sentinel-7f3a9c"
"""A value that only files outside the repository hold: it must never reach any output."""

KUSTOMIZE_ENV = ".gitops.yaml", "environments: {k: {branch: main, path: envs/k}}\n"
BILLION_LAUGHS = "".join(
    ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n']
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)])


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the repository, holding a valid manifest and a kustomization."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret.yaml").write_text(CM.format(name="stolen", value=SENTINEL))
    (directory / "kustomization.yaml").write_text("resources: [secret.yaml]\n")
    return directory


def run(remote: GitRemote, tmp_path: Path, head_files: dict, base_files: dict | None = None,
        timeout: float = 60.0) -> tuple[DiffReport, str, float]:
    """Diff a PR adding `head_files` over `base_files`, as a diff job does; also every output."""
    return diff(remote, tmp_path, *push(remote, head_files, base_files), timeout=timeout)


def push(remote: GitRemote, head_files: dict, base_files: dict | None = None) -> tuple[str, str]:
    base = remote.commit("main", {"app/ok.yaml": CM.format(name="ok", value="1"), **(base_files or {})})
    return base, remote.commit("pr", head_files, parent=base)


def diff(remote: GitRemote, tmp_path: Path, base: str, head: str,
         timeout: float = 60.0) -> tuple[DiffReport, str, float]:
    started = time.monotonic()
    mirror = Mirror(tmp_path / "mirror")
    mirror.ensure(remote.url, [base, head], ["+refs/heads/*:refs/heads/*"])
    report = diff_snapshots(mirror.snapshot(base), mirror.snapshot(head), config_snapshot=mirror.snapshot(base),
                            base_sha=base, head_sha=head, branch="main", default_branch="main",
                            changed=mirror.changed_paths(base, head), timeout=timeout)
    outputs = "\n".join([*markdown(report, "bot"), text(report), as_json(report)])
    return report, outputs, time.monotonic() - started


def error_of(report: DiffReport) -> str:
    errors = [report.error] if report.error else [e.error for e in report.environments if e.error]
    assert errors, report
    return errors[0]


def assert_refused(report: DiffReport, outputs: str, elapsed: float, file: str, words: str) -> None:
    error = error_of(report)
    assert error.startswith(f"{file}: ") and words in error, error
    assert elapsed < 5, f"took {elapsed:.1f}s"
    assert "Traceback" not in outputs
    assert SENTINEL not in outputs and "root:x:0:0" not in outputs  # nothing from outside was read


@pytest.mark.parametrize("target", ["../../../../etc/passwd", "/etc/passwd", "../../outside/secret.yaml"])
def test_a_symlinked_file_out_of_the_repository(remote, tmp_path, outside, target):
    report, outputs, elapsed = run(remote, tmp_path, {"app/evil.yaml": Symlink(target)})
    assert_refused(report, outputs, elapsed, "app/evil.yaml", "symlink points outside the repository")


@pytest.mark.parametrize("target", ["../../../../etc", "/etc", "../../outside"])
def test_a_symlinked_directory_out_of_the_repository(remote, tmp_path, outside, target):
    report, outputs, elapsed = run(remote, tmp_path, {"app/linked": Symlink(target)})
    assert_refused(report, outputs, elapsed, "app/linked", "symlink points outside the repository")


def test_a_symlinked_directory_out_of_a_kustomization(remote, tmp_path, outside):
    files = {"envs/k/kustomization.yaml": "resources: [linked]\n", "envs/k/linked": Symlink("../../../outside")}
    report, outputs, elapsed = run(remote, tmp_path, files, dict([KUSTOMIZE_ENV]))
    assert_refused(report, outputs, elapsed, "envs/k/kustomization.yaml",
                   "resources entry 'linked' points outside the repository")


def test_the_working_tree_is_held_to_the_same_rules(remote, outside):
    remote.commit("main", {"app/ok.yaml": CM.format(name="ok", value="1")})
    (remote.work / "app/evil.yaml").symlink_to("../../outside/secret.yaml")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "bot", "diff", "--repo", str(remote.work), "main"],
                            capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 5
    assert result.returncode == 2
    assert "app/evil.yaml: at working tree: symlink points outside the repository" in result.stderr
    assert SENTINEL not in result.stdout + result.stderr


def test_symlinks_inside_the_repository_are_followed(remote, tmp_path):
    report, outputs, _ = run(remote, tmp_path, {"shared/cm.yaml": CM.format(name="shared", value="2"),
                                                "app/cm.yaml": Symlink("../shared/cm.yaml")})
    assert not report.failed and report.counts.added == 1 and "app/cm.yaml" in outputs


@pytest.mark.parametrize("config, key", [
    ("environments: {x: {branch: main, path: ../outside}}\n", "environments.x.path"),
    ("environments: {x: {branch: main, path: envs/../../outside}}\n", "environments.x.path"),
    ("environments: {x: {branch: main, path: /etc}}\n", "environments.x.path"),
    ("environments: {x: {branch: main, path: c, helm: {release: r, values: [../../etc/passwd]}}}\n",
     "environments.x.helm.values[0]"),
])
def test_paths_out_of_the_repository_in_the_repo_config(remote, tmp_path, config, key):
    report, outputs, elapsed = run(remote, tmp_path, {"app/new.yaml": CM.format(name="n", value="1")},
                                   {".gitops.yaml": config})
    assert_refused(report, outputs, elapsed, ".gitops.yaml", f"{key}: expected a path inside the repository")


def test_a_billion_laughs(remote, tmp_path):
    report, outputs, elapsed = run(remote, tmp_path, {"app/bomb.yaml": BILLION_LAUGHS})
    assert_refused(report, outputs, elapsed, "app/bomb.yaml", "a YAML alias bomb")


def test_an_alias_that_contains_itself(remote, tmp_path):
    report, outputs, elapsed = run(remote, tmp_path, {"app/loop.yaml": "&a [*a]\n"})
    assert_refused(report, outputs, elapsed, "app/loop.yaml", "refers to a collection that contains it")


@pytest.mark.parametrize("others", [0, 40], ids=["alone", "among-many"])
def test_a_file_over_the_size_limit_is_never_read(remote, tmp_path, others):
    size = 5_000_000  # over the 4 MiB limit
    files = {f"app/small-{i}.yaml": CM.format(name=f"small-{i}", value="1") for i in range(others)}
    commits = push(remote, {**files, "app/big.yaml": "# padding\n" * (size // 10) + CM.format(name="big", value="1")})
    tracemalloc.start()
    try:
        report, outputs, elapsed = diff(remote, tmp_path, *commits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_refused(report, outputs, elapsed, "app/big.yaml", "larger than the limit of 4,194,304")
    assert peak < size / 10


@pytest.mark.parametrize("document", [
    "[" * 10_000 + "]" * 10_000,
    yaml.safe_dump(json.loads('{"b": [' * 100 + "1" + "]}" * 100), default_flow_style=False),
    "- " * 1_500_000 + "x\n",  # deep enough to overflow libyaml's C stack if it were composed
    "[" * 1_500_000 + "]" * 1_500_000,
], ids=["flow-10000", "block-200", "compact-1500000", "flow-1500000"])
def test_deeply_nested_documents(remote, tmp_path, document):
    report, outputs, elapsed = run(remote, tmp_path, {"app/deep.yaml": document})
    assert_refused(report, outputs, elapsed, "app/deep.yaml", "nested deeper than 100 levels")


def test_an_alias_that_nests_a_deep_anchor_deeper(remote, tmp_path):
    deep = "[" * 60 + "1" + "]" * 60
    document = f"a: &a {deep}\nb: {'[' * 60}*a{']' * 60}\n"
    report, outputs, elapsed = run(remote, tmp_path, {"app/deep.yaml": document})
    assert_refused(report, outputs, elapsed, "app/deep.yaml", "nested deeper than 100 levels")


def test_non_utf8_bytes(remote, tmp_path):
    data = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {k: \"caf\xe9\"}\n"
    report, outputs, elapsed = run(remote, tmp_path, {"app/latin1.yaml": data})
    assert_refused(report, outputs, elapsed, "app/latin1.yaml", "not valid UTF-8 (byte 65)")


@pytest.mark.parametrize("resource", ["https://github.com/acme/infra//base?ref=v1", "github.com/acme/infra/base",
                                      "git@github.com:acme/infra.git"])
def test_a_kustomize_remote_base(remote, tmp_path, resource):
    files = {"envs/k/kustomization.yaml": f"resources: ['{resource}']\n"}
    report, outputs, elapsed = run(remote, tmp_path, files, dict([KUSTOMIZE_ENV]))
    assert_refused(report, outputs, elapsed, "envs/k/kustomization.yaml", "is a remote reference")


def test_a_kustomization_reaching_out_of_the_repository(remote, tmp_path, outside):
    files = {"envs/k/kustomization.yaml": "resources: [../../../outside]\n"}
    report, outputs, elapsed = run(remote, tmp_path, files, dict([KUSTOMIZE_ENV]))
    assert_refused(report, outputs, elapsed, "envs/k/kustomization.yaml", "points outside the repository")


def test_a_renderer_that_hangs_is_stopped(remote, tmp_path):
    chart = {".gitops.yaml": "environments: {slow: {branch: main, path: chart, helm: {release: slow}}}\n",
             "chart/Chart.yaml": "apiVersion: v2\nname: slow\nversion: 0.1.0\n"}
    template = "{{- range until 100000 }}{{- range until 100000 }}{{- end }}{{- end }}\n"
    report, outputs, elapsed = run(remote, tmp_path, {"chart/templates/slow.yaml": template}, chart, timeout=1)
    assert_refused(report, outputs, elapsed, "chart", "helm render timed out after 1s")


# -- the nesting bound that guards libyaml's composer ---------------------------------------------

nested = st.recursive(st.one_of(st.integers(), st.text(max_size=5)),
                      lambda inner: st.one_of(st.lists(inner, max_size=3),
                                              st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=30)


def depth(value) -> int:
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
    return 0 if children is None else 1 + max(map(depth, children), default=0)


@given(nested, st.sampled_from([None, True, False]), st.integers(2, 9), st.booleans())
def test_the_nesting_bound_is_never_below_the_real_depth(value, flow, indent, explicit_start):
    dumped = yaml.safe_dump(value, default_flow_style=flow, indent=indent, explicit_start=explicit_start)
    assert nesting_bound(dumped) >= depth(value)


@pytest.mark.parametrize("document", ["- - - - x\n", "- a:\n  - - b: c\n", "? - - a\n: - - b\n",
                                      "- ? - a\n  : b\n", "- !!seq\n  - - a\n", "a:\n- b:\n  - c:\n    - d\n"])
def test_the_nesting_bound_covers_compact_forms(document):
    assert nesting_bound(document) >= node_depth(yaml.compose(document, Loader=yaml.SafeLoader))


def node_depth(node: yaml.Node) -> int:
    if isinstance(node, yaml.SequenceNode):
        return 1 + max(map(node_depth, node.value), default=0)
    if isinstance(node, yaml.MappingNode):
        return 1 + max((node_depth(n) for pair in node.value for n in pair), default=0)
    return 0


# -- the renderers' trust boundary ------------------------------------------------------------------

def test_a_kustomization_field_in_disguise(remote, tmp_path, outside):
    """`reſources` is `resources` to kustomize (Go folds ſ to s): the walk reads it so too."""
    files = {"envs/k/kustomization.yaml": "reſources: [../../../outside]\n"}
    report, outputs, elapsed = run(remote, tmp_path, files, dict([KUSTOMIZE_ENV]))
    assert_refused(report, outputs, elapsed, "envs/k/kustomization.yaml", "points outside the repository")


HELM_ENV = ".gitops.yaml", "environments: {h: {branch: main, path: chart, helm: {release: r, values: [v.yaml]}}}\n"
CHART = {"chart/Chart.yaml": "apiVersion: v2\nname: c\nversion: 0.1.0\n",
         "chart/templates/cm.yaml": CM.format(name="{{ .Values.name }}", value="1"),
         "chart/v.yaml": "name: from-values\n"}


@pytest.mark.parametrize("environment", [KUSTOMIZE_ENV, HELM_ENV], ids=["kustomize", "helm"])
def test_an_absolute_symlink_elsewhere_does_not_break_a_render(remote, tmp_path, environment):
    base_files = {**dict([environment]), **CHART, "envs/k/kustomization.yaml": "resources: [cm.yaml]\n",
                  "envs/k/cm.yaml": CM.format(name="k", value="1"), "docs/hosts": Symlink("/etc/hosts")}
    report, _, _ = run(remote, tmp_path, {"envs/k/cm.yaml": CM.format(name="k", value="2"),
                                          "chart/v.yaml": "name: changed\n"}, base_files)
    assert not report.failed, report
    assert report.counts.total > 0  # rendered: the ConfigMap changed (helm: renamed)


@pytest.mark.parametrize("environment, link", [(KUSTOMIZE_ENV, "envs/k/cm.yaml"), (HELM_ENV, "chart/v.yaml")],
                         ids=["kustomize", "helm-values"])
def test_an_absolute_symlink_the_render_reads_is_refused(remote, tmp_path, outside, environment, link):
    base_files = {**dict([environment]), **CHART, "envs/k/kustomization.yaml": "resources: [cm.yaml]\n",
                  "envs/k/cm.yaml": CM.format(name="k", value="1")}
    report, outputs, elapsed = run(remote, tmp_path, {link: Symlink(str(outside / "secret.yaml"))}, base_files)
    error = error_of(report)
    assert "outside the repository" in error or "leaves the repository" in error, error
    assert SENTINEL not in outputs and elapsed < 5


# -- what one render may cost: its output, read up to the limit, and its memory --------------------

LIMIT = 4 * 1024 * 1024
FLOOD = '{{- range until %d }}\n# {{ "x" | repeat 1000 }}\n{{- end }}\n'
"""A template whose output is about `%d` kilobytes."""
FLOOD_CHART = {".gitops.yaml": "environments: {big: {branch: main, path: chart, helm: {release: big}}}\n",
               "chart/Chart.yaml": "apiVersion: v2\nname: big\nversion: 0.1.0\n"}


def traced(run):
    """What `run` returns, and the most memory Python allocated meanwhile."""
    tracemalloc.start()
    try:
        return run(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def assert_stopped(report: DiffReport, outputs: str, elapsed: float, file: str, words: str) -> None:
    error = error_of(report)
    assert error.startswith(f"{file}: ") and error.endswith(words), error
    assert elapsed < 30, f"took {elapsed:.1f}s"
    assert "Traceback" not in outputs and "xxxxxxxx" not in outputs


def test_a_chart_whose_output_passes_the_limit_is_refused_unread(remote, tmp_path):
    commits = push(remote, {"chart/templates/big.yaml": FLOOD % 40_000}, FLOOD_CHART)  # 40 MB
    (report, outputs, elapsed), peak = traced(lambda: diff(remote, tmp_path, *commits))
    assert_stopped(report, outputs, elapsed, "chart", f"helm output is larger than the limit of {LIMIT:,} bytes")
    assert peak < LIMIT / 2  # the child measured it and said so: the worker read none of it


def test_a_kustomization_whose_output_passes_the_limit_is_cut_short(remote, tmp_path):
    big = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n" + "".join(
        f"  k{i}: {'x' * 1000}\n" for i in range(6_000))  # 6 MB, which kustomize copies to its output
    commits = push(remote, {"envs/k/big.yaml": big},
                   {**dict([KUSTOMIZE_ENV]), "envs/k/kustomization.yaml": "resources: [big.yaml]\n",
                    "envs/k/big.yaml": CM.format(name="big", value="1")})
    (report, outputs, elapsed), peak = traced(lambda: diff(remote, tmp_path, *commits))
    assert_stopped(report, outputs, elapsed, "envs/k",
                   f"kustomize output is larger than the limit of {LIMIT:,} bytes")
    assert peak < LIMIT * 1.25  # read up to the limit, never the whole output


def test_a_chart_that_needs_more_memory_than_the_cap_is_stopped(remote, tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "MEMORY_LIMIT", 384 * 1024 * 1024)  # the default is 1 GiB: as sure, but slower
    commits = push(remote, {"chart/templates/big.yaml": FLOOD % 3_000_000}, FLOOD_CHART)  # 3 GB
    (report, outputs, elapsed), peak = traced(lambda: diff(remote, tmp_path, *commits))
    assert_stopped(report, outputs, elapsed, "chart",
                   "helm render needed more than 384 MiB of memory and was stopped")
    assert peak < LIMIT / 2


def test_kustomize_runs_under_the_memory_cap_too(remote, tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "MEMORY_LIMIT", 16 * 1024 * 1024)  # too little for kubectl to start
    commits = push(remote, {"envs/k/cm.yaml": CM.format(name="k", value="2")},
                   {**dict([KUSTOMIZE_ENV]), "envs/k/kustomization.yaml": "resources: [cm.yaml]\n",
                    "envs/k/cm.yaml": CM.format(name="k", value="1")})
    report, outputs, elapsed = diff(remote, tmp_path, *commits)
    assert_stopped(report, outputs, elapsed, "envs/k",
                   "kustomize needed more than 16 MiB of memory and was stopped")
