"""`gitops-bot diff` as a user runs it: a real process on a real repository, its output and exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import GitRemote, git

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{k: '{value}'}}\n"
CONFIG = """environments:
  staging: {branch: main, path: envs/staging}
  production: {branch: main, path: envs/production}
"""


def gitops_bot(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GITOPS_BOT_NAME": "cli-test"}
    return subprocess.run([sys.executable, "-m", "bot", "diff", "--repo", str(repo), *args], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def repo(remote: GitRemote) -> Path:
    """`main` with two environments; `feature` changes staging's ConfigMap and adds one."""
    remote.commit("main", {".gitops.yaml": CONFIG, "envs/staging/app.yaml": CM.format(name="app", value="1"),
                           "envs/production/app.yaml": CM.format(name="app", value="1")})
    remote.commit("feature", {"envs/staging/app.yaml": CM.format(name="app", value="2"),
                              "envs/staging/new.yaml": CM.format(name="new", value="1")}, parent="main")
    git(remote.work, "checkout", "-q", "main")
    return remote.work


def test_no_changes_exit_0(repo):
    result = gitops_bot(repo, "main", "main")
    assert result.returncode == 0, result.stderr
    assert "== staging (envs/staging): no changes" in result.stdout


def test_changes_exit_1_as_plain_text_when_not_a_terminal(repo):
    result = gitops_bot(repo, "main", "feature")
    assert result.returncode == 1, result.stderr
    assert "== staging (envs/staging): 1 added, 1 changed, 0 removed" in result.stdout
    assert "~ ConfigMap app  (envs/staging/app.yaml)" in result.stdout and "+ ConfigMap new" in result.stdout
    assert "== production (envs/production): no changes" in result.stdout
    assert "\033[" not in result.stdout


def test_json_has_the_counts(repo):
    data = json.loads(gitops_bot(repo, "--format", "json", "main", "feature").stdout)
    assert data["counts"] == {"added": 1, "changed": 1, "removed": 0}
    staging, production = data["environments"]
    assert staging["counts"] == {"added": 1, "changed": 1, "removed": 0} and production["unchanged_inputs"]


def test_markdown_is_the_pr_comment(repo):
    result = gitops_bot(repo, "--format", "markdown", "main", "feature")
    assert result.returncode == 1
    assert result.stdout.startswith("<!-- gitops-bot:diff:cli-test -->\n### cli-test diff for `")
    assert "<details><summary><code>~ ConfigMap app</code>" in result.stdout


def test_env_limits_the_diff_to_one_environment(repo):
    result = gitops_bot(repo, "--env", "production", "--format", "json", "main", "feature")
    assert result.returncode == 0
    assert [e["name"] for e in json.loads(result.stdout)["environments"]] == ["production"]


def test_head_defaults_to_the_working_tree(repo):
    (repo / "envs/production/app.yaml").write_text(CM.format(name="app", value="edited"))
    (repo / "envs/production/untracked.yaml").write_text(CM.format(name="untracked", value="1"))
    (repo / ".gitignore").write_text("ignored/\n")
    (repo / "envs/production/ignored").mkdir()
    (repo / "envs/production/ignored/junk.yaml").write_text("not: [valid\n")
    result = gitops_bot(repo, "--format", "json", "main")
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert data["head"] == "working tree" and data["counts"] == {"added": 1, "changed": 1, "removed": 0}
    assert "edited" in data["environments"][1]["changes"][0]["diff"]


def test_the_base_is_the_merge_base_as_on_a_pull_request(remote, repo):
    remote.commit("main", {"envs/production/later.yaml": CM.format(name="later", value="1")})
    result = gitops_bot(repo, "--format", "json", "main", "feature")
    assert json.loads(result.stdout)["counts"] == {"added": 1, "changed": 1, "removed": 0}


@pytest.mark.parametrize("args, message", [
    (["nope", "feature"], "gitops-bot diff: unknown revision 'nope'"),
    (["main", "no/such/branch"], "gitops-bot diff: unknown revision 'no/such/branch'"),
    (["--env", "nope", "main", "feature"], "gitops-bot diff: no environment 'nope' (have: staging, production)"),
])
def test_errors_exit_2_and_say_why(repo, args, message):
    result = gitops_bot(repo, *args)
    assert result.returncode == 2
    assert result.stderr.strip() == message


