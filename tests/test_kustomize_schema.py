"""Kustomize given its own schema of the built-in kinds as a file builds exactly what it builds with
its built-in copy: strategic-merge patches of every shape, checked against plain `kubectl kustomize`."""

from __future__ import annotations

import gzip
import json
import textwrap
from pathlib import Path

import pytest
import yaml

from bot.config import Environment
from bot.gitrepo import WorkTreeSnapshot
from bot.render import Workspace, render
from bot.renderers import openapi
from bot.renderers.kustomize import render_kustomize, with_openapi_schema

POD_SPEC = """
      initContainers: [{name: init, image: busybox, command: [sh, -c, "true"]}]
      imagePullSecrets: [{name: registry}]
      tolerations: [{key: a, operator: Exists}]
      volumes: [{name: data, emptyDir: {}}, {name: cache, emptyDir: {}}]
      containers:
        - name: web
          image: nginx:1.25
          ports: [{containerPort: 80, name: http}, {containerPort: 9090, name: metrics}]
          env: [{name: A, value: "1"}, {name: B, value: "2"}]
          volumeMounts: [{name: data, mountPath: /data}, {name: cache, mountPath: /cache}]
        - name: sidecar
          image: envoy:1
"""
POD_PATCH = """
      initContainers: [{name: init, image: busybox:1.36}]
      imagePullSecrets: [{name: other}]
      tolerations: [{key: b, operator: Exists}]
      volumes: [{name: cache, $patch: delete}, {name: extra, configMap: {name: extra}}]
      containers:
        - name: web
          image: nginx:1.26
          ports: [{containerPort: 9090, name: prom}, {containerPort: 8443, name: https}]
          env: [{name: B, value: "3"}, {name: C, value: "4"}]
          volumeMounts: [{mountPath: /cache, $patch: delete}, {name: extra, mountPath: /extra}]
        - name: sidecar
          $patch: delete
        - name: logger
          image: fluent-bit:3
"""


def pod_template(spec: str) -> str:
    return "  template:\n    metadata: {labels: {app: web}}\n    spec:\n" + textwrap.indent(textwrap.dedent(spec), "      ")


BASE = {
    "deployment.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n"
                       "  selector: {matchLabels: {app: web}}\n"
                       "  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1}}\n" + pod_template(POD_SPEC),
    "statefulset.yaml": "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n"
                        "  serviceName: db\n  selector: {matchLabels: {app: db}}\n"
                        "  volumeClaimTemplates: [{metadata: {name: a}}, {metadata: {name: b}}]\n"
                        + pod_template(POD_SPEC),
    "cronjob.yaml": "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly}\nspec:\n  schedule: '0 1 * * *'\n"
                    "  jobTemplate:\n    spec:\n" + textwrap.indent(pod_template(POD_SPEC), "    "),
    "service.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n"
                    "  ports: [{port: 80, protocol: TCP, name: http}, {port: 53, protocol: UDP, name: dns}]\n",
    "ingress.yaml": "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\nspec:\n"
                    "  rules: [{host: a.example.com}, {host: b.example.com}]\n",
    "role.yaml": "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: reader}\n"
                 "rules: [{apiGroups: [''], resources: [pods], verbs: [get]}]\n",
    "widget.yaml": "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"
                   "spec: {items: [{name: a, size: 1}, {name: b, size: 2}]}\n",
    "kustomization.yaml": "resources: [deployment.yaml, statefulset.yaml, cronjob.yaml, service.yaml, "
                          "ingress.yaml, role.yaml, widget.yaml]\n",
}
PATCHES = {
    "deployment.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n"
                       "  strategy: {$retainKeys: [type], type: Recreate}\n" + pod_template(POD_PATCH),
    "statefulset.yaml": "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n"
                        "  volumeClaimTemplates: [{metadata: {name: c}}]\n" + pod_template(POD_PATCH),
    "cronjob.yaml": "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly}\nspec:\n"
                    "  jobTemplate:\n    spec:\n" + textwrap.indent(pod_template(POD_PATCH), "    "),
    "service.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n"
                    "  ports: [{port: 53, protocol: TCP, name: dns-tcp}, {port: 80, protocol: TCP, targetPort: 8080}]\n",
    "ingress.yaml": "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web}\nspec:\n"
                    "  rules: [{host: c.example.com}]\n",
    "role.yaml": "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: reader}\n"
                 "rules: [{apiGroups: [apps], resources: [deployments], verbs: [list]}]\n",
    "widget.yaml": "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {items: [{name: b, size: 3}]}\n",
}


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    write(root, {f"base/{name}": text for name, text in BASE.items()})
    write(root, {f"envs/patched/{name}": text for name, text in PATCHES.items()})
    write(root, {"envs/patched/kustomization.yaml": "resources: [../../base]\nnamespace: team\nnamePrefix: p-\n"
                                                    "patches:\n" + "".join(f"- path: {n}\n" for n in PATCHES)})
    return root


