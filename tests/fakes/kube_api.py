"""A local stand-in for the Kubernetes API server, faithful enough for a server-side-apply deploy tool.

Choice: built on `tests.fakes.http.RecordingServer`, not on kmock. `kmock.KubernetesEmulator` was
evaluated: it is an aiohttp/asyncio server (our bot, the `kubernetes` client and these tests are
synchronous, so it would need its own event-loop thread), and its emulator stores objects by
merging dicts naively. It has no server-side apply (no managedFields, no removal of dropped fields,
no conflicts, no dry run), no resourceVersion/generation, no label selectors, no CRD registration,
no namespace checks, and its lists carry no `kind`. We would have overridden nearly every handler,
so a compact threaded server is simpler. RecordingServer already records requests and injects faults.

What it serves:
- legacy discovery (`/version`, `/api`, `/api/v1`, `/apis`, `/apis/{g}`, `/apis/{g}/{v}`). A request
  for aggregated discovery gets the plain shapes with `Content-Type: application/json`, and that is
  what makes client-go fall back to legacy discovery;
- a minimal OpenAPI v3, only so kubectl's default `--validate=strict` sees that PATCH takes
  `fieldValidation`. Without it kubectl fails with "failed to download openapi";
- objects: GET, LIST (label and field selectors), POST, PUT, DELETE (one object or a collection),
  merge and strategic patches (both applied as a JSON merge patch), and server-side apply with
  per-manager field sets in managedFields. A watch answers at once with the current objects (or the
  ones changed since its resourceVersion) and then ends. `kubectl rollout status` works, but its
  client-go logs "very short watch" info lines;
- CRDs that register their kinds, plus computed status for Namespaces, CRDs and workloads, with test hooks.

Simplifications, on purpose: lists are atomic in apply (no merge keys), there is no defaulting, and
`status` is server-owned for every kind (tests use `set_status`). Deleting a namespace is immediate,
and watches do not report deletions.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
import uuid
from datetime import datetime, timezone
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


def overlap(a: tuple, b: tuple) -> bool:
    return a[:len(b)] == b[:len(a)]


def to_fields_v1(paths: set[tuple]) -> dict:
    out: dict = {}
    for path in sorted(paths):
        cur = out
        for key in path:
            cur = cur.setdefault(f"f:{key}", {})
    return out


def from_fields_v1(fields: dict, prefix: tuple = ()) -> set[tuple]:
    out: set[tuple] = set()
    for key, sub in fields.items():
        if key.startswith("f:"):
            out |= from_fields_v1(sub, prefix + (key[2:],)) if sub else {prefix + (key[2:],)}
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
        ] + [(m, OBJECT_PATH, self._endpoint) for m in ("GET", "POST", "PUT", "PATCH", "DELETE")]:
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
                               **({"categories": ["all"]} if r.plural in IN_ALL else {})} for r in found]})

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
        elif _content_type(request) in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            new = merge_patch(old, body)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type: {_content_type(request)}")
        return Reply(200, self._out(res, self._save(res, key, old, self._updated_by(res, old, new, manager), dry)))

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
        if key in self.store:
            raise ApiError(409, "AlreadyExists", f'{_ref(res)} "{meta["name"]}" already exists',
                           name=meta["name"], group=res.group, kind=res.plural)
        self._check_namespace(res, ns)
        return Reply(201, self._out(res, self._save(res, key, None, self._updated_by(res, None, body, manager), dry)))

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
        base = copy.deepcopy(old) if old else {"metadata": {"name": key[3]}}
        owners, applied = _owners(base), leaves(tracked(cfg))
        # Simplified conflicts: another manager owns an overlapping field and the value would change.
        conflicts = [(mgr, av, p) for (mgr, _), (av, fields) in owners.items() if mgr != manager
                     for p in applied if any(overlap(p, f) for f in fields) and _changes(base, p, applied[p])]
        if conflicts and q.get("force") != "true":
            causes = [{"type": "FieldManagerConflict", "message": f'conflict with "{m}" using {av}',
                       "field": "." + ".".join(p)} for m, av, p in conflicts]
            raise ApiError(409, "Conflict", f"Apply failed with {len(causes)} conflict(s): " + "; ".join(
                f'{c["message"]}: {c["field"]}' for c in causes), name=key[3], group=res.group, kind=res.plural,
                causes=causes)
        for mgr, _, p in conflicts:  # forced: the other managers lose what we take
            for owner, (_, fields) in owners.items():
                if owner[0] == mgr:
                    fields.difference_update({f for f in fields if overlap(f, p)})
        mine = (manager, "Apply")
        others = set().union(*(fields for owner, (_, fields) in owners.items() if owner != mine))
        for p in owners.get(mine, ("", set()))[1] - set(applied):  # dropped from the config and nobody else has it
            if not any(overlap(p, f) for f in others):
                del_path(base, p)
        for p, value in applied.items():
            set_path(base, p, value)
        owners[mine] = (res.api_version, set(applied))
        base["metadata"]["managedFields"] = _render_owners(owners, old)
        return Reply(201 if old is None else 200, self._out(res, self._save(res, key, old, base, dry)))

    def _updated_by(self, res: Res, old: dict | None, new: dict, manager: str) -> dict:
        """Record an Update manager: it takes the fields it changed from everyone else, without conflicts."""
        new = copy.deepcopy(new)
        before, after = leaves(tracked(old)), leaves(tracked(new))
        changed = {p for p, v in after.items() if before.get(p, MISSING) != v}
        touched = changed | (set(before) - set(after))
        owners = _owners(old or {})
        for _, fields in owners.values():
            fields.difference_update({f for f in fields if any(overlap(f, t) for t in touched)})
        owners.setdefault((manager, "Update"), (res.api_version, set()))[1].update(changed)
        new.setdefault("metadata", {})["managedFields"] = _render_owners(owners, old)
        return new

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
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
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


def _check_crd(crd: dict) -> None:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    if not spec.get("versions") or crd["metadata"]["name"] != f"{names.get('plural')}.{spec.get('group')}" \
            or not names.get("kind"):
        raise ApiError(422, "Invalid", f'CustomResourceDefinition "{crd["metadata"]["name"]}" is invalid: the name must '
                       'be spec.names.plural+"."+spec.group, and names.kind and versions are required',
                       kind="CustomResourceDefinition")


def _owners(obj: dict) -> dict[tuple[str, str], tuple[str, set[tuple]]]:
    """managedFields as {(manager, operation): (apiVersion, owned paths)}."""
    return {(e["manager"], e.get("operation", "Update")): (e.get("apiVersion", ""), from_fields_v1(e.get("fieldsV1") or {}))
            for e in (obj.get("metadata") or {}).get("managedFields") or []}


def _render_owners(owners: dict, old: dict | None) -> list[dict]:
    """managedFields entries. An unchanged entry keeps its time, so a no-op apply really changes nothing."""
    previous = {(e["manager"], e.get("operation")): e for e in ((old or {}).get("metadata") or {}).get("managedFields") or []}
    out = []
    for (mgr, op), (av, fields) in owners.items():
        if fields:
            fv1, prev = to_fields_v1(fields), previous.get((mgr, op), {})
            out.append({"manager": mgr, "operation": op, "apiVersion": av, "time": prev["time"]
                        if prev.get("fieldsV1") == fv1 else now(), "fieldsType": "FieldsV1", "fieldsV1": fv1})
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
