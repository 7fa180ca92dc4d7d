"""Reading manifests as `kubectl apply -f` does, and YAML for people: bounded, strict UTF-8,
errors that name the place and never quote a value.

kubectl reads a file with k8s.io/apimachinery's YAMLOrJSONDecoder: a stream that starts with `{`
is JSON objects, else YAML documents cut at `---` lines. Each YAML document is read by
sigs.k8s.io/yaml: go-yaml v2 gives every scalar its meaning, then the value is converted to JSON
(keys to strings, infinities refused), and the object kubectl sends is that JSON as the API
machinery decodes it (a number is an int64 when it is one, else a float64). Here the C parser
composes the nodes and `_Meaning` gives them that meaning, so every manifest is plain JSON data:
dict, list, str, int, float, bool, None.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable

import yaml
from yaml.composer import Composer, ComposerError
from yaml.cyaml import CParser
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bot.renderers.errors import RenderError

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# Where a block collection can start on a line: after the indentation and any compact indicators
# (`- - `, `? `, `: `, `--- `) or node properties (`&anchor `, `!tag `).
_BLOCK_START = re.compile(r"^[ \t]*(?:(?:---|[-?:]|[&!][^ \t\n]*)[ \t]+)*", re.MULTILINE)

_TAG = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
TIMESTAMP, BINARY, MERGE, MAP, SEQ = (_TAG + t for t in ("timestamp", "binary", "merge", "map", "seq"))
_RESOLVABLE = {"", STR, INT, FLOAT, BOOL, NULL, TIMESTAMP}
"""go-yaml's resolvableTag: a scalar with any other tag is its text (`!Ref x` is "x")."""
_PLAIN = "plain"
"""The tag the composer gives an untagged plain scalar: its meaning is resolved when it is built."""
_NON_SPECIFIC = "!"
"""The tag of a scalar tagged `!`, which go-yaml keeps as text."""

_INT64 = 1 << 63
_HINTS = {"": "N", "+": "S", "-": "S", ".": ".", **dict.fromkeys("0123456789", "D"),
          **dict.fromkeys("yYnNtTfFoO~", "M")}
"""go-yaml's resolveTable: only a scalar starting with one of these can be anything but a string."""
_SPECIAL: dict[str, tuple[str, Any]] = {
    **dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), (BOOL, True)),
    **dict.fromkeys(("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), (BOOL, False)),
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), (NULL, None)),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), (FLOAT, math.nan)),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), (FLOAT, math.inf)),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), (FLOAT, -math.inf)),
}
# strconv.ParseInt(s, 0, 64) after go-yaml drops every `_`: a sign, then 0x/0o/0b, a leading 0 (octal) or decimal.
_GO_INT = re.compile(r"([-+]?)(?:0[xX]([0-9a-fA-F]+)|0[oO]([0-7]+)|0[bB]([01]+)|(0[0-7]*)|([1-9][0-9]*))")
_YAML_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_DOT_FLOAT = re.compile(r"\.[0-9](?:_?[0-9])*(?:[eE][-+]?[0-9](?:_?[0-9])*)?")
"""What strconv.ParseFloat takes from a scalar starting with `.`: `_` only between digits."""
_TIMESTAMP = re.compile(r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})"
                        r"(?:([Tt ])([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})(?:[.,][0-9]+)?(Z|[-+][0-9]{2}:[0-9]{2})?)?")
_NON_SPECIFIC_TAG = re.compile(r"(?:^|[ \t\[{,])!(?=[ \t\r\n]|$)", re.MULTILINE)
_SEPARATOR = re.compile(r"^---(.*)$", re.MULTILINE)
_GO_SPACE = " \t\n\v\f\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
            "\u2028\u2029\u202f\u205f\u3000"
"""unicode.IsSpace, which kubectl uses to find the `{` of a JSON stream."""
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True)
class Limits:
    """Bounds on what one input may cost."""

    max_file_bytes: int = 4 * 1024 * 1024
    """A larger file is refused before it is read."""

    max_nodes: int = 2_000_000
    """Values after alias expansion, per file: this is what stops a "billion laughs" document."""

    max_depth: int = 100
    """Nesting depth; real manifests stay far below it."""


DEFAULT_LIMITS = Limits()


class _Uint64(int):
    """An integer go-yaml reads as a uint64: past int64, so the API machinery takes it as a float64."""


class _Refused(Exception):
    """A value kubectl refuses, and where it is."""

    def __init__(self, problem: str, node: Node) -> None:
        super().__init__(problem)
        self.problem, self.mark = problem, node.start_mark
        self.document = ""
        """`Kind name: ` of the object it is in, when that can be told."""


