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
  uid: "123"
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


# -- values as kubectl sends them ----------------------------------------------------------------------

QUOTE_ONLY = [  # (base, head): the same text, quoted differently; kubectl decides whether it is a change
    ('"12:30"', "12:30"), ("'2024-01-01'", "2024-01-01"), ('"2024-01-01T10:00:00Z"', "2024-01-01T10:00:00Z"),
    ("'2024-01-01 10:00:00'", "2024-01-01 10:00:00"), ('"="', "="), ("'<<'", "<<"), ('"1:20:30"', "1:20:30"),
    ('"0o755"', "0o755"), ('"y"', "y"), ("'n'", "n"), ("'on'", "on"), ('"1e3"', "1e3"), ("'0x1F'", "0x1F"),
    ("'~'", "~"), ("''", "null"), ("'.inf'", "'.inf'"), ("1", "1.0"), ("1000", "1e3"), ("493", "0o755"),
    ("true", "y"), ("1", "true"), ("0", "false"), ("'1'", "1"), ("8", "08"), ("1_000", "1000"),
]


def oracle_pairs(tmp_path) -> list[tuple[dict, dict]]:
    """kubectl's reading of each pair's base and head, one kubectl run per side."""
    from tests.test_yaml_meaning import kubectl_reads
    sides = []
    for side in (0, 1):
        text = "---\n".join(f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}, namespace: apps}}\n"
                            f"data: {{}}\nspec:\n  value: {pair[side]}\n" for i, pair in enumerate(QUOTE_ONLY))
        read = kubectl_reads(tmp_path, text, f"side{side}.yaml")
        assert isinstance(read, list), read
        sides.append((text, read))
    return [(b, h) for b, h in zip(sides[0][1], sides[1][1])], sides[0][0], sides[1][0]


def test_a_quote_only_edit_is_a_change_exactly_when_kubectl_sends_something_else(tmp_path):
    from tests.test_yaml_meaning import same
    pairs, base, head = oracle_pairs(tmp_path)
    changes, _ = diff_manifests(objects(base), objects(head), namespace="apps")
    changed = {c.key.name for c in changes}
    for index, (before, after) in enumerate(pairs):
        expected = not same(before, after)
        assert (f"c{index}" in changed) == expected, (QUOTE_ONLY[index], before["spec"], after["spec"])
    assert {"c7", "c8", "c12", "c20", "c21"} <= changed  # 0o755, y, 0x1F; 1 to true, 0 to false
    assert not {"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c17", "c18", "c19"} & changed  # 12:30, dates, =, 1.0


@pytest.mark.parametrize("base, head, shown", [
    ("mode: '0o755'", "mode: 0o755", ["-  mode: '0o755'", "+  mode: 493"]),
    ("enabled: 'y'", "enabled: y", ["-  enabled: 'y'", "+  enabled: true"]),
    ("at: 12:30", "at: 12:31", ["-  at: 12:30", "+  at: 12:31"]),
    ("on: 1", "on: 2", ["-  'true': 1", "+  'true': 2"]),
    ("num: 1", "num: '1'", ["-  num: 1", "+  num: '1'"]),
    ("e: '='", "e: [=, '!=']", ["-  e: =", "+  e:", "+  - =", "+  - '!='"]),
])
def test_the_diff_shows_values_as_the_json_means_them(base, head, shown):
    doc = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\nspec:\n  {}\n"
    (change,), _ = diff_manifests(objects(doc.format(base)), objects(doc.format(head)))
    assert [line for line in change.diff.splitlines() if line[:1] in "+-"] == shown


def test_a_quote_only_edit_of_a_secret_value_is_masked_but_counted():
    secret = "apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nstringData: {{flag: {}}}\n"
    (change,), _ = diff_manifests(objects(secret.format("'yes'")), objects(secret.format("yes")))
    assert "flag: '*** (before)'" in change.diff and "flag: '*** (after)'" in change.diff
    assert "yes" not in change.diff and "true" not in change.diff


# -- what Helm and the API server own ---------------------------------------------------------------

HOOK = """apiVersion: v1
kind: Pod
metadata:
  name: web-test-{suffix}
  annotations: {{helm.sh/hook: {hook}}}
spec: {{containers: [{{name: t, image: busybox}}]}}
"""


def test_helm_hooks_are_left_out_and_counted_in_one_line():
    base = cm() + "---\n" + HOOK.format(suffix="x7k2p", hook="test")
    head = cm() + "---\n" + HOOK.format(suffix="q9z3m", hook="test") + "---\n" + HOOK.format(
        suffix="migrate", hook="'pre-upgrade,pre-install'")
    changes, warnings = diff_manifests(objects(base), objects(head))
    assert changes == ()  # a test Pod named with randAlphaNum does not churn
    assert warnings == ("2 Helm hooks are left out (pre-install, pre-upgrade: 1; test: 1): Helm runs hooks around "
                        "a release, not as part of it, so they are not diffed and a deploy neither applies nor "
                        "prunes them",)
    assert diff_manifests(objects(head), objects(cm()))[1] == ()


def test_an_object_with_only_a_generated_name_is_shown_and_said_to_be_skipped():
    job = "apiVersion: batch/v1\nkind: Job\nmetadata: {{generateName: migrate-}}\nspec: {{parallelism: {}}}\n"
    (change,), warnings = diff_manifests(objects(job.format(1)), objects(job.format(2)), namespace="apps")
    assert (change.op, str(change.key)) == ("~", "batch/Job apps/migrate-*")
    assert warnings == ("`batch/Job apps/migrate-*` has only `metadata.generateName`, so the API server would name "
                        "it on creation; server-side apply needs a name, so a deploy skips it",)
