"""A local stand-in for the Kubernetes API server, faithful enough for a server-side-apply deploy tool.

Choice: built on `tests.fakes.http.RecordingServer`, not on kmock. `kmock.KubernetesEmulator` was
evaluated: it is an aiohttp/asyncio server (our bot, the `kubernetes` client and these tests are
synchronous, so it would need its own event-loop thread), and its emulator stores objects by
merging dicts naively. It has no server-side apply (no managedFields, no removal of dropped fields,
no conflicts, no dry run), no resourceVersion/generation, no label selectors, no CRD registration,
no namespace checks, and its lists carry no `kind`. We would have overridden nearly every handler,
so a compact threaded server is simpler. RecordingServer already records requests and injects faults.

What it serves:
- legacy discovery (`/version`, `/api`, `/api/v1`, `/apis`, `/apis/{g}`, `/apis/{g}/{v}`), with the `scale`
  subresources. A request for aggregated discovery gets the plain shapes with `Content-Type: application/json`,
  and that is what makes client-go fall back to legacy discovery;
- a minimal OpenAPI v3, only so kubectl's default `--validate=strict` sees that PATCH takes
  `fieldValidation`. Without it kubectl fails with "failed to download openapi";
- objects: GET, LIST (label and field selectors), POST, PUT, DELETE (one object or a collection), JSON merge
  patches, strategic merge patches (lists with a merge key merge element by element), server-side apply with
  per-manager field sets in managedFields, and `/scale` (GET, PUT, PATCH; `kubectl scale`). A watch answers at
  once with the current objects (or the ones changed since its resourceVersion) and then ends.
  `kubectl rollout status` works, but its client-go logs "very short watch" info lines;
- what a real server does to every write, dry runs included:
  - defaulting, a subset of the real defaulters (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, pod
    templates and their containers, probes and volumes, Service, Secret, Namespace, PVC, NetworkPolicy, LimitRange,
    role bindings). A Service gets a cluster IP (node ports for NodePort and LoadBalancer) that later writes keep,
    and a Job its controller-uid selector and pod labels;
  - quantities in resource lists (containers, pod overhead, PVCs, ResourceQuota, LimitRange) and `emptyDir.sizeLimit`
    stored as apimachinery's `resource.Quantity` writes them; one that does not parse is the real 400 ("cannot be
    handled as a Deployment: quantities must match the regular expression ...");
  - validation refusals as 422 Invalid Status bodies with the real messages and causes: names, label and annotation
    keys and values, replicas, selectors that miss the template, containers (name, image, duplicates, ports),
    Service ports, a Job's restartPolicy;
- field managers as on a real server: Update managers (POST, PUT, patches, `/scale` with `subresource: scale`) own
  what they changed, defaults included; an Apply manager owns what it applied, and shares fields another applier
  set to the same value. Lists with merge keys are associative in apply (containers, initContainers, volumes,
  imagePullSecrets by name, env by name, ports by containerPort and protocol, volumeMounts by mountPath, Service
  ports by port and protocol), with `k:{...}` element keys in fieldsV1, so another manager's sidecar or env var
  survives an apply that does not mention it;
- CRDs that register their kinds, plus computed status for Namespaces, CRDs and workloads, with test hooks.

Simplifications, on purpose: other lists are atomic in apply; applied elements keep the live order with new ones
last; defaulting and validation cover the subset above (no admission plugins: no default ServiceAccount or
tolerations on Pods, no LimitRange applied to pods); conflicts are only on leaf values; `status` is server-owned
for every kind (tests use `set_status`) and PVCs have none. Deleting a namespace is immediate, and watches do not
report deletions.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import time
import uuid
from datetime import datetime, timezone
from fractions import Fraction
from typing import Any, NamedTuple

import yaml

from tests.fakes.http import Recorded, RecordingServer, Reply


class Res(NamedTuple):
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short: tuple[str, ...] = ()
    crd: str = ""  # the CRD that registered it; "" for built-ins

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def openapi_gv(self) -> str:
        return f"apis/{self.group}/{self.version}" if self.group else "api/v1"


BUILTIN = [
    Res("", "v1", "namespaces", "Namespace", False, ("ns",)),
    Res("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    Res("", "v1", "secrets", "Secret", True),
    Res("", "v1", "services", "Service", True, ("svc",)),
    Res("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",)),
    Res("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",)),
    Res("", "v1", "resourcequotas", "ResourceQuota", True, ("quota",)),
    Res("", "v1", "limitranges", "LimitRange", True, ("limits",)),
    Res("", "v1", "pods", "Pod", True, ("po",)),
    Res("apps", "v1", "deployments", "Deployment", True, ("deploy",)),
    Res("apps", "v1", "statefulsets", "StatefulSet", True, ("sts",)),
    Res("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",)),
    Res("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",)),
    Res("networking.k8s.io", "v1", "ingresses", "Ingress", True, ("ing",)),
    Res("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",)),
    Res("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    Res("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    Res("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    Res("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    Res("batch", "v1", "jobs", "Job", True),
    Res("batch", "v1", "cronjobs", "CronJob", True, ("cj",)),
    Res("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
        ("crd", "crds")),
]
IN_ALL = {"pods", "services", "deployments", "statefulsets", "daemonsets", "replicasets", "jobs", "cronjobs"}
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SERVER_META = {"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "deletionTimestamp",
               "selfLink", "name", "namespace"}
OBJECT_PATH = (r"/(?:api|apis/(?P<group>[^/]+))/(?P<version>[^/]+)"
               r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?")
CRD_GROUP = "apiextensions.k8s.io"
NO_RESOURCE = "the server could not find the requested resource"
MISSING = object()


class ApiError(Exception):
    """Raised by handlers; answered as a `kind: Status` body."""

    def __init__(self, code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


def status_body(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success" if code < 400 else "Failure",
            "message": message, "reason": reason, "code": code}
    return {**body, "details": details} if details else body


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- field paths: a path is a tuple of map keys; a leaf is a non-map value or an empty map -----------
def tracked(obj: dict | None) -> dict:
    """The part of an object that field managers can own."""
    out = {k: v for k, v in (obj or {}).items() if k not in ("apiVersion", "kind", "status", "metadata")}
    meta = {k: v for k, v in ((obj or {}).get("metadata") or {}).items() if k not in SERVER_META}
    return {**out, "metadata": meta} if meta else out


def leaves(obj: Any, prefix: tuple = ()) -> dict[tuple, Any]:
    if isinstance(obj, dict) and (obj or not prefix):
        return {p: v for k, sub in obj.items() if sub is not None for p, v in leaves(sub, prefix + (k,)).items()}
    return {prefix: obj}


def get_path(obj: Any, path: tuple) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return MISSING
        obj = obj[key]
    return obj


def set_path(obj: dict, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        if not isinstance(obj.get(key), dict):
            obj[key] = {}
        obj = obj[key]
    if not (value == {} and isinstance(obj.get(path[-1]), dict)):  # `x: {}` claims the map, keeps its contents
        obj[path[-1]] = copy.deepcopy(value)


def _changes(obj: dict, path: tuple, value: Any) -> bool:
    current = get_path(obj, path)
    return current != value and not (value == {} and isinstance(current, dict))  # see set_path


def del_path(obj: dict, path: tuple) -> None:
    parent = get_path(obj, path[:-1])
    if isinstance(parent, dict) and path[-1] in parent:
        del parent[path[-1]]
        if not parent and len(path) > 2:  # a map emptied by the removal goes too, like on the real server
            del_path(obj, path[:-1])


def _token(key: str) -> str:
    return key if isinstance(key, ItemKey) else f"f:{key}"


def to_fields_v1(paths: set[tuple]) -> dict:
    """A set of owned paths as fieldsV1; `.` marks an element (or map) owned as well as fields inside it."""
    children: dict[str, set[tuple]] = {}
    for path in paths:
        if path:
            children.setdefault(path[0], set()).add(path[1:])
    out: dict = {}
    for key in sorted(children, key=_token):
        inner = to_fields_v1({rest for rest in children[key] if rest})
        out[_token(key)] = {".": {}, **inner} if () in children[key] and inner else inner
    return out


def from_fields_v1(fields: dict, prefix: tuple = ()) -> set[tuple]:
    out: set[tuple] = set()
    for token, sub in fields.items():
        if token == ".":
            out.add(prefix)
        elif token.startswith(("f:", "k:")):
            key = token[2:] if token.startswith("f:") else ItemKey(token)
            out |= from_fields_v1(sub, prefix + (key,)) if sub else {prefix + (key,)}
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


_TERM = re.compile(r"^\s*(?:!\s*(?P<absent>[\w./-]+)|(?P<k>[\w./-]+)(?:\s*(?P<op>==|=|!=)\s*(?P<v>[\w./-]*)"
                   r"|\s+(?P<set>in|notin)\s*\((?P<vals>[^)]*)\))?)\s*$")


def label_matcher(expr: str | None):
    """A predicate on objects for a label selector: k=v, k==v, k!=v, k, !k, k in (a,b), k notin (a,b)."""
    terms = [t for t in re.split(r",(?![^(]*\))", expr or "") if t.strip()]
    matches = [_TERM.match(t) for t in terms]
    if not all(matches):
        raise ApiError(400, "BadRequest", f"unable to parse requirement: {expr!r}")

    def ok(m: re.Match, labels: dict) -> bool:
        if m["absent"]:
            return m["absent"] not in labels
        value = labels.get(m["k"])
        if m["op"]:  # like the real server, `k!=v` also matches objects without k
            return (value == m["v"]) == (m["op"] != "!=")
        if m["set"]:
            return (value in {s.strip() for s in m["vals"].split(",")}) == (m["set"] == "in")
        return m["k"] in labels

    return lambda obj: all(ok(m, obj["metadata"].get("labels") or {}) for m in matches)


def field_matcher(expr: str | None):
    terms = []
    for term in filter(None, (expr or "").split(",")):
        m = re.match(r"^\s*([\w.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
        terms.append((tuple(m[1].split(".")), m[2] != "!=", m[3]))
    return lambda obj: all((str(get_path(obj, p)) == v) == eq for p, eq, v in terms)


# -- associative lists: list elements keyed by their merge keys, as server-side apply keys them -------
LIST_KEY_DEFAULTS = {"protocol": "TCP"}
POD_LISTS = {"containers": ("name",), "initContainers": ("name",), "ephemeralContainers": ("name",),
             "volumes": ("name",), "imagePullSecrets": ("name",)}
CONTAINER_LISTS = {"env": ("name",), "ports": ("containerPort", "protocol"), "volumeMounts": ("mountPath",),
                   "volumeDevices": ("devicePath",)}
POD_SPEC_AT = {"Pod": ("spec",), "Deployment": ("spec", "template", "spec"),
               "StatefulSet": ("spec", "template", "spec"), "DaemonSet": ("spec", "template", "spec"),
               "ReplicaSet": ("spec", "template", "spec"), "Job": ("spec", "template", "spec"),
               "CronJob": ("spec", "jobTemplate", "spec", "template", "spec")}


class ItemKey(str):
    """A list element in a field path, spelled as in fieldsV1: `k:{"name":"web"}`."""

    @classmethod
    def of(cls, item: dict, fields: tuple[str, ...]) -> ItemKey:
        key = {f: item[f] if item.get(f) is not None else LIST_KEY_DEFAULTS[f] for f in fields}
        return cls("k:" + json.dumps(key, sort_keys=True, separators=(",", ":")))

    @property
    def fields(self) -> dict:
        return json.loads(self[2:])

    def spelled(self) -> str:
        """As the real server writes it in a conflict: `[name="web"]`."""
        return "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in self.fields.items()) + "]"


class TypedError(ValueError):
    """An applied object that the apply schema cannot key (the real server's "typed patch" errors)."""


def associative_lists(kind: str) -> dict[tuple, tuple[str, ...]]:
    """{path of field names: merge keys} of the kind's lists that apply merges element by element."""
    out: dict[tuple, tuple[str, ...]] = {("spec", "ports"): ("port", "protocol")} if kind == "Service" else {}
    at = POD_SPEC_AT.get(kind)
    if at:
        out.update({at + (name,): keys for name, keys in POD_LISTS.items()})
        out.update({at + (c, name): keys for c in ("containers", "initContainers", "ephemeralContainers")
                    for name, keys in CONTAINER_LISTS.items()})
    return out


def to_tree(obj: Any, lists: dict, strict: bool = False, path: tuple = ()) -> Any:
    """The object with its associative lists as maps of ItemKey -> element, so field paths reach into them.

    `strict` (an applied config) refuses elements without keys or with duplicate keys; otherwise such a
    list stays atomic, as the real server treats lists it cannot key in updates.
    """
    if path in lists and isinstance(obj, list):
        tree: dict = {}
        for i, item in enumerate(obj):
            missing = [f for f in lists[path] if not isinstance(item, dict)
                       or (item.get(f) is None and f not in LIST_KEY_DEFAULTS)]
            key = None if missing else ItemKey.of(item, lists[path])
            if (missing or key in tree) and not strict:
                return copy.deepcopy(obj)
            if missing:
                raise TypedError(f".{'.'.join(path)}: element {i}: associative list with keys has an element that "
                                 f'omits key field "{missing[0]}" (and doesn\'t have default value)')
            if key in tree:
                raise TypedError(f".{'.'.join(path)}: duplicate entries for key {key.spelled()}")
            tree[key] = {k: to_tree(v, lists, strict, path + (k,)) for k, v in item.items()}
        return tree
    if isinstance(obj, dict):
        return {k: to_tree(v, lists, strict, path + (k,)) for k, v in obj.items()}
    return copy.deepcopy(obj)


def from_tree(tree: Any, lists: dict, path: tuple = ()) -> Any:
    if not isinstance(tree, dict):
        return tree
    if path in lists and all(isinstance(k, ItemKey) for k in tree):
        return [{k: from_tree(v, lists, path + (k,)) for k, v in item.items()} for item in tree.values()]
    return {k: from_tree(v, lists, path + (k,)) for k, v in tree.items()}


def items_of(paths) -> set[tuple]:
    """The list elements on the way to these paths."""
    return {p[:i + 1] for p in paths for i, k in enumerate(p) if isinstance(k, ItemKey)}


def claims(owned: tuple, path: tuple) -> bool:
    """Whether owning `owned` covers `path`: the same field, one inside it, or an atomic value around it."""
    return owned[:len(path)] == path or (len(owned) < len(path) and path[:len(owned)] == owned
                                         and not isinstance(owned[-1], ItemKey))


def is_item_key_field(path: tuple) -> bool:
    return len(path) > 1 and isinstance(path[-2], ItemKey) and path[-1] in path[-2].fields


def field_str(path: tuple) -> str:
    return "".join(k.spelled() if isinstance(k, ItemKey) else f".{k}" for k in path)


def strategic_merge(target: Any, patch: Any, lists: dict, path: tuple = ()) -> Any:
    """A strategic merge patch: lists with a merge key merge element by element (`$patch: delete` removes one)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        here = path + (key,)
        if key.startswith("$"):  # $setElementOrder, $retainKeys, $patch: directives, not fields
            continue
        if value is None:
            out.pop(key, None)
        elif here in lists and isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = _merge_items(out[key], value, lists, here)
        else:
            out[key] = strategic_merge(out.get(key), value, lists, here)
    return out


def _merge_items(current: list, patch: list, lists: dict, path: tuple) -> list:
    merge_key, out = lists[path][0], copy.deepcopy(current)
    for item in patch:
        at = next((i for i, c in enumerate(out) if isinstance(item, dict) and isinstance(c, dict)
                   and item.get(merge_key) is not None and c.get(merge_key) == item.get(merge_key)), None)
        if isinstance(item, dict) and item.get("$patch") == "delete":
            if at is not None:
                del out[at]
        elif at is None:
            out.append(strategic_merge({}, item, lists, path))
        else:
            out[at] = strategic_merge(out[at], item, lists, path)
    return out


# -- quantities: apimachinery's resource.Quantity, parsed and written back in canonical form ----------
QUANTITY_FORMAT = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
_QUANTITY = re.compile(r"([+-]?)0*([0-9]*)(?:\.([0-9]*))?([eEinumkKMGTP]*[-+]?[0-9]*)")
DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}


class QuantityError(ValueError):
    pass


def canonical_quantity(value: Any, milli: bool = False) -> str:
    """The string the real server stores for a quantity; `milli` rounds up to 1m, as ResourceList defaulting does.

    Like apimachinery: a value already in canonical shape keeps its text; values round up (away from zero)
    to nano; binary suffixes stay binary while exact and at least 1024; decimal exponents step by 3.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise QuantityError(f"quantities must match the regular expression '{QUANTITY_FORMAT}'")
    text = value.strip() if isinstance(value, str) else json.dumps(value)
    m = _QUANTITY.fullmatch(text)
    if not text or not m:
        raise QuantityError(f"quantities must match the regular expression '{QUANTITY_FORMAT}'")
    sign, num, denom, suffix = m[1], m[2] or "0", m[3] or "", m[4]
    if suffix in DECIMAL_SUFFIXES:
        base, exponent, fmt = 10, DECIMAL_SUFFIXES[suffix], "DecimalSI"
    elif suffix in BINARY_SUFFIXES:
        base, exponent, fmt = 2, BINARY_SUFFIXES[suffix], "BinarySI"
    elif len(suffix) > 1 and suffix[0] in "eE" and re.fullmatch(r"[-+]?[0-9]+", suffix[1:]):
        base, exponent, fmt = 10, int(suffix[1:]), "DecimalExponent"
    else:
        raise QuantityError("unable to parse quantity's suffix")
    if text == "0":
        return text
    amount = Fraction(int(num + denom), 10 ** len(denom)) * Fraction(base) ** exponent * (-1 if sign == "-" else 1)
    if _keeps_text(num, denom, exponent, fmt) and not (milli and exponent - len(denom) < -3):
        return text
    amount = _round_away(amount, Fraction(1, 10 ** (3 if milli else 9)))
    if fmt == "BinarySI" and abs(amount) < 1:
        fmt = "DecimalSI"
    return _canonical(amount, fmt)


def _keeps_text(num: str, denom: str, exponent: int, fmt: str) -> bool:
    """apimachinery keeps the parsed text of a quantity that already has the canonical shape."""
    shifted = num + denom
    if fmt == "BinarySI":
        fits = not denom and 15 - len(num) - int(exponent * 3 / 10) - 1 >= 0
        return fits and bool(num) and int(num) & 7 != 0
    scale = exponent - len(denom)
    return (18 - len(shifted) >= 0 and scale >= -9 and scale % 3 == 0 and not shifted.endswith("000")
            and bool(shifted) and shifted[0] != "0")


def _round_away(amount: Fraction, unit: Fraction) -> Fraction:
    steps = abs(amount) / unit
    whole = steps.numerator // steps.denominator + (steps.denominator != 1)
    return whole * unit * (-1 if amount < 0 else 1)


def _canonical(amount: Fraction, fmt: str) -> str:
    if amount == 0:
        return "0"
    sign, amount = "-" if amount < 0 else "", abs(amount)
    if fmt == "BinarySI" and amount >= 1024 and amount.denominator == 1:
        n, power = amount.numerator, 0
        while n % 1024 == 0 and power < 6:
            n, power = n // 1024, power + 1
        return f"{sign}{n}{['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'][power]}"
    n, exp = int(amount * 10 ** 9), -9
    while n % 10 == 0:
        n, exp = n // 10, exp + 1
    while exp % 3:
        n, exp = n * 10, exp - 1
    if fmt == "DecimalExponent" or exp not in DECIMAL_SUFFIXES.values():
        return f"{sign}{n}" + (f"e{exp}" if exp else "")
    return f"{sign}{n}" + next(s for s, e in DECIMAL_SUFFIXES.items() if e == exp)


# -- defaulting: a faithful subset of the real defaulters (pkg/apis/{apps,core,batch}/v1/defaults.go) --
def _default(obj: dict, key: str, value: Any) -> None:
    if obj.get(key) is None:
        obj[key] = copy.deepcopy(value)


def _map(obj: dict, key: str) -> dict:
    if not isinstance(obj.get(key), dict):
        obj[key] = {}
    return obj[key]


def _dicts(obj: Any, key: str) -> list[dict]:
    found = obj.get(key) if isinstance(obj, dict) else None
    return [i for i in found if isinstance(i, dict)] if isinstance(found, list) else []


def image_tag(image: str) -> str:
    """The tag as ParseImageName reads it: `latest` when there is neither a tag nor a digest."""
    name, _, digest = image.partition("@")
    tag = name.rsplit("/", 1)[-1].partition(":")[2]
    return tag or ("" if digest else "latest")


def default_object(kind: str, obj: dict) -> None:
    """Fill in what the real API server defaults. Service IPs are allocated by the server, not here."""
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob") or \
            kind in ("Service", "PersistentVolumeClaim", "NetworkPolicy", "Pod"):
        spec = _map(obj, "spec")
    if kind == "Deployment":
        _default(spec, "replicas", 1)
        strategy = _map(spec, "strategy")
        _default(strategy, "type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = _map(strategy, "rollingUpdate")
            _default(rolling, "maxUnavailable", "25%")
            _default(rolling, "maxSurge", "25%")
        _default(spec, "revisionHistoryLimit", 10)
        _default(spec, "progressDeadlineSeconds", 600)
    elif kind == "StatefulSet":
        _default(spec, "podManagementPolicy", "OrderedReady")
        strategy = _map(spec, "updateStrategy")
        if not strategy.get("type"):
            strategy["type"] = "RollingUpdate"
            _map(strategy, "rollingUpdate")
        if strategy["type"] == "RollingUpdate" and isinstance(strategy.get("rollingUpdate"), dict):
            _default(strategy["rollingUpdate"], "partition", 0)
        retention = _map(spec, "persistentVolumeClaimRetentionPolicy")
        _default(retention, "whenDeleted", "Retain")
        _default(retention, "whenScaled", "Retain")
        _default(spec, "replicas", 1)
        _default(spec, "revisionHistoryLimit", 10)
        for claim in _dicts(spec, "volumeClaimTemplates"):
            claim.update(apiVersion="v1", kind="PersistentVolumeClaim")
            _default(_map(claim, "spec"), "volumeMode", "Filesystem")
            _default(claim, "status", {"phase": "Pending"})
            _resource_lists(_map(claim, "spec").get("resources"))
    elif kind == "DaemonSet":
        strategy = _map(spec, "updateStrategy")
        _default(strategy, "type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = _map(strategy, "rollingUpdate")
            _default(rolling, "maxUnavailable", 1)
            _default(rolling, "maxSurge", 0)
        _default(spec, "revisionHistoryLimit", 10)
    elif kind == "ReplicaSet":
        _default(spec, "replicas", 1)
    elif kind == "Job":
        if spec.get("completions") is None and spec.get("parallelism") is None:
            spec["completions"] = 1
        _default(spec, "parallelism", 1)
        _default(spec, "backoffLimit", 2147483647 if spec.get("backoffLimitPerIndex") is not None else 6)
        _default(spec, "completionMode", "NonIndexed")
        _default(spec, "suspend", False)
        _default(spec, "podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed")
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels")
        if template_labels and not (obj.get("metadata") or {}).get("labels"):
            _map(obj, "metadata")["labels"] = copy.deepcopy(template_labels)
    elif kind == "CronJob":
        _default(spec, "concurrencyPolicy", "Allow")
        _default(spec, "suspend", False)
        _default(spec, "successfulJobsHistoryLimit", 3)
        _default(spec, "failedJobsHistoryLimit", 1)
    elif kind == "Service":
        _default(spec, "sessionAffinity", "None")
        _default(spec, "type", "ClusterIP")
        for port in _dicts(spec, "ports"):
            _default(port, "protocol", "TCP")
            if port.get("targetPort") in (None, 0, ""):
                port["targetPort"] = port.get("port")
        if spec["type"] in ("NodePort", "LoadBalancer"):
            _default(spec, "externalTrafficPolicy", "Cluster")
        if spec["type"] in ("NodePort", "LoadBalancer", "ClusterIP"):
            _default(spec, "internalTrafficPolicy", "Cluster")
        if spec["type"] == "LoadBalancer":
            _default(spec, "allocateLoadBalancerNodePorts", True)
    elif kind == "Secret":
        _default(obj, "type", "Opaque")
        if isinstance(obj.get("stringData"), dict):  # write-only: merged into data, never stored
            data = _map(obj, "data")
            data.update({k: base64.b64encode(str(v).encode()).decode() for k, v in obj.pop("stringData").items()})
        obj.pop("stringData", None)
    elif kind == "Namespace":
        name = (obj.get("metadata") or {}).get("name")
        if name:
            _map(_map(obj, "metadata"), "labels")["kubernetes.io/metadata.name"] = name
        _default(_map(obj, "spec"), "finalizers", ["kubernetes"])
    elif kind == "PersistentVolumeClaim":
        _default(spec, "volumeMode", "Filesystem")
        _resource_lists(spec.get("resources"))
    elif kind == "ResourceQuota":
        _resource_lists(obj.get("spec"), ("hard",))
    elif kind == "LimitRange":
        for item in _dicts(obj.get("spec") or {}, "limits"):
            _resource_lists(item, ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio"))
            if item.get("type") == "Container":
                defaults, requests = _map(item, "default"), _map(item, "defaultRequest")
                for source, target in ((item.get("max"), defaults), (defaults, requests), (item.get("min"), requests)):
                    for k, v in (source or {}).items():
                        target.setdefault(k, v)
    elif kind == "NetworkPolicy":
        if not spec.get("policyTypes"):
            spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
        for rule in _dicts(spec, "ingress") + _dicts(spec, "egress"):
            for port in _dicts(rule, "ports"):
                _default(port, "protocol", "TCP")
    elif kind in ("RoleBinding", "ClusterRoleBinding"):
        for subject in _dicts(obj, "subjects"):
            if not subject.get("apiGroup") and subject.get("kind") in ("User", "Group"):
                subject["apiGroup"] = "rbac.authorization.k8s.io"
    at = POD_SPEC_AT.get(kind)
    pod_spec = get_path(obj, at) if at else MISSING
    if at and isinstance(get_path(obj, at[:-1]), dict):
        pod_spec = _map(get_path(obj, at[:-1]), at[-1])
    if isinstance(pod_spec, dict):
        _default_pod_spec(pod_spec, pod=kind == "Pod")


def _default_pod_spec(spec: dict, pod: bool) -> None:
    for key, value in (("restartPolicy", "Always"), ("dnsPolicy", "ClusterFirst"), ("securityContext", {}),
                       ("terminationGracePeriodSeconds", 30), ("schedulerName", "default-scheduler")):
        _default(spec, key, value)
    if pod:
        _default(spec, "enableServiceLinks", True)
    for container in _dicts(spec, "containers") + _dicts(spec, "initContainers"):
        _default_container(container, pod)
    for volume in _dicts(spec, "volumes"):
        if not set(volume) - {"name"}:
            volume["emptyDir"] = {}
        for source in ("secret", "configMap", "downwardAPI", "projected"):
            if isinstance(volume.get(source), dict):
                _default(volume[source], "defaultMode", 420)
        if isinstance(volume.get("hostPath"), dict):
            _default(volume["hostPath"], "type", "")
        if isinstance(volume.get("emptyDir"), dict) and volume["emptyDir"].get("sizeLimit") is not None:
            volume["emptyDir"]["sizeLimit"] = canonical_quantity(volume["emptyDir"]["sizeLimit"])
        for projection in _dicts(volume.get("projected"), "sources"):
            if isinstance(projection.get("serviceAccountToken"), dict):
                _default(projection["serviceAccountToken"], "expirationSeconds", 3600)
    _resource_lists(spec.get("resources"))
    _resource_lists(spec, ("overhead",))


def _default_container(container: dict, pod: bool) -> None:
    _default(container, "imagePullPolicy",
             "Always" if image_tag(str(container.get("image") or "")) == "latest" else "IfNotPresent")
    _default(container, "terminationMessagePath", "/dev/termination-log")
    _default(container, "terminationMessagePolicy", "File")
    resources = _map(container, "resources")
    _resource_lists(resources)
    if pod and isinstance(resources.get("limits"), dict):  # SetDefaults_Pod: requests default to limits
        for k, v in resources["limits"].items():
            _map(resources, "requests").setdefault(k, v)
    for port in _dicts(container, "ports"):
        _default(port, "protocol", "TCP")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if isinstance(container.get(probe), dict):
            for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                               ("failureThreshold", 3)):
                _default(container[probe], key, value)
            if isinstance(container[probe].get("httpGet"), dict):
                _default(container[probe]["httpGet"], "path", "/")
                _default(container[probe]["httpGet"], "scheme", "HTTP")
    for env in _dicts(container, "env"):
        field_ref = (env.get("valueFrom") or {}).get("fieldRef")
        if isinstance(field_ref, dict):
            _default(field_ref, "apiVersion", "v1")


def _resource_lists(obj: Any, keys: tuple[str, ...] = ("requests", "limits")) -> None:
    """Quantities of a ResourceList, canonical and rounded up to milli-units as SetDefaults_ResourceList does."""
    for key in keys:
        found = obj.get(key) if isinstance(obj, dict) else None
        if isinstance(found, dict):
            obj[key] = {name: canonical_quantity(value, milli=True) for name, value in found.items()}


# -- validation: a realistic subset of the real validators, with their messages ---------------------
class FieldError(NamedTuple):
    kind: str  # Required, Invalid, Duplicate, NotSupported
    field: str
    value: Any = None
    detail: str = ""

    @property
    def body(self) -> str:
        head = "Required value" if self.kind == "Required" else f"{ERROR_WORDS[self.kind]}: {go_value(self.value)}"
        return f"{head}: {self.detail}" if self.detail else head


ERROR_WORDS = {"Invalid": "Invalid value", "Duplicate": "Duplicate value", "NotSupported": "Unsupported value"}


def go_value(value: Any) -> str:
    """A bad value as field.Error prints it (%q for strings, %#v for maps)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        pairs = ", ".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in sorted(value.items()))
        return "map[string]string{" + pairs + "}"
    return "null" if value is None else json.dumps(value)


def regex_error(message: str, fmt: str, *examples: str) -> str:
    return f"{message} (e.g. " + " or ".join(f"'{e}', " for e in examples) + f"regex used for validation is '{fmt}')"


DNS1123_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = DNS1123_LABEL + r"(\." + DNS1123_LABEL + ")*"
DNS1035_LABEL = "[a-z]([-a-z0-9]*[a-z0-9])?"
QUALIFIED_NAME = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
LABEL_VALUE = "(" + QUALIFIED_NAME + ")?"
SUBDOMAIN_MESSAGE = regex_error("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                                "'-' or '.', and must start and end with an alphanumeric character",
                                DNS1123_SUBDOMAIN, "example.com")


def dns_subdomain(name: str) -> list[str]:
    return (["must be no more than 253 characters"] if len(name) > 253 else []) + \
        ([] if re.fullmatch(DNS1123_SUBDOMAIN, name) else [SUBDOMAIN_MESSAGE])


def dns_label(name: str) -> list[str]:
    return (["must be no more than 63 characters"] if len(name) > 63 else []) + ([] if re.fullmatch(
        DNS1123_LABEL, name) else [regex_error("a lowercase RFC 1123 label must consist of lower case alphanumeric "
                                               "characters or '-', and must start and end with an alphanumeric "
                                               "character", DNS1123_LABEL, "my-name", "123-abc")])


def dns1035_label(name: str) -> list[str]:
    return (["must be no more than 63 characters"] if len(name) > 63 else []) + ([] if re.fullmatch(
        DNS1035_LABEL, name) else [regex_error("a DNS-1035 label must consist of lower case alphanumeric characters "
                                               "or '-', start with an alphabetic character, and end with an "
                                               "alphanumeric character", DNS1035_LABEL, "my-name", "abc-123")])


def path_segment(name: str) -> list[str]:
    bad = [f"may not contain '{c}'" for c in ("/", "%") if c in name]
    return [f"may not be '{name}'"] if name in (".", "..") else bad


def qualified_name(key: str) -> list[str]:
    parts = key.split("/")
    if len(parts) > 2:
        return [regex_error("a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must "
                            "start and end with an alphanumeric character", QUALIFIED_NAME, "MyName", "my.name",
                            "123-abc") + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    name, errors = parts[-1], []
    if len(parts) == 2:
        errors += ["prefix part must be non-empty"] if not parts[0] else [
            "prefix part " + m for m in dns_subdomain(parts[0])]
    if not name:
        return errors + ["name part must be non-empty"]
    if len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    if not re.fullmatch(QUALIFIED_NAME, name):
        errors.append(regex_error("name part must consist of alphanumeric characters, '-', '_' or '.', and must "
                                  "start and end with an alphanumeric character", QUALIFIED_NAME, "MyName",
                                  "my.name", "123-abc"))
    return errors


def label_value(value: str) -> list[str]:
    return (["must be no more than 63 characters"] if len(value) > 63 else []) + ([] if re.fullmatch(
        LABEL_VALUE, value) else [regex_error("a valid label must be an empty string or consist of alphanumeric "
                                              "characters, '-', '_' or '.', and must start and end with an "
                                              "alphanumeric character", LABEL_VALUE, "MyValue", "my_value", "12345")])


NAME_RULES = {"Namespace": dns_label, "Service": dns1035_label, "Role": path_segment, "ClusterRole": path_segment,
              "RoleBinding": path_segment, "ClusterRoleBinding": path_segment}
REPLICATED = ("Deployment", "StatefulSet", "ReplicaSet")


def validate(kind: str, obj: dict) -> list[FieldError]:
    """What the real server refuses of this object, in the order its validators report it."""
    meta = obj.get("metadata") or {}
    errors = [FieldError("Invalid", "metadata.name", meta.get("name"), m)
              for m in NAME_RULES.get(kind, dns_subdomain)(str(meta.get("name") or ""))]
    errors += _metadata_maps(meta, "metadata")
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if kind in REPLICATED and isinstance(spec.get("replicas"), int) and spec["replicas"] < 0:
        errors.append(FieldError("Invalid", "spec.replicas", spec["replicas"], "must be greater than or equal to 0"))
    if kind in REPLICATED + ("DaemonSet",):
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not spec.get("selector"):
            errors.append(FieldError("Required", "spec.selector"))
        elif not selector_matches(spec["selector"], template_labels):
            errors.append(FieldError("Invalid", "spec.template.metadata.labels", template_labels,
                                     "`selector` does not match template `labels`"))
    at = POD_SPEC_AT.get(kind)
    if at:
        template = ".".join(at[:-1])
        if template:
            errors += _metadata_maps((get_path(obj, at[:-1]) or {}).get("metadata") or {}, template + ".metadata")
        pod_spec = get_path(obj, at)
        errors += _validate_pod_spec(pod_spec if isinstance(pod_spec, dict) else {}, ".".join(at))
        if kind in ("Job", "CronJob") and isinstance(pod_spec, dict) and \
                pod_spec.get("restartPolicy") not in ("OnFailure", "Never"):
            errors.append(FieldError("NotSupported", ".".join(at) + ".restartPolicy", pod_spec.get("restartPolicy"),
                                     'supported values: "OnFailure", "Never"'))
    if kind == "Service":
        errors += _validate_service(spec)
    return errors


def _metadata_maps(meta: dict, at: str) -> list[FieldError]:
    errors = []
    for key, value in (meta.get("labels") or {}).items():
        errors += [FieldError("Invalid", f"{at}.labels", key, m) for m in qualified_name(str(key))]
        errors += [FieldError("Invalid", f"{at}.labels", value, m) for m in label_value(str(value))]
    for key in meta.get("annotations") or {}:
        errors += [FieldError("Invalid", f"{at}.annotations", key, m) for m in qualified_name(str(key).lower())]
    return errors


def selector_matches(selector: dict, labels: dict) -> bool:
    ops = {"In": lambda k, vs: labels.get(k) in vs, "NotIn": lambda k, vs: labels.get(k) not in vs,
           "Exists": lambda k, vs: k in labels, "DoesNotExist": lambda k, vs: k not in labels}
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()) and all(
        ops.get(e.get("operator"), lambda k, vs: False)(e.get("key"), e.get("values") or [])
        for e in selector.get("matchExpressions") or [])


def _validate_pod_spec(spec: dict, at: str) -> list[FieldError]:
    errors, names = [], set()
    if not spec.get("containers"):
        errors.append(FieldError("Required", f"{at}.containers"))
    for group in ("containers", "initContainers"):
        for i, container in enumerate(spec.get(group) or []):
            here = f"{at}.{group}[{i}]"
            container = container if isinstance(container, dict) else {}
            name = container.get("name")
            if not name:
                errors.append(FieldError("Required", f"{here}.name"))
            elif name in names:
                errors.append(FieldError("Duplicate", f"{here}.name", name))
            else:
                errors += [FieldError("Invalid", f"{here}.name", name, m) for m in dns_label(str(name))]
            names.add(name)
            if not container.get("image"):
                errors.append(FieldError("Required", f"{here}.image"))
            for j, port in enumerate(container.get("ports") or []):
                number = (port or {}).get("containerPort")
                if not number:
                    errors.append(FieldError("Required", f"{here}.ports[{j}].containerPort"))
                elif not (isinstance(number, int) and 1 <= number <= 65535):
                    errors.append(FieldError("Invalid", f"{here}.ports[{j}].containerPort", number,
                                             "must be between 1 and 65535, inclusive"))
    return errors


def _validate_service(spec: dict) -> list[FieldError]:
    errors = []
    if not spec.get("ports") and spec.get("type") != "ExternalName" and spec.get("clusterIP") != "None":
        errors.append(FieldError("Required", "spec.ports"))
    for i, port in enumerate(spec.get("ports") or []):
        for field in ("port", "targetPort"):
            number = (port or {}).get(field)
            if isinstance(number, int) and not 1 <= number <= 65535:
                errors.append(FieldError("Invalid", f"spec.ports[{i}].{field}", number,
                                         "must be between 1 and 65535, inclusive"))
    return errors


class FakeKubeAPI(RecordingServer):
    """The fake server. Every request is handled under `self.lock` (see RecordingServer.dispatch)."""

    def __init__(self, context: str = "fake-kube", crd_delay: float = 0.0, watch_wait: float = 1.0,
                 namespaces: tuple[str, ...] = ("default", "kube-system")) -> None:
        super().__init__()
        self.context, self.crd_delay, self.watch_wait = context, crd_delay, watch_wait
        self.resources: dict[tuple[str, str, str], Res] = {(r.group, r.version, r.plural): r for r in BUILTIN}
        self.store: dict[tuple[str, str, str, str], dict] = {}  # (group, plural, namespace or "", name) -> object
        self._rv = 0
        self._gates: dict[tuple, int | None] = {}  # (group, kind, ns, name) -> GETs until ready; None: never
        self._crd_ready_at: dict[str, float] = {}  # CRD name -> monotonic time it becomes Established
        for method, pattern, handler in [
            ("GET", r"/version", self._version), ("GET", r"/api", self._api), ("GET", r"/apis", self._apis),
            ("GET", r"/api/(?P<version>v1)", self._resource_list), ("GET", r"/apis/(?P<group>[^/]+)", self._group),
            ("GET", r"/apis/(?P<group>[^/]+)/(?P<version>[^/]+)", self._resource_list),
            ("GET", r"/openapi/v3", self._openapi_root), ("GET", r"/openapi/v3/(?P<gv>.+)", self._openapi_gv),
        ] + [(m, OBJECT_PATH + "/scale", self._scale) for m in ("GET", "PUT", "PATCH")] + [
            (m, OBJECT_PATH, self._endpoint) for m in ("GET", "POST", "PUT", "PATCH", "DELETE")]:
            self.route(method, pattern, self._guard(handler))
        for ns in namespaces:
            self._save(self._res("", "Namespace"), ("", "namespaces", "", ns), None, {"metadata": {"name": ns}})

    # -- for tests -----------------------------------------------------------------------------------
    def kubeconfig(self, path: str, context: str | None = None, namespace: str = "default") -> str:
        """Write a kubeconfig for this server (plain http, any token); returns the path."""
        ctx = context or self.context
        with open(path, "w") as f:
            yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "current-context": ctx, "preferences": {},
                            "clusters": [{"name": ctx, "cluster": {"server": self.url}}],
                            "users": [{"name": ctx, "user": {"token": "fake-token"}}],
                            "contexts": [{"name": ctx, "context": {"cluster": ctx, "user": ctx,
                                                                   "namespace": namespace}}]}, f)
        return str(path)

    def writes(self) -> list[Recorded]:
        """POST/PUT/PATCH/DELETE requests, dry runs excluded."""
        with self.lock:
            return [r for r in self.requests if r.method in ("POST", "PUT", "PATCH", "DELETE") and not _is_dry(r)]

    def reset_records(self) -> None:
        with self.lock:
            self.requests.clear()

    def objects(self, group: str | None = None, kind: str | None = None, ns: str | None = None) -> list[dict]:
        """Stored objects (copies), optionally filtered; ns "" means cluster-scoped."""
        with self.lock:
            return [copy.deepcopy(o) for (g, _, n, _), o in self.store.items()
                    if group in (None, g) and kind in (None, o["kind"]) and ns in (None, n)]

    def get(self, group: str, kind: str, ns: str | None, name: str) -> dict | None:
        found = [o for o in self.objects(group, kind, ns or "") if o["metadata"]["name"] == name]
        return found[0] if found else None

    def stall(self, group: str, kind: str, ns: str, name: str) -> None:
        """The named workload never becomes ready (this holds across later changes too)."""
        self.ready_after(group, kind, ns, name, None)

    def ready_after(self, group: str, kind: str, ns: str, name: str, gets: int | None) -> None:
        """The named workload becomes ready after `gets` GETs of it (None: never; 0: now)."""
        with self.lock:
            self._gates[(group, kind, ns, name)] = gets
            res = self._res(group, kind)
            key = (group, res.plural, ns, name)
            if key in self.store:
                self._save(res, key, self.store[key], copy.deepcopy(self.store[key]))

    def set_status(self, group: str, kind: str, ns: str | None, name: str, status: dict) -> None:
        with self.lock:
            res = self._res(group, kind)
            key = (group, res.plural, ns if res.namespaced else "", name)
            self._save(res, key, self.store[key], {**copy.deepcopy(self.store[key]), "status": status},
                       keep_status=True)

    def inject(self, method: str, pattern: str, status: int = 500, times: int = 1, drop: bool = False) -> None:
        """The next `times` requests matching `method` ('*': any) and the path regex get `status` (or a drop)."""
        reason = {429: "TooManyRequests", 503: "ServiceUnavailable", 504: "Timeout"}.get(status, "InternalError")
        self.fail(method, pattern, None if drop else Reply(status, status_body(status, reason, "injected fault")),
                  times)

    # -- plumbing ------------------------------------------------------------------------------------
    def dispatch(self, request: Recorded) -> Reply | None:
        if request.query.get("watch") == ["true"] and request.query.get("resourceVersion", ["0"]) != ["0"]:
            time.sleep(self.watch_wait)  # our watches end at once; this keeps clients from re-watching in a hot loop
        with self.lock:
            self._promote_crds()
            return super().dispatch(request)

    def _guard(self, handler):
        def run(request: Recorded, **groups: Any) -> Reply:
            try:
                return handler(request, **groups)
            except ApiError as e:
                return Reply(e.code, status_body(e.code, e.reason, e.message, e.details or None))
            except Exception as e:  # a bug in the fake shows up as a readable 500, not a dropped socket
                return Reply(500, status_body(500, "InternalError", f"fake kube api: {e!r}"))
        return run

    def _res(self, group: str, kind: str) -> Res:
        return next(r for r in self.resources.values() if (r.group, r.kind) == (group, kind))

    # -- discovery -----------------------------------------------------------------------------------
    def _version(self, request: Recorded) -> Reply:
        return Reply(200, {"major": "1", "minor": "37", "gitVersion": "v1.37.0", "gitCommit": "fake",
                           "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25",
                           "compiler": "gc", "platform": "linux/amd64"})

    def _api(self, request: Recorded) -> Reply:
        return Reply(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": self.url.split("//")[1]}]})

    def _groups(self) -> dict[str, dict]:
        groups: dict[str, dict] = {}
        for r in self.resources.values():  # the first version seen is the preferred one
            g = groups.setdefault(r.group, {"name": r.group, "versions": []})
            if {"groupVersion": r.api_version, "version": r.version} not in g["versions"]:
                g["versions"].append({"groupVersion": r.api_version, "version": r.version})
                g.setdefault("preferredVersion", g["versions"][0])
        groups.pop("")
        return groups

    def _apis(self, request: Recorded) -> Reply:
        return Reply(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": list(self._groups().values())})

    def _group(self, request: Recorded, group: str) -> Reply:
        if group not in self._groups():
            raise ApiError(404, "NotFound", NO_RESOURCE)
        return Reply(200, {"kind": "APIGroup", "apiVersion": "v1", **self._groups()[group]})

    def _resource_list(self, request: Recorded, version: str, group: str | None = None) -> Reply:
        found = [r for r in self.resources.values() if (r.group, r.version) == (group or "", version)]
        if not found:
            raise ApiError(404, "NotFound", NO_RESOURCE)
        return Reply(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": found[0].api_version,
                           "resources": [{
                               "name": r.plural, "singularName": r.kind.lower(), "namespaced": r.namespaced,
                               "kind": r.kind, "verbs": VERBS[:2] + VERBS[3:] if r.kind == "Namespace" else VERBS,
                               **({"shortNames": list(r.short)} if r.short else {}),
                               **({"categories": ["all"]} if r.plural in IN_ALL else {})} for r in found] + [
                               {"name": f"{r.plural}/scale", "singularName": "", "namespaced": True,
                                "group": "autoscaling", "version": "v1", "kind": "Scale",
                                "verbs": ["get", "patch", "update"]} for r in found if r.kind in REPLICATED]})

    def _openapi_root(self, request: Recorded) -> Reply:
        gvs = sorted({r.openapi_gv for r in self.resources.values()})
        return Reply(200, {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={self._rv}"} for gv in gvs}})

    def _openapi_gv(self, request: Recorded, gv: str) -> Reply:
        paths = {f"/{gv}{'/namespaces/{namespace}' if r.namespaced else ''}/{r.plural}/{{name}}": {"patch": {
            "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
            "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "OK"}}}} for r in self.resources.values() if r.openapi_gv == gv}
        if not paths:
            raise ApiError(404, "NotFound", NO_RESOURCE)
        return Reply(200, {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.37.0"},
                           "paths": paths, "components": {"schemas": {}}})

    # -- objects -------------------------------------------------------------------------------------
    def _endpoint(self, request: Recorded, version: str, plural: str, group: str | None = None,
                  ns: str | None = None, name: str | None = None) -> Reply:
        res = self.resources.get((group or "", version, plural))
        if res is None:
            raise ApiError(404, "NotFound", NO_RESOURCE)
        ns = (ns or "") if res.namespaced else ""  # cluster-scoped kinds ignore any namespace
        q = {k: v[-1] for k, v in request.query.items()}
        dry, method = _is_dry(request), request.method
        manager = q.get("fieldManager") or request.headers.get("user-agent", "unknown").split("/")[0]
        if name is None and method == "GET":
            return self._list(res, ns, q)
        if name is None and method == "POST":
            return self._create(res, ns, _parse(request), manager, dry)
        if name is None and method == "DELETE":
            items = self._select(res, ns, q)
            for obj in items:
                self._delete(res, (res.group, res.plural, obj["metadata"].get("namespace", ""),
                                   obj["metadata"]["name"]), dry)
            return Reply(200, {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": {},
                               "items": items})
        if name is None:
            raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on {plural}")
        key = (res.group, res.plural, ns, name)
        old = self.store.get(key)
        if method == "PATCH" and _content_type(request) == "application/apply-patch+yaml":
            return self._apply(res, key, old, request, q, dry)
        if old is None:
            raise ApiError(404, "NotFound", f'{_ref(res)} "{name}" not found', name=name, group=res.group,
                           kind=res.plural)
        if method == "GET":
            return Reply(200, self._out(res, self._tick_gate(res, key)))
        if method == "DELETE":
            self._delete(res, key, dry)
            return Reply(200, status_body(200, "", "", {"name": name, "group": res.group, "kind": res.plural,
                                                         "uid": old["metadata"]["uid"]}))
        body = _parse(request)
        if method == "PUT":
            self._check_identity(res, body, name, ns)
            if body.get("metadata", {}).get("resourceVersion") not in (None, "", old["metadata"]["resourceVersion"]):
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {_ref(res)} "{name}": the object '
                               "has been modified; please apply your changes to the latest version and try again",
                               name=name, group=res.group, kind=res.plural)
            new = body
        elif _content_type(request) == "application/merge-patch+json":
            new = merge_patch(old, body)
        elif _content_type(request) == "application/strategic-merge-patch+json":
            new = strategic_merge(old, body, associative_lists(res.kind))
        else:
            raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type: {_content_type(request)}")
        new = self._updated_by(res, old, self._admit(res, key, old, copy.deepcopy(new)), manager)
        return Reply(200, self._out(res, self._save(res, key, old, new, dry)))

    def _select(self, res: Res, ns: str, q: dict) -> list[dict]:
        labels, fields = label_matcher(q.get("labelSelector")), field_matcher(q.get("fieldSelector"))
        return [self._out(res, o) for (g, p, n, _), o in sorted(self.store.items())
                if (g, p) == (res.group, res.plural) and (not ns or n == ns) and labels(o) and fields(o)]

    def _list(self, res: Res, ns: str, q: dict) -> Reply:
        items = self._select(res, ns, q)
        if q.get("watch") in ("true", "1"):
            initial = q.get("sendInitialEvents") == "true" or q.get("resourceVersion", "0") == "0"
            events = [{"type": "ADDED" if initial else "MODIFIED", "object": o} for o in items
                      if initial or int(o["metadata"]["resourceVersion"]) > int(q["resourceVersion"])]
            if q.get("sendInitialEvents") == "true":  # kubectl's WatchList waits for this bookmark
                events.append({"type": "BOOKMARK", "object": {"kind": res.kind, "apiVersion": res.api_version,
                               "metadata": {"resourceVersion": str(self._rv),
                                            "annotations": {"k8s.io/initial-events-end": "true"}}}})
            return Reply(200, raw=b"".join(json.dumps(e).encode() + b"\n" for e in events))
        return Reply(200, {"kind": f"{res.kind}List", "apiVersion": res.api_version,
                           "metadata": {"resourceVersion": str(self._rv)}, "items": items})

    def _create(self, res: Res, ns: str, body: dict, manager: str, dry: bool) -> Reply:
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise ApiError(422, "Invalid", f"{res.kind} is invalid: metadata.name: Required value: name or "
                           "generateName is required", kind=res.kind)
        self._check_identity(res, body, meta["name"], ns)
        key = (res.group, res.plural, ns, meta["name"])
        self._check_namespace(res, ns)
        new = self._admit(res, key, None, body)
        if key in self.store:
            raise ApiError(409, "AlreadyExists", f'{_ref(res)} "{meta["name"]}" already exists',
                           name=meta["name"], group=res.group, kind=res.plural)
        return Reply(201, self._out(res, self._save(res, key, None, self._updated_by(res, None, new, manager), dry)))

    def _delete(self, res: Res, key: tuple, dry: bool) -> None:
        if dry:
            return
        obj = self.store.pop(key)
        if res.kind == "Namespace":
            for k in [k for k in self.store if k[2] == key[3]]:
                del self.store[k]
        if res.kind == "CustomResourceDefinition":
            self._register_crd(obj, established=False)
            self._crd_ready_at.pop(key[3], None)
            for k in [k for k in self.store if k[:2] == (obj["spec"]["group"], obj["spec"]["names"]["plural"])]:
                del self.store[k]
        self._rv += 1

    # -- server-side apply ---------------------------------------------------------------------------
    def _apply(self, res: Res, key: tuple, old: dict | None, request: Recorded, q: dict, dry: bool) -> Reply:
        manager = q.get("fieldManager")
        if not manager:
            raise ApiError(400, "BadRequest", "fieldManager: Required value: is required for apply patch")
        try:
            cfg = yaml.safe_load(request.body)  # YAML, or JSON as a subset of it
        except yaml.YAMLError as e:
            raise ApiError(400, "BadRequest", f"error decoding YAML: {e}")
        if not isinstance(cfg, dict) or not cfg.get("apiVersion") or not cfg.get("kind"):
            raise ApiError(400, "BadRequest", "apply patch must be an object with apiVersion and kind")
        self._check_identity(res, cfg, key[3], key[2])
        if old is None:
            self._check_namespace(res, key[2])
        lists = associative_lists(res.kind)
        try:
            applied = leaves(tracked(to_tree(cfg, lists, strict=True)))
        except TypedError as e:
            raise ApiError(500, "InternalError", f"failed to create typed patch object ({res.group}/{res.version}, "
                           f"Kind={res.kind}): {e}")
        applied.update(self._canonical_leaves(res, cfg, lists, applied))
        owned = set(applied) | items_of(applied)
        base = to_tree(copy.deepcopy(old) if old else {"metadata": {"name": key[3]}}, lists)
        owners = _owners(old or {})
        # Conflicts: another manager owns an applied field (or one inside it) and the value would change.
        conflicts = [(owner, av, p) for owner, (av, fields) in owners.items() if owner[0] != manager
                     for p in applied if any(claims(f, p) for f in fields) and _changes(base, p, applied[p])]
        if conflicts and q.get("force") != "true":
            causes = [{"type": "FieldManagerConflict", "message": f'conflict with "{o[0]}"' + (
                f' with subresource "{o[2]}"' if o[2] else "") + f" using {av}", "field": field_str(p)}
                for o, av, p in conflicts]
            raise ApiError(409, "Conflict", f"Apply failed with {len(causes)} conflict(s): " + "; ".join(
                f'{c["message"]}: {c["field"]}' for c in causes), name=key[3], group=res.group, kind=res.plural,
                causes=causes)
        for loser, _, p in conflicts:  # forced: the other managers lose what we take
            for owner, (_, fields) in owners.items():
                if owner == loser:
                    fields.difference_update({f for f in fields if claims(f, p)})
        mine = (manager, "Apply", "")
        others = set().union(*(fields for owner, (_, fields) in owners.items() if owner != mine))
        for p in owners.get(mine, ("", set()))[1] - owned:  # dropped from the config and nobody else has it
            kept = is_item_key_field(p) or any(n[:len(p)] == p for n in owned)
            if not kept and not any(claims(f, p) for f in others):
                del_path(base, p)
        for p, value in applied.items():
            set_path(base, p, value)
        owners[mine] = (res.api_version, owned)
        new = self._admit(res, key, old, from_tree(base, lists))
        new["metadata"]["managedFields"] = _render_owners(owners, old)
        return Reply(201 if old is None else 200, self._out(res, self._save(res, key, old, new, dry)))

    def _canonical_leaves(self, res: Res, cfg: dict, lists: dict, applied: dict) -> dict:
        """Applied quantities as the server will store them, so that `cpu: 0.5` against a stored `500m` is no change."""
        defaulted = copy.deepcopy(cfg)
        try:
            default_object(res.kind, defaulted)
        except QuantityError as e:
            raise self._undecodable(res, e)
        canonical = leaves(tracked(to_tree(defaulted, lists)))
        return {p: canonical[p] for p in applied if p in canonical}

    def _updated_by(self, res: Res, old: dict | None, new: dict, manager: str, subresource: str = "") -> dict:
        """Record an Update manager: it takes the fields it changed from everyone else, without conflicts."""
        lists, new = associative_lists(res.kind), copy.deepcopy(new)
        before, after = leaves(to_tree(tracked(old), lists)), leaves(to_tree(tracked(new), lists))
        changed = {p for p, v in after.items() if before.get(p, MISSING) != v} | (items_of(after) - items_of(before))
        touched = changed | (set(before) - set(after)) | (items_of(before) - items_of(after))
        owners = _owners(old or {})
        for _, fields in owners.values():
            fields.difference_update({f for f in fields if any(f[:len(t)] == t for t in touched)})
        owners.setdefault((manager, "Update", subresource), (res.api_version, set()))[1].update(changed)
        new.setdefault("metadata", {})["managedFields"] = _render_owners(owners, old)
        return new

    # -- what the real server does to every write: defaulting, allocation, validation ------------------
    def _admit(self, res: Res, key: tuple, old: dict | None, new: dict) -> dict:
        """Default the object (quantities canonical), allocate what the server allocates, and validate it."""
        meta = new.setdefault("metadata", {})
        meta["name"] = key[3]
        if old is None:
            meta["uid"] = str(uuid.uuid4())  # the real server ignores a client's uid
        try:
            default_object(res.kind, new)
        except QuantityError as e:
            raise self._undecodable(res, e)
        if res.kind == "Service":
            self._allocate_service(new, old)
        if res.kind == "Job" and old is None:
            _select_job_pods(new)
        errors = validate(res.kind, new) if not res.crd else []
        if errors:
            bodies = [f"{e.field}: {e.body}" for e in errors]
            what = f"{res.kind}.{res.group}" if res.group else res.kind
            raise ApiError(422, "Invalid", f'{what} "{key[3]}" is invalid: ' + (
                bodies[0] if len(bodies) == 1 else "[" + ", ".join(bodies) + "]"), name=key[3], group=res.group,
                kind=res.kind, causes=[{"reason": f"FieldValue{e.kind}", "message": e.body, "field": e.field}
                                       for e in errors])
        return new

    @staticmethod
    def _undecodable(res: Res, error: QuantityError) -> ApiError:
        return ApiError(400, "BadRequest", f'{res.kind} in version "{res.version}" cannot be handled as a '
                        f"{res.kind}: {error}")

    def _allocate_service(self, new: dict, old: dict | None) -> None:
        spec, before = new["spec"], (old or {}).get("spec") or {}
        if spec.get("type") == "ExternalName":
            return
        for field in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            if spec.get(field) in (None, "", []) and before.get(field):
                spec[field] = copy.deepcopy(before[field])
        if not spec.get("clusterIP"):
            self._ips = getattr(self, "_ips", 0) + 1
            spec["clusterIP"] = f"10.96.{self._ips // 250}.{self._ips % 250 + 2}"
        _default(spec, "clusterIPs", [spec["clusterIP"]])
        _default(spec, "ipFamilies", ["IPv4"])
        _default(spec, "ipFamilyPolicy", "SingleStack")
        if spec.get("type") in ("NodePort", "LoadBalancer"):
            taken = {p.get("port"): p.get("nodePort") for p in _dicts(before, "ports")}
            for port in _dicts(spec, "ports"):
                if not port.get("nodePort"):
                    self._node_ports = getattr(self, "_node_ports", 30000) + 1
                    port["nodePort"] = taken.get(port.get("port")) or self._node_ports

    # -- the scale subresource (`kubectl scale`) -----------------------------------------------------
    def _scale(self, request: Recorded, version: str, plural: str, name: str, group: str | None = None,
               ns: str | None = None) -> Reply:
        res = self.resources.get((group or "", version, plural))
        if res is None or res.kind not in REPLICATED:
            raise ApiError(404, "NotFound", NO_RESOURCE)
        key = (res.group, res.plural, ns or "", name)
        old = self.store.get(key)
        if old is None:
            raise ApiError(404, "NotFound", f'{_ref(res)} "{name}" not found', name=name, group=res.group,
                           kind=res.plural)
        if request.method == "GET":
            return Reply(200, _scale_of(old))
        body = _parse(request)
        scale = body if request.method == "PUT" else merge_patch(_scale_of(old), body)
        replicas = (scale.get("spec") or {}).get("replicas")
        new = copy.deepcopy(old)
        new["spec"]["replicas"] = replicas
        q = {k: v[-1] for k, v in request.query.items()}
        manager = q.get("fieldManager") or request.headers.get("user-agent", "unknown").split("/")[0]
        new = self._updated_by(res, old, self._admit(res, key, old, new), manager, "scale")
        return Reply(200, _scale_of(self._save(res, key, old, new, _is_dry(request))))

    # -- storing -------------------------------------------------------------------------------------
    def _save(self, res: Res, key: tuple, old: dict | None, new: dict, dry: bool = False,
              keep_status: bool = False) -> dict:
        """Finish a write: server-owned fields, status, resourceVersion. A no-op stores nothing and bumps nothing."""
        new["apiVersion"], new["kind"] = res.api_version, res.kind
        meta = new.setdefault("metadata", {})
        meta.update(name=key[3], **({"namespace": key[2]} if res.namespaced else {}))
        if not res.namespaced:
            meta.pop("namespace", None)
        if not meta.get("managedFields"):
            meta.pop("managedFields", None)
        if old is None:
            meta.update(uid=meta.get("uid") or str(uuid.uuid4()), creationTimestamp=now(), generation=1)
            meta.pop("resourceVersion", None)
        else:
            meta.update({k: old["metadata"][k] for k in ("uid", "creationTimestamp", "resourceVersion", "generation")})
            if _spec(old) != _spec(new):
                meta["generation"] += 1
        if not keep_status:
            new.pop("status", None)
            new.update({"status": copy.deepcopy(old["status"])} if old and "status" in old else {})
            self._compute_status(res, key, old, new)
        if res.kind == "CustomResourceDefinition":
            _check_crd(new)
        if new == old or dry:
            return old if new == old else new
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        self.store[key] = new
        if res.kind == "CustomResourceDefinition":
            self._register_crd(new, established=_condition(new, "Established"))
        return new

    def _out(self, res: Res, obj: dict) -> dict:
        return {**copy.deepcopy(obj), "apiVersion": res.api_version, "kind": res.kind}

    def _check_identity(self, res: Res, body: dict, name: str, ns: str) -> None:
        if body.get("kind", res.kind) != res.kind or body.get("apiVersion", res.api_version) != res.api_version:
            raise ApiError(400, "BadRequest", f"the object {body.get('apiVersion')}/{body.get('kind')} does not match "
                           f"the URL's resource {res.api_version}/{res.kind}")
        meta = body.get("metadata") or {}
        if meta.get("name", name) != name:
            raise ApiError(400, "BadRequest", f"the name of the object ({meta['name']}) does not match the name on "
                           f"the URL ({name})")
        if res.namespaced and ns and meta.get("namespace", ns) != ns:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace "
                           "sent on the request")

    def _check_namespace(self, res: Res, ns: str) -> None:
        if res.namespaced and ("", "namespaces", "", ns) not in self.store:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', name=ns, kind="namespaces")

    # -- status: namespaces, CRDs, workloads ---------------------------------------------------------
    def _compute_status(self, res: Res, key: tuple, old: dict | None, new: dict) -> None:
        prev, spec = (old or {}).get("status", {}), new.get("spec") or {}
        if res.kind == "Namespace":
            new["status"] = {"phase": "Active"}
        elif res.kind == "CustomResourceDefinition":
            ready_at = self._crd_ready_at.setdefault(key[3], time.monotonic() + self.crd_delay)
            established = _condition(old, "Established") or time.monotonic() >= ready_at
            new["status"] = {"acceptedNames": spec.get("names", {}), "storedVersions": [
                v.get("name") for v in spec.get("versions", []) if v.get("storage")], "conditions": [
                _cond(prev, "NamesAccepted", True, "NoConflicts", "no conflicts found"),
                _cond(prev, "Established", established, "InitialNamesAccepted" if established else "Installing",
                      "the initial names have been accepted")]}
        elif res.group == "apps" and res.kind in ("Deployment", "StatefulSet", "DaemonSet"):
            ready = self._gates.get((res.group, res.kind, key[2], key[3]), 0) == 0
            gen, n = new["metadata"]["generation"], spec.get("replicas", 1) if res.kind != "DaemonSet" else 1
            r = n if ready else 0  # a DaemonSet runs on one node
            if res.kind == "Deployment":
                status = {"observedGeneration": gen, "replicas": n, "updatedReplicas": n, "readyReplicas": r,
                          "availableReplicas": r, "unavailableReplicas": n - r}
                new["status"] = {k: v for k, v in status.items() if v}  # the real API omits zero counts
                new["status"]["conditions"] = [
                    _cond(prev, "Available", ready, "MinimumReplicasAvailable" if ready else
                          "MinimumReplicasUnavailable", f"Deployment {'has' if ready else 'does not have'} "
                          "minimum availability."),
                    _cond(prev, "Progressing", True, "NewReplicaSetAvailable" if ready else "ReplicaSetUpdated",
                          f'ReplicaSet "{key[3]}" is progressing.')]
            elif res.kind == "StatefulSet":
                rev = f"{key[3]}-{hashlib.sha1(json.dumps(spec.get('template'), sort_keys=True).encode()).hexdigest()[:10]}"
                new["status"] = {"observedGeneration": gen, "replicas": n, "readyReplicas": r, "currentReplicas": r,
                                 "updatedReplicas": n, "availableReplicas": r, "updateRevision": rev,
                                 "currentRevision": rev if ready else prev.get("currentRevision", f"{key[3]}-0"),
                                 "collisionCount": 0}
            else:
                new["status"] = {"observedGeneration": gen, "currentNumberScheduled": n, "desiredNumberScheduled": n,
                                 "numberMisscheduled": 0, "numberReady": r, "updatedNumberScheduled": n,
                                 "numberAvailable": r, "numberUnavailable": n - r}

    def _tick_gate(self, res: Res, key: tuple) -> dict:
        gate = (res.group, res.kind, key[2], key[3])
        if self._gates.get(gate):
            self._gates[gate] -= 1
            if self._gates[gate] == 0:
                self._save(res, key, self.store[key], copy.deepcopy(self.store[key]))
        return self.store[key]

    # -- CRDs ----------------------------------------------------------------------------------------
    def _register_crd(self, crd: dict, established: bool) -> None:
        name, spec = crd["metadata"]["name"], crd["spec"]
        self.resources = {k: r for k, r in self.resources.items() if r.crd != name}
        for v in sorted(spec["versions"], key=lambda v: not v.get("storage")) if established else []:
            if v.get("served", True):
                self.resources[(spec["group"], v["name"], spec["names"]["plural"])] = Res(
                    spec["group"], v["name"], spec["names"]["plural"], spec["names"]["kind"],
                    spec.get("scope") != "Cluster", tuple(spec["names"].get("shortNames") or ()), name)

    def _promote_crds(self) -> None:
        for name, when in self._crd_ready_at.items():
            key = (CRD_GROUP, "customresourcedefinitions", "", name)
            if key in self.store and not _condition(self.store[key], "Established") and time.monotonic() >= when:
                self._save(self._res(CRD_GROUP, "CustomResourceDefinition"), key, self.store[key],
                           copy.deepcopy(self.store[key]))


def _select_job_pods(job: dict) -> None:
    """The selector and pod labels the real server gives a Job it creates (unless `manualSelector`)."""
    spec, meta = job["spec"], job["metadata"]
    if spec.get("manualSelector") or not isinstance(spec.get("template"), dict):
        return
    uid, name = meta["uid"], meta["name"]
    spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    _map(_map(spec["template"], "metadata"), "labels").update({
        "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
        "controller-uid": uid, "job-name": name})


def _scale_of(obj: dict) -> dict:
    meta, selector = obj["metadata"], (obj.get("spec") or {}).get("selector") or {}
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": obj["spec"].get("replicas", 1)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": ",".join(f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items())}}


def _check_crd(crd: dict) -> None:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    if not spec.get("versions") or crd["metadata"]["name"] != f"{names.get('plural')}.{spec.get('group')}" \
            or not names.get("kind"):
        raise ApiError(422, "Invalid", f'CustomResourceDefinition "{crd["metadata"]["name"]}" is invalid: the name must '
                       'be spec.names.plural+"."+spec.group, and names.kind and versions are required',
                       kind="CustomResourceDefinition")


def _owners(obj: dict) -> dict[tuple[str, str, str], tuple[str, set[tuple]]]:
    """managedFields as {(manager, operation, subresource): (apiVersion, owned paths)}."""
    return {(e["manager"], e.get("operation", "Update"), e.get("subresource", "")): (
        e.get("apiVersion", ""), from_fields_v1(e.get("fieldsV1") or {}))
        for e in (obj.get("metadata") or {}).get("managedFields") or []}


def _render_owners(owners: dict, old: dict | None) -> list[dict]:
    """managedFields entries. An unchanged entry keeps its time, so a no-op apply really changes nothing."""
    previous = {(e["manager"], e.get("operation"), e.get("subresource", "")): e
                for e in ((old or {}).get("metadata") or {}).get("managedFields") or []}
    out = []
    for (mgr, op, sub), (av, fields) in owners.items():
        if fields:
            fv1, prev = to_fields_v1(fields), previous.get((mgr, op, sub), {})
            out.append({"manager": mgr, "operation": op, "apiVersion": av, "time": prev["time"]
                        if prev.get("fieldsV1") == fv1 else now(), "fieldsType": "FieldsV1", "fieldsV1": fv1,
                        **({"subresource": sub} if sub else {})})
    return out


def _cond(prev_status: dict, ctype: str, ok: bool, reason: str, message: str) -> dict:
    """A condition. It keeps its old timestamps when nothing about it changed, so that no-ops stay no-ops."""
    old = next((c for c in prev_status.get("conditions", []) if c.get("type") == ctype), {})
    status, stamp = "True" if ok else "False", now()
    cond = {"type": ctype, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": old.get("lastTransitionTime", stamp) if old.get("status") == status else stamp}
    if ctype in ("Available", "Progressing"):
        same = (old.get("status"), old.get("reason")) == (status, reason)
        cond["lastUpdateTime"] = old.get("lastUpdateTime", stamp) if same else stamp
    return cond


def _condition(obj: dict | None, ctype: str) -> bool:
    return any(c.get("type") == ctype and c.get("status") == "True"
               for c in ((obj or {}).get("status") or {}).get("conditions", []))


def _spec(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _ref(res: Res) -> str:
    return f"{res.plural}.{res.group}" if res.group else res.plural


def _content_type(request: Recorded) -> str:
    return request.headers.get("content-type", "application/json").split(";")[0].strip()


def _parse(request: Recorded) -> dict:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError as e:
        raise ApiError(400, "BadRequest", f"error decoding JSON body: {e}")
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the request body must be a JSON object")
    return body


def _is_dry(request: Recorded) -> bool:
    if "All" in request.query.get("dryRun", []):
        return True
    try:  # kubectl sends DeleteOptions in the body
        return request.method == "DELETE" and "All" in ((request.json or {}).get("dryRun") or [])
    except (ValueError, AttributeError):
        return False