# -- reading -------------------------------------------------------------------------------------

def parse_documents(data: bytes, source: str, limits: Limits = DEFAULT_LIMITS,
                    loader: type | None = None) -> list[Any]:
    """Every object of a manifest file as kubectl reads it (see the module's docstring), null
    documents dropped. With a PyYAML `loader`, the file's YAML documents as that loader builds them."""
    if len(data) > limits.max_file_bytes:
        raise RenderError.too_large(len(data), limits.max_file_bytes, source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RenderError(f"not valid UTF-8 (byte {err.start})", source) from None
    shallow = nesting_bound(text) <= limits.max_depth
    try:
        if loader is not None:
            if not shallow:
                _check_depth(text, source, limits, loader)
            docs = [d for d in yaml.load_all(text, Loader=loader) if d is not None]
        else:
            docs = _read_stream(text, source, limits, shallow)
    except yaml.MarkedYAMLError as err:
        raise RenderError(_describe(err), source) from None
    except yaml.YAMLError as err:
        raise RenderError(f"invalid YAML: {type(err).__name__}", source) from None
    except RecursionError:
        raise RenderError(f"nested deeper than {limits.max_depth} levels", source) from None
    except (LookupError, AttributeError, TypeError, ValueError):
        # How PyYAML's constructors fail on a value that does not fit its explicit tag (`!!bool maybe`).
        raise RenderError("invalid YAML: a value does not fit its tag (such as !!bool or !!timestamp)",
                          source) from None
    if not shallow or "&" in text:  # without anchors there are no aliases to expand
        check_bounds(docs, source, limits)
    return docs


def _read_stream(text: str, source: str, limits: Limits, shallow: bool) -> list[Any]:
    """kubectl's YAMLOrJSONDecoder: JSON objects while they parse (when the text starts with `{`),
    then YAML documents."""
    docs: list[Any] = []
    start = 0
    if text[:4096].lstrip(_GO_SPACE).startswith("{"):
        start, json_error = _read_json(text, docs, source)
        if json_error is not None:
            if len(docs) > 1:  # more than one object: a JSON stream, never YAML
                raise json_error
            try:
                docs += _read_yaml(text, start, source, limits, shallow)
            except (RenderError, yaml.YAMLError):
                raise json_error from None
        return [d for d in docs if d is not None]
    return [d for d in _read_yaml(text, start, source, limits, shallow) if d is not None]


def _read_json(text: str, docs: list[Any], source: str) -> tuple[int, RenderError | None]:
    """Append the JSON values at the start of `text` to `docs`: (where the first that does not
    parse starts, or the end; why it does not)."""
    decoder = json.JSONDecoder(parse_float=_json_float, parse_int=_json_int, parse_constant=_json_constant)
    position, fix = 0, _SURROGATE_ESCAPE.search(text) is not None
    while True:
        start = _JSON_SPACE.match(text, position).end()
        if start == len(text):
            return start, None
        try:
            value, position = decoder.raw_decode(text, start)
        except _JSONNumberError as err:  # the objects parse; the API machinery refuses the number
            line = text.count("\n", 0, start) + 1
            raise RenderError(f"{_json_name(text, start)}the JSON value at line {line}: {err}", source) from None
        except (json.JSONDecodeError, _NotJSON) as err:
            line = text.count("\n", 0, getattr(err, "pos", start)) + 1
            problem = err.msg if isinstance(err, json.JSONDecodeError) else str(err)
            # the fallback to YAML starts after the blanks that end the line
            rest = re.compile(r"[^\S\n]*\n?").match(text, position if docs else 0).end()
            return rest, RenderError(f"invalid JSON: line {line}: {problem}", source)
        value = _replace_surrogates(value) if fix else value
        refused = _object_problem(value)
        if refused is not None:
            line = text.count("\n", 0, start) + 1
            raise RenderError(f"{_json_name(text, start)}the JSON value at line {line}: "
                              f"{_dotted(refused[0])}: {refused[1]}", source)
        docs.append(value)


def _json_name(text: str, start: int) -> str:
    """`Kind name: ` of the JSON object at `start`, read as Python reads JSON, for errors."""
    try:
        obj = json.JSONDecoder().raw_decode(text, start)[0]
    except ValueError:
        return ""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    name = (meta.get("name") or meta.get("generateName")) if isinstance(meta, dict) else None
    kind = obj.get("kind") if isinstance(obj, dict) else None
    if not isinstance(kind, str) or not kind:
        return ""
    return f"{kind} {str(name)[:253]}: " if isinstance(name, str) and name else f"{kind}: "


class _JSONNumberError(ValueError):
    pass


class _NotJSON(ValueError):
    pass


def _json_int(text: str) -> int | float:
    if len(text) > 20:  # past int64; and int() refuses very long text
        return _json_float(text)
    value = int(text)
    return value if -_INT64 <= value < _INT64 else _json_float(text)


def _json_float(text: str) -> int | float:
    value = float(text)
    if math.isinf(value):
        raise _JSONNumberError("a number is too large for a float64, so kubectl refuses it")
    return _number(value)


def _json_constant(text: str) -> Any:
    raise _NotJSON(f"{text} is not JSON")


def _replace_surrogates(value: Any) -> Any:
    """Go decodes a lone UTF-16 surrogate escape to U+FFFD."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replace_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    return value


def _read_yaml(text: str, start: int, source: str, limits: Limits, shallow: bool) -> list[Any]:
    """The documents of `text[start:]`, cut where kubectl's YAMLReader cuts them: at each line that
    starts with `---`. Of each piece only the first YAML document counts, as in go-yaml's Unmarshal."""
    docs = []
    for piece, line in _pieces(text, start, source):
        if not piece.strip():
            continue
        try:
            if not shallow:
                _check_depth(piece, source, limits, Loader)
            docs.append(_read_document(piece, limits))
        except yaml.MarkedYAMLError as err:
            raise RenderError(_name_before(piece) + _describe(err, line), source) from None
        except _Refused as err:
            raise RenderError(f"{err.document}line {err.mark.line + line + 1}, column {err.mark.column + 1}: "
                              f"{err.problem}", source) from None
    return docs


def _pieces(text: str, start: int, source: str) -> Iterable[tuple[str, int]]:
    """Each piece between separators, and the number of lines before it."""
    position, line = start, text.count("\n", 0, start)
    for separator in _SEPARATOR.finditer(text, start):
        rest = separator.group(1).strip()
        line_of_separator = line + text.count("\n", position, separator.start())
        if rest and not rest.startswith("#"):
            raise RenderError(f"line {line_of_separator + 1}: a document separator (---) is followed by text; "
                              "kubectl allows only a comment there", source)
        yield text[position:separator.start()], line
        position, line = separator.end(), line_of_separator
    yield text[position:], line


def _read_document(piece: str, limits: Limits) -> Any:
    composer = _EventComposer if "!" in piece and _NON_SPECIFIC_TAG.search(piece) else _Composer
    try:
        node = composer(piece).first_node()
    except ComposerError as err:
        if "duplicate anchor" not in str(err.context):
            raise
        node = _EventComposer(piece).first_node()  # go-yaml lets a later anchor take an earlier one's name
    if node is None:
        return None
    try:
        doc = _Meaning(limits).value(node)
        refused = _object_problem(doc)
        if refused is not None:
            path, problem = refused
            raise _Refused(f"{_dotted(path)}: {problem}", _node_at(node, path))
        return doc
    except _Refused as err:
        err.document = _object_name(node)
        raise


_TEXT = ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion")
_OWNER_TEXT = ("apiVersion", "kind", "name", "uid")
_MANAGER_TEXT = ("manager", "operation", "apiVersion", "fieldsType", "subresource")
_RFC3339 = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?"
                      r"(?:Z|[-+]([0-9]{2}):([0-9]{2}))")
