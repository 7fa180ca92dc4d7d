"""Deploys of a real git repository through the real `kubernetes` client: to the local Kubernetes API
stand-in, and to a real cluster as well when GITOPS_BOT_TEST_KUBECONFIG names one."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from bot import cli, runtime
from bot.config import ServerConfig
from bot.deploy import (HASH_ANNOTATION, INVENTORY_ANNOTATION, INVENTORY_LABEL, Inventory, Plan, deployable,
                        desired_objects, plan)
from bot.health import waiting_for
from bot.diff import CLUSTER_SCOPED, ObjectKey
from bot.environments import EnvRef, Environments
from bot.events import Repo, to_plain
from bot.gitrepo import CommitSnapshot, Mirror
from bot.jobs import Target, deploy_environment, deploy_push
from bot.pipeline import read_repo_config
from bot.render import Manifest
from bot.queue import Store
from bot.settings import Settings
from tests.conftest import GitRemote
from tests.fakes.github_api import FakeGitHub
from tests.fakes.gitlab_api import FakeGitLab
from tests.harness import KubeTarget

SECRET_VALUE = "c3VwZXItc2VjcmV0LXZhbHVl"


def deployment(image: str, replicas: int = 1) -> str:
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, labels: {{app: web}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, image: "{image}"}}]}}
"""


def manifests(target: KubeTarget, prune: bool = True) -> dict[str, str | None]:
    """An environment of four objects: a Namespace, a ConfigMap, a Service and a Deployment."""
    ns = target.namespace
    return {
        ".gitops.yaml": f"environments:\n  staging: {{branch: main, path: apps, cluster: test, namespace: {ns}, "
                        f"prune: {str(prune).lower()}}}\n",
        "apps/namespace.yaml": f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n",
        "apps/config.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n"
                            "data: {mode: fast, colour: blue}\n",
        "apps/service.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
                             "spec: {selector: {app: web}, ports: [{port: 80}]}\n",
        "apps/web.yaml": deployment(target.image),
    }


def widgets(target: KubeTarget) -> str:
    group = target.crd_group
    return f"""apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: widgets.{group}}}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget}}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}
---
apiVersion: {group}/v1
kind: Widget
metadata: {{name: w1}}
spec: {{size: 3}}
"""


class Scenario:
    """A repository with one environment, `staging`, deployed from `main` to the test's cluster."""

    def __init__(self, remote: GitRemote, target: KubeTarget, rt: runtime.Runtime, forge: str = "github",
                 full_name: str = "acme/infra"):
        self.remote, self.target, self.rt = remote, target, rt
        self.repo = Repo(forge, full_name, remote.url, "main")
        self.mirror = Mirror(remote.bare)
        self.envs = Environments(rt.store.redis, rt.settings.name)
        self.ref = EnvRef(forge, full_name, "staging")
        self.inventory = Inventory.of(rt.settings.name, forge, full_name, "staging")

    def commit(self, files: dict[str, str | None], message: str = "change") -> str:
        return self.remote.commit("main", files, message)

    def deploy(self, sha: str, force: bool = False) -> dict[str, Any]:
        """What the deploy job does for this environment, with no forge to report to."""
        env = read_repo_config(self.mirror.snapshot(sha), "main", {"test"}).get("staging")
        return deploy_environment(self.rt, Target(self.repo, env, sha, "alice"), self.mirror, None, force=force)

    def get(self, kind: str, name: str, api_version: str = "v1") -> dict | None:
        cluster_scoped = kind in ("Namespace", "CustomResourceDefinition")
        return self.target.get(api_version, kind, name, None if cluster_scoped else self.target.namespace)

    def versions(self) -> dict[str, str]:
        objects = [("v1", "Namespace", self.target.namespace), ("v1", "ConfigMap", "settings"),
                   ("v1", "Service", "web"), ("apps/v1", "Deployment", "web")]
        return {kind: self.get(kind, name, api_version)["metadata"]["resourceVersion"]
                for api_version, kind, name in objects}

    def writes(self) -> list[str]:
        """The stand-in's record of write requests, as `METHOD path`; empty on a real cluster."""
        fake = self.target.fake
        return [f"{w.method} {w.path}" for w in fake.writes()] if fake else []


def counts(outcome: dict[str, Any]) -> tuple[int, int, int, int]:
    return outcome["created"], outcome["changed"], outcome["deleted"], outcome["unchanged"]


def make_runtime(tmp_path: Path, redis_url: str, target: KubeTarget, **settings: Any) -> runtime.Runtime:
    config = Settings(redis_url=redis_url, data_dir=tmp_path / "data", name=f"bot-{target.namespace}", **settings)
    server = ServerConfig(repos=("acme/*", "group/*"), clusters={"test": target.cluster},
                          rollout_timeout=target.rollout_timeout, allow_local_urls=True)
    return runtime.Runtime(config, server, Store(redis_lib.Redis.from_url(redis_url), config.name))