def test_broken_yaml_exits_2_and_names_the_file(remote, repo):
    remote.commit("broken", {"envs/staging/app.yaml": "data: [1, 2\n"}, parent="main")
    result = gitops_bot(repo, "main", "broken")
    assert result.returncode == 2
    assert "staging: envs/staging/app.yaml: at " in result.stderr and "line 2, column 1" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_not_a_repository_exits_2(tmp_path):
    result = gitops_bot(tmp_path / "nowhere", "main")
    assert result.returncode == 2 and "is not in a git repository" in result.stderr


def test_the_bots_own_kubernetes_manifests_render(remote: GitRemote):
    """The bot can deploy itself: its kustomization in config/kubernetes renders through its own diff."""
    manifests = Path(__file__).resolve().parents[1] / "config" / "kubernetes"
    files = {f"deploy/{p.name}": p.read_text() for p in manifests.iterdir() if p.is_file()}
    remote.commit("main", {".gitops.yaml": "environments:\n  self: {branch: main, path: deploy}\n"})
    remote.commit("main", files)
    result = gitops_bot(remote.work, "--format", "json", "HEAD~1", "HEAD")
    assert result.returncode == 1, result.stderr
    changes = json.loads(result.stdout)["environments"][0]["changes"]
    added = {(c["kind"], c["namespace"], c["name"]) for c in changes}
    assert {("Namespace", "", "gitops-bot"), ("Deployment", "gitops-bot", "gitops-bot-web"),
            ("Deployment", "gitops-bot", "gitops-bot-worker"), ("StatefulSet", "gitops-bot", "redis"),
            ("Service", "gitops-bot", "gitops-bot"), ("NetworkPolicy", "gitops-bot", "redis")} <= added
    assert not any(kind == "Secret" for kind, _, _ in added)  # secrets are referenced, never embedded
    diffs = {c["name"]: c["diff"] for c in changes}
    assert "--requirepass" in diffs["redis"] and "redis://:$(REDIS_PASSWORD)@redis:6379/0" in diffs["gitops-bot-worker"]
    for workload in ("gitops-bot-web", "gitops-bot-worker"):
        assert "runAsUser: 10001" in diffs[workload]  # numeric, as runAsNonRoot needs


def test_an_error_is_said_once_on_stderr(remote, repo):
    remote.commit("broken", {"envs/staging/app.yaml": "data: [1, 2\n"}, parent="main")
    result = gitops_bot(repo, "main", "broken")
    assert result.returncode == 2
    assert "== staging (envs/staging): render failed" in result.stdout and "line 2" not in result.stdout
    assert len(result.stderr.strip().splitlines()) == 1 and "line 2, column 1" in result.stderr


def test_a_standard_unified_diff_that_patch_tools_read(remote, repo, tmp_path):
    result = gitops_bot(repo, "--format", "patch", "main", "feature")
    assert result.returncode == 1, result.stderr
    before = gitops_bot(repo, "--format", "json", "main", "feature")
    changes = json.loads(before.stdout)["environments"][0]["changes"]
    changed = next(c for c in changes if c["op"] == "changed")
    path = f"staging/core/ConfigMap/{changed['namespace'] or '_cluster'}/{changed['name']}.yaml"
    assert f"--- a/{path}\n+++ b/{path}\n@@ " in result.stdout
    added = next(c for c in changes if c["op"] == "added")
    assert f"--- /dev/null\n+++ b/staging/core/ConfigMap/{added['namespace'] or '_cluster'}/{added['name']}.yaml" \
        in result.stdout
    read = subprocess.run(["git", "apply", "--numstat", "-"], input=result.stdout, text=True, capture_output=True,
                          cwd=tmp_path)  # git reads it as a patch: a count of lines per object
    assert read.returncode == 0 and f"\t{path}" in read.stdout, read.stderr


def test_no_color_is_honoured(repo):
    import pty

    env = {**os.environ, "NO_COLOR": "1"}
    leader, follower = pty.openpty()
    proc = subprocess.run([sys.executable, "-m", "bot", "diff", "--repo", str(repo), "main", "feature"], env=env,
                          stdout=follower, stderr=subprocess.PIPE, timeout=60)
    os.close(follower)
    output = os.read(leader, 65536)
    os.close(leader)
    assert proc.returncode == 1 and b"\x1b[" not in output and b"== staging" in output