Problem = tuple[list[Any], str]


def _object_problem(doc: Any) -> Problem | None:
    """Where kubectl refuses an object's TypeMeta and ObjectMeta, and why: it decodes them into
    Go's types before anything else (cli-runtime's metadataValidatingDecoder). The items of a List
    it leaves to the API server, which refuses them the same way, so they are checked too."""
    if not isinstance(doc, dict):
        return None
    for key in ("apiVersion", "kind"):
        if doc.get(key) is not None and type(doc[key]) is not str:
            return [key], _wanted(doc[key], "text")
    problem = _meta_problem(doc.get("metadata"))
    if problem is not None:
        return ["metadata", *problem[0]], problem[1]
    items = doc.get("items")
    if isinstance(items, list) and isinstance(doc.get("kind"), str) and doc["kind"].endswith("List"):
        for index, item in enumerate(items):
            problem = _object_problem(item)
            if problem is not None:
                return ["items", index, *problem[0]], problem[1]
    return None


def _meta_problem(meta: Any) -> Problem | None:
    if meta is None:
        return None
    if not isinstance(meta, dict):
        return [], _wanted(meta, "a mapping")
    checks: list[tuple[str, Any]] = [
        *((k, _text) for k in _TEXT), ("generation", _int64), ("deletionGracePeriodSeconds", _int64),
        ("creationTimestamp", _time), ("deletionTimestamp", _time), ("labels", _text_map),
        ("annotations", _text_map), ("finalizers", _list_of(_text)),
        ("ownerReferences", _list_of(_fields({**{k: _text for k in _OWNER_TEXT}, "controller": _bool,
                                              "blockOwnerDeletion": _bool}))),
        ("managedFields", _list_of(_fields({**{k: _text for k in _MANAGER_TEXT}, "time": _time}))),
    ]
    for key, check in checks:
        if meta.get(key) is not None:
            problem = check(meta[key])
            if problem is not None:
                return [key, *problem[0]], problem[1]
    return None


