"""A property: no Secret value ever appears in any output format, whatever the Secrets and their changes.

Runs with the `ci` Hypothesis profile by default; `HYPOTHESIS_PROFILE=nightly` searches 10,000 cases.
"""

from __future__ import annotations

import base64
from typing import Any

import yaml
from hypothesis import given, strategies as st

from bot.diff import DiffReport, EnvironmentDiff, diff_manifests
from bot.render import to_manifests
from bot.report import as_json, markdown, text
from bot.yamlio import KubernetesDumper, parse_documents

TOKEN = "QXZJVKW"
"""In every plain value. Keys and names are lower case, so the token appearing anywhere, in any
quoting or escaping, means a value leaked."""

keys = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,11}", fullmatch=True)
names = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)
tricky = st.sampled_from(["", "`", "```", "````", "<details>", "</code>", "|", ">", "- ", ": ", "#", "---",
                          "\n", "\n\n", "'", '"', "*** (after)", "{", "}", "[", "&a", "*a", "!!binary",
                          "\t", " ", "\\", "%", "@", "<!-- -->", "+", "-", "@@ -1 +1 @@", "é", "🔑"])
plain = st.builds(lambda before, after: before + TOKEN + after,
                  st.lists(tricky | st.text(max_size=4), max_size=3).map("".join),
                  st.lists(tricky | st.text(max_size=4), max_size=3).map("".join))
encoded = (plain.map(str.encode) | st.binary(min_size=6, max_size=24)).map(lambda b: base64.b64encode(b).decode())
values = plain | encoded


@st.composite
def secret(draw: st.DrawFn, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"apiVersion": draw(st.sampled_from(["v1", "core/v1"])), "kind": "Secret",
                           "metadata": {"name": name, "labels": {"app": draw(names)}},
                           "type": draw(st.sampled_from(["Opaque", "kubernetes.io/tls"]))}
    for field in draw(st.sets(st.sampled_from(["data", "stringData"]))):
        doc[field] = draw(st.dictionaries(keys, values, max_size=4))
    return doc


@st.composite
def changed(draw: st.DrawFn, doc: dict[str, Any]) -> dict[str, Any] | None:
    """`doc` as a pull request might leave it: gone, the same, or with values, keys and shape changed."""
    change = draw(st.sampled_from(["remove", "keep", "values", "keys", "swap", "shape", "labels"]))
    if change == "remove":
        return None
    doc = {**doc, "metadata": {**doc["metadata"]}}
    fields = [f for f in ("data", "stringData") if f in doc]
    if change == "values":
        for field in fields:
            doc[field] = {k: draw(values) if draw(st.booleans()) else v for k, v in doc[field].items()}
    elif change == "keys":
        for field in fields:
            kept = {k: v for k, v in doc[field].items() if draw(st.booleans())}
            doc[field] = {**kept, **draw(st.dictionaries(keys, values, max_size=2))}
    elif change == "swap" and fields:
        doc["data"], doc["stringData"] = doc.get("stringData", {}), doc.get("data", {})
    elif change == "shape" and fields:
        doc[fields[0]] = draw(st.one_of(values, st.lists(values, max_size=3),
                                        st.dictionaries(keys, st.dictionaries(keys, values, max_size=2),
                                                        max_size=2)))
    elif change == "labels":
        doc["metadata"]["labels"] = {"app": draw(names), "tier": draw(names)}
    return doc


@st.composite
def pull_requests(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    secret_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    base = [draw(secret(n)) for n in secret_names]
    head = [d for d in (draw(changed(doc)) for doc in base) if d is not None]
    head += [draw(secret(n)) for n in draw(st.lists(names, max_size=2)) if n not in secret_names]
    if draw(st.booleans()):  # the same Secrets in a List, in another file: duplicates
        head.append({"apiVersion": "v1", "kind": "List", "items": list(head)})
    return base, head


def secret_values(docs: list[dict[str, Any]]) -> list[str]:
    """Every string under a Secret's `data` or `stringData`, in Lists too."""
    found = []
    for doc in docs:
        if doc["kind"] == "List":
            found += secret_values(doc["items"])
        elif doc["kind"] == "Secret":
            found += strings([doc.get("data"), doc.get("stringData")])
    return found


def strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def render(docs: list[dict[str, Any]], source: str) -> list:
    text_ = yaml.dump_all(docs, Dumper=KubernetesDumper, allow_unicode=True)  # quoted where kubectl needs it
    return list(to_manifests(parse_documents(text_.encode(), source), source))


@given(pull_requests())
def test_no_secret_value_appears_in_any_output(pr: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> None:
    base, head = pr
    changes, warnings = diff_manifests(render(base, "secrets.yaml"), render(head, "secrets.yaml"), namespace="apps")
    report = DiffReport("b" * 40, "a" * 40, (EnvironmentDiff("prod", ".", changes, warnings),))
    outputs = [*markdown(report, "bot"), *markdown(report, "bot", limit=2_000), text(report),
               text(report, colour=True), as_json(report)]
    leaked = [v for v in secret_values(base + head) if len(v) >= 4 for out in outputs if v in out]
    assert not leaked
    assert not any(TOKEN in out for out in outputs)
