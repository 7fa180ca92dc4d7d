"""What the bot applied, against what the cluster holds now: pure comparisons, no I/O.

An object is the same as applied when every field the bot sent is there with its value, and the
bot's field manager still holds it. That is the reading of server-side apply: fields the API server
defaults, and fields other managers set that Git never did, belong to the live object without
being drift. Local comparison answers "the same" only when it is sure; anything else (a list the
server or someone else grew, a value the server rewrote in a form we do not know) is for a
server-side dry run to decide (`bot.drift`).
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal, InvalidOperation
from typing import Any, Iterator

from kubernetes.utils.quantity import parse_quantity

Path = tuple[str | int, ...]
UNTRACKED = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}
"""Fields managedFields never lists: an object's identity."""
QUANTITY_PARENTS = {"requests", "limits", "capacity", "hard", "overhead", "allocatable", "default",
                    "defaultRequest", "max", "min", "maxLimitRequestRatio"}
QUANTITY_KEYS = {"sizeLimit", "storage"}
"""Where the API server keeps `resource.Quantity` values, which it rewrites in canonical form."""


def path_text(path: Path) -> str:
    """`spec.template.spec.containers[0].image`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def as_applied(body: dict[str, Any]) -> dict[str, Any]:
    """The body as the API server stores it where that is plainly known: a Secret's `stringData`
    becomes base64 `data` (the server writes it there and keeps no `stringData`)."""
    if body.get("kind") != "Secret" or not isinstance(body.get("stringData"), dict):
        return body
    data = dict(body.get("data") or {})
    for key, value in body["stringData"].items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    return {**{k: v for k, v in body.items() if k != "stringData"}, "data": data}


def differences(desired: Any, live: Any, path: Path = ()) -> Iterator[Path]:
    """Paths where `live` lacks a field of `desired`, or holds another value. Fields only `live`
    has are not differences; a list keyed by name may hold items of others too; any other list
    must have as many items, each the same as applied."""
    if desired is None or path in UNTRACKED:
        return  # null in an apply means "not set"
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            yield path
            return
        for key, value in desired.items():
            if key not in live:
                if value is not None:
                    yield path + (key,)
            else:
                yield from differences(value, live[key], path + (key,))
    elif isinstance(desired, list):
        named = _by_name(desired), _by_name(live)
        if named[0] is not None and named[1] is not None:
            # A list keyed by name (containers, env, volumes): items others added are theirs.
            for i, (name, mine) in enumerate(named[0].items()):
                if name not in named[1]:
                    yield path + (i,)
                else:
                    yield from differences(mine, named[1][name], path + (i,))
            return
        if not isinstance(live, list) or len(live) != len(desired):
            yield path
            return
        for i, (mine, theirs) in enumerate(zip(desired, live)):
            yield from differences(mine, theirs, path + (i,))
    elif not _same_scalar(desired, live, path):
        yield path


def _by_name(items: Any) -> dict[str, Any] | None:
    """A list's items by their `name`, when every item is a mapping with a distinct one."""
    if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
        return None
    named = {i["name"]: i for i in items}
    return named if len(named) == len(items) else None


def _same_scalar(desired: Any, live: Any, path: Path) -> bool:
    if type(desired) is type(live) or {type(desired), type(live)} == {int, float}:
        if desired == live:
            return True
    return _is_quantity_field(path) and _quantity(desired) is not None and _quantity(desired) == _quantity(live)


def _is_quantity_field(path: Path) -> bool:
    names = [p for p in path if isinstance(p, str)]
    return bool(names) and (names[-1] in QUANTITY_KEYS or (len(names) > 1 and names[-2] in QUANTITY_PARENTS))


def _quantity(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    try:
        return parse_quantity(value)
    except (ValueError, InvalidOperation):
        return None


# -- field ownership (managedFields, FieldsV1) ------------------------------------------------------
def entries(live: dict[str, Any]) -> list[dict[str, Any]]:
    """The live object's managedFields entries, but for its status (`kubectl scale` writes through
    the scale subresource, and that entry holds `spec.replicas`)."""
    return [e for e in (live.get("metadata") or {}).get("managedFields") or []
            if isinstance(e, dict) and e.get("subresource") != "status" and isinstance(e.get("fieldsV1"), dict)]


def unowned(desired: dict[str, Any], live: dict[str, Any], manager: str) -> dict[Path, tuple[str, ...]]:
    """Fields of `desired` that `manager`'s apply no longer holds in `live`, each with the managers
    that hold it now (none when nobody does)."""
    mine = [e["fieldsV1"] for e in entries(live) if e.get("manager") == manager and e.get("operation") == "Apply"]
    missing = list(_not_covered(mine[0] if mine else None, desired, ()))
    others = [(e.get("manager") or "(unnamed)", e["fieldsV1"]) for e in entries(live)
              if not (e.get("manager") == manager and e.get("operation") == "Apply")]
    return {path: tuple(sorted({name for name, fields in others if _covers(fields, desired, path)}))
            for path in missing}


def holders(live: dict[str, Any], path: Path, besides: str) -> set[str]:
    """The field managers other than `besides` that hold the field at `path` of `live`."""
    return {e.get("manager") or "(unnamed)" for e in entries(live)
            if e.get("manager") != besides and _covers(e["fieldsV1"], live, path)}


def _not_covered(fields: dict[str, Any] | None, value: Any, path: Path) -> Iterator[Path]:
    if path in UNTRACKED or value is None:
        return
    if fields is None:
        yield path
        return
    if not [k for k in fields if k != "."]:
        return  # a leaf: the whole value (a scalar, an atomic list or map) is held
    if isinstance(value, dict):
        for key, sub in value.items():
            if (path + (key,)) not in UNTRACKED and sub is not None:
                yield from _not_covered(fields.get(f"f:{key}"), sub, path + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _not_covered(_element(fields, item, i), item, path + (i,))


def _element(fields: dict[str, Any], item: Any, index: int) -> dict[str, Any] | None:
    """The fields of a list item: by its merge keys (`k:{...}`), its value (`v:...`), or its index."""
    for name, sub in fields.items():
        if name.startswith("k:") and isinstance(item, dict):
            try:
                keys = json.loads(name[2:])
            except ValueError:
                continue
            # A defaulted key (a port's protocol) is in the entry but not in what was applied.
            if all(k not in item or item[k] == v for k, v in keys.items()) and any(k in item for k in keys):
                return sub
        elif name.startswith("v:"):
            try:
                if json.loads(name[2:]) == item:
                    return sub
            except ValueError:
                continue
        elif name == f"i:{index}":
            return sub
    return None


def _covers(fields: dict[str, Any], desired: Any, path: Path) -> bool:
    """Whether a FieldsV1 set holds the field at `path` of `desired` (or a field within it)."""
    node: dict[str, Any] | None = fields
    value = desired
    for part in path:
        if node is None:
            return False
        if not [k for k in node if k != "."]:
            return True
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return False  # not in the object: nobody holds it there
        node = _element(node, value, part) if isinstance(part, int) else node.get(f"f:{part}")
    return node is not None


def same_as_applied(desired: dict[str, Any], live: dict[str, Any], manager: str) -> bool:
    """Sure that `live` holds everything `desired` applies, held by `manager`."""
    return next(differences(as_applied(desired), live), None) is None and not unowned(desired, live, manager)