def _wanted(value: Any, wanted: str) -> str:
    found = ("true or false" if type(value) is bool else "a number" if type(value) in (int, float)
             else "a list" if type(value) is list else "a mapping" if type(value) is dict else "text")
    hint = "; quote it" if wanted == "text" and found in ("true or false", "a number") else ""
    return f"{found} where Kubernetes takes {wanted}, so kubectl refuses it{hint}"


def _text(value: Any) -> Problem | None:
    return None if type(value) is str else ([], _wanted(value, "text"))


def _int64(value: Any) -> Problem | None:
    return None if type(value) is int else ([], _wanted(value, "a whole number"))


def _bool(value: Any) -> Problem | None:
    return None if type(value) is bool else ([], _wanted(value, "true or false"))


def _time(value: Any) -> Problem | None:
    if type(value) is not str:
        return [], _wanted(value, "an RFC 3339 time")
    match = _RFC3339.fullmatch(value)
    if match is None:
        return [], "not an RFC 3339 time (such as 2024-01-31T12:00:00Z), so kubectl refuses it"
    year, month, day, hour, minute, second, zone_hour, zone_minute = (int(g or 0) for g in match.groups())
    if not (_is_date(year, month, day) and hour < 24 and minute < 60 and second < 60 and zone_hour < 24
            and zone_minute < 60):
        return [], "a time out of range, so kubectl refuses it"
    return None


def _text_map(value: Any) -> Problem | None:
    if type(value) is not dict:
        return [], _wanted(value, "a mapping of text")
    for key, item in value.items():
        if item is not None and type(item) is not str:
            return [key], _wanted(item, "text")
    return None


def _list_of(check: Any) -> Any:
    def checked(value: Any) -> Problem | None:
        if type(value) is not list:
            return [], _wanted(value, "a list")
        for index, item in enumerate(value):
            problem = None if item is None else check(item)
            if problem is not None:
                return [index, *problem[0]], problem[1]
        return None
    return checked


def _fields(checks: dict[str, Any]) -> Any:
    def checked(value: Any) -> Problem | None:
        if type(value) is not dict:
            return [], _wanted(value, "a mapping")
        for key, check in checks.items():
            problem = None if value.get(key) is None else check(value[key])
            if problem is not None:
                return [key, *problem[0]], problem[1]
        return None
    return checked


def _dotted(path: list[Any]) -> str:
    """`metadata.labels.app`, `items[0].kind`"""
    return "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in path).lstrip(".")


def _node_at(root: Node, path: list[Any]) -> Node:
    """The node at `path` in a composed document, or the deepest one on the way there."""
    node = root
    for step in path:
        if isinstance(node, MappingNode):
            found = next((v for k, v in reversed(node.value) if isinstance(k, ScalarNode) and k.value == step),
                         None)  # of a key given twice, the last counts
        elif isinstance(node, SequenceNode) and isinstance(step, int) and step < len(node.value):
            found = node.value[step]
        else:
            found = None
        if found is None:
            return node
        node = found
    return node


def _object_name(root: Node) -> str:
    """`ConfigMap web: ` for a document whose kind and name are plain text, for errors."""
    fields = _scalar_fields(root)
    meta = next((v for k, v in root.value if isinstance(k, ScalarNode) and k.value == "metadata"), None) \
        if isinstance(root, MappingNode) else None
    name = _scalar_fields(meta).get("name") or _scalar_fields(meta).get("generateName")
    kind = fields.get("kind")
    return f"{kind} {name}: " if kind and name else f"{kind}: " if kind else ""


