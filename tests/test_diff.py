"""The object diff as a table of small cases."""

from __future__ import annotations

from dataclasses import replace

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


# -- a generator's new name hash --------------------------------------------------------------------

OLD_HASH, NEW_HASH = "5f8d7c9b2k", "h2g7tk5b9m"


def renames(base: str, head: str, **kwargs) -> list[tuple[str, str, str | None]]:
    changes, _ = diff_manifests(objects(base), objects(head), **kwargs)
    return [(c.op, str(c.key), c.renamed_from and c.renamed_from.name) for c in changes]


def docs(*texts: str) -> str:
    return "---\n".join(texts)


CM_NS = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {ns}}}\ndata: {{k: '1'}}\n"


@pytest.mark.parametrize("base, head, expected", [
    (cm(f"settings-{OLD_HASH}", "1"), cm(f"settings-{NEW_HASH}", "2"),
     [("~", f"ConfigMap settings-{NEW_HASH}", f"settings-{OLD_HASH}")]),
    (cm(f"my-app-settings-{OLD_HASH}", "1"), cm(f"my-app-settings-{NEW_HASH}", "2"),
     [("~", f"ConfigMap my-app-settings-{NEW_HASH}", f"my-app-settings-{OLD_HASH}")]),
    (cm(f"settings-{OLD_HASH}", ns="a"), cm(f"settings-{NEW_HASH}", ns="a"),
     [("~", f"ConfigMap a/settings-{NEW_HASH}", f"settings-{OLD_HASH}")]),
    (cm(f"settings-{OLD_HASH}", ns="a"), cm(f"settings-{NEW_HASH}", ns="b"),
     [("-", f"ConfigMap a/settings-{OLD_HASH}", None), ("+", f"ConfigMap b/settings-{NEW_HASH}", None)]),
    (cm(f"settings-{OLD_HASH}"), cm(f"other-{NEW_HASH}"),
     [("+", f"ConfigMap other-{NEW_HASH}", None), ("-", f"ConfigMap settings-{OLD_HASH}", None)]),
    (cm("settings-5f8d7c9b2a"), cm(f"settings-{NEW_HASH}"),  # `a` is never in a hash: spelt `m`
     [("-", "ConfigMap settings-5f8d7c9b2a", None), ("+", f"ConfigMap settings-{NEW_HASH}", None)]),
    (cm("settings-5f8d7c9b2"), cm("settings-h2g7tk5b9"),  # nine characters
     [("-", "ConfigMap settings-5f8d7c9b2", None), ("+", "ConfigMap settings-h2g7tk5b9", None)]),
    (cm("settings-v1"), cm("settings-v2"),
     [("-", "ConfigMap settings-v1", None), ("+", "ConfigMap settings-v2", None)]),
    (docs(cm(f"settings-{OLD_HASH}"), cm("settings-ttm9hk6mbk")), cm(f"settings-{NEW_HASH}"),
     [("-", f"ConfigMap settings-{OLD_HASH}", None), ("+", f"ConfigMap settings-{NEW_HASH}", None),
      ("-", "ConfigMap settings-ttm9hk6mbk", None)]),
    (cm(f"settings-{OLD_HASH}"), docs(cm(f"settings-{OLD_HASH}"), cm(f"settings-{NEW_HASH}")),
     [("+", f"ConfigMap settings-{NEW_HASH}", None)]),
    (cm(f"settings-{OLD_HASH}").replace("v1", "example.com/v1", 1),
     cm(f"settings-{NEW_HASH}").replace("v1", "example.com/v1", 1),
     [("-", f"example.com/ConfigMap settings-{OLD_HASH}", None),
      ("+", f"example.com/ConfigMap settings-{NEW_HASH}", None)]),
    (cm(f"web-{OLD_HASH}").replace("ConfigMap", "Service"), cm(f"web-{NEW_HASH}").replace("ConfigMap", "Service"),
     [("-", f"Service web-{OLD_HASH}", None), ("+", f"Service web-{NEW_HASH}", None)]),
], ids=["config-map", "dashes-in-the-name", "namespace", "other-namespace", "other-name", "not-the-alphabet",
        "too-short", "not-a-hash", "two-removed", "both-kept", "other-group", "other-kind"])
def test_a_new_name_hash_pairs_one_removed_and_one_added(base, head, expected):
    assert renames(base, head) == expected


def test_the_namespace_the_environment_fills_in_counts_for_the_pairing():
    assert renames(cm(f"settings-{OLD_HASH}"), CM_NS.format(name=f"settings-{NEW_HASH}", ns="apps"),
                   namespace="apps") == [("~", f"ConfigMap apps/settings-{NEW_HASH}", f"settings-{OLD_HASH}")]


def test_the_paired_diff_holds_the_name_and_the_content():
    (change,), _ = diff_manifests(objects(cm(f"settings-{OLD_HASH}", "1")), objects(cm(f"settings-{NEW_HASH}", "2")))
    assert change.diff.splitlines()[1:] == [
        " apiVersion: v1", " data:", "-  k: '1'", "+  k: '2'", " kind: ConfigMap", " metadata:",
        f"-  name: settings-{OLD_HASH}", f"+  name: settings-{NEW_HASH}"]
    assert change.renamed_from == ObjectKey("", "ConfigMap", "", f"settings-{OLD_HASH}")


def test_a_paired_secret_stays_masked():
    secret = "apiVersion: v1\nkind: Secret\nmetadata: {{name: creds-{hash}}}\ndata: {{password: {pw}, user: YWRtaW4=}}\n"
    base, head = secret.format(hash=OLD_HASH, pw="aHVudGVyMg=="), secret.format(hash=NEW_HASH, pw="c2VjcmV0Mg==")
    (change,), _ = diff_manifests(objects(base), objects(head))
    assert (change.op, change.renamed_from.name) == ("~", f"creds-{OLD_HASH}")
    assert "aHVudGVyMg==" not in change.diff and "c2VjcmV0Mg==" not in change.diff and "YWRtaW4=" not in change.diff
    assert "-  password: '*** (before)'" in change.diff and "+  password: '*** (after)'" in change.diff
    assert f"+  name: creds-{NEW_HASH}" in change.diff


@pytest.mark.parametrize("old_generator, new_generator, paired", [
    (None, None, True),
    ("ConfigMapGenerator", "ConfigMapGenerator", True),
    ("ConfigMapGenerator", None, True),
    ("", "ConfigMapGenerator", False),  # Kustomize read the old one from a file
    ("ConfigMapGenerator", "", False),
    ("SecretGenerator", "SecretGenerator", False),  # not what makes a ConfigMap
], ids=["unknown", "generated", "one-known", "old-from-a-file", "new-from-a-file", "other-generator"])
def test_what_kustomize_says_made_the_object_decides_over_its_name(old_generator, new_generator, paired):
    base = [replace(m, generator=old_generator) for m in objects(cm(f"settings-{OLD_HASH}", "1"))]
    head = [replace(m, generator=new_generator) for m in objects(cm(f"settings-{NEW_HASH}", "2"))]
    changes, _ = diff_manifests(base, head)
    assert [c.op for c in changes] == (["~"] if paired else ["-", "+"])