@pytest.fixture
def rt(tmp_path, redis_server, redis, kube_target) -> runtime.Runtime:
    return make_runtime(tmp_path, redis_server.url, kube_target)


@pytest.fixture
def scenario(remote, kube_target, rt) -> Scenario:
    return Scenario(remote, kube_target, rt)


# -- planning (pure) ----------------------------------------------------------------------------------
INVENTORY = Inventory.of("bot", "github", "acme/infra", "staging")


def desired(*docs: dict) -> dict:
    return desired_objects([Manifest("x.yaml", d) for d in docs], "apps", set(CLUSTER_SCOPED), INVENTORY)


def obj(kind: str, name: str, api_version: str = "v1", **fields: Any) -> dict:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, **fields}


def live(bodies: dict, **status: dict) -> dict:
    """What a LIST would return for these bodies once applied by the bot; `status` by object name."""
    return {k: {**b, "metadata": {**b["metadata"], "managedFields": [applied_by("gitops-bot", b)]},
                "status": status.get(k.name, {})} for k, b in bodies.items()}


def applied_by(manager: str, body: dict) -> dict:
    """A managedFields entry holding every field of `body` (lists whole), as server-side apply writes it."""
    def fields(value: dict) -> dict:
        return {f"f:{k}": fields(v) if isinstance(v, dict) and v else {} for k, v in value.items()}
    tracked = {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}
    tracked["metadata"] = {k: v for k, v in body["metadata"].items() if k not in ("name", "namespace")}
    return {"manager": manager, "operation": "Apply", "apiVersion": body["apiVersion"], "fieldsType": "FieldsV1",
            "fieldsV1": fields(tracked)}


def steps(p: Plan) -> list[list[str]]:
    return [[f"{a.op} {a.key}" for a in wave] for wave in p.waves]


NS, CM, WEB = obj("Namespace", "apps"), obj("ConfigMap", "c", data={"a": "1"}), \
    obj("Deployment", "web", "apps/v1", spec={"replicas": 2})


def test_plan_orders_namespaces_first_and_things_referred_to_before_workloads():
    p = plan(desired(WEB, CM, NS), {}, prune=True)
    assert steps(p) == [["create Namespace apps"], ["create ConfigMap apps/c", "create apps/Deployment apps/web"]]
    # every object applied is waited for, unless the API's answer shows it healthy or without health information
    assert [str(k) for _, k in p.rollouts] == ["apps/Deployment apps/web", "ConfigMap apps/c", "Namespace apps"]
    assert p.kinds == {"Namespace", "ConfigMap", "Deployment.apps"}


