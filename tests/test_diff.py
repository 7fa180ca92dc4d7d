"""The object diff as a table of small cases."""

from __future__ import annotations

import pytest
import yaml

from bot.config import IgnoreRule
from bot.diff import ObjectKey, diff_manifests
from bot.render import Manifest, to_manifests
from bot.renderers.errors import RenderError
from bot.yamlio import parse_documents


def objects(text: str, source: str = "app.yaml") -> list[Manifest]:
    return list(to_manifests(parse_documents(text.encode(), source), source))


CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}{ns}}}\ndata: {{k: '{value}'}}\n"


def cm(name: str = "cfg", value: str = "1", ns: str | None = None) -> str:
    return CM.format(name=name, value=value, ns=f", namespace: {ns}" if ns else "")


def summary(base: str, head: str, **kwargs) -> list[tuple[str, str]]:
    changes, _ = diff_manifests(objects(base), objects(head), **kwargs)
    return [(c.op, str(c.key)) for c in changes]


@pytest.mark.parametrize("base, head, expected", [
    ("", cm(), [("+", "ConfigMap cfg")]),
    (cm(), "", [("-", "ConfigMap cfg")]),
    (cm(value="1"), cm(value="2"), [("~", "ConfigMap cfg")]),
    (cm(), cm(), []),
    (cm(ns="a"), cm(ns="b"), [("-", "ConfigMap a/cfg"), ("+", "ConfigMap b/cfg")]),
], ids=["add", "remove", "change", "same", "namespace-move"])
def test_basic_cases(base, head, expected):
    assert summary(base, head) == expected


def test_namespace_defaulting_matches_explicit_namespace():
    assert summary(cm(), cm(ns="apps"), namespace="apps") == []
    assert summary(cm(), cm(ns="apps")) == [("-", "ConfigMap cfg"), ("+", "ConfigMap apps/cfg")]


def test_cluster_scoped_objects_never_take_the_default_namespace():
    ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n"
    assert summary("", ns, namespace="apps") == [("+", "Namespace apps")]


def test_custom_resource_scope_comes_from_its_crd():
    crd = """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec: {group: example.com, scope: Cluster, names: {kind: Widget, plural: widgets}}
---
"""
    widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"
    changes = summary(crd, crd + widget, namespace="apps")
    assert changes == [("+", "example.com/Widget w")]


def test_noise_fields_are_not_changes():
    noisy = """apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
  uid: 123
  resourceVersion: "99"
  generation: 4
  creationTimestamp: "2024-01-01T00:00:00Z"
  selfLink: /api/v1/x
  managedFields: [{manager: kubectl}]
  annotations: {kubectl.kubernetes.io/last-applied-configuration: "{}"}
data: {k: '1'}
status: {phase: Ready}
"""
    assert summary(cm(), noisy) == []


def test_ignore_rules_drop_annotations_labels_and_pointers():
    base = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations: {checksum/config: aaa, team: a}
  labels: {helm.sh/chart: web-1.0}
spec: {replicas: 1, paused: false}
"""
    head = base.replace("aaa", "bbb").replace("web-1.0", "web-1.1").replace("replicas: 1", "replicas: 5")
    rules = [IgnoreRule(kinds=("Deployment",), annotations=("checksum/*",), labels=("helm.sh/chart",),
                        paths=("/spec/replicas",))]
    assert summary(base, head, rules=rules) == []
    assert summary(base, head.replace("team: a", "team: b"), rules=rules) == [("~", "apps/Deployment web")]
    other_kind = [IgnoreRule(kinds=("StatefulSet",), paths=("/spec/replicas",))]
    assert summary(base, head, rules=other_kind) == [("~", "apps/Deployment web")]


def test_moving_an_object_between_files_is_not_a_change():
    changes, _ = diff_manifests(objects(cm(), "a.yaml"), objects(cm(), "b.yaml"))
    assert changes == ()


def test_key_order_does_not_matter():
    reordered = "kind: ConfigMap\ndata: {k: '1'}\nmetadata: {name: cfg}\napiVersion: v1\n"
    assert summary(cm(), reordered) == []


SECRET = """apiVersion: v1
kind: Secret
metadata: {{name: creds}}
data: {{password: {pw}, user: YWRtaW4=}}
stringData: {{token: {token}}}
"""


@pytest.mark.parametrize("before, after, context", [
    (("aHVudGVyMg==", "tok-1"), ("c2VjcmV0Mg==", "tok-1"), "user: '***'"),
    (("aHVudGVyMg==", "tok-1"), ("aHVudGVyMg==", "tok-2"), "stringData:"),
], ids=["data", "stringData"])
def test_secret_values_are_masked(before, after, context):
    base = SECRET.format(pw=before[0], token=before[1])
    head = SECRET.format(pw=after[0], token=after[1])
    (change,), _ = diff_manifests(objects(base), objects(head))
    for value in (*before, *after, "YWRtaW4="):
        assert value not in change.diff
    assert "*** (before)" in change.diff and "*** (after)" in change.diff
    assert context in change.diff  # unchanged values still show, masked


def test_unchanged_secret_is_not_reported_and_new_secret_is_masked():
    base = SECRET.format(pw="aHVudGVyMg==", token="tok")
    assert diff_manifests(objects(base), objects(base))[0] == ()
    (change,), _ = diff_manifests([], objects(base))
    assert change.op == "+" and "aHVudGVyMg==" not in change.diff and "tok" not in change.diff.replace("token", "")


def test_list_kinds_are_flattened_and_empty_documents_skipped():
    text = "---\n---\n" + yaml.safe_dump({"apiVersion": "v1", "kind": "List",
                                          "items": [yaml.safe_load(cm("a")), yaml.safe_load(cm("b"))]})
    assert summary("", text) == [("+", "ConfigMap a"), ("+", "ConfigMap b")]


def test_duplicate_identities_are_flagged():
    _, warnings = diff_manifests([], objects(cm(value="1"), "a.yaml") + objects(cm(value="2"), "b.yaml"))
    assert len(warnings) == 1 and "ConfigMap cfg" in warnings[0] and "a.yaml" in warnings[0]


def test_unified_diff_has_three_lines_of_context():
    base = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: '1', b: '2', c: '3', d: '4', e: '5', f: '6', g: '7', h: '8'}\n"
    (change,), _ = diff_manifests(objects(base), objects(base.replace("e: '5'", "e: '50'")))
    lines = change.diff.splitlines()
    assert lines[0].startswith("@@")
    assert [l for l in lines if l.startswith(("-", "+"))] == ["-  e: '5'", "+  e: '50'"]
    assert len(lines) == 1 + 3 + 2 + 3


@pytest.mark.parametrize("text, words", [
    ("a: [1, 2\n", "line 2, column 1"),
    ("- 1\n- 2\n", "not a mapping"),
    ("kind: ConfigMap\nmetadata: {name: x}\n", "apiVersion"),
    ("apiVersion: v1\nkind: ConfigMap\n", "metadata.name"),
])
def test_broken_documents_name_the_problem(text, words):
    with pytest.raises(RenderError) as err:
        objects(text, "bad.yaml")
    assert err.value.file == "bad.yaml" and words in err.value.message


def test_object_key_display():
    assert str(ObjectKey("apps", "Deployment", "ns", "web")) == "apps/Deployment ns/web"
    assert str(ObjectKey("", "Namespace", "", "ns")) == "Namespace ns"
