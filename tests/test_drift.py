"""Drift: the live cluster against the deployed commit, through the real `kubernetes` client, with
changes made by the real `kubectl`; on the local API stand-in, and on a real cluster as well when
GITOPS_BOT_TEST_KUBECONFIG names one."""

from __future__ import annotations

import json

from bot import cli, drift, drift_report
from bot.cluster import connect
from bot.pipeline import read_repo_config
from bot.render import render
from tests.test_deploy import SECRET_VALUE, Scenario, manifests, rt, scenario  # noqa: F401 (fixtures)

RESOURCES = """apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, labels: {{app: web}}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: "{image}"
        resources: {{requests: {{cpu: 0.5, memory: 1024Mi}}, limits: {{cpu: 1000m, memory: 1.5Gi}}}}
"""
SECRET = f"apiVersion: v1\nkind: Secret\nmetadata: {{name: token}}\nstringData: {{token: {SECRET_VALUE}}}\n"


def check(scenario: Scenario, sha: str) -> drift.Report:
    """What the periodic check finds, for the commit `sha`."""
    env = read_repo_config(scenario.mirror.snapshot(sha), "main", {"test"}).get("staging")
    with connect(scenario.target.cluster) as client:
        return drift.check(client, render(scenario.mirror.snapshot(sha), env, sandbox=False), env,
                           scenario.inventory, scenario.envs.applied_kinds(scenario.ref))


def deployed(scenario: Scenario, files: dict) -> str:
    outcome = scenario.deploy(scenario.commit(files))
    assert outcome["result"] == "success", outcome["error"]
    return outcome["sha"]


def requests(scenario: Scenario) -> list[str]:
    fake = scenario.target.fake
    return [f"{r.method} {r.path}" for r in fake.requests] if fake else []


def test_a_fresh_deploy_is_in_sync_and_costs_one_list_per_kind(scenario, kube_target):
    sha = deployed(scenario, {**manifests(kube_target), "apps/web.yaml": RESOURCES.format(image=kube_target.image),
                              "apps/secret.yaml": SECRET})
    if kube_target.fake:
        kube_target.fake.reset_records()
    report = check(scenario, sha)
    assert report.in_sync and report.compared == 5 and report.dry_runs == 0, drift_report.text(report, "s", sha)
    # Defaults the server added, quantities it rewrote (0.5 → 500m, 1024Mi → 1Gi) and a Secret's
    # stringData stored as data are not drift; and nothing was written or dry-run to find that out.
    assert not [r for r in requests(scenario) if not r.startswith("GET ")]


def test_a_field_changed_by_hand_is_drift_with_who_changed_it(scenario, kube_target):
    sha = deployed(scenario, manifests(kube_target))
    kube_target.kubectl("-n", kube_target.namespace, "patch", "configmap", "settings", "--type=merge",
                        "-p", '{"data": {"colour": "red"}}')
    report = check(scenario, sha)
    assert [(str(d.key), d.what, d.fields, d.managers) for d in report.drifted] == [
        (f"ConfigMap {kube_target.namespace}/settings", "changed", ("data.colour",), ("kubectl-patch",))]
    assert "-  colour: red\n+  colour: blue" in report.drifted[0].change.diff
    assert report.dry_runs == 1


def test_fields_only_others_set_are_not_drift(scenario, kube_target):
    sha = deployed(scenario, manifests(kube_target))
    kube_target.kubectl("-n", kube_target.namespace, "annotate", "configmap", "settings", "owner=team-a")
    kube_target.kubectl("-n", kube_target.namespace, "label", "service", "web", "tier=front")
    assert check(scenario, sha).in_sync


def test_deleted_and_leftover_objects_are_drift(scenario, kube_target):
    sha = deployed(scenario, manifests(kube_target))
    kube_target.kubectl("-n", kube_target.namespace, "delete", "service", "web")
    leftover = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "old", "namespace": kube_target.namespace, "labels": {"gitops-bot.io/inventory": scenario.inventory.label},
        "annotations": {"gitops-bot.io/inventory-id": scenario.inventory.identity}}, "data": {"a": "1"}}
    kube_target.apply(leftover)
    report = check(scenario, sha)
    assert [(d.key.kind, d.key.name, d.what) for d in report.drifted] == [("ConfigMap", "old", "extra"),
                                                                         ("Service", "web", "missing")]