def test_plan_skips_what_is_applied_already_and_changes_the_rest():
    before = desired(NS, CM, WEB)
    ready = {"observedGeneration": 0, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
    after = desired(NS, obj("ConfigMap", "c", data={"a": "2"}), WEB)
    p = plan(after, live(before, web=ready), prune=True)
    assert steps(p) == [["change ConfigMap apps/c"]] and len(p.unchanged) == 2
    assert [str(k) for _, k in p.rollouts] == ["ConfigMap apps/c"]
    stuck = plan(after, live(before, web={"updatedReplicas": 2}), prune=True)
    assert sorted(str(k) for _, k in stuck.rollouts) == ["ConfigMap apps/c", "apps/Deployment apps/web"]  # web: unchanged, not available


def test_plan_prunes_only_with_prune_and_namespaces_last():
    crd = obj("CustomResourceDefinition", "ws.example.com", "apiextensions.k8s.io/v1",
              spec={"group": "example.com", "names": {"kind": "W"}})
    before = desired(NS, CM, crd)
    assert steps(plan({}, live(before), prune=True)) == [
        ["delete ConfigMap apps/c"], ["delete apiextensions.k8s.io/CustomResourceDefinition ws.example.com"],
        ["delete Namespace apps"]]
    assert plan({}, live(before), prune=False).waves == ()


def test_stamp_marks_the_inventory_and_hashes_the_content():
    body = desired(CM)[ObjectKey("", "ConfigMap", "apps", "c")]
    meta = body["metadata"]
    assert meta["namespace"] == "apps" and meta["labels"][INVENTORY_LABEL] == INVENTORY.label
    assert len(INVENTORY.label) <= 63 and meta["annotations"][INVENTORY_ANNOTATION] == INVENTORY.identity
    assert desired(CM) == desired(dict(CM))  # stable
    assert desired(obj("ConfigMap", "c", data={"a": "2"}))[ObjectKey("", "ConfigMap", "apps", "c")][
        "metadata"]["annotations"][HASH_ANNOTATION] != meta["annotations"][HASH_ANNOTATION]
    assert "namespace" not in desired({**NS, "metadata": {"name": "apps", "namespace": "x"}})[
        ObjectKey("", "Namespace", "", "apps")]["metadata"]


HOOK = obj("Pod", "web-test-x7k2p", metadata={"name": "web-test-x7k2p", "annotations": {"helm.sh/hook": "test"}})
GENERATED = obj("Job", "", "batch/v1", metadata={"generateName": "migrate-"})


def test_a_deploy_skips_helm_hooks_and_objects_with_only_a_generated_name_and_says_why():
    kept, skipped = deployable([Manifest("x.yaml", d) for d in (CM, HOOK, GENERATED)], "apps", set(CLUSTER_SCOPED))
    assert [m.doc for m in kept] == [CM]
    assert skipped == ("Pod apps/web-test-x7k2p: a Helm hook (test), which Helm keeps out of a release",
                       "batch/Job apps/migrate-*: only `metadata.generateName`, and server-side apply needs a name")


def test_a_dry_run_by_hand_says_what_the_deploy_skips():
    from bot.deploy import Action, Result
    from bot.deploy_report import dry_run
    skipped = ("batch/Job apps/migrate-*: only `metadata.generateName`, and server-side apply needs a name",)
    result = Result((Action("create", ObjectKey("", "ConfigMap", "apps", "c"), "v1", CM),), skipped=skipped)
    assert dry_run(result, "a" * 40, "staging") == (
        "+ ConfigMap apps/c\nskipped batch/Job apps/migrate-*: only `metadata.generateName`, and server-side apply "
        "needs a name\ndry run of aaaaaaa to staging: 1 created, 0 changed, 0 deleted, 0 unchanged\n")


def test_a_helm_hook_is_never_pruned():
    before = desired(CM, HOOK)
    p = plan(desired(NS), live(before), prune=True)
    assert steps(p) == [["create Namespace apps"], ["delete ConfigMap apps/c"]]


def test_the_content_hash_takes_keys_kubectl_turns_into_strings():
    """`on:` next to string keys crashed the hash with a TypeError when keys were Python booleans."""
    from bot.render import to_manifests
    from bot.yamlio import parse_documents
    text = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {on: x, no: w, 3: z, k: 12:30}\n"
    [body] = desired_objects(to_manifests(parse_documents(text, "c.yaml"), "c.yaml"), "apps", set(CLUSTER_SCOPED),
                             INVENTORY).values()
    assert body["data"] == {"true": "x", "false": "w", "3": "z", "k": "12:30"}
    assert body["metadata"]["annotations"][HASH_ANNOTATION]


@pytest.mark.parametrize("kind, spec, status, waiting", [
    ("Deployment", {"replicas": 2}, {"observedGeneration": 1, "updatedReplicas": 2, "replicas": 2,
                                     "availableReplicas": 2}, None),
    ("Deployment", {"replicas": 2}, {"observedGeneration": 0}, "the controller has not seen the new spec yet"),
    ("Deployment", {"replicas": 2}, {"observedGeneration": 1, "updatedReplicas": 1}, "1 of 2 replicas are updated"),
    ("Deployment", {"replicas": 2}, {"observedGeneration": 1, "updatedReplicas": 2, "replicas": 3},
     "1 old replicas are pending termination"),
    ("Deployment", {}, {"observedGeneration": 1, "updatedReplicas": 1},
     "0 of 1 updated replicas are available"),
    ("Deployment", {}, {"observedGeneration": 1, "conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]},
     "it exceeded its progress deadline"),
    ("StatefulSet", {"replicas": 2}, {"observedGeneration": 1, "readyReplicas": 2, "currentRevision": "a",
                                      "updateRevision": "b"}, "pods are still being updated to the new revision"),
    ("StatefulSet", {"replicas": 2}, {"observedGeneration": 1, "readyReplicas": 2, "currentRevision": "b",
                                      "updateRevision": "b"}, None),
    ("StatefulSet", {"replicas": 3, "updateStrategy": {"rollingUpdate": {"partition": 2}}},
     {"observedGeneration": 1, "readyReplicas": 3, "updatedReplicas": 1}, None),
    ("DaemonSet", {}, {"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3,
                       "numberAvailable": 2}, "2 of 3 updated pods are available"),
    ("DaemonSet", {"updateStrategy": {"type": "OnDelete"}}, {"observedGeneration": 1, "desiredNumberScheduled": 3},
     None),
])
def test_rollout_status(kind, spec, status, waiting):
    workload = {"apiVersion": "apps/v1", "kind": kind, "metadata": {"generation": 1}, "spec": spec, "status": status}
    assert waiting_for(workload) == waiting


# -- applying -----------------------------------------------------------------------------------------
def test_first_deploy_applies_everything_namespace_first(scenario, kube_target):
    sha = scenario.commit(manifests(kube_target))
    outcome = scenario.deploy(sha)
    assert outcome["result"] == "success", outcome["error"]
    assert counts(outcome) == (4, 0, 0, 0)
    config = scenario.get("ConfigMap", "settings")
    meta = config["metadata"]
    assert config["data"] == {"mode": "fast", "colour": "blue"}
    assert meta["labels"][INVENTORY_LABEL] == scenario.inventory.label and len(scenario.inventory.label) <= 63
    assert meta["annotations"][INVENTORY_ANNOTATION] == f"{scenario.rt.settings.name}:github:acme/infra:staging"
    assert meta["annotations"][HASH_ANNOTATION]
    assert {m["manager"] for m in meta["managedFields"]} == {"gitops-bot"}
    status = scenario.envs.status(scenario.ref)
    assert status.deployed.sha == sha and status.deployed.actor == "alice" and status.deploying is None
    if kube_target.fake:
        writes = scenario.writes()
        assert len(writes) == 4 and all(w.startswith("PATCH ") for w in writes)
        assert writes[0] == f"PATCH /api/v1/namespaces/{kube_target.namespace}"
        assert all(r.query["fieldManager"] == ["gitops-bot"] and r.query["force"] == ["true"]
                   for r in kube_target.fake.writes())


def test_a_deploy_with_no_change_writes_nothing(scenario, kube_target):
    scenario.deploy(scenario.commit(manifests(kube_target)))
    before = scenario.versions()
    if kube_target.fake:
        kube_target.fake.reset_records()
    outcome = scenario.deploy(scenario.commit({"README.md": "docs only\n"}))
    assert outcome["result"] == "success" and counts(outcome) == (0, 0, 0, 4)
    assert scenario.versions() == before
    assert scenario.writes() == []


def test_a_change_is_applied_and_dropped_fields_go(scenario, kube_target):
    scenario.deploy(scenario.commit(manifests(kube_target)))
    if kube_target.fake:
        kube_target.fake.reset_records()
    sha = scenario.commit({"apps/config.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n"
                                               "data: {mode: slow}\n",
                           "apps/web.yaml": deployment(kube_target.image, replicas=2)})
    outcome = scenario.deploy(sha)
    assert outcome["result"] == "success", outcome["error"]
    assert counts(outcome) == (0, 2, 0, 2)
    assert scenario.get("ConfigMap", "settings")["data"] == {"mode": "slow"}
    web = scenario.get("Deployment", "web", "apps/v1")
    assert web["spec"]["replicas"] == 2 and web["status"]["availableReplicas"] == 2  # waited for the rollout
    assert len(scenario.writes()) == (2 if kube_target.fake else 0)


def test_prune_deletes_exactly_what_this_environment_applied(scenario, kube_target):
    ns = kube_target.namespace
    files = {**manifests(kube_target),
             "apps/cache.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cache}\ndata: {size: '1'}\n",
             "apps/extra.yaml": f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}-extra}}\n---\n"
                                f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x, namespace: {ns}-extra}}\n"}
    assert scenario.deploy(scenario.commit(files))["created"] == 7
    kube_target.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "by-hand", "namespace": ns}})
    kube_target.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "other-env", "namespace": ns, "labels": {INVENTORY_LABEL: "0" * 40}}})
    if kube_target.fake:
        kube_target.fake.reset_records()

    # The only Service goes too: its kind is no longer rendered, but the environment applied it before.
    outcome = scenario.deploy(scenario.commit({"apps/service.yaml": None, "apps/cache.yaml": None,
                                               "apps/extra.yaml": None}))
    assert outcome["result"] == "success", outcome["error"]
    assert counts(outcome) == (0, 0, 4, 3)
    assert scenario.get("Service", "web") is None and scenario.get("ConfigMap", "cache") is None
    extra = kube_target.get("v1", "Namespace", f"{ns}-extra")
    assert extra is None or extra["metadata"].get("deletionTimestamp")
    for name in ("by-hand", "other-env", "settings"):
        assert scenario.get("ConfigMap", name) is not None
    if kube_target.fake:
        deletes = kube_target.fake.writes()
        assert all(r.method == "DELETE" and r.query["propagationPolicy"] == ["Background"] for r in deletes)
        assert deletes[-1].path == f"/api/v1/namespaces/{ns}-extra"  # namespaces last


