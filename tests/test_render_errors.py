"""Renderer and API errors reach a PR comment reduced: the renderer's wording, repository paths and
positions stay; nothing that could be a value does. Every kustomize and Helm text here is the real
tool's, produced by rendering the repository in the table."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from kubernetes.client.rest import ApiException

from bot.cluster import _reason
from bot.renderers.errors import ELLIPSIS, Known, RenderError, reduce
from bot.renderers.helm import render_helm
from bot.renderers.kustomize import render_kustomize

SECRET = "hunter2secret"
WORDS = "correct horse battery"
"""A value of plain words: only knowing it was given can hide it."""
KUSTOMIZATION = "app/kustomization.yaml"
DEPLOYMENT = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else textwrap.dedent(content).encode())


def kustomize_error(tmp_path: Path, files: dict[str, str | bytes]) -> RenderError:
    write(tmp_path / "repo", files)
    with pytest.raises(RenderError) as caught:
        render_kustomize(tmp_path / "repo", "app")
    return caught.value


def helm_error(tmp_path: Path, template: str, values: str) -> RenderError:
    chart = tmp_path / "repo" / "chart"
    write(chart, {"Chart.yaml": "apiVersion: v2\nname: web\nversion: 0.1.0\n",
                  "templates/bad.yaml": template, "values-prod.yaml": values})
    with pytest.raises(RenderError) as caught:
        render_helm(tmp_path / "repo", "chart", release="r", namespace="n", values=["values-prod.yaml"])
    return caught.value


KUSTOMIZE_CASES = {
    "a literal written with `:`": (
        {KUSTOMIZATION: f"secretGenerator:\n- name: s\n  literals: ['PASSWORD:{SECRET}']\n"},
        "app: loading KV pairs: literal sources […]: invalid literal source …, expected key=value"),
    "a literal without a key": (
        {KUSTOMIZATION: f"secretGenerator:\n- name: s\n  literals: ['{SECRET}']\n"},
        "app: loading KV pairs: literal sources […]: invalid literal source …, expected key=value"),
    "a literal of plain words": (
        {KUSTOMIZATION: f"secretGenerator:\n- name: s\n  literals: ['{WORDS}']\n"},
        "app: loading KV pairs: literal sources […]: invalid literal source …, expected key=value"),
    "an env file that is not UTF-8": (
        {KUSTOMIZATION: "secretGenerator:\n- name: s\n  envs: [s.env]\n",
         "app/s.env": f"PASSWORD={WORDS}\xe9{SECRET}\n".encode("latin-1")},
        "app: loading KV pairs: env source files: [s.env]: line […] has invalid utf8 bytes : …"),
    "a key given twice": (
        {KUSTOMIZATION: f"secretGenerator:\n- name: s\n  literals: [{SECRET}=1, {SECRET}=2]\n"},
        "app: configmap s illegally repeats the key `…`"),
    "a replacement that dumps the node it could not edit": (
        {KUSTOMIZATION: """
            resources: [r.yaml]
            replacements:
            - source: {kind: ConfigMap, name: c, fieldPath: metadata.name}
              targets: [{select: {kind: Secret}, fieldPaths: [stringData.token.deeper]}]
            """,
         "app/r.yaml": f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n---\n"
                       f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nstringData: {{token: {SECRET}}}\n"},
        'app: unable to find field "stringData.token.deeper" in replacement target: wrong node kind: '
        "expected MappingNode but got ScalarNode: node contents: …"),
    "a duplicate key in a Secret": (
        {KUSTOMIZATION: "resources: [r.yaml]\n",
         "app/r.yaml": f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\ndata: {{{SECRET}: a, {SECRET}: b}}\n"},
        'app: map[string]interface {}(nil): yaml: unmarshal errors: line 4: mapping key "…" already defined at line 4'),
    # Ordinary mistakes stay useful: the file, the line, the object.
    "a YAML syntax error": (
        {KUSTOMIZATION: "resources: [r.yaml]\n",
         "app/r.yaml": f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  a: {SECRET}\n  b: [x\n"},
        "app: accumulating resources: accumulating resources from 'r.yaml': MalformedYAMLError: yaml: "
        "line 6: did not find expected ',' or ']' in File: r.yaml"),
    "an unknown field": (
        {KUSTOMIZATION: "resources: [../base]\nbogusField: 1\n", "base/kustomization.yaml": "resources: []\n"},
        'app: invalid Kustomization: json: unknown field "bogusField"'),
    "a patch with no target": (
        {KUSTOMIZATION: "resources: [../base]\npatches: [{path: p.yaml}]\n",
         "app/p.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: nope}\n",
         "base/kustomization.yaml": "resources: [d.yaml]\n", "base/d.yaml": DEPLOYMENT},
        'app: no resource matches strategic merge patch "Deployment.v1.apps/nope.[noNs]": no matches for '
        "Id Deployment.v1.apps/nope.[noNs]; failed to find unique target for patch Deployment.v1.apps/nope.[noNs]"),
    "a file that is not in the kustomization's directory": (
        {KUSTOMIZATION: "configMapGenerator: [{name: c, files: [../base/d.yaml]}]\n",
         "base/kustomization.yaml": "resources: []\n", "base/d.yaml": DEPLOYMENT},
        "app: loading KV pairs: file sources: [../base/d.yaml]: security; file 'base/d.yaml' is not in or "
        "below 'app'"),
}


@pytest.mark.parametrize("files, expected", KUSTOMIZE_CASES.values(), ids=KUSTOMIZE_CASES.keys())
def test_kustomize_errors_are_reduced(tmp_path: Path, files: dict, expected: str) -> None:
    error = kustomize_error(tmp_path, files)
    assert str(error) == expected
    assert SECRET not in str(error) and "horse" not in str(error) and str(tmp_path) not in str(error)


HELM_CASES = {
    "a tpl string that does not parse": (
        "x: {{ tpl .Values.t . }}\n", f"t: '{SECRET}{{{{'\n",
        'chart/templates/bad.yaml: template: web/templates/bad.yaml:1:6: executing "web/templates/bad.yaml" '
        'at <tpl .Values.t .>: error calling tpl: cannot parse template "…": template: gotpl:1: unclosed action'),
    "a tpl string calling what is not a function": (
        "x: {{ tpl .Values.t . }}\n", f"t: '{{{{ {SECRET} }}}}'\n",
        'chart/templates/bad.yaml: template: web/templates/bad.yaml:1:6: executing "web/templates/bad.yaml" '
        'at <tpl .Values.t .>: error calling tpl: cannot parse template "…": template: gotpl:1: function "…" '
        "not defined"),
    "a tpl string that fails": (
        "x: {{ tpl .Values.t . }}\n", f"t: '{{{{ .Values.nope.deeper }}}} {WORDS}'\n",
        'chart/templates/bad.yaml: template: web/templates/bad.yaml:1:6: executing "web/templates/bad.yaml" '
        'at <tpl .Values.t .>: error calling tpl: error during tpl function execution for "…": template: '
        'gotpl:1:10: executing "gotpl" at <.Values.nope.deeper>: nil pointer evaluating interface {}.deeper'),
    "fail with a value": (
        "x: {{ fail .Values.p }}\n", f"p: {WORDS}\n",
        "chart/templates/bad.yaml: execution error at (web/templates/bad.yaml:1:6): …"),
    "fail with a value inside a message": (
        'x: {{ fail (printf "bad password %s" .Values.p) }}\n', "p: letmein\n",
        "chart/templates/bad.yaml: execution error at (web/templates/bad.yaml:1:6): …"),
    "include of a name from values": (
        "x: {{ include .Values.p . }}\n", f"p: {SECRET}\n",
        'chart/templates/bad.yaml: web/templates/bad.yaml:1:6 executing "web/templates/bad.yaml" at '
        '<include .Values.p .>: error calling include: template: no template "…" associated with template "gotpl"'),
    # Ordinary mistakes stay useful.
    "a required value": (
        'x: {{ required "image.tag is required" .Values.image }}\n', "p: 1\n",
        "chart/templates/bad.yaml: execution error at (web/templates/bad.yaml:1:6): image.tag is required"),
    "an unknown function": (
        "x: {{ .Values.x | nosuchfunc }}\n", "p: 1\n",
        'chart/templates/bad.yaml: parse error at (web/templates/bad.yaml:1): function "nosuchfunc" not defined'),
    "a template syntax error": (
        "x: {{ .Values.x }\n", "p: 1\n",
        'chart/templates/bad.yaml: parse error at (web/templates/bad.yaml:1): unexpected "}" in operand'),
    "a field of a string": (
        "x: {{ .Values.p.q }}\n", f"p: {SECRET}\n",
        'chart/templates/bad.yaml: web/templates/bad.yaml:1:13 executing "web/templates/bad.yaml" at '
        "<.Values.p.q>: can't evaluate field q in type interface {}"),
    "a values file with a YAML error": (
        "x: 1\n", f"a: [{SECRET}\n",
        "chart/values-prod.yaml: invalid values: error converting YAML to JSON: yaml: line 1: did not find "
        "expected ',' or ']'"),
}


@pytest.mark.parametrize("template, values, expected", HELM_CASES.values(), ids=HELM_CASES.keys())
def test_helm_errors_are_reduced(tmp_path: Path, template: str, values: str, expected: str) -> None:
    error = helm_error(tmp_path, template, values)
    assert str(error) == expected
    assert SECRET not in str(error) and "horse" not in str(error) and "letmein" not in str(error)


@pytest.mark.parametrize("text, known, expected", [
    # Go prints bytes as a list of numbers, and kustomize then the line itself.
    (b"env source files: [s.env]: line [80 61 233] has invalid utf8 bytes : P=\xe9x\n",
     Known(names={"s.env"}), "env source files: [s.env]: line […] has invalid utf8 bytes : …"),
    (b"bad line: PASSWORD=my secret\xe9 phrase", Known(), "bad line: …"),
    (b"PASSWORD=my secret\xe9 phrase", Known(), "…"),
    ("value Zm9vYmFy0x is wrong", Known(), "value … is wrong"),
    ("value letmein is wrong", Known(values={"letmein"}), "value … is wrong"),
    ("key=value and user:pass and pin:1234", Known(), "key=value and … and …"),
    ("open /box/tree/app/x.yaml: no such file", Known(names={"app", "x.yaml"}),
     "open app/x.yaml: no such file"),
    ("first line\nnode contents:\n  token: hunter2secret\n", Known(), "first line node contents: …"),
    ("quoted 'plain words here' and \"plain\" and `raw`", Known(),
     "quoted 'plain words here' and \"…\" and `…`"),
], ids=["bytes-list", "undecodable", "undecodable-alone", "random-token", "given-value", "key-value", "path", "node-dump", "quotes"])
def test_reduce(text: str | bytes, known: Known, expected: str) -> None:
    assert reduce(text, known, ["/box/tree"]) == expected


def test_an_api_error_names_the_field_but_not_a_map_key() -> None:
    # What kube-apiserver answers when a Secret's data key is not a valid key.
    key = "my password"
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
            "message": f'Secret "s" is invalid: data[{key}]: Invalid value: "{key}": a valid config key must '
                       "consist of alphanumeric characters, '-', '_' or '.'",
            "details": {"name": "s", "kind": "Secret", "causes": [
                {"reason": "FieldValueInvalid", "message": f'Invalid value: "{key}": a valid config key …',
                 "field": f"data[{key}]"},
                {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.containers[0].image"}]}}
    error = ApiException(status=422, reason="Unprocessable Entity")
    error.body = json.dumps(body)
    assert _reason(error) == f"Invalid (422): Secret s at data[{ELLIPSIS}], spec.containers[0].image"