def test_a_secret_changed_by_hand_shows_no_value(scenario, kube_target):
    sha = deployed(scenario, {**manifests(kube_target), "apps/secret.yaml": SECRET})
    kube_target.kubectl("-n", kube_target.namespace, "patch", "secret", "token", "--type=merge",
                        "-p", json.dumps({"stringData": {"token": "hand-typed-value"}}))
    report = check(scenario, sha)
    assert [(d.key.kind, d.what, d.fields) for d in report.drifted] == [("Secret", "changed", ("data.token",))]
    shown = drift_report.text(report, "staging", sha) + drift_report.markdown(report, "staging", sha) + \
        drift_report.as_json(report, "staging", sha)
    assert "***" in shown and "hand-typed-value" not in shown and SECRET_VALUE not in shown
    import base64
    assert base64.b64encode(b"hand-typed-value").decode() not in shown
    assert base64.b64encode(SECRET_VALUE.encode()).decode() not in shown


def test_the_next_deploy_reverts_a_hand_edit_as_kubectl_apply_would(scenario, kube_target):
    deployed(scenario, manifests(kube_target))
    kube_target.kubectl("-n", kube_target.namespace, "patch", "configmap", "settings", "--type=merge",
                        "-p", '{"data": {"colour": "red"}}')
    outcome = scenario.deploy(scenario.commit({"README.md": "x\n"}))
    assert outcome["result"] == "success" and outcome["changed"] == 1 and outcome["unchanged"] == 3
    assert scenario.get("ConfigMap", "settings")["data"]["colour"] == "blue"
    assert check(scenario, outcome["sha"]).in_sync


def test_gitops_bot_drift_by_hand(scenario, kube_target, remote, tmp_path, monkeypatch, capsys, redis_server):
    context = f", context: {kube_target.cluster.context}" if kube_target.cluster.context else ""
    (tmp_path / "bot.yaml").write_text(f"repos: ['acme/*']\nclusters:\n  test: {{kubeconfig: "
                                       f"{kube_target.cluster.kubeconfig}{context}, repos: ['*']}}\n")
    monkeypatch.setenv("GITOPS_BOT_CONFIG", str(tmp_path / "bot.yaml"))
    monkeypatch.setenv("GITOPS_BOT_NAME", scenario.rt.settings.name)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    command = ["drift", "--env", "staging", "--repo", str(remote.work), "--forge", "github", "--repo-name",
               "acme/infra"]
    sha = deployed(scenario, {**manifests(kube_target), "apps/secret.yaml": SECRET})
    scenario.commit({"apps/config.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n"
                                         "data: {mode: slow}\n"})  # not deployed: the drift is of `sha`
    assert cli.main(command) == 0
    assert f"== staging at {sha[:7]}: in sync: 5 objects as deployed" in capsys.readouterr().out

    kube_target.kubectl("-n", kube_target.namespace, "patch", "secret", "token", "--type=merge",
                        "-p", json.dumps({"stringData": {"token": "hand-typed-value"}}))
    kube_target.kubectl("-n", kube_target.namespace, "scale", "deployment", "web", "--replicas=3")
    assert cli.main(command) == 1
    out = capsys.readouterr().out
    assert f"== staging at {sha[:7]}: drifted: 2 of 5 objects" in out
    assert f"~ apps/Deployment {kube_target.namespace}/web  changed in the cluster: spec.replicas" in out
    assert "-  replicas: 3\n  +  replicas: 1" in out
    assert "hand-typed-value" not in out and SECRET_VALUE not in out and "***" in out

    assert cli.main([*command, "--format", "json"]) == 1
    found = json.loads(capsys.readouterr().out)
    assert [(d["kind"], d["fields"], d["managers"]) for d in found["drifted"]] == [
        ("Deployment", ["spec.replicas"], ["kubectl"]), ("Secret", ["data.token"], ["kubectl-patch"])]
    assert cli.main([*command[:2], "nowhere", *command[3:]]) == 2
    assert "no environment 'nowhere'" in capsys.readouterr().err


def test_a_changed_image_is_named_down_to_its_container(scenario, kube_target):
    sha = deployed(scenario, manifests(kube_target))
    kube_target.kubectl("-n", kube_target.namespace, "set", "image", "deployment/web", f"web={kube_target.image}-x")
    (found,) = check(scenario, sha).drifted
    assert (found.what, found.fields, found.managers) == (
        "changed", ("spec.template.spec.containers[0].image",), ("kubectl-set",))
