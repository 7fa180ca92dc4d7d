"""A local stand-in for the Kubernetes API server, faithful enough for a server-side-apply deploy tool.

Choice: built on `tests.fakes.http.RecordingServer`, not on kmock. `kmock.KubernetesEmulator` was
evaluated: it is an aiohttp/asyncio server (our bot, the `kubernetes` client and these tests are
synchronous, so it would need its own event-loop thread), and its emulator stores objects by
merging dicts naively. It has no server-side apply (no managedFields, no removal of dropped fields,
no conflicts, no dry run), no resourceVersion/generation, no label selectors, no CRD registration,
no namespace checks, and its lists carry no `kind`. We would have had to override nearly every
handler, so a compact threaded server is simpler. RecordingServer already gives us recorded
requests and fault injection.

What it does: legacy discovery (`/api`, `/apis`, per group/version). Aggregated-discovery requests
get the plain shapes with `Content-Type: application/json`, and that makes client-go fall back.
It also serves a minimal OpenAPI v3, which is what kubectl's `--validate=strict` needs to see that the
server does `fieldValidation`. On top of that: GET/LIST (label and field selectors), POST, PUT,
DELETE (single and collection), merge/strategic (treated as merge) patches and server-side apply
with per-manager field sets, CRDs that register kinds, computed workload status with test hooks,
and `kind: Status` errors.

Simplifications, on purpose: lists are atomic in apply (no merge keys), there is no defaulting,
`status` is server-owned for every kind (tests use `set_status`), and namespace deletion is
immediate. A watch returns the current objects as ADDED events and then ends.
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
    crd: str = ""  # name of the CRD that registered it, "" for built-ins

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


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
SERVER_META = {"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
               "deletionTimestamp", "selfLink"}
OBJECT_PATH = (r"/(?:api|apis/(?P<group>[^/]+))/(?P<version>[^/]+)"
               r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?")
MISSING = object()


class ApiError(Exception):
    """Raised by handlers; rendered as a `kind: Status` body."""

    def __init__(self, code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


def status_body(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Success" if code < 400 else "Failure", "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- field paths: a path is a tuple of map keys; a leaf is a non-map value or an empty map ------------
def tracked(obj: dict | None) -> dict:
    """The part of an object that field managers can own."""
    if not obj:
        return {}
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in SERVER_META | {"name", "namespace"}}
    return {**out, "metadata": meta} if meta else {k: v for k, v in out.items() if k != "metadata"}


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
    if not (value == {} and isinstance(obj.get(path[-1]), dict)):  # `x: {}` claims the map, keeps contents
        obj[path[-1]] = copy.deepcopy(value)


def del_path(obj: dict, path: tuple) -> None:
    parent = get_path(obj, path[:-1])
    if isinstance(parent, dict) and path[-1] in parent:
        del parent[path[-1]]
        if not parent and len(path) > 2:  # a map emptied by the removal goes too, as with the real server
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


_TERM = re.compile(r"^\s*(?:!\s*(?P<nk>[\w./-]+)|(?P<k>[\w./-]+)(?:\s*(?P<op>==|=|!=)\s*(?P<v>[\w./-]*)"
                   r"|\s+(?P<set>in|notin)\s*\((?P<vals>[^)]*)\))?)\s*$")


def label_matcher(expr: str | None):
    """Parse a label selector: k=v, k==v, k!=v, k, !k, k in (a,b), k notin (a,b)."""
    preds = []
    for term in (t for t in re.split(r",(?![^(]*\))", expr or "") if t.strip()):
        m = _TERM.match(term)
        if not m:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
        key, op, val = m["nk"] or m["k"], m["op"], m["v"]
        vals = {v.strip() for v in (m["vals"] or "").split(",")}
        if m["nk"]:
            preds.append(lambda lb, k=key: k not in lb)
        elif op in ("=", "=="):
            preds.append(lambda lb, k=key, v=val: lb.get(k) == v)
        elif op == "!=":
            preds.append(lambda lb, k=key, v=val: lb.get(k) != v)
        elif m["set"]:
            preds.append(lambda lb, k=key, vs=vals, neg=m["set"] == "notin": (lb.get(k) in vs) != neg)
        else:
            preds.append(lambda lb, k=key: k in lb)
    return lambda obj: all(p(obj.get("metadata", {}).get("labels") or {}) for p in preds)


def field_matcher(expr: str | None):
    terms = []
    for term in filter(None, (expr or "").split(",")):
        m = re.match(r"^\s*([\w.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
        terms.append((tuple(m[1].split(".")), m[2] != "!=", m[3]))
    return lambda obj: all((str(get_path(obj, p)) == v) == eq for p, eq, v in terms)


class FakeKubeAPI(RecordingServer):
    """The fake server. All state changes happen under `self.lock` (taken by `dispatch`)."""

    def __init__(self, context: str = "fake-kube", crd_delay: float = 0.0,
                 namespaces: tuple[str, ...] = ("default", "kube-system")) -> None:
        super().__init__()
        self.context, self.crd_delay = context, crd_delay
        self.resources: dict[tuple[str, str, str], Res] = {(r.group, r.version, r.plural): r for r in BUILTIN}
        self.store: dict[tuple[str, str, str, str], dict] = {}  # (group, plural, namespace or "", name)
        self._rv = 0
        self._gates: dict[tuple, int | None] = {}  # (group, kind, ns, name) -> GETs until ready, None: never
        self._pending_crds: dict[str, float] = {}  # CRD name -> when it becomes Established
        for method, pattern, handler in [
            ("GET", r"/version", self._version), ("GET", r"/api", self._api), ("GET", r"/apis", self._apis),
            ("GET", r"/api/(?P<version>v1)", self._resource_list), ("GET", r"/apis/(?P<group>[^/]+)", self._group),
            ("GET", r"/apis/(?P<group>[^/]+)/(?P<version>[^/]+)", self._resource_list),
            ("GET", r"/openapi/v3", self._openapi_root), ("GET", r"/openapi/v3/(?P<gv>.+)", self._openapi_gv),
        ] + [(m, OBJECT_PATH, self._endpoint) for m in ("GET", "POST", "PUT", "PATCH", "DELETE")]:
            self.route(method, pattern, self._guard(handler))
        ns_res = self.resources[("", "v1", "namespaces")]
        for ns in namespaces:
            self._save(ns_res, ("", "namespaces", "", ns), None, {"metadata": {"name": ns}}, dry=False)

    # -- public helpers for tests ------------------------------------------------------------------
    def kubeconfig(self, path: str, context: str | None = None, namespace: str = "default") -> str:
        """Write a kubeconfig for this server (plain http, any token); returns the path."""
        ctx = context or self.context
        config = {"apiVersion": "v1", "kind": "Config", "current-context": ctx, "preferences": {},
                  "clusters": [{"name": ctx, "cluster": {"server": self.url}}],
                  "users": [{"name": ctx, "user": {"token": "fake-token"}}],
                  "contexts": [{"name": ctx, "context": {"cluster": ctx, "user": ctx, "namespace": namespace}}]}
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        return str(path)

    def writes(self) -> list[Recorded]:
        """Non-GET requests that would change state (dry runs excluded)."""
        with self.lock:
            return [r for r in self.requests if r.method in ("POST", "PUT", "PATCH", "DELETE") and not _is_dry(r)]

    def reset_records(self) -> None:
        with self.lock:
            self.requests.clear()

    def objects(self, group: str | None = None, kind: str | None = None, ns: str | None = None) -> list[dict]:
        with self.lock:
            return [copy.deepcopy(o) for (g, _, n, _), o in self.store.items()
                    if group in (None, g) and kind in (None, o["kind"]) and ns in (None, n)]

    def get(self, group: str, kind: str, ns: str | None, name: str) -> dict | None:
        with self.lock:
            found = [o for o in self.objects(group, kind, ns or "") if o["metadata"]["name"] == name]
            return found[0] if found else None

    def stall(self, group: str, kind: str, ns: str, name: str) -> None:
        """The named workload never becomes ready (also after later changes)."""
        self.ready_after(group, kind, ns, name, None)

    def ready_after(self, group: str, kind: str, ns: str, name: str, gets: int | None) -> None:
        """The named workload becomes ready after `gets` GETs of it (None: never, 0: now)."""
        with self.lock:
            self._gates[(group, kind, ns, name)] = gets
            self._refresh(group, kind, ns, name)

    def set_status(self, group: str, kind: str, ns: str | None, name: str, status: dict) -> None:
        with self.lock:
            res, key, obj = self._find(group, kind, ns, name)
            self._save(res, key, obj, {**copy.deepcopy(obj), "status": status}, dry=False, keep_status=True)

    def inject(self, method: str, pattern: str, status: int = 500, times: int = 1, drop: bool = False) -> None:
        """The next `times` requests matching method ('*' for any) and path regex fail with `status`."""
        reason = {500: "InternalError", 503: "ServiceUnavailable", 429: "TooManyRequests"}.get(status, "InternalError")
        self.fail(method, pattern, None if drop else Reply(status, status_body(status, reason, "injected fault")),
                  times)

    # -- plumbing --------------------------------------------------------------------------------
    def dispatch(self, request: Recorded) -> Reply | None:
        with self.lock:
            self._promote_crds()
            return super().dispatch(request)

    def _guard(self, handler):
        def run(request: Recorded, **groups: Any) -> Reply:
            try:
                return handler(request, **groups)
            except ApiError as e:
                return Reply(e.code, status_body(e.code, e.reason, e.message, e.details or None))
            except Exception as e:  # a bug in the fake should show up as a readable 500, not a dropped socket
                return Reply(500, status_body(500, "InternalError", f"fake kube api: {e!r}"))
        return run

    def _find(self, group: str, kind: str, ns: str | None, name: str):
        res = next(r for r in self.resources.values() if r.group == group and r.kind == kind)
        key = (group, res.plural, ns if res.namespaced else "", name)
        return res, key, self.store[key]

    def _refresh(self, group: str, kind: str, ns: str, name: str) -> None:
        try:
            res, key, obj = self._find(group, kind, ns, name)
        except (StopIteration, KeyError):
            return
        self._save(res, key, obj, copy.deepcopy(obj), dry=False)

    # -- discovery -------------------------------------------------------------------------------
    def _version(self, request: Recorded) -> Reply:
        return Reply(200, {"major": "1", "minor": "37", "gitVersion": "v1.37.0", "gitCommit": "fake",
                           "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25",
                           "compiler": "gc", "platform": "linux/amd64"})

    def _api(self, request: Recorded) -> Reply:
        return Reply(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": self.url.split("//")[1]}]})

    def _group_versions(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for r in self.resources.values():
            if r.group and r.version not in groups.setdefault(r.group, []):
                groups[r.group].append(r.version)
        return groups

    def _group_body(self, group: str, versions: list[str]) -> dict:
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}

    def _apis(self, request: Recorded) -> Reply:
        return Reply(200, {"kind": "APIGroupList", "apiVersion": "v1",
                           "groups": [self._group_body(g, vs) for g, vs in self._group_versions().items()]})

    def _group(self, request: Recorded, group: str) -> Reply:
        versions = self._group_versions().get(group)
        if not versions:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return Reply(200, {"kind": "APIGroup", "apiVersion": "v1", **self._group_body(group, versions)})

    def _resource_list(self, request: Recorded, version: str, group: str | None = None) -> Reply:
        found = [r for r in self.resources.values() if r.group == (group or "") and r.version == version]
        if not found:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return Reply(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": found[0].api_version,
                           "resources": [self._describe(r) for r in found]})

    def _describe(self, r: Res) -> dict:
        out = {"name": r.plural, "singularName": r.kind.lower(), "namespaced": r.namespaced, "kind": r.kind,
               "verbs": VERBS if r.kind != "Namespace" else [v for v in VERBS if v != "deletecollection"]}
        if r.short:
            out["shortNames"] = list(r.short)
        if r.plural in IN_ALL:
            out["categories"] = ["all"]
        return out

    def _openapi_root(self, request: Recorded) -> Reply:
        gvs = {("api/" if not r.group else "apis/") + r.api_version for r in self.resources.values()}
        return Reply(200, {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={self._rv}"}
                                     for gv in sorted(gvs)}})

    def _openapi_gv(self, request: Recorded, gv: str) -> Reply:
        # Only what kubectl's validation reads: each PATCH declares the fieldValidation parameter.
        paths = {}
        for r in self.resources.values():
            if ("api/" if not r.group else "apis/") + r.api_version == gv:
                ns = "/namespaces/{namespace}" if r.namespaced else ""
                paths[f"/{gv}{ns}/{r.plural}/{{name}}"] = {"patch": {
                    "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
                    "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "OK"}}}}
        if not paths:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return Reply(200, {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.37.0"},
                           "paths": paths, "components": {"schemas": {}}})

    # -- objects ---------------------------------------------------------------------------------
    def _endpoint(self, request: Recorded, version: str, plural: str, group: str | None = None,
                  ns: str | None = None, name: str | None = None) -> Reply:
        res = self.resources.get((group or "", version, plural))
        if res is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        ns = (ns or "") if res.namespaced else ""  # cluster-scoped kinds ignore any namespace
        q = {k: v[-1] for k, v in request.query.items()}
        dry = _is_dry(request)
        if name is None:
            if request.method == "GET":
                return self._list(res, ns, q)
            if request.method == "POST":
                return self._create(res, ns, request, q, dry)
            if request.method == "DELETE":
                items = self._select(res, ns, q)
                for obj in items:
                    meta = obj["metadata"]
                    self._delete(res, (res.group, res.plural, meta.get("namespace", ""), meta["name"]), dry)
                return Reply(200, {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": {},
                                   "items": items})
            raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on {plural}")
        key = (res.group, res.plural, ns, name)
        old = self.store.get(key)
        if request.method == "PATCH" and _content_type(request) == "application/apply-patch+yaml":
            return self._apply(res, key, old, request, q, dry)
        if old is None:
            raise ApiError(404, "NotFound", f'{_plural_ref(res)} "{name}" not found',
                           name=name, group=res.group, kind=res.plural)
        if request.method == "GET":
            return Reply(200, self._out(res, self._tick_gate(res, key)))
        if request.method == "DELETE":
            self._delete(res, key, dry)
            return Reply(200, status_body(200, "", "", {"name": name, "group": res.group, "kind": res.plural,
                                                         "uid": old["metadata"]["uid"]}))
        body = _parse(request)
        manager = q.get("fieldManager") or request.headers.get("user-agent", "unknown").split("/")[0]
        if request.method == "PUT":
            self._check_identity(res, body, name, ns)
            rv = body.get("metadata", {}).get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {_plural_ref(res)} "{name}": '
                               "the object has been modified; please apply your changes to the latest version "
                               "and try again", name=name, group=res.group, kind=res.plural)
            new = body
        elif _content_type(request) in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            new = merge_patch(old, body)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: "
                           f"{_content_type(request)}")
        new = self._updated_by(res, old, new, manager)
        return Reply(200, self._out(res, self._save(res, key, old, new, dry)))

    def _select(self, res: Res, ns: str, q: dict) -> list[dict]:
        labels, fields = label_matcher(q.get("labelSelector")), field_matcher(q.get("fieldSelector"))
        return [self._out(res, o) for (g, p, n, _), o in sorted(self.store.items())
                if (g, p) == (res.group, res.plural) and (not ns or n == ns) and labels(o) and fields(o)]

    def _list(self, res: Res, ns: str, q: dict) -> Reply:
        items = self._select(res, ns, q)
        if q.get("watch") in ("true", "1"):  # a snapshot watch: ADDED for each object, then the stream ends
            return Reply(200, raw=b"".join(json.dumps({"type": "ADDED", "object": o}).encode() + b"\n"
                                          for o in items))
        return Reply(200, {"kind": f"{res.kind}List", "apiVersion": res.api_version,
                           "metadata": {"resourceVersion": str(self._rv)}, "items": items})

    def _create(self, res: Res, ns: str, request: Recorded, q: dict, dry: bool) -> Reply:
        body = _parse(request)
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise ApiError(422, "Invalid", f"{res.kind} is invalid: metadata.name: Required value: name or "
                           "generateName is required", kind=res.kind)
        self._check_identity(res, body, meta["name"], ns)
        key = (res.group, res.plural, ns, meta["name"])
        if key in self.store:
            raise ApiError(409, "AlreadyExists", f'{_plural_ref(res)} "{meta["name"]}" already exists',
                           name=meta["name"], group=res.group, kind=res.plural)
        self._check_namespace(res, ns)
        manager = q.get("fieldManager") or request.headers.get("user-agent", "unknown").split("/")[0]
        new = self._updated_by(res, None, body, manager)
        return Reply(201, self._out(res, self._save(res, key, None, new, dry)))

    def _delete(self, res: Res, key: tuple, dry: bool) -> None:
        if dry:
            return
        obj = self.store.pop(key)
        if res.kind == "Namespace":
            for k in [k for k in self.store if k[2] == key[3]]:
                del self.store[k]
        if res.kind == "CustomResourceDefinition":
            self._register_crd(obj, established=False)
            spec = obj["spec"]
            for k in [k for k in self.store if k[:2] == (spec["group"], spec["names"]["plural"])]:
                del self.store[k]
        self._rv += 1

    # -- server-side apply -----------------------------------------------------------------------
    def _apply(self, res: Res, key: tuple, old: dict | None, request: Recorded, q: dict, dry: bool) -> Reply:
        manager = q.get("fieldManager")
        if not manager:
            raise ApiError(400, "BadRequest", "fieldManager: Required value: is required for apply patch")
        try:
            cfg = yaml.safe_load(request.body) or {}
        except yaml.YAMLError as e:
            raise ApiError(400, "BadRequest", f"error decoding YAML: {e}")
        if not isinstance(cfg, dict):
            raise ApiError(400, "BadRequest", "apply patch must be an object")
        self._check_identity(res, cfg, key[3], key[2])
        if old is None:
            self._check_namespace(res, key[2])
        base = copy.deepcopy(old) if old else {"metadata": {"name": key[3], **({"namespace": key[2]} if key[2] else {})}}
        owners = _owners(base)
        applied = leaves(tracked(cfg))
        conflicts = [(mgr, av, p) for (mgr, op), (av, fields) in owners.items() if mgr != manager
                     for p in applied if any(overlap(p, f) for f in fields) and get_path(base, p) != applied[p]]
        if conflicts and q.get("force") != "true":
            causes = [{"type": "FieldManagerConflict", "message": f'conflict with "{m}" using {av}',
                       "field": "." + ".".join(p)} for m, av, p in conflicts]
            msg = "; ".join(f'{c["message"]}: {c["field"]}' for c in causes)
            raise ApiError(409, "Conflict", f"Apply failed with {len(causes)} conflict(s): {msg}",
                           name=key[3], group=res.group, kind=res.plural, causes=causes)
        for mgr, _, p in conflicts:  # forced: the other managers lose what we took
            for owner_key in [k for k in owners if k[0] == mgr]:
                owners[owner_key][1].difference_update({f for f in owners[owner_key][1] if overlap(f, p)})
        previously = owners.get((manager, "Apply"), ("", set()))[1]
        others = set().union(*(f for k, (_, f) in owners.items() if k != (manager, "Apply")))
        for p in previously - set(applied):
            if not any(overlap(p, f) for f in others):
                del_path(base, p)
        for p, value in applied.items():
            set_path(base, p, value)
        owners[(manager, "Apply")] = (res.api_version, set(applied))
        base["metadata"]["managedFields"] = _render_owners(owners, old)
        saved = self._save(res, key, old, base, dry)
        return Reply(201 if old is None else 200, self._out(res, saved))

    def _updated_by(self, res: Res, old: dict | None, new: dict, manager: str) -> dict:
        """Record an Update-operation manager: it takes the fields it changed from everyone else."""
        new = copy.deepcopy(new)
        before, after = leaves(tracked(old)), leaves(tracked(new))
        changed = {p for p, v in after.items() if before.get(p, MISSING) != v}
        touched = changed | (set(before) - set(after))
        owners = _owners(old or {})
        for _, fields in owners.values():
            fields.difference_update({f for f in fields if any(overlap(f, t) for t in touched)})
        entry = owners.setdefault((manager, "Update"), (res.api_version, set()))
        entry[1].update(changed)
        new.setdefault("metadata", {})["managedFields"] = _render_owners(owners, old)
        return new

    # -- storing ---------------------------------------------------------------------------------
    def _save(self, res: Res, key: tuple, old: dict | None, new: dict, dry: bool, keep_status: bool = False) -> dict:
        """Finish a write: server-owned fields, status, resourceVersion; a no-op change stores nothing."""
        new["apiVersion"], new["kind"] = res.api_version, res.kind
        meta = new.setdefault("metadata", {})
        meta["name"] = key[3]
        if res.namespaced:
            meta["namespace"] = key[2]
        else:
            meta.pop("namespace", None)
        if not meta.get("managedFields"):
            meta.pop("managedFields", None)
        if old is None:
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
            meta.pop("resourceVersion", None)
        else:
            for k in ("uid", "creationTimestamp", "resourceVersion", "generation"):
                meta[k] = old["metadata"][k]
            if _spec(old) != _spec(new):
                meta["generation"] += 1
        if not keep_status:
            new.pop("status", None)
            if old is not None and "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            self._compute_status(res, key, old, new)
        if res.kind == "CustomResourceDefinition":
            self._check_crd(new)
        if old is not None and new == old:
            return old
        if dry:
            return new
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        self.store[key] = new
        if res.kind == "CustomResourceDefinition":
            self._register_crd(new, established=_condition(new, "Established"))
        return new

    def _out(self, res: Res, obj: dict) -> dict:
        return {**copy.deepcopy(obj), "apiVersion": res.api_version, "kind": res.kind}

    def _check_identity(self, res: Res, body: dict, name: str, ns: str) -> None:
        if body.get("kind") and body["kind"] != res.kind or body.get("apiVersion") and \
                body["apiVersion"] != res.api_version:
            raise ApiError(400, "BadRequest", f"the API version in the data ({body.get('apiVersion')}) does not "
                           f"match the expected API version ({res.api_version})")
        meta = body.get("metadata") or {}
        if meta.get("name") and meta["name"] != name:
            raise ApiError(400, "BadRequest", f"the name of the object ({meta['name']}) does not match the name "
                           f"on the URL ({name})")
        if res.namespaced and meta.get("namespace") and ns and meta["namespace"] != ns:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace "
                           "sent on the request")

    def _check_namespace(self, res: Res, ns: str) -> None:
        if res.namespaced and ("", "namespaces", "", ns) not in self.store:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', name=ns, kind="namespaces")

    # -- status: workloads, namespaces, CRDs -------------------------------------------------------
    def _compute_status(self, res: Res, key: tuple, old: dict | None, new: dict) -> None:
        prev = (old or {}).get("status", {})
        if res.kind == "Namespace":
            new["status"] = {"phase": "Active"}
        elif res.kind == "CustomResourceDefinition":
            established = _condition(old, "Established") or self.crd_delay <= 0
            if not established:
                self._pending_crds.setdefault(key[3], time.monotonic() + self.crd_delay)
            new["status"] = {"acceptedNames": new.get("spec", {}).get("names", {}), "storedVersions": [
                v["name"] for v in new.get("spec", {}).get("versions", []) if v.get("storage")],
                "conditions": [_cond(prev, "NamesAccepted", True, "NoConflicts", "no conflicts found"),
                               _cond(prev, "Established", established, "InitialNamesAccepted" if established
                                     else "Installing", "the initial names have been accepted")]}
        elif res.group == "apps" and res.kind in ("Deployment", "StatefulSet", "DaemonSet"):
            ready = self._gates.get((res.group, res.kind, key[2], key[3]), 0) == 0
            spec, gen = new.get("spec") or {}, new["metadata"]["generation"]
            n = spec.get("replicas", 1) if res.kind != "DaemonSet" else 1  # one node
            r = n if ready else 0
            if res.kind == "Deployment":
                status = {"observedGeneration": gen, "replicas": n, "updatedReplicas": n, "readyReplicas": r,
                          "availableReplicas": r, "unavailableReplicas": n - r}
                status = {k: v for k, v in status.items() if v}  # the real API omits zero counts
                status["conditions"] = [
                    _cond(prev, "Available", ready, "MinimumReplicasAvailable" if ready
                          else "MinimumReplicasUnavailable", "Deployment has minimum availability." if ready
                          else "Deployment does not have minimum availability."),
                    _cond(prev, "Progressing", True, "NewReplicaSetAvailable" if ready else "ReplicaSetUpdated",
                          f'ReplicaSet "{key[3]}" is progressing.')]
            elif res.kind == "StatefulSet":
                rev = f"{key[3]}-" + hashlib.sha1(json.dumps(spec.get("template"), sort_keys=True).encode()
                                                 ).hexdigest()[:10]
                status = {"observedGeneration": gen, "replicas": n, "readyReplicas": r, "currentReplicas": r,
                          "updatedReplicas": n, "availableReplicas": r, "updateRevision": rev, "collisionCount": 0,
                          "currentRevision": rev if ready else prev.get("currentRevision", f"{key[3]}-0")}
            else:
                status = {"observedGeneration": gen, "currentNumberScheduled": n, "desiredNumberScheduled": n,
                          "numberMisscheduled": 0, "numberReady": r, "updatedNumberScheduled": n,
                          "numberAvailable": r, "numberUnavailable": n - r}
            new["status"] = status

    def _tick_gate(self, res: Res, key: tuple) -> dict:
        gate = (res.group, res.kind, key[2], key[3])
        if self._gates.get(gate):
            self._gates[gate] -= 1
            if self._gates[gate] == 0:
                self._save(res, key, self.store[key], copy.deepcopy(self.store[key]), dry=False)
        return self.store[key]

    # -- CRDs ------------------------------------------------------------------------------------
    def _check_crd(self, crd: dict) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        if not (spec.get("group") and names.get("plural") and names.get("kind") and spec.get("versions")):
            raise ApiError(422, "Invalid", "CustomResourceDefinition is invalid: spec.group, spec.names.plural, "
                           "spec.names.kind and spec.versions are required", kind="CustomResourceDefinition")
        if crd["metadata"]["name"] != f"{names['plural']}.{spec['group']}":
            raise ApiError(422, "Invalid", f'CustomResourceDefinition.apiextensions.k8s.io "{crd["metadata"]["name"]}"'
                           f' is invalid: metadata.name: Invalid value: must be spec.names.plural+"."+spec.group',
                           name=crd["metadata"]["name"], kind="CustomResourceDefinition")

    def _register_crd(self, crd: dict, established: bool) -> None:
        name = crd["metadata"]["name"]
        self.resources = {k: r for k, r in self.resources.items() if r.crd != name}
        if established:
            spec, names = crd["spec"], crd["spec"]["names"]
            versions = sorted((v for v in spec["versions"] if v.get("served", True)), key=lambda v: not v.get("storage"))
            for v in versions:
                self.resources[(spec["group"], v["name"], names["plural"])] = Res(
                    spec["group"], v["name"], names["plural"], names["kind"], spec.get("scope") != "Cluster",
                    tuple(names.get("shortNames") or ()), name)

    def _promote_crds(self) -> None:
        for name, when in list(self._pending_crds.items()):
            key = ("apiextensions.k8s.io", "customresourcedefinitions", "", name)
            if key not in self.store:
                del self._pending_crds[name]
            elif time.monotonic() >= when:
                del self._pending_crds[name]
                crd = copy.deepcopy(self.store[key])
                crd["status"]["conditions"] = [_cond(crd["status"], c["type"], True, c["reason"] if c["type"] != "Established"
                                                     else "InitialNamesAccepted", c["message"])
                                               for c in crd["status"]["conditions"]]
                self._save(self.resources[("apiextensions.k8s.io", "v1", "customresourcedefinitions")], key,
                           self.store[key], crd, dry=False, keep_status=True)


def _owners(obj: dict) -> dict[tuple[str, str], tuple[str, set[tuple]]]:
    return {(e["manager"], e.get("operation", "Update")): (e.get("apiVersion", ""), from_fields_v1(e.get("fieldsV1", {})))
            for e in (obj.get("metadata") or {}).get("managedFields") or []}


def _render_owners(owners: dict, old: dict | None) -> list[dict]:
    """managedFields entries; an unchanged entry keeps its time so that a no-op apply really changes nothing."""
    times = {(e["manager"], e.get("operation")): (e.get("fieldsV1"), e.get("time"))
             for e in ((old or {}).get("metadata") or {}).get("managedFields") or []}
    out = []
    for (mgr, op), (av, fields) in owners.items():
        if fields:
            fv1 = to_fields_v1(fields)
            prev_fv1, prev_time = times.get((mgr, op), (None, None))
            out.append({"manager": mgr, "operation": op, "apiVersion": av,
                        "time": prev_time if prev_fv1 == fv1 else now(), "fieldsType": "FieldsV1", "fieldsV1": fv1})
    return out


def _cond(prev_status: dict, ctype: str, ok: bool, reason: str, message: str) -> dict:
    """A condition; keeps its old timestamps when nothing about it changed (so no-ops stay no-ops)."""
    old = next((c for c in prev_status.get("conditions", []) if c.get("type") == ctype), {})
    status = "True" if ok else "False"
    same = old.get("status") == status and old.get("reason") == reason
    stamp = now()
    cond = {"type": ctype, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": old.get("lastTransitionTime", stamp) if old.get("status") == status else stamp}
    if ctype in ("Available", "Progressing"):
        cond["lastUpdateTime"] = old.get("lastUpdateTime", stamp) if same else stamp
    return cond


def _condition(obj: dict | None, ctype: str) -> bool:
    return any(c.get("type") == ctype and c.get("status") == "True"
               for c in ((obj or {}).get("status") or {}).get("conditions", []))


def _spec(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _plural_ref(res: Res) -> str:
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
    try:
        return "All" in ((request.json or {}).get("dryRun") or []) if request.method == "DELETE" else False
    except (ValueError, AttributeError):
        return False
