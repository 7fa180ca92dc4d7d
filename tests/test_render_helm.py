"""Helm rendering through the SDK in a child process: golden output, and refusal of unsafe charts."""

from __future__ import annotations

import io
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

from bot.renderers import helm
from bot.renderers.errors import RenderError
from bot.renderers.helm import assemble, is_chart, render_helm

CHART = "deploy/web"

FILES = {
    "Chart.yaml": """
        apiVersion: v2
        name: web
        version: 0.1.0
        """,
    "values.yaml": """
        replicas: 1
        image: {repository: nginx, tag: "1.25"}
        service: {enabled: false, port: 80}
        """,
    "values-staging.yaml": """
        replicas: 3
        image: {tag: "1.26"}
        """,
    "templates/_helpers.tpl": """
        {{- define "web.fullname" -}}{{ .Release.Name }}-web{{- end -}}
        {{- define "web.labels" -}}
        app.kubernetes.io/name: web
        app.kubernetes.io/instance: {{ .Release.Name }}
        {{- end -}}
        """,
    "templates/deployment.yaml": """
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: {{ include "web.fullname" . }}
          namespace: {{ .Release.Namespace }}
          labels:
            {{- include "web.labels" . | nindent 4 }}
        spec:
          replicas: {{ .Values.replicas }}
          template:
            spec:
              containers:
                - name: web
                  image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
        ---
        # a comment-only document is dropped
        """,
    "templates/service.yaml": """
        {{- if .Values.service.enabled }}
        apiVersion: v1
        kind: Service
        metadata: {name: {{ include "web.fullname" . }}}
        {{- end }}
        """,
    "templates/NOTES.txt": "Thanks for installing {{ .Release.Name }}.\n",
    "crds/widgets.yaml": """
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata: {name: widgets.example.com}
        """,
}

GOLDEN = """\
---
# Source: web/crds/widgets.yaml
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
---
# Source: web/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop-web
  namespace: staging
  labels:
    app.kubernetes.io/name: web
    app.kubernetes.io/instance: shop
spec:
  replicas: 3
  template:
    spec:
      containers:
        - name: web
          image: "nginx:1.26"
"""


def write(directory: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(textwrap.dedent(text).lstrip())


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    write(tmp_path / "repo" / CHART, FILES)
    return tmp_path / "repo"


def render(repo: Path, values: list[str] | None = None, **options) -> str:
    return render_helm(repo, CHART, release=options.pop("release", "shop"),
                       namespace=options.pop("namespace", "staging"),
                       values=["values.yaml", "values-staging.yaml"] if values is None else values,
                       **options)


def test_golden_output_with_values_overrides(repo: Path) -> None:
    assert render(repo) == GOLDEN
    assert is_chart(repo / CHART) and not is_chart(repo)


def test_chart_defaults_and_default_namespace(repo: Path) -> None:
    out = render(repo, values=[], namespace=None, release="demo")
    assert "name: demo-web\n  namespace: default\n" in out
    assert "replicas: 1\n" in out and '"nginx:1.25"' in out


def test_later_values_files_override_earlier_ones_deeply(repo: Path) -> None:
    write(repo / CHART, {"values-svc.yaml": "service: {enabled: true}\nimage: {tag: null}\n"})
    out = render(repo, values=["values-staging.yaml", "values-svc.yaml"])
    assert "# Source: web/templates/service.yaml\napiVersion: v1\nkind: Service\n" \
           "metadata: {name: shop-web}\n" in out
    assert '"nginx:"' in out and "replicas: 3" in out  # null removes the default, as in Helm


def test_vendored_subcharts_render_and_missing_ones_are_refused(repo: Path) -> None:
    write(repo / CHART, {
        "Chart.yaml": "apiVersion: v2\nname: web\nversion: 0.1.0\ndependencies:\n"
                      "  - {name: cache, version: 1.0.0}\n  - {name: queue, version: 2.0.0}\n",
        "charts/cache/Chart.yaml": "apiVersion: v2\nname: cache\nversion: 1.0.0\n",
        "charts/cache/templates/svc.yaml": "kind: Service\nname: {{ .Release.Name }}-cache\n",
    })
    with pytest.raises(RenderError) as caught:
        render(repo)
    assert str(caught.value) == (f"{CHART}/Chart.yaml: dependency queue is not vendored in charts/; "
                                 "run helm dependency build and commit it")
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, text in {"queue/Chart.yaml": "apiVersion: v2\nname: queue\nversion: 2.0.0\n",
                           "queue/templates/q.yaml": "kind: Queue\nname: q\n"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))
    (repo / CHART / "charts/queue-2.0.0.tgz").write_bytes(archive.getvalue())
    out = render(repo)
    assert "# Source: web/charts/cache/templates/svc.yaml\nkind: Service\nname: shop-cache\n" in out
    assert "# Source: web/charts/queue/templates/q.yaml\nkind: Queue\nname: q\n" in out


