"""Property tests of parsing, diffing and reporting: whatever a repository holds, the only error is
a RenderError (a clear message for the PR comment), every step is quick, and the comment's parts
stay within the forge's limit."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st

from bot.diff import DiffReport, EnvironmentDiff, diff_manifests
from bot.render import to_manifests
from bot.renderers.errors import RenderError
from bot.report import as_json, markdown, text
from bot.yamlio import parse_documents
from tests.harness import BASE_FILES, DEEP, HEAD_CHANGES, mutated, words

EXTRA_FILES = {
    "apps/list.yaml": """apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: a, namespace: other}, data: {k: v}}
- {apiVersion: v1, kind: ServiceAccount, metadata: {name: b}}
""",
    "apps/crd.yaml": """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Cluster
  names: {kind: Widget, plural: widgets}
  versions: [{name: v1, served: true, storage: true}]
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w, annotations: {kubectl.kubernetes.io/last-applied-configuration: '{}'}}
spec: {size: 3}
status: {ready: true}
""",
    "apps/tokens.yaml": """apiVersion: v1
kind: Secret
metadata: {name: tokens, labels: {app: web}}
type: Opaque
stringData: {api-key: plain-text-value}
data: {cert: Y2VydA==}
""",
    "apps/anchors.yaml": """apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop, labels: &labels {app: api, tier: backend}}
spec:
  selector: {matchLabels: *labels}
  template:
    metadata: {labels: *labels}
    spec:
      containers:
      - &container {name: api, image: "api:1", ports: [{containerPort: 8080}]}
      - {<<: *container, name: sidecar}
""",
}
TEXTS = [*BASE_FILES.values(), *HEAD_CHANGES.values(), *EXTRA_FILES.values()]
DOCUMENTS = [doc for t in TEXTS for doc in yaml.safe_load_all(t)]
VOCABULARY = words(*DOCUMENTS) + ["List", "Secret", "Namespace", "CustomResourceDefinition", "items", "data"]
BASE = [doc for t in BASE_FILES.values() for doc in yaml.safe_load_all(t)]
TOKENS = ["&a ", "*a", "&a [*a]", "<<: *a\n", "!!binary ", "!!set ", "!!omap ", "!!pairs ", "!!python/object:os.system ",
          "!custom ", "!!str ", "!!int ", "!!float ", "!!timestamp ", "!!null ", "? ", "- ", ": ", "{", "}", "[", "]",
          ",", "---\n", "...\n", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "\t", "'", '"', "|\n", ">-\n", "#", "~",
          "0x1F", "0o17", "1e400", ".inf", ".nan", "2001-12-14", "12:30:00", "yes", "\x00", "\ufeff", "\x85", "\u2028",
          "9" * 5000, "\\", "\\U0001F600", "\n  ", "\n- "]
LIMITS = [65_536, 1_000_000, 10_000]
"""GitHub's and GitLab's comment limits, and a small one that forces splitting."""
SECONDS = 2.0


def run_pipeline(before_docs: list[Any], after_docs: list[Any], namespace: str | None, limit: int) -> None:
    """What a diff job does with parsed documents, in bounded time; only a RenderError may escape."""
    started = time.monotonic()
    try:
        before, after = list(to_manifests(before_docs, "apps/a.yaml")), list(to_manifests(after_docs, "apps/b.yaml"))
        changes, warnings = diff_manifests(before, after, namespace=namespace)
        report = DiffReport("a" * 40, "b" * 40, (EnvironmentDiff("staging", "apps", changes, warnings, cluster="c"),))
        parts = markdown(report, "bot", limit)
        text(report), as_json(report)
        assert all(len(part) <= limit for part in parts), [len(part) for part in parts]
    except RenderError:
        pass
    assert time.monotonic() - started < SECONDS


def parse(data: bytes, source: str) -> list[Any] | None:
    started = time.monotonic()
    try:
        return parse_documents(data, source)
    except RenderError:
        return None
    finally:
        assert time.monotonic() - started < SECONDS


@st.composite
def edited(draw: st.DrawFn, text: str) -> str:
    """`text` with a few characters deleted, or YAML's own syntax (or random text) inserted, often
    where a value or a line starts."""
    for _ in range(draw(st.integers(1, 3))):
        starts = [m.end() for m in re.finditer(r"^ *|: |- |[\[{,] ?", text, re.MULTILINE)]
        at = draw(st.sampled_from(starts) if starts and draw(st.booleans()) else st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + draw(st.sampled_from(TOKENS) | st.text(max_size=5)) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(1, 8)):]
    return text


def dumped(document: Any) -> str:
    """A document as JSON text (JSON is YAML), deep nesting spliced in where the marker is."""
    return json.dumps(document).replace(json.dumps(DEEP), "[" * 5_000 + "]" * 5_000)


documents = st.sampled_from(DOCUMENTS).flatmap(lambda doc: st.just(doc) | mutated(doc, VOCABULARY))
namespaces = st.sampled_from([None, "apps", ""])
FAST = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


CRD = next(doc for doc in DOCUMENTS if doc["kind"] == "CustomResourceDefinition")
CRD_NAMES_LIST = {**CRD, "spec": {**CRD["spec"], "names": ["Widget"]}}
HUGE_NAME = {**DOCUMENTS[1], "metadata": {"name": "x" * 100_000}}


@FAST
@example(before=[], after=[CRD_NAMES_LIST], namespace=None, limit=65_536)  # found by this test: the two
@example(before=[], after=[HUGE_NAME], namespace=None, limit=65_536)  # cases it found, kept
@given(before=st.lists(documents, max_size=4), after=st.lists(documents, max_size=4), namespace=namespaces,
       limit=st.sampled_from(LIMITS))
def test_mutated_documents(before, after, namespace, limit):
    run_pipeline(before, after, namespace, limit)


files = (st.sampled_from(TEXTS).flatmap(edited) | documents.map(dumped).flatmap(lambda t: st.just(t) | edited(t)))


@FAST
@example(content=b"a: !!bool maybe\n", suffix=".yaml", namespace=None, limit=65_536)  # found by this test
@given(content=files.map(str.encode) | st.binary(max_size=200), suffix=st.sampled_from([".yaml", ".json"]),
       namespace=namespaces, limit=st.sampled_from(LIMITS))
def test_mutated_files(content, suffix, namespace, limit):
    docs = parse(content, "apps/x" + suffix)
    if docs is not None:
        run_pipeline(BASE, docs, namespace, limit)
        run_pipeline(docs, BASE, namespace, limit)