def _name_before(piece: str) -> str:
    """`Kind name: ` of a document that does not parse, from what parses before the problem."""
    fields: dict[str, str] = {}
    path: list[list[Any]] = []  # per open collection: [is a mapping, its last key, a key comes next]
    try:
        for event in yaml.parse(piece, Loader=Loader):
            if isinstance(event, yaml.ScalarEvent) and path and path[-1][0] and path[-1][2]:
                path[-1][1:] = [event.value, False]
                continue
            if isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)):
                keys = tuple(level[1] for level in path)
                if keys in (("kind",), ("metadata", "name"), ("metadata", "generateName")):
                    fields[keys[-1]] = event.value[:253]
            elif isinstance(event, yaml.CollectionStartEvent):
                path.append([isinstance(event, yaml.MappingStartEvent), None, True])
                continue
            elif isinstance(event, yaml.CollectionEndEvent):
                path.pop()
            else:
                continue
            if path and path[-1][0]:
                path[-1][2] = True
    except yaml.YAMLError:
        pass
    kind, name = fields.get("kind"), fields.get("name") or fields.get("generateName")
    return f"{kind} {name}: " if kind and name else f"{kind}: " if kind else ""


def _scalar_fields(node: Node | None) -> dict[str, str]:
    if not isinstance(node, MappingNode):
        return {}
    return {k.value: v.value for k, v in node.value if isinstance(k, ScalarNode) and isinstance(v, ScalarNode)
            and k.value in ("kind", "name", "generateName") and len(v.value) <= 253}


class _Composer(CParser):  # type: ignore[misc]
    """libyaml's parser and composer. It resolves nothing: `_Meaning` gives scalars their meaning."""

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        if kind is ScalarNode:
            return _PLAIN if implicit[0] else STR
        return MAP if kind is MappingNode else SEQ

    def first_node(self) -> Node | None:
        return self.get_node() if self.check_node() else None


class _EventComposer(Composer, _Composer):
    """The composer in Python over the C parser's events, for what libyaml's composer does not tell
    apart: a scalar tagged `!` (text for go-yaml), and an anchor defined twice (the later one counts)."""

    def __init__(self, stream: str) -> None:
        _Composer.__init__(self, stream)
        Composer.__init__(self)

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if not self.check_event(yaml.AliasEvent):
            self.anchors.pop(self.peek_event().anchor, None)
        return super().compose_node(parent, index)

    def compose_scalar_node(self, anchor: str | None) -> Node:
        tag = self.peek_event().tag
        node = super().compose_scalar_node(anchor)
        if tag == "!":
            node.tag = _NON_SPECIFIC
        return node

    def first_node(self) -> Node | None:
        return self.get_node() if Composer.check_node(self) else None


# -- meaning -------------------------------------------------------------------------------------

class _Meaning:
    """Builds a composed document as go-yaml v2 decodes it and sigs.k8s.io/yaml turns it into JSON.

    A collection is built once however many aliases refer to it, as PyYAML does, so an alias bomb
    costs its size in the file; what merge keys copy is counted against `Limits.max_nodes`.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.built: dict[int, Any] = {}
        self.entries: dict[int, dict[Any, Any]] = {}
        """A mapping's entries by Go key, for mappings whose keys are not all strings."""
        self.open: set[int] = set()
        self.merged = 0

    def value(self, node: Node) -> Any:
        cls = node.__class__
        if cls is ScalarNode:
            tag = node.tag
            if tag is STR or tag == STR or tag is _NON_SPECIFIC:
                return node.value
            if tag is _PLAIN:
                text = node.value
                if text[:1] not in _HINTS:
                    return text
                if node.style:  # quoted, tagged `!`
                    return text
                return _json_value(_resolve("", text)[1], node)
            return _json_value(_go_value(node), node)
        key = id(node)
        built = self.built.get(key, self)
        if built is not self:
            return built
        if key in self.open:
            raise _Refused("an alias refers to a collection that contains it", node)
        self.open.add(key)
        built = self._mapping(node) if cls is MappingNode else [self.value(n) for n in node.value]
        self.open.discard(key)
        self.built[key] = built
        return built

    def _mapping(self, node: MappingNode) -> dict[str, Any]:
        entries: dict[Any, Any] = {}
        plain = True  # every key a string
        for key_node, value_node in node.value:
            if key_node.__class__ is not ScalarNode:
                what = "a list" if key_node.__class__ is SequenceNode else "a mapping"
                raise _Refused(f"a key is {what}, and kubectl refuses it", key_node)
            tag, text = key_node.tag, key_node.value
            if tag is STR or (tag is _PLAIN and text[:1] not in _HINTS and text != "<<"):
                entries[text] = self.value(value_node)
            elif text == "<<" and (tag is _PLAIN or tag is _NON_SPECIFIC or tag == MERGE):
                plain = self._merge(value_node, entries) and plain
            else:
                key = _go_value(key_node)
                if type(key) is str:
                    entries[key] = self.value(value_node)
                else:  # by Go's identity: 1, 1.0 and true are three keys
                    entries[(type(key), key)] = (key_node, self.value(value_node))
                    plain = False
        if plain:
            return entries
        self.entries[id(node)] = entries
        return _json_mapping(entries)

    def _merge(self, node: Node, entries: dict[Any, Any]) -> bool:
        """Go's merge: each mapping's entries overwrite what is there, the first of a list last.
        Whether every key merged is a string."""
        sources = node.value[::-1] if node.__class__ is SequenceNode else [node]
        plain = True
        for source in sources:
            if source.__class__ is not MappingNode:
                raise _Refused("a merge key (<<) needs a mapping or a list of mappings", node)
            built = self.value(source)
            merged = self.entries.get(id(source), built)
            plain = plain and merged is built
            entries.update(merged)
            self.merged += len(merged)
            if self.merged > self.limits.max_nodes:
                raise _Refused(f"merge keys expand to more than {self.limits.max_nodes:,} values", node)
        return plain