@pytest.mark.parametrize("template, complaint", [
    ("x: {{ .Values.x | nosuchfunc }}\n", 'function "nosuchfunc" not defined'),
    ("x: {{ required \"x is required\" .Values.x }}\n", "x is required"),
])
def test_template_error_names_the_template(repo: Path, template: str, complaint: str) -> None:
    write(repo / CHART, {"templates/bad.yaml": template})
    with pytest.raises(RenderError) as caught:
        render(repo)
    assert caught.value.file == f"{CHART}/templates/bad.yaml"
    assert complaint in caught.value.message and str(repo) not in str(caught.value)


@pytest.mark.parametrize("values, complaint", [
    ("../../../etc/passwd", "outside the repository"),
    ("/etc/passwd", "outside the repository"),
    ("../link.yaml", "outside the repository"),
    ("../../etc/passwd", "does not exist"),
])
def test_values_files_must_be_inside_the_repository(repo: Path, values: str, complaint: str) -> None:
    (repo / "deploy/link.yaml").symlink_to("/etc/passwd")
    with pytest.raises(RenderError) as caught:
        render(repo, values=[values])
    assert caught.value.file == f"{CHART}/{values}" and complaint in caught.value.message


def test_symlink_out_of_the_repository_is_refused(repo: Path) -> None:
    (repo / CHART / "templates/secret.yaml").symlink_to("/etc/hostname")
    with pytest.raises(RenderError, match="symlink points outside") as caught:
        render(repo)
    assert caught.value.file == f"{CHART}/templates/secret.yaml"


def test_invalid_values_and_release_name(repo: Path) -> None:
    write(repo / CHART, {"values-bad.yaml": "replicas: [1\n"})
    with pytest.raises(RenderError, match="invalid values") as caught:
        render(repo, values=["values-bad.yaml"])
    assert caught.value.file == f"{CHART}/values-bad.yaml"
    with pytest.raises(RenderError) as caught:
        render(repo, release="Not_Valid")
    assert caught.value.file == CHART


def test_chart_path_outside_the_repository_is_refused(repo: Path, tmp_path: Path) -> None:
    write(tmp_path / "elsewhere", FILES)
    with pytest.raises(RenderError, match="no Chart.yaml"):
        render_helm(repo, "../elsewhere", release="x", namespace=None, values=[])


def test_a_template_that_never_ends_is_killed(repo: Path) -> None:
    write(repo / CHART, {"templates/spin.yaml":
                         "{{ range until 100000 }}{{ range until 100000 }}{{ end }}{{ end }}\n"})
    started = time.monotonic()
    with pytest.raises(RenderError) as caught:
        render(repo, timeout=1)
    assert time.monotonic() - started < 3
    assert str(caught.value) == f"{CHART}: helm render timed out after 1s"


def test_assemble_splits_documents_like_helm_template() -> None:
    out = assemble([["c/crds/b.yaml", "kind: B\n"], ["c/crds/a.yaml", "kind: A\n---\nkind: A2"]],
                   {"c/templates/z.yaml": "kind: Z\n", "c/templates/NOTES.txt": "hi",
                    "c/templates/a.yaml": "\n---\nkind: X\n---   \n\n---\n# only\nkind: Y\n",
                    "c/templates/empty.yaml": "\n"})
    assert out == ("---\n# Source: c/crds/a.yaml\nkind: A\n---\n# Source: c/crds/a.yaml\nkind: A2\n"
                   "---\n# Source: c/crds/b.yaml\nkind: B\n"
                   "---\n# Source: c/templates/a.yaml\nkind: X\n"
                   "---\n# Source: c/templates/a.yaml\n# only\nkind: Y\n"
                   "---\n# Source: c/templates/z.yaml\nkind: Z\n")


def test_without_the_sdk_a_helm_binary_is_used(repo: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helm, "_run_sdk", lambda *args: {"unavailable": "no native library"})
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(RenderError, match="needs helm-python-sdk or a helm binary"):
        render(repo)
    fake = tmp_path / "bin" / "helm"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$@"\n')  # a script needs /bin/sh, which the box has not
    fake.chmod(0o755)
    chart = repo.resolve() / CHART
    assert render(repo, sandbox=False) == (f"template shop {chart} --include-crds --namespace staging "
                            f"-f {chart}/values.yaml -f {chart}/values-staging.yaml\n")


@pytest.mark.parametrize("dependencies, complaint", [
    ("5", "`dependencies` must be a list"),
    ("[[1]]", "each dependency needs a `name`"),
    ("[{version: 1.0.0}]", "each dependency needs a `name`"),
])
def test_malformed_dependencies_are_a_clear_error(repo: Path, dependencies: str, complaint: str) -> None:
    write(repo / CHART, {"Chart.yaml": f"apiVersion: v2\nname: web\nversion: 0.1.0\ndependencies: {dependencies}\n"})
    with pytest.raises(RenderError) as caught:
        render(repo)
    assert str(caught.value) == f"{CHART}/Chart.yaml: {complaint}"