def test_values_go_out_as_kubectl_sends_them_and_hooks_never_go(scenario, kube_target):
    ns = kube_target.namespace
    files = {**manifests(kube_target),
             "apps/config.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n"
                                 "data: {on: x, at: 12:30, day: 2024-01-01, when: 2024-01-01T10:00:00Z, op: =}\n",
             "apps/hooks.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: test-x7k2p\n"
                                "  annotations: {helm.sh/hook: test}\n---\n"
                                "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: run-}\n"}
    outcome = scenario.deploy(scenario.commit(files))
    assert outcome["result"] == "success", outcome["error"]
    assert counts(outcome) == (4, 0, 0, 0)
    assert scenario.get("ConfigMap", "settings")["data"] == {
        "true": "x", "at": "12:30", "day": "2024-01-01", "when": "2024-01-01T10:00:00Z", "op": "="}
    assert scenario.get("ConfigMap", "test-x7k2p") is None

    # A hook applied before (by an older version, say) carries the inventory, and is still never pruned.
    hook = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "old-hook", "namespace": ns, "labels": {INVENTORY_LABEL: scenario.inventory.label},
        "annotations": {INVENTORY_ANNOTATION: scenario.inventory.identity, "helm.sh/hook": "pre-install"}}}
    kube_target.apply(hook)
    outcome = scenario.deploy(scenario.commit({"apps/hooks.yaml": None, "apps/service.yaml": None}))
    assert outcome["result"] == "success" and counts(outcome) == (0, 0, 1, 3)
    assert scenario.get("ConfigMap", "old-hook") is not None