def _go_value(node: ScalarNode) -> Any:
    """A scalar's value as go-yaml v2 decodes it into an interface{}, before any JSON."""
    tag = node.tag
    if tag is _PLAIN:
        return node.value if node.style else _resolve("", node.value)[1]
    if tag == STR or tag is _NON_SPECIFIC:
        return node.value
    return _tagged(tag, node.value, node)


def _json_mapping(entries: dict[Any, Any]) -> dict[str, Any]:
    """A Go map with keys of any type as sigs.k8s.io/yaml writes it in JSON."""
    out: dict[str, Any] = {}
    origin: dict[str, Any] = {}
    for key, value in entries.items():
        if type(key) is str:
            name = key
        else:
            node, value = value
            name = _json_key(key[1], node)
        if name in out and origin.get(name, name) != key and _canonical(out[name]) != _canonical(value):
            raise _Refused(f'two keys both become "{name}" in JSON, and kubectl would keep either one at random',
                           node if type(key) is not str else entries[origin[name]][0])
        out[name], origin[name] = value, key
    return out


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _json_key(key: Any, node: Node) -> str:
    """sigs.k8s.io/yaml's convertToJSONableObject for a key."""
    if key is True or key is False:
        return "true" if key else "false"
    if type(key) is int:
        return str(key)
    if type(key) is float:
        return _go_float32_g(key)
    if key is None:
        raise _Refused("a key is null, and kubectl refuses it", node)
    raise _Refused("a key is a number too large for an int64, and kubectl refuses it; quote it", node)


def _json_value(value: Any, node: Node) -> Any:
    """What a go-yaml value is in the JSON kubectl sends."""
    cls = type(value)
    if cls is float:
        if math.isinf(value) or math.isnan(value):
            raise _Refused("an infinite number or NaN has no JSON form, so kubectl refuses it; quote it "
                           "to keep it as text", node)
        return _number(value)
    if cls is _Uint64:
        return float(value)
    return value


def _number(value: float) -> int | float:
    """A float64 as the API machinery decodes the JSON Go writes for it. Go writes the shortest
    digits that read back as it, in fixed point below 1e21; what reads as an int64 is one."""
    if not value.is_integer() or abs(value) >= 1e21:
        return value
    if abs(value) < 2 ** 53:
        return int(value)
    written = int(Decimal(repr(value)))  # 2**60 is written 1152921504606847000
    return written if -_INT64 <= written < _INT64 else value


def _resolve(tag: str, text: str) -> tuple[str, Any]:
    """go-yaml v2's resolve(): the tag and value of scalar `text` under `tag` ("" for none)."""
    if tag not in _RESOLVABLE:
        return tag, text
    hint = _HINTS.get(text[:1])
    if hint is None or tag == STR:
        return STR, text
    special = _SPECIAL.get(text)
    if special is not None:
        return special
    if hint == ".":
        if _DOT_FLOAT.fullmatch(text):
            number = float(text)
            if not math.isinf(number):
                return FLOAT, number
    elif hint in "DS":
        if tag == TIMESTAMP and _is_timestamp(text):
            return TIMESTAMP, text
        plain = text.replace("_", "")
        integer = _go_int(plain)
        if integer is not None:
            return INT, integer
        if _YAML_FLOAT.fullmatch(plain):
            number = float(plain)
            if not math.isinf(number):
                return FLOAT, number
    return STR, text