def objects(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def rendered(repo: Path, path: str) -> tuple[list[dict], bool]:
    """The objects a job renders at `path`, and whether kustomize was given the schema file."""
    snapshot = WorkTreeSnapshot(repo)
    with Workspace() as space:
        manifests = render(snapshot, Environment("env", "main", path), workspace=space)
        given = (space.tree(snapshot).root / path / openapi.SCHEMA_FILE).is_file()
    return [m.doc for m in manifests], given


def test_every_patch_merges_as_with_the_built_in_schema(repo: Path) -> None:
    kustomization = (repo / "envs/patched/kustomization.yaml").read_text()
    docs, given = rendered(repo, "envs/patched")
    assert given
    assert docs == objects(render_kustomize(repo, "envs/patched"))
    assert (repo / "envs/patched/kustomization.yaml").read_text() == kustomization  # the bot's copy is edited
    assert not (repo / "envs/patched" / openapi.SCHEMA_FILE).exists()
    web = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in web["containers"]] == ["web", "logger"]  # merged by name, one deleted
    assert {e["name"]: e["value"] for e in web["containers"][0]["env"]} == {"A": "1", "B": "3", "C": "4"}
    assert web["tolerations"] == [{"key": "b", "operator": "Exists"}]  # no merge key: replaced


JSON_PATCH = '[{"op": "replace", "path": "/spec/replicas", "value": 2}]'


@pytest.mark.parametrize("kustomization, given", [
    ("resources: [../../base]\nnamespace: team\n", False),
    (f"resources: [../../base]\npatches:\n- target: {{kind: Deployment}}\n  patch: '{JSON_PATCH}'\n", False),
    ("resources: [../../base]\npatchesStrategicMerge: [service.yaml]\n", True),
    ("resources: [../../base]\ncomponents: [../../component]\n", True),
])
def test_only_a_build_with_a_strategic_merge_patch_is_given_the_schema(repo: Path, kustomization: str,
                                                                       given: bool) -> None:
    """Kustomize reads its built-in copy for those, and a schema file for a kind it does not know by
    heart (the Widget here): given to a build without such a patch, it would cost time."""
    write(repo, {"envs/k/kustomization.yaml": kustomization, "envs/k/service.yaml": PATCHES["service.yaml"],
                 "component/kustomization.yaml": "kind: Component\npatches: [{path: service.yaml}]\n",
                 "component/service.yaml": PATCHES["service.yaml"]})
    docs, was_given = rendered(repo, "envs/k")
    assert was_given == given
    assert docs == objects(render_kustomize(repo, "envs/k"))


def test_a_schema_of_the_users_own_anywhere_in_the_tree_is_left_to_kustomize(repo: Path) -> None:
    """Kustomize reads a nested kustomization's `openapi` only where the root sets none, so the bot
    gives none to any build of such a tree. This schema knows no merge keys: lists are replaced."""
    schema = {"swagger": "2.0", "info": {"title": "t", "version": "v"}, "paths": {}, "definitions": {}}
    write(repo, {"base/schema.json": json.dumps(schema),
                 "base/kustomization.yaml": BASE["kustomization.yaml"] + "OpenAPI: {path: schema.json}\n"})
    docs, given = rendered(repo, "envs/patched")
    assert not given
    assert docs == objects(render_kustomize(repo, "envs/patched"))
    web = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in web["containers"]] == ["web", "sidecar", "logger"]


def test_a_kustomize_with_another_built_in_schema_keeps_it(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openapi, "KUSTOMIZE_VERSIONS", ((6, 0), (6, 1)))
    openapi.reads_this_schema.cache_clear()
    try:
        docs, given = rendered(repo, "envs/patched")
    finally:
        openapi.reads_this_schema.cache_clear()
    assert not given
    assert docs == objects(render_kustomize(repo, "envs/patched"))


def test_a_file_of_that_name_in_the_repository_stays_as_it_is(repo: Path) -> None:
    write(repo, {f"envs/patched/{openapi.SCHEMA_FILE}": "{}"})
    snapshot = WorkTreeSnapshot(repo)
    with Workspace() as space:
        manifests = render(snapshot, Environment("env", "main", "envs/patched"), workspace=space)
        assert (space.tree(snapshot).root / "envs/patched" / openapi.SCHEMA_FILE).read_text() == "{}"
    assert [m.doc for m in manifests] == objects(render_kustomize(repo, "envs/patched"))


def test_the_schema_is_kustomizes_own_bundle_unchanged() -> None:
    bundle = json.loads(gzip.decompress(openapi.BUNDLE.read_bytes()))
    document = json.loads(openapi.schema())
    assert document["definitions"] == bundle["definitions"]
    assert len(document["definitions"]) == 618
    assert bundle["sources"] == [{"kubernetesVersion": "v1.21.2", "sha256": openapi.SOURCE_SHA256}]
    assert document["paths"]["/apps/v1/namespaces/{namespace}/Deployment"]["get"][openapi.GVK] == \
        {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert document["paths"]["/v1/Namespace"]["get"][openapi.GVK] == {"group": "", "version": "v1", "kind": "Namespace"}


@pytest.mark.parametrize("text, edited", [
    ("resources: [a]\n", f'openapi: {{"path": "{openapi.SCHEMA_FILE}"}}\nresources: [a]\n'),
    ("", f'openapi: {{"path": "{openapi.SCHEMA_FILE}"}}\n'),
    ('{"resources": ["a"]}', f'{{openapi: {{"path": "{openapi.SCHEMA_FILE}"}}, "resources": ["a"]}}'),
    ("openAPI: {version: v1.21.2}\n", None),
    ("resources: [a]\n---\nresources: [b]\n", None),
])
def test_the_schema_is_named_only_where_the_edit_means_nothing_else(text: str, edited: str | None) -> None:
    assert with_openapi_schema(text, "kustomization.yaml") == edited