def test_without_prune_nothing_is_deleted(scenario, kube_target):
    scenario.deploy(scenario.commit(manifests(kube_target, prune=False)))
    outcome = scenario.deploy(scenario.commit({"apps/service.yaml": None}))
    assert outcome["result"] == "success" and counts(outcome) == (0, 0, 0, 3)
    assert scenario.get("Service", "web") is not None


def test_a_crd_and_its_custom_resources_in_one_deploy(scenario, kube_target):
    if kube_target.fake:
        kube_target.fake.crd_delay = 0.3  # established a moment after it is created, as on a real server
    files = {**manifests(kube_target), "apps/widgets.yaml": widgets(kube_target)}
    outcome = scenario.deploy(scenario.commit(files))
    assert outcome["result"] == "success", outcome["error"]
    assert outcome["created"] == 6
    widget = scenario.get("Widget", "w1", f"{kube_target.crd_group}/v1")
    assert widget["spec"] == {"size": 3} and widget["metadata"]["labels"][INVENTORY_LABEL]
    if kube_target.fake:
        paths = [w.split()[1] for w in scenario.writes()]
        crd = next(i for i, p in enumerate(paths) if "customresourcedefinitions" in p)
        assert crd < next(i for i, p in enumerate(paths) if p.endswith("/widgets/w1"))
    again = scenario.deploy(scenario.commit({"README.md": "x\n"}))
    assert counts(again) == (0, 0, 0, 6)


# -- failing ------------------------------------------------------------------------------------------
def test_a_rollout_time_out_fails_the_deploy_and_the_next_one_works(scenario, kube_target, rt):
    ns = kube_target.namespace
    rt.server = replace(rt.server, rollout_timeout=0.5 if kube_target.fake else 5.0)
    kube_target.stall(ns, "web")
    sha = scenario.commit({**manifests(kube_target), "apps/web.yaml": deployment(kube_target.stalled_image)})
    outcome = scenario.deploy(sha)
    assert outcome["result"] == "failure" and outcome["created"] == 4
    assert outcome["error"].startswith(f"rollout timed out after {rt.server.rollout_timeout:g} s: "
                                       f"apps/Deployment {ns}/web: ")
    status = scenario.envs.status(scenario.ref)
    assert status.deploying is None and status.deployed is None
    assert scenario.envs.history(scenario.ref)[0].result == "failure"

    rt.server = replace(rt.server, rollout_timeout=kube_target.rollout_timeout)
    if kube_target.fake:
        kube_target.fake.ready_after("apps", "Deployment", ns, "web", 0)
    fixed = scenario.deploy(scenario.commit({"apps/web.yaml": deployment(kube_target.image)}))
    assert fixed["result"] == "success", fixed["error"]
    assert scenario.envs.status(scenario.ref).deployed.sha == fixed["sha"]


def test_an_api_error_fails_the_deploy_with_the_reason_only(scenario, kube_target):
    if not kube_target.fake:
        pytest.skip("needs the stand-in's fault injection")
    scenario.deploy(scenario.commit(manifests(kube_target)))
    kube_target.fake.inject("PATCH", r"/configmaps/settings$", 500, times=3)  # more than the client retries
    config = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: slow}\n"
    outcome = scenario.deploy(scenario.commit({"apps/config.yaml": config}))
    assert outcome["result"] == "failure"
    assert outcome["error"] == f"apply ConfigMap {kube_target.namespace}/settings: InternalError (500)"
    assert scenario.envs.status(scenario.ref).deploying is None
    again = scenario.deploy(outcome["sha"], force=True)
    assert again["result"] == "success" and again["changed"] == 1


