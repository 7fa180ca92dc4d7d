"""What the bot applied against what the cluster holds: the local comparison that spares a dry run
for objects plainly as applied, on managedFields in the shapes a real API server writes."""

from __future__ import annotations

import copy

import pytest

from bot.applied import as_applied, differences, holders, path_text, same_as_applied, unowned

DESIRED = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
    "spec": {"replicas": 2, "template": {"spec": {"containers": [{
        "name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}],
        "resources": {"requests": {"cpu": 0.5, "memory": "1024Mi"}}}]}}},
}
# As a real API server keeps it: defaults added, quantities canonical, a port keyed with its
# defaulted protocol, and the bot's field set in FieldsV1 with list items by merge key.
LIVE = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}, "uid": "u", "generation": 1,
                 "managedFields": [{
                     "manager": "gitops-bot", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {
                         "f:replicas": {}, "f:template": {"f:spec": {"f:containers": {'k:{"name":"web"}': {
                             ".": {}, "f:name": {}, "f:image": {},
                             "f:ports": {'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}}},
                             "f:resources": {"f:requests": {"f:cpu": {}, "f:memory": {}}}}}}}}}}]},
    "spec": {"replicas": 2, "revisionHistoryLimit": 10, "template": {"spec": {"restartPolicy": "Always", "containers": [{
        "name": "web", "image": "nginx:1.25", "imagePullPolicy": "IfNotPresent",
        "ports": [{"containerPort": 80, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]}}},
    "status": {"replicas": 2},
}
CONTAINER = ("spec", "template", "spec", "containers", 0)


def edited(path: tuple, value, manager: str = "kubectl-edit", take: dict | None = None) -> dict:
    """LIVE with one field changed by another manager, which takes it from the bot as an Update does."""
    live = copy.deepcopy(LIVE)
    node = live
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    if take is not None:
        mine = live["metadata"]["managedFields"][0]["fieldsV1"]
        node = mine
        for part in take["from"][:-1]:
            node = node[part]
        del node[take["from"][-1]]
        live["metadata"]["managedFields"].append({"manager": manager, "operation": "Update", "apiVersion": "apps/v1",
                                                  "fieldsType": "FieldsV1", "fieldsV1": take["fields"]})
    return live


def test_defaults_canonical_quantities_and_keyed_lists_are_the_same_as_applied():
    assert list(differences(DESIRED, LIVE)) == []
    assert unowned(DESIRED, LIVE, "gitops-bot") == {}
    assert same_as_applied(DESIRED, LIVE, "gitops-bot")


@pytest.mark.parametrize("path, value, shown", [
    (("spec", "replicas"), 3, "spec.replicas"),
    ((*CONTAINER, "image"), "nginx:1.26", "spec.template.spec.containers[0].image"),
    ((*CONTAINER, "resources", "requests", "cpu"), "600m", "spec.template.spec.containers[0].resources.requests.cpu"),
    (("metadata", "labels"), {}, "metadata.labels.app"),
    ((*CONTAINER, "ports"), [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 81}],
     "spec.template.spec.containers[0].ports"),
])
def test_a_value_changed_or_gone_is_a_difference(path, value, shown):
    assert [path_text(p) for p in differences(DESIRED, edited(path, value))] == [shown]


def test_a_container_another_party_added_is_not_a_difference_but_one_removed_is():
    live = copy.deepcopy(LIVE)
    containers = live["spec"]["template"]["spec"]["containers"]
    containers.append({"name": "sidecar", "image": "proxy:1"})  # injected by an admission webhook
    assert list(differences(DESIRED, live)) == []
    del containers[0]
    assert [path_text(p) for p in differences(DESIRED, live)] == ["spec.template.spec.containers[0]"]


def test_a_quantity_is_compared_by_value_only_where_the_server_keeps_quantities():
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"cpu": "0.5"}}
    assert list(differences(config, {**config, "data": {"cpu": "500m"}})) == [("data", "cpu")]


def test_a_field_another_manager_took_is_unowned_and_names_it():
    live = edited(("spec", "replicas"), 2, take={"from": ("f:spec", "f:replicas"),
                                                 "fields": {"f:spec": {"f:replicas": {}}}})
    assert list(differences(DESIRED, live)) == []  # the same value, set back by hand: still not the bot's
    assert unowned(DESIRED, live, "gitops-bot") == {("spec", "replicas"): ("kubectl-edit",)}
    assert not same_as_applied(DESIRED, live, "gitops-bot")
    assert holders(live, ("spec", "replicas"), "gitops-bot") == {"kubectl-edit"}


def test_an_item_another_manager_added_to_a_keyed_list_is_not_the_bots_concern():
    live = copy.deepcopy(LIVE)
    live["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "DEBUG", "value": "1"}]
    live["metadata"]["managedFields"].append({"manager": "kubectl-edit", "operation": "Update", "fieldsType": "FieldsV1",
                                              "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                                                  'k:{"name":"web"}': {"f:env": {'k:{"name":"DEBUG"}': {}}}}}}}}})
    assert same_as_applied(DESIRED, live, "gitops-bot")


def test_without_the_bots_entry_every_field_is_unowned():
    live = {**LIVE, "metadata": {**LIVE["metadata"], "managedFields": []}}
    assert unowned(DESIRED, live, "gitops-bot") == {(): ()}


def test_a_secret_stringdata_is_compared_as_the_data_the_server_stores():
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"token": "abc"}}
    stored = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "Opaque",
              "data": {"token": "YWJj"}, "managedFields": []}
    assert list(differences(as_applied(secret), stored)) == []
    assert list(differences(as_applied(secret), {**stored, "data": {"token": "eHl6"}})) == [("data", "token")]