def _go_int(text: str) -> int | None:
    """strconv.ParseInt(text, 0, 64), or ParseUint for what only a uint64 holds; None if neither."""
    match = _GO_INT.fullmatch(text)
    if match is None:
        return None
    sign, hexadecimal, octal, binary, legacy_octal, decimal = match.groups()
    digits, base = next((d, b) for d, b in ((hexadecimal, 16), (octal, 8), (binary, 2), (legacy_octal, 8),
                                             (decimal, 10)) if d is not None)
    digits = digits.lstrip("0") or "0"
    if len(digits) > 64:  # past 64 bits in any base; and int() refuses very long text
        return None
    value = int(digits, base)
    value = -value if sign == "-" else value
    if -_INT64 <= value < _INT64:
        return value
    if not sign and value < 1 << 64:
        return _Uint64(value)
    return None


def _is_timestamp(text: str) -> bool:
    """Whether time.Parse takes `text` in one of go-yaml's four timestamp layouts."""
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        return False
    year, month, day, separator, hour, minute, second, zone = match.groups()
    if separator is not None and (separator == " ") == (zone is not None):
        return False  # `T` needs a zone, a space takes none
    if zone is not None and zone != "Z" and (int(zone[1:3]) > 24 or int(zone[4:]) > 60):
        return False
    if not _is_date(int(year), int(month), int(day)):
        return False
    return separator is None or (int(hour) < 24 and int(minute) < 60 and int(second) < 60)


def _is_date(year: int, month: int, day: int) -> bool:
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return 1 <= month <= 12 and 1 <= day <= (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]


def _tagged(tag: str, text: str, node: Node) -> Any:
    """The value of a scalar with an explicit tag, as go-yaml decodes it into an interface{}."""
    if tag == BINARY:
        try:
            raw = base64.b64decode(text.replace("\n", "").replace("\r", ""), validate=True)
        except (binascii.Error, ValueError):
            raise _Refused("a !!binary value is not valid base64", node) from None
        # Go's JSON encoder writes each byte that is not UTF-8 as U+FFFD.
        return re.sub("[\udc80-\udcff]", "\ufffd", raw.decode("utf-8", "surrogateescape"))
    rtag, value = _resolve(tag, text)
    if tag in ("", rtag, STR) or tag not in _RESOLVABLE:
        return value
    if tag == FLOAT and rtag == INT and type(value) is int:
        return float(value)
    raise _Refused(f"a value tagged !!{tag[len(_TAG):]} is not one (it reads as !!{rtag[len(_TAG):]})", node)


def _go_float32_g(value: float) -> str:
    """strconv.FormatFloat(value, 'g', -1, 32), with go-yaml's names for infinities and NaN."""
    if math.isnan(value):
        return ".nan"
    try:
        single = struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        single = math.copysign(math.inf, value)
    if math.isinf(single):
        return ".inf" if single > 0 else "-.inf"
    if single == 0:
        return "-0" if math.copysign(1, single) < 0 else "0"
    digits, point = _shortest_float32(abs(single))
    sign = "-" if single < 0 else ""
    exponent = point - 1
    if exponent < -4 or exponent >= 6:  # Go's %g for the shortest digits
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _shortest_float32(value: float) -> tuple[str, int]:
    """The fewest decimal digits that read back as float32 `value`, nearest it among those, and
    where the decimal point goes (value = 0.digits × 10**point)."""
    exact = Decimal(value)

    def single(text: str) -> float:
        try:
            return struct.unpack("<f", struct.pack("<f", float(text)))[0]
        except OverflowError:
            return math.inf

    for precision in range(1, 10):
        nearest = f"{value:.{precision - 1}e}"
        mantissa, _, exponent = nearest.partition("e")
        step = Decimal(f"1e{int(exponent) - precision + 1}")
        other = Decimal(nearest) + (step if Decimal(nearest) < exact else -step)
        for candidate in (Decimal(nearest), other):
            if candidate > 0 and single(str(candidate)) == value:
                sign, digit_tuple, exp = candidate.normalize().as_tuple()
                digits = "".join(map(str, digit_tuple))
                return digits, len(digits) + int(exp)
    raise AssertionError("nine digits always read back as a float32")