def test_a_render_error_fails_the_deploy_and_touches_nothing(scenario, kube_target):
    scenario.deploy(scenario.commit(manifests(kube_target)))
    before = scenario.versions()
    outcome = scenario.deploy(scenario.commit({"apps/config.yaml": "kind: [ConfigMap\n"}))
    assert outcome["result"] == "failure" and counts(outcome) == (0, 0, 0, 0)
    assert outcome["error"].startswith("render failed: ") and "apps/config.yaml" in outcome["error"]
    assert scenario.versions() == before


def test_a_kind_the_cluster_does_not_serve_fails_before_any_write(scenario, kube_target):
    files = {**manifests(kube_target), "apps/gadget.yaml": "apiVersion: nowhere.example/v1\nkind: Gadget\n"
                                                           "metadata: {name: g}\n"}
    outcome = scenario.deploy(scenario.commit(files))
    assert outcome["result"] == "failure" and outcome["created"] == 0
    assert "Gadget.nowhere.example: the cluster does not serve nowhere.example/v1" in outcome["error"]
    assert scenario.get("Namespace", kube_target.namespace) is None


# -- safety -------------------------------------------------------------------------------------------
def test_concurrent_deploys_of_one_environment_are_serialised(scenario, kube_target):
    first = scenario.commit(manifests(kube_target))
    second = scenario.commit({"apps/web.yaml": deployment(kube_target.image, replicas=2)})
    if kube_target.fake:
        kube_target.fake.ready_after("apps", "Deployment", kube_target.namespace, "web", 4)  # a slow rollout
    outcomes: dict[str, dict] = {}
    threads = [threading.Thread(target=lambda sha=sha: outcomes.__setitem__(sha, scenario.deploy(sha)))
               for sha in (first, second)]
    threads[0].start()
    while scenario.envs.status(scenario.ref).deploying != first:
        time.sleep(0.01)
    threads[1].start()
    for thread in threads:
        thread.join(60)
    assert outcomes[first]["result"] == outcomes[second]["result"] == "success"
    newer, older = scenario.envs.history(scenario.ref)
    assert (newer.sha, older.sha) == (second, first)
    assert newer.started >= older.started + older.duration  # the second began after the first ended


def test_an_older_commit_is_refused(scenario, kube_target):
    older = scenario.commit(manifests(kube_target))
    newer = scenario.commit({"apps/web.yaml": deployment(kube_target.image, replicas=2)})
    assert scenario.deploy(newer)["result"] == "success"
    outcome = scenario.deploy(older)
    assert outcome["result"] == "refused"
    assert outcome["error"] == f"`{older[:7]}` is older than the deployed `{newer[:7]}`"
    assert scenario.get("Deployment", "web", "apps/v1")["spec"]["replicas"] == 2
    assert scenario.envs.status(scenario.ref).deployed.sha == newer


def test_a_locked_environment_keeps_the_commit_pending_until_unlocked(scenario, kube_target):
    sha = scenario.commit(manifests(kube_target))
    scenario.envs.lock(scenario.ref, "carol", "release freeze")
    assert scenario.deploy(sha) == {"state": "pending"}
    assert scenario.get("Namespace", kube_target.namespace) is None
    assert scenario.envs.status(scenario.ref).pending.sha == sha
    pending = scenario.envs.unlock(scenario.ref)
    assert pending.sha == sha
    outcome = scenario.deploy(pending.sha)
    assert outcome["result"] == "success" and outcome["created"] == 4
    assert scenario.envs.status(scenario.ref).pending is None


def test_the_same_commit_deploys_once(scenario, kube_target):
    sha = scenario.commit(manifests(kube_target))
    first = scenario.deploy(sha)
    if kube_target.fake:
        kube_target.fake.reset_records()
    assert scenario.deploy(sha) == first  # the push after the merge: answered from the record
    assert len(scenario.envs.history(scenario.ref)) == 1
    if kube_target.fake:
        assert kube_target.fake.requests == []  # not even a read


# -- reporting to the forge ---------------------------------------------------------------------------
class GitHubSide:
    name, full_name = "github", "acme/infra"

    def __init__(self, fake: FakeGitHub, remote: GitRemote):
        self.fake = fake
        fake.add_repo(self.full_name, clone_url=remote.url)
        fake.add_pull(self.full_name, 7, head_sha="f" * 40, head_ref="feature", base_sha="e" * 40)

    def replies(self) -> list[str]:
        return [c["body"] for c in self.fake.comments(self.full_name, 7)]

    def deployments(self) -> list[tuple[str, str, list[str]]]:
        return [(d["environment"], d["sha"], [s["state"] for s in self.fake.deployment_statuses.get(d["id"], [])])
                for d in self.fake.deployments.get(self.full_name, [])]


class GitLabSide:
    name, full_name = "gitlab", "group/infra"

    def __init__(self, fake: FakeGitLab, remote: GitRemote):
        self.fake = fake
        fake.add_project(self.full_name, http_url_to_repo=remote.url)
        fake.add_mr(self.full_name, 7, "feature", "main", "f" * 40)

    def replies(self) -> list[str]:
        return [n["body"] for n in self.fake.notes(self.full_name, 7)]

    def deployments(self) -> list[tuple[str, str, list[str]]]:
        # GitLab keeps a deployment's current status only.
        return [(d["environment"]["name"], d["sha"], [d["status"]])
                for d in self.fake.deployments.get(self.full_name, [])]


@pytest.fixture(params=["github", "gitlab"])
def forge(request, tmp_path, redis_server, redis, kube_target, remote):
    fake = FakeGitHub(bot_login="gitops-bot") if request.param == "github" else FakeGitLab()
    with fake:
        side = (GitHubSide if request.param == "github" else GitLabSide)(fake, remote)
        rt = make_runtime(tmp_path, redis_server.url, kube_target, github_api_url=fake.url, github_token="t0ken",
                          gitlab_url=fake.url, gitlab_token="t0ken")
        runtime.install(rt)
        yield side, Scenario(remote, kube_target, rt, side.name, side.full_name)
        runtime.install(None)
    assert fake.errors == []


def merged(scenario: Scenario, sha: str, pull: int | None = 7) -> dict[str, Any]:
    """The deploy job, as a merged pull request (or, without `pull`, a push) queues it."""
    return deploy_push(to_plain(scenario.repo), "main", sha, "alice", pull=pull)["staging"]


def test_the_forge_gets_a_deployment_and_the_pull_request_a_reply(forge, kube_target):
    side, scenario = forge
    files = {**manifests(kube_target), "apps/secret.yaml": f"apiVersion: v1\nkind: Secret\nmetadata: {{name: db}}\n"
                                                           f"data: {{password: {SECRET_VALUE}}}\n"}
    sha = scenario.commit(files)
    assert merged(scenario, sha)["result"] == "success"
    assert merged(scenario, sha, pull=None)["result"] == "success"  # its push: the same deploy, not another
    states = {"github": ["in_progress", "success"], "gitlab": ["success"]}[side.name]
    assert side.deployments() == [("staging", sha, states)]
    (body,) = side.replies()
    assert body.startswith("<!-- gitops-bot:deploy:")
    assert f"Deploy of `{sha[:7]}` to `staging` succeeded" in body and "| 5 | 0 | 0 | 0 |" in body
    assert SECRET_VALUE not in "\n".join(side.fake.posted_texts())


def test_a_failed_deploy_is_reported_with_its_reason(forge, kube_target):
    side, scenario = forge
    scenario.rt.server = replace(scenario.rt.server, rollout_timeout=0.5 if kube_target.fake else 5.0)
    kube_target.stall(kube_target.namespace, "web")
    sha = scenario.commit({**manifests(kube_target), "apps/web.yaml": deployment(kube_target.stalled_image)})
    assert merged(scenario, sha)["result"] == "failure"
    (_, _, states), = side.deployments()
    assert states[-1] == {"github": "failure", "gitlab": "failed"}[side.name]
    (body,) = side.replies()
    assert f"Deploy of `{sha[:7]}` to `staging` failed" in body and "**Error:** rollout timed out after" in body
    assert "Traceback" not in body


def test_a_pending_deploy_is_announced_then_reported_on_unlock(forge, kube_target):
    side, scenario = forge
    sha = scenario.commit(manifests(kube_target))
    scenario.envs.lock(scenario.ref, "carol", "release freeze")
    assert merged(scenario, sha) == {"state": "pending"}
    (notice,) = side.replies()
    assert "is pending" in notice and "locked by @carol: release freeze" in notice and "/unlock staging" in notice
    assert side.deployments() == []
    pending = scenario.envs.unlock(scenario.ref)
    deploy_push(to_plain(scenario.repo), "main", pending.sha, "carol", environment="staging")  # what /unlock queues
    assert len(side.replies()) == 2 and "succeeded" in side.replies()[1]
    assert [d[2][-1] for d in side.deployments()] == ["success"]