# -- bounds --------------------------------------------------------------------------------------

def nesting_bound(text: str) -> int:
    """An upper bound on how deep collections in `text` nest, found without parsing it.

    Flow collections each need a `[` or `{`. A nested block collection starts further right than
    its parent, except a sequence directly under a mapping key, so block nesting is at most
    twice the rightmost column where a block collection can start.
    """
    column = max(map(len, _BLOCK_START.findall(text)), default=0)
    return text.count("[") + text.count("{") + 2 * (column + 1)


def _check_depth(text: str, source: str, limits: Limits, loader: type) -> None:
    """Refuse deep nesting from the event stream, before libyaml's composer recurses into it.

    The composer recurses on the C stack, so a document nested some 30,000 deep crashes the
    process instead of raising.
    """
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > limits.max_depth:
                raise RenderError(f"nested deeper than {limits.max_depth} levels", source)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _describe(err: yaml.MarkedYAMLError, line_offset: int = 0) -> str:
    """The problem and its position, without the snippet of source PyYAML would quote.

    The snippet could be a Secret's value, so it is never shown.
    """
    mark = err.problem_mark or err.context_mark
    where = f"line {mark.line + line_offset + 1}, column {mark.column + 1}: " if mark else ""
    problem = err.problem or err.context or "invalid YAML"
    if err.context and err.problem:
        problem = f"{err.context}, {err.problem}"
    return f"invalid YAML: {where}{problem}"


def check_bounds(docs: Iterable[Any], source: str, limits: Limits = DEFAULT_LIMITS) -> None:
    """Refuse documents whose aliases expand too far or that nest too deep.

    Aliases share one Python object, so each container is measured once, by identity: the walk
    costs the size of the file, not of its expansion. Depth is measured the same way, so an
    alias to a deep anchor counts as deep wherever it is used.
    """
    measured: dict[int, tuple[int, int]] = {}
    total = 0
    for doc in docs:
        size, height = _measure(doc, measured, source, limits)
        total += size
        if total > limits.max_nodes:
            raise _bomb(source, limits)


def _measure(root: Any, measured: dict[int, tuple[int, int]], source: str,
             limits: Limits) -> tuple[int, int]:
    """(values after expansion, nesting height) of `root`, memoised in `measured` by identity."""
    # An iterative depth-first walk: deep input must not exhaust Python's stack. A container
    # whose children are being walked is on the current path, so meeting it again is a cycle.
    walking: dict[int, list[Any]] = {}
    stack = [root]
    while stack:
        node = stack[-1]
        if id(node) in measured or not isinstance(node, (dict, list)):
            stack.pop()
            continue
        children = walking.get(id(node))
        if children is None:
            children = walking[id(node)] = [c for c in (node.values() if isinstance(node, dict) else node)
                                            if isinstance(c, (dict, list))]
            if any(id(c) in walking for c in children):
                raise RenderError("an alias refers to a collection that contains it", source)
            stack.extend(children)
            continue
        stack.pop()
        del walking[id(node)]
        size = 1 + len(node) - len(children) + sum(measured[id(c)][0] for c in children)
        height = 1 + max((measured[id(c)][1] for c in children), default=0)
        if size > limits.max_nodes:
            raise _bomb(source, limits)
        if height > limits.max_depth:
            raise RenderError(f"nested deeper than {limits.max_depth} levels", source)
        measured[id(node)] = (size, height)
    return measured.get(id(root), (1, 0))


def _bomb(source: str, limits: Limits) -> RenderError:
    return RenderError(f"expands to more than {limits.max_nodes:,} values (a YAML alias bomb?)", source)


# -- YAML for people -----------------------------------------------------------------------------

class KubernetesDumper(Dumper):  # type: ignore[misc, valid-type]
    """Writes a string plain only where kubectl would read it back as that string: `"0o755"`, `"y"`
    and `""` are quoted, `12:30` and `2024-01-01` are not."""

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        if kind is not ScalarNode:
            return MAP if kind is MappingNode else SEQ
        if not implicit[0]:
            return STR
        if value == "<<":
            return MERGE
        tag, meaning = _resolve("", value)
        return STR if tag == STR or tag == TIMESTAMP else tag


def dump(value: Any) -> str:
    """Stable YAML for people: sorted keys, block style, no line folding, quoted where kubectl needs it."""
    return yaml.dump(value, Dumper=KubernetesDumper, sort_keys=True, default_flow_style=False,
                     allow_unicode=True, width=1_000_000)