def test_the_environments_of_one_push_share_one_export_of_its_tree(forge, kube_target, monkeypatch):
    _, scenario = forge
    exported: list[str] = []
    export = CommitSnapshot.export_tree
    monkeypatch.setattr(CommitSnapshot, "export_tree",
                        lambda snapshot, dest: exported.append(snapshot.sha) or export(snapshot, dest))
    files = manifests(kube_target)
    files["apps/kustomization.yaml"] = f"resources: [{', '.join(p[5:] for p in files if p.startswith('apps/'))}]\n"
    files["more/kustomization.yaml"] = "resources: [extra.yaml]\n"
    files["more/extra.yaml"] = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\ndata: {a: '1'}\n"
    files[".gitops.yaml"] += f"  extra: {{branch: main, path: more, cluster: test, namespace: {kube_target.namespace}}}\n"
    sha = scenario.commit(files)
    outcomes = deploy_push(to_plain(scenario.repo), "main", sha, "alice")
    assert {name: outcome["result"] for name, outcome in outcomes.items()} == {"staging": "success", "extra": "success"}
    assert scenario.get("ConfigMap", "extra")["data"] == {"a": "1"}
    assert exported == [sha]


# -- by hand ------------------------------------------------------------------------------------------
def test_gitops_bot_deploy_by_hand(scenario, kube_target, remote, tmp_path, monkeypatch, capsys, redis_server):
    context = f", context: {kube_target.cluster.context}" if kube_target.cluster.context else ""
    (tmp_path / "bot.yaml").write_text(f"repos: ['acme/*']\nclusters:\n  test: {{kubeconfig: "
                                       f"{kube_target.cluster.kubeconfig}{context}, repos: ['*']}}\n"
                                       f"deploy: {{rollout_timeout: {kube_target.rollout_timeout}}}\n")
    monkeypatch.setenv("GITOPS_BOT_CONFIG", str(tmp_path / "bot.yaml"))
    monkeypatch.setenv("GITOPS_BOT_NAME", scenario.rt.settings.name)
    monkeypatch.delenv("REDIS_URL", raising=False)
    scenario.commit(manifests(kube_target))
    command = ["deploy", "--env", "staging", "--repo", str(remote.work), "--forge", "github", "--repo-name",
               "acme/infra"]

    assert cli.main([*command, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"+ Namespace {kube_target.namespace}\n" in out and f"+ apps/Deployment {kube_target.namespace}/web" in out
    assert "4 created, 0 changed, 0 deleted, 0 unchanged" in out
    assert scenario.get("Namespace", kube_target.namespace) is None  # a dry run changes nothing

    assert cli.main(command) == 2
    assert "REDIS_URL is not set" in capsys.readouterr().err

    monkeypatch.setenv("REDIS_URL", redis_server.url)
    assert cli.main(command) == 0
    assert "succeeded" in capsys.readouterr().out
    assert scenario.get("ConfigMap", "settings") is not None
    assert scenario.envs.history(scenario.ref)[0].actor

    scenario.commit({"apps/service.yaml": None})
    assert cli.main([*command, "--dry-run"]) == 0
    assert f"- Service {kube_target.namespace}/web" in capsys.readouterr().out  # the prune it would do
    assert scenario.get("Service", "web") is not None


@pytest.mark.parametrize("origin, forge, name", [
    ("https://github.com/acme/infra.git", "github", "acme/infra"),
    ("git@github.com:acme/infra.git", "github", "acme/infra"),
    ("https://gitlab.com/group/sub/infra.git", "gitlab", "group/sub/infra"),
    ("ssh://git@code.example.com:2222/group/infra.git", "gitlab", "group/infra"),  # the GITLAB_URL host
])
def test_by_hand_the_forge_repository_comes_from_the_origin_remote(tmp_path, origin, forge, name):
    import git

    repo = git.Repo.init(tmp_path)
    repo.create_remote("origin", origin)
    found = cli._forge_repo(repo, None, None, "https://code.example.com")
    assert (found.forge, found.full_name) == (forge, name)


def test_a_cluster_whose_kubeconfig_is_missing_says_which_file(tmp_path):
    from bot.cluster import ClusterError, connect
    from bot.config import Cluster

    missing = tmp_path / "staging.kubeconfig"
    with pytest.raises(ClusterError) as err:
        connect(Cluster("staging", str(missing), "staging", repos=("*",)))
    assert str(err.value) == (f"cluster 'staging': its kubeconfig {missing} does not exist on this machine "
                              "(the server config names it)")
    with pytest.raises(ClusterError) as err:
        connect(Cluster("production", None, None, in_cluster=True, repos=("*",)))
    assert "in_cluster: this process does not run in a Kubernetes pod" in str(err.value)
